//! One log segment: a `.log` file of record batches plus its `.index` and `.timeindex`.
//!
//! Files are named after the segment's base offset, 20 digits zero padded, as in Kafka.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::log::batch::{self, BatchHeader, HEADER_BYTES};
use crate::log::index::{IndexLoadError, OffsetIndex, TimeIndex};
use crate::log::{io_err, sync_dir, LogConfig, LogError};

/// Extension of segment data files.
pub const LOG_EXTENSION: &str = "log";
/// Extension of offset index files.
pub const INDEX_EXTENSION: &str = "index";
/// Extension of time index files.
pub const TIME_INDEX_EXTENSION: &str = "timeindex";
/// Digits in a segment file name.
const FILE_NAME_DIGITS: usize = 20;
/// Read size when scanning batch headers of small batches: one read covers many headers.
const HEADER_CHUNK_BYTES: usize = 8 * 1024;
/// Read size when streaming a batch through the CRC during recovery; bounds memory use no
/// matter how large a (possibly corrupt) batch claims to be.
const CRC_CHUNK_BYTES: usize = 64 * 1024;
/// Relative offsets in the indexes are stored as u32, and Kafka keeps them within i32.
const MAX_RELATIVE_OFFSET: i64 = i32::MAX as i64;

/// `<base offset, 20 digits>.<extension>`.
pub fn file_name(base_offset: i64, extension: &str) -> String {
    format!(
        "{base_offset:0width$}.{extension}",
        width = FILE_NAME_DIGITS
    )
}

/// The base offset encoded in a segment file stem, if it is exactly 20 ASCII digits that fit
/// an i64.
pub fn parse_base_offset(stem: &str) -> Option<i64> {
    if stem.len() != FILE_NAME_DIGITS || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Where and why a scan stopped before the end of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Byte position of the first bad batch.
    pub position: u64,
    /// What was wrong.
    pub reason: String,
}

/// Outcome of reading one batch header during a scan.
enum HeaderAt {
    /// Clean end of file.
    End,
    /// A sane header whose batch lies entirely within the file.
    Header(BatchHeader),
    /// Torn or corrupt data.
    Damaged(String),
}

/// Reads batch headers sequentially with few syscalls: small batches are served from one
/// chunk, big batches get a header-sized read each (so a scan never reads whole big batches).
struct HeaderReader<'a> {
    file: &'a File,
    path: &'a Path,
    end: u64,
    buf: Vec<u8>,
    buf_start: u64,
    buf_len: usize,
    last_total_bytes: usize,
}

impl<'a> HeaderReader<'a> {
    fn new(file: &'a File, path: &'a Path, end: u64) -> Self {
        HeaderReader {
            file,
            path,
            end,
            buf: vec![0u8; HEADER_CHUNK_BYTES],
            buf_start: 0,
            buf_len: 0,
            last_total_bytes: 0,
        }
    }

    /// The buffered bytes `[position, position + len)`, if all of them are buffered.
    fn buffered(&self, position: u64, len: usize) -> Option<&[u8]> {
        let from = position.checked_sub(self.buf_start)? as usize;
        (from + len <= self.buf_len).then(|| &self.buf[from..from + len])
    }

    fn header_at(&mut self, position: u64) -> Result<HeaderAt, LogError> {
        if position >= self.end {
            return Ok(HeaderAt::End);
        }
        let remaining = self.end - position;
        if remaining < HEADER_BYTES as u64 {
            return Ok(HeaderAt::Damaged(format!(
                "only {remaining} bytes left, less than a batch header"
            )));
        }
        if self.buffered(position, HEADER_BYTES).is_none() {
            let want = if self.last_total_bytes >= HEADER_CHUNK_BYTES {
                HEADER_BYTES
            } else {
                HEADER_CHUNK_BYTES
            };
            let len = (want as u64).min(remaining) as usize;
            self.file
                .read_exact_at(&mut self.buf[..len], position)
                .map_err(io_err("read", self.path))?;
            self.buf_start = position;
            self.buf_len = len;
        }
        let raw = self
            .buffered(position, HEADER_BYTES)
            .expect("header bytes were just buffered");
        let header = match BatchHeader::parse(raw).and_then(|h| h.check_stored().map(|()| h)) {
            Ok(header) => header,
            Err(e) => return Ok(HeaderAt::Damaged(e.to_string())),
        };
        let total = header.total_len_bytes();
        if total as u64 > remaining {
            return Ok(HeaderAt::Damaged(format!(
                "batch of {total} bytes runs past the end of the file ({remaining} bytes left)"
            )));
        }
        self.last_total_bytes = total;
        Ok(HeaderAt::Header(header))
    }

    /// CRC-32C of the batch at `position` (content from the attributes field on), read in
    /// bounded chunks unless it is already buffered.
    fn batch_crc(
        &self,
        position: u64,
        total: usize,
        scratch: &mut Vec<u8>,
    ) -> Result<u32, LogError> {
        const CRC_FROM: usize = batch::CRC_COVERED_FROM;
        if let Some(raw) = self.buffered(position, total) {
            return Ok(crc32c::crc32c(&raw[CRC_FROM..]));
        }
        scratch.resize(CRC_CHUNK_BYTES, 0);
        let mut crc = 0u32;
        let mut at = position + CRC_FROM as u64;
        let end = position + total as u64;
        while at < end {
            let len = ((end - at) as usize).min(CRC_CHUNK_BYTES);
            self.file
                .read_exact_at(&mut scratch[..len], at)
                .map_err(io_err("read", self.path))?;
            crc = crc32c::crc32c_append(crc, &scratch[..len]);
            at += len as u64;
        }
        Ok(crc)
    }
}

/// How a scan starts.
struct ScanStart {
    position: u64,
    /// Base offset the first batch must have (dense offsets), when known.
    expected_base: Option<i64>,
    /// Last offset the first batch must have (it is the one the last index entry names).
    expected_last: Option<i64>,
}

/// Index state of a segment, updated batch by batch (on append and when scanning).
#[derive(Debug)]
struct Indexing {
    offset_index: OffsetIndex,
    time_index: TimeIndex,
    /// Offset after the last batch in the segment.
    next_offset: i64,
    /// Largest batch maxTimestamp in the segment (Kafka's maxTimestampSoFar).
    max_timestamp_ms: i64,
    /// Last offset of the batch that carried `max_timestamp_ms`.
    offset_of_max_timestamp: i64,
    bytes_since_last_index_entry: u64,
    index_interval_bytes: u64,
}

impl Indexing {
    /// Kafka's LogSegment.append bookkeeping for one batch at `position`: index entries are
    /// added when more than `index.interval.bytes` were written since the last one, the offset
    /// entry naming the batch's last offset and the batch's start position.
    fn track_batch(&mut self, header: &BatchHeader, position: u64) -> io::Result<()> {
        // State first, so that an index write error leaves it matching the data file.
        if header.max_timestamp > self.max_timestamp_ms {
            self.max_timestamp_ms = header.max_timestamp;
            self.offset_of_max_timestamp = header.last_offset();
        }
        self.next_offset = header.next_offset();
        let add_entry = self.bytes_since_last_index_entry > self.index_interval_bytes;
        if add_entry {
            self.bytes_since_last_index_entry = 0;
        }
        self.bytes_since_last_index_entry += header.total_len_bytes() as u64;
        // Positions fit u32 because the log rolls before a segment reaches i32::MAX bytes; a
        // foreign oversized file just gets no entries past 4 GiB (sparser, still correct).
        if let (true, Ok(position)) = (add_entry, u32::try_from(position)) {
            self.offset_index.append(header.last_offset(), position)?;
            self.time_index
                .maybe_append(self.max_timestamp_ms, self.offset_of_max_timestamp)?;
        }
        Ok(())
    }
}

/// One segment of a partition log.
#[derive(Debug)]
pub struct Segment {
    base_offset: i64,
    log_path: PathBuf,
    file: File,
    size_bytes: u64,
    indexing: Indexing,
    /// Reference time for segment.ms: when the first batch was appended, or after a restart the
    /// first batch's timestamp (Kafka's rollingBasedTimestamp), capped at the time of opening.
    /// None while the segment is empty, so an idle empty segment does not age.
    rolling_base_ms: Option<i64>,
}

/// Limits derived from the config, shared by both index kinds.
fn max_index_entries(config: &LogConfig) -> (usize, usize) {
    let bytes = usize::try_from(config.segment_index_bytes).unwrap_or(usize::MAX);
    (
        bytes / OffsetIndex::ENTRY_BYTES,
        bytes / TimeIndex::ENTRY_BYTES,
    )
}

impl Indexing {
    /// Index state for a segment before any of its batches has been scanned or appended.
    fn fresh(
        offset_index: OffsetIndex,
        time_index: TimeIndex,
        base_offset: i64,
        config: &LogConfig,
    ) -> Indexing {
        Indexing {
            offset_index,
            time_index,
            next_offset: base_offset,
            max_timestamp_ms: crate::log::index::NO_TIMESTAMP,
            offset_of_max_timestamp: base_offset,
            bytes_since_last_index_entry: 0,
            index_interval_bytes: config.index_interval_bytes,
        }
    }
}

impl Segment {
    /// Creates a new empty segment (the `.log` must not exist yet) and fsyncs the directory so
    /// the new files survive a crash.
    pub fn create(dir: &Path, base_offset: i64, config: &LogConfig) -> Result<Segment, LogError> {
        let log_path = dir.join(file_name(base_offset, LOG_EXTENSION));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&log_path)
            .map_err(io_err("create", &log_path))?;
        let (max_offset_entries, max_time_entries) = max_index_entries(config);
        let index_path = dir.join(file_name(base_offset, INDEX_EXTENSION));
        let time_path = dir.join(file_name(base_offset, TIME_INDEX_EXTENSION));
        let indexes = OffsetIndex::create(&index_path, base_offset, max_offset_entries)
            .map_err(io_err("create", &index_path))
            .and_then(|offset_index| {
                let time_index = TimeIndex::create(&time_path, base_offset, max_time_entries)
                    .map_err(io_err("create", &time_path))?;
                sync_dir(dir)?;
                Ok((offset_index, time_index))
            });
        let (offset_index, time_index) = match indexes {
            Ok(indexes) => indexes,
            Err(e) => {
                // Without this, every later attempt to create the segment would fail on the
                // leftover empty .log.
                drop(file);
                let _ = std::fs::remove_file(&log_path);
                return Err(e);
            }
        };
        Ok(Segment {
            base_offset,
            log_path,
            file,
            size_bytes: 0,
            indexing: Indexing::fresh(offset_index, time_index, base_offset, config),
            rolling_base_ms: None,
        })
    }

    fn open_log_file(dir: &Path, base_offset: i64) -> Result<(PathBuf, File, u64), LogError> {
        let log_path = dir.join(file_name(base_offset, LOG_EXTENSION));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&log_path)
            .map_err(io_err("open", &log_path))?;
        let size_bytes = file.metadata().map_err(io_err("stat", &log_path))?.len();
        Ok((log_path, file, size_bytes))
    }

    /// Opens a segment whose data is trusted (clean shutdown, or below the recovery point):
    /// loads both indexes and scans only the batch headers after the last index entry to
    /// restore the in-memory state. Returns `Ok(Err(reason))` when the indexes or that tail are
    /// unusable, in which case the caller must run [`Segment::recover`].
    pub fn load_trusted(
        dir: &Path,
        base_offset: i64,
        config: &LogConfig,
        now_ms: i64,
    ) -> Result<Result<Segment, String>, LogError> {
        let (log_path, file, size_bytes) = Self::open_log_file(dir, base_offset)?;
        let (max_offset_entries, max_time_entries) = max_index_entries(config);
        let index_path = dir.join(file_name(base_offset, INDEX_EXTENSION));
        let offset_index =
            match OffsetIndex::load(&index_path, base_offset, max_offset_entries, size_bytes) {
                Ok(index) => index,
                Err(IndexLoadError::Io(e)) if e.kind() != io::ErrorKind::InvalidData => {
                    return Err(LogError::Io {
                        op: "read",
                        path: index_path,
                        source: e,
                    })
                }
                Err(e) => return Ok(Err(format!("{}: {e}", index_path.display()))),
            };
        let time_path = dir.join(file_name(base_offset, TIME_INDEX_EXTENSION));
        let time_index = match TimeIndex::load(&time_path, base_offset, max_time_entries) {
            Ok(index) => index,
            Err(IndexLoadError::Io(e)) if e.kind() != io::ErrorKind::InvalidData => {
                return Err(LogError::Io {
                    op: "read",
                    path: time_path,
                    source: e,
                })
            }
            Err(e) => return Ok(Err(format!("{}: {e}", time_path.display()))),
        };
        let mut segment = Segment {
            base_offset,
            log_path,
            file,
            size_bytes,
            indexing: Indexing::fresh(offset_index, time_index, base_offset, config),
            rolling_base_ms: None,
        };
        if let Some(damage) = segment.rescan_tail()? {
            return Ok(Err(format!(
                "{} at byte {}: {}",
                segment.log_path.display(),
                damage.position,
                damage.reason
            )));
        }
        let last_time_entry = segment.indexing.time_index.last_entry();
        if last_time_entry.offset >= segment.indexing.next_offset
            && !segment.indexing.time_index.is_empty()
        {
            return Ok(Err(format!(
                "{}: entry for offset {} beyond the segment's last offset {}",
                time_path.display(),
                last_time_entry.offset,
                segment.indexing.next_offset - 1
            )));
        }
        segment.rolling_base_ms = segment.first_batch_rolling_base(now_ms)?;
        Ok(Ok(segment))
    }

    /// Rebuilds the segment from its data: scans every batch validating header sanity, CRC and
    /// dense offsets starting at the base offset, truncates the file at the first bad batch and
    /// rebuilds both indexes. Returns the segment and, if data was cut off, where and why.
    pub fn recover(
        dir: &Path,
        base_offset: i64,
        config: &LogConfig,
        now_ms: i64,
    ) -> Result<(Segment, Option<Damage>), LogError> {
        let (log_path, file, size_bytes) = Self::open_log_file(dir, base_offset)?;
        let (max_offset_entries, max_time_entries) = max_index_entries(config);
        let index_path = dir.join(file_name(base_offset, INDEX_EXTENSION));
        let offset_index = OffsetIndex::create(&index_path, base_offset, max_offset_entries)
            .map_err(io_err("create", &index_path))?;
        let time_path = dir.join(file_name(base_offset, TIME_INDEX_EXTENSION));
        let time_index = TimeIndex::create(&time_path, base_offset, max_time_entries)
            .map_err(io_err("create", &time_path))?;
        let mut segment = Segment {
            base_offset,
            log_path,
            file,
            size_bytes,
            indexing: Indexing::fresh(offset_index, time_index, base_offset, config),
            rolling_base_ms: None,
        };
        let damage = segment.scan(
            ScanStart {
                position: 0,
                expected_base: Some(base_offset),
                expected_last: None,
            },
            true,
        )?;
        if let Some(damage) = &damage {
            tracing::warn!(
                segment = %segment.log_path.display(),
                offset = segment.indexing.next_offset,
                position = damage.position,
                dropped_bytes = segment.size_bytes - damage.position,
                reason = %damage.reason,
                "truncating torn or corrupt log tail during recovery"
            );
            segment
                .file
                .set_len(damage.position)
                .map_err(io_err("truncate", &segment.log_path))?;
            segment.size_bytes = damage.position;
        }
        segment.rolling_base_ms = segment.first_batch_rolling_base(now_ms)?;
        Ok((segment, damage))
    }

    /// Restores the in-memory state from the indexes plus a header scan of the batches from
    /// the last offset index entry on (the only part the indexes say nothing about).
    fn rescan_tail(&mut self) -> Result<Option<Damage>, LogError> {
        let start = match self.indexing.offset_index.last_entry() {
            Some(entry) => ScanStart {
                position: u64::from(entry.position),
                expected_base: None,
                expected_last: Some(entry.offset),
            },
            None => ScanStart {
                position: 0,
                expected_base: Some(self.base_offset),
                expected_last: None,
            },
        };
        let last_time = self.indexing.time_index.last_entry();
        self.indexing.next_offset = self.base_offset;
        self.indexing.max_timestamp_ms = last_time.timestamp_ms;
        self.indexing.offset_of_max_timestamp = last_time.offset;
        // The batch named by the last entry is where the byte counter was reset.
        self.indexing.bytes_since_last_index_entry = 0;
        self.scan(start, false)
    }

    /// Walks batches from `start` to the end of the file, feeding each sane one to the index
    /// bookkeeping; stops at the first torn/corrupt batch and reports it.
    fn scan(&mut self, start: ScanStart, verify_crc: bool) -> Result<Option<Damage>, LogError> {
        let mut reader = HeaderReader::new(&self.file, &self.log_path, self.size_bytes);
        let mut scratch = Vec::new();
        let mut position = start.position;
        let mut expected_base = start.expected_base;
        let mut expected_last = start.expected_last;
        loop {
            let damaged = |reason: String| Ok(Some(Damage { position, reason }));
            let header = match reader.header_at(position)? {
                HeaderAt::End => return Ok(None),
                HeaderAt::Damaged(reason) => return damaged(reason),
                HeaderAt::Header(header) => header,
            };
            if let Some(expected) = expected_base {
                if header.base_offset != expected {
                    return damaged(format!(
                        "batch base offset {} where {expected} was expected (offsets must be dense)",
                        header.base_offset
                    ));
                }
            }
            if let Some(expected) = expected_last.take() {
                if header.last_offset() != expected {
                    return damaged(format!(
                        "batch last offset {} does not match index entry {expected}",
                        header.last_offset()
                    ));
                }
            }
            if header.base_offset < self.base_offset
                || header.last_offset() - self.base_offset > MAX_RELATIVE_OFFSET
            {
                return damaged(format!(
                    "batch offsets {}..={} outside the segment's range",
                    header.base_offset,
                    header.last_offset()
                ));
            }
            let total = header.total_len_bytes();
            if verify_crc {
                let actual = reader.batch_crc(position, total, &mut scratch)?;
                if actual != header.crc {
                    return damaged(format!(
                        "CRC mismatch: stored {:#010x}, computed {actual:#010x}",
                        header.crc
                    ));
                }
            }
            self.indexing
                .track_batch(&header, position)
                .map_err(io_err("write index of", &self.log_path))?;
            expected_base = Some(header.next_offset());
            position += total as u64;
        }
    }

    fn first_batch_rolling_base(&self, now_ms: i64) -> Result<Option<i64>, LogError> {
        if self.size_bytes < HEADER_BYTES as u64 {
            return Ok(None);
        }
        let mut raw = [0u8; HEADER_BYTES];
        self.file
            .read_exact_at(&mut raw, 0)
            .map_err(io_err("read", &self.log_path))?;
        Ok(Some(match BatchHeader::parse(&raw) {
            Ok(header) if header.max_timestamp >= 0 => header.max_timestamp.min(now_ms),
            _ => now_ms,
        }))
    }

    /// Appends already-rewritten batches (`headers` describe `records` in order) at the end of
    /// the file with one write, then updates the indexes batch by batch.
    pub fn append(
        &mut self,
        records: &[u8],
        headers: &[BatchHeader],
        now_ms: i64,
    ) -> Result<(), LogError> {
        let start = self.size_bytes;
        if let Err(source) = self.file.write_all_at(records, start) {
            // Cut off whatever part of the write landed so the file matches the tracked size.
            if let Err(e) = self.file.set_len(start) {
                tracing::error!(segment = %self.log_path.display(), error = %e,
                    "cannot undo a failed append; recovery will fix the tail on restart");
            }
            return Err(LogError::Io {
                op: "write",
                path: self.log_path.clone(),
                source,
            });
        }
        self.size_bytes += records.len() as u64;
        if self.rolling_base_ms.is_none() {
            self.rolling_base_ms = Some(now_ms);
        }
        // Track every batch even if an index write fails, so offsets and sizes keep matching
        // the data file; the first index error is still reported.
        let mut position = start;
        let mut index_result = Ok(());
        for header in headers {
            let tracked = self.indexing.track_batch(header, position);
            if index_result.is_ok() {
                index_result = tracked;
            }
            position += header.total_len_bytes() as u64;
        }
        index_result.map_err(io_err("write index of", &self.log_path))
    }

    /// Where to start scanning for `offset`: the position of the offset index entry at or below
    /// it, else the segment start. The batch at an entry must end at the entry's offset; if it
    /// does not (a trusted index that lies), scanning from the segment start keeps the answer
    /// right, only slower.
    fn scan_start_for(&self, reader: &mut HeaderReader<'_>, offset: i64) -> Result<u64, LogError> {
        let Some(entry) = self.indexing.offset_index.lookup_entry(offset) else {
            return Ok(0);
        };
        let position = u64::from(entry.position);
        match reader.header_at(position)? {
            HeaderAt::Header(header) if header.last_offset() == entry.offset => Ok(position),
            _ => {
                tracing::warn!(segment = %self.log_path.display(), entry_offset = entry.offset,
                    position, "offset index entry does not match the data; scanning from the segment start");
                Ok(0)
            }
        }
    }

    /// Reads the header at `position` during a lookup, where damage is an error.
    fn lookup_header_at(
        &self,
        reader: &mut HeaderReader<'_>,
        position: u64,
    ) -> Result<Option<BatchHeader>, LogError> {
        match reader.header_at(position)? {
            HeaderAt::End => Ok(None),
            HeaderAt::Damaged(reason) => Err(LogError::Corrupt {
                path: self.log_path.clone(),
                position,
                reason,
            }),
            HeaderAt::Header(header) => Ok(Some(header)),
        }
    }

    /// Calls `visit` with the header of every batch, in log order, reading only headers.
    /// Damage is an error, as for any lookup.
    pub fn for_each_batch_header(
        &self,
        mut visit: impl FnMut(&BatchHeader),
    ) -> Result<(), LogError> {
        let mut reader = HeaderReader::new(&self.file, &self.log_path, self.size_bytes);
        let mut position = 0u64;
        while let Some(header) = self.lookup_header_at(&mut reader, position)? {
            visit(&header);
            position += header.total_len_bytes() as u64;
        }
        Ok(())
    }

    /// The position and header of the first batch whose last offset is >= `offset`, if any.
    pub fn find_batch(&self, offset: i64) -> Result<Option<(u64, BatchHeader)>, LogError> {
        let mut reader = HeaderReader::new(&self.file, &self.log_path, self.size_bytes);
        self.find_batch_with(&mut reader, offset)
    }

    fn find_batch_with(
        &self,
        reader: &mut HeaderReader<'_>,
        offset: i64,
    ) -> Result<Option<(u64, BatchHeader)>, LogError> {
        let mut position = self.scan_start_for(reader, offset)?;
        while let Some(header) = self.lookup_header_at(reader, position)? {
            if header.last_offset() >= offset {
                return Ok(Some((position, header)));
            }
            position += header.total_len_bytes() as u64;
        }
        Ok(None)
    }

    /// Reads whole batches starting with the one containing `offset` (see
    /// `PartitionLog::read`). `None` when no batch of this segment reaches `offset`.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset_exclusive: i64,
    ) -> Result<Option<Bytes>, LogError> {
        let mut reader = HeaderReader::new(&self.file, &self.log_path, self.size_bytes);
        let Some((start, first)) = self.find_batch_with(&mut reader, offset)? else {
            return Ok(None);
        };
        if first.last_offset() >= max_offset_exclusive {
            return Ok(Some(Bytes::new()));
        }
        // Decide the byte range from the headers first, so the data is read exactly once into
        // a buffer of exactly the right size.
        let mut end = start + first.total_len_bytes() as u64;
        loop {
            match reader.header_at(end)? {
                HeaderAt::End => break,
                HeaderAt::Damaged(reason) => {
                    // Serve what is sound; the damage is reported when a fetch starts there.
                    tracing::warn!(segment = %self.log_path.display(), position = end,
                        %reason, "damaged batch after a readable one");
                    break;
                }
                HeaderAt::Header(header) => {
                    let total = header.total_len_bytes() as u64;
                    if header.last_offset() >= max_offset_exclusive
                        || end - start + total > max_bytes as u64
                    {
                        break;
                    }
                    end += total;
                }
            }
        }
        // A recycled buffer (see `crate::buffers`): the fetch handler hands it back once the
        // response is encoded.
        let len = (end - start) as usize;
        let mut buf = crate::buffers::take(len);
        buf.resize(len, 0);
        self.file
            .read_exact_at(&mut buf, start)
            .map_err(io_err("read", &self.log_path))?;
        Ok(Some(buf.freeze()))
    }

    /// Kafka's LogSegment.findOffsetByTimestamp: the first record at or after `start_offset`
    /// with timestamp >= `target_ms`, as (offset, timestamp).
    pub fn find_offset_for_timestamp(
        &self,
        target_ms: i64,
        start_offset: i64,
    ) -> Result<Option<(i64, i64)>, LogError> {
        if self.indexing.max_timestamp_ms < target_ms {
            return Ok(None);
        }
        let from_offset = self
            .indexing
            .time_index
            .lookup(target_ms)
            .offset
            .max(start_offset);
        let mut reader = HeaderReader::new(&self.file, &self.log_path, self.size_bytes);
        let mut position = self.scan_start_for(&mut reader, from_offset)?;
        let mut batch_buf = Vec::new();
        while let Some(header) = self.lookup_header_at(&mut reader, position)? {
            let total = header.total_len_bytes();
            if header.max_timestamp >= target_ms && header.last_offset() >= start_offset {
                // The header check above guarantees the batch lies within the file, which
                // bounds this buffer.
                batch_buf.resize(total, 0);
                self.file
                    .read_exact_at(&mut batch_buf, position)
                    .map_err(io_err("read", &self.log_path))?;
                let found =
                    batch::first_record_at_or_after(&batch_buf, target_ms).map_err(|e| {
                        LogError::Corrupt {
                            path: self.log_path.clone(),
                            position,
                            reason: e.to_string(),
                        }
                    })?;
                if let Some((offset, timestamp)) = found {
                    if offset >= start_offset {
                        return Ok(Some((offset, timestamp)));
                    }
                }
            }
            position += total as u64;
        }
        Ok(None)
    }

    /// Removes every batch whose last offset is >= `offset` (so a batch containing `offset` goes
    /// entirely, as in Kafka) and the index entries pointing at them.
    pub fn truncate_to(&mut self, offset: i64) -> Result<(), LogError> {
        let Some((position, header)) = self.find_batch(offset)? else {
            return Ok(());
        };
        self.file
            .set_len(position)
            .map_err(io_err("truncate", &self.log_path))?;
        self.size_bytes = position;
        if position == 0 {
            self.rolling_base_ms = None;
        }
        let index_path = self.indexing.offset_index.path().to_path_buf();
        self.indexing
            .offset_index
            .truncate_to_position(position)
            .map_err(io_err("truncate", &index_path))?;
        let time_path = self.indexing.time_index.path().to_path_buf();
        self.indexing
            .time_index
            .truncate_to_offset(header.base_offset)
            .map_err(io_err("truncate", &time_path))?;
        if let Some(damage) = self.rescan_tail()? {
            return Err(LogError::Corrupt {
                path: self.log_path.clone(),
                position: damage.position,
                reason: damage.reason,
            });
        }
        Ok(())
    }

    /// Called when the segment stops being the active one: records the segment's largest
    /// timestamp in the time index (as Kafka's onBecomeInactiveSegment, so the segment's max
    /// timestamp is known after a restart without a scan) and fsyncs everything.
    pub fn seal(&mut self) -> Result<(), LogError> {
        let time_path = self.indexing.time_index.path().to_path_buf();
        self.indexing
            .time_index
            .maybe_append(
                self.indexing.max_timestamp_ms,
                self.indexing.offset_of_max_timestamp,
            )
            .map_err(io_err("write", &time_path))?;
        self.flush()
    }

    /// Fsyncs the data file and both indexes.
    pub fn flush(&self) -> Result<(), LogError> {
        self.file
            .sync_data()
            .map_err(io_err("fsync", &self.log_path))?;
        self.indexing
            .offset_index
            .flush()
            .map_err(io_err("fsync", self.indexing.offset_index.path()))?;
        self.indexing
            .time_index
            .flush()
            .map_err(io_err("fsync", self.indexing.time_index.path()))
    }

    /// Deletes the segment's files.
    pub fn delete(self) -> Result<(), LogError> {
        let index_path = self.indexing.offset_index.path().to_path_buf();
        let time_path = self.indexing.time_index.path().to_path_buf();
        drop(self.indexing);
        drop(self.file);
        // The data file goes last: a crash midway leaves a .log with stray indexes at worst,
        // which the next open rebuilds, rather than indexes without data.
        for path in [index_path, time_path, self.log_path] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(LogError::Io {
                        op: "delete",
                        path,
                        source: e,
                    })
                }
            }
        }
        Ok(())
    }

    /// Offset of the first batch (also the file name).
    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    /// Offset after the last batch.
    pub fn next_offset(&self) -> i64 {
        self.indexing.next_offset
    }

    /// Size of the `.log` file.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Largest batch maxTimestamp in the segment, -1 if none.
    pub fn max_timestamp_ms(&self) -> i64 {
        self.indexing.max_timestamp_ms
    }

    /// Reference time for time-based rolling (None while empty).
    pub fn rolling_base_ms(&self) -> Option<i64> {
        self.rolling_base_ms
    }

    /// Whether either index reached its entry limit (the log rolls then, as Kafka).
    pub fn indexes_full(&self) -> bool {
        self.indexing.offset_index.is_full() || self.indexing.time_index.is_full()
    }

    /// Whether `last_offset` can still be expressed relative to this segment's base offset.
    pub fn can_hold_offset(&self, last_offset: i64) -> bool {
        last_offset - self.base_offset <= MAX_RELATIVE_OFFSET
    }

    /// The offset index (for tests).
    #[cfg(test)]
    pub fn offset_index(&self) -> &OffsetIndex {
        &self.indexing.offset_index
    }

    /// The time index (for tests).
    #[cfg(test)]
    pub fn time_index(&self) -> &TimeIndex {
        &self.indexing.time_index
    }

    /// Path of the `.log` file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        assert_eq!(file_name(0, "log"), "00000000000000000000.log");
        assert_eq!(file_name(1234, "index"), "00000000000000001234.index");
        assert_eq!(parse_base_offset("00000000000000001234"), Some(1234));
        assert_eq!(parse_base_offset("0000000000000001234"), None);
        assert_eq!(parse_base_offset("0000000000000000123a"), None);
        assert_eq!(parse_base_offset("+0000000000000000123"), None);
        // 20 digits but beyond i64.
        assert_eq!(parse_base_offset("99999999999999999999"), None);
    }
}
