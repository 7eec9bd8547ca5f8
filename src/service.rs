//! Virtual services and the table of them that `ipvsadm` commands edit (ipvs.md §1.1, §1.4).
//!
//! A [`VirtualService`] is a [`ServiceKey`] (protocol, VIP and port, or a firewall mark), its
//! options (scheduler and flags, persistence, one-packet) and a [`Pool`] of real servers.
//! [`Services`] applies [`Command`]s the way the kernel applies `ipvsadm` requests and finds the
//! service for a packet in IPVS order: firewall mark, then exact `(protocol, VIP, port)`, then
//! the port-0 service of that VIP.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::fmt;
use core::net::IpAddr;

use crate::config::{Command, ServiceKey, ServiceOptions};
use crate::conn::{DestAccounting, DestRef, DestStatus};
use crate::dest::{ConnKind, DestError, ForwardMethod};
use crate::flow::Protocol;
use crate::sched::{Pool, SchedConfig, SchedError};

/// One virtual service.
#[derive(Debug)]
pub struct VirtualService {
    key: ServiceKey,
    options: ServiceOptions,
    pool: Pool,
}

impl VirtualService {
    /// How the service is addressed.
    pub fn key(&self) -> ServiceKey {
        self.key
    }
    /// Its options.
    pub fn options(&self) -> &ServiceOptions {
        &self.options
    }
    /// Its real servers and scheduler.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
    /// The same, mutable: scheduling and connection accounting.
    pub fn pool_mut(&mut self) -> &mut Pool {
        &mut self.pool
    }
}

/// Why a command could not be applied.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServiceError {
    /// `-A` for a service that exists (`EEXIST`).
    Exists(ServiceKey),
    /// A command for a service that does not exist (`ESRCH`).
    NotFound(ServiceKey),
    /// A port-0 TCP/UDP/SCTP service must be persistent (ipvsadm refuses it otherwise).
    PortZeroNeedsPersistence(ServiceKey),
    /// A real server of the other address family that is not tunnelled (IPVS allows mixed
    /// families only for TUN).
    MixedFamily(ServiceKey),
    /// The scheduler or the destination set refused.
    Sched(SchedError),
    /// Every one of the [`MAX_SERVICES`] service numbers is in use.
    TooMany,
}

impl From<SchedError> for ServiceError {
    fn from(e: SchedError) -> Self {
        ServiceError::Sched(e)
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceError::Exists(k) => write!(f, "service {k} already exists"),
            ServiceError::NotFound(k) => write!(f, "no service {k}"),
            ServiceError::PortZeroNeedsPersistence(k) => {
                write!(f, "service {k} has port 0 and needs persistence (-p)")
            }
            ServiceError::MixedFamily(k) => write!(
                f,
                "real server of another address family in {k}: only tunnelling (-i) allows it"
            ),
            ServiceError::Sched(e) => fmt::Display::fmt(e, f),
            ServiceError::TooMany => write!(f, "more than {MAX_SERVICES} services"),
        }
    }
}

impl core::error::Error for ServiceError {}

/// Every virtual service of a director.
///
/// Each service has a *number* (`0..=65535`), stable for its life and never reused while a
/// connection still references one of its real servers: the connection table stores
/// [`DestRef`]s (service number and real-server slot), and `Services` is the
/// [`DestAccounting`] that resolves them. A deleted service (`-D`, `-C`) leaves the lookup at
/// once, its real servers become unavailable (so its connections' packets are dropped, as
/// IPVS drops them once the destinations are gone), and its number is freed when its last
/// connection is.
#[derive(Debug, Default)]
pub struct Services {
    index: BTreeMap<ServiceKey, u16>,
    slots: Vec<Option<Slot>>,
    free: Vec<u16>,
    sched: SchedConfig,
    timeouts: Option<(u32, u32, u32)>,
    generation: u64,
}

#[derive(Debug)]
struct Slot {
    svc: VirtualService,
    linked: bool,
}

/// Most services a [`Services`] holds at once (service numbers are 16 bits).
pub const MAX_SERVICES: usize = 1 << 16;

fn is_v6(key: &ServiceKey) -> bool {
    match key {
        ServiceKey::Addr { addr, .. } => addr.is_ipv6(),
        ServiceKey::Fwmark { ipv6, .. } => *ipv6,
    }
}

impl Services {
    /// No services; schedulers built with `sched` settings (table sizes, seeds).
    pub fn new(sched: SchedConfig) -> Self {
        Services {
            sched,
            ..Services::default()
        }
    }

    /// The service with this key.
    pub fn get(&self, key: &ServiceKey) -> Option<&VirtualService> {
        self.by_number(*self.index.get(key)?)
    }

    /// The same, mutable.
    pub fn get_mut(&mut self, key: &ServiceKey) -> Option<&mut VirtualService> {
        let n = *self.index.get(key)?;
        self.by_number_mut(n)
    }

    /// The number of the service with this key.
    pub fn number(&self, key: &ServiceKey) -> Option<u16> {
        self.index.get(key).copied()
    }

    /// The service (linked, or deleted but still referenced by connections) with this number.
    #[inline]
    pub fn by_number(&self, n: u16) -> Option<&VirtualService> {
        self.slots.get(n as usize)?.as_ref().map(|s| &s.svc)
    }

    /// The same, mutable.
    #[inline]
    pub fn by_number_mut(&mut self, n: u16) -> Option<&mut VirtualService> {
        self.slots.get_mut(n as usize)?.as_mut().map(|s| &mut s.svc)
    }

    /// Whether service number `n` is linked (not deleted).
    pub fn is_linked(&self, n: u16) -> bool {
        matches!(self.slots.get(n as usize), Some(Some(s)) if s.linked)
    }

    /// One more than the largest service number in use: the size of per-service arrays.
    pub fn number_bound(&self) -> usize {
        self.slots.len()
    }

    /// Every linked service, in key order.
    pub fn iter(&self) -> impl Iterator<Item = &VirtualService> {
        self.index.values().filter_map(|&n| self.by_number(n))
    }

    /// Every linked service with its number, in key order.
    pub fn numbered(&self) -> impl Iterator<Item = (u16, &VirtualService)> {
        self.index
            .values()
            .filter_map(|&n| self.by_number(n).map(|s| (n, s)))
    }

    /// Every linked service, mutable.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut VirtualService> {
        let index = &self.index;
        self.slots
            .iter_mut()
            .flatten()
            .filter(|s| s.linked && index.contains_key(&s.svc.key))
            .map(|s| &mut s.svc)
    }

    /// The last `--set TCP TCPFIN UDP` applied.
    pub fn timeouts(&self) -> Option<(u32, u32, u32)> {
        self.timeouts
    }

    /// Counts every change applied: a caller caching anything derived from the services
    /// (forwarding parameters, per-server arrays) refreshes it when this moves.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The service a packet belongs to, in IPVS lookup order: the firewall mark the caller
    /// gave (if any), then `(proto, VIP, port)`, then the VIP's port-0 service.
    pub fn lookup(
        &self,
        mark: Option<u32>,
        proto: Protocol,
        addr: IpAddr,
        port: u16,
    ) -> Option<ServiceKey> {
        let n = self.lookup_number(mark, proto, addr, port)?;
        self.by_number(n).map(|s| s.key)
    }

    /// [`Services::lookup`], answering with the service number.
    #[inline]
    pub fn lookup_number(
        &self,
        mark: Option<u32>,
        proto: Protocol,
        addr: IpAddr,
        port: u16,
    ) -> Option<u16> {
        if let Some(mark) = mark.filter(|&m| m != 0) {
            let k = ServiceKey::Fwmark {
                mark,
                ipv6: addr.is_ipv6(),
            };
            if let Some(&n) = self.index.get(&k) {
                return Some(n);
            }
        }
        if let Some(&n) = self.index.get(&ServiceKey::Addr { proto, addr, port }) {
            return Some(n);
        }
        self.index
            .get(&ServiceKey::Addr {
                proto,
                addr,
                port: 0,
            })
            .copied()
    }

    /// Checks that every command of `cmds` would apply, in order, without changing anything:
    /// the first that would fail is returned with its position. [`Services::apply_all`] uses
    /// it so a rules file with any error applies nothing.
    pub fn check(&self, cmds: &[&Command]) -> Result<(), (usize, ServiceError)> {
        // A shadow of what the commands touch: which services exist, with which options and
        // how many real servers their scheduler takes, and which real servers are linked.
        struct Shadow {
            max_dests: Option<usize>,
            dests: BTreeSet<(IpAddr, u16)>,
        }
        let mut shadow: BTreeMap<ServiceKey, Option<Shadow>> = BTreeMap::new();
        let mut cleared = false;
        let mut linked = self.index.len();
        let unlinked = self.unlinked();
        let build = |opts: &ServiceOptions| {
            opts.scheduler
                .build(&SchedConfig {
                    flags: opts.flags,
                    ..self.sched
                })
                .map(|b| b.max_dests())
        };
        for (i, cmd) in cmds.iter().enumerate() {
            let fail = |e| Err((i, e));
            let key = match cmd {
                Command::AddService(k, _)
                | Command::EditService(k, _)
                | Command::DeleteService(k)
                | Command::AddServer(k, _)
                | Command::EditServer(k, _)
                | Command::DeleteServer(k, ..) => *k,
                Command::Clear => {
                    shadow.clear();
                    cleared = true;
                    linked = 0;
                    continue;
                }
                Command::SetTimeouts { .. } => continue,
            };
            // The service as the commands so far left it, read from `self` on first touch.
            let slot = shadow.entry(key).or_insert_with(|| {
                if cleared {
                    return None;
                }
                self.get(&key).map(|v| Shadow {
                    max_dests: v.pool.scheduler().max_dests(),
                    dests: v
                        .pool
                        .dests()
                        .iter()
                        .map(|(_, d)| (d.addr(), d.port()))
                        .collect(),
                })
            });
            match cmd {
                Command::AddService(_, opts) => {
                    if slot.is_some() {
                        return fail(ServiceError::Exists(key));
                    }
                    if let Err(e) = check_port_zero(&key, opts) {
                        return fail(e);
                    }
                    if linked + unlinked >= MAX_SERVICES {
                        return fail(ServiceError::TooMany);
                    }
                    let max_dests = match build(opts) {
                        Ok(m) => m,
                        Err(e) => return fail(e.into()),
                    };
                    linked += 1;
                    *slot = Some(Shadow {
                        max_dests,
                        dests: BTreeSet::new(),
                    });
                }
                Command::EditService(_, opts) => {
                    // In `apply`'s order: the port-0 rule first, then the service.
                    if let Err(e) = check_port_zero(&key, opts) {
                        return fail(e);
                    }
                    let Some(s) = slot else {
                        return fail(ServiceError::NotFound(key));
                    };
                    let max_dests = match build(opts) {
                        Ok(m) => m,
                        Err(e) => return fail(e.into()),
                    };
                    if let Some(limit) = max_dests
                        && s.dests.len() > limit
                    {
                        return fail(SchedError::from(DestError::TooMany { limit }).into());
                    }
                    s.max_dests = max_dests;
                }
                Command::DeleteService(_) => {
                    if slot.take().is_none() {
                        return fail(ServiceError::NotFound(key));
                    }
                    linked -= 1;
                }
                Command::AddServer(_, dest) | Command::EditServer(_, dest) => {
                    let Some(s) = slot else {
                        return fail(ServiceError::NotFound(key));
                    };
                    if dest.addr.is_ipv6() != is_v6(&key)
                        && !matches!(dest.method, ForwardMethod::Tunnel(_))
                    {
                        return fail(ServiceError::MixedFamily(key));
                    }
                    // In `Pool::add_dest`'s and `DestSet::edit`'s order: the scheduler's limit
                    // (adding), the settings, then the server's presence.
                    let adding = matches!(cmd, Command::AddServer(..));
                    if let Some(limit) = s.max_dests
                        && adding
                        && s.dests.len() >= limit
                    {
                        return fail(SchedError::from(DestError::TooMany { limit }).into());
                    }
                    if let Err(e) = dest.validate() {
                        return fail(SchedError::from(e).into());
                    }
                    let k = (dest.addr, dest.port);
                    let exists = s.dests.contains(&k);
                    if adding {
                        if exists {
                            return fail(
                                SchedError::from(DestError::Exists(dest.addr, dest.port)).into(),
                            );
                        }
                        s.dests.insert(k);
                    } else if !exists {
                        return fail(
                            SchedError::from(DestError::NotFound(dest.addr, dest.port)).into(),
                        );
                    }
                }
                Command::DeleteServer(_, addr, port) => {
                    let Some(s) = slot else {
                        return fail(ServiceError::NotFound(key));
                    };
                    if !s.dests.remove(&(*addr, *port)) {
                        return fail(SchedError::from(DestError::NotFound(*addr, *port)).into());
                    }
                }
                Command::Clear | Command::SetTimeouts { .. } => {}
            }
        }
        Ok(())
    }

    fn unlinked(&self) -> usize {
        self.slots.iter().flatten().filter(|s| !s.linked).count()
    }

    /// Applies `cmds` in order if [`Services::check`] finds every one applicable; otherwise
    /// changes nothing and returns the first failure with its position.
    pub fn apply_all(&mut self, cmds: &[&Command]) -> Result<(), (usize, ServiceError)> {
        self.check(cmds)?;
        for (i, cmd) in cmds.iter().enumerate() {
            self.apply(cmd).map_err(|e| (i, e))?;
        }
        Ok(())
    }

    /// Applies one command as the kernel would; on error nothing changes.
    pub fn apply(&mut self, cmd: &Command) -> Result<(), ServiceError> {
        match cmd {
            Command::AddService(key, opts) => {
                if self.index.contains_key(key) {
                    return Err(ServiceError::Exists(*key));
                }
                check_port_zero(key, opts)?;
                let sched = opts.scheduler.build(&SchedConfig {
                    flags: opts.flags,
                    ..self.sched
                })?;
                let n = match self.free.pop() {
                    Some(n) => n,
                    None if self.slots.len() < MAX_SERVICES => {
                        self.slots.push(None);
                        (self.slots.len() - 1) as u16
                    }
                    None => return Err(ServiceError::TooMany),
                };
                self.slots[n as usize] = Some(Slot {
                    svc: VirtualService {
                        key: *key,
                        options: *opts,
                        pool: Pool::new(sched),
                    },
                    linked: true,
                });
                self.index.insert(*key, n);
            }
            Command::EditService(key, opts) => {
                check_port_zero(key, opts)?;
                let cfg = self.sched;
                let svc = self.get_mut(key).ok_or(ServiceError::NotFound(*key))?;
                if svc.options.scheduler != opts.scheduler || svc.options.flags != opts.flags {
                    let sched = opts.scheduler.build(&SchedConfig {
                        flags: opts.flags,
                        ..cfg
                    })?;
                    svc.pool.set_scheduler(sched)?;
                }
                svc.options = *opts;
            }
            Command::DeleteService(key) => {
                let n = self.index.remove(key).ok_or(ServiceError::NotFound(*key))?;
                self.unlink(n);
            }
            Command::Clear => {
                let all: Vec<u16> = self.index.values().copied().collect();
                self.index.clear();
                for n in all {
                    self.unlink(n);
                }
            }
            Command::AddServer(key, dest) | Command::EditServer(key, dest) => {
                let svc = self.get_mut(key).ok_or(ServiceError::NotFound(*key))?;
                if dest.addr.is_ipv6() != is_v6(key)
                    && !matches!(dest.method, ForwardMethod::Tunnel(_))
                {
                    return Err(ServiceError::MixedFamily(*key));
                }
                if matches!(cmd, Command::AddServer(..)) {
                    svc.pool.add_dest(dest)?;
                } else {
                    svc.pool.edit_dest(dest)?;
                }
            }
            Command::DeleteServer(key, addr, port) => {
                let svc = self.get_mut(key).ok_or(ServiceError::NotFound(*key))?;
                svc.pool.remove_dest(*addr, *port)?;
            }
            Command::SetTimeouts { tcp, tcpfin, udp } => {
                let (t0, f0, u0) = self.timeouts.unwrap_or((900, 120, 300));
                let keep = |new: u32, old: u32| if new == 0 { old } else { new };
                self.timeouts = Some((keep(*tcp, t0), keep(*tcpfin, f0), keep(*udp, u0)));
            }
        }
        self.generation += 1;
        Ok(())
    }

    /// Takes service `n` out of the lookup: its real servers go to the trash (unavailable), and
    /// the number is freed once no connection references any of them.
    fn unlink(&mut self, n: u16) {
        let Some(Some(slot)) = self.slots.get_mut(n as usize) else {
            return;
        };
        slot.linked = false;
        let dests: Vec<(IpAddr, u16)> = slot
            .svc
            .pool
            .dests()
            .iter()
            .map(|(_, d)| (d.addr(), d.port()))
            .collect();
        for (a, p) in dests {
            let _ = slot.svc.pool.remove_dest(a, p);
        }
        self.release_if_unused(n);
    }

    fn release_if_unused(&mut self, n: u16) {
        if let Some(slot @ Some(_)) = self.slots.get_mut(n as usize)
            && slot
                .as_ref()
                .is_some_and(|s| !s.linked && s.svc.pool.dests().in_use() == 0)
        {
            *slot = None;
            self.free.push(n);
        }
    }

    /// Prints the services as `ipvsadm -S -n` does, one command per line: `--set` if timeouts
    /// were set, then each service (`-A`) followed by its real servers (`-a`). Real servers are
    /// printed oldest first, so that restoring the text rebuilds the same IPVS list order
    /// (`ipvsadm -S` prints the list head first, so a save and restore through ipvsadm reverses
    /// it). Parsing and applying the text to empty services gives the same text back.
    pub fn save(&self) -> alloc::string::String {
        use core::fmt::Write;
        let mut out = alloc::string::String::new();
        if let Some((tcp, tcpfin, udp)) = self.timeouts {
            let _ = writeln!(out, "{}", Command::SetTimeouts { tcp, tcpfin, udp });
        }
        for svc in self.iter() {
            let _ = writeln!(out, "{}", Command::AddService(svc.key, svc.options));
            for (_, d) in svc.pool.dests().iter().rev() {
                let _ = writeln!(out, "{}", Command::AddServer(svc.key, d.config()));
            }
        }
        out
    }
}

/// Resolves [`DestRef`]s by service number: what a director passes to the connection table.
impl DestAccounting for Services {
    fn bind(&mut self, dest: DestRef, kind: ConnKind) {
        if let Some(s) = self.by_number_mut(dest.service()) {
            DestAccounting::bind(&mut s.pool, dest, kind);
        }
    }
    fn unbind(&mut self, dest: DestRef, kind: ConnKind) {
        let n = dest.service();
        if let Some(s) = self.by_number_mut(n) {
            DestAccounting::unbind(&mut s.pool, dest, kind);
            self.release_if_unused(n);
        }
    }
    fn set_active(&mut self, dest: DestRef, active: bool) {
        if let Some(s) = self.by_number_mut(dest.service()) {
            DestAccounting::set_active(&mut s.pool, dest, active);
        }
    }
    fn status(&self, dest: DestRef) -> Option<DestStatus> {
        self.by_number(dest.service())?.pool.status(dest)
    }
}

fn check_port_zero(key: &ServiceKey, opts: &ServiceOptions) -> Result<(), ServiceError> {
    if let ServiceKey::Addr { port: 0, .. } = key
        && opts.persistence.is_none()
    {
        return Err(ServiceError::PortZeroNeedsPersistence(*key));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::sched::SchedulerKind;

    fn load(text: &str) -> Result<Services, (usize, ServiceError)> {
        let mut s = Services::default();
        for r in parse(text).unwrap() {
            s.apply(&r.command).map_err(|e| (r.line, e))?;
        }
        Ok(s)
    }

    #[test]
    fn apply_and_lookup_in_ipvs_order() {
        let s = load(
            "-A -t 10.0.0.1:80 -s rr\n\
             -a -t 10.0.0.1:80 -r 192.168.1.1:80\n\
             -A -t 10.0.0.1:0 -s wlc -p\n\
             -A -f 5 -s sh\n",
        )
        .unwrap();
        let vip: IpAddr = "10.0.0.1".parse().unwrap();
        let exact = s.lookup(None, Protocol::Tcp, vip, 80).unwrap();
        assert_eq!(
            exact,
            ServiceKey::Addr {
                proto: Protocol::Tcp,
                addr: vip,
                port: 80
            }
        );
        assert_eq!(
            s.lookup(None, Protocol::Tcp, vip, 443),
            Some(ServiceKey::Addr {
                proto: Protocol::Tcp,
                addr: vip,
                port: 0
            })
        );
        assert_eq!(s.lookup(None, Protocol::Udp, vip, 80), None);
        assert_eq!(
            s.lookup(Some(5), Protocol::Tcp, vip, 80),
            Some(ServiceKey::Fwmark {
                mark: 5,
                ipv6: false
            })
        );
        assert_eq!(s.get(&exact).unwrap().pool().dests().len(), 1);
    }

    #[test]
    fn kernel_errors() {
        assert!(matches!(
            load("-A -t 10.0.0.1:80\n-A -t 10.0.0.1:80 -s rr"),
            Err((2, ServiceError::Exists(_)))
        ));
        assert!(matches!(
            load("-a -t 10.0.0.1:80 -r 1.1.1.1"),
            Err((1, ServiceError::NotFound(_)))
        ));
        assert!(matches!(
            load("-A -t 10.0.0.1:0"),
            Err((1, ServiceError::PortZeroNeedsPersistence(_)))
        ));
        assert!(matches!(
            load("-A -t 10.0.0.1:80\n-a -t 10.0.0.1:80 -r [2001:db8::1]:80 -g"),
            Err((2, ServiceError::MixedFamily(_)))
        ));
        assert!(load("-A -t 10.0.0.1:80\n-a -t 10.0.0.1:80 -r [2001:db8::1]:80 -i").is_ok());
        assert!(matches!(
            load("-A -t 10.0.0.1:80\n-a -t 10.0.0.1:80 -r 1.1.1.1\n-a -t 10.0.0.1:80 -r 1.1.1.1"),
            Err((3, ServiceError::Sched(_)))
        ));
        assert!(matches!(
            load("-A -t 10.0.0.1:80\n-d -t 10.0.0.1:80 -r 1.1.1.1"),
            Err((2, ServiceError::Sched(_)))
        ));
    }

    #[test]
    fn edit_changes_scheduler_and_keeps_servers() {
        let s = load(
            "-A -t 10.0.0.1:80 -s rr\n\
             -a -t 10.0.0.1:80 -r 192.168.1.1:80\n\
             -a -t 10.0.0.1:80 -r 192.168.1.2:80\n\
             -E -t 10.0.0.1:80 -s mh -b mh-fallback\n\
             --set 0 60 0\n",
        )
        .unwrap();
        let svc = s.iter().next().unwrap();
        assert_eq!(svc.options().scheduler, SchedulerKind::Mh);
        assert_eq!(svc.pool().scheduler().name(), "mh");
        assert_eq!(svc.pool().dests().len(), 2);
        assert_eq!(s.timeouts(), Some((900, 60, 300)));
        let mut s = s;
        s.apply(&Command::Clear).unwrap();
        assert_eq!(s.iter().count(), 0);
    }
}
