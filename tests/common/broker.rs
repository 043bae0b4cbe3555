//! The `strait broker` process a test starts, stops, kills and restarts, with its log.

#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;

use rdkafka::Offset;
use tempfile::TempDir;

use super::*;

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
    strait::parse_broker_ready_line(line.trim_end())
        .map(|(_, addr)| addr)
        .unwrap_or_else(|| panic!("not the broker's ready line: {line:?}"))
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
