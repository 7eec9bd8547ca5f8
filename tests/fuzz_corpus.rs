//! Replays every committed fuzz corpus and crash input through its harness, on stable, as part
//! of `cargo test` (no libFuzzer, no C++ compiler needed).

#[path = "fuzz_harness/classify.rs"]
mod classify;
#[path = "fuzz_harness/director.rs"]
mod director;
#[path = "fuzz_harness/rewrite.rs"]
mod rewrite;
#[path = "fuzz_harness/rules.rs"]
mod rules;
#[path = "fuzz_harness/sync.rs"]
mod sync;
mod common {
    pub mod oracle;
    pub mod packets;
}
use common::oracle;

use std::path::Path;

fn replay(target: &str, harness: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        let mut paths: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        paths.sort();
        for p in paths {
            let data = std::fs::read(&p).unwrap();
            eprintln!("replaying {}", p.display());
            harness(&data);
            n += 1;
        }
    }
    n
}

#[test]
fn rules_corpus() {
    let n = replay("rules", rules::rules);
    assert!(n >= 10, "only {n} corpus inputs for rules");
}

#[test]
fn director_corpus() {
    let n = replay("director", director::director_any);
    assert!(n >= 10, "only {n} corpus inputs for director");
}

/// Writes the seed corpus of the director target: whole exchanges (SYN, replies, data, FIN,
/// ICMP errors) for each service of the harness's rules, built with etherparse:
/// `cargo test --test fuzz_corpus -- --ignored write_director_seeds`.
#[test]
#[ignore]
fn write_director_seeds() {
    use etherparse::PacketBuilder;
    fn tcp(s: &str, sp: u16, d: &str, dp: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let b = match (s.parse().unwrap(), d.parse().unwrap()) {
            (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) => {
                b.ipv4(s.octets(), d.octets(), 64)
            }
            (std::net::IpAddr::V6(s), std::net::IpAddr::V6(d)) => {
                b.ipv6(s.octets(), d.octets(), 64)
            }
            _ => unreachable!(),
        };
        let mut t = b.tcp(sp, dp, 1, 1000);
        if flags & 2 != 0 {
            t = t.syn();
        }
        if flags & 0x10 != 0 {
            t = t.ack(1);
        }
        if flags & 1 != 0 {
            t = t.fin();
        }
        if flags & 4 != 0 {
            t = t.rst();
        }
        let mut out = Vec::new();
        t.write(&mut out, payload).unwrap();
        out
    }
    fn udp(s: &str, sp: u16, d: &str, dp: u16, payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let b = match (s.parse().unwrap(), d.parse().unwrap()) {
            (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) => {
                b.ipv4(s.octets(), d.octets(), 64)
            }
            (std::net::IpAddr::V6(s), std::net::IpAddr::V6(d)) => {
                b.ipv6(s.octets(), d.octets(), 64)
            }
            _ => unreachable!(),
        };
        let mut out = Vec::new();
        b.udp(sp, dp).write(&mut out, payload).unwrap();
        out
    }
    fn icmp4(s: [u8; 4], d: [u8; 4], ty: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
        let t = etherparse::Icmpv4Header::from_slice(&[ty, code, 0, 0, 0, 0, 5, 0])
            .unwrap()
            .0
            .icmp_type;
        let mut out = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(s, d, 64)
            .icmpv4(t)
            .write(&mut out, &quoted[14..])
            .unwrap();
        out
    }
    let c = "203.0.113.7";
    let c6 = "2001:db8:ff::7";
    type Records = Vec<(u8, Vec<u8>)>;
    let seeds: Vec<(&str, Records)> = vec![
        (
            "nat-tcp",
            vec![
                (0, tcp(c, 40000, "10.0.0.1", 80, 2, &[])),
                (1, tcp("192.168.10.1", 8080, c, 40000, 0x12, &[])),
                (4, tcp(c, 40000, "10.0.0.1", 80, 0x10, b"GET /")),
                (1, tcp("192.168.10.1", 8080, c, 40000, 0x10, &[0x55; 300])),
                (4, tcp(c, 40000, "10.0.0.1", 80, 0x11, &[])),
                (5, tcp("192.168.10.1", 8080, c, 40000, 0x11, &[])),
                (0, tcp(c, 40000, "10.0.0.1", 80, 2, &[])),
            ],
        ),
        (
            "nat-icmp",
            vec![
                (0, tcp(c, 40001, "10.0.0.1", 80, 2, &[])),
                (
                    0,
                    icmp4(
                        [198, 18, 0, 1],
                        [10, 0, 0, 1],
                        3,
                        4,
                        &tcp("10.0.0.1", 80, c, 40001, 0x12, &[]),
                    ),
                ),
                (
                    1,
                    icmp4(
                        [192, 168, 10, 1],
                        [203, 0, 113, 7],
                        3,
                        3,
                        &tcp(c, 40001, "192.168.10.1", 8080, 0x10, &[]),
                    ),
                ),
            ],
        ),
        (
            "udp-one-packet",
            vec![
                (0, udp(c, 5353, "10.0.0.1", 53, b"q")),
                (0, udp(c, 5353, "10.0.0.1", 53, b"q2")),
            ],
        ),
        (
            "persistent-tun",
            vec![
                (0, tcp(c, 1, "10.0.0.2", 443, 2, &[])),
                (0, tcp(c, 2, "10.0.0.2", 80, 2, &[])),
                (8, tcp(c, 1, "10.0.0.2", 443, 0x10, &[1; 1500])),
                (0, tcp("203.0.113.8", 3, "10.0.0.2", 22, 4, &[])),
            ],
        ),
        (
            "fwmark-gre",
            vec![
                (2, tcp(c, 7, "10.0.0.77", 25, 2, &[])),
                (0, tcp(c, 7, "10.0.0.77", 25, 0x10, b"x")),
            ],
        ),
        (
            "ipv6",
            vec![
                (0, tcp(c6, 40000, "2001:db8::1", 80, 2, &[])),
                (1, tcp("fd00::11", 8080, c6, 40000, 0x12, &[])),
                (0, tcp(c6, 40000, "2001:db8::1", 80, 0x10, &[7; 1400])),
                (0, udp(c6, 999, "2001:db8::1", 53, b"query")),
            ],
        ),
        (
            "ttl-and-garbage",
            vec![
                (0, {
                    let mut f = tcp(c, 9, "10.0.0.1", 80, 2, &[]);
                    f[22] = 1;
                    f
                }),
                (0, vec![0xff; 20]),
                (1, vec![0x45; 40]),
            ],
        ),
    ];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/director");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, recs) in &seeds {
        std::fs::write(dir.join(format!("seed-{name}")), director::encode(recs)).unwrap();
        // Each frame alone too.
        for (i, r) in recs.iter().enumerate() {
            std::fs::write(
                dir.join(format!("seed-{name}-{i}")),
                director::encode(std::slice::from_ref(r)),
            )
            .unwrap();
        }
    }
}

#[test]
fn classify_corpus() {
    let n = replay("classify", classify::classify_any);
    assert!(n >= 10, "only {n} corpus inputs for classify");
}

#[test]
fn rewrite_corpora() {
    for (target, harness) in [
        ("nat", rewrite::nat as fn(&[u8])),
        ("dr", rewrite::dr_target),
        ("tun", rewrite::tun),
        ("icmp", rewrite::icmp),
    ] {
        let n = replay(target, harness);
        assert!(n >= 10, "only {n} corpus inputs for {target}");
    }
}

/// Writes the seed corpora of the rewrite targets from the project's own packet generator:
/// `cargo test --test fuzz_corpus -- --ignored write_rewrite_seeds`.
#[test]
#[ignore]
fn write_rewrite_seeds() {
    use common::packets::{L4, Spec, build};
    let mut frames = Vec::new();
    let l4s = [
        L4::Tcp {
            syn: true,
            nops: 1,
            mss: Some(1460),
        },
        L4::Tcp {
            syn: false,
            nops: 0,
            mss: None,
        },
        L4::Udp {
            zero_checksum: false,
        },
        L4::Udp {
            zero_checksum: true,
        },
        L4::Sctp,
        L4::IcmpError {
            tcp: true,
            quote: 28,
            too_big: true,
        },
        L4::IcmpError {
            tcp: false,
            quote: 120,
            too_big: false,
        },
    ];
    for (i, l4) in l4s.iter().enumerate() {
        for v6 in [false, true] {
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            src[0] = if v6 { 0x20 } else { 10 };
            dst[0] = if v6 { 0x20 } else { 192 };
            src[15] = 7;
            dst[3] = 1;
            dst[15] = 1;
            let s = Spec {
                ethernet: i % 3 != 2,
                vlans: (i % 3) as u8,
                v6,
                ip_options: i % 2 == 1,
                src,
                dst,
                sport: 40000 + i as u16,
                dport: 80,
                ttl: 64,
                tos: (i as u8) * 37,
                df: i % 2 == 0,
                l4: l4.clone(),
                payload: (0..(i * 13) as u8).collect(),
            };
            frames.push((s.ethernet, build(&s)));
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for target in ["nat", "dr", "tun", "icmp"] {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, (eth, f)) in frames.iter().enumerate() {
            for flags in [0x00u8, 0x13, 0x25, 0x4a] {
                let mut data = vec![u8::from(!eth), flags, 0x1f, 0x90];
                data.extend_from_slice(f);
                std::fs::write(dir.join(format!("seed-{i:02}-{flags:02x}")), data).unwrap();
            }
        }
    }
}

#[test]
fn sync_corpus() {
    let n = replay("sync", sync::sync);
    assert!(n >= 20, "only {n} corpus inputs for sync");
}

/// Writes the seed corpus of the sync target with the crate's encoder: versions 0 and 1, IPv4
/// and IPv6, connections and templates of each of the harness's services, options (sequence
/// data, persistence data and name, unknown optional and mandatory options), padding between
/// records, records the backup skips, and datagrams with defects that refuse them whole; then
/// a few inputs of the harness's structured mode:
/// `cargo test --test fuzz_corpus -- --ignored write_sync_seeds`.
#[test]
#[ignore]
fn write_sync_seeds() {
    use lvs::sync::{Encoder, Seq, SeqData, SyncConn, Version};
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    #[allow(clippy::too_many_arguments)]
    fn rec(
        protocol: u8,
        flags: u32,
        state: u16,
        c: &str,
        cport: u16,
        v: &str,
        vport: u16,
        d: &str,
        dport: u16,
    ) -> SyncConn<'static> {
        SyncConn {
            protocol,
            flags,
            state,
            caddr: ip(c),
            cport,
            vaddr: ip(v),
            vport,
            daddr: ip(d),
            dport,
            fwmark: 0,
            timeout: 900,
            seq: None,
            pe_data: None,
            pe_name: None,
        }
    }
    fn encode(version: Version, syncid: u8, recs: &[SyncConn<'_>]) -> Vec<u8> {
        let mut buf = vec![0u8; 0xffff];
        let mut e = Encoder::new(&mut buf, version, syncid).unwrap();
        for r in recs {
            e.push(r).unwrap();
        }
        e.as_bytes().to_vec()
    }
    /// The bytes of one version 1 record, with `opts` appended (its size field follows).
    fn raw_v1(c: &SyncConn<'_>, opts: &[u8]) -> Vec<u8> {
        let mut r = encode(Version::V1, 0, std::slice::from_ref(c))[8..].to_vec();
        r.extend_from_slice(opts);
        let size = r.len() as u16;
        r[2..4].copy_from_slice(&size.to_be_bytes());
        r
    }
    /// A version 1 message of raw records, each 4-byte aligned.
    fn assemble_v1(syncid: u8, recs: &[Vec<u8>]) -> Vec<u8> {
        let mut m = vec![0, syncid, 0, 0, recs.len() as u8, 1, 0, 0];
        for (i, r) in recs.iter().enumerate() {
            if i > 0 {
                while m.len() % 4 != 0 {
                    m.push(0);
                }
            }
            m.extend_from_slice(r);
        }
        let len = m.len() as u16;
        m[2..4].copy_from_slice(&len.to_be_bytes());
        m
    }
    fn fix_size(m: &mut [u8]) {
        let len = m.len() as u16;
        m[2..4].copy_from_slice(&len.to_be_bytes());
    }

    let c = "203.0.113.7";
    let c6 = "2001:db8:ff::7";
    // Connections and templates of each service (flags: 0 NAT, 0x83 DR, 0x82 TUN).
    let nat = rec(6, 0, 1, c, 40000, "10.0.0.1", 80, "192.168.10.1", 8080);
    let nat_quiesced = rec(
        6,
        0x100,
        7,
        "203.0.113.8",
        40001,
        "10.0.0.1",
        80,
        "192.168.10.2",
        8080,
    );
    let udp_dr = rec(17, 0x183, 0, c, 5353, "10.0.0.1", 53, "192.168.10.3", 53);
    let tpl_port0 = SyncConn {
        timeout: 60,
        ..rec(6, 0x1083, 1, c, 0, "10.0.0.2", 0, "192.168.20.1", 0)
    };
    let port0_conn = rec(6, 0x83, 1, c, 40002, "10.0.0.2", 443, "192.168.20.1", 443);
    let port0_tun = rec(6, 0x82, 3, c, 40003, "10.0.0.2", 22, "192.168.20.2", 22);
    let sctp = rec(132, 0, 7, c, 9, "10.0.0.3", 9, "192.168.30.1", 9);
    let tpl_netmask = SyncConn {
        timeout: 300,
        ..rec(
            6,
            0x1000,
            0,
            "203.0.113.0",
            0,
            "10.0.0.4",
            443,
            "192.168.50.1",
            443,
        )
    };
    let netmask_conn = rec(6, 0, 1, c, 40004, "10.0.0.4", 443, "192.168.50.1", 443);
    let tpl_fwmark = SyncConn {
        fwmark: 5,
        timeout: 120,
        ..rec(0, 0x1082, 1, c, 0, "0.0.0.5", 0, "192.168.40.1", 0)
    };
    let fwmark_conn = SyncConn {
        fwmark: 5,
        ..rec(6, 0x82, 1, c, 1234, "10.0.0.77", 25, "192.168.40.1", 25)
    };
    let fwmark_nat = SyncConn {
        fwmark: 5,
        ..rec(6, 0, 1, c, 1235, "10.0.0.77", 25, "192.168.40.2", 25)
    };
    let nat6 = rec(6, 0, 1, c6, 40000, "2001:db8::1", 80, "fd00::11", 8080);
    let tun6 = rec(6, 0x82, 2, c6, 40001, "2001:db8::1", 80, "fd00::12", 80);
    let udp6 = SyncConn {
        timeout: 0,
        ..rec(17, 0x83, 0, c6, 999, "2001:db8::1", 53, "fd00::13", 53)
    };
    let tpl6 = SyncConn {
        timeout: 60,
        ..rec(6, 0x1083, 1, c6, 0, "2001:db8::2", 0, "fd00::21", 0)
    };
    let tpl6_fwmark = SyncConn {
        fwmark: 6,
        ..rec(0, 0x1083, 1, c6, 0, "0:0:6::", 0, "fd00::41", 0)
    };
    let unbound = rec(6, 0x83, 1, c, 7, "10.9.9.9", 80, "10.9.9.10", 80);
    let seq = SeqData {
        in_seq: Seq {
            init_seq: 0x1000,
            delta: 12,
            previous_delta: 0,
        },
        out_seq: Seq {
            init_seq: 0x2000,
            delta: 0xffff_fff4,
            previous_delta: 3,
        },
    };

    let mut seeds: Vec<(&str, Vec<u8>)> = vec![
        ("v1-nat", encode(Version::V1, 0, &[nat, nat_quiesced])),
        ("v1-udp-dr", encode(Version::V1, 1, &[udp_dr])),
        (
            "v1-port0-template",
            encode(Version::V1, 0, &[port0_conn, tpl_port0, port0_tun]),
        ),
        ("v1-sctp", encode(Version::V1, 0, &[sctp])),
        (
            "v1-netmask-template",
            encode(Version::V1, 0, &[netmask_conn, tpl_netmask]),
        ),
        (
            "v1-fwmark",
            encode(Version::V1, 5, &[fwmark_conn, tpl_fwmark, fwmark_nat]),
        ),
        (
            "v1-ipv6",
            encode(Version::V1, 0, &[nat6, tun6, udp6, tpl6, tpl6_fwmark]),
        ),
        (
            "v1-mixed-families",
            encode(Version::V1, 0, &[nat, nat6, tpl_port0, tpl6, sctp]),
        ),
        (
            "v1-seq-data",
            encode(
                Version::V1,
                0,
                &[
                    SyncConn {
                        seq: Some(seq),
                        flags: 0x0600,
                        ..nat
                    },
                    SyncConn {
                        seq: Some(seq),
                        ..nat6
                    },
                ],
            ),
        ),
        (
            "v1-pe-data-name",
            encode(
                Version::V1,
                0,
                &[
                    SyncConn {
                        pe_data: Some(b"a84b4c76e66710@pc33.example.com"),
                        pe_name: Some(b"sip"),
                        ..rec(17, 0x1083, 1, c, 0, "10.0.0.1", 53, "192.168.10.3", 53)
                    },
                    udp_dr,
                ],
            ),
        ),
        (
            // Odd-sized records: padding before each next record.
            "v1-padding",
            encode(
                Version::V1,
                0,
                &[
                    SyncConn {
                        pe_name: Some(b"sip"),
                        ..nat
                    },
                    SyncConn {
                        pe_name: Some(b"x"),
                        pe_data: Some(b"yz"),
                        ..nat6
                    },
                    port0_conn,
                ],
            ),
        ),
        (
            "v1-unknown-optional-option",
            assemble_v1(
                0,
                &[
                    raw_v1(&nat, &[0x49, 2, 0xaa, 0xbb]),
                    raw_v1(&tpl6, &[0x7f, 1, 0]),
                    raw_v1(&sctp, &[]),
                ],
            ),
        ),
        (
            "v1-unknown-mandatory-option",
            assemble_v1(
                0,
                &[
                    raw_v1(&nat, &[0x09, 1, 0, 0x02, 0]),
                    raw_v1(&port0_conn, &[]),
                ],
            ),
        ),
        (
            // Same key: update with INACTIVE, a stale expiry with another server, a replacement.
            "v1-update-stale-replace",
            encode(
                Version::V1,
                0,
                &[
                    nat,
                    SyncConn {
                        flags: 0x100,
                        state: 5,
                        ..nat
                    },
                    SyncConn {
                        flags: 0x100,
                        daddr: ip("192.168.10.2"),
                        ..nat
                    },
                    SyncConn {
                        daddr: ip("192.168.10.2"),
                        ..nat
                    },
                    tpl_port0,
                    SyncConn {
                        daddr: ip("192.168.20.2"),
                        ..tpl_port0
                    },
                ],
            ),
        ),
        (
            // Skipped: unknown protocol, bad TCP state, ESP (synced by IPVS, not balanced here);
            // unbound: no local real server; a template of an unknown protocol is kept.
            "v1-skips-unbound",
            encode(
                Version::V1,
                0,
                &[
                    SyncConn {
                        protocol: 99,
                        ..nat
                    },
                    SyncConn { state: 11, ..nat },
                    SyncConn {
                        protocol: 50,
                        state: 0,
                        ..nat
                    },
                    unbound,
                    SyncConn {
                        protocol: 99,
                        ..tpl_port0
                    },
                    SyncConn {
                        timeout: u32::MAX,
                        ..udp_dr
                    },
                ],
            ),
        ),
        ("v1-empty", encode(Version::V1, 0, &[])),
        ("v0-empty", encode(Version::V0, 0, &[])),
        (
            "v0-ipv4",
            encode(
                Version::V0,
                0,
                &[
                    SyncConn { timeout: 0, ..nat },
                    SyncConn {
                        timeout: 0,
                        ..tpl_port0
                    },
                    SyncConn {
                        timeout: 0,
                        ..port0_conn
                    },
                    SyncConn {
                        timeout: 0,
                        ..udp_dr
                    },
                ],
            ),
        ),
        (
            "v0-seq-data",
            encode(
                Version::V0,
                3,
                &[
                    SyncConn {
                        flags: 0x0400,
                        seq: Some(seq),
                        timeout: 0,
                        ..nat
                    },
                    SyncConn {
                        flags: 0x0283,
                        timeout: 0,
                        ..sctp
                    },
                    tpl_fwmark,
                ],
            ),
        ),
    ];
    // A table's worth and more: eviction and refusal when the 64-entry table fills.
    let many: Vec<SyncConn<'_>> = (0..100u16)
        .map(|i| SyncConn {
            cport: 20000 + i,
            flags: if i % 3 == 0 { 0x100 } else { 0 },
            state: if i % 2 == 0 { 1 } else { 3 },
            ..nat
        })
        .collect();
    seeds.push(("v1-fill-table", encode(Version::V1, 0, &many)));
    seeds.push(("v0-fill-table", encode(Version::V0, 0, &many[..90])));

    // Defects that refuse a datagram whole.
    let ok = encode(Version::V1, 0, &[nat, port0_conn]);
    let mut size_mismatch = ok.clone();
    size_mismatch.push(0);
    let mut version_nibble = ok.clone();
    version_nibble[10] |= 0x10;
    let mut bad_type = ok.clone();
    bad_type[8] = 2;
    let mut too_short = ok.clone();
    too_short[11] = 30;
    let mut count = ok.clone();
    count[4] = 3;
    let zero_len = assemble_v1(0, &[raw_v1(&nat, &[0x02, 0])]);
    let overrun = assemble_v1(0, &[raw_v1(&nat, &[0x03, 9, b's'])]);
    let duplicate = assemble_v1(0, &[raw_v1(&nat, &[0x03, 1, b'a', 0x43, 1, b'b'])]);
    let seq_len = assemble_v1(0, &[raw_v1(&nat, &[0x01, 4, 0, 0, 0, 0])]);
    let mut name = vec![0x03, 17];
    name.extend_from_slice(&[b'n'; 17]);
    let name_long = assemble_v1(0, &[raw_v1(&nat6, &name)]);
    let mut v0_truncated = encode(
        Version::V0,
        0,
        &[SyncConn {
            flags: 0x0200,
            timeout: 0,
            ..nat
        }],
    );
    v0_truncated.truncate(40);
    fix_size(&mut v0_truncated);
    // A version 1 header with a spare byte set reads as version 0.
    let mut spare = ok.clone();
    spare[7] = 1;
    seeds.extend([
        ("bad-size-mismatch", size_mismatch),
        ("bad-record-version", version_nibble),
        ("bad-record-type", bad_type),
        ("bad-record-too-short", too_short),
        ("bad-count", count),
        ("bad-zero-length-option", zero_len),
        ("bad-option-overrun", overrun),
        ("bad-duplicate-option", duplicate),
        ("bad-seq-length", seq_len),
        ("bad-name-too-long", name_long),
        ("bad-v0-truncated-seq", v0_truncated),
        ("bad-too-short", vec![0, 0, 0]),
        ("spare-reads-as-v0", spare),
    ]);

    // Structured mode (first byte 0x80): header (version bit, small-buffer bit), sync id, then
    // records: control byte, protocol, flags (4), state, then client, virtual and real
    // address and port selectors, mark and timeout selectors.
    #[rustfmt::skip]
    let structured: [(&str, Vec<u8>); 5] = [
        ("s-v1-nat-then-replace", vec![
            0x80, 0, 0,
            0x00, 0, 0, 0, 0, 0, 1, 0, 8, 0, 1, 0, 4, 0, 3,
            0x30, 1, 4, 0x01, 0x00, 1,
        ]),
        ("s-v0-templates", vec![
            0x80, 1, 9,
            0x00, 0, 0, 0, 0x10, 0x83, 1, 0, 0, 1, 0, 3, 0, 0, 0,
            0x00, 3, 0, 0, 0x10, 0x82, 1, 0, 0, 4, 0, 6, 0, 1, 0,
        ]),
        ("s-v6-template-and-conn", vec![
            0x80, 0, 0,
            0x01, 0, 0, 0, 0x10, 0x83, 1, 0, 0, 1, 0, 3, 0, 0, 2,
            0x01, 0, 0, 0, 0x00, 0x83, 1, 0, 50, 1, 3, 3, 3, 0, 3,
            0x01, 3, 0, 0, 0x10, 0x83, 1, 0, 0, 3, 0, 5, 0, 2, 2,
        ]),
        ("s-small-buffer", vec![
            0x80, 2, 0, 10,
            0x00, 0, 0, 0, 0, 0, 1, 0, 8, 0, 1, 0, 4, 0, 3,
            0x00, 1, 0, 0, 0, 0x83, 0, 1, 8, 0, 2, 2, 0, 0, 3,
            0x00, 2, 0, 0, 0, 0, 7, 0, 5, 2, 5, 5, 5, 0, 3,
        ]),
        ("s-options", vec![
            0x80, 0, 0,
            0x0e, 1, 0, 0, 0x10, 0x83, 1, 0, 0, 0, 2, 2, 2, 0, 3,
            0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 6,
            3, b'a', b'b', b'c', 3, b's', b'i', b'p',
            0x08, 0, 0, 0, 0, 0, 1, 0, 8, 0, 1, 0, 4, 0, 3, 4, b'n', b'a', b'm', b'e',
        ]),
    ];
    seeds.extend(structured);

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/sync");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, data) in &seeds {
        sync::sync(data);
        std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
    }
}
