//! The state of one broker node: its topics, the partitions it hosts and their logs.
//!
//! `Broker` is what request handlers talk to; it knows nothing about sockets. It plays Kafka's
//! ReplicaManager (partitions and their logs) and MetadataCache (what clients are told, read
//! from this node's copy of the controller's [`MetadataImage`]). Cluster changes (topics,
//! configs, partitions, producer-id blocks) are proposed to the controller quorum and reach
//! the local state only through [`Broker::apply_image`], which makes this node host exactly
//! the partitions the image assigns to it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use tokio::sync::watch;
use uuid::Uuid;

use crate::broker_config::{BrokerConfigError, BrokerConfigs};
use crate::config::NodeConfig;
use crate::controller::image::{self, MetadataCommand, MetadataImage};
use crate::controller::{Controller, ControllerError};
use crate::group::{GroupCoordinator, WriteError};
use crate::log::{AppendInfo, LogConfig, LogError, PartitionLog};
use crate::metadata_store::{DynamicBrokerConfigs, MetadataStoreError};
use crate::partition::IsrChange;
use crate::replication::fetcher::{FetchSettings, FetchTarget, FetcherManager};
use crate::topic_config::{validate_topic_name, ConfigValueError, TopicConfig};

use crate::topic_config::PARTITIONS_PER_TOPIC_MAX;

use crate::clock::now_ms;

/// Ids a broker takes from the controller at once (Kafka's producer id block size).
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;
/// How long an admin request waits for the controller quorum.
pub const CONTROLLER_TIMEOUT_MS: u64 = 30_000;

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
    /// The partition exists but this node does not lead it (NOT_LEADER_OR_FOLLOWER).
    #[error("this node does not lead {topic}-{partition}")]
    NotLeaderOrFollower {
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
    /// The partition is assigned here but offline: its log could not be opened or take its
    /// role (KAFKA_STORAGE_ERROR).
    #[error("{topic}-{partition} is offline on this node: {reason}")]
    Offline {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Why its transition failed.
        reason: String,
    },
    /// The partition log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// Metadata could not be persisted.
    #[error(transparent)]
    Metadata(#[from] MetadataStoreError),
    /// The controller quorum did not answer.
    #[error(transparent)]
    Controller(#[from] ControllerError),
    /// The controller refused a command, with Kafka's code.
    #[error("{message}")]
    Refused {
        /// Kafka error code.
        code: i16,
        /// Why.
        message: String,
    },
    /// The group coordinator could not use `__consumer_offsets`, with the code it got.
    #[error("__consumer_offsets: {0}")]
    Offsets(#[from] WriteError),
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
            BrokerError::NotLeaderOrFollower { .. } => E::NotLeaderOrFollower.code(),
            BrokerError::InvalidTopic(_) => E::InvalidTopicException.code(),
            BrokerError::TopicAlreadyExists(_) => E::TopicAlreadyExists.code(),
            BrokerError::InvalidPartitions(_) => E::InvalidPartitions.code(),
            BrokerError::InvalidReplicationFactor(_) => E::InvalidReplicationFactor.code(),
            BrokerError::InvalidConfig(_) => E::InvalidConfig.code(),
            BrokerError::InvalidRequest(_) => E::InvalidRequest.code(),
            BrokerError::InvalidReplicaAssignment(_) => E::InvalidReplicaAssignment.code(),
            BrokerError::Offline { .. } => E::KafkaStorageError.code(),
            BrokerError::Log(e) => e.kafka_error_code(),
            BrokerError::Metadata(_) => E::KafkaStorageError.code(),
            BrokerError::Controller(e) => e.kafka_error_code(),
            BrokerError::Refused { code, .. } => *code,
            BrokerError::Offsets(e) => e.code.code(),
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

pub use crate::partition::{Partition, ReplicaState};

/// A topic: its config for everyone, its partitions for the replicas this node hosts.
/// Immutable: every applied image swaps in new `Topic`s sharing the same `Partition`s, so a
/// request works on one consistent version.
pub struct Topic {
    /// Name.
    pub name: String,
    /// Kafka topic id.
    pub id: Uuid,
    /// Effective configuration.
    pub config: TopicConfig,
    /// How many partitions the topic has, cluster-wide.
    pub partition_count: i32,
    /// The partitions hosted on this node, by index.
    pub local: BTreeMap<i32, Arc<Partition>>,
    /// Who alone may produce to it, if anyone is kept out (see [`image::WriteProtection`]).
    pub write_protection: Option<image::WriteProtection>,
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
    /// Replicas per partition, when the request names them.
    pub assignment: Option<Vec<Vec<i32>>>,
}

/// What validating a new topic settled.
#[derive(Debug, Clone)]
pub struct ValidTopic {
    /// Partitions.
    pub partitions: i32,
    /// Replication factor.
    pub replication_factor: i16,
    /// Effective config.
    pub config: TopicConfig,
}

/// The producer-id block this broker hands ids out of.
#[derive(Debug, Default)]
struct ProducerIdBlock {
    next: i64,
    end: i64,
}

/// One broker node's state.
pub struct Broker {
    config: NodeConfig,
    advertised_host: String,
    advertised_port: i32,
    controller: Arc<Controller>,
    /// The image the local state reflects.
    image: RwLock<Arc<MetadataImage>>,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Broker config layers (static and dynamic), rebuilt from every image.
    broker_configs: RwLock<Arc<BrokerConfigs>>,
    /// Serialises [`Broker::apply_image`].
    reconcile_lock: std::sync::Mutex<()>,
    /// Bumped after every append, high watermark move and replica state change;
    /// long-polling fetches and acks=all produces wait on it.
    appended: Arc<watch::Sender<u64>>,
    /// Follows the partitions this node replicates from other leaders.
    fetchers: FetcherManager,
    /// Consumer groups and committed offsets.
    groups: GroupCoordinator,
    producer_ids: tokio::sync::Mutex<ProducerIdBlock>,
    /// Partitions assigned here whose last transition failed, with the reason: served as
    /// KAFKA_STORAGE_ERROR and retried on every image.
    offline: std::sync::Mutex<BTreeMap<(String, i32), String>>,
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

/// Renames a partition directory out of the way, then removes it, so a crash mid-removal
/// leaves a `.deleted` directory that the next start finishes removing, never a half-deleted
/// log that looks live.
fn remove_partition_dir(dir: &Path, topic_id: Uuid) {
    // Appended to the whole name: `with_extension` would cut a dotted topic name.
    let mut doomed = dir.to_path_buf().into_os_string();
    doomed.push(format!(".{}.deleted", topic_id.simple()));
    let doomed = PathBuf::from(doomed);
    if let Err(e) = std::fs::rename(dir, &doomed) {
        tracing::warn!(dir = %dir.display(), error = %e, "could not rename deleted partition");
        return;
    }
    if let Err(e) = std::fs::remove_dir_all(&doomed) {
        tracing::warn!(dir = %doomed.display(), error = %e, "could not remove deleted partition");
    }
}

fn refused(result: image::CommandResult) -> Result<(), BrokerError> {
    if result.error_code == 0 {
        Ok(())
    } else {
        Err(BrokerError::Refused {
            code: result.error_code,
            message: result.message.unwrap_or_default(),
        })
    }
}

impl Broker {
    /// A broker over `config.data_dir` that takes its metadata from `controller`. Hosts
    /// nothing until [`Broker::apply_image`].
    pub fn new(
        config: NodeConfig,
        advertised: (String, i32),
        controller: Arc<Controller>,
    ) -> Result<Broker, BrokerError> {
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|source| MetadataStoreError::Io {
            path: data_dir.clone(),
            source,
        })?;
        remove_deleted_dirs(&data_dir);
        let broker_configs = BrokerConfigs::new(&config, DynamicBrokerConfigs::default())?;
        let (appended, _) = watch::channel(0);
        let groups = GroupCoordinator::new(crate::group::GroupConfig::from_node(&config));
        let fetchers = FetcherManager::new(FetchSettings {
            node_id: config.node_id,
            wait_max_ms: config.replica_fetch_wait_max_ms,
            partition_max_bytes: config.replica_fetch_max_bytes,
            response_max_bytes: config.replica_fetch_response_max_bytes,
            request_timeout_ms: 30_000,
        });
        Ok(Broker {
            config,
            advertised_host: advertised.0,
            advertised_port: advertised.1,
            controller,
            image: RwLock::new(Arc::new(MetadataImage::default())),
            topics: RwLock::new(BTreeMap::new()),
            broker_configs: RwLock::new(Arc::new(broker_configs)),
            reconcile_lock: std::sync::Mutex::new(()),
            appended: Arc::new(appended),
            fetchers,
            groups,
            producer_ids: tokio::sync::Mutex::new(ProducerIdBlock::default()),
            offline: std::sync::Mutex::new(BTreeMap::new()),
        })
    }

    /// The group coordinator.
    pub fn groups(&self) -> &GroupCoordinator {
        &self.groups
    }

    /// The controller of this node.
    pub fn controller(&self) -> &Arc<Controller> {
        &self.controller
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

    /// This node's id.
    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    /// The cluster id.
    pub fn cluster_id(&self) -> String {
        self.image().cluster_id.clone().unwrap_or_default()
    }

    /// Host and port clients are told to use.
    pub fn advertised(&self) -> (&str, i32) {
        (&self.advertised_host, self.advertised_port)
    }

    /// The metadata image the local state reflects.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.read().unwrap_or_else(|p| p.into_inner()).clone()
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

    /// Whether `topic` has partition `partition` in the metadata, wherever its replicas are.
    /// Offset commits are checked against this, as Kafka checks them against its metadata
    /// cache: a group's coordinator need not host the partitions the group consumes.
    pub fn partition_exists(&self, topic: &str, partition: i32) -> bool {
        self.topic(topic)
            .is_some_and(|t| (0..t.partition_count).contains(&partition))
    }

    /// A partition hosted on this node. A partition that exists elsewhere is
    /// NOT_LEADER_OR_FOLLOWER, one that does not exist UNKNOWN_TOPIC_OR_PARTITION.
    pub fn partition(&self, topic: &str, partition: i32) -> Result<Arc<Partition>, BrokerError> {
        let Some(t) = self.topic(topic) else {
            return Err(BrokerError::UnknownTopicOrPartition {
                topic: topic.to_string(),
                partition,
            });
        };
        match t.local.get(&partition) {
            Some(p) => Ok(p.clone()),
            None if (0..t.partition_count).contains(&partition) => {
                let offline = self.offline.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(reason) = offline.get(&(topic.to_string(), partition)) {
                    return Err(BrokerError::Offline {
                        topic: topic.to_string(),
                        partition,
                        reason: reason.clone(),
                    });
                }
                Err(BrokerError::NotLeaderOrFollower {
                    topic: topic.to_string(),
                    partition,
                })
            }
            None => Err(BrokerError::UnknownTopicOrPartition {
                topic: topic.to_string(),
                partition,
            }),
        }
    }

    /// A partition this node leads, with its leader epoch; NOT_LEADER_OR_FOLLOWER otherwise.
    pub fn leader_partition(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<(Arc<Partition>, i32), BrokerError> {
        let p = self.partition(topic, partition)?;
        match p.leader_epoch_on(self.node_id()) {
            Some(epoch) => Ok((p, epoch)),
            None => Err(BrokerError::NotLeaderOrFollower {
                topic: topic.to_string(),
                partition,
            }),
        }
    }

    /// Every partition hosted here.
    pub fn local_partitions(&self) -> Vec<Arc<Partition>> {
        self.topics_read()
            .values()
            .flat_map(|t| t.local.values().cloned())
            .collect()
    }

    /// Waits (Kafka's delayed produce) until `appended` is on every ISR member or `deadline`
    /// passes; the error code to answer (see [`crate::replication::wait_replicated`]).
    pub async fn wait_replicated(
        &self,
        appended: &crate::replication::Appended,
        deadline: tokio::time::Instant,
    ) -> i16 {
        crate::replication::wait_replicated(
            self.subscribe_appends(),
            self.node_id(),
            crate::replication::replica_lag_time_max_ms(&self.config),
            appended,
            deadline,
        )
        .await
    }

    /// A receiver that changes after every append, for long-polling fetches.
    pub fn subscribe_appends(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    /// Appends validated batches to a partition this node leads and wakes waiting fetches. A
    /// duplicate from an idempotent producer writes nothing (see [`AppendInfo::duplicate`]).
    pub fn append(
        &self,
        partition: &Partition,
        records: &mut [u8],
        headers: &[crate::log::batch::BatchHeader],
        log_append_time_ms: Option<i64>,
    ) -> Result<AppendInfo, BrokerError> {
        let Some(leader_epoch) = partition.leader_epoch_on(self.node_id()) else {
            return Err(BrokerError::NotLeaderOrFollower {
                topic: partition.topic.clone(),
                partition: partition.index,
            });
        };
        let info = partition.log_mut().append(
            records,
            headers,
            leader_epoch,
            log_append_time_ms,
            now_ms(),
        )?;
        if info.duplicate.is_none() && !partition.maybe_advance_high_watermark(self.node_id()) {
            partition.notify_changed();
        }
        Ok(info)
    }

    /// A producer id never handed out before anywhere in the cluster (InitProducerId without
    /// a transactional id). Ids come from blocks the controller allocates.
    pub async fn generate_producer_id(&self) -> Result<i64, BrokerError> {
        let mut block = self.producer_ids.lock().await;
        if block.next >= block.end {
            let (_, result) = self
                .controller
                .propose(
                    MetadataCommand::AllocateProducerIds {
                        broker: self.node_id(),
                        count: PRODUCER_ID_BLOCK_SIZE,
                    },
                    CONTROLLER_TIMEOUT_MS,
                )
                .await?;
            let start = result.value;
            refused(result)?;
            block.next = start;
            block.end = start + PRODUCER_ID_BLOCK_SIZE;
            tracing::debug!(start = block.next, end = block.end, "new producer id block");
        }
        let id = block.next;
        block.next += 1;
        Ok(id)
    }

    /// Forgets, in every partition, idempotent producers idle for `producer_id_expiration_ms`.
    pub fn expire_producers(&self) {
        let now = now_ms();
        for p in self.local_partitions() {
            let expired = p.log_mut().remove_expired_producers(now);
            if expired > 0 {
                tracing::debug!(topic = %p.topic, partition = p.index, expired,
                    "expired idle producers");
            }
        }
    }

    /// Validates a topic creation without creating anything.
    pub fn validate_new_topic(&self, t: &NewTopic) -> Result<ValidTopic, BrokerError> {
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
        let available = self.controller.image().active_brokers().len();
        let replication_factor = match t.replication_factor {
            -1 => self.config.default_replication_factor,
            n if n >= 1 => n,
            n => {
                return Err(BrokerError::InvalidReplicationFactor(format!(
                    "replication factor must be at least 1, got {n}"
                )))
            }
        };
        if usize::try_from(replication_factor).unwrap_or(usize::MAX) > available {
            return Err(BrokerError::InvalidReplicationFactor(format!(
                "Unable to replicate the partition {replication_factor} time(s): The target replication factor of {replication_factor} cannot be reached because only {available} broker(s) are registered."
            )));
        }
        if let Some(assignment) = &t.assignment {
            self.check_new_partition_assignments(&self.controller.image(), partitions, assignment)?;
        }
        let config = TopicConfig::new(&self.broker_configs().topic_defaults(), t.configs.clone())?;
        Ok(ValidTopic {
            partitions,
            replication_factor,
            config,
        })
    }

    /// A random starting broker for replica placement, so topics spread their leaders.
    fn placement_start() -> usize {
        usize::from(Uuid::new_v4().as_bytes()[0])
    }

    /// Creates a topic through the controller; returns once this node has applied it.
    pub async fn create_topic(&self, t: &NewTopic) -> Result<Arc<Topic>, BrokerError> {
        let valid = self.validate_new_topic(t)?;
        let assignment = match &t.assignment {
            Some(a) => a.clone(),
            None => image::assign_replicas(
                &self.controller.image().active_brokers(),
                0,
                valid.partitions,
                usize::try_from(valid.replication_factor).unwrap_or(1),
                Self::placement_start(),
            ),
        };
        let result = self
            .controller
            .propose_and_apply(
                MetadataCommand::CreateTopic {
                    name: t.name.clone(),
                    id: Uuid::new_v4(),
                    configs: t.configs.clone(),
                    assignment,
                },
                CONTROLLER_TIMEOUT_MS,
            )
            .await?;
        refused(result)?;
        self.apply_image(self.controller.image())?;
        tracing::info!(topic = %t.name, partitions = valid.partitions,
            replication_factor = valid.replication_factor, "created topic");
        self.topic(&t.name).ok_or_else(|| {
            BrokerError::Internal(format!("topic `{}` missing after creation", t.name))
        })
    }

    /// Deletes a topic through the controller; every replica removes its partition directories
    /// when it applies the deletion.
    pub async fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        if name == crate::group::storage::OFFSETS_TOPIC {
            // The coordinator's state lives there; Kafka protects it the same way.
            return Err(BrokerError::InvalidTopic(format!(
                "cannot delete internal topic `{name}`"
            )));
        }
        if self.topic(name).is_none() {
            return Err(Self::unknown_topic(name));
        }
        let result = self
            .controller
            .propose_and_apply(
                MetadataCommand::DeleteTopic {
                    name: name.to_string(),
                },
                CONTROLLER_TIMEOUT_MS,
            )
            .await?;
        refused(result)?;
        self.apply_image(self.controller.image())?;
        tracing::info!(topic = %name, "deleted topic");
        Ok(())
    }

    fn unknown_topic(name: &str) -> BrokerError {
        BrokerError::UnknownTopicOrPartition {
            topic: name.to_string(),
            partition: -1,
        }
    }

    /// Replaces a topic's config overrides (AlterConfigs and IncrementalAlterConfigs compute
    /// the new set). Everything is validated first; then the controller commits it and every
    /// replica applies it to its logs. With `validate_only` nothing changes.
    pub async fn alter_topic_config(
        &self,
        name: &str,
        overrides: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        if self.topic(name).is_none() {
            return Err(Self::unknown_topic(name));
        }
        TopicConfig::new(&self.broker_configs().topic_defaults(), overrides.clone())?;
        if validate_only {
            return Ok(());
        }
        let result = self
            .controller
            .propose_and_apply(
                MetadataCommand::AlterTopicConfigs {
                    name: name.to_string(),
                    configs: overrides.clone(),
                },
                CONTROLLER_TIMEOUT_MS,
            )
            .await?;
        refused(result)?;
        self.apply_image(self.controller.image())?;
        tracing::info!(topic = %name, ?overrides, "altered topic config");
        Ok(())
    }

    /// Asks the controller to cut partitions of a write-protected topic at the given offsets
    /// (see [`image::TailTruncation`]); each partition's leader cuts when it applies the new
    /// epoch, so the cut may land just after this returns.
    pub async fn truncate_tails(
        &self,
        name: &str,
        ends: Vec<(i32, i64)>,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        let command = MetadataCommand::TruncateTails {
            name: name.to_string(),
            ends: ends.clone(),
        };
        if self.propose_for_topic(name, command, validate_only).await? {
            tracing::warn!(topic = %name, ?ends, "tail truncation asked");
        }
        Ok(())
    }

    /// Proposes `command` about the existing topic `name` (always, even when this node's
    /// image already shows its effect: that image may be behind the controller's) and applies
    /// the result here; with `validate_only`, only checks that the topic exists. Returns
    /// whether it was proposed.
    async fn propose_for_topic(
        &self,
        name: &str,
        command: MetadataCommand,
        validate_only: bool,
    ) -> Result<bool, BrokerError> {
        if self.topic(name).is_none() {
            return Err(Self::unknown_topic(name));
        }
        if validate_only {
            return Ok(false);
        }
        let result = self
            .controller
            .propose_and_apply(command, CONTROLLER_TIMEOUT_MS)
            .await?;
        refused(result)?;
        self.apply_image(self.controller.image())?;
        Ok(true)
    }

    /// Sets or clears a topic's write protection through the controller.
    pub async fn set_write_protection(
        &self,
        name: &str,
        protection: Option<image::WriteProtection>,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        // Proposed even when this node's image already shows the value (an unfence after a
        // fence it has not seen yet).
        let command = MetadataCommand::SetWriteProtection {
            name: name.to_string(),
            protection: protection.clone(),
        };
        if !self.propose_for_topic(name, command, validate_only).await? {
            return Ok(());
        }
        match protection {
            Some(p) => {
                tracing::info!(topic = %name, flow = %p.flow, writer = ?p.writer, "topic write-protected")
            }
            None => tracing::info!(topic = %name, "topic write protection cleared"),
        }
        Ok(())
    }

    /// Replaces one dynamic broker config layer: this broker's (`per_broker`) or the
    /// cluster-wide default. Committed to the metadata log; every topic without its own
    /// override picks the new values up.
    pub async fn alter_broker_config(
        &self,
        per_broker: bool,
        layer: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        let next = self
            .broker_configs()
            .with_layer(per_broker, layer.clone())?;
        let defaults = next.topic_defaults();
        for topic in self.topics() {
            TopicConfig::new(&defaults, topic.config.overrides().clone())?;
        }
        if validate_only {
            return Ok(());
        }
        let resource = if per_broker {
            self.node_id().to_string()
        } else {
            String::new()
        };
        let result = self
            .controller
            .propose_and_apply(
                MetadataCommand::AlterBrokerConfigs {
                    resource,
                    configs: layer,
                },
                CONTROLLER_TIMEOUT_MS,
            )
            .await?;
        refused(result)?;
        self.apply_image(self.controller.image())?;
        tracing::info!(dynamic = ?self.broker_configs().dynamic(), "altered broker config");
        Ok(())
    }

    /// CreatePartitions: grows a topic to `count` partitions (only an increase is allowed).
    /// With `validate_only` nothing changes. `assignments`, when given, names the replicas of
    /// each new partition.
    pub async fn create_partitions(
        &self,
        name: &str,
        count: i32,
        assignments: Option<&[Vec<i32>]>,
        validate_only: bool,
    ) -> Result<(), BrokerError> {
        let topic = self.topic(name).ok_or_else(|| Self::unknown_topic(name))?;
        let current = topic.partition_count;
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
        let image = self.controller.image();
        let assignment = match assignments {
            Some(assignments) => {
                self.check_new_partition_assignments(&image, count - current, assignments)?;
                assignments.to_vec()
            }
            None => {
                let replication_factor = image
                    .partition(name, 0)
                    .map(|p| p.replicas.len())
                    .unwrap_or(1);
                image::assign_replicas(
                    &image.active_brokers(),
                    current,
                    count - current,
                    replication_factor,
                    Self::placement_start(),
                )
            }
        };
        if validate_only {
            return Ok(());
        }
        let result = self
            .controller
            .propose_and_apply(
                MetadataCommand::CreatePartitions {
                    name: name.to_string(),
                    assignment,
                },
                CONTROLLER_TIMEOUT_MS,
            )
            .await?;
        refused(result)?;
        self.apply_image(self.controller.image())?;
        tracing::info!(topic = %name, from = current, to = count, "added partitions");
        Ok(())
    }

    /// Kafka's checks of a manual assignment for new partitions.
    fn check_new_partition_assignments(
        &self,
        image: &MetadataImage,
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
            for (i, b) in replicas.iter().enumerate() {
                if !image.brokers.contains_key(b) {
                    return bad(format!(
                        "The manual partition assignment includes broker {b}, but no such broker is registered."
                    ));
                }
                if replicas[..i].contains(b) {
                    return bad(format!(
                        "The manual partition assignment includes the broker {b} more than once."
                    ));
                }
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
        let (p, _) = self.leader_partition(topic, partition)?;
        let mut log = p.log_mut();
        let high_watermark = log.high_watermark();
        let target = if offset == -1 { high_watermark } else { offset };
        if target > high_watermark {
            return Err(BrokerError::Refused {
                code: kafka_protocol::error::ResponseError::OffsetOutOfRange.code(),
                message: format!(
                    "offset {target} is above the high watermark {high_watermark} of {topic}-{partition}"
                ),
            });
        }
        Ok(log.advance_log_start_offset(target)?)
    }

    /// Makes the local state match `image`: broker configs, topic configs, the partitions this
    /// node hosts (opening new ones, removing those of deleted topics) and their replica
    /// states; then tells the group coordinator which offsets partitions it now leads.
    /// Idempotent, and serialised; blocking file work: call it off the async workers when the
    /// image may open or remove logs.
    pub fn apply_image(&self, image: Arc<MetadataImage>) -> Result<(), BrokerError> {
        let _guard = self
            .reconcile_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if self.image().applied_index > image.applied_index {
            return Ok(());
        }
        let me = self.node_id();
        let dynamic = DynamicBrokerConfigs {
            cluster_default: image.broker_configs.get("").cloned().unwrap_or_default(),
            per_broker: image
                .broker_configs
                .get(&me.to_string())
                .cloned()
                .unwrap_or_default(),
        };
        let broker_configs = match BrokerConfigs::new(&self.config, dynamic) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                tracing::error!(error = %e, "dynamic broker configs in the metadata log are invalid here; keeping the previous ones");
                self.broker_configs()
            }
        };
        let defaults = broker_configs.topic_defaults();
        let old: BTreeMap<String, Arc<Topic>> = self.topics_read().clone();
        // Topics deleted, or deleted and created again under the same name: their directories
        // go before any new partition opens at the same path.
        let removed: Vec<Arc<Topic>> = old
            .values()
            .filter(|o| image.topics.get(&o.name).map(|t| t.id) != Some(o.id))
            .cloned()
            .collect();
        if !removed.is_empty() {
            self.topics
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|name, t| !removed.iter().any(|r| r.name == *name && r.id == t.id));
        }
        for topic in &removed {
            for p in topic.local.values() {
                if let Err(e) = p.log_mut().close() {
                    tracing::warn!(topic = %topic.name, partition = p.index, error = %e, "closing a deleted partition failed");
                }
                remove_partition_dir(
                    &partition_dir(&self.config.data_dir, &topic.name, p.index),
                    topic.id,
                );
            }
            tracing::info!(topic = %topic.name, "removed the partitions of a deleted topic");
        }
        let mut next = BTreeMap::new();
        let now = now_ms();
        let mut led_offsets_partitions = Vec::new();
        let mut fetch_targets = BTreeMap::new();
        // A copy, updated as partitions transition and put back at the end: request handlers
        // read the map, and must not wait behind a long log recovery here.
        let mut offline = self
            .offline
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        // Partitions of deleted topics, or no longer assigned here, are no longer offline here.
        offline.retain(|(topic, index), _| {
            image
                .partition(topic, *index)
                .is_some_and(|p| p.replicas.contains(&me))
        });
        for (name, t) in &image.topics {
            let config = match TopicConfig::new(&defaults, t.configs.clone()) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(topic = %name, error = %e, "topic config in the metadata log is invalid here; using the defaults");
                    TopicConfig::new(&defaults, BTreeMap::new())?
                }
            };
            let log_config = log_config_for(&self.config, &config);
            let previous = old.get(name).filter(|o| o.id == t.id);
            let mut local = BTreeMap::new();
            for (i, p) in t.partitions.iter().enumerate() {
                if !p.replicas.contains(&me) {
                    continue;
                }
                let index = i32::try_from(i).unwrap_or(i32::MAX);
                let state = ReplicaState::from(p);
                // One partition's transition: a failure (its directory or a state file it must
                // read is bad) takes that partition offline alone, as Kafka does, and every
                // other partition of the image still transitions.
                let mut transition = || -> Result<Arc<Partition>, BrokerError> {
                    let (partition, before) = match previous.and_then(|o| o.local.get(&index)) {
                        Some(existing) => {
                            existing.log_mut().set_config(log_config.clone())?;
                            let before = existing.replica_state();
                            if before != state {
                                tracing::debug!(topic = %name, partition = index, leader = state.leader,
                                leader_epoch = state.leader_epoch, isr = ?state.isr, "replica state changed");
                                existing.set_replica_state(state.clone());
                            }
                            (existing.clone(), Some(before))
                        }
                        None => {
                            let dir = partition_dir(&self.config.data_dir, name, index);
                            let log = PartitionLog::open(&dir, log_config.clone(), now)?;
                            let p = Arc::new(Partition::new(
                                name.clone(),
                                index,
                                log,
                                state.clone(),
                                self.appended.clone(),
                            ));
                            (p, None)
                        }
                    };
                    let new_epoch = before.as_ref().is_none_or(|b| {
                        b.leader != state.leader || b.leader_epoch != state.leader_epoch
                    });
                    if state.leader == me {
                        if new_epoch {
                            tracing::info!(topic = %name, partition = index, leader_epoch = state.leader_epoch,
                            isr = ?state.isr, "leading partition");
                            partition.become_leader(me, &state)?;
                        } else if before.as_ref().is_some_and(|b| b.isr != state.isr) {
                            // An ISR change was applied: the high watermark may move.
                            partition.clear_pending_isr();
                            partition.maybe_advance_high_watermark(me);
                        }
                    } else {
                        if new_epoch {
                            partition.stop_leading();
                        }
                        let shutting_down = image.brokers.get(&me).is_some_and(|b| b.shutting_down);
                        if let (Some(leader), false) =
                            (image.brokers.get(&state.leader), shutting_down)
                        {
                            fetch_targets.insert(
                                (name.clone(), index),
                                FetchTarget {
                                    leader: state.leader,
                                    leader_addr: format!("{}:{}", leader.host, leader.port),
                                    leader_epoch: state.leader_epoch,
                                    partition: partition.clone(),
                                },
                            );
                        }
                    }
                    if new_epoch || before.as_ref() != Some(&state) {
                        partition.notify_changed();
                    }
                    if name == crate::group::storage::OFFSETS_TOPIC && state.leader == me {
                        led_offsets_partitions.push(index);
                    }
                    Ok(partition)
                };
                match transition() {
                    Ok(partition) => {
                        if let Some(reason) = offline.remove(&(name.clone(), index)) {
                            tracing::info!(topic = %name, partition = index, was = %reason, "partition back online");
                        }
                        local.insert(index, partition);
                    }
                    Err(e) => {
                        let reason = e.to_string();
                        // Said once per cause, not on every image.
                        if offline.get(&(name.clone(), index)) != Some(&reason) {
                            tracing::error!(topic = %name, partition = index, error = %reason,
                                "partition offline on this node: its log cannot be opened or take its new role; \
                                 the other partitions carry on, and it is tried again on every metadata change");
                        }
                        offline.insert((name.clone(), index), reason);
                    }
                }
            }
            next.insert(
                name.clone(),
                Arc::new(Topic {
                    name: name.clone(),
                    id: t.id,
                    config,
                    partition_count: i32::try_from(t.partitions.len()).unwrap_or(i32::MAX),
                    local,
                    write_protection: t.write_protection.clone(),
                }),
            );
        }
        *self.offline.lock().unwrap_or_else(|p| p.into_inner()) = offline;
        *self.topics.write().unwrap_or_else(|p| p.into_inner()) = next;
        *self
            .broker_configs
            .write()
            .unwrap_or_else(|p| p.into_inner()) = broker_configs;
        *self.image.write().unwrap_or_else(|p| p.into_inner()) = image;
        self.fetchers.set_targets(fetch_targets);
        self.groups
            .set_led_partitions(self, &led_offsets_partitions)?;
        Ok(())
    }

    /// Removes partition directories of topics the image does not know (deleted while this
    /// node was down), as Kafka removes stray partitions. Call once, after the first image.
    pub fn remove_stray_partitions(&self) {
        let Ok(entries) = std::fs::read_dir(&self.config.data_dir) else {
            return;
        };
        let image = self.image();
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((topic, index)) = name.rsplit_once('-') else {
                continue;
            };
            let Ok(index) = index.parse::<i32>() else {
                continue;
            };
            if validate_topic_name(topic).is_err() {
                continue;
            }
            let hosted = image
                .partition(topic, index)
                .is_some_and(|p| p.replicas.contains(&self.node_id()));
            if !hosted {
                tracing::info!(dir = %path.display(), "removing a stray partition the metadata does not assign here");
                remove_partition_dir(&path, Uuid::nil());
            }
        }
    }

    /// One retention pass over every partition (`retention.ms`, `retention.bytes`, segments
    /// below the log start offset). Blocking file work: call it off the async workers.
    pub fn enforce_retention(&self) {
        let now = now_ms();
        for topic in self.topics() {
            let retention = topic.config.retention();
            for p in topic.local.values() {
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

    /// Applies `flush.ms` to every log.
    pub fn flush_due(&self) {
        let now = now_ms();
        for p in self.local_partitions() {
            if let Err(e) = p.log_mut().maybe_flush(now) {
                tracing::error!(topic = %p.topic, partition = p.index, error = %e, "flush failed");
            }
        }
    }

    /// Asks the controller for an ISR change of a partition this node leads (Kafka's
    /// AlterPartition). The local ISR changes when the committed change is applied; a refused
    /// or failed request is forgotten so a later check can ask again.
    pub async fn alter_isr(&self, partition: &Partition, change: IsrChange) {
        let command = MetadataCommand::AlterPartition {
            topic: partition.topic.clone(),
            partition: partition.index,
            leader: self.node_id(),
            leader_epoch: change.leader_epoch,
            partition_epoch: change.partition_epoch,
            isr: change.isr.clone(),
        };
        match self
            .controller
            .propose(command, CONTROLLER_TIMEOUT_MS)
            .await
        {
            Ok((index, result)) if result.error_code == 0 => {
                tracing::info!(topic = %partition.topic, partition = partition.index,
                    isr = ?change.isr, "ISR changed");
                if self
                    .controller
                    .wait_applied(index, CONTROLLER_TIMEOUT_MS)
                    .await
                    .is_err()
                {
                    partition.clear_pending_isr();
                }
            }
            Ok((_, result)) => {
                tracing::debug!(topic = %partition.topic, partition = partition.index,
                    isr = ?change.isr, code = result.error_code, message = ?result.message,
                    "ISR change refused");
                partition.clear_pending_isr();
            }
            Err(e) => {
                tracing::warn!(topic = %partition.topic, partition = partition.index,
                    error = %e, "ISR change not committed");
                partition.clear_pending_isr();
            }
        }
    }

    /// Shrinks the ISR of every led partition whose followers lag by more than
    /// `replica_lag_time_max_ms` (Kafka's `maybeShrinkIsr`).
    pub async fn shrink_lagging_isrs(&self) {
        let lag_ms = i64::try_from(self.config.replica_lag_time_max_ms).unwrap_or(i64::MAX);
        for p in self.local_partitions() {
            if let Some(change) = p.isr_shrink(self.node_id(), lag_ms) {
                tracing::info!(topic = %p.topic, partition = p.index, isr = ?change.isr,
                    lag_max_ms = lag_ms, "shrinking the ISR: followers out of sync");
                self.alter_isr(&p, change).await;
            }
        }
    }

    /// Flushes and closes every log, marking them cleanly shut down.
    pub fn close(&self) {
        self.fetchers.shutdown();
        for p in self.local_partitions() {
            if let Err(e) = p.log_mut().close() {
                tracing::error!(topic = %p.topic, partition = p.index, error = %e, "close failed");
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

    #[tokio::test]
    async fn deleting_a_dotted_topic_removes_every_partition_dir() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "node_id: 1\nlisten: 127.0.0.1:0\ndata_dir: {}\n",
            dir.path().display()
        );
        let config = NodeConfig::parse(&yaml, Path::new("t.yaml")).unwrap();
        let broker = crate::node::open_standalone(config).await.unwrap();
        let new = NewTopic {
            name: "orders.v1".into(),
            num_partitions: 3,
            replication_factor: 1,
            configs: BTreeMap::new(),
            assignment: None,
        };
        broker.create_topic(&new).await.unwrap();
        assert!(dir.path().join("orders.v1-2").is_dir());
        broker.delete_topic("orders.v1").await.unwrap();
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("orders"))
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
        assert!(broker.topic("orders.v1").is_none());
    }
}
