//! Checksums: the Internet one's-complement checksum (RFC 1071), its incremental update
//! (RFC 1624), pseudo-headers, and CRC32c for SCTP (RFC 4960 appendix B, RFC 3309).
//!
//! Values are the 16-bit numbers as they read big-endian from a header (write them back with
//! `to_be_bytes`). Rewrites update checksums incrementally, so their cost does not depend on the
//! payload length, a snaplen-truncated frame stays consistent, and a checksum that arrived wrong
//! stays exactly as wrong (IPVS behaves so; a receiver still drops the packet).
//!
//! RFC 1624 equation 3, `HC' = ~(~HC + ~m + m')`, is used throughout: unlike equation 2 it never
//! produces the negative zero 0xFFFF... except where the full recomputation would also
//! (one's-complement arithmetic has two zeros; `0x0000` and `0xFFFF` compare equal as sums). UDP
//! over IPv4 is special: a checksum field of 0 means "no checksum" and must not be updated, and a
//! computed 0 is transmitted as 0xFFFF ([`udp_nonzero`]).

/// Adds `data` as big-endian 16-bit words to a running sum; an odd last byte is padded with a
/// zero byte (RFC 1071). The sum is kept in 64 bits so no carry is lost before [`fold`].
#[inline]
pub fn sum(mut acc: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        // Four 16-bit words at once: add the two 32-bit halves, each a sum of two words.
        acc += (w >> 32) + (w & 0xffff_ffff);
    }
    let mut rest = chunks.remainder().chunks_exact(2);
    for c in &mut rest {
        acc += u16::from_be_bytes([c[0], c[1]]) as u64;
    }
    if let [b] = rest.remainder() {
        acc += (*b as u64) << 8;
    }
    acc
}

/// Folds a running sum to 16 bits with end-around carry (the one's-complement sum).
#[inline(always)]
pub fn fold(acc: u64) -> u16 {
    // 64 -> 33 bits, then 32 with the end-around carry (the halves are at most 2^32 - 1 and
    // 1, and 1 only when the low half is below 2^32 - 1, so this add cannot carry out).
    let a = (acc & 0xffff_ffff) + (acc >> 32);
    let a = (a as u32).wrapping_add((a >> 32) as u32);
    // 32 -> 16 as Linux's csum_fold does: the high half of a + ror(a, 16) is hi + lo plus
    // the carry out of lo + hi, i.e. the end-around-carry sum. Three operations where
    // folding halves twice more takes six, on every rewrite's dependency chain.
    (a.wrapping_add(a.rotate_right(16)) >> 16) as u16
}

/// The sum of a fixed-size field's big-endian 16-bit words (`N` even), unrolled.
#[inline(always)]
pub fn sum_words<const N: usize>(b: &[u8; N]) -> u64 {
    let mut s = 0u64;
    let mut i = 0;
    while i + 1 < N {
        s += u16::from_be_bytes([b[i], b[i + 1]]) as u64;
        i += 2;
    }
    s
}

/// The one's-complement change `new − old` of a field (an address, a port), computed once and
/// applied with [`apply_delta`] to every checksum that covers the field (the IPv4 header and
/// the layer-4 pseudo-header both cover the addresses).
#[inline(always)]
pub fn delta<const N: usize>(old: &[u8; N], new: &[u8; N]) -> u64 {
    // The complements of old's words, summed as integers: (N / 2) * 0xffff - sum(old), never
    // negative. No fold on the packet's dependency chain; the one's-complement value is the
    // same as folding old's sum and complementing it.
    (N as u64 / 2) * 0xffff - sum_words(old) + sum_words(new)
}

/// RFC 1624 equation 3 with a precomputed [`delta`] (or a sum of several).
#[inline(always)]
pub fn apply_delta(hc: u16, delta: u64) -> u16 {
    !fold(!hc as u64 + delta)
}

/// [`apply_delta`] for a partial (offload) checksum field, which holds a sum, not its
/// complement.
#[inline(always)]
pub fn apply_delta_partial(partial: u16, delta: u64) -> u16 {
    fold(partial as u64 + delta)
}

/// The Internet checksum of `data`: the complement of its one's-complement sum.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(0, data))
}

/// The IPv4 pseudo-header sum for TCP, UDP and ICMP-less protocols (RFC 793, RFC 768).
#[inline]
pub fn pseudo_header_v4(src: [u8; 4], dst: [u8; 4], proto: u8, len: u16) -> u64 {
    sum(sum(0, &src), &dst) + proto as u64 + len as u64
}

/// The IPv6 pseudo-header sum (RFC 8200 §8.1); `dst` is the final destination when a routing
/// header is present.
#[inline]
pub fn pseudo_header_v6(src: &[u8; 16], dst: &[u8; 16], next_header: u8, len: u32) -> u64 {
    sum(sum(0, src), dst) + next_header as u64 + (len >> 16) as u64 + (len & 0xffff) as u64
}

/// RFC 1624 equation 3: the checksum `hc` after the 16-bit word `old` became `new`.
#[inline(always)]
pub fn update_word(hc: u16, old: u16, new: u16) -> u16 {
    !fold(!hc as u64 + !old as u64 + new as u64)
}

/// RFC 1624 equation 3 for a field of several words (an address, a port pair): `old` and
/// `new` must have the same, even, length.
#[inline]
pub fn update(hc: u16, old: &[u8], new: &[u8]) -> u16 {
    debug_assert_eq!(old.len(), new.len());
    debug_assert!(old.len().is_multiple_of(2));
    // ~m for every word of old: sum of complements = (0xffff * words) - sum(old) in one's
    // complement, i.e. add the complement of the folded old sum once.
    !fold(!hc as u64 + !fold(sum(0, old)) as u64 + sum(0, new))
}

/// The same for a checksum field left *partial* by a transmit offload (Linux
/// `CHECKSUM_PARTIAL`, `TP_STATUS_CSUMNOTREADY`): such a field holds the folded pseudo-header
/// sum, not its complement, and only the pseudo-header part (addresses) may be updated.
#[inline]
pub fn update_partial(partial: u16, old: &[u8], new: &[u8]) -> u16 {
    debug_assert_eq!(old.len(), new.len());
    fold(partial as u64 + !fold(sum(0, old)) as u64 + sum(0, new))
}

/// A UDP checksum as transmitted: a computed 0 is sent as 0xFFFF, since 0 means "none"
/// (RFC 768).
#[inline]
pub fn udp_nonzero(c: u16) -> u16 {
    if c == 0 { 0xffff } else { c }
}

/// Whether `data` with its checksum field in place sums to the one's-complement zero.
#[inline]
pub fn verifies(initial: u64, data: &[u8]) -> bool {
    fold(sum(initial, data)) == 0xffff
}

/// CRC32c (Castagnoli, reflected polynomial 0x82F63B78) table, built at compile time.
const CRC32C_TABLE: [[u32; 256]; 8] = {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut s = 1;
        while s < 8 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            s += 1;
        }
        i += 1;
    }
    t
};

/// Continues a CRC32c over `data` (slicing-by-8). Start from `0`; the value is the finished CRC
/// of everything fed so far (the initial and final inversions are applied inside).
pub fn crc32c_update(crc: u32, data: &[u8]) -> u32 {
    let t = &CRC32C_TABLE;
    let mut c = !crc;
    let mut chunks = data.chunks_exact(8);
    for b in &mut chunks {
        let lo = c ^ u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        c = t[7][(lo & 0xff) as usize]
            ^ t[6][((lo >> 8) & 0xff) as usize]
            ^ t[5][((lo >> 16) & 0xff) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][b[4] as usize]
            ^ t[2][b[5] as usize]
            ^ t[1][b[6] as usize]
            ^ t[0][b[7] as usize];
    }
    for &b in chunks.remainder() {
        c = (c >> 8) ^ t[0][((c ^ b as u32) & 0xff) as usize];
    }
    !c
}

/// CRC32c of `data`, as SCTP computes it (the checksum field zeroed first by the caller). SCTP
/// writes the result little-endian (`to_le_bytes`) into the common header.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c_update(0, data)
}

/// `a · b mod P` over GF(2) in CRC32c's reflected bit order (bit 31 is x^0).
const fn crc32c_mul(a: u32, b: u32) -> u32 {
    let mut a = a;
    let mut b = b;
    let mut p = 0u32;
    let mut i = 0;
    while i < 32 {
        if a & 0x8000_0000 != 0 {
            p ^= b;
        }
        a <<= 1;
        // b · x: one step right in reflected order, reduced by the polynomial.
        b = if b & 1 != 0 {
            (b >> 1) ^ 0x82F6_3B78
        } else {
            b >> 1
        };
        i += 1;
    }
    p
}

/// `x^(8·2^k) mod P` for k = 0..64: advancing a CRC register over 2^k zero bytes.
const CRC32C_ZEROS: [u32; 64] = {
    let mut t = [0u32; 64];
    // x^8 in reflected order.
    t[0] = 0x8000_0000 >> 8;
    let mut k = 1;
    while k < 64 {
        t[k] = crc32c_mul(t[k - 1], t[k - 1]);
        k += 1;
    }
    t
};

/// The CRC32c of a message after the bytes `old` became `new` in it, with `after` bytes of the
/// message following the changed field, without reading the rest of the message.
///
/// A CRC is affine over GF(2): `crc(M ⊕ D) = crc(M) ⊕ crc₀(D)`, where `crc₀` has no initial or
/// final inversion and the leading zero bytes of `D` contribute nothing. `crc₀(D)` is the raw
/// CRC of `old ⊕ new`, advanced over `after` zero bytes by multiplying with `x^(8·after)` in
/// O(log after). So, like the RFC 1624 update of the Internet checksum, a wrong CRC stays
/// exactly as wrong and a snaplen-cut frame is updated correctly.
pub fn crc32c_patch(crc: u32, old: &[u8], new: &[u8], after: usize) -> u32 {
    debug_assert_eq!(old.len(), new.len());
    let t = &CRC32C_TABLE[0];
    let mut raw = 0u32;
    for (o, n) in old.iter().zip(new) {
        raw = (raw >> 8) ^ t[((raw ^ (o ^ n) as u32) & 0xff) as usize];
    }
    let mut n = after as u64;
    let mut k = 0;
    while n != 0 && raw != 0 {
        if n & 1 != 0 {
            raw = crc32c_mul(raw, CRC32C_ZEROS[k]);
        }
        n >>= 1;
        k += 1;
    }
    crc ^ raw
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fold is the end-around-carry sum, step by step, for edge and random sums.
    #[test]
    fn fold_is_the_end_around_carry_sum() {
        fn slow(acc: u64) -> u16 {
            let mut a = acc;
            while a > 0xffff {
                a = (a & 0xffff) + (a >> 16);
            }
            a as u16
        }
        let mut x: u64 = 0x243f_6a88_85a3_08d3;
        let edges = [
            0u64,
            1,
            0xfffe,
            0xffff,
            0x1_0000,
            0x1_fffe,
            0x1_ffff,
            0xffff_ffff,
            0x1_0000_0000,
            0x1_ffff_fffe,
            0xffff_0000_ffff,
            0xffff_ffff_ffff_ffff,
            0xffff_ffff_0000_0000,
            0x8000_0000_8000_0000,
        ];
        for acc in edges.into_iter().chain((0..1_000_000).map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Mostly sums of realistic size, some of any size.
            if i % 4 == 0 { x } else { x >> (x % 48) }
        })) {
            assert_eq!(fold(acc), slow(acc), "{acc:#x}");
        }
    }
    use alloc::vec;
    use alloc::vec::Vec;

    #[test]
    fn crc32c_patch_matches_recomputation() {
        let mut data: Vec<u8> = (0..3000u32).map(|i| (i * 131 + 7) as u8).collect();
        for (at, len) in [
            (0usize, 4usize),
            (0, 2),
            (2, 2),
            (10, 6),
            (100, 16),
            (2990, 10),
        ] {
            for total in [at + len, at + len + 1, at + len + 77, 3000] {
                let total = total.min(3000);
                let before = crc32c(&data[..total]);
                let old = data[at..at + len].to_vec();
                for b in &mut data[at..at + len] {
                    *b = b.wrapping_mul(29).wrapping_add(3);
                }
                let after = total - at - len;
                let patched = crc32c_patch(before, &old, &data[at..at + len], after);
                assert_eq!(
                    patched,
                    crc32c(&data[..total]),
                    "at {at} len {len} total {total}"
                );
            }
        }
    }

    #[test]
    fn rfc1071_example_and_etherparse_agree() {
        // RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(0, &d)), 0xddf2);
        assert_eq!(checksum(&d), !0xddf2);
        for len in 0..40 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let theirs = etherparse::checksum::Sum16BitWords::new()
                .add_slice(&data)
                .ones_complement();
            // etherparse keeps the sum in native byte order.
            assert_eq!(
                checksum(&data),
                u16::from_be_bytes(theirs.to_ne_bytes()),
                "len {len}"
            );
        }
    }

    #[test]
    fn ipv4_header_checksum_of_a_real_header() {
        // A captured IPv4 header (Wikipedia's example): checksum b861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert!(verifies(0, &h));
        h[10] = 0;
        h[11] = 0;
        assert_eq!(checksum(&h), 0xb861);
    }

    #[test]
    fn incremental_equals_full_including_the_zero_edges() {
        // Exhaustive over every old/new value of one word in a small header, including the
        // 0x0000 / 0xffff edges RFC 1624 is about.
        let base = [0x12u8, 0x34, 0x00, 0x00, 0xab, 0xcd, 0xff, 0xff];
        for old in (0..=0xffffu32).step_by(257).chain([0, 0xffff, 0xfffe, 1]) {
            for new in [0u16, 1, 0x8000, 0xfffe, 0xffff, 0x1234] {
                let mut d = base;
                d[2..4].copy_from_slice(&(old as u16).to_be_bytes());
                let hc = checksum(&d);
                d[2..4].copy_from_slice(&new.to_be_bytes());
                let full = checksum(&d);
                let inc = update_word(hc, old as u16, new);
                // One's complement has two zeros: both must verify the same way.
                assert_eq!(fold(sum(inc as u64, &d)), fold(sum(full as u64, &d)));
                assert_eq!(inc, full, "old {old:#x} new {new:#x}");
                let inc2 = update(hc, &(old as u16).to_be_bytes(), &new.to_be_bytes());
                assert_eq!(inc2, inc);
            }
        }
    }

    #[test]
    fn incremental_keeps_a_bad_checksum_exactly_as_bad() {
        let mut d = vec![0u8; 20];
        d[..4].copy_from_slice(&[10, 0, 0, 1]);
        let good = checksum(&d);
        let bad = good.wrapping_add(7);
        let new_addr = [192, 168, 1, 9];
        let updated = update(bad, &d[..4], &new_addr);
        d[..4].copy_from_slice(&new_addr);
        let correct = checksum(&d);
        assert_ne!(updated, correct);
        assert_eq!(updated, correct.wrapping_add(7));
    }

    #[test]
    fn partial_checksums_follow_the_pseudo_header() {
        let (src, dst, new_dst) = ([10, 0, 0, 1], [10, 0, 0, 2], [192, 168, 7, 9]);
        let partial = fold(pseudo_header_v4(src, dst, 6, 40));
        let updated = update_partial(partial, &dst, &new_dst);
        assert_eq!(updated, fold(pseudo_header_v4(src, new_dst, 6, 40)));
        let s6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let mut d6 = s6;
        d6[15] = 2;
        let psum = pseudo_header_v6(&s6, &d6, 17, 70_000);
        assert_eq!(
            fold(psum),
            fold(sum(sum(0, &s6), &d6) + 17 + 1 + (70_000 - 65_536))
        );
    }

    #[test]
    fn udp_zero_becomes_ffff() {
        assert_eq!(udp_nonzero(0), 0xffff);
        assert_eq!(udp_nonzero(0x1234), 0x1234);
    }

    #[test]
    fn crc32c_rfc3720_vectors() {
        // RFC 3720 appendix B.4.
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62a8_ab43);
        let inc: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&inc), 0x46dd_794e);
        let dec: Vec<u8> = (0..32).rev().collect();
        assert_eq!(crc32c(&dec), 0x113f_db5c);
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        // Incremental over arbitrary splits.
        let data: Vec<u8> = (0..100u32).map(|i| (i * 7) as u8).collect();
        for split in [0, 1, 7, 8, 9, 50, 100] {
            let (a, b) = data.split_at(split);
            assert_eq!(crc32c_update(crc32c(a), b), crc32c(&data));
        }
    }
}
