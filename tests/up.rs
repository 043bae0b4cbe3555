//! `strait up` end to end: site a and site b, three real `strait broker` nodes each, and the
//! a -> b mirror, all started by one `strait up` process on config files written for the test
//! (ephemeral loopback ports). Real rdkafka clients on both sites, a real fault (a site-b node
//! SIGKILLed while records stream through the mirror), a real SIGTERM at the end.

mod common;

use std::ffi::OsString;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::cluster::{
    create_topic_with_configs, started_pid, try_metadata, write_site, NodeSpec, SupervisorCommand,
    TrackedProcess,
};
use common::mirror::{
    commit, committed, flow_config_with_replication_factors, read_partition, wait_for_records,
};
use common::{
    assert_record_eq, generated_record, now_ms, strait_bin, wait_for, TestProducer, TestRecord,
};

/// Two three-node sites on two cores: startup includes two quorum elections.
const UP_WAIT: Duration = Duration::from_secs(120);
const MIRROR_WAIT: Duration = Duration::from_secs(90);
const PARTITIONS: i32 = 3;

fn bootstrap(specs: &[NodeSpec]) -> String {
    specs
        .iter()
        .map(|s| s.kafka.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Produces records `range` of the data set (record i to partition i % 3) with an idempotent
/// acks=all producer, `per_100ms` records every 100 ms; returns them with their partitions.
fn produce(
    bootstrap: &str,
    range: std::ops::Range<usize>,
    ts: i64,
    per_100ms: usize,
) -> Vec<(i32, TestRecord)> {
    let producer = TestProducer::new(bootstrap, &[("enable.idempotence", "true")]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut sent = Vec::with_capacity(range.len());
    for i in range {
        let p = (i % PARTITIONS as usize) as i32;
        let record = generated_record("up", i, ts);
        producer
            .send("orders", Some(p), i, &record, deadline)
            .expect("enqueue");
        sent.push((p, record));
        if i % per_100ms == per_100ms - 1 {
            producer.poll(Duration::ZERO);
            thread::sleep(Duration::from_millis(100));
        }
    }
    producer.flush(Duration::from_secs(90));
    assert_eq!(producer.delivered_count(), sent.len(), "every record acked");
    sent
}

/// The current leader of `topic`/`partition` as site `specs` reports it.
fn leader(specs: &[NodeSpec], topic: &str, partition: i32) -> i32 {
    wait_for("a leader", Duration::from_secs(30), || {
        specs.iter().find_map(|s| {
            let md = try_metadata(s.id, s.kafka).ok()?;
            let state = md.partitions(topic).get(partition as usize)?.clone();
            (state.leader >= 0).then_some(state.leader)
        })
    })
}

/// The process `strait up` started for node `node` of site `site` (from the nested
/// `[site] strait cluster: started node N (pid P)` line).
fn node_process(up: &SupervisorCommand, site: &str, node: i32) -> TrackedProcess {
    let prefix = format!("[{site}] strait cluster: started node {node} (pid ");
    up.stdout_lines()
        .iter()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| started_pid(l))
        .and_then(TrackedProcess::of)
        .unwrap_or_else(|| panic!("no running process for `{prefix}`"))
}

#[test]
fn strait_up_mirrors_two_three_node_sites_through_a_node_loss_and_stops_the_mirror_first() {
    let root = tempfile::Builder::new()
        .prefix("strait-e2e-up-")
        .tempdir()
        .unwrap();
    let (a_file, a_specs) = write_site(root.path(), "site-a");
    let (b_file, b_specs) = write_site(root.path(), "site-b");
    let (a, b) = (bootstrap(&a_specs), bootstrap(&b_specs));
    let mirror_file = root.path().join("mirror.yaml");
    std::fs::write(
        &mirror_file,
        // Three-node sites: the topics the flow creates get MirrorMaker 2's three replicas.
        format!(
            "http: 127.0.0.1:0\n{}",
            flow_config_with_replication_factors(&a, &b, "")
        ),
    )
    .unwrap();
    let args: Vec<OsString> = vec![
        "--site-a".into(),
        a_file.into(),
        "--site-b".into(),
        b_file.into(),
        "--mirror".into(),
        mirror_file.into(),
        "--data-dir".into(),
        root.path().join("data").into(),
    ];
    let mut up = SupervisorCommand::up(&args);
    let ready = up.wait_for_line("strait up's ready line", UP_WAIT, |l| {
        strait::up::parse_ready_line(l).is_some()
    });
    let (a_ready, b_ready, http) = strait::up::parse_ready_line(&ready).unwrap();
    assert_eq!((a_ready, b_ready), (a.clone(), b.clone()), "{ready}");
    // Six nodes, two cluster supervisors and the mirror: every one of them was seen starting.
    assert_eq!(up.started().len(), 9, "{:#?}", up.stdout_lines());

    create_topic_with_configs(
        &a,
        "orders",
        PARTITIONS,
        3,
        &[("min.insync.replicas", "2")],
        Duration::from_secs(30),
    )
    .unwrap();
    let ts = now_ms();
    let mut sent = produce(&a, 0..1_500, ts, 1_500);
    for p in 0..PARTITIONS {
        wait_for_records(&b, "a.orders", p, 500, MIRROR_WAIT);
    }

    // A site-b node dies while records stream: the leader of a.orders/0, so the mirror's
    // producer must find the new leader and lose nothing.
    let victim = leader(&b_specs, "a.orders", 0);
    let victim_process = node_process(&up, "site-b", victim);
    let streaming = {
        let a = a.clone();
        thread::spawn(move || produce(&a, 1_500..4_500, ts, 150))
    };
    thread::sleep(Duration::from_millis(700));
    // Until now everything was routine: two sites formed, the mirror started and copied.
    assert_eq!(
        up.error_lines(),
        Vec::<String>::new(),
        "ERROR lines before any fault"
    );
    victim_process.kill();
    sent.extend(streaming.join().expect("producer thread"));
    let exited = format!("NODE {victim} OF site-b EXITED (signal: 9 (SIGKILL))");
    wait_for("site-b's report of the lost node", MIRROR_WAIT, || {
        up.log().contains(&exited).then_some(())
    });
    up.assert_running();

    for p in 0..PARTITIONS {
        let expected: Vec<&TestRecord> = sent
            .iter()
            .filter(|(q, _)| *q == p)
            .map(|(_, r)| r)
            .collect();
        wait_for_records(&b, "a.orders", p, expected.len() as i64, MIRROR_WAIT);
        let target = read_partition(&b, "a.orders", p);
        // Exactly once, in order, through the loss of the target leader.
        assert_eq!(
            target.len(),
            expected.len(),
            "partition {p}: records missing or repeated"
        );
        for (i, (want, got)) in expected.iter().zip(&target).enumerate() {
            let mut want = (*want).clone();
            want.headers
                .push(("strait.origin".to_string(), Some(b"a".to_vec())));
            // Partition offsets on site a are dense from 0: record #i is source offset i.
            want.headers.push((
                "strait.source".to_string(),
                Some(format!("a-to-b/{i}").into_bytes()),
            ));
            assert_record_eq(&want, got, &format!("a.orders/{p} record #{i}"));
        }
        eprintln!(
            "a.orders/{p}: {} records in order, none repeated",
            expected.len()
        );
    }

    // A group that stopped part-way on site a resumes on site b at the exact translation.
    let positions: Vec<(i32, i64)> = (0..PARTITIONS).map(|p| (p, 400 + 100 * p as i64)).collect();
    commit(&a, "billing", "orders", &positions);
    let translated = wait_for("billing's offsets on site b", MIRROR_WAIT, || {
        let got = committed(&b, "billing", "a.orders", PARTITIONS);
        got.iter().all(Option::is_some).then_some(got)
    });
    for (p, source_offset) in positions {
        let source = read_partition(&a, "orders", p);
        let target = read_partition(&b, "a.orders", p);
        let at = translated[p as usize].unwrap();
        assert_eq!(
            target[at as usize].key, source[source_offset as usize].key,
            "partition {p}: committed {source_offset} on a, {at} on b"
        );
    }

    // What a person runs to look at the flow.
    let status = Command::new(strait_bin())
        .args(["mirror", "status", "--http", &http.to_string()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{table}");
    assert!(table.contains("orders -> a.orders"), "{table}");

    up.signal(libc::SIGTERM);
    let status = up.wait_exit(Duration::from_secs(150));
    assert!(status.success(), "strait up exited with {status}");
    let lines = up.stdout_lines();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l == needle)
            .unwrap_or_else(|| panic!("no `{needle}` in {lines:#?}"))
    };
    assert!(
        at("strait up: mirror stopped (exit status: 0)")
            < at("strait up: stopping site-a, site-b (SIGTERM: clean shutdown, up to 60 s)"),
        "the mirror stops before the sites"
    );
    at("strait up: site-a stopped (exit status: 0)");
    at("strait up: site-b stopped (exit status: 0)");
    at("strait up: stopped");
    wait_for(
        "every process of strait up to be gone",
        Duration::from_secs(10),
        || (!up.any_process_left()).then_some(()),
    );
    // A killed node is an event a drill expects: the supervisor warns about it, the mirror's
    // clients retry (warnings), the other nodes carry on. ERROR is for what needs a person.
    assert_eq!(
        up.error_lines(),
        Vec::<String>::new(),
        "ERROR lines after node {victim} was SIGKILLed"
    );
}
