//! `strait bench`: measured figures, each against a reference taken in the same run.
//!
//! - [`produce`]: broker ingest against this machine's own sequential write rate.
//! - [`consume`]: a consumer group of three against one consumer with all partitions assigned.
//!
//! Every benchmark starts a fresh broker as a child process of this same binary on an
//! ephemeral loopback port, so it measures the real process a user runs.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context};

pub mod consume;
pub mod produce;

pub use consume::{consume, ConsumeBenchArgs};
pub use produce::{produce, ProduceBenchArgs};

/// A broker child process that is killed when dropped.
struct ChildBroker {
    child: Child,
    bootstrap: String,
}

impl ChildBroker {
    /// Starts `strait broker` on `dir` with 256 MiB segments. `node_yaml` adds top-level config
    /// lines; `log_yaml` adds lines (indented two spaces) to the `log:` section.
    fn start(dir: &Path, node_yaml: &str, log_yaml: &str) -> anyhow::Result<ChildBroker> {
        let config = dir.join("bench-node.yaml");
        let yaml = format!(
            "node_id: 1\nlisten: 127.0.0.1:0\ndata_dir: broker-data\n{node_yaml}log:\n  segment_bytes: 268435456\n{log_yaml}"
        );
        std::fs::write(&config, yaml).with_context(|| format!("writing {}", config.display()))?;
        let exe = std::env::current_exe().context("locating the strait binary")?;
        let mut child = Command::new(exe)
            .args(["broker", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the broker")?;
        let stdout = child.stdout.take().context("broker stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading the broker's ready line")?;
        let Some(addr) = line.split("listening on ").nth(1) else {
            let _ = child.kill();
            bail!("broker did not report its address; it printed: {line:?}");
        };
        let bootstrap = addr.split(',').next().unwrap_or(addr).trim().to_string();
        Ok(ChildBroker { child, bootstrap })
    }
}

impl Drop for ChildBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
