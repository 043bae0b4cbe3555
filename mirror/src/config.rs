//! The mirror's YAML configuration: clusters by alias and the flows between them.
//!
//! Every mistake an operator can make in the file is reported at load with the file, line and
//! column: unknown keys, bad regexes, unknown cluster aliases, a flow whose source is its
//! target, duplicate flow names. The checks that need more than one value (aliases, source
//! equals target) run inside deserialization, so serde_yaml attaches a position: the key for
//! an unknown key, the enclosing list or mapping (the flow) for a bad value.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer};
use serde::Deserialize;

use strait_yaml::position::{position_of, Step};

/// Topics MirrorMaker 2 never mirrors by default (`topics.exclude`): internal topics of Kafka,
/// of Connect and of the mirror itself.
pub const TOPICS_EXCLUDE_DEFAULT: &[&str] = &[r".*[\-\.]internal", r".*\.replica", r"__.*"];
/// Groups MirrorMaker 2 never syncs by default (`groups.exclude`), plus strait's own groups.
pub const GROUPS_EXCLUDE_DEFAULT: &[&str] = &[
    r"console-consumer-.*",
    r"connect-.*",
    r"__.*",
    r"strait-mirror-.*",
];
/// Topic configs MirrorMaker 2 never copies (`config.properties.exclude`): they describe the
/// target cluster's own durability and timestamps, not the data.
pub const CONFIG_SYNC_EXCLUDE_DEFAULT: &[&str] = &[
    "min.insync.replicas",
    "unclean.leader.election.enable",
    "message.timestamp.type",
    "message.timestamp.difference.max.ms",
    "follower.replication.throttled.replicas",
    "leader.replication.throttled.replicas",
];

/// Where `/metrics` and `/status` are served when neither the file nor `--http` says.
pub const HTTP_DEFAULT: &str = "127.0.0.1:9780";

/// Why a mirror configuration could not be loaded.
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
    /// The YAML is malformed, does not match the schema or names something that does not
    /// exist.
    #[error("{path}:{line}:{column}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 when the parser does not know it).
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        reason: String,
    },
}

fn control_from_default() -> Vec<std::net::IpAddr> {
    vec![
        std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
    ]
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// Where the sled index lives; relative to the config file. `--data-dir` overrides it.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Address of the HTTP server for `/metrics` and `/status` ([`HTTP_DEFAULT`] if unset).
    /// `--http` overrides it.
    #[serde(default)]
    pub http: Option<std::net::SocketAddr>,
    /// Client addresses allowed to use the flow controls of the HTTP API (stop, start,
    /// checkpoint), which the failover runbooks drive. Loopback only by default.
    #[serde(default = "control_from_default")]
    pub http_control_from: Vec<std::net::IpAddr>,
    /// Clusters by alias. The alias names remote topics (`<alias>.<topic>`) and the origin
    /// header, so it must be stable.
    pub clusters: BTreeMap<String, ClusterConfig>,
    /// Flows from one cluster to another.
    #[serde(deserialize_with = "deserialize_flows")]
    pub flows: Vec<FlowConfig>,
}

/// One Kafka-protocol cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Comma-separated `host:port` list, as `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// librdkafka properties added to every client the mirror makes for this cluster
    /// (consumer, producer and admin), e.g. `security.protocol`.
    #[serde(default)]
    pub client: BTreeMap<String, String>,
}

/// How a source topic is named on the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicationPolicy {
    /// `<source alias>.<topic>`, MirrorMaker 2's DefaultReplicationPolicy.
    Prefix,
    /// The same name, MirrorMaker 2's IdentityReplicationPolicy.
    Identity,
}

/// Where the pump starts a partition it has never mirrored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartPosition {
    /// The partition's log start offset: everything still retained.
    Earliest,
    /// The partition's end offset when the flow first sees it: only new records.
    Latest,
}

/// What a flow does when one of its mirror topics is deleted (or deleted and recreated) on
/// the target behind its back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnTargetRecreated {
    /// Copy the source again from its log start into the new topic (what the source deleted
    /// since is recorded as lost). The default: the target is made whole again by itself.
    Recopy,
    /// Stop the topic's partitions with an error until an operator decides (sets `recopy`
    /// and restarts the daemon).
    Stop,
}

/// Include and exclude lists of regular expressions, each matched against the whole name (as
/// Java's `Pattern.matches`, which MirrorMaker 2 uses). A name is selected when it matches an
/// include and no exclude.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Names to take.
    #[serde(default = "include_all")]
    pub include: Vec<Pattern>,
    /// Names to leave out even if included.
    pub exclude: Option<Vec<Pattern>>,
}

impl Filter {
    fn with_default_exclude(include: Vec<Pattern>, exclude: &[&str]) -> Filter {
        Filter {
            include,
            exclude: Some(
                exclude
                    .iter()
                    .map(|p| Pattern::new(p).expect("built-in pattern"))
                    .collect(),
            ),
        }
    }

    /// Whether `name` is selected.
    pub fn matches(&self, name: &str) -> bool {
        self.include.iter().any(|p| p.matches(name))
            && !self.exclude.iter().flatten().any(|p| p.matches(name))
    }
}

fn include_all() -> Vec<Pattern> {
    vec![Pattern::new(".*").expect("built-in pattern")]
}

/// The most memory one compiled topic or group pattern may take.
const PATTERN_COMPILED_BYTES_MAX: usize = 1 << 20;

/// A regular expression that must match a whole name.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    regex: regex::Regex,
}

impl Pattern {
    /// Compiles `source`, anchored at both ends. The compiled program and its lazy DFA are
    /// each held to 1 MiB (the regex crate allows 10 MiB and more): a short pattern such as
    /// `\w{100}` would otherwise cost tens of megabytes, and topic and group names never need
    /// it (`[a-z0-9._-]{100}` compiles small).
    pub fn new(source: &str) -> Result<Pattern, regex::Error> {
        let regex = regex::RegexBuilder::new(&format!("^(?:{source})$"))
            .size_limit(PATTERN_COMPILED_BYTES_MAX)
            .dfa_size_limit(PATTERN_COMPILED_BYTES_MAX)
            .build()?;
        Ok(Pattern {
            source: source.to_string(),
            regex,
        })
    }

    /// Whether the whole of `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        self.regex.is_match(name)
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Pattern, D::Error> {
        let source = String::deserialize(d)?;
        Pattern::new(&source).map_err(|e| {
            // The regex crate's message spans several lines with a caret; one line reads
            // better after `file:line:column:`.
            let detail = e
                .to_string()
                .lines()
                .last()
                .unwrap_or_default()
                .trim()
                .to_string();
            de::Error::custom(format!("invalid regular expression `{source}`: {detail}"))
        })
    }
}

/// One mirrored direction, `source -> target`.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawFlow")]
pub struct FlowConfig {
    /// The flow's name: `<source>-to-<target>` unless set. Names the mirror's consumer group
    /// (`strait-mirror-<name>`) and its sled tree.
    pub name: String,
    /// Alias of the cluster read from.
    pub source: String,
    /// Alias of the cluster written to.
    pub target: String,
    /// A disabled flow is loaded and checked but not run.
    pub enabled: bool,
    /// Which source topics to mirror.
    pub topics: Filter,
    /// Which source consumer groups to checkpoint and sync.
    pub groups: Filter,
    /// How remote topics are named.
    pub replication_policy: ReplicationPolicy,
    /// Where a partition never mirrored before starts.
    pub start_position: StartPosition,
    /// What happens when a mirror topic is deleted or recreated on the target.
    pub on_target_topic_recreated: OnTargetRecreated,
    /// Commit translated offsets to the target's groups while they have no active members.
    pub sync_group_offsets: bool,
    /// Write-protect the remote topics on the target while the flow runs (only the flow's
    /// producer writes there). On by default with `prefix` naming, whose remote topics are
    /// pure replicas; off by default with `identity`, whose target topic may also be written
    /// by applications (active-active) or by the opposite flow.
    pub protect_target_topics: bool,
    /// How often the source's topic list and partition counts are read.
    pub topic_refresh_interval_ms: u64,
    /// How often topic configs are copied.
    pub config_sync_interval_ms: u64,
    /// How often group offsets are translated, checkpointed and synced.
    pub checkpoint_interval_ms: u64,
    /// How often a heartbeat is written to the source's `heartbeats` topic (0: never).
    pub heartbeat_interval_ms: u64,
    /// Topic configs never copied to the target.
    pub config_sync_exclude: BTreeSet<String>,
    /// At most this many record bytes (keys, values and headers) sent but not yet
    /// acknowledged by the target.
    pub in_flight_bytes_limit: u64,
    /// Replication factor of the remote topics the flow creates (MirrorMaker 2's
    /// `replication.factor`).
    pub replication_factor: i16,
    /// Replication factor of the offset-runs topic (`offset-syncs.topic.replication.factor`).
    pub offset_syncs_topic_replication_factor: i16,
    /// Replication factor of `<source>.checkpoints.internal`
    /// (`checkpoints.topic.replication.factor`).
    pub checkpoints_topic_replication_factor: i16,
    /// Replication factor of the source's `heartbeats` topic
    /// (`heartbeats.topic.replication.factor`).
    pub heartbeats_topic_replication_factor: i16,
}

/// The keys of a flow as written; turned into a [`FlowConfig`] once the file's aliases are
/// known.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlow {
    name: Option<String>,
    source: Alias,
    target: Alias,
    #[serde(default = "yes")]
    enabled: bool,
    topics: Option<Filter>,
    groups: Option<Filter>,
    #[serde(default = "prefix")]
    replication_policy: ReplicationPolicy,
    #[serde(default = "earliest")]
    start_position: StartPosition,
    #[serde(default = "recopy")]
    on_target_topic_recreated: OnTargetRecreated,
    #[serde(default = "yes")]
    sync_group_offsets: bool,
    protect_target_topics: Option<bool>,
    #[serde(default = "topic_refresh_interval_ms_default")]
    topic_refresh_interval_ms: Interval,
    #[serde(default = "config_sync_interval_ms_default")]
    config_sync_interval_ms: Interval,
    #[serde(default = "checkpoint_interval_ms_default")]
    checkpoint_interval_ms: Interval,
    #[serde(default = "heartbeat_interval_ms_default")]
    heartbeat_interval_ms: u64,
    config_sync_exclude: Option<BTreeSet<String>>,
    #[serde(default = "in_flight_bytes_limit_default")]
    in_flight_bytes_limit: InFlightLimit,
    #[serde(default)]
    replication_factor: ReplicationFactor,
    #[serde(default)]
    offset_syncs_topic_replication_factor: ReplicationFactor,
    #[serde(default)]
    checkpoints_topic_replication_factor: ReplicationFactor,
    #[serde(default)]
    heartbeats_topic_replication_factor: ReplicationFactor,
}

/// MirrorMaker 2's default replication factor for the topics a flow creates: never the
/// cluster's default, and refused on a cluster with fewer brokers unless set lower.
pub const REPLICATION_FACTOR_DEFAULT: i16 = 3;

/// A replication factor: 1 to 32767.
#[derive(Debug)]
struct ReplicationFactor(i16);

impl Default for ReplicationFactor {
    fn default() -> ReplicationFactor {
        ReplicationFactor(REPLICATION_FACTOR_DEFAULT)
    }
}

impl<'de> Deserialize<'de> for ReplicationFactor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ReplicationFactor, D::Error> {
        let n = i64::deserialize(d)?;
        match i16::try_from(n) {
            Ok(rf) if rf >= 1 => Ok(ReplicationFactor(rf)),
            _ => Err(de::Error::custom(format!(
                "replication factor {n} is out of range: use 1 to 32767 (and at most the brokers of the cluster)"
            ))),
        }
    }
}

fn yes() -> bool {
    true
}
fn prefix() -> ReplicationPolicy {
    ReplicationPolicy::Prefix
}
fn earliest() -> StartPosition {
    StartPosition::Earliest
}
fn recopy() -> OnTargetRecreated {
    OnTargetRecreated::Recopy
}
/// New topics appear on the target within seconds, not after MirrorMaker 2's ten minutes.
fn topic_refresh_interval_ms_default() -> Interval {
    Interval(2_000)
}
fn config_sync_interval_ms_default() -> Interval {
    Interval(10_000)
}
fn checkpoint_interval_ms_default() -> Interval {
    Interval(2_000)
}
fn heartbeat_interval_ms_default() -> u64 {
    1_000
}
/// 32 MiB: enough to keep the target producer's batches full, small next to a process's
/// memory.
pub const IN_FLIGHT_BYTES_LIMIT_DEFAULT: u64 = 32 * 1024 * 1024;
fn in_flight_bytes_limit_default() -> InFlightLimit {
    InFlightLimit(IN_FLIGHT_BYTES_LIMIT_DEFAULT)
}

/// A period in milliseconds, at least 100 and at most a day.
#[derive(Debug)]
struct Interval(u64);

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Interval, D::Error> {
        let ms = u64::deserialize(d)?;
        if !(100..=86_400_000).contains(&ms) {
            return Err(de::Error::custom(format!(
                "interval {ms} ms is out of range: use 100 to 86400000 ms"
            )));
        }
        Ok(Interval(ms))
    }
}

/// The in-flight byte limit: at least 1 MiB (one maximal record must fit), at most 1 GiB.
#[derive(Debug)]
struct InFlightLimit(u64);

impl<'de> Deserialize<'de> for InFlightLimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<InFlightLimit, D::Error> {
        let bytes = u64::deserialize(d)?;
        if !(1 << 20..=1 << 30).contains(&bytes) {
            return Err(de::Error::custom(format!(
                "in_flight_bytes_limit {bytes} is out of range: use 1048576 (1 MiB) to 1073741824 (1 GiB)"
            )));
        }
        Ok(InFlightLimit(bytes))
    }
}

thread_local! {
    /// Aliases of the file being loaded, for [`Alias`]'s check. Set by [`MirrorConfig::parse`]
    /// around the second pass; serde gives a `Deserialize` impl no other way to see a sibling
    /// key's value while keeping the parser's position for the error.
    static KNOWN_ALIASES: RefCell<Option<BTreeSet<String>>> = const { RefCell::new(None) };
}

/// A cluster alias that must name one of the file's clusters.
#[derive(Debug)]
struct Alias(String);

impl<'de> Deserialize<'de> for Alias {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Alias, D::Error> {
        let alias = String::deserialize(d)?;
        KNOWN_ALIASES.with(|known| match &*known.borrow() {
            Some(known) if !known.contains(&alias) => Err(de::Error::custom(format!(
                "unknown cluster alias `{alias}` (known: {})",
                known.iter().cloned().collect::<Vec<_>>().join(", ")
            ))),
            _ => Ok(Alias(alias)),
        })
    }
}

/// Deserializes the flow list one flow at a time, so a flow-level error (source equals
/// target, a duplicate name) is raised while the parser still points at that flow.
fn deserialize_flows<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<FlowConfig>, D::Error> {
    struct Flows;
    impl<'de> de::Visitor<'de> for Flows {
        type Value = Vec<FlowConfig>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of flows")
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut flows: Vec<FlowConfig> = Vec::new();
            while let Some(flow) = seq.next_element::<FlowConfig>()? {
                if flows.iter().any(|f| f.name == flow.name) {
                    return Err(de::Error::custom(format!(
                        "two flows are named `{}`: give one a different `name`",
                        flow.name
                    )));
                }
                flows.push(flow);
            }
            Ok(flows)
        }
    }
    d.deserialize_seq(Flows)
}

impl TryFrom<RawFlow> for FlowConfig {
    type Error = String;

    fn try_from(raw: RawFlow) -> Result<FlowConfig, String> {
        let this = raw;
        let (source, target) = (this.source.0.clone(), this.target.0.clone());
        if source == target {
            return Err(format!(
                "flow `{source}` -> `{target}`: source and target are the same cluster; a flow copies between two clusters"
            ));
        }
        let name = this.name.unwrap_or_else(|| format!("{source}-to-{target}"));
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(format!(
                "flow name `{name}` must be non-empty ASCII letters, digits, `-`, `_` or `.` (it names a consumer group)"
            ));
        }
        let topics = match this.topics {
            Some(f) if f.exclude.is_some() => f,
            Some(f) => Filter::with_default_exclude(f.include, TOPICS_EXCLUDE_DEFAULT),
            None => Filter::with_default_exclude(include_all(), TOPICS_EXCLUDE_DEFAULT),
        };
        let groups = match this.groups {
            Some(f) if f.exclude.is_some() => f,
            Some(f) => Filter::with_default_exclude(f.include, GROUPS_EXCLUDE_DEFAULT),
            None => Filter::with_default_exclude(include_all(), GROUPS_EXCLUDE_DEFAULT),
        };
        Ok(FlowConfig {
            name,
            source,
            target,
            enabled: this.enabled,
            topics,
            groups,
            replication_policy: this.replication_policy,
            start_position: this.start_position,
            on_target_topic_recreated: this.on_target_topic_recreated,
            sync_group_offsets: this.sync_group_offsets,
            protect_target_topics: this
                .protect_target_topics
                .unwrap_or(this.replication_policy == ReplicationPolicy::Prefix),
            topic_refresh_interval_ms: this.topic_refresh_interval_ms.0,
            config_sync_interval_ms: this.config_sync_interval_ms.0,
            checkpoint_interval_ms: this.checkpoint_interval_ms.0,
            heartbeat_interval_ms: this.heartbeat_interval_ms,
            config_sync_exclude: this.config_sync_exclude.unwrap_or_else(|| {
                CONFIG_SYNC_EXCLUDE_DEFAULT
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            }),
            in_flight_bytes_limit: this.in_flight_bytes_limit.0,
            replication_factor: this.replication_factor.0,
            offset_syncs_topic_replication_factor: this.offset_syncs_topic_replication_factor.0,
            checkpoints_topic_replication_factor: this.checkpoints_topic_replication_factor.0,
            heartbeats_topic_replication_factor: this.heartbeats_topic_replication_factor.0,
        })
    }
}

/// First pass: only the aliases, so the second pass can check references to them.
#[derive(Deserialize)]
struct AliasesOnly {
    clusters: BTreeMap<String, de::IgnoredAny>,
}

impl MirrorConfig {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<MirrorConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = MirrorConfig::parse(&text, path)?;
        if let Some(dir) = config.data_dir.as_mut().filter(|d| d.is_relative()) {
            *dir = path.parent().unwrap_or_else(|| Path::new(".")).join(&*dir);
        }
        Ok(config)
    }

    /// Parses and checks YAML text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<MirrorConfig, ConfigError> {
        let parse_error = |e: serde_yaml::Error, at: Option<(usize, usize)>| {
            let (line, column) = at
                .or_else(|| e.location().map(|l| (l.line(), l.column())))
                .unwrap_or((0, 0));
            // serde_yaml appends its own position to the message; ours is already in front.
            let message = e.to_string();
            let reason = match message.rfind(" at line ") {
                Some(i) if e.location().is_some() => message[..i].to_string(),
                _ => message,
            };
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                column,
                reason,
            }
        };
        strait_yaml::limits::check(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            line: e.line,
            column: e.column,
            reason: e.reason,
        })?;
        // A file whose `clusters` is itself broken fails here, with the parser's position.
        let aliases: AliasesOnly = serde_yaml::from_str(text).map_err(|e| parse_error(e, None))?;
        let known: BTreeSet<String> = aliases.clusters.into_keys().collect();
        struct Reset;
        impl Drop for Reset {
            fn drop(&mut self) {
                KNOWN_ALIASES.with(|k| k.borrow_mut().take());
            }
        }
        KNOWN_ALIASES.with(|k| *k.borrow_mut() = Some(known));
        let _reset = Reset;
        let config: MirrorConfig = serde_path_to_error::deserialize(
            serde_yaml::Deserializer::from_str(text),
        )
        .map_err(|e| {
            let steps = steps_of(e.path());
            let at = position_of(text, &steps);
            parse_error(e.into_inner(), at)
        })?;
        for (alias, cluster) in &config.clusters {
            let problem = if alias.is_empty() || alias.contains('.') {
                Some(format!(
                    "cluster alias `{alias}` must be non-empty and contain no `.` (it prefixes remote topic names)"
                ))
            } else if cluster.bootstrap_servers.trim().is_empty() {
                Some(format!("cluster `{alias}`: bootstrap_servers is empty"))
            } else {
                None
            };
            if let Some(reason) = problem {
                let line = line_of_key(text, alias);
                return Err(ConfigError::Parse {
                    path: path.to_path_buf(),
                    line,
                    column: 1,
                    reason,
                });
            }
        }
        Ok(config)
    }

    /// The flows that run.
    pub fn enabled_flows(&self) -> impl Iterator<Item = &FlowConfig> {
        self.flows.iter().filter(|f| f.enabled)
    }

    /// The cluster named `alias`; every flow's aliases were checked at load.
    pub fn cluster(&self, alias: &str) -> &ClusterConfig {
        self.clusters
            .get(alias)
            .expect("flow aliases are checked against clusters at load")
    }
}

/// The path serde_path_to_error recorded, as [`Step`]s.
fn steps_of(path: &serde_path_to_error::Path) -> Vec<Step> {
    path.iter()
        .filter_map(|segment| match segment {
            serde_path_to_error::Segment::Seq { index } => Some(Step::Index(*index)),
            serde_path_to_error::Segment::Map { key } => Some(Step::Key(key.clone())),
            _ => None,
        })
        .collect()
}

/// 1-based line of the first `key:` in `text`, or 0.
fn line_of_key(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            let t = l.trim_start();
            t.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
                || t.strip_prefix(&format!("\"{key}\""))
                    .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
        .map_or(0, |i| i + 1)
}

impl FlowConfig {
    /// The consumer group the flow's pumps share on the source.
    pub fn consumer_group(&self) -> String {
        format!("strait-mirror-{}", self.name)
    }

    /// The client id of the flow's producer on the target: the one writer its mirror topics
    /// accept while they are write-protected (`protection.rs`).
    pub fn writer_client_id(&self) -> String {
        format!("strait-mirror-{}", self.name)
    }

    /// The source topic whose remote topic is `remote`, if `remote` is named as one.
    pub fn source_topic_of(&self, remote: &str) -> Option<String> {
        match self.replication_policy {
            ReplicationPolicy::Prefix => remote
                .strip_prefix(&format!("{}.", self.source))
                .map(str::to_string),
            ReplicationPolicy::Identity => Some(remote.to_string()),
        }
    }

    /// The name `topic` of the source gets on the target.
    pub fn remote_topic(&self, topic: &str) -> String {
        match self.replication_policy {
            ReplicationPolicy::Prefix => format!("{}.{topic}", self.source),
            ReplicationPolicy::Identity => topic.to_string(),
        }
    }

    /// Whether a source topic is mirrored: selected by the filter and not itself a copy of a
    /// topic from the target (which would loop when `target -> source` also runs).
    pub fn mirrors_topic(&self, topic: &str) -> bool {
        if self.replication_policy == ReplicationPolicy::Prefix
            && topic.starts_with(&format!("{}.", self.target))
        {
            return false;
        }
        self.topics.matches(topic)
    }

    /// The target topic holding the flow's checkpoints, as MirrorMaker 2 names it.
    pub fn checkpoints_topic(&self) -> String {
        format!("{}.checkpoints.internal", self.source)
    }

    /// The target topic holding the flow's offset runs, the shared copy of the sled index.
    pub fn offset_runs_topic(&self) -> String {
        format!("strait-offset-runs.{}.internal", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<MirrorConfig, ConfigError> {
        MirrorConfig::parse(text, Path::new("mirror.yaml"))
    }

    const CLUSTERS: &str = "clusters:\n  a:\n    bootstrap_servers: 127.0.0.1:9092\n  b:\n    bootstrap_servers: 127.0.0.1:9192\n";

    /// A "billion laughs" document: nine levels of ten aliases each, 10^9 strings if
    /// expanded, inside the `flows` list. Nothing expands it: the loader meets a sequence
    /// where a flow must be (and serde_yaml caps alias repetitions in any case). The error
    /// names the file and comes at once.
    #[test]
    fn an_alias_bomb_is_refused_not_expanded() {
        let mut text = format!("{CLUSTERS}flows:\n  - &x0 [\"lol\"]\n");
        for level in 1..10 {
            let refs = vec![format!("*x{}", level - 1); 10].join(", ");
            text.push_str(&format!("  - &x{level} [{refs}]\n"));
        }
        let started = std::time::Instant::now();
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.starts_with("mirror.yaml:"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn a_pattern_that_compiles_huge_is_refused_with_its_position() {
        let text = format!(
            "{CLUSTERS}flows:\n  - source: a\n    target: b\n    topics:\n      include: ['\\w{{150}}']\n"
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.starts_with("mirror.yaml:"), "{err}");
        assert!(err.contains("size limit"), "{err}");
        // A pattern for real topic names of that length compiles.
        let text = format!(
            "{CLUSTERS}flows:\n  - source: a\n    target: b\n    topics:\n      include: ['[a-z0-9._-]{{150}}']\n"
        );
        parse(&text).unwrap();
    }

    #[test]
    fn a_minimal_flow_gets_mirrormaker_defaults() {
        let c = parse(&format!("{CLUSTERS}flows:\n  - source: a\n    target: b\n")).unwrap();
        let f = &c.flows[0];
        assert_eq!(f.name, "a-to-b");
        assert_eq!(f.consumer_group(), "strait-mirror-a-to-b");
        assert_eq!(f.remote_topic("orders"), "a.orders");
        assert!(f.mirrors_topic("orders"));
        assert!(f.mirrors_topic("heartbeats"));
        assert!(!f.mirrors_topic("__consumer_offsets"));
        assert!(!f.mirrors_topic("a.checkpoints.internal"));
        assert!(
            !f.mirrors_topic("b.orders"),
            "a copy of the target's topic would loop"
        );
        assert!(f.groups.matches("billing"));
        assert!(!f.groups.matches("console-consumer-123"));
        assert!(!f.groups.matches("strait-mirror-b-to-a"));
        assert!(f.config_sync_exclude.contains("min.insync.replicas"));
        assert_eq!(f.start_position, StartPosition::Earliest);
        assert_eq!(f.on_target_topic_recreated, OnTargetRecreated::Recopy);
        assert!(f.sync_group_offsets && f.enabled);
        assert_eq!(f.in_flight_bytes_limit, IN_FLIGHT_BYTES_LIMIT_DEFAULT);
    }

    #[test]
    fn patterns_match_whole_names_and_explicit_excludes_replace_the_defaults() {
        let c = parse(&format!(
            "{CLUSTERS}flows:\n  - source: a\n    target: b\n    replication_policy: identity\n    topics:\n      include: ['orders.*']\n      exclude: []\n"
        ))
        .unwrap();
        let f = &c.flows[0];
        assert!(f.mirrors_topic("orders-eu"));
        assert!(
            !f.mirrors_topic("old-orders"),
            "include must match the whole name"
        );
        assert!(
            f.mirrors_topic("orders.internal"),
            "exclude: [] drops the defaults"
        );
        assert_eq!(f.remote_topic("orders"), "orders");
    }

    fn error_at(text: &str) -> (usize, String) {
        match parse(text) {
            Err(ConfigError::Parse { line, reason, .. }) => (line, reason),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn an_unknown_alias_names_its_line_and_the_known_ones() {
        let (line, reason) = error_at(&format!("{CLUSTERS}flows:\n  - source: a\n    target: c\n"));
        assert_eq!(line, 8);
        assert!(
            reason.contains("unknown cluster alias `c` (known: a, b)"),
            "{reason}"
        );
    }

    #[test]
    fn a_bad_regex_names_its_line() {
        let (line, reason) = error_at(&format!(
            "{CLUSTERS}flows:\n  - source: a\n    target: b\n    groups:\n      include: ['(unclosed']\n"
        ));
        assert_eq!(line, 10);
        assert!(
            reason.contains("invalid regular expression `(unclosed`"),
            "{reason}"
        );
    }

    #[test]
    fn an_unknown_key_names_its_line() {
        let (line, reason) = error_at(&format!(
            "{CLUSTERS}flows:\n  - source: a\n    target: b\n    replication_polcy: prefix\n"
        ));
        assert_eq!(line, 9);
        assert!(
            reason.contains("unknown field `replication_polcy`"),
            "{reason}"
        );
    }

    #[test]
    fn a_flow_onto_its_own_source_is_refused_at_that_flow() {
        let (line, reason) = error_at(&format!(
            "{CLUSTERS}flows:\n  - source: a\n    target: b\n  - source: b\n    target: b\n    enabled: false\n"
        ));
        assert_eq!(line, 9, "the second flow's line: {reason}");
        assert!(
            reason.contains("source and target are the same cluster"),
            "{reason}"
        );
    }

    #[test]
    fn duplicate_flow_names_and_bad_values_are_refused() {
        let (_, reason) = error_at(&format!(
            "{CLUSTERS}flows:\n  - source: a\n    target: b\n  - source: a\n    target: b\n"
        ));
        assert!(reason.contains("two flows are named `a-to-b`"), "{reason}");
        let (line, reason) = error_at(&format!(
            "{CLUSTERS}flows:\n  - source: a\n    target: b\n    checkpoint_interval_ms: 5\n"
        ));
        assert_eq!(line, 9);
        assert!(reason.contains("interval 5 ms is out of range"), "{reason}");
        let (_, reason) = error_at(&format!(
            "{CLUSTERS}flows:\n  - source: a\n    target: b\n    start_position: middle\n"
        ));
        assert!(reason.contains("unknown variant `middle`"), "{reason}");
        let (line, reason) = error_at(
            "clusters:\n  a.b:\n    bootstrap_servers: x:1\n  b:\n    bootstrap_servers: y:1\nflows: []\n",
        );
        assert_eq!(line, 2);
        assert!(reason.contains("contain no `.`"), "{reason}");
    }

    #[test]
    fn the_shipped_configs_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        for name in ["mirror-a-to-b.yaml", "mirror-b-to-a.yaml"] {
            let c = MirrorConfig::load(&dir.join(name)).unwrap();
            assert_eq!(c.enabled_flows().count(), 1, "{name}");
        }
    }
}
