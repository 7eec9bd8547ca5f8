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
