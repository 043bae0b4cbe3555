//! The mirror config fuzz corpus (`fuzz/corpus/mirror_config/`, `fuzz/regressions/mirror_config/`),
//! replayed through `MirrorConfig::parse` as the fuzz target calls it: no input may crash it, and
//! none may cost more memory than a small multiple of its size.

#[path = "../../fuzz/replay.rs"]
mod replay;

use std::path::Path;

use strait_mirror::config::MirrorConfig;

#[global_allocator]
static ALLOC: replay::CountingAlloc = replay::CountingAlloc;

/// Compiling the config's topic and group patterns costs memory bounded per pattern, not by
/// the pattern's length: the regex crate's tables grow in doublings, so a 2 KB config in the
/// corpus peaks at 1.3 MB. `Pattern::new` holds each compiled pattern to 1 MiB (the crate's
/// default of 10 MiB let `include: ['\w{100}']` alone cost about 19 MB); the corpus is held
/// to this much on top of the usual bound.
const REGEX_COMPILE_BYTES_ALLOWANCE: usize = 1 << 20;

#[test]
fn mirror_configs_from_the_corpus_are_parsed_within_bounded_memory() {
    replay::replay("mirror_config", REGEX_COMPILE_BYTES_ALLOWANCE, |b| {
        // The daemon reads the file as UTF-8 and refuses anything else before parsing.
        if let Ok(text) = std::str::from_utf8(b) {
            drop(MirrorConfig::parse(text, Path::new("fuzz.yaml")));
        }
    });
}
