//! The connection table: IPVS connection semantics in fixed memory (ipvs.md §2, §4–§6, §9).
//!
//! ```text
//!   client ──SYN──▶ director ── lookup_in ──▶ hit: the connection's real server
//!                      │                      miss + SYN: schedule() ─▶ new entry
//!                      │ expire(now, budget) every few ms: frees what timed out
//!   real server ──reply──▶ lookup_out (NAT only) ─▶ rewrite the source back to the VIP
//! ```
//!
//! A [`ConnTable`] holds connections keyed as IPVS keys them: the in direction (protocol,
//! client address and port, virtual address and port) and, for NAT replies, the out direction
//! (protocol, real server address and port, client address and port), one entry reachable
//! both ways. IPv4 and IPv6 have their own fixed-capacity storage. Each entry carries its real
//! server, forwarding method, protocol state, expiry, the IPVS flags, packet and byte counters
//! both ways and its persistence template.
//!
//! What IPVS does, and so what the table does (each an explicit option of [`ConnConfig`]):
//! - **State machines and timeouts**: TCP with the kernel's INPUT, OUTPUT and INPUT-ONLY tables
//!   and the `secure_tcp` variant, SCTP, UDP ([`state`]); timeouts per state as
//!   `ipvsadm --set` sets them ([`Timeouts`]), with an IPVS preset and a short preset.
//! - **Accounting**: binding a connection counts it on its real server as inactive; TCP and SCTP
//!   state changes move it between the active and inactive counters; expiry releases it. The
//!   counters live with the real servers ([`DestAccounting`], implemented by
//!   [`Pool`]), so lc, wlc and the others see true load and `OVERLOAD`.
//! - **Persistence templates** (§4.3): client network by netmask or IPv6 prefix, port-0 and
//!   fwmark services, refreshed on use, invalidated when their real server is gone or (with
//!   `expire_quiescent_template`) quiesced; a template outlives its deadline while it still
//!   controls connections, re-armed 60 s at a time as the kernel re-arms its timer.
//! - **Drain**: a quiesced (weight 0) real server keeps its connections; `expire_nodest_conn`
//!   expires a connection whose real server was removed at its next packet and reschedules
//!   SYNs to weight-0 servers; `conn_reuse_mode` reschedules a SYN that reuses the tuple of a
//!   TIME_WAIT or CLOSE connection (and FIN_WAIT for DR/TUN with bit 2).
//!
//! And what a user-space dataplane needs beyond IPVS:
//! - **No thread, no clock**: every call takes `now`. [`ConnTable::expire`] does at most
//!   `budget` units of work (entries examined plus wheel slots visited) and reports whether it
//!   caught up; an entry is dead from the instant its expiry passes, whether or not `expire` has
//!   run, so lookups are exact to the millisecond.
//! - **Bounded memory**: capacity is fixed at construction; when full, [`FullPolicy`] decides:
//!   refuse, evict the inactive entry nearest expiry, or IPVS `drop_entry`-like shedding of
//!   half-open entries first (the default), so a SYN flood cannot push out established
//!   connections.
//! - **Keyed hashing** with a caller-chosen seed and **flat storage**: 56 bytes per IPv4 entry
//!   plus 4.5 bytes of index and 0.5 to 1.5 bytes of timer wheel and half-open ring ([`ConnTable::memory`]).
//! - **Batch lookups** ([`ConnTable::lookup_in_batch`]) that overlap the cache misses of up to
//!   32 keys.
//!
//! # One table per core
//!
//! The table is not shared: give each core (each dataplane thread) its own, with the same
//! configuration, and keep read-only scheduler tables behind an `Arc` if wanted. Both
//! directions of a NAT connection must reach the same core. A dataplane gets that by steering
//! on the client side of the flow, the only side both directions share: use a symmetric RSS
//! key (both directions hash alike; e.g. the 0x6d5a-repeated Toeplitz key) or flow-steering
//! rules on the client address and port, or give each core its own source-NAT address range
//! so replies come back to the core that sent them (what DPVS does with FDIR on the local
//! address and port). When it cannot (a NIC with asymmetric RSS and no steering), it must hand
//! the reply to the owning core, for instance through a per-core ring keyed by the hash of
//! the client address and port (DPVS's "conn redirect"), or run DR/TUN only, where replies
//! bypass the director. A reply that reaches a core without the connection finds no entry and
//! is not rewritten: the table never guesses.

pub mod state;
mod table;

use core::fmt;
use core::net::IpAddr;

use crate::dest::{ConnKind, DestId, ForwardMethod};
use crate::flow::{FlowKey, Protocol};
use crate::sched::{Pool, Scheduler};
use crate::service::VirtualService;
use crate::time::Instant;

pub use state::{
    ConnState, Direction, MAX_TIMEOUT_MS, SctpEvent, SctpState, TcpFlags, TcpState, Timeouts,
};
pub use sync::{SyncOutcome, SyncPolicy, SyncUpdate, state_number};
pub use table::MAX_CAPACITY;
use table::{Addr, Entry, InsertFail, NONE, Table, at_or_after, flag};

/// The real server of a connection, as the caller numbers them: a service number chosen by
/// the caller and the destination's slot index in that service's
/// [`DestSet`](crate::dest::DestSet) ([`DestId::index`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DestRef(pub u32);

impl DestRef {
    /// The destination with slot index `dest_index` of service number `service`.
    pub const fn new(service: u16, dest_index: u16) -> DestRef {
        DestRef((service as u32) << 16 | dest_index as u32)
    }
    /// The service number.
    pub const fn service(self) -> u16 {
        (self.0 >> 16) as u16
    }
    /// The destination's slot index within its service.
    pub const fn dest_index(self) -> u16 {
        self.0 as u16
    }
}

/// What the table needs to know of real servers, and the counters it keeps on them.
///
/// [`Pool`] implements it for one service (it ignores [`DestRef::service`]); a director with
/// many services implements it by dispatching on the service number.
pub trait DestAccounting {
    /// A connection or template now references `dest` (`kind` says which counter).
    fn bind(&mut self, dest: DestRef, kind: ConnKind);
    /// A connection or template released `dest`.
    fn unbind(&mut self, dest: DestRef, kind: ConnKind);
    /// A connection moved between the inactive and active counters.
    fn set_active(&mut self, dest: DestRef, active: bool);
    /// Whether `dest` is still linked in its service and its weight; `None` if unknown.
    fn status(&self, dest: DestRef) -> Option<DestStatus>;
}

/// A real server's availability, as the drain rules need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DestStatus {
    /// Linked in its service (IPVS `AVAILABLE`): false once removed.
    pub available: bool,
    /// Current weight (0 = quiesced).
    pub weight: u32,
}

/// No real servers to account (benchmarks, or a caller that counts elsewhere): every
/// destination is available with weight 1.
impl DestAccounting for () {
    fn bind(&mut self, _: DestRef, _: ConnKind) {}
    fn unbind(&mut self, _: DestRef, _: ConnKind) {}
    fn set_active(&mut self, _: DestRef, _: bool) {}
    fn status(&self, _: DestRef) -> Option<DestStatus> {
        Some(DestStatus {
            available: true,
            weight: 1,
        })
    }
}

impl<S: Scheduler + ?Sized> DestAccounting for Pool<S> {
    fn bind(&mut self, dest: DestRef, kind: ConnKind) {
        if let Some(id) = self.dests().id_at(dest.dest_index() as usize) {
            let _ = Pool::bind(self, id, kind);
        }
    }
    fn unbind(&mut self, dest: DestRef, kind: ConnKind) {
        if let Some(id) = self.dests().id_at(dest.dest_index() as usize) {
            let _ = Pool::unbind(self, id, kind);
        }
    }
    fn set_active(&mut self, dest: DestRef, active: bool) {
        if let Some(id) = self.dests().id_at(dest.dest_index() as usize) {
            let _ = Pool::set_active(self, id, active);
        }
    }
    fn status(&self, dest: DestRef) -> Option<DestStatus> {
        let id = self.dests().id_at(dest.dest_index() as usize)?;
        let d = self.dests().get(id)?;
        Some(DestStatus {
            available: d.is_available(),
            weight: d.weight(),
        })
    }
}

/// IPVS connection flags (`IP_VS_CONN_F_*`, ipvs.md §1.2), the 16 bits the table keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnFlags(pub u16);

impl ConnFlags {
    /// Forwarding-method field mask.
    pub const FWD_MASK: u16 = 0x0007;
    /// NAT (masquerading).
    pub const MASQ: u16 = 0x0000;
    /// Deliver to the local stack.
    pub const LOCALNODE: u16 = 0x0001;
    /// IP tunnelling.
    pub const TUNNEL: u16 = 0x0002;
    /// Direct routing.
    pub const DROUTE: u16 = 0x0003;
    /// Cache bypass.
    pub const BYPASS: u16 = 0x0004;
    /// Created from a sync message.
    pub const SYNC: u16 = 0x0020;
    /// The director will not see replies (every method but NAT).
    pub const NOOUTPUT: u16 = 0x0080;
    /// Counted in the real server's inactive connections.
    pub const INACTIVE: u16 = 0x0100;
    /// Client port not known yet.
    pub const NO_CPORT: u16 = 0x0800;
    /// A persistence template.
    pub const TEMPLATE: u16 = 0x1000;
    /// One-packet scheduling: never stored.
    pub const ONE_PACKET: u16 = 0x2000;

    /// The flags IPVS gives a new local connection forwarded with `method`: the method's bits,
    /// `INACTIVE`, and `NOOUTPUT` unless NAT.
    pub const fn for_method(method: ForwardMethod) -> ConnFlags {
        let fwd = match method {
            ForwardMethod::Nat => Self::MASQ,
            ForwardMethod::DirectRoute => Self::DROUTE,
            ForwardMethod::Tunnel(_) => Self::TUNNEL,
        };
        let noout = if fwd == Self::MASQ { 0 } else { Self::NOOUTPUT };
        ConnFlags(fwd | noout | Self::INACTIVE)
    }

    /// The forwarding-method bits.
    pub const fn fwd(self) -> u16 {
        self.0 & Self::FWD_MASK
    }

    /// Whether every bit of `f` is set.
    pub const fn has(self, f: u16) -> bool {
        self.0 & f == f
    }
}

/// What the table does when it is full and a new connection arrives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FullPolicy {
    /// Refuse the new connection ([`ConnError::Full`]); nothing already in the table is
    /// touched.
    Refuse,
    /// Evict the inactive entry nearest expiry (IPVS `INACTIVE`: UDP, closing TCP, or a
    /// template controlling nothing) among the first 64 entries of the timer wheel; refuse if
    /// there is none.
    EvictOldestInactive,
    /// Like IPVS `drop_entry`: shed a half-open entry (TCP SYN_RECV or SYNACK, SCTP INIT1 or
    /// INIT) nearest expiry first, else an inactive one, among the first 64 entries of the
    /// wheel; refuse if neither. Established connections are never shed, so a SYN flood cannot
    /// push them out. IPVS prunes randomly once a second under memory pressure; the table
    /// prunes exactly when it must.
    #[default]
    DropEntry,
}

/// Table configuration: capacity, policies and the IPVS sysctls that shape connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnConfig {
    /// IPv4 entries (connections and templates), at most [`MAX_CAPACITY`].
    pub capacity_v4: u32,
    /// IPv6 entries, at most [`MAX_CAPACITY`].
    pub capacity_v6: u32,
    /// What to do when full.
    pub full_policy: FullPolicy,
    /// Per-state timeouts.
    pub timeouts: Timeouts,
    /// `secure_tcp`: use the kernel's "dos" TCP table.
    pub secure_tcp: bool,
    /// `conn_reuse_mode` (IPVS default 1): bit 1 reschedules a SYN or SCTP INIT that reuses
    /// the tuple of a TIME_WAIT, CLOSE or SCTP CLOSED connection; bit 2 also of a FIN_WAIT one
    /// the director sees one way only (DR, TUN); 0 keeps the old connection and real server.
    pub conn_reuse_mode: u8,
    /// `expire_nodest_conn` (IPVS default 0): a packet for a connection whose real server was
    /// removed expires it at once (the packet is dropped either way); SYNs for connections on
    /// weight-0 real servers are rescheduled.
    pub expire_nodest_conn: bool,
    /// `expire_quiescent_template` (IPVS default 0): a template whose real server has weight 0
    /// is invalidated when next used, so persistent clients move off a draining server.
    pub expire_quiescent_template: bool,
    /// Seed of the keyed hash. IPVS seeds its connection hash randomly at boot; pass random
    /// bytes (from the OS) in production so remote clients cannot aim at buckets. Decisions
    /// never depend on it.
    pub hash_seed: [u64; 2],
}

impl Default for ConnConfig {
    fn default() -> Self {
        ConnConfig {
            capacity_v4: 1 << 16,
            capacity_v6: 1 << 14,
            full_policy: FullPolicy::DropEntry,
            timeouts: Timeouts::IPVS,
            secure_tcp: false,
            conn_reuse_mode: 1,
            expire_nodest_conn: false,
            expire_quiescent_template: false,
            hash_seed: [0x6c76_735f_636f_6e6e, 0x7461_626c_655f_7631],
        }
    }
}

/// A connection or template in the table. Valid until the next call that may remove entries
/// (`insert`, `schedule`, `expire`, `expire_now`, `flush`, `lookup_in_for_new`,
/// `check_dest`); the table refuses a stale id rather than panic, but a reused slot may
/// answer for a newer connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(u32);

const V6_BIT: u32 = 1 << 31;

impl ConnId {
    fn new(v6: bool, id: u32) -> ConnId {
        ConnId(if v6 { id | V6_BIT } else { id })
    }
    fn parts(self) -> (bool, u32) {
        (self.0 & V6_BIT != 0, self.0 & !V6_BIT)
    }
    /// Whether the connection is IPv6.
    pub fn is_ipv6(self) -> bool {
        self.0 & V6_BIT != 0
    }
}

/// A snapshot of one entry, as `ipvsadm -lnc` would show it plus counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conn {
    /// Its id.
    pub id: ConnId,
    /// IANA protocol number; 0 for the template of a fwmark service.
    pub protocol: u8,
    /// Client address (a template: the client network).
    pub caddr: IpAddr,
    /// Client port (0 for templates and NO_CPORT connections).
    pub cport: u16,
    /// Virtual address (a fwmark template: the mark in the first 32 bits).
    pub vaddr: IpAddr,
    /// Virtual port.
    pub vport: u16,
    /// Real server address.
    pub daddr: IpAddr,
    /// Real server port.
    pub dport: u16,
    /// The real server, if known.
    pub dest: Option<DestRef>,
    /// IPVS flags.
    pub flags: ConnFlags,
    /// Protocol state.
    pub state: ConnState,
    /// When the entry expires (a template controlling connections lives on past it).
    pub expires: Instant,
    /// Packets from the client.
    pub in_packets: u32,
    /// Packets from the real server (NAT only).
    pub out_packets: u32,
    /// Bytes from the client (IP packet lengths as the caller reports them; saturates at 2^40-1).
    pub in_bytes: u64,
    /// Bytes from the real server.
    pub out_bytes: u64,
    /// The template controlling this connection.
    pub template: Option<ConnId>,
    /// For a template: how many connections it controls.
    pub controlled: u32,
}

impl Conn {
    /// The in-direction flow key (client to VIP), `None` for a fwmark template.
    pub fn key(&self) -> Option<FlowKey> {
        Some(FlowKey::new(
            Protocol::from_number(self.protocol)?,
            self.caddr,
            self.cport,
            self.vaddr,
            self.vport,
        ))
    }
}

/// Why the table refused an operation. Every refusal is also counted in [`ConnStats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnError {
    /// A live connection with this key exists.
    Exists,
    /// The table is full and the [`FullPolicy`] found nothing to evict.
    Full,
    /// The key's two index buckets are full (32 entries with the same client address, port and
    /// hash): a client opening that many connections from one port is refused, nobody else.
    BucketFull,
    /// The addresses of a key are not all of one family, or the connection id is of the other.
    FamilyMismatch,
    /// No entry has this id (it expired or was removed).
    Unknown,
    /// The segment's protocol is not the connection's.
    ProtocolMismatch,
    /// The connection's real server was removed (IPVS drops the packet; with
    /// `expire_nodest_conn` the connection is gone too).
    DestUnavailable,
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnError::Exists => "a connection with this key exists",
            ConnError::Full => "connection table full",
            ConnError::BucketFull => "index buckets of this client address and port are full",
            ConnError::FamilyMismatch => "address family mismatch",
            ConnError::Unknown => "no such connection",
            ConnError::ProtocolMismatch => "segment of another protocol",
            ConnError::DestUnavailable => "real server no longer available",
        })
    }
}

impl core::error::Error for ConnError {}

/// Why [`ConnTable::schedule`] created no connection (IPVS `ip_vs_schedule` returning NULL).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ScheduleError {
    /// No real server accepts new connections (IPVS then sends port unreachable, §4.4).
    NoDest,
    /// The client port is 20: IPVS never schedules active FTP data from a real server.
    FtpData,
    /// A non-persistent service whose port is not the packet's (port-0 services must be
    /// persistent).
    PortMismatch,
    /// A real server's slot index does not fit [`DestRef`] (more than 65536 slots).
    DestIndex,
    /// The table refused the entry.
    Table(ConnError),
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScheduleError::NoDest => f.write_str("no real server available"),
            ScheduleError::FtpData => f.write_str("active FTP data is never scheduled"),
            ScheduleError::PortMismatch => f.write_str("service port differs from packet port"),
            ScheduleError::DestIndex => f.write_str("real server index out of range"),
            ScheduleError::Table(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl core::error::Error for ScheduleError {}

impl From<ConnError> for ScheduleError {
    fn from(e: ConnError) -> Self {
        ScheduleError::Table(e)
    }
}

/// A packet's contribution to the state machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Segment {
    /// A TCP segment with these flags.
    Tcp(TcpFlags),
    /// An SCTP packet with this event (see [`SctpEvent::from_chunk`]).
    Sctp(SctpEvent),
    /// A UDP datagram.
    Udp,
    /// Anything else (ICMP entries).
    Other,
}

/// A state transition caused by one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// State before the packet.
    pub from: ConnState,
    /// State after it.
    pub to: ConnState,
}

/// What [`ConnTable::schedule`] created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheduled {
    /// A new connection entry.
    Conn(ConnId),
    /// A one-packet (`-o`) UDP service: forward this datagram to the real server; nothing is
    /// stored.
    OnePacket {
        /// The real server.
        dest: DestId,
        /// Its address.
        addr: IpAddr,
        /// Its port (the packet's port if the real server's is 0).
        port: u16,
    },
}

/// Counters of everything the table did and refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnStats {
    /// Entries created (connections and templates).
    pub inserted: u64,
    /// Entries freed by expiry.
    pub expired: u64,
    /// Entries evicted by the full policy.
    pub evicted: u64,
    /// Connections expired at once (`expire_now`, reuse, `expire_nodest_conn`).
    pub expired_now: u64,
    /// New connections refused because the table was full.
    pub refused_full: u64,
    /// New connections refused because their index buckets were full.
    pub refused_bucket: u64,
    /// Inserts refused because the key existed.
    pub refused_exists: u64,
    /// SYNs that replaced an old connection under `conn_reuse_mode` / `expire_nodest_conn`.
    pub reused: u64,
    /// Templates invalidated (real server gone or quiesced).
    pub templates_invalidated: u64,
    /// Packets refused because their protocol did not match the connection's.
    pub protocol_mismatch: u64,
    /// Packets for connections whose real server was removed.
    pub dest_unavailable: u64,
}

/// What one [`ConnTable::expire`] call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExpireReport {
    /// Work units spent: entries examined plus wheel slots visited.
    pub work: u32,
    /// Entries freed.
    pub expired: u32,
    /// Whether the wheel caught up with `now` (false: call again, the budget ran out).
    pub done: bool,
}

/// Memory the table allocated at construction (it never allocates again).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryUsage {
    /// Bytes of IPv4 storage: entries, index and timer wheel.
    pub v4_bytes: usize,
    /// IPv4 capacity.
    pub v4_capacity: u32,
    /// Bytes of IPv6 storage.
    pub v6_bytes: usize,
    /// IPv6 capacity.
    pub v6_capacity: u32,
}

impl MemoryUsage {
    /// Bytes per IPv4 entry at capacity, index and wheel included.
    pub fn v4_bytes_per_entry(&self) -> f64 {
        self.v4_bytes as f64 / self.v4_capacity.max(1) as f64
    }
    /// Bytes per IPv6 entry at capacity.
    pub fn v6_bytes_per_entry(&self) -> f64 {
        self.v6_bytes as f64 / self.v6_capacity.max(1) as f64
    }
}

/// Protocol code kept in 3 bits of an entry; 0 is `IPPROTO_IP` (fwmark templates).
const fn code_of(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 1,
        Protocol::Udp => 2,
        Protocol::Sctp => 3,
        Protocol::Icmp => 4,
        Protocol::Icmpv6 => 5,
    }
}

const IANA: [u8; 8] = [0, 6, 17, 132, 1, 58, 0, 0];
const TCP: u8 = 1;
const UDP: u8 = 2;
const SCTP: u8 = 3;
/// IPVS re-arms a template still controlling connections every 60 s.
const TEMPLATE_RETRY_MS: u32 = 60_000;
/// IPVS gives a fresh connection 3 s until its first state transition.
const INITIAL_MS: u32 = 3_000;
/// Entries the full policy examines.
const EVICT_SCAN: u32 = 64;

fn ticks(now: Instant) -> u64 {
    now.as_nanos() / 1_000_000
}

/// Parts shared by both families: configuration, counters, clock.
#[derive(Clone, Debug)]
struct Shared {
    cfg: ConnConfig,
    stats: ConnStats,
    /// Largest `now` seen, in milliseconds.
    clock_ms: u64,
    no_cport: [u32; 2],
}

/// A clock step at least this long (longer than any timeout, [`MAX_TIMEOUT_MS`]) makes every
/// entry dead.
const JUMP_MS: u64 = 1 << 30;

impl Shared {
    /// The tick a read-only lookup compares deadlines with: `now`, or, if `now` lies a jump
    /// beyond the clock (no mutating call saw it yet), the clock plus one jump: every deadline
    /// lies before that, so every entry reads as dead, as it is.
    #[inline(always)]
    fn now_tick(&self, now: Instant) -> u32 {
        let ms = ticks(now);
        if ms >= self.clock_ms + JUMP_MS {
            (self.clock_ms + JUMP_MS) as u32
        } else {
            ms as u32
        }
    }

    fn tick(&mut self, now: Instant) -> u32 {
        let ms = ticks(now);
        if ms > self.clock_ms {
            self.clock_ms = ms;
        }
        ms as u32
    }

    fn instant_of(&self, deadline: u32) -> Instant {
        let delta = deadline.wrapping_sub(self.clock_ms as u32) as i32 as i64;
        Instant::from_millis((self.clock_ms as i64 + delta).max(0) as u64)
    }

    fn timeout(&self, code: u8, state: u8) -> u32 {
        let t = &self.cfg.timeouts;
        let ms = match code {
            TCP => t.tcp.get(state as usize).copied().unwrap_or(t.tcp[0]),
            SCTP => t.sctp.get(state as usize).copied().unwrap_or(t.sctp[0]),
            UDP => t.udp,
            _ => t.other,
        };
        ms.min(MAX_TIMEOUT_MS)
    }
}

fn state_of<A: Addr>(e: &Entry<A>) -> ConnState {
    if e.is(flag::TEMPLATE) {
        return ConnState::Template {
            assured: e.state() == 1,
        };
    }
    match e.proto() {
        TCP => ConnState::Tcp(TcpState::from_u8(e.state()).unwrap_or(TcpState::None)),
        SCTP => ConnState::Sctp(SctpState::from_u8(e.state()).unwrap_or(SctpState::None)),
        UDP => ConnState::Udp,
        _ => ConnState::Other,
    }
}

#[inline(always)]
fn dead<A: Addr>(e: &Entry<A>, now: u32) -> bool {
    at_or_after(now, e.deadline) && !(e.is(flag::TEMPLATE) && e.ctl() > 0)
}

fn view<A: Addr>(sh: &Shared, id: u32, e: &Entry<A>) -> Conn {
    let template = (!e.is(flag::TEMPLATE) && e.ctl() != 0).then(|| ConnId::new(A::V6, e.ctl() - 1));
    Conn {
        id: ConnId::new(A::V6, id),
        protocol: IANA[e.proto() as usize],
        caddr: e.caddr.to_ip(),
        cport: e.cport,
        vaddr: e.vaddr.to_ip(),
        vport: e.vport,
        daddr: e.daddr.to_ip(),
        dport: e.dport,
        dest: (e.dest != NONE).then_some(DestRef(e.dest)),
        flags: ConnFlags(e.flags & flag::USER),
        state: state_of(e),
        expires: sh.instant_of(e.deadline),
        in_packets: e.in_pkts,
        out_packets: e.out_pkts,
        in_bytes: e.in_bytes(),
        out_bytes: e.out_bytes(),
        template,
        controlled: if e.is(flag::TEMPLATE) { e.ctl() } else { 0 },
    }
}

fn entry_hash<A: Addr>(t: &Table<A>, e: &Entry<A>) -> u64 {
    if e.is(flag::TEMPLATE) {
        t.hash_template(e.proto(), e.caddr, e.vaddr, e.vport)
    } else {
        t.hash_conn(e.proto(), e.caddr, e.cport)
    }
}

/// The key of a flow in one family.
#[derive(Clone, Copy, Debug)]
struct Parts<A> {
    code: u8,
    c: A,
    cp: u16,
    v: A,
    vp: u16,
}

#[inline(always)]
fn parts<A: Addr>(key: &FlowKey) -> Option<Parts<A>> {
    Some(Parts {
        code: code_of(key.proto),
        c: A::from_ip(key.src)?,
        cp: key.sport,
        v: A::from_ip(key.dst)?,
        vp: key.dport,
    })
}

/// A connection (not a template) with exactly this in key, dead or alive.
#[inline(always)]
fn same_key<A: Addr>(e: &Entry<A>, k: &Parts<A>) -> bool {
    e.caddr == k.c
        && e.cport == k.cp
        && e.vaddr == k.v
        && e.vport == k.vp
        && e.proto() == k.code
        && e.flags & (flag::TEMPLATE | flag::IN_USE) == flag::IN_USE
}

/// IPVS in-lookup match: the key, the NO_CPORT rule, and alive.
#[inline(always)]
fn in_match<A: Addr>(e: &Entry<A>, k: &Parts<A>, now: u32) -> bool {
    same_key(e, k) && (k.cp == 0) == e.is(flag::NO_CPORT) && !dead(e, now)
}

fn find_in<A: Addr>(t: &Table<A>, k: &Parts<A>, now: u32, no_cport: u32) -> Option<u32> {
    let p = t.probe(t.hash_conn(k.code, k.c, k.cp));
    if let Some(id) = t.find(&p, |e| in_match(e, k, now)) {
        return Some(id);
    }
    if k.cp != 0 && no_cport > 0 {
        let k0 = Parts { cp: 0, ..*k };
        let p = t.probe(t.hash_conn(k.code, k.c, 0));
        return t.find(&p, |e| in_match(e, &k0, now));
    }
    None
}

/// An entry with the same in key, dead or alive (to reap before inserting).
fn find_same<A: Addr>(t: &Table<A>, k: &Parts<A>, h: u64) -> Option<u32> {
    t.find(&t.probe(h), |e| same_key(e, k))
}

/// The key of a persistence template (ipvs.md §4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TemplateKey {
    /// IANA protocol number, or 0 for a fwmark service.
    pub protocol: u8,
    /// The client network: client address masked by the service's netmask / prefix length.
    pub client_net: IpAddr,
    /// The virtual address, or for a fwmark service the mark (in the first 32 bits).
    pub vaddr: IpAddr,
    /// The service port for a packet to it (0 for FTP, port-0 and fwmark services).
    pub vport: u16,
}

fn rearm_template(deadline: u32, now: u32) -> u32 {
    let late = now.wrapping_sub(deadline);
    deadline.wrapping_add((late / TEMPLATE_RETRY_MS + 1).wrapping_mul(TEMPLATE_RETRY_MS))
}

/// The real-server counter an entry occupies.
fn conn_kind<A: Addr>(e: &Entry<A>) -> ConnKind {
    if e.is(flag::TEMPLATE) {
        ConnKind::Template
    } else if e.is(flag::INACTIVE) {
        ConnKind::Inactive
    } else {
        ConnKind::Active
    }
}

/// Frees an entry and does its accounting (IPVS `ip_vs_conn_expire` after the timer fired).
fn remove_entry<A: Addr>(
    t: &mut Table<A>,
    sh: &mut Shared,
    acct: &mut (impl DestAccounting + ?Sized),
    id: u32,
    now: u32,
) -> Option<Entry<A>> {
    let e = *t.entry(id)?;
    let h = entry_hash(t, &e);
    t.remove(id, h)?;
    if e.dest != NONE {
        acct.unbind(DestRef(e.dest), conn_kind(&e));
    }
    if e.is(flag::NO_CPORT) {
        sh.no_cport[A::V6 as usize] = sh.no_cport[A::V6 as usize].saturating_sub(1);
    }
    if !e.is(flag::TEMPLATE) && e.ctl() != 0 {
        let tid = e.ctl() - 1;
        if let Some(te) = t.entry_mut(tid)
            && te.is(flag::TEMPLATE)
        {
            let n = te.ctl().saturating_sub(1);
            te.set_ctl(n);
            // A template whose deadline passed while it controlled connections dies at the
            // next 60 s re-arm after the last one ends, as the kernel's timer would.
            if n == 0 && at_or_after(now, te.deadline) {
                let d = rearm_template(te.deadline, now);
                t.set_deadline(tid, d);
            }
        }
    }
    Some(e)
}

fn expire_family<A: Addr>(
    t: &mut Table<A>,
    sh: &mut Shared,
    acct: &mut (impl DestAccounting + ?Sized),
    now: u32,
    budget: &mut u32,
    report: &mut ExpireReport,
    on_expired: &mut Option<&mut dyn FnMut(&Conn)>,
) -> bool {
    if !at_or_after(now, t.cursor) {
        return true;
    }
    let w = t.wheel_slots();
    if now.wrapping_sub(t.cursor) >= w {
        // Every slot comes round once in the last revolution: skip the others.
        t.cursor = now.wrapping_sub(w - 1);
    }
    while at_or_after(now, t.cursor) {
        if *budget == 0 {
            return false;
        }
        *budget -= 1;
        report.work += 1;
        let (head, stop) = t.slot_ends(t.cursor);
        let mut id = head;
        while id != NONE {
            if *budget == 0 {
                return false;
            }
            *budget -= 1;
            report.work += 1;
            let next = t.wheel_next(id).unwrap_or(NONE);
            let last = id == stop;
            let e = match t.entry(id) {
                Some(e) => *e,
                None => break,
            };
            if at_or_after(now, e.deadline) {
                if e.is(flag::TEMPLATE) && e.ctl() > 0 {
                    let d = rearm_template(e.deadline, now);
                    if let Some(te) = t.entry_mut(id) {
                        te.deadline = d;
                    }
                    t.relink(id);
                } else {
                    // Snapshot only for a caller who asked: churn pays for nothing else.
                    let v = on_expired.as_ref().map(|_| view(sh, id, &e));
                    remove_entry(t, sh, acct, id, now);
                    sh.stats.expired += 1;
                    report.expired += 1;
                    if let (Some(f), Some(v)) = (on_expired.as_mut(), v) {
                        f(&v);
                    }
                }
            } else {
                t.relink(id);
            }
            if last {
                break;
            }
            id = next;
        }
        t.cursor = t.cursor.wrapping_add(1);
    }
    true
}

/// Frees one entry by the full policy, if one qualifies.
fn evict_one<A: Addr>(
    t: &mut Table<A>,
    sh: &mut Shared,
    acct: &mut (impl DestAccounting + ?Sized),
    now: u32,
) -> bool {
    let policy = sh.cfg.full_policy;
    if policy == FullPolicy::Refuse {
        return false;
    }
    if policy == FullPolicy::DropEntry {
        while let Some(id) = t.pop_recent() {
            if t.entry(id).is_some_and(|e| {
                !e.is(flag::TEMPLATE) && state_of(e).is_half_open() && !dead(e, now)
            }) {
                remove_entry(t, sh, acct, id, now);
                sh.stats.evicted += 1;
                return true;
            }
        }
    }
    let mut examined = 0;
    let mut inactive = None;
    let mut half_open = None;
    let w = t.wheel_slots();
    'scan: for s in 0..w {
        let (mut id, _) = t.slot_ends(t.cursor.wrapping_add(s));
        while id != NONE {
            let Some(e) = t.entry(id) else { break };
            let controlling = e.is(flag::TEMPLATE) && e.ctl() > 0;
            if !controlling {
                if policy == FullPolicy::DropEntry && state_of(e).is_half_open() {
                    half_open = Some(id);
                    break 'scan;
                }
                if inactive.is_none() && (e.is(flag::INACTIVE) || e.is(flag::TEMPLATE)) {
                    inactive = Some(id);
                    if policy == FullPolicy::EvictOldestInactive {
                        break 'scan;
                    }
                }
            }
            examined += 1;
            if examined >= EVICT_SCAN {
                break 'scan;
            }
            id = t.wheel_next(id).unwrap_or(NONE);
        }
    }
    match half_open.or(inactive) {
        Some(id) => {
            remove_entry(t, sh, acct, id, now);
            sh.stats.evicted += 1;
            true
        }
        None => false,
    }
}

/// Inserts an entry after reaping a dead one with the same key and making room.
#[allow(clippy::too_many_arguments)]
fn insert_family<A: Addr>(
    t: &mut Table<A>,
    sh: &mut Shared,
    acct: &mut (impl DestAccounting + ?Sized),
    mut e: Entry<A>,
    template: Option<u32>,
    h: u64,
    now: u32,
) -> Result<u32, ConnError> {
    if t.len() >= t.capacity() {
        let mut budget = EVICT_SCAN;
        let mut r = ExpireReport::default();
        expire_family(t, sh, acct, now, &mut budget, &mut r, &mut None);
        if t.len() >= t.capacity() && !evict_one(t, sh, acct, now) {
            sh.stats.refused_full += 1;
            return Err(ConnError::Full);
        }
    }
    let code = e.proto();
    if let Some(tid) = template {
        e.set_ctl(tid + 1);
    }
    let id = match t.insert(e, code, h) {
        Ok(id) => id,
        Err(InsertFail::Full) => {
            sh.stats.refused_full += 1;
            return Err(ConnError::Full);
        }
        Err(InsertFail::Bucket) => {
            sh.stats.refused_bucket += 1;
            return Err(ConnError::BucketFull);
        }
    };
    sh.stats.inserted += 1;
    if e.dest != NONE {
        acct.bind(DestRef(e.dest), conn_kind(&e));
    }
    if e.is(flag::NO_CPORT) {
        sh.no_cport[A::V6 as usize] += 1;
    }
    if let Some(tid) = template
        && let Some(te) = t.entry_mut(tid)
    {
        let n = te.ctl() + 1;
        te.set_ctl(n);
    }
    Ok(id)
}

#[allow(clippy::too_many_arguments)]
fn packet_family<A: Addr>(
    t: &mut Table<A>,
    sh: &mut Shared,
    acct: &mut (impl DestAccounting + ?Sized),
    id: u32,
    dir: Direction,
    seg: Segment,
    len: u32,
    now: u32,
) -> Result<Transition, ConnError> {
    let secure = sh.cfg.secure_tcp;
    let e = t.entry_mut(id).ok_or(ConnError::Unknown)?;
    if e.is(flag::TEMPLATE) || dead(e, now) {
        return Err(ConnError::Unknown);
    }
    let code = e.proto();
    let no_output = e.is(flag::NOOUTPUT);
    let from = e.state();
    let to = match (code, seg) {
        (TCP, Segment::Tcp(f)) => {
            let s = TcpState::from_u8(from).unwrap_or(TcpState::None);
            state::tcp_next(s, dir, no_output, f, secure) as u8
        }
        (SCTP, Segment::Sctp(ev)) => {
            let s = SctpState::from_u8(from).unwrap_or(SctpState::None);
            state::sctp_next(s, dir, no_output, ev) as u8
        }
        (UDP, Segment::Udp) => 0,
        (c, Segment::Other) if c != TCP && c != UDP && c != SCTP => from,
        _ => {
            sh.stats.protocol_mismatch += 1;
            return Err(ConnError::ProtocolMismatch);
        }
    };
    let before = state_of(e);
    e.count(dir == Direction::Output, len);
    if dir == Direction::Output && no_output {
        e.flags &= !flag::NOOUTPUT;
    }
    e.set_state(to);
    let after = state_of(e);
    // ipvs.md §2.2: a state change moves the connection between the counters.
    if to != from && (code == TCP || code == SCTP) {
        let active = after.is_active();
        if active == e.is(flag::INACTIVE) {
            e.flags ^= flag::INACTIVE;
            if e.dest != NONE {
                acct.set_active(DestRef(e.dest), active);
            }
        }
    }
    let entered_half_open = to != from && after.is_half_open();
    let tmpl = e.ctl();
    let assure = code == TCP && after == ConnState::Tcp(TcpState::Established) && tmpl != 0;
    let d = now.wrapping_add(sh.timeout(code, to));
    t.set_deadline(id, d);
    if entered_half_open {
        t.push_recent(id);
    }
    if assure && let Some(te) = t.entry_mut(tmpl - 1) {
        te.set_state(1);
    }
    Ok(Transition {
        from: before,
        to: after,
    })
}

/// Dispatches to the family table of a flow key (`$v6`) with `$t` bound to it and `$sh` to the
/// shared part.
macro_rules! family {
    ($self:ident, $v6:expr, |$t:ident, $sh:ident| $body:expr) => {
        if $v6 {
            let $t = &mut $self.v6;
            let $sh = &mut $self.sh;
            $body
        } else {
            let $t = &mut $self.v4;
            let $sh = &mut $self.sh;
            $body
        }
    };
}

macro_rules! family_ref {
    ($self:ident, $v6:expr, |$t:ident| $body:expr) => {
        if $v6 {
            let $t = &$self.v6;
            $body
        } else {
            let $t = &$self.v4;
            $body
        }
    };
}

mod sync;

/// The connection table of one core. See the [module documentation](self).
#[derive(Clone, Debug)]
pub struct ConnTable {
    v4: Table<u32>,
    v6: Table<u128>,
    sh: Shared,
    /// The sync master's memory per entry, allocated at the first [`ConnTable::sync_needed`].
    memo4: alloc::vec::Vec<sync::SyncMemo>,
    memo6: alloc::vec::Vec<sync::SyncMemo>,
}

/// Where a connection forwards to ([`ConnTable::target`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// IPVS flags (forwarding method, `NO_CPORT`, ...).
    pub flags: ConnFlags,
    /// Real server address.
    pub daddr: IpAddr,
    /// Real server port.
    pub dport: u16,
    /// The real server, if known.
    pub dest: Option<DestRef>,
}

/// A new entry, as [`ConnTable::insert`] takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewConn {
    /// Client to VIP; a client port of 0 with [`ConnFlags::NO_CPORT`] makes a wildcard entry.
    pub key: FlowKey,
    /// Real server address (same family as the key).
    pub daddr: IpAddr,
    /// Real server port.
    pub dport: u16,
    /// The real server, `None` if unknown (a sync message naming a server not configured).
    pub dest: Option<DestRef>,
    /// IPVS flags: [`ConnFlags::for_method`], plus `SYNC` or `NO_CPORT` where they apply.
    pub flags: ConnFlags,
    /// The template controlling it.
    pub template: Option<ConnId>,
}

impl ConnTable {
    /// An empty table; all memory is allocated here. `now` starts the timer wheel.
    pub fn new(cfg: ConnConfig, now: Instant) -> ConnTable {
        let t0 = ticks(now) as u32;
        ConnTable {
            v4: Table::new(cfg.capacity_v4, cfg.hash_seed, t0),
            v6: Table::new(cfg.capacity_v6, cfg.hash_seed, t0),
            sh: Shared {
                cfg,
                stats: ConnStats::default(),
                clock_ms: ticks(now),
                no_cport: [0; 2],
            },
            memo4: alloc::vec::Vec::new(),
            memo6: alloc::vec::Vec::new(),
        }
    }

    /// Moves the clock to `now` (the mutating calls' first step). A jump longer than any
    /// timeout rebases every deadline (see `Table::rebase`), so that 32-bit wrapping
    /// deadlines never read as future times.
    fn tick(&mut self, now: Instant) -> u32 {
        let ms = ticks(now);
        if ms >= self.sh.clock_ms + JUMP_MS {
            self.v4.rebase(ms as u32);
            self.v6.rebase(ms as u32);
        }
        self.sh.tick(now)
    }

    /// The configuration.
    pub fn config(&self) -> &ConnConfig {
        &self.sh.cfg
    }

    /// Changes timeouts (`ipvsadm --set`); live connections take them at their next packet.
    pub fn set_timeouts(&mut self, t: Timeouts) {
        self.sh.cfg.timeouts = t;
    }

    /// Changes the drain and reuse options at run time, as the sysctls can be.
    pub fn set_drain(
        &mut self,
        conn_reuse_mode: u8,
        expire_nodest_conn: bool,
        expire_quiescent_template: bool,
    ) {
        self.sh.cfg.conn_reuse_mode = conn_reuse_mode;
        self.sh.cfg.expire_nodest_conn = expire_nodest_conn;
        self.sh.cfg.expire_quiescent_template = expire_quiescent_template;
    }

    /// Entries in use (connections and templates, both families).
    pub fn len(&self) -> usize {
        (self.v4.len() + self.v6.len()) as usize
    }

    /// Whether no entry is in use.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counters.
    pub fn stats(&self) -> &ConnStats {
        &self.sh.stats
    }

    /// Memory allocated, and so bytes per entry.
    pub fn memory(&self) -> MemoryUsage {
        MemoryUsage {
            v4_bytes: self.v4.memory_bytes(),
            v4_capacity: self.v4.capacity(),
            v6_bytes: self.v6.memory_bytes(),
            v6_capacity: self.v6.capacity(),
        }
    }

    /// A snapshot of an entry.
    pub fn get(&self, id: ConnId) -> Option<Conn> {
        let (v6, i) = id.parts();
        family_ref!(self, v6, |t| t.entry(i).map(|e| view(&self.sh, i, e)))
    }

    /// Where a connection forwards to: what a director's per-packet path needs of an entry,
    /// without building a whole [`Conn`].
    #[inline]
    pub fn target(&self, id: ConnId) -> Option<Target> {
        let (v6, i) = id.parts();
        family_ref!(self, v6, |t| t.entry(i).map(|e| Target {
            flags: ConnFlags(e.flags & flag::USER),
            daddr: e.daddr.to_ip(),
            dport: e.dport,
            dest: (e.dest != NONE).then_some(DestRef(e.dest)),
        }))
    }

    /// Every entry in use, live or waiting for `expire`.
    pub fn iter(&self) -> impl Iterator<Item = Conn> + '_ {
        let v4 = self
            .v4
            .ids()
            .map(|i| view(&self.sh, i, self.v4.entry(i).unwrap_or(&Entry::default())));
        let v6 = self
            .v6
            .ids()
            .map(|i| view(&self.sh, i, self.v6.entry(i).unwrap_or(&Entry::default())));
        v4.chain(v6)
    }

    /// IPVS in lookup (client to VIP, ipvs.md §5.2): protocol, client and virtual address and
    /// port; a wildcard (NO_CPORT) entry answers when no exact one does. Templates never
    /// answer, and neither does an entry whose expiry has passed.
    #[inline]
    pub fn lookup_in(&self, key: &FlowKey, now: Instant) -> Option<ConnId> {
        let now = self.sh.now_tick(now);
        if key.is_ipv6() {
            let k = parts::<u128>(key)?;
            find_in(&self.v6, &k, now, self.sh.no_cport[1]).map(|i| ConnId::new(true, i))
        } else {
            let k = parts::<u32>(key)?;
            find_in(&self.v4, &k, now, self.sh.no_cport[0]).map(|i| ConnId::new(false, i))
        }
    }

    /// In lookups of up to 32 keys at once: the index buckets of all keys are read first, then
    /// the candidate entries, then the keys compared, so their cache misses overlap. `out[i]`
    /// receives the answer for `keys[i]`; longer slices are processed 32 at a time.
    pub fn lookup_in_batch(&self, keys: &[FlowKey], now: Instant, out: &mut [Option<ConnId>]) {
        const B: usize = 32;
        let tick = self.sh.now_tick(now);
        for (keys, out) in keys.chunks(B).zip(out.chunks_mut(B)) {
            let n = keys.len().min(out.len());
            let mut parts4 = [None::<Parts<u32>>; B];
            let mut b1 = [0u32; B];
            let mut tags = [0u32; B];
            let mut first = [table::NONE; B];
            let mut masks = [0u32; B];
            // Hash every key first (arithmetic only)...
            for i in 0..n {
                if let Some(p) = parts::<u32>(&keys[i]) {
                    let probe = self.v4.probe(self.v4.hash_conn(p.code, p.c, p.cp));
                    b1[i] = probe.first();
                    tags[i] = probe.tag();
                    parts4[i] = Some(p);
                }
            }
            // ...then start every bucket load in a tight loop, so the misses of all keys are in
            // flight together instead of one key's hashing filling the reorder buffer...
            let mut sink = 0u32;
            for &b in &b1[..n] {
                sink ^= self.v4.touch_bucket_at(b);
            }
            // ...then the candidate entries, the same way...
            for i in 0..n {
                let m = self.v4.candidates(b1[i], tags[i]);
                masks[i] = m;
                if m != 0 {
                    first[i] = self.v4.slot_id(b1[i], m.trailing_zeros());
                }
            }
            for &id in &first[..n] {
                sink ^= self.v4.touch_entry(id);
            }
            // ...and compare.
            for i in 0..n {
                out[i] = match &parts4[i] {
                    Some(p) => {
                        let probe = self.v4.probe_of(b1[i], tags[i]);
                        match self
                            .v4
                            .find_from(&probe, masks[i], |e| in_match(e, p, tick))
                        {
                            Some(id) => Some(ConnId::new(false, id)),
                            None if p.cp != 0 && self.sh.no_cport[0] > 0 => {
                                self.lookup_in(&keys[i], now)
                            }
                            None => None,
                        }
                    }
                    None => self.lookup_in(&keys[i], now),
                };
            }
            core::hint::black_box(sink);
        }
    }

    /// IPVS out lookup (real server to client, NAT replies): `key` is the reply as it travels,
    /// source = real server, destination = client.
    #[inline]
    pub fn lookup_out(&self, key: &FlowKey, now: Instant) -> Option<ConnId> {
        let now = self.sh.now_tick(now);
        fn go<A: Addr>(t: &Table<A>, key: &FlowKey, now: u32) -> Option<u32> {
            let (rs, client) = (A::from_ip(key.src)?, A::from_ip(key.dst)?);
            let code = code_of(key.proto);
            let p = t.probe(t.hash_conn(code, client, key.dport));
            t.find(&p, |e| {
                e.caddr == client
                    && e.cport == key.dport
                    && e.daddr == rs
                    && e.dport == key.sport
                    && e.proto() == code
                    && e.flags & (flag::TEMPLATE | flag::IN_USE) == flag::IN_USE
                    && !dead(e, now)
            })
        }
        let v6 = key.is_ipv6();
        family_ref!(self, v6, |t| go(t, key, now).map(|i| ConnId::new(v6, i)))
    }

    /// The in lookup for a packet that may open a connection (ipvs.md §4.1 step 5): with
    /// `new_conn` (a TCP SYN without RST, an SCTP INIT; never a non-first fragment) and
    /// `conn_reuse_mode` on, an existing connection is expired and `None` returned, so the
    /// caller schedules afresh, when `expire_nodest_conn` is on and its real server has weight
    /// 0, or when it is TCP TIME_WAIT or CLOSE (FIN_WAIT too for DR/TUN with mode bit 2) or
    /// SCTP CLOSED. This follows current kernels, which no longer exempt connections
    /// controlled by a template; without netfilter conntrack there is no old conntrack entry
    /// to wait for, so the SYN is never dropped.
    pub fn lookup_in_for_new(
        &mut self,
        acct: &mut (impl DestAccounting + ?Sized),
        key: &FlowKey,
        new_conn: bool,
        now: Instant,
    ) -> Option<ConnId> {
        let id = self.lookup_in(key, now)?;
        self.check_reuse(acct, id, new_conn, now)
    }

    /// The second half of [`ConnTable::lookup_in_for_new`], for a caller that looked `id` up
    /// already (a batched lookup): `Some(id)` to use the connection, `None` if it was expired
    /// so the packet is scheduled afresh.
    pub fn check_reuse(
        &mut self,
        acct: &mut (impl DestAccounting + ?Sized),
        id: ConnId,
        new_conn: bool,
        now: Instant,
    ) -> Option<ConnId> {
        let mode = self.sh.cfg.conn_reuse_mode;
        if !new_conn || mode == 0 {
            return Some(id);
        }
        let c = self.get(id)?;
        let nodest = self.sh.cfg.expire_nodest_conn
            && c.dest
                .and_then(|d| acct.status(d))
                .is_some_and(|s| s.weight == 0);
        let expects_new = match c.state {
            ConnState::Tcp(TcpState::TimeWait | TcpState::Close) => true,
            ConnState::Tcp(TcpState::FinWait) => mode & 2 != 0 && c.flags.has(ConnFlags::NOOUTPUT),
            ConnState::Sctp(SctpState::Closed) => true,
            _ => false,
        };
        if nodest || expects_new {
            self.sh.stats.reused += 1;
            self.expire_now(acct, id, now);
            None
        } else {
            Some(id)
        }
    }

    /// IPVS §4.1 step 7: a packet for a connection whose real server is no longer available is
    /// dropped (`Err`); with `expire_nodest_conn` the connection is expired too. A quiesced
    /// (weight 0) real server is available: its connections continue.
    pub fn check_dest(
        &mut self,
        acct: &mut (impl DestAccounting + ?Sized),
        id: ConnId,
        now: Instant,
    ) -> Result<(), ConnError> {
        let c = self.get(id).ok_or(ConnError::Unknown)?;
        let Some(d) = c.dest else { return Ok(()) };
        if acct.status(d).is_some_and(|s| s.available) {
            return Ok(());
        }
        self.sh.stats.dest_unavailable += 1;
        if self.sh.cfg.expire_nodest_conn {
            self.expire_now(acct, id, now);
        }
        Err(ConnError::DestUnavailable)
    }

    /// Creates an entry (a connection a scheduler chose, or one learnt from a sync message),
    /// counts it on its real server, and links it to its template. A dead entry with the same
    /// key is reaped first; a live one makes it [`ConnError::Exists`]. When the table is full,
    /// the [`FullPolicy`] applies. The entry starts in state NONE with IPVS's 3 s until its
    /// first packet ([`ConnTable::packet`]).
    pub fn insert(
        &mut self,
        acct: &mut (impl DestAccounting + ?Sized),
        new: &NewConn,
        now: Instant,
    ) -> Result<ConnId, ConnError> {
        let v6 = new.key.is_ipv6();
        if new.daddr.is_ipv6() != v6 || new.key.dst.is_ipv6() != v6 {
            return Err(ConnError::FamilyMismatch);
        }
        if let Some(tp) = new.template
            && tp.is_ipv6() != v6
        {
            return Err(ConnError::FamilyMismatch);
        }
        let tick = self.tick(now);
        let id = family!(self, v6, |t, sh| {
            let k = parts(&new.key).ok_or(ConnError::FamilyMismatch)?;
            insert_conn(t, sh, acct, &k, new, tick)
        })
        .map(|i| ConnId::new(v6, i))?;
        self.reset_memo(id);
        Ok(id)
    }

    /// Applies one packet: counters, the `NOOUTPUT` flag, the state transition of its
    /// direction, active/inactive accounting, the template's "assured" mark, and the new expiry
    /// (now + the state's timeout). `len` is the IP packet length for the byte counters.
    pub fn packet(
        &mut self,
        acct: &mut (impl DestAccounting + ?Sized),
        id: ConnId,
        dir: Direction,
        seg: Segment,
        len: u32,
        now: Instant,
    ) -> Result<Transition, ConnError> {
        let (v6, i) = id.parts();
        let tick = self.tick(now);
        family!(self, v6, |t, sh| packet_family(
            t, sh, acct, i, dir, seg, len, tick
        ))
    }

    /// Fills in the client port of a NO_CPORT connection (IPVS does it at the first packet of
    /// a NAT connection) and re-indexes it.
    pub fn set_client_port(&mut self, id: ConnId, cport: u16) -> Result<(), ConnError> {
        let (v6, i) = id.parts();
        family!(self, v6, |t, sh| {
            let e = *t.entry(i).ok_or(ConnError::Unknown)?;
            if !e.is(flag::NO_CPORT) || e.is(flag::TEMPLATE) {
                return Err(ConnError::Unknown);
            }
            let old = t.hash_conn(e.proto(), e.caddr, e.cport);
            let new = t.hash_conn(e.proto(), e.caddr, cport);
            if !t.rehash(i, old, new) {
                sh.stats.refused_bucket += 1;
                return Err(ConnError::BucketFull);
            }
            if let Some(m) = t.entry_mut(i) {
                m.cport = cport;
                m.flags &= !flag::NO_CPORT;
            }
            sh.no_cport[v6 as usize] = sh.no_cport[v6 as usize].saturating_sub(1);
            Ok(())
        })
    }

    /// Expires an entry at once (IPVS `ip_vs_conn_expire_now`): counters are released. A
    /// template still controlling connections cannot go; its deadline becomes `now`, and it is
    /// re-armed by 60 s while connections remain.
    pub fn expire_now(
        &mut self,
        acct: &mut (impl DestAccounting + ?Sized),
        id: ConnId,
        now: Instant,
    ) -> bool {
        let (v6, i) = id.parts();
        let tick = self.tick(now);
        family!(self, v6, |t, sh| {
            let Some(e) = t.entry(i) else { return false };
            if e.is(flag::TEMPLATE) && e.ctl() > 0 {
                t.set_deadline(i, tick);
                return false;
            }
            let gone = remove_entry(t, sh, acct, i, tick).is_some();
            if gone {
                sh.stats.expired_now += 1;
            }
            gone
        })
    }

    /// Frees entries whose expiry has passed, doing at most `budget` units of work (entries
    /// examined plus timer-wheel slots visited): call it every millisecond or so, or with a
    /// larger budget less often. Real-server counters are released as entries go.
    pub fn expire(
        &mut self,
        acct: &mut (impl DestAccounting + ?Sized),
        now: Instant,
        budget: u32,
    ) -> ExpireReport {
        self.expire_inner(acct, now, budget, None)
    }

    /// [`ConnTable::expire`], calling `on_expired` with each entry freed (to tell a sync
    /// sender, or to log).
    pub fn expire_with(
        &mut self,
        acct: &mut (impl DestAccounting + ?Sized),
        now: Instant,
        budget: u32,
        mut on_expired: impl FnMut(&Conn),
    ) -> ExpireReport {
        self.expire_inner(acct, now, budget, Some(&mut on_expired))
    }

    fn expire_inner(
        &mut self,
        acct: &mut (impl DestAccounting + ?Sized),
        now: Instant,
        budget: u32,
        mut on_expired: Option<&mut dyn FnMut(&Conn)>,
    ) -> ExpireReport {
        let tick = self.tick(now);
        let mut budget = budget;
        let mut r = ExpireReport::default();
        let done4 = expire_family(
            &mut self.v4,
            &mut self.sh,
            acct,
            tick,
            &mut budget,
            &mut r,
            &mut on_expired,
        );
        let done6 = expire_family(
            &mut self.v6,
            &mut self.sh,
            acct,
            tick,
            &mut budget,
            &mut r,
            &mut on_expired,
        );
        r.done = done4 && done6;
        r
    }

    /// Removes every entry (`ipvsadm -C` flushes connections this way): connections first,
    /// then templates, releasing every counter.
    pub fn flush(&mut self, acct: &mut (impl DestAccounting + ?Sized)) {
        fn go<A: Addr>(
            t: &mut Table<A>,
            sh: &mut Shared,
            acct: &mut (impl DestAccounting + ?Sized),
        ) {
            let now = sh.clock_ms as u32;
            let ids: alloc::vec::Vec<u32> = t.ids().collect();
            for pass_templates in [false, true] {
                for &i in &ids {
                    if t.entry(i)
                        .is_some_and(|e| e.is(flag::TEMPLATE) == pass_templates)
                    {
                        remove_entry(t, sh, acct, i, now);
                    }
                }
            }
        }
        go(&mut self.v4, &mut self.sh, acct);
        go(&mut self.v6, &mut self.sh, acct);
    }

    /// The persistence template for `key`, if one is alive and not invalidated.
    pub fn lookup_template(&self, key: &TemplateKey, now: Instant) -> Option<ConnId> {
        let now = self.sh.now_tick(now);
        fn go<A: Addr>(t: &Table<A>, k: &TemplateKey, now: u32) -> Option<u32> {
            let (snet, v) = (A::from_ip(k.client_net)?, A::from_ip(k.vaddr)?);
            let code = template_code(k.protocol);
            let p = t.probe(t.hash_template(code, snet, v, k.vport));
            t.find(&p, |e| {
                e.is(flag::TEMPLATE)
                    && e.is(flag::IN_USE)
                    && !e.is(flag::INVALID)
                    && e.caddr == snet
                    && e.vaddr == v
                    && e.vport == k.vport
                    && e.proto() == code
                    && !dead(e, now)
            })
        }
        let v6 = key.client_net.is_ipv6();
        family_ref!(self, v6, |t| go(t, key, now).map(|i| ConnId::new(v6, i)))
    }

    /// Marks a template so it never matches again; it stays until it expires (IPVS re-hashes
    /// it with impossible ports for the same effect).
    pub fn invalidate_template(&mut self, id: ConnId) -> bool {
        let (v6, i) = id.parts();
        family!(self, v6, |t, sh| match t.entry_mut(i) {
            Some(e) if e.is(flag::TEMPLATE) => {
                e.flags |= flag::INVALID;
                sh.stats.templates_invalidated += 1;
                true
            }
            _ => false,
        })
    }

    /// Schedules a new connection for `key` on `svc` the way IPVS does (ipvs.md §4.2–§4.3):
    /// persistence templates (netmask or IPv6 prefix, port-0, FTP and fwmark services, refresh
    /// on use, invalidation of unusable ones), the scheduler otherwise, one-packet UDP. The
    /// connection is counted on its real server; `service` numbers the service in the
    /// [`DestRef`]s stored. Call [`ConnTable::packet`] next for the packet itself.
    pub fn schedule(
        &mut self,
        svc: &mut VirtualService,
        service: u16,
        key: &FlowKey,
        now: Instant,
    ) -> Result<Scheduled, ScheduleError> {
        use crate::config::ServiceKey;
        if key.sport == 20 && key.proto == Protocol::Tcp {
            return Err(ScheduleError::FtpData);
        }
        let skey = svc.key();
        let opts = *svc.options();
        let (svc_port, fwmark) = match skey {
            ServiceKey::Addr { port, .. } => (port, None),
            ServiceKey::Fwmark { mark, .. } => (0, Some(mark)),
        };
        let one_packet = opts.one_packet && key.proto == Protocol::Udp;
        let pick = |svc: &mut VirtualService| -> Result<(DestId, IpAddr, u16, ForwardMethod), ScheduleError> {
            let id = svc.pool_mut().schedule(key, now).ok_or(ScheduleError::NoDest)?;
            let d = svc.pool().dests().get(id).ok_or(ScheduleError::NoDest)?;
            if id.index() > u16::MAX as usize {
                return Err(ScheduleError::DestIndex);
            }
            Ok((id, d.addr(), d.port(), d.method()))
        };
        let Some(persist) = opts.persistence else {
            if fwmark.is_none() && svc_port != key.dport {
                return Err(ScheduleError::PortMismatch);
            }
            let (id, addr, port, method) = pick(svc)?;
            let dport = if port == 0 { key.dport } else { port };
            if one_packet {
                return Ok(Scheduled::OnePacket {
                    dest: id,
                    addr,
                    port: dport,
                });
            }
            let new = NewConn {
                key: *key,
                daddr: addr,
                dport,
                dest: Some(DestRef::new(service, id.index() as u16)),
                flags: ConnFlags::for_method(method),
                template: None,
            };
            return Ok(Scheduled::Conn(self.insert(svc.pool_mut(), &new, now)?));
        };
        // Persistence (§4.3).
        let v6 = key.is_ipv6();
        let prefix = persist.prefix_len;
        let client_net = match key.src {
            IpAddr::V4(a) => u32::from_ip(IpAddr::V4(a)).map(|x| x.masked(prefix).to_ip()),
            IpAddr::V6(a) => u128::from_ip(IpAddr::V6(a)).map(|x| x.masked(prefix).to_ip()),
        }
        .unwrap_or(key.src);
        let same_port = fwmark.is_none() && key.dport == svc_port;
        let tkey = match fwmark {
            Some(mark) => TemplateKey {
                protocol: 0,
                client_net,
                vaddr: if v6 {
                    u128::from_mark(mark).to_ip()
                } else {
                    u32::from_mark(mark).to_ip()
                },
                vport: 0,
            },
            None => TemplateKey {
                protocol: key.proto.number(),
                client_net,
                vaddr: key.dst,
                vport: if same_port && svc_port != 21 {
                    svc_port
                } else {
                    0
                },
            },
        };
        let timeout = (persist.timeout as u64 * 1000).min(MAX_TIMEOUT_MS as u64) as u32;
        let tick = self.tick(now);
        let mut tmpl = self.lookup_template(&tkey, now);
        if let Some(tid) = tmpl {
            // A template bound to another service's real server (a sync record can name one)
            // is as unusable as one whose real server is gone.
            let usable = self
                .get(tid)
                .and_then(|c| c.dest)
                .filter(|d| d.service() == service)
                .and_then(|d| svc.pool().status(d))
                .is_some_and(|s| {
                    s.available && !(self.sh.cfg.expire_quiescent_template && s.weight == 0)
                });
            if !usable {
                self.invalidate_template(tid);
                tmpl = None;
            }
        }
        let tid = match tmpl {
            Some(tid) => {
                let (v6t, i) = tid.parts();
                family!(self, v6t, |t, _sh| t
                    .set_deadline(i, tick.wrapping_add(timeout)));
                tid
            }
            None => {
                let (id, addr, port, method) = pick(svc)?;
                let tdport = if same_port && svc_port != 21 { port } else { 0 };
                let mut flags = ConnFlags::for_method(method);
                flags.0 |= ConnFlags::TEMPLATE;
                flags.0 &= !ConnFlags::INACTIVE;
                let dest = DestRef::new(service, id.index() as u16);
                let tid = family!(self, v6, |t, sh| {
                    insert_template(
                        t,
                        sh,
                        svc.pool_mut(),
                        &tkey,
                        addr,
                        tdport,
                        dest.0,
                        flags,
                        timeout,
                        tick,
                    )
                })
                .map(|i| ConnId::new(v6, i))?;
                self.reset_memo(tid);
                tid
            }
        };
        let t = self.get(tid).ok_or(ScheduleError::NoDest)?;
        let dest = t.dest.ok_or(ScheduleError::NoDest)?;
        let method = svc
            .pool()
            .dests()
            .id_at(dest.dest_index() as usize)
            .and_then(|id| svc.pool().dests().get(id))
            .map(|d| (d.method(), d.port()));
        let Some((method, dest_port)) = method else {
            return Err(ScheduleError::NoDest);
        };
        let dport = if key.dport == svc_port && dest_port != 0 {
            dest_port
        } else {
            key.dport
        };
        if one_packet {
            let id = svc
                .pool()
                .dests()
                .id_at(dest.dest_index() as usize)
                .ok_or(ScheduleError::NoDest)?;
            return Ok(Scheduled::OnePacket {
                dest: id,
                addr: t.daddr,
                port: dport,
            });
        }
        let new = NewConn {
            key: *key,
            daddr: t.daddr,
            dport,
            dest: Some(dest),
            flags: ConnFlags::for_method(method),
            template: Some(tid),
        };
        Ok(Scheduled::Conn(self.insert(svc.pool_mut(), &new, now)?))
    }
}

fn template_code(protocol: u8) -> u8 {
    Protocol::from_number(protocol).map_or(0, code_of)
}

fn insert_conn<A: Addr>(
    t: &mut Table<A>,
    sh: &mut Shared,
    acct: &mut (impl DestAccounting + ?Sized),
    k: &Parts<A>,
    new: &NewConn,
    now: u32,
) -> Result<u32, ConnError> {
    let daddr = A::from_ip(new.daddr).ok_or(ConnError::FamilyMismatch)?;
    let no_cport = new.flags.has(ConnFlags::NO_CPORT);
    let k = Parts {
        cp: if no_cport { 0 } else { k.cp },
        ..*k
    };
    let h = t.hash_conn(k.code, k.c, k.cp);
    if let Some(old) = find_same(t, &k, h) {
        let e = t.entry(old).ok_or(ConnError::Unknown)?;
        if !dead(e, now) {
            sh.stats.refused_exists += 1;
            return Err(ConnError::Exists);
        }
        remove_entry(t, sh, acct, old, now);
        sh.stats.expired += 1;
    }
    let template = match new.template {
        Some(tp) => {
            let (_, i) = tp.parts();
            match t.entry(i) {
                Some(e) if e.is(flag::TEMPLATE) => Some(i),
                _ => return Err(ConnError::Unknown),
            }
        }
        None => None,
    };
    let mut e = Entry::<A> {
        caddr: k.c,
        vaddr: k.v,
        daddr,
        cport: k.cp,
        vport: k.vp,
        dport: new.dport,
        flags: new.flags.0 & flag::USER & !flag::TEMPLATE,
        deadline: now.wrapping_add(INITIAL_MS),
        dest: new.dest.map_or(NONE, |d| d.0),
        ..Entry::default()
    };
    e.set_proto(k.code);
    insert_family(t, sh, acct, e, template, h, now)
}

#[allow(clippy::too_many_arguments)]
fn insert_template<A: Addr>(
    t: &mut Table<A>,
    sh: &mut Shared,
    acct: &mut (impl DestAccounting + ?Sized),
    key: &TemplateKey,
    daddr: IpAddr,
    dport: u16,
    dest: u32,
    flags: ConnFlags,
    timeout: u32,
    now: u32,
) -> Result<u32, ScheduleError> {
    let snet = A::from_ip(key.client_net).ok_or(ConnError::FamilyMismatch)?;
    let v = A::from_ip(key.vaddr).ok_or(ConnError::FamilyMismatch)?;
    let d = A::from_ip(daddr).ok_or(ConnError::FamilyMismatch)?;
    let code = template_code(key.protocol);
    let mut e = Entry::<A> {
        caddr: snet,
        vaddr: v,
        daddr: d,
        cport: 0,
        vport: key.vport,
        dport,
        flags: (flags.0 & flag::USER) | flag::TEMPLATE,
        deadline: now.wrapping_add(timeout),
        dest,
        ..Entry::default()
    };
    e.set_proto(code);
    let h = t.hash_template(code, snet, v, key.vport);
    Ok(insert_family(t, sh, acct, e, None, h, now)?)
}
