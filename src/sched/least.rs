//! `lc`, `wlc`, `sed`, `nq`, `fo` and `ovf`: the "best by a load rule" schedulers, in O(log n).
//!
//! IPVS scans every destination for each new connection (ipvs.md §3.3–§3.8) and keeps the first
//! best one in list order. Each rule is a total preorder on destinations, so "first best in list
//! order" is "the minimum of (rule, list position)". We keep that minimum in a tournament tree
//! over destination slots, updated in O(log n) when a destination's counters, weight or flags
//! change (every [`DestEvent`]); a pick reads the root in O(1). List position needs no
//! renumbering: IPVS only ever links at the head, so list order is the reverse of the
//! linked-at sequence ([`Dest::list_seq`](crate::dest::Dest::list_seq)), which never changes
//! while a destination stays linked.
//!
//! The rules, with `overhead = (active << 8) + inactive` and ties to the earlier destination:
//!
//! | scheduler | eligible | better when |
//! |---|---|---|
//! | `lc` | weight > 0, not overloaded | smaller overhead |
//! | `wlc` | weight > 0, not overloaded | smaller overhead / weight (cross-multiplied, 64-bit) |
//! | `sed` | weight > 0, not overloaded | smaller (active + 1) / weight |
//! | `nq` | weight > 0, not overloaded | idle (active == 0) first, the earliest idle one; else `sed` |
//! | `fo` | weight > 0, not overloaded | larger weight |
//! | `ovf` | weight > 0, not overloaded, active <= weight | larger weight |

use alloc::vec;
use alloc::vec::Vec;
use core::cmp::Ordering;

use crate::dest::{Dest, DestEvent, DestId, DestSet};
use crate::flow::FlowKey;
use crate::sched::Scheduler;
use crate::time::Instant;

const NONE: u32 = u32::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rule {
    Lc,
    Wlc,
    Sed,
    Nq,
    Fo,
    Ovf,
}

#[derive(Clone, Copy, Debug, Default)]
struct Leaf {
    ok: bool,
    active: u32,
    weight: u32,
    overhead: u64,
    seq: u64,
    id: Option<DestId>,
}

/// A tournament (winner) tree over destination slots.
#[derive(Clone, Debug)]
pub(crate) struct Tournament {
    rule: Rule,
    leaves: Vec<Leaf>,
    /// `tree[1]` is the root; leaves of slot `i` at `tree[cap + i]`.
    tree: Vec<u32>,
    cap: usize,
}

impl Tournament {
    pub(crate) fn new(rule: Rule) -> Self {
        Tournament {
            rule,
            leaves: Vec::new(),
            tree: vec![NONE; 2],
            cap: 1,
        }
    }

    fn leaf_of(&self, id: DestId, d: &Dest) -> Leaf {
        let mut ok = d.accepts_new();
        if self.rule == Rule::Ovf {
            ok &= d.active_conns() <= d.weight();
        }
        Leaf {
            ok,
            active: d.active_conns(),
            weight: d.weight(),
            overhead: d.overhead(),
            seq: d.list_seq(),
            id: Some(id),
        }
    }

    /// `a` strictly better than `b` under the rule, before the list-order tie-break.
    #[inline]
    fn cmp_load(&self, a: &Leaf, b: &Leaf) -> Ordering {
        let sed = |a: &Leaf, b: &Leaf| {
            ((a.active as u64 + 1) * b.weight as u64)
                .cmp(&((b.active as u64 + 1) * a.weight as u64))
        };
        match self.rule {
            Rule::Lc => a.overhead.cmp(&b.overhead),
            Rule::Wlc => (a.overhead * b.weight as u64).cmp(&(b.overhead * a.weight as u64)),
            Rule::Sed => sed(a, b),
            Rule::Nq => match (a.active == 0, b.active == 0) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Less,
                (false, true) => Ordering::Greater,
                (false, false) => sed(a, b),
            },
            Rule::Fo | Rule::Ovf => b.weight.cmp(&a.weight),
        }
    }

    /// Which of two slots wins.
    #[inline]
    fn winner(&self, x: u32, y: u32) -> u32 {
        if x == NONE {
            return y;
        }
        if y == NONE {
            return x;
        }
        let (a, b) = (&self.leaves[x as usize], &self.leaves[y as usize]);
        let y_wins = match (a.ok, b.ok) {
            (false, _) => b.ok,
            (true, false) => false,
            (true, true) => match self.cmp_load(b, a) {
                Ordering::Less => true,
                Ordering::Greater => false,
                // Ties go to the destination nearer the list head.
                Ordering::Equal => b.seq > a.seq,
            },
        };
        if y_wins { y } else { x }
    }

    pub(crate) fn rebuild(&mut self, dests: &DestSet) {
        let slots = dests.slot_count().max(1);
        self.cap = slots.next_power_of_two();
        self.leaves = vec![Leaf::default(); self.cap];
        self.tree = vec![NONE; 2 * self.cap];
        for (id, d) in dests.iter() {
            self.leaves[id.index()] = self.leaf_of(id, d);
            self.tree[self.cap + id.index()] = id.index() as u32;
        }
        for node in (1..self.cap).rev() {
            self.tree[node] = self.winner(self.tree[2 * node], self.tree[2 * node + 1]);
        }
    }

    fn refresh(&mut self, dests: &DestSet, id: DestId) {
        let i = id.index();
        if i >= self.cap {
            self.rebuild(dests);
            return;
        }
        match dests.get(id).filter(|d| d.is_available()) {
            Some(d) => {
                self.leaves[i] = self.leaf_of(id, d);
                self.tree[self.cap + i] = i as u32;
            }
            None => {
                self.leaves[i] = Leaf::default();
                self.tree[self.cap + i] = NONE;
            }
        }
        let mut node = (self.cap + i) / 2;
        while node >= 1 {
            let w = self.winner(self.tree[2 * node], self.tree[2 * node + 1]);
            self.tree[node] = w;
            node /= 2;
        }
    }

    pub(crate) fn update(&mut self, dests: &DestSet, event: DestEvent) {
        // Every event re-reads the destination; a removed one reads as gone.
        self.refresh(dests, event.id());
    }

    #[inline]
    pub(crate) fn best(&self) -> Option<DestId> {
        let w = self.tree[1];
        if w == NONE {
            return None;
        }
        let leaf = &self.leaves[w as usize];
        if leaf.ok { leaf.id } else { None }
    }
}

macro_rules! least_scheduler {
    ($(#[$doc:meta])* $ty:ident, $rule:expr, $name:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $ty(Tournament);

        impl $ty {
            /// A new scheduler; bind it with [`Scheduler::init`] or through a `Pool`.
            pub fn new() -> Self {
                $ty(Tournament::new($rule))
            }
        }

        impl Default for $ty {
            fn default() -> Self {
                Self::new()
            }
        }

        impl Scheduler for $ty {
            fn name(&self) -> &'static str {
                $name
            }
            fn init(&mut self, dests: &DestSet) {
                self.0.rebuild(dests);
            }
            #[inline]
            fn update(&mut self, dests: &DestSet, event: DestEvent) {
                self.0.update(dests, event);
            }
            #[inline]
            fn schedule(&mut self, _: &DestSet, _: &FlowKey, _: Instant) -> Option<DestId> {
                self.0.best()
            }
        }
    };
}

least_scheduler!(
    /// `lc`: least connection, `overhead = active * 256 + inactive` (ipvs.md §3.3).
    Lc,
    Rule::Lc,
    "lc"
);
least_scheduler!(
    /// `wlc`: weighted least connection, the IPVS default (ipvs.md §3.4).
    Wlc,
    Rule::Wlc,
    "wlc"
);
least_scheduler!(
    /// `sed`: shortest expected delay, `(active + 1) / weight` (ipvs.md §3.5).
    Sed,
    Rule::Sed,
    "sed"
);
least_scheduler!(
    /// `nq`: never queue: the first idle server in list order, else `sed` (ipvs.md §3.6).
    Nq,
    Rule::Nq,
    "nq"
);
least_scheduler!(
    /// `fo`: weighted fail-over: the highest weight that is not overloaded (ipvs.md §3.7).
    Fo,
    Rule::Fo,
    "fo"
);
least_scheduler!(
    /// `ovf`: overflow: the highest weight whose active connections do not exceed its weight
    /// (ipvs.md §3.8).
    Ovf,
    Rule::Ovf,
    "ovf"
);

#[cfg(test)]
mod tests {
    use crate::dest::{ConnKind, DestConfig};
    use crate::sched::testutil::*;
    use crate::sched::{Pool, SchedFlags};
    use crate::time::Instant;

    fn load(p: &mut Pool, n: u8, active: u32, inactive: u32) {
        let id = p.dests().find(ip(n), 80).unwrap();
        for _ in 0..active {
            p.bind(id, ConnKind::Active).unwrap();
        }
        for _ in 0..inactive {
            p.bind(id, ConnKind::Inactive).unwrap();
        }
    }

    fn pick(p: &mut Pool) -> char {
        let id = p.schedule(&flow([1, 1, 1, 1], 1), Instant::ZERO);
        label(p, id)
    }

    #[test]
    fn wlc_ties_go_to_the_list_head() {
        // Added 1,2,3 -> list 3,2,1; all idle: 3 wins.
        let mut p = pool("wlc", SchedFlags::NONE, &[(1, 1), (2, 1), (3, 1)]);
        assert_eq!(pick(&mut p), '3');
        load(&mut p, 3, 0, 1);
        assert_eq!(pick(&mut p), '2');
        // 1 and 2 idle, 3 at 1/1: 2 (nearer the head) wins the tie.
        load(&mut p, 2, 0, 1);
        assert_eq!(pick(&mut p), '1');
        load(&mut p, 1, 0, 1);
        assert_eq!(pick(&mut p), '3');
    }

    #[test]
    fn wlc_weights_and_overhead() {
        // 1: weight 1; 2: weight 3.
        let mut p = pool("wlc", SchedFlags::NONE, &[(1, 1), (2, 3)]);
        load(&mut p, 2, 1, 0); // 256/3 = 85.3
        load(&mut p, 1, 0, 100); // 100/1
        assert_eq!(pick(&mut p), '2');
        load(&mut p, 2, 0, 45); // 301/3 = 100.33 > 100
        assert_eq!(pick(&mut p), '1');
        load(&mut p, 1, 0, 1); // 101 vs 100.33
        assert_eq!(pick(&mut p), '2');
    }

    #[test]
    fn weight_zero_never_wins_but_keeps_its_place() {
        let mut p = pool("wlc", SchedFlags::NONE, &[(1, 1), (2, 1)]);
        load(&mut p, 1, 5, 0);
        let two = p.dests().find(ip(2), 80).unwrap();
        p.set_weight(two, 0).unwrap();
        assert_eq!(pick(&mut p), '1');
        p.set_weight(two, 1).unwrap();
        assert_eq!(pick(&mut p), '2');
        for name in ["lc", "sed", "nq", "fo", "ovf"] {
            let mut p = pool(name, SchedFlags::NONE, &[(1, 1), (2, 0)]);
            assert_eq!(pick(&mut p), '1', "{name}");
        }
    }

    #[test]
    fn overloaded_servers_are_skipped_until_the_lower_threshold() {
        let mut p = pool("wlc", SchedFlags::NONE, &[(1, 1)]);
        p.add_dest(&DestConfig::new(ip(2), 80).thresholds(2, 1))
            .unwrap();
        assert_eq!(pick(&mut p), '2');
        load(&mut p, 2, 0, 2);
        assert_eq!(pick(&mut p), '1');
        load(&mut p, 1, 0, 10);
        assert_eq!(pick(&mut p), '1');
        let two = p.dests().find(ip(2), 80).unwrap();
        p.unbind(two, ConnKind::Inactive).unwrap(); // 1 left, not < 1
        assert_eq!(pick(&mut p), '1');
        p.unbind(two, ConnKind::Inactive).unwrap(); // 0 < 1: cleared
        assert_eq!(pick(&mut p), '2');
    }

    #[test]
    fn lc_ignores_weight() {
        let mut p = pool("lc", SchedFlags::NONE, &[(1, 1), (2, 100)]);
        load(&mut p, 2, 0, 3);
        load(&mut p, 1, 0, 2);
        assert_eq!(pick(&mut p), '1');
        load(&mut p, 1, 0, 1);
        assert_eq!(pick(&mut p), '2'); // tie at 3: 2 is the list head
        load(&mut p, 2, 1, 0);
        assert_eq!(pick(&mut p), '1'); // 259 vs 3
    }

    #[test]
    fn sed_and_nq() {
        // 1: weight 1, 2: weight 4. Both idle: sed compares 1/1 vs 1/4: 2.
        let mut p = pool("sed", SchedFlags::NONE, &[(1, 1), (2, 4)]);
        load(&mut p, 2, 4, 50); // inactive is ignored: 5/4 vs 1/1
        assert_eq!(pick(&mut p), '1');
        load(&mut p, 2, 0, 0);
        let mut q = pool("nq", SchedFlags::NONE, &[(1, 1), (2, 4), (3, 9)]);
        load(&mut q, 3, 1, 0); // list 3,2,1: 3 busy, 2 idle -> 2 (first idle)
        assert_eq!(pick(&mut q), '2');
        load(&mut q, 2, 1, 0); // none idle but 1
        assert_eq!(pick(&mut q), '1');
        load(&mut q, 1, 1, 0); // all busy: sed 2/9, 2/4, 2/1 -> 3
        assert_eq!(pick(&mut q), '3');
    }

    #[test]
    fn fo_and_ovf() {
        let mut p = pool("fo", SchedFlags::NONE, &[(1, 5), (2, 10), (3, 10)]);
        assert_eq!(pick(&mut p), '3'); // tie at 10: list head
        let three = p.dests().find(ip(3), 80).unwrap();
        p.set_weight(three, 1).unwrap();
        assert_eq!(pick(&mut p), '2');
        let mut o = pool("ovf", SchedFlags::NONE, &[(1, 5), (2, 2)]);
        assert_eq!(pick(&mut o), '1');
        load(&mut o, 1, 5, 0); // active 5 <= weight 5: still eligible
        assert_eq!(pick(&mut o), '1');
        load(&mut o, 1, 1, 0); // 6 > 5: overflow to 2
        assert_eq!(pick(&mut o), '2');
        load(&mut o, 2, 3, 0);
        assert_eq!(pick(&mut o), '-');
    }

    #[test]
    fn survives_slot_growth_and_removal() {
        let mut p = pool("wlc", SchedFlags::NONE, &[]);
        for n in 1..=40 {
            p.add_dest(&DestConfig::new(ip(n), 80)).unwrap();
            load(&mut p, n, 0, 1);
        }
        // All at 1/1: the list head (the last added) wins; remove it and the next head does.
        let f = flow([1; 4], 1);
        assert_eq!(p.schedule(&f, Instant::ZERO), p.dests().find(ip(40), 80));
        p.remove_dest(ip(40), 80).unwrap();
        assert_eq!(p.schedule(&f, Instant::ZERO), p.dests().find(ip(39), 80));
        // A removed-then-revived server comes back at the head.
        p.remove_dest(ip(7), 80).unwrap();
        p.add_dest(&DestConfig::new(ip(7), 80)).unwrap();
        assert_eq!(p.schedule(&f, Instant::ZERO), p.dests().find(ip(7), 80));
    }
}
