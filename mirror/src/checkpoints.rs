//! Checkpoints and group offset sync of one flow.
//!
//! Every `checkpoint_interval_ms`, for each source consumer group the flow selects, the
//! committed offsets of the partitions this daemon's pump holds are translated through the
//! index. A translation that changed is published to `<source>.checkpoints.internal` on the
//! target and remembered in sled. A checkpoint never goes backwards unless the group itself
//! went backwards on the source. A partition whose records have not been mirrored as far as
//! the group's offset gets no checkpoint (the index refuses to translate past its cursor).
//!
//! With `sync_group_offsets`, the checkpoints are also committed to the same group on the
//! target while that group has no active members there, when the target's committed offset
//! is behind the checkpoint or the source group was rewound. A group that runs on the target
//! (after a failover) is never moved under its members' feet.
//!
//! There is no cap on the number of groups: every group's offsets are read and committed
//! from one client per cluster ([`crate::group_offsets`]), a bounded number of requests in
//! flight at a time, and the target's groups are listed once per round.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::clients::{
    blocking, client_config, send_to_partition_zero, target_producer, MirrorContext, MirrorError,
    PollConsumer, Producer, REQUEST_TIMEOUT_MS,
};
use crate::config::{ClusterConfig, FlowConfig};
use crate::group_offsets::{
    all_answered, commit_and_read_back, read_with, write_with, GroupCommit, Interrupt,
    PartitionOffset,
};
use crate::metrics::{now_ms, FlowMetrics, TopicState};
use crate::offsets::{next_checkpoint, Checkpoint, FlowIndex};
use crate::topic_ids::Side;

/// How long a checkpoint or heartbeat record may wait for the target: a target down for
/// longer fails the task, which restarts with the flow.
const CHECKPOINT_MESSAGE_TIMEOUT_MS: u64 = 120_000;

/// A checkpoint made in a round, before it is written to `<source>.checkpoints.internal`
/// (in MirrorMaker 2's format, see [`crate::mm2`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    /// The consumer group.
    pub group: String,
    /// The topic on the source.
    pub source_topic: String,
    /// The topic on the target.
    pub topic: String,
    /// The partition (the same on both sides).
    pub partition: i32,
    /// The group's committed offset on the source.
    pub upstream_offset: i64,
    /// Where the group resumes on the target.
    pub downstream_offset: i64,
    /// The metadata the group committed with its offset on the source.
    pub metadata: String,
}

/// One group's position on one partition, as a round saw it: what the group committed on the
/// source and where that translates on the target (`None`: not mirrored that far yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupTranslation {
    /// The consumer group.
    pub group: String,
    /// The topic on the source.
    pub source_topic: String,
    /// The topic on the target.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The group's committed offset on the source.
    pub source_offset: i64,
    /// Its exact translation on the target.
    pub translated_offset: Option<i64>,
}

/// A group's last checkpoint and what the target holds for it after a final commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalCommit {
    /// The consumer group.
    pub group: String,
    /// The topic on the source.
    pub source_topic: String,
    /// The topic on the target.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The group's offset on the source at its last checkpoint.
    pub source_offset: i64,
    /// Its translation, which the final commit writes.
    pub translated_offset: i64,
    /// What the group has committed on the target afterwards.
    pub target_offset: Option<i64>,
    /// Why the translation was not committed, if it was not (the group is active on the
    /// target, or already further there).
    pub skipped: Option<String>,
}

/// Commits every group's last checkpoint from the index to the target (a forced failover:
/// the source is gone, so its groups cannot be read again). A group with active members on
/// the target, or whose target offset is already at or past the checkpoint, is left as it
/// is and says so. Returns every checkpoint with what the target holds afterwards. Every
/// group's offsets are read and written from one client.
pub async fn commit_last_checkpoints(
    flow: &FlowConfig,
    target: &ClusterConfig,
    index: &FlowIndex,
) -> Result<Vec<FinalCommit>, MirrorError> {
    let mut by_group: BTreeMap<String, Vec<(String, i32, Checkpoint)>> = BTreeMap::new();
    for (group, topic, partition, c) in index.checkpoints()? {
        by_group
            .entry(group)
            .or_default()
            .push((topic, partition, c));
    }
    if by_group.is_empty() {
        return Ok(Vec::new());
    }
    let client = group_client(target, &format!("strait-mirror-final-{}", flow.name))?;
    let members = members_by_group(&client).await?;
    let partitions: BTreeSet<(String, i32)> = by_group
        .values()
        .flatten()
        .map(|(t, p, _)| (t.clone(), *p))
        .collect();
    let replaced = replaced_topics(&client, flow, index, &partitions, Side::Target).await?;
    let interrupt = Interrupt::default();
    let groups: Vec<String> = by_group.keys().cloned().collect();
    let remote = |list: &[(String, i32, Checkpoint)]| -> Vec<(String, i32)> {
        list.iter()
            .map(|(t, p, _)| (flow.remote_topic(t), *p))
            .collect()
    };
    let requests = by_group
        .iter()
        .map(|(g, list)| (g.clone(), remote(list)))
        .collect();
    let current = all_answered(
        &groups,
        read_with(&client, requests, &interrupt).await?,
        "reading the target's offsets",
    )?;
    let mut entries = Vec::new();
    let mut commits = Vec::new();
    for ((group, list), current) in by_group.into_iter().zip(current) {
        let current = offsets_by_partition(&current);
        let active = members.get(&group).copied().unwrap_or(0);
        let mut commit = Vec::new();
        for (t, p, c) in list {
            let remote = flow.remote_topic(&t);
            let have = current.get(&(remote.clone(), p)).copied();
            let skipped = if replaced.contains(&(t.clone(), p)) {
                Some(REPLACED.to_string())
            } else if active > 0 {
                Some(format!("{active} members active on the target"))
            } else if have.is_some_and(|h| h >= c.target_offset) {
                Some("the target is already at or past the checkpoint".to_string())
            } else {
                commit.push((remote.clone(), p, c.target_offset));
                None
            };
            entries.push(FinalCommit {
                group: group.clone(),
                source_topic: t,
                topic: remote,
                partition: p,
                source_offset: c.source_offset,
                translated_offset: c.target_offset,
                target_offset: have,
                skipped,
            });
        }
        if !commit.is_empty() {
            commits.push((group, commit));
        }
    }
    if !commits.is_empty() {
        // A group the coordinator refuses is named in its entries; the others are committed.
        let keys = entries
            .iter()
            .map(|e| (e.group.clone(), e.topic.clone(), e.partition))
            .collect();
        let (refused, after) = commit_and_read_back(&client, commits, keys, "the target").await?;
        for e in &mut entries {
            let key = (e.group.clone(), e.topic.clone(), e.partition);
            if let Some(why) = refused.get(&key) {
                e.skipped = Some(format!("the target refused the commit: {why}"));
            }
            e.target_offset = after.get(&key).copied();
        }
    }
    tracing::info!(flow = %flow.name, groups = groups.len(), offsets = entries.len(), "committed the last checkpoints on the target");
    Ok(entries)
}

/// Why a partition whose topic was recreated gets no offset: its runs describe the old one.
pub(crate) const REPLACED: &str =
    "the topic was deleted or recreated since it was mirrored; its offsets no longer translate";

/// The partitions among `partitions` (source topic names) whose topic on `side` has another
/// id now than the one the index's runs were recorded for.
pub(crate) async fn replaced_topics(
    client: &Arc<PollConsumer>,
    flow: &FlowConfig,
    index: &FlowIndex,
    partitions: &BTreeSet<(String, i32)>,
    side: Side,
) -> Result<BTreeSet<(String, i32)>, MirrorError> {
    let name = |t: &str| match side {
        Side::Source => t.to_string(),
        Side::Target => flow.remote_topic(t),
    };
    let names: Vec<String> = partitions
        .iter()
        .map(|(t, _)| name(t))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let c = client.clone();
    let ids = blocking(move || {
        crate::topic_ids::topic_ids(
            c.client(),
            &names,
            Duration::from_millis(REQUEST_TIMEOUT_MS),
        )
    })
    .await?;
    let mut replaced = BTreeSet::new();
    for (t, p) in partitions {
        let now = ids.get(&name(t)).map(String::as_str);
        let (source_id, target_id) = match side {
            Side::Source => (now, None),
            Side::Target => (None, now),
        };
        if index.replaced(t, *p, source_id, target_id)? {
            replaced.insert((t.clone(), *p));
        }
    }
    Ok(replaced)
}

/// A request for a round now (the failover's final checkpoint), answered with the round's
/// translations or why it failed.
pub type RoundRequest = tokio::sync::oneshot::Sender<Result<Vec<GroupTranslation>, String>>;

/// The checkpoint task of one flow.
pub struct Checkpointer {
    flow: Arc<FlowConfig>,
    index: FlowIndex,
    metrics: Arc<FlowMetrics>,
    topics: watch::Receiver<BTreeMap<String, TopicState>>,
    assigned: watch::Receiver<BTreeSet<(String, i32)>>,
    producer: Producer,
    /// Lists the source's groups and reads their offsets, all groups from this one client.
    source_client: Arc<PollConsumer>,
    /// Lists the target's groups and reads and commits their offsets.
    target_client: Arc<PollConsumer>,
    /// Group partitions whose source offset went backwards and whose target group has not
    /// been moved back yet.
    rewound: BTreeSet<(String, String, i32)>,
    /// Why the last round did not cover the whole flow, if it did not.
    incomplete: Option<String>,
    /// Whether some group's offsets could not be read or synced in the last round (which
    /// then does not count as a completed one).
    groups_failed: bool,
    /// Stops the round's bulk calls when the flow stops.
    interrupt: Interrupt,
}

/// The groups `client`'s cluster knows (or just `group`), with their member counts; dead
/// groups without members are left out.
pub(crate) async fn list_groups(
    client: &Arc<PollConsumer>,
    group: Option<String>,
) -> Result<Vec<(String, usize)>, MirrorError> {
    let client = client.clone();
    blocking(move || {
        let list = client
            .fetch_group_list(group.as_deref(), Duration::from_millis(REQUEST_TIMEOUT_MS))
            .map_err(MirrorError::kafka("listing consumer groups"))?;
        Ok(list
            .groups()
            .iter()
            .filter(|g| g.state() != "Dead" || !g.members().is_empty())
            .map(|g| (g.name().to_string(), g.members().len()))
            .collect())
    })
    .await
}

/// The member count of every group `client`'s cluster knows, by name (one listing).
pub(crate) async fn members_by_group(
    client: &Arc<PollConsumer>,
) -> Result<HashMap<String, usize>, MirrorError> {
    let mut members = HashMap::new();
    for (group, count) in list_groups(client, None).await? {
        *members.entry(group).or_insert(0) += count;
    }
    Ok(members)
}

/// The committed offsets in a group's answer by (topic, partition); a partition without one
/// is left out.
pub(crate) fn offsets_by_partition(partitions: &[PartitionOffset]) -> HashMap<(String, i32), i64> {
    partitions
        .iter()
        .filter_map(|p| Some(((p.topic.clone(), p.partition), p.offset?)))
        .collect()
}

/// A client of `cluster` under `group`, used for listing groups and, through
/// [`crate::group_offsets`], for the offsets of any group (it never joins its own).
pub(crate) fn group_client(
    cluster: &ClusterConfig,
    group: &str,
) -> Result<Arc<PollConsumer>, MirrorError> {
    Ok(Arc::new(
        client_config(
            cluster,
            &[("group.id", group), ("enable.auto.commit", "false")],
        )
        .create_with_context(MirrorContext)
        .map_err(MirrorError::kafka(format!(
            "creating a client for group {group}"
        )))?,
    ))
}

impl Checkpointer {
    /// A checkpointer for the partitions on `assigned` among the topics on `topics`.
    pub fn new(
        flow: Arc<FlowConfig>,
        source: ClusterConfig,
        target: ClusterConfig,
        index: FlowIndex,
        metrics: Arc<FlowMetrics>,
        topics: watch::Receiver<BTreeMap<String, TopicState>>,
        assigned: watch::Receiver<BTreeSet<(String, i32)>>,
    ) -> Result<Checkpointer, MirrorError> {
        let name = format!("strait-mirror-checkpoints-{}", flow.name);
        Ok(Checkpointer {
            producer: target_producer(&target, 16 << 20, CHECKPOINT_MESSAGE_TIMEOUT_MS, None)?,
            source_client: group_client(&source, &name)?,
            target_client: group_client(&target, &name)?,
            flow,
            index,
            metrics,
            topics,
            assigned,
            rewound: BTreeSet::new(),
            incomplete: None,
            groups_failed: false,
            interrupt: Interrupt::default(),
        })
    }

    /// Runs a round every `checkpoint_interval_ms`, and one at once for every request on
    /// `requests`, until `stop`.
    pub async fn run(
        mut self,
        mut stop: watch::Receiver<bool>,
        requests: Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<RoundRequest>>>,
    ) {
        let mut tick =
            tokio::time::interval(Duration::from_millis(self.flow.checkpoint_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let reply = tokio::select! {
                _ = async { let _ = stop.wait_for(|s| *s).await; } => return self.close().await,
                _ = tick.tick() => None,
                request = async { requests.lock().await.recv().await } => request,
            };
            // A round in progress ends with the flow: what it published but did not remember
            // is published again by the next life's first round, which is harmless.
            let started = std::time::Instant::now();
            let result = tokio::select! {
                _ = async { let _ = stop.wait_for(|s| *s).await; } => return self.close().await,
                r = self.round() => r,
            };
            match &result {
                // A round that could not read or sync every group is not a completed one:
                // the checkpoint age keeps growing, so an alert on it fires.
                Ok(_) if self.groups_failed => {}
                Ok(_) => {
                    use std::sync::atomic::Ordering::Relaxed;
                    let round_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                    self.metrics.checkpoint_round_ms.store(round_ms, Relaxed);
                    self.metrics
                        .last_checkpoint_ms
                        .store(now_ms() as u64, Relaxed);
                }
                Err(e) => {
                    tracing::warn!(flow = %self.flow.name, error = %e, "checkpoint round failed; retrying");
                    self.metrics.error("checkpoint");
                }
            }
            if let Some(reply) = reply {
                // A caller that acts on the answer (a failover) must see every group of
                // every partition of the flow, or be told why not.
                let answer = match (result, self.incomplete.take()) {
                    (Ok(_), Some(why)) => Err(why),
                    (r, _) => r.map_err(|e| e.to_string()),
                };
                let _ = reply.send(answer);
            }
        }
    }

    /// Stops the bulk call of a round that was running, and waits (bounded) until the
    /// answers to the commits it had sent are in: no commit of this flow's lands after it
    /// stopped (the daemon gives its tasks 2 s, then abandons them).
    async fn close(self) {
        self.interrupt.stop();
        if !self
            .interrupt
            .wait_idle(Duration::from_millis(REQUEST_TIMEOUT_MS + 1_000))
            .await
        {
            tracing::warn!(flow = %self.flow.name, "a group offsets call was still waiting for answers when the flow stopped");
        }
    }

    /// One round: translate, publish, sync. Returns every translation it made, emitted as a
    /// new checkpoint or not.
    pub async fn round(&mut self) -> Result<Vec<GroupTranslation>, MirrorError> {
        let topics = self.topics.borrow().clone();
        let candidates: Vec<(String, i32)> = self
            .assigned
            .borrow()
            .iter()
            .filter(|(t, _)| topics.contains_key(t))
            .cloned()
            .collect();
        // A partition whose source or target topic has another id than the index's runs
        // belong to (recreated, and the pump has not started the new incarnation, or is
        // stopped by `on_target_topic_recreated: stop`) does not translate: its runs point
        // into a topic that is gone.
        let mut held = Vec::with_capacity(candidates.len());
        let mut withheld = Vec::new();
        for (t, p) in candidates {
            let state = &topics[&t];
            let (source_id, target_id) = (&state.source_topic_id, &state.target_topic_id);
            if self
                .index
                .replaced(&t, p, source_id.as_deref(), target_id.as_deref())?
            {
                withheld.push(format!("{t}/{p}"));
            } else {
                held.push((t, p));
            }
        }
        let partitions: usize = topics
            .values()
            .map(|t| usize::try_from(t.source_partitions).unwrap_or(0))
            .sum();
        self.incomplete = (held.len() < partitions).then(|| {
            format!(
                "this daemon holds {} of the flow's {partitions} partitions (another daemon, or a rebalance in progress)",
                held.len()
            )
        });
        if !withheld.is_empty() {
            tracing::debug!(flow = %self.flow.name, partitions = ?withheld, "no checkpoints for partitions whose topic was recreated");
            self.incomplete = Some(format!(
                "no checkpoints for {} partitions whose topic was recreated and not copied again yet: {}",
                withheld.len(),
                withheld.join(", ")
            ));
        }
        self.groups_failed = false;
        if held.is_empty() {
            self.metrics
                .checkpoint_groups
                .store(0, std::sync::atomic::Ordering::Relaxed);
            return Ok(Vec::new());
        }
        let mut translations = Vec::new();
        let groups: Vec<String> = list_groups(&self.source_client, None)
            .await?
            .into_iter()
            .map(|(g, _)| g)
            .filter(|g| self.flow.groups.matches(g))
            .collect();
        let requests = groups.iter().map(|g| (g.clone(), held.clone())).collect();
        let answers = read_with(&self.source_client, requests, &self.interrupt).await?;
        let mut failed: Vec<String> = Vec::new();
        let mut covered = 0u64;
        let mut emitted: Vec<(CheckpointRecord, bool)> = Vec::new();
        for (group, answer) in groups.iter().zip(answers) {
            let partitions = match answer {
                Ok(p) => p,
                Err(e) => {
                    failed.push(format!("group {group}: {e}"));
                    continue;
                }
            };
            covered += 1;
            for e in partitions {
                if let Some(error) = &e.error {
                    failed.push(format!(
                        "group {group}, {}/{}: {error}",
                        e.topic, e.partition
                    ));
                    continue;
                }
                let Some(offset) = e.offset else {
                    continue; // the group never committed this partition
                };
                let translated = self.index.translate(&e.topic, e.partition, offset)?;
                translations.push(GroupTranslation {
                    group: group.clone(),
                    source_topic: e.topic.clone(),
                    topic: self.flow.remote_topic(&e.topic),
                    partition: e.partition,
                    source_offset: offset,
                    translated_offset: translated,
                });
                let Some(translated) = translated else {
                    continue; // not mirrored that far yet
                };
                let last = self.index.checkpoint(group, &e.topic, e.partition)?;
                if let Some(c) = next_checkpoint(last, offset, translated) {
                    let rewound = last.is_some_and(|l| offset < l.source_offset);
                    emitted.push((
                        CheckpointRecord {
                            group: group.clone(),
                            source_topic: e.topic.clone(),
                            topic: self.flow.remote_topic(&e.topic),
                            partition: e.partition,
                            upstream_offset: c.source_offset,
                            downstream_offset: c.target_offset,
                            metadata: e.metadata,
                        },
                        rewound,
                    ));
                }
            }
        }
        self.publish(&emitted).await?;
        for (c, rewound) in &emitted {
            self.index.set_checkpoint(
                &c.group,
                &c.source_topic,
                c.partition,
                Checkpoint {
                    source_offset: c.upstream_offset,
                    target_offset: c.downstream_offset,
                },
            )?;
            if *rewound {
                self.rewound
                    .insert((c.group.clone(), c.source_topic.clone(), c.partition));
            }
        }
        if self.flow.sync_group_offsets {
            self.sync_groups(&groups, &held, &mut failed).await?;
        }
        if let Some(first) = failed.first() {
            // The other groups went on; a caller acting on this round is told it is partial.
            tracing::warn!(flow = %self.flow.name, failures = failed.len(), first = %first, "some group offsets could not be read or synced this round");
            self.metrics.error("checkpoint");
            self.groups_failed = true;
            self.incomplete = Some(format!(
                "{} group offsets could not be read or synced, the first: {first}",
                failed.len()
            ));
        }
        self.metrics
            .checkpoint_groups
            .store(covered, std::sync::atomic::Ordering::Relaxed);
        Ok(translations)
    }

    /// Writes checkpoints to `<source>.checkpoints.internal` in MirrorMaker 2's format.
    async fn publish(&self, records: &[(CheckpointRecord, bool)]) -> Result<(), MirrorError> {
        let mut encoded = Vec::with_capacity(records.len());
        for (c, _) in records {
            let checkpoint = crate::mm2::Checkpoint {
                group: c.group.clone(),
                topic: c.topic.clone(),
                partition: c.partition,
                upstream_offset: c.upstream_offset,
                downstream_offset: c.downstream_offset,
                metadata: c.metadata.clone(),
            };
            let encode = |e: crate::mm2::FormatError| {
                MirrorError::Other(format!("encoding a checkpoint of group {}: {e}", c.group))
            };
            encoded.push((
                checkpoint.key().map_err(encode)?,
                checkpoint.value().map_err(encode)?,
            ));
        }
        let topic = self.flow.checkpoints_topic();
        send_to_partition_zero(&self.producer, &topic, &encoded, "publishing a checkpoint")?.await
    }

    /// Commits each group's checkpoints on the target where the group has no active member
    /// there and the target is behind (or the source group was rewound). Every group is read
    /// and committed from one client; a group that fails is added to `failed` and the others
    /// go on.
    async fn sync_groups(
        &mut self,
        groups: &[String],
        held: &[(String, i32)],
        failed: &mut Vec<String>,
    ) -> Result<(), MirrorError> {
        let mut wanted: Vec<GroupCommit> = Vec::new();
        for group in groups {
            let mut list = Vec::new();
            for (t, p) in held {
                if let Some(c) = self.index.checkpoint(group, t, *p)? {
                    list.push((t.clone(), *p, c.target_offset));
                }
            }
            if !list.is_empty() {
                wanted.push((group.clone(), list));
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let members = members_by_group(&self.target_client).await?;
        wanted.retain(|(group, _)| {
            let active = members.get(group).copied().unwrap_or(0);
            if active > 0 {
                tracing::debug!(flow = %self.flow.name, group, members = active, "group is active on the target; not syncing its offsets");
            }
            active == 0
        });
        let requests = wanted
            .iter()
            .map(|(g, list)| {
                let partitions = list
                    .iter()
                    .map(|(t, p, _)| (self.flow.remote_topic(t), *p))
                    .collect();
                (g.clone(), partitions)
            })
            .collect();
        let answers = read_with(&self.target_client, requests, &self.interrupt).await?;
        let mut commits = Vec::new();
        for ((group, list), answer) in wanted.into_iter().zip(answers) {
            let current = match answer {
                Ok(p) => offsets_by_partition(&p),
                Err(e) => {
                    failed.push(format!("group {group} on the target: {e}"));
                    continue;
                }
            };
            let mut commit = Vec::new();
            for (t, p, offset) in list {
                let remote = self.flow.remote_topic(&t);
                let behind = current
                    .get(&(remote.clone(), p))
                    .is_none_or(|have| *have < offset);
                if behind || self.rewound.contains(&(group.clone(), t, p)) {
                    commit.push((remote, p, offset));
                }
            }
            if !commit.is_empty() {
                commits.push((group, commit));
            }
        }
        if commits.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = commits.iter().map(|(g, _)| g.clone()).collect();
        let answers = write_with(&self.target_client, commits, &self.interrupt).await?;
        let mut synced = 0usize;
        for (group, answer) in names.iter().zip(answers) {
            match answer {
                Ok(partitions) => {
                    for p in partitions {
                        if let Some(error) = p.error {
                            failed.push(format!(
                                "committing group {group}, {}/{} on the target: {error}",
                                p.topic, p.partition
                            ));
                            continue;
                        }
                        synced += 1;
                        if let Some(source_topic) = self.flow.source_topic_of(&p.topic) {
                            self.rewound
                                .remove(&(group.clone(), source_topic, p.partition));
                        }
                    }
                }
                Err(e) => failed.push(format!("committing group {group} on the target: {e}")),
            }
        }
        tracing::debug!(flow = %self.flow.name, groups = names.len(), partitions = synced, "synced group offsets to the target");
        Ok(())
    }
}
