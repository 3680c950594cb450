#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    updraft_runtime::fuzzing::quiet_contained_panics();
    updraft_runtime::fuzzing::frame(data);
});
