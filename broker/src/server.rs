//! The Kafka listener: accepts connections, reads length-prefixed frames, hands each to
//! `handlers::dispatch_from` and writes the responses back in request order.
//!
//! One request is processed at a time per connection, as Kafka does (it mutes a channel while a
//! request is in flight), which gives in-order responses for free.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore, SemaphorePermit};
use tokio::task::JoinSet;

use crate::broker::Broker;
use crate::handlers::{self, Outcome};
use crate::net::{LogLimiter, PerIpSlots};

/// Smallest read into a connection's buffer.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// Largest read buffer a connection keeps between requests. A producer's frames (librdkafka
/// batches up to 1 MB by default) fit, so its buffer is reused; after a larger frame the
/// buffer is let go, so 4096 idle connections hold at most this much each.
const KEPT_READ_BUFFER_MAX_BYTES: usize = 4 * 1024 * 1024;
/// Frame memory reserved up front: enough for a default-sized produce batch in one allocation,
/// small enough that a peer announcing a huge frame and sending nothing holds little memory.
const FRAME_RESERVE_BYTES_MAX: usize = 2 * 1024 * 1024;
/// Frames up to this size are read without the node-wide request memory budget
/// (`queued.max.request.bytes`): every connection may hold this much of its own.
const UNPOOLED_FRAME_BYTES_MAX: usize = READ_BUFFER_BYTES;

/// Why a connection ended, for the log.
#[derive(Debug, thiserror::Error)]
enum ConnectionEnd {
    #[error("peer closed the connection")]
    Eof,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {size_bytes} bytes exceeds socket.request.max.bytes ({limit_bytes})")]
    FrameTooLarge { size_bytes: i64, limit_bytes: u32 },
    #[error("frame truncated: {got} of {expected} bytes before the peer closed")]
    Truncated { got: usize, expected: usize },
    #[error("nothing arrived for connections.max.idle.ms ({idle_ms} ms)")]
    Idle { idle_ms: u64 },
    #[error("{0}")]
    Rejected(#[from] handlers::CloseReason),
}

/// What every connection of one listener shares.
struct Shared {
    broker: Arc<Broker>,
    /// `queued.max.request.bytes`, one permit per byte.
    request_bytes: Semaphore,
    idle: Duration,
    warnings: LogLimiter,
}

/// Reads more bytes into `inbuf`, reserving `reserve_bytes` of room first; closes the
/// connection if nothing arrives for `connections.max.idle.ms`.
async fn read_more(
    rd: &mut OwnedReadHalf,
    inbuf: &mut BytesMut,
    reserve_bytes: usize,
    idle: Duration,
) -> Result<usize, ConnectionEnd> {
    if inbuf.is_empty() {
        // Between requests: take no memory until the peer sends something, so an idle
        // connection costs nothing but its socket.
        match tokio::time::timeout(idle, rd.readable()).await {
            Err(_) => return Err(idle_end(idle)),
            Ok(Err(e)) => return Err(ConnectionEnd::Io(e)),
            Ok(Ok(())) => {}
        }
    }
    inbuf.reserve(reserve_bytes);
    match tokio::time::timeout(idle, rd.read_buf(inbuf)).await {
        Err(_) => Err(idle_end(idle)),
        Ok(Err(e)) => Err(ConnectionEnd::Io(e)),
        Ok(Ok(n)) => Ok(n),
    }
}

fn idle_end(idle: Duration) -> ConnectionEnd {
    ConnectionEnd::Idle {
        idle_ms: u64::try_from(idle.as_millis()).unwrap_or(u64::MAX),
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, shared: &Shared) -> ConnectionEnd {
    let broker = &shared.broker;
    let limit_bytes = broker.config().socket_request_max_bytes;
    if let Err(e) = stream.set_nodelay(true) {
        return ConnectionEnd::Io(e);
    }
    let (mut rd, mut wr) = stream.into_split();
    // One buffer per connection, read into directly: each frame is split off it and handed
    // to the handlers as `Bytes`; once they dropped it, the next `reserve` reuses the same
    // memory instead of page-faulting a fresh allocation in for every request. It starts
    // empty: nothing is allocated before the peer sends.
    let mut inbuf = BytesMut::new();
    loop {
        while inbuf.len() < 4 {
            match read_more(&mut rd, &mut inbuf, READ_BUFFER_BYTES, shared.idle).await {
                Ok(0) => return ConnectionEnd::Eof,
                Ok(_) => {}
                Err(end) => return end,
            }
        }
        let size = i32::from_be_bytes([inbuf[0], inbuf[1], inbuf[2], inbuf[3]]);
        let Some(size_bytes) = u32::try_from(size).ok().filter(|n| *n <= limit_bytes) else {
            return ConnectionEnd::FrameTooLarge {
                size_bytes: i64::from(size),
                limit_bytes,
            };
        };
        inbuf.advance(4);
        let expected = size_bytes as usize;
        // A large frame first takes its size from the node's request memory budget (Kafka's
        // memory pool): while the budget is spent, this connection waits and its bytes stay in
        // the kernel, so all connections together never hold more than the budget in large
        // requests. Held until the request is answered.
        let _budget: Option<SemaphorePermit<'_>> = if expected > UNPOOLED_FRAME_BYTES_MAX {
            // `expected` ≤ socket.request.max.bytes ≤ queued.max.request.bytes (checked at
            // load), so the acquisition can always complete once others release.
            let permit = shared.request_bytes.acquire_many(expected as u32).await;
            Some(permit.expect("the request-memory semaphore is never closed"))
        } else {
            None
        };
        // Room is asked for at most FRAME_RESERVE_BYTES_MAX at a time (the buffer may still
        // double), so a peer that announces a large frame and sends nothing holds little
        // memory: about twice what it sent, plus that.
        while inbuf.len() < expected {
            let missing = expected - inbuf.len();
            let reserve = missing.clamp(READ_BUFFER_BYTES, FRAME_RESERVE_BYTES_MAX);
            match read_more(&mut rd, &mut inbuf, reserve, shared.idle).await {
                Ok(0) => {
                    return ConnectionEnd::Truncated {
                        got: inbuf.len(),
                        expected,
                    }
                }
                Ok(_) => {}
                Err(end) => return end,
            }
        }
        let oversized = inbuf.capacity() > KEPT_READ_BUFFER_MAX_BYTES;
        let frame = inbuf.split_to(expected).freeze();
        if oversized {
            // After a large request, do not hold its memory for the connection's life.
            inbuf = BytesMut::from(&inbuf[..]);
        }
        match handlers::dispatch_from(broker, frame, Some(peer)).await {
            Ok(Outcome::Respond(out)) => {
                if let Err(e) = wr.write_all(&out).await {
                    return ConnectionEnd::Io(e);
                }
                crate::buffers::recycle(out);
            }
            Ok(Outcome::NoResponse) => {}
            Err(reason) => return ConnectionEnd::Rejected(reason),
        }
    }
}

/// Accepts connections until `shutdown` turns true, then drops every open connection.
///
/// Limits, as Kafka's SocketServer: `max.connections` in all and `max.connections.per.ip`
/// per address (a connection past either is closed on accept), `connections.max.idle.ms`,
/// and `queued.max.request.bytes` for large requests in flight.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) {
    let config = broker.config();
    let max_connections = config.max_connections;
    let max_connections_per_ip = config.max_connections_per_ip;
    let shared = Arc::new(Shared {
        request_bytes: Semaphore::new(
            usize::try_from(config.queued_max_request_bytes)
                .unwrap_or(usize::MAX)
                .min(Semaphore::MAX_PERMITS),
        ),
        idle: Duration::from_millis(config.connections_max_idle_ms),
        warnings: crate::net::default_log_limiter(),
        broker: broker.clone(),
    });
    let permits = Arc::new(Semaphore::new(max_connections));
    let per_ip = Arc::new(PerIpSlots::default());
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            // The guard `wait_for` returns is not Send; drop it inside the branch future.
            _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        if let Some(held_back) = shared.warnings.allow() {
                            tracing::warn!(error = %e, held_back, "accept failed");
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    if let Some(held_back) = shared.warnings.allow() {
                        tracing::warn!(%peer, max_connections, held_back, "too many connections; closing new one");
                    }
                    continue;
                };
                let Some(slot) = PerIpSlots::take(&per_ip, peer.ip(), max_connections_per_ip) else {
                    if let Some(held_back) = shared.warnings.allow() {
                        tracing::warn!(%peer, max_connections_per_ip, held_back, "too many connections from this address; closing new one");
                    }
                    continue;
                };
                let shared = shared.clone();
                connections.spawn(async move {
                    let end = serve_connection(stream, peer, &shared).await;
                    match end {
                        ConnectionEnd::Eof => {
                            tracing::debug!(%peer, "connection closed")
                        }
                        ConnectionEnd::Idle { idle_ms } => {
                            tracing::debug!(%peer, idle_ms, "idle connection closed")
                        }
                        // A client closing while its response is written is routine (a consumer
                        // shutting down mid-fetch), not a broker problem.
                        ConnectionEnd::Io(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                            ) =>
                        {
                            tracing::debug!(%peer, error = %e, "peer went away")
                        }
                        // A peer's bad frames: once per connection (it is closed), and at most
                        // a few per window for the whole listener.
                        other => {
                            if let Some(held_back) = shared.warnings.allow() {
                                tracing::warn!(%peer, reason = %other, held_back, "closing connection");
                            }
                        }
                    }
                    drop(slot);
                    drop(permit);
                });
            }
        }
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}
