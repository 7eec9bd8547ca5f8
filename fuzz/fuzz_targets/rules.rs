#![no_main]

#[path = "../../tests/fuzz_harness/rules.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::rules(data));
