//! Executors of the actions that only read: they look at the sites (Kafka metadata, TCP) and
//! at the running mirror (its `/status`), and change nothing.
//!
//! Every check is bounded in time. The mirror's address is the config's `http` (or
//! 127.0.0.1:9780), unless [`Context::mirror_http`] overrides it.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::Serialize;
use strait_mirror::config::{MirrorConfig, HTTP_DEFAULT};
use strait_mirror::metrics::{FlowStatus, Status};

use crate::playbook::{Planned, Value};

/// How long one site or mirror request may take.
pub const REQUEST_TIMEOUT_MS: u64 = 5_000;
/// How often a wait polls the mirror.
const POLL_INTERVAL_MS: u64 = 200;
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
    /// Records on the source not yet on the target.
    pub lag_records: Option<i64>,
    /// Age of the oldest record not yet on the target.
    pub lag_seconds: Option<f64>,
}

/// What an action found or did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// One line for the report.
    pub detail: String,
    /// Partitions, for actions that look at lag.
    pub partitions: Vec<PartitionLag>,
}

fn text<'a>(p: &'a Planned, name: &str) -> &'a str {
    match p.args.get(name) {
        Some(Value::String(s)) => s,
        _ => "",
    }
}

fn wait_ms(p: &Planned) -> u64 {
    match p.args.get("wait_ms") {
        Some(Value::Integer(ms)) => u64::try_from(*ms).unwrap_or(0),
        _ => WAIT_DEFAULT_MS,
    }
}

fn mirror_config(p: &Planned) -> Result<MirrorConfig, ActionError> {
    let path = text(p, "mirror_config");
    MirrorConfig::load(Path::new(path)).map_err(|e| ActionError::Failed(e.to_string()))
}

fn cluster_of<'c>(
    config: &'c MirrorConfig,
    site: &str,
) -> Result<&'c strait_mirror::config::ClusterConfig, ActionError> {
    config.clusters.get(site).ok_or_else(|| {
        let known: Vec<&str> = config.clusters.keys().map(String::as_str).collect();
        ActionError::Failed(format!(
            "no site `{site}` in the mirror config (its sites: {})",
            known.join(", ")
        ))
    })
}

fn flow_of<'s>(status: &'s Status, flow: &str) -> Result<&'s FlowStatus, ActionError> {
    status.flows.iter().find(|f| f.name == flow).ok_or_else(|| {
        let known: Vec<&str> = status.flows.iter().map(|f| f.name.as_str()).collect();
        ActionError::Failed(format!(
            "the running mirror has no flow `{flow}` (its flows: {})",
            known.join(", ")
        ))
    })
}

/// The running mirror's HTTP address, after checking that its config has the flow.
fn mirror_addr(p: &Planned, ctx: &Context) -> Result<SocketAddr, ActionError> {
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

async fn mirror_status(addr: SocketAddr) -> Result<Status, ActionError> {
    strait_mirror::http::fetch_status(addr, Duration::from_millis(REQUEST_TIMEOUT_MS))
        .await
        .map_err(|e| ActionError::Failed(e.to_string()))
}

fn lags(flow: &FlowStatus) -> Vec<PartitionLag> {
    flow.topics
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| PartitionLag {
            topic: p.topic.clone(),
            partition: p.partition,
            source_end_offset: p.source_end_offset,
            mirrored_offset: p.mirrored_offset,
            lag_records: p.lag_records,
            lag_seconds: p.lag_seconds,
        })
        .collect()
}

/// Whether any of `addrs` accepts a TCP connection within `timeout`.
fn answering(addrs: &str, timeout: Duration) -> Option<String> {
    for hostport in addrs.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Ok(resolved) = hostport.to_socket_addrs() else {
            continue;
        };
        for addr in resolved {
            if TcpStream::connect_timeout(&addr, timeout).is_ok() {
                return Some(hostport.to_string());
            }
        }
    }
    None
}

/// Runs a read-only action. Anything else is [`ActionError::NotExecutable`].
pub async fn execute(p: &Planned, ctx: &Context) -> Result<Outcome, ActionError> {
    let name = p.action.name;
    match name {
        "site_healthy" => {
            let config = mirror_config(p)?;
            let site = text(p, "site").to_string();
            let cluster = cluster_of(&config, &site)?.clone();
            tokio::task::spawn_blocking(move || site_healthy(&site, &cluster))
                .await
                .map_err(|e| ActionError::Failed(format!("site check panicked: {e}")))?
        }
        "site_unreachable" => {
            let config = mirror_config(p)?;
            let site = text(p, "site").to_string();
            let servers = cluster_of(&config, &site)?.bootstrap_servers.clone();
            let wait = Duration::from_millis(wait_ms(p));
            tokio::task::spawn_blocking(move || {
                let deadline = Instant::now() + wait;
                loop {
                    if let Some(node) = answering(&servers, Duration::from_millis(500)) {
                        return Err(ActionError::Failed(format!(
                            "site `{site}` is reachable ({node} accepts connections): a forced failover now would leave two sites taking writes; use the planned failover"
                        )));
                    }
                    if Instant::now() >= deadline {
                        return Ok(Outcome {
                            detail: format!(
                                "no node of site `{site}` ({servers}) answered for {} ms",
                                wait.as_millis()
                            ),
                            partitions: Vec::new(),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(POLL_INTERVAL_MS));
                }
            })
            .await
            .map_err(|e| ActionError::Failed(format!("site check panicked: {e}")))?
        }
        "flow_running" => {
            let status = mirror_status(mirror_addr(p, ctx)?).await?;
            let flow = flow_of(&status, text(p, "flow"))?;
            let partitions = lags(flow);
            let held = partitions.len();
            let not_held: Vec<String> = flow
                .topics
                .iter()
                .flat_map(|t| &t.partitions)
                .filter(|p| !p.assigned)
                .map(|p| format!("{}/{}", p.topic, p.partition))
                .collect();
            if flow.topics.is_empty() {
                return Err(ActionError::Failed(format!(
                    "flow `{}` runs but mirrors no topic yet",
                    flow.name
                )));
            }
            if !not_held.is_empty() {
                return Err(ActionError::Failed(format!(
                    "flow `{}`: this mirror does not hold {} (another daemon, or a rebalance in progress)",
                    flow.name,
                    not_held.join(", ")
                )));
            }
            Ok(Outcome {
                detail: format!(
                    "flow `{}` runs: {} topics, {held} partitions held",
                    flow.name,
                    flow.topics.len()
                ),
                partitions,
            })
        }
        "predict_loss" | "record_rpo" => {
            let status = mirror_status(mirror_addr(p, ctx)?).await?;
            let flow = flow_of(&status, text(p, "flow"))?;
            let partitions = lags(flow);
            let records: i64 = partitions.iter().filter_map(|l| l.lag_records).sum();
            let seconds = partitions
                .iter()
                .filter_map(|l| l.lag_seconds)
                .fold(0.0f64, f64::max);
            let unknown = partitions
                .iter()
                .filter(|l| l.lag_records.is_none())
                .count();
            let mut detail = format!(
                "{records} records on the source not yet on the target, the oldest {seconds:.1} s old"
            );
            if unknown > 0 {
                detail.push_str(&format!(
                    "; {unknown} partitions without a known source end"
                ));
            }
            Ok(Outcome { detail, partitions })
        }
        "wait_for_zero_lag" => {
            let addr = mirror_addr(p, ctx)?;
            let wait = Duration::from_millis(wait_ms(p));
            let deadline = Instant::now() + wait;
            loop {
                let status = mirror_status(addr).await?;
                let flow = flow_of(&status, text(p, "flow"))?;
                let partitions = lags(flow);
                let behind: Vec<String> = partitions
                    .iter()
                    .filter(|l| l.lag_records != Some(0))
                    .map(|l| {
                        format!(
                            "{}/{} ({})",
                            l.topic,
                            l.partition,
                            l.lag_records
                                .map_or("unknown".to_string(), |r| r.to_string())
                        )
                    })
                    .collect();
                if behind.is_empty() && !partitions.is_empty() {
                    return Ok(Outcome {
                        detail: format!("all {} partitions at lag 0", partitions.len()),
                        partitions,
                    });
                }
                if Instant::now() >= deadline {
                    return Err(ActionError::Failed(format!(
                        "lag not 0 after {} ms: {}",
                        wait.as_millis(),
                        if behind.is_empty() {
                            "no partitions yet".to_string()
                        } else {
                            behind.join(", ")
                        }
                    )));
                }
                tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
            }
        }
        _ => Err(ActionError::NotExecutable(name)),
    }
}

fn site_healthy(
    site: &str,
    cluster: &strait_mirror::config::ClusterConfig,
) -> Result<Outcome, ActionError> {
    let client: BaseConsumer = strait_mirror::clients::client_config(cluster, &[])
        .create()
        .map_err(|e| ActionError::Failed(format!("site `{site}`: creating a client: {e}")))?;
    let metadata = client
        .fetch_metadata(None, Duration::from_millis(REQUEST_TIMEOUT_MS))
        .map_err(|e| ActionError::Failed(format!("site `{site}` does not answer: {e}")))?;
    let timeout = Duration::from_millis(REQUEST_TIMEOUT_MS);
    let mut silent = Vec::new();
    for b in metadata.brokers() {
        let addr = format!("{}:{}", b.host(), b.port());
        if answering(&addr, timeout).is_none() {
            silent.push(format!("node {} ({addr})", b.id()));
        }
    }
    if !silent.is_empty() {
        return Err(ActionError::Failed(format!(
            "site `{site}`: {} do(es) not answer",
            silent.join(", ")
        )));
    }
    let mut leaderless: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    let mut partitions = 0usize;
    for t in metadata.topics() {
        for p in t.partitions() {
            partitions += 1;
            if p.leader() < 0 {
                leaderless
                    .entry(t.name().to_string())
                    .or_default()
                    .push(p.id());
            }
        }
    }
    if !leaderless.is_empty() {
        let list: Vec<String> = leaderless
            .iter()
            .map(|(t, ps)| format!("{t} {ps:?}"))
            .collect();
        return Err(ActionError::Failed(format!(
            "site `{site}`: partitions without a leader: {}",
            list.join("; ")
        )));
    }
    Ok(Outcome {
        detail: format!(
            "site `{site}`: {} node(s) answer; all {partitions} partitions of {} topics have a leader",
            metadata.brokers().len(),
            metadata.topics().len()
        ),
        partitions: Vec::new(),
    })
}
