//! Sparse per-segment indexes, in Kafka's on-disk formats.
//!
//! * `.index`: 8-byte entries `(relative offset u32 BE, file position u32 BE)`, mapping the last
//!   offset of a batch to the byte position where that batch starts.
//! * `.timeindex`: 12-byte entries `(timestamp i64 BE, relative offset u32 BE)`, where the
//!   timestamp is the largest timestamp seen in the segment up to and including that offset.
//!
//! Deliberate deviation from Kafka: Kafka preallocates both files to `segment.index.bytes` and
//! memory-maps them, trimming them when the segment rolls. Here the entries live in a `Vec`
//! (bounded by `segment.index.bytes` just like Kafka's mmap) and each new entry is appended to
//! the file with a positional write. The files therefore always have exactly the right length,
//! so there is nothing to trim and no mmap unsafety, at the cost of one small `pwrite` per
//! entry (one per `index.interval.bytes` of data).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Why a stored index could not be used; the caller rebuilds the index from its segment.
#[derive(Debug, thiserror::Error)]
pub enum IndexLoadError {
    /// The index file does not exist.
    #[error("index file is missing")]
    Missing,
    /// The index content is inconsistent.
    #[error("index is corrupt: {reason}")]
    Corrupt {
        /// What was wrong.
        reason: String,
    },
    /// The file could not be read.
    #[error("cannot read index: {0}")]
    Io(#[from] io::Error),
}

fn corrupt(reason: String) -> IndexLoadError {
    IndexLoadError::Corrupt { reason }
}

/// One fixed-size entry of an index file.
trait IndexEntry: Copy {
    /// Encoded size in bytes.
    const BYTES: usize;
    fn decode(raw: &[u8]) -> Self;
    fn encode(&self, out: &mut [u8]);
}

/// Offset index entry, relative to the segment's base offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RawOffsetEntry {
    relative_offset: u32,
    position: u32,
}

impl IndexEntry for RawOffsetEntry {
    const BYTES: usize = 8;
    fn decode(raw: &[u8]) -> Self {
        RawOffsetEntry {
            relative_offset: u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]),
            position: u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]),
        }
    }
    fn encode(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.relative_offset.to_be_bytes());
        out[4..8].copy_from_slice(&self.position.to_be_bytes());
    }
}

/// Time index entry, offset relative to the segment's base offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RawTimeEntry {
    timestamp_ms: i64,
    relative_offset: u32,
}

impl IndexEntry for RawTimeEntry {
    const BYTES: usize = 12;
    fn decode(raw: &[u8]) -> Self {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&raw[0..8]);
        RawTimeEntry {
            timestamp_ms: i64::from_be_bytes(ts),
            relative_offset: u32::from_be_bytes([raw[8], raw[9], raw[10], raw[11]]),
        }
    }
    fn encode(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.timestamp_ms.to_be_bytes());
        out[8..12].copy_from_slice(&self.relative_offset.to_be_bytes());
    }
}

/// Entries in memory plus the file they are mirrored to.
#[derive(Debug)]
struct IndexFile<E> {
    path: PathBuf,
    file: File,
    entries: Vec<E>,
    /// Bound on `entries` (segment.index.bytes / entry size); a full index makes the log roll.
    max_entries: usize,
}

impl<E: IndexEntry> IndexFile<E> {
    fn open_file(path: &Path, truncate: bool) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(truncate)
            .open(path)
    }

    fn create(path: &Path, max_entries: usize) -> io::Result<Self> {
        Ok(IndexFile {
            path: path.to_path_buf(),
            file: Self::open_file(path, true)?,
            entries: Vec::new(),
            max_entries,
        })
    }

    /// Reads the raw entries; content validation is up to the typed wrapper.
    fn load(path: &Path, max_entries: usize) -> Result<Self, IndexLoadError> {
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(IndexLoadError::Missing),
            Err(e) => return Err(e.into()),
        };
        let len_bytes = file.metadata()?.len();
        if len_bytes % E::BYTES as u64 != 0 {
            return Err(corrupt(format!(
                "length {len_bytes} is not a multiple of the entry size {}",
                E::BYTES
            )));
        }
        let count = len_bytes / E::BYTES as u64;
        // Checked before allocating, so a huge garbage file cannot blow up memory.
        if count > max_entries as u64 {
            return Err(corrupt(format!(
                "{count} entries exceed the limit of {max_entries}"
            )));
        }
        let mut raw = vec![0u8; len_bytes as usize];
        file.read_exact_at(&mut raw, 0)?;
        let entries = raw.chunks_exact(E::BYTES).map(E::decode).collect();
        Ok(IndexFile {
            path: path.to_path_buf(),
            file,
            entries,
            max_entries,
        })
    }

    fn is_full(&self) -> bool {
        self.entries.len() >= self.max_entries
    }

    fn push(&mut self, entry: E) -> io::Result<()> {
        let mut raw = [0u8; 16];
        entry.encode(&mut raw[..E::BYTES]);
        let at = (self.entries.len() * E::BYTES) as u64;
        self.file.write_all_at(&raw[..E::BYTES], at)?;
        self.entries.push(entry);
        Ok(())
    }

    fn truncate_entries(&mut self, keep: usize) -> io::Result<()> {
        if keep < self.entries.len() {
            self.entries.truncate(keep);
            self.file.set_len((keep * E::BYTES) as u64)?;
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// A lookup answer from the offset index: the batch containing `offset` starts at or after
/// `position`, so a scan from there finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetPosition {
    /// Absolute offset of the entry (or the segment base offset when no entry applies).
    pub offset: i64,
    /// Byte position in the segment's `.log` file.
    pub position: u32,
}

/// A time index entry: `timestamp_ms` is the largest timestamp in the segment up to `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampOffset {
    /// Largest timestamp seen so far in the segment.
    pub timestamp_ms: i64,
    /// Absolute offset (last offset of the batch that carried `timestamp_ms`).
    pub offset: i64,
}

/// Kafka's "no timestamp" value, used for the empty time index's implicit last entry.
pub const NO_TIMESTAMP: i64 = -1;

/// The sparse offset index of one segment (`.index`).
#[derive(Debug)]
pub struct OffsetIndex {
    base_offset: i64,
    inner: IndexFile<RawOffsetEntry>,
}

impl OffsetIndex {
    /// Size of one entry on disk.
    pub const ENTRY_BYTES: usize = RawOffsetEntry::BYTES;

    /// Creates an empty index, truncating any existing file.
    pub fn create(path: &Path, base_offset: i64, max_entries: usize) -> io::Result<OffsetIndex> {
        Ok(OffsetIndex {
            base_offset,
            inner: IndexFile::create(path, max_entries)?,
        })
    }

    /// Loads and validates an index: relative offsets strictly increasing, positions strictly
    /// increasing and below `segment_size_bytes`.
    pub fn load(
        path: &Path,
        base_offset: i64,
        max_entries: usize,
        segment_size_bytes: u64,
    ) -> Result<OffsetIndex, IndexLoadError> {
        let inner = IndexFile::<RawOffsetEntry>::load(path, max_entries)?;
        let mut previous: Option<RawOffsetEntry> = None;
        for (i, entry) in inner.entries.iter().enumerate() {
            if u64::from(entry.position) >= segment_size_bytes {
                return Err(corrupt(format!(
                    "entry {i} points at position {} beyond the segment size {segment_size_bytes}",
                    entry.position
                )));
            }
            if let Some(prev) = previous {
                if entry.relative_offset <= prev.relative_offset || entry.position <= prev.position
                {
                    return Err(corrupt(format!(
                        "entry {i} does not increase: {entry:?} after {prev:?}"
                    )));
                }
            }
            previous = Some(*entry);
        }
        Ok(OffsetIndex { base_offset, inner })
    }

    fn absolute(&self, entry: &RawOffsetEntry) -> OffsetPosition {
        OffsetPosition {
            offset: self.base_offset + i64::from(entry.relative_offset),
            position: entry.position,
        }
    }

    /// The entry with the largest offset <= `target`, or `(base_offset, 0)` if none.
    #[cfg(test)]
    pub fn lookup(&self, target: i64) -> OffsetPosition {
        self.lookup_entry(target).unwrap_or(OffsetPosition {
            offset: self.base_offset,
            position: 0,
        })
    }

    /// The entry with the largest offset <= `target`, if there is one (unlike
    /// [`OffsetIndex::lookup`], no fallback to the segment start).
    pub fn lookup_entry(&self, target: i64) -> Option<OffsetPosition> {
        let entries = &self.inner.entries;
        let below =
            entries.partition_point(|e| self.base_offset + i64::from(e.relative_offset) <= target);
        below.checked_sub(1).map(|i| self.absolute(&entries[i]))
    }

    /// The last entry, if any.
    pub fn last_entry(&self) -> Option<OffsetPosition> {
        self.inner.entries.last().map(|e| self.absolute(e))
    }

    /// Number of entries.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.inner.entries.len()
    }

    /// Whether the index reached its entry limit.
    pub fn is_full(&self) -> bool {
        self.inner.is_full()
    }

    /// Appends `(offset, position)`. Returns false (and does nothing) when the index is full or
    /// the entry would not increase the offsets and positions; skipping an entry only makes
    /// the index sparser, never wrong.
    pub fn append(&mut self, offset: i64, position: u32) -> io::Result<bool> {
        let relative = offset - self.base_offset;
        let Ok(relative_offset) = u32::try_from(relative) else {
            return Ok(false);
        };
        if self.is_full() {
            return Ok(false);
        }
        if let Some(last) = self.inner.entries.last() {
            if relative_offset <= last.relative_offset || position <= last.position {
                return Ok(false);
            }
        }
        self.inner.push(RawOffsetEntry {
            relative_offset,
            position,
        })?;
        Ok(true)
    }

    /// Drops the entries at or after byte `position` (used when the segment is truncated there).
    pub fn truncate_to_position(&mut self, position: u64) -> io::Result<()> {
        let keep = self
            .inner
            .entries
            .partition_point(|e| u64::from(e.position) < position);
        self.inner.truncate_entries(keep)
    }

    /// Fsyncs the file.
    pub fn flush(&self) -> io::Result<()> {
        self.inner.flush()
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// All entries (absolute), for tests and diagnostics.
    #[cfg(test)]
    pub fn entries(&self) -> Vec<OffsetPosition> {
        self.inner
            .entries
            .iter()
            .map(|e| self.absolute(e))
            .collect()
    }
}

/// The sparse time index of one segment (`.timeindex`).
#[derive(Debug)]
pub struct TimeIndex {
    base_offset: i64,
    inner: IndexFile<RawTimeEntry>,
}

impl TimeIndex {
    /// Size of one entry on disk.
    pub const ENTRY_BYTES: usize = RawTimeEntry::BYTES;

    /// Creates an empty index, truncating any existing file.
    pub fn create(path: &Path, base_offset: i64, max_entries: usize) -> io::Result<TimeIndex> {
        Ok(TimeIndex {
            base_offset,
            inner: IndexFile::create(path, max_entries)?,
        })
    }

    /// Loads and validates an index: timestamps and offsets non-decreasing.
    pub fn load(
        path: &Path,
        base_offset: i64,
        max_entries: usize,
    ) -> Result<TimeIndex, IndexLoadError> {
        let inner = IndexFile::<RawTimeEntry>::load(path, max_entries)?;
        for (i, pair) in inner.entries.windows(2).enumerate() {
            if pair[1].timestamp_ms < pair[0].timestamp_ms
                || pair[1].relative_offset < pair[0].relative_offset
            {
                return Err(corrupt(format!(
                    "entry {} decreases: {:?} after {:?}",
                    i + 1,
                    pair[1],
                    pair[0]
                )));
            }
        }
        Ok(TimeIndex { base_offset, inner })
    }

    fn absolute(&self, entry: &RawTimeEntry) -> TimestampOffset {
        TimestampOffset {
            timestamp_ms: entry.timestamp_ms,
            offset: self.base_offset + i64::from(entry.relative_offset),
        }
    }

    /// Kafka's lookup: the entry with the largest timestamp <= `target_ms`, or
    /// `(NO_TIMESTAMP, base_offset)` if none. Every record before that entry's offset has a
    /// smaller timestamp than the target, so a search can start scanning at that offset.
    pub fn lookup(&self, target_ms: i64) -> TimestampOffset {
        let entries = &self.inner.entries;
        let below = entries.partition_point(|e| e.timestamp_ms <= target_ms);
        match below.checked_sub(1) {
            Some(i) => self.absolute(&entries[i]),
            None => TimestampOffset {
                timestamp_ms: NO_TIMESTAMP,
                offset: self.base_offset,
            },
        }
    }

    /// The last entry, or `(NO_TIMESTAMP, base_offset)` for an empty index (as Kafka).
    pub fn last_entry(&self) -> TimestampOffset {
        match self.inner.entries.last() {
            Some(e) => self.absolute(e),
            None => TimestampOffset {
                timestamp_ms: NO_TIMESTAMP,
                offset: self.base_offset,
            },
        }
    }

    /// Number of entries.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.inner.entries.len()
    }

    /// Whether the index has no entries.
    pub fn is_empty(&self) -> bool {
        self.inner.entries.is_empty()
    }

    /// Whether the index reached its entry limit.
    pub fn is_full(&self) -> bool {
        self.inner.is_full()
    }

    /// Appends `(timestamp_ms, offset)` only if `timestamp_ms` is larger than the last entry's
    /// (Kafka's maybeAppend), the offset does not go backwards and there is room.
    pub fn maybe_append(&mut self, timestamp_ms: i64, offset: i64) -> io::Result<bool> {
        let Ok(relative_offset) = u32::try_from(offset - self.base_offset) else {
            return Ok(false);
        };
        let last = self.last_entry();
        if self.is_full() || timestamp_ms <= last.timestamp_ms || offset < last.offset {
            return Ok(false);
        }
        self.inner.push(RawTimeEntry {
            timestamp_ms,
            relative_offset,
        })?;
        Ok(true)
    }

    /// Drops the entries whose offset is >= `offset`.
    pub fn truncate_to_offset(&mut self, offset: i64) -> io::Result<()> {
        let keep = self
            .inner
            .entries
            .partition_point(|e| self.base_offset + i64::from(e.relative_offset) < offset);
        self.inner.truncate_entries(keep)
    }

    /// Fsyncs the file.
    pub fn flush(&self) -> io::Result<()> {
        self.inner.flush()
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// All entries (absolute), for tests and diagnostics.
    #[cfg(test)]
    pub fn entries(&self) -> Vec<TimestampOffset> {
        self.inner
            .entries
            .iter()
            .map(|e| self.absolute(e))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_index_lookup_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000100.index");
        let mut index = OffsetIndex::create(&path, 100, 10).unwrap();
        assert_eq!(
            index.lookup(150),
            OffsetPosition {
                offset: 100,
                position: 0
            }
        );
        assert!(index.append(104, 500).unwrap());
        assert!(index.append(110, 1_000).unwrap());
        assert!(index.append(120, 2_000).unwrap());
        // Not increasing: skipped.
        assert!(!index.append(120, 3_000).unwrap());
        assert!(!index.append(130, 2_000).unwrap());
        assert_eq!(
            index.lookup(99),
            OffsetPosition {
                offset: 100,
                position: 0
            }
        );
        assert_eq!(
            index.lookup(103),
            OffsetPosition {
                offset: 100,
                position: 0
            }
        );
        assert_eq!(
            index.lookup(104),
            OffsetPosition {
                offset: 104,
                position: 500
            }
        );
        assert_eq!(
            index.lookup(119),
            OffsetPosition {
                offset: 110,
                position: 1_000
            }
        );
        assert_eq!(
            index.lookup(10_000),
            OffsetPosition {
                offset: 120,
                position: 2_000
            }
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 24);

        let loaded = OffsetIndex::load(&path, 100, 10, 2_001).unwrap();
        assert_eq!(loaded.entries(), index.entries());
        // Position beyond the segment: invalid.
        assert!(matches!(
            OffsetIndex::load(&path, 100, 10, 2_000),
            Err(IndexLoadError::Corrupt { .. })
        ));
        // More entries than allowed: invalid.
        assert!(matches!(
            OffsetIndex::load(&path, 100, 2, 5_000),
            Err(IndexLoadError::Corrupt { .. })
        ));

        index.truncate_to_position(1_000).unwrap();
        assert_eq!(index.len(), 1);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 8);
    }

    #[test]
    fn offset_index_load_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.index");
        assert!(matches!(
            OffsetIndex::load(&path, 0, 10, 100),
            Err(IndexLoadError::Missing)
        ));
        std::fs::write(&path, [0u8; 7]).unwrap();
        assert!(matches!(
            OffsetIndex::load(&path, 0, 10, 100),
            Err(IndexLoadError::Corrupt { .. })
        ));
        // Decreasing offsets.
        let mut raw = Vec::new();
        for (rel, pos) in [(5u32, 10u32), (3, 20)] {
            raw.extend_from_slice(&rel.to_be_bytes());
            raw.extend_from_slice(&pos.to_be_bytes());
        }
        std::fs::write(&path, &raw).unwrap();
        assert!(matches!(
            OffsetIndex::load(&path, 0, 10, 100),
            Err(IndexLoadError::Corrupt { .. })
        ));
    }

    #[test]
    fn time_index_lookup_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000050.timeindex");
        let mut index = TimeIndex::create(&path, 50, 3).unwrap();
        assert_eq!(
            index.lookup(1_000),
            TimestampOffset {
                timestamp_ms: NO_TIMESTAMP,
                offset: 50
            }
        );
        assert!(index.maybe_append(1_000, 55).unwrap());
        assert!(!index.maybe_append(1_000, 56).unwrap()); // not larger
        assert!(index.maybe_append(2_000, 60).unwrap());
        assert!(index.maybe_append(3_000, 70).unwrap());
        assert!(index.is_full());
        assert!(!index.maybe_append(4_000, 80).unwrap());
        assert_eq!(index.lookup(999).offset, 50);
        assert_eq!(
            index.lookup(1_000),
            TimestampOffset {
                timestamp_ms: 1_000,
                offset: 55
            }
        );
        assert_eq!(
            index.lookup(2_999),
            TimestampOffset {
                timestamp_ms: 2_000,
                offset: 60
            }
        );
        assert_eq!(index.lookup(i64::MAX).offset, 70);

        let loaded = TimeIndex::load(&path, 50, 3).unwrap();
        assert_eq!(loaded.entries(), index.entries());
        index.truncate_to_offset(60).unwrap();
        assert_eq!(
            index.entries(),
            vec![TimestampOffset {
                timestamp_ms: 1_000,
                offset: 55
            }]
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 12);

        // Decreasing timestamps are rejected.
        let mut raw = Vec::new();
        for (ts, rel) in [(5i64, 1u32), (4, 2)] {
            raw.extend_from_slice(&ts.to_be_bytes());
            raw.extend_from_slice(&rel.to_be_bytes());
        }
        std::fs::write(&path, &raw).unwrap();
        assert!(matches!(
            TimeIndex::load(&path, 50, 3),
            Err(IndexLoadError::Corrupt { .. })
        ));
    }
}
