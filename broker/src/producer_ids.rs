//! Producer id allocation for idempotent producers (Kafka's `ProducerIdManager`).
//!
//! Ids are handed out from blocks of [`PRODUCER_ID_BLOCK_SIZE`]. Before the first id of a block
//! is handed out, the end of the block is persisted in `strait-producer-ids.json` (written
//! atomically, see [`metadata_store::write_atomically`]), so a restart, clean or not, continues
//! after the last reserved block and never hands out an id twice. A crash wastes the rest of
//! the current block, as in Kafka.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::metadata_store::{self, MetadataStoreError};

/// Ids reserved per write of the state file (Kafka's `PID_BLOCK_SIZE` / the controller's block).
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;
/// Name of the state file in the data directory.
pub const PRODUCER_IDS_FILE: &str = "strait-producer-ids.json";
/// Format version of the state file.
const PRODUCER_IDS_FILE_VERSION: u32 = 1;
/// The file is one short JSON object; anything bigger is garbage.
const PRODUCER_IDS_FILE_BYTES_MAX: u64 = 4096;

#[derive(Debug, Serialize, Deserialize)]
struct ProducerIdsFile {
    version: u32,
    /// First id not yet reserved by any block; the next block starts here.
    next_block_start: i64,
}

#[derive(Debug)]
struct Allocation {
    /// Next id to hand out.
    next_id: i64,
    /// End (exclusive) of the block reserved on disk; `next_id == block_end` means a new
    /// block must be reserved first.
    block_end: i64,
}

/// Hands out producer ids that are unique across restarts of this node.
#[derive(Debug)]
pub struct ProducerIdManager {
    path: PathBuf,
    allocation: Mutex<Allocation>,
}

impl ProducerIdManager {
    /// Loads the allocation state of `data_dir` (a missing file starts at id 0).
    pub fn open(data_dir: &Path) -> Result<ProducerIdManager, MetadataStoreError> {
        let path = data_dir.join(PRODUCER_IDS_FILE);
        let corrupt = |reason: String| MetadataStoreError::Corrupt {
            path: path.clone(),
            reason,
        };
        let next_block_start = match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(source) => return Err(MetadataStoreError::Io { path, source }),
            Ok(meta) if meta.len() > PRODUCER_IDS_FILE_BYTES_MAX => {
                return Err(corrupt(format!(
                    "{} bytes, more than the {PRODUCER_IDS_FILE_BYTES_MAX} this file can be",
                    meta.len()
                )))
            }
            Ok(_) => {
                let bytes = std::fs::read(&path).map_err(|source| MetadataStoreError::Io {
                    path: path.clone(),
                    source,
                })?;
                let file: ProducerIdsFile =
                    serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
                if file.version != PRODUCER_IDS_FILE_VERSION {
                    return Err(corrupt(format!(
                        "version {} (this strait reads version {PRODUCER_IDS_FILE_VERSION})",
                        file.version
                    )));
                }
                if file.next_block_start < 0 {
                    return Err(corrupt(format!(
                        "negative next_block_start {}",
                        file.next_block_start
                    )));
                }
                file.next_block_start
            }
        };
        Ok(ProducerIdManager {
            path,
            allocation: Mutex::new(Allocation {
                next_id: next_block_start,
                block_end: next_block_start,
            }),
        })
    }

    /// A fresh producer id, reserving (and persisting) a new block when the current one is
    /// used up.
    pub fn generate(&self) -> Result<i64, MetadataStoreError> {
        // A panic while holding the lock leaves the counters consistent (they only move after a
        // successful write), so a poisoned lock is still usable.
        let mut allocation = self.allocation.lock().unwrap_or_else(|p| p.into_inner());
        if allocation.next_id >= allocation.block_end {
            let block_end = allocation
                .block_end
                .checked_add(PRODUCER_ID_BLOCK_SIZE)
                .ok_or_else(|| MetadataStoreError::Corrupt {
                    path: self.path.clone(),
                    reason: "producer id space exhausted".into(),
                })?;
            let file = ProducerIdsFile {
                version: PRODUCER_IDS_FILE_VERSION,
                next_block_start: block_end,
            };
            let bytes =
                serde_json::to_vec(&file).expect("serialising two integers to JSON cannot fail");
            metadata_store::write_atomically(&self.path, &bytes)?;
            tracing::info!(
                first_id = allocation.block_end,
                end_id = block_end,
                "reserved a block of producer ids"
            );
            allocation.block_end = block_end;
        }
        let id = allocation.next_id;
        allocation.next_id += 1;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_across_restarts_and_blocks_are_persisted_first() {
        let dir = tempfile::tempdir().unwrap();
        let ids = ProducerIdManager::open(dir.path()).unwrap();
        assert!(
            !dir.path().join(PRODUCER_IDS_FILE).exists(),
            "nothing reserved yet"
        );
        let first: Vec<i64> = (0..1001).map(|_| ids.generate().unwrap()).collect();
        assert_eq!(first, (0..1001).collect::<Vec<_>>());
        let text = std::fs::read_to_string(dir.path().join(PRODUCER_IDS_FILE)).unwrap();
        assert!(text.contains("\"next_block_start\":2000"), "{text}");
        drop(ids);
        // A restart (clean or not) continues after the last reserved block.
        let ids = ProducerIdManager::open(dir.path()).unwrap();
        assert_eq!(ids.generate().unwrap(), 2000);
    }

    #[test]
    fn garbage_state_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(PRODUCER_IDS_FILE), b"{\"version\":1}").unwrap();
        let err = ProducerIdManager::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains(PRODUCER_IDS_FILE), "{err}");
    }
}
