//! Tests of `PartitionLog` (append, read, roll, recovery, indexes, truncation, flushing).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder, TimestampType};
use proptest::prelude::*;

use crate::log::batch::test_util::{encode_batch, idempotent_batch, simple_batch};
use crate::log::batch::{self, split_and_validate, BatchHeader};
use crate::log::index::{OffsetPosition, TimestampOffset};
use crate::log::producer_state::ProducerBatch;
use crate::log::{AppendInfo, LogConfig, LogError, PartitionLog, ProducerStateError};

/// A log under test plus a model of what it must contain: the stored bytes of every batch.
struct Harness {
    dir: tempfile::TempDir,
    config: LogConfig,
    log: Option<PartitionLog>,
    batches: Vec<Vec<u8>>,
}

impl Harness {
    fn new(config: LogConfig) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(&Self::path_in(&dir), config.clone(), 0).unwrap();
        Harness {
            dir,
            config,
            log: Some(log),
            batches: Vec::new(),
        }
    }

    fn path_in(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("topic-0")
    }

    fn path(&self) -> PathBuf {
        Self::path_in(&self.dir)
    }

    fn log(&self) -> &PartitionLog {
        self.log.as_ref().expect("log is open")
    }

    fn log_mut(&mut self) -> &mut PartitionLog {
        self.log.as_mut().expect("log is open")
    }

    /// Appends `raw` (one or more batches) at `now_ms` and records the stored bytes.
    fn append_at(&mut self, raw: Vec<u8>, now_ms: i64) -> AppendInfo {
        self.append_with(raw, 3, None, now_ms)
    }

    fn append(&mut self, raw: Vec<u8>) -> AppendInfo {
        self.append_at(raw, 0)
    }

    fn append_with(
        &mut self,
        mut raw: Vec<u8>,
        epoch: i32,
        log_append_time_ms: Option<i64>,
        now_ms: i64,
    ) -> AppendInfo {
        let headers = split_and_validate(&raw, self.config.max_batch_bytes).unwrap();
        let info = self
            .log_mut()
            .append(&mut raw, &headers, epoch, log_append_time_ms, now_ms)
            .unwrap();
        let mut position = 0;
        for header in &headers {
            let end = position + header.total_len_bytes();
            self.batches.push(raw[position..end].to_vec());
            position = end;
        }
        info
    }

    /// Drops the log without closing it (a crash, as far as the files are concerned).
    fn crash(&mut self) {
        self.log = None;
    }

    fn close(&mut self) {
        self.log_mut().close().unwrap();
        self.log = None;
    }

    fn reopen(&mut self) {
        assert!(self.log.is_none(), "close or crash first");
        self.log = Some(PartitionLog::open(&self.path(), self.config.clone(), 0).unwrap());
    }

    /// Keeps only the first `n` model batches (after a recovery drops the rest).
    fn forget_after(&mut self, n: usize) {
        self.batches.truncate(n);
    }

    fn expected_end(&self) -> i64 {
        self.batches
            .last()
            .map_or(0, |b| BatchHeader::parse(b).unwrap().next_offset())
    }

    /// Reads the whole log with `max_bytes` per read and checks it equals the model.
    fn check_contents(&self, max_bytes: usize) {
        let log = self.log();
        assert_eq!(log.log_end_offset(), self.expected_end());
        let mut offset = log.log_start_offset();
        let mut got = Vec::new();
        while offset < log.log_end_offset() {
            let bytes = log.read(offset, max_bytes, i64::MAX).unwrap();
            assert!(!bytes.is_empty(), "empty read at {offset}");
            let batches = split_stored(&bytes);
            // Whole batches only, within max_bytes unless a single one is bigger.
            assert!(batches.len() == 1 || bytes.len() <= max_bytes);
            offset = BatchHeader::parse(batches.last().unwrap())
                .unwrap()
                .next_offset();
            got.extend(batches);
        }
        assert_eq!(got.len(), self.batches.len());
        for (i, (got, want)) in got.iter().zip(&self.batches).enumerate() {
            assert!(got == want, "batch {i} differs");
        }
        assert!(log.read(offset, max_bytes, i64::MAX).unwrap().is_empty());
    }

    fn segment_file(&self, index: usize, extension: &str) -> PathBuf {
        let base = self.log().segment_base_offsets()[index];
        self.path()
            .join(crate::log::segment::file_name(base, extension))
    }
}

fn split_stored(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut position = 0;
    while position < bytes.len() {
        let header = BatchHeader::parse(&bytes[position..]).unwrap();
        let end = position + header.total_len_bytes();
        assert!(end <= bytes.len(), "partial batch in read result");
        batch::verify_crc(&bytes[position..end]).unwrap();
        out.push(bytes[position..end].to_vec());
        position = end;
    }
    out
}

fn small_config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 100,
        ..LogConfig::default()
    }
}

fn base_of(bytes: &Bytes) -> i64 {
    BatchHeader::parse(bytes).unwrap().base_offset
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

/// Every read result and timestamp lookup the log can give, for before/after comparisons.
fn snapshot(log: &PartitionLog) -> (Vec<Bytes>, Vec<Option<(i64, i64)>>) {
    let reads = (log.log_start_offset()..=log.log_end_offset())
        .map(|o| log.read(o, 500, i64::MAX).unwrap())
        .collect();
    let lookups = (-1..2_100)
        .step_by(7)
        .map(|ts| log.offset_for_timestamp(ts).unwrap())
        .collect();
    (reads, lookups)
}

type IndexDump = Vec<(Vec<OffsetPosition>, Vec<TimestampOffset>)>;

fn index_dump(log: &PartitionLog) -> IndexDump {
    log.segments()
        .iter()
        .map(|s| (s.offset_index().entries(), s.time_index().entries()))
        .collect()
}

#[test]
fn append_read_round_trip_across_rolls() {
    let mut h = Harness::new(small_config(1_000));
    let mut expected_first = 0;
    for i in 0..60 {
        let count = 1 + i % 5;
        let info = h.append(simple_batch(count, 20 + i % 7, 1_000 + i as i64));
        assert_eq!(info.first_offset, expected_first);
        assert_eq!(info.last_offset, expected_first + count as i64 - 1);
        expected_first = info.last_offset + 1;
    }
    let log = h.log();
    assert!(log.segment_count() >= 4, "{} segments", log.segment_count());
    assert_eq!(log.log_start_offset(), 0);
    assert_eq!(log.log_end_offset(), expected_first);
    assert_eq!(
        log.size_bytes(),
        h.batches.iter().map(|b| b.len() as u64).sum::<u64>()
    );
    for segment in log.segments() {
        assert!(segment.size_bytes() <= 1_000);
    }
    // Segments start exactly on batch boundaries, offsets dense across them.
    let bases = log.segment_base_offsets();
    let batch_bases: Vec<i64> = h
        .batches
        .iter()
        .map(|b| BatchHeader::parse(b).unwrap().base_offset)
        .collect();
    for base in &bases {
        assert!(batch_bases.contains(base));
    }
    for (segment, next) in log.segments().iter().zip(bases.iter().skip(1)) {
        assert_eq!(segment.next_offset(), *next);
    }
    // Leader epoch stamped into every batch.
    for b in &h.batches {
        assert_eq!(BatchHeader::parse(b).unwrap().partition_leader_epoch, 3);
    }
    h.check_contents(1);
    h.check_contents(300);
    h.check_contents(1 << 20);
}

#[test]
fn multi_batch_append_assigns_consecutive_offsets() {
    let mut h = Harness::new(LogConfig::default());
    h.append(simple_batch(2, 5, 0));
    let mut two = simple_batch(3, 5, 0);
    two.extend(encode_batch(
        &[(1, b"x".to_vec()), (2, b"y".to_vec())],
        Compression::Zstd,
    ));
    let info = h.append(two);
    assert_eq!(
        info,
        AppendInfo {
            first_offset: 2,
            last_offset: 6,
            duplicate: None,
        }
    );
    let bases: Vec<i64> = h
        .batches
        .iter()
        .map(|b| BatchHeader::parse(b).unwrap().base_offset)
        .collect();
    assert_eq!(bases, vec![0, 2, 5]);
    h.check_contents(1 << 20);
    // kafka-protocol sees the right offsets in the stored compressed batch.
    let mut stored = h.log().read(5, 1 << 20, i64::MAX).unwrap();
    let decoded = RecordBatchDecoder::decode(&mut stored).unwrap();
    let offsets: Vec<i64> = decoded.records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, vec![5, 6]);
}

#[test]
fn read_from_middle_of_batch_returns_containing_batch() {
    let mut h = Harness::new(small_config(1 << 20));
    for _ in 0..4 {
        h.append(simple_batch(5, 10, 0));
    }
    for offset in 0..20 {
        let bytes = h.log().read(offset, 1, i64::MAX).unwrap();
        assert_eq!(base_of(&bytes), offset - offset % 5, "offset {offset}");
        assert_eq!(&bytes[..], &h.batches[offset as usize / 5][..]);
    }
}

#[test]
fn max_bytes_honoured_with_first_batch_whole() {
    let mut h = Harness::new(LogConfig::default());
    for _ in 0..3 {
        h.append(simple_batch(2, 100, 0));
    }
    let one = h.batches[0].len();
    let two = one + h.batches[1].len();
    let log = h.log();
    assert_eq!(log.read(0, 0, i64::MAX).unwrap().len(), one);
    assert_eq!(log.read(0, 1, i64::MAX).unwrap().len(), one);
    assert_eq!(log.read(0, two - 1, i64::MAX).unwrap().len(), one);
    assert_eq!(log.read(0, two, i64::MAX).unwrap().len(), two);
    assert_eq!(log.read(1, two, i64::MAX).unwrap().len(), two);
    assert_eq!(log.read(2, 1 << 20, i64::MAX).unwrap().len(), two);
}

#[test]
fn max_offset_exclusive_honoured() {
    let mut h = Harness::new(LogConfig::default());
    for _ in 0..3 {
        h.append(simple_batch(5, 10, 0));
    }
    let log = h.log();
    let len = |bytes: Bytes| split_stored(&bytes).len();
    assert_eq!(len(log.read(0, 1 << 20, 15).unwrap()), 3);
    assert_eq!(len(log.read(0, 1 << 20, 10).unwrap()), 2);
    assert_eq!(len(log.read(0, 1 << 20, 9).unwrap()), 1);
    assert_eq!(len(log.read(0, 1 << 20, 5).unwrap()), 1);
    // Never a batch holding records at or beyond the limit, even as the first batch.
    assert_eq!(len(log.read(0, 1 << 20, 4).unwrap()), 0);
    assert_eq!(len(log.read(10, 1 << 20, 10).unwrap()), 0);
    assert_eq!(len(log.read(7, 1 << 20, 12).unwrap()), 1);
}

#[test]
fn read_out_of_range() {
    let mut h = Harness::new(LogConfig::default());
    h.append(simple_batch(5, 10, 0));
    let log = h.log();
    assert!(log.read(5, 100, i64::MAX).unwrap().is_empty());
    for offset in [-1, 6, 100] {
        match log.read(offset, 100, i64::MAX) {
            Err(
                e @ LogError::OffsetOutOfRange {
                    log_start_offset: 0,
                    log_end_offset: 5,
                    ..
                },
            ) => assert_eq!(e.kafka_error_code(), 1),
            other => panic!("offset {offset}: {other:?}"),
        }
    }
}

#[test]
fn partition_log_can_be_shared_across_threads() {
    // The broker keeps logs behind an RwLock and reads from many tasks at once.
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PartitionLog>();
}

#[test]
fn lying_offset_index_is_not_followed() {
    let mut h = Harness::new(LogConfig {
        index_interval_bytes: 0,
        ..LogConfig::default()
    });
    for _ in 0..6 {
        h.append(simple_batch(2, 10, 0));
    }
    let index_file = h.segment_file(0, "index");
    h.close();
    // Entries name the last offset of batches 2, 3, ...: (3, p1), (5, p2), ... Make the first
    // one claim offset 1: it still loads (offsets increase), but following it for offset 1
    // would land on batch 2..=3 instead of batch 0..=1.
    let mut raw = fs::read(&index_file).unwrap();
    assert!(raw.len() >= 16);
    assert_eq!(raw[3], 3);
    raw[3] = 1;
    fs::write(&index_file, &raw).unwrap();
    h.reopen();
    assert_eq!(base_of(&h.log().read(1, 1, i64::MAX).unwrap()), 0);
    h.check_contents(1);
}

#[test]
fn fresh_empty_log() {
    let h = Harness::new(LogConfig::default());
    let log = h.log();
    assert_eq!(log.log_start_offset(), 0);
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.size_bytes(), 0);
    assert!(log.read(0, 100, i64::MAX).unwrap().is_empty());
    assert_eq!(log.offset_for_timestamp(0).unwrap(), None);
    assert!(h.path().join("00000000000000000000.log").exists());
}

#[test]
fn reopen_after_close_gives_identical_reads() {
    let mut h = Harness::new(small_config(700));
    for i in 0..40 {
        h.append(simple_batch(1 + i % 4, 30, 1_000 + 10 * i as i64));
    }
    let before = snapshot(h.log());
    let indexes = index_dump(h.log());
    let segments = h.log().segment_base_offsets();
    h.close();
    assert!(h.path().join("clean-shutdown").exists());
    h.reopen();
    assert!(!h.path().join("clean-shutdown").exists());
    assert_eq!(h.log().segment_base_offsets(), segments);
    assert_eq!(snapshot(h.log()), before);
    assert_eq!(index_dump(h.log()), indexes);
    assert_eq!(h.log().recovery_point(), h.expected_end());
    h.check_contents(256);
    // Appends continue where they left off, with the same index bookkeeping as before.
    let end = h.expected_end();
    assert_eq!(h.append(simple_batch(2, 30, 2_000)).first_offset, end);
    h.check_contents(1 << 20);
}

#[test]
fn append_after_close_fails() {
    let mut h = Harness::new(LogConfig::default());
    h.append(simple_batch(1, 1, 0));
    h.log_mut().close().unwrap();
    let mut raw = simple_batch(1, 1, 0);
    let headers = split_and_validate(&raw, 1 << 20).unwrap();
    let err = h
        .log_mut()
        .append(&mut raw, &headers, 0, None, 0)
        .unwrap_err();
    assert!(matches!(err, LogError::Closed { .. }), "{err}");
    assert!(h.log_mut().truncate_to(0).is_err());
    // Reads still work.
    assert!(!h.log().read(0, 1, i64::MAX).unwrap().is_empty());
}

#[test]
fn append_rejects_headers_not_matching_records() {
    let mut h = Harness::new(LogConfig::default());
    let a = simple_batch(2, 10, 0);
    let b = simple_batch(3, 10, 0);
    let headers_a = split_and_validate(&a, 1 << 20).unwrap();
    let mut both = a.clone();
    both.extend_from_slice(&b);
    // Headers cover only part of the buffer.
    let err = h
        .log_mut()
        .append(&mut both, &headers_a, 0, None, 0)
        .unwrap_err();
    assert!(matches!(err, LogError::InvalidArgument { .. }), "{err}");
    // Header of another batch.
    let headers_b = split_and_validate(&b, 1 << 20).unwrap();
    let mut a2 = a.clone();
    assert!(h.log_mut().append(&mut a2, &headers_b, 0, None, 0).is_err());
    assert!(h.log_mut().append(&mut a2, &[], 0, None, 0).is_err());
    assert_eq!(h.log().log_end_offset(), 0);
    assert_eq!(h.log().size_bytes(), 0);
}

#[test]
fn recovery_after_torn_tail() {
    let mut h = Harness::new(small_config(2_000));
    for i in 0..30 {
        h.append(simple_batch(3, 40, i));
    }
    let active = h.segment_file(h.log().segment_count() - 1, "log");
    let last_len = h.batches.last().unwrap().len() as u64;
    let torn_base = BatchHeader::parse(h.batches.last().unwrap())
        .unwrap()
        .base_offset;
    h.crash();
    let full = file_len(&active);
    let cut = full - last_len / 2;
    OpenOptions::new()
        .write(true)
        .open(&active)
        .unwrap()
        .set_len(cut)
        .unwrap();
    h.reopen();
    assert_eq!(file_len(&active), full - last_len);
    assert_eq!(h.log().log_end_offset(), torn_base);
    let n = h.batches.len();
    h.forget_after(n - 1);
    h.check_contents(1 << 20);
    assert_eq!(h.append(simple_batch(2, 5, 0)).first_offset, torn_base);
    h.check_contents(333);
    // And again after a clean restart.
    h.close();
    h.reopen();
    h.check_contents(333);
}

#[test]
fn recovery_after_garbage_appended() {
    let mut h = Harness::new(small_config(2_000));
    for i in 0..10 {
        h.append(simple_batch(2, 40, i));
    }
    let active = h.segment_file(h.log().segment_count() - 1, "log");
    let end = h.expected_end();
    h.crash();
    let before = file_len(&active);
    for garbage in [
        vec![0u8; 100],
        (0..200u32).map(|i| (i * 37) as u8).collect(),
    ] {
        OpenOptions::new()
            .append(true)
            .open(&active)
            .unwrap()
            .write_all(&garbage)
            .unwrap();
        h.reopen();
        assert_eq!(file_len(&active), before);
        assert_eq!(h.log().log_end_offset(), end);
        h.check_contents(1 << 20);
        h.crash();
    }
    h.reopen();
    assert_eq!(h.append(simple_batch(1, 5, 0)).first_offset, end);
    h.check_contents(1 << 20);
}

#[test]
fn recovery_detects_corrupt_crc_in_tail() {
    let mut h = Harness::new(small_config(1 << 20));
    for i in 0..10 {
        h.append(simple_batch(2, 40, i));
    }
    let log_file = h.segment_file(0, "log");
    // Flip a payload byte of batch 7 (of 10): batches 7.. are dropped.
    let offset_in_file: usize = h.batches[..7].iter().map(Vec::len).sum::<usize>() + 70;
    h.crash();
    let mut data = fs::read(&log_file).unwrap();
    data[offset_in_file] ^= 0x55;
    fs::write(&log_file, &data).unwrap();
    h.reopen();
    h.forget_after(7);
    assert_eq!(h.log().log_end_offset(), 14);
    h.check_contents(1 << 20);
    assert_eq!(h.append(simple_batch(1, 5, 0)).first_offset, 14);
}

#[test]
fn unclean_open_recovers_from_the_recovery_point_only() {
    let mut h = Harness::new(small_config(600));
    for i in 0..20 {
        h.append(simple_batch(2, 40, i));
    }
    assert!(h.log().segment_count() >= 3);
    // Rolls fsync the old segment and advance the recovery point to the new one.
    let active_base = *h.log().segment_base_offsets().last().unwrap();
    assert_eq!(h.log().recovery_point(), active_base);
    let first = h.segment_file(0, "log");
    let segments = h.log().segment_count();
    let end = h.expected_end();
    h.crash();
    let mut data = fs::read(&first).unwrap();
    data[h.batches[0].len() + 70] ^= 0x55; // payload of the second batch
    fs::write(&first, &data).unwrap();

    // Segment 0 is below the recovery point: trusted, not rescanned.
    h.reopen();
    assert_eq!(h.log().segment_count(), segments);
    assert_eq!(h.log().log_end_offset(), end);
    h.crash();

    // Without a recovery point everything is rescanned: the damage is found, the log is cut
    // after the first batch and all later segments go.
    fs::remove_file(h.path().join("recovery-point")).unwrap();
    h.reopen();
    assert_eq!(h.log().segment_count(), 1);
    h.forget_after(1);
    h.check_contents(1 << 20);
    assert_eq!(h.log().recovery_point(), 2);
    let dir_logs = fs::read_dir(h.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "log")
        })
        .count();
    assert_eq!(dir_logs, 1);
}

#[test]
fn recovery_rejects_non_dense_offsets() {
    let mut h = Harness::new(small_config(1 << 20));
    for i in 0..5 {
        h.append(simple_batch(2, 40, i));
    }
    let log_file = h.segment_file(0, "log");
    let end = h.expected_end();
    h.crash();
    // A well-formed batch (valid CRC: the base offset is outside it) that skips offsets,
    // followed by one that would be dense after it.
    let mut skipping = simple_batch(2, 40, 0);
    batch::set_base_offset(&mut skipping, end + 5).unwrap();
    let mut after = simple_batch(2, 40, 0);
    batch::set_base_offset(&mut after, end + 7).unwrap();
    let mut file = OpenOptions::new().append(true).open(&log_file).unwrap();
    file.write_all(&skipping).unwrap();
    file.write_all(&after).unwrap();
    drop(file);
    h.reopen();
    assert_eq!(h.log().log_end_offset(), end);
    h.check_contents(1 << 20);
    // A dense, valid batch written without its index entries is kept by recovery.
    h.crash();
    let mut dense = simple_batch(3, 40, 0);
    batch::set_base_offset(&mut dense, end).unwrap();
    OpenOptions::new()
        .append(true)
        .open(&log_file)
        .unwrap()
        .write_all(&dense)
        .unwrap();
    h.reopen();
    h.batches.push(dense);
    assert_eq!(h.log().log_end_offset(), end + 3);
    h.check_contents(1 << 20);
}

#[test]
fn rolled_segment_time_index_ends_with_its_max_timestamp() {
    // As in Kafka, an inactive segment's last time index entry is its largest timestamp, so
    // time-based retention can read it without a scan.
    let mut h = Harness::new(LogConfig {
        segment_bytes: 1_000,
        index_interval_bytes: 1 << 20, // no index entries while appending
        ..LogConfig::default()
    });
    for i in 0..20 {
        h.append(simple_batch(2, 30, [500, 100, 300][i % 3] + i as i64));
    }
    let log = h.log();
    assert!(log.segment_count() >= 3);
    let segments = log.segments();
    for segment in &segments[..segments.len() - 1] {
        let last = segment.time_index().entries().last().copied();
        let want_ts = segment.max_timestamp_ms();
        assert!(want_ts > 0);
        assert_eq!(last.map(|e| e.timestamp_ms), Some(want_ts));
    }
    assert!(segments.last().unwrap().time_index().is_empty());
}

#[test]
fn offset_gap_between_segments_is_corruption() {
    let mut h = Harness::new(small_config(500));
    for i in 0..20 {
        h.append(simple_batch(2, 40, i));
    }
    assert!(h.log().segment_count() >= 4);
    let bases = h.log().segment_base_offsets();
    let victim = [
        h.segment_file(1, "log"),
        h.segment_file(1, "index"),
        h.segment_file(1, "timeindex"),
    ];
    h.crash();
    for path in &victim {
        fs::remove_file(path).unwrap();
    }
    h.reopen();
    // Segment 0 survives; everything after the gap is deleted.
    assert_eq!(h.log().segment_base_offsets(), vec![0]);
    assert_eq!(h.log().log_end_offset(), bases[1]);
    let keep = h
        .batches
        .iter()
        .take_while(|b| BatchHeader::parse(b).unwrap().base_offset < bases[1])
        .count();
    h.forget_after(keep);
    h.check_contents(1 << 20);
    assert!(!h
        .path()
        .join(crate::log::segment::file_name(bases[2], "log"))
        .exists());
}

#[test]
fn missing_and_garbled_indexes_are_rebuilt() {
    let mut h = Harness::new(LogConfig {
        segment_bytes: 3_000,
        index_interval_bytes: 150,
        ..LogConfig::default()
    });
    for i in 0..60 {
        // Non-monotonic timestamps exercise the time index's max-so-far logic.
        h.append(simple_batch(
            1 + i % 3,
            30,
            1_000 + ((i * 37) % 50) as i64 * 20,
        ));
    }
    assert!(h.log().segment_count() >= 3);
    let indexes = index_dump(h.log());
    assert!(indexes.iter().all(|(o, t)| !o.is_empty() && !t.is_empty()));
    let before = snapshot(h.log());
    let files = [
        h.segment_file(0, "index"),
        h.segment_file(1, "timeindex"),
        h.segment_file(2, "index"),
        h.segment_file(2, "timeindex"),
    ];
    h.close();
    fs::remove_file(&files[0]).unwrap();
    fs::write(&files[1], [7u8; 13]).unwrap(); // not a multiple of 12
    let mut decreasing = Vec::new();
    for (rel, pos) in [(10u32, 500u32), (5, 900)] {
        decreasing.extend_from_slice(&rel.to_be_bytes());
        decreasing.extend_from_slice(&pos.to_be_bytes());
    }
    fs::write(&files[2], decreasing).unwrap();
    fs::remove_file(&files[3]).unwrap();
    h.reopen();
    assert_eq!(index_dump(h.log()), indexes);
    assert_eq!(snapshot(h.log()), before);
    for file in &files {
        assert!(file.exists());
    }
    // Same after an unclean restart with every index gone.
    h.crash();
    for entry in fs::read_dir(h.path()).unwrap() {
        let path = entry.unwrap().path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ext == "index" || ext == "timeindex" {
            fs::remove_file(path).unwrap();
        }
    }
    fs::remove_file(h.path().join("recovery-point")).unwrap();
    h.reopen();
    assert_eq!(index_dump(h.log()), indexes);
    assert_eq!(snapshot(h.log()), before);
}

fn timestamp_log(compression: Compression, config: LogConfig) -> Harness {
    let mut h = Harness::new(config);
    // Offsets 0..3: ts 100, 300, 200, 400; offsets 4..5: ts 50, 60; offsets 6..8: 500, 450, 700.
    h.append(encode_batch(
        &[
            (100, b"a".to_vec()),
            (300, b"b".to_vec()),
            (200, b"c".to_vec()),
            (400, b"d".to_vec()),
        ],
        compression,
    ));
    h.append(encode_batch(
        &[(50, b"e".to_vec()), (60, b"f".to_vec())],
        compression,
    ));
    h.append(encode_batch(
        &[
            (500, b"g".to_vec()),
            (450, b"h".to_vec()),
            (700, b"i".to_vec()),
        ],
        compression,
    ));
    h
}

#[test]
fn offset_for_timestamp_all_codecs() {
    for compression in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        for config in [
            LogConfig::default(),
            // Index entry at every batch and a segment per batch.
            LogConfig {
                segment_bytes: 1,
                index_interval_bytes: 0,
                ..LogConfig::default()
            },
        ] {
            let h = timestamp_log(compression, config);
            let find = |ts| h.log().offset_for_timestamp(ts).unwrap();
            let cases = [
                (-5, Some((0, 100))),
                (0, Some((0, 100))),
                (55, Some((0, 100))),
                (100, Some((0, 100))),
                (101, Some((1, 300))),
                (300, Some((1, 300))),
                (301, Some((3, 400))),
                (400, Some((3, 400))),
                (401, Some((6, 500))),
                (460, Some((6, 500))),
                (501, Some((8, 700))),
                (700, Some((8, 700))),
                (701, None),
            ];
            for (ts, want) in cases {
                assert_eq!(find(ts), want, "{compression:?} ts {ts}");
            }
        }
    }
}

#[test]
fn offset_for_timestamp_with_log_append_time() {
    let mut h = Harness::new(small_config(1_000));
    h.append_with(simple_batch(3, 10, 100), 1, Some(5_000), 0);
    h.append_with(
        encode_batch(&[(1, b"x".to_vec()), (2, b"y".to_vec())], Compression::Gzip),
        1,
        Some(6_000),
        0,
    );
    let log = h.log();
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, 5_000)));
    assert_eq!(log.offset_for_timestamp(5_000).unwrap(), Some((0, 5_000)));
    assert_eq!(log.offset_for_timestamp(5_001).unwrap(), Some((3, 6_000)));
    assert_eq!(log.offset_for_timestamp(6_001).unwrap(), None);
    // Stored batches are valid LogAppendTime batches.
    for b in &h.batches {
        batch::verify_crc(b).unwrap();
        let header = BatchHeader::parse(b).unwrap();
        assert!(header.is_log_append_time());
        assert_eq!(header.partition_leader_epoch, 1);
        let decoded = RecordBatchDecoder::decode(&mut Bytes::from(b.clone())).unwrap();
        assert!(decoded
            .records
            .iter()
            .all(|r| r.timestamp_type == TimestampType::LogAppend));
    }
}

#[test]
fn truncate_to_then_append() {
    let mut h = Harness::new(small_config(600));
    for i in 0..20 {
        h.append(simple_batch(3, 40, i));
    }
    let bases = h.log().segment_base_offsets();
    assert!(bases.len() >= 3);
    // Offset 31 is inside the batch 30..=32: the whole batch goes.
    h.log_mut().truncate_to(31).unwrap();
    assert_eq!(h.log().log_end_offset(), 30);
    h.forget_after(10);
    h.check_contents(1 << 20);
    assert!(h.log().recovery_point() <= 30);
    // The lowered recovery point is on disk too.
    let stored = fs::read_to_string(h.path().join("recovery-point")).unwrap();
    let stored: i64 = stored.lines().nth(1).unwrap().parse().unwrap();
    assert!(stored <= 30, "stored recovery point {stored}");
    assert!(h.log().segment_base_offsets().iter().all(|b| *b <= 30));
    assert!(!h
        .path()
        .join(crate::log::segment::file_name(
            *bases.last().unwrap(),
            "log"
        ))
        .exists());
    // No-op when at or beyond the end.
    h.log_mut().truncate_to(30).unwrap();
    h.log_mut().truncate_to(1_000).unwrap();
    assert_eq!(h.log().log_end_offset(), 30);

    assert_eq!(h.append(simple_batch(2, 40, 0)).first_offset, 30);
    for i in 0..10 {
        h.append(simple_batch(3, 40, i));
    }
    h.check_contents(1 << 20);
    assert_eq!(
        h.log().offset_for_timestamp(0).unwrap(),
        Some((0, 0)),
        "time index after truncation"
    );
    // Survives an unclean restart (the lowered recovery point makes it rescan).
    h.crash();
    h.reopen();
    h.check_contents(1 << 20);

    // Truncating to a segment's base offset empties that segment but keeps it.
    let bases = h.log().segment_base_offsets();
    let base = bases[1];
    let keep = h
        .batches
        .iter()
        .take_while(|b| BatchHeader::parse(b).unwrap().base_offset < base)
        .count();
    h.log_mut().truncate_to(base).unwrap();
    h.forget_after(keep);
    assert_eq!(h.log().segment_base_offsets(), vec![0, base]);
    h.check_contents(1 << 20);
    // Truncating to 0 empties the log.
    h.log_mut().truncate_to(0).unwrap();
    h.forget_after(0);
    assert_eq!(h.log().log_end_offset(), 0);
    assert_eq!(h.log().size_bytes(), 0);
    assert_eq!(h.append(simple_batch(1, 1, 0)).first_offset, 0);
    h.check_contents(1 << 20);
}

#[test]
fn segment_ms_roll() {
    let mut h = Harness::new(LogConfig {
        segment_ms: 1_000,
        ..LogConfig::default()
    });
    // An empty active segment never rolls, however old.
    h.append_at(simple_batch(1, 10, 0), 50_000);
    h.append_at(simple_batch(1, 10, 0), 50_999);
    assert_eq!(h.log().segment_count(), 1);
    h.append_at(simple_batch(1, 10, 0), 51_000);
    assert_eq!(h.log().segment_base_offsets(), vec![0, 2]);
    h.append_at(simple_batch(1, 10, 0), 51_500);
    assert_eq!(h.log().segment_count(), 2);
    h.append_at(simple_batch(1, 10, 0), 52_000);
    assert_eq!(h.log().segment_base_offsets(), vec![0, 2, 4]);
    h.check_contents(1 << 20);
}

#[test]
fn oversized_batch_goes_alone_into_a_fresh_segment() {
    let mut h = Harness::new(small_config(300));
    h.append(simple_batch(1, 10, 0));
    h.append(simple_batch(5, 200, 0)); // > 300 bytes
    h.append(simple_batch(1, 10, 0));
    assert_eq!(h.log().segment_base_offsets(), vec![0, 1, 6]);
    assert!(h.log().segments()[1].size_bytes() > 300);
    h.check_contents(1);
}

#[test]
fn append_enforces_max_batch_bytes() {
    let mut h = Harness::new(LogConfig {
        max_batch_bytes: 200,
        ..LogConfig::default()
    });
    let mut raw = simple_batch(5, 100, 0);
    let headers = split_and_validate(&raw, 1 << 20).unwrap();
    let err = h
        .log_mut()
        .append(&mut raw, &headers, 0, None, 0)
        .unwrap_err();
    assert_eq!(err.kafka_error_code(), 10, "{err}");
}

#[test]
fn flush_messages_policy() {
    let mut h = Harness::new(LogConfig {
        flush_messages: 5,
        ..LogConfig::default()
    });
    let read_point = |h: &Harness| fs::read_to_string(h.path().join("recovery-point")).ok();
    h.append(simple_batch(2, 10, 0));
    h.append(simple_batch(2, 10, 0));
    assert_eq!(h.log().recovery_point(), 0);
    h.append(simple_batch(2, 10, 0));
    assert_eq!(h.log().recovery_point(), 6);
    assert_eq!(read_point(&h).as_deref(), Some("0\n6\n"));
    h.append(simple_batch(4, 10, 0));
    assert_eq!(h.log().recovery_point(), 6);
    h.log_mut().flush().unwrap();
    assert_eq!(h.log().recovery_point(), 10);
    // The file is rewritten at most once a minute by flushes (Kafka's checkpoint interval); a
    // stale value only widens recovery. Close writes the current one.
    assert_eq!(read_point(&h).as_deref(), Some("0\n6\n"));
    h.log_mut().close().unwrap();
    assert_eq!(read_point(&h).as_deref(), Some("0\n10\n"));
}

#[test]
fn maybe_flush_policy() {
    let mut h = Harness::new(LogConfig {
        flush_ms: 1_000,
        ..LogConfig::default()
    });
    h.append(simple_batch(3, 10, 0));
    h.log_mut().maybe_flush(999).unwrap();
    assert_eq!(h.log().recovery_point(), 0);
    h.log_mut().maybe_flush(1_000).unwrap();
    assert_eq!(h.log().recovery_point(), 3);
    h.append(simple_batch(3, 10, 0));
    h.log_mut().maybe_flush(1_999).unwrap();
    assert_eq!(h.log().recovery_point(), 3);
    h.log_mut().maybe_flush(2_000).unwrap();
    assert_eq!(h.log().recovery_point(), 6);

    // Default: never flushes on time.
    let mut d = Harness::new(LogConfig::default());
    d.append(simple_batch(3, 10, 0));
    d.log_mut().maybe_flush(i64::MAX).unwrap();
    assert_eq!(d.log().recovery_point(), 0);
}

#[test]
fn directory_housekeeping_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-3");
    fs::create_dir_all(&path).unwrap();
    fs::write(path.join("notes.log"), b"not a segment").unwrap();
    fs::write(path.join("123.log"), b"short name").unwrap();
    fs::write(path.join("00000000000000000999.index"), [0u8; 8]).unwrap();
    fs::write(path.join("00000000000000000999.timeindex"), [0u8; 12]).unwrap();
    fs::write(path.join("recovery-point.tmp"), b"0\n").unwrap();
    fs::write(path.join("recovery-point"), b"garbage").unwrap();
    let log = PartitionLog::open(&path, LogConfig::default(), 0).unwrap();
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.segment_base_offsets(), vec![0]);
    assert!(path.join("notes.log").exists());
    assert!(path.join("123.log").exists());
    assert!(!path.join("00000000000000000999.index").exists());
    assert!(!path.join("00000000000000000999.timeindex").exists());
    assert!(!path.join("recovery-point.tmp").exists());
}

#[test]
fn invalid_config_rejected() {
    let dir = tempfile::tempdir().unwrap();
    for config in [
        LogConfig {
            segment_bytes: 0,
            ..LogConfig::default()
        },
        LogConfig {
            flush_messages: 0,
            ..LogConfig::default()
        },
        LogConfig {
            segment_index_bytes: 4,
            ..LogConfig::default()
        },
    ] {
        assert!(matches!(
            PartitionLog::open(dir.path(), config, 0),
            Err(LogError::InvalidConfig { .. })
        ));
    }
}

#[test]
fn full_index_rolls_segment() {
    // Room for 2 offset index entries and 1 time index entry (24 bytes).
    let mut h = Harness::new(LogConfig {
        segment_index_bytes: 24,
        index_interval_bytes: 0,
        ..LogConfig::default()
    });
    for i in 0..10 {
        h.append(simple_batch(1, 10, i));
    }
    assert!(h.log().segment_count() > 1);
    for segment in h.log().segments() {
        assert!(segment.offset_index().len() <= 3 && segment.time_index().len() <= 2);
    }
    h.check_contents(1);
    h.close();
    h.reopen();
    h.check_contents(1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn reads_return_exactly_what_was_appended(
        batches in prop::collection::vec((1usize..8, 0usize..300, 0i64..10_000, 1usize..3), 1..40),
        segment_bytes in 100u64..3_000,
        index_interval_bytes in 0u64..600,
        max_bytes in 0usize..2_000,
    ) {
        let mut h = Harness::new(LogConfig {
            segment_bytes,
            index_interval_bytes,
            ..LogConfig::default()
        });
        for (count, value_bytes, ts, batches_per_append) in batches {
            let mut raw = Vec::new();
            for _ in 0..batches_per_append {
                raw.extend(simple_batch(count, value_bytes, ts));
            }
            h.append(raw);
        }
        h.check_contents(max_bytes);
        let before = snapshot(h.log());
        h.close();
        h.reopen();
        h.check_contents(max_bytes);
        prop_assert_eq!(&snapshot(h.log()), &before);
        h.crash();
        fs::remove_file(h.path().join("recovery-point")).unwrap();
        h.reopen();
        h.check_contents(max_bytes);
        prop_assert_eq!(&snapshot(h.log()), &before);
    }
}

// ---------------------------------------------------------------------------
// Idempotent producers
// ---------------------------------------------------------------------------

const PID: i64 = 4_000;

/// Appends without recording into the model, returning the log's verdict.
fn try_append(h: &mut Harness, mut raw: Vec<u8>) -> Result<AppendInfo, LogError> {
    let headers = split_and_validate(&raw, h.config.max_batch_bytes).unwrap();
    h.log_mut().append(&mut raw, &headers, 0, None, 0)
}

fn out_of_order(result: Result<AppendInfo, LogError>) -> bool {
    matches!(
        result,
        Err(LogError::Producer(
            ProducerStateError::OutOfOrderSequence { .. }
        ))
    )
}

#[test]
fn duplicate_batch_is_not_appended_and_gets_its_original_offsets() {
    let mut h = Harness::new(small_config(1 << 20));
    h.append(simple_batch(2, 10, 0));
    let first = h.append(idempotent_batch(PID, 0, 0, 3, 100));
    assert_eq!((first.first_offset, first.duplicate), (2, None));
    h.append(idempotent_batch(PID, 0, 3, 2, 200));
    let end = h.log().log_end_offset();

    let retry = try_append(&mut h, idempotent_batch(PID, 0, 0, 3, 100)).unwrap();
    assert_eq!((retry.first_offset, retry.last_offset), (2, 4));
    let duplicate = retry.duplicate.expect("the retry is a duplicate");
    assert_eq!(duplicate.producer_id, PID);
    assert_eq!(duplicate.max_timestamp_ms, 102);
    assert_eq!(h.log().log_end_offset(), end, "nothing written");
    h.check_contents(1 << 20);

    // A gap, an older epoch, and a new epoch not starting at 0 are refused, writing nothing.
    assert!(out_of_order(try_append(
        &mut h,
        idempotent_batch(PID, 0, 9, 1, 0)
    )));
    assert!(out_of_order(try_append(
        &mut h,
        idempotent_batch(PID, 1, 5, 1, 0)
    )));
    h.append(idempotent_batch(PID, 1, 0, 1, 300));
    assert!(matches!(
        try_append(&mut h, idempotent_batch(PID, 0, 5, 1, 0)),
        Err(LogError::Producer(
            ProducerStateError::InvalidProducerEpoch { .. }
        ))
    ));
    h.check_contents(1 << 20);
}

#[test]
fn every_batch_of_an_append_is_checked_before_anything_is_written() {
    let mut h = Harness::new(small_config(1 << 20));
    h.append(idempotent_batch(PID, 0, 0, 2, 0));
    let size_bytes = h.log().size_bytes();
    let mut raw = idempotent_batch(PID, 0, 2, 2, 0);
    raw.extend(idempotent_batch(PID, 0, 7, 1, 0));
    assert!(out_of_order(try_append(&mut h, raw)));
    assert_eq!(h.log().size_bytes(), size_bytes);
    assert_eq!(h.log().log_end_offset(), 2);
    // Both good: the second batch continues the first within one append.
    let mut raw = idempotent_batch(PID, 0, 2, 2, 0);
    raw.extend(idempotent_batch(PID, 0, 4, 1, 0));
    assert_eq!(h.append(raw).last_offset, 4);
    h.check_contents(1 << 20);
}

/// Builds a log with two producers (one past an epoch bump, one with more than five batches),
/// then returns it with the state it reached.
fn producer_log(config: LogConfig) -> Harness {
    let mut h = Harness::new(config);
    for i in 0..4 {
        h.append(idempotent_batch(PID, 0, i * 2, 2, 1_000));
    }
    h.append(idempotent_batch(PID, 1, 0, 3, 1_000));
    for i in 0..7 {
        h.append(idempotent_batch(PID + 1, 5, i, 1, 1_000));
        h.append(simple_batch(1, 10, 0));
    }
    h
}

/// What a reopened log must still know: duplicates, next sequences and fencing of both
/// producers.
fn assert_producers_remembered(h: &mut Harness) {
    let retry = try_append(h, idempotent_batch(PID, 1, 0, 3, 1_000)).unwrap();
    assert_eq!(retry.first_offset, 8);
    assert!(retry.duplicate.is_some());
    let retry = try_append(h, idempotent_batch(PID + 1, 5, 2, 1, 1_000)).unwrap();
    assert!(
        retry.duplicate.is_some(),
        "third of seven batches is cached"
    );
    assert!(out_of_order(try_append(
        h,
        idempotent_batch(PID + 1, 5, 1, 1, 1_000)
    )));
    assert!(matches!(
        try_append(h, idempotent_batch(PID, 0, 8, 1, 1_000)),
        Err(LogError::Producer(
            ProducerStateError::InvalidProducerEpoch { .. }
        ))
    ));
    let end = h.log().log_end_offset();
    assert_eq!(
        h.append(idempotent_batch(PID + 1, 5, 7, 1, 1_000))
            .first_offset,
        end
    );
}

#[test]
fn producer_state_survives_clean_close_through_its_snapshot() {
    let mut h = producer_log(small_config(300));
    assert!(h.log().segment_count() > 1, "spans segments");
    let before = h.log().producer_state().clone();
    let end = h.log().log_end_offset();
    h.close();
    let snapshot = h
        .path()
        .join(crate::log::segment::file_name(end, "snapshot"));
    assert!(
        snapshot.exists(),
        "clean close writes {}",
        snapshot.display()
    );
    h.reopen();
    assert_eq!(h.log().producer_state(), &before);
    assert!(!snapshot.exists(), "open consumes the snapshot");
    assert_producers_remembered(&mut h);
    h.check_contents(1 << 20);
}

#[test]
fn clean_open_uses_the_snapshot_and_falls_back_to_the_log_if_it_is_damaged() {
    let mut h = producer_log(small_config(300));
    let before = h.log().producer_state().clone();
    let end = h.log().log_end_offset();
    h.close();
    let snapshot = h
        .path()
        .join(crate::log::segment::file_name(end, "snapshot"));
    // A snapshot naming a producer that is not in the log: if it shows up, the snapshot was used.
    let mut planted = before.clone();
    planted.replay(&ProducerBatch::stored(
        &BatchHeader::parse(&idempotent_batch(77, 0, 0, 1, 1_000)).unwrap(),
    ));
    fs::write(&snapshot, planted.to_snapshot(end)).unwrap();
    h.reopen();
    assert!(h.log().producer_state().entry(77).is_some());
    h.close();
    let mut bytes = fs::read(&snapshot).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x55;
    fs::write(&snapshot, bytes).unwrap();
    h.reopen();
    assert_eq!(h.log().producer_state(), &before, "rebuilt from the log");
    assert_producers_remembered(&mut h);
}

#[test]
fn producer_state_is_rebuilt_from_the_log_after_a_crash() {
    let mut h = producer_log(small_config(300));
    let before = h.log().producer_state().clone();
    let end = h.log().log_end_offset();
    h.close();
    // A snapshot is not trusted without the clean-shutdown marker: plant one naming a producer
    // the log does not hold, and check it is ignored.
    let mut planted = before.clone();
    planted.replay(&ProducerBatch::stored(
        &BatchHeader::parse(&idempotent_batch(77, 0, 0, 1, 1_000)).unwrap(),
    ));
    let snapshot = h
        .path()
        .join(crate::log::segment::file_name(end, "snapshot"));
    fs::write(&snapshot, planted.to_snapshot(end)).unwrap();
    fs::remove_file(h.path().join("clean-shutdown")).unwrap();
    fs::remove_file(h.path().join("recovery-point")).unwrap();
    h.reopen();
    assert_eq!(h.log().producer_state(), &before);
    assert_producers_remembered(&mut h);
    // And after a plain crash.
    let before = h.log().producer_state().clone();
    h.crash();
    h.reopen();
    assert_eq!(h.log().producer_state(), &before);
}

#[test]
fn truncation_rebuilds_producer_state_from_what_is_left() {
    let mut h = Harness::new(small_config(300));
    for i in 0..8 {
        h.append(idempotent_batch(PID, 0, i * 2, 2, 1_000));
    }
    // Cut the last three batches (offsets 10..16).
    h.log_mut().truncate_to(10).unwrap();
    h.forget_after(5);
    assert_eq!(
        h.log().producer_state().entry(PID).unwrap().last_sequence(),
        9
    );
    // The cut batches are gone, so their sequences are new again, not duplicates.
    let info = h.append(idempotent_batch(PID, 0, 10, 2, 1_000));
    assert_eq!((info.first_offset, info.duplicate), (10, None));
    // A batch older than the cut is still a duplicate.
    let retry = try_append(&mut h, idempotent_batch(PID, 0, 8, 2, 1_000)).unwrap();
    assert_eq!(retry.first_offset, 8);
    h.check_contents(1 << 20);
}

#[test]
fn idle_producers_expire_on_open_and_on_request() {
    let config = LogConfig {
        producer_id_expiration_ms: 10_000,
        ..small_config(1 << 20)
    };
    let mut h = Harness::new(config.clone());
    h.append(idempotent_batch(PID, 0, 0, 1, 1_000));
    h.append(idempotent_batch(PID + 1, 0, 0, 1, 5_000));
    assert_eq!(h.log_mut().remove_expired_producers(10_999), 0);
    assert_eq!(h.log_mut().remove_expired_producers(11_000), 1);
    // Forgotten: a retry is appended again (as in Kafka, dedupe only covers live producers).
    let info = try_append(&mut h, idempotent_batch(PID, 0, 0, 1, 1_000)).unwrap();
    assert!(info.duplicate.is_none());
    h.crash();
    let log = PartitionLog::open(&h.path(), config, 15_000).unwrap();
    assert!(log.producer_state().is_empty(), "both expired by 15 s");
}

#[test]
fn duplicate_on_log_append_time_topic_reports_the_original_append_time() {
    let mut h = Harness::new(small_config(1 << 20));
    h.append_with(idempotent_batch(PID, 0, 0, 2, 1), 0, Some(777), 777);
    let mut raw = idempotent_batch(PID, 0, 0, 2, 1);
    let headers = split_and_validate(&raw, 1 << 20).unwrap();
    let retry = h
        .log_mut()
        .append(&mut raw, &headers, 0, Some(999), 999)
        .unwrap();
    assert_eq!(retry.duplicate.unwrap().max_timestamp_ms, 777);
}
