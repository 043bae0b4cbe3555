//! A broker's life with the controller (Kafka's `BrokerLifecycleManager`): it learns the
//! cluster id, registers (fenced), opens its logs, heartbeats until the controller unfences
//! it, heartbeats for as long as it runs, and on SIGTERM asks for a controlled shutdown so its
//! leaderships move to other ISR members before it stops.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use uuid::Uuid;

use crate::broker::{Broker, BrokerError, CONTROLLER_TIMEOUT_MS};
use crate::controller::image::MetadataCommand;
use crate::controller::rpc::{HeartbeatReply, HeartbeatRequest};
use crate::controller::{Controller, ControllerError};
use crate::metadata_store;

/// How long a controlled shutdown waits for the controller before the broker stops anyway.
pub const CONTROLLED_SHUTDOWN_TIMEOUT_MS: u64 = 10_000;
/// How often waiting for the quorum is reported.
const WAITING_REPORT_INTERVAL_MS: u64 = 5_000;

/// This process's registration with the controller.
pub struct Session {
    incarnation_id: Uuid,
    epoch: AtomicU64,
    fenced: AtomicBool,
}

impl Session {
    /// The current registration (broker epoch).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Whether the controller last said this broker is fenced.
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire)
    }
}

/// Waits until the quorum has committed a cluster id, checks it against `meta.properties`
/// and records it there. A mismatch means the data directory belongs to another cluster.
pub async fn join_cluster(
    controller: &Controller,
    known: Option<String>,
) -> Result<String, BrokerError> {
    let started = Instant::now();
    let mut images = controller.subscribe();
    let mut last_report = Instant::now();
    let cluster_id = loop {
        if let Some(id) = images.borrow().cluster_id.clone() {
            break id;
        }
        if last_report.elapsed() >= Duration::from_millis(WAITING_REPORT_INTERVAL_MS) {
            tracing::info!(waited_ms = started.elapsed().as_millis() as u64, leader = ?controller.leader_id(),
                "waiting for the controller quorum to elect a leader (a majority of controller_quorum_voters must be up)");
            last_report = Instant::now();
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), images.changed()).await;
    };
    match known {
        Some(ours) if ours != cluster_id => Err(BrokerError::Internal(format!(
            "data directory {} belongs to cluster {ours}, but the controller quorum is cluster {cluster_id}; refusing to start",
            controller.data_dir().display()
        ))),
        Some(_) => Ok(cluster_id),
        None => {
            metadata_store::save_identity(
                controller.data_dir(),
                controller.node_id(),
                Some(&cluster_id),
            )?;
            controller.set_known_cluster_id(&cluster_id);
            tracing::info!(%cluster_id, "joined cluster");
            Ok(cluster_id)
        }
    }
}

/// Registers this process with the controller, retrying until the quorum answers.
pub async fn register(broker: &Broker, incarnation_id: Uuid) -> Result<u64, BrokerError> {
    let (host, port) = broker.advertised();
    let command = MetadataCommand::RegisterBroker {
        id: broker.node_id(),
        host: host.to_string(),
        port,
        incarnation_id,
    };
    loop {
        match broker
            .controller()
            .propose_and_apply(command.clone(), CONTROLLER_TIMEOUT_MS)
            .await
        {
            Ok(result) if result.error_code == 0 => {
                let epoch = u64::try_from(result.value).unwrap_or_default();
                tracing::info!(broker_epoch = epoch, "registered with the controller");
                return Ok(epoch);
            }
            Ok(result) => {
                return Err(BrokerError::Refused {
                    code: result.error_code,
                    message: result.message.unwrap_or_default(),
                })
            }
            Err(ControllerError::NotAvailable(ms)) => {
                tracing::info!(waited_ms = ms, "registration not committed yet; retrying");
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Starts a session: registers and returns it (still fenced).
pub async fn start_session(broker: &Broker) -> Result<Arc<Session>, BrokerError> {
    let incarnation_id = Uuid::new_v4();
    let epoch = register(broker, incarnation_id).await?;
    Ok(Arc::new(Session {
        incarnation_id,
        epoch: AtomicU64::new(epoch),
        fenced: AtomicBool::new(true),
    }))
}

/// One heartbeat; re-registers when the controller no longer knows this registration.
async fn beat(broker: &Broker, session: &Session, want_shutdown: bool) -> Option<HeartbeatReply> {
    let controller = broker.controller();
    let request = HeartbeatRequest {
        broker_id: broker.node_id(),
        broker_epoch: session.epoch(),
        applied_index: controller.image().applied_index,
        want_shutdown,
    };
    match controller.heartbeat(request).await {
        Ok(HeartbeatReply::Reregister) if !want_shutdown => {
            tracing::warn!(
                broker_epoch = session.epoch(),
                "the controller does not know this registration; registering again"
            );
            match register(broker, session.incarnation_id).await {
                Ok(epoch) => session.epoch.store(epoch, Ordering::Release),
                Err(e) => tracing::warn!(error = %e, "registration failed"),
            }
            None
        }
        Ok(reply) => {
            if let HeartbeatReply::Ok { fenced, .. } = reply {
                let was = session.fenced.swap(fenced, Ordering::AcqRel);
                if was != fenced {
                    tracing::info!(fenced, "controller changed this broker's fencing");
                }
            }
            Some(reply)
        }
        Err(e) => {
            tracing::debug!(error = %e, "heartbeat failed");
            None
        }
    }
}

/// How long a broker the controller unfenced waits for its own metadata to show that, before
/// it asks again.
const UNFENCE_APPLY_WAIT_MS: u64 = 1_000;

/// Heartbeats quickly until the controller unfences this broker and this node's own metadata
/// image shows it unfenced. The heartbeat's answer comes as soon as the controller committed
/// the change, which this node may apply a moment later; serving clients in between would
/// answer Metadata from an image without this broker (and without brokers unfenced just
/// before it). Kafka's brokers likewise wait to catch up with the metadata log before they
/// serve.
pub async fn wait_unfenced(broker: &Broker, session: &Session) {
    let started = Instant::now();
    let mut last_report = Instant::now();
    let me = broker.node_id();
    let mut images = broker.controller().subscribe();
    loop {
        if let Some(HeartbeatReply::Ok { fenced: false, .. }) = beat(broker, session, false).await {
            let applied = tokio::time::timeout(
                Duration::from_millis(UNFENCE_APPLY_WAIT_MS),
                images.wait_for(|i| i.brokers.get(&me).is_some_and(|b| !b.fenced)),
            )
            .await;
            if matches!(applied, Ok(Ok(_))) {
                return;
            }
        }
        if last_report.elapsed() >= Duration::from_millis(WAITING_REPORT_INTERVAL_MS) {
            tracing::info!(
                waited_ms = started.elapsed().as_millis() as u64,
                "waiting for the controller to unfence this broker"
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Heartbeats every `broker_heartbeat_interval_ms` until `stop` turns true.
pub async fn heartbeat_loop(
    broker: Arc<Broker>,
    session: Arc<Session>,
    mut stop: watch::Receiver<bool>,
) {
    let interval_ms = broker.config().broker_heartbeat_interval_ms;
    let mut tick = tokio::time::interval(Duration::from_millis(interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = tick.tick() => {}
        }
        let fenced_before = session.is_fenced();
        // A beat can wait on a controller without quorum: stopping must not wait for it.
        tokio::select! {
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
            _ = beat(&broker, &session, false) => {}
        }
        if session.is_fenced() && fenced_before {
            // Fenced (a session that lapsed, e.g. after a long pause): beat faster to get
            // back in.
            tick.reset_after(Duration::from_millis(100.min(interval_ms)));
        }
    }
}

/// Asks the controller to move this broker's leaderships away, then returns (also when the
/// controller cannot be reached within [`CONTROLLED_SHUTDOWN_TIMEOUT_MS`]).
pub async fn controlled_shutdown(broker: &Broker, session: &Session) {
    let deadline = Instant::now() + Duration::from_millis(CONTROLLED_SHUTDOWN_TIMEOUT_MS);
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        // The controller may have lost its quorum (this node may be it): never wait past the
        // deadline for an answer.
        let reply = tokio::time::timeout(left, beat(broker, session, true))
            .await
            .ok()
            .flatten();
        if let Some(HeartbeatReply::Ok {
            shutdown_done: true,
            ..
        }) = reply
        {
            // Wait until this node applied the change, so it stops serving as leader at once.
            let mut images = broker.controller().subscribe();
            let me = broker.node_id();
            let _ = tokio::time::timeout(
                deadline.saturating_duration_since(Instant::now()),
                images.wait_for(|i| i.brokers.get(&me).is_some_and(|b| b.shutting_down)),
            )
            .await;
            if let Err(e) = broker.apply_image(broker.controller().image()) {
                tracing::warn!(error = %e, "applying the controlled-shutdown metadata failed");
            }
            tracing::info!("controlled shutdown complete: this broker leads no partition another ISR member can take");
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tracing::warn!(
        timeout_ms = CONTROLLED_SHUTDOWN_TIMEOUT_MS,
        "controlled shutdown did not complete; stopping anyway"
    );
}
