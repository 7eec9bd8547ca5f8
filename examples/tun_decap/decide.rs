//! The pure part of the decapsulator: one received frame, the real server's addresses and the
//! GUE port in, what to do with the frame out. No I/O, so every case is a unit test.
//!
//! A frame is decapsulated when it is a tunnel packet the crate recognises (IPIP, IPv6 or IPv4
//! in IPv6, GRE, GUE on the given port) and its outer destination is one of the real server's
//! addresses: what an IPVS director in TUN mode sends it (ipvs.md §7.4). Outer checksums (the
//! outer IPv4 header's, GRE's, GUE's UDP checksum) are verified with
//! [`verify_outer`](lvs::rewrite::verify_outer), as the kernel's tunnel drivers verify them,
//! unless the kernel says the frame's checksums are partial (sent by a local stack over a veth
//! pair: checksum offload) or were verified by the NIC; the inner packet's own checksums are
//! the kernel's to verify once it comes out of the TUN device.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lvs::rewrite::{Decapsulated, RewriteError, complete_remcsum, decap, verify_outer};
use lvs::wire::{Classified, ClassifyOptions, Layout, LinkType, ParseError, Tunnel, classify};

/// What to do with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Write `frame[start..end]`, the inner IP packet, to the TUN device.
    Inner(usize, usize, Tunnel),
    /// Not for the decapsulator; the kernel handles it as usual.
    Ignore(Ignored),
    /// A frame the crate could not parse, or a tunnel packet it cannot open.
    Malformed(Malformed),
}

/// Why a frame is left alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ignored {
    /// Not IPv4 or IPv6 (ARP, LLDP, ...).
    NonIp,
    /// IP, but no tunnel (nor GUE on the configured port).
    NoTunnel,
    /// A tunnel packet whose outer destination is not one of ours.
    OtherDestination,
}

/// Why a frame could not be decapsulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// [`classify`] refused the frame.
    Classify(ParseError),
    /// The outer IP length runs past the end of the frame: the inner packet is incomplete.
    Cut,
    /// [`decap`] refused the tunnel packet (an outer fragment, a GUE control message, a GRE
    /// packet carrying something other than IP, ...).
    Decap(RewriteError),
    /// The frame did not fit the receive buffer (set by the I/O loop, never by [`decide`]).
    Oversized,
}

impl Malformed {
    /// The counter this error goes to: the error's variant, so that the statistics stay a
    /// short list whatever offsets the errors carry.
    pub fn counter(&self) -> String {
        match self {
            Malformed::Classify(e) => format!("classify {}", variant(&e.kind)),
            Malformed::Cut => "frame cut short".to_string(),
            Malformed::Decap(e) => format!("decap {}", variant(e)),
            Malformed::Oversized => "frame larger than the buffer".to_string(),
        }
    }
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::Classify(e) => write!(f, "classify: {e}"),
            Malformed::Cut => f.write_str("the outer IP length runs past the frame"),
            Malformed::Decap(e) => write!(f, "decap: {e}"),
            Malformed::Oversized => f.write_str("frame larger than the receive buffer"),
        }
    }
}

/// A variant's name from its `Debug` form (`BadTunnel { offset: 38 }` → `BadTunnel`). The
/// error enums are `#[non_exhaustive]`: this names variants added later too.
fn variant(e: &dyn fmt::Debug) -> String {
    let s = format!("{e:?}");
    let end = s.find([' ', '(', '{']).unwrap_or(s.len());
    s[..end].to_string()
}

/// Decides what to do with `frame`, an Ethernet frame received on the real server's
/// interface: `local` are the addresses tunnel packets may be sent to, `gue_port` the UDP
/// port GUE arrives on (`None`: no GUE); `verify` whether to verify the outer checksums (see
/// the module documentation).
#[cfg(test)]
pub fn decide(frame: &[u8], local: &[IpAddr], gue_port: Option<u16>, verify: bool) -> Decision {
    match open(frame, local, gue_port, verify) {
        Ok(d) => Decision::Inner(d.start, d.end, d.tunnel),
        Err(other) => other,
    }
}

/// [`decide`], then what the kernel's GUE receive does with a REMCSUM option (an inner
/// checksum the sender's offload left partial, `ipvsadm --tun-remcsum`): completes the inner
/// checksum in `frame`, after the outer checksum that covers it was verified. The receive
/// loop's form.
pub fn decide_and_complete(
    frame: &mut [u8],
    local: &[IpAddr],
    gue_port: Option<u16>,
    verify: bool,
) -> Decision {
    match open(frame, local, gue_port, verify) {
        Ok(d) => {
            complete_remcsum(frame, &d);
            Decision::Inner(d.start, d.end, d.tunnel)
        }
        Err(other) => other,
    }
}

fn open(
    frame: &[u8],
    local: &[IpAddr],
    gue_port: Option<u16>,
    verify: bool,
) -> Result<Decapsulated, Decision> {
    let opts = ClassifyOptions { gue_port };
    let layout = match classify(frame, LinkType::Ethernet, &opts) {
        Ok(Classified::Ip(layout)) => layout,
        Ok(Classified::NotIp { .. }) => return Err(Decision::Ignore(Ignored::NonIp)),
        Err(e) => return Err(Decision::Malformed(Malformed::Classify(e))),
    };
    if layout.tunnel.is_none() {
        return Err(Decision::Ignore(Ignored::NoTunnel));
    }
    match outer_destination(frame, &layout) {
        Some(dst) if local.contains(&dst) => {}
        _ => return Err(Decision::Ignore(Ignored::OtherDestination)),
    }
    if layout.truncated {
        // `decap` would hand back what there is of the inner packet; the kernel would drop
        // it for its length, so count it here.
        return Err(Decision::Malformed(Malformed::Cut));
    }
    if verify && let Err(e) = verify_outer(frame, &layout) {
        return Err(Decision::Malformed(Malformed::Decap(e)));
    }
    decap(frame, &layout).map_err(|e| Decision::Malformed(Malformed::Decap(e)))
}

/// The destination in the outer IP header (the layout's `flow` is `None` for IPIP and GRE,
/// which LVS does not balance, so it is read from the header).
fn outer_destination(frame: &[u8], layout: &Layout) -> Option<IpAddr> {
    let l3 = layout.l3_offset as usize;
    if layout.ip_version == 4 {
        let a: [u8; 4] = frame.get(l3 + 16..l3 + 20)?.try_into().ok()?;
        Some(IpAddr::V4(Ipv4Addr::from(a)))
    } else {
        let a: [u8; 16] = frame.get(l3 + 24..l3 + 40)?.try_into().ok()?;
        Some(IpAddr::V6(Ipv6Addr::from(a)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;
    use lvs::rewrite::{GueChecksum, TunnelKind, TunnelParams, encap};
    use lvs::wire::ParseErrorKind;

    const GUE: u16 = 6080;
    const HEADROOM: usize = 128;
    const DIRECTOR4: [u8; 4] = [192, 0, 2, 1];
    const SERVER4: [u8; 4] = [192, 0, 2, 10];
    const DIRECTOR6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const SERVER6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10];
    const CLIENT4: [u8; 4] = [198, 51, 100, 7];
    const VIP4: [u8; 4] = [203, 0, 113, 80];
    const CLIENT6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0xc, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
    const VIP6: [u8; 16] = [
        0x20, 0x01, 0x0d, 0xb8, 0xf, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80,
    ];

    fn local() -> Vec<IpAddr> {
        vec![IpAddr::from(SERVER4), IpAddr::from(SERVER6)]
    }

    /// A client's TCP SYN to the VIP, as a bare IPv4 packet.
    fn inner_v4() -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ipv4(CLIENT4, VIP4, 63)
            .tcp(40000, 80, 1, 64240)
            .syn()
            .write(&mut v, &[])
            .unwrap();
        v
    }

    /// A client's UDP datagram to the VIP, as a bare IPv6 packet.
    fn inner_v6() -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ipv6(CLIENT6, VIP6, 63)
            .udp(40000, 53)
            .write(&mut v, b"a DNS query, say")
            .unwrap();
        v
    }

    /// The frame a director sends: `inner` in an Ethernet frame, encapsulated by the crate
    /// towards `dst`. The inner TTL is kept, so the inner packet must come out unchanged.
    fn tunnelled(inner: &[u8], kind: TunnelKind, src: IpAddr, dst: IpAddr) -> Vec<u8> {
        let ethertype: u16 = if inner[0] >> 4 == 4 { 0x0800 } else { 0x86dd };
        let mut buf = vec![0u8; HEADROOM];
        buf.extend_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
        buf.extend_from_slice(&ethertype.to_be_bytes());
        buf.extend_from_slice(inner);
        let layout = match classify(
            &buf[HEADROOM..],
            LinkType::Ethernet,
            &ClassifyOptions::default(),
        ) {
            Ok(Classified::Ip(l)) => l,
            other => panic!("inner packet: {other:?}"),
        };
        let mut p = TunnelParams::new(kind, src, dst);
        p.decrement_ttl = false;
        let e = encap(&mut buf, HEADROOM, &layout, &p).unwrap();
        buf[e.start..e.end].to_vec()
    }

    fn assert_inner(frame: &[u8], inner: &[u8], tunnel: Tunnel) {
        match decide(frame, &local(), Some(GUE), true) {
            Decision::Inner(start, end, t) => {
                assert_eq!(t, tunnel);
                assert_eq!(&frame[start..end], inner);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ipip() {
        let inner = inner_v4();
        let f = tunnelled(&inner, TunnelKind::Ipip, DIRECTOR4.into(), SERVER4.into());
        assert_inner(&f, &inner, Tunnel::Ipip);
    }

    #[test]
    fn ipv6_in_ipv6() {
        let inner = inner_v6();
        let f = tunnelled(&inner, TunnelKind::Ipip, DIRECTOR6.into(), SERVER6.into());
        assert_inner(&f, &inner, Tunnel::Ipv6);
    }

    #[test]
    fn ipv4_in_ipv6() {
        let inner = inner_v4();
        let f = tunnelled(&inner, TunnelKind::Ipip, DIRECTOR6.into(), SERVER6.into());
        assert_inner(&f, &inner, Tunnel::Ipip);
    }

    #[test]
    fn ipv6_in_ipv4() {
        let inner = inner_v6();
        let f = tunnelled(&inner, TunnelKind::Ipip, DIRECTOR4.into(), SERVER4.into());
        assert_inner(&f, &inner, Tunnel::Ipv6);
    }

    #[test]
    fn gue_with_and_without_checksum() {
        for checksum in [GueChecksum::None, GueChecksum::Full] {
            let kind = TunnelKind::Gue {
                port: GUE,
                checksum,
            };
            for (inner, src, dst) in [
                (inner_v4(), IpAddr::from(DIRECTOR4), IpAddr::from(SERVER4)),
                (inner_v6(), DIRECTOR6.into(), SERVER6.into()),
                (inner_v4(), DIRECTOR6.into(), SERVER6.into()),
            ] {
                let f = tunnelled(&inner, kind, src, dst);
                assert_inner(&f, &inner, Tunnel::Gue);
            }
        }
    }

    /// `--tun-remcsum` with an inner checksum a sender's offload left partial: the inner
    /// packet comes out with its checksum completed, as the kernel's GUE receive does it.
    #[test]
    fn gue_remote_checksum_offload_is_completed() {
        use lvs::wire::checksum::{fold, pseudo_header_v4, pseudo_header_v6};
        for (inner, src, dst) in [
            (inner_v4(), IpAddr::from(DIRECTOR4), IpAddr::from(SERVER4)),
            (inner_v6(), DIRECTOR6.into(), SERVER6.into()),
        ] {
            // The inner packet as an offload leaves it: the pseudo-header sum in the field.
            let mut partial = inner.clone();
            let (field, ph) = if inner[0] >> 4 == 4 {
                let (s, d) = (CLIENT4, VIP4);
                (
                    20 + 16,
                    pseudo_header_v4(s, d, 6, (inner.len() - 20) as u16),
                )
            } else {
                (
                    40 + 6,
                    pseudo_header_v6(&CLIENT6, &VIP6, 17, (inner.len() - 40) as u32),
                )
            };
            partial[field..field + 2].copy_from_slice(&fold(ph).to_be_bytes());
            let ethertype: u16 = if inner[0] >> 4 == 4 { 0x0800 } else { 0x86dd };
            let mut buf = vec![0u8; HEADROOM];
            buf.extend_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
            buf.extend_from_slice(&ethertype.to_be_bytes());
            buf.extend_from_slice(&partial);
            let Ok(Classified::Ip(layout)) = classify(
                &buf[HEADROOM..],
                LinkType::Ethernet,
                &ClassifyOptions::default(),
            ) else {
                panic!("inner packet");
            };
            let kind = TunnelKind::Gue {
                port: GUE,
                checksum: GueChecksum::RemCsum,
            };
            let mut p = TunnelParams::new(kind, src, dst);
            p.decrement_ttl = false;
            p.inner_partial = true;
            let e = encap(&mut buf, HEADROOM, &layout, &p).unwrap();
            let mut f = buf[e.start..e.end].to_vec();
            // Undecided, the inner packet is still partial; completed, it is the original.
            assert_inner(&f, &partial, Tunnel::Gue);
            match decide_and_complete(&mut f, &local(), Some(GUE), true) {
                Decision::Inner(start, end, Tunnel::Gue) => assert_eq!(&f[start..end], &inner),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn gue_version_1_is_the_bare_inner_packet() {
        let inner = inner_v4();
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(DIRECTOR4, SERVER4, 64)
            .udp(33000, GUE)
            .write(&mut f, &inner)
            .unwrap();
        assert_inner(&f, &inner, Tunnel::Gue);
    }

    #[test]
    fn gre_with_and_without_checksum() {
        for checksum in [false, true] {
            let kind = TunnelKind::Gre { checksum };
            let inner = inner_v4();
            let f = tunnelled(&inner, kind, DIRECTOR4.into(), SERVER4.into());
            assert_inner(&f, &inner, Tunnel::Gre);
            let inner = inner_v6();
            let f = tunnelled(&inner, kind, DIRECTOR6.into(), SERVER6.into());
            assert_inner(&f, &inner, Tunnel::Gre);
        }
    }

    #[test]
    fn outer_checksums_are_verified_unless_the_kernel_says_not_to() {
        let inner = inner_v4();
        let gre = TunnelKind::Gre { checksum: true };
        let mut f = tunnelled(&inner, gre, DIRECTOR4.into(), SERVER4.into());
        let last = f.len() - 1;
        f[last] ^= 0xff; // a payload byte the GRE checksum covers
        let local = [IpAddr::from(SERVER4)];
        assert!(matches!(
            decide(&f, &local, Some(GUE), true),
            Decision::Malformed(Malformed::Decap(RewriteError::BadChecksum { .. }))
        ));
        // Partial or NIC-verified checksums (PACKET_AUXDATA) are not checked here.
        assert!(matches!(
            decide(&f, &local, Some(GUE), false),
            Decision::Inner(_, _, Tunnel::Gre)
        ));
        // The outer IPv4 header checksum, for IPIP.
        let mut f = tunnelled(&inner, TunnelKind::Ipip, DIRECTOR4.into(), SERVER4.into());
        f[14 + 8] ^= 1; // outer TTL
        assert!(matches!(
            decide(&f, &local, Some(GUE), true),
            Decision::Malformed(Malformed::Decap(RewriteError::BadChecksum { offset: 24 }))
        ));
    }

    #[test]
    fn ethernet_padding_stays_behind() {
        // A bare 20-byte IPv4 header inside IPIP: 54 bytes, padded to Ethernet's 60.
        let mut inner = Vec::new();
        PacketBuilder::ipv4(CLIENT4, VIP4, 63)
            .write(&mut inner, 253.into(), &[])
            .unwrap();
        let mut f = tunnelled(&inner, TunnelKind::Ipip, DIRECTOR4.into(), SERVER4.into());
        assert_eq!(f.len(), 54);
        f.resize(60, 0);
        assert_inner(&f, &inner, Tunnel::Ipip);
    }

    #[test]
    fn another_outer_destination_is_not_ours() {
        let inner = inner_v4();
        for kind in [
            TunnelKind::Ipip,
            TunnelKind::Gre { checksum: false },
            TunnelKind::Gue {
                port: GUE,
                checksum: GueChecksum::None,
            },
        ] {
            let f = tunnelled(&inner, kind, DIRECTOR4.into(), [192, 0, 2, 99].into());
            assert_eq!(
                decide(&f, &local(), Some(GUE), true),
                Decision::Ignore(Ignored::OtherDestination)
            );
        }
        // No addresses at all (an interface without any): nothing is ours.
        let f = tunnelled(&inner, TunnelKind::Ipip, DIRECTOR4.into(), SERVER4.into());
        assert_eq!(
            decide(&f, &[], Some(GUE), true),
            Decision::Ignore(Ignored::OtherDestination)
        );
    }

    #[test]
    fn plain_tcp_is_not_a_tunnel() {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(CLIENT4, SERVER4, 64)
            .tcp(40000, 80, 1, 64240)
            .syn()
            .write(&mut f, &[])
            .unwrap();
        assert_eq!(
            decide(&f, &local(), Some(GUE), true),
            Decision::Ignore(Ignored::NoTunnel)
        );
    }

    #[test]
    fn gue_on_another_port_is_not_a_tunnel() {
        let kind = TunnelKind::Gue {
            port: 6081,
            checksum: GueChecksum::None,
        };
        let f = tunnelled(&inner_v4(), kind, DIRECTOR4.into(), SERVER4.into());
        assert_eq!(
            decide(&f, &local(), Some(GUE), true),
            Decision::Ignore(Ignored::NoTunnel)
        );
        // Without a GUE port, GUE is plain UDP.
        let kind = TunnelKind::Gue {
            port: GUE,
            checksum: GueChecksum::None,
        };
        let f = tunnelled(&inner_v4(), kind, DIRECTOR4.into(), SERVER4.into());
        assert_eq!(
            decide(&f, &local(), None, true),
            Decision::Ignore(Ignored::NoTunnel)
        );
    }

    #[test]
    fn arp_is_not_ip() {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
        f.resize(60, 0);
        assert_eq!(
            decide(&f, &local(), Some(GUE), true),
            Decision::Ignore(Ignored::NonIp)
        );
    }

    #[test]
    fn truncated_frames_are_malformed() {
        let inner = inner_v4();
        let f = tunnelled(&inner, TunnelKind::Ipip, DIRECTOR4.into(), SERVER4.into());
        // Cut inside the outer header: classify stops there.
        match decide(&f[..14 + 10], &local(), Some(GUE), true) {
            Decision::Malformed(m @ Malformed::Classify(e)) => {
                assert_eq!(e.offset, 14);
                assert!(matches!(e.kind, ParseErrorKind::Truncated { .. }));
                assert_eq!(m.counter(), "classify Truncated");
            }
            other => panic!("{other:?}"),
        }
        // Cut inside the inner packet: the outer header promises more.
        let cut = &f[..f.len() - 4];
        assert_eq!(
            decide(cut, &local(), Some(GUE), true),
            Decision::Malformed(Malformed::Cut)
        );
        // Cut before the GUE header.
        let kind = TunnelKind::Gue {
            port: GUE,
            checksum: GueChecksum::None,
        };
        let f = tunnelled(&inner, kind, DIRECTOR4.into(), SERVER4.into());
        assert!(matches!(
            decide(&f[..14 + 20 + 4], &local(), Some(GUE), true),
            Decision::Malformed(Malformed::Classify(_))
        ));
    }

    #[test]
    fn tunnels_decap_refuses_are_malformed() {
        // GRE carrying Ethernet (transparent bridging, 0x6558): not an IP packet.
        let mut f = tunnelled(
            &inner_v4(),
            TunnelKind::Gre { checksum: false },
            DIRECTOR4.into(),
            SERVER4.into(),
        );
        f[14 + 20 + 2..14 + 20 + 4].copy_from_slice(&0x6558u16.to_be_bytes());
        let d = decide(&f, &local(), Some(GUE), true);
        assert_eq!(
            d,
            Decision::Malformed(Malformed::Decap(RewriteError::BadTunnel { offset: 36 }))
        );
        let Decision::Malformed(m) = d else {
            unreachable!()
        };
        assert_eq!(m.counter(), "decap BadTunnel");
        assert_eq!(
            m.to_string(),
            "decap: not a usable tunnel header at offset 36"
        );

        // An outer fragment: reassembly is the kernel's job, and it has no ipip module.
        let mut f = tunnelled(
            &inner_v4(),
            TunnelKind::Ipip,
            DIRECTOR4.into(),
            SERVER4.into(),
        );
        f[14 + 6] |= 0x20;
        assert_eq!(
            decide(&f, &local(), Some(GUE), true),
            Decision::Malformed(Malformed::Decap(RewriteError::Incomplete))
        );

        // A GUE control message (C bit).
        let kind = TunnelKind::Gue {
            port: GUE,
            checksum: GueChecksum::None,
        };
        let mut f = tunnelled(&inner_v4(), kind, DIRECTOR4.into(), SERVER4.into());
        f[14 + 20 + 8] |= 0x20;
        assert!(matches!(
            decide(&f, &local(), Some(GUE), true),
            Decision::Malformed(Malformed::Decap(RewriteError::BadTunnel { .. }))
        ));
    }

    #[test]
    fn every_byte_cut_and_flipped_never_panics() {
        let inner = inner_v6();
        let kinds = [
            TunnelKind::Ipip,
            TunnelKind::Gre { checksum: true },
            TunnelKind::Gue {
                port: GUE,
                checksum: GueChecksum::Full,
            },
        ];
        for kind in kinds {
            let f = tunnelled(&inner, kind, DIRECTOR6.into(), SERVER6.into());
            for cut in 0..f.len() {
                let d = decide(&f[..cut], &local(), Some(GUE), true);
                assert!(matches!(d, Decision::Malformed(_)), "cut at {cut}: {d:?}");
            }
            for at in 0..f.len() {
                let mut g = f.clone();
                g[at] ^= 0xff;
                if let Decision::Inner(start, end, _) = decide(&g, &local(), Some(GUE), true) {
                    assert!(start < end && end <= g.len());
                }
            }
        }
    }
}
