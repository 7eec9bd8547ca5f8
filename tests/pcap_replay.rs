//! The pcap replay example end to end, on its bundled sample: the committed files are what the
//! generator builds; every frame gets the verdict its script says; the counters add up; every
//! frame written re-parses with etherparse and has correct checksums (ours, computed from
//! scratch, and tshark's when it is installed); cooked, raw-IP and pcapng captures replay too;
//! bad input gives the messages and exit code the example promises.

#[path = "../examples/replay/mod.rs"]
#[allow(dead_code)]
mod replay;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::OnceLock;

use etherparse::SlicedPacket;
use lvs::director::{DropReason, PassReason, Stats, Verdict};
use lvs::rewrite::IcmpReply;
use lvs::wire::LinkType;
use pcap_file::DataLink;
use pcap_file::pcap::PcapReader;
use replay::capture::Skip;
use replay::engine::Setup;
use replay::sample::{self, Expect, Sample};
use replay::{Outcome, Sinks, Summary};

fn sample() -> &'static Sample {
    static S: OnceLock<Sample> = OnceLock::new();
    S.get_or_init(sample::build)
}

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/data")
}

fn setup() -> Setup {
    let neigh = std::fs::read_to_string(data_dir().join("sample.neigh")).unwrap();
    let mut s = sample::setup(&neigh);
    s.rules = std::fs::read_to_string(data_dir().join("sample.rules")).unwrap();
    s
}

/// A replay into memory: the summary (outcomes recorded), the output and replies pcaps.
fn run(setup: &Setup, capture: &[u8]) -> (Summary, Vec<u8>, Vec<u8>) {
    let (mut out, mut replies) = (Vec::new(), Vec::new());
    let s = replay::replay(
        setup,
        capture,
        Sinks {
            out: &mut out,
            replies: Some(&mut replies),
        },
        true,
        &mut |_| {},
    )
    .unwrap();
    (s, out, replies)
}

/// The committed sample replayed (a director is not `Sync`: each test replays it anew).
fn committed() -> (Summary, Vec<u8>, Vec<u8>) {
    let pcap = std::fs::read(data_dir().join("sample.pcap")).unwrap();
    run(&setup(), &pcap)
}

/// (link type, records (timestamp ns, bytes)) of a pcap.
fn records(pcap: &[u8]) -> (DataLink, Vec<(u64, Vec<u8>)>) {
    let mut r = PcapReader::new(pcap).unwrap();
    let link = r.header().datalink;
    let mut v = Vec::new();
    while let Some(p) = r.next_packet() {
        let p = p.unwrap();
        v.push((p.timestamp.as_nanos() as u64, p.data.into_owned()));
    }
    (link, v)
}

fn outcomes(s: &Summary) -> &[Outcome] {
    s.outcomes.as_deref().unwrap()
}

#[test]
fn committed_sample_is_what_the_generator_builds() {
    let s = sample();
    let hint = "the committed sample differs from the generator's: run `cargo run --example make_sample` and commit examples/data";
    assert_eq!(
        std::fs::read(data_dir().join("sample.rules")).unwrap(),
        s.rules.as_bytes(),
        "{hint}"
    );
    assert_eq!(
        std::fs::read(data_dir().join("sample.neigh")).unwrap(),
        s.neigh.as_bytes(),
        "{hint}"
    );
    let pcap = std::fs::read(data_dir().join("sample.pcap")).unwrap();
    assert!(pcap == s.pcap, "{hint}");
    assert!(
        pcap.len() < 300_000,
        "the sample grew to {} bytes",
        pcap.len()
    );
    // Timestamps: fixed, increasing, some seconds.
    let (_, recs) = records(&pcap);
    assert_eq!(recs.len(), s.frames.len());
    assert!(recs.windows(2).all(|w| w[0].0 <= w[1].0));
    let span = recs.last().unwrap().0 - recs[0].0;
    assert!((10_000_000_000..20_000_000_000).contains(&span), "{span}");
    assert!((sample::START_NS..sample::START_NS + 1_000_000_000).contains(&recs[0].0));
}

#[test]
fn rules_file_is_what_the_director_saves() {
    let (s, ..) = &committed();
    let text = std::fs::read_to_string(data_dir().join("sample.rules")).unwrap();
    let rules: String = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(s.engine.director().save(), rules);
}

/// How many frames of the sample expect `e`.
fn expected(e: Expect) -> u64 {
    sample().frames.iter().filter(|f| f.expect == e).count() as u64
}

#[test]
fn every_frame_gets_the_verdict_its_script_says() {
    let s = sample();
    let (sum, ..) = &committed();
    let got = outcomes(sum);
    assert_eq!(got.len(), s.frames.len());
    let wrong: Vec<String> = s
        .frames
        .iter()
        .zip(got)
        .enumerate()
        .filter(|(_, (f, o))| !matches!(o, Outcome::Verdict(v) if f.expect.matches(v)))
        .map(|(i, (f, o))| {
            format!(
                "frame {} (flow {}): expected {:?}, got {o:?}",
                i + 1,
                f.flow,
                f.expect
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} frames:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    // The script's totals, as derived from how the sample was made: 90 + 40 + 24 + 36 + 14
    // TCP connections and 50 + 16 DNS flows plus the odd frames (see sample.rs).
    let st = sum.engine.director().stats();
    let table: [(Expect, u64); 13] = [
        (Expect::ToServer, 1335),
        (Expect::ToClient, 448),
        (Expect::Reply(IcmpReply::PortUnreachable), 2),
        (Expect::Reply(IcmpReply::TooBig { mtu: 1460 }), 1),
        (Expect::Reply(IcmpReply::TimeExceeded), 1),
        (Expect::Pass(PassReason::NotIp), 1),
        (Expect::Pass(PassReason::Malformed), 2),
        (Expect::Pass(PassReason::NotOurs), 2),
        (Expect::Pass(PassReason::NoConnection), 4),
        (Expect::Pass(PassReason::IcmpNotError), 2),
        (Expect::Pass(PassReason::NotNat), 2),
        (Expect::Pass(PassReason::NotScheduled), 0),
        (Expect::Drop(DropReason::Fragment), 1),
    ];
    for (e, n) in table {
        assert_eq!(expected(e), n, "the sample's count of {e:?} changed");
    }
    assert_eq!(
        table.iter().map(|t| t.1).sum::<u64>(),
        s.frames.len() as u64
    );
    assert_eq!(st.forwarded_in, 1335);
    assert_eq!(st.forwarded_out, 448);
    assert_eq!(st.replies, [2, 1, 1]);
    assert_eq!(st.passed(PassReason::NotIp), 1);
    assert_eq!(st.passed(PassReason::Malformed), 2);
    assert_eq!(st.passed(PassReason::NotOurs), 2);
    assert_eq!(st.passed(PassReason::NoConnection), 4);
    assert_eq!(st.passed(PassReason::IcmpNotError), 2);
    assert_eq!(st.passed(PassReason::NotNat), 2);
    assert_eq!(st.dropped(DropReason::Fragment), 1);
    assert_eq!(st.passed.iter().sum::<u64>(), 13);
    assert_eq!(st.dropped.iter().sum::<u64>(), 1);
    assert_eq!(sum.frames, s.frames.len() as u64);
    assert!(sum.skipped.is_empty());
    // Forwarded and passed frames are written, replies apart, drops nowhere.
    assert_eq!(sum.written, 1335 + 448 + 13);
    assert_eq!(sum.replies, 4);
}

/// The IP length of an Ethernet frame's packet (what the director counts in bytes).
fn ip_len(frame: &[u8]) -> u64 {
    let ip = ip_of(frame);
    match ip[0] >> 4 {
        4 => u16::from_be_bytes([ip[2], ip[3]]) as u64,
        _ => 40 + u16::from_be_bytes([ip[4], ip[5]]) as u64,
    }
}

fn ip_of(frame: &[u8]) -> &[u8] {
    if frame[12..14] == [0x81, 0x00] {
        &frame[18..]
    } else {
        &frame[14..]
    }
}

#[test]
fn service_counters_add_up_and_spread_over_real_servers() {
    let (sum, ..) = &committed();
    let d = sum.engine.director();
    for (i, &(_, vip, port)) in sample::SERVICES.iter().enumerate() {
        let key = sample::service_key(i);
        let mut want = Stats::default();
        for f in sample().frames.iter().filter(|f| f.service == Some(i)) {
            // A connection counts once its first packet went out (not the TTL-1 SYN's).
            want.conns += (f.opens && matches!(f.expect, Expect::ToServer)) as u64;
            match f.expect {
                Expect::ToServer => {
                    want.in_packets += 1;
                    want.in_bytes += ip_len(&f.data);
                }
                Expect::ToClient => {
                    want.out_packets += 1;
                    want.out_bytes += ip_len(&f.data);
                }
                _ => {}
            }
        }
        let got = d.service_stats(&key).unwrap();
        assert_eq!(got, want, "service {vip}:{port}");
        let svc = d.services().get(&key).unwrap();
        let mut total = Stats::default();
        for (_, dest) in svc.pool().dests().iter() {
            let ds = d.dest_stats(&key, dest.addr(), dest.port()).unwrap();
            assert!(
                ds.conns > 0 && ds.in_packets > 0,
                "real server {} of {vip}:{port} got nothing",
                dest.addr()
            );
            total.conns += ds.conns;
            total.in_packets += ds.in_packets;
            total.out_packets += ds.out_packets;
            total.in_bytes += ds.in_bytes;
            total.out_bytes += ds.out_bytes;
        }
        assert_eq!(total, got, "real servers of {vip}:{port}");
    }
    // The headline numbers of the sample's NAT service (the TTL-1 SYN is a connection that
    // never carried a packet, as IPVS counts it).
    let nat = d.service_stats(&sample::service_key(0)).unwrap();
    assert_eq!((nat.conns, nat.in_packets, nat.out_packets), (90, 569, 275));
}

/// One's complement sum of `data` (odd length padded), added to `init`.
fn sum16(data: &[u8], init: u32) -> u32 {
    let mut s = init;
    for c in data.chunks(2) {
        s += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
    }
    s
}

fn sums_to_ffff(data: &[u8], init: u32) -> bool {
    sum16(data, init) == 0xffff
}

/// Checks every checksum of an IP packet, from scratch: the IPv4 header, TCP/UDP/ICMP with
/// their pseudo-headers, the inner packet of tunnels (IPIP, IPv6-in-IPv6, GUE), the quoted
/// IPv4 header of ICMP errors. Returns what it checked, or what was wrong.
fn check_ip(p: &[u8], gue_port: u16) -> Result<String, String> {
    let (proto, l4, pseudo, frag) = match p[0] >> 4 {
        4 => {
            let ihl = (p[0] & 0x0f) as usize * 4;
            if !sums_to_ffff(&p[..ihl], 0) {
                return Err("IPv4 header checksum".into());
            }
            let total = u16::from_be_bytes([p[2], p[3]]) as usize;
            let l4 = &p[ihl..total.min(p.len())];
            let frag = u16::from_be_bytes([p[6], p[7]]) & 0x3fff != 0;
            let pseudo = sum16(&p[12..20], p[9] as u32 + l4.len() as u32);
            (p[9], l4, pseudo, frag)
        }
        6 => {
            let plen = u16::from_be_bytes([p[4], p[5]]) as usize;
            let l4 = &p[40..(40 + plen).min(p.len())];
            let pseudo = sum16(&p[8..40], p[6] as u32 + l4.len() as u32);
            (p[6], l4, pseudo, false)
        }
        v => return Err(format!("IP version {v}")),
    };
    let v6 = p[0] >> 4 == 6;
    match proto {
        _ if frag => Ok("fragment".into()),
        6 => sums_to_ffff(l4, pseudo)
            .then(|| "tcp".to_string())
            .ok_or_else(|| "TCP checksum".into()),
        17 => {
            let dport = u16::from_be_bytes([l4[2], l4[3]]);
            let csum = u16::from_be_bytes([l4[6], l4[7]]);
            // IPv4 UDP may say "no checksum" with 0.
            let none = csum == 0 && !v6;
            if !none && !sums_to_ffff(l4, pseudo) {
                return Err("UDP checksum".into());
            }
            if dport == gue_port {
                // GUE version 0: 4 bytes and hlen words of options, then the packet.
                let hlen = (l4[8] & 0x1f) as usize * 4;
                return check_ip(&l4[8 + 4 + hlen..], gue_port).map(|s| format!("gue({s})"));
            }
            Ok("udp".into())
        }
        1 | 58 => {
            let ok = if v6 {
                sums_to_ffff(l4, pseudo)
            } else {
                sums_to_ffff(l4, 0)
            };
            if !ok {
                return Err("ICMP checksum".into());
            }
            let is_error = if v6 {
                l4[0] < 128
            } else {
                matches!(l4[0], 3 | 11 | 12)
            };
            if is_error && !v6 {
                // The quoted header's checksum is kept right (the quoted L4 checksum is
                // not: IPVS leaves it, and so does the crate).
                let q = &l4[8..];
                let ihl = (q[0] & 0x0f) as usize * 4;
                if !sums_to_ffff(&q[..ihl], 0) {
                    return Err("quoted IPv4 header checksum".into());
                }
            }
            Ok("icmp".into())
        }
        4 | 41 => check_ip(l4, gue_port).map(|s| format!("ip-in-ip({s})")),
        p => Err(format!("protocol {p}")),
    }
}

#[test]
fn every_frame_written_parses_and_has_correct_checksums() {
    let s = sample();
    let (sum, out, replies) = &committed();
    let (link, recs) = records(out);
    assert_eq!(link, DataLink::ETHERNET);
    let got = outcomes(sum);
    let mut recs = recs.into_iter();
    let mut seen = BTreeMap::<String, u32>::new();
    let mut next_hops = BTreeMap::<usize, BTreeSet<IpAddr>>::new();
    for (f, o) in s.frames.iter().zip(got) {
        let Outcome::Verdict(v) = o else { continue };
        if matches!(v, Verdict::Reply(_) | Verdict::Drop(_)) {
            continue;
        }
        let (ts, bytes) = recs.next().expect("a record per forwarded or passed frame");
        assert_eq!(ts, f.ts_ns, "written with the original timestamp");
        let Verdict::Forward(fw) = v else {
            assert_eq!(&bytes, &f.data, "a passed frame is written unchanged");
            continue;
        };
        SlicedPacket::from_ethernet(&bytes)
            .unwrap_or_else(|e| panic!("flow {}: etherparse: {e}", f.flow));
        let what = check_ip(ip_of(&bytes), 6080)
            .unwrap_or_else(|e| panic!("flow {}: bad {e}: {bytes:02x?}", f.flow));
        *seen.entry(what).or_default() += 1;
        assert_eq!(
            bytes[6..12],
            sample::DIRECTOR_MAC,
            "from the director's MAC"
        );
        match f.expect {
            Expect::ToServer => {
                assert_eq!(
                    bytes[..6],
                    sample::server_mac(fw.next_hop),
                    "to the real server's MAC"
                );
                next_hops.entry(f.flow).or_default().insert(fw.next_hop);
            }
            _ => {
                // Back the way the client's frames came, except where the neighbour file
                // says otherwise.
                let to = fw.next_hop;
                let want = match to {
                    IpAddr::V4(a) if a == sample::PINNED_CLIENT => sample::ROUTER_C,
                    IpAddr::V4(a) if a.octets()[0] == 192 => sample::ROUTER_B,
                    IpAddr::V6(a) if a.segments()[2] == 0xc2 => sample::ROUTER_B,
                    _ => sample::ROUTER_A,
                };
                assert_eq!(bytes[..6], want, "reply to {to}");
            }
        }
    }
    assert!(recs.next().is_none());
    // Every kind of packet was there: plain, tunnelled (IPIP, GUE, IPv6 in IPv6), ICMP.
    for k in [
        "tcp",
        "udp",
        "icmp",
        "fragment",
        "ip-in-ip(tcp)",
        "gue(tcp)",
    ] {
        assert!(seen.contains_key(k), "no {k} frame in {seen:?}");
    }
    // A connection sticks to its real server.
    for (flow, hops) in next_hops {
        assert_eq!(hops.len(), 1, "flow {flow} went to {hops:?}");
    }
    // The replies: ICMP errors from the VIP to the client, correct checksums.
    let (link, recs) = records(replies);
    assert_eq!(link, DataLink::ETHERNET);
    assert_eq!(recs.len(), 4);
    for (_, r) in &recs {
        SlicedPacket::from_ethernet(r).unwrap();
        assert_eq!(check_ip(ip_of(r), 6080).unwrap(), "icmp");
        assert_eq!(r[6..12], sample::DIRECTOR_MAC);
    }
}

#[test]
fn tshark_finds_no_bad_checksum() {
    if std::process::Command::new("tshark")
        .arg("-v")
        .output()
        .is_err()
    {
        eprintln!("note: tshark is not installed; skipping its checksum check");
        return;
    }
    let (_, out, replies) = &committed();
    let dir = std::env::temp_dir().join(format!("lvs-pcap-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tshark = |file: &str, bytes: &[u8], filter: &str| -> String {
        let p = dir.join(file);
        std::fs::write(&p, bytes).unwrap();
        let o = std::process::Command::new("tshark")
            .arg("-r")
            .arg(&p)
            .args(["-o", "tcp.check_checksum:TRUE"])
            .args(["-o", "udp.check_checksum:TRUE"])
            .args(["-o", "ip.check_checksum:TRUE"])
            .args(["-Y", filter])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // A checksum status of 0 is "Bad" (2 is "Unverified": a truncated quote, say).
    let outer = "ip.checksum.status==0 || icmp.checksum.status==0 || icmpv6.checksum.status==0 \
                 || ((tcp.checksum.status==0 || udp.checksum.status==0) && !icmp && !icmpv6)";
    assert_eq!(tshark("out.pcap", out, outer), "");
    assert_eq!(tshark("replies.pcap", replies, outer), "");
    assert_eq!(
        tshark(
            "sample.pcap",
            &sample().pcap,
            "tcp.checksum.status==0 || udp.checksum.status==0 || ip.checksum.status==0"
        ),
        ""
    );
    // Only the layer-4 checksums quoted inside NAT-ed ICMPv6 errors are stale (IPVS leaves
    // them so; the IPv4 errors of the sample quote 8 bytes, which hold no TCP checksum).
    let inner = tshark(
        "out.pcap",
        out,
        "(tcp.checksum.status==0 || udp.checksum.status==0) && (icmp || icmpv6)",
    );
    assert_eq!(inner.lines().count(), 2, "{inner}");
    assert!(inner.lines().all(|l| l.contains("ICMPv6")), "{inner}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The sample as a Linux cooked capture (SLL), plus one packet the capturing host sent.
fn as_sll() -> Vec<u8> {
    let mut w = pcap_file::pcap::PcapWriter::with_header(
        Vec::new(),
        pcap_file::pcap::PcapHeader {
            datalink: DataLink::LINUX_SLL,
            endianness: pcap_file::Endianness::Little,
            ts_resolution: pcap_file::TsResolution::NanoSecond,
            ..Default::default()
        },
    )
    .unwrap();
    let mut sll = |ts: u64, pkttype: u16, f: &[u8]| {
        let mut p = Vec::new();
        p.extend_from_slice(&pkttype.to_be_bytes());
        p.extend_from_slice(&1u16.to_be_bytes());
        p.extend_from_slice(&6u16.to_be_bytes());
        p.extend_from_slice(&f[6..12]);
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(&f[12..14]);
        p.extend_from_slice(&f[14..]);
        w.write_packet(&pcap_file::pcap::PcapPacket::new(
            std::time::Duration::from_nanos(ts),
            p.len() as u32,
            &p,
        ))
        .unwrap();
    };
    for (i, f) in sample().frames.iter().enumerate() {
        let pkttype = if f.data[..6] == [0xff; 6] { 1 } else { 0 };
        sll(f.ts_ns, pkttype, &f.data);
        if i == 100 {
            sll(f.ts_ns, 4, &f.data);
        }
    }
    w.into_writer()
}

#[test]
fn a_cooked_capture_replays_like_the_ethernet_one() {
    let (eth, eth_out, eth_replies) = &committed();
    let (sll, out, replies) = run(&setup(), &as_sll());
    assert_eq!(sll.skipped, BTreeMap::from([(Skip::Outgoing, 1)]));
    let mut got: Vec<Outcome> = outcomes(&sll).to_vec();
    assert_eq!(got.remove(101), Outcome::Skipped(Skip::Outgoing));
    assert_eq!(got, outcomes(eth));
    // The frames written are the same bytes (cooked headers become the Ethernet headers).
    assert_eq!(records(&out), records(eth_out));
    assert_eq!(records(&replies), records(eth_replies));
}

#[test]
fn a_raw_ip_capture_replays_without_mac_addresses() {
    let mut w = pcap_file::pcap::PcapWriter::with_header(
        Vec::new(),
        pcap_file::pcap::PcapHeader {
            datalink: DataLink::RAW,
            ..Default::default()
        },
    )
    .unwrap();
    // Everything but the ARP frame, without its Ethernet header.
    let frames: Vec<&sample::Frame> = sample()
        .frames
        .iter()
        .filter(|f| f.data[12..14] != [0x08, 0x06])
        .collect();
    assert_eq!(frames.len(), sample().frames.len() - 1);
    for f in &frames {
        let ip = ip_of(&f.data);
        w.write_packet(&pcap_file::pcap::PcapPacket::new(
            std::time::Duration::from_nanos(f.ts_ns),
            ip.len() as u32,
            ip,
        ))
        .unwrap();
    }
    let (s, out, _) = run(&setup(), &w.into_writer());
    assert_eq!(s.engine.link(), LinkType::RawIp);
    // The same verdicts: NAT and TUN need no MACs, DR packets go to the real server as the
    // next hop (their destination stays the VIP), and nothing is learnt.
    for (f, o) in frames.iter().zip(outcomes(&s)) {
        assert!(
            matches!(o, Outcome::Verdict(v) if f.expect.matches(v)),
            "flow {}: {o:?}",
            f.flow
        );
    }
    assert_eq!(s.engine.learned(), 0);
    // The packets written are those of the Ethernet replay without their link headers.
    let (_, eth_out, _) = &committed();
    let (link, recs) = records(&out);
    assert_eq!(link, DataLink::RAW);
    let (_, eth_recs) = records(eth_out);
    let eth_recs: Vec<_> = eth_recs
        .iter()
        .filter(|(_, f)| f[12..14] != [0x08, 0x06])
        .collect();
    assert_eq!(recs.len(), eth_recs.len());
    for ((_, p), (_, e)) in recs.iter().zip(eth_recs) {
        assert_eq!(p.as_slice(), ip_of(e));
    }
}

#[test]
fn a_pcapng_capture_replays_like_the_pcap_one() {
    use pcap_file::pcapng::PcapNgWriter;
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
    use pcap_file::pcapng::blocks::interface_description::{
        InterfaceDescriptionBlock, InterfaceDescriptionOption,
    };
    let (eth, eth_out, _) = &committed();
    // Microseconds (the pcapng default resolution), then nanoseconds (if_tsresol 9).
    for nanos in [false, true] {
        let mut w = PcapNgWriter::new(Vec::new()).unwrap();
        let mut idb = InterfaceDescriptionBlock::new(DataLink::ETHERNET, 0);
        if nanos {
            idb.options.push(InterfaceDescriptionOption::IfTsResol(9));
        }
        w.write_pcapng_block(idb).unwrap();
        for f in &sample().frames {
            // pcap-file writes the raw count of interface units it finds in a Duration's
            // nanoseconds.
            let raw = if nanos { f.ts_ns } else { f.ts_ns / 1000 };
            w.write_pcapng_block(EnhancedPacketBlock {
                interface_id: 0,
                timestamp: std::time::Duration::from_nanos(raw),
                original_len: f.data.len() as u32,
                data: std::borrow::Cow::Borrowed(&f.data),
                options: vec![],
            })
            .unwrap();
        }
        let (s, out, _) = run(&setup(), &w.into_inner());
        assert_eq!(outcomes(&s), outcomes(eth), "nanos: {nanos}");
        assert_eq!(records(&out), records(eth_out), "nanos: {nanos}");
    }
}

fn file(name: &str, text: &[u8]) -> String {
    let dir = std::env::temp_dir().join(format!("lvs-pcap-replay-args-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn execute(args: &[&str]) -> Result<String, replay::Failure> {
    replay::execute(args.iter().map(|s| s.to_string()).collect())
}

#[test]
fn the_no_argument_run_prints_the_sample_tables() {
    let out = execute(&[]).unwrap();
    for line in [
        "Replaying the bundled sample, as",
        "1801 packets over 14.",
        "Prot LocalAddress:Port              Sched       Conns   InPkts  OutPkts    InBytes   OutBytes",
        "  -> RemoteAddress:Port       Forward Weight",
        "TCP  10.0.0.1:80                    wlc            90      569      275",
        "  -> 192.168.10.3:8080        Masq         2",
        "TCP  10.0.0.2:443                   wrr            40",
        "  -> 192.168.20.1:443         Route        3",
        "  -> 192.168.30.2:80          Tunnel       1",
        "TCP  [2001:db8::1]:80               mh             36",
        "UDP  10.0.0.1:53                    rr             51",
        "  forwarded to real servers                          1335",
        "  forwarded to clients                                448",
        "  replied: time exceeded                                1",
        "  passed: malformed (unchanged)                         2",
        "  dropped: fragment                                     1",
        "Wrote 1796 frames to ",
        "Wrote 4 ICMP replies to ",
    ] {
        assert!(out.contains(line), "no {line:?} in\n{out}");
    }
    assert!(!out.contains("dropped: no-neighbour"), "{out}");
}

#[test]
fn bad_input_is_named_and_exits_with_2() {
    let pcap = data_dir().join("sample.pcap").display().to_string();
    let out = file("out.pcap", b"").to_string();
    let fail = |args: &[&str]| execute(args).unwrap_err();

    let rules = file(
        "bad.rules",
        b"-A -t 10.0.0.1:80 -s wlc\n\n-a -t 10.0.0.1:80 -r 192.168.1.1:80 -w lots\n",
    );
    let f = fail(&["--rules", &rules, "--in", &pcap, "--out", &out]);
    assert_eq!(f.code, 2);
    assert!(f.message.contains("bad.rules:3:"), "{}", f.message);
    assert!(f.message.contains("lots"), "{}", f.message);

    let rules = file(
        "apply.rules",
        b"-A -t 10.0.0.1:80 -s wlc\n-a -t 10.0.0.9:80 -r 192.168.1.1:80\n",
    );
    let f = fail(&["--rules", &rules, "--in", &pcap, "--out", &out]);
    assert_eq!(f.code, 2);
    assert!(
        f.message
            .contains("apply.rules:2: no service -t 10.0.0.9:80"),
        "{}",
        f.message
    );

    let good = data_dir().join("sample.rules").display().to_string();
    let neigh = file(
        "bad.neigh",
        b"# fine\n10.0.0.2 02:00:00:00:00:02\n10.0.0.3 02:00:00:00:00\n",
    );
    let f = fail(&[
        "--rules", &good, "--in", &pcap, "--out", &out, "--neigh", &neigh,
    ]);
    assert_eq!(f.code, 2);
    assert!(f.message.contains("bad.neigh:3:"), "{}", f.message);

    let junk = file("junk.pcap", b"this is not a capture at all");
    let f = fail(&["--rules", &good, "--in", &junk, "--out", &out]);
    assert_eq!(f.code, 2);
    assert!(
        f.message.contains("not a pcap or pcapng file"),
        "{}",
        f.message
    );

    let f = fail(&[
        "--rules",
        &good,
        "--in",
        "/nonexistent/x.pcap",
        "--out",
        &out,
    ]);
    assert_eq!(f.code, 2);
    let f = fail(&["--rules", &good, "--in", &pcap]);
    assert_eq!(f.code, 2);
    assert!(f.message.contains("required"), "{}", f.message);
    let f = fail(&[
        "--rules", &good, "--in", &pcap, "--out", &out, "--mtu", "12",
    ]);
    assert_eq!(f.code, 2);
    let f = fail(&[
        "--rules",
        &good,
        "--in",
        &pcap,
        "--out",
        &out,
        "--gateway",
        "10.9.9.9",
    ]);
    assert!(f.message.contains("--gateway 10.9.9.9"), "{}", f.message);
    assert!(execute(&["--help"]).unwrap().starts_with("usage:"));

    // A capture cut in the middle of a record: what was read is replayed, with a warning.
    let whole = std::fs::read(data_dir().join("sample.pcap")).unwrap();
    let cut = file("cut.pcap", &whole[..whole.len() - 10]);
    let ok = execute(&["--rules", &good, "--in", &cut, "--out", &out]).unwrap();
    assert!(ok.contains("1800 packets"), "{ok}");
    assert!(
        ok.contains("warning: the capture ends in the middle"),
        "{ok}"
    );

    // The example binary itself, when `cargo test` built it next to this test.
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("examples/pcap_replay"));
    match bin.filter(|b| b.exists()) {
        Some(b) => {
            let o = std::process::Command::new(b)
                .args(["--rules", &rules, "--in", &pcap, "--out", &out])
                .output()
                .unwrap();
            assert_eq!(o.status.code(), Some(2));
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.starts_with("pcap_replay: "), "{err}");
            assert!(err.contains("apply.rules:2"), "{err}");
        }
        None => eprintln!("note: the pcap_replay example binary is not built; exit code not run"),
    }
}

#[test]
fn a_month_long_gap_in_the_capture_expires_connections() {
    use replay::engine::Engine;
    let s = sample();
    let setup = setup();
    let day = 86_400 * 1_000_000_000u64;
    // The first NAT connection's SYN, then its ACK: forwarded; the same ACK after a gap of
    // 1, 30 or 50 days: its connection (900 s ESTABLISHED at most) is long gone.
    let flow = s.frames[s
        .frames
        .iter()
        .position(|f| f.service == Some(0) && f.opens)
        .unwrap()]
    .flow;
    let mut frames = s.frames.iter().filter(|f| f.flow == flow);
    let (syn, synack, ack) = (
        frames.next().unwrap(),
        frames.next().unwrap(),
        frames.next().unwrap(),
    );
    for gap in [day, 30 * day, 50 * day] {
        let mut e = Engine::new(
            &setup,
            LinkType::Ethernet,
            lvs::Instant::from_nanos(syn.ts_ns),
        )
        .unwrap();
        for f in [syn, synack, ack] {
            let st = e.step(f.ts_ns, &f.data);
            assert!(f.expect.matches(&st.verdict), "{:?}", st.verdict);
        }
        let st = e.step(ack.ts_ns + gap, &ack.data);
        assert_eq!(
            st.verdict,
            Verdict::Pass(PassReason::NoConnection),
            "gap {} days",
            gap / day
        );
        assert_eq!(e.director().conns().len(), 0);
    }
}
