//! Shared harness for the end-to-end tests: spawns `strait broker` processes,
//! builds rdkafka clients against them and hand-encodes the few raw Kafka
//! frames the tests need.
//!
//! Every wait in here is bounded; nothing sleeps to synchronize where a
//! condition can be polled instead.

#![allow(dead_code)]

pub mod cluster;
pub mod mirror;

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, Timestamp};
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig,
};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tempfile::TempDir;

/// How long a broker gets to print its `listening on` line.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a broker gets to exit after SIGTERM / SIGKILL.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default timeout for single client operations (metadata, admin, watermarks).
pub const OP_TIMEOUT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------
// Locating the binary and the repository
// ---------------------------------------------------------------------------

/// Path of the `strait` binary under test.
///
/// Inside the `strait` package Cargo sets `CARGO_BIN_EXE_strait` at compile
/// time; anywhere else the `STRAIT_BIN` environment variable must point at it.
pub fn strait_bin() -> PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_strait") {
        return PathBuf::from(p);
    }
    match std::env::var_os("STRAIT_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => panic!(
            "cannot locate the strait binary: CARGO_BIN_EXE_strait was not set at compile time \
             (the tests are not being built as part of the `strait` package) and the STRAIT_BIN \
             environment variable is not set; set STRAIT_BIN=/path/to/strait"
        ),
    }
}

/// Root of the strait repository (where `configs/` lives).
///
/// `STRAIT_REPO` wins if set; otherwise the manifest directory of the package
/// the tests are compiled in (the repository root when run as `strait` tests).
pub fn repo_root() -> PathBuf {
    if let Some(p) = std::env::var_os("STRAIT_REPO").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if manifest.join("configs/single-node.yaml").exists() {
        return manifest;
    }
    panic!(
        "cannot locate the strait repository: {} has no configs/single-node.yaml and STRAIT_REPO \
         is not set; set STRAIT_REPO=/path/to/strait/repo",
        manifest.display()
    )
}

pub fn single_node_config() -> PathBuf {
    let p = repo_root().join("configs/single-node.yaml");
    assert!(p.exists(), "broker config {} does not exist", p.display());
    p
}

// ---------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock before 1970")
        .as_millis() as i64
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// A name unique within this test process (topic names, group ids).
pub fn unique(prefix: &str) -> String {
    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// Polls `cond` every 50 ms until it returns `Some`, panicking with `what`
/// after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Deterministic pseudo-random bytes (xorshift64*), so record contents are a
/// pure function of their index and not trivially compressible.
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        for b in v.to_le_bytes() {
            if out.len() < len {
                out.push(b);
            }
        }
    }
    out
}

/// Recursively lists every path below `root` (files and directories).
pub fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// The broker process
// ---------------------------------------------------------------------------

/// One `strait broker` process on a temporary data directory.
///
/// The data directory survives restarts and is removed when the `Broker` is
/// dropped. Dropping also SIGKILLs a still-running process, so nothing leaks
/// when a test panics; if the test is panicking the tail of the broker's log
/// is printed so the failure shows what the broker was doing.
pub struct Broker {
    child: Option<Child>,
    addr: SocketAddr,
    data_dir: TempDir,
    log_dir: TempDir,
    log_path: PathBuf,
    starts: u32,
    extra_args: Vec<String>,
    /// Environment set for the process (overriding the harness default `RUST_LOG=info`).
    extra_env: Vec<(String, String)>,
    /// Address to listen on; `None` picks a free port (see `restart_on_same_port`).
    listen: Option<SocketAddr>,
}

impl Broker {
    /// Starts a single-node broker on a fresh data directory.
    pub fn start() -> Broker {
        Broker::start_with_args(&[])
    }

    /// Starts a broker passing extra command line arguments after the standard ones.
    pub fn start_with_args(extra: &[&str]) -> Broker {
        Broker::start_with(extra, &[])
    }

    /// Starts a broker with extra environment variables (e.g. a `RUST_LOG` filter whose log
    /// lines a test counts).
    pub fn start_with_env(env: &[(&str, &str)]) -> Broker {
        Broker::start_with(&[], env)
    }

    fn start_with(extra: &[&str], env: &[(&str, &str)]) -> Broker {
        let data_dir = tempfile::Builder::new()
            .prefix("strait-e2e-data-")
            .tempdir()
            .expect("create data dir");
        let log_dir = tempfile::Builder::new()
            .prefix("strait-e2e-log-")
            .tempdir()
            .expect("create log dir");
        let log_path = log_dir.path().join("broker.log");
        let mut b = Broker {
            child: None,
            addr: "127.0.0.1:0".parse().unwrap(),
            data_dir,
            log_dir,
            log_path,
            starts: 0,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            listen: None,
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "broker process is already running");
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open broker log");
        writeln!(
            log,
            "===== e2e harness: start #{} of strait broker (data dir {}) =====",
            self.starts,
            self.data_dir.path().display()
        )
        .unwrap();
        let stderr = log.try_clone().expect("clone log handle");

        let bin = strait_bin();
        let config = single_node_config();
        let mut cmd = Command::new(&bin);
        cmd.arg("broker")
            .arg("--config")
            .arg(&config)
            .arg("--listen")
            .arg(
                self.listen
                    .map_or_else(|| "127.0.0.1:0".to_string(), |a| a.to_string()),
            )
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        cmd.envs(self.extra_env.iter().map(|(k, v)| (k, v)));
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("failed to spawn {}: {e}", bin.display()));

        // Reports the first `listening on` line.
        let stdout = child.stdout.take().expect("piped stdout");
        let rx = drain_stdout(stdout, log, |line| {
            line.contains("listening on").then(|| line.to_string())
        });

        self.child = Some(child);
        let line = match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(line) => line,
            // The broker's log is printed by Drop while the panic unwinds.
            Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                "broker did not print a `listening on` line within {STARTUP_TIMEOUT:?} \
                 (its log follows)"
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = self.wait_exit(Duration::from_secs(5));
                self.child = None;
                let status = status.map_or("still running".to_string(), |s| s.to_string());
                panic!(
                    "broker closed stdout without printing a `listening on` line ({status}; \
                     its log follows)"
                );
            }
        };
        self.addr = parse_listening_line(&line);
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("broker is not running").id() as i32
    }

    /// Panics unless the broker process is still running.
    pub fn assert_alive(&mut self) {
        let child = self.child.as_mut().expect("broker was stopped by the test");
        if let Some(status) = child.try_wait().expect("try_wait") {
            self.child = None;
            panic!("broker process died unexpectedly: {status} (its log follows)");
        }
    }

    fn signal(&self, sig: i32) {
        let pid = self.pid();
        // SAFETY: plain kill(2) on a child we spawned and have not reaped yet.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {sig}) failed: {}",
            std::io::Error::last_os_error()
        );
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit; asserts exit code 0.
    pub fn sigterm_and_wait(&mut self) {
        self.signal(libc::SIGTERM);
        let status = self.wait_exit(SHUTDOWN_TIMEOUT);
        let Some(status) = status else {
            panic!(
                "broker did not exit within {SHUTDOWN_TIMEOUT:?} after SIGTERM (its log follows)"
            );
        };
        self.child = None;
        assert_eq!(
            status.code(),
            Some(0),
            "broker exited with {status} after SIGTERM, expected exit code 0 (its log follows)"
        );
    }

    /// SIGKILLs the process and reaps it.
    pub fn sigkill(&mut self) {
        self.signal(libc::SIGKILL);
        let status = self.wait_exit(SHUTDOWN_TIMEOUT);
        assert!(status.is_some(), "broker did not die after SIGKILL");
        self.child = None;
    }

    pub fn sigstop(&self) {
        self.signal(libc::SIGSTOP);
    }

    pub fn sigcont(&self) {
        self.signal(libc::SIGCONT);
    }

    /// Starts the broker again on the same data directory (new ephemeral
    /// port). The previous process must have been stopped by the test.
    pub fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "restart() needs the broker to be stopped first (sigterm_and_wait or sigkill)"
        );
        self.spawn();
    }

    /// Starts the broker again on the same data directory and the same address, so clients
    /// created before the restart reconnect to it by themselves. The previous process must have
    /// been stopped by the test.
    pub fn restart_on_same_port(&mut self) {
        assert!(
            self.child.is_none(),
            "restart_on_same_port() needs the broker to be stopped first (sigterm_and_wait or sigkill)"
        );
        self.listen = Some(self.addr);
        self.spawn();
    }

    /// How many lines of the broker's log (all starts) contain `needle`.
    pub fn log_lines_containing(&self, needle: &str) -> usize {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        s.lines().filter(|l| l.contains(needle)).count()
    }

    /// The last `n` lines of the broker's combined stdout/stderr log.
    pub fn log_tail(&self, n: usize) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        let lines: Vec<&str> = s.lines().collect();
        let start = lines.len().saturating_sub(n);
        lines[start..].join("\n")
    }

    // -- clients -----------------------------------------------------------

    pub fn client_config(&self) -> ClientConfig {
        client_config(&self.bootstrap())
    }

    /// A producer with acks=all, no idempotence and the given extra settings
    /// (they override the defaults).
    pub fn producer(&self, extra: &[(&str, &str)]) -> TestProducer {
        TestProducer::new(&self.bootstrap(), extra)
    }

    /// A consumer suitable for `assign()` (never `subscribe()`), no commits.
    pub fn consumer(&self) -> BaseConsumer {
        make_consumer(&self.bootstrap())
    }

    pub fn admin(&self) -> AdminClient<DefaultClientContext> {
        self.client_config().create().expect("create admin client")
    }

    /// Consumes `expected` records of one partition starting at `from`.
    pub fn consume_all(
        &self,
        topic: &str,
        partition: i32,
        from: Offset,
        expected: usize,
        timeout: Duration,
    ) -> Vec<Consumed> {
        consume_all(&self.bootstrap(), topic, partition, from, expected, timeout)
    }

    /// (low, high) watermarks of a partition.
    pub fn watermarks(&self, topic: &str, partition: i32) -> (i64, i64) {
        watermarks(&self.bootstrap(), topic, partition)
    }

    /// Runs CreateTopics and returns the per-topic results.
    pub fn create_topics(
        &self,
        topics: &[NewTopic<'_>],
        validate_only: bool,
    ) -> Vec<Result<String, (String, RDKafkaErrorCode)>> {
        let admin = self.admin();
        let opts = AdminOptions::new()
            .request_timeout(Some(OP_TIMEOUT))
            .operation_timeout(Some(Duration::from_secs(10)))
            .validate_only(validate_only);
        block_on(
            admin.create_topics(topics, &opts),
            OP_TIMEOUT + Duration::from_secs(5),
        )
        .expect("CreateTopics request failed")
    }

    /// Creates a topic (replication factor 1) with the given configs, asserts
    /// success and waits until metadata shows all its partitions.
    pub fn create_topic(&self, name: &str, partitions: i32, configs: &[(&str, &str)]) {
        let mut t = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        for (k, v) in configs {
            t = t.set(k, v);
        }
        let res = self.create_topics(&[t], false);
        assert_eq!(res.len(), 1, "one result per created topic: {res:?}");
        assert_eq!(
            res[0],
            Ok(name.to_string()),
            "CreateTopics({name}, {partitions} partitions, {configs:?}) failed"
        );
        self.wait_for_topic(name, partitions as usize);
    }

    /// Runs DeleteTopics and returns the per-topic results.
    pub fn delete_topics(&self, names: &[&str]) -> Vec<Result<String, (String, RDKafkaErrorCode)>> {
        let admin = self.admin();
        let opts = AdminOptions::new()
            .request_timeout(Some(OP_TIMEOUT))
            .operation_timeout(Some(Duration::from_secs(10)));
        block_on(
            admin.delete_topics(names, &opts),
            OP_TIMEOUT + Duration::from_secs(5),
        )
        .expect("DeleteTopics request failed")
    }

    /// Partition count of every topic in a full (all topics) metadata
    /// response. Asking for all topics never auto-creates anything.
    pub fn all_topics(&self) -> Vec<(String, usize)> {
        let c = self.consumer();
        let md = c
            .fetch_metadata(None, OP_TIMEOUT)
            .expect("Metadata (all topics) failed");
        md.topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| (t.name().to_string(), t.partitions().len()))
            .collect()
    }

    pub fn topic_partition_count(&self, name: &str) -> Option<usize> {
        self.all_topics()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p)
    }

    pub fn wait_for_topic(&self, name: &str, partitions: usize) {
        wait_for(
            &format!("metadata to show topic {name} with {partitions} partitions"),
            OP_TIMEOUT,
            || (self.topic_partition_count(name) == Some(partitions)).then_some(()),
        );
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own unreaped child.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGKILL);
            }
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "--- strait broker log ({}), last 200 lines ---\n{}\n--- end of broker log ---",
                self.log_path.display(),
                self.log_tail(200)
            );
        }
    }
}

fn parse_listening_line(line: &str) -> SocketAddr {
    let rest = line
        .split("listening on")
        .nth(1)
        .unwrap_or_else(|| panic!("no `listening on` in {line:?}"))
        .trim_start();
    let token: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != ',')
        .collect();
    token
        .parse()
        .unwrap_or_else(|e| panic!("cannot parse address {token:?} from line {line:?}: {e}"))
}

/// Drains a child's stdout for the whole life of the process (so it never blocks on a full
/// pipe), copies every line into `log` as `[stdout] ...`, and sends the first line `ready`
/// accepts, as `ready` maps it.
pub fn drain_stdout<T: Send + 'static>(
    stdout: std::process::ChildStdout,
    mut log: File,
    ready: impl Fn(&str) -> Option<T> + Send + 'static,
) -> mpsc::Receiver<T> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(log, "[stdout] {line}");
            if tx.is_some() {
                if let Some(v) = ready(&line) {
                    let _ = tx.take().expect("checked").send(v);
                }
            }
        }
    });
    rx
}

/// Runs a future to completion on a private current-thread runtime, bounded by `timeout`.
pub fn block_on<F: std::future::Future>(fut: F, timeout: Duration) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build tokio runtime");
    rt.block_on(async { tokio::time::timeout(timeout, fut).await })
        .unwrap_or_else(|_| panic!("operation did not complete within {timeout:?}"))
}

// ---------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------

/// A record as produced by a test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Explicit CreateTime; `None` lets the client stamp it.
    pub timestamp: Option<i64>,
}

impl TestRecord {
    pub fn kv(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> TestRecord {
        TestRecord {
            key: Some(key.into()),
            value: Some(value.into()),
            headers: Vec::new(),
            timestamp: None,
        }
    }
}

/// A record as read back by a consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp: Timestamp,
}

/// The standard generated record `i` of a data set: distinct key, two
/// headers, explicit timestamp `base_ts + i`, a ~100 byte value derived from
/// the index (part text, part pseudo-random so compression has work to do).
pub fn generated_record(tag: &str, i: usize, base_ts: i64) -> TestRecord {
    let mut value = format!("{tag}-value-{i:08}-").into_bytes();
    let target = 90 + (i % 21);
    let noise = pseudo_random_bytes(i as u64 + 1, target.saturating_sub(value.len()) / 2);
    value.extend_from_slice(&noise);
    while value.len() < target {
        value.push(b'a' + (value.len() % 26) as u8);
    }
    TestRecord {
        key: Some(format!("{tag}-key-{i:08}").into_bytes()),
        value: Some(value),
        headers: vec![
            ("index".to_string(), Some((i as u64).to_be_bytes().to_vec())),
            (
                "tag".to_string(),
                Some(format!("{tag}/{}", i % 7).into_bytes()),
            ),
        ],
        timestamp: Some(base_ts + i as i64),
    }
}

/// Asserts `got` is exactly `expected` at offsets `first_offset..` (dense,
/// in order), with CreateTime timestamps where the expected record carries
/// one. Reports the first mismatch only, so 100k-record failures stay readable.
pub fn assert_records_match(expected: &[TestRecord], got: &[Consumed], first_offset: i64) {
    assert_eq!(
        got.len(),
        expected.len(),
        "record count differs: got {} expected {}",
        got.len(),
        expected.len()
    );
    for (i, (e, g)) in expected.iter().zip(got).enumerate() {
        let want_offset = first_offset + i as i64;
        assert_eq!(
            g.offset, want_offset,
            "record #{i}: offsets are not dense/in order (got offset {}, expected {want_offset})",
            g.offset
        );
        assert_record_eq(e, g, &format!("record #{i} at offset {}", g.offset));
    }
}

/// Asserts key, value, headers and (if set) CreateTime timestamp are identical.
pub fn assert_record_eq(e: &TestRecord, g: &Consumed, what: &str) {
    assert_eq!(g.key, e.key, "{what}: key differs");
    assert_eq!(g.value, e.value, "{what}: value differs");
    assert_eq!(g.headers, e.headers, "{what}: headers differ");
    if let Some(ts) = e.timestamp {
        assert_eq!(
            g.timestamp,
            Timestamp::CreateTime(ts),
            "{what}: timestamp differs"
        );
    }
}

// ---------------------------------------------------------------------------
// Producer
// ---------------------------------------------------------------------------

/// Outcome of one produced record, identified by the index the test gave it.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub index: usize,
    pub result: Result<(i32, i64), KafkaError>,
}

impl Delivery {
    pub fn error_code(&self) -> Option<RDKafkaErrorCode> {
        match &self.result {
            Ok(_) => None,
            Err(e) => e.rdkafka_error_code(),
        }
    }
}

pub struct CollectingContext {
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    acked: Arc<AtomicU64>,
}

impl ClientContext for CollectingContext {}

impl ProducerContext for CollectingContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        let result = match result {
            Ok(m) => {
                self.acked.fetch_add(1, Ordering::Relaxed);
                Ok((m.partition(), m.offset()))
            }
            Err((e, _)) => Err(e.clone()),
        };
        self.deliveries
            .lock()
            .unwrap()
            .push(Delivery { index, result });
    }
}

/// A BaseProducer whose delivery reports are collected by record index.
pub struct TestProducer {
    pub producer: BaseProducer<CollectingContext>,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    acked: Arc<AtomicU64>,
}

impl TestProducer {
    pub fn new(bootstrap: &str, extra: &[(&str, &str)]) -> TestProducer {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", bootstrap)
            .set("client.id", "strait-e2e-producer")
            .set("acks", "all")
            .set("enable.idempotence", "false")
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "20000")
            .set("message.timeout.ms", "60000")
            .set("request.timeout.ms", "30000")
            .set("socket.timeout.ms", "10000");
        for (k, v) in extra {
            c.set(*k, *v);
        }
        let deliveries = Arc::new(Mutex::new(Vec::new()));
        let acked = Arc::new(AtomicU64::new(0));
        let producer = c
            .create_with_context(CollectingContext {
                deliveries: deliveries.clone(),
                acked: acked.clone(),
            })
            .expect("create producer");
        TestProducer {
            producer,
            deliveries,
            acked,
        }
    }

    /// Enqueues one record, waiting (bounded by `deadline`) while the local
    /// queue is full. Returns the local enqueue error, if any other.
    pub fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        index: usize,
        rec: &TestRecord,
        deadline: Instant,
    ) -> Result<(), KafkaError> {
        loop {
            let mut r: BaseRecord<'_, [u8], [u8], usize> = BaseRecord::with_opaque_to(topic, index);
            if let Some(p) = partition {
                r = r.partition(p);
            }
            if let Some(k) = &rec.key {
                r = r.key(k.as_slice());
            }
            if let Some(v) = &rec.value {
                r = r.payload(v.as_slice());
            }
            if let Some(ts) = rec.timestamp {
                r = r.timestamp(ts);
            }
            if !rec.headers.is_empty() {
                let mut h = OwnedHeaders::new_with_capacity(rec.headers.len());
                for (k, v) in &rec.headers {
                    h = h.insert(Header {
                        key: k.as_str(),
                        value: v.as_ref(),
                    });
                }
                r = r.headers(h);
            }
            match self.producer.send(r) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    if Instant::now() >= deadline {
                        panic!("producer queue stayed full until the deadline");
                    }
                    self.producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Serves delivery reports for up to `timeout`.
    pub fn poll(&self, timeout: Duration) {
        self.producer.poll(timeout);
    }

    /// Waits (bounded) until every enqueued record has a delivery report.
    pub fn flush(&self, timeout: Duration) {
        self.producer
            .flush(timeout)
            .unwrap_or_else(|e| panic!("producer flush did not finish within {timeout:?}: {e}"));
        // flush() returns when the queue is empty; serve the final reports.
        self.producer.poll(Duration::ZERO);
    }

    /// Drops queued and in-flight records (they get error delivery reports).
    pub fn purge(&self) {
        self.producer
            .purge(PurgeConfig::default().queue().inflight());
        self.producer.poll(Duration::from_millis(100));
    }

    pub fn delivered_count(&self) -> usize {
        self.deliveries.lock().unwrap().len()
    }

    /// Number of records acknowledged so far (over the producer's lifetime).
    pub fn acked_count(&self) -> usize {
        self.acked.load(Ordering::Relaxed) as usize
    }

    /// A shared counter of acknowledged records, readable from other threads.
    pub fn acked_counter(&self) -> Arc<AtomicU64> {
        self.acked.clone()
    }

    /// Takes all delivery reports collected so far.
    pub fn take_deliveries(&self) -> Vec<Delivery> {
        std::mem::take(&mut *self.deliveries.lock().unwrap())
    }

    /// Produces `records` (indices 0..n), waits for every delivery report and
    /// returns them ordered by index, whatever their outcome.
    pub fn produce_collect(
        &self,
        topic: &str,
        partition: Option<i32>,
        records: &[TestRecord],
        timeout: Duration,
    ) -> Vec<Delivery> {
        let deadline = Instant::now() + timeout;
        let mut local_errors = Vec::new();
        for (i, rec) in records.iter().enumerate() {
            if let Err(e) = self.send(topic, partition, i, rec, deadline) {
                local_errors.push(Delivery {
                    index: i,
                    result: Err(e),
                });
            }
            if i % 1000 == 999 {
                self.producer.poll(Duration::ZERO);
            }
        }
        self.flush(deadline.saturating_duration_since(Instant::now()));
        let mut all = self.take_deliveries();
        all.extend(local_errors);
        all.sort_by_key(|d| d.index);
        assert_eq!(
            all.len(),
            records.len(),
            "expected exactly one delivery report per record"
        );
        all
    }

    /// Produces `records`, asserts every one was acknowledged, returns their
    /// (partition, offset) in record order.
    pub fn produce_all(
        &self,
        topic: &str,
        partition: Option<i32>,
        records: &[TestRecord],
        timeout: Duration,
    ) -> Vec<(i32, i64)> {
        self.produce_collect(topic, partition, records, timeout)
            .into_iter()
            .map(|d| match d.result {
                Ok(po) => po,
                Err(e) => panic!("record #{} to {topic} was not acknowledged: {e}", d.index),
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Consumer
// ---------------------------------------------------------------------------

/// A consumer for `assign()` use only. librdkafka refuses `assign()` without
/// a `group.id`, so one is set, but nothing is ever committed or subscribed.
/// Anything clients bootstrap from: one test [`Broker`], or a cluster's bootstrap list.
pub trait Site {
    fn bootstrap(&self) -> String;
}

impl Site for Broker {
    fn bootstrap(&self) -> String {
        Broker::bootstrap(self)
    }
}

impl Site for String {
    fn bootstrap(&self) -> String {
        self.clone()
    }
}

/// Client settings every test client starts from.
pub fn client_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("client.id", "strait-e2e")
        .set("socket.timeout.ms", "10000");
    c
}

/// (low, high) watermarks of a partition.
pub fn watermarks(bootstrap: &str, topic: &str, partition: i32) -> (i64, i64) {
    make_consumer(bootstrap)
        .fetch_watermarks(topic, partition, OP_TIMEOUT)
        .unwrap_or_else(|e| panic!("fetch_watermarks({topic}/{partition}) failed: {e}"))
}

pub fn make_consumer(bootstrap: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("client.id", "strait-e2e-consumer")
        .set("group.id", unique("strait-e2e"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        // An out-of-range start offset must surface as an error, not be
        // silently "fixed" by jumping to the end.
        .set("auto.offset.reset", "error")
        .set("fetch.wait.max.ms", "100")
        .set("socket.timeout.ms", "10000")
        .create()
        .expect("create consumer")
}

/// Reads exactly `expected` records of `topic`/`partition` starting at
/// `from`; panics (with how far it got) on timeout or on any consumer error.
pub fn consume_all(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    from: Offset,
    expected: usize,
    timeout: Duration,
) -> Vec<Consumed> {
    let consumer = make_consumer(bootstrap);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, from)
        .expect("add partition offset");
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + timeout;
    let mut out = Vec::with_capacity(expected);
    while out.len() < expected {
        let now = Instant::now();
        if now >= deadline {
            panic!(
                "consume_all({topic}/{partition} from {from:?}): got only {} of {expected} records \
                 within {timeout:?}; last offset read: {:?}",
                out.len(),
                out.last().map(|c: &Consumed| c.offset)
            );
        }
        let wait = (deadline - now).min(Duration::from_millis(200));
        match consumer.poll(wait) {
            None => {}
            // librdkafka reports a lost connection to a broker it knows of (a node of a
            // cluster that is down) and reconnects by itself; the deadline still bounds us.
            Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::BrokerTransportFailure))) => {
            }
            Some(Err(e)) => panic!(
                "consume_all({topic}/{partition}): consumer error after {} records: {e}",
                out.len()
            ),
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| (h.key.to_string(), h.value.map(|v| v.to_vec())))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Consumed {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(|k| k.to_vec()),
                    value: m.payload().map(|v| v.to_vec()),
                    headers,
                    timestamp: m.timestamp(),
                });
            }
        }
    }
    out
}

/// Offsets returned by ListOffsets-by-timestamp for each of `timestamps`.
pub fn offsets_for_times(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    timestamps: &[i64],
) -> Vec<Offset> {
    let consumer = make_consumer(bootstrap);
    timestamps
        .iter()
        .map(|&ts| {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, partition, Offset::Offset(ts))
                .unwrap();
            let res = consumer
                .offsets_for_times(tpl, OP_TIMEOUT)
                .unwrap_or_else(|e| panic!("offsets_for_times({topic}, {ts}) failed: {e}"));
            let elem = res
                .find_partition(topic, partition)
                .unwrap_or_else(|| panic!("no result for {topic}/{partition}"));
            if let Err(e) = elem.error() {
                panic!("offsets_for_times({topic}/{partition}, {ts}) partition error: {e}");
            }
            elem.offset()
        })
        .collect()
}

/// Produces one fresh record with rdkafka and reads it back at its
/// acknowledged offset: proof the broker still serves normal clients.
pub fn assert_round_trip(broker: &Broker, topic: &str) {
    let rec = TestRecord::kv(
        unique("rt-key").into_bytes(),
        unique("rt-value").into_bytes(),
    );
    let p = broker.producer(&[]);
    let acked = p.produce_all(
        topic,
        Some(0),
        std::slice::from_ref(&rec),
        Duration::from_secs(30),
    );
    drop(p);
    let (partition, offset) = acked[0];
    let got = broker.consume_all(
        topic,
        partition,
        Offset::Offset(offset),
        1,
        Duration::from_secs(30),
    );
    assert_eq!(got[0].offset, offset, "round trip: wrong offset read back");
    assert_record_eq(&rec, &got[0], "round trip record");
}

// ---------------------------------------------------------------------------
// Raw Kafka wire encoding (just enough for the malformed-input tests)
// ---------------------------------------------------------------------------

/// CRC-32C (Castagnoli), as used by record batch v2.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        if z < 0x80 {
            out.push(z as u8);
            return;
        }
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
}

/// Encodes an uncompressed record batch v2 with the given (key, value)
/// records, base offset 0, no producer id. The CRC is correct.
pub fn encode_record_batch(records: &[(Option<&[u8]>, &[u8])], base_ts: i64) -> Vec<u8> {
    let mut recs = Vec::new();
    for (i, (k, v)) in records.iter().enumerate() {
        let mut body = Vec::new();
        body.push(0u8); // attributes
        put_varint(&mut body, 0); // timestamp delta
        put_varint(&mut body, i as i64); // offset delta
        match k {
            Some(k) => {
                put_varint(&mut body, k.len() as i64);
                body.extend_from_slice(k);
            }
            None => put_varint(&mut body, -1),
        }
        put_varint(&mut body, v.len() as i64);
        body.extend_from_slice(v);
        put_varint(&mut body, 0); // headers
        put_varint(&mut recs, body.len() as i64);
        recs.extend_from_slice(&body);
    }
    // Everything the CRC covers: attributes .. end of records.
    let mut tail = Vec::new();
    tail.extend_from_slice(&0i16.to_be_bytes()); // attributes
    tail.extend_from_slice(&(records.len() as i32 - 1).to_be_bytes()); // last offset delta
    tail.extend_from_slice(&base_ts.to_be_bytes()); // base timestamp
    tail.extend_from_slice(&base_ts.to_be_bytes()); // max timestamp
    tail.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    tail.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    tail.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    tail.extend_from_slice(&(records.len() as i32).to_be_bytes());
    tail.extend_from_slice(&recs);

    let mut batch = Vec::new();
    batch.extend_from_slice(&0i64.to_be_bytes()); // base offset
    let batch_len = 4 + 1 + 4 + tail.len(); // epoch + magic + crc + tail
    batch.extend_from_slice(&(batch_len as i32).to_be_bytes());
    batch.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    batch.push(2); // magic
    batch.extend_from_slice(&crc32c(&tail).to_be_bytes());
    batch.extend_from_slice(&tail);
    batch
}

/// Byte offset inside an encoded batch of the first byte covered by the CRC.
pub const BATCH_CRC_COVERED_START: usize = 8 + 4 + 4 + 1 + 4;

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A complete size-prefixed request: header v1 (api key, version,
/// correlation id, client id) followed by `body`.
pub fn encode_request(api_key: i16, version: i16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::new();
    msg.extend_from_slice(&api_key.to_be_bytes());
    msg.extend_from_slice(&version.to_be_bytes());
    msg.extend_from_slice(&correlation_id.to_be_bytes());
    put_str(&mut msg, "strait-e2e-raw");
    msg.extend_from_slice(body);
    let mut frame = (msg.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&msg);
    frame
}

/// Body of a Produce request, versions 3..=8 (identical layout): null
/// transactional id, acks, timeout, one topic with one partition.
pub fn encode_produce_body(topic: &str, partition: i32, acks: i16, batch: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(-1i16).to_be_bytes()); // transactional_id = null
    b.extend_from_slice(&acks.to_be_bytes());
    b.extend_from_slice(&10_000i32.to_be_bytes()); // timeout ms
    b.extend_from_slice(&1i32.to_be_bytes()); // one topic
    put_str(&mut b, topic);
    b.extend_from_slice(&1i32.to_be_bytes()); // one partition
    b.extend_from_slice(&partition.to_be_bytes());
    b.extend_from_slice(&(batch.len() as i32).to_be_bytes());
    b.extend_from_slice(batch);
    b
}

/// A raw TCP connection to the broker with bounded reads/writes.
pub struct RawConn {
    pub stream: TcpStream,
}

impl RawConn {
    pub fn connect(addr: SocketAddr) -> RawConn {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        RawConn { stream }
    }

    /// Writes bytes; a broker that already closed the connection is fine.
    pub fn write_lossy(&mut self, data: &[u8]) {
        let _ = self.stream.write_all(data);
        let _ = self.stream.flush();
    }

    pub fn send(&mut self, data: &[u8]) {
        self.stream.write_all(data).expect("write request");
    }

    /// Reads one size-prefixed response; returns the bytes after the size.
    pub fn read_response(&mut self) -> Vec<u8> {
        let mut len = [0u8; 4];
        self.stream
            .read_exact(&mut len)
            .expect("read response size (connection closed or timed out)");
        let len = i32::from_be_bytes(len);
        assert!(
            (4..64 * 1024 * 1024).contains(&len),
            "implausible response size {len}"
        );
        let mut buf = vec![0u8; len as usize];
        self.stream
            .read_exact(&mut buf)
            .expect("read response body");
        buf
    }

    /// Waits (bounded by the read timeout) for the peer to close or to send
    /// something; returns true if the connection was closed/reset.
    pub fn closed_by_peer(&mut self) -> bool {
        let mut buf = [0u8; 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return false
                }
                Err(_) => return true,
            }
        }
    }
}

/// Minimal big-endian reader for responses.
pub struct Reader<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        assert!(
            self.pos + n <= self.buf.len(),
            "response truncated: need {n} bytes at {} of {}",
            self.pos,
            self.buf.len()
        );
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        s
    }
    pub fn i16(&mut self) -> i16 {
        i16::from_be_bytes(self.take(2).try_into().unwrap())
    }
    pub fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.take(4).try_into().unwrap())
    }
    pub fn i64(&mut self) -> i64 {
        i64::from_be_bytes(self.take(8).try_into().unwrap())
    }
    pub fn string(&mut self) -> String {
        let n = self.i16();
        assert!(n >= 0, "unexpected null string");
        String::from_utf8(self.take(n as usize).to_vec()).expect("utf8 string")
    }
}

/// ApiVersions v0 over a raw connection: (api_key, min, max) for every API.
pub fn raw_api_versions(conn: &mut RawConn) -> Vec<(i16, i16, i16)> {
    conn.send(&encode_request(18, 0, 4242, &[]));
    let resp = conn.read_response();
    let mut r = Reader::new(&resp);
    assert_eq!(r.i32(), 4242, "ApiVersions: correlation id not echoed");
    assert_eq!(r.i16(), 0, "ApiVersions v0: error code");
    let n = r.i32();
    (0..n).map(|_| (r.i16(), r.i16(), r.i16())).collect()
}

/// Sends a Produce request (choosing a version in 3..=8 the broker supports,
/// all of which share one request layout and response prefix) and returns
/// the partition's error code and base offset.
pub fn raw_produce(
    broker: &Broker,
    topic: &str,
    partition: i32,
    batch: &[u8],
    correlation_id: i32,
) -> (i16, i64) {
    let mut conn = RawConn::connect(broker.addr());
    let versions = raw_api_versions(&mut conn);
    let &(_, min, max) = versions
        .iter()
        .find(|(k, _, _)| *k == 0)
        .expect("broker does not advertise Produce in ApiVersions");
    let version = min.max(3);
    assert!(
        version <= max && version <= 8,
        "broker's Produce versions {min}..={max} have no overlap with the 3..=8 the raw test encodes"
    );
    conn.send(&encode_request(
        0,
        version,
        correlation_id,
        &encode_produce_body(topic, partition, 1, batch),
    ));
    let resp = conn.read_response();
    let mut r = Reader::new(&resp);
    assert_eq!(
        r.i32(),
        correlation_id,
        "Produce: correlation id not echoed"
    );
    assert_eq!(r.i32(), 1, "Produce response: one topic");
    assert_eq!(r.string(), topic, "Produce response: topic name");
    assert_eq!(r.i32(), 1, "Produce response: one partition");
    assert_eq!(r.i32(), partition, "Produce response: partition index");
    let error_code = r.i16();
    let base_offset = r.i64();
    (error_code, base_offset)
}

/// Sends one request encoded with kafka-protocol to `addr` on a fresh connection and decodes
/// the answer. Every step is bounded (connect 5 s, read and write 15 s); an error says which
/// step failed, so a caller polling a node that is down can retry.
pub fn try_raw_call_at<Req, Resp>(
    addr: SocketAddr,
    key: kafka_protocol::messages::ApiKey,
    version: i16,
    req: &Req,
) -> Result<Resp, String>
where
    Req: kafka_protocol::protocol::Encodable,
    Resp: kafka_protocol::protocol::Decodable,
{
    use kafka_protocol::messages::{RequestHeader, ResponseHeader};
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
    const CORRELATION_ID: i32 = 77;
    let mut body = bytes::BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(CORRELATION_ID)
        .with_client_id(Some(StrBytes::from_static_str("strait-e2e-raw")))
        .encode(&mut body, key.request_header_version(version))
        .map_err(|e| format!("encode request header: {e}"))?;
    req.encode(&mut body, version)
        .map_err(|e| format!("encode request: {e}"))?;
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .and_then(|()| stream.set_write_timeout(Some(Duration::from_secs(15))))
        .map_err(|e| format!("socket timeouts: {e}"))?;
    stream
        .write_all(&frame)
        .map_err(|e| format!("send {key:?} to {addr}: {e}"))?;
    let mut len = [0u8; 4];
    stream
        .read_exact(&mut len)
        .map_err(|e| format!("read {key:?} response size from {addr}: {e}"))?;
    let len = i32::from_be_bytes(len);
    if !(4..64 * 1024 * 1024).contains(&len) {
        return Err(format!(
            "implausible {key:?} response size {len} from {addr}"
        ));
    }
    let mut buf = vec![0u8; len as usize];
    stream
        .read_exact(&mut buf)
        .map_err(|e| format!("read {key:?} response from {addr}: {e}"))?;
    let mut resp = bytes::Bytes::from(buf);
    let header = ResponseHeader::decode(&mut resp, key.response_header_version(version))
        .map_err(|e| format!("decode {key:?} response header: {e}"))?;
    if header.correlation_id != CORRELATION_ID {
        return Err(format!(
            "{key:?} response has correlation id {}, sent {CORRELATION_ID}",
            header.correlation_id
        ));
    }
    Resp::decode(&mut resp, version).map_err(|e| format!("decode {key:?} response: {e}"))
}

/// [`try_raw_call_at`] that panics on failure.
pub fn raw_call_at<Req, Resp>(
    addr: SocketAddr,
    key: kafka_protocol::messages::ApiKey,
    version: i16,
    req: &Req,
) -> Resp
where
    Req: kafka_protocol::protocol::Encodable,
    Resp: kafka_protocol::protocol::Decodable,
{
    try_raw_call_at(addr, key, version, req).unwrap_or_else(|e| panic!("{e}"))
}
