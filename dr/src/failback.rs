//! Executors of the failback's actions: after a forced failover, the old source (site a)
//! comes back holding a divergent tail (records it took that the mirror never copied), and
//! the target (site b) has taken new records in its mirror topics. The failback restores
//! the old source to exactly what the target holds, offset for offset, so that the flow can
//! resume from it and consumers find every record where the target had it:
//!
//! 1. `predict_divergence` (read-only; the dry run's prediction): per partition, the
//!    divergent tail `[cursor.source_next, a's end)` and the target's outage records
//!    `[cursor.target_next, b's end)`. The flow must be stopped (its index cursors come
//!    from the running mirror, `POST /flows/F/cursors`).
//! 2. `archive_divergent_tail`: the tail, one JSON line per record (offset, timestamp, key,
//!    value and headers in hex) in `<archive_dir>/<flow>/<topic>-<partition>-<from>-<to>.jsonl`,
//!    with a `.sha256` beside it (`sha256sum -c` reads it): the truncation ledger.
//! 3. `truncate_divergent_tail`: `strait.truncate.tail` at the cursor on each partition with
//!    a tail (site a must be fenced with no writer), read back until a's end is at or before
//!    it (whole batches go, so it may end earlier).
//! 4. `restore_from_target`: b's records from the one matching a's new end to b's end,
//!    written to a by a producer that alone may write there, at exactly the offsets the
//!    index expects (checked per record); the mirror's own headers are removed from the
//!    copies of a's records, and a record past the cursor that carries the flow's header
//!    (an index behind its topic) stops the step. Then `POST /flows/F/adopt`: the flow's
//!    index records the restored stretch as mirrored, so the flow resumes past it.
//! 5. `commit_back_offsets`: `POST /flows/F/commit-back`, every group's offsets on b
//!    translated back and committed on a, then checked.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use sha2::{Digest, Sha256};
use strait_mirror::clients::{parse_source_header, ORIGIN_HEADER, SOURCE_HEADER};
use strait_mirror::config::{ClusterConfig, FlowConfig};
use strait_mirror::failback::BackCommit;

use crate::outcome::{
    checks_of, cluster_of, flow_config, mirror_addr, mirror_commits, mirror_config, text,
    ActionError, Committed, Context, Outcome, TailReport, CONTROL_REQUEST_TIMEOUT_MS,
    POLL_INTERVAL_MS, REQUEST_TIMEOUT_MS,
};
use crate::playbook::Planned;

/// How long reading a partition range may go without a record before it gives up.
const READ_IDLE_MS: u64 = 15_000;
/// Records the restore may have sent and not yet seen acknowledged...
const RESTORE_IN_FLIGHT_MAX: usize = 1_000;
/// ...and their bytes (key and value).
const RESTORE_IN_FLIGHT_BYTES_MAX: usize = 16 << 20;
/// Records read from the target ahead of the restore's producer.
const RESTORE_READ_AHEAD: usize = 64;
/// How long the old source may take to show a truncation.
const TRUNCATE_WAIT_MS: u64 = 30_000;
/// The client id of the restore's producer, which alone may write to the old source's
/// topics while it runs.
pub fn restorer_client_id(flow: &FlowConfig) -> String {
    format!("strait-failback-{}", flow.name)
}

/// One partition's positions, as the failback sees them.
#[derive(Debug, Clone)]
struct Divergence {
    topic: String,
    partition: i32,
    remote_topic: String,
    /// The flow's cursor: the first source offset it never copied...
    source_next: i64,
    /// ...and the target offset after its last copy.
    target_next: i64,
    /// The old source's end now.
    source_end: i64,
    /// The target's end now.
    target_end: i64,
}

impl Divergence {
    fn tail(&self) -> TailReport {
        TailReport {
            topic: self.topic.clone(),
            partition: self.partition,
            divergent_from: self.source_next,
            divergent_to: self.source_end.max(self.source_next),
            divergent_records: (self.source_end - self.source_next).max(0),
            file: None,
            sha256: None,
            target_records: (self.target_end - self.target_next).max(0),
        }
    }
}

fn failed(what: impl std::fmt::Display) -> ActionError {
    ActionError::Failed(what.to_string())
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ActionError> + Send + 'static,
) -> Result<T, ActionError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| failed(format!("a blocking step panicked: {e}")))?
}

fn consumer(cluster: &ClusterConfig) -> Result<BaseConsumer, ActionError> {
    strait_mirror::clients::client_config(
        cluster,
        &[
            ("group.id", "strait-failback-reader"),
            ("enable.auto.commit", "false"),
            ("enable.partition.eof", "true"),
            ("auto.offset.reset", "error"),
            // Every record, transactional or not: an archive must not stop at an open
            // transaction left by a producer that died with its site.
            ("isolation.level", "read_uncommitted"),
        ],
    )
    .create()
    .map_err(|e| failed(format!("creating a client: {e}")))
}

fn end_of(client: &BaseConsumer, topic: &str, partition: i32) -> Result<i64, ActionError> {
    client
        .fetch_watermarks(topic, partition, Duration::from_millis(REQUEST_TIMEOUT_MS))
        .map(|(_, high)| high)
        .map_err(|e| failed(format!("the end of {topic}/{partition}: {e}")))
}

/// The flow's cursors from the running mirror (the flow must be stopped), with both sites'
/// ends.
async fn divergences(
    p: &Planned,
    ctx: &Context,
) -> Result<(FlowConfig, ClusterConfig, ClusterConfig, Vec<Divergence>), ActionError> {
    let config = mirror_config(p)?;
    let flow = flow_config(&config, text(p, "flow"))?.clone();
    let source = cluster_of(&config, &flow.source)?.clone();
    let target = cluster_of(&config, &flow.target)?.clone();
    let addr = mirror_addr(p, ctx)?;
    let answer = strait_mirror::http::post_control(
        addr,
        &flow.name,
        "cursors",
        Duration::from_millis(CONTROL_REQUEST_TIMEOUT_MS),
    )
    .await
    .map_err(|e| failed(format!("the cursors of flow `{}`: {e}", flow.name)))?;
    let rows = answer["cursors"]
        .as_array()
        .ok_or_else(|| failed("the mirror's cursors answer has no `cursors`"))?;
    let mut cursors = Vec::with_capacity(rows.len());
    for row in rows {
        let (Some(topic), Some(partition), Some(source_next), Some(target_next)) = (
            row["topic"].as_str(),
            row["partition"]
                .as_i64()
                .and_then(|p| i32::try_from(p).ok()),
            row["source_next"].as_i64(),
            row["target_next"].as_i64(),
        ) else {
            return Err(failed(format!("a malformed cursor from the mirror: {row}")));
        };
        cursors.push((topic.to_string(), partition, source_next, target_next));
    }
    let (s, t, f) = (source.clone(), target.clone(), flow.clone());
    let found = blocking(move || {
        let on_source = consumer(&s)?;
        let on_target = consumer(&t)?;
        let found = cursors
            .iter()
            .map(|(topic, partition, source_next, target_next)| {
                let remote_topic = f.remote_topic(topic);
                Ok(Divergence {
                    source_end: end_of(&on_source, topic, *partition)?,
                    target_end: end_of(&on_target, &remote_topic, *partition)?,
                    topic: topic.clone(),
                    partition: *partition,
                    remote_topic,
                    source_next: *source_next,
                    target_next: *target_next,
                })
            })
            .collect::<Result<Vec<_>, ActionError>>()?;
        refuse_unindexed(&f, &on_source, &on_target, &found)?;
        for d in found.iter().filter(|d| d.target_end > d.target_next) {
            refuse_index_behind(&f, &t, d)?;
        }
        Ok(found)
    })
    .await?;
    Ok((flow, source, target, found))
}

/// Refuses a mirror topic partition that holds records on either site while the flow's index
/// has no cursor for it (the pump starts a cursor with a partition's first record): the
/// failback could neither place its records nor translate its groups.
fn refuse_unindexed(
    flow: &FlowConfig,
    on_source: &BaseConsumer,
    on_target: &BaseConsumer,
    found: &[Divergence],
) -> Result<(), ActionError> {
    let metadata = on_target
        .fetch_metadata(None, Duration::from_millis(REQUEST_TIMEOUT_MS))
        .map_err(|e| failed(format!("listing the topics of `{}`: {e}", flow.target)))?;
    let mut unindexed = Vec::new();
    for t in metadata.topics() {
        let Some(topic) = flow
            .source_topic_of(t.name())
            .filter(|s| flow.mirrors_topic(s))
        else {
            continue;
        };
        for p in t.partitions() {
            if found
                .iter()
                .any(|d| d.topic == topic && d.partition == p.id())
            {
                continue;
            }
            let on_b = end_of(on_target, t.name(), p.id())?;
            let on_a = end_of(on_source, &topic, p.id()).unwrap_or(0);
            if on_a > 0 || on_b > 0 {
                unindexed.push(format!(
                    "{topic}/{} ({on_a} on `{}`, {on_b} on `{}`)",
                    p.id(),
                    flow.source,
                    flow.target
                ));
            }
        }
    }
    if unindexed.is_empty() {
        return Ok(());
    }
    Err(failed(format!(
        "the flow's index has no position for {}: records there cannot be placed exactly; nothing was changed",
        unindexed.join(", ")
    )))
}

/// Refuses a partition whose first record past the flow's cursor on the target is the flow's
/// own copy: a pump that died between writing to the target and recording it. The index
/// would place the restore wrongly; found before anything is cut.
fn refuse_index_behind(
    flow: &FlowConfig,
    target: &ClusterConfig,
    d: &Divergence,
) -> Result<(), ActionError> {
    let mut first: Option<i64> = None;
    read_range(
        target,
        &d.remote_topic,
        d.partition,
        d.target_next,
        d.target_next + 1,
        |m| {
            first = m
                .headers()
                .and_then(|hs| {
                    hs.iter()
                        .filter(|h| h.key == SOURCE_HEADER)
                        .last()
                        .and_then(|h| h.value)
                })
                .and_then(|v| parse_source_header(&flow.name, v));
            Ok(())
        },
    )?;
    match first {
        Some(s) => Err(failed(format!(
            "{}/{} offset {} on `{}` is the flow's copy of source offset {s}, past the index's cursor ({}, {}): the mirror stopped between copying and recording; nothing was changed",
            d.remote_topic, d.partition, d.target_next, flow.target, d.source_next, d.target_next
        ))),
        None => Ok(()),
    }
}

/// Reads `topic/partition` from `from` until `to` (exclusive), handing every record to
/// `each`; an error unless the reader got to `to` (gaps of offsets without a record, such as
/// transaction markers, are passed over).
fn read_range(
    cluster: &ClusterConfig,
    topic: &str,
    partition: i32,
    from: i64,
    to: i64,
    mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>) -> Result<(), ActionError>,
) -> Result<(), ActionError> {
    if from >= to {
        return Ok(());
    }
    let client = consumer(cluster)?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from))
        .map_err(|e| failed(format!("assigning {topic}/{partition}: {e}")))?;
    client
        .assign(&tpl)
        .map_err(|e| failed(format!("assigning {topic}/{partition}: {e}")))?;
    let mut next = from;
    let mut last_progress = Instant::now();
    while next < to {
        match client.poll(Duration::from_millis(POLL_INTERVAL_MS)) {
            None => {}
            Some(Ok(m)) => {
                next = m.offset() + 1;
                last_progress = Instant::now();
                if m.offset() < to {
                    each(&m)?;
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => {
                // At the partition's end: where it is, past records or markers.
                let position = client
                    .position()
                    .ok()
                    .and_then(|tpl| {
                        tpl.find_partition(topic, partition)
                            .and_then(|e| match e.offset() {
                                Offset::Offset(o) => Some(o),
                                _ => None,
                            })
                    })
                    .unwrap_or(next);
                next = next.max(position);
                if next < to {
                    return Err(failed(format!(
                        "reading {topic}/{partition}: the partition ends at {next}, before {to}"
                    )));
                }
            }
            Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::BrokerTransportFailure))) => {
            }
            Some(Err(e)) => {
                return Err(failed(format!(
                    "reading {topic}/{partition} at {next}: {e}"
                )))
            }
        }
        if last_progress.elapsed() > Duration::from_millis(READ_IDLE_MS) {
            return Err(failed(format!(
                "reading {topic}/{partition}: nothing after offset {next} for {READ_IDLE_MS} ms (wanted up to {to})"
            )));
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// The failback's read-only prediction: every partition's divergent tail and the records
/// the target took meanwhile.
pub async fn predict(p: &Planned, ctx: &Context) -> Result<Outcome, ActionError> {
    let (flow, _, _, found) = divergences(p, ctx).await?;
    let tails: Vec<TailReport> = found.iter().map(Divergence::tail).collect();
    let tail: i64 = tails.iter().map(|t| t.divergent_records).sum();
    let outage: i64 = tails.iter().map(|t| t.target_records).sum();
    Ok(Outcome {
        detail: format!(
            "flow `{}`: {tail} records on {} past what was mirrored (to archive and cut), {outage} records taken by {} meanwhile (to restore), over {} partitions",
            flow.name,
            flow.source,
            flow.target,
            tails.len()
        ),
        tails,
        ..Outcome::default()
    })
}

/// Writes each partition's divergent tail to its archive file, with a sha256 beside it.
pub async fn archive(p: &Planned, ctx: &Context) -> Result<Outcome, ActionError> {
    let (flow, source, _, found) = divergences(p, ctx).await?;
    let dir = PathBuf::from(text(p, "archive_dir")).join(&flow.name);
    let work_dir = dir.clone();
    let tails = blocking(move || {
        std::fs::create_dir_all(&work_dir)
            .map_err(|e| failed(format!("creating {}: {e}", work_dir.display())))?;
        let mut tails = Vec::new();
        for d in found {
            let mut tail = d.tail();
            if tail.divergent_to > tail.divergent_from {
                let (file, sha256, records) = archive_one(&source, &d, &work_dir)?;
                tail.file = Some(file.display().to_string());
                tail.sha256 = Some(sha256);
                tail.divergent_records = records;
            }
            tails.push(tail);
        }
        Ok(tails)
    })
    .await?;
    let archived: Vec<&TailReport> = tails.iter().filter(|t| t.file.is_some()).collect();
    let records: i64 = archived.iter().map(|t| t.divergent_records).sum();
    Ok(Outcome {
        detail: format!(
            "{records} records of {} partitions archived under {} (each file with its .sha256); {} partitions had no divergent tail",
            archived.len(),
            dir.display(),
            tails.len() - archived.len()
        ),
        tails,
        ..Outcome::default()
    })
}

/// The archive file of a partition's divergent tail `[from, to)`.
fn archive_name(d: &Divergence) -> String {
    format!(
        "{}-{}-{}-{}.jsonl",
        d.topic, d.partition, d.source_next, d.source_end
    )
}

fn archive_one(
    source: &ClusterConfig,
    d: &Divergence,
    dir: &Path,
) -> Result<(PathBuf, String, i64), ActionError> {
    let name = archive_name(d);
    let path = dir.join(&name);
    let tmp = dir.join(format!("{name}.tmp"));
    let io = |e: std::io::Error| failed(format!("writing {}: {e}", tmp.display()));
    let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io)?);
    let mut digest = Sha256::new();
    let mut records = 0i64;
    read_range(
        source,
        &d.topic,
        d.partition,
        d.source_next,
        d.source_end,
        |m| {
            let headers: Vec<serde_json::Value> = m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| serde_json::json!({ "key": h.key, "value": h.value.map(hex) }))
                        .collect()
                })
                .unwrap_or_default();
            let line = serde_json::json!({
                "offset": m.offset(),
                "timestamp_ms": m.timestamp().to_millis(),
                "key": m.key().map(hex),
                "value": m.payload().map(hex),
                "headers": headers,
            });
            let mut bytes = serde_json::to_vec(&line).map_err(|e| failed(e.to_string()))?;
            bytes.push(b'\n');
            digest.update(&bytes);
            out.write_all(&bytes).map_err(io)?;
            records += 1;
            Ok(())
        },
    )?;
    let file = out
        .into_inner()
        .map_err(|e| failed(format!("writing {}: {e}", tmp.display())))?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(io)?;
    let sha256 = hex(&digest.finalize());
    let sum = dir.join(format!("{name}.sha256"));
    std::fs::write(&sum, format!("{sha256}  {name}\n"))
        .map_err(|e| failed(format!("writing {}: {e}", sum.display())))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| failed(format!("syncing {}: {e}", dir.display())))?;
    Ok((path, sha256, records))
}

/// Cuts every partition of the old source with a divergent tail at the flow's cursor, each
/// only if its tail, exactly as it is now, was archived (a record the source took after the
/// archive would be cut without a trace).
pub async fn truncate(p: &Planned, ctx: &Context) -> Result<Outcome, ActionError> {
    let (flow, source, _, found) = divergences(p, ctx).await?;
    let dir = PathBuf::from(text(p, "archive_dir")).join(&flow.name);
    let unarchived: Vec<String> = found
        .iter()
        .filter(|d| d.source_end > d.source_next)
        .map(|d| dir.join(archive_name(d)))
        .filter(|f| !f.is_file() || !f.with_extension("jsonl.sha256").is_file())
        .map(|f| f.display().to_string())
        .collect();
    if !unarchived.is_empty() {
        return Err(failed(format!(
            "not cutting: no archive of the tail as it is now ({}); run the archive step again",
            unarchived.join(", ")
        )));
    }
    let mut by_topic: BTreeMap<String, Vec<(i32, i64)>> = BTreeMap::new();
    for d in found.iter().filter(|d| d.source_end > d.source_next) {
        by_topic
            .entry(d.topic.clone())
            .or_default()
            .push((d.partition, d.source_next));
    }
    if by_topic.is_empty() {
        return Ok(Outcome {
            detail: format!(
                "nothing to cut: no partition of {} holds a divergent tail",
                flow.source
            ),
            ..Outcome::default()
        });
    }
    let admin = strait_mirror::clients::admin(&source)
        .map_err(|e| failed(format!("site `{}`: {e}", flow.source)))?;
    for (topic, ends) in &by_topic {
        let value: Vec<String> = ends.iter().map(|(p, end)| format!("{p}:{end}")).collect();
        let joined = value.join(",");
        let alter =
            rdkafka::admin::AlterConfig::new(rdkafka::admin::ResourceSpecifier::Topic(topic))
                .set("strait.truncate.tail", &joined);
        let options = rdkafka::admin::AdminOptions::new()
            .request_timeout(Some(Duration::from_millis(REQUEST_TIMEOUT_MS)));
        let results = admin
            .alter_configs([&alter], &options)
            .await
            .map_err(|e| failed(format!("cutting {topic} on `{}`: {e}", flow.source)))?;
        match results.into_iter().next() {
            Some(Ok(_)) => {}
            Some(Err((_, code))) => {
                return Err(failed(format!(
                    "site `{}` refused to cut {topic} ({}): {code}",
                    flow.source,
                    value.join(",")
                )))
            }
            None => {
                return Err(failed(format!(
                    "site `{}` gave no answer for cutting {topic}",
                    flow.source
                )))
            }
        }
    }
    // The leaders cut when they apply the new epoch: read the ends back.
    let cuts: Vec<(String, i32, i64)> = by_topic
        .into_iter()
        .flat_map(|(t, ends)| ends.into_iter().map(move |(p, end)| (t.clone(), p, end)))
        .collect();
    let site = flow.source.clone();
    let lines = blocking(move || {
        let client = consumer(&source)?;
        let deadline = Instant::now() + Duration::from_millis(TRUNCATE_WAIT_MS);
        let mut lines = Vec::new();
        for (topic, partition, asked) in cuts {
            loop {
                let end = end_of(&client, &topic, partition)?;
                if end <= asked {
                    lines.push(format!("{topic}/{partition} at {end} (asked {asked})"));
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(failed(format!(
                        "site `{site}`: {topic}/{partition} still ends at {end} after {TRUNCATE_WAIT_MS} ms, not at or before {asked}"
                    )));
                }
                std::thread::sleep(Duration::from_millis(POLL_INTERVAL_MS));
            }
        }
        Ok(lines)
    })
    .await?;
    Ok(Outcome {
        detail: format!("site `{}` cut: {}", flow.source, lines.join(", ")),
        ..Outcome::default()
    })
}

/// What the restore of one partition must write: from which target offset, to which.
fn restore_range(d: &Divergence) -> Result<(i64, i64), String> {
    let outage = d.target_end - d.target_next;
    if outage < 0 {
        return Err(format!(
            "{}/{}: the target ends at {}, before the flow's cursor {}",
            d.remote_topic, d.partition, d.target_end, d.target_next
        ));
    }
    if d.source_end > d.source_next + outage {
        return Err(format!(
            "{}/{}: the old source ends at {}, past the cursor {} plus the {outage} records to restore: cut its divergent tail first",
            d.topic, d.partition, d.source_end, d.source_next
        ));
    }
    // Below the cursor: the batch holding the cursor was cut whole, so the copies of its
    // first records come back from the target. At or past it: an earlier, interrupted
    // restore already wrote that far (nobody else may write while it runs).
    let from = d.target_next - (d.source_next - d.source_end);
    if from < 0 {
        return Err(format!(
            "{}/{}: the old source ends at {}, further back than the target holds copies",
            d.topic, d.partition, d.source_end
        ));
    }
    Ok((from, d.target_end))
}

/// Copies what the target holds past each partition's new end on the old source, then
/// records it in the flow's index.
pub async fn restore(p: &Planned, ctx: &Context) -> Result<Outcome, ActionError> {
    let (flow, source, target, found) = divergences(p, ctx).await?;
    let admin = strait_mirror::clients::admin(&source)
        .map_err(|e| failed(format!("site `{}`: {e}", flow.source)))?;
    let topics: std::collections::BTreeSet<String> = found
        .iter()
        .filter(|d| d.target_end > d.target_next || d.source_end < d.source_next)
        .map(|d| d.topic.clone())
        .collect();
    let writer = format!("flow={},writer={}", flow.name, restorer_client_id(&flow));
    for t in &topics {
        strait_mirror::protection::set(&admin, t, Some(&writer))
            .await
            .map_err(|e| failed(format!("site `{}`: {e}", flow.source)))?;
    }
    let producer: FutureProducer = strait_mirror::clients::client_config(
        &source,
        &[
            ("client.id", &restorer_client_id(&flow)),
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "5"),
            ("message.timeout.ms", "30000"),
        ],
    )
    .create()
    .map_err(|e| failed(format!("creating the restore's producer: {e}")))?;
    let mut lines = Vec::new();
    let mut restored_total = 0i64;
    for d in &found {
        let (from, to) = restore_range(d).map_err(ActionError::Failed)?;
        if d.source_end > d.source_next {
            // Past the cursor, the source may hold only what an earlier attempt restored.
            check_restored(&flow, &source, &target, d).await?;
        }
        let copied = restore_one(&flow, &target, &producer, d, from, to).await?;
        restored_total += copied;
        if copied > 0 {
            lines.push(format!("{}/{}: {copied}", d.topic, d.partition));
        }
    }
    // Nobody writes to the old source again until the runbook opens it.
    let fence = strait_mirror::protection::fence_value(&flow);
    for t in &topics {
        strait_mirror::protection::set(&admin, t, Some(&fence))
            .await
            .map_err(|e| failed(format!("site `{}`: {e}", flow.source)))?;
    }
    // The flow's index learns the restored stretch past each cursor.
    let addr = mirror_addr(p, ctx)?;
    let mut adopted = 0i64;
    for d in found.iter().filter(|d| d.target_end > d.target_next) {
        let count = d.target_end - d.target_next;
        let action = format!(
            "adopt?topic={}&partition={}&source={}&target={}&count={count}",
            d.topic, d.partition, d.source_next, d.target_next
        );
        strait_mirror::http::post_control(
            addr,
            &flow.name,
            &action,
            Duration::from_millis(CONTROL_REQUEST_TIMEOUT_MS),
        )
        .await
        .map_err(|e| {
            failed(format!(
                "recording {}/{} in the flow's index: {e}",
                d.topic, d.partition
            ))
        })?;
        adopted += count;
    }
    Ok(Outcome {
        detail: format!(
            "{restored_total} records restored on `{}` from `{}` ({}), {adopted} of them recorded in the flow's index as mirrored",
            flow.source,
            flow.target,
            if lines.is_empty() { "none".to_string() } else { lines.join(", ") }
        ),
        ..Outcome::default()
    })
}

/// Records the restore has sent and not yet seen acknowledged: the delivery, the offset it
/// must land at, its bytes.
type Pending = std::collections::VecDeque<(rdkafka::producer::DeliveryFuture, i64, usize)>;

/// Waits for the oldest pending record and checks where it landed; false if none is pending.
async fn settle_oldest(
    d: &Divergence,
    pending: &mut Pending,
    pending_bytes: &mut usize,
) -> Result<bool, ActionError> {
    let Some((delivery, want, size)) = pending.pop_front() else {
        return Ok(false);
    };
    *pending_bytes -= size;
    let delivery = delivery
        .await
        .map_err(|_| failed("the restore's producer was dropped"))?;
    match delivery.map(|d| d.offset) {
        Ok(offset) if offset == want => Ok(true),
        Ok(offset) => Err(failed(format!(
            "{}/{}: a restored record landed at {offset}, not {want}: stop and compare the sites",
            d.topic, d.partition
        ))),
        Err((e, _)) => Err(failed(format!(
            "{}/{}: restoring the record for offset {want}: {e}",
            d.topic, d.partition
        ))),
    }
}

/// Copies `[from, to)` of a partition's mirror topic on the target to the old source, each
/// record at the offset the cursor says it belongs at.
async fn restore_one(
    flow: &FlowConfig,
    target: &ClusterConfig,
    producer: &FutureProducer,
    d: &Divergence,
    from: i64,
    to: i64,
) -> Result<i64, ActionError> {
    if from >= to {
        return Ok(0);
    }
    // Read on a blocking thread, send from here, in order, bounded.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Copy>(RESTORE_READ_AHEAD);
    let (target, d2, flow2) = (target.clone(), d.clone(), flow.clone());
    let reader = tokio::task::spawn_blocking(move || {
        let mut expected = from;
        read_range(&target, &d2.remote_topic, d2.partition, from, to, |m| {
            if m.offset() != expected {
                return Err(failed(format!(
                    "{}/{}: offset {} follows {} on the target: a gap cannot be restored one for one",
                    d2.remote_topic,
                    d2.partition,
                    m.offset(),
                    expected - 1
                )));
            }
            expected += 1;
            let copy = to_copy(&flow2, &d2, m)?;
            tx.blocking_send(copy)
                .map_err(|_| failed("the restore's writer stopped"))
        })?;
        if expected != to {
            return Err(failed(format!(
                "{}/{}: the target held records up to {expected}, not {to}",
                d2.remote_topic, d2.partition
            )));
        }
        Ok(())
    });
    let source_offset_of = |target_offset: i64| d.source_next - (d.target_next - target_offset);
    let mut pending = Pending::new();
    let mut pending_bytes = 0usize;
    let mut written = 0i64;
    while let Some(copy) = rx.recv().await {
        let want = source_offset_of(copy.target_offset);
        let bytes = copy.key.as_ref().map_or(0, Vec::len) + copy.value.as_ref().map_or(0, Vec::len);
        let delivery = loop {
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&d.topic)
                .partition(d.partition)
                .headers(copy.headers.clone());
            if let Some(k) = copy.key.as_deref() {
                record = record.key(k);
            }
            if let Some(v) = copy.value.as_deref() {
                record = record.payload(v);
            }
            if let Some(ts) = copy.timestamp_ms {
                record = record.timestamp(ts);
            }
            match producer.send_result(record) {
                Ok(delivery) => break delivery,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // The producer's own queue is full: wait for the oldest record, or a
                    // moment if none is ours.
                    if settle_oldest(d, &mut pending, &mut pending_bytes).await? {
                        written += 1;
                    } else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                Err((e, _)) => {
                    return Err(failed(format!(
                        "{}/{}: sending a restored record: {e}",
                        d.topic, d.partition
                    )))
                }
            }
        };
        pending.push_back((delivery, want, bytes));
        pending_bytes += bytes;
        while pending.len() >= RESTORE_IN_FLIGHT_MAX || pending_bytes > RESTORE_IN_FLIGHT_BYTES_MAX
        {
            settle_oldest(d, &mut pending, &mut pending_bytes).await?;
            written += 1;
        }
    }
    while settle_oldest(d, &mut pending, &mut pending_bytes).await? {
        written += 1;
    }
    reader
        .await
        .map_err(|e| failed(format!("the restore's reader panicked: {e}")))??;
    Ok(written)
}

/// A record's key, value and headers as one digest, to compare records across sites.
fn digest_of(m: &rdkafka::message::BorrowedMessage<'_>) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut field = |bytes: Option<&[u8]>| match bytes {
        Some(b) => {
            h.update((b.len() as u64).to_be_bytes());
            h.update(b);
        }
        None => h.update(u64::MAX.to_be_bytes()),
    };
    field(m.key());
    field(m.payload());
    if let Some(hs) = m.headers() {
        for x in hs.iter() {
            field(Some(x.key.as_bytes()));
            field(x.value);
        }
    }
    h.finalize().into()
}

/// Checks that what the old source holds past the cursor is what the target holds past it,
/// record for record: only an earlier attempt of the restore may have written there. Anything
/// else (a tail that came back through a leader change, a record placed wrongly) stops the
/// failback before it adds to it.
async fn check_restored(
    flow: &FlowConfig,
    source: &ClusterConfig,
    target: &ClusterConfig,
    d: &Divergence,
) -> Result<(), ActionError> {
    let (source, target, d, flow) = (source.clone(), target.clone(), d.clone(), flow.clone());
    blocking(move || {
        let count = d.source_end - d.source_next;
        let mut on_source = Vec::new();
        read_range(&source, &d.topic, d.partition, d.source_next, d.source_end, |m| {
            on_source.push(digest_of(m));
            Ok(())
        })?;
        let mut i = 0usize;
        let mut differs = None;
        read_range(
            &target,
            &d.remote_topic,
            d.partition,
            d.target_next,
            d.target_next + count,
            |m| {
                if differs.is_none() && on_source.get(i) != Some(&digest_of(m)) {
                    differs = Some(d.source_next + i as i64);
                }
                i += 1;
                Ok(())
            },
        )?;
        if differs.is_none() && i != on_source.len() {
            differs = Some(d.source_next + i.min(on_source.len()) as i64);
        }
        match differs {
            None => Ok(()),
            Some(at) => Err(failed(format!(
                "{}/{} on `{}` holds records past the flow's cursor {} that are not `{}`'s (first at {at}): not a restore of this failback (a tail that came back?); nothing more was written",
                d.topic, d.partition, flow.source, d.source_next, flow.target
            ))),
        }
    })
    .await
}

/// One record read from the target, ready to write to the old source.
struct Copy {
    target_offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    timestamp_ms: Option<i64>,
    headers: OwnedHeaders,
}

/// A target record as the old source must hold it: a copy the flow made (below the cursor)
/// loses the two headers the flow added; a record past the cursor must not be the flow's.
fn to_copy(
    flow: &FlowConfig,
    d: &Divergence,
    m: &rdkafka::message::BorrowedMessage<'_>,
) -> Result<Copy, ActionError> {
    let mut headers: Vec<(String, Option<Vec<u8>>)> = m
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default();
    let flows_source = headers
        .iter()
        .rev()
        .find(|(k, _)| k == SOURCE_HEADER)
        .and_then(|(_, v)| v.as_deref())
        .and_then(|v| parse_source_header(&flow.name, v));
    if m.offset() < d.target_next {
        let want = d.source_next - (d.target_next - m.offset());
        if flows_source != Some(want) {
            return Err(failed(format!(
                "{}/{} offset {}: expected the flow's copy of source offset {want}, found {:?}: the index and the target disagree",
                d.remote_topic,
                d.partition,
                m.offset(),
                flows_source
            )));
        }
        // The pump appends strait.source last, and strait.origin before it when the record
        // had none.
        if headers.last().is_some_and(|(k, _)| k == SOURCE_HEADER) {
            headers.pop();
        }
        let origins = headers.iter().filter(|(k, _)| k == ORIGIN_HEADER).count();
        if origins == 1
            && headers.last().is_some_and(|(k, v)| {
                k == ORIGIN_HEADER && v.as_deref() == Some(flow.source.as_bytes())
            })
        {
            headers.pop();
        }
    } else if let Some(s) = flows_source {
        return Err(failed(format!(
            "{}/{} offset {} is the flow's copy of source offset {s}, past the cursor {}: the mirror's index is behind its runs topic; start and stop the flow, then resume",
            d.remote_topic,
            d.partition,
            m.offset(),
            d.target_next
        )));
    }
    let mut owned = OwnedHeaders::new();
    for (k, v) in &headers {
        owned = owned.insert(Header {
            key: k,
            value: v.as_deref(),
        });
    }
    Ok(Copy {
        target_offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().map(<[u8]>::to_vec),
        timestamp_ms: m.timestamp().to_millis(),
        headers: owned,
    })
}

/// Commits every group's target offsets, translated back, on the old source, and checks them.
pub async fn commit_back(p: &Planned, ctx: &Context) -> Result<Outcome, ActionError> {
    let commits: Vec<BackCommit> =
        mirror_commits(p, ctx, "commit-back", "translation of the groups back").await?;
    // Seen from the failback, the target is where the groups come from.
    let (groups, skipped) = checks_of(
        commits
            .into_iter()
            .map(|c| Committed {
                group: c.group,
                topic: c.source_topic,
                partition: c.partition,
                from_offset: c.target_offset,
                translated_offset: c.translated_offset,
                holds: c.source_offset,
                skipped: c.skipped,
            })
            .collect(),
    );
    let unverified: Vec<String> = groups
        .iter()
        .filter(|g| !g.verified)
        .map(|g| {
            format!(
                "{} {}/{}: wanted {:?}, holds {:?}",
                g.group, g.topic, g.partition, g.translated_offset, g.target_offset
            )
        })
        .collect();
    if !skipped.is_empty() || !unverified.is_empty() {
        return Err(failed(format!(
            "group offsets not brought back: {}{}",
            skipped.join(", "),
            if unverified.is_empty() {
                String::new()
            } else {
                format!("; not as translated: {}", unverified.join(", "))
            }
        )));
    }
    let names: std::collections::BTreeSet<&str> = groups.iter().map(|g| g.group.as_str()).collect();
    Ok(Outcome {
        detail: format!(
            "{} offsets of {} groups translated back and committed on the old source, each read back",
            groups.len(),
            names.len()
        ),
        groups,
        ..Outcome::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(source_next: i64, target_next: i64, source_end: i64, target_end: i64) -> Divergence {
        Divergence {
            topic: "orders".into(),
            partition: 0,
            remote_topic: "a.orders".into(),
            source_next,
            target_next,
            source_end,
            target_end,
        }
    }

    #[test]
    fn the_restore_starts_where_the_old_source_ends_now() {
        // Cut exactly at the cursor: everything the target took since.
        assert_eq!(restore_range(&d(100, 120, 100, 160)), Ok((120, 160)));
        // The batch with the cursor went whole (ends at 95): its first five copies come back.
        assert_eq!(restore_range(&d(100, 120, 95, 160)), Ok((115, 160)));
        // An interrupted restore wrote 10: go on from there.
        assert_eq!(restore_range(&d(100, 120, 110, 160)), Ok((130, 160)));
        // Done: nothing left.
        assert_eq!(restore_range(&d(100, 120, 140, 160)), Ok((160, 160)));
        // Not cut (a tail past the cursor and what it could have restored): refused.
        assert!(restore_range(&d(100, 120, 150, 160))
            .unwrap_err()
            .contains("cut its divergent tail first"));
        // Cut back past the first copy the target holds (the flow started at target 20).
        assert!(restore_range(&d(100, 20, 10, 60))
            .unwrap_err()
            .contains("further back"));
        assert!(restore_range(&d(100, 120, 100, 110))
            .unwrap_err()
            .contains("before the flow's cursor"));
    }

    #[test]
    fn hex_is_lowercase_two_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(hex(&[]), "");
    }
}
