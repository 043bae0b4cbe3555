//! The playbook fuzz corpus (`fuzz/corpus/playbook/`, `fuzz/regressions/playbook/`), replayed
//! through `Playbook::parse` as the fuzz target calls it: no input may crash it, and none may
//! cost more memory than a small multiple of its size (the alias bombs among the regressions
//! would cost hundreds of megabytes without `strait_yaml::limits`).

#[path = "../../fuzz/replay.rs"]
mod replay;

use std::path::Path;

use strait_dr::playbook::Playbook;

#[global_allocator]
static ALLOC: replay::CountingAlloc = replay::CountingAlloc;

#[test]
fn playbooks_from_the_corpus_are_parsed_within_bounded_memory() {
    replay::replay("playbook", 0, |b| {
        // The engine reads a playbook as UTF-8 and refuses anything else before parsing.
        if let Ok(text) = std::str::from_utf8(b) {
            drop(Playbook::parse(text, Path::new("fuzz.yaml")));
        }
    });
}
