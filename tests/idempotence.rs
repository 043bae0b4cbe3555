//! End-to-end tests of idempotent producers: a real librdkafka producer with
//! `enable.idempotence=true` against a real `strait broker` process that is
//! frozen (SIGSTOP) or killed (SIGKILL) while requests are in flight. The
//! client times out and resends batches the broker has already written or is
//! about to write; every record must still land exactly once, in order.

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::Offset;

const LONG: Duration = Duration::from_secs(180);
/// The producer's request and socket timeouts; the broker is frozen for longer.
const CLIENT_TIMEOUT_MS: &str = "2000";
/// How long the broker stays frozen: well past `CLIENT_TIMEOUT_MS`, so every request in
/// flight at that moment times out on the client and is sent again.
const FREEZE: Duration = Duration::from_secs(5);
/// The frozen-broker test sends this many records, then sleeps [`PACE_INTERVAL`]: 2,000
/// records a second, so the stream outlasts both freezes.
const PACE_RECORDS: usize = 100;
const PACE_INTERVAL: Duration = Duration::from_millis(50);
/// The broker's log line for a batch it recognised as a retry (debug level, target
/// `strait_broker::log`).
const DUPLICATE_LOG_LINE: &str = "duplicate batch from an idempotent producer";

fn idempotent_producer(broker: &Broker) -> TestProducer {
    broker.producer(&[
        ("enable.idempotence", "true"),
        ("acks", "all"),
        ("request.timeout.ms", CLIENT_TIMEOUT_MS),
        ("socket.timeout.ms", CLIENT_TIMEOUT_MS),
        ("message.timeout.ms", "150000"),
        // Many small batches, so several requests are in flight when the broker stalls.
        ("batch.num.messages", "100"),
        ("linger.ms", "2"),
        ("retry.backoff.ms", "100"),
        ("reconnect.backoff.ms", "50"),
        ("reconnect.backoff.max.ms", "500"),
    ])
}

/// Reads every partition back and checks that each produced record is stored exactly once,
/// at the offset its delivery report named, that offsets are dense from 0 and that records
/// of a partition are in the order they were produced.
fn assert_exactly_once(
    broker: &Broker,
    topic: &str,
    partitions: i32,
    records: &[TestRecord],
    acked: &[(i32, i64)],
) {
    let mut seen = vec![false; records.len()];
    let mut total = 0usize;
    for partition in 0..partitions {
        let (low, high) = broker.watermarks(topic, partition);
        assert_eq!(low, 0, "partition {partition}: log start");
        total += high as usize;
        let got = broker.consume_all(topic, partition, Offset::Beginning, high as usize, LONG);
        let mut previous_index = None;
        for (position, record) in got.iter().enumerate() {
            assert_eq!(
                record.offset, position as i64,
                "partition {partition}: offsets are not dense from 0"
            );
            let index = sequence_of(record.key.as_deref().expect("every record has a key"));
            assert!(
                !seen[index],
                "record #{index} is stored twice (again at {partition}/{})",
                record.offset
            );
            seen[index] = true;
            assert_record_eq(&records[index], record, &format!("record #{index}"));
            assert_eq!(
                acked[index],
                (partition, record.offset),
                "record #{index}: stored elsewhere than its delivery report said"
            );
            assert!(
                previous_index.is_none_or(|p| p < index),
                "partition {partition}: record #{index} stored after #{previous_index:?}, \
                 out of production order"
            );
            previous_index = Some(index);
        }
    }
    assert_eq!(
        total,
        records.len(),
        "sum of high watermarks: every record exactly once"
    );
    assert!(seen.iter().all(|s| *s), "every record is stored");
}

#[test]
fn retries_after_a_frozen_broker_store_each_record_exactly_once() {
    const N: usize = 20_000;
    const PARTITIONS: i32 = 3;
    let broker = Broker::start_with_env(&[("RUST_LOG", "info,strait_broker::log=debug")]);
    let topic = unique("idem-freeze");
    broker.create_topic(&topic, PARTITIONS, &[]);
    let base_ts = now_ms();
    let records: Vec<TestRecord> = (0..N)
        .map(|i| generated_record("freeze", i, base_ts))
        .collect();

    let producer = idempotent_producer(&broker);
    let acked_count = producer.acked_counter();
    let acked = thread::scope(|s| {
        let faults = s.spawn(|| {
            // Freeze twice while records stream, each time with requests in flight.
            for threshold in [N / 10, N / 2] {
                wait_for(&format!("{threshold} acknowledged records"), LONG, || {
                    (acked_count.load(Ordering::Relaxed) as usize >= threshold).then_some(())
                });
                broker.sigstop();
                thread::sleep(FREEZE);
                broker.sigcont();
            }
        });
        // Paced, so records are still being sent when each freeze lands: sent as fast as
        // the client can, the whole stream can be acknowledged before the first SIGSTOP
        // arrives, leaving nothing in flight to retry.
        let deadline = Instant::now() + LONG;
        for (i, record) in records.iter().enumerate() {
            producer
                .send(&topic, None, i, record, deadline)
                .unwrap_or_else(|e| panic!("enqueue record #{i}: {e}"));
            if i % PACE_RECORDS == PACE_RECORDS - 1 {
                thread::sleep(PACE_INTERVAL);
                producer.poll(Duration::ZERO);
            }
        }
        producer.flush(deadline.saturating_duration_since(Instant::now()));
        faults.join().expect("fault thread");
        let mut deliveries = producer.take_deliveries();
        deliveries.sort_by_key(|d| d.index);
        assert_eq!(deliveries.len(), N, "one delivery report per record");
        deliveries
            .into_iter()
            .map(|d| match d.result {
                Ok(at) => at,
                Err(e) => panic!("record #{} was not acknowledged: {e}", d.index),
            })
            .collect::<Vec<(i32, i64)>>()
    });
    drop(producer);

    // The test is only meaningful if the broker did see retries of batches it had written.
    let duplicates = broker.log_lines_containing(DUPLICATE_LOG_LINE);
    assert!(
        duplicates > 0,
        "no duplicate batch reached the broker, so this run did not exercise deduplication"
    );
    eprintln!("broker answered {duplicates} duplicate batches with their original offsets");
    assert_exactly_once(&broker, &topic, PARTITIONS, &records, &acked);
}

/// The last batch header of a partition, read from its segment files:
/// (base offset, last offset delta, producer id, producer epoch, base sequence).
fn last_batch_header(partition_dir: &Path) -> (i64, i32, i64, i16, i32) {
    let mut segments: Vec<_> = std::fs::read_dir(partition_dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", partition_dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segments.sort();
    let mut last = None;
    for segment in segments {
        let bytes = std::fs::read(&segment).expect("read segment");
        let mut at = 0usize;
        while at + 61 <= bytes.len() {
            let b = &bytes[at..];
            let i64_at = |i: usize| i64::from_be_bytes(b[i..i + 8].try_into().unwrap());
            let i32_at = |i: usize| i32::from_be_bytes(b[i..i + 4].try_into().unwrap());
            let i16_at = |i: usize| i16::from_be_bytes(b[i..i + 2].try_into().unwrap());
            last = Some((i64_at(0), i32_at(23), i64_at(43), i16_at(51), i32_at(53)));
            at += 12 + i32_at(8) as usize;
        }
    }
    last.expect("the partition holds at least one batch")
}

/// An uncompressed batch of `count` records stamped as producer `producer_id` at `epoch`,
/// sequences from `base_sequence` on.
fn producer_batch(producer_id: i64, epoch: i16, base_sequence: i32, count: usize) -> Vec<u8> {
    let values: Vec<Vec<u8>> = (0..count)
        .map(|i| format!("raw-{base_sequence}-{i}").into_bytes())
        .collect();
    let records: Vec<(Option<&[u8]>, &[u8])> = values.iter().map(|v| (None, &v[..])).collect();
    let mut batch = encode_record_batch(&records, now_ms());
    batch[43..51].copy_from_slice(&producer_id.to_be_bytes());
    batch[51..53].copy_from_slice(&epoch.to_be_bytes());
    batch[53..57].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = crc32c(&batch[BATCH_CRC_COVERED_START..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch
}

#[test]
fn producer_state_is_rebuilt_from_the_log_after_sigkill() {
    const N: usize = 10_000;
    const PARTITIONS: i32 = 2;
    let mut broker = Broker::start();
    let topic = unique("idem-kill");
    broker.create_topic(&topic, PARTITIONS, &[]);
    let base_ts = now_ms();
    let records: Vec<TestRecord> = (0..N)
        .map(|i| generated_record("kill", i, base_ts))
        .collect();

    // The same producer instance keeps going across a SIGKILL and a restart on the same
    // address: after the restart it resends what was in flight, which the broker must
    // recognise from the producer state it rebuilt from the log.
    let producer = idempotent_producer(&broker);
    let acked_count = producer.acked_counter();
    let acked = thread::scope(|s| {
        let broker = &mut broker;
        let faults = s.spawn(move || {
            wait_for("a quarter of the records acknowledged", LONG, || {
                (acked_count.load(Ordering::Relaxed) as usize >= N / 4).then_some(())
            });
            broker.sigkill();
            broker.restart_on_same_port();
        });
        let deliveries = producer.produce_collect(&topic, None, &records, LONG);
        faults.join().expect("fault thread");
        deliveries
            .into_iter()
            .map(|d| match d.result {
                Ok(at) => at,
                Err(e) => panic!(
                    "record #{} was not acknowledged (no OUT_OF_ORDER_SEQUENCE or other error \
                     is acceptable across a restart): {e}",
                    d.index
                ),
            })
            .collect::<Vec<_>>()
    });
    drop(producer);
    assert_exactly_once(&broker, &topic, PARTITIONS, &records, &acked);

    // Deterministic check of the rebuild: kill again (no clean-shutdown marker, so no
    // snapshot is used) and replay the partition's last batch by hand. A broker that had not
    // rebuilt its producer state would append it a second time.
    broker.sigkill();
    broker.restart();
    let partition_dir = broker.data_dir().join(format!("{topic}-0"));
    let (base_offset, last_offset_delta, producer_id, epoch, base_sequence) =
        last_batch_header(&partition_dir);
    assert!(producer_id >= 0, "the producer was idempotent");
    let (_, high) = broker.watermarks(&topic, 0);
    let count = last_offset_delta as usize + 1;
    let retry = producer_batch(producer_id, epoch, base_sequence, count);
    assert_eq!(
        raw_produce(&broker, &topic, 0, &retry, 71),
        (0, base_offset),
        "a retry of the last batch is answered with its original offset"
    );
    assert_eq!(
        broker.watermarks(&topic, 0),
        (0, high),
        "and is not stored again"
    );
    let last_sequence = base_sequence + last_offset_delta;
    let gap = producer_batch(producer_id, epoch, last_sequence + 2, 1);
    assert_eq!(
        raw_produce(&broker, &topic, 0, &gap, 72).0,
        45,
        "a sequence gap is OUT_OF_ORDER_SEQUENCE_NUMBER"
    );
    let next = producer_batch(producer_id, epoch, last_sequence + 1, 1);
    assert_eq!(
        raw_produce(&broker, &topic, 0, &next, 73),
        (0, high),
        "the next sequence is appended at the end"
    );
}
