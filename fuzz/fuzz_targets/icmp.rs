#![no_main]

#[path = "../../tests/common/oracle.rs"]
mod oracle;
#[path = "../../tests/fuzz_harness/rewrite.rs"]
mod rewrite;

libfuzzer_sys::fuzz_target!(|data: &[u8]| rewrite::icmp(data));
