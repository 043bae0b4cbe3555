//! End-to-end tests of `strait mirror` between two single-node sites, modelled on
//! MirrorMaker 2's integration scenarios: real broker processes, a real daemon process, real
//! rdkafka clients, SIGKILL.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::cluster::{create_topic_with_configs, Cluster};
use common::mirror::{
    checkpoints, commit, committed, flow_config, read_partition, wait_for_records, MirrorDaemon,
};
use common::{
    assert_records_match, block_on, generated_record, now_ms, strait_bin, wait_for, Broker,
    TestRecord, OP_TIMEOUT,
};
use rdkafka::admin::{AdminOptions, AlterConfig, ConfigSource, NewPartitions, ResourceSpecifier};

const MIRROR_WAIT: Duration = Duration::from_secs(60);

fn produce(broker: &Broker, topic: &str, records: &[(i32, TestRecord)]) {
    produce_to(&broker.bootstrap(), topic, records);
}

/// [`produce`] to any cluster, with acks=all.
fn produce_to(bootstrap: &str, topic: &str, records: &[(i32, TestRecord)]) {
    let producer = common::TestProducer::new(bootstrap, &[("acks", "all")]);
    let deadline = Instant::now() + Duration::from_secs(60);
    for (i, (p, r)) in records.iter().enumerate() {
        producer
            .send(topic, Some(*p), i, r, deadline)
            .expect("enqueue");
    }
    producer.flush(Duration::from_secs(60));
    assert_eq!(producer.delivered_count(), records.len());
}

/// `r` as the a -> b flow writes it at source offset `offset`: with the origin header and the
/// flow's source-offset header added.
fn as_mirrored(mut r: TestRecord, offset: usize) -> TestRecord {
    r.headers
        .push(("strait.origin".to_string(), Some(b"a".to_vec())));
    r.headers.push((
        "strait.source".to_string(),
        Some(format!("a-to-b/{offset}").into_bytes()),
    ));
    r
}

fn topic_overrides(broker: &Broker, topic: &str) -> BTreeMap<String, String> {
    let admin = broker.admin();
    let opts = AdminOptions::new().request_timeout(Some(OP_TIMEOUT));
    let results = block_on(
        admin.describe_configs([&ResourceSpecifier::Topic(topic)], &opts),
        OP_TIMEOUT,
    )
    .expect("DescribeConfigs");
    let resource = results
        .into_iter()
        .next()
        .expect("one result")
        .expect("topic configs");
    resource
        .entries
        .into_iter()
        .filter(|e| e.source == ConfigSource::DynamicTopic)
        .filter_map(|e| Some((e.name, e.value?)))
        .collect()
}

/// The sequence numbers of generated records, in the order read.
fn sequence(records: &[common::Consumed]) -> Vec<usize> {
    records
        .iter()
        .map(|c| common::sequence_of(c.key.as_deref().expect("a key")))
        .collect()
}

fn keys(records: &[common::Consumed]) -> Vec<Vec<u8>> {
    records
        .iter()
        .map(|c| c.key.clone().unwrap_or_default())
        .collect()
}

#[test]
fn records_arrive_under_the_remote_name_intact_and_new_topics_and_partitions_follow() {
    let a = Broker::start();
    let b = Broker::start();
    a.create_topic("orders", 3, &[]);
    let base_ts = now_ms() - 60_000;
    let records: Vec<(i32, TestRecord)> = (0..3000)
        .map(|i| ((i % 3) as i32, generated_record("m", i, base_ts)))
        .collect();
    produce(&a, "orders", &records);

    let mut mirror = MirrorDaemon::start(&flow_config(&a, &b, ""));
    for p in 0..3 {
        wait_for_records(&b, "a.orders", p, 1000, MIRROR_WAIT);
        let expected: Vec<TestRecord> = records
            .iter()
            .filter(|(q, _)| *q == p)
            .enumerate()
            .map(|(offset, (_, r))| as_mirrored(r.clone(), offset))
            .collect();
        assert_records_match(&expected, &read_partition(&b, "a.orders", p), 0);
    }
    assert_eq!(b.topic_partition_count("a.orders"), Some(3));

    // A topic created while the daemon runs is picked up within seconds.
    let created = Instant::now();
    a.create_topic("late", 2, &[]);
    let late: Vec<(i32, TestRecord)> = (0..10)
        .map(|i| (1, generated_record("late", i, base_ts)))
        .collect();
    produce(&a, "late", &late);
    wait_for_records(&b, "a.late", 1, 10, MIRROR_WAIT);
    eprintln!(
        "a topic created on the source reached the target in {:?}",
        created.elapsed()
    );
    assert_eq!(
        b.topic_partition_count("a.late"),
        Some(2),
        "same partition count"
    );

    // A partition increase follows, and records in the new partition arrive there.
    let admin = a.admin();
    let opts = AdminOptions::new().operation_timeout(Some(OP_TIMEOUT));
    let r = block_on(
        admin.create_partitions([&NewPartitions::new("orders", 5)], &opts),
        OP_TIMEOUT,
    )
    .expect("CreatePartitions");
    assert!(r[0].is_ok(), "{r:?}");
    a.wait_for_topic("orders", 5);
    let more: Vec<(i32, TestRecord)> = (0..5)
        .map(|i| (4, generated_record("p4", i, base_ts)))
        .collect();
    produce(&a, "orders", &more);
    wait_for_records(&b, "a.orders", 4, 5, MIRROR_WAIT);
    assert_eq!(b.topic_partition_count("a.orders"), Some(5));
    let expected: Vec<TestRecord> = more
        .iter()
        .enumerate()
        .map(|(offset, (_, r))| as_mirrored(r.clone(), offset))
        .collect();
    assert_records_match(&expected, &read_partition(&b, "a.orders", 4), 0);

    // Lag per partition, once the consumer's statistics (every second) saw partition 4.
    let lag_line = "strait_mirror_lag_records{flow=\"a-to-b\",topic=\"orders\",partition=\"4\"} 0";
    wait_for("partition 4's lag in /metrics", MIRROR_WAIT, || {
        mirror.metrics().contains(lag_line).then_some(())
    });
    let metrics = mirror.metrics();
    let total: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("strait_mirror_records_total{flow=\"a-to-b\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no strait_mirror_records_total in\n{metrics}"));
    assert!(total >= 3015, "{total} records counted, 3015 mirrored");
    mirror.sigterm_and_wait();
}

#[test]
fn topic_configs_follow_except_the_excluded_ones() {
    let a = Broker::start();
    let b = Broker::start();
    a.create_topic(
        "cfg",
        1,
        &[
            ("retention.ms", "3600000"),
            ("min.insync.replicas", "1"),
            ("max.message.bytes", "200000"),
        ],
    );
    let _mirror = MirrorDaemon::start(&flow_config(&a, &b, ""));
    b.wait_for_topic("a.cfg", 1);
    let got = topic_overrides(&b, "a.cfg");
    assert_eq!(
        got.get("retention.ms").map(String::as_str),
        Some("3600000"),
        "{got:?}"
    );
    assert_eq!(
        got.get("max.message.bytes").map(String::as_str),
        Some("200000"),
        "{got:?}"
    );
    assert!(
        !got.contains_key("min.insync.replicas"),
        "min.insync.replicas is on MM2's exclusion list: {got:?}"
    );

    // A change on the source follows within the config sync interval.
    let admin = a.admin();
    let alter = AlterConfig::new(ResourceSpecifier::Topic("cfg"))
        .set("retention.ms", "7200000")
        .set("min.insync.replicas", "1")
        .set("max.message.bytes", "200000");
    let opts = AdminOptions::new().request_timeout(Some(OP_TIMEOUT));
    let r = block_on(admin.alter_configs([&alter], &opts), OP_TIMEOUT).expect("AlterConfigs");
    assert!(r[0].is_ok(), "{r:?}");
    wait_for("retention.ms to follow to the target", MIRROR_WAIT, || {
        (topic_overrides(&b, "a.cfg")
            .get("retention.ms")
            .map(String::as_str)
            == Some("7200000"))
        .then_some(())
    });
    assert!(!topic_overrides(&b, "a.cfg").contains_key("min.insync.replicas"));
}

#[test]
fn a_group_that_committed_midway_resumes_on_the_target_at_the_exact_translation() {
    let a = Broker::start();
    let b = Broker::start();
    a.create_topic("pay", 3, &[]);
    // The target partitions already hold other records, so target offsets differ from
    // source offsets (7 ahead on partition 0, 3 on partition 1): an identity mapping would
    // be wrong.
    b.create_topic("a.pay", 3, &[]);
    let ts = now_ms();
    let other: Vec<(i32, TestRecord)> = (0..10)
        .map(|i| (if i < 7 { 0 } else { 1 }, generated_record("other", i, ts)))
        .collect();
    produce(&b, "a.pay", &other);
    let source: Vec<(i32, TestRecord)> = (0..160)
        .map(|i| (if i < 100 { 0 } else { 1 }, generated_record("pay", i, ts)))
        .collect();
    produce(&a, "pay", &source);
    // Partition 2 stays empty.
    commit(&a, "billing", "pay", &[(0, 37), (1, 60), (2, 0)]);

    let _mirror = MirrorDaemon::start(&flow_config(&a, &b, ""));
    wait_for_records(&b, "a.pay", 0, 107, MIRROR_WAIT);
    wait_for_records(&b, "a.pay", 1, 63, MIRROR_WAIT);
    let synced = wait_for("billing's offsets on the target", MIRROR_WAIT, || {
        let c = committed(&b, "billing", "a.pay", 3);
        c.iter().all(Option::is_some).then_some(c)
    });
    assert_eq!(
        synced,
        vec![Some(37 + 7), Some(60 + 3), Some(0)],
        "exact translation, empty partition included"
    );

    // Resuming there reads exactly the source's next record: none twice, none skipped.
    let target_p0 = read_partition(&b, "a.pay", 0);
    assert_eq!(
        target_p0[44].key, source[37].1.key,
        "the record after the commit point"
    );
    assert_eq!(
        target_p0[43].key, source[36].1.key,
        "the last record the group had read"
    );

    let cps = checkpoints(&b, "a.checkpoints.internal");
    let for_billing: HashMap<i64, (i64, i64)> = cps
        .iter()
        .filter(|c| c["group"] == "billing")
        .map(|c| {
            (
                c["partition"].as_i64().unwrap(),
                (
                    c["upstream_offset"].as_i64().unwrap(),
                    c["downstream_offset"].as_i64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(for_billing.get(&0), Some(&(37, 44)), "{cps:?}");
    assert_eq!(for_billing.get(&1), Some(&(60, 63)), "{cps:?}");
    assert_eq!(for_billing.get(&2), Some(&(0, 0)), "{cps:?}");
    for c in &cps {
        assert_eq!(c["topic"], "a.pay", "remote topic name in {c}");
    }

    // The group moves backwards on the source (an offset reset): so does the target.
    commit(&a, "billing", "pay", &[(0, 10)]);
    wait_for("the rewind to reach the target", MIRROR_WAIT, || {
        (committed(&b, "billing", "a.pay", 1)[0] == Some(17)).then_some(())
    });
}

#[test]
fn latest_mirrors_only_new_records_and_groups_translate_to_the_start_of_the_mirrored_data() {
    let a = Broker::start();
    let b = Broker::start();
    a.create_topic("news", 2, &[]);
    let ts = now_ms();
    let old: Vec<(i32, TestRecord)> = (0..150)
        .map(|i| (if i < 100 { 0 } else { 1 }, generated_record("old", i, ts)))
        .collect();
    produce(&a, "news", &old);
    commit(&a, "readers", "news", &[(0, 100), (1, 30)]);

    let mirror = MirrorDaemon::start(&flow_config(&a, &b, "    start_position: latest\n"));
    wait_for("checkpoint rounds to run", MIRROR_WAIT, || {
        mirror.status()["flows"][0]["checkpoint_age_seconds"].as_f64()
    });
    b.wait_for_topic("a.news", 2);
    wait_for(
        "the pump to hold both partitions of news",
        MIRROR_WAIT,
        || {
            let status = mirror.status();
            let held = status["flows"][0]["topics"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|t| t["topic"] == "news")
                .flat_map(|t| t["partitions"].as_array().cloned().unwrap_or_default())
                .filter(|p| p["assigned"] == true)
                .count();
            (held == 2).then_some(())
        },
    );
    // The pump anchored both partitions at the source's end when it first saw them, before
    // any record was mirrored: `readers` (at 100 and 30, both at or below that end) already
    // translates, to the start of what will be mirrored (target offset 0), never into old
    // data and never past the mirrored data.
    let early = wait_for("readers' checkpoints at the anchor", MIRROR_WAIT, || {
        let early: Vec<_> = checkpoints(&b, "a.checkpoints.internal")
            .into_iter()
            .filter(|c| c["group"] == "readers")
            .collect();
        (early.len() >= 2).then_some(early)
    });
    for c in &early {
        assert_eq!(c["downstream_offset"], 0, "{c}");
    }
    assert_eq!(b.watermarks("a.news", 0).1, 0, "no old record was mirrored");
    assert_eq!(b.watermarks("a.news", 1).1, 0, "no old record was mirrored");

    // New records, one at a time until the first reaches the target.
    let producer = a.producer(&[]);
    let mut sent = 0usize;
    let deadline = Instant::now() + MIRROR_WAIT;
    while b.watermarks("a.news", 0).1 == 0 {
        assert!(
            Instant::now() < deadline,
            "no new record reached the target"
        );
        let r = generated_record("new", sent, ts);
        producer.send("news", Some(0), sent, &r, deadline).unwrap();
        producer.send("news", Some(1), sent, &r, deadline).unwrap();
        producer.flush(OP_TIMEOUT);
        sent += 1;
        thread::sleep(Duration::from_millis(200));
    }
    wait_for_records(&b, "a.news", 1, 1, MIRROR_WAIT);
    for p in 0..2 {
        let got = read_partition(&b, "a.news", p);
        let old_keys: HashSet<Vec<u8>> = old.iter().filter_map(|(_, r)| r.key.clone()).collect();
        assert!(
            got.iter()
                .all(|c| !old_keys.contains(c.key.as_ref().unwrap())),
            "a record from before the start was mirrored"
        );
        assert!(!got.is_empty() && got.len() <= sent);
    }
    // Now both partitions have mirrored records: `readers` resumes at the first of them.
    let synced = wait_for("readers' offsets on the target", MIRROR_WAIT, || {
        let c = committed(&b, "readers", "a.news", 2);
        c.iter().all(Option::is_some).then_some(c)
    });
    assert_eq!(synced, vec![Some(0), Some(0)]);
}

#[test]
fn sigkill_mid_stream_then_restart_loses_nothing_and_checkpoints_never_go_back() {
    let a = Broker::start();
    let b = Broker::start();
    a.create_topic("stream", 3, &[]);
    let total = 12_000usize;
    let ts = now_ms();
    let done = Arc::new(AtomicBool::new(false));
    let bootstrap = a.bootstrap();
    let producer_thread = {
        let done = done.clone();
        thread::spawn(move || {
            let producer = common::TestProducer::new(&bootstrap, &[]);
            let deadline = Instant::now() + Duration::from_secs(120);
            for i in 0..total {
                producer
                    .send(
                        "stream",
                        Some((i % 3) as i32),
                        i,
                        &generated_record("s", i, ts),
                        deadline,
                    )
                    .unwrap();
                if i % 200 == 199 {
                    producer.poll(Duration::ZERO);
                    thread::sleep(Duration::from_millis(100)); // ~2,000 records/s
                }
            }
            producer.flush(Duration::from_secs(60));
            done.store(true, Ordering::SeqCst);
            producer.delivered_count()
        })
    };
    let mut mirror = MirrorDaemon::start(&flow_config(&a, &b, ""));
    // The group `app` follows the stream at half the source's end, committing as it goes.
    let follow = |a: &Broker| {
        let offsets: Vec<(i32, i64)> = (0..3)
            .map(|p| (p, a.watermarks("stream", p).1 / 2))
            .collect();
        commit(a, "app", "stream", &offsets);
    };
    wait_for("the mirror to copy something", MIRROR_WAIT, || {
        (b.topic_partition_count("a.stream") == Some(3) && b.watermarks("a.stream", 0).1 > 500)
            .then_some(())
    });
    follow(&a);
    mirror.sigkill();
    follow(&a);
    thread::sleep(Duration::from_millis(500));
    mirror.restart();
    while !done.load(Ordering::SeqCst) {
        follow(&a);
        thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(producer_thread.join().unwrap(), total);
    follow(&a);
    let final_commits = committed(&a, "app", "stream", 3);

    for p in 0..3 {
        let source = read_partition(&a, "stream", p);
        wait_for_records(&b, "a.stream", p, source.len() as i64, MIRROR_WAIT);
        let target = read_partition(&b, "a.stream", p);
        // Exactly the source, in order: what the killed daemon wrote without recording it
        // was found on the target by the restarted one and not sent again.
        let audit = common::SequenceAudit::of(sequence(&source), &sequence(&target));
        assert_eq!(
            audit,
            common::SequenceAudit::default(),
            "partition {p}: lost, duplicated or reordered records after the SIGKILL"
        );
        assert_eq!(keys(&target), keys(&source), "partition {p}");

        // The final checkpoint is exact: the target record there is the source's next one.
        let want = final_commits[p as usize].unwrap();
        let at = wait_for("the final checkpoint", MIRROR_WAIT, || {
            checkpoints(&b, "a.checkpoints.internal")
                .into_iter()
                .rfind(|c| {
                    c["group"] == "app" && c["partition"] == p && c["upstream_offset"] == want
                })
                .map(|c| c["downstream_offset"].as_i64().unwrap())
        });
        assert_eq!(
            target[at as usize].key, source[want as usize].key,
            "partition {p}: checkpoint {want} -> {at}"
        );
    }
    // Checkpoints of each partition never went backwards (the group never did).
    let mut last: HashMap<i64, (i64, i64)> = HashMap::new();
    for c in checkpoints(&b, "a.checkpoints.internal")
        .into_iter()
        .filter(|c| c["group"] == "app")
    {
        let p = c["partition"].as_i64().unwrap();
        let now = (
            c["upstream_offset"].as_i64().unwrap(),
            c["downstream_offset"].as_i64().unwrap(),
        );
        if let Some(before) = last.insert(p, now) {
            assert!(
                now.0 >= before.0 && now.1 >= before.1,
                "partition {p}: checkpoint went from {before:?} to {now:?}"
            );
        }
    }
    assert!(
        mirror.log_lines_containing("rebuilding the offset index") == 0,
        "the index survived in sled"
    );
    eprintln!(
        "partitions reconciled with the target after the SIGKILL: {}",
        mirror.log_lines_containing("found records of this flow on the target")
    );
}

#[test]
fn source_retention_overtaking_a_stopped_mirror_is_reported_exactly_and_nothing_else_is_lost() {
    let a = Broker::start_with_args(&["--log-retention-check-interval-ms", "200"]);
    let b = Broker::start();
    a.create_topic(
        "events",
        1,
        &[("segment.bytes", "2048"), ("retention.bytes", "8192")],
    );
    let ts = now_ms();
    let records = |from: usize, to: usize| -> Vec<(i32, TestRecord)> {
        (from..to)
            .map(|i| (0, generated_record("r", i, ts)))
            .collect()
    };
    produce(&a, "events", &records(0, 40));
    let mut mirror = MirrorDaemon::start(&flow_config(&a, &b, ""));
    wait_for_records(&b, "a.events", 0, 40, MIRROR_WAIT);
    mirror.sigterm_and_wait();

    // While the mirror is away, the source takes 360 more records and its retention deletes
    // the oldest segments, past the mirror's cursor (40).
    // Small batches, so the records spread over many segments that retention can delete.
    let producer = a.producer(&[("batch.num.messages", "5")]);
    for (i, (p, r)) in records(40, 400).iter().enumerate() {
        producer
            .send("events", Some(*p), i, r, Instant::now() + MIRROR_WAIT)
            .expect("enqueue");
    }
    producer.flush(MIRROR_WAIT);
    assert_eq!(producer.delivered_count(), 360);
    let mut previous = -1;
    let log_start = wait_for(
        "the source's retention to settle past 40",
        MIRROR_WAIT,
        || {
            let (low, _) = a.watermarks("events", 0);
            let settled = low > 40 && low == previous;
            previous = low;
            thread::sleep(Duration::from_millis(500));
            settled.then_some(low)
        },
    );
    assert!(log_start < 400, "retention keeps the last segments");

    mirror.restart();
    let expected_on_target = 40 + (400 - log_start);
    wait_for_records(&b, "a.events", 0, expected_on_target, MIRROR_WAIT);
    let target = read_partition(&b, "a.events", 0);
    let received: Vec<usize> = target
        .iter()
        .map(|c| common::sequence_of(c.key.as_deref().expect("a key")))
        .collect();
    let audit = common::SequenceAudit::of(0..400, &received);
    let gone: Vec<usize> = (40..log_start as usize).collect();
    assert_eq!(
        audit,
        common::SequenceAudit {
            missing: gone.clone(),
            duplicated: 0,
            reordered: 0,
        },
        "only what the source deleted is missing; nothing is repeated or out of order"
    );
    eprintln!(
        "source log start {log_start}: {} records lost to retention, {} on the target",
        gone.len(),
        target.len()
    );

    // The operator is told exactly that range, in /status, the table and the counter.
    let lost = wait_for("the loss in /status", MIRROR_WAIT, || {
        let status = mirror.status();
        let partition = status["flows"][0]["topics"]
            .as_array()?
            .iter()
            .find(|t| t["topic"] == "events")?["partitions"][0]
            .clone();
        (partition["records_lost"].as_i64()? > 0).then_some(partition)
    });
    assert_eq!(lost["records_lost"], log_start - 40);
    assert_eq!(lost["lost"][0]["source_start"], 40);
    assert_eq!(lost["lost"][0]["source_end"], log_start);
    assert_eq!(lost["lost"].as_array().map(Vec::len), Some(1));
    let line = format!(
        "strait_mirror_records_lost_total{{flow=\"a-to-b\",topic=\"events\",partition=\"0\"}} {}",
        log_start - 40
    );
    let metrics = mirror.metrics();
    assert!(metrics.contains(&line), "no `{line}` in\n{metrics}");
    let table = Command::new(strait_bin())
        .args(["mirror", "status", "--http"])
        .arg(mirror.http_addr().to_string())
        .output()
        .expect("strait mirror status");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains(&format!(
            "LOST source offsets 40..{log_start} ({} records)",
            log_start - 40
        )),
        "{table}"
    );
    assert_eq!(
        mirror.log_lines_containing("retention overtook the mirror"),
        1,
        "one warning for the one loss"
    );
}

#[test]
fn topics_the_target_refuses_are_reported_and_retried_while_the_others_flow() {
    let a = Broker::start();
    let b = Broker::start();
    // Kafka's longest topic name is 249 characters: the source takes this one, the target
    // refuses its remote name `a.<name>` (251).
    let long = "x".repeat(249);
    a.create_topic(&long, 1, &[]);
    a.create_topic("good", 1, &[]);

    // MirrorMaker 2's default replication factor (3) on a one-node target: refused at the
    // flow's start, naming the setting to change, and nothing is created with fewer replicas.
    let mut strict = MirrorDaemon::start(&common::mirror::flow_config_with_replication_factors(
        &a, &b, "",
    ));
    wait_for("the replication factor refusal", MIRROR_WAIT, || {
        (strict.log_lines_containing(
            "replication factor 3 (`offset_syncs_topic_replication_factor`) is more than the cluster's 1 brokers",
        ) > 0)
            .then_some(())
    });
    strict.sigterm_and_wait();
    assert_eq!(
        b.topic_partition_count("strait-offset-runs.a-to-b.internal"),
        None
    );

    let mirror = MirrorDaemon::start(&flow_config(&a, &b, ""));
    let ts = now_ms();
    let records: Vec<(i32, TestRecord)> = (0..100)
        .map(|i| (0, generated_record("g", i, ts)))
        .collect();
    produce(&a, "good", &records);
    wait_for_records(&b, "a.good", 0, 100, MIRROR_WAIT);
    let received: Vec<usize> = read_partition(&b, "a.good", 0)
        .iter()
        .map(|c| common::sequence_of(c.key.as_deref().expect("a key")))
        .collect();
    assert_eq!(
        common::SequenceAudit::of(0..100, &received),
        common::SequenceAudit::default(),
        "the refused topic does not hold the others up"
    );
    let refused = wait_for("the refusal, tried again, in /status", MIRROR_WAIT, || {
        let status = mirror.status();
        let r = status["flows"][0]["refused_topics"]
            .as_array()?
            .first()?
            .clone();
        (r["attempts"].as_u64()? >= 2).then_some(r)
    });
    assert_eq!(refused["topic"], long.as_str());
    assert_eq!(refused["remote_topic"], format!("a.{long}"));
    assert!(
        refused["reason"]
            .as_str()
            .is_some_and(|r| r.contains("InvalidTopic")),
        "{refused}"
    );
    let line = format!("strait_mirror_topic_refused{{flow=\"a-to-b\",topic=\"{long}\"}} 1");
    let metrics = mirror.metrics();
    assert!(metrics.contains(&line), "no `{line}` in\n{metrics}");
    assert_eq!(b.topic_partition_count(&format!("a.{long}")), None);

    // Heartbeats are MirrorMaker 2's records, mirrored like any topic.
    wait_for_records(&b, "a.heartbeats", 0, 1, MIRROR_WAIT);
    let beats = common::mirror::heartbeats(&b, "a.heartbeats");
    assert!(!beats.is_empty());
    for (source, target, at) in beats {
        assert_eq!((source.as_str(), target.as_str()), ("a", "b"));
        assert!(
            (ts - 60_000..now_ms() + 1_000).contains(&at),
            "heartbeat at {at}"
        );
    }
}

#[test]
fn a_target_outage_under_load_loses_and_repeats_nothing_and_checkpoints_and_heartbeats_resume() {
    let a = Broker::start();
    let mut b = Broker::start();
    a.create_topic("flow", 2, &[]);
    let total = 6_000usize;
    let ts = now_ms();
    let bootstrap = a.bootstrap();
    let producer_thread = thread::spawn(move || {
        let producer = common::TestProducer::new(&bootstrap, &[]);
        let deadline = Instant::now() + Duration::from_secs(120);
        for i in 0..total {
            producer
                .send(
                    "flow",
                    Some((i % 2) as i32),
                    i,
                    &generated_record("o", i, ts),
                    deadline,
                )
                .unwrap();
            if i % 100 == 99 {
                producer.poll(Duration::ZERO);
                thread::sleep(Duration::from_millis(50)); // ~2,000 records/s
            }
        }
        producer.flush(Duration::from_secs(60));
        producer.delivered_count()
    });
    let mirror = MirrorDaemon::start(&flow_config(&a, &b, ""));
    wait_for("the mirror to copy something", MIRROR_WAIT, || {
        (b.topic_partition_count("a.flow") == Some(2) && b.watermarks("a.flow", 0).1 > 300)
            .then_some(())
    });
    // The target goes away mid-stream for longer than the mirror's request timeouts, and
    // comes back on the same address and data. 15 s in the suite; a soak run sets
    // STRAIT_TARGET_OUTAGE_S (an hour: 3600).
    let outage_s: u64 = std::env::var("STRAIT_TARGET_OUTAGE_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    b.sigkill();
    thread::sleep(Duration::from_secs(outage_s));
    b.restart_on_same_port();
    let restarted_ms = now_ms();
    assert_eq!(producer_thread.join().unwrap(), total);

    for p in 0..2 {
        let source = read_partition(&a, "flow", p);
        wait_for_records(&b, "a.flow", p, source.len() as i64, MIRROR_WAIT);
        let target = read_partition(&b, "a.flow", p);
        assert_eq!(
            common::SequenceAudit::of(sequence(&source), &sequence(&target)),
            common::SequenceAudit::default(),
            "partition {p}: lost, duplicated or reordered records across the outage"
        );
    }
    // Checkpoints and heartbeats resume by themselves.
    commit(&a, "after-outage", "flow", &[(0, 10), (1, 20)]);
    wait_for("a checkpoint made after the outage", MIRROR_WAIT, || {
        checkpoints(&b, "a.checkpoints.internal")
            .into_iter()
            .find(|c| c["group"] == "after-outage")
    });
    wait_for("a heartbeat written after the outage", MIRROR_WAIT, || {
        common::mirror::heartbeats(&b, "a.heartbeats")
            .into_iter()
            .find(|(_, _, at)| *at > restarted_ms)
    });
    // No restart storm: the pump's backoff doubles up to 30 s, so an outage of `outage_s`
    // costs about one restart per 30 s once it is long.
    let restarts = mirror.log_lines_containing("restarting");
    eprintln!("pump restarts across a {outage_s} s outage: {restarts}");
    assert!(
        restarts as u64 <= outage_s / 30 + 10,
        "{restarts} pump restarts across a {outage_s} s outage"
    );
}

#[test]
fn two_daemons_split_the_partitions_and_one_takes_over_when_the_other_is_killed() {
    let a = Broker::start();
    let b = Broker::start();
    a.create_topic("split", 4, &[]);
    let config = flow_config(&a, &b, "");
    let mut first = MirrorDaemon::start(&config);
    let second = MirrorDaemon::start(&config);
    // `split` has 4 partitions and `heartbeats` 1.
    wait_for("both daemons to hold partitions", MIRROR_WAIT, || {
        let (x, y) = (first.held_partitions(), second.held_partitions());
        (x > 0 && y > 0 && x + y == 5).then_some(())
    });
    let ts = now_ms();
    let batch = |from: usize| -> Vec<(i32, TestRecord)> {
        (from..from + 2000)
            .map(|i| ((i % 4) as i32, generated_record("split", i, ts)))
            .collect()
    };
    produce(&a, "split", &batch(0));
    for p in 0..4 {
        wait_for_records(&b, "a.split", p, 500, MIRROR_WAIT);
    }
    first.sigkill();
    produce(&a, "split", &batch(2000));
    wait_for(
        "the survivor to hold every partition",
        Duration::from_secs(90),
        || (second.held_partitions() == 5).then_some(()),
    );
    for p in 0..4 {
        wait_for_records(&b, "a.split", p, 1000, MIRROR_WAIT);
        let source = keys(&read_partition(&a, "split", p));
        let target: HashSet<Vec<u8>> = keys(&read_partition(&b, "a.split", p))
            .into_iter()
            .collect();
        let missing = source.iter().filter(|k| !target.contains(*k)).count();
        assert_eq!(
            missing, 0,
            "partition {p}: {missing} records missing on the target"
        );
    }
}

/// A small xorshift generator: the fault schedule is random, and its seed is printed (and
/// can be set with STRAIT_TEST_SEED) so a failing schedule can be replayed.
struct Schedule(u64);

impl Schedule {
    fn from_env() -> Schedule {
        let seed = std::env::var("STRAIT_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| now_ms() as u64 | 1);
        eprintln!("fault schedule seed: {seed} (STRAIT_TEST_SEED={seed} replays it)");
        Schedule(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `from..to` milliseconds.
    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.next() % (to - from))
    }
}

#[test]
fn twenty_sigkills_and_a_sigstop_past_the_session_leave_every_record_exactly_once_in_order() {
    let a = Broker::start();
    let b = Broker::start();
    a.create_topic("steady", 4, &[]);
    let config = flow_config(&a, &b, "");
    let mut daemons = [MirrorDaemon::start(&config), MirrorDaemon::start(&config)];
    wait_for("both daemons to hold partitions", MIRROR_WAIT, || {
        let (x, y) = (daemons[0].held_partitions(), daemons[1].held_partitions());
        (x > 0 && y > 0).then_some(())
    });
    // A steady load of about 2,000 records/s until the faults are over.
    let stop = Arc::new(AtomicBool::new(false));
    let bootstrap = a.bootstrap();
    let producer_thread = {
        let stop = stop.clone();
        thread::spawn(move || {
            // Idempotent: the source itself has each record once, so any repeat on the
            // target is the mirror's.
            let producer = common::TestProducer::new(&bootstrap, &[("enable.idempotence", "true")]);
            let deadline = Instant::now() + Duration::from_secs(600);
            let ts = now_ms();
            let mut sent = 0usize;
            while !stop.load(Ordering::SeqCst) {
                // Small steps, so records are always queued or in flight in the daemons.
                for _ in 0..20 {
                    let i = sent;
                    producer
                        .send(
                            "steady",
                            Some((i % 4) as i32),
                            i,
                            &generated_record("f", i, ts),
                            deadline,
                        )
                        .unwrap();
                    sent += 1;
                }
                producer.poll(Duration::ZERO);
                thread::sleep(Duration::from_millis(10));
            }
            producer.flush(Duration::from_secs(60));
            assert_eq!(
                producer.delivered_count(),
                sent,
                "the source took every record"
            );
            sent
        })
    };
    wait_for("the mirror to copy something", MIRROR_WAIT, || {
        (b.topic_partition_count("a.steady") == Some(4) && b.watermarks("a.steady", 0).1 > 200)
            .then_some(())
    });
    let mut schedule = Schedule::from_env();
    for kill in 0..20 {
        thread::sleep(schedule.millis(300, 2_500));
        let victim = (schedule.next() % 2) as usize;
        daemons[victim].sigkill();
        thread::sleep(schedule.millis(0, 1_000));
        daemons[victim].restart();
        eprintln!("kill {kill}: daemon {victim} killed and restarted");
    }
    // One daemon frozen for longer than the session timeout (10 s): the group gives its
    // partitions to the other, which writes them; then it runs again with what it had
    // queued and fetched, and must write none of it.
    // Frozen in full flow (caught up, records queued in its producer and fetched by its
    // consumer), not while it is still finding its place after the kills.
    wait_for(
        "both daemons to hold partitions and the mirror to catch up",
        Duration::from_secs(120),
        || {
            let (x, y) = (daemons[0].held_partitions(), daemons[1].held_partitions());
            let caught_up =
                (0..4).all(|p| b.watermarks("a.steady", p).1 + 500 >= a.watermarks("steady", p).1);
            (x > 0 && y > 0 && caught_up).then_some(())
        },
    );
    thread::sleep(Duration::from_secs(1));
    let frozen = (schedule.next() % 2) as usize;
    daemons[frozen].sigstop();
    let survivor = 1 - frozen;
    wait_for(
        "the other daemon to take every partition",
        Duration::from_secs(60),
        || (daemons[survivor].held_partitions() == 5).then_some(()),
    );
    thread::sleep(Duration::from_secs(2)); // it writes the taken partitions for a while
    daemons[frozen].sigcont();
    thread::sleep(Duration::from_secs(5));
    stop.store(true, Ordering::SeqCst);
    let sent = producer_thread.join().unwrap();
    eprintln!("records produced under the faults: {sent}");

    for p in 0..4 {
        let source = read_partition(&a, "steady", p);
        wait_for_records(
            &b,
            "a.steady",
            p,
            source.len() as i64,
            Duration::from_secs(120),
        );
        let target = read_partition(&b, "a.steady", p);
        let audit = common::SequenceAudit::of(sequence(&source), &sequence(&target));
        // For the failure message: where on the target the repeats are.
        let mut seen = HashMap::new();
        let repeats: Vec<(usize, i64, i64)> = sequence(&target)
            .into_iter()
            .enumerate()
            .filter_map(|(at, n)| seen.insert(n, at).map(|first| (n, first as i64, at as i64)))
            .take(5)
            .collect();
        assert_eq!(
            audit,
            common::SequenceAudit::default(),
            "partition {p}: lost, duplicated or reordered records after 20 SIGKILLs and a SIGSTOP (first repeats as (sequence, first target offset, repeat target offset): {repeats:?})"
        );
        assert_eq!(
            sequence(&target),
            sequence(&source),
            "partition {p}: the target is not an exact copy"
        );
    }
    // The woken daemon noticed its stall and was fenced (by the rebalance that told it the
    // partitions were gone, or by the commit refused after the stall), and said so.
    let woke = &daemons[frozen];
    let fences = woke
        .metrics()
        .lines()
        .find(|l| l.starts_with("strait_mirror_errors_total{") && l.contains("kind=\"fenced\""))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or(0);
    eprintln!(
        "the frozen daemon after SIGCONT: {} stall(s) noticed, {fences} fence(s), {} flow restart(s) as fenced",
        woke.log_lines_containing("the process did not run for a while"),
        woke.log_lines_containing("flow fenced; restarting it"),
    );
    assert!(
        woke.log_lines_containing("the process did not run for a while") > 0,
        "the frozen daemon noticed its stall"
    );
    assert!(
        fences > 0,
        "the frozen daemon was fenced (strait_mirror_errors_total{{kind=\"fenced\"}})"
    );
}

#[test]
fn a_to_b_and_b_to_a_together_do_not_loop() {
    let a = Broker::start();
    let b = Broker::start();
    a.create_topic("orders", 1, &[]);
    b.create_topic("payments", 1, &[]);
    a.create_topic("shared", 1, &[]);
    b.create_topic("shared", 1, &[]);
    let config = format!(
        "clusters:\n  a:\n    bootstrap_servers: {a}\n  b:\n    bootstrap_servers: {b}\nflows:\n\
         - source: a\n    target: b\n    topic_refresh_interval_ms: 500\n{one}    topics: {{include: ['orders', 'heartbeats', 'b\\..*']}}\n\
         - source: b\n    target: a\n    topic_refresh_interval_ms: 500\n{one}    topics: {{include: ['payments', 'heartbeats', 'a\\..*']}}\n\
         - name: shared-a-to-b\n    source: a\n    target: b\n    replication_policy: identity\n    heartbeat_interval_ms: 0\n    topic_refresh_interval_ms: 500\n{one}    topics: {{include: ['shared']}}\n\
         - name: shared-b-to-a\n    source: b\n    target: a\n    replication_policy: identity\n    heartbeat_interval_ms: 0\n    topic_refresh_interval_ms: 500\n{one}    topics: {{include: ['shared']}}\n",
        a = a.bootstrap(),
        b = b.bootstrap(),
        one = common::mirror::ONE_REPLICA
    );
    let config = config.replace("\n- ", "\n  - ");
    let mirror = MirrorDaemon::start(&config);
    let ts = now_ms();
    let rec = |tag: &str, n: usize| -> Vec<(i32, TestRecord)> {
        (0..n).map(|i| (0, generated_record(tag, i, ts))).collect()
    };
    produce(&a, "orders", &rec("o", 50));
    produce(&b, "payments", &rec("p", 30));
    produce(&a, "shared", &rec("sa", 20));
    produce(&b, "shared", &rec("sb", 10));
    wait_for_records(&b, "a.orders", 0, 50, MIRROR_WAIT);
    wait_for_records(&a, "b.payments", 0, 30, MIRROR_WAIT);
    wait_for_records(&b, "shared", 0, 30, MIRROR_WAIT);
    wait_for_records(&a, "shared", 0, 30, MIRROR_WAIT);
    wait_for_records(&b, "a.heartbeats", 0, 1, MIRROR_WAIT);
    // Give a loop time to show itself.
    thread::sleep(Duration::from_secs(3));
    assert_eq!(b.watermarks("a.orders", 0).1, 50);
    assert_eq!(a.watermarks("b.payments", 0).1, 30);
    assert_eq!(
        a.watermarks("shared", 0).1,
        30,
        "identity: records from b came back to b or a twice"
    );
    assert_eq!(b.watermarks("shared", 0).1, 30);
    for broker in [&a, &b] {
        let looped: Vec<String> = broker
            .all_topics()
            .into_iter()
            .map(|(t, _)| t)
            .filter(|t| t.starts_with("a.b.") || t.starts_with("b.a."))
            .collect();
        assert!(looped.is_empty(), "topics mirrored back: {looped:?}");
    }
    let metrics = mirror.metrics();
    let skipped = |flow: &str| -> u64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "strait_mirror_records_skipped_total{{flow=\"{flow}\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(
        skipped("shared-b-to-a"),
        20,
        "the 20 records a sent to b are not sent back\n{metrics}"
    );
    assert_eq!(skipped("shared-a-to-b"), 10, "{metrics}");
}

#[test]
fn a_config_with_an_unknown_alias_is_refused_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "clusters:\n  a:\n    bootstrap_servers: 127.0.0.1:1\n  b:\n    bootstrap_servers: 127.0.0.1:2\nflows:\n  - source: a\n    target: c\n",
    )
    .unwrap();
    let out = Command::new(strait_bin())
        .args(["mirror", "--config"])
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path().join("d"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.yaml:8:"),
        "the line of `target: c`: {stderr}"
    );
    assert!(
        stderr.contains("unknown cluster alias `c` (known: a, b)"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("d").exists(),
        "nothing is created for a refused config"
    );
}

#[test]
fn a_foreign_write_into_a_mirror_topic_is_reported_and_translation_steps_over_it() {
    let a = Broker::start();
    let b = Broker::start();
    a.create_topic("pay", 1, &[]);
    let ts = now_ms();
    let first: Vec<(i32, TestRecord)> = (0..10)
        .map(|i| (0, generated_record("pay", i, ts)))
        .collect();
    produce(&a, "pay", &first);
    // Unprotected, so that a write can get in, as on a broker other than strait.
    let mirror = MirrorDaemon::start(&flow_config(&a, &b, "    protect_target_topics: false\n"));
    wait_for_records(&b, "a.pay", 0, 10, MIRROR_WAIT);
    // Someone writes three records into the mirror topic, then the source goes on.
    let stray: Vec<(i32, TestRecord)> = (0..3)
        .map(|i| (0, generated_record("stray", i, ts)))
        .collect();
    produce(&b, "a.pay", &stray);
    let more: Vec<(i32, TestRecord)> = (10..20)
        .map(|i| (0, generated_record("pay", i, ts)))
        .collect();
    produce(&a, "pay", &more);
    wait_for_records(&b, "a.pay", 0, 23, MIRROR_WAIT);
    let foreign = wait_for("the foreign write to be reported", MIRROR_WAIT, || {
        let status = mirror.status();
        let n = status["flows"][0]["topics"]
            .as_array()?
            .iter()
            .find(|t| t["topic"] == "pay")?["partitions"][0]["foreign_records"]
            .as_i64()?;
        (n > 0).then_some(n)
    });
    assert_eq!(foreign, 3, "the three stray records, counted once");
    assert!(
        mirror.metrics().contains(
            "strait_mirror_foreign_records_total{flow=\"a-to-b\",topic=\"pay\",partition=\"0\"} 3"
        ),
        "{}",
        mirror.metrics()
    );
    assert!(mirror.log_lines_containing("foreign write") >= 1);
    // A group past the stray records translates over them: source 15 is target 18.
    commit(&a, "billing", "pay", &[(0, 15)]);
    let synced = wait_for("billing's offset on the target", MIRROR_WAIT, || {
        committed(&b, "billing", "a.pay", 1)[0]
    });
    assert_eq!(synced, 18);
    let target = read_partition(&b, "a.pay", 0);
    assert_eq!(
        target[18].key, more[5].1.key,
        "the group resumes at source record 15"
    );
}

/// Sets one strait pseudo-config of `topic` on `broker` (alone in its request, as the broker
/// requires for these keys).
fn alter_topic(broker: &Broker, topic: &str, key: &str, value: &str) {
    let admin = broker.admin();
    let opts = AdminOptions::new().request_timeout(Some(OP_TIMEOUT));
    let alter = AlterConfig::new(ResourceSpecifier::Topic(topic)).set(key, value);
    let results = block_on(admin.alter_configs([&alter], &opts), OP_TIMEOUT).expect("AlterConfigs");
    for r in results {
        r.unwrap_or_else(|e| panic!("{key}={value} on {topic}: {e:?}"));
    }
}

/// Cuts `topic`/`partition` on `broker` back to `end`, as an unclean leader election would:
/// write-protected (no writer may be active for a cut), cut, unprotected.
fn truncate_source(broker: &Broker, topic: &str, partition: i32, end: i64) {
    alter_topic(
        broker,
        topic,
        "strait.write.protection",
        "flow=test-truncation",
    );
    alter_topic(
        broker,
        topic,
        "strait.truncate.tail",
        &format!("{partition}:{end}"),
    );
    wait_for("the source's cut", MIRROR_WAIT, || {
        (broker.watermarks(topic, partition).1 == end).then_some(())
    });
    alter_topic(broker, topic, "strait.write.protection", "");
}

/// Waits for `/status` to show a partition stopped by a divergence; its entry.
fn wait_for_divergence(mirror: &MirrorDaemon, topic: &str, partition: i64) -> serde_json::Value {
    wait_for("the divergence in /status", MIRROR_WAIT, || {
        partition_status(mirror, topic, partition)?
            .get("diverged")
            .filter(|d| d.is_object())
            .cloned()
    })
}

/// Asserts that partition 0 of `topic` stopped at source offset `at` after `mirrored_to`
/// were copied, and that the target holds exactly the old copies, 0 .. `mirrored_to`, once
/// each in order: nothing of what the source holds now was copied on top.
fn assert_stopped_at(mirror: &MirrorDaemon, b: &Broker, topic: &str, at: i64, mirrored_to: i64) {
    let diverged = wait_for_divergence(mirror, topic, 0);
    assert_eq!(diverged["source_offset"], at, "{diverged}");
    assert_eq!(diverged["mirrored_to"], mirrored_to, "{diverged}");
    thread::sleep(Duration::from_secs(2));
    let target = read_partition(b, &format!("a.{topic}"), 0);
    assert_eq!(
        sequence(&target),
        (0..mirrored_to as usize).collect::<Vec<_>>(),
        "the old copies once each, nothing new on top"
    );
}

/// A partition's status entry.
fn partition_status(
    mirror: &MirrorDaemon,
    topic: &str,
    partition: i64,
) -> Option<serde_json::Value> {
    let status = mirror.status();
    status["flows"][0]["topics"]
        .as_array()?
        .iter()
        .find(|t| t["topic"] == topic)?["partitions"]
        .as_array()?
        .iter()
        .find(|p| p["partition"] == partition)
        .cloned()
}

#[test]
fn a_source_truncated_below_the_mirror_stops_that_partition_until_an_operator_resolves_it() {
    let a = Broker::start();
    let b = Broker::start();
    a.create_topic("events", 2, &[]);
    let ts = now_ms();
    let records = |p: i32, from: usize, to: usize| -> Vec<(i32, TestRecord)> {
        (from..to)
            .map(|i| (p, generated_record("ev", i, ts)))
            .collect()
    };
    // Two flushes, so that a batch starts at 60 (a cut takes whole batches).
    produce(&a, "events", &records(0, 0, 60));
    produce(&a, "events", &records(0, 60, 100));
    produce(&a, "events", &records(1, 0, 20));
    let mut mirror = MirrorDaemon::start(&flow_config(&a, &b, ""));
    wait_for_records(&b, "a.events", 0, 100, MIRROR_WAIT);
    wait_for_records(&b, "a.events", 1, 20, MIRROR_WAIT);

    // The source loses its last 40 records of partition 0 while the mirror runs (caught
    // up): the mirror stops that partition and says where.
    truncate_source(&a, "events", 0, 60);
    let diverged = wait_for_divergence(&mirror, "events", 0);
    assert_eq!(diverged["source_offset"], 60, "{diverged}");
    assert_eq!(diverged["mirrored_to"], 100, "{diverged}");
    assert_eq!(diverged["source_end_offset"], 60, "{diverged}");
    // New records on the diverged partition are not copied on top of the old ones; the
    // other partition keeps flowing.
    produce(&a, "events", &records(0, 1000, 1010));
    produce(&a, "events", &records(1, 20, 30));
    wait_for_records(&b, "a.events", 1, 30, MIRROR_WAIT);
    thread::sleep(Duration::from_secs(2));
    assert_eq!(
        b.watermarks("a.events", 0).1,
        100,
        "nothing was copied on top"
    );
    let metrics = mirror.metrics();
    for line in [
        "strait_mirror_partition_diverged{flow=\"a-to-b\",topic=\"events\",partition=\"0\"} 1",
        "strait_mirror_partition_diverged{flow=\"a-to-b\",topic=\"events\",partition=\"1\"} 0",
    ] {
        assert!(metrics.contains(line), "no `{line}` in\n{metrics}");
    }
    assert_eq!(
        mirror.log_lines_containing("no longer holds what was mirrored"),
        1
    );
    let table = Command::new(strait_bin())
        .args(["mirror", "status", "--http"])
        .arg(mirror.http_addr().to_string())
        .output()
        .expect("strait mirror status");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("DIVERGED from source offset 60 (mirrored to 100, source end 60)"),
        "{table}"
    );

    // A restart keeps it stopped (the divergence is in the index), and a resolution past
    // the divergence is refused.
    mirror.sigterm_and_wait();
    mirror.restart();
    wait_for("the divergence after a restart", MIRROR_WAIT, || {
        partition_status(&mirror, "events", 0)?
            .get("diverged")
            .filter(|d| d.is_object())
            .map(|_| ())
    });
    let resolve = |from: Option<&str>| {
        let mut cmd = Command::new(strait_bin());
        cmd.args(["mirror", "resolve-divergence", "--http"])
            .arg(mirror.http_addr().to_string())
            .args(["--flow", "a-to-b", "--topic", "events", "--partition", "0"]);
        if let Some(from) = from {
            cmd.args(["--from", from]);
        }
        cmd.output().expect("strait mirror resolve-divergence")
    };
    let refused = resolve(Some("61"));
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("between 0 and 60"), "{err}");
    assert_eq!(b.watermarks("a.events", 0).1, 100);

    let resolved = resolve(None);
    let out = String::from_utf8_lossy(&resolved.stdout);
    assert!(
        resolved.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&resolved.stderr)
    );
    assert!(
        out.contains("copied again from offset 60, to the target from offset 100"),
        "{out}"
    );
    assert!(out.contains("target offsets 60..100 hold copies"), "{out}");

    // The new records follow the old copies, exactly once, in order, and translate.
    wait_for_records(&b, "a.events", 0, 110, MIRROR_WAIT);
    let target = read_partition(&b, "a.events", 0);
    assert_eq!(
        sequence(&target),
        (0..100).chain(1000..1010).collect::<Vec<_>>()
    );
    for (i, c) in target[100..].iter().enumerate() {
        let source = c
            .headers
            .iter()
            .find(|(k, _)| k == "strait.source")
            .and_then(|(_, v)| v.clone());
        assert_eq!(source, Some(format!("a-to-b/{}", 60 + i).into_bytes()));
    }
    wait_for("the partition resumed in /status", MIRROR_WAIT, || {
        let p = partition_status(&mirror, "events", 0)?;
        (p.get("diverged").is_none() && p["mirrored_offset"] == 70).then_some(())
    });
    commit(&a, "readers", "events", &[(0, 65)]);
    let checkpoint = wait_for(
        "a checkpoint of the group past the divergence",
        MIRROR_WAIT,
        || {
            checkpoints(&b, "a.checkpoints.internal")
                .into_iter()
                .rfind(|c| c["group"] == "readers" && c["partition"] == 0)
                .filter(|c| c["upstream_offset"] == 65)
        },
    );
    assert_eq!(checkpoint["downstream_offset"], 105, "{checkpoint}");
    assert!(mirror.metrics().contains(
        "strait_mirror_partition_diverged{flow=\"a-to-b\",topic=\"events\",partition=\"0\"} 0"
    ));
}

/// Deletes `topic` on `broker`, waits until it is gone, and creates it again empty.
/// Case 4 while the mirror is away: the source is cut below what was mirrored and written
/// again past the mirror's cursor before it restarts, so neither its end nor its log start
/// gives the cut away. The leader epoch recorded with the runs does: the restarted pump
/// finds the epoch changed, has the position validated (KIP-320), and stops the partition
/// where the source diverged.
#[test]
fn a_source_cut_and_refilled_past_the_cursor_while_the_mirror_was_away_is_found_at_restart() {
    let a = Broker::start();
    let b = Broker::start();
    a.create_topic("refill", 1, &[]);
    let ts = now_ms();
    let records = |prefix: &str, from: usize, to: usize| -> Vec<(i32, TestRecord)> {
        (from..to)
            .map(|i| (0, generated_record(prefix, i, ts)))
            .collect()
    };
    // Two flushes, so that a batch starts at 60 (a cut takes whole batches).
    produce(&a, "refill", &records("old", 0, 60));
    produce(&a, "refill", &records("old", 60, 100));
    let mut mirror = MirrorDaemon::start(&flow_config(&a, &b, ""));
    wait_for_records(&b, "a.refill", 0, 100, MIRROR_WAIT);
    mirror.sigterm_and_wait();

    truncate_source(&a, "refill", 0, 60);
    produce(&a, "refill", &records("new", 60, 130));
    assert_eq!(a.watermarks("refill", 0), (0, 130));

    mirror.restart();
    assert_stopped_at(&mirror, &b, "refill", 60, 100);
    assert_eq!(
        mirror.log_lines_containing(
            "the source's leader epoch changed since this partition was last read"
        ),
        1
    );
}

/// Case 4 with a real unclean leader election on a three-node source: a follower frozen out
/// of the ISR, records the leader alone held (and the mirror copied), the leader killed, and
/// the stale follower elected because the topic allows it. The source now holds other records
/// at offsets the mirror copied: the partition must stop, with nothing copied on top.
#[test]
fn an_unclean_leader_election_on_a_three_node_source_stops_the_partition_at_the_divergence() {
    let mut source = Cluster::new(3, "replica_lag_time_max_ms: 2000\n");
    source.start_all();
    // Every node, also those that will be down: the mirror's bootstrap list outlives them.
    let bootstrap = source
        .ids()
        .iter()
        .map(|id| source.node(*id).addr().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let b = Broker::start();
    create_topic_with_configs(
        &bootstrap,
        "ledger",
        1,
        2,
        &[
            ("unclean.leader.election.enable", "true"),
            ("min.insync.replicas", "1"),
        ],
        OP_TIMEOUT,
    )
    .expect("create ledger");
    let ts = now_ms();
    let records = |prefix: &str, from: usize, to: usize| -> Vec<(i32, TestRecord)> {
        (from..to)
            .map(|i| (0, generated_record(prefix, i, ts)))
            .collect()
    };
    let md = source.wait_metadata(1, "ledger on two in-sync replicas", MIRROR_WAIT, |md| {
        md.partitions("ledger")
            .first()
            .is_some_and(|p| p.leader >= 0 && p.isr.len() == 2)
    });
    let p = md.partitions("ledger")[0].clone();
    let leader = p.leader;
    let follower = *p.replicas.iter().find(|r| **r != leader).unwrap();
    let bystander = source
        .ids()
        .into_iter()
        .find(|id| !p.replicas.contains(id))
        .unwrap();
    produce_to(&bootstrap, "ledger", &records("old", 0, 50));
    let mirror = MirrorDaemon::start(&flow_config(&bootstrap, &b, ""));
    wait_for_records(&b, "a.ledger", 0, 50, MIRROR_WAIT);

    // The follower freezes and leaves the ISR; the leader alone takes 50 more, which the
    // mirror copies.
    let frozen = source.node(follower).pid();
    // SAFETY: kill(2) on a child process of this test.
    unsafe { libc::kill(frozen, libc::SIGSTOP) };
    source.wait_metadata(
        bystander,
        "the frozen follower out of the ISR",
        MIRROR_WAIT,
        |md| md.partitions("ledger")[0].isr == [leader],
    );
    produce_to(&bootstrap, "ledger", &records("old", 50, 100));
    wait_for_records(&b, "a.ledger", 0, 100, MIRROR_WAIT);

    // The leader dies with records no one else has; the follower comes back and is elected
    // uncleanly (the only live replica), its log ending at 50.
    source.sigkill(leader);
    // SAFETY: as above.
    unsafe { libc::kill(frozen, libc::SIGCONT) };
    let md = source.wait_metadata(bystander, "the stale follower elected", MIRROR_WAIT, |md| {
        md.partitions("ledger")[0].leader == follower
    });
    assert!(md.partitions("ledger")[0].leader_epoch > p.leader_epoch);
    wait_for("the new leader's end at 50", MIRROR_WAIT, || {
        (common::watermarks(&source.bootstrap(), "ledger", 0).1 == 50).then_some(())
    });
    produce_to(&source.bootstrap(), "ledger", &records("new", 50, 60));

    assert_stopped_at(&mirror, &b, "ledger", 50, 100);
    assert!(mirror.metrics().contains(
        "strait_mirror_partition_diverged{flow=\"a-to-b\",topic=\"ledger\",partition=\"0\"} 1"
    ));
}

/// Records `from..to` of `orders`, all on partition 0, stamped `ts`.
fn orders_records(ts: i64, from: usize, to: usize) -> Vec<(i32, TestRecord)> {
    (from..to)
        .map(|i| (0, generated_record("or", i, ts)))
        .collect()
}

/// Two single-node sites with `orders` (one partition) on the source, its first `count`
/// records mirrored by a running daemon; and their timestamp.
fn mirrored_orders(count: usize) -> (Broker, Broker, MirrorDaemon, i64) {
    let a = Broker::start();
    let b = Broker::start();
    a.create_topic("orders", 1, &[]);
    let ts = now_ms();
    produce(&a, "orders", &orders_records(ts, 0, count));
    let mirror = MirrorDaemon::start(&flow_config(&a, &b, ""));
    wait_for_records(&b, "a.orders", 0, count as i64, MIRROR_WAIT);
    (a, b, mirror, ts)
}

fn recreate_topic(broker: &Broker, topic: &str, partitions: i32) {
    for r in broker.delete_topics(&[topic]) {
        r.unwrap_or_else(|e| panic!("deleting {topic}: {e:?}"));
    }
    wait_for("the topic's deletion", MIRROR_WAIT, || {
        broker.topic_partition_count(topic).is_none().then_some(())
    });
    broker.create_topic(topic, partitions, &[]);
}

#[test]
fn a_source_topic_recreated_under_the_same_name_is_copied_from_its_start_after_the_old_copies() {
    let (a, b, mut mirror, ts) = mirrored_orders(50);
    let records = |from, to| orders_records(ts, from, to);

    // Recreated while the mirror is away, and grown past what was mirrored of the old one:
    // only the topic id tells them apart.
    mirror.sigterm_and_wait();
    recreate_topic(&a, "orders", 1);
    produce(&a, "orders", &records(100, 180));
    mirror.restart();
    wait_for_records(&b, "a.orders", 0, 130, MIRROR_WAIT);
    let recreated = wait_for("the recreation in /status", MIRROR_WAIT, || {
        let p = partition_status(&mirror, "orders", 0)?;
        (p["source_recreations"] == 1).then_some(p)
    });
    assert_eq!(recreated["recreated"]["target_offset"], 50, "{recreated}");
    assert_eq!(
        mirror.log_lines_containing("deleted and recreated under the same name"),
        1
    );

    // Recreated again while the mirror runs.
    recreate_topic(&a, "orders", 1);
    produce(&a, "orders", &records(200, 230));
    wait_for_records(&b, "a.orders", 0, 160, MIRROR_WAIT);
    thread::sleep(Duration::from_secs(2));
    let target = read_partition(&b, "a.orders", 0);
    assert_eq!(
        sequence(&target),
        (0..50).chain(100..180).chain(200..230).collect::<Vec<_>>(),
        "each incarnation whole, once, in order, after the one before"
    );
    for (i, c) in target[130..].iter().enumerate() {
        let source = c
            .headers
            .iter()
            .find(|(k, _)| k == "strait.source")
            .and_then(|(_, v)| v.clone());
        assert_eq!(source, Some(format!("a-to-b/{i}").into_bytes()));
    }
    let p = wait_for("the second recreation in /status", MIRROR_WAIT, || {
        let p = partition_status(&mirror, "orders", 0)?;
        (p["source_recreations"] == 2 && p["mirrored_offset"] == 30).then_some(p)
    });
    assert_eq!(p["recreated"]["target_offset"], 130, "{p}");
    assert!(p.get("diverged").is_none(), "{p}");
    assert!(mirror.metrics().contains(
        "strait_mirror_source_recreated_total{flow=\"a-to-b\",topic=\"orders\",partition=\"0\"} 2"
    ));
    // Offsets of the newest incarnation translate into its own copies.
    commit(&a, "buyers", "orders", &[(0, 10)]);
    let checkpoint = wait_for(
        "a checkpoint on the newest incarnation",
        MIRROR_WAIT,
        || {
            checkpoints(&b, "a.checkpoints.internal")
                .into_iter()
                .rfind(|c| c["group"] == "buyers")
                .filter(|c| c["upstream_offset"] == 10)
        },
    );
    assert_eq!(checkpoint["downstream_offset"], 140, "{checkpoint}");
}

#[test]
fn a_target_topic_recreated_by_hand_stops_the_partition_or_is_copied_again_from_the_source_log_start(
) {
    let (a, b, mut mirror, ts) = mirrored_orders(40);
    let records = |from, to| orders_records(ts, from, to);
    // A group checkpointed into the mirror topic that is about to go.
    commit(&a, "auditors", "orders", &[(0, 20)]);
    wait_for("the auditors' checkpoint", MIRROR_WAIT, || {
        checkpoints(&b, "a.checkpoints.internal")
            .into_iter()
            .find(|c| c["group"] == "auditors" && c["upstream_offset"] == 20)
    });
    mirror.sigterm_and_wait();

    // While the mirror is away, someone deletes the mirror topic, and the source's log start
    // moves to 10: records 0..9 are then on neither side.
    for r in b.delete_topics(&["a.orders"]) {
        r.expect("deleting the mirror topic");
    }
    wait_for("the mirror topic's deletion", MIRROR_WAIT, || {
        b.topic_partition_count("a.orders").is_none().then_some(())
    });
    let admin = a.admin();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset("orders", 0, rdkafka::Offset::Offset(10))
        .unwrap();
    block_on(
        admin.delete_records(&tpl, &AdminOptions::new().request_timeout(Some(OP_TIMEOUT))),
        OP_TIMEOUT,
    )
    .expect("DeleteRecords");
    assert_eq!(a.watermarks("orders", 0).0, 10);

    // First under `on_target_topic_recreated: stop`: the partition stops with an error,
    // nothing is copied into the new mirror topic and no group translates into it.
    let config = flow_config(&a, &b, "    on_target_topic_recreated: stop\n");
    mirror.set_config(&config);
    mirror.restart();
    let p = wait_for("the stop in /status", MIRROR_WAIT, || {
        partition_status(&mirror, "orders", 0).filter(|p| p["stopped"].is_string())
    });
    assert!(
        p["stopped"]
            .as_str()
            .unwrap()
            .contains("on_target_topic_recreated is stop"),
        "{p}"
    );
    commit(&a, "buyers", "orders", &[(0, 25)]);
    wait_for(
        "the mirror topic made again by the topic syncer",
        MIRROR_WAIT,
        || b.topic_partition_count("a.orders").map(|_| ()),
    );
    thread::sleep(Duration::from_secs(3));
    let age = mirror.status()["flows"][0]["checkpoint_age_seconds"].as_f64();
    assert!(
        age.is_some_and(|a| a < 2.0),
        "checkpoint rounds went on meanwhile (last {age:?} s ago)"
    );
    assert_eq!(
        b.watermarks("a.orders", 0),
        (0, 0),
        "nothing copied while stopped"
    );
    assert!(
        checkpoints(&b, "a.checkpoints.internal")
            .iter()
            .all(|c| c["group"] != "buyers"),
        "no checkpoint into a mirror topic the flow did not fill"
    );
    assert!(mirror.metrics().contains(
        "strait_mirror_partition_stopped{flow=\"a-to-b\",topic=\"orders\",partition=\"0\"} 1"
    ));
    assert_eq!(
        mirror.log_lines_containing("this partition is stopped (on_target_topic_recreated: stop)"),
        1
    );
    // A forced failover's final commit does not carry the auditors' old checkpoint into
    // the new topic either: the entry says why.
    let before = committed(&b, "auditors", "a.orders", 1);
    mirror.post("/flows/a-to-b/stop");
    let answer = mirror.post("/flows/a-to-b/commit-checkpoints");
    let entry = answer["commits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["group"] == "auditors")
        .cloned()
        .unwrap_or_else(|| panic!("no auditors entry in {answer}"));
    assert!(
        entry["skipped"]
            .as_str()
            .is_some_and(|s| s.contains("no longer translate")),
        "{entry}"
    );
    assert_eq!(committed(&b, "auditors", "a.orders", 1), before);
    mirror.post("/flows/a-to-b/start");

    // Then the default, `recopy`.
    mirror.sigterm_and_wait();
    mirror.set_config(&flow_config(&a, &b, ""));
    mirror.restart();
    wait_for_records(&b, "a.orders", 0, 30, MIRROR_WAIT);
    produce(&a, "orders", &records(40, 50));
    wait_for_records(&b, "a.orders", 0, 40, MIRROR_WAIT);
    thread::sleep(Duration::from_secs(2));
    let target = read_partition(&b, "a.orders", 0);
    assert_eq!(
        sequence(&target),
        (10..50).collect::<Vec<_>>(),
        "what the source still holds, once, in order"
    );
    let p = wait_for("the recreation in /status", MIRROR_WAIT, || {
        let p = partition_status(&mirror, "orders", 0)?;
        (p["target_recreations"] == 1 && p["mirrored_offset"] == 50).then_some(p)
    });
    assert_eq!(p["recreated"]["side"], "target", "{p}");
    assert_eq!(p["recreated"]["target_offset"], 0, "{p}");
    assert_eq!(p["records_lost"], 10, "{p}");
    assert_eq!(p["lost"][0]["source_start"], 0, "{p}");
    assert_eq!(p["lost"][0]["source_end"], 10, "{p}");
    assert!(mirror.metrics().contains(
        "strait_mirror_target_recreated_total{flow=\"a-to-b\",topic=\"orders\",partition=\"0\"} 1"
    ));
    assert_eq!(
        mirror.log_lines_containing("the target topic was deleted and recreated"),
        1
    );
    let checkpoint = wait_for(
        "a checkpoint into the new mirror topic",
        MIRROR_WAIT,
        || {
            checkpoints(&b, "a.checkpoints.internal")
                .into_iter()
                .rfind(|c| c["group"] == "buyers")
                .filter(|c| c["upstream_offset"] == 25)
        },
    );
    assert_eq!(checkpoint["downstream_offset"], 15, "{checkpoint}");
}

/// A line of `/proc/PID/status` (such as `Threads` or `VmRSS`), as its number.
fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Runs `tests/python/many_groups.py` (kafka-python) and returns its stdout.
fn many_groups(action: &str, bootstrap: &str, topic: &str, count: usize, extra: &[&str]) -> String {
    let path = common::repo_root().join("tests/python/many_groups.py");
    let output = Command::new("python3")
        .arg(&path)
        .arg(action)
        .args([
            "--bootstrap",
            bootstrap,
            "--topic",
            topic,
            "--prefix",
            "many",
        ])
        .args(["--count", &count.to_string()])
        .args(extra)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 {}: {e}", path.display()));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "many_groups.py {action} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Case 10 of the mirror's guarantees: thousands of groups are synced with no client per
/// group. The daemon's thread count (librdkafka starts threads per client) must not grow
/// with the groups, and every group must land at its exact translation, as an independent
/// client (kafka-python) reads it on the target.
#[test]
fn five_thousand_groups_are_synced_exactly_without_a_client_per_group() {
    const GROUPS: usize = 5_000;
    let a = Broker::start();
    let b = Broker::start();
    a.create_topic("many", 2, &[]);
    // Five foreign records on the target's partition 0: translation is not the identity.
    b.create_topic("a.many", 2, &[]);
    let ts = now_ms();
    let foreign: Vec<(i32, TestRecord)> = (0..5)
        .map(|i| (0, generated_record("foreign", i, ts)))
        .collect();
    produce(&b, "a.many", &foreign);
    let source: Vec<(i32, TestRecord)> = (0..100)
        .map(|i| (if i < 60 { 0 } else { 1 }, generated_record("many", i, ts)))
        .collect();
    produce(&a, "many", &source);

    let config = flow_config(&a, &b, "").replace(
        "checkpoint_interval_ms: 500",
        "checkpoint_interval_ms: 5000",
    );
    let mirror = MirrorDaemon::start(&config);
    wait_for_records(&b, "a.many", 0, 65, MIRROR_WAIT);
    wait_for_records(&b, "a.many", 1, 40, MIRROR_WAIT);
    // A round with no group yet, so the daemon's clients all exist.
    wait_for("a first checkpoint round", MIRROR_WAIT, || {
        mirror.status()["flows"][0]["checkpoint_round_seconds"]
            .as_f64()
            .map(|_| ())
    });
    let threads_before = proc_status(mirror.pid(), "Threads");
    let rss_before_kib = proc_status(mirror.pid(), "VmRSS");

    // Group i: offset i % 61 on partition 0 (0..=60, all mirrored), i % 41 on partition 1.
    many_groups("commit", &a.bootstrap(), "many", GROUPS, &[]);
    let created = Instant::now();
    wait_for(
        "a round covering every group",
        Duration::from_secs(300),
        || {
            let flow = &mirror.status()["flows"][0];
            (flow["checkpoint_groups"].as_u64() == Some(GROUPS as u64)).then_some(())
        },
    );
    let synced_after = created.elapsed();
    let checked = many_groups(
        "check",
        &b.bootstrap(),
        "a.many",
        GROUPS,
        &["--shift0", "5"],
    );
    assert!(checked.contains("all 5000 groups"), "{checked}");

    let threads_after = proc_status(mirror.pid(), "Threads");
    let rss_after_kib = proc_status(mirror.pid(), "VmRSS");
    println!(
        "{GROUPS} groups synced {synced_after:?} after they were committed; daemon threads {threads_before} -> {threads_after}, RSS {rss_before_kib} -> {rss_after_kib} KiB"
    );
    // One client per group would add librdkafka's threads (several per client) per group,
    // tens of thousands here; the margin is for tokio's blocking pool.
    assert!(
        threads_after <= threads_before + 16,
        "the daemon's threads grew from {threads_before} to {threads_after} with {GROUPS} groups"
    );
    // Thousands of clients would take hundreds of MiB; the groups' own state is small.
    assert!(
        rss_after_kib < rss_before_kib + 128 * 1024,
        "the daemon's RSS grew from {rss_before_kib} to {rss_after_kib} KiB with {GROUPS} groups"
    );
    let status = mirror.status();
    assert!(
        status["flows"][0]["errors"].get("checkpoint").is_none(),
        "no checkpoint round failed: {}",
        status["flows"][0]["errors"]
    );
    let metrics = mirror.metrics();
    assert!(
        metrics.contains(&format!(
            "strait_mirror_checkpoint_groups{{flow=\"a-to-b\"}} {GROUPS}"
        )),
        "the groups gauge: {}",
        metrics
            .lines()
            .filter(|l| l.contains("checkpoint"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
