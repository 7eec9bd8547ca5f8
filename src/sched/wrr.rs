//! `wrr`: weighted round robin with gcd stepping (ipvs.md §3.2).
//!
//! The scheduler keeps a position `cl` in the list (initially the head), a current weight `cw`,
//! the step `di` (gcd of the positive weights) and `mw` (the largest weight minus `di - 1`). A
//! pick walks on from `cl` and takes the first destination, not overloaded, with weight `>= cw`;
//! at the end of the list `cw` drops by `di`, wrapping to `mw`. Every add, remove or edit puts
//! `cl` back at the head and re-derives `cw` by the kernel's rule, so the sequence after a
//! change, and the sequence of a service created empty and filled one server at a time (the
//! usual `ipvsadm` order), are the kernel's: weights 4, 3, 2 added in that order give
//! `C B A | A | B A | C B A | C B A | A | B A | ...`.

use crate::dest::{DestEvent, DestId, DestSet};
use crate::flow::FlowKey;
use crate::sched::Scheduler;
use crate::sched::hash::gcd;
use crate::time::Instant;

/// Weighted round-robin scheduler.
#[derive(Clone, Debug, Default)]
pub struct Wrr {
    /// Position of the current destination; `None` = the list head.
    cl: Option<usize>,
    cw: i64,
    mw: i64,
    di: i64,
}

impl Wrr {
    /// A weighted round-robin scheduler (bind it with [`Scheduler::init`] or a `Pool`).
    pub fn new() -> Self {
        Wrr {
            cl: None,
            cw: 0,
            mw: 0,
            di: 1,
        }
    }

    fn recompute(&mut self, dests: &DestSet) {
        let mut g = 0u32;
        let mut max = 0u32;
        for (_, d) in dests.iter() {
            let w = d.weight();
            if w > 0 {
                g = if g > 0 { gcd(w, g) } else { w };
            }
            max = max.max(w);
        }
        self.di = if g == 0 { 1 } else { g as i64 };
        self.mw = max as i64 - (self.di - 1);
    }

    /// The current position, weight threshold, maximum and step: `(cl, cw, mw, di)`.
    pub fn state(&self) -> (Option<usize>, i64, i64, i64) {
        (self.cl, self.cw, self.mw, self.di)
    }
}

impl Scheduler for Wrr {
    fn name(&self) -> &'static str {
        "wrr"
    }

    fn init(&mut self, dests: &DestSet) {
        self.cl = None;
        self.recompute(dests);
        self.cw = self.mw;
    }

    fn update(&mut self, dests: &DestSet, event: DestEvent) {
        if let DestEvent::Load(_) = event {
            return;
        }
        // ip_vs_wrr_dest_changed
        self.cl = None;
        self.recompute(dests);
        if self.cw > self.mw || self.cw == 0 {
            self.cw = self.mw;
        } else if self.di > 1 {
            self.cw = (self.cw / self.di) * self.di + 1;
        }
    }

    fn schedule(&mut self, dests: &DestSet, _flow: &FlowKey, _now: Instant) -> Option<DestId> {
        if self.mw == 0 {
            return None;
        }
        let n = dests.len();
        let last = self.cl;
        let mut pos = last.map_or(0, |p| p + 1);
        let mut stop = None;
        let mut last_pass = false;
        let mut restarted = false;
        loop {
            while pos < n {
                let id = dests.nth(pos)?;
                let d = dests.get(id)?;
                if !d.is_overloaded() && d.weight() as i64 >= self.cw {
                    self.cl = Some(pos);
                    return Some(id);
                }
                if stop == Some(pos) {
                    self.cl = Some(pos);
                    return None;
                }
                pos += 1;
            }
            self.cw -= self.di;
            if self.cw <= 0 {
                self.cw = self.mw;
                // Either the previous pass was already the weight >= 1 pass, or it started at
                // the head and so covered every destination: all are overloaded.
                if last_pass || last.is_none() {
                    self.cl = None;
                    return None;
                }
                restarted = true;
            }
            last_pass = self.cw <= self.di;
            if last_pass && restarted && last.is_some() {
                // The first weight >= 1 pass only covered the entries after `last`.
                stop = last;
            }
            pos = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Wrr;
    use crate::dest::{ConnKind, DestConfig};
    use crate::sched::testutil::*;
    use crate::sched::{SchedFlags, by_name};

    // A = .1 weight 4, B = .2 weight 3, C = .3 weight 2.

    #[test]
    fn bound_after_dests_exist() {
        // List order A, B, C: add C, B, A, then bind wrr to the populated service.
        let mut p = pool("rr", SchedFlags::NONE, &[(3, 2), (2, 3), (1, 4)]);
        p.set_scheduler(by_name("wrr", SchedFlags::NONE).unwrap())
            .unwrap();
        assert_eq!(picks(&mut p, 18), "112123123112123123");
    }

    #[test]
    fn service_created_empty_then_filled() {
        // ipvs.md §3.2, checked against the kernel's code: C B A | A | B A | C B A | C B A | ...
        let mut p = pool("wrr", SchedFlags::NONE, &[(1, 4), (2, 3), (3, 2)]);
        assert_eq!(picks(&mut p, 3 + 1 + 2 + 3 + 3 + 1 + 2), "321121321321121");
    }

    #[test]
    fn one_full_cycle_gives_weight_over_gcd_picks() {
        let mut p = pool("wrr", SchedFlags::NONE, &[(1, 6), (2, 4), (3, 2)]);
        // gcd 2: cycle length (6+4+2)/2 = 6, after the first (cw = 1) pass settles.
        let warm = picks(&mut p, 3);
        assert_eq!(warm, "321");
        let cycle = picks(&mut p, 6);
        let count = |c| cycle.chars().filter(|&x| x == c).count();
        assert_eq!((count('1'), count('2'), count('3')), (3, 2, 1));
        assert_eq!(cycle, "121321");
    }

    #[test]
    fn weight_change_mid_sequence_restarts_at_head() {
        let mut p = typed_pool(Wrr::new(), &[(1, 4), (2, 3), (3, 2)]);
        assert_eq!(picks(&mut p, 5), "32112");
        let (_, cw, mw, di) = p.scheduler().state();
        assert_eq!((cw, mw, di), (3, 4, 1));
        let c = p.dests().find(ip(3), 80).unwrap();
        p.set_weight(c, 4).unwrap(); // weights C=4 B=3 A=4: cl=head, cw stays 3
        assert_eq!(picks(&mut p, 6), "321321");
        // Quiesce A: mw stays 4 (C), gcd 1.
        let a = p.dests().find(ip(1), 80).unwrap();
        p.set_weight(a, 0).unwrap();
        assert!(!picks(&mut p, 20).contains('1'));
    }

    #[test]
    fn gcd_rounding_after_change() {
        // Weights 4 and 2 (gcd 2): mw = 4 - 1 = 3.
        let mut p = typed_pool(Wrr::new(), &[(1, 4), (2, 2)]);
        let (_, cw, mw, di) = p.scheduler().state();
        assert_eq!((cw, mw, di), (1, 3, 2));
        // cw = 1 pass: 2, 1; then cw = 3: 1; cw = 1: 2 1; ...
        assert_eq!(picks(&mut p, 5), "21121");
        // Adding a weight-6 server: gcd 2, mw 5, cw 1 -> (1/2)*2+1 = 1.
        p.add_dest(&DestConfig::new(ip(3), 80).weight(6)).unwrap();
        let (cl, cw, mw, di) = p.scheduler().state();
        assert_eq!((cl, cw, mw, di), (None, 1, 5, 2));
    }

    #[test]
    fn all_overloaded_returns_none_and_recovers() {
        let mut p = pool("wrr", SchedFlags::NONE, &[(1, 2), (2, 1)]);
        for n in [1, 2] {
            let id = p.dests().find(ip(n), 80).unwrap();
            let cfg = p.dests().get(id).unwrap().config().thresholds(1, 0);
            p.edit_dest(&cfg).unwrap();
            p.bind(id, ConnKind::Inactive).unwrap();
        }
        assert_eq!(picks(&mut p, 3), "---");
        let one = p.dests().find(ip(1), 80).unwrap();
        p.unbind(one, ConnKind::Inactive).unwrap();
        assert_eq!(picks(&mut p, 3), "111");
        // With both back, the 2:1 weights show again over any ten cycles.
        let two = p.dests().find(ip(2), 80).unwrap();
        p.unbind(two, ConnKind::Inactive).unwrap();
        let s = picks(&mut p, 30);
        let ones = s.chars().filter(|&c| c == '1').count();
        assert!((19..=21).contains(&ones), "{s}");
        assert_eq!(s.chars().filter(|&c| c == '2').count(), 30 - ones);
    }
}
