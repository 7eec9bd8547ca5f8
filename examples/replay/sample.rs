//! The bundled sample (`examples/data/sample.{pcap,rules,neigh}`), built deterministically so
//! that it can be regenerated (`cargo run --example make_sample`) and checked byte for byte
//! (`tests/pcap_replay.rs`).
//!
//! The capture is what a director's interface would see: clients' frames from two routers
//! (one VLAN-tagged now and then), NAT real servers' replies, and a handful of odd frames.
//! Eight services over four VIPs and three forwarding methods:
//!
//! ```text
//! TCP  10.0.0.1:80        wlc  NAT   192.168.10.1-3:8080     90 connections, some over VLAN 100
//! TCP  10.0.0.2:443       wrr  DR    192.168.20.1-2          40
//! TCP  10.0.0.3:80        rr   TUN   192.168.30.1 (IPIP), .2 (GUE 6080)   24
//! TCP  10.0.0.4:80        rr   (no real server)
//! TCP  [2001:db8::1]:80   mh   NAT   [2001:db8:10::1-2]:8080 36
//! TCP  [2001:db8::3]:443  lc   TUN   [2001:db8:30::1-2]      14 (IPv6 in IPv6)
//! UDP  10.0.0.1:53        rr   NAT   192.168.10.1-2          50 request/response flows
//! UDP  [2001:db8::2]:53   sh   DR    [2001:db8:20::1-2]      16
//! ```
//!
//! TCP connections go through their whole life: SYN, SYN-ACK (from the real server, for NAT),
//! data both ways, then FIN/ACK or an RST. Then the odd ones: ICMP errors about NAT
//! connections from both sides (fragmentation needed, Packet Too Big, port unreachable), a DR
//! real server's reply leaking back through the director, SYNs to a VIP with no real server,
//! a SYN with TTL 1, an IPv6 packet too big for the tunnel, a fragmented datagram, a segment
//! without a connection (one of them after its connection expired), pings, ARP and two
//! malformed frames.
//!
//! Each frame carries the verdict it should get, said by the script that made it (a SYN-ACK
//! from a NAT real server goes to the client, a SYN with TTL 1 gets time exceeded, ...). A
//! director runs alongside the generator only to learn which real server each connection got
//! (the server-side frames must come from it) and what it sent (ICMP errors quote that).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::icmpv4::DestUnreachableHeader;
use etherparse::icmpv6::DestUnreachableCode;
use etherparse::{
    ArpEthIpv4Packet, ArpOperation, EtherType, Ethernet2Header, IcmpEchoHeader, Icmpv4Type,
    Icmpv6Type, IpFragOffset, IpHeaders, IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header,
    PacketBuilder, TcpHeader, UdpHeader, VlanId,
};
use lvs::config::ServiceKey;
use lvs::director::{DropReason, PassReason, Side, Verdict};
use lvs::flow::Protocol;
use lvs::rewrite::IcmpReply;
use lvs::time::Instant;
use lvs::wire::LinkType;

use super::capture::Writer;
use super::engine::{Engine, Setup};

/// The first frame's time: 2026-01-01T00:00:00Z.
pub const START_NS: u64 = 1_767_225_600 * 1_000_000_000;

/// The sample run's network options (the paths are added by the caller).
pub const ARGS: &[&str] = &[
    "--mac",
    "02:00:00:00:00:01",
    "--gateway",
    "203.0.113.254",
    "--tunnel-src-v4",
    "192.168.30.254",
    "--tunnel-src-v6",
    "2001:db8:30::fe",
    "--mtu",
    "1500",
];

/// The director's MAC (`--mac` above).
pub const DIRECTOR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// The client-side router most clients come through (203.0.113.254, `--gateway`).
pub const ROUTER_A: [u8; 6] = [0x02, 0, 0, 0, 0xfe, 0x01];
/// The router of the 192.0.2.0/24 and 2001:db8:c2::/64 clients.
pub const ROUTER_B: [u8; 6] = [0x02, 0, 0, 0, 0xfe, 0x02];
/// Where the neighbour file sends replies to [`PINNED_CLIENT`] (an asymmetric return path).
pub const ROUTER_C: [u8; 6] = [0x02, 0, 0, 0, 0xfe, 0x03];
/// A client whose MAC the neighbour file gives.
pub const PINNED_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 254);
const ROUTER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xfe, 0, 0, 0, 0, 1);

/// The rules, in the order `ipvsadm -S -n` (and [`lvs::director::Director::save`]) prints them.
pub const RULES: &str = "\
# The bundled sample's services (written by examples/make_sample.rs), ipvsadm -S -n format.
-A -t 10.0.0.1:80 -s wlc
-a -t 10.0.0.1:80 -r 192.168.10.1:8080 -m -w 1
-a -t 10.0.0.1:80 -r 192.168.10.2:8080 -m -w 1
-a -t 10.0.0.1:80 -r 192.168.10.3:8080 -m -w 2
-A -t 10.0.0.2:443 -s wrr
-a -t 10.0.0.2:443 -r 192.168.20.1:443 -g -w 3
-a -t 10.0.0.2:443 -r 192.168.20.2:443 -g -w 1
-A -t 10.0.0.3:80 -s rr
-a -t 10.0.0.3:80 -r 192.168.30.1:80 -i -w 1
-a -t 10.0.0.3:80 -r 192.168.30.2:80 -i --tun-type gue --tun-port 6080 -w 1
-A -t 10.0.0.4:80 -s rr
-A -t [2001:db8::1]:80 -s mh
-a -t [2001:db8::1]:80 -r [2001:db8:10::1]:8080 -m -w 1
-a -t [2001:db8::1]:80 -r [2001:db8:10::2]:8080 -m -w 1
-A -t [2001:db8::3]:443 -s lc
-a -t [2001:db8::3]:443 -r [2001:db8:30::1]:443 -i -w 1
-a -t [2001:db8::3]:443 -r [2001:db8:30::2]:443 -i -w 1
-A -u 10.0.0.1:53 -s rr
-a -u 10.0.0.1:53 -r 192.168.10.1:53 -m -w 1
-a -u 10.0.0.1:53 -r 192.168.10.2:53 -m -w 1
-A -u [2001:db8::2]:53 -s sh
-a -u [2001:db8::2]:53 -r [2001:db8:20::1]:53 -g -w 1
-a -u [2001:db8::2]:53 -r [2001:db8:20::2]:53 -g -w 1
";

/// The services, in [`RULES`] order.
pub const SERVICES: [(Protocol, &str, u16); 8] = [
    (Protocol::Tcp, "10.0.0.1", 80),
    (Protocol::Tcp, "10.0.0.2", 443),
    (Protocol::Tcp, "10.0.0.3", 80),
    (Protocol::Tcp, "10.0.0.4", 80),
    (Protocol::Tcp, "2001:db8::1", 80),
    (Protocol::Tcp, "2001:db8::3", 443),
    (Protocol::Udp, "10.0.0.1", 53),
    (Protocol::Udp, "2001:db8::2", 53),
];
const NAT4: usize = 0;
const DR4: usize = 1;
const TUN4: usize = 2;
const NAT6: usize = 4;
const TUN6: usize = 5;
const DNS4: usize = 6;
const DNS6: usize = 7;

/// The key of service `i` of [`SERVICES`].
pub fn service_key(i: usize) -> ServiceKey {
    let (proto, addr, port) = SERVICES[i];
    ServiceKey::Addr {
        proto,
        addr: addr.parse().expect("a sample address"),
        port,
    }
}

/// The real servers, each on the director's segment with a MAC made from its address.
const REAL_SERVERS: [&str; 13] = [
    "192.168.10.1",
    "192.168.10.2",
    "192.168.10.3",
    "192.168.20.1",
    "192.168.20.2",
    "192.168.30.1",
    "192.168.30.2",
    "2001:db8:10::1",
    "2001:db8:10::2",
    "2001:db8:20::1",
    "2001:db8:20::2",
    "2001:db8:30::1",
    "2001:db8:30::2",
];

/// A real server's MAC: `02:00` and its IPv4 address, or `02:06` and the last bytes of its
/// IPv6 address.
pub fn server_mac(ip: IpAddr) -> [u8; 6] {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            [0x02, 0, o[0], o[1], o[2], o[3]]
        }
        IpAddr::V6(a) => {
            let o = a.octets();
            [0x02, 0x06, o[4], o[5], o[14], o[15]]
        }
    }
}

fn mac_text(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The neighbour file.
pub fn neigh_text() -> String {
    let mut t = String::from(
        "# The bundled sample's neighbours (written by examples/make_sample.rs): IP MAC per line.\n\
         # The client-side router, the sample run's --gateway.\n",
    );
    t.push_str(&format!("{GATEWAY_V4} {}\n", mac_text(ROUTER_A)));
    t.push_str(
        "# A client whose frames come through router A but whose replies must go through\n\
         # router C: this entry wins over the MAC learnt from its frames.\n",
    );
    t.push_str(&format!("{PINNED_CLIENT} {}\n", mac_text(ROUTER_C)));
    t.push_str("# The real servers.\n");
    for s in REAL_SERVERS {
        let ip: IpAddr = s.parse().expect("a sample address");
        t.push_str(&format!("{ip} {}\n", mac_text(server_mac(ip))));
    }
    t
}

/// The verdict a frame should get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Forwarded to a real server.
    ToServer,
    /// Forwarded to a client.
    ToClient,
    /// Answered with this ICMP error.
    Reply(IcmpReply),
    /// Passed on unchanged.
    Pass(PassReason),
    /// Dropped.
    Drop(DropReason),
}

impl Expect {
    /// Whether `v` is this verdict.
    pub fn matches(self, v: &Verdict) -> bool {
        match (self, v) {
            (Expect::ToServer, Verdict::Forward(f)) => f.to == Side::Server,
            (Expect::ToClient, Verdict::Forward(f)) => f.to == Side::Client,
            (Expect::Reply(k), Verdict::Reply(r)) => r.kind == k,
            (Expect::Pass(a), Verdict::Pass(b)) => a == *b,
            (Expect::Drop(a), Verdict::Drop(b)) => a == *b,
            _ => false,
        }
    }
}

/// One frame of the sample and what the director should make of it.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Capture time, nanoseconds since the epoch.
    pub ts_ns: u64,
    /// The Ethernet frame.
    pub data: Vec<u8>,
    /// Its verdict.
    pub expect: Expect,
    /// The service whose counters it adds to (index into [`SERVICES`]).
    pub service: Option<usize>,
    /// Whether it opens a connection (counted in `conns`).
    pub opens: bool,
    /// The flow (script) it belongs to.
    pub flow: usize,
}

/// The sample: the capture, the frames it holds, the rules and the neighbour file.
#[derive(Clone, Debug)]
pub struct Sample {
    /// The frames, in capture order.
    pub frames: Vec<Frame>,
    /// The pcap file.
    pub pcap: Vec<u8>,
    /// The rules file.
    pub rules: String,
    /// The neighbour file.
    pub neigh: String,
}

/// splitmix64: a tiny generator whose sequence never changes (the sample must not).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// In `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

const MS: u64 = 1_000;
const SEC: u64 = 1_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Client,
    Server,
}

#[derive(Clone, Debug)]
enum What {
    /// A TCP segment of the flow with these flags and this much data.
    Tcp { who: Who, flags: u8, len: usize },
    /// A client SYN with this TTL.
    SynTtl(u8),
    /// A UDP datagram of the flow.
    Udp { who: Who, payload: Vec<u8> },
    /// Fragment 1 or 2 of a client's UDP datagram carrying `payload`.
    UdpFragment { second: bool, payload: Vec<u8> },
    /// An ICMP error from the client side about the last packet the director sent the
    /// client: from the router (fragmentation needed, Packet Too Big) or the client itself
    /// (port unreachable).
    ClientError { router: bool },
    /// An ICMP error from the real server about the last packet the director sent it.
    ServerError,
    /// A frame made beforehand.
    Raw(Vec<u8>),
}

struct Step {
    /// Microseconds after the previous step (after the flow's start for the first).
    gap: u64,
    what: What,
    expect: Expect,
}

struct Flow {
    service: Option<usize>,
    client: IpAddr,
    cport: u16,
    vip: IpAddr,
    vport: u16,
    router: [u8; 6],
    vlan: Option<u16>,
    start: u64,
    steps: Vec<Step>,
    /// The real server the director chose (address, port).
    rs: Option<(IpAddr, u16)>,
    cseq: u32,
    sseq: u32,
    /// IP packets the director last sent to the client and to the real server.
    to_client: Vec<u8>,
    to_server: Vec<u8>,
}

fn step(gap: u64, what: What, expect: Expect) -> Step {
    Step { gap, what, expect }
}

fn tcp(gap: u64, who: Who, flags: u8, len: usize) -> Step {
    let expect = match who {
        Who::Client => Expect::ToServer,
        Who::Server => Expect::ToClient,
    };
    step(gap, What::Tcp { who, flags, len }, expect)
}

/// Text of exactly `len` bytes: `head`, a filler, `tail` (cut short if `len` is small).
fn text(head: &str, len: usize, tail: &str) -> Vec<u8> {
    let fill = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut v: Vec<u8> = head.bytes().collect();
    while v.len() + tail.len() < len {
        v.push(fill[v.len() % fill.len()]);
    }
    v.extend_from_slice(tail.as_bytes());
    v.truncate(len);
    v
}

/// An HTTP response of exactly `len` bytes whose Content-Length is right.
fn http_response(len: usize) -> Vec<u8> {
    let head = |body: usize| format!("HTTP/1.1 200 OK\r\nContent-Length: {body}\r\n\r\n");
    let body = (1..=4)
        .map(|digits| len.saturating_sub(37 + digits))
        .find(|b| head(*b).len() + b == len)
        .unwrap_or(0);
    text(&head(body), len, "")
}

fn dns_name(id: u16) -> Vec<u8> {
    let mut q = Vec::new();
    for label in [format!("host{id}").as_str(), "example", "com"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q
}

/// A DNS query for `host<id>.example.com`, A or AAAA.
fn dns_query(id: u16, v6: bool, pad: usize) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, if pad > 0 { 1 } else { 0 }]);
    m.extend_from_slice(&dns_name(id));
    m.extend_from_slice(&[0, if v6 { 28 } else { 1 }, 0, 1]);
    if pad > 0 {
        // An EDNS OPT record with a padding option (RFC 7830): a large query.
        m.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0]);
        m.extend_from_slice(&((pad + 4) as u16).to_be_bytes());
        m.extend_from_slice(&[0, 12]);
        m.extend_from_slice(&(pad as u16).to_be_bytes());
        m.extend(std::iter::repeat_n(0, pad));
    }
    m
}

/// The answer to [`dns_query`].
fn dns_answer(id: u16, v6: bool) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
    m.extend_from_slice(&dns_name(id));
    let t = if v6 { 28 } else { 1 };
    m.extend_from_slice(&[0, t, 0, 1]);
    m.extend_from_slice(&[0xc0, 0x0c, 0, t, 0, 1, 0, 0, 0x0e, 0x10]);
    if v6 {
        m.extend_from_slice(&[0, 16, 0x20, 0x01, 0x0d, 0xb8, 0, 0x99]);
        m.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        m.extend_from_slice(&id.to_be_bytes());
    } else {
        m.extend_from_slice(&[0, 4, 198, 18]);
        m.extend_from_slice(&id.to_be_bytes());
    }
    m
}

/// The link layer of a frame: Ethernet, perhaps one VLAN tag.
#[derive(Clone, Copy)]
struct Link {
    src: [u8; 6],
    dst: [u8; 6],
    vlan: Option<u16>,
}

enum L4 {
    Tcp(TcpHeader),
    Udp(u16, u16),
    Icmp4(Icmpv4Type),
    Icmp6(Icmpv6Type),
}

/// Builds an Ethernet frame with etherparse (lengths and checksums computed by it).
fn frame(
    link: Link,
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    id: u16,
    l4: L4,
    payload: &[u8],
) -> Vec<u8> {
    let proto = match l4 {
        L4::Tcp(_) => IpNumber::TCP,
        L4::Udp(..) => IpNumber::UDP,
        L4::Icmp4(_) => IpNumber::ICMP,
        L4::Icmp6(_) => IpNumber::IPV6_ICMP,
    };
    let ip = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut h = Ipv4Header::new(0, ttl, proto, s.octets(), d.octets()).expect("header");
            h.identification = id;
            h.dont_fragment = true;
            IpHeaders::Ipv4(h, Default::default())
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => IpHeaders::Ipv6(
            Ipv6Header {
                traffic_class: 0,
                flow_label: Ipv6FlowLabel::try_new((id as u32) << 4).expect("label"),
                payload_length: 0,
                next_header: proto,
                hop_limit: ttl,
                source: s.octets(),
                destination: d.octets(),
            },
            Default::default(),
        ),
        _ => panic!("mixed address families"),
    };
    let eth = PacketBuilder::ethernet2(link.src, link.dst);
    let b = match link.vlan {
        Some(v) => eth.single_vlan(VlanId::try_new(v).expect("vlan")).ip(ip),
        None => eth.ip(ip),
    };
    let mut out = Vec::new();
    let r = match l4 {
        L4::Tcp(h) => b.tcp_header(h).write(&mut out, payload),
        L4::Udp(s, d) => b.udp(s, d).write(&mut out, payload),
        L4::Icmp4(t) => b.icmpv4(t).write(&mut out, payload),
        L4::Icmp6(t) => b.icmpv6(t).write(&mut out, payload),
    };
    r.expect("a frame etherparse can write");
    out
}

fn ethernet_header(link: Link, ether_type: EtherType) -> Vec<u8> {
    let mut out = Vec::new();
    Ethernet2Header {
        source: link.src,
        destination: link.dst,
        ether_type,
    }
    .write(&mut out)
    .expect("header");
    out
}

/// The IP packet in an Ethernet frame (after any VLAN tag).
fn ip_of(frame: &[u8]) -> &[u8] {
    let l2 = if frame.len() > 14 && frame[12..14] == [0x81, 0x00] {
        18
    } else {
        14
    };
    frame.get(l2..).unwrap_or(&[])
}

/// What an ICMP error quotes of `packet`: IPv4, the header and 8 bytes (RFC 792); IPv6, as
/// much as fits a 1280-byte error (RFC 4443).
fn quote(packet: &[u8]) -> Vec<u8> {
    let n = if packet.first().map(|b| b >> 4) == Some(4) {
        ((packet[0] & 0x0f) as usize) * 4 + 8
    } else {
        1280 - 48
    };
    packet[..n.min(packet.len())].to_vec()
}

struct Gen {
    rng: Rng,
    flows: Vec<Flow>,
    next_port: u16,
    ip_id: u16,
}

impl Gen {
    fn client(&mut self, v6: bool) -> (IpAddr, [u8; 6]) {
        // Two thirds through router A, a third through router B.
        let b = self.rng.range(0, 3) == 0;
        let host = self.rng.range(1, if b { 40 } else { 80 }) as u16;
        match (v6, b) {
            (false, false) => (
                IpAddr::V4(Ipv4Addr::new(198, 51, 100, 100 + host as u8)),
                ROUTER_A,
            ),
            (false, true) => (IpAddr::V4(Ipv4Addr::new(192, 0, 2, host as u8)), ROUTER_B),
            (true, false) => (
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xc1, 0, 0, 0, 0, host)),
                ROUTER_A,
            ),
            (true, true) => (
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xc2, 0, 0, 0, 0, host)),
                ROUTER_B,
            ),
        }
    }

    fn port(&mut self) -> u16 {
        self.next_port += 1;
        self.next_port
    }

    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        service: Option<usize>,
        client: (IpAddr, [u8; 6]),
        vip: &str,
        vport: u16,
        start: u64,
        vlan: Option<u16>,
        steps: Vec<Step>,
    ) -> usize {
        let cport = self.port();
        let isn = self.rng.next() as u32;
        let sisn = self.rng.next() as u32;
        self.flows.push(Flow {
            service,
            client: client.0,
            cport,
            vip: vip.parse().expect("a sample address"),
            vport,
            router: client.1,
            vlan,
            start,
            steps,
            rs: None,
            cseq: isn,
            sseq: sisn,
            to_client: Vec::new(),
            to_server: Vec::new(),
        });
        self.flows.len() - 1
    }

    /// A frame of its own at `at`.
    fn add_raw(&mut self, at: u64, frame: Vec<u8>, expect: Expect) {
        let nobody = (IpAddr::V4(Ipv4Addr::UNSPECIFIED), ROUTER_A);
        let steps = vec![step(0, What::Raw(frame), expect)];
        self.add(None, nobody, "0.0.0.0", 0, at, None, steps);
    }

    /// A whole TCP connection through a NAT service.
    fn nat_tcp(&mut self, k: usize, v6: bool) -> Vec<Step> {
        let rtt = self.rng.range(5, 60) * MS;
        let srv = self.rng.range(150, 600);
        let think = self.rng.range(1, 15) * MS;
        let mut s = vec![
            tcp(0, Who::Client, SYN, 0),
            tcp(srv, Who::Server, SYN | ACK, 0),
            tcp(rtt, Who::Client, ACK, 0),
        ];
        let rounds = if k % 4 == 1 { 2 } else { 1 };
        for r in 0..rounds {
            s.push(tcp(
                self.rng.range(100, 400),
                Who::Client,
                PSH | ACK,
                self.rng.range(60, 180) as usize,
            ));
            s.push(tcp(
                srv + think,
                Who::Server,
                PSH | ACK,
                self.rng.range(120, 420) as usize,
            ));
            if r == 0 && k == 5 && !v6 {
                // The response does not fit a link on the way to the client.
                s.push(step(
                    rtt / 2,
                    What::ClientError { router: true },
                    Expect::ToServer,
                ));
            }
            if r == 0 && k == 2 && v6 {
                s.push(step(
                    rtt / 2,
                    What::ClientError { router: true },
                    Expect::ToServer,
                ));
            }
            s.push(tcp(rtt, Who::Client, ACK, 0));
            if r == 0 && k == 3 && v6 {
                // The real server's firewall refuses the client's last segment.
                s.push(step(srv, What::ServerError, Expect::ToClient));
            }
        }
        let linger = self.rng.range(10, 200) * MS;
        if k.is_multiple_of(5) {
            s.push(tcp(linger, Who::Client, RST | ACK, 0));
        } else {
            s.push(tcp(linger, Who::Client, FIN | ACK, 0));
            s.push(tcp(srv, Who::Server, FIN | ACK, 0));
            s.push(tcp(rtt, Who::Client, ACK, 0));
        }
        s
    }

    /// A TCP connection as a DR or TUN director sees it: the client's side only.
    fn one_way_tcp(&mut self, k: usize, leak: bool, too_big: bool) -> Vec<Step> {
        let rtt = self.rng.range(5, 60) * MS;
        let mut s = vec![tcp(0, Who::Client, SYN, 0)];
        if leak {
            // A real server whose default route is the director: its SYN-ACK comes back.
            s.push(tcp(300, Who::Server, SYN | ACK, 0));
            s.last_mut().expect("a step").expect = Expect::Pass(PassReason::NotNat);
        }
        s.push(tcp(rtt, Who::Client, ACK, 0));
        s.push(tcp(
            self.rng.range(100, 400),
            Who::Client,
            PSH | ACK,
            self.rng.range(60, 180) as usize,
        ));
        if too_big {
            // 1500 bytes: fits the link, not the tunnel (40 bytes more).
            s.push(step(
                200,
                What::Tcp {
                    who: Who::Client,
                    flags: PSH | ACK,
                    len: 1500 - 40 - 20,
                },
                Expect::Reply(IcmpReply::TooBig { mtu: 1460 }),
            ));
        }
        s.push(tcp(rtt + self.rng.range(1, 15) * MS, Who::Client, ACK, 0));
        let linger = self.rng.range(10, 200) * MS;
        if k.is_multiple_of(5) {
            s.push(tcp(linger, Who::Client, RST | ACK, 0));
        } else {
            s.push(tcp(linger, Who::Client, FIN | ACK, 0));
            s.push(tcp(rtt, Who::Client, ACK, 0));
        }
        s
    }

    fn dns(&mut self, k: usize, nat: bool, v6: bool) -> Vec<Step> {
        let id = self.rng.next() as u16;
        let srv = self.rng.range(150, 600) + self.rng.range(0, 5) * MS;
        let q = |id| What::Udp {
            who: Who::Client,
            payload: dns_query(id, v6, 0),
        };
        let a = |id| What::Udp {
            who: Who::Server,
            payload: dns_answer(id, v6),
        };
        let mut s = vec![step(0, q(id), Expect::ToServer)];
        if !nat {
            if k.is_multiple_of(3) {
                s.push(step(
                    self.rng.range(1, 3) * SEC,
                    q(id + 1),
                    Expect::ToServer,
                ));
            }
            return s;
        }
        if k == 4 {
            // Nothing listens on the real server: port unreachable instead of an answer.
            s.push(step(srv, What::ServerError, Expect::ToClient));
            return s;
        }
        s.push(step(srv, a(id), Expect::ToClient));
        if k == 3 {
            // The client gave up before the answer came: port unreachable about it.
            s.push(step(
                self.rng.range(1, 20) * MS,
                What::ClientError { router: false },
                Expect::ToServer,
            ));
        }
        if k % 4 == 1 {
            s.push(step(
                self.rng.range(1, 3) * SEC,
                q(id + 1),
                Expect::ToServer,
            ));
            s.push(step(srv, a(id + 1), Expect::ToClient));
        }
        s
    }
}

/// The scripts of every flow.
fn scripts() -> Gen {
    let mut g = Gen {
        rng: Rng(0x6c76_735f_7361_6d70),
        flows: Vec::new(),
        next_port: 30_000,
        ip_id: 1,
    };
    for k in 0..90 {
        let mut steps = g.nat_tcp(k, false);
        let client = if k < 2 {
            (IpAddr::V4(PINNED_CLIENT), ROUTER_A)
        } else {
            g.client(false)
        };
        let start = if k == 0 {
            200 * MS
        } else {
            g.rng.range(0, 14 * SEC)
        };
        if k == 0 {
            // A late segment of the reset connection, after its 10 s in CLOSE.
            steps.push(step(
                12 * SEC,
                What::Tcp {
                    who: Who::Client,
                    flags: ACK,
                    len: 0,
                },
                Expect::Pass(PassReason::NoConnection),
            ));
        }
        let vlan = (k % 10 == 3).then_some(100);
        g.add(Some(NAT4), client, "10.0.0.1", 80, start, vlan, steps);
    }
    for k in 0..40 {
        let steps = g.one_way_tcp(k, k == 1 || k == 2, false);
        let client = g.client(false);
        let start = g.rng.range(0, 14 * SEC);
        g.add(Some(DR4), client, "10.0.0.2", 443, start, None, steps);
    }
    for k in 0..24 {
        let steps = g.one_way_tcp(k, false, false);
        let client = g.client(false);
        let start = g.rng.range(0, 14 * SEC);
        g.add(Some(TUN4), client, "10.0.0.3", 80, start, None, steps);
    }
    for k in 0..36 {
        let steps = g.nat_tcp(k, true);
        let client = g.client(true);
        let start = g.rng.range(0, 14 * SEC);
        g.add(Some(NAT6), client, "2001:db8::1", 80, start, None, steps);
    }
    for k in 0..14 {
        let steps = g.one_way_tcp(k, false, k == 1);
        let client = g.client(true);
        let start = g.rng.range(0, 14 * SEC);
        g.add(Some(TUN6), client, "2001:db8::3", 443, start, None, steps);
    }
    for k in 0..50 {
        let steps = g.dns(k, true, false);
        let client = if k == 0 {
            (IpAddr::V4(PINNED_CLIENT), ROUTER_A)
        } else {
            g.client(false)
        };
        let start = g.rng.range(0, 14 * SEC);
        g.add(Some(DNS4), client, "10.0.0.1", 53, start, None, steps);
    }
    for k in 0..16 {
        let steps = g.dns(k, false, true);
        let client = g.client(true);
        let start = g.rng.range(0, 14 * SEC);
        g.add(Some(DNS6), client, "2001:db8::2", 53, start, None, steps);
    }
    odd_frames(&mut g);
    g
}

/// The frames that are not part of a normal connection.
fn odd_frames(g: &mut Gen) {
    let a = |ip: [u8; 4]| (IpAddr::V4(Ipv4Addr::from(ip)), ROUTER_A);
    let at = |s: u64, ms: u64| s * SEC + ms * MS;
    let router = Link {
        src: ROUTER_A,
        dst: DIRECTOR_MAC,
        vlan: None,
    };
    let client_tcp = |flags| What::Tcp {
        who: Who::Client,
        flags,
        len: 0,
    };
    // ARP: who has 10.0.0.1? Not IP: passed to the host.
    let mut arp = ethernet_header(
        Link {
            dst: [0xff; 6],
            ..router
        },
        EtherType::ARP,
    );
    arp.extend_from_slice(
        &ArpEthIpv4Packet {
            operation: ArpOperation::REQUEST,
            sender_mac: ROUTER_A,
            sender_ipv4: GATEWAY_V4.octets(),
            target_mac: [0; 6],
            target_ipv4: [10, 0, 0, 1],
        }
        .to_bytes(),
    );
    g.add_raw(at(0, 50), arp, Expect::Pass(PassReason::NotIp));
    // An IPv4 EtherType with 12 bytes behind it: not even an IP header.
    let mut cut = ethernet_header(router, EtherType::IPV4);
    cut.extend_from_slice(&[0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0]);
    g.add_raw(at(3, 0), cut, Expect::Pass(PassReason::Malformed));
    // An IPv4 header claiming 16 bytes of header (IHL 4).
    let mut ihl = ethernet_header(router, EtherType::IPV4);
    ihl.extend_from_slice(&[
        0x44, 0, 0, 40, 0, 2, 0x40, 0, 64, 6, 0, 0, 198, 51, 100, 9, 10, 0, 0, 1,
    ]);
    ihl.extend_from_slice(&[0; 20]);
    g.add_raw(at(9, 0), ihl, Expect::Pass(PassReason::Malformed));
    // Pings to VIPs: not balanced, passed to the host.
    let ping4 = frame(
        router,
        "198.51.100.20".parse().unwrap(),
        "10.0.0.1".parse().unwrap(),
        60,
        7,
        L4::Icmp4(Icmpv4Type::EchoRequest(IcmpEchoHeader { id: 1, seq: 1 })),
        b"ping",
    );
    g.add_raw(at(1, 500), ping4, Expect::Pass(PassReason::IcmpNotError));
    let ping6 = frame(
        router,
        "2001:db8:c1::20".parse().unwrap(),
        "2001:db8::1".parse().unwrap(),
        60,
        7,
        L4::Icmp6(Icmpv6Type::EchoRequest(IcmpEchoHeader { id: 1, seq: 1 })),
        b"ping",
    );
    g.add_raw(at(6, 0), ping6, Expect::Pass(PassReason::IcmpNotError));
    // A service without real servers: port unreachable, to the SYN and its retransmission.
    let unreach = Expect::Reply(IcmpReply::PortUnreachable);
    g.add(
        None,
        a([198, 51, 100, 30]),
        "10.0.0.4",
        80,
        at(4, 0),
        None,
        vec![
            step(0, client_tcp(SYN), unreach),
            step(SEC, client_tcp(SYN), unreach),
        ],
    );
    // A SYN with TTL 1: scheduled (and counted), then time exceeded instead of forwarded.
    g.add(
        Some(NAT4),
        a([198, 51, 100, 31]),
        "10.0.0.1",
        80,
        at(7, 0),
        None,
        vec![Step {
            gap: 0,
            what: What::SynTtl(1),
            expect: Expect::Reply(IcmpReply::TimeExceeded),
        }],
    );
    // A segment that is no SYN and has no connection: passed to the host, as IPVS does.
    g.add(
        None,
        a([198, 51, 100, 32]),
        "10.0.0.1",
        80,
        at(8, 0),
        None,
        vec![step(
            0,
            client_tcp(ACK),
            Expect::Pass(PassReason::NoConnection),
        )],
    );
    // Not a virtual service: another address, another port.
    g.add(
        None,
        a([198, 51, 100, 33]),
        "10.0.0.99",
        80,
        at(2, 500),
        None,
        vec![step(0, client_tcp(SYN), Expect::Pass(PassReason::NotOurs))],
    );
    g.add(
        None,
        a([198, 51, 100, 34]),
        "10.0.0.1",
        123,
        at(5, 500),
        None,
        vec![step(
            0,
            What::Udp {
                who: Who::Client,
                payload: vec![0x23; 48],
            },
            Expect::Pass(PassReason::NotOurs),
        )],
    );
    // A DNS query too big for one frame: the first fragment is scheduled by its ports, the
    // second is dropped (the director does not reassemble).
    let big = dns_query(4242, false, 1540);
    g.add(
        Some(DNS4),
        a([198, 51, 100, 35]),
        "10.0.0.1",
        53,
        at(10, 0),
        None,
        vec![
            step(
                0,
                What::UdpFragment {
                    second: false,
                    payload: big.clone(),
                },
                Expect::ToServer,
            ),
            step(
                10,
                What::UdpFragment {
                    second: true,
                    payload: big,
                },
                Expect::Drop(DropReason::Fragment),
            ),
        ],
    );
    // Port unreachable about a datagram the director never sent.
    let ghost = frame(
        router,
        "10.0.0.1".parse().unwrap(),
        "198.51.100.36".parse().unwrap(),
        63,
        9,
        L4::Udp(53, 9999),
        &dns_answer(9, false),
    );
    let err = frame(
        router,
        "198.51.100.36".parse().unwrap(),
        "10.0.0.1".parse().unwrap(),
        64,
        10,
        L4::Icmp4(Icmpv4Type::DestinationUnreachable(
            DestUnreachableHeader::Port,
        )),
        &quote(ip_of(&ghost)),
    );
    g.add_raw(at(11, 0), err, Expect::Pass(PassReason::NoConnection));
    // A real server's segment to a client it has no connection with.
    let stray = {
        let mut h = TcpHeader::new(8080, 5555, 1, 64240);
        h.ack = true;
        h.acknowledgment_number = 1;
        frame(
            Link {
                src: server_mac("192.168.10.1".parse().unwrap()),
                dst: DIRECTOR_MAC,
                vlan: None,
            },
            "192.168.10.1".parse().unwrap(),
            "198.51.100.37".parse().unwrap(),
            64,
            11,
            L4::Tcp(h),
            &[],
        )
    };
    g.add_raw(at(12, 0), stray, Expect::Pass(PassReason::NoConnection));
}

impl Flow {
    fn v6(&self) -> bool {
        self.client.is_ipv6()
    }

    fn client_link(&self) -> Link {
        Link {
            src: self.router,
            dst: DIRECTOR_MAC,
            vlan: self.vlan,
        }
    }

    fn server(&self) -> (IpAddr, u16) {
        self.rs.unwrap_or((self.vip, self.vport))
    }

    fn server_link(&self) -> Link {
        Link {
            src: server_mac(self.server().0),
            dst: DIRECTOR_MAC,
            vlan: None,
        }
    }

    fn payload(&self, who: Who, len: usize) -> Vec<u8> {
        if self.vport == 443 {
            return (0..len)
                .map(|i| (i as u8).wrapping_mul(167).wrapping_add(13))
                .collect();
        }
        match who {
            Who::Client => text(
                &format!(
                    "GET /item/{} HTTP/1.1\r\nHost: www.example.com\r\nX-Fill: ",
                    self.cport
                ),
                len,
                "\r\n\r\n",
            ),
            Who::Server => http_response(len),
        }
    }

    fn tcp_frame(&mut self, who: Who, flags: u8, len: usize, ttl: u8, id: u16) -> Vec<u8> {
        let payload = self.payload(who, len);
        let (rs, rport) = self.server();
        let (src, sport, dst, dport, seq, ack, link) = match who {
            Who::Client => (
                self.client,
                self.cport,
                self.vip,
                self.vport,
                self.cseq,
                self.sseq,
                self.client_link(),
            ),
            Who::Server => (
                rs,
                rport,
                self.client,
                self.cport,
                self.sseq,
                self.cseq,
                self.server_link(),
            ),
        };
        let mut h = TcpHeader::new(sport, dport, seq, 64240);
        h.syn = flags & SYN != 0;
        h.fin = flags & FIN != 0;
        h.rst = flags & RST != 0;
        h.psh = flags & PSH != 0;
        h.ack = flags & ACK != 0;
        if h.ack {
            h.acknowledgment_number = ack;
        }
        let used = len as u32 + u32::from(h.syn) + u32::from(h.fin);
        match who {
            Who::Client => self.cseq = self.cseq.wrapping_add(used),
            Who::Server => self.sseq = self.sseq.wrapping_add(used),
        }
        frame(link, src, dst, ttl, id, L4::Tcp(h), &payload)
    }

    fn build(&mut self, what: &What, id: u16) -> Vec<u8> {
        match what {
            What::Tcp { who, flags, len } => self.tcp_frame(*who, *flags, *len, 64, id),
            What::SynTtl(ttl) => self.tcp_frame(Who::Client, SYN, 0, *ttl, id),
            What::Udp { who, payload } => {
                let (rs, rport) = self.server();
                match who {
                    Who::Client => frame(
                        self.client_link(),
                        self.client,
                        self.vip,
                        64,
                        id,
                        L4::Udp(self.cport, self.vport),
                        payload,
                    ),
                    Who::Server => frame(
                        self.server_link(),
                        rs,
                        self.client,
                        64,
                        id,
                        L4::Udp(rport, self.cport),
                        payload,
                    ),
                }
            }
            What::UdpFragment { second, payload } => self.fragment(*second, payload),
            What::ClientError { router } => {
                let q = quote(&self.to_client);
                match (self.client, self.vip) {
                    (IpAddr::V4(_), _) => {
                        let (src, t) = if *router {
                            (
                                IpAddr::V4(GATEWAY_V4),
                                DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
                            )
                        } else {
                            (self.client, DestUnreachableHeader::Port)
                        };
                        frame(
                            self.client_link(),
                            src,
                            self.vip,
                            64,
                            id,
                            L4::Icmp4(Icmpv4Type::DestinationUnreachable(t)),
                            &q,
                        )
                    }
                    (IpAddr::V6(_), _) => frame(
                        self.client_link(),
                        IpAddr::V6(ROUTER_V6),
                        self.vip,
                        64,
                        id,
                        L4::Icmp6(Icmpv6Type::PacketTooBig { mtu: 1280 }),
                        &q,
                    ),
                }
            }
            What::ServerError => {
                let q = quote(&self.to_server);
                let (rs, _) = self.server();
                let l4 = if self.v6() {
                    L4::Icmp6(Icmpv6Type::DestinationUnreachable(
                        DestUnreachableCode::Prohibited,
                    ))
                } else {
                    L4::Icmp4(Icmpv4Type::DestinationUnreachable(
                        DestUnreachableHeader::Port,
                    ))
                };
                frame(self.server_link(), rs, self.client, 64, id, l4, &q)
            }
            What::Raw(f) => f.clone(),
        }
    }

    /// One of the two fragments of a client's IPv4 UDP datagram: 1480 bytes of it, then
    /// the rest.
    fn fragment(&self, second: bool, payload: &[u8]) -> Vec<u8> {
        let (IpAddr::V4(src), IpAddr::V4(dst)) = (self.client, self.vip) else {
            panic!("IPv4 only");
        };
        let mut ip =
            Ipv4Header::new(0, 64, IpNumber::UDP, src.octets(), dst.octets()).expect("header");
        ip.identification = 0x4242;
        let udp = UdpHeader::with_ipv4_checksum(self.cport, self.vport, &ip, payload).expect("udp");
        let mut datagram = udp.to_bytes().to_vec();
        datagram.extend_from_slice(payload);
        let cut = 1480;
        let part = if second {
            &datagram[cut..]
        } else {
            &datagram[..cut]
        };
        ip.more_fragments = !second;
        ip.fragment_offset =
            IpFragOffset::try_new(if second { (cut / 8) as u16 } else { 0 }).expect("offset");
        ip.set_payload_len(part.len()).expect("length");
        ip.header_checksum = ip.calc_header_checksum();
        let mut out = ethernet_header(self.client_link(), EtherType::IPV4);
        out.extend_from_slice(&ip.to_bytes());
        out.extend_from_slice(part);
        out
    }
}

/// The real server (address, port) of `service` at `addr`.
fn real_server(engine: &Engine, service: usize, addr: IpAddr) -> Option<(IpAddr, u16)> {
    let svc = engine.director().services().get(&service_key(service))?;
    svc.pool()
        .dests()
        .iter()
        .find(|(_, d)| d.addr() == addr)
        .map(|(_, d)| (d.addr(), d.port()))
}

/// The sample's director setup.
pub fn setup(neigh: &str) -> Setup {
    let mut args: Vec<String> = ["--rules", "r", "--in", "i", "--out", "o"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(ARGS.iter().map(|s| s.to_string()));
    let Ok(super::Command::Run(o)) = super::parse_args(&args) else {
        panic!("the sample's arguments parse");
    };
    Setup {
        rules_name: "sample.rules".into(),
        rules: RULES.into(),
        neigh: super::parse_neigh("sample.neigh", neigh).expect("the sample's neighbours parse"),
        net: o.net,
    }
}

/// Builds the sample.
pub fn build() -> Sample {
    let neigh = neigh_text();
    let mut g = scripts();
    let mut engine = Engine::new(
        &setup(&neigh),
        LinkType::Ethernet,
        Instant::from_nanos(START_NS),
    )
    .expect("the sample's rules apply");
    // Steps in time order; ties in the order they were queued.
    let mut queue = BinaryHeap::new();
    let mut order = 0u64;
    for (i, f) in g.flows.iter().enumerate() {
        queue.push(Reverse((f.start, order, i, 0usize)));
        order += 1;
    }
    let mut frames = Vec::new();
    while let Some(Reverse((t, _, i, n))) = queue.pop() {
        g.ip_id = g.ip_id.wrapping_add(1);
        let id = g.ip_id;
        let flow = &mut g.flows[i];
        let what = flow.steps[n].what.clone();
        let data = flow.build(&what, id);
        let ts_ns = START_NS + t * 1000;
        let s = engine.step(ts_ns, &data);
        if let Verdict::Forward(f) = s.verdict {
            let sent = ip_of(engine.output(&s)).to_vec();
            match f.to {
                Side::Client => flow.to_client = sent,
                Side::Server => {
                    flow.to_server = sent;
                    if flow.rs.is_none() {
                        flow.rs = flow
                            .service
                            .and_then(|svc| real_server(&engine, svc, f.next_hop));
                    }
                }
            }
        }
        let st = &flow.steps[n];
        let opens = n == 0
            && matches!(
                st.expect,
                Expect::ToServer | Expect::Reply(IcmpReply::TimeExceeded)
            )
            && flow.service.is_some();
        frames.push(Frame {
            ts_ns,
            data,
            expect: st.expect,
            service: flow
                .service
                .filter(|_| !matches!(st.expect, Expect::Pass(_) | Expect::Drop(_))),
            opens,
            flow: i,
        });
        if let Some(next) = flow.steps.get(n + 1) {
            queue.push(Reverse((t + next.gap, order, i, n + 1)));
            order += 1;
        }
    }
    let mut pcap = Vec::new();
    let mut w = Writer::new(&mut pcap, LinkType::Ethernet).expect("a pcap header");
    for f in &frames {
        w.write(f.ts_ns, f.data.len() as u32, &f.data)
            .expect("a pcap record");
    }
    Sample {
        frames,
        pcap,
        rules: RULES.to_string(),
        neigh,
    }
}
