//! NAT (IPVS "masquerading", ipvs.md §7.1): the destination becomes the real server on the way
//! in, the source becomes the virtual service on the way out.

use core::net::IpAddr;

use super::{
    RewriteError, apply_ttl, be16, check_ttl, decrement_ttl_v4, get, ip_header, l4_len,
    pseudo_header_at, put16,
};
use crate::wire::checksum::{
    apply_delta, apply_delta_partial, crc32c_patch, delta, fold, sum, udp_nonzero,
};
use crate::wire::{Fragment, Layout};

/// What the layer-4 checksum field holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChecksumMode {
    /// A finished checksum (received frames, and frames from a host without transmit offload).
    #[default]
    Complete,
    /// A partial checksum a transmit offload will finish (Linux `CHECKSUM_PARTIAL`, AF_PACKET
    /// `TP_STATUS_CSUMNOTREADY`): the field holds the pseudo-header sum, so only address
    /// changes are applied to it, and SCTP's CRC32c is left to the offload.
    Partial,
}

/// NAT settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatOptions {
    /// Decrement the TTL / hop limit, as a forwarding director does (default `true`).
    pub decrement_ttl: bool,
    /// What the layer-4 checksum field holds.
    pub checksum: ChecksumMode,
}

impl Default for NatOptions {
    fn default() -> Self {
        NatOptions {
            decrement_ttl: true,
            checksum: ChecksumMode::Complete,
        }
    }
}

/// NAT in (client → real server): the destination address becomes `addr` and, for TCP, UDP
/// and SCTP, the destination port becomes `port` (pass the packet's own port to keep it, as
/// for port-0 services).
///
/// Updates the IPv4 header checksum, the TCP, UDP or ICMPv6 checksum (RFC 1624) and the SCTP
/// CRC32c (linear update); a UDP checksum of 0 is computed in full as IPVS does (a computed 0
/// is sent as 0xFFFF), except on fragments and cut frames, where it stays 0; a UDP length
/// outside 8..=IP payload then makes the packet [`RewriteError::BadLength`] (receivers would
/// drop it). With
/// `opts.decrement_ttl`, a TTL or hop limit of 1 or 0 is [`RewriteError::TtlExpired`].
/// See the [module docs](super) for fragments and routing headers.
///
/// ```
/// use lvs::rewrite::{nat_in, NatOptions};
/// use lvs::wire::{classify, Classified, ClassifyOptions, LinkType};
///
/// // An Ethernet/IPv4/TCP SYN from 192.0.2.7:40000 to the VIP 198.51.100.1:80.
/// let mut frame = Vec::new();
/// etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
///     .ipv4([192, 0, 2, 7], [198, 51, 100, 1], 64)
///     .tcp(40000, 80, 1, 65535)
///     .syn()
///     .write(&mut frame, &[])
///     .unwrap();
/// let Ok(Classified::Ip(layout)) = classify(&frame, LinkType::Ethernet, &ClassifyOptions::default()) else {
///     panic!()
/// };
/// nat_in(&mut frame, &layout, "10.0.0.2".parse().unwrap(), 8080, &NatOptions::default()).unwrap();
///
/// let p = etherparse::SlicedPacket::from_ethernet(&frame).unwrap();
/// let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else { panic!() };
/// assert_eq!(ip.header().destination(), [10, 0, 0, 2]);
/// assert_eq!(ip.header().ttl(), 63);
/// ```
#[inline]
pub fn nat_in(
    buf: &mut [u8],
    layout: &Layout,
    addr: IpAddr,
    port: u16,
    opts: &NatOptions,
) -> Result<(), RewriteError> {
    rewrite(buf, layout, Dir::Dst, addr, port, opts)
}

/// NAT out (real server → client): the source address becomes `addr` (the virtual address) and,
/// for TCP, UDP and SCTP, the source port becomes `port` (the virtual port). Checksums, TTL,
/// fragments: as [`nat_in`].
#[inline]
pub fn nat_out(
    buf: &mut [u8],
    layout: &Layout,
    addr: IpAddr,
    port: u16,
    opts: &NatOptions,
) -> Result<(), RewriteError> {
    rewrite(buf, layout, Dir::Src, addr, port, opts)
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Dir {
    Src,
    Dst,
}

/// Offset of the source or destination address in an IPv4 or IPv6 header.
#[inline(always)]
pub(super) fn addr_offset(v6: bool, dir: Dir) -> usize {
    match (v6, dir) {
        (false, Dir::Src) => 12,
        (false, Dir::Dst) => 16,
        (true, Dir::Src) => 8,
        (true, Dir::Dst) => 24,
    }
}

/// What the layer-4 header needs, decided (and bounds-checked) before anything is written.
enum Plan {
    /// No layer-4 header (a later fragment) or nothing in it depends on the address or port.
    None,
    /// A 16-bit Internet checksum at `csum`, over a pseudo-header and, with `port`, a port.
    Inet {
        csum: usize,
        port: Option<usize>,
        udp: bool,
    },
    /// UDP whose checksum must be computed from scratch (it was 0), after the port.
    UdpFull { port: usize, len: usize },
    /// UDP with a 0 checksum that cannot be computed (a fragment or a cut frame): port only.
    PortOnly { port: usize },
    /// SCTP: the ports, then the CRC32c over `len` bytes.
    Sctp { port: usize, len: usize },
}

#[inline(always)]
fn rewrite(
    buf: &mut [u8],
    layout: &Layout,
    dir: Dir,
    addr: IpAddr,
    port: u16,
    opts: &NatOptions,
) -> Result<(), RewriteError> {
    match (layout.ip_version, addr) {
        (4, IpAddr::V4(a)) => rewrite_n(buf, layout, dir, a.octets(), port, opts),
        (6, IpAddr::V6(a)) => rewrite_n(buf, layout, dir, a.octets(), port, opts),
        _ => Err(RewriteError::FamilyMismatch),
    }
}

#[inline(always)]
fn rewrite_n<const N: usize>(
    buf: &mut [u8],
    layout: &Layout,
    dir: Dir,
    new: [u8; N],
    port: u16,
    opts: &NatOptions,
) -> Result<(), RewriteError> {
    let v6 = N == 16;
    let h = ip_header(buf, layout)?;
    if opts.decrement_ttl {
        check_ttl(h, layout.ip_version)?;
    }
    let hlen = h.len();
    let l3 = layout.l3_offset as usize;
    let addr_at = l3 + addr_offset(v6, dir);
    let mut old = [0u8; N];
    old.copy_from_slice(&buf[addr_at..addr_at + N]);
    // The pseudo-header uses the final destination: with segments left in a routing header,
    // the address in the IPv6 header is not in it.
    let pseudo = !(v6 && dir == Dir::Dst && layout.final_dst_offset.is_some());
    let plan = plan(buf, layout, dir, opts.checksum, v6)?;

    // Everything is checked: from here on nothing fails.
    let h = &mut buf[l3..l3 + hlen];
    // The address change, computed once for the IPv4 header and the pseudo-header.
    let d_addr = delta(&old, &new);
    if v6 {
        if opts.decrement_ttl {
            apply_ttl(h, layout.ip_version);
        }
    } else {
        // The TTL and address changes folded into the header checksum at once: one fold and
        // one store on the packet's dependency chain instead of two of each.
        let hc = be16(h, 10);
        let mut d = d_addr;
        if opts.decrement_ttl {
            let (old, new) = decrement_ttl_v4(h);
            d += !old as u64 + new as u64;
        }
        put16(h, 10, apply_delta(hc, d));
    }
    buf[addr_at..addr_at + N].copy_from_slice(&new);

    let partial = opts.checksum == ChecksumMode::Partial;
    let l4 = layout.l4_offset as usize;
    match plan {
        Plan::None => {}
        Plan::Inet {
            csum,
            port: at,
            udp,
        } => {
            let mut c = be16(buf, csum);
            let mut d = if pseudo { d_addr } else { 0 };
            if partial {
                c = apply_delta_partial(c, d);
            } else {
                if let Some(at) = at {
                    d += (!be16(buf, at)) as u64 + port as u64;
                }
                c = apply_delta(c, d);
                if udp {
                    c = udp_nonzero(c);
                }
            }
            if let Some(at) = at {
                put16(buf, at, port);
            }
            put16(buf, csum, c);
        }
        Plan::PortOnly { port: at } => put16(buf, at, port),
        Plan::UdpFull { port: at, len } => {
            put16(buf, at, port);
            let c = udp_checksum(buf, layout, len);
            put16(buf, l4 + 6, c);
        }
        Plan::Sctp { port: at, len } => {
            let old_port = [buf[at], buf[at + 1]];
            let new_port = port.to_be_bytes();
            put16(buf, at, port);
            if !partial {
                let crc_at = l4 + 8;
                let crc = u32::from_le_bytes([
                    buf[crc_at],
                    buf[crc_at + 1],
                    buf[crc_at + 2],
                    buf[crc_at + 3],
                ]);
                // Bytes of the SCTP packet after the port.
                let after = len - (at - l4) - 2;
                let crc = crc32c_patch(crc, &old_port, &new_port, after);
                buf[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
            }
        }
    }
    Ok(())
}

#[inline(always)]
fn plan(
    buf: &[u8],
    layout: &Layout,
    dir: Dir,
    mode: ChecksumMode,
    v6: bool,
) -> Result<Plan, RewriteError> {
    if layout.fragment == Fragment::NonFirst {
        return Ok(Plan::None);
    }
    let l4 = layout.l4_offset as usize;
    let port_at = l4 + if dir == Dir::Src { 0 } else { 2 };
    Ok(match layout.l4_proto {
        6 => {
            get(buf, l4, 18)?;
            Plan::Inet {
                csum: l4 + 16,
                port: Some(port_at),
                udp: false,
            }
        }
        17 => {
            let h = get(buf, l4, 8)?;
            if be16(h, 6) != 0 || mode == ChecksumMode::Partial {
                Plan::Inet {
                    csum: l4 + 6,
                    port: Some(port_at),
                    udp: true,
                }
            } else if layout.truncated
                || !matches!(layout.fragment, Fragment::None | Fragment::Atomic)
            {
                Plan::PortOnly { port: port_at }
            } else {
                // The datagram is what the UDP length says (receivers check 8 <= it <= the IP
                // payload, and drop it otherwise: refuse such packets here, counted).
                let len = be16(h, 4) as usize;
                if len < 8 || len > l4_len(layout)? {
                    return Err(RewriteError::BadLength {
                        offset: layout.l3_offset as u32,
                    });
                }
                get(buf, l4, len)?;
                if let Some(o) = layout.final_dst_offset {
                    get(buf, o as usize, 16)?;
                }
                Plan::UdpFull { port: port_at, len }
            }
        }
        132 => {
            get(buf, l4, 12)?;
            let len = l4_len(layout)?;
            if len < 12 {
                return Err(RewriteError::BadLength {
                    offset: layout.l3_offset as u32,
                });
            }
            Plan::Sctp { port: port_at, len }
        }
        58 if v6 => {
            get(buf, l4, 4)?;
            Plan::Inet {
                csum: l4 + 2,
                port: None,
                udp: false,
            }
        }
        _ => Plan::None,
    })
}

/// The UDP checksum of the whole datagram (`len` bytes from the layer-4 offset as the UDP
/// length states, all in the buffer, the checksum field zero) with the addresses now in the IP
/// header.
fn udp_checksum(buf: &[u8], layout: &Layout, len: usize) -> u16 {
    let l4 = layout.l4_offset as usize;
    let ph = pseudo_header_at(
        buf,
        layout.l3_offset as usize,
        layout.ip_version == 6,
        layout.final_dst_offset.map(|o| o as usize),
        17,
        len,
    );
    udp_nonzero(!fold(sum(ph, &buf[l4..l4 + len])))
}
