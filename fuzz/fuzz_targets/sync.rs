#![no_main]

#[path = "../../tests/fuzz_harness/sync.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::sync(data));
