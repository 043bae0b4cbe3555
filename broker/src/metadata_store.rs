//! What a node persists besides partition logs: its identity (`meta.properties`, as Kafka), the
//! topic table (`strait-topics.json`), so topics and their configs survive a restart, and the
//! dynamic broker configs (`strait-broker-configs.json`, set by AlterConfigs on the broker
//! resource).
//!
//! All files are written whole to a temporary file, fsynced, renamed over the old one and the
//! directory fsynced, so a crash leaves either the old or the new version, never a torn one.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Name of the identity file in the data directory (Kafka's name).
pub const META_PROPERTIES: &str = "meta.properties";
/// Name of the topic table in the data directory.
pub const TOPICS_FILE: &str = "strait-topics.json";
/// Name of the dynamic broker configs in the data directory.
pub const BROKER_CONFIGS_FILE: &str = "strait-broker-configs.json";

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

/// One topic as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    /// Topic name.
    pub name: String,
    /// Topic id (Kafka's topic UUID).
    pub id: Uuid,
    /// Number of partitions.
    pub partitions: i32,
    /// The topic's config overrides.
    pub configs: BTreeMap<String, String>,
}

/// The broker configs set at runtime (Kafka keeps them in the metadata log), by Kafka name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DynamicBrokerConfigs {
    /// Set on the cluster-default broker resource (resource name `""`).
    pub cluster_default: BTreeMap<String, String>,
    /// Set on this broker's resource (resource name = node id).
    pub per_broker: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct BrokerConfigsFile {
    version: u32,
    #[serde(flatten)]
    configs: DynamicBrokerConfigs,
}

const BROKER_CONFIGS_FILE_VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct TopicsFile {
    version: u32,
    topics: Vec<TopicRecord>,
}

const TOPICS_FILE_VERSION: u32 = 1;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> MetadataStoreError + '_ {
    move |source| MetadataStoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename, fsync of the directory).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), MetadataStoreError> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_err(path))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    Ok(())
}

/// Reads `meta.properties` or creates it with a fresh cluster id; returns the cluster id.
pub fn load_or_create_identity(
    data_dir: &Path,
    node_id: i32,
) -> Result<String, MetadataStoreError> {
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
                    Some(("cluster.id", v)) => cluster_id = Some(v.to_string()),
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
            cluster_id.ok_or_else(|| MetadataStoreError::Corrupt {
                path,
                reason: "no cluster.id".into(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let cluster_id = Uuid::new_v4().simple().to_string();
            let text = format!(
                "# written by strait\nversion=1\ncluster.id={cluster_id}\nnode.id={node_id}\n"
            );
            write_atomically(&path, text.as_bytes())?;
            Ok(cluster_id)
        }
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// Loads the topic table; a missing file is an empty table.
pub fn load_topics(data_dir: &Path) -> Result<Vec<TopicRecord>, MetadataStoreError> {
    let path = data_dir.join(TOPICS_FILE);
    let text = match fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let file: TopicsFile =
        serde_json::from_slice(&text).map_err(|e| MetadataStoreError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    if file.version != TOPICS_FILE_VERSION {
        return Err(MetadataStoreError::Corrupt {
            path,
            reason: format!(
                "version {} (this strait reads version {TOPICS_FILE_VERSION})",
                file.version
            ),
        });
    }
    Ok(file.topics)
}

/// Replaces the topic table.
pub fn save_topics(data_dir: &Path, topics: Vec<TopicRecord>) -> Result<(), MetadataStoreError> {
    let path = data_dir.join(TOPICS_FILE);
    let file = TopicsFile {
        version: TOPICS_FILE_VERSION,
        topics,
    };
    let bytes = serde_json::to_vec_pretty(&file).map_err(|e| MetadataStoreError::Corrupt {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    write_atomically(&path, &bytes)
}

/// Loads the dynamic broker configs; a missing file means none are set.
pub fn load_broker_configs(data_dir: &Path) -> Result<DynamicBrokerConfigs, MetadataStoreError> {
    let path = data_dir.join(BROKER_CONFIGS_FILE);
    let text = match fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(DynamicBrokerConfigs::default())
        }
        Err(e) => return Err(io_err(&path)(e)),
    };
    let file: BrokerConfigsFile =
        serde_json::from_slice(&text).map_err(|e| MetadataStoreError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    if file.version != BROKER_CONFIGS_FILE_VERSION {
        return Err(MetadataStoreError::Corrupt {
            path,
            reason: format!(
                "version {} (this strait reads version {BROKER_CONFIGS_FILE_VERSION})",
                file.version
            ),
        });
    }
    Ok(file.configs)
}

/// Replaces the dynamic broker configs.
pub fn save_broker_configs(
    data_dir: &Path,
    configs: &DynamicBrokerConfigs,
) -> Result<(), MetadataStoreError> {
    let path = data_dir.join(BROKER_CONFIGS_FILE);
    let file = BrokerConfigsFile {
        version: BROKER_CONFIGS_FILE_VERSION,
        configs: configs.clone(),
    };
    let bytes = serde_json::to_vec_pretty(&file).map_err(|e| MetadataStoreError::Corrupt {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    write_atomically(&path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_created_once_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let id = load_or_create_identity(dir.path(), 3).unwrap();
        assert_eq!(load_or_create_identity(dir.path(), 3).unwrap(), id);
        let err = load_or_create_identity(dir.path(), 4).unwrap_err();
        assert!(matches!(
            err,
            MetadataStoreError::WrongNode {
                found: 3,
                expected: 4,
                ..
            }
        ));
    }

    #[test]
    fn topics_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_topics(dir.path()).unwrap().is_empty());
        let t = TopicRecord {
            name: "orders".into(),
            id: Uuid::new_v4(),
            partitions: 3,
            configs: [("retention.ms".to_string(), "1000".to_string())].into(),
        };
        save_topics(dir.path(), vec![t.clone()]).unwrap();
        assert_eq!(load_topics(dir.path()).unwrap(), vec![t]);
    }

    #[test]
    fn broker_configs_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            load_broker_configs(dir.path()).unwrap(),
            DynamicBrokerConfigs::default()
        );
        let c = DynamicBrokerConfigs {
            cluster_default: [("log.retention.ms".to_string(), "1000".to_string())].into(),
            per_broker: [("log.segment.bytes".to_string(), "4096".to_string())].into(),
        };
        save_broker_configs(dir.path(), &c).unwrap();
        assert_eq!(load_broker_configs(dir.path()).unwrap(), c);
    }
}
