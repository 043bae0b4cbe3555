//! The journal of runs and the audit log (JSON lines), both in one directory.
//!
//! A run's record is rewritten after every change of state (a guard checked, a step started,
//! an attempt made, a step completed, failed or undone), whole or not at all (a temporary
//! file, fsynced, renamed over the record, the directory fsynced) before the action it
//! announces begins, so a run killed at any point left a record that says which step was in
//! progress. The lock that keeps two runs off the same flow is a file of its own, changed
//! only under an exclusive `flock` of `journal.lock`, so two processes never decide on it at
//! once; it names the run, the operator, the host, the process and since when. A lock whose
//! run has no record yet counts as held for a minute (the run writes its first record right
//! after its lock), and a run's own lock is not taken over while its process still runs.
//!
//! The journal was a sled database until a test that SIGKILLs a failover at every step found
//! sled 0.34 refusing to open it again ("Read corrupted data"), a failure its issue tracker
//! knows (#1509, #1533); plain files, written atomically, cannot be left half written.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Runs kept in the journal; the oldest ended ones go first beyond this.
pub const RUNS_KEPT_MAX: usize = 1_000;
/// A lock without a run record is taken over only once it is this old.
pub const LOCK_RECORDLESS_MS: u64 = 60_000;
/// How long a lock change waits for another process's lock change to end.
pub const LOCK_WAIT_MS: u64 = 10_000;

/// Why the journal failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A journal file or the audit file failed.
    #[error("runbook journal at {path}: {reason}")]
    Io {
        /// The journal's directory.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// Another run holds the lock.
    #[error("run {} ({} by {} on {}, pid {}) holds {key} since {}; wait for it, or `strait runbook resume {}` if it was interrupted", .holder.run_id, .holder.playbook, .holder.operator, .holder.host, .holder.pid, crate::clock::rfc3339(.holder.since_ms), .holder.run_id)]
    Locked {
        /// What is locked (the flow).
        key: String,
        /// Who holds it.
        holder: Box<Lock>,
    },
    /// No run of that id.
    #[error("no run `{0}` in the journal (`strait runbook history` lists them)")]
    NoSuchRun(String),
}

/// Who holds a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// The run.
    pub run_id: String,
    /// Its playbook.
    pub playbook: String,
    /// Who started it.
    pub operator: String,
    /// Where.
    pub host: String,
    /// Its process.
    pub pid: u32,
    /// Since when (Unix ms).
    pub since_ms: u64,
}

/// The state of a step in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Not started.
    Pending,
    /// Started and not finished: if the run is not running, it was interrupted here.
    Started,
    /// Done.
    Completed,
    /// Failed after its attempts.
    Failed,
    /// Completed, and its undo started (a rollback interrupted here repeats the undo).
    Undoing,
    /// Completed, then undone by a rollback.
    Undone,
}

/// A step as the journal knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Its name.
    pub name: String,
    /// Its action.
    pub action: String,
    /// Where it is.
    pub state: StepState,
    /// Attempts made so far.
    pub attempts: u32,
    /// When it started (Unix ms).
    pub started_ms: Option<u64>,
    /// When it ended (Unix ms).
    pub ended_ms: Option<u64>,
    /// What it found or did, or why it failed.
    pub detail: String,
}

impl StepRecord {
    /// A step not started yet.
    pub fn pending(name: &str, action: &str) -> StepRecord {
        StepRecord {
            name: name.to_string(),
            action: action.to_string(),
            state: StepState::Pending,
            attempts: 0,
            started_ms: None,
            ended_ms: None,
            detail: String::new(),
        }
    }
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// In progress, or interrupted.
    Running,
    /// Every step and verification succeeded.
    Succeeded,
    /// Stopped on a failure.
    Failed,
    /// A step failed and the completed steps are being undone.
    RollingBack,
    /// Failed and undone.
    RolledBack,
}

/// A run as the journal knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Its id.
    pub run_id: String,
    /// The playbook's name.
    pub playbook: String,
    /// The playbooks' directory it was loaded from.
    pub playbooks_dir: PathBuf,
    /// The parameters as given (`--param`), so a resume plans the same run.
    pub given: std::collections::BTreeMap<String, String>,
    /// The lock it holds.
    pub lock_key: String,
    /// Who started it.
    pub operator: String,
    /// Where.
    pub host: String,
    /// When (Unix ms).
    pub started_ms: u64,
    /// When it ended (Unix ms).
    pub ended_ms: Option<u64>,
    /// Where it is.
    pub state: RunState,
    /// Its steps in run order.
    pub steps: Vec<StepRecord>,
    /// Times it was resumed.
    pub resumes: u32,
}

/// What a resumed run does next, judged from its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeFrom {
    /// Continue at this step (in run order); `retry` if it was interrupted and is idempotent.
    Step {
        /// Its index in run order.
        index: usize,
        /// Whether the step was interrupted mid-way and is repeated.
        retry: bool,
    },
    /// Every step completed: only the verifications are left.
    Verify,
    /// A step was interrupted and is not idempotent: a person must check.
    Stop {
        /// The step.
        index: usize,
    },
    /// A step had failed: apply the playbook's `on_failure` (continue a rollback).
    Failed {
        /// The failed step.
        index: usize,
    },
}

impl RunRecord {
    /// Where a resume continues. `idempotent(i)` says whether step `i` may be repeated.
    pub fn resume_from(&self, idempotent: impl Fn(usize) -> bool) -> ResumeFrom {
        if let Some(index) = self.steps.iter().position(|s| s.state == StepState::Failed) {
            return ResumeFrom::Failed { index };
        }
        match self
            .steps
            .iter()
            .position(|s| s.state != StepState::Completed)
        {
            None => ResumeFrom::Verify,
            Some(i) if self.steps[i].state == StepState::Started => {
                if idempotent(i) {
                    ResumeFrom::Step {
                        index: i,
                        retry: true,
                    }
                } else {
                    ResumeFrom::Stop { index: i }
                }
            }
            Some(i) => ResumeFrom::Step {
                index: i,
                retry: false,
            },
        }
    }
}

/// One line of the audit log.
#[derive(Debug, Clone, Serialize)]
pub struct AuditLine<'a> {
    /// When (RFC 3339, UTC).
    pub time: String,
    /// `run_start`, `guard`, `step_start`, `step_end`, `approval`, `undo`, `resume`, `run_end`.
    pub event: &'a str,
    /// The run.
    pub run_id: &'a str,
    /// The playbook.
    pub playbook: &'a str,
    /// The parameters as given.
    pub params: &'a std::collections::BTreeMap<String, String>,
    /// Who.
    pub operator: &'a str,
    /// Where.
    pub host: &'a str,
    /// The step or check, if any.
    pub step: Option<&'a str>,
    /// How it went, if it ended.
    pub outcome: Option<&'a str>,
    /// Details.
    pub detail: Option<&'a str>,
}

/// The journal directory: `runs/` (one JSON file per run), `locks/` (one JSON file per held
/// lock), `journal.lock` (serialises lock changes between processes) and `audit.jsonl`.
pub struct Journal {
    dir: PathBuf,
}

/// An exclusive `flock` on `journal.lock`, released when dropped (or when the process dies).
struct Exclusive(std::fs::File);

impl Drop for Exclusive {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: flock(2) on a descriptor this struct owns; failure only leaves the lock to
        // be released when the file is closed right after.
        unsafe {
            libc::flock(self.0.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

/// The file name of lock `key`: its bytes in hex, so any key is a safe name.
fn lock_file_name(key: &str) -> String {
    let hex: String = key.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{hex}.json")
}

impl Journal {
    /// Opens (or creates) the journal in `dir`.
    pub fn open(dir: &Path) -> Result<Journal, JournalError> {
        let journal = Journal {
            dir: dir.to_path_buf(),
        };
        if dir.join("journal").is_dir() {
            // An earlier strait kept its runs in sled there; ignoring it could hide a run
            // left open (a fenced source, a stopped flow).
            return Err(journal.err(format!(
                "{} holds a journal of an earlier strait (sled): finish its runs with that version, then remove the directory",
                dir.join("journal").display()
            )));
        }
        for sub in ["runs", "locks"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|e| journal.err(e))?;
        }
        Ok(journal)
    }

    fn err(&self, reason: impl ToString) -> JournalError {
        JournalError::Io {
            path: self.dir.clone(),
            reason: reason.to_string(),
        }
    }

    /// Waits (bounded) for the exclusive lock on the journal's lock changes.
    fn exclusive(&self) -> Result<Exclusive, JournalError> {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join("journal.lock"))
            .map_err(|e| self.err(e))?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(LOCK_WAIT_MS);
        loop {
            // SAFETY: flock(2) on a descriptor `file` owns, non-blocking.
            let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if r == 0 {
                return Ok(Exclusive(file));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::WouldBlock || std::time::Instant::now() >= deadline {
                return Err(self.err(format!("locking journal.lock: {e}")));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Writes `bytes` to `path` whole or not at all: a temporary file, fsynced, renamed over
    /// it, and the directory fsynced.
    fn write_atomically(&self, path: &Path, bytes: &[u8]) -> Result<(), JournalError> {
        // A name of this writer's own, so two writers never rename each other's half files.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let tmp = path.with_extension(format!("json.{}-{nanos}.tmp", std::process::id()));
        let mut file = std::fs::File::create(&tmp).map_err(|e| self.err(e))?;
        file.write_all(bytes).map_err(|e| self.err(e))?;
        file.sync_all().map_err(|e| self.err(e))?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(|e| self.err(e))?;
        self.sync_dir(path)
    }

    fn sync_dir(&self, path: &Path) -> Result<(), JournalError> {
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    fn run_path(&self, run_id: &str) -> Result<PathBuf, JournalError> {
        // Run ids are made here (UUIDs) or typed by an operator: nothing but a plain name.
        if run_id.is_empty()
            || !run_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(JournalError::NoSuchRun(run_id.to_string()));
        }
        Ok(self.dir.join("runs").join(format!("{run_id}.json")))
    }

    fn read_lock(&self, key: &str) -> Result<Option<Lock>, JournalError> {
        match std::fs::read(self.dir.join("locks").join(lock_file_name(key))) {
            Ok(bytes) => Ok(Some(
                serde_json::from_slice(&bytes).map_err(|e| self.err(format!("lock {key}: {e}")))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Takes the lock `key` for `holder`, or says who has it. A holder with the same run id
    /// (a resume) takes it over.
    pub fn lock(&self, key: &str, holder: &Lock) -> Result<(), JournalError> {
        let value = serde_json::to_vec(holder).map_err(|e| self.err(e))?;
        let _exclusive = self.exclusive()?;
        if let Some(held) = self.read_lock(key)? {
            // A lock whose run ended holds nothing, nor does one that never got a record
            // (killed between the lock and the first record) once it is older than
            // `LOCK_RECORDLESS_MS`: a run writes its first record right after its lock.
            let live = match self.load(&held.run_id) {
                Ok(r) => r.state == RunState::Running || r.state == RunState::RollingBack,
                Err(JournalError::NoSuchRun(_)) => {
                    crate::clock::now_ms().saturating_sub(held.since_ms) < LOCK_RECORDLESS_MS
                }
                Err(_) => true,
            };
            // The same run's lock is taken over by its resume, unless the process holding
            // it still runs on this host (two resumes of one run).
            let same_run_busy = held.run_id == holder.run_id
                && held.host == holder.host
                && held.pid != holder.pid
                && Path::new(&format!("/proc/{}", held.pid)).exists();
            if (held.run_id != holder.run_id && live) || same_run_busy {
                return Err(JournalError::Locked {
                    key: key.to_string(),
                    holder: Box::new(held),
                });
            }
        }
        self.write_atomically(&self.dir.join("locks").join(lock_file_name(key)), &value)
    }

    /// Who holds `key`, if anyone.
    pub fn holder(&self, key: &str) -> Result<Option<Lock>, JournalError> {
        self.read_lock(key)
    }

    /// Releases `key` if `run_id` holds it.
    pub fn unlock(&self, key: &str, run_id: &str) -> Result<(), JournalError> {
        let _exclusive = self.exclusive()?;
        if self
            .read_lock(key)?
            .is_some_and(|held| held.run_id == run_id)
        {
            let path = self.dir.join("locks").join(lock_file_name(key));
            std::fs::remove_file(&path).map_err(|e| self.err(e))?;
            self.sync_dir(&path)?;
        }
        Ok(())
    }

    /// Writes `record` and syncs it to disk before returning.
    pub fn save(&self, record: &RunRecord) -> Result<(), JournalError> {
        let value = serde_json::to_vec(record).map_err(|e| self.err(e))?;
        self.write_atomically(&self.run_path(&record.run_id)?, &value)
    }

    /// The run `run_id`.
    pub fn load(&self, run_id: &str) -> Result<RunRecord, JournalError> {
        let bytes = match std::fs::read(self.run_path(run_id)?) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(JournalError::NoSuchRun(run_id.to_string()))
            }
            Err(e) => return Err(self.err(e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| self.err(format!("run {run_id}: {e}")))
    }

    /// Every run, oldest first.
    pub fn history(&self) -> Result<Vec<RunRecord>, JournalError> {
        let mut runs = Vec::new();
        for entry in std::fs::read_dir(self.dir.join("runs")).map_err(|e| self.err(e))? {
            let path = entry.map_err(|e| self.err(e))?.path();
            // A `.json.tmp` left by a process killed mid-write is not a run.
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|e| self.err(e))?;
            runs.push(
                serde_json::from_slice::<RunRecord>(&bytes)
                    .map_err(|e| self.err(format!("{}: {e}", path.display())))?,
            );
        }
        runs.sort_by_key(|r| r.started_ms);
        Ok(runs)
    }

    /// Forgets the oldest ended runs beyond [`RUNS_KEPT_MAX`].
    pub fn trim(&self) -> Result<(), JournalError> {
        let runs = self.history()?;
        let excess = runs.len().saturating_sub(RUNS_KEPT_MAX);
        for r in runs
            .iter()
            .filter(|r| r.state != RunState::Running && r.state != RunState::RollingBack)
            .take(excess)
        {
            std::fs::remove_file(self.run_path(&r.run_id)?).map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Appends one line to `audit.jsonl` (and syncs it).
    pub fn audit(&self, line: &AuditLine<'_>) -> Result<(), JournalError> {
        let mut text = serde_json::to_string(line).map_err(|e| self.err(e))?;
        text.push('\n');
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("audit.jsonl"))
            .map_err(|e| self.err(e))?;
        file.write_all(text.as_bytes()).map_err(|e| self.err(e))?;
        file.sync_data().map_err(|e| self.err(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(states: &[StepState]) -> RunRecord {
        RunRecord {
            run_id: "r1".into(),
            playbook: "p".into(),
            playbooks_dir: PathBuf::from("dr-playbooks"),
            given: Default::default(),
            lock_key: "flow a-to-b".into(),
            operator: "op".into(),
            host: "h".into(),
            started_ms: 1,
            ended_ms: None,
            state: RunState::Running,
            steps: states
                .iter()
                .enumerate()
                .map(|(i, s)| StepRecord {
                    state: *s,
                    ..StepRecord::pending(&format!("s{i}"), "a")
                })
                .collect(),
            resumes: 0,
        }
    }

    #[test]
    fn a_resume_repeats_only_an_interrupted_idempotent_step() {
        use StepState::*;
        let r = record(&[Completed, Started, Pending]);
        assert_eq!(
            r.resume_from(|_| true),
            ResumeFrom::Step {
                index: 1,
                retry: true
            }
        );
        assert_eq!(r.resume_from(|i| i != 1), ResumeFrom::Stop { index: 1 });
        let r = record(&[Completed, Pending]);
        assert_eq!(
            r.resume_from(|_| false),
            ResumeFrom::Step {
                index: 1,
                retry: false
            }
        );
        assert_eq!(
            record(&[Completed, Completed]).resume_from(|_| false),
            ResumeFrom::Verify
        );
        // Killed during a rollback: the rollback goes on, nothing is run forward.
        assert_eq!(
            record(&[Undone, Undoing, Failed, Pending]).resume_from(|_| true),
            ResumeFrom::Failed { index: 2 }
        );
    }

    #[test]
    fn a_lock_names_its_holder_and_a_resume_takes_it_over() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let holder = |run: &str| Lock {
            run_id: run.into(),
            playbook: "planned-failover".into(),
            operator: "ana".into(),
            host: "ops1".into(),
            pid: 42,
            since_ms: 0,
        };
        j.lock("flow a-to-b", &holder("r1")).unwrap();
        j.save(&record(&[StepState::Started])).unwrap(); // r1, running
        let e = j
            .lock("flow a-to-b", &holder("r2"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("run r1 (planned-failover by ana on ops1, pid 42) holds flow a-to-b"),
            "{e}"
        );
        j.lock("flow a-to-b", &holder("r1")).unwrap();
        j.unlock("flow a-to-b", "r2").unwrap();
        assert!(
            j.lock("flow a-to-b", &holder("r2")).is_err(),
            "only the holder unlocks"
        );
        j.unlock("flow a-to-b", "r1").unwrap();
        j.lock("flow a-to-b", &holder("r2")).unwrap();
        // r2 never got a record (killed between the lock and its first save): its lock is
        // stale and taken over; a running r3 keeps its own.
        j.lock("flow a-to-b", &holder("r3")).unwrap();
        j.save(&RunRecord {
            run_id: "r3".into(),
            ..record(&[StepState::Started])
        })
        .unwrap();
        assert!(j.lock("flow a-to-b", &holder("r4")).is_err());
        assert_eq!(j.holder("flow a-to-b").unwrap().unwrap().run_id, "r3");
        j.unlock("flow a-to-b", "r3").unwrap();
        // A lock taken a moment ago, whose run has no record yet, is held: its run is about
        // to write it.
        let young = Lock {
            since_ms: crate::clock::now_ms(),
            ..holder("r5")
        };
        j.lock("flow b-to-a", &young).unwrap();
        assert!(j.lock("flow b-to-a", &holder("r6")).is_err());
        // A run's own lock is not taken over by a second resume while its process runs here.
        let running_here = Lock {
            pid: std::process::id(),
            ..holder("r7")
        };
        j.lock("flow c", &running_here).unwrap();
        let e = j.lock("flow c", &holder("r7")).unwrap_err().to_string();
        assert!(e.contains("run r7"), "{e}");
        // Records survive reopening.
        let r = record(&[StepState::Completed]);
        j.save(&r).unwrap();
        drop(j);
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.load("r1").unwrap(), r);
        assert!(matches!(j.load("r9"), Err(JournalError::NoSuchRun(_))));
    }
}
