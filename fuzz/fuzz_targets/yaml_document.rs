#![no_main]
// Any YAML document the limits let through is built as a serde_yaml::Value (what a node
// config's first read and a playbook's `with:` do) within the fuzzer's memory limits.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if strait_yaml::limits::check(text).is_ok() {
            let _ = serde_yaml::from_str::<serde_yaml::Value>(text);
        }
    }
});
