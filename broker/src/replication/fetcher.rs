//! The follower's side of replication (Kafka's `ReplicaFetcherManager` and
//! `ReplicaFetcherThread`): one task per leader broker fetches every partition this node
//! follows on that leader, with the Fetch API and this node's id as replica id.
//!
//! Before fetching a partition in a new leader epoch the follower asks the leader, with
//! OffsetForLeaderEpoch, where its own latest epoch ends on the leader, and truncates a
//! divergent tail there. It then fetches from its log end: the leader's batches are appended
//! as they are (offsets and epochs kept), and the follower's high watermark follows the
//! leader's, capped at its own log end. A fetch offset below the leader's log start restarts
//! the log at the leader's start.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::watch;

use super::client::{ClientError, KafkaClient};
use crate::log::{LogError, UNDEFINED_EPOCH};
use crate::partition::Partition;

/// Fetch version used between brokers (the last with `replica_id` in the body).
const FETCH_VERSION: i16 = 12;
/// OffsetForLeaderEpoch version used between brokers.
const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 4;
/// Pause after a failed connection or request before trying again.
const RETRY_BACKOFF_MS: u64 = 200;
/// How long a partition the leader refused waits before it is tried again (the leader may
/// simply not have applied the metadata that makes it leader yet).
const PAUSE_MS: u64 = 500;

/// Fetch settings (Kafka's `replica.fetch.*`).
#[derive(Debug, Clone, Copy)]
pub struct FetchSettings {
    /// This node's id, sent as the replica id.
    pub node_id: i32,
    /// `replica.fetch.wait.max.ms`.
    pub wait_max_ms: i32,
    /// `replica.fetch.max.bytes` (per partition).
    pub partition_max_bytes: i32,
    /// `replica.fetch.response.max.bytes`.
    pub response_max_bytes: i32,
    /// How long one request may take before the connection is dropped.
    pub request_timeout_ms: u64,
}

/// One partition to follow.
#[derive(Clone)]
pub struct FetchTarget {
    /// The leader.
    pub leader: i32,
    /// The leader's Kafka address.
    pub leader_addr: String,
    /// The leader epoch.
    pub leader_epoch: i32,
    /// The local replica.
    pub partition: Arc<Partition>,
}

type Targets = BTreeMap<(String, i32), FetchTarget>;

/// Why a round of replica fetching ended; the fetcher drops its connection and backs off.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    /// No connection to the leader.
    #[error("no connection to the leader")]
    NotConnected,
    /// The request failed on the wire.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A blocking log task panicked or was cancelled.
    #[error("log task failed: {0}")]
    Task(tokio::task::JoinError),
}

/// Starts and stops one fetcher task per leader as the followed partitions change.
pub struct FetcherManager {
    settings: FetchSettings,
    targets: watch::Sender<Arc<Targets>>,
    running: Arc<Mutex<HashSet<i32>>>,
}

impl FetcherManager {
    /// A manager following nothing.
    pub fn new(settings: FetchSettings) -> FetcherManager {
        let (targets, _) = watch::channel(Arc::new(Targets::new()));
        FetcherManager {
            settings,
            targets,
            running: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// Follows exactly `targets` from now on. Must be called inside a Tokio runtime.
    pub fn set_targets(&self, targets: Targets) {
        let leaders: HashSet<i32> = targets.values().map(|t| t.leader).collect();
        self.targets.send_replace(Arc::new(targets));
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        for leader in leaders {
            if running.insert(leader) {
                let task = FetcherTask {
                    leader,
                    settings: self.settings,
                    targets: self.targets.subscribe(),
                    running: self.running.clone(),
                    client: None,
                    states: HashMap::new(),
                };
                tokio::spawn(task.run());
            }
        }
    }

    /// Stops every fetcher.
    pub fn shutdown(&self) {
        self.targets.send_replace(Arc::new(Targets::new()));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Ask the leader where our latest epoch ends, truncate there.
    Truncate,
    /// Fetch from our log end.
    Fetch,
    /// The leader refused (not leader, epoch mismatch): wait for new metadata.
    Paused,
}

struct PartitionFetch {
    leader_epoch: i32,
    phase: Phase,
    /// When the partition was last seen not paused.
    active_at: std::time::Instant,
}

struct FetcherTask {
    leader: i32,
    settings: FetchSettings,
    targets: watch::Receiver<Arc<Targets>>,
    running: Arc<Mutex<HashSet<i32>>>,
    client: Option<KafkaClient>,
    states: HashMap<(String, i32), PartitionFetch>,
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

impl FetcherTask {
    async fn run(mut self) {
        tracing::debug!(leader = self.leader, "replica fetcher started");
        loop {
            let mine: Vec<((String, i32), FetchTarget)> = self
                .targets
                .borrow_and_update()
                .iter()
                .filter(|(_, t)| t.leader == self.leader)
                .map(|(k, t)| (k.clone(), t.clone()))
                .collect();
            if mine.is_empty() {
                let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
                // Re-check under the lock so a concurrent set_targets either sees this task
                // gone or this task sees its targets.
                if !self
                    .targets
                    .borrow()
                    .values()
                    .any(|t| t.leader == self.leader)
                {
                    running.remove(&self.leader);
                    tracing::debug!(leader = self.leader, "replica fetcher stopped");
                    return;
                }
                continue;
            }
            self.states.retain(|k, _| mine.iter().any(|(m, _)| m == k));
            for (key, target) in &mine {
                let now = std::time::Instant::now();
                let state = self.states.entry(key.clone()).or_insert(PartitionFetch {
                    leader_epoch: target.leader_epoch,
                    phase: Phase::Truncate,
                    active_at: now,
                });
                if state.leader_epoch != target.leader_epoch {
                    *state = PartitionFetch {
                        leader_epoch: target.leader_epoch,
                        phase: Phase::Truncate,
                        active_at: now,
                    };
                }
                if state.phase != Phase::Paused {
                    state.active_at = now;
                } else if now.duration_since(state.active_at) >= Duration::from_millis(PAUSE_MS) {
                    state.phase = Phase::Truncate;
                    state.active_at = now;
                }
            }
            let addr = mine[0].1.leader_addr.clone();
            if self.client.is_none() {
                let client_id = format!("strait-replica-fetcher-{}", self.settings.node_id);
                match KafkaClient::connect(&addr, &client_id, Duration::from_millis(2_000)).await {
                    Ok(c) => self.client = Some(c),
                    Err(e) => {
                        tracing::debug!(leader = self.leader, error = %e, "cannot reach the leader");
                        self.wait_backoff().await;
                        continue;
                    }
                }
            }
            let result = if mine.iter().any(|(k, _)| {
                self.states
                    .get(k)
                    .is_some_and(|s| s.phase == Phase::Truncate)
            }) {
                self.truncate(&mine).await
            } else if mine
                .iter()
                .any(|(k, _)| self.states.get(k).is_some_and(|s| s.phase == Phase::Fetch))
            {
                self.fetch(&mine).await
            } else {
                // Everything paused: wait for new metadata.
                let _ =
                    tokio::time::timeout(Duration::from_millis(PAUSE_MS), self.targets.changed())
                        .await;
                Ok(())
            };
            if let Err(e) = result {
                tracing::debug!(leader = self.leader, error = %e, "replica fetch failed; reconnecting");
                self.client = None;
                self.wait_backoff().await;
            }
        }
    }

    async fn wait_backoff(&mut self) {
        let _ = tokio::time::timeout(
            Duration::from_millis(RETRY_BACKOFF_MS),
            self.targets.changed(),
        )
        .await;
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.settings.request_timeout_ms)
    }

    /// Asks where each partition's latest local epoch ends on the leader and truncates there.
    async fn truncate(&mut self, mine: &[((String, i32), FetchTarget)]) -> Result<(), FetchError> {
        let mut topics: BTreeMap<String, Vec<OffsetForLeaderPartition>> = BTreeMap::new();
        let mut pending = Vec::new();
        for (key, target) in mine {
            if self.states.get(key).map(|s| s.phase) != Some(Phase::Truncate) {
                continue;
            }
            let latest = target.partition.log().latest_epoch();
            match latest {
                None => {
                    // Nothing written under any epoch: nothing can diverge.
                    if let Some(s) = self.states.get_mut(key) {
                        s.phase = Phase::Fetch;
                    }
                }
                Some(epoch) => {
                    topics.entry(key.0.clone()).or_default().push(
                        OffsetForLeaderPartition::default()
                            .with_partition(key.1)
                            .with_current_leader_epoch(target.leader_epoch)
                            .with_leader_epoch(epoch),
                    );
                    pending.push((key.clone(), target.partition.clone(), epoch));
                }
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        let req = OffsetForLeaderEpochRequest::default()
            .with_replica_id(BrokerId(self.settings.node_id))
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, parts)| {
                        OffsetForLeaderTopic::default()
                            .with_topic(topic_name(&t))
                            .with_partitions(parts)
                    })
                    .collect(),
            );
        let timeout = self.timeout();
        let Some(client) = self.client.as_mut() else {
            return Err(FetchError::NotConnected);
        };
        let resp: OffsetForLeaderEpochResponse = client
            .call(
                ApiKey::OffsetForLeaderEpoch,
                OFFSET_FOR_LEADER_EPOCH_VERSION,
                &req,
                timeout,
            )
            .await?;
        for t in resp.topics {
            for p in t.partitions {
                let key = (t.topic.0.to_string(), p.partition);
                let Some((_, partition, requested)) = pending.iter().find(|(k, _, _)| *k == key)
                else {
                    continue;
                };
                let Some(state) = self.states.get_mut(&key) else {
                    continue;
                };
                if p.error_code != 0 {
                    tracing::debug!(topic = %key.0, partition = key.1, code = p.error_code,
                        "leader refused OffsetForLeaderEpoch; waiting for new metadata");
                    state.phase = Phase::Paused;
                    continue;
                }
                let partition = partition.clone();
                let requested = *requested;
                let truncated = tokio::task::spawn_blocking(move || {
                    let mut log = partition.log_mut();
                    let end = log.log_end_offset();
                    let target = if p.leader_epoch == UNDEFINED_EPOCH || p.end_offset < 0 {
                        // The leader knows no epoch this old: keep what is committed.
                        log.high_watermark()
                    } else if p.leader_epoch == requested {
                        p.end_offset
                    } else {
                        // The leader's answer is an older epoch: cut at the end of that epoch
                        // here too, whichever is earlier.
                        p.end_offset.min(log.end_offset_for_epoch(p.leader_epoch).1)
                    };
                    if target < end {
                        tracing::info!(topic = %partition.topic, partition = partition.index,
                            from = end, to = target, "truncating a divergent tail to the leader's epoch end");
                        log.truncate_to(target)?;
                    }
                    Ok::<(), LogError>(())
                })
                .await;
                match truncated {
                    Ok(Ok(())) => state.phase = Phase::Fetch,
                    Ok(Err(e)) => {
                        tracing::error!(topic = %key.0, partition = key.1, error = %e, "truncation failed");
                        state.phase = Phase::Paused;
                    }
                    Err(e) => return Err(FetchError::Task(e)),
                }
            }
        }
        Ok(())
    }

    /// One fetch of every partition in the Fetch phase.
    async fn fetch(&mut self, mine: &[((String, i32), FetchTarget)]) -> Result<(), FetchError> {
        let mut topics: BTreeMap<String, Vec<FetchPartition>> = BTreeMap::new();
        for (key, target) in mine {
            if self.states.get(key).map(|s| s.phase) != Some(Phase::Fetch) {
                continue;
            }
            let log = target.partition.log();
            topics.entry(key.0.clone()).or_default().push(
                FetchPartition::default()
                    .with_partition(key.1)
                    .with_current_leader_epoch(target.leader_epoch)
                    .with_fetch_offset(log.log_end_offset())
                    .with_last_fetched_epoch(log.latest_epoch().unwrap_or(UNDEFINED_EPOCH))
                    .with_log_start_offset(log.log_start_offset())
                    .with_partition_max_bytes(self.settings.partition_max_bytes),
            );
        }
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(self.settings.node_id))
            .with_max_wait_ms(self.settings.wait_max_ms)
            .with_min_bytes(1)
            .with_max_bytes(self.settings.response_max_bytes)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, parts)| {
                        FetchTopic::default()
                            .with_topic(topic_name(&t))
                            .with_partitions(parts)
                    })
                    .collect(),
            );
        let timeout = self.timeout()
            + Duration::from_millis(u64::try_from(self.settings.wait_max_ms).unwrap_or(0));
        let Some(client) = self.client.as_mut() else {
            return Err(FetchError::NotConnected);
        };
        let resp: FetchResponse = client
            .call(ApiKey::Fetch, FETCH_VERSION, &req, timeout)
            .await?;
        for t in resp.responses {
            let topic = t.topic.0.to_string();
            for p in t.partitions {
                let key = (topic.clone(), p.partition_index);
                let Some(target) = mine.iter().find(|(k, _)| *k == key).map(|(_, t)| t.clone())
                else {
                    continue;
                };
                let Some(state) = self.states.get_mut(&key) else {
                    continue;
                };
                let next = apply_fetched(target.partition.clone(), p).await;
                state.phase = next;
            }
        }
        Ok(())
    }
}

/// Applies one partition's fetch response; returns the partition's next phase.
async fn apply_fetched(
    partition: Arc<Partition>,
    p: kafka_protocol::messages::fetch_response::PartitionData,
) -> Phase {
    let code = p.error_code;
    if code == ResponseError::OffsetOutOfRange.code() {
        let leader_start = p.log_start_offset;
        let done = tokio::task::spawn_blocking(move || {
            let mut log = partition.log_mut();
            if log.log_end_offset() < leader_start {
                tracing::info!(topic = %partition.topic, partition = partition.index,
                    from = log.log_end_offset(), to = leader_start,
                    "fetch offset below the leader's log start: restarting the log there");
                log.truncate_fully_and_start_at(leader_start)?;
            }
            Ok::<(), LogError>(())
        })
        .await;
        return match done {
            Ok(Ok(())) => Phase::Truncate,
            _ => Phase::Paused,
        };
    }
    if code != 0 {
        tracing::debug!(topic = %partition.topic, partition = partition.index, code,
            "leader refused the fetch; waiting for new metadata");
        return Phase::Paused;
    }
    if p.diverging_epoch.epoch >= 0 {
        return Phase::Truncate;
    }
    let records = p.records.unwrap_or_default();
    let leader_high_watermark = p.high_watermark;
    let applied = tokio::task::spawn_blocking(move || {
        let mut log = partition.log_mut();
        if !records.is_empty() {
            log.append_as_follower(&records, crate::clock::now_ms())?;
        }
        let end = log.log_end_offset();
        if leader_high_watermark.min(end) > log.high_watermark() {
            log.set_high_watermark(leader_high_watermark.min(end));
        }
        drop(log);
        if !records.is_empty() {
            partition.notify_changed();
        }
        Ok::<(), LogError>(())
    })
    .await;
    match applied {
        Ok(Ok(())) => Phase::Fetch,
        Ok(Err(e @ LogError::UnexpectedAppendOffset { .. })) => {
            tracing::warn!(error = %e, "fetched data does not continue the log; truncating again");
            Phase::Truncate
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "appending fetched data failed");
            Phase::Paused
        }
        Err(_) => Phase::Paused,
    }
}
