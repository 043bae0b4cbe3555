//! The leader epoch cache of one partition (Kafka's `LeaderEpochFileCache`): for every leader
//! epoch that wrote to the log, the offset of its first record.
//!
//! Replication uses it to find where a follower's log diverges from the leader's (Kafka's
//! OffsetsForLeaderEpoch, KIP-101 and KIP-279): the follower asks for the end offset of its
//! latest epoch, the leader answers with [`LeaderEpochCache::end_offset_for`], and the follower
//! truncates there.
//!
//! Entries are strictly increasing in both epoch and start offset. The cache is persisted as
//! `leader-epoch-checkpoint` in the partition directory, in Kafka's text format:
//!
//! ```text
//! 0            <- format version
//! 2            <- number of entries
//! 0 0          <- epoch, start offset
//! 3 1200
//! ```
//!
//! Every change is written atomically (temp file, fsync, rename, fsync of the directory)
//! before the call returns, and the log assigns a new epoch before the batches carrying it are
//! written, so the file never lacks an epoch the segments hold. It may hold entries beyond the
//! log end after a crash; opening the log truncates those. A missing or unreadable file is not
//! fatal: the log rebuilds the cache from its batch headers.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::log::{io_err, sync_dir, write_file_atomically, LogError};

/// Name of the checkpoint file in the partition directory (Kafka's name).
pub const LEADER_EPOCH_CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";
/// Temporary name the checkpoint is written under before the atomic rename.
pub(crate) const LEADER_EPOCH_CHECKPOINT_TMP_FILE: &str = "leader-epoch-checkpoint.tmp";
/// Kafka's `OffsetsForLeaderEpochResponse.UNDEFINED_EPOCH`.
pub const UNDEFINED_EPOCH: i32 = -1;
/// Kafka's `OffsetsForLeaderEpochResponse.UNDEFINED_EPOCH_OFFSET`.
pub const UNDEFINED_EPOCH_OFFSET: i64 = -1;
/// Format version written on the first line (Kafka's `LeaderEpochCheckpointFile.CURRENT_VERSION`).
const CHECKPOINT_VERSION: u32 = 0;
/// An entry line is at most 32 bytes ("2147483647 9223372036854775807\n"); epochs change only
/// on leader elections, so a million of them is far beyond any real partition. A bigger file is
/// treated as garbage (and the cache rebuilt from the log) rather than read into memory.
const CHECKPOINT_FILE_BYTES_MAX: u64 = 32 * 1_000_000;

/// One leader epoch and the offset of its first record (Kafka's `EpochEntry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    /// The leader epoch.
    pub epoch: i32,
    /// Offset of the first record written in this epoch.
    pub start_offset: i64,
}

impl EpochEntry {
    /// The entry `epoch` starting at `start_offset`.
    pub fn new(epoch: i32, start_offset: i64) -> EpochEntry {
        EpochEntry {
            epoch,
            start_offset,
        }
    }
}

/// What reading the checkpoint file found.
#[derive(Debug)]
pub enum CheckpointRead {
    /// A well-formed checkpoint.
    Loaded(LeaderEpochCache),
    /// No checkpoint file (a new partition, or one written before strait kept epochs).
    Missing,
    /// The file exists but cannot be used; the reason says why.
    Unusable(String),
}

/// The leader epoch cache of one partition. See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderEpochCache {
    /// The partition directory; the checkpoint lives at `dir/leader-epoch-checkpoint`.
    dir: PathBuf,
    /// Strictly increasing in both epoch and start offset.
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    /// An empty cache for the partition in `dir`. Nothing is written until the first change.
    pub fn empty(dir: &Path) -> LeaderEpochCache {
        LeaderEpochCache {
            dir: dir.to_path_buf(),
            entries: Vec::new(),
        }
    }

    /// Reads the checkpoint in `dir`. Only I/O errors other than "not found" are errors; a
    /// malformed file is reported as [`CheckpointRead::Unusable`] so the caller can rebuild.
    pub fn load(dir: &Path) -> Result<CheckpointRead, LogError> {
        let path = dir.join(LEADER_EPOCH_CHECKPOINT_FILE);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(CheckpointRead::Missing),
            Err(e) => return Err(io_err("open", &path)(e)),
        };
        let mut bytes = Vec::new();
        file.take(CHECKPOINT_FILE_BYTES_MAX + 1)
            .read_to_end(&mut bytes)
            .map_err(io_err("read", &path))?;
        if bytes.len() as u64 > CHECKPOINT_FILE_BYTES_MAX {
            return Ok(CheckpointRead::Unusable(format!(
                "larger than {CHECKPOINT_FILE_BYTES_MAX} bytes"
            )));
        }
        match parse_checkpoint(&bytes) {
            Ok(entries) => Ok(CheckpointRead::Loaded(LeaderEpochCache {
                dir: dir.to_path_buf(),
                entries,
            })),
            Err(reason) => Ok(CheckpointRead::Unusable(reason)),
        }
    }

    /// Path of the checkpoint file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(LEADER_EPOCH_CHECKPOINT_FILE)
    }

    /// The entries, oldest epoch first.
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// Whether the cache holds no epoch.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The newest entry, if any.
    pub fn latest_entry(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// The newest epoch, if any (Kafka's `latestEpoch`).
    pub fn latest_epoch(&self) -> Option<i32> {
        self.latest_entry().map(|e| e.epoch)
    }

    /// The oldest entry, if any.
    pub fn earliest_entry(&self) -> Option<EpochEntry> {
        self.entries.first().copied()
    }

    /// Records that `epoch` starts at `start_offset`, with Kafka's rules, and persists the
    /// change. Returns whether the cache changed.
    ///
    /// Nothing changes when `epoch` is already the latest epoch and `start_offset` is not below
    /// its start (an epoch's start is never moved up). Otherwise every entry from the end whose
    /// epoch is >= `epoch` or whose start is >= `start_offset` is removed first, so the cache
    /// stays strictly increasing in both, and the new entry is appended. Negative values are
    /// rejected (Kafka throws for them too).
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> Result<bool, LogError> {
        self.assign_all(&[EpochEntry::new(epoch, start_offset)])
    }

    /// [`assign`](Self::assign) for several entries in order, with one write at the end
    /// (Kafka's `assign(List)`). Returns whether the cache changed. All entries are checked
    /// before any is applied.
    pub fn assign_all(&mut self, entries: &[EpochEntry]) -> Result<bool, LogError> {
        if let Some(bad) = entries.iter().find(|e| e.epoch < 0 || e.start_offset < 0) {
            return Err(LogError::InvalidArgument {
                reason: format!(
                    "invalid leader epoch entry: epoch {} at offset {} (both must be >= 0)",
                    bad.epoch, bad.start_offset
                ),
            });
        }
        if !entries.iter().any(|e| self.is_update_needed(e)) {
            return Ok(false);
        }
        let before = self.entries.clone();
        let mut changed = false;
        for entry in entries {
            changed |= self.assign_in_memory(*entry);
        }
        if changed {
            self.persist_or_restore(before)?;
        }
        Ok(changed)
    }

    /// Kafka's `isUpdateNeeded`.
    fn is_update_needed(&self, entry: &EpochEntry) -> bool {
        self.latest_entry().is_none_or(|latest| {
            entry.epoch != latest.epoch || entry.start_offset < latest.start_offset
        })
    }

    /// Kafka's `assign(EpochEntry)` without the write: returns whether anything changed.
    fn assign_in_memory(&mut self, entry: EpochEntry) -> bool {
        if !self.is_update_needed(&entry) {
            return false;
        }
        // Kafka's maybeTruncateNonMonotonicEntries.
        let keep = self
            .entries
            .iter()
            .rposition(|e| e.epoch < entry.epoch && e.start_offset < entry.start_offset)
            .map_or(0, |i| i + 1);
        let removed: Vec<EpochEntry> = self.entries.drain(keep..).collect();
        // Removing one entry that starts where the new one does is expected (an epoch that
        // never wrote anything); anything else means the log had conflicting history.
        if removed.len() > 1
            || removed
                .first()
                .is_some_and(|r| r.start_offset != entry.start_offset)
        {
            tracing::warn!(dir = %self.dir.display(), epoch = entry.epoch,
                start_offset = entry.start_offset, ?removed,
                "new leader epoch entry removed conflicting entries");
        }
        self.entries.push(entry);
        // Strictly increasing in epoch and start offset: every entry kept lies below the new
        // one in both, and the kept prefix already was.
        if let [.., before, last] = self.entries.as_slice() {
            assert!(
                before.epoch < last.epoch && before.start_offset < last.start_offset,
                "{}: leader epoch entries out of order: {before:?} then {last:?}",
                self.dir.display()
            );
        }
        true
    }

    /// Kafka's `endOffsetFor`: the largest epoch <= `requested_epoch` and the end offset of
    /// that epoch, which is the start offset of the first epoch above `requested_epoch`, or
    /// `log_end_offset` when `requested_epoch` is the latest epoch.
    ///
    /// Answers ([`UNDEFINED_EPOCH`], [`UNDEFINED_EPOCH_OFFSET`]) when `requested_epoch` is
    /// undefined, when the cache is empty, and when `requested_epoch` is above every known
    /// epoch. When `requested_epoch` is below every known epoch the answer is
    /// (`requested_epoch`, start of the first known epoch): that history is gone (the log start
    /// moved past it), and the follower should replicate from there.
    pub fn end_offset_for(&self, requested_epoch: i32, log_end_offset: i64) -> (i32, i64) {
        if requested_epoch == UNDEFINED_EPOCH {
            return (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        }
        if self.latest_epoch() == Some(requested_epoch) {
            // The current epoch of a leader is still being written: it ends at the log end.
            return (requested_epoch, log_end_offset);
        }
        let higher = self.entries.partition_point(|e| e.epoch <= requested_epoch);
        let Some(higher_entry) = self.entries.get(higher) else {
            return (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        };
        match higher.checked_sub(1).map(|i| self.entries[i]) {
            None => (requested_epoch, higher_entry.start_offset),
            Some(floor) => (floor.epoch, higher_entry.start_offset),
        }
    }

    /// Removes every entry starting at or after `end_offset` (the log was truncated there) and
    /// persists the change (Kafka's `truncateFromEnd`). A negative `end_offset` changes nothing.
    pub fn truncate_from_end(&mut self, end_offset: i64) -> Result<(), LogError> {
        let keep = self
            .entries
            .partition_point(|e| e.start_offset < end_offset);
        if end_offset < 0 || keep == self.entries.len() {
            return Ok(());
        }
        let before = self.entries.clone();
        let removed = self.entries.split_off(keep);
        tracing::debug!(dir = %self.dir.display(), end_offset, ?removed,
            "leader epoch entries removed after truncation");
        self.persist_or_restore(before)
    }

    /// The log start moved to `start_offset`: every entry starting at or before it goes, and
    /// the newest of those comes back starting at `start_offset` (Kafka's `truncateFromStart`;
    /// an entry starting exactly at `start_offset` is kept as it is). Persists the change.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> Result<(), LogError> {
        let at_or_before = self
            .entries
            .partition_point(|e| e.start_offset <= start_offset);
        let Some(last_removed) = at_or_before.checked_sub(1).map(|i| self.entries[i]) else {
            return Ok(());
        };
        if at_or_before == 1 && last_removed.start_offset == start_offset {
            return Ok(());
        }
        let before = self.entries.clone();
        self.entries.drain(..at_or_before);
        self.entries
            .insert(0, EpochEntry::new(last_removed.epoch, start_offset));
        tracing::debug!(dir = %self.dir.display(), start_offset, first = ?self.entries[0],
            "leader epoch entries before the log start removed");
        self.persist_or_restore(before)
    }

    /// Removes every entry and persists the empty cache (Kafka's `clearAndFlush`).
    pub fn clear(&mut self) -> Result<(), LogError> {
        if self.entries.is_empty() && self.path().exists() {
            return Ok(());
        }
        let before = std::mem::take(&mut self.entries);
        self.persist_or_restore(before)
    }

    /// Rebuilds the cache from the leader epochs of the batches of a log, in log order (as
    /// (epoch, base offset)); batches without an epoch (negative) are skipped. Persists the
    /// result.
    pub fn rebuild(
        dir: &Path,
        batches: impl IntoIterator<Item = EpochEntry>,
    ) -> Result<LeaderEpochCache, LogError> {
        let mut cache = LeaderEpochCache::empty(dir);
        for entry in batches {
            if entry.epoch >= 0 && entry.start_offset >= 0 {
                cache.assign_in_memory(entry);
            }
        }
        cache.write()?;
        Ok(cache)
    }

    /// Writes the current entries; on failure puts `before` back, so memory never claims
    /// what the file does not hold.
    fn persist_or_restore(&mut self, before: Vec<EpochEntry>) -> Result<(), LogError> {
        match self.write() {
            Ok(()) => Ok(()),
            Err(e) => {
                self.entries = before;
                Err(e)
            }
        }
    }

    /// Writes the checkpoint atomically and durably.
    pub fn write(&self) -> Result<(), LogError> {
        let mut text = format!("{CHECKPOINT_VERSION}\n{}\n", self.entries.len());
        for entry in &self.entries {
            text.push_str(&format!("{} {}\n", entry.epoch, entry.start_offset));
        }
        write_file_atomically(&self.path(), text.as_bytes())?;
        sync_dir(&self.dir)
    }
}

/// Parses Kafka's checkpoint text. Stricter than Kafka, which feeds whatever it reads through
/// `assign`: entries that are negative or not strictly increasing mean the file was not
/// written by a cache, so it is not trusted.
fn parse_checkpoint(bytes: &[u8]) -> Result<Vec<EpochEntry>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let mut lines = text.lines();
    let version = lines.next().ok_or("empty file")?;
    if version.trim() != CHECKPOINT_VERSION.to_string() {
        return Err(format!("unknown version line {version:?}"));
    }
    let count = lines.next().ok_or("no entry count line")?;
    let count: usize = count
        .trim()
        .parse()
        .map_err(|_| format!("bad entry count line {count:?}"))?;
    // The size bound on the file bounds the line count, so this cannot allocate much.
    let mut entries: Vec<EpochEntry> = Vec::with_capacity(count.min(1024));
    for line in lines {
        let mut fields = line.split_whitespace();
        let entry = match (fields.next(), fields.next(), fields.next()) {
            (Some(epoch), Some(offset), None) => match (epoch.parse(), offset.parse()) {
                (Ok(epoch), Ok(offset)) => EpochEntry::new(epoch, offset),
                _ => return Err(format!("malformed line {line:?}")),
            },
            _ => return Err(format!("malformed line {line:?}")),
        };
        if entry.epoch < 0 || entry.start_offset < 0 {
            return Err(format!("negative epoch or offset in line {line:?}"));
        }
        if let Some(previous) = entries.last() {
            if entry.epoch <= previous.epoch || entry.start_offset <= previous.start_offset {
                return Err(format!(
                    "entry {line:?} does not follow epoch {} at offset {}",
                    previous.epoch, previous.start_offset
                ));
            }
        }
        entries.push(entry);
    }
    if entries.len() != count {
        return Err(format!(
            "{count} entries announced, {} found",
            entries.len()
        ));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    //! Kafka's LeaderEpochFileCacheTest cases, plus persistence.

    use super::*;

    fn cache() -> (tempfile::TempDir, LeaderEpochCache) {
        let dir = tempfile::tempdir().unwrap();
        let cache = LeaderEpochCache::empty(dir.path());
        (dir, cache)
    }

    fn assign(cache: &mut LeaderEpochCache, epoch: i32, start_offset: i64) {
        cache.assign(epoch, start_offset).unwrap();
    }

    fn entries(list: &[(i32, i64)]) -> Vec<EpochEntry> {
        list.iter().map(|&(e, o)| EpochEntry::new(e, o)).collect()
    }

    /// The cache (2, 6), (3, 8), (4, 11) several Kafka cases start from.
    fn three_epochs() -> (tempfile::TempDir, LeaderEpochCache) {
        let (dir, mut c) = cache();
        assign(&mut c, 2, 6);
        assign(&mut c, 3, 8);
        assign(&mut c, 4, 11);
        (dir, c)
    }

    const UNDEFINED: (i32, i64) = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);

    #[test]
    fn adds_epoch_and_answers_log_end_for_the_latest_epoch() {
        let (_d, mut c) = cache();
        assign(&mut c, 2, 10);
        assert_eq!(c.latest_epoch(), Some(2));
        assert_eq!(c.entries(), entries(&[(2, 10)]));
        assert_eq!(c.end_offset_for(2, 11), (2, 11));
        // The same epoch assigned again later changes nothing.
        assign(&mut c, 2, 11);
        assign(&mut c, 2, 12);
        assert_eq!(c.entries(), entries(&[(2, 10)]));
        assert_eq!(c.end_offset_for(2, 14), (2, 14));
    }

    #[test]
    fn undefined_epoch_requested_is_undefined() {
        let (_d, mut c) = cache();
        assert_eq!(
            c.end_offset_for(UNDEFINED_EPOCH, 73),
            UNDEFINED,
            "empty cache"
        );
        assign(&mut c, 2, 11);
        assign(&mut c, 3, 12);
        assert_eq!(c.end_offset_for(UNDEFINED_EPOCH, 0), UNDEFINED);
    }

    #[test]
    fn an_assigned_start_offset_is_never_moved_up() {
        let (_d, mut c) = cache();
        assign(&mut c, 2, 9);
        assert!(!c.assign(2, 10).unwrap());
        assert_eq!(c.entries(), entries(&[(2, 9)]));
        let (_d, mut c) = cache();
        assign(&mut c, 2, 6);
        assign(&mut c, 2, 7);
        assert_eq!(c.entries(), entries(&[(2, 6)]));
    }

    #[test]
    fn start_offsets_increase_strictly() {
        let (_d, mut c) = cache();
        assign(&mut c, 2, 9);
        assign(&mut c, 3, 9);
        assert_eq!(c.entries(), entries(&[(3, 9)]));
        let (_d, mut c) = cache();
        assign(&mut c, 2, 6);
        assign(&mut c, 3, 5);
        assert_eq!(c.entries(), entries(&[(3, 5)]));
    }

    #[test]
    fn epochs_increase_strictly() {
        let (_d, mut c) = cache();
        assign(&mut c, 1, 5);
        assign(&mut c, 2, 6);
        assign(&mut c, 1, 7);
        assert_eq!(c.latest_epoch(), Some(1));
        assert_eq!(c.end_offset_for(1, 8), (1, 8));
        assert_eq!(c.end_offset_for(2, 8), UNDEFINED);
        assert_eq!(c.entries(), entries(&[(1, 7)]));
    }

    #[test]
    fn empty_cache_answers_undefined() {
        let (_d, c) = cache();
        assert_eq!(c.latest_epoch(), None);
        assert_eq!(c.end_offset_for(0, 0), UNDEFINED);
        assert_eq!(c.end_offset_for(7, 0), UNDEFINED);
    }

    #[test]
    fn requested_epoch_below_the_first_gets_the_first_start() {
        let (_d, mut c) = cache();
        assign(&mut c, 5, 11);
        assign(&mut c, 6, 12);
        assign(&mut c, 7, 13);
        assert_eq!(c.end_offset_for(4, 0), (4, 11));
    }

    #[test]
    fn same_epoch_with_an_earlier_start_truncates() {
        let (_d, mut c) = cache();
        assign(&mut c, 5, 11);
        assign(&mut c, 6, 12);
        assign(&mut c, 7, 13);
        assign(&mut c, 7, 12);
        assert_eq!(c.entries(), entries(&[(5, 11), (7, 12)]));
        assert_eq!(c.end_offset_for(5, 0), (5, 12));
        assert_eq!(c.end_offset_for(6, 0), (5, 12));
    }

    #[test]
    fn previous_epoch_ends_where_the_next_starts() {
        let (_d, mut c) = cache();
        for (epoch, offset) in [(1, 11), (1, 12), (2, 13), (2, 14), (3, 15), (3, 16)] {
            assign(&mut c, epoch, offset);
        }
        assert_eq!(c.end_offset_for(2, 17), (2, 15));
    }

    #[test]
    fn missing_epoch_answers_the_floor_epoch_and_the_next_start() {
        let (_d, mut c) = cache();
        assign(&mut c, 0, 10);
        assign(&mut c, 2, 13);
        assign(&mut c, 4, 17);
        assert_eq!(c.end_offset_for(1, 0), (0, 13));
        assert_eq!(c.end_offset_for(2, 0), (2, 17));
        assert_eq!(c.end_offset_for(3, 0), (2, 17));
    }

    #[test]
    fn requested_epoch_above_the_latest_is_undefined() {
        let (_d, mut c) = cache();
        assign(&mut c, 2, 100);
        assert_eq!(c.end_offset_for(3, 100), UNDEFINED);
    }

    #[test]
    fn epochs_need_not_start_at_zero() {
        let (_d, mut c) = cache();
        assign(&mut c, 2, 6);
        assert_eq!(c.end_offset_for(2, 7), (2, 7));
        assert_eq!(c.entries(), entries(&[(2, 6)]));
    }

    #[test]
    fn tracks_epochs_as_leaders_change() {
        let (_d, mut c) = cache();
        assign(&mut c, 0, 0);
        assign(&mut c, 1, 0);
        assert_eq!(c.latest_epoch(), Some(1));
        assert_eq!(c.end_offset_for(1, 0), (1, 0));
        assert_eq!(c.end_offset_for(0, 0), (0, 0));
        assert_eq!(c.end_offset_for(1, 5), (1, 5));
        assert_eq!(c.end_offset_for(0, 5), (0, 0));
        assign(&mut c, 2, 5);
        assert_eq!(c.end_offset_for(2, 10), (2, 10));
        assert_eq!(c.end_offset_for(1, 10), (1, 5));
        assert_eq!(c.end_offset_for(0, 10), (0, 0));
    }

    #[test]
    fn tracks_epochs_as_a_follower_receives_batches() {
        let (_d, mut c) = cache();
        for (epoch, offset) in [(0, 0), (0, 1), (0, 2)] {
            assign(&mut c, epoch, offset);
        }
        assert_eq!(c.end_offset_for(0, 3), (0, 3));
        for (epoch, offset) in [(1, 3), (1, 4), (1, 5)] {
            assign(&mut c, epoch, offset);
        }
        assert_eq!(c.end_offset_for(1, 6), (1, 6));
        for (epoch, offset) in [(2, 6), (2, 7), (2, 8)] {
            assign(&mut c, epoch, offset);
        }
        assert_eq!(c.latest_epoch(), Some(2));
        assert_eq!(c.end_offset_for(2, 9), (2, 9));
        assert_eq!(c.end_offset_for(0, 9), (0, 3));
        assert_eq!(c.end_offset_for(1, 9), (1, 6));
    }

    #[test]
    fn truncate_from_end_drops_entries_at_and_after_the_offset() {
        let (_d, mut c) = three_epochs();
        c.truncate_from_end(8).unwrap();
        assert_eq!(c.entries(), entries(&[(2, 6)]));
        let (_d, mut c) = three_epochs();
        c.truncate_from_end(9).unwrap();
        assert_eq!(c.latest_epoch(), Some(3));
        assert_eq!(c.entries(), entries(&[(2, 6), (3, 8)]));
        let (_d, mut c) = three_epochs();
        c.truncate_from_end(UNDEFINED_EPOCH_OFFSET).unwrap();
        assert_eq!(c.entries().len(), 3, "undefined offset changes nothing");
        let (_d, mut c) = cache();
        c.truncate_from_end(7).unwrap();
        assert!(c.is_empty());
    }

    #[test]
    fn truncate_from_start_moves_the_first_kept_epoch_to_the_new_start() {
        let (_d, mut c) = three_epochs();
        c.truncate_from_start(8).unwrap();
        assert_eq!(c.entries(), entries(&[(3, 8), (4, 11)]));
        let (_d, mut c) = three_epochs();
        c.truncate_from_start(1).unwrap();
        assert_eq!(
            c.entries(),
            entries(&[(2, 6), (3, 8), (4, 11)]),
            "too early"
        );
        let (_d, mut c) = three_epochs();
        c.truncate_from_start(6).unwrap();
        assert_eq!(
            c.entries(),
            entries(&[(2, 6), (3, 8), (4, 11)]),
            "first offset"
        );
        let (_d, mut c) = three_epochs();
        c.truncate_from_start(11).unwrap();
        assert_eq!(c.entries(), entries(&[(4, 11)]));
        let (_d, mut c) = three_epochs();
        c.truncate_from_start(9).unwrap();
        assert_eq!(c.entries(), entries(&[(3, 9), (4, 11)]));
        let (_d, mut c) = three_epochs();
        c.truncate_from_start(15).unwrap();
        assert_eq!(c.entries(), entries(&[(4, 15)]));
        let (_d, mut c) = three_epochs();
        c.truncate_from_start(UNDEFINED_EPOCH_OFFSET).unwrap();
        assert_eq!(c.entries().len(), 3);
        let (_d, mut c) = cache();
        c.truncate_from_start(7).unwrap();
        assert!(c.is_empty());

        let (_d, mut c) = cache();
        assign(&mut c, 0, 0);
        assign(&mut c, 1, 7);
        assign(&mut c, 2, 10);
        c.truncate_from_start(5).unwrap();
        assert_eq!(c.entries(), entries(&[(0, 5), (1, 7), (2, 10)]));
    }

    #[test]
    fn clear_removes_everything_durably() {
        let (dir, mut c) = three_epochs();
        c.clear().unwrap();
        assert!(c.is_empty());
        assert!(matches!(
            LeaderEpochCache::load(dir.path()).unwrap(),
            CheckpointRead::Loaded(loaded) if loaded.is_empty()
        ));
    }

    #[test]
    fn negative_entries_are_rejected() {
        let (_d, mut c) = cache();
        assert!(matches!(
            c.assign(-1, 0),
            Err(LogError::InvalidArgument { .. })
        ));
        assert!(matches!(
            c.assign(0, -5),
            Err(LogError::InvalidArgument { .. })
        ));
        assert!(c.is_empty());
    }

    #[test]
    fn checkpoint_round_trips_in_kafkas_format() {
        let (dir, c) = three_epochs();
        let text = std::fs::read_to_string(dir.path().join(LEADER_EPOCH_CHECKPOINT_FILE)).unwrap();
        assert_eq!(text, "0\n3\n2 6\n3 8\n4 11\n");
        match LeaderEpochCache::load(dir.path()).unwrap() {
            CheckpointRead::Loaded(loaded) => assert_eq!(loaded, c),
            other => panic!("expected the checkpoint back, got {other:?}"),
        }
        assert!(!dir.path().join(LEADER_EPOCH_CHECKPOINT_TMP_FILE).exists());
    }

    #[test]
    fn missing_and_malformed_checkpoints_are_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            LeaderEpochCache::load(dir.path()).unwrap(),
            CheckpointRead::Missing
        ));
        let path = dir.path().join(LEADER_EPOCH_CHECKPOINT_FILE);
        for garbage in [
            "",
            "1\n0\n",
            "0\n",
            "0\n2\n1 5\n",
            "0\n1\n1 5\n2 6\n",
            "0\n1\n1 five\n",
            "0\n1\n1 5 7\n",
            "0\n2\n2 5\n1 6\n",
            "0\n2\n1 5\n2 5\n",
            "0\n1\n-1 5\n",
            "0\nx\n",
        ] {
            std::fs::write(&path, garbage).unwrap();
            assert!(
                matches!(
                    LeaderEpochCache::load(dir.path()).unwrap(),
                    CheckpointRead::Unusable(_)
                ),
                "{garbage:?}"
            );
        }
        std::fs::write(&path, [0xff, 0xfe, b'\n']).unwrap();
        assert!(matches!(
            LeaderEpochCache::load(dir.path()).unwrap(),
            CheckpointRead::Unusable(_)
        ));
        // Kafka's separator is any whitespace.
        std::fs::write(&path, "0\n2\n1  5\n2\t9\n").unwrap();
        assert!(matches!(
            LeaderEpochCache::load(dir.path()).unwrap(),
            CheckpointRead::Loaded(c) if c.entries() == entries(&[(1, 5), (2, 9)])
        ));
    }

    #[test]
    fn rebuild_keeps_the_first_offset_of_each_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let batches = entries(&[(-1, 0), (0, 3), (0, 5), (2, 9), (2, 12), (5, 20)]);
        let c = LeaderEpochCache::rebuild(dir.path(), batches).unwrap();
        assert_eq!(c.entries(), entries(&[(0, 3), (2, 9), (5, 20)]));
        assert!(matches!(
            LeaderEpochCache::load(dir.path()).unwrap(),
            CheckpointRead::Loaded(loaded) if loaded == c
        ));
    }
}
