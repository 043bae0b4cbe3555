//! Node configuration: the YAML file a `strait broker` process starts from.
//!
//! Keys are snake_case versions of Apache Kafka's broker property names (`node_id` is
//! `node.id`, `log.segment_bytes` is `log.segment.bytes`), so what an operator knows carries
//! over. Unknown keys are rejected with the file, line and column, and a relative `data_dir` is
//! resolved against the directory of the file that names it.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Kafka's `log.segment.bytes` default: 1 GiB.
pub const LOG_SEGMENT_BYTES_DEFAULT: u64 = 1 << 30;
/// Kafka's `log.roll.ms` default: 7 days.
pub const LOG_SEGMENT_MS_DEFAULT: u64 = 7 * 24 * 60 * 60 * 1000;
/// Kafka's `log.index.interval.bytes` default.
pub const LOG_INDEX_INTERVAL_BYTES_DEFAULT: u64 = 4096;
/// Kafka's `message.max.bytes` default.
pub const MESSAGE_MAX_BYTES_DEFAULT: u32 = 1_048_588;
/// Kafka's `producer.id.expiration.ms` default: one day.
pub const PRODUCER_ID_EXPIRATION_MS_DEFAULT: u64 = 24 * 60 * 60 * 1000;
/// Kafka's `socket.request.max.bytes` default: 100 MiB.
pub const SOCKET_REQUEST_MAX_BYTES_DEFAULT: u32 = 100 * 1024 * 1024;
/// Kafka's `log.retention.check.interval.ms` default: 5 minutes.
pub const LOG_RETENTION_CHECK_INTERVAL_MS_DEFAULT: u64 = 300_000;

/// Why a configuration could not be loaded. Each message names the file and, where the YAML
/// parser knows it, the line and column.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read config file: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML is malformed or does not match the schema.
    #[error("{path}:{line}:{column}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending key or value (0 when unknown).
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        reason: String,
    },
    /// A value parsed but is not allowed.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
}

/// Log defaults of the node; topics override them with Kafka's topic-level config names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogDefaults {
    /// `log.segment.bytes`: roll a segment at this size.
    pub segment_bytes: u64,
    /// `log.roll.ms`: roll a segment at this age.
    pub segment_ms: u64,
    /// `log.index.interval.bytes`: bytes between sparse index entries.
    pub index_interval_bytes: u64,
    /// `log.flush.interval.messages`: fsync after this many records; absent means never
    /// (Kafka's default: durability comes from the page cache and, in a cluster, replication).
    pub flush_messages: Option<u64>,
    /// `log.flush.interval.ms`: fsync when this long since the last flush; absent means never.
    pub flush_ms: Option<u64>,
    /// `log.retention.ms`: delete segments older than this; -1 keeps them forever.
    pub retention_ms: i64,
    /// `log.retention.bytes`: delete old segments past this partition size; -1 is unlimited.
    pub retention_bytes: i64,
    /// `message.max.bytes`: the largest record batch a producer may send.
    pub message_max_bytes: u32,
    /// `log.message.timestamp.type`: `CreateTime` or `LogAppendTime`.
    pub message_timestamp_type: String,
}

impl Default for LogDefaults {
    fn default() -> Self {
        LogDefaults {
            segment_bytes: LOG_SEGMENT_BYTES_DEFAULT,
            segment_ms: LOG_SEGMENT_MS_DEFAULT,
            index_interval_bytes: LOG_INDEX_INTERVAL_BYTES_DEFAULT,
            flush_messages: None,
            flush_ms: None,
            retention_ms: 7 * 24 * 60 * 60 * 1000,
            retention_bytes: -1,
            message_max_bytes: MESSAGE_MAX_BYTES_DEFAULT,
            message_timestamp_type: "CreateTime".to_string(),
        }
    }
}

/// The configuration of one broker node, as read from YAML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// `node.id`: this node's id, unique in the cluster.
    pub node_id: i32,
    /// The Kafka listener, `HOST:PORT` (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The address clients are told to connect to; defaults to the listener's.
    #[serde(default)]
    pub advertised: Option<String>,
    /// Where partition logs and metadata live. Relative paths are relative to the config file.
    pub data_dir: PathBuf,
    /// `auto.create.topics.enable`.
    #[serde(default = "default_true")]
    pub auto_create_topics_enable: bool,
    /// `num.partitions`: partitions of an auto-created topic or of a CreateTopics request that
    /// leaves the count to the broker.
    #[serde(default = "default_num_partitions")]
    pub num_partitions: i32,
    /// `socket.request.max.bytes`: a frame above this closes the connection.
    #[serde(default = "default_socket_request_max_bytes")]
    pub socket_request_max_bytes: u32,
    /// `max.connections`: connections above this are closed on accept.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// `max.connections.per.ip`: connections from one address above this are closed on
    /// accept. Kafka's default is unlimited; ours leaves room for every client and replica of
    /// a site on one host while stopping one address from taking every slot.
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// `connections.max.idle.ms`: a connection on which no byte arrived for this long is
    /// closed (Kafka's default: ten minutes).
    #[serde(default = "default_connections_max_idle_ms")]
    pub connections_max_idle_ms: u64,
    /// `queued.max.request.bytes`: the most memory all connections of the node together may
    /// hold for requests larger than 64 KiB while they are read and handled; a connection
    /// whose next request does not fit waits (its bytes stay in the kernel's socket buffer)
    /// until others finish. Kafka's default is unlimited; ours is 512 MiB. Must be at least
    /// `socket_request_max_bytes`, or the largest frame could never be read.
    #[serde(default = "default_queued_max_request_bytes")]
    pub queued_max_request_bytes: u64,
    /// `producer.id.expiration.ms`: a partition forgets an idempotent producer whose last
    /// batch is this old (by the batch's max timestamp); default one day, as Kafka.
    #[serde(default = "default_producer_id_expiration_ms")]
    pub producer_id_expiration_ms: u64,
    /// `offsets.topic.num.partitions`: partitions of `__consumer_offsets`, fixed once created.
    #[serde(default = "default_offsets_topic_num_partitions")]
    pub offsets_topic_num_partitions: i32,
    /// `group.min.session.timeout.ms`.
    #[serde(default = "default_group_min_session_timeout_ms")]
    pub group_min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms` (also caps rebalance timeouts).
    #[serde(default = "default_group_max_session_timeout_ms")]
    pub group_max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`: how long a new group waits for more members.
    #[serde(default = "default_group_initial_rebalance_delay_ms")]
    pub group_initial_rebalance_delay_ms: i32,
    /// `group.max.size`: members per group.
    #[serde(default = "default_group_max_size")]
    pub group_max_size: i32,
    /// `offset.metadata.max.bytes`: longest metadata string of a commit.
    #[serde(default = "default_offset_metadata_max_bytes")]
    pub offset_metadata_max_bytes: i32,
    /// `offsets.commit.timeout.ms`: how long an offset commit waits for its replication
    /// before it is answered REQUEST_TIMED_OUT.
    #[serde(default = "default_offsets_commit_timeout_ms")]
    pub offsets_commit_timeout_ms: u64,
    /// `offsets.retention.minutes`: how long offsets of an empty group are kept.
    #[serde(default = "default_offsets_retention_minutes")]
    pub offsets_retention_minutes: i64,
    /// `log.retention.check.interval.ms`: how often segments are checked against
    /// `retention.ms` / `retention.bytes` and deleted.
    #[serde(default = "default_log_retention_check_interval_ms")]
    pub log_retention_check_interval_ms: u64,
    /// `controller.quorum.voters`: every voter of the metadata quorum as `id@host:port`,
    /// comma-separated (`1@127.0.0.1:19093,2@127.0.0.1:19094,3@127.0.0.1:19095`); this node
    /// must be one of them. Absent: a one-node cluster whose quorum is this node alone.
    #[serde(default)]
    pub controller_quorum_voters: Option<String>,
    /// The controller listener, `HOST:PORT`; defaults to this node's entry in
    /// `controller_quorum_voters`.
    #[serde(default)]
    pub controller_listen: Option<SocketAddr>,
    /// `broker.session.timeout.ms`: the active controller fences a broker whose last
    /// heartbeat is older than this.
    #[serde(default = "default_broker_session_timeout_ms")]
    pub broker_session_timeout_ms: u64,
    /// `broker.heartbeat.interval.ms`: how often a broker heartbeats to the controller.
    #[serde(default = "default_broker_heartbeat_interval_ms")]
    pub broker_heartbeat_interval_ms: u64,
    /// `default.replication.factor`: of auto-created topics and of CreateTopics requests that
    /// leave it to the broker.
    #[serde(default = "default_replication_factor")]
    pub default_replication_factor: i16,
    /// `offsets.topic.replication.factor`: of `__consumer_offsets`, capped by the brokers
    /// registered when it is created.
    #[serde(default = "default_offsets_topic_replication_factor")]
    pub offsets_topic_replication_factor: i16,
    /// `replica.lag.time.max.ms`: a follower not caught up for this long leaves the ISR.
    #[serde(default = "default_replica_lag_time_max_ms")]
    pub replica_lag_time_max_ms: u64,
    /// `replica.fetch.wait.max.ms`: how long a follower's fetch may wait for data.
    #[serde(default = "default_replica_fetch_wait_max_ms")]
    pub replica_fetch_wait_max_ms: i32,
    /// `replica.fetch.max.bytes`: per partition and follower fetch.
    #[serde(default = "default_replica_fetch_max_bytes")]
    pub replica_fetch_max_bytes: i32,
    /// `replica.fetch.response.max.bytes`: per follower fetch.
    #[serde(default = "default_replica_fetch_response_max_bytes")]
    pub replica_fetch_response_max_bytes: i32,
    /// Log defaults (topics inherit them; AlterConfigs on the broker resource can override
    /// them at runtime, see `broker_config.rs`).
    #[serde(default)]
    pub log: LogDefaults,
    /// The keys the file sets explicitly (`node_id`, `log.retention_ms`, ...): DescribeConfigs
    /// reports those as STATIC_BROKER_CONFIG and the rest as DEFAULT_CONFIG.
    #[serde(skip)]
    pub explicit_keys: BTreeSet<String>,
}

fn default_true() -> bool {
    true
}
fn default_num_partitions() -> i32 {
    1
}
fn default_socket_request_max_bytes() -> u32 {
    SOCKET_REQUEST_MAX_BYTES_DEFAULT
}
fn default_max_connections() -> usize {
    4096
}
fn default_max_connections_per_ip() -> usize {
    1024
}
fn default_connections_max_idle_ms() -> u64 {
    600_000
}
fn default_queued_max_request_bytes() -> u64 {
    512 * 1024 * 1024
}
fn default_offsets_topic_num_partitions() -> i32 {
    50
}
fn default_group_min_session_timeout_ms() -> i32 {
    6_000
}
fn default_group_max_session_timeout_ms() -> i32 {
    1_800_000
}
fn default_group_initial_rebalance_delay_ms() -> i32 {
    3_000
}
fn default_group_max_size() -> i32 {
    i32::MAX
}
fn default_offsets_commit_timeout_ms() -> u64 {
    5_000
}

fn default_offset_metadata_max_bytes() -> i32 {
    4096
}
fn default_offsets_retention_minutes() -> i64 {
    7 * 24 * 60
}
fn default_producer_id_expiration_ms() -> u64 {
    PRODUCER_ID_EXPIRATION_MS_DEFAULT
}
fn default_broker_session_timeout_ms() -> u64 {
    9_000
}
fn default_broker_heartbeat_interval_ms() -> u64 {
    2_000
}
fn default_replication_factor() -> i16 {
    1
}
fn default_offsets_topic_replication_factor() -> i16 {
    3
}
fn default_replica_lag_time_max_ms() -> u64 {
    30_000
}
fn default_replica_fetch_wait_max_ms() -> i32 {
    500
}
fn default_replica_fetch_max_bytes() -> i32 {
    1_048_576
}
fn default_replica_fetch_response_max_bytes() -> i32 {
    10_485_760
}
fn default_log_retention_check_interval_ms() -> u64 {
    LOG_RETENTION_CHECK_INTERVAL_MS_DEFAULT
}

/// Top-level keys of a YAML mapping, and `log.<key>` for the keys of its `log` mapping.
fn explicit_keys(text: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let Ok(serde_yaml::Value::Mapping(top)) = serde_yaml::from_str::<serde_yaml::Value>(text)
    else {
        return keys;
    };
    for (key, value) in &top {
        let Some(key) = key.as_str() else { continue };
        keys.insert(key.to_string());
        if let ("log", serde_yaml::Value::Mapping(log)) = (key, value) {
            keys.extend(
                log.keys()
                    .filter_map(|k| k.as_str())
                    .map(|k| format!("log.{k}")),
            );
        }
    }
    keys
}

impl NodeConfig {
    /// The quorum voters, parsed from `controller_quorum_voters` (empty when unset).
    pub fn quorum_voters(&self) -> Result<Vec<(i32, SocketAddr)>, String> {
        let Some(text) = &self.controller_quorum_voters else {
            return Ok(Vec::new());
        };
        let mut voters: Vec<(i32, SocketAddr)> = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (id, addr) = entry
                .split_once('@')
                .ok_or_else(|| format!("`{entry}` is not `id@host:port`"))?;
            let id: i32 = id
                .parse()
                .map_err(|_| format!("`{id}` in `{entry}` is not a node id"))?;
            let addr: SocketAddr = addr
                .parse()
                .map_err(|_| format!("`{addr}` in `{entry}` is not an IP:port address"))?;
            if voters.iter().any(|(v, _)| *v == id) {
                return Err(format!("node {id} is listed twice"));
            }
            voters.push((id, addr));
        }
        if voters.is_empty() {
            return Err("no voters listed".to_string());
        }
        Ok(voters)
    }

    /// Where the controller listener binds: `controller_listen`, else this node's voter entry.
    pub fn controller_listen_addr(&self) -> Option<SocketAddr> {
        self.controller_listen.or_else(|| {
            self.quorum_voters()
                .ok()?
                .into_iter()
                .find(|(id, _)| *id == self.node_id)
                .map(|(_, a)| a)
        })
    }

    /// Reads a node config file and checks what this module can check alone (the whole check
    /// is [`NodeConfig::load`], in `broker_config.rs`).
    pub(crate) fn load_unchecked(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = NodeConfig::parse_unchecked(&text, path)?;
        if config.data_dir.is_relative() {
            let base = path.parent().unwrap_or_else(|| Path::new("."));
            config.data_dir = base.join(&config.data_dir);
        }
        Ok(config)
    }

    /// Parses YAML text and checks what this module can check alone (the whole check is
    /// [`NodeConfig::parse`], in `broker_config.rs`); `path` is only used in error messages.
    pub(crate) fn parse_unchecked(text: &str, path: &Path) -> Result<NodeConfig, ConfigError> {
        strait_yaml::limits::check(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            line: e.line,
            column: e.column,
            reason: e.reason,
        })?;
        let mut config: NodeConfig = serde_yaml::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                column,
                reason: e.to_string(),
            }
        })?;
        config.explicit_keys = explicit_keys(text);
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        if self.node_id < 0 {
            return Err(invalid(format!(
                "node_id must be >= 0, got {}",
                self.node_id
            )));
        }
        if self.num_partitions < 1 {
            return Err(invalid(format!(
                "num_partitions must be >= 1, got {}",
                self.num_partitions
            )));
        }
        if self.socket_request_max_bytes < 64 {
            return Err(invalid(format!(
                "socket_request_max_bytes must be >= 64, got {}",
                self.socket_request_max_bytes
            )));
        }
        if self.queued_max_request_bytes < u64::from(self.socket_request_max_bytes) {
            return Err(invalid(format!(
                "queued_max_request_bytes ({}) must be >= socket_request_max_bytes ({}), or the \
                 largest request could never be read",
                self.queued_max_request_bytes, self.socket_request_max_bytes
            )));
        }
        if self.max_connections == 0 || self.max_connections_per_ip == 0 {
            return Err(invalid(format!(
                "max_connections ({}) and max_connections_per_ip ({}) must be >= 1",
                self.max_connections, self.max_connections_per_ip
            )));
        }
        if self.connections_max_idle_ms == 0 {
            return Err(invalid("connections_max_idle_ms must be >= 1".into()));
        }
        if self.group_min_session_timeout_ms < 0
            || self.group_max_session_timeout_ms < self.group_min_session_timeout_ms
        {
            return Err(invalid(format!(
                "group_min_session_timeout_ms ({}) must be >= 0 and <= group_max_session_timeout_ms ({})",
                self.group_min_session_timeout_ms, self.group_max_session_timeout_ms
            )));
        }
        for (name, value) in [
            (
                "group_initial_rebalance_delay_ms",
                self.group_initial_rebalance_delay_ms,
            ),
            ("group_max_size", self.group_max_size),
            ("offset_metadata_max_bytes", self.offset_metadata_max_bytes),
        ] {
            if value < 0 {
                return Err(invalid(format!("{name} must be >= 0, got {value}")));
            }
        }
        if self.offsets_retention_minutes < 1 {
            return Err(invalid(format!(
                "offsets_retention_minutes must be >= 1, got {}",
                self.offsets_retention_minutes
            )));
        }
        if self.producer_id_expiration_ms == 0 {
            return Err(invalid(
                "producer_id_expiration_ms must be >= 1 (Kafka's minimum)".to_string(),
            ));
        }
        if self.log_retention_check_interval_ms == 0 {
            return Err(invalid(
                "log_retention_check_interval_ms must be >= 1".to_string(),
            ));
        }
        let voters = self
            .quorum_voters()
            .map_err(|reason| invalid(format!("controller_quorum_voters: {reason}")))?;
        if !voters.is_empty() && !voters.iter().any(|(id, _)| *id == self.node_id) {
            return Err(invalid(format!(
                "controller_quorum_voters does not name this node (node_id {})",
                self.node_id
            )));
        }
        if self.broker_heartbeat_interval_ms == 0
            || self.broker_session_timeout_ms <= self.broker_heartbeat_interval_ms
        {
            return Err(invalid(format!(
                "broker_heartbeat_interval_ms ({}) must be >= 1 and below broker_session_timeout_ms ({})",
                self.broker_heartbeat_interval_ms, self.broker_session_timeout_ms
            )));
        }
        if self.replica_lag_time_max_ms == 0
            || self.replica_fetch_wait_max_ms < 0
            || self.replica_fetch_max_bytes < 1
            || self.replica_fetch_response_max_bytes < 1
        {
            return Err(invalid(
                "replica_lag_time_max_ms, replica_fetch_max_bytes and replica_fetch_response_max_bytes must be >= 1 and replica_fetch_wait_max_ms >= 0".to_string(),
            ));
        }
        if self.default_replication_factor < 1 || self.offsets_topic_replication_factor < 1 {
            return Err(invalid(format!(
                "default_replication_factor ({}) and offsets_topic_replication_factor ({}) must be >= 1",
                self.default_replication_factor, self.offsets_topic_replication_factor
            )));
        }
        if let Some(adv) = &self.advertised {
            parse_host_port(adv).map_err(|reason| invalid(format!("advertised: {reason}")))?;
        }
        Ok(())
    }

    /// The `(host, port)` clients should use, given the port actually bound.
    pub fn advertised_host_port(&self, bound: SocketAddr) -> (String, i32) {
        match self.advertised.as_deref().map(parse_host_port) {
            Some(Ok((host, port))) => (host, port),
            // Validated at load; a bad value cannot reach here, fall back to the bound address.
            _ => (bound.ip().to_string(), i32::from(bound.port())),
        }
    }
}

/// Splits `HOST:PORT`.
pub fn parse_host_port(s: &str) -> Result<(String, i32), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("`{s}` is not HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("`{s}`: port `{port}` is not a number in 0..=65535"))?;
    if host.is_empty() {
        return Err(format!("`{s}`: empty host"));
    }
    Ok((host.trim_matches(['[', ']']).to_string(), i32::from(port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_reported_with_line_and_column() {
        let text = "node_id: 1\nlisten: 127.0.0.1:9092\ndata_dir: d\nbogus: 3\n";
        let err = NodeConfig::parse(text, Path::new("x.yaml")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("x.yaml:4:1: unknown field `bogus`"),
            "{msg}"
        );
    }

    #[test]
    fn relative_data_dir_is_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.yaml");
        std::fs::write(
            &path,
            "node_id: 1\nlisten: 127.0.0.1:0\ndata_dir: data/n1\n",
        )
        .unwrap();
        let config = NodeConfig::load(&path).unwrap();
        assert_eq!(config.data_dir, dir.path().join("data/n1"));
        assert_eq!(
            config.socket_request_max_bytes,
            SOCKET_REQUEST_MAX_BYTES_DEFAULT
        );
    }

    #[test]
    fn explicit_keys_and_retention_check_interval() {
        let text = "node_id: 1\nlisten: 127.0.0.1:9092\ndata_dir: d\nlog_retention_check_interval_ms: 250\nlog:\n  retention_ms: 1000\n";
        let config = NodeConfig::parse(text, Path::new("x.yaml")).unwrap();
        assert_eq!(config.log_retention_check_interval_ms, 250);
        assert!(config.explicit_keys.contains("log.retention_ms"));
        assert!(config
            .explicit_keys
            .contains("log_retention_check_interval_ms"));
        assert!(!config.explicit_keys.contains("log.segment_bytes"));
        let text = "node_id: 1\nlisten: 127.0.0.1:9092\ndata_dir: d\n";
        let config = NodeConfig::parse(text, Path::new("x.yaml")).unwrap();
        assert_eq!(
            config.log_retention_check_interval_ms,
            LOG_RETENTION_CHECK_INTERVAL_MS_DEFAULT
        );
        let text =
            "node_id: 1\nlisten: 127.0.0.1:9092\ndata_dir: d\nlog_retention_check_interval_ms: 0\n";
        let err = NodeConfig::parse(text, Path::new("x.yaml")).unwrap_err();
        assert!(
            err.to_string().contains("log_retention_check_interval_ms"),
            "{err}"
        );
    }

    #[test]
    fn bad_log_default_is_rejected() {
        let text = "node_id: 1\nlisten: 127.0.0.1:9092\ndata_dir: d\nlog:\n  message_timestamp_type: Wallclock\n";
        let err = NodeConfig::parse(text, Path::new("x.yaml")).unwrap_err();
        assert!(err.to_string().contains("message.timestamp.type"), "{err}");
    }
}
