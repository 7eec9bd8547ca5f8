//! ICMP errors (ipvs.md §7.5): finding the connection an error is about, NAT of errors in both
//! directions, and the director's own error replies.

use core::net::IpAddr;

use super::nat::{Dir, addr_offset};
use super::{RewriteError, apply_ttl, be16, check_ttl, get, ip_header, put16};
use crate::flow::{FlowKey, Protocol};
use crate::wire::checksum::{checksum, fold, pseudo_header_v6, sum, update, update_word};
use crate::wire::{Fragment, Layout, Quote, parse_quote};

/// Largest IPv4 ICMP error the director sends (RFC 1812 §4.3.2.3: at most 576 bytes).
pub const IPV4_QUOTE_LIMIT: usize = 576;
/// Largest ICMPv6 error the director sends (RFC 4443 §2.4(c): at most the minimum MTU, 1280).
pub const IPV6_QUOTE_LIMIT: usize = 1280;

/// What an ICMP or ICMPv6 error says, and about which packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpErrorInfo {
    /// ICMP type.
    pub icmp_type: u8,
    /// ICMP code.
    pub code: u8,
    /// The next-hop MTU of an IPv4 fragmentation-needed (type 3 code 4) or ICMPv6 Packet Too
    /// Big (type 2) error.
    pub mtu: Option<u32>,
    /// The quoted packet: where its headers are and what they say.
    pub quote: Quote,
    /// The quoted packet's flow as quoted (source = whoever sent that packet), when its
    /// protocol is one LVS balances. A director that sent the quoted packet to a client looks
    /// up [`FlowKey::reversed`] in the client-to-service direction.
    pub flow: Option<FlowKey>,
}

fn is_error(version: u8, icmp_type: u8) -> bool {
    if version == 4 {
        // Destination unreachable, source quench, redirect, time exceeded, parameter problem.
        matches!(icmp_type, 3 | 4 | 5 | 11 | 12)
    } else {
        icmp_type < 128
    }
}

/// Reads an ICMP (IPv4 types 3, 4, 5, 11, 12) or ICMPv6 (types below 128) error: its type,
/// code, MTU, and the quoted packet's headers and flow, so a director can find the connection
/// it belongs to (and, for a fragmentation-needed or Packet Too Big from a router on the way to
/// a real server, tell the client). Fragmented errors are refused, as IPVS refuses them.
pub fn icmp_error_info(buf: &[u8], layout: &Layout) -> Result<IcmpErrorInfo, RewriteError> {
    let v = layout.ip_version;
    let icmp_proto = if v == 4 { 1 } else { 58 };
    if layout.l4_proto != icmp_proto
        || !matches!(layout.fragment, Fragment::None | Fragment::Atomic)
    {
        return Err(RewriteError::NotIcmpError);
    }
    let l4 = layout.l4_offset as usize;
    let h = get(buf, l4, 8)?;
    let (icmp_type, code) = (h[0], h[1]);
    if !is_error(v, icmp_type) {
        return Err(RewriteError::NotIcmpError);
    }
    let mtu = match (v, icmp_type, code) {
        (4, 3, 4) => Some(be16(h, 6) as u32),
        (6, 2, _) => Some(u32::from_be_bytes([h[4], h[5], h[6], h[7]])),
        _ => None,
    };
    let quote = parse_quote(buf, l4 + 8).map_err(|e| RewriteError::BadQuote {
        offset: e.offset as u32,
    })?;
    if quote.ip_version != v {
        return Err(RewriteError::BadQuote {
            offset: (l4 + 8) as u32,
        });
    }
    let flow = Protocol::from_number(quote.l4_proto)
        .filter(|p| !matches!((p, v), (Protocol::Icmp, 6) | (Protocol::Icmpv6, 4)))
        .map(|p| {
            let (sp, dp) = quote.ports.unwrap_or((0, 0));
            FlowKey::new(p, quote.src, sp, quote.dst, dp)
        });
    Ok(IcmpErrorInfo {
        icmp_type,
        code,
        mtu,
        quote,
        flow,
    })
}

/// NAT of an ICMP error coming from the client side about a packet the director sent for a NAT
/// connection (IPVS `ip_vs_in_icmp`): outer destination := the real server `addr`; in the
/// quoted packet, source address := `addr` and source port := `port`. The quoted IPv4 header
/// checksum and the ICMP checksum (ICMPv6: with its pseudo-header) are updated incrementally;
/// the quoted layer-4 checksum is left alone, as IPVS leaves it. `info` comes from
/// [`icmp_error_info`] on this buffer.
pub fn nat_icmp_in(
    buf: &mut [u8],
    layout: &Layout,
    info: &IcmpErrorInfo,
    addr: IpAddr,
    port: u16,
    decrement_ttl: bool,
) -> Result<(), RewriteError> {
    nat_icmp(buf, layout, info, Dir::Dst, addr, port, decrement_ttl)
}

/// NAT of an ICMP error a real server sends about a NAT connection (IPVS `ip_vs_out_icmp`):
/// outer source := the virtual address `addr`; in the quoted packet, destination address :=
/// `addr` and destination port := `port` (the virtual port). Checksums as [`nat_icmp_in`].
pub fn nat_icmp_out(
    buf: &mut [u8],
    layout: &Layout,
    info: &IcmpErrorInfo,
    addr: IpAddr,
    port: u16,
    decrement_ttl: bool,
) -> Result<(), RewriteError> {
    nat_icmp(buf, layout, info, Dir::Src, addr, port, decrement_ttl)
}

fn nat_icmp(
    buf: &mut [u8],
    layout: &Layout,
    info: &IcmpErrorInfo,
    outer: Dir,
    addr: IpAddr,
    port: u16,
    decrement_ttl: bool,
) -> Result<(), RewriteError> {
    match (layout.ip_version, addr) {
        (4, IpAddr::V4(a)) => nat_icmp_n(buf, layout, info, outer, a.octets(), port, decrement_ttl),
        (6, IpAddr::V6(a)) => nat_icmp_n(buf, layout, info, outer, a.octets(), port, decrement_ttl),
        _ => Err(RewriteError::FamilyMismatch),
    }
}

fn nat_icmp_n<const N: usize>(
    buf: &mut [u8],
    layout: &Layout,
    info: &IcmpErrorInfo,
    outer: Dir,
    new: [u8; N],
    port: u16,
    decrement_ttl: bool,
) -> Result<(), RewriteError> {
    let v6 = N == 16;
    let h = ip_header(buf, layout)?;
    if decrement_ttl {
        check_ttl(h, layout.ip_version)?;
    }
    let hlen = h.len();
    let l3 = layout.l3_offset as usize;
    let l4 = layout.l4_offset as usize;
    get(buf, l4, 4)?;
    let q = info.quote;
    let q3 = q.l3_offset as usize;
    let bad_quote = RewriteError::BadQuote { offset: q3 as u32 };
    if q.ip_version != layout.ip_version || q3 < l4 + 8 {
        return Err(bad_quote);
    }
    // The quoted packet travelled the other way: its source is the outer destination.
    let inner = if outer == Dir::Dst {
        Dir::Src
    } else {
        Dir::Dst
    };
    let q_addr = q3 + addr_offset(v6, inner);
    buf.get(q3..q3 + if v6 { 40 } else { 20 })
        .ok_or(bad_quote)?;
    let q_port = match q.ports {
        Some(_) => {
            let at = q.l4_offset as usize + if inner == Dir::Src { 0 } else { 2 };
            buf.get(at..at + 2).ok_or(bad_quote)?;
            Some(at)
        }
        None => None,
    };
    let o_addr = l3 + addr_offset(v6, outer);
    let pseudo = !(v6 && outer == Dir::Dst && layout.final_dst_offset.is_some());

    // Everything is checked: from here on nothing fails.
    if decrement_ttl {
        apply_ttl(&mut buf[l3..l3 + hlen], layout.ip_version);
    }
    let mut c = be16(buf, l4 + 2);
    let mut old = [0u8; N];
    old.copy_from_slice(&buf[o_addr..o_addr + N]);
    buf[o_addr..o_addr + N].copy_from_slice(&new);
    if !v6 {
        put16(buf, l3 + 10, update(be16(buf, l3 + 10), &old, &new));
    } else if pseudo {
        c = update(c, &old, &new);
    }
    old.copy_from_slice(&buf[q_addr..q_addr + N]);
    buf[q_addr..q_addr + N].copy_from_slice(&new);
    c = update(c, &old, &new);
    if !v6 {
        let qc = be16(buf, q3 + 10);
        let qc_new = update(qc, &old, &new);
        put16(buf, q3 + 10, qc_new);
        c = update_word(c, qc, qc_new);
    }
    if let Some(at) = q_port {
        c = update_word(c, be16(buf, at), port);
        put16(buf, at, port);
    }
    put16(buf, l4 + 2, c);
    Ok(())
}

/// An ICMP error the director itself sends back to a packet's source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcmpReply {
    /// IPv4 fragmentation needed (type 3 code 4) / ICMPv6 Packet Too Big (type 2), with the MTU
    /// the sender must fit (IPv4 carries 16 bits of it).
    TooBig {
        /// The MTU to report.
        mtu: u32,
    },
    /// TTL / hop limit exceeded in transit (IPv4 11/0, ICMPv6 3/0).
    TimeExceeded,
    /// Port unreachable (IPv4 3/3, ICMPv6 1/4): IPVS's answer when a service has no real server
    /// available.
    PortUnreachable,
    /// Host unreachable (IPv4 3/1, ICMPv6 address unreachable 1/3).
    HostUnreachable,
}

impl IcmpReply {
    fn type_code(self, v6: bool) -> (u8, u8) {
        match (self, v6) {
            (IcmpReply::TooBig { .. }, false) => (3, 4),
            (IcmpReply::TooBig { .. }, true) => (2, 0),
            (IcmpReply::TimeExceeded, false) => (11, 0),
            (IcmpReply::TimeExceeded, true) => (3, 0),
            (IcmpReply::PortUnreachable, false) => (3, 3),
            (IcmpReply::PortUnreachable, true) => (1, 4),
            (IcmpReply::HostUnreachable, false) => (3, 1),
            (IcmpReply::HostUnreachable, true) => (1, 3),
        }
    }
}

fn v4_no_reply_to(a: [u8; 4]) -> bool {
    let a = core::net::Ipv4Addr::from(a);
    a.is_multicast() || a.is_broadcast() || a.is_unspecified()
}

fn v6_no_reply_to(a: [u8; 16]) -> bool {
    let a = core::net::Ipv6Addr::from(a);
    a.is_multicast() || a.is_unspecified()
}

/// Writes into `out` the ICMP error `reply` about the packet in `frame` (classified as
/// `layout`), from the director's address `from`, to the packet's source; returns its length.
///
/// An Ethernet frame is answered with an Ethernet frame: MAC addresses swapped, VLAN tags kept.
/// The quote is as much of the offending packet as fits in 576 bytes (IPv4, RFC 1812) or 1280
/// (IPv6, RFC 4443), and never more than the frame holds. IPv4 errors go out with TOS 0xC0 and
/// TTL 64, ICMPv6 errors with hop limit 64. As RFC 1122 §3.2.2 and RFC 4443 §2.4(e) require,
/// there is no error about an ICMP error, a later fragment, or a packet from a multicast,
/// broadcast or unspecified source, nor (except Packet Too Big) to a multicast or broadcast
/// destination: those are [`RewriteError::NoIcmpAllowed`].
pub fn write_icmp_error(
    out: &mut [u8],
    frame: &[u8],
    layout: &Layout,
    reply: IcmpReply,
    from: IpAddr,
) -> Result<usize, RewriteError> {
    let h = ip_header(frame, layout)?;
    let v6 = layout.ip_version == 6;
    let mut me = [0u8; 16];
    match (from, v6) {
        (IpAddr::V4(f), false) => me[..4].copy_from_slice(&f.octets()),
        (IpAddr::V6(f), true) => me = f.octets(),
        _ => return Err(RewriteError::FamilyMismatch),
    }
    if layout.fragment == Fragment::NonFirst {
        return Err(RewriteError::NoIcmpAllowed);
    }
    let l3 = layout.l3_offset as usize;
    let l4 = layout.l4_offset as usize;
    if layout.l4_proto == if v6 { 58 } else { 1 } {
        // An error (or a message too short to tell) gets no error.
        match frame.get(l4) {
            Some(&t) if !is_error(layout.ip_version, t) => {}
            _ => return Err(RewriteError::NoIcmpAllowed),
        }
    }
    let too_big = matches!(reply, IcmpReply::TooBig { .. });
    let (mut src, mut dst) = ([0u8; 16], [0u8; 16]);
    if v6 {
        src.copy_from_slice(&h[8..24]);
        dst.copy_from_slice(&h[24..40]);
        if v6_no_reply_to(src) || (!too_big && v6_no_reply_to(dst)) {
            return Err(RewriteError::NoIcmpAllowed);
        }
    } else {
        src[..4].copy_from_slice(&h[12..16]);
        dst[..4].copy_from_slice(&h[16..20]);
        let s4 = [src[0], src[1], src[2], src[3]];
        let d4 = [dst[0], dst[1], dst[2], dst[3]];
        if v4_no_reply_to(s4) || v4_no_reply_to(d4) {
            return Err(RewriteError::NoIcmpAllowed);
        }
    }
    let l2 = layout.l2_len as usize;
    let ip_hdr = if v6 { 40 } else { 20 };
    let limit = if v6 {
        IPV6_QUOTE_LIMIT
    } else {
        IPV4_QUOTE_LIMIT
    } - ip_hdr
        - 8;
    let quote = (layout.ip_len as usize).min(frame.len() - l3).min(limit);
    let total = l2 + ip_hdr + 8 + quote;
    if out.len() < total {
        return Err(RewriteError::OutputTooSmall {
            needed: total as u32,
        });
    }
    if l2 > 0 {
        let e = get(frame, 0, l2)?;
        out[0..6].copy_from_slice(&e[6..12]);
        out[6..12].copy_from_slice(&e[0..6]);
        out[12..l2].copy_from_slice(&e[12..l2]);
    }
    let ip_len = ip_hdr + 8 + quote;
    let (icmp_type, code) = reply.type_code(v6);
    let o = l2;
    let i = o + ip_hdr;
    if v6 {
        let hdr = &mut out[o..o + 40];
        hdr[..4].copy_from_slice(&[0x60, 0, 0, 0]);
        put16(hdr, 4, (8 + quote) as u16);
        hdr[6] = 58;
        hdr[7] = 64;
        hdr[8..24].copy_from_slice(&me);
        hdr[24..40].copy_from_slice(&src);
    } else {
        let hdr = &mut out[o..o + 20];
        hdr[..12].copy_from_slice(&[0x45, 0xc0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0]);
        put16(hdr, 2, ip_len as u16);
        hdr[12..16].copy_from_slice(&me[..4]);
        hdr[16..20].copy_from_slice(&src[..4]);
        let c = checksum(hdr);
        put16(hdr, 10, c);
    }
    let icmp = &mut out[i..i + 8 + quote];
    icmp[0] = icmp_type;
    icmp[1] = code;
    icmp[2..8].fill(0);
    if let IcmpReply::TooBig { mtu } = reply {
        if v6 {
            icmp[4..8].copy_from_slice(&mtu.to_be_bytes());
        } else {
            put16(icmp, 6, mtu.min(0xffff) as u16);
        }
    }
    icmp[8..].copy_from_slice(&frame[l3..l3 + quote]);
    let c = if v6 {
        !fold(sum(
            pseudo_header_v6(&me, &src, 58, (8 + quote) as u32),
            icmp,
        ))
    } else {
        checksum(icmp)
    };
    put16(icmp, 2, c);
    Ok(total)
}
