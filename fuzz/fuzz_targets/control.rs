#![no_main]

// Control messages and collective payloads, and the input agreement's messages (collective
// payloads of every job).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    updraft_runtime::fuzzing::quiet_contained_panics();
    updraft_runtime::fuzzing::control(data);
    updraft_operators::fuzzing::agree(data);
});
