#![no_main]
libfuzzer_sys::fuzz_target!(
    |data: &[u8]| drop(strait_broker::exercise::controller_frame(data))
);
