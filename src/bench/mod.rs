//! `strait bench`: measured figures, each against a reference taken in the same run.
//!
//! - [`produce`]: broker ingest against this machine's own sequential write rate.
//! - [`consume`]: a consumer group of three against one consumer with all partitions assigned.
//! - [`replication`]: acks=all produce to a three-node cluster with replication factor 3
//!   against the same load on a single node.
//! - [`mirror`]: `strait mirror` between two three-node sites against a `kcat | kcat` pipe
//!   between the same sites.
//! - [`failover`]: a planned failover's RTO between two three-node sites for a flow of many
//!   partitions and groups, against a limit.
//! - [`groups`]: how long the mirror takes to sync thousands of consumer groups, against
//!   two checkpoint intervals, and the daemon's threads and RSS against a client per group.
//! - [`takeover`]: how long a flow's partitions take to resume after the mirror is SIGKILLed
//!   mid-stream (reconciliation with the target's tail included) against a clean restart.
//! - [`wire`]: the broker's check of every count and length in a message against the decode
//!   it guards, in process.
//!
//! Every benchmark starts a fresh broker as a child process of this same binary on an
//! ephemeral loopback port, so it measures the real process a user runs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context};

pub mod consume;
pub mod failover;
pub mod groups;
pub mod mirror;
pub mod produce;
pub mod replication;
pub mod takeover;
pub mod wire;

pub use consume::{consume, ConsumeBenchArgs};
pub use failover::{failover, FailoverBenchArgs};
pub use groups::{groups, GroupsBenchArgs};
pub use mirror::{mirror, MirrorBenchArgs};
pub use produce::{produce, ProduceBenchArgs};
pub use replication::{replication, ReplicationBenchArgs};
pub use takeover::{takeover, TakeoverBenchArgs};
pub use wire::{wire, WireBenchArgs};

/// The bootstrap list of a cluster's nodes (`host:port,host:port,...`).
fn bootstrap_of(nodes: &[ChildBroker]) -> String {
    nodes
        .iter()
        .map(|n| n.bootstrap.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// The directory a benchmark keeps its data in: `dir` (created if missing), or a fresh temp
/// dir, removed when the returned guard is dropped.
fn work_dir(dir: Option<&Path>) -> anyhow::Result<(Option<tempfile::TempDir>, PathBuf)> {
    match dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            Ok((None, d.to_path_buf()))
        }
        None => {
            let temp = tempfile::tempdir().context("creating a temp dir")?;
            let path = temp.path().to_path_buf();
            Ok((Some(temp), path))
        }
    }
}

/// CPU time (user + system, all threads) process `pid` has used so far, in seconds, from
/// `/proc/<pid>/stat`; `None` where that file is unreadable (not Linux, process gone).
/// Linux reports it in USER_HZ ticks, which are 1/100 s on every architecture it runs on.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; the fields after it follow its `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// A broker child process that is killed when dropped.
struct ChildBroker {
    child: Child,
    bootstrap: String,
}

impl ChildBroker {
    /// CPU seconds the broker process has used so far (see [`cpu_seconds`]).
    fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(self.child.id())
    }

    /// Starts `strait broker` on `dir` with 256 MiB segments. `node_yaml` adds top-level config
    /// lines; `log_yaml` adds lines (indented two spaces) to the `log:` section.
    fn start(dir: &Path, node_yaml: &str, log_yaml: &str) -> anyhow::Result<ChildBroker> {
        let config = dir.join("bench-node.yaml");
        let yaml = format!(
            "node_id: 1\nlisten: 127.0.0.1:0\ndata_dir: broker-data\n{node_yaml}log:\n  segment_bytes: 268435456\n{log_yaml}"
        );
        std::fs::write(&config, yaml).with_context(|| format!("writing {}", config.display()))?;
        ChildBroker::spawn(&config)?.wait_ready()
    }

    /// Starts `strait broker --config config` without waiting for it to be ready (the nodes of
    /// a cluster get ready together, once a quorum of them runs).
    fn spawn(config: &Path) -> anyhow::Result<StartingBroker> {
        let exe = std::env::current_exe().context("locating the strait binary")?;
        let mut child = Command::new(exe)
            .args(["broker", "--config"])
            .arg(config)
            // openraft reports every slow heartbeat, which a saturated benchmark causes, and the
            // routine of forming a quorum as ERROR; the controller logs what matters.
            .env("RUST_LOG", "warn,openraft=off")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the broker")?;
        let stdout = child.stdout.take();
        Ok(StartingBroker {
            child: Some(child),
            stdout,
        })
    }
}

/// A broker child process that has not printed its ready line yet; killed when dropped.
struct StartingBroker {
    child: Option<Child>,
    stdout: Option<std::process::ChildStdout>,
}

impl StartingBroker {
    /// Reads the ready line (the broker's first line on stdout).
    fn wait_ready(mut self) -> anyhow::Result<ChildBroker> {
        let stdout = self.stdout.take().context("broker stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading the broker's ready line")?;
        let Some((_, addr)) = crate::parse_broker_ready_line(line.trim_end()) else {
            bail!("broker did not report its address; it printed: {line:?}");
        };
        let bootstrap = addr.to_string();
        let child = self.child.take().context("broker process")?;
        Ok(ChildBroker { child, bootstrap })
    }
}

impl Drop for StartingBroker {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ChildBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
