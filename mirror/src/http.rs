//! The daemon's HTTP server (`/metrics`, `/status`) and the client `strait mirror status`
//! uses to read it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::metrics::{Metrics, Status};

/// The largest `/status` answer the client reads (a daemon with very many partitions).
pub const STATUS_BYTES_MAX: usize = 64 << 20;

/// The router: `/metrics` (Prometheus text), `/status` (JSON), `/` (what is where).
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { "strait mirror: GET /metrics (Prometheus), GET /status (JSON)\n" }),
        )
        .route(
            "/metrics",
            get(|State(m): State<Arc<Metrics>>| async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    m.prometheus(),
                )
                    .into_response()
            }),
        )
        .route(
            "/status",
            get(|State(m): State<Arc<Metrics>>| async move { Json(m.status()) }),
        )
        .with_state(metrics)
}

/// Serves `router` on `listener` until `stop` completes.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics))
        .with_graceful_shutdown(stop)
        .await
}

/// Why `/status` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// Nothing answered, or the connection broke.
    #[error("cannot reach the mirror's HTTP server at {addr}: {source} (is `strait mirror` running, with --http {addr}?)")]
    Io {
        /// Where we asked.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Something answered, but not with a status document.
    #[error("{addr} did not answer with a mirror status: {reason}")]
    Invalid {
        /// Where we asked.
        addr: SocketAddr,
        /// What was wrong.
        reason: String,
    },
}

/// Reads `/status` from a daemon (HTTP/1.0, one request).
pub async fn fetch_status(addr: SocketAddr, timeout: Duration) -> Result<Status, StatusError> {
    let io = |source| StatusError::Io { addr, source };
    let response = tokio::time::timeout(timeout, async {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET /status HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut body = Vec::new();
        (&mut stream)
            .take(STATUS_BYTES_MAX as u64)
            .read_to_end(&mut body)
            .await?;
        Ok::<_, std::io::Error>(body)
    })
    .await
    .map_err(|_| {
        io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no answer in time",
        ))
    })?
    .map_err(io)?;
    let invalid = |reason: String| StatusError::Invalid { addr, reason };
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid("no HTTP header".into()))?;
    let head = String::from_utf8_lossy(&response[..split]);
    if !head.starts_with("HTTP/1.") || head.split_whitespace().nth(1) != Some("200") {
        return Err(invalid(head.lines().next().unwrap_or_default().to_string()));
    }
    serde_json::from_slice(&response[split + 4..]).map_err(|e| invalid(e.to_string()))
}
