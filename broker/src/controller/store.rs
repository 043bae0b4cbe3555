//! Durable storage of the metadata quorum: the Raft log, the vote, and the state machine (the
//! [`MetadataImage`]) with its snapshots, as openraft's `RaftLogStorage` and
//! `RaftStateMachine`.
//!
//! Files, all in `<data_dir>/__cluster_metadata/`:
//! - `raft.log` — entries appended as frames `[length u32][crc32c u32][JSON entry]`, fsynced
//!   before openraft hears the append is done. A torn or corrupt tail (a crash mid-append) is
//!   cut off on open; a conflict truncation cuts the file at the first removed entry. After
//!   enough entries are purged (covered by a snapshot) the file is rewritten without them.
//! - `vote.json`, `purged.json` — the vote and the last purged log id, written atomically.
//! - `snapshot.json` — the last snapshot: the image, the last applied log id and membership.
//!
//! The image itself lives in memory; on open it is the last snapshot, and openraft re-applies
//! the committed entries after it.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::image::{CommandResult, MetadataImage};
use super::TypeConfig;
use crate::files::{write_atomically, FileError, RenameDurability};

/// Node ids in the quorum (Kafka node ids, widened as openraft wants).
pub type NodeId = u64;

/// The largest entry frame read back; a longer length field is corruption.
const MAX_ENTRY_BYTES: u32 = 64 * 1024 * 1024;
/// Rewrite `raft.log` once this many purged entries sit at its head.
const REWRITE_AFTER_PURGED_ENTRIES: u64 = 2_000;

fn io_error(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::write_logs(openraft::AnyError::error(e.to_string())).into()
}

fn read_error(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::read_logs(openraft::AnyError::error(e.to_string())).into()
}

fn sm_error(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(openraft::AnyError::error(e.to_string())).into()
}

/// A failure of the metadata log's or state machine's files.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A JSON state file did not parse.
    #[error("{}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A value could not be encoded as JSON.
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's error.
        source: serde_json::Error,
    },
    /// A log entry too large for a frame.
    #[error("a metadata log entry of {bytes} bytes is over the frame limit of 64 MiB")]
    EntryTooLarge {
        /// Its encoded size.
        bytes: usize,
    },
    /// An atomic write failed.
    #[error(transparent)]
    File(#[from] FileError),
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { op, path, source }
}

/// The metadata directory under a node's data directory.
pub fn metadata_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("__cluster_metadata")
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, StoreError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StoreError::Json {
                path: path.to_path_buf(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("read", path)(e)),
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(value).map_err(|source| StoreError::Encode {
        what: "a state file",
        source,
    })?;
    Ok(write_atomically(path, &bytes, RenameDurability::Durable)?)
}

struct LogInner {
    dir: PathBuf,
    file: File,
    file_len_bytes: u64,
    /// Entries present, with the file position of each frame.
    entries: BTreeMap<u64, (Entry<TypeConfig>, u64)>,
    vote: Option<Vote<NodeId>>,
    last_purged: Option<LogId<NodeId>>,
    /// Purged entries still in the file.
    purged_in_file: u64,
}

/// The Raft log and vote. Cheap to clone (one shared file).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<LogInner>>,
}

fn encode_frame(entry: &Entry<TypeConfig>) -> Result<Vec<u8>, StoreError> {
    let json = serde_json::to_vec(entry).map_err(|source| StoreError::Encode {
        what: "a metadata log entry",
        source,
    })?;
    let len = u32::try_from(json.len())
        .ok()
        .filter(|l| *l <= MAX_ENTRY_BYTES)
        .ok_or(StoreError::EntryTooLarge { bytes: json.len() })?;
    let mut frame = Vec::with_capacity(json.len() + 8);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&crc32c::crc32c(&json).to_be_bytes());
    frame.extend_from_slice(&json);
    Ok(frame)
}

impl LogStore {
    /// Opens (creating if needed) the log in `dir`, cutting off a torn tail.
    pub fn open(dir: &Path) -> Result<LogStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        let path = dir.join("raft.log");
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io("open", &path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io("read", &path))?;
        let last_purged: Option<LogId<NodeId>> = read_json(&dir.join("purged.json"))?;
        let vote: Option<Vote<NodeId>> = read_json(&dir.join("vote.json"))?;
        let mut entries = BTreeMap::new();
        let mut position = 0usize;
        let mut purged_in_file = 0;
        while position + 8 <= bytes.len() {
            let len =
                u32::from_be_bytes(bytes[position..position + 4].try_into().unwrap_or_default());
            let crc = u32::from_be_bytes(
                bytes[position + 4..position + 8]
                    .try_into()
                    .unwrap_or_default(),
            );
            let end = position + 8 + len as usize;
            if len > MAX_ENTRY_BYTES || end > bytes.len() {
                break;
            }
            let json = &bytes[position + 8..end];
            if crc32c::crc32c(json) != crc {
                break;
            }
            let Ok(entry) = serde_json::from_slice::<Entry<TypeConfig>>(json) else {
                break;
            };
            if last_purged.is_some_and(|p| entry.log_id.index <= p.index) {
                purged_in_file += 1;
            } else {
                entries.insert(entry.log_id.index, (entry, position as u64));
            }
            position = end;
        }
        if position < bytes.len() {
            tracing::warn!(path = %path.display(), valid_bytes = position, file_bytes = bytes.len(),
                "metadata log has a torn or corrupt tail; cutting it off");
            file.set_len(position as u64)
                .and_then(|_| file.sync_all())
                .map_err(io("truncate", &path))?;
        }
        file.seek(SeekFrom::End(0)).map_err(io("seek", &path))?;
        Ok(LogStore {
            inner: Arc::new(Mutex::new(LogInner {
                dir: dir.to_path_buf(),
                file,
                file_len_bytes: position as u64,
                entries,
                vote,
                last_purged,
                purged_in_file,
            })),
        })
    }

    fn lock(&self) -> MutexGuard<'_, LogInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl LogInner {
    /// Rewrites `raft.log` with only the live entries (temp file, fsync, rename).
    fn rewrite(&mut self) -> Result<(), StoreError> {
        let path = self.dir.join("raft.log");
        let tmp = crate::files::temp_path(&path);
        let mut out = File::create(&tmp).map_err(io("create", &tmp))?;
        let mut position = 0u64;
        let mut positions = Vec::with_capacity(self.entries.len());
        for (index, (entry, _)) in &self.entries {
            let frame = encode_frame(entry)?;
            out.write_all(&frame).map_err(io("write", &tmp))?;
            positions.push((*index, position));
            position += frame.len() as u64;
        }
        out.sync_all().map_err(io("fsync", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("rename", &tmp))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync directory", &self.dir))?;
        self.file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io("open", &path))?;
        for (index, pos) in positions {
            if let Some(e) = self.entries.get_mut(&index) {
                e.1 = pos;
            }
        }
        self.file_len_bytes = position;
        self.purged_in_file = 0;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        Ok(self
            .lock()
            .entries
            .range(range)
            .map(|(_, (e, _))| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let inner = self.lock();
        let last = inner
            .entries
            .values()
            .next_back()
            .map(|(e, _)| e.log_id)
            .or(inner.last_purged);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.lock();
        write_json(&inner.dir.join("vote.json"), vote).map_err(|e| {
            StorageError::from(StorageIOError::write_vote(openraft::AnyError::error(e)))
        })?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.lock().vote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.lock();
        let mut buf = Vec::new();
        let mut added = Vec::new();
        for entry in entries {
            let frame = encode_frame(&entry).map_err(io_error)?;
            let position = inner.file_len_bytes + buf.len() as u64;
            buf.extend_from_slice(&frame);
            added.push((entry, position));
        }
        let written = inner
            .file
            .write_all(&buf)
            .and_then(|_| inner.file.sync_data());
        if let Err(e) = written {
            callback.log_io_completed(Err(std::io::Error::new(e.kind(), e.to_string())));
            return Err(io_error(e));
        }
        inner.file_len_bytes += buf.len() as u64;
        for (entry, position) in added {
            inner.entries.insert(entry.log_id.index, (entry, position));
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.lock();
        let Some(position) = inner
            .entries
            .range(log_id.index..)
            .next()
            .map(|(_, (_, pos))| *pos)
        else {
            return Ok(());
        };
        inner
            .file
            .set_len(position)
            .and_then(|_| inner.file.sync_all())
            .map_err(io_error)?;
        inner.file_len_bytes = position;
        let removed: Vec<u64> = inner
            .entries
            .range(log_id.index..)
            .map(|(i, _)| *i)
            .collect();
        for i in removed {
            inner.entries.remove(&i);
        }
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.lock();
        write_json(&inner.dir.join("purged.json"), &log_id).map_err(io_error)?;
        inner.last_purged = Some(log_id);
        let removed: Vec<u64> = inner
            .entries
            .range(..=log_id.index)
            .map(|(i, _)| *i)
            .collect();
        inner.purged_in_file += removed.len() as u64;
        for i in removed {
            inner.entries.remove(&i);
        }
        if inner.purged_in_file >= REWRITE_AFTER_PURGED_ENTRIES {
            inner.rewrite().map_err(io_error)?;
        }
        Ok(())
    }
}

/// What a snapshot holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    image: MetadataImage,
}

struct SmInner {
    dir: PathBuf,
    image: MetadataImage,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, openraft::BasicNode>,
    snapshot: Option<SnapshotFile>,
}

/// The state machine: the metadata image, published on a watch channel after every apply.
#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<Mutex<SmInner>>,
    published: watch::Sender<Arc<MetadataImage>>,
}

impl StateMachine {
    /// Opens the state machine from the last snapshot in `dir`, if any.
    pub fn open(dir: &Path) -> Result<StateMachine, StoreError> {
        let snapshot: Option<SnapshotFile> = read_json(&dir.join("snapshot.json"))?;
        let (image, last_applied, membership) = match &snapshot {
            Some(s) => (
                s.image.clone(),
                s.meta.last_log_id,
                s.meta.last_membership.clone(),
            ),
            None => (MetadataImage::default(), None, StoredMembership::default()),
        };
        let (published, _) = watch::channel(Arc::new(image.clone()));
        Ok(StateMachine {
            inner: Arc::new(Mutex::new(SmInner {
                dir: dir.to_path_buf(),
                image,
                last_applied,
                membership,
                snapshot,
            })),
            published,
        })
    }

    fn lock(&self) -> MutexGuard<'_, SmInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A receiver of every new image.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.published.subscribe()
    }

    fn publish(&self, image: &MetadataImage) {
        self.published.send_replace(Arc::new(image.clone()));
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let mut inner = self.lock();
        let snapshot_id = match inner.last_applied {
            Some(id) => format!("{}-{}", id.leader_id.term, id.index),
            None => "empty".to_string(),
        };
        let file = SnapshotFile {
            meta: SnapshotMeta {
                last_log_id: inner.last_applied,
                last_membership: inner.membership.clone(),
                snapshot_id,
            },
            image: inner.image.clone(),
        };
        let bytes = serde_json::to_vec(&file).map_err(sm_error)?;
        write_atomically(
            &inner.dir.join("snapshot.json"),
            &bytes,
            RenameDurability::Durable,
        )
        .map_err(sm_error)?;
        let meta = file.meta.clone();
        inner.snapshot = Some(file);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(std::io::Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<
        (
            Option<LogId<NodeId>>,
            StoredMembership<NodeId, openraft::BasicNode>,
        ),
        StorageError<NodeId>,
    > {
        let inner = self.lock();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.lock();
        let mut results = Vec::new();
        for entry in entries {
            inner.last_applied = Some(entry.log_id);
            let index = entry.log_id.index;
            match entry.payload {
                EntryPayload::Blank => {
                    inner.image.applied_index = index;
                    results.push(CommandResult::default());
                }
                EntryPayload::Normal(command) => {
                    let result = inner.image.apply(index, &command);
                    if result.error_code != 0 {
                        tracing::debug!(index, command = command.kind(), code = result.error_code,
                            message = ?result.message, "metadata command refused");
                    } else {
                        tracing::debug!(index, command = ?command, "metadata command applied");
                    }
                    results.push(result);
                }
                EntryPayload::Membership(m) => {
                    inner.image.applied_index = index;
                    inner.membership = StoredMembership::new(Some(entry.log_id), m);
                    results.push(CommandResult::default());
                }
            }
        }
        self.publish(&inner.image);
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<std::io::Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(std::io::Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<std::io::Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let bytes = snapshot.into_inner();
        let file: SnapshotFile = serde_json::from_slice(&bytes).map_err(sm_error)?;
        let mut inner = self.lock();
        write_atomically(
            &inner.dir.join("snapshot.json"),
            &bytes,
            RenameDurability::Durable,
        )
        .map_err(sm_error)?;
        inner.image = file.image.clone();
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.snapshot = Some(SnapshotFile {
            meta: meta.clone(),
            image: file.image,
        });
        tracing::info!(last_log_id = ?meta.last_log_id, "installed metadata snapshot from the leader");
        self.publish(&inner.image);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let inner = self.lock();
        let Some(file) = &inner.snapshot else {
            return Ok(None);
        };
        let bytes = serde_json::to_vec(file).map_err(read_error)?;
        Ok(Some(Snapshot {
            meta: file.meta.clone(),
            snapshot: Box::new(std::io::Cursor::new(bytes)),
        }))
    }
}
