//! What an action's executor takes and gives: its planned arguments read as the mirror
//! config, the flow, a site and the running mirror's address; its outcome (detail, the
//! partitions, groups and tails it found) or why it failed. Shared by the executors,
//! `exec.rs` and `failback.rs`.

use std::net::SocketAddr;
use std::path::Path;

use serde::Serialize;
use strait_mirror::config::{ClusterConfig, FlowConfig, MirrorConfig, HTTP_DEFAULT};

use crate::playbook::{Planned, Value};

/// How long one site or mirror request may take.
pub const REQUEST_TIMEOUT_MS: u64 = 5_000;
/// How often a wait polls the mirror.
pub(crate) const POLL_INTERVAL_MS: u64 = 200;
/// The default of `wait_ms` where an action waits.
pub const WAIT_DEFAULT_MS: u64 = 60_000;

/// What the executors need besides their arguments.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The running mirror's HTTP address, instead of the config's.
    pub mirror_http: Option<SocketAddr>,
}

/// Why an action did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// strait cannot execute this action yet.
    #[error("strait has no executor for `{0}` yet")]
    NotExecutable(&'static str),
    /// The action ran and found the condition false, or could not do its work.
    #[error("{0}")]
    Failed(String),
}

/// One partition of a failback: the old source's divergent tail (what it took after the
/// mirror's last copy), where it was archived, and what the target took during the outage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TailReport {
    /// Source topic (on the old source).
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// First offset of the divergent tail: the mirror's cursor.
    pub divergent_from: i64,
    /// One past its last offset: the old source's end.
    pub divergent_to: i64,
    /// Records in it (read, once archived; at most `divergent_to - divergent_from` when
    /// predicted).
    pub divergent_records: i64,
    /// The archive file, once written.
    pub file: Option<String>,
    /// The sha256 of the archive file.
    pub sha256: Option<String>,
    /// Records the target took in its mirror topic during the outage, which the failback
    /// brings to the old source.
    pub target_records: i64,
}

/// One partition's position on both sides, as the mirror reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionLag {
    /// Source topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The source's high watermark the mirror last saw.
    pub source_end_offset: Option<i64>,
    /// The next source offset the mirror will copy.
    pub mirrored_offset: Option<i64>,
    /// The end offset of the partition's mirror topic on the target, read from the target
    /// (`None` when it does not answer).
    pub target_end_offset: Option<i64>,
    /// Records on the source not yet on the target.
    pub lag_records: Option<i64>,
    /// Age of the oldest record not yet on the target.
    pub lag_seconds: Option<f64>,
}

/// One group's offset on one partition, checked on the target against the translation of
/// its offset on the source.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupCheck {
    /// The consumer group.
    pub group: String,
    /// Source topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The group's committed offset on the source (in a failback's report: on the target,
    /// where the group comes back from).
    pub source_offset: i64,
    /// Its exact translation through the mirror's index.
    pub translated_offset: Option<i64>,
    /// What the group has committed on the target (in a failback's report: on the source).
    pub target_offset: Option<i64>,
    /// The target's offset is the translation.
    pub verified: bool,
}

/// What an action found or did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// One line for the report.
    pub detail: String,
    /// Partitions, for actions that look at lag.
    pub partitions: Vec<PartitionLag>,
    /// Group offsets, for the action that verifies them.
    pub groups: Vec<GroupCheck>,
    /// A failback's partitions, for the actions that find or archive divergent tails.
    pub tails: Vec<TailReport>,
}

/// How long one control request to the mirror may take (the mirror answers within 8 s).
pub(crate) const CONTROL_REQUEST_TIMEOUT_MS: u64 = 15_000;

pub(crate) fn text<'a>(p: &'a Planned, name: &str) -> &'a str {
    match p.args.get(name) {
        Some(Value::String(s)) => s,
        _ => "",
    }
}

pub(crate) fn mirror_config(p: &Planned) -> Result<MirrorConfig, ActionError> {
    let path = text(p, "mirror_config");
    MirrorConfig::load(Path::new(path)).map_err(|e| ActionError::Failed(e.to_string()))
}

pub(crate) fn cluster_of<'c>(
    config: &'c MirrorConfig,
    site: &str,
) -> Result<&'c ClusterConfig, ActionError> {
    config.clusters.get(site).ok_or_else(|| {
        let known: Vec<&str> = config.clusters.keys().map(String::as_str).collect();
        ActionError::Failed(format!(
            "no site `{site}` in the mirror config (its sites: {})",
            known.join(", ")
        ))
    })
}

/// The running mirror's HTTP address, after checking that its config has the flow.
pub(crate) fn mirror_addr(p: &Planned, ctx: &Context) -> Result<SocketAddr, ActionError> {
    let config = mirror_config(p)?;
    let flow = text(p, "flow");
    if !config.flows.iter().any(|f| f.name == flow) {
        let known: Vec<&str> = config.flows.iter().map(|f| f.name.as_str()).collect();
        return Err(ActionError::Failed(format!(
            "{}: no flow `{flow}` (its flows: {})",
            text(p, "mirror_config"),
            known.join(", ")
        )));
    }
    Ok(ctx
        .mirror_http
        .or(config.http)
        .unwrap_or_else(|| HTTP_DEFAULT.parse().expect("HTTP_DEFAULT is an address")))
}

pub(crate) fn flow_config<'c>(
    config: &'c MirrorConfig,
    flow: &str,
) -> Result<&'c FlowConfig, ActionError> {
    config.flows.iter().find(|f| f.name == flow).ok_or_else(|| {
        let known: Vec<&str> = config.flows.iter().map(|f| f.name.as_str()).collect();
        ActionError::Failed(format!(
            "no flow `{flow}` in the mirror config (its flows: {})",
            known.join(", ")
        ))
    })
}

/// One group offset the mirror committed for a runbook: where the group was, its
/// translation, what the side it was committed on holds now, and why it was left alone.
pub(crate) struct Committed {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub from_offset: i64,
    pub translated_offset: i64,
    pub holds: Option<i64>,
    pub skipped: Option<String>,
}

/// The checks of the mirror's commits (verified: the side holds the translation), and a line
/// for each it left alone.
pub(crate) fn checks_of(commits: Vec<Committed>) -> (Vec<GroupCheck>, Vec<String>) {
    let skipped = commits
        .iter()
        .filter_map(|c| {
            c.skipped
                .as_ref()
                .map(|why| format!("{} {}/{}: {why}", c.group, c.topic, c.partition))
        })
        .collect();
    let checks = commits
        .into_iter()
        .map(|c| GroupCheck {
            verified: c.holds == Some(c.translated_offset),
            group: c.group,
            topic: c.topic,
            partition: c.partition,
            source_offset: c.from_offset,
            translated_offset: Some(c.translated_offset),
            target_offset: c.holds,
        })
        .collect();
    (checks, skipped)
}

/// The group offsets the running mirror committed when asked `action` for `flow` (its answer's
/// `commits`); `what` names the request in errors.
pub(crate) async fn mirror_commits<T: serde::de::DeserializeOwned>(
    p: &Planned,
    ctx: &Context,
    action: &str,
    what: &str,
) -> Result<Vec<T>, ActionError> {
    let addr = mirror_addr(p, ctx)?;
    let flow = text(p, "flow");
    let answer = strait_mirror::http::post_control(
        addr,
        flow,
        action,
        std::time::Duration::from_millis(CONTROL_REQUEST_TIMEOUT_MS),
    )
    .await
    .map_err(|e| ActionError::Failed(format!("{what} of flow `{flow}`: {e}")))?;
    serde_json::from_value(answer["commits"].clone())
        .map_err(|e| ActionError::Failed(format!("the mirror's answer to the {what}: {e}")))
}
