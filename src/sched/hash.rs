//! The kernel's hash functions, for bit-exact `sh`, `dh`, `mh`, `lblc` and `lblcr`.
//!
//! - `fold` (ipvs.md §3.10): an IPv4 address as a host-order u32, or the XOR of the four 32-bit
//!   words of an IPv6 address, i.e. `ntohl(addr_fold)`.
//! - `hash_32` (include/linux/hash.h): multiply by `GOLDEN_RATIO_32` and keep the top `bits`.
//! - `hsiphash` on a 64-bit kernel (ipvs.md §3.12): SipHash-1-3 over the 4 little-endian bytes of
//!   a u32, with the two 64-bit key words, keeping the low 32 bits. (32-bit kernels use
//!   HalfSipHash-1-3 instead and build different `mh` tables; we match 64-bit kernels.)
//!
//! These are the kernel's formulas, not keyed secrets: every director computes the same values,
//! which is what lets a user migrating from kernel IPVS keep every client on its real server.

use core::net::IpAddr;

/// `GOLDEN_RATIO_32` of include/linux/hash.h.
pub const GOLDEN_RATIO_32: u32 = 0x61C8_8647;

/// `ntohl(fold(addr))`: the address folded to 32 bits as IPVS hashes it.
#[inline]
pub fn fold(addr: &IpAddr) -> u32 {
    match addr {
        IpAddr::V4(a) => u32::from_be_bytes(a.octets()),
        IpAddr::V6(a) => {
            let o = a.octets();
            let w = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            w(0) ^ w(4) ^ w(8) ^ w(12)
        }
    }
}

/// The kernel's `hash_32(val, bits)` for `1 <= bits <= 32`.
#[inline]
pub const fn hash_32(val: u32, bits: u32) -> u32 {
    val.wrapping_mul(GOLDEN_RATIO_32) >> (32 - bits)
}

/// A 64-bit kernel's `hsiphash_key_t` (two `unsigned long` words).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SipKey(pub u64, pub u64);

/// `ip_vs_mh`'s first key (`hash1`): both words 2654435761.
pub const MH_HASH1: SipKey = SipKey(2_654_435_761, 2_654_435_761);
/// `ip_vs_mh`'s second key (`hash2`): both words 2654446892.
pub const MH_HASH2: SipKey = SipKey(2_654_446_892, 2_654_446_892);

#[inline(always)]
fn sipround(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13);
    v[1] ^= v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16);
    v[3] ^= v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21);
    v[3] ^= v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17);
    v[1] ^= v[2];
    v[2] = v[2].rotate_left(32);
}

/// `hsiphash(&v, sizeof(u32), key)` of a 64-bit x86 kernel: SipHash-1-3 of the 4 bytes of `v`
/// in little-endian order, low 32 bits of the result.
#[inline]
pub fn hsiphash_u32(v: u32, key: SipKey) -> u32 {
    let mut s = [
        0x736f_6d65_7073_6575 ^ key.0,
        0x646f_7261_6e64_6f6d ^ key.1,
        0x6c79_6765_6e65_7261 ^ key.0,
        0x7465_6462_7974_6573 ^ key.1,
    ];
    // A 4-byte message is a single final block: length in the top byte, the bytes below.
    let b = (4u64 << 56) | v as u64;
    s[3] ^= b;
    sipround(&mut s);
    s[0] ^= b;
    s[2] ^= 0xff;
    sipround(&mut s);
    sipround(&mut s);
    sipround(&mut s);
    (s[0] ^ s[1] ^ s[2] ^ s[3]) as u32
}

/// `gcd` of two positive integers.
pub(crate) fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The kernel's `fls`: position of the most significant set bit, 1-based; 0 for 0.
pub(crate) fn fls(x: u32) -> u32 {
    32 - x.leading_zeros()
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::hash::Hasher;
    use core::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn siphash13_matches_the_siphasher_crate() {
        for key in [MH_HASH1, MH_HASH2, SipKey(0, 0), SipKey(u64::MAX, 1)] {
            for v in [0u32, 1, 80, 0x0a00_0001, 0xdead_beef, u32::MAX] {
                let mut h = siphasher::sip::SipHasher13::new_with_keys(key.0, key.1);
                h.write(&v.to_le_bytes());
                assert_eq!(hsiphash_u32(v, key), h.finish() as u32, "v={v:#x}");
            }
        }
    }

    #[test]
    fn fold_and_hash_32() {
        assert_eq!(fold(&IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))), 0x0a00_0001);
        let v6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert_eq!(fold(&IpAddr::V6(v6)), 0x2001_0db8 ^ 1);
        // Worked by hand: 1 * 0x61C88647 >> 24 = 0x61; 2 * 0x61C88647 = 0xC3910C8E >> 24 = 0xC3.
        assert_eq!(hash_32(1, 8), 0x61);
        assert_eq!(hash_32(2, 8), 0xC3);
        assert_eq!(hash_32(0, 10), 0);
        assert_eq!(hash_32(u32::MAX, 32), 0u32.wrapping_sub(GOLDEN_RATIO_32));
        assert_eq!(gcd(12, 18), 6);
        assert_eq!((fls(0), fls(1), fls(1000)), (0, 1, 10));
    }
}
