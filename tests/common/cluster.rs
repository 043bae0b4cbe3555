//! Multi-node harness: a [`Cluster`] of real `strait broker` processes that form one metadata
//! quorum on loopback, and [`SupervisorCommand`], a real `strait cluster` or `strait up`
//! process, on config files written for the test (free loopback ports, temporary data directories).
//!
//! Everything a test starts is stopped and removed on drop, also when the test panics: nodes
//! get SIGKILL, so do a supervisor and every process it started, and the temporary directory
//! (configs, data, logs) goes with the harness. A panicking test prints the tail of every
//! node's log.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use tempfile::TempDir;

use super::{block_on, strait_bin, try_raw_call_at, wait_for, OP_TIMEOUT, STARTUP_TIMEOUT};

/// `broker_session_timeout_ms` of test nodes: a killed node is fenced (and its leaderships
/// move) about this long after its last heartbeat. Short so tests do not wait 9 s.
pub const SESSION_TIMEOUT_MS: u64 = 3_000;
/// `broker_heartbeat_interval_ms` of test nodes (well below the session timeout, so a live
/// node under load is never fenced).
pub const HEARTBEAT_INTERVAL_MS: u64 = 500;
/// Lines of each node's log a panicking test prints.
const LOG_TAIL_LINES: usize = 80;
/// Default log filter of test nodes: the broker at info, openraft's chatter at warn.
const NODE_RUST_LOG: &str = "info,openraft=warn";

// ---------------------------------------------------------------------------
// Node config files
// ---------------------------------------------------------------------------

/// The two listeners of one test node.
#[derive(Clone, Copy, Debug)]
pub struct NodeSpec {
    pub id: i32,
    pub kafka: SocketAddr,
    pub controller: SocketAddr,
}

/// Lowest port [`free_ports`] hands out.
const FIRST_TEST_PORT: u16 = 20_000;
/// One past the highest: Linux's ephemeral range (`net.ipv4.ip_local_port_range`) starts at
/// 32768, so no outgoing connection's local port is ever taken from below it.
const END_TEST_PORTS: u16 = 32_768;

/// `n` free loopback addresses, none handed out before by this process.
///
/// Ports are chosen up front because the quorum voters must be known before any node starts,
/// and kept so a node restarts on the address its peers know. They come from below the
/// kernel's ephemeral range: a port picked by binding port 0 is an ephemeral one, and between
/// its release and the node binding it, any outgoing connection of a test running in parallel
/// could take it (that made a node fail with "Address already in use" about once in fifty
/// runs of `tests/cluster.rs` under load). Below the range, only an explicit bind takes a
/// port; this process hands them out in sequence (one comes back only after the whole stretch
/// was used), and a port is handed out only if binding it works. Where the walk starts depends on the process id, so test binaries
/// that run at the same time walk different stretches.
pub fn free_ports(n: usize) -> Vec<SocketAddr> {
    static NEXT: Mutex<Option<u16>> = Mutex::new(None);
    let span = END_TEST_PORTS - FIRST_TEST_PORT;
    let mut next = NEXT.lock().unwrap_or_else(|p| p.into_inner());
    let mut port =
        next.unwrap_or_else(|| FIRST_TEST_PORT + (std::process::id() % u32::from(span)) as u16);
    let mut ports = Vec::with_capacity(n);
    for _ in 0..span {
        if ports.len() == n {
            break;
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if TcpListener::bind(addr).is_ok() {
            ports.push(addr);
        }
        port = if port + 1 == END_TEST_PORTS {
            FIRST_TEST_PORT
        } else {
            port + 1
        };
    }
    assert_eq!(
        ports.len(),
        n,
        "no {n} free loopback ports left in {FIRST_TEST_PORT}..{END_TEST_PORTS}"
    );
    *next = Some(port);
    ports
}

/// Specs for nodes 1..=n on fresh loopback ports ([`free_ports`]).
pub fn node_specs(n: usize) -> Vec<NodeSpec> {
    let ports = free_ports(2 * n);
    (0..n)
        .map(|i| NodeSpec {
            id: i as i32 + 1,
            kafka: ports[2 * i],
            controller: ports[2 * i + 1],
        })
        .collect()
}

/// `controller_quorum_voters` for `specs`.
pub fn voters(specs: &[NodeSpec]) -> String {
    specs
        .iter()
        .map(|s| format!("{}@{}", s.id, s.controller))
        .collect::<Vec<_>>()
        .join(",")
}

/// Writes `dir/node-N.yaml` for every spec, with data in `dir/data/node-N`, short session
/// timeouts and `extra_yaml` (top-level lines) appended. Returns the files in spec order.
pub fn write_node_configs(dir: &Path, specs: &[NodeSpec], extra_yaml: &str) -> Vec<PathBuf> {
    let voters = voters(specs);
    specs
        .iter()
        .map(|s| {
            let path = dir.join(format!("node-{}.yaml", s.id));
            let yaml = format!(
                "# Written by the end-to-end test harness.\n\
                 node_id: {id}\n\
                 listen: {kafka}\n\
                 data_dir: data/node-{id}\n\
                 controller_quorum_voters: \"{voters}\"\n\
                 broker_session_timeout_ms: {SESSION_TIMEOUT_MS}\n\
                 broker_heartbeat_interval_ms: {HEARTBEAT_INTERVAL_MS}\n\
                 default_replication_factor: {rf}\n\
                 offsets_topic_replication_factor: {rf}\n\
                 # Few offsets partitions: every node creates and opens them at start.\n\
                 offsets_topic_num_partitions: 3\n\
                 {extra_yaml}",
                id = s.id,
                kafka = s.kafka,
                rf = specs.len().min(3),
            );
            std::fs::write(&path, yaml).expect("write node config");
            path
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Metadata as a client sees it
// ---------------------------------------------------------------------------

/// One partition in a Metadata response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionState {
    pub partition: i32,
    pub error_code: i16,
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// A Metadata response (v12, all topics), reduced to what the tests assert on.
#[derive(Clone, Debug)]
pub struct ClusterMetadata {
    /// The node that answered.
    pub from: i32,
    pub cluster_id: Option<String>,
    /// The active controller the node reports; -1 when it knows none.
    pub controller_id: i32,
    /// Listed brokers (unfenced ones), sorted by id.
    pub brokers: Vec<(i32, String, i32)>,
    pub topics: BTreeMap<String, Vec<PartitionState>>,
}

impl ClusterMetadata {
    pub fn broker_ids(&self) -> Vec<i32> {
        self.brokers.iter().map(|b| b.0).collect()
    }

    /// Partitions of `topic` ordered by index; empty if the topic is not listed.
    pub fn partitions(&self, topic: &str) -> &[PartitionState] {
        self.topics.get(topic).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// Metadata v12 for every topic, from the node listening on `addr`.
pub fn try_metadata(from: i32, addr: SocketAddr) -> Result<ClusterMetadata, String> {
    let req = MetadataRequest::default()
        .with_topics(None)
        .with_allow_auto_topic_creation(false);
    let resp: MetadataResponse = try_raw_call_at(addr, ApiKey::Metadata, 12, &req)?;
    let mut topics = BTreeMap::new();
    for t in resp.topics {
        let Some(name) = t.name else { continue };
        let mut partitions: Vec<PartitionState> = t
            .partitions
            .into_iter()
            .map(|p| PartitionState {
                partition: p.partition_index,
                error_code: p.error_code,
                leader: p.leader_id.0,
                leader_epoch: p.leader_epoch,
                replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                isr: p.isr_nodes.iter().map(|b| b.0).collect(),
            })
            .collect();
        partitions.sort_by_key(|p| p.partition);
        topics.insert(name.0.to_string(), partitions);
    }
    let mut brokers: Vec<(i32, String, i32)> = resp
        .brokers
        .into_iter()
        .map(|b| (b.node_id.0, b.host.to_string(), b.port))
        .collect();
    brokers.sort();
    Ok(ClusterMetadata {
        from,
        cluster_id: resp.cluster_id.map(|s| s.to_string()),
        controller_id: resp.controller_id.0,
        brokers,
        topics,
    })
}

/// FindCoordinator v3 for consumer group `group`, asked of the node at `addr`: the
/// coordinator's node id, or the error code and message.
pub fn find_coordinator(addr: SocketAddr, group: &str) -> Result<i32, String> {
    let req = FindCoordinatorRequest::default()
        .with_key(StrBytes::from_string(group.to_string()))
        .with_key_type(0);
    let resp: FindCoordinatorResponse = try_raw_call_at(addr, ApiKey::FindCoordinator, 3, &req)?;
    if resp.error_code != 0 {
        return Err(format!(
            "FindCoordinator({group}): error {} ({:?})",
            resp.error_code, resp.error_message
        ));
    }
    Ok(resp.node_id.0)
}

/// An rdkafka admin client bootstrapped on `bootstrap` only.
pub fn admin_client(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("client.id", "strait-e2e-cluster-admin")
        .set("socket.timeout.ms", "5000")
        .set("debug", "admin,broker,metadata")
        .set_log_level(RDKafkaLogLevel::Debug)
        .create()
        .expect("create admin client")
}

/// Most log lines [`admin_log`] returns.
const ADMIN_LOG_LINES: usize = 400;

/// The last [`ADMIN_LOG_LINES`] log lines of an rdkafka admin client, for a failed call.
/// rust-rdkafka routes librdkafka's log to the client's main queue, which an admin client never
/// polls, so they wait there until this drains them.
pub fn admin_log(admin: &AdminClient<DefaultClientContext>) -> Vec<String> {
    use rdkafka::bindings as rd;
    let mut lines = std::collections::VecDeque::new();
    // SAFETY: the client outlives this call; every event and the queue handle taken here are
    // destroyed here, and the strings read from a log event are copied before it is.
    unsafe {
        let queue = rd::rd_kafka_queue_get_main(admin.inner().native_ptr());
        loop {
            let event = rd::rd_kafka_queue_poll(queue, 0);
            if event.is_null() {
                break;
            }
            if rd::rd_kafka_event_type(event) == rd::RD_KAFKA_EVENT_LOG {
                let (mut fac, mut text, mut level) = (std::ptr::null(), std::ptr::null(), 0);
                if rd::rd_kafka_event_log(event, &mut fac, &mut text, &mut level) == 0 {
                    let fac = std::ffi::CStr::from_ptr(fac).to_string_lossy();
                    let text = std::ffi::CStr::from_ptr(text).to_string_lossy();
                    if lines.len() == ADMIN_LOG_LINES {
                        lines.pop_front();
                    }
                    lines.push_back(format!("{level} {fac} {text}"));
                }
            }
            rd::rd_kafka_event_destroy(event);
        }
        rd::rd_kafka_queue_destroy(queue);
    }
    lines.into()
}

/// CreateTopics through rdkafka's AdminClient bootstrapped on `bootstrap` (librdkafka sends
/// it to the controller its metadata names). `Err` carries the error code and message.
pub fn create_topic_rdkafka(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    replication_factor: i32,
    timeout: Duration,
) -> Result<(), String> {
    create_topic_with_configs(
        bootstrap,
        name,
        partitions,
        replication_factor,
        &[],
        timeout,
    )
}

/// [`create_topic_rdkafka`] with topic configs.
pub fn create_topic_with_configs(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    replication_factor: i32,
    configs: &[(&str, &str)],
    timeout: Duration,
) -> Result<(), String> {
    let admin = admin_client(bootstrap);
    let mut topic = NewTopic::new(
        name,
        partitions,
        TopicReplication::Fixed(replication_factor),
    );
    for (key, value) in configs {
        topic = topic.set(key, value);
    }
    let opts = AdminOptions::new()
        .request_timeout(Some(timeout))
        .operation_timeout(Some(timeout));
    let results = block_on(
        admin.create_topics(&[topic], &opts),
        timeout + Duration::from_secs(5),
    )
    .map_err(|e| {
        format!(
            "CreateTopics request failed: {e}\n--- the admin client's last log lines ---\n{}\n--- end of the admin client's log ---",
            admin_log(&admin).join("\n")
        )
    })?;
    match results.as_slice() {
        [Ok(created)] if created == name => Ok(()),
        [Err((topic, code))] => Err(format!("CreateTopics({topic}): {code:?}")),
        other => Err(format!(
            "CreateTopics({name}): unexpected results {other:?}"
        )),
    }
}

/// CreateTopics v7 sent to exactly the node at `addr` (no client-side routing to the
/// controller): the error code and message of the one topic.
pub fn create_topic_raw(
    addr: SocketAddr,
    name: &str,
    partitions: i32,
    replication_factor: i16,
) -> Result<(i16, Option<String>), String> {
    let req = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(name.to_string())))
            .with_num_partitions(partitions)
            .with_replication_factor(replication_factor)])
        .with_timeout_ms(15_000);
    let resp: CreateTopicsResponse = try_raw_call_at(addr, ApiKey::CreateTopics, 7, &req)?;
    let topic = resp
        .topics
        .into_iter()
        .next()
        .ok_or_else(|| "CreateTopics response without topics".to_string())?;
    Ok((topic.error_code, topic.error_message.map(|m| m.to_string())))
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

fn signal(pid: i32, sig: i32) -> Result<(), std::io::Error> {
    // SAFETY: kill(2) on a process (or, negative, a process group) this harness started.
    let rc = unsafe { libc::kill(pid, sig) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Waits (polling, bounded) for `child` to exit.
fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn read_file(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One node of a [`Cluster`].
pub struct ClusterNode {
    pub spec: NodeSpec,
    config_path: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    /// Delivers the ready line's address of the current process.
    ready: Option<mpsc::Receiver<SocketAddr>>,
    starts: u32,
}

impl ClusterNode {
    pub fn id(&self) -> i32 {
        self.spec.id
    }

    pub fn addr(&self) -> SocketAddr {
        self.spec.kafka
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The node's combined stdout/stderr over all its starts.
    pub fn log(&self) -> String {
        read_file(&self.log_path)
    }

    /// Starts the process (on `data_dir` instead of the config's if given); does not wait.
    fn spawn(&mut self, data_dir: Option<&Path>) {
        assert!(
            self.child.is_none(),
            "node {} is already running",
            self.id()
        );
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open node log");
        writeln!(
            log,
            "===== e2e harness: start #{} of node {} (data dir {}) =====",
            self.starts,
            self.id(),
            data_dir.unwrap_or(&self.data_dir).display()
        )
        .expect("write node log");
        let mut cmd = Command::new(strait_bin());
        cmd.arg("broker").arg("--config").arg(&self.config_path);
        if let Some(dir) = data_dir {
            cmd.arg("--data-dir").arg(dir);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log.try_clone().expect("clone log handle")));
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", NODE_RUST_LOG);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn node {}: {e}", self.id()));
        // Reports this node's ready line.
        let stdout = child.stdout.take().expect("piped stdout");
        let id = self.id();
        let rx = super::drain_stdout(stdout, log, move |line| {
            strait::parse_broker_ready_line(line)
                .and_then(|(node, addr)| (node == id).then_some(addr))
        });
        self.child = Some(child);
        self.ready = Some(rx);
    }

    /// Waits for the ready line of the current process; panics (the log follows from Drop)
    /// if it exits or stays silent past `timeout`.
    fn wait_ready(&mut self, timeout: Duration) {
        let rx = self.ready.take().expect("node was not started");
        match rx.recv_timeout(timeout) {
            Ok(addr) => assert_eq!(
                addr,
                self.spec.kafka,
                "node {} listens on another address than its config says",
                self.id()
            ),
            Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                "node {} printed no ready line within {timeout:?}",
                self.id()
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = self
                    .child
                    .as_mut()
                    .and_then(|c| wait_exit(c, Duration::from_secs(5)));
                self.child = None;
                panic!(
                    "node {} exited before its ready line ({status:?})",
                    self.id()
                );
            }
        }
    }

    pub fn pid(&self) -> i32 {
        let child = self.child.as_ref().unwrap_or_else(|| {
            panic!("node {} is not running", self.spec.id);
        });
        child.id() as i32
    }
}

/// What became of a node process started where it should refuse to start.
#[derive(Debug)]
pub enum StartOutcome {
    /// It exited with this status before printing its ready line.
    Exited(ExitStatus),
    /// It printed its ready line: it joined a cluster (still running; killed on drop).
    Ready,
    /// Neither within the timeout (still running; killed on drop).
    StillStarting,
}

/// Three (or `n`) real `strait broker` processes forming one cluster on loopback.
pub struct Cluster {
    dir: TempDir,
    nodes: Vec<ClusterNode>,
}

impl Cluster {
    /// Starts `n` nodes on fresh ports and data directories; returns once every node printed
    /// its ready line (registered and unfenced by the active controller).
    pub fn start(n: usize) -> Cluster {
        let mut cluster = Cluster::new(n, "");
        cluster.start_all();
        cluster
    }

    /// Writes the configs of `n` nodes (with `extra_yaml`, top-level lines, in each) and
    /// starts nothing.
    pub fn new(n: usize, extra_yaml: &str) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("strait-e2e-cluster-")
            .tempdir()
            .expect("create cluster dir");
        let specs = node_specs(n);
        let configs = write_node_configs(dir.path(), &specs, extra_yaml);
        let nodes = specs
            .iter()
            .zip(configs)
            .map(|(spec, config_path)| ClusterNode {
                spec: *spec,
                config_path,
                data_dir: dir.path().join(format!("data/node-{}", spec.id)),
                log_path: dir.path().join(format!("node-{}.log", spec.id)),
                child: None,
                ready: None,
                starts: 0,
            })
            .collect();
        Cluster { dir, nodes }
    }

    /// Starts every node, all at once (a node is ready only once a majority of the voters
    /// runs), and waits for every ready line.
    pub fn start_all(&mut self) {
        for node in &mut self.nodes {
            node.spawn(None);
        }
        for node in &mut self.nodes {
            node.wait_ready(STARTUP_TIMEOUT);
        }
    }

    /// Starts node `id` on its own data directory without waiting for it.
    pub fn spawn(&mut self, id: i32) {
        self.node_mut(id).spawn(None);
    }

    /// The harness's directory (node configs, data, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn ids(&self) -> Vec<i32> {
        self.nodes.iter().map(|n| n.id()).collect()
    }

    pub fn node(&self, id: i32) -> &ClusterNode {
        self.nodes
            .iter()
            .find(|n| n.id() == id)
            .unwrap_or_else(|| panic!("no node {id} in this cluster"))
    }

    fn node_mut(&mut self, id: i32) -> &mut ClusterNode {
        self.nodes
            .iter_mut()
            .find(|n| n.id() == id)
            .unwrap_or_else(|| panic!("no node {id} in this cluster"))
    }

    /// Ids of the nodes whose process runs.
    pub fn running(&self) -> Vec<i32> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.id())
            .collect()
    }

    /// `bootstrap.servers` naming every running node.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.addr().to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Metadata (all topics) as node `id` answers it.
    pub fn try_metadata(&self, id: i32) -> Result<ClusterMetadata, String> {
        try_metadata(id, self.node(id).addr())
    }

    pub fn metadata(&self, id: i32) -> ClusterMetadata {
        self.try_metadata(id)
            .unwrap_or_else(|e| panic!("Metadata from node {id}: {e}"))
    }

    /// Polls node `id`'s Metadata every 50 ms until `cond` holds; panics with the last
    /// response after `timeout`.
    pub fn wait_metadata(
        &self,
        id: i32,
        what: &str,
        timeout: Duration,
        mut cond: impl FnMut(&ClusterMetadata) -> bool,
    ) -> ClusterMetadata {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.try_metadata(id) {
                Ok(md) if cond(&md) => return md,
                other => other,
            };
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what} in node {id}'s Metadata; last: {last:#?}"
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The active controller as node `id` reports it, once it reports one.
    pub fn controller_id(&self, id: i32) -> i32 {
        self.wait_metadata(id, "an active controller", OP_TIMEOUT, |md| {
            md.controller_id >= 0
        })
        .controller_id
    }

    /// SIGKILLs node `id` and reaps it.
    pub fn sigkill(&mut self, id: i32) {
        let node = self.node_mut(id);
        signal(node.pid(), libc::SIGKILL).expect("SIGKILL node");
        let child = node.child.as_mut().expect("running");
        assert!(
            wait_exit(child, Duration::from_secs(10)).is_some(),
            "node {id} did not die after SIGKILL"
        );
        node.child = None;
    }

    /// SIGTERMs node `id` and waits (bounded) for it to exit; returns its exit status.
    pub fn sigterm(&mut self, id: i32) -> ExitStatus {
        let node = self.node_mut(id);
        signal(node.pid(), libc::SIGTERM).expect("SIGTERM node");
        let child = node.child.as_mut().expect("running");
        let status = wait_exit(child, super::SHUTDOWN_TIMEOUT).unwrap_or_else(|| {
            panic!(
                "node {id} did not exit within {:?} after SIGTERM",
                super::SHUTDOWN_TIMEOUT
            )
        });
        node.child = None;
        status
    }

    /// Starts node `id` again with its config and data directory (same ports, so its peers
    /// find it) and waits for its ready line.
    pub fn restart(&mut self, id: i32) {
        let node = self.node_mut(id);
        node.spawn(None);
        node.wait_ready(STARTUP_TIMEOUT);
    }

    /// Starts node `id` with its config but on `data_dir`, for a start that should be refused,
    /// and waits up to `timeout` for it to exit or get ready.
    pub fn start_on_data_dir(
        &mut self,
        id: i32,
        data_dir: &Path,
        timeout: Duration,
    ) -> StartOutcome {
        self.spawn_on_data_dir(id, data_dir);
        self.start_outcome(id, timeout)
    }

    /// Starts node `id` with its config but on `data_dir`, without waiting.
    pub fn spawn_on_data_dir(&mut self, id: i32, data_dir: &Path) {
        self.node_mut(id).spawn(Some(data_dir));
    }

    /// Waits up to `timeout` for node `id`'s current process to exit or print its ready line.
    pub fn start_outcome(&mut self, id: i32, timeout: Duration) -> StartOutcome {
        let node = self.node_mut(id);
        let rx = node.ready.take().expect("node was not started");
        let deadline = Instant::now() + timeout;
        loop {
            if rx.try_recv().is_ok() {
                return StartOutcome::Ready;
            }
            let child = node.child.as_mut().expect("running");
            if let Some(status) = child.try_wait().expect("try_wait") {
                node.child = None;
                return StartOutcome::Exited(status);
            }
            if Instant::now() >= deadline {
                return StartOutcome::StillStarting;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The lines of node `id`'s log (all starts) that contain `needle`.
    pub fn log_lines(&self, id: i32, needle: &str) -> Vec<String> {
        self.node(id)
            .log()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = signal(child.id() as i32, libc::SIGKILL);
                let _ = child.wait();
            }
        }
        if thread::panicking() {
            // STRAIT_E2E_KEEP_LOGS=DIR keeps every node's whole log for a closer look.
            if let Some(keep) = std::env::var_os("STRAIT_E2E_KEEP_LOGS") {
                let keep = PathBuf::from(keep);
                let _ = std::fs::create_dir_all(&keep);
                for node in &self.nodes {
                    let name = format!("{}-node-{}.log", std::process::id(), node.id());
                    let _ = std::fs::copy(&node.log_path, keep.join(name));
                }
            }
            for node in &self.nodes {
                eprintln!(
                    "--- node {} log ({}), last {LOG_TAIL_LINES} lines ---\n{}\n--- end of node {} log ---",
                    node.id(),
                    node.log_path.display(),
                    tail(&node.log(), LOG_TAIL_LINES),
                    node.id()
                );
            }
        }
    }
}

/// `name: <name>` and `nodes: [...]` for the node files in `dir`.
pub fn write_cluster_file(dir: &Path, name: &str, node_files: &[PathBuf]) -> PathBuf {
    let nodes = node_files
        .iter()
        .map(|p| {
            let rel = p.strip_prefix(dir).unwrap_or(p);
            format!("  - {}\n", rel.display())
        })
        .collect::<String>();
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!("# Written by the end-to-end test harness.\nname: {name}\nnodes:\n{nodes}"),
    )
    .expect("write cluster file");
    path
}

/// A real supervisor process, `strait cluster` or `strait up`, in a process group of its own.
///
/// The supervisor puts each child in a process group of the child's own, so the group alone
/// does not reach them: every `started … (pid P)` line the supervisor prints (also nested ones,
/// `[site-a] strait cluster: started node 1 (pid P)`) is recorded as a [`TrackedProcess`], which
/// is how the harness tells whether anything is left and what to kill on drop.
pub struct SupervisorCommand {
    what: &'static str,
    child: Option<Child>,
    pgid: i32,
    log_path: PathBuf,
    stdout: Arc<Mutex<Vec<String>>>,
    started: Arc<Mutex<Vec<TrackedProcess>>>,
    _log_dir: TempDir,
}

impl SupervisorCommand {
    /// `strait cluster --config FILE EXTRA…`.
    pub fn cluster(cluster_file: &Path, extra_args: &[&str]) -> SupervisorCommand {
        let mut args: Vec<std::ffi::OsString> = vec!["cluster".into(), "--config".into()];
        args.push(cluster_file.into());
        args.extend(extra_args.iter().map(|a| a.into()));
        SupervisorCommand::spawn("strait cluster", &args)
    }

    /// `strait up ARGS…`.
    pub fn up(args: &[std::ffi::OsString]) -> SupervisorCommand {
        let mut all: Vec<std::ffi::OsString> = vec!["up".into()];
        all.extend(args.iter().cloned());
        SupervisorCommand::spawn("strait up", &all)
    }

    fn spawn(what: &'static str, args: &[std::ffi::OsString]) -> SupervisorCommand {
        let log_dir = tempfile::Builder::new()
            .prefix("strait-e2e-supervisor-")
            .tempdir()
            .expect("create log dir");
        let log_path = log_dir.path().join("supervisor.log");
        let log = File::create(&log_path).expect("create log");
        let mut cmd = Command::new(strait_bin());
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log.try_clone().expect("clone log handle")))
            .process_group(0);
        // No RUST_LOG of its own: the supervisors and their children log as a user sees them,
        // with the binary's default filter (tests assert that a clean run logs no ERROR).
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let pgid = child.id() as i32;
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let started = Arc::new(Mutex::new(Vec::new()));
        let (collected, tracked) = (lines.clone(), started.clone());
        let mut log_out = log;
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(log_out, "[stdout] {line}");
                if let Some(process) = started_pid(&line).and_then(TrackedProcess::of) {
                    tracked.lock().expect("tracked").push(process);
                }
                collected.lock().expect("stdout lines").push(line);
            }
        });
        SupervisorCommand {
            what,
            child: Some(child),
            pgid,
            log_path,
            stdout: lines,
            started,
            _log_dir: log_dir,
        }
    }

    /// Every stdout line so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().expect("stdout lines").clone()
    }

    /// The whole output (stderr, and stdout lines marked `[stdout]`).
    pub fn log(&self) -> String {
        read_file(&self.log_path)
    }

    /// Waits for the first stdout line satisfying `pred`; panics if the process exits first or
    /// `timeout` passes.
    pub fn wait_for_line(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let started = Instant::now();
        let name = self.what;
        wait_for(what, timeout, || {
            if let Some(line) = self.stdout_lines().into_iter().find(|l| pred(l)) {
                return Some(line);
            }
            let child = self.child.as_mut().expect("the supervisor was stopped");
            if let Some(status) = child.try_wait().expect("try_wait") {
                // Give the stdout thread a moment to collect the last lines.
                thread::sleep(Duration::from_millis(100));
                if let Some(line) = self.stdout_lines().into_iter().find(|l| pred(l)) {
                    return Some(line);
                }
                panic!(
                    "{name} exited ({status}) after {:?} before {what}",
                    started.elapsed()
                );
            }
            None
        })
    }

    /// Panics if the supervisor process has exited.
    pub fn assert_running(&mut self) {
        let child = self
            .child
            .as_mut()
            .expect("the supervisor was stopped by the test");
        if let Some(status) = child.try_wait().expect("try_wait") {
            self.child = None;
            panic!("{} exited unexpectedly ({status})", self.what);
        }
    }

    pub fn signal(&self, sig: i32) {
        signal(self.child.as_ref().expect("running").id() as i32, sig)
            .unwrap_or_else(|e| panic!("signal {}: {e}", self.what));
    }

    /// Waits (bounded) for the supervisor process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("the supervisor is not running");
        let status = wait_exit(child, timeout)
            .unwrap_or_else(|| panic!("{} did not exit within {timeout:?}", self.what));
        self.child = None;
        status
    }

    /// The processes the supervisor (or a nested one) said it started, in that order.
    pub fn started(&self) -> Vec<TrackedProcess> {
        self.started.lock().expect("tracked").clone()
    }

    /// The ERROR lines of the whole output (tracing's level column).
    pub fn error_lines(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(" ERROR "))
            .map(str::to_string)
            .collect()
    }

    /// Whether the supervisor or any process it (or a nested supervisor) started still runs.
    pub fn any_process_left(&self) -> bool {
        signal(-self.pgid, 0).is_ok() || self.started().iter().any(TrackedProcess::is_alive)
    }
}

impl Drop for SupervisorCommand {
    fn drop(&mut self) {
        let _ = signal(-self.pgid, libc::SIGKILL);
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        // The children have groups of their own (and would only get SIGTERM from the kernel
        // when their supervisor dies): kill each one this harness saw start.
        for process in self.started() {
            process.kill();
        }
        if thread::panicking() {
            eprintln!(
                "--- {} output ({}), last 150 lines ---\n{}\n--- end of {} output ---",
                self.what,
                self.log_path.display(),
                tail(&self.log(), 150),
                self.what
            );
        }
    }
}

/// The pid of a supervisor's `started NAME (pid P): …` line.
pub fn started_pid(line: &str) -> Option<i32> {
    let rest = line.split_once(": started ")?.1;
    let pid = rest.split_once(" (pid ")?.1.split_once(')')?.0;
    pid.parse().ok()
}

/// Writes a three-node site `name` in `root/name` (node files on fresh ports and the cluster
/// file `strait cluster` reads); returns the cluster file and the nodes.
pub fn write_site(root: &Path, name: &str) -> (PathBuf, Vec<NodeSpec>) {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("create the site directory");
    let specs = node_specs(3);
    let files = write_node_configs(&dir, &specs, "");
    (write_cluster_file(&dir, name, &files), specs)
}

/// The pid of node `node` from a `strait cluster` supervisor's `started node N (pid P)` line.
pub fn pid_of_node(lines: &[String], node: i32) -> i32 {
    let prefix = format!("strait cluster: started node {node} ");
    lines
        .iter()
        .filter(|l| l.starts_with(&prefix))
        .find_map(|l| started_pid(l))
        .unwrap_or_else(|| panic!("no `started node {node}` line in {lines:#?}"))
}

/// A process known by pid *and* start time (field 22 of `/proc/PID/stat`), so that a later
/// process that reuses the pid is never taken for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackedProcess {
    pub pid: i32,
    start_ticks: u64,
}

impl TrackedProcess {
    /// The process `pid` now; `None` if there is none (or only a zombie).
    pub fn of(pid: i32) -> Option<TrackedProcess> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name (field 2) is in parentheses and may contain spaces.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        // fields[0] is the state (field 3), fields[19] the start time (field 22).
        if fields.first() == Some(&"Z") {
            return None;
        }
        Some(TrackedProcess {
            pid,
            start_ticks: fields.get(19)?.parse().ok()?,
        })
    }

    /// Whether this very process still runs.
    pub fn is_alive(&self) -> bool {
        TrackedProcess::of(self.pid) == Some(*self)
    }

    /// SIGKILL, if this very process still runs.
    pub fn kill(&self) {
        if self.is_alive() {
            let _ = signal(self.pid, libc::SIGKILL);
        }
    }
}
