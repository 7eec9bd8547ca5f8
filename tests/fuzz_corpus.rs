//! Replays every committed fuzz corpus and crash input through its harness, on stable, as part
//! of `cargo test` (no libFuzzer, no C++ compiler needed).

#[path = "fuzz_harness/classify.rs"]
mod classify;
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
