//! Tests of the partition-log primitives replication needs: the leader epoch cache as the log
//! keeps it, follower appends, truncation, full truncation and the high watermark.

use std::fs;
use std::path::Path;

use proptest::prelude::*;

use crate::log::batch::test_util::{idempotent_batch, simple_batch};
use crate::log::batch::{self, split_and_validate, BatchError, BatchHeader};
use crate::log::leader_epoch::{EpochEntry, LEADER_EPOCH_CHECKPOINT_FILE};
use crate::log::{
    AppendInfo, LogConfig, LogError, PartitionLog, Retention, HIGH_WATERMARK_FILE, UNDEFINED_EPOCH,
    UNDEFINED_EPOCH_OFFSET,
};

fn config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 100,
        ..LogConfig::default()
    }
}

fn open(dir: &Path, segment_bytes: u64) -> PartitionLog {
    PartitionLog::open(dir, config(segment_bytes), 0).unwrap()
}

/// Appends `raw` through the leader path at `epoch`.
fn lead(log: &mut PartitionLog, mut raw: Vec<u8>, epoch: i32) -> AppendInfo {
    let headers = split_and_validate(&raw, 1 << 20).unwrap();
    log.append(&mut raw, &headers, epoch, None, 0).unwrap()
}

/// Appends `batches` one-batch appends of `count` records each at `epoch`.
fn lead_batches(log: &mut PartitionLog, batches: usize, count: usize, epoch: i32) {
    for i in 0..batches {
        lead(log, simple_batch(count, 30, i as i64), epoch);
    }
}

fn epochs(log: &PartitionLog) -> Vec<(i32, i64)> {
    log.leader_epoch_cache()
        .entries()
        .iter()
        .map(|e| (e.epoch, e.start_offset))
        .collect()
}

/// The segments' data files, concatenated: what the log stores, byte for byte.
fn stored_bytes(log: &PartitionLog) -> Vec<u8> {
    log.segments()
        .iter()
        .flat_map(|s| fs::read(s.log_path()).unwrap())
        .collect()
}

/// Everything the leader serves from `from` on, as consecutive reads return it.
fn served_bytes(log: &PartitionLog, from: i64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offset = from;
    while offset < log.log_end_offset() {
        let bytes = log.read(offset, 1 << 20, i64::MAX).unwrap();
        let (headers, _) = batch::split_fetched(&bytes).unwrap();
        offset = headers.last().unwrap().next_offset();
        out.extend_from_slice(&bytes);
    }
    out
}

/// Fetches from `leader` into `follower` until both end at the same offset. Each fetch asks for
/// `max_bytes`; the `cuts` (taken modulo the fetched length + 1) chop fetched data short, to
/// put partial batches at the end of what the follower receives.
fn replicate(leader: &PartitionLog, follower: &mut PartitionLog, max_bytes: usize, cuts: &[usize]) {
    let mut cuts = cuts.iter();
    for _ in 0..100_000 {
        let fetch_offset = follower.log_end_offset();
        if fetch_offset == leader.log_end_offset() {
            follower.set_high_watermark(leader.high_watermark());
            return;
        }
        let bytes = leader.read(fetch_offset, max_bytes, i64::MAX).unwrap();
        let cut = cuts.next().map_or(bytes.len(), |c| c % (bytes.len() + 1));
        let info = follower.append_as_follower(&bytes[..cut], 0).unwrap();
        assert_eq!(info.first_offset, fetch_offset);
        assert_eq!(follower.log_end_offset(), info.last_offset + 1);
    }
    panic!("replication made no progress");
}

/// One batch of `count` records stored at `base_offset` by a leader in `epoch`.
fn stored_batch(base_offset: i64, epoch: i32, count: usize) -> Vec<u8> {
    let mut raw = simple_batch(count, 30, 0);
    batch::set_base_offset(&mut raw, base_offset).unwrap();
    batch::set_partition_leader_epoch(&mut raw, epoch).unwrap();
    raw
}

fn files_ending_with(dir: &Path, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(suffix))
        .collect();
    names.sort();
    names
}

#[test]
fn leader_append_assigns_each_new_epoch_at_its_first_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), 1 << 20);
    assert_eq!(log.latest_epoch(), None);
    assert_eq!(
        log.end_offset_for_epoch(0),
        (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)
    );
    lead_batches(&mut log, 3, 2, 0);
    lead_batches(&mut log, 2, 2, 2);
    lead_batches(&mut log, 1, 2, 5);
    assert_eq!(epochs(&log), vec![(0, 0), (2, 6), (5, 10)]);
    assert_eq!(log.latest_epoch(), Some(5));
    assert_eq!(log.end_offset_for_epoch(0), (0, 6));
    assert_eq!(log.end_offset_for_epoch(1), (0, 6));
    assert_eq!(log.end_offset_for_epoch(2), (2, 10));
    assert_eq!(
        log.end_offset_for_epoch(5),
        (5, 12),
        "latest epoch ends at the log end"
    );
    assert_eq!(
        log.end_offset_for_epoch(6),
        (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)
    );
    // The cache is on disk in Kafka's format as soon as the append returns.
    assert_eq!(
        fs::read_to_string(dir.path().join(LEADER_EPOCH_CHECKPOINT_FILE)).unwrap(),
        "0\n3\n0 0\n2 6\n5 10\n"
    );

    // A negative epoch is refused before anything is written.
    let end = log.log_end_offset();
    let mut raw = simple_batch(1, 1, 0);
    let headers = split_and_validate(&raw, 1 << 20).unwrap();
    assert!(matches!(
        log.append(&mut raw, &headers, -1, None, 0),
        Err(LogError::InvalidArgument { .. })
    ));
    assert_eq!(log.log_end_offset(), end);

    // A duplicate from an idempotent producer writes nothing, so it assigns no epoch either.
    lead(&mut log, idempotent_batch(7, 0, 0, 2, 0), 5);
    let info = lead(&mut log, idempotent_batch(7, 0, 0, 2, 0), 6);
    assert!(info.duplicate.is_some());
    assert_eq!(log.latest_epoch(), Some(5));
}

#[test]
fn assign_epoch_start_offset_marks_a_new_leaders_epoch_before_any_append() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), 1 << 20);
    lead_batches(&mut log, 5, 10, 0);
    lead_batches(&mut log, 1, 10, 1);
    log.assign_epoch_start_offset(3).unwrap();
    assert_eq!(epochs(&log), vec![(0, 0), (1, 50), (3, 60)]);
    // A follower that wrote in epoch 2, which this leader never saw, learns where epoch 1 ends.
    assert_eq!(log.end_offset_for_epoch(2), (1, 60));
    // Appending in that epoch adds nothing.
    lead_batches(&mut log, 1, 10, 3);
    assert_eq!(epochs(&log), vec![(0, 0), (1, 50), (3, 60)]);
    // An epoch assigned at the end without data goes when told to truncate there (as Kafka).
    log.assign_epoch_start_offset(4).unwrap();
    assert_eq!(log.latest_epoch(), Some(4));
    log.truncate_to(log.log_end_offset()).unwrap();
    assert_eq!(epochs(&log), vec![(0, 0), (1, 50), (3, 60)]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// The follower's log is the leader's log, byte for byte, whatever the fetch sizes, the
    /// partial batches at the end of fetched data and the two logs' segment sizes.
    #[test]
    fn follower_fed_leader_reads_in_any_chunking_is_byte_identical(
        appends in prop::collection::vec(
            (1usize..5, 0usize..200, 0u8..4, 1usize..3, prop::option::of(0i64..3)),
            1..40,
        ),
        leader_segment_bytes in 200u64..3_000,
        follower_segment_bytes in 200u64..3_000,
        max_bytes in 1usize..3_000,
        cuts in prop::collection::vec(any::<usize>(), 0..60),
    ) {
        let leader_dir = tempfile::tempdir().unwrap();
        let follower_dir = tempfile::tempdir().unwrap();
        let mut leader = open(leader_dir.path(), leader_segment_bytes);
        let mut follower = open(follower_dir.path(), follower_segment_bytes);
        let mut epoch = 0;
        let mut sequences = [0i32; 3];
        for (count, value_bytes, epoch_bump, batches, producer) in appends {
            // An epoch bump of 0 keeps the epoch, otherwise a new leader took over.
            epoch += i32::from(epoch_bump);
            let mut raw = Vec::new();
            for _ in 0..batches {
                match producer {
                    Some(p) => {
                        let pid = 1_000 + p;
                        let seq = &mut sequences[p as usize];
                        raw.extend(idempotent_batch(pid, 0, *seq, count, 5));
                        *seq += count as i32;
                    }
                    None => raw.extend(simple_batch(count, value_bytes, 7)),
                }
            }
            lead(&mut leader, raw, epoch);
        }
        leader.set_high_watermark(leader.log_end_offset());

        replicate(&leader, &mut follower, max_bytes, &cuts);
        prop_assert!(stored_bytes(&follower) == stored_bytes(&leader), "stored bytes differ");
        prop_assert_eq!(epochs(&follower), epochs(&leader));
        prop_assert_eq!(follower.producer_state(), leader.producer_state());
        prop_assert_eq!(follower.high_watermark(), leader.log_end_offset());

        // What the follower stored survives a clean restart, and a crash that loses the epoch
        // checkpoint (rebuilt from the batches).
        let expected_epochs = epochs(&leader);
        follower.close().unwrap();
        drop(follower);
        let follower = open(follower_dir.path(), follower_segment_bytes);
        prop_assert!(stored_bytes(&follower) == stored_bytes(&leader));
        prop_assert_eq!(epochs(&follower), expected_epochs.clone());
        prop_assert_eq!(follower.high_watermark(), leader.log_end_offset());
        drop(follower);
        fs::remove_file(follower_dir.path().join(LEADER_EPOCH_CHECKPOINT_FILE)).unwrap();
        let follower = open(follower_dir.path(), follower_segment_bytes);
        prop_assert_eq!(epochs(&follower), expected_epochs);
        prop_assert_eq!(follower.producer_state(), leader.producer_state());
    }
}

#[test]
fn divergent_tail_is_truncated_to_the_leaders_epoch_end_and_then_replicated() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let mut leader = open(leader_dir.path(), 1_000);
    let mut follower = open(follower_dir.path(), 700);
    // Both hold the same 40 records of epoch 0.
    lead_batches(&mut leader, 4, 10, 0);
    replicate(&leader, &mut follower, 1 << 20, &[]);
    // The follower went on alone: 10 more records in epoch 0 (from a leader that then
    // died), then 10 as leader of epoch 1 that nobody replicated.
    lead_batches(&mut follower, 1, 10, 0);
    lead_batches(&mut follower, 1, 10, 1);
    // Meanwhile the leader of epoch 2 took over at offset 40.
    lead_batches(&mut leader, 3, 10, 2);
    assert_eq!(epochs(&follower), vec![(0, 0), (1, 50)]);
    assert_eq!(epochs(&leader), vec![(0, 0), (2, 40)]);

    // Kafka's follower: ask the leader where the follower's latest epoch ends ...
    let (leader_epoch, leader_end) = leader.end_offset_for_epoch(follower.latest_epoch().unwrap());
    assert_eq!((leader_epoch, leader_end), (0, 40));
    // ... and truncate to the smaller of that and its own end of the epoch the leader named.
    let (_, follower_end) = follower.end_offset_for_epoch(leader_epoch);
    assert_eq!(follower_end, 50);
    follower.truncate_to(leader_end.min(follower_end)).unwrap();
    assert_eq!(follower.log_end_offset(), 40);
    assert_eq!(epochs(&follower), vec![(0, 0)]);

    replicate(&leader, &mut follower, 700, &[]);
    assert!(stored_bytes(&follower) == stored_bytes(&leader));
    assert_eq!(epochs(&follower), vec![(0, 0), (2, 40)]);
    assert_eq!(follower.producer_state(), leader.producer_state());
}

#[test]
fn truncate_to_cuts_the_epoch_cache_and_lowers_the_high_watermark_durably() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), 1 << 20);
    lead_batches(&mut log, 2, 5, 0);
    lead_batches(&mut log, 2, 5, 1);
    lead_batches(&mut log, 2, 5, 2);
    assert_eq!(log.set_high_watermark(25), 25);
    log.checkpoint_high_watermark().unwrap();

    log.truncate_to(15).unwrap();
    assert_eq!(log.log_end_offset(), 15);
    assert_eq!(epochs(&log), vec![(0, 0), (1, 10)]);
    assert_eq!(log.high_watermark(), 15);
    // Offset 12 is inside the batch 10..=14, which goes whole, and with it epoch 1's start.
    log.truncate_to(12).unwrap();
    assert_eq!(log.log_end_offset(), 10);
    assert_eq!(epochs(&log), vec![(0, 0)]);
    assert_eq!(log.high_watermark(), 10);
    drop(log); // crash: the lowered high watermark and cache are already on disk
    let text = fs::read_to_string(dir.path().join(HIGH_WATERMARK_FILE)).unwrap();
    assert_eq!(text, "0\n10\n");
    let log = open(dir.path(), 1 << 20);
    assert_eq!((log.log_end_offset(), log.high_watermark()), (10, 10));
    assert_eq!(epochs(&log), vec![(0, 0)]);
}

#[test]
fn high_watermark_is_clamped_to_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), 1 << 20);
    assert_eq!(log.high_watermark(), 0);
    assert_eq!(log.set_high_watermark(5), 0, "empty log");
    lead_batches(&mut log, 4, 5, 0);
    assert_eq!(log.set_high_watermark(7), 7);
    assert_eq!(log.set_high_watermark(100), 20);
    assert_eq!(log.set_high_watermark(-3), 0);
    // It may move down (a follower takes the leader's value).
    log.set_high_watermark(12);
    assert_eq!(log.set_high_watermark(9), 9);
    // Raised with the log start.
    log.advance_log_start_offset(15).unwrap();
    assert_eq!(log.high_watermark(), 15);
    assert_eq!(log.set_high_watermark(3), 15);
}

#[test]
fn epoch_cache_and_high_watermark_survive_clean_and_unclean_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let one_batch = simple_batch(5, 30, 0).len() as u64;
    let segment_bytes = one_batch * 3;
    let mut log = open(&path, segment_bytes);
    lead_batches(&mut log, 4, 5, 0);
    lead_batches(&mut log, 4, 5, 3);
    lead_batches(&mut log, 2, 5, 4);
    let expected = vec![(0, 0), (3, 20), (4, 40)];
    assert_eq!(epochs(&log), expected);
    log.set_high_watermark(33);

    // Clean.
    log.close().unwrap();
    drop(log);
    let mut log = open(&path, segment_bytes);
    assert_eq!(epochs(&log), expected);
    assert_eq!(log.high_watermark(), 33);

    // Unclean, after a checkpoint.
    log.set_high_watermark(45);
    log.checkpoint_high_watermark().unwrap();
    drop(log);
    let log = open(&path, segment_bytes);
    assert_eq!(epochs(&log), expected);
    assert_eq!(log.high_watermark(), 45);
    assert_eq!(log.log_end_offset(), 50);

    // Unclean, with a torn tail that recovery cuts off: the last batch (50..=54) is the only
    // one of epoch 7, which must leave the cache; the high watermark must not stay above the
    // recovered end.
    let mut log = log;
    lead_batches(&mut log, 1, 5, 7);
    assert_eq!(log.latest_epoch(), Some(7));
    log.set_high_watermark(55);
    log.checkpoint_high_watermark().unwrap();
    let active = log.segments().last().unwrap().log_path().to_path_buf();
    drop(log);
    let len = fs::metadata(&active).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&active)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    let log = open(&path, segment_bytes);
    assert_eq!(log.log_end_offset(), 50);
    assert_eq!(epochs(&log), expected);
    assert_eq!(log.high_watermark(), 50);
    assert_eq!(
        log.end_offset_for_epoch(7),
        (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)
    );
    drop(log);

    // A corrupt checkpoint is rebuilt from the batches; a missing high watermark file means
    // the log start.
    fs::write(path.join(LEADER_EPOCH_CHECKPOINT_FILE), "0\n9\nnonsense\n").unwrap();
    fs::remove_file(path.join(HIGH_WATERMARK_FILE)).unwrap();
    let log = open(&path, segment_bytes);
    assert_eq!(epochs(&log), expected);
    assert_eq!(log.high_watermark(), log.log_start_offset());
    assert_eq!(
        fs::read_to_string(path.join(LEADER_EPOCH_CHECKPOINT_FILE)).unwrap(),
        "0\n3\n0 0\n3 20\n4 40\n",
        "the rebuilt cache is saved"
    );
}

#[test]
fn delete_records_and_retention_truncate_the_cache_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let one_batch = simple_batch(5, 30, 0).len() as u64;
    let mut log = open(&path, one_batch * 2);
    lead_batches(&mut log, 2, 5, 0);
    lead_batches(&mut log, 4, 5, 1);
    lead_batches(&mut log, 2, 5, 2);
    assert_eq!(epochs(&log), vec![(0, 0), (1, 10), (2, 30)]);
    log.advance_log_start_offset(12).unwrap();
    assert_eq!(epochs(&log), vec![(1, 12), (2, 30)]);
    assert_eq!(log.high_watermark(), 12, "raised to the log start");
    // Retention by size: keep the last segment (offsets 30..40).
    let kept_bytes = i64::try_from(one_batch * 2).unwrap();
    let outcome = log
        .delete_old_segments(
            Retention {
                retention_ms: -1,
                retention_bytes: kept_bytes,
            },
            0,
        )
        .unwrap();
    assert_eq!(outcome.log_start_offset, 30);
    assert_eq!(epochs(&log), vec![(2, 30)]);
    // The leader's answer for an epoch it no longer holds sends the follower to the start.
    assert_eq!(log.end_offset_for_epoch(1), (1, 30));
    drop(log);
    let log = open(&path, one_batch * 2);
    assert_eq!(epochs(&log), vec![(2, 30)]);
}

#[test]
fn truncate_fully_and_start_at_then_follow_the_leader_from_its_log_start() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let follower_path = follower_dir.path().join("t-0");
    let mut leader = open(leader_dir.path(), 800);
    lead_batches(&mut leader, 3, 5, 0);
    lead_batches(&mut leader, 3, 5, 1);
    lead_batches(&mut leader, 3, 5, 4);
    leader.advance_log_start_offset(20).unwrap();
    assert_eq!(epochs(&leader), vec![(1, 20), (4, 30)]);

    // A follower with old history of its own, idempotent producer included.
    let mut follower = open(&follower_path, 500);
    lead_batches(&mut follower, 3, 4, 0);
    lead(&mut follower, idempotent_batch(9, 0, 0, 3, 0), 0);
    follower.set_high_watermark(10);
    // Its fetch offset (15) is below the leader's log start: start over there.
    assert!(matches!(
        leader.read(follower.log_end_offset(), 1 << 20, i64::MAX),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    follower.truncate_fully_and_start_at(20).unwrap();
    assert_eq!(
        (
            follower.log_start_offset(),
            follower.log_end_offset(),
            follower.high_watermark(),
            follower.recovery_point()
        ),
        (20, 20, 20, 20)
    );
    assert_eq!(follower.segment_base_offsets(), vec![20]);
    assert!(epochs(&follower).is_empty());
    assert!(follower.producer_state().is_empty());
    assert_eq!(
        files_ending_with(&follower_path, ".log"),
        vec!["00000000000000000020.log"]
    );
    assert!(files_ending_with(&follower_path, ".deleted").is_empty());
    assert!(matches!(
        follower.read(19, 1 << 20, i64::MAX),
        Err(LogError::OffsetOutOfRange { .. })
    ));

    replicate(&leader, &mut follower, 300, &[]);
    assert!(stored_bytes(&follower) == served_bytes(&leader, 20));
    assert_eq!(epochs(&follower), epochs(&leader));

    // Both restarts keep it.
    follower.close().unwrap();
    drop(follower);
    let follower = open(&follower_path, 500);
    assert_eq!(follower.log_start_offset(), 20);
    assert_eq!(epochs(&follower), epochs(&leader));
    drop(follower);
    let mut follower = open(&follower_path, 500);
    assert!(stored_bytes(&follower) == served_bytes(&leader, 20));

    // And it keeps taking appends, as a follower and as a leader.
    lead_batches(&mut leader, 1, 5, 4);
    replicate(&leader, &mut follower, 300, &[]);
    lead_batches(&mut follower, 1, 5, 6);
    assert_eq!(epochs(&follower), vec![(1, 20), (4, 30), (6, 50)]);
}

#[test]
fn crash_during_full_truncation_leaves_a_log_that_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let mut log = open(&path, 300);
    lead_batches(&mut log, 6, 5, 0);
    assert!(log.segment_count() > 2);
    // As if the process died right after the segments were renamed (the step that makes them
    // deleted as far as recovery is concerned).
    for segment in log.segments() {
        let from = segment.log_path();
        let mut to = from.as_os_str().to_owned();
        to.push(".deleted");
        fs::rename(from, to).unwrap();
    }
    drop(log);
    let mut log = open(&path, 300);
    assert!(files_ending_with(&path, ".deleted").is_empty());
    assert_eq!(log.log_end_offset(), log.log_start_offset());
    assert!(epochs(&log).is_empty());
    log.truncate_fully_and_start_at(30).unwrap();
    lead_batches(&mut log, 1, 5, 1);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (30, 35));
}

#[test]
fn follower_starting_inside_a_leader_batch_restarts_at_the_batch_and_keeps_its_start() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let mut leader = open(leader_dir.path(), 1 << 20);
    lead_batches(&mut leader, 2, 5, 0);
    lead_batches(&mut leader, 2, 5, 3);
    // DeleteRecords inside the batch 10..=14.
    leader.advance_log_start_offset(12).unwrap();
    assert_eq!(epochs(&leader), vec![(3, 12)]);

    let mut follower = open(follower_dir.path(), 1 << 20);
    follower
        .truncate_fully_and_start_at(leader.log_start_offset())
        .unwrap();
    let fetched = leader.read(12, 1 << 20, i64::MAX).unwrap();
    assert_eq!(BatchHeader::parse(&fetched).unwrap().base_offset, 10);
    let info = follower.append_as_follower(&fetched, 0).unwrap();
    assert_eq!((info.first_offset, info.last_offset), (10, 19));
    assert_eq!(follower.log_start_offset(), 12);
    assert_eq!(follower.log_end_offset(), 20);
    assert_eq!(epochs(&follower), epochs(&leader));
    assert!(matches!(
        follower.read(11, 1 << 20, i64::MAX),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert!(stored_bytes(&follower) == served_bytes(&leader, 12));
    drop(follower);
    let follower = open(follower_dir.path(), 1 << 20);
    assert_eq!(follower.log_start_offset(), 12);
    assert_eq!(epochs(&follower), vec![(3, 12)]);

    // The exception is for an empty log only: a log holding data gets the error.
    let other_dir = tempfile::tempdir().unwrap();
    let mut other = open(other_dir.path(), 1 << 20);
    other
        .append_as_follower(&stored_batch(0, 0, 12), 0)
        .unwrap();
    assert!(matches!(
        other.append_as_follower(&fetched, 0),
        Err(LogError::UnexpectedAppendOffset {
            expected_offset: 12,
            base_offset: 10,
            last_offset: 14,
        })
    ));
}

/// Everything a rejected follower append must leave untouched.
fn observable(log: &PartitionLog) -> (Vec<u8>, i64, Vec<(i32, i64)>, String, usize) {
    (
        stored_bytes(log),
        log.log_end_offset(),
        epochs(log),
        fs::read_to_string(log.dir().join(LEADER_EPOCH_CHECKPOINT_FILE)).unwrap(),
        log.producer_state().len(),
    )
}

#[test]
fn follower_append_with_a_gap_or_a_corrupt_batch_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), 1 << 20);
    let info = log.append_as_follower(&stored_batch(0, 0, 10), 0).unwrap();
    assert_eq!((info.first_offset, info.last_offset), (0, 9));
    let before = observable(&log);
    let concat = |parts: &[Vec<u8>]| parts.concat();

    let gap = log
        .append_as_follower(&stored_batch(15, 1, 5), 0)
        .unwrap_err();
    assert!(
        matches!(
            gap,
            LogError::UnexpectedAppendOffset {
                expected_offset: 10,
                base_offset: 15,
                last_offset: 19
            }
        ),
        "{gap}"
    );
    let far = log
        .append_as_follower(&stored_batch(i64::MAX, 1, 5), 0)
        .unwrap_err();
    assert!(matches!(
        far,
        LogError::UnexpectedAppendOffset {
            expected_offset: 10,
            base_offset: i64::MAX,
            last_offset: i64::MAX,
        }
    ));
    let overlap = log
        .append_as_follower(&stored_batch(5, 1, 5), 0)
        .unwrap_err();
    assert!(matches!(
        overlap,
        LogError::UnexpectedAppendOffset {
            expected_offset: 10,
            base_offset: 5,
            ..
        }
    ));
    // A good batch followed by a gap: the good one is not written either.
    let inner_gap = log
        .append_as_follower(
            &concat(&[stored_batch(10, 1, 5), stored_batch(16, 1, 5)]),
            0,
        )
        .unwrap_err();
    assert!(matches!(
        inner_gap,
        LogError::UnexpectedAppendOffset {
            expected_offset: 15,
            base_offset: 16,
            ..
        }
    ));
    // A good batch followed by a corrupt one.
    let mut corrupt = stored_batch(15, 2, 5);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x55;
    let crc = log
        .append_as_follower(&concat(&[stored_batch(10, 1, 5), corrupt]), 0)
        .unwrap_err();
    assert!(
        matches!(crc, LogError::Batch(BatchError::CrcMismatch { .. })),
        "{crc}"
    );
    assert_eq!(crc.kafka_error_code(), 2);
    // A batch without a leader epoch.
    let no_epoch = log
        .append_as_follower(&stored_batch(10, -1, 5), 0)
        .unwrap_err();
    assert!(matches!(no_epoch, LogError::InvalidArgument { .. }));
    assert!(
        observable(&log) == before,
        "a rejected append changed the log"
    );

    // Empty input and a lone partial batch are no-ops.
    let info = log.append_as_follower(&[], 0).unwrap();
    assert_eq!((info.first_offset, info.last_offset), (10, 9));
    let partial = stored_batch(10, 1, 5);
    log.append_as_follower(&partial[..partial.len() - 1], 0)
        .unwrap();
    assert!(observable(&log) == before);

    // The same data, sound, goes in.
    let info = log
        .append_as_follower(
            &concat(&[stored_batch(10, 1, 5), stored_batch(15, 2, 5)]),
            0,
        )
        .unwrap();
    assert_eq!((info.first_offset, info.last_offset), (10, 19));
    assert_eq!(epochs(&log), vec![(0, 0), (1, 10), (2, 15)]);
}

#[test]
fn follower_append_replays_producers_without_judging_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), 1 << 20);
    // Sequence 5 first would be fine for a new producer anyway; then a jump to 50, which the
    // leader path would refuse as out of order, and the same batch twice, which it would
    // answer as a duplicate. The leader decided; the follower stores.
    let mut offset = 0;
    for seq in [5, 50, 50] {
        let mut raw = idempotent_batch(42, 0, seq, 2, 0);
        batch::set_base_offset(&mut raw, offset).unwrap();
        batch::set_partition_leader_epoch(&mut raw, 0).unwrap();
        log.append_as_follower(&raw, 0).unwrap();
        offset += 2;
    }
    assert_eq!(log.log_end_offset(), 6);
    let entry = log.producer_state().entry(42).unwrap();
    assert_eq!(entry.last_sequence(), 51);
    assert_eq!(entry.batches().len(), 3);
}

#[test]
fn follower_rolls_and_flushes_like_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let one_batch = stored_batch(0, 0, 5).len() as u64;
    let mut log = PartitionLog::open(
        dir.path(),
        LogConfig {
            segment_bytes: one_batch * 2,
            flush_messages: 10,
            ..LogConfig::default()
        },
        0,
    )
    .unwrap();
    for i in 0..5 {
        log.append_as_follower(&stored_batch(i * 5, 0, 5), 0)
            .unwrap();
    }
    assert_eq!(log.segment_base_offsets(), vec![0, 10, 20]);
    assert_eq!(log.recovery_point(), 20, "flush.messages applied");
    assert_eq!(log.leader_epoch_cache().entries(), [EpochEntry::new(0, 0)]);
}
