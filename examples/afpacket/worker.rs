//! One worker: a director, its sockets, and the receive–process–send loop.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Instant;

use lvs::config::ServiceKey;
use lvs::conn::ConnConfig;
use lvs::dest::ForwardMethod;
use lvs::director::{Director, DirectorConfig, DirectorStats, FrameMut, Rx, Side, Stats, Verdict};
use lvs::flow::{Protocol, SocketDisplay};
use lvs::rewrite::vlan_push;
use lvs::sched::SchedConfig;
use lvs::wire::checksum::{fold, sum, udp_nonzero};
use lvs::wire::{Classified, ClassifyOptions, LinkType, classify};

use super::arp;
use super::ring::{PacketSocket, RingConfig, RxRing, TxRing};
use super::sys;

/// Frames processed together.
const BURST: usize = 32;
/// Room before a frame: tunnel headers (GUE over IPv6 is the largest) and a VLAN tag.
const HEADROOM: usize = 128;
/// A frame's buffer: headroom, a jumbo frame, and room for an ICMP error quoting it.
const SLOT: usize = HEADROOM + 9216 + 64;
/// Client addresses whose MAC is learnt from their frames, at most.
const MAX_LEARNED: usize = 1 << 20;

/// What a worker is told by the control thread.
pub enum Msg {
    /// Apply these ipvsadm commands (already checked).
    Rules(String),
    /// A real server's MAC, from the kernel's neighbour table.
    Neighbour(IpAddr, [u8; 6]),
    /// Send back the counters.
    Stats(mpsc::Sender<Snapshot>),
}

/// A real server's row in the report.
pub struct DestRow {
    pub addr: String,
    pub method: &'static str,
    pub weight: u32,
    pub stats: Stats,
}

/// A service's row in the report.
pub struct ServiceRow {
    pub proto: &'static str,
    pub addr: String,
    pub sched: String,
    pub stats: Stats,
    pub dests: Vec<DestRow>,
}

/// A worker's counters.
pub struct Snapshot {
    pub director: DirectorStats,
    pub services: Vec<ServiceRow>,
    pub io: Vec<(&'static str, u64)>,
}

/// Everything a worker is built from.
pub struct WorkerSetup {
    pub client_if: String,
    pub server_if: Option<String>,
    pub ring: RingConfig,
    pub fanout: Option<u16>,
    pub cfg: DirectorConfig,
    pub conn: ConnConfig,
    pub rules: String,
    pub neigh: Vec<(IpAddr, [u8; 6])>,
    pub answer_arp: bool,
    pub client_mac: [u8; 6],
    pub server_mac: [u8; 6],
    pub t0: Instant,
}

#[derive(Default)]
struct Io {
    received: u64,
    outgoing: u64,
    truncated: u64,
    checksums_completed: u64,
    arp_answered: u64,
    sent: u64,
    learned_full: u64,
}

#[derive(Clone, Copy)]
struct Meta {
    side: Side,
    /// Source address and MAC of a client's frame, to learn where its replies go.
    learn: Option<(IpAddr, [u8; 6])>,
}

pub struct Worker {
    director: Director,
    client: PacketSocket,
    server: Option<PacketSocket>,
    answer_arp: bool,
    client_mac: [u8; 6],
    server_mac: [u8; 6],
    vips: HashSet<IpAddr>,
    pinned: HashSet<IpAddr>,
    learned: HashMap<IpAddr, [u8; 6]>,
    scratch: Vec<u8>,
    meta: [Meta; BURST],
    verdicts: [Verdict; BURST],
    io: Io,
    t0: Instant,
}

fn vips(d: &Director) -> HashSet<IpAddr> {
    d.services()
        .iter()
        .filter_map(|s| match s.key() {
            ServiceKey::Addr { addr, .. } => Some(addr),
            _ => None,
        })
        .collect()
}

impl Worker {
    pub fn new(s: WorkerSetup) -> io::Result<Worker> {
        let now = lvs::time::Instant::from_nanos(s.t0.elapsed().as_nanos() as u64);
        let mut director = Director::new(s.cfg, s.conn, SchedConfig::default(), now);
        director
            .apply_rules(&s.rules)
            .map_err(|e| io::Error::other(e.to_string()))?;
        for &(ip, mac) in &s.neigh {
            director.set_neighbour(ip, mac);
        }
        let client = PacketSocket::open(&s.client_if, &s.ring, s.fanout)?;
        let server = match &s.server_if {
            Some(i) => Some(PacketSocket::open(i, &s.ring, s.fanout)?),
            None => None,
        };
        Ok(Worker {
            vips: vips(&director),
            director,
            client,
            server,
            answer_arp: s.answer_arp,
            client_mac: s.client_mac,
            server_mac: s.server_mac,
            pinned: s.neigh.iter().map(|(ip, _)| *ip).collect(),
            learned: HashMap::new(),
            scratch: vec![0; BURST * SLOT],
            meta: [Meta {
                side: Side::Client,
                learn: None,
            }; BURST],
            verdicts: [Verdict::Pass(lvs::director::PassReason::NotIp); BURST],
            io: Io::default(),
            t0: s.t0,
        })
    }

    fn now(&self) -> lvs::time::Instant {
        lvs::time::Instant::from_nanos(self.t0.elapsed().as_nanos() as u64)
    }

    /// The loop: until SIGINT/SIGTERM or the control thread hangs up.
    pub fn run(mut self, rx: mpsc::Receiver<Msg>) -> io::Result<Snapshot> {
        let mut fds = vec![self.client.fd()];
        if let Some(s) = &self.server {
            fds.push(s.fd());
        }
        let mut last_expire = 0u64;
        loop {
            if sys::STOP.load(Ordering::Relaxed) {
                return Ok(self.snapshot());
            }
            sys::poll_readable(&fds, 10);
            // Rings are drained whatever poll says: a V3 block can be handed over between
            // poll and the next look.
            while self.burst(false)
                + if self.server.is_some() {
                    self.burst(true)
                } else {
                    0
                }
                > 0
            {}
            let now = self.now();
            let ms = now.as_nanos() / 1_000_000;
            if ms != last_expire {
                last_expire = ms;
                for _ in 0..8 {
                    if self.director.expire(now, 1 << 14).done {
                        break;
                    }
                }
            }
            loop {
                match rx.try_recv() {
                    Ok(Msg::Rules(text)) => {
                        // Checked by the control thread on a director with the same rules.
                        let _ = self.director.apply_rules(&text);
                        self.vips = vips(&self.director);
                    }
                    Ok(Msg::Neighbour(ip, mac)) => {
                        if !self.pinned.contains(&ip) {
                            self.director.set_neighbour(ip, mac);
                        }
                    }
                    Ok(Msg::Stats(tx)) => {
                        let _ = tx.send(self.snapshot());
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => return Ok(self.snapshot()),
                }
            }
        }
    }

    /// Receives up to a burst from one socket, processes it and sends what is to be sent;
    /// returns the frames received.
    fn burst(&mut self, from_server: bool) -> usize {
        let now = self.now();
        let Worker {
            director,
            client,
            server,
            scratch,
            meta,
            io,
            vips,
            answer_arp,
            client_mac,
            server_mac,
            verdicts,
            learned,
            pinned,
            ..
        } = self;
        let (ring, side): (&mut PacketSocket, Option<Side>) = match (from_server, server.as_mut()) {
            (true, Some(s)) => (s, Some(Side::Server)),
            (true, None) => return 0,
            (false, Some(_)) => (client, Some(Side::Client)),
            (false, None) => (client, None),
        };
        let PacketSocket { rx, tx, .. } = ring;
        let mut ctx = Fill {
            io,
            director,
            vips,
            answer_arp: *answer_arp && side != Some(Side::Server),
            mac: *client_mac,
        };
        let (n, got) = fill(rx, tx, side, scratch, meta, &mut ctx);
        if n == 0 {
            tx.flush();
            return got;
        }
        let mut chunks = scratch.chunks_exact_mut(SLOT);
        let mut frames: [FrameMut<'_>; BURST] = std::array::from_fn(|_| FrameMut {
            buf: chunks.next().unwrap_or_default(),
            start: 0,
            end: 0,
        });
        for f in frames.iter_mut().take(n) {
            (f.start, f.end) = span(f.buf);
        }
        // Runs of frames from the same side go through the batch path together.
        let mut i = 0;
        while i < n {
            let s = meta[i].side;
            let j = (i..n).find(|&j| meta[j].side != s).unwrap_or(n);
            director.process_batch(&mut frames[i..j], &Rx::new(s), now, &mut verdicts[i..j]);
            i = j;
        }
        for k in 0..n {
            let (to, range) = match verdicts[k] {
                Verdict::Forward(f) => (f.to, f.start..f.end),
                Verdict::Reply(r) => (r.to, r.start..r.end),
                _ => continue,
            };
            if let (Verdict::Forward(f), Some((ip, mac))) = (verdicts[k], meta[k].learn)
                && f.to == Side::Server
                && !pinned.contains(&ip)
                && learned.get(&ip) != Some(&mac)
            {
                if learned.len() < MAX_LEARNED || learned.contains_key(&ip) {
                    learned.insert(ip, mac);
                    director.set_neighbour(ip, mac);
                } else {
                    io.learned_full += 1;
                }
            }
            let frame = &mut frames[k].buf[range];
            let out: &mut TxRing = match (to, server.as_mut()) {
                (Side::Server, Some(s)) => {
                    frame[6..12].copy_from_slice(server_mac);
                    &mut s.tx
                }
                _ => {
                    if server.is_some() {
                        frame[6..12].copy_from_slice(client_mac);
                    }
                    &mut client.tx
                }
            };
            if out.push(frame) {
                io.sent += 1;
            }
        }
        client.tx.flush();
        if let Some(s) = server.as_mut() {
            s.tx.flush();
        }
        got
    }

    fn snapshot(&self) -> Snapshot {
        let d = &self.director;
        let services = d
            .services()
            .iter()
            .map(|svc| {
                let key = svc.key();
                let (proto, addr) = match key {
                    ServiceKey::Addr { proto, addr, port } => {
                        (proto_name(proto), SocketDisplay(addr, port).to_string())
                    }
                    ServiceKey::Fwmark { mark, ipv6 } => {
                        ("FWM", format!("{mark}{}", if ipv6 { " IPv6" } else { "" }))
                    }
                    #[allow(unreachable_patterns)]
                    _ => ("?", String::new()),
                };
                let dests = svc
                    .pool()
                    .dests()
                    .iter()
                    .map(|(_, dest)| DestRow {
                        addr: SocketDisplay(dest.addr(), dest.port()).to_string(),
                        method: match dest.method() {
                            ForwardMethod::Nat => "Masq",
                            ForwardMethod::Tunnel(_) => "Tunnel",
                            _ => "Route",
                        },
                        weight: dest.weight(),
                        stats: d
                            .dest_stats(&key, dest.addr(), dest.port())
                            .unwrap_or_default(),
                    })
                    .collect();
                ServiceRow {
                    proto,
                    addr,
                    sched: svc.options().scheduler.to_string(),
                    stats: d.service_stats(&key).unwrap_or_default(),
                    dests,
                }
            })
            .collect();
        let mut io = vec![
            ("frames received", self.io.received),
            ("frames sent", self.io.sent),
            ("skipped: sent by this host", self.io.outgoing),
            ("skipped: truncated or too long", self.io.truncated),
            ("partial checksums completed", self.io.checksums_completed),
            (
                "ARP / neighbour solicitations answered",
                self.io.arp_answered,
            ),
            ("client MACs not learnt (table full)", self.io.learned_full),
        ];
        for (name, s) in [
            ("client", Some(&self.client)),
            ("server", self.server.as_ref()),
        ] {
            if let Some(s) = s {
                io.push((
                    if name == "client" {
                        "tx ring full (client side)"
                    } else {
                        "tx ring full (server side)"
                    },
                    s.tx.full,
                ));
                io.push((
                    if name == "client" {
                        "tx refused (client side)"
                    } else {
                        "tx refused (server side)"
                    },
                    s.tx.refused,
                ));
            }
        }
        Snapshot {
            director: *d.stats(),
            services,
            io,
        }
    }
}

fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Udp => "UDP",
        Protocol::Sctp => "SCTP",
        _ => "TCP",
    }
}

/// Where frame `i` lies in its buffer (recorded by `fill` in the first bytes of headroom).
fn span(buf: &[u8]) -> (usize, usize) {
    let s = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let e = u32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
    (s, e)
}

struct Fill<'a> {
    io: &'a mut Io,
    director: &'a Director,
    vips: &'a HashSet<IpAddr>,
    answer_arp: bool,
    mac: [u8; 6],
}

/// Copies up to a burst of frames from the ring into the scratch slots (answering ARP on the
/// way); returns the frames to process and the frames received.
fn fill(
    rx: &mut RxRing,
    tx: &mut TxRing,
    side: Option<Side>,
    scratch: &mut [u8],
    meta: &mut [Meta; BURST],
    c: &mut Fill<'_>,
) -> (usize, usize) {
    let mut n = 0;
    let mut got = 0;
    let mut reply = [0u8; 128];
    while n < BURST {
        let Some(f) = rx.next() else { break };
        got += 1;
        c.io.received += 1;
        if f.outgoing {
            c.io.outgoing += 1;
            continue;
        }
        let len = f.data.len();
        if len < f.len as usize || HEADROOM + len + 4 > SLOT - 64 {
            c.io.truncated += 1;
            continue;
        }
        if c.answer_arp
            && let Some(k) = arp::answer(f.data, c.mac, c.vips, &mut reply)
        {
            c.io.arp_answered += 1;
            tx.push(&reply[..k]);
            continue;
        }
        let slot = &mut scratch[n * SLOT..(n + 1) * SLOT];
        slot[HEADROOM..HEADROOM + len].copy_from_slice(f.data);
        let mut start = HEADROOM;
        let end = HEADROOM + len;
        if let Some((tpid, tci)) = f.vlan
            && let Ok(s) = vlan_push(slot, start, tpid, tci)
        {
            start = s;
        }
        let frame = &mut slot[start..end];
        if f.csum_partial && complete_checksum(frame) {
            c.io.checksums_completed += 1;
        }
        let side = side.unwrap_or_else(|| c.director.side_of(frame));
        let learn = (side == Side::Client).then(|| source(frame)).flatten();
        slot[..4].copy_from_slice(&(start as u32).to_ne_bytes());
        slot[4..8].copy_from_slice(&(end as u32).to_ne_bytes());
        meta[n] = Meta { side, learn };
        n += 1;
    }
    (n, got)
}

/// The source address and MAC of an Ethernet frame carrying IP (unicast source MAC only).
fn source(frame: &[u8]) -> Option<(IpAddr, [u8; 6])> {
    let mac: [u8; 6] = frame.get(6..12)?.try_into().ok()?;
    if mac[0] & 1 != 0 {
        return None;
    }
    let ip = match u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]) {
        0x0800 => IpAddr::from(<[u8; 4]>::try_from(frame.get(26..30)?).ok()?),
        0x86dd => IpAddr::from(<[u8; 16]>::try_from(frame.get(22..38)?).ok()?),
        _ => return None,
    };
    Some((ip, mac))
}

/// Completes a TCP or UDP checksum that a transmit offload left partial (the field holds
/// the pseudo-header sum, TP_STATUS_CSUMNOTREADY): the one's-complement sum of the segment
/// as it is, complemented. Returns whether it did.
pub fn complete_checksum(frame: &mut [u8]) -> bool {
    let Ok(Classified::Ip(l)) = classify(frame, LinkType::Ethernet, &ClassifyOptions::default())
    else {
        return false;
    };
    let l4 = l.l4_offset as usize;
    let end = (l.l3_offset as usize + l.ip_len as usize).min(frame.len());
    let field = match l.l4_proto {
        6 => 16,
        17 => 6,
        _ => return false,
    };
    if l4 + field + 2 > end {
        return false;
    }
    let mut c = !fold(sum(0, &frame[l4..end]));
    if l.l4_proto == 17 {
        c = udp_nonzero(c);
    }
    frame[l4 + field..l4 + field + 2].copy_from_slice(&c.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
    use lvs::wire::checksum::{pseudo_header_v4, pseudo_header_v6};

    fn check(frame: &[u8]) -> bool {
        let p = SlicedPacket::from_ethernet(frame).unwrap();
        let (src, dst, v6) = match &p.net {
            Some(etherparse::NetSlice::Ipv4(ip)) => (
                ip.header().source().to_vec(),
                ip.header().destination().to_vec(),
                false,
            ),
            Some(etherparse::NetSlice::Ipv6(ip)) => (
                ip.header().source().to_vec(),
                ip.header().destination().to_vec(),
                true,
            ),
            _ => panic!(),
        };
        match (&p.transport, v6) {
            (Some(TransportSlice::Tcp(t)), false) => {
                t.to_header()
                    .calc_checksum_ipv4_raw(
                        src.try_into().unwrap(),
                        dst.try_into().unwrap(),
                        t.payload(),
                    )
                    .unwrap()
                    == t.checksum()
            }
            (Some(TransportSlice::Udp(u)), true) => {
                u.to_header()
                    .calc_checksum_ipv6_raw(
                        src.try_into().unwrap(),
                        dst.try_into().unwrap(),
                        u.payload(),
                    )
                    .unwrap()
                    == u.checksum()
            }
            _ => panic!(),
        }
    }

    #[test]
    fn partial_checksums_are_completed() {
        // TCP over IPv4: the offload leaves the folded pseudo-header sum in the field.
        let mut f = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(1234, 80, 7, 1000)
            .write(&mut f, b"hello, partial world")
            .unwrap();
        assert!(check(&f));
        let tcp_len = (f.len() - 34) as u16;
        let partial = fold(pseudo_header_v4([10, 0, 0, 1], [10, 0, 0, 2], 6, tcp_len));
        f[34 + 16..34 + 18].copy_from_slice(&partial.to_be_bytes());
        assert!(!check(&f));
        assert!(complete_checksum(&mut f));
        assert!(check(&f));

        // UDP over IPv6.
        let (s, d) = ([0xfd; 16], [0xfe; 16]);
        let mut f = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv6(s, d, 64)
            .udp(5353, 53)
            .write(&mut f, b"partial")
            .unwrap();
        let len = (f.len() - 54) as u32;
        let partial = fold(pseudo_header_v6(&s, &d, 17, len));
        f[54 + 6..54 + 8].copy_from_slice(&partial.to_be_bytes());
        assert!(!check(&f));
        assert!(complete_checksum(&mut f));
        assert!(check(&f));

        // Not TCP or UDP, or cut short: left alone.
        assert!(!complete_checksum(&mut f[..40]));
        assert!(!complete_checksum(&mut [0u8; 10]));
    }

    #[test]
    fn the_source_of_a_client_frame() {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1, 2)
            .write(&mut f, b"")
            .unwrap();
        assert_eq!(
            source(&f),
            Some(("10.0.0.1".parse().unwrap(), [2, 0, 0, 0, 0, 1]))
        );
        f[6] = 0x01;
        assert_eq!(source(&f), None, "multicast source MAC");
        assert_eq!(source(&f[..20]), None);
    }
}
