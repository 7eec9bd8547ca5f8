#![no_main]

#[path = "../../tests/fuzz_harness/classify.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::classify_any(data));
