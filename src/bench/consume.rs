//! `strait bench consume`: a consumer group of three reading a topic, next to one consumer that
//! has every partition assigned, on the same broker and the same data in one run.
//!
//! Both read the whole topic from the beginning. Throughput is measured from the first record
//! to the last, so the group's formation (JoinGroup/SyncGroup and
//! `group.initial.rebalance.delay.ms`) is reported separately instead of diluting the rate.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use super::ChildBroker;

/// How long each phase may take before the benchmark gives up.
const PHASE_TIMEOUT: Duration = Duration::from_secs(300);
const TOPIC: &str = "bench-consume";

/// Options of `strait bench consume`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConsumeBenchArgs {
    /// Records in the topic.
    #[arg(long, default_value_t = 300_000)]
    pub records: u64,
    /// Size of each record value in bytes.
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// Members of the consumer group.
    #[arg(long, default_value_t = 3)]
    pub consumers: usize,
}

/// What one read of the whole topic achieved.
struct ReadResult {
    records: u64,
    bytes: u64,
    /// From the first record to the last.
    reading: Duration,
    /// From creating the consumers to the first record.
    until_first_record: Duration,
}

impl ReadResult {
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.reading.as_secs_f64().max(1e-9) / 1e6
    }
    fn records_per_s(&self) -> f64 {
        self.records as f64 / self.reading.as_secs_f64().max(1e-9)
    }
}

fn fill_topic(bootstrap: &str, args: &ConsumeBenchArgs) -> anyhow::Result<()> {
    let producer: ThreadedProducer<_> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "1")
        .set("linger.ms", "5")
        .set("enable.idempotence", "false")
        .set("queue.buffering.max.messages", "50000")
        .create()
        .context("creating the producer")?;
    let value = vec![0x5au8; args.record_bytes];
    let deadline = Instant::now() + PHASE_TIMEOUT;
    let mut sent = 0u64;
    while sent < args.records {
        let key = sent.to_be_bytes();
        match producer.send(
            BaseRecord::<[u8], [u8]>::to(TOPIC)
                .key(&key[..])
                .payload(&value[..]),
        ) {
            Ok(()) => sent += 1,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                if Instant::now() > deadline {
                    bail!("filling the topic took longer than {PHASE_TIMEOUT:?}");
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => bail!("produce failed: {e}"),
        }
    }
    producer
        .flush(PHASE_TIMEOUT)
        .context("flushing the producer")?;
    Ok(())
}

fn consumer_config(bootstrap: &str, group: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", "10000");
    c
}

/// Shared progress of the consumers of one run.
#[derive(Default)]
struct Progress {
    records: AtomicU64,
    bytes: AtomicU64,
    first: Mutex<Option<Instant>>,
    last: Mutex<Option<Instant>>,
    done: AtomicBool,
}

impl Progress {
    fn record(&self, bytes: usize, target: u64) {
        let now = Instant::now();
        self.first
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(now);
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        if self.records.fetch_add(1, Ordering::Relaxed) + 1 >= target {
            self.done.store(true, Ordering::Relaxed);
        }
    }

    fn result(&self, started: Instant) -> anyhow::Result<ReadResult> {
        let first = (*self.first.lock().unwrap_or_else(|p| p.into_inner()))
            .context("no record was consumed")?;
        let last = (*self.last.lock().unwrap_or_else(|p| p.into_inner())).unwrap_or(first);
        Ok(ReadResult {
            records: self.records.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            reading: last - first,
            until_first_record: first - started,
        })
    }
}

fn poll_until_done(
    consumer: &BaseConsumer,
    progress: &Progress,
    target: u64,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + PHASE_TIMEOUT;
    while !progress.done.load(Ordering::Relaxed) {
        if Instant::now() > deadline {
            bail!(
                "consumed {} of {target} records within {PHASE_TIMEOUT:?}",
                progress.records.load(Ordering::Relaxed)
            );
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => progress.record(m.payload_len(), target),
            Some(Err(e)) => bail!("consume failed: {e}"),
            None => {}
        }
    }
    Ok(())
}

fn read_assigned(bootstrap: &str, args: &ConsumeBenchArgs) -> anyhow::Result<ReadResult> {
    let started = Instant::now();
    let consumer: BaseConsumer = consumer_config(bootstrap, "bench-assigned")
        .set("enable.auto.commit", "false")
        .create()
        .context("creating the consumer")?;
    let mut list = TopicPartitionList::new();
    for p in 0..args.partitions {
        list.add_partition_offset(TOPIC, p, Offset::Beginning)
            .context("building the assignment")?;
    }
    consumer.assign(&list).context("assigning partitions")?;
    let progress = Progress::default();
    poll_until_done(&consumer, &progress, args.records)?;
    progress.result(started)
}

fn read_group(bootstrap: &str, args: &ConsumeBenchArgs) -> anyhow::Result<ReadResult> {
    let started = Instant::now();
    let progress = Arc::new(Progress::default());
    let workers: Vec<_> = (0..args.consumers)
        .map(|_| {
            let progress = progress.clone();
            let bootstrap = bootstrap.to_string();
            let target = args.records;
            std::thread::spawn(move || -> anyhow::Result<()> {
                let consumer: BaseConsumer = consumer_config(&bootstrap, "bench-group")
                    .create()
                    .context("creating a group member")?;
                consumer.subscribe(&[TOPIC]).context("subscribing")?;
                poll_until_done(&consumer, &progress, target)
            })
        })
        .collect();
    for w in workers {
        w.join()
            .map_err(|_| anyhow::anyhow!("a group member thread panicked"))??;
    }
    progress.result(started)
}

/// Runs the consume benchmark and prints its figures.
pub async fn consume(args: ConsumeBenchArgs) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || consume_blocking(&args))
        .await
        .context("benchmark thread")?
}

fn consume_blocking(args: &ConsumeBenchArgs) -> anyhow::Result<()> {
    if args.records == 0 || args.record_bytes == 0 || args.partitions < 1 || args.consumers == 0 {
        bail!("--records, --record-bytes, --partitions and --consumers must be positive");
    }
    let dir = tempfile::tempdir().context("creating a temp dir")?;
    let broker = ChildBroker::start(
        dir.path(),
        &format!("num_partitions: {}\n", args.partitions),
        "",
    )?;
    println!(
        "strait bench consume: {} records x {} B over {} partitions",
        args.records, args.record_bytes, args.partitions
    );
    fill_topic(&broker.bootstrap, args)?;
    let single = read_assigned(&broker.bootstrap, args)?;
    let group = read_group(&broker.bootstrap, args)?;
    if group.records != args.records {
        println!(
            "note: the group consumed {} records for {} in the topic (a rebalance during the run re-delivers)",
            group.records, args.records
        );
    }
    println!(
        "single assigned consumer {:>8.1} MB/s {:>10.0} records/s",
        single.mb_per_s(),
        single.records_per_s()
    );
    println!(
        "group of {} consumers     {:>8.1} MB/s {:>10.0} records/s   first record after {:.1} s (group formation, incl. group.initial.rebalance.delay.ms)",
        args.consumers,
        group.mb_per_s(),
        group.records_per_s(),
        group.until_first_record.as_secs_f64()
    );
    println!(
        "result: group / single = {:.2} (single consumer's first record after {:.2} s)",
        group.mb_per_s() / single.mb_per_s(),
        single.until_first_record.as_secs_f64()
    );
    Ok(())
}
