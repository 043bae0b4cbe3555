//! Exact offset translation: runs of mirrored offsets per source partition, kept in sled.
//!
//! A run `(source start, target start, length)` says that source offsets `source_start ..
//! source_start + length` were written to the target at `target_start ..`, one for one. The
//! pump extends a run with every acknowledged record whose source and target offsets both
//! follow the run's end; anything else (a gap in source offsets from compaction, transaction
//! markers or retention, a record not mirrored because it came from the target, another
//! writer on the target partition) starts a new run. A [`Cursor`] per partition says how far
//! the source has been processed (mirrored or deliberately skipped) and where on the target
//! the next mirrored record will land at the earliest.
//!
//! Source offsets that were never mirrored because the source deleted them first (its
//! retention overtook the mirror's cursor) are a [`Lost`] range, recorded beside the runs:
//! translation treats them as a gap, and the operator sees them in `/status` and in
//! `strait_mirror_records_lost_total`. A gap is loss only when the source's log start offset
//! had passed its first offset; other gaps (compaction, transaction markers) are not.
//!
//! A source partition that no longer holds what was mirrored from it (it was truncated below
//! the cursor, by an unclean leader election or by hand, or deleted and recreated smaller)
//! is a [`Divergence`], recorded beside the runs: the pump stops that partition until an
//! operator resolves it, which cuts the runs at the chosen source offset and moves the
//! cursor back there (the only update that moves a cursor backwards).
//!
//! **Invariants**: a stored run's length is never zero; stored runs of a partition never
//! overlap (a newer run trims or replaces what it overlaps, so the latest write wins); a
//! source offset beyond the cursor never translates.
//!
//! The pump does not write sled directly: it appends each [`RunUpdate`] to the flow's
//! internal topic on the target, and the index follower (`daemon`) applies that topic to
//! sled in order, recording how far it got. The topic is the shared, durable copy; sled is
//! this daemon's materialized index of it.

use std::ops::Bound;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// What can go wrong with the index.
#[derive(Debug, thiserror::Error)]
pub enum OffsetsError {
    /// sled failed (I/O, corruption).
    #[error("offset index (sled) at {path}: {source}")]
    Sled {
        /// The sled directory.
        path: String,
        /// sled's error.
        source: sled::Error,
    },
    /// A stored value has the wrong length: the index was written by something else.
    #[error("offset index: malformed entry in tree `{tree}`")]
    Malformed {
        /// The sled tree.
        tree: String,
    },
}

type Result<T> = std::result::Result<T, OffsetsError>;

/// One stretch of one-for-one mirrored offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// First source offset of the run.
    pub source_start: i64,
    /// Target offset the first record got.
    pub target_start: i64,
    /// Number of records; never zero.
    pub length: i64,
}

impl Run {
    /// One past the last source offset.
    pub fn source_end(&self) -> i64 {
        self.source_start + self.length
    }

    /// One past the last target offset.
    pub fn target_end(&self) -> i64 {
        self.target_start + self.length
    }
}

/// How far a source partition has been processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Every source offset below this was mirrored or deliberately skipped.
    pub source_next: i64,
    /// The target offset after the last mirrored record (or the target's end when the
    /// partition started): a source offset in a gap at the tail translates to it.
    pub target_next: i64,
}

/// Source offsets `source_start .. source_end` the source deleted before the mirror read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lost {
    /// First lost source offset.
    pub source_start: i64,
    /// One past the last lost source offset.
    pub source_end: i64,
    /// The source's log start offset when the loss was found.
    pub log_start_offset: i64,
    /// When the loss was found (ms since the epoch).
    pub detected_ms: i64,
}

impl Lost {
    /// How many offsets were lost (each offset at most one record).
    pub fn records(&self) -> i64 {
        self.source_end - self.source_start
    }
}

/// The part of a gap `from .. to` in a partition's source offsets (no record between them
/// reached the mirror) that was lost: the offsets below `log_start_offset`, the source's log
/// start when the gap was found. The rest of the gap held no records (compaction, transaction
/// markers, aborted transactions) or was deleted by compaction, which is not loss.
pub fn lost_in_gap(from: i64, to: i64, log_start_offset: i64) -> Option<(i64, i64)> {
    let end = to.min(log_start_offset);
    (end > from).then_some((from, end))
}

/// A source partition found no longer holding what was mirrored from it: from
/// `source_offset` on, what the source holds now is not what the target holds (or the source
/// holds nothing there any more).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Divergence {
    /// The first source offset that no longer matches what was mirrored: the source's end
    /// when it was found below the cursor, or the first record found different.
    pub source_offset: i64,
    /// The cursor's source offset when it was found: everything below it was mirrored.
    pub mirrored_to: i64,
    /// The source's end offset (high watermark) when it was found.
    pub source_end_offset: i64,
    /// When it was found (ms since the epoch); names the divergence for its resolution.
    pub detected_ms: i64,
}

/// An operator's resolution of a [`Divergence`]: mirroring resumes at `from_source_offset`
/// (at or below the divergence), appending after what the target holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// The divergence resolved (its `detected_ms`).
    pub detected_ms: i64,
    /// Where the source is copied from again.
    pub from_source_offset: i64,
}

/// What the pump appends to the internal topic after records were acknowledged: new or
/// extended runs of one partition and its cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunUpdate {
    /// Source topic.
    pub topic: String,
    /// Source (and target) partition.
    pub partition: i32,
    /// Runs in source order; a run whose start is already stored replaces it.
    pub runs: Vec<Run>,
    /// The partition's cursor after these runs.
    pub cursor: Cursor,
    /// Ranges found lost since the last update.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lost: Vec<Lost>,
    /// A divergence found since the last update: the partition is stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diverged: Option<Divergence>,
    /// A divergence resolved: applied before everything else of the update, it cuts the runs
    /// at its source offset and sets the cursor to this update's, even backwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<Resolution>,
    /// The id of the source topic incarnation these runs came from, when the source reports
    /// topic ids. An update of another incarnation than the index's is ignored (a late one
    /// of a topic since recreated), unless it starts a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_topic_id: Option<String>,
    /// The id of the target topic incarnation these runs were written to (the same rule as
    /// `source_topic_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_topic_id: Option<String>,
    /// The source leader epoch of the record just below the update's cursor, when known (a
    /// gap or an adopted range makes it unknown): where a restart asks the source whether
    /// that epoch still reaches the cursor (KIP-320), to find a log cut and refilled while
    /// the mirror was away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_leader_epoch: Option<i32>,
    /// This update starts a new incarnation of the partition (its source or its target topic
    /// was deleted and recreated under the same name): everything the index holds of the
    /// partition is forgotten first, and the cursor is set to this update's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub new_incarnation: bool,
}

impl RunUpdate {
    /// An update of runs and cursor only.
    pub fn runs(topic: &str, partition: i32, runs: Vec<Run>, cursor: Cursor) -> RunUpdate {
        RunUpdate {
            topic: topic.to_string(),
            partition,
            runs,
            cursor,
            lost: Vec::new(),
            diverged: None,
            resolved: None,
            source_topic_id: None,
            target_topic_id: None,
            source_leader_epoch: None,
            new_incarnation: false,
        }
    }
}

/// The last checkpoint of one group's partition: the source offset it was made from and the
/// target offset it translated to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// The group's committed offset on the source.
    pub source_offset: i64,
    /// Its translation on the target.
    pub target_offset: i64,
}

/// The sled database of a daemon; one [`FlowIndex`] per flow.
#[derive(Debug, Clone)]
pub struct OffsetStore {
    db: sled::Db,
    path: String,
}

impl OffsetStore {
    /// Opens (or creates) the database under `dir`.
    pub fn open(dir: &Path) -> Result<OffsetStore> {
        let path = dir.display().to_string();
        let db = sled::Config::new()
            .path(dir)
            // Bounded page cache; the index of even thousands of partitions is small.
            .cache_capacity(64 * 1024 * 1024)
            .open()
            .map_err(|source| OffsetsError::Sled {
                path: path.clone(),
                source,
            })?;
        Ok(OffsetStore { db, path })
    }

    /// The trees of flow `name`.
    pub fn flow(&self, name: &str) -> Result<FlowIndex> {
        let tree = |kind: &str| {
            self.db
                .open_tree(format!("{name}/{kind}"))
                .map_err(|source| self.err(source))
        };
        Ok(FlowIndex {
            lost: tree("lost")?,
            runs: tree("runs")?,
            cursors: tree("cursors")?,
            diverged: tree("diverged")?,
            incarnations: tree("incarnations")?,
            target_incarnations: tree("target_incarnations")?,
            epochs: tree("epochs")?,
            checkpoints: tree("checkpoints")?,
            meta: tree("meta")?,
            path: self.path.clone(),
        })
    }

    /// Writes everything to disk.
    pub fn flush(&self) -> Result<()> {
        self.db.flush().map_err(|source| self.err(source))?;
        Ok(())
    }

    fn err(&self, source: sled::Error) -> OffsetsError {
        OffsetsError::Sled {
            path: self.path.clone(),
            source,
        }
    }
}

/// One flow's index: runs and cursors per source partition, last checkpoints per group
/// partition, and how far the internal topic has been applied.
#[derive(Debug, Clone)]
pub struct FlowIndex {
    runs: sled::Tree,
    lost: sled::Tree,
    cursors: sled::Tree,
    /// Per partition: its open divergence (32 bytes) or, once resolved, the resolved one's
    /// `detected_ms` (8 bytes).
    diverged: sled::Tree,
    /// Per partition: the id of the source topic incarnation it mirrors.
    incarnations: sled::Tree,
    /// Per partition: the id of the target topic incarnation it writes to.
    target_incarnations: sled::Tree,
    /// Per partition: the source leader epoch of the record below the cursor (4 bytes),
    /// absent when unknown.
    epochs: sled::Tree,
    checkpoints: sled::Tree,
    meta: sled::Tree,
    path: String,
}

/// `topic \0 partition(be)`: a topic name never contains NUL.
fn partition_key(topic: &str, partition: i32) -> Vec<u8> {
    let mut key = Vec::with_capacity(topic.len() + 5);
    key.extend_from_slice(topic.as_bytes());
    key.push(0);
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

/// Partition key then the source start offset, big-endian so that sled orders runs by start
/// (offsets are never negative).
fn run_key(topic: &str, partition: i32, source_start: i64) -> Vec<u8> {
    debug_assert!(source_start >= 0, "source offsets are never negative");
    let mut key = partition_key(topic, partition);
    key.extend_from_slice(&source_start.to_be_bytes());
    key
}

fn i64_at(bytes: &[u8], at: usize) -> Option<i64> {
    Some(i64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

fn pair(a: i64, b: i64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&a.to_be_bytes());
    v[8..].copy_from_slice(&b.to_be_bytes());
    v
}

const APPLIED_KEY: &[u8] = b"runs_topic_next_offset";

impl FlowIndex {
    fn err(&self, source: sled::Error) -> OffsetsError {
        OffsetsError::Sled {
            path: self.path.clone(),
            source,
        }
    }

    fn malformed(tree: &str) -> OffsetsError {
        OffsetsError::Malformed {
            tree: tree.to_string(),
        }
    }

    fn decode_run(&self, key: &[u8], value: &[u8]) -> Result<Run> {
        let source_start =
            i64_at(key, key.len().saturating_sub(8)).ok_or_else(|| Self::malformed("runs"))?;
        let (target_start, length) = match (i64_at(value, 0), i64_at(value, 8)) {
            (Some(t), Some(l)) if l > 0 => (t, l),
            _ => return Err(Self::malformed("runs")),
        };
        Ok(Run {
            source_start,
            target_start,
            length,
        })
    }

    /// The cursor of a partition, if it was ever started.
    pub fn cursor(&self, topic: &str, partition: i32) -> Result<Option<Cursor>> {
        let Some(v) = self
            .cursors
            .get(partition_key(topic, partition))
            .map_err(|e| self.err(e))?
        else {
            return Ok(None);
        };
        match (i64_at(&v, 0), i64_at(&v, 8)) {
            (Some(source_next), Some(target_next)) => Ok(Some(Cursor {
                source_next,
                target_next,
            })),
            _ => Err(Self::malformed("cursors")),
        }
    }

    /// Every partition's cursor, by (source topic, partition).
    pub fn cursors(&self) -> Result<Vec<(String, i32, Cursor)>> {
        let mut out = Vec::new();
        for entry in self.cursors.iter() {
            let (key, value) = entry.map_err(|e| self.err(e))?;
            let malformed = || Self::malformed("cursors");
            let (topic, partition) = key
                .len()
                .checked_sub(5)
                .filter(|nul| key[*nul] == 0)
                .map(|nul| (&key[..nul], &key[nul + 1..]))
                .ok_or_else(malformed)?;
            let partition = i32::from_be_bytes(partition.try_into().map_err(|_| malformed())?);
            let (Some(source_next), Some(target_next)) = (i64_at(&value, 0), i64_at(&value, 8))
            else {
                return Err(malformed());
            };
            out.push((
                String::from_utf8(topic.to_vec()).map_err(|_| malformed())?,
                partition,
                Cursor {
                    source_next,
                    target_next,
                },
            ));
        }
        Ok(out)
    }

    /// The source offset a consumer that committed `target_offset` on the target should
    /// resume from on the source (a failback): the inverse of [`FlowIndex::translate`].
    /// Inside a run it is exact; in a gap of target offsets (records the flow did not write)
    /// it is the start of the next run, and at or past the cursor's target offset the
    /// cursor's source offset: the consumer skips nothing it has not read on the target.
    /// `None` for a partition never started or a negative offset.
    pub fn translate_back(
        &self,
        topic: &str,
        partition: i32,
        target_offset: i64,
    ) -> Result<Option<i64>> {
        let Some(cursor) = self.cursor(topic, partition)? else {
            return Ok(None);
        };
        if target_offset < 0 {
            return Ok(None);
        }
        if target_offset >= cursor.target_next {
            return Ok(Some(cursor.source_next));
        }
        // Target ranges usually ascend with the source's, but a run rewritten after a pump
        // went back may sit later on the target than the run after it: look at them all.
        let mut next_run: Option<Run> = None;
        for run in self.runs(topic, partition)? {
            if (run.target_start..run.target_end()).contains(&target_offset) {
                return Ok(Some(run.source_start + (target_offset - run.target_start)));
            }
            if run.target_start > target_offset
                && next_run.is_none_or(|n| run.target_start < n.target_start)
            {
                next_run = Some(run);
            }
        }
        Ok(Some(
            next_run.map_or(cursor.source_next, |r| r.source_start),
        ))
    }

    /// The stored runs of a partition, in source order.
    pub fn runs(&self, topic: &str, partition: i32) -> Result<Vec<Run>> {
        self.runs
            .scan_prefix(partition_key(topic, partition))
            .map(|kv| {
                let (k, v) = kv.map_err(|e| self.err(e))?;
                self.decode_run(&k, &v)
            })
            .collect()
    }

    /// The ranges of a partition found lost, in source order.
    pub fn lost(&self, topic: &str, partition: i32) -> Result<Vec<Lost>> {
        self.lost
            .scan_prefix(partition_key(topic, partition))
            .map(|kv| {
                let (k, v) = kv.map_err(|e| self.err(e))?;
                match (
                    i64_at(&k, k.len().saturating_sub(8)),
                    i64_at(&v, 0),
                    i64_at(&v, 8),
                    i64_at(&v, 16),
                ) {
                    (Some(source_start), Some(source_end), Some(log_start_offset), Some(at)) => {
                        Ok(Lost {
                            source_start,
                            source_end,
                            log_start_offset,
                            detected_ms: at,
                        })
                    }
                    _ => Err(Self::malformed("lost")),
                }
            })
            .collect()
    }

    /// Applies one update: each run replaces what it overlaps; the cursor moves only forward
    /// (an update from a daemon that lost the partition may arrive after its successor's).
    pub fn apply(&self, update: &RunUpdate) -> Result<()> {
        let key = partition_key(&update.topic, update.partition);
        let sides = [
            (&self.incarnations, &update.source_topic_id),
            (&self.target_incarnations, &update.target_topic_id),
        ];
        let mut known = Vec::with_capacity(2);
        for (tree, _) in &sides {
            let v = tree.get(&key).map_err(|e| self.err(e))?;
            known.push(v.map(|v| v.to_vec()));
        }
        // Whether an id the update gives differs from the one the index knows.
        let replaced = sides
            .iter()
            .zip(&known)
            .any(|((_, given), known)| matches!((given, known), (Some(g), Some(k)) if g.as_bytes() != k.as_slice()));
        if update.new_incarnation {
            let same = sides.iter().zip(&known).all(|((_, given), known)| {
                given
                    .as_ref()
                    .is_none_or(|g| known.as_deref() == Some(g.as_bytes()))
            });
            if !same {
                // A topic recreated on either side: forget the partition (its groups' last
                // checkpoints too: they point into the old incarnation, and checkpoints
                // never go backwards), then record its lost ranges and cursor as the update
                // gives them.
                self.cut(&update.topic, update.partition, 0)?;
                self.diverged.remove(&key).map_err(|e| self.err(e))?;
                let mut suffix = vec![0u8];
                suffix.extend_from_slice(&key);
                let stale: Vec<sled::IVec> = self
                    .checkpoints
                    .iter()
                    .keys()
                    .filter(|k| k.as_ref().map_or(true, |k| k.ends_with(&suffix)))
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|e| self.err(e))?;
                for k in stale {
                    self.checkpoints.remove(k).map_err(|e| self.err(e))?;
                }
                self.cursors
                    .insert(
                        &key,
                        &pair(update.cursor.source_next, update.cursor.target_next),
                    )
                    .map_err(|e| self.err(e))?;
            }
        } else if replaced {
            return Ok(()); // of an incarnation since replaced
        }
        for ((tree, given), known) in sides.iter().zip(&known) {
            if let Some(id) = given {
                if update.new_incarnation || known.is_none() {
                    tree.insert(&key, id.as_bytes()).map_err(|e| self.err(e))?;
                }
            }
        }
        if let Some(resolved) = &update.resolved {
            self.cut(&update.topic, update.partition, resolved.from_source_offset)?;
            self.diverged
                .insert(&key, &resolved.detected_ms.to_be_bytes())
                .map_err(|e| self.err(e))?;
            self.cursors
                .insert(
                    &key,
                    &pair(update.cursor.source_next, update.cursor.target_next),
                )
                .map_err(|e| self.err(e))?;
        }
        if let Some(d) = &update.diverged {
            // A divergence already resolved (an update that arrives late) stays resolved.
            if self.resolved(&update.topic, update.partition)? != Some(d.detected_ms) {
                let mut value = Vec::with_capacity(32);
                for v in [
                    d.source_offset,
                    d.mirrored_to,
                    d.source_end_offset,
                    d.detected_ms,
                ] {
                    value.extend_from_slice(&v.to_be_bytes());
                }
                self.diverged.insert(&key, value).map_err(|e| self.err(e))?;
            }
        }
        for run in &update.runs {
            self.insert_run(&update.topic, update.partition, *run)?;
        }
        for lost in &update.lost {
            debug_assert!(lost.records() > 0, "an empty lost range: {lost:?}");
            let mut value = Vec::with_capacity(24);
            value.extend_from_slice(&lost.source_end.to_be_bytes());
            value.extend_from_slice(&lost.log_start_offset.to_be_bytes());
            value.extend_from_slice(&lost.detected_ms.to_be_bytes());
            self.lost
                .insert(
                    run_key(&update.topic, update.partition, lost.source_start),
                    value,
                )
                .map_err(|e| self.err(e))?;
        }
        let newer = match self.cursor(&update.topic, update.partition)? {
            Some(c) => update.cursor.source_next >= c.source_next,
            None => true,
        };
        // A cursor set by a new incarnation or a resolution, even backwards, takes the
        // update's epoch as well.
        if newer || update.new_incarnation || update.resolved.is_some() {
            match update.source_leader_epoch {
                Some(e) => self.epochs.insert(&key, &e.to_be_bytes()[..]),
                None => self.epochs.remove(&key),
            }
            .map_err(|e| self.err(e))?;
        }
        if newer {
            self.cursors
                .insert(
                    key,
                    &pair(update.cursor.source_next, update.cursor.target_next),
                )
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// The source leader epoch of the record just below a partition's cursor, if known.
    pub fn epoch(&self, topic: &str, partition: i32) -> Result<Option<i32>> {
        let v = self
            .epochs
            .get(partition_key(topic, partition))
            .map_err(|e| self.err(e))?;
        v.map(|v| {
            <[u8; 4]>::try_from(v.as_ref())
                .map(i32::from_be_bytes)
                .map_err(|_| Self::malformed("epochs"))
        })
        .transpose()
    }

    /// The open divergence of a partition, if one was found and not resolved.
    pub fn divergence(&self, topic: &str, partition: i32) -> Result<Option<Divergence>> {
        let v = self
            .diverged
            .get(partition_key(topic, partition))
            .map_err(|e| self.err(e))?;
        Ok(match v {
            Some(v) if v.len() == 32 => {
                match (i64_at(&v, 0), i64_at(&v, 8), i64_at(&v, 16), i64_at(&v, 24)) {
                    (
                        Some(source_offset),
                        Some(mirrored_to),
                        Some(source_end_offset),
                        Some(detected_ms),
                    ) => Some(Divergence {
                        source_offset,
                        mirrored_to,
                        source_end_offset,
                        detected_ms,
                    }),
                    _ => return Err(Self::malformed("diverged")),
                }
            }
            Some(v) if v.len() == 8 => None,
            Some(_) => return Err(Self::malformed("diverged")),
            None => None,
        })
    }

    /// The id of the source topic incarnation a partition mirrors, if known.
    pub fn incarnation(&self, topic: &str, partition: i32) -> Result<Option<String>> {
        self.id_in(&self.incarnations, "incarnations", topic, partition)
    }

    /// Whether the source or target topic id published now (`None`: not known) differs
    /// from the one the partition's runs were recorded for: that topic was recreated since,
    /// and the runs no longer describe it.
    pub fn replaced(
        &self,
        topic: &str,
        partition: i32,
        source_id: Option<&str>,
        target_id: Option<&str>,
    ) -> Result<bool> {
        let differs = |known: Option<String>, now: Option<&str>| matches!((known.as_deref(), now), (Some(k), Some(n)) if k != n);
        Ok(differs(self.incarnation(topic, partition)?, source_id)
            || differs(self.target_incarnation(topic, partition)?, target_id))
    }

    /// The id of the target topic incarnation a partition writes to, if known.
    pub fn target_incarnation(&self, topic: &str, partition: i32) -> Result<Option<String>> {
        self.id_in(
            &self.target_incarnations,
            "target_incarnations",
            topic,
            partition,
        )
    }

    fn id_in(
        &self,
        tree: &sled::Tree,
        name: &str,
        topic: &str,
        partition: i32,
    ) -> Result<Option<String>> {
        let v = tree
            .get(partition_key(topic, partition))
            .map_err(|e| self.err(e))?;
        v.map(|v| String::from_utf8(v.to_vec()).map_err(|_| Self::malformed(name)))
            .transpose()
    }

    /// The `detected_ms` of the partition's last resolved divergence.
    pub fn resolved(&self, topic: &str, partition: i32) -> Result<Option<i64>> {
        let v = self
            .diverged
            .get(partition_key(topic, partition))
            .map_err(|e| self.err(e))?;
        Ok(v.filter(|v| v.len() == 8).and_then(|v| i64_at(&v, 0)))
    }

    /// Forgets the runs and lost ranges of a partition at and past `source_offset`, keeping
    /// the head of a run that crosses it.
    fn cut(&self, topic: &str, partition: i32, source_offset: i64) -> Result<()> {
        let prefix = partition_key(topic, partition);
        let at = run_key(topic, partition, source_offset.max(0));
        let mut past = prefix.clone();
        past.push(0xff);
        for tree in [&self.runs, &self.lost] {
            let doomed: Vec<sled::IVec> = tree
                .range(at.clone()..past.clone())
                .keys()
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| self.err(e))?;
            for k in doomed {
                tree.remove(k).map_err(|e| self.err(e))?;
            }
        }
        if let Some(kv) = self.runs.range(prefix.clone()..at.clone()).next_back() {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            let before = self.decode_run(&k, &v)?;
            if before.source_end() > source_offset {
                self.runs
                    .insert(
                        &k,
                        &pair(before.target_start, source_offset - before.source_start),
                    )
                    .map_err(|e| self.err(e))?;
            }
        }
        if let Some(kv) = self.lost.range(prefix..at).next_back() {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            if i64_at(&v, 0).is_some_and(|end| end > source_offset) {
                let mut value = v.to_vec();
                value[..8].copy_from_slice(&source_offset.to_be_bytes());
                self.lost.insert(&k, value).map_err(|e| self.err(e))?;
            }
        }
        Ok(())
    }

    fn insert_run(&self, topic: &str, partition: i32, run: Run) -> Result<()> {
        if run.length <= 0 || run.source_start < 0 {
            // An empty or negative run carries no mapping; the pump never sends one.
            debug_assert!(false, "run with no records: {run:?}");
            return Ok(());
        }
        let prefix = partition_key(topic, partition);
        let start = run_key(topic, partition, run.source_start);
        let end = run_key(topic, partition, run.source_end());
        // The run before it may reach into it: keep only its head.
        if let Some(kv) = self.runs.range(prefix.clone()..start.clone()).next_back() {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            let before = self.decode_run(&k, &v)?;
            if before.source_end() > run.source_start {
                let head = run.source_start - before.source_start;
                debug_assert!(head > 0, "a run keyed before the new one starts before it");
                self.runs
                    .insert(&k, &pair(before.target_start, head))
                    .map_err(|e| self.err(e))?;
                if before.source_end() > run.source_end() {
                    // It also reached past the new run: keep its tail too.
                    let cut = run.source_end() - before.source_start;
                    self.runs
                        .insert(
                            run_key(topic, partition, run.source_end()),
                            &pair(before.target_start + cut, before.length - cut),
                        )
                        .map_err(|e| self.err(e))?;
                }
            }
        }
        // Runs starting inside it are replaced; the last of them may reach past its end.
        let inside: Vec<(sled::IVec, sled::IVec)> = self
            .runs
            .range((Bound::Included(start.clone()), Bound::Excluded(end)))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| self.err(e))?;
        for (k, v) in inside {
            let old = self.decode_run(&k, &v)?;
            self.runs.remove(&k).map_err(|e| self.err(e))?;
            if old.source_end() > run.source_end() {
                let cut = run.source_end() - old.source_start;
                self.runs
                    .insert(
                        run_key(topic, partition, run.source_end()),
                        &pair(old.target_start + cut, old.length - cut),
                    )
                    .map_err(|e| self.err(e))?;
            }
        }
        self.runs
            .insert(start, &pair(run.target_start, run.length))
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The target offset a consumer that committed `source_offset` on the source should
    /// resume from on the target, or `None` if the source has not been processed that far
    /// (never a position past the mirrored data).
    ///
    /// Inside a run the translation is exact. An offset in a gap (records that were never
    /// mirrored) translates to the first mirrored record after it, and at the tail to the
    /// cursor's target offset: in both cases the consumer skips nothing that was mirrored
    /// and reads nothing twice.
    pub fn translate(
        &self,
        topic: &str,
        partition: i32,
        source_offset: i64,
    ) -> Result<Option<i64>> {
        let Some(cursor) = self.cursor(topic, partition)? else {
            return Ok(None);
        };
        if source_offset > cursor.source_next || source_offset < 0 {
            return Ok(None);
        }
        let prefix = partition_key(topic, partition);
        let at = run_key(topic, partition, source_offset);
        let mut upper = at.clone();
        upper.push(0); // just after `at`, so a run starting exactly there is included
        if let Some(kv) = self.runs.range(prefix.clone()..upper).next_back() {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            let run = self.decode_run(&k, &v)?;
            if source_offset < run.source_end() {
                return Ok(Some(run.target_start + (source_offset - run.source_start)));
            }
        }
        let mut past = prefix.clone();
        past.push(0xff); // after every run of this partition (keys are prefix + 8 bytes)
        let next = self.runs.range(at..past).next();
        match next {
            Some(kv) => {
                let (k, v) = kv.map_err(|e| self.err(e))?;
                Ok(Some(self.decode_run(&k, &v)?.target_start))
            }
            None => Ok(Some(cursor.target_next)),
        }
    }

    /// Offset of the next record of the internal topic to apply (0 on a fresh index).
    pub fn applied_next_offset(&self) -> Result<i64> {
        Ok(self
            .meta
            .get(APPLIED_KEY)
            .map_err(|e| self.err(e))?
            .and_then(|v| i64_at(&v, 0))
            .unwrap_or(0))
    }

    /// Records that the internal topic was applied up to (excluding) `next_offset`.
    pub fn set_applied_next_offset(&self, next_offset: i64) -> Result<()> {
        self.meta
            .insert(APPLIED_KEY, &next_offset.to_be_bytes())
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Forgets everything of the flow (the internal topic was recreated).
    pub fn clear(&self) -> Result<()> {
        for tree in [
            &self.runs,
            &self.lost,
            &self.cursors,
            &self.diverged,
            &self.incarnations,
            &self.target_incarnations,
            &self.epochs,
            &self.checkpoints,
            &self.meta,
        ] {
            tree.clear().map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    fn checkpoint_key(group: &str, topic: &str, partition: i32) -> Vec<u8> {
        let mut key = Vec::with_capacity(group.len() + topic.len() + 6);
        key.extend_from_slice(group.as_bytes());
        key.push(0);
        key.extend_from_slice(&partition_key(topic, partition));
        key
    }

    /// The last checkpoint emitted for a group's partition.
    pub fn checkpoint(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> Result<Option<Checkpoint>> {
        let v = self
            .checkpoints
            .get(Self::checkpoint_key(group, topic, partition))
            .map_err(|e| self.err(e))?;
        match v {
            None => Ok(None),
            Some(v) => match (i64_at(&v, 0), i64_at(&v, 8)) {
                (Some(source_offset), Some(target_offset)) => Ok(Some(Checkpoint {
                    source_offset,
                    target_offset,
                })),
                _ => Err(Self::malformed("checkpoints")),
            },
        }
    }

    /// Every checkpoint the index holds: (group, source topic, partition, checkpoint), in key
    /// order.
    pub fn checkpoints(&self) -> Result<Vec<(String, String, i32, Checkpoint)>> {
        let mut out = Vec::new();
        for entry in self.checkpoints.iter() {
            let (key, value) = entry.map_err(|e| self.err(e))?;
            let malformed = || Self::malformed("checkpoints");
            let mut parts = key.splitn(3, |b| *b == 0);
            let group = parts.next().ok_or_else(malformed)?;
            let topic = parts.next().ok_or_else(malformed)?;
            let partition = parts.next().ok_or_else(malformed)?;
            let partition = i32::from_be_bytes(partition.try_into().map_err(|_| malformed())?);
            let (Some(source_offset), Some(target_offset)) = (i64_at(&value, 0), i64_at(&value, 8))
            else {
                return Err(malformed());
            };
            out.push((
                String::from_utf8(group.to_vec()).map_err(|_| malformed())?,
                String::from_utf8(topic.to_vec()).map_err(|_| malformed())?,
                partition,
                Checkpoint {
                    source_offset,
                    target_offset,
                },
            ));
        }
        Ok(out)
    }

    /// Remembers the checkpoint emitted for a group's partition.
    pub fn set_checkpoint(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
        c: Checkpoint,
    ) -> Result<()> {
        self.checkpoints
            .insert(
                Self::checkpoint_key(group, topic, partition),
                &pair(c.source_offset, c.target_offset),
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

/// The checkpoint to emit for a group's partition whose committed source offset is
/// `source_offset` and translates to `translated`, given the last one emitted. `None` when
/// nothing changed.
///
/// Checkpoints never go backwards, except when the group itself moved backwards on the
/// source (an offset reset), which the target must follow.
pub fn next_checkpoint(
    last: Option<Checkpoint>,
    source_offset: i64,
    translated: i64,
) -> Option<Checkpoint> {
    let next = match last {
        Some(last) if source_offset >= last.source_offset => Checkpoint {
            source_offset,
            target_offset: translated.max(last.target_offset),
        },
        _ => Checkpoint {
            source_offset,
            target_offset: translated,
        },
    };
    (Some(next) != last).then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn index() -> (tempfile::TempDir, FlowIndex) {
        let dir = tempfile::tempdir().unwrap();
        let store = OffsetStore::open(dir.path()).unwrap();
        let flow = store.flow("a-to-b").unwrap();
        (dir, flow)
    }

    /// Opens a store that this process has just dropped. sled's flusher thread holds the old
    /// database (and its file lock) until its next wake-up, so the lock may still be taken
    /// for a moment; a daemon restart is a new process and never meets this.
    fn reopen(dir: &std::path::Path) -> OffsetStore {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match OffsetStore::open(dir) {
                Ok(store) => return store,
                Err(e)
                    if std::time::Instant::now() < deadline && e.to_string().contains("lock") =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => panic!("reopening the store: {e}"),
            }
        }
    }

    fn update(runs: &[(i64, i64, i64)], cursor: (i64, i64)) -> RunUpdate {
        let runs = runs
            .iter()
            .map(|&(s, t, l)| Run {
                source_start: s,
                target_start: t,
                length: l,
            })
            .collect();
        let cursor = Cursor {
            source_next: cursor.0,
            target_next: cursor.1,
        };
        RunUpdate::runs("orders", 0, runs, cursor)
    }

    #[test]
    fn the_leader_epoch_follows_the_cursor_and_is_forgotten_where_unknown() {
        let (_d, ix) = index();
        let with_epoch = |cursor: (i64, i64), epoch: Option<i32>| RunUpdate {
            source_leader_epoch: epoch,
            ..update(&[], cursor)
        };
        ix.apply(&with_epoch((10, 10), Some(3))).unwrap();
        assert_eq!(ix.epoch("orders", 0).unwrap(), Some(3));
        // A late update behind the cursor changes nothing.
        ix.apply(&with_epoch((5, 5), Some(2))).unwrap();
        assert_eq!(ix.epoch("orders", 0).unwrap(), Some(3));
        ix.apply(&with_epoch((20, 20), Some(4))).unwrap();
        assert_eq!(ix.epoch("orders", 0).unwrap(), Some(4));
        // Past a gap (or adopted records) the epoch is unknown.
        ix.apply(&with_epoch((30, 20), None)).unwrap();
        assert_eq!(ix.epoch("orders", 0).unwrap(), None);
        ix.apply(&with_epoch((31, 21), Some(4))).unwrap();
        // A new incarnation starts without one.
        let fresh = RunUpdate {
            new_incarnation: true,
            source_topic_id: Some("new".into()),
            ..update(&[], (0, 21))
        };
        ix.apply(&fresh).unwrap();
        assert_eq!(ix.epoch("orders", 0).unwrap(), None);
    }

    #[test]
    fn a_divergence_stays_open_until_resolved_and_the_resolution_cuts_the_runs_behind_it() {
        let (_d, ix) = index();
        ix.apply(&update(&[(0, 0, 60), (60, 61, 40)], (100, 101)))
            .unwrap();
        ix.apply(&RunUpdate {
            topic: "orders".into(),
            partition: 0,
            runs: Vec::new(),
            cursor: Cursor {
                source_next: 95,
                target_next: 96,
            },
            lost: vec![Lost {
                source_start: 50,
                source_end: 70,
                log_start_offset: 70,
                detected_ms: 1,
            }],
            diverged: None,
            resolved: None,
            source_topic_id: None,
            target_topic_id: None,
            source_leader_epoch: None,
            new_incarnation: false,
        })
        .unwrap();
        assert_eq!(
            ix.cursor("orders", 0).unwrap().unwrap().source_next,
            100,
            "never backwards"
        );
        let d = Divergence {
            source_offset: 80,
            mirrored_to: 100,
            source_end_offset: 80,
            detected_ms: 42,
        };
        ix.apply(&RunUpdate {
            diverged: Some(d),
            ..update(&[], (100, 101))
        })
        .unwrap();
        assert_eq!(ix.divergence("orders", 0).unwrap(), Some(d));
        assert_eq!(ix.resolved("orders", 0).unwrap(), None);
        // Resolved at 70: runs and lost ranges at and past 70 are cut, the cursor goes back.
        ix.apply(&RunUpdate {
            resolved: Some(Resolution {
                detected_ms: 42,
                from_source_offset: 70,
            }),
            ..update(&[], (70, 101))
        })
        .unwrap();
        assert_eq!(ix.divergence("orders", 0).unwrap(), None);
        assert_eq!(ix.resolved("orders", 0).unwrap(), Some(42));
        assert_eq!(
            ix.cursor("orders", 0).unwrap(),
            Some(Cursor {
                source_next: 70,
                target_next: 101
            })
        );
        let runs: Vec<(i64, i64, i64)> = ix
            .runs("orders", 0)
            .unwrap()
            .iter()
            .map(|r| (r.source_start, r.target_start, r.length))
            .collect();
        assert_eq!(runs, vec![(0, 0, 60), (60, 61, 10)]);
        let lost: Vec<(i64, i64)> = ix
            .lost("orders", 0)
            .unwrap()
            .iter()
            .map(|l| (l.source_start, l.source_end))
            .collect();
        assert_eq!(lost, vec![(50, 70)]);
        assert_eq!(ix.translate("orders", 0, 65).unwrap(), Some(66));
        assert_eq!(
            ix.translate("orders", 0, 70).unwrap(),
            Some(101),
            "the cursor's target offset"
        );
        assert_eq!(
            ix.translate("orders", 0, 75).unwrap(),
            None,
            "past the cursor"
        );
        // The pump's record of the same divergence, arriving late, does not reopen it; new
        // records then extend the index from the new cursor.
        ix.apply(&RunUpdate {
            diverged: Some(d),
            ..update(&[], (70, 101))
        })
        .unwrap();
        assert_eq!(ix.divergence("orders", 0).unwrap(), None);
        ix.apply(&update(&[(70, 101, 5)], (75, 106))).unwrap();
        assert_eq!(ix.translate("orders", 0, 72).unwrap(), Some(103));
    }

    #[test]
    fn a_new_incarnation_forgets_the_old_one_and_late_updates_of_the_old_one_are_ignored() {
        let (_d, ix) = index();
        let of = |id: &str, runs: &[(i64, i64, i64)], cursor: (i64, i64)| RunUpdate {
            source_topic_id: Some(id.to_string()),
            ..update(runs, cursor)
        };
        ix.apply(&of("old", &[(0, 0, 50)], (50, 50))).unwrap();
        assert_eq!(ix.incarnation("orders", 0).unwrap().as_deref(), Some("old"));
        let c = Checkpoint {
            source_offset: 40,
            target_offset: 40,
        };
        ix.set_checkpoint("g", "orders", 0, c).unwrap();
        ix.set_checkpoint("g", "orders", 1, c).unwrap();
        let start = RunUpdate {
            new_incarnation: true,
            ..of("new", &[], (0, 50))
        };
        ix.apply(&start).unwrap();
        assert_eq!(ix.incarnation("orders", 0).unwrap().as_deref(), Some("new"));
        assert!(ix.runs("orders", 0).unwrap().is_empty());
        assert_eq!(
            ix.checkpoint("g", "orders", 0).unwrap(),
            None,
            "it pointed into the old one"
        );
        assert_eq!(
            ix.checkpoint("g", "orders", 1).unwrap(),
            Some(c),
            "another partition's stays"
        );
        assert_eq!(
            ix.cursor("orders", 0).unwrap(),
            Some(Cursor {
                source_next: 0,
                target_next: 50
            })
        );
        // A late update of the old incarnation changes nothing; the new one's extend it, and
        // a replay of the start (a follower rebuilding the index) does not cut them again.
        ix.apply(&of("old", &[(50, 50, 10)], (60, 60))).unwrap();
        ix.apply(&of("new", &[(0, 50, 20)], (20, 70))).unwrap();
        ix.apply(&start).unwrap();
        assert_eq!(ix.translate("orders", 0, 10).unwrap(), Some(60));
        assert_eq!(
            ix.cursor("orders", 0).unwrap().map(|c| c.source_next),
            Some(20)
        );
        // Updates without an id (a source that reports none) apply as before.
        ix.apply(&update(&[(20, 70, 5)], (25, 75))).unwrap();
        assert_eq!(ix.translate("orders", 0, 22).unwrap(), Some(72));
    }

    #[test]
    fn a_recreated_target_topic_starts_a_new_incarnation_as_a_recreated_source_does() {
        let (_d, ix) = index();
        let of =
            |source: &str, target: &str, runs: &[(i64, i64, i64)], cursor: (i64, i64)| RunUpdate {
                source_topic_id: Some(source.to_string()),
                target_topic_id: Some(target.to_string()),
                ..update(runs, cursor)
            };
        ix.apply(&of("s", "t1", &[(0, 0, 40)], (40, 40))).unwrap();
        assert_eq!(
            ix.target_incarnation("orders", 0).unwrap().as_deref(),
            Some("t1")
        );
        // The target recreated: what was below the source's log start (10) is lost.
        ix.apply(&RunUpdate {
            new_incarnation: true,
            lost: vec![Lost {
                source_start: 0,
                source_end: 10,
                log_start_offset: 10,
                detected_ms: 7,
            }],
            ..of("s", "t2", &[], (10, 0))
        })
        .unwrap();
        assert_eq!(
            ix.target_incarnation("orders", 0).unwrap().as_deref(),
            Some("t2")
        );
        assert_eq!(ix.incarnation("orders", 0).unwrap().as_deref(), Some("s"));
        assert!(ix.runs("orders", 0).unwrap().is_empty());
        assert_eq!(ix.lost("orders", 0).unwrap().len(), 1);
        assert_eq!(
            ix.translate("orders", 0, 5).unwrap(),
            Some(0),
            "a gap before the cursor"
        );
        // A late update written into the old target topic changes nothing.
        ix.apply(&of("s", "t1", &[(40, 40, 5)], (45, 45))).unwrap();
        assert_eq!(
            ix.cursor("orders", 0).unwrap().map(|c| c.source_next),
            Some(10)
        );
        ix.apply(&of("s", "t2", &[(10, 0, 30)], (40, 30))).unwrap();
        assert_eq!(ix.translate("orders", 0, 25).unwrap(), Some(15));
    }

    #[test]
    fn every_checkpoint_is_listed_with_its_group_topic_and_partition() {
        let (_d, ix) = index();
        let c = |s, t| Checkpoint {
            source_offset: s,
            target_offset: t,
        };
        // Partition 256 has a NUL byte in its big-endian key.
        ix.set_checkpoint("billing", "orders", 256, c(5, 7))
            .unwrap();
        ix.set_checkpoint("audit", "orders", 0, c(1, 1)).unwrap();
        ix.set_checkpoint("billing", "orders", 256, c(9, 11))
            .unwrap();
        assert_eq!(
            ix.checkpoints().unwrap(),
            vec![
                ("audit".to_string(), "orders".to_string(), 0, c(1, 1)),
                ("billing".to_string(), "orders".to_string(), 256, c(9, 11)),
            ]
        );
    }

    #[test]
    fn offsets_translate_exactly_inside_runs_and_to_the_next_record_in_gaps() {
        let (_d, ix) = index();
        assert_eq!(ix.translate("orders", 0, 0).unwrap(), None, "never started");
        // Source 0..10 -> target 100..110, a compacted gap 10..15, then 15..20 -> 110..115,
        // then source 20..22 processed but skipped (came from the target).
        ix.apply(&update(&[(0, 100, 10), (15, 110, 5)], (22, 115)))
            .unwrap();
        let t = |o| ix.translate("orders", 0, o).unwrap();
        assert_eq!(t(0), Some(100));
        assert_eq!(t(9), Some(109));
        assert_eq!(t(10), Some(110), "a gap goes to the next mirrored record");
        assert_eq!(t(14), Some(110));
        assert_eq!(t(15), Some(110));
        assert_eq!(t(19), Some(114));
        assert_eq!(t(20), Some(115), "the tail gap goes to the cursor");
        assert_eq!(t(22), Some(115));
        assert_eq!(t(23), None, "never past what was processed");
        assert_eq!(
            ix.translate("orders", 1, 0).unwrap(),
            None,
            "other partition"
        );
    }

    #[test]
    fn target_offsets_translate_back_exactly_and_every_cursor_is_listed() {
        let (_d, ix) = index();
        assert_eq!(ix.translate_back("orders", 0, 0).unwrap(), None);
        // Source 0..10 -> target 100..110; target 110..113 written by someone else (foreign);
        // source 15..20 -> target 113..118; cursor (22, 118).
        ix.apply(&update(&[(0, 100, 10), (15, 113, 5)], (22, 118)))
            .unwrap();
        let b = |o| ix.translate_back("orders", 0, o).unwrap();
        assert_eq!(b(0), Some(0), "before the first run: its start");
        assert_eq!(b(100), Some(0));
        assert_eq!(b(109), Some(9));
        assert_eq!(b(110), Some(15), "a foreign stretch: the next run's start");
        assert_eq!(b(112), Some(15));
        assert_eq!(b(113), Some(15));
        assert_eq!(b(117), Some(19));
        assert_eq!(b(118), Some(22), "the cursor");
        assert_eq!(b(500), Some(22), "past the cursor: the cursor");
        assert_eq!(b(-1), None);
        // Every forward translation inside a run comes back to where it started.
        for s in (0..10).chain(15..20) {
            let t = ix.translate("orders", 0, s).unwrap().unwrap();
            assert_eq!(b(t), Some(s), "source {s} -> target {t}");
        }
        let mut other = update(&[(0, 0, 3)], (3, 3));
        other.partition = 256; // a NUL byte in its big-endian key
        ix.apply(&other).unwrap();
        assert_eq!(
            ix.cursors().unwrap(),
            vec![
                (
                    "orders".to_string(),
                    0,
                    Cursor {
                        source_next: 22,
                        target_next: 118
                    }
                ),
                (
                    "orders".to_string(),
                    256,
                    Cursor {
                        source_next: 3,
                        target_next: 3
                    }
                ),
            ]
        );
    }

    #[test]
    fn lost_ranges_are_kept_and_translate_as_gaps() {
        let (_dir, ix) = index();
        let mut u = update(&[(0, 100, 10), (40, 110, 5)], (45, 115));
        u.lost = vec![Lost {
            source_start: 10,
            source_end: 40,
            log_start_offset: 40,
            detected_ms: 7,
        }];
        ix.apply(&u).unwrap();
        assert_eq!(ix.lost("orders", 0).unwrap(), u.lost);
        assert!(ix.lost("orders", 1).unwrap().is_empty());
        // A group that committed inside the lost range resumes at the first record after it.
        assert_eq!(ix.translate("orders", 0, 10).unwrap(), Some(110));
        assert_eq!(ix.translate("orders", 0, 39).unwrap(), Some(110));
        assert_eq!(ix.translate("orders", 0, 9).unwrap(), Some(109));
        assert_eq!(lost_in_gap(10, 40, 40), Some((10, 40)));
        assert_eq!(lost_in_gap(10, 40, 25), Some((10, 25)));
        assert_eq!(lost_in_gap(10, 40, 10), None);
        assert_eq!(lost_in_gap(10, 40, 5), None);
        assert_eq!(lost_in_gap(10, 40, 90), Some((10, 40)));
    }

    #[test]
    fn an_empty_partition_translates_its_start() {
        let (_d, ix) = index();
        ix.apply(&update(&[], (0, 0))).unwrap();
        assert_eq!(ix.translate("orders", 0, 0).unwrap(), Some(0));
        assert_eq!(ix.translate("orders", 0, 1).unwrap(), None);
    }

    #[test]
    fn a_newer_run_replaces_what_it_overlaps_and_cursors_never_go_back() {
        let (_d, ix) = index();
        ix.apply(&update(&[(0, 0, 10)], (10, 10))).unwrap();
        // A second daemon re-mirrored 5..12 after taking the partition over.
        ix.apply(&update(&[(5, 10, 7)], (12, 17))).unwrap();
        assert_eq!(
            ix.runs("orders", 0).unwrap(),
            vec![
                Run {
                    source_start: 0,
                    target_start: 0,
                    length: 5
                },
                Run {
                    source_start: 5,
                    target_start: 10,
                    length: 7
                }
            ]
        );
        assert_eq!(ix.translate("orders", 0, 6).unwrap(), Some(11));
        // A late update of the first daemon does not move the cursor back.
        ix.apply(&update(&[], (10, 10))).unwrap();
        assert_eq!(ix.cursor("orders", 0).unwrap().unwrap().source_next, 12);
        // A run inside an older one splits it.
        ix.apply(&update(&[(1, 50, 2)], (12, 17))).unwrap();
        assert_eq!(
            ix.runs("orders", 0).unwrap(),
            vec![
                Run {
                    source_start: 0,
                    target_start: 0,
                    length: 1
                },
                Run {
                    source_start: 1,
                    target_start: 50,
                    length: 2
                },
                Run {
                    source_start: 3,
                    target_start: 3,
                    length: 2
                },
                Run {
                    source_start: 5,
                    target_start: 10,
                    length: 7
                }
            ]
        );
    }

    #[test]
    fn the_index_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = OffsetStore::open(dir.path()).unwrap();
            let ix = store.flow("f").unwrap();
            ix.apply(&update(&[(3, 7, 4)], (7, 11))).unwrap();
            ix.set_applied_next_offset(42).unwrap();
            store.flush().unwrap();
        }
        let store = OffsetStore::open(dir.path()).unwrap();
        let ix = store.flow("f").unwrap();
        assert_eq!(ix.translate("orders", 0, 4).unwrap(), Some(8));
        assert_eq!(ix.applied_next_offset().unwrap(), 42);
        assert!(store
            .flow("other")
            .unwrap()
            .cursor("orders", 0)
            .unwrap()
            .is_none());
    }

    #[test]
    fn checkpoints_go_backwards_only_with_the_group() {
        let c = |s, t| Checkpoint {
            source_offset: s,
            target_offset: t,
        };
        assert_eq!(next_checkpoint(None, 5, 105), Some(c(5, 105)));
        assert_eq!(next_checkpoint(Some(c(5, 105)), 5, 105), None, "unchanged");
        assert_eq!(
            next_checkpoint(Some(c(5, 105)), 6, 104),
            Some(c(6, 105)),
            "never back"
        );
        assert_eq!(
            next_checkpoint(Some(c(5, 105)), 2, 102),
            Some(c(2, 102)),
            "group reset"
        );
    }

    /// The property tests' model of a pump on one partition: every record it mirrored as
    /// (source, target), where it is, and the runs it has not flushed yet, built as the pump
    /// builds them.
    #[derive(Default)]
    struct Model {
        mirrored: Vec<(i64, i64)>,
        source: i64,
        target: i64,
        open: Option<Run>,
        pending: Vec<Run>,
    }

    impl Model {
        /// The record at `source` is mirrored at `target` (extending the open run, or
        /// closing it and opening another), or skipped (closing it).
        fn record(&mut self, skip: bool) {
            if skip {
                self.pending.extend(self.open.take());
            } else {
                self.mirrored.push((self.source, self.target));
                match &mut self.open {
                    Some(r) if r.source_end() == self.source && r.target_end() == self.target => {
                        r.length += 1
                    }
                    _ => {
                        self.pending.extend(self.open.take());
                        self.open = Some(Run {
                            source_start: self.source,
                            target_start: self.target,
                            length: 1,
                        });
                    }
                }
                self.target += 1;
            }
            self.source += 1;
        }

        /// The runs to flush: the closed ones and the open one, which stays open (as the
        /// pump's does, sent again with its start as it grows) unless `close`.
        fn runs(&mut self, close: bool) -> Vec<Run> {
            let mut runs = std::mem::take(&mut self.pending);
            runs.extend(if close { self.open.take() } else { self.open });
            runs
        }

        fn cursor(&self) -> Cursor {
            Cursor {
                source_next: self.source,
                target_next: self.target,
            }
        }

        /// Checks that `ix` translates every offset up to the cursor as the model says (the
        /// first mirrored record at or after it, else the cursor's target offset), and
        /// nothing past it.
        fn check_translation(
            &self,
            ix: &FlowIndex,
            topic: &str,
            partition: i32,
        ) -> std::result::Result<(), TestCaseError> {
            for offset in 0..=self.source {
                let expected = self
                    .mirrored
                    .iter()
                    .find(|(s, _)| *s >= offset)
                    .map_or(self.target, |(_, t)| *t);
                prop_assert_eq!(
                    ix.translate(topic, partition, offset).unwrap(),
                    Some(expected),
                    "offset {}",
                    offset
                );
            }
            prop_assert_eq!(
                ix.translate(topic, partition, self.source + 1).unwrap(),
                None
            );
            Ok(())
        }
    }

    proptest! {
        /// A partition mirrored record by record, with random gaps and skipped records,
        /// translates every processed offset to exactly the target offset of the first
        /// mirrored record at or after it, however the acknowledgements were grouped into
        /// updates.
        #[test]
        fn translation_matches_a_record_by_record_model(
            steps in proptest::collection::vec((0i64..3, any::<bool>(), 0i64..2), 1..200),
            flush_every in 1usize..20,
        ) {
            let (_d, ix) = index();
            let mut m = Model::default();
            for (i, (source_gap, skip, target_gap)) in steps.iter().enumerate() {
                m.source += source_gap;
                m.target += target_gap;
                m.record(*skip);
                if i % flush_every == 0 || i + 1 == steps.len() {
                    let runs = m.runs(false);
                    ix.apply(&RunUpdate::runs("t", 3, runs, m.cursor())).unwrap();
                }
            }
            m.check_translation(&ix, "t", 3)?;
            for r in ix.runs("t", 3).unwrap() {
                prop_assert!(r.length > 0);
            }
        }

        /// The index against a model of one partition over a random life: records mirrored
        /// (some skipped, some target offsets taken by others), gaps in the source (lost when
        /// below the log start, else empty offsets), flushes in any grouping, restarts of the
        /// store from disk, truncations of the source resolved by an operator, late updates
        /// of a replaced incarnation, and the source topic recreated. After every step that
        /// reaches the index, every processed source offset translates to the first mirrored
        /// record at or after it (or the cursor's target offset past the last one), nothing
        /// past the cursor translates, and the lost ranges are what the model lost.
        #[test]
        fn the_index_follows_a_model_through_gaps_truncations_restarts_and_recreations(
            ops in proptest::collection::vec((0u8..9, 0i64..6, any::<bool>()), 1..120),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut store = OffsetStore::open(dir.path()).unwrap();
            let mut ix = store.flow("a-to-b").unwrap();
            // The model: the pump on the current incarnation, its lost ranges, and what it
            // has not flushed.
            let mut m = Model::default();
            let mut lost: Vec<(i64, i64)> = Vec::new();
            let mut incarnation = 0u32;
            // Divergences are named by when they were found: a new one each time.
            let mut clock_ms = 1_000i64;
            let mut pending_lost: Vec<Lost> = Vec::new();
            let id = |n: u32| Some(format!("topic-id-{n}"));
            let flush = |ix: &FlowIndex, m: &mut Model, pending_lost: &mut Vec<Lost>, incarnation: u32| {
                let update = RunUpdate {
                    lost: std::mem::take(pending_lost),
                    source_topic_id: id(incarnation),
                    ..RunUpdate::runs("t", 0, m.runs(true), m.cursor())
                };
                ix.apply(&update).unwrap();
            };
            for (op, n, flag) in ops {
                match op {
                    // Records: `n + 1` of them, every other one skipped when `flag`.
                    0..=2 => {
                        for k in 0..=n {
                            m.record(flag && k % 2 == 1);
                        }
                    }
                    // Someone else's records on the target: the next run starts further on.
                    3 => m.target += n,
                    // A gap of `n + 1` source offsets: lost (below the log start) when `flag`.
                    4 => {
                        m.pending.extend(m.open.take());
                        let to = m.source + n + 1;
                        if flag {
                            pending_lost.push(Lost { source_start: m.source, source_end: to, log_start_offset: to, detected_ms: 1 });
                            lost.push((m.source, to));
                        }
                        m.source = to;
                    }
                    5 => flush(&ix, &mut m, &mut pending_lost, incarnation),
                    // A restart: what was flushed survives, what was not is sent again later
                    // (the model forgets it, as the pump's reconciliation would take it).
                    6 => {
                        flush(&ix, &mut m, &mut pending_lost, incarnation);
                        store.flush().unwrap();
                        drop(ix);
                        drop(store);
                        store = reopen(dir.path());
                        ix = store.flow("a-to-b").unwrap();
                    }
                    // The source truncated `n` offsets back, found and resolved at that point:
                    // copying resumes there, after everything the target holds.
                    7 => {
                        flush(&ix, &mut m, &mut pending_lost, incarnation);
                        let at = (m.source - n).max(0);
                        clock_ms += 1;
                        let detected_ms = clock_ms;
                        let d = Divergence { source_offset: at, mirrored_to: m.source, source_end_offset: at, detected_ms };
                        let diverged = RunUpdate { diverged: Some(d), source_topic_id: id(incarnation), ..RunUpdate::runs("t", 0, Vec::new(), m.cursor()) };
                        ix.apply(&diverged).unwrap();
                        prop_assert_eq!(ix.divergence("t", 0).unwrap(), Some(d));
                        let resolution = RunUpdate {
                            resolved: Some(Resolution { detected_ms, from_source_offset: at }),
                            source_topic_id: id(incarnation),
                            ..RunUpdate::runs("t", 0, Vec::new(), Cursor { source_next: at, target_next: m.target })
                        };
                        ix.apply(&resolution).unwrap();
                        prop_assert_eq!(ix.divergence("t", 0).unwrap(), None);
                        m.mirrored.retain(|(s, _)| *s < at);
                        lost.retain_mut(|(from, to)| { *to = (*to).min(at); *from < *to });
                        m.source = at;
                    }
                    // The source recreated (when `flag`), or a late update of the incarnation
                    // before this one, which must change nothing.
                    _ => {
                        flush(&ix, &mut m, &mut pending_lost, incarnation);
                        if flag {
                            incarnation += 1;
                            let update = RunUpdate {
                                source_topic_id: id(incarnation),
                                new_incarnation: true,
                                ..RunUpdate::runs("t", 0, Vec::new(), Cursor { source_next: 0, target_next: m.target })
                            };
                            ix.apply(&update).unwrap();
                            m.mirrored.clear();
                            lost.clear();
                            m.source = 0;
                        } else if incarnation > 0 {
                            let late = RunUpdate {
                                source_topic_id: id(incarnation - 1),
                                ..RunUpdate::runs("t", 0, vec![Run { source_start: 0, target_start: m.target + 100, length: 50 }], Cursor { source_next: 50, target_next: m.target + 150 })
                            };
                            ix.apply(&late).unwrap();
                        }
                    }
                }
                if op >= 5 {
                    // Everything is in the index now: it must match the model.
                    prop_assert_eq!(ix.cursor("t", 0).unwrap(), Some(m.cursor()));
                    m.check_translation(&ix, "t", 0)?;
                    let have: Vec<(i64, i64)> = ix.lost("t", 0).unwrap().iter().map(|l| (l.source_start, l.source_end)).collect();
                    prop_assert_eq!(have, lost.clone());
                    prop_assert_eq!(ix.incarnation("t", 0).unwrap(), id(incarnation));
                }
            }
        }
    }
}
