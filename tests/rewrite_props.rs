//! Rewrites against the independent oracle (etherparse re-parses and recomputes every checksum
//! from scratch) on random valid packets: TCP, UDP (with and without checksum), SCTP and ICMP
//! errors; with and without VLAN tags, IPv4 options and IPv6 extension headers; random payloads.

mod common {
    pub mod oracle;
    pub mod packets;
}

use std::net::IpAddr;

use common::oracle::check_frame;
use common::packets::{L4, Spec, build, ip, spec, spec_with};
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use lvs::rewrite::{
    ChecksumMode, DrParams, GueChecksum, IcmpReply, NatOptions, RewriteError, TunnelKind,
    TunnelParams, clamp_mss, decap, dr, encap, icmp_error_info, nat_icmp_in, nat_icmp_out, nat_in,
    nat_out, verify_outer, write_icmp_error,
};
use lvs::wire::checksum::{fold, sum};
use lvs::wire::{Classified, ClassifyOptions, Fragment, Layout, LinkType, Tunnel, classify};
use proptest::prelude::*;

const GUE: u16 = 6080;

fn link(s: &Spec) -> LinkType {
    if s.ethernet {
        LinkType::Ethernet
    } else {
        LinkType::RawIp
    }
}

fn layout_of(frame: &[u8], link: LinkType) -> Layout {
    match classify(
        frame,
        link,
        &ClassifyOptions {
            gue_port: Some(GUE),
        },
    ) {
        Ok(Classified::Ip(l)) => l,
        other => panic!("{other:?}"),
    }
}

fn good(frame: &[u8], ethernet: bool) -> bool {
    check_frame(frame, ethernet, Some(GUE)).is_some_and(|c| c.all_good() && c.checked > 0)
}

fn rs_addr(v6: bool, seed: u8) -> IpAddr {
    let mut a = [0u8; 16];
    a[0] = if v6 { 0xfd } else { 172 };
    a[1] = 16;
    a[15] = seed;
    a[3] = seed;
    ip(v6, &a)
}

fn ttl_of(frame: &[u8], l: &Layout) -> u8 {
    let l3 = l.l3_offset as usize;
    if l.ip_version == 4 {
        frame[l3 + 8]
    } else {
        frame[l3 + 7]
    }
}

fn not_icmp() -> BoxedStrategy<L4> {
    common::packets::l4_strategy()
        .prop_filter("not ICMP", |l| !matches!(l, L4::IcmpError { .. }))
        .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn generated_packets_are_valid(s in spec()) {
        let f = build(&s);
        prop_assert!(good(&f, s.ethernet), "{:?}", check_frame(&f, s.ethernet, Some(GUE)));
    }

    #[test]
    fn nat_in_sets_destination_and_keeps_checksums(s in spec_with(not_icmp()), port in 1u16.., seed in any::<u8>()) {
        let orig = build(&s);
        let mut f = orig.clone();
        let l = layout_of(&f, link(&s));
        let rs = rs_addr(s.v6, seed);
        nat_in(&mut f, &l, rs, port, &NatOptions::default()).unwrap();
        prop_assert!(good(&f, s.ethernet), "{:?}", check_frame(&f, s.ethernet, Some(GUE)));
        let l2 = layout_of(&f, link(&s));
        let flow = l2.flow.unwrap();
        prop_assert_eq!((flow.src, flow.sport, flow.dst, flow.dport), (s.src_ip(), s.sport, rs, port));
        prop_assert_eq!(ttl_of(&f, &l2), s.ttl - 1);
        prop_assert_eq!(f.len(), orig.len());
        // Back to the VIP without the TTL step: every byte as it was, except a UDP checksum of
        // 0, which NAT made real.
        let mut back = f.clone();
        nat_in(&mut back, &l2, s.dst_ip(), s.dport, &NatOptions { decrement_ttl: false, ..Default::default() }).unwrap();
        let l3 = l.l3_offset as usize;
        let ttl_at = l3 + if s.v6 { 7 } else { 8 };
        back[ttl_at] += 1;
        if !s.v6 {
            // The TTL word changed back: restore the header checksum by recomputation.
            let hl = (back[l3] & 0xf) as usize * 4;
            back[l3 + 10..l3 + 12].fill(0);
            let c = !fold(sum(0, &back[l3..l3 + hl]));
            back[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        }
        if !matches!(s.l4, L4::Udp { zero_checksum: true }) || s.v6 {
            prop_assert_eq!(back, orig);
        }
    }

    #[test]
    fn nat_in_then_nat_out_of_the_reply_restores_the_clients_view(s in spec_with(not_icmp()), port in 1u16.., seed in any::<u8>()) {
        let mut f = build(&s);
        let l = layout_of(&f, link(&s));
        let rs = rs_addr(s.v6, seed);
        nat_in(&mut f, &l, rs, port, &NatOptions::default()).unwrap();
        // The real server answers: its packet goes from rs:port to the client.
        let mut rs_bytes = [0u8; 16];
        match rs { IpAddr::V4(a) => rs_bytes[..4].copy_from_slice(&a.octets()), IpAddr::V6(a) => rs_bytes = a.octets() }
        let reply = Spec { src: rs_bytes, dst: s.src, sport: port, dport: s.sport, ..s.clone() };
        let mut r = build(&reply);
        let lr = layout_of(&r, link(&s));
        nat_out(&mut r, &lr, s.dst_ip(), s.dport, &NatOptions::default()).unwrap();
        prop_assert!(good(&r, s.ethernet));
        let fr = layout_of(&r, link(&s)).flow.unwrap();
        let fo = layout_of(&build(&s), link(&s)).flow.unwrap();
        prop_assert_eq!(fr, fo.reversed());
    }

    #[test]
    fn nat_on_a_snaplen_cut_frame_equals_the_prefix_of_the_whole_rewrite(
        s in spec_with(not_icmp()), port in 1u16.., cut in 0usize..400,
    ) {
        let mut whole = build(&s);
        let l = layout_of(&whole, link(&s));
        let keep = (l.l4_offset as usize + 20).max(whole.len().saturating_sub(cut)).min(whole.len());
        let mut part = whole[..keep].to_vec();
        let rs = rs_addr(s.v6, 9);
        nat_in(&mut whole, &l, rs, port, &NatOptions::default()).unwrap();
        // The headers are whole, so the cut frame classifies.
        let lp = layout_of(&part, link(&s));
        nat_in(&mut part, &lp, rs, port, &NatOptions::default()).unwrap();
        if matches!(s.l4, L4::Udp { zero_checksum: true }) && !s.v6 && lp.truncated {
            // A UDP checksum of 0 cannot be computed on a cut frame: there it stays 0, and
            // every other byte is the whole frame's rewrite.
            let c = lp.l4_offset as usize + 6;
            prop_assert_eq!(&part[c..c + 2], &[0, 0]);
            let mut w = whole[..part.len()].to_vec();
            w[c..c + 2].fill(0);
            prop_assert_eq!(&part[..], &w[..]);
        } else {
            prop_assert_eq!(&part[..], &whole[..part.len()]);
        }
    }

    #[test]
    fn partial_checksums_get_only_the_pseudo_header_change(s in spec_with(not_icmp()), port in 1u16..) {
        // Turn the layer-4 checksum into what a transmit offload leaves: the pseudo-header sum.
        let (csum_at, proto) = match s.l4 {
            L4::Tcp { .. } => (16, 6u8),
            L4::Udp { .. } => (6, 17),
            _ => return Ok(()),
        };
        let mut f = build(&s);
        let l = layout_of(&f, link(&s));
        let l4 = l.l4_offset as usize;
        let len = f.len() - l4;
        let pseudo = |f: &[u8]| -> u16 {
            let l3 = l.l3_offset as usize;
            let (a, b) = if s.v6 { (&f[l3 + 8..l3 + 24], &f[l3 + 24..l3 + 40]) } else { (&f[l3 + 12..l3 + 16], &f[l3 + 16..l3 + 20]) };
            fold(sum(sum(0, a), b) + proto as u64 + len as u64)
        };
        let p = pseudo(&f);
        f[l4 + csum_at..l4 + csum_at + 2].copy_from_slice(&p.to_be_bytes());
        nat_in(&mut f, &l, rs_addr(s.v6, 3), port, &NatOptions { checksum: ChecksumMode::Partial, ..Default::default() }).unwrap();
        let p2 = u16::from_be_bytes([f[l4 + csum_at], f[l4 + csum_at + 1]]);
        prop_assert_eq!(fold(p2 as u64), fold(pseudo(&f) as u64));
        // What the NIC then does: sum the segment from the checksum start and store the complement.
        let c = !fold(sum(0, &f[l4..]));
        let c = if proto == 17 && c == 0 { 0xffff } else { c };
        f[l4 + csum_at..l4 + csum_at + 2].copy_from_slice(&c.to_be_bytes());
        prop_assert!(good(&f, s.ethernet));
    }

    #[test]
    fn dr_changes_macs_and_ttl_only(s in spec()) {
        prop_assume!(s.ethernet);
        let orig = build(&s);
        let mut f = orig.clone();
        let l = layout_of(&f, LinkType::Ethernet);
        dr(&mut f, &l, &DrParams::new([0xaa; 6], [0xbb; 6])).unwrap();
        prop_assert!(good(&f, true));
        prop_assert_eq!(&f[..12], &[[0xaa; 6], [0xbb; 6]].concat()[..]);
        let l2 = layout_of(&f, LinkType::Ethernet);
        prop_assert_eq!(ttl_of(&f, &l2), s.ttl - 1);
        prop_assert_eq!(l2.flow, l.flow);
        prop_assert_eq!(&f[l.l4_offset as usize..], &orig[l.l4_offset as usize..]);
    }

    #[test]
    fn encap_then_decap_is_the_identity_on_the_inner_packet(
        s in spec(), outer_v6 in any::<bool>(), kind in 0u8..6, hash in any::<u32>(), bits in 0u8..=8,
        flow_label in any::<bool>(), headroom in 0usize..8,
    ) {
        let orig = build(&s);
        let l = layout_of(&orig, link(&s));
        let kind = match kind {
            0 => TunnelKind::Ipip,
            1 => TunnelKind::Gue { port: GUE, checksum: GueChecksum::None },
            2 => TunnelKind::Gue { port: GUE, checksum: GueChecksum::Full },
            3 => TunnelKind::Gre { checksum: false },
            4 => TunnelKind::Gre { checksum: true },
            // Complete inner checksums: no option, the UDP checksum computed.
            _ => TunnelKind::Gue { port: GUE, checksum: GueChecksum::RemCsum },
        };
        let mut p = TunnelParams::new(kind, rs_addr(outer_v6, 1), rs_addr(outer_v6, 2));
        p.decrement_ttl = false;
        p.flow_hash = hash;
        p.src_hash_bits = bits;
        p.flow_label = flow_label;
        let room = lvs::rewrite::tunnel_overhead(kind, outer_v6) + headroom;
        let mut buf = vec![0u8; room];
        buf.extend_from_slice(&orig);
        let e = encap(&mut buf, room, &l, &p).unwrap();
        prop_assert_eq!(e.start, headroom);
        let out = &buf[e.start..e.end];
        prop_assert!(good(out, s.ethernet), "{:?}", check_frame(out, s.ethernet, Some(GUE)));
        let lo = layout_of(out, link(&s));
        prop_assert_eq!(lo.ip_version, if outer_v6 { 6 } else { 4 });
        // Outer DS field: DSCP copied, ECN copied with CE as ECT(0).
        let o3 = lo.l3_offset as usize;
        let ds = if outer_v6 { (out[o3] << 4) | (out[o3 + 1] >> 4) } else { out[o3 + 1] };
        let ecn = if s.tos & 3 == 3 { 2 } else { s.tos & 3 };
        prop_assert_eq!(ds, (s.tos & !3) | ecn);
        if !outer_v6 {
            prop_assert_eq!(out[o3 + 6] & 0x40 != 0, !s.v6 && s.df);
        }
        let d = decap(out, &lo).unwrap();
        let l3 = l.l3_offset as usize;
        prop_assert_eq!(&out[d.start..d.end], &orig[l3..l3 + l.ip_len as usize]);
        prop_assert_eq!(d.ip_version, l.ip_version);

        // The outer checksums verify, and a flipped byte is caught where a checksum covers it.
        prop_assert_eq!(verify_outer(out, &lo), Ok(()));
        // A layout (caller data) whose IP length runs past the buffer: refused, never a panic.
        let mut huge = lo;
        huge.ip_len = u32::MAX;
        prop_assert_eq!(verify_outer(out, &huge), Err(RewriteError::Incomplete));
        prop_assert!(decap(out, &huge).is_ok_and(|d| d.end == out.len()));
        let l4 = lo.l4_offset as usize;
        let covered = match kind {
            TunnelKind::Gue { .. } => out[l4 + 6..l4 + 8] != [0, 0],
            TunnelKind::Gre { checksum } => checksum,
            TunnelKind::Ipip => false,
        };
        let mut bad = out.to_vec();
        let at = d.start + (hash as usize % (d.end - d.start));
        bad[at] ^= 1 << (bits % 8);
        let r = verify_outer(&bad, &lo);
        prop_assert_eq!(r.is_err(), covered, "{:?} {:?}", kind, r);
        if !outer_v6 {
            let mut bad = out.to_vec();
            bad[o3 + 8] ^= 0x10; // the outer TTL, covered by the IPv4 header checksum
            prop_assert_eq!(verify_outer(&bad, &lo), Err(RewriteError::BadChecksum { offset: (o3 + 10) as u32 }));
        }
    }

    #[test]
    fn encap_refuses_what_does_not_fit(s in spec(), mtu in 68u32..400) {
        let orig = build(&s);
        let l = layout_of(&orig, link(&s));
        let room = 60;
        let mut buf = vec![0u8; room];
        buf.extend_from_slice(&orig);
        let before = buf.clone();
        let mut p = TunnelParams::new(TunnelKind::Ipip, rs_addr(false, 1), rs_addr(false, 2));
        p.mtu = mtu;
        let fits = l.ip_len + 20 <= mtu;
        match encap(&mut buf, room, &l, &p) {
            Ok(e) => {
                prop_assert!(fits || (!s.v6 && !s.df));
                prop_assert_eq!(e.over_mtu, !fits);
            }
            Err(RewriteError::TooBig { mtu: m }) => {
                prop_assert!(!fits && (s.v6 || s.df));
                prop_assert_eq!(m, mtu - 20);
                prop_assert_eq!(&buf, &before);
            }
            Err(e) => prop_assert!(false, "{e}"),
        }
    }

    #[test]
    fn nat_of_icmp_errors_both_ways(s in spec_with(Just(()).prop_flat_map(|_| common::packets::l4_strategy()).prop_filter("icmp", |l| matches!(l, L4::IcmpError { .. })).boxed()), port in 1u16.., seed in any::<u8>()) {
        let mut f = build(&s);
        let l = layout_of(&f, link(&s));
        let info = icmp_error_info(&f, &l).unwrap();
        let flow = info.flow.unwrap();
        // Quoted: VIP:vport -> client, i.e. the outer flow reversed.
        prop_assert_eq!((flow.src, flow.sport, flow.dst, flow.dport), (s.dst_ip(), s.dport, s.src_ip(), s.sport));
        if let L4::IcmpError { too_big: true, .. } = s.l4 {
            prop_assert_eq!(info.mtu, Some(if s.v6 { 1280 } else { 1400 }));
        }
        let rs = rs_addr(s.v6, seed);
        nat_icmp_in(&mut f, &l, &info, rs, port, true).unwrap();
        prop_assert!(good(&f, s.ethernet), "{:?}", check_frame(&f, s.ethernet, Some(GUE)));
        let info2 = icmp_error_info(&f, &layout_of(&f, link(&s))).unwrap();
        let q = info2.flow.unwrap();
        prop_assert_eq!((q.src, q.sport, q.dst, q.dport), (rs, port, s.src_ip(), s.sport));
        if !s.v6 {
            let q3 = info2.quote.l3_offset as usize;
            prop_assert!(lvs::wire::checksum::verifies(0, &f[q3..info2.quote.l4_offset as usize]));
        }
        // And back out, as the real server's own error about the same flow would be.
        let l2 = layout_of(&f, link(&s));
        nat_icmp_out(&mut f, &l2, &info2, s.dst_ip(), s.dport, false).unwrap();
        prop_assert!(good(&f, s.ethernet));
    }

    #[test]
    fn icmp_replies_quote_the_packet_and_verify(s in spec_with(not_icmp()), kind in 0u8..4) {
        let f = build(&s);
        let l = layout_of(&f, link(&s));
        let reply = match kind {
            0 => IcmpReply::TooBig { mtu: 1400 },
            1 => IcmpReply::TimeExceeded,
            2 => IcmpReply::PortUnreachable,
            _ => IcmpReply::HostUnreachable,
        };
        let me = rs_addr(s.v6, 200);
        let mut out = vec![0u8; 1600];
        let n = write_icmp_error(&mut out, &f, &l, reply, me).unwrap();
        let out = &out[..n];
        prop_assert!(good(out, s.ethernet), "{:?}", check_frame(out, s.ethernet, None));
        let sp = if s.ethernet { SlicedPacket::from_ethernet(out) } else { SlicedPacket::from_ip(out) }.unwrap();
        let (src, dst): (IpAddr, IpAddr) = match sp.net.unwrap() {
            NetSlice::Ipv4(i) => (i.header().source_addr().into(), i.header().destination_addr().into()),
            NetSlice::Ipv6(i) => (i.header().source_addr().into(), i.header().destination_addr().into()),
            _ => unreachable!(),
        };
        prop_assert_eq!((src, dst), (me, s.src_ip()));
        let quote = match sp.transport.unwrap() {
            TransportSlice::Icmpv4(i) => i.payload().to_vec(),
            TransportSlice::Icmpv6(i) => i.payload().to_vec(),
            _ => unreachable!(),
        };
        let l3 = l.l3_offset as usize;
        prop_assert_eq!(&quote[..], &f[l3..l3 + quote.len()]);
        let limit = if s.v6 { 1280 - 48 } else { 576 - 28 };
        prop_assert_eq!(quote.len(), (f.len() - l3).min(limit));
        // No error about an error.
        let mut out2 = vec![0u8; 1600];
        let lo = layout_of(out, link(&s));
        prop_assert_eq!(write_icmp_error(&mut out2, out, &lo, reply, me), Err(RewriteError::NoIcmpAllowed));
    }

    #[test]
    fn mss_clamp_lowers_only_larger_values(
        s in spec_with((0u8..4, prop::option::of(any::<u16>())).prop_map(|(nops, mss)| L4::Tcp { syn: true, nops, mss }).boxed()),
        max in 500u16..1500,
    ) {
        let mut f = build(&s);
        let l = layout_of(&f, link(&s));
        let changed = clamp_mss(&mut f, &l, max, ChecksumMode::Complete).unwrap();
        let L4::Tcp { mss, .. } = s.l4 else { unreachable!() };
        prop_assert_eq!(changed, mss.is_some_and(|m| m > max));
        prop_assert!(good(&f, s.ethernet));
        let sp = if s.ethernet { SlicedPacket::from_ethernet(&f) } else { SlicedPacket::from_ip(&f) }.unwrap();
        let Some(TransportSlice::Tcp(t)) = sp.transport else { unreachable!() };
        let got = t.options_iterator().find_map(|o| match o {
            Ok(etherparse::TcpOptionElement::MaximumSegmentSize(m)) => Some(m),
            _ => None,
        });
        prop_assert_eq!(got, mss.map(|m| m.min(max)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, .. ProptestConfig::default() })]

    /// A layout is caller data: any layout with any bytes, and no rewrite panics; each either
    /// succeeds or refuses with the buffer unchanged.
    #[test]
    fn forged_layouts_never_panic(
        buf in prop::collection::vec(any::<u8>(), 0..160),
        l2 in prop_oneof![Just(0u16), Just(14), Just(18), 0u16..200],
        l3 in prop_oneof![Just(0u16), Just(14), Just(18), 0u16..200],
        l4 in 0u16..240,
        v6 in any::<bool>(),
        vlan_tags in 0u8..4,
        proto in prop_oneof![Just(6u8), Just(17), Just(132), Just(1), Just(58), Just(4), Just(41), Just(47), any::<u8>()],
        ip_len in 0u32..300,
        fragment in 0u8..4,
        truncated in any::<bool>(),
        final_dst in prop::option::of(0u16..200),
        tunnel in 0u8..5,
        start in 0usize..80,
    ) {
        let l = Layout {
            l2_len: l2,
            vlan_tags,
            ip_version: if v6 { 6 } else { 4 },
            l3_offset: l3,
            l4_offset: l4,
            l4_proto: proto,
            ip_len,
            fragment: [Fragment::None, Fragment::First, Fragment::NonFirst, Fragment::Atomic][fragment as usize],
            truncated,
            final_dst_offset: final_dst,
            tunnel: [None, Some(Tunnel::Ipip), Some(Tunnel::Ipv6), Some(Tunnel::Gre), Some(Tunnel::Gue)][tunnel as usize],
            flow: None,
        };
        let a = rs_addr(v6, 1);
        let check = |name: &str, before: &[u8], after: &[u8], r: Result<(), RewriteError>| {
            if r.is_err() {
                assert_eq!(before, after, "{name} changed the buffer and failed");
            }
        };
        let mut f = buf.clone();
        let r = nat_in(&mut f, &l, a, 80, &NatOptions::default());
        check("nat_in", &buf, &f, r);
        let mut f = buf.clone();
        let r = nat_out(&mut f, &l, a, 80, &NatOptions { checksum: ChecksumMode::Partial, ..Default::default() });
        check("nat_out", &buf, &f, r);
        let mut f = buf.clone();
        let r = dr(&mut f, &l, &DrParams { vlan_id: Some(7), ..DrParams::new([1; 6], [2; 6]) });
        check("dr", &buf, &f, r);
        let mut f = buf.clone();
        let r = clamp_mss(&mut f, &l, 1000, ChecksumMode::Complete).map(|_| ());
        check("clamp_mss", &buf, &f, r);
        if let Ok(d) = decap(&buf, &l) {
            prop_assert!(d.start < d.end && d.end <= buf.len());
        }
        let _ = verify_outer(&buf, &l);
        if let Ok(info) = icmp_error_info(&buf, &l) {
            let mut f = buf.clone();
            let r = nat_icmp_in(&mut f, &l, &info, a, 80, true);
            check("nat_icmp_in", &buf, &f, r);
            let mut f = buf.clone();
            let r = nat_icmp_out(&mut f, &l, &info, a, 80, false);
            check("nat_icmp_out", &buf, &f, r);
        }
        let mut out = vec![0u8; 700];
        if let Ok(n) = write_icmp_error(&mut out, &buf, &l, IcmpReply::PortUnreachable, a) {
            prop_assert!(n <= out.len());
        }
        for kind in [
            TunnelKind::Ipip,
            TunnelKind::Gue { port: GUE, checksum: GueChecksum::Full },
            TunnelKind::Gre { checksum: true },
        ] {
            let mut f = vec![0u8; start];
            f.extend_from_slice(&buf);
            let before = f.clone();
            let r = encap(&mut f, start, &l, &TunnelParams::new(kind, rs_addr(!v6, 1), rs_addr(!v6, 2)));
            match r {
                Ok(e) => prop_assert!(e.start < e.end && e.end <= f.len()),
                Err(_) => prop_assert_eq!(&f, &before),
            }
        }
    }
}
