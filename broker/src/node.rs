//! A running broker node: binds the Kafka and controller listeners, joins the controller
//! quorum, registers, opens the partitions the metadata assigns here, serves until told to
//! stop, then moves its leaderships away (controlled shutdown), flushes and closes every log.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::broker::{Broker, BrokerError};
use crate::config::NodeConfig;
use crate::controller::{Controller, ControllerConfig, ControllerError};
use crate::lifecycle::{self, Session};
use crate::{metadata_store, server};

/// How often `flush.ms` is checked (Kafka's `log.flush.scheduler.interval.ms`).
const FLUSH_CHECK_INTERVAL_MS: u64 = 1_000;
/// How often idle idempotent producers are forgotten (Kafka's
/// `producer.id.expiration.check.interval.ms` default).
const PRODUCER_EXPIRATION_CHECK_INTERVAL_MS: u64 = 600_000;

/// A node that failed to start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The listener could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Error.
        source: std::io::Error,
    },
    /// The data directory could not be opened or recovered.
    #[error("cannot open data directory: {0}")]
    Open(#[from] BrokerError),
    /// The controller quorum could not be joined.
    #[error(transparent)]
    Controller(#[from] ControllerError),
}

/// Joins (or forms) the controller quorum, registers, opens the partitions assigned here and
/// waits until the controller unfences this broker: everything of a node start but the Kafka
/// listener.
async fn open_broker(
    config: NodeConfig,
    advertised: (String, i32),
    voters: Vec<(i32, SocketAddr)>,
    controller_listener: Option<TcpListener>,
) -> Result<(Arc<Broker>, Arc<Session>), NodeError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| {
        BrokerError::Metadata(metadata_store::MetadataStoreError::Io {
            path: config.data_dir.clone(),
            source,
        })
    })?;
    let known_cluster_id = metadata_store::load_identity(&config.data_dir, config.node_id)
        .map_err(BrokerError::from)?;
    let controller = Controller::start(
        ControllerConfig {
            node_id: config.node_id,
            voters,
            data_dir: config.data_dir.clone(),
            broker_session_timeout_ms: config.broker_session_timeout_ms,
            known_cluster_id: known_cluster_id.clone(),
        },
        controller_listener,
    )
    .await?;
    lifecycle::join_cluster(&controller, known_cluster_id).await?;
    let broker = Arc::new(Broker::new(config, advertised, controller.clone())?);
    let session = lifecycle::start_session(&broker).await?;
    // Recovery reads whole segments: keep it off the async worker threads.
    let opening = broker.clone();
    tokio::task::spawn_blocking(move || {
        opening.apply_image(opening.controller().image())?;
        opening.remove_stray_partitions();
        Ok::<(), BrokerError>(())
    })
    .await
    .unwrap_or_else(|e| panic!("broker open task panicked: {e}"))?;
    lifecycle::wait_unfenced(&broker, &session).await;
    // Unfencing gave this broker its leaderships back: take them before serving.
    let image = broker.controller().image();
    let applying = broker.clone();
    tokio::task::spawn_blocking(move || applying.apply_image(image))
        .await
        .unwrap_or_else(|e| panic!("broker open task panicked: {e}"))?;
    Ok((broker, session))
}

/// Applies every new metadata image to the broker until `stop` turns true (the first one at
/// once, in case it changed before the loop started).
async fn reconcile_loop(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let mut images = broker.controller().subscribe();
    images.mark_changed();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            changed = images.changed() => if changed.is_err() { break },
        }
        let image = images.borrow_and_update().clone();
        let b = broker.clone();
        // Opening or removing partitions is file work.
        match tokio::task::spawn_blocking(move || b.apply_image(image)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "applying metadata failed"),
            Err(e) => tracing::error!(error = %e, "metadata task failed"),
        }
    }
}

/// A one-node cluster in this process with no listeners: the broker of `config` as
/// request handlers see it, heartbeating to its own controller. For tests that drive
/// handlers directly.
pub async fn open_standalone(config: NodeConfig) -> Result<Arc<Broker>, NodeError> {
    let (broker, session) =
        open_broker(config, ("127.0.0.1".to_string(), 9092), Vec::new(), None).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(reconcile_loop(broker.clone(), stop_rx.clone()));
    let beating = broker.clone();
    tokio::spawn(async move {
        // Held here so both loops run for as long as the runtime does.
        let _stop_tx = stop_tx;
        lifecycle::heartbeat_loop(beating, session, stop_rx).await;
    });
    Ok(broker)
}

/// A node that is bound, registered, unfenced and has recovered its logs, ready to serve.
pub struct Node {
    broker: Arc<Broker>,
    session: Arc<Session>,
    listener: TcpListener,
    local_addr: SocketAddr,
}

impl Node {
    /// Binds the listeners, joins the controller quorum (waiting for a majority of voters),
    /// registers, opens (recovering if needed) the partitions assigned here, and waits until
    /// the controller unfences this broker.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        let addr = config.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| NodeError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| NodeError::Bind { addr, source })?;
        let voters = config
            .quorum_voters()
            .map_err(|e| NodeError::Open(BrokerError::InvalidRequest(e)))?;
        let controller_listener = match config.controller_listen_addr() {
            Some(addr) if !voters.is_empty() => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| NodeError::Bind { addr, source })?,
            ),
            _ => None,
        };
        let advertised = config.advertised_host_port(local_addr);
        let (broker, session) =
            open_broker(config, advertised, voters, controller_listener).await?;
        Ok(Node {
            broker,
            session,
            listener,
            local_addr,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The broker state.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Serves until `shutdown` completes, then closes connections and logs cleanly.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let flusher = {
            let broker = self.broker.clone();
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let mut tick =
                    tokio::time::interval(Duration::from_millis(FLUSH_CHECK_INTERVAL_MS));
                let mut expiry_tick = tokio::time::interval(Duration::from_millis(
                    PRODUCER_EXPIRATION_CHECK_INTERVAL_MS,
                ));
                // The first tick of an interval is immediate; open() already expired producers.
                expiry_tick.tick().await;
                loop {
                    tokio::select! {
                        _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
                        _ = tick.tick() => {
                            let b = broker.clone();
                            if let Err(e) = tokio::task::spawn_blocking(move || b.flush_due()).await {
                                tracing::error!(error = %e, "flush task failed");
                            }
                        }
                        _ = expiry_tick.tick() => {
                            let b = broker.clone();
                            if let Err(e) =
                                tokio::task::spawn_blocking(move || b.expire_producers()).await
                            {
                                tracing::error!(error = %e, "producer expiration task failed");
                            }
                        }
                    }
                }
            })
        };
        let group_ticker = {
            let broker = self.broker.clone();
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let mut tick =
                    tokio::time::interval(Duration::from_millis(crate::group::TICK_INTERVAL_MS));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
                        _ = tick.tick() => {
                            // Expiring members and compacting the offsets topic write to logs:
                            // keep that file work off the async workers, as flushes do.
                            let b = broker.clone();
                            let ticked = tokio::task::spawn_blocking(move || {
                                b.groups().tick(&*b, crate::clock::now_ms())
                            });
                            if let Err(e) = ticked.await {
                                tracing::error!(error = %e, "group tick failed");
                            }
                        }
                    }
                }
            })
        };
        let retention = {
            let broker = self.broker.clone();
            let mut stop = stop_rx.clone();
            let interval_ms = broker.config().log_retention_check_interval_ms.max(1);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(interval_ms));
                // A pass that overruns the interval is followed by one pass, not a burst.
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
                        _ = tick.tick() => {
                            let b = broker.clone();
                            // Renames and removals of segment files: blocking work.
                            if let Err(e) = tokio::task::spawn_blocking(move || b.enforce_retention()).await {
                                tracing::error!(error = %e, "retention task failed");
                            }
                        }
                    }
                }
            })
        };
        let reconciler = tokio::spawn(reconcile_loop(self.broker.clone(), stop_rx.clone()));
        let isr_checker = {
            let broker = self.broker.clone();
            let mut stop = stop_rx.clone();
            // Kafka checks at half the lag limit.
            let interval_ms = (broker.config().replica_lag_time_max_ms / 2).max(100);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(interval_ms));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
                        _ = tick.tick() => {}
                    }
                    // An ISR change waits on the controller; stopping must not.
                    tokio::select! {
                        _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
                        _ = broker.shrink_lagging_isrs() => {}
                    }
                }
            })
        };
        let heartbeats = tokio::spawn(lifecycle::heartbeat_loop(
            self.broker.clone(),
            self.session.clone(),
            stop_rx.clone(),
        ));
        let serving = tokio::spawn(server::serve(self.listener, self.broker.clone(), stop_rx));
        shutdown.await;
        tracing::info!("shutting down: moving leaderships away (controlled shutdown)");
        lifecycle::controlled_shutdown(&self.broker, &self.session).await;
        tracing::info!("closing connections and flushing logs");
        // Nobody listens to the receiver only if both tasks already ended; nothing to stop then.
        let _ = stop_tx.send(true);
        for task in [
            serving,
            flusher,
            retention,
            group_ticker,
            reconciler,
            heartbeats,
            isr_checker,
        ] {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "task failed during shutdown");
            }
        }
        let broker = self.broker.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || broker.close()).await {
            tracing::error!(error = %e, "closing logs failed");
        }
        self.broker.controller().shutdown().await;
        tracing::info!("stopped cleanly");
    }
}
