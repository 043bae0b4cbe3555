//! What a partition remembers about idempotent producers (Kafka's `ProducerStateManager`).
//!
//! An idempotent producer stamps every batch with its producer id, its epoch and the sequence
//! number of the batch's first record; sequences count records per partition and wrap from
//! `i32::MAX` to 0. For each producer id the partition keeps the current epoch and the metadata
//! of the last [`BATCHES_RETAINED_PER_PRODUCER`] batches. That is enough to tell, before
//! anything is written, whether a batch
//!
//! - is a retry of one of those batches: a duplicate, answered with the original offsets and
//!   not appended again;
//! - continues the producer's sequence: appended;
//! - comes from a fenced (older) epoch: `INVALID_PRODUCER_EPOCH`;
//! - leaves a gap or goes back further than the cache reaches: `OUT_OF_ORDER_SEQUENCE_NUMBER`.
//!
//! A producer the partition knows nothing about (new, expired, or whose batches were all
//! deleted) may start at any sequence, as in Kafka since KIP-360. Producers whose last batch
//! is older than `producer.id.expiration.ms` (by the batch's max timestamp, as Kafka) are
//! forgotten.
//!
//! The state is derived from the log: [`ProducerStateManager::replay`] applies a stored batch
//! header without checks, which is how `PartitionLog` rebuilds it on open and after a
//! truncation. A snapshot written on clean close saves that scan on the next open.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::log::batch::BatchHeader;

/// How many of a producer's most recent batches are remembered for duplicate detection
/// (Kafka's `NUM_BATCHES_TO_RETAIN`). Producers keep at most 5 requests in flight per
/// connection, so a retry always concerns one of the last 5 batches.
pub const BATCHES_RETAINED_PER_PRODUCER: usize = 5;
/// The producer id of a batch from a producer that is not idempotent.
pub const NO_PRODUCER_ID: i64 = -1;
/// The epoch of an entry that has seen no batch with an epoch.
pub const NO_PRODUCER_EPOCH: i16 = -1;
/// The sequence number "before the first batch".
pub const NO_SEQUENCE: i32 = -1;
/// Kafka's `producer.id.expiration.ms` default: one day.
pub const PRODUCER_ID_EXPIRATION_MS_DEFAULT: u64 = crate::config::PRODUCER_ID_EXPIRATION_MS_DEFAULT;
/// Upper bound on producers remembered per partition. Kafka has none (KIP-936 discusses the
/// memory this can take); past it the producer idle the longest is forgotten, which costs that
/// producer its duplicate detection exactly as expiry would.
pub const PRODUCERS_PER_PARTITION_MAX: usize = 100_000;

/// Kafka error code INVALID_RECORD.
const INVALID_RECORD: i16 = 87;
/// Kafka error code OUT_OF_ORDER_SEQUENCE_NUMBER.
const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
/// Kafka error code INVALID_PRODUCER_EPOCH.
const INVALID_PRODUCER_EPOCH: i16 = 47;

/// `sequence + increment` with Kafka's wrap-around from `i32::MAX` to 0.
pub fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    if sequence > i32::MAX - increment {
        increment - (i32::MAX - sequence) - 1
    } else {
        sequence + increment
    }
}

/// `sequence - decrement` with Kafka's wrap-around from 0 back to `i32::MAX`.
#[cfg(test)]
pub fn decrement_sequence(sequence: i32, decrement: i32) -> i32 {
    if sequence < decrement {
        i32::MAX - (decrement - sequence) + 1
    } else {
        sequence - decrement
    }
}

/// Whether `next` directly follows `last` (Kafka's `inSequence`).
fn in_sequence(last: i32, next: i32) -> bool {
    i64::from(next) == i64::from(last) + 1 || (next == 0 && last == i32::MAX)
}

/// Why a batch was refused by the producer-state checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProducerStateError {
    /// The batch's epoch is older than the one the partition has seen (a fenced producer).
    #[error(
        "producer {producer_id} sent epoch {epoch}, older than the current epoch {current_epoch}"
    )]
    InvalidProducerEpoch {
        /// Producer id.
        producer_id: i64,
        /// Epoch in the batch.
        epoch: i16,
        /// Epoch the partition knows.
        current_epoch: i16,
    },
    /// The batch does not continue the producer's sequence and is not a cached duplicate.
    #[error(
        "out of order sequence number for producer {producer_id} epoch {epoch}: batch starts at \
         {first_sequence}, the partition's last sequence is {last_sequence}{}",
        if *new_epoch { " of the previous epoch (a new epoch must start at 0)" } else { "" }
    )]
    OutOfOrderSequence {
        /// Producer id.
        producer_id: i64,
        /// Epoch in the batch.
        epoch: i16,
        /// First sequence of the batch.
        first_sequence: i32,
        /// Last sequence the partition holds for this producer (-1 if none).
        last_sequence: i32,
        /// Whether the batch opened a new epoch.
        new_epoch: bool,
    },
    /// A batch with a producer id but a negative base sequence (Kafka's LogValidator refuses it).
    #[error("invalid sequence number {sequence} in a batch of producer {producer_id}")]
    InvalidSequence {
        /// Producer id.
        producer_id: i64,
        /// The base sequence found.
        sequence: i32,
    },
}

impl ProducerStateError {
    /// The Kafka error code a Produce response carries for this error.
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            ProducerStateError::InvalidProducerEpoch { .. } => INVALID_PRODUCER_EPOCH,
            ProducerStateError::OutOfOrderSequence { .. } => OUT_OF_ORDER_SEQUENCE_NUMBER,
            ProducerStateError::InvalidSequence { .. } => INVALID_RECORD,
        }
    }
}

/// A batch as the producer state sees it: who wrote it, its sequence range and where it is
/// (or will be) in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    /// Producer id, [`NO_PRODUCER_ID`] for a non-idempotent producer.
    pub producer_id: i64,
    /// Producer epoch.
    pub epoch: i16,
    /// Sequence of the first record.
    pub first_sequence: i32,
    /// Sequence of the last record (wrapping).
    pub last_sequence: i32,
    /// Offset of the first record.
    pub first_offset: i64,
    /// Offset of the last record.
    pub last_offset: i64,
    /// The batch's max timestamp as stored.
    pub max_timestamp_ms: i64,
}

impl ProducerBatch {
    /// The batch described by `header`, stored from `first_offset` on with max timestamp
    /// `max_timestamp_ms` (which differs from the header's for LogAppendTime topics).
    pub fn new(header: &BatchHeader, first_offset: i64, max_timestamp_ms: i64) -> ProducerBatch {
        ProducerBatch {
            producer_id: header.producer_id,
            epoch: header.producer_epoch,
            first_sequence: header.base_sequence,
            last_sequence: increment_sequence(header.base_sequence, header.last_offset_delta),
            first_offset,
            last_offset: first_offset + i64::from(header.last_offset_delta),
            max_timestamp_ms,
        }
    }

    /// A stored batch, from its header alone.
    pub fn stored(header: &BatchHeader) -> ProducerBatch {
        ProducerBatch::new(header, header.base_offset, header.max_timestamp)
    }

    fn has_producer_id(&self) -> bool {
        self.producer_id > NO_PRODUCER_ID
    }
}

/// What is remembered of one appended batch (Kafka's `BatchMetadata`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchMetadata {
    /// Sequence of the first record.
    pub first_sequence: i32,
    /// Sequence of the last record.
    pub last_sequence: i32,
    /// Offset of the first record.
    pub first_offset: i64,
    /// Offset of the last record.
    pub last_offset: i64,
    /// The batch's max timestamp as stored.
    pub max_timestamp_ms: i64,
}

/// Everything remembered about one producer id (Kafka's `ProducerStateEntry`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    /// Latest epoch seen.
    pub epoch: i16,
    /// The last batches of `epoch`, oldest first, at most [`BATCHES_RETAINED_PER_PRODUCER`].
    batches: VecDeque<BatchMetadata>,
    /// Max timestamp of the producer's last batch; expiry counts from here.
    pub last_timestamp_ms: i64,
}

impl ProducerEntry {
    fn empty() -> ProducerEntry {
        ProducerEntry {
            epoch: NO_PRODUCER_EPOCH,
            batches: VecDeque::with_capacity(BATCHES_RETAINED_PER_PRODUCER),
            last_timestamp_ms: -1,
        }
    }

    /// The cached batches, oldest first.
    pub fn batches(&self) -> impl ExactSizeIterator<Item = &BatchMetadata> {
        self.batches.iter()
    }

    /// Last sequence of the last batch, [`NO_SEQUENCE`] if none is cached.
    pub fn last_sequence(&self) -> i32 {
        self.batches.back().map_or(NO_SEQUENCE, |b| b.last_sequence)
    }

    /// The cached batch with exactly this epoch and sequence range (Kafka's
    /// `findDuplicateBatch`).
    fn find_duplicate(&self, batch: &ProducerBatch) -> Option<BatchMetadata> {
        if batch.epoch != self.epoch {
            return None;
        }
        self.batches
            .iter()
            .find(|b| {
                b.first_sequence == batch.first_sequence && b.last_sequence == batch.last_sequence
            })
            .copied()
    }

    /// Records an appended batch: a new epoch forgets the old epoch's batches.
    fn add_batch(&mut self, batch: &ProducerBatch) {
        if batch.epoch != self.epoch {
            self.epoch = batch.epoch;
            self.batches.clear();
        }
        if self.batches.len() == BATCHES_RETAINED_PER_PRODUCER {
            self.batches.pop_front();
        }
        self.batches.push_back(BatchMetadata {
            first_sequence: batch.first_sequence,
            last_sequence: batch.last_sequence,
            first_offset: batch.first_offset,
            last_offset: batch.last_offset,
            max_timestamp_ms: batch.max_timestamp_ms,
        });
        self.last_timestamp_ms = batch.max_timestamp_ms;
    }
}

/// The verdict on the batches of one append.
#[derive(Debug)]
pub enum Validation {
    /// Write the batches, then [`ProducerStateManager::commit`] this.
    Append(PendingUpdate),
    /// A batch is a retry of one already in the log: write nothing and answer with the
    /// original batch's metadata (Kafka answers the whole append this way).
    Duplicate {
        /// Producer id of the duplicate.
        producer_id: i64,
        /// The original batch.
        original: BatchMetadata,
    },
}

/// Producer entries as they will be once an append is written.
#[derive(Debug, Default)]
pub struct PendingUpdate {
    /// One entry per producer id in the append; an append holds few batches, so a list is
    /// cheaper than a map.
    entries: Vec<(i64, ProducerEntry)>,
}

impl PendingUpdate {
    fn entry_mut(&mut self, producer_id: i64) -> Option<&mut ProducerEntry> {
        self.entries
            .iter_mut()
            .find(|(id, _)| *id == producer_id)
            .map(|(_, e)| e)
    }
}

/// Versioned on-disk form of the state, written on clean close.
#[derive(Debug, Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    /// The log end offset the state is valid at.
    offset: i64,
    producers: Vec<(i64, ProducerEntry)>,
}

/// Format version of [`Snapshot`].
const SNAPSHOT_VERSION: u32 = 1;

/// Why a snapshot could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unusable producer state snapshot: {reason}")]
pub struct SnapshotError {
    /// What was wrong.
    pub reason: String,
}

/// The producer state of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerStateManager {
    producers: HashMap<i64, ProducerEntry>,
    expiration_ms: u64,
    producers_max: usize,
}

impl ProducerStateManager {
    /// An empty state forgetting producers idle for `expiration_ms`.
    pub fn new(expiration_ms: u64) -> ProducerStateManager {
        ProducerStateManager {
            producers: HashMap::new(),
            expiration_ms,
            producers_max: PRODUCERS_PER_PARTITION_MAX,
        }
    }

    /// The same, with another producer limit (for tests of the limit).
    pub fn with_producers_max(mut self, producers_max: usize) -> ProducerStateManager {
        self.producers_max = producers_max.max(1);
        self
    }

    /// The entry of one producer.
    pub fn entry(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Number of producers remembered.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether no producer is remembered.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Forgets every producer.
    pub fn clear(&mut self) {
        self.producers.clear();
    }

    /// Checks the batches of one append, in order, against the state and against each other
    /// (Kafka's `analyzeAndValidateProducerState` for a client append). Nothing changes until
    /// [`commit`](Self::commit) is called with the result.
    pub fn validate(&self, batches: &[ProducerBatch]) -> Result<Validation, ProducerStateError> {
        let mut pending = PendingUpdate::default();
        for batch in batches.iter().filter(|b| b.has_producer_id()) {
            let producer_id = batch.producer_id;
            if batch.first_sequence < 0 {
                return Err(ProducerStateError::InvalidSequence {
                    producer_id,
                    sequence: batch.first_sequence,
                });
            }
            let current = self.producers.get(&producer_id);
            // Duplicates are looked up in the state before this append, as Kafka does.
            if let Some(original) = current.and_then(|e| e.find_duplicate(batch)) {
                return Ok(Validation::Duplicate {
                    producer_id,
                    original,
                });
            }
            // No committed epoch: the producer is unknown here (new or expired), and Kafka
            // accepts any sequence from it.
            let current_epoch = current.map_or(NO_PRODUCER_EPOCH, |e| e.epoch);
            if pending.entry_mut(producer_id).is_none() {
                let start = current.cloned().unwrap_or_else(ProducerEntry::empty);
                pending.entries.push((producer_id, start));
            }
            let updated = pending
                .entry_mut(producer_id)
                .expect("the pending entry was just inserted");
            if batch.epoch < updated.epoch {
                return Err(ProducerStateError::InvalidProducerEpoch {
                    producer_id,
                    epoch: batch.epoch,
                    current_epoch: updated.epoch,
                });
            }
            if batch.epoch != updated.epoch {
                if batch.first_sequence != 0 && updated.epoch != NO_PRODUCER_EPOCH {
                    return Err(ProducerStateError::OutOfOrderSequence {
                        producer_id,
                        epoch: batch.epoch,
                        first_sequence: batch.first_sequence,
                        last_sequence: updated.last_sequence(),
                        new_epoch: true,
                    });
                }
            } else {
                let last_sequence = updated.last_sequence();
                if current_epoch != NO_PRODUCER_EPOCH
                    && !in_sequence(last_sequence, batch.first_sequence)
                {
                    return Err(ProducerStateError::OutOfOrderSequence {
                        producer_id,
                        epoch: batch.epoch,
                        first_sequence: batch.first_sequence,
                        last_sequence,
                        new_epoch: false,
                    });
                }
            }
            updated.add_batch(batch);
        }
        Ok(Validation::Append(pending))
    }

    /// Applies a validated append once its batches are in the log.
    pub fn commit(&mut self, pending: PendingUpdate) {
        for (producer_id, entry) in pending.entries {
            self.insert(producer_id, entry);
        }
    }

    fn insert(&mut self, producer_id: i64, entry: ProducerEntry) {
        if !self.producers.contains_key(&producer_id) && self.producers.len() >= self.producers_max
        {
            // O(producers) but only at the limit, which a healthy cluster never reaches.
            let idlest = self
                .producers
                .iter()
                .min_by_key(|(_, e)| e.last_timestamp_ms)
                .map(|(id, _)| *id);
            if let Some(idlest) = idlest {
                self.producers.remove(&idlest);
                tracing::debug!(
                    evicted_producer_id = idlest,
                    producers_max = self.producers_max,
                    "producer limit reached; forgetting the idlest producer"
                );
            }
        }
        self.producers.insert(producer_id, entry);
    }

    /// Applies a batch read back from the log, without checks (Kafka's replication-origin
    /// append): used to rebuild the state. The producer limit is not applied here, so that a
    /// rebuild stays linear; call [`trim_to_limit`](Self::trim_to_limit) when done.
    pub fn replay(&mut self, batch: &ProducerBatch) {
        if !batch.has_producer_id() {
            return;
        }
        self.producers
            .entry(batch.producer_id)
            .or_insert_with(ProducerEntry::empty)
            .add_batch(batch);
    }

    /// Forgets the idlest producers beyond the producer limit; returns how many.
    pub fn trim_to_limit(&mut self) -> usize {
        let excess = self.producers.len().saturating_sub(self.producers_max);
        if excess == 0 {
            return 0;
        }
        let mut by_idleness: Vec<(i64, i64)> = self
            .producers
            .iter()
            .map(|(id, e)| (e.last_timestamp_ms, *id))
            .collect();
        by_idleness.sort_unstable();
        for (_, id) in &by_idleness[..excess] {
            self.producers.remove(id);
        }
        tracing::warn!(
            forgotten = excess,
            producers_max = self.producers_max,
            "more producers than the limit; forgot the idlest"
        );
        excess
    }

    /// Forgets producers whose last batch is `producer.id.expiration.ms` old or older at
    /// `now_ms`. Returns how many were forgotten.
    pub fn remove_expired(&mut self, now_ms: i64) -> usize {
        let expiration_ms = i64::try_from(self.expiration_ms).unwrap_or(i64::MAX);
        let before = self.producers.len();
        self.producers
            .retain(|_, e| now_ms.saturating_sub(e.last_timestamp_ms) < expiration_ms);
        before - self.producers.len()
    }

    /// Serialises the state as valid at log end offset `offset`: a CRC-32C line, then JSON.
    pub fn to_snapshot(&self, offset: i64) -> Vec<u8> {
        let mut producers: Vec<(i64, ProducerEntry)> = self
            .producers
            .iter()
            .map(|(id, e)| (*id, e.clone()))
            .collect();
        producers.sort_unstable_by_key(|(id, _)| *id);
        let snapshot = Snapshot {
            version: SNAPSHOT_VERSION,
            offset,
            producers,
        };
        let body = serde_json::to_vec(&snapshot)
            .expect("serialising plain integers and vectors to JSON cannot fail");
        let mut out = format!("{:08x}\n", crc32c::crc32c(&body)).into_bytes();
        out.extend_from_slice(&body);
        out
    }

    /// Parses a snapshot written by [`to_snapshot`](Self::to_snapshot); returns the offset it
    /// is valid at and the state.
    pub fn from_snapshot(
        bytes: &[u8],
        expiration_ms: u64,
    ) -> Result<(i64, ProducerStateManager), SnapshotError> {
        let bad = |reason: String| SnapshotError { reason };
        let newline = bytes
            .iter()
            .position(|b| *b == b'\n')
            .ok_or_else(|| bad("no checksum line".into()))?;
        let crc_text = std::str::from_utf8(&bytes[..newline])
            .map_err(|_| bad("checksum line is not text".into()))?;
        let stored = u32::from_str_radix(crc_text, 16)
            .map_err(|_| bad(format!("checksum `{crc_text}` is not hexadecimal")))?;
        let body = &bytes[newline + 1..];
        let actual = crc32c::crc32c(body);
        if stored != actual {
            return Err(bad(format!(
                "checksum mismatch: stored {stored:08x}, computed {actual:08x}"
            )));
        }
        let snapshot: Snapshot =
            serde_json::from_slice(body).map_err(|e| bad(format!("cannot parse: {e}")))?;
        if snapshot.version != SNAPSHOT_VERSION {
            return Err(bad(format!(
                "version {} (this strait reads version {SNAPSHOT_VERSION})",
                snapshot.version
            )));
        }
        let mut state = ProducerStateManager::new(expiration_ms);
        for (producer_id, entry) in snapshot.producers {
            if entry.batches.len() > BATCHES_RETAINED_PER_PRODUCER {
                return Err(bad(format!(
                    "producer {producer_id} has {} batches, more than {BATCHES_RETAINED_PER_PRODUCER}",
                    entry.batches.len()
                )));
            }
            state.producers.insert(producer_id, entry);
        }
        state.trim_to_limit();
        Ok((snapshot.offset, state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PID: i64 = 1000;
    const DAY_MS: u64 = PRODUCER_ID_EXPIRATION_MS_DEFAULT;

    /// A batch of `records` records from producer `PID`, starting at sequence `seq`, stored at
    /// `offset`.
    fn batch(epoch: i16, seq: i32, records: i32, offset: i64) -> ProducerBatch {
        ProducerBatch {
            producer_id: PID,
            epoch,
            first_sequence: seq,
            last_sequence: increment_sequence(seq, records - 1),
            first_offset: offset,
            last_offset: offset + i64::from(records) - 1,
            max_timestamp_ms: 1_000 + offset,
        }
    }

    /// Validates and, if accepted, commits; returns the verdict for inspection.
    fn append(
        state: &mut ProducerStateManager,
        batches: &[ProducerBatch],
    ) -> Result<Option<BatchMetadata>, ProducerStateError> {
        match state.validate(batches)? {
            Validation::Append(pending) => {
                state.commit(pending);
                Ok(None)
            }
            Validation::Duplicate { original, .. } => Ok(Some(original)),
        }
    }

    #[test]
    fn sequence_arithmetic_wraps_at_i32_max() {
        assert_eq!(increment_sequence(5, 3), 8);
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
        assert_eq!(decrement_sequence(1, 3), i32::MAX - 1);
        assert_eq!(decrement_sequence(8, 3), 5);
        assert!(in_sequence(i32::MAX, 0));
        assert!(in_sequence(-1, 0));
        assert!(!in_sequence(i32::MAX, i32::MIN));
    }

    #[test]
    fn batches_without_producer_id_are_not_checked() {
        let mut s = ProducerStateManager::new(DAY_MS);
        let mut b = batch(0, 7, 1, 0);
        b.producer_id = NO_PRODUCER_ID;
        assert_eq!(append(&mut s, &[b]), Ok(None));
        assert_eq!(
            append(&mut s, &[b]),
            Ok(None),
            "same batch again is appended"
        );
        assert!(s.is_empty());
    }

    #[test]
    fn unknown_producer_may_start_at_any_sequence_then_must_continue() {
        let mut s = ProducerStateManager::new(DAY_MS);
        assert_eq!(append(&mut s, &[batch(0, 42, 3, 0)]), Ok(None));
        assert_eq!(s.entry(PID).unwrap().last_sequence(), 44);
        assert_eq!(append(&mut s, &[batch(0, 45, 2, 3)]), Ok(None));
        let gap = append(&mut s, &[batch(0, 48, 1, 5)]).unwrap_err();
        assert_eq!(gap.kafka_error_code(), OUT_OF_ORDER_SEQUENCE_NUMBER);
        assert!(matches!(
            gap,
            ProducerStateError::OutOfOrderSequence {
                first_sequence: 48,
                last_sequence: 46,
                ..
            }
        ));
    }

    #[test]
    fn retry_of_a_cached_batch_is_a_duplicate_with_its_original_offsets() {
        let mut s = ProducerStateManager::new(DAY_MS);
        for i in 0..5 {
            assert_eq!(
                append(&mut s, &[batch(0, i * 10, 10, i64::from(i) * 10)]),
                Ok(None)
            );
        }
        // The oldest of the five cached batches.
        let original = append(&mut s, &[batch(0, 0, 10, 999)]).unwrap().unwrap();
        assert_eq!((original.first_offset, original.last_offset), (0, 9));
        assert_eq!(original.max_timestamp_ms, 1_000);
        // The newest.
        let original = append(&mut s, &[batch(0, 40, 10, 999)]).unwrap().unwrap();
        assert_eq!((original.first_offset, original.last_offset), (40, 49));
        // Same first sequence but another length is not a duplicate, and out of order.
        let err = append(&mut s, &[batch(0, 40, 5, 999)]).unwrap_err();
        assert_eq!(err.kafka_error_code(), OUT_OF_ORDER_SEQUENCE_NUMBER);
        assert_eq!(s.entry(PID).unwrap().batches().len(), 5);
    }

    #[test]
    fn retry_older_than_the_cached_five_is_out_of_order() {
        let mut s = ProducerStateManager::new(DAY_MS);
        for i in 0..6 {
            append(&mut s, &[batch(0, i, 1, i64::from(i))]).unwrap();
        }
        let err = append(&mut s, &[batch(0, 0, 1, 99)]).unwrap_err();
        assert!(
            matches!(
                err,
                ProducerStateError::OutOfOrderSequence {
                    first_sequence: 0,
                    last_sequence: 5,
                    new_epoch: false,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            append(&mut s, &[batch(0, 1, 1, 99)])
                .unwrap()
                .unwrap()
                .first_offset,
            1
        );
    }

    #[test]
    fn sequence_wraps_around_at_i32_max() {
        let mut s = ProducerStateManager::new(DAY_MS);
        append(&mut s, &[batch(0, i32::MAX - 2, 3, 0)]).unwrap();
        assert_eq!(s.entry(PID).unwrap().last_sequence(), i32::MAX);
        assert_eq!(append(&mut s, &[batch(0, 0, 2, 3)]), Ok(None));
        // A batch spanning the wrap: first sequence MAX-1 is not next after 1.
        let mut s = ProducerStateManager::new(DAY_MS);
        append(&mut s, &[batch(0, i32::MAX - 1, 4, 0)]).unwrap();
        assert_eq!(s.entry(PID).unwrap().last_sequence(), 1);
        assert_eq!(append(&mut s, &[batch(0, 2, 1, 4)]), Ok(None));
        // And its retry is recognised by its wrapped range.
        let dup = append(&mut s, &[batch(0, i32::MAX - 1, 4, 9)])
            .unwrap()
            .unwrap();
        assert_eq!(dup.first_offset, 0);
        assert_eq!(dup.last_sequence, 1);
    }

    #[test]
    fn older_epoch_is_fenced() {
        let mut s = ProducerStateManager::new(DAY_MS);
        append(&mut s, &[batch(3, 0, 1, 0)]).unwrap();
        let err = append(&mut s, &[batch(2, 1, 1, 1)]).unwrap_err();
        assert_eq!(err.kafka_error_code(), INVALID_PRODUCER_EPOCH);
        assert_eq!(
            err,
            ProducerStateError::InvalidProducerEpoch {
                producer_id: PID,
                epoch: 2,
                current_epoch: 3
            }
        );
    }

    #[test]
    fn new_epoch_must_start_at_zero_and_forgets_old_batches() {
        let mut s = ProducerStateManager::new(DAY_MS);
        append(&mut s, &[batch(0, 0, 5, 0)]).unwrap();
        let err = append(&mut s, &[batch(1, 5, 1, 5)]).unwrap_err();
        assert!(
            matches!(
                err,
                ProducerStateError::OutOfOrderSequence {
                    new_epoch: true,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(append(&mut s, &[batch(1, 0, 2, 5)]), Ok(None));
        let entry = s.entry(PID).unwrap();
        assert_eq!((entry.epoch, entry.batches().len()), (1, 1));
        // The old epoch's batch is no duplicate any more: that epoch is fenced.
        let err = append(&mut s, &[batch(0, 0, 5, 9)]).unwrap_err();
        assert_eq!(err.kafka_error_code(), INVALID_PRODUCER_EPOCH);
    }

    #[test]
    fn negative_sequence_with_producer_id_is_invalid_record() {
        let s = ProducerStateManager::new(DAY_MS);
        let err = s.validate(&[batch(0, -1, 1, 0)]).unwrap_err();
        assert_eq!(err.kafka_error_code(), INVALID_RECORD);
    }

    #[test]
    fn batches_of_one_append_are_checked_against_each_other_and_all_or_nothing() {
        let mut s = ProducerStateManager::new(DAY_MS);
        append(&mut s, &[batch(0, 0, 2, 0)]).unwrap();
        // Second batch of the append continues the first one.
        assert_eq!(
            append(&mut s, &[batch(0, 2, 2, 2), batch(0, 4, 1, 4)]),
            Ok(None)
        );
        assert_eq!(s.entry(PID).unwrap().last_sequence(), 4);
        // A good batch followed by a bad one changes nothing.
        let before = s.clone();
        let err = append(&mut s, &[batch(0, 5, 1, 5), batch(0, 9, 1, 6)]).unwrap_err();
        assert_eq!(err.kafka_error_code(), OUT_OF_ORDER_SEQUENCE_NUMBER);
        assert_eq!(s, before);
    }

    #[test]
    fn idle_producers_expire_by_their_last_batch_timestamp() {
        let mut s = ProducerStateManager::new(1_000);
        let mut a = batch(0, 0, 1, 0);
        a.max_timestamp_ms = 10_000;
        let mut b = batch(0, 0, 1, 1);
        b.producer_id = PID + 1;
        b.max_timestamp_ms = 10_500;
        append(&mut s, &[a, b]).unwrap();
        assert_eq!(s.remove_expired(10_999), 0);
        assert_eq!(s.remove_expired(11_000), 1);
        assert!(s.entry(PID).is_none() && s.entry(PID + 1).is_some());
        // Forgotten means unknown again: any sequence is accepted.
        assert_eq!(append(&mut s, &[batch(0, 77, 1, 2)]), Ok(None));
    }

    #[test]
    fn producer_limit_forgets_the_idlest() {
        let mut s = ProducerStateManager::new(DAY_MS).with_producers_max(2);
        for (pid, ts) in [(1, 300), (2, 100), (3, 200)] {
            let mut b = batch(0, 0, 1, pid);
            b.producer_id = pid;
            b.max_timestamp_ms = ts;
            append(&mut s, &[b]).unwrap();
        }
        assert_eq!(s.len(), 2);
        assert!(s.entry(2).is_none(), "producer 2 was idle the longest");
        // A rebuild replays everything, then trims once.
        let mut r = ProducerStateManager::new(DAY_MS).with_producers_max(2);
        for (pid, ts) in [(1, 300), (2, 100), (3, 200), (4, 50)] {
            let mut b = batch(0, 0, 1, pid);
            b.producer_id = pid;
            b.max_timestamp_ms = ts;
            r.replay(&b);
        }
        assert_eq!((r.len(), r.trim_to_limit(), r.len()), (4, 2, 2));
        assert!(r.entry(1).is_some() && r.entry(3).is_some());
    }

    #[test]
    fn replay_rebuilds_what_validated_appends_built() {
        let mut live = ProducerStateManager::new(DAY_MS);
        let mut replayed = ProducerStateManager::new(DAY_MS);
        let batches = [
            batch(0, 0, 3, 0),
            batch(0, 3, 3, 3),
            batch(1, 0, 1, 6),
            batch(1, 1, 1, 7),
        ];
        for b in &batches {
            append(&mut live, &[*b]).unwrap();
            replayed.replay(b);
        }
        assert_eq!(live, replayed);
    }

    #[test]
    fn snapshot_round_trips_and_detects_damage() {
        let mut s = ProducerStateManager::new(DAY_MS);
        for i in 0..7 {
            append(&mut s, &[batch(2, i, 1, i64::from(i))]).unwrap();
        }
        let bytes = s.to_snapshot(7);
        let (offset, loaded) = ProducerStateManager::from_snapshot(&bytes, DAY_MS).unwrap();
        assert_eq!((offset, &loaded), (7, &s));
        let mut damaged = bytes.clone();
        let last = damaged.len() - 2;
        damaged[last] ^= 1;
        assert!(ProducerStateManager::from_snapshot(&damaged, DAY_MS).is_err());
        assert!(ProducerStateManager::from_snapshot(&bytes[..bytes.len() / 2], DAY_MS).is_err());
        assert!(ProducerStateManager::from_snapshot(b"", DAY_MS).is_err());
    }
}
