//! One frame at a time through a director, the way a capture replay drives it: the capture's
//! timestamps are the clock, the frame's addresses say which side it came from, and the source
//! MACs of client frames fill the neighbour table for NAT replies.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;

use lvs::conn::ConnConfig;
use lvs::director::{Director, DirectorConfig, RulesError, Rx, Side, Verdict};
use lvs::sched::SchedConfig;
use lvs::time::Instant;
use lvs::wire::{Classified, ClassifyOptions, LinkType, classify};

/// Bytes before each frame, for tunnel headers (IPv6 outer header plus GUE: 48).
pub const HEADROOM: usize = 128;
/// Bytes after each frame, for an ICMP reply longer than the frame it answers (at most the
/// link header, 48 bytes of headers and a 1232-byte quote).
pub const TAILROOM: usize = 1600;
/// Work the connection table may do per expiry call (the engine calls again until done).
const EXPIRE_BUDGET: u32 = 1 << 16;

/// What the command line says about the director's own network.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Net {
    /// The director's MAC (`--mac`), the source of every frame it sends.
    pub mac: Option<[u8; 6]>,
    /// Where replies to clients of unknown MAC go (`--gateway`).
    pub gateway: Option<Gateway>,
    /// Outer source of IPv4 tunnels (`--tunnel-src-v4`).
    pub tunnel_src_v4: Option<Ipv4Addr>,
    /// Outer source of IPv6 tunnels (`--tunnel-src-v6`).
    pub tunnel_src_v6: Option<Ipv6Addr>,
    /// Path MTU towards the real servers (`--mtu`), 0 = no check.
    pub mtu: u32,
    /// Connection table size per address family (`--capacity`), 0 = the crate's default.
    pub capacity: u32,
}

/// The client-side gateway: a MAC, or an address of the neighbour file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gateway {
    /// This MAC.
    Mac([u8; 6]),
    /// The MAC the neighbour file gives this address.
    Ip(IpAddr),
}

/// A rules text and a neighbour table: what the director is configured with.
#[derive(Clone, Debug)]
pub struct Setup {
    /// Where the rules came from (for messages).
    pub rules_name: String,
    /// `ipvsadm -S -n` commands.
    pub rules: String,
    /// Static neighbours, in file order.
    pub neigh: Vec<(IpAddr, [u8; 6])>,
    /// The rest of the command line.
    pub net: Net,
}

/// The outcome of one frame.
#[derive(Clone, Debug)]
pub struct Step {
    /// The director's verdict.
    pub verdict: Verdict,
    /// The side the frame was taken to come from.
    pub side: Side,
    range: Range<usize>,
}

/// A director fed one captured frame at a time.
#[derive(Debug)]
pub struct Engine {
    director: Director,
    link: LinkType,
    classify: ClassifyOptions,
    /// Addresses the neighbour file gave: learning never overrides them.
    pinned: HashSet<IpAddr>,
    learned: HashMap<IpAddr, [u8; 6]>,
    now: Instant,
    expired_ms: u64,
    buf: Vec<u8>,
}

/// Formats a rules error as `FILE:LINE:COLUMN: problem` (or `FILE:LINE: problem`).
pub fn rules_message(name: &str, e: &RulesError) -> String {
    match e {
        RulesError::Parse(p) => format!("{name}:{}:{}: {}", p.line, p.column, p.kind),
        RulesError::Apply { line, error } => format!("{name}:{line}: {error}"),
    }
}

impl Engine {
    /// A director for frames of `link`, configured by `setup`, its clock starting at `start`.
    pub fn new(setup: &Setup, link: LinkType, start: Instant) -> Result<Engine, String> {
        let gateway = match setup.net.gateway {
            None => None,
            Some(Gateway::Mac(m)) => Some(m),
            Some(Gateway::Ip(ip)) => Some(
                setup
                    .neigh
                    .iter()
                    .rev()
                    .find(|(a, _)| *a == ip)
                    .map(|(_, m)| *m)
                    .ok_or_else(|| {
                        format!("--gateway {ip}: the neighbour file gives no MAC for it")
                    })?,
            ),
        };
        let mut cfg = DirectorConfig {
            link,
            client_gateway: gateway,
            addr_v4: setup.net.tunnel_src_v4,
            addr_v6: setup.net.tunnel_src_v6,
            mtu: setup.net.mtu,
            ..DirectorConfig::default()
        };
        if let Some(mac) = setup.net.mac {
            cfg.mac = mac;
        }
        let mut conn = ConnConfig::default();
        if setup.net.capacity > 0 {
            conn.capacity_v4 = setup.net.capacity;
            conn.capacity_v6 = setup.net.capacity;
        }
        let mut director = Director::new(cfg, conn, SchedConfig::default(), start);
        director
            .apply_rules(&setup.rules)
            .map_err(|e| rules_message(&setup.rules_name, &e))?;
        let mut pinned = HashSet::new();
        for &(ip, mac) in &setup.neigh {
            director.set_neighbour(ip, mac);
            pinned.insert(ip);
        }
        Ok(Engine {
            director,
            link,
            classify: ClassifyOptions::default(),
            pinned,
            learned: HashMap::new(),
            now: start,
            expired_ms: start.as_nanos() / 1_000_000,
            buf: Vec::new(),
        })
    }

    /// The director.
    pub fn director(&self) -> &Director {
        &self.director
    }

    /// The director, to configure (a sync master) or drain (its sync datagrams).
    pub fn director_mut(&mut self) -> &mut Director {
        &mut self.director
    }

    /// What frames start with.
    pub fn link(&self) -> LinkType {
        self.link
    }

    /// Client addresses whose MAC was learnt from their frames.
    pub fn learned(&self) -> usize {
        self.learned.len()
    }

    /// The director's clock: the latest capture timestamp seen.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Processes `frame`, captured at `ts_ns` nanoseconds: expires what timed out since the
    /// last frame, decides the side, learns the client's MAC, and asks the director.
    pub fn step(&mut self, ts_ns: u64, frame: &[u8]) -> Step {
        // Captures merged from several interfaces can step back a little: the clock does not.
        self.now = self.now.max(Instant::from_nanos(ts_ns));
        let ms = self.now.as_nanos() / 1_000_000;
        if ms > self.expired_ms {
            self.expired_ms = ms;
            self.expire(self.now);
        }
        let (start, end) = (HEADROOM, HEADROOM + frame.len());
        let need = end + TAILROOM;
        if self.buf.len() < need {
            self.buf.resize(need, 0);
        }
        self.buf[start..end].copy_from_slice(frame);
        let side = self.director.side_of(frame);
        if side == Side::Client {
            self.learn(frame);
        }
        let verdict =
            self.director
                .process_at(&mut self.buf[..need], start, end, &Rx::new(side), self.now);
        let range = match verdict {
            Verdict::Forward(f) => f.start..f.end,
            Verdict::Reply(r) => r.start..r.end,
            Verdict::Pass(_) => start..end,
            Verdict::Drop(_) => start..start,
        };
        Step {
            verdict,
            side,
            range,
        }
    }

    /// Expires what timed out by `now` (bounded: a table that never says it is done cannot
    /// hang the replay).
    fn expire(&mut self, now: Instant) {
        for _ in 0..1024 {
            if self.director.expire(now, EXPIRE_BUDGET).done {
                break;
            }
        }
    }

    /// The bytes to send for `step`: the rewritten frame, the reply, the frame passed on
    /// unchanged, or nothing for a drop. Valid until the next [`Engine::step`].
    pub fn output(&self, step: &Step) -> &[u8] {
        self.buf.get(step.range.clone()).unwrap_or(&[])
    }

    /// Remembers the source MAC of a client's frame as the neighbour of its source address,
    /// so NAT replies go back the way the client's frames came (unless the neighbour file
    /// says otherwise).
    fn learn(&mut self, frame: &[u8]) {
        if self.link != LinkType::Ethernet {
            return;
        }
        let Some(src) = frame.get(6..12) else { return };
        let mac = [src[0], src[1], src[2], src[3], src[4], src[5]];
        if mac[0] & 1 != 0 || mac == [0; 6] {
            return;
        }
        let Ok(Classified::Ip(layout)) = classify(frame, self.link, &self.classify) else {
            return;
        };
        let Some(flow) = layout.flow else { return };
        if self.pinned.contains(&flow.src) || self.learned.get(&flow.src) == Some(&mac) {
            return;
        }
        self.learned.insert(flow.src, mac);
        self.director.set_neighbour(flow.src, mac);
    }
}
