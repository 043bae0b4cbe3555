//! Executors of the actions: they look at the sites (Kafka metadata, TCP, committed group
//! offsets) and at the running mirror (its `/status`), and change the sites' write
//! protection (AlterConfigs of `strait.write.protection`) and the mirror's flows (its
//! control endpoints: stop, start, a checkpoint round now, a final commit of the last
//! checkpoints).
//!
//! Every check is bounded in time. The mirror's address is the config's `http` (or
//! 127.0.0.1:9780), unless [`Context::mirror_http`] overrides it.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::TopicPartitionList;
use strait_mirror::checkpoints::{FinalCommit, GroupTranslation};
use strait_mirror::metrics::{FlowStatus, Status};

use crate::outcome::{
    checks_of, cluster_of, flow_config, mirror_addr, mirror_commits, mirror_config, text,
    Committed, CONTROL_REQUEST_TIMEOUT_MS, POLL_INTERVAL_MS,
};
pub use crate::outcome::{
    ActionError, Context, GroupCheck, Outcome, PartitionLag, TailReport, REQUEST_TIMEOUT_MS,
    WAIT_DEFAULT_MS,
};
use crate::playbook::{Planned, Value};

fn wait_ms(p: &Planned) -> u64 {
    match p.args.get("wait_ms") {
        Some(Value::Integer(ms)) => u64::try_from(*ms).unwrap_or(0),
        _ => WAIT_DEFAULT_MS,
    }
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
            target_end_offset: None,
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

/// Runs an action; one without an executor is [`ActionError::NotExecutable`].
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
            let split_brain_accepted =
                matches!(p.args.get("accept_split_brain"), Some(Value::Boolean(true)));
            tokio::task::spawn_blocking(move || {
                let deadline = Instant::now() + wait;
                loop {
                    if let Some(node) = answering(&servers, Duration::from_millis(500)) {
                        if split_brain_accepted {
                            return Ok(Outcome {
                                detail: format!(
                                    "site `{site}` is reachable ({node} accepts connections); going on as asked (--allow-split-brain): stop every producer of site `{site}`, or both sites will take writes"
                                ),
                                ..Outcome::default()
                            });
                        }
                        return Err(ActionError::Failed(format!(
                            "site `{site}` is reachable ({node} accepts connections): a forced failover now would leave two sites taking writes; use the planned failover (or, if site `{site}` is up but unusable, --allow-split-brain with --yes)"
                        )));
                    }
                    if Instant::now() >= deadline {
                        return Ok(Outcome {
                            detail: format!(
                                "no node of site `{site}` ({servers}) answered for {} ms",
                                wait.as_millis()
                            ),
                            ..Outcome::default()
                        });
                    }
                    std::thread::sleep(Duration::from_millis(POLL_INTERVAL_MS));
                }
            })
            .await
            .map_err(|e| ActionError::Failed(format!("site check panicked: {e}")))?
        }
        "flow_running" => {
            let addr = mirror_addr(p, ctx)?;
            let wait = match p.args.get("wait_ms") {
                Some(Value::Integer(ms)) => Duration::from_millis(u64::try_from(*ms).unwrap_or(0)),
                _ => Duration::ZERO,
            };
            let deadline = Instant::now() + wait;
            let mut status = mirror_status(addr).await?;
            while Instant::now() < deadline
                && flow_of(&status, text(p, "flow"))?
                    .topics
                    .iter()
                    .flat_map(|t| &t.partitions)
                    .any(|p| !p.assigned)
            {
                tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
                status = mirror_status(addr).await?;
            }
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
                ..Outcome::default()
            })
        }
        "flow_stopped" => {
            let status = mirror_status(mirror_addr(p, ctx)?).await?;
            let flow = flow_of(&status, text(p, "flow"))?;
            if !flow.stopped {
                return Err(ActionError::Failed(format!(
                    "flow `{}` runs: a failback starts from a stopped flow (after a forced failover, or `POST /flows/{}/stop`)",
                    flow.name, flow.name
                )));
            }
            Ok(Outcome {
                detail: format!("flow `{}` is stopped", flow.name),
                ..Outcome::default()
            })
        }
        "predict_loss" | "record_rpo" => {
            let status = mirror_status(mirror_addr(p, ctx)?).await?;
            let flow = flow_of(&status, text(p, "flow"))?;
            let mut partitions = lags(flow);
            with_target_ends(p, &mut partitions).await;
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
            Ok(Outcome {
                detail,
                partitions,
                ..Outcome::default()
            })
        }
        "wait_for_zero_lag" => {
            let addr = mirror_addr(p, ctx)?;
            let config = mirror_config(p)?;
            let flow_name = text(p, "flow");
            let source = cluster_of(&config, &flow_config(&config, flow_name)?.source)?;
            // One client for the whole wait, not one per poll.
            let source: std::sync::Arc<BaseConsumer> = std::sync::Arc::new(
                strait_mirror::clients::client_config(source, &[])
                    .create()
                    .map_err(|e| ActionError::Failed(format!("creating a client: {e}")))?,
            );
            let wait = Duration::from_millis(wait_ms(p));
            let deadline = Instant::now() + wait;
            loop {
                let status = mirror_status(addr).await?;
                let flow = flow_of(&status, flow_name)?;
                let mut partitions = lags(flow);
                // The mirror learns the source's ends from its consumer's statistics, a
                // moment late; the source itself is asked, so that lag 0 means every record
                // the source holds now is on the target (after a fence, all it will hold).
                let source = source.clone();
                let asked: Vec<(String, i32)> = partitions
                    .iter()
                    .map(|l| (l.topic.clone(), l.partition))
                    .collect();
                let ends = tokio::task::spawn_blocking(move || source_ends(&source, &asked))
                    .await
                    .map_err(|e| {
                        ActionError::Failed(format!("reading the source's ends panicked: {e}"))
                    })??;
                for (l, end) in partitions.iter_mut().zip(ends) {
                    l.source_end_offset = Some(end);
                    // Nothing mirrored yet counts the whole partition as behind (none of it
                    // is on the target), which an empty partition is not.
                    l.lag_records = Some((end - l.mirrored_offset.unwrap_or(0)).max(0));
                    if l.lag_records == Some(0) {
                        l.lag_seconds = Some(0.0);
                    }
                }
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
                    with_target_ends(p, &mut partitions).await;
                    return Ok(Outcome {
                        detail: format!(
                            "all {} partitions at lag 0 against the source's own end offsets",
                            partitions.len()
                        ),
                        partitions,
                        ..Outcome::default()
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
        "stop_flow" | "start_flow" => {
            let addr = mirror_addr(p, ctx)?;
            let flow = text(p, "flow");
            let (action, there) = if name == "stop_flow" {
                ("stop", "stopped")
            } else {
                ("start", "running")
            };
            let deadline = Instant::now() + Duration::from_millis(wait_ms(p));
            loop {
                // Idempotent: asking again while the flow gets there is how one waits.
                let answer = strait_mirror::http::post_control(
                    addr,
                    flow,
                    action,
                    Duration::from_millis(CONTROL_REQUEST_TIMEOUT_MS),
                )
                .await
                .map_err(|e| ActionError::Failed(format!("{action} flow `{flow}`: {e}")))?;
                if answer["state"].as_str() == Some(there) {
                    return Ok(Outcome {
                        detail: format!("flow `{flow}` {there}"),
                        ..Outcome::default()
                    });
                }
                if Instant::now() >= deadline {
                    return Err(ActionError::Failed(format!(
                        "flow `{flow}` not {there} after {} ms (last state: {})",
                        wait_ms(p),
                        answer["state"]
                    )));
                }
            }
        }
        "predict_divergence" => crate::failback::predict(p, ctx).await,
        "archive_divergent_tail" => crate::failback::archive(p, ctx).await,
        "truncate_divergent_tail" => crate::failback::truncate(p, ctx).await,
        "restore_from_target" => crate::failback::restore(p, ctx).await,
        "commit_back_offsets" => crate::failback::commit_back(p, ctx).await,
        "fence_topics"
        | "unfence_topics"
        | "fence_mirror_topics"
        | "release_mirror_topics"
        | "protect_mirror_topics"
        | "topics_writable" => {
            let config = mirror_config(p)?;
            let flow = flow_config(&config, text(p, "flow"))?.clone();
            // The topics are listed from the site they are changed on, through the flow's
            // filter and naming, so the target-side actions work with the source gone (a
            // forced failover) and the mirror stopped.
            let site = match name {
                "fence_topics" | "unfence_topics" => text(p, "site").to_string(),
                _ => flow.target.clone(),
            };
            let cluster = cluster_of(&config, &site)?.clone();
            let names = tokio::task::spawn_blocking(move || site_topics(&cluster))
                .await
                .map_err(|e| ActionError::Failed(format!("listing topics panicked: {e}")))??;
            let (topics, value): (Vec<String>, Option<String>) = match name {
                "fence_topics" | "unfence_topics" => (
                    names
                        .into_iter()
                        .filter(|t| flow.mirrors_topic(t))
                        .collect(),
                    (name == "fence_topics").then(|| strait_mirror::protection::fence_value(&flow)),
                ),
                _ => (
                    names
                        .into_iter()
                        .filter(|t| {
                            flow.source_topic_of(t)
                                .is_some_and(|s| flow.mirrors_topic(&s))
                        })
                        .collect(),
                    match name {
                        "fence_mirror_topics" => {
                            Some(strait_mirror::protection::fence_value(&flow))
                        }
                        // Without protect_target_topics the flow's topics on the target take
                        // every writer: "protected again" is what the flow itself keeps.
                        "protect_mirror_topics" if flow.protect_target_topics => {
                            Some(strait_mirror::protection::replica_value(&flow))
                        }
                        _ => None,
                    },
                ),
            };
            let admin = strait_mirror::clients::admin(cluster_of(&config, &site)?)
                .map_err(|e| ActionError::Failed(format!("site `{site}`: {e}")))?;
            if name == "topics_writable" {
                let mut protected = Vec::new();
                for t in &topics {
                    if let Some(v) = strait_mirror::protection::get(&admin, t)
                        .await
                        .map_err(|e| ActionError::Failed(e.to_string()))?
                        .filter(|v| names_flow(v, &flow.name))
                    {
                        protected.push(format!("{t} ({v})"));
                    }
                }
                if !protected.is_empty() {
                    return Err(ActionError::Failed(format!(
                        "site `{site}`: still write-protected: {}",
                        protected.join(", ")
                    )));
                }
                return Ok(Outcome {
                    detail: format!(
                        "site `{site}`: all {} mirror topics of flow `{}` take writes",
                        topics.len(),
                        flow.name
                    ),
                    ..Outcome::default()
                });
            }
            let mut changed = 0usize;
            for t in &topics {
                let before = strait_mirror::protection::get(&admin, t)
                    .await
                    .map_err(|e| ActionError::Failed(format!("site `{site}`: {e}")))?;
                if value.is_none() && !before.as_deref().is_some_and(|v| names_flow(v, &flow.name))
                {
                    // Unprotected, or protected for another flow: not this run's to clear.
                    continue;
                }
                strait_mirror::protection::set(&admin, t, value.as_deref())
                    .await
                    .map_err(|e| ActionError::Failed(format!("site `{site}`: {e}")))?;
                changed += 1;
                // Read back until the site shows it (a broker other than strait refuses; a
                // node may answer from an image a moment behind the controller's).
                let deadline = Instant::now() + Duration::from_millis(READ_BACK_WAIT_MS);
                loop {
                    let now = strait_mirror::protection::get(&admin, t)
                        .await
                        .map_err(|e| ActionError::Failed(e.to_string()))?;
                    if now == value {
                        break;
                    }
                    if Instant::now() >= deadline {
                        return Err(ActionError::Failed(format!(
                            "site `{site}`: {t} reads back as {now:?}, not {value:?}"
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
                }
            }
            Ok(Outcome {
                detail: format!(
                    "site `{site}`: {changed} of {} topics {}",
                    topics.len(),
                    match &value {
                        Some(v) => format!("write-protected ({v})"),
                        None => "released (they take writes)".to_string(),
                    }
                ),
                ..Outcome::default()
            })
        }
        "source_groups_idle" => {
            let config = mirror_config(p)?;
            let flow = flow_config(&config, text(p, "flow"))?.clone();
            let site = match text(p, "site") {
                "" => flow.source.clone(),
                site => site.to_string(),
            };
            let source = cluster_of(&config, &site)?.clone();
            let wait = Duration::from_millis(wait_ms(p));
            tokio::task::spawn_blocking(move || {
                let client: BaseConsumer = strait_mirror::clients::client_config(&source, &[])
                    .create()
                    .map_err(|e| ActionError::Failed(format!("creating a client: {e}")))?;
                let deadline = Instant::now() + wait;
                loop {
                    let list = client
                        .fetch_group_list(None, Duration::from_millis(REQUEST_TIMEOUT_MS))
                        .map_err(|e| ActionError::Failed(format!("listing the groups of `{site}`: {e}")))?;
                    let groups: Vec<(String, usize)> = list
                        .groups()
                        .iter()
                        .filter(|g| flow.groups.matches(g.name()))
                        .map(|g| (g.name().to_string(), g.members().len()))
                        .collect();
                    let busy: Vec<String> = groups
                        .iter()
                        .filter(|(_, m)| *m > 0)
                        .map(|(g, m)| format!("{g} ({m} members)"))
                        .collect();
                    if busy.is_empty() {
                        return Ok(Outcome {
                            detail: format!(
                                "none of the {} groups the flow syncs has a member on `{site}`",
                                groups.len()
                            ),
                            ..Outcome::default()
                        });
                    }
                    if Instant::now() >= deadline {
                        return Err(ActionError::Failed(format!(
                            "consumers still run on `{site}` after {} ms: {}; stop them (what they read from now on would be read again after the switch)",
                            wait.as_millis(),
                            busy.join(", ")
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            })
            .await
            .map_err(|e| ActionError::Failed(format!("group check panicked: {e}")))?
        }
        "commit_last_translated_offsets" => {
            let commits: Vec<FinalCommit> =
                mirror_commits(p, ctx, "commit-checkpoints", "final commit").await?;
            let (groups, skipped) = checks_of(
                commits
                    .into_iter()
                    .map(|c| Committed {
                        group: c.group,
                        topic: c.source_topic,
                        partition: c.partition,
                        from_offset: c.source_offset,
                        translated_offset: c.translated_offset,
                        holds: c.target_offset,
                        skipped: c.skipped,
                    })
                    .collect(),
            );
            let names: std::collections::BTreeSet<&str> =
                groups.iter().map(|g| g.group.as_str()).collect();
            let mut detail = format!(
                "{} last translated offsets of {} groups on the target",
                groups.iter().filter(|g| g.verified).count(),
                names.len()
            );
            if !skipped.is_empty() {
                detail.push_str(&format!("; left as they are: {}", skipped.join(", ")));
            }
            Ok(Outcome {
                detail,
                groups,
                ..Outcome::default()
            })
        }
        "sync_group_offsets" | "verify_group_offsets" => {
            let addr = mirror_addr(p, ctx)?;
            let flow_name = text(p, "flow");
            let answer = strait_mirror::http::post_control(
                addr,
                flow_name,
                "checkpoint",
                Duration::from_millis(CONTROL_REQUEST_TIMEOUT_MS),
            )
            .await
            .map_err(|e| ActionError::Failed(format!("checkpoint of flow `{flow_name}`: {e}")))?;
            let translations: Vec<GroupTranslation> =
                serde_json::from_value(answer["translations"].clone()).map_err(|e| {
                    ActionError::Failed(format!("the mirror's checkpoint answer: {e}"))
                })?;
            let untranslated: Vec<String> = translations
                .iter()
                .filter(|t| t.translated_offset.is_none())
                .map(|t| {
                    format!(
                        "{} {}/{}@{}",
                        t.group, t.source_topic, t.partition, t.source_offset
                    )
                })
                .collect();
            if !untranslated.is_empty() {
                return Err(ActionError::Failed(format!(
                    "not mirrored as far as the group's offset: {}",
                    untranslated.join(", ")
                )));
            }
            if name == "sync_group_offsets" {
                let groups: std::collections::BTreeSet<&str> =
                    translations.iter().map(|t| t.group.as_str()).collect();
                return Ok(Outcome {
                    detail: format!(
                        "checkpointed and synced {} offsets of {} groups",
                        translations.len(),
                        groups.len()
                    ),
                    ..Outcome::default()
                });
            }
            let config = mirror_config(p)?;
            let flow = flow_config(&config, flow_name)?;
            let target = cluster_of(&config, &flow.target)?.clone();
            let checks = tokio::task::spawn_blocking(move || verify_groups(&target, translations))
                .await
                .map_err(|e| ActionError::Failed(format!("group check panicked: {e}")))??;
            let wrong: Vec<String> = checks
                .iter()
                .filter(|c| !c.verified)
                .map(|c| {
                    format!(
                        "{} {}/{}: target {:?}, translation {:?}",
                        c.group, c.topic, c.partition, c.target_offset, c.translated_offset
                    )
                })
                .collect();
            if !wrong.is_empty() {
                return Err(ActionError::Failed(format!(
                    "{} of {} group offsets on the target are not the translation: {}",
                    wrong.len(),
                    checks.len(),
                    wrong.join("; ")
                )));
            }
            Ok(Outcome {
                detail: format!(
                    "all {} group offsets on the target are the exact translations",
                    checks.len()
                ),
                groups: checks,
                ..Outcome::default()
            })
        }
        _ => Err(ActionError::NotExecutable(name)),
    }
}

/// Fills in each partition's end offset on the target, for the report; a target that does
/// not answer (a dry run with it gone) leaves them unknown.
async fn with_target_ends(p: &Planned, partitions: &mut [PartitionLag]) {
    let Ok(config) = mirror_config(p) else {
        return;
    };
    let Ok(flow) = flow_config(&config, text(p, "flow")).cloned() else {
        return;
    };
    let Ok(target) = cluster_of(&config, &flow.target).cloned() else {
        return;
    };
    let asked: Vec<(String, i32)> = partitions
        .iter()
        .map(|l| (flow.remote_topic(&l.topic), l.partition))
        .collect();
    let ends = tokio::task::spawn_blocking(move || {
        let client: Option<BaseConsumer> = strait_mirror::clients::client_config(&target, &[])
            .create()
            .ok();
        // One failure (the target gone) leaves the rest unknown rather than waiting for each.
        let mut answering = client.is_some();
        asked
            .iter()
            .map(|(t, p)| {
                let end = client.as_ref().filter(|_| answering).and_then(|c| {
                    c.fetch_watermarks(t, *p, Duration::from_millis(REQUEST_TIMEOUT_MS))
                        .ok()
                        .map(|(_, high)| high)
                });
                answering &= end.is_some();
                end
            })
            .collect::<Vec<Option<i64>>>()
    })
    .await
    .unwrap_or_default();
    for (l, end) in partitions.iter_mut().zip(ends) {
        l.target_end_offset = end;
    }
}

/// How long a changed write protection may take to read back.
const READ_BACK_WAIT_MS: u64 = 5_000;

/// Whether a write protection's value names `flow` (`flow=NAME[,writer=...]`).
fn names_flow(value: &str, flow: &str) -> bool {
    value
        .split(',')
        .any(|kv| kv.trim().strip_prefix("flow=") == Some(flow))
}

/// The high watermark of each of `partitions` on the source.
fn source_ends(
    client: &BaseConsumer,
    partitions: &[(String, i32)],
) -> Result<Vec<i64>, ActionError> {
    partitions
        .iter()
        .map(|(t, p)| {
            client
                .fetch_watermarks(t, *p, Duration::from_millis(REQUEST_TIMEOUT_MS))
                .map(|(_, high)| high)
                .map_err(|e| ActionError::Failed(format!("the source's end of {t}/{p}: {e}")))
        })
        .collect()
}

/// The topic names of a site.
fn site_topics(cluster: &strait_mirror::config::ClusterConfig) -> Result<Vec<String>, ActionError> {
    let client: BaseConsumer = strait_mirror::clients::client_config(cluster, &[])
        .create()
        .map_err(|e| ActionError::Failed(format!("creating a client: {e}")))?;
    let metadata = client
        .fetch_metadata(None, Duration::from_millis(REQUEST_TIMEOUT_MS))
        .map_err(|e| {
            ActionError::Failed(format!(
                "listing the topics of {}: {e}",
                cluster.bootstrap_servers
            ))
        })?;
    Ok(metadata
        .topics()
        .iter()
        .map(|t| t.name().to_string())
        .collect())
}

/// Reads each group's committed offsets on the target and compares them with the mirror's
/// translations of its offsets on the source.
fn verify_groups(
    target: &strait_mirror::config::ClusterConfig,
    translations: Vec<GroupTranslation>,
) -> Result<Vec<GroupCheck>, ActionError> {
    let mut by_group: BTreeMap<String, Vec<GroupTranslation>> = BTreeMap::new();
    for t in translations {
        by_group.entry(t.group.clone()).or_default().push(t);
    }
    let mut checks = Vec::new();
    for (group, list) in by_group {
        let client: BaseConsumer = strait_mirror::clients::client_config(
            target,
            &[("group.id", &group), ("enable.auto.commit", "false")],
        )
        .create()
        .map_err(|e| ActionError::Failed(format!("creating a client for group {group}: {e}")))?;
        let mut tpl = TopicPartitionList::new();
        for t in &list {
            tpl.add_partition(&t.topic, t.partition);
        }
        let committed = client
            .committed_offsets(tpl, Duration::from_millis(REQUEST_TIMEOUT_MS))
            .map_err(|e| {
                ActionError::Failed(format!(
                    "reading group {group}'s offsets on the target: {e}"
                ))
            })?;
        for t in list {
            let target_offset =
                committed
                    .find_partition(&t.topic, t.partition)
                    .and_then(|e| match e.offset() {
                        rdkafka::Offset::Offset(o) => Some(o),
                        _ => None,
                    });
            checks.push(GroupCheck {
                verified: target_offset.is_some() && target_offset == t.translated_offset,
                group: t.group,
                topic: t.source_topic,
                partition: t.partition,
                source_offset: t.source_offset,
                translated_offset: t.translated_offset,
                target_offset,
            });
        }
    }
    Ok(checks)
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
        ..Outcome::default()
    })
}
