//! Consumer groups end to end: real `strait broker` processes and group members that are
//! processes of their own (`examples/group_member.rs`, librdkafka's group protocol), so a member
//! can be SIGKILLed like a crashed application.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{unique, wait_for, Broker, TestRecord};

/// Session timeout the members use: Kafka's group.min.session.timeout.ms, the shortest allowed.
const SESSION_TIMEOUT_MS: u64 = 6_000;
const HEARTBEAT_INTERVAL_MS: u64 = 1_000;

fn member_bin() -> PathBuf {
    // Test binaries live in target/<profile>/deps; Cargo builds examples next to them.
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile> directory");
    let bin = profile_dir.join("examples").join("group_member");
    assert!(
        bin.exists(),
        "{} is missing: `cargo test --workspace` builds it (or run `cargo build --example group_member` first)",
        bin.display()
    );
    bin
}

#[derive(Debug, Clone)]
enum Event {
    Assigned(BTreeSet<i32>),
    Record {
        partition: i32,
        offset: i64,
        key: String,
    },
    Committed(Vec<(i32, i64)>),
    Left,
}

/// One group member process; killed and reaped on drop.
struct Member {
    name: String,
    /// The member's stderr (librdkafka's group-protocol debug log), printed if a test fails.
    log: tempfile::NamedTempFile,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    events: Arc<Mutex<Vec<(Instant, Event)>>>,
}

impl Member {
    fn start(name: &str, bootstrap: &str, group: &str, topic: &str) -> Member {
        Member::start_with(name, bootstrap, group, topic, SESSION_TIMEOUT_MS, &[])
    }

    fn start_with(
        name: &str,
        bootstrap: &str,
        group: &str,
        topic: &str,
        session_timeout_ms: u64,
        extra: &[&str],
    ) -> Member {
        let log = tempfile::Builder::new()
            .prefix("strait-e2e-member-")
            .tempfile()
            .expect("member log file");
        let mut child = Command::new(member_bin())
            .args(["--bootstrap", bootstrap, "--group", group, "--topic", topic])
            .args(["--session-timeout-ms", &session_timeout_ms.to_string()])
            .args(extra)
            .args([
                "--heartbeat-interval-ms",
                &HEARTBEAT_INTERVAL_MS.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log.reopen().expect("member log handle")))
            .spawn()
            .expect("spawn group_member");
        let stdout = child.stdout.take().expect("stdout");
        let events: Arc<Mutex<Vec<(Instant, Event)>>> = Arc::default();
        let sink = events.clone();
        let topic = topic.to_string();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let event = parse_event(&topic, &line);
                sink.lock().unwrap().push((Instant::now(), event));
            }
        });
        Member {
            name: name.to_string(),
            log,
            stdin: child.stdin.take(),
            child: Some(child),
            events,
        }
    }

    fn events(&self) -> Vec<(Instant, Event)> {
        self.events.lock().unwrap().clone()
    }

    /// The member's current assignment, once it has had one.
    fn assignment(&self) -> Option<BTreeSet<i32>> {
        self.events().into_iter().rev().find_map(|(_, e)| match e {
            Event::Assigned(a) => Some(a),
            _ => None,
        })
    }

    /// Highest committed offset per partition this member reported.
    fn committed(&self) -> BTreeMap<i32, i64> {
        let mut out = BTreeMap::new();
        for (_, e) in self.events() {
            if let Event::Committed(list) = e {
                for (p, o) in list {
                    let c = out.entry(p).or_insert(o);
                    *c = (*c).max(o);
                }
            }
        }
        out
    }

    /// Asks the member to commit, leave the group and exit; waits for it.
    fn leave(&mut self) {
        let mut stdin = self.stdin.take().expect("member already left");
        writeln!(stdin, "leave").expect("write to member");
        drop(stdin);
        let mut child = self.child.take().expect("member process");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                assert!(status.success(), "{} exited with {status}", self.name);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit after leave",
                self.name
            );
            thread::sleep(Duration::from_millis(20));
        }
        wait_for("the LEFT line", Duration::from_secs(5), || {
            self.events()
                .iter()
                .any(|(_, e)| matches!(e, Event::Left))
                .then_some(())
        });
    }

    fn sigkill(&mut self) {
        let mut child = self.child.take().expect("member process");
        child.kill().expect("SIGKILL member");
        child.wait().expect("reap member");
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            let text = std::fs::read_to_string(self.log.path()).unwrap_or_default();
            eprintln!(
                "--- member {} stderr, last 300 distinct lines ---\n{}\n--- end of member {} ---",
                self.name,
                last_distinct_lines(&text, 300).join("\n"),
                self.name
            );
        }
    }
}

/// The last `n` distinct lines of `text`, in the order of their last occurrence, each with
/// how often it occurred in that span: a client retrying the same few steps for a minute
/// then shows as a few lines, and what it did before it stays in view.
fn last_distinct_lines(text: &str, n: usize) -> Vec<String> {
    let mut counts: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut order: Vec<&str> = Vec::new();
    for line in text.lines().rev() {
        let count = counts.entry(line).or_insert(0);
        if *count == 0 {
            if order.len() == n {
                break;
            }
            order.push(line);
        }
        *count += 1;
    }
    order
        .into_iter()
        .rev()
        .map(|line| match counts[line] {
            1 => line.to_string(),
            k => format!("{line}   [x{k}]"),
        })
        .collect()
}

fn parse_event(topic: &str, line: &str) -> Event {
    let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
    let partition_of = |tp: &str| -> i32 {
        let (t, p) = tp.rsplit_once(':').expect("topic:partition");
        assert_eq!(t, topic, "member reported a foreign topic: {line}");
        p.parse().expect("partition number")
    };
    match kind {
        "ASSIGNED" => Event::Assigned(
            rest.split(',')
                .filter(|s| !s.is_empty())
                .map(partition_of)
                .collect(),
        ),
        "RECORD" => {
            let f: Vec<&str> = rest.split(' ').collect();
            assert_eq!(f[0], topic, "{line}");
            Event::Record {
                partition: f[1].parse().expect("partition"),
                offset: f[2].parse().expect("offset"),
                key: f[3].to_string(),
            }
        }
        "COMMITTED" => Event::Committed(
            rest.split(',')
                .map(|item| {
                    let (tp, o) = item.split_once('=').expect("tp=offset");
                    (partition_of(tp), o.parse().expect("offset"))
                })
                .collect(),
        ),
        "LEFT" => Event::Left,
        _ => panic!("unexpected line from group_member: {line}"),
    }
}

/// Every (partition, offset, key) consumed by any of `members`, with repeats.
fn consumed(members: &[&Member]) -> Vec<(i32, i64, String)> {
    members
        .iter()
        .flat_map(|m| m.events())
        .filter_map(|(_, e)| match e {
            Event::Record {
                partition,
                offset,
                key,
            } => Some((partition, offset, key)),
            _ => None,
        })
        .collect()
}

/// Produces `n` keyed records `<tag>-<i>`; returns key → (partition, offset).
fn produce(broker: &Broker, topic: &str, tag: &str, n: usize) -> HashMap<String, (i32, i64)> {
    let producer = broker.producer(&[]);
    let records: Vec<TestRecord> = (0..n)
        .map(|i| TestRecord::kv(format!("{tag}-{i}"), format!("value {i}")))
        .collect();
    let placed = producer.produce_all(topic, None, &records, Duration::from_secs(60));
    (0..n).map(|i| format!("{tag}-{i}")).zip(placed).collect()
}

fn wait_consumed(members: &[&Member], expected: &HashMap<String, (i32, i64)>, what: &str) {
    wait_for(what, Duration::from_secs(60), || {
        let seen: BTreeSet<String> = consumed(members).into_iter().map(|(_, _, k)| k).collect();
        expected.keys().all(|k| seen.contains(k)).then_some(())
    });
}

fn end_offsets(broker: &Broker, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    (0..partitions)
        .map(|p| (p, broker.watermarks(topic, p).1))
        .collect()
}

/// Waits until, for every partition, some member reported a commit at the partition's end.
fn wait_committed_to_end(members: &[&Member], ends: &BTreeMap<i32, i64>) {
    wait_for(
        "commits up to the end of every partition",
        Duration::from_secs(30),
        || {
            let mut best: BTreeMap<i32, i64> = BTreeMap::new();
            for m in members {
                for (p, o) in m.committed() {
                    let c = best.entry(p).or_insert(o);
                    *c = (*c).max(o);
                }
            }
            ends.iter()
                .all(|(p, end)| *end == 0 || best.get(p) == Some(end))
                .then_some(())
        },
    );
}

#[test]
fn a_group_shares_partitions_and_hands_them_over_on_kill_leave_and_broker_restart() {
    let mut broker = Broker::start();
    let topic = unique("orders");
    let group = unique("group");
    broker.create_topic(&topic, 6, &[]);
    let first = produce(&broker, &topic, "b1", 3_000);

    // Three members share six partitions evenly.
    let boot = broker.bootstrap();
    let mut members: Vec<Member> = ["a", "b", "c"]
        .iter()
        .map(|n| Member::start(n, &boot, &group, &topic))
        .collect();
    wait_for(
        "two partitions for each of three members",
        Duration::from_secs(60),
        || {
            let assigned: Vec<BTreeSet<i32>> =
                members.iter().filter_map(|m| m.assignment()).collect();
            let union: BTreeSet<i32> = assigned.iter().flatten().copied().collect();
            (assigned.len() == 3 && assigned.iter().all(|a| a.len() == 2) && union.len() == 6)
                .then_some(())
        },
    );
    let all: Vec<&Member> = members.iter().collect();
    wait_consumed(&all, &first, "the first batch to be consumed");
    wait_committed_to_end(&all, &end_offsets(&broker, &topic, 6));

    // SIGKILL one member while records flow: the survivors take its partitions once its
    // session expires (detection needs the session timeout; then one heartbeat interval to
    // learn of the rebalance and a JoinGroup/SyncGroup round trip).
    let second = produce(&broker, &topic, "b2", 3_000);
    let victim_partitions = members[0].assignment().unwrap();
    wait_for(
        "the victim to consume part of the second batch",
        Duration::from_secs(30),
        || {
            consumed(&[&members[0]])
                .iter()
                .any(|(_, _, k)| k.starts_with("b2-"))
                .then_some(())
        },
    );
    let killed_at = Instant::now();
    members[0].sigkill();
    let handover = wait_for(
        "the survivors to own all six partitions",
        Duration::from_secs(30),
        || {
            let a = members[1].assignment()?;
            let b = members[2].assignment()?;
            (a.len() == 3 && b.len() == 3 && a.union(&b).count() == 6).then(|| killed_at.elapsed())
        },
    );
    let limit = Duration::from_millis(SESSION_TIMEOUT_MS + HEARTBEAT_INTERVAL_MS + 3_000);
    assert!(
        handover <= limit,
        "partitions of the killed member moved after {handover:?}, more than {limit:?}"
    );
    eprintln!("handover after SIGKILL took {handover:?} (session timeout {SESSION_TIMEOUT_MS} ms)");
    let all: Vec<&Member> = members.iter().collect();
    wait_consumed(&all, &second, "the second batch to be consumed");

    // A member that leaves cleanly hands over at once, without waiting for its session.
    let left_at = Instant::now();
    members[1].leave();
    let handover = wait_for(
        "the last member to own all six partitions",
        Duration::from_secs(30),
        || {
            let a = members[2].assignment()?;
            (a.len() == 6).then(|| left_at.elapsed())
        },
    );
    assert!(
        handover < Duration::from_millis(SESSION_TIMEOUT_MS),
        "a clean leave took {handover:?}: LeaveGroup did not trigger the rebalance"
    );
    let third = produce(&broker, &topic, "b3", 3_000);
    let all: Vec<&Member> = members.iter().collect();
    wait_consumed(&all, &third, "the third batch to be consumed");
    let ends = end_offsets(&broker, &topic, 6);
    wait_committed_to_end(&[&members[2]], &ends);

    // The broker restarts under the live member: the group and its offsets come back, and
    // the member goes on from its committed offsets.
    broker.sigterm_and_wait();
    broker.restart_on_same_port();
    let fourth = produce(&broker, &topic, "b4", 3_000);
    wait_consumed(
        &[&members[2]],
        &fourth,
        "the fourth batch after the broker restart",
    );
    let ends = end_offsets(&broker, &topic, 6);
    wait_committed_to_end(&[&members[2]], &ends);
    members[2].leave();

    // A fresh member starts exactly at the committed offsets: it sees only new records.
    let fresh = Member::start("d", &broker.bootstrap(), &group, &topic);
    wait_for(
        "the fresh member to own all six partitions",
        Duration::from_secs(60),
        || (fresh.assignment()?.len() == 6).then_some(()),
    );
    let fifth = produce(&broker, &topic, "b5", 600);
    wait_consumed(&[&fresh], &fifth, "the fifth batch by a fresh member");
    let fresh_keys: Vec<String> = consumed(&[&fresh]).into_iter().map(|(_, _, k)| k).collect();
    assert!(
        fresh_keys.iter().all(|k| k.starts_with("b5-")),
        "a member joining after everything was committed re-read old records: {:?}",
        fresh_keys.iter().find(|k| !k.starts_with("b5-"))
    );

    // At-least-once, no more: a record is consumed twice only if the killed member consumed
    // it after its last commit on that partition. Everything committed stays consumed once.
    let mut all_members: Vec<&Member> = members.iter().collect();
    all_members.push(&fresh);
    let mut times: HashMap<(i32, i64), usize> = HashMap::new();
    for (p, o, _) in consumed(&all_members) {
        *times.entry((p, o)).or_default() += 1;
    }
    let mut redelivered = 0;
    for ((p, o), n) in &times {
        if *n > 1 {
            assert_eq!(*n, 2, "record {p}@{o} consumed {n} times");
            assert!(
                victim_partitions.contains(p),
                "record {p}@{o} was consumed twice but its partition never lost an owner uncleanly"
            );
            let last_commit = members[0].committed().get(p).copied().unwrap_or(0);
            assert!(
                *o >= last_commit,
                "record {p}@{o} was consumed again although offset {last_commit} had been committed"
            );
            redelivered += 1;
        }
    }
    let total: usize = [&first, &second, &third, &fourth, &fifth]
        .iter()
        .map(|m| m.len())
        .sum();
    for batch in [&first, &second, &third, &fourth, &fifth] {
        for (key, (p, o)) in batch.iter() {
            assert!(
                times.contains_key(&(*p, *o)),
                "record {key} at {p}@{o} was never consumed"
            );
        }
    }
    eprintln!("{total} records consumed, {redelivered} redelivered after the SIGKILL");
}

#[test]
fn a_static_member_restarting_within_its_session_keeps_its_partitions_without_a_rebalance() {
    let broker = Broker::start();
    let topic = unique("static");
    let group = unique("static-group");
    broker.create_topic(&topic, 4, &[]);
    let boot = broker.bootstrap();
    let session_ms = 15_000;
    let start = |name: &str, instance: &str| {
        Member::start_with(
            name,
            &boot,
            &group,
            &topic,
            session_ms,
            &["--instance-id", instance],
        )
    };
    // The first member leads the group; the second takes half of the partitions.
    let leader = start("leader", "host-1");
    wait_for(
        "the leader to own every partition",
        Duration::from_secs(60),
        || (leader.assignment()?.len() == 4).then_some(()),
    );
    let mut follower = start("follower", "host-2");
    let share = wait_for("an even split", Duration::from_secs(60), || {
        let a = leader.assignment()?;
        let b = follower.assignment()?;
        (a.len() == 2 && b.len() == 2 && a.union(&b).count() == 4).then_some(b)
    });
    let leader_events = leader.events().len();

    // The follower crashes and comes back under the same group.instance.id well within its
    // session: it gets its partitions back and nobody else notices.
    follower.sigkill();
    let restarted_at = Instant::now();
    let again = start("follower-again", "host-2");
    let back = wait_for(
        "the restarted member's assignment",
        Duration::from_secs(30),
        || again.assignment(),
    );
    let took = restarted_at.elapsed();
    assert_eq!(back, share, "a static member gets its own partitions back");
    assert!(
        took < Duration::from_millis(session_ms),
        "the rejoin took {took:?}, as long as a session timeout"
    );
    // Give a rebalance, if one were under way, time to reach the leader, then check it did not.
    let produced = produce(&broker, &topic, "s", 400);
    wait_consumed(
        &[&leader, &again],
        &produced,
        "records after the static rejoin",
    );
    let leader_assignments = leader.events()[leader_events..]
        .iter()
        .filter(|(_, e)| matches!(e, Event::Assigned(_)))
        .count();
    assert_eq!(leader_assignments, 0, "the leader saw a rebalance");
    eprintln!("static member rejoined in {took:?}");
}
