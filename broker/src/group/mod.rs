//! The group coordinator: Kafka's classic consumer-group protocol (JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup) and committed offsets, kept in `__consumer_offsets`.
//!
//! It follows Apache Kafka's `GroupCoordinator` state machine: a group is `Empty`,
//! `PreparingRebalance` (collecting JoinGroups), `CompletingRebalance` (waiting for the leader's
//! SyncGroup) or `Stable`. A JoinGroup or a follower's SyncGroup that must wait parks on a
//! oneshot channel held by its member; the rebalance completes when every member has rejoined,
//! or when the rebalance timeout passes (members that did not rejoin are dropped). Kafka's
//! purgatory timers are replaced by one [`GroupCoordinator::tick`] every
//! [`TICK_INTERVAL_MS`], which checks every deadline: rebalance, initial delay, sync, session
//! and pending-member expiry.
//!
//! Every change that must survive a restart (a SyncGroup's assignment, a group emptied or
//! deleted, an offset commit or deletion) is appended to the group's `__consumer_offsets`
//! partition before the client is answered and before memory changes. [`GroupCoordinator::load`]
//! replays those partitions on start.
//!
//! All groups sit behind one mutex: operations are short (an append to a page-cached log at
//! most), and one lock makes the state machine easy to reason about.

pub mod storage;
pub mod writer;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tokio::sync::oneshot;

use crate::clock::now_ms;
use crate::error_code::ErrorCode;
use crate::log::batch;
use storage::{GroupValue, MemberValue, OffsetValue, StoredRecord, OFFSETS_TOPIC};
pub use writer::{PartitionWriter, WriteError};

/// How often group deadlines are checked; bounds how late a session timeout is noticed.
pub const TICK_INTERVAL_MS: u64 = 100;
/// Largest group id accepted (it is a key in the offsets topic).
pub const GROUP_ID_LENGTH_MAX: usize = 2048;
/// How often offsets partitions are checked for compaction.
pub const COMPACTION_CHECK_INTERVAL_MS: i64 = 60_000;
/// An offsets partition is compacted once it holds more records than this...
pub const COMPACTION_MIN_RECORDS: i64 = 10_000;
/// ...and more than this many times the records that are still live.
pub const COMPACTION_LIVE_FACTOR: i64 = 4;
/// Records per batch when a compaction rewrites live state (well under `max.message.bytes`).
const COMPACTION_BATCH_RECORDS: usize = 500;
/// How much of an offsets partition one read takes while it is replayed.
const LOAD_READ_BYTES: usize = 1024 * 1024;
/// Largest protocol metadata or assignment one member may send.
pub const MEMBER_METADATA_BYTES_MAX: usize = 1024 * 1024;

/// Coordinator settings, from the node config (Kafka's names in the field docs).
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `offsets.topic.num.partitions`.
    pub offsets_topic_num_partitions: i32,
    /// `group.min.session.timeout.ms`.
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`; also caps rebalance timeouts.
    pub max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`.
    pub initial_rebalance_delay_ms: i32,
    /// `group.max.size`.
    pub max_size: usize,
    /// `offset.metadata.max.bytes`.
    pub offset_metadata_max_bytes: usize,
    /// `offsets.retention.minutes`, in ms.
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms`.
    pub offsets_retention_check_interval_ms: i64,
    /// `offsets.commit.timeout.ms`: how long an offset commit waits for replication.
    pub offsets_commit_timeout_ms: u64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            offsets_topic_num_partitions: 50,
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_size: i32::MAX as usize,
            offset_metadata_max_bytes: 4096,
            offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
            offsets_retention_check_interval_ms: 600_000,
            offsets_commit_timeout_ms: 5_000,
        }
    }
}

impl GroupConfig {
    /// The coordinator's settings from the node's config.
    pub fn from_node(node: &crate::config::NodeConfig) -> GroupConfig {
        GroupConfig {
            offsets_topic_num_partitions: node.offsets_topic_num_partitions,
            min_session_timeout_ms: node.group_min_session_timeout_ms,
            max_session_timeout_ms: node.group_max_session_timeout_ms,
            initial_rebalance_delay_ms: node.group_initial_rebalance_delay_ms,
            max_size: usize::try_from(node.group_max_size).unwrap_or(0),
            offset_metadata_max_bytes: usize::try_from(node.offset_metadata_max_bytes).unwrap_or(0),
            offsets_retention_ms: node.offsets_retention_minutes.saturating_mul(60_000),
            offsets_commit_timeout_ms: node.offsets_commit_timeout_ms,
            ..GroupConfig::default()
        }
    }
}

/// A group's state, with Kafka's names (what DescribeGroups and ListGroups report).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members; may still hold committed offsets.
    Empty,
    /// Collecting JoinGroups for the next generation.
    PreparingRebalance,
    /// Generation chosen; waiting for the leader's assignment.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
    /// Deleted (only ever reported for unknown groups).
    Dead,
}

impl GroupState {
    /// Kafka's name for the state.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// A JoinGroup, decoded.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// Group.
    pub group_id: String,
    /// Member id; empty for a new member.
    pub member_id: String,
    /// Static membership id.
    pub group_instance_id: Option<String>,
    /// Client id from the request header.
    pub client_id: String,
    /// Client address, Kafka style (`/127.0.0.1`).
    pub client_host: String,
    /// Session timeout.
    pub session_timeout_ms: i32,
    /// Rebalance timeout (-1: same as the session timeout, as JoinGroup v0).
    pub rebalance_timeout_ms: i32,
    /// Protocol type, e.g. `consumer`.
    pub protocol_type: String,
    /// Supported protocols (assignors) in preference order, with their metadata.
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new member first gets MEMBER_ID_REQUIRED and a member id.
    pub require_known_member_id: bool,
}

/// One member as the leader sees it in a JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    /// Member id.
    pub member_id: String,
    /// Static membership id.
    pub group_instance_id: Option<String>,
    /// Metadata for the chosen protocol.
    pub metadata: Bytes,
}

/// A JoinGroup answer.
#[derive(Debug, Clone)]
pub struct JoinResult {
    /// Kafka error code.
    pub error_code: ErrorCode,
    /// Generation.
    pub generation_id: i32,
    /// Protocol type.
    pub protocol_type: Option<String>,
    /// Chosen protocol.
    pub protocol_name: Option<String>,
    /// Leader member id.
    pub leader_id: String,
    /// This member's id.
    pub member_id: String,
    /// Every member, for the leader only.
    pub members: Vec<JoinedMember>,
}

impl JoinResult {
    fn error(member_id: &str, code: ErrorCode) -> JoinResult {
        JoinResult {
            error_code: code,
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader_id: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

/// A SyncGroup, decoded.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    /// Group.
    pub group_id: String,
    /// Generation the member believes in.
    pub generation_id: i32,
    /// Member id.
    pub member_id: String,
    /// Static membership id.
    pub group_instance_id: Option<String>,
    /// v5+: protocol type the member expects.
    pub protocol_type: Option<String>,
    /// v5+: protocol the member expects.
    pub protocol_name: Option<String>,
    /// The leader's assignment, member id to bytes (empty from followers).
    pub assignments: Vec<(String, Bytes)>,
}

/// A SyncGroup answer.
#[derive(Debug, Clone)]
pub struct SyncResult {
    /// Kafka error code.
    pub error_code: ErrorCode,
    /// Protocol type.
    pub protocol_type: Option<String>,
    /// Chosen protocol.
    pub protocol_name: Option<String>,
    /// This member's assignment.
    pub assignment: Bytes,
}

impl SyncResult {
    fn error(code: ErrorCode) -> SyncResult {
        SyncResult {
            error_code: code,
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// One offset to commit.
#[derive(Debug, Clone)]
pub struct CommitPartition {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Next offset to consume.
    pub offset: i64,
    /// Leader epoch, -1 if unknown.
    pub leader_epoch: i32,
    /// Client metadata.
    pub metadata: String,
}

/// An OffsetCommit, decoded.
#[derive(Debug, Clone)]
pub struct CommitRequest {
    /// Group.
    pub group_id: String,
    /// Generation, or -1 for a commit from outside the group protocol.
    pub generation_id: i32,
    /// Member id, empty outside the group protocol.
    pub member_id: String,
    /// Static membership id.
    pub group_instance_id: Option<String>,
    /// Offsets.
    pub partitions: Vec<CommitPartition>,
}

/// A member as DescribeGroups reports it.
#[derive(Debug, Clone)]
pub struct MemberDescription {
    /// Member id.
    pub member_id: String,
    /// Static membership id.
    pub group_instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Subscription metadata (only when Stable, as Kafka).
    pub metadata: Bytes,
    /// Assignment (only when Stable, as Kafka).
    pub assignment: Bytes,
}

/// A group as DescribeGroups reports it.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    /// Group.
    pub group_id: String,
    /// State.
    pub state: GroupState,
    /// Protocol type ("" if none).
    pub protocol_type: String,
    /// Chosen protocol ("" if none).
    pub protocol_name: String,
    /// Members.
    pub members: Vec<MemberDescription>,
}

/// A group as ListGroups reports it.
#[derive(Debug, Clone)]
pub struct GroupListing {
    /// Group.
    pub group_id: String,
    /// Protocol type ("" if none).
    pub protocol_type: String,
    /// State.
    pub state: GroupState,
}

struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    awaiting_join: Option<oneshot::Sender<JoinResult>>,
    awaiting_sync: Option<oneshot::Sender<SyncResult>>,
    last_heartbeat_ms: i64,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    fn matches(&self, protocols: &[(String, Bytes)]) -> bool {
        self.protocols == protocols
    }

    /// Kafka's `hasSatisfiedHeartbeat`: a member parked in JoinGroup or SyncGroup cannot
    /// heartbeat on that connection, so only the rebalance deadlines apply to it.
    fn session_expired(&self, now_ms: i64) -> bool {
        self.awaiting_join.is_none()
            && self.awaiting_sync.is_none()
            && now_ms - self.last_heartbeat_ms > i64::from(self.session_timeout_ms)
    }
}

struct InitialDelay {
    until_ms: i64,
    limit_ms: i64,
    new_member_added: bool,
}

struct Group {
    id: String,
    state: GroupState,
    state_since_ms: i64,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    generation_id: i32,
    leader_id: Option<String>,
    /// In join order: the first member becomes leader.
    members: Vec<Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with their expiry.
    pending_members: HashMap<String, i64>,
    /// group.instance.id → member id.
    static_members: HashMap<String, String>,
    offsets: BTreeMap<(String, i32), OffsetValue>,
    /// The group metadata last written to the offsets topic (what a replay would restore).
    stored: Option<GroupValue>,
    rebalance_deadline_ms: i64,
    initial_delay: Option<InitialDelay>,
    sync_deadline_ms: i64,
}

impl Group {
    fn new(id: &str, now_ms: i64) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            state_since_ms: now_ms,
            protocol_type: None,
            protocol_name: None,
            generation_id: 0,
            leader_id: None,
            members: Vec::new(),
            pending_members: HashMap::new(),
            static_members: HashMap::new(),
            offsets: BTreeMap::new(),
            stored: None,
            rebalance_deadline_ms: 0,
            initial_delay: None,
            sync_deadline_ms: 0,
        }
    }

    fn transition(&mut self, to: GroupState, now_ms: i64) {
        tracing::debug!(group = %self.id, from = self.state.name(), to = to.name(), generation = self.generation_id, "group state");
        self.state = to;
        self.state_since_ms = now_ms;
    }

    fn member(&self, id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    fn member_mut(&mut self, id: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.id == id)
    }

    fn has(&self, id: &str) -> bool {
        self.member(id).is_some()
    }

    fn is_leader(&self, id: &str) -> bool {
        self.leader_id.as_deref() == Some(id)
    }

    /// Kafka's `isStaticMemberFenced`: the instance id belongs to another member id.
    fn static_member_fenced(&self, member_id: &str, instance_id: Option<&str>) -> bool {
        instance_id
            .and_then(|i| self.static_members.get(i))
            .is_some_and(|owner| owner != member_id)
    }

    /// FENCED_INSTANCE_ID or UNKNOWN_MEMBER_ID for a member that is not current.
    fn validate_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), ErrorCode> {
        if self.static_member_fenced(member_id, instance_id) {
            return Err(ErrorCode::from(E::FencedInstanceId));
        }
        if !self.has(member_id) {
            return Err(ErrorCode::from(E::UnknownMemberId));
        }
        Ok(())
    }

    /// Kafka's `supportsProtocols`.
    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|(name, _)| {
                self.members
                    .iter()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
            })
    }

    /// Kafka's `selectProtocol`: among protocols every member supports, each member votes for
    /// the first in its own preference order; most votes wins (ties: earliest in the leader's
    /// list, so the choice is deterministic).
    fn select_protocol(&self) -> Option<String> {
        let candidates: Vec<&str> = self
            .members
            .first()?
            .protocols
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|name| {
                self.members
                    .iter()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
            })
            .collect();
        let mut votes: Vec<(usize, &str)> = candidates.iter().map(|c| (0usize, *c)).collect();
        for m in &self.members {
            if let Some(choice) = m
                .protocols
                .iter()
                .find(|(n, _)| candidates.contains(&n.as_str()))
            {
                if let Some(v) = votes.iter_mut().find(|(_, c)| *c == choice.0) {
                    v.0 += 1;
                }
            }
        }
        let best = votes.iter().map(|(n, _)| *n).max()?;
        votes
            .iter()
            .find(|(n, _)| *n == best)
            .map(|(_, c)| c.to_string())
    }

    fn add_member(&mut self, member: Member) {
        if self.members.is_empty() {
            self.protocol_type = Some(member.protocol_type.clone());
        }
        if self.leader_id.is_none() {
            self.leader_id = Some(member.id.clone());
        }
        if let Some(instance) = &member.instance_id {
            self.static_members
                .insert(instance.clone(), member.id.clone());
        }
        self.members.push(member);
    }

    fn remove_member(&mut self, id: &str) -> Option<Member> {
        let pos = self.members.iter().position(|m| m.id == id)?;
        let member = self.members.remove(pos);
        if let Some(instance) = &member.instance_id {
            if self.static_members.get(instance).is_some_and(|m| m == id) {
                self.static_members.remove(instance);
            }
        }
        if self.is_leader(id) {
            self.leader_id = self.members.first().map(|m| m.id.clone());
        }
        self.pending_members.remove(id);
        Some(member)
    }

    fn all_members_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.iter().all(|m| m.awaiting_join.is_some())
    }

    /// The longest rebalance timeout of any member: how long a rebalance may take.
    fn rebalance_timeout_ms(&self) -> i64 {
        self.members
            .iter()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0)
    }

    fn current_result(&self, member_id: &str, with_members: bool) -> JoinResult {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        JoinResult {
            error_code: ErrorCode::NONE,
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader_id: self.leader_id.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: if with_members {
                self.members
                    .iter()
                    .map(|m| JoinedMember {
                        member_id: m.id.clone(),
                        group_instance_id: m.instance_id.clone(),
                        metadata: m.metadata_for(&protocol),
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    /// What is persisted for this group.
    fn stored_value(&self) -> GroupValue {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation_id,
            protocol: self.protocol_name.clone(),
            leader: self.leader_id.clone(),
            current_state_timestamp_ms: self.state_since_ms,
            members: self
                .members
                .iter()
                .map(|m| MemberValue {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// Topics the members subscribe to, when the protocol type is `consumer` and the
    /// subscriptions decode; None when that cannot be known.
    fn subscribed_topics(&self) -> Option<Vec<String>> {
        use kafka_protocol::messages::ConsumerProtocolSubscription;
        use kafka_protocol::protocol::Decodable;
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let protocol = self.protocol_name.clone()?;
        let mut topics = Vec::new();
        for m in &self.members {
            let mut data = m.metadata_for(&protocol);
            if data.len() < 2 {
                return None;
            }
            let version = i16::from_be_bytes([data[0], data[1]]);
            let _ = bytes::Buf::get_i16(&mut data);
            let version = version.clamp(0, 3);
            // A member's metadata is the client's bytes: checked before the decoder reserves
            // from its counts (see `wire`).
            crate::wire::check_subscription(version, &data).ok()?;
            let sub = ConsumerProtocolSubscription::decode(&mut data, version).ok()?;
            topics.extend(sub.topics.iter().map(|t| t.to_string()));
        }
        topics.sort();
        topics.dedup();
        Some(topics)
    }
}

/// Why a write to `__consumer_offsets` failed, as the Kafka error code for the client (Kafka's
/// mapping in `GroupMetadataManager.storeOffsets`).
fn store_error_code(e: &WriteError) -> ErrorCode {
    let c = e.code;
    if c.is(E::MessageTooLarge) || c.is(E::RecordListTooLarge) {
        E::InvalidCommitOffsetSize.into()
    } else if c.is(E::UnknownTopicOrPartition) || c.is(E::NotLeaderOrFollower) {
        E::NotCoordinator.into()
    } else {
        E::CoordinatorNotAvailable.into()
    }
}

/// An appended offset commit waiting for replication, with the indices of the request's
/// partitions whose answer depends on it.
type PendingCommit<A> = (i64, A, Vec<usize>);

/// The group coordinator of one node (on a single node it owns every group).
pub struct GroupCoordinator {
    config: GroupConfig,
    groups: Mutex<HashMap<String, Group>>,
    /// The offsets partitions this node leads and has loaded.
    loaded: Mutex<BTreeSet<i32>>,
    last_retention_check_ms: Mutex<i64>,
    last_compaction_check_ms: Mutex<i64>,
}

enum Step<T> {
    Done(T),
    Wait(oneshot::Receiver<T>),
}

impl GroupCoordinator {
    /// A coordinator with no groups; [`GroupCoordinator::set_led_partitions`] fills it.
    pub fn new(config: GroupConfig) -> GroupCoordinator {
        GroupCoordinator {
            config,
            groups: Mutex::new(HashMap::new()),
            loaded: Mutex::new(BTreeSet::new()),
            last_retention_check_ms: Mutex::new(now_ms()),
            last_compaction_check_ms: Mutex::new(now_ms()),
        }
    }

    /// The coordinator's settings.
    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Group>> {
        // A panic mid-update would leave a group half-changed; the persisted state is still
        // consistent, so keep serving rather than poisoning every later request.
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends records for `group_id` to its offsets partition.
    fn store<W: PartitionWriter>(
        &self,
        writer: &W,
        group_id: &str,
        records: Vec<(Bytes, Option<Bytes>)>,
    ) -> Result<(i64, W::Appended), WriteError> {
        let partition_index =
            storage::partition_for(group_id, self.config.offsets_topic_num_partitions);
        self.append_records(writer, partition_index, records)
    }

    /// Appends records to one offsets partition as one batch.
    fn append_records<W: PartitionWriter>(
        &self,
        writer: &W,
        partition_index: i32,
        records: Vec<(Bytes, Option<Bytes>)>,
    ) -> Result<(i64, W::Appended), WriteError> {
        let now = now_ms();
        let records: Vec<Record> = records
            .into_iter()
            .enumerate()
            .map(|(i, (key, value))| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: -1,
                timestamp: now,
                key: Some(key),
                value,
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .map_err(|e| {
            WriteError::new(
                E::UnknownServerError,
                format!("encoding group records: {e}"),
            )
        })?;
        writer.append(partition_index, &mut buf)
    }

    fn store_group(
        &self,
        writer: &impl PartitionWriter,
        group: &mut Group,
    ) -> Result<(), ErrorCode> {
        let stored = group.stored_value();
        let value = storage::group_value(&stored);
        self.store(
            writer,
            &group.id,
            vec![(storage::group_key(&group.id), Some(value))],
        )
        .map_err(|e| {
            tracing::error!(group = %group.id, error = %e, "cannot store group metadata");
            store_error_code(&e)
        })?;
        group.stored = Some(stored);
        Ok(())
    }

    /// Creates `__consumer_offsets` unless it exists, with `offsets_topic_num_partitions`
    /// partitions (the writer chooses the replication factor).
    pub async fn ensure_offsets_topic(
        &self,
        writer: &impl PartitionWriter,
    ) -> Result<(), WriteError> {
        if writer.offsets_topic_exists() {
            return Ok(());
        }
        let configs = [
            // Kafka's offsets.topic.segment.bytes.
            ("segment.bytes", "104857600"),
            // Groups must not age out with the data retention of ordinary topics; offsets
            // expire by offsets.retention.minutes instead.
            ("retention.ms", "-1"),
            ("retention.bytes", "-1"),
        ];
        writer
            .create_offsets_topic(self.config.offsets_topic_num_partitions, &configs)
            .await
    }

    /// Whether this node coordinates `group_id` now: it leads the group's offsets partition
    /// and has loaded it.
    pub fn is_coordinator(&self, group_id: &str) -> bool {
        let partition = storage::partition_for(group_id, self.config.offsets_topic_num_partitions);
        self.loaded_partitions().contains(&partition)
    }

    /// The offsets partitions loaded here.
    pub fn loaded_partitions(&self) -> BTreeSet<i32> {
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Makes this coordinator own exactly the offsets partitions in `led` (those this node
    /// leads): newly led ones are replayed into memory, groups of partitions no longer led are
    /// dropped from memory (their state stays in the log for the new leader), as Kafka's
    /// `onElection` / `onResignation`.
    pub fn set_led_partitions(
        &self,
        writer: &impl PartitionWriter,
        led: &[i32],
    ) -> Result<(), WriteError> {
        let loaded = self.loaded_partitions();
        for p in loaded.iter().filter(|p| !led.contains(p)) {
            let n = self.config.offsets_topic_num_partitions;
            let mut groups = self.lock();
            let before = groups.len();
            groups.retain(|id, _| storage::partition_for(id, n) != *p);
            tracing::info!(
                partition = *p,
                groups = before - groups.len(),
                "no longer the coordinator of this {OFFSETS_TOPIC} partition; unloaded its groups"
            );
            drop(groups);
            self.loaded
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(p);
        }
        for p in led.iter().filter(|p| !loaded.contains(p)) {
            self.load_partition(writer, *p)?;
            self.loaded
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(*p);
        }
        Ok(())
    }

    /// Replays one `__consumer_offsets` partition into memory.
    fn load_partition(&self, writer: &impl PartitionWriter, index: i32) -> Result<(), WriteError> {
        let now = now_ms();
        let mut groups = self.lock();
        let mut stored_groups: HashMap<String, Option<GroupValue>> = HashMap::new();
        let mut records = 0u64;
        let corrupt = |e: batch::BatchError| {
            WriteError::new(E::CorruptMessage, format!("{OFFSETS_TOPIC}-{index}: {e}"))
        };
        {
            let (start, end) = writer.log_offsets(index)?;
            let mut offset = start;
            while offset < end {
                let bytes = writer.read(index, offset, LOAD_READ_BYTES, end)?;
                if bytes.is_empty() {
                    break;
                }
                let mut rest = bytes;
                while !rest.is_empty() {
                    let header = batch::BatchHeader::parse(&rest).map_err(corrupt)?;
                    if header.total_len_bytes() > rest.len() {
                        return Err(WriteError::new(
                            E::CorruptMessage,
                            format!("{OFFSETS_TOPIC}-{index}: a batch cut short at {offset}"),
                        ));
                    }
                    let one = rest.split_to(header.total_len_bytes());
                    if header.next_offset() <= offset {
                        // Read from a batch boundary below `offset` (a log read starts at the
                        // batch holding it): already replayed.
                        continue;
                    }
                    offset = header.next_offset();
                    let set = batch::decode_stored_records(one).map_err(corrupt)?;
                    for record in set.records {
                        let Some(key) = record.key else { continue };
                        records += 1;
                        match storage::decode(key, record.value) {
                            Ok(StoredRecord::Offset {
                                group,
                                topic,
                                partition,
                                value,
                            }) => {
                                let g = groups
                                    .entry(group.clone())
                                    .or_insert_with(|| Group::new(&group, now));
                                match value {
                                    Some(v) => {
                                        g.offsets.insert((topic, partition), v);
                                    }
                                    None => {
                                        g.offsets.remove(&(topic, partition));
                                    }
                                }
                            }
                            Ok(StoredRecord::Group { group, value }) => {
                                if value.is_none() {
                                    // A deleted group takes its offsets with it.
                                    groups.remove(&group);
                                }
                                stored_groups.insert(group, value);
                            }
                            Err(e) => {
                                tracing::warn!(partition = index, error = %e, "skipping record in offsets topic");
                            }
                        }
                    }
                }
            }
        }
        for (id, value) in stored_groups {
            let Some(value) = value else { continue };
            let g = groups
                .entry(id.clone())
                .or_insert_with(|| Group::new(&id, now));
            g.stored = Some(value.clone());
            g.protocol_type = (!value.protocol_type.is_empty()).then_some(value.protocol_type);
            g.generation_id = value.generation;
            g.protocol_name = value.protocol;
            g.leader_id = value.leader;
            g.state_since_ms = value.current_state_timestamp_ms;
            g.members.clear();
            g.static_members.clear();
            let protocol = g.protocol_name.clone().unwrap_or_default();
            for m in value.members {
                if let Some(instance) = &m.group_instance_id {
                    g.static_members
                        .insert(instance.clone(), m.member_id.clone());
                }
                g.members.push(Member {
                    id: m.member_id,
                    instance_id: m.group_instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocol_type: g.protocol_type.clone().unwrap_or_default(),
                    protocols: vec![(protocol.clone(), m.subscription)],
                    assignment: m.assignment,
                    awaiting_join: None,
                    awaiting_sync: None,
                    // Every member gets a full session from the restart to reappear.
                    last_heartbeat_ms: now,
                });
            }
            g.state = if g.members.is_empty() {
                GroupState::Empty
            } else {
                GroupState::Stable
            };
        }
        let n = self.config.offsets_topic_num_partitions;
        let here = groups
            .keys()
            .filter(|id| storage::partition_for(id, n) == index)
            .count();
        tracing::info!(
            partition = index,
            groups = here,
            records,
            "coordinating this {OFFSETS_TOPIC} partition; loaded its groups"
        );
        Ok(())
    }

    /// JoinGroup; waits while the rebalance is in progress.
    pub async fn join(&self, writer: &impl PartitionWriter, req: JoinRequest) -> JoinResult {
        if !self.is_coordinator(&req.group_id) {
            return JoinResult::error(&req.member_id, ErrorCode::from(E::NotCoordinator));
        }
        let member_hint = req.member_id.clone();
        let step = {
            let mut groups = self.lock();
            self.join_locked(writer, &mut groups, req, now_ms())
        };
        match step {
            Step::Done(r) => r,
            // The sender went away without an answer: the member was removed meanwhile.
            Step::Wait(rx) => rx.await.unwrap_or_else(|_| {
                JoinResult::error(&member_hint, ErrorCode::from(E::UnknownMemberId))
            }),
        }
    }

    fn join_locked(
        &self,
        writer: &impl PartitionWriter,
        groups: &mut HashMap<String, Group>,
        mut req: JoinRequest,
        now: i64,
    ) -> Step<JoinResult> {
        let fail = |code: ErrorCode| Step::Done(JoinResult::error(&req.member_id, code));
        if req.group_id.is_empty() || req.group_id.len() > GROUP_ID_LENGTH_MAX {
            return fail(ErrorCode::from(E::InvalidGroupId));
        }
        if req.session_timeout_ms < self.config.min_session_timeout_ms
            || req.session_timeout_ms > self.config.max_session_timeout_ms
        {
            return fail(ErrorCode::from(E::InvalidSessionTimeout));
        }
        if req
            .protocols
            .iter()
            .any(|(_, m)| m.len() > MEMBER_METADATA_BYTES_MAX)
        {
            return fail(ErrorCode::from(E::InvalidRequest));
        }
        if req.rebalance_timeout_ms < 0 {
            req.rebalance_timeout_ms = req.session_timeout_ms;
        }
        req.rebalance_timeout_ms = req
            .rebalance_timeout_ms
            .min(self.config.max_session_timeout_ms);
        let unknown = req.member_id.is_empty();
        if !unknown && !groups.contains_key(&req.group_id) {
            return fail(ErrorCode::from(E::UnknownMemberId));
        }
        let group = groups
            .entry(req.group_id.clone())
            .or_insert_with(|| Group::new(&req.group_id, now));
        let is_known =
            group.has(&req.member_id) || group.pending_members.contains_key(&req.member_id);
        if !is_known
            && req
                .group_instance_id
                .as_ref()
                .is_none_or(|i| !group.static_members.contains_key(i))
            && group.members.len() + group.pending_members.len() >= self.config.max_size
        {
            return fail(ErrorCode::from(E::GroupMaxSizeReached));
        }
        if !group.supports(&req.protocol_type, &req.protocols) {
            return fail(ErrorCode::from(E::InconsistentGroupProtocol));
        }
        let step = if unknown {
            let new_id = format!("{}-{}", req.client_id, uuid::Uuid::new_v4());
            if let Some(instance) = req.group_instance_id.clone() {
                self.static_join(writer, group, req, new_id, &instance, now)
            } else if req.require_known_member_id {
                let expiry = now + i64::from(req.session_timeout_ms);
                group.pending_members.insert(new_id.clone(), expiry);
                tracing::debug!(group = %group.id, member = %new_id, "member id required");
                Step::Done(JoinResult::error(
                    &new_id,
                    ErrorCode::from(E::MemberIdRequired),
                ))
            } else {
                req.member_id = new_id;
                self.add_member_and_rebalance(group, req, now)
            }
        } else if group.pending_members.remove(&req.member_id).is_some() {
            self.add_member_and_rebalance(group, req, now)
        } else if let Err(code) =
            group.validate_member(&req.member_id, req.group_instance_id.as_deref())
        {
            return fail(code);
        } else {
            match group.state {
                GroupState::PreparingRebalance => self.update_member_and_rebalance(group, req, now),
                GroupState::CompletingRebalance => {
                    let matches = group
                        .member(&req.member_id)
                        .is_some_and(|m| m.matches(&req.protocols));
                    if matches {
                        // A lost JoinGroup response: answer with the current generation.
                        let leader = group.is_leader(&req.member_id);
                        Step::Done(group.current_result(&req.member_id, leader))
                    } else {
                        self.update_member_and_rebalance(group, req, now)
                    }
                }
                GroupState::Stable => {
                    let matches = group
                        .member(&req.member_id)
                        .is_some_and(|m| m.matches(&req.protocols));
                    if group.is_leader(&req.member_id) || !matches {
                        // The leader rejoining means it wants a new assignment (e.g. topic
                        // metadata changed): rebalance.
                        self.update_member_and_rebalance(group, req, now)
                    } else {
                        Step::Done(group.current_result(&req.member_id, false))
                    }
                }
                GroupState::Empty | GroupState::Dead => fail(ErrorCode::from(E::UnknownMemberId)),
            }
        };
        self.try_complete_join(writer, group, now);
        step
    }

    fn static_join(
        &self,
        writer: &impl PartitionWriter,
        group: &mut Group,
        mut req: JoinRequest,
        new_id: String,
        instance: &str,
        now: i64,
    ) -> Step<JoinResult> {
        let Some(old_id) = group.static_members.get(instance).cloned() else {
            req.member_id = new_id;
            return self.add_member_and_rebalance(group, req, now);
        };
        // A known instance rejoining with a new member id: the old id is fenced.
        let Some(member) = group.member_mut(&old_id) else {
            group.static_members.remove(instance);
            req.member_id = new_id;
            return self.add_member_and_rebalance(group, req, now);
        };
        if let Some(tx) = member.awaiting_join.take() {
            let _ = tx.send(JoinResult::error(
                &old_id,
                ErrorCode::from(E::FencedInstanceId),
            ));
        }
        if let Some(tx) = member.awaiting_sync.take() {
            let _ = tx.send(SyncResult::error(ErrorCode::from(E::FencedInstanceId)));
        }
        member.id = new_id.clone();
        member.last_heartbeat_ms = now;
        let matches = member.matches(&req.protocols);
        group
            .static_members
            .insert(instance.to_string(), new_id.clone());
        let was_leader = group.is_leader(&old_id);
        if was_leader {
            group.leader_id = Some(new_id.clone());
        }
        tracing::info!(group = %group.id, instance, old = %old_id, new = %new_id, "static member rejoined with a new member id");
        req.member_id = new_id.clone();
        if group.state == GroupState::Stable && matches && !was_leader {
            if let Err(code) = self.store_group(writer, group) {
                return Step::Done(JoinResult::error(&new_id, code));
            }
            return Step::Done(group.current_result(&new_id, false));
        }
        self.update_member_and_rebalance(group, req, now)
    }

    fn add_member_and_rebalance(
        &self,
        group: &mut Group,
        req: JoinRequest,
        now: i64,
    ) -> Step<JoinResult> {
        let (tx, rx) = oneshot::channel();
        if let Some(delay) = group.initial_delay.as_mut() {
            delay.new_member_added = true;
        }
        tracing::info!(group = %group.id, member = %req.member_id, instance = ?req.group_instance_id, "member joins");
        group.add_member(Member {
            id: req.member_id,
            instance_id: req.group_instance_id,
            client_id: req.client_id,
            client_host: req.client_host,
            session_timeout_ms: req.session_timeout_ms,
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            protocol_type: req.protocol_type,
            protocols: req.protocols,
            assignment: Bytes::new(),
            awaiting_join: Some(tx),
            awaiting_sync: None,
            last_heartbeat_ms: now,
        });
        self.maybe_prepare_rebalance(group, now, "member joined");
        Step::Wait(rx)
    }

    fn update_member_and_rebalance(
        &self,
        group: &mut Group,
        req: JoinRequest,
        now: i64,
    ) -> Step<JoinResult> {
        let (tx, rx) = oneshot::channel();
        let Some(member) = group.member_mut(&req.member_id) else {
            return Step::Done(JoinResult::error(
                &req.member_id,
                ErrorCode::from(E::UnknownMemberId),
            ));
        };
        member.protocols = req.protocols;
        member.session_timeout_ms = req.session_timeout_ms;
        member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        member.client_host = req.client_host;
        member.last_heartbeat_ms = now;
        // A duplicate JoinGroup replaces the parked one; the old waiter gets UNKNOWN_MEMBER_ID.
        member.awaiting_join = Some(tx);
        self.maybe_prepare_rebalance(group, now, "member rejoined");
        Step::Wait(rx)
    }

    fn maybe_prepare_rebalance(&self, group: &mut Group, now: i64, reason: &str) {
        if matches!(
            group.state,
            GroupState::Stable | GroupState::CompletingRebalance | GroupState::Empty
        ) {
            self.prepare_rebalance(group, now, reason);
        }
    }

    fn prepare_rebalance(&self, group: &mut Group, now: i64, reason: &str) {
        if group.state == GroupState::CompletingRebalance {
            // Members waiting for the leader's assignment must rejoin.
            for m in &mut group.members {
                m.assignment = Bytes::new();
                if let Some(tx) = m.awaiting_sync.take() {
                    let _ = tx.send(SyncResult::error(ErrorCode::from(E::RebalanceInProgress)));
                }
            }
        }
        let timeout_ms = group.rebalance_timeout_ms();
        if group.state == GroupState::Empty {
            let delay_ms = i64::from(self.config.initial_rebalance_delay_ms);
            group.initial_delay = Some(InitialDelay {
                until_ms: now + delay_ms.min(timeout_ms),
                limit_ms: now + timeout_ms,
                new_member_added: false,
            });
        }
        group.rebalance_deadline_ms = now + timeout_ms;
        tracing::info!(group = %group.id, generation = group.generation_id, reason, "preparing rebalance");
        group.transition(GroupState::PreparingRebalance, now);
    }

    fn try_complete_join(&self, writer: &impl PartitionWriter, group: &mut Group, now: i64) {
        if group.state != GroupState::PreparingRebalance {
            return;
        }
        if let Some(delay) = group.initial_delay.as_mut() {
            // Kafka's InitialDelayedJoin: give other members of a starting group time to
            // arrive, extending while they do, up to the rebalance timeout.
            if now < delay.until_ms {
                return;
            }
            if delay.new_member_added && delay.until_ms < delay.limit_ms {
                delay.until_ms =
                    (now + i64::from(self.config.initial_rebalance_delay_ms)).min(delay.limit_ms);
                delay.new_member_added = false;
                return;
            }
            group.initial_delay = None;
            self.complete_join(writer, group, now);
            return;
        }
        if group.all_members_joined() || now >= group.rebalance_deadline_ms {
            self.complete_join(writer, group, now);
        }
    }

    fn complete_join(&self, writer: &impl PartitionWriter, group: &mut Group, now: i64) {
        let laggards: Vec<String> = group
            .members
            .iter()
            .filter(|m| m.awaiting_join.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in laggards {
            tracing::info!(group = %group.id, member = %id, "member did not rejoin in time; removed");
            group.remove_member(&id);
        }
        group.generation_id += 1;
        if group.members.is_empty() {
            group.protocol_name = None;
            group.transition(GroupState::Empty, now);
            if let Err(code) = self.store_group(writer, group) {
                tracing::warn!(group = %group.id, %code, "could not store empty group");
            }
            return;
        }
        group.protocol_name = group.select_protocol();
        group.transition(GroupState::CompletingRebalance, now);
        group.sync_deadline_ms = now + group.rebalance_timeout_ms();
        tracing::info!(group = %group.id, generation = group.generation_id, members = group.members.len(), protocol = ?group.protocol_name, "rebalance: new generation");
        let leader = group.leader_id.clone().unwrap_or_default();
        let leader_view = group.current_result(&leader, true);
        for m in &mut group.members {
            m.last_heartbeat_ms = now;
            if let Some(tx) = m.awaiting_join.take() {
                let mut result = leader_view.clone();
                result.member_id = m.id.clone();
                if m.id != leader {
                    result.members.clear();
                }
                let _ = tx.send(result);
            }
        }
    }

    /// SyncGroup; followers wait for the leader's assignment.
    pub async fn sync(&self, writer: &impl PartitionWriter, req: SyncRequest) -> SyncResult {
        if !self.is_coordinator(&req.group_id) {
            return SyncResult::error(ErrorCode::from(E::NotCoordinator));
        }
        let step = {
            let mut groups = self.lock();
            self.sync_locked(writer, &mut groups, req, now_ms())
        };
        match step {
            Step::Done(r) => r,
            Step::Wait(rx) => rx
                .await
                .unwrap_or_else(|_| SyncResult::error(ErrorCode::from(E::UnknownMemberId))),
        }
    }

    fn sync_locked(
        &self,
        writer: &impl PartitionWriter,
        groups: &mut HashMap<String, Group>,
        req: SyncRequest,
        now: i64,
    ) -> Step<SyncResult> {
        let fail = |code: ErrorCode| Step::Done(SyncResult::error(code));
        let Some(group) = groups.get_mut(&req.group_id) else {
            return fail(ErrorCode::from(E::UnknownMemberId));
        };
        if let Err(code) = group.validate_member(&req.member_id, req.group_instance_id.as_deref()) {
            return fail(code);
        }
        if req.generation_id != group.generation_id {
            return fail(ErrorCode::from(E::IllegalGeneration));
        }
        if req
            .protocol_type
            .as_ref()
            .is_some_and(|t| group.protocol_type.as_ref() != Some(t))
            || req
                .protocol_name
                .as_ref()
                .is_some_and(|n| group.protocol_name.as_ref() != Some(n))
        {
            return fail(ErrorCode::from(E::InconsistentGroupProtocol));
        }
        match group.state {
            GroupState::Empty | GroupState::Dead => fail(ErrorCode::from(E::UnknownMemberId)),
            GroupState::PreparingRebalance => fail(ErrorCode::from(E::RebalanceInProgress)),
            GroupState::Stable => {
                let Some(member) = group.member_mut(&req.member_id) else {
                    return fail(ErrorCode::from(E::UnknownMemberId));
                };
                member.last_heartbeat_ms = now;
                let assignment = member.assignment.clone();
                Step::Done(SyncResult {
                    error_code: ErrorCode::NONE,
                    protocol_type: group.protocol_type.clone(),
                    protocol_name: group.protocol_name.clone(),
                    assignment,
                })
            }
            GroupState::CompletingRebalance => {
                if req
                    .assignments
                    .iter()
                    .any(|(_, a)| a.len() > MEMBER_METADATA_BYTES_MAX)
                {
                    return fail(ErrorCode::from(E::InvalidRequest));
                }
                let (tx, rx) = oneshot::channel();
                let is_leader = group.is_leader(&req.member_id);
                if let Some(member) = group.member_mut(&req.member_id) {
                    member.awaiting_sync = Some(tx);
                    member.last_heartbeat_ms = now;
                }
                if is_leader {
                    let assignments: HashMap<String, Bytes> = req.assignments.into_iter().collect();
                    for m in &mut group.members {
                        m.assignment = assignments.get(&m.id).cloned().unwrap_or_default();
                    }
                    match self.store_group(writer, group) {
                        Ok(()) => {
                            for m in &mut group.members {
                                if let Some(tx) = m.awaiting_sync.take() {
                                    let _ = tx.send(SyncResult {
                                        error_code: ErrorCode::NONE,
                                        protocol_type: group.protocol_type.clone(),
                                        protocol_name: group.protocol_name.clone(),
                                        assignment: m.assignment.clone(),
                                    });
                                }
                            }
                            group.transition(GroupState::Stable, now);
                            tracing::info!(group = %group.id, generation = group.generation_id, "group stable");
                        }
                        Err(code) => {
                            for m in &mut group.members {
                                m.assignment = Bytes::new();
                                if let Some(tx) = m.awaiting_sync.take() {
                                    let _ = tx.send(SyncResult::error(code));
                                }
                            }
                            self.prepare_rebalance(group, now, "could not store assignment");
                        }
                    }
                }
                Step::Wait(rx)
            }
        }
    }

    /// Heartbeat: keeps a member's session alive and tells it about rebalances.
    pub fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
    ) -> ErrorCode {
        if !self.is_coordinator(group_id) {
            return ErrorCode::from(E::NotCoordinator);
        }
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return ErrorCode::from(E::UnknownMemberId);
        };
        if let Err(code) = group.validate_member(member_id, instance_id) {
            return code;
        }
        if generation_id != group.generation_id {
            return ErrorCode::from(E::IllegalGeneration);
        }
        let state = group.state;
        if let Some(m) = group.member_mut(member_id) {
            m.last_heartbeat_ms = now_ms();
        }
        match state {
            GroupState::Empty | GroupState::Dead => ErrorCode::from(E::UnknownMemberId),
            GroupState::PreparingRebalance => ErrorCode::from(E::RebalanceInProgress),
            GroupState::CompletingRebalance | GroupState::Stable => ErrorCode::NONE,
        }
    }

    /// LeaveGroup for one or more members: the outcome per member, in request order.
    pub fn leave(
        &self,
        writer: &impl PartitionWriter,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Vec<ErrorCode> {
        if !self.is_coordinator(group_id) {
            return vec![ErrorCode::from(E::NotCoordinator); members.len()];
        }
        let mut groups = self.lock();
        let now = now_ms();
        let Some(group) = groups.get_mut(group_id) else {
            return vec![ErrorCode::from(E::UnknownMemberId); members.len()];
        };
        let mut codes = Vec::with_capacity(members.len());
        for (member_id, instance_id) in members {
            let member_id = if member_id.is_empty() {
                match instance_id
                    .as_ref()
                    .and_then(|i| group.static_members.get(i))
                {
                    Some(id) => id.clone(),
                    None => {
                        codes.push(ErrorCode::from(E::UnknownMemberId));
                        continue;
                    }
                }
            } else {
                member_id.clone()
            };
            if group.static_member_fenced(&member_id, instance_id.as_deref()) {
                codes.push(ErrorCode::from(E::FencedInstanceId));
            } else if group.pending_members.remove(&member_id).is_some() {
                codes.push(ErrorCode::NONE);
                self.try_complete_join(writer, group, now);
            } else if !group.has(&member_id) {
                codes.push(ErrorCode::from(E::UnknownMemberId));
            } else {
                tracing::info!(group = %group_id, member = %member_id, "member left");
                self.remove_member_and_update(writer, group, &member_id, now);
                codes.push(ErrorCode::NONE);
            }
        }
        codes
    }

    fn remove_member_and_update(
        &self,
        writer: &impl PartitionWriter,
        group: &mut Group,
        id: &str,
        now: i64,
    ) {
        if let Some(mut m) = group.remove_member(id) {
            if let Some(tx) = m.awaiting_join.take() {
                let _ = tx.send(JoinResult::error(id, ErrorCode::from(E::UnknownMemberId)));
            }
        }
        match group.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(group, now, "member left");
                // With nobody left to wait for, the rebalance completes at once (to Empty).
                self.try_complete_join(writer, group, now);
            }
            GroupState::PreparingRebalance => self.try_complete_join(writer, group, now),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// OffsetCommit: a code per partition, in request order. Answered once the commit is
    /// replicated (Kafka appends it with acks=all), bounded by `offsets_commit_timeout_ms`; the
    /// new offsets are visible to OffsetFetch from the moment they are appended.
    pub async fn commit(
        &self,
        writer: &impl PartitionWriter,
        req: &CommitRequest,
    ) -> Vec<ErrorCode> {
        let (mut codes, appended) = self.commit_locally(writer, req);
        let Some((last_offset, appended, accepted)) = appended else {
            return codes;
        };
        let deadline = tokio::time::Instant::now()
            + std::time::Duration::from_millis(self.config.offsets_commit_timeout_ms);
        let code = writer.wait_replicated(&appended, deadline).await;
        if !code.is_none() {
            // Kafka's mapping of a failed offsets append (GroupMetadataManager.storeOffsets).
            let code = if code.is(E::NotLeaderOrFollower) {
                E::NotCoordinator.into()
            } else if code.is(E::NotEnoughReplicasAfterAppend) {
                E::CoordinatorNotAvailable.into()
            } else {
                code
            };
            tracing::warn!(group = %req.group_id, %code, last_offset,
                "offset commit not replicated");
            for i in accepted {
                codes[i] = code;
            }
        }
        codes
    }

    /// The local part of [`GroupCoordinator::commit`]: checks and the append; returns the codes
    /// and, when something was appended, what to wait for and which codes it decides.
    fn commit_locally<W: PartitionWriter>(
        &self,
        writer: &W,
        req: &CommitRequest,
    ) -> (Vec<ErrorCode>, Option<PendingCommit<W::Appended>>) {
        let all = |code: ErrorCode| (vec![code; req.partitions.len()], None);
        if req.group_id.is_empty() || req.group_id.len() > GROUP_ID_LENGTH_MAX {
            return all(ErrorCode::from(E::InvalidGroupId));
        }
        if !self.is_coordinator(&req.group_id) {
            return all(ErrorCode::from(E::NotCoordinator));
        }
        let now = now_ms();
        let mut groups = self.lock();
        let simple =
            req.generation_id < 0 && req.member_id.is_empty() && req.group_instance_id.is_none();
        if !groups.contains_key(&req.group_id) {
            if !simple {
                return all(ErrorCode::from(E::IllegalGeneration));
            }
            groups.insert(req.group_id.clone(), Group::new(&req.group_id, now));
        }
        let Some(group) = groups.get_mut(&req.group_id) else {
            return all(ErrorCode::from(E::CoordinatorNotAvailable));
        };
        if !simple {
            if let Err(code) =
                group.validate_member(&req.member_id, req.group_instance_id.as_deref())
            {
                return all(code);
            }
            if req.generation_id != group.generation_id {
                return all(ErrorCode::from(E::IllegalGeneration));
            }
        } else if group.state != GroupState::Empty {
            // Kafka's rule: while a group has members, only members commit.
            return all(ErrorCode::from(E::UnknownMemberId));
        }
        match group.state {
            GroupState::CompletingRebalance => return all(ErrorCode::from(E::RebalanceInProgress)),
            GroupState::Stable | GroupState::PreparingRebalance => {
                if let Some(m) = group.member_mut(&req.member_id) {
                    m.last_heartbeat_ms = now;
                }
            }
            GroupState::Empty | GroupState::Dead => {}
        }
        let mut codes = Vec::with_capacity(req.partitions.len());
        let mut records = Vec::new();
        let mut accepted = Vec::new();
        for p in &req.partitions {
            let code = if p.metadata.len() > self.config.offset_metadata_max_bytes {
                ErrorCode::from(E::OffsetMetadataTooLarge)
            } else if !writer.partition_exists(&p.topic, p.partition) {
                ErrorCode::from(E::UnknownTopicOrPartition)
            } else {
                let value = OffsetValue {
                    offset: p.offset,
                    leader_epoch: p.leader_epoch,
                    metadata: p.metadata.clone(),
                    commit_timestamp_ms: now,
                };
                records.push((
                    storage::offset_key(&req.group_id, &p.topic, p.partition),
                    Some(storage::offset_value(&value)),
                ));
                accepted.push((codes.len(), (p.topic.clone(), p.partition), value));
                ErrorCode::NONE
            };
            codes.push(code);
        }
        if records.is_empty() {
            return (codes, None);
        }
        match self.store(writer, &req.group_id, records) {
            Ok((last_offset, appended)) => {
                let mut decided = Vec::with_capacity(accepted.len());
                for (i, key, value) in accepted {
                    group.offsets.insert(key, value);
                    decided.push(i);
                }
                (codes, Some((last_offset, appended, decided)))
            }
            Err(e) => {
                tracing::error!(group = %req.group_id, error = %e, "cannot store offsets");
                let code = store_error_code(&e);
                for (i, _, _) in accepted {
                    codes[i] = code;
                }
                (codes, None)
            }
        }
    }

    /// OffsetFetch for one group: the committed offset of each requested partition (`None` =
    /// every partition with a commit).
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        topics: Option<&[(String, Vec<i32>)]>,
    ) -> Vec<(String, i32, Option<OffsetValue>)> {
        let groups = self.lock();
        let group = groups.get(group_id);
        match topics {
            None => group
                .map(|g| {
                    g.offsets
                        .iter()
                        .map(|((t, p), v)| (t.clone(), *p, Some(v.clone())))
                        .collect()
                })
                .unwrap_or_default(),
            Some(topics) => topics
                .iter()
                .flat_map(|(t, parts)| {
                    parts.iter().map(move |p| {
                        let v = group.and_then(|g| g.offsets.get(&(t.clone(), *p)).cloned());
                        (t.clone(), *p, v)
                    })
                })
                .collect(),
        }
    }

    /// OffsetDelete: a top-level error, or a code per partition in request order.
    pub fn delete_offsets(
        &self,
        writer: &impl PartitionWriter,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<ErrorCode>, ErrorCode> {
        if !self.is_coordinator(group_id) {
            return Err(ErrorCode::from(E::NotCoordinator));
        }
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return Err(ErrorCode::from(E::GroupIdNotFound));
        };
        let subscribed: Vec<String> = match group.state {
            GroupState::Empty => Vec::new(),
            GroupState::Dead => return Err(ErrorCode::from(E::GroupIdNotFound)),
            _ => match group.subscribed_topics() {
                Some(t) => t,
                None => return Err(ErrorCode::from(E::NonEmptyGroup)),
            },
        };
        let mut codes = Vec::with_capacity(partitions.len());
        let mut records = Vec::new();
        let mut doomed = Vec::new();
        for (topic, partition) in partitions {
            if subscribed.contains(topic) {
                codes.push(ErrorCode::from(E::GroupSubscribedToTopic));
                continue;
            }
            if group.offsets.contains_key(&(topic.clone(), *partition)) {
                records.push((storage::offset_key(group_id, topic, *partition), None));
                doomed.push((topic.clone(), *partition));
            }
            codes.push(ErrorCode::NONE);
        }
        if !records.is_empty() {
            if let Err(e) = self.store(writer, group_id, records) {
                tracing::error!(group = %group_id, error = %e, "cannot delete offsets");
                return Err(store_error_code(&e));
            }
            for key in doomed {
                group.offsets.remove(&key);
            }
        }
        Ok(codes)
    }

    /// ListGroups, filtered by state names (case-insensitive; empty = all).
    pub fn list(&self, states_filter: &[String]) -> Vec<GroupListing> {
        let groups = self.lock();
        let mut out: Vec<GroupListing> = groups
            .values()
            .filter(|g| {
                states_filter.is_empty()
                    || states_filter
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(g.state.name()))
            })
            .map(|g| GroupListing {
                group_id: g.id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state,
            })
            .collect();
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out
    }

    /// DescribeGroups for one group; an unknown group is reported `Dead`, as Kafka does.
    pub fn describe(&self, group_id: &str) -> GroupDescription {
        let groups = self.lock();
        let Some(g) = groups.get(group_id) else {
            return GroupDescription {
                group_id: group_id.to_string(),
                state: GroupState::Dead,
                protocol_type: String::new(),
                protocol_name: String::new(),
                members: Vec::new(),
            };
        };
        let protocol = g.protocol_name.clone().unwrap_or_default();
        let stable = g.state == GroupState::Stable;
        GroupDescription {
            group_id: g.id.clone(),
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol_name: protocol.clone(),
            members: g
                .members
                .iter()
                .map(|m| MemberDescription {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: if stable {
                        m.metadata_for(&protocol)
                    } else {
                        Bytes::new()
                    },
                    assignment: if stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
        }
    }

    /// DeleteGroups for one group: Kafka's code (NON_EMPTY_GROUP while it has members).
    pub fn delete_group(&self, writer: &impl PartitionWriter, group_id: &str) -> ErrorCode {
        if group_id.is_empty() {
            return ErrorCode::from(E::InvalidGroupId);
        }
        if !self.is_coordinator(group_id) {
            return ErrorCode::from(E::NotCoordinator);
        }
        let mut groups = self.lock();
        let Some(group) = groups.get(group_id) else {
            return ErrorCode::from(E::GroupIdNotFound);
        };
        if group.state != GroupState::Empty {
            return ErrorCode::from(E::NonEmptyGroup);
        }
        let mut records: Vec<(Bytes, Option<Bytes>)> = group
            .offsets
            .keys()
            .map(|(t, p)| (storage::offset_key(group_id, t, *p), None))
            .collect();
        records.push((storage::group_key(group_id), None));
        if let Err(e) = self.store(writer, group_id, records) {
            tracing::error!(group = %group_id, error = %e, "cannot delete group");
            return store_error_code(&e);
        }
        groups.remove(group_id);
        tracing::info!(group = %group_id, "deleted group");
        ErrorCode::NONE
    }

    /// Runs every deadline that has passed: initial delays and rebalance timeouts, sync
    /// timeouts, expired sessions and pending member ids, and (every
    /// `offsets.retention.check.interval.ms`) offset expiry.
    pub fn tick(&self, writer: &impl PartitionWriter, now: i64) {
        let mut groups = self.lock();
        for group in groups.values_mut() {
            let expired: Vec<String> = group
                .pending_members
                .iter()
                .filter(|(_, expiry)| **expiry <= now)
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                tracing::debug!(group = %group.id, member = %id, "pending member id expired");
                group.pending_members.remove(&id);
            }
            let dead: Vec<String> = group
                .members
                .iter()
                .filter(|m| m.session_expired(now))
                .map(|m| m.id.clone())
                .collect();
            for id in dead {
                tracing::info!(group = %group.id, member = %id, "member session expired; removed");
                self.remove_member_and_update(writer, group, &id, now);
            }
            if group.state == GroupState::CompletingRebalance && now >= group.sync_deadline_ms {
                let laggards: Vec<String> = group
                    .members
                    .iter()
                    .filter(|m| m.awaiting_sync.is_none())
                    .map(|m| m.id.clone())
                    .collect();
                for id in &laggards {
                    tracing::info!(group = %group.id, member = %id, "member did not sync in time; removed");
                    group.remove_member(id);
                }
                self.prepare_rebalance(group, now, "members did not sync in time");
            }
            self.try_complete_join(writer, group, now);
        }
        let mut last = self
            .last_retention_check_ms
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if now - *last >= self.config.offsets_retention_check_interval_ms {
            *last = now;
            self.expire_offsets(writer, &mut groups, now);
        }
        drop(last);
        let mut last = self
            .last_compaction_check_ms
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if now - *last >= COMPACTION_CHECK_INTERVAL_MS {
            *last = now;
            for partition in self.loaded_partitions() {
                if let Err(e) = self.compact_partition(writer, &groups, partition) {
                    tracing::warn!(partition, error = %e, "cannot compact {OFFSETS_TOPIC}");
                }
            }
        }
    }

    /// Kafka compacts `__consumer_offsets`; strait, which has no log compaction, does the
    /// equivalent for its own topic: once a partition holds mostly superseded records, the
    /// live state of its groups (last stored metadata, committed offsets) is appended again
    /// and the log start offset moved to where that copy begins. Replaying from the new start
    /// rebuilds exactly the same state; a crash in between replays the old records followed
    /// by (part of) the copy, which also ends in the same state. Runs under the coordinator
    /// lock, so no commit interleaves with the copy.
    fn compact_partition(
        &self,
        writer: &impl PartitionWriter,
        groups: &HashMap<String, Group>,
        partition: i32,
    ) -> Result<(), WriteError> {
        let n = self.config.offsets_topic_num_partitions;
        let (start, end) = writer.log_offsets(partition)?;
        if end - start <= COMPACTION_MIN_RECORDS {
            // Most partitions, most of the time: no need to look at the groups.
            return Ok(());
        }
        let owned: Vec<&Group> = groups
            .values()
            .filter(|g| storage::partition_for(&g.id, n) == partition)
            .collect();
        let live: usize = owned
            .iter()
            .map(|g| g.offsets.len() + usize::from(g.stored.is_some()))
            .sum();
        let live = i64::try_from(live).unwrap_or(i64::MAX);
        if end - start <= COMPACTION_MIN_RECORDS.max(live.saturating_mul(COMPACTION_LIVE_FACTOR)) {
            return Ok(());
        }
        let mut records: Vec<(Bytes, Option<Bytes>)> = Vec::new();
        for g in owned {
            if let Some(value) = &g.stored {
                records.push((storage::group_key(&g.id), Some(storage::group_value(value))));
            }
            for ((topic, p), value) in &g.offsets {
                records.push((
                    storage::offset_key(&g.id, topic, *p),
                    Some(storage::offset_value(value)),
                ));
            }
        }
        let mut pending = records.into_iter().peekable();
        while pending.peek().is_some() {
            let chunk: Vec<_> = pending.by_ref().take(COMPACTION_BATCH_RECORDS).collect();
            self.append_records(writer, partition, chunk)?;
        }
        // `end` is where the copy begins: only the coordinator appends here, under this lock.
        let new_start = writer.delete_records(partition, end)?;
        tracing::info!(
            partition,
            superseded_records = end - start,
            live_records = live,
            log_start_offset = new_start,
            "compacted {OFFSETS_TOPIC} partition"
        );
        Ok(())
    }

    /// Kafka's offset expiry for groups without members: an offset expires
    /// `offsets.retention.minutes` after the group emptied (or, for groups that never used the
    /// group protocol, after its commit). An empty group without offsets is removed.
    fn expire_offsets(
        &self,
        writer: &impl PartitionWriter,
        groups: &mut HashMap<String, Group>,
        now: i64,
    ) {
        let retention_ms = self.config.offsets_retention_ms;
        let mut removed = Vec::new();
        for group in groups.values_mut() {
            if group.state != GroupState::Empty {
                continue;
            }
            let expired: Vec<(String, i32)> = group
                .offsets
                .iter()
                .filter(|(_, v)| {
                    let base = if group.protocol_type.is_some() {
                        group.state_since_ms.max(v.commit_timestamp_ms)
                    } else {
                        v.commit_timestamp_ms
                    };
                    now - base >= retention_ms
                })
                .map(|(k, _)| k.clone())
                .collect();
            let mut records: Vec<(Bytes, Option<Bytes>)> = expired
                .iter()
                .map(|(t, p)| (storage::offset_key(&group.id, t, *p), None))
                .collect();
            let now_empty = group.offsets.len() == expired.len();
            if now_empty {
                records.push((storage::group_key(&group.id), None));
            }
            if records.is_empty() {
                continue;
            }
            if let Err(e) = self.store(writer, &group.id, records) {
                tracing::warn!(group = %group.id, error = %e, "cannot expire offsets");
                continue;
            }
            tracing::info!(group = %group.id, offsets = expired.len(), "expired committed offsets");
            for key in &expired {
                group.offsets.remove(key);
            }
            if now_empty {
                removed.push(group.id.clone());
            }
        }
        for id in removed {
            groups.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests;
