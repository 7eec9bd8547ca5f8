//! Claiming slots along Maglev permutations, fast.
//!
//! Maglev population (the paper's, the kernel's `mh`, and our `maglev`) repeatedly asks: the
//! first free slot in the sequence `c, c + skip, c + 2 skip, ... (mod M)`. Done naively, filling
//! a table costs about `M ln M` probes, most of them while the last few slots are found (when F
//! slots are free a claim needs about `M / F` probes). Two changes make it several times faster
//! and give **the same slot** every time:
//!
//! - while many slots are free, probes test one bit each in an L1-resident bitmap, in sequence
//!   order but computed as two interleaved chains (`c, c + 2 skip, ...` and `c + skip, ...`):
//!   the loop branches predict "taken" and the CPU runs ahead on the next addresses, which no
//!   longer wait on one long chain of modular additions (explicit four- and eight-wide probing,
//!   which tests several bits before branching, measured slower on this kind of machine);
//! - once few slots are free (`F <= sqrt(M / 2)`), the free slots are kept in a list and the
//!   claim takes the free slot `s` with the fewest steps `k = (s - c) * skip^-1 mod M` from
//!   `c` (M is prime, so `skip` is invertible): O(F) arithmetic instead of O(M / F) probes.

use alloc::vec;
use alloc::vec::Vec;

pub(crate) struct Filler {
    m: u32,
    /// One bit per slot: 8 KiB for M = 65537, so probes hit L1 (a byte per slot measured
    /// slower: 64 KiB spills to L2).
    taken: Vec<u64>,
    free: u32,
    /// The free slots, once few remain.
    tail: Option<Vec<u32>>,
    threshold: u32,
    /// Barrett constant `floor(2^64 / m)`.
    mu: u64,
}

#[inline(always)]
fn addmod(a: u32, b: u32, m: u32) -> u32 {
    let t = a + b;
    if t >= m { t - m } else { t }
}

/// `a * b mod m`, with the Barrett constant `mu = floor(2^64 / m)`.
#[inline(always)]
fn mulmod(a: u32, b: u32, m: u32, mu: u64) -> u32 {
    let x = a as u64 * b as u64;
    let q = ((x as u128 * mu as u128) >> 64) as u64;
    let mut r = x - q * m as u64;
    while r >= m as u64 {
        r -= m as u64;
    }
    r as u32
}

/// Modular inverse of `a` modulo the prime `m` (`0 < a < m`), by the extended Euclid algorithm.
fn inverse(a: u32, m: u32) -> u32 {
    let (mut r0, mut r1) = (m as i64, a as i64);
    let (mut t0, mut t1) = (0i64, 1i64);
    while r1 != 0 {
        let q = r0 / r1;
        (r0, r1) = (r1, r0 - q * r1);
        (t0, t1) = (t1, t0 - q * t1);
    }
    t0.rem_euclid(m as i64) as u32
}

impl Filler {
    /// An empty table of `m` slots (`m` prime, `m < 2^31`).
    pub(crate) fn new(m: u32) -> Self {
        let mut threshold = 1;
        while (threshold + 1) * (threshold + 1) * 2 <= m {
            threshold += 1;
        }
        Filler {
            m,
            taken: vec![0u64; (m as usize).div_ceil(64)],
            free: m,
            tail: None,
            threshold,
            mu: (u128::from(u64::MAX) / u128::from(m.max(1))) as u64,
        }
    }

    /// Claims and returns the first free slot of `c, c + skip, ...` (`0 < skip < m`).
    /// Must not be called on a full table.
    #[inline(always)]
    pub(crate) fn claim(&mut self, c: u32, skip: u32) -> u32 {
        debug_assert!(self.free > 0 && skip > 0 && skip < self.m && c < self.m);
        if self.free <= self.threshold {
            return self.claim_tail(c, skip);
        }
        let slot = self.probe(c, skip);
        self.taken[(slot / 64) as usize] |= 1 << (slot % 64);
        self.free -= 1;
        if self.free == self.threshold {
            self.start_tail();
        }
        slot
    }

    /// The free slots, listed once `free` reaches the threshold.
    #[cold]
    #[inline(never)]
    fn start_tail(&mut self) {
        let mut tail = Vec::with_capacity(self.free as usize);
        for (w, &word) in self.taken.iter().enumerate() {
            let mut free = !word;
            while free != 0 {
                let s = w as u32 * 64 + free.trailing_zeros();
                if s >= self.m {
                    break;
                }
                tail.push(s);
                free &= free - 1;
            }
        }
        self.tail = Some(tail);
    }

    /// The claim once few slots are free: the free slot with the fewest steps from `c`.
    #[inline(never)]
    fn claim_tail(&mut self, c: u32, skip: u32) -> u32 {
        let (m, mu) = (self.m, self.mu);
        let Some(tail) = &mut self.tail else {
            unreachable!("the tail is listed when free reaches the threshold")
        };
        let inv = inverse(skip, m);
        let mut best = (u32::MAX, 0usize);
        for (i, &s) in tail.iter().enumerate() {
            let k = mulmod(addmod(s, m - c, m), inv, m, mu);
            if k < best.0 {
                best = (k, i);
            }
        }
        let slot = tail.swap_remove(best.1);
        self.taken[(slot / 64) as usize] |= 1 << (slot % 64);
        self.free -= 1;
        slot
    }

    /// Probes two interleaved chains, `c, c + 2 skip, ...` and `c + skip, c + 3 skip, ...`,
    /// testing them in sequence order: the loop branches predict "taken" and the CPU runs
    /// ahead, each chain's next index one modular step (compare, select, add) behind the last.
    #[inline(always)]
    fn probe(&self, c: u32, skip: u32) -> u32 {
        let m = self.m;
        let taken = &self.taken[..];
        let test = |c: u32| (taken[(c / 64) as usize] >> (c % 64)) & 1 != 0;
        if !test(c) {
            return c;
        }
        let skip2 = addmod(skip, skip, m);
        let mut a = addmod(c, skip, m);
        let mut b = addmod(a, skip, m);
        loop {
            if !test(a) {
                return a;
            }
            if !test(b) {
                return b;
            }
            a = addmod(a, skip2, m);
            b = addmod(b, skip2, m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook claim, one probe at a time.
    fn naive(taken: &mut [bool], mut c: u32, skip: u32) -> u32 {
        let m = taken.len() as u32;
        while taken[c as usize] {
            c = (c + skip) % m;
        }
        taken[c as usize] = true;
        c
    }

    #[test]
    fn same_slots_as_one_probe_at_a_time() {
        for m in [2u32, 3, 5, 251, 1021, 4093, 65537] {
            let mut f = Filler::new(m);
            let mut t = vec![false; m as usize];
            let mut x: u64 = 0x1234_5678_9abc_def1 ^ m as u64;
            for _ in 0..m {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let c = (x % m as u64) as u32;
                let skip = if m == 2 {
                    1
                } else {
                    ((x >> 32) % (m as u64 - 1)) as u32 + 1
                };
                assert_eq!(f.claim(c, skip), naive(&mut t, c, skip), "m={m}");
            }
            assert!(t.iter().all(|&b| b));
            assert_eq!(f.free, 0);
        }
    }

    #[test]
    fn inverses() {
        for m in [3u32, 251, 65537, 655_373] {
            for a in [1u32, 2, m / 2, m - 1] {
                assert_eq!(a as u64 * inverse(a, m) as u64 % m as u64, 1);
            }
        }
    }
}
