//! `strait bench groups`: how long `strait mirror` takes to sync many consumer groups, and
//! what they cost the daemon, between two local three-node sites.
//!
//! The flow's topic is mirrored first and a checkpoint round runs with no group; the daemon's
//! threads and RSS are read then. Then `groups` groups commit an offset on every partition of
//! the source at once, and the clock runs until a completed round covers all of them; the
//! figure is set against two checkpoint intervals (a group committed just after a round
//! starts waits for the next one, so two intervals is the bound a user can count on). Every
//! group's offsets on the target are then read and must be the exact translation. The
//! daemon's threads and RSS are read again, and set against what one librdkafka client per
//! group would cost, measured in this process on a sample of clients.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

use super::mirror::{consumer, spawn_mirror_logged, NODE_YAML};
use super::replication::{create_topic, start_cluster};

/// How long the backlog and the first round may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(300);
/// Clients created in this process to measure what one client per group would cost.
const SAMPLE_CLIENTS: usize = 50;
/// Records produced to each partition.
const RECORDS_PER_PARTITION: u64 = 1_000;

/// Options of `strait bench groups`.
#[derive(Debug, Clone, clap::Args)]
pub struct GroupsBenchArgs {
    /// Consumer groups, each with an offset on every partition.
    #[arg(long, default_value_t = 5_000)]
    pub groups: usize,
    /// Partitions of the mirrored topic.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// The flow's `checkpoint_interval_ms`.
    #[arg(long, default_value_t = 10_000)]
    pub checkpoint_interval_ms: u64,
    /// Directory for both sites' data and the mirror's index (default: a fresh temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// A line of `/proc/PID/status` (`Threads`, `VmRSS` in KiB), as its number.
fn proc_status(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// The offset group `g` commits on partition `p` (all below the records produced).
fn offset_of(g: usize, p: i32) -> i64 {
    ((g * 7 + p as usize * 13) % RECORDS_PER_PARTITION as usize) as i64
}

fn group_name(g: usize) -> String {
    format!("bench-groups-{g}")
}

/// Threads and RSS (KiB) of this process before and after `SAMPLE_CLIENTS` group clients
/// connected to `bootstrap`, per client.
fn cost_per_client(bootstrap: &str) -> anyhow::Result<(f64, f64)> {
    let me = std::process::id();
    let (threads_0, rss_0) = (proc_status(me, "Threads")?, proc_status(me, "VmRSS")?);
    let mut clients = Vec::with_capacity(SAMPLE_CLIENTS);
    for g in 0..SAMPLE_CLIENTS {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", format!("bench-groups-sample-{g}"))
            .set("enable.auto.commit", "false")
            .create()
            .context("creating a sample group client")?;
        // Reading the group's offsets connects the client, as a sync would.
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition("bench-groups", 0);
        c.committed_offsets(tpl, Duration::from_secs(10))
            .context("a sample client reading its offsets")?;
        clients.push(c);
    }
    let (threads_1, rss_1) = (proc_status(me, "Threads")?, proc_status(me, "VmRSS")?);
    drop(clients);
    let n = SAMPLE_CLIENTS as f64;
    Ok((
        (threads_1.saturating_sub(threads_0)) as f64 / n,
        (rss_1.saturating_sub(rss_0)) as f64 / n,
    ))
}

/// `RECORDS_PER_PARTITION` records of 100 bytes on every partition of `bench-groups`.
fn produce_even(bootstrap: &str, partitions: i32) -> anyhow::Result<()> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .context("creating the producer")?;
    let value = [b'g'; 100];
    for p in 0..partitions {
        for _ in 0..RECORDS_PER_PARTITION {
            let mut record = BaseRecord::<[u8], [u8]>::to("bench-groups")
                .partition(p)
                .payload(&value[..]);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((e, r)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                        record = r;
                        producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => return Err(e).context("producing to site a"),
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .context("flushing the producer")?;
    Ok(())
}

/// Runs `strait bench groups` and prints its figures.
pub async fn groups(args: GroupsBenchArgs) -> anyhow::Result<()> {
    if args.groups == 0 || !(1..=100).contains(&args.partitions) {
        bail!("--groups must be positive and --partitions between 1 and 100");
    }
    if args.checkpoint_interval_ms < 100 {
        bail!("--checkpoint-interval-ms must be at least 100");
    }
    let (_temp, dir) = super::work_dir(args.dir.as_deref())?;
    println!(
        "strait bench groups: {} groups x {} partitions, checkpoint interval {} ms; two sites of 3 nodes; in {}",
        args.groups,
        args.partitions,
        args.checkpoint_interval_ms,
        dir.display()
    );
    let site_a = start_cluster(&dir.join("site-a"), NODE_YAML)?;
    let site_b = start_cluster(&dir.join("site-b"), NODE_YAML)?;
    let (a, b) = (super::bootstrap_of(&site_a), super::bootstrap_of(&site_b));
    create_topic(&a, "bench-groups", args.partitions, 3, &[]).await?;
    let (a2, partitions) = (a.clone(), args.partitions);
    tokio::task::spawn_blocking(move || produce_even(&a2, partitions))
        .await
        .context("the producer thread")??;

    let mirror_dir = dir.join("mirror");
    std::fs::create_dir_all(&mirror_dir)?;
    let config = mirror_dir.join("mirror.yaml");
    std::fs::write(
        &config,
        format!(
            "# Written by strait bench groups.\nclusters:\n  a:\n    bootstrap_servers: {a}\n  b:\n    bootstrap_servers: {b}\nflows:\n  - source: a\n    target: b\n    topics:\n      include: [bench-groups]\n    groups:\n      include: [\"bench-groups-.*\"]\n    topic_refresh_interval_ms: 500\n    checkpoint_interval_ms: {}\n",
            args.checkpoint_interval_ms
        ),
    )?;
    let (mirror, http) = spawn_mirror_logged(
        &config,
        &mirror_dir.join("data"),
        Some(&mirror_dir.join("mirror.log")),
    )?;
    let pid = mirror.0.id();

    // The backlog on the target, and a round with no group: every client the daemon keeps
    // exists by then.
    let target = consumer(&b)?;
    let started = Instant::now();
    let want = RECORDS_PER_PARTITION as i64;
    'copied: loop {
        let mut done = true;
        for p in 0..args.partitions {
            let end = target
                .fetch_watermarks("a.bench-groups", p, Duration::from_secs(5))
                .map(|(_, h)| h)
                .unwrap_or(0);
            done &= end >= want;
        }
        let status = strait_mirror::http::fetch_status(http, Duration::from_secs(10)).await?;
        let rounds = status
            .flows
            .first()
            .is_some_and(|f| f.checkpoint_round_seconds.is_some());
        if done && rounds {
            break 'copied;
        }
        if started.elapsed() > SETUP_TIMEOUT {
            bail!("the backlog was not mirrored within {SETUP_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (threads_before, rss_before) = (proc_status(pid, "Threads")?, proc_status(pid, "VmRSS")?);

    println!("committing {} groups on site a...", args.groups);
    let requests: Vec<_> = (0..args.groups)
        .map(|g| {
            let offsets = (0..args.partitions)
                .map(|p| ("bench-groups".to_string(), p, offset_of(g, p)))
                .collect();
            (group_name(g), offsets)
        })
        .collect();
    let committer = consumer(&a)?;
    let answers = tokio::task::block_in_place(|| {
        strait_mirror::group_offsets::write(
            committer.client(),
            &requests,
            Duration::from_secs(30),
            &AtomicBool::new(false),
        )
    })?;
    let names: Vec<String> = requests.iter().map(|(g, _)| g.clone()).collect();
    strait_mirror::group_offsets::all_answered(&names, answers, "committing on site a")?;
    let committed = Instant::now();

    let limit = Duration::from_millis(2 * args.checkpoint_interval_ms);
    let (synced_after, round_s) = loop {
        let status = strait_mirror::http::fetch_status(http, Duration::from_secs(10)).await?;
        let flow = status.flows.first().context("the mirror shows no flow")?;
        if flow.checkpoint_groups == args.groups as u64 {
            break (committed.elapsed(), flow.checkpoint_round_seconds);
        }
        if committed.elapsed() > limit * 10 {
            bail!(
                "no round covered the {} groups within {:?} (the last covered {})",
                args.groups,
                limit * 10,
                flow.checkpoint_groups
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (threads_after, rss_after) = (proc_status(pid, "Threads")?, proc_status(pid, "VmRSS")?);

    // Every group at its exact translation (the target topic holds only the flow's records,
    // so translation is the identity here).
    let reads: Vec<_> = requests
        .iter()
        .map(|(g, o)| {
            let partitions = o.iter().map(|(_, p, _)| ("a.bench-groups".to_string(), *p));
            (g.clone(), partitions.collect())
        })
        .collect();
    let reader = consumer(&b)?;
    let answers = tokio::task::block_in_place(|| {
        strait_mirror::group_offsets::read(
            reader.client(),
            &reads,
            Duration::from_secs(30),
            &AtomicBool::new(false),
        )
    })?;
    let found = strait_mirror::group_offsets::all_answered(&names, answers, "reading on site b")?;
    let mut wrong = 0usize;
    for (g, partitions) in found.iter().enumerate() {
        for p in 0..args.partitions {
            let have = partitions
                .iter()
                .find(|o| o.partition == p)
                .and_then(|o| o.offset);
            wrong += usize::from(have != Some(offset_of(g, p)));
        }
    }
    if wrong > 0 {
        bail!("{wrong} group offsets on site b are not the exact translation");
    }
    let (client_threads, client_rss_kib) = cost_per_client(&a)?;
    drop(mirror);

    let ratio = synced_after.as_secs_f64() / limit.as_secs_f64();
    println!(
        "synced: all {} groups in a completed round {:.2} s after they were committed (the round took {}); limit 2 x {} ms = {:.1} s; ratio {ratio:.2} ({})",
        args.groups,
        synced_after.as_secs_f64(),
        round_s.map_or("?".to_string(), |s| format!("{s:.2} s")),
        args.checkpoint_interval_ms,
        limit.as_secs_f64(),
        if ratio <= 1.0 { "within" } else { "OVER" }
    );
    println!(
        "exact: {} offsets on site b read back, 0 wrong",
        args.groups * args.partitions as usize
    );
    println!(
        "daemon: threads {threads_before} -> {threads_after}, RSS {:.1} -> {:.1} MiB ({:.1} KiB per group)",
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        rss_after.saturating_sub(rss_before) as f64 / args.groups as f64
    );
    println!(
        "one client per group instead: {client_threads:.1} threads and {client_rss_kib:.0} KiB each (measured on {SAMPLE_CLIENTS} clients), {:.0} threads and {:.0} MiB for {} groups",
        client_threads * args.groups as f64,
        client_rss_kib * args.groups as f64 / 1024.0,
        args.groups
    );
    if ratio > 1.0 {
        bail!("the groups took longer than two checkpoint intervals");
    }
    Ok(())
}
