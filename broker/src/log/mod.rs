//! The durable, segmented log of one partition, with Kafka's on-disk layout and semantics.
//!
//! A partition directory holds segments named by base offset (`00000000000000000000.log`,
//! `.index`, `.timeindex`), a `recovery-point` file (offset below which data is known to be
//! fsynced), a `log-start-offset` file once DeleteRecords or retention has moved the start (see
//! `retention.rs`) and, between a clean `close()` and the next `open()`, a `clean-shutdown`
//! marker.
//!
//! Appends and reads work on whole record batches and only ever touch batch headers, never
//! individual records, so the produce and fetch paths cost a few header parses per batch and
//! one copy of the data.
//!
//! The log also keeps the partition's idempotent-producer state ([`producer_state`]), checked
//! and updated under the same `&mut self` as the append it guards. It is rebuilt from batch
//! headers on open, unless a clean close left a `<log end offset>.snapshot` of it.
//!
//! For replication it keeps the leader epoch cache ([`leader_epoch`], file
//! `leader-epoch-checkpoint`) and the high watermark (file `high-watermark`), and offers the
//! follower's operations: [`PartitionLog::append_as_follower`], [`PartitionLog::truncate_to`]
//! and [`PartitionLog::truncate_fully_and_start_at`]. The log never decides the high watermark;
//! the caller sets it.

pub mod batch;
pub mod index;
pub mod leader_epoch;
pub mod producer_state;
mod retention;
pub mod segment;

#[cfg(test)]
mod replication_tests;
#[cfg(test)]
mod tests;

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use bytes::Bytes;

pub use crate::log::batch::{BatchError, BatchHeader};
use crate::log::leader_epoch::{CheckpointRead, EpochEntry, LeaderEpochCache};
pub use crate::log::leader_epoch::{UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET};
pub use crate::log::producer_state::ProducerStateError;
use crate::log::producer_state::{
    ProducerBatch, ProducerStateManager, Validation, PRODUCER_ID_EXPIRATION_MS_DEFAULT,
};
pub use crate::log::retention::Retention;
use crate::log::segment::{Segment, INDEX_EXTENSION, LOG_EXTENSION, TIME_INDEX_EXTENSION};

/// File holding the recovery point: `"<version>\n<offset>\n"`, like Kafka's checkpoint files.
const RECOVERY_POINT_FILE: &str = "recovery-point";
/// Temporary name the recovery point is written under before the atomic rename.
const RECOVERY_POINT_TMP_FILE: &str = "recovery-point.tmp";
/// Format version written in every one-offset file (recovery point, high watermark, log start
/// offset).
const OFFSET_FILE_VERSION: u32 = 0;
/// A one-offset file is two short lines; anything bigger is garbage.
const OFFSET_FILE_BYTES_MAX: u64 = 64;
/// File holding the high watermark, `"<version>\n<offset>\n"` (Kafka keeps one
/// `replication-offset-checkpoint` per data directory; strait keeps one per partition).
pub const HIGH_WATERMARK_FILE: &str = "high-watermark";
/// Temporary name the high watermark is written under before the atomic rename.
const HIGH_WATERMARK_TMP_FILE: &str = "high-watermark.tmp";
/// Marker written by `close()`: its presence means the segments and indexes are consistent.
const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";
/// Extension of the producer state snapshot, `<log end offset, 20 digits>.snapshot` (Kafka's
/// name; the content is strait's own format).
const PRODUCER_SNAPSHOT_EXTENSION: &str = "snapshot";
/// A snapshot holds at most `PRODUCERS_PER_PARTITION_MAX` small entries; anything much bigger
/// is garbage and is not read into memory.
const MAX_PRODUCER_SNAPSHOT_BYTES: u64 = 256 * 1024 * 1024;
/// Kafka caps segment.bytes at Int.MaxValue, which keeps file positions within the u32 the
/// offset index stores.
const MAX_SEGMENT_BYTES: u64 = i32::MAX as u64;

/// Kafka error code OFFSET_OUT_OF_RANGE.
const OFFSET_OUT_OF_RANGE: i16 = 1;
/// Kafka error code CORRUPT_MESSAGE.
const CORRUPT_MESSAGE: i16 = 2;
/// Kafka error code KAFKA_STORAGE_ERROR.
const KAFKA_STORAGE_ERROR: i16 = 56;
/// Kafka error code INVALID_RECORD.
const INVALID_RECORD: i16 = 87;
/// Kafka error code UNKNOWN_SERVER_ERROR.
const UNKNOWN_SERVER_ERROR: i16 = -1;

/// Per-partition log settings (Kafka topic configs of the same meaning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// segment.bytes: roll when the active segment would exceed this (default 1 GiB).
    pub segment_bytes: u64,
    /// segment.ms: roll when the active segment is older than this (default 7 days).
    pub segment_ms: u64,
    /// segment.index.bytes: size limit of each index file; a full index rolls the segment
    /// (default 10 MiB).
    pub segment_index_bytes: u64,
    /// index.interval.bytes: bytes between sparse index entries (default 4096).
    pub index_interval_bytes: u64,
    /// flush.messages: fsync after this many appended records (u64::MAX = never, the default).
    pub flush_messages: u64,
    /// flush.ms: fsync when this long since the last flush (u64::MAX = never, the default).
    pub flush_ms: u64,
    /// max.message.bytes: largest record batch accepted (default 1048588).
    pub max_batch_bytes: usize,
    /// producer.id.expiration.ms: forget an idempotent producer whose last batch is this old
    /// (by the batch's max timestamp, as Kafka; default one day).
    pub producer_id_expiration_ms: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: crate::config::LOG_SEGMENT_BYTES_DEFAULT,
            segment_ms: crate::config::LOG_SEGMENT_MS_DEFAULT,
            segment_index_bytes: 10 * 1024 * 1024,
            index_interval_bytes: crate::config::LOG_INDEX_INTERVAL_BYTES_DEFAULT,
            flush_messages: u64::MAX,
            flush_ms: u64::MAX,
            max_batch_bytes: crate::config::MESSAGE_MAX_BYTES_DEFAULT as usize,
            producer_id_expiration_ms: PRODUCER_ID_EXPIRATION_MS_DEFAULT,
        }
    }
}

impl LogConfig {
    /// Rejects settings Kafka would also reject (or that would make the log misbehave).
    pub fn validate(&self) -> Result<(), LogError> {
        let invalid = |reason: &str| {
            Err(LogError::InvalidConfig {
                reason: reason.to_string(),
            })
        };
        if self.segment_bytes == 0 {
            return invalid("segment_bytes must be positive");
        }
        if self.segment_ms == 0 {
            return invalid("segment_ms must be positive");
        }
        if self.segment_index_bytes < index::TimeIndex::ENTRY_BYTES as u64 {
            return invalid("segment_index_bytes must hold at least one index entry");
        }
        if self.flush_messages == 0 {
            return invalid("flush_messages must be positive");
        }
        if self.max_batch_bytes < batch::HEADER_BYTES {
            return invalid("max_batch_bytes must be at least one batch header");
        }
        if self.producer_id_expiration_ms == 0 {
            return invalid("producer_id_expiration_ms must be positive");
        }
        Ok(())
    }
}

/// Errors of the partition log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file system operation failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A fetch asked for an offset the log does not have.
    #[error("offset {offset} is out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        /// The requested offset.
        offset: i64,
        /// First offset in the log.
        log_start_offset: i64,
        /// Next offset to be assigned.
        log_end_offset: i64,
    },
    /// A batch handed to `append` is invalid.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// A batch failed the idempotent-producer checks (epoch or sequence).
    #[error(transparent)]
    Producer(#[from] ProducerStateError),
    /// A call was made with arguments that do not fit together.
    #[error("invalid argument: {reason}")]
    InvalidArgument {
        /// What was wrong.
        reason: String,
    },
    /// Stored data turned out to be corrupt while serving a request.
    #[error("corrupt data in {path} at byte {position}: {reason}")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte position of the bad batch.
        position: u64,
        /// What was wrong.
        reason: String,
    },
    /// The configuration is unusable.
    #[error("invalid log config: {reason}")]
    InvalidConfig {
        /// What was wrong.
        reason: String,
    },
    /// The log was closed; it must be reopened before it can change again.
    #[error("log in {dir} is closed")]
    Closed {
        /// The partition directory.
        dir: PathBuf,
    },
    /// Replicated batches handed to `append_as_follower` do not continue the log: the first
    /// must start at the log end offset and each next one where the previous ends (Kafka's
    /// UnexpectedAppendOffsetException and OffsetsOutOfOrderException). The follower must
    /// truncate or refetch from `expected_offset`.
    #[error(
        "replicated batch with offsets {base_offset}..={last_offset} does not continue the log \
         at offset {expected_offset}"
    )]
    UnexpectedAppendOffset {
        /// Where the batch had to start (the log end offset, or the previous batch's end).
        expected_offset: i64,
        /// First offset of the offending batch.
        base_offset: i64,
        /// Last offset of the offending batch.
        last_offset: i64,
    },
}

impl LogError {
    /// The Kafka error code a response should carry for this error.
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            LogError::OffsetOutOfRange { .. } => OFFSET_OUT_OF_RANGE,
            LogError::Batch(e) => e.kafka_error_code(),
            LogError::Producer(e) => e.kafka_error_code(),
            LogError::InvalidArgument { .. } => INVALID_RECORD,
            LogError::Corrupt { .. } => CORRUPT_MESSAGE,
            LogError::Io { .. } | LogError::Closed { .. } => KAFKA_STORAGE_ERROR,
            LogError::InvalidConfig { .. } | LogError::UnexpectedAppendOffset { .. } => {
                UNKNOWN_SERVER_ERROR
            }
        }
    }
}

/// Offsets assigned by one `append`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the first record appended (of the original batch for a duplicate).
    pub first_offset: i64,
    /// Offset of the last record appended (of the original batch for a duplicate).
    pub last_offset: i64,
    /// Set when the append was an idempotent producer's retry of a batch already in the log:
    /// nothing was written and the offsets are those of the original batch.
    pub duplicate: Option<Duplicate>,
}

/// The batch already in the log that an append turned out to repeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duplicate {
    /// The producer that retried.
    pub producer_id: i64,
    /// The original batch's max timestamp as stored (its append time on LogAppendTime topics).
    pub max_timestamp_ms: i64,
}

/// The log of one partition: an ordered list of segments, the last one active.
///
/// Mutating methods take `&mut self`; `read` and the lookups take `&self` and use positional
/// reads, so the broker can serve fetches concurrently under a read lock.
#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    /// Sorted by base offset, dense (each segment starts where the previous ends), never empty.
    segments: Vec<Segment>,
    /// First offset a client may read (Kafka's log start offset): at or above the first
    /// segment's base offset, at most the log end offset. Moved by DeleteRecords and retention,
    /// persisted in the `log-start-offset` file.
    log_start_offset: i64,
    /// Every offset below this is fsynced (Kafka's recovery point).
    recovery_point: i64,
    /// When the recovery-point file was last rewritten by `flush` (None: not since open).
    recovery_point_saved_at: Option<std::time::Instant>,
    last_flush_ms: i64,
    closed: bool,
    /// Idempotent producers seen in this partition; always consistent with the segments.
    producers: ProducerStateManager,
    /// First offset of every leader epoch in the log; its file never lacks an epoch the
    /// segments hold (an epoch is assigned before its batches are written).
    epochs: LeaderEpochCache,
    /// Offsets below this are committed (replicated to the whole ISR); set by the caller,
    /// always within `[log_start_offset, log_end_offset]`.
    high_watermark: i64,
    /// The high watermark last written to the `high-watermark` file (None: not since open).
    high_watermark_saved: Option<i64>,
}

/// How often `flush` rewrites the recovery-point file (Kafka's
/// `log.flush.offset.checkpoint.interval.ms`). Rewriting it on every flush would cost two more
/// fsyncs per flush; a stale file is safe, it only makes recovery after a crash scan more.
const RECOVERY_POINT_SAVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Wraps an `io::Error` with what was being done to which path.
pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> LogError + 'a {
    move |source| LogError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Fsyncs a directory, making file creations, renames and deletions in it durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    crate::files::sync_dir(dir).map_err(LogError::from)
}

impl From<crate::files::FileError> for LogError {
    fn from(e: crate::files::FileError) -> LogError {
        LogError::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        }
    }
}

fn remove_if_exists(path: &Path) -> Result<(), LogError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LogError::Io {
            op: "delete",
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// Deletes the files of a segment that was never opened (dropped during recovery).
fn delete_segment_files(dir: &Path, base_offset: i64) -> Result<(), LogError> {
    for extension in [INDEX_EXTENSION, TIME_INDEX_EXTENSION, LOG_EXTENSION] {
        remove_if_exists(&dir.join(segment::file_name(base_offset, extension)))?;
    }
    Ok(())
}

/// Reads a one-offset file (`"<version>\n<offset>\n"`: the recovery point, the high watermark,
/// the log start offset); None when it is missing or unreadable, in which case a warning says
/// what happens instead (`fallback`).
pub(crate) fn read_offset_file(
    dir: &Path,
    name: &str,
    fallback: &str,
) -> Result<Option<i64>, LogError> {
    let path = dir.join(name);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("open", &path)(e)),
    };
    let mut bytes = Vec::new();
    // Bounded read: a garbage file cannot make us allocate much.
    file.take(OFFSET_FILE_BYTES_MAX)
        .read_to_end(&mut bytes)
        .map_err(io_err("read", &path))?;
    let text = String::from_utf8_lossy(&bytes);
    let mut lines = text.lines();
    let parsed = match (lines.next(), lines.next(), lines.next()) {
        (Some(version), Some(offset), None)
            if version.trim() == OFFSET_FILE_VERSION.to_string() =>
        {
            offset.trim().parse::<i64>().ok().filter(|o| *o >= 0)
        }
        _ => None,
    };
    if parsed.is_none() {
        tracing::warn!(path = %path.display(), "unreadable {name} file, {fallback}");
    }
    Ok(parsed)
}

/// Writes a one-offset file atomically through `<name>.tmp` (write, fsync, rename); the
/// directory is fsynced too when `durable_rename` is set.
pub(crate) fn write_offset_file(
    dir: &Path,
    name: &str,
    offset: i64,
    durable_rename: bool,
) -> Result<(), LogError> {
    write_file_atomically(
        &dir.join(name),
        format!("{OFFSET_FILE_VERSION}\n{offset}\n").as_bytes(),
    )?;
    if durable_rename {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Reads the recovery point; a missing or unreadable file means "recover everything" (0).
fn read_recovery_point(dir: &Path) -> Result<i64, LogError> {
    Ok(read_offset_file(dir, RECOVERY_POINT_FILE, "recovering the whole log")?.unwrap_or(0))
}

/// Writes the recovery point. The directory is fsynced only when `durable_rename` is set: a
/// lost rename leaves the previous, lower recovery point, which is always safe, except when the
/// point moves down (truncation).
fn write_recovery_point(dir: &Path, offset: i64, durable_rename: bool) -> Result<(), LogError> {
    write_offset_file(dir, RECOVERY_POINT_FILE, offset, durable_rename)
}

/// Writes `bytes` to `path` through `<path>.tmp` (write, fsync, rename), without fsyncing the
/// directory: the caller does ([`sync_dir`]) when the rename must be durable.
pub(crate) fn write_file_atomically(path: &Path, bytes: &[u8]) -> Result<(), LogError> {
    crate::files::write_atomically(path, bytes, crate::files::RenameDurability::MayRevert)
        .map_err(LogError::from)
}

/// Reads the saved high watermark; None when the file is missing or unreadable (the log then
/// starts from its log start offset, as Kafka does for a partition missing from its
/// checkpoint). The value is clamped by the caller.
fn read_high_watermark(dir: &Path) -> Result<Option<i64>, LogError> {
    read_offset_file(
        dir,
        HIGH_WATERMARK_FILE,
        "starting from the log start offset",
    )
}

/// Writes the high watermark. As for the recovery point, the directory is fsynced only when
/// `durable_rename` is set: a lost rename leaves an older value, which names records that were
/// committed at the time (a lower one only hides some until the leader's next fetch
/// response); but a value lowered by truncation must not come back, so that one is durable.
fn write_high_watermark(dir: &Path, offset: i64, durable_rename: bool) -> Result<(), LogError> {
    write_offset_file(dir, HIGH_WATERMARK_FILE, offset, durable_rename)
}

/// The producer state snapshots in `dir`, as (offset, path); leftovers of an interrupted
/// snapshot write are deleted.
fn producer_snapshots(dir: &Path) -> Result<Vec<(i64, PathBuf)>, LogError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.ends_with(&format!(".{PRODUCER_SNAPSHOT_EXTENSION}.tmp")) {
            remove_if_exists(&path)?;
            continue;
        }
        if let Some(stem) = name.strip_suffix(&format!(".{PRODUCER_SNAPSHOT_EXTENSION}")) {
            match segment::parse_base_offset(stem) {
                Some(offset) => found.push((offset, path)),
                None => remove_if_exists(&path)?,
            }
        }
    }
    Ok(found)
}

/// Reads one snapshot file, bounded in size.
fn read_producer_snapshot(
    path: &Path,
    expiration_ms: u64,
) -> Result<(i64, ProducerStateManager), String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(MAX_PRODUCER_SNAPSHOT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_PRODUCER_SNAPSHOT_BYTES {
        return Err(format!("larger than {MAX_PRODUCER_SNAPSHOT_BYTES} bytes"));
    }
    ProducerStateManager::from_snapshot(&bytes, expiration_ms).map_err(|e| e.to_string())
}

/// Rebuilds the producer state by reading every batch header of `segments` (never the records),
/// as Kafka does when it has no snapshot. A segment whose headers turn out to be damaged
/// (possible only in a segment trusted after a clean shutdown) contributes what precedes the
/// damage; reads of it fail the same way later.
fn rebuild_producer_state(
    segments: &[Segment],
    expiration_ms: u64,
) -> Result<ProducerStateManager, LogError> {
    let mut state = ProducerStateManager::new(expiration_ms);
    for segment in segments {
        let scanned =
            segment.for_each_batch_header(|header| state.replay(&ProducerBatch::stored(header)));
        match scanned {
            Ok(()) => {}
            Err(e @ LogError::Corrupt { .. }) => {
                tracing::warn!(error = %e, "producer state rebuilt from the batches before the damage only");
            }
            Err(e) => return Err(e),
        }
    }
    state.trim_to_limit();
    Ok(state)
}

/// The producer state of a log being opened: from the snapshot a clean close left at
/// `log_end_offset`, else rebuilt from the segments. Every snapshot file is deleted afterwards,
/// since appends make it stale; `close` writes a fresh one.
fn load_producer_state(
    dir: &Path,
    segments: &[Segment],
    clean: bool,
    log_end_offset: i64,
    config: &LogConfig,
    now_ms: i64,
) -> Result<ProducerStateManager, LogError> {
    let snapshots = producer_snapshots(dir)?;
    let mut loaded = None;
    if clean {
        if let Some((_, path)) = snapshots.iter().find(|(o, _)| *o == log_end_offset) {
            match read_producer_snapshot(path, config.producer_id_expiration_ms) {
                Ok((_, state)) => loaded = Some(state),
                Err(reason) => tracing::warn!(path = %path.display(), %reason,
                    "ignoring producer state snapshot; rebuilding from the log"),
            }
        }
    }
    for (_, path) in &snapshots {
        remove_if_exists(path)?;
    }
    let from_snapshot = loaded.is_some();
    let mut state = match loaded {
        Some(state) => state,
        None => rebuild_producer_state(segments, config.producer_id_expiration_ms)?,
    };
    let expired = state.remove_expired(now_ms);
    tracing::debug!(dir = %dir.display(), producers = state.len(), expired, from_snapshot,
        "producer state loaded");
    Ok(state)
}

/// What a partition directory contains.
struct DirListing {
    /// Base offsets of well-named `.log` files, sorted.
    log_bases: Vec<i64>,
}

fn list_dir(dir: &Path) -> Result<DirListing, LogError> {
    let mut log_bases = Vec::new();
    let mut index_files = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            tracing::warn!(path = %path.display(), "ignoring file with a non-UTF-8 name");
            continue;
        };
        let Some((stem, extension)) = name.rsplit_once('.') else {
            continue;
        };
        match extension {
            LOG_EXTENSION => match segment::parse_base_offset(stem) {
                Some(base) => log_bases.push(base),
                None => tracing::warn!(path = %path.display(),
                    "ignoring .log file whose name is not a 20-digit base offset"),
            },
            INDEX_EXTENSION | TIME_INDEX_EXTENSION => {
                index_files.push((segment::parse_base_offset(stem), path));
            }
            _ if name == RECOVERY_POINT_TMP_FILE
                || name == retention::LOG_START_OFFSET_TMP_FILE
                || name == HIGH_WATERMARK_TMP_FILE
                || name == leader_epoch::LEADER_EPOCH_CHECKPOINT_TMP_FILE =>
            {
                // Left over from a crash mid-write; the real file is intact.
                remove_if_exists(&path)?;
            }
            retention::DELETED_EXTENSION => {
                // A segment file renamed by retention or DeleteRecords whose removal a crash
                // interrupted; it is no longer part of the log.
                tracing::info!(path = %path.display(), "removing file of a deleted segment");
                remove_if_exists(&path)?;
            }
            _ => {}
        }
    }
    log_bases.sort_unstable();
    for (base, path) in index_files {
        let has_log = base.is_some_and(|b| log_bases.binary_search(&b).is_ok());
        if !has_log {
            tracing::warn!(path = %path.display(), "deleting index file without a segment");
            remove_if_exists(&path)?;
        }
    }
    Ok(DirListing { log_bases })
}

impl PartitionLog {
    /// Opens (creating if needed) and recovers the log in `dir`.
    ///
    /// After a clean shutdown the segments are trusted (indexes are loaded, and rebuilt only if
    /// missing or invalid). Otherwise every segment from the one containing the recovery point
    /// onward is scanned batch by batch; the log is cut at the first torn or corrupt batch and
    /// later segments are deleted.
    pub fn open(dir: &Path, config: LogConfig, now_ms: i64) -> Result<PartitionLog, LogError> {
        config.validate()?;
        fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        let listing = list_dir(dir)?;
        let bases = listing.log_bases;
        let marker = dir.join(CLEAN_SHUTDOWN_FILE);
        let clean = marker.exists();
        let stored_recovery_point = read_recovery_point(dir)?;
        // Segments before the one containing the recovery point were fsynced and are trusted.
        let recover_from = if clean {
            bases.len()
        } else {
            bases
                .partition_point(|b| *b <= stored_recovery_point)
                .saturating_sub(1)
        };
        tracing::debug!(dir = %dir.display(), segments = bases.len(), clean,
            recovery_point = stored_recovery_point, "opening partition log");

        let mut segments: Vec<Segment> = Vec::with_capacity(bases.len().max(1));
        let mut recovered = Vec::with_capacity(bases.len().max(1));
        for (i, &base) in bases.iter().enumerate() {
            if let Some(previous) = segments.last() {
                if base != previous.next_offset() {
                    tracing::warn!(dir = %dir.display(), expected = previous.next_offset(),
                        found = base, dropped_segments = bases.len() - i,
                        "offsets are not dense across segments; deleting the later segments");
                    for &later in &bases[i..] {
                        delete_segment_files(dir, later)?;
                    }
                    break;
                }
            }
            let (segment, damage, was_recovered) = if i < recover_from {
                match Segment::load_trusted(dir, base, &config, now_ms)? {
                    Ok(segment) => (segment, None, false),
                    Err(reason) => {
                        tracing::warn!(%reason, "rebuilding segment indexes");
                        let (segment, damage) = Segment::recover(dir, base, &config, now_ms)?;
                        (segment, damage, true)
                    }
                }
            } else {
                let (segment, damage) = Segment::recover(dir, base, &config, now_ms)?;
                (segment, damage, true)
            };
            segments.push(segment);
            recovered.push(was_recovered);
            if damage.is_some() && i + 1 < bases.len() {
                tracing::warn!(dir = %dir.display(), dropped_segments = bases.len() - i - 1,
                    "deleting segments after the corrupt one");
                for &later in &bases[i + 1..] {
                    delete_segment_files(dir, later)?;
                }
                break;
            }
        }
        if segments.is_empty() {
            segments.push(Segment::create(dir, 0, &config)?);
            recovered.push(true);
        }

        let log_end_offset = segments.last().map_or(0, Segment::next_offset);
        let any_recovered = recovered.iter().any(|r| *r);
        let last = segments.len() - 1;
        for (i, segment) in segments.iter_mut().enumerate() {
            if recovered[i] {
                // Rebuilt data must reach the disk before the recovery point may pass it;
                // inactive segments also get their final time index entry, as at roll time.
                if i < last {
                    segment.seal()?;
                } else {
                    segment.flush()?;
                }
            }
        }
        let recovery_point = if any_recovered {
            write_recovery_point(dir, log_end_offset, false)?;
            log_end_offset
        } else {
            stored_recovery_point.min(log_end_offset)
        };
        let producers =
            load_producer_state(dir, &segments, clean, log_end_offset, &config, now_ms)?;
        if clean {
            // From here on the files may change, so a crash must not be mistaken for a clean
            // shutdown.
            remove_if_exists(&marker)?;
            sync_dir(dir)?;
        }
        tracing::debug!(dir = %dir.display(), log_start_offset = segments[0].base_offset(),
            log_end_offset, segments = segments.len(), "partition log opened");
        let log_start_offset = segments[0].base_offset();
        let mut log = PartitionLog {
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset,
            recovery_point,
            recovery_point_saved_at: None,
            last_flush_ms: now_ms,
            closed: false,
            producers,
            epochs: LeaderEpochCache::empty(dir),
            high_watermark: log_start_offset,
            high_watermark_saved: None,
        };
        log.restore_log_start_offset()?;
        log.load_leader_epochs()?;
        log.restore_high_watermark()?;
        log.assert_dense();
        Ok(log)
    }

    /// Offsets are contiguous across segments: each segment starts where the one before it
    /// ends (recovery cuts a log at its first gap, so a gap here is a bug, not bad data), and
    /// `log start <= high watermark <= log end`.
    fn assert_dense(&self) {
        for pair in self.segments.windows(2) {
            assert_eq!(
                pair[0].next_offset(),
                pair[1].base_offset(),
                "{}: segments {} and {} are not contiguous",
                self.dir.display(),
                pair[0].base_offset(),
                pair[1].base_offset()
            );
        }
        assert!(
            self.log_start_offset <= self.high_watermark
                && self.high_watermark <= self.log_end_offset(),
            "{}: high watermark {} outside [{}, {}]",
            self.dir.display(),
            self.high_watermark,
            self.log_start_offset,
            self.log_end_offset()
        );
    }

    /// Called once by `open`, after the log start is known: loads the leader epoch cache, or
    /// rebuilds it from the batch headers when the checkpoint is missing or unusable, then
    /// drops entries past the recovered log end (batches lost to an unclean shutdown, or an
    /// epoch assigned before a crash prevented its write) and before the log start.
    fn load_leader_epochs(&mut self) -> Result<(), LogError> {
        let mut epochs = match LeaderEpochCache::load(&self.dir)? {
            CheckpointRead::Loaded(epochs) => epochs,
            CheckpointRead::Missing => {
                tracing::info!(dir = %self.dir.display(),
                    "no leader epoch checkpoint; rebuilding it from the batch headers");
                self.rebuild_leader_epochs()?
            }
            CheckpointRead::Unusable(reason) => {
                tracing::warn!(dir = %self.dir.display(), %reason,
                    "unusable leader epoch checkpoint; rebuilding it from the batch headers");
                self.rebuild_leader_epochs()?
            }
        };
        epochs.truncate_from_end(self.log_end_offset())?;
        epochs.truncate_from_start(self.log_start_offset)?;
        tracing::debug!(dir = %self.dir.display(), epochs = epochs.entries().len(),
            latest = ?epochs.latest_entry(), "leader epoch cache loaded");
        self.epochs = epochs;
        Ok(())
    }

    /// The epoch cache the batch headers imply (one header read per batch, no record read).
    /// A segment whose headers turn out to be damaged contributes what precedes the damage,
    /// as for the producer state.
    fn rebuild_leader_epochs(&self) -> Result<LeaderEpochCache, LogError> {
        // One entry per change of epoch, not per batch, so this stays small.
        let mut changes: Vec<EpochEntry> = Vec::new();
        for segment in &self.segments {
            let scanned = segment.for_each_batch_header(|header| {
                if changes.last().map(|e| e.epoch) != Some(header.partition_leader_epoch) {
                    changes.push(EpochEntry::new(
                        header.partition_leader_epoch,
                        header.base_offset,
                    ));
                }
            });
            match scanned {
                Ok(()) => {}
                Err(e @ LogError::Corrupt { .. }) => {
                    tracing::warn!(error = %e,
                        "leader epochs rebuilt from the batches before the damage only");
                }
                Err(e) => return Err(e),
            }
        }
        LeaderEpochCache::rebuild(&self.dir, changes)
    }

    /// Called once by `open`: the saved high watermark, clamped to the recovered log.
    fn restore_high_watermark(&mut self) -> Result<(), LogError> {
        let stored = read_high_watermark(&self.dir)?;
        self.high_watermark = self.clamp_to_log(stored.unwrap_or(self.log_start_offset));
        self.high_watermark_saved = stored;
        Ok(())
    }

    /// `offset` limited to `[log_start_offset, log_end_offset]`.
    fn clamp_to_log(&self, offset: i64) -> i64 {
        // Not `i64::clamp`, which panics if the bounds were ever inverted.
        offset.max(self.log_start_offset).min(self.log_end_offset())
    }

    fn active(&self) -> &Segment {
        self.segments
            .last()
            .expect("a partition log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .last_mut()
            .expect("a partition log always has an active segment")
    }

    fn ensure_open(&self) -> Result<(), LogError> {
        if self.closed {
            return Err(LogError::Closed {
                dir: self.dir.clone(),
            });
        }
        Ok(())
    }

    /// Appends one or more batches that [`batch::split_and_validate`] accepted (the caller
    /// passes the headers it got). Assigns offsets: rewrites each batch's base offset to the
    /// next offset; sets the partition leader epoch; when `log_append_time_ms` is Some,
    /// rewrites timestamps as LogAppendTime. Rolls first if needed. Returns the first and last
    /// offset assigned.
    ///
    /// Batches of idempotent producers are checked first, all of them before any byte is
    /// written (see [`producer_state`]): a retry of a recent batch writes nothing and returns
    /// the original offsets with [`AppendInfo::duplicate`] set; a fenced epoch or a sequence
    /// gap fails with [`LogError::Producer`].
    pub fn append(
        &mut self,
        records: &mut [u8],
        headers: &[BatchHeader],
        leader_epoch: i32,
        log_append_time_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        self.ensure_open()?;
        let invalid = |reason: String| Err(LogError::InvalidArgument { reason });
        if headers.is_empty() {
            return invalid("append without batches".to_string());
        }
        if leader_epoch < 0 {
            // Replication needs every stored batch to name the epoch that wrote it.
            return invalid(format!("append with negative leader epoch {leader_epoch}"));
        }
        if records.len() as u64 > MAX_SEGMENT_BYTES {
            return invalid(format!(
                "append of {} bytes exceeds the maximum segment size",
                records.len()
            ));
        }
        // Cheap consistency check of headers against bytes, so a caller mix-up cannot corrupt
        // the log: lengths must tile the buffer exactly.
        let mut position = 0usize;
        let mut offset_count = 0i64;
        for header in headers {
            let total = header.total_len_bytes();
            if total > self.config.max_batch_bytes {
                return Err(BatchError::TooLarge {
                    size_bytes: total,
                    limit_bytes: self.config.max_batch_bytes,
                }
                .into());
            }
            let end = position + total;
            if end > records.len()
                || records[position + 8..position + 12] != header.batch_length.to_be_bytes()
            {
                return invalid(format!(
                    "batch header at byte {position} does not match the records"
                ));
            }
            header.check_stored()?;
            offset_count += i64::from(header.last_offset_delta) + 1;
            position = end;
        }
        if position != records.len() {
            return invalid(format!(
                "headers cover {position} of {} record bytes",
                records.len()
            ));
        }
        let first_offset = self.log_end_offset();
        let last_offset = first_offset + offset_count - 1;

        let mut producer_batches = Vec::with_capacity(headers.len());
        let mut next_offset = first_offset;
        for header in headers {
            let max_timestamp_ms = log_append_time_ms.unwrap_or(header.max_timestamp);
            producer_batches.push(ProducerBatch::new(header, next_offset, max_timestamp_ms));
            next_offset += i64::from(header.last_offset_delta) + 1;
        }
        let pending = match self.producers.validate(&producer_batches)? {
            Validation::Append(pending) => pending,
            Validation::Duplicate {
                producer_id,
                original,
            } => {
                tracing::debug!(dir = %self.dir.display(), producer_id,
                    first_sequence = original.first_sequence, first_offset = original.first_offset,
                    "duplicate batch from an idempotent producer, answered with its original offsets");
                return Ok(AppendInfo {
                    first_offset: original.first_offset,
                    last_offset: original.last_offset,
                    duplicate: Some(Duplicate {
                        producer_id,
                        max_timestamp_ms: original.max_timestamp_ms,
                    }),
                });
            }
        };

        self.maybe_roll(records.len(), last_offset, now_ms)?;

        let mut rewritten = Vec::with_capacity(headers.len());
        let mut position = 0usize;
        let mut next_offset = first_offset;
        for header in headers {
            let batch = &mut records[position..position + header.total_len_bytes()];
            batch::set_base_offset(batch, next_offset)?;
            batch::set_partition_leader_epoch(batch, leader_epoch)?;
            if let Some(ts_ms) = log_append_time_ms {
                batch::set_log_append_time(batch, ts_ms)?;
            }
            let header = BatchHeader::parse(batch)?;
            next_offset = header.next_offset();
            position += header.total_len_bytes();
            rewritten.push(header);
        }
        // Before the write, so the checkpoint never lacks an epoch the log holds. If the write
        // then fails, the entry names the log end, as after Kafka's makeLeader: harmless.
        self.epochs.assign(leader_epoch, first_offset)?;
        self.active_mut().append(records, &rewritten, now_ms)?;
        self.producers.commit(pending);

        // Offsets are dense: the log now ends one past the last offset written.
        assert_eq!(
            self.log_end_offset(),
            last_offset + 1,
            "{}: log end offset after appending {first_offset}..={last_offset}",
            self.dir.display()
        );
        let unflushed = u64::try_from(self.log_end_offset() - self.recovery_point).unwrap_or(0);
        if unflushed >= self.config.flush_messages {
            self.flush()?;
            self.last_flush_ms = now_ms;
        }
        Ok(AppendInfo {
            first_offset,
            last_offset,
            duplicate: None,
        })
    }

    /// Appends batches a follower fetched from its leader (Kafka's `appendAsFollower`): whole
    /// batches exactly as the leader stored them, base offsets and partition leader epochs
    /// included. Each batch is checked (magic 2, lengths, CRC, header sanity); a trailing
    /// partial batch is dropped, as Kafka does with fetched data (the next fetch starts at the
    /// new log end and gets it whole). The first batch must start at the log end offset and
    /// the others follow densely, else [`LogError::UnexpectedAppendOffset`]. Every batch must
    /// carry a leader epoch (>= 0). Nothing is written unless every batch passes.
    ///
    /// One exception to "starts at the log end", as in Kafka's
    /// `Partition.appendRecordsToFollowerOrFutureReplica`: when the log is empty (log end ==
    /// log start, as after [`truncate_fully_and_start_at`](Self::truncate_fully_and_start_at)
    /// with the leader's log start) and the first batch contains the log end offset, the
    /// leader's log start lies inside that batch (DeleteRecords); the log restarts at the
    /// batch's base offset and keeps its log start.
    ///
    /// New epochs go into the leader epoch cache before the write; the producer state replays
    /// the batches unchecked (the leader already judged them). Rolls and flushes as
    /// [`append`](Self::append) does; `max.message.bytes` does not apply (as in Kafka, the
    /// leader accepted the batch). Returns the first and last offset appended; empty input (or
    /// only a partial batch) appends nothing and returns `last_offset == first_offset - 1 ==
    /// log end offset - 1`.
    pub fn append_as_follower(
        &mut self,
        records: &[u8],
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        self.ensure_open()?;
        let (headers, whole_bytes) = batch::split_fetched(records)?;
        let log_end_offset = self.log_end_offset();
        let (Some(first), Some(last)) = (headers.first().copied(), headers.last().copied()) else {
            return Ok(AppendInfo {
                first_offset: log_end_offset,
                last_offset: log_end_offset - 1,
                duplicate: None,
            });
        };
        if whole_bytes as u64 > MAX_SEGMENT_BYTES {
            return Err(LogError::InvalidArgument {
                reason: format!("append of {whole_bytes} bytes exceeds the maximum segment size"),
            });
        }
        if let Some(header) = headers.iter().find(|h| h.partition_leader_epoch < 0) {
            return Err(LogError::InvalidArgument {
                reason: format!(
                    "replicated batch at offset {} has no partition leader epoch ({})",
                    header.base_offset, header.partition_leader_epoch
                ),
            });
        }
        let log_start_offset = self.log_start_offset;
        let restart_below_start = log_end_offset == log_start_offset
            && first.base_offset < log_end_offset
            && first.last_offset() >= log_end_offset;
        let mut expected_offset = if restart_below_start {
            first.base_offset
        } else {
            log_end_offset
        };
        for header in &headers {
            if header.base_offset != expected_offset {
                return Err(LogError::UnexpectedAppendOffset {
                    expected_offset,
                    base_offset: header.base_offset,
                    // Saturating: a bogus base offset may sit anywhere up to i64::MAX.
                    last_offset: header
                        .base_offset
                        .saturating_add(i64::from(header.last_offset_delta)),
                });
            }
            expected_offset = header.next_offset();
        }
        let (first_offset, last_offset) = (first.base_offset, last.last_offset());
        let records = &records[..whole_bytes];

        if restart_below_start {
            tracing::info!(dir = %self.dir.display(), log_start_offset, batch_base_offset = first_offset,
                "the leader's log start lies inside the first fetched batch; restarting the empty log at the batch");
            self.truncate_fully_and_start_at(first_offset)?;
        }
        self.maybe_roll(records.len(), last_offset, now_ms)?;
        let mut epochs: Vec<EpochEntry> = Vec::new();
        for header in &headers {
            if epochs.last().map(|e| e.epoch) != Some(header.partition_leader_epoch) {
                epochs.push(EpochEntry::new(
                    header.partition_leader_epoch,
                    header.base_offset,
                ));
            }
        }
        // Before the write, so the checkpoint never lacks an epoch the log holds.
        let epochs_changed = self.epochs.assign_all(&epochs)?;
        if let Err(e) = self.active_mut().append(records, &headers, now_ms) {
            if self.log_end_offset() == first_offset {
                // Nothing landed: entries naming offsets beyond the log end would mislead
                // OffsetsForLeaderEpoch answers, so take them back.
                if epochs_changed {
                    if let Err(undo) = self.epochs.truncate_from_end(first_offset) {
                        tracing::warn!(dir = %self.dir.display(), error = %undo,
                            "cannot take back leader epochs of a failed append; the next open drops them");
                    }
                }
            } else {
                // The data landed and only an index write failed: the producer state must
                // still describe the log.
                self.replay_producers(&headers);
            }
            return Err(e);
        }
        self.replay_producers(&headers);
        if restart_below_start {
            self.advance_log_start_offset_for(log_start_offset, "the leader's log start")?;
        }

        // Offsets are dense: the log now ends one past the last offset written.
        assert_eq!(
            self.log_end_offset(),
            last_offset + 1,
            "{}: log end offset after appending {first_offset}..={last_offset}",
            self.dir.display()
        );
        let unflushed = u64::try_from(self.log_end_offset() - self.recovery_point).unwrap_or(0);
        if unflushed >= self.config.flush_messages {
            self.flush()?;
            self.last_flush_ms = now_ms;
        }
        Ok(AppendInfo {
            first_offset,
            last_offset,
            duplicate: None,
        })
    }

    /// Applies stored batches to the producer state unchecked (Kafka's replication origin).
    fn replay_producers(&mut self, headers: &[BatchHeader]) {
        for header in headers {
            self.producers.replay(&ProducerBatch::stored(header));
        }
        self.producers.trim_to_limit();
    }

    /// Records that `leader_epoch` starts at the current log end (Kafka's
    /// `maybeAssignEpochStartOffset`, called when this replica becomes leader), so that a
    /// follower asking for the end of an older epoch learns where this leader's history
    /// departs from it even before the new leader appends anything. A no-op when
    /// `leader_epoch` is already the latest epoch.
    pub fn assign_epoch_start_offset(&mut self, leader_epoch: i32) -> Result<(), LogError> {
        self.ensure_open()?;
        let log_end_offset = self.log_end_offset();
        self.epochs.assign(leader_epoch, log_end_offset)?;
        Ok(())
    }

    /// The newest leader epoch that wrote to this log (or was assigned at its end), if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.latest_epoch()
    }

    /// Kafka's `endOffsetForEpoch`, the answer to OffsetsForLeaderEpoch: the largest epoch <=
    /// `leader_epoch` this log knows and the offset where it ends (see
    /// [`LeaderEpochCache::end_offset_for`]); ([`UNDEFINED_EPOCH`], [`UNDEFINED_EPOCH_OFFSET`])
    /// when there is no such epoch.
    pub fn end_offset_for_epoch(&self, leader_epoch: i32) -> (i32, i64) {
        self.epochs
            .end_offset_for(leader_epoch, self.log_end_offset())
    }

    /// The leader epoch cache (read-only).
    pub fn leader_epoch_cache(&self) -> &LeaderEpochCache {
        &self.epochs
    }

    /// The high watermark: offsets below it are committed. On a single node the caller keeps
    /// it at the log end offset.
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    /// Sets the high watermark, clamped to `[log start offset, log end offset]` (it may move
    /// down: a follower takes the leader's value, which falls on a leader change). Returns the
    /// value set. Kept in memory; saved with the recovery point, at close and by
    /// [`checkpoint_high_watermark`](Self::checkpoint_high_watermark).
    pub fn set_high_watermark(&mut self, offset: i64) -> i64 {
        self.high_watermark = self.clamp_to_log(offset);
        self.high_watermark
    }

    /// Writes the high watermark to the `high-watermark` file if it changed since last saved
    /// (Kafka's `replica.high.watermark.checkpoint.interval.ms` task calls the equivalent).
    pub fn checkpoint_high_watermark(&mut self) -> Result<(), LogError> {
        self.ensure_open()?;
        if self.high_watermark_saved == Some(self.high_watermark) {
            return Ok(());
        }
        self.save_high_watermark(false)
    }

    fn save_high_watermark(&mut self, durable_rename: bool) -> Result<(), LogError> {
        write_high_watermark(&self.dir, self.high_watermark, durable_rename)?;
        self.high_watermark_saved = Some(self.high_watermark);
        Ok(())
    }

    /// Kafka's shouldRoll: size, age, full index or relative offset overflow, but only for a
    /// non-empty active segment (so an oversized append still lands, alone, in a segment).
    fn maybe_roll(
        &mut self,
        append_bytes: usize,
        last_offset: i64,
        now_ms: i64,
    ) -> Result<(), LogError> {
        let active = self.active();
        if active.size_bytes() > 0 {
            let segment_bytes = self.config.segment_bytes.min(MAX_SEGMENT_BYTES);
            let segment_ms = i64::try_from(self.config.segment_ms).unwrap_or(i64::MAX);
            let reason = if active.size_bytes() + append_bytes as u64 > segment_bytes {
                Some("segment.bytes")
            } else if now_ms.saturating_sub(active.rolling_base_ms().unwrap_or(now_ms))
                >= segment_ms
            {
                Some("segment.ms")
            } else if active.indexes_full() {
                Some("index full")
            } else if !active.can_hold_offset(last_offset) {
                Some("relative offset overflow")
            } else {
                None
            };
            if let Some(reason) = reason {
                self.roll(reason)?;
            }
        }
        if !self.active().can_hold_offset(last_offset) {
            return Err(LogError::InvalidArgument {
                reason: format!(
                    "append spans offsets {}..={last_offset}, too many for one segment",
                    self.log_end_offset()
                ),
            });
        }
        Ok(())
    }

    /// Seals and fsyncs the active segment, moves the recovery point to its end and starts a
    /// new segment there. Kafka does the flush asynchronously; doing it here keeps the
    /// recovery point simple and costs one fsync per segment.bytes of data.
    fn roll(&mut self, reason: &str) -> Result<(), LogError> {
        let new_base = self.log_end_offset();
        self.active_mut().seal()?;
        self.recovery_point = new_base;
        write_recovery_point(&self.dir, new_base, false)?;
        self.save_high_watermark(false)?;
        let segment = Segment::create(&self.dir, new_base, &self.config)?;
        tracing::info!(dir = %self.dir.display(), base_offset = new_base, reason, "rolled new segment");
        self.segments.push(segment);
        Ok(())
    }

    /// Reads whole batches starting at the batch that contains `fetch_offset`, at most
    /// `max_bytes`, but always the first whole batch even if bigger (Kafka KIP-74), never a
    /// batch with records at or beyond `max_offset_exclusive` (the high watermark). Reads from
    /// one segment only (as Kafka). Returns empty Bytes at the end of the log.
    pub fn read(
        &self,
        fetch_offset: i64,
        max_bytes: usize,
        max_offset_exclusive: i64,
    ) -> Result<Bytes, LogError> {
        let log_start_offset = self.log_start_offset();
        let log_end_offset = self.log_end_offset();
        if fetch_offset < log_start_offset || fetch_offset > log_end_offset {
            return Err(LogError::OffsetOutOfRange {
                offset: fetch_offset,
                log_start_offset,
                log_end_offset,
            });
        }
        if fetch_offset >= log_end_offset || fetch_offset >= max_offset_exclusive {
            return Ok(Bytes::new());
        }
        let first = self
            .segments
            .partition_point(|s| s.base_offset() <= fetch_offset)
            .saturating_sub(1);
        for segment in &self.segments[first..] {
            if let Some(bytes) = segment.read(fetch_offset, max_bytes, max_offset_exclusive)? {
                return Ok(bytes);
            }
        }
        Ok(Bytes::new())
    }

    /// First offset a client may read (Kafka's log start offset, the low watermark).
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// Next offset to assign.
    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset()
    }

    /// Offset below which everything is known to be fsynced.
    pub fn recovery_point(&self) -> i64 {
        self.recovery_point
    }

    /// First offset whose record timestamp >= `ts_ms`, with that timestamp (Kafka ListOffsets
    /// by timestamp); None if no such record. The special ListOffsets timestamps (-1 latest,
    /// -2 earliest, -3 max) are the caller's business.
    pub fn offset_for_timestamp(&self, ts_ms: i64) -> Result<Option<(i64, i64)>, LogError> {
        let log_start_offset = self.log_start_offset();
        for segment in &self.segments {
            if segment.max_timestamp_ms() >= ts_ms && segment.next_offset() > log_start_offset {
                if let Some((offset, found_ts)) =
                    segment.find_offset_for_timestamp(ts_ms, log_start_offset)?
                {
                    // A batch may straddle the log start; never answer an offset below it.
                    return Ok(Some((offset.max(log_start_offset), found_ts)));
                }
            }
        }
        Ok(None)
    }

    /// Fsyncs the active segment and its indexes, and records the recovery point.
    pub fn flush(&mut self) -> Result<(), LogError> {
        let log_end_offset = self.log_end_offset();
        if self.recovery_point >= log_end_offset {
            return Ok(());
        }
        // Older segments were fsynced when they were rolled, so only the active one is dirty.
        self.active().flush()?;
        self.recovery_point = log_end_offset;
        let due = self
            .recovery_point_saved_at
            .is_none_or(|at| at.elapsed() >= RECOVERY_POINT_SAVE_INTERVAL);
        if due {
            write_recovery_point(&self.dir, log_end_offset, false)?;
            self.save_high_watermark(false)?;
            self.recovery_point_saved_at = Some(std::time::Instant::now());
        }
        tracing::trace!(dir = %self.dir.display(), recovery_point = log_end_offset, "flushed");
        Ok(())
    }

    /// Applies flush.ms: flushes when due. The broker calls this periodically.
    pub fn maybe_flush(&mut self, now_ms: i64) -> Result<(), LogError> {
        let flush_ms = i64::try_from(self.config.flush_ms).unwrap_or(i64::MAX);
        if flush_ms == i64::MAX || now_ms.saturating_sub(self.last_flush_ms) < flush_ms {
            return Ok(());
        }
        self.flush()?;
        self.last_flush_ms = now_ms;
        Ok(())
    }

    /// Removes everything at or after `offset` (for follower truncation). As in Kafka, a batch
    /// containing `offset` is removed whole, so the log end may end up below `offset`; an
    /// `offset` below the log start empties the log and restarts it at `offset`.
    pub fn truncate_to(&mut self, offset: i64) -> Result<(), LogError> {
        self.ensure_open()?;
        if offset < 0 {
            return Err(LogError::InvalidArgument {
                reason: format!("cannot truncate to negative offset {offset}"),
            });
        }
        if offset >= self.log_end_offset() {
            // As Kafka: an epoch assigned at the end by a leader that never appended in it
            // must still go when a follower is told to truncate here.
            let log_end_offset = self.log_end_offset();
            return self.epochs.truncate_from_end(log_end_offset);
        }
        tracing::info!(dir = %self.dir.display(), offset, log_end_offset = self.log_end_offset(),
            "truncating log");
        if offset < self.log_start_offset() {
            // Newest first, so a crash midway leaves a consistent prefix.
            while let Some(segment) = self.segments.pop() {
                segment.delete()?;
            }
            let segment = Segment::create(&self.dir, offset, &self.config)?;
            self.segments.push(segment);
        } else {
            while self.active().base_offset() > offset {
                let segment = self
                    .segments
                    .pop()
                    .expect("a segment with base offset <= offset exists");
                segment.delete()?;
            }
            let active = self.active_mut();
            active.truncate_to(offset)?;
            // The cut must be durable: otherwise a crash could resurrect the removed batches
            // (they are intact and would pass recovery).
            active.flush()?;
        }
        sync_dir(&self.dir)?;
        // Whole batches go: the log ends at or before `offset` (before it when `offset` falls
        // inside a batch), never after.
        assert!(
            self.log_end_offset() <= offset,
            "{}: log end offset {} after truncating to {offset}",
            self.dir.display(),
            self.log_end_offset()
        );
        if self.recovery_point > self.log_end_offset() {
            self.recovery_point = self.log_end_offset();
            write_recovery_point(&self.dir, self.recovery_point, true)?;
        }
        // Batches that were cut may have been any producer's latest ones, and older batches
        // behind them come back into play: rebuild from what is left, as Kafka does.
        self.producers =
            rebuild_producer_state(&self.segments, self.config.producer_id_expiration_ms)?;
        self.clamp_log_start_offset_after_truncation()?;
        // The cut may have removed more than asked (a batch containing `offset` goes whole),
        // so the cache is cut at the new log end, not at `offset`.
        let log_end_offset = self.log_end_offset();
        self.epochs.truncate_from_end(log_end_offset)?;
        let high_watermark = self.clamp_to_log(self.high_watermark);
        if high_watermark != self.high_watermark {
            self.high_watermark = high_watermark;
            // Durably: a restart must not resurrect a high watermark above the new end.
            self.save_high_watermark(true)?;
        }
        Ok(())
    }

    /// Flushes and marks the log cleanly closed. Further appends and truncations fail.
    pub fn close(&mut self) -> Result<(), LogError> {
        if self.closed {
            return Ok(());
        }
        self.flush()?;
        // Flushes save the recovery point only now and then; on close it must be current.
        write_recovery_point(&self.dir, self.recovery_point, false)?;
        self.save_high_watermark(false)?;
        // Saves the next open a scan of every batch header. Written before the marker: a
        // snapshot is only ever used together with the marker.
        let log_end_offset = self.log_end_offset();
        let snapshot = self.dir.join(segment::file_name(
            log_end_offset,
            PRODUCER_SNAPSHOT_EXTENSION,
        ));
        write_file_atomically(&snapshot, &self.producers.to_snapshot(log_end_offset))?;
        let marker = self.dir.join(CLEAN_SHUTDOWN_FILE);
        File::create(&marker)
            .and_then(|f| f.sync_all())
            .map_err(io_err("create", &marker))?;
        sync_dir(&self.dir)?;
        self.closed = true;
        tracing::info!(dir = %self.dir.display(), log_end_offset = self.log_end_offset(),
            "partition log closed");
        Ok(())
    }

    /// Forgets idempotent producers idle for `producer.id.expiration.ms` at `now_ms`; returns
    /// how many. The broker calls this periodically (Kafka's
    /// `producer.id.expiration.check.interval.ms`).
    pub fn remove_expired_producers(&mut self, now_ms: i64) -> usize {
        self.producers.remove_expired(now_ms)
    }

    /// The idempotent-producer state of this partition.
    pub fn producer_state(&self) -> &ProducerStateManager {
        &self.producers
    }

    /// Total size of the segment data files.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(Segment::size_bytes).sum()
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        self.segments.iter().map(Segment::base_offset).collect()
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration in use.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Replaces the configuration (a topic or broker config change). Size, age, flush and
    /// batch-size limits apply from the next append or check on; index sizing applies to
    /// segments created from now on.
    pub fn set_config(&mut self, config: LogConfig) -> Result<(), LogError> {
        config.validate()?;
        if config != self.config {
            tracing::info!(dir = %self.dir.display(), ?config, "log config changed");
            self.config = config;
        }
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn segments(&self) -> &[Segment] {
        &self.segments
    }
}
