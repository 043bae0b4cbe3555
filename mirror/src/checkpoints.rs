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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::clients::{
    blocking, client_config, send_to_partition_zero, target_producer, MirrorContext, MirrorError,
    PollConsumer, Producer, REQUEST_TIMEOUT_MS,
};
use crate::config::{ClusterConfig, FlowConfig};
use crate::metrics::{now_ms, FlowMetrics, TopicState};
use crate::offsets::{next_checkpoint, Checkpoint, FlowIndex};

/// At most this many groups are checkpointed per round; the rest wait for a later round.
pub const GROUPS_PER_ROUND_MAX: usize = 1_000;
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

/// The committed offsets in `tpl` by (topic, partition); a partition without one is left out.
pub(crate) fn offsets_of(tpl: &TopicPartitionList) -> HashMap<(String, i32), i64> {
    tpl.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
            _ => None,
        })
        .collect()
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
/// is and says so. Returns every checkpoint with what the target holds afterwards.
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
    let lister = group_client(target, &format!("strait-mirror-final-{}", flow.name))?;
    let mut out = Vec::new();
    for (group, list) in by_group {
        let client = group_client(target, &group)?;
        let members: usize = {
            let lister = lister.clone();
            let g = group.clone();
            blocking(move || {
                lister
                    .fetch_group_list(Some(&g), Duration::from_millis(REQUEST_TIMEOUT_MS))
                    .map(|l| l.groups().iter().map(|g| g.members().len()).sum())
                    .map_err(MirrorError::kafka("describing a group on the target"))
            })
            .await?
        };
        let mut tpl = TopicPartitionList::new();
        for (t, p, _) in &list {
            tpl.add_partition(&flow.remote_topic(t), *p);
        }
        let current = offsets_of(&committed(&client, tpl).await?);
        let mut commit = TopicPartitionList::new();
        let mut entries = Vec::new();
        for (t, p, c) in list {
            let remote = flow.remote_topic(&t);
            let have = current.get(&(remote.clone(), p)).copied();
            let skipped = if members > 0 {
                Some(format!("{members} members active on the target"))
            } else if have.is_some_and(|h| h >= c.target_offset) {
                Some("the target is already at or past the checkpoint".to_string())
            } else {
                commit
                    .add_partition_offset(&remote, p, Offset::Offset(c.target_offset))
                    .map_err(MirrorError::kafka("building a commit"))?;
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
        if commit.count() > 0 {
            let committer = client.clone();
            blocking(move || {
                committer
                    .commit(&commit, CommitMode::Sync)
                    .map_err(MirrorError::kafka(
                        "committing the last checkpoints on the target",
                    ))
            })
            .await?;
            // Read back, so the answer is what the target holds, not what was asked.
            let mut tpl = TopicPartitionList::new();
            for e in &entries {
                tpl.add_partition(&e.topic, e.partition);
            }
            let after = offsets_of(&committed(&client, tpl).await?);
            for e in &mut entries {
                e.target_offset = after.get(&(e.topic.clone(), e.partition)).copied();
            }
        }
        tracing::info!(flow = %flow.name, group, offsets = entries.len(), "committed the last checkpoints on the target");
        out.extend(entries);
    }
    Ok(out)
}

/// A request for a round now (the failover's final checkpoint), answered with the round's
/// translations or why it failed.
pub type RoundRequest = tokio::sync::oneshot::Sender<Result<Vec<GroupTranslation>, String>>;

/// The checkpoint task of one flow.
pub struct Checkpointer {
    flow: Arc<FlowConfig>,
    source: ClusterConfig,
    target: ClusterConfig,
    index: FlowIndex,
    metrics: Arc<FlowMetrics>,
    topics: watch::Receiver<BTreeMap<String, TopicState>>,
    assigned: watch::Receiver<BTreeSet<(String, i32)>>,
    producer: Producer,
    source_client: Arc<PollConsumer>,
    target_client: Arc<PollConsumer>,
    source_groups: HashMap<String, Arc<PollConsumer>>,
    target_groups: HashMap<String, Arc<PollConsumer>>,
    /// Group partitions whose source offset went backwards and whose target group has not
    /// been moved back yet.
    rewound: BTreeSet<(String, String, i32)>,
    /// Why the last round did not cover the whole flow, if it did not.
    incomplete: Option<String>,
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

/// The offsets committed for the partitions of `tpl` by `client`'s group.
pub(crate) async fn committed(
    client: &Arc<PollConsumer>,
    tpl: TopicPartitionList,
) -> Result<TopicPartitionList, MirrorError> {
    let client = client.clone();
    blocking(move || {
        client
            .committed_offsets(tpl, Duration::from_millis(REQUEST_TIMEOUT_MS))
            .map_err(MirrorError::kafka("reading committed offsets"))
    })
    .await
}

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
            source,
            target,
            index,
            metrics,
            topics,
            assigned,
            source_groups: HashMap::new(),
            target_groups: HashMap::new(),
            rewound: BTreeSet::new(),
            incomplete: None,
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
                _ = async { let _ = stop.wait_for(|s| *s).await; } => return self.close(),
                _ = tick.tick() => None,
                request = async { requests.lock().await.recv().await } => request,
            };
            // A round in progress ends with the flow: what it published but did not remember
            // is published again by the next life's first round, which is harmless.
            let result = tokio::select! {
                _ = async { let _ = stop.wait_for(|s| *s).await; } => return self.close(),
                r = self.round() => r,
            };
            match &result {
                Ok(_) => self
                    .metrics
                    .last_checkpoint_ms
                    .store(now_ms() as u64, std::sync::atomic::Ordering::Relaxed),
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

    /// Lets go of the per-group clients off the async threads: librdkafka's destroy of each
    /// takes a moment, and a flow with many groups would otherwise hold its stop for seconds.
    fn close(mut self) {
        let clients: Vec<Arc<PollConsumer>> = self
            .source_groups
            .drain()
            .chain(self.target_groups.drain())
            .map(|(_, c)| c)
            .collect();
        tokio::task::spawn_blocking(move || drop(clients));
    }

    /// One round: translate, publish, sync. Returns every translation it made, emitted as a
    /// new checkpoint or not.
    pub async fn round(&mut self) -> Result<Vec<GroupTranslation>, MirrorError> {
        let topics = self.topics.borrow().clone();
        let held: Vec<(String, i32)> = self
            .assigned
            .borrow()
            .iter()
            .filter(|(t, _)| topics.contains_key(t))
            .cloned()
            .collect();
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
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let mut translations = Vec::new();
        let mut groups: Vec<String> = list_groups(&self.source_client, None)
            .await?
            .into_iter()
            .map(|(g, _)| g)
            .filter(|g| self.flow.groups.matches(g))
            .collect();
        if groups.len() > GROUPS_PER_ROUND_MAX {
            tracing::warn!(flow = %self.flow.name, groups = groups.len(), limit = GROUPS_PER_ROUND_MAX, "too many groups for one round; the rest wait");
            self.incomplete = Some(format!(
                "{} groups match the flow, above the {GROUPS_PER_ROUND_MAX} a round takes",
                groups.len()
            ));
            groups.truncate(GROUPS_PER_ROUND_MAX);
        }
        self.source_groups.retain(|g, _| groups.contains(g));
        self.target_groups.retain(|g, _| groups.contains(g));
        let mut emitted: Vec<(CheckpointRecord, bool)> = Vec::new();
        for group in &groups {
            let client = match self.source_groups.get(group) {
                Some(c) => c.clone(),
                None => {
                    let c = group_client(&self.source, group)?;
                    self.source_groups.insert(group.clone(), c.clone());
                    c
                }
            };
            let mut tpl = TopicPartitionList::new();
            for (t, p) in &held {
                tpl.add_partition(t, *p);
            }
            let committed = committed(&client, tpl).await?;
            for e in committed.elements() {
                let Offset::Offset(offset) = e.offset() else {
                    continue; // the group never committed this partition
                };
                let translated = self.index.translate(e.topic(), e.partition(), offset)?;
                translations.push(GroupTranslation {
                    group: group.clone(),
                    source_topic: e.topic().to_string(),
                    topic: self.flow.remote_topic(e.topic()),
                    partition: e.partition(),
                    source_offset: offset,
                    translated_offset: translated,
                });
                let Some(translated) = translated else {
                    continue; // not mirrored that far yet
                };
                let last = self.index.checkpoint(group, e.topic(), e.partition())?;
                if let Some(c) = next_checkpoint(last, offset, translated) {
                    let rewound = last.is_some_and(|l| offset < l.source_offset);
                    emitted.push((
                        CheckpointRecord {
                            group: group.clone(),
                            source_topic: e.topic().to_string(),
                            topic: self.flow.remote_topic(e.topic()),
                            partition: e.partition(),
                            upstream_offset: c.source_offset,
                            downstream_offset: c.target_offset,
                            metadata: e.metadata().to_string(),
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
            for group in &groups {
                self.sync_group(group, &held).await?;
            }
        }
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

    /// Commits `group`'s checkpoints on the target if no member is active there.
    async fn sync_group(&mut self, group: &str, held: &[(String, i32)]) -> Result<(), MirrorError> {
        let mut wanted = Vec::new();
        for (t, p) in held {
            if let Some(c) = self.index.checkpoint(group, t, *p)? {
                wanted.push((t.clone(), *p, c.target_offset));
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let members: usize = list_groups(&self.target_client, Some(group.to_string()))
            .await?
            .iter()
            .map(|(_, m)| *m)
            .sum();
        if members > 0 {
            tracing::debug!(flow = %self.flow.name, group, members, "group is active on the target; not syncing its offsets");
            return Ok(());
        }
        let client = match self.target_groups.get(group) {
            Some(c) => c.clone(),
            None => {
                let c = group_client(&self.target, group)?;
                self.target_groups.insert(group.to_string(), c.clone());
                c
            }
        };
        let mut tpl = TopicPartitionList::new();
        for (t, p, _) in &wanted {
            tpl.add_partition(&self.flow.remote_topic(t), *p);
        }
        let current = offsets_of(&committed(&client, tpl).await?);
        let mut commit = TopicPartitionList::new();
        let mut rewinds = Vec::new();
        for (t, p, offset) in &wanted {
            let remote = self.flow.remote_topic(t);
            let key = (group.to_string(), t.clone(), *p);
            let behind = current
                .get(&(remote.clone(), *p))
                .is_none_or(|have| have < offset);
            if behind || self.rewound.contains(&key) {
                commit
                    .add_partition_offset(&remote, *p, Offset::Offset(*offset))
                    .map_err(MirrorError::kafka("building a commit"))?;
                rewinds.push(key);
            }
        }
        if commit.count() == 0 {
            return Ok(());
        }
        let n = commit.count();
        blocking(move || {
            client
                .commit(&commit, CommitMode::Sync)
                .map_err(MirrorError::kafka(
                    "committing translated offsets on the target",
                ))
        })
        .await?;
        for key in rewinds {
            self.rewound.remove(&key);
        }
        tracing::debug!(flow = %self.flow.name, group, partitions = n, "synced group offsets to the target");
        Ok(())
    }
}
