//! The `strait` command line: parses arguments and calls into the library crates.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// strait: cross-cluster replication and disaster recovery for Kafka-protocol clusters.
#[derive(Debug, Parser)]
#[command(name = "strait", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one Kafka-compatible broker node until SIGTERM or Ctrl-C.
    ///
    /// Prints one line "strait broker: node N listening on HOST:PORT, data dir DIR" on stdout
    /// once it accepts connections; logs go to stderr (set RUST_LOG, e.g. RUST_LOG=debug).
    /// On SIGTERM it stops accepting, flushes every log and exits 0.
    Broker(BrokerArgs),
    /// Run every node of a cluster file (e.g. configs/site-a.yaml) as child processes until
    /// SIGTERM or Ctrl-C.
    ///
    /// Starts one `strait broker --config <node file>` per entry of the file's `nodes` and
    /// prints their output prefixed with [node-N]. Nodes print their ready line only once a
    /// majority of the quorum voters runs, so all start at once. When every node is up it
    /// prints one line on stdout:
    ///
    ///   strait cluster: site-a ready: 3 nodes, bootstrap 127.0.0.1:9092,127.0.0.1:9093,127.0.0.1:9094
    ///
    /// A node that exits during startup stops the others and this command exits non-zero; a
    /// node that dies later is reported on stderr and the others keep running. SIGTERM or
    /// Ctrl-C sends SIGTERM to every node (controlled shutdown: leaderships move away first),
    /// waits for them (then SIGKILL) and exits 0 if every node stopped cleanly. On Linux the
    /// nodes also get SIGTERM if this process is killed.
    Cluster(strait::cluster::ClusterArgs),
    /// Mirror topics, records, consumer-group offsets and topic configs from one cluster to
    /// another (the MirrorMaker 2 analogue), until SIGTERM or Ctrl-C.
    ///
    /// Runs every enabled flow of the config. Remote topics are created within
    /// topic_refresh_interval_ms, records keep partition, key, value, headers and timestamp,
    /// and every committed source offset translates exactly (the offset index lives in
    /// DATA_DIR/index and on the target in strait-offset-runs.<flow>.internal). Prints one line
    /// once it serves:
    ///
    ///   strait mirror: serving http://127.0.0.1:9780 (/metrics, /status); flows: a-to-b (a -> b)
    ///
    /// SIGTERM waits for in-flight records, records the offset runs and commits the source
    /// offsets; a restart resumes exactly there. `strait mirror status` prints the lag.
    Mirror(strait::mirror::MirrorArgs),
    /// Run the whole local DR setup until SIGTERM or Ctrl-C: site a and site b (three nodes
    /// each, on the loopback ports of configs/site-a* and configs/site-b*) and the a -> b
    /// mirror (configs/mirror-a-to-b.yaml).
    ///
    /// Run it from the repository's root (the default config paths are relative to it). Both
    /// sites start together as `strait cluster` children; once both are up the mirror starts.
    /// Their output is prefixed with [site-a], [site-b] and [mirror]. When everything is up it
    /// prints one line, then where everything listens:
    ///
    ///   strait up: ready: site-a 127.0.0.1:9092,...; site-b 127.0.0.1:9192,...; mirror http://127.0.0.1:9780
    ///
    /// SIGTERM or Ctrl-C stops the mirror first (it records its offset runs and commits), then
    /// both sites (controlled shutdown); exit 0 if everything stopped cleanly. Nothing is
    /// restarted automatically: a part that dies is reported with the command that restarts it.
    Up(strait::up::UpArgs),
    /// Measure performance against a local broker.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Disaster-recovery playbooks (dr-playbooks/*.yaml): list, show, plan, run (or dry-run)
    /// and resume them, and list past runs. Every playbook is checked completely first; a
    /// mistake is reported with file, line and column. Runs are locked per flow, journalled
    /// (resumable after a crash) and audited.
    Runbook(strait::runbook::RunbookArgs),
    /// Fail a mirror flow over to its target site: --planned while both sites run (nothing
    /// lost, duplicated, re-read or skipped), --forced when the source is gone. A thin front
    /// end over the failover playbooks: guarded, journalled, resumable with `strait runbook
    /// resume`, reported (--report FILE, JSON). Exits non-zero unless it succeeded.
    Failover(strait::runbook::FailoverArgs),
    /// Bring applications back to a flow's source after a forced failover: archive (with a
    /// sha256) and cut the source's divergent tail, restore what the target took meanwhile
    /// on the source offset for offset, translate every group back, resume the flow, open
    /// the source. A thin front end over dr-playbooks/failback.yaml; exits non-zero unless it
    /// succeeded.
    Failback(strait::runbook::FailbackArgs),
}

#[derive(Debug, clap::Args)]
struct BrokerArgs {
    /// Node config file (YAML), e.g. configs/single-node.yaml.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Listen on HOST:PORT instead of the config's `listen` (port 0 picks a free port).
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<std::net::SocketAddr>,
    /// Keep data in DIR instead of the config's `data_dir`.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Tell clients to connect to HOST:PORT instead of the listener's address.
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,
    /// Check retention.ms / retention.bytes every MS milliseconds instead of the config's
    /// `log_retention_check_interval_ms` (Kafka's log.retention.check.interval.ms).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    log_retention_check_interval_ms: Option<u64>,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Produce 1 KiB records with rdkafka at acks=1 and acks=all to a fresh local broker and
    /// print MB/s and p50/p99 latency next to this machine's raw sequential write rate.
    Produce(strait::bench::ProduceBenchArgs),
    /// Read a topic with a consumer group of three and with one consumer that has every
    /// partition assigned, on a fresh local broker, and print MB/s of each.
    Consume(strait::bench::ConsumeBenchArgs),
    /// Produce with acks=all to a fresh local three-node cluster (replication factor 3,
    /// min.insync.replicas=2) and to a single node, and print MB/s, p50/p99 latency and the
    /// ratio of the two.
    Replication(strait::bench::ReplicationBenchArgs),
    /// Start two fresh local three-node sites and copy a backlog and a steady stream from one
    /// to the other with `strait mirror` and with a `kcat -C | kcat -P` pipe (needs kcat on
    /// PATH), one after the other, and print MB/s, records/s and end-to-end latency p50/p99 of
    /// both.
    Mirror(strait::bench::MirrorBenchArgs),
    /// Time the broker's check of every count and length in Produce and Fetch requests and in
    /// a follower's Fetch response against kafka-protocol's decode of the same bytes, in this
    /// process, and print both with their ratio and the check's CPU seconds per GB.
    Wire(strait::bench::WireBenchArgs),
    /// Start two fresh local three-node sites, give site a 100 partitions and 20 consumer
    /// groups, mirror them to site b, run `strait failover --planned` (or, with --forced, SIGKILL
    /// site a and run `strait failover --forced`) and print its RTO against a limit, each
    /// step's time and the group offsets verified.
    Failover(strait::bench::FailoverBenchArgs),
    /// Start two fresh local three-node sites, mirror a backlog, stop the mirror once cleanly
    /// and then SIGKILL it a few times mid-stream, and print how long the partitions take to
    /// resume after each restart (the reconciliation with the target's tail included), the
    /// ratio of the two, and that every record reached the target exactly once.
    Takeover(strait::bench::TakeoverBenchArgs),
    /// Start two fresh local three-node sites, mirror a topic, commit 5,000 consumer groups on
    /// site a at once, and print how long the mirror takes to sync them all against two
    /// checkpoint intervals, that every group's target offset is the exact translation, and
    /// the daemon's threads and RSS against what a client per group would cost.
    Groups(strait::bench::GroupsBenchArgs),
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // openraft's own log is off unless asked for (RUST_LOG=info,openraft=info): it reports
        // the routine of forming a quorum and of peers stopping as WARN and ERROR. The
        // controller says what the quorum does in lines of its own.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=off"));
    // Colours only on a terminal: the output of `strait cluster` / `strait up` children goes
    // through a pipe into their supervisor's output and into log files.
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

async fn run_broker(args: BrokerArgs) -> anyhow::Result<()> {
    let mut config = strait_broker::NodeConfig::load(&args.config)?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(adv) = args.advertise {
        strait_broker::config::parse_host_port(&adv)
            .map_err(|e| anyhow::anyhow!("--advertise: {e}"))?;
        config.advertised = Some(adv);
    }
    if let Some(ms) = args.log_retention_check_interval_ms {
        config.log_retention_check_interval_ms = ms;
        config
            .explicit_keys
            .insert("log_retention_check_interval_ms".to_string());
    }
    let node_id = config.node_id;
    let data_dir = config.data_dir.clone();
    let node = strait_broker::Node::start(config)
        .await
        .with_context(|| format!("starting broker node {node_id}"))?;
    // Before the ready line: whoever waits for it may send SIGTERM at once.
    let shutdown = strait::shutdown_signal();
    println!(
        "{}",
        strait::broker_ready_line(node_id, node.local_addr(), &data_dir)
    );
    node.run_until(shutdown).await;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("strait: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Broker(args) => run_broker(args).await,
            Command::Cluster(args) => strait::cluster::run(args).await,
            Command::Mirror(args) => strait::mirror::run(args).await,
            Command::Up(args) => strait::up::run(args).await,
            Command::Bench(BenchCommand::Produce(args)) => strait::bench::produce(args).await,
            Command::Bench(BenchCommand::Consume(args)) => strait::bench::consume(args).await,
            Command::Bench(BenchCommand::Takeover(args)) => strait::bench::takeover(args).await,
            Command::Bench(BenchCommand::Groups(args)) => strait::bench::groups(args).await,
            Command::Bench(BenchCommand::Replication(args)) => {
                strait::bench::replication(args).await
            }
            Command::Bench(BenchCommand::Mirror(args)) => strait::bench::mirror(args).await,
            Command::Bench(BenchCommand::Wire(args)) => strait::bench::wire(args),
            Command::Bench(BenchCommand::Failover(args)) => strait::bench::failover(args).await,
            Command::Runbook(args) => strait::runbook::run(args).await,
            Command::Failover(args) => strait::runbook::failover(args).await,
            Command::Failback(args) => strait::runbook::failback(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strait: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
