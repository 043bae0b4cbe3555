//! Small state files (`meta.properties`, Raft's vote and snapshot, a partition's recovery
//! point, high watermark, log start offset, leader-epoch checkpoint, producer snapshots),
//! written so that a crash leaves either the old content or the new, never a mix: Kafka's
//! `Utils.atomicMoveWithFallback`. One helper for all of them, so they agree on how.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A file operation that failed, with what and where.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op} {}: {source}", path.display())]
pub struct FileError {
    /// What was being done (`create`, `write`, `rename`, `fsync directory`).
    pub op: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// The I/O error.
    pub source: io::Error,
}

/// Whether the rename itself must survive a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenameDurability {
    /// The directory is fsynced after the rename: a crash afterwards never shows the old file.
    Durable,
    /// The directory is not fsynced: a crash may bring the previous content back. For files
    /// whose older value is always safe to find after a crash (a recovery point that only
    /// moves up), written often enough that the fsync would cost.
    MayRevert,
}

/// The temporary file next to `path`: its whole name plus `.tmp` (`Path::with_extension` would
/// cut a dotted name such as `meta.properties` or a topic `a.b`'s directory).
pub fn temp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

/// Writes `bytes` to `path` atomically: into [`temp_path`], fsynced, renamed over `path`, and
/// with [`RenameDurability::Durable`] the directory fsynced.
pub fn write_atomically(
    path: &Path,
    bytes: &[u8],
    durability: RenameDurability,
) -> Result<(), FileError> {
    let tmp = temp_path(path);
    let fail = |op: &'static str, at: &Path| {
        let at = at.to_path_buf();
        move |source| FileError {
            op,
            path: at,
            source,
        }
    };
    let mut file = File::create(&tmp).map_err(fail("create", &tmp))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(fail("write", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(fail("rename", &tmp))?;
    if durability == RenameDurability::Durable {
        sync_dir(path.parent().unwrap_or_else(|| Path::new(".")))?;
    }
    Ok(())
}

/// Fsyncs a directory, so renames and deletions in it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<(), FileError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| FileError {
            op: "fsync directory",
            path: dir.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dotted_name_keeps_its_whole_name_and_the_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.properties");
        assert_eq!(temp_path(&path), dir.path().join("meta.properties.tmp"));
        write_atomically(&path, b"one", RenameDurability::Durable).unwrap();
        write_atomically(&path, b"two", RenameDurability::MayRevert).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert!(
            !temp_path(&path).exists(),
            "the temporary file is renamed away"
        );
    }

    #[test]
    fn a_failure_names_the_operation_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("state");
        let err = write_atomically(&path, b"x", RenameDurability::Durable).unwrap_err();
        assert_eq!(err.op, "create");
        assert!(err.to_string().contains("state.tmp"), "{err}");
    }
}
