//! Moving a partition's log start offset: DeleteRecords, time and size retention, a
//! follower's full truncation (`truncate_fully_and_start_at`), and the `log-start-offset` file
//! that makes the new start survive clean and unclean restarts. Whenever the start moves up,
//! the leader epoch cache drops what lies below it and the high watermark is raised to it.
//!
//! As Kafka's `UnifiedLog.deleteOldSegments`, only whole segments are deleted, oldest first,
//! and a pass stops at the first segment that must stay. A segment is deleted crash-safely: its
//! `.log` is renamed to `.log.deleted` first (from then on recovery no longer sees it and
//! removes the leftovers), the directory is fsynced, the log start offset is saved, and only
//! then are the renamed files removed.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::log::segment::{self, Segment, INDEX_EXTENSION, LOG_EXTENSION, TIME_INDEX_EXTENSION};
use crate::log::{io_err, read_offset_file, sync_dir, write_offset_file, LogError, PartitionLog};

/// File holding the log start offset: `"<version>\n<offset>\n"` (Kafka keeps one
/// `log-start-offset-checkpoint` per data directory; strait keeps one per partition).
pub const LOG_START_OFFSET_FILE: &str = "log-start-offset";
/// Temporary name the log start offset is written under before the atomic rename.
pub(crate) const LOG_START_OFFSET_TMP_FILE: &str = "log-start-offset.tmp";
/// Extension appended to the files of a segment being deleted (Kafka's `.deleted`).
pub(crate) const DELETED_EXTENSION: &str = "deleted";

/// How much of a partition to keep (Kafka's topic configs of the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// `retention.ms`: delete a segment once its newest record is older than this; -1 keeps
    /// segments forever.
    pub retention_ms: i64,
    /// `retention.bytes`: delete the oldest segments while the partition is bigger than this;
    /// -1 is unlimited.
    pub retention_bytes: i64,
}

/// What one retention pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    /// Segments deleted.
    pub segments_deleted: usize,
    /// Bytes of segment data deleted.
    pub bytes_deleted: u64,
    /// The log start offset after the pass.
    pub log_start_offset: i64,
}

/// Why segments go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Breach {
    LogStartOffset,
    RetentionBytes,
    RetentionMs,
}

impl Breach {
    fn as_str(self) -> &'static str {
        match self {
            Breach::LogStartOffset => "below the log start offset",
            Breach::RetentionBytes => "retention.bytes exceeded",
            Breach::RetentionMs => "retention.ms exceeded",
        }
    }
}

/// Reads the saved log start offset; None when the file is missing or unreadable (the first
/// segment's base offset then stands, which is always safe).
fn read_log_start_offset(dir: &Path) -> Result<Option<i64>, LogError> {
    read_offset_file(
        dir,
        LOG_START_OFFSET_FILE,
        "using the first segment's base offset",
    )
}

/// Writes the log start offset atomically and durably (temp file, fsync, rename, fsync of the
/// directory): a lost update could make deleted records readable again after a restart.
fn write_log_start_offset(dir: &Path, offset: i64) -> Result<(), LogError> {
    write_offset_file(dir, LOG_START_OFFSET_FILE, offset, true)
}

/// `path` with `.deleted` appended to its whole name.
fn deleted_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(DELETED_EXTENSION);
    PathBuf::from(name)
}

/// Renames a segment's files to `*.deleted`, data file first: once it is renamed the segment
/// is gone as far as recovery is concerned, and stray indexes are removed on open. Returns the
/// renamed paths for removal. The caller fsyncs the directory.
fn rename_to_deleted(dir: &Path, segment: &Segment) -> Result<Vec<PathBuf>, LogError> {
    let base = segment.base_offset();
    let mut renamed = Vec::with_capacity(3);
    for (i, extension) in [LOG_EXTENSION, INDEX_EXTENSION, TIME_INDEX_EXTENSION]
        .into_iter()
        .enumerate()
    {
        let from = dir.join(segment::file_name(base, extension));
        let to = deleted_path(&from);
        match fs::rename(&from, &to) {
            Ok(()) => renamed.push(to),
            Err(e) if e.kind() == io::ErrorKind::NotFound && i > 0 => {}
            Err(e) if i == 0 => return Err(io_err("rename", &from)(e)),
            Err(e) => {
                // The data file is already renamed, so the segment is deleted; the index is
                // removed on the next open.
                tracing::warn!(path = %from.display(), error = %e,
                    "could not rename the index of a deleted segment");
            }
        }
    }
    Ok(renamed)
}

/// Kafka's `LogSegment.largestTimestamp`: the newest record timestamp, or the file's
/// modification time when no record carries one.
fn largest_timestamp_ms(segment: &Segment) -> i64 {
    let max = segment.max_timestamp_ms();
    if max >= 0 {
        return max;
    }
    fs::metadata(segment.log_path())
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Removes files already renamed to `*.deleted` (and made durable as such).
fn remove_renamed(renamed: Vec<PathBuf>) {
    for path in renamed {
        if let Err(e) = fs::remove_file(&path) {
            // Harmless: the next open removes `.deleted` files.
            tracing::warn!(path = %path.display(), error = %e, "could not remove deleted segment file");
        }
    }
}

impl PartitionLog {
    /// Follows a log start that moved up (already saved): epochs below it are history the log
    /// no longer holds, and nothing below the start can be uncommitted (Kafka's
    /// `updateLogStartOffset` raises the high watermark the same way).
    fn log_start_moved_up(&mut self) -> Result<(), LogError> {
        self.epochs.truncate_from_start(self.log_start_offset)?;
        if self.high_watermark < self.log_start_offset {
            self.high_watermark = self.log_start_offset;
        }
        Ok(())
    }

    /// Deletes every segment and restarts the log empty at `offset` (Kafka's
    /// `truncateFullyAndStartAt`): log start, log end, recovery point and high watermark all
    /// become `offset`; the leader epoch cache and the producer state are emptied. For a
    /// follower whose fetch offset fell below the leader's log start (the leader answered
    /// OFFSET_OUT_OF_RANGE), which then fetches from the leader's log start.
    ///
    /// Crash-safe as retention is: segments are renamed to `*.deleted` oldest first (a crash
    /// midway leaves a suffix of the log, which opens as a log whose start moved up), the
    /// directory is fsynced, the cache is emptied and the new start saved, and only then is the
    /// new segment created and are the old files removed. If anything fails after the
    /// segments' files were renamed, the log closes itself: it must be reopened (which
    /// recovers a consistent state) before it takes writes again.
    pub fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<(), LogError> {
        self.ensure_open()?;
        if offset < 0 {
            return Err(LogError::InvalidArgument {
                reason: format!("cannot restart the log at negative offset {offset}"),
            });
        }
        tracing::info!(dir = %self.dir.display(), offset, log_start_offset = self.log_start_offset,
            log_end_offset = self.log_end_offset(), "truncating the whole log and restarting it");
        let mut renamed = Vec::with_capacity(self.segments.len() * 3);
        // All but the active segment, oldest first; each leaves memory as it leaves the disk.
        while self.segments.len() > 1 {
            match rename_to_deleted(&self.dir, &self.segments[0]) {
                Ok(paths) => renamed.extend(paths),
                Err(e) => {
                    // What is left is a suffix of the log: keep the start within it.
                    self.log_start_offset =
                        self.log_start_offset.max(self.segments[0].base_offset());
                    if let Err(save) = write_log_start_offset(&self.dir, self.log_start_offset) {
                        tracing::warn!(dir = %self.dir.display(), error = %save,
                            "cannot save the log start after a failed full truncation");
                    }
                    return Err(e);
                }
            }
            self.segments.remove(0);
        }
        let restarted = self.restart_empty_at(offset, &mut renamed);
        if restarted.is_err() {
            // The active segment's files may already be renamed; writes to it would be lost.
            tracing::error!(dir = %self.dir.display(),
                "full truncation failed midway; closing the log until it is reopened");
            self.closed = true;
        }
        restarted?;
        remove_renamed(renamed);
        Ok(())
    }

    /// The part of `truncate_fully_and_start_at` from renaming the active segment on.
    fn restart_empty_at(
        &mut self,
        offset: i64,
        renamed: &mut Vec<PathBuf>,
    ) -> Result<(), LogError> {
        renamed.extend(rename_to_deleted(&self.dir, &self.segments[0])?);
        sync_dir(&self.dir)?;
        // No segment is left on disk, so emptying the cache cannot hide an epoch of stored data.
        self.epochs.clear()?;
        write_log_start_offset(&self.dir, offset)?;
        let segment = Segment::create(&self.dir, offset, &self.config)?;
        self.segments = vec![segment];
        self.log_start_offset = offset;
        self.recovery_point = offset;
        super::write_recovery_point(&self.dir, offset, true)?;
        self.high_watermark = offset;
        self.save_high_watermark(true)?;
        self.producers.clear();
        Ok(())
    }

    /// Called once by `open`: applies the saved log start offset. A saved start beyond the
    /// recovered log end (data lost to an unclean shutdown after DeleteRecords) empties the log
    /// and restarts it at the saved start, as Kafka's LogLoader does.
    pub(super) fn restore_log_start_offset(&mut self) -> Result<(), LogError> {
        let first_base = self.segments[0].base_offset();
        let Some(stored) = read_log_start_offset(&self.dir)? else {
            self.log_start_offset = first_base;
            return Ok(());
        };
        let log_end_offset = self.log_end_offset();
        if stored > log_end_offset {
            tracing::warn!(dir = %self.dir.display(), log_start_offset = stored, log_end_offset,
                "log end is below the saved log start offset; deleting every segment");
            while let Some(segment) = self.segments.pop() {
                segment.delete()?;
            }
            self.segments
                .push(Segment::create(&self.dir, stored, &self.config)?);
            self.recovery_point = stored;
            super::write_recovery_point(&self.dir, stored, true)?;
        }
        self.log_start_offset = stored.max(self.segments[0].base_offset());
        Ok(())
    }

    /// After a truncation the start can be at most the new log end, and never below the first
    /// segment; a start that moved down is saved before anything else can happen.
    pub(super) fn clamp_log_start_offset_after_truncation(&mut self) -> Result<(), LogError> {
        let clamped = self
            .log_start_offset
            .min(self.log_end_offset())
            .max(self.segments[0].base_offset());
        if clamped != self.log_start_offset {
            self.log_start_offset = clamped;
            write_log_start_offset(&self.dir, clamped)?;
        }
        Ok(())
    }

    /// DeleteRecords: moves the log start offset up to `offset` (a no-op if it is not above the
    /// current start) and deletes the segments that lie wholly below it. `offset` may be at
    /// most the log end offset (the high watermark on a single node); above it the answer is
    /// OFFSET_OUT_OF_RANGE. Returns the new log start offset (the low watermark).
    pub fn advance_log_start_offset(&mut self, offset: i64) -> Result<i64, LogError> {
        self.advance_log_start_offset_for(offset, "DeleteRecords")
    }

    /// [`advance_log_start_offset`](Self::advance_log_start_offset), logging `reason` as the
    /// cause.
    pub(super) fn advance_log_start_offset_for(
        &mut self,
        offset: i64,
        reason: &'static str,
    ) -> Result<i64, LogError> {
        self.ensure_open()?;
        let log_end_offset = self.log_end_offset();
        if offset < 0 || offset > log_end_offset {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset,
            });
        }
        if offset <= self.log_start_offset {
            return Ok(self.log_start_offset);
        }
        tracing::info!(dir = %self.dir.display(), from = self.log_start_offset, to = offset,
            reason, "log start offset advanced");
        self.log_start_offset = offset;
        // Saved before any file goes, so a crash cannot expose records below the new start.
        write_log_start_offset(&self.dir, offset)?;
        self.log_start_moved_up()?;
        self.delete_segments_while(Breach::LogStartOffset, |_, next, start| {
            next.is_some_and(|n| n.base_offset() <= start)
        })?;
        Ok(self.log_start_offset)
    }

    /// One retention pass, in Kafka's order: segments below the log start offset, then the
    /// oldest segments while the partition exceeds `retention.bytes`, then segments whose
    /// newest record is older than `retention.ms`. The active segment goes only when all of
    /// its records are past retention; a fresh empty segment takes its place first, so the log
    /// end offset never moves back.
    pub fn delete_old_segments(
        &mut self,
        retention: Retention,
        now_ms: i64,
    ) -> Result<RetentionOutcome, LogError> {
        self.ensure_open()?;
        let mut outcome = RetentionOutcome::default();
        let mut add = |(segments, bytes): (usize, u64)| {
            outcome.segments_deleted += segments;
            outcome.bytes_deleted += bytes;
        };
        add(
            self.delete_segments_while(Breach::LogStartOffset, |_, next, start| {
                next.is_some_and(|n| n.base_offset() <= start)
            })?,
        );
        if let Ok(limit_bytes) = u64::try_from(retention.retention_bytes) {
            let size_bytes = self.size_bytes();
            if size_bytes >= limit_bytes {
                let mut excess_bytes = size_bytes - limit_bytes;
                add(
                    self.delete_segments_while(Breach::RetentionBytes, |segment, _, _| {
                        if segment.size_bytes() <= excess_bytes {
                            excess_bytes -= segment.size_bytes();
                            true
                        } else {
                            false
                        }
                    })?,
                );
            }
        }
        if retention.retention_ms >= 0 {
            add(
                self.delete_segments_while(Breach::RetentionMs, |segment, _, _| {
                    now_ms.saturating_sub(largest_timestamp_ms(segment)) > retention.retention_ms
                })?,
            );
        }
        outcome.log_start_offset = self.log_start_offset;
        Ok(outcome)
    }

    /// Deletes segments from the oldest on while `doomed(segment, next segment, log start)`
    /// holds (Kafka's `deletableSegments`), never an empty active segment. Returns how many
    /// segments and bytes went.
    fn delete_segments_while(
        &mut self,
        breach: Breach,
        mut doomed: impl FnMut(&Segment, Option<&Segment>, i64) -> bool,
    ) -> Result<(usize, u64), LogError> {
        let mut count = 0;
        while count < self.segments.len() {
            let segment = &self.segments[count];
            let next = self.segments.get(count + 1);
            let last_and_empty = next.is_none() && segment.size_bytes() == 0;
            if last_and_empty || !doomed(segment, next, self.log_start_offset) {
                break;
            }
            count += 1;
        }
        if count == 0 {
            return Ok((0, 0));
        }
        if count == self.segments.len() {
            // A log always has an active segment: start the next one before the last goes.
            self.roll(breach.as_str())?;
        }
        let mut renamed = Vec::with_capacity(count * 3);
        let mut bytes = 0;
        let (first_offset, mut end_offset) = (self.segments[0].base_offset(), 0);
        for _ in 0..count {
            renamed.extend(rename_to_deleted(&self.dir, &self.segments[0])?);
            let segment = self.segments.remove(0);
            bytes += segment.size_bytes();
            end_offset = segment.next_offset();
            drop(segment);
        }
        sync_dir(&self.dir)?;
        let new_start = self.log_start_offset.max(self.segments[0].base_offset());
        if new_start != self.log_start_offset {
            self.log_start_offset = new_start;
            write_log_start_offset(&self.dir, new_start)?;
            self.log_start_moved_up()?;
        }
        remove_renamed(renamed);
        tracing::info!(dir = %self.dir.display(), reason = breach.as_str(), segments = count,
            bytes, offsets = %format!("{first_offset}..{end_offset}"),
            log_start_offset = self.log_start_offset, "deleted old segments");
        Ok((count, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::split_and_validate;
    use crate::log::batch::test_util::simple_batch;
    use crate::log::LogConfig;

    const NEVER: Retention = Retention {
        retention_ms: -1,
        retention_bytes: -1,
    };

    fn config(segment_bytes: u64) -> LogConfig {
        LogConfig {
            segment_bytes,
            ..LogConfig::default()
        }
    }

    /// Appends one batch of `count` records with timestamp `ts_ms` at time `now_ms`.
    fn append(log: &mut PartitionLog, count: usize, ts_ms: i64, now_ms: i64) {
        let mut raw = simple_batch(count, 100, ts_ms);
        let headers = split_and_validate(&raw, 1 << 20).unwrap();
        log.append(&mut raw, &headers, 0, None, now_ms).unwrap();
    }

    fn files_with(dir: &Path, extension: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(&format!(".{extension}")))
            .collect();
        names.sort();
        names
    }

    /// A log of `segments` full segments of 10 one-record batches each plus an active segment
    /// holding one batch; batch `i` has timestamp `1_000 * i`.
    fn log_with_segments(dir: &Path, segments: usize) -> PartitionLog {
        let one_batch = simple_batch(1, 100, 0).len() as u64;
        let mut log = PartitionLog::open(dir, config(one_batch * 10), 0).unwrap();
        for i in 0..(segments * 10 + 1) {
            append(&mut log, 1, 1_000 * i as i64, 0);
        }
        assert_eq!(log.segment_count(), segments + 1);
        log
    }

    #[test]
    fn retention_ms_deletes_segments_whose_newest_record_is_too_old() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = log_with_segments(dir.path(), 3);
        // Segment k holds timestamps 10_000k .. 10_000k + 9_000. At now = 30_000 with
        // retention 15_000, segment 0 (newest 9_000, 21 s old) goes; segment 1 (newest 19_000,
        // 11 s old) stays, and so does everything after it.
        let r = Retention {
            retention_ms: 15_000,
            retention_bytes: -1,
        };
        let outcome = log.delete_old_segments(r, 30_000).unwrap();
        assert_eq!(outcome.segments_deleted, 1);
        assert_eq!(outcome.log_start_offset, 10);
        assert_eq!(log.log_start_offset(), 10);
        assert_eq!(log.segment_base_offsets(), vec![10, 20, 30]);
        assert_eq!(files_with(&log.dir, "log").len(), 3);
        assert!(files_with(&log.dir, DELETED_EXTENSION).is_empty());
        assert!(matches!(
            log.read(9, 1 << 20, i64::MAX),
            Err(LogError::OffsetOutOfRange { .. })
        ));
        assert_eq!(base_offset_read(&log, 10), 10);
    }

    fn base_offset_read(log: &PartitionLog, offset: i64) -> i64 {
        let bytes = log.read(offset, 1 << 20, i64::MAX).unwrap();
        crate::log::BatchHeader::parse(&bytes).unwrap().base_offset
    }

    #[test]
    fn retention_ms_past_every_record_empties_the_log_but_keeps_the_end_offset() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = log_with_segments(dir.path(), 2);
        let end = log.log_end_offset();
        let r = Retention {
            retention_ms: 1_000,
            retention_bytes: -1,
        };
        let outcome = log.delete_old_segments(r, 1_000_000).unwrap();
        assert_eq!(
            outcome.segments_deleted, 3,
            "the active segment expired too"
        );
        assert_eq!(log.log_start_offset(), end);
        assert_eq!(log.log_end_offset(), end);
        assert_eq!(log.segment_base_offsets(), vec![end]);
        // A second pass finds only the empty active segment and keeps it.
        let again = log.delete_old_segments(r, 2_000_000).unwrap();
        assert_eq!(again.segments_deleted, 0);
        append(&mut log, 2, 2_000_000, 0);
        assert_eq!(base_offset_read(&log, end), end);
    }

    #[test]
    fn retention_bytes_keeps_the_newest_segments_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = log_with_segments(dir.path(), 4);
        let segment_bytes = log.segments()[0].size_bytes();
        // Total is 4 full segments + 1 batch; with a limit of 1.5 segments the excess is 2.5
        // segments + 1 batch, which covers the two oldest segments whole but not a third (as
        // Kafka, a segment goes only if the log stays at or above the limit without it).
        let limit = segment_bytes * 3 / 2;
        let r = Retention {
            retention_ms: -1,
            retention_bytes: limit as i64,
        };
        let before = log.size_bytes();
        let outcome = log.delete_old_segments(r, 0).unwrap();
        let excess = before - limit;
        assert_eq!(
            outcome.segments_deleted as u64,
            excess / segment_bytes,
            "whole segments covered by the excess"
        );
        assert_eq!(outcome.bytes_deleted, 2 * segment_bytes);
        assert_eq!(log.log_start_offset(), 20);
        assert!(log.size_bytes() <= limit + segment_bytes);
        // Unlimited retention deletes nothing.
        assert_eq!(
            log.delete_old_segments(NEVER, i64::MAX)
                .unwrap()
                .segments_deleted,
            0
        );
    }

    #[test]
    fn delete_records_moves_the_start_and_drops_whole_segments_below_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = log_with_segments(dir.path(), 3);
        let end = log.log_end_offset();
        assert!(matches!(
            log.advance_log_start_offset(end + 1),
            Err(LogError::OffsetOutOfRange { .. })
        ));
        // Into the middle of segment 1: segment 0 goes, segment 1 stays (partly readable).
        assert_eq!(log.advance_log_start_offset(15).unwrap(), 15);
        assert_eq!(log.segment_base_offsets(), vec![10, 20, 30]);
        assert!(matches!(
            log.read(14, 1 << 20, i64::MAX),
            Err(LogError::OffsetOutOfRange { .. })
        ));
        assert_eq!(base_offset_read(&log, 15), 15);
        // Not an increase: nothing changes.
        assert_eq!(log.advance_log_start_offset(3).unwrap(), 15);
        // Up to the end: every inactive segment goes, the active one (holding the last
        // record) stays but is unreadable.
        assert_eq!(log.advance_log_start_offset(end).unwrap(), end);
        assert_eq!(log.segment_base_offsets(), vec![30]);
        assert_eq!(log.read(end, 1 << 20, i64::MAX).unwrap().len(), 0);
    }

    #[test]
    fn log_start_offset_survives_clean_and_unclean_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t-0");
        let mut log = log_with_segments(&path, 2);
        log.advance_log_start_offset(13).unwrap();
        log.close().unwrap();
        drop(log);
        let mut log = PartitionLog::open(&path, config(1 << 20), 0).unwrap();
        assert_eq!(log.log_start_offset(), 13);
        log.advance_log_start_offset(17).unwrap();
        drop(log); // crash
        let log = PartitionLog::open(&path, config(1 << 20), 0).unwrap();
        assert_eq!(log.log_start_offset(), 17);
        assert_eq!(log.log_end_offset(), 21);
    }

    #[test]
    fn crash_between_rename_and_removal_is_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t-0");
        let log = log_with_segments(&path, 2);
        // Simulate a crash right after segment 0's files were renamed.
        rename_to_deleted(&path, &log.segments()[0]).unwrap();
        drop(log);
        assert_eq!(files_with(&path, DELETED_EXTENSION).len(), 3);
        let log = PartitionLog::open(&path, config(1 << 20), 0).unwrap();
        assert!(files_with(&path, DELETED_EXTENSION).is_empty());
        assert_eq!(log.log_start_offset(), 10);
        assert_eq!(log.segment_base_offsets(), vec![10, 20]);
    }

    #[test]
    fn saved_start_beyond_the_recovered_end_restarts_the_log_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t-0");
        let log = log_with_segments(&path, 1);
        drop(log);
        // As if DeleteRecords saved 50 and the data up to it was then lost.
        write_log_start_offset(&path, 50).unwrap();
        let mut log = PartitionLog::open(&path, config(1 << 20), 0).unwrap();
        assert_eq!(
            (log.log_start_offset(), log.log_end_offset()),
            (50, 50),
            "empty log restarted at the saved start"
        );
        append(&mut log, 1, 0, 0);
        assert_eq!(base_offset_read(&log, 50), 50);
    }

    #[test]
    fn truncation_below_the_start_moves_the_start_down_durably() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t-0");
        let mut log = log_with_segments(&path, 2);
        log.advance_log_start_offset(15).unwrap();
        log.truncate_to(5).unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (5, 5));
        drop(log);
        let log = PartitionLog::open(&path, config(1 << 20), 0).unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (5, 5));
    }
}
