//! Classification against etherparse, the independent oracle, on random valid packets.

use std::net::IpAddr;

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice, VlanId};
use lvs::wire::{Classified, ClassifyOptions, LinkType, classify};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, .. ProptestConfig::default() })]

    #[test]
    fn flow_and_offsets_match_etherparse(
        v6 in any::<bool>(),
        udp in any::<bool>(),
        tags in 0usize..=2,
        src4 in any::<[u8; 4]>(), dst4 in any::<[u8; 4]>(),
        src6 in any::<[u8; 16]>(), dst6 in any::<[u8; 16]>(),
        sport in any::<u16>(), dport in any::<u16>(),
        payload in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let eth = PacketBuilder::ethernet2([1; 6], [2; 6]);
        let vid = |v| VlanId::try_new(v).unwrap();
        let mut buf = Vec::new();
        macro_rules! finish {
            ($b:expr) => {{
                let b = if v6 { $b.ipv6(src6, dst6, 64) } else { $b.ipv4(src4, dst4, 64) };
                if udp {
                    b.udp(sport, dport).write(&mut buf, &payload).unwrap();
                } else {
                    b.tcp(sport, dport, 7, 1000).write(&mut buf, &payload).unwrap();
                }
            }};
        }
        match tags {
            0 => finish!(eth),
            1 => finish!(eth.single_vlan(vid(5))),
            _ => finish!(eth.double_vlan(vid(5), vid(6))),
        }
        let Ok(Classified::Ip(l)) = classify(&buf, LinkType::Ethernet, &ClassifyOptions::default()) else {
            panic!("not classified");
        };
        let sp = SlicedPacket::from_ethernet(&buf).unwrap();
        let (src, dst, l3_len): (IpAddr, IpAddr, usize) = match sp.net.unwrap() {
            NetSlice::Ipv4(s) => (s.header().source_addr().into(), s.header().destination_addr().into(), s.header().slice().len()),
            NetSlice::Ipv6(s) => (s.header().source_addr().into(), s.header().destination_addr().into(), 40),
            _ => unreachable!(),
        };
        let (ps, pd) = match sp.transport.unwrap() {
            TransportSlice::Udp(u) => (u.source_port(), u.destination_port()),
            TransportSlice::Tcp(t) => (t.source_port(), t.destination_port()),
            _ => unreachable!(),
        };
        let f = l.flow.unwrap();
        prop_assert_eq!((f.src, f.dst, f.sport, f.dport), (src, dst, ps, pd));
        prop_assert_eq!(l.l2_len as usize, 14 + 4 * tags);
        prop_assert_eq!(l.l4_offset as usize, 14 + 4 * tags + l3_len);
        prop_assert_eq!(l.ip_len as usize, buf.len() - 14 - 4 * tags);
        prop_assert!(!l.truncated);
        // Every prefix of the frame classifies or fails with a typed error inside it.
        for cut in 0..buf.len() {
            match classify(&buf[..cut], LinkType::Ethernet, &ClassifyOptions::default()) {
                Ok(Classified::Ip(x)) => prop_assert!(x.truncated || cut == buf.len()),
                Ok(other) => prop_assert!(false, "{:?}", other),
                Err(e) => prop_assert!(e.offset <= cut),
            }
        }
    }
}
