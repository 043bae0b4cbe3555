//! What the group coordinator needs from the node to keep `__consumer_offsets`: Kafka's
//! `PartitionWriter` (append, read back, wait for replication, delete records, create the
//! topic), plus whether a committed partition exists in the metadata. The broker implements it
//! (`broker.rs`); [`memory::MemoryWriter`] implements it in memory for the coordinator's tests.
//!
//! The coordinator never sees a `Broker`, a partition object or a controller: only offsets
//! partition indices, batches of records and Kafka error codes.

use std::future::Future;

use bytes::{Bytes, BytesMut};

use crate::error_code::ErrorCode;

/// A failed offsets-topic operation: the Kafka code the broker would answer with, and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message} ({code})")]
pub struct WriteError {
    /// What a client of the broker would have been told.
    pub code: ErrorCode,
    /// The reason, for the log.
    pub message: String,
}

impl WriteError {
    /// An error with `code` and a reason.
    pub fn new(code: impl Into<ErrorCode>, message: impl Into<String>) -> WriteError {
        WriteError {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// The offsets topic as the coordinator uses it. Every `partition` is an index of
/// `__consumer_offsets`.
pub trait PartitionWriter: Send + Sync {
    /// What an append hands back so the caller can wait for its replication.
    type Appended: Send + Sync;

    /// Appends one v2 record batch (its base offset is assigned here) to a partition this node
    /// leads. Returns the offset of the batch's last record and what to wait on.
    fn append(
        &self,
        partition: i32,
        batch: &mut BytesMut,
    ) -> Result<(i64, Self::Appended), WriteError>;

    /// The partition's log start and log end offsets.
    fn log_offsets(&self, partition: i32) -> Result<(i64, i64), WriteError>;

    /// Whole batches from `offset` on, below `end`, about `max_bytes` of them (at least one
    /// batch when there is one). Empty at the end.
    fn read(
        &self,
        partition: i32,
        offset: i64,
        max_bytes: usize,
        end: i64,
    ) -> Result<Bytes, WriteError>;

    /// Moves the partition's log start offset up to `offset`; returns the new start.
    fn delete_records(&self, partition: i32, offset: i64) -> Result<i64, WriteError>;

    /// Waits until an append is replicated to the partition's in-sync replicas (acks=all), or
    /// `deadline`; the Kafka code of the outcome.
    fn wait_replicated(
        &self,
        appended: &Self::Appended,
        deadline: tokio::time::Instant,
    ) -> impl Future<Output = ErrorCode> + Send;

    /// Whether `__consumer_offsets` exists.
    fn offsets_topic_exists(&self) -> bool;

    /// Creates `__consumer_offsets` with `partitions` partitions and `configs`; the writer
    /// chooses the replication factor. Another node creating it first is success.
    fn create_offsets_topic(
        &self,
        partitions: i32,
        configs: &[(&str, &str)],
    ) -> impl Future<Output = Result<(), WriteError>> + Send;

    /// Whether `topic`-`partition` exists in the cluster's metadata, wherever its replicas are
    /// (a commit is checked against this, as Kafka does).
    fn partition_exists(&self, topic: &str, partition: i32) -> bool;
}

/// An in-memory [`PartitionWriter`]: each partition a list of batches, replication
/// instantaneous unless told otherwise, and failures that can be switched on.
#[cfg(test)]
pub mod memory {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Mutex;

    use bytes::{Bytes, BytesMut};
    use kafka_protocol::error::ResponseError as E;

    use super::{PartitionWriter, WriteError};
    use crate::error_code::ErrorCode;
    use crate::log::batch;

    #[derive(Default)]
    struct Log {
        start: i64,
        end: i64,
        /// (base offset, next offset, the batch).
        batches: Vec<(i64, i64, Bytes)>,
    }

    #[derive(Default)]
    struct State {
        topic_exists: bool,
        partitions: BTreeMap<i32, Log>,
        topics: BTreeSet<(String, i32)>,
        fail_appends: Option<ErrorCode>,
        replication_outcome: ErrorCode,
    }

    /// The offsets topic in memory; clone-free, share it by reference.
    #[derive(Default)]
    pub struct MemoryWriter {
        state: Mutex<State>,
    }

    impl MemoryWriter {
        /// An empty writer: no offsets topic yet, no other topics.
        pub fn new() -> MemoryWriter {
            MemoryWriter::default()
        }

        fn state(&self) -> std::sync::MutexGuard<'_, State> {
            self.state.lock().unwrap_or_else(|p| p.into_inner())
        }

        /// Makes `topic` exist with `partitions` partitions (for commit checks).
        pub fn add_topic(&self, topic: &str, partitions: i32) {
            let mut s = self.state();
            for p in 0..partitions {
                s.topics.insert((topic.to_string(), p));
            }
        }

        /// Every later append fails with `code` (`None`: appends work again).
        pub fn fail_appends(&self, code: Option<E>) {
            self.state().fail_appends = code.map(ErrorCode::from);
        }

        /// What every later wait for replication answers.
        pub fn replication_outcome(&self, code: ErrorCode) {
            self.state().replication_outcome = code;
        }

        /// The log start and end of a partition (0, 0 if never written).
        pub fn offsets(&self, partition: i32) -> (i64, i64) {
            let s = self.state();
            s.partitions
                .get(&partition)
                .map(|l| (l.start, l.end))
                .unwrap_or((0, 0))
        }
    }

    impl PartitionWriter for MemoryWriter {
        type Appended = i64;

        fn append(
            &self,
            partition: i32,
            buf: &mut BytesMut,
        ) -> Result<(i64, Self::Appended), WriteError> {
            let mut s = self.state();
            if !s.topic_exists {
                return Err(WriteError::new(
                    E::UnknownTopicOrPartition,
                    "no offsets topic",
                ));
            }
            if let Some(code) = s.fail_appends {
                return Err(WriteError::new(code, "appends fail (test)"));
            }
            let header = batch::BatchHeader::parse(buf)
                .map_err(|e| WriteError::new(E::CorruptMessage, e.to_string()))?;
            assert_eq!(
                header.total_len_bytes(),
                buf.len(),
                "the coordinator appends one batch at a time"
            );
            let log = s.partitions.entry(partition).or_default();
            let base = log.end;
            batch::set_base_offset(buf, base)
                .map_err(|e| WriteError::new(E::CorruptMessage, e.to_string()))?;
            let next = base + i64::from(header.last_offset_delta) + 1;
            log.batches.push((base, next, Bytes::copy_from_slice(buf)));
            log.end = next;
            Ok((next - 1, next - 1))
        }

        fn log_offsets(&self, partition: i32) -> Result<(i64, i64), WriteError> {
            Ok(self.offsets(partition))
        }

        fn read(
            &self,
            partition: i32,
            offset: i64,
            max_bytes: usize,
            end: i64,
        ) -> Result<Bytes, WriteError> {
            let s = self.state();
            let Some(log) = s.partitions.get(&partition) else {
                return Ok(Bytes::new());
            };
            let mut out = BytesMut::new();
            for (base, next, bytes) in &log.batches {
                if *next <= offset || *base >= end || *base < log.start {
                    continue;
                }
                if !out.is_empty() && out.len() + bytes.len() > max_bytes {
                    break;
                }
                out.extend_from_slice(bytes);
            }
            Ok(out.freeze())
        }

        fn delete_records(&self, partition: i32, offset: i64) -> Result<i64, WriteError> {
            let mut s = self.state();
            let log = s.partitions.entry(partition).or_default();
            if offset > log.end {
                return Err(WriteError::new(E::OffsetOutOfRange, "past the log end"));
            }
            log.start = log.start.max(offset);
            let start = log.start;
            log.batches.retain(|(base, _, _)| *base >= start);
            Ok(log.start)
        }

        async fn wait_replicated(
            &self,
            _appended: &Self::Appended,
            _deadline: tokio::time::Instant,
        ) -> ErrorCode {
            self.state().replication_outcome
        }

        fn offsets_topic_exists(&self) -> bool {
            self.state().topic_exists
        }

        async fn create_offsets_topic(
            &self,
            _partitions: i32,
            _configs: &[(&str, &str)],
        ) -> Result<(), WriteError> {
            self.state().topic_exists = true;
            Ok(())
        }

        fn partition_exists(&self, topic: &str, partition: i32) -> bool {
            self.state()
                .topics
                .contains(&(topic.to_string(), partition))
        }
    }
}
