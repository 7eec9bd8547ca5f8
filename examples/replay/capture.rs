//! Captures in and out: pcap and pcapng read (told apart by their magic number), link types
//! converted to what the director takes, pcap written.

use std::borrow::Cow;
use std::io::{self, BufRead, BufReader, Read, Write};

use lvs::wire::LinkType;
use pcap_file::pcap::{PcapHeader, PcapReader, PcapWriter, RawPcapPacket};
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::{DataLink, Endianness, PcapError, TsResolution};

/// Snap length of the files written: tcpdump's default, room for encapsulated jumbo frames.
const SNAPLEN: u32 = 262_144;

/// One captured packet (its bytes are in the caller's buffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Nanoseconds since the epoch.
    pub ts_ns: u64,
    /// Length on the wire (the bytes captured may be fewer).
    pub orig_len: u32,
    /// Link type of the bytes.
    pub link: DataLink,
}

/// A capture being read.
pub enum Reader<R: Read> {
    /// libpcap format.
    Pcap {
        /// The reader.
        r: PcapReader<R>,
        /// Nanosecond timestamps (else microseconds).
        nanos: bool,
        /// The file's link type.
        link: DataLink,
    },
    /// pcapng.
    Ng {
        /// The reader.
        r: PcapNgReader<R>,
        /// Timestamp of the last packet, for simple packet blocks (which have none).
        last_ns: u64,
    },
}

/// Why a capture could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The file ends in the middle of a record (a capture cut short).
    Truncated,
    /// Anything else.
    Bad(String),
}

fn read_error(e: PcapError) -> ReadError {
    match e {
        PcapError::IoError(e) if e.kind() == io::ErrorKind::UnexpectedEof => ReadError::Truncated,
        e => ReadError::Bad(e.to_string()),
    }
}

impl<R: Read> Reader<BufReader<R>> {
    /// Opens a pcap or pcapng stream, whichever its first four bytes say it is.
    pub fn open(r: R) -> Result<Self, String> {
        let mut r = BufReader::new(r);
        let head = r.fill_buf().map_err(|e| e.to_string())?;
        if head.is_empty() {
            return Err("empty file, not a capture".into());
        }
        let magic: Vec<u8> = head.iter().take(4).copied().collect();
        match magic.as_slice() {
            [0x0a, 0x0d, 0x0d, 0x0a] => {
                let r =
                    PcapNgReader::new(r).map_err(|e| format!("not a valid pcapng file: {e}"))?;
                Ok(Reader::Ng { r, last_ns: 0 })
            }
            [0xa1, 0xb2, 0xc3, 0xd4]
            | [0xd4, 0xc3, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0x3c, 0x4d]
            | [0x4d, 0x3c, 0xb2, 0xa1] => {
                let r = PcapReader::new(r).map_err(|e| format!("not a valid pcap file: {e}"))?;
                let h = r.header();
                Ok(Reader::Pcap {
                    nanos: h.ts_resolution == TsResolution::NanoSecond,
                    link: h.datalink,
                    r,
                })
            }
            m => Err(format!(
                "not a pcap or pcapng file (starts with {})",
                m.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            )),
        }
    }
}

impl<R: Read> Reader<R> {
    /// The next packet, its bytes copied into `data`; `None` at the end.
    pub fn next(&mut self, data: &mut Vec<u8>) -> Result<Option<Packet>, ReadError> {
        match self {
            Reader::Pcap { r, nanos, link } => {
                // Raw records: pcap-file's checked ones refuse an original length above the
                // snap length, which every snaplen-cut capture has.
                let Some(p) = r.next_raw_packet() else {
                    return Ok(None);
                };
                let p = p.map_err(read_error)?;
                let frac = if *nanos {
                    p.ts_frac as u64
                } else {
                    p.ts_frac as u64 * 1000
                };
                data.clear();
                data.extend_from_slice(&p.data);
                Ok(Some(Packet {
                    ts_ns: p.ts_sec as u64 * 1_000_000_000 + frac,
                    orig_len: p.orig_len.max(p.data.len() as u32),
                    link: *link,
                }))
            }
            Reader::Ng { r, last_ns } => loop {
                let Some(b) = r.next_block() else {
                    return Ok(None);
                };
                // (interface, raw timestamp in the interface's units, original length)
                let (iface, ts, orig) = match b.map_err(read_error)? {
                    Block::EnhancedPacket(p) => {
                        data.clear();
                        data.extend_from_slice(&p.data);
                        // pcap-file reads the raw count into a Duration of nanoseconds.
                        let raw = u64::try_from(p.timestamp.as_nanos()).unwrap_or(u64::MAX);
                        (p.interface_id, Some(raw), p.original_len)
                    }
                    Block::Packet(p) => {
                        data.clear();
                        data.extend_from_slice(&p.data);
                        (p.interface_id as u32, Some(p.timestamp), p.original_len)
                    }
                    Block::SimplePacket(p) => {
                        data.clear();
                        data.extend_from_slice(&p.data);
                        (0, None, p.original_len)
                    }
                    _ => continue,
                };
                let Some(idb) = r.interfaces().get(iface as usize) else {
                    return Err(ReadError::Bad(format!(
                        "packet of interface {iface}, which no interface description block declared"
                    )));
                };
                if let Some(raw) = ts {
                    *last_ns = ts_nanos(raw, &idb.options);
                }
                return Ok(Some(Packet {
                    ts_ns: *last_ns,
                    orig_len: orig.max(data.len() as u32),
                    link: idb.linktype,
                }));
            },
        }
    }
}

/// A pcapng timestamp in nanoseconds: `raw` counts units of `if_tsresol` (default
/// microseconds), from `if_tsoffset` seconds.
fn ts_nanos(raw: u64, options: &[InterfaceDescriptionOption<'_>]) -> u64 {
    let mut resol = 6u8;
    let mut offset = 0u64;
    for o in options {
        match o {
            InterfaceDescriptionOption::IfTsResol(r) => resol = *r,
            InterfaceDescriptionOption::IfTsOffset(s) => offset = *s,
            _ => {}
        }
    }
    let raw = raw as u128;
    let ns = if resol & 0x80 != 0 {
        // A power of two: units of 2^-n seconds.
        let n = (resol & 0x7f).min(127) as u32;
        (raw * 1_000_000_000).checked_shr(n).unwrap_or(0)
    } else if resol <= 9 {
        raw * 10u128.pow(9 - resol as u32)
    } else {
        raw / 10u128.pow((resol as u32 - 9).min(38))
    };
    u64::try_from(ns)
        .unwrap_or(u64::MAX)
        .saturating_add(offset.saturating_mul(1_000_000_000))
}

/// Why a captured packet does not reach the director.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Skip {
    /// A Linux cooked capture of a packet the capturing host sent (its output, not a
    /// director's input).
    Outgoing,
    /// Shorter than its link-layer header.
    ShortLinkHeader,
    /// A link type this replay does not read.
    UnsupportedLink(u32),
    /// Not an IP packet, in a replay of bare IP packets.
    NotIpInRawReplay,
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::Outgoing => f.write_str("sent by the capturing host (cooked capture, outgoing)"),
            Skip::ShortLinkHeader => f.write_str("shorter than the link-layer header"),
            Skip::UnsupportedLink(l) => write!(f, "link type {l} not supported"),
            Skip::NotIpInRawReplay => f.write_str("not IP, in a replay of bare IP packets"),
        }
    }
}

/// What the director takes for frames of a capture whose first packet is of `link`.
pub fn director_link(link: DataLink) -> LinkType {
    match link {
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => LinkType::RawIp,
        _ => LinkType::Ethernet,
    }
}

/// The link type to write frames of `link` with.
pub fn datalink_of(link: LinkType) -> DataLink {
    match link {
        LinkType::Ethernet => DataLink::ETHERNET,
        LinkType::RawIp => DataLink::RAW,
    }
}

fn ethertype_of_ip(packet: &[u8]) -> Option<u16> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => Some(0x0800),
        Some(6) => Some(0x86dd),
        _ => None,
    }
}

/// Converts a captured packet of `link` into a frame for a director of `target` in `out`.
///
/// Linux cooked captures (SLL, SLL2) become Ethernet frames: the source MAC is the cooked
/// header's link address, the destination the director's `mac` (broadcast for broadcast
/// packets), the EtherType its protocol field. Bare IP packets get an Ethernet header from an
/// all-zero MAC when the replay is of Ethernet frames; Ethernet frames carrying IP lose their
/// header when it is of bare IP.
pub fn to_frame(
    link: DataLink,
    data: &[u8],
    target: LinkType,
    mac: [u8; 6],
    out: &mut Vec<u8>,
) -> Result<(), Skip> {
    out.clear();
    // (packet type, link address, protocol, header length) of a cooked header.
    let cooked = match link {
        DataLink::LINUX_SLL => {
            let h = data.get(..16).ok_or(Skip::ShortLinkHeader)?;
            let halen = u16::from_be_bytes([h[4], h[5]]) as usize;
            Some((
                u16::from_be_bytes([h[0], h[1]]),
                (halen == 6).then(|| [h[6], h[7], h[8], h[9], h[10], h[11]]),
                u16::from_be_bytes([h[14], h[15]]),
                16,
            ))
        }
        DataLink::LINUX_SLL2 => {
            let h = data.get(..20).ok_or(Skip::ShortLinkHeader)?;
            Some((
                h[10] as u16,
                (h[11] == 6).then(|| [h[12], h[13], h[14], h[15], h[16], h[17]]),
                u16::from_be_bytes([h[0], h[1]]),
                20,
            ))
        }
        _ => None,
    };
    match (target, link, cooked) {
        (_, _, Some((4, ..))) => Err(Skip::Outgoing),
        (LinkType::Ethernet, _, Some((pkttype, addr, proto, hlen))) => {
            let dst = if pkttype == 1 { [0xff; 6] } else { mac };
            out.extend_from_slice(&dst);
            out.extend_from_slice(&addr.unwrap_or([0; 6]));
            out.extend_from_slice(&proto.to_be_bytes());
            out.extend_from_slice(&data[hlen..]);
            Ok(())
        }
        (LinkType::RawIp, _, Some((_, _, proto, hlen))) => {
            if proto != 0x0800 && proto != 0x86dd {
                return Err(Skip::NotIpInRawReplay);
            }
            out.extend_from_slice(&data[hlen..]);
            Ok(())
        }
        (LinkType::Ethernet, DataLink::ETHERNET, None) => {
            out.extend_from_slice(data);
            Ok(())
        }
        (LinkType::Ethernet, DataLink::RAW | DataLink::IPV4 | DataLink::IPV6, None) => {
            let et = ethertype_of_ip(data).unwrap_or(0x0800);
            out.extend_from_slice(&mac);
            out.extend_from_slice(&[0; 6]);
            out.extend_from_slice(&et.to_be_bytes());
            out.extend_from_slice(data);
            Ok(())
        }
        (LinkType::RawIp, DataLink::RAW | DataLink::IPV4 | DataLink::IPV6, None) => {
            out.extend_from_slice(data);
            Ok(())
        }
        (LinkType::RawIp, DataLink::ETHERNET, None) => {
            let h = data.get(..14).ok_or(Skip::ShortLinkHeader)?;
            let et = u16::from_be_bytes([h[12], h[13]]);
            if et != 0x0800 && et != 0x86dd {
                return Err(Skip::NotIpInRawReplay);
            }
            out.extend_from_slice(&data[14..]);
            Ok(())
        }
        (_, l, None) => Err(Skip::UnsupportedLink(u32::from(l))),
    }
}

/// A pcap file being written.
pub struct Writer<W: Write> {
    w: PcapWriter<W>,
    /// Frames written.
    pub count: u64,
}

impl<W: Write> Writer<W> {
    /// Starts a little-endian, nanosecond pcap of `link` frames.
    pub fn new(w: W, link: LinkType) -> Result<Self, String> {
        let header = PcapHeader {
            datalink: datalink_of(link),
            snaplen: SNAPLEN,
            ts_resolution: TsResolution::NanoSecond,
            endianness: Endianness::Little,
            ..PcapHeader::default()
        };
        let w = PcapWriter::with_header(w, header).map_err(|e| e.to_string())?;
        Ok(Writer { w, count: 0 })
    }

    /// Writes `data`, captured at `ts_ns`, whose length on the wire was `orig_len`.
    pub fn write(&mut self, ts_ns: u64, orig_len: u32, data: &[u8]) -> Result<(), String> {
        let len = data.len().min(SNAPLEN as usize);
        let p = RawPcapPacket {
            ts_sec: u32::try_from(ts_ns / 1_000_000_000).unwrap_or(u32::MAX),
            ts_frac: (ts_ns % 1_000_000_000) as u32,
            incl_len: len as u32,
            orig_len: orig_len.max(len as u32),
            data: Cow::Borrowed(&data[..len]),
        };
        self.w.write_raw_packet(&p).map_err(|e| e.to_string())?;
        self.count += 1;
        Ok(())
    }

    /// The underlying writer (to flush it).
    pub fn into_inner(self) -> W {
        self.w.into_writer()
    }
}
