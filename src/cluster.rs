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
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;
use strait_broker::NodeConfig;

use crate::supervise::{ChildSpec, Supervisor};

/// Most nodes one cluster file may list. Every node is a voter of the metadata quorum, and a
/// quorum of more than a handful of voters only slows commits down (KRaft recommends 3 or 5).
pub const NODES_PER_CLUSTER_MAX: usize = 9;

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
        strait_yaml::limits::check(&text).map_err(|e| {
            anyhow::anyhow!("{}:{}:{}: {}", path.display(), e.line, e.column, e.reason)
        })?;
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

/// Said while waiting for the nodes: what it takes for a node to be up.
const UP_HINT: &str = "a node is up once a majority of controller_quorum_voters runs and the active controller has unfenced it";

/// The `strait broker` child for `node`, with its data in `data_root/node-N` if given.
fn node_spec(node: &ClusterNode, data_root: Option<&Path>) -> ChildSpec {
    let id = node.config.node_id;
    let mut args: Vec<OsString> = vec![
        "broker".into(),
        "--config".into(),
        node.config_path.clone().into(),
    ];
    let data_dir = match data_root {
        Some(root) => {
            let dir = root.join(format!("node-{id}"));
            args.push("--data-dir".into());
            args.push(dir.clone().into());
            dir
        }
        None => node.config.data_dir.clone(),
    };
    ChildSpec {
        label: format!("node-{id}"),
        display: format!("node {id}"),
        args,
        details: format!(
            "config {}, data dir {}",
            node.config_path.display(),
            data_dir.display()
        ),
        ready: Arc::new(move |line: &str| {
            crate::parse_broker_ready_line(line)
                .filter(|(ready_id, _)| *ready_id == id)
                .map(|(_, addr)| addr.to_string())
        }),
        env: Vec::new(),
    }
}

/// The line `strait cluster` prints once every node is up.
pub fn ready_line(name: &str, bootstrap: &[String]) -> String {
    format!(
        "strait cluster: {name} ready: {} nodes, bootstrap {}",
        bootstrap.len(),
        bootstrap.join(",")
    )
}

/// The cluster name and bootstrap servers of a [`ready_line`]; `None` for any other line.
pub fn parse_ready_line(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix("strait cluster: ")?;
    let (name, rest) = rest.split_once(" ready: ")?;
    let (_, bootstrap) = rest.split_once(" nodes, bootstrap ")?;
    Some((name.to_string(), bootstrap.to_string()))
}

/// `strait cluster`: starts every node of the cluster file, waits until all are up, prints
/// one ready line with the bootstrap addresses, supervises until SIGTERM / Ctrl-C, then stops
/// every node (controlled shutdown) and returns. Fails, after stopping whatever runs, if a node
/// exits or is not up in time during startup, or if a node does not stop cleanly.
///
/// Must be polled on a thread that lives as long as the supervisor (see
/// [`crate::supervise`]): `Runtime::block_on(run(args))` does that.
pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let cluster = ClusterFile::load(&args.config)?;
    let mut sup = Supervisor::new(
        "strait cluster",
        &cluster.name,
        " (a quorum needs a majority of the nodes)",
    )?;
    // Installed before the first node starts, so a SIGTERM or Ctrl-C during startup stops
    // the nodes instead of killing the supervisor and leaving them behind.
    let shutdown = crate::shutdown_signal();
    tokio::pin!(shutdown);

    sup.say(format_args!(
        "{}: starting {} nodes from {}",
        cluster.name,
        cluster.nodes.len(),
        cluster.path.display()
    ))
    .await;
    let mut started: anyhow::Result<Vec<String>> = Ok(Vec::new());
    for node in &cluster.nodes {
        if let Err(e) = sup.spawn(node_spec(node, args.data_dir.as_deref())).await {
            started = Err(e);
            break;
        }
    }
    if started.is_ok() {
        started = sup
            .wait_ready(
                Duration::from_secs(args.startup_timeout_s),
                UP_HINT,
                &mut shutdown,
            )
            .await;
    }
    let shutdown_timeout = Duration::from_secs(args.shutdown_timeout_s);
    let addrs = match started {
        Ok(addrs) => addrs,
        Err(e) => {
            sup.warn(format_args!("{e:#}; stopping the other nodes"))
                .await;
            sup.stop(None, shutdown_timeout).await;
            sup.finish().await;
            return Err(e);
        }
    };
    // Through the supervisor's queue, so it comes after the nodes' lines queued before it.
    let line = ready_line(&cluster.name, &addrs);
    sup.say(line.strip_prefix("strait cluster: ").unwrap_or(&line))
        .await;

    let supervised = sup.supervise(&mut shutdown).await;
    let problems = sup.stop(None, shutdown_timeout).await;
    if supervised.is_ok() && problems.is_empty() {
        sup.say(format_args!("{} stopped", cluster.name)).await;
    }
    sup.finish().await;
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
    fn the_ready_line_parses_back() {
        let bootstrap = ["127.0.0.1:1".to_string(), "127.0.0.1:2".to_string()];
        let line = ready_line("site-a", &bootstrap);
        assert_eq!(
            parse_ready_line(&line),
            Some(("site-a".to_string(), "127.0.0.1:1,127.0.0.1:2".to_string()))
        );
        assert_eq!(parse_ready_line(&format!("[site-a] {line}")), None);
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
}
