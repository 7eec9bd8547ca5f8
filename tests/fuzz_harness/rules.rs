//! The `rules` fuzz harness, shared by `fuzz/fuzz_targets/rules.rs` (libFuzzer) and
//! `tests/fuzz_corpus.rs` (corpus replay on stable, in `cargo test`).
//!
//! Any text: parsing never panics; an error names a real line and column; every command
//! parsed prints back in `ipvsadm -S -n` form and parses to itself; applying the commands to a
//! service table never panics; `Services::check` agrees with applying the commands one by one
//! (so a rules file is applied all or nothing); and what `Services::save` prints restores to
//! the same services.

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
            let cfg = SchedConfig {
                maglev_table_size: 251,
                sh_table_bits: 4,
                mh_table_size: lvs::sched::MhTableSize::from_index(8).unwrap(),
                ..SchedConfig::default()
            };
            let mut services = Services::new(cfg);
            let cmds: Vec<&lvs::config::Command> = rules.iter().map(|r| &r.command).collect();
            let checked = services.check(&cmds);
            let mut first_failure = None;
            for (i, c) in cmds.iter().enumerate() {
                if let Err(e) = services.apply(c)
                    && first_failure.is_none()
                {
                    first_failure = Some((i, e));
                }
                if first_failure.is_some() {
                    break;
                }
            }
            assert_eq!(
                checked,
                first_failure.map_or(Ok(()), Err),
                "check disagrees with apply"
            );
            if checked.is_ok() {
                let saved = services.save();
                let mut again = Services::new(cfg);
                for r in parse(&saved).expect("saved rules parse") {
                    again.apply(&r.command).expect("saved rules apply");
                }
                assert_eq!(again.save(), saved, "save round trip");
            }
            let mut services = Services::new(cfg);
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
