//! Replication under faults, end to end: a port of Apache Kafka's ducktape
//! `replication_test.py`, plus the losses a three-node site must survive (two nodes down, a
//! wiped disk).
//!
//! Every test runs three real `strait broker` processes (`common::cluster::Cluster`) and real
//! rdkafka clients. The ducktape port writes continuously with an idempotent acks=all producer
//! to a topic of 3 partitions, replication factor 3 and `min.insync.replicas=2` while the leader
//! of partition 0 is shut down, killed or bounced; afterwards one consumer reads every
//! partition up to its high watermark and the test checks what ducktape's
//! `run_produce_consume_validate` checks, more strictly: every record was acknowledged, every
//! acknowledged record is present at the offset its acknowledgement named, none is duplicated,
//! and each partition holds the records in the order they were sent.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::cluster::*;
use common::*;
use rdkafka::consumer::Consumer;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::Offset;

/// Partitions of the test topic, as in ducktape's test.
const PARTITIONS: i32 = 3;
/// Records the producer aims to send per second (ducktape's VerifiableProducer sends 1000/s;
/// a little more here so each phase sees several thousand records).
const RECORDS_PER_SEC: u64 = 2_000;
/// Acknowledged records wanted before the fault and again after it (ducktape waits for the
/// producer to make progress on both sides of the failure).
const PROGRESS_RECORDS: u64 = 3_000;
/// Bound on the producer's progress after a fault: leadership moves after the 3 s session
/// timeout, then the producer's retries go through.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on a restarted node rejoining every ISR.
const REJOIN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the producer's final flush may take.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(90);

/// The value of record `index`: its index in text, padded so batches have some body.
fn record_value(index: usize) -> Vec<u8> {
    let mut v = format!("replication-test-{index:010}-").into_bytes();
    v.resize(100, b'.');
    v
}

/// An idempotent acks=all producer writing record after record (record `i` to partition
/// `i % PARTITIONS`) at [`RECORDS_PER_SEC`] from its own thread until stopped.
struct Workload {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    thread: Option<JoinHandle<WorkloadResult>>,
}

struct WorkloadResult {
    sent: usize,
    deliveries: Vec<Delivery>,
}

impl Workload {
    fn start(bootstrap: &str, topic: &str) -> Workload {
        let producer = TestProducer::new(
            bootstrap,
            &[
                ("enable.idempotence", "true"),
                ("acks", "all"),
                ("linger.ms", "5"),
                // Long enough that no record expires while a leader is down (the session
                // timeout is 3 s) and that the flush bound below is what ends a stuck test.
                ("message.timeout.ms", "120000"),
                ("retry.backoff.ms", "100"),
            ],
        );
        let acked = producer.acked_counter();
        let stop = Arc::new(AtomicBool::new(false));
        let topic = topic.to_string();
        let thread = {
            let stop = stop.clone();
            thread::spawn(move || {
                let started = Instant::now();
                let mut sent = 0usize;
                let mut local_errors = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let due =
                        (started.elapsed().as_millis() as u64 * RECORDS_PER_SEC / 1000) as usize;
                    while sent < due {
                        let record = TestRecord {
                            key: None,
                            value: Some(record_value(sent)),
                            headers: Vec::new(),
                            timestamp: None,
                        };
                        let partition = (sent % PARTITIONS as usize) as i32;
                        let deadline = Instant::now() + PROGRESS_TIMEOUT;
                        if let Err(e) =
                            producer.send(&topic, Some(partition), sent, &record, deadline)
                        {
                            local_errors.push(Delivery {
                                index: sent,
                                result: Err(e),
                            });
                        }
                        sent += 1;
                    }
                    producer.poll(Duration::from_millis(5));
                }
                producer.flush(FLUSH_TIMEOUT);
                let mut deliveries = producer.take_deliveries();
                deliveries.extend(local_errors);
                deliveries.sort_by_key(|d| d.index);
                WorkloadResult { sent, deliveries }
            })
        };
        Workload {
            stop,
            acked,
            thread: Some(thread),
        }
    }

    fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until `more` records beyond those acknowledged now are acknowledged.
    fn wait_progress(&self, more: u64, what: &str) {
        let target = self.acked() + more;
        wait_for(
            &format!("{more} more acknowledged records {what}"),
            PROGRESS_TIMEOUT,
            || (self.acked() >= target).then_some(()),
        );
    }

    /// Stops sending, flushes and returns every record's outcome.
    fn finish(mut self) -> WorkloadResult {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("producer thread panicked")
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        // A failing test stops the thread rather than leave it producing.
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Starts three nodes (with `extra_yaml` in their configs) and creates the ducktape topic:
/// 3 partitions, RF 3, `min.insync.replicas=2`, every ISR full.
fn cluster_with_topic(prefix: &str, extra_yaml: &str) -> (Cluster, String) {
    let mut cluster = Cluster::new(3, extra_yaml);
    cluster.start_all();
    let topic = unique(prefix);
    create_topic_with_configs(
        &cluster.bootstrap(),
        &topic,
        PARTITIONS,
        3,
        &[("min.insync.replicas", "2")],
        OP_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("creating {topic}: {e}"));
    wait_full_isrs(&cluster, &topic, OP_TIMEOUT);
    (cluster, topic)
}

/// Waits until a running node reports every partition of `topic` with a leader and all three
/// replicas in sync.
fn wait_full_isrs(cluster: &Cluster, topic: &str, timeout: Duration) -> ClusterMetadata {
    wait_full_isrs_via(cluster, cluster.running()[0], topic, timeout)
}

/// [`wait_full_isrs`] as node `via` reports it.
fn wait_full_isrs_via(
    cluster: &Cluster,
    via: i32,
    topic: &str,
    timeout: Duration,
) -> ClusterMetadata {
    cluster.wait_metadata(via, &format!("full ISRs of {topic}"), timeout, |md| {
        let parts = md.partitions(topic);
        parts.len() == PARTITIONS as usize
            && parts.iter().all(|p| p.leader >= 0 && p.isr.len() == 3)
    })
}

/// The running node that leads `topic`-`partition`, as a running node reports it.
fn leader_of(cluster: &Cluster, topic: &str, partition: i32) -> i32 {
    let running = cluster.running();
    let via = running[0];
    cluster
        .wait_metadata(
            via,
            &format!("a live leader of {topic}-{partition}"),
            OP_TIMEOUT,
            |md| {
                md.partitions(topic)
                    .get(partition as usize)
                    .is_some_and(|p| running.contains(&p.leader))
            },
        )
        .partitions(topic)[partition as usize]
        .leader
}

/// Waits until a running node reports a leader of `topic`-`partition` other than `old`.
fn wait_leader_moved(cluster: &Cluster, topic: &str, partition: i32, old: i32) -> i32 {
    let via = cluster.running()[0];
    cluster
        .wait_metadata(
            via,
            &format!("a new leader of {topic}-{partition} (was node {old})"),
            PROGRESS_TIMEOUT,
            |md| {
                md.partitions(topic)
                    .get(partition as usize)
                    .is_some_and(|p| p.leader >= 0 && p.leader != old)
            },
        )
        .partitions(topic)[partition as usize]
        .leader
}

/// Reads every partition of `topic` from the start up to its high watermark and checks the
/// producer's outcome against it; returns the number of records read.
fn validate(cluster: &Cluster, topic: &str, result: &WorkloadResult) -> usize {
    assert_eq!(
        result.deliveries.len(),
        result.sent,
        "every sent record needs exactly one delivery report"
    );
    let failed: Vec<&Delivery> = result
        .deliveries
        .iter()
        .filter(|d| d.result.is_err())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} records were not acknowledged although two replicas stayed up; first: {:?}",
        failed.len(),
        result.sent,
        failed.first()
    );

    let bootstrap = cluster.bootstrap();
    let by_partition: BTreeMap<i32, Vec<Consumed>> = (0..PARTITIONS)
        .map(|p| (p, read_to_high_watermark(&bootstrap, topic, p)))
        .collect();

    // No duplicates, and each partition in send order (the producer sends to a partition in
    // increasing index order, so its records must read back strictly increasing).
    let mut where_read: BTreeMap<usize, (i32, i64)> = BTreeMap::new();
    for (partition, records) in &by_partition {
        let mut previous: Option<usize> = None;
        for r in records {
            let index = sequence_of(r.value.as_deref().expect("value"));
            assert_eq!(
                index % PARTITIONS as usize,
                *partition as usize,
                "record #{index} read from partition {partition}"
            );
            if let Some(first) = where_read.insert(index, (*partition, r.offset)) {
                panic!(
                    "record #{index} is duplicated: at {first:?} and at ({partition}, {})",
                    r.offset
                );
            }
            if let Some(prev) = previous {
                assert!(
                    index > prev,
                    "{topic}-{partition}: record #{index} at offset {} follows #{prev}: order broken",
                    r.offset
                );
            }
            previous = Some(index);
        }
    }
    // Every acknowledged record is where its acknowledgement said.
    for d in &result.deliveries {
        let acked_at = d.result.as_ref().expect("checked above");
        let read_at = where_read.get(&d.index).unwrap_or_else(|| {
            panic!(
                "acknowledged record #{} at {acked_at:?} is missing",
                d.index
            )
        });
        assert_eq!(
            read_at, acked_at,
            "record #{} was acknowledged at {acked_at:?} but read at {read_at:?}",
            d.index
        );
    }
    assert_eq!(
        where_read.len(),
        result.sent,
        "read records that were never sent"
    );
    where_read.len()
}

/// Runs ducktape's produce-fault-validate cycle with `fault` applied to a fresh cluster.
fn produce_through(name: &str, fault: impl FnOnce(&mut Cluster, &str, &Workload)) {
    let (mut cluster, topic) = cluster_with_topic(name, "");
    let workload = Workload::start(&cluster.bootstrap(), &topic);
    workload.wait_progress(PROGRESS_RECORDS, "before the fault");
    let fault_started = Instant::now();
    fault(&mut cluster, &topic, &workload);
    let fault_took = fault_started.elapsed();
    workload.wait_progress(PROGRESS_RECORDS, "after the fault");
    let result = workload.finish();
    let read = validate(&cluster, &topic, &result);
    println!(
        "{name}: {} records sent and acknowledged, {read} read back exactly once in order; fault phase {:.1} s",
        result.sent,
        fault_took.as_secs_f64()
    );
}

#[test]
fn acknowledged_records_survive_a_clean_shutdown_of_the_leader() {
    produce_through("clean-shutdown", |cluster, topic, _| {
        let leader = leader_of(cluster, topic, 0);
        let status = cluster.sigterm(leader);
        assert!(status.success(), "node {leader} exited with {status}");
        wait_leader_moved(cluster, topic, 0, leader);
    });
}

#[test]
fn acknowledged_records_survive_a_hard_kill_of_the_leader() {
    produce_through("hard-shutdown", |cluster, topic, _| {
        let leader = leader_of(cluster, topic, 0);
        cluster.sigkill(leader);
        wait_leader_moved(cluster, topic, 0, leader);
    });
}

#[test]
fn acknowledged_records_survive_five_clean_bounces_of_the_leader() {
    produce_through("clean-bounce", |cluster, topic, workload| {
        for bounce in 1..=5 {
            let leader = leader_of(cluster, topic, 0);
            let status = cluster.sigterm(leader);
            assert!(
                status.success(),
                "bounce {bounce}: node {leader} exited with {status}"
            );
            cluster.restart(leader);
            // Back in every ISR before the next bounce, so min.insync.replicas stays met.
            wait_full_isrs(cluster, topic, REJOIN_TIMEOUT);
            workload.wait_progress(200, &format!("after bounce {bounce}"));
        }
    });
}

#[test]
fn acknowledged_records_survive_five_hard_bounces_of_the_leader() {
    produce_through("hard-bounce", |cluster, topic, workload| {
        for bounce in 1..=5 {
            let leader = leader_of(cluster, topic, 0);
            cluster.sigkill(leader);
            // As ducktape waits for the session to expire before restarting.
            wait_leader_moved(cluster, topic, 0, leader);
            cluster.restart(leader);
            wait_full_isrs(cluster, topic, REJOIN_TIMEOUT);
            workload.wait_progress(200, &format!("after bounce {bounce}"));
        }
    });
}

/// An idempotent acks=all producer that must get every record acknowledged: `count` generated
/// records tagged `tag` to each partition. Returns them by partition.
fn produce_acked(
    bootstrap: &str,
    topic: &str,
    tag: &str,
    count: usize,
) -> BTreeMap<i32, Vec<TestRecord>> {
    let producer = TestProducer::new(bootstrap, &[("enable.idempotence", "true")]);
    let base_ts = now_ms();
    (0..PARTITIONS)
        .map(|p| {
            let records: Vec<TestRecord> = (0..count)
                .map(|i| generated_record(&format!("{tag}-{p}"), i, base_ts))
                .collect();
            producer.produce_all(topic, Some(p), &records, Duration::from_secs(60));
            (p, records)
        })
        .collect()
}

/// Reads `topic`-`partition` from the start up to its high watermark through `bootstrap`.
fn read_to_high_watermark(bootstrap: &str, topic: &str, partition: i32) -> Vec<Consumed> {
    let (low, high) = make_consumer(bootstrap)
        .fetch_watermarks(topic, partition, OP_TIMEOUT)
        .unwrap_or_else(|e| panic!("watermarks of {topic}-{partition}: {e}"));
    assert_eq!(low, 0, "{topic}-{partition}: log start moved");
    consume_all(
        bootstrap,
        topic,
        partition,
        Offset::Beginning,
        high as usize,
        Duration::from_secs(60),
    )
}

#[test]
fn with_two_of_three_nodes_down_acks_all_is_refused_and_nothing_acknowledged_is_lost() {
    // A short lag time: the survivor notices within seconds that its last follower is gone.
    let (mut cluster, topic) = cluster_with_topic("two-down", "replica_lag_time_max_ms: 4000\n");
    let all_nodes = cluster.bootstrap();

    // All three up.
    let mut acked = produce_acked(&all_nodes, &topic, "three-up", 1_000);

    // One down: the ISRs shrink to two, which still meets min.insync.replicas.
    let survivor = leader_of(&cluster, &topic, 0);
    let others: Vec<i32> = cluster
        .ids()
        .into_iter()
        .filter(|id| *id != survivor)
        .collect();
    let (first_down, second_down) = (others[0], others[1]);
    cluster.sigkill(first_down);
    let md = cluster.wait_metadata(
        survivor,
        &format!("node {first_down} out of every ISR"),
        PROGRESS_TIMEOUT,
        |md| {
            md.partitions(&topic)
                .iter()
                .all(|p| p.leader >= 0 && p.leader != first_down && !p.isr.contains(&first_down))
        },
    );
    for (p, records) in produce_acked(&all_nodes, &topic, "two-up", 500) {
        acked.get_mut(&p).expect("partition").extend(records);
    }
    let led_by_survivor: Vec<i32> = md
        .partitions(&topic)
        .iter()
        .filter(|p| p.leader == survivor)
        .map(|p| p.partition)
        .collect();
    assert!(
        led_by_survivor.contains(&0),
        "node {survivor} led partition 0 before and lost no ISR member it needed: {md:#?}"
    );

    // Two down: the metadata quorum is gone with them, so no ISR can shrink any more; the
    // survivor's leader refuses acks=all once its last follower lags past the lag time.
    cluster.sigkill(second_down);
    let survivor_addr = cluster.node(survivor).addr().to_string();
    let refusing = TestProducer::new(
        &survivor_addr,
        &[
            ("enable.idempotence", "false"),
            ("retries", "0"),
            ("request.timeout.ms", "2000"),
            ("message.timeout.ms", "5000"),
        ],
    );
    let mut attempt = 0usize;
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut produce_once = |partition: i32| -> Delivery {
        let record = generated_record(&format!("one-up-{partition}"), attempt, now_ms());
        attempt += 1;
        let mut d = refusing.produce_collect(
            &topic,
            Some(partition),
            std::slice::from_ref(&record),
            Duration::from_secs(30),
        );
        let d = d.pop().expect("one delivery");
        assert!(
            d.result.is_err(),
            "an acks=all record to {topic}-{partition} was acknowledged with one of three nodes up: {d:?}"
        );
        *outcomes.entry(format!("{:?}", d.error_code())).or_default() += 1;
        d
    };
    let noticed = Instant::now();
    wait_for(
        "NOT_ENOUGH_REPLICAS from the survivor",
        Duration::from_secs(30),
        || {
            (produce_once(0).error_code() == Some(RDKafkaErrorCode::NotEnoughReplicas))
                .then_some(())
        },
    );
    let noticed_after = noticed.elapsed();
    for &partition in &led_by_survivor {
        for _ in 0..20 {
            let d = produce_once(partition);
            assert_eq!(
                d.error_code(),
                Some(RDKafkaErrorCode::NotEnoughReplicas),
                "{topic}-{partition}: with one node up, acks=all must be NOT_ENOUGH_REPLICAS: {d:?}"
            );
        }
    }
    println!(
        "two of three down: NOT_ENOUGH_REPLICAS after {:.1} s; outcomes of {attempt} attempts: {outcomes:?}",
        noticed_after.as_secs_f64()
    );

    // Consumers still read up to the high watermark: exactly what was acknowledged.
    for &partition in &led_by_survivor {
        let read = read_to_high_watermark(&survivor_addr, &topic, partition);
        assert_records_match(&acked[&partition], &read, 0);
    }

    // Both back: everything acknowledged is there, at the offsets it was acknowledged at; the
    // only other records are unacknowledged attempts made while one node was up.
    cluster.restart(first_down);
    cluster.restart(second_down);
    wait_full_isrs(&cluster, &topic, REJOIN_TIMEOUT);
    for partition in 0..PARTITIONS {
        let expected = &acked[&partition];
        let read = read_to_high_watermark(&all_nodes, &topic, partition);
        assert!(
            read.len() >= expected.len(),
            "{topic}-{partition}: {} records read, {} were acknowledged",
            read.len(),
            expected.len()
        );
        assert_records_match(expected, &read[..expected.len()], 0);
        for extra in &read[expected.len()..] {
            let key = extra.key.as_deref().unwrap_or_default();
            assert!(
                key.starts_with(b"one-up-"),
                "{topic}-{partition} offset {}: unexpected record {:?}",
                extra.offset,
                String::from_utf8_lossy(key)
            );
        }
    }
}

#[test]
fn a_node_whose_disk_was_wiped_rejoins_as_a_follower_and_catches_up() {
    let (mut cluster, topic) = cluster_with_topic("wiped-disk", "");
    let acked = produce_acked(&cluster.bootstrap(), &topic, "before-wipe", 1_000);

    // The leader of partition 0 loses its disk: killed, data directory removed, started again
    // at once (before the controller fenced it, so its new registration is what counts).
    let victim = leader_of(&cluster, &topic, 0);
    cluster.sigkill(victim);
    let data_dir = cluster.node(victim).data_dir().to_path_buf();
    std::fs::remove_dir_all(&data_dir).expect("wipe the data directory");
    let restarted = Instant::now();
    cluster.restart(victim);
    // Asked of the restarted node itself: its image holds its new registration, which took it
    // out of every ISR, so a full ISR there means it fetched its way back in.
    wait_full_isrs_via(&cluster, victim, &topic, REJOIN_TIMEOUT);
    println!(
        "wiped node {victim} back in every ISR {:.1} s after its restart",
        restarted.elapsed().as_secs_f64()
    );

    // The others stop cleanly one after the other, moving every leadership to the wiped node;
    // alone, it serves every acknowledged record.
    let others: Vec<i32> = cluster
        .ids()
        .into_iter()
        .filter(|id| *id != victim)
        .collect();
    for id in &others {
        let status = cluster.sigterm(*id);
        assert!(status.success(), "node {id} exited with {status}");
    }
    let md = cluster.wait_metadata(
        victim,
        "every partition led by the wiped node",
        OP_TIMEOUT,
        |md| md.partitions(&topic).iter().all(|p| p.leader == victim),
    );
    assert_eq!(md.partitions(&topic).len(), PARTITIONS as usize);
    let victim_addr = cluster.node(victim).addr().to_string();
    for partition in 0..PARTITIONS {
        let read = read_to_high_watermark(&victim_addr, &topic, partition);
        assert_records_match(&acked[&partition], &read, 0);
    }
}

/// A group member that commits explicitly (no auto-commit), reading from the start.
fn group_member(bootstrap: &str, group: &str) -> rdkafka::consumer::BaseConsumer {
    rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("client.id", "strait-e2e-group-member")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("fetch.wait.max.ms", "100")
        // Small fetches, so the partitions are read side by side rather than one after the
        // other and every partition has a commit mid-way.
        .set("max.partition.fetch.bytes", "4096")
        .set("queued.min.messages", "20")
        .set("socket.timeout.ms", "10000")
        .create()
        .expect("create group member")
}

/// Commits `next` (partition → next offset to read) for `topic` synchronously, retrying
/// (bounded) while the coordinator is moving; returns how many attempts failed.
fn commit_with_retries(
    consumer: &rdkafka::consumer::BaseConsumer,
    topic: &str,
    next: &BTreeMap<i32, i64>,
) -> usize {
    let mut tpl = rdkafka::TopicPartitionList::new();
    for (p, o) in next {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*o))
            .expect("add partition offset");
    }
    let deadline = Instant::now() + PROGRESS_TIMEOUT;
    let mut failures = 0;
    loop {
        match consumer.commit(&tpl, rdkafka::consumer::CommitMode::Sync) {
            Ok(()) => return failures,
            Err(e) => {
                failures += 1;
                assert!(
                    Instant::now() < deadline,
                    "commit of {next:?} still failing after {PROGRESS_TIMEOUT:?}: {e}"
                );
                // Keep the member alive (heartbeats, rebalance callbacks) while retrying.
                let _ = consumer.poll(Duration::from_millis(200));
            }
        }
    }
}

#[test]
fn a_consumer_group_keeps_consuming_through_a_coordinator_failover_from_committed_offsets() {
    let (mut cluster, topic) =
        cluster_with_topic("group-failover", "group_initial_rebalance_delay_ms: 0\n");
    let all_nodes = cluster.bootstrap();
    const PER_PARTITION: usize = 1_000;
    let produced = produce_acked(&all_nodes, &topic, "group", PER_PARTITION);
    let group = unique("failover-group");

    // The first member reads a third of every partition, committing every 100 records and at
    // the end; partitions that got there are paused until the others do, so every partition
    // has a commit mid-way whatever order the client fetches in.
    let member = group_member(&all_nodes, &group);
    member.subscribe(&[topic.as_str()]).expect("subscribe");
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let mut committed: BTreeMap<i32, i64> = BTreeMap::new();
    // Returns (commit attempts that failed, transport errors reported).
    let read_until = |target: i64,
                      next: &mut BTreeMap<i32, i64>,
                      committed: &mut BTreeMap<i32, i64>|
     -> (usize, usize) {
        use rdkafka::Message;
        let mut failed_commits = 0usize;
        let mut transport_errors = 0usize;
        let deadline = Instant::now() + PROGRESS_TIMEOUT;
        let mut processed = 0usize;
        let mut paused = std::collections::BTreeSet::new();
        while paused.len() < PARTITIONS as usize {
            assert!(
                Instant::now() < deadline,
                "the member stalled at {next:?} on its way to {target} per partition"
            );
            let m = match member.poll(Duration::from_millis(200)) {
                None => continue,
                Some(Ok(m)) => m,
                // A connection to the killed node failing is reported, and is no failure.
                Some(Err(rdkafka::error::KafkaError::MessageConsumption(
                    RDKafkaErrorCode::BrokerTransportFailure,
                ))) => {
                    transport_errors += 1;
                    continue;
                }
                Some(Err(e)) => panic!("consumer error at {next:?}: {e}"),
            };
            let p = m.partition();
            let expected_at = *next.get(&p).unwrap_or(&0);
            let restart_at = *committed.get(&p).unwrap_or(&0);
            // No record skipped; a record read again only from the last commit on.
            assert!(
                m.offset() <= expected_at && m.offset() >= restart_at.min(expected_at),
                "{topic}-{p}: read offset {} with {expected_at} expected next and {restart_at} committed",
                m.offset()
            );
            let want = &produced[&p][m.offset() as usize];
            assert_eq!(
                m.payload(),
                want.value.as_deref(),
                "{topic}-{p}@{}",
                m.offset()
            );
            next.insert(p, m.offset() + 1);
            processed += 1;
            if processed % 100 == 0 {
                failed_commits += commit_with_retries(&member, &topic, next);
                *committed = next.clone();
            }
            if m.offset() + 1 >= target && paused.insert(p) {
                let mut tpl = rdkafka::TopicPartitionList::new();
                tpl.add_partition(&topic, p);
                member.pause(&tpl).expect("pause");
            }
        }
        failed_commits += commit_with_retries(&member, &topic, next);
        *committed = next.clone();
        let assignment = member.assignment().expect("assignment");
        member.resume(&assignment).expect("resume");
        (failed_commits, transport_errors)
    };
    let third = PER_PARTITION as i64 / 3;
    let (failed_commits, _) = read_until(third, &mut next, &mut committed);
    assert_eq!(failed_commits, 0, "commits failed before any fault");

    // The coordinator dies; the member keeps reading and committing through the move.
    let coordinator = find_coordinator(cluster.node(1).addr(), &group)
        .unwrap_or_else(|e| panic!("coordinator of {group}: {e}"));
    let killed_at = Instant::now();
    cluster.sigkill(coordinator);
    let committed_at_kill = committed.clone();
    let (failed_commits, transport_errors) = read_until(2 * third, &mut next, &mut committed);
    let new_coordinator = find_coordinator(cluster.node(cluster.running()[0]).addr(), &group)
        .unwrap_or_else(|e| panic!("coordinator of {group} after the failover: {e}"));
    assert_ne!(new_coordinator, coordinator, "the coordinator did not move");
    println!(
        "coordinator failover: node {coordinator} -> node {new_coordinator}; {failed_commits} commit attempts failed, \
         {transport_errors} transport errors; committed {committed_at_kill:?} at the kill, {committed:?} {:.1} s later",
        killed_at.elapsed().as_secs_f64()
    );
    drop(member);

    // The new coordinator holds what was committed before and after the failover.
    let mut asked = rdkafka::TopicPartitionList::new();
    for p in 0..PARTITIONS {
        asked.add_partition(&topic, p);
    }
    let second = group_member(&cluster.bootstrap(), &group);
    let stored = second
        .committed_offsets(asked, OP_TIMEOUT)
        .expect("committed offsets after the failover");
    for p in 0..PARTITIONS {
        let e = stored.find_partition(&topic, p).expect("partition listed");
        let want = committed
            .get(&p)
            .map_or(Offset::Invalid, |o| Offset::Offset(*o));
        assert_eq!(
            e.offset(),
            want,
            "{topic}-{p}: committed offset after the failover"
        );
    }

    // A new member resumes exactly from the committed offsets and reads the rest.
    second.subscribe(&[topic.as_str()]).expect("subscribe");
    let mut resumed: BTreeMap<i32, i64> = BTreeMap::new();
    let deadline = Instant::now() + PROGRESS_TIMEOUT;
    let next_of = |resumed: &BTreeMap<i32, i64>, p: i32| match resumed.get(&p) {
        Some(last) => last + 1,
        None => *committed.get(&p).unwrap_or(&0),
    };
    while (0..PARTITIONS).any(|p| next_of(&resumed, p) < PER_PARTITION as i64) {
        assert!(
            Instant::now() < deadline,
            "the second member stalled at {resumed:?}"
        );
        let Some(m) = second.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.expect("consume with the second member");
        use rdkafka::Message;
        let p = m.partition();
        let want_offset = next_of(&resumed, p);
        assert_eq!(
            m.offset(),
            want_offset,
            "{topic}-{p}: the second member must continue at the committed offset without gaps"
        );
        let want = &produced[&p][m.offset() as usize];
        assert_eq!(
            m.payload(),
            want.value.as_deref(),
            "{topic}-{p}@{}",
            m.offset()
        );
        resumed.insert(p, m.offset());
    }
}
