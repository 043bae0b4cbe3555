//! The fuzz corpus of every broker decoding entry point (`fuzz/corpus/`, `fuzz/regressions/`),
//! replayed through the same functions the fuzz targets call: none may crash, and none may cost
//! more memory than a small multiple of its size.

#[path = "../../fuzz/replay.rs"]
mod replay;

use strait_broker::exercise;
use strait_broker::exercise::DECOMPRESSED_RECORDS_BYTES_MAX;

#[global_allocator]
static ALLOC: replay::CountingAlloc = replay::CountingAlloc;

#[test]
fn request_frames_from_the_corpus_are_decoded_within_bounded_memory() {
    replay::replay("request_frame", 0, |b| drop(exercise::request_frame(b)));
}

#[test]
fn leader_responses_from_the_corpus_are_decoded_within_bounded_memory() {
    replay::replay("leader_response", 0, |b| drop(exercise::leader_response(b)));
}

#[test]
fn subscriptions_from_the_corpus_are_decoded_within_bounded_memory() {
    replay::replay("subscription", 0, |b| drop(exercise::subscription(b)));
}

/// A compressed batch may legitimately expand to the decompression cap, which the broker
/// enforces by design; beyond that the usual bound applies.
#[test]
fn record_sets_from_the_corpus_are_decoded_within_the_decompression_cap() {
    replay::replay("record_set", DECOMPRESSED_RECORDS_BYTES_MAX, |b| {
        drop(exercise::record_set(b))
    });
}

#[test]
fn controller_frames_from_the_corpus_are_decoded_within_bounded_memory() {
    replay::replay("controller_frame", 0, |b| {
        drop(exercise::controller_frame(b))
    });
}

#[test]
fn node_configs_from_the_corpus_are_parsed_within_bounded_memory() {
    replay::replay("node_config", 0, |b| drop(exercise::node_config(b)));
}
