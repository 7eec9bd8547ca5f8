//! Every packet of the real captures in ../shared/testdata/pcaps (zeek and tcpdump test
//! suites) through classification: no panic, every failure a typed error, and the layouts
//! the captures' README describes; then through every rewrite: no panic, every refusal a typed
//! error, and no rewrite raises a capture's count of bad checksums (recomputed from scratch by
//! the etherparse oracle). Skipped, saying so, when ../shared is not there. (tshark is not
//! installed here, so etherparse is the only checksum judge.)

mod common {
    pub mod oracle;
}

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use common::oracle::check_frame;
use lvs::rewrite::{
    ChecksumMode, DrParams, GueChecksum, IcmpReply, NatOptions, TunnelKind, TunnelParams,
    clamp_mss, decap, dr, encap, icmp_error_info, nat_icmp_in, nat_icmp_out, nat_in, nat_out,
    tunnel_overhead, write_icmp_error,
};

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

/// The captures, sorted by name.
fn pcap_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
        .collect();
    files.sort();
    files
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
    let files = pcap_files(&dir);
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

#[derive(Default, Debug)]
struct Tally {
    ok: u32,
    refused: u32,
    bad_before: u32,
    bad_after: u32,
}

fn bad(frame: &[u8], ethernet: bool) -> Option<u32> {
    check_frame(frame, ethernet, None).map(|c| c.bad)
}

#[test]
fn every_captured_packet_goes_through_every_rewrite() {
    let Some(dir) = captures() else { return };
    let files = pcap_files(&dir);
    let mut tally: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut record =
        |name: &'static str, before: Option<u32>, after: Result<Option<u32>, String>| {
            let t = tally.entry(name).or_default();
            match after {
                Ok(a) => {
                    t.ok += 1;
                    if let (Some(b), Some(a)) = (before, a) {
                        t.bad_before += b;
                        t.bad_after += a;
                        assert!(
                            a <= b,
                            "{name} raised the bad-checksum count from {b} to {a}"
                        );
                    }
                }
                Err(_) => t.refused += 1,
            }
        };
    for f in &files {
        for (link, data) in read_pcap(f) {
            let (frame, ethernet) = match link {
                1 => (data.clone(), true),
                _ => (data.get(16..).unwrap_or(&[]).to_vec(), false),
            };
            let lt = if ethernet {
                LinkType::Ethernet
            } else {
                LinkType::RawIp
            };
            let Ok(Classified::Ip(l)) = classify(&frame, lt, &ClassifyOptions::default()) else {
                continue;
            };
            let before = bad(&frame, ethernet);
            let v6 = l.ip_version == 6;
            let rs: IpAddr = if v6 {
                "fd00::2".parse().unwrap()
            } else {
                "172.16.0.2".parse().unwrap()
            };
            let vip: IpAddr = if v6 {
                "2001:db8::1".parse().unwrap()
            } else {
                "198.51.100.1".parse().unwrap()
            };
            for (name, out) in [("nat_in", false), ("nat_out", true)] {
                let mut g = frame.clone();
                let r = if out {
                    nat_out(&mut g, &l, vip, 80, &NatOptions::default())
                } else {
                    nat_in(&mut g, &l, rs, 8080, &NatOptions::default())
                };
                if r.is_err() {
                    assert_eq!(g, frame, "{name} changed a frame it refused");
                }
                record(
                    name,
                    before,
                    r.map(|_| bad(&g, ethernet)).map_err(|e| e.to_string()),
                );
            }
            if ethernet {
                let mut g = frame.clone();
                let r = dr(&mut g, &l, &DrParams::new([2; 6], [4; 6]));
                record(
                    "dr",
                    before,
                    r.map(|_| bad(&g, ethernet)).map_err(|e| e.to_string()),
                );
            }
            for (name, kind, outer_v6) in [
                ("encap ipip", TunnelKind::Ipip, false),
                ("encap ipip6", TunnelKind::Ipip, true),
                (
                    "encap gue",
                    TunnelKind::Gue {
                        port: 6080,
                        checksum: GueChecksum::Full,
                    },
                    false,
                ),
                ("encap gre", TunnelKind::Gre { checksum: true }, true),
            ] {
                let (src, dst): (IpAddr, IpAddr) = if outer_v6 {
                    ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap())
                } else {
                    ("172.16.0.1".parse().unwrap(), "172.16.0.2".parse().unwrap())
                };
                let room = tunnel_overhead(kind, outer_v6);
                let mut buf = vec![0u8; room];
                buf.extend_from_slice(&frame);
                let r = encap(&mut buf, room, &l, &TunnelParams::new(kind, src, dst));
                let after = r.map(|e| {
                    let out = &buf[e.start..e.end];
                    check_frame(out, ethernet, Some(6080)).map(|c| c.bad)
                });
                record(name, before, after.map_err(|e| e.to_string()));
            }
            if l.tunnel.is_some() {
                let r = decap(&frame, &l).map(|d| bad(&frame[d.start..d.end], false));
                // The inner packet's checksums are a subset of the frame's.
                record("decap", before, r.map_err(|e| e.to_string()));
            }
            if let Ok(info) = icmp_error_info(&frame, &l) {
                for (name, out) in [("nat_icmp_in", false), ("nat_icmp_out", true)] {
                    let mut g = frame.clone();
                    let r = if out {
                        nat_icmp_out(&mut g, &l, &info, vip, 80, true)
                    } else {
                        nat_icmp_in(&mut g, &l, &info, rs, 8080, true)
                    };
                    record(
                        name,
                        before,
                        r.map(|_| bad(&g, ethernet)).map_err(|e| e.to_string()),
                    );
                }
            }
            let mut out = vec![0u8; 1600];
            let me: IpAddr = if v6 {
                "2001:db8::fe".parse().unwrap()
            } else {
                "198.51.100.254".parse().unwrap()
            };
            let r = write_icmp_error(&mut out, &frame, &l, IcmpReply::TooBig { mtu: 1400 }, me);
            record(
                "icmp reply",
                Some(0),
                r.map(|n| bad(&out[..n], ethernet))
                    .map_err(|e| e.to_string()),
            );
            let mut g = frame.clone();
            let r = clamp_mss(&mut g, &l, 1360, ChecksumMode::Complete);
            record(
                "mss clamp",
                before,
                r.map(|_| bad(&g, ethernet)).map_err(|e| e.to_string()),
            );
        }
    }
    for (name, t) in &tally {
        eprintln!(
            "{name:>12}: {} rewritten, {} refused (typed), bad checksums {} before, {} after",
            t.ok, t.refused, t.bad_before, t.bad_after
        );
    }
    let nat = &tally["nat_in"];
    assert!(nat.ok > 60 && nat.bad_before > 0, "{nat:?}");
    assert_eq!(nat.bad_after, nat.bad_before, "NAT keeps bad checksums bad");
}
