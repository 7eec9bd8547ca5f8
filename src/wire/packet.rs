//! Classify a frame once: where each layer starts, what it is, and the flow it belongs to.
//!
//! [`classify`] walks an Ethernet frame (with up to three 802.1Q / 802.1ad / QinQ tags) or a bare
//! IP packet (a TUN device, a decapsulated inner packet) and returns a small `Copy`
//! [`Layout`]: the link-layer length, the IP version and offset, IPv4 options and IPv6
//! extension headers skipped (hop-by-hop, routing, fragment, destination options, AH), the
//! fragment status, the layer-4 protocol and offset, tunnel protocols (IPIP 4, IPv6 41, GRE 47,
//! and GUE on a UDP port the caller names), and the flow key. Rewrites take the layout and
//! never parse again.
//!
//! Errors carry the offset where parsing stopped; frames that are not IP (ARP, LLDP, ...) are
//! [`Classified::NotIp`], not errors. A frame cut short by a capture's snaplen classifies as long
//! as the headers are whole: [`Layout::truncated`] says the IP length promised more.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::flow::{FlowKey, Protocol};

/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const ETHERTYPE_QINQ_OLD: u16 = 0x9100;
/// Most VLAN tags accepted (QinQ plus one).
pub const MAX_VLAN_TAGS: usize = 3;

/// What the buffer starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    /// An Ethernet II frame (destination MAC, source MAC, EtherType).
    Ethernet,
    /// A bare IPv4 or IPv6 packet, version from the first nibble.
    RawIp,
}

/// Classification settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassifyOptions {
    /// UDP destination port on which GUE is expected (IPVS has no default; Katran uses 6080).
    pub gue_port: Option<u16>,
}

/// IP fragment status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fragment {
    /// Not a fragment.
    None,
    /// The first fragment (offset 0, more fragments): it carries the layer-4 header.
    First,
    /// A later fragment: no layer-4 header, no ports.
    NonFirst,
    /// An IPv6 fragment header with offset 0 and no more fragments (RFC 6946): a whole packet.
    Atomic,
}

/// A tunnel protocol recognised above IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tunnel {
    /// IPv4 inside (protocol 4).
    Ipip,
    /// IPv6 inside (protocol 41).
    Ipv6,
    /// GRE (protocol 47).
    Gre,
    /// GUE: UDP to the configured port.
    Gue,
}

/// Where everything is in a classified IP frame. Offsets are from the start of the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Bytes before the IP header: 14 for Ethernet, plus 4 per VLAN tag; 0 for raw IP.
    pub l2_len: u16,
    /// Number of VLAN tags (0..=3).
    pub vlan_tags: u8,
    /// IP version: 4 or 6.
    pub ip_version: u8,
    /// Offset of the IP header (= `l2_len`).
    pub l3_offset: u16,
    /// Offset of the layer-4 header (after IPv4 options and IPv6 extension headers).
    pub l4_offset: u16,
    /// The final protocol number (after extension headers).
    pub l4_proto: u8,
    /// The IP packet length the header states (IPv4 total length; IPv6 40 + payload length).
    pub ip_len: u32,
    /// Fragment status.
    pub fragment: Fragment,
    /// The IP length goes beyond the buffer (a snaplen-cut capture): checksums can only be
    /// updated incrementally.
    pub truncated: bool,
    /// Offset of the address an IPv6 routing header makes the final destination (what the
    /// pseudo-header uses), when segments are left.
    pub final_dst_offset: Option<u16>,
    /// A tunnel protocol, if this is one.
    pub tunnel: Option<Tunnel>,
    /// The flow: protocol, addresses and ports. `None` for protocols LVS does not balance
    /// (tunnels, ESP, ...); ports are 0 for ICMP and for non-first fragments.
    pub flow: Option<FlowKey>,
}

/// A frame's classification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Classified {
    /// IPv4 or IPv6.
    Ip(Layout),
    /// Not IP (ARP, LLDP, ...): the EtherType after any VLAN tags, for the caller to pass on.
    NotIp {
        /// The EtherType.
        ethertype: u16,
    },
}

/// What was wrong with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// The buffer ends before a header does: `needed` bytes from `offset`.
    Truncated {
        /// Bytes the header needs.
        needed: usize,
    },
    /// More VLAN tags than [`MAX_VLAN_TAGS`].
    TooManyVlanTags,
    /// The IP version nibble is not the one the EtherType announced (or not 4/6 for raw IP).
    BadVersion(u8),
    /// IPv4 IHL below 5.
    BadIhl(u8),
    /// IPv4 total length smaller than its header.
    BadTotalLength(u16),
    /// An IPv6 extension header runs past the stated payload length.
    BadExtensionHeader,
}

/// A frame that failed to classify, and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// Offset of the header that failed.
    pub offset: usize,
    /// What failed.
    pub kind: ParseErrorKind,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ParseErrorKind::Truncated { needed } => {
                write!(
                    f,
                    "truncated at offset {}: need {needed} bytes",
                    self.offset
                )
            }
            ParseErrorKind::TooManyVlanTags => {
                write!(
                    f,
                    "more than {MAX_VLAN_TAGS} VLAN tags at offset {}",
                    self.offset
                )
            }
            ParseErrorKind::BadVersion(v) => {
                write!(f, "IP version {v} at offset {}", self.offset)
            }
            ParseErrorKind::BadIhl(v) => write!(f, "IPv4 IHL {v} at offset {}", self.offset),
            ParseErrorKind::BadTotalLength(v) => {
                write!(f, "IPv4 total length {v} at offset {}", self.offset)
            }
            ParseErrorKind::BadExtensionHeader => {
                write!(
                    f,
                    "IPv6 extension header overruns the packet at offset {}",
                    self.offset
                )
            }
        }
    }
}

impl core::error::Error for ParseError {}

#[inline]
fn need(buf: &[u8], offset: usize, len: usize) -> Result<&[u8], ParseError> {
    buf.get(offset..offset.saturating_add(len))
        .ok_or(ParseError {
            offset,
            kind: ParseErrorKind::Truncated { needed: len },
        })
}

#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Classifies `buf` (see the module docs). Inlined, so that callers build the layout in
/// place instead of copying a returned enum through the stack.
///
/// ```
/// use lvs::wire::{classify, Classified, ClassifyOptions, LinkType};
///
/// let mut frame = Vec::new();
/// etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 9], [2, 0, 0, 0, 0, 1])
///     .single_vlan(42.try_into()?)
///     .ipv4([203, 0, 113, 7], [10, 0, 0, 1], 64)
///     .udp(5000, 53)
///     .write(&mut frame, b"query")?;
///
/// let Classified::Ip(layout) = classify(&frame, LinkType::Ethernet, &ClassifyOptions::default())?
/// else { unreachable!("an IPv4 frame") };
/// assert_eq!((layout.vlan_tags, layout.l3_offset, layout.l4_offset), (1, 18, 38));
/// assert_eq!(layout.flow.unwrap().to_string(), "udp 203.0.113.7:5000 -> 10.0.0.1:53");
///
/// // ARP is not an error: it is reported for the caller to pass on.
/// let mut arp = [0u8; 14 + 28];
/// arp[12..14].copy_from_slice(&[0x08, 0x06]);
/// assert!(matches!(classify(&arp, LinkType::Ethernet, &ClassifyOptions::default())?,
///     Classified::NotIp { ethertype: 0x0806 }));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[inline]
pub fn classify(
    buf: &[u8],
    link: LinkType,
    opts: &ClassifyOptions,
) -> Result<Classified, ParseError> {
    if link == LinkType::Ethernet
        && let Some(l) = untagged_ipv4_tcp_udp(buf, opts)
    {
        return Ok(Classified::Ip(l));
    }
    classify_general(buf, link, opts)
}

/// The frame most of a director's traffic is: Ethernet without tags, IPv4 without options,
/// not a fragment, TCP or UDP, headers whole. One bounds check and a few comparisons, then
/// the layout [`classify_general`] would give; `None` for anything else (which it then
/// classifies).
#[inline(always)]
fn untagged_ipv4_tcp_udp(buf: &[u8], opts: &ClassifyOptions) -> Option<Layout> {
    // Ethernet 14, IPv4 20, then the 8 bytes UDP needs (TCP needs 20: checked below).
    let h: &[u8; 42] = buf.get(..42)?.try_into().ok()?;
    let total = u16::from_be_bytes([h[16], h[17]]);
    let proto = h[23];
    let not_fragment = (h[20] & 0x3f) | h[21] == 0;
    if h[12] != 0x08 || h[13] != 0x00 || h[14] != 0x45 || !not_fragment || total < 20 {
        return None;
    }
    let p = match proto {
        6 if buf.len() >= 54 => Protocol::Tcp,
        17 => Protocol::Udp,
        _ => return None,
    };
    let sport = u16::from_be_bytes([h[34], h[35]]);
    let dport = u16::from_be_bytes([h[36], h[37]]);
    let src = IpAddr::V4(Ipv4Addr::new(h[26], h[27], h[28], h[29]));
    let dst = IpAddr::V4(Ipv4Addr::new(h[30], h[31], h[32], h[33]));
    let gue = p == Protocol::Udp && opts.gue_port == Some(dport);
    Some(Layout {
        l2_len: 14,
        vlan_tags: 0,
        ip_version: 4,
        l3_offset: 14,
        l4_offset: 34,
        l4_proto: proto,
        ip_len: total as u32,
        fragment: Fragment::None,
        truncated: buf.len() < 14 + total as usize,
        final_dst_offset: None,
        tunnel: if gue { Some(Tunnel::Gue) } else { None },
        flow: Some(FlowKey::new(p, src, sport, dst, dport)),
    })
}

/// [`classify`] for every frame.
fn classify_general(
    buf: &[u8],
    link: LinkType,
    opts: &ClassifyOptions,
) -> Result<Classified, ParseError> {
    let (l2_len, vlan_tags, ethertype) = match link {
        LinkType::Ethernet => {
            let eth = need(buf, 0, 14)?;
            let mut ethertype = be16(eth, 12);
            let mut off = 14;
            let mut tags = 0u8;
            while matches!(
                ethertype,
                ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD
            ) {
                if tags as usize == MAX_VLAN_TAGS {
                    return Err(ParseError {
                        offset: off - 2,
                        kind: ParseErrorKind::TooManyVlanTags,
                    });
                }
                let tag = need(buf, off, 4)?;
                ethertype = be16(tag, 2);
                off += 4;
                tags += 1;
            }
            (off, tags, Some(ethertype))
        }
        LinkType::RawIp => (0, 0, None),
    };
    let version = match ethertype {
        Some(ETHERTYPE_IPV4) => 4,
        Some(ETHERTYPE_IPV6) => 6,
        Some(other) => return Ok(Classified::NotIp { ethertype: other }),
        None => need(buf, 0, 1)?[0] >> 4,
    };
    let first = need(buf, l2_len, 1)?[0] >> 4;
    if first != version || !(version == 4 || version == 6) {
        return Err(ParseError {
            offset: l2_len,
            kind: ParseErrorKind::BadVersion(first),
        });
    }
    let l3 = l2_len;
    let ip = if version == 4 {
        parse_ipv4(buf, l3)?
    } else {
        parse_ipv6(buf, l3)?
    };
    let IpInfo {
        src,
        dst,
        l4_offset,
        l4_proto,
        ip_len,
        fragment,
        final_dst_offset,
    } = ip;
    let truncated = buf.len() < l3 + ip_len as usize;
    let mut tunnel = match l4_proto {
        4 => Some(Tunnel::Ipip),
        41 => Some(Tunnel::Ipv6),
        47 => Some(Tunnel::Gre),
        _ => None,
    };
    let proto = Protocol::from_number(l4_proto).filter(|p| {
        // ICMP and ICMPv6 belong to their own IP version.
        !matches!((p, version), (Protocol::Icmp, 6) | (Protocol::Icmpv6, 4))
    });
    let flow = match proto {
        None => None,
        Some(p) => {
            let (sport, dport) = if fragment == Fragment::NonFirst {
                (0, 0)
            } else {
                let min = match p {
                    Protocol::Tcp => 20,
                    Protocol::Udp | Protocol::Icmp | Protocol::Icmpv6 => 8,
                    Protocol::Sctp => 12,
                };
                let h = need(buf, l4_offset, min)?;
                if p.has_ports() {
                    (be16(h, 0), be16(h, 2))
                } else {
                    (0, 0)
                }
            };
            if p == Protocol::Udp && fragment != Fragment::NonFirst && opts.gue_port == Some(dport)
            {
                tunnel = Some(Tunnel::Gue);
            }
            Some(FlowKey::new(p, src, sport, dst, dport))
        }
    };
    Ok(Classified::Ip(Layout {
        l2_len: l2_len as u16,
        vlan_tags,
        ip_version: version,
        l3_offset: l3 as u16,
        l4_offset: l4_offset as u16,
        l4_proto,
        ip_len,
        fragment,
        truncated,
        final_dst_offset: final_dst_offset.map(|o| o as u16),
        tunnel,
        flow,
    }))
}

struct IpInfo {
    src: IpAddr,
    dst: IpAddr,
    l4_offset: usize,
    l4_proto: u8,
    ip_len: u32,
    fragment: Fragment,
    final_dst_offset: Option<usize>,
}

#[inline]
fn parse_ipv4(buf: &[u8], l3: usize) -> Result<IpInfo, ParseError> {
    let h = need(buf, l3, 20)?;
    let ihl = h[0] & 0x0f;
    if ihl < 5 {
        return Err(ParseError {
            offset: l3,
            kind: ParseErrorKind::BadIhl(ihl),
        });
    }
    let hlen = ihl as usize * 4;
    need(buf, l3, hlen)?;
    let total = be16(h, 2);
    if (total as usize) < hlen {
        return Err(ParseError {
            offset: l3,
            kind: ParseErrorKind::BadTotalLength(total),
        });
    }
    let frag = be16(h, 6);
    let more = frag & 0x2000 != 0;
    let offset = frag & 0x1fff;
    let fragment = match (offset, more) {
        (0, false) => Fragment::None,
        (0, true) => Fragment::First,
        _ => Fragment::NonFirst,
    };
    let src = IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15]));
    let dst = IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19]));
    Ok(IpInfo {
        src,
        dst,
        l4_offset: l3 + hlen,
        l4_proto: h[9],
        ip_len: total as u32,
        fragment,
        final_dst_offset: None,
    })
}

fn addr16(b: &[u8], at: usize) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    Ipv6Addr::from(a)
}

fn parse_ipv6(buf: &[u8], l3: usize) -> Result<IpInfo, ParseError> {
    let h = need(buf, l3, 40)?;
    let payload_len = be16(h, 4) as usize;
    let end = l3 + 40 + payload_len;
    let src = IpAddr::V6(addr16(h, 8));
    let dst = IpAddr::V6(addr16(h, 24));
    let mut next = h[6];
    let mut off = l3 + 40;
    let mut fragment = Fragment::None;
    let mut final_dst_offset = None;
    // Bounded: each extension header is at least 8 bytes of a packet of at most 64 KiB.
    loop {
        let ext_len = match next {
            0 | 43 | 60 => {
                let e = need(buf, off, 8)?;
                if next == 43 && e[3] > 0 {
                    // Routing header with segments left: the final destination is the last
                    // address of type 0/2 headers, the first segment of an SRH (type 4).
                    let len = (e[1] as usize + 1) * 8;
                    match e[2] {
                        0 | 2 if len >= 24 => final_dst_offset = Some(off + len - 16),
                        4 if len >= 24 => final_dst_offset = Some(off + 8),
                        _ => {}
                    }
                }
                (e[1] as usize + 1) * 8
            }
            51 => {
                let e = need(buf, off, 8)?;
                (e[1] as usize + 2) * 4
            }
            44 => {
                let e = need(buf, off, 8)?;
                let fo = be16(e, 2);
                let frag_offset = fo >> 3;
                let more = fo & 1 != 0;
                fragment = match (frag_offset, more) {
                    (0, false) => Fragment::Atomic,
                    (0, true) => Fragment::First,
                    _ => Fragment::NonFirst,
                };
                8
            }
            _ => break,
        };
        if off + ext_len > end && end <= buf.len() {
            return Err(ParseError {
                offset: off,
                kind: ParseErrorKind::BadExtensionHeader,
            });
        }
        need(buf, off, ext_len)?;
        next = buf[off];
        off += ext_len;
        if fragment == Fragment::NonFirst {
            // Headers after the fragment header are in the payload, not in this fragment.
            break;
        }
    }
    if final_dst_offset.is_some_and(|o| o + 16 > buf.len()) {
        final_dst_offset = None;
    }
    Ok(IpInfo {
        src,
        dst,
        l4_offset: off,
        l4_proto: next,
        ip_len: (40 + payload_len) as u32,
        fragment,
        final_dst_offset,
    })
}

/// The packet quoted inside an ICMP error: an IP header, whole, and whatever part of the
/// layer-4 header follows (RFC 792 promises 8 bytes; RFC 1812 and RFC 4443 routers send more).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quote {
    /// IP version of the quoted packet.
    pub ip_version: u8,
    /// Offset of the quoted IP header in the buffer.
    pub l3_offset: u16,
    /// Offset of the quoted layer-4 header.
    pub l4_offset: u16,
    /// Protocol number after extension headers.
    pub l4_proto: u8,
    /// Fragment status of the quoted packet.
    pub fragment: Fragment,
    /// Source address as quoted.
    pub src: IpAddr,
    /// Destination address as quoted.
    pub dst: IpAddr,
    /// Source and destination ports, when the protocol has ports, the quoted packet is not a
    /// later fragment, and the quote reaches that far.
    pub ports: Option<(u16, u16)>,
}

/// Parses the packet quoted at `offset` of `buf` (an ICMP error's payload): the IP header must be
/// whole, the rest may be cut anywhere.
pub fn parse_quote(buf: &[u8], offset: usize) -> Result<Quote, ParseError> {
    let version = need(buf, offset, 1)?[0] >> 4;
    let ip = match version {
        4 => parse_ipv4(buf, offset)?,
        6 => parse_ipv6(buf, offset)?,
        v => {
            return Err(ParseError {
                offset,
                kind: ParseErrorKind::BadVersion(v),
            });
        }
    };
    let ports = match Protocol::from_number(ip.l4_proto) {
        Some(p) if p.has_ports() && ip.fragment != Fragment::NonFirst => buf
            .get(ip.l4_offset..ip.l4_offset + 4)
            .map(|h| (be16(h, 0), be16(h, 2))),
        _ => None,
    };
    Ok(Quote {
        ip_version: version,
        l3_offset: offset as u16,
        l4_offset: ip.l4_offset as u16,
        l4_proto: ip.l4_proto,
        fragment: ip.fragment,
        src: ip.src,
        dst: ip.dst,
        ports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec::Vec;
    use etherparse::PacketBuilder;

    fn ip(c: Classified) -> Layout {
        match c {
            Classified::Ip(l) => l,
            other => panic!("{other:?}"),
        }
    }

    fn opts() -> ClassifyOptions {
        ClassifyOptions {
            gue_port: Some(6080),
        }
    }

    /// The fast path gives what the general path gives, on frames near the ones it takes:
    /// every byte of the first 60 of a TCP, UDP and GUE frame flipped to random values, cut
    /// at random lengths.
    #[test]
    fn fast_path_equals_general_path() {
        let mut frames = Vec::new();
        for (udp, dport) in [(false, 80), (true, 53), (true, 6080)] {
            let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv4(
                [192, 0, 2, 7],
                [198, 51, 100, 1],
                64,
            );
            let mut f = Vec::new();
            if udp {
                b.udp(40000, dport).write(&mut f, &[7; 30]).unwrap();
            } else {
                b.tcp(40000, dport, 1, 1000)
                    .write(&mut f, &[7; 30])
                    .unwrap();
            }
            frames.push(f);
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut fast = 0;
        for i in 0..300_000 {
            let mut f = frames[i % 3].clone();
            let r = next();
            if r % 4 != 0 {
                let at = (r >> 8) as usize % 60;
                f[at] = (r >> 16) as u8;
            }
            if r % 5 == 0 {
                f.truncate((r >> 24) as usize % f.len());
            }
            let want = classify_general(&f, LinkType::Ethernet, &opts());
            assert_eq!(classify(&f, LinkType::Ethernet, &opts()), want, "{f:02x?}");
            fast += untagged_ipv4_tcp_udp(&f, &opts()).is_some() as u32;
        }
        assert!(fast > 100_000, "fast path taken {fast} times");
    }

    #[test]
    fn ethernet_ipv4_tcp() {
        let b = PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 80, 1, 1000);
        let mut buf = Vec::new();
        b.write(&mut buf, &[0xaa; 30]).unwrap();
        let l = ip(classify(&buf, LinkType::Ethernet, &opts()).unwrap());
        assert_eq!(
            (l.l2_len, l.vlan_tags, l.ip_version, l.l4_offset, l.l4_proto),
            (14, 0, 4, 34, 6)
        );
        assert_eq!(l.ip_len as usize, buf.len() - 14);
        assert!(!l.truncated);
        assert_eq!(l.fragment, Fragment::None);
        let f = l.flow.unwrap();
        assert_eq!(f.to_string(), "tcp 10.0.0.1:40000 -> 10.0.0.2:80");
        // Snaplen-cut: headers whole, payload short.
        let cut = &buf[..14 + 20 + 20 + 5];
        let l = ip(classify(cut, LinkType::Ethernet, &opts()).unwrap());
        assert!(l.truncated);
        // Header cut: typed error with the offset.
        assert_eq!(
            classify(&buf[..14 + 20 + 10], LinkType::Ethernet, &opts()),
            Err(ParseError {
                offset: 34,
                kind: ParseErrorKind::Truncated { needed: 20 }
            })
        );
    }

    #[test]
    fn vlan_and_qinq_and_raw_ip() {
        let b = PacketBuilder::ethernet2([1; 6], [2; 6])
            .double_vlan(
                etherparse::VlanId::try_new(10).unwrap(),
                etherparse::VlanId::try_new(20).unwrap(),
            )
            .ipv6([0x20; 16], [0x30; 16], 64)
            .udp(5353, 53);
        let mut buf = Vec::new();
        b.write(&mut buf, &[1, 2, 3]).unwrap();
        let l = ip(classify(&buf, LinkType::Ethernet, &opts()).unwrap());
        assert_eq!(
            (l.l2_len, l.vlan_tags, l.ip_version, l.l4_offset),
            (22, 2, 6, 62)
        );
        let f = l.flow.unwrap();
        assert_eq!((f.proto, f.sport, f.dport), (Protocol::Udp, 5353, 53));
        // The same packet without its link layer.
        let l = ip(classify(&buf[22..], LinkType::RawIp, &opts()).unwrap());
        assert_eq!((l.l2_len, l.l4_offset), (0, 40));
        assert_eq!(
            classify(&[0x55; 30], LinkType::RawIp, &opts())
                .unwrap_err()
                .kind,
            ParseErrorKind::BadVersion(5)
        );
    }

    #[test]
    fn non_ip_is_not_an_error() {
        let mut arp = [0u8; 42];
        arp[12] = 0x08;
        arp[13] = 0x06;
        assert_eq!(
            classify(&arp, LinkType::Ethernet, &opts()),
            Ok(Classified::NotIp { ethertype: 0x0806 })
        );
        let mut tags = [0u8; 40];
        for i in 0..4 {
            tags[12 + 4 * i] = 0x81;
        }
        assert_eq!(
            classify(&tags, LinkType::Ethernet, &opts())
                .unwrap_err()
                .kind,
            ParseErrorKind::TooManyVlanTags
        );
    }

    #[test]
    fn ipv4_options_fragments_and_tunnels() {
        // IPv4 with 4 bytes of options, first fragment, UDP to the GUE port.
        let mut p = Vec::new();
        p.extend_from_slice(&[
            0x46, 0, 0, 40, 0, 1, 0x20, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
        p.extend_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
        p.extend_from_slice(&[0x12, 0x34, 0x17, 0xc0, 0, 16, 0, 0]); // UDP -> 6080
        p.extend_from_slice(&[0; 8]);
        let l = ip(classify(&p, LinkType::RawIp, &opts()).unwrap());
        assert_eq!(
            (l.l4_offset, l.fragment, l.tunnel),
            (24, Fragment::First, Some(Tunnel::Gue))
        );
        // A later fragment: no ports read, even from garbage.
        p[6] = 0x00;
        p[7] = 0x10;
        let l = ip(classify(&p[..24], LinkType::RawIp, &opts()).unwrap());
        assert_eq!(l.fragment, Fragment::NonFirst);
        assert_eq!((l.flow.unwrap().sport, l.flow.unwrap().dport), (0, 0));
        // IPIP: a tunnel, no flow.
        p[9] = 4;
        let l = ip(classify(&p, LinkType::RawIp, &opts()).unwrap());
        assert_eq!((l.tunnel, l.flow), (Some(Tunnel::Ipip), None));
        // Bad IHL and total length.
        p[0] = 0x44;
        assert_eq!(
            classify(&p, LinkType::RawIp, &opts()).unwrap_err().kind,
            ParseErrorKind::BadIhl(4)
        );
        p[0] = 0x46;
        p[2] = 0;
        p[3] = 10;
        assert_eq!(
            classify(&p, LinkType::RawIp, &opts()).unwrap_err().kind,
            ParseErrorKind::BadTotalLength(10)
        );
    }

    #[test]
    fn ipv6_extension_headers_and_routing_final_destination() {
        // Hop-by-hop, routing type 2 (one address, segments left 1), fragment (atomic), TCP.
        let mut p = Vec::new();
        let payload_len = 8 + 24 + 8 + 20;
        p.extend_from_slice(&[0x60, 0, 0, 0, 0, payload_len, 0, 64]);
        p.extend_from_slice(&[0x20; 16]);
        p.extend_from_slice(&[0x30; 16]);
        p.extend_from_slice(&[43, 0, 1, 4, 0, 0, 0, 0]); // HBH -> routing
        p.extend_from_slice(&[44, 2, 2, 1, 0, 0, 0, 0]); // routing type 2, 1 left -> fragment
        p.extend_from_slice(&[0x40; 16]); // home address: the final destination
        p.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 7]); // fragment: offset 0, M 0 -> TCP
        let mut tcp = [0u8; 20];
        tcp[..4].copy_from_slice(&[0x9c, 0x40, 0, 80]);
        tcp[12] = 0x50;
        p.extend_from_slice(&tcp);
        let l = ip(classify(&p, LinkType::RawIp, &opts()).unwrap());
        assert_eq!(l.l4_offset as usize, 40 + 8 + 24 + 8);
        assert_eq!((l.l4_proto, l.fragment), (6, Fragment::Atomic));
        assert_eq!(l.final_dst_offset, Some(40 + 8 + 8));
        assert_eq!(l.flow.unwrap().dport, 80);
        // An extension header that claims more than the packet holds.
        let mut bad = p.clone();
        bad[41] = 200;
        assert_eq!(
            classify(&bad, LinkType::RawIp, &opts()).unwrap_err().kind,
            ParseErrorKind::BadExtensionHeader
        );
    }
}
