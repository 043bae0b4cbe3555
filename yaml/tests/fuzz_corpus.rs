//! The YAML document fuzz corpus (`fuzz/corpus/yaml_document/`,
//! `fuzz/regressions/yaml_document/`), replayed as the fuzz target runs it: every document the
//! limits let through is built as a `serde_yaml::Value`, within a small multiple of its size.

#[path = "../../fuzz/replay.rs"]
mod replay;

#[global_allocator]
static ALLOC: replay::CountingAlloc = replay::CountingAlloc;

#[test]
fn documents_the_limits_let_through_are_built_within_bounded_memory() {
    let refused = std::cell::Cell::new(0usize);
    let replayed = replay::replay("yaml_document", 0, |b| {
        if let Ok(text) = std::str::from_utf8(b) {
            if strait_yaml::limits::check(text).is_ok() {
                drop(serde_yaml::from_str::<serde_yaml::Value>(text));
            } else {
                refused.set(refused.get() + 1);
            }
        }
    });
    // The four regressions are bombs or too deep; the seeds are strait's own files.
    assert!(
        refused.get() >= 4,
        "{} of {replayed} refused",
        refused.get()
    );
    assert!(replayed > refused.get(), "every input was refused");
}
