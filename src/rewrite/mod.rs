//! Packet rewrites for the three LVS forwarding methods, in place on byte buffers.
//!
//! Each function takes the frame (an Ethernet frame or a bare IP packet) and the
//! [`Layout`] that [`classify`](crate::wire::classify()) returned for it, and
//! never parses again. Nothing allocates, nothing panics: a field outside the buffer, a layout
//! that does not match the bytes, or a packet the rewrite cannot handle is a [`RewriteError`],
//! and on every error the buffer is left exactly as it was.
//!
//! | method | function | what changes (ipvs.md §7) |
//! |--------|----------|---------------------------|
//! | NAT, client → real server | [`nat_in`] | destination address and port, TTL |
//! | NAT, real server → client | [`nat_out`] | source address and port, TTL |
//! | NAT, ICMP errors | [`nat_icmp_in`], [`nat_icmp_out`] | outer address, quoted address and port |
//! | DR | [`dr`] | MAC addresses, optional VLAN ID, TTL |
//! | TUN | [`encap`] / [`decap`] | outer IPv4/IPv6 header, GUE or GRE, into headroom |
//!
//! Around them: [`icmp_error_info`] finds the flow an ICMP error is about, [`write_icmp_error`]
//! builds the director's own ICMP replies (fragmentation needed, Packet Too Big, time
//! exceeded, unreachable), [`clamp_mss`] lowers the TCP MSS of SYNs for tunnelled flows, and
//! [`decrement_ttl`] is the forwarding step every method shares.
//!
//! # Checksums
//! Checksums are updated incrementally (RFC 1624 for the Internet checksum, the linear update
//! of [`crc32c_patch`](crate::wire::checksum::crc32c_patch) for SCTP), so a rewrite costs the
//! same at 64 and 9000 bytes, a snaplen-cut frame stays consistent, and a checksum that arrived
//! wrong leaves exactly as wrong (IPVS forwards such packets too; the receiver drops them).
//! Two cases need the whole packet, as in IPVS: a UDP checksum of 0 ("none") is computed in
//! full by NAT, and GUE and GRE checksums are computed over the inner packet. For frames whose
//! layer-4 checksum a transmit offload left partial, [`ChecksumMode::Partial`] updates only the
//! pseudo-header part.
//!
//! # Fragments, IP options, IPv6 extension headers
//! - IPv4 options and IPv6 extension headers are kept as they are; every function works at the
//!   offsets the layout found past them.
//! - A first fragment carries the layer-4 header: it is rewritten like a whole packet, except
//!   that a UDP checksum of 0 stays 0 (the full computation needs the other fragments).
//! - A later fragment has no layer-4 header and no ports: NAT rewrites its addresses, TTL and
//!   IPv4 header checksum only, so a director that knows the connection (from the first
//!   fragment, or from reassembly) can forward it. Tunnel encapsulation carries fragments like
//!   any packet; decapsulation refuses a fragmented outer packet (reassemble first).
//! - IPv6 routing headers: the layer-4 pseudo-header uses the final destination (RFC 8200
//!   §8.1). NAT of the destination on a packet whose routing header still has segments left
//!   changes the address in the IPv6 header only, and the layer-4 checksum only for the port.

mod dr;
mod icmp;
mod mss;
mod nat;
mod tun;

#[cfg(feature = "bytes")]
mod bytes;

use core::fmt;

use crate::wire::Layout;

pub use dr::{DrParams, dr, vlan_pop, vlan_push};
pub use icmp::icmp_error_info;
pub use icmp::{
    IPV4_QUOTE_LIMIT, IPV6_QUOTE_LIMIT, IcmpErrorInfo, IcmpReply, nat_icmp_in, nat_icmp_out,
    write_icmp_error,
};
pub use mss::{clamp_mss, mss_for_mtu};
pub use nat::{ChecksumMode, NatOptions, nat_in, nat_out};
pub use tun::{
    Decapsulated, Encapsulated, GUE_REMCSUM_LEN, GueChecksum, TunnelKind, TunnelParams,
    complete_remcsum, decap, encap, tunnel_flow_hash, tunnel_overhead, verify_outer,
};

#[cfg(feature = "bytes")]
pub use self::bytes::encap_bytes;

/// Why a rewrite refused a packet. On every error the buffer is unchanged.
///
/// Offsets and sizes are `u32` so that `Result<(), RewriteError>` stays within two registers:
/// a rewrite's result costs a caller nothing to inspect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RewriteError {
    /// A field the rewrite needs lies outside the buffer.
    Truncated {
        /// Offset of the field.
        offset: u32,
        /// Bytes it needs from there.
        needed: u32,
    },
    /// The bytes do not match the layout (another IP version at the layout's offset, ...):
    /// the layout belongs to another frame.
    LayoutMismatch {
        /// Offset of the header that disagrees.
        offset: u32,
    },
    /// The new address is not of the packet's family (NAT keeps the family; only tunnels mix).
    FamilyMismatch,
    /// The TTL or hop limit was 1 or 0: a router drops the packet and sends ICMP time exceeded.
    TtlExpired,
    /// Encapsulated, the packet would exceed the MTU and must not be fragmented: send the
    /// client ICMP fragmentation needed / Packet Too Big with this MTU.
    TooBig {
        /// The largest inner packet that fits (MTU minus the tunnel overhead).
        mtu: u32,
    },
    /// Not enough room before the frame for the headers to prepend.
    NoHeadroom {
        /// Bytes needed before the frame's start.
        needed: u32,
        /// Bytes there are.
        available: u32,
    },
    /// The output buffer is too small.
    OutputTooSmall {
        /// Bytes needed.
        needed: u32,
    },
    /// The rewrite needs an Ethernet header and the frame has none (a bare IP packet).
    NoLinkLayer,
    /// A VLAN rewrite on a frame without a VLAN tag.
    NoVlanTag,
    /// A VLAN ID above 4095.
    BadVlanId(u16),
    /// The IP length disagrees with the headers (shorter than they are).
    BadLength {
        /// Offset of the IP header.
        offset: u32,
    },
    /// The full packet is needed (for a checksum computed from scratch) and the frame is cut
    /// short or is a fragment.
    Incomplete,
    /// Not a tunnel packet this crate can decapsulate, or its tunnel header is malformed.
    BadTunnel {
        /// Offset of the offending header.
        offset: u32,
    },
    /// Not an ICMP or ICMPv6 error message (or a fragmented one, which IPVS drops too).
    NotIcmpError,
    /// The packet quoted in an ICMP error is malformed or cut before a field the rewrite needs.
    BadQuote {
        /// Offset where the quote failed.
        offset: u32,
    },
    /// RFC 1122 §3.2.2 / RFC 4443 §2.4(e): no ICMP error is sent about this packet (it is an
    /// ICMP error itself, a later fragment, or from a multicast, broadcast or unspecified
    /// source).
    NoIcmpAllowed,
    /// A checksum does not verify ([`verify_outer`]): the header or segment whose checksum
    /// field is at `offset`.
    BadChecksum {
        /// Offset of the checksum field.
        offset: u32,
    },
}

impl fmt::Display for RewriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RewriteError::Truncated { offset, needed } => {
                write!(f, "truncated: need {needed} bytes at offset {offset}")
            }
            RewriteError::LayoutMismatch { offset } => {
                write!(f, "frame does not match its layout at offset {offset}")
            }
            RewriteError::FamilyMismatch => f.write_str("address family differs from the packet's"),
            RewriteError::TtlExpired => f.write_str("TTL expired"),
            RewriteError::TooBig { mtu } => write!(f, "too big for the path: MTU {mtu}"),
            RewriteError::NoHeadroom { needed, available } => {
                write!(f, "need {needed} bytes of headroom, have {available}")
            }
            RewriteError::OutputTooSmall { needed } => {
                write!(f, "output buffer too small: need {needed} bytes")
            }
            RewriteError::NoLinkLayer => f.write_str("frame has no Ethernet header"),
            RewriteError::NoVlanTag => f.write_str("frame has no VLAN tag"),
            RewriteError::BadVlanId(v) => write!(f, "VLAN ID {v} above 4095"),
            RewriteError::BadLength { offset } => {
                write!(f, "IP length shorter than the headers at offset {offset}")
            }
            RewriteError::Incomplete => {
                f.write_str("whole packet needed, frame is truncated or a fragment")
            }
            RewriteError::BadTunnel { offset } => {
                write!(f, "not a usable tunnel header at offset {offset}")
            }
            RewriteError::NotIcmpError => f.write_str("not an unfragmented ICMP error"),
            RewriteError::BadQuote { offset } => {
                write!(
                    f,
                    "malformed packet quoted in ICMP error at offset {offset}"
                )
            }
            RewriteError::NoIcmpAllowed => {
                f.write_str("no ICMP error may be sent about this packet")
            }
            RewriteError::BadChecksum { offset } => {
                write!(f, "checksum at offset {offset} does not verify")
            }
        }
    }
}

impl core::error::Error for RewriteError {}

#[inline(always)]
pub(crate) fn get(buf: &[u8], offset: usize, needed: usize) -> Result<&[u8], RewriteError> {
    buf.get(offset..offset + needed)
        .ok_or(RewriteError::Truncated {
            offset: offset as u32,
            needed: needed as u32,
        })
}

#[inline(always)]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline(always)]
pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// The IP header at the layout's offset, checked against the layout itself and the buffer:
/// the layout is caller data, so one that does not fit together (a link-layer length that is
/// not the IP offset, or neither 0 nor a whole Ethernet header; a layer-4 offset inside the IP
/// header; another IP version in the bytes) is refused here, once for every rewrite.
#[inline(always)]
pub(crate) fn ip_header<'a>(buf: &'a [u8], layout: &Layout) -> Result<&'a [u8], RewriteError> {
    let l3 = layout.l3_offset as usize;
    let len = if layout.ip_version == 6 { 40 } else { 20 };
    let l2 = layout.l2_len as usize;
    if l2 != l3 || (l2 != 0 && l2 < 14) || (layout.l4_offset as usize) < l3 + len {
        return Err(RewriteError::LayoutMismatch { offset: l3 as u32 });
    }
    let h = get(buf, l3, len)?;
    if h[0] >> 4 != layout.ip_version {
        return Err(RewriteError::LayoutMismatch { offset: l3 as u32 });
    }
    Ok(h)
}

/// The pseudo-header sum of the IP header at `l3` as it now is, with the destination at
/// `dst_at` (the IPv6 header's, or a routing header's final destination). The caller has
/// checked the header and `dst_at` lie in the buffer.
#[inline(always)]
pub(crate) fn pseudo_header_at(
    buf: &[u8],
    l3: usize,
    v6: bool,
    dst_at: Option<usize>,
    proto: u8,
    len: usize,
) -> u64 {
    use crate::wire::checksum::{pseudo_header_v4, pseudo_header_v6};
    if v6 {
        let mut s = [0u8; 16];
        let mut d = [0u8; 16];
        s.copy_from_slice(&buf[l3 + 8..l3 + 24]);
        let dst_at = dst_at.unwrap_or(l3 + 24);
        d.copy_from_slice(&buf[dst_at..dst_at + 16]);
        pseudo_header_v6(&s, &d, proto, len as u32)
    } else {
        let mut s = [0u8; 4];
        let mut d = [0u8; 4];
        s.copy_from_slice(&buf[l3 + 12..l3 + 16]);
        d.copy_from_slice(&buf[l3 + 16..l3 + 20]);
        pseudo_header_v4(s, d, proto, len as u16)
    }
}

/// Checks that the TTL (hop limit) allows forwarding, without changing it.
#[inline(always)]
pub(crate) fn check_ttl(h: &[u8], version: u8) -> Result<(), RewriteError> {
    let ttl = if version == 4 { h[8] } else { h[7] };
    if ttl <= 1 {
        Err(RewriteError::TtlExpired)
    } else {
        Ok(())
    }
}

/// Decrements a checked TTL (hop limit) and, for IPv4, updates the header checksum.
#[inline(always)]
pub(crate) fn apply_ttl(h: &mut [u8], version: u8) {
    if version == 4 {
        let hc = be16(h, 10);
        let (old, new) = decrement_ttl_v4(h);
        put16(h, 10, crate::wire::checksum::update_word(hc, old, new));
    } else {
        h[7] -= 1;
    }
}

/// Decrements a checked IPv4 TTL and returns the TTL-and-protocol word before and after, for
/// the caller's header checksum update (alone, or folded in with other changes). The word is
/// computed rather than read back: a 2-byte load of a byte just stored waits for the store to
/// retire (no store forwarding), a dozen cycles on every packet. The TTL was checked above 1,
/// so no borrow.
#[inline(always)]
pub(crate) fn decrement_ttl_v4(h: &mut [u8]) -> (u16, u16) {
    let old = be16(h, 8);
    let new = old - 0x0100;
    put16(h, 8, new);
    (old, new)
}

/// The forwarding step every method shares (ipvs.md §7.0): decrement the TTL or hop limit and
/// fix the IPv4 header checksum; a TTL of 1 or 0 is [`RewriteError::TtlExpired`] and the
/// packet is left as it was.
#[inline]
pub fn decrement_ttl(buf: &mut [u8], layout: &Layout) -> Result<(), RewriteError> {
    let h = ip_header(buf, layout)?;
    check_ttl(h, layout.ip_version)?;
    let l3 = layout.l3_offset as usize;
    let len = h.len();
    apply_ttl(&mut buf[l3..l3 + len], layout.ip_version);
    Ok(())
}

/// Bytes of the IP packet after the start of its layer-4 header, as the IP header states them.
#[inline(always)]
pub(crate) fn l4_len(layout: &Layout) -> Result<usize, RewriteError> {
    let bad = RewriteError::BadLength {
        offset: layout.l3_offset as u32,
    };
    let hdrs = layout.l4_offset.checked_sub(layout.l3_offset).ok_or(bad)?;
    (layout.ip_len as usize)
        .checked_sub(hdrs as usize)
        .ok_or(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_fit_in_two_registers() {
        assert!(core::mem::size_of::<Result<(), RewriteError>>() <= 16);
    }
}
