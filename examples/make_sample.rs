//! Writes the bundled sample of `pcap_replay`: `examples/data/sample.{pcap,rules,neigh}`.
//!
//! ```text
//! cargo run --example make_sample
//! ```
//!
//! The files are built deterministically (see `examples/replay/sample.rs`);
//! `tests/pcap_replay.rs` fails when the committed ones differ from what this writes.

use std::process::ExitCode;

#[path = "replay/mod.rs"]
#[allow(dead_code)]
mod replay;

fn main() -> ExitCode {
    let s = replay::sample::build();
    let dir = replay::manifest_dir().join("examples/data");
    let files: [(&str, &[u8]); 3] = [
        ("sample.pcap", &s.pcap),
        ("sample.rules", s.rules.as_bytes()),
        ("sample.neigh", s.neigh.as_bytes()),
    ];
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("make_sample: {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    for (name, bytes) in files {
        let p = dir.join(name);
        if let Err(e) = std::fs::write(&p, bytes) {
            eprintln!("make_sample: {}: {e}", p.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {} ({} bytes)", p.display(), bytes.len());
    }
    println!("{} frames", s.frames.len());
    ExitCode::SUCCESS
}
