#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| drop(strait_broker::exercise::node_config(data)));
