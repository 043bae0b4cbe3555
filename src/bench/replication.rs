//! `strait bench replication`: acks=all produce to a three-node cluster (replication factor 3,
//! `min.insync.replicas=2`) next to the same load on a single node, in the same run.
//!
//! Both sides are real `strait broker` child processes of this same binary on loopback; the
//! three nodes form one metadata quorum. The topic has the same partition count on both sides
//! (by default one partition per node, so the cluster spreads leaders over all three). The
//! figure is the ratio of the cluster's throughput to the single node's.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

use super::produce::{run_producer, RunResult};
use super::{ChildBroker, ProduceBenchArgs};

/// Nodes of the cluster side.
const NODES: usize = 3;
/// Target of issue 4: the cluster keeps at least this share of the single node's rate.
const TARGET_RATIO: f64 = 0.4;

/// Options of `strait bench replication`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplicationBenchArgs {
    /// Records to produce to each side.
    #[arg(long, default_value_t = 300_000)]
    pub records: u64,
    /// Size of each record value in bytes.
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
    /// Partitions of the topic on both sides.
    #[arg(long, default_value_t = 3)]
    pub partitions: i32,
    /// Records allowed in flight (sent, not yet acknowledged).
    #[arg(long, default_value_t = 20_000)]
    pub in_flight_records: u64,
    /// Directory for the nodes' data (default: a fresh temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Runs the replication benchmark and prints its figures.
pub async fn replication(args: ReplicationBenchArgs) -> anyhow::Result<()> {
    if args.records == 0 || args.record_bytes == 0 || args.in_flight_records == 0 {
        bail!("--records, --record-bytes and --in-flight-records must be positive");
    }
    if !(1..=1000).contains(&args.partitions) {
        bail!("--partitions must be between 1 and 1000");
    }
    let (_temp, dir) = super::work_dir(args.dir.as_deref())?;
    println!(
        "strait bench replication: {} records x {} B with acks=all to {} partition(s), {} in flight, in {}",
        args.records,
        args.record_bytes,
        args.partitions,
        args.in_flight_records,
        dir.display()
    );
    let load = ProduceBenchArgs {
        records: args.records,
        record_bytes: args.record_bytes,
        in_flight_records: args.in_flight_records,
        flush_messages: None,
        dir: None,
    };

    let single_dir = dir.join("single");
    std::fs::create_dir_all(&single_dir)?;
    let single = ChildBroker::start(&single_dir, "", "")?;
    create_topic(&single.bootstrap, "bench-rf1", args.partitions, 1, &[]).await?;
    let single_cpu_before = CpuReading::take(std::slice::from_ref(&single));
    let single_run = produce(&single.bootstrap, "bench-rf1", &load).await?;
    let single_cpu = cpu_used(
        single_cpu_before,
        CpuReading::take(std::slice::from_ref(&single)),
    );
    drop(single);

    let nodes = start_cluster(&dir.join("cluster"), "")?;
    let bootstrap = nodes
        .iter()
        .map(|n| n.bootstrap.as_str())
        .collect::<Vec<_>>()
        .join(",");
    create_topic(
        &bootstrap,
        "bench-rf3",
        args.partitions,
        NODES as i32,
        &[("min.insync.replicas", "2")],
    )
    .await?;
    let cluster_cpu_before = CpuReading::take(&nodes);
    let cluster_run = produce(&bootstrap, "bench-rf3", &load).await?;
    let cluster_cpu = cpu_used(cluster_cpu_before, CpuReading::take(&nodes));
    drop(nodes);

    println!("acks=all, one record value = {} B:", args.record_bytes);
    print_against("1 node", &single_run, &single_run);
    print_against("3 nodes", &cluster_run, &single_run);
    // Where the CPU went: on a machine with fewer cores than nodes plus producer, this
    // bounds the cluster's rate, whatever replication itself costs.
    let gb = args.records as f64 * args.record_bytes as f64 / 1e9;
    for (label, cpu) in [("1 node", single_cpu), ("3 nodes", cluster_cpu)] {
        if let Some(cpu) = cpu {
            println!(
                "{label:<8} CPU seconds per GB of records: producer (this process) {:.2}, broker node(s) {:.2}",
                cpu.client_s / gb,
                cpu.brokers_s / gb
            );
        }
    }
    let ratio = cluster_run.mb_per_s / single_run.mb_per_s;
    println!(
        "result: 3-node RF3 / 1-node throughput = {ratio:.2} (target >= {TARGET_RATIO:.2}): {}",
        if ratio >= TARGET_RATIO {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(())
}

/// CPU seconds used so far by this process (the producer) and by a set of broker nodes.
#[derive(Debug, Clone, Copy)]
struct CpuReading {
    client_s: f64,
    brokers_s: f64,
}

impl CpuReading {
    /// `None` where `/proc` cannot tell.
    fn take(nodes: &[ChildBroker]) -> Option<CpuReading> {
        let client_s = super::cpu_seconds(std::process::id())?;
        let brokers_s = nodes
            .iter()
            .map(ChildBroker::cpu_seconds)
            .sum::<Option<f64>>()?;
        Some(CpuReading {
            client_s,
            brokers_s,
        })
    }
}

/// What was used between two readings.
fn cpu_used(before: Option<CpuReading>, after: Option<CpuReading>) -> Option<CpuReading> {
    let (before, after) = before.zip(after)?;
    Some(CpuReading {
        client_s: after.client_s - before.client_s,
        brokers_s: after.brokers_s - before.brokers_s,
    })
}

fn print_against(label: &str, run: &RunResult, single: &RunResult) {
    println!(
        "{label:<8} {:>8.1} MB/s {:>10.0} records/s   p50 {:>7.2} ms   p99 {:>7.2} ms   ratio to 1 node {:.2}",
        run.mb_per_s,
        run.records_per_s,
        run.p50_ms,
        run.p99_ms,
        run.mb_per_s / single.mb_per_s
    );
}

pub(super) async fn produce(
    bootstrap: &str,
    topic: &str,
    load: &ProduceBenchArgs,
) -> anyhow::Result<RunResult> {
    let bootstrap = bootstrap.to_string();
    let topic = topic.to_string();
    let load = load.clone();
    tokio::task::spawn_blocking(move || run_producer(&bootstrap, &topic, "all", &load))
        .await
        .context("benchmark thread")?
}

pub(super) async fn create_topic(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    replication_factor: i32,
    configs: &[(&str, &str)],
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .context("creating the admin client")?;
    let mut topic = NewTopic::new(
        name,
        partitions,
        TopicReplication::Fixed(replication_factor),
    );
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    let timeout = Some(Duration::from_secs(30));
    let opts = AdminOptions::new()
        .request_timeout(timeout)
        .operation_timeout(timeout);
    let results = admin
        .create_topics(&[topic], &opts)
        .await
        .context("CreateTopics")?;
    for r in results {
        if let Err((topic, code)) = r {
            bail!("creating {topic}: {code}");
        }
    }
    Ok(())
}

/// Starts three nodes forming one cluster on free loopback ports under `dir` (`extra_yaml`:
/// top-level config lines for every node), and waits until each printed its ready line.
pub(super) fn start_cluster(
    dir: &std::path::Path,
    extra_yaml: &str,
) -> anyhow::Result<Vec<ChildBroker>> {
    std::fs::create_dir_all(dir)?;
    // Free ports: bound together (so they are distinct), released just before the nodes bind
    // them. Another process could take one in between; the node then fails to start with a
    // message naming the address, and the benchmark stops.
    let listeners: Vec<TcpListener> = (0..2 * NODES)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .context("finding free loopback ports")?;
    let addrs: Vec<SocketAddr> = listeners
        .iter()
        .map(TcpListener::local_addr)
        .collect::<Result<_, _>>()?;
    drop(listeners);
    let voters = (0..NODES)
        .map(|i| format!("{}@{}", i + 1, addrs[2 * i + 1]))
        .collect::<Vec<_>>()
        .join(",");
    let mut starting = Vec::with_capacity(NODES);
    for i in 0..NODES {
        let id = i + 1;
        let config = dir.join(format!("node-{id}.yaml"));
        let yaml = format!(
            "node_id: {id}\nlisten: {kafka}\ndata_dir: node-{id}\ncontroller_quorum_voters: \"{voters}\"\n{extra_yaml}log:\n  segment_bytes: 268435456\n",
            kafka = addrs[2 * i],
        );
        std::fs::write(&config, yaml).with_context(|| format!("writing {}", config.display()))?;
        starting.push(ChildBroker::spawn(&config)?);
    }
    starting
        .into_iter()
        .map(|s| s.wait_ready())
        .collect::<anyhow::Result<Vec<_>>>()
}
