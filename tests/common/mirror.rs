//! Mirror harness: a real `strait mirror` process on a config written for the test, its HTTP
//! status and metrics, and helpers to read what reached the target.
//!
//! The process is SIGKILLed and its directory (config, sled index, log) removed on drop, also
//! when the test panics; a panicking test prints the tail of the daemon's log.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};
use tempfile::TempDir;

use super::{
    client_config, consume_all, drain_stdout, make_consumer, strait_bin, watermarks, Consumed,
    Site, OP_TIMEOUT, SHUTDOWN_TIMEOUT, STARTUP_TIMEOUT,
};

/// A mirror config for flow `a -> b` between two sites; `flow_extra` is YAML added to the
/// flow (indented by four spaces, e.g. "    start_position: latest\n"). The topics the flow
/// creates get one replica (the sites of these tests are single nodes).
pub fn flow_config(a: &impl Site, b: &impl Site, flow_extra: &str) -> String {
    flow_config_with_replication_factors(a, b, &format!("{ONE_REPLICA}{flow_extra}"))
}

/// The flow keys giving every topic a flow creates one replica.
pub const ONE_REPLICA: &str = "    replication_factor: 1\n    offset_syncs_topic_replication_factor: 1\n    checkpoints_topic_replication_factor: 1\n    heartbeats_topic_replication_factor: 1\n";

/// [`flow_config`] without the replication factors (MirrorMaker 2's default, 3, applies).
pub fn flow_config_with_replication_factors(
    a: &impl Site,
    b: &impl Site,
    flow_extra: &str,
) -> String {
    format!(
        "clusters:\n  a:\n    bootstrap_servers: {}\n  b:\n    bootstrap_servers: {}\nflows:\n  - source: a\n    target: b\n    topic_refresh_interval_ms: 500\n    checkpoint_interval_ms: 500\n    config_sync_interval_ms: 1000\n{flow_extra}",
        a.bootstrap(),
        b.bootstrap()
    )
}

/// One `strait mirror` process.
pub struct MirrorDaemon {
    child: Option<Child>,
    dir: TempDir,
    data_dir: PathBuf,
    log_path: PathBuf,
    http: SocketAddr,
    starts: u32,
}

impl MirrorDaemon {
    /// Writes `config` and starts a daemon on a fresh data directory.
    pub fn start(config: &str) -> MirrorDaemon {
        let dir = tempfile::Builder::new()
            .prefix("strait-e2e-mirror-")
            .tempdir()
            .expect("create mirror dir");
        std::fs::write(dir.path().join("mirror.yaml"), config).expect("write mirror config");
        let mut m = MirrorDaemon {
            data_dir: dir.path().join("data"),
            log_path: dir.path().join("mirror.log"),
            dir,
            child: None,
            http: "127.0.0.1:0".parse().unwrap(),
            starts: 0,
        };
        m.spawn();
        m
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "mirror process is already running");
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open mirror log");
        writeln!(
            log,
            "===== e2e harness: start #{} of strait mirror =====",
            self.starts
        )
        .unwrap();
        let stderr = log.try_clone().expect("clone log handle");
        let mut cmd = Command::new(strait_bin());
        cmd.arg("mirror")
            .arg("--config")
            .arg(self.dir.path().join("mirror.yaml"))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--http")
            .arg("127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let mut child = cmd.spawn().expect("spawn strait mirror");
        let stdout = child.stdout.take().expect("piped stdout");
        let rx = drain_stdout(stdout, log, strait_mirror::daemon::parse_ready_line);
        self.child = Some(child);
        self.http = rx
            .recv_timeout(STARTUP_TIMEOUT)
            .unwrap_or_else(|e| panic!("strait mirror printed no ready line within {STARTUP_TIMEOUT:?}: {e} (its log follows)"));
    }

    fn signal(&self, sig: i32) {
        let pid = self.child.as_ref().expect("mirror is running").id() as i32;
        // SAFETY: kill(2) on our own unreaped child.
        unsafe {
            libc::kill(pid, sig);
        }
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("mirror is running");
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                self.child = None;
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "strait mirror did not exit within {SHUTDOWN_TIMEOUT:?} (its log follows)"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM; asserts a clean exit (code 0).
    pub fn sigterm_and_wait(&mut self) {
        self.signal(libc::SIGTERM);
        let status = self.wait_exit();
        assert_eq!(
            status.code(),
            Some(0),
            "strait mirror exited with {status} after SIGTERM (its log follows)"
        );
    }

    /// SIGKILL and reap.
    pub fn sigkill(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.wait_exit();
    }

    /// Freezes the process (SIGSTOP); it keeps its sockets and state.
    pub fn sigstop(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a frozen process run again.
    pub fn sigcont(&self) {
        self.signal(libc::SIGCONT);
    }

    /// Starts again on the same config and data directory.
    pub fn restart(&mut self) {
        self.spawn();
    }

    /// The daemon's `/status`, parsed.
    pub fn status(&self) -> serde_json::Value {
        let body = self.get("/status");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/status is not JSON ({e}): {body}"))
    }

    /// Replaces the config file; the next start or restart reads it.
    pub fn set_config(&self, config: &str) {
        std::fs::write(self.dir.path().join("mirror.yaml"), config).expect("write mirror config");
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("mirror is running").id()
    }

    /// The daemon's HTTP address (for `strait mirror status --http`).
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// `POST path` (an operator action such as `/flows/NAME/stop`), asserted to succeed;
    /// its JSON answer.
    pub fn post(&self, path: &str) -> serde_json::Value {
        let body = self.request("POST", path, Duration::from_secs(30));
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("POST {path}: not JSON ({e}): {body}"))
    }

    /// The daemon's `/metrics` text.
    pub fn metrics(&self) -> String {
        self.get("/metrics")
    }

    fn get(&self, path: &str) -> String {
        self.request("GET", path, OP_TIMEOUT)
    }

    /// `METHOD path` on the daemon's HTTP port, asserted to answer 200; the body.
    fn request(&self, method: &str, path: &str, timeout: Duration) -> String {
        let mut s = TcpStream::connect_timeout(&self.http, OP_TIMEOUT)
            .expect("connect to the mirror's HTTP port");
        s.set_read_timeout(Some(timeout)).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: test\r\nContent-Length: 0\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).expect("read HTTP response");
        let (head, body) = response
            .split_once("\r\n\r\n")
            .expect("HTTP response has a header");
        assert!(
            head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
            "{method} {path}: {head}\n{body}"
        );
        body.to_string()
    }

    /// Partitions this daemon's pump holds now, from `/status`.
    pub fn held_partitions(&self) -> usize {
        let status = self.status();
        status["flows"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|f| f["topics"].as_array().cloned().unwrap_or_default())
            .flat_map(|t| t["partitions"].as_array().cloned().unwrap_or_default())
            .filter(|p| p["assigned"] == true)
            .count()
    }

    /// Lines of the daemon's log containing `needle`.
    pub fn log_lines_containing(&self, needle: &str) -> usize {
        std::fs::read_to_string(&self.log_path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// The data directory (sled index under `index/`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

impl Drop for MirrorDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own unreaped child.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGKILL);
            }
            let _ = child.wait();
        }
        if thread::panicking() {
            let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(150)..].join("\n");
            eprintln!(
                "--- strait mirror log, last 150 lines ---\n{tail}\n--- end of mirror log ---"
            );
        }
    }
}

/// Every record of a partition up to its high watermark.
pub fn read_partition(site: &impl Site, topic: &str, partition: i32) -> Vec<Consumed> {
    let (low, high) = watermarks(&site.bootstrap(), topic, partition);
    consume_all(
        &site.bootstrap(),
        topic,
        partition,
        Offset::Offset(low),
        (high - low) as usize,
        Duration::from_secs(60),
    )
}

/// Waits until `topic`/`partition` on `site` holds at least `records` records.
pub fn wait_for_records(
    site: &impl Site,
    topic: &str,
    partition: i32,
    records: i64,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    loop {
        // A fresh client each time: a cached one keeps an old partition count for minutes
        // (librdkafka refreshes topic metadata every 5 min) and never sees a new partition.
        let consumer = make_consumer(&site.bootstrap());
        let high = consumer
            .fetch_watermarks(topic, partition, OP_TIMEOUT)
            .map(|(_, h)| h)
            .unwrap_or(-1);
        if high >= records {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{topic}/{partition} reached {high} of {records} records within {timeout:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// A client that reads and commits `group`'s offsets without joining it.
fn group_client(site: &impl Site, group: &str) -> rdkafka::consumer::BaseConsumer {
    client_config(&site.bootstrap())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("create group client")
}

/// The committed offsets of `group` on `site` for `topic` partitions `0..partitions`
/// (`None` where nothing is committed).
pub fn committed(site: &impl Site, group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    let consumer = group_client(site, group);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = consumer
        .committed_offsets(tpl, OP_TIMEOUT)
        .expect("OffsetFetch");
    (0..partitions)
        .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        })
        .collect()
}

/// Commits `offsets` (partition, offset) for `group` on `site` as a simple (non-member)
/// commit, as a consumer that stopped would have left them.
pub fn commit(site: &impl Site, group: &str, topic: &str, offsets: &[(i32, i64)]) {
    let consumer = group_client(site, group);
    let mut tpl = TopicPartitionList::new();
    for (p, o) in offsets {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*o))
            .unwrap();
    }
    consumer
        .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
        .expect("OffsetCommit");
}

/// Kafka's protocol struct fields, read the way `org.apache.kafka.common.protocol.types`
/// writes them (big-endian integers, `STRING` = INT16 length + UTF-8). Written here from
/// MirrorMaker 2's schema definitions (`Checkpoint`, `Heartbeat` in connect/mirror-client),
/// independently of the mirror's encoder, to check that encoder.
struct KafkaStruct<'a>(&'a [u8]);

impl KafkaStruct<'_> {
    fn int(&mut self, bytes: usize) -> i64 {
        assert!(self.0.len() >= bytes, "struct cut short");
        let (v, rest) = self.0.split_at(bytes);
        self.0 = rest;
        v.iter()
            .fold(if v[0] & 0x80 != 0 { -1i64 } else { 0 }, |acc, b| {
                (acc << 8) | i64::from(*b)
            })
    }

    fn string(&mut self) -> String {
        let len = usize::try_from(self.int(2)).expect("a non-negative string length");
        assert!(self.0.len() >= len, "string cut short");
        let (v, rest) = self.0.split_at(len);
        self.0 = rest;
        String::from_utf8(v.to_vec()).expect("UTF-8")
    }

    fn done(self) {
        assert!(self.0.is_empty(), "{} bytes after the struct", self.0.len());
    }
}

/// The records of a `<source>.checkpoints.internal` topic, decoded as MirrorMaker 2's
/// `Checkpoint` (key: group, topic, partition; value: version 0, upstream offset, offset,
/// metadata), as JSON objects with `group`, `topic`, `partition`, `upstream_offset`,
/// `downstream_offset` and `metadata`.
pub fn checkpoints(site: &impl Site, topic: &str) -> Vec<serde_json::Value> {
    read_partition(site, topic, 0)
        .into_iter()
        .map(|c| {
            let mut key = KafkaStruct(c.key.as_deref().expect("a checkpoint has a key"));
            let (group, topic, partition) = (key.string(), key.string(), key.int(4));
            key.done();
            let mut value = KafkaStruct(c.value.as_deref().expect("a checkpoint has a value"));
            assert_eq!(value.int(2), 0, "checkpoint value version");
            let (upstream, downstream, metadata) = (value.int(8), value.int(8), value.string());
            value.done();
            serde_json::json!({
                "group": group,
                "topic": topic,
                "partition": partition,
                "upstream_offset": upstream,
                "downstream_offset": downstream,
                "metadata": metadata,
            })
        })
        .collect()
}

/// The records of a heartbeats topic, decoded as MirrorMaker 2's `Heartbeat` (key: source
/// and target cluster alias; value: version 0, timestamp): `(source, target, timestamp ms)`.
pub fn heartbeats(site: &impl Site, topic: &str) -> Vec<(String, String, i64)> {
    read_partition(site, topic, 0)
        .into_iter()
        .map(|c| {
            let mut key = KafkaStruct(c.key.as_deref().expect("a heartbeat has a key"));
            let (source, target) = (key.string(), key.string());
            key.done();
            let mut value = KafkaStruct(c.value.as_deref().expect("a heartbeat has a value"));
            assert_eq!(value.int(2), 0, "heartbeat value version");
            let timestamp = value.int(8);
            value.done();
            (source, target, timestamp)
        })
        .collect()
}
