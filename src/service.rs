//! Virtual services and the table of them that `ipvsadm` commands edit (ipvs.md §1.1, §1.4).
//!
//! A [`VirtualService`] is a [`ServiceKey`] (protocol, VIP and port, or a firewall mark), its
//! options (scheduler and flags, persistence, one-packet) and a [`Pool`] of real servers.
//! [`Services`] applies [`Command`]s the way the kernel applies `ipvsadm` requests and finds the
//! service for a packet in IPVS order: firewall mark, then exact `(protocol, VIP, port)`, then
//! the port-0 service of that VIP.

use alloc::collections::BTreeMap;
use core::fmt;
use core::net::IpAddr;

use crate::config::{Command, ServiceKey, ServiceOptions};
use crate::dest::ForwardMethod;
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
        }
    }
}

impl core::error::Error for ServiceError {}

/// Every virtual service of a director.
#[derive(Debug, Default)]
pub struct Services {
    services: BTreeMap<ServiceKey, VirtualService>,
    sched: SchedConfig,
    timeouts: Option<(u32, u32, u32)>,
}

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
            services: BTreeMap::new(),
            sched,
            timeouts: None,
        }
    }

    /// The service with this key.
    pub fn get(&self, key: &ServiceKey) -> Option<&VirtualService> {
        self.services.get(key)
    }

    /// The same, mutable.
    pub fn get_mut(&mut self, key: &ServiceKey) -> Option<&mut VirtualService> {
        self.services.get_mut(key)
    }

    /// Every service, in key order.
    pub fn iter(&self) -> impl Iterator<Item = &VirtualService> {
        self.services.values()
    }

    /// Every service, mutable.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut VirtualService> {
        self.services.values_mut()
    }

    /// The last `--set TCP TCPFIN UDP` applied.
    pub fn timeouts(&self) -> Option<(u32, u32, u32)> {
        self.timeouts
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
        if let Some(mark) = mark.filter(|&m| m != 0) {
            let k = ServiceKey::Fwmark {
                mark,
                ipv6: addr.is_ipv6(),
            };
            if self.services.contains_key(&k) {
                return Some(k);
            }
        }
        [port, 0]
            .into_iter()
            .map(|port| ServiceKey::Addr { proto, addr, port })
            .find(|k| self.services.contains_key(k))
    }

    /// Applies one command as the kernel would; on error nothing changes.
    pub fn apply(&mut self, cmd: &Command) -> Result<(), ServiceError> {
        match cmd {
            Command::AddService(key, opts) => {
                if self.services.contains_key(key) {
                    return Err(ServiceError::Exists(*key));
                }
                check_port_zero(key, opts)?;
                let sched = opts.scheduler.build(&SchedConfig {
                    flags: opts.flags,
                    ..self.sched
                })?;
                self.services.insert(
                    *key,
                    VirtualService {
                        key: *key,
                        options: *opts,
                        pool: Pool::new(sched),
                    },
                );
            }
            Command::EditService(key, opts) => {
                check_port_zero(key, opts)?;
                let cfg = self.sched;
                let svc = self
                    .services
                    .get_mut(key)
                    .ok_or(ServiceError::NotFound(*key))?;
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
                self.services
                    .remove(key)
                    .ok_or(ServiceError::NotFound(*key))?;
            }
            Command::Clear => self.services.clear(),
            Command::AddServer(key, dest) | Command::EditServer(key, dest) => {
                let svc = self
                    .services
                    .get_mut(key)
                    .ok_or(ServiceError::NotFound(*key))?;
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
                let svc = self
                    .services
                    .get_mut(key)
                    .ok_or(ServiceError::NotFound(*key))?;
                svc.pool.remove_dest(*addr, *port)?;
            }
            Command::SetTimeouts { tcp, tcpfin, udp } => {
                let (t0, f0, u0) = self.timeouts.unwrap_or((900, 120, 300));
                let keep = |new: u32, old: u32| if new == 0 { old } else { new };
                self.timeouts = Some((keep(*tcp, t0), keep(*tcpfin, f0), keep(*udp, u0)));
            }
        }
        Ok(())
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
