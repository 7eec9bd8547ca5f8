//! Connection-table behaviour against ipvs.md §2, §4–§6 and §9: lifecycles in each forwarding
//! method, every reachable TCP state's timeout, persistence, each drain option, the full
//! policies and the SYN-flood survival figure.

#![allow(clippy::field_reassign_with_default)]

use std::net::IpAddr;
use std::time::Duration;

use lvs::config::{ServiceKey, parse};
use lvs::conn::{
    ConnConfig, ConnError, ConnFlags, ConnId, ConnState, ConnTable, DestRef, Direction, FullPolicy,
    NewConn, ScheduleError, Scheduled, SctpEvent, SctpState, Segment, TcpFlags, TcpState, Timeouts,
};
use lvs::flow::{FlowKey, Protocol};
use lvs::sched::Pool;
use lvs::service::Services;
use lvs::time::Instant;

const SYN: TcpFlags = TcpFlags::SYN;
const ACK: TcpFlags = TcpFlags::ACK;
const FIN: TcpFlags = TcpFlags(0x11);
const RST: TcpFlags = TcpFlags::RST;
const SYNACK: TcpFlags = TcpFlags(0x12);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A director of one service, driven the way IPVS's `ip_vs_in`/`ip_vs_out` drive the table.
struct Rig {
    svcs: Services,
    key: ServiceKey,
    table: ConnTable,
    now: Instant,
}

impl Rig {
    fn new(rules: &str, cfg: ConnConfig) -> Rig {
        let mut svcs = Services::default();
        for r in parse(rules).unwrap() {
            svcs.apply(&r.command).unwrap();
        }
        let key = svcs.iter().next().unwrap().key();
        let now = Instant::from_secs(1000);
        Rig {
            svcs,
            key,
            table: ConnTable::new(cfg, now),
            now,
        }
    }

    fn apply(&mut self, rule: &str) {
        for r in parse(rule).unwrap() {
            self.svcs.apply(&r.command).unwrap();
        }
    }

    fn pool(&self) -> &Pool {
        self.svcs.get(&self.key).unwrap().pool()
    }

    fn counts(&self, rs: &str) -> (u32, u32, u32) {
        let (a, p) = split(rs);
        let d = self.pool().dests();
        let id = d
            .iter()
            .find(|(_, x)| x.addr() == a && x.port() == p)
            .map(|(id, _)| id)
            .or_else(|| {
                (0..d.slot_count())
                    .filter_map(|i| d.id_at(i))
                    .find(|&id| d.get(id).is_some_and(|x| x.addr() == a && x.port() == p))
            })
            .unwrap();
        let x = d.get(id).unwrap();
        (x.active_conns(), x.inactive_conns(), x.persistent_conns())
    }

    fn advance(&mut self, secs: u64) {
        self.now += Duration::from_secs(secs);
        let Rig {
            svcs, key, table, ..
        } = self;
        let pool = svcs.get_mut(key).unwrap().pool_mut();
        while !table.expire(pool, self.now, 10_000).done {}
    }

    /// A client packet, IPVS order: lookup (with reuse rules), dest check, schedule on a miss
    /// when the packet may open a connection, then the state transition.
    fn client(&mut self, key: &FlowKey, seg: Segment) -> Result<ConnId, String> {
        let now = self.now;
        let new_conn = match seg {
            Segment::Tcp(f) => f.is_new_conn(),
            Segment::Sctp(e) => e == SctpEvent::Init,
            _ => true,
        };
        let Rig {
            svcs,
            key: sk,
            table,
            ..
        } = self;
        let svc = svcs.get_mut(sk).unwrap();
        let id = match table.lookup_in_for_new(svc.pool_mut(), key, new_conn, now) {
            Some(id) => {
                table
                    .check_dest(svc.pool_mut(), id, now)
                    .map_err(|e| format!("{e}"))?;
                id
            }
            None if new_conn => match table.schedule(svc, 0, key, now) {
                Ok(Scheduled::Conn(id)) => id,
                Ok(o) => return Err(format!("{o:?}")),
                Err(e) => return Err(format!("{e}")),
            },
            None => return Err("no connection".into()),
        };
        table
            .packet(svc.pool_mut(), id, Direction::Input, seg, 60, now)
            .map_err(|e| format!("{e}"))?;
        Ok(id)
    }

    fn server(&mut self, reply: &FlowKey, seg: Segment) -> Result<ConnId, String> {
        let now = self.now;
        let Rig {
            svcs,
            key: sk,
            table,
            ..
        } = self;
        let pool = svcs.get_mut(sk).unwrap().pool_mut();
        let id = table.lookup_out(reply, now).ok_or("no connection")?;
        table
            .packet(pool, id, Direction::Output, seg, 1500, now)
            .map_err(|e| format!("{e}"))?;
        Ok(id)
    }

    fn conn(&self, id: ConnId) -> lvs::conn::Conn {
        self.table.get(id).unwrap()
    }

    fn expires_in(&self, id: ConnId) -> Duration {
        self.conn(id).expires - self.now
    }
}

fn split(s: &str) -> (IpAddr, u16) {
    let sa: std::net::SocketAddr = s.parse().unwrap();
    (sa.ip(), sa.port())
}

fn tcp(client: &str, vip: &str) -> FlowKey {
    let (c, cp) = split(client);
    let (v, vp) = split(vip);
    FlowKey::new(Protocol::Tcp, c, cp, v, vp)
}

fn reply(c: &lvs::conn::Conn) -> FlowKey {
    FlowKey::new(Protocol::Tcp, c.daddr, c.dport, c.caddr, c.cport)
}

const NAT2: &str = "-A -t 10.0.0.1:80 -s rr\n\
                    -a -t 10.0.0.1:80 -r 192.168.1.1:8080 -m\n\
                    -a -t 10.0.0.1:80 -r 192.168.1.2:8080 -m\n";

#[test]
fn nat_tcp_lifecycle_counts_and_times_out() {
    let mut r = Rig::new(NAT2, ConnConfig::default());
    let k = tcp("203.0.113.5:40000", "10.0.0.1:80");
    let id = r.client(&k, Segment::Tcp(SYN)).unwrap();
    let c = r.conn(id);
    assert_eq!(c.state, ConnState::Tcp(TcpState::SynRecv));
    // rr from the list head: the last added.
    assert_eq!((c.daddr, c.dport), (ip("192.168.1.2"), 8080));
    assert_eq!(c.flags.fwd(), ConnFlags::MASQ);
    assert!(!c.flags.has(ConnFlags::NOOUTPUT));
    // SYN_RECV is active in recent kernels.
    assert_eq!(r.counts("192.168.1.2:8080"), (1, 0, 0));
    assert_eq!(r.expires_in(id), Duration::from_secs(60));
    // The SYN-ACK comes back through the director.
    assert_eq!(r.server(&reply(&c), Segment::Tcp(SYNACK)).unwrap(), id);
    assert_eq!(r.conn(id).state, ConnState::Tcp(TcpState::SynRecv));
    r.client(&k, Segment::Tcp(ACK)).unwrap();
    assert_eq!(r.conn(id).state, ConnState::Tcp(TcpState::Established));
    assert_eq!(r.expires_in(id), Duration::from_secs(900));
    // Server closes first: OUT fin ES -> FIN_WAIT, then client FIN -> TIME_WAIT.
    r.server(&reply(&c), Segment::Tcp(FIN)).unwrap();
    assert_eq!(r.conn(id).state, ConnState::Tcp(TcpState::FinWait));
    r.client(&k, Segment::Tcp(FIN)).unwrap();
    let c = r.conn(id);
    assert_eq!(c.state, ConnState::Tcp(TcpState::TimeWait));
    assert_eq!(r.counts("192.168.1.2:8080"), (0, 1, 0));
    assert_eq!((c.in_packets, c.out_packets), (3, 2));
    assert_eq!((c.in_bytes, c.out_bytes), (180, 3000));
    // TIME_WAIT lasts 120 s.
    r.advance(119);
    assert!(r.table.get(id).is_some());
    r.advance(1);
    assert!(r.table.get(id).is_none());
    assert_eq!(r.counts("192.168.1.2:8080"), (0, 0, 0));
    assert_eq!(r.table.stats().expired, 1);
}

#[test]
fn dr_connections_run_on_the_input_only_table() {
    let rules = "-A -t 10.0.0.1:80 -s wlc\n-a -t 10.0.0.1:80 -r 192.168.1.1:80 -g\n";
    let mut r = Rig::new(rules, ConnConfig::default());
    let k = tcp("203.0.113.5:40000", "10.0.0.1:80");
    let id = r.client(&k, Segment::Tcp(SYN)).unwrap();
    let c = r.conn(id);
    assert_eq!(c.flags.fwd(), ConnFlags::DROUTE);
    assert!(c.flags.has(ConnFlags::NOOUTPUT));
    assert_eq!(c.state, ConnState::Tcp(TcpState::SynRecv));
    r.client(&k, Segment::Tcp(ACK)).unwrap();
    assert_eq!(r.conn(id).state, ConnState::Tcp(TcpState::Established));
    // INPUT-ONLY: a client FIN moves ESTABLISHED to FIN_WAIT (INPUT would say CLOSE_WAIT).
    r.client(&k, Segment::Tcp(FIN)).unwrap();
    assert_eq!(r.conn(id).state, ConnState::Tcp(TcpState::FinWait));
    assert_eq!(r.expires_in(id), Duration::from_secs(120));
    // The out lookup finds DR connections too, as IPVS's does; rewriting a reply is for NAT
    // only, which the director decides from the forwarding method.
    assert!(r.table.lookup_out(&reply(&c), r.now).is_some());
}

#[test]
fn every_reachable_tcp_state_gets_its_default_timeout() {
    let t = Timeouts::IPVS;
    let mut r = Rig::new(NAT2, ConnConfig::default());
    // (path of (direction, flags), final state). LAST_ACK and LISTEN are reachable in no
    // table (the FTP helper forces LISTEN); NONE is the 3 s before the first packet.
    let cases: &[(&[(bool, TcpFlags)], TcpState)] = &[
        (&[(true, SYN)], TcpState::SynRecv),
        (&[(true, SYN), (true, ACK)], TcpState::Established),
        (
            &[(true, SYN), (true, ACK), (true, FIN)],
            TcpState::CloseWait,
        ),
        (&[(true, SYN), (true, ACK), (false, FIN)], TcpState::FinWait),
        (
            &[(true, SYN), (true, ACK), (false, FIN), (true, FIN)],
            TcpState::TimeWait,
        ),
        (&[(true, SYN), (true, ACK), (true, RST)], TcpState::Close),
        (&[(true, SYN), (true, TcpFlags(0))], TcpState::Close),
    ];
    for (n, (path, want)) in cases.iter().enumerate() {
        let k = tcp(&format!("203.0.113.9:{}", 1000 + n), "10.0.0.1:80");
        let mut id = None;
        for &(inbound, f) in path.iter() {
            if inbound {
                id = Some(r.client(&k, Segment::Tcp(f)).unwrap());
            } else {
                let c = r.conn(id.unwrap());
                r.server(&reply(&c), Segment::Tcp(f)).unwrap();
            }
        }
        let id = id.unwrap();
        assert_eq!(r.conn(id).state, ConnState::Tcp(*want), "case {n}");
        assert_eq!(r.expires_in(id), t.tcp(*want), "{want:?}");
    }
    // SYN_SENT: a server-side SYN on a fresh entry; SYNACK: secure_tcp, OUT syn from SYN_RECV.
    let mut cfg = ConnConfig::default();
    cfg.secure_tcp = true;
    let mut r = Rig::new(NAT2, cfg);
    let k = tcp("203.0.113.9:2000", "10.0.0.1:80");
    let id = r.client(&k, Segment::Tcp(SYN)).unwrap();
    let c = r.conn(id);
    r.server(&reply(&c), Segment::Tcp(SYNACK)).unwrap();
    assert_eq!(r.conn(id).state, ConnState::Tcp(TcpState::SynAck));
    assert_eq!(r.expires_in(id), t.tcp(TcpState::SynAck));
    // secure_tcp: the client's ACK leaves it SYNACK; ESTABLISHED comes with the server's ACK,
    // once the whole handshake was seen.
    r.client(&k, Segment::Tcp(ACK)).unwrap();
    assert_eq!(r.conn(id).state, ConnState::Tcp(TcpState::SynAck));
    r.server(&reply(&c), Segment::Tcp(ACK)).unwrap();
    assert_eq!(r.conn(id).state, ConnState::Tcp(TcpState::Established));
    let mut r = Rig::new(NAT2, ConnConfig::default());
    let new = NewConn {
        key: tcp("203.0.113.9:3000", "10.0.0.1:80"),
        daddr: ip("192.168.1.1"),
        dport: 8080,
        dest: None,
        flags: ConnFlags(ConnFlags::MASQ | ConnFlags::INACTIVE),
        template: None,
    };
    let now = r.now;
    let id = r.table.insert(&mut (), &new, now).unwrap();
    assert_eq!(r.conn(id).state, ConnState::Tcp(TcpState::None));
    assert_eq!(r.expires_in(id), Duration::from_secs(3));
    let c = r.conn(id);
    r.server(&reply(&c), Segment::Tcp(SYN)).unwrap();
    assert_eq!(r.conn(id).state, ConnState::Tcp(TcpState::SynSent));
    assert_eq!(r.expires_in(id), t.tcp(TcpState::SynSent));
}

#[test]
fn udp_stays_inactive_and_rearms_on_every_datagram() {
    let rules = "-A -u 10.0.0.1:53 -s rr\n-a -u 10.0.0.1:53 -r 192.168.1.1:53 -m\n";
    let mut r = Rig::new(rules, ConnConfig::default());
    let k = FlowKey::new(Protocol::Udp, ip("203.0.113.5"), 5353, ip("10.0.0.1"), 53);
    let id = r.client(&k, Segment::Udp).unwrap();
    assert_eq!(r.conn(id).state, ConnState::Udp);
    assert_eq!(r.counts("192.168.1.1:53"), (0, 1, 0));
    assert_eq!(r.expires_in(id), Duration::from_secs(300));
    r.advance(200);
    assert_eq!(r.client(&k, Segment::Udp).unwrap(), id);
    assert_eq!(r.expires_in(id), Duration::from_secs(300));
    // The wrong segment kind is refused and counted, nothing changes.
    let now = r.now;
    let Rig {
        svcs, key, table, ..
    } = &mut r;
    let pool = svcs.get_mut(key).unwrap().pool_mut();
    assert_eq!(
        table.packet(pool, id, Direction::Input, Segment::Tcp(SYN), 60, now),
        Err(ConnError::ProtocolMismatch)
    );
    assert_eq!(r.table.stats().protocol_mismatch, 1);
    r.advance(300);
    assert!(r.table.get(id).is_none());
    assert_eq!(r.counts("192.168.1.1:53"), (0, 0, 0));
}

#[test]
fn sctp_association_is_active_only_when_established() {
    let rules = "-A --sctp-service 10.0.0.1:36412 -s rr\n\
                 -a --sctp-service 10.0.0.1:36412 -r 192.168.1.1:36412 -m\n";
    let mut r = Rig::new(rules, ConnConfig::default());
    let k = FlowKey::new(
        Protocol::Sctp,
        ip("203.0.113.5"),
        5000,
        ip("10.0.0.1"),
        36412,
    );
    // Only INIT creates an association.
    assert!(r.client(&k, Segment::Sctp(SctpEvent::Data)).is_err());
    let id = r.client(&k, Segment::Sctp(SctpEvent::Init)).unwrap();
    assert_eq!(r.conn(id).state, ConnState::Sctp(SctpState::Init1));
    assert_eq!(r.expires_in(id), Duration::from_secs(4));
    assert_eq!(r.counts("192.168.1.1:36412"), (0, 1, 0));
    let c = r.conn(id);
    let back = FlowKey::new(Protocol::Sctp, c.daddr, c.dport, c.caddr, c.cport);
    let now = r.now;
    let Rig {
        svcs, key, table, ..
    } = &mut r;
    let pool = svcs.get_mut(key).unwrap().pool_mut();
    let rid = table.lookup_out(&back, now).unwrap();
    for (dir, ev) in [
        (Direction::Output, SctpEvent::InitAck),
        (Direction::Input, SctpEvent::CookieEcho),
        (Direction::Output, SctpEvent::CookieAck),
    ] {
        table
            .packet(pool, rid, dir, Segment::Sctp(ev), 100, now)
            .unwrap();
    }
    assert_eq!(r.conn(id).state, ConnState::Sctp(SctpState::Established));
    assert_eq!(r.counts("192.168.1.1:36412"), (1, 0, 0));
    assert_eq!(r.expires_in(id), Duration::from_secs(900));
}

const PERSIST: &str = "-A -t 10.0.0.1:443 -s rr -p 300 -M 255.255.255.0\n\
                       -a -t 10.0.0.1:443 -r 192.168.1.1:443 -m\n\
                       -a -t 10.0.0.1:443 -r 192.168.1.2:443 -m\n\
                       -a -t 10.0.0.1:443 -r 192.168.1.3:443 -m\n";

#[test]
fn persistence_by_netmask_sticks_refreshes_and_outlives_its_deadline() {
    let mut r = Rig::new(PERSIST, ConnConfig::default());
    let a = r
        .client(&tcp("198.51.100.7:1111", "10.0.0.1:443"), Segment::Tcp(SYN))
        .unwrap();
    let rs = r.conn(a).daddr;
    let tid = r.conn(a).template.unwrap();
    let t = r.conn(tid);
    assert!(t.flags.has(ConnFlags::TEMPLATE));
    assert_eq!(t.caddr, ip("198.51.100.0"));
    assert_eq!((t.vport, t.dport, t.controlled), (443, 443, 1));
    assert_eq!(r.expires_in(tid), Duration::from_secs(300));
    // Same /24, other port: same real server (rr would otherwise move on).
    for (n, c) in ["198.51.100.200:2222", "198.51.100.7:3333"]
        .iter()
        .enumerate()
    {
        let id = r
            .client(&tcp(c, "10.0.0.1:443"), Segment::Tcp(SYN))
            .unwrap();
        assert_eq!(r.conn(id).daddr, rs);
        assert_eq!(r.conn(tid).controlled, 2 + n as u32);
    }
    // Another /24 is scheduled afresh.
    let other = r
        .client(&tcp("198.51.101.7:1111", "10.0.0.1:443"), Segment::Tcp(SYN))
        .unwrap();
    assert_ne!(r.conn(other).daddr, rs);
    let (_, _, persistent) = r.counts(&format!("{rs}:443"));
    assert_eq!(persistent, 1);
    // Used 100 s later: the template's timer restarts.
    r.advance(100);
    r.client(&tcp("198.51.100.9:4444", "10.0.0.1:443"), Segment::Tcp(SYN))
        .unwrap();
    assert_eq!(r.expires_in(tid), Duration::from_secs(300));
    assert!(matches!(
        r.conn(tid).state,
        ConnState::Template { assured: false }
    ));
    // A controlled connection reaching ESTABLISHED marks it assured.
    r.client(&tcp("198.51.100.9:4444", "10.0.0.1:443"), Segment::Tcp(ACK))
        .unwrap();
    assert!(matches!(
        r.conn(tid).state,
        ConnState::Template { assured: true }
    ));
    // Past its deadline, it lives on while it controls the ESTABLISHED connection, re-armed by
    // 60 s at a time; it goes at the first re-arm after the last connection ends.
    r.advance(301);
    assert!(r.table.get(tid).is_some());
    assert_eq!(r.conn(tid).controlled, 1);
    let last = r
        .table
        .lookup_in(&tcp("198.51.100.9:4444", "10.0.0.1:443"), r.now)
        .unwrap();
    r.client(&tcp("198.51.100.9:4444", "10.0.0.1:443"), Segment::Tcp(RST))
        .unwrap();
    assert_eq!(r.expires_in(last), Duration::from_secs(10));
    r.advance(10);
    assert!(r.table.get(last).is_none());
    // Template deadline was 1000+100+300 = 1400 s; the connection ended at 1411 s; the kernel's
    // timer fires at 1400 (re-arm to 1460), then frees it at 1460.
    let t = r.conn(tid);
    assert_eq!(t.controlled, 0);
    assert_eq!(t.expires, Instant::from_secs(1460));
    r.advance(48);
    assert!(r.table.get(tid).is_some());
    r.advance(1);
    assert!(r.table.get(tid).is_none());
    assert_eq!(r.counts(&format!("{rs}:443")).2, 0);
}

#[test]
fn ipv6_persistence_uses_the_prefix_and_port_zero_services_cover_every_port() {
    let rules = "-A -t [2001:db8::1]:0 -s rr -p 60 -M 64\n\
                 -a -t [2001:db8::1]:0 -r [2001:db8:1::1]:0 -m\n\
                 -a -t [2001:db8::1]:0 -r [2001:db8:1::2]:0 -m\n";
    let mut r = Rig::new(rules, ConnConfig::default());
    let a = r
        .client(
            &tcp("[2001:db8:aa::5]:1000", "[2001:db8::1]:80"),
            Segment::Tcp(SYN),
        )
        .unwrap();
    let b = r
        .client(
            &tcp("[2001:db8:aa::9]:1000", "[2001:db8::1]:443"),
            Segment::Tcp(SYN),
        )
        .unwrap();
    let c = r
        .client(
            &tcp("[2001:db8:bb::9]:1000", "[2001:db8::1]:443"),
            Segment::Tcp(SYN),
        )
        .unwrap();
    assert!(a.is_ipv6());
    assert_eq!(r.conn(a).daddr, r.conn(b).daddr);
    assert_ne!(r.conn(a).daddr, r.conn(c).daddr);
    // Port-0 service: the template has port 0, connections keep the packet's port.
    let t = r.conn(r.conn(a).template.unwrap());
    assert_eq!((t.caddr, t.vport, t.dport), (ip("2001:db8:aa::"), 0, 0));
    assert_eq!((r.conn(a).dport, r.conn(b).dport), (80, 443));
}

#[test]
fn fwmark_service_templates_key_on_the_mark() {
    let rules = "-A -f 7 -s rr -p 120\n-a -f 7 -r 192.168.1.1:0 -g\n-a -f 7 -r 192.168.1.2:0 -g\n";
    let mut r = Rig::new(rules, ConnConfig::default());
    let a = r
        .client(&tcp("198.51.100.7:1111", "10.0.0.1:80"), Segment::Tcp(SYN))
        .unwrap();
    let b = r
        .client(&tcp("198.51.100.7:1112", "10.0.0.2:443"), Segment::Tcp(SYN))
        .unwrap();
    assert_eq!(r.conn(a).daddr, r.conn(b).daddr);
    let t = r.conn(r.conn(a).template.unwrap());
    assert_eq!(t.protocol, 0);
    assert_eq!(t.vaddr, ip("0.0.0.7"));
    assert_eq!(t.controlled, 2);
}

#[test]
fn quiesced_real_server_keeps_its_connections() {
    let mut r = Rig::new(NAT2, ConnConfig::default());
    let k = tcp("203.0.113.5:40000", "10.0.0.1:80");
    let id = r.client(&k, Segment::Tcp(SYN)).unwrap();
    r.client(&k, Segment::Tcp(ACK)).unwrap();
    let rs = r.conn(id).daddr;
    r.apply(&format!("-e -t 10.0.0.1:80 -r {rs}:8080 -m -w 0"));
    // Existing connection continues, in both directions.
    assert_eq!(r.client(&k, Segment::Tcp(ACK)).unwrap(), id);
    let c = r.conn(id);
    assert_eq!(r.server(&reply(&c), Segment::Tcp(ACK)).unwrap(), id);
    // New clients all go to the other real server.
    for p in 0..10 {
        let n = r
            .client(
                &tcp(&format!("203.0.113.6:{}", 1000 + p), "10.0.0.1:80"),
                Segment::Tcp(SYN),
            )
            .unwrap();
        assert_ne!(r.conn(n).daddr, rs);
    }
}

#[test]
fn removed_real_server_drops_packets_and_expire_nodest_conn_expires_them() {
    for expire_nodest in [false, true] {
        let mut cfg = ConnConfig::default();
        cfg.expire_nodest_conn = expire_nodest;
        let mut r = Rig::new(NAT2, cfg);
        let k = tcp("203.0.113.5:40000", "10.0.0.1:80");
        let id = r.client(&k, Segment::Tcp(SYN)).unwrap();
        r.client(&k, Segment::Tcp(ACK)).unwrap();
        let rs = r.conn(id).daddr;
        r.apply(&format!("-d -t 10.0.0.1:80 -r {rs}:8080"));
        // The connection still references the trashed server, counted.
        assert_eq!(r.counts(&format!("{rs}:8080")), (1, 0, 0));
        assert!(r.client(&k, Segment::Tcp(ACK)).is_err());
        assert_eq!(r.table.stats().dest_unavailable, 1);
        if expire_nodest {
            assert!(r.table.get(id).is_none());
            // The next SYN on that tuple is scheduled on a live server.
            let n = r.client(&k, Segment::Tcp(SYN)).unwrap();
            assert_ne!(r.conn(n).daddr, rs);
        } else {
            // The entry stays until its timeout; its packets are dropped meanwhile.
            assert!(r.table.get(id).is_some());
            r.advance(900);
            assert!(r.table.get(id).is_none());
        }
        // Its last connection gone, the trashed server is freed.
        let d = r.pool().dests();
        assert!(
            (0..d.slot_count())
                .filter_map(|i| d.id_at(i))
                .all(|id| d.get(id).unwrap().addr() != rs)
        );
    }
}

#[test]
fn expire_nodest_conn_reschedules_syns_on_quiesced_servers() {
    for expire_nodest in [false, true] {
        let mut cfg = ConnConfig::default();
        cfg.expire_nodest_conn = expire_nodest;
        let mut r = Rig::new(NAT2, cfg);
        let k = tcp("203.0.113.5:40000", "10.0.0.1:80");
        let id = r.client(&k, Segment::Tcp(SYN)).unwrap();
        r.client(&k, Segment::Tcp(ACK)).unwrap();
        let rs = r.conn(id).daddr;
        r.apply(&format!("-e -t 10.0.0.1:80 -r {rs}:8080 -m -w 0"));
        // A SYN reusing the ESTABLISHED tuple: kept on the old server unless expire_nodest_conn.
        let again = r.client(&k, Segment::Tcp(SYN)).unwrap();
        if expire_nodest {
            assert_ne!(r.conn(again).daddr, rs);
            assert_eq!(r.table.stats().reused, 1);
        } else {
            assert_eq!(again, id);
            assert_eq!(r.conn(again).daddr, rs);
        }
    }
}

#[test]
fn conn_reuse_mode_reschedules_syns_on_closed_tuples() {
    // rr over two servers: a rescheduled SYN lands on the other server.
    for mode in [0u8, 1] {
        let mut cfg = ConnConfig::default();
        cfg.conn_reuse_mode = mode;
        let mut r = Rig::new(NAT2, cfg);
        let k = tcp("203.0.113.5:40000", "10.0.0.1:80");
        let id = r.client(&k, Segment::Tcp(SYN)).unwrap();
        let first = r.conn(id).daddr;
        r.client(&k, Segment::Tcp(ACK)).unwrap();
        let c = r.conn(id);
        r.server(&reply(&c), Segment::Tcp(FIN)).unwrap();
        r.client(&k, Segment::Tcp(FIN)).unwrap();
        assert_eq!(r.conn(id).state, ConnState::Tcp(TcpState::TimeWait));
        let n = r.client(&k, Segment::Tcp(SYN)).unwrap();
        if mode == 0 {
            // Old connection reused: same real server, TIME_WAIT -> SYN_RECV.
            assert_eq!((n, r.conn(n).daddr), (id, first));
        } else {
            assert_ne!(r.conn(n).daddr, first);
            assert_eq!(r.conn(n).state, ConnState::Tcp(TcpState::SynRecv));
            assert_eq!(r.counts(&format!("{first}:8080")), (0, 0, 0));
        }
    }
    // Bit 2: FIN_WAIT connections seen one way (DR) are reused too.
    for mode in [1u8, 3] {
        let rules = "-A -t 10.0.0.1:80 -s rr\n\
                     -a -t 10.0.0.1:80 -r 192.168.1.1:80 -g\n\
                     -a -t 10.0.0.1:80 -r 192.168.1.2:80 -g\n";
        let mut cfg = ConnConfig::default();
        cfg.conn_reuse_mode = mode;
        let mut r = Rig::new(rules, cfg);
        let k = tcp("203.0.113.5:40000", "10.0.0.1:80");
        let id = r.client(&k, Segment::Tcp(SYN)).unwrap();
        let first = r.conn(id).daddr;
        r.client(&k, Segment::Tcp(ACK)).unwrap();
        r.client(&k, Segment::Tcp(FIN)).unwrap();
        assert_eq!(r.conn(id).state, ConnState::Tcp(TcpState::FinWait));
        let n = r.client(&k, Segment::Tcp(SYN)).unwrap();
        assert_eq!(r.conn(n).daddr == first, mode == 1, "mode {mode}");
    }
}

#[test]
fn template_invalidation_when_server_removed_or_quiesced() {
    for quiescent in [false, true] {
        let mut cfg = ConnConfig::default();
        cfg.expire_quiescent_template = quiescent;
        let mut r = Rig::new(PERSIST, cfg);
        let a = r
            .client(&tcp("198.51.100.7:1111", "10.0.0.1:443"), Segment::Tcp(SYN))
            .unwrap();
        let rs = r.conn(a).daddr;
        r.apply(&format!("-e -t 10.0.0.1:443 -r {rs}:443 -m -w 0"));
        let b = r
            .client(&tcp("198.51.100.7:2222", "10.0.0.1:443"), Segment::Tcp(SYN))
            .unwrap();
        // Without expire_quiescent_template persistence wins over the drain (IPVS default).
        assert_eq!(r.conn(b).daddr == rs, !quiescent, "quiescent {quiescent}");
        assert_eq!(r.table.stats().templates_invalidated, quiescent as u64);
    }
    let mut r = Rig::new(PERSIST, ConnConfig::default());
    let a = r
        .client(&tcp("198.51.100.7:1111", "10.0.0.1:443"), Segment::Tcp(SYN))
        .unwrap();
    let rs = r.conn(a).daddr;
    r.apply(&format!("-d -t 10.0.0.1:443 -r {rs}:443"));
    let b = r
        .client(&tcp("198.51.100.7:2222", "10.0.0.1:443"), Segment::Tcp(SYN))
        .unwrap();
    assert_ne!(r.conn(b).daddr, rs);
    assert_eq!(r.table.stats().templates_invalidated, 1);
}

#[test]
fn short_timeout_preset() {
    let mut cfg = ConnConfig::default();
    cfg.timeouts = Timeouts::SHORT;
    let mut r = Rig::new(NAT2, cfg);
    let k = tcp("203.0.113.5:40000", "10.0.0.1:80");
    let id = r.client(&k, Segment::Tcp(SYN)).unwrap();
    assert_eq!(r.expires_in(id), Duration::from_secs(30));
    r.client(&k, Segment::Tcp(ACK)).unwrap();
    assert_eq!(r.expires_in(id), Duration::from_secs(90));
    // `ipvsadm --set 3600 0 0` at run time: taken at the next packet.
    let mut t = Timeouts::SHORT;
    t.set(3600, 0, 0);
    r.table.set_timeouts(t);
    r.client(&k, Segment::Tcp(ACK)).unwrap();
    assert_eq!(r.expires_in(id), Duration::from_secs(3600));
}

#[test]
fn ftp_data_port_mismatch_and_one_packet_are_not_stored() {
    let mut r = Rig::new(NAT2, ConnConfig::default());
    let now = r.now;
    let Rig {
        svcs, key, table, ..
    } = &mut r;
    let svc = svcs.get_mut(key).unwrap();
    assert_eq!(
        table.schedule(svc, 0, &tcp("203.0.113.5:20", "10.0.0.1:80"), now),
        Err(ScheduleError::FtpData)
    );
    assert_eq!(
        table.schedule(svc, 0, &tcp("203.0.113.5:2000", "10.0.0.1:81"), now),
        Err(ScheduleError::PortMismatch)
    );
    let rules = "-A -u 10.0.0.1:53 -s rr -o\n-a -u 10.0.0.1:53 -r 192.168.1.1:53 -m\n";
    let mut r = Rig::new(rules, ConnConfig::default());
    let now = r.now;
    let Rig {
        svcs, key, table, ..
    } = &mut r;
    let svc = svcs.get_mut(key).unwrap();
    let k = FlowKey::new(Protocol::Udp, ip("203.0.113.5"), 5353, ip("10.0.0.1"), 53);
    assert!(matches!(
        table.schedule(svc, 0, &k, now),
        Ok(Scheduled::OnePacket { port: 53, .. })
    ));
    assert!(table.is_empty());
}

#[test]
fn no_cport_entries_match_any_client_port_until_they_learn_it() {
    let mut t = ConnTable::new(ConnConfig::default(), Instant::ZERO);
    let now = Instant::from_secs(1);
    let new = NewConn {
        key: tcp("203.0.113.5:0", "10.0.0.1:20"),
        daddr: ip("192.168.1.1"),
        dport: 20,
        dest: Some(DestRef::new(0, 0)),
        flags: ConnFlags(ConnFlags::MASQ | ConnFlags::INACTIVE | ConnFlags::NO_CPORT),
        template: None,
    };
    let id = t.insert(&mut (), &new, now).unwrap();
    let k = tcp("203.0.113.5:51000", "10.0.0.1:20");
    assert_eq!(t.lookup_in(&k, now), Some(id));
    t.set_client_port(id, 51000).unwrap();
    assert_eq!(t.lookup_in(&k, now), Some(id));
    assert_eq!(
        t.lookup_in(&tcp("203.0.113.5:51001", "10.0.0.1:20"), now),
        None
    );
    assert_eq!(t.get(id).unwrap().cport, 51000);
    assert!(!t.get(id).unwrap().flags.has(ConnFlags::NO_CPORT));
    // Exact duplicates are refused; the other family is refused.
    let dup = NewConn {
        key: k,
        flags: ConnFlags(ConnFlags::MASQ),
        ..new
    };
    assert_eq!(t.insert(&mut (), &dup, now), Err(ConnError::Exists));
    let bad = NewConn {
        daddr: ip("2001:db8::1"),
        ..dup
    };
    assert_eq!(t.insert(&mut (), &bad, now), Err(ConnError::FamilyMismatch));
}

fn fill(t: &mut ConnTable, n: u32, first: u32, now: Instant, est: bool) -> Vec<ConnId> {
    let mut ids = Vec::new();
    for i in 0..n {
        let c = first + i;
        let k = FlowKey::new(
            Protocol::Tcp,
            IpAddr::from((0x0b00_0000 + c / 60_000).to_be_bytes()),
            (1024 + c % 60_000) as u16,
            ip("10.0.0.1"),
            80,
        );
        let new = NewConn {
            key: k,
            daddr: ip("192.168.1.1"),
            dport: 80,
            dest: None,
            flags: ConnFlags::for_method(lvs::dest::ForwardMethod::DirectRoute),
            template: None,
        };
        match t.insert(&mut (), &new, now) {
            Ok(id) => {
                t.packet(&mut (), id, Direction::Input, Segment::Tcp(SYN), 60, now)
                    .unwrap();
                if est {
                    t.packet(&mut (), id, Direction::Input, Segment::Tcp(ACK), 60, now)
                        .unwrap();
                }
                ids.push(id);
            }
            Err(ConnError::Full) => {}
            Err(e) => panic!("{e}"),
        }
    }
    ids
}

/// The flood test of the issue: a table at capacity with half its entries established, then a
/// SYN flood of ten times its capacity from random clients over two minutes.
#[test]
fn syn_flood_of_ten_times_capacity_spares_established_connections() {
    const CAP: u32 = 20_000;
    for policy in [
        FullPolicy::DropEntry,
        FullPolicy::EvictOldestInactive,
        FullPolicy::Refuse,
    ] {
        let mut cfg = ConnConfig::default();
        cfg.capacity_v4 = CAP;
        cfg.full_policy = policy;
        let mut now = Instant::from_secs(10);
        let mut t = ConnTable::new(cfg, now);
        let est = fill(&mut t, CAP / 2, 0, now, true);
        assert_eq!(est.len(), (CAP / 2) as usize);
        let keys: Vec<FlowKey> = est
            .iter()
            .map(|&id| t.get(id).unwrap().key().unwrap())
            .collect();
        let mut flood_admitted = 0;
        let per_step = CAP; // 10 steps of CAP SYNs, 12 s apart
        for step in 0..10u32 {
            flood_admitted += fill(&mut t, per_step, 1_000_000 + step * per_step, now, false).len();
            now += Duration::from_secs(12);
            // The established connections keep talking.
            for (id, k) in est.iter().zip(&keys) {
                if t.lookup_in(k, now) == Some(*id) {
                    t.packet(&mut (), *id, Direction::Input, Segment::Tcp(ACK), 60, now)
                        .unwrap();
                }
            }
            while !t.expire(&mut (), now, 100_000).done {}
        }
        let survived = est
            .iter()
            .zip(&keys)
            .filter(|(id, k)| t.lookup_in(k, now) == Some(**id))
            .count();
        let ratio = survived as f64 / est.len() as f64;
        println!(
            "{policy:?}: {survived}/{} established survived ({:.4}), {flood_admitted} of {} flood SYNs admitted, {} evicted, {} refused",
            est.len(),
            ratio,
            10 * per_step,
            t.stats().evicted,
            t.stats().refused_full
        );
        assert!(ratio >= 0.999, "{policy:?}: {ratio}");
        if policy == FullPolicy::DropEntry {
            // Half-open entries were shed to admit new SYNs, not refused wholesale.
            assert!(t.stats().evicted > 0);
            assert!(flood_admitted > (CAP * 5) as usize);
        }
        assert!(t.len() <= CAP as usize);
    }
}

#[test]
fn expire_does_bounded_work_and_catches_up() {
    let mut cfg = ConnConfig::default();
    cfg.capacity_v4 = 10_000;
    let now = Instant::from_secs(5);
    let mut t = ConnTable::new(cfg, now);
    let ids = fill(&mut t, 5000, 0, now, false);
    assert_eq!(ids.len(), 5000);
    let later = now + Duration::from_secs(61);
    // Lookups already treat them as gone...
    let k = t.get(ids[0]).unwrap().key().unwrap();
    assert_eq!(t.lookup_in(&k, later), None);
    // ...and expire frees them a bounded amount at a time.
    let mut calls = 0;
    let mut expired = 0;
    let mut told = 0u32;
    loop {
        let r = t.expire_with(&mut (), later, 1000, |c| {
            assert_eq!(c.state, ConnState::Tcp(TcpState::SynRecv));
            told += 1;
        });
        assert!(r.work <= 1000);
        expired += r.expired;
        calls += 1;
        if r.done {
            break;
        }
    }
    assert_eq!(expired, 5000);
    assert_eq!(told, 5000);
    assert!(calls >= 5, "{calls}");
    assert!(t.is_empty());
    assert_eq!(t.stats().expired, 5000);
}

#[test]
fn memory_per_entry() {
    let mut cfg = ConnConfig::default();
    for cap in [100_000u32, 1_000_000] {
        cfg.capacity_v4 = cap;
        cfg.capacity_v6 = 1000;
        let t = ConnTable::new(cfg, Instant::ZERO);
        let m = t.memory();
        println!(
            "capacity {cap}: {:.1} bytes per IPv4 entry, {:.1} per IPv6 entry",
            m.v4_bytes_per_entry(),
            m.v6_bytes_per_entry()
        );
        assert!(m.v4_bytes_per_entry() <= 64.0, "{}", m.v4_bytes_per_entry());
    }
}

#[test]
fn batch_lookup_agrees_with_single_lookups() {
    let mut cfg = ConnConfig::default();
    cfg.capacity_v4 = 5000;
    cfg.capacity_v6 = 100;
    let now = Instant::from_secs(1);
    let mut t = ConnTable::new(cfg, now);
    let ids = fill(&mut t, 3000, 0, now, true);
    let mut keys: Vec<FlowKey> = ids
        .iter()
        .map(|&i| t.get(i).unwrap().key().unwrap())
        .collect();
    // Misses and an IPv6 key mixed in.
    keys.extend((0..50).map(|i| tcp(&format!("198.18.0.1:{}", 100 + i), "10.0.0.1:80")));
    keys.push(tcp("[2001:db8::5]:99", "[2001:db8::1]:80"));
    keys.reverse();
    let mut out = vec![None; keys.len()];
    t.lookup_in_batch(&keys, now, &mut out);
    for (k, o) in keys.iter().zip(&out) {
        assert_eq!(*o, t.lookup_in(k, now));
    }
    assert_eq!(out.iter().filter(|o| o.is_some()).count(), 3000);
}

#[test]
fn flush_releases_every_counter() {
    let mut r = Rig::new(PERSIST, ConnConfig::default());
    for p in 0..20 {
        r.client(
            &tcp(&format!("198.51.{}.7:{}", p, 1000 + p), "10.0.0.1:443"),
            Segment::Tcp(SYN),
        )
        .unwrap();
    }
    let Rig {
        svcs, key, table, ..
    } = &mut r;
    table.flush(svcs.get_mut(key).unwrap().pool_mut());
    assert!(r.table.is_empty());
    for rs in ["192.168.1.1:443", "192.168.1.2:443", "192.168.1.3:443"] {
        assert_eq!(r.counts(rs), (0, 0, 0));
    }
}

/// Deadlines are 32-bit milliseconds: a clock that jumps further than any timeout (a capture
/// merged from different days, a dataplane idle for weeks) must find every old entry dead,
/// whether a lookup or a mutating call sees the jump first.
#[test]
fn clock_jumps_of_days_to_months_leave_no_live_ghosts() {
    let rules = "-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 192.168.1.1:80 -m\n";
    for days in [1u64, 13, 25, 30, 40, 49, 50, 60, 400] {
        for lookup_first in [true, false] {
            let mut r = Rig::new(rules, ConnConfig::default());
            let k = FlowKey::new(Protocol::Tcp, ip("198.51.100.1"), 40000, ip("10.0.0.1"), 80);
            let id = r.client(&k, Segment::Tcp(SYN)).unwrap();
            assert_eq!(r.table.lookup_in(&k, r.now), Some(id));
            let later = r.now + Duration::from_secs(days * 86_400);
            if lookup_first {
                assert_eq!(r.table.lookup_in(&k, later), None, "{days} days");
            }
            r.advance(days * 86_400);
            assert!(r.table.is_empty(), "{days} days");
            assert_eq!(r.counts("192.168.1.1:80"), (0, 0, 0));
            assert_eq!(r.table.lookup_in(&k, r.now), None, "{days} days");
            // And the table keeps working at the new time.
            let id = r.client(&k, Segment::Tcp(SYN)).unwrap();
            assert_eq!(r.table.lookup_in(&k, r.now), Some(id));
        }
    }
}
