//! Replays every committed fuzz corpus and crash input through its harness, on stable, as part
//! of `cargo test` (no libFuzzer, no C++ compiler needed).

#[path = "fuzz_harness/classify.rs"]
mod classify;
#[path = "fuzz_harness/rules.rs"]
mod rules;

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
