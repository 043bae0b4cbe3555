//! `strait cluster`: runs every node of a cluster file as a `strait broker` child process of
//! this same binary, forwards their output prefixed with `[node-N]`, says when the whole
//! cluster is up, and stops the nodes together.
//!
//! A cluster file names the cluster and lists node config files, relative to it:
//!
//! ```yaml
//! name: site-a
//! nodes: [site-a/node-1.yaml, site-a/node-2.yaml, site-a/node-3.yaml]
//! ```
//!
//! Everything about a node (ports, quorum voters, data directory) stays in its node file, so
//! a node can also be started alone with `strait broker --config`, and a test can write its
//! own files on free ports. The files are checked together before anything starts: distinct
//! node ids, listeners and data directories, and the same `controller_quorum_voters` in every
//! node, naming exactly the nodes of the file.
//!
//! The supervisor never restarts a node: a node that dies after startup is reported and the
//! others keep running (a quorum of three survives one loss).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;
use strait_broker::NodeConfig;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Most nodes one cluster file may list. Every node is a voter of the metadata quorum, and a
/// quorum of more than a handful of voters only slows commits down (KRaft recommends 3 or 5).
pub const NODES_PER_CLUSTER_MAX: usize = 9;
/// A node's output line longer than this is forwarded in pieces, so a runaway line cannot
/// grow the supervisor's memory.
const OUTPUT_LINE_BYTES_MAX: usize = 64 * 1024;
/// Lines waiting to be written to this process's stdout / stderr. When the queue is full the
/// readers wait, and with them the nodes' own writes, instead of memory growing.
const OUTPUT_LINES_QUEUED_MAX: usize = 1024;
/// How often waiting for the nodes is reported during startup.
const PROGRESS_INTERVAL_MS: u64 = 5_000;
/// How long a node that got SIGKILL may take to be reaped.
const KILL_WAIT_MS: u64 = 5_000;
/// How long a node's output is still forwarded after it exited, before its exit is reported.
const LAST_WORDS_WAIT_MS: u64 = 1_000;
/// How long, at the end, the output queue gets to drain.
const OUTPUT_DRAIN_WAIT_MS: u64 = 2_000;

/// `strait cluster`'s arguments.
#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// Cluster file (YAML) with `name` and `nodes`, the node config files relative to it, e.g.
    /// configs/site-a.yaml.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Keep node N's data in DIR/node-N instead of its node file's `data_dir`.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Stop every node and exit non-zero if some node is not up after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub startup_timeout_s: u64,
    /// After SIGTERM / Ctrl-C, how long the nodes get for their controlled shutdown before
    /// they are killed (SIGKILL).
    #[arg(long, value_name = "SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub shutdown_timeout_s: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterYaml {
    name: String,
    nodes: Vec<PathBuf>,
}

/// A cluster file, loaded and checked together with every node file it lists.
#[derive(Debug)]
pub struct ClusterFile {
    /// The file.
    pub path: PathBuf,
    /// The cluster's name (used in messages).
    pub name: String,
    /// The nodes, in the file's order.
    pub nodes: Vec<ClusterNode>,
}

/// One node of a cluster file.
#[derive(Debug)]
pub struct ClusterNode {
    /// The node config file, resolved against the cluster file's directory.
    pub config_path: PathBuf,
    /// The node config as `strait broker --config` reads it.
    pub config: NodeConfig,
}

impl ClusterFile {
    /// Reads a cluster file and every node file it lists, and checks that they form one
    /// cluster. Errors name the file (with line and column for YAML errors) and what to fix.
    pub fn load(path: &Path) -> anyhow::Result<ClusterFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read cluster file", path.display()))?;
        let yaml: ClusterYaml = serde_yaml::from_str(&text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            anyhow::anyhow!("{}:{line}:{column}: {e}", path.display())
        })?;
        let here = path.display();
        if yaml.name.is_empty()
            || !yaml
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            bail!(
                "{here}: name `{}` must be non-empty and use only letters, digits, `-`, `_` and `.`",
                yaml.name
            );
        }
        if yaml.nodes.is_empty() || yaml.nodes.len() > NODES_PER_CLUSTER_MAX {
            bail!(
                "{here}: `nodes` lists {} node files; a cluster has 1 to {NODES_PER_CLUSTER_MAX}",
                yaml.nodes.len()
            );
        }
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        let mut nodes = Vec::with_capacity(yaml.nodes.len());
        for (i, file) in yaml.nodes.iter().enumerate() {
            let config_path = base.join(file);
            let config = NodeConfig::load(&config_path)
                .with_context(|| format!("{here}: nodes[{i}] ({})", file.display()))?;
            nodes.push(ClusterNode {
                config_path,
                config,
            });
        }
        let cluster = ClusterFile {
            path: path.to_path_buf(),
            name: yaml.name,
            nodes,
        };
        cluster.check()?;
        Ok(cluster)
    }

    /// The nodes' ids, in the file's order.
    pub fn node_ids(&self) -> Vec<i32> {
        self.nodes.iter().map(|n| n.config.node_id).collect()
    }

    /// Everything that must hold across the node files for them to form one cluster.
    fn check(&self) -> anyhow::Result<()> {
        let here = self.path.display();
        let mut ids = BTreeSet::new();
        let mut listeners = BTreeMap::new();
        let mut data_dirs = BTreeMap::new();
        for node in &self.nodes {
            let c = &node.config;
            let file = node.config_path.display();
            if !ids.insert(c.node_id) {
                bail!("{here}: {file}: node_id {} is used by another node of the file; node ids must be distinct", c.node_id);
            }
            let mut addrs = vec![("listen", c.listen)];
            addrs.extend(
                c.controller_listen_addr()
                    .map(|a| ("controller listener", a)),
            );
            for (what, addr) in addrs.into_iter().filter(|(_, a)| a.port() != 0) {
                if let Some(other) = listeners.insert(addr, (c.node_id, what)) {
                    bail!(
                        "{here}: {file}: the {what} of node {} is {addr}, also the {} of node {}; every node needs its own ports",
                        c.node_id, other.1, other.0
                    );
                }
            }
            if let Some(other) = data_dirs.insert(c.data_dir.clone(), c.node_id) {
                bail!(
                    "{here}: {file}: node {} has data_dir {}, as node {other} does; every node needs its own directory",
                    c.node_id,
                    c.data_dir.display()
                );
            }
        }
        if self.nodes.len() == 1 {
            // One node: a one-node quorum of its own, with or without voters listed.
            return Ok(());
        }
        let mut first: Option<(&Path, Vec<(i32, SocketAddr)>)> = None;
        for node in &self.nodes {
            let file = node.config_path.as_path();
            let mut voters = node.config.quorum_voters().map_err(|e| {
                anyhow::anyhow!("{}: controller_quorum_voters: {e}", file.display())
            })?;
            voters.sort();
            let voter_ids: BTreeSet<i32> = voters.iter().map(|(id, _)| *id).collect();
            if voter_ids != ids {
                bail!(
                    "{here}: {}: controller_quorum_voters names nodes {voter_ids:?}, but the cluster file lists nodes {ids:?}; every node must list every node of the cluster as a voter",
                    file.display()
                );
            }
            match &first {
                None => first = Some((file, voters)),
                Some((first_file, first_voters)) if *first_voters != voters => bail!(
                    "{here}: {} and {} list different controller_quorum_voters; every node must list the same voters",
                    first_file.display(),
                    file.display()
                ),
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// What a node's tasks tell the supervisor.
#[derive(Debug)]
enum Event {
    /// The node printed its ready line.
    Ready { node: i32, addr: SocketAddr },
    /// The node's process ended.
    Exited {
        node: i32,
        status: std::io::Result<ExitStatus>,
    },
}

/// What the supervisor tells a node's watcher.
#[derive(Debug, Clone, Copy)]
enum Order {
    /// SIGTERM: controlled shutdown.
    Terminate,
    /// SIGKILL.
    Kill,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum NodeState {
    Starting,
    Ready(SocketAddr),
    /// Sent SIGTERM. A node that was not up yet has no handler for it and dies of it, which
    /// is expected; a node that was up must exit 0 after its controlled shutdown.
    Stopping {
        was_up: bool,
    },
    Exited,
}

/// A node process under supervision.
struct Supervised {
    /// The arguments it was started with, for the "start it again" hint.
    broker_args: String,
    orders: mpsc::Sender<Order>,
    state: NodeState,
}

/// A line for this process's stdout or stderr.
struct OutLine {
    to_stderr: bool,
    text: String,
}

/// Writes every line of the supervisor and its nodes, in the order they were queued, from a
/// thread of its own (a slow terminal or pipe blocks that thread, not the runtime).
struct Output {
    lines: mpsc::Sender<OutLine>,
    writer: std::thread::JoinHandle<()>,
}

impl Output {
    fn start() -> anyhow::Result<Output> {
        let (lines, mut rx) = mpsc::channel::<OutLine>(OUTPUT_LINES_QUEUED_MAX);
        let writer = std::thread::Builder::new()
            .name("cluster-output".to_string())
            .spawn(move || {
                use std::io::Write;
                while let Some(line) = rx.blocking_recv() {
                    // A closed stdout/stderr (e.g. `| head`) must not stop the supervisor;
                    // the line is lost, the nodes keep running.
                    let _ = if line.to_stderr {
                        writeln!(std::io::stderr().lock(), "{}", line.text)
                    } else {
                        writeln!(std::io::stdout().lock(), "{}", line.text)
                    };
                }
            })
            .context("starting the output thread")?;
        Ok(Output { lines, writer })
    }

    /// A supervisor line on stdout.
    async fn say(&self, text: impl std::fmt::Display) {
        let text = format!("strait cluster: {text}");
        let _ = self
            .lines
            .send(OutLine {
                to_stderr: false,
                text,
            })
            .await;
    }

    /// A supervisor line on stderr (something went wrong).
    async fn warn(&self, text: impl std::fmt::Display) {
        let text = format!("strait cluster: {text}");
        let _ = self
            .lines
            .send(OutLine {
                to_stderr: true,
                text,
            })
            .await;
    }

    /// Closes the queue and waits (bounded) until the writer has written what was queued.
    async fn finish(self) {
        let Output { lines, writer } = self;
        drop(lines);
        let deadline = Instant::now() + Duration::from_millis(OUTPUT_DRAIN_WAIT_MS);
        // Readers of nodes that did not close their pipes may still hold a sender: wait for
        // the queue to drain, not for every sender to go.
        while !writer.is_finished() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Reads one line (up to and including `\n`) of at most `max_bytes` into `buf`; returns the
/// bytes read, 0 at end of stream.
async fn read_line_bounded<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max_bytes: usize,
) -> std::io::Result<usize> {
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(buf.len());
        }
        let room = max_bytes.saturating_sub(buf.len());
        let window = &available[..available.len().min(room)];
        let (take, done) = match window.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (window.len(), buf.len() + window.len() >= max_bytes),
        };
        buf.extend_from_slice(&window[..take]);
        reader.consume(take);
        if done {
            return Ok(buf.len());
        }
    }
}

/// Forwards one output stream of node `node`, each line prefixed with `[node-N]`; on stdout
/// it also watches for the node's ready line.
async fn forward_output<R: AsyncRead + Unpin>(
    node: i32,
    stream: R,
    to_stderr: bool,
    lines: mpsc::Sender<OutLine>,
    events: mpsc::Sender<Event>,
) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    let mut ready_seen = to_stderr;
    loop {
        buf.clear();
        match read_line_bounded(&mut reader, &mut buf, OUTPUT_LINE_BYTES_MAX).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                let text = format!("strait cluster: reading the output of node {node}: {e}");
                let _ = lines.send(OutLine { to_stderr, text }).await;
                return;
            }
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\n', '\r']);
        let ready = if ready_seen {
            None
        } else {
            crate::parse_broker_ready_line(line).filter(|(id, _)| *id == node)
        };
        let text = format!("[node-{node}] {line}");
        let _ = lines.send(OutLine { to_stderr, text }).await;
        // After the forwarded line, so the supervisor's own "ready" line comes after it.
        if let Some((_, addr)) = ready {
            ready_seen = true;
            let _ = events.send(Event::Ready { node, addr }).await;
        }
    }
}

/// Owns node `node`'s process: signals it on order, reaps it, and reports its exit once its
/// last output has been forwarded.
async fn watch_node(
    node: i32,
    mut child: Child,
    mut orders: mpsc::Receiver<Order>,
    readers: Vec<JoinHandle<()>>,
    events: mpsc::Sender<Event>,
) {
    let status = loop {
        tokio::select! {
            // Cancel-safe: a select that takes an order polls `wait` again next time.
            status = child.wait() => break status,
            order = orders.recv() => match order {
                Some(Order::Terminate) => {
                    // `id()` is `None` once reaped, and only this task reaps, so the pid
                    // cannot belong to another process yet.
                    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                        // SAFETY: kill(2) on our own child, not reaped yet (see above).
                        unsafe { libc::kill(pid, libc::SIGTERM) };
                    }
                }
                Some(Order::Kill) => {
                    let _ = child.start_kill();
                }
                // The supervisor is gone; nothing will order anything any more.
                None => break child.wait().await,
            },
        }
    };
    for reader in readers {
        let _ = tokio::time::timeout(Duration::from_millis(LAST_WORDS_WAIT_MS), reader).await;
    }
    let _ = events.send(Event::Exited { node, status }).await;
}

/// Makes the child receive SIGTERM (a controlled shutdown) when the supervisor dies, even by
/// SIGKILL, so no node outlives it unnoticed. Linux only; elsewhere nodes survive a killed
/// supervisor and must be stopped by hand.
///
/// The signal is tied to the *thread* that spawned the child: nodes must be spawned from the
/// thread that lives as long as the supervisor (the `block_on` thread, which `run` runs on),
/// never from a `spawn_blocking` thread, which exits when idle.
#[cfg(target_os = "linux")]
fn die_with_supervisor(command: &mut Command) {
    let supervisor = i32::try_from(std::process::id()).unwrap_or(0);
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe
    // functions (prctl, getppid), allocating nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The supervisor died before prctl: the signal would never come. (ESRCH, "no such
            // process": an error value that needs no allocation here.)
            if libc::getppid() != supervisor {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_supervisor(_command: &mut Command) {}

/// The supervisor: the nodes of one cluster file and its state.
struct Supervisor {
    name: String,
    nodes: BTreeMap<i32, Supervised>,
    /// Node ids in the cluster file's order.
    order: Vec<i32>,
    events: mpsc::Receiver<Event>,
    events_tx: mpsc::Sender<Event>,
    out: Output,
}

impl Supervisor {
    /// Starts `strait broker` for `node` (from the thread `run` is polled on; see
    /// [`die_with_supervisor`]).
    async fn spawn(
        &mut self,
        exe: &Path,
        node: &ClusterNode,
        data_root: Option<&Path>,
    ) -> anyhow::Result<()> {
        let id = node.config.node_id;
        let mut command = Command::new(exe);
        command.arg("broker").arg("--config").arg(&node.config_path);
        let mut broker_args = format!("--config {}", node.config_path.display());
        let data_dir = match data_root {
            Some(root) => {
                let dir = root.join(format!("node-{id}"));
                command.arg("--data-dir").arg(&dir);
                broker_args.push_str(&format!(" --data-dir {}", dir.display()));
                dir
            }
            None => node.config.data_dir.clone(),
        };
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Only if the supervisor unwinds without stopping it; `stop_all` is the normal way.
            .kill_on_drop(true);
        die_with_supervisor(&mut command);
        let mut child = command.spawn().with_context(|| {
            format!(
                "starting node {id}: {} broker --config {}",
                exe.display(),
                node.config_path.display()
            )
        })?;
        let pid = child.id().unwrap_or(0);
        let mut readers = Vec::with_capacity(2);
        if let Some(stdout) = child.stdout.take() {
            readers.push(tokio::spawn(forward_output(
                id,
                stdout,
                false,
                self.out.lines.clone(),
                self.events_tx.clone(),
            )));
        }
        if let Some(stderr) = child.stderr.take() {
            readers.push(tokio::spawn(forward_output(
                id,
                stderr,
                true,
                self.out.lines.clone(),
                self.events_tx.clone(),
            )));
        }
        // Two orders at most matter (SIGTERM, then SIGKILL); a few more may queue harmlessly.
        let (orders, orders_rx) = mpsc::channel(4);
        tokio::spawn(watch_node(
            id,
            child,
            orders_rx,
            readers,
            self.events_tx.clone(),
        ));
        self.out
            .say(format_args!(
                "started node {id} (pid {pid}): config {}, data dir {}",
                node.config_path.display(),
                data_dir.display()
            ))
            .await;
        self.nodes.insert(
            id,
            Supervised {
                broker_args,
                orders,
                state: NodeState::Starting,
            },
        );
        self.order.push(id);
        Ok(())
    }

    fn ids_in(&self, pred: impl Fn(NodeState) -> bool) -> Vec<i32> {
        self.order
            .iter()
            .copied()
            .filter(|id| self.nodes.get(id).is_some_and(|n| pred(n.state)))
            .collect()
    }

    fn list(ids: &[i32]) -> String {
        ids.iter()
            .map(|id| format!("node {id}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Waits until every node printed its ready line. Fails if a node exits first, the
    /// deadline passes or a shutdown signal comes; the caller then stops the rest.
    async fn wait_ready(
        &mut self,
        timeout: Duration,
        shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> anyhow::Result<Vec<SocketAddr>> {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut progress = tokio::time::interval_at(
            started + Duration::from_millis(PROGRESS_INTERVAL_MS),
            Duration::from_millis(PROGRESS_INTERVAL_MS),
        );
        loop {
            let waiting = self.ids_in(|s| s == NodeState::Starting);
            if waiting.is_empty() {
                break;
            }
            tokio::select! {
                _ = shutdown.as_mut() => bail!("{}: interrupted before every node was up", self.name),
                _ = tokio::time::sleep_until(deadline) => bail!(
                    "{}: {} not up within {} s (see the [node-N] lines above; a node is up once a majority of controller_quorum_voters runs and the active controller has unfenced it)",
                    self.name, Self::list(&waiting), timeout.as_secs()
                ),
                _ = progress.tick() => {
                    let ready = self.ids_in(|s| matches!(s, NodeState::Ready(_)));
                    self.out.say(format_args!(
                        "{}: waiting for {} ({} s; up: {}); a node is up once a majority of the quorum voters runs and the active controller has unfenced it",
                        self.name,
                        Self::list(&waiting),
                        started.elapsed().as_secs(),
                        if ready.is_empty() { "none".to_string() } else { Self::list(&ready) },
                    )).await;
                }
                event = self.events.recv() => match event {
                    Some(Event::Ready { node, addr }) => {
                        if let Some(n) = self.nodes.get_mut(&node) {
                            n.state = NodeState::Ready(addr);
                        }
                    }
                    Some(Event::Exited { node, status }) => {
                        if let Some(n) = self.nodes.get_mut(&node) {
                            n.state = NodeState::Exited;
                        }
                        bail!(
                            "{}: node {node} exited during startup ({}); its output is above, prefixed [node-{node}]",
                            self.name, describe(&status)
                        );
                    }
                    // Unreachable while `self` holds a sender.
                    None => bail!("{}: lost track of the nodes", self.name),
                },
            }
        }
        Ok(self
            .order
            .iter()
            .filter_map(|id| match self.nodes.get(id).map(|n| n.state) {
                Some(NodeState::Ready(addr)) => Some(addr),
                _ => None,
            })
            .collect())
    }

    /// Runs until a shutdown signal. A node that dies is reported, the others keep running;
    /// fails only once every node is gone.
    async fn supervise(
        &mut self,
        shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> anyhow::Result<()> {
        loop {
            tokio::select! {
                _ = shutdown.as_mut() => return Ok(()),
                event = self.events.recv() => match event {
                    Some(Event::Exited { node, status }) => {
                        let broker_args = match self.nodes.get_mut(&node) {
                            Some(n) => {
                                n.state = NodeState::Exited;
                                n.broker_args.clone()
                            }
                            None => String::new(),
                        };
                        let alive = self.ids_in(|s| matches!(s, NodeState::Ready(_)));
                        if alive.is_empty() {
                            bail!("{}: node {node} exited ({}) and no node of the cluster is left", self.name, describe(&status));
                        }
                        self.out.warn(format_args!(
                            "NODE {node} OF {} EXITED ({}); {} keep running without it (a quorum needs a majority of the nodes). Its output is above, prefixed [node-{node}]; start it again with `strait broker {broker_args}`",
                            self.name, describe(&status), Self::list(&alive)
                        )).await;
                    }
                    Some(Event::Ready { .. }) => {}
                    None => bail!("{}: lost track of the nodes", self.name),
                },
            }
        }
    }

    /// Sends SIGTERM to every node still running, waits up to `timeout` for them to exit, then
    /// SIGKILLs the rest. Returns what went wrong (a node that did not exit 0 or had to be
    /// killed); empty means every node stopped cleanly.
    async fn stop_all(&mut self, timeout: Duration) -> Vec<String> {
        let mut problems = Vec::new();
        let running = self.ids_in(|s| s != NodeState::Exited);
        if running.is_empty() {
            return problems;
        }
        self.out
            .say(format_args!(
                "{}: stopping {} (SIGTERM: controlled shutdown, up to {} s)",
                self.name,
                Self::list(&running),
                timeout.as_secs()
            ))
            .await;
        for id in &running {
            if let Some(n) = self.nodes.get_mut(id) {
                n.state = NodeState::Stopping {
                    was_up: matches!(n.state, NodeState::Ready(_)),
                };
                let _ = n.orders.try_send(Order::Terminate);
            }
        }
        let deadline = Instant::now() + timeout;
        let mut killed = false;
        loop {
            let stopping = self.ids_in(|s| matches!(s, NodeState::Stopping { .. }));
            if stopping.is_empty() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline), if !killed => {
                    problems.push(format!(
                        "{} did not stop within {} s after SIGTERM and got SIGKILL",
                        Self::list(&stopping), timeout.as_secs()
                    ));
                    self.out.warn(&problems[problems.len() - 1]).await;
                    for id in &stopping {
                        if let Some(n) = self.nodes.get(id) {
                            let _ = n.orders.try_send(Order::Kill);
                        }
                    }
                    killed = true;
                }
                _ = tokio::time::sleep_until(deadline + Duration::from_millis(KILL_WAIT_MS)), if killed => {
                    problems.push(format!("{} still running after SIGKILL", Self::list(&stopping)));
                    break;
                }
                event = self.events.recv() => match event {
                    Some(Event::Exited { node, status }) => {
                        let was_up = match self.nodes.get_mut(&node) {
                            Some(n) => {
                                let was_up = matches!(n.state, NodeState::Stopping { was_up: true });
                                n.state = NodeState::Exited;
                                was_up
                            }
                            None => false,
                        };
                        let clean = matches!(&status, Ok(s) if s.success());
                        if clean {
                            self.out.say(format_args!("node {node} stopped ({})", describe(&status))).await;
                        } else if !was_up && !killed {
                            self.out.say(format_args!("node {node} stopped before it was up ({})", describe(&status))).await;
                        } else if !killed {
                            problems.push(format!("node {node} exited with {} after SIGTERM", describe(&status)));
                            self.out.warn(&problems[problems.len() - 1]).await;
                        }
                    }
                    Some(Event::Ready { .. }) => {}
                    None => break,
                },
            }
        }
        problems
    }
}

fn describe(status: &std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("its status is unknown: {e}"),
    }
}

/// `strait cluster`: starts every node of the cluster file, waits until all are up, prints
/// one ready line with the bootstrap addresses, supervises until SIGTERM / Ctrl-C, then stops
/// every node (controlled shutdown) and returns. Fails, after stopping whatever runs, if a node
/// exits or is not up in time during startup, or if a node does not stop cleanly.
///
/// Must be polled on a thread that lives as long as the supervisor (see
/// [`die_with_supervisor`]): `Runtime::block_on(run(args))` does that.
pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let cluster = ClusterFile::load(&args.config)?;
    let exe =
        std::env::current_exe().context("locating the strait binary to start the nodes with")?;
    let (events_tx, events) = mpsc::channel(64);
    let mut sup = Supervisor {
        name: cluster.name.clone(),
        nodes: BTreeMap::new(),
        order: Vec::new(),
        events,
        events_tx,
        out: Output::start()?,
    };
    // Installed before the first node starts, so a SIGTERM or Ctrl-C during startup stops
    // the nodes instead of killing the supervisor and leaving them behind.
    let shutdown = crate::shutdown_signal();
    tokio::pin!(shutdown);

    sup.out
        .say(format_args!(
            "{}: starting {} nodes from {}",
            cluster.name,
            cluster.nodes.len(),
            cluster.path.display()
        ))
        .await;
    let mut started: anyhow::Result<Vec<SocketAddr>> = Ok(Vec::new());
    for node in &cluster.nodes {
        if let Err(e) = sup.spawn(&exe, node, args.data_dir.as_deref()).await {
            started = Err(e);
            break;
        }
    }
    if started.is_ok() {
        started = sup
            .wait_ready(Duration::from_secs(args.startup_timeout_s), &mut shutdown)
            .await;
    }
    let shutdown_timeout = Duration::from_secs(args.shutdown_timeout_s);
    let addrs = match started {
        Ok(addrs) => addrs,
        Err(e) => {
            sup.out
                .warn(format_args!("{e:#}; stopping the other nodes"))
                .await;
            sup.stop_all(shutdown_timeout).await;
            sup.out.finish().await;
            return Err(e);
        }
    };
    let bootstrap = addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",");
    sup.out
        .say(format_args!(
            "{} ready: {} nodes, bootstrap {bootstrap}",
            cluster.name,
            addrs.len()
        ))
        .await;

    let supervised = sup.supervise(&mut shutdown).await;
    let problems = sup.stop_all(shutdown_timeout).await;
    if supervised.is_ok() && problems.is_empty() {
        sup.out.say(format_args!("{} stopped", cluster.name)).await;
    }
    sup.out.finish().await;
    supervised?;
    if !problems.is_empty() {
        bail!("{}: {}", cluster.name, problems.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn node_yaml(id: i32, voters: &str) -> String {
        format!(
            "node_id: {id}\nlisten: 127.0.0.1:{}\ndata_dir: d{id}\ncontroller_quorum_voters: \"{voters}\"\n",
            29_000 + id
        )
    }

    const VOTERS: &str = "1@127.0.0.1:29101,2@127.0.0.1:29102,3@127.0.0.1:29103";

    fn three_nodes(dir: &Path) {
        for id in 1..=3 {
            write(dir, &format!("n{id}.yaml"), &node_yaml(id, VOTERS));
        }
    }

    #[test]
    fn a_cluster_file_loads_its_nodes_relative_to_itself() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("nodes")).unwrap();
        three_nodes(&dir.path().join("nodes"));
        let path = write(
            dir.path(),
            "c.yaml",
            "name: c\nnodes: [nodes/n1.yaml, nodes/n2.yaml, nodes/n3.yaml]\n",
        );
        let c = ClusterFile::load(&path).unwrap();
        assert_eq!(c.name, "c");
        assert_eq!(c.node_ids(), vec![1, 2, 3]);
        assert_eq!(c.nodes[1].config.data_dir, dir.path().join("nodes/d2"));
    }

    #[test]
    fn unknown_key_is_reported_with_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        three_nodes(dir.path());
        let path = write(
            dir.path(),
            "c.yaml",
            "name: c\nnodes: [n1.yaml]\nport_offset: 3\n",
        );
        let err = format!("{:#}", ClusterFile::load(&path).unwrap_err());
        assert!(
            err.starts_with(&format!(
                "{}:3:1: unknown field `port_offset`",
                path.display()
            )),
            "{err}"
        );
    }

    #[test]
    fn a_node_file_error_names_both_files() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "n1.yaml",
            "node_id: 1\nlisten: nope\ndata_dir: d\n",
        );
        let path = write(dir.path(), "c.yaml", "name: c\nnodes: [n1.yaml]\n");
        let err = format!("{:#}", ClusterFile::load(&path).unwrap_err());
        assert!(err.contains("c.yaml: nodes[0] (n1.yaml)"), "{err}");
        assert!(err.contains("n1.yaml:2:"), "{err}");
    }

    #[test]
    fn nodes_must_agree_on_the_voters() {
        let dir = tempfile::tempdir().unwrap();
        three_nodes(dir.path());
        write(
            dir.path(),
            "n3.yaml",
            &node_yaml(3, "1@127.0.0.1:29101,3@127.0.0.1:29103,4@127.0.0.1:29104"),
        );
        let path = write(
            dir.path(),
            "c.yaml",
            "name: c\nnodes: [n1.yaml, n2.yaml, n3.yaml]\n",
        );
        let err = format!("{:#}", ClusterFile::load(&path).unwrap_err());
        assert!(
            err.contains("controller_quorum_voters names nodes {1, 3, 4}"),
            "{err}"
        );

        write(
            dir.path(),
            "n3.yaml",
            &node_yaml(3, "1@127.0.0.1:29101,2@127.0.0.1:29102,3@127.0.0.1:29109"),
        );
        let err = format!("{:#}", ClusterFile::load(&path).unwrap_err());
        assert!(
            err.contains("list different controller_quorum_voters"),
            "{err}"
        );
    }

    #[test]
    fn nodes_need_their_own_ids_ports_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        three_nodes(dir.path());
        let path = write(
            dir.path(),
            "c.yaml",
            "name: c\nnodes: [n1.yaml, n2.yaml, n1.yaml]\n",
        );
        let err = format!("{:#}", ClusterFile::load(&path).unwrap_err());
        assert!(err.contains("node_id 1 is used by another node"), "{err}");

        write(
            dir.path(),
            "n2.yaml",
            &node_yaml(2, VOTERS).replace("29002", "29001"),
        );
        let path = write(
            dir.path(),
            "c.yaml",
            "name: c\nnodes: [n1.yaml, n2.yaml, n3.yaml]\n",
        );
        let err = format!("{:#}", ClusterFile::load(&path).unwrap_err());
        assert!(
            err.contains("the listen of node 2 is 127.0.0.1:29001, also the listen of node 1"),
            "{err}"
        );

        write(
            dir.path(),
            "n2.yaml",
            &node_yaml(2, VOTERS).replace("data_dir: d2", "data_dir: d3"),
        );
        let err = format!("{:#}", ClusterFile::load(&path).unwrap_err());
        assert!(
            err.contains("as node 2 does; every node needs its own directory"),
            "{err}"
        );
    }

    #[test]
    fn empty_and_oversized_clusters_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "c.yaml", "name: c\nnodes: []\n");
        let err = format!("{:#}", ClusterFile::load(&path).unwrap_err());
        assert!(err.contains("a cluster has 1 to 9"), "{err}");
        let path = write(dir.path(), "c.yaml", "name: 'a b'\nnodes: [x.yaml]\n");
        let err = format!("{:#}", ClusterFile::load(&path).unwrap_err());
        assert!(err.contains("name `a b`"), "{err}");
    }

    #[tokio::test]
    async fn long_lines_are_split_and_the_rest_is_kept() {
        let text = format!("{}\nshort\nlast", "x".repeat(10));
        let mut reader = BufReader::with_capacity(3, text.as_bytes());
        let mut lines = Vec::new();
        loop {
            let mut buf = Vec::new();
            if read_line_bounded(&mut reader, &mut buf, 4).await.unwrap() == 0 {
                break;
            }
            lines.push(String::from_utf8(buf).unwrap());
        }
        assert_eq!(lines, ["xxxx", "xxxx", "xx\n", "shor", "t\n", "last"]);
    }
}
