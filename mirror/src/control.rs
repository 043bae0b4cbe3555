//! Operator control of the daemon's flows: stop and start a flow, run a checkpoint round now,
//! and, while the flow is stopped, commit every group's last checkpoint to the target (a
//! forced failover) or read the index's cursors, adopt restored records and commit the groups
//! back to the source (a failback). The runbooks drive these through the HTTP API (`POST
//! /flows/NAME/stop`, `.../start`, `.../checkpoint`, `.../commit-checkpoints`, `.../cursors`,
//! `.../adopt`, `.../commit-back`).
//!
//! A stop is durable: the set of stopped flows is kept in `<data_dir>/stopped-flows.json`
//! (written whole, fsynced, renamed), so a flow stopped for a failover stays stopped across
//! restarts of the daemon until someone starts it. Stopping waits until the flow's pump has
//! drained, recorded its runs and committed (the daemon's clean stop of a flow); starting
//! waits until the flow runs again.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::checkpoints::{FinalCommit, GroupTranslation, RoundRequest};
use crate::clients::MirrorError;
use crate::config::{ClusterConfig, FlowConfig};
use crate::failback::BackCommit;
use crate::offsets::{Cursor, FlowIndex};

/// How long one stop or start request waits to see the flow get there. The HTTP server
/// closes a connection idle for 10 s, so a request answers sooner: "stopping" or "starting"
/// when the flow is not there yet, and the caller asks again (both are idempotent).
pub const CONTROL_WAIT_MS: u64 = 5_000;
/// How long a checkpoint round requested now may take (within the HTTP idle limit).
pub const ROUND_WAIT_MS: u64 = 8_000;
/// Round requests queued per flow at most; more are refused as busy.
const ROUND_REQUESTS_MAX: usize = 4;
/// The file that keeps the stopped flows.
pub const STOPPED_FILE: &str = "stopped-flows.json";

/// One flow's controls.
pub struct FlowControl {
    /// True while an operator wants the flow stopped.
    stopped: watch::Sender<bool>,
    /// True while the flow runs (set by the daemon's supervisor).
    running: watch::Sender<bool>,
    rounds_tx: mpsc::Sender<RoundRequest>,
    rounds_rx: Arc<tokio::sync::Mutex<mpsc::Receiver<RoundRequest>>>,
    /// What the stopped flow's work needs, once the daemon attached it.
    attached: std::sync::OnceLock<Attached>,
    /// One such piece of work at a time (a final commit, a failback's read or change).
    committing: tokio::sync::Mutex<()>,
}

/// A flow's config, source, target and index, for the work done while the flow is stopped.
struct Attached {
    flow: Arc<FlowConfig>,
    source: ClusterConfig,
    target: ClusterConfig,
    index: FlowIndex,
}

impl FlowControl {
    /// Follows the operator's wish: true while the flow should be stopped.
    pub fn stopped(&self) -> watch::Receiver<bool> {
        self.stopped.subscribe()
    }

    /// Tells the controls whether the flow runs.
    pub fn set_running(&self, running: bool) {
        self.running.send_replace(running);
    }

    /// Where the checkpoint task takes requests for a round now.
    pub fn round_requests(&self) -> Arc<tokio::sync::Mutex<mpsc::Receiver<RoundRequest>>> {
        self.rounds_rx.clone()
    }
}

/// Why a control request did not do what it asked.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No flow of that name runs in this daemon.
    #[error("no flow `{0}` in this daemon")]
    UnknownFlow(String),
    /// The flow is stopped (a round needs it running).
    #[error("flow `{0}` is stopped")]
    Stopped(String),
    /// The flow runs (a final commit needs it stopped).
    #[error("flow `{0}` runs: stop it first")]
    Running(String),
    /// The change was made but the flow did not get there in time.
    #[error("{0}")]
    Timeout(String),
    /// Too many requests at once.
    #[error("flow `{0}` already has {ROUND_REQUESTS_MAX} checkpoint rounds waiting")]
    Busy(String),
    /// The round or the state file failed.
    #[error("{0}")]
    Failed(String),
    /// The request does not fit the flow's state (a failback's view is stale); nothing
    /// changed.
    #[error("{0}")]
    Refused(String),
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoppedFile {
    stopped: BTreeSet<String>,
}

/// The controls of every flow of a daemon.
pub struct Controls {
    flows: BTreeMap<String, FlowControl>,
    path: PathBuf,
    /// Serialises the state file's writes.
    write: Mutex<()>,
}

impl Controls {
    /// Loads the stopped flows from `data_dir` for `flows` (a stopped flow no longer in the
    /// config is forgotten at the next write).
    pub fn load(data_dir: &Path, flows: &[String]) -> Result<Controls, MirrorError> {
        let path = data_dir.join(STOPPED_FILE);
        let saved: StoppedFile = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                MirrorError::Other(format!(
                    "{}: {e} (the set of stopped flows; fix or remove the file)",
                    path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StoppedFile::default(),
            Err(e) => return Err(MirrorError::Other(format!("{}: {e}", path.display()))),
        };
        let flows = flows
            .iter()
            .map(|name| {
                let (rounds_tx, rounds_rx) = mpsc::channel(ROUND_REQUESTS_MAX);
                let control = FlowControl {
                    stopped: watch::Sender::new(saved.stopped.contains(name)),
                    running: watch::Sender::new(false),
                    rounds_tx,
                    rounds_rx: Arc::new(tokio::sync::Mutex::new(rounds_rx)),
                    attached: std::sync::OnceLock::new(),
                    committing: tokio::sync::Mutex::new(()),
                };
                (name.clone(), control)
            })
            .collect();
        Ok(Controls {
            flows,
            path,
            write: Mutex::new(()),
        })
    }

    /// Gives `flow`'s controls what the work of a stopped flow needs.
    pub fn attach(
        &self,
        flow: Arc<FlowConfig>,
        source: ClusterConfig,
        target: ClusterConfig,
        index: FlowIndex,
    ) {
        if let Some(c) = self.flows.get(&flow.name) {
            let _ = c.attached.set(Attached {
                flow,
                source,
                target,
                index,
            });
        }
    }

    /// What a stopped flow's index says, and changes to it for a failback: `flow` must be
    /// stopped and attached; one such call at a time.
    async fn stopped_and_attached<T, F>(&self, flow: &str, work: F) -> Result<T, ControlError>
    where
        F: for<'a> FnOnce(&'a Attached) -> futures::future::BoxFuture<'a, Result<T, ControlError>>,
    {
        let control = self.get(flow)?;
        let _one = control.committing.lock().await;
        if !*control.stopped.borrow() || *control.running.borrow() {
            return Err(ControlError::Running(flow.to_string()));
        }
        let a = control
            .attached
            .get()
            .ok_or_else(|| ControlError::Failed(format!("flow `{flow}` is not attached yet")))?;
        let caught_up_then_work = async {
            catch_up(a).await?;
            work(a).await
        };
        tokio::time::timeout(Duration::from_millis(ROUND_WAIT_MS), caught_up_then_work)
            .await
            .map_err(|_| {
                ControlError::Timeout(format!("flow `{flow}`: not done within {ROUND_WAIT_MS} ms"))
            })?
    }

    /// Every partition's cursor in the index of the stopped `flow`: `(source topic,
    /// partition, cursor)`.
    pub async fn cursors(&self, flow: &str) -> Result<Vec<(String, i32, Cursor)>, ControlError> {
        self.stopped_and_attached(flow, |a| {
            Box::pin(async move {
                a.index
                    .cursors()
                    .map_err(|e| ControlError::Failed(e.to_string()))
            })
        })
        .await
    }

    /// Extends the stopped `flow`'s index over `count` records restored on the source from
    /// the target at the partition's cursor, which must be `expected` (see
    /// [`crate::failback::adopt`]).
    pub async fn adopt(
        &self,
        flow: &str,
        topic: &str,
        partition: i32,
        expected: Cursor,
        count: i64,
    ) -> Result<Cursor, ControlError> {
        let topic = topic.to_string();
        self.stopped_and_attached(flow, |a| {
            Box::pin(async move {
                crate::failback::adopt(
                    &a.flow, &a.target, &a.index, &topic, partition, expected, count,
                )
                .await
                .map_err(ControlError::Refused)
            })
        })
        .await
    }

    /// Resolves the open divergence of a partition of the stopped `flow`: mirroring resumes
    /// at `from` (see [`crate::divergence::resolve`]).
    pub async fn resolve_divergence(
        &self,
        flow: &str,
        topic: &str,
        partition: i32,
        from: Option<i64>,
    ) -> Result<crate::divergence::Resolved, ControlError> {
        let topic = topic.to_string();
        self.stopped_and_attached(flow, |a| {
            Box::pin(async move {
                crate::divergence::resolve(&a.flow, &a.target, &a.index, &topic, partition, from)
                    .await
                    .map_err(ControlError::Refused)
            })
        })
        .await
    }

    /// Translates every group's target offsets back and commits them on the source, while
    /// `flow` is stopped (see [`crate::failback::commit_back`]).
    pub async fn commit_back(&self, flow: &str) -> Result<Vec<BackCommit>, ControlError> {
        self.stopped_and_attached(flow, |a| {
            Box::pin(async move {
                crate::failback::commit_back(&a.flow, &a.source, &a.target, &a.index)
                    .await
                    .map_err(|e| ControlError::Failed(e.to_string()))
            })
        })
        .await
    }

    /// Commits every group's last checkpoint from the index to the target (a forced
    /// failover). Only while the flow is stopped, so no checkpoint round runs meanwhile.
    pub async fn commit_last_checkpoints(
        &self,
        flow: &str,
    ) -> Result<Vec<FinalCommit>, ControlError> {
        self.stopped_and_attached(flow, |a| {
            Box::pin(async move {
                crate::checkpoints::commit_last_checkpoints(&a.flow, &a.target, &a.index)
                    .await
                    .map_err(|e| ControlError::Failed(e.to_string()))
            })
        })
        .await
    }

    /// The controls of `flow`.
    pub fn flow(&self, flow: &str) -> Option<&FlowControl> {
        self.flows.get(flow)
    }

    fn get(&self, flow: &str) -> Result<&FlowControl, ControlError> {
        self.flows
            .get(flow)
            .ok_or_else(|| ControlError::UnknownFlow(flow.to_string()))
    }

    /// Whether an operator stopped `flow`.
    pub fn is_stopped(&self, flow: &str) -> bool {
        self.flows.get(flow).is_some_and(|c| *c.stopped.borrow())
    }

    /// Stops `flow` durably and waits (up to [`CONTROL_WAIT_MS`]) until it no longer runs;
    /// true if it got there.
    pub async fn stop(&self, flow: &str) -> Result<bool, ControlError> {
        self.set_stopped(flow, true).await
    }

    /// Starts `flow` again and waits (up to [`CONTROL_WAIT_MS`]) until it runs; true if it
    /// got there.
    pub async fn start(&self, flow: &str) -> Result<bool, ControlError> {
        self.set_stopped(flow, false).await
    }

    async fn set_stopped(&self, flow: &str, stopped: bool) -> Result<bool, ControlError> {
        let control = self.get(flow)?;
        {
            let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
            let mut set: BTreeSet<String> = self
                .flows
                .iter()
                .filter(|(_, c)| *c.stopped.borrow())
                .map(|(n, _)| n.clone())
                .collect();
            if stopped {
                set.insert(flow.to_string());
            } else {
                set.remove(flow);
            }
            // On disk first: a daemon killed now restarts with what the operator asked.
            write_atomically(&self.path, &StoppedFile { stopped: set })
                .map_err(|e| ControlError::Failed(format!("{}: {e}", self.path.display())))?;
            if control.stopped.send_replace(stopped) != stopped {
                tracing::info!(flow, stopped, "operator control");
            }
        }
        let mut running = control.running.subscribe();
        let want_running = !stopped;
        let waited = tokio::time::timeout(
            Duration::from_millis(CONTROL_WAIT_MS),
            running.wait_for(|r| *r == want_running),
        )
        .await
        .map(|r| r.is_ok());
        match waited {
            Ok(true) => Ok(true),
            Ok(false) => Err(ControlError::Failed("the daemon is shutting down".into())),
            Err(_) => Ok(false),
        }
    }

    /// Runs a checkpoint round of `flow` now (with its group offset sync) and returns the
    /// translations it made.
    pub async fn checkpoint(&self, flow: &str) -> Result<Vec<GroupTranslation>, ControlError> {
        let control = self.get(flow)?;
        if *control.stopped.borrow() || !*control.running.borrow() {
            return Err(ControlError::Stopped(flow.to_string()));
        }
        let (tx, rx) = oneshot::channel();
        control
            .rounds_tx
            .try_send(tx)
            .map_err(|_| ControlError::Busy(flow.to_string()))?;
        match tokio::time::timeout(Duration::from_millis(ROUND_WAIT_MS), rx).await {
            Ok(Ok(Ok(translations))) => Ok(translations),
            Ok(Ok(Err(e))) => Err(ControlError::Failed(format!("checkpoint round: {e}"))),
            Ok(Err(_)) => Err(ControlError::Failed(
                "the flow restarted before the round ran; ask again".into(),
            )),
            Err(_) => Err(ControlError::Timeout(format!(
                "no checkpoint round of `{flow}` within {ROUND_WAIT_MS} ms"
            ))),
        }
    }
}

/// Applies what the flow's runs topic holds beyond the index. The index follower stops with
/// the flow, possibly before it applied the last runs the pump recorded, and a daemon that
/// starts with the flow stopped never runs it: without this, a stopped flow's index could
/// be behind what its target holds.
async fn catch_up(a: &Attached) -> Result<(), ControlError> {
    let failed = |e: MirrorError| ControlError::Failed(format!("catching the index up: {e}"));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (follower, task) =
        crate::follower::IndexFollower::start(&a.flow, &a.target, a.index.clone(), stop_rx)
            .await
            .map_err(failed)?;
    let caught_up = follower.caught_up().await;
    let _ = stop_tx.send(true);
    let _ = task.await;
    caught_up.map_err(failed)
}

/// Writes `value` as JSON to `path` whole or not at all.
fn write_atomically(path: &Path, value: &impl Serialize) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stop_is_kept_on_disk_and_waits_for_the_flow_to_stop() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["a-to-b".to_string(), "b-to-a".to_string()];
        let controls = Arc::new(Controls::load(dir.path(), &names).unwrap());
        assert!(!controls.is_stopped("a-to-b"));
        // A supervisor that follows the wish, as the daemon's does.
        let control = controls.flow("a-to-b").unwrap();
        control.set_running(true);
        let mut wish = control.stopped();
        let follower = {
            let controls = controls.clone();
            tokio::spawn(async move {
                for want in [true, false] {
                    wish.wait_for(|s| *s == want).await.unwrap();
                    controls.flow("a-to-b").unwrap().set_running(!want);
                }
            })
        };
        assert!(controls.stop("a-to-b").await.unwrap(), "stopped in time");
        assert!(controls.is_stopped("a-to-b"));
        assert!(matches!(
            controls.checkpoint("a-to-b").await,
            Err(ControlError::Stopped(_))
        ));
        let reloaded = Controls::load(dir.path(), &names).unwrap();
        assert!(reloaded.is_stopped("a-to-b") && !reloaded.is_stopped("b-to-a"));
        assert!(controls.start("a-to-b").await.unwrap(), "started in time");
        follower.await.unwrap();
        assert!(!Controls::load(dir.path(), &names)
            .unwrap()
            .is_stopped("a-to-b"));
        assert!(matches!(
            controls.stop("nope").await,
            Err(ControlError::UnknownFlow(_))
        ));
        // A corrupt file is an error that names it, not a silent start of every flow.
        std::fs::write(dir.path().join(STOPPED_FILE), b"{\"stopped\": [").unwrap();
        let err = Controls::load(dir.path(), &names)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(STOPPED_FILE), "{err}");
    }
}
