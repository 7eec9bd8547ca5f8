//! Protocol state machines and timeouts of IPVS connections (ipvs.md §6).
//!
//! TCP follows the kernel's transition tables (`ip_vs_proto_tcp.c`, recent kernels) in three
//! directions: INPUT (client to director), OUTPUT (real server to client, seen only with NAT) and
//! INPUT-ONLY, used instead of INPUT while the connection has `NOOUTPUT` (DR, TUN, or NAT before
//! the first reply). `secure_tcp` selects the kernel's "dos" table, in which a NAT connection
//! becomes ESTABLISHED only after the whole three-way handshake was seen. SCTP follows the
//! kernel's `[direction][event][state]` table of `ip_vs_proto_sctp.c`; UDP has one state.
//! Every transition re-applies the state's timeout, even when the state does not change.

use core::fmt;
use core::time::Duration;

/// Which way a packet travels, as the state tables see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to virtual service (IPVS `IP_VS_DIR_INPUT`).
    Input,
    /// Real server to client, seen by a NAT director only (`IP_VS_DIR_OUTPUT`).
    Output,
}

/// TCP connection states with the kernel's values (`IP_VS_TCP_S_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum TcpState {
    None = 0,
    Established = 1,
    SynSent = 2,
    SynRecv = 3,
    FinWait = 4,
    TimeWait = 5,
    Close = 6,
    CloseWait = 7,
    LastAck = 8,
    Listen = 9,
    SynAck = 10,
}

impl TcpState {
    /// Every state, in value order.
    pub const ALL: [TcpState; 11] = [
        TcpState::None,
        TcpState::Established,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::FinWait,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::Listen,
        TcpState::SynAck,
    ];

    /// The state with kernel value `v`.
    pub const fn from_u8(v: u8) -> Option<TcpState> {
        if (v as usize) < Self::ALL.len() {
            Some(Self::ALL[v as usize])
        } else {
            None
        }
    }

    /// The name `ipvsadm -lc` prints.
    pub const fn name(self) -> &'static str {
        match self {
            TcpState::None => "NONE",
            TcpState::Established => "ESTABLISHED",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::Listen => "LISTEN",
            TcpState::SynAck => "SYNACK",
        }
    }

    /// Whether a connection in this state counts as active on its real server (recent kernels:
    /// ESTABLISHED, SYN_SENT, SYN_RECV, SYNACK; ipvs.md §2.2).
    pub const fn is_active(self) -> bool {
        matches!(
            self,
            TcpState::Established | TcpState::SynSent | TcpState::SynRecv | TcpState::SynAck
        )
    }

    /// Half-open: what the drop-entry defense sheds first.
    pub const fn is_half_open(self) -> bool {
        matches!(self, TcpState::SynRecv | TcpState::SynAck)
    }
}

/// The TCP flags the state machine looks at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// FIN.
    pub const FIN: TcpFlags = TcpFlags(0x01);
    /// SYN.
    pub const SYN: TcpFlags = TcpFlags(0x02);
    /// RST.
    pub const RST: TcpFlags = TcpFlags(0x04);
    /// ACK.
    pub const ACK: TcpFlags = TcpFlags(0x10);

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// SYN without RST: the segment that may create a connection (IPVS `tcp_conn_schedule`).
    pub const fn is_new_conn(self) -> bool {
        self.contains(TcpFlags::SYN) && !self.contains(TcpFlags::RST)
    }
}

impl core::ops::BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

/// The kernel's event index: RST, then SYN, then FIN, then ACK; none of them is `None`.
const fn tcp_event(flags: TcpFlags) -> Option<usize> {
    if flags.contains(TcpFlags::RST) {
        Some(3)
    } else if flags.contains(TcpFlags::SYN) {
        Some(0)
    } else if flags.contains(TcpFlags::FIN) {
        Some(1)
    } else if flags.contains(TcpFlags::ACK) {
        Some(2)
    } else {
        None
    }
}

use TcpState as T;
const ES: T = T::Established;
const SS: T = T::SynSent;
const SR: T = T::SynRecv;
const FW: T = T::FinWait;
const TW: T = T::TimeWait;
const CL: T = T::Close;
const CW: T = T::CloseWait;
const LA: T = T::LastAck;
const LI: T = T::Listen;
const SA: T = T::SynAck;

type TcpTable = [[[TcpState; 11]; 4]; 3];

/// `[INPUT, OUTPUT, INPUT_ONLY][syn, fin, ack, rst][current state]`, columns in value order
/// NO ES SS SR FW TW CL CW LA LI SA.
const TCP_NORMAL: TcpTable = [
    [
        [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
        [CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, TW],
        [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
        [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, SR],
    ],
    [
        [SS, ES, SS, SR, SS, SS, SS, SS, SS, LI, SR],
        [TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW],
        [ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES],
        [CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL],
    ],
    [
        [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR],
        [CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW],
        [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
        [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL],
    ],
];

/// The `secure_tcp` ("dos") table: a NAT connection is ESTABLISHED only after the handshake.
const TCP_SECURE: TcpTable = [
    [
        [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SA],
        [CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, SA],
        [ES, ES, SS, SR, FW, TW, CL, CW, CL, LI, SA],
        [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL],
    ],
    [
        [SS, ES, SS, SA, SS, SS, SS, SS, SS, LI, SA],
        [TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW],
        [ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES],
        [CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL],
    ],
    [
        [SA, ES, ES, SR, SA, SA, SA, SA, SA, SA, SA],
        [CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW],
        [ES, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES],
        [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL],
    ],
];

/// The table row used for a packet: OUTPUT for replies, INPUT_ONLY for client packets while the
/// connection has `NOOUTPUT`, INPUT otherwise.
pub(crate) const fn table_dir(dir: Direction, no_output: bool) -> usize {
    match dir {
        Direction::Output => 1,
        Direction::Input if no_output => 2,
        Direction::Input => 0,
    }
}

/// The next TCP state for a segment with `flags` (IPVS `set_tcp_state`). `no_output` is the
/// connection's `NOOUTPUT` flag before the packet; a segment with none of SYN, FIN, ACK and RST
/// moves the connection to CLOSE, as in the kernel.
pub fn tcp_next(
    state: TcpState,
    dir: Direction,
    no_output: bool,
    flags: TcpFlags,
    secure: bool,
) -> TcpState {
    match tcp_event(flags) {
        None => TcpState::Close,
        Some(ev) => {
            let table = if secure { &TCP_SECURE } else { &TCP_NORMAL };
            table[table_dir(dir, no_output)][ev][state as usize]
        }
    }
}

/// SCTP association states with the kernel's values (`IP_VS_SCTP_S_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum SctpState {
    None = 0,
    Init1 = 1,
    Init = 2,
    CookieSent = 3,
    CookieReplied = 4,
    CookieWait = 5,
    Cookie = 6,
    CookieEchoed = 7,
    Established = 8,
    ShutdownSent = 9,
    ShutdownReceived = 10,
    ShutdownAckSent = 11,
    Rejected = 12,
    Closed = 13,
}

impl SctpState {
    /// Every state, in value order.
    pub const ALL: [SctpState; 14] = [
        SctpState::None,
        SctpState::Init1,
        SctpState::Init,
        SctpState::CookieSent,
        SctpState::CookieReplied,
        SctpState::CookieWait,
        SctpState::Cookie,
        SctpState::CookieEchoed,
        SctpState::Established,
        SctpState::ShutdownSent,
        SctpState::ShutdownReceived,
        SctpState::ShutdownAckSent,
        SctpState::Rejected,
        SctpState::Closed,
    ];

    /// The state with kernel value `v`.
    pub const fn from_u8(v: u8) -> Option<SctpState> {
        if (v as usize) < Self::ALL.len() {
            Some(Self::ALL[v as usize])
        } else {
            None
        }
    }

    /// The kernel's state name.
    pub const fn name(self) -> &'static str {
        match self {
            SctpState::None => "NONE",
            SctpState::Init1 => "INIT1",
            SctpState::Init => "INIT",
            SctpState::CookieSent => "C-SENT",
            SctpState::CookieReplied => "C-REPLIED",
            SctpState::CookieWait => "C-WAIT",
            SctpState::Cookie => "COOKIE",
            SctpState::CookieEchoed => "C-ECHOED",
            SctpState::Established => "ESTABLISHED",
            SctpState::ShutdownSent => "S-SENT",
            SctpState::ShutdownReceived => "S-RECEIVED",
            SctpState::ShutdownAckSent => "S-ACK-SENT",
            SctpState::Rejected => "REJECTED",
            SctpState::Closed => "CLOSED",
        }
    }

    /// Active iff ESTABLISHED (ipvs.md §2.2).
    pub const fn is_active(self) -> bool {
        matches!(self, SctpState::Established)
    }

    /// Half-open: INIT1 or INIT, the SCTP analogue of SYN_RECV.
    pub const fn is_half_open(self) -> bool {
        matches!(self, SctpState::Init1 | SctpState::Init)
    }
}

/// The SCTP events of the kernel's table, derived from the first chunk type of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum SctpEvent {
    /// DATA, SACK, HEARTBEAT, HEARTBEAT-ACK, ECNE, CWR and any unknown chunk.
    Data = 0,
    Init = 1,
    InitAck = 2,
    CookieEcho = 3,
    CookieAck = 4,
    Shutdown = 5,
    ShutdownAck = 6,
    ShutdownComplete = 7,
    Error = 8,
    Abort = 9,
}

impl SctpEvent {
    /// The event of a packet whose first chunk has type `chunk`; `next_is_abort` says whether the
    /// chunk after a COOKIE-ECHO or COOKIE-ACK is an ABORT (then the event is ABORT, as in the
    /// kernel).
    pub const fn from_chunk(chunk: u8, next_is_abort: bool) -> SctpEvent {
        match chunk {
            1 => SctpEvent::Init,
            2 => SctpEvent::InitAck,
            6 => SctpEvent::Abort,
            7 => SctpEvent::Shutdown,
            8 => SctpEvent::ShutdownAck,
            9 => SctpEvent::Error,
            10 | 11 if next_is_abort => SctpEvent::Abort,
            10 => SctpEvent::CookieEcho,
            11 => SctpEvent::CookieAck,
            14 => SctpEvent::ShutdownComplete,
            _ => SctpEvent::Data,
        }
    }
}

use SctpState as S;
const SI1: S = S::Init1;
const SIN: S = S::Init;
const SCS: S = S::CookieSent;
const SCR: S = S::CookieReplied;
const SCW: S = S::CookieWait;
const SCO: S = S::Cookie;
const SCE: S = S::CookieEchoed;
const SES: S = S::Established;
const SSS: S = S::ShutdownSent;
const SSR: S = S::ShutdownReceived;
const SSA: S = S::ShutdownAckSent;
const SRJ: S = S::Rejected;
const SCL: S = S::Closed;

/// `[INPUT, OUTPUT, INPUT_ONLY][event][state]`, columns in value order
/// NO I1 IN CS CR CW CO CE ES SS SR SA RJ CL.
const SCTP_TABLE: [[[SctpState; 14]; 10]; 3] = [
    [
        [
            SES, SI1, SIN, SCS, SCR, SCW, SCO, SCE, SES, SSS, SSR, SSA, SRJ, SCL,
        ],
        [
            SI1, SIN, SIN, SCS, SCR, SCW, SCO, SCE, SES, SSS, SSR, SSA, SIN, SIN,
        ],
        [
            SCW, SCW, SCW, SCS, SCR, SCO, SCO, SCE, SES, SSS, SSR, SSA, SRJ, SCL,
        ],
        [
            SCR, SIN, SIN, SCR, SCR, SCW, SCO, SCE, SES, SSS, SSR, SSA, SRJ, SCL,
        ],
        [
            SES, SI1, SIN, SCS, SCR, SCW, SCO, SES, SES, SSS, SSR, SSA, SRJ, SCL,
        ],
        [
            SSR, SI1, SIN, SCS, SCR, SCW, SCO, SCE, SSR, SSS, SSR, SSA, SRJ, SCL,
        ],
        [
            SCL, SIN, SIN, SCS, SCR, SCW, SCO, SCE, SES, SCL, SSR, SCL, SRJ, SCL,
        ],
        [
            SCL, SCL, SCL, SCS, SCR, SCW, SCO, SCE, SES, SSS, SSR, SCL, SRJ, SCL,
        ],
        [
            SCL, SI1, SIN, SCS, SCR, SCW, SCO, SCL, SES, SSS, SSR, SSA, SRJ, SCL,
        ],
        [
            SCL, SCL, SCL, SCL, SCL, SRJ, SCL, SCL, SCL, SCL, SCL, SCL, SCL, SCL,
        ],
    ],
    [
        [
            SES, SI1, SIN, SCS, SCR, SCW, SCO, SCE, SES, SSS, SSR, SSA, SRJ, SCL,
        ],
        [
            SCW, SCW, SCW, SCW, SCW, SCW, SCW, SCW, SES, SCW, SCW, SCW, SCW, SCW,
        ],
        [
            SCS, SCS, SCS, SCS, SCR, SCW, SCO, SCE, SES, SSS, SSR, SSA, SRJ, SCL,
        ],
        [
            SCE, SCE, SCE, SCE, SCE, SCE, SCE, SCE, SES, SSS, SSR, SSA, SRJ, SCL,
        ],
        [
            SES, SES, SES, SES, SES, SES, SES, SES, SES, SSS, SSR, SSA, SRJ, SCL,
        ],
        [
            SSS, SSS, SSS, SSS, SSS, SSS, SSS, SSS, SSS, SSS, SSR, SSA, SRJ, SCL,
        ],
        [
            SSA, SSA, SSA, SSA, SSA, SCW, SCO, SCE, SES, SSA, SSA, SSA, SRJ, SCL,
        ],
        [
            SCL, SI1, SIN, SCS, SCR, SCW, SCO, SCE, SES, SSS, SSR, SSA, SRJ, SCL,
        ],
        [
            SCL, SCL, SCL, SCL, SCL, SCW, SCO, SCE, SES, SSS, SSR, SSA, SRJ, SCL,
        ],
        [
            SCL, SRJ, SCL, SCL, SCL, SCL, SCL, SCL, SCL, SCL, SCL, SCL, SCL, SCL,
        ],
    ],
    [
        [
            SES, SI1, SIN, SCS, SCR, SES, SCO, SCE, SES, SSS, SSR, SSA, SRJ, SCL,
        ],
        [
            SI1, SIN, SIN, SIN, SIN, SIN, SCO, SCE, SES, SSS, SSR, SSA, SIN, SIN,
        ],
        [
            SCE, SCE, SCE, SCE, SCE, SCE, SCO, SCE, SES, SSS, SSR, SSA, SRJ, SCL,
        ],
        [
            SES, SES, SES, SES, SES, SES, SCO, SCE, SES, SSS, SSR, SSA, SRJ, SCL,
        ],
        [
            SES, SI1, SIN, SES, SES, SCW, SES, SES, SES, SSS, SSR, SSA, SRJ, SCL,
        ],
        [
            SSR, SI1, SIN, SCS, SCR, SCW, SCO, SCE, SSR, SSS, SSR, SSA, SRJ, SCL,
        ],
        [
            SCL, SIN, SIN, SCS, SCR, SCW, SCO, SCE, SCL, SCL, SSR, SCL, SRJ, SCL,
        ],
        [
            SCL, SCL, SCL, SCL, SCL, SCW, SCO, SCE, SES, SSS, SCL, SCL, SRJ, SCL,
        ],
        [
            SCL, SI1, SIN, SCS, SCR, SCW, SCO, SCE, SES, SSS, SSR, SSA, SRJ, SCL,
        ],
        [
            SCL, SCL, SCL, SCL, SCL, SRJ, SCL, SCL, SCL, SCL, SCL, SCL, SCL, SCL,
        ],
    ],
];

/// The next SCTP state (IPVS `set_sctp_state`).
pub fn sctp_next(state: SctpState, dir: Direction, no_output: bool, ev: SctpEvent) -> SctpState {
    SCTP_TABLE[table_dir(dir, no_output)][ev as usize][state as usize]
}

/// Connection timeouts per protocol state, as `ipvsadm --set` and the kernel's timeout tables
/// set them. Kept in milliseconds, the table's clock resolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Timeouts {
    /// TCP, indexed by [`TcpState`] value.
    pub tcp: [u32; 11],
    /// SCTP, indexed by [`SctpState`] value.
    pub sctp: [u32; 14],
    /// UDP (one state, re-armed by every datagram).
    pub udp: u32,
    /// Other protocols with connections of their own (none in current IPVS; kept for ICMP
    /// entries a caller may create).
    pub other: u32,
}

const fn secs(s: u32) -> u32 {
    s * 1000
}

/// Longest timeout the table accepts, in milliseconds (just under 2^31: the table compares
/// expiry instants modulo 2^32 ms, about 49.7 days). Longer settings are clamped to it.
pub const MAX_TIMEOUT_MS: u32 = (1 << 30) - 1;

impl Timeouts {
    /// The kernel's defaults (ipvs.md §6): TCP ESTABLISHED 900 s, SYN_SENT 120, SYN_RECV 60,
    /// FIN_WAIT 120, TIME_WAIT 120, CLOSE 10, CLOSE_WAIT 60, LAST_ACK 30, LISTEN 120, SYNACK
    /// 120, NONE 2; SCTP ESTABLISHED 900 s, INIT1 and REJECTED 4 s, NONE 2 s, all others 61 s;
    /// UDP 300 s.
    pub const IPVS: Timeouts = Timeouts {
        tcp: [
            secs(2),
            secs(900),
            secs(120),
            secs(60),
            secs(120),
            secs(120),
            secs(10),
            secs(60),
            secs(30),
            secs(120),
            secs(120),
        ],
        sctp: [
            secs(2),
            secs(4),
            secs(61),
            secs(61),
            secs(61),
            secs(61),
            secs(61),
            secs(61),
            secs(900),
            secs(61),
            secs(61),
            secs(61),
            secs(4),
            secs(61),
        ],
        udp: secs(300),
        other: secs(60),
    };

    /// Short timeouts in the spirit of DPVS's defaults (ESTABLISHED 90 s, SYN_RECV 30 s,
    /// FIN_WAIT and TIME_WAIT 7 s, CLOSE 3 s), for directors whose
    /// clients reconnect quickly and whose tables must turn over fast after a real server dies
    /// (the kube-proxy complaint about IPVS's 15-minute ESTABLISHED timeout). SYN_SENT 3 s,
    /// CLOSE_WAIT and LAST_ACK 7 s, SYNACK 30 s; SCTP ESTABLISHED 90 s; UDP 60 s.
    pub const SHORT: Timeouts = Timeouts {
        tcp: [
            secs(2),
            secs(90),
            secs(3),
            secs(30),
            secs(7),
            secs(7),
            secs(3),
            secs(7),
            secs(7),
            secs(120),
            secs(30),
        ],
        sctp: [
            secs(2),
            secs(4),
            secs(30),
            secs(30),
            secs(30),
            secs(30),
            secs(30),
            secs(30),
            secs(90),
            secs(30),
            secs(30),
            secs(30),
            secs(4),
            secs(30),
        ],
        udp: secs(60),
        other: secs(30),
    };

    /// `ipvsadm --set TCP TCPFIN UDP` (seconds; 0 leaves a value unchanged): TCP ESTABLISHED,
    /// TCP FIN_WAIT and UDP.
    pub fn set(&mut self, tcp: u32, tcpfin: u32, udp: u32) {
        let ms = |s: u32| s.saturating_mul(1000).min(MAX_TIMEOUT_MS);
        if tcp != 0 {
            self.tcp[TcpState::Established as usize] = ms(tcp);
        }
        if tcpfin != 0 {
            self.tcp[TcpState::FinWait as usize] = ms(tcpfin);
        }
        if udp != 0 {
            self.udp = ms(udp);
        }
    }

    /// The timeout of a TCP state.
    pub fn tcp(&self, s: TcpState) -> Duration {
        Duration::from_millis(self.tcp[s as usize] as u64)
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts::IPVS
    }
}

/// The protocol state of a table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnState {
    /// A TCP connection.
    Tcp(TcpState),
    /// An SCTP association.
    Sctp(SctpState),
    /// UDP (IPVS state NORMAL).
    Udp,
    /// Another protocol (ICMP entries a caller created).
    Other,
    /// A persistence template; `assured` once a connection it controls reached ESTABLISHED
    /// (IPVS `IP_VS_CTPL_S_ASSURED`).
    Template {
        /// Whether a controlled connection reached ESTABLISHED.
        assured: bool,
    },
}

impl ConnState {
    /// Whether the state counts as active on the real server (ipvs.md §2.2).
    pub const fn is_active(self) -> bool {
        match self {
            ConnState::Tcp(s) => s.is_active(),
            ConnState::Sctp(s) => s.is_active(),
            _ => false,
        }
    }

    /// Whether the connection is half-open (TCP SYN_RECV or SYNACK, SCTP INIT1 or INIT).
    pub const fn is_half_open(self) -> bool {
        match self {
            ConnState::Tcp(s) => s.is_half_open(),
            ConnState::Sctp(s) => s.is_half_open(),
            _ => false,
        }
    }
}

impl fmt::Display for ConnState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnState::Tcp(s) => f.write_str(s.name()),
            ConnState::Sctp(s) => f.write_str(s.name()),
            ConnState::Udp => f.write_str("UDP"),
            ConnState::Other => f.write_str("NONE"),
            ConnState::Template { assured: false } => f.write_str("NONE"),
            ConnState::Template { assured: true } => f.write_str("ASSURED"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tables of ipvs.md §6.1, transcribed a second time as text, one row per
    /// (direction, event): every cell of both tables is checked.
    const NORMAL_TEXT: &str = "\
IN syn      SR ES ES SR SR SR SR SR SR SR SR
IN fin      CL CW SS TW TW TW CL CW LA LI TW
IN ack      ES ES SS ES FW TW CL CW CL LI ES
IN rst      CL CL CL SR CL CL CL CL LA LI SR
OUT syn     SS ES SS SR SS SS SS SS SS LI SR
OUT fin     TW FW SS TW FW TW CL TW LA LI TW
OUT ack     ES ES SS ES FW TW CL CW LA ES ES
OUT rst     CL CL SS CL CL TW CL CL CL CL CL
IO syn      SR ES ES SR SR SR SR SR SR SR SR
IO fin      CL FW SS TW FW TW CL CW LA LI TW
IO ack      ES ES SS ES FW TW CL CW CL LI ES
IO rst      CL CL CL SR CL CL CL CL LA LI CL";

    fn abbrev(s: &str) -> TcpState {
        let names = [
            "NO", "ES", "SS", "SR", "FW", "TW", "CL", "CW", "LA", "LI", "SA",
        ];
        TcpState::ALL[names.iter().position(|n| *n == s).unwrap()]
    }

    fn check_table(text: &str, secure: bool) {
        let mut rows = 0;
        for line in text.lines() {
            let mut w = line.split_whitespace();
            let dir = w.next().unwrap();
            let flags = match w.next().unwrap() {
                "syn" => TcpFlags::SYN,
                "fin" => TcpFlags::FIN,
                "ack" => TcpFlags::ACK,
                "rst" => TcpFlags::RST,
                e => panic!("{e}"),
            };
            let (d, no_output) = match dir {
                "IN" => (Direction::Input, false),
                "OUT" => (Direction::Output, false),
                "IO" => (Direction::Input, true),
                e => panic!("{e}"),
            };
            let cells: alloc::vec::Vec<_> = w.map(abbrev).collect();
            assert_eq!(cells.len(), 11);
            for (from, want) in TcpState::ALL.iter().zip(cells) {
                assert_eq!(
                    tcp_next(*from, d, no_output, flags, secure),
                    want,
                    "{line}: from {from:?} (secure {secure})"
                );
            }
            rows += 1;
        }
        assert_eq!(rows, 12);
    }

    #[test]
    fn every_cell_of_the_normal_tcp_table() {
        check_table(NORMAL_TEXT, false);
    }

    #[test]
    fn every_cell_of_the_secure_tcp_table() {
        // ipvs.md §6.1: the dos table differs from the normal one in exactly these cells.
        let mut text = alloc::string::String::new();
        let patches: &[(&str, usize, &str)] = &[
            ("IN syn", 10, "SA"),
            ("IN fin", 10, "SA"),
            ("IN ack", 3, "SR"),
            ("IN ack", 10, "SA"),
            ("IN rst", 10, "CL"),
            ("OUT syn", 3, "SA"),
            ("OUT syn", 10, "SA"),
            ("IO syn", 0, "SA"),
            ("IO syn", 4, "SA"),
            ("IO syn", 5, "SA"),
            ("IO syn", 6, "SA"),
            ("IO syn", 7, "SA"),
            ("IO syn", 8, "SA"),
            ("IO syn", 9, "SA"),
            ("IO syn", 10, "SA"),
        ];
        for line in NORMAL_TEXT.lines() {
            let mut w: alloc::vec::Vec<&str> = line.split_whitespace().collect();
            let head = alloc::format!("{} {}", w[0], w[1]);
            for (row, col, v) in patches {
                if *row == head {
                    w[2 + col] = v;
                }
            }
            text.push_str(&w.join(" "));
            text.push('\n');
        }
        check_table(text.trim_end(), true);
    }

    #[test]
    fn segment_without_flags_closes_and_event_priority() {
        for s in TcpState::ALL {
            assert_eq!(
                tcp_next(s, Direction::Input, false, TcpFlags(0), false),
                TcpState::Close
            );
        }
        // RST beats SYN beats FIN beats ACK.
        let all = TcpFlags::SYN | TcpFlags::FIN | TcpFlags::ACK | TcpFlags::RST;
        assert_eq!(
            tcp_next(TcpState::SynRecv, Direction::Input, false, all, false),
            TcpState::SynRecv
        );
        let syn_fin = TcpFlags::SYN | TcpFlags::FIN;
        assert_eq!(
            tcp_next(TcpState::None, Direction::Input, false, syn_fin, false),
            TcpState::SynRecv
        );
        let fin_ack = TcpFlags::FIN | TcpFlags::ACK;
        assert_eq!(
            tcp_next(
                TcpState::Established,
                Direction::Input,
                false,
                fin_ack,
                false
            ),
            TcpState::CloseWait
        );
    }

    #[test]
    fn sctp_handshakes_reach_established() {
        use SctpEvent as E;
        // Client association through a NAT director: INIT, INIT-ACK, COOKIE-ECHO, COOKIE-ACK.
        let mut s = SctpState::None;
        for (dir, ev, want) in [
            (Direction::Input, E::Init, SctpState::Init1),
            (Direction::Output, E::InitAck, SctpState::CookieSent),
            (Direction::Input, E::CookieEcho, SctpState::CookieReplied),
            (Direction::Output, E::CookieAck, SctpState::Established),
            (Direction::Input, E::Shutdown, SctpState::ShutdownReceived),
            (
                Direction::Output,
                E::ShutdownAck,
                SctpState::ShutdownAckSent,
            ),
            (Direction::Input, E::ShutdownComplete, SctpState::Closed),
        ] {
            s = sctp_next(s, dir, false, ev);
            assert_eq!(s, want, "{ev:?}");
        }
        // DR sees only the client: INIT, COOKIE-ECHO, then DATA (INPUT-ONLY table).
        let mut s = SctpState::None;
        for (ev, want) in [
            (E::Init, SctpState::Init1),
            (E::CookieEcho, SctpState::Established),
            (E::Data, SctpState::Established),
            (E::Abort, SctpState::Closed),
        ] {
            s = sctp_next(s, Direction::Input, true, ev);
            assert_eq!(s, want, "{ev:?}");
        }
        assert_eq!(SctpEvent::from_chunk(10, true), SctpEvent::Abort);
        assert_eq!(SctpEvent::from_chunk(0, true), SctpEvent::Data);
        assert_eq!(SctpEvent::from_chunk(200, false), SctpEvent::Data);
    }

    #[test]
    fn default_timeouts_and_set() {
        let t = Timeouts::IPVS;
        let want_tcp = [2, 900, 120, 60, 120, 120, 10, 60, 30, 120, 120];
        for (s, w) in TcpState::ALL.iter().zip(want_tcp) {
            assert_eq!(t.tcp(*s), Duration::from_secs(w), "{s:?}");
        }
        let want_sctp = [2, 4, 61, 61, 61, 61, 61, 61, 900, 61, 61, 61, 4, 61];
        for (i, w) in want_sctp.iter().enumerate() {
            assert_eq!(t.sctp[i], w * 1000, "{:?}", SctpState::ALL[i]);
        }
        assert_eq!(t.udp, 300_000);
        let mut t = Timeouts::IPVS;
        t.set(3600, 0, 10);
        assert_eq!(t.tcp[1], 3_600_000);
        assert_eq!(t.tcp[4], 120_000);
        assert_eq!(t.udp, 10_000);
        t.set(u32::MAX, 0, 0);
        assert_eq!(t.tcp[1], MAX_TIMEOUT_MS);
    }

    #[test]
    fn active_states() {
        let active: alloc::vec::Vec<_> = TcpState::ALL.iter().filter(|s| s.is_active()).collect();
        assert_eq!(
            active,
            [
                &TcpState::Established,
                &TcpState::SynSent,
                &TcpState::SynRecv,
                &TcpState::SynAck
            ]
        );
        assert!(SctpState::Established.is_active());
        assert!(!SctpState::Init.is_active());
        assert!(!ConnState::Udp.is_active());
    }
}
