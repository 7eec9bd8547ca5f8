//! `twos`: weighted power of two random choices (Linux 6.2+, ipvs.md §3.9).
//!
//! Two destinations are drawn at random, each with probability proportional to its weight
//! (`r1, r2` uniform in `[0, total]`, then a walk subtracting weights), and the one with the
//! lower `overhead / weight` wins; the first draw wins ties. Randomness comes from an injected
//! [`RandomSource`], so runs are reproducible; the default is [`SplitMix64`] with a fixed seed.
//!
//! The kernel walks the list for both draws (O(n)); here the eligible weights sit in a Fenwick
//! tree over list positions, so a draw is a prefix-sum search in O(log n) that lands on the same
//! server the walk would: the first eligible one in list order whose running weight reaches
//! the draw. Weight, overload and membership changes update the tree.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use crate::dest::{DestEvent, DestId, DestSet};
use crate::flow::FlowKey;
use crate::sched::Scheduler;
use crate::time::Instant;

/// A source of uniformly distributed random numbers for `twos`.
pub trait RandomSource: Send {
    /// The next uniformly distributed 32-bit value.
    fn next_u32(&mut self) -> u32;

    /// A value uniform in `0..bound` (`bound > 0`), by Lemire's multiply-and-reject method, as
    /// the kernel's `get_random_u32_below`.
    fn below(&mut self, bound: u32) -> u32 {
        debug_assert!(bound > 0);
        let bound = bound.max(1);
        loop {
            let m = self.next_u32() as u64 * bound as u64;
            let low = m as u32;
            if low >= bound || low >= bound.wrapping_neg() % bound {
                return (m >> 32) as u32;
            }
        }
    }
}

impl<F: FnMut() -> u32 + Send> RandomSource for F {
    fn next_u32(&mut self) -> u32 {
        self()
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): small, fast, and the same on every platform.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub const fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
}

impl RandomSource for SplitMix64 {
    fn next_u32(&mut self) -> u32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) as u32
    }
}

/// Prefix sums of eligible weights by list position.
#[derive(Clone, Debug, Default)]
struct Fenwick {
    tree: Vec<u64>,
    weights: Vec<u64>,
}

impl Fenwick {
    /// Linear-time construction: each node adds itself into its parent once.
    fn rebuild(&mut self, weights: Vec<u64>) {
        let n = weights.len();
        let mut tree = vec![0u64; n + 1];
        for i in 1..=n {
            tree[i] += weights[i - 1];
            let parent = i + (i & i.wrapping_neg());
            if parent <= n {
                let v = tree[i];
                tree[parent] += v;
            }
        }
        self.tree = tree;
        self.weights = weights;
    }

    fn set(&mut self, pos: usize, w: u64) {
        let Some(old) = self.weights.get(pos).copied() else {
            return;
        };
        self.weights[pos] = w;
        let mut j = pos + 1;
        while j < self.tree.len() {
            self.tree[j] = self.tree[j] - old + w;
            j += j & j.wrapping_neg();
        }
    }

    fn total(&self) -> u64 {
        let mut j = self.weights.len();
        let mut sum = 0;
        while j > 0 {
            sum += self.tree[j];
            j &= j - 1;
        }
        sum
    }

    /// The first position whose inclusive prefix sum reaches `target` (>= 1).
    fn search(&self, target: u64) -> Option<usize> {
        let n = self.weights.len();
        let mut pos = 0;
        let mut rest = target;
        let mut step = if n == 0 {
            0
        } else {
            1 << (usize::BITS - 1 - n.leading_zeros())
        };
        while step > 0 {
            let next = pos + step;
            if next <= n && self.tree[next] < rest {
                pos = next;
                rest -= self.tree[next];
            }
            step >>= 1;
        }
        (pos < n).then_some(pos)
    }
}

/// Weighted power-of-two-choices scheduler.
pub struct Twos {
    rng: Box<dyn RandomSource>,
    sums: Fenwick,
}

impl fmt::Debug for Twos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Twos").finish_non_exhaustive()
    }
}

impl Twos {
    /// A scheduler drawing from `rng`.
    pub fn new(rng: Box<dyn RandomSource>) -> Self {
        Twos {
            rng,
            sums: Fenwick::default(),
        }
    }
}

fn eligible_weight(dests: &DestSet, id: DestId) -> u64 {
    match dests.get(id) {
        Some(d) if dests.accepts_new(id) => d.weight() as u64,
        _ => 0,
    }
}

impl Scheduler for Twos {
    fn name(&self) -> &'static str {
        "twos"
    }

    fn init(&mut self, dests: &DestSet) {
        self.sums
            .rebuild(dests.ids().map(|id| eligible_weight(dests, id)).collect());
    }

    fn update(&mut self, dests: &DestSet, event: DestEvent) {
        match event {
            DestEvent::Added(_) | DestEvent::Removed { .. } => self.init(dests),
            DestEvent::Updated(id) | DestEvent::Load(id) => {
                if let Some(pos) = dests.position(id) {
                    self.sums.set(pos, eligible_weight(dests, id));
                }
            }
        }
    }

    fn schedule(&mut self, dests: &DestSet, _: &FlowKey, _: Instant) -> Option<DestId> {
        let total = self.sums.total();
        if total == 0 {
            return None;
        }
        // Inclusive of `total`, as the kernel draws below total + 1. Weights are at most 65535
        // each, so a u32 total only overflows past 65537 servers; clamp rather than wrap.
        let bound = u32::try_from(total + 1).unwrap_or(u32::MAX);
        let r1 = self.rng.below(bound) as u64;
        let r2 = self.rng.below(bound) as u64;
        // The kernel's walk stops at the first eligible server whose running weight reaches r;
        // a draw of 0 stops at the first eligible server, whose running weight is at least 1.
        let pick = |r: u64| {
            let id = dests.nth(self.sums.search(r.max(1))?)?;
            let d = dests.get(id)?;
            Some((id, d.weight() as u64, d.overhead()))
        };
        let (id1, w1, oh1) = pick(r1)?;
        let (id2, w2, oh2) = pick(r2)?;
        Some(if w2 * oh1 > w1 * oh2 { id2 } else { id1 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dest::{ConnKind, DestConfig};
    use crate::sched::Pool;
    use crate::sched::testutil::*;

    fn scripted(values: Vec<u32>) -> Box<dyn RandomSource> {
        let mut it = values.into_iter().cycle();
        Box::new(move || it.next().unwrap_or(0))
    }

    #[test]
    fn draws_are_weighted_and_the_less_loaded_wins() {
        // list 2 (w 3), 1 (w 1): total 4, draws in [0, 4].
        let mut p: Pool = Pool::new(Box::new(Twos::new(Box::new(SplitMix64::new(7)))));
        p.add_dest(&DestConfig::new(ip(1), 80).weight(1)).unwrap();
        p.add_dest(&DestConfig::new(ip(2), 80).weight(3)).unwrap();
        let mut counts = [0u32; 2];
        for _ in 0..10_000 {
            let id = p.schedule(&flow([1; 4], 1), Instant::ZERO).unwrap();
            counts[usize::from(Some(id) == p.dests().find(ip(2), 80))] += 1;
        }
        // Idle servers: the first draw wins ties, so shares follow the draw. With r in [0, 4],
        // r <= 3 lands on server 2 (the list head, weight 3) and r = 4 on server 1: 4/5.
        assert!((7_700..8_300).contains(&counts[1]), "{counts:?}");
    }

    #[test]
    fn second_choice_wins_when_less_loaded() {
        // below(5) with next_u32 = v gives (v * 5) >> 32: 2^20 -> 0, u32::MAX -> 4.
        let mut p: Pool = Pool::new(Box::new(Twos::new(scripted(vec_of(&[1 << 20, u32::MAX])))));
        p.add_dest(&DestConfig::new(ip(1), 80).weight(1)).unwrap();
        p.add_dest(&DestConfig::new(ip(2), 80).weight(3)).unwrap();
        // r1 = 0 -> server 2 (head), r2 = 4 -> server 1. Both idle: first choice.
        assert_eq!(picks(&mut p, 1), "2");
        let two = p.dests().find(ip(2), 80).unwrap();
        p.bind(two, ConnKind::Inactive).unwrap();
        // 2 has overhead 1, weight 3; 1 has 0: w1*oh2 = 3*0 < ... 1 wins.
        assert_eq!(picks(&mut p, 1), "1");
    }

    fn vec_of(v: &[u32]) -> Vec<u32> {
        v.to_vec()
    }

    #[test]
    fn fenwick_search_is_the_kernel_walk() {
        let weights: Vec<u64> = vec![0, 3, 0, 0, 1, 7, 0, 2, 5, 0];
        let mut f = Fenwick::default();
        f.rebuild(weights.clone());
        let total: u64 = weights.iter().sum();
        assert_eq!(f.total(), total);
        for r in 0..=total {
            // The kernel: walk eligible (w > 0) entries, subtract, stop at r <= 0.
            let mut left = r as i64;
            let walk = weights.iter().position(|&w| {
                if w == 0 {
                    return false;
                }
                left -= w as i64;
                left <= 0
            });
            assert_eq!(f.search(r.max(1)), walk, "r={r}");
        }
        f.set(5, 0);
        f.set(0, 4);
        assert_eq!(f.total(), total - 7 + 4);
        assert_eq!(f.search(1), Some(0));
        assert_eq!(f.search(5), Some(1));
        assert_eq!(f.search(8), Some(4));
        assert_eq!(f.search(9), Some(7));
        assert_eq!(f.search(10), Some(7));
        assert_eq!(f.search(100), None);
    }

    #[test]
    fn below_is_in_range() {
        let mut r = SplitMix64::new(1);
        for bound in [1u32, 2, 3, 7, 1000, u32::MAX] {
            for _ in 0..100 {
                assert!(r.below(bound) < bound);
            }
        }
    }
}
