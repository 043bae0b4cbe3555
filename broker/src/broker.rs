//! The state of one broker node: its identity, its topics and their partition logs.
//!
//! `Broker` is what request handlers talk to; it knows nothing about sockets. Kafka splits
//! this between ReplicaManager (partitions and their logs), MetadataCache (what clients are
//! told) and the controller (topic creation); on a single node they are one struct.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use uuid::Uuid;

use crate::broker_config::{BrokerConfigError, BrokerConfigs};
use crate::config::NodeConfig;
use crate::group::GroupCoordinator;
use crate::log::{AppendInfo, LogConfig, LogError, PartitionLog};
use crate::metadata_store::{self, MetadataStoreError, TopicRecord};
use crate::producer_ids::ProducerIdManager;
use crate::topic_config::{ConfigValueError, TopicConfig};

/// Kafka's longest legal topic name.
pub const TOPIC_NAME_LENGTH_MAX: usize = 249;
/// Upper bound on partitions per topic: each one is a directory and open files.
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Checks a topic name with Kafka's rules (`Topic.validate`).
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("topic name `{name}` is not allowed"));
    }
    if name.len() > TOPIC_NAME_LENGTH_MAX {
        return Err(format!(
            "topic name is {} characters, longer than the limit of {TOPIC_NAME_LENGTH_MAX}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic name `{name}` contains `{c}`; legal characters are ASCII letters, digits, `.`, `_` and `-`"
        ));
    }
    Ok(())
}

/// A failure of a broker operation, each mapping to one Kafka error code.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The topic or partition does not exist (UNKNOWN_TOPIC_OR_PARTITION).
    #[error("unknown topic or partition {topic}-{partition}")]
    UnknownTopicOrPartition {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
    },
    /// Bad topic name (INVALID_TOPIC_EXCEPTION).
    #[error("{0}")]
    InvalidTopic(String),
    /// Topic exists (TOPIC_ALREADY_EXISTS).
    #[error("topic `{0}` already exists")]
    TopicAlreadyExists(String),
    /// Bad partition count (INVALID_PARTITIONS).
    #[error("{0}")]
    InvalidPartitions(String),
    /// Bad replication factor (INVALID_REPLICATION_FACTOR).
    #[error("{0}")]
    InvalidReplicationFactor(String),
    /// Bad config (INVALID_CONFIG).
    #[error(transparent)]
    InvalidConfig(#[from] ConfigValueError),
    /// A request that cannot be served as asked (INVALID_REQUEST).
    #[error("{0}")]
    InvalidRequest(String),
    /// Bad replica assignment (INVALID_REPLICA_ASSIGNMENT).
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    /// The partition log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// Metadata could not be persisted.
    #[error(transparent)]
    Metadata(#[from] MetadataStoreError),
    /// Something that should not happen did (UNKNOWN_SERVER_ERROR); the message says what.
    #[error("{0}")]
    Internal(String),
}

impl BrokerError {
    /// The Kafka error code for this failure.
    pub fn kafka_error_code(&self) -> i16 {
        use kafka_protocol::error::ResponseError as E;
        match self {
            BrokerError::UnknownTopicOrPartition { .. } => E::UnknownTopicOrPartition.code(),
            BrokerError::InvalidTopic(_) => E::InvalidTopicException.code(),
            BrokerError::TopicAlreadyExists(_) => E::TopicAlreadyExists.code(),
            BrokerError::InvalidPartitions(_) => E::InvalidPartitions.code(),
            BrokerError::InvalidReplicationFactor(_) => E::InvalidReplicationFactor.code(),
            BrokerError::InvalidConfig(_) => E::InvalidConfig.code(),
            BrokerError::InvalidRequest(_) => E::InvalidRequest.code(),
            BrokerError::InvalidReplicaAssignment(_) => E::InvalidReplicaAssignment.code(),
            BrokerError::Log(e) => e.kafka_error_code(),
            BrokerError::Metadata(_) => E::KafkaStorageError.code(),
            BrokerError::Internal(_) => E::UnknownServerError.code(),
        }
    }
}

impl From<BrokerConfigError> for BrokerError {
    fn from(e: BrokerConfigError) -> BrokerError {
        match e {
            BrokerConfigError::InvalidConfig(e) => BrokerError::InvalidConfig(e),
            BrokerConfigError::InvalidRequest(m) => BrokerError::InvalidRequest(m),
        }
    }
}

/// One partition on this node: its log and nothing else yet (a single node is always leader).
pub struct Partition {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub index: i32,
    log: RwLock<PartitionLog>,
}

impl Partition {
    /// Shared access to the log (reads run concurrently).
    pub fn log(&self) -> RwLockReadGuard<'_, PartitionLog> {
        // A poisoned lock means a thread panicked mid-append; the log's own recovery on the
        // next start is the remedy, so keep serving what is there.
        self.log.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Exclusive access to the log (appends, flushes).
    pub fn log_mut(&self) -> RwLockWriteGuard<'_, PartitionLog> {
        self.log.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The high watermark: on a single node every appended record is committed.
    pub fn high_watermark(&self) -> i64 {
        self.log().log_end_offset()
    }
}

/// A topic and its partitions. Immutable: a config change or CreatePartitions swaps in a new
/// `Topic` sharing the same `Partition`s, so a request works on one consistent version.
pub struct Topic {
    /// Name.
    pub name: String,
    /// Kafka topic id.
    pub id: Uuid,
    /// Effective configuration.
    pub config: TopicConfig,
    /// Partitions, indexed by partition number.
    pub partitions: Vec<Arc<Partition>>,
}

impl Topic {
    /// The same topic with another config and/or more partitions.
    fn with(&self, config: TopicConfig, partitions: Vec<Arc<Partition>>) -> Topic {
        Topic {
            name: self.name.clone(),
            id: self.id,
            config,
            partitions,
        }
    }

    fn record(&self) -> TopicRecord {
        TopicRecord {
            name: self.name.clone(),
            id: self.id,
            partitions: i32::try_from(self.partitions.len()).unwrap_or(i32::MAX),
            configs: self.config.overrides().clone(),
        }
    }
}

/// A topic creation request, already decoded.
#[derive(Debug, Clone)]
pub struct NewTopic {
    /// Name.
    pub name: String,
    /// Partition count; -1 means the node default.
    pub num_partitions: i32,
    /// Replication factor; -1 means the default.
    pub replication_factor: i16,
    /// Config overrides.
    pub configs: BTreeMap<String, String>,
}

/// One broker node's state.
pub struct Broker {
    config: NodeConfig,
    cluster_id: String,
    advertised_host: String,
    advertised_port: i32,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Broker config layers (static and dynamic); replaced whole on AlterConfigs.
    broker_configs: RwLock<Arc<BrokerConfigs>>,
    /// Serialises admin operations (topic creation and deletion, config changes, partition
    /// additions), which rewrite the persisted tables.
    admin_lock: std::sync::Mutex<()>,
    /// Bumped after every append; long-polling fetches wait on it.
    appended: watch::Sender<u64>,
    /// Consumer groups and committed offsets.
    groups: GroupCoordinator,
    /// Allocates ids for idempotent producers (InitProducerId).
    producer_ids: ProducerIdManager,
}

fn partition_dir(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

/// The log settings of a topic on this node: the topic's configs plus the broker-level ones.
fn log_config_for(node: &NodeConfig, topic: &TopicConfig) -> LogConfig {
    LogConfig {
        producer_id_expiration_ms: node.producer_id_expiration_ms,
        ..topic.log_config()
    }
}

impl Broker {
    /// Opens the node's data directory: identity, topic table, and every partition log
    /// (recovering any that were not closed cleanly).
    pub fn open(config: NodeConfig, advertised: (String, i32)) -> Result<Broker, BrokerError> {
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|source| MetadataStoreError::Io {
            path: data_dir.clone(),
            source,
        })?;
        let cluster_id = metadata_store::load_or_create_identity(&data_dir, config.node_id)?;
        remove_deleted_dirs(&data_dir);
        let broker_configs =
            BrokerConfigs::new(&config, metadata_store::load_broker_configs(&data_dir)?)?;
        let topic_defaults = broker_configs.topic_defaults();
        let now = now_ms();
        let mut topics = BTreeMap::new();
        for record in metadata_store::load_topics(&data_dir)? {
            let topic_config = TopicConfig::new(&topic_defaults, record.configs.clone())?;
            let mut partitions = Vec::new();
            for index in 0..record.partitions {
                let dir = partition_dir(&data_dir, &record.name, index);
                let log = PartitionLog::open(&dir, log_config_for(&config, &topic_config), now)?;
                partitions.push(Arc::new(Partition {
                    topic: record.name.clone(),
                    index,
                    log: RwLock::new(log),
                }));
            }
            tracing::info!(topic = %record.name, partitions = record.partitions, "loaded topic");
            topics.insert(
                record.name.clone(),
                Arc::new(Topic {
                    name: record.name,
                    id: record.id,
                    config: topic_config,
                    partitions,
                }),
            );
        }
        let producer_ids = ProducerIdManager::open(&data_dir)?;
        let (appended, _) = watch::channel(0);
        let groups = GroupCoordinator::new(config.group_config());
        let broker = Broker {
            config,
            cluster_id,
            advertised_host: advertised.0,
            advertised_port: advertised.1,
            topics: RwLock::new(topics),
            broker_configs: RwLock::new(Arc::new(broker_configs)),
            admin_lock: std::sync::Mutex::new(()),
            appended,
            groups,
            producer_ids,
        };
        broker.groups.load(&broker)?;
        Ok(broker)
    }

    /// The group coordinator.
    pub fn groups(&self) -> &GroupCoordinator {
        &self.groups
    }

    /// The node's configuration as loaded (dynamic broker configs are in
    /// [`Broker::broker_configs`]).
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The broker config layers in force.
    pub fn broker_configs(&self) -> Arc<BrokerConfigs> {
        self.broker_configs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn admin_guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.admin_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This node's id.
    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    /// The cluster id from `meta.properties`.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// Host and port clients are told to use.
    pub fn advertised(&self) -> (&str, i32) {
        (&self.advertised_host, self.advertised_port)
    }

    fn topics_read(&self) -> RwLockReadGuard<'_, BTreeMap<String, Arc<Topic>>> {
        self.topics.read().unwrap_or_else(|p| p.into_inner())
    }

    /// All topics, by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.topics_read().values().cloned().collect()
    }

    /// One topic.
    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics_read().get(name).cloned()
    }

    /// One topic by id.
    pub fn topic_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.topics_read().values().find(|t| t.id == id).cloned()
    }

    /// One partition.
    pub fn partition(&self, topic: &str, partition: i32) -> Result<Arc<Partition>, BrokerError> {
        self.topic(topic)
            .and_then(|t| {
                usize::try_from(partition)
                    .ok()
                    .and_then(|i| t.partitions.get(i).cloned())
            })
            .ok_or_else(|| BrokerError::UnknownTopicOrPartition {
                topic: topic.to_string(),
                partition,
            })
    }

    /// A receiver that changes after every append, for long-polling fetches.
    pub fn subscribe_appends(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    /// Appends validated batches to a partition and wakes waiting fetches. A duplicate from an
    /// idempotent producer writes nothing (see [`AppendInfo::duplicate`]).
    pub fn append(
        &self,
        partition: &Partition,
        records: &mut [u8],
        headers: &[crate::log::batch::BatchHeader],
        log_append_time_ms: Option<i64>,
    ) -> Result<AppendInfo, BrokerError> {
        let info = partition
            .log_mut()
            .append(records, headers, 0, log_append_time_ms, now_ms())?;
        if info.duplicate.is_none() {
            self.appended.send_modify(|n| *n = n.wrapping_add(1));
        }
        Ok(info)
    }

    /// A producer id never handed out before by this node (InitProducerId without a
    /// transactional id).
    pub fn generate_producer_id(&self) -> Result<i64, BrokerError> {
        Ok(self.producer_ids.generate()?)
    }

    /// Forgets, in every partition, idempotent producers idle for `producer_id_expiration_ms`.
    pub fn expire_producers(&self) {
        let now = now_ms();
        for topic in self.topics() {
            for p in &topic.partitions {
                let expired = p.log_mut().remove_expired_producers(now);
                if expired > 0 {
                    tracing::debug!(topic = %p.topic, partition = p.index, expired,
                        "expired idle producers");
                }
            }
        }
    }

    /// Validates a topic creation without creating anything; returns the effective partition
    /// count, replication factor and config.
    pub fn validate_new_topic(&self, t: &NewTopic) -> Result<(i32, i16, TopicConfig), BrokerError> {
        validate_topic_name(&t.name).map_err(BrokerError::InvalidTopic)?;
        if self.topic(&t.name).is_some() {
            return Err(BrokerError::TopicAlreadyExists(t.name.clone()));
        }
        let partitions = match t.num_partitions {
            -1 => self.config.num_partitions,
            n if (1..=PARTITIONS_PER_TOPIC_MAX).contains(&n) => n,
            n => {
                return Err(BrokerError::InvalidPartitions(format!(
                    "number of partitions must be between 1 and {PARTITIONS_PER_TOPIC_MAX}, got {n}"
                )))
            }
        };
        let replication_factor = match t.replication_factor {
            -1 | 1 => 1,
            n => {
                return Err(BrokerError::InvalidReplicationFactor(format!(
                    "replication factor {n} is larger than the 1 available broker"
                )))
            }
        };
        let config = TopicConfig::new(&self.broker_configs().topic_defaults(), t.configs.clone())?;
        Ok((partitions, replication_factor, config))
    }

    /// Creates a topic: partition directories, then the persisted topic table.
    pub fn create_topic(&self, t: &NewTopic) -> Result<Arc<Topic>, BrokerError> {
        let _guard = self.admin_guard();
        let (partitions, _, config) = self.validate_new_topic(t)?;
        let now = now_ms();
        let mut parts = Vec::new();
        for index in 0..partitions {
            let dir = partition_dir(&self.config.data_dir, &t.name, index);
            let log = PartitionLog::open(&dir, log_config_for(&self.config, &config), now)?;
            parts.push(Arc::new(Partition {
                topic: t.name.clone(),
                index,
                log: RwLock::new(log),
            }));
        }
        let topic = Arc::new(Topic {
            name: t.name.clone(),
            id: Uuid::new_v4(),
            config,
            partitions: parts,
        });
        let mut records: Vec<TopicRecord> = self.topics().iter().map(|t| t.record()).collect();
        records.push(topic.record());
        metadata_store::save_topics(&self.config.data_dir, records)?;
        self.topics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(t.name.clone(), topic.clone());
        tracing::info!(topic = %t.name, partitions, "created topic");
        Ok(topic)
    }

    /// Deletes a topic: removes it from the table, then its partition directories.
    pub fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        if name == crate::group::storage::OFFSETS_TOPIC {
            // The coordinator's state lives there; Kafka protects it the same way.
            return Err(BrokerError::InvalidTopic(format!(
                "cannot delete internal topic `{name}`"
            )));
        }
        let _guard = self.admin_guard();
        let topic = self
            .topic(name)
            .ok_or_else(|| BrokerError::UnknownTopicOrPartition {
                topic: name.to_string(),
                partition: -1,
            })?;
        let records: Vec<TopicRecord> = self
            .topics()
            .iter()
            .filter(|t| t.name != name)
            .map(|t| t.record())
            .collect();
        metadata_store::save_topics(&self.config.data_dir, records)?;
        self.topics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        for p in &topic.partitions {
            // Rename first so a crash mid-removal leaves a `.deleted` dir that the next start
            // finishes removing, never a half-deleted log that looks live.
            let dir = partition_dir(&self.config.data_dir, name, p.index);
            // Appended to the whole name: `with_extension` would cut a dotted topic name.
            let mut doomed = dir.clone().into_os_string();
            doomed.push(format!(".{}.deleted", topic.id.simple()));
            let doomed = PathBuf::from(doomed);
            if let Err(e) = std::fs::rename(&dir, &doomed) {
                tracing::warn!(dir = %dir.display(), error = %e, "could not rename deleted partition");
                continue;
            }
            if let Err(e) = std::fs::remove_dir_all(&doomed) {
                tracing::warn!(dir = %doomed.display(), error = %e, "could not remove deleted partition");
            }
        }
        tracing::info!(topic = %name, "deleted topic");
        Ok(())
    }

    fn topics_write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Topic>>> {
        self.topics.write().unwrap_or_else(|p| p.into_inner())
    }

    fn unknown_topic(name: &str) -> BrokerError {
        BrokerError::UnknownTopicOrPartition {
            topic: name.to_string(),
            partition: -1,
        }
    }

    /// Replaces a topic's config overrides (AlterConfigs and IncrementalAlterConfigs compute
    /// the new set). Everything is validated first; then the topic table is persisted and the
    /// new settings reach every partition log at once. With `validate_only` nothing changes.
    pub fn alter_topic_config(
        &self,
        name: &str,
        overrides: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        let _guard = self.admin_guard();
        let topic = self.topic(name).ok_or_else(|| Self::unknown_topic(name))?;
        let config = TopicConfig::new(&self.broker_configs().topic_defaults(), overrides)?;
        if validate_only {
            return Ok(());
        }
        let updated = Arc::new(topic.with(config, topic.partitions.clone()));
        self.save_and_swap(&updated)?;
        self.apply_log_config(&updated)?;
        tracing::info!(topic = %name, overrides = ?updated.config.overrides(), "altered topic config");
        Ok(())
    }

    /// Replaces one dynamic broker config layer: this broker's (`per_broker`) or the
    /// cluster-wide default. Persisted in `strait-broker-configs.json`; every topic without
    /// its own override picks the new values up at once.
    pub fn alter_broker_config(
        &self,
        per_broker: bool,
        layer: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        let _guard = self.admin_guard();
        let next = self.broker_configs().with_layer(per_broker, layer)?;
        let defaults = next.topic_defaults();
        let mut updated = Vec::new();
        for topic in self.topics() {
            let config = TopicConfig::new(&defaults, topic.config.overrides().clone())?;
            updated.push(Arc::new(topic.with(config, topic.partitions.clone())));
        }
        if validate_only {
            return Ok(());
        }
        metadata_store::save_broker_configs(&self.config.data_dir, next.dynamic())?;
        tracing::info!(dynamic = ?next.dynamic(), "altered broker config");
        *self
            .broker_configs
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        let mut topics = self.topics_write();
        for topic in &updated {
            topics.insert(topic.name.clone(), topic.clone());
        }
        drop(topics);
        for topic in &updated {
            self.apply_log_config(topic)?;
        }
        Ok(())
    }

    fn apply_log_config(&self, topic: &Topic) -> Result<(), BrokerError> {
        let log_config = topic.config.log_config();
        for p in &topic.partitions {
            p.log_mut().set_config(log_config.clone())?;
        }
        Ok(())
    }

    /// CreatePartitions: grows a topic to `count` partitions (only an increase is allowed),
    /// persisted and visible in Metadata at once. With `validate_only` nothing changes.
    /// `assignments`, when given, names the replicas of each new partition; on a single node
    /// each must be exactly this node.
    pub fn create_partitions(
        &self,
        name: &str,
        count: i32,
        assignments: Option<&[Vec<i32>]>,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        let _guard = self.admin_guard();
        let topic = self.topic(name).ok_or_else(|| Self::unknown_topic(name))?;
        let current = i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX);
        if count < current {
            return Err(BrokerError::InvalidPartitions(format!(
                "The topic {name} currently has {current} partition(s); {count} would not be an increase."
            )));
        }
        if count == current {
            return Err(BrokerError::InvalidPartitions(format!(
                "Topic already has {current} partition(s)."
            )));
        }
        if count > PARTITIONS_PER_TOPIC_MAX {
            return Err(BrokerError::InvalidPartitions(format!(
                "number of partitions must be at most {PARTITIONS_PER_TOPIC_MAX}, got {count}"
            )));
        }
        if let Some(assignments) = assignments {
            self.check_new_partition_assignments(count - current, assignments)?;
        }
        if validate_only {
            return Ok(());
        }
        let now = now_ms();
        let mut partitions = topic.partitions.clone();
        for index in current..count {
            let dir = partition_dir(&self.config.data_dir, name, index);
            let log = PartitionLog::open(&dir, topic.config.log_config(), now)?;
            partitions.push(Arc::new(Partition {
                topic: name.to_string(),
                index,
                log: RwLock::new(log),
            }));
        }
        let updated = Arc::new(topic.with(topic.config.clone(), partitions));
        self.save_and_swap(&updated)?;
        tracing::info!(topic = %name, from = current, to = count, "added partitions");
        Ok(())
    }

    /// Kafka's checks of a manual assignment for new partitions, against this one broker.
    fn check_new_partition_assignments(
        &self,
        added: i32,
        assignments: &[Vec<i32>],
    ) -> Result<(), BrokerError> {
        let bad = |m: String| Err(BrokerError::InvalidReplicaAssignment(m));
        if usize::try_from(added).ok() != Some(assignments.len()) {
            return bad(format!(
                "Attempted to add {added} additional partition(s), but only {} assignment(s) were specified.",
                assignments.len()
            ));
        }
        for replicas in assignments {
            if replicas.is_empty() {
                return bad(
                    "The manual partition assignment includes an empty replica list.".into(),
                );
            }
            if let Some(b) = replicas.iter().find(|b| **b != self.node_id()) {
                return bad(format!(
                    "The manual partition assignment includes broker {b}, but no such broker is registered."
                ));
            }
            if replicas.len() > 1 {
                return bad(format!(
                    "The manual partition assignment includes the broker {} more than once.",
                    replicas[0]
                ));
            }
        }
        Ok(())
    }

    /// DeleteRecords: moves a partition's log start offset to `offset` (-1: the high
    /// watermark) and returns the new low watermark. An offset above the high watermark, or
    /// negative other than -1, is OFFSET_OUT_OF_RANGE.
    pub fn delete_records(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<i64, BrokerError> {
        let p = self.partition(topic, partition)?;
        let mut log = p.log_mut();
        let target = if offset == -1 {
            log.log_end_offset()
        } else {
            offset
        };
        Ok(log.advance_log_start_offset(target)?)
    }

    /// One retention pass over every partition (`retention.ms`, `retention.bytes`, segments
    /// below the log start offset). Blocking file work: call it off the async workers.
    pub fn enforce_retention(&self) {
        let now = now_ms();
        for topic in self.topics() {
            let retention = topic.config.retention();
            for p in &topic.partitions {
                let result = p.log_mut().delete_old_segments(retention, now);
                match result {
                    Ok(outcome) if outcome.segments_deleted > 0 => {
                        tracing::info!(topic = %p.topic, partition = p.index,
                            segments = outcome.segments_deleted, bytes = outcome.bytes_deleted,
                            log_start_offset = outcome.log_start_offset,
                            retention_ms = retention.retention_ms,
                            retention_bytes = retention.retention_bytes,
                            "retention deleted old segments");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(topic = %p.topic, partition = p.index, error = %e, "retention failed");
                    }
                }
            }
        }
    }

    /// Persists the topic table with `updated` in place of the topic of the same name, then
    /// makes it the live one (a `Topic` is immutable; changes swap in a new one).
    fn save_and_swap(&self, updated: &Arc<Topic>) -> Result<(), BrokerError> {
        let records: Vec<TopicRecord> = self
            .topics()
            .iter()
            .map(|t| {
                if t.name == updated.name {
                    updated.record()
                } else {
                    t.record()
                }
            })
            .collect();
        metadata_store::save_topics(&self.config.data_dir, records)?;
        self.topics_write()
            .insert(updated.name.clone(), updated.clone());
        Ok(())
    }

    /// Applies `flush.ms` to every log.
    pub fn flush_due(&self) {
        let now = now_ms();
        for topic in self.topics() {
            for p in &topic.partitions {
                if let Err(e) = p.log_mut().maybe_flush(now) {
                    tracing::error!(topic = %p.topic, partition = p.index, error = %e, "flush failed");
                }
            }
        }
    }

    /// Flushes and closes every log, marking them cleanly shut down.
    pub fn close(&self) {
        for topic in self.topics() {
            for p in &topic.partitions {
                if let Err(e) = p.log_mut().close() {
                    tracing::error!(topic = %p.topic, partition = p.index, error = %e, "close failed");
                }
            }
        }
    }
}

fn remove_deleted_dirs(data_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() && path.to_string_lossy().ends_with(".deleted") {
            if let Err(e) = std::fs::remove_dir_all(&path) {
                tracing::warn!(dir = %path.display(), error = %e, "could not remove deleted partition");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleting_a_dotted_topic_removes_every_partition_dir() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "node_id: 1\nlisten: 127.0.0.1:0\ndata_dir: {}\n",
            dir.path().display()
        );
        let config = NodeConfig::parse(&yaml, Path::new("t.yaml")).unwrap();
        let broker = Broker::open(config, ("127.0.0.1".into(), 9092)).unwrap();
        let new = NewTopic {
            name: "orders.v1".into(),
            num_partitions: 3,
            replication_factor: 1,
            configs: BTreeMap::new(),
        };
        broker.create_topic(&new).unwrap();
        broker.delete_topic("orders.v1").unwrap();
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("orders"))
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
        assert!(broker.topic("orders.v1").is_none());
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_x-y").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("bad name!").is_err());
        assert!(validate_topic_name(&"a".repeat(249)).is_ok());
        assert!(validate_topic_name(&"a".repeat(250)).is_err());
    }
}
