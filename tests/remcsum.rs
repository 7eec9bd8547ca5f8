//! GUE remote checksum offload (`--tun-remcsum`), as IPVS sends it (ip_vs_xmit.c,
//! `ipvs_gue_encap` and `ip_vs_tunnel_xmit`): the outer UDP checksum always computed; a packet
//! whose inner checksum is partial also carries the PRIV flag, the private flags word with
//! REMCSUM, and the checksum's start and field relative to the inner packet. The real-server
//! side finds the option (`decap`) and completes the checksum (`complete_remcsum`) as the
//! kernel's `remcsum_adjust` does.

use std::net::IpAddr;

use etherparse::PacketBuilder;
use lvs::rewrite::{
    GUE_REMCSUM_LEN, GueChecksum, RewriteError, TunnelKind, TunnelParams, complete_remcsum, decap,
    encap, tunnel_overhead, verify_outer,
};
use lvs::wire::checksum::{fold, pseudo_header_v4, pseudo_header_v6};
use lvs::wire::{Classified, ClassifyOptions, Layout, LinkType, classify};

const GUE_PORT: u16 = 6080;

fn layout(b: &[u8], opts: &ClassifyOptions) -> Layout {
    match classify(b, LinkType::Ethernet, opts) {
        Ok(Classified::Ip(l)) => l,
        other => panic!("{other:?}"),
    }
}

/// An Ethernet frame with a TCP (IPv4) or UDP (IPv6) segment whose checksum field is left
/// partial, as a transmit offload leaves it: the folded pseudo-header sum, not complemented.
/// Returns the frame with its complete checksum too.
fn partial_frame(v6: bool) -> (Vec<u8>, Vec<u8>) {
    let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let mut f = Vec::new();
    let payload = [0x5au8; 101];
    if v6 {
        let src = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
        let dst = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        eth.ipv6(src, dst, 64)
            .udp(5000, 53)
            .write(&mut f, &payload)
            .unwrap();
    } else {
        eth.ipv4([192, 0, 2, 7], [198, 51, 100, 1], 64)
            .tcp(40000, 80, 1, 1000)
            .write(&mut f, &payload)
            .unwrap();
    }
    let complete = f.clone();
    let l = layout(&f, &ClassifyOptions::default());
    let l4 = l.l4_offset as usize;
    let len = f.len() - l4;
    let (field, ph) = if v6 {
        let s: [u8; 16] = f[22..38].try_into().unwrap();
        let d: [u8; 16] = f[38..54].try_into().unwrap();
        (6, pseudo_header_v6(&s, &d, 17, len as u32))
    } else {
        let s: [u8; 4] = f[26..30].try_into().unwrap();
        let d: [u8; 4] = f[30..34].try_into().unwrap();
        (16, pseudo_header_v4(s, d, 6, len as u16))
    };
    f[l4 + field..l4 + field + 2].copy_from_slice(&fold(ph).to_be_bytes());
    (f, complete)
}

fn remcsum_params(partial: bool) -> TunnelParams {
    let mut p = TunnelParams::new(
        TunnelKind::Gue {
            port: GUE_PORT,
            checksum: GueChecksum::RemCsum,
        },
        "10.0.0.1".parse::<IpAddr>().unwrap(),
        "10.0.0.2".parse::<IpAddr>().unwrap(),
    );
    p.inner_partial = partial;
    p.decrement_ttl = false;
    p
}

/// Encapsulates into exactly the headroom the packet needs; returns the outer frame.
fn encapsulate(frame: &[u8], p: &TunnelParams) -> Vec<u8> {
    let l = layout(frame, &ClassifyOptions::default());
    let room = tunnel_overhead(p.kind, false) + 16;
    let mut buf = vec![0u8; room];
    buf.extend_from_slice(frame);
    let e = encap(&mut buf, room, &l, p).unwrap();
    buf[e.start..e.end].to_vec()
}

#[test]
fn partial_inner_checksums_carry_the_option_and_complete_on_the_real_server() {
    for v6 in [false, true] {
        let (frame, complete) = partial_frame(v6);
        let out = encapsulate(&frame, &remcsum_params(true));
        let opts = ClassifyOptions {
            gue_port: Some(GUE_PORT),
        };
        let lo = layout(&out, &opts);
        let u = lo.l4_offset as usize;
        // UDP length: 8 + GUE 4 + option 8 + the inner IP packet.
        let inner_len = frame.len() - 14;
        assert_eq!(out.len(), 14 + 20 + 8 + 4 + GUE_REMCSUM_LEN + inner_len);
        assert_eq!(
            u16::from_be_bytes([out[u + 4], out[u + 5]]) as usize,
            8 + 4 + 8 + inner_len
        );
        // GUE: version 0, hlen 2, inner protocol, the PRIV flag; private flags REMCSUM; the
        // start (the inner layer-4 header) and the field, from the inner IP header.
        let (proto, start, field) = if v6 { (41, 40, 46) } else { (4, 20, 36) };
        assert_eq!(&out[u + 8..u + 12], &[2, proto, 0x00, 0x01]);
        assert_eq!(&out[u + 12..u + 16], &[0x80, 0, 0, 0]);
        assert_eq!(
            &out[u + 16..u + 20],
            &[0, start, 0, field],
            "v6={v6}: start and field"
        );
        // The outer UDP checksum is there and verifies, over the still-partial inner packet.
        assert_ne!(&out[u + 6..u + 8], &[0, 0]);
        assert_eq!(verify_outer(&out, &lo), Ok(()));
        // The inner packet is carried as it was; the real server finds the option and
        // completes the checksum to what a full computation gives.
        let d = decap(&out, &lo).unwrap();
        assert_eq!(&out[d.start..d.end], &frame[14..]);
        assert_eq!(
            d.remcsum,
            Some((d.start + start as usize, d.start + field as usize))
        );
        let mut rx = out.clone();
        assert!(complete_remcsum(&mut rx, &d));
        assert_eq!(&rx[d.start..d.end], &complete[14..], "v6={v6}");
    }
}

#[test]
fn complete_inner_checksums_get_an_outer_checksum_and_no_option() {
    let (_, complete) = partial_frame(false);
    let out = encapsulate(&complete, &remcsum_params(false));
    let opts = ClassifyOptions {
        gue_port: Some(GUE_PORT),
    };
    let lo = layout(&out, &opts);
    let u = lo.l4_offset as usize;
    assert_eq!(out.len(), 14 + 20 + 8 + 4 + complete.len() - 14);
    assert_eq!(&out[u + 8..u + 12], &[0, 4, 0, 0]);
    assert_ne!(&out[u + 6..u + 8], &[0, 0]);
    assert_eq!(verify_outer(&out, &lo), Ok(()));
    let d = decap(&out, &lo).unwrap();
    assert_eq!(d.remcsum, None);
    let mut rx = out.clone();
    assert!(!complete_remcsum(&mut rx, &d));
    assert_eq!(rx, out);
    // Plain GUE over the same packet: no checksum (IPVS's default).
    let mut plain = remcsum_params(false);
    plain.kind = TunnelKind::Gue {
        port: GUE_PORT,
        checksum: GueChecksum::None,
    };
    let out = encapsulate(&complete, &plain);
    assert_eq!(&out[u + 6..u + 8], &[0, 0]);
}

#[test]
fn what_cannot_be_completed_remotely_is_refused() {
    // SCTP's checksum is a CRC: there is no partial Internet checksum to point at.
    let mut f = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([192, 0, 2, 7], [198, 51, 100, 1], 64)
        .write(&mut f, etherparse::IpNumber::SCTP, &[0u8; 16])
        .unwrap();
    let l = layout(&f, &ClassifyOptions::default());
    let room = 64;
    let mut buf = vec![0u8; room];
    buf.extend_from_slice(&f);
    let before = buf.clone();
    assert_eq!(
        encap(&mut buf, room, &l, &remcsum_params(true)),
        Err(RewriteError::Incomplete)
    );
    assert_eq!(buf, before);
    // Headroom for the base header but not the option.
    let (frame, _) = partial_frame(false);
    let l = layout(&frame, &ClassifyOptions::default());
    let room = tunnel_overhead(remcsum_params(true).kind, false);
    // What `TunnelParams::overhead` says each needs.
    assert_eq!(remcsum_params(false).overhead(), room);
    assert_eq!(remcsum_params(true).overhead(), room + GUE_REMCSUM_LEN);
    let mut buf = vec![0u8; room];
    buf.extend_from_slice(&frame);
    assert_eq!(
        encap(&mut buf, room, &l, &remcsum_params(true)),
        Err(RewriteError::NoHeadroom {
            needed: (room + GUE_REMCSUM_LEN) as u32,
            available: room as u32
        })
    );
}

#[test]
fn an_option_pointing_past_the_packet_is_refused() {
    let (frame, _) = partial_frame(false);
    let mut out = encapsulate(&frame, &remcsum_params(true));
    let opts = ClassifyOptions {
        gue_port: Some(GUE_PORT),
    };
    let lo = layout(&out, &opts);
    let u = lo.l4_offset as usize;
    out[u + 18..u + 20].copy_from_slice(&0xfff0u16.to_be_bytes());
    assert!(matches!(
        decap(&out, &lo),
        Err(RewriteError::BadTunnel { .. })
    ));
    // The private flags without REMCSUM: no option to act on.
    let mut out2 = encapsulate(&frame, &remcsum_params(true));
    out2[u + 12] = 0;
    let mut d = decap(&out2, &lo).unwrap();
    assert_eq!(d.remcsum, None);
    // Offsets from a caller past the buffer: nothing done, no panic.
    for bad in [
        (0, usize::MAX),
        (usize::MAX, 0),
        (out2.len(), out2.len() - 1),
    ] {
        d.remcsum = Some(bad);
        let mut rx = out2.clone();
        assert!(!complete_remcsum(&mut rx, &d), "{bad:?}");
        assert_eq!(rx, out2);
    }
}
