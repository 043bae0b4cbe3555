//! `strait mirror`: runs every enabled flow of a config until told to stop.
//!
//! Each flow runs under a supervisor: its internal topics are made on the target, then the
//! index follower, the topic syncer, the pump, the checkpointer and the heartbeat emitter
//! start. If the pump fails (a cluster unreachable for minutes, a record the target refuses)
//! the whole flow stops and starts again after a backoff; the pump resumes from the index, so
//! a restart repeats at most the records of one flush interval and skips none.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::checkpoints::Checkpointer;
use crate::clients::{admin, ensure_topic, MirrorError};
use crate::config::{FlowConfig, MirrorConfig};
use crate::control::{Controls, FlowControl};
use crate::follower::IndexFollower;
use crate::metrics::{FlowMetrics, Metrics};
use crate::offsets::{FlowIndex, OffsetStore};
use crate::pump::Pump;
use crate::topics::TopicSync;

/// First wait before a failed flow starts again; doubled per failure up to the maximum.
const RESTART_BACKOFF_MS: u64 = 1_000;
const RESTART_BACKOFF_MAX_MS: u64 = 30_000;
/// A flow that ran this long before failing restarts after the first backoff again.
const HEALTHY_RUN_MS: u64 = 60_000;

/// What the daemon needs besides the config.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// The loaded config.
    pub config: MirrorConfig,
    /// Where sled lives (`<data_dir>/index`).
    pub data_dir: PathBuf,
    /// The HTTP listener's address (port 0 picks one).
    pub http: SocketAddr,
}

/// A daemon whose HTTP listener is bound; [`Daemon::run`] starts the flows.
pub struct Daemon {
    options: DaemonOptions,
    listener: tokio::net::TcpListener,
    store: OffsetStore,
    metrics: Arc<Metrics>,
    controls: Arc<Controls>,
}

/// The daemon's one ready line, printed on stdout once it serves (tests parse it).
pub fn ready_line(http: SocketAddr, flows: &[&FlowConfig]) -> String {
    let flows: Vec<String> = flows
        .iter()
        .map(|f| format!("{} ({} -> {})", f.name, f.source, f.target))
        .collect();
    format!(
        "strait mirror: serving http://{http} (/metrics, /status); flows: {}",
        flows.join(", ")
    )
}

/// The HTTP address in a [`ready_line`].
pub fn parse_ready_line(line: &str) -> Option<SocketAddr> {
    line.strip_prefix("strait mirror: serving http://")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl Daemon {
    /// Opens the index and binds the HTTP listener.
    pub async fn bind(options: DaemonOptions) -> Result<Daemon, MirrorError> {
        std::fs::create_dir_all(&options.data_dir).map_err(|e| {
            MirrorError::Other(format!(
                "creating data directory {}: {e}",
                options.data_dir.display()
            ))
        })?;
        let store = OffsetStore::open(&options.data_dir.join("index"))?;
        let names: Vec<String> = options
            .config
            .enabled_flows()
            .map(|f| f.name.clone())
            .collect();
        let controls = Arc::new(Controls::load(&options.data_dir, &names)?);
        let listener = tokio::net::TcpListener::bind(options.http)
            .await
            .map_err(|e| {
                MirrorError::Other(format!(
                    "binding the HTTP listener on {}: {e}",
                    options.http
                ))
            })?;
        Ok(Daemon {
            options,
            listener,
            store,
            metrics: Arc::new(Metrics::default()),
            controls,
        })
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.options.http)
    }

    /// The daemon's shared metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Runs every enabled flow until `stop` turns true, then stops them cleanly (in-flight
    /// records acknowledged, runs recorded, source offsets committed) and flushes the index.
    pub async fn run(self, stop: watch::Receiver<bool>) -> Result<(), MirrorError> {
        let Daemon {
            options,
            listener,
            store,
            metrics,
            controls,
        } = self;
        let mut http_stop = stop.clone();
        let api = crate::http::Api {
            metrics: metrics.clone(),
            controls: controls.clone(),
            control_from: options.config.http_control_from.clone(),
        };
        let http = tokio::spawn(crate::http::serve(listener, api, async move {
            let _ = http_stop.wait_for(|s| *s).await;
        }));
        let mut flows = Vec::new();
        for flow in options.config.enabled_flows() {
            let flow = Arc::new(flow.clone());
            let index = store.flow(&flow.name)?;
            let flow_metrics = metrics.flow(&flow.name, &flow.source, &flow.target);
            controls.attach(
                flow.clone(),
                options.config.cluster(&flow.source).clone(),
                options.config.cluster(&flow.target).clone(),
                index.clone(),
            );
            let config = options.config.clone();
            let stop = stop.clone();
            let controls = controls.clone();
            flows.push(tokio::spawn(supervise(
                flow,
                config,
                index,
                flow_metrics,
                controls,
                stop,
            )));
        }
        for f in flows {
            let _ = f.await;
        }
        let _ = http.await;
        store.flush()?;
        Ok(())
    }
}

/// Runs one flow until the daemon stops, restarting it after failures and following the
/// operator's stop and start.
async fn supervise(
    flow: Arc<FlowConfig>,
    config: MirrorConfig,
    index: FlowIndex,
    metrics: Arc<FlowMetrics>,
    controls: Arc<Controls>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(control) = controls.flow(&flow.name) else {
        tracing::error!(flow = %flow.name, "no controls for this flow; not starting it");
        return;
    };
    let mut wish = control.stopped();
    let mut backoff_ms = RESTART_BACKOFF_MS;
    loop {
        metrics
            .stopped_by_operator
            .store(*wish.borrow(), std::sync::atomic::Ordering::Relaxed);
        if *wish.borrow() {
            control.set_running(false);
            tracing::info!(flow = %flow.name, "flow stopped by an operator; waiting for a start");
            tokio::select! {
                _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
                _ = async { let _ = wish.wait_for(|s| !*s).await; } => {}
            }
            metrics
                .stopped_by_operator
                .store(false, std::sync::atomic::Ordering::Relaxed);
            backoff_ms = RESTART_BACKOFF_MS;
        }
        // This life stops when the daemon does or when an operator stops the flow.
        let (life_tx, life) = watch::channel(false);
        let forward = {
            let (mut outer, mut wish) = (stop.clone(), control.stopped());
            tokio::spawn(async move {
                tokio::select! {
                    _ = async { let _ = outer.wait_for(|s| *s).await; } => {}
                    _ = async { let _ = wish.wait_for(|s| *s).await; } => {}
                }
                let _ = life_tx.send(true);
            })
        };
        control.set_running(true);
        let started = std::time::Instant::now();
        let result = run_flow(&flow, &config, &index, &metrics, control, life).await;
        forward.abort();
        control.set_running(false);
        match result {
            // Only the daemon's stop ends the supervision. An operator's stop may have been
            // taken back (a start) while the flow drained: the loop's top looks at the wish
            // as it is now.
            Ok(()) if !*stop.borrow() => {
                tracing::info!(flow = %flow.name, "flow stopped by an operator");
                continue;
            }
            Ok(()) => {
                tracing::info!(flow = %flow.name, "flow stopped");
                return;
            }
            Err(e) => {
                metrics.error("flow_restart");
                if started.elapsed() >= Duration::from_millis(HEALTHY_RUN_MS) {
                    // A flow that ran well for a while starts its backoff afresh.
                    backoff_ms = RESTART_BACKOFF_MS;
                }
                if matches!(e, MirrorError::Fenced(_)) {
                    // Expected after a stall past the session timeout; nothing was lost.
                    tracing::warn!(flow = %flow.name, error = %e, retry_in_ms = backoff_ms, "flow fenced; restarting it");
                } else {
                    tracing::error!(flow = %flow.name, error = %e, retry_in_ms = backoff_ms, "flow failed; restarting it");
                }
            }
        }
        tokio::select! {
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
            // An operator's stop ends the wait; the loop's top then waits for a start.
            _ = async { let _ = wish.wait_for(|s| *s).await; } => {}
            _ = tokio::time::sleep(Duration::from_millis(backoff_ms)) => {}
        }
        backoff_ms = (backoff_ms * 2).min(RESTART_BACKOFF_MAX_MS);
    }
}

/// How long a flow's side tasks may take, together, to stop once its pump has stopped.
const TASK_STOP_WAIT_MS: u64 = 2_000;

/// One life of a flow: returns `Ok` after a requested stop, `Err` when it must start over.
async fn run_flow(
    flow: &Arc<FlowConfig>,
    config: &MirrorConfig,
    index: &FlowIndex,
    metrics: &Arc<FlowMetrics>,
    control: &FlowControl,
    stop: watch::Receiver<bool>,
) -> Result<(), MirrorError> {
    let source = config.cluster(&flow.source).clone();
    let target = config.cluster(&flow.target).clone();
    let target_admin = Arc::new(admin(&target)?);
    // Kept forever: the runs topic is the shared copy of the index (see ARCHITECTURE.md on
    // its growth until strait's broker compacts).
    ensure_topic(
        &target_admin,
        &flow.offset_runs_topic(),
        1,
        flow.offset_syncs_topic_replication_factor,
        "offset_syncs_topic_replication_factor",
        &[("retention.ms", "-1")],
    )
    .await?;
    ensure_topic(
        &target_admin,
        &flow.checkpoints_topic(),
        1,
        flow.checkpoints_topic_replication_factor,
        "checkpoints_topic_replication_factor",
        &[("retention.ms", "-1")],
    )
    .await?;
    drop(target_admin);
    // The flow's own stop: the daemon's, or a failed pump taking the other tasks down.
    let (flow_stop_tx, flow_stop) = watch::channel(false);
    let mut outer = stop.clone();
    let forward = {
        let tx = flow_stop_tx.clone();
        tokio::spawn(async move {
            let _ = outer.wait_for(|s| *s).await;
            let _ = tx.send(true);
        })
    };
    let (follower, follower_task) =
        IndexFollower::start(flow, &target, index.clone(), flow_stop.clone()).await?;
    let (syncer, topics) = TopicSync::new(flow.clone(), &source, &target, metrics.clone())?;
    let syncer_task = tokio::spawn(syncer.run(flow_stop.clone()));
    let mut pump = Pump::new(
        flow.clone(),
        source.clone(),
        target.clone(),
        index.clone(),
        follower,
        topics.clone(),
        metrics.clone(),
    );
    let checkpointer = Checkpointer::new(
        flow.clone(),
        source.clone(),
        target.clone(),
        index.clone(),
        metrics.clone(),
        topics,
        pump.assigned.clone(),
    )?;
    let checkpoint_task =
        tokio::spawn(checkpointer.run(flow_stop.clone(), control.round_requests()));
    let heartbeat_task = {
        let (flow, source, metrics, stop) = (
            flow.clone(),
            source.clone(),
            metrics.clone(),
            flow_stop.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) =
                crate::heartbeats::run(flow.clone(), source, metrics.clone(), stop).await
            {
                tracing::warn!(flow = %flow.name, error = %e, "heartbeats stopped");
                metrics.error("heartbeat");
            }
        })
    };
    tracing::info!(flow = %flow.name, source = %flow.source, target = %flow.target, group = %flow.consumer_group(), "flow started");
    let result = pump.run(flow_stop.clone()).await;
    let _ = flow_stop_tx.send(true);
    // The other tasks stop at their next await of the stop signal; one stuck in a request to
    // a site that is gone (a forced failover) is not waited for past a bound: what it was
    // doing is repeated or superseded by the next life of the flow.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(TASK_STOP_WAIT_MS);
    for (name, mut task) in [
        ("topic sync", syncer_task),
        ("checkpoints", checkpoint_task),
        ("heartbeats", heartbeat_task),
        ("index follower", follower_task),
    ] {
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            tracing::warn!(flow = %flow.name, task = name, wait_ms = TASK_STOP_WAIT_MS, "task did not stop in time; abandoning it");
            task.abort();
        }
    }
    forward.abort();
    result
}
