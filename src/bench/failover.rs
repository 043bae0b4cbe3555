//! `strait bench failover`: the time a planned failover takes (its RTO) between two local
//! three-node sites, for a flow of many partitions and consumer groups.
//!
//! Site a gets `topics` × `partitions_per_topic` partitions holding `records` records and
//! `groups` consumer groups with an offset committed on every partition; `strait mirror`
//! copies it all to site b and syncs the groups. Then `strait failover --planned` runs, as an
//! operator would run it, and the benchmark prints its report: the RTO (from the run's start
//! to the target taking writes), each step's time, and how many group offsets were verified.
//! The RTO is set against a limit given on the command line (default 30 s), as a ratio.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::replication::{create_topic, start_cluster};

/// Settings of every node of both sites: remote topics the mirror creates get three replicas.
const NODE_YAML: &str = "default_replication_factor: 3\noffsets_topic_replication_factor: 3\n";
/// How long the mirror may take to copy the records and sync every group.
const MIRROR_WAIT: Duration = Duration::from_secs(300);

/// Options of `strait bench failover`.
#[derive(Debug, Clone, clap::Args)]
pub struct FailoverBenchArgs {
    /// Topics on site a.
    #[arg(long, default_value_t = 10)]
    pub topics: u32,
    /// Partitions of each topic.
    #[arg(long, default_value_t = 10)]
    pub partitions_per_topic: i32,
    /// Consumer groups with an offset on every partition.
    #[arg(long, default_value_t = 20)]
    pub groups: u32,
    /// Records produced to site a before the failover, spread over the partitions.
    #[arg(long, default_value_t = 20_000)]
    pub records: u64,
    /// SIGKILL every node of site a once the mirror has caught up and run `strait failover
    /// --forced` (its guard waits 1 s for site a to stay silent) instead of --planned.
    #[arg(long)]
    pub forced: bool,
    /// The RTO the run is set against, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub rto_limit_ms: u64,
    /// The playbooks directory.
    #[arg(long, default_value = "dr-playbooks", env = "STRAIT_PLAYBOOKS")]
    pub playbooks: PathBuf,
    /// Directory for both sites' data, the mirror's index and the run's journal and report
    /// (default: a fresh temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

fn topic_name(i: u32) -> String {
    format!("bench-failover-{i}")
}

fn group_name(i: u32) -> String {
    format!("bench-failover-group-{i}")
}

fn group_client(bootstrap: &str, group: &str) -> anyhow::Result<BaseConsumer> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .context("creating a group client")
}

/// Runs `strait bench failover` and prints its figures.
pub async fn failover(args: FailoverBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.topics > 0 && args.partitions_per_topic > 0,
        "--topics and --partitions-per-topic must be positive"
    );
    let (_temp, dir) = super::work_dir(args.dir.as_deref())?;
    let partitions = args.topics as i64 * args.partitions_per_topic as i64;
    println!(
        "strait bench failover: {} topics x {} partitions = {partitions}, {} groups, {} records; two three-node sites",
        args.topics, args.partitions_per_topic, args.groups, args.records
    );
    let mut site_a = start_cluster(&dir.join("site-a"), NODE_YAML)?;
    let site_b = start_cluster(&dir.join("site-b"), NODE_YAML)?;
    let a = site_a
        .iter()
        .map(|n| n.bootstrap.clone())
        .collect::<Vec<_>>()
        .join(",");
    let b = site_b
        .iter()
        .map(|n| n.bootstrap.clone())
        .collect::<Vec<_>>()
        .join(",");
    for t in 0..args.topics {
        create_topic(&a, &topic_name(t), args.partitions_per_topic, 3, &[]).await?;
    }

    // The records, round robin over every partition.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &a)
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .context("creating the producer")?;
    let value = [b'x'; 200];
    for i in 0..args.records {
        let p = i as i64 % partitions;
        let topic = topic_name((p / args.partitions_per_topic as i64) as u32);
        let partition = (p % args.partitions_per_topic as i64) as i32;
        loop {
            match producer.send(
                BaseRecord::<[u8], [u8]>::to(&topic)
                    .partition(partition)
                    .payload(&value[..]),
            ) {
                Ok(()) => break,
                Err((e, _))
                    if e.rdkafka_error_code()
                        == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) =>
                {
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => bail!("producing to site a: {e}"),
            }
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .context("flushing the records to site a")?;

    // Every group has read half of every partition.
    let per_partition = args.records as i64 / partitions;
    let mut expected = TopicPartitionList::new();
    for t in 0..args.topics {
        for p in 0..args.partitions_per_topic {
            expected
                .add_partition_offset(&topic_name(t), p, Offset::Offset(per_partition / 2))
                .context("building a commit")?;
        }
    }
    for g in 0..args.groups {
        group_client(&a, &group_name(g))?
            .commit(&expected, CommitMode::Sync)
            .with_context(|| format!("committing {}", group_name(g)))?;
    }

    let config = dir.join("mirror.yaml");
    std::fs::write(
        &config,
        format!(
            "# Written by strait bench failover.\nclusters:\n  a:\n    bootstrap_servers: {a}\n  b:\n    bootstrap_servers: {b}\nflows:\n  - source: a\n    target: b\n    topics:\n      include: ['bench-failover-.*']\n    groups:\n      include: ['bench-failover-group-.*']\n    heartbeat_interval_ms: 0\n    topic_refresh_interval_ms: 1000\n    checkpoint_interval_ms: 1000\n"
        ),
    )
    .with_context(|| format!("writing {}", config.display()))?;
    let (_mirror, http) = super::mirror::spawn_mirror(&config, &dir.join("mirror-data"))?;

    // Wait until the last group's offsets are on site b: the copy and the sync are done.
    let started = Instant::now();
    let last = group_client(&b, &group_name(args.groups.saturating_sub(1)))?;
    let mut remote = TopicPartitionList::new();
    for t in 0..args.topics {
        for p in 0..args.partitions_per_topic {
            remote.add_partition(&format!("a.{}", topic_name(t)), p);
        }
    }
    loop {
        let synced = tokio::task::block_in_place(|| {
            last.committed_offsets(remote.clone(), Duration::from_secs(10))
        })
        .map(|c| {
            c.elements()
                .iter()
                .all(|e| matches!(e.offset(), Offset::Offset(_)))
        })
        .unwrap_or(false);
        if synced || args.groups == 0 {
            break;
        }
        if started.elapsed() > MIRROR_WAIT {
            bail!("the mirror did not copy and sync everything within {MIRROR_WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let kind = if args.forced { "--forced" } else { "--planned" };
    println!(
        "mirror caught up and {} groups synced in {:.1} s; running strait failover {kind}",
        args.groups,
        started.elapsed().as_secs_f64()
    );
    if args.forced {
        for node in &mut site_a {
            node.child.kill().context("SIGKILL of a node of site a")?;
            node.child.wait().context("reaping a node of site a")?;
        }
        println!("every node of site a SIGKILLed");
    }

    let report = dir.join("failover-report.json");
    let exe = std::env::current_exe().context("locating the strait binary")?;
    let mut command = Command::new(exe);
    command.args(["failover", kind, "--yes"]);
    if args.forced {
        command.args(["--source-timeout-ms", "1000"]);
    }
    let out = command
        .arg("--mirror")
        .arg(&config)
        .arg("--mirror-http")
        .arg(http.to_string())
        .arg("--playbooks")
        .arg(&args.playbooks)
        .arg("--journal")
        .arg(dir.join("journal"))
        .arg("--report")
        .arg(&report)
        .env("RUST_LOG", "warn")
        .output()
        .context("running strait failover")?;
    if !out.status.success() {
        bail!(
            "strait failover {kind} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let r: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&report).with_context(|| format!("reading {}", report.display()))?,
    )
    .context("parsing the failover report")?;
    for s in r["steps"].as_array().into_iter().flatten() {
        println!(
            "  {:<8} {:<45} {:>7} ms",
            s["kind"].as_str().unwrap_or(""),
            s["name"].as_str().unwrap_or(""),
            s["duration_ms"]
        );
    }
    let groups = r["groups"].as_array().map_or(0, Vec::len);
    let verified = r["groups"]
        .as_array()
        .map_or(0, |g| g.iter().filter(|g| g["verified"] == true).count());
    let rto_ms = r["rto_ms"].as_u64().context("the report has no rto_ms")?;
    println!(
        "RTO {rto_ms} ms ({:.2} of the {} ms limit); rpo_records {}; {verified} of {groups} group offsets verified",
        rto_ms as f64 / args.rto_limit_ms as f64,
        args.rto_limit_ms,
        r["rpo_records"]
    );
    if verified != groups || groups as u64 != args.groups as u64 * partitions as u64 {
        bail!(
            "expected {} verified group offsets, the report has {verified} of {groups}",
            args.groups as u64 * partitions as u64
        );
    }
    // And checked here, apart from the runbook's own check: the remote topics started empty,
    // so every group must be at the offset it committed on site a.
    let mut wrong = 0usize;
    for g in 0..args.groups {
        let got = tokio::task::block_in_place(|| {
            group_client(&b, &group_name(g))?
                .committed_offsets(remote.clone(), Duration::from_secs(10))
                .context("reading a group's offsets on site b")
        })?;
        wrong += got
            .elements()
            .iter()
            .filter(|e| e.offset() != Offset::Offset(per_partition / 2))
            .count();
    }
    if wrong > 0 {
        bail!("{wrong} group offsets on site b are not where the groups were on site a");
    }
    println!(
        "checked on site b: all {} group offsets at the groups' positions on site a",
        args.groups as i64 * partitions
    );
    Ok(())
}
