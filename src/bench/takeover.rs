//! `strait bench takeover`: how long the partitions of a flow take to resume after the
//! mirror restarts, between two local three-node sites: first after a clean stop (SIGTERM:
//! everything in flight recorded, the group left), the reference, then after SIGKILLs in the
//! middle of a catch-up, when the new process must read each partition's target tail past
//! the recorded cursor before it sends (the reconciliation) and the group must first expire
//! the killed member. A partition has resumed when its target end moves past where it was
//! when the process stopped. At the end every record must be on the target exactly once
//! (the target's end offsets add up to the backlog).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::consumer::{BaseConsumer, Consumer};

use super::mirror::{consumer, spawn_mirror_logged, Guard, NODE_YAML};
use super::replication::{create_topic, produce, start_cluster};
use super::ProduceBenchArgs;

/// How long the partitions get to resume after a restart.
const RESUME_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the whole backlog may take.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(600);
/// How often the target's end offsets are read.
const POLL_MS: u64 = 20;
/// The line the mirror logs when a partition's reconciliation found records to take.
const RECONCILE_LINE: &str = "found records of this flow on the target past the recorded cursor";

/// Options of `strait bench takeover`.
#[derive(Debug, Clone, clap::Args)]
pub struct TakeoverBenchArgs {
    /// Records in the backlog.
    #[arg(long, default_value_t = 300_000)]
    pub records: u64,
    /// Size of each record value in bytes.
    #[arg(long, default_value_t = 512)]
    pub record_bytes: usize,
    /// Partitions of the mirrored topic.
    #[arg(long, default_value_t = 24)]
    pub partitions: i32,
    /// SIGKILLs of the mirror during the catch-up (after one clean stop).
    #[arg(long, default_value_t = 3)]
    pub kills: u32,
    /// Directory for both sites' data and the mirror's index (default: a fresh temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// The end offset of every partition of `topic` (an error rather than a guess: a missing
/// figure would fake a resume).
fn ends(client: &BaseConsumer, topic: &str, partitions: i32) -> anyhow::Result<Vec<i64>> {
    (0..partitions)
        .map(|p| {
            client
                .fetch_watermarks(topic, p, Duration::from_secs(5))
                .map(|(_, high)| high)
                .with_context(|| format!("reading the end offset of {topic}/{p}"))
        })
        .collect()
}

/// Seconds until each partition that still had records to copy moved past `at_stop`.
fn resume_times(
    target: &BaseConsumer,
    partitions: i32,
    at_stop: &[i64],
    source_ends: &[i64],
    started: Instant,
) -> anyhow::Result<Vec<f64>> {
    let mut waiting: Vec<usize> = (0..at_stop.len())
        .filter(|&p| at_stop[p] < source_ends[p])
        .collect();
    let mut times = Vec::with_capacity(waiting.len());
    while !waiting.is_empty() {
        if started.elapsed() > RESUME_TIMEOUT {
            bail!(
                "{} partitions did not resume within {} s",
                waiting.len(),
                RESUME_TIMEOUT.as_secs()
            );
        }
        let now = ends(target, "a.backlog", partitions)?;
        let elapsed = started.elapsed().as_secs_f64();
        waiting.retain(|&p| {
            let moved = now[p] > at_stop[p];
            if moved {
                times.push(elapsed);
            }
            !moved
        });
        std::thread::sleep(Duration::from_millis(POLL_MS));
    }
    times.sort_by(f64::total_cmp);
    Ok(times)
}

/// Stops the mirror: SIGTERM and a wait for its exit, or SIGKILL.
fn stop(mut mirror: Guard, kill: bool) -> anyhow::Result<()> {
    if kill {
        mirror.0.kill().context("SIGKILL of the mirror")?;
        mirror.0.wait()?;
        return Ok(());
    }
    let pid = i32::try_from(mirror.0.id()).context("pid")?;
    // SAFETY: kill(2) on our own child, which is not reaped yet (the guard owns it).
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if mirror.0.try_wait()?.is_some() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the mirror did not stop within 60 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Runs `strait bench takeover`.
pub async fn takeover(args: TakeoverBenchArgs) -> anyhow::Result<()> {
    if args.records < 1_000 || args.record_bytes < 16 || !(1..=1000).contains(&args.partitions) {
        bail!("--records must be at least 1000, --record-bytes at least 16, --partitions between 1 and 1000");
    }
    if !(1..=10).contains(&args.kills) {
        bail!("--kills must be between 1 and 10");
    }
    let (_temp, dir) = super::work_dir(args.dir.as_deref())?;
    println!(
        "strait bench takeover: two sites of 3 nodes, {} partitions, backlog {} records x {} B; one clean stop, then {} SIGKILLs of the mirror during the catch-up; in {}",
        args.partitions, args.records, args.record_bytes, args.kills, dir.display()
    );
    let site_a = start_cluster(&dir.join("site-a"), NODE_YAML)?;
    let site_b = start_cluster(&dir.join("site-b"), NODE_YAML)?;
    let (a, b) = (super::bootstrap_of(&site_a), super::bootstrap_of(&site_b));
    create_topic(
        &a,
        "backlog",
        args.partitions,
        3,
        &[("min.insync.replicas", "2")],
    )
    .await?;
    // The backlog arrives in one chunk per stop, so that the mirror is in the middle of a
    // catch-up at every stop however fast it copies.
    let chunk = ProduceBenchArgs {
        records: args.records / u64::from(args.kills + 1),
        record_bytes: args.record_bytes,
        in_flight_records: 20_000,
        flush_messages: None,
        dir: None,
    };
    let records = chunk.records * u64::from(args.kills + 1);

    let mirror_dir = dir.join("mirror");
    std::fs::create_dir_all(&mirror_dir)?;
    let config = mirror_dir.join("mirror.yaml");
    std::fs::write(
        &config,
        format!("# Written by strait bench takeover.\nclusters:\n  a:\n    bootstrap_servers: {a}\n  b:\n    bootstrap_servers: {b}\nflows:\n  - source: a\n    target: b\n    topics:\n      include: [backlog]\n    topic_refresh_interval_ms: 500\n"),
    )?;
    let (data, log) = (mirror_dir.join("data"), mirror_dir.join("mirror.log"));
    let partitions = args.partitions;
    let kills = args.kills;
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let source = consumer(&a)?;
        let target = consumer(&b)?;
        let total = |t: &BaseConsumer| {
            ends(t, "a.backlog", partitions).map(|e| e.iter().sum::<i64>())
        };
        let mut mirror: Option<Guard> = None;
        let mut rounds: Vec<(String, Vec<f64>)> = Vec::new();
        for round in 0..=kills {
            let kill = round > 0;
            // The chunk is loaded while the mirror is away, so that it is in the middle of
            // copying it at the stop however fast it copies.
            if let Some(m) = mirror.take() {
                stop(m, false)?;
            }
            println!("loading {} records on site a...", chunk.records);
            runtime.block_on(produce(&a, "backlog", &chunk))?;
            let m = spawn_mirror_logged(&config, &data, Some(&log))?.0;
            let source_ends = ends(&source, "backlog", partitions)?;
            let loaded = chunk.records * u64::from(round + 1);
            anyhow::ensure!(
                source_ends.iter().sum::<i64>() == loaded as i64,
                "site a holds {} records, not {loaded}",
                source_ends.iter().sum::<i64>()
            );
            // The stop comes when half of the new chunk is on the target.
            let at = (loaded - chunk.records / 2) as f64;
            let deadline = Instant::now() + CATCH_UP_TIMEOUT;
            // Before the mirror creates the remote topic there is no end to read: keep waiting.
            while (total(&target).unwrap_or(0) as f64) < at {
                anyhow::ensure!(Instant::now() < deadline, "the mirror did not reach {at:.0} records");
                std::thread::sleep(Duration::from_millis(POLL_MS));
            }
            stop(m, kill)?;
            let at_stop = ends(&target, "a.backlog", partitions)?;
            let started = Instant::now();
            mirror = Some(spawn_mirror_logged(&config, &data, Some(&log))?.0);
            let times = resume_times(&target, partitions, &at_stop, &source_ends, started)?;
            let what = if kill {
                format!("after SIGKILL {round}")
            } else {
                "after a clean stop".to_string()
            };
            println!(
                "  {what:<18} at {:>7} records on the target: {} partitions resumed, median {:.2} s, slowest {:.2} s",
                at_stop.iter().sum::<i64>(),
                times.len(),
                quantile(&times, 0.5),
                quantile(&times, 1.0)
            );
            rounds.push((what, times));
        }
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        while total(&target).unwrap_or(0) < records as i64 {
            anyhow::ensure!(Instant::now() < deadline, "the mirror did not copy the whole backlog");
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_secs(2));
        let on_target = total(&target)?;
        drop(mirror);
        anyhow::ensure!(
            on_target == records as i64,
            "the target holds {on_target} records for a backlog of {records}: some were copied twice"
        );
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let reconciled: Vec<u64> = text
            .lines()
            .filter(|l| l.contains(RECONCILE_LINE))
            .filter_map(|l| {
                let at = l.find("elapsed_ms=")? + "elapsed_ms=".len();
                l[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
            })
            .collect();
        let taken: u64 = text
            .lines()
            .filter(|l| l.contains(RECONCILE_LINE))
            .filter_map(|l| {
                let at = l.find(" records=")? + " records=".len();
                l[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse::<u64>().ok()
            })
            .sum();
        let clean = quantile(&rounds[0].1, 0.5);
        let killed: Vec<f64> = rounds[1..].iter().map(|(_, t)| quantile(t, 0.5)).collect();
        let killed_median = {
            let mut k = killed.clone();
            k.sort_by(f64::total_cmp);
            quantile(&k, 0.5)
        };
        println!(
            "reconciliation: {} partitions found records of the flow past the recorded cursor ({taken} records taken, not sent again), longest read {} ms",
            reconciled.len(),
            reconciled.iter().max().copied().unwrap_or(0)
        );
        println!(
            "resume after SIGKILL (median of the kills' medians) {killed_median:.2} s vs after a clean stop {clean:.2} s: ratio {:.2}",
            if clean > 0.0 { killed_median / clean } else { f64::NAN }
        );
        println!("records on the target: {on_target} of {records} (a loss and a duplicate would cancel out in this count; the e2e tests check records one by one)");
        Ok(())
    })
    .await
    .context("the takeover benchmark panicked")??;
    drop(site_a);
    drop(site_b);
    Ok(())
}
