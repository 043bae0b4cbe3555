//! The layouts against the crate that decodes for real.
//!
//! For every layout and every version it covers, random messages are built from the layout
//! (random values, arrays of a few elements, nulls, known and unknown tagged fields) and must
//! decode with `kafka-protocol` to the last byte: a field missing, extra, of the wrong width or
//! in the wrong versions shifts everything after it and fails. Then the same messages are
//! mutated (bytes flipped, cut short, lengths made absurd): whenever the walk accepts one, the
//! crate must decode exactly the bytes the walk covered.

use bytes::{Buf, Bytes};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Decodable;

use super::messages::*;
use super::schema::{walk, Elem, Kind, Schema};

/// A small deterministic generator (xorshift64*), so a failure names a seed that replays it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length prefix for `len` (None: null).
fn put_len(out: &mut Vec<u8>, len: Option<usize>, compact: bool, wide: bool) {
    match (compact, wide, len) {
        (true, _, None) => put_varint(out, 0),
        (true, _, Some(n)) => put_varint(out, n as u32 + 1),
        (false, true, None) => out.extend_from_slice(&(-1i32).to_be_bytes()),
        (false, true, Some(n)) => out.extend_from_slice(&(n as i32).to_be_bytes()),
        (false, false, None) => out.extend_from_slice(&(-1i16).to_be_bytes()),
        (false, false, Some(n)) => out.extend_from_slice(&(n as i16).to_be_bytes()),
    }
}

fn gen_string(rng: &mut Rng, out: &mut Vec<u8>, compact: bool, nullable: bool) {
    if nullable && rng.below(8) == 0 {
        put_len(out, None, compact, false);
        return;
    }
    let n = rng.below(7) as usize;
    put_len(out, Some(n), compact, false);
    out.extend((0..n).map(|_| b'a' + rng.below(26) as u8));
}

fn gen_kind(rng: &mut Rng, kind: Kind, version: i16, compact: bool, depth: u32, out: &mut Vec<u8>) {
    match kind {
        Kind::Bool => out.push(rng.below(2) as u8),
        Kind::Int8 => out.extend(rng.bytes(1)),
        Kind::Int16 => out.extend(rng.bytes(2)),
        Kind::Int32 => out.extend(rng.bytes(4)),
        Kind::Int64 => out.extend(rng.bytes(8)),
        Kind::Uuid => out.extend(rng.bytes(16)),
        Kind::Str { nullable } => gen_string(rng, out, compact, nullable),
        Kind::Bytes { nullable } => {
            if nullable && rng.below(8) == 0 {
                put_len(out, None, compact, true);
            } else {
                let n = rng.below(9) as usize;
                put_len(out, Some(n), compact, true);
                out.extend(rng.bytes(n));
            }
        }
        Kind::Struct(schema) => gen_struct(rng, schema, version, depth + 1, out),
        Kind::Array { of, nullable } => {
            if nullable && rng.below(8) == 0 {
                put_len(out, None, compact, true);
                return;
            }
            let n = if depth > 3 { 0 } else { rng.below(4) as usize };
            put_len(out, Some(n), compact, true);
            for _ in 0..n {
                match of {
                    Elem::Int32 => out.extend(rng.bytes(4)),
                    Elem::Str => gen_string(rng, out, compact, false),
                    Elem::Struct(schema) => gen_struct(rng, schema, version, depth + 1, out),
                }
            }
        }
    }
}

fn gen_struct(rng: &mut Rng, schema: &'static Schema, version: i16, depth: u32, out: &mut Vec<u8>) {
    let present = |v: (i16, i16)| v.0 <= version && version <= v.1;
    for field in schema.fields {
        if field.tag.is_none() && present(field.versions) {
            gen_kind(
                rng,
                field.kind,
                version,
                version >= field.compact_from,
                depth,
                out,
            );
        }
    }
    if version < schema.flexible_from {
        return;
    }
    let mut tagged: Vec<(u32, Vec<u8>)> = Vec::new();
    for field in schema.fields {
        if let Some(tag) = field.tag {
            if present(field.versions) && rng.below(2) == 0 {
                let mut value = Vec::new();
                gen_kind(rng, field.kind, version, true, depth, &mut value);
                tagged.push((tag, value));
            }
        }
    }
    if rng.below(4) == 0 {
        let n = rng.below(5) as usize;
        tagged.push((10_000, rng.bytes(n)));
    }
    put_varint(out, tagged.len() as u32);
    for (tag, value) in tagged {
        put_varint(out, tag);
        put_varint(out, value.len() as u32);
        out.extend(value);
    }
}

/// A decode by the crate, its error reduced to a message.
type CrateDecode = fn(&mut Bytes, i16) -> Result<(), String>;

fn dec<T: Decodable>(buf: &mut Bytes, version: i16) -> Result<(), String> {
    T::decode(buf, version)
        .map(drop)
        .map_err(|e| format!("{e:#}"))
}

fn layouts() -> Vec<(&'static Schema, CrateDecode)> {
    vec![
        (&PRODUCE_REQUEST, dec::<ProduceRequest>),
        (&FETCH_REQUEST, dec::<FetchRequest>),
        (&LIST_OFFSETS_REQUEST, dec::<ListOffsetsRequest>),
        (&METADATA_REQUEST, dec::<MetadataRequest>),
        (&API_VERSIONS_REQUEST, dec::<ApiVersionsRequest>),
        (&CREATE_TOPICS_REQUEST, dec::<CreateTopicsRequest>),
        (&DELETE_TOPICS_REQUEST, dec::<DeleteTopicsRequest>),
        (&FIND_COORDINATOR_REQUEST, dec::<FindCoordinatorRequest>),
        (&JOIN_GROUP_REQUEST, dec::<JoinGroupRequest>),
        (&SYNC_GROUP_REQUEST, dec::<SyncGroupRequest>),
        (&HEARTBEAT_REQUEST, dec::<HeartbeatRequest>),
        (&LEAVE_GROUP_REQUEST, dec::<LeaveGroupRequest>),
        (&OFFSET_COMMIT_REQUEST, dec::<OffsetCommitRequest>),
        (&OFFSET_FETCH_REQUEST, dec::<OffsetFetchRequest>),
        (&OFFSET_DELETE_REQUEST, dec::<OffsetDeleteRequest>),
        (&LIST_GROUPS_REQUEST, dec::<ListGroupsRequest>),
        (&DESCRIBE_GROUPS_REQUEST, dec::<DescribeGroupsRequest>),
        (&DELETE_GROUPS_REQUEST, dec::<DeleteGroupsRequest>),
        (&INIT_PRODUCER_ID_REQUEST, dec::<InitProducerIdRequest>),
        (&DELETE_RECORDS_REQUEST, dec::<DeleteRecordsRequest>),
        (&DESCRIBE_CONFIGS_REQUEST, dec::<DescribeConfigsRequest>),
        (&ALTER_CONFIGS_REQUEST, dec::<AlterConfigsRequest>),
        (&CREATE_PARTITIONS_REQUEST, dec::<CreatePartitionsRequest>),
        (
            &INCREMENTAL_ALTER_CONFIGS_REQUEST,
            dec::<IncrementalAlterConfigsRequest>,
        ),
        (
            &OFFSET_FOR_LEADER_EPOCH_REQUEST,
            dec::<OffsetForLeaderEpochRequest>,
        ),
        (
            &CONSUMER_PROTOCOL_SUBSCRIPTION,
            dec::<ConsumerProtocolSubscription>,
        ),
        (&FETCH_RESPONSE, dec::<FetchResponse>),
        (
            &OFFSET_FOR_LEADER_EPOCH_RESPONSE,
            dec::<OffsetForLeaderEpochResponse>,
        ),
    ]
}

/// The bytes the crate reads of `frame`, or its error.
fn crate_reads(decode: CrateDecode, frame: &[u8], version: i16) -> Result<usize, String> {
    let mut buf = Bytes::copy_from_slice(frame);
    decode(&mut buf, version)?;
    Ok(frame.len() - buf.remaining())
}

const MESSAGES_PER_VERSION: u64 = 60;

#[test]
fn every_layout_matches_the_crates_decoder_in_every_version() {
    let mut checked = 0;
    for (schema, decode) in layouts() {
        for version in schema.versions.0..=schema.versions.1 {
            for seed in 0..MESSAGES_PER_VERSION {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((seed + 1) * 7919));
                let mut frame = Vec::new();
                gen_struct(&mut rng, schema, version, 0, &mut frame);
                let walked = walk(schema, version, &frame);
                assert_eq!(
                    walked,
                    Ok(frame.len()),
                    "{} v{version} seed {seed}: the walk refuses its own message {frame:02x?}",
                    schema.name
                );
                assert_eq!(
                    crate_reads(decode, &frame, version),
                    Ok(frame.len()),
                    "{} v{version} seed {seed}: the crate reads the layout's message differently: {frame:02x?}",
                    schema.name
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 10_000, "only {checked} messages checked");
}

/// Whether the crate failed on a string that is not UTF-8, which the walk does not look at
/// (it allocates nothing for it).
fn utf8_error(e: &str) -> bool {
    e.to_ascii_lowercase().contains("utf")
}

#[test]
fn whatever_the_walk_accepts_the_crate_reads_to_the_same_byte() {
    let mut accepted_mutants = 0u64;
    for (schema, decode) in layouts() {
        for version in schema.versions.0..=schema.versions.1 {
            for seed in 0..MESSAGES_PER_VERSION / 2 {
                let mut rng = Rng(0x51_7cc1_b727_220a ^ ((seed + 1) * 104_729));
                let mut frame = Vec::new();
                gen_struct(&mut rng, schema, version, 0, &mut frame);
                if frame.is_empty() {
                    continue;
                }
                let mut mutant = frame.clone();
                match rng.below(4) {
                    0 => {
                        let at = rng.below(mutant.len() as u64) as usize;
                        mutant[at] ^= 1 << rng.below(8);
                    }
                    1 => mutant.truncate(rng.below(mutant.len() as u64) as usize),
                    2 => {
                        let at = rng.below(mutant.len() as u64) as usize;
                        mutant[at] = 0xff;
                    }
                    _ => {
                        let at = rng.below(mutant.len() as u64) as usize;
                        let end = (at + 4).min(mutant.len());
                        mutant[at..end].copy_from_slice(&[0x7f, 0xff, 0xff, 0xff][..end - at]);
                    }
                }
                let Ok(walked) = walk(schema, version, &mutant) else {
                    continue;
                };
                accepted_mutants += 1;
                match crate_reads(decode, &mutant, version) {
                    Ok(read) => assert_eq!(
                        read, walked,
                        "{} v{version} seed {seed}: walk and crate disagree on {mutant:02x?}",
                        schema.name
                    ),
                    Err(e) => assert!(
                        utf8_error(&e),
                        "{} v{version} seed {seed}: the walk accepts what the crate refuses ({e}): {mutant:02x?}",
                        schema.name
                    ),
                }
            }
        }
    }
    assert!(
        accepted_mutants > 500,
        "only {accepted_mutants} mutants accepted"
    );
}

#[test]
fn absurd_array_counts_are_refused_in_every_position() {
    // Fetch v12, one topic with one partition: patch each array count to i32::MAX-ish.
    let mut rng = Rng(42);
    for version in [4i16, 11, 12] {
        let mut frame = Vec::new();
        gen_struct(&mut rng, &FETCH_REQUEST, version, 0, &mut frame);
        for at in 0..frame.len() {
            let mut mutant = frame.clone();
            if version >= 12 {
                // A compact count of 2^28 in five bytes, in place of one byte.
                mutant.splice(at..at + 1, [0x80, 0x80, 0x80, 0x80, 0x01]);
            } else {
                let end = (at + 4).min(mutant.len());
                mutant[at..end].copy_from_slice(&[0x7f, 0xff, 0xff, 0xff][..end - at]);
            }
            if let Ok(walked) = walk(&FETCH_REQUEST, version, &mutant) {
                // Accepted only where the patch hit a value, not a count: the crate agrees (or
                // finds the patched string is not UTF-8).
                match crate_reads(dec::<FetchRequest>, &mutant, version) {
                    Ok(read) => assert_eq!(read, walked, "v{version} patch at {at}"),
                    Err(e) => assert!(utf8_error(&e), "v{version} patch at {at}: {e}"),
                }
            }
        }
    }
    // The case that aborted a node: a v4 Fetch whose topics array claims i32::MAX elements.
    let mut frame = Vec::new();
    frame.extend_from_slice(&(-1i32).to_be_bytes()); // replica_id
    frame.extend_from_slice(&500i32.to_be_bytes()); // max_wait_ms
    frame.extend_from_slice(&1i32.to_be_bytes()); // min_bytes
    frame.extend_from_slice(&(1i32 << 20).to_be_bytes()); // max_bytes
    frame.push(0); // isolation_level
    frame.extend_from_slice(&i32::MAX.to_be_bytes()); // topics count
    let err = walk(&FETCH_REQUEST, 4, &frame).unwrap_err();
    assert_eq!(err.path, "FetchRequest.topics");
    assert!(
        matches!(err.problem, super::Problem::ArrayTooLong { count, .. } if count == i32::MAX as u64),
        "{err}"
    );
}
