//! Before changing a service: how many flows would move?
//!
//! For the table-driven schedulers (`sh`, `dh`, `mh`, `maglev`), new flows follow table slots,
//! so the fraction of slots whose owner changes is the fraction of new flows that land on a
//! different real server. [`plan_change`] applies a planned change (add, remove, reweight) to a
//! copy of a pool's destinations, builds the table the scheduler would build, and compares the
//! two without touching the pool. Owners are compared by `address:port`, so removing a server
//! and adding it back is not counted as a move of its remaining slots.
//!
//! Weight changes that only quiesce a server (`mh` and `maglev` build from the last non-zero
//! weight) move no slot; the flows of its slots become unavailable instead (or fall back), which
//! the result reports separately.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::net::IpAddr;

use crate::dest::{DestConfig, DestEvent, DestId, DestSet};
use crate::sched::{Pool, SchedError, Scheduler};

/// One planned change to a pool's real servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlannedChange {
    /// Add a real server.
    Add(DestConfig),
    /// Remove a real server.
    Remove(IpAddr, u16),
    /// Change a real server's weight (0 quiesces).
    SetWeight(IpAddr, u16, u32),
}

/// The effect of a planned change on a table-driven scheduler.
#[derive(Clone, Debug, PartialEq)]
pub struct ChangeImpact {
    /// Table slots.
    pub slots: usize,
    /// Slots whose owner changes (by address and port).
    pub moved: usize,
    /// Slots whose owner after the change cannot take new connections (weight 0 or
    /// overloaded); they move at lookup time, or get none without the fallback flag.
    pub unavailable_after: usize,
    /// Slots per server before and after: `(address, port) -> (before, after)`.
    pub per_server: BTreeMap<(IpAddr, u16), (usize, usize)>,
}

impl ChangeImpact {
    /// `moved / slots`: the fraction of new flows that would change real server.
    pub fn moved_fraction(&self) -> f64 {
        if self.slots == 0 {
            0.0
        } else {
            self.moved as f64 / self.slots as f64
        }
    }
}

fn owners(
    sched: &(impl Scheduler + ?Sized),
    dests: &DestSet,
) -> Result<Vec<Option<(IpAddr, u16)>>, SchedError> {
    let table = sched.table_for(dests).ok_or(SchedError::NotTableDriven)?;
    Ok(table
        .into_iter()
        .map(|o: Option<DestId>| o.and_then(|id| dests.get(id)).map(|d| (d.addr(), d.port())))
        .collect())
}

/// Computes what `changes` would do to `pool`'s table, without applying them.
pub fn plan_change<S: Scheduler + ?Sized>(
    pool: &Pool<S>,
    changes: &[PlannedChange],
) -> Result<ChangeImpact, SchedError> {
    let before_set = pool.dests();
    let mut after_set = before_set.clone();
    for c in changes {
        match *c {
            PlannedChange::Add(cfg) => {
                after_set.add(&cfg)?;
            }
            PlannedChange::Remove(a, p) => {
                let ev = after_set.remove(a, p)?;
                debug_assert!(matches!(ev, DestEvent::Removed { .. }));
            }
            PlannedChange::SetWeight(a, p, w) => {
                let id = after_set
                    .find(a, p)
                    .ok_or(crate::dest::DestError::NotFound(a, p))?;
                let mut cfg = after_set
                    .get(id)
                    .map(|d| d.config())
                    .ok_or(crate::dest::DestError::NotFound(a, p))?;
                cfg.weight = w;
                after_set.edit(&cfg)?;
            }
        }
    }
    if let Some(limit) = pool.scheduler().max_dests()
        && after_set.len() > limit
    {
        return Err(crate::dest::DestError::TooMany { limit }.into());
    }
    let before = owners(pool.scheduler(), before_set)?;
    let after = owners(pool.scheduler(), &after_set)?;
    let mut per_server: BTreeMap<(IpAddr, u16), (usize, usize)> = BTreeMap::new();
    let mut moved = 0;
    let mut unavailable_after = 0;
    for (b, a) in before.iter().zip(&after) {
        if b != a {
            moved += 1;
        }
        if let Some(k) = b {
            per_server.entry(*k).or_default().0 += 1;
        }
        if let Some(k) = a {
            per_server.entry(*k).or_default().1 += 1;
            let usable = after_set
                .find(k.0, k.1)
                .and_then(|id| after_set.get(id))
                .is_some_and(|d| d.accepts_new());
            if !usable {
                unavailable_after += 1;
            }
        } else {
            unavailable_after += 1;
        }
    }
    Ok(ChangeImpact {
        slots: before.len(),
        moved,
        unavailable_after,
        per_server,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::SchedFlags;
    use crate::sched::testutil::*;

    #[test]
    fn removing_one_of_four_moves_about_its_share() {
        let p = pool(
            "maglev",
            SchedFlags::NONE,
            &[(1, 1), (2, 1), (3, 1), (4, 1)],
        );
        let impact = plan_change(&p, &[PlannedChange::Remove(ip(2), 80)]).unwrap();
        assert_eq!(impact.slots, 65537);
        let f = impact.moved_fraction();
        assert!((0.25..0.27).contains(&f), "moved {f}");
        assert_eq!(impact.per_server[&(ip(2), 80)].1, 0);
        assert_eq!(impact.unavailable_after, 0);
        // The pool itself is untouched.
        assert_eq!(p.dests().len(), 4);
    }

    #[test]
    fn quiescing_moves_no_slot_but_makes_them_unavailable() {
        let p = pool("mh", SchedFlags::NONE, &[(1, 1), (2, 1), (3, 1)]);
        let impact = plan_change(&p, &[PlannedChange::SetWeight(ip(1), 80, 0)]).unwrap();
        assert_eq!(impact.moved, 0);
        let share = impact.per_server[&(ip(1), 80)].0;
        assert_eq!(impact.unavailable_after, share);
        // sh rebuilds on weight changes: a reweight moves slots.
        let s = pool("sh", SchedFlags::NONE, &[(1, 1), (2, 1), (3, 1)]);
        let impact = plan_change(&s, &[PlannedChange::SetWeight(ip(1), 80, 2)]).unwrap();
        assert!(impact.moved > 0);
    }

    #[test]
    fn not_table_driven_and_bad_changes_are_errors() {
        let p = pool("wlc", SchedFlags::NONE, &[(1, 1)]);
        assert_eq!(
            plan_change(&p, &[]).unwrap_err(),
            SchedError::NotTableDriven
        );
        let m = pool("maglev", SchedFlags::NONE, &[(1, 1)]);
        assert!(plan_change(&m, &[PlannedChange::Remove(ip(9), 80)]).is_err());
        let added = plan_change(&m, &[PlannedChange::Add(DestConfig::new(ip(2), 80))]).unwrap();
        assert!((0.49..0.51).contains(&added.moved_fraction()));
    }
}
