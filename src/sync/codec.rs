//! Byte-exact encoding and decoding of IPVS sync messages, versions 0 and 1 (ipvs.md §8.1,
//! §8.2). No allocation: decoding borrows the datagram, encoding writes into a caller's buffer.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Bytes of a version 0 message header (`nr_conns`, `syncid`, `size`).
pub const HEADER_V0: usize = 4;
/// Bytes of a version 1 message header.
pub const HEADER_V1: usize = 8;
/// Bytes of a version 0 connection record without sequence data.
pub const RECORD_V0: usize = 24;
/// Bytes of the sequence data (in_seq and out_seq, three 32-bit words each).
pub const SEQ_LEN: usize = 24;
/// Bytes of the fixed part of a version 1 IPv4 record.
pub const RECORD_V1_V4: usize = 36;
/// Bytes of the fixed part of a version 1 IPv6 record.
pub const RECORD_V1_V6: usize = 72;
/// Longest persistence-engine data (`IP_VS_PEDATA_MAXLEN`).
pub const PE_DATA_MAX: usize = 255;
/// Longest persistence-engine name (`IP_VS_PENAME_MAXLEN`).
pub const PE_NAME_MAX: usize = 16;
/// Option type: sequence data.
pub const OPT_SEQ_DATA: u8 = 1;
/// Option type: persistence-engine data.
pub const OPT_PE_DATA: u8 = 2;
/// Option type: persistence-engine name.
pub const OPT_PE_NAME: u8 = 3;
/// Option type bit marking an option a receiver may ignore (`1 << (IPVS_OPT_PARAM - 1)`).
pub const OPT_OPTIONAL: u8 = 0x40;
/// Record type bit: the addresses are IPv6.
pub const TYPE_INET6: u8 = 0x01;

/// Connection flag bits used by the codec (ipvs.md §1.2).
const F_HASHED: u32 = 0x0040;
const F_SEQ_MASK: u32 = 0x0600;
const F_TEMPLATE: u32 = 0x1000;

/// Protocol numbers and state counts of the protocols IPVS registers.
const TCP: u8 = 6;
const UDP: u8 = 17;
const SCTP: u8 = 132;
const AH: u8 = 51;
const ESP: u8 = 50;

/// The number of states of a protocol IPVS syncs (`pp->num_states`), `None` if IPVS has no
/// such protocol.
pub const fn protocol_states(protocol: u8) -> Option<u16> {
    match protocol {
        TCP => Some(11),
        UDP => Some(1),
        SCTP => Some(14),
        AH | ESP => Some(1),
        _ => None,
    }
}

/// The message format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Version {
    /// The original format: IPv4 only, no timeouts or firewall marks.
    V0,
    /// The current format (`sync_version = 1`, the kernel's default).
    #[default]
    V1,
}

/// One direction's TCP sequence adjustment (`struct ip_vs_seq`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Seq {
    /// Sequence number the adjustment starts at.
    pub init_seq: u32,
    /// Delta applied from `init_seq` on.
    pub delta: u32,
    /// Delta applied before `init_seq`.
    pub previous_delta: u32,
}

/// Sequence adjustments of both directions (the `SEQ_DATA` option, or v0's trailing block).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SeqData {
    /// Client to real server.
    pub in_seq: Seq,
    /// Real server to client.
    pub out_seq: Seq,
}

/// One connection record, as it travels. Addresses are all of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncConn<'a> {
    /// IANA protocol number (0, `IPPROTO_IP`, for the template of a firewall-mark service).
    pub protocol: u8,
    /// Connection flags (`IP_VS_CONN_F_*`); version 0 carries the low 16 bits.
    pub flags: u32,
    /// Protocol state, or for a template its CTPL state (1 = assured).
    pub state: u16,
    /// Client address (a template: the client network).
    pub caddr: IpAddr,
    /// Client port.
    pub cport: u16,
    /// Virtual address (a firewall-mark template: the mark in the first 32 bits).
    pub vaddr: IpAddr,
    /// Virtual port.
    pub vport: u16,
    /// Real server address.
    pub daddr: IpAddr,
    /// Real server port.
    pub dport: u16,
    /// Firewall mark (version 1; 0 in version 0).
    pub fwmark: u32,
    /// Timeout in seconds (version 1; 0 in version 0, meaning "the state's default").
    pub timeout: u32,
    /// Sequence adjustments, present when the flags have `IN_SEQ` or `OUT_SEQ` (version 0) or
    /// the record has a `SEQ_DATA` option (version 1).
    pub seq: Option<SeqData>,
    /// Persistence-engine data (version 1).
    pub pe_data: Option<&'a [u8]>,
    /// Persistence-engine name (version 1).
    pub pe_name: Option<&'a [u8]>,
}

impl<'a> SyncConn<'a> {
    /// Whether the record is a persistence template.
    pub const fn is_template(&self) -> bool {
        self.flags & F_TEMPLATE != 0
    }
    /// Whether the addresses are IPv6.
    pub const fn is_ipv6(&self) -> bool {
        self.caddr.is_ipv6()
    }
}

/// What is wrong with an option, making the whole datagram invalid (kernel: "Dropping buffer").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OptionDefect {
    /// Fewer than two bytes left for the option's type and length.
    Truncated,
    /// A length of zero.
    ZeroLength,
    /// The option runs past its record.
    Overrun,
    /// An option of this type appeared twice.
    Duplicate(u8),
    /// `SEQ_DATA` with a length other than 24.
    SeqLength(u8),
    /// `PE_NAME` longer than 16 bytes.
    NameTooLong(u8),
}

/// Why a whole datagram was refused: nothing of it is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MessageError {
    /// Shorter than the 4-byte header.
    TooShort {
        /// The datagram's length.
        len: usize,
    },
    /// The header's size field is not the datagram's length.
    SizeMismatch {
        /// What the header says.
        size: u16,
        /// The datagram's length.
        len: usize,
    },
    /// A record (`index`, counting from 0) starts at `offset` but its fixed part does not fit.
    Truncated {
        /// The record's position in the message.
        index: u8,
        /// Its offset in the datagram.
        offset: usize,
    },
    /// A version 1 record's size runs past the datagram.
    Overrun {
        /// The record's position.
        index: u8,
        /// Its offset.
        offset: usize,
    },
    /// A version 1 record's version nibble is not 0.
    RecordVersion {
        /// The record's position.
        index: u8,
        /// Its offset.
        offset: usize,
        /// The nibble.
        version: u8,
    },
    /// A version 1 record's type is neither 0 (IPv4) nor has bit 0 set (IPv6).
    RecordType {
        /// The record's position.
        index: u8,
        /// Its offset.
        offset: usize,
        /// The type byte.
        ty: u8,
    },
    /// A version 1 record's size is smaller than its fixed part.
    RecordTooShort {
        /// The record's position.
        index: u8,
        /// Its offset.
        offset: usize,
        /// Its size field.
        size: u16,
    },
    /// A malformed option.
    Option {
        /// The record's position.
        index: u8,
        /// The option's offset in the datagram.
        offset: usize,
        /// What is wrong.
        defect: OptionDefect,
    },
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MessageError::TooShort { len } => write!(f, "sync datagram of {len} bytes"),
            MessageError::SizeMismatch { size, len } => {
                write!(f, "size field {size} but datagram of {len} bytes")
            }
            MessageError::Truncated { index, offset } => {
                write!(f, "record {index} at offset {offset} truncated")
            }
            MessageError::Overrun { index, offset } => {
                write!(
                    f,
                    "record {index} at offset {offset} runs past the datagram"
                )
            }
            MessageError::RecordVersion {
                index,
                offset,
                version,
            } => write!(f, "record {index} at offset {offset}: version {version}"),
            MessageError::RecordType { index, offset, ty } => {
                write!(f, "record {index} at offset {offset}: type {ty:#04x}")
            }
            MessageError::RecordTooShort {
                index,
                offset,
                size,
            } => write!(
                f,
                "record {index} at offset {offset}: size {size} too small"
            ),
            MessageError::Option {
                index,
                offset,
                defect,
            } => write!(
                f,
                "record {index}: bad option at offset {offset}: {defect:?}"
            ),
        }
    }
}

impl core::error::Error for MessageError {}

/// Why one record is skipped while the rest of its datagram is applied (ipvs.md §8.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RecordError {
    /// An unknown option without the optional bit (0x40).
    UnknownOption(u8),
    /// A protocol IPVS does not sync (not a template).
    Protocol(u8),
    /// A state number beyond the protocol's states.
    State {
        /// The protocol.
        protocol: u8,
        /// The state.
        state: u16,
    },
    /// `PE_DATA` without `PE_NAME`.
    PeDataWithoutName,
    /// A persistence engine this receiver does not have (the crate has none: the kernel's
    /// only one is SIP, by Call-ID).
    UnknownEngine,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RecordError::UnknownOption(t) => write!(f, "unknown mandatory option {t}"),
            RecordError::Protocol(p) => write!(f, "unsupported protocol {p}"),
            RecordError::State { protocol, state } => {
                write!(f, "invalid state {state} for protocol {protocol}")
            }
            RecordError::PeDataWithoutName => f.write_str("persistence data without engine name"),
            RecordError::UnknownEngine => f.write_str("unknown persistence engine"),
        }
    }
}

impl core::error::Error for RecordError {}

/// A validated sync datagram: every defect that drops the whole datagram has been checked, so
/// iterating its [`Message::records`] meets only the per-record defects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    buf: &'a [u8],
    version: Version,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn v4(b: &[u8], at: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(be32(b, at)))
}

fn v6(b: &[u8], at: usize) -> IpAddr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    IpAddr::V6(Ipv6Addr::from(a))
}

fn seq_data(b: &[u8], at: usize, word: fn(&[u8], usize) -> u32) -> SeqData {
    let s = |o: usize| Seq {
        init_seq: word(b, at + o),
        delta: word(b, at + o + 4),
        previous_delta: word(b, at + o + 8),
    };
    SeqData {
        in_seq: s(0),
        out_seq: s(12),
    }
}

/// The protocol and state checks of a record that is not a template.
fn check_state(protocol: u8, state: u16, flags: u32) -> Result<(), RecordError> {
    if flags & F_TEMPLATE != 0 {
        // IPVS only logs a template state >= CTPL_S_LAST.
        return Ok(());
    }
    match protocol_states(protocol) {
        None => Err(RecordError::Protocol(protocol)),
        Some(n) if state >= n => Err(RecordError::State { protocol, state }),
        Some(_) => Ok(()),
    }
}

/// One step of the record walk: the record at `pos`, and where the next one starts.
type Step<'a> = (Result<SyncConn<'a>, RecordError>, usize);

impl<'a> Message<'a> {
    /// Validates a datagram as the kernel's backup does (ipvs.md §8.3): the 4-byte minimum,
    /// the size field, version detection (`reserved == 0 && version == 1 && spare == 0` is
    /// version 1, anything else version 0) and every record's framing and options. Bytes after
    /// the last record are ignored, as the kernel ignores them.
    pub fn parse(buf: &'a [u8]) -> Result<Message<'a>, MessageError> {
        if buf.len() < HEADER_V0 {
            return Err(MessageError::TooShort { len: buf.len() });
        }
        let size = be16(buf, 2);
        if size as usize != buf.len() {
            return Err(MessageError::SizeMismatch {
                size,
                len: buf.len(),
            });
        }
        let version =
            if buf.len() >= HEADER_V1 && buf[0] == 0 && buf[5] == 1 && buf[6] == 0 && buf[7] == 0 {
                Version::V1
            } else {
                Version::V0
            };
        let m = Message { buf, version };
        let mut pos = m.first();
        for i in 0..m.count() {
            let (_, next) = m.step(i, pos)?;
            pos = next;
        }
        Ok(m)
    }

    /// The format.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The sync id of the sending director's daemon.
    pub fn syncid(&self) -> u8 {
        self.buf[1]
    }

    /// The number of records the header announces.
    pub fn count(&self) -> u8 {
        match self.version {
            Version::V0 => self.buf[0],
            Version::V1 => self.buf[4],
        }
    }

    /// The datagram.
    pub fn bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// The records in order: each is a connection or template, or why it is skipped.
    pub fn records(&self) -> Records<'a> {
        Records {
            msg: *self,
            index: 0,
            pos: self.first(),
        }
    }

    fn first(&self) -> usize {
        match self.version {
            Version::V0 => HEADER_V0,
            Version::V1 => HEADER_V1,
        }
    }

    fn step(&self, index: u8, pos: usize) -> Result<Step<'a>, MessageError> {
        match self.version {
            Version::V0 => self.step_v0(index, pos),
            Version::V1 => self.step_v1(index, pos),
        }
    }

    fn step_v0(&self, index: u8, p: usize) -> Result<Step<'a>, MessageError> {
        let b = self.buf;
        if p + RECORD_V0 > b.len() {
            return Err(MessageError::Truncated { index, offset: p });
        }
        let flags = be16(b, p + 20) as u32;
        let mut next = p + RECORD_V0;
        let mut seq = None;
        if flags & F_SEQ_MASK != 0 {
            next += SEQ_LEN;
            if next > b.len() {
                return Err(MessageError::Truncated { index, offset: p });
            }
            // The kernel copies `struct ip_vs_seq` in the sender's host byte order; every
            // IPVS host of note (x86, arm64) is little-endian.
            seq = Some(seq_data(b, p + RECORD_V0, le32));
        }
        let protocol = b[p + 1];
        let state = be16(b, p + 22);
        let conn = SyncConn {
            protocol,
            flags,
            state,
            cport: be16(b, p + 2),
            vport: be16(b, p + 4),
            dport: be16(b, p + 6),
            caddr: v4(b, p + 8),
            vaddr: v4(b, p + 12),
            daddr: v4(b, p + 16),
            fwmark: 0,
            timeout: 0,
            seq,
            pe_data: None,
            pe_name: None,
        };
        Ok((check_state(protocol, state, flags).map(|()| conn), next))
    }

    fn step_v1(&self, index: u8, p: usize) -> Result<Step<'a>, MessageError> {
        let b = self.buf;
        if p + RECORD_V1_V4 > b.len() {
            // The previous record's alignment padding can put `p` past the end: report the end.
            return Err(MessageError::Truncated {
                index,
                offset: p.min(b.len()),
            });
        }
        let ver_size = be16(b, p + 2);
        let size = (ver_size & 0x0fff) as usize;
        let end = p + size;
        if end > b.len() {
            return Err(MessageError::Overrun { index, offset: p });
        }
        if ver_size >> 12 != 0 {
            return Err(MessageError::RecordVersion {
                index,
                offset: p,
                version: (ver_size >> 12) as u8,
            });
        }
        let ty = b[p];
        // As the kernel: bit 0 means IPv6 whatever the other bits; otherwise the type must be 0.
        let ipv6 = ty & TYPE_INET6 != 0;
        if !ipv6 && ty != 0 {
            return Err(MessageError::RecordType {
                index,
                offset: p,
                ty,
            });
        }
        let fixed = if ipv6 { RECORD_V1_V6 } else { RECORD_V1_V4 };
        if p + fixed > end {
            return Err(MessageError::RecordTooShort {
                index,
                offset: p,
                size: size as u16,
            });
        }
        let next = p + ((size + 3) & !3);
        let mut seq = None;
        let mut pe_data = None;
        let mut pe_name = None;
        let mut seen = 0u8;
        let mut q = p + fixed;
        let mut skip = None;
        while q < end {
            let bad = |defect| MessageError::Option {
                index,
                offset: q,
                defect,
            };
            if q + 2 > end {
                return Err(bad(OptionDefect::Truncated));
            }
            let (ptype, plen) = (b[q], b[q + 1] as usize);
            if plen == 0 {
                return Err(bad(OptionDefect::ZeroLength));
            }
            if q + 2 + plen > end {
                return Err(bad(OptionDefect::Overrun));
            }
            let data = &b[q + 2..q + 2 + plen];
            let kind = ptype & !OPT_OPTIONAL;
            if matches!(kind, OPT_SEQ_DATA | OPT_PE_DATA | OPT_PE_NAME) {
                let bit = 1 << (kind - 1);
                if seen & bit != 0 {
                    return Err(bad(OptionDefect::Duplicate(kind)));
                }
                seen |= bit;
            }
            match kind {
                OPT_SEQ_DATA if plen != SEQ_LEN => {
                    return Err(bad(OptionDefect::SeqLength(plen as u8)));
                }
                OPT_SEQ_DATA => seq = Some(seq_data(data, 0, be32)),
                OPT_PE_DATA => pe_data = Some(data),
                OPT_PE_NAME if plen > PE_NAME_MAX => {
                    return Err(bad(OptionDefect::NameTooLong(plen as u8)));
                }
                OPT_PE_NAME => pe_name = Some(data),
                _ if ptype & OPT_OPTIONAL != 0 => {}
                _ => {
                    // The kernel stops reading this record here: later options are not checked.
                    skip = Some(RecordError::UnknownOption(kind));
                    break;
                }
            }
            q += 2 + plen;
        }
        let flags = be32(b, p + 4);
        let protocol = b[p + 1];
        let state = be16(b, p + 8);
        let (caddr, vaddr, daddr) = if ipv6 {
            (v6(b, p + 24), v6(b, p + 40), v6(b, p + 56))
        } else {
            (v4(b, p + 24), v4(b, p + 28), v4(b, p + 32))
        };
        let conn = SyncConn {
            protocol,
            flags,
            state,
            cport: be16(b, p + 10),
            vport: be16(b, p + 12),
            dport: be16(b, p + 14),
            fwmark: be32(b, p + 16),
            timeout: be32(b, p + 20),
            caddr,
            vaddr,
            daddr,
            seq,
            pe_data,
            pe_name,
        };
        let item = match skip {
            Some(e) => Err(e),
            None => check_state(protocol, state, flags).and_then(|()| {
                if conn.pe_data.is_some() && conn.pe_name.is_none() {
                    Err(RecordError::PeDataWithoutName)
                } else {
                    Ok(conn)
                }
            }),
        };
        Ok((item, next))
    }
}

/// The records of a [`Message`].
#[derive(Clone, Debug)]
pub struct Records<'a> {
    msg: Message<'a>,
    index: u8,
    pos: usize,
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<SyncConn<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.index >= self.msg.count() {
            return None;
        }
        // `Message::parse` walked these same steps without error.
        let (item, next) = self.msg.step(self.index, self.pos).ok()?;
        self.index += 1;
        self.pos = next;
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = (self.msg.count() - self.index) as usize;
        (n, Some(n))
    }
}

/// Why a record could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EncodeError {
    /// The buffer is smaller than a message header.
    BufferTooSmall,
    /// The record does not fit in what is left of the message (or it holds 255 records).
    Full,
    /// Version 0 carries IPv4 only.
    Ipv6InV0,
    /// The three addresses are not all of one family.
    MixedFamily,
    /// Persistence-engine data longer than 255 bytes, a name longer than 16, or either empty.
    BadPersistenceData,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EncodeError::BufferTooSmall => "buffer smaller than a sync header",
            EncodeError::Full => "sync message full",
            EncodeError::Ipv6InV0 => "sync version 0 carries IPv4 only",
            EncodeError::MixedFamily => "addresses of different families",
            EncodeError::BadPersistenceData => "persistence-engine data or name of bad length",
        })
    }
}

impl core::error::Error for EncodeError {}

/// Writes one message into a caller's buffer, record by record, as the kernel's master packs
/// them: the header is kept valid after every [`Encoder::push`], so the message can be sent
/// at any point; version 1 records start 4-byte aligned, the padding inserted before the next
/// record (never after the last). The buffer's length is the message's limit (`sync_maxlen`).
///
/// ```
/// use lvs::sync::codec::{Encoder, Message, SyncConn, Version};
///
/// let conn = SyncConn {
///     protocol: 6, // TCP
///     flags: 0,    // masquerading (NAT)
///     state: 1,    // ESTABLISHED
///     caddr: "203.0.113.7".parse()?,
///     cport: 40000,
///     vaddr: "10.0.0.1".parse()?,
///     vport: 80,
///     daddr: "192.168.1.1".parse()?,
///     dport: 8080,
///     fwmark: 0,
///     timeout: 900,
///     seq: None,
///     pe_data: None,
///     pe_name: None,
/// };
/// let mut buf = [0u8; 1472];
/// let mut enc = Encoder::new(&mut buf, Version::V1, 0)?;
/// enc.push(&conn)?;
/// let datagram = enc.as_bytes().to_vec();
/// assert_eq!(datagram.len(), 8 + 36); // header and one IPv4 record
///
/// // What a backup does with it.
/// let msg = Message::parse(&datagram)?;
/// let got: Vec<SyncConn<'_>> = msg.records().collect::<Result<_, _>>()?;
/// assert_eq!(got, [conn]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Encoder<'b> {
    buf: &'b mut [u8],
    version: Version,
    len: usize,
    count: u8,
}

impl<'b> Encoder<'b> {
    /// Starts an empty message with this sync id.
    pub fn new(buf: &'b mut [u8], version: Version, syncid: u8) -> Result<Self, EncodeError> {
        let header = match version {
            Version::V0 => HEADER_V0,
            Version::V1 => HEADER_V1,
        };
        if buf.len() < header {
            return Err(EncodeError::BufferTooSmall);
        }
        buf[..header].fill(0);
        buf[1] = syncid;
        if version == Version::V1 {
            buf[5] = 1;
        }
        let mut e = Encoder {
            buf,
            version,
            len: header,
            count: 0,
        };
        e.sync_header();
        Ok(e)
    }

    /// Continues a message this encoder type wrote into `buf` earlier: `len` bytes and `count`
    /// records so far (what [`Encoder::len`] and [`Encoder::count`] said).
    pub fn resume(buf: &'b mut [u8], version: Version, len: usize, count: u8) -> Self {
        let len = len.min(buf.len());
        Encoder {
            buf,
            version,
            len,
            count,
        }
    }

    /// The bytes a record takes (without alignment padding).
    pub fn record_len(version: Version, c: &SyncConn<'_>) -> Result<usize, EncodeError> {
        let (c6, v6, d6) = (c.caddr.is_ipv6(), c.vaddr.is_ipv6(), c.daddr.is_ipv6());
        if c6 != v6 || c6 != d6 {
            return Err(EncodeError::MixedFamily);
        }
        match version {
            Version::V0 if c6 => Err(EncodeError::Ipv6InV0),
            Version::V0 => Ok(if c.flags & F_SEQ_MASK != 0 {
                RECORD_V0 + SEQ_LEN
            } else {
                RECORD_V0
            }),
            Version::V1 => {
                let mut n = if c6 { RECORD_V1_V6 } else { RECORD_V1_V4 };
                if c.seq.is_some() {
                    n += 2 + SEQ_LEN;
                }
                if let Some(d) = c.pe_data {
                    if d.is_empty() || d.len() > PE_DATA_MAX {
                        return Err(EncodeError::BadPersistenceData);
                    }
                    n += 2 + d.len();
                }
                if let Some(name) = c.pe_name {
                    if name.is_empty() || name.len() > PE_NAME_MAX {
                        return Err(EncodeError::BadPersistenceData);
                    }
                    n += 2 + name.len();
                }
                Ok(n)
            }
        }
    }

    /// Appends a record. Version 1 writes the flags without `HASHED`, `SEQ_DATA` when `seq`
    /// is given, then `PE_DATA` and `PE_NAME`; version 0 writes the low 16 bits of the flags
    /// without `HASHED`, and the sequence data (little-endian, see [`Message::parse`]) iff
    /// the flags have `IN_SEQ` or `OUT_SEQ` (zeros if `seq` is `None`).
    pub fn push(&mut self, c: &SyncConn<'_>) -> Result<(), EncodeError> {
        let n = Self::record_len(self.version, c)?;
        let pad = match self.version {
            Version::V1 if self.count > 0 => (4 - (self.len & 3)) & 3,
            _ => 0,
        };
        if self.count == u8::MAX
            || self.len + pad + n > self.buf.len()
            || self.len + pad + n > 0xffff
        {
            return Err(EncodeError::Full);
        }
        let p = self.len + pad;
        let b = &mut self.buf[self.len..p + n];
        b.fill(0);
        let r = &mut b[pad..];
        match self.version {
            Version::V0 => write_v0(r, c),
            Version::V1 => write_v1(r, c, n),
        }
        self.len = p + n;
        self.count += 1;
        self.sync_header();
        Ok(())
    }

    /// Records written.
    pub fn count(&self) -> u8 {
        self.count
    }

    /// Whether no record was written.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The message's length so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The message as it stands: a complete, valid datagram.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    fn sync_header(&mut self) {
        let size = (self.len as u16).to_be_bytes();
        self.buf[2..4].copy_from_slice(&size);
        match self.version {
            Version::V0 => self.buf[0] = self.count,
            Version::V1 => self.buf[4] = self.count,
        }
    }
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn put_addr(b: &mut [u8], at: usize, a: IpAddr) {
    match a {
        IpAddr::V4(a) => b[at..at + 4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => b[at..at + 16].copy_from_slice(&a.octets()),
    }
}

fn put_seq(b: &mut [u8], at: usize, s: &SeqData, le: bool) {
    let words = [
        s.in_seq.init_seq,
        s.in_seq.delta,
        s.in_seq.previous_delta,
        s.out_seq.init_seq,
        s.out_seq.delta,
        s.out_seq.previous_delta,
    ];
    for (i, w) in words.iter().enumerate() {
        let bytes = if le { w.to_le_bytes() } else { w.to_be_bytes() };
        b[at + 4 * i..at + 4 * i + 4].copy_from_slice(&bytes);
    }
}

fn write_v0(r: &mut [u8], c: &SyncConn<'_>) {
    r[1] = c.protocol;
    put16(r, 2, c.cport);
    put16(r, 4, c.vport);
    put16(r, 6, c.dport);
    put_addr(r, 8, c.caddr);
    put_addr(r, 12, c.vaddr);
    put_addr(r, 16, c.daddr);
    let flags = (c.flags & !F_HASHED) as u16;
    put16(r, 20, flags);
    put16(r, 22, c.state);
    if flags as u32 & F_SEQ_MASK != 0 {
        put_seq(r, RECORD_V0, &c.seq.unwrap_or_default(), true);
    }
}

fn write_v1(r: &mut [u8], c: &SyncConn<'_>, n: usize) {
    let ipv6 = c.caddr.is_ipv6();
    r[0] = if ipv6 { TYPE_INET6 } else { 0 };
    r[1] = c.protocol;
    put16(r, 2, n as u16 & 0x0fff);
    put32(r, 4, c.flags & !F_HASHED);
    put16(r, 8, c.state);
    put16(r, 10, c.cport);
    put16(r, 12, c.vport);
    put16(r, 14, c.dport);
    put32(r, 16, c.fwmark);
    put32(r, 20, c.timeout);
    let mut q = if ipv6 {
        put_addr(r, 24, c.caddr);
        put_addr(r, 40, c.vaddr);
        put_addr(r, 56, c.daddr);
        RECORD_V1_V6
    } else {
        put_addr(r, 24, c.caddr);
        put_addr(r, 28, c.vaddr);
        put_addr(r, 32, c.daddr);
        RECORD_V1_V4
    };
    if let Some(s) = &c.seq {
        r[q] = OPT_SEQ_DATA;
        r[q + 1] = SEQ_LEN as u8;
        put_seq(r, q + 2, s, false);
        q += 2 + SEQ_LEN;
    }
    for (kind, data) in [(OPT_PE_DATA, c.pe_data), (OPT_PE_NAME, c.pe_name)] {
        if let Some(d) = data {
            r[q] = kind;
            r[q + 1] = d.len() as u8;
            r[q + 2..q + 2 + d.len()].copy_from_slice(d);
            q += 2 + d.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn conn(c: &str, v: &str, d: &str) -> SyncConn<'static> {
        SyncConn {
            protocol: 6,
            flags: 0x0083,
            state: 1,
            caddr: ip(c),
            cport: 40000,
            vaddr: ip(v),
            vport: 80,
            daddr: ip(d),
            dport: 8080,
            fwmark: 0,
            timeout: 900,
            seq: None,
            pe_data: None,
            pe_name: None,
        }
    }

    fn encode(version: Version, syncid: u8, recs: &[SyncConn<'_>]) -> Vec<u8> {
        let mut buf = vec![0u8; 1472];
        let mut e = Encoder::new(&mut buf, version, syncid).unwrap();
        for r in recs {
            e.push(r).unwrap();
        }
        e.as_bytes().to_vec()
    }

    /// A version 1 IPv4 record, laid out by hand from the kernel's `struct ip_vs_sync_v4`.
    #[test]
    fn v1_ipv4_bytes() {
        let b = encode(
            Version::V1,
            7,
            &[conn("192.0.2.1", "198.51.100.1", "10.0.0.2")],
        );
        #[rustfmt::skip]
        let want: &[u8] = &[
            0x00, 0x07, 0x00, 0x2c, 0x01, 0x01, 0x00, 0x00, // reserved, syncid, size 44, 1 conn, v1
            0x00, 0x06, 0x00, 0x24,                         // IPv4, TCP, version 0 | size 36
            0x00, 0x00, 0x00, 0x83,                         // flags DROUTE | NOOUTPUT
            0x00, 0x01, 0x9c, 0x40,                         // ESTABLISHED, cport 40000
            0x00, 0x50, 0x1f, 0x90,                         // vport 80, dport 8080
            0x00, 0x00, 0x00, 0x00,                         // fwmark
            0x00, 0x00, 0x03, 0x84,                         // timeout 900 s
            192, 0, 2, 1, 198, 51, 100, 1, 10, 0, 0, 2,
        ];
        assert_eq!(b, want);
        let m = Message::parse(&b).unwrap();
        assert_eq!((m.version(), m.syncid(), m.count()), (Version::V1, 7, 1));
        let r: Vec<_> = m.records().collect();
        assert_eq!(r, vec![Ok(conn("192.0.2.1", "198.51.100.1", "10.0.0.2"))]);
    }

    /// Version 0: 4-byte header, 24-byte records, 16-bit flags, no timeout.
    #[test]
    fn v0_bytes() {
        let mut c = conn("192.0.2.1", "198.51.100.1", "10.0.0.2");
        c.flags = 0x1_0183; // bit 16 (NFCT) does not travel in v0
        c.timeout = 0;
        let b = encode(Version::V0, 3, &[c]);
        #[rustfmt::skip]
        let want: &[u8] = &[
            0x01, 0x03, 0x00, 0x1c,                         // 1 conn, syncid 3, size 28
            0x00, 0x06, 0x9c, 0x40, 0x00, 0x50, 0x1f, 0x90, // reserved, TCP, ports
            192, 0, 2, 1, 198, 51, 100, 1, 10, 0, 0, 2,
            0x01, 0x83, 0x00, 0x01,                         // flags, state
        ];
        assert_eq!(b, want);
        let m = Message::parse(&b).unwrap();
        assert_eq!(m.version(), Version::V0);
        let got = m.records().next().unwrap().unwrap();
        assert_eq!(got.flags, 0x0183);
        assert_eq!(got.timeout, 0);
    }

    #[test]
    fn v0_sequence_data_is_host_order() {
        let mut c = conn("192.0.2.1", "198.51.100.1", "10.0.0.2");
        c.flags |= 0x0400;
        c.timeout = 0;
        c.seq = Some(SeqData {
            in_seq: Seq {
                init_seq: 0x0102_0304,
                delta: 5,
                previous_delta: 6,
            },
            out_seq: Seq::default(),
        });
        let b = encode(Version::V0, 0, &[c]);
        assert_eq!(b.len(), 4 + 24 + 24);
        assert_eq!(&b[28..32], &[4, 3, 2, 1]);
        let got = Message::parse(&b)
            .unwrap()
            .records()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(got.seq, c.seq);
        // Truncating the sequence block drops the datagram.
        let mut t = b[..40].to_vec();
        t[2..4].copy_from_slice(&40u16.to_be_bytes());
        assert_eq!(
            Message::parse(&t),
            Err(MessageError::Truncated {
                index: 0,
                offset: 4
            })
        );
    }

    /// IPv6, options, the optional bit, and 4-byte alignment with padding before the next
    /// record.
    #[test]
    fn v1_ipv6_options_alignment() {
        let mut a = conn("2001:db8::1", "2001:db8::100", "2001:db8:1::2");
        a.seq = Some(SeqData::default());
        a.pe_data = Some(b"call-id-1");
        a.pe_name = Some(b"sip");
        let b_ = conn("192.0.2.9", "198.51.100.1", "10.0.0.3");
        let b = encode(Version::V1, 0, &[a, b_]);
        let first = 72 + 26 + 11 + 5; // 114, padded to 116
        assert_eq!(u16::from_be_bytes([b[10], b[11]]) as usize, first);
        assert_eq!(b.len(), 8 + 116 + 36);
        assert_eq!(&b[8 + first..8 + 116], &[0, 0]);
        let m = Message::parse(&b).unwrap();
        let r: Vec<_> = m.records().collect();
        assert_eq!(r[0], Ok(a));
        assert_eq!(r[1], Ok(b_));
    }

    fn with_record(opts: &[u8]) -> Vec<u8> {
        let mut b = encode(
            Version::V1,
            0,
            &[conn("192.0.2.1", "198.51.100.1", "10.0.0.2")],
        );
        b.extend_from_slice(opts);
        let rec = (36 + opts.len()) as u16;
        b[10..12].copy_from_slice(&rec.to_be_bytes());
        let len = b.len() as u16;
        b[2..4].copy_from_slice(&len.to_be_bytes());
        b
    }

    #[test]
    fn datagram_defects() {
        assert_eq!(
            Message::parse(&[0, 0, 0]),
            Err(MessageError::TooShort { len: 3 })
        );
        let mut b = encode(
            Version::V1,
            0,
            &[conn("192.0.2.1", "198.51.100.1", "10.0.0.2")],
        );
        b.push(0);
        assert_eq!(
            Message::parse(&b),
            Err(MessageError::SizeMismatch { size: 44, len: 45 })
        );
        let ok = with_record(&[]);
        let mut v = ok.clone();
        v[10] |= 0x10;
        assert!(matches!(
            Message::parse(&v),
            Err(MessageError::RecordVersion { version: 1, .. })
        ));
        let mut t = ok.clone();
        t[8] = 2;
        assert!(matches!(
            Message::parse(&t),
            Err(MessageError::RecordType { ty: 2, .. })
        ));
        let mut s = ok.clone();
        s[11] = 30;
        assert!(matches!(
            Message::parse(&s),
            Err(MessageError::RecordTooShort { .. })
        ));
        let mut o = ok.clone();
        o[11] = 48;
        assert!(matches!(
            Message::parse(&o),
            Err(MessageError::Overrun { .. })
        ));
        // A count larger than the records present.
        let mut c = ok.clone();
        c[4] = 2;
        assert!(matches!(
            Message::parse(&c),
            Err(MessageError::Truncated { index: 1, .. })
        ));
        // A type with bit 0 set is IPv6 whatever its other bits (as the kernel reads it): a
        // 36-byte record is then too short.
        let mut six = ok.clone();
        six[8] = 3;
        assert!(matches!(
            Message::parse(&six),
            Err(MessageError::RecordTooShort { .. })
        ));
    }

    #[test]
    fn option_defects() {
        let opt = |d: OptionDefect| move |r: Result<Message<'_>, MessageError>| matches!(r, Err(MessageError::Option { defect, .. }) if defect == d);
        assert!(opt(OptionDefect::Truncated)(Message::parse(&with_record(
            &[1]
        ))));
        assert!(opt(OptionDefect::ZeroLength)(Message::parse(&with_record(
            &[2, 0]
        ))));
        assert!(opt(OptionDefect::Overrun)(Message::parse(&with_record(&[
            2, 5, 1
        ]))));
        assert!(opt(OptionDefect::SeqLength(2))(Message::parse(
            &with_record(&[1, 2, 0, 0])
        )));
        let name = [&[3u8, 17][..], &[b'x'; 17]].concat();
        assert!(opt(OptionDefect::NameTooLong(17))(Message::parse(
            &with_record(&name)
        )));
        assert!(opt(OptionDefect::Duplicate(2))(Message::parse(
            &with_record(&[2, 1, 9, 2, 1, 9])
        )));
        // SEQ_DATA with the optional bit is still SEQ_DATA (the kernel masks the bit off).
        let mut seq = vec![0x41, 24];
        seq.extend_from_slice(&[0; 24]);
        let b = with_record(&seq);
        let m = Message::parse(&b).unwrap();
        assert!(m.records().next().unwrap().unwrap().seq.is_some());
    }

    #[test]
    fn record_defects_skip_one_record() {
        // Unknown mandatory option: this record only; later options of it are not read.
        let b = with_record(&[9, 1, 0, 2, 0]);
        let m = Message::parse(&b).unwrap();
        assert_eq!(m.records().next(), Some(Err(RecordError::UnknownOption(9))));
        // The same option marked optional is ignored.
        let b = with_record(&[0x49, 1, 0]);
        assert!(
            Message::parse(&b)
                .unwrap()
                .records()
                .next()
                .unwrap()
                .is_ok()
        );
        // Persistence data without an engine name.
        let b = with_record(&[2, 1, 7]);
        assert_eq!(
            Message::parse(&b).unwrap().records().next(),
            Some(Err(RecordError::PeDataWithoutName))
        );
        // Unknown protocol, bad state; a template's state is not checked.
        let mut p = conn("192.0.2.1", "198.51.100.1", "10.0.0.2");
        p.protocol = 99;
        let mut s = conn("192.0.2.2", "198.51.100.1", "10.0.0.2");
        s.state = 11;
        let mut t = conn("192.0.2.0", "198.51.100.1", "10.0.0.2");
        t.flags = 0x1000;
        t.protocol = 0;
        t.state = 7;
        // UDP has one state (`IP_VS_UDP_S_LAST` is 1): state 1 is refused.
        let mut u = conn("192.0.2.3", "198.51.100.1", "10.0.0.2");
        u.protocol = 17;
        u.state = 1;
        let b = encode(Version::V1, 0, &[p, s, t, u]);
        let r: Vec<_> = Message::parse(&b).unwrap().records().collect();
        assert_eq!(
            r[3],
            Err(RecordError::State {
                protocol: 17,
                state: 1
            })
        );
        assert_eq!(r[0], Err(RecordError::Protocol(99)));
        assert_eq!(
            r[1],
            Err(RecordError::State {
                protocol: 6,
                state: 11
            })
        );
        assert_eq!(r[2], Ok(t));
    }

    #[test]
    fn detection_and_limits() {
        // A v1 header with a non-zero spare byte is read as version 0 (as the kernel reads it).
        let mut b = encode(
            Version::V1,
            0,
            &[conn("192.0.2.1", "198.51.100.1", "10.0.0.2")],
        );
        b[7] = 1;
        let m = Message::parse(&b).unwrap();
        assert_eq!((m.version(), m.count()), (Version::V0, 0));
        // Version 0 refuses IPv6; mixed families are refused.
        let mut buf = [0u8; 100];
        let mut e = Encoder::new(&mut buf, Version::V0, 0).unwrap();
        assert_eq!(
            e.push(&conn("2001:db8::1", "2001:db8::2", "2001:db8::3")),
            Err(EncodeError::Ipv6InV0)
        );
        assert_eq!(
            e.push(&conn("192.0.2.1", "2001:db8::2", "10.0.0.1")),
            Err(EncodeError::MixedFamily)
        );
        // Full at the buffer's end; the message stays valid.
        let mut buf = [0u8; 8 + 36 + 36 + 3];
        let mut e = Encoder::new(&mut buf, Version::V1, 0).unwrap();
        let c = conn("192.0.2.1", "198.51.100.1", "10.0.0.2");
        e.push(&c).unwrap();
        e.push(&c).unwrap();
        assert_eq!(e.push(&c), Err(EncodeError::Full));
        let n = e.len();
        assert_eq!(Message::parse(&buf[..n]).unwrap().count(), 2);
        assert_eq!(
            Encoder::new(&mut [0u8; 7], Version::V1, 0).err(),
            Some(EncodeError::BufferTooSmall)
        );
    }
}
