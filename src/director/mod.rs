//! The director: one call per packet, from a received frame to what to do with it.
//!
//! ```text
//!            ┌──────────────────────────── Director ─────────────────────────────┐
//! frame ───▶ │ classify ─▶ service + connection ─▶ schedule? ─▶ state ─▶ rewrite │ ───▶ Verdict
//! (side)     └─────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! A [`Director`] joins the [`Services`] (virtual services and their schedulers, configured by
//! `ipvsadm` rules), a [`ConnTable`] and the [`rewrite`] functions the way
//! IPVS's `ip_vs_in` and `ip_vs_out` join them (ipvs.md §4):
//!
//! - **From the client side** ([`Side::Client`]): the connection is looked up in the in
//!   direction; a packet that may open one (a TCP SYN without RST, or any non-RST segment with
//!   `sloppy_tcp`; any UDP datagram; an SCTP INIT, or any chunk but ABORT with `sloppy_sctp`)
//!   and has none is scheduled on its service (firewall mark, then `(protocol, VIP, port)`,
//!   then the VIP's port-0 service); `conn_reuse_mode` and `expire_nodest_conn` decide about a
//!   SYN that reuses an old tuple. The state machine moves, counters count, and the frame is
//!   rewritten by its connection's method: NAT (destination to the real server), DR (MACs
//!   only) or TUN (encapsulated into the headroom before the frame).
//! - **From the real-server side** ([`Side::Server`]): replies of NAT connections are found in
//!   the out direction and rewritten back to the virtual service.
//! - **ICMP errors** follow their connections both ways (§7.5): an error from the client side
//!   about a packet the director sent goes to the real server (NAT-ed, or as it is for DR and
//!   TUN), an error from a NAT real server goes to the client with the virtual address.
//! - **The director's own replies** ([`Verdict::Reply`]): port unreachable when a service has no
//!   real server available (§4.4), fragmentation needed / Packet Too Big when a packet does not
//!   fit the path to the real server (§7.0), time exceeded when the TTL runs out. They are
//!   written into the frame's buffer and go back out the side the frame came from, from the
//!   address the packet was sent to (the VIP), as the kernel's `icmp_send` chooses it.
//! - Everything else is [`Verdict::Pass`] (not the director's: ARP, other destinations, pings
//!   to the VIP) or [`Verdict::Drop`], each with a reason counted in [`DirectorStats`].
//!
//! What differs from IPVS, and why:
//! - Fragments are not reassembled (that would need memory per packet): a first fragment is
//!   handled by its ports like any packet; a later fragment to a virtual address is dropped
//!   ([`DropReason::Fragment`]). Dataplanes that must carry fragments reassemble before the
//!   director, as the kernel does before IPVS.
//! - Nothing is routed: the caller's neighbour table ([`Neighbours`]) gives the MACs, and the
//!   verdict says which side to send on.
//! - Expiry is driven by the caller: call [`Director::expire`] every millisecond or so (or
//!   with a larger budget less often).
//! - A TUN real server of the other address family than its service (IPVS allows it) takes
//!   no connections: the connection table stores one family per entry, so the director drops
//!   such packets with [`DropReason::MixedFamily`] (one-packet UDP services work). Configure
//!   real servers of the service's family.
//! - The FTP rule of IPVS's service lookup (a miss on ports 20 or ≥ 1024 retries port 21) is
//!   not applied: FTP's data connections need the FTP helper, which the crate does not have.
//! - An ICMP message cut short by a capture's snaplen cannot have its checksum verified (IPVS
//!   verifies every one); it is used as it is.

mod neigh;
mod sync;

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use neigh::{Neighbours, parse_mac};
pub use sync::{SyncBackupConfig, SyncError, SyncReport, SyncStats};

use crate::config::{self, Command, ConfigError, ServiceKey};
use crate::conn::{
    Conn, ConnConfig, ConnError, ConnFlags, ConnId, ConnTable, DestRef, Direction, ExpireReport,
    ScheduleError, Scheduled, SctpEvent, Segment, TcpFlags, Timeouts,
};
use crate::dest::{DestId, ForwardMethod, Tunnel, TunnelCsum, TunnelKind as DestTunnelKind};
use crate::flow::{FlowKey, Protocol};
use crate::rewrite::{
    self, ChecksumMode, DrParams, GueChecksum, IcmpErrorInfo, IcmpReply, NatOptions, RewriteError,
    TunnelKind, TunnelParams,
};
use crate::sched::SchedConfig;
use crate::service::{ServiceError, Services};
use crate::time::Instant;
use crate::wire::{self, Classified, ClassifyOptions, Fragment, Layout, LinkType};

/// Which side of the director a frame came from, or goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The clients' side (the internet, the routers in front of the VIP).
    Client,
    /// The real servers' side.
    Server,
}

/// What the caller knows of a received frame beyond its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rx {
    /// Where it came from.
    pub side: Side,
    /// The firewall mark the caller's classifier gave it (0 = none), for `-f` services.
    pub fwmark: u32,
    /// Whether its layer-4 checksum is complete or left partial by an offload. NAT keeps a
    /// partial checksum partial (the NIC completes it on transmit); GUE with `--tun-remcsum`
    /// tells the real server to complete it (the REMCSUM option, as IPVS); DR and the other
    /// tunnels pass the inner checksum on as it is, so such a frame needs its checksum
    /// completed by the caller (as `afpacket_director` does for every frame it receives).
    pub checksum: ChecksumMode,
}

impl Rx {
    /// A frame from `side`, no mark, complete checksums.
    pub const fn new(side: Side) -> Rx {
        Rx {
            side,
            fwmark: 0,
            checksum: ChecksumMode::Complete,
        }
    }
}

/// A frame to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forward {
    /// The side to send it on.
    pub to: Side,
    /// Where the frame now starts in the buffer (earlier than before after encapsulation).
    pub start: usize,
    /// Where it ends.
    pub end: usize,
    /// The destination MAC written into the frame (Ethernet frames), `None` for bare IP.
    pub dst_mac: Option<[u8; 6]>,
    /// The IP next hop: the real server (DR, NAT, TUN) or the client (NAT replies). A caller
    /// without Ethernet routes to it.
    pub next_hop: IpAddr,
    /// A tunnelled packet over the path MTU that may be fragmented (`pmtu_disc` off).
    pub over_mtu: bool,
}

/// An ICMP error the director sends, written into the frame's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The side to send it on: the side the offending frame came from.
    pub to: Side,
    /// Where the reply starts in the buffer.
    pub start: usize,
    /// Where it ends.
    pub end: usize,
    /// What it says.
    pub kind: IcmpReply,
}

/// What to do with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send the rewritten frame.
    Forward(Forward),
    /// Send this ICMP error instead of the frame.
    Reply(Reply),
    /// Not the director's business: hand the frame, unchanged, to the host (or whatever the
    /// caller does with other traffic).
    Pass(PassReason),
    /// Drop the frame.
    Drop(DropReason),
}

macro_rules! reasons {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => $text:literal,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vm])* $v,)*
        }
        impl $name {
            /// Every reason, in counter order.
            pub const ALL: &'static [$name] = &[$($name::$v,)*];
            /// Number of reasons (the length of the counter array).
            pub const COUNT: usize = Self::ALL.len();
            /// A short name, for counters and logs.
            pub const fn name(self) -> &'static str {
                match self { $($name::$v => $text,)* }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

reasons! {
    /// Why a frame was passed on unchanged.
    PassReason {
        /// Not IP (ARP, LLDP, ...).
        NotIp => "not-ip",
        /// The frame does not parse as IP (counted; the host's stack decides).
        Malformed => "malformed",
        /// No virtual service for its destination, or a protocol LVS does not balance.
        NotOurs => "not-ours",
        /// A packet to a virtual service that neither belongs to a connection nor may open one
        /// (a TCP segment without SYN, say); IPVS hands it to the local stack.
        NoConnection => "no-connection",
        /// An ICMP message that is not an error (an echo request to the VIP).
        IcmpNotError => "icmp-not-error",
        /// A reply from a real server of a DR or TUN connection (they should not come back
        /// through the director).
        NotNat => "not-nat",
        /// A TCP packet from client port 20 (IPVS never schedules active FTP data), or a
        /// non-persistent service whose port differs: IPVS accepts these to the local stack.
        NotScheduled => "not-scheduled",
    }
}

reasons! {
    /// Why a frame was dropped.
    DropReason {
        /// A later IP fragment to a virtual address: the director does not reassemble.
        Fragment => "fragment",
        /// The connection's real server was removed (ipvs.md §4.1 step 7).
        DestUnavailable => "dest-unavailable",
        /// The connection table is full and its policy shed nothing.
        TableFull => "table-full",
        /// The index buckets of this client address and port are full.
        BucketFull => "bucket-full",
        /// No MAC for the next hop in the neighbour table.
        NoNeighbour => "no-neighbour",
        /// A TUN real server of an address family with no tunnel source configured.
        NoTunnelSource => "no-tunnel-source",
        /// Not enough headroom before the frame to encapsulate, or room after it for a reply.
        NoRoom => "no-room",
        /// The rewrite refused the packet (a header cut short or inconsistent).
        Rewrite => "rewrite-error",
        /// The director would reply with an ICMP error but may not (an error about an ICMP
        /// error, a broadcast source, ...) or has no address to send it from.
        NoReply => "no-reply",
        /// An ICMP error about a packet of no known connection, or one that does not parse.
        IcmpUnmatched => "icmp-unmatched",
        /// An ICMP message whose checksum is wrong (IPVS verifies it before use).
        IcmpBadChecksum => "icmp-bad-checksum",
        /// A rewrite needed an Ethernet header the frame lacks.
        NeedsEthernet => "needs-ethernet",
        /// A tunnelled real server of the other address family: the connection table keeps
        /// one family per entry, so such a server can take one-packet (`-o`) UDP only.
        MixedFamily => "mixed-family",
    }
}

/// The counters of `ipvsadm -L --stats`: connections, packets and bytes both ways.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections scheduled (one-packet datagrams included).
    pub conns: u64,
    /// Packets from clients.
    pub in_packets: u64,
    /// Packets to clients (NAT replies).
    pub out_packets: u64,
    /// Bytes from clients (IP packet lengths).
    pub in_bytes: u64,
    /// Bytes to clients.
    pub out_bytes: u64,
}

impl Stats {
    #[inline]
    fn count(&mut self, dir: Direction, len: u32) {
        match dir {
            Direction::Input => {
                self.in_packets += 1;
                self.in_bytes += len as u64;
            }
            Direction::Output => {
                self.out_packets += 1;
                self.out_bytes += len as u64;
            }
        }
    }
}

/// Counters of every verdict the director gave.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectorStats {
    /// Frames forwarded to real servers.
    pub forwarded_in: u64,
    /// Frames forwarded to clients (NAT replies and ICMP errors about them).
    pub forwarded_out: u64,
    /// ICMP errors sent: port unreachable, too big, time exceeded.
    pub replies: [u64; 3],
    /// Frames passed, by [`PassReason`] (index = the reason's position in `PassReason::ALL`).
    pub passed: [u64; PassReason::COUNT],
    /// Frames dropped, by [`DropReason`].
    pub dropped: [u64; DropReason::COUNT],
}

impl DirectorStats {
    /// Frames passed for `r`.
    pub fn passed(&self, r: PassReason) -> u64 {
        self.passed[r as usize]
    }
    /// Frames dropped for `r`.
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.dropped[r as usize]
    }
    /// ICMP errors of kind `k` sent.
    pub fn replied(&self, k: IcmpReply) -> u64 {
        self.replies[reply_index(k)]
    }
    fn count(&mut self, v: &Verdict) {
        match v {
            Verdict::Forward(f) if f.to == Side::Server => self.forwarded_in += 1,
            Verdict::Forward(_) => self.forwarded_out += 1,
            Verdict::Reply(r) => self.replies[reply_index(r.kind)] += 1,
            Verdict::Pass(r) => self.passed[*r as usize] += 1,
            Verdict::Drop(r) => self.dropped[*r as usize] += 1,
        }
    }
}

fn reply_index(k: IcmpReply) -> usize {
    match k {
        IcmpReply::PortUnreachable | IcmpReply::HostUnreachable => 0,
        IcmpReply::TooBig { .. } => 1,
        IcmpReply::TimeExceeded => 2,
    }
}

/// How a director forwards: its own addresses, the link layer, and the IPVS sysctls that
/// shape forwarding. The connection table and schedulers have their own configurations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectorConfig {
    /// What frames start with: Ethernet (MACs rewritten) or bare IP (a TUN device). With bare
    /// IP, a DR packet leaves unchanged but for its TTL, with [`Forward::next_hop`] the real
    /// server: the caller must deliver it to that host's link-layer address itself.
    pub link: LinkType,
    /// The director's MAC: the source MAC of every frame it sends.
    pub mac: [u8; 6],
    /// The MAC to send clients' replies to when the neighbour table has no entry for the
    /// client (the client-side router).
    pub client_gateway: Option<[u8; 6]>,
    /// Outer source address of IPv4 tunnels (and the source of ICMP errors the director sends
    /// to real servers over IPv4).
    pub addr_v4: Option<Ipv4Addr>,
    /// The same for IPv6.
    pub addr_v6: Option<Ipv6Addr>,
    /// Path MTU towards the real servers; 0 skips the check. Packets that exceed it (DF set,
    /// or IPv6) get fragmentation needed / Packet Too Big, as IPVS sends them.
    pub mtu: u32,
    /// `pmtu_disc` (default on): see [`TunnelParams::pmtu_disc`].
    pub pmtu_disc: bool,
    /// `sloppy_tcp` (default off): any non-RST TCP segment may open a connection (a backup
    /// taking over established flows).
    pub sloppy_tcp: bool,
    /// `sloppy_sctp` (default off): any chunk but ABORT may open an SCTP connection.
    pub sloppy_sctp: bool,
    /// UDP port of GUE packets arriving at the director (for classification only).
    pub gue_port: Option<u16>,
    /// Hash tunnelled flows over this many low bits of the tunnel source address (see
    /// [`TunnelParams::src_hash_bits`]); 0 as IPVS.
    pub tunnel_src_hash_bits: u8,
}

impl Default for DirectorConfig {
    fn default() -> Self {
        DirectorConfig {
            link: LinkType::Ethernet,
            mac: [0x02, 0, 0, 0, 0, 1],
            client_gateway: None,
            addr_v4: None,
            addr_v6: None,
            mtu: 0,
            pmtu_disc: true,
            sloppy_tcp: false,
            sloppy_sctp: false,
            gue_port: None,
            tunnel_src_hash_bits: 0,
        }
    }
}

/// Why a rules text was not applied. Nothing of it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RulesError {
    /// The text does not parse.
    Parse(ConfigError),
    /// A command cannot be applied (the kernel would refuse it) at this 1-based line.
    Apply {
        /// Line of the command.
        line: usize,
        /// Why.
        error: ServiceError,
    },
}

impl fmt::Display for RulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RulesError::Parse(e) => fmt::Display::fmt(e, f),
            RulesError::Apply { line, error } => write!(f, "line {line}: {error}"),
        }
    }
}

impl core::error::Error for RulesError {}

/// A frame in a buffer with room around it, for [`Director::process_batch`].
#[derive(Debug)]
pub struct FrameMut<'a> {
    /// The buffer: headroom, the frame, tailroom.
    pub buf: &'a mut [u8],
    /// Where the frame starts.
    pub start: usize,
    /// Where it ends.
    pub end: usize,
}

/// Per real server: counters and what forwarding needs beyond the connection entry.
#[derive(Clone, Copy, Debug, Default)]
struct DestSlot {
    id: Option<DestId>,
    /// Linked in a linked service (IPVS `AVAILABLE`).
    available: bool,
    stats: Stats,
    mac: Option<[u8; 6]>,
    tunnel: Option<Tunnel>,
}

#[derive(Clone, Debug, Default)]
struct SvcSlot {
    key: Option<ServiceKey>,
    stats: Stats,
    dests: Vec<DestSlot>,
}

/// A frame on its way through the pipeline: its buffer and bounds (checked by
/// [`Director::stage`] to lie in the buffer), what the caller said of it, and its layout.
struct Pkt<'b> {
    buf: &'b mut [u8],
    start: usize,
    end: usize,
    rx: Rx,
    layout: Layout,
}

impl<'b> Pkt<'b> {
    fn new(buf: &'b mut [u8], start: usize, end: usize, rx: &Rx, layout: Layout) -> Self {
        Pkt {
            buf,
            start,
            end,
            rx: *rx,
            layout,
        }
    }
}

/// A connection as the forwarding step needs it.
#[derive(Clone, Copy, Debug)]
struct Route {
    /// `None` for a one-packet datagram, which has no entry.
    id: Option<ConnId>,
    flags: ConnFlags,
    daddr: IpAddr,
    dport: u16,
    dest: Option<DestRef>,
}

/// A key no lookup finds (no client port 0 entry exists for it): the batch's placeholder.
const NO_FLOW: FlowKey = FlowKey::new(
    Protocol::Icmp,
    IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    0,
    IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    0,
);

/// The largest frame prefix an ICMP reply quotes: link layer plus the quote limits.
const SCRATCH: usize = 14 + 3 * 4 + rewrite::IPV6_QUOTE_LIMIT;

/// One director: virtual services, their connections, and the per-packet pipeline. See the
/// [module documentation](self). Not shared between cores: give each its own (see
/// [`crate::conn`] for keeping both directions of a NAT connection on one core).
#[derive(Debug)]
pub struct Director {
    cfg: DirectorConfig,
    services: Services,
    conns: ConnTable,
    neigh: Neighbours,
    svc: Vec<SvcSlot>,
    /// Virtual addresses with a service (for fragments), and real servers `(addr, port)`.
    vips: BTreeSet<IpAddr>,
    real_servers: BTreeMap<IpAddr, BTreeSet<u16>>,
    stats: DirectorStats,
    scratch: Vec<u8>,
    batch_stages: Vec<Stage>,
    batch_keys: Vec<FlowKey>,
    batch_found: Vec<Option<ConnId>>,
    classify: ClassifyOptions,
    /// The sync master's sender, when enabled.
    sync: Option<crate::sync::Sender>,
    sync_backup: SyncBackupConfig,
    sync_stats: SyncStats,
}

/// The state a packet reaches after classification, before the connection lookup.
#[derive(Clone, Copy, Debug)]
enum Stage {
    Done(Verdict),
    /// A client-side packet of a balanced protocol (its layout has a flow), ready for the in
    /// lookup.
    In(Layout),
    /// Anything else that needs more work (ICMP, the server side).
    Other(Layout),
}

impl Director {
    /// A director with no services. `now` starts the connection table's clock.
    pub fn new(cfg: DirectorConfig, conn: ConnConfig, sched: SchedConfig, now: Instant) -> Self {
        Director {
            cfg,
            services: Services::new(sched),
            conns: ConnTable::new(conn, now),
            neigh: Neighbours::new(),
            svc: Vec::new(),
            vips: BTreeSet::new(),
            real_servers: BTreeMap::new(),
            stats: DirectorStats::default(),
            scratch: vec![0; SCRATCH],
            batch_stages: Vec::with_capacity(32),
            batch_keys: Vec::with_capacity(32),
            batch_found: Vec::with_capacity(32),
            classify: ClassifyOptions {
                gue_port: cfg.gue_port,
            },
            sync: None,
            sync_backup: SyncBackupConfig::default(),
            sync_stats: SyncStats::default(),
        }
    }

    /// The forwarding configuration.
    pub fn config(&self) -> &DirectorConfig {
        &self.cfg
    }

    /// The virtual services.
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// The connection table.
    pub fn conns(&self) -> &ConnTable {
        &self.conns
    }

    /// The neighbour table.
    pub fn neighbours(&self) -> &Neighbours {
        &self.neigh
    }

    /// Verdict counters.
    pub fn stats(&self) -> &DirectorStats {
        &self.stats
    }

    /// Counters of the service with this key, as `ipvsadm -L --stats` shows them.
    pub fn service_stats(&self, key: &ServiceKey) -> Option<Stats> {
        let n = self.services.number(key)?;
        Some(self.svc.get(n as usize)?.stats)
    }

    /// Counters of one real server of a service.
    pub fn dest_stats(&self, key: &ServiceKey, addr: IpAddr, port: u16) -> Option<Stats> {
        let n = self.services.number(key)?;
        let id = self
            .services
            .by_number(n)?
            .pool()
            .dests()
            .find(addr, port)?;
        Some(self.svc.get(n as usize)?.dests.get(id.index())?.stats)
    }

    /// Sets the MAC of a neighbour (a real server, a router, a client).
    pub fn set_neighbour(&mut self, ip: IpAddr, mac: [u8; 6]) {
        self.neigh.insert(ip, mac);
        self.refresh_macs(ip);
    }

    /// Forgets a neighbour.
    pub fn remove_neighbour(&mut self, ip: &IpAddr) {
        self.neigh.remove(ip);
        self.refresh_macs(*ip);
    }

    fn refresh_macs(&mut self, ip: IpAddr) {
        for (n, slot) in self.svc.iter_mut().enumerate() {
            let Some(svc) = self.services.by_number(n as u16) else {
                continue;
            };
            for d in &mut slot.dests {
                if let Some(dest) = d.id.and_then(|id| svc.pool().dests().get(id))
                    && dest.addr() == ip
                {
                    d.mac = self.neigh.get(&ip);
                }
            }
        }
    }

    /// Applies one `ipvsadm` command (`-A`, `-E`, `-D`, `-C`, `-a`, `-e`, `-d`, `--set`) as
    /// the kernel would, keeping connections: a removed real server's connections stop (their
    /// packets are dropped, or with `expire_nodest_conn` the connections expire), a quiesced
    /// one's (weight 0) continue, persistence templates pointing at an unusable server are
    /// invalidated at their next use.
    pub fn apply(&mut self, cmd: &Command) -> Result<(), ServiceError> {
        self.services.apply(cmd)?;
        if let Command::SetTimeouts { .. } = cmd
            && let Some((tcp, fin, udp)) = self.services.timeouts()
        {
            let mut t: Timeouts = self.conns.config().timeouts;
            t.set(tcp, fin, udp);
            self.conns.set_timeouts(t);
        }
        self.refresh();
        Ok(())
    }

    /// Changes one real server's weight (`ipvsadm -e ... -w`): 0 quiesces it (no new
    /// connections; existing ones continue).
    pub fn set_weight(
        &mut self,
        key: &ServiceKey,
        addr: IpAddr,
        port: u16,
        weight: u32,
    ) -> Result<(), ServiceError> {
        let svc = self.services.get(key).ok_or(ServiceError::NotFound(*key))?;
        let pool = svc.pool();
        let id = pool.dests().find(addr, port).ok_or(ServiceError::Sched(
            crate::sched::SchedError::Dest(crate::dest::DestError::NotFound(addr, port)),
        ))?;
        let mut cfg = pool
            .dests()
            .get(id)
            .ok_or(ServiceError::NotFound(*key))?
            .config();
        cfg.weight = weight;
        self.apply(&Command::EditServer(*key, cfg))
    }

    /// Parses and applies a rules text (what `ipvsadm -S -n` prints): all of it, or, if any
    /// line fails to parse or to apply, nothing.
    pub fn apply_rules(&mut self, text: &str) -> Result<(), RulesError> {
        let rules = config::parse(text).map_err(RulesError::Parse)?;
        let cmds: Vec<&Command> = rules.iter().map(|r| &r.command).collect();
        self.services
            .check(&cmds)
            .map_err(|(i, error)| RulesError::Apply {
                line: rules[i].line,
                error,
            })?;
        for r in &rules {
            self.apply(&r.command).map_err(|error| RulesError::Apply {
                line: r.line,
                error,
            })?;
        }
        Ok(())
    }

    /// The services as `ipvsadm -S -n` prints them (see [`Services::save`]).
    pub fn save(&self) -> String {
        self.services.save()
    }

    /// Rebuilds what the per-packet path caches from the services.
    fn refresh(&mut self) {
        let bound = self.services.number_bound();
        self.svc.resize_with(bound, SvcSlot::default);
        self.vips.clear();
        self.real_servers.clear();
        for n in 0..bound {
            let slot = &mut self.svc[n];
            let Some(svc) = self.services.by_number(n as u16) else {
                *slot = SvcSlot::default();
                continue;
            };
            if slot.key != Some(svc.key()) {
                *slot = SvcSlot {
                    key: Some(svc.key()),
                    ..SvcSlot::default()
                };
            }
            let linked = self.services.is_linked(n as u16);
            if linked && let ServiceKey::Addr { addr, .. } = svc.key() {
                self.vips.insert(addr);
            }
            let dests = svc.pool().dests();
            slot.dests.resize(dests.slot_count(), DestSlot::default());
            for (i, d) in slot.dests.iter_mut().enumerate() {
                let id = dests.id_at(i);
                if d.id != id {
                    *d = DestSlot {
                        id,
                        ..DestSlot::default()
                    };
                }
                let Some(dest) = id.and_then(|id| dests.get(id)) else {
                    d.available = false;
                    continue;
                };
                d.available = linked && dest.is_available();
                d.mac = self.neigh.get(&dest.addr());
                d.tunnel = match dest.method() {
                    ForwardMethod::Tunnel(t) => Some(t),
                    _ => None,
                };
                if linked && dest.is_available() {
                    self.real_servers
                        .entry(dest.addr())
                        .or_default()
                        .insert(dest.port());
                }
            }
        }
    }

    /// Which side a frame comes from, as a capture replay or a one-interface director needs to
    /// know: [`Side::Server`] if its source address and port are a configured real server's
    /// (any port for ICMP, or for a real server of port 0), else [`Side::Client`].
    pub fn side_of(&self, frame: &[u8]) -> Side {
        let Ok(Classified::Ip(l)) = wire::classify(frame, self.cfg.link, &self.classify) else {
            return Side::Client;
        };
        let Some(f) = l.flow else {
            return Side::Client;
        };
        match self.real_servers.get(&f.src) {
            Some(ports)
                if matches!(f.proto, Protocol::Icmp | Protocol::Icmpv6)
                    || ports.contains(&f.sport)
                    || ports.contains(&0) =>
            {
                Side::Server
            }
            _ => Side::Client,
        }
    }

    /// Frees connections whose time is up, doing at most `budget` units of work (see
    /// [`ConnTable::expire`]); real servers' counters are released.
    pub fn expire(&mut self, now: Instant, budget: u32) -> ExpireReport {
        self.conns.expire(&mut self.services, now, budget)
    }

    /// Processes one frame that fills `buf` (no headroom: tunnelling then drops it with
    /// [`DropReason::NoRoom`]; see [`Director::process_at`]).
    pub fn process(&mut self, buf: &mut [u8], side: Side, now: Instant) -> Verdict {
        let end = buf.len();
        self.process_at(buf, 0, end, &Rx::new(side), now)
    }

    /// Processes the frame at `buf[start..end]`: the bytes before `start` are headroom for
    /// tunnel headers, the bytes after `end` room for an ICMP reply longer than the frame.
    /// Never panics and never allocates.
    pub fn process_at(
        &mut self,
        buf: &mut [u8],
        start: usize,
        end: usize,
        rx: &Rx,
        now: Instant,
    ) -> Verdict {
        let v = match self.stage(buf, start, end, rx) {
            Stage::Done(v) => v,
            Stage::In(layout) => match layout.flow {
                Some(flow) => {
                    let mut p = Pkt::new(buf, start, end, rx, layout);
                    self.client_packet(&mut p, flow, None, now)
                }
                None => Verdict::Pass(PassReason::NotOurs),
            },
            Stage::Other(layout) => self.other(&mut Pkt::new(buf, start, end, rx, layout), now),
        };
        self.stats.count(&v);
        v
    }

    /// Processes a burst of frames from one side: the connection lookups of all of them are
    /// made together so their cache misses overlap ([`ConnTable::lookup_in_batch`]); the
    /// result is what [`Director::process_at`] gives for each frame in order. `out[i]`
    /// receives the verdict of `frames[i]`.
    pub fn process_batch(
        &mut self,
        frames: &mut [FrameMut<'_>],
        rx: &Rx,
        now: Instant,
        out: &mut [Verdict],
    ) {
        const B: usize = 32;
        let n = frames.len().min(out.len());
        // Scratch kept between calls: no initialisation per burst.
        let mut stages = core::mem::take(&mut self.batch_stages);
        let mut keys = core::mem::take(&mut self.batch_keys);
        let mut found = core::mem::take(&mut self.batch_found);
        let mut base = 0;
        while base < n {
            let m = (n - base).min(B);
            stages.clear();
            keys.clear();
            for f in &frames[base..base + m] {
                let st = self.stage(f.buf, f.start, f.end, rx);
                keys.push(match &st {
                    Stage::In(l) => l.flow.unwrap_or(NO_FLOW),
                    _ => NO_FLOW,
                });
                stages.push(st);
            }
            found.clear();
            found.resize(m, None);
            self.conns.lookup_in_batch(&keys, now, &mut found);
            let (removed, inserted) = self.table_epoch();
            for i in 0..m {
                let f = &mut frames[base + i];
                let v = match &stages[i] {
                    Stage::Done(v) => *v,
                    Stage::In(layout) => {
                        // The batched answer holds unless an earlier frame of the burst removed
                        // entries (a hit may be gone), or inserted the same key (a miss may be
                        // a hit now).
                        let (r, ins) = self.table_epoch();
                        let pre = match found[i] {
                            Some(_) if r != removed => None,
                            None if ins != inserted && keys[..i].contains(&keys[i]) => None,
                            answer => Some(answer),
                        };
                        let mut p = Pkt::new(f.buf, f.start, f.end, rx, *layout);
                        self.client_packet(&mut p, keys[i], pre, now)
                    }
                    Stage::Other(layout) => {
                        self.other(&mut Pkt::new(f.buf, f.start, f.end, rx, *layout), now)
                    }
                };
                self.stats.count(&v);
                out[base + i] = v;
            }
            base += m;
        }
        self.batch_stages = stages;
        self.batch_keys = keys;
        self.batch_found = found;
    }

    /// Entries removed and inserted so far.
    fn table_epoch(&self) -> (u64, u64) {
        let s = self.conns.stats();
        (s.expired + s.evicted + s.expired_now, s.inserted)
    }

    fn stage(&self, buf: &[u8], start: usize, end: usize, rx: &Rx) -> Stage {
        let Some(frame) = buf.get(start..end) else {
            return Stage::Done(Verdict::Pass(PassReason::Malformed));
        };
        let layout = match wire::classify(frame, self.cfg.link, &self.classify) {
            Ok(Classified::Ip(l)) => l,
            Ok(Classified::NotIp { .. }) => return Stage::Done(Verdict::Pass(PassReason::NotIp)),
            Err(_) => return Stage::Done(Verdict::Pass(PassReason::Malformed)),
        };
        let Some(flow) = layout.flow else {
            return Stage::Done(Verdict::Pass(PassReason::NotOurs));
        };
        if rx.side == Side::Server || matches!(flow.proto, Protocol::Icmp | Protocol::Icmpv6) {
            return Stage::Other(layout);
        }
        if layout.fragment == Fragment::NonFirst {
            return Stage::Done(if self.vips.contains(&flow.dst) {
                Verdict::Drop(DropReason::Fragment)
            } else {
                Verdict::Pass(PassReason::NotOurs)
            });
        }
        Stage::In(layout)
    }

    /// ICMP from either side, and everything from the server side.
    fn other(&mut self, p: &mut Pkt<'_>, now: Instant) -> Verdict {
        let Pkt {
            start,
            end,
            rx,
            layout,
            ..
        } = *p;
        let (rx, layout) = (&rx, &layout);
        let Some(flow) = layout.flow else {
            return Verdict::Pass(PassReason::NotOurs);
        };
        if matches!(flow.proto, Protocol::Icmp | Protocol::Icmpv6) {
            return self.icmp(p, now);
        }
        if layout.fragment == Fragment::NonFirst {
            return Verdict::Pass(PassReason::NotOurs);
        }
        // From a real server: a NAT reply, found in the out direction (§4.6).
        let (id, c) = match self.nat_conn_out(&flow, now) {
            Ok(found) => found,
            Err(v) => return v,
        };
        let frame = &mut p.buf[start..end];
        let opts = NatOptions {
            decrement_ttl: true,
            checksum: rx.checksum,
        };
        if let Err(e) = rewrite::nat_out(frame, layout, c.vaddr, c.vport, &opts) {
            return self.refused(p, e);
        }
        let seg = segment(frame, layout, flow.proto);
        let _ = self.conns.packet(
            &mut self.services,
            id,
            Direction::Output,
            seg,
            layout.ip_len,
            now,
        );
        self.count(c.dest, Direction::Output, layout.ip_len);
        self.send_to_client(p, c.caddr)
    }

    /// The NAT connection a packet from a real server belongs to (out lookup, §4.6), or why
    /// the packet is not the director's.
    fn nat_conn_out(&self, key: &FlowKey, now: Instant) -> Result<(ConnId, Conn), Verdict> {
        let id = self
            .conns
            .lookup_out(key, now)
            .ok_or(Verdict::Pass(PassReason::NoConnection))?;
        let c = self
            .conns
            .get(id)
            .ok_or(Verdict::Pass(PassReason::NoConnection))?;
        if c.flags.fwd() != ConnFlags::MASQ {
            return Err(Verdict::Pass(PassReason::NotNat));
        }
        Ok((id, c))
    }

    /// Sends a frame to a client: the client's MAC, or the gateway's.
    fn send_to_client(&mut self, p: &mut Pkt<'_>, client: IpAddr) -> Verdict {
        let Pkt { start, end, .. } = *p;
        let mut dst_mac = None;
        if self.cfg.link == LinkType::Ethernet {
            let Some(mac) = self.neigh.get(&client).or(self.cfg.client_gateway) else {
                return Verdict::Drop(DropReason::NoNeighbour);
            };
            p.buf[start..start + 6].copy_from_slice(&mac);
            p.buf[start + 6..start + 12].copy_from_slice(&self.cfg.mac);
            dst_mac = Some(mac);
        }
        Verdict::Forward(Forward {
            to: Side::Client,
            start,
            end,
            dst_mac,
            next_hop: client,
            over_mtu: false,
        })
    }

    fn count(&mut self, dest: Option<DestRef>, dir: Direction, len: u32) {
        let Some(d) = dest else { return };
        if let Some(s) = self.svc.get_mut(d.service() as usize) {
            s.stats.count(dir, len);
            if let Some(ds) = s.dests.get_mut(d.dest_index() as usize) {
                ds.stats.count(dir, len);
            }
        }
    }

    fn count_conn(&mut self, dest: Option<DestRef>) {
        let Some(d) = dest else { return };
        if let Some(s) = self.svc.get_mut(d.service() as usize) {
            s.stats.conns += 1;
            if let Some(ds) = s.dests.get_mut(d.dest_index() as usize) {
                ds.stats.conns += 1;
            }
        }
    }

    /// ICMP errors both ways (§7.5); other ICMP is not balanced.
    fn icmp(&mut self, p: &mut Pkt<'_>, now: Instant) -> Verdict {
        let Pkt {
            start,
            end,
            rx,
            layout,
            ..
        } = *p;
        let (rx, layout) = (&rx, &layout);
        let frame = &p.buf[start..end];
        if !icmp_checksum_ok(frame, layout) {
            return Verdict::Drop(DropReason::IcmpBadChecksum);
        }
        let info = match rewrite::icmp_error_info(frame, layout) {
            Ok(i) => i,
            Err(RewriteError::NotIcmpError) => return Verdict::Pass(PassReason::IcmpNotError),
            Err(_) => return Verdict::Drop(DropReason::IcmpUnmatched),
        };
        let Some(quoted) = info.flow else {
            return Verdict::Pass(PassReason::NotOurs);
        };
        let key = quoted.reversed();
        match rx.side {
            Side::Client => {
                let Some(id) = self.conns.lookup_in(&key, now) else {
                    return Verdict::Pass(PassReason::NoConnection);
                };
                let Some(r) = self.route(id) else {
                    return Verdict::Pass(PassReason::NoConnection);
                };
                if !self.dest_ok(id, &r, now) {
                    return Verdict::Drop(DropReason::DestUnavailable);
                }
                self.count(r.dest, Direction::Input, layout.ip_len);
                self.transmit(p, &r, Some(&info), &quoted.reversed())
            }
            Side::Server => {
                let c = match self.nat_conn_out(&key, now) {
                    Ok((_, c)) => c,
                    Err(v) => return v,
                };
                let frame = &mut p.buf[start..end];
                if let Err(e) = rewrite::nat_icmp_out(frame, layout, &info, c.vaddr, c.vport, true)
                {
                    return self.refused(p, e);
                }
                self.count(c.dest, Direction::Output, layout.ip_len);
                self.send_to_client(p, c.caddr)
            }
        }
    }

    #[inline]
    fn route(&self, id: ConnId) -> Option<Route> {
        let c = self.conns.target(id)?;
        Some(Route {
            id: Some(id),
            flags: c.flags,
            daddr: c.daddr,
            dport: c.dport,
            dest: c.dest,
        })
    }

    /// IPVS §4.1 step 7, with the real servers' availability cached: only a connection whose
    /// server is gone goes to the table's check (which counts it and applies
    /// `expire_nodest_conn`).
    #[inline]
    fn dest_ok(&mut self, id: ConnId, r: &Route, now: Instant) -> bool {
        let cached = r.dest.and_then(|d| {
            self.svc
                .get(d.service() as usize)?
                .dests
                .get(d.dest_index() as usize)
        });
        match cached {
            Some(ds) if ds.available => true,
            _ if r.dest.is_none() => true,
            _ => self.conns.check_dest(&mut self.services, id, now).is_ok(),
        }
    }

    /// A client-side packet of TCP, UDP or SCTP: find or make its connection, then forward.
    fn client_packet(
        &mut self,
        p: &mut Pkt<'_>,
        flow: FlowKey,
        found: Option<Option<ConnId>>,
        now: Instant,
    ) -> Verdict {
        let Pkt {
            start,
            end,
            rx,
            layout,
            ..
        } = *p;
        let (rx, layout) = (&rx, &layout);
        let frame = &p.buf[start..end];
        let seg = segment(frame, layout, flow.proto);
        let first = layout.fragment != Fragment::NonFirst;
        let (opens, may_schedule) = match seg {
            Segment::Tcp(f) => (
                f.is_new_conn(),
                !f.contains(TcpFlags::RST) && (f.contains(TcpFlags::SYN) || self.cfg.sloppy_tcp),
            ),
            Segment::Sctp(ev) => (
                ev == SctpEvent::Init,
                ev == SctpEvent::Init || (self.cfg.sloppy_sctp && ev != SctpEvent::Abort),
            ),
            Segment::Udp => (false, true),
            Segment::Other => (false, false),
        };
        let pre = match found {
            Some(pre) => pre,
            None => self.conns.lookup_in(&flow, now),
        };
        let id = match pre {
            // A SYN (or INIT) for an existing tuple: conn_reuse_mode decides.
            Some(id) if opens && first => self.conns.check_reuse(&mut self.services, id, true, now),
            pre => pre,
        };
        let Some(cid) = id else {
            let Some(n) =
                self.services
                    .lookup_number(Some(rx.fwmark), flow.proto, flow.dst, flow.dport)
            else {
                return Verdict::Pass(PassReason::NotOurs);
            };
            if !may_schedule {
                return Verdict::Pass(PassReason::NoConnection);
            }
            return self.schedule(p, &flow, seg, n, now);
        };
        let Some(route) = self.route(cid) else {
            return Verdict::Pass(PassReason::NoConnection);
        };
        if !self.dest_ok(cid, &route, now) {
            return Verdict::Drop(DropReason::DestUnavailable);
        }
        self.forward_conn(p, &flow, seg, &route, now)
    }

    /// Applies the packet to its connection and transmits it.
    fn forward_conn(
        &mut self,
        p: &mut Pkt<'_>,
        flow: &FlowKey,
        seg: Segment,
        r: &Route,
        now: Instant,
    ) -> Verdict {
        let layout = &{ p.layout };
        let Some(id) = r.id else {
            return Verdict::Drop(DropReason::Rewrite);
        };
        if r.flags.has(ConnFlags::NO_CPORT) && flow.sport != 0 {
            // A connection learnt without its client port (a sync message) learns it now, as
            // IPVS's NAT transmitter does.
            let _ = self.conns.set_client_port(id, flow.sport);
        }
        let v = self.transmit(p, r, None, flow);
        // IPVS moves the state and counts before transmitting; a packet the transmitter refuses
        // (too big, TTL) does not reach the real server here, so it does not count.
        if matches!(v, Verdict::Forward(_)) {
            let _ = self.conns.packet(
                &mut self.services,
                id,
                Direction::Input,
                seg,
                layout.ip_len,
                now,
            );
            self.count(r.dest, Direction::Input, layout.ip_len);
            if self.sync.is_some() {
                self.sync_conn(id, now);
            }
        }
        v
    }

    fn schedule(
        &mut self,
        p: &mut Pkt<'_>,
        flow: &FlowKey,
        seg: Segment,
        n: u16,
        now: Instant,
    ) -> Verdict {
        let layout = &{ p.layout };
        let Some(svc) = self.services.by_number_mut(n) else {
            return Verdict::Pass(PassReason::NotOurs);
        };
        match self.conns.schedule(svc, n, flow, now) {
            Ok(Scheduled::Conn(id)) => {
                let Some(r) = self.route(id) else {
                    return Verdict::Drop(DropReason::TableFull);
                };
                let v = self.forward_conn(p, flow, seg, &r, now);
                if matches!(v, Verdict::Forward(_)) {
                    self.count_conn(r.dest);
                } else {
                    // The first packet never left: forget the connection, as IPVS frees a
                    // connection whose first packet its transmitter refused.
                    self.conns.expire_now(&mut self.services, id, now);
                }
                v
            }
            Ok(Scheduled::OnePacket { dest, addr, port }) => {
                let Some(svc) = self.services.by_number(n) else {
                    return Verdict::Pass(PassReason::NotOurs);
                };
                let Some(d) = svc.pool().dests().get(dest) else {
                    return Verdict::Drop(DropReason::DestUnavailable);
                };
                let dref = DestRef::new(n, dest.index() as u16);
                let r = Route {
                    id: None,
                    flags: ConnFlags(ConnFlags::for_method(d.method()).0 | ConnFlags::ONE_PACKET),
                    daddr: addr,
                    dport: port,
                    dest: Some(dref),
                };
                let v = self.transmit(p, &r, None, flow);
                if matches!(v, Verdict::Forward(_)) {
                    self.count_conn(r.dest);
                    self.count(r.dest, Direction::Input, layout.ip_len);
                }
                v
            }
            Err(ScheduleError::NoDest) => self.reply(p, IcmpReply::PortUnreachable),
            Err(ScheduleError::FtpData | ScheduleError::PortMismatch) => {
                Verdict::Pass(PassReason::NotScheduled)
            }
            Err(ScheduleError::Table(ConnError::BucketFull)) => {
                Verdict::Drop(DropReason::BucketFull)
            }
            Err(ScheduleError::Table(ConnError::FamilyMismatch)) => {
                Verdict::Drop(DropReason::MixedFamily)
            }
            Err(_) => Verdict::Drop(DropReason::TableFull),
        }
    }

    /// The forwarding method's transmitter (§7): NAT, DR or TUN, for a packet or an ICMP error
    /// about one (`icmp`).
    fn transmit(
        &mut self,
        p: &mut Pkt<'_>,
        r: &Route,
        icmp: Option<&IcmpErrorInfo>,
        flow: &FlowKey,
    ) -> Verdict {
        let Pkt {
            start,
            end,
            rx,
            layout,
            ..
        } = *p;
        let (rx, layout) = (&rx, &layout);
        let ds = r.dest.and_then(|d| {
            self.svc
                .get(d.service() as usize)?
                .dests
                .get(d.dest_index() as usize)
        });
        let (mac, tunnel) = match ds {
            Some(d) => (d.mac, d.tunnel),
            None => (self.neigh.get(&r.daddr), None),
        };
        let ether = self.cfg.link == LinkType::Ethernet;
        let fwd = r.flags.fwd();
        if fwd == ConnFlags::TUNNEL {
            return self.tunnel(p, r, mac, tunnel, flow);
        }
        if ether && mac.is_none() {
            return Verdict::Drop(DropReason::NoNeighbour);
        }
        // The path MTU check of §7.0 (not for ICMP errors, as IPVS).
        if icmp.is_none()
            && let Some(mtu) = self.too_big(p.buf, start, layout)
        {
            return self.reply(p, IcmpReply::TooBig { mtu });
        }
        let frame = &mut p.buf[start..end];
        let res = match (fwd, icmp) {
            (ConnFlags::MASQ, None) => rewrite::nat_in(
                frame,
                layout,
                r.daddr,
                r.dport,
                &NatOptions {
                    decrement_ttl: true,
                    checksum: rx.checksum,
                },
            ),
            (ConnFlags::MASQ, Some(info)) => {
                rewrite::nat_icmp_in(frame, layout, info, r.daddr, r.dport, true)
            }
            _ if ether => rewrite::dr(
                frame,
                layout,
                &DrParams::new(mac.unwrap_or_default(), self.cfg.mac),
            ),
            _ => rewrite::decrement_ttl(frame, layout),
        };
        if let Err(e) = res {
            return self.refused(p, e);
        }
        if ether
            && fwd == ConnFlags::MASQ
            && let Some(mac) = mac
        {
            // (DR wrote its MACs already.)
            frame[0..6].copy_from_slice(&mac);
            frame[6..12].copy_from_slice(&self.cfg.mac);
        }
        Verdict::Forward(Forward {
            to: Side::Server,
            start,
            end,
            dst_mac: if ether { mac } else { None },
            next_hop: r.daddr,
            over_mtu: false,
        })
    }

    fn tunnel(
        &mut self,
        p: &mut Pkt<'_>,
        r: &Route,
        mac: Option<[u8; 6]>,
        tunnel: Option<Tunnel>,
        flow: &FlowKey,
    ) -> Verdict {
        let Pkt {
            start,
            end,
            layout,
            rx,
            ..
        } = *p;
        let layout = &layout;
        let ether = self.cfg.link == LinkType::Ethernet;
        if ether && mac.is_none() {
            return Verdict::Drop(DropReason::NoNeighbour);
        }
        let t = tunnel.unwrap_or_default();
        let kind = match t.kind {
            DestTunnelKind::Gue => TunnelKind::Gue {
                port: t.port,
                checksum: match t.csum {
                    TunnelCsum::Csum => GueChecksum::Full,
                    TunnelCsum::RemCsum => GueChecksum::RemCsum,
                    _ => GueChecksum::None,
                },
            },
            DestTunnelKind::Gre => TunnelKind::Gre {
                checksum: t.csum == TunnelCsum::Csum,
            },
            _ => TunnelKind::Ipip,
        };
        let src = match r.daddr {
            IpAddr::V4(_) => self.cfg.addr_v4.map(IpAddr::V4),
            IpAddr::V6(_) => self.cfg.addr_v6.map(IpAddr::V6),
        };
        let Some(src) = src else {
            return Verdict::Drop(DropReason::NoTunnelSource);
        };
        let mut tp = TunnelParams::new(kind, src, r.daddr);
        tp.flow_hash = rewrite::tunnel_flow_hash(flow);
        tp.pmtu_disc = self.cfg.pmtu_disc;
        tp.mtu = self.cfg.mtu;
        tp.src_hash_bits = self.cfg.tunnel_src_hash_bits;
        tp.macs = mac.filter(|_| ether).map(|m| (m, self.cfg.mac));
        tp.inner_partial = rx.checksum == ChecksumMode::Partial;
        let Some(b) = p.buf.get_mut(..end) else {
            return Verdict::Drop(DropReason::Rewrite);
        };
        match rewrite::encap(b, start, layout, &tp) {
            Ok(e) => Verdict::Forward(Forward {
                to: Side::Server,
                start: e.start,
                end: e.end,
                dst_mac: tp.macs.map(|m| m.0),
                next_hop: r.daddr,
                over_mtu: e.over_mtu,
            }),
            Err(e) => self.refused(p, e),
        }
    }

    /// The MTU to report if the packet does not fit the path to the real servers.
    fn too_big(&self, buf: &[u8], start: usize, layout: &Layout) -> Option<u32> {
        let mtu = self.cfg.mtu;
        if mtu == 0 || layout.ip_len <= mtu {
            return None;
        }
        if layout.ip_version == 4 {
            let flags = *buf.get(start + layout.l3_offset as usize + 6)?;
            (flags & 0x40 != 0).then_some(mtu)
        } else {
            Some(mtu)
        }
    }

    /// A rewrite refused the packet: a reply where IPVS sends one, else a drop.
    fn refused(&mut self, p: &mut Pkt<'_>, e: RewriteError) -> Verdict {
        match e {
            RewriteError::TtlExpired => self.reply(p, IcmpReply::TimeExceeded),
            RewriteError::TooBig { mtu } => self.reply(p, IcmpReply::TooBig { mtu }),
            RewriteError::NoHeadroom { .. } => Verdict::Drop(DropReason::NoRoom),
            RewriteError::NoLinkLayer => Verdict::Drop(DropReason::NeedsEthernet),
            _ => Verdict::Drop(DropReason::Rewrite),
        }
    }

    /// Writes the ICMP error `kind` about the frame into its buffer, from the address the
    /// packet was sent to (client side: the VIP) or the director's own (server side).
    fn reply(&mut self, p: &mut Pkt<'_>, kind: IcmpReply) -> Verdict {
        let Pkt {
            start,
            end,
            rx,
            layout,
            ..
        } = *p;
        let (rx, layout) = (&rx, &layout);
        let from = match (rx.side, layout.flow) {
            (Side::Client, Some(f)) => Some(f.dst),
            (Side::Server, Some(f)) => match f.dst {
                IpAddr::V4(_) => self.cfg.addr_v4.map(IpAddr::V4),
                IpAddr::V6(_) => self.cfg.addr_v6.map(IpAddr::V6),
            },
            _ => None,
        };
        let Some(from) = from else {
            return Verdict::Drop(DropReason::NoReply);
        };
        let n = (end - start).min(self.scratch.len());
        self.scratch[..n].copy_from_slice(&p.buf[start..start + n]);
        match rewrite::write_icmp_error(&mut p.buf[start..], &self.scratch[..n], layout, kind, from)
        {
            Ok(len) => Verdict::Reply(Reply {
                to: rx.side,
                start,
                end: start + len,
                kind,
            }),
            Err(RewriteError::OutputTooSmall { .. }) => Verdict::Drop(DropReason::NoRoom),
            Err(_) => Verdict::Drop(DropReason::NoReply),
        }
    }
}

/// Whether an ICMP or ICMPv6 message's checksum verifies (true when the frame is cut short and
/// it cannot be told).
fn icmp_checksum_ok(frame: &[u8], layout: &Layout) -> bool {
    use crate::wire::checksum::{pseudo_header_v6, verifies};
    let l3 = layout.l3_offset as usize;
    let l4 = layout.l4_offset as usize;
    let Some(end) = l3.checked_add(layout.ip_len as usize) else {
        return false;
    };
    let Some(msg) = frame.get(l4..end) else {
        return true;
    };
    if layout.ip_version == 4 {
        return verifies(0, msg);
    }
    let Some(h) = frame.get(l3..l3 + 40) else {
        return false;
    };
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&h[8..24]);
    dst.copy_from_slice(&h[24..40]);
    if let Some(at) = layout.final_dst_offset
        && let Some(d) = frame.get(at as usize..at as usize + 16)
    {
        dst.copy_from_slice(d);
    }
    verifies(pseudo_header_v6(&src, &dst, 58, msg.len() as u32), msg)
}

/// The packet's contribution to its connection's state machine.
fn segment(frame: &[u8], layout: &Layout, proto: Protocol) -> Segment {
    let l4 = layout.l4_offset as usize;
    if layout.fragment == Fragment::NonFirst {
        return Segment::Other;
    }
    match proto {
        Protocol::Tcp => Segment::Tcp(TcpFlags(frame.get(l4 + 13).copied().unwrap_or(0))),
        Protocol::Udp => Segment::Udp,
        Protocol::Sctp => {
            let chunk = frame.get(l4 + 12).copied().unwrap_or(0);
            // The chunk after a COOKIE-ECHO or COOKIE-ACK, for the ABORT rule.
            let next_is_abort = frame
                .get(l4 + 14..l4 + 16)
                .map(|l| u16::from_be_bytes([l[0], l[1]]) as usize)
                .and_then(|len| frame.get(l4 + 12 + len.next_multiple_of(4)))
                .is_some_and(|&t| t == 6);
            Segment::Sctp(SctpEvent::from_chunk(chunk, next_is_abort))
        }
        _ => Segment::Other,
    }
}
