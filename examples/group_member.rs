//! One member of a consumer group, as its own process, for the end-to-end group tests (which
//! need to SIGKILL a member) and for trying a broker by hand:
//!
//! ```sh
//! cargo run --example group_member -- --bootstrap 127.0.0.1:9092 --group g --topic orders
//! ```
//!
//! It subscribes with librdkafka's group protocol, never auto-commits, and prints one line per
//! event on stdout, in the order they happen:
//!
//! - `ASSIGNED t:p,t:p` after each rebalance (empty list when it got nothing),
//! - `RECORD t p offset key` for each record, before that record's offset is committed,
//! - `COMMITTED t:p=offset,...` after a synchronous commit succeeded,
//! - `LEFT` once it committed and closed (left the group) after stdin closed or said `leave`.
//!
//! Committing only what was printed, and committing on revocation, makes it an at-least-once
//! consumer: after a crash only records past the last `COMMITTED` line are delivered again.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

/// Consumed-but-uncommitted positions: (topic, partition) → next offset.
type Positions = Arc<Mutex<BTreeMap<(String, i32), i64>>>;

struct Ctx {
    positions: Positions,
}

impl ClientContext for Ctx {
    // librdkafka's own log (with `debug=cgrp,broker,metadata`: every group-protocol step,
    // connection state change and metadata update) on stderr, which the
    // test harness keeps in a file and prints when a test fails.
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        eprintln!("group_member: librdkafka {level:?} {fac}: {log_message}");
    }
}

fn describe(list: &TopicPartitionList) -> String {
    let mut parts: Vec<String> = list
        .elements()
        .iter()
        .map(|e| format!("{}:{}", e.topic(), e.partition()))
        .collect();
    parts.sort();
    parts.join(",")
}

fn commit(consumer: &BaseConsumer<Ctx>, positions: &Positions) {
    let snapshot: Vec<((String, i32), i64)> = positions
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    if snapshot.is_empty() {
        return;
    }
    let mut list = TopicPartitionList::new();
    for ((topic, partition), offset) in &snapshot {
        if let Err(e) = list.add_partition_offset(topic, *partition, Offset::Offset(*offset)) {
            eprintln!("group_member: cannot build commit list: {e}");
            return;
        }
    }
    match consumer.commit(&list, CommitMode::Sync) {
        Ok(()) => {
            let text: Vec<String> = snapshot
                .iter()
                .map(|((t, p), o)| format!("{t}:{p}={o}"))
                .collect();
            println!("COMMITTED {}", text.join(","));
            let mut positions = positions.lock().unwrap();
            for (key, offset) in snapshot {
                // Only forget what was committed; newer positions stay pending.
                if positions.get(&key) == Some(&offset) {
                    positions.remove(&key);
                }
            }
        }
        Err(e) => eprintln!("group_member: commit failed: {e}"),
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance {
            // Commit what was consumed before giving partitions away, so the next owner
            // starts right after it.
            commit(consumer, &self.positions);
            self.positions.lock().unwrap().clear();
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => println!("ASSIGNED {}", describe(list)),
            Rebalance::Revoke(_) => println!("ASSIGNED "),
            Rebalance::Error(e) => eprintln!("group_member: rebalance error: {e}"),
        }
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let need = |name: &str| {
        arg(&args, name).unwrap_or_else(|| {
            eprintln!(
                "usage: group_member --bootstrap HOST:PORT --group G --topic T \
                 [--session-timeout-ms 6000] [--heartbeat-interval-ms 1000] \
                 [--commit-interval-ms 200] [--instance-id ID]"
            );
            std::process::exit(2)
        })
    };
    let bootstrap = need("--bootstrap");
    let group = need("--group");
    let topic = need("--topic");
    let session_ms = arg(&args, "--session-timeout-ms").unwrap_or_else(|| "6000".into());
    let heartbeat_ms = arg(&args, "--heartbeat-interval-ms").unwrap_or_else(|| "1000".into());
    let commit_interval = Duration::from_millis(
        arg(&args, "--commit-interval-ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(200),
    );

    let positions: Positions = Arc::default();
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", &group)
        .set("client.id", "group-member")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", &session_ms)
        .set("heartbeat.interval.ms", &heartbeat_ms)
        .set("partition.assignment.strategy", "range")
        .set("fetch.wait.max.ms", "100")
        .set("debug", "cgrp,broker,metadata")
        // rust-rdkafka otherwise caps librdkafka's log at the `log` crate's level, which is
        // off here (no logger), and the cgrp lines would stop right after start-up.
        .set_log_level(rdkafka::config::RDKafkaLogLevel::Debug);
    if let Some(id) = arg(&args, "--instance-id") {
        config.set("group.instance.id", id);
    }
    let consumer: BaseConsumer<Ctx> = config
        .create_with_context(Ctx {
            positions: positions.clone(),
        })
        .unwrap_or_else(|e| {
            eprintln!("group_member: cannot create consumer: {e}");
            std::process::exit(1)
        });
    if let Err(e) = consumer.subscribe(&[&topic]) {
        eprintln!("group_member: cannot subscribe: {e}");
        std::process::exit(1);
    }

    let leaving = Arc::new(AtomicBool::new(false));
    {
        let leaving = leaving.clone();
        std::thread::spawn(move || {
            let stdin = std::io::stdin();
            for line in stdin.lock().lines() {
                match line {
                    Ok(l) if l.trim() == "leave" => break,
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            leaving.store(true, Ordering::SeqCst);
        });
    }

    let mut last_commit = Instant::now();
    while !leaving.load(Ordering::SeqCst) {
        if let Some(result) = consumer.poll(Duration::from_millis(100)) {
            match result {
                Ok(m) => {
                    let key = m
                        .key()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                        .unwrap_or_default();
                    println!(
                        "RECORD {} {} {} {key}",
                        m.topic(),
                        m.partition(),
                        m.offset()
                    );
                    positions
                        .lock()
                        .unwrap()
                        .insert((m.topic().to_string(), m.partition()), m.offset() + 1);
                }
                Err(e) => eprintln!("group_member: consume error: {e}"),
            }
        }
        if last_commit.elapsed() >= commit_interval {
            commit(&consumer, &positions);
            last_commit = Instant::now();
        }
    }
    commit(&consumer, &positions);
    // Closing runs the revoke callback and sends LeaveGroup.
    consumer.unsubscribe();
    drop(consumer);
    println!("LEFT");
}
