//! Every packet of the real captures in ../shared/testdata/pcaps (zeek and tcpdump test
//! suites) through classification: no panic, every failure a typed error, and the layouts
//! the captures' README describes. Skipped, saying so, when ../shared is not there.

use std::path::{Path, PathBuf};

use lvs::wire::{Classified, ClassifyOptions, Fragment, LinkType, ParseErrorKind, classify};

/// (link type, packet) of a classic pcap file (microsecond or nanosecond, either byte order).
fn read_pcap(path: &Path) -> Vec<(u32, Vec<u8>)> {
    let b = std::fs::read(path).unwrap();
    let magic = u32::from_le_bytes(b[0..4].try_into().unwrap());
    let le = matches!(magic, 0xa1b2_c3d4 | 0xa1b2_3c4d);
    assert!(
        le || matches!(magic.swap_bytes(), 0xa1b2_c3d4 | 0xa1b2_3c4d),
        "{path:?}"
    );
    let u32_at = |o: usize| {
        let a: [u8; 4] = b[o..o + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let link = u32_at(20);
    let mut out = Vec::new();
    let mut off = 24;
    while off + 16 <= b.len() {
        let incl = u32_at(off + 8) as usize;
        let data = b[off + 16..(off + 16 + incl).min(b.len())].to_vec();
        out.push((link, data));
        off += 16 + incl;
    }
    out
}

fn captures() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/pcaps");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: {} not found; the capture tests need ../shared",
            dir.display()
        );
        None
    }
}

/// Classifies one captured frame: Ethernet (DLT 1) or Linux cooked capture v1 (DLT 113,
/// 16-byte header with the protocol at bytes 14..16).
fn classify_frame(link: u32, data: &[u8]) -> Result<Classified, lvs::wire::ParseError> {
    let opts = ClassifyOptions::default();
    match link {
        1 => classify(data, LinkType::Ethernet, &opts),
        113 => classify(data.get(16..).unwrap_or(&[]), LinkType::RawIp, &opts),
        other => panic!("unexpected link type {other}"),
    }
}

#[test]
fn every_captured_packet_classifies_or_fails_typed() {
    let Some(dir) = captures() else { return };
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 16, "the README lists 16 captures");
    let (mut ip, mut not_ip, mut errors) = (0, 0, 0);
    for f in &files {
        for (link, data) in read_pcap(f) {
            match classify_frame(link, &data) {
                Ok(Classified::Ip(_)) => ip += 1,
                Ok(Classified::NotIp { .. }) => not_ip += 1,
                Err(e) => {
                    assert!(e.offset <= data.len());
                    errors += 1;
                }
            }
        }
    }
    eprintln!("captures: {ip} IP, {not_ip} not IP, {errors} typed errors");
    assert!(ip > 80 && not_ip > 0 && errors > 0);
}

fn first(dir: &Path, name: &str) -> (u32, Vec<u8>) {
    read_pcap(&dir.join(name)).into_iter().next().unwrap()
}

#[test]
fn captures_classify_as_their_readme_says() {
    let Some(dir) = captures() else { return };
    let ip = |name: &str| match classify_frame(first(&dir, name).0, &first(&dir, name).1) {
        Ok(Classified::Ip(l)) => l,
        other => panic!("{name}: {other:?}"),
    };
    // QinQ ARP: not IP, not an error.
    let (l, d) = first(&dir, "tcpdump__802.1ad_QinQ.pcap");
    assert!(matches!(
        classify_frame(l, &d),
        Ok(Classified::NotIp { ethertype: 0x0806 })
    ));
    // VLAN-tagged IPv4 TCP.
    let v = ip("tcpdump__ipv4_tcp_http_xml.pcap");
    assert_eq!(
        (v.vlan_tags, v.ip_version, v.flow.unwrap().proto),
        (1, 4, lvs::Protocol::Tcp)
    );
    // Truncated IPv6 header: a typed error.
    let (l, d) = first(&dir, "tcpdump__ipv6_invalid_length.pcap");
    assert!(matches!(
        classify_frame(l, &d).unwrap_err().kind,
        ParseErrorKind::Truncated { .. }
    ));
    // Linux cooked capture, nanosecond pcap: IPv4 TCP handshake.
    assert_eq!(
        ip("tcpdump__tcp-handshake-nano.pcap").flow.unwrap().proto,
        lvs::Protocol::Tcp
    );
    // IPv4 with only its header captured: the TCP header is missing.
    let (l, d) = first(&dir, "zeek__trunc_ip4-trunc.pcap");
    assert!(classify_frame(l, &d).is_err());
    // Tunnels.
    assert_eq!(
        ip("zeek__tunnels_4in4.pcap").tunnel,
        Some(lvs::wire::packet::Tunnel::Ipip)
    );
    assert_eq!(
        ip("zeek__tunnels_6in6.pcap").tunnel,
        Some(lvs::wire::packet::Tunnel::Ipv6)
    );
    // ICMPv6 Packet Too Big, fragments.
    assert_eq!(
        ip("zeek__icmp_icmp6-toobig.pcap").flow.unwrap().proto,
        lvs::Protocol::Icmpv6
    );
    let frags: Vec<Fragment> = read_pcap(&dir.join("zeek__ipv4_fragmented-1.pcap"))
        .into_iter()
        .filter_map(|(l, d)| match classify_frame(l, &d) {
            Ok(Classified::Ip(x)) => Some(x.fragment),
            _ => None,
        })
        .collect();
    assert!(
        frags.contains(&Fragment::First) && frags.contains(&Fragment::NonFirst),
        "{frags:?}"
    );
    let gre = read_pcap(&dir.join("zeek__tunnels_gre-sample.pcap"));
    assert!(gre.iter().any(|(l, d)| matches!(
        classify_frame(*l, d),
        Ok(Classified::Ip(x)) if x.tunnel == Some(lvs::wire::packet::Tunnel::Gre)
    )));
}
