//! Test records: generated data sets and the comparisons of what was read back.

#![allow(dead_code)]

use rdkafka::message::Timestamp;

use super::*;

/// The sequence number a test record's key or value carries: the decimal after its last `-`,
/// ignoring a padding of `.` and a trailing `-` (`"<tag>-key-17"`,
/// `"replication-test-0000000017-....."`). Panics on anything else: a record the test did not
/// write is a finding, not a skip.
pub fn sequence_of(bytes: &[u8]) -> usize {
    let text = std::str::from_utf8(bytes).expect("a test record is text");
    text.trim_end_matches('.')
        .trim_end_matches('-')
        .rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no sequence number in {text:?}"))
}

/// What a copy did to a sequence of records: which sequence numbers are missing, how many
/// arrived more than once, and how many arrived after a higher one (first copies only).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SequenceAudit {
    pub missing: Vec<usize>,
    pub duplicated: usize,
    pub reordered: usize,
}

impl SequenceAudit {
    /// Audits `received` (sequence numbers in arrival order) against `sent`.
    pub fn of(sent: impl IntoIterator<Item = usize>, received: &[usize]) -> SequenceAudit {
        let mut seen = std::collections::HashSet::new();
        let mut duplicated = 0;
        let mut reordered = 0;
        let mut highest: Option<usize> = None;
        for &n in received {
            if !seen.insert(n) {
                duplicated += 1;
                continue;
            }
            if highest.is_some_and(|h| n < h) {
                reordered += 1;
            }
            highest = highest.max(Some(n));
        }
        let missing = sent.into_iter().filter(|n| !seen.contains(n)).collect();
        SequenceAudit {
            missing,
            duplicated,
            reordered,
        }
    }
}

/// A record as produced by a test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Explicit CreateTime; `None` lets the client stamp it.
    pub timestamp: Option<i64>,
}

impl TestRecord {
    pub fn kv(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> TestRecord {
        TestRecord {
            key: Some(key.into()),
            value: Some(value.into()),
            headers: Vec::new(),
            timestamp: None,
        }
    }
}

/// A record as read back by a consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp: Timestamp,
}

/// The standard generated record `i` of a data set: distinct key, two
/// headers, explicit timestamp `base_ts + i`, a ~100 byte value derived from
/// the index (part text, part pseudo-random so compression has work to do).
pub fn generated_record(tag: &str, i: usize, base_ts: i64) -> TestRecord {
    let mut value = format!("{tag}-value-{i:08}-").into_bytes();
    let target = 90 + (i % 21);
    let noise = pseudo_random_bytes(i as u64 + 1, target.saturating_sub(value.len()) / 2);
    value.extend_from_slice(&noise);
    while value.len() < target {
        value.push(b'a' + (value.len() % 26) as u8);
    }
    TestRecord {
        key: Some(format!("{tag}-key-{i:08}").into_bytes()),
        value: Some(value),
        headers: vec![
            ("index".to_string(), Some((i as u64).to_be_bytes().to_vec())),
            (
                "tag".to_string(),
                Some(format!("{tag}/{}", i % 7).into_bytes()),
            ),
        ],
        timestamp: Some(base_ts + i as i64),
    }
}

/// Asserts `got` is exactly `expected` at offsets `first_offset..` (dense,
/// in order), with CreateTime timestamps where the expected record carries
/// one. Reports the first mismatch only, so 100k-record failures stay readable.
pub fn assert_records_match(expected: &[TestRecord], got: &[Consumed], first_offset: i64) {
    assert_eq!(
        got.len(),
        expected.len(),
        "record count differs: got {} expected {}",
        got.len(),
        expected.len()
    );
    for (i, (e, g)) in expected.iter().zip(got).enumerate() {
        let want_offset = first_offset + i as i64;
        assert_eq!(
            g.offset, want_offset,
            "record #{i}: offsets are not dense/in order (got offset {}, expected {want_offset})",
            g.offset
        );
        assert_record_eq(e, g, &format!("record #{i} at offset {}", g.offset));
    }
}

/// Asserts key, value, headers and (if set) CreateTime timestamp are identical.
pub fn assert_record_eq(e: &TestRecord, g: &Consumed, what: &str) {
    assert_eq!(g.key, e.key, "{what}: key differs");
    assert_eq!(g.value, e.value, "{what}: value differs");
    assert_eq!(g.headers, e.headers, "{what}: headers differ");
    if let Some(ts) = e.timestamp {
        assert_eq!(
            g.timestamp,
            Timestamp::CreateTime(ts),
            "{what}: timestamp differs"
        );
    }
}
