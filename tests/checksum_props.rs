//! Incremental checksum updates agree with full recomputation (RFC 1624), on any data.

use lvs::wire::checksum::{checksum, crc32c, crc32c_update, fold, sum, update};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    /// Rewriting an aligned field of 2, 4 or 16 bytes (a port, an IPv4 or IPv6 address) and
    /// updating the checksum incrementally gives what recomputing it over the whole data gives.
    #[test]
    fn update_matches_recompute(
        mut data in prop::collection::vec(any::<u8>(), 16..300),
        at in any::<prop::sample::Index>(),
        width in prop::sample::select(vec![2usize, 4, 16]),
        new in prop::collection::vec(any::<u8>(), 16),
    ) {
        let max = (data.len() - width) / 2;
        let pos = at.index(max + 1) * 2;
        let hc = checksum(&data);
        let old: Vec<u8> = data[pos..pos + width].to_vec();
        data[pos..pos + width].copy_from_slice(&new[..width]);
        let inc = update(hc, &old, &new[..width]);
        let full = checksum(&data);
        // Equal as one's-complement numbers (0x0000 and 0xffff are both zero)...
        prop_assert_eq!(fold(sum(inc as u64, &data)), fold(sum(full as u64, &data)));
        // ...and, with equation 3, equal as bit patterns too unless the sum is zero.
        if full != 0 && full != 0xffff {
            prop_assert_eq!(inc, full);
        }
    }

    /// CRC32c over any split equals CRC32c over the whole.
    #[test]
    fn crc32c_is_streaming(data in prop::collection::vec(any::<u8>(), 0..200), split in any::<prop::sample::Index>()) {
        let k = split.index(data.len() + 1);
        prop_assert_eq!(crc32c_update(crc32c(&data[..k]), &data[k..]), crc32c(&data));
    }
}
