//! The `rules` fuzz harness, shared by `fuzz/fuzz_targets/rules.rs` (libFuzzer) and
//! `tests/fuzz_corpus.rs` (corpus replay on stable, in `cargo test`).
//!
//! Any text: parsing never panics; an error names a real line and column; every command
//! parsed prints back in `ipvsadm -S -n` form and parses to itself; applying the commands to a
//! service table never panics.

use lvs::config::{parse, parse_line};
use lvs::sched::SchedConfig;
use lvs::service::Services;

pub fn rules(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.lines().count();
    match parse(text) {
        Ok(rules) => {
            // Small tables, so that a fuzzer-made service with many servers stays cheap.
            let mut services = Services::new(SchedConfig {
                maglev_table_size: 251,
                sh_table_bits: 4,
                mh_table_size: lvs::sched::MhTableSize::from_index(8).unwrap(),
                ..SchedConfig::default()
            });
            for r in rules {
                assert!(r.line >= 1 && r.line <= lines);
                let printed = r.command.to_string();
                let again = parse_line(&printed)
                    .unwrap_or_else(|e| panic!("{printed:?} does not parse back: {e:?}"))
                    .expect("a printed command is not blank");
                assert_eq!(again, r.command, "round trip of {printed:?}");
                let _ = services.apply(&r.command);
            }
        }
        Err(e) => {
            assert!(e.line >= 1 && e.line <= lines.max(1), "{e}");
            assert!(e.column >= 1, "{e}");
            let line = text.lines().nth(e.line - 1).unwrap_or("");
            assert!(e.column <= line.chars().count() + 2, "{e} in {line:?}");
            let _ = e.to_string();
        }
    }
}
