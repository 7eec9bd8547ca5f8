//! The director driven with generated frames through whole connection lifecycles: NAT both
//! ways, DR and TUN, IPv4 and IPv6, drains and removals mid-stream, persistence, one-packet
//! UDP, ICMP errors both ways, the director's own replies, and the batch form against the
//! single-frame form. Every forwarded frame is checked by the etherparse oracle.

mod common {
    pub mod oracle;
}

use std::net::IpAddr;

use common::oracle::check_frame;
use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use lvs::Instant;
use lvs::config::ServiceKey;
use lvs::conn::{ConnConfig, ConnState, TcpState};
use lvs::director::{
    Director, DirectorConfig, DropReason, FrameMut, PassReason, Rx, Side, Verdict,
};
use lvs::flow::Protocol;
use lvs::rewrite::{ChecksumMode, IcmpReply};
use lvs::sched::SchedConfig;
use lvs::wire::{Classified, ClassifyOptions, LinkType, classify};

const CLIENT_MAC: [u8; 6] = [0x02, 0xc0, 0, 0, 0, 1];
const GW_MAC: [u8; 6] = [0x02, 0x99, 0, 0, 0, 1];
const DIRECTOR_MAC: [u8; 6] = [0x02, 0xd1, 0, 0, 0, 1];
const HEADROOM: usize = 64;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn rs_mac(addr: &IpAddr) -> [u8; 6] {
    let o = match addr {
        IpAddr::V4(a) => a.octets()[3],
        IpAddr::V6(a) => a.octets()[15],
    };
    [0x02, 0x5e, 0, 0, 0, o]
}

fn director_with(rules: &str, conn: ConnConfig) -> Director {
    let cfg = DirectorConfig {
        mac: DIRECTOR_MAC,
        client_gateway: Some(GW_MAC),
        addr_v4: Some("192.168.0.254".parse().unwrap()),
        addr_v6: Some("fd00::fe".parse().unwrap()),
        ..DirectorConfig::default()
    };
    let mut d = Director::new(cfg, conn, SchedConfig::default(), Instant::ZERO);
    d.apply_rules(rules).unwrap();
    let servers: Vec<IpAddr> = d
        .services()
        .iter()
        .flat_map(|s| {
            s.pool()
                .dests()
                .iter()
                .map(|(_, d)| d.addr())
                .collect::<Vec<_>>()
        })
        .collect();
    for a in servers {
        d.set_neighbour(a, rs_mac(&a));
    }
    d
}

fn director(rules: &str) -> Director {
    director_with(rules, ConnConfig::default())
}

#[derive(Clone, Copy)]
enum L4 {
    Tcp(u8),
    Udp,
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;
const RST: u8 = 0x04;
const SYNACK: u8 = SYN | ACK;
const FINACK: u8 = FIN | ACK;

/// An Ethernet frame from `src` to `dst` (MACs chosen by direction), with a payload.
fn frame(src: (&str, u16), dst: (&str, u16), l4: L4, ttl: u8, payload: &[u8]) -> Vec<u8> {
    let (s, d) = (ip(src.0), ip(dst.0));
    let b = PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC);
    let b = match (s, d) {
        (IpAddr::V4(s), IpAddr::V4(d)) => b.ipv4(s.octets(), d.octets(), ttl),
        (IpAddr::V6(s), IpAddr::V6(d)) => b.ipv6(s.octets(), d.octets(), ttl),
        _ => panic!("mixed families"),
    };
    let mut out = Vec::new();
    match l4 {
        L4::Tcp(flags) => {
            let mut t = b.tcp(src.1, dst.1, 1000, 65535);
            if flags & SYN != 0 {
                t = t.syn();
            }
            if flags & ACK != 0 {
                t = t.ack(1);
            }
            if flags & FIN != 0 {
                t = t.fin();
            }
            if flags & RST != 0 {
                t = t.rst();
            }
            t.write(&mut out, payload).unwrap();
        }
        L4::Udp => b.udp(src.1, dst.1).write(&mut out, payload).unwrap(),
    }
    out
}

/// What a frame looked like after the director, plus the verdict.
struct Out {
    verdict: Verdict,
    bytes: Vec<u8>,
}

fn run(d: &mut Director, f: &[u8], side: Side, now_ms: u64) -> Out {
    let mut buf = vec![0u8; HEADROOM + f.len() + 1600];
    buf[HEADROOM..HEADROOM + f.len()].copy_from_slice(f);
    let verdict = d.process_at(
        &mut buf,
        HEADROOM,
        HEADROOM + f.len(),
        &Rx::new(side),
        Instant::from_millis(now_ms),
    );
    let bytes = match verdict {
        Verdict::Forward(fw) => buf[fw.start..fw.end].to_vec(),
        Verdict::Reply(r) => buf[r.start..r.end].to_vec(),
        _ => buf[HEADROOM..HEADROOM + f.len()].to_vec(),
    };
    if matches!(verdict, Verdict::Forward(_) | Verdict::Reply(_)) {
        let c = check_frame(&bytes, true, Some(6080)).expect("etherparse parses the output");
        assert!(c.all_good(), "bad checksum in output {c:?}");
    }
    Out { verdict, bytes }
}

/// (source, destination, TTL or hop limit) of an output frame's outermost IP header.
fn addrs(bytes: &[u8]) -> (IpAddr, IpAddr, u8) {
    let p = SlicedPacket::from_ethernet(bytes).unwrap();
    match p.net.unwrap() {
        NetSlice::Ipv4(v) => {
            let h = v.header();
            (
                IpAddr::from(h.source()),
                IpAddr::from(h.destination()),
                h.ttl(),
            )
        }
        NetSlice::Ipv6(v) => {
            let h = v.header();
            (
                IpAddr::from(h.source()),
                IpAddr::from(h.destination()),
                h.hop_limit(),
            )
        }
        _ => panic!("not IP"),
    }
}

fn ports(bytes: &[u8]) -> (u16, u16) {
    match SlicedPacket::from_ethernet(bytes)
        .unwrap()
        .transport
        .unwrap()
    {
        TransportSlice::Tcp(t) => (t.source_port(), t.destination_port()),
        TransportSlice::Udp(u) => (u.source_port(), u.destination_port()),
        _ => panic!("no ports"),
    }
}

fn forwarded(o: &Out) -> lvs::director::Forward {
    match o.verdict {
        Verdict::Forward(f) => f,
        v => panic!("expected a forward, got {v:?}"),
    }
}

fn conn_state(d: &Director) -> Vec<ConnState> {
    d.conns()
        .iter()
        .filter(|c| !c.flags.has(lvs::conn::ConnFlags::TEMPLATE))
        .map(|c| c.state)
        .collect()
}

const NAT4: &str = "-A -t 10.0.0.1:80 -s rr\n\
                    -a -t 10.0.0.1:80 -r 192.168.10.1:8080 -m\n\
                    -a -t 10.0.0.1:80 -r 192.168.10.2:8080 -m\n";

#[test]
fn nat_tcp_lifecycle_both_ways() {
    let mut d = director(NAT4);
    let c = ("203.0.113.7", 40000);
    let vip = ("10.0.0.1", 80);
    // SYN: to the real server, destination rewritten, MACs to the real server's.
    let o = run(
        &mut d,
        &frame(c, vip, L4::Tcp(SYN), 64, &[]),
        Side::Client,
        1,
    );
    let f = forwarded(&o);
    assert_eq!(f.to, Side::Server);
    let (s, rs, ttl) = addrs(&o.bytes);
    assert_eq!((s, ttl), (ip("203.0.113.7"), 63));
    assert!(rs == ip("192.168.10.1") || rs == ip("192.168.10.2"));
    assert_eq!(ports(&o.bytes), (40000, 8080));
    assert_eq!(&o.bytes[0..6], &rs_mac(&rs));
    assert_eq!(&o.bytes[6..12], &DIRECTOR_MAC);
    assert_eq!(f.next_hop, rs);
    let rs_s = rs.to_string();
    let rsp = (rs_s.as_str(), 8080);

    // SYN-ACK from the real server: back to the client from the VIP, to the gateway's MAC.
    let synack = frame(rsp, c, L4::Tcp(SYNACK), 64, &[]);
    assert_eq!(d.side_of(&synack), Side::Server);
    let o = run(&mut d, &synack, Side::Server, 2);
    assert_eq!(forwarded(&o).to, Side::Client);
    let (s, dst, _) = addrs(&o.bytes);
    assert_eq!((s, dst), (ip("10.0.0.1"), ip("203.0.113.7")));
    assert_eq!(ports(&o.bytes), (80, 40000));
    assert_eq!(&o.bytes[0..6], &GW_MAC);
    assert_eq!(conn_state(&d), vec![ConnState::Tcp(TcpState::SynRecv)]);

    // ACK and data both ways: established.
    run(
        &mut d,
        &frame(c, vip, L4::Tcp(ACK), 64, b"GET / HTTP/1.0\r\n\r\n"),
        Side::Client,
        3,
    );
    assert_eq!(conn_state(&d), vec![ConnState::Tcp(TcpState::Established)]);
    let o = run(
        &mut d,
        &frame(rsp, c, L4::Tcp(ACK), 64, &[0x55; 1000]),
        Side::Server,
        4,
    );
    assert_eq!(forwarded(&o).to, Side::Client);
    // The client closes.
    run(
        &mut d,
        &frame(c, vip, L4::Tcp(FINACK), 64, &[]),
        Side::Client,
        5,
    );
    // IPVS's INPUT table: a client FIN in ESTABLISHED is CLOSE_WAIT.
    assert_eq!(conn_state(&d), vec![ConnState::Tcp(TcpState::CloseWait)]);
    run(
        &mut d,
        &frame(rsp, c, L4::Tcp(FINACK), 64, &[]),
        Side::Server,
        6,
    );
    run(
        &mut d,
        &frame(c, vip, L4::Tcp(ACK), 64, &[]),
        Side::Client,
        7,
    );
    assert!(matches!(
        conn_state(&d)[0],
        ConnState::Tcp(TcpState::TimeWait | TcpState::CloseWait | TcpState::LastAck)
    ));

    // ipvsadm -L --stats: one connection, 4 packets each way.
    let key = ServiceKey::Addr {
        proto: Protocol::Tcp,
        addr: ip("10.0.0.1"),
        port: 80,
    };
    let s = d.service_stats(&key).unwrap();
    assert_eq!((s.conns, s.in_packets, s.out_packets), (1, 4, 3));
    assert!(s.out_bytes > 1000 && s.in_bytes > 0);
    let ds = d.dest_stats(&key, rs, 8080).unwrap();
    assert_eq!(ds, s);
    assert_eq!(d.stats().forwarded_in, 4);
    assert_eq!(d.stats().forwarded_out, 3);

    // Long after the TIME_WAIT timeout, expiry frees it and the real server's counters.
    let r = d.expire(Instant::from_secs(1000), 1 << 20);
    assert!(r.done);
    assert!(d.conns().is_empty());
    let (_, dest) = d
        .services()
        .get(&key)
        .unwrap()
        .pool()
        .dests()
        .iter()
        .find(|(_, x)| x.addr() == rs)
        .unwrap();
    assert_eq!((dest.active_conns(), dest.inactive_conns()), (0, 0));
}

#[test]
fn rr_spreads_connections_and_reply_without_connection_passes() {
    let mut d = director(NAT4);
    let mut per = std::collections::BTreeMap::new();
    for p in 0..100u16 {
        let o = run(
            &mut d,
            &frame(
                ("203.0.113.7", 10000 + p),
                ("10.0.0.1", 80),
                L4::Tcp(SYN),
                64,
                &[],
            ),
            Side::Client,
            1,
        );
        *per.entry(forwarded(&o).next_hop).or_insert(0) += 1;
    }
    assert_eq!(per.values().copied().collect::<Vec<_>>(), vec![50, 50]);
    // A segment without SYN and without connection is the host's (IPVS accepts it).
    let o = run(
        &mut d,
        &frame(("203.0.113.8", 1), ("10.0.0.1", 80), L4::Tcp(ACK), 64, &[]),
        Side::Client,
        2,
    );
    assert_eq!(o.verdict, Verdict::Pass(PassReason::NoConnection));
    // A reply from a real server with no connection is not rewritten.
    let o = run(
        &mut d,
        &frame(
            ("192.168.10.1", 8080),
            ("203.0.113.9", 5),
            L4::Tcp(ACK),
            64,
            &[],
        ),
        Side::Server,
        2,
    );
    assert_eq!(o.verdict, Verdict::Pass(PassReason::NoConnection));
    // Not a VIP at all.
    let o = run(
        &mut d,
        &frame(("203.0.113.8", 1), ("10.0.0.99", 80), L4::Tcp(SYN), 64, &[]),
        Side::Client,
        2,
    );
    assert_eq!(o.verdict, Verdict::Pass(PassReason::NotOurs));
    assert_eq!(d.stats().passed(PassReason::NotOurs), 1);
}

#[test]
fn dr_and_tun_ipv4_and_ipv6() {
    let rules = "-A -t 10.0.0.2:80 -s wlc\n\
                 -a -t 10.0.0.2:80 -r 192.168.20.1 -g\n\
                 -A -t [2001:db8::2]:443 -s sh\n\
                 -a -t [2001:db8::2]:443 -r [fd00::21]:443 -g\n\
                 -A -u 10.0.0.3:53 -s rr\n\
                 -a -u 10.0.0.3:53 -r 192.168.30.1 -i\n\
                 -A -t 10.0.0.4:80 -s mh\n\
                 -a -t 10.0.0.4:80 -r 192.168.30.2 -i --tun-type gue --tun-port 6080\n\
                 -a -t 10.0.0.4:80 -r 192.168.30.3:80 -i --tun-type gre --tun-csum\n\
                 -A -t [2001:db8::4]:80 -s rr\n\
                 -a -t [2001:db8::4]:80 -r [fd00::32]:80 -i --tun-type gre --tun-csum\n\
                 -A -t 10.0.0.5:80 -s rr\n\
                 -a -t 10.0.0.5:80 -r [fd00::33]:80 -i\n";
    let mut d = director(rules);

    // DR: the IP packet is the client's, only MACs and TTL change.
    let syn = frame(
        ("203.0.113.7", 40000),
        ("10.0.0.2", 80),
        L4::Tcp(SYN),
        64,
        &[],
    );
    let o = run(&mut d, &syn, Side::Client, 1);
    assert_eq!(forwarded(&o).next_hop, ip("192.168.20.1"));
    assert_eq!(&o.bytes[0..6], &rs_mac(&ip("192.168.20.1")));
    assert_eq!(addrs(&o.bytes), (ip("203.0.113.7"), ip("10.0.0.2"), 63));
    assert_eq!(o.bytes.len(), syn.len());
    // DR IPv6.
    let syn6 = frame(
        ("2001:db8:ff::7", 40000),
        ("2001:db8::2", 443),
        L4::Tcp(SYN),
        64,
        &[],
    );
    let o = run(&mut d, &syn6, Side::Client, 1);
    assert_eq!(&o.bytes[0..6], &rs_mac(&ip("fd00::21")));
    assert_eq!(
        addrs(&o.bytes),
        (ip("2001:db8:ff::7"), ip("2001:db8::2"), 63)
    );

    // TUN IPIP (UDP): an outer IPv4 header from the director to the real server, in headroom.
    let dns = frame(
        ("203.0.113.7", 5353),
        ("10.0.0.3", 53),
        L4::Udp,
        64,
        b"query",
    );
    let o = run(&mut d, &dns, Side::Client, 1);
    let f = forwarded(&o);
    assert_eq!(f.start, HEADROOM - 20);
    assert_eq!(
        addrs(&o.bytes),
        (ip("192.168.0.254"), ip("192.168.30.1"), 63)
    );
    assert_eq!(o.bytes[14 + 9], 4, "IPIP");
    assert_eq!(o.bytes.len(), dns.len() + 20);

    // TUN GUE and GRE (mh chooses one of them per client).
    let mut kinds = std::collections::BTreeSet::new();
    for p in 0..40u16 {
        // mh hashes the client address (no mh-port flag).
        let client = format!("203.0.113.{}", 10 + p);
        let syn = frame((&client, 20000), ("10.0.0.4", 80), L4::Tcp(SYN), 64, &[]);
        let o = run(&mut d, &syn, Side::Client, 2);
        let f = forwarded(&o);
        let (s, dst, _) = addrs(&o.bytes);
        assert_eq!(s, ip("192.168.0.254"));
        if dst == ip("192.168.30.2") {
            assert_eq!(o.bytes[14 + 9], 17, "GUE is UDP");
            assert_eq!(u16::from_be_bytes([o.bytes[36], o.bytes[37]]), 6080);
            assert_eq!(f.start, HEADROOM - 32);
            kinds.insert("gue");
        } else {
            assert_eq!(dst, ip("192.168.30.3"));
            assert_eq!(o.bytes[14 + 9], 47, "GRE");
            assert_eq!(f.start, HEADROOM - 28);
            kinds.insert("gre");
        }
    }
    assert_eq!(kinds.len(), 2);
    // IPv6 in IPv6 with GRE and its checksum.
    let syn6 = frame(
        ("2001:db8:ff::7", 1),
        ("2001:db8::4", 80),
        L4::Tcp(SYN),
        64,
        &[],
    );
    let o = run(&mut d, &syn6, Side::Client, 3);
    assert_eq!(forwarded(&o).start, HEADROOM - 48);
    assert_eq!(addrs(&o.bytes), (ip("fd00::fe"), ip("fd00::32"), 63));
    assert_eq!(o.bytes[14 + 6], 47, "GRE");
    // A real server of the other family cannot hold connections in the table: a typed drop.
    let syn = frame(("203.0.113.9", 1), ("10.0.0.5", 80), L4::Tcp(SYN), 64, &[]);
    assert_eq!(
        run(&mut d, &syn, Side::Client, 3).verdict,
        Verdict::Drop(DropReason::MixedFamily)
    );
    // DR and TUN replies do not come back through the director.
    assert_eq!(d.stats().forwarded_out, 0);
}

#[test]
fn nat_ipv6_and_udp() {
    let rules = "-A -u [2001:db8::5]:53 -s wlc\n\
                 -a -u [2001:db8::5]:53 -r [fd00::51]:5353 -m\n";
    let mut d = director(rules);
    let c = ("2001:db8:ff::9", 33333);
    let o = run(
        &mut d,
        &frame(c, ("2001:db8::5", 53), L4::Udp, 64, b"q"),
        Side::Client,
        1,
    );
    assert_eq!(addrs(&o.bytes).1, ip("fd00::51"));
    assert_eq!(ports(&o.bytes), (33333, 5353));
    let reply = frame(("fd00::51", 5353), c, L4::Udp, 64, b"answer");
    assert_eq!(d.side_of(&reply), Side::Server);
    let o = run(&mut d, &reply, Side::Server, 2);
    assert_eq!(addrs(&o.bytes).0, ip("2001:db8::5"));
    assert_eq!(ports(&o.bytes), (53, 33333));
    assert_eq!(conn_state(&d), vec![ConnState::Udp]);
    // An ICMPv6 error from the client side about our reply reaches the real server, NAT-ed.
    let sent = frame(("2001:db8::5", 53), c, L4::Udp, 64, b"answer");
    let err = icmp_error("2001:db8:ee::1", "2001:db8::5", 1, 4, [0; 4], &sent);
    let o = run(&mut d, &err, Side::Client, 3);
    assert_eq!(forwarded(&o).next_hop, ip("fd00::51"));
    assert_eq!(addrs(&o.bytes).1, ip("fd00::51"));
    // And a real server's ICMPv6 error about the client's datagram reaches the client.
    let got = frame(c, ("fd00::51", 5353), L4::Udp, 64, b"q");
    let err = icmp_error("fd00::51", "2001:db8:ff::9", 1, 4, [0; 4], &got);
    let o = run(&mut d, &err, Side::Server, 4);
    assert_eq!(forwarded(&o).to, Side::Client);
    assert_eq!(addrs(&o.bytes).0, ip("2001:db8::5"));
}

const TWO_DR: &str = "-A -t 10.0.0.1:80 -s wlc\n\
                      -a -t 10.0.0.1:80 -r 192.168.10.1:80 -g\n\
                      -a -t 10.0.0.1:80 -r 192.168.10.2:80 -g\n";

fn open(d: &mut Director, port: u16, t: u64) -> IpAddr {
    let c = ("203.0.113.7", port);
    let o = run(
        d,
        &frame(c, ("10.0.0.1", 80), L4::Tcp(SYN), 64, &[]),
        Side::Client,
        t,
    );
    let rs = forwarded(&o).next_hop;
    run(
        d,
        &frame(c, ("10.0.0.1", 80), L4::Tcp(ACK), 64, &[]),
        Side::Client,
        t,
    );
    rs
}

fn data(d: &mut Director, port: u16, t: u64) -> Verdict {
    run(
        d,
        &frame(
            ("203.0.113.7", port),
            ("10.0.0.1", 80),
            L4::Tcp(ACK),
            64,
            b"more",
        ),
        Side::Client,
        t,
    )
    .verdict
}

#[test]
fn quiesced_server_keeps_its_connections_and_gets_no_new_ones() {
    let mut d = director(TWO_DR);
    let first = open(&mut d, 1000, 1);
    let other = if first == ip("192.168.10.1") {
        ip("192.168.10.2")
    } else {
        ip("192.168.10.1")
    };
    let key = ServiceKey::Addr {
        proto: Protocol::Tcp,
        addr: ip("10.0.0.1"),
        port: 80,
    };
    d.set_weight(&key, first, 80, 0).unwrap();
    // The established connection continues to the quiesced server...
    for t in 2..10 {
        assert!(matches!(data(&mut d, 1000, t), Verdict::Forward(f) if f.next_hop == first));
    }
    // ...and every new one goes to the other.
    for p in 2000..2050 {
        assert_eq!(open(&mut d, p, 20), other);
    }
}

#[test]
fn removed_server_stops_its_connections_and_new_ones_move() {
    for expire_nodest in [false, true] {
        let mut d = director_with(
            TWO_DR,
            ConnConfig {
                expire_nodest_conn: expire_nodest,
                ..ConnConfig::default()
            },
        );
        let first = open(&mut d, 1000, 1);
        let n_before = d.conns().len();
        d.apply_rules(&format!("-d -t 10.0.0.1:80 -r {first}:80\n"))
            .unwrap();
        // IPVS drops packets of connections whose real server is gone (§4.1 step 7).
        assert_eq!(
            data(&mut d, 1000, 2),
            Verdict::Drop(DropReason::DestUnavailable)
        );
        assert_eq!(d.conns().len(), n_before - expire_nodest as usize);
        for p in 2000..2020 {
            assert_ne!(open(&mut d, p, 3), first);
        }
        // Once its connections are gone, the removed server leaves the trash.
        d.expire(Instant::from_secs(2000), u32::MAX);
        assert!(d.conns().is_empty());
    }
}

#[test]
fn deleted_service_drops_its_connections_and_its_number_is_reused_after() {
    let mut d = director(TWO_DR);
    open(&mut d, 1000, 1);
    d.apply_rules("-D -t 10.0.0.1:80\n").unwrap();
    assert_eq!(
        data(&mut d, 1000, 2),
        Verdict::Drop(DropReason::DestUnavailable)
    );
    // A new service on the same VIP starts afresh while the old connection lingers.
    d.apply_rules("-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 192.168.10.3:80 -g\n")
        .unwrap();
    d.set_neighbour(ip("192.168.10.3"), rs_mac(&ip("192.168.10.3")));
    assert_eq!(open(&mut d, 3000, 3), ip("192.168.10.3"));
    assert_eq!(
        d.services().number_bound(),
        2,
        "the old number is still referenced"
    );
    d.expire(Instant::from_secs(5000), u32::MAX);
    assert!(d.conns().is_empty());
    d.apply_rules("-A -t 10.0.0.9:80 -s rr\n").unwrap();
    assert_eq!(
        d.services().number_bound(),
        2,
        "the freed number was reused"
    );
}

#[test]
fn syn_reusing_a_time_wait_tuple_is_rescheduled() {
    let mut d = director(TWO_DR);
    let c = ("203.0.113.7", 1000);
    let vip = ("10.0.0.1", 80);
    open(&mut d, 1000, 1);
    run(
        &mut d,
        &frame(c, vip, L4::Tcp(FINACK), 64, &[]),
        Side::Client,
        2,
    );
    run(
        &mut d,
        &frame(c, vip, L4::Tcp(RST), 64, &[]),
        Side::Client,
        3,
    );
    assert_eq!(conn_state(&d), vec![ConnState::Tcp(TcpState::Close)]);
    let before = d.conns().stats().reused;
    let o = run(
        &mut d,
        &frame(c, vip, L4::Tcp(SYN), 64, &[]),
        Side::Client,
        4,
    );
    assert!(matches!(o.verdict, Verdict::Forward(_)));
    assert_eq!(d.conns().stats().reused, before + 1);
    assert_eq!(conn_state(&d), vec![ConnState::Tcp(TcpState::SynRecv)]);
}

#[test]
fn persistence_keeps_a_client_network_on_one_server() {
    let rules = "-A -t 10.0.0.1:0 -s rr -p 600 -M 255.255.255.0\n\
                 -a -t 10.0.0.1:0 -r 192.168.10.1 -g\n\
                 -a -t 10.0.0.1:0 -r 192.168.10.2 -g\n\
                 -a -t 10.0.0.1:0 -r 192.168.10.3 -g\n";
    let mut d = director(rules);
    for client in 1..=20u8 {
        let mut seen = std::collections::BTreeSet::new();
        for (i, port) in [80u16, 443, 8080].iter().enumerate() {
            let src = format!("198.51.{client}.{}", 10 + i);
            let o = run(
                &mut d,
                &frame(
                    (&src, 30000 + i as u16),
                    ("10.0.0.1", *port),
                    L4::Tcp(SYN),
                    64,
                    &[],
                ),
                Side::Client,
                1,
            );
            seen.insert(forwarded(&o).next_hop);
        }
        assert_eq!(seen.len(), 1, "one /24 sticks to one real server");
    }
    // Templates and connections: 20 templates, 60 connections.
    let templates = d
        .conns()
        .iter()
        .filter(|c| c.flags.has(lvs::conn::ConnFlags::TEMPLATE))
        .count();
    assert_eq!((templates, d.conns().len()), (20, 80));
}

#[test]
fn one_packet_udp_stores_nothing_and_counts_each_datagram() {
    let rules = "-A -u 10.0.0.3:514 -s rr -o\n\
                 -a -u 10.0.0.3:514 -r 192.168.30.1 -g\n\
                 -a -u 10.0.0.3:514 -r 192.168.30.2 -g\n";
    let mut d = director(rules);
    let mut hops = Vec::new();
    for _ in 0..4 {
        let o = run(
            &mut d,
            &frame(("203.0.113.7", 514), ("10.0.0.3", 514), L4::Udp, 64, b"log"),
            Side::Client,
            1,
        );
        hops.push(forwarded(&o).next_hop);
    }
    // Each datagram is scheduled afresh (rr alternates) and nothing is stored.
    assert_ne!(hops[0], hops[1]);
    assert_eq!(hops[0], hops[2]);
    assert!(d.conns().is_empty());
    let key = ServiceKey::Addr {
        proto: Protocol::Udp,
        addr: ip("10.0.0.3"),
        port: 514,
    };
    let s = d.service_stats(&key).unwrap();
    assert_eq!((s.conns, s.in_packets), (4, 4));
}

/// An ICMP error about `quoted` (an Ethernet frame), sent from `from` to `to`.
fn icmp_error(from: &str, to: &str, ty: u8, code: u8, extra: [u8; 4], quoted: &[u8]) -> Vec<u8> {
    let q = &quoted[14..];
    let mut out = Vec::new();
    match (ip(from), ip(to)) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let t = etherparse::Icmpv4Header::from_slice(&[
                ty, code, 0, 0, extra[0], extra[1], extra[2], extra[3],
            ])
            .unwrap()
            .0
            .icmp_type;
            PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
                .ipv4(s.octets(), d.octets(), 64)
                .icmpv4(t)
                .write(&mut out, q)
                .unwrap();
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let t = etherparse::Icmpv6Header::from_slice(&[
                ty, code, 0, 0, extra[0], extra[1], extra[2], extra[3],
            ])
            .unwrap()
            .0
            .icmp_type;
            PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
                .ipv6(s.octets(), d.octets(), 64)
                .icmpv6(t)
                .write(&mut out, q)
                .unwrap();
        }
        _ => panic!(),
    }
    out
}

#[test]
fn icmp_errors_follow_their_connections_both_ways() {
    let mut d = director(NAT4);
    let c = ("203.0.113.7", 40000);
    let o = run(
        &mut d,
        &frame(c, ("10.0.0.1", 80), L4::Tcp(SYN), 64, &[]),
        Side::Client,
        1,
    );
    let rs = forwarded(&o).next_hop;
    let rs_s = rs.to_string();

    // A router on the client's path says our reply (VIP -> client) was too big.
    let reply = frame(("10.0.0.1", 80), c, L4::Tcp(SYNACK), 64, &[]);
    let err = icmp_error("198.18.0.1", "10.0.0.1", 3, 4, [0, 0, 0x05, 0x00], &reply);
    let o = run(&mut d, &err, Side::Client, 2);
    let f = forwarded(&o);
    assert_eq!((f.to, f.next_hop), (Side::Server, rs));
    assert_eq!(
        addrs(&o.bytes).1,
        rs,
        "outer destination NAT-ed to the real server"
    );
    // The quoted packet now reads as sent by the real server.
    let quoted_src =
        IpAddr::from(<[u8; 4]>::try_from(&o.bytes[14 + 20 + 8 + 12..14 + 20 + 8 + 16]).unwrap());
    assert_eq!(quoted_src, rs);
    assert_eq!(
        u16::from_be_bytes([o.bytes[14 + 20 + 8 + 20], o.bytes[14 + 20 + 8 + 21]]),
        8080
    );

    // The real server says the client's packet (client -> RS after NAT) was unreachable.
    let to_rs = frame(c, (rs_s.as_str(), 8080), L4::Tcp(ACK), 64, &[]);
    let err = icmp_error(&rs_s, "203.0.113.7", 3, 3, [0; 4], &to_rs);
    assert_eq!(d.side_of(&err), Side::Server);
    let o = run(&mut d, &err, Side::Server, 3);
    let f = forwarded(&o);
    assert_eq!(f.to, Side::Client);
    assert_eq!(addrs(&o.bytes).0, ip("10.0.0.1"), "outer source is the VIP");
    let quoted_dst =
        IpAddr::from(<[u8; 4]>::try_from(&o.bytes[14 + 20 + 8 + 16..14 + 20 + 8 + 20]).unwrap());
    assert_eq!(quoted_dst, ip("10.0.0.1"));

    // A corrupt error is dropped, as IPVS drops it.
    let mut bad = icmp_error("198.18.0.1", "10.0.0.1", 3, 4, [0, 0, 0x05, 0x00], &reply);
    bad[14 + 20 + 2] ^= 0x40;
    assert_eq!(
        run(&mut d, &bad, Side::Client, 2).verdict,
        Verdict::Drop(DropReason::IcmpBadChecksum)
    );
    // An error about no connection of ours is the host's.
    let stray = frame(("10.0.0.1", 80), ("203.0.113.99", 1), L4::Tcp(ACK), 64, &[]);
    let err = icmp_error("198.18.0.1", "10.0.0.1", 3, 1, [0; 4], &stray);
    assert_eq!(
        run(&mut d, &err, Side::Client, 4).verdict,
        Verdict::Pass(PassReason::NoConnection)
    );
    // A ping to the VIP is not balanced.
    let mut ping = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, DIRECTOR_MAC)
        .ipv4([203, 0, 113, 7], [10, 0, 0, 1], 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut ping, b"ping")
        .unwrap();
    assert_eq!(
        run(&mut d, &ping, Side::Client, 5).verdict,
        Verdict::Pass(PassReason::IcmpNotError)
    );
}

#[test]
fn the_director_replies_port_unreachable_time_exceeded_and_too_big() {
    let rules = "-A -t 10.0.0.1:80 -s rr\n\
                 -a -t 10.0.0.1:80 -r 192.168.10.1:80 -g -w 0\n\
                 -A -t 10.0.0.2:80 -s rr\n\
                 -a -t 10.0.0.2:80 -r 192.168.10.2:80 -m\n\
                 -A -t [2001:db8::2]:80 -s rr\n\
                 -a -t [2001:db8::2]:80 -r [fd00::22]:80 -m\n";
    let mut d = director(rules);
    // No real server with weight: port unreachable from the VIP (ip_vs_leave).
    let syn = frame(("203.0.113.7", 1), ("10.0.0.1", 80), L4::Tcp(SYN), 64, &[]);
    let o = run(&mut d, &syn, Side::Client, 1);
    let Verdict::Reply(r) = o.verdict else {
        panic!("{:?}", o.verdict)
    };
    assert_eq!((r.to, r.kind), (Side::Client, IcmpReply::PortUnreachable));
    assert_eq!(addrs(&o.bytes).0, ip("10.0.0.1"));
    assert_eq!(addrs(&o.bytes).1, ip("203.0.113.7"));
    assert_eq!(&o.bytes[0..6], &CLIENT_MAC, "back to where it came from");
    assert!(d.conns().is_empty());

    // TTL 1: time exceeded, and no connection is left behind.
    let syn = frame(("203.0.113.7", 2), ("10.0.0.2", 80), L4::Tcp(SYN), 1, &[]);
    let o = run(&mut d, &syn, Side::Client, 1);
    assert!(matches!(o.verdict, Verdict::Reply(r) if r.kind == IcmpReply::TimeExceeded));
    assert!(d.conns().is_empty());

    // Over the path MTU: fragmentation needed (DF set by etherparse) / Packet Too Big.
    let mut d = director(rules);
    let mut cfg_d = Director::new(
        DirectorConfig {
            mtu: 1400,
            ..*d.config()
        },
        ConnConfig::default(),
        SchedConfig::default(),
        Instant::ZERO,
    );
    cfg_d.apply_rules(rules).unwrap();
    cfg_d.set_neighbour(ip("192.168.10.2"), [2; 6]);
    cfg_d.set_neighbour(ip("fd00::22"), [2; 6]);
    let c = ("203.0.113.7", 3);
    run(
        &mut cfg_d,
        &frame(c, ("10.0.0.2", 80), L4::Tcp(SYN), 64, &[]),
        Side::Client,
        1,
    );
    let big = frame(c, ("10.0.0.2", 80), L4::Tcp(ACK), 64, &[0; 1400]);
    let o = run(&mut cfg_d, &big, Side::Client, 2);
    assert!(matches!(o.verdict, Verdict::Reply(r) if r.kind == IcmpReply::TooBig { mtu: 1400 }));
    let c6 = ("2001:db8:ff::7", 3);
    run(
        &mut cfg_d,
        &frame(c6, ("2001:db8::2", 80), L4::Tcp(SYN), 64, &[]),
        Side::Client,
        1,
    );
    let big6 = frame(c6, ("2001:db8::2", 80), L4::Tcp(ACK), 64, &[0; 1400]);
    let o = run(&mut cfg_d, &big6, Side::Client, 2);
    assert!(matches!(o.verdict, Verdict::Reply(r) if r.kind == IcmpReply::TooBig { mtu: 1400 }));
    assert_eq!(cfg_d.stats().replied(IcmpReply::TooBig { mtu: 0 }), 2);
    // Without a neighbour entry a packet cannot be sent.
    d.remove_neighbour(&ip("192.168.10.2"));
    let syn = frame(("203.0.113.7", 9), ("10.0.0.2", 80), L4::Tcp(SYN), 64, &[]);
    assert_eq!(
        run(&mut d, &syn, Side::Client, 1).verdict,
        Verdict::Drop(DropReason::NoNeighbour)
    );
}

#[test]
fn not_ip_fragments_and_garbage() {
    let mut d = director(NAT4);
    let mut arp = vec![0xffu8; 6];
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    assert_eq!(
        run(&mut d, &arp, Side::Client, 1).verdict,
        Verdict::Pass(PassReason::NotIp)
    );
    let mut bad = frame(("203.0.113.7", 1), ("10.0.0.1", 80), L4::Tcp(SYN), 64, &[]);
    bad[14] = 0x43; // IHL 3
    assert_eq!(
        run(&mut d, &bad, Side::Client, 1).verdict,
        Verdict::Pass(PassReason::Malformed)
    );
    // A later fragment to the VIP: dropped (no reassembly); to another address: not ours.
    let mut frag = frame(("203.0.113.7", 1), ("10.0.0.1", 80), L4::Udp, 64, &[0; 40]);
    frag[14 + 6] = 0x00;
    frag[14 + 7] = 0x10; // offset 16 * 8
    assert_eq!(
        run(&mut d, &frag, Side::Client, 1).verdict,
        Verdict::Drop(DropReason::Fragment)
    );
    for b in 0..=255u8 {
        let mut f = frame(("203.0.113.7", 1), ("10.0.0.1", 80), L4::Tcp(SYN), 64, &[]);
        let i = b as usize % f.len();
        f[i] ^= b;
        f.truncate(14 + (b as usize % 60));
        let _ = run_raw(&mut d, &f);
    }
}

fn run_raw(d: &mut Director, f: &[u8]) -> Verdict {
    let mut buf = f.to_vec();
    d.process(&mut buf, Side::Client, Instant::from_millis(1))
}

#[test]
fn batch_gives_what_single_frames_give() {
    let mut frames = Vec::new();
    for i in 0..300u16 {
        let port = 1000 + (i % 97);
        let flags = match i % 5 {
            0 => SYN,
            1 | 2 => ACK,
            3 => FINACK,
            _ => RST,
        };
        frames.push((
            frame(
                ("203.0.113.7", port),
                ("10.0.0.1", 80),
                L4::Tcp(flags),
                64,
                b"x",
            ),
            Side::Client,
        ));
        if i % 7 == 0 {
            frames.push((
                frame(
                    ("192.168.10.1", 8080),
                    ("203.0.113.7", port),
                    L4::Tcp(ACK),
                    64,
                    b"y",
                ),
                Side::Server,
            ));
        }
    }
    let mut single = director(NAT4);
    let mut batch = director(NAT4);
    let mut expected = Vec::new();
    for (f, side) in &frames {
        expected.push(run(&mut single, f, *side, 5));
    }
    // The batch form takes one side at a time: split into runs of the same side.
    let mut i = 0;
    while i < frames.len() {
        let side = frames[i].1;
        let mut j = i;
        while j < frames.len() && frames[j].1 == side {
            j += 1;
        }
        let mut bufs: Vec<Vec<u8>> = frames[i..j]
            .iter()
            .map(|(f, _)| {
                let mut b = vec![0u8; HEADROOM + f.len() + 1600];
                b[HEADROOM..HEADROOM + f.len()].copy_from_slice(f);
                b
            })
            .collect();
        let lens: Vec<usize> = frames[i..j].iter().map(|(f, _)| f.len()).collect();
        let mut fm: Vec<FrameMut<'_>> = bufs
            .iter_mut()
            .zip(&lens)
            .map(|(b, &l)| FrameMut {
                buf: b,
                start: HEADROOM,
                end: HEADROOM + l,
            })
            .collect();
        let mut out = vec![Verdict::Pass(PassReason::NotIp); fm.len()];
        batch.process_batch(&mut fm, &Rx::new(side), Instant::from_millis(5), &mut out);
        for (k, v) in out.iter().enumerate() {
            assert_eq!(*v, expected[i + k].verdict, "frame {}", i + k);
            if let Verdict::Forward(f) = v {
                assert_eq!(&bufs[k][f.start..f.end], &expected[i + k].bytes[..]);
            }
        }
        i = j;
    }
    assert_eq!(single.stats(), batch.stats());
    assert_eq!(single.conns().len(), batch.conns().len());
}

#[test]
fn rules_apply_all_or_nothing_and_save_round_trips() {
    let mut d = director(NAT4);
    let before = d.save();
    // Line 3 names a service that does not exist: nothing of the text applies.
    let e = d
        .apply_rules("-A -t 10.0.0.7:80 -s rr\n-a -t 10.0.0.7:80 -r 192.168.1.1\n-a -t 10.0.0.8:80 -r 192.168.1.1\n")
        .unwrap_err();
    assert_eq!(e.to_string(), "line 3: no service -t 10.0.0.8:80");
    assert_eq!(d.save(), before);
    // A parse error names line and column.
    let e = d
        .apply_rules("-A -t 10.0.0.7:80\n-a -t 10.0.0.7:80 -r 192.168.1.1 -w x\n")
        .unwrap_err();
    assert!(e.to_string().starts_with("line 2, column 37"), "{e}");
    assert_eq!(d.save(), before);

    let text = "--set 600 60 120\n\
                -A -t 10.0.0.1:80 -s wlc -p 300 -M 255.255.255.0\n\
                -a -t 10.0.0.1:80 -r 192.168.10.1:8080 -m -w 3 -x 100 -y 50\n\
                -a -t 10.0.0.1:80 -r 192.168.10.2:8080 -m -w 1\n\
                -A -u [2001:db8::5]:53 -s mh -b mh-fallback,mh-port\n\
                -a -u [2001:db8::5]:53 -r [fd00::51]:53 -i --tun-type gue --tun-port 6080 --tun-csum -w 1\n\
                -A -f 7 -s sh\n\
                -a -f 7 -r 192.168.10.9:0 -g -w 1\n";
    let mut d = director("");
    d.apply_rules(text).unwrap();
    let saved = d.save();
    let mut again = director("");
    again.apply_rules(&saved).unwrap();
    assert_eq!(again.save(), saved);
    // Same services, same servers, same list order.
    for (a, b) in d.services().iter().zip(again.services().iter()) {
        assert_eq!(a.key(), b.key());
        let la: Vec<_> = a.pool().dests().iter().map(|(_, x)| x.config()).collect();
        let lb: Vec<_> = b.pool().dests().iter().map(|(_, x)| x.config()).collect();
        assert_eq!(la, lb);
    }
    assert!(saved.starts_with("--set 600 60 120\n"));
    assert!(saved.contains("-A -t 10.0.0.1:80 -s wlc -p 300 -M 255.255.255.0\n"));
}

/// `--tun-remcsum`: every GUE packet gets its UDP checksum (IPVS computes it when CSUM or
/// REMCSUM is set), and one whose inner checksum an offload left partial also carries the
/// REMCSUM option, so the real server completes it.
#[test]
fn gue_remote_checksum_offload() {
    let mut d = director(
        "-A -t 10.0.0.4:80 -s rr\n\
         -a -t 10.0.0.4:80 -r 192.168.30.2 -i --tun-type gue --tun-port 6080 --tun-remcsum\n",
    );
    let syn = frame(("203.0.113.7", 1), ("10.0.0.4", 80), L4::Tcp(SYN), 64, &[]);
    let o = run(&mut d, &syn, Side::Client, 1);
    let f = forwarded(&o);
    assert_eq!(f.end - f.start, syn.len() + 20 + 8 + 4);
    let udp = 14 + 20;
    assert_ne!(
        &o.bytes[udp + 6..udp + 8],
        &[0, 0],
        "the UDP checksum is computed"
    );
    assert_eq!(&o.bytes[udp + 8..udp + 12], &[0, 4, 0, 0], "no option");

    // The same connection's next segment, its checksum left partial by a local offload.
    let mut ack = frame(
        ("203.0.113.7", 1),
        ("10.0.0.4", 80),
        L4::Tcp(ACK),
        64,
        b"data",
    );
    let (l4, len) = (14 + 20, ack.len() - 14 - 20);
    let ph = lvs::wire::checksum::pseudo_header_v4([203, 0, 113, 7], [10, 0, 0, 4], 6, len as u16);
    ack[l4 + 16..l4 + 18].copy_from_slice(&lvs::wire::checksum::fold(ph).to_be_bytes());
    let mut buf = vec![0u8; HEADROOM + ack.len()];
    buf[HEADROOM..].copy_from_slice(&ack);
    let rx = Rx {
        checksum: ChecksumMode::Partial,
        ..Rx::new(Side::Client)
    };
    let end = buf.len();
    let Verdict::Forward(f) = d.process_at(&mut buf, HEADROOM, end, &rx, Instant::from_millis(2))
    else {
        panic!("forwarded");
    };
    let out = &buf[f.start..f.end];
    assert_eq!(
        out.len(),
        ack.len() + 20 + 8 + 4 + lvs::rewrite::GUE_REMCSUM_LEN
    );
    assert_eq!(
        &out[udp + 8..udp + 20],
        &[2, 4, 0, 1, 0x80, 0, 0, 0, 0, 20, 0, 36]
    );
    let opts = ClassifyOptions {
        gue_port: Some(6080),
    };
    let Ok(Classified::Ip(lo)) = classify(out, LinkType::Ethernet, &opts) else {
        panic!("classifies");
    };
    assert_eq!(lvs::rewrite::verify_outer(out, &lo), Ok(()));
    let dec = lvs::rewrite::decap(out, &lo).unwrap();
    let mut rx_side = out.to_vec();
    assert!(lvs::rewrite::complete_remcsum(&mut rx_side, &dec));
    // The real server's view: the client's segment, TTL decremented, checksum complete.
    let inner = &rx_side[dec.start..dec.end];
    let c = check_frame(
        &[&[2u8, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 8, 0][..], inner].concat(),
        true,
        None,
    )
    .unwrap();
    assert!(c.all_good(), "{c:?}");
}

#[test]
fn fwmark_services_take_marked_packets() {
    let mut d = director("-A -f 7 -s rr\n-a -f 7 -r 192.168.10.9 -g\n");
    let syn = frame(
        ("203.0.113.7", 1),
        ("10.0.0.77", 443),
        L4::Tcp(SYN),
        64,
        &[],
    );
    assert_eq!(
        run(&mut d, &syn, Side::Client, 1).verdict,
        Verdict::Pass(PassReason::NotOurs)
    );
    let mut buf = syn.clone();
    let rx = Rx {
        fwmark: 7,
        ..Rx::new(Side::Client)
    };
    let end = buf.len();
    let v = d.process_at(&mut buf, 0, end, &rx, Instant::from_millis(1));
    assert!(matches!(v, Verdict::Forward(f) if f.next_hop == ip("192.168.10.9")));
    // The rest of the connection has no mark to show: it is found by its connection.
    let ack = frame(
        ("203.0.113.7", 1),
        ("10.0.0.77", 443),
        L4::Tcp(ACK),
        64,
        &[],
    );
    assert!(matches!(
        run(&mut d, &ack, Side::Client, 2).verdict,
        Verdict::Forward(_)
    ));
}
