//! `strait bench mirror`: `strait mirror` between two local three-node sites, next to a
//! `kcat -C … | kcat -P …` pipe between the same sites in the same run.
//!
//! Two figures, each for both pipelines:
//!
//! - **Catch-up throughput**: a backlog of records on site a is copied to site b. The rate is
//!   taken between the moments the target holds 10 % and 100 % of the records, so neither
//!   pipeline's start (group join, topic creation, metadata) counts; the time from start to
//!   the last record is printed too.
//! - **End-to-end latency**: records produced on site a at a steady rate carry their send time
//!   (wall clock, microseconds); a consumer on site b subtracts it from the arrival time.
//!   Both pipelines are warmed up first (records are sent until one arrives), so start-up does
//!   not count either, and filler records follow the measured ones until all arrived (kcat -P
//!   reads its input 128 bytes at a time and holds a last, incomplete read back).
//!
//! The pipelines run one after the other, never together, so neither steals the other's CPU.
//! The kcat pipe copies key and value only (no headers, timestamps, partitions or offsets, no
//! offset translation): it is the floor a mirror is measured against, not an equal.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::replication::{create_topic, produce, start_cluster};
use super::ProduceBenchArgs;

/// Settings of every node of both sites: remote topics the mirror creates get three replicas.
pub(super) const NODE_YAML: &str =
    "default_replication_factor: 3\noffsets_topic_replication_factor: 3\n";
/// How long one pipeline may take to copy the backlog, or to deliver the latency records.
const PIPELINE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a pipeline gets to deliver its first warm-up record.
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(60);
/// Highest rate of the latency stream, records per second.
const LATENCY_RATE_MAX: u64 = 200_000;
/// How often the target's end offsets are polled while a backlog is copied.
const ARRIVAL_POLL_MS: u64 = 50;

/// Options of `strait bench mirror`.
#[derive(Debug, Clone, clap::Args)]
pub struct MirrorBenchArgs {
    /// Records in the backlog copied by each pipeline.
    #[arg(long, default_value_t = 100_000)]
    pub records: u64,
    /// Size of each record value in bytes.
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
    /// Partitions of every topic.
    #[arg(long, default_value_t = 3)]
    pub partitions: i32,
    /// Seconds of steady stream sent through each pipeline for the latency figures.
    #[arg(long, default_value_t = 10)]
    pub latency_seconds: u64,
    /// Records per second of that stream (default: half the mirror's catch-up rate measured
    /// in the same run, the load the latency target is set at).
    #[arg(long)]
    pub latency_rate: Option<u64>,
    /// Directory for both sites' data and the mirror's index (default: a fresh temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// A child process (kcat, the mirror) killed when dropped.
pub(super) struct Guard(pub(super) Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What one pipeline did with the backlog.
struct CatchUp {
    /// Record-value megabytes (10^6 bytes) per second between 10 % and 100 % on the target.
    mb_per_s: f64,
    records_per_s: f64,
    /// From the pipeline's start to the last record on the target.
    total_s: f64,
    /// CPU seconds per GB of record values copied, from the pipeline's start to the last
    /// record: the pipeline's own processes, and the six nodes of both sites together.
    pipeline_cpu_s_per_gb: Option<f64>,
    nodes_cpu_s_per_gb: Option<f64>,
}

impl CatchUp {
    /// The fastest any pipeline could copy on `cores` cores if it cost nothing itself and the
    /// nodes kept needing what they needed here per GB, in MB/s.
    fn nodes_bound_mb_per_s(&self, cores: f64) -> Option<f64> {
        self.nodes_cpu_s_per_gb
            .filter(|c| *c > 0.0)
            .map(|c| cores / c * 1_000.0)
    }
}

/// CPU seconds used so far by all of `pids` together; `None` if any is unreadable.
fn cpu_of(pids: &[u32]) -> Option<f64> {
    pids.iter().map(|p| super::cpu_seconds(*p)).sum()
}

/// CPU use of one catch-up: the pipeline's processes and the nodes, each with its reading at
/// the pipeline's start.
struct CpuMeter {
    pipeline: Vec<u32>,
    pipeline_start_s: Option<f64>,
    nodes: Vec<u32>,
    nodes_start_s: Option<f64>,
}

impl CpuMeter {
    /// CPU seconds per GB since the start for `gb` copied: the pipeline's, then the nodes'.
    fn per_gb(&self, gb: f64) -> (Option<f64>, Option<f64>) {
        let since = |pids: &[u32], start: Option<f64>| Some((cpu_of(pids)? - start?) / gb);
        (
            since(&self.pipeline, self.pipeline_start_s),
            since(&self.nodes, self.nodes_start_s),
        )
    }
}

/// Latency percentiles of one set of records.
struct Percentiles {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Percentiles {
    fn of(mut latencies_us: Vec<u64>) -> Percentiles {
        assert!(!latencies_us.is_empty(), "percentiles of no latency");
        latencies_us.sort_unstable();
        let at = |q: f64| {
            latencies_us[((latencies_us.len() - 1) as f64 * q).round() as usize] as f64 / 1_000.0
        };
        Percentiles {
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

/// Latencies of one pipeline's run: the same records read on site a (the source cluster
/// alone, the floor) and on site b (through the pipeline).
struct Latency {
    source: Percentiles,
    target: Percentiles,
}

/// Runs the mirror benchmark and prints its figures.
pub async fn mirror(args: MirrorBenchArgs) -> anyhow::Result<()> {
    if args.records < 10 || args.record_bytes < 32 || !(1..=600).contains(&args.latency_seconds) {
        bail!(
            "--records must be at least 10, --record-bytes at least 32, --latency-seconds between 1 and 600"
        );
    }
    if args
        .latency_rate
        .is_some_and(|r| !(1..=LATENCY_RATE_MAX).contains(&r))
    {
        bail!("--latency-rate must be between 1 and {LATENCY_RATE_MAX} records per second");
    }
    if !(1..=1000).contains(&args.partitions) {
        bail!("--partitions must be between 1 and 1000");
    }
    let kcat = Command::new("kcat").arg("-V").output();
    if !matches!(&kcat, Ok(o) if o.status.success()) {
        bail!("kcat is needed as the reference pipe and was not found on PATH; install the Debian package kcat (./scripts/test.sh does)");
    }
    let (_temp, dir) = super::work_dir(args.dir.as_deref())?;
    println!(
        "strait bench mirror: two sites of 3 nodes (replication factor 3, min.insync.replicas 2), {} partitions; backlog {} records x {} B; latency stream for {} s at {}; in {}",
        args.partitions,
        args.records,
        args.record_bytes,
        args.latency_seconds,
        args.latency_rate.map_or_else(|| "half the mirror's catch-up rate".to_string(), |r| format!("{r} records/s")),
        dir.display()
    );
    let site_a = start_cluster(&dir.join("site-a"), NODE_YAML)?;
    let site_b = start_cluster(&dir.join("site-b"), NODE_YAML)?;
    let (a, b) = (super::bootstrap_of(&site_a), super::bootstrap_of(&site_b));
    let nodes: Vec<u32> = site_a.iter().chain(&site_b).map(|n| n.child.id()).collect();
    let rf3 = [("min.insync.replicas", "2")];
    for topic in ["backlog", "latency-mirror", "latency-kcat"] {
        create_topic(&a, topic, args.partitions, 3, &rf3).await?;
    }
    for topic in ["backlog-kcat", "latency-kcat-copy"] {
        create_topic(&b, topic, args.partitions, 3, &rf3).await?;
    }

    println!(
        "loading the backlog on site a ({} records, acks=all)...",
        args.records
    );
    let load = ProduceBenchArgs {
        records: args.records,
        record_bytes: args.record_bytes,
        in_flight_records: 20_000,
        flush_messages: None,
        dir: None,
    };
    produce(&a, "backlog", &load).await?;

    let n = args.records;
    let bytes = args.records as f64 * args.record_bytes as f64;
    let (a2, b2, parts, nodes2) = (a.clone(), b.clone(), args.partitions, nodes.clone());
    let kcat_catch_up = blocking(move || {
        println!("kcat | kcat: copying the backlog...");
        let started = Instant::now();
        let nodes_start_s = cpu_of(&nodes2);
        let pipe = kcat_pipe(&a2, "backlog", &b2, "backlog-kcat", true)?;
        let pipeline = vec![pipe[0].0.id(), pipe[1].0.id()];
        let cpu = CpuMeter {
            pipeline_start_s: cpu_of(&pipeline),
            pipeline,
            nodes: nodes2,
            nodes_start_s,
        };
        arrival(&b2, "backlog-kcat", parts, n, bytes, started, &cpu)
    })
    .await?;

    let mirror_dir = dir.join("mirror");
    std::fs::create_dir_all(&mirror_dir)?;
    let (a2, b2, dir2, nodes2) = (a.clone(), b.clone(), mirror_dir.clone(), nodes.clone());
    let (mirror_catch_up, mirror_guard) = blocking(move || {
        println!("strait mirror: copying the backlog...");
        let started = Instant::now();
        let nodes_start_s = cpu_of(&nodes2);
        let guard = start_mirror(&dir2, &a2, &b2)?;
        let cpu = CpuMeter {
            pipeline: vec![guard.0.id()],
            // A fresh process: everything it used counts, start-up included.
            pipeline_start_s: Some(0.0),
            nodes: nodes2,
            nodes_start_s,
        };
        let copied = arrival(&b2, "a.backlog", parts, n, bytes, started, &cpu)?;
        Ok((copied, guard))
    })
    .await?;

    let rate = args.latency_rate.unwrap_or_else(|| {
        ((mirror_catch_up.records_per_s / 2.0) as u64).clamp(1, LATENCY_RATE_MAX)
    });
    let stream = Stream {
        rate,
        records: rate * args.latency_seconds,
        record_bytes: args.record_bytes,
        partitions: args.partitions,
    };
    let (a2, b2) = (a.clone(), b.clone());
    let mirror_latency = blocking(move || {
        println!("strait mirror: measuring latency at {rate} records/s...");
        latency(&a2, "latency-mirror", &b2, "a.latency-mirror", &stream)
    })
    .await?;
    drop(mirror_guard);

    let (a2, b2) = (a.clone(), b.clone());
    let kcat_latency = blocking(move || {
        println!("kcat | kcat: measuring latency at {rate} records/s...");
        let _pipe = kcat_pipe(&a2, "latency-kcat", &b2, "latency-kcat-copy", false)?;
        latency(&a2, "latency-kcat", &b2, "latency-kcat-copy", &stream)
    })
    .await?;
    drop((site_a, site_b));

    println!(
        "catch-up of {} records x {} B (rate between 10% and 100% on the target):",
        args.records, args.record_bytes
    );
    let cores = std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64);
    let figure = |v: Option<f64>| v.map_or_else(|| "?".to_string(), |v| format!("{v:.1}"));
    for (label, c) in [
        ("strait mirror", &mirror_catch_up),
        ("kcat | kcat", &kcat_catch_up),
    ] {
        println!(
            "  {label:<14} {:>7.1} MB/s {:>9.0} records/s   all copied {:>6.1} s after start   CPU s/GB: pipeline {}, six nodes {}   ({cores} cores and the nodes' CPU alone allow at most {} MB/s)",
            c.mb_per_s,
            c.records_per_s,
            c.total_s,
            figure(c.pipeline_cpu_s_per_gb),
            figure(c.nodes_cpu_s_per_gb),
            figure(c.nodes_bound_mb_per_s(cores)),
        );
    }
    println!(
        "end-to-end latency, {} records at {rate}/s{} (sent on a; read on a = the source cluster alone, read on b = through the pipeline):",
        stream.records,
        if args.latency_rate.is_none() { ", half the mirror's catch-up rate" } else { "" }
    );
    for (label, l) in [
        ("strait mirror", &mirror_latency),
        ("kcat | kcat", &kcat_latency),
    ] {
        for (site, p) in [("read on a", &l.source), ("read on b", &l.target)] {
            println!(
                "  {label:<14} {site}   p50 {:>7.1} ms   p99 {:>7.1} ms   max {:>7.1} ms",
                p.p50_ms, p.p99_ms, p.max_ms
            );
        }
    }
    println!(
        "result: mirror / kcat pipe throughput = {:.2} (target 3); mirror p99 latency at {rate}/s = {:.1} ms (target < 100 ms); p99 latency mirror / kcat = {:.2}",
        mirror_catch_up.mb_per_s / kcat_catch_up.mb_per_s,
        mirror_latency.target.p99_ms,
        mirror_latency.target.p99_ms / kcat_latency.target.p99_ms
    );
    Ok(())
}

/// Runs blocking client work off the runtime's threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("benchmark thread")?
}

/// `kcat -C` on `a`/`from` piped into `kcat -P` on `b`/`to`, key and value as `key\tvalue`
/// lines. `to_end`: the consumer exits at the end of the partitions (a backlog), else it
/// keeps following (latency), with unbuffered output. Both are killed when the returned
/// guards are dropped.
fn kcat_pipe(a: &str, from: &str, b: &str, to: &str, to_end: bool) -> anyhow::Result<[Guard; 2]> {
    let mut consume = Command::new("kcat");
    consume.args(["-C", "-b", a, "-t", from, "-o", "beginning", "-q"]);
    consume.args(["-f", "%k\t%s\n"]);
    consume.arg(if to_end { "-e" } else { "-u" });
    let mut consumer = consume
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting kcat -C")?;
    let lines = consumer.stdout.take().context("kcat -C stdout")?;
    let consumer = Guard(consumer);
    let producer = Command::new("kcat")
        .args(["-P", "-b", b, "-t", to, "-K", "\t"])
        .stdin(Stdio::from(lines))
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting kcat -P")?;
    let mut producer = Guard(producer);
    if !to_end {
        std::thread::sleep(Duration::from_millis(200));
        if let Some(status) = producer.0.try_wait()? {
            bail!("kcat -P exited at once ({status})");
        }
    }
    Ok([consumer, producer])
}

/// Starts `strait mirror` for `backlog` and `latency-mirror` from `a` to `b` and waits for its
/// ready line.
fn start_mirror(dir: &Path, a: &str, b: &str) -> anyhow::Result<Guard> {
    let config = dir.join("mirror.yaml");
    std::fs::write(
        &config,
        format!(
            "# Written by strait bench mirror.\nclusters:\n  a:\n    bootstrap_servers: {a}\n  b:\n    bootstrap_servers: {b}\nflows:\n  - source: a\n    target: b\n    topics:\n      include: [backlog, latency-mirror]\n    topic_refresh_interval_ms: 500\n"
        ),
    )
    .with_context(|| format!("writing {}", config.display()))?;
    spawn_mirror(&config, &dir.join("data")).map(|(guard, _)| guard)
}

/// Starts `strait mirror --config config --data-dir data_dir` on an ephemeral HTTP port and
/// waits for its ready line; returns it (killed when dropped) and its HTTP address.
pub(super) fn spawn_mirror(
    config: &Path,
    data_dir: &Path,
) -> anyhow::Result<(Guard, std::net::SocketAddr)> {
    spawn_mirror_logged(config, data_dir, None)
}

/// [`spawn_mirror`], logging at info level to the end of `log` when given (else warnings to
/// this process's stderr).
pub(super) fn spawn_mirror_logged(
    config: &Path,
    data_dir: &Path,
    log: Option<&Path>,
) -> anyhow::Result<(Guard, std::net::SocketAddr)> {
    let exe = std::env::current_exe().context("locating the strait binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("mirror")
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--http", "127.0.0.1:0"])
        .stdout(Stdio::piped());
    match log {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?;
            cmd.env("RUST_LOG", "info").stderr(file);
        }
        None => {
            cmd.env("RUST_LOG", "warn").stderr(Stdio::inherit());
        }
    }
    let mut child = cmd.spawn().context("starting strait mirror")?;
    let stdout = child.stdout.take().context("mirror stdout")?;
    let guard = Guard(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .context("reading the mirror's ready line")?;
    let Some(addr) = strait_mirror::daemon::parse_ready_line(line.trim_end()) else {
        bail!("strait mirror did not start; it printed {line:?}");
    };
    Ok((guard, addr))
}

pub(super) fn consumer(bootstrap: &str) -> anyhow::Result<BaseConsumer> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "strait-bench-mirror")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .context("creating a consumer")
}

/// The sum of `topic`'s high watermarks on `bootstrap`; 0 while the topic does not exist.
fn end_offsets(client: &BaseConsumer, topic: &str, partitions: i32) -> i64 {
    (0..partitions)
        .map(|p| {
            client
                .fetch_watermarks(topic, p, Duration::from_secs(5))
                .map_or(0, |(_, high)| high)
        })
        .sum()
}

/// Polls `topic` on `b` until it holds `records` records; the rate is taken from 10 % on.
/// `cpu` is read once the last record arrived.
fn arrival(
    b: &str,
    topic: &str,
    partitions: i32,
    records: u64,
    bytes: f64,
    started: Instant,
    cpu: &CpuMeter,
) -> anyhow::Result<CatchUp> {
    let client = consumer(b)?;
    let tenth = (records / 10) as i64;
    let mut from: Option<(Instant, i64)> = None;
    loop {
        let now = Instant::now();
        let copied = end_offsets(&client, topic, partitions);
        if from.is_none() && copied >= tenth {
            from = Some((now, copied));
        }
        if copied >= records as i64 {
            let (t0, c0) = from.unwrap_or((started, 0));
            let window_s = now.duration_since(t0).as_secs_f64().max(1e-3);
            let share = (copied - c0) as f64 / copied as f64;
            let (pipeline_cpu_s_per_gb, nodes_cpu_s_per_gb) = cpu.per_gb(bytes / 1e9);
            return Ok(CatchUp {
                mb_per_s: bytes * share / window_s / 1e6,
                records_per_s: (copied - c0) as f64 / window_s,
                total_s: now.duration_since(started).as_secs_f64(),
                pipeline_cpu_s_per_gb,
                nodes_cpu_s_per_gb,
            });
        }
        if started.elapsed() > PIPELINE_TIMEOUT {
            bail!(
                "{topic}: {copied} of {records} records on site b after {} s",
                PIPELINE_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(ARRIVAL_POLL_MS));
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A record value `<kind> <seq> <sent µs> ZZZ…` of `len` bytes (no tab or newline).
fn stamped(kind: char, seq: u64, len: usize) -> String {
    let mut v = format!("{kind} {seq} {} ", now_us());
    if v.len() < len {
        v.extend(std::iter::repeat_n('Z', len - v.len()));
    }
    v
}

/// Kind, sequence number and send time of a [`stamped`] value.
fn parse_stamp(value: &[u8]) -> Option<(char, u64, u64)> {
    let text = std::str::from_utf8(value.get(..64.min(value.len()))?).ok()?;
    let mut parts = text.split(' ');
    let kind = parts.next()?.chars().next()?;
    Some((
        kind,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    ))
}

/// Assigns every partition of `topic` from the beginning.
fn assign_all(consumer: &BaseConsumer, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    Ok(())
}

/// Reads measured records (kind `m`) until all `total` arrived, `stop` is set or the deadline
/// passes; returns the latency of each one's first copy.
fn collect_latencies(
    consumer: &BaseConsumer,
    total: u64,
    stop: &AtomicBool,
) -> anyhow::Result<Vec<u64>> {
    let mut seen = vec![false; total as usize];
    let mut latencies = Vec::with_capacity(total as usize);
    let deadline = Instant::now() + PIPELINE_TIMEOUT;
    while (latencies.len() as u64) < total
        && !stop.load(Ordering::SeqCst)
        && Instant::now() < deadline
    {
        let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let msg = msg?;
        let arrived = now_us();
        if let Some(('m', seq, sent)) = msg.payload().and_then(parse_stamp) {
            if let Some(slot) = seen.get_mut(seq as usize) {
                if !*slot {
                    *slot = true;
                    latencies.push(arrived.saturating_sub(sent));
                }
            }
        }
    }
    Ok(latencies)
}

/// The steady stream a latency run sends.
#[derive(Debug, Clone, Copy)]
struct Stream {
    /// Records per second.
    rate: u64,
    /// Measured records.
    records: u64,
    record_bytes: usize,
    partitions: i32,
}

/// Sends warm-up records until one arrives through the pipeline, then the stream's measured
/// records at its rate, and returns their latencies read on site a (`from`) and on site b
/// (`to`). The producer batches the way clients do by default (`linger.ms` 5, Kafka's
/// default since 4.0 and librdkafka's), which the source-alone figure includes too.
fn latency(a: &str, from: &str, b: &str, to: &str, args: &Stream) -> anyhow::Result<Latency> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", a)
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .context("creating the latency producer")?;
    let target = consumer(b)?;
    // The remote topic may not exist yet (the mirror creates it): wait for its partitions.
    let started = Instant::now();
    loop {
        let md = target.fetch_metadata(Some(to), Duration::from_secs(5));
        let ready = md.is_ok_and(|m| {
            m.topics().first().is_some_and(|t| {
                t.error().is_none() && t.partitions().len() as i32 == args.partitions
            })
        });
        if ready {
            break;
        }
        if started.elapsed() > WARM_UP_TIMEOUT {
            bail!(
                "{to} did not appear on site b within {} s",
                WARM_UP_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assign_all(&target, to, args.partitions)?;
    let source = consumer(a)?;
    assign_all(&source, from, args.partitions)?;

    let send = |kind: char, seq: u64| -> anyhow::Result<()> {
        let value = stamped(kind, seq, args.record_bytes);
        let key = seq.to_string();
        let record = BaseRecord::to(from).key(&key).payload(&value);
        producer.send(record).map_err(|(e, _)| e)?;
        producer.poll(Duration::ZERO);
        Ok(())
    };
    // Warm-up: until a record made it through the pipeline, and one reached the reader on
    // site a too (its first fetches would otherwise count as latency).
    let (mut through, mut on_source) = (false, false);
    let mut warm = 0;
    while !(through && on_source) {
        send('w', warm)?;
        warm += 1;
        let until = Instant::now() + Duration::from_millis(100);
        while Instant::now() < until {
            for (reader, seen) in [(&target, &mut through), (&source, &mut on_source)] {
                if let Some(Ok(m)) = reader.poll(Duration::from_millis(10)) {
                    if m.payload()
                        .and_then(parse_stamp)
                        .is_some_and(|s| s.0 == 'w')
                    {
                        *seen = true;
                    }
                }
            }
        }
        if started.elapsed() > WARM_UP_TIMEOUT {
            bail!(
                "no warm-up record arrived on {} within {} s",
                if through { from } else { to },
                WARM_UP_TIMEOUT.as_secs()
            );
        }
    }

    // The measured records, sent from a thread of their own at a steady rate, then filler
    // records at the same rate until every measured one arrived: kcat -P reads its input in
    // 128-byte freads, so it holds the last line back until more input comes; a stream that
    // keeps flowing (as a real one does) lets the last measured record through.
    let total = args.records;
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let done = AtomicBool::new(false);
    let (on_a, on_b) = std::thread::scope(|scope| -> anyhow::Result<(Vec<u64>, Vec<u64>)> {
        let sender = scope.spawn(|| -> anyhow::Result<()> {
            let t0 = Instant::now();
            let mut seq = 0u64;
            while seq < total || !done.load(Ordering::SeqCst) {
                if t0.elapsed() > PIPELINE_TIMEOUT {
                    break;
                }
                let due = t0 + interval.mul_f64(seq as f64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let kind = if seq < total { 'm' } else { 'f' };
                if let Err(e) = send(kind, seq) {
                    done.store(true, Ordering::SeqCst);
                    return Err(e);
                }
                seq += 1;
            }
            producer
                .flush(Duration::from_secs(60))
                .context("flushing the latency producer")?;
            Ok(())
        });
        let on_a = scope.spawn(|| collect_latencies(&source, total, &done));
        let on_b = collect_latencies(&target, total, &done);
        done.store(true, Ordering::SeqCst);
        let on_a = on_a
            .join()
            .map_err(|_| anyhow::anyhow!("the source-side reader panicked"))?;
        sender
            .join()
            .map_err(|_| anyhow::anyhow!("the latency sender panicked"))??;
        Ok((on_a?, on_b?))
    })?;
    for (site, topic, got) in [("a", from, &on_a), ("b", to, &on_b)] {
        if (got.len() as u64) < total {
            bail!(
                "only {} of {total} latency records arrived on {topic} (site {site}) within {} s",
                got.len(),
                PIPELINE_TIMEOUT.as_secs()
            );
        }
    }
    Ok(Latency {
        source: Percentiles::of(on_a),
        target: Percentiles::of(on_b),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_reads_back_and_has_the_asked_length() {
        let v = stamped('m', 42, 100);
        assert_eq!(v.len(), 100);
        assert!(!v.contains(['\t', '\n']));
        let (kind, seq, sent) = parse_stamp(v.as_bytes()).unwrap();
        assert_eq!((kind, seq), ('m', 42));
        assert!(sent <= now_us());
        assert_eq!(parse_stamp(b"garbage"), None);
    }
}
