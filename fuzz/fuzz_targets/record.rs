#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| updraft_transports::fuzzing::record(data));
