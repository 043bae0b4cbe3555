//! Topic-level configuration with Kafka's names (`retention.ms`, `segment.bytes`, ...), and the
//! value kinds and validation shared with broker-level configs (`broker_config.rs`).
//!
//! A topic stores only its overrides; every other value is inherited from the broker config it
//! is a synonym of (`retention.ms` from `log.retention.ms`), as in Kafka. Validation is table
//! driven: an unknown name or a value of the wrong type or range is rejected with a message
//! naming it, and nothing changes (Kafka answers INVALID_CONFIG).

use std::collections::BTreeMap;

use crate::log::{LogConfig, Retention};

/// The most partitions one topic may have (CreateTopics, CreatePartitions, and the offsets
/// topic's `offsets_topic_num_partitions`).
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;

/// Kafka's `DescribeConfigsResponse` config types.
pub mod config_type {
    /// `BOOLEAN`.
    pub const BOOLEAN: i8 = 1;
    /// `STRING`.
    pub const STRING: i8 = 2;
    /// `INT`.
    pub const INT: i8 = 3;
    /// `LONG`.
    pub const LONG: i8 = 5;
    /// `LIST`.
    pub const LIST: i8 = 7;
}

/// What kind of value a config takes, with its bounds.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A signed 64-bit integer with a minimum.
    Long {
        /// Smallest allowed value.
        min: i64,
    },
    /// A signed 32-bit integer with a minimum.
    Int {
        /// Smallest allowed value.
        min: i32,
    },
    /// `true` or `false`.
    Bool,
    /// One of a fixed set of strings.
    Choice(&'static [&'static str]),
    /// Any string (read-only broker configs such as `log.dirs`).
    Str,
    /// A comma-separated list; `Some(allowed)` restricts the elements and requires at least
    /// one, `None` takes anything (throttled-replica lists).
    List(Option<&'static [&'static str]>),
}

/// One config the broker knows: topic-level or broker-level.
#[derive(Debug, Clone, Copy)]
pub struct ConfigDef {
    /// Kafka's name.
    pub name: &'static str,
    /// Value kind and bounds.
    pub kind: Kind,
    /// strait's built-in default (Kafka's, unless ARCHITECTURE.md says otherwise); None is a
    /// null default.
    pub default: Option<&'static str>,
    /// For a topic config, the broker config it inherits from (its synonym).
    pub synonym: Option<&'static str>,
    /// For a broker config, whether it can be altered at runtime (topic configs always can).
    pub dynamic: bool,
    /// One sentence for DescribeConfigs' `documentation`.
    pub doc: &'static str,
}

impl ConfigDef {
    const fn topic(
        name: &'static str,
        kind: Kind,
        default: &'static str,
        synonym: Option<&'static str>,
        doc: &'static str,
    ) -> ConfigDef {
        ConfigDef {
            name,
            kind,
            default: Some(default),
            synonym,
            dynamic: true,
            doc,
        }
    }

    /// Kafka's config type code for DescribeConfigs (v3+).
    pub fn config_type(&self) -> i8 {
        match self.kind {
            Kind::Long { .. } => config_type::LONG,
            Kind::Int { .. } => config_type::INT,
            Kind::Bool => config_type::BOOLEAN,
            Kind::Choice(_) | Kind::Str => config_type::STRING,
            Kind::List(_) => config_type::LIST,
        }
    }

    /// Whether IncrementalAlterConfigs may APPEND to or SUBTRACT from it.
    pub fn is_list(&self) -> bool {
        matches!(self.kind, Kind::List(_))
    }

    /// Checks one value against the kind and bounds.
    pub fn check(&self, value: &str) -> Result<(), ConfigValueError> {
        let bad = |why: String| ConfigValueError {
            message: format!("invalid value `{value}` for config `{}`: {why}", self.name),
        };
        match self.kind {
            Kind::Long { min } => match value.trim().parse::<i64>() {
                Ok(v) if v >= min => Ok(()),
                Ok(_) => Err(bad(format!("must be >= {min}"))),
                Err(_) => Err(bad("not a 64-bit integer".into())),
            },
            Kind::Int { min } => match value.trim().parse::<i32>() {
                Ok(v) if v >= min => Ok(()),
                Ok(_) => Err(bad(format!("must be >= {min}"))),
                Err(_) => Err(bad("not a 32-bit integer".into())),
            },
            Kind::Bool => match value.trim().to_ascii_lowercase().as_str() {
                "true" | "false" => Ok(()),
                _ => Err(bad("must be true or false".into())),
            },
            Kind::Choice(choices) => {
                if choices.contains(&value.trim()) {
                    Ok(())
                } else {
                    Err(bad(format!("must be one of {}", choices.join(", "))))
                }
            }
            Kind::Str | Kind::List(None) => Ok(()),
            Kind::List(Some(allowed)) => {
                let items = split_list(value);
                if items.iter().any(|i| i == "compact") && self.name.contains("cleanup.policy") {
                    return Err(bad(
                        "log compaction is not supported by strait yet; use `delete`".into(),
                    ));
                }
                if items.is_empty() {
                    return Err(bad(format!(
                        "must list at least one of {}",
                        allowed.join(", ")
                    )));
                }
                match items.iter().find(|i| !allowed.contains(&i.as_str())) {
                    Some(i) => Err(bad(format!("`{i}` is not one of {}", allowed.join(", ")))),
                    None => Ok(()),
                }
            }
        }
    }
}

/// The elements of a comma-separated list value, trimmed, empty ones dropped.
pub fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

const LONG_MAX: &str = "9223372036854775807";

/// Every topic config strait accepts. Kafka accepts more; each one added here must be enforced
/// or documented as stored-only in ARCHITECTURE.md.
pub const TOPIC_CONFIGS: &[ConfigDef] = &[
    ConfigDef::topic(
        "cleanup.policy",
        // `compact` is refused until log compaction exists; see ARCHITECTURE.md.
        Kind::List(Some(&["delete"])),
        "delete",
        Some("log.cleanup.policy"),
        "What happens to old segments: `delete` removes them by retention.ms and retention.bytes (compaction is not supported).",
    ),
    ConfigDef::topic(
        "compression.type",
        Kind::Choice(&["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"]),
        "producer",
        Some("compression.type"),
        "Codec of stored batches; strait stores batches as the producer sent them whatever this says.",
    ),
    ConfigDef::topic(
        "flush.messages",
        Kind::Long { min: 1 },
        LONG_MAX,
        Some("log.flush.interval.messages"),
        "Fsync the partition after this many records have been appended since the last fsync.",
    ),
    ConfigDef::topic(
        "flush.ms",
        Kind::Long { min: 0 },
        LONG_MAX,
        Some("log.flush.interval.ms"),
        "Fsync the partition when this many milliseconds have passed since the last fsync.",
    ),
    ConfigDef::topic(
        "follower.replication.throttled.replicas",
        Kind::List(None),
        "",
        None,
        "Replicas whose follower replication is throttled (stored; no replication yet).",
    ),
    ConfigDef::topic(
        "index.interval.bytes",
        Kind::Int { min: 0 },
        "4096",
        Some("log.index.interval.bytes"),
        "Bytes of batches between two entries of the sparse offset index.",
    ),
    ConfigDef::topic(
        "leader.replication.throttled.replicas",
        Kind::List(None),
        "",
        None,
        "Replicas whose leader-side replication is throttled (stored; no replication yet).",
    ),
    ConfigDef::topic(
        "max.message.bytes",
        Kind::Int { min: 0 },
        "1048588",
        Some("message.max.bytes"),
        "Largest record batch a producer may append to this topic.",
    ),
    ConfigDef::topic(
        "message.timestamp.difference.max.ms",
        Kind::Long { min: 0 },
        LONG_MAX,
        Some("log.message.timestamp.difference.max.ms"),
        "Largest allowed difference between a CreateTime timestamp and the broker's clock (stored, not enforced).",
    ),
    ConfigDef::topic(
        "message.timestamp.type",
        Kind::Choice(&["CreateTime", "LogAppendTime"]),
        "CreateTime",
        Some("log.message.timestamp.type"),
        "Whether record timestamps are the producer's (CreateTime) or the broker's append time (LogAppendTime).",
    ),
    ConfigDef::topic(
        "min.insync.replicas",
        Kind::Int { min: 1 },
        "1",
        Some("min.insync.replicas"),
        "Replicas that must acknowledge an acks=all write (stored; a single node always has one).",
    ),
    ConfigDef::topic(
        "retention.bytes",
        Kind::Long { min: -1 },
        "-1",
        Some("log.retention.bytes"),
        "Delete the oldest segments while a partition is larger than this; -1 is unlimited.",
    ),
    ConfigDef::topic(
        "retention.ms",
        Kind::Long { min: -1 },
        "604800000",
        Some("log.retention.ms"),
        "Delete a segment once its newest record is older than this many milliseconds; -1 keeps data forever.",
    ),
    ConfigDef::topic(
        "segment.bytes",
        // Kafka's old minimum of 14 bytes (a batch header cannot fit below that); small values
        // make segment tests cheap.
        Kind::Int { min: 14 },
        "1073741824",
        Some("log.segment.bytes"),
        "Roll to a new segment when the active one would grow beyond this size.",
    ),
    ConfigDef::topic(
        "segment.ms",
        Kind::Long { min: 1 },
        "604800000",
        Some("log.roll.ms"),
        "Roll to a new segment when the active one is older than this many milliseconds.",
    ),
    ConfigDef::topic(
        "unclean.leader.election.enable",
        Kind::Bool,
        "false",
        Some("unclean.leader.election.enable"),
        "Whether an out-of-sync replica may become leader (stored; no replication yet).",
    ),
];

/// A rejected config: which name, which value, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConfigValueError {
    /// Human-readable reason naming the config.
    pub message: String,
}

/// The topic config called `name`, if strait knows it.
pub fn topic_def(name: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Checks names and values of topic config overrides (Kafka's `LogConfig.validate`).
pub fn validate_overrides(overrides: &BTreeMap<String, String>) -> Result<(), ConfigValueError> {
    for (name, value) in overrides {
        let def = topic_def(name).ok_or_else(|| ConfigValueError {
            message: format!("Unknown topic config name: {name}"),
        })?;
        def.check(value)?;
    }
    Ok(())
}

/// The values a topic inherits for every topic config it does not override, keyed by topic
/// config name (built by `BrokerConfigs::topic_defaults`).
pub type TopicDefaults = BTreeMap<&'static str, String>;

/// The effective configuration of one topic: inherited values plus the topic's overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    overrides: BTreeMap<String, String>,
    defaults: TopicDefaults,
}

impl TopicConfig {
    /// Validates `overrides` against the known configs.
    pub fn new(
        defaults: &TopicDefaults,
        overrides: BTreeMap<String, String>,
    ) -> Result<TopicConfig, ConfigValueError> {
        validate_overrides(&overrides)?;
        Ok(TopicConfig {
            overrides,
            defaults: defaults.clone(),
        })
    }

    /// The topic's own overrides (what is persisted).
    pub fn overrides(&self) -> &BTreeMap<String, String> {
        &self.overrides
    }

    /// The effective value of a topic config.
    pub fn get(&self, name: &str) -> &str {
        self.overrides
            .get(name)
            .or_else(|| self.defaults.get(name))
            .map(String::as_str)
            .or_else(|| topic_def(name).and_then(|d| d.default))
            .unwrap_or_default()
    }

    fn get_i64(&self, name: &str) -> i64 {
        // Every value was validated as an integer when it was set.
        self.get(name).trim().parse().unwrap_or(i64::MAX)
    }

    /// `max.message.bytes`.
    pub fn max_message_bytes(&self) -> usize {
        usize::try_from(self.get_i64("max.message.bytes")).unwrap_or(usize::MAX)
    }

    /// `message.timestamp.type` is `LogAppendTime`.
    pub fn log_append_time(&self) -> bool {
        self.get("message.timestamp.type").trim() == "LogAppendTime"
    }

    /// `retention.ms` and `retention.bytes`.
    pub fn retention(&self) -> Retention {
        Retention {
            retention_ms: self.get_i64("retention.ms"),
            retention_bytes: self.get_i64("retention.bytes"),
        }
    }

    /// The log settings these configs imply.
    pub fn log_config(&self) -> LogConfig {
        let as_u64 = |v: i64| u64::try_from(v).unwrap_or(u64::MAX);
        LogConfig {
            segment_bytes: as_u64(self.get_i64("segment.bytes")),
            segment_ms: as_u64(self.get_i64("segment.ms")),
            index_interval_bytes: as_u64(self.get_i64("index.interval.bytes")),
            flush_messages: match self.get_i64("flush.messages") {
                i64::MAX => u64::MAX,
                v => as_u64(v),
            },
            flush_ms: match self.get_i64("flush.ms") {
                i64::MAX => u64::MAX,
                v => as_u64(v),
            },
            max_batch_bytes: self.max_message_bytes(),
            ..LogConfig::default()
        }
    }
}

/// Kafka's longest legal topic name.
pub const TOPIC_NAME_LENGTH_MAX: usize = 249;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn overrides(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn builtin_defaults() -> TopicDefaults {
        TOPIC_CONFIGS
            .iter()
            .map(|d| (d.name, d.default.unwrap_or_default().to_string()))
            .collect()
    }

    #[test]
    fn every_builtin_default_is_valid() {
        for def in TOPIC_CONFIGS {
            def.check(def.default.unwrap_or_default())
                .unwrap_or_else(|e| panic!("{}: {e}", def.name));
        }
    }

    #[test]
    fn unknown_and_invalid_configs_are_named() {
        let d = builtin_defaults();
        let e = TopicConfig::new(&d, overrides(&[("retention.mss", "1")])).unwrap_err();
        assert_eq!(e.message, "Unknown topic config name: retention.mss");
        let e = TopicConfig::new(&d, overrides(&[("segment.bytes", "ten")])).unwrap_err();
        assert!(e.message.contains("segment.bytes"), "{}", e.message);
        let e = TopicConfig::new(&d, overrides(&[("segment.bytes", "13")])).unwrap_err();
        assert!(e.message.contains(">= 14"), "{}", e.message);
        let e = TopicConfig::new(&d, overrides(&[("retention.ms", "-2")])).unwrap_err();
        assert!(e.message.contains("retention.ms"), "{}", e.message);
        let e = TopicConfig::new(&d, overrides(&[("cleanup.policy", "compact")])).unwrap_err();
        assert!(
            e.message.contains("compaction is not supported"),
            "{}",
            e.message
        );
        let e =
            TopicConfig::new(&d, overrides(&[("cleanup.policy", "delete,compact")])).unwrap_err();
        assert!(e.message.contains("compaction"), "{}", e.message);
        let e = TopicConfig::new(&d, overrides(&[("cleanup.policy", "")])).unwrap_err();
        assert!(e.message.contains("at least one"), "{}", e.message);
        let e = TopicConfig::new(&d, overrides(&[("compression.type", "brotli")])).unwrap_err();
        assert!(e.message.contains("compression.type"), "{}", e.message);
        let e = TopicConfig::new(&d, overrides(&[("unclean.leader.election.enable", "yes")]))
            .unwrap_err();
        assert!(e.message.contains("true or false"), "{}", e.message);
        let e = TopicConfig::new(&d, overrides(&[("min.insync.replicas", "0")])).unwrap_err();
        assert!(e.message.contains("min.insync.replicas"), "{}", e.message);
        assert!(TopicConfig::new(
            &d,
            overrides(&[
                ("leader.replication.throttled.replicas", "0:1,1:1"),
                ("cleanup.policy", "delete"),
                ("compression.type", "zstd"),
                ("unclean.leader.election.enable", "TRUE"),
            ])
        )
        .is_ok());
    }

    #[test]
    fn overrides_win_over_inherited_values() {
        let mut d = builtin_defaults();
        d.insert("retention.bytes", "5000".into());
        let c = TopicConfig::new(
            &d,
            overrides(&[
                ("segment.bytes", "4096"),
                ("message.timestamp.type", "LogAppendTime"),
                ("retention.ms", "1000"),
            ]),
        )
        .unwrap();
        assert_eq!(c.log_config().segment_bytes, 4096);
        assert!(c.log_append_time());
        assert_eq!(c.log_config().flush_messages, u64::MAX);
        assert_eq!(
            c.retention(),
            Retention {
                retention_ms: 1000,
                retention_bytes: 5000
            }
        );
        assert_eq!(c.get("segment.bytes"), "4096");
        assert_eq!(c.get("cleanup.policy"), "delete");
    }

    #[test]
    fn config_types_follow_kafka() {
        let ty = |n: &str| topic_def(n).unwrap().config_type();
        assert_eq!(ty("cleanup.policy"), config_type::LIST);
        assert_eq!(ty("retention.ms"), config_type::LONG);
        assert_eq!(ty("segment.bytes"), config_type::INT);
        assert_eq!(ty("compression.type"), config_type::STRING);
        assert_eq!(ty("unclean.leader.election.enable"), config_type::BOOLEAN);
        assert!(topic_def("leader.replication.throttled.replicas")
            .unwrap()
            .is_list());
        assert!(!topic_def("retention.ms").unwrap().is_list());
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
