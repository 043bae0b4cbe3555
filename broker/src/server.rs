//! The Kafka listener: accepts connections, reads length-prefixed frames, hands each to
//! `handlers::dispatch` and writes the responses back in request order.
//!
//! One request is processed at a time per connection, as Kafka does (it mutes a channel while a
//! request is in flight), which gives in-order responses for free.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::broker::Broker;
use crate::handlers::{self, Outcome};

/// Smallest read into a connection's buffer.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// Largest read buffer a connection keeps between requests. A producer's frames (librdkafka
/// batches up to 1 MB by default) fit, so its buffer is reused; after a larger frame the
/// buffer is let go, so 4096 idle connections hold at most this much each.
const KEPT_READ_BUFFER_MAX_BYTES: usize = 4 * 1024 * 1024;
/// Frame memory reserved up front: enough for a default-sized produce batch in one allocation,
/// small enough that a peer announcing a huge frame and sending nothing holds little memory.
const FRAME_RESERVE_BYTES_MAX: usize = 2 * 1024 * 1024;

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
    #[error("{0}")]
    Rejected(#[from] handlers::CloseReason),
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
) -> ConnectionEnd {
    let limit_bytes = broker.config().socket_request_max_bytes;
    if let Err(e) = stream.set_nodelay(true) {
        return ConnectionEnd::Io(e);
    }
    let (mut rd, mut wr) = stream.into_split();
    // One buffer per connection, read into directly: each frame is split off it and handed
    // to the handlers as `Bytes`; once they dropped it, the next `reserve` reuses the same
    // memory instead of page-faulting a fresh allocation in for every request.
    let mut inbuf = BytesMut::with_capacity(READ_BUFFER_BYTES);
    loop {
        while inbuf.len() < 4 {
            inbuf.reserve(READ_BUFFER_BYTES);
            match rd.read_buf(&mut inbuf).await {
                Ok(0) => return ConnectionEnd::Eof,
                Ok(_) => {}
                Err(e) => return ConnectionEnd::Io(e),
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
        // Room is asked for at most FRAME_RESERVE_BYTES_MAX at a time (the buffer may still
        // double), so a peer that announces a large frame and sends nothing holds little
        // memory: about twice what it sent, plus that.
        let expected = size_bytes as usize;
        while inbuf.len() < expected {
            let missing = expected - inbuf.len();
            inbuf.reserve(missing.clamp(READ_BUFFER_BYTES, FRAME_RESERVE_BYTES_MAX));
            match rd.read_buf(&mut inbuf).await {
                Ok(0) => {
                    return ConnectionEnd::Truncated {
                        got: inbuf.len(),
                        expected,
                    }
                }
                Ok(_) => {}
                Err(e) => return ConnectionEnd::Io(e),
            }
        }
        let oversized = inbuf.capacity() > KEPT_READ_BUFFER_MAX_BYTES;
        let frame = inbuf.split_to(expected).freeze();
        if oversized {
            // After a large request, do not hold its memory for the connection's life.
            inbuf = BytesMut::from(&inbuf[..]);
        }
        match handlers::dispatch_from(&broker, frame, Some(peer)).await {
            Ok(Outcome::Respond(out)) => {
                if let Err(e) = wr.write_all(&out).await {
                    return ConnectionEnd::Io(e);
                }
                crate::buffers::recycle(out);
            }
            Ok(Outcome::NoResponse) => {}
            Err(reason) => {
                tracing::warn!(%peer, %reason, "closing connection");
                return ConnectionEnd::Rejected(reason);
            }
        }
    }
}

/// Accepts connections until `shutdown` turns true, then drops every open connection.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) {
    let max_connections = broker.config().max_connections;
    let permits = Arc::new(Semaphore::new(max_connections));
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
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, max_connections, "too many connections; closing new one");
                    continue;
                };
                let broker = broker.clone();
                connections.spawn(async move {
                    let end = serve_connection(stream, peer, broker).await;
                    match end {
                        ConnectionEnd::Eof => tracing::debug!(%peer, "connection closed"),
                        ConnectionEnd::Rejected(_) => {}
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
                        other => tracing::warn!(%peer, reason = %other, "connection closed"),
                    }
                    drop(permit);
                });
            }
        }
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}
