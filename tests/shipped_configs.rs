//! Every config file shipped in `configs/` loads the way `strait broker --config` and
//! `strait cluster --config` read it. Parsing and validation only: nothing binds a port, so
//! this runs anywhere, also while the shipped ports are taken.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use strait::cluster::ClusterFile;
use strait_broker::NodeConfig;

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("configs")
}

/// Every `*.yaml` below `configs/`.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn top_level_key(path: &Path, key: &str) -> bool {
    let text = std::fs::read_to_string(path).expect("read config");
    let value: serde_yaml::Value =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    value.get(key).is_some()
}

/// A cluster file is a mapping with a `nodes` key.
fn is_cluster_file(path: &Path) -> bool {
    top_level_key(path, "nodes")
}

/// A mirror config is a mapping with a `flows` key.
fn is_mirror_file(path: &Path) -> bool {
    top_level_key(path, "flows")
}

#[test]
fn every_shipped_node_config_loads() {
    let files = yaml_files(&configs_dir());
    let mut nodes = 0;
    for path in files
        .iter()
        .filter(|p| !is_cluster_file(p) && !is_mirror_file(p))
    {
        let config = NodeConfig::load(path).unwrap_or_else(|e| panic!("shipped node config: {e}"));
        assert!(
            !config.explicit_keys.is_empty(),
            "{}: no keys read",
            path.display()
        );
        nodes += 1;
    }
    // single-node.yaml and three nodes per site: a test that found nothing must fail.
    assert!(nodes >= 7, "only {nodes} node configs found in configs/");
}

#[test]
fn shipped_sites_are_three_voter_clusters_on_ports_of_their_own() {
    let clusters: BTreeMap<String, ClusterFile> = yaml_files(&configs_dir())
        .iter()
        .filter(|p| is_cluster_file(p))
        .map(|path| {
            let c =
                ClusterFile::load(path).unwrap_or_else(|e| panic!("shipped cluster file: {e:#}"));
            (c.name.clone(), c)
        })
        .collect();
    assert!(
        clusters.contains_key("site-a") && clusters.contains_key("site-b"),
        "configs/ should ship site-a and site-b, found {:?}",
        clusters.keys().collect::<Vec<_>>()
    );

    // Both sites run side by side on one machine: no address is used twice.
    let mut owner: BTreeMap<SocketAddr, String> = BTreeMap::new();
    for (name, cluster) in &clusters {
        assert_eq!(cluster.node_ids(), vec![1, 2, 3], "{name}: node ids");
        for node in &cluster.nodes {
            let c = &node.config;
            assert_eq!(c.default_replication_factor, 3, "{name} node {}", c.node_id);
            assert_eq!(
                c.offsets_topic_replication_factor, 3,
                "{name} node {}",
                c.node_id
            );
            assert_eq!(
                c.quorum_voters().expect("voters").len(),
                3,
                "{name} node {}",
                c.node_id
            );
            let data_dir = c.data_dir.to_string_lossy().replace('\\', "/");
            assert!(
                data_dir.ends_with(&format!("data/{name}/node-{}", c.node_id)),
                "{name} node {}: data_dir {data_dir}",
                c.node_id
            );
            let controller = c.controller_listen_addr().expect("controller listener");
            for addr in [c.listen, controller] {
                if let Some(other) = owner.insert(addr, format!("{name} node {}", c.node_id)) {
                    panic!("{addr} is used by {other} and by {name} node {}", c.node_id);
                }
            }
        }
    }
    let site_a: Vec<u16> = clusters["site-a"]
        .nodes
        .iter()
        .map(|n| n.config.listen.port())
        .collect();
    assert_eq!(site_a, [9092, 9093, 9094], "site-a Kafka listeners");
}

#[test]
fn shipped_mirror_configs_load_and_point_at_the_shipped_sites() {
    let sites: BTreeMap<String, String> = yaml_files(&configs_dir())
        .iter()
        .filter(|p| is_cluster_file(p))
        .map(|path| {
            let c = ClusterFile::load(path).expect("shipped cluster file");
            let bootstrap: Vec<String> = c
                .nodes
                .iter()
                .map(|n| n.config.listen.to_string())
                .collect();
            (c.name.clone(), bootstrap.join(","))
        })
        .collect();
    let mirrors: Vec<PathBuf> = yaml_files(&configs_dir())
        .into_iter()
        .filter(|p| is_mirror_file(p))
        .collect();
    assert!(
        mirrors.len() >= 2,
        "configs/ should ship mirror-a-to-b and mirror-b-to-a: {mirrors:?}"
    );
    for path in &mirrors {
        let config = strait_mirror::config::MirrorConfig::load(path)
            .unwrap_or_else(|e| panic!("shipped mirror config: {e}"));
        for (alias, cluster) in &config.clusters {
            let site = format!("site-{alias}");
            assert_eq!(
                Some(&cluster.bootstrap_servers),
                sites.get(&site),
                "{}: cluster {alias} is {site}",
                path.display()
            );
        }
        let flow = config.enabled_flows().next().expect("an enabled flow");
        assert!(
            flow.sync_group_offsets,
            "{}: a DR site needs group offsets",
            path.display()
        );
        assert!(
            flow.groups.matches("orders-service") && !flow.groups.matches("console-consumer-1")
        );
        assert!(flow.mirrors_topic("orders") && !flow.mirrors_topic("__consumer_offsets"));
    }
}
