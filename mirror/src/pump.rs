//! The record pump of one flow: a source consumer in the flow's group and an idempotent
//! acks=all target producer.
//!
//! Records keep their partition, key, value, headers and timestamp, and gain an origin header.
//! Acknowledgements are taken in send order, and each one extends the partition's current
//! offset run or starts a new one. Every [`FLUSH_INTERVAL_MS`] the runs and cursors of the
//! partitions that moved are appended to the flow's offset-runs topic on the target and,
//! once that is acknowledged, the source offsets are committed: a crash can repeat records on
//! the target but never skip one, and a committed source offset is always translatable. The
//! pump does not stop for that acknowledgement (it keeps copying and takes it as one more
//! event of its loop); the next flush waits until it came.
//!
//! Source offsets the pump never received are a gap in the partition. The pump never lets the
//! consumer jump silently: its `auto.offset.reset` is always `earliest` (a `latest` flow
//! anchors a partition the index has never seen at the source's end itself), and every gap is
//! checked against the source's log start offset, in acknowledgement order: the part below it
//! was deleted by the source's retention before the mirror read it and is recorded as
//! [`Lost`]; the rest held no records. A partition that is caught up moves its cursor to the
//! consumer's position, past transaction markers at its end.
//!
//! Several daemons on the same flow split the partitions through the source cluster's group
//! protocol (the group `strait-mirror-<flow>`). A partition's starting point is the index's
//! cursor (kept current by the [`IndexFollower`]), so a daemon that takes a partition over
//! continues where the previous owner's last flush left it. An owner that loses a partition
//! is fenced before the next one writes to it (see [`crate::fence`]): a revoked pump waits
//! for its records' acknowledgements inside the rebalance, and a pump that was stopped or cut
//! off past its session sends nothing more until a commit proves it still a member.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesOrdered, StreamExt};
use rdkafka::bindings as rd;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureRecord, Producer, PurgeConfig};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::clients::{
    admin, blocking, client_config, parse_source_header, send_to_partition_zero, source_header,
    watermarks, Admin, MirrorContext, MirrorError, PollConsumer, ORIGIN_HEADER, SOURCE_HEADER,
};
use crate::config::{ClusterConfig, FlowConfig, OnTargetRecreated, StartPosition};
use crate::fence::{
    FreezeWatch, HEARTBEAT_INTERVAL_MS, PUMP_MESSAGE_TIMEOUT_MS, REVOKE_DRAIN_TIMEOUT_MS,
    SESSION_TIMEOUT_MS,
};
use crate::follower::IndexFollower;
use crate::metrics::{now_ms, Acked, FlowMetrics, TopicState};
use crate::offsets::{lost_in_gap, Cursor, Divergence, FlowIndex, Lost, Run, RunUpdate};
use crate::topic_ids::Side;

/// How often acknowledged progress is recorded and source offsets committed.
pub const FLUSH_INTERVAL_MS: u64 = 200;
/// How long a record waits for its target partition to be created by the topic syncer.
const TARGET_PARTITION_WAIT_MS: u64 = 30_000;
/// How long a stopping pump waits for acknowledgements of what it already sent.
const DRAIN_TIMEOUT_MS: u64 = 30_000;
/// How long the final commit waits to learn whether the source answers at all.
const SOURCE_PROBE_TIMEOUT_MS: u64 = 1_000;
/// How long a partition start waits for the id of a target topic the syncer has just created
/// (once per pump run: after a miss, the rest of the run does not wait).
const TARGET_ID_WAIT_MS: u64 = 5_000;
/// How long a partition's source end must stay below what was read, with nothing new read,
/// before the pump asks the source whether it was truncated.
const END_BELOW_IDLE_MS: i64 = 3_000;
/// How long reading a target partition's tail at a takeover may take.
const RECONCILE_TIMEOUT_MS: u64 = 30_000;

/// The topic the heartbeat emitter writes on every source cluster.
pub const HEARTBEATS_TOPIC: &str = "heartbeats";

type Assigned = BTreeSet<(String, i32)>;

/// Runs a blocking librdkafka call from async code that cannot await it (a rebalance
/// callback, the pump's own loop): on a multi-threaded runtime the worker's other tasks move
/// to another thread meanwhile.
fn block_here<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Feeds the consumer's statistics and assignment to the flow's metrics and the pump, and
/// fences the pump's producer when partitions go away.
struct PumpContext {
    flow: Arc<str>,
    metrics: Arc<FlowMetrics>,
    assigned: watch::Sender<Assigned>,
    producer: crate::clients::Producer,
    /// Set when the group took the partitions away without a clean revocation.
    fenced: Arc<AtomicBool>,
    /// Counts assignments: after one, the consumer starts its partitions at their committed
    /// offsets, which may be behind what the pump read.
    assignments: Arc<AtomicU64>,
}

impl PumpContext {
    /// Waits until every record handed to the producer is acknowledged or failed, so the
    /// next owner of the revoked partitions finds all of them on the target.
    fn drain_producer(&self) {
        let started = std::time::Instant::now();
        let flush = || {
            self.producer
                .flush(Duration::from_millis(REVOKE_DRAIN_TIMEOUT_MS))
        };
        // This runs inside the consumer's poll, on an async worker thread.
        let flushed = block_here(flush);
        match flushed {
            Ok(()) => {
                tracing::info!(flow = %self.flow, elapsed_ms = started.elapsed().as_millis() as u64,
                    "partitions revoked; every record sent was acknowledged first")
            }
            Err(e) => {
                // Not reached in practice: every queued record fails after the message
                // timeout, and this waits longer. Said loudly if it is.
                self.metrics.error("revoke_drain");
                tracing::warn!(flow = %self.flow, error = %e,
                    "partitions revoked with records still unacknowledged; the next owner may find them late");
                self.fenced.store(true, Ordering::SeqCst);
            }
        }
    }
}

impl ClientContext for PumpContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        crate::clients::log_client_line(level, facility, message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        crate::clients::log_client_error(&error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if *partition >= 0 {
                    self.metrics
                        .source_watermarks(topic, *partition, p.lo_offset, p.hi_offset);
                }
            }
        }
    }
}

impl ConsumerContext for PumpContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else {
            return;
        };
        if revoked.count() == 0 {
            return;
        }
        if consumer.assignment_lost() {
            // The group already gave these partitions to someone else: nothing queued may
            // reach the target now.
            self.producer.purge(PurgeConfig::default().queue());
            self.fenced.store(true, Ordering::SeqCst);
            self.metrics.error("fenced");
            tracing::warn!(flow = %self.flow, partitions = revoked.count(),
                "the group took this pump's partitions while it was away; its queued records are dropped and it starts over");
        } else {
            self.drain_producer();
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let assigned: Assigned = match consumer.assignment() {
            Ok(tpl) => tpl
                .elements()
                .iter()
                .map(|e| (e.topic().to_string(), e.partition()))
                .collect(),
            Err(_) => BTreeSet::new(),
        };
        if matches!(rebalance, Rebalance::Assign(_)) {
            self.assignments.fetch_add(1, Ordering::SeqCst);
        }
        let kind = match rebalance {
            Rebalance::Assign(_) => "assign",
            Rebalance::Revoke(_) => "revoke",
            Rebalance::Error(_) => "error",
        };
        tracing::info!(partitions = assigned.len(), kind, "pump assignment changed");
        let list: Vec<(String, i32)> = assigned.iter().cloned().collect();
        self.metrics.assigned(&list);
        let _ = self.assigned.send(assigned);
    }
}

/// The acknowledged state of one source partition held by this pump.
struct PartitionState {
    remote: String,
    /// Everything below `cursor.source_next` is acknowledged (or skipped).
    cursor: Cursor,
    /// The next source offset to send; at or beyond the cursor.
    sent_next: i64,
    open: Option<Run>,
    closed: Vec<Run>,
    dirty: bool,
    in_flight: usize,
    /// Whether the first record after the state was made has been seen (a start elsewhere
    /// than the cursor is then corrected once by seeking to it).
    started: bool,
    /// Whether the consumer's position for this partition follows the records the pump took
    /// (false from a seek until the next record arrives).
    position_trusted: bool,
    /// Ranges found lost since the last flush.
    lost: Vec<Lost>,
    /// The source no longer holds what was mirrored: the partition is stopped (paused, its
    /// records dropped) until an operator resolves it.
    diverged: Option<Divergence>,
    /// Whether `diverged` still has to be recorded in the runs topic.
    divergence_unrecorded: bool,
    /// The target topic was recreated and the flow says `on_target_topic_recreated: stop`:
    /// the partition is paused, its records dropped, nothing recorded, until the daemon
    /// restarts with another setting.
    halted: bool,
    /// `(sent_next, since ms)`: how long nothing new was read.
    idle_since: (i64, i64),
    /// The `sent_next` at which the source's end was last checked against it.
    end_checked_at: i64,
    /// The ids of the source and target topic incarnations this state mirrors between, where
    /// the clusters report ids.
    ids: Ids,
    /// The source leader epoch of the record just below the cursor, where known (recorded
    /// with the runs).
    acked_epoch: Option<i32>,
    /// The source leader epoch of the record just below `sent_next`, where known: what the
    /// position is validated against when the partition resumes (KIP-320).
    sent_epoch: Option<i32>,
    /// Whether the first record taken since the state was made (or the partition assigned
    /// again) was looked at for a leader epoch change.
    epoch_checked: bool,
}

/// The ids of a partition's source and target topics (KIP-516), where known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Ids {
    source: Option<String>,
    target: Option<String>,
}

impl PartitionState {
    /// A partition at `cursor`, nothing sent past it yet, not started.
    fn new(remote: String, cursor: Cursor, ids: Ids) -> PartitionState {
        PartitionState {
            remote,
            cursor,
            sent_next: cursor.source_next,
            open: None,
            closed: Vec::new(),
            dirty: false,
            in_flight: 0,
            started: false,
            position_trusted: false,
            lost: Vec::new(),
            diverged: None,
            divergence_unrecorded: false,
            halted: false,
            idle_since: (-1, 0),
            end_checked_at: -1,
            ids,
            acked_epoch: None,
            sent_epoch: None,
            epoch_checked: false,
        }
    }

    /// Records that `source_offset` landed at `target_offset`.
    /// Records that `source_offset` is on the target at `target_offset`. Returns the target
    /// offsets between the cursor and `target_offset`, if any: records someone else wrote
    /// into the mirror topic (the flow's producer writes a partition's records contiguously,
    /// and one owner at a time), which the runs then step over.
    fn acknowledged(&mut self, source_offset: i64, target_offset: i64) -> Option<(i64, i64)> {
        let foreign = (target_offset > self.cursor.target_next)
            .then_some((self.cursor.target_next, target_offset));
        match &mut self.open {
            Some(run) if run.source_end() == source_offset && run.target_end() == target_offset => {
                run.length += 1;
            }
            _ => {
                self.closed.extend(self.open.take());
                self.open = Some(Run {
                    source_start: source_offset,
                    target_start: target_offset,
                    length: 1,
                });
            }
        }
        debug_assert!(
            source_offset >= self.cursor.source_next,
            "acknowledgements arrive in send order"
        );
        self.cursor = Cursor {
            source_next: source_offset + 1,
            target_next: target_offset + 1,
        };
        self.dirty = true;
        foreign
    }

    /// Records that `source_offset` was processed but not mirrored.
    fn skipped(&mut self, source_offset: i64) {
        self.closed.extend(self.open.take());
        self.cursor.source_next = source_offset + 1;
        self.dirty = true;
    }

    /// Records a gap `from .. to` in the source offsets received, judged against the source's
    /// log start offset when it was found: returns the part that was lost, if any. The cursor
    /// moves to `to` either way (the next record is at `to`, or the consumer is there).
    fn gap(&mut self, from: i64, to: i64, log_start_offset: i64, now_ms: i64) -> Option<Lost> {
        assert_eq!(
            from, self.cursor.source_next,
            "a gap starts where everything before it was acknowledged"
        );
        assert!(to > from, "an empty gap {from}..{to}");
        self.closed.extend(self.open.take());
        let lost = lost_in_gap(from, to, log_start_offset).map(|(start, end)| Lost {
            source_start: start,
            source_end: end,
            log_start_offset,
            detected_ms: now_ms,
        });
        self.lost.extend(lost);
        self.cursor.source_next = to;
        self.dirty = true;
        lost
    }

    /// Whether the source's end as the consumer's statistics last saw it, `stats_end`, has
    /// stayed below what was read for [`END_BELOW_IDLE_MS`] without a new record, once per
    /// position: worth asking the source itself. (A record read since the statistics were
    /// taken puts `sent_next` past a stale end for a moment; a partition at its end gets
    /// fresh statistics within a second.)
    fn end_below_sent(&mut self, stats_end: Option<i64>, now_ms: i64) -> bool {
        if self.idle_since.0 != self.sent_next {
            self.idle_since = (self.sent_next, now_ms);
        }
        let below = self.diverged.is_none()
            && !self.halted
            && self.in_flight == 0
            && stats_end.is_some_and(|end| end < self.sent_next)
            && now_ms - self.idle_since.1 >= END_BELOW_IDLE_MS
            && self.end_checked_at != self.sent_next;
        if below {
            self.end_checked_at = self.sent_next;
        }
        below
    }

    /// Stops the partition: the source holds something else than what was mirrored from
    /// `source_offset` on; its end is `source_end_offset`.
    fn diverge(&mut self, source_offset: i64, source_end_offset: i64) {
        let d = Divergence {
            source_offset: source_offset.min(self.cursor.source_next),
            mirrored_to: self.sent_next.max(self.cursor.source_next),
            source_end_offset,
            detected_ms: now_ms(),
        };
        self.diverged = Some(d);
        self.divergence_unrecorded = true;
        self.dirty = true;
    }

    /// A partition that is caught up (the consumer's `position` is the source's end and
    /// nothing is in flight) but whose cursor is behind it: the consumer passed offsets that
    /// held no data for the pump (transaction markers, aborted records). Returns the gap to
    /// record (`sent_next .. position`) and marks it sent, or `None`.
    fn caught_up_gap(&mut self, position: i64, source_end: Option<i64>) -> Option<(i64, i64)> {
        if !self.position_trusted
            || self.diverged.is_some()
            || self.halted
            || self.in_flight > 0
            || position <= self.sent_next
            || source_end != Some(position)
        {
            return None;
        }
        let from = self.sent_next;
        self.sent_next = position;
        Some((from, position))
    }
}

/// Moves the consumer to `offset` of a partition carrying `leader_epoch`, the source leader
/// epoch of the record before it: librdkafka then asks the leader where that epoch ends
/// before it fetches (KIP-320's validation), and if that is below `offset` (the log was cut
/// and maybe written again) it goes back there.
fn seek_validated<C: ConsumerContext>(
    consumer: &StreamConsumer<C>,
    topic: &str,
    partition: i32,
    offset: i64,
    leader_epoch: i32,
) -> Result<(), MirrorError> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
        .map_err(MirrorError::kafka("building a seek"))?;
    // SAFETY: `tpl` holds exactly the element just added, which it owns; librdkafka only
    // sets a field of it.
    unsafe { rd::rd_kafka_topic_partition_set_leader_epoch((*tpl.ptr()).elems, leader_epoch) };
    let done = consumer
        .seek_partitions(tpl, Duration::from_millis(5_000))
        .map_err(MirrorError::kafka(format!(
            "seeking {topic}/{partition} to {offset}"
        )))?;
    if let Some(e) = done.elements().first().and_then(|e| e.error().err()) {
        return Err(MirrorError::kafka(format!(
            "seeking {topic}/{partition} to {offset}"
        ))(e));
    }
    Ok(())
}

/// A sent record (or a skipped one) waiting for its turn in acknowledgement order.
struct Sent {
    topic: Arc<str>,
    partition: i32,
    source_offset: i64,
    /// The source leader epoch of the record (-1: unknown, or a gap).
    leader_epoch: i32,
    bytes: u64,
    timestamp_ms: Option<i64>,
    result: SentResult,
}

enum SentResult {
    Acknowledged(i64),
    Skipped,
    /// A gap from `source_offset` to `to`, with the source's log start offset read when it was
    /// found.
    Gap {
        to: i64,
        log_start_offset: Result<i64, MirrorError>,
    },
    Failed(KafkaError),
}

type SentFuture = Pin<Box<dyn Future<Output = Sent> + Send>>;

/// The record pump of one flow.
pub struct Pump {
    flow: Arc<FlowConfig>,
    source: ClusterConfig,
    target: ClusterConfig,
    index: FlowIndex,
    follower: IndexFollower,
    topics: watch::Receiver<BTreeMap<String, TopicState>>,
    metrics: Arc<FlowMetrics>,
    /// The partitions this pump holds, for the checkpoint task.
    pub assigned: watch::Receiver<Assigned>,
    assigned_tx: watch::Sender<Assigned>,
}

impl Pump {
    /// A pump for `flow`, mirroring the topics the syncer publishes on `topics`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        flow: Arc<FlowConfig>,
        source: ClusterConfig,
        target: ClusterConfig,
        index: FlowIndex,
        follower: IndexFollower,
        topics: watch::Receiver<BTreeMap<String, TopicState>>,
        metrics: Arc<FlowMetrics>,
    ) -> Pump {
        let (assigned_tx, assigned) = watch::channel(BTreeSet::new());
        Pump {
            flow,
            source,
            target,
            index,
            follower,
            topics,
            metrics,
            assigned,
            assigned_tx,
        }
    }

    /// Runs until `stop` turns true (then drains, flushes and commits) or an error that
    /// needs a fresh start (the caller restarts the pump, which resumes from the index).
    pub async fn run(&mut self, mut stop: watch::Receiver<bool>) -> Result<(), MirrorError> {
        let flow = self.flow.clone();
        let producer = crate::clients::target_producer(
            &self.target,
            flow.in_flight_bytes_limit * 2,
            PUMP_MESSAGE_TIMEOUT_MS,
            Some(&flow.writer_client_id()),
        )?;
        let fenced = Arc::new(AtomicBool::new(false));
        let assignments = Arc::new(AtomicU64::new(0));
        let context = PumpContext {
            flow: Arc::from(flow.name.as_str()),
            metrics: self.metrics.clone(),
            assigned: self.assigned_tx.clone(),
            producer: producer.clone(),
            fenced: fenced.clone(),
            assignments: assignments.clone(),
        };
        let mut consumer_config = client_config(
            &self.source,
            &[
                ("group.id", &flow.consumer_group()),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                // Never a silent jump forward: a position the source no longer has goes back
                // to its log start, and the gap is judged (see the module's documentation).
                ("auto.offset.reset", "earliest"),
                ("statistics.interval.ms", "1000"),
                // New partitions of a subscribed topic are noticed within seconds.
                ("topic.metadata.refresh.interval.ms", "2000"),
                ("isolation.level", "read_committed"),
            ],
        );
        // A killed daemon's partitions move to the others after 10 s, not 45. Set after the
        // cluster's client overrides: the fence depends on these against the producer's
        // message timeout.
        consumer_config
            .set("session.timeout.ms", SESSION_TIMEOUT_MS.to_string())
            .set("heartbeat.interval.ms", HEARTBEAT_INTERVAL_MS.to_string());
        let consumer: StreamConsumer<PumpContext> = consumer_config
            .create_with_context(context)
            .map_err(MirrorError::kafka(format!(
                "creating the source consumer of flow {}",
                flow.name
            )))?;
        let source_admin = Arc::new(admin(&self.source)?);
        let mut run = PumpRun {
            source_admin,
            target_reader: None,
            pump: self,
            consumer,
            producer,
            states: HashMap::new(),
            in_flight: FuturesOrdered::new(),
            in_flight_bytes: 0,
            subscribed: BTreeSet::new(),
            runs_topic: flow.offset_runs_topic(),
            recording: None,
            freeze: FreezeWatch::start(),
            confirmed_freezes: 0,
            fenced,
            assignments,
            seen_assignments: 0,
            target_ids_missing: false,
        };
        run.subscribe()?;
        let mut flush = tokio::time::interval(Duration::from_millis(FLUSH_INTERVAL_MS));
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut topics = run.pump.topics.clone();
        let result = loop {
            if run.fenced.load(Ordering::SeqCst) {
                break Err(MirrorError::Fenced(
                    "the group gave this pump's partitions to another member".into(),
                ));
            }
            let room = run.in_flight_bytes < flow.in_flight_bytes_limit;
            let step: Result<(), MirrorError> = tokio::select! {
                _ = async { let _ = stop.wait_for(|s| *s).await; } => break Ok(()),
                Some(sent) = run.in_flight.next(), if !run.in_flight.is_empty() => run.acknowledged(sent),
                message = run.consumer.recv(), if room => match message {
                    Ok(m) => {
                        // SAFETY: `m` is a live message of this consumer, read before it is
                        // detached (which copies it and lets librdkafka's go).
                        let leader_epoch = unsafe { rd::rd_kafka_message_leader_epoch(m.ptr()) };
                        let m = m.detach();
                        run.mirror(m, leader_epoch).await
                    }
                    Err(e) => {
                        tracing::warn!(flow = %flow.name, error = %e, "source consumer");
                        run.pump.metrics.error("source_consume");
                        Ok(())
                    }
                },
                recorded = wait_recorded(&mut run.recording), if run.recording.is_some() => {
                    run.recording = None;
                    run.recorded(recorded)
                }
                // One recording at a time: a tick while one is pending waits for the next.
                _ = flush.tick(), if run.recording.is_none() => run.flush().await,
                Ok(()) = topics.changed() => run.subscribe(),
            };
            if let Err(e) = step {
                break Err(e);
            }
        };
        if let Err(MirrorError::Fenced(why)) = &result {
            // Another pump owns these partitions now: record nothing, commit nothing, and
            // let nothing queued reach the target.
            run.producer.purge(PurgeConfig::default().queue());
            tracing::warn!(flow = %flow.name, reason = %why, "pump fenced; starting over as a new member");
            return result;
        }
        // Whatever happened, record what was acknowledged so a restart repeats as little as
        // possible; on a clean stop first wait for what is in flight.
        if result.is_ok() {
            let drain = async {
                while let Some(sent) = run.in_flight.next().await {
                    run.acknowledged(sent)?;
                }
                Ok::<(), MirrorError>(())
            };
            match tokio::time::timeout(Duration::from_millis(DRAIN_TIMEOUT_MS), drain).await {
                Ok(r) => r?,
                Err(_) => {
                    tracing::warn!(flow = %flow.name, "records still unacknowledged at shutdown; they are sent again on restart")
                }
            }
        }
        // The recording in progress, then one of everything acknowledged since.
        let mut flushed = match run.recording.take() {
            Some(pending) => {
                let recorded = pending.await;
                run.recorded(recorded)
            }
            None => Ok(()),
        };
        if flushed.is_ok() {
            flushed = run.flush().await;
        }
        if flushed.is_ok() {
            if let Some(pending) = run.recording.take() {
                let recorded = pending.await;
                flushed = run.recorded(recorded);
            }
        }
        let committed = run.commit_sync();
        result.and(flushed).and(committed)
    }
}

struct PumpRun<'a> {
    pump: &'a mut Pump,
    /// For the source's watermarks (gaps, `latest` anchors).
    source_admin: Arc<Admin>,
    /// Reads target partitions past the recorded cursor at a takeover (made on first use).
    target_reader: Option<Arc<PollConsumer>>,
    consumer: StreamConsumer<PumpContext>,
    producer: crate::clients::Producer,
    states: HashMap<(Arc<str>, i32), PartitionState>,
    in_flight: FuturesOrdered<SentFuture>,
    in_flight_bytes: u64,
    subscribed: BTreeSet<String>,
    runs_topic: String,
    /// Offset runs sent to the runs topic and not acknowledged yet; resolves to the source
    /// offsets to commit once they are.
    recording: Option<Recording>,
    /// Notices stalls of the process, after which membership is confirmed before sending.
    freeze: Arc<FreezeWatch>,
    /// The freeze count as of the last confirmation.
    confirmed_freezes: u64,
    /// Set by the rebalance callback when the partitions were lost.
    fenced: Arc<AtomicBool>,
    /// Assignments made by the rebalance callback, and the count the states were last
    /// reset for: a partition given again starts over at its committed offset, and the
    /// pump seeks it to its cursor as at its first start.
    assignments: Arc<AtomicU64>,
    seen_assignments: u64,
    /// A target topic's id could not be read at a partition's start: the rest of this run
    /// does not wait for ids again.
    target_ids_missing: bool,
}

/// The acknowledgement of one flush's records in the runs topic, and then the source offsets
/// those records make safe to commit.
type Recording = Pin<Box<dyn Future<Output = Result<Vec<(String, i32, i64)>, MirrorError>> + Send>>;

/// Waits for the pending recording (the select loop polls this only while there is one).
async fn wait_recorded(
    recording: &mut Option<Recording>,
) -> Result<Vec<(String, i32, i64)>, MirrorError> {
    match recording.as_mut() {
        Some(pending) => pending.await,
        None => std::future::pending().await,
    }
}

fn record_bytes(m: &rdkafka::message::OwnedMessage) -> u64 {
    let headers = m.headers().map_or(0, |h| {
        h.iter()
            .map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len))
            .sum::<usize>()
    });
    (m.key().map_or(0, <[u8]>::len) + m.payload().map_or(0, <[u8]>::len) + headers) as u64
}

/// The records of `flow` in `remote`/`partition` from target offset `from` to the partition's
/// current end, as `(target offset, source offset)` (blocking). Reads at most `limit_bytes`
/// of records; what lies beyond is left (and may be sent again).
fn read_tail(
    reader: &PollConsumer,
    remote: &str,
    partition: i32,
    from: i64,
    flow: &str,
    limit_bytes: u64,
) -> Result<Vec<(i64, i64)>, MirrorError> {
    // A partition the topic syncer just created may be unknown to this client's metadata
    // for a moment (see `target_end`).
    let known_by = std::time::Instant::now() + Duration::from_millis(TARGET_PARTITION_WAIT_MS);
    let end = loop {
        match watermarks(reader.client(), remote, partition) {
            Ok((_, end)) => break end,
            Err(e) if std::time::Instant::now() >= known_by => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    };
    if from >= end {
        return Ok(Vec::new());
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(remote, partition, Offset::Offset(from))
        .map_err(MirrorError::kafka("reading the target's tail"))?;
    reader.assign(&tpl).map_err(MirrorError::kafka(format!(
        "assigning {remote}/{partition}"
    )))?;
    let deadline = std::time::Instant::now() + Duration::from_millis(RECONCILE_TIMEOUT_MS);
    let mut next = from;
    let mut bytes = 0u64;
    let mut found = Vec::new();
    let result = loop {
        if next >= end {
            break Ok(found);
        }
        if std::time::Instant::now() >= deadline {
            break Err(MirrorError::Other(format!(
                "reading {remote}/{partition} from {from} to {end} took more than {RECONCILE_TIMEOUT_MS} ms"
            )));
        }
        match reader.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(e)) => {
                break Err(MirrorError::Kafka {
                    what: format!("reading {remote}/{partition}"),
                    source: e,
                })
            }
            Some(Ok(m)) => {
                if m.topic() != remote || m.partition() != partition || m.offset() < next {
                    continue;
                }
                next = m.offset() + 1;
                bytes += (m.payload_len() + m.key().map_or(0, <[u8]>::len)) as u64;
                let source = m.headers().and_then(|h| {
                    h.iter()
                        .filter(|h| h.key == SOURCE_HEADER)
                        .find_map(|h| parse_source_header(flow, h.value?))
                });
                if let Some(source) = source {
                    found.push((m.offset(), source));
                }
                if bytes > limit_bytes {
                    tracing::warn!(remote, partition, from, end, read_to = next, "the target's tail is longer than the reconciliation reads; records past it may be sent again");
                    break Ok(found);
                }
            }
        }
    };
    let _ = reader.unassign();
    result
}

/// The source partition's end offset if it stays below `offset` (it was truncated below
/// what was read): read up to three times over a second, since a leader elected a moment
/// ago may report an end that its followers have not confirmed yet.
async fn source_end_below(
    admin: Arc<Admin>,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<Option<i64>, MirrorError> {
    let mut end = offset;
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let (admin, t) = (admin.clone(), topic.to_string());
        end = blocking(move || watermarks(admin.inner(), &t, partition))
            .await?
            .1;
        if end >= offset {
            return Ok(None);
        }
    }
    Ok(Some(end))
}

/// The id of a target topic, read from the target (tries for [`TARGET_ID_WAIT_MS`]; `None`
/// if it stays unknown).
async fn target_topic_id(producer: crate::clients::Producer, remote: &str) -> Option<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(TARGET_ID_WAIT_MS);
    loop {
        let (producer, names) = (producer.clone(), vec![remote.to_string()]);
        let ids = blocking(move || {
            crate::topic_ids::topic_ids(
                producer.client(),
                &names,
                Duration::from_millis(TARGET_ID_WAIT_MS / 2),
            )
        })
        .await;
        if let Ok(mut ids) = ids {
            if let Some(id) = ids.remove(remote) {
                return Some(id);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Whether the topic syncer now publishes another id than `held` for either side of a
/// source topic (an id unknown on either part counts as no change).
fn ids_changed(topics: &BTreeMap<String, TopicState>, topic: &str, held: &Ids) -> bool {
    let changed = |published: Option<&String>, held: Option<&String>| {
        held.is_some() && published.is_some_and(|id| Some(id) != held)
    };
    topics.get(topic).is_some_and(|t| {
        changed(t.source_topic_id.as_ref(), held.source.as_ref())
            || changed(t.target_topic_id.as_ref(), held.target.as_ref())
    })
}

/// The target partition's end offset. A partition the topic syncer just created may be
/// unknown to the producer's metadata for a moment (librdkafka then answers "unknown
/// partition"), so this retries, bounded by [`TARGET_PARTITION_WAIT_MS`].
async fn target_end(
    producer: crate::clients::Producer,
    remote: &str,
    partition: i32,
) -> Result<i64, MirrorError> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(TARGET_PARTITION_WAIT_MS);
    loop {
        let (p, r) = (producer.clone(), remote.to_string());
        match blocking(move || watermarks(p.client(), &r, partition)).await {
            Ok((_, high)) => return Ok(high),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(e) => {
                tracing::debug!(remote, partition, error = %e, "target partition not known yet; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

impl PumpRun<'_> {
    fn subscribe(&mut self) -> Result<(), MirrorError> {
        let topics: BTreeSet<String> = self.pump.topics.borrow().keys().cloned().collect();
        if topics == self.subscribed {
            return Ok(());
        }
        if topics.is_empty() {
            self.consumer.unsubscribe();
        } else {
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            self.consumer
                .subscribe(&names)
                .map_err(MirrorError::kafka("subscribing to the mirrored topics"))?;
        }
        tracing::info!(flow = %self.pump.flow.name, topics = topics.len(), "pump subscription updated");
        self.subscribed = topics;
        Ok(())
    }

    /// Makes the state of a partition the pump has not held since it last started: the
    /// index's cursor once the follower has caught up, else an anchor at `first_offset` and
    /// the target partition's current end.
    async fn state_for(
        &mut self,
        topic: &Arc<str>,
        partition: i32,
        first_offset: i64,
    ) -> Result<(), MirrorError> {
        if self.states.contains_key(&(topic.clone(), partition)) {
            return Ok(());
        }
        self.pump.follower.caught_up().await?;
        let remote = self.pump.flow.remote_topic(topic);
        let (current_id, mut current_target_id) = self
            .pump
            .topics
            .borrow()
            .get(&**topic)
            .map_or((None, None), |t| {
                (t.source_topic_id.clone(), t.target_topic_id.clone())
            });
        let known_id = self.pump.index.incarnation(topic, partition)?;
        let known_target_id = self.pump.index.target_incarnation(topic, partition)?;
        if known_target_id.is_some() && current_target_id.is_none() && !self.target_ids_missing {
            // The topic syncer may have just created the remote topic and not learnt its id
            // yet: without it, a recreated target could not be told from the old one.
            current_target_id = target_topic_id(self.producer.clone(), &remote).await;
            self.target_ids_missing = current_target_id.is_none();
        }
        // Ids unknown this round are taken from the index, so that this state's updates name
        // the incarnation they belong to (and are ignored if it turns out replaced).
        let ids = Ids {
            source: current_id.clone().or_else(|| known_id.clone()),
            target: current_target_id
                .clone()
                .or_else(|| known_target_id.clone()),
        };
        // A recreated target under `stop` halts first, even if the source was recreated
        // too (a new source incarnation would record the new target id and copy into it).
        if let (Some(known), Some(current)) = (&known_target_id, &current_target_id) {
            if known != current
                && self.pump.flow.on_target_topic_recreated == OnTargetRecreated::Stop
            {
                let (known, current) = (known.clone(), current.clone());
                return self.halt(topic, partition, remote, &known, &current, ids);
            }
        }
        for (side, known, current) in [
            (Side::Source, &known_id, &current_id),
            (Side::Target, &known_target_id, &current_target_id),
        ] {
            if let (Some(known), Some(current)) = (known, current) {
                if known != current {
                    return self
                        .new_incarnation(topic, partition, first_offset, side, known, ids)
                        .await;
                }
            }
        }
        let state = match self.pump.index.cursor(topic, partition)? {
            Some(cursor) => {
                let lost = self.pump.index.lost(topic, partition)?;
                self.pump.metrics.set_lost(topic, partition, &lost);
                let mut state = PartitionState {
                    diverged: self.pump.index.divergence(topic, partition)?,
                    ..PartitionState::new(remote, cursor, ids.clone())
                };
                if state.diverged.is_none() {
                    // A source that ends below the cursor no longer holds what was mirrored
                    // (truncated, or deleted and recreated, while this pump was away).
                    if let Some(end) = source_end_below(
                        self.source_admin.clone(),
                        topic,
                        partition,
                        cursor.source_next,
                    )
                    .await?
                    {
                        state.diverge(end, end);
                    }
                }
                if state.diverged.is_none() {
                    let from = state.cursor.target_next;
                    self.reconcile(topic, partition, &mut state, from).await?;
                }
                // The recorded epoch belongs to the recorded cursor: one the reconciliation
                // moved is past records whose epochs are unknown.
                if state.cursor == cursor {
                    let epoch = self.pump.index.epoch(topic, partition)?;
                    state.acked_epoch = epoch;
                    state.sent_epoch = epoch;
                }
                state
            }
            None => {
                // A partition the index has never seen starts where the flow says: at the
                // first record the consumer has (earliest), or at the source's end now.
                let start = match self.pump.flow.start_position {
                    StartPosition::Earliest => first_offset,
                    StartPosition::Latest => {
                        let (admin, t) = (self.source_admin.clone(), topic.to_string());
                        let (_, end) =
                            blocking(move || watermarks(admin.inner(), &t, partition)).await?;
                        end.max(first_offset)
                    }
                };
                let target_end = target_end(self.producer.clone(), &remote, partition).await?;
                tracing::info!(flow = %self.pump.flow.name, topic = %topic, partition, source_offset = start, target_offset = target_end, "partition starts");
                let mut state = PartitionState {
                    dirty: true,
                    started: start == first_offset,
                    ..PartitionState::new(
                        remote,
                        Cursor {
                            source_next: start,
                            target_next: target_end,
                        },
                        ids.clone(),
                    )
                };
                // Unknown to the index, but this flow may have written there before the
                // index learned it (a daemon killed before its first record of runs, or an
                // index lost with its runs topic): the whole target partition is read.
                self.reconcile(topic, partition, &mut state, 0).await?;
                if state.sent_next != start {
                    state.started = false;
                }
                state
            }
        };
        match state.diverged {
            Some(d) => self.stop_diverged(topic, partition, &d, state.divergence_unrecorded),
            // Resolved since this daemon last held it, if it had diverged.
            None => self.pump.metrics.diverged(topic, partition, None),
        }
        self.pump.metrics.stopped(topic, partition, None);
        self.states.insert((topic.clone(), partition), state);
        Ok(())
    }

    /// The source or the target topic of a partition was deleted and recreated under the
    /// same name (its id changed from `known`): the old incarnation's runs are forgotten
    /// (recorded before anything is sent, so a restart cannot mistake one incarnation's
    /// records for the other's), and the source is copied from its log start, after
    /// everything the target partition holds. With the target recreated, what it held of
    /// source offsets the source has deleted since is gone from both: recorded as lost.
    async fn new_incarnation(
        &mut self,
        topic: &Arc<str>,
        partition: i32,
        first_offset: i64,
        side: Side,
        known: &str,
        ids: Ids,
    ) -> Result<(), MirrorError> {
        let remote = self.pump.flow.remote_topic(topic);
        let (admin, t) = (self.source_admin.clone(), topic.to_string());
        let (start, _) = blocking(move || watermarks(admin.inner(), &t, partition)).await?;
        let target_end = target_end(self.producer.clone(), &remote, partition).await?;
        let cursor = Cursor {
            source_next: start,
            target_next: target_end,
        };
        let first_mirrored = self
            .pump
            .index
            .runs(topic, partition)?
            .first()
            .map(|r| r.source_start);
        let lost: Vec<Lost> = match (side, first_mirrored) {
            (Side::Target, Some(first)) if first < start => vec![Lost {
                source_start: first,
                source_end: start,
                log_start_offset: start,
                detected_ms: now_ms(),
            }],
            _ => Vec::new(),
        };
        let update = RunUpdate {
            source_topic_id: ids.source.clone(),
            target_topic_id: ids.target.clone(),
            new_incarnation: true,
            lost: lost.clone(),
            ..RunUpdate::runs(topic, partition, Vec::new(), cursor)
        };
        self.check_fence()?;
        crate::follower::record(
            &self.pump.flow,
            &self.pump.target,
            &self.pump.index,
            &update,
            "recording a recreated topic",
        )
        .await?;
        let current = match side {
            Side::Source => ids.source.clone(),
            Side::Target => ids.target.clone(),
        }
        .unwrap_or_default();
        self.pump
            .metrics
            .recreated(topic, partition, side, &current, target_end);
        self.pump.metrics.diverged(topic, partition, None);
        self.pump.metrics.stopped(topic, partition, None);
        self.pump.metrics.set_lost(topic, partition, &lost);
        match side {
            Side::Source => {
                self.pump.metrics.error("source_recreated");
                tracing::warn!(flow = %self.pump.flow.name, topic = %topic, partition, old_topic_id = known, topic_id = %current,
                    source_offset = start, target_offset = target_end,
                    "the source topic was deleted and recreated under the same name: the old one's offsets no longer translate; the new one is copied from its start, after what the target holds");
            }
            Side::Target => {
                self.pump.metrics.error("target_recreated");
                tracing::warn!(flow = %self.pump.flow.name, topic = %topic, partition, remote = %remote, old_topic_id = known, topic_id = %current,
                    source_offset = start, lost_records = lost.iter().map(Lost::records).sum::<i64>(),
                    "the target topic was deleted and recreated under the same name: nothing translates into the old one any more; the source is copied again from its log start");
            }
        }
        let mut tpl = TopicPartitionList::new();
        let _ = tpl.add_partition(topic, partition);
        let _ = self.consumer.resume(&tpl);
        if start != first_offset {
            // Moved now, in case no record comes to move it by (see `mirror`); a seek that
            // cannot be made yet is made when the first record arrives.
            if let Err(e) = self.consumer.seek(
                topic,
                partition,
                Offset::Offset(start),
                Duration::from_millis(5_000),
            ) {
                tracing::debug!(topic = %topic, partition, error = %e, "seeking a new incarnation's start");
            }
        }
        let state = PartitionState {
            started: start == first_offset,
            ..PartitionState::new(remote, cursor, ids)
        };
        self.states.insert((topic.clone(), partition), state);
        Ok(())
    }

    /// Stops a partition whose target topic was recreated (id `known` in the index, `current`
    /// now) under `on_target_topic_recreated: stop`: paused, nothing sent or recorded, and
    /// the operator told once per time this pump takes the partition.
    fn halt(
        &mut self,
        topic: &Arc<str>,
        partition: i32,
        remote: String,
        known: &str,
        current: &str,
        ids: Ids,
    ) -> Result<(), MirrorError> {
        let cursor = self.pump.index.cursor(topic, partition)?.unwrap_or(Cursor {
            source_next: 0,
            target_next: 0,
        });
        let mut tpl = TopicPartitionList::new();
        let _ = tpl.add_partition(topic, partition);
        if let Err(e) = self.consumer.pause(&tpl) {
            tracing::debug!(topic = %topic, partition, error = %e, "pausing a stopped partition");
        }
        let reason = format!(
            "the mirror topic {remote} was deleted or recreated on the target (topic id {known}, now {current}); on_target_topic_recreated is stop: set it to recopy and restart to copy the source again into it"
        );
        tracing::error!(flow = %self.pump.flow.name, topic = %topic, partition, remote = %remote, old_topic_id = known, topic_id = current,
            "the target topic was recreated: this partition is stopped (on_target_topic_recreated: stop)");
        self.pump.metrics.error("target_recreated");
        self.pump.metrics.stopped(topic, partition, Some(reason));
        let state = PartitionState {
            halted: true,
            ..PartitionState::new(remote, cursor, ids)
        };
        self.states.insert((topic.clone(), partition), state);
        Ok(())
    }

    /// Whether the index knows another source or target topic id for a partition than the
    /// topic syncer publishes now.
    fn recreated_since_recorded(&self, topic: &str, partition: i32) -> Result<bool, MirrorError> {
        let (source, target) = self
            .pump
            .topics
            .borrow()
            .get(topic)
            .map_or((None, None), |t| {
                (t.source_topic_id.clone(), t.target_topic_id.clone())
            });
        Ok(self
            .pump
            .index
            .replaced(topic, partition, source.as_deref(), target.as_deref())?)
    }

    /// Stops a partition whose source diverged: pauses it, and tells the operator (once per
    /// divergence found; a divergence read back from the index is shown, not logged again).
    fn stop_diverged(&self, topic: &str, partition: i32, d: &Divergence, found_now: bool) {
        let mut tpl = TopicPartitionList::new();
        let _ = tpl.add_partition(topic, partition);
        if let Err(e) = self.consumer.pause(&tpl) {
            tracing::debug!(topic, partition, error = %e, "pausing a diverged partition");
        }
        self.pump.metrics.diverged(topic, partition, Some(d));
        if found_now {
            self.pump.metrics.error("source_diverged");
            tracing::error!(flow = %self.pump.flow.name, topic, partition,
                source_offset = d.source_offset, mirrored_to = d.mirrored_to, source_end_offset = d.source_end_offset,
                "the source partition no longer holds what was mirrored from it (truncated below the mirror's cursor, or deleted and recreated); \
                 the partition is stopped and nothing more is copied from it until `strait mirror resolve-divergence` resumes it");
        }
    }

    /// Takes into `state` what the target partition holds from `from_target_offset` on that
    /// this flow wrote at or past the cursor (a previous owner acknowledged it and stopped
    /// before recording it), so it is not sent again: each such record extends the runs and
    /// moves the cursor, exactly as its acknowledgement would have.
    async fn reconcile(
        &mut self,
        topic: &str,
        partition: i32,
        state: &mut PartitionState,
        from_target_offset: i64,
    ) -> Result<(), MirrorError> {
        let started = std::time::Instant::now();
        let reader = match &self.target_reader {
            Some(r) => r.clone(),
            None => {
                let flow = &self.pump.flow;
                let group = format!("strait-mirror-reconcile-{}", flow.name);
                let reader: PollConsumer = client_config(
                    &self.pump.target,
                    &[
                        // Assigned by hand, never joined or committed.
                        ("group.id", &group),
                        ("enable.auto.commit", "false"),
                        ("enable.partition.eof", "false"),
                        // A start below the target's log start reads from there.
                        ("auto.offset.reset", "earliest"),
                        // Partitions the syncer adds are known within seconds.
                        ("topic.metadata.refresh.interval.ms", "2000"),
                    ],
                )
                .create_with_context(MirrorContext)
                .map_err(MirrorError::kafka("creating the target reader"))?;
                let reader = Arc::new(reader);
                self.target_reader = Some(reader.clone());
                reader
            }
        };
        let (remote, from, flow) = (
            state.remote.clone(),
            from_target_offset,
            self.pump.flow.name.clone(),
        );
        let limit_bytes = self.pump.flow.in_flight_bytes_limit.saturating_mul(4);
        let found =
            blocking(move || read_tail(&reader, &remote, partition, from, &flow, limit_bytes))
                .await?;
        let found: Vec<(i64, i64)> = found
            .into_iter()
            .filter(|(_, source)| *source >= state.cursor.source_next)
            .collect();
        if found.is_empty() {
            return Ok(());
        }
        let log_start_offset = {
            let (admin, t) = (self.source_admin.clone(), topic.to_string());
            blocking(move || watermarks(admin.inner(), &t, partition))
                .await?
                .0
        };
        let mut taken = 0u64;
        for (target_offset, source_offset) in found {
            if source_offset < state.cursor.source_next {
                // Written twice by earlier owners; the first copy counts, and the next record
                // of this flow is expected after this one.
                state.cursor.target_next = state.cursor.target_next.max(target_offset + 1);
                continue;
            }
            if source_offset > state.cursor.source_next {
                let from = state.cursor.source_next;
                if let Some(lost) = state.gap(from, source_offset, log_start_offset, now_ms()) {
                    self.pump.metrics.lost(topic, partition, &lost);
                }
            }
            // Between this flow's records the target may hold copies earlier owners wrote
            // twice as well as foreign records; the reconcile does not tell them apart, the
            // steady state does.
            let _ = state.acknowledged(source_offset, target_offset);
            taken += 1;
        }
        state.sent_next = state.cursor.source_next;
        tracing::info!(flow = %self.pump.flow.name, topic, partition, records = taken,
            source_next = state.cursor.source_next, target_next = state.cursor.target_next,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "found records of this flow on the target past the recorded cursor; they are not sent again");
        Ok(())
    }

    async fn wait_for_target_partition(
        &mut self,
        topic: &str,
        partition: i32,
    ) -> Result<(), MirrorError> {
        let ready = |t: &BTreeMap<String, TopicState>| {
            t.get(topic)
                .is_some_and(|s| s.target_partitions > partition)
        };
        if ready(&self.pump.topics.borrow()) {
            return Ok(());
        }
        let mut topics = self.pump.topics.clone();
        let outcome = tokio::time::timeout(
            Duration::from_millis(TARGET_PARTITION_WAIT_MS),
            topics.wait_for(ready),
        )
        .await
        .map(|r| r.map(|_| ()));
        match outcome {
            Ok(Ok(())) => Ok(()),
            _ => Err(MirrorError::Other(format!(
                "partition {partition} of {topic} has no counterpart on the target after {TARGET_PARTITION_WAIT_MS} ms"
            ))),
        }
    }

    async fn mirror(
        &mut self,
        m: rdkafka::message::OwnedMessage,
        leader_epoch: i32,
    ) -> Result<(), MirrorError> {
        let topic: Arc<str> = Arc::from(m.topic());
        let partition = m.partition();
        let offset = m.offset();
        let assignments = self.assignments.load(Ordering::SeqCst);
        if assignments != self.seen_assignments {
            self.seen_assignments = assignments;
            for state in self.states.values_mut() {
                state.started = false;
                state.position_trusted = false;
                state.epoch_checked = false;
            }
        }
        self.state_for(&topic, partition, offset).await?;
        let key = (topic.clone(), partition);
        let state = self.states.get_mut(&key).expect("state_for made it");
        if state.halted {
            // Stopped by the flow's setting; a record fetched before the pause is dropped.
            let mut tpl = TopicPartitionList::new();
            let _ = tpl.add_partition(&topic, partition);
            let _ = self.consumer.pause(&tpl);
            return Ok(());
        }
        if let Some(d) = state.diverged {
            // Stopped; a record fetched before the pause (or after a new assignment, which
            // unpauses) is dropped and the partition paused again.
            self.stop_diverged(&topic, partition, &d, false);
            return Ok(());
        }
        if ids_changed(&self.pump.topics.borrow(), &topic, &state.ids) {
            // The topic was recreated on one side: nothing more goes out under the old
            // incarnation; once what is in flight is acknowledged, the flush drops this state
            // and the new incarnation starts at the source's log start.
            return Ok(());
        }
        if !state.started {
            state.started = true;
            if offset != state.sent_next {
                // The consumer started elsewhere than the index's cursor: past it (its
                // committed offset was lost or is behind a retention reset) or before it (a
                // crash between the runs record and the commit, or a `latest` anchor): go
                // there, so nothing between is skipped and nothing is read twice.
                tracing::info!(flow = %self.pump.flow.name, topic = %topic, partition, from = offset, to = state.sent_next, "resuming at the index's cursor");
                state.position_trusted = false;
                let to = state.sent_next;
                self.consumer
                    .seek(
                        &topic,
                        partition,
                        Offset::Offset(to),
                        Duration::from_millis(5_000),
                    )
                    .map_err(MirrorError::kafka(format!(
                        "seeking {topic}/{partition} to {to}"
                    )))?;
                return Ok(());
            }
        }
        if !state.epoch_checked {
            state.epoch_checked = true;
            let now = (leader_epoch >= 0).then_some(leader_epoch);
            if let (true, Some(known), Some(now)) =
                (offset == state.sent_next, state.sent_epoch, now)
            {
                if known != now {
                    // The source's leader changed since the record before this position was
                    // read: the log may have been cut there and written again since (an
                    // unclean election, a cut while this pump was away). librdkafka is asked
                    // to validate the position against the old epoch (KIP-320): where the
                    // leader says that epoch ends before the position, it goes back there,
                    // and the record that arrives below `sent_next` with the position
                    // trusted stops the partition (below). This record waits for the answer.
                    tracing::info!(flow = %self.pump.flow.name, topic = %topic, partition, offset, known_epoch = known, leader_epoch = now,
                        "the source's leader epoch changed since this partition was last read; validating the position");
                    state.position_trusted = true;
                    let to = state.sent_next;
                    seek_validated(&self.consumer, &topic, partition, to, known)?;
                    return Ok(());
                }
            }
        }
        if offset < state.sent_next {
            if state.position_trusted {
                // The consumer went back by itself, which it does only when the source no
                // longer holds what it read (an assignment, after which it starts at the
                // committed offset, resets `position_trusted` first). Either librdkafka's
                // leader-epoch check (KIP-320) found the log truncated and moved to where
                // it diverged, which is this record, or the position was past the source's
                // end and the consumer went back to the log start: the divergence is then
                // at the source's end, or below it if records were written since the cut.
                state.position_trusted = false;
                let (admin, t) = (self.source_admin.clone(), topic.to_string());
                // Without the watermarks (the source not answering), the record's own offset
                // is taken, with the end unknown (-1): stopped either way, never skipped.
                let (start, end) = blocking(move || watermarks(admin.inner(), &t, partition))
                    .await
                    .unwrap_or((-1, -1));
                let at = if offset > start { offset } else { end };
                let state = self.states.get_mut(&key).expect("state_for made it");
                state.diverge(at, end);
                let d = state.diverged.expect("just set");
                self.stop_diverged(&topic, partition, &d, true);
            }
            return Ok(()); // mirrored before a restart or by the previous owner
        }
        state.position_trusted = true;
        if offset > state.sent_next {
            let from = state.sent_next;
            state.sent_next = offset;
            self.push_gap(topic.clone(), partition, from, offset);
        }
        let state = self.states.get_mut(&key).expect("state_for made it");
        state.sent_next = offset + 1;
        state.sent_epoch = (leader_epoch >= 0).then_some(leader_epoch);
        state.in_flight += 1;
        let remote = state.remote.clone();
        let origin = m.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == ORIGIN_HEADER)
                .and_then(|h| h.value.map(<[u8]>::to_vec))
        });
        let timestamp_ms = m.timestamp().to_millis();
        let bytes = record_bytes(&m);
        if origin.as_deref() == Some(self.pump.flow.target.as_bytes()) {
            // Came from the target in the first place: copying it back would loop.
            self.in_flight
                .push_back(Box::pin(futures::future::ready(Sent {
                    topic,
                    partition,
                    source_offset: offset,
                    leader_epoch,
                    bytes: 0,
                    timestamp_ms,
                    result: SentResult::Skipped,
                })));
            return Ok(());
        }
        self.wait_for_target_partition(&topic, partition).await?;
        let mut headers = OwnedHeaders::new();
        if let Some(h) = m.headers() {
            for h in h.iter() {
                headers = headers.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
        if origin.is_none() {
            headers = headers.insert(Header {
                key: ORIGIN_HEADER,
                value: Some(self.pump.flow.source.as_bytes()),
            });
        }
        let source = source_header(&self.pump.flow.name, offset);
        headers = headers.insert(Header {
            key: SOURCE_HEADER,
            value: Some(source.as_bytes()),
        });
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&remote)
            .partition(partition)
            .headers(headers);
        if let Some(k) = m.key() {
            record = record.key(k);
        }
        if let Some(v) = m.payload() {
            record = record.payload(v);
        }
        if let Some(ts) = timestamp_ms {
            record = record.timestamp(ts);
        }
        let delivery = loop {
            // Before every attempt: waiting for room in the queue may have spanned a stall.
            self.check_fence()?;
            match self.producer.send_result(record) {
                Ok(d) => break d,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    // librdkafka's queue is full: take an acknowledgement, then retry.
                    match self.in_flight.next().await {
                        Some(sent) => self.acknowledged(sent)?,
                        None => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
                Err((e, _)) => {
                    return Err(MirrorError::Kafka {
                        what: format!("sending a record to {remote}/{partition}"),
                        source: e,
                    })
                }
            }
        };
        self.in_flight_bytes += bytes;
        self.in_flight.push_back(Box::pin(async move {
            let result = match delivery.await {
                Ok(Ok(d)) => SentResult::Acknowledged(d.offset),
                Ok(Err((e, _))) => SentResult::Failed(e),
                Err(_) => SentResult::Failed(KafkaError::Canceled),
            };
            Sent {
                topic,
                partition,
                source_offset: offset,
                leader_epoch,
                bytes,
                timestamp_ms,
                result,
            }
        }));
        Ok(())
    }

    /// Refuses to send once the partitions were lost, and after a stall of the process first
    /// proves membership: a synchronous commit of the acknowledged cursors, which the group
    /// coordinator takes only from a member of the current generation.
    fn check_fence(&mut self) -> Result<(), MirrorError> {
        if self.fenced.load(Ordering::SeqCst) {
            return Err(MirrorError::Fenced(
                "the group gave this pump's partitions to another member".into(),
            ));
        }
        let Some(freezes) = self.freeze.suspect(self.confirmed_freezes) else {
            return Ok(());
        };
        // The proof is a commit the coordinator takes only from a current member. What is
        // committed is what the index holds for the partition (recorded, so the committed
        // offset still translates); a partition not recorded yet commits its acknowledged
        // cursor, which a restart corrects by seeking to the index's cursor.
        let assigned = self.pump.assigned.borrow().clone();
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), s) in &self.states {
            if assigned.contains(&(topic.to_string(), *partition)) {
                let recorded = self.pump.index.cursor(topic, *partition)?;
                let offset = recorded.map_or(s.cursor.source_next, |c| c.source_next);
                let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(offset));
            }
        }
        if tpl.count() == 0 {
            // No partition held: what can be sent now is the runs of partitions given away,
            // which describe records already on the target. Not confirmed: the next send
            // for a held partition proves membership first.
            return Ok(());
        }
        {
            let started = std::time::Instant::now();
            let commit = || self.consumer.commit(&tpl, CommitMode::Sync);
            let committed = block_here(commit);
            if let Err(e) = committed {
                self.pump.metrics.error("fenced");
                self.fenced.store(true, Ordering::SeqCst);
                return Err(MirrorError::Fenced(format!(
                    "after a stall, the group refused this pump's commit ({e})"
                )));
            }
            tracing::info!(flow = %self.pump.flow.name, partitions = tpl.count(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "after a stall, a commit confirmed this pump still owns its partitions");
        }
        self.confirmed_freezes = freezes;
        Ok(())
    }

    /// Queues the judgement of a gap `from .. to` behind what is in flight: the source's log
    /// start offset is read off the async threads, and the gap is recorded when its turn
    /// comes in acknowledgement order.
    fn push_gap(&mut self, topic: Arc<str>, partition: i32, from: i64, to: i64) {
        if let Some(state) = self.states.get_mut(&(topic.clone(), partition)) {
            state.in_flight += 1;
        }
        let admin = self.source_admin.clone();
        self.in_flight.push_back(Box::pin(async move {
            let t = topic.to_string();
            let log_start_offset = blocking(move || watermarks(admin.inner(), &t, partition))
                .await
                .map(|(start, _)| start);
            Sent {
                topic,
                partition,
                source_offset: from,
                leader_epoch: -1,
                bytes: 0,
                timestamp_ms: None,
                result: SentResult::Gap {
                    to,
                    log_start_offset,
                },
            }
        }));
    }

    fn acknowledged(&mut self, sent: Sent) -> Result<(), MirrorError> {
        self.in_flight_bytes -= sent.bytes;
        let key = (sent.topic.clone(), sent.partition);
        let state = self
            .states
            .get_mut(&key)
            .expect("a partition's state lives while it has records in flight");
        state.in_flight -= 1;
        if !matches!(sent.result, SentResult::Failed(_)) {
            // The epoch of the record now just below the cursor (a gap makes it unknown).
            state.acked_epoch = (sent.leader_epoch >= 0).then_some(sent.leader_epoch);
        }
        let metrics = &self.pump.metrics;
        match sent.result {
            SentResult::Acknowledged(target_offset) => {
                if let Some((from, to)) = state.acknowledged(sent.source_offset, target_offset) {
                    tracing::warn!(flow = %self.pump.flow.name, topic = %sent.topic, partition = sent.partition,
                        remote = %state.remote, target_from = from, target_to = to,
                        "foreign write: the mirror topic holds records this pump did not write before this one (another writer, or copies a previous owner wrote past what this pump read when it took the partition over); translation steps over them");
                    metrics.foreign(&sent.topic, sent.partition, to - from);
                }
                let now = now_ms();
                let acked = Acked {
                    bytes: sent.bytes,
                    timestamp_ms: sent.timestamp_ms.unwrap_or(now),
                    latency_seconds: sent
                        .timestamp_ms
                        .map(|ts| (now - ts).max(0) as f64 / 1000.0),
                };
                metrics.mirrored(
                    &sent.topic,
                    sent.partition,
                    state.cursor.source_next,
                    Some(acked),
                );
                if &*sent.topic == HEARTBEATS_TOPIC {
                    if let Some(ts) = sent.timestamp_ms {
                        let ts = u64::try_from(ts).unwrap_or(0);
                        metrics
                            .last_heartbeat_ms
                            .fetch_max(ts, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                Ok(())
            }
            SentResult::Skipped => {
                state.skipped(sent.source_offset);
                metrics
                    .skipped_total
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                metrics.mirrored(&sent.topic, sent.partition, state.cursor.source_next, None);
                Ok(())
            }
            SentResult::Gap {
                to,
                log_start_offset,
            } => {
                let log_start_offset = log_start_offset.inspect_err(|_| {
                    metrics.error("source_watermarks");
                })?;
                let lost = state.gap(sent.source_offset, to, log_start_offset, now_ms());
                if let Some(lost) = lost {
                    tracing::warn!(flow = %self.pump.flow.name, topic = %sent.topic, partition = sent.partition,
                        from = lost.source_start, to = lost.source_end, records = lost.records(), log_start_offset,
                        "the source deleted records before they were mirrored (its retention overtook the mirror); resuming at its log start");
                    metrics.lost(&sent.topic, sent.partition, &lost);
                }
                metrics.mirrored(&sent.topic, sent.partition, state.cursor.source_next, None);
                Ok(())
            }
            SentResult::Failed(e) => {
                metrics.error("target_delivery");
                Err(MirrorError::Kafka {
                    what: format!(
                        "writing source offset {} of {}/{} to the target",
                        sent.source_offset, sent.topic, sent.partition
                    ),
                    source: e,
                })
            }
        }
    }

    /// Anchors partitions the pump holds that are empty on the source (so a group's offset
    /// on them translates before any record arrives), records the runs and cursors of every
    /// partition that moved in the runs topic and, once acknowledged, commits the source
    /// offsets.
    async fn flush(&mut self) -> Result<(), MirrorError> {
        let assigned = self.pump.assigned.borrow().clone();
        for (topic, partition) in &assigned {
            let topic: Arc<str> = Arc::from(topic.as_str());
            if self.states.contains_key(&(topic.clone(), *partition)) {
                continue;
            }
            // A partition whose source or target topic was recreated may get no record to
            // notice it by (its consumer sits at the old end): its new incarnation starts
            // here, and the consumer is moved to the source's start.
            if self.recreated_since_recorded(&topic, *partition)? {
                self.state_for(&topic, *partition, -1).await?;
                continue;
            }
            // A partition held but idle since this pump started shows the index's cursor, so
            // its lag is known (0 when everything was copied before) without a new record.
            if self
                .pump
                .metrics
                .mirrored_offset(&topic, *partition)
                .is_none()
            {
                if let Some(cursor) = self.pump.index.cursor(&topic, *partition)? {
                    self.pump
                        .metrics
                        .mirrored(&topic, *partition, cursor.source_next, None);
                }
            }
            if let (Some(start), Some(end)) = self.pump.metrics.watermarks(&topic, *partition) {
                if start == end
                    && self
                        .pump
                        .topics
                        .borrow()
                        .get(&*topic)
                        .is_some_and(|t| t.target_partitions > *partition)
                {
                    self.state_for(&topic, *partition, end).await?;
                }
            }
        }
        // Caught-up partitions whose consumer passed offsets without data (transaction
        // markers at the end): the cursor follows, so lag reaches 0 and a group at the end
        // translates.
        if let Ok(positions) = self.consumer.position() {
            let mut gaps = Vec::new();
            for e in positions.elements() {
                let Offset::Offset(position) = e.offset() else {
                    continue;
                };
                let key: (Arc<str>, i32) = (Arc::from(e.topic()), e.partition());
                if !assigned.contains(&(e.topic().to_string(), e.partition())) {
                    continue;
                }
                let (_, end) = self.pump.metrics.watermarks(&key.0, key.1);
                if let Some(state) = self.states.get_mut(&key) {
                    if let Some((from, to)) = state.caught_up_gap(position, end) {
                        gaps.push((key.0, key.1, from, to));
                    }
                }
            }
            for (topic, partition, from, to) in gaps {
                self.push_gap(topic, partition, from, to);
            }
        }
        // A partition whose source end stays below what was read: librdkafka found the
        // source truncated and moved back to where it diverged, with no record there to
        // show for it (see `mirror`).
        let now = now_ms();
        let mut went_back = Vec::new();
        for ((topic, partition), state) in &mut self.states {
            let (_, end) = self.pump.metrics.watermarks(topic, *partition);
            if state.end_below_sent(end, now) {
                went_back.push((topic.clone(), *partition, state.sent_next));
            }
        }
        for (topic, partition, read_to) in went_back {
            let admin = self.source_admin.clone();
            if let Some(end) = source_end_below(admin, &topic, partition, read_to).await? {
                if let Some(state) = self.states.get_mut(&(topic.clone(), partition)) {
                    state.diverge(end, end);
                    let d = state.diverged.expect("just set");
                    self.stop_diverged(&topic, partition, &d, true);
                }
            }
        }
        // A held partition whose source topic got a new id was recreated: its state is
        // dropped once nothing is in flight, and the next record (or the anchor of an empty
        // partition above) makes the new incarnation's.
        let mut recreated: Vec<(Arc<str>, i32)> = {
            let topics = self.pump.topics.borrow();
            self.states
                .iter()
                .filter(|((t, _), s)| {
                    s.in_flight == 0 && !s.halted && ids_changed(&topics, t, &s.ids)
                })
                .map(|(k, _)| k.clone())
                .collect()
        };
        // A held state made while ids were unknown is checked against the index's.
        for ((topic, partition), state) in &self.states {
            if state.in_flight == 0
                && !state.halted
                && (state.ids.source.is_none() || state.ids.target.is_none())
                && self.recreated_since_recorded(topic, *partition)?
            {
                recreated.push((topic.clone(), *partition));
            }
        }
        for (topic, partition) in recreated {
            self.states.remove(&(topic.clone(), partition));
            let mut tpl = TopicPartitionList::new();
            let _ = tpl.add_partition(&topic, partition);
            let _ = self.consumer.resume(&tpl);
        }
        // A divergence resolved while this pump held the partition (by an operator through
        // another daemon of the flow, whose stop did not stop this one): the state is made
        // again from the index, at the resolution's cursor.
        let mut resolved = Vec::new();
        for ((topic, partition), state) in &self.states {
            if let Some(d) = state.diverged {
                if state.in_flight == 0
                    && self.pump.index.resolved(topic, *partition)? == Some(d.detected_ms)
                {
                    resolved.push((topic.clone(), *partition));
                }
            }
        }
        for (topic, partition) in resolved {
            self.states.remove(&(topic.clone(), partition));
            self.pump.metrics.diverged(&topic, partition, None);
            let mut tpl = TopicPartitionList::new();
            let _ = tpl.add_partition(&topic, partition);
            let _ = self.consumer.resume(&tpl);
            if let Some(cursor) = self.pump.index.cursor(&topic, partition)? {
                if let Err(e) = self.consumer.seek(
                    &topic,
                    partition,
                    Offset::Offset(cursor.source_next),
                    Duration::from_millis(5_000),
                ) {
                    tracing::debug!(topic = %topic, partition, error = %e, "seeking a resolved partition to its cursor");
                }
            }
        }
        let mut updates = Vec::new();
        for ((topic, partition), state) in self.states.iter_mut().filter(|(_, s)| s.dirty) {
            let mut runs = std::mem::take(&mut state.closed);
            runs.extend(state.open);
            updates.push(RunUpdate {
                topic: topic.to_string(),
                partition: *partition,
                runs,
                cursor: state.cursor,
                lost: std::mem::take(&mut state.lost),
                diverged: state.diverged.filter(|_| state.divergence_unrecorded),
                resolved: None,
                source_topic_id: state.ids.source.clone(),
                target_topic_id: state.ids.target.clone(),
                source_leader_epoch: state.acked_epoch,
                new_incarnation: false,
            });
            state.divergence_unrecorded = false;
            state.dirty = false;
        }
        if !updates.is_empty() {
            self.check_fence()?;
            let mut encoded = Vec::with_capacity(updates.len());
            for update in &updates {
                let key = format!("{}/{}", update.topic, update.partition).into_bytes();
                let value = serde_json::to_vec(update)
                    .map_err(|e| MirrorError::Other(format!("encoding an offset run: {e}")))?;
                encoded.push((key, value));
            }
            let acknowledged = send_to_partition_zero(
                &self.producer,
                &self.runs_topic,
                &encoded,
                "recording offset runs",
            )?;
            // Commit only what the runs topic holds; partitions given away meanwhile are
            // the new owner's to commit.
            let commits: Vec<(String, i32, i64)> = updates
                .iter()
                .filter(|u| assigned.contains(&(u.topic.clone(), u.partition)))
                .map(|u| (u.topic.clone(), u.partition, u.cursor.source_next))
                .collect();
            let metrics = self.pump.metrics.clone();
            // Awaited by the select loop, not here: the runs records queue behind whatever
            // data is in flight to the same brokers, and stopping the pump for that long
            // would drain the pipeline every flush.
            self.recording = Some(Box::pin(async move {
                if let Err(e) = acknowledged.await {
                    metrics.error("offset_runs");
                    return Err(e);
                }
                Ok(commits)
            }));
        }
        // Partitions given away and fully recorded are forgotten; if they come back, their
        // state is read again from the index.
        self.states.retain(|(t, p), s| {
            s.in_flight > 0 || s.dirty || assigned.contains(&(t.to_string(), *p))
        });
        Ok(())
    }

    /// The runs of a flush are in the runs topic: commit the source offsets they cover.
    fn recorded(
        &mut self,
        recorded: Result<Vec<(String, i32, i64)>, MirrorError>,
    ) -> Result<(), MirrorError> {
        let commits = recorded?;
        if self.fenced.load(Ordering::SeqCst) {
            return Ok(()); // the partitions are another member's now
        }
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, offset) in &commits {
            let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset));
        }
        if tpl.count() > 0 {
            if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
                // A commit lost during a rebalance only means the next owner repeats a
                // little; the index's cursor keeps it from repeating on the target.
                tracing::debug!(error = %e, "committing source offsets");
            }
        }
        Ok(())
    }

    /// Commits every held partition's cursor and waits for the answer (at shutdown).
    fn commit_sync(&mut self) -> Result<(), MirrorError> {
        let assigned = self.pump.assigned.borrow().clone();
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), s) in &self.states {
            if assigned.contains(&(topic.to_string(), *partition)) && !s.dirty {
                let _ = tpl.add_partition_offset(
                    topic,
                    *partition,
                    Offset::Offset(s.cursor.source_next),
                );
            }
        }
        // A source that does not answer (a forced failover) would hold the commit for its
        // coordinator timeout; the index's cursors keep the position anyway.
        let source_answers = tpl.count() > 0
            && self
                .consumer
                .fetch_metadata(None, Duration::from_millis(SOURCE_PROBE_TIMEOUT_MS))
                .is_ok();
        if tpl.count() > 0 && !source_answers {
            tracing::warn!(flow = %self.pump.flow.name, "the source does not answer; no final commit of source offsets (the index's cursors hold the position)");
        } else if tpl.count() > 0 {
            if let Err(e) = self.consumer.commit(&tpl, CommitMode::Sync) {
                tracing::warn!(flow = %self.pump.flow.name, error = %e, "final commit of source offsets; the index's cursors still hold the position");
            }
        }
        let _ = self.producer.flush(Duration::from_millis(5_000));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(source_next: i64, target_next: i64) -> PartitionState {
        PartitionState {
            started: true,
            position_trusted: true,
            ..PartitionState::new(
                "a.t".into(),
                Cursor {
                    source_next,
                    target_next,
                },
                Ids::default(),
            )
        }
    }

    #[test]
    fn a_source_end_below_what_was_read_is_checked_once_after_it_stayed_there() {
        let mut s = state(100, 100);
        s.sent_next = 100;
        // The statistics lag a moment behind a record just read: not yet.
        assert!(!s.end_below_sent(Some(90), 0));
        assert!(!s.end_below_sent(Some(90), END_BELOW_IDLE_MS - 1));
        assert!(!s.end_below_sent(Some(100), END_BELOW_IDLE_MS));
        // Below for long enough with nothing new read: once, then not again at this position.
        assert!(s.end_below_sent(Some(60), END_BELOW_IDLE_MS));
        assert!(!s.end_below_sent(Some(60), 2 * END_BELOW_IDLE_MS));
        // A new record restarts the wait; records in flight or a divergence hold it.
        s.sent_next = 101;
        assert!(!s.end_below_sent(Some(60), 2 * END_BELOW_IDLE_MS));
        s.in_flight = 1;
        assert!(!s.end_below_sent(Some(60), 4 * END_BELOW_IDLE_MS));
        s.in_flight = 0;
        assert!(s.end_below_sent(Some(60), 4 * END_BELOW_IDLE_MS));
        s.diverge(60, 60);
        s.sent_next = 102;
        assert!(!s.end_below_sent(Some(60), 10 * END_BELOW_IDLE_MS));
        let d = s.diverged.expect("diverged");
        assert_eq!(
            (d.source_offset, d.mirrored_to, d.source_end_offset),
            (60, 101, 60)
        );
        assert!(s.divergence_unrecorded && s.dirty);
        assert_eq!(
            s.caught_up_gap(200, Some(200)),
            None,
            "a stopped partition moves nowhere"
        );
    }

    #[test]
    fn a_gap_below_the_source_log_start_is_lost_and_the_rest_is_not() {
        let mut s = state(0, 0);
        for o in 0..10 {
            s.acknowledged(o, 100 + o);
        }
        // Retention deleted 10..40 while the mirror was away; the consumer went back to the
        // log start, 40, and the first record it got is 40.
        let lost = s.gap(10, 40, 40, 1_000).expect("a loss");
        assert_eq!(
            (lost.source_start, lost.source_end, lost.records()),
            (10, 40, 30)
        );
        assert_eq!(s.cursor.source_next, 40);
        assert_eq!(
            s.cursor.target_next, 110,
            "nothing was written for the lost range"
        );
        s.acknowledged(40, 110);
        // A gap above the log start (compaction, an aborted transaction) is not loss.
        assert_eq!(s.gap(41, 45, 40, 2_000), None);
        s.acknowledged(45, 111);
        // Part of a gap below the log start: only that part is lost.
        let lost = s.gap(46, 60, 50, 3_000).expect("a partial loss");
        assert_eq!((lost.source_start, lost.source_end), (46, 50));
        s.acknowledged(60, 112);
        let mut runs = std::mem::take(&mut s.closed);
        runs.extend(s.open);
        let runs: Vec<(i64, i64, i64)> = runs
            .iter()
            .map(|r| (r.source_start, r.target_start, r.length))
            .collect();
        assert_eq!(
            runs,
            vec![(0, 100, 10), (40, 110, 1), (45, 111, 1), (60, 112, 1)],
            "a gap closes the run before it; the next record starts a new one"
        );
        assert_eq!(s.lost.len(), 2, "both losses go to the next flush");
    }

    #[test]
    fn a_caught_up_partition_moves_its_cursor_past_transaction_markers_at_its_end() {
        // Records 0..5 mirrored; a commit marker at 5; the consumer's position is 6 and the
        // source's end is 6.
        let mut s = state(0, 0);
        for o in 0..5 {
            s.sent_next = o + 1;
            s.acknowledged(o, o);
        }
        assert_eq!(s.caught_up_gap(6, Some(6)), Some((5, 6)));
        assert_eq!(s.sent_next, 6);
        assert_eq!(s.gap(5, 6, 0, 1), None, "a marker is not loss");
        assert_eq!(
            s.cursor,
            Cursor {
                source_next: 6,
                target_next: 5
            },
            "the cursor is at the source's end, so lag is 0 and a group at 6 translates to 5"
        );
        // Nothing more to do once the cursor is there.
        assert_eq!(s.caught_up_gap(6, Some(6)), None);
    }

    #[test]
    fn the_position_rule_waits_for_a_partition_that_is_caught_up_and_trusted() {
        let mut s = state(5, 5);
        // Not at the source's end: records between may still come.
        assert_eq!(s.caught_up_gap(6, Some(9)), None);
        assert_eq!(s.caught_up_gap(6, None), None);
        // Something in flight: its acknowledgement comes first.
        s.in_flight = 1;
        assert_eq!(s.caught_up_gap(6, Some(6)), None);
        s.in_flight = 0;
        // After a seek, the position describes where the consumer was, not what it passed.
        s.position_trusted = false;
        assert_eq!(s.caught_up_gap(6, Some(6)), None);
        s.position_trusted = true;
        // A position at or behind what was sent says nothing.
        assert_eq!(s.caught_up_gap(5, Some(5)), None);
        assert_eq!(s.caught_up_gap(6, Some(6)), Some((5, 6)));
    }

    /// What the index must say after any sequence of records, gaps (some lost to retention),
    /// records skipped on purpose, flushes and restarts: the lost ranges are exactly the gap
    /// offsets below the log start seen when each gap was found, the cursor only moves
    /// forward, and every processed offset translates to the target offset of the first
    /// mirrored record at or after it.
    mod model {
        use super::*;
        use crate::offsets::OffsetStore;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Event {
            /// The next record arrives `gap` offsets after the cursor; the source's log start
            /// is `lost` offsets into that gap; it lands `target_gap` after the last target
            /// offset (another writer on the target).
            Record {
                gap: i64,
                lost: i64,
                target_gap: i64,
            },
            /// The next record came from the target and is skipped.
            Skip,
            /// The runs so far are recorded.
            Flush,
            /// The pump restarts: recorded, then rebuilt from the index.
            Restart,
        }

        fn event() -> impl Strategy<Value = Event> {
            prop_oneof![
                6 => (0i64..4, 0i64..5, 0i64..2).prop_map(|(gap, lost, target_gap)| Event::Record { gap, lost, target_gap }),
                1 => Just(Event::Skip),
                1 => Just(Event::Flush),
                1 => Just(Event::Restart),
            ]
        }

        fn flush(s: &mut PartitionState, ix: &FlowIndex) {
            let mut runs = std::mem::take(&mut s.closed);
            runs.extend(s.open);
            ix.apply(&RunUpdate {
                lost: std::mem::take(&mut s.lost),
                ..RunUpdate::runs("t", 0, runs, s.cursor)
            })
            .unwrap();
            // The open run is recorded as it stands; later records extend it in place.
            s.dirty = false;
        }

        proptest! {
            #[test]
            fn the_index_follows_records_gaps_losses_and_restarts(
                events in proptest::collection::vec(event(), 1..150),
            ) {
                let dir = tempfile::tempdir().unwrap();
                let ix = OffsetStore::open(dir.path()).unwrap().flow("f").unwrap();
                let mut s = state(0, 0);
                let mut target = 0i64;
                let mut mirrored: Vec<(i64, i64)> = Vec::new();
                let mut lost: Vec<(i64, i64)> = Vec::new();
                let mut last_cursor = 0;
                for e in events {
                    match e {
                        Event::Record { gap, lost: below, target_gap } => {
                            let from = s.cursor.source_next;
                            let at = from + gap;
                            if gap > 0 {
                                let log_start = from + below;
                                if let Some(l) = s.gap(from, at, log_start, 0) {
                                    lost.push((l.source_start, l.source_end));
                                }
                                let expect = (log_start.min(at) > from).then(|| (from, log_start.min(at)));
                                prop_assert_eq!(lost.last().copied().filter(|_| expect.is_some()), expect);
                            }
                            target += target_gap;
                            s.sent_next = at + 1;
                            s.acknowledged(at, target);
                            mirrored.push((at, target));
                            target += 1;
                        }
                        Event::Skip => {
                            let at = s.cursor.source_next;
                            s.sent_next = at + 1;
                            s.skipped(at);
                        }
                        Event::Flush => flush(&mut s, &ix),
                        Event::Restart => {
                            flush(&mut s, &ix);
                            let cursor = ix.cursor("t", 0).unwrap().expect("a cursor");
                            prop_assert_eq!(cursor, s.cursor);
                            s = state(cursor.source_next, cursor.target_next);
                            // A new state's runs start fresh: the next record opens a new run.
                            target = target.max(cursor.target_next);
                        }
                    }
                    prop_assert!(s.cursor.source_next >= last_cursor, "the cursor went back");
                    last_cursor = s.cursor.source_next;
                }
                flush(&mut s, &ix);
                let recorded: Vec<(i64, i64)> = ix
                    .lost("t", 0)
                    .unwrap()
                    .iter()
                    .map(|l| (l.source_start, l.source_end))
                    .collect();
                prop_assert_eq!(&recorded, &lost);
                let end = s.cursor.source_next;
                for o in 0..=end {
                    let want = mirrored
                        .iter()
                        .find(|(src, _)| *src >= o)
                        .map_or(s.cursor.target_next, |(_, t)| *t);
                    prop_assert_eq!(ix.translate("t", 0, o).unwrap(), Some(want), "offset {}", o);
                }
                prop_assert_eq!(ix.translate("t", 0, end + 1).unwrap(), None);
            }
        }
    }
}
