//! Broker-level configuration as Kafka's DescribeConfigs and (Incremental)AlterConfigs see it:
//! Kafka's names, four layers, and which configs may change at runtime.
//!
//! A broker config's value comes from the first layer that has it, as in Kafka's
//! `DynamicBrokerConfig`:
//!
//! 1. dynamic, for this broker (resource name = node id) — `DYNAMIC_BROKER_CONFIG`;
//! 2. dynamic, cluster-wide default (resource name `""`) — `DYNAMIC_DEFAULT_BROKER_CONFIG`;
//! 3. the node's YAML file, when it sets the key — `STATIC_BROKER_CONFIG`;
//! 4. the built-in default — `DEFAULT_CONFIG`.
//!
//! The two dynamic layers live in the replicated metadata log (`controller::image`). Topic
//! configs inherit from their broker synonym (`retention.ms` from `log.retention.ms`), so a
//! dynamic change of a log default reaches every topic that does not override it.

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::{ConfigError, NodeConfig};
use crate::metadata_store::DynamicBrokerConfigs;
use crate::topic_config::{split_list, PARTITIONS_PER_TOPIC_MAX, TOPIC_CONFIGS};
use crate::topic_config::{ConfigDef, ConfigValueError, Kind, TopicConfig, TopicDefaults};

impl NodeConfig {
    /// Reads and validates a node config file: everything `config.rs` checks, then what needs
    /// the broker's config tables (every log default accepted as AlterConfigs would accept it,
    /// `offsets_topic_num_partitions` within the topic limits). A relative `data_dir` is
    /// resolved against the file's directory.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let config = NodeConfig::load_unchecked(path)?;
        check_node_config(&config, path)?;
        Ok(config)
    }

    /// [`NodeConfig::load`] for YAML text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<NodeConfig, ConfigError> {
        let config = NodeConfig::parse_unchecked(text, path)?;
        check_node_config(&config, path)?;
        Ok(config)
    }
}

/// The checks of a node config that need the broker's and topics' config tables.
fn check_node_config(config: &NodeConfig, path: &Path) -> Result<(), ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&config.offsets_topic_num_partitions) {
        return Err(invalid(format!(
            "offsets_topic_num_partitions must be between 1 and {PARTITIONS_PER_TOPIC_MAX}, got {}",
            config.offsets_topic_num_partitions
        )));
    }
    // Broker-level validation gives the same answer as AlterConfigs would.
    BrokerConfigs::new(config, Default::default()).map_err(|e| invalid(format!("log: {e}")))?;
    Ok(())
}

/// Kafka's DescribeConfigs config sources.
pub mod source {
    /// A topic's own override.
    pub const DYNAMIC_TOPIC_CONFIG: i8 = 1;
    /// Set at runtime for this broker.
    pub const DYNAMIC_BROKER_CONFIG: i8 = 2;
    /// Set at runtime as the cluster-wide default.
    pub const DYNAMIC_DEFAULT_BROKER_CONFIG: i8 = 3;
    /// Set in the node's config file.
    pub const STATIC_BROKER_CONFIG: i8 = 4;
    /// Built-in default.
    pub const DEFAULT_CONFIG: i8 = 5;
}

const fn broker(
    name: &'static str,
    kind: Kind,
    default: Option<&'static str>,
    dynamic: bool,
    doc: &'static str,
) -> ConfigDef {
    ConfigDef {
        name,
        kind,
        default,
        synonym: None,
        dynamic,
        doc,
    }
}

/// Every broker config strait describes. The dynamic ones are the log defaults Kafka's
/// `DynamicLogConfig` lets an operator change at runtime; the others are read-only, and
/// altering them answers INVALID_REQUEST "Cannot update these configs dynamically".
pub const BROKER_CONFIGS: &[ConfigDef] = &[
    broker(
        "node.id",
        Kind::Int { min: 0 },
        None,
        false,
        "This node's id.",
    ),
    broker("listeners", Kind::Str, None, false, "The Kafka listener."),
    broker(
        "advertised.listeners",
        Kind::Str,
        None,
        false,
        "The address clients are told to connect to (null: the listener's).",
    ),
    broker("log.dirs", Kind::Str, None, false, "The data directory."),
    broker(
        "auto.create.topics.enable",
        Kind::Bool,
        Some("true"),
        false,
        "Create a topic when a client asks for metadata of one that does not exist.",
    ),
    broker(
        "num.partitions",
        Kind::Int { min: 1 },
        Some("1"),
        false,
        "Partitions of a topic created without a partition count.",
    ),
    broker(
        "socket.request.max.bytes",
        Kind::Int { min: 64 },
        Some("104857600"),
        false,
        "Largest request frame; a larger one closes the connection.",
    ),
    broker(
        "max.connections",
        Kind::Int { min: 1 },
        Some("4096"),
        false,
        "Connections above this are closed on accept.",
    ),
    broker(
        "max.connections.per.ip",
        Kind::Int { min: 1 },
        Some("1024"),
        false,
        "Connections from one address above this are closed on accept.",
    ),
    broker(
        "connections.max.idle.ms",
        Kind::Long { min: 1 },
        Some("600000"),
        false,
        "A connection on which nothing arrived for this long is closed.",
    ),
    broker(
        "queued.max.request.bytes",
        Kind::Long { min: 64 },
        Some("536870912"),
        false,
        "Memory all connections together may hold for requests above 64 KiB being read and handled.",
    ),
    broker(
        "log.retention.check.interval.ms",
        Kind::Long { min: 1 },
        Some("300000"),
        false,
        "How often segments are checked against retention.ms and retention.bytes.",
    ),
    broker(
        "log.cleanup.policy",
        Kind::List(Some(&["delete"])),
        Some("delete"),
        true,
        "Default cleanup.policy of topics.",
    ),
    broker(
        "compression.type",
        Kind::Choice(&["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"]),
        Some("producer"),
        true,
        "Default compression.type of topics.",
    ),
    broker(
        "log.flush.interval.messages",
        Kind::Long { min: 1 },
        Some("9223372036854775807"),
        true,
        "Default flush.messages of topics.",
    ),
    broker(
        "log.flush.interval.ms",
        Kind::Long { min: 0 },
        None,
        true,
        "Default flush.ms of topics (null: never flush on time).",
    ),
    broker(
        "log.index.interval.bytes",
        Kind::Int { min: 0 },
        Some("4096"),
        true,
        "Default index.interval.bytes of topics.",
    ),
    broker(
        "message.max.bytes",
        Kind::Int { min: 0 },
        Some("1048588"),
        true,
        "Default max.message.bytes of topics.",
    ),
    broker(
        "log.message.timestamp.difference.max.ms",
        Kind::Long { min: 0 },
        Some("9223372036854775807"),
        true,
        "Default message.timestamp.difference.max.ms of topics.",
    ),
    broker(
        "log.message.timestamp.type",
        Kind::Choice(&["CreateTime", "LogAppendTime"]),
        Some("CreateTime"),
        true,
        "Default message.timestamp.type of topics.",
    ),
    broker(
        "min.insync.replicas",
        Kind::Int { min: 1 },
        Some("1"),
        true,
        "Default min.insync.replicas of topics.",
    ),
    broker(
        "log.retention.bytes",
        Kind::Long { min: -1 },
        Some("-1"),
        true,
        "Default retention.bytes of topics.",
    ),
    broker(
        "log.retention.ms",
        Kind::Long { min: -1 },
        Some("604800000"),
        true,
        "Default retention.ms of topics.",
    ),
    broker(
        "log.segment.bytes",
        Kind::Int { min: 14 },
        Some("1073741824"),
        true,
        "Default segment.bytes of topics.",
    ),
    broker(
        "log.roll.ms",
        Kind::Long { min: 1 },
        Some("604800000"),
        true,
        "Default segment.ms of topics.",
    ),
    broker(
        "unclean.leader.election.enable",
        Kind::Bool,
        Some("false"),
        true,
        "Default unclean.leader.election.enable of topics.",
    ),
];

/// The broker config called `name`, if strait knows it.
pub fn broker_def(name: &str) -> Option<&'static ConfigDef> {
    BROKER_CONFIGS.iter().find(|d| d.name == name)
}

/// A broker config name and the node-config YAML key that sets it statically.
const YAML_KEYS: &[(&str, &str)] = &[
    ("node.id", "node_id"),
    ("listeners", "listen"),
    ("advertised.listeners", "advertised"),
    ("log.dirs", "data_dir"),
    ("auto.create.topics.enable", "auto_create_topics_enable"),
    ("num.partitions", "num_partitions"),
    ("socket.request.max.bytes", "socket_request_max_bytes"),
    ("max.connections", "max_connections"),
    ("max.connections.per.ip", "max_connections_per_ip"),
    ("connections.max.idle.ms", "connections_max_idle_ms"),
    ("queued.max.request.bytes", "queued_max_request_bytes"),
    (
        "log.retention.check.interval.ms",
        "log_retention_check_interval_ms",
    ),
    ("log.segment.bytes", "log.segment_bytes"),
    ("log.roll.ms", "log.segment_ms"),
    ("log.index.interval.bytes", "log.index_interval_bytes"),
    ("log.flush.interval.messages", "log.flush_messages"),
    ("log.flush.interval.ms", "log.flush_ms"),
    ("log.retention.ms", "log.retention_ms"),
    ("log.retention.bytes", "log.retention_bytes"),
    ("message.max.bytes", "log.message_max_bytes"),
    ("log.message.timestamp.type", "log.message_timestamp_type"),
];

/// The statically configured broker values: those the node's YAML sets (listener and data
/// directory always count, since the command line may set them too).
fn static_values(config: &NodeConfig) -> BTreeMap<&'static str, String> {
    let log = &config.log;
    let value = |name: &str| -> Option<String> {
        Some(match name {
            "node.id" => config.node_id.to_string(),
            "listeners" => format!("PLAINTEXT://{}", config.listen),
            "advertised.listeners" => format!("PLAINTEXT://{}", config.advertised.as_ref()?),
            "log.dirs" => config.data_dir.display().to_string(),
            "auto.create.topics.enable" => config.auto_create_topics_enable.to_string(),
            "num.partitions" => config.num_partitions.to_string(),
            "socket.request.max.bytes" => config.socket_request_max_bytes.to_string(),
            "max.connections" => config.max_connections.to_string(),
            "max.connections.per.ip" => config.max_connections_per_ip.to_string(),
            "connections.max.idle.ms" => config.connections_max_idle_ms.to_string(),
            "queued.max.request.bytes" => config.queued_max_request_bytes.to_string(),
            "log.retention.check.interval.ms" => config.log_retention_check_interval_ms.to_string(),
            "log.segment.bytes" => log.segment_bytes.to_string(),
            "log.roll.ms" => log.segment_ms.to_string(),
            "log.index.interval.bytes" => log.index_interval_bytes.to_string(),
            "log.flush.interval.messages" => log.flush_messages?.to_string(),
            "log.flush.interval.ms" => log.flush_ms?.to_string(),
            "log.retention.ms" => log.retention_ms.to_string(),
            "log.retention.bytes" => log.retention_bytes.to_string(),
            "message.max.bytes" => log.message_max_bytes.to_string(),
            "log.message.timestamp.type" => log.message_timestamp_type.clone(),
            _ => return None,
        })
    };
    YAML_KEYS
        .iter()
        .filter(|(name, key)| {
            matches!(*name, "node.id" | "listeners" | "log.dirs")
                || config.explicit_keys.contains(*key)
        })
        .filter_map(|(name, _)| value(name).map(|v| (*name, v)))
        .collect()
}

/// One link of a config's synonym chain, highest precedence first (Kafka's
/// `DescribeConfigsSynonym`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synonym {
    /// Config name at this layer.
    pub name: String,
    /// Its value there.
    pub value: Option<String>,
    /// Which layer.
    pub source: i8,
}

/// One described config, ready for a DescribeConfigs or CreateTopics response.
#[derive(Debug, Clone)]
pub struct DescribedConfig {
    /// Config definition (name, type, documentation).
    pub def: &'static ConfigDef,
    /// Effective value.
    pub value: Option<String>,
    /// Where the value comes from.
    pub source: i8,
    /// Whether AlterConfigs may change it.
    pub read_only: bool,
    /// The synonym chain, highest precedence first.
    pub synonyms: Vec<Synonym>,
}

/// Why a broker config change is refused, with Kafka's error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerConfigError {
    /// A name strait does not know (INVALID_CONFIG).
    #[error(transparent)]
    InvalidConfig(#[from] ConfigValueError),
    /// A read-only config or a bad value (INVALID_REQUEST, as Kafka's broker-side validation).
    #[error("{0}")]
    InvalidRequest(String),
}

/// The broker's config layers: static ones from the node config, dynamic ones from the
/// metadata image.
#[derive(Debug, Clone)]
pub struct BrokerConfigs {
    static_values: BTreeMap<&'static str, String>,
    dynamic: DynamicBrokerConfigs,
}

impl BrokerConfigs {
    /// Builds the layers and checks every value in them.
    pub fn new(
        config: &NodeConfig,
        dynamic: DynamicBrokerConfigs,
    ) -> Result<BrokerConfigs, ConfigValueError> {
        let configs = BrokerConfigs {
            static_values: static_values(config),
            dynamic,
        };
        for (name, value) in &configs.static_values {
            if let Some(def) = broker_def(name) {
                def.check(value)?;
            }
        }
        for layer in [
            &configs.dynamic.per_broker,
            &configs.dynamic.cluster_default,
        ] {
            check_dynamic_layer(layer).map_err(|e| ConfigValueError {
                message: e.to_string(),
            })?;
        }
        Ok(configs)
    }

    /// The persisted dynamic layers.
    pub fn dynamic(&self) -> &DynamicBrokerConfigs {
        &self.dynamic
    }

    /// The synonym chain of broker config `name`, highest precedence first; with
    /// `per_broker` false the per-broker layer is left out (the cluster-default resource).
    pub fn synonyms(&self, name: &str, per_broker: bool) -> Vec<Synonym> {
        let mut chain = Vec::new();
        let mut push = |value: Option<String>, source: i8| {
            if let Some(value) = value {
                chain.push(Synonym {
                    name: name.to_string(),
                    value: Some(value),
                    source,
                });
            }
        };
        if per_broker {
            push(
                self.dynamic.per_broker.get(name).cloned(),
                source::DYNAMIC_BROKER_CONFIG,
            );
        }
        push(
            self.dynamic.cluster_default.get(name).cloned(),
            source::DYNAMIC_DEFAULT_BROKER_CONFIG,
        );
        push(
            self.static_values.get(name).cloned(),
            source::STATIC_BROKER_CONFIG,
        );
        push(
            broker_def(name).and_then(|d| d.default).map(str::to_string),
            source::DEFAULT_CONFIG,
        );
        chain
    }

    /// The effective value of broker config `name` on this node.
    pub fn value(&self, name: &str) -> Option<String> {
        self.synonyms(name, true)
            .into_iter()
            .next()
            .and_then(|s| s.value)
    }

    /// What topics inherit: each topic config's broker synonym's effective value, or the
    /// topic config's own default when the synonym has none.
    pub fn topic_defaults(&self) -> TopicDefaults {
        TOPIC_CONFIGS
            .iter()
            .map(|def| {
                let value = def
                    .synonym
                    .and_then(|s| self.value(s))
                    .or_else(|| def.default.map(str::to_string))
                    .unwrap_or_default();
                (def.name, value)
            })
            .collect()
    }

    /// A copy with one dynamic layer replaced by `layer`, after Kafka's checks: read-only
    /// names first, then unknown names, then values.
    pub fn with_layer(
        &self,
        per_broker: bool,
        layer: BTreeMap<String, String>,
    ) -> Result<BrokerConfigs, BrokerConfigError> {
        check_dynamic_layer(&layer)?;
        let mut next = self.clone();
        if per_broker {
            next.dynamic.per_broker = layer;
        } else {
            next.dynamic.cluster_default = layer;
        }
        Ok(next)
    }

    /// Every broker config of this node (`per_broker`), or only those set in the
    /// cluster-default layer (resource name `""`), as Kafka's ConfigHelper describes them.
    pub fn describe_broker(&self, per_broker: bool) -> Vec<DescribedConfig> {
        BROKER_CONFIGS
            .iter()
            .filter(|def| per_broker || self.dynamic.cluster_default.contains_key(def.name))
            .map(|def| {
                let synonyms = self.synonyms(def.name, per_broker);
                let (value, source) = match synonyms.first() {
                    Some(s) => (s.value.clone(), s.source),
                    None => (None, source::DEFAULT_CONFIG),
                };
                DescribedConfig {
                    def,
                    value,
                    source,
                    read_only: !def.dynamic,
                    synonyms,
                }
            })
            .collect()
    }

    /// Every topic config of a topic: its override (DYNAMIC_TOPIC_CONFIG) or the chain of its
    /// broker synonym, falling back to the built-in default.
    pub fn describe_topic(&self, topic: &TopicConfig) -> Vec<DescribedConfig> {
        TOPIC_CONFIGS
            .iter()
            .map(|def| {
                let mut synonyms = Vec::new();
                if let Some(v) = topic.overrides().get(def.name) {
                    synonyms.push(Synonym {
                        name: def.name.to_string(),
                        value: Some(v.clone()),
                        source: source::DYNAMIC_TOPIC_CONFIG,
                    });
                }
                if let Some(s) = def.synonym {
                    synonyms.extend(self.synonyms(s, true));
                }
                let source = synonyms
                    .first()
                    .map_or(source::DEFAULT_CONFIG, |s| s.source);
                DescribedConfig {
                    def,
                    value: Some(topic.get(def.name).to_string()),
                    source,
                    read_only: false,
                    synonyms,
                }
            })
            .collect()
    }
}

fn check_dynamic_layer(layer: &BTreeMap<String, String>) -> Result<(), BrokerConfigError> {
    let read_only: Vec<&str> = layer
        .keys()
        .filter(|n| broker_def(n).is_some_and(|d| !d.dynamic))
        .map(String::as_str)
        .collect();
    if !read_only.is_empty() {
        return Err(BrokerConfigError::InvalidRequest(format!(
            "Cannot update these configs dynamically: Set({})",
            read_only.join(", ")
        )));
    }
    for (name, value) in layer {
        let def = broker_def(name).ok_or_else(|| ConfigValueError {
            message: format!("Unknown broker config name: {name}"),
        })?;
        def.check(value)
            .map_err(|e| BrokerConfigError::InvalidRequest(e.message))?;
    }
    Ok(())
}

/// Applies IncrementalAlterConfigs operations to a set of overrides (topic overrides or one
/// dynamic broker layer), as Kafka's controller does: SET replaces, DELETE removes, APPEND adds
/// list elements not yet present, SUBTRACT removes list elements. `current` of a list config
/// without an override starts from the config's built-in default.
pub fn apply_incremental(
    overrides: &BTreeMap<String, String>,
    ops: &[(String, IncrementalOp, Option<String>)],
    def_of: impl Fn(&str) -> Option<&'static ConfigDef>,
) -> Result<BTreeMap<String, String>, (i16, String)> {
    use kafka_protocol::error::ResponseError as E;
    let mut next = overrides.clone();
    for (name, op, value) in ops {
        match op {
            IncrementalOp::Set => {
                next.insert(name.clone(), value.clone().unwrap_or_default());
            }
            IncrementalOp::Delete => {
                next.remove(name);
            }
            IncrementalOp::Append | IncrementalOp::Subtract => {
                let def = def_of(name).ok_or_else(|| {
                    (
                        E::InvalidConfig.code(),
                        format!("Unknown config name: {name}"),
                    )
                })?;
                if !def.is_list() {
                    return Err((
                        E::InvalidConfig.code(),
                        format!("Can't {op} to key {name} because its type is not LIST."),
                    ));
                }
                let current = next
                    .get(name)
                    .map(String::as_str)
                    .or(def.default)
                    .unwrap_or_default();
                let mut items = split_list(current);
                let operand = split_list(value.as_deref().unwrap_or_default());
                if *op == IncrementalOp::Append {
                    for item in operand {
                        if !items.contains(&item) {
                            items.push(item);
                        }
                    }
                } else {
                    items.retain(|i| !operand.contains(i));
                }
                next.insert(name.clone(), items.join(","));
            }
        }
    }
    Ok(next)
}

/// An IncrementalAlterConfigs operation (Kafka's `AlterConfigOp.OpType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncrementalOp {
    /// 0: set the value.
    Set,
    /// 1: remove the override.
    Delete,
    /// 2: add list elements.
    Append,
    /// 3: remove list elements.
    Subtract,
}

impl IncrementalOp {
    /// Decodes Kafka's operation byte.
    pub fn from_code(code: i8) -> Option<IncrementalOp> {
        match code {
            0 => Some(IncrementalOp::Set),
            1 => Some(IncrementalOp::Delete),
            2 => Some(IncrementalOp::Append),
            3 => Some(IncrementalOp::Subtract),
            _ => None,
        }
    }
}

impl std::fmt::Display for IncrementalOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IncrementalOp::Set => "SET",
            IncrementalOp::Delete => "DELETE",
            IncrementalOp::Append => "APPEND",
            IncrementalOp::Subtract => "SUBTRACT",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic_config::topic_def;
    use std::path::Path;

    fn node_config(yaml_extra: &str) -> NodeConfig {
        let yaml = format!("node_id: 3\nlisten: 127.0.0.1:9092\ndata_dir: /tmp/x\n{yaml_extra}");
        NodeConfig::parse(&yaml, Path::new("t.yaml")).unwrap()
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_builtin_default_is_valid() {
        for def in BROKER_CONFIGS {
            if let Some(d) = def.default {
                def.check(d).unwrap_or_else(|e| panic!("{}: {e}", def.name));
            }
        }
        for def in TOPIC_CONFIGS {
            if let Some(s) = def.synonym {
                let b = broker_def(s).unwrap_or_else(|| panic!("{}: no synonym {s}", def.name));
                assert!(b.dynamic, "{s} must be dynamic");
                assert_eq!(b.config_type(), def.config_type(), "{s}");
            }
        }
    }

    #[test]
    fn layers_stack_in_kafkas_order() {
        let config = node_config("log:\n  retention_ms: 5000\n");
        let mut b = BrokerConfigs::new(&config, DynamicBrokerConfigs::default()).unwrap();
        let sources = |b: &BrokerConfigs, n: &str| -> Vec<(String, i8)> {
            b.synonyms(n, true)
                .into_iter()
                .map(|s| (s.value.unwrap(), s.source))
                .collect()
        };
        assert_eq!(
            sources(&b, "log.retention.ms"),
            vec![
                ("5000".into(), source::STATIC_BROKER_CONFIG),
                ("604800000".into(), source::DEFAULT_CONFIG)
            ]
        );
        // Not in the file: only the default, even though LogDefaults carries a value.
        assert_eq!(
            sources(&b, "log.segment.bytes"),
            vec![("1073741824".into(), source::DEFAULT_CONFIG)]
        );
        b = b
            .with_layer(false, map(&[("log.retention.ms", "7000")]))
            .unwrap()
            .with_layer(true, map(&[("log.retention.ms", "9000")]))
            .unwrap();
        assert_eq!(
            sources(&b, "log.retention.ms")
                .into_iter()
                .map(|(_, s)| s)
                .collect::<Vec<_>>(),
            vec![
                source::DYNAMIC_BROKER_CONFIG,
                source::DYNAMIC_DEFAULT_BROKER_CONFIG,
                source::STATIC_BROKER_CONFIG,
                source::DEFAULT_CONFIG
            ]
        );
        assert_eq!(b.value("log.retention.ms").as_deref(), Some("9000"));
        assert_eq!(b.topic_defaults()["retention.ms"], "9000");
        // The cluster-default resource lists only what is set there, without the per-broker
        // layer.
        let d = b.describe_broker(false);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].value.as_deref(), Some("7000"));
        assert_eq!(d[0].source, source::DYNAMIC_DEFAULT_BROKER_CONFIG);
    }

    #[test]
    fn topic_description_shows_override_then_broker_chain() {
        let config = node_config("log:\n  retention_ms: 5000\n");
        let b = BrokerConfigs::new(&config, DynamicBrokerConfigs::default()).unwrap();
        let t = TopicConfig::new(&b.topic_defaults(), map(&[("retention.ms", "100")])).unwrap();
        let d = b.describe_topic(&t);
        let get = |n: &str| d.iter().find(|c| c.def.name == n).unwrap().clone();
        let r = get("retention.ms");
        assert_eq!(r.value.as_deref(), Some("100"));
        assert_eq!(r.source, source::DYNAMIC_TOPIC_CONFIG);
        assert_eq!(
            r.synonyms
                .iter()
                .map(|s| (s.name.as_str(), s.source))
                .collect::<Vec<_>>(),
            vec![
                ("retention.ms", source::DYNAMIC_TOPIC_CONFIG),
                ("log.retention.ms", source::STATIC_BROKER_CONFIG),
                ("log.retention.ms", source::DEFAULT_CONFIG)
            ]
        );
        let s = get("segment.ms");
        assert_eq!(s.source, source::DEFAULT_CONFIG);
        assert_eq!(s.synonyms[0].name, "log.roll.ms");
        // flush.ms: the broker synonym's default is null, so no chain at all.
        let f = get("flush.ms");
        assert!(f.synonyms.is_empty());
        assert_eq!(f.value.as_deref(), Some("9223372036854775807"));
        assert_eq!(f.source, source::DEFAULT_CONFIG);
        assert!(d.iter().all(|c| !c.read_only));
        assert_eq!(d.len(), TOPIC_CONFIGS.len());
    }

    #[test]
    fn broker_changes_are_checked_like_kafka() {
        let b = BrokerConfigs::new(&node_config(""), DynamicBrokerConfigs::default()).unwrap();
        assert_eq!(
            b.with_layer(true, map(&[("log.dirs", "/x"), ("node.id", "4")]))
                .unwrap_err(),
            BrokerConfigError::InvalidRequest(
                "Cannot update these configs dynamically: Set(log.dirs, node.id)".into()
            )
        );
        assert!(matches!(
            b.with_layer(true, map(&[("log.retention.mss", "1")])),
            Err(BrokerConfigError::InvalidConfig(_))
        ));
        let e = b
            .with_layer(false, map(&[("log.retention.ms", "soon")]))
            .unwrap_err();
        assert!(
            matches!(&e, BrokerConfigError::InvalidRequest(m) if m.contains("log.retention.ms")),
            "{e}"
        );
        let desc = b.describe_broker(true);
        let ro = |n: &str| desc.iter().find(|c| c.def.name == n).unwrap().read_only;
        assert!(ro("node.id") && ro("log.dirs"));
        assert!(!ro("log.retention.ms") && !ro("log.roll.ms"));
        let node_id = desc.iter().find(|c| c.def.name == "node.id").unwrap();
        assert_eq!(
            (node_id.value.as_deref(), node_id.source),
            (Some("3"), source::STATIC_BROKER_CONFIG)
        );
    }

    #[test]
    fn incremental_operations_follow_kafka() {
        let current = map(&[
            ("retention.ms", "1000"),
            ("leader.replication.throttled.replicas", "0:1"),
        ]);
        let op =
            |n: &str, o: IncrementalOp, v: Option<&str>| (n.to_string(), o, v.map(str::to_string));
        let next = apply_incremental(
            &current,
            &[
                op("segment.bytes", IncrementalOp::Set, Some("4096")),
                op("retention.ms", IncrementalOp::Delete, None),
                op(
                    "leader.replication.throttled.replicas",
                    IncrementalOp::Append,
                    Some("1:1,0:1"),
                ),
                op(
                    "follower.replication.throttled.replicas",
                    IncrementalOp::Append,
                    Some("2:1"),
                ),
            ],
            topic_def,
        )
        .unwrap();
        assert_eq!(
            next,
            map(&[
                ("segment.bytes", "4096"),
                ("leader.replication.throttled.replicas", "0:1,1:1"),
                ("follower.replication.throttled.replicas", "2:1"),
            ])
        );
        let next = apply_incremental(
            &next,
            &[op(
                "leader.replication.throttled.replicas",
                IncrementalOp::Subtract,
                Some("0:1"),
            )],
            topic_def,
        )
        .unwrap();
        assert_eq!(next["leader.replication.throttled.replicas"], "1:1");
        let (code, message) = apply_incremental(
            &current,
            &[op("retention.ms", IncrementalOp::Append, Some("5"))],
            topic_def,
        )
        .unwrap_err();
        assert_eq!(code, 40);
        assert_eq!(
            message,
            "Can't APPEND to key retention.ms because its type is not LIST."
        );
        // cleanup.policy is a list: APPEND of what is already there is a no-op.
        let next = apply_incremental(
            &BTreeMap::new(),
            &[op("cleanup.policy", IncrementalOp::Append, Some("delete"))],
            topic_def,
        )
        .unwrap();
        assert_eq!(next["cleanup.policy"], "delete");
    }
}
