#![no_main]

#[path = "../../tests/fuzz_harness/director.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::director_any(data));
