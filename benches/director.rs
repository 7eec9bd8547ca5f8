//! Director benchmarks: nanoseconds per packet through `Director::process_at` and
//! `Director::process_batch` (classification, connection lookup, real-server check, state
//! machine, counters and rewrite, all of it), and new connections per second.
//!
//! - `director/established/{dr,nat,tun}/N`: an ACK with 10 bytes of data (a 64-byte frame) of
//!   a random one of N established connections (8 real servers, `rr`), forwarded by direct
//!   routing (MACs and TTL), NAT (destination address and port, TTL, checksums) or IPIP
//!   tunnelling (20 bytes of outer header written into the headroom).
//! - `director/new/{wlc,mh}/N`: a SYN from a client never seen, scheduled by `wlc` or `mh`,
//!   inserted and forwarded by direct routing, into a table that already holds N established
//!   connections and then up to N new ones. Throughput in elements/s is new connections per
//!   second.
//!
//! - `director/stages/{dr,nat}/N`: where the time of `director/established` goes. The same
//!   ACKs of N established connections, in the same random order and bursts, each frame copied
//!   into its receive buffer and then taken through cumulative stages, one frame at a time:
//!   `copy` (the copy alone, to subtract), `classify` (`lvs::wire::classify`), `classify +
//!   lookup` (plus `ConnTable::lookup_in` of its flow in the director's own table and
//!   `ConnTable::target` of the entry found), `classify + lookup + rewrite` (plus `rewrite::dr`,
//!   or `rewrite::nat_in` and the MACs, with the real server's parameters; checked to write
//!   the very bytes `process_at` writes), and `process` (`Director::process_at`, all of it: the
//!   same as `lvs` of `director/established`). The differences are what classification, the
//!   lookup, the rewrite and the rest of the director (service and real-server checks, state
//!   machine, counters, timer) cost: marginal costs, as an out-of-order core overlaps
//!   whatever does not wait on a cache miss with the miss, not each stage's cost alone. No
//!   baseline here.
//!   `cargo bench --bench director -- stages && cargo run --release --example per_packet_svg
//!   -- docs/per_packet.svg` measures them and draws `docs/per_packet.svg`.
//!
//! Each group holds, as the baseline, the same pipeline written the obvious way: etherparse
//! slices the frame (`SlicedPacket::from_ethernet`, its zero-copy parser; decoding everything
//! with `PacketHeaders` costs more), a `std::collections::HashMap` keyed by the 5-tuple holds
//! the connections (real server, state, expiry, counters; the same N entries), a scheduler
//! over a `Vec` of real servers picks one for a SYN (`wlc` with IPVS's overhead
//! `active * 256 + inactive`, or Maglev from the `maglev` crate with a 4093-entry table for
//! `mh`), and the rewrite re-serialises the headers with etherparse, checksums computed from
//! scratch (`to_header`, edit, `write`), into a reused output buffer as `benches/rewrite.rs`
//! does: DR writes the new MACs and the IPv4 header with its TTL decremented; NAT also the new
//! destination and the TCP header with a checksum over the segment; TUN an Ethernet header, a
//! new outer IPv4 header and the inner packet with its TTL decremented.
//!
//! Frames arrive in bursts of 32 (one iteration; times are per burst, divide by 32, or read
//! elements/s). Before processing, every frame is copied from a pristine array into its
//! receive buffer (64 bytes of headroom for the tunnel headers, the frame, 64 bytes of
//! tailroom), as a NIC would have written it, so no rewrite sees a frame it already rewrote
//! (a TTL run down, an address already translated, a frame already encapsulated); the
//! baselines make the same copy. The pristine frames (64 MB at 1M) stream from memory in a
//! random order of the connections, different from the order in which they were opened (the
//! table allocates entries in insertion order, so replaying that order would walk its memory
//! sequentially), so at 1M connections nearly every lookup misses the caches. Reading the
//! frames from DRAM costs both sides alike (about 10 ns per frame in a burst, more one frame
//! at a time); a NIC writing into the last-level cache would spare it.
//!
//! New connections come from a pool of N fresh clients. When a run has used them all, the
//! clock moves on 61 s and `expire` frees the half-open connections they made (the baselines
//! remove theirs the same way), outside the timing (`iter_custom`), and the pool is reused;
//! the N established connections stay (TCP timeout 1 000 000 s for this group).
//!
//! `cargo bench --bench director` (N = 1 000 000; `LVS_BENCH_SIZES=100000` for a quick run;
//! the stages at N = 4096 and 1 000 000, `LVS_STAGES_SIZES` to choose). Every group's setup
//! runs even when a filter skips its functions: `-- stages` still opens the connections of the
//! other groups (about 20 s) before it measures.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant as Clock};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use etherparse::{
    Ethernet2Header, IpNumber, Ipv4Header, LinkHeader, LinkSlice, NetHeaders, NetSlice,
    PacketBuilder, PacketHeaders, SlicedPacket, TcpHeader, TransportHeader, TransportSlice,
};
use lvs::Instant;
use lvs::conn::ConnConfig;
use lvs::director::{Director, DirectorConfig, DropReason, FrameMut, Rx, Side, Verdict};
use lvs::rewrite::{DrParams, NatOptions, dr, nat_in};
use lvs::sched::SchedConfig;
use lvs::wire::{Classified, ClassifyOptions, LinkType, classify};
use maglev::ConsistentHasher;

/// Frames per iteration: a receive burst (DPDK's default).
const BURST: usize = 32;
/// Headroom before each frame, for encapsulation.
const HEAD: usize = 64;
/// Bytes kept per pristine frame.
const FRAME: usize = 64;
/// A receive buffer: headroom, frame, tailroom.
const SLOT: usize = HEAD + FRAME + 64;
/// An ACK with 10 bytes of data: 14 + 20 + 20 + 10.
const ACK_LEN: usize = 64;
/// A SYN, padded to the Ethernet minimum.
const SYN_LEN: usize = 60;
const REAL_SERVERS: u8 = 8;

const VIP: [u8; 4] = [10, 0, 0, 1];
const DIRECTOR_IP: [u8; 4] = [192, 168, 0, 1];
const DIRECTOR_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const ROUTER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];
const RX: Rx = Rx::new(Side::Client);

type Frame = [u8; FRAME];
type Buf = [u8; SLOT];
type Client = ([u8; 4], u16);

fn rs_addr(i: u8) -> [u8; 4] {
    [192, 168, 1, 10 + i]
}

fn rs_mac(i: u8) -> [u8; 6] {
    [2, 0, 0, 1, 0, i]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Dr,
    Nat,
    Tun,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Dr => "dr",
            Method::Nat => "nat",
            Method::Tun => "tun",
        }
    }
    /// The `ipvsadm -a` flag.
    fn flag(self) -> &'static str {
        match self {
            Method::Dr => "-g",
            Method::Nat => "-m",
            Method::Tun => "-i",
        }
    }
    /// The real servers' port (only NAT may change it).
    fn port(self) -> u16 {
        match self {
            Method::Nat => 8080,
            _ => 80,
        }
    }
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

fn shuffle<T>(v: &mut [T], seed: u64) {
    let mut y = seed | 1;
    for i in (1..v.len()).rev() {
        let j = (xorshift(&mut y) % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

/// `n` distinct clients (addresses in 100.64.0.0/10, ports 1024..65535) in random order.
fn clients(n: usize, seed: u64) -> Vec<Client> {
    let mut x = seed | 1;
    let mut out: Vec<Client> = (0..n + n / 16 + 64)
        .map(|_| {
            let r = xorshift(&mut x);
            let a = 0x6440_0000 | (r as u32 & 0x003f_ffff);
            (a.to_be_bytes(), 1024 + ((r >> 32) % 64512) as u16)
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    assert!(out.len() >= n, "too few distinct clients");
    shuffle(&mut out, seed ^ 0x5555);
    out.truncate(n);
    out
}

/// A client's SYN, or an ACK with data, to the VIP.
fn frame(c: Client, syn: bool) -> Frame {
    let b = PacketBuilder::ethernet2(ROUTER_MAC, DIRECTOR_MAC).ipv4(c.0, VIP, 64);
    let mut v = Vec::with_capacity(FRAME);
    if syn {
        b.tcp(c.1, 80, 1000, 64240)
            .syn()
            .write(&mut v, &[])
            .expect("syn");
        v.resize(SYN_LEN, 0);
    } else {
        b.tcp(c.1, 80, 1001, 64240)
            .ack(1)
            .psh()
            .write(&mut v, &[0x5a; ACK_LEN - 54])
            .expect("ack");
    }
    let mut f = [0u8; FRAME];
    f[..v.len()].copy_from_slice(&v);
    f
}

/// `-A -t VIP:80 -s sched` and 8 real servers forwarded by `method`.
fn rules(method: Method, sched: &str, tcp_timeout: Option<u32>) -> String {
    let vip = Ipv4Addr::from(VIP);
    let mut r = String::new();
    if let Some(t) = tcp_timeout {
        r += &format!("--set {t} 0 0\n");
    }
    r += &format!("-A -t {vip}:80 -s {sched}\n");
    for i in 0..REAL_SERVERS {
        r += &format!(
            "-a -t {vip}:80 -r {}:{} {} -w 1\n",
            Ipv4Addr::from(rs_addr(i)),
            method.port(),
            method.flag()
        );
    }
    r
}

fn director(
    method: Method,
    sched: &str,
    capacity: u32,
    tcp_timeout: Option<u32>,
    now: Instant,
) -> Director {
    let cfg = DirectorConfig {
        mac: DIRECTOR_MAC,
        client_gateway: Some(ROUTER_MAC),
        addr_v4: Some(Ipv4Addr::from(DIRECTOR_IP)),
        ..DirectorConfig::default()
    };
    let conn = ConnConfig {
        capacity_v4: capacity,
        capacity_v6: 1024,
        ..ConnConfig::default()
    };
    let mut d = Director::new(cfg, conn, SchedConfig::default(), now);
    d.apply_rules(&rules(method, sched, tcp_timeout))
        .expect("rules");
    for i in 0..REAL_SERVERS {
        d.set_neighbour(IpAddr::from(rs_addr(i)), rs_mac(i));
    }
    d
}

/// Opens (SYN, then ACK: ESTABLISHED) a connection for every client.
fn open(d: &mut Director, clients: &[Client], now: Instant) {
    let before = d.conns().len();
    let mut buf = [0u8; SLOT];
    for &c in clients {
        for (syn, len) in [(true, SYN_LEN), (false, ACK_LEN)] {
            buf[HEAD..HEAD + FRAME].copy_from_slice(&frame(c, syn));
            let v = d.process_at(&mut buf, HEAD, HEAD + len, &RX, now);
            assert!(matches!(v, Verdict::Forward(_)), "{v:?}");
        }
    }
    assert_eq!(d.conns().len(), before + clients.len());
}

/// Checks a forwarded frame with etherparse: MACs, addresses, TTL and every checksum.
fn check_output(out: &[u8], method: Method) {
    let h = PacketHeaders::from_ethernet_slice(out).expect("parses");
    let eth = h.link.and_then(LinkHeader::ethernet2).expect("ethernet");
    assert_eq!(eth.source, DIRECTOR_MAC);
    assert_eq!(eth.destination[..5], rs_mac(0)[..5]);
    let Some(NetHeaders::Ipv4(ip, _)) = h.net else {
        panic!("not IPv4")
    };
    assert_eq!(ip.header_checksum, ip.calc_header_checksum());
    let tcp_ok = |ip: &Ipv4Header, tcp: &TcpHeader, payload: &[u8]| {
        assert_eq!(tcp.checksum, tcp.calc_checksum_ipv4(ip, payload).unwrap());
    };
    match method {
        Method::Dr | Method::Nat => {
            let Some(TransportHeader::Tcp(tcp)) = h.transport else {
                panic!("not TCP")
            };
            assert_eq!(ip.time_to_live, 63);
            tcp_ok(&ip, &tcp, h.payload.slice());
            if method == Method::Dr {
                assert_eq!(ip.destination, VIP);
                assert_eq!(tcp.destination_port, 80);
            } else {
                assert_eq!(ip.destination[..3], rs_addr(0)[..3]);
                assert_eq!(tcp.destination_port, 8080);
            }
        }
        Method::Tun => {
            assert_eq!(ip.protocol, IpNumber::IPV4);
            assert_eq!(ip.source, DIRECTOR_IP);
            assert_eq!(ip.destination[..3], rs_addr(0)[..3]);
            let inner = PacketHeaders::from_ip_slice(h.payload.slice()).expect("inner");
            let Some(NetHeaders::Ipv4(iip, _)) = inner.net else {
                panic!("inner not IPv4")
            };
            let Some(TransportHeader::Tcp(tcp)) = inner.transport else {
                panic!("inner not TCP")
            };
            assert_eq!(iip.destination, VIP);
            assert_eq!(iip.time_to_live, 63);
            assert_eq!(iip.header_checksum, iip.calc_header_checksum());
            tcp_ok(&iip, &tcp, inner.payload.slice());
        }
    }
}

fn check_director(d: &mut Director, f: &Frame, len: usize, method: Method, now: Instant) {
    let mut buf = [0u8; SLOT];
    buf[HEAD..HEAD + FRAME].copy_from_slice(f);
    let v = d.process_at(&mut buf, HEAD, HEAD + len, &RX, now);
    let Verdict::Forward(fw) = v else {
        panic!("{v:?}")
    };
    check_output(&buf[fw.start..fw.end], method);
}

/// Verdicts other than forwarding to a real server: none is expected.
fn not_forwarded(d: &Director) -> u64 {
    let s = d.stats();
    s.passed.iter().sum::<u64>() + s.dropped.iter().sum::<u64>() + s.replies.iter().sum::<u64>()
}

fn sizes() -> Vec<usize> {
    std::env::var("LVS_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000_000])
}

/// The N clients of the established connections, in the order they are opened, and an ACK of
/// each in another random order, the order in which they are replayed.
fn replay(n: usize) -> (Vec<Client>, Vec<Frame>) {
    let clients = clients(n, 0x1234_5678 ^ n as u64);
    let mut order: Vec<usize> = (0..n).collect();
    shuffle(&mut order, 0x9abc_def0 ^ n as u64);
    let acks: Vec<Frame> = order.iter().map(|&i| frame(clients[i], false)).collect();
    (clients, acks)
}

// ---------------------------------------------------------------------------------------------
// The baseline: etherparse, a std HashMap of connections, a scheduler over a Vec, full rewrites.

/// Protocol, client address and port, virtual address and port.
type Key = (u8, IpAddr, u16, IpAddr, u16);

/// The TCP flags the state machine looks at.
#[derive(Clone, Copy, Debug)]
struct Flags {
    syn: bool,
    ack: bool,
    fin: bool,
    rst: bool,
}

/// The states a director sees of a TCP connection (numbering the timeouts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TcpState {
    None,
    SynRecv,
    Established,
    FinWait,
    Close,
}

impl TcpState {
    /// The state after a segment from the client (the director sees one direction in DR).
    fn next(self, tcp: Flags) -> TcpState {
        if tcp.rst {
            TcpState::Close
        } else if tcp.syn {
            TcpState::SynRecv
        } else if tcp.fin {
            TcpState::FinWait
        } else if tcp.ack && matches!(self, TcpState::SynRecv | TcpState::Established) {
            TcpState::Established
        } else {
            self
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct BaseConn {
    service: u16,
    dest: u16,
    state: TcpState,
    deadline: u64,
    in_pkts: u64,
    in_bytes: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct BaseStats {
    conns: u64,
    in_pkts: u64,
    in_bytes: u64,
}

#[derive(Clone, Copy, Debug)]
struct BaseDest {
    addr: [u8; 4],
    port: u16,
    mac: [u8; 6],
    weight: u32,
    active: u32,
    inactive: u32,
    stats: BaseStats,
}

enum BaseSched {
    Rr(usize),
    /// Weighted least-connection, IPVS's overhead.
    Wlc,
    /// Maglev over the client address (what `mh` hashes), the `maglev` crate.
    Maglev(maglev::Maglev<u16>),
}

struct BaseService {
    dests: Vec<BaseDest>,
    sched: BaseSched,
    stats: BaseStats,
}

impl BaseService {
    fn schedule(&mut self, key: &Key) -> Option<usize> {
        match &mut self.sched {
            BaseSched::Rr(next) => {
                let i = *next;
                *next = (i + 1) % self.dests.len();
                Some(i)
            }
            BaseSched::Wlc => {
                let mut best: Option<(usize, u64, u64)> = None;
                for (i, d) in self.dests.iter().enumerate() {
                    if d.weight == 0 {
                        continue;
                    }
                    let oh = d.active as u64 * 256 + d.inactive as u64;
                    let w = d.weight as u64;
                    if best.is_none_or(|(_, boh, bw)| oh * bw < boh * w) {
                        best = Some((i, oh, w));
                    }
                }
                best.map(|b| b.0)
            }
            BaseSched::Maglev(m) => m.get(&key.1).map(|&i| i as usize),
        }
    }
}

struct Baseline {
    method: Method,
    services: HashMap<(u8, IpAddr, u16), u16>,
    svcs: Vec<BaseService>,
    conns: HashMap<Key, BaseConn>,
    mac: [u8; 6],
    tun_src: [u8; 4],
    /// Timeouts by [`TcpState`], nanoseconds.
    timeouts: [u64; 5],
}

impl Baseline {
    fn new(method: Method, sched: &str, capacity: usize, tcp_timeout: Option<u32>) -> Baseline {
        let dests = (0..REAL_SERVERS)
            .map(|i| BaseDest {
                addr: rs_addr(i),
                port: method.port(),
                mac: rs_mac(i),
                weight: 1,
                active: 0,
                inactive: 0,
                stats: BaseStats::default(),
            })
            .collect();
        let sched = match sched {
            "rr" => BaseSched::Rr(0),
            "wlc" => BaseSched::Wlc,
            "mh" => BaseSched::Maglev(maglev::Maglev::with_capacity(0..REAL_SERVERS as u16, 4093)),
            other => panic!("no baseline for {other}"),
        };
        let s = 1_000_000_000;
        Baseline {
            method,
            services: HashMap::from([((6, IpAddr::from(VIP), 80), 0)]),
            svcs: vec![BaseService {
                dests,
                sched,
                stats: BaseStats::default(),
            }],
            conns: HashMap::with_capacity(capacity),
            mac: DIRECTOR_MAC,
            tun_src: DIRECTOR_IP,
            timeouts: [
                2 * s,
                60 * s,
                tcp_timeout.map_or(900, u64::from) * s,
                120 * s,
                10 * s,
            ],
        }
    }

    /// Processes a frame from the client side, writing what to send into `out`; false if it
    /// is not forwarded.
    fn process(&mut self, frame: &[u8], out: &mut Vec<u8>, now: u64) -> bool {
        // Slicing, etherparse's fast path: no header is copied until it is rewritten.
        let Ok(p) = SlicedPacket::from_ethernet(frame) else {
            return false;
        };
        let (
            Some(LinkSlice::Ethernet2(eth)),
            Some(NetSlice::Ipv4(ipv4)),
            Some(TransportSlice::Tcp(tcp)),
        ) = (p.link, p.net, p.transport)
        else {
            return false;
        };
        let iph = ipv4.header();
        let flags = Flags {
            syn: tcp.syn(),
            ack: tcp.ack(),
            fin: tcp.fin(),
            rst: tcp.rst(),
        };
        let key: Key = (
            6,
            IpAddr::from(iph.source()),
            tcp.source_port(),
            IpAddr::from(iph.destination()),
            tcp.destination_port(),
        );
        let conn = match self.conns.entry(key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                if !flags.syn || flags.rst {
                    return false;
                }
                let Some(&n) = self.services.get(&(6, key.3, key.4)) else {
                    return false;
                };
                let svc = &mut self.svcs[n as usize];
                let Some(d) = svc.schedule(&key) else {
                    return false;
                };
                svc.dests[d].inactive += 1;
                svc.dests[d].stats.conns += 1;
                svc.stats.conns += 1;
                e.insert(BaseConn {
                    service: n,
                    dest: d as u16,
                    state: TcpState::None,
                    deadline: 0,
                    in_pkts: 0,
                    in_bytes: 0,
                })
            }
        };
        let mut ip = iph.to_header();
        if ip.time_to_live <= 1 {
            return false;
        }
        let next = conn.state.next(flags);
        let timeout = self.timeouts[next as usize];
        let svc = &mut self.svcs[conn.service as usize];
        let dest = &mut svc.dests[conn.dest as usize];
        let was = conn.state == TcpState::Established;
        let is = next == TcpState::Established;
        if was != is {
            if is {
                dest.active += 1;
                dest.inactive -= 1;
            } else {
                dest.active -= 1;
                dest.inactive += 1;
            }
        }
        conn.state = next;
        conn.deadline = now + timeout;
        let len = ip.total_len as u64;
        conn.in_pkts += 1;
        conn.in_bytes += len;
        dest.stats.in_pkts += 1;
        dest.stats.in_bytes += len;
        svc.stats.in_pkts += 1;
        svc.stats.in_bytes += len;

        ip.time_to_live -= 1;
        let eth = Ethernet2Header {
            source: self.mac,
            destination: dest.mac,
            ether_type: eth.ether_type(),
        };
        out.clear();
        eth.write(out).unwrap();
        // `Ipv4Header::write` computes the header checksum.
        match self.method {
            Method::Dr => {
                ip.write(out).unwrap();
                out.extend_from_slice(&frame[14 + ip.header_len()..]);
            }
            Method::Nat => {
                let payload = tcp.payload();
                let mut tcp = tcp.to_header();
                ip.destination = dest.addr;
                tcp.destination_port = dest.port;
                tcp.checksum = tcp.calc_checksum_ipv4(&ip, payload).unwrap();
                ip.write(out).unwrap();
                tcp.write(out).unwrap();
                out.extend_from_slice(payload);
            }
            Method::Tun => {
                let mut outer = Ipv4Header::new(
                    ip.total_len,
                    ip.time_to_live,
                    IpNumber::IPV4,
                    self.tun_src,
                    dest.addr,
                )
                .unwrap();
                outer.dont_fragment = ip.dont_fragment;
                outer.write(out).unwrap();
                ip.write(out).unwrap();
                out.extend_from_slice(&frame[14 + ip.header_len()..14 + ip.total_len as usize]);
            }
        }
        true
    }

    /// Removes every connection whose time is up.
    fn expire(&mut self, now: u64) {
        let svcs = &mut self.svcs;
        self.conns.retain(|_, c| {
            if c.deadline > now {
                return true;
            }
            let d = &mut svcs[c.service as usize].dests[c.dest as usize];
            if c.state == TcpState::Established {
                d.active -= 1;
            } else {
                d.inactive -= 1;
            }
            false
        });
    }

    fn open(&mut self, clients: &[Client], now: u64) {
        let before = self.conns.len();
        let mut out = Vec::with_capacity(256);
        for &c in clients {
            for (syn, len) in [(true, SYN_LEN), (false, ACK_LEN)] {
                let f = frame(c, syn);
                assert!(self.process(&f[..len], &mut out, now));
            }
        }
        assert_eq!(self.conns.len(), before + clients.len());
    }
}

// ---------------------------------------------------------------------------------------------
// The runs.

/// The next burst of `frames`, cycling.
fn next_burst<'a>(frames: &'a [Frame], cursor: &mut usize) -> &'a [Frame] {
    if (*cursor + 1) * BURST > frames.len() {
        *cursor = 0;
    }
    let b = &frames[*cursor * BURST..(*cursor + 1) * BURST];
    *cursor += 1;
    b
}

/// One burst through `process_at`, frame by frame.
#[inline(always)]
fn lvs_single(d: &mut Director, bufs: &mut [Buf], frames: &[Frame], len: usize, now: Instant) {
    for (buf, f) in bufs.iter_mut().zip(frames) {
        buf[HEAD..HEAD + FRAME].copy_from_slice(f);
        black_box(&d.process_at(buf, HEAD, HEAD + len, &RX, now));
    }
}

/// One burst through `process_batch`.
#[inline(always)]
fn lvs_batch(
    d: &mut Director,
    bufs: &mut [Buf],
    frames: &[Frame],
    len: usize,
    now: Instant,
    out: &mut [Verdict; BURST],
) {
    let mut it = bufs.iter_mut().zip(frames);
    let mut burst: [FrameMut<'_>; BURST] = std::array::from_fn(|_| {
        let (buf, f) = it.next().expect("a full burst");
        buf[HEAD..HEAD + FRAME].copy_from_slice(f);
        FrameMut {
            buf: &mut buf[..],
            start: HEAD,
            end: HEAD + len,
        }
    });
    d.process_batch(&mut burst, &RX, now, out);
    black_box(&out);
}

/// One burst through the baseline.
#[inline(always)]
fn base_burst(
    base: &mut Baseline,
    bufs: &mut [Buf],
    frames: &[Frame],
    len: usize,
    out: &mut Vec<u8>,
    now: u64,
) {
    for (buf, f) in bufs.iter_mut().zip(frames) {
        buf[HEAD..HEAD + FRAME].copy_from_slice(f);
        let ok = base.process(&buf[HEAD..HEAD + len], out, now);
        black_box((ok, out.len()));
    }
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

fn established(c: &mut Criterion) {
    for n in sizes() {
        let (clients, acks) = replay(n);
        let capacity = (2 * n as u32).max(1 << 16);
        for method in [Method::Dr, Method::Nat, Method::Tun] {
            let mut g = c.benchmark_group(format!("director/established/{}/{n}", method.name()));
            g.throughput(Throughput::Elements(BURST as u64));
            let mut bufs = vec![[0u8; SLOT]; BURST];
            let mut cursor = 0;
            {
                let mut now = Instant::from_secs(100);
                let mut d = director(method, "rr", capacity, None, now);
                let t = Clock::now();
                open(&mut d, &clients, now);
                println!(
                    "{} {n}: opened in {:.2?}, {:.1} bytes per IPv4 entry",
                    method.name(),
                    t.elapsed(),
                    d.conns().memory().v4_bytes_per_entry()
                );
                check_director(&mut d, &acks[0], ACK_LEN, method, now);
                let base_forwarded = d.stats().forwarded_in;
                g.bench_function("lvs", |b| {
                    b.iter(|| {
                        now += Duration::from_micros(1);
                        let f = next_burst(&acks, &mut cursor);
                        lvs_single(&mut d, &mut bufs, f, ACK_LEN, now);
                    })
                });
                let mut out = [Verdict::Drop(DropReason::Rewrite); BURST];
                g.bench_function("lvs batch", |b| {
                    b.iter(|| {
                        now += Duration::from_micros(1);
                        let f = next_burst(&acks, &mut cursor);
                        lvs_batch(&mut d, &mut bufs, f, ACK_LEN, now, &mut out);
                    })
                });
                assert_eq!(not_forwarded(&d), 0, "{:?}", d.stats());
                assert_eq!(d.conns().len(), n);
                println!(
                    "{} {n}: {} frames forwarded in the runs, none dropped or passed",
                    method.name(),
                    d.stats().forwarded_in - base_forwarded
                );
            }
            {
                let mut now = 100_000_000_000u64;
                let mut base = Baseline::new(method, "rr", n, None);
                base.open(&clients, now);
                let mut out = Vec::with_capacity(256);
                assert!(base.process(&acks[0][..ACK_LEN], &mut out, now));
                check_output(&out, method);
                g.bench_function("baseline", |b| {
                    b.iter(|| {
                        now += 1000;
                        let f = next_burst(&acks, &mut cursor);
                        base_burst(&mut base, &mut bufs, f, ACK_LEN, &mut out, now);
                    })
                });
                assert_eq!(base.conns.len(), n);
            }
            g.finish();
        }
    }
}

/// Runs `iters` bursts of fresh SYNs, timing only the bursts: when the pool runs out,
/// `recycle` (not timed) forgets the connections it opened, and the pool starts again.
fn fresh_bursts<S>(
    iters: u64,
    syns: &[Frame],
    cursor: &mut usize,
    state: &mut S,
    mut recycle: impl FnMut(&mut S),
    mut burst: impl FnMut(&mut S, &[Frame]),
) -> Duration {
    let bursts = syns.len() / BURST;
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        if *cursor >= bursts {
            recycle(state);
            *cursor = 0;
        }
        let k = left.min((bursts - *cursor) as u64);
        let t = Clock::now();
        for _ in 0..k {
            burst(state, &syns[*cursor * BURST..(*cursor + 1) * BURST]);
            *cursor += 1;
        }
        total += t.elapsed();
        left -= k;
    }
    total
}

/// What the lvs runs of the new-connection group carry between iterations.
struct LvsRun {
    d: Director,
    now: Instant,
    bufs: Vec<Buf>,
    out: [Verdict; BURST],
    recycled: u32,
}

/// Lets the half-open connections (SYN_RECV, 60 s) time out; the established ones stay.
fn lvs_recycle(s: &mut LvsRun, live: usize) {
    s.now += Duration::from_secs(61);
    s.d.expire(s.now, u32::MAX);
    assert_eq!(s.d.conns().len(), live, "{:?}", s.d.conns().stats());
    s.recycled += 1;
}

fn new_conns(c: &mut Criterion) {
    // TCP (ESTABLISHED) timeout of this group, seconds: the N established connections must
    // outlive every 61 s step of the recycling.
    const TCP_TIMEOUT: u32 = 1_000_000;
    for n in sizes() {
        let all = clients(2 * n, 0x0fed_cba9 ^ n as u64);
        let (established, fresh) = all.split_at(n);
        let syns: Vec<Frame> = fresh.iter().map(|&c| frame(c, true)).collect();
        let capacity = (2 * n as u32 + n as u32 / 2).max(1 << 16);
        for sched in ["wlc", "mh"] {
            let mut g = c.benchmark_group(format!("director/new/{sched}/{n}"));
            g.throughput(Throughput::Elements(BURST as u64));
            let mut cursor = 0;
            {
                let now = Instant::from_secs(100);
                let mut d = director(Method::Dr, sched, capacity, Some(TCP_TIMEOUT), now);
                open(&mut d, established, now);
                let mut s = LvsRun {
                    d,
                    now,
                    bufs: vec![[0u8; SLOT]; BURST],
                    out: [Verdict::Drop(DropReason::Rewrite); BURST],
                    recycled: 0,
                };
                check_director(&mut s.d, &syns[0], SYN_LEN, Method::Dr, now);
                lvs_recycle(&mut s, n);
                let forwarded = s.d.stats().forwarded_in;
                g.bench_function("lvs", |b| {
                    b.iter_custom(|iters| {
                        fresh_bursts(
                            iters,
                            &syns,
                            &mut cursor,
                            &mut s,
                            |s| lvs_recycle(s, n),
                            |s, f| {
                                s.now += Duration::from_micros(1);
                                lvs_single(&mut s.d, &mut s.bufs, f, SYN_LEN, s.now);
                            },
                        )
                    })
                });
                g.bench_function("lvs batch", |b| {
                    b.iter_custom(|iters| {
                        fresh_bursts(
                            iters,
                            &syns,
                            &mut cursor,
                            &mut s,
                            |s| lvs_recycle(s, n),
                            |s, f| {
                                s.now += Duration::from_micros(1);
                                lvs_batch(&mut s.d, &mut s.bufs, f, SYN_LEN, s.now, &mut s.out);
                            },
                        )
                    })
                });
                assert_eq!(not_forwarded(&s.d), 0, "{:?}", s.d.stats());
                println!(
                    "new/{sched} {n}: {} connections opened in the runs, {} recycles, {} live at the end, none dropped",
                    s.d.stats().forwarded_in - forwarded,
                    s.recycled,
                    s.d.conns().len()
                );
            }
            {
                struct BaseRun {
                    base: Baseline,
                    now: u64,
                    bufs: Vec<Buf>,
                    out: Vec<u8>,
                }
                fn recycle(s: &mut BaseRun, live: usize) {
                    s.now += 61_000_000_000;
                    s.base.expire(s.now);
                    assert_eq!(s.base.conns.len(), live);
                }
                let now = 100_000_000_000u64;
                let mut base =
                    Baseline::new(Method::Dr, sched, capacity as usize, Some(TCP_TIMEOUT));
                base.open(established, now);
                let mut s = BaseRun {
                    base,
                    now,
                    bufs: vec![[0u8; SLOT]; BURST],
                    out: Vec::with_capacity(256),
                };
                assert!(s.base.process(&syns[0][..SYN_LEN], &mut s.out, now));
                check_output(&s.out, Method::Dr);
                recycle(&mut s, n);
                g.bench_function("baseline", |b| {
                    b.iter_custom(|iters| {
                        fresh_bursts(
                            iters,
                            &syns,
                            &mut cursor,
                            &mut s,
                            |s| recycle(s, n),
                            |s, f| {
                                s.now += 1000;
                                base_burst(&mut s.base, &mut s.bufs, f, SYN_LEN, &mut s.out, s.now);
                            },
                        )
                    })
                });
            }
            g.finish();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Where the time goes: cumulative stages of an established connection's packet.

/// How far [`stage_burst`] takes each frame.
const COPY: u8 = 0;
const CLASSIFY: u8 = 1;
const LOOKUP: u8 = 2;
const REWRITE: u8 = 3;

/// The sizes of the stages groups: every entry in the caches, and most of them out of reach.
fn stage_sizes() -> Vec<usize> {
    std::env::var("LVS_STAGES_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![4096, 1_000_000])
}

/// What the stages know that the director keeps in its configuration: the forwarding method,
/// the classification options, and each real server's MAC by its slot index (the director
/// caches it with the real server).
struct StageParams {
    method: Method,
    classify: ClassifyOptions,
    macs: [[u8; 6]; REAL_SERVERS as usize],
    nat: NatOptions,
}

impl StageParams {
    fn new(method: Method) -> StageParams {
        StageParams {
            method,
            classify: ClassifyOptions::default(),
            macs: std::array::from_fn(|i| rs_mac(i as u8)),
            nat: NatOptions {
                decrement_ttl: true,
                checksum: RX.checksum,
            },
        }
    }
}

/// One burst, frame by frame: copies each frame into its receive buffer and takes it through
/// the stages up to `UPTO` (a constant, so each function holds only its own stages). Returns
/// how many frames went through every stage asked for (all of them, or a stage failed).
#[inline(always)]
fn stage_burst<const UPTO: u8>(
    d: &Director,
    s: &StageParams,
    bufs: &mut [Buf],
    frames: &[Frame],
    len: usize,
    now: Instant,
) -> usize {
    let mut done = 0;
    for (buf, f) in bufs.iter_mut().zip(frames) {
        buf[HEAD..HEAD + FRAME].copy_from_slice(f);
        let frame = &mut buf[HEAD..HEAD + len];
        if UPTO == COPY {
            black_box(&*frame);
            done += 1;
            continue;
        }
        // By reference, as in `benches/rewrite.rs`: the layout stays where classify wrote it.
        let Ok(Classified::Ip(l)) = classify(frame, LinkType::Ethernet, &s.classify) else {
            continue;
        };
        if UPTO == CLASSIFY {
            black_box(&l);
            done += 1;
            continue;
        }
        let Some(flow) = l.flow else { continue };
        let conns = d.conns();
        let Some(t) = conns.lookup_in(&flow, now).and_then(|id| conns.target(id)) else {
            continue;
        };
        if UPTO == LOOKUP {
            black_box(&t);
            done += 1;
            continue;
        }
        let Some(&mac) = t.dest.and_then(|r| s.macs.get(usize::from(r.dest_index()))) else {
            continue;
        };
        let ok = match s.method {
            Method::Dr => dr(frame, &l, &DrParams::new(mac, DIRECTOR_MAC)).is_ok(),
            _ => {
                let ok = nat_in(frame, &l, t.daddr, t.dport, &s.nat).is_ok();
                frame[0..6].copy_from_slice(&mac);
                frame[6..12].copy_from_slice(&DIRECTOR_MAC);
                ok
            }
        };
        black_box(&*frame);
        done += usize::from(ok);
    }
    done
}

/// Checks, on the first burst, that every stage does its work and that the rewrite stage
/// writes exactly the bytes `process_at` writes.
fn check_stages(d: &mut Director, s: &StageParams, frames: &[Frame], now: Instant) {
    let mut bufs = vec![[0u8; SLOT]; BURST];
    let burst = &frames[..BURST];
    assert_eq!(
        stage_burst::<COPY>(d, s, &mut bufs, burst, ACK_LEN, now),
        BURST
    );
    assert_eq!(
        stage_burst::<CLASSIFY>(d, s, &mut bufs, burst, ACK_LEN, now),
        BURST
    );
    assert_eq!(
        stage_burst::<LOOKUP>(d, s, &mut bufs, burst, ACK_LEN, now),
        BURST
    );
    assert_eq!(
        stage_burst::<REWRITE>(d, s, &mut bufs, burst, ACK_LEN, now),
        BURST
    );
    for (buf, f) in bufs.iter().zip(burst) {
        let ours = &buf[HEAD..HEAD + ACK_LEN];
        check_output(ours, s.method);
        let mut theirs = [0u8; SLOT];
        theirs[HEAD..HEAD + FRAME].copy_from_slice(f);
        let v = d.process_at(&mut theirs, HEAD, HEAD + ACK_LEN, &RX, now);
        let Verdict::Forward(fw) = v else {
            panic!("{v:?}")
        };
        assert_eq!(
            ours,
            &theirs[fw.start..fw.end],
            "the rewrite stage differs from process_at"
        );
    }
}

fn stages(c: &mut Criterion) {
    for n in stage_sizes() {
        let (clients, acks) = replay(n);
        let capacity = (2 * n as u32).max(1 << 16);
        for method in [Method::Dr, Method::Nat] {
            let mut g = c.benchmark_group(format!("director/stages/{}/{n}", method.name()));
            g.throughput(Throughput::Elements(BURST as u64));
            let mut bufs = vec![[0u8; SLOT]; BURST];
            let mut cursor = 0;
            let mut now = Instant::from_secs(100);
            let mut d = director(method, "rr", capacity, None, now);
            open(&mut d, &clients, now);
            let s = StageParams::new(method);
            check_stages(&mut d, &s, &acks, now);
            // Frames sent through each function, and those that went through all its stages.
            let (mut sent, mut done) = (0usize, 0usize);
            macro_rules! stage {
                ($name:literal, $upto:expr) => {
                    g.bench_function($name, |b| {
                        b.iter(|| {
                            now += Duration::from_micros(1);
                            let f = next_burst(&acks, &mut cursor);
                            sent += BURST;
                            done += stage_burst::<{ $upto }>(&d, &s, &mut bufs, f, ACK_LEN, now);
                        })
                    });
                };
            }
            stage!("copy", COPY);
            stage!("classify", CLASSIFY);
            stage!("classify + lookup", LOOKUP);
            stage!("classify + lookup + rewrite", REWRITE);
            assert_eq!(done, sent, "a stage failed on some frames");
            let forwarded = d.stats().forwarded_in;
            g.bench_function("process", |b| {
                b.iter(|| {
                    now += Duration::from_micros(1);
                    let f = next_burst(&acks, &mut cursor);
                    lvs_single(&mut d, &mut bufs, f, ACK_LEN, now);
                })
            });
            assert_eq!(not_forwarded(&d), 0, "{:?}", d.stats());
            assert_eq!(d.conns().len(), n);
            println!(
                "stages {} {n}: {sent} frames through the stages, {} through process_at, none dropped or passed",
                method.name(),
                d.stats().forwarded_in - forwarded
            );
            g.finish();
        }
    }
}

criterion_group! {
    name = benches;
    config = config();
    targets = established, new_conns, stages
}
criterion_main!(benches);
