//! End-to-end tests of one `strait broker` process, driven through real
//! Kafka clients (rdkafka) and, for malformed input, raw TCP.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Timestamp;
use rdkafka::producer::Producer;
use rdkafka::Offset;

const LONG: Duration = Duration::from_secs(120);
const SHORT: Duration = Duration::from_secs(30);

/// Maps produced records to the offsets they were acknowledged at and
/// returns them in offset order, asserting the acknowledged offsets are
/// exactly `first..first + n` on `partition`.
fn expected_by_offset(
    records: &[TestRecord],
    acked: &[(i32, i64)],
    partition: i32,
    first: i64,
) -> Vec<TestRecord> {
    assert_eq!(records.len(), acked.len());
    let mut slots: Vec<Option<TestRecord>> = vec![None; records.len()];
    for (i, (rec, &(p, off))) in records.iter().zip(acked).enumerate() {
        assert_eq!(p, partition, "record #{i} acknowledged on partition {p}");
        let slot = off - first;
        assert!(
            (0..records.len() as i64).contains(&slot),
            "record #{i} acknowledged at offset {off}, outside the dense range {first}..{}",
            first + records.len() as i64
        );
        assert!(
            slots[slot as usize].is_none(),
            "two records acknowledged at the same offset {off}"
        );
        slots[slot as usize] = Some(rec.clone());
    }
    slots.into_iter().map(|r| r.unwrap()).collect()
}

// ---------------------------------------------------------------------------
// 1. compression codecs
// ---------------------------------------------------------------------------

fn codec_round_trip(codec: &str) {
    const N: usize = 100_000;
    let broker = Broker::start();
    let topic = unique(&format!("codec-{codec}"));
    broker.create_topic(&topic, 1, &[]);

    let base_ts = now_ms() - 3_600_000;
    let records: Vec<TestRecord> = (0..N)
        .map(|i| generated_record(codec, i, base_ts))
        .collect();

    let producer = broker.producer(&[
        ("compression.type", codec),
        ("linger.ms", "20"),
        ("batch.num.messages", "10000"),
        ("batch.size", "1000000"),
    ]);
    let acked = producer.produce_all(&topic, None, &records, LONG);
    drop(producer);
    let expected = expected_by_offset(&records, &acked, 0, 0);

    assert_eq!(
        broker.watermarks(&topic, 0),
        (0, N as i64),
        "watermarks after producing {N} {codec} records"
    );
    let got = broker.consume_all(&topic, 0, Offset::Beginning, N, LONG);
    assert_records_match(&expected, &got, 0);
}

#[test]
fn records_round_trip_with_every_compression_codec_none() {
    codec_round_trip("none");
}

#[test]
fn records_round_trip_with_every_compression_codec_gzip() {
    codec_round_trip("gzip");
}

#[test]
fn records_round_trip_with_every_compression_codec_snappy() {
    codec_round_trip("snappy");
}

#[test]
fn records_round_trip_with_every_compression_codec_lz4() {
    codec_round_trip("lz4");
}

#[test]
fn records_round_trip_with_every_compression_codec_zstd() {
    codec_round_trip("zstd");
}

// ---------------------------------------------------------------------------
// 2. clean restart
// ---------------------------------------------------------------------------

#[test]
fn records_survive_clean_restart() {
    const N: usize = 5_000;
    const MORE: usize = 1_000;
    const PER_PARTITION: usize = 100;
    let mut broker = Broker::start();
    let base_ts = now_ms() - 600_000;

    // Auto-created topic (first produce creates it with 1 partition).
    let topic = unique("restart");
    let records: Vec<TestRecord> = (0..N).map(|i| generated_record("rs", i, base_ts)).collect();
    let producer = broker.producer(&[("compression.type", "lz4"), ("linger.ms", "10")]);
    let acked = producer.produce_all(&topic, None, &records, LONG);
    let expected = expected_by_offset(&records, &acked, 0, 0);

    // An explicitly created multi-partition topic.
    let multi = unique("restart-multi");
    broker.create_topic(&multi, 3, &[]);
    let mut multi_expected = Vec::new();
    for p in 0..3 {
        let recs: Vec<TestRecord> = (0..PER_PARTITION)
            .map(|i| generated_record(&format!("m{p}"), i, base_ts))
            .collect();
        let acked = producer.produce_all(&multi, Some(p), &recs, SHORT);
        multi_expected.push(expected_by_offset(&recs, &acked, p, 0));
    }
    drop(producer);

    broker.sigterm_and_wait();
    broker.restart();

    // Topics are still known after the restart (all-topics metadata never
    // auto-creates, so this can't be masked by auto-creation).
    let topics: HashMap<String, usize> = broker.all_topics().into_iter().collect();
    assert_eq!(
        topics.get(&topic),
        Some(&1),
        "auto-created topic after restart"
    );
    assert_eq!(
        topics.get(&multi),
        Some(&3),
        "3-partition topic after restart"
    );

    assert_eq!(
        broker.watermarks(&topic, 0),
        (0, N as i64),
        "watermarks after restart"
    );
    let got = broker.consume_all(&topic, 0, Offset::Beginning, N, LONG);
    assert_records_match(&expected, &got, 0);
    for (p, exp) in multi_expected.iter().enumerate() {
        let got = broker.consume_all(&multi, p as i32, Offset::Beginning, PER_PARTITION, SHORT);
        assert_records_match(exp, &got, 0);
        assert_eq!(
            broker.watermarks(&multi, p as i32),
            (0, PER_PARTITION as i64)
        );
    }

    // Appends continue densely after the recovered end.
    let more: Vec<TestRecord> = (N..N + MORE)
        .map(|i| generated_record("rs", i, base_ts))
        .collect();
    let producer = broker.producer(&[("compression.type", "lz4")]);
    let acked_more = producer.produce_all(&topic, None, &more, LONG);
    drop(producer);
    let expected_more = expected_by_offset(&more, &acked_more, 0, N as i64);
    assert_eq!(broker.watermarks(&topic, 0), (0, (N + MORE) as i64));

    let all_expected: Vec<TestRecord> = expected.into_iter().chain(expected_more).collect();
    let got = broker.consume_all(&topic, 0, Offset::Beginning, N + MORE, LONG);
    assert_records_match(&all_expected, &got, 0);
}

// ---------------------------------------------------------------------------
// 3. SIGKILL while producing
// ---------------------------------------------------------------------------

fn index_from_key(key: &[u8]) -> usize {
    let s = std::str::from_utf8(key).expect("utf8 key");
    s.rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected key {s:?}"))
}

#[test]
fn acknowledged_records_survive_sigkill_while_producing() {
    const ACKS_BEFORE_KILL: u64 = 5_000;
    let mut broker = Broker::start();
    let topic = unique("sigkill");
    broker.create_topic(&topic, 1, &[]);
    let base_ts = now_ms() - 600_000;

    let stop = Arc::new(AtomicBool::new(false));
    let producer = broker.producer(&[("linger.ms", "2"), ("message.timeout.ms", "20000")]);
    let acked_counter = producer.acked_counter();
    let bg = {
        let stop = stop.clone();
        let topic = topic.clone();
        thread::spawn(move || {
            let mut sent = 0usize;
            let hard_deadline = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::Relaxed) {
                assert!(
                    Instant::now() < hard_deadline,
                    "background producer ran for 120 s without being stopped"
                );
                // Keep a bounded number of records in flight so the queue
                // never fills up, but keep it busy all the time.
                if producer.producer.in_flight_count() > 5_000 {
                    producer.poll(Duration::from_millis(5));
                    continue;
                }
                let rec = generated_record("kill", sent, base_ts);
                producer
                    .send(&topic, None, sent, &rec, Instant::now() + SHORT)
                    .expect("enqueue");
                sent += 1;
                if sent & 63 == 0 {
                    producer.poll(Duration::ZERO);
                }
            }
            // The broker is dead: drop whatever is still queued or in flight
            // (those get error reports) and collect every report.
            producer.purge();
            wait_for("a delivery report for every sent record", SHORT, || {
                producer.poll(Duration::from_millis(50));
                (producer.delivered_count() == sent).then_some(())
            });
            (sent, producer.take_deliveries())
        })
    };

    wait_for(
        &format!("{ACKS_BEFORE_KILL} acknowledged records"),
        Duration::from_secs(90),
        || (acked_counter.load(Ordering::Relaxed) >= ACKS_BEFORE_KILL).then_some(()),
    );
    broker.sigkill();
    stop.store(true, Ordering::Relaxed);
    let (sent, deliveries) = bg.join().expect("background producer panicked");

    let acked: Vec<(usize, i64)> = deliveries
        .iter()
        .filter_map(|d| d.result.as_ref().ok().map(|&(_, off)| (d.index, off)))
        .collect();
    assert!(
        acked.len() as u64 >= ACKS_BEFORE_KILL,
        "fewer acknowledged records ({}) than observed before the kill",
        acked.len()
    );
    assert!(
        sent > acked.len(),
        "the kill was not mid-stream: all {sent} sent records were acknowledged"
    );

    broker.restart();
    let (lo, hi) = broker.watermarks(&topic, 0);
    eprintln!(
        "sigkill: sent {sent}, acknowledged {}, recovered high watermark {hi}",
        acked.len()
    );
    assert_eq!(lo, 0, "log start offset after SIGKILL recovery");
    let max_acked = acked.iter().map(|&(_, o)| o).max().unwrap();
    assert!(
        hi > max_acked,
        "high watermark {hi} after recovery is not past the highest acknowledged offset {max_acked}"
    );

    let got = broker.consume_all(&topic, 0, Offset::Beginning, hi as usize, LONG);
    for (pos, g) in got.iter().enumerate() {
        assert_eq!(
            g.offset, pos as i64,
            "recovered log is not dense from 0 (position {pos})"
        );
        // Every surviving record, acknowledged or not, is an intact record
        // that was actually produced.
        let key = g
            .key
            .as_deref()
            .unwrap_or_else(|| panic!("offset {pos} has no key"));
        let idx = index_from_key(key);
        assert!(
            idx < sent,
            "offset {pos} holds a record that was never sent"
        );
        assert_record_eq(
            &generated_record("kill", idx, base_ts),
            g,
            &format!("recovered record at offset {pos}"),
        );
    }
    for &(idx, off) in &acked {
        let g = &got[off as usize];
        assert_eq!(
            g.key,
            generated_record("kill", idx, base_ts).key,
            "acknowledged record #{idx} is not at its acknowledged offset {off}"
        );
    }

    // The recovered log accepts appends right after its end.
    let extra: Vec<TestRecord> = (0..10)
        .map(|i| generated_record("after", i, base_ts))
        .collect();
    let p = broker.producer(&[]);
    let acked_extra = p.produce_all(&topic, None, &extra, SHORT);
    drop(p);
    let exp = expected_by_offset(&extra, &acked_extra, 0, hi);
    let got = broker.consume_all(&topic, 0, Offset::Offset(hi), extra.len(), SHORT);
    assert_records_match(&exp, &got, hi);
}

// ---------------------------------------------------------------------------
// 4. ListOffsets by timestamp
// ---------------------------------------------------------------------------

#[test]
fn list_offsets_by_timestamp_finds_the_first_record_at_or_after() {
    const N: usize = 1_000;
    const STEP: i64 = 10;
    let broker = Broker::start();
    let base_ts = now_ms() - 3_600_000;
    let ts = |i: usize| base_ts + STEP * i as i64;

    for codec in ["none", "lz4"] {
        let topic = unique(&format!("times-{codec}"));
        broker.create_topic(&topic, 1, &[]);
        let records: Vec<TestRecord> = (0..N)
            .map(|i| TestRecord {
                timestamp: Some(ts(i)),
                ..generated_record("times", i, base_ts)
            })
            .collect();
        // A long linger puts many records (many timestamps) in each batch.
        let producer = broker.producer(&[("compression.type", codec), ("linger.ms", "50")]);
        let acked = producer.produce_all(&topic, None, &records, LONG);
        drop(producer);
        for (i, &(_, off)) in acked.iter().enumerate() {
            assert_eq!(
                off, i as i64,
                "test precondition: record #{i} acknowledged at offset {off}"
            );
        }

        assert_eq!(
            broker.watermarks(&topic, 0),
            (0, N as i64),
            "{codec}: earliest/latest offsets"
        );

        let mut queries: Vec<(String, i64, Offset)> = Vec::new();
        for k in [0usize, 1, 2, 17, 499, 500, 501, 998, N - 1] {
            queries.push((
                format!("exactly ts of #{k}"),
                ts(k),
                Offset::Offset(k as i64),
            ));
        }
        for k in [0usize, 250, 733, N - 2] {
            queries.push((
                format!("between #{k} and #{}", k + 1),
                ts(k) + STEP / 2,
                Offset::Offset(k as i64 + 1),
            ));
        }
        queries.push(("before the first".into(), base_ts - 1, Offset::Offset(0)));
        queries.push((
            "long before the first".into(),
            base_ts - 86_400_000,
            Offset::Offset(0),
        ));
        queries.push(("after the last".into(), ts(N - 1) + 1, Offset::End));
        queries.push((
            "long after the last".into(),
            ts(N - 1) + 86_400_000,
            Offset::End,
        ));

        let stamps: Vec<i64> = queries.iter().map(|q| q.1).collect();
        let got = offsets_for_times(&broker.bootstrap(), &topic, 0, &stamps);
        let mut failures = Vec::new();
        for ((what, t, want), got) in queries.iter().zip(&got) {
            if want != got {
                failures.push(format!(
                    "{codec}: timestamp {t} ({what}): expected {want:?}, got {got:?}"
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "offsets_for_times mismatches:\n{}",
            failures.join("\n")
        );
    }
}

// ---------------------------------------------------------------------------
// 5. LogAppendTime
// ---------------------------------------------------------------------------

#[test]
fn log_append_time_topic_stamps_broker_time() {
    const N: usize = 200;
    let broker = Broker::start();
    let topic = unique("logappend");
    broker.create_topic(&topic, 1, &[("message.timestamp.type", "LogAppendTime")]);

    let old_ts = 1_000_000_000_000; // 2001-09-09
    let records: Vec<TestRecord> = (0..N)
        .map(|i| TestRecord {
            timestamp: Some(old_ts + i as i64),
            ..generated_record("lat", i, 0)
        })
        .collect();

    let window_start = now_ms();
    // Half uncompressed, half compressed (the broker has to stamp the batch
    // header of a compressed batch without touching its records).
    let p = broker.producer(&[]);
    let acked_a = p.produce_all(&topic, None, &records[..N / 2], SHORT);
    drop(p);
    let p = broker.producer(&[("compression.type", "zstd")]);
    let acked_b = p.produce_all(&topic, None, &records[N / 2..], SHORT);
    drop(p);
    let window_end = now_ms();

    let mut acked = acked_a;
    acked.extend(acked_b);
    let expected = expected_by_offset(&records, &acked, 0, 0);
    let got = broker.consume_all(&topic, 0, Offset::Beginning, N, SHORT);
    assert_eq!(got.len(), N);
    for (i, (e, g)) in expected.iter().zip(&got).enumerate() {
        assert_eq!(g.offset, i as i64, "offsets dense");
        assert_eq!(g.key, e.key, "offset {i}: key");
        assert_eq!(g.value, e.value, "offset {i}: value");
        assert_eq!(g.headers, e.headers, "offset {i}: headers");
        match g.timestamp {
            Timestamp::LogAppendTime(t) => assert!(
                (window_start..=window_end).contains(&t),
                "offset {i}: LogAppendTime {t} outside the produce window \
                 {window_start}..={window_end}"
            ),
            other => panic!(
                "offset {i}: expected a LogAppendTime timestamp, got {other:?} \
                 (producer's CreateTime was {:?})",
                e.timestamp
            ),
        }
    }
}

// ---------------------------------------------------------------------------
// 6. malformed input over raw TCP
// ---------------------------------------------------------------------------

#[test]
fn garbage_and_truncated_frames_leave_the_broker_serving() {
    let mut broker = Broker::start();
    let health = unique("health");
    broker.create_topic(&health, 1, &[]);
    let raw_topic = unique("raw");
    broker.create_topic(&raw_topic, 1, &[]);
    assert_round_trip(&broker, &health);

    let check = |broker: &mut Broker, after: &str| {
        broker.assert_alive();
        // Panics inside assert_round_trip carry their own message; say which step broke it.
        eprintln!("health check after: {after}");
        assert_round_trip(broker, &health);
    };

    // Random bytes.
    {
        let mut c = RawConn::connect(broker.addr());
        c.write_lossy(&pseudo_random_bytes(0xBAD, 64 * 1024));
    }
    check(&mut broker, "64 KiB of random bytes");

    // A size prefix claiming ~2 GiB, followed by a little data.
    {
        let mut c = RawConn::connect(broker.addr());
        let mut frame = 0x7FFF_FFFFi32.to_be_bytes().to_vec();
        frame.extend_from_slice(&encode_request(18, 0, 1, &[])[4..]);
        c.write_lossy(&frame);
        let _ = c.closed_by_peer();
    }
    check(&mut broker, "a 2 GiB size prefix");

    // A negative size prefix.
    {
        let mut c = RawConn::connect(broker.addr());
        c.write_lossy(&(-5i32).to_be_bytes());
        c.write_lossy(&[0u8; 16]);
        let _ = c.closed_by_peer();
    }
    check(&mut broker, "a negative size prefix");

    // A valid-looking ApiVersions header, truncated, then the socket closed.
    {
        let mut c = RawConn::connect(broker.addr());
        let frame = encode_request(18, 3, 2, &[0u8; 40]);
        c.write_lossy(&frame[..12]);
        let _ = c.stream.shutdown(std::net::Shutdown::Write);
    }
    check(&mut broker, "a truncated request header");

    // A size prefix alone, then close.
    {
        let mut c = RawConn::connect(broker.addr());
        c.write_lossy(&100i32.to_be_bytes());
    }
    check(&mut broker, "a bare size prefix");

    // A well-formed frame with an unknown API key.
    {
        let mut c = RawConn::connect(broker.addr());
        c.write_lossy(&encode_request(9_999, 0, 3, &[1, 2, 3, 4]));
        let _ = c.closed_by_peer();
    }
    check(&mut broker, "an unknown API key");

    // A well-formed frame for a known API with a version far out of range.
    {
        let mut c = RawConn::connect(broker.addr());
        c.write_lossy(&encode_request(3, 999, 4, &[0u8; 8]));
        let _ = c.closed_by_peer();
    }
    check(&mut broker, "an out-of-range Metadata version");

    // Control: the hand-encoded Produce with a correct CRC is accepted, so
    // the CORRUPT_MESSAGE below is about the CRC and nothing else.
    let value = b"raw-value-0123456789-abcdefghijklmnopqrstuvwxyz";
    let batch = encode_record_batch(&[(Some(b"raw-key".as_slice()), value.as_slice())], now_ms());
    let (err, base) = raw_produce(&broker, &raw_topic, 0, &batch, 77);
    assert_eq!(
        err, 0,
        "hand-encoded Produce with a valid batch was rejected"
    );
    assert_eq!(base, 0, "first record of the raw topic");
    let got = broker.consume_all(&raw_topic, 0, Offset::Beginning, 1, SHORT);
    assert_eq!(got[0].key.as_deref(), Some(b"raw-key".as_slice()));
    assert_eq!(got[0].value.as_deref(), Some(value.as_slice()));

    // The same batch with one flipped byte inside the record value.
    let mut corrupt = batch.clone();
    let flip = corrupt.len() - 10;
    assert!(flip > BATCH_CRC_COVERED_START);
    corrupt[flip] ^= 0x5A;
    let (err, _) = raw_produce(&broker, &raw_topic, 0, &corrupt, 78);
    assert_eq!(
        err, 2,
        "Produce with a bad record batch CRC must fail with CORRUPT_MESSAGE (2)"
    );
    assert_eq!(
        broker.watermarks(&raw_topic, 0),
        (0, 1),
        "the corrupt batch must not be appended"
    );
    check(&mut broker, "a Produce with a corrupt batch CRC");

    // The raw topic still takes valid appends at the next offset.
    let (err, base) = raw_produce(&broker, &raw_topic, 0, &batch, 79);
    assert_eq!((err, base), (0, 1), "valid Produce after the corrupt one");
    broker.assert_alive();
}

// ---------------------------------------------------------------------------
// 7. unknown partitions, invalid topic names
// ---------------------------------------------------------------------------

#[test]
fn unknown_partition_and_invalid_topic_names_are_rejected() {
    let broker = Broker::start();
    let topic = unique("onepart");
    broker.create_topic(&topic, 1, &[]);

    // Through rdkafka: the client learns there is 1 partition and fails the record.
    let p = broker.producer(&[("message.timeout.ms", "10000")]);
    let d = p.produce_collect(&topic, Some(5), &[TestRecord::kv("k", "v")], SHORT);
    drop(p);
    let code = d[0].error_code();
    assert!(
        matches!(
            code,
            Some(RDKafkaErrorCode::UnknownPartition | RDKafkaErrorCode::UnknownTopicOrPartition)
        ),
        "produce to partition 5 of a 1-partition topic: expected an unknown partition error, \
         got {:?}",
        d[0].result
    );

    // On the wire: the broker itself answers UNKNOWN_TOPIC_OR_PARTITION (3).
    let batch = encode_record_batch(&[(None, b"x".as_slice())], now_ms());
    let (err, _) = raw_produce(&broker, &topic, 5, &batch, 5);
    assert_eq!(
        err, 3,
        "raw Produce to partition 5 must fail with UNKNOWN_TOPIC_OR_PARTITION (3)"
    );
    assert_eq!(broker.watermarks(&topic, 0), (0, 0), "nothing appended");

    // Invalid names.
    let long_bad = "a".repeat(250);
    let bad_names = ["bad name!", long_bad.as_str(), "..", "slash/name"];
    let new_topics: Vec<NewTopic<'_>> = bad_names
        .iter()
        .map(|n| NewTopic::new(n, 1, TopicReplication::Fixed(1)))
        .collect();
    let res = broker.create_topics(&new_topics, false);
    assert_eq!(res.len(), bad_names.len());
    for r in &res {
        match r {
            Err((_, RDKafkaErrorCode::InvalidTopic)) => {}
            other => {
                panic!("CreateTopics with an invalid name: expected InvalidTopic, got {other:?}")
            }
        }
    }
    let listed = broker.all_topics();
    for n in bad_names {
        assert!(
            !listed.iter().any(|(t, _)| t == n),
            "rejected topic {n:?} shows up in metadata"
        );
    }

    // Control: the longest legal name (249 chars of the legal alphabet) is fine.
    let long_ok = format!("{}._-X", "b".repeat(245));
    assert_eq!(long_ok.len(), 249);
    broker.create_topic(&long_ok, 1, &[]);
    assert_round_trip(&broker, &long_ok);
}

// ---------------------------------------------------------------------------
// 8. max.message.bytes
// ---------------------------------------------------------------------------

#[test]
fn oversized_records_are_rejected_with_message_too_large() {
    let broker = Broker::start();
    let topic = unique("maxbytes");
    broker.create_topic(&topic, 1, &[("max.message.bytes", "10000")]);
    let p = broker.producer(&[
        ("message.max.bytes", "2000000"),
        ("compression.type", "none"),
        ("linger.ms", "0"),
        ("message.timeout.ms", "15000"),
    ]);

    let small = TestRecord::kv("small", vec![b's'; 100]);
    let under = TestRecord::kv("under", pseudo_random_bytes(1, 5_000));
    let over = TestRecord::kv("over", pseudo_random_bytes(2, 20_000));
    let after = TestRecord::kv("after", vec![b'a'; 100]);

    let acked = p.produce_all(&topic, None, std::slice::from_ref(&small), SHORT);
    assert_eq!(acked, vec![(0, 0)]);
    let acked = p.produce_all(&topic, None, std::slice::from_ref(&under), SHORT);
    assert_eq!(
        acked,
        vec![(0, 1)],
        "a 5000-byte record is under max.message.bytes=10000"
    );

    let d = p.produce_collect(&topic, None, std::slice::from_ref(&over), SHORT);
    assert_eq!(
        d[0].error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge),
        "20000-byte record on a topic with max.message.bytes=10000: {:?}",
        d[0].result
    );
    assert_eq!(
        broker.watermarks(&topic, 0),
        (0, 2),
        "the rejected record must not be appended"
    );

    let acked = p.produce_all(&topic, None, std::slice::from_ref(&after), SHORT);
    assert_eq!(
        acked,
        vec![(0, 2)],
        "offsets continue densely after the rejection"
    );
    drop(p);

    let got = broker.consume_all(&topic, 0, Offset::Beginning, 3, SHORT);
    assert_records_match(&[small, under, after], &got, 0);
}

// ---------------------------------------------------------------------------
// 9. CreateTopics / DeleteTopics
// ---------------------------------------------------------------------------

fn paths_mentioning(root: &std::path::Path, name: &str) -> Vec<std::path::PathBuf> {
    walk(root)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .map(|f| f.to_string_lossy().contains(name))
                .unwrap_or(false)
        })
        .collect()
}

#[test]
fn create_and_delete_topics() {
    let broker = Broker::start();
    let name = unique("deleteme");
    let keeper = unique("keeper");

    // validate_only: accepted, but nothing is created.
    let res = broker.create_topics(&[NewTopic::new(&name, 3, TopicReplication::Fixed(1))], true);
    assert_eq!(res, vec![Ok(name.clone())], "validate-only CreateTopics");
    assert_eq!(
        broker.topic_partition_count(&name),
        None,
        "validate_only must not create the topic"
    );
    assert!(
        paths_mentioning(broker.data_dir(), &name).is_empty(),
        "validate_only must not touch the data dir: {:?}",
        paths_mentioning(broker.data_dir(), &name)
    );

    // Real creation.
    broker.create_topic(&keeper, 1, &[]);
    broker.create_topic(&name, 3, &[]);
    assert_eq!(broker.topic_partition_count(&name), Some(3));
    let res = broker.create_topics(
        &[NewTopic::new(&name, 3, TopicReplication::Fixed(1))],
        false,
    );
    assert_eq!(
        res,
        vec![Err((name.clone(), RDKafkaErrorCode::TopicAlreadyExists))],
        "creating an existing topic"
    );

    // Data in every partition.
    let p = broker.producer(&[]);
    for part in 0..3 {
        let rec = TestRecord::kv(format!("k{part}"), format!("v{part}"));
        let acked = p.produce_all(&name, Some(part), &[rec], SHORT);
        assert_eq!(acked, vec![(part, 0)]);
    }
    let keep_rec = TestRecord::kv("keep", "me");
    p.produce_all(&keeper, None, std::slice::from_ref(&keep_rec), SHORT);
    drop(p);
    assert!(
        !paths_mentioning(broker.data_dir(), &name).is_empty(),
        "expected the data dir {} to contain paths named after topic {name} (its partition \
         dirs); found none",
        broker.data_dir().display()
    );

    // Delete.
    let res = broker.delete_topics(&[&name]);
    assert_eq!(res, vec![Ok(name.clone())], "DeleteTopics");
    wait_for(
        "the deleted topic to disappear from metadata",
        SHORT,
        || broker.topic_partition_count(&name).is_none().then_some(()),
    );
    wait_for(
        "the deleted topic's partition dirs to disappear from the data dir",
        SHORT,
        || {
            paths_mentioning(broker.data_dir(), &name)
                .is_empty()
                .then_some(())
        },
    );

    let res = broker.delete_topics(&[&name]);
    assert_eq!(
        res,
        vec![Err((
            name.clone(),
            RDKafkaErrorCode::UnknownTopicOrPartition
        ))],
        "deleting a topic that no longer exists"
    );

    // Other topics are untouched.
    assert_eq!(broker.topic_partition_count(&keeper), Some(1));
    let got = broker.consume_all(&keeper, 0, Offset::Beginning, 1, SHORT);
    assert_records_match(&[keep_rec], &got, 0);
}
