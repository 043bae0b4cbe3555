//! Topic-level configuration with Kafka's names (`retention.ms`, `segment.bytes`, ...).
//!
//! A topic stores only its overrides; every effective value is the override or the node's
//! default. Validation is table driven: an unknown name or a value of the wrong type or range
//! is rejected with a message naming it, and nothing changes (Kafka answers INVALID_CONFIG).

use std::collections::BTreeMap;

use crate::config::LogDefaults;
use crate::log::LogConfig;

/// What kind of value a config takes, with its bounds.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// A signed 64-bit integer with a minimum.
    Long { min: i64 },
    /// A signed 32-bit integer with a minimum.
    Int { min: i32 },
    /// `true` or `false`.
    Bool,
    /// One of a fixed set of strings.
    Choice(&'static [&'static str]),
    /// A comma-separated list, not interpreted by the broker (throttled-replica lists).
    List,
}

/// One topic config the broker knows.
#[derive(Debug, Clone, Copy)]
pub struct ConfigDef {
    /// Kafka's name.
    pub name: &'static str,
    kind: Kind,
}

/// Every topic config strait accepts. Kafka accepts more; each one added here must be enforced
/// or documented as stored-only in ARCHITECTURE.md.
pub const TOPIC_CONFIGS: &[ConfigDef] = &[
    ConfigDef {
        name: "cleanup.policy",
        // `compact` is refused until log compaction exists; see ARCHITECTURE.md.
        kind: Kind::Choice(&["delete"]),
    },
    ConfigDef {
        name: "compression.type",
        kind: Kind::Choice(&["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"]),
    },
    ConfigDef {
        name: "flush.messages",
        kind: Kind::Long { min: 1 },
    },
    ConfigDef {
        name: "flush.ms",
        kind: Kind::Long { min: 0 },
    },
    ConfigDef {
        name: "follower.replication.throttled.replicas",
        kind: Kind::List,
    },
    ConfigDef {
        name: "index.interval.bytes",
        kind: Kind::Int { min: 0 },
    },
    ConfigDef {
        name: "leader.replication.throttled.replicas",
        kind: Kind::List,
    },
    ConfigDef {
        name: "max.message.bytes",
        kind: Kind::Int { min: 0 },
    },
    ConfigDef {
        name: "message.timestamp.difference.max.ms",
        kind: Kind::Long { min: 0 },
    },
    ConfigDef {
        name: "message.timestamp.type",
        kind: Kind::Choice(&["CreateTime", "LogAppendTime"]),
    },
    ConfigDef {
        name: "min.insync.replicas",
        kind: Kind::Int { min: 1 },
    },
    ConfigDef {
        name: "retention.bytes",
        kind: Kind::Long { min: -1 },
    },
    ConfigDef {
        name: "retention.ms",
        kind: Kind::Long { min: -1 },
    },
    ConfigDef {
        name: "segment.bytes",
        // Kafka's minimum is 14 bytes (a batch header could not fit below that).
        kind: Kind::Int { min: 14 },
    },
    ConfigDef {
        name: "segment.ms",
        kind: Kind::Long { min: 1 },
    },
    ConfigDef {
        name: "unclean.leader.election.enable",
        kind: Kind::Bool,
    },
];

/// A rejected config: which name, which value, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConfigValueError {
    /// Human-readable reason naming the config.
    pub message: String,
}

fn find_def(name: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

fn check_value(def: &ConfigDef, value: &str) -> Result<(), ConfigValueError> {
    let bad = |why: String| ConfigValueError {
        message: format!("invalid value `{value}` for config `{}`: {why}", def.name),
    };
    match def.kind {
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
            } else if def.name == "cleanup.policy" && value.contains("compact") {
                Err(bad(
                    "log compaction is not supported by strait yet; use `delete`".into(),
                ))
            } else {
                Err(bad(format!("must be one of {}", choices.join(", "))))
            }
        }
        Kind::List => Ok(()),
    }
}

/// The effective configuration of one topic: node defaults plus the topic's overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    overrides: BTreeMap<String, String>,
    defaults: BTreeMap<&'static str, String>,
}

impl TopicConfig {
    /// The node's defaults with no overrides; fails when a default itself is invalid.
    pub fn from_defaults(defaults: &LogDefaults) -> Result<TopicConfig, ConfigValueError> {
        TopicConfig::new(defaults, BTreeMap::new())
    }

    /// Validates `overrides` against the known configs.
    pub fn new(
        defaults: &LogDefaults,
        overrides: BTreeMap<String, String>,
    ) -> Result<TopicConfig, ConfigValueError> {
        let never = |v: Option<u64>| v.map_or(i64::MAX, |v| i64::try_from(v).unwrap_or(i64::MAX));
        let mut d: BTreeMap<&'static str, String> = BTreeMap::new();
        d.insert("cleanup.policy", "delete".into());
        d.insert("compression.type", "producer".into());
        d.insert("flush.messages", never(defaults.flush_messages).to_string());
        d.insert("flush.ms", never(defaults.flush_ms).to_string());
        d.insert("follower.replication.throttled.replicas", String::new());
        d.insert(
            "index.interval.bytes",
            defaults.index_interval_bytes.to_string(),
        );
        d.insert("leader.replication.throttled.replicas", String::new());
        d.insert("max.message.bytes", defaults.message_max_bytes.to_string());
        d.insert("message.timestamp.difference.max.ms", i64::MAX.to_string());
        d.insert(
            "message.timestamp.type",
            defaults.message_timestamp_type.clone(),
        );
        d.insert("min.insync.replicas", "1".into());
        d.insert("retention.bytes", defaults.retention_bytes.to_string());
        d.insert("retention.ms", defaults.retention_ms.to_string());
        d.insert("segment.bytes", defaults.segment_bytes.to_string());
        d.insert("segment.ms", defaults.segment_ms.to_string());
        d.insert("unclean.leader.election.enable", "false".into());
        for (name, value) in &d {
            let def = find_def(name).ok_or_else(|| ConfigValueError {
                message: format!("default for unknown config `{name}`"),
            })?;
            check_value(def, value)?;
        }
        for (name, value) in &overrides {
            let def = find_def(name).ok_or_else(|| ConfigValueError {
                message: format!("unknown topic config `{name}`"),
            })?;
            check_value(def, value)?;
        }
        Ok(TopicConfig {
            overrides,
            defaults: d,
        })
    }

    /// The topic's own overrides (what is persisted).
    pub fn overrides(&self) -> &BTreeMap<String, String> {
        &self.overrides
    }

    /// Every known config with its effective value and whether it is the node default.
    pub fn entries(&self) -> Vec<(&'static str, String, bool)> {
        TOPIC_CONFIGS
            .iter()
            .map(|def| match self.overrides.get(def.name) {
                Some(v) => (def.name, v.clone(), false),
                None => (
                    def.name,
                    self.defaults.get(def.name).cloned().unwrap_or_default(),
                    true,
                ),
            })
            .collect()
    }

    fn get(&self, name: &str) -> &str {
        self.overrides
            .get(name)
            .or_else(|| self.defaults.get(name))
            .map(String::as_str)
            .unwrap_or_default()
    }

    fn get_i64(&self, name: &str) -> i64 {
        // Every value was validated as an integer when the config was built.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn overrides(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn unknown_and_invalid_configs_are_named() {
        let d = LogDefaults::default();
        let e = TopicConfig::new(&d, overrides(&[("retention.mss", "1")])).unwrap_err();
        assert_eq!(e.message, "unknown topic config `retention.mss`");
        let e = TopicConfig::new(&d, overrides(&[("segment.bytes", "ten")])).unwrap_err();
        assert!(e.message.contains("segment.bytes"), "{}", e.message);
        let e = TopicConfig::new(&d, overrides(&[("cleanup.policy", "compact")])).unwrap_err();
        assert!(
            e.message.contains("compaction is not supported"),
            "{}",
            e.message
        );
    }

    #[test]
    fn overrides_win_over_defaults() {
        let d = LogDefaults::default();
        let c = TopicConfig::new(
            &d,
            overrides(&[
                ("segment.bytes", "4096"),
                ("message.timestamp.type", "LogAppendTime"),
            ]),
        )
        .unwrap();
        assert_eq!(c.log_config().segment_bytes, 4096);
        assert!(c.log_append_time());
        assert_eq!(c.log_config().flush_messages, u64::MAX);
        let entry = c
            .entries()
            .into_iter()
            .find(|(n, _, _)| *n == "segment.bytes")
            .unwrap();
        assert_eq!(entry, ("segment.bytes", "4096".to_string(), false));
    }
}
