//! The Kafka record batch (magic v2) as it travels in Produce requests and as it is stored.
//!
//! Layout (all big-endian), offsets in bytes from the start of the batch:
//!
//! ```text
//! @0  baseOffset i64        @8  batchLength i32 (bytes after this field)
//! @12 partitionLeaderEpoch  @16 magic i8
//! @17 crc u32 (CRC-32C over @21..end)
//! @21 attributes i16        @23 lastOffsetDelta i32
//! @27 baseTimestamp i64     @35 maxTimestamp i64
//! @43 producerId i64        @51 producerEpoch i16
//! @53 baseSequence i32      @57 recordsCount i32
//! @61 records...
//! ```
//!
//! The broker treats batches as opaque blobs on the hot path: only these header fields are read
//! or rewritten, never the individual records (except for timestamp lookups, which are rare).

use std::ops::ControlFlow;

use bytes::Bytes;
use kafka_protocol::records::{RecordBatchDecoder, RecordSet};

use crate::wire::records::{self as wire_records, RecordsError};

/// Byte position of `baseOffset`.
const BASE_OFFSET_AT: usize = 0;
/// Byte position of `batchLength`.
const BATCH_LENGTH_AT: usize = 8;
/// Byte position of `partitionLeaderEpoch`.
const LEADER_EPOCH_AT: usize = 12;
/// Byte position of `magic`.
const MAGIC_AT: usize = 16;
/// Byte position of `crc`.
const CRC_AT: usize = 17;
/// Byte position of `attributes`; the CRC covers everything from here to the end.
const ATTRIBUTES_AT: usize = 21;
/// Start of the bytes covered by the CRC (the attributes field).
pub const CRC_COVERED_FROM: usize = ATTRIBUTES_AT;
/// Byte position of `lastOffsetDelta`.
const LAST_OFFSET_DELTA_AT: usize = 23;
/// Byte position of `baseTimestamp`.
const BASE_TIMESTAMP_AT: usize = 27;
/// Byte position of `maxTimestamp`.
const MAX_TIMESTAMP_AT: usize = 35;
/// Byte position of `producerId`.
const PRODUCER_ID_AT: usize = 43;
/// Byte position of `producerEpoch`.
const PRODUCER_EPOCH_AT: usize = 51;
/// Byte position of `baseSequence`.
const BASE_SEQUENCE_AT: usize = 53;
/// Byte position of `recordsCount`.
const RECORDS_COUNT_AT: usize = 57;

/// Size of the fixed v2 batch header; a batch is never shorter than this.
pub const HEADER_BYTES: usize = 61;
/// Bytes before the part counted by `batchLength` (baseOffset + batchLength).
pub const LOG_OVERHEAD_BYTES: usize = 12;
/// Smallest legal `batchLength` (a header with zero records).
pub const MIN_BATCH_LENGTH: i32 = (HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32;
/// The only record format this broker stores.
pub const MAGIC_V2: i8 = 2;
/// Bytes needed to read the magic byte (which sits at the same place in v0, v1 and v2).
const UP_TO_MAGIC_BYTES: usize = MAGIC_AT + 1;
/// Smallest encoded v2 record: length, attributes, timestampDelta, offsetDelta, key length,
/// value length and header count, one byte each. Used to bound `recordsCount` cheaply for
/// uncompressed batches without looking at the records.
const MIN_RECORD_BYTES: i64 = 7;
/// Highest compression codec id Kafka defines (zstd).
const MAX_COMPRESSION_CODEC: u8 = 4;
/// Attribute bit: timestamps are LogAppendTime.
const ATTR_LOG_APPEND_TIME: i16 = 1 << 3;
/// Attribute bit: part of a transaction.
const ATTR_TRANSACTIONAL: i16 = 1 << 4;
/// Attribute bit: control batch (transaction markers).
const ATTR_CONTROL: i16 = 1 << 5;
/// The most a batch's records may expand to when the broker reads inside a stored batch (a
/// timestamp lookup, loading `__consumer_offsets`). Producers' batches are stored compressed and
/// never expanded on the produce path; past this bound a timestamp lookup answers at batch
/// granularity instead, so a compression bomb costs the broker at most this much memory.
pub const DECOMPRESSED_RECORDS_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Kafka error code CORRUPT_MESSAGE.
const CORRUPT_MESSAGE: i16 = 2;
/// Kafka error code MESSAGE_TOO_LARGE.
const MESSAGE_TOO_LARGE: i16 = 10;
/// Kafka error code UNSUPPORTED_FOR_MESSAGE_FORMAT.
const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;
/// Kafka error code INVALID_RECORD.
const INVALID_RECORD: i16 = 87;

/// Why a record set or batch was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The record set holds no batch at all.
    #[error("record set is empty")]
    Empty,
    /// The buffer ends before the batch does.
    #[error(
        "record batch truncated: needs {needed_bytes} bytes, only {available_bytes} available"
    )]
    Truncated {
        /// Bytes the batch claims to need.
        needed_bytes: usize,
        /// Bytes actually present.
        available_bytes: usize,
    },
    /// A header field is inconsistent.
    #[error("corrupt record batch: {reason}")]
    Corrupt {
        /// What was wrong.
        reason: String,
    },
    /// The stored CRC does not match the batch content.
    #[error("record batch CRC mismatch: stored {expected:#010x}, computed {actual:#010x}")]
    CrcMismatch {
        /// CRC stored in the batch header.
        expected: u32,
        /// CRC computed over the batch content.
        actual: u32,
    },
    /// The batch is bigger than `max.message.bytes`.
    #[error("record batch of {size_bytes} bytes exceeds the limit of {limit_bytes} bytes")]
    TooLarge {
        /// Size of the whole batch.
        size_bytes: usize,
        /// The configured limit.
        limit_bytes: usize,
    },
    /// The batch is not magic v2 (message sets v0/v1 are not supported).
    #[error("unsupported record batch magic {magic} (only v2 is supported)")]
    UnsupportedMagic {
        /// The magic byte found.
        magic: i8,
    },
}

impl BatchError {
    /// The Kafka error code a Produce response should carry for this error.
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            // Kafka rejects a partition with no batches as INVALID_RECORD
            // (ProduceRequest.validateRecords), not as corruption.
            BatchError::Empty => INVALID_RECORD,
            BatchError::Truncated { .. }
            | BatchError::Corrupt { .. }
            | BatchError::CrcMismatch { .. } => CORRUPT_MESSAGE,
            BatchError::TooLarge { .. } => MESSAGE_TOO_LARGE,
            BatchError::UnsupportedMagic { .. } => UNSUPPORTED_FOR_MESSAGE_FORMAT,
        }
    }

    fn corrupt(reason: impl Into<String>) -> BatchError {
        BatchError::Corrupt {
            reason: reason.into(),
        }
    }
}

/// The fixed 61-byte header of a v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Bytes following the `batchLength` field (whole batch = this + 12).
    pub batch_length: i32,
    /// Leader epoch stamped by the leader when it appended the batch.
    pub partition_leader_epoch: i32,
    /// Format version; always 2 for batches this broker accepts.
    pub magic: i8,
    /// CRC-32C of the bytes from `attributes` to the end of the batch.
    pub crc: u32,
    /// Compression codec, timestamp type, transactional and control flags.
    pub attributes: i16,
    /// Last record offset minus `base_offset`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record (record timestamps are deltas from it).
    pub base_timestamp: i64,
    /// Largest record timestamp, or the append time for LogAppendTime batches.
    pub max_timestamp: i64,
    /// Idempotent/transactional producer id, -1 if none.
    pub producer_id: i64,
    /// Producer epoch, -1 if none.
    pub producer_epoch: i16,
    /// Sequence number of the first record, -1 if none.
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub records_count: i32,
}

fn read_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([buf[at], buf[at + 1]])
}

fn read_i32(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

fn read_i64(buf: &[u8], at: usize) -> i64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&buf[at..at + 8]);
    i64::from_be_bytes(raw)
}

impl BatchHeader {
    /// Parses the header at the start of `buf` (which needs at least [`HEADER_BYTES`] bytes).
    ///
    /// Only `batchLength` is checked here (it must be at least a header's worth), so that the
    /// size helpers are always meaningful; use [`BatchHeader::check_stored`] or
    /// [`split_and_validate`] for the other checks.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < HEADER_BYTES {
            return Err(BatchError::Truncated {
                needed_bytes: HEADER_BYTES,
                available_bytes: buf.len(),
            });
        }
        let header = BatchHeader {
            base_offset: read_i64(buf, BASE_OFFSET_AT),
            batch_length: read_i32(buf, BATCH_LENGTH_AT),
            partition_leader_epoch: read_i32(buf, LEADER_EPOCH_AT),
            magic: buf[MAGIC_AT] as i8,
            crc: u32::from_be_bytes([
                buf[CRC_AT],
                buf[CRC_AT + 1],
                buf[CRC_AT + 2],
                buf[CRC_AT + 3],
            ]),
            attributes: read_i16(buf, ATTRIBUTES_AT),
            last_offset_delta: read_i32(buf, LAST_OFFSET_DELTA_AT),
            base_timestamp: read_i64(buf, BASE_TIMESTAMP_AT),
            max_timestamp: read_i64(buf, MAX_TIMESTAMP_AT),
            producer_id: read_i64(buf, PRODUCER_ID_AT),
            producer_epoch: read_i16(buf, PRODUCER_EPOCH_AT),
            base_sequence: read_i32(buf, BASE_SEQUENCE_AT),
            records_count: read_i32(buf, RECORDS_COUNT_AT),
        };
        if header.batch_length < MIN_BATCH_LENGTH {
            return Err(BatchError::corrupt(format!(
                "batch length {} is below the minimum {MIN_BATCH_LENGTH}",
                header.batch_length
            )));
        }
        Ok(header)
    }

    /// Size of the whole batch in bytes, header included.
    pub fn total_len_bytes(&self) -> usize {
        // parse() guarantees batch_length >= MIN_BATCH_LENGTH > 0.
        LOG_OVERHEAD_BYTES + self.batch_length.max(0) as usize
    }

    /// Offset of the last record of the batch.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Offset following the batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    /// Compression codec id: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub fn compression_codec(&self) -> u8 {
        (self.attributes & 0x07) as u8
    }

    /// Whether the record timestamps are LogAppendTime (the batch maxTimestamp applies to all).
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_LOG_APPEND_TIME != 0
    }

    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    /// Whether the batch is a control batch (transaction marker).
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    /// Header checks that hold for every batch stored in a log: magic v2, a known codec and
    /// non-negative offset delta and record count. Batches that went through compaction
    /// may legitimately hold fewer records than their offset span, so the exact count check
    /// is only applied to freshly produced batches (see [`split_and_validate`]).
    pub fn check_stored(&self) -> Result<(), BatchError> {
        if self.magic != MAGIC_V2 {
            return Err(BatchError::UnsupportedMagic { magic: self.magic });
        }
        if self.compression_codec() > MAX_COMPRESSION_CODEC {
            return Err(BatchError::corrupt(format!(
                "unknown compression codec {}",
                self.compression_codec()
            )));
        }
        if self.last_offset_delta < 0 {
            return Err(BatchError::corrupt(format!(
                "negative last offset delta {}",
                self.last_offset_delta
            )));
        }
        if self.records_count < 0 {
            return Err(BatchError::corrupt(format!(
                "negative record count {}",
                self.records_count
            )));
        }
        Ok(())
    }

    /// Extra checks for a batch coming from a producer: it must hold at least one record, one
    /// per offset of its span, and (when uncompressed) no more records than its bytes can hold.
    fn check_produced(&self) -> Result<(), BatchError> {
        self.check_stored()?;
        if self.records_count == 0 {
            return Err(BatchError::corrupt("batch holds no records"));
        }
        if i64::from(self.records_count) != i64::from(self.last_offset_delta) + 1 {
            return Err(BatchError::corrupt(format!(
                "record count {} does not match last offset delta {}",
                self.records_count, self.last_offset_delta
            )));
        }
        // Offsets are assigned from the header alone, so a header claiming more records than
        // the batch contains would burn offsets. For uncompressed batches that is cheap to rule
        // out; compressed ones would need decompression (Kafka does that, we do not).
        let records_bytes = i64::from(self.batch_length) - i64::from(MIN_BATCH_LENGTH);
        if self.compression_codec() == 0
            && i64::from(self.records_count) * MIN_RECORD_BYTES > records_bytes
        {
            return Err(BatchError::corrupt(format!(
                "record count {} cannot fit in {records_bytes} bytes of records",
                self.records_count
            )));
        }
        Ok(())
    }
}

/// Checks the CRC-32C of the whole batch at the start of `batch`.
pub fn verify_crc(batch: &[u8]) -> Result<(), BatchError> {
    let header = BatchHeader::parse(batch)?;
    let total = header.total_len_bytes();
    if batch.len() < total {
        return Err(BatchError::Truncated {
            needed_bytes: total,
            available_bytes: batch.len(),
        });
    }
    let actual = crc32c::crc32c(&batch[ATTRIBUTES_AT..total]);
    if actual != header.crc {
        return Err(BatchError::CrcMismatch {
            expected: header.crc,
            actual,
        });
    }
    Ok(())
}

/// Splits a Produce request's record set into its batches and validates each one (magic v2,
/// sane length, CRC, record count, size limit). Returns the parsed headers, in order.
pub fn split_and_validate(
    records: &[u8],
    max_batch_bytes: usize,
) -> Result<Vec<BatchHeader>, BatchError> {
    if records.is_empty() {
        return Err(BatchError::Empty);
    }
    // Every batch is at least HEADER_BYTES long, which bounds the Vec by the request size.
    let mut headers = Vec::with_capacity((records.len() / HEADER_BYTES).clamp(1, 64));
    let mut position = 0usize;
    while position < records.len() {
        let rest = &records[position..];
        if rest.len() < UP_TO_MAGIC_BYTES {
            return Err(BatchError::Truncated {
                needed_bytes: HEADER_BYTES,
                available_bytes: rest.len(),
            });
        }
        // Magic first: v0/v1 message sets have a different header, so nothing else in it can
        // be interpreted, and the client deserves UNSUPPORTED_FOR_MESSAGE_FORMAT.
        let magic = rest[MAGIC_AT] as i8;
        if magic != MAGIC_V2 {
            return Err(BatchError::UnsupportedMagic { magic });
        }
        let batch_length = read_i32(rest, BATCH_LENGTH_AT);
        if batch_length < MIN_BATCH_LENGTH {
            return Err(BatchError::corrupt(format!(
                "batch length {batch_length} is below the minimum {MIN_BATCH_LENGTH}"
            )));
        }
        let total = LOG_OVERHEAD_BYTES + batch_length as usize;
        if total > max_batch_bytes {
            return Err(BatchError::TooLarge {
                size_bytes: total,
                limit_bytes: max_batch_bytes,
            });
        }
        if total > rest.len() {
            return Err(BatchError::Truncated {
                needed_bytes: total,
                available_bytes: rest.len(),
            });
        }
        let batch = &rest[..total];
        let header = BatchHeader::parse(batch)?;
        verify_crc(batch)?;
        header.check_produced()?;
        headers.push(header);
        position += total;
    }
    Ok(headers)
}

/// Splits record data a follower fetched from its leader into whole batches, validating each
/// one as stored data (magic v2, sane length, CRC, [`BatchHeader::check_stored`]). As Kafka
/// does with fetched data, a trailing partial batch (fewer bytes than its length announces,
/// or too few to read the length and magic) is not an error: it is left out. Returns the
/// headers in order and how many bytes of `records` the whole batches cover. Empty input
/// gives no batch. No size limit applies: the leader already accepted these batches.
pub fn split_fetched(records: &[u8]) -> Result<(Vec<BatchHeader>, usize), BatchError> {
    // Every batch is at least HEADER_BYTES long, which bounds the Vec by the input size.
    let mut headers = Vec::with_capacity((records.len() / HEADER_BYTES).min(64));
    let mut position = 0usize;
    while position < records.len() {
        let rest = &records[position..];
        if rest.len() < LOG_OVERHEAD_BYTES {
            break;
        }
        // Kafka's order (ByteBufferLogInputStream.nextBatchSize): a length that no batch can
        // have is corruption even in a partial batch; the magic is checked once it is there.
        let batch_length = read_i32(rest, BATCH_LENGTH_AT);
        if batch_length < MIN_BATCH_LENGTH {
            return Err(BatchError::corrupt(format!(
                "batch length {batch_length} at byte {position} is below the minimum \
                 {MIN_BATCH_LENGTH}"
            )));
        }
        if rest.len() < UP_TO_MAGIC_BYTES {
            break;
        }
        let magic = rest[MAGIC_AT] as i8;
        if magic != MAGIC_V2 {
            return Err(BatchError::UnsupportedMagic { magic });
        }
        let total = LOG_OVERHEAD_BYTES + batch_length as usize;
        if total > rest.len() {
            break;
        }
        let batch = &rest[..total];
        let header = BatchHeader::parse(batch)?;
        verify_crc(batch)?;
        header.check_stored()?;
        headers.push(header);
        position += total;
    }
    Ok((headers, position))
}

fn check_header_room(batch: &[u8]) -> Result<(), BatchError> {
    if batch.len() < HEADER_BYTES {
        return Err(BatchError::Truncated {
            needed_bytes: HEADER_BYTES,
            available_bytes: batch.len(),
        });
    }
    Ok(())
}

/// Rewrites the base offset of the batch at the start of `batch`. The field is outside the
/// CRC, so the CRC stays valid.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) -> Result<(), BatchError> {
    check_header_room(batch)?;
    batch[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.to_be_bytes());
    Ok(())
}

/// Rewrites the partition leader epoch of the batch at the start of `batch`. The field is
/// outside the CRC (precisely so the leader can stamp it), so the CRC stays valid.
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) -> Result<(), BatchError> {
    check_header_room(batch)?;
    batch[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&epoch.to_be_bytes());
    Ok(())
}

/// Turns the batch at the start of `batch` into a LogAppendTime batch stamped `ts_ms`: sets
/// attribute bit 3 and maxTimestamp, then recomputes the CRC (as Kafka's LogValidator does;
/// record timestamps are left alone because readers ignore them for LogAppendTime batches).
/// Returns the new CRC.
pub fn set_log_append_time(batch: &mut [u8], ts_ms: i64) -> Result<u32, BatchError> {
    let header = BatchHeader::parse(batch)?;
    let total = header.total_len_bytes();
    if batch.len() < total {
        return Err(BatchError::Truncated {
            needed_bytes: total,
            available_bytes: batch.len(),
        });
    }
    let attributes = header.attributes | ATTR_LOG_APPEND_TIME;
    batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&ts_ms.to_be_bytes());
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_AT..total]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(crc)
}

/// Finds the first record of the batch at the start of `batch` whose timestamp is at least
/// `target_ts_ms`, returning its offset and timestamp. For LogAppendTime batches every record's
/// timestamp is the batch maxTimestamp.
pub fn first_record_at_or_after(
    batch: &[u8],
    target_ts_ms: i64,
) -> Result<Option<(i64, i64)>, BatchError> {
    let header = BatchHeader::parse(batch)?;
    let total = header.total_len_bytes();
    if batch.len() < total {
        return Err(BatchError::Truncated {
            needed_bytes: total,
            available_bytes: batch.len(),
        });
    }
    // maxTimestamp bounds every record timestamp (Kafka relies on it the same way), so most
    // batches are skipped without decompressing anything.
    if header.max_timestamp < target_ts_ms || header.records_count == 0 {
        return Ok(None);
    }
    let dense = i64::from(header.records_count) == i64::from(header.last_offset_delta) + 1;
    if header.is_log_append_time() && dense {
        // Every record carries maxTimestamp and the first record sits at the base offset.
        return Ok(Some((header.base_offset, header.max_timestamp)));
    }
    let payload = match wire_records::decompress(
        header.compression_codec(),
        &batch[HEADER_BYTES..total],
        DECOMPRESSED_RECORDS_BYTES_MAX,
    ) {
        Ok(p) => p,
        // Answer with the batch start, which is never after the true answer, so a consumer
        // starting there misses nothing.
        Err(RecordsError::TooLargeDecompressed { .. }) => {
            return Ok(Some((header.base_offset, header.max_timestamp)))
        }
        Err(e) => return Err(BatchError::corrupt(format!("cannot read records: {e}"))),
    };
    let mut found = None;
    wire_records::for_each_record(&payload, header.records_count, |record| {
        let timestamp = if header.is_log_append_time() {
            header.max_timestamp
        } else {
            header
                .base_timestamp
                .saturating_add(record.timestamp_delta_ms)
        };
        if timestamp >= target_ts_ms {
            found = Some((
                header.base_offset + i64::from(record.offset_delta),
                timestamp,
            ));
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    })
    .map_err(|e| BatchError::corrupt(format!("cannot read records: {e}")))?;
    Ok(found)
}

/// Decodes the records of one stored batch (`batch` holds it whole, from its base offset) with
/// kafka-protocol, after expanding its payload within [`DECOMPRESSED_RECORDS_BYTES_MAX`] and
/// walking its records, so no count in it reaches the decoder unchecked.
pub fn decode_stored_records(mut batch: Bytes) -> Result<RecordSet, BatchError> {
    let header = BatchHeader::parse(&batch)?;
    let total = header.total_len_bytes();
    if batch.len() < total {
        return Err(BatchError::Truncated {
            needed_bytes: total,
            available_bytes: batch.len(),
        });
    }
    let payload = wire_records::decompress(
        header.compression_codec(),
        &batch[HEADER_BYTES..total],
        DECOMPRESSED_RECORDS_BYTES_MAX,
    )
    .map_err(|e| BatchError::corrupt(format!("cannot read records: {e}")))?;
    wire_records::for_each_record(
        &payload,
        header.records_count,
        |_| ControlFlow::Continue(()),
    )
    .map_err(|e| BatchError::corrupt(format!("cannot read records: {e}")))?;
    let payload = Bytes::from(payload);
    // The decoder asks for the expanded payload through this hook instead of decompressing
    // the batch itself without a bound.
    let expanded = |_compressed: &mut Bytes, _codec| Ok(payload.clone());
    let mut whole = batch.split_to(total);
    RecordBatchDecoder::decode_with_custom_compression(&mut whole, Some(expanded))
        .map_err(|e| BatchError::corrupt(format!("cannot decode records: {e:#}")))
}

#[cfg(test)]
pub(crate) mod test_util {
    //! Builds real record batches with kafka-protocol's encoder, so CRCs are genuine.

    use bytes::{Bytes, BytesMut};
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    /// Encodes one batch whose records have the given timestamps and values; offsets start at 0.
    pub(crate) fn encode_batch(records: &[(i64, Vec<u8>)], compression: Compression) -> Vec<u8> {
        let records: Vec<Record> = records
            .iter()
            .enumerate()
            .map(|(i, (ts, value))| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // Equal offset-sequence distance keeps all records in one batch.
                sequence: i as i32,
                timestamp: *ts,
                key: Some(Bytes::from(format!("key-{i}"))),
                value: Some(Bytes::from(value.clone())),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .expect("encoding test records");
        buf.to_vec()
    }

    /// An uncompressed batch of `count` records from idempotent producer `producer_id` at
    /// `epoch`, sequences from `base_sequence` on (wrapping), timestamps `ts0, ts0 + 1, ...`.
    pub(crate) fn idempotent_batch(
        producer_id: i64,
        epoch: i16,
        base_sequence: i32,
        count: usize,
        ts0: i64,
    ) -> Vec<u8> {
        let records: Vec<Record> = (0..count)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id,
                producer_epoch: epoch,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: base_sequence.wrapping_add(i as i32),
                timestamp: ts0 + i as i64,
                key: Some(Bytes::from(format!("key-{i}"))),
                value: Some(Bytes::from(format!("value-{base_sequence}-{i}"))),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .expect("encoding test records");
        buf.to_vec()
    }

    /// An uncompressed batch of `count` records with `value_bytes`-byte values, timestamps
    /// `ts0, ts0 + 1, ...`.
    pub(crate) fn simple_batch(count: usize, value_bytes: usize, ts0: i64) -> Vec<u8> {
        let records: Vec<(i64, Vec<u8>)> = (0..count)
            .map(|i| (ts0 + i as i64, vec![b'a' + (i % 26) as u8; value_bytes]))
            .collect();
        encode_batch(&records, Compression::None)
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::{encode_batch, simple_batch};
    use super::*;
    use kafka_protocol::records::{Compression, TimestampType};

    #[test]
    fn parse_reads_every_field() {
        let mut batch = simple_batch(3, 10, 1_000);
        set_base_offset(&mut batch, 42).unwrap();
        set_partition_leader_epoch(&mut batch, 7).unwrap();
        let h = BatchHeader::parse(&batch).unwrap();
        assert_eq!(h.base_offset, 42);
        assert_eq!(h.total_len_bytes(), batch.len());
        assert_eq!(h.partition_leader_epoch, 7);
        assert_eq!(h.magic, 2);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.last_offset(), 44);
        assert_eq!(h.next_offset(), 45);
        assert_eq!(h.base_timestamp, 1_000);
        assert_eq!(h.max_timestamp, 1_002);
        assert_eq!(h.producer_id, -1);
        assert_eq!(h.producer_epoch, -1);
        assert_eq!(h.base_sequence, 0);
        assert_eq!(h.records_count, 3);
        assert_eq!(h.compression_codec(), 0);
        assert!(!h.is_log_append_time() && !h.is_transactional() && !h.is_control());
        // Rewriting fields outside the CRC keeps the batch valid.
        verify_crc(&batch).unwrap();
        assert_eq!(split_and_validate(&batch, 1 << 20).unwrap(), vec![h]);
    }

    #[test]
    fn parse_rejects_short_buffers_and_lengths() {
        let batch = simple_batch(1, 1, 0);
        assert!(matches!(
            BatchHeader::parse(&batch[..60]),
            Err(BatchError::Truncated {
                needed_bytes: 61,
                available_bytes: 60
            })
        ));
        let mut bad = batch.clone();
        bad[8..12].copy_from_slice(&48i32.to_be_bytes());
        assert!(matches!(
            BatchHeader::parse(&bad),
            Err(BatchError::Corrupt { .. })
        ));
    }

    #[test]
    fn split_accepts_several_batches() {
        let a = simple_batch(2, 5, 0);
        let b = encode_batch(&[(5, b"x".to_vec())], Compression::Gzip);
        let mut both = a.clone();
        both.extend_from_slice(&b);
        let headers = split_and_validate(&both, 1 << 20).unwrap();
        assert_eq!(headers.len(), 2);
        assert_eq!(headers[0].total_len_bytes(), a.len());
        assert_eq!(headers[1].total_len_bytes(), b.len());
        assert_eq!(headers[1].compression_codec(), 1);
    }

    #[test]
    fn split_rejects_bad_crc() {
        let mut batch = simple_batch(2, 5, 0);
        let last = batch.len() - 1;
        batch[last] ^= 0xff;
        let err = split_and_validate(&batch, 1 << 20).unwrap_err();
        assert!(matches!(err, BatchError::CrcMismatch { .. }), "{err}");
        assert_eq!(err.kafka_error_code(), 2);
    }

    #[test]
    fn split_rejects_bad_magic() {
        let mut batch = simple_batch(2, 5, 0);
        batch[16] = 1;
        let err = split_and_validate(&batch, 1 << 20).unwrap_err();
        assert_eq!(err, BatchError::UnsupportedMagic { magic: 1 });
        assert_eq!(err.kafka_error_code(), 43);
    }

    #[test]
    fn split_rejects_truncated_input() {
        let batch = simple_batch(2, 5, 0);
        for cut in [1, 16, 17, 60, 61, batch.len() - 1] {
            let err = split_and_validate(&batch[..cut], 1 << 20).unwrap_err();
            assert!(
                matches!(err, BatchError::Truncated { .. }),
                "cut {cut}: {err}"
            );
            assert_eq!(err.kafka_error_code(), 2);
        }
        // A valid batch followed by a partial one.
        let mut two = batch.clone();
        two.extend_from_slice(&batch[..30]);
        assert!(matches!(
            split_and_validate(&two, 1 << 20),
            Err(BatchError::Truncated { .. })
        ));
    }

    #[test]
    fn split_fetched_drops_a_trailing_partial_batch_only() {
        let a = simple_batch(2, 5, 0);
        let b = encode_batch(&[(5, b"x".to_vec())], Compression::Gzip);
        let mut both = a.clone();
        both.extend_from_slice(&b);
        assert_eq!(split_fetched(&[]).unwrap(), (vec![], 0));
        let (headers, bytes) = split_fetched(&both).unwrap();
        assert_eq!((headers.len(), bytes), (2, both.len()));
        // Every cut inside the second batch leaves the first one alone.
        for cut in a.len()..both.len() {
            let (headers, bytes) = split_fetched(&both[..cut]).unwrap();
            assert_eq!((headers.len(), bytes), (1, a.len()), "cut at {cut}");
        }
        // A partial first batch gives nothing.
        assert_eq!(split_fetched(&a[..a.len() - 1]).unwrap(), (vec![], 0));
        // But corruption is corruption, partial or not.
        let mut bad_crc = both.clone();
        let last = bad_crc.len() - 1;
        bad_crc[last] ^= 0xff;
        assert!(matches!(
            split_fetched(&bad_crc),
            Err(BatchError::CrcMismatch { .. })
        ));
        let mut bad_length = both.clone();
        bad_length[a.len() + 8..a.len() + 12].copy_from_slice(&10i32.to_be_bytes());
        assert!(matches!(
            split_fetched(&bad_length[..a.len() + 20]),
            Err(BatchError::Corrupt { .. })
        ));
        let mut bad_magic = both.clone();
        bad_magic[a.len() + 16] = 1;
        assert_eq!(
            split_fetched(&bad_magic[..a.len() + 30]).unwrap_err(),
            BatchError::UnsupportedMagic { magic: 1 }
        );
        // Stored batches may be bigger than any produce limit.
        let big = simple_batch(3, 100_000, 0);
        assert_eq!(split_fetched(&big).unwrap().1, big.len());
    }

    #[test]
    fn split_rejects_too_large_batch() {
        let batch = simple_batch(2, 100, 0);
        let err = split_and_validate(&batch, batch.len() - 1).unwrap_err();
        assert_eq!(
            err,
            BatchError::TooLarge {
                size_bytes: batch.len(),
                limit_bytes: batch.len() - 1
            }
        );
        assert_eq!(err.kafka_error_code(), 10);
        assert!(split_and_validate(&batch, batch.len()).is_ok());
    }

    #[test]
    fn split_rejects_empty_and_inconsistent_counts() {
        let err = split_and_validate(&[], 1 << 20).unwrap_err();
        assert_eq!(err, BatchError::Empty);
        assert_eq!(err.kafka_error_code(), 87);

        // recordsCount != lastOffsetDelta + 1 (CRC fixed up so only the count is wrong).
        let mut batch = simple_batch(3, 5, 0);
        batch[57..61].copy_from_slice(&2i32.to_be_bytes());
        let crc = crc32c::crc32c(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            split_and_validate(&batch, 1 << 20),
            Err(BatchError::Corrupt { .. })
        ));

        // A header claiming far more records than the bytes can hold.
        let mut batch = simple_batch(1, 5, 0);
        batch[23..27].copy_from_slice(&999i32.to_be_bytes());
        batch[57..61].copy_from_slice(&1000i32.to_be_bytes());
        let crc = crc32c::crc32c(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            split_and_validate(&batch, 1 << 20),
            Err(BatchError::Corrupt { .. })
        ));

        // Batch length below the header size.
        let mut batch = simple_batch(1, 5, 0);
        batch[8..12].copy_from_slice(&10i32.to_be_bytes());
        assert!(matches!(
            split_and_validate(&batch, 1 << 20),
            Err(BatchError::Corrupt { .. })
        ));
    }

    #[test]
    fn log_append_time_rewrite_keeps_crc_valid() {
        let mut batch = encode_batch(
            &[(10, b"a".to_vec()), (20, b"b".to_vec())],
            Compression::Lz4,
        );
        let crc = set_log_append_time(&mut batch, 99_999).unwrap();
        verify_crc(&batch).unwrap();
        let h = BatchHeader::parse(&batch).unwrap();
        assert_eq!(h.crc, crc);
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp, 99_999);
        assert_eq!(h.compression_codec(), 3);
        // kafka-protocol agrees the batch is valid and LogAppendTime.
        let mut bytes = Bytes::from(batch.clone());
        let decoded = RecordBatchDecoder::decode(&mut bytes).unwrap();
        assert_eq!(decoded.records.len(), 2);
        assert_eq!(decoded.records[0].timestamp_type, TimestampType::LogAppend);
        assert_eq!(
            first_record_at_or_after(&batch, 50_000).unwrap(),
            Some((0, 99_999))
        );
        assert_eq!(first_record_at_or_after(&batch, 100_000).unwrap(), None);
    }

    #[test]
    fn first_record_at_or_after_all_codecs() {
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut batch = encode_batch(
                &[
                    (100, b"a".to_vec()),
                    (300, b"b".to_vec()),
                    (200, b"c".to_vec()),
                    (400, b"d".to_vec()),
                ],
                compression,
            );
            set_base_offset(&mut batch, 1_000).unwrap();
            let find = |ts| first_record_at_or_after(&batch, ts).unwrap();
            assert_eq!(find(0), Some((1_000, 100)), "{compression:?}");
            assert_eq!(find(100), Some((1_000, 100)), "{compression:?}");
            assert_eq!(find(101), Some((1_001, 300)), "{compression:?}");
            assert_eq!(find(250), Some((1_001, 300)), "{compression:?}");
            assert_eq!(find(301), Some((1_003, 400)), "{compression:?}");
            assert_eq!(find(401), None, "{compression:?}");
        }
    }

    /// One uncompressed record whose header count says i32::MAX, in a batch with a valid CRC:
    /// what a hostile producer can store.
    fn batch_with_absurd_header_count() -> Vec<u8> {
        let mut batch = encode_batch(&[(100, b"v".to_vec())], Compression::None);
        let body = [
            0x00, // attributes
            0x00, // timestamp delta
            0x00, // offset delta
            0x01, // null key
            0x02, b'v', // value
            0xfe, 0xff, 0xff, 0xff, 0x0f, // i32::MAX headers
            0x02, b'h', 0x01, // one header
        ];
        batch.truncate(HEADER_BYTES);
        batch.push((body.len() as u8) << 1);
        batch.extend_from_slice(&body);
        let batch_length = (batch.len() - LOG_OVERHEAD_BYTES) as i32;
        batch[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&batch_length.to_be_bytes());
        let crc = crc32c::crc32c(&batch[CRC_COVERED_FROM..]);
        batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        batch
    }

    #[test]
    fn a_stored_batch_with_an_absurd_header_count_is_refused_not_decoded() {
        let batch = batch_with_absurd_header_count();
        // It passes every check of the produce path: only its records are hostile.
        let headers = split_and_validate(&batch, 1 << 20).unwrap();
        assert_eq!(headers[0].records_count, 1);
        let err = first_record_at_or_after(&batch, 0).unwrap_err();
        assert!(err.to_string().contains("header count"), "{err}");
        let err = decode_stored_records(Bytes::from(batch)).unwrap_err();
        assert!(err.to_string().contains("header count"), "{err}");
    }

    #[test]
    fn a_compression_bomb_is_answered_at_batch_granularity() {
        let zeros = vec![0u8; DECOMPRESSED_RECORDS_BYTES_MAX + 1];
        let mut batch = encode_batch(&[(500, zeros)], Compression::Zstd);
        assert!(batch.len() < 1 << 20, "zstd shrinks zeros");
        set_base_offset(&mut batch, 7).unwrap();
        // Not expanded past the bound: the batch start, never after the true answer.
        assert_eq!(
            first_record_at_or_after(&batch, 400).unwrap(),
            Some((7, 500))
        );
        assert!(decode_stored_records(Bytes::from(batch)).is_err());
    }
}
