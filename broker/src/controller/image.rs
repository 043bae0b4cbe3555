//! The cluster metadata image: what the replicated metadata log describes once applied, and
//! the commands that change it.
//!
//! This is Kafka's `MetadataImage` plus the part of `QuorumController` that turns a request
//! into records, collapsed into one deterministic step: every node applies the same committed
//! [`MetadataCommand`]s in the same order to the same [`MetadataImage`], so every node ends up
//! with the same image. Nothing here reads a clock, a random number or the disk; whatever a
//! command needs of those (a topic id, a replica assignment) the proposer puts in it.
//!
//! Leader election lives here too, because it is part of applying a command: fencing a broker,
//! a controlled shutdown or an unfenced broker coming back change leaders and ISRs by Kafka's
//! rules (`PartitionChangeBuilder`): the new leader is the first replica, in assignment order,
//! that is in the ISR and not fenced; a fenced broker leaves every ISR, except that an ISR never
//! becomes empty (its last member stays, so that it is the one eligible leader when it
//! returns); with no eligible leader the partition is offline (leader -1) unless the topic
//! allows unclean election, which then picks any live replica.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// No leader (Kafka's `NO_LEADER`).
pub const NO_LEADER: i32 = -1;

/// A broker as registered with the controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    /// Node id.
    pub id: i32,
    /// Advertised Kafka host.
    pub host: String,
    /// Advertised Kafka port.
    pub port: i32,
    /// Differs on every process start, so a restart is a new registration.
    pub incarnation_id: Uuid,
    /// The metadata log index of this registration (Kafka's broker epoch).
    pub epoch: u64,
    /// Fenced brokers lead nothing and are in no ISR (but a partition's last ISR member).
    pub fenced: bool,
    /// Set by a controlled shutdown until the broker registers again.
    pub shutting_down: bool,
}

/// Replicas, ISR and leader of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionImage {
    /// The assigned replicas; the first is the preferred leader.
    pub replicas: Vec<i32>,
    /// In-sync replicas.
    pub isr: Vec<i32>,
    /// The leader, or [`NO_LEADER`].
    pub leader: i32,
    /// Bumped on every leader change.
    pub leader_epoch: i32,
    /// Bumped on every change of this partition (Kafka's partition epoch).
    pub partition_epoch: i32,
    /// The last tail truncation asked of this partition (a failback removing a divergent
    /// tail); it acts once, when the leader starts its epoch.
    #[serde(default)]
    pub tail_truncation: Option<TailTruncation>,
}

/// A truncation of a partition's tail: the leader of `leader_epoch`, before it appends in
/// that epoch, cuts its log to `end_offset` (whole batches: at or before it), and the
/// followers follow through their leader-epoch check, as after any unclean leader change.
/// Kafka has no such request (its logs only lose a tail to a leader's history); strait needs
/// it to fail back without mixing a divergent tail into restored records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TailTruncation {
    /// The epoch that starts at the cut.
    pub leader_epoch: i32,
    /// The offset to cut at.
    pub end_offset: i64,
}

/// The name under which IncrementalAlterConfigs (SET) asks for a tail truncation of a
/// write-protected topic: `PARTITION:END_OFFSET[,PARTITION:END_OFFSET...]`. An operation, not
/// a config: nothing is stored under it and DescribeConfigs never lists it.
pub const TAIL_TRUNCATION_KEY: &str = "strait.truncate.tail";

/// Parses [`TAIL_TRUNCATION_KEY`]'s value into `(partition, end offset)` pairs.
pub fn parse_tail_truncation(value: &str) -> Result<Vec<(i32, i64)>, String> {
    let mut ends: Vec<(i32, i64)> = Vec::new();
    for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (p, end) = pair
            .split_once(':')
            .ok_or_else(|| format!("`{pair}` is not PARTITION:END_OFFSET"))?;
        let p: i32 = p
            .trim()
            .parse()
            .map_err(|_| format!("`{p}` is not a partition number"))?;
        let end: i64 = end
            .trim()
            .parse()
            .map_err(|_| format!("`{end}` is not an offset"))?;
        if p < 0 || end < 0 {
            return Err(format!(
                "`{pair}`: partition and offset must not be negative"
            ));
        }
        if ends.iter().any(|(q, _)| *q == p) {
            return Err(format!("partition {p} is named twice"));
        }
        ends.push((p, end));
    }
    if ends.is_empty() {
        return Err("no partition named".to_string());
    }
    Ok(ends)
}

/// One topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicImage {
    /// Kafka topic id.
    pub id: Uuid,
    /// Topic-level config overrides, by Kafka name.
    pub configs: BTreeMap<String, String>,
    /// Partitions by index.
    pub partitions: Vec<PartitionImage>,
    /// Set while the topic is a mirror's replica or fenced for a failover: produce requests
    /// from anyone but its writer are refused (POLICY_VIOLATION). Kept beside the configs,
    /// not among them, so that config sync never copies it.
    #[serde(default)]
    pub write_protection: Option<WriteProtection>,
}

/// The name under which AlterConfigs, IncrementalAlterConfigs and DescribeConfigs carry a
/// topic's [`WriteProtection`]. It is not a topic config: it is stored beside them, reported
/// with config source UNKNOWN (so that config sync, which copies topic overrides, skips it),
/// and a request that names it may name nothing else.
pub const WRITE_PROTECTION_KEY: &str = "strait.write.protection";

/// Who may still write to a protected topic, and why the others may not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteProtection {
    /// The mirror flow the protection is for (named in the error producers get).
    pub flow: String,
    /// The client id whose produce requests are still accepted (the flow's own producer on
    /// its target); `None` refuses every writer (a source fenced for a failover).
    pub writer: Option<String>,
}

impl WriteProtection {
    /// The value form used on the wire (`strait.write.protection`): `flow=NAME` or
    /// `flow=NAME,writer=CLIENT_ID`.
    pub fn to_value(&self) -> String {
        match &self.writer {
            Some(w) => format!("flow={},writer={w}", self.flow),
            None => format!("flow={}", self.flow),
        }
    }

    /// Parses [`WriteProtection::to_value`]'s form.
    pub fn parse(value: &str) -> Result<WriteProtection, String> {
        let mut flow = None;
        let mut writer = None;
        for part in value.split(',') {
            let (key, v) = part.split_once('=').ok_or_else(|| {
                format!("`{part}` is not KEY=VALUE (expected flow=NAME[,writer=CLIENT_ID])")
            })?;
            let slot = match key.trim() {
                "flow" => &mut flow,
                "writer" => &mut writer,
                other => return Err(format!("unknown key `{other}` (expected flow and writer)")),
            };
            if slot.is_some() {
                return Err(format!("`{}` given twice", key.trim()));
            }
            let v = v.trim();
            if v.is_empty() {
                return Err(format!("`{}` is empty", key.trim()));
            }
            *slot = Some(v.to_string());
        }
        Ok(WriteProtection {
            flow: flow.ok_or("`flow` is missing (expected flow=NAME[,writer=CLIENT_ID])")?,
            writer,
        })
    }
}

/// Everything the metadata log holds, applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataImage {
    /// Set once, by the first command ever committed.
    pub cluster_id: Option<String>,
    /// Registered brokers by id.
    pub brokers: BTreeMap<i32, BrokerRegistration>,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicImage>,
    /// Dynamic broker configs: key `""` is the cluster default, a node id (as a string) that
    /// broker's own layer.
    pub broker_configs: BTreeMap<String, BTreeMap<String, String>>,
    /// The first producer id not yet handed out in a block.
    pub next_producer_id: i64,
    /// Log index of the last command applied (0 before any).
    pub applied_index: u64,
}

/// A change to the metadata, as committed to the metadata log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataCommand {
    /// Names the cluster; only the first one applied counts.
    InitCluster {
        /// The new cluster id.
        cluster_id: String,
    },
    /// A broker process announces itself; it starts fenced.
    RegisterBroker {
        /// Node id.
        id: i32,
        /// Advertised host.
        host: String,
        /// Advertised port.
        port: i32,
        /// This process's incarnation.
        incarnation_id: Uuid,
    },
    /// The controller saw no heartbeat within the session timeout.
    FenceBroker {
        /// Node id.
        id: i32,
        /// The registration being fenced; a newer one is left alone.
        epoch: u64,
    },
    /// A registered broker caught up with the metadata log and may lead again.
    UnfenceBroker {
        /// Node id.
        id: i32,
        /// Its registration.
        epoch: u64,
    },
    /// A broker stopping on purpose: move its leaderships and ISR memberships away, fence it.
    ControlledShutdown {
        /// Node id.
        id: i32,
        /// Its registration.
        epoch: u64,
    },
    /// CreateTopics, with the assignment the proposer chose.
    CreateTopic {
        /// Name.
        name: String,
        /// Topic id.
        id: Uuid,
        /// Config overrides.
        configs: BTreeMap<String, String>,
        /// Replicas per partition; the first of each list leads.
        assignment: Vec<Vec<i32>>,
    },
    /// DeleteTopics.
    DeleteTopic {
        /// Name.
        name: String,
    },
    /// CreatePartitions: replicas of the partitions added at the end.
    CreatePartitions {
        /// Topic.
        name: String,
        /// Replicas per new partition.
        assignment: Vec<Vec<i32>>,
    },
    /// Replaces a topic's whole override set.
    AlterTopicConfigs {
        /// Topic.
        name: String,
        /// The new overrides.
        configs: BTreeMap<String, String>,
    },
    /// Truncates partitions' tails (see [`TailTruncation`]); refused unless the topic is
    /// write-protected with no writer, so no producer races the cut.
    TruncateTails {
        /// Topic.
        name: String,
        /// `(partition, end offset)` pairs.
        ends: Vec<(i32, i64)>,
    },
    /// Sets or clears a topic's write protection.
    SetWriteProtection {
        /// Topic.
        name: String,
        /// The protection, or `None` to clear it.
        protection: Option<WriteProtection>,
    },
    /// Replaces one dynamic broker config layer (`""` or a node id).
    AlterBrokerConfigs {
        /// Layer.
        resource: String,
        /// The new values.
        configs: BTreeMap<String, String>,
    },
    /// A partition leader changes its ISR (Kafka's AlterPartition).
    AlterPartition {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The leader asking.
        leader: i32,
        /// The leader epoch it leads in.
        leader_epoch: i32,
        /// The partition epoch its view is based on.
        partition_epoch: i32,
        /// The ISR it wants.
        isr: Vec<i32>,
    },
    /// Hands out a block of producer ids.
    AllocateProducerIds {
        /// The broker asking (for the log).
        broker: i32,
        /// Block size.
        count: i64,
    },
}

impl MetadataCommand {
    /// A short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            MetadataCommand::InitCluster { .. } => "InitCluster",
            MetadataCommand::RegisterBroker { .. } => "RegisterBroker",
            MetadataCommand::FenceBroker { .. } => "FenceBroker",
            MetadataCommand::UnfenceBroker { .. } => "UnfenceBroker",
            MetadataCommand::ControlledShutdown { .. } => "ControlledShutdown",
            MetadataCommand::CreateTopic { .. } => "CreateTopic",
            MetadataCommand::DeleteTopic { .. } => "DeleteTopic",
            MetadataCommand::CreatePartitions { .. } => "CreatePartitions",
            MetadataCommand::AlterTopicConfigs { .. } => "AlterTopicConfigs",
            MetadataCommand::SetWriteProtection { .. } => "SetWriteProtection",
            MetadataCommand::TruncateTails { .. } => "TruncateTails",
            MetadataCommand::AlterBrokerConfigs { .. } => "AlterBrokerConfigs",
            MetadataCommand::AlterPartition { .. } => "AlterPartition",
            MetadataCommand::AllocateProducerIds { .. } => "AllocateProducerIds",
        }
    }
}

/// What applying a command gave: a Kafka error code (0 for success), a message, and a value
/// where the command has one (the first id of a producer-id block).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    /// Kafka error code; 0 is success.
    pub error_code: i16,
    /// Why it failed.
    pub message: Option<String>,
    /// A command-specific value.
    pub value: i64,
}

impl CommandResult {
    fn ok() -> CommandResult {
        CommandResult::default()
    }

    fn value(value: i64) -> CommandResult {
        CommandResult {
            value,
            ..CommandResult::default()
        }
    }

    fn error(error: ResponseError, message: String) -> CommandResult {
        CommandResult {
            error_code: error.code(),
            message: Some(message),
            value: 0,
        }
    }
}

const UNCLEAN_ELECTION: &str = "unclean.leader.election.enable";

/// Whether a topic enables unclean leader election, given the cluster default's value.
fn unclean_election_enabled(
    cluster_default: Option<&String>,
    configs: &BTreeMap<String, String>,
) -> bool {
    configs
        .get(UNCLEAN_ELECTION)
        .or(cluster_default)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

impl MetadataImage {
    /// Whether broker `id` may lead or be in an ISR: registered, not fenced, not stopping.
    pub fn is_active(&self, id: i32) -> bool {
        self.brokers
            .get(&id)
            .is_some_and(|b| !b.fenced && !b.shutting_down)
    }

    /// Active brokers, by id.
    pub fn active_brokers(&self) -> Vec<i32> {
        self.brokers
            .values()
            .filter(|b| !b.fenced && !b.shutting_down)
            .map(|b| b.id)
            .collect()
    }

    /// One partition.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionImage> {
        let index = usize::try_from(partition).ok()?;
        self.topics.get(topic)?.partitions.get(index)
    }

    /// Applies one committed command at log index `index`. Deterministic: the same image and
    /// command give the same result on every node.
    pub fn apply(&mut self, index: u64, command: &MetadataCommand) -> CommandResult {
        self.applied_index = index;
        let result = match command {
            MetadataCommand::InitCluster { cluster_id } => {
                if self.cluster_id.is_none() {
                    self.cluster_id = Some(cluster_id.clone());
                }
                CommandResult::ok()
            }
            MetadataCommand::RegisterBroker {
                id,
                host,
                port,
                incarnation_id,
            } => self.register_broker(index, *id, host, *port, *incarnation_id),
            MetadataCommand::FenceBroker { id, epoch } => match self.current(*id, *epoch) {
                Err(r) => r,
                Ok(()) => {
                    self.fence(*id);
                    CommandResult::ok()
                }
            },
            MetadataCommand::UnfenceBroker { id, epoch } => match self.current(*id, *epoch) {
                Err(r) => r,
                Ok(()) => {
                    self.unfence(*id);
                    CommandResult::ok()
                }
            },
            MetadataCommand::ControlledShutdown { id, epoch } => match self.current(*id, *epoch) {
                Err(r) => r,
                Ok(()) => {
                    if let Some(b) = self.brokers.get_mut(id) {
                        b.shutting_down = true;
                    }
                    self.fence(*id);
                    CommandResult::ok()
                }
            },
            MetadataCommand::CreateTopic {
                name,
                id,
                configs,
                assignment,
            } => self.create_topic(name, *id, configs, assignment),
            MetadataCommand::DeleteTopic { name } => {
                if self.topics.remove(name).is_some() {
                    CommandResult::ok()
                } else {
                    unknown_topic(name)
                }
            }
            MetadataCommand::CreatePartitions { name, assignment } => {
                self.create_partitions(name, assignment)
            }
            MetadataCommand::AlterTopicConfigs { name, configs } => {
                match self.topics.get_mut(name) {
                    Some(t) => {
                        t.configs = configs.clone();
                        CommandResult::ok()
                    }
                    None => unknown_topic(name),
                }
            }
            MetadataCommand::TruncateTails { name, ends } => self.truncate_tails(name, ends),
            MetadataCommand::SetWriteProtection { name, protection } => {
                match self.topics.get_mut(name) {
                    Some(t) => {
                        t.write_protection = protection.clone();
                        CommandResult::ok()
                    }
                    None => unknown_topic(name),
                }
            }
            MetadataCommand::AlterBrokerConfigs { resource, configs } => {
                if configs.is_empty() {
                    self.broker_configs.remove(resource);
                } else {
                    self.broker_configs
                        .insert(resource.clone(), configs.clone());
                }
                CommandResult::ok()
            }
            MetadataCommand::AlterPartition {
                topic,
                partition,
                leader,
                leader_epoch,
                partition_epoch,
                isr,
            } => self.alter_partition(
                topic,
                *partition,
                *leader,
                *leader_epoch,
                *partition_epoch,
                isr,
            ),
            MetadataCommand::AllocateProducerIds { broker: _, count } => {
                if *count <= 0 || *count > 1_000_000 {
                    CommandResult::error(
                        ResponseError::InvalidRequest,
                        format!("a producer id block of {count} ids"),
                    )
                } else {
                    let start = self.next_producer_id;
                    self.next_producer_id = start.saturating_add(*count);
                    CommandResult::value(start)
                }
            }
        };
        self.debug_check_invariants();
        result
    }

    /// Ok when `epoch` is broker `id`'s current registration.
    fn current(&self, id: i32, epoch: u64) -> Result<(), CommandResult> {
        match self.brokers.get(&id) {
            Some(b) if b.epoch == epoch => Ok(()),
            Some(b) => Err(CommandResult::error(
                ResponseError::StaleBrokerEpoch,
                format!(
                    "broker {id} is registered with epoch {}, not {epoch}",
                    b.epoch
                ),
            )),
            None => Err(CommandResult::error(
                ResponseError::BrokerIdNotRegistered,
                format!("broker {id} is not registered"),
            )),
        }
    }

    fn register_broker(
        &mut self,
        index: u64,
        id: i32,
        host: &str,
        port: i32,
        incarnation_id: Uuid,
    ) -> CommandResult {
        if let Some(existing) = self.brokers.get(&id) {
            if existing.incarnation_id == incarnation_id {
                // A retried registration of the same process: keep its epoch.
                return CommandResult::value(i64::try_from(existing.epoch).unwrap_or(i64::MAX));
            }
            // A new process of a registered broker: the old incarnation is gone.
            self.fence(id);
        }
        self.brokers.insert(
            id,
            BrokerRegistration {
                id,
                host: host.to_string(),
                port,
                incarnation_id,
                epoch: index,
                fenced: true,
                shutting_down: false,
            },
        );
        CommandResult::value(i64::try_from(index).unwrap_or(i64::MAX))
    }

    /// The cluster-default `unclean.leader.election.enable`, if set.
    fn cluster_unclean_election(&self) -> Option<String> {
        self.broker_configs
            .get("")
            .and_then(|c| c.get(UNCLEAN_ELECTION))
            .cloned()
    }

    /// Fences broker `id`: out of every ISR it shares with others, and a new leader wherever it
    /// led.
    fn fence(&mut self, id: i32) {
        if let Some(b) = self.brokers.get_mut(&id) {
            b.fenced = true;
        }
        let active = self.active_brokers();
        let cluster_default = self.cluster_unclean_election();
        for topic in self.topics.values_mut() {
            let unclean = unclean_election_enabled(cluster_default.as_ref(), &topic.configs);
            for p in &mut topic.partitions {
                if !p.isr.contains(&id) && p.leader != id {
                    continue;
                }
                let mut changed = false;
                if p.isr.len() > 1 && p.isr.contains(&id) {
                    p.isr.retain(|r| *r != id);
                    changed = true;
                }
                if p.leader == id {
                    let leader = elect(p, &active, unclean);
                    set_leader(p, leader);
                    changed = true;
                }
                if changed {
                    p.partition_epoch += 1;
                }
            }
        }
    }

    /// Unfences broker `id` and gives a leader to every leaderless partition it can lead.
    fn unfence(&mut self, id: i32) {
        if let Some(b) = self.brokers.get_mut(&id) {
            b.fenced = false;
            b.shutting_down = false;
        }
        let active = self.active_brokers();
        let cluster_default = self.cluster_unclean_election();
        for topic in self.topics.values_mut() {
            let unclean = unclean_election_enabled(cluster_default.as_ref(), &topic.configs);
            for p in &mut topic.partitions {
                if p.leader != NO_LEADER || !p.replicas.contains(&id) {
                    continue;
                }
                let leader = elect(p, &active, unclean);
                if leader != NO_LEADER {
                    set_leader(p, leader);
                    p.partition_epoch += 1;
                }
            }
        }
    }

    fn create_topic(
        &mut self,
        name: &str,
        id: Uuid,
        configs: &BTreeMap<String, String>,
        assignment: &[Vec<i32>],
    ) -> CommandResult {
        if self.topics.contains_key(name) {
            return CommandResult::error(
                ResponseError::TopicAlreadyExists,
                format!("Topic '{name}' already exists."),
            );
        }
        if let Err(message) = self.check_assignment(assignment) {
            return CommandResult::error(ResponseError::InvalidReplicaAssignment, message);
        }
        let partitions = assignment.iter().map(|r| self.new_partition(r)).collect();
        self.topics.insert(
            name.to_string(),
            TopicImage {
                id,
                configs: configs.clone(),
                partitions,
                write_protection: None,
            },
        );
        CommandResult::ok()
    }

    fn create_partitions(&mut self, name: &str, assignment: &[Vec<i32>]) -> CommandResult {
        if let Err(message) = self.check_assignment(assignment) {
            return CommandResult::error(ResponseError::InvalidReplicaAssignment, message);
        }
        let added: Vec<PartitionImage> = assignment.iter().map(|r| self.new_partition(r)).collect();
        match self.topics.get_mut(name) {
            Some(t) => {
                t.partitions.extend(added);
                CommandResult::ok()
            }
            None => unknown_topic(name),
        }
    }

    /// A new partition: every replica that is active is in the ISR; the first of those leads.
    fn new_partition(&self, replicas: &[i32]) -> PartitionImage {
        let isr: Vec<i32> = replicas
            .iter()
            .copied()
            .filter(|r| self.is_active(*r))
            .collect();
        let leader = isr.first().copied().unwrap_or(NO_LEADER);
        PartitionImage {
            replicas: replicas.to_vec(),
            isr: if isr.is_empty() {
                replicas.to_vec()
            } else {
                isr
            },
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
            tail_truncation: None,
        }
    }

    fn check_assignment(&self, assignment: &[Vec<i32>]) -> Result<(), String> {
        if assignment.is_empty() {
            return Err("no partitions in the assignment".to_string());
        }
        for replicas in assignment {
            if replicas.is_empty() {
                return Err(
                    "The manual partition assignment includes an empty replica list.".into(),
                );
            }
            for (i, r) in replicas.iter().enumerate() {
                if !self.brokers.contains_key(r) {
                    return Err(format!(
                        "The manual partition assignment includes broker {r}, but no such broker is registered."
                    ));
                }
                if replicas[..i].contains(r) {
                    return Err(format!(
                        "The manual partition assignment includes the broker {r} more than once."
                    ));
                }
            }
        }
        Ok(())
    }

    fn alter_partition(
        &mut self,
        topic: &str,
        partition: i32,
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: &[i32],
    ) -> CommandResult {
        let active = self.active_brokers();
        let Some(p) = self
            .topics
            .get_mut(topic)
            .and_then(|t| t.partitions.get_mut(usize::try_from(partition).ok()?))
        else {
            return unknown_topic(topic);
        };
        if p.leader != leader {
            return CommandResult::error(
                ResponseError::NotLeaderOrFollower,
                format!("{topic}-{partition} is led by {}, not {leader}", p.leader),
            );
        }
        if leader_epoch < p.leader_epoch {
            return CommandResult::error(
                ResponseError::FencedLeaderEpoch,
                format!(
                    "{topic}-{partition}: leader epoch {leader_epoch} is older than {}",
                    p.leader_epoch
                ),
            );
        }
        if leader_epoch > p.leader_epoch || partition_epoch != p.partition_epoch {
            return CommandResult::error(
                ResponseError::InvalidUpdateVersion,
                format!(
                    "{topic}-{partition}: request is based on leader epoch {leader_epoch} and partition epoch {partition_epoch}, the controller has {} and {}",
                    p.leader_epoch, p.partition_epoch
                ),
            );
        }
        if !isr.contains(&leader) || isr.iter().any(|r| !p.replicas.contains(r)) {
            return CommandResult::error(
                ResponseError::InvalidRequest,
                format!(
                    "{topic}-{partition}: ISR {isr:?} must contain the leader and only replicas"
                ),
            );
        }
        // Kafka 3.3+: a fenced or stopping broker may not join the ISR.
        if let Some(r) = isr
            .iter()
            .find(|r| !p.isr.contains(r) && !active.contains(r))
        {
            return CommandResult::error(
                ResponseError::IneligibleReplica,
                format!("{topic}-{partition}: broker {r} is fenced or shutting down"),
            );
        }
        let mut deduped = Vec::with_capacity(isr.len());
        for r in isr {
            if !deduped.contains(r) {
                deduped.push(*r);
            }
        }
        p.isr = deduped;
        p.partition_epoch += 1;
        CommandResult::value(i64::from(p.partition_epoch))
    }

    /// Invariants every applied image keeps (checked in debug builds).
    fn debug_check_invariants(&self) {
        if cfg!(debug_assertions) {
            for (name, t) in &self.topics {
                for (i, p) in t.partitions.iter().enumerate() {
                    debug_assert!(!p.isr.is_empty(), "{name}-{i}: empty ISR");
                    debug_assert!(
                        p.isr.iter().all(|r| p.replicas.contains(r)),
                        "{name}-{i}: ISR {:?} outside replicas {:?}",
                        p.isr,
                        p.replicas
                    );
                    debug_assert!(
                        p.leader == NO_LEADER || p.isr.contains(&p.leader),
                        "{name}-{i}: leader {} not in ISR {:?}",
                        p.leader,
                        p.isr
                    );
                }
            }
        }
    }
}

impl MetadataImage {
    /// Starts a new leader epoch for each named partition, carrying the cut its leader makes
    /// before appending in it. All or nothing.
    fn truncate_tails(&mut self, name: &str, ends: &[(i32, i64)]) -> CommandResult {
        let Some(topic) = self.topics.get_mut(name) else {
            return unknown_topic(name);
        };
        // Fenced with no writer: a writer's produce could land before the leader applies the
        // cut and then be cut with it, after it was acknowledged.
        if topic
            .write_protection
            .as_ref()
            .is_none_or(|p| p.writer.is_some())
        {
            return CommandResult::error(
                ResponseError::PolicyViolation,
                format!("topic `{name}` takes writes: fence it (write protection with no writer) before truncating its tail"),
            );
        }
        for (p, _) in ends {
            let Some(partition) = usize::try_from(*p)
                .ok()
                .and_then(|i| topic.partitions.get(i))
            else {
                return CommandResult::error(
                    ResponseError::UnknownTopicOrPartition,
                    format!("topic `{name}` has no partition {p}"),
                );
            };
            if partition.leader == NO_LEADER {
                return CommandResult::error(
                    ResponseError::LeaderNotAvailable,
                    format!("{name}-{p} has no leader to truncate it"),
                );
            }
        }
        for (p, end) in ends {
            let partition = &mut topic.partitions[*p as usize];
            partition.leader_epoch += 1;
            partition.partition_epoch += 1;
            partition.tail_truncation = Some(TailTruncation {
                leader_epoch: partition.leader_epoch,
                end_offset: *end,
            });
        }
        CommandResult::ok()
    }
}

fn unknown_topic(name: &str) -> CommandResult {
    CommandResult::error(
        ResponseError::UnknownTopicOrPartition,
        format!("topic `{name}` does not exist"),
    )
}

/// Kafka's election: the first replica (assignment order) in the ISR that is active; failing
/// that, with unclean election, the first active replica (which then is the whole ISR).
fn elect(p: &mut PartitionImage, active: &[i32], unclean: bool) -> i32 {
    if let Some(r) = p
        .replicas
        .iter()
        .find(|r| p.isr.contains(r) && active.contains(r))
    {
        return *r;
    }
    if unclean {
        if let Some(r) = p.replicas.iter().find(|r| active.contains(r)) {
            tracing::warn!(replica = *r, isr = ?p.isr, "unclean leader election: records only the old ISR had may be lost");
            p.isr = vec![*r];
            return *r;
        }
    }
    NO_LEADER
}

fn set_leader(p: &mut PartitionImage, leader: i32) {
    if p.leader != leader {
        p.leader = leader;
        p.leader_epoch += 1;
    }
}

/// Kafka's rack-unaware replica placement, simplified: partition `p`'s replicas are the
/// brokers starting at `(start + p) mod n`, in id order, wrapping. `start` should be random so
/// that topics do not all lead on the same broker.
pub fn assign_replicas(
    brokers: &[i32],
    first_partition: i32,
    partitions: i32,
    replication_factor: usize,
    start: usize,
) -> Vec<Vec<i32>> {
    let n = brokers.len();
    if n == 0 {
        return Vec::new();
    }
    (first_partition..first_partition + partitions)
        .map(|p| {
            let first = (start + usize::try_from(p).unwrap_or(0)) % n;
            (0..replication_factor.min(n))
                .map(|j| brokers[(first + j) % n])
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(image: &mut MetadataImage, index: &mut u64, id: i32) -> u64 {
        *index += 1;
        let r = image.apply(
            *index,
            &MetadataCommand::RegisterBroker {
                id,
                host: "127.0.0.1".into(),
                port: 9090 + id,
                incarnation_id: Uuid::new_v4(),
            },
        );
        assert_eq!(r.error_code, 0);
        let epoch = u64::try_from(r.value).unwrap();
        *index += 1;
        let r = image.apply(*index, &MetadataCommand::UnfenceBroker { id, epoch });
        assert_eq!(r.error_code, 0);
        epoch
    }

    fn three_brokers() -> (MetadataImage, u64, Vec<u64>) {
        let mut image = MetadataImage::default();
        let mut index = 0;
        let epochs = (1..=3)
            .map(|id| register(&mut image, &mut index, id))
            .collect();
        (image, index, epochs)
    }

    fn create(image: &mut MetadataImage, index: &mut u64, name: &str, assignment: Vec<Vec<i32>>) {
        *index += 1;
        let r = image.apply(
            *index,
            &MetadataCommand::CreateTopic {
                name: name.into(),
                id: Uuid::new_v4(),
                configs: BTreeMap::new(),
                assignment,
            },
        );
        assert_eq!(r.error_code, 0, "{r:?}");
    }

    #[test]
    fn cluster_id_is_set_once() {
        let mut image = MetadataImage::default();
        image.apply(
            1,
            &MetadataCommand::InitCluster {
                cluster_id: "a".into(),
            },
        );
        image.apply(
            2,
            &MetadataCommand::InitCluster {
                cluster_id: "b".into(),
            },
        );
        assert_eq!(image.cluster_id.as_deref(), Some("a"));
        assert_eq!(image.applied_index, 2);
    }

    #[test]
    fn new_topic_leads_on_first_replica_with_full_isr() {
        let (mut image, mut index, _) = three_brokers();
        create(
            &mut image,
            &mut index,
            "t",
            vec![vec![2, 3, 1], vec![3, 1, 2]],
        );
        let p = image.partition("t", 0).unwrap();
        assert_eq!(
            (p.leader, p.isr.clone(), p.leader_epoch),
            (2, vec![2, 3, 1], 0)
        );
        assert_eq!(image.partition("t", 1).unwrap().leader, 3);
        index += 1;
        let again = image.apply(
            index,
            &MetadataCommand::CreateTopic {
                name: "t".into(),
                id: Uuid::new_v4(),
                configs: BTreeMap::new(),
                assignment: vec![vec![1]],
            },
        );
        assert_eq!(again.error_code, ResponseError::TopicAlreadyExists.code());
    }

    #[test]
    fn assignment_naming_an_unknown_broker_is_rejected() {
        let (mut image, index, _) = three_brokers();
        let r = image.apply(
            index + 1,
            &MetadataCommand::CreateTopic {
                name: "t".into(),
                id: Uuid::new_v4(),
                configs: BTreeMap::new(),
                assignment: vec![vec![1, 9]],
            },
        );
        assert_eq!(r.error_code, ResponseError::InvalidReplicaAssignment.code());
        assert!(image.topics.is_empty());
    }

    #[test]
    fn fencing_the_leader_elects_the_next_isr_member_and_bumps_epochs() {
        let (mut image, mut index, epochs) = three_brokers();
        create(&mut image, &mut index, "t", vec![vec![1, 2, 3]]);
        index += 1;
        image.apply(
            index,
            &MetadataCommand::FenceBroker {
                id: 1,
                epoch: epochs[0],
            },
        );
        let p = image.partition("t", 0).unwrap();
        assert_eq!(p.leader, 2);
        assert_eq!(p.isr, vec![2, 3]);
        assert_eq!((p.leader_epoch, p.partition_epoch), (1, 1));
    }

    #[test]
    fn fencing_a_follower_shrinks_the_isr_without_a_new_leader_epoch() {
        let (mut image, mut index, epochs) = three_brokers();
        create(&mut image, &mut index, "t", vec![vec![1, 2, 3]]);
        index += 1;
        image.apply(
            index,
            &MetadataCommand::FenceBroker {
                id: 3,
                epoch: epochs[2],
            },
        );
        let p = image.partition("t", 0).unwrap();
        assert_eq!((p.leader, p.isr.clone()), (1, vec![1, 2]));
        assert_eq!((p.leader_epoch, p.partition_epoch), (0, 1));
    }

    #[test]
    fn last_isr_member_stays_and_leads_again_when_unfenced() {
        let (mut image, mut index, epochs) = three_brokers();
        create(&mut image, &mut index, "t", vec![vec![1, 2, 3]]);
        for (id, epoch) in [(2, epochs[1]), (3, epochs[2]), (1, epochs[0])] {
            index += 1;
            image.apply(index, &MetadataCommand::FenceBroker { id, epoch });
        }
        let p = image.partition("t", 0).unwrap().clone();
        assert_eq!((p.leader, p.isr.clone()), (NO_LEADER, vec![1]));
        // Broker 2 coming back may not lead: it is not in the ISR (no unclean election).
        index += 1;
        image.apply(
            index,
            &MetadataCommand::UnfenceBroker {
                id: 2,
                epoch: epochs[1],
            },
        );
        assert_eq!(image.partition("t", 0).unwrap().leader, NO_LEADER);
        index += 1;
        image.apply(
            index,
            &MetadataCommand::UnfenceBroker {
                id: 1,
                epoch: epochs[0],
            },
        );
        let p2 = image.partition("t", 0).unwrap();
        assert_eq!((p2.leader, p2.isr.clone()), (1, vec![1]));
        assert!(p2.leader_epoch > p.leader_epoch);
    }

    #[test]
    fn unclean_election_picks_a_live_replica_only_when_enabled() {
        let (mut image, mut index, epochs) = three_brokers();
        create(&mut image, &mut index, "t", vec![vec![1, 2]]);
        index += 1;
        image.apply(
            index,
            &MetadataCommand::AlterTopicConfigs {
                name: "t".into(),
                configs: [(
                    "unclean.leader.election.enable".to_string(),
                    "true".to_string(),
                )]
                .into(),
            },
        );
        for (id, epoch) in [(2, epochs[1]), (1, epochs[0])] {
            index += 1;
            image.apply(index, &MetadataCommand::FenceBroker { id, epoch });
        }
        assert_eq!(image.partition("t", 0).unwrap().leader, NO_LEADER);
        index += 1;
        image.apply(
            index,
            &MetadataCommand::UnfenceBroker {
                id: 2,
                epoch: epochs[1],
            },
        );
        let p = image.partition("t", 0).unwrap();
        assert_eq!((p.leader, p.isr.clone()), (2, vec![2]));
    }

    #[test]
    fn controlled_shutdown_moves_leadership_and_a_new_registration_unfences() {
        let (mut image, mut index, epochs) = three_brokers();
        create(&mut image, &mut index, "t", vec![vec![1, 2, 3]]);
        index += 1;
        image.apply(
            index,
            &MetadataCommand::ControlledShutdown {
                id: 1,
                epoch: epochs[0],
            },
        );
        assert_eq!(image.partition("t", 0).unwrap().leader, 2);
        assert!(!image.is_active(1));
        let epoch = register(&mut image, &mut index, 1);
        assert!(epoch > epochs[0]);
        assert!(image.is_active(1));
        // Back, but not in the ISR until the leader adds it.
        assert_eq!(image.partition("t", 0).unwrap().isr, vec![2, 3]);
    }

    #[test]
    fn stale_epochs_are_rejected() {
        let (mut image, mut index, epochs) = three_brokers();
        register(&mut image, &mut index, 1);
        index += 1;
        let r = image.apply(
            index,
            &MetadataCommand::FenceBroker {
                id: 1,
                epoch: epochs[0],
            },
        );
        assert_eq!(r.error_code, ResponseError::StaleBrokerEpoch.code());
        assert!(image.is_active(1));
    }

    #[test]
    fn alter_partition_checks_leader_and_epochs() {
        let (mut image, mut index, _) = three_brokers();
        create(&mut image, &mut index, "t", vec![vec![1, 2, 3]]);
        let alter = |leader, leader_epoch, partition_epoch, isr: Vec<i32>| {
            MetadataCommand::AlterPartition {
                topic: "t".into(),
                partition: 0,
                leader,
                leader_epoch,
                partition_epoch,
                isr,
            }
        };
        index += 1;
        assert_eq!(
            image.apply(index, &alter(2, 0, 0, vec![2])).error_code,
            ResponseError::NotLeaderOrFollower.code()
        );
        index += 1;
        assert_eq!(
            image.apply(index, &alter(1, 0, 5, vec![1])).error_code,
            ResponseError::InvalidUpdateVersion.code()
        );
        index += 1;
        assert_eq!(
            image.apply(index, &alter(1, 0, 0, vec![2, 3])).error_code,
            ResponseError::InvalidRequest.code()
        );
        index += 1;
        let r = image.apply(index, &alter(1, 0, 0, vec![1, 3]));
        assert_eq!((r.error_code, r.value), (0, 1));
        assert_eq!(image.partition("t", 0).unwrap().isr, vec![1, 3]);
    }

    #[test]
    fn producer_id_blocks_never_overlap() {
        let mut image = MetadataImage::default();
        let a = image.apply(
            1,
            &MetadataCommand::AllocateProducerIds {
                broker: 1,
                count: 1000,
            },
        );
        let b = image.apply(
            2,
            &MetadataCommand::AllocateProducerIds {
                broker: 2,
                count: 1000,
            },
        );
        assert_eq!((a.value, b.value), (0, 1000));
    }

    #[test]
    fn placement_spreads_leaders_and_replicas() {
        let a = assign_replicas(&[1, 2, 3], 0, 3, 3, 1);
        assert_eq!(a, vec![vec![2, 3, 1], vec![3, 1, 2], vec![1, 2, 3]]);
        let single = assign_replicas(&[7], 0, 2, 3, 5);
        assert_eq!(single, vec![vec![7], vec![7]]);
    }

    #[test]
    fn write_protection_is_kept_in_the_image_and_an_older_image_reads_without_it() {
        let (mut image, mut index, _) = three_brokers();
        create(&mut image, &mut index, "m", vec![vec![1]]);
        let p = WriteProtection::parse("flow=a-to-b, writer=strait-mirror-a-to-b").unwrap();
        assert_eq!(p.to_value(), "flow=a-to-b,writer=strait-mirror-a-to-b");
        assert_eq!(WriteProtection::parse(&p.to_value()).unwrap(), p);
        index += 1;
        let r = image.apply(
            index,
            &MetadataCommand::SetWriteProtection {
                name: "m".into(),
                protection: Some(p.clone()),
            },
        );
        assert_eq!(r.error_code, 0);
        assert_eq!(image.topics["m"].write_protection, Some(p));
        index += 1;
        let r = image.apply(
            index,
            &MetadataCommand::SetWriteProtection {
                name: "gone".into(),
                protection: None,
            },
        );
        assert_eq!(r.error_code, ResponseError::UnknownTopicOrPartition.code());
        // A snapshot written before the field existed.
        let mut json = serde_json::to_value(&image).unwrap();
        json["topics"]["m"]
            .as_object_mut()
            .unwrap()
            .remove("write_protection");
        let old: MetadataImage = serde_json::from_value(json).unwrap();
        assert_eq!(old.topics["m"].write_protection, None);
    }
}
