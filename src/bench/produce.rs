//! `strait bench produce`: broker ingest measured against this machine's own write rate.
//!
//! The benchmark starts a fresh broker as a child process of this same binary on an ephemeral
//! loopback port, produces fixed-size records with librdkafka (through the `rdkafka` crate) at
//! acks=1 and acks=all, and in the same run writes the same number of bytes sequentially to a
//! file in the same directory with the same flush policy. The ratio of the two is the figure
//! that matters; absolute numbers vary from machine to machine.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use super::ChildBroker;

/// Options of `strait bench produce`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProduceBenchArgs {
    /// Records to produce in each run (acks=1, then acks=all).
    #[arg(long, default_value_t = 300_000)]
    pub records: u64,
    /// Size of each record value in bytes.
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
    /// Records allowed in flight (sent, not yet acknowledged). Bounds client-side queueing so
    /// the latency figures measure the broker, not the depth of the producer's buffer.
    #[arg(long, default_value_t = 20_000)]
    pub in_flight_records: u64,
    /// fsync after this many records, on the broker (log.flush_messages) and on the raw write
    /// alike. Unset means never, Kafka's default.
    #[arg(long)]
    pub flush_messages: Option<u64>,
    /// Directory for the broker's data and the raw-write file (default: a fresh temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Collects delivery latencies; the opaque of each record is its send time in nanoseconds
/// since `start`.
struct LatencyContext {
    start: Instant,
    latencies_us: Mutex<Vec<u32>>,
    delivered: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for LatencyContext {}

impl ProducerContext for LatencyContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_at_ns: usize) {
        let now_ns = self.start.elapsed().as_nanos();
        let latency_us = (now_ns.saturating_sub(sent_at_ns as u128) / 1_000) as u32;
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                self.latencies_us
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(latency_us);
            }
            Err(_) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One run's result.
#[derive(Debug, Clone, Copy)]
pub struct RunResult {
    /// Megabytes (10^6 bytes) of record values per second.
    pub mb_per_s: f64,
    /// Records per second.
    pub records_per_s: f64,
    /// Median delivery latency in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile delivery latency in milliseconds.
    pub p99_ms: f64,
}

fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted_us.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted_us[idx]) / 1_000.0
}

/// Produces `args.records` records of `args.record_bytes` to `topic` (created by the broker on
/// first use unless it exists) with `acks`, at most `args.in_flight_records` unacknowledged.
pub(super) fn run_producer(
    bootstrap: &str,
    topic: &str,
    acks: &str,
    args: &ProduceBenchArgs,
) -> anyhow::Result<RunResult> {
    let context = LatencyContext {
        start: Instant::now(),
        latencies_us: Mutex::new(Vec::with_capacity(args.records as usize)),
        delivered: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    };
    let producer: ThreadedProducer<LatencyContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", acks)
        .set("linger.ms", "5")
        .set("enable.idempotence", "false")
        .set(
            "queue.buffering.max.messages",
            args.in_flight_records.to_string(),
        )
        .create_with_context(context)
        .context("creating the producer")?;
    // 'Z': printable, no tab or newline (see the key).
    let value = vec![0x5au8; args.record_bytes];
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < args.records {
        let ctx = producer.context();
        let in_flight =
            sent - ctx.delivered.load(Ordering::Relaxed) - ctx.failed.load(Ordering::Relaxed);
        if in_flight >= args.in_flight_records {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        // Text (hex), so that line-based tools such as kcat can carry the records too.
        let key = format!("{sent:016x}");
        let sent_at_ns = ctx.start.elapsed().as_nanos() as usize;
        let record = BaseRecord::with_opaque_to(topic, sent_at_ns)
            .key(key.as_bytes())
            .payload(&value[..]);
        match producer.send(record) {
            Ok(()) => sent += 1,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                std::thread::sleep(Duration::from_micros(200));
            }
            Err((e, _)) => bail!("produce failed: {e}"),
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .context("flushing the producer")?;
    let elapsed = started.elapsed().as_secs_f64();
    let ctx = producer.context();
    let failed = ctx.failed.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} records failed to deliver with acks={acks}");
    }
    let mut lat = std::mem::take(&mut *ctx.latencies_us.lock().unwrap_or_else(|p| p.into_inner()));
    lat.sort_unstable();
    let bytes = args.records as f64 * args.record_bytes as f64;
    Ok(RunResult {
        mb_per_s: bytes / elapsed / 1e6,
        records_per_s: args.records as f64 / elapsed,
        p50_ms: percentile_ms(&lat, 0.50),
        p99_ms: percentile_ms(&lat, 0.99),
    })
}

/// Writes `total_bytes` sequentially in `chunk_bytes` writes, fsyncing every `fsync_every_bytes`
/// (and never when `None`), and returns MB/s.
pub fn raw_write_mb_per_s(
    path: &Path,
    total_bytes: u64,
    chunk_bytes: usize,
    fsync_every_bytes: Option<u64>,
) -> anyhow::Result<f64> {
    let chunk = vec![0xa5u8; chunk_bytes];
    let mut file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let started = Instant::now();
    let mut written = 0u64;
    let mut since_sync = 0u64;
    while written < total_bytes {
        file.write_all(&chunk)?;
        written += chunk_bytes as u64;
        since_sync += chunk_bytes as u64;
        if let Some(every) = fsync_every_bytes {
            if since_sync >= every {
                file.sync_data()?;
                since_sync = 0;
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(path).ok();
    Ok(written as f64 / elapsed / 1e6)
}

/// CPU used during one producer run, by the producer (this process) and by the broker.
#[derive(Debug, Clone, Copy)]
struct RunCpu {
    client_s: f64,
    broker_s: f64,
    cores: usize,
}

/// Runs `run` and returns its result with the CPU time this process and the broker used
/// meanwhile (`None` where `/proc` cannot tell).
fn measure_cpu(
    broker: &ChildBroker,
    run: impl FnOnce() -> anyhow::Result<RunResult>,
) -> anyhow::Result<(RunResult, Option<RunCpu>)> {
    let me = std::process::id();
    let before = super::cpu_seconds(me).zip(broker.cpu_seconds());
    let result = run()?;
    let after = super::cpu_seconds(me).zip(broker.cpu_seconds());
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let cpu = before
        .zip(after)
        .map(|((client_0, broker_0), (client_1, broker_1))| RunCpu {
            client_s: client_1 - client_0,
            broker_s: broker_1 - broker_0,
            cores,
        });
    Ok((result, cpu))
}

fn print_run(label: &str, r: &RunResult, raw_mb_per_s: f64) {
    println!(
        "{label:<9} {:>8.1} MB/s {:>10.0} records/s   p50 {:>7.2} ms   p99 {:>7.2} ms   ratio to raw write {:.2}",
        r.mb_per_s,
        r.records_per_s,
        r.p50_ms,
        r.p99_ms,
        r.mb_per_s / raw_mb_per_s
    );
}

/// Runs the produce benchmark and prints its figures.
pub async fn produce(args: ProduceBenchArgs) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || produce_blocking(&args))
        .await
        .context("benchmark thread")?
}

fn produce_blocking(args: &ProduceBenchArgs) -> anyhow::Result<()> {
    if args.records == 0 || args.record_bytes == 0 || args.in_flight_records == 0 {
        bail!("--records, --record-bytes and --in-flight-records must be positive");
    }
    let (_temp, dir) = super::work_dir(args.dir.as_deref())?;
    let total_bytes = args.records * args.record_bytes as u64;
    let fsync_every_bytes = args.flush_messages.map(|n| n * args.record_bytes as u64);
    let policy = match args.flush_messages {
        None => "no fsync (Kafka's default flush policy)".to_string(),
        Some(n) => format!("fsync every {n} records"),
    };
    println!(
        "strait bench produce: {} records x {} B, {} in flight, {policy}, in {}",
        args.records,
        args.record_bytes,
        args.in_flight_records,
        dir.display()
    );
    // The raw rate uses 1 MiB writes, the best case for the device. Page-cache write speed on
    // a VM swings widely between passes (hypervisor memory, writeback), so it is measured five
    // times around the broker runs; the ratio uses the median pass, and the ratio to the
    // fastest pass is printed too.
    let raw_path = dir.join("raw-write.bin");
    let raw_pass = || raw_write_mb_per_s(&raw_path, total_bytes, 1 << 20, fsync_every_bytes);
    let mut raw_mb_per_s = vec![raw_pass()?, raw_pass()?];
    let flush_yaml = args
        .flush_messages
        .map(|n| format!("  flush_messages: {n}\n"))
        .unwrap_or_default();
    let broker = ChildBroker::start(&dir, "", &flush_yaml)?;
    let acks1 = measure_cpu(&broker, || {
        run_producer(&broker.bootstrap, "bench-acks-1", "1", args)
    })?;
    raw_mb_per_s.push(raw_pass()?);
    let acks_all = measure_cpu(&broker, || {
        run_producer(&broker.bootstrap, "bench-acks-all", "all", args)
    })?;
    drop(broker);
    raw_mb_per_s.push(raw_pass()?);
    raw_mb_per_s.push(raw_pass()?);
    let passes: Vec<String> = raw_mb_per_s.iter().map(|r| format!("{r:.0}")).collect();
    raw_mb_per_s.sort_by(f64::total_cmp);
    let raw = raw_mb_per_s[raw_mb_per_s.len() / 2];
    let raw_max = raw_mb_per_s[raw_mb_per_s.len() - 1];
    println!(
        "raw write {raw:>8.1} MB/s   median of passes {} MB/s (sequential 1 MiB writes, same volume, {policy})",
        passes.join(" / ")
    );
    let (acks1, acks1_cpu) = acks1;
    let (acks_all, acks_all_cpu) = acks_all;
    print_run("acks=1", &acks1, raw);
    print_run("acks=all", &acks_all, raw);
    let gb = total_bytes as f64 / 1e9;
    for (label, cpu) in [("acks=1", acks1_cpu), ("acks=all", acks_all_cpu)] {
        if let Some(cpu) = cpu {
            println!(
                "{label:<9} CPU seconds per GB of records: producer (this process) {:.2}, broker {:.2}; with {} core(s) and both at that cost, ingest is bounded at {:.0} MB/s",
                cpu.client_s / gb,
                cpu.broker_s / gb,
                cpu.cores,
                cpu.cores as f64 * 1e3 / ((cpu.client_s + cpu.broker_s) / gb)
            );
        }
    }
    let ingest = acks_all.mb_per_s.min(acks1.mb_per_s);
    let ratio = ingest / raw;
    println!(
        "result: broker ingest / raw write = {ratio:.2} (target >= 0.50): {}; against the fastest raw pass: {:.2}",
        if ratio >= 0.5 { "met" } else { "NOT met" },
        ingest / raw_max
    );
    Ok(())
}
