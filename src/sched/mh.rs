//! `mh`: the kernel's Maglev hashing scheduler, bit-exact with a 64-bit kernel (ipvs.md §3.12).
//!
//! - Table size M is one of ten primes chosen by `CONFIG_IP_VS_MH_TAB_INDEX` (8..=17): 251 ...
//!   131071, default 4093. `TAB_BITS = index / 2` bounds the per-server turns.
//! - Each server's permutation: `offset = hk(addr, port, hash1) mod M`,
//!   `skip = hk(addr, port, hash2) mod (M - 1) + 1`, with `hk` = SipHash-1-3 of
//!   `port + fold(addr)` under the kernel's fixed keys.
//! - Weights come from **last_weight** (the last non-zero weight): `turns = (lw / gcd) >> shift`
//!   (at least 1 for a non-zero lw), `shift = max(0, fls(max_lw / gcd) - TAB_BITS)`. So
//!   quiescing a server does not change the table; it only makes its slots unavailable (`None`,
//!   or the next slot of the probe sequence with `mh-fallback`).
//! - Population walks the list in list order, each server claiming `turns` slots in a row, each
//!   the next free slot of its permutation, until all M are taken.
//! - Lookup: slot `hk(client address, port, hash1) mod M`, `port` = 0 unless `mh-port`.

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::net::IpAddr;

use crate::dest::{DestEvent, DestId, DestSet};
use crate::flow::FlowKey;
use crate::sched::fill::{Filler, WORDS_SMALL};
use crate::sched::hash::{MH_HASH1, MH_HASH2, SipKey, fls, fold, gcd, hsiphash_u32};
use crate::sched::sh::hashed_port;
use crate::sched::{SchedError, SchedFlags, Scheduler};
use crate::time::Instant;

/// The kernel's table sizes, for `CONFIG_IP_VS_MH_TAB_INDEX` 8 to 17.
pub const MH_PRIMES: [u32; 10] = [
    251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071,
];

const EMPTY: u32 = u32::MAX;

/// An `mh` table size: `CONFIG_IP_VS_MH_TAB_INDEX`, 8..=17.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MhTableSize(u8);

impl Default for MhTableSize {
    /// Index 12: M = 4093, as kernels ship.
    fn default() -> Self {
        MhTableSize(12)
    }
}

impl MhTableSize {
    /// From the Kconfig index (8..=17).
    pub fn from_index(index: u8) -> Result<Self, SchedError> {
        if (8..=17).contains(&index) {
            Ok(MhTableSize(index))
        } else {
            Err(SchedError::InvalidTableSize(index as u32))
        }
    }

    /// From the table size itself (one of [`MH_PRIMES`]).
    pub fn from_size(size: u32) -> Result<Self, SchedError> {
        MH_PRIMES
            .iter()
            .position(|&p| p == size)
            .map(|i| MhTableSize(i as u8 + 8))
            .ok_or(SchedError::InvalidTableSize(size))
    }

    /// The table size M.
    pub fn size(self) -> u32 {
        MH_PRIMES[self.0 as usize - 8]
    }

    /// `IP_VS_MH_TAB_BITS`.
    pub fn bits(self) -> u32 {
        self.0 as u32 / 2
    }
}

/// `ip_vs_mh_hashkey`: SipHash-1-3 of `offset + port + fold(addr)`.
#[inline]
fn hk(addr: &IpAddr, port: u16, key: SipKey, offset: u32) -> u32 {
    let v = offset.wrapping_add(port as u32).wrapping_add(fold(addr));
    hsiphash_u32(v, key)
}

/// Per-server permutation parameters, as the kernel derives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MhPermutation {
    /// First slot tried.
    pub offset: u32,
    /// Step between slots tried.
    pub skip: u32,
    /// Slots claimed per round.
    pub turns: u32,
}

/// An immutable `mh` lookup table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MhTable {
    size: MhTableSize,
    /// Index into `ids`, or `EMPTY`.
    slots: Vec<u32>,
    ids: Vec<DestId>,
    perms: Vec<MhPermutation>,
    gcd: u32,
    shift: u32,
}

impl MhTable {
    /// Builds the table for `dests` in list order (`ip_vs_mh_permutate` + `ip_vs_mh_populate`).
    pub fn build(dests: &DestSet, size: MhTableSize) -> Result<MhTable, SchedError> {
        let m = size.size();
        if dests.len() > m as usize {
            return Err(crate::dest::DestError::TooMany { limit: m as usize }.into());
        }
        let mut g = 0u32;
        let mut max_lw = 0u32;
        for (_, d) in dests.iter() {
            let lw = d.last_weight();
            if lw > 0 {
                g = if g > 0 { gcd(lw, g) } else { lw };
            }
            max_lw = max_lw.max(lw);
        }
        let shift = max_lw
            .checked_div(g)
            .map_or(0, |mw| fls(mw).saturating_sub(size.bits()));
        let ids: Vec<DestId> = dests.ids().collect();
        let perms: Vec<MhPermutation> = dests
            .iter()
            .map(|(_, d)| {
                let lw = d.last_weight();
                let turns = match lw.checked_div(g).map(|t| t >> shift) {
                    None => 0,
                    Some(0) => u32::from(lw != 0),
                    Some(t) => t,
                };
                MhPermutation {
                    offset: hk(&d.addr(), d.port(), MH_HASH1, 0) % m,
                    skip: hk(&d.addr(), d.port(), MH_HASH2, 0) % (m - 1) + 1,
                    turns,
                }
            })
            .collect();
        let mut slots = vec![EMPTY; m as usize];
        if g > 0 && perms.iter().any(|p| p.turns > 0) {
            populate(&mut slots, &perms);
        }
        Ok(MhTable {
            size,
            slots,
            ids,
            perms,
            gcd: g,
            shift,
        })
    }

    /// The table size M.
    pub fn size(&self) -> u32 {
        self.size.size()
    }

    /// Owner of each slot.
    pub fn owners(&self) -> impl ExactSizeIterator<Item = Option<DestId>> + '_ {
        self.slots
            .iter()
            .map(|&s| (s != EMPTY).then(|| self.ids[s as usize]))
    }

    /// Permutation parameters per server, in list order.
    pub fn permutations(&self) -> &[MhPermutation] {
        &self.perms
    }

    /// The gcd of the positive last weights and the weight shift.
    pub fn weight_scaling(&self) -> (u32, u32) {
        (self.gcd, self.shift)
    }

    /// The slot a client address and hashed port fall into.
    #[inline]
    pub fn slot_of(&self, addr: &IpAddr, port: u16) -> usize {
        (hk(addr, port, MH_HASH1, 0) % self.size()) as usize
    }

    #[inline]
    fn owner(&self, slot: usize) -> Option<DestId> {
        let s = self.slots[slot];
        if s == EMPTY {
            None
        } else {
            Some(self.ids[s as usize])
        }
    }

    /// `ip_vs_mh_get` / `ip_vs_mh_get_fallback`.
    #[inline]
    pub fn lookup(
        &self,
        dests: &DestSet,
        addr: &IpAddr,
        port: u16,
        fallback: bool,
    ) -> Option<DestId> {
        let usable = |id: DestId| dests.accepts_new(id);
        let m = self.size();
        let ihash = self.slot_of(addr, port);
        let id = self.owner(ihash)?;
        if usable(id) {
            return Some(id);
        }
        if !fallback {
            return None;
        }
        for offset in 0..m {
            let roffset = (offset + ihash as u32) % m;
            let slot = (hk(addr, port, MH_HASH1, roffset) % m) as usize;
            let id = self.owner(slot)?;
            if usable(id) {
                return Some(id);
            }
        }
        None
    }
}

/// Fills every slot: servers in list order, each claiming `turns` slots in a row, each slot the
/// next free one along its permutation. `perm` stays on the last slot claimed, as the kernel's.
fn populate(slots: &mut [u32], perms: &[MhPermutation]) {
    let m = slots.len() as u32;
    // Every kernel size fits the small bitmap (131071 slots at most).
    let mut filler = Filler::<WORDS_SMALL>::new(m);
    let mut perm: Vec<u32> = perms.iter().map(|p| p.offset).collect();
    let max_turns = perms.iter().map(|p| p.turns).max().unwrap_or(0);
    let mut run = vec![0u32; max_turns as usize];
    // While at least one slot in RUN_MIN is free, a server's turns are claimed in one
    // branch-free walk (see `Filler::claim_run`); after that, one claim at a time.
    let run_min = m / RUN_MIN;
    let mut n = 0u32;
    loop {
        for (j, p) in perms.iter().enumerate() {
            if p.turns < 1 {
                continue;
            }
            // The kernel stops as soon as the table is full.
            let want = p.turns.min(m - n);
            if filler.budget() >= run_min.max(want) {
                let run = &mut run[..want as usize];
                perm[j] = filler.claim_run(perm[j], p.skip, run);
                for &c in run.iter() {
                    slots[c as usize] = j as u32;
                }
            } else {
                for _ in 0..want {
                    let c = filler.claim(perm[j], p.skip);
                    // The kernel leaves `perm` on the slot just taken; starting one step on
                    // finds the same next free slot with one probe less.
                    perm[j] = if c + p.skip >= m {
                        c + p.skip - m
                    } else {
                        c + p.skip
                    };
                    slots[c as usize] = j as u32;
                }
            }
            n += want;
            if n == m {
                return;
            }
        }
    }
}

/// `populate` walks branch-free while at least one slot in `RUN_MIN` is free.
const RUN_MIN: u32 = 12;

/// IPVS Maglev-hashing scheduler.
#[derive(Clone, Debug)]
pub struct Mh {
    flags: SchedFlags,
    table: Arc<MhTable>,
}

impl Mh {
    /// An `mh` scheduler with table size `size` and `mh-fallback` / `mh-port` from `flags`.
    pub fn new(flags: SchedFlags, size: MhTableSize) -> Self {
        let table = match MhTable::build(&DestSet::new(), size) {
            Ok(t) => t,
            Err(_) => unreachable!("an empty set always fits"),
        };
        Mh {
            flags,
            table: Arc::new(table),
        }
    }

    /// The current table, shareable with other threads.
    pub fn table(&self) -> &Arc<MhTable> {
        &self.table
    }

    fn rebuild(&mut self, dests: &DestSet) {
        // The pool refuses sets larger than the table, so this cannot fail; if it did, the
        // old table would stay, as the kernel keeps it on EINVAL.
        if let Ok(t) = MhTable::build(dests, self.table.size) {
            self.table = Arc::new(t);
        }
    }
}

impl Scheduler for Mh {
    fn name(&self) -> &'static str {
        "mh"
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

    fn max_dests(&self) -> Option<usize> {
        Some(self.table.size() as usize)
    }

    fn table_for(&self, dests: &DestSet) -> Option<Vec<Option<DestId>>> {
        MhTable::build(dests, self.table.size)
            .ok()
            .map(|t| t.owners().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dest::DestConfig;
    use crate::sched::Pool;
    use crate::sched::testutil::*;
    use alloc::boxed::Box;

    #[test]
    fn table_sizes() {
        assert_eq!(MhTableSize::default().size(), 4093);
        assert_eq!(MhTableSize::default().bits(), 6);
        assert_eq!(MhTableSize::from_index(8).unwrap().size(), 251);
        assert_eq!(MhTableSize::from_index(8).unwrap().bits(), 4);
        assert_eq!(MhTableSize::from_size(65521).unwrap().bits(), 8);
        assert!(MhTableSize::from_index(18).is_err());
        assert!(MhTableSize::from_size(65537).is_err());
    }

    #[test]
    fn quiescing_keeps_the_table_and_readding_changes_it() {
        let mut p = typed_pool(
            Mh::new(SchedFlags::NONE, MhTableSize::default()),
            &[(1, 1), (2, 1), (3, 1)],
        );
        let before = p.scheduler().table().clone();
        let two = p.dests().find(ip(2), 80).unwrap();
        p.set_weight(two, 0).unwrap();
        assert_eq!(**p.scheduler().table(), *before);
        p.set_weight(two, 1).unwrap();
        assert_eq!(**p.scheduler().table(), *before);
        // Removing and adding again puts it at the head: a different fill order.
        p.remove_dest(ip(2), 80).unwrap();
        p.add_dest(&DestConfig::new(ip(2), 80)).unwrap();
        assert_ne!(**p.scheduler().table(), *before);
    }

    #[test]
    fn added_with_weight_zero_gets_no_slot() {
        let p = typed_pool(
            Mh::new(SchedFlags::NONE, MhTableSize::default()),
            &[(1, 1), (2, 0)],
        );
        let two = p.dests().find(ip(2), 80).unwrap();
        assert!(p.scheduler().table().owners().all(|o| o != Some(two)));
        assert!(p.scheduler().table().owners().all(|o| o.is_some()));
    }

    #[test]
    fn more_servers_than_slots_is_refused() {
        let size = MhTableSize::from_index(8).unwrap();
        let mut p: Pool = Pool::new(Box::new(Mh::new(SchedFlags::NONE, size)));
        for i in 0..251u32 {
            let a = IpAddr::V4(core::net::Ipv4Addr::from(0x0a00_0000 + i));
            p.add_dest(&DestConfig::new(a, 80)).unwrap();
        }
        let err = p.add_dest(&DestConfig::new(ip(1), 80)).unwrap_err();
        assert_eq!(
            err,
            SchedError::Dest(crate::dest::DestError::TooMany { limit: 251 })
        );
        assert_eq!(p.dests().len(), 251);
    }
}
