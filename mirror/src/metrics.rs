//! What the daemon knows about its flows, shared between the tasks that learn it and the
//! HTTP server that shows it: Prometheus text for `/metrics`, JSON for `/status`.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// How many of a partition's most recent lost ranges `/status` shows (the index keeps all).
pub const LOST_RANGES_SHOWN: usize = 16;
/// The window over which the retention headroom's rates are measured.
pub const HEADROOM_WINDOW_MS: i64 = 300_000;
/// The least time between two samples of the headroom's window.
const HEADROOM_SAMPLE_SPACING_MS: i64 = 5_000;
/// The least span of samples a headroom estimate needs.
const HEADROOM_MIN_SPAN_MS: i64 = 10_000;

/// Seconds until the source's log start offset passes the mirror's cursor, if both keep the
/// rates they had over `samples` (`(time ms, log start offset, cursor)`, oldest first): `0`
/// if it already has, `+inf` if the cursor keeps ahead (it moves as fast as the log start or
/// faster), `None` without samples spanning [`HEADROOM_MIN_SPAN_MS`].
pub fn retention_headroom_seconds(samples: &VecDeque<(i64, i64, i64)>) -> Option<f64> {
    let (first, last) = (samples.front()?, samples.back()?);
    let span_s = (last.0 - first.0) as f64 / 1000.0;
    if last.0 - first.0 < HEADROOM_MIN_SPAN_MS {
        return None;
    }
    let room = (last.2 - last.1) as f64;
    if room <= 0.0 {
        return Some(0.0);
    }
    let log_start_rate = (last.1 - first.1) as f64 / span_s;
    let cursor_rate = (last.2 - first.2) as f64 / span_s;
    if log_start_rate <= cursor_rate {
        return Some(f64::INFINITY);
    }
    Some(room / (log_start_rate - cursor_rate))
}

/// Upper bounds (seconds) of the replication-latency histogram's buckets.
pub const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// All flows of the daemon.
#[derive(Debug, Default)]
pub struct Metrics {
    flows: Mutex<BTreeMap<String, Arc<FlowMetrics>>>,
}

impl Metrics {
    /// The metrics of flow `name`, created on first use.
    pub fn flow(&self, name: &str, source: &str, target: &str) -> Arc<FlowMetrics> {
        let mut flows = self.flows.lock().unwrap_or_else(|e| e.into_inner());
        flows
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(FlowMetrics {
                    name: name.to_string(),
                    source: source.to_string(),
                    target: target.to_string(),
                    ..FlowMetrics::default()
                })
            })
            .clone()
    }

    fn all(&self) -> Vec<Arc<FlowMetrics>> {
        let flows = self.flows.lock().unwrap_or_else(|e| e.into_inner());
        flows.values().cloned().collect()
    }

    /// The JSON `/status` document.
    pub fn status(&self) -> Status {
        let now = now_ms();
        Status {
            now_ms: now,
            flows: self.all().iter().map(|f| f.status(now)).collect(),
        }
    }

    /// The Prometheus text exposition for `/metrics`.
    pub fn prometheus(&self) -> String {
        let now = now_ms();
        let flows = self.all();
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, rows: &mut dyn FnMut(&mut String)| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            rows(&mut out);
        };
        family(
            "strait_mirror_records_total",
            "counter",
            "Records written to the target and acknowledged.",
            &mut |o| {
                for f in &flows {
                    let _ = writeln!(
                        o,
                        "strait_mirror_records_total{{flow=\"{}\"}} {}",
                        f.name,
                        f.records_total.load(Ordering::Relaxed)
                    );
                }
            },
        );
        family(
            "strait_mirror_bytes_total",
            "counter",
            "Bytes of keys, values and headers written to the target and acknowledged.",
            &mut |o| {
                for f in &flows {
                    let _ = writeln!(
                        o,
                        "strait_mirror_bytes_total{{flow=\"{}\"}} {}",
                        f.name,
                        f.bytes_total.load(Ordering::Relaxed)
                    );
                }
            },
        );
        family(
            "strait_mirror_records_skipped_total",
            "counter",
            "Records not mirrored because they originated at the target.",
            &mut |o| {
                for f in &flows {
                    let _ = writeln!(
                        o,
                        "strait_mirror_records_skipped_total{{flow=\"{}\"}} {}",
                        f.name,
                        f.skipped_total.load(Ordering::Relaxed)
                    );
                }
            },
        );
        family(
            "strait_mirror_errors_total",
            "counter",
            "Errors by kind; each one restarted the task that met it.",
            &mut |o| {
                for f in &flows {
                    for (kind, n) in f.errors.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                        let _ = writeln!(
                            o,
                            "strait_mirror_errors_total{{flow=\"{}\",kind=\"{kind}\"}} {n}",
                            f.name
                        );
                    }
                }
            },
        );
        let partitions: Vec<(Arc<FlowMetrics>, Vec<PartitionStatus>)> = flows
            .iter()
            .map(|f| (f.clone(), f.partitions(now)))
            .collect();
        family(
            "strait_mirror_lag_records",
            "gauge",
            "Source end offset minus the next source offset to mirror, per partition.",
            &mut |o| {
                for (f, ps) in &partitions {
                    for p in ps {
                        if let Some(lag) = p.lag_records {
                            let _ = writeln!(o, "strait_mirror_lag_records{{flow=\"{}\",topic=\"{}\",partition=\"{}\"}} {lag}", f.name, p.topic, p.partition);
                        }
                    }
                }
            },
        );
        family(
            "strait_mirror_lag_seconds",
            "gauge",
            "Age of the oldest source record not yet mirrored (0 when caught up), per partition.",
            &mut |o| {
                for (f, ps) in &partitions {
                    for p in ps {
                        if let Some(lag) = p.lag_seconds {
                            let _ = writeln!(o, "strait_mirror_lag_seconds{{flow=\"{}\",topic=\"{}\",partition=\"{}\"}} {lag:.3}", f.name, p.topic, p.partition);
                        }
                    }
                }
            },
        );
        family(
            "strait_mirror_topic_refused",
            "gauge",
            "1 for each source topic whose remote topic the target refused to create (retried with backoff).",
            &mut |o| {
                for f in &flows {
                    for r in lock(&f.refused).values() {
                        let _ = writeln!(o, "strait_mirror_topic_refused{{flow=\"{}\",topic=\"{}\"}} 1", f.name, r.topic);
                    }
                }
            },
        );
        family(
            "strait_mirror_records_lost_total",
            "counter",
            "Records the source deleted (its retention overtook the mirror) before they were mirrored, per partition.",
            &mut |o| {
                for (f, ps) in &partitions {
                    for p in ps {
                        let _ = writeln!(o, "strait_mirror_records_lost_total{{flow=\"{}\",topic=\"{}\",partition=\"{}\"}} {}", f.name, p.topic, p.partition, p.records_lost);
                    }
                }
            },
        );
        family(
            "strait_mirror_partition_stopped",
            "gauge",
            "1 while a partition is stopped for a reason other than a divergence (its mirror topic was recreated on the target and the flow says on_target_topic_recreated: stop).",
            &mut |o| {
                for (f, ps) in &partitions {
                    for p in ps {
                        let v = u8::from(p.stopped.is_some());
                        let _ = writeln!(o, "strait_mirror_partition_stopped{{flow=\"{}\",topic=\"{}\",partition=\"{}\"}} {v}", f.name, p.topic, p.partition);
                    }
                }
            },
        );
        family(
            "strait_mirror_partition_diverged",
            "gauge",
            "1 while a partition is stopped because its source no longer holds what was mirrored (truncated below the cursor, or recreated); resolve with `strait mirror resolve-divergence`.",
            &mut |o| {
                for (f, ps) in &partitions {
                    for p in ps {
                        let v = u8::from(p.diverged.is_some());
                        let _ = writeln!(o, "strait_mirror_partition_diverged{{flow=\"{}\",topic=\"{}\",partition=\"{}\"}} {v}", f.name, p.topic, p.partition);
                    }
                }
            },
        );
        family(
            "strait_mirror_source_recreated_total",
            "counter",
            "Times the source topic of a partition was found deleted and recreated under the same name (a new topic id), since the daemon started.",
            &mut |o| {
                for (f, ps) in &partitions {
                    for p in ps {
                        let _ = writeln!(o, "strait_mirror_source_recreated_total{{flow=\"{}\",topic=\"{}\",partition=\"{}\"}} {}", f.name, p.topic, p.partition, p.source_recreations);
                    }
                }
            },
        );
        family(
            "strait_mirror_target_recreated_total",
            "counter",
            "Times the remote topic of a partition was found deleted and recreated on the target (a new topic id), since the daemon started; the source is then copied again from its log start.",
            &mut |o| {
                for (f, ps) in &partitions {
                    for p in ps {
                        let _ = writeln!(o, "strait_mirror_target_recreated_total{{flow=\"{}\",topic=\"{}\",partition=\"{}\"}} {}", f.name, p.topic, p.partition, p.target_recreations);
                    }
                }
            },
        );
        family(
            "strait_mirror_foreign_records_total",
            "counter",
            "Records found in a mirror topic that the flow did not write (a foreign write), per source partition, since the daemon started.",
            &mut |o| {
                for (f, ps) in &partitions {
                    for p in ps {
                        let _ = writeln!(o, "strait_mirror_foreign_records_total{{flow=\"{}\",topic=\"{}\",partition=\"{}\"}} {}", f.name, p.topic, p.partition, p.foreign_records);
                    }
                }
            },
        );
        family(
            "strait_mirror_retention_headroom_seconds",
            "gauge",
            "Seconds until the source's retention overtakes the mirror's cursor at the rates of the last five minutes (+Inf: the cursor keeps ahead), per partition held.",
            &mut |o| {
                for (f, ps) in &partitions {
                    for p in ps.iter().filter(|p| p.assigned) {
                        let value = match p.headroom {
                            Some(h) if h.is_infinite() => "+Inf".to_string(),
                            Some(h) => format!("{h:.1}"),
                            None => continue,
                        };
                        let _ = writeln!(o, "strait_mirror_retention_headroom_seconds{{flow=\"{}\",topic=\"{}\",partition=\"{}\"}} {value}", f.name, p.topic, p.partition);
                    }
                }
            },
        );
        family(
            "strait_mirror_replication_latency_seconds",
            "histogram",
            "From a record's source timestamp to the target's acknowledgement.",
            &mut |o| {
                for f in &flows {
                    let h = f.latency.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    let mut cumulative = 0;
                    for (i, le) in LATENCY_BUCKETS_SECONDS.iter().enumerate() {
                        cumulative += h.counts[i];
                        let _ = writeln!(o, "strait_mirror_replication_latency_seconds_bucket{{flow=\"{}\",le=\"{le}\"}} {cumulative}", f.name);
                    }
                    cumulative += h.counts[LATENCY_BUCKETS_SECONDS.len()];
                    let _ = writeln!(o, "strait_mirror_replication_latency_seconds_bucket{{flow=\"{}\",le=\"+Inf\"}} {cumulative}", f.name);
                    let _ = writeln!(
                        o,
                        "strait_mirror_replication_latency_seconds_sum{{flow=\"{}\"}} {:.6}",
                        f.name, h.sum_seconds
                    );
                    let _ = writeln!(
                        o,
                        "strait_mirror_replication_latency_seconds_count{{flow=\"{}\"}} {cumulative}",
                        f.name
                    );
                }
            },
        );
        family(
            "strait_mirror_checkpoint_groups",
            "gauge",
            "Consumer groups the last completed checkpoint round covered.",
            &mut |o| {
                for f in &flows {
                    let _ = writeln!(
                        o,
                        "strait_mirror_checkpoint_groups{{flow=\"{}\"}} {}",
                        f.name,
                        f.checkpoint_groups.load(Ordering::Relaxed)
                    );
                }
            },
        );
        family(
            "strait_mirror_checkpoint_round_seconds",
            "gauge",
            "How long the last completed checkpoint round took.",
            &mut |o| {
                for f in &flows {
                    if f.last_checkpoint_ms.load(Ordering::Relaxed) > 0 {
                        let _ = writeln!(
                            o,
                            "strait_mirror_checkpoint_round_seconds{{flow=\"{}\"}} {:.3}",
                            f.name,
                            f.checkpoint_round_ms.load(Ordering::Relaxed) as f64 / 1_000.0
                        );
                    }
                }
            },
        );
        family(
            "strait_mirror_checkpoint_age_seconds",
            "gauge",
            "Time since the last completed checkpoint round.",
            &mut |o| {
                for f in &flows {
                    if let Some(age) =
                        age_seconds(now, f.last_checkpoint_ms.load(Ordering::Relaxed))
                    {
                        let _ = writeln!(
                            o,
                            "strait_mirror_checkpoint_age_seconds{{flow=\"{}\"}} {age:.3}",
                            f.name
                        );
                    }
                }
            },
        );
        family(
            "strait_mirror_heartbeat_age_seconds",
            "gauge",
            "Age of the newest source heartbeat that reached the target.",
            &mut |o| {
                for f in &flows {
                    if let Some(age) = age_seconds(now, f.last_heartbeat_ms.load(Ordering::Relaxed))
                    {
                        let _ = writeln!(
                            o,
                            "strait_mirror_heartbeat_age_seconds{{flow=\"{}\"}} {age:.3}",
                            f.name
                        );
                    }
                }
            },
        );
        out
    }
}

fn age_seconds(now: i64, at_ms: u64) -> Option<f64> {
    (at_ms > 0).then(|| (now - at_ms as i64).max(0) as f64 / 1000.0)
}

/// A latency histogram with [`LATENCY_BUCKETS_SECONDS`] plus `+Inf`.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    sum_seconds: f64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            counts: vec![0; LATENCY_BUCKETS_SECONDS.len() + 1],
            sum_seconds: 0.0,
        }
    }
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        let i = LATENCY_BUCKETS_SECONDS
            .iter()
            .position(|le| seconds <= *le)
            .unwrap_or(LATENCY_BUCKETS_SECONDS.len());
        self.counts[i] += 1;
        self.sum_seconds += seconds;
    }
}

/// One flow's counters and per-partition progress.
#[derive(Debug, Default)]
pub struct FlowMetrics {
    name: String,
    source: String,
    target: String,
    /// Records acknowledged by the target.
    pub records_total: AtomicU64,
    /// Their bytes.
    pub bytes_total: AtomicU64,
    /// Records skipped because they came from the target.
    pub skipped_total: AtomicU64,
    /// Unix ms of the last completed checkpoint round (0: none yet).
    pub last_checkpoint_ms: AtomicU64,
    /// Consumer groups the last completed checkpoint round covered.
    pub checkpoint_groups: AtomicU64,
    /// How long the last completed checkpoint round took, in ms.
    pub checkpoint_round_ms: AtomicU64,
    /// Source timestamp (Unix ms) of the newest mirrored heartbeat (0: none yet).
    pub last_heartbeat_ms: AtomicU64,
    /// Set while an operator has the flow stopped (`POST /flows/NAME/stop`).
    pub stopped_by_operator: std::sync::atomic::AtomicBool,
    errors: Mutex<BTreeMap<String, u64>>,
    latency: Mutex<Histogram>,
    partitions: Mutex<BTreeMap<(String, i32), PartitionProgress>>,
    topics: Mutex<BTreeMap<String, TopicState>>,
    refused: Mutex<BTreeMap<String, RefusedTopic>>,
}

/// What the pump and the consumer's statistics know of one source partition.
#[derive(Debug, Clone, Default)]
pub struct PartitionProgress {
    /// The source's log start offset, from the consumer's statistics.
    pub source_start_offset: Option<i64>,
    /// The source's end offset (high watermark), from the consumer's statistics.
    pub source_end_offset: Option<i64>,
    /// Every source offset below this is mirrored (or skipped on purpose).
    pub mirrored_offset: Option<i64>,
    /// Source timestamp of the last mirrored record.
    pub last_mirrored_timestamp_ms: Option<i64>,
    /// When this daemon got the partition (Unix ms).
    pub assigned_at_ms: i64,
    /// Whether this daemon's pump holds the partition now.
    pub assigned: bool,
    /// Records the source deleted before the mirror read them, over the partition's life.
    pub lost_records: i64,
    /// The most recent lost ranges (at most [`LOST_RANGES_SHOWN`]).
    pub lost: Vec<crate::offsets::Lost>,
    /// Records in the mirror topic that the flow did not write, seen since this daemon
    /// started.
    pub foreign_records: i64,
    /// `(time ms, source log start offset, cursor)` over [`HEADROOM_WINDOW_MS`].
    pub headroom_samples: VecDeque<(i64, i64, i64)>,
    /// The source no longer holds what was mirrored: the partition is stopped.
    pub diverged: Option<crate::offsets::Divergence>,
    /// Why the partition is stopped other than by a divergence (its target topic was
    /// recreated and the flow says `on_target_topic_recreated: stop`).
    pub stopped: Option<String>,
    /// Times this daemon found the source topic recreated (a new topic id).
    pub recreations: u64,
    /// Times this daemon found the target topic recreated.
    pub target_recreations: u64,
    /// The last recreation found.
    pub recreated: Option<Recreated>,
}

/// One record the target acknowledged.
#[derive(Debug, Clone, Copy)]
pub struct Acked {
    /// Its key, value and header bytes.
    pub bytes: u64,
    /// Its source timestamp (Unix ms).
    pub timestamp_ms: i64,
    /// From its source timestamp to the acknowledgement.
    pub latency_seconds: Option<f64>,
}

/// A source topic whose remote topic the target refused to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedTopic {
    /// Source name.
    pub topic: String,
    /// The remote name it would have.
    pub remote_topic: String,
    /// What the target (or the mirror's check) said.
    pub reason: String,
    /// Attempts so far.
    pub attempts: u32,
    /// When it is tried again (Unix ms).
    pub next_attempt_ms: i64,
}

/// A mirrored topic as the topic syncer sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicState {
    /// The topic's name on the target.
    pub remote_topic: String,
    /// Partitions on the source.
    pub source_partitions: i32,
    /// Partitions on the target.
    pub target_partitions: i32,
    /// The source topic's id (KIP-516), if the source reports one: a new id under the same
    /// name is a recreated topic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_topic_id: Option<String>,
    /// The remote topic's id on the target, if the target reports one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_topic_id: Option<String>,
}

/// `/status`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    /// When the document was made (Unix ms).
    pub now_ms: i64,
    /// Every flow.
    pub flows: Vec<FlowStatus>,
}

/// One flow in `/status`.
#[derive(Debug, Serialize, Deserialize)]
pub struct FlowStatus {
    /// Flow name.
    pub name: String,
    /// Source alias.
    pub source: String,
    /// Target alias.
    pub target: String,
    /// Records mirrored by this daemon since it started.
    pub records_total: u64,
    /// Bytes mirrored by this daemon since it started.
    pub bytes_total: u64,
    /// Seconds since the last checkpoint round, if any.
    pub checkpoint_age_seconds: Option<f64>,
    /// Consumer groups the last checkpoint round covered.
    #[serde(default)]
    pub checkpoint_groups: u64,
    /// How long the last checkpoint round took, if one completed.
    #[serde(default)]
    pub checkpoint_round_seconds: Option<f64>,
    /// Seconds since the newest mirrored heartbeat was written on the source, if any.
    pub heartbeat_age_seconds: Option<f64>,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// Whether an operator stopped the flow (it stays stopped across restarts until started).
    #[serde(default)]
    pub stopped: bool,
    /// Mirrored topics with their partitions.
    pub topics: Vec<TopicStatus>,
    /// Source topics the target refused to take, retried with backoff.
    #[serde(default)]
    pub refused_topics: Vec<RefusedTopic>,
}

/// One topic in `/status`.
#[derive(Debug, Serialize, Deserialize)]
pub struct TopicStatus {
    /// Source name.
    pub topic: String,
    /// Target name.
    pub remote_topic: String,
    /// Partitions on the source.
    pub source_partitions: i32,
    /// Partitions on the target.
    pub target_partitions: i32,
    /// The partitions this daemon mirrors or has mirrored.
    pub partitions: Vec<PartitionStatus>,
}

/// One partition in `/status` and the lag gauges.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionStatus {
    /// Source topic.
    pub topic: String,
    /// Partition number (the same on both sides).
    pub partition: i32,
    /// Whether this daemon holds it now.
    pub assigned: bool,
    /// Source end offset (high watermark), if known.
    pub source_end_offset: Option<i64>,
    /// Next source offset to mirror.
    pub mirrored_offset: Option<i64>,
    /// `source_end_offset - mirrored_offset`.
    pub lag_records: Option<i64>,
    /// Age of the oldest unmirrored record, estimated as the time since the newest mirrored
    /// record's source timestamp (or since the partition was assigned); 0 when caught up.
    pub lag_seconds: Option<f64>,
    /// Records the source deleted before the mirror read them.
    #[serde(default)]
    pub records_lost: i64,
    /// The most recent lost ranges, oldest first.
    #[serde(default)]
    pub lost: Vec<crate::offsets::Lost>,
    /// Records in the mirror topic that the flow did not write (a foreign write), seen by this
    /// daemon since it started.
    #[serde(default)]
    pub foreign_records: i64,
    /// Seconds until the source's retention overtakes the cursor at the current rates; `null`
    /// when the cursor keeps ahead of the source's log start or there are too few samples
    /// yet (the Prometheus gauge says `+Inf` for the former).
    #[serde(default)]
    pub retention_headroom_seconds: Option<f64>,
    /// Set while the partition is stopped because the source no longer holds what was
    /// mirrored from it (truncated below the cursor, or recreated); `strait mirror
    /// resolve-divergence` resumes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diverged: Option<crate::offsets::Divergence>,
    /// Set while the partition is stopped for another reason, which it gives (its mirror
    /// topic was recreated on the target under `on_target_topic_recreated: stop`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// Times this daemon found the source topic deleted and recreated under the same name.
    #[serde(default)]
    pub source_recreations: u64,
    /// Times this daemon found the target (remote) topic deleted and recreated.
    #[serde(default)]
    pub target_recreations: u64,
    /// The last recreation found: the new topic id and the target offset from which the
    /// target holds the new incarnation's copies (the old one's stay below it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recreated: Option<Recreated>,
    #[serde(skip)]
    headroom: Option<f64>,
}

/// A topic found recreated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recreated {
    /// Which topic: the source's or the target's.
    pub side: crate::topic_ids::Side,
    /// The new topic's id.
    pub topic_id: String,
    /// The first target offset of the new incarnation's copies.
    pub target_offset: i64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FlowMetrics {
    /// Counts one error of `kind`.
    pub fn error(&self, kind: &str) {
        *lock(&self.errors).entry(kind.to_string()).or_default() += 1;
    }

    /// Records a partition's progress: `mirrored_offset` is its new cursor, and `acked` the
    /// record that moved it there (`None` for a record skipped on purpose).
    pub fn mirrored(
        &self,
        topic: &str,
        partition: i32,
        mirrored_offset: i64,
        acked: Option<Acked>,
    ) {
        if let Some(a) = &acked {
            self.records_total.fetch_add(1, Ordering::Relaxed);
            self.bytes_total.fetch_add(a.bytes, Ordering::Relaxed);
            if let Some(l) = a.latency_seconds {
                lock(&self.latency).observe(l);
            }
        }
        let mut parts = lock(&self.partitions);
        let p = parts.entry((topic.to_string(), partition)).or_default();
        p.mirrored_offset = Some(mirrored_offset);
        if let Some(a) = acked {
            p.last_mirrored_timestamp_ms = Some(a.timestamp_ms);
        }
    }

    /// Sets the source watermarks of a partition (from the consumer's statistics), and
    /// samples the retention headroom.
    pub fn source_watermarks(&self, topic: &str, partition: i32, start: i64, end: i64) {
        let now = now_ms();
        let mut parts = lock(&self.partitions);
        if let Some(p) = parts.get_mut(&(topic.to_string(), partition)) {
            if start >= 0 {
                p.source_start_offset = Some(start);
                if let Some(cursor) = p.mirrored_offset {
                    let due = p
                        .headroom_samples
                        .back()
                        .is_none_or(|last| now - last.0 >= HEADROOM_SAMPLE_SPACING_MS);
                    if due {
                        p.headroom_samples.push_back((now, start, cursor));
                        while p
                            .headroom_samples
                            .front()
                            .is_some_and(|first| now - first.0 > HEADROOM_WINDOW_MS)
                        {
                            p.headroom_samples.pop_front();
                        }
                    }
                }
            }
            if end >= 0 {
                p.source_end_offset = Some(end);
            }
        }
    }

    /// Records a range the source deleted before the mirror read it.
    pub fn lost(&self, topic: &str, partition: i32, lost: &crate::offsets::Lost) {
        let mut parts = lock(&self.partitions);
        let p = parts.entry((topic.to_string(), partition)).or_default();
        if p.lost.iter().any(|l| l.source_start == lost.source_start) {
            return;
        }
        p.lost_records += lost.records();
        p.lost.push(*lost);
        if p.lost.len() > LOST_RANGES_SHOWN {
            p.lost.remove(0);
        }
    }

    /// Counts a recreation of a partition's source or target topic (new id `topic_id`);
    /// the copies of what the source holds now start at `target_offset`.
    pub fn recreated(
        &self,
        topic: &str,
        partition: i32,
        side: crate::topic_ids::Side,
        topic_id: &str,
        target_offset: i64,
    ) {
        let mut parts = lock(&self.partitions);
        let p = parts.entry((topic.to_string(), partition)).or_default();
        match side {
            crate::topic_ids::Side::Source => p.recreations += 1,
            crate::topic_ids::Side::Target => p.target_recreations += 1,
        }
        p.recreated = Some(Recreated {
            side,
            topic_id: topic_id.to_string(),
            target_offset,
        });
        p.mirrored_offset = None;
    }

    /// Marks a partition stopped by a divergence of its source, or no longer.
    pub fn diverged(&self, topic: &str, partition: i32, d: Option<&crate::offsets::Divergence>) {
        let mut parts = lock(&self.partitions);
        parts
            .entry((topic.to_string(), partition))
            .or_default()
            .diverged = d.copied();
    }

    /// Marks a partition stopped for `reason`, or no longer.
    pub fn stopped(&self, topic: &str, partition: i32, reason: Option<String>) {
        let mut parts = lock(&self.partitions);
        parts
            .entry((topic.to_string(), partition))
            .or_default()
            .stopped = reason;
    }

    /// Counts `records` someone else wrote into a partition's mirror topic.
    pub fn foreign(&self, topic: &str, partition: i32, records: i64) {
        let mut parts = lock(&self.partitions);
        parts
            .entry((topic.to_string(), partition))
            .or_default()
            .foreign_records += records;
    }

    /// Sets a partition's lost ranges from the index (every range ever recorded there).
    pub fn set_lost(&self, topic: &str, partition: i32, lost: &[crate::offsets::Lost]) {
        let mut parts = lock(&self.partitions);
        let p = parts.entry((topic.to_string(), partition)).or_default();
        p.lost_records = lost.iter().map(crate::offsets::Lost::records).sum();
        p.lost = lost[lost.len().saturating_sub(LOST_RANGES_SHOWN)..].to_vec();
    }

    /// The watermarks last seen for a partition.
    pub fn watermarks(&self, topic: &str, partition: i32) -> (Option<i64>, Option<i64>) {
        let parts = lock(&self.partitions);
        parts
            .get(&(topic.to_string(), partition))
            .map_or((None, None), |p| {
                (p.source_start_offset, p.source_end_offset)
            })
    }

    /// The cursor shown for a partition, if any.
    pub fn mirrored_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        lock(&self.partitions)
            .get(&(topic.to_string(), partition))
            .and_then(|p| p.mirrored_offset)
    }

    /// Marks the partitions this daemon's pump holds now.
    pub fn assigned(&self, assigned: &[(String, i32)]) {
        let now = now_ms();
        let mut parts = lock(&self.partitions);
        for p in parts.values_mut() {
            p.assigned = false;
        }
        for key in assigned {
            let p = parts.entry(key.clone()).or_default();
            if !p.assigned {
                p.assigned_at_ms = now;
            }
            p.assigned = true;
        }
    }

    /// Replaces the refused-topic table.
    pub fn set_refused(&self, refused: BTreeMap<String, RefusedTopic>) {
        *lock(&self.refused) = refused;
    }

    /// Replaces the mirrored-topic table.
    pub fn set_topics(&self, topics: BTreeMap<String, TopicState>) {
        *lock(&self.topics) = topics;
    }

    /// Every known partition with its lag.
    fn partitions(&self, now: i64) -> Vec<PartitionStatus> {
        let parts = lock(&self.partitions);
        parts
            .iter()
            .map(|((topic, partition), p)| {
                let lag_records = match (p.source_end_offset, p.mirrored_offset) {
                    (Some(end), Some(m)) => Some((end - m).max(0)),
                    _ => None,
                };
                let lag_seconds = lag_records.map(|lag| {
                    if lag == 0 {
                        0.0
                    } else {
                        let since = p.last_mirrored_timestamp_ms.unwrap_or(p.assigned_at_ms);
                        (now - since).max(0) as f64 / 1000.0
                    }
                });
                let headroom = retention_headroom_seconds(&p.headroom_samples);
                PartitionStatus {
                    topic: topic.clone(),
                    partition: *partition,
                    assigned: p.assigned,
                    source_end_offset: p.source_end_offset,
                    mirrored_offset: p.mirrored_offset,
                    lag_records,
                    lag_seconds,
                    records_lost: p.lost_records,
                    foreign_records: p.foreign_records,
                    lost: p.lost.clone(),
                    retention_headroom_seconds: headroom.filter(|h| h.is_finite()),
                    diverged: p.diverged,
                    stopped: p.stopped.clone(),
                    source_recreations: p.recreations,
                    target_recreations: p.target_recreations,
                    recreated: p.recreated.clone(),
                    headroom,
                }
            })
            .collect()
    }

    fn status(&self, now: i64) -> FlowStatus {
        let partitions = self.partitions(now);
        let topics = lock(&self.topics).clone();
        FlowStatus {
            name: self.name.clone(),
            source: self.source.clone(),
            target: self.target.clone(),
            records_total: self.records_total.load(Ordering::Relaxed),
            bytes_total: self.bytes_total.load(Ordering::Relaxed),
            checkpoint_age_seconds: age_seconds(
                now,
                self.last_checkpoint_ms.load(Ordering::Relaxed),
            ),
            checkpoint_groups: self.checkpoint_groups.load(Ordering::Relaxed),
            checkpoint_round_seconds: (self.last_checkpoint_ms.load(Ordering::Relaxed) > 0)
                .then(|| self.checkpoint_round_ms.load(Ordering::Relaxed) as f64 / 1_000.0),
            heartbeat_age_seconds: age_seconds(now, self.last_heartbeat_ms.load(Ordering::Relaxed)),
            errors: lock(&self.errors).clone(),
            stopped: self.stopped_by_operator.load(Ordering::Relaxed),
            refused_topics: lock(&self.refused).values().cloned().collect(),
            topics: topics
                .into_iter()
                .map(|(topic, t)| TopicStatus {
                    partitions: partitions
                        .iter()
                        .filter(|p| p.topic == topic)
                        .cloned()
                        .collect(),
                    topic,
                    remote_topic: t.remote_topic,
                    source_partitions: t.source_partitions,
                    target_partitions: t.target_partitions,
                })
                .collect(),
        }
    }
}

fn seconds(s: Option<f64>) -> String {
    s.map_or_else(|| "-".to_string(), |s| format!("{s:.1} s"))
}

fn offset(o: Option<i64>) -> String {
    o.map_or_else(|| "-".to_string(), |o| o.to_string())
}

/// `/status` as a table a person reads (`strait mirror status`).
pub fn render_status(status: &Status) -> String {
    let mut out = String::new();
    if status.flows.is_empty() {
        out.push_str("no flows\n");
    }
    for f in &status.flows {
        let _ = writeln!(
            out,
            "flow {} ({} -> {}): {} records, {} bytes mirrored; checkpoint age {} ({} groups, round {}), heartbeat age {}",
            f.name, f.source, f.target, f.records_total, f.bytes_total,
            seconds(f.checkpoint_age_seconds), f.checkpoint_groups,
            seconds(f.checkpoint_round_seconds), seconds(f.heartbeat_age_seconds)
        );
        if !f.errors.is_empty() {
            let errors: Vec<String> = f.errors.iter().map(|(k, n)| format!("{k}={n}")).collect();
            let _ = writeln!(out, "  errors: {}", errors.join(", "));
        }
        for r in &f.refused_topics {
            let _ = writeln!(
                out,
                "  REFUSED {} -> {} ({} attempts, next in {:.0} s): {}",
                r.topic,
                r.remote_topic,
                r.attempts,
                ((r.next_attempt_ms - status.now_ms).max(0) as f64) / 1000.0,
                r.reason
            );
        }
        let _ = writeln!(
            out,
            "  {:<32} {:>9} {:>14} {:>14} {:>12} {:>10} {:>10}",
            "topic -> remote", "partition", "source end", "mirrored", "lag records", "lag", "lost"
        );
        for t in &f.topics {
            let name = format!("{} -> {}", t.topic, t.remote_topic);
            if t.partitions.is_empty() {
                let _ = writeln!(
                    out,
                    "  {name:<32} {:>9}",
                    format!("({}/{})", t.source_partitions, t.target_partitions)
                );
            }
            for p in &t.partitions {
                let held = if p.assigned { "" } else { " (not held)" };
                let _ = writeln!(
                    out,
                    "  {name:<32} {:>9} {:>14} {:>14} {:>12} {:>10} {:>10}{held}",
                    p.partition,
                    offset(p.source_end_offset),
                    offset(p.mirrored_offset),
                    offset(p.lag_records),
                    seconds(p.lag_seconds),
                    p.records_lost
                );
                if let Some(r) = &p.recreated {
                    let side = match r.side {
                        crate::topic_ids::Side::Source => "source topic",
                        crate::topic_ids::Side::Target => "target topic",
                    };
                    let _ = writeln!(
                        out,
                        "    RECREATED {side} (now id {}): the source is copied from its start to target offset {} on; what lies below it is no longer translated",
                        r.topic_id, r.target_offset
                    );
                }
                if let Some(reason) = &p.stopped {
                    let _ = writeln!(out, "    STOPPED: {reason}");
                }
                if let Some(d) = &p.diverged {
                    let _ = writeln!(
                        out,
                        "    DIVERGED from source offset {} (mirrored to {}, source end {}): stopped; resume with `strait mirror resolve-divergence --flow {} --topic {} --partition {}`",
                        d.source_offset, d.mirrored_to, d.source_end_offset, f.name, t.topic, p.partition
                    );
                }
                for l in &p.lost {
                    let _ = writeln!(
                        out,
                        "    LOST source offsets {}..{} ({} records): the source's log start was {} when found",
                        l.source_start,
                        l.source_end,
                        l.records(),
                        l.log_start_offset
                    );
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_has_counters_lag_and_a_cumulative_histogram() {
        let m = Metrics::default();
        let f = m.flow("a-to-b", "a", "b");
        f.assigned(&[("orders".into(), 0)]);
        f.source_watermarks("orders", 0, 0, 10);
        for (i, latency) in [0.003, 0.2, 1000.0].into_iter().enumerate() {
            let acked = Acked {
                bytes: 100,
                timestamp_ms: now_ms(),
                latency_seconds: Some(latency),
            };
            f.mirrored("orders", 0, i as i64 + 1, Some(acked));
        }
        f.error("target_delivery");
        let text = m.prometheus();
        assert!(
            text.contains("strait_mirror_records_total{flow=\"a-to-b\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("strait_mirror_bytes_total{flow=\"a-to-b\"} 300"),
            "{text}"
        );
        assert!(
            text.contains(
                "strait_mirror_lag_records{flow=\"a-to-b\",topic=\"orders\",partition=\"0\"} 7"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "strait_mirror_replication_latency_seconds_bucket{flow=\"a-to-b\",le=\"0.005\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "strait_mirror_replication_latency_seconds_bucket{flow=\"a-to-b\",le=\"0.25\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "strait_mirror_replication_latency_seconds_bucket{flow=\"a-to-b\",le=\"+Inf\"} 3"
            ),
            "{text}"
        );
        assert!(
            text.contains("strait_mirror_errors_total{flow=\"a-to-b\",kind=\"target_delivery\"} 1"),
            "{text}"
        );
        let status = serde_json::to_value(m.status()).unwrap();
        assert_eq!(status["flows"][0]["records_total"], 3);
    }

    fn samples(points: &[(i64, i64, i64)]) -> VecDeque<(i64, i64, i64)> {
        points.iter().copied().collect()
    }

    #[test]
    fn retention_headroom_compares_the_log_start_with_the_cursor() {
        // The log start gains 10 records/s, the cursor 2/s (a slow mirror): 800 records of
        // room shrink by 8/s.
        let h = retention_headroom_seconds(&samples(&[(0, 1_000, 2_000), (60_000, 1_600, 2_120)]));
        assert_eq!(h, Some((2_120.0 - 1_600.0) / 8.0));
        // A stopped mirror: the room shrinks at the log start's pace.
        let h = retention_headroom_seconds(&samples(&[(0, 0, 500), (10_000, 100, 500)]));
        assert_eq!(h, Some(40.0));
        // A mirror that keeps up: never.
        let h = retention_headroom_seconds(&samples(&[(0, 0, 500), (10_000, 100, 700)]));
        assert_eq!(h, Some(f64::INFINITY));
        // Already overtaken.
        let h = retention_headroom_seconds(&samples(&[(0, 0, 500), (10_000, 600, 500)]));
        assert_eq!(h, Some(0.0));
        // Too short a span to tell.
        assert_eq!(
            retention_headroom_seconds(&samples(&[(0, 0, 1), (5_000, 5, 1)])),
            None
        );
        assert_eq!(retention_headroom_seconds(&samples(&[])), None);
    }

    #[test]
    fn lost_records_are_counted_per_partition_once_per_range() {
        let m = Metrics::default();
        let f = m.flow("a-to-b", "a", "b");
        f.assigned(&[("orders".into(), 0), ("orders".into(), 1)]);
        f.set_topics(BTreeMap::from([(
            "orders".to_string(),
            TopicState {
                remote_topic: "a.orders".into(),
                source_partitions: 2,
                target_partitions: 2,
                source_topic_id: None,
                target_topic_id: None,
            },
        )]));
        let lost = crate::offsets::Lost {
            source_start: 10,
            source_end: 40,
            log_start_offset: 40,
            detected_ms: 1,
        };
        f.lost("orders", 0, &lost);
        f.lost("orders", 0, &lost);
        let text = m.prometheus();
        assert!(
            text.contains("strait_mirror_records_lost_total{flow=\"a-to-b\",topic=\"orders\",partition=\"0\"} 30"),
            "{text}"
        );
        assert!(
            text.contains("strait_mirror_records_lost_total{flow=\"a-to-b\",topic=\"orders\",partition=\"1\"} 0"),
            "{text}"
        );
        let status = m.status();
        let table = render_status(&status);
        assert!(
            table.contains("LOST source offsets 10..40 (30 records)"),
            "{table}"
        );
        // The index is the record of every loss; a restart takes its ranges.
        f.set_lost(
            "orders",
            1,
            &[
                lost,
                crate::offsets::Lost {
                    source_start: 50,
                    source_end: 51,
                    ..lost
                },
            ],
        );
        let text = m.prometheus();
        assert!(
            text.contains("strait_mirror_records_lost_total{flow=\"a-to-b\",topic=\"orders\",partition=\"1\"} 31"),
            "{text}"
        );
    }
}
