//! Claiming slots along Maglev permutations, fast.
//!
//! Maglev population (the paper's, the kernel's `mh`, and our `maglev`) repeatedly asks: the
//! first free slot in the sequence `c, c + skip, c + 2 skip, ... (mod M)`. Done naively, filling
//! a table costs about `M ln M` probes, most of them while the last few slots are found (when F
//! slots are free a claim needs about `M / F` probes). Two changes make it several times faster
//! and give **the same slot** every time:
//!
//! - while many slots are free, probes test one bit each in an L1-resident bitmap, in sequence
//!   order but computed as four interleaved chains (`c + skip, c + 5 skip, ...`,
//!   `c + 2 skip, ...`, and so on): the loop branches predict "taken" and the CPU runs ahead on
//!   the next addresses, which no longer wait on one long chain of modular additions (four
//!   chains measured 4% faster than two for a whole `maglev` build; explicit four- and
//!   eight-wide probing, which tests several bits before branching, measured slower);
//! - a run of claims along one permutation (`mh`: a server's turns) is one branch-free walk
//!   that claims each free slot it meets ([`Filler::claim_run`]): one mispredicted branch per
//!   run instead of one per claim;
//! - claims by several servers in a row (`maglev`: a round) advance in lockstep, each cursor
//!   stepping branch-free past taken slots until all rest on free ones
//!   ([`Filler::claim_batch`]): one mispredict per batch. Cursors may advance early because a
//!   taken slot stays taken; a slot claimed by an earlier server of the batch is caught when
//!   the batch commits in order, and that claim probes on;
//! - once few slots are free (`F <= sqrt(M / 2)`), the free slots are kept in a list and the
//!   claim takes the free slot `s` with the fewest steps `k = (s - c) * skip^-1 mod M` from
//!   `c` (M is prime, so `skip` is invertible): O(F) arithmetic instead of O(M / F) probes.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

pub(crate) struct Filler<const W: usize> {
    m: u32,
    /// One bit per slot: 8 KiB used for M = 65537, so probes hit L1 (a byte per slot measured
    /// slower: 64 KiB spills to L2). `W` words, a power of two, so that a masked word index
    /// needs no bounds check.
    taken: Box<[u64; W]>,
    /// Claims left before the tail: the fast path runs while it is non-zero. A plain counter
    /// in a register once `claim` is inlined (the cold path gets only the tail and a slice).
    budget: u32,
    tail: Tail,
}

/// The free slots, once few remain.
struct Tail {
    /// Listed when the budget runs out; empty before.
    free: Vec<u32>,
    listed: bool,
    /// Barrett constant `floor(2^64 / m)`.
    mu: u64,
}

/// `a + b mod m` for `a, b < m < 2^31`: `t - m` wraps above `t` unless `t >= m`, so one
/// unsigned minimum (compare and select, no zero register) reduces.
#[inline(always)]
fn addmod(a: u32, b: u32, m: u32) -> u32 {
    let t = a + b;
    t.min(t.wrapping_sub(m))
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

/// Bitmap words for tables of up to 131072 slots (every `mh` size, `maglev`'s default).
pub(crate) const WORDS_SMALL: usize = 2048;
/// Bitmap words for tables of up to 2^20 slots (every `maglev` size).
pub(crate) const WORDS_LARGE: usize = 16384;

/// The word of slot `c`: masked to `W` (a no-op for `c < 64 W`), so never out of bounds.
#[inline(always)]
fn word<const W: usize>(c: u32) -> usize {
    (c as usize / 64) & (W - 1)
}

#[inline(always)]
fn is_taken<const W: usize>(taken: &[u64; W], c: u32) -> bool {
    (taken[word::<W>(c)] >> (c % 64)) & 1 != 0
}

#[inline(always)]
fn take<const W: usize>(taken: &mut [u64; W], c: u32) {
    taken[word::<W>(c)] |= 1 << (c % 64);
}

impl<const W: usize> Filler<W> {
    /// An empty table of `m` slots (`m` prime, `m <= 64 W`).
    pub(crate) fn new(m: u32) -> Self {
        assert!(W.is_power_of_two() && m as usize <= 64 * W);
        let mut threshold = 1;
        while (threshold + 1) * (threshold + 1) * 2 <= m {
            threshold += 1;
        }
        Filler {
            m,
            taken: match vec![0u64; W].into_boxed_slice().try_into() {
                Ok(t) => t,
                Err(_) => unreachable!("W words"),
            },
            budget: m.saturating_sub(threshold),
            tail: Tail {
                free: Vec::new(),
                listed: false,
                mu: (u128::from(u64::MAX) / u128::from(m.max(1))) as u64,
            },
        }
    }

    /// Claims and returns the first free slot of `c, c + skip, ...` (`0 < skip < m`).
    /// Must not be called on a full table.
    #[inline(always)]
    pub(crate) fn claim(&mut self, c: u32, skip: u32) -> u32 {
        debug_assert!(skip > 0 && skip < self.m && c < self.m);
        if self.budget == 0 {
            let words = (self.m as usize).div_ceil(64);
            return self.tail.claim(&mut self.taken[..words], self.m, c, skip);
        }
        self.budget -= 1;
        let slot = probe(&self.taken, self.m, c, skip);
        take(&mut self.taken, slot);
        slot
    }

    /// Claims the first `out.len()` free slots of `c, c + skip, ...` into `out`, in order, and
    /// returns the position one step after the last. Branch-free but for the loop exit, so one
    /// mispredict per run rather than one per claim. Needs `budget() >= out.len()`.
    #[inline(always)]
    pub(crate) fn claim_run(&mut self, mut c: u32, skip: u32, out: &mut [u32]) -> u32 {
        debug_assert!(self.budget as usize >= out.len());
        self.budget -= out.len() as u32;
        let m = self.m;
        let taken = &mut *self.taken;
        let mut k = 0;
        while k < out.len() {
            let w = &mut taken[word::<W>(c)];
            let bit = 1u64 << (c % 64);
            let free = *w & bit == 0;
            // Setting a set bit and writing a slot that is then overwritten are harmless.
            *w |= bit;
            out[k] = c;
            k += free as usize;
            c = addmod(c, skip, m);
        }
        c
    }

    /// Free slots left before the tail.
    #[inline(always)]
    pub(crate) fn budget(&self) -> u32 {
        self.budget
    }

    /// `K` claims at once, in order: the same slots as `K` calls of `claim`. Needs
    /// `budget() >= K`. Two lanes may walk one permutation from one start (a server claiming
    /// twice in a batch): the later lane then finds the earlier one's slot taken at commit and
    /// probes on from it, past slots all taken, so it claims what a claim started after the
    /// earlier lane's slot would.
    #[inline(always)]
    pub(crate) fn claim_batch<const K: usize>(
        &mut self,
        mut pos: [u32; K],
        skip: [u32; K],
    ) -> [u32; K] {
        debug_assert!(self.budget as usize >= K);
        self.budget -= K as u32;
        let m = self.m;
        let taken = &*self.taken;
        loop {
            let mut any = 0u32;
            for j in 0..K {
                let t = (is_taken(taken, pos[j]) as u32).wrapping_neg();
                any |= t;
                pos[j] = addmod(pos[j], skip[j] & t, m);
            }
            if any == 0 {
                break;
            }
        }
        for j in 0..K {
            let mut c = pos[j];
            if is_taken(&self.taken, c) {
                c = probe(&self.taken, m, c, skip[j]);
            }
            take(&mut self.taken, c);
            pos[j] = c;
        }
        pos
    }
}

impl Tail {
    /// The claim once few slots are free (the free slots are listed on the first call): the
    /// free slot with the fewest steps from `c`.
    #[cold]
    #[inline(never)]
    fn claim(&mut self, taken: &mut [u64], m: u32, c: u32, skip: u32) -> u32 {
        if !self.listed {
            self.list(taken, m);
        }
        let mu = self.mu;
        let inv = inverse(skip, m);
        let mut best = (u32::MAX, 0usize);
        for (i, &s) in self.free.iter().enumerate() {
            let k = mulmod(addmod(s, m - c, m), inv, m, mu);
            if k < best.0 {
                best = (k, i);
            }
        }
        let slot = self.free.swap_remove(best.1);
        taken[(slot / 64) as usize] |= 1 << (slot % 64);
        slot
    }

    /// Lists the free slots by word scan.
    fn list(&mut self, taken: &[u64], m: u32) {
        self.listed = true;
        for (w, &word) in taken.iter().enumerate() {
            let mut free = !word;
            while free != 0 {
                let s = w as u32 * 64 + free.trailing_zeros();
                if s >= m {
                    break;
                }
                self.free.push(s);
                free &= free - 1;
            }
        }
    }
}

/// Probes `c`, then four interleaved chains, `c + skip, c + 5 skip, ...` to
/// `c + 4 skip, c + 8 skip, ...`, testing them in sequence order: the loop branches predict
/// "taken" and the CPU runs ahead, each chain's next index one modular step (compare, select,
/// add) behind the last.
#[inline(always)]
fn probe<const W: usize>(taken: &[u64; W], m: u32, c: u32, skip: u32) -> u32 {
    if !is_taken(taken, c) {
        return c;
    }
    let skip2 = addmod(skip, skip, m);
    let skip4 = addmod(skip2, skip2, m);
    let mut a = addmod(c, skip, m);
    let mut b = addmod(a, skip, m);
    let mut d = addmod(b, skip, m);
    let mut e = addmod(d, skip, m);
    loop {
        if !is_taken(taken, a) {
            return a;
        }
        if !is_taken(taken, b) {
            return b;
        }
        if !is_taken(taken, d) {
            return d;
        }
        if !is_taken(taken, e) {
            return e;
        }
        a = addmod(a, skip4, m);
        b = addmod(b, skip4, m);
        d = addmod(d, skip4, m);
        e = addmod(e, skip4, m);
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
            let mut f = Filler::<WORDS_SMALL>::new(m);
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
            assert!(f.tail.free.is_empty());
        }
    }

    /// Runs and lockstep batches, mixed with single claims, against the textbook claim.
    #[test]
    fn runs_and_batches_claim_the_same_slots() {
        for m in [251u32, 4093, 65537] {
            let mut f = Filler::<WORDS_SMALL>::new(m);
            let mut t = vec![false; m as usize];
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ m as u64;
            let mut next = || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (
                    (x % m as u64) as u32,
                    ((x >> 32) % (m as u64 - 1)) as u32 + 1,
                )
            };
            let mut left = m;
            while left > 0 {
                let (c, skip) = next();
                if f.budget() >= 8 && left % 3 == 0 {
                    let mut out = [0u32; 5];
                    let end = f.claim_run(c, skip, &mut out);
                    let mut d = c;
                    for &o in &out {
                        let e = naive(&mut t, d, skip);
                        assert_eq!(o, e, "run, m={m}");
                        d = (e + skip) % m;
                    }
                    assert_eq!(end, d);
                    left -= 5;
                } else if f.budget() >= 8 && left % 3 == 1 {
                    // Some lanes share a start, so later lanes find claimed slots at commit.
                    let (c2, s2) = next();
                    let pos = [c, c2, c, c2];
                    let skip = [skip, s2, skip, s2];
                    let got = f.claim_batch(pos, skip);
                    for j in 0..4 {
                        assert_eq!(got[j], naive(&mut t, pos[j], skip[j]), "batch, m={m}");
                    }
                    left -= 4;
                } else {
                    assert_eq!(f.claim(c, skip), naive(&mut t, c, skip), "m={m}");
                    left -= 1;
                }
            }
            assert!(t.iter().all(|&b| b));
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
