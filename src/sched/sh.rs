//! `sh` (source hashing) and `dh` (destination hashing), bit-exact with current kernels
//! (ipvs.md §3.10–§3.11).
//!
//! - `sh`: a table of `2^bits` buckets (default 256). Walking the destination list cyclically,
//!   each destination fills `weight` consecutive buckets (at least one, so a weight-0 server
//!   still takes one per round). A client lands in bucket
//!   `hash_32(port + fold(client address), bits)`, where `port` is 0 unless the `sh-port` flag
//!   is set (then the client's TCP/UDP/SCTP port). The table is rebuilt on every add, remove and
//!   edit. With `sh-fallback`, a client whose server is quiesced or overloaded probes on
//!   (`h(addr, port, (offset + first) mod size)`) to the first available one; without it, it
//!   gets none.
//! - `dh`: 256 buckets dealt round-robin in list order, one per server per round (weights are
//!   ignored and edits do not rebuild); the key is the packet's destination address.
//!
//! Tables are immutable and shared behind an [`Arc`]; a change builds a new one.

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::net::IpAddr;

use crate::dest::{DestEvent, DestId, DestSet};
use crate::flow::FlowKey;
use crate::sched::hash::{fold, hash_32};
use crate::sched::{SchedError, SchedFlags, Scheduler};
use crate::time::Instant;

/// `CONFIG_IP_VS_SH_TAB_BITS` default.
pub const DEFAULT_BITS: u32 = 8;
const DH_BITS: u32 = 8;

/// The port `sh`/`mh` hash: the client's port with the port flag and a ported protocol, else 0.
#[inline]
pub(crate) fn hashed_port(flow: &FlowKey, flags: SchedFlags) -> u16 {
    if flags.contains(SchedFlags::PORT) && flow.proto.has_ports() {
        flow.sport
    } else {
        0
    }
}

/// An immutable `sh` bucket table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShTable {
    bits: u32,
    buckets: Vec<Option<DestId>>,
}

impl ShTable {
    /// Builds the table for `dests` in list order, as `ip_vs_sh_reassign` does.
    pub fn build(dests: &DestSet, bits: u32) -> Result<ShTable, SchedError> {
        if !(4..=20).contains(&bits) {
            return Err(SchedError::InvalidTableSize(bits));
        }
        let size = 1usize << bits;
        let ids: Vec<(DestId, u32)> = dests.iter().map(|(id, d)| (id, d.weight())).collect();
        let mut buckets = vec![None; size];
        if !ids.is_empty() {
            let (mut p, mut count) = (0usize, 0u32);
            for b in buckets.iter_mut() {
                let (id, w) = ids[p];
                *b = Some(id);
                count += 1;
                if count >= w {
                    p = (p + 1) % ids.len();
                    count = 0;
                }
            }
        }
        Ok(ShTable { bits, buckets })
    }

    /// The buckets, in index order.
    pub fn buckets(&self) -> &[Option<DestId>] {
        &self.buckets
    }

    /// `ip_vs_sh_hashkey`.
    #[inline]
    pub fn bucket_of(&self, addr: &IpAddr, port: u16, offset: u32) -> usize {
        let mask = (1u32 << self.bits) - 1;
        (offset.wrapping_add(hash_32((port as u32).wrapping_add(fold(addr)), self.bits)) & mask)
            as usize
    }

    /// Looks up `addr:port`, probing on with `fallback`, as `ip_vs_sh_get[_fallback]`.
    pub fn lookup(
        &self,
        dests: &DestSet,
        addr: &IpAddr,
        port: u16,
        fallback: bool,
    ) -> Option<DestId> {
        let usable = |id: DestId| dests.accepts_new(id);
        let first = self.bucket_of(addr, port, 0);
        let id = self.buckets[first]?;
        if usable(id) {
            return Some(id);
        }
        if !fallback {
            return None;
        }
        let size = self.buckets.len() as u32;
        for offset in 0..size {
            let roffset = (offset + first as u32) % size;
            let id = self.buckets[self.bucket_of(addr, port, roffset)]?;
            if usable(id) {
                return Some(id);
            }
        }
        None
    }
}

/// Source-hashing scheduler.
#[derive(Clone, Debug)]
pub struct Sh {
    flags: SchedFlags,
    table: Arc<ShTable>,
}

impl Sh {
    /// A source-hashing scheduler with the default 256-bucket table.
    pub fn new(flags: SchedFlags) -> Self {
        Sh {
            flags,
            table: Arc::new(ShTable {
                bits: DEFAULT_BITS,
                buckets: vec![None; 1 << DEFAULT_BITS],
            }),
        }
    }

    /// With `2^bits` buckets (`CONFIG_IP_VS_SH_TAB_BITS`, 4..=20).
    pub fn with_bits(flags: SchedFlags, bits: u32) -> Result<Self, SchedError> {
        let table = Arc::new(ShTable::build(&DestSet::new(), bits)?);
        Ok(Sh { flags, table })
    }

    /// The current table, shareable with other threads.
    pub fn table(&self) -> &Arc<ShTable> {
        &self.table
    }

    fn rebuild(&mut self, dests: &DestSet) {
        if let Ok(t) = ShTable::build(dests, self.table.bits) {
            self.table = Arc::new(t);
        }
    }
}

impl Scheduler for Sh {
    fn name(&self) -> &'static str {
        "sh"
    }

    fn init(&mut self, dests: &DestSet) {
        self.rebuild(dests);
    }

    fn update(&mut self, dests: &DestSet, event: DestEvent) {
        if !matches!(event, DestEvent::Load(_)) {
            self.rebuild(dests);
        }
    }

    #[inline]
    fn schedule(&mut self, dests: &DestSet, flow: &FlowKey, _: Instant) -> Option<DestId> {
        let port = hashed_port(flow, self.flags);
        self.table.lookup(
            dests,
            &flow.src,
            port,
            self.flags.contains(SchedFlags::FALLBACK),
        )
    }

    fn table_for(&self, dests: &DestSet) -> Option<Vec<Option<DestId>>> {
        ShTable::build(dests, self.table.bits)
            .ok()
            .map(|t| t.buckets)
    }
}

/// An immutable `dh` bucket table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DhTable {
    buckets: Vec<Option<DestId>>,
}

impl DhTable {
    /// Deals the 256 buckets round-robin over `dests` in list order (`ip_vs_dh_reassign`).
    pub fn build(dests: &DestSet) -> DhTable {
        let ids: Vec<DestId> = dests.ids().collect();
        let buckets = (0..1usize << DH_BITS)
            .map(|i| (!ids.is_empty()).then(|| ids[i % ids.len()]))
            .collect();
        DhTable { buckets }
    }

    /// The buckets, in index order.
    pub fn buckets(&self) -> &[Option<DestId>] {
        &self.buckets
    }

    /// `ip_vs_dh_hashkey`.
    #[inline]
    pub fn bucket_of(addr: &IpAddr) -> usize {
        hash_32(fold(addr), DH_BITS) as usize
    }

    /// The server for destination address `addr`, if available.
    #[inline]
    pub fn lookup(&self, dests: &DestSet, addr: &IpAddr) -> Option<DestId> {
        let id = self.buckets[Self::bucket_of(addr)]?;
        dests.accepts_new(id).then_some(id)
    }
}

/// Destination-hashing scheduler.
#[derive(Clone, Debug)]
pub struct Dh {
    table: Arc<DhTable>,
}

impl Default for Dh {
    fn default() -> Self {
        Self::new()
    }
}

impl Dh {
    /// A destination-hashing scheduler.
    pub fn new() -> Self {
        Dh {
            table: Arc::new(DhTable::build(&DestSet::new())),
        }
    }

    /// The current table, shareable with other threads.
    pub fn table(&self) -> &Arc<DhTable> {
        &self.table
    }
}

impl Scheduler for Dh {
    fn name(&self) -> &'static str {
        "dh"
    }

    fn init(&mut self, dests: &DestSet) {
        self.table = Arc::new(DhTable::build(dests));
    }

    fn update(&mut self, dests: &DestSet, event: DestEvent) {
        // The kernel rebuilds on add and delete only; an edit cannot change membership.
        if matches!(event, DestEvent::Added(_) | DestEvent::Removed { .. }) {
            self.table = Arc::new(DhTable::build(dests));
        }
    }

    #[inline]
    fn schedule(&mut self, dests: &DestSet, flow: &FlowKey, _: Instant) -> Option<DestId> {
        self.table.lookup(dests, &flow.dst)
    }

    fn table_for(&self, dests: &DestSet) -> Option<Vec<Option<DestId>>> {
        Some(DhTable::build(dests).buckets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dest::ConnKind;
    use crate::sched::testutil::*;

    #[test]
    fn sh_fills_weight_consecutive_buckets_in_list_order() {
        // Added 1 (w3), 2 (w2), 3 (w1): list 3, 2, 1 -> 3 2 2 1 1 1 repeated.
        let p = typed_pool(Sh::new(SchedFlags::NONE), &[(1, 3), (2, 2), (3, 1)]);
        let lab: alloc::string::String = p.scheduler().table().buckets()[..12]
            .iter()
            .map(|&id| label(&p, id))
            .collect();
        assert_eq!(lab, "322111322111");
    }

    #[test]
    fn sh_without_fallback_gives_none_for_a_quiesced_server() {
        let mut p = typed_pool(Sh::new(SchedFlags::NONE), &[(1, 1), (2, 1)]);
        let f = flow([172, 16, 0, 1], 1000);
        let first = p.schedule(&f, Instant::ZERO).unwrap();
        // Overload the chosen server: sh then has nothing for this client.
        let cfg = p.dests().get(first).unwrap().config().thresholds(1, 0);
        p.edit_dest(&cfg).unwrap();
        p.bind(first, ConnKind::Inactive).unwrap();
        assert_eq!(p.schedule(&f, Instant::ZERO), None);
        let mut q = typed_pool(Sh::new(SchedFlags::FALLBACK), &[(1, 1), (2, 1)]);
        let first = q.schedule(&f, Instant::ZERO).unwrap();
        let cfg = q.dests().get(first).unwrap().config().thresholds(1, 0);
        q.edit_dest(&cfg).unwrap();
        q.bind(first, ConnKind::Inactive).unwrap();
        let other = q.schedule(&f, Instant::ZERO).unwrap();
        assert_ne!(other, first);
    }

    #[test]
    fn sh_port_flag_spreads_one_client() {
        let mut p = typed_pool(Sh::new(SchedFlags::PORT), &[(1, 1), (2, 1), (3, 1)]);
        let mut seen = alloc::collections::BTreeSet::new();
        for port in 1000..1100 {
            seen.insert(p.schedule(&flow([172, 16, 0, 1], port), Instant::ZERO));
        }
        assert_eq!(seen.len(), 3);
        let mut q = typed_pool(Sh::new(SchedFlags::NONE), &[(1, 1), (2, 1), (3, 1)]);
        let one = q.schedule(&flow([172, 16, 0, 1], 1), Instant::ZERO);
        for port in 1000..1100 {
            assert_eq!(q.schedule(&flow([172, 16, 0, 1], port), Instant::ZERO), one);
        }
    }

    #[test]
    fn sh_table_bits_are_checked() {
        assert!(Sh::with_bits(SchedFlags::NONE, 3).is_err());
        assert!(Sh::with_bits(SchedFlags::NONE, 21).is_err());
        let s = Sh::with_bits(SchedFlags::NONE, 20).unwrap();
        assert_eq!(s.table().buckets().len(), 1 << 20);
    }

    #[test]
    fn dh_deals_round_robin_and_ignores_weight_edits() {
        let mut p = typed_pool(Dh::new(), &[(1, 5), (2, 1), (3, 1)]);
        let lab: alloc::string::String = p.scheduler().table().buckets()[..6]
            .iter()
            .map(|&id| label(&p, id))
            .collect();
        assert_eq!(lab, "321321");
        let before = p.scheduler().table().clone();
        let two = p.dests().find(ip(2), 80).unwrap();
        p.set_weight(two, 9).unwrap();
        assert!(Arc::ptr_eq(&before, p.scheduler().table()));
        p.set_weight(two, 0).unwrap();
        // A quiesced server's buckets give nothing.
        let table = p.scheduler().table().clone();
        let hit = (0..=255u8)
            .map(|last| IpAddr::V4(core::net::Ipv4Addr::new(10, 0, 0, last)))
            .find(|a| table.buckets()[DhTable::bucket_of(a)] == Some(two));
        let mut f = flow([1; 4], 1);
        f.dst = hit.unwrap();
        assert_eq!(p.schedule(&f, Instant::ZERO), None);
    }
}
