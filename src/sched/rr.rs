//! `rr`: round robin (ipvs.md §3.1).
//!
//! A cursor sits on the last destination picked (initially the list head). A pick walks on from
//! the entry after the cursor, wrapping through the head, and takes the first destination with
//! weight above 0 that is not overloaded; the walk ends, without a pick, back at the cursor.
//! Weights count only as zero or not. When the destination under the cursor is removed, the
//! cursor moves to the entry before it, so the sequence continues where it was.

use crate::dest::{DestEvent, DestId, DestSet};
use crate::flow::FlowKey;
use crate::sched::Scheduler;
use crate::time::Instant;

/// Round-robin scheduler.
#[derive(Clone, Debug, Default)]
pub struct Rr {
    /// `None` = the list head.
    cursor: Option<DestId>,
}

impl Rr {
    /// A round-robin scheduler with its cursor at the list head.
    pub fn new() -> Self {
        Rr::default()
    }
}

impl Scheduler for Rr {
    fn name(&self) -> &'static str {
        "rr"
    }

    fn init(&mut self, _dests: &DestSet) {
        self.cursor = None;
    }

    fn update(&mut self, _dests: &DestSet, event: DestEvent) {
        if let DestEvent::Removed { id, prev } = event
            && self.cursor == Some(id)
        {
            self.cursor = prev;
        }
    }

    fn schedule(&mut self, dests: &DestSet, _flow: &FlowKey, _now: Instant) -> Option<DestId> {
        let n = dests.len();
        let start = self.cursor.and_then(|c| dests.position(c));
        // From the head: one pass. From a destination: the rest of the list, then from the head
        // up to and including the cursor itself.
        let (first, len) = match start {
            None => (0, n),
            Some(p) => (p + 1, n),
        };
        for k in 0..len {
            let pos = (first + k) % n;
            let id = dests.nth(pos)?;
            if dests.get(id).is_some_and(|d| d.accepts_new()) {
                self.cursor = Some(id);
                return Some(id);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use crate::dest::DestConfig;
    use crate::sched::SchedFlags;
    use crate::sched::testutil::*;

    #[test]
    fn cycles_in_list_order_skipping_quiesced() {
        // Added 1,2,3 -> list 3,2,1.
        let mut p = pool("rr", SchedFlags::NONE, &[(1, 1), (2, 5), (3, 1)]);
        assert_eq!(picks(&mut p, 7), "3213213");
        let two = p.dests().find(ip(2), 80).unwrap();
        p.set_weight(two, 0).unwrap();
        assert_eq!(picks(&mut p, 4), "1313");
    }

    #[test]
    fn removing_the_cursor_continues_from_its_predecessor() {
        let mut p = pool("rr", SchedFlags::NONE, &[(1, 1), (2, 1), (3, 1), (4, 1)]);
        // list 4,3,2,1
        assert_eq!(picks(&mut p, 2), "43");
        p.remove_dest(ip(3), 80).unwrap(); // cursor on 3 -> moves to 4
        assert_eq!(picks(&mut p, 3), "214");
        // Adding does not move the cursor (rr has no add_dest hook): next after 4 is 2.
        p.add_dest(&DestConfig::new(ip(5), 80)).unwrap(); // list 5,4,2,1
        assert_eq!(picks(&mut p, 4), "2154");
        // The cursor is on 4; removing it moves the cursor to its predecessor, 5.
        p.remove_dest(ip(4), 80).unwrap(); // list 5,2,1
        assert_eq!(picks(&mut p, 3), "215");
        // The cursor is now on the head, 5; removing it puts the cursor at the list head.
        p.remove_dest(ip(5), 80).unwrap(); // list 2,1
        assert_eq!(picks(&mut p, 3), "212");
    }

    #[test]
    fn the_cursor_itself_is_tried_last() {
        let mut p = pool("rr", SchedFlags::NONE, &[(1, 1), (2, 1)]);
        assert_eq!(picks(&mut p, 1), "2");
        let one = p.dests().find(ip(1), 80).unwrap();
        p.set_weight(one, 0).unwrap();
        assert_eq!(picks(&mut p, 3), "222");
        let two = p.dests().find(ip(2), 80).unwrap();
        p.set_weight(two, 0).unwrap();
        assert_eq!(picks(&mut p, 1), "-");
    }
}
