//! What a node persists besides partition logs and the metadata log: its identity
//! (`meta.properties`, as Kafka: the node id, and the cluster id once the node has learned it
//! from the quorum). Topics, configs and producer-id blocks live in the replicated metadata log
//! (`controller/`).
//!
//! Files are written whole to a temporary file, fsynced, renamed over the old one and the
//! directory fsynced, so a crash leaves either the old or the new version, never a torn one.

use std::collections::BTreeMap;
use std::fs;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Name of the identity file in the data directory (Kafka's name).
pub const META_PROPERTIES: &str = "meta.properties";

/// A failure reading or writing node metadata.
#[derive(Debug, thiserror::Error)]
pub enum MetadataStoreError {
    /// I/O on a metadata file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A metadata file is not what this version of strait writes.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The data directory belongs to another node.
    #[error("{path}: data directory belongs to node.id={found}, but this node is node_id={expected}; point --data-dir at this node's own directory")]
    WrongNode {
        /// The file.
        path: PathBuf,
        /// The id in the file.
        found: i32,
        /// The configured id.
        expected: i32,
    },
}

/// The broker configs set at runtime (Kafka keeps them in the metadata log), by Kafka name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DynamicBrokerConfigs {
    /// Set on the cluster-default broker resource (resource name `""`).
    pub cluster_default: BTreeMap<String, String>,
    /// Set on this broker's resource (resource name = node id).
    pub per_broker: BTreeMap<String, String>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> MetadataStoreError + '_ {
    move |source| MetadataStoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` atomically and durably (see [`crate::files::write_atomically`]).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), MetadataStoreError> {
    crate::files::write_atomically(path, bytes, crate::files::RenameDurability::Durable).map_err(
        |e| MetadataStoreError::Io {
            path: e.path,
            source: e.source,
        },
    )
}

/// Reads `meta.properties`: checks that the directory belongs to `node_id` and returns the
/// cluster id it records, if any. A missing file (a new directory) is written with the node
/// id alone.
pub fn load_identity(data_dir: &Path, node_id: i32) -> Result<Option<String>, MetadataStoreError> {
    let path = data_dir.join(META_PROPERTIES);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let mut cluster_id = None;
            let mut found_node = None;
            for line in text.lines().map(str::trim) {
                if line.starts_with('#') || line.is_empty() {
                    continue;
                }
                match line.split_once('=') {
                    Some(("cluster.id", v)) if !v.is_empty() => cluster_id = Some(v.to_string()),
                    Some(("node.id", v)) => {
                        found_node =
                            Some(v.parse::<i32>().map_err(|_| MetadataStoreError::Corrupt {
                                path: path.clone(),
                                reason: format!("node.id `{v}` is not an integer"),
                            })?)
                    }
                    _ => {}
                }
            }
            let found = found_node.ok_or_else(|| MetadataStoreError::Corrupt {
                path: path.clone(),
                reason: "no node.id".into(),
            })?;
            if found != node_id {
                return Err(MetadataStoreError::WrongNode {
                    path,
                    found,
                    expected: node_id,
                });
            }
            Ok(cluster_id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            save_identity(data_dir, node_id, None)?;
            Ok(None)
        }
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// Writes `meta.properties` with the node id and, once known, the cluster id.
pub fn save_identity(
    data_dir: &Path,
    node_id: i32,
    cluster_id: Option<&str>,
) -> Result<(), MetadataStoreError> {
    let mut text = format!("# written by strait\nversion=1\nnode.id={node_id}\n");
    if let Some(id) = cluster_id {
        text.push_str(&format!("cluster.id={id}\n"));
    }
    write_atomically(&data_dir.join(META_PROPERTIES), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_checked_and_learns_the_cluster_id() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_identity(dir.path(), 3).unwrap(), None);
        save_identity(dir.path(), 3, Some("abc")).unwrap();
        assert_eq!(
            load_identity(dir.path(), 3).unwrap().as_deref(),
            Some("abc")
        );
        let err = load_identity(dir.path(), 4).unwrap_err();
        assert!(matches!(
            err,
            MetadataStoreError::WrongNode {
                found: 3,
                expected: 4,
                ..
            }
        ));
    }
}
