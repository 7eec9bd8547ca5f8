//! `lblc` and `lblcr`: locality-based least connection, for cache clusters (ipvs.md §3.13–§3.14).
//!
//! Both remember, per packet **destination** address, which server(s) served it, so requests
//! for one origin keep hitting the same cache:
//!
//! - `lblc` keeps one server per address. A hit is used while that server is available, has
//!   weight above 0 and is not "overloaded" in lblc's sense: more active connections than its
//!   weight **while** some server of the service has fewer than half its weight (the `OVERLOAD`
//!   flag itself is not checked on a hit, as in the kernel). Otherwise `wlc` picks and the entry
//!   is replaced.
//! - `lblcr` keeps a set per address. A hit takes the least loaded member (`wlc` rule among
//!   available, non-overloaded members with weight above 0); if the set has more than one member
//!   and has not changed for `lblcr_expiration`, its most loaded member is dropped. If the
//!   member is missing or lblc-overloaded, `wlc` picks over the service and joins the set.
//!
//! The `wlc` pick uses the same O(log n) tree as [`Wlc`](super::Wlc), and whether any server is
//! below half its weight is a counter kept from load events, so a miss costs O(log n), not the
//! kernel's O(n). Garbage collection follows the kernel's periodic timer, driven by the `now`
//! of each call: every 60 s, if there are more than 16384 entries, entries idle for 6 minutes
//! are dropped (at most `min((entries - 16384) * 4/3, 8192)`); every 30th tick without such
//! pressure, every entry idle for the expiration (default 24 h) is dropped. Entries are kept in
//! a keyed hash map (ahash with fixed seeds, so runs are reproducible); the kernel walks 1024
//! buckets with a rover, so *which* idle entries a partial collection drops may differ.

use alloc::vec;
use alloc::vec::Vec;
use core::net::IpAddr;
use core::time::Duration;

use hashbrown::HashMap;

use crate::dest::{Dest, DestEvent, DestId, DestSet};
use crate::flow::FlowKey;
use crate::sched::Scheduler;
use crate::sched::least::{Rule, Tournament};
use crate::time::Instant;

/// `lblc_expiration` / `lblcr_expiration` default: 24 hours.
pub const DEFAULT_EXPIRATION: Duration = Duration::from_secs(24 * 60 * 60);
const CHECK_EXPIRE_INTERVAL: Duration = Duration::from_secs(60);
const ENTRY_TIMEOUT: Duration = Duration::from_secs(6 * 60);
const COUNT_FOR_FULL_EXPIRATION: u32 = 30;
const MAX_SIZE: usize = 1024 * 16;

/// Fixed hasher seeds: reproducible across runs; the keys are addresses, not secrets.
fn hasher() -> ahash::RandomState {
    ahash::RandomState::with_seeds(
        0x6c62_6c63_0000_0001,
        0x6c62_6c63_0000_0002,
        0x6c62_6c63_0000_0003,
        0x6c62_6c63_0000_0004,
    )
}

#[derive(Clone, Debug)]
struct Entry<V> {
    value: V,
    lastuse: Instant,
}

/// The address-keyed cache with the kernel's garbage collection.
#[derive(Clone, Debug)]
struct Cache<V> {
    entries: HashMap<IpAddr, Entry<V>, ahash::RandomState>,
    expiration: Duration,
    next_check: Option<Instant>,
    counter: u32,
}

impl<V> Cache<V> {
    fn new(expiration: Duration) -> Self {
        Cache {
            entries: HashMap::with_hasher(hasher()),
            expiration,
            next_check: None,
            counter: 1,
        }
    }

    /// Runs the periodic checks that fell due by `now`.
    fn tick(&mut self, now: Instant) {
        let Some(mut due) = self.next_check else {
            self.next_check = Some(now + CHECK_EXPIRE_INTERVAL);
            return;
        };
        let mut runs = 0;
        while due <= now {
            self.check_expire(now);
            due += CHECK_EXPIRE_INTERVAL;
            runs += 1;
            if runs == COUNT_FOR_FULL_EXPIRATION {
                // A long pause: one full round of checks is all the timer could have done.
                due = now + CHECK_EXPIRE_INTERVAL;
            }
        }
        self.next_check = Some(due);
    }

    fn check_expire(&mut self, now: Instant) {
        if self.counter.is_multiple_of(COUNT_FOR_FULL_EXPIRATION) {
            let exp = self.expiration;
            self.entries.retain(|_, e| e.lastuse + exp > now);
            self.counter = 1;
            return;
        }
        if self.entries.len() <= MAX_SIZE {
            self.counter += 1;
            return;
        }
        let mut goal = ((self.entries.len() - MAX_SIZE) * 4 / 3).min(MAX_SIZE / 2);
        self.entries.retain(|_, e| {
            if goal == 0 || now < e.lastuse + ENTRY_TIMEOUT {
                return true;
            }
            goal -= 1;
            false
        });
    }
}

/// Load facts both schedulers need beyond the wlc tree.
#[derive(Clone, Debug)]
struct Load {
    wlc: Tournament,
    /// Per slot: linked with `2 * active < weight`.
    below_half: Vec<bool>,
    below_half_count: usize,
}

impl Load {
    fn new() -> Self {
        Load {
            wlc: Tournament::new(Rule::Wlc),
            below_half: Vec::new(),
            below_half_count: 0,
        }
    }

    fn is_below_half(d: &Dest) -> bool {
        d.is_available() && (d.active_conns() as u64) * 2 < d.weight() as u64
    }

    fn init(&mut self, dests: &DestSet) {
        self.wlc.rebuild(dests);
        self.below_half = vec![false; dests.slot_count()];
        self.below_half_count = 0;
        for (id, d) in dests.iter() {
            if Self::is_below_half(d) {
                self.below_half[id.index()] = true;
                self.below_half_count += 1;
            }
        }
    }

    fn update(&mut self, dests: &DestSet, event: DestEvent) {
        self.wlc.update(dests, event);
        let id = event.id();
        if id.index() >= self.below_half.len() {
            self.below_half
                .resize(dests.slot_count().max(id.index() + 1), false);
        }
        let now = dests.get(id).is_some_and(Self::is_below_half);
        let was = core::mem::replace(&mut self.below_half[id.index()], now);
        match (was, now) {
            (false, true) => self.below_half_count += 1,
            (true, false) => self.below_half_count -= 1,
            _ => {}
        }
    }

    /// lblc's `is_overloaded`: more active connections than weight while another server is
    /// below half of its weight.
    fn is_overloaded(&self, d: &Dest) -> bool {
        d.active_conns() > d.weight() && self.below_half_count > 0
    }
}

/// Locality-based least-connection scheduler.
#[derive(Clone, Debug)]
pub struct Lblc {
    load: Load,
    cache: Cache<DestId>,
}

impl Lblc {
    /// An `lblc` scheduler whose entries expire after `expiration` idle (`lblc_expiration`).
    pub fn new(expiration: Duration) -> Self {
        Lblc {
            load: Load::new(),
            cache: Cache::new(expiration),
        }
    }

    /// Number of cached addresses.
    pub fn cached(&self) -> usize {
        self.cache.entries.len()
    }
}

impl Scheduler for Lblc {
    fn name(&self) -> &'static str {
        "lblc"
    }

    fn init(&mut self, dests: &DestSet) {
        self.load.init(dests);
    }

    fn update(&mut self, dests: &DestSet, event: DestEvent) {
        self.load.update(dests, event);
    }

    fn schedule(&mut self, dests: &DestSet, flow: &FlowKey, now: Instant) -> Option<DestId> {
        self.cache.tick(now);
        if let Some(e) = self.cache.entries.get_mut(&flow.dst) {
            e.lastuse = now;
            let id = e.value;
            if dests
                .get(id)
                .is_some_and(|d| d.is_available() && d.weight() > 0 && !self.load.is_overloaded(d))
            {
                return Some(id);
            }
        }
        let id = self.load.wlc.best()?;
        let e = self.cache.entries.entry(flow.dst).or_insert(Entry {
            value: id,
            lastuse: now,
        });
        if e.value != id {
            *e = Entry {
                value: id,
                lastuse: now,
            };
        }
        Some(id)
    }
}

#[derive(Clone, Debug)]
struct DestSetEntry {
    /// Members, head first (the kernel inserts at the head).
    members: Vec<DestId>,
    lastmod: Instant,
}

/// Locality-based least-connection scheduler with replication.
#[derive(Clone, Debug)]
pub struct Lblcr {
    load: Load,
    cache: Cache<DestSetEntry>,
}

impl Lblcr {
    /// An `lblcr` scheduler; sets shrink after `expiration` without change (`lblcr_expiration`).
    pub fn new(expiration: Duration) -> Self {
        Lblcr {
            load: Load::new(),
            cache: Cache::new(expiration),
        }
    }

    /// Number of cached addresses.
    pub fn cached(&self) -> usize {
        self.cache.entries.len()
    }

    /// The server set cached for `addr`, head first.
    pub fn members(&self, addr: &IpAddr) -> Option<&[DestId]> {
        self.cache.entries.get(addr).map(|e| &e.value.members[..])
    }
}

/// `ip_vs_dest_set_min`: least `overhead / weight` among available, non-overloaded members.
fn set_min(dests: &DestSet, members: &[DestId]) -> Option<DestId> {
    let mut least: Option<(DestId, &Dest)> = None;
    for &id in members {
        let Some(d) = dests.get(id) else { continue };
        if d.is_overloaded() {
            continue;
        }
        match least {
            None => {
                if d.weight() > 0 && d.is_available() {
                    least = Some((id, d));
                }
            }
            Some((_, l)) => {
                if l.overhead() * d.weight() as u64 > d.overhead() * l.weight() as u64
                    && d.is_available()
                {
                    least = Some((id, d));
                }
            }
        }
    }
    least.map(|(id, _)| id)
}

/// `ip_vs_dest_set_max`: most `overhead / weight` among members with weight above 0.
fn set_max(dests: &DestSet, members: &[DestId]) -> Option<DestId> {
    let mut most: Option<(DestId, &Dest)> = None;
    for &id in members {
        let Some(d) = dests.get(id) else { continue };
        match most {
            None => {
                if d.weight() > 0 {
                    most = Some((id, d));
                }
            }
            Some((_, m)) => {
                if m.overhead() * (d.weight() as u64) < d.overhead() * m.weight() as u64
                    && d.weight() > 0
                {
                    most = Some((id, d));
                }
            }
        }
    }
    most.map(|(id, _)| id)
}

impl Scheduler for Lblcr {
    fn name(&self) -> &'static str {
        "lblcr"
    }

    fn init(&mut self, dests: &DestSet) {
        self.load.init(dests);
    }

    fn update(&mut self, dests: &DestSet, event: DestEvent) {
        self.load.update(dests, event);
    }

    fn schedule(&mut self, dests: &DestSet, flow: &FlowKey, now: Instant) -> Option<DestId> {
        self.cache.tick(now);
        let expiration = self.cache.expiration;
        if let Some(e) = self.cache.entries.get_mut(&flow.dst) {
            e.lastuse = now;
            let set = &mut e.value;
            // Servers whose slot was freed can never come back: forget them.
            set.members.retain(|&id| dests.get(id).is_some());
            let dest = set_min(dests, &set.members);
            if set.members.len() > 1
                && now > set.lastmod + expiration
                && let Some(m) = set_max(dests, &set.members)
            {
                set.members.retain(|&x| x != m);
                set.lastmod = now;
            }
            if let Some(id) = dest
                && dests.get(id).is_some_and(|d| !self.load.is_overloaded(d))
            {
                return Some(id);
            }
            let id = self.load.wlc.best()?;
            if !set.members.contains(&id) {
                set.members.insert(0, id);
                set.lastmod = now;
            }
            return Some(id);
        }
        let id = self.load.wlc.best()?;
        self.cache.entries.insert(
            flow.dst,
            Entry {
                value: DestSetEntry {
                    members: vec![id],
                    lastmod: now,
                },
                lastuse: now,
            },
        );
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dest::ConnKind;
    use crate::sched::Pool;
    use crate::sched::testutil::*;
    use core::net::Ipv4Addr;

    fn to(dst: [u8; 4]) -> FlowKey {
        let mut f = flow([172, 16, 0, 1], 1000);
        f.dst = IpAddr::V4(Ipv4Addr::from(dst));
        f
    }

    fn busy<S: Scheduler + ?Sized>(p: &mut Pool<S>, n: u8, active: u32) {
        let id = p.dests().find(ip(n), 80).unwrap();
        for _ in 0..active {
            p.bind(id, ConnKind::Active).unwrap();
        }
    }

    #[test]
    fn lblc_sticks_to_the_cached_server() {
        let mut p = typed_pool(Lblc::new(DEFAULT_EXPIRATION), &[(1, 2), (2, 2)]);
        let t = Instant::from_secs(1);
        let first = p.schedule(&to([1, 1, 1, 1]), t).unwrap();
        // Load the cached server beyond the other: wlc would now pick the other one...
        let n = if label(&p, Some(first)) == '1' { 1 } else { 2 };
        busy(&mut p, n, 2);
        // ...but the cache holds while active (2) <= weight (2).
        assert_eq!(p.schedule(&to([1, 1, 1, 1]), t), Some(first));
        // A new address goes to the least loaded.
        assert_ne!(p.schedule(&to([2, 2, 2, 2]), t), Some(first));
        // active 3 > weight 2 and the other server is below half its weight: re-pick.
        busy(&mut p, n, 1);
        let other = p.schedule(&to([1, 1, 1, 1]), t).unwrap();
        assert_ne!(other, first);
        assert_eq!(p.scheduler().cached(), 2);
        // The entry now points at the other server.
        assert_eq!(p.schedule(&to([1, 1, 1, 1]), t), Some(other));
    }

    #[test]
    fn lblc_hit_ignores_overload_flag_but_not_weight_zero() {
        let mut p = typed_pool(Lblc::new(DEFAULT_EXPIRATION), &[(1, 1), (2, 1)]);
        let t = Instant::ZERO;
        let first = p.schedule(&to([1, 1, 1, 1]), t).unwrap();
        let cfg = p.dests().get(first).unwrap().config().thresholds(1, 0);
        p.edit_dest(&cfg).unwrap();
        p.bind(first, ConnKind::Inactive).unwrap();
        assert!(p.dests().get(first).unwrap().is_overloaded());
        assert_eq!(p.schedule(&to([1, 1, 1, 1]), t), Some(first));
        p.set_weight(first, 0).unwrap();
        assert_ne!(p.schedule(&to([1, 1, 1, 1]), t), Some(first));
    }

    #[test]
    fn lblc_entries_expire_on_the_kernel_schedule() {
        let exp = Duration::from_secs(3600);
        let mut p = typed_pool(Lblc::new(exp), &[(1, 1), (2, 1)]);
        p.schedule(&to([1, 1, 1, 1]), Instant::ZERO).unwrap();
        assert_eq!(p.scheduler().cached(), 1);
        // The full check runs on the 30th tick (30 min) and drops entries idle >= 1 h: not yet.
        p.schedule(&to([9, 9, 9, 9]), Instant::from_secs(31 * 60))
            .unwrap();
        assert_eq!(p.scheduler().cached(), 2);
        // Next full check at 61 min: 1.1.1.1 idle 61 min > 1 h goes, 9.9.9.9 stays.
        p.schedule(&to([9, 9, 9, 9]), Instant::from_secs(62 * 60))
            .unwrap();
        assert_eq!(p.scheduler().cached(), 1);
    }

    #[test]
    fn lblcr_grows_the_set_when_overloaded_and_shrinks_it_later() {
        let exp = Duration::from_secs(600);
        let mut p = typed_pool(Lblcr::new(exp), &[(1, 1), (2, 1), (3, 1)]);
        let dst = to([1, 1, 1, 1]);
        let t0 = Instant::from_secs(1);
        let a = p.schedule(&dst, t0).unwrap();
        assert_eq!(p.scheduler().members(&dst.dst).unwrap(), &[a]);
        // Make the member lblc-overloaded (active 2 > weight 1, others idle).
        let n = label(&p, Some(a)) as u8 - b'0';
        busy(&mut p, n, 2);
        let b = p.schedule(&dst, t0).unwrap();
        assert_ne!(a, b);
        assert_eq!(p.scheduler().members(&dst.dst).unwrap(), &[b, a]);
        // The least loaded member serves while it is fine.
        assert_eq!(p.schedule(&dst, t0), Some(b));
        // After the expiration without change, the most loaded member (a) is dropped.
        let later = t0 + exp + Duration::from_secs(1);
        assert_eq!(p.schedule(&dst, later), Some(b));
        assert_eq!(p.scheduler().members(&dst.dst).unwrap(), &[b]);
    }

    #[test]
    fn removed_servers_are_not_used_from_the_cache() {
        let mut p = typed_pool(Lblcr::new(DEFAULT_EXPIRATION), &[(1, 1), (2, 1)]);
        let dst = to([1, 1, 1, 1]);
        let a = p.schedule(&dst, Instant::ZERO).unwrap();
        let addr = p.dests().get(a).unwrap().addr();
        p.remove_dest(addr, 80).unwrap();
        let b = p.schedule(&dst, Instant::ZERO).unwrap();
        assert_ne!(a, b);
        let mut q = typed_pool(Lblc::new(DEFAULT_EXPIRATION), &[(1, 1), (2, 1)]);
        let a = q.schedule(&dst, Instant::ZERO).unwrap();
        let addr = q.dests().get(a).unwrap().addr();
        q.remove_dest(addr, 80).unwrap();
        assert_ne!(q.schedule(&dst, Instant::ZERO), Some(a));
    }
}
