#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| updraft_config::fuzzing::expr(data));
