//! TUN, IP tunnelling (ipvs.md §7.4): the client's IP packet, TTL decremented, goes inside an
//! outer IPv4 or IPv6 header addressed to the real server, optionally after a GUE or GRE
//! header. The outer headers are written into headroom before the frame, so nothing is copied
//! but the link-layer header.
//!
//! ```text
//! before:            [ L2 | inner IP ... ]
//!          headroom ^start
//! after:   [ L2 | outer IP | UDP+GUE or GRE | inner IP ... ]
//!          ^new start
//! ```

use core::net::IpAddr;

use super::{RewriteError, apply_ttl, be16, check_ttl, get, ip_header, pseudo_header_at, put16};
use crate::flow::FlowKey;
use crate::wire::checksum::{checksum, fold, sum, udp_nonzero, verifies};
use crate::wire::{ETHERTYPE_IPV4, ETHERTYPE_IPV6, Fragment, Layout, Tunnel};

/// The tunnel a real server expects (`ipvsadm --tun-type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunnelKind {
    /// IP in IP: IPv4 in IPv4 (protocol 4), IPv6 in IPv6 (41), or the mixed families, chosen by
    /// the inner and outer versions (`--tun-type ipip`).
    Ipip,
    /// Generic UDP Encapsulation (`--tun-type gue --tun-port PORT`): UDP to `port`, then the
    /// 4-byte GUE header IPVS writes (version 0, no options, inner protocol 4 or 41).
    Gue {
        /// UDP destination port on the real server.
        port: u16,
        /// UDP checksum policy.
        checksum: GueChecksum,
    },
    /// GRE (`--tun-type gre`): the 4-byte base header with the inner EtherType, or 8 bytes with
    /// the checksum (`--tun-flags csum`).
    Gre {
        /// Include the GRE checksum.
        checksum: bool,
    },
}

/// UDP checksum of GUE packets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GueChecksum {
    /// Zero, "no checksum", over IPv4 and IPv6 alike (IPVS's default; RFC 6935 allows it for
    /// tunnels over IPv6).
    #[default]
    None,
    /// Computed over the whole packet (`--tun-csum`): needs the whole inner packet.
    Full,
    /// Remote checksum offload (`--tun-remcsum`), as IPVS sends it: the UDP checksum computed
    /// as with [`Full`](Self::Full), and a packet whose inner TCP, UDP or ICMP checksum an
    /// offload left partial ([`TunnelParams::inner_partial`]) also carries GUE's private REMCSUM
    /// option ([`GUE_REMCSUM_LEN`] bytes more), telling the real server where to complete it
    /// (see [`Decapsulated::remcsum`] and [`complete_remcsum`]).
    RemCsum,
}

/// Bytes GUE's remote checksum offload adds to a partial-checksum packet: the private flags
/// word and the start and offset of the checksum.
pub const GUE_REMCSUM_LEN: usize = 8;

/// Where the tunnel goes and how its outer header is filled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunnelParams {
    /// The tunnel type.
    pub kind: TunnelKind,
    /// Outer source: the director's address (or the base of a source range, see
    /// `src_hash_bits`).
    pub src: IpAddr,
    /// Outer destination: the real server. Its family chooses the outer IP version.
    pub dst: IpAddr,
    /// Replace the low `src_hash_bits` bits (0..=32) of `src` with bits of `flow_hash`, so the
    /// real server's NIC (RSS) and ECMP routers spread tunnelled flows, as Katran and GLB do.
    /// 0 (the default) keeps `src` as it is, as IPVS does.
    pub src_hash_bits: u8,
    /// A hash of the inner flow, stable per connection (for example [`tunnel_flow_hash`], or
    /// the NIC's RSS hash): it chooses the GUE source port, the hashed source bits and the IPv6
    /// flow label.
    pub flow_hash: u32,
    /// IPVS's `pmtu_disc` (default on): copy DF from an inner IPv4 packet and refuse packets
    /// that do not fit `mtu`; off, DF is 0 and oversized packets are marked for fragmentation.
    pub pmtu_disc: bool,
    /// The outer IPv4 identification (a per-destination counter, as the kernel uses, or 0).
    pub ip_id: u16,
    /// The path MTU towards the real server; 0 skips the check.
    pub mtu: u32,
    /// Set the outer IPv6 flow label from `flow_hash` (RFC 6438); IPVS leaves it 0.
    pub flow_label: bool,
    /// The range GUE source ports are hashed into (the kernel's ip_local_port_range,
    /// 32768..=60999, by default).
    pub gue_src_ports: (u16, u16),
    /// Decrement the inner TTL / hop limit before encapsulating (default `true`, as IPVS).
    pub decrement_ttl: bool,
    /// New destination and source MACs for an Ethernet frame (the next hop towards the real
    /// server, and the director); `None` keeps the frame's.
    pub macs: Option<([u8; 6], [u8; 6])>,
    /// The inner packet's layer-4 checksum is partial: an offload left the pseudo-header sum in
    /// the field for the NIC to complete (Linux `CHECKSUM_PARTIAL`, `TP_STATUS_CSUMNOTREADY`).
    /// With [`GueChecksum::RemCsum`] the real server is told to complete it; otherwise the
    /// caller must complete it before encapsulating.
    pub inner_partial: bool,
}

impl TunnelParams {
    /// A tunnel from `src` to `dst` with IPVS's defaults.
    pub fn new(kind: TunnelKind, src: IpAddr, dst: IpAddr) -> Self {
        TunnelParams {
            kind,
            src,
            dst,
            src_hash_bits: 0,
            flow_hash: 0,
            pmtu_disc: true,
            ip_id: 0,
            mtu: 0,
            flow_label: false,
            gue_src_ports: (32768, 60999),
            decrement_ttl: true,
            macs: None,
            inner_partial: false,
        }
    }

    /// Whether packets carry GUE's REMCSUM option: [`GueChecksum::RemCsum`] and a partial inner
    /// checksum.
    pub fn remcsum_option(&self) -> bool {
        matches!(
            self.kind,
            TunnelKind::Gue {
                checksum: GueChecksum::RemCsum,
                ..
            }
        ) && self.inner_partial
    }

    /// The headroom [`encap`] needs with these parameters: [`tunnel_overhead`] for the kind and
    /// the family of `dst`, plus [`GUE_REMCSUM_LEN`] with the REMCSUM option.
    pub fn overhead(&self) -> usize {
        tunnel_overhead(self.kind, self.dst.is_ipv6())
            + if self.remcsum_option() {
                GUE_REMCSUM_LEN
            } else {
                0
            }
    }
}

/// Bytes a tunnel adds: the outer IP header plus the GUE or GRE header ([`GUE_REMCSUM_LEN`]
/// more for a partial-checksum packet under [`GueChecksum::RemCsum`]).
pub const fn tunnel_overhead(kind: TunnelKind, outer_ipv6: bool) -> usize {
    let ip = if outer_ipv6 { 40 } else { 20 };
    ip + match kind {
        TunnelKind::Ipip => 0,
        TunnelKind::Gue { .. } => 12,
        TunnelKind::Gre { checksum: false } => 4,
        TunnelKind::Gre { checksum: true } => 8,
    }
}

/// A hash of a flow for [`TunnelParams::flow_hash`]: stable across runs and directors, the
/// same for every packet of a connection, spreading well in its high bits (the GUE source port
/// takes the high bits, a hashed source address the low bits: both are mixed).
pub fn tunnel_flow_hash(flow: &FlowKey) -> u32 {
    let a = |ip: &IpAddr| -> u64 {
        match ip {
            IpAddr::V4(v) => u32::from(*v) as u64,
            IpAddr::V6(v) => {
                let x = u128::from(*v);
                (x as u64) ^ ((x >> 64) as u64).rotate_left(17)
            }
        }
    };
    let mut h = a(&flow.src) ^ a(&flow.dst).rotate_left(32);
    h ^= ((flow.sport as u64) << 16 | flow.dport as u64) << 8 | flow.proto.number() as u64;
    // SplitMix64's finaliser.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (h ^ (h >> 31)) as u32
}

/// Where the encapsulated frame lies in the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Encapsulated {
    /// New start of the frame (before the old one by the tunnel overhead).
    pub start: usize,
    /// End of the frame: the end of the inner IP packet (Ethernet padding is dropped).
    pub end: usize,
    /// Offset of the outer IP header from `start` (the link-layer length, kept).
    pub l3_offset: usize,
    /// The packet exceeds `mtu` but may be fragmented (`pmtu_disc` off and no DF): the outer
    /// packet must be fragmented before it is sent.
    pub over_mtu: bool,
}

/// Encapsulates the frame at `buf[start..]` (classified as `layout`) towards a real server,
/// writing the outer headers into the headroom `buf[..start]`.
///
/// - Inner packet: TTL / hop limit decremented, IPv4 header checksum fixed
///   ([`RewriteError::TtlExpired`] at 1 or 0); the frame's Ethernet padding is left behind.
/// - Outer IPv4 header: no options; DSCP copied and ECN copied with CE as ECT(0); TTL = inner
///   TTL; DF copied from an inner IPv4 packet when `pmtu_disc`; ID `ip_id`. Outer IPv6: the
///   same traffic class and hop limit, the flow label per `flow_label`.
/// - A packet longer than `mtu` with the tunnel overhead is [`RewriteError::TooBig`] with the
///   MTU left for inner packets when it must not be fragmented (inner IPv6, or inner DF with
///   `pmtu_disc`), otherwise encapsulated with [`Encapsulated::over_mtu`] set.
/// - An Ethernet frame keeps its link-layer header (VLAN tags too), moved to the new start
///   with the last EtherType set to the outer family and the MACs from `macs`; a bare IP
///   packet stays bare.
///
/// On any error the buffer is unchanged.
///
/// ```
/// use lvs::rewrite::{encap, tunnel_overhead, TunnelKind, TunnelParams};
/// use lvs::wire::{classify, Classified, ClassifyOptions, LinkType};
///
/// // A client's packet to the VIP, after 64 bytes of headroom.
/// let headroom = 64;
/// let mut packet = Vec::new();
/// etherparse::PacketBuilder::ipv4([203, 0, 113, 7], [10, 0, 0, 1], 64)
///     .tcp(40000, 80, 1, 65535)
///     .write(&mut packet, b"GET /")?;
/// let mut buf = vec![0u8; headroom];
/// buf.extend_from_slice(&packet);
/// let Classified::Ip(layout) = classify(&buf[headroom..], LinkType::RawIp, &ClassifyOptions::default())?
/// else { unreachable!() };
///
/// // IPIP from the director (192.168.30.254) to the real server (192.168.30.1).
/// let p = TunnelParams::new(TunnelKind::Ipip, "192.168.30.254".parse()?, "192.168.30.1".parse()?);
/// let out = encap(&mut buf, headroom, &layout, &p)?;
/// assert_eq!(out.start, headroom - tunnel_overhead(TunnelKind::Ipip, false));
/// assert_eq!(out.end - out.start, 20 + packet.len());
/// let outer = etherparse::Ipv4HeaderSlice::from_slice(&buf[out.start..out.end])?;
/// assert_eq!((outer.protocol(), outer.destination()), (etherparse::IpNumber::IPV4, [192, 168, 30, 1]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[inline]
pub fn encap(
    buf: &mut [u8],
    start: usize,
    layout: &Layout,
    p: &TunnelParams,
) -> Result<Encapsulated, RewriteError> {
    // One body per outer family, so that neither carries the other's branches and arrays.
    match (hashed_source(p.src, p.src_hash_bits, p.flow_hash), p.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => encap_n(buf, start, layout, p, s.octets(), d.octets()),
        (IpAddr::V6(s), IpAddr::V6(d)) => encap_n(buf, start, layout, p, s.octets(), d.octets()),
        _ => Err(RewriteError::FamilyMismatch),
    }
}

/// [`encap`] with the outer addresses, `N` = 4 or 16 bytes.
#[inline(always)]
fn encap_n<const N: usize>(
    buf: &mut [u8],
    start: usize,
    layout: &Layout,
    p: &TunnelParams,
    s: [u8; N],
    d: [u8; N],
) -> Result<Encapsulated, RewriteError> {
    let frame = buf.get(start..).ok_or(RewriteError::Truncated {
        offset: start as u32,
        needed: 0,
    })?;
    let h = ip_header(frame, layout)?;
    let v_in = layout.ip_version;
    if p.decrement_ttl {
        check_ttl(h, v_in)?;
    }
    let outer_v6 = N == 16;
    // GUE remote checksum offload of a partial inner checksum: where it starts and where the
    // field is, from the inner IP header (IPVS: skb_checksum_start_offset, csum_offset).
    let remcsum = if p.remcsum_option() {
        Some(remcsum_position(layout)?)
    } else {
        None
    };
    // `dst`'s family is the outer one (`N`).
    let overhead = p.overhead();
    let l2 = layout.l2_len as usize;
    let l3 = layout.l3_offset as usize;
    let inner_len = layout.ip_len as usize;
    let in_buf = inner_len.min(frame.len().saturating_sub(l3));
    let cut = in_buf < inner_len;
    let ip_hdr = if outer_v6 { 40 } else { 20 };
    // What the outer length field holds: IPv4 total length, IPv6 payload length.
    let after_ip = (overhead - ip_hdr) + inner_len;
    let length_field = if outer_v6 { after_ip } else { 20 + after_ip };
    if length_field > 0xffff {
        return Err(RewriteError::TooBig {
            mtu: (inner_len - (length_field - 0xffff)) as u32,
        });
    }
    let inner_df = v_in == 4 && h[6] & 0x40 != 0;
    let mut over_mtu = false;
    if p.mtu != 0 && inner_len + overhead > p.mtu as usize {
        if v_in == 6 || (inner_df && p.pmtu_disc) {
            return Err(RewriteError::TooBig {
                mtu: (p.mtu as usize).saturating_sub(overhead) as u32,
            });
        }
        over_mtu = true;
    }
    let needs_whole = matches!(
        p.kind,
        TunnelKind::Gue {
            checksum: GueChecksum::Full | GueChecksum::RemCsum,
            ..
        } | TunnelKind::Gre { checksum: true }
    );
    if needs_whole && cut {
        return Err(RewriteError::Incomplete);
    }
    if start < overhead {
        return Err(RewriteError::NoHeadroom {
            needed: overhead as u32,
            available: start as u32,
        });
    }

    // Everything is checked: from here on nothing fails.
    let hlen = h.len();
    let abs_l3 = start + l3;
    if p.decrement_ttl {
        apply_ttl(&mut buf[abs_l3..abs_l3 + hlen], v_in);
    }
    let h = &buf[abs_l3..abs_l3 + hlen];
    let (ds, ttl) = if v_in == 4 {
        (h[1], h[8])
    } else {
        ((h[0] << 4) | (h[1] >> 4), h[7])
    };
    // RFC 6040 / IPVS: ECN copied, but CE is not propagated to the outer header.
    let ds = if ds & 3 == 3 { (ds & !3) | 2 } else { ds };
    let new_start = start - overhead;
    if l2 == 14 {
        // The common case without a call to `memmove`: the MACs as two words (the EtherType
        // is written below).
        let a = u64::from_ne_bytes(array(&buf[start..start + 8]));
        let b = u32::from_ne_bytes(array(&buf[start + 8..start + 12]));
        buf[new_start..new_start + 8].copy_from_slice(&a.to_ne_bytes());
        buf[new_start + 8..new_start + 12].copy_from_slice(&b.to_ne_bytes());
    } else if l2 > 0 {
        buf.copy_within(start..start + l2, new_start);
    }
    if l2 > 0 {
        let et = if outer_v6 {
            ETHERTYPE_IPV6
        } else {
            ETHERTYPE_IPV4
        };
        put16(buf, new_start + l2 - 2, et);
        if let Some((d, s)) = p.macs {
            buf[new_start..new_start + 6].copy_from_slice(&d);
            buf[new_start + 6..new_start + 12].copy_from_slice(&s);
        }
    }
    let o = new_start + l2;
    let inner_proto = if v_in == 4 { 4 } else { 41 };
    let proto = match p.kind {
        TunnelKind::Ipip => inner_proto,
        TunnelKind::Gue { .. } => 17,
        TunnelKind::Gre { .. } => 47,
    };
    match (
        <[u8; 4]>::try_from(&s[..]).ok(),
        <[u8; 4]>::try_from(&d[..]).ok(),
    ) {
        (Some(s), Some(d)) => {
            // The header as five big-endian words, summed in registers and stored once: the
            // checksum read back from memory would wait for the byte stores to retire (wide
            // loads of narrow stores are not forwarded), a quarter of the encapsulation.
            let df: u32 = if p.pmtu_disc && inner_df { 0x40 } else { 0 };
            let words = [
                0x4500_0000 | (ds as u32) << 16 | length_field as u32,
                (p.ip_id as u32) << 16 | df << 8,
                (ttl as u32) << 24 | (proto as u32) << 16,
                u32::from_be_bytes(s),
                u32::from_be_bytes(d),
            ];
            let c = !fold(words.iter().map(|&w| w as u64).sum());
            let hdr = &mut buf[o..o + 20];
            for (i, w) in words.into_iter().enumerate() {
                let w = if i == 2 { w | c as u32 } else { w };
                hdr[4 * i..4 * i + 4].copy_from_slice(&w.to_be_bytes());
            }
        }
        _ => {
            let fl = if p.flow_label {
                p.flow_hash & 0x000f_ffff
            } else {
                0
            };
            let hdr = &mut buf[o..o + 40];
            hdr[0] = 0x60 | (ds >> 4);
            hdr[1] = (ds << 4) | (fl >> 16) as u8;
            put16(hdr, 2, fl as u16);
            put16(hdr, 4, length_field as u16);
            hdr[6] = proto;
            hdr[7] = ttl;
            hdr[8..24].copy_from_slice(&s);
            hdr[24..40].copy_from_slice(&d);
        }
    }
    let t = o + ip_hdr;
    let end = start + l3 + in_buf;
    match p.kind {
        TunnelKind::Ipip => {}
        TunnelKind::Gue { port, checksum: c } => {
            let (lo, hi) = if p.gue_src_ports.0 <= p.gue_src_ports.1 {
                p.gue_src_ports
            } else {
                (p.gue_src_ports.1, p.gue_src_ports.0)
            };
            let span = (hi - lo) as u64 + 1;
            let sport = lo + ((p.flow_hash as u64 * span) >> 32) as u16;
            let udp = &mut buf[t..t + 12];
            put16(udp, 0, sport);
            put16(udp, 2, port);
            put16(udp, 4, after_ip as u16);
            put16(udp, 6, 0);
            match remcsum {
                None => udp[8..12].copy_from_slice(&[0, inner_proto, 0, 0]),
                Some((start, field)) => {
                    // hlen 2 (8 bytes of options), the PRIV flag, the private flags word with
                    // REMCSUM, then the checksum's start and field, from the inner packet.
                    udp[8..12].copy_from_slice(&[2, inner_proto, 0x00, 0x01]);
                    let opt = &mut buf[t + 12..t + 20];
                    opt[..4].copy_from_slice(&0x8000_0000u32.to_be_bytes());
                    put16(opt, 4, start);
                    put16(opt, 6, field);
                }
            }
            if c != GueChecksum::None {
                let ph = pseudo_header_at(buf, o, outer_v6, None, 17, after_ip);
                let c = udp_nonzero(!fold(sum(ph, &buf[t..end])));
                put16(buf, t + 6, c);
            }
        }
        TunnelKind::Gre { checksum: c } => {
            let et = if v_in == 4 {
                ETHERTYPE_IPV4
            } else {
                ETHERTYPE_IPV6
            };
            put16(buf, t, if c { 0x8000 } else { 0 });
            put16(buf, t + 2, et);
            if c {
                put16(buf, t + 4, 0);
                put16(buf, t + 6, 0);
                let c = checksum(&buf[t..end]);
                put16(buf, t + 4, c);
            }
        }
    }
    Ok(Encapsulated {
        start: new_start,
        end,
        l3_offset: l2,
        over_mtu,
    })
}

/// Where a partial inner checksum starts and where its field is, relative to the inner IP
/// header: TCP, UDP, ICMP and ICMPv6 have an Internet checksum at a known place; anything else
/// (SCTP's CRC, a later fragment) cannot be completed remotely and is
/// [`RewriteError::Incomplete`]; a field past the inner packet's end is
/// [`RewriteError::BadLength`].
fn remcsum_position(layout: &Layout) -> Result<(u16, u16), RewriteError> {
    let field = match (layout.l4_proto, layout.ip_version) {
        (6, _) => 16,
        (17, _) => 6,
        (1, 4) | (58, 6) => 2,
        _ => return Err(RewriteError::Incomplete),
    };
    if layout.fragment == Fragment::NonFirst {
        return Err(RewriteError::Incomplete);
    }
    let start = layout.l4_offset.saturating_sub(layout.l3_offset);
    // The field must lie in the inner packet, or the receiver refuses the option.
    if start as u32 + field as u32 + 2 > layout.ip_len {
        return Err(RewriteError::BadLength {
            offset: layout.l3_offset as u32,
        });
    }
    Ok((start, start + field))
}

/// A slice of known length as an array.
#[inline(always)]
fn array<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(b);
    a
}

fn hashed_source(src: IpAddr, bits: u8, hash: u32) -> IpAddr {
    if bits == 0 {
        return src;
    }
    let mask = if bits >= 32 {
        u32::MAX
    } else {
        (1u32 << bits) - 1
    };
    match src {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a) & !mask | hash & mask).into()),
        IpAddr::V6(a) => {
            let x = u128::from(a);
            let mask = mask as u128;
            IpAddr::V6((x & !mask | hash as u128 & mask).into())
        }
    }
}

/// The inner packet of a tunnel packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decapsulated {
    /// Offset of the inner IP packet.
    pub start: usize,
    /// End of the inner IP packet (the outer packet's end, or the buffer's if it is cut).
    pub end: usize,
    /// The inner IP version.
    pub ip_version: u8,
    /// The tunnel it came through.
    pub tunnel: Tunnel,
    /// GUE's remote checksum offload (the REMCSUM private option): the inner checksum is
    /// partial, and [`complete_remcsum`] completes it. As offsets in the buffer: where the
    /// checksummed data starts, and the checksum field (both inside `start..end`).
    pub remcsum: Option<(usize, usize)>,
}

/// Finds the inner IP packet of a tunnel packet, for the real-server side: IPIP, IPv6 in IPv6
/// and the mixed families, GUE (version 0 with its optional fields skipped, and version 1,
/// direct IP), and GRE (checksum, key and sequence fields skipped). Classify the inner packet
/// as [`LinkType::RawIp`](crate::wire::LinkType::RawIp) at `start..end`.
///
/// A fragmented outer packet is [`RewriteError::Incomplete`] (reassemble first); a GUE control
/// message, a GRE version other than 0, a GRE routing field, or an inner protocol that is not
/// IP is [`RewriteError::BadTunnel`]. Outer checksums are not verified here.
#[inline]
pub fn decap(buf: &[u8], layout: &Layout) -> Result<Decapsulated, RewriteError> {
    let l4 = layout.l4_offset as usize;
    let bad = |offset: usize| RewriteError::BadTunnel {
        offset: offset as u32,
    };
    let tunnel = layout.tunnel.ok_or(bad(l4))?;
    if !matches!(layout.fragment, Fragment::None | Fragment::Atomic) {
        return Err(RewriteError::Incomplete);
    }
    ip_header(buf, layout)?;
    // The layout is caller data: on a 32-bit target the sum could overflow.
    let end = (layout.l3_offset as usize)
        .saturating_add(layout.ip_len as usize)
        .min(buf.len());
    let mut remcsum = None;
    let (start, version) = match tunnel {
        Tunnel::Ipip => (l4, 4),
        Tunnel::Ipv6 => (l4, 6),
        Tunnel::Gue => {
            let g = l4 + 8;
            let b = get(buf, g, 1)?;
            match b[0] >> 6 {
                // GUE version 1: the UDP payload is the IP packet itself.
                1 => (g, get(buf, g, 1)?[0] >> 4),
                0 => {
                    let h = get(buf, g, 4)?;
                    if h[0] & 0x20 != 0 {
                        return Err(bad(g)); // control message
                    }
                    let v = match h[1] {
                        4 => 4,
                        41 => 6,
                        _ => return Err(bad(g + 1)),
                    };
                    let optlen = (h[0] & 0x1f) as usize * 4;
                    // PRIV alone (the only flag Linux's GUE accepts): the private flags word
                    // first, then the REMCSUM field if its flag is set.
                    if be16(h, 2) == 0x0001 && optlen >= 4 {
                        let pflags = get(buf, g + 4, 4)?;
                        if pflags[0] & 0x80 != 0 {
                            if optlen < 8 {
                                return Err(bad(g + 4));
                            }
                            let o = get(buf, g + 8, 4)?;
                            remcsum = Some((be16(o, 0) as usize, be16(o, 2) as usize));
                        }
                    }
                    (g + 4 + optlen, v)
                }
                _ => return Err(bad(g)),
            }
        }
        Tunnel::Gre => {
            let h = get(buf, l4, 4)?;
            let flags = be16(h, 0);
            if flags & 0x4007 != 0 {
                return Err(bad(l4)); // routing present, or not version 0
            }
            let v = match be16(h, 2) {
                ETHERTYPE_IPV4 => 4,
                ETHERTYPE_IPV6 => 6,
                _ => return Err(bad(l4 + 2)),
            };
            let len = 4 + 4
                * ((flags & 0x8000 != 0) as usize
                    + (flags & 0x2000 != 0) as usize
                    + (flags & 0x1000 != 0) as usize);
            (l4 + len, v)
        }
    };
    let first = get(buf, start, 1).map_err(|_| bad(start))?;
    if start >= end || first[0] >> 4 != version {
        return Err(bad(start));
    }
    // The kernel refuses a REMCSUM option pointing past the packet (gue_remcsum).
    let remcsum = match remcsum {
        None => None,
        Some((from, field)) if from < end - start && field + 2 <= end - start => {
            Some((start + from, start + field))
        }
        Some(_) => return Err(bad(l4 + 16)),
    };
    Ok(Decapsulated {
        start,
        end,
        ip_version: version,
        tunnel,
        remcsum,
    })
}

/// Completes the inner checksum a GUE REMCSUM option marks ([`Decapsulated::remcsum`]), as
/// the receiving kernel does (`remcsum_adjust`): the field, which holds the pseudo-header sum,
/// becomes the complement of the one's-complement sum from the start to the end of the inner
/// packet. Returns whether there was one to complete.
pub fn complete_remcsum(buf: &mut [u8], d: &Decapsulated) -> bool {
    let Some((from, field)) = d.remcsum else {
        return false;
    };
    // `d` is caller data: offsets past the buffer, or at its very end, do nothing.
    let end = d.end.min(buf.len());
    let (Some(data), true) = (buf.get(from..end), field.saturating_add(2) <= end) else {
        return false;
    };
    let c = !fold(sum(0, data));
    put16(buf, field, c);
    true
}

/// Verifies the outer checksums of a tunnel packet, as the receiving kernel would before
/// decapsulating: the outer IPv4 header checksum; for GUE, the UDP checksum over the
/// pseudo-header (a zero checksum means none, also over IPv6, where RFC 6935 allows it for
/// tunnels); for GRE with the C bit, the checksum over the GRE header and payload. IPIP and
/// IPv6-in-IPv6 carry nothing more. Call it before [`decap`] where the NIC has not verified
/// them (a packet a NIC verified need not be checked again).
///
/// A bad checksum is [`RewriteError::BadChecksum`] with the offset of the field; a frame cut
/// short or a fragment is [`RewriteError::Incomplete`] (its checksums cannot be verified).
pub fn verify_outer(buf: &[u8], layout: &Layout) -> Result<(), RewriteError> {
    let l3 = layout.l3_offset as usize;
    let l4 = layout.l4_offset as usize;
    let tunnel = layout
        .tunnel
        .ok_or(RewriteError::BadTunnel { offset: l4 as u32 })?;
    if layout.truncated || !matches!(layout.fragment, Fragment::None | Fragment::Atomic) {
        return Err(RewriteError::Incomplete);
    }
    ip_header(buf, layout)?;
    let end = l3.saturating_add(layout.ip_len as usize);
    if end > buf.len() || end < l4 {
        return Err(RewriteError::Incomplete);
    }
    let v6 = layout.ip_version == 6;
    if !v6 {
        let ihl = (buf[l3] & 0x0f) as usize * 4;
        let h = get(buf, l3, ihl.max(20))?;
        if !verifies(0, h) {
            return Err(RewriteError::BadChecksum {
                offset: (l3 + 10) as u32,
            });
        }
    }
    match tunnel {
        Tunnel::Ipip | Tunnel::Ipv6 => Ok(()),
        Tunnel::Gue => {
            let udp = get(buf, l4, 8)?;
            let csum = be16(udp, 6);
            let len = be16(udp, 4) as usize;
            if len < 8 || l4 + len > end {
                return Err(RewriteError::BadLength { offset: l3 as u32 });
            }
            if csum == 0 {
                return Ok(());
            }
            let ph = pseudo_header_at(
                buf,
                l3,
                v6,
                layout.final_dst_offset.map(usize::from),
                17,
                len,
            );
            if verifies(ph, &buf[l4..l4 + len]) {
                Ok(())
            } else {
                Err(RewriteError::BadChecksum {
                    offset: (l4 + 6) as u32,
                })
            }
        }
        Tunnel::Gre => {
            let h = get(buf, l4, 4)?;
            if be16(h, 0) & 0x8000 == 0 || verifies(0, &buf[l4..end]) {
                Ok(())
            } else {
                Err(RewriteError::BadChecksum {
                    offset: (l4 + 4) as u32,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Protocol;

    #[test]
    fn flow_hash_spreads_gue_ports_and_sources() {
        let mut ports = alloc::collections::BTreeSet::new();
        let mut low = alloc::collections::BTreeSet::new();
        for i in 0..4096u32 {
            let f = FlowKey::new(
                Protocol::Tcp,
                IpAddr::V4((0xc000_0200 + i / 64).into()),
                40000 + (i % 64) as u16,
                IpAddr::V4([198, 51, 100, 1].into()),
                80,
            );
            let h = tunnel_flow_hash(&f);
            assert_eq!(h, tunnel_flow_hash(&f));
            ports.insert(32768 + ((h as u64 * 28232) >> 32));
            low.insert(h & 0xff);
        }
        // 4096 flows over 28232 ports and 256 source suffixes: close to the ideal spread.
        assert!(ports.len() > 3700, "{}", ports.len());
        assert_eq!(low.len(), 256);
    }
}
