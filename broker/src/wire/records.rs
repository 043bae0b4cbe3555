//! The records inside a v2 record batch, read without trusting a single length in them.
//!
//! A batch's CRC only proves that the producer meant these bytes; the counts inside (records,
//! headers per record) and the size a compressed payload expands to are still the producer's
//! word. `kafka-protocol`'s record decoder reserves from those counts (`Vec::reserve(record
//! count)`, `IndexMap::with_capacity(header count)`) and decompresses without a bound, so the
//! broker never hands it a stored batch. Instead, [`decompress`] expands a payload into at most
//! a given number of bytes, and [`for_each_record`] walks the records, checking every length
//! against the bytes that are there and allocating nothing.

use std::io::Read;
use std::ops::ControlFlow;

/// Kafka's codec ids in a batch's attributes.
const CODEC_NONE: u8 = 0;
const CODEC_GZIP: u8 = 1;
const CODEC_SNAPPY: u8 = 2;
const CODEC_LZ4: u8 = 3;
const CODEC_ZSTD: u8 = 4;

/// The frame header of xerial's snappy-java stream format, which Kafka's Java clients write.
const XERIAL_MAGIC: &[u8] = &[0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
/// Magic, version and compatible version.
const XERIAL_HEADER_BYTES: usize = 16;

/// Why the records of a batch cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordsError {
    /// The payload expands to more than the caller allows.
    #[error("compressed records expand to more than {limit_bytes} bytes")]
    TooLargeDecompressed {
        /// The bound that was hit.
        limit_bytes: usize,
    },
    /// The codec id is not one Kafka defines.
    #[error("unknown compression codec {0}")]
    UnknownCodec(u8),
    /// The compressed payload does not decode.
    #[error("cannot decompress records: {0}")]
    Decompress(String),
    /// A record's bytes do not hold what its lengths say.
    #[error("record {index}: {reason}")]
    BadRecord {
        /// Which record of the batch (from 0).
        index: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// The batch holds a different number of records than its header says.
    #[error("header says {declared} records, the payload holds {found}")]
    CountMismatch {
        /// `recordsCount` from the header.
        declared: i64,
        /// Records found before the bytes ran out.
        found: u64,
    },
    /// Bytes remain after the last record.
    #[error("{0} bytes after the last record")]
    TrailingBytes(usize),
}

/// What the broker needs of one record: where it sits relative to the batch's base offset and
/// base timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView {
    /// Offset minus the batch's base offset.
    pub offset_delta: i32,
    /// Timestamp minus the batch's base timestamp.
    pub timestamp_delta_ms: i64,
}

/// Expands the records payload of a batch compressed with `codec`, producing at most
/// `limit_bytes` bytes (more is [`RecordsError::TooLargeDecompressed`], found while
/// decompressing, never by trusting a size the payload declares).
pub fn decompress(codec: u8, payload: &[u8], limit_bytes: usize) -> Result<Vec<u8>, RecordsError> {
    match codec {
        CODEC_NONE => {
            if payload.len() > limit_bytes {
                return Err(RecordsError::TooLargeDecompressed { limit_bytes });
            }
            Ok(payload.to_vec())
        }
        CODEC_GZIP => read_bounded(flate2::read::GzDecoder::new(payload), limit_bytes),
        CODEC_LZ4 => {
            let decoder = lz4::Decoder::new(payload).map_err(decompress_error)?;
            read_bounded(decoder, limit_bytes)
        }
        CODEC_ZSTD => {
            let decoder = zstd::stream::read::Decoder::new(payload).map_err(decompress_error)?;
            read_bounded(decoder, limit_bytes)
        }
        CODEC_SNAPPY => snappy(payload, limit_bytes),
        other => Err(RecordsError::UnknownCodec(other)),
    }
}

fn decompress_error(e: impl std::fmt::Display) -> RecordsError {
    RecordsError::Decompress(e.to_string())
}

/// Reads a decompressing reader to its end, failing once it yields more than `limit_bytes`.
fn read_bounded(reader: impl Read, limit_bytes: usize) -> Result<Vec<u8>, RecordsError> {
    let mut out = Vec::new();
    // One byte past the limit tells "exactly at the limit" from "over it".
    let cap = (limit_bytes as u64).saturating_add(1);
    reader
        .take(cap)
        .read_to_end(&mut out)
        .map_err(decompress_error)?;
    if out.len() > limit_bytes {
        return Err(RecordsError::TooLargeDecompressed { limit_bytes });
    }
    Ok(out)
}

/// Snappy as Kafka writes it: xerial's framing (magic, two version words, then blocks of
/// `[i32 length][raw snappy]`), or one raw snappy block, as Kafka's Java reader also accepts.
/// Each raw block declares its expanded length up front; that length is checked against what
/// is left of the limit before anything is allocated for it.
fn snappy(payload: &[u8], limit_bytes: usize) -> Result<Vec<u8>, RecordsError> {
    let mut out = Vec::new();
    if !payload.starts_with(XERIAL_MAGIC) {
        snappy_block(payload, &mut out, limit_bytes)?;
        return Ok(out);
    }
    if payload.len() < XERIAL_HEADER_BYTES {
        return Err(RecordsError::Decompress(
            "truncated xerial snappy header".into(),
        ));
    }
    let mut rest = &payload[XERIAL_HEADER_BYTES..];
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(RecordsError::Decompress(
                "truncated xerial snappy block length".into(),
            ));
        }
        let block_bytes = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let block_bytes = usize::try_from(block_bytes)
            .ok()
            .filter(|n| *n <= rest.len() - 4)
            .ok_or_else(|| RecordsError::Decompress("bad xerial snappy block length".into()))?;
        snappy_block(&rest[4..4 + block_bytes], &mut out, limit_bytes)?;
        rest = &rest[4 + block_bytes..];
    }
    Ok(out)
}

/// The most one byte of a raw snappy block can expand to: a three-byte copy element yields at
/// most 64 bytes, so no valid block expands past 22 times its size.
const SNAPPY_EXPANSION_MAX: usize = 22;

fn snappy_block(block: &[u8], out: &mut Vec<u8>, limit_bytes: usize) -> Result<(), RecordsError> {
    let expanded_bytes = snap::raw::decompress_len(block).map_err(decompress_error)?;
    if expanded_bytes > limit_bytes.saturating_sub(out.len()) {
        return Err(RecordsError::TooLargeDecompressed { limit_bytes });
    }
    // The declared length is the block's word: hold it to what the block's bytes could
    // possibly produce before allocating (and zeroing) that much.
    if expanded_bytes > block.len().saturating_mul(SNAPPY_EXPANSION_MAX) {
        return Err(RecordsError::Decompress(format!(
            "snappy block of {} bytes declares {expanded_bytes} bytes, more than it can hold",
            block.len()
        )));
    }
    let start = out.len();
    out.resize(start + expanded_bytes, 0);
    snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(decompress_error)?;
    Ok(())
}

/// Walks `records_count` v2 records in `records` (the uncompressed payload after the batch
/// header), calling `visit` for each until it breaks. Every length is checked against the bytes
/// that are there, the record count against the payload, and nothing is allocated.
pub fn for_each_record(
    records: &[u8],
    records_count: i32,
    mut visit: impl FnMut(RecordView) -> ControlFlow<()>,
) -> Result<(), RecordsError> {
    let declared = i64::from(records_count);
    let mut rest = records;
    let mut index: u64 = 0;
    while !rest.is_empty() {
        if index as i64 >= declared {
            return Err(RecordsError::TrailingBytes(rest.len()));
        }
        let bad = |reason| RecordsError::BadRecord { index, reason };
        let mut cur = Cursor { buf: rest };
        let length_bytes = cur.varint().map_err(bad)?;
        let length_bytes = usize::try_from(length_bytes)
            .ok()
            .filter(|n| *n <= cur.buf.len())
            .ok_or(bad("record length exceeds the bytes left"))?;
        let (body, after) = cur.buf.split_at(length_bytes);
        let view = record_body(body).map_err(bad)?;
        rest = after;
        index += 1;
        if visit(view).is_break() {
            return Ok(());
        }
    }
    if index as i64 != declared {
        return Err(RecordsError::CountMismatch {
            declared,
            found: index,
        });
    }
    Ok(())
}

/// One record's fields after its length, which must use exactly `body`.
fn record_body(body: &[u8]) -> Result<RecordView, &'static str> {
    let mut cur = Cursor { buf: body };
    cur.take(1)?; // attributes
    let timestamp_delta_ms = cur.varlong()?;
    let offset_delta = cur.varint()?;
    cur.blob(true)?; // key
    cur.blob(true)?; // value
    let headers = cur.varint()?;
    if headers < 0 {
        return Err("negative header count");
    }
    // A header takes at least two bytes (two one-byte lengths).
    if headers as usize > cur.buf.len() / 2 {
        return Err("header count exceeds what the record's bytes can hold");
    }
    for _ in 0..headers {
        if cur.blob(false)?.is_none() {
            return Err("null header key");
        }
        cur.blob(true)?;
    }
    if !cur.buf.is_empty() {
        return Err("bytes left after the record's headers");
    }
    Ok(RecordView {
        offset_delta,
        timestamp_delta_ms,
    })
}

struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.buf.len() < n {
            return Err("record ends inside a field");
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// A zigzag varint of at most `max_bytes` bytes.
    fn zigzag(&mut self, max_bytes: u32) -> Result<i64, &'static str> {
        let mut raw: u64 = 0;
        for i in 0..max_bytes {
            let byte = self.take(1)?[0];
            raw |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
            }
        }
        Err("varint too long")
    }

    fn varint(&mut self) -> Result<i32, &'static str> {
        let v = self.zigzag(5)?;
        i32::try_from(v).map_err(|_| "varint out of range")
    }

    fn varlong(&mut self) -> Result<i64, &'static str> {
        self.zigzag(10)
    }

    /// A varint length and that many bytes; -1 is null where `nullable`.
    fn blob(&mut self, nullable: bool) -> Result<Option<&'a [u8]>, &'static str> {
        match self.varint()? {
            -1 if nullable => Ok(None),
            n if n < 0 => Err("negative length"),
            n => self.take(n as usize).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    type Headers =
        kafka_protocol::indexmap::IndexMap<kafka_protocol::protocol::StrBytes, Option<Bytes>>;

    fn batch(compression: Compression, values: &[&[u8]], headers_per_record: usize) -> Bytes {
        let records: Vec<Record> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let headers = indexmap_headers(headers_per_record);
                Record {
                    transactional: false,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: -1,
                    producer_id: -1,
                    producer_epoch: -1,
                    timestamp_type: TimestampType::Creation,
                    offset: i as i64,
                    sequence: i as i32,
                    timestamp: 1_000 + 10 * i as i64,
                    key: if i % 2 == 0 {
                        None
                    } else {
                        Some(Bytes::from_static(b"k"))
                    },
                    value: Some(Bytes::copy_from_slice(v)),
                    headers,
                }
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
        .unwrap();
        buf.freeze()
    }

    fn indexmap_headers(n: usize) -> Headers {
        (0..n)
            .map(|i| {
                (
                    kafka_protocol::protocol::StrBytes::from_string(format!("h{i}")),
                    if i % 2 == 0 {
                        Some(Bytes::from_static(b"v"))
                    } else {
                        None
                    },
                )
            })
            .collect()
    }

    /// The payload after the 61-byte batch header, decompressed.
    fn records_of(batch: &[u8], limit: usize) -> Result<Vec<u8>, RecordsError> {
        let codec = batch[22] & 0x07;
        decompress(codec, &batch[61..], limit)
    }

    fn views(batch: &[u8]) -> Vec<RecordView> {
        let count = i32::from_be_bytes([batch[57], batch[58], batch[59], batch[60]]);
        let payload = records_of(batch, 1 << 20).unwrap();
        let mut out = Vec::new();
        for_each_record(&payload, count, |v| {
            out.push(v);
            ControlFlow::Continue(())
        })
        .unwrap();
        out
    }

    #[test]
    fn every_codec_walks_to_the_same_records() {
        let values: Vec<Vec<u8>> = (0..50).map(|i| vec![b'x'; i * 7]).collect();
        let values: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
        let expected: Vec<RecordView> = (0..50)
            .map(|i| RecordView {
                offset_delta: i,
                timestamp_delta_ms: 10 * i64::from(i),
            })
            .collect();
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let b = batch(compression, &values, 3);
            assert_eq!(views(&b), expected, "{compression:?}");
        }
    }

    #[test]
    fn a_compression_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 4 << 20];
        for compression in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let b = batch(compression, &[&zeros], 0);
            assert!(b.len() < 1 << 20, "{compression:?} compresses zeros");
            assert_eq!(
                records_of(&b, 1 << 20),
                Err(RecordsError::TooLargeDecompressed {
                    limit_bytes: 1 << 20
                }),
                "{compression:?}"
            );
            assert!(records_of(&b, 8 << 20).is_ok(), "{compression:?}");
        }
    }

    #[test]
    fn a_small_snappy_block_declaring_megabytes_is_refused_before_allocating() {
        // Varint 64 MiB, then a few literal bytes: far more than 30 bytes can expand to.
        let mut block = vec![0x80, 0x80, 0x80, 0x20];
        block.extend_from_slice(&[0x08, b'a', b'b', b'c']);
        block.resize(30, 0);
        let err = decompress(CODEC_SNAPPY, &block, 64 << 20).unwrap_err();
        assert!(err.to_string().contains("more than it can hold"), "{err}");
    }

    #[test]
    fn a_raw_snappy_block_that_claims_four_gigabytes_is_refused_before_allocating() {
        // Varint 0xFFFFFFFF (the expanded length) and nothing after it.
        let block = [0xff, 0xff, 0xff, 0xff, 0x0f];
        assert_eq!(
            decompress(CODEC_SNAPPY, &block, 64 << 20),
            Err(RecordsError::TooLargeDecompressed {
                limit_bytes: 64 << 20
            })
        );
    }

    #[test]
    fn absurd_counts_inside_records_are_refused() {
        let b = batch(Compression::None, &[b"abc"], 1);
        let payload = records_of(&b, 1 << 20).unwrap();
        // The header count is the byte before the single header's key length (0x04 = 2 zigzag,
        // "h0"): rewrite the count to a huge zigzag varint of the same length would shift
        // bytes, so splice one in.
        let count_at = payload.len() - (1 + 2 + 1 + 1) - 1;
        assert_eq!(payload[count_at], 2, "one header, zigzag-encoded");
        let mut hostile = payload[..count_at].to_vec();
        hostile.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0x0f]); // i32::MAX headers
        hostile.extend_from_slice(&payload[count_at + 1..]);
        // Fix the record's own length (first byte, zigzag) for the 4 extra bytes.
        hostile[0] += 8;
        let err = for_each_record(&hostile, 1, |_| ControlFlow::Continue(())).unwrap_err();
        assert!(
            matches!(err, RecordsError::BadRecord { reason, .. } if reason.contains("header count")),
            "{err}"
        );
        // A record count that the payload does not hold.
        assert_eq!(
            for_each_record(&payload, i32::MAX, |_| ControlFlow::Continue(())),
            Err(RecordsError::CountMismatch {
                declared: i64::from(i32::MAX),
                found: 1
            })
        );
        assert_eq!(
            for_each_record(&payload, 0, |_| ControlFlow::Continue(())),
            Err(RecordsError::TrailingBytes(payload.len()))
        );
    }

    #[test]
    fn truncated_records_are_refused_at_every_cut() {
        let b = batch(Compression::None, &[b"abc", b"defgh"], 2);
        let payload = records_of(&b, 1 << 20).unwrap();
        for cut in 0..payload.len() {
            let r = for_each_record(&payload[..cut], 2, |_| ControlFlow::Continue(()));
            assert!(r.is_err(), "cut at {cut} accepted");
        }
    }
}
