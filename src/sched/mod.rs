//! Schedulers: which real server a new connection goes to.
//!
//! Every IPVS scheduler is here, constructible by its `ipvsadm` name, with the kernel's behaviour
//! (ipvs.md §2–§3): weight 0 and `OVERLOAD` exclude a server, ties go to the
//! earlier server in IPVS list order, and `sh`, `dh` and `mh` reproduce a 64-bit kernel's choices
//! bit for bit for the same destination list.
//!
//! | name | what it does | cost per new connection |
//! |---|---|---|
//! | `rr` | round robin | O(1) amortised, O(n) worst |
//! | `wrr` | weighted round robin, gcd-stepped | O(1) amortised, O(n) worst |
//! | `lc` | least connections (`active*256 + inactive`) | **O(log n)** (IPVS: O(n)) |
//! | `wlc` | least connections / weight (IPVS default) | **O(log n)** |
//! | `sed` | shortest expected delay, `(active+1) / weight` | **O(log n)** |
//! | `nq` | never queue: an idle server, else `sed` | **O(log n)** |
//! | `fo` | weighted fail-over: highest weight | **O(log n)** |
//! | `ovf` | overflow: highest weight with `active <= weight` | **O(log n)** |
//! | `twos` | weighted power of two random choices | O(n), as IPVS |
//! | `sh` | source hashing (`sh-fallback`, `sh-port`) | O(1) |
//! | `dh` | destination hashing | O(1) |
//! | `mh` | IPVS Maglev hashing (`mh-fallback`, `mh-port`) | O(1) |
//! | `lblc` | locality-based least connection | O(1) hit, O(log n) miss |
//! | `lblcr` | lblc with replication | O(set) hit, O(log n) miss |
//! | `maglev` | Maglev with M = 65537, exact weights, order independent (not in IPVS) | O(1) |
//!
//! A scheduler observes the destination set through [`DestEvent`]s; the [`Pool`] (one virtual
//! service's destinations plus its scheduler) delivers them, so a scheduler can keep indexes
//! (the O(log n) trees, the hash tables) that never go stale.
//!
//! Hash tables (`sh`, `dh`, `mh`, `maglev`) are immutable once built, `Send + Sync`, shared
//! behind an `Arc`: several cores, and several directors with the same configuration, make the
//! same choices. Nothing is seeded from the process: `twos` draws from an injected
//! [`RandomSource`] with a fixed default seed.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;
use core::str::FromStr;
use core::time::Duration;

use crate::dest::{ConnKind, DestConfig, DestError, DestEvent, DestId, DestSet};
use crate::flow::FlowKey;
use crate::time::Instant;

pub mod analysis;
mod fill;
pub mod hash;
mod lblc;
mod least;
pub mod maglev;
mod mh;
mod rr;
mod sh;
mod twos;
mod wrr;

pub use lblc::DEFAULT_EXPIRATION as LOCALITY_DEFAULT_EXPIRATION;
pub use lblc::{Lblc, Lblcr};
pub use least::{Fo, Lc, Nq, Ovf, Sed, Wlc};
pub use maglev::{Maglev, MaglevKey, MaglevTable};
pub use mh::{MH_PRIMES, Mh, MhPermutation, MhTable, MhTableSize};
pub use rr::Rr;
pub use sh::DEFAULT_BITS as SH_DEFAULT_BITS;
pub use sh::{Dh, DhTable, Sh, ShTable};
pub use twos::{RandomSource, SplitMix64, Twos};
pub use wrr::Wrr;

/// A scheduling algorithm bound to one virtual service.
///
/// The methods mirror `struct ip_vs_scheduler`: [`init`](Scheduler::init) is `init_service`
/// (called with whatever destinations the service already has), [`update`](Scheduler::update)
/// is `add_dest` / `del_dest` / `upd_dest` plus load changes, and
/// [`schedule`](Scheduler::schedule) picks a destination for a new connection or returns `None`
/// ("no destination available"). A scheduler must not panic on any input.
pub trait Scheduler: Send + fmt::Debug {
    /// The `ipvsadm` name (`"wlc"`, `"mh"`, ...).
    fn name(&self) -> &'static str;

    /// Binds the scheduler to a service whose destinations are `dests`.
    fn init(&mut self, dests: &DestSet);

    /// Observes one change of `dests` (already applied).
    fn update(&mut self, dests: &DestSet, event: DestEvent);

    /// Picks a destination for the new connection `flow` at time `now`.
    fn schedule(&mut self, dests: &DestSet, flow: &FlowKey, now: Instant) -> Option<DestId>;

    /// The most destinations the scheduler can hold (`mh`: its table size), if limited.
    fn max_dests(&self) -> Option<usize> {
        None
    }

    /// For table-driven schedulers (`sh`, `dh`, `mh`, `maglev`): the slot-to-destination table
    /// this scheduler would build for `dests`, without changing its own state. Used by
    /// [`analysis::plan_change`].
    fn table_for(&self, dests: &DestSet) -> Option<Vec<Option<DestId>>> {
        let _ = dests;
        None
    }
}

/// Scheduler flags (`ipvsadm -b`), with the kernel's bit values (`IP_VS_SVC_F_SCHED*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SchedFlags(pub u32);

impl SchedFlags {
    /// `IP_VS_SVC_F_SCHED1`: `sh-fallback` / `mh-fallback`.
    pub const FALLBACK: SchedFlags = SchedFlags(0x0008);
    /// `IP_VS_SVC_F_SCHED2`: `sh-port` / `mh-port`.
    pub const PORT: SchedFlags = SchedFlags(0x0010);
    /// `IP_VS_SVC_F_SCHED3`: unused by in-tree schedulers.
    pub const FLAG3: SchedFlags = SchedFlags(0x0020);
    /// No flag.
    pub const NONE: SchedFlags = SchedFlags(0);

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: SchedFlags) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    /// Union.
    pub const fn union(self, other: SchedFlags) -> SchedFlags {
        SchedFlags(self.0 | other.0)
    }
}

impl core::ops::BitOr for SchedFlags {
    type Output = SchedFlags;
    fn bitor(self, rhs: SchedFlags) -> SchedFlags {
        self.union(rhs)
    }
}

/// The schedulers this crate provides, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum SchedulerKind {
    /// Round robin.
    Rr,
    /// Weighted round robin.
    Wrr,
    /// Least connection.
    Lc,
    /// Weighted least connection (ipvsadm's default).
    Wlc,
    /// Shortest expected delay.
    Sed,
    /// Never queue.
    Nq,
    /// Weighted fail-over.
    Fo,
    /// Overflow connection.
    Ovf,
    /// Weighted power of two random choices.
    Twos,
    /// Source hashing.
    Sh,
    /// Destination hashing.
    Dh,
    /// IPVS Maglev hashing.
    Mh,
    /// Locality-based least connection.
    Lblc,
    /// Locality-based least connection with replication.
    Lblcr,
    /// Maglev with Katran's table size and exact weights (this crate's own).
    Maglev,
}

impl SchedulerKind {
    /// Every kind, IPVS's fourteen first.
    pub const ALL: [SchedulerKind; 15] = [
        SchedulerKind::Rr,
        SchedulerKind::Wrr,
        SchedulerKind::Lc,
        SchedulerKind::Wlc,
        SchedulerKind::Sed,
        SchedulerKind::Nq,
        SchedulerKind::Fo,
        SchedulerKind::Ovf,
        SchedulerKind::Twos,
        SchedulerKind::Sh,
        SchedulerKind::Dh,
        SchedulerKind::Mh,
        SchedulerKind::Lblc,
        SchedulerKind::Lblcr,
        SchedulerKind::Maglev,
    ];

    /// The `ipvsadm -s` name.
    pub const fn name(self) -> &'static str {
        match self {
            SchedulerKind::Rr => "rr",
            SchedulerKind::Wrr => "wrr",
            SchedulerKind::Lc => "lc",
            SchedulerKind::Wlc => "wlc",
            SchedulerKind::Sed => "sed",
            SchedulerKind::Nq => "nq",
            SchedulerKind::Fo => "fo",
            SchedulerKind::Ovf => "ovf",
            SchedulerKind::Twos => "twos",
            SchedulerKind::Sh => "sh",
            SchedulerKind::Dh => "dh",
            SchedulerKind::Mh => "mh",
            SchedulerKind::Lblc => "lblc",
            SchedulerKind::Lblcr => "lblcr",
            SchedulerKind::Maglev => "maglev",
        }
    }

    /// Builds a scheduler of this kind.
    pub fn build(self, cfg: &SchedConfig) -> Result<Box<dyn Scheduler>, SchedError> {
        Ok(match self {
            SchedulerKind::Rr => Box::new(Rr::new()),
            SchedulerKind::Wrr => Box::new(Wrr::new()),
            SchedulerKind::Lc => Box::new(Lc::new()),
            SchedulerKind::Wlc => Box::new(Wlc::new()),
            SchedulerKind::Sed => Box::new(Sed::new()),
            SchedulerKind::Nq => Box::new(Nq::new()),
            SchedulerKind::Fo => Box::new(Fo::new()),
            SchedulerKind::Ovf => Box::new(Ovf::new()),
            SchedulerKind::Twos => Box::new(Twos::new(Box::new(SplitMix64::new(cfg.random_seed)))),
            SchedulerKind::Sh => Box::new(Sh::with_bits(cfg.flags, cfg.sh_table_bits)?),
            SchedulerKind::Dh => Box::new(Dh::new()),
            SchedulerKind::Mh => Box::new(Mh::new(cfg.flags, cfg.mh_table_size)),
            SchedulerKind::Lblc => Box::new(Lblc::new(cfg.locality_expiration)),
            SchedulerKind::Lblcr => Box::new(Lblcr::new(cfg.locality_expiration)),
            SchedulerKind::Maglev => Box::new(Maglev::new(
                cfg.flags,
                cfg.maglev_table_size,
                cfg.maglev_key,
            )?),
        })
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SchedulerKind {
    type Err = SchedError;
    fn from_str(s: &str) -> Result<Self, SchedError> {
        SchedulerKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or(SchedError::UnknownScheduler)
    }
}

/// Settings a scheduler takes beyond its name. The defaults are the kernel's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedConfig {
    /// `-b` flags.
    pub flags: SchedFlags,
    /// `sh` table bits (`CONFIG_IP_VS_SH_TAB_BITS`, 4..=20, default 8).
    pub sh_table_bits: u32,
    /// `mh` table size (`CONFIG_IP_VS_MH_TAB_INDEX`, default 4093).
    pub mh_table_size: MhTableSize,
    /// `maglev` table size: a prime up to 655373, default 65537.
    pub maglev_table_size: u32,
    /// What `maglev` hashes.
    pub maglev_key: MaglevKey,
    /// `lblc_expiration` / `lblcr_expiration` (default 24 h).
    pub locality_expiration: Duration,
    /// Seed of `twos`'s default random source.
    pub random_seed: u64,
}

impl Default for SchedConfig {
    fn default() -> Self {
        SchedConfig {
            flags: SchedFlags::NONE,
            sh_table_bits: sh::DEFAULT_BITS,
            mh_table_size: MhTableSize::default(),
            maglev_table_size: maglev::DEFAULT_TABLE_SIZE,
            maglev_key: MaglevKey::default(),
            locality_expiration: lblc::DEFAULT_EXPIRATION,
            random_seed: 0x1f5d_7a0b_c3e2_9486,
        }
    }
}

/// Builds a scheduler from its `ipvsadm` name with default settings and `flags`.
///
/// ```
/// use lvs::sched::{self, SchedFlags};
/// let s = sched::by_name("mh", SchedFlags::FALLBACK).unwrap();
/// assert_eq!(s.name(), "mh");
/// assert!(sched::by_name("nosuch", SchedFlags::NONE).is_err());
/// ```
pub fn by_name(name: &str, flags: SchedFlags) -> Result<Box<dyn Scheduler>, SchedError> {
    name.parse::<SchedulerKind>()?.build(&SchedConfig {
        flags,
        ..SchedConfig::default()
    })
}

/// Why a scheduler or a pool refused something.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SchedError {
    /// No scheduler has that name.
    UnknownScheduler,
    /// A table size the scheduler does not support (not a prime in range, or bits out of range).
    InvalidTableSize(u32),
    /// The scheduler has no lookup table (for [`analysis::plan_change`]).
    NotTableDriven,
    /// A destination change was refused.
    Dest(DestError),
}

impl From<DestError> for SchedError {
    fn from(e: DestError) -> Self {
        SchedError::Dest(e)
    }
}

impl fmt::Display for SchedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchedError::UnknownScheduler => f.write_str("unknown scheduler"),
            SchedError::InvalidTableSize(n) => write!(f, "unsupported table size {n}"),
            SchedError::NotTableDriven => f.write_str("scheduler has no lookup table"),
            SchedError::Dest(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl core::error::Error for SchedError {}

/// The real servers of one virtual service together with its scheduler.
///
/// Every change goes through the pool, which applies it to the [`DestSet`] and then tells the
/// scheduler, in that order, as IPVS calls `add_dest`/`del_dest`/`upd_dest` after updating the
/// list. Connection accounting ([`bind`](Pool::bind), [`unbind`](Pool::unbind),
/// [`set_active`](Pool::set_active)) goes through it too, so least-connection schedulers see
/// true load and `OVERLOAD` is kept.
///
/// ```
/// use lvs::dest::DestConfig;
/// use lvs::sched::{Pool, SchedFlags, by_name};
/// use lvs::flow::{FlowKey, Protocol};
/// use lvs::time::Instant;
///
/// let mut pool = Pool::new(by_name("wlc", SchedFlags::NONE).unwrap());
/// let a = pool.add_dest(&DestConfig::new("192.168.1.1".parse().unwrap(), 80)).unwrap();
/// let b = pool.add_dest(&DestConfig::new("192.168.1.2".parse().unwrap(), 80).weight(2)).unwrap();
/// let flow = FlowKey::new(Protocol::Tcp, "203.0.113.7".parse().unwrap(), 40000,
///                         "10.0.0.1".parse().unwrap(), 80);
/// let first = pool.schedule_new(&flow, Instant::ZERO).unwrap();
/// assert_eq!(first, b); // both idle: the list head (last added) wins the tie
/// assert_eq!(pool.schedule_new(&flow, Instant::ZERO), Some(a));
/// ```
#[derive(Debug)]
pub struct Pool<S: Scheduler + ?Sized = dyn Scheduler> {
    dests: DestSet,
    sched: Box<S>,
}

impl<S: Scheduler + ?Sized> Pool<S> {
    /// An empty pool scheduled by `sched`.
    pub fn new(mut sched: Box<S>) -> Self {
        let dests = DestSet::new();
        sched.init(&dests);
        Pool { dests, sched }
    }

    /// The destinations, in IPVS list order.
    pub fn dests(&self) -> &DestSet {
        &self.dests
    }

    /// The scheduler.
    pub fn scheduler(&self) -> &S {
        &self.sched
    }

    /// Replaces the scheduler (`ipvsadm -E ... -s NEW`): the new one is bound to the existing
    /// destinations. Refused, leaving everything unchanged, if they do not fit its table.
    pub fn set_scheduler(&mut self, mut sched: Box<S>) -> Result<(), SchedError> {
        if let Some(limit) = sched.max_dests()
            && self.dests.len() > limit
        {
            return Err(DestError::TooMany { limit }.into());
        }
        sched.init(&self.dests);
        self.sched = sched;
        Ok(())
    }

    /// Adds a real server at the head of the list (`ipvsadm -a`), or revives it from the trash.
    pub fn add_dest(&mut self, cfg: &DestConfig) -> Result<DestId, SchedError> {
        if let Some(limit) = self.sched.max_dests()
            && self.dests.len() >= limit
        {
            return Err(DestError::TooMany { limit }.into());
        }
        let (id, ev) = self.dests.add(cfg)?;
        self.sched.update(&self.dests, ev);
        Ok(id)
    }

    /// Edits a real server (`ipvsadm -e`): weight, thresholds, method.
    pub fn edit_dest(&mut self, cfg: &DestConfig) -> Result<DestId, SchedError> {
        let (id, ev) = self.dests.edit(cfg)?;
        self.sched.update(&self.dests, ev);
        Ok(id)
    }

    /// Sets only the weight of a real server (0 quiesces it).
    pub fn set_weight(&mut self, id: DestId, weight: u32) -> Result<(), SchedError> {
        let mut cfg = self.dests.get(id).ok_or(DestError::UnknownId(id))?.config();
        cfg.weight = weight;
        self.edit_dest(&cfg).map(|_| ())
    }

    /// Removes a real server (`ipvsadm -d`). Its connections keep it in the trash until they end.
    pub fn remove_dest(
        &mut self,
        addr: core::net::IpAddr,
        port: u16,
    ) -> Result<DestId, SchedError> {
        let ev = self.dests.remove(addr, port)?;
        let DestEvent::Removed { id, .. } = ev else {
            unreachable!("remove returns Removed")
        };
        self.sched.update(&self.dests, ev);
        Ok(id)
    }

    /// Asks the scheduler for a destination; counters are not touched.
    #[inline]
    pub fn schedule(&mut self, flow: &FlowKey, now: Instant) -> Option<DestId> {
        self.sched.schedule(&self.dests, flow, now)
    }

    /// Schedules and counts the new connection as inactive, as IPVS binds a fresh connection.
    pub fn schedule_new(&mut self, flow: &FlowKey, now: Instant) -> Option<DestId> {
        let id = self.schedule(flow, now)?;
        // The id was just returned by the scheduler from this set, so binding cannot fail.
        self.bind(id, ConnKind::Inactive).ok()?;
        Some(id)
    }

    /// Counts a connection or template on a destination.
    #[inline]
    pub fn bind(&mut self, id: DestId, kind: ConnKind) -> Result<(), SchedError> {
        let ev = self.dests.bind(id, kind)?;
        self.sched.update(&self.dests, ev);
        Ok(())
    }

    /// Releases a connection or template.
    #[inline]
    pub fn unbind(&mut self, id: DestId, kind: ConnKind) -> Result<(), SchedError> {
        let ev = self.dests.unbind(id, kind)?;
        self.sched.update(&self.dests, ev);
        Ok(())
    }

    /// Moves a connection between the inactive and active counters.
    #[inline]
    pub fn set_active(&mut self, id: DestId, active: bool) -> Result<(), SchedError> {
        let ev = self.dests.set_active(id, active)?;
        self.sched.update(&self.dests, ev);
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;
    use alloc::string::String;
    use core::net::{IpAddr, Ipv4Addr};

    pub fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 168, 1, last))
    }

    pub fn flow(src: [u8; 4], sport: u16) -> FlowKey {
        FlowKey::new(
            crate::flow::Protocol::Tcp,
            IpAddr::V4(Ipv4Addr::from(src)),
            sport,
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            80,
        )
    }

    /// A pool with destinations 192.168.1.{n}:80 added in the order given, with weights.
    pub fn pool(name: &str, flags: SchedFlags, dests: &[(u8, u32)]) -> Pool {
        fill(Pool::new(by_name(name, flags).unwrap()), dests)
    }

    /// The same with a concrete scheduler, whose state a test can read.
    pub fn typed_pool<S: Scheduler>(s: S, dests: &[(u8, u32)]) -> Pool<S> {
        fill(Pool::new(alloc::boxed::Box::new(s)), dests)
    }

    fn fill<S: Scheduler + ?Sized>(mut p: Pool<S>, dests: &[(u8, u32)]) -> Pool<S> {
        for &(n, w) in dests {
            p.add_dest(&DestConfig::new(ip(n), 80).weight(w)).unwrap();
        }
        p
    }

    /// Last octet of the destination's address, as a character (`'1'` for 192.168.1.1).
    pub fn label<S: Scheduler + ?Sized>(p: &Pool<S>, id: Option<DestId>) -> char {
        match id.and_then(|id| p.dests().get(id)) {
            Some(d) => match d.addr() {
                IpAddr::V4(a) => char::from(b'0' + a.octets()[3]),
                IpAddr::V6(_) => '6',
            },
            None => '-',
        }
    }

    /// `n` picks without binding, as labels.
    pub fn picks<S: Scheduler + ?Sized>(p: &mut Pool<S>, n: usize) -> String {
        (0..n)
            .map(|_| {
                let id = p.schedule(&FlowKey::default(), Instant::ZERO);
                label(p, id)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn every_kind_builds_by_name_and_schedules() {
        for kind in SchedulerKind::ALL {
            let mut p = pool(kind.name(), SchedFlags::NONE, &[(1, 1), (2, 3), (3, 2)]);
            assert_eq!(p.scheduler().name(), kind.name());
            assert_eq!(kind.name().parse::<SchedulerKind>().unwrap(), kind);
            let id = p.schedule_new(&flow([1, 2, 3, 4], 1000), Instant::ZERO);
            assert!(id.is_some(), "{kind} picked nothing");
            // With every server quiesced, nobody is picked.
            for n in 1..=3 {
                let id = p.dests().find(ip(n), 80).unwrap();
                p.set_weight(id, 0).unwrap();
            }
            assert_eq!(
                p.schedule(&flow([1, 2, 3, 4], 1000), Instant::ZERO),
                None,
                "{kind}"
            );
        }
        assert_eq!(
            "nosuch".parse::<SchedulerKind>(),
            Err(SchedError::UnknownScheduler)
        );
    }

    #[test]
    fn empty_pool_schedules_nothing() {
        for kind in SchedulerKind::ALL {
            let mut p = pool(kind.name(), SchedFlags::FALLBACK, &[]);
            assert_eq!(p.schedule(&flow([1, 2, 3, 4], 1), Instant::ZERO), None);
        }
    }

    #[test]
    fn changing_scheduler_keeps_destinations() {
        let mut p = pool("rr", SchedFlags::NONE, &[(1, 1), (2, 1)]);
        p.set_scheduler(by_name("wrr", SchedFlags::NONE).unwrap())
            .unwrap();
        assert_eq!(p.scheduler().name(), "wrr");
        assert_eq!(picks(&mut p, 4), "2121");
    }

    #[test]
    fn flags() {
        let f = SchedFlags::FALLBACK | SchedFlags::PORT;
        assert!(f.contains(SchedFlags::PORT) && f.contains(SchedFlags::FALLBACK));
        assert!(!f.contains(SchedFlags::FLAG3));
        assert!(!f.contains(SchedFlags::NONE));
    }
}
