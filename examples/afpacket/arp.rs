//! Answers ARP requests and IPv6 neighbour solicitations for the virtual addresses
//! (`--answer-arp`), so clients on the director's link find the VIP at the director's MAC
//! without the VIP being configured on the host (where the kernel would answer, but also
//! accept the VIP's traffic itself).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lvs::wire::checksum::{fold, pseudo_header_v6, sum};

/// Writes into `out` the answer to `frame` if it is an ARP request or a neighbour
/// solicitation for one of `vips`; returns its length.
pub fn answer(frame: &[u8], mac: [u8; 6], vips: &HashSet<IpAddr>, out: &mut [u8]) -> Option<usize> {
    match u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]) {
        0x0806 => arp(frame, mac, vips, out),
        0x86dd => ndp(frame, mac, vips, out),
        _ => None,
    }
}

fn arp(frame: &[u8], mac: [u8; 6], vips: &HashSet<IpAddr>, out: &mut [u8]) -> Option<usize> {
    let a = frame.get(14..42)?;
    // Ethernet / IPv4, 6- and 4-byte addresses, a request.
    if a[0..8] != [0, 1, 0x08, 0, 6, 4, 0, 1] {
        return None;
    }
    let target = Ipv4Addr::new(a[24], a[25], a[26], a[27]);
    if !vips.contains(&IpAddr::V4(target)) {
        return None;
    }
    let o = out.get_mut(..42)?;
    o[0..6].copy_from_slice(&a[8..14]);
    o[6..12].copy_from_slice(&mac);
    o[12..14].copy_from_slice(&[0x08, 0x06]);
    o[14..22].copy_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 2]);
    o[22..28].copy_from_slice(&mac);
    o[28..32].copy_from_slice(&target.octets());
    o[32..42].copy_from_slice(&a[8..18]);
    Some(42)
}

fn ndp(frame: &[u8], mac: [u8; 6], vips: &HashSet<IpAddr>, out: &mut [u8]) -> Option<usize> {
    let ip = frame.get(14..54)?;
    // Next header ICMPv6 (no extension headers in a solicitation), hop limit 255.
    if ip[6] != 58 || ip[7] != 255 {
        return None;
    }
    let icmp = frame.get(54..78)?;
    if icmp[0] != 135 || icmp[1] != 0 {
        return None;
    }
    let mut t = [0u8; 16];
    t.copy_from_slice(&icmp[8..24]);
    let target = Ipv6Addr::from(t);
    if !vips.contains(&IpAddr::V6(target)) {
        return None;
    }
    let mut src = [0u8; 16];
    src.copy_from_slice(&ip[8..24]);
    // A solicitation from the unspecified address (duplicate address detection) is answered
    // to all nodes, without the solicited flag (RFC 4861 §7.2.4).
    let (dst, dst_mac, flags) = if src == [0; 16] {
        let all = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1).octets();
        (all, [0x33, 0x33, 0, 0, 0, 1], 0x20)
    } else {
        let mut m = [0u8; 6];
        m.copy_from_slice(&frame[6..12]);
        (src, m, 0x60)
    };
    let o = out.get_mut(..86)?;
    o[0..6].copy_from_slice(&dst_mac);
    o[6..12].copy_from_slice(&mac);
    o[12..14].copy_from_slice(&[0x86, 0xdd]);
    o[14..18].copy_from_slice(&[0x60, 0, 0, 0]);
    o[18..20].copy_from_slice(&32u16.to_be_bytes());
    o[20] = 58;
    o[21] = 255;
    o[22..38].copy_from_slice(&t);
    o[38..54].copy_from_slice(&dst);
    // Neighbour advertisement: router 0, solicited, override; target; target MAC option.
    o[54..58].copy_from_slice(&[136, 0, 0, 0]);
    o[58..62].copy_from_slice(&[flags, 0, 0, 0]);
    o[62..78].copy_from_slice(&t);
    o[78..80].copy_from_slice(&[2, 1]);
    o[80..86].copy_from_slice(&mac);
    let c = !fold(sum(pseudo_header_v6(&t, &dst, 58, 32), &o[54..86]));
    o[56..58].copy_from_slice(&c.to_be_bytes());
    Some(86)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{Icmpv6Type, NetSlice, SlicedPacket, TransportSlice};

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x10];
    const CLIENT: [u8; 6] = [2, 0, 0, 0, 0, 0x20];

    fn vips() -> HashSet<IpAddr> {
        ["10.0.0.100".parse().unwrap(), "fd00::100".parse().unwrap()]
            .into_iter()
            .collect()
    }

    fn arp_request(target: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&CLIENT);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&CLIENT);
        f.extend_from_slice(&[10, 0, 0, 5]);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target);
        f
    }

    #[test]
    fn arp_for_a_vip_is_answered_with_our_mac() {
        let mut out = [0u8; 128];
        let n = answer(&arp_request([10, 0, 0, 100]), MAC, &vips(), &mut out).unwrap();
        let r = &out[..n];
        assert_eq!(&r[0..6], &CLIENT);
        assert_eq!(&r[6..12], &MAC);
        assert_eq!(&r[20..22], &[0, 2], "a reply");
        assert_eq!(&r[22..28], &MAC, "sender MAC");
        assert_eq!(&r[28..32], &[10, 0, 0, 100], "sender IP: the VIP");
        assert_eq!(&r[32..38], &CLIENT);
        assert_eq!(&r[38..42], &[10, 0, 0, 5]);
    }

    #[test]
    fn arp_for_other_addresses_is_not_answered() {
        let mut out = [0u8; 128];
        assert_eq!(
            answer(&arp_request([10, 0, 0, 1]), MAC, &vips(), &mut out),
            None
        );
        let mut reply = arp_request([10, 0, 0, 100]);
        reply[21] = 2;
        assert_eq!(answer(&reply, MAC, &vips(), &mut out), None);
        assert_eq!(answer(&reply[..30], MAC, &vips(), &mut out), None);
    }

    fn solicitation(src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ethernet2(CLIENT, [0x33, 0x33, 0xff, 0, 1, 0])
            .ipv6(
                src.octets(),
                [0xff02, 0, 0, 0, 0, 1, 0xff00, 0x100]
                    .map(u16::to_be_bytes)
                    .concat()
                    .try_into()
                    .unwrap(),
                255,
            )
            .icmpv6(Icmpv6Type::Unknown {
                type_u8: 135,
                code_u8: 0,
                bytes5to8: [0; 4],
            });
        let mut payload = target.octets().to_vec();
        payload.extend_from_slice(&[1, 1]);
        payload.extend_from_slice(&CLIENT);
        let mut f = Vec::new();
        b.write(&mut f, &payload).unwrap();
        f
    }

    #[test]
    fn solicitation_for_a_vip_gets_a_checksummed_advertisement() {
        let client: Ipv6Addr = "fd00::5".parse().unwrap();
        let vip: Ipv6Addr = "fd00::100".parse().unwrap();
        let mut out = [0u8; 128];
        let n = answer(&solicitation(client, vip), MAC, &vips(), &mut out).unwrap();
        let p = SlicedPacket::from_ethernet(&out[..n]).unwrap();
        let Some(NetSlice::Ipv6(ip)) = &p.net else {
            panic!("not IPv6")
        };
        assert_eq!(ip.header().source_addr(), vip);
        assert_eq!(ip.header().destination_addr(), client);
        assert_eq!(ip.header().hop_limit(), 255);
        let Some(TransportSlice::Icmpv6(icmp)) = &p.transport else {
            panic!("not ICMPv6")
        };
        assert_eq!(icmp.type_u8(), 136);
        assert!(icmp.is_checksum_valid(ip.header().source(), ip.header().destination()));
        assert_eq!(&icmp.payload()[..16], &vip.octets());
        assert_eq!(&icmp.payload()[18..24], &MAC, "target link-layer address");
        assert_eq!(&out[0..6], &CLIENT);
    }

    #[test]
    fn solicitation_for_another_address_is_not_answered() {
        let mut out = [0u8; 128];
        let f = solicitation("fd00::5".parse().unwrap(), "fd00::1".parse().unwrap());
        assert_eq!(answer(&f, MAC, &vips(), &mut out), None);
        assert_eq!(answer(&f[..60], MAC, &vips(), &mut out), None);
    }
}
