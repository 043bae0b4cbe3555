//! A running broker node: opens the data directory, binds the listener, serves until told to
//! stop, then flushes and closes every log.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::broker::{Broker, BrokerError};
use crate::config::NodeConfig;
use crate::server;

/// How often `flush.ms` is checked (Kafka's `log.flush.scheduler.interval.ms`).
const FLUSH_CHECK_INTERVAL_MS: u64 = 1_000;
/// How often idle idempotent producers are forgotten (Kafka's
/// `producer.id.expiration.check.interval.ms` default).
const PRODUCER_EXPIRATION_CHECK_INTERVAL_MS: u64 = 600_000;

/// A node that failed to start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Error.
        source: std::io::Error,
    },
    /// The data directory could not be opened or recovered.
    #[error("cannot open data directory: {0}")]
    Open(#[from] BrokerError),
}

/// A node that is bound and has recovered its logs, ready to serve.
pub struct Node {
    broker: Arc<Broker>,
    listener: TcpListener,
    local_addr: SocketAddr,
}

impl Node {
    /// Binds the listener and opens (recovering if needed) the data directory.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        let addr = config.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| NodeError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| NodeError::Bind { addr, source })?;
        let advertised = config.advertised_host_port(local_addr);
        // Recovery reads whole segments: keep it off the async worker threads.
        let broker = tokio::task::spawn_blocking(move || Broker::open(config, advertised))
            .await
            .unwrap_or_else(|e| panic!("broker open task panicked: {e}"))?;
        Ok(Node {
            broker: Arc::new(broker),
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
                                b.groups().tick(&b, crate::broker::now_ms())
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
        let serving = tokio::spawn(server::serve(self.listener, self.broker.clone(), stop_rx));
        shutdown.await;
        tracing::info!("shutting down: closing connections and flushing logs");
        // Nobody listens to the receiver only if both tasks already ended; nothing to stop then.
        let _ = stop_tx.send(true);
        for task in [serving, flusher, retention, group_ticker] {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "task failed during shutdown");
            }
        }
        let broker = self.broker.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || broker.close()).await {
            tracing::error!(error = %e, "closing logs failed");
        }
        tracing::info!("stopped cleanly");
    }
}
