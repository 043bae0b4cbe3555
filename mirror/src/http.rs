//! The daemon's HTTP server (`/metrics`, `/status`, and the flow controls the runbooks use:
//! `POST /flows/NAME/stop`, `/start`, `/checkpoint`, `/commit-checkpoints`, `/cursors`,
//! `/adopt`, `/commit-back`) and the client `strait mirror status` and the runbooks use.
//!
//! The controls answer only clients whose address is in the config's `http_control_from`
//! (loopback by default); anyone else gets 403 and nothing changes. No route reads a body,
//! so a malformed request is refused by the parser or the router before any handler runs.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::control::{ControlError, Controls};
use crate::metrics::{Metrics, Status};

/// The largest `/status` answer the client reads (a daemon with very many partitions).
pub const STATUS_BYTES_MAX: usize = 64 << 20;

/// What the HTTP API serves from.
pub struct Api {
    /// The daemon's metrics and status.
    pub metrics: Arc<Metrics>,
    /// The flows' controls.
    pub controls: Arc<Controls>,
    /// Addresses allowed to use the controls.
    pub control_from: Vec<IpAddr>,
}

/// The router: `/metrics` (Prometheus text), `/status` (JSON), the flow controls, `/` (what
/// is where).
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async {
                "strait mirror: GET /metrics (Prometheus), GET /status (JSON), \
                 POST /flows/NAME/stop|start|checkpoint|commit-checkpoints|cursors|adopt|commit-back (from the configured addresses)\n"
            }),
        )
        .route(
            "/metrics",
            get(|State(api): State<Arc<Api>>| async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    api.metrics.prometheus(),
                )
                    .into_response()
            }),
        )
        .route(
            "/status",
            get(|State(api): State<Arc<Api>>| async move { Json(api.metrics.status()) }),
        )
        .route("/flows/{flow}/{action}", post(control))
        .with_state(api)
}

/// `POST /flows/NAME/ACTION`.
async fn control(
    State(api): State<Arc<Api>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    Path((flow, action)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let error = |status: StatusCode, message: String| {
        (
            status,
            Json(serde_json::json!({ "flow": flow, "error": message })),
        )
            .into_response()
    };
    // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d.
    if !api.control_from.contains(&peer.ip().to_canonical()) {
        tracing::warn!(%peer, flow, action, "flow control refused: address not in http_control_from");
        return error(
            StatusCode::FORBIDDEN,
            format!("{} may not control flows (http_control_from)", peer.ip()),
        );
    }
    let state = |reached: bool, there: &str, going: &str| serde_json::json!({ "flow": flow, "state": if reached { there } else { going } });
    let result = match action.as_str() {
        "stop" => api
            .controls
            .stop(&flow)
            .await
            .map(|r| state(r, "stopped", "stopping")),
        "start" => api
            .controls
            .start(&flow)
            .await
            .map(|r| state(r, "running", "starting")),
        "checkpoint" => api
            .controls
            .checkpoint(&flow)
            .await
            .map(|t| serde_json::json!({ "flow": flow, "translations": t })),
        "commit-checkpoints" => api
            .controls
            .commit_last_checkpoints(&flow)
            .await
            .map(|c| serde_json::json!({ "flow": flow, "commits": c })),
        "cursors" => api.controls.cursors(&flow).await.map(|c| {
            let cursors: Vec<_> = c
                .into_iter()
                .map(|(topic, partition, c)| {
                    serde_json::json!({ "topic": topic, "partition": partition,
                        "source_next": c.source_next, "target_next": c.target_next })
                })
                .collect();
            serde_json::json!({ "flow": flow, "cursors": cursors })
        }),
        "adopt" => match AdoptQuery::parse(query.as_deref()) {
            Ok(q) => api
                .controls
                .adopt(&flow, &q.topic, q.partition, q.expected, q.count)
                .await
                .map(|c| {
                    serde_json::json!({ "flow": flow, "topic": q.topic, "partition": q.partition,
                        "source_next": c.source_next, "target_next": c.target_next })
                }),
            Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
        },
        "resolve-divergence" => match ResolveQuery::parse(query.as_deref()) {
            Ok(q) => api
                .controls
                .resolve_divergence(&flow, &q.topic, q.partition, q.from)
                .await
                .map(|r| serde_json::json!({ "flow": flow, "resolved": r })),
            Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
        },
        "commit-back" => api
            .controls
            .commit_back(&flow)
            .await
            .map(|c| serde_json::json!({ "flow": flow, "commits": c })),
        other => {
            return error(
                StatusCode::NOT_FOUND,
                format!("unknown action `{other}` (stop, start, checkpoint, commit-checkpoints, cursors, adopt, commit-back, resolve-divergence)"),
            )
        }
    };
    match result {
        Ok(body) => {
            let pending = matches!(body["state"].as_str(), Some("stopping" | "starting"));
            let status = if pending {
                StatusCode::ACCEPTED
            } else {
                StatusCode::OK
            };
            (status, Json(body)).into_response()
        }
        Err(e) => {
            let status = match &e {
                ControlError::UnknownFlow(_) => StatusCode::NOT_FOUND,
                ControlError::Stopped(_) | ControlError::Running(_) | ControlError::Refused(_) => {
                    StatusCode::CONFLICT
                }
                ControlError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
                ControlError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                ControlError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(status, e.to_string())
        }
    }
}

/// `adopt`'s query: `topic=T&partition=P&source=S&target=T&count=N` (a topic name needs no
/// escaping: Kafka allows only ASCII letters, digits, `.`, `_` and `-`).
struct AdoptQuery {
    topic: String,
    partition: i32,
    expected: crate::offsets::Cursor,
    count: i64,
}

/// A control's query `k=v&...`: every key known, none given twice.
struct Query<'a> {
    fields: std::collections::BTreeMap<&'a str, &'a str>,
    known: &'static [&'static str],
}

impl<'a> Query<'a> {
    fn parse(query: Option<&'a str>, known: &'static [&'static str]) -> Result<Query<'a>, String> {
        let mut fields: std::collections::BTreeMap<&str, &str> = Default::default();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}` is not KEY=VALUE"))?;
            if !known.contains(&k) {
                return Err(format!("unknown parameter `{k}`"));
            }
            if fields.insert(k, v).is_some() {
                return Err(format!("`{k}` given twice"));
            }
        }
        Ok(Query { fields, known })
    }

    fn take(&self, k: &str) -> Result<&'a str, String> {
        self.fields
            .get(k)
            .copied()
            .ok_or_else(|| format!("missing `{k}` ({})", self.known.join(", ")))
    }

    fn number(&self, k: &str) -> Result<i64, String> {
        let v = self.take(k)?;
        v.parse().map_err(|_| format!("`{k}={v}` is not a number"))
    }

    fn topic(&self) -> Result<String, String> {
        let topic = self.take("topic")?;
        if topic.is_empty()
            || !topic
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(format!("`{topic}` is not a topic name"));
        }
        Ok(topic.to_string())
    }

    fn partition(&self) -> Result<i32, String> {
        i32::try_from(self.number("partition")?).map_err(|_| "partition out of range".to_string())
    }
}

impl AdoptQuery {
    fn parse(query: Option<&str>) -> Result<AdoptQuery, String> {
        let q = Query::parse(query, &["topic", "partition", "source", "target", "count"])?;
        Ok(AdoptQuery {
            topic: q.topic()?,
            partition: q.partition()?,
            expected: crate::offsets::Cursor {
                source_next: q.number("source")?,
                target_next: q.number("target")?,
            },
            count: q.number("count")?,
        })
    }
}

/// `resolve-divergence`'s query: `topic=T&partition=P[&from=N]`.
struct ResolveQuery {
    topic: String,
    partition: i32,
    from: Option<i64>,
}

impl ResolveQuery {
    fn parse(query: Option<&str>) -> Result<ResolveQuery, String> {
        let q = Query::parse(query, &["topic", "partition", "from"])?;
        Ok(ResolveQuery {
            topic: q.topic()?,
            partition: q.partition()?,
            from: match q.fields.contains_key("from") {
                true => Some(q.number("from")?),
                false => None,
            },
        })
    }
}

/// The client's address, for the controls' address check.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, BoundedListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, BoundedListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

/// What the HTTP server lets clients hold.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Connections served at once (Prometheus, the console, an operator's curl).
    pub connections_max: usize,
    /// Connections from one address served at once.
    pub connections_per_ip_max: usize,
    /// A connection on which nothing moved for this long is closed, so a client that sends
    /// its request a byte at a time, or never, does not hold a slot for long.
    pub idle_ms: u64,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            connections_max: 64,
            connections_per_ip_max: 16,
            idle_ms: 10_000,
        }
    }
}

/// Serves `router` on `listener` until `stop` completes, within [`HttpLimits::default`]: a
/// connection past either cap is closed on accept, and one without traffic for the idle time
/// is closed. Requests are parsed by hyper, whose header limits (100 headers, 400 KiB of
/// head) apply; no route reads a body.
pub async fn serve(
    listener: TcpListener,
    api: Api,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, api, stop, HttpLimits::default()).await
}

/// [`serve`] with other limits.
pub async fn serve_with(
    listener: TcpListener,
    api: Api,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
    limits: HttpLimits,
) -> std::io::Result<()> {
    let listener = BoundedListener {
        inner: listener,
        limits,
        connections: Arc::new(Semaphore::new(limits.connections_max)),
        per_ip: Arc::new(Mutex::new(HashMap::new())),
    };
    axum::serve(
        listener,
        router(Arc::new(api)).into_make_service_with_connect_info::<Peer>(),
    )
    .with_graceful_shutdown(stop)
    .await
}

/// A TCP listener that hands out at most so many connections at once, overall and per
/// address.
struct BoundedListener {
    inner: TcpListener,
    limits: HttpLimits,
    connections: Arc<Semaphore>,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl axum::serve::Listener for BoundedListener {
    type Io = BoundedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (BoundedStream, SocketAddr) {
        loop {
            let (stream, peer) = match self.inner.accept().await {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = self.connections.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "too many HTTP connections; closing new one");
                continue;
            };
            {
                let mut open = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
                let n = open.entry(peer.ip()).or_insert(0);
                if *n >= self.limits.connections_per_ip_max {
                    tracing::debug!(%peer, "too many HTTP connections from this address; closing new one");
                    continue;
                }
                *n += 1;
            }
            let idle = Duration::from_millis(self.limits.idle_ms);
            return (
                BoundedStream {
                    inner: stream,
                    idle,
                    deadline: Box::pin(tokio::time::sleep(idle)),
                    _permit: permit,
                    ip: peer.ip(),
                    per_ip: self.per_ip.clone(),
                },
                peer,
            );
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// One connection of a [`BoundedListener`]: fails with `TimedOut` once nothing moved for its
/// idle time, and gives its slots back when dropped.
struct BoundedStream {
    inner: TcpStream,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
    ip: IpAddr,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl BoundedStream {
    /// After a poll of the socket: pushes the deadline on if something moved, else reports a
    /// deadline that passed.
    fn after<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<T>>,
        moved: bool,
    ) -> Poll<std::io::Result<T>> {
        match polled {
            Poll::Ready(r) => {
                if moved {
                    let next = Instant::now() + self.idle;
                    self.deadline.as_mut().reset(next);
                }
                Poll::Ready(r)
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(std::io::ErrorKind::TimedOut.into())),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl Drop for BoundedStream {
    fn drop(&mut self) {
        let mut open = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

impl AsyncRead for BoundedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let moved = buf.filled().len() > before;
        self.after(cx, polled, moved)
    }
}

impl AsyncWrite for BoundedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        let moved = matches!(polled, Poll::Ready(Ok(n)) if n > 0);
        self.after(cx, polled, moved)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
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

/// One HTTP/1.0 exchange with a daemon: sends `request`, reads the whole answer (at most
/// [`STATUS_BYTES_MAX`]) and returns its status line, its status code (`None` if the line is
/// not HTTP/1.x) and its body.
async fn exchange(
    addr: SocketAddr,
    request: String,
    timeout: Duration,
) -> Result<(String, Option<u16>, Vec<u8>), StatusError> {
    let io = |source| StatusError::Io { addr, source };
    let response = tokio::time::timeout(timeout, async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(request.as_bytes()).await?;
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
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| StatusError::Invalid {
            addr,
            reason: "no HTTP header".into(),
        })?;
    let head = String::from_utf8_lossy(&response[..split]);
    let line = head.lines().next().unwrap_or_default().to_string();
    let code = line
        .starts_with("HTTP/1.")
        .then(|| line.split_whitespace().nth(1)?.parse().ok())
        .flatten();
    Ok((line, code, response[split + 4..].to_vec()))
}

/// Sends `POST /flows/FLOW/ACTION` to a daemon (HTTP/1.0, one request) and returns the JSON
/// answer; an answer other than 2xx is an error carrying the daemon's message.
pub async fn post_control(
    addr: SocketAddr,
    flow: &str,
    action: &str,
    timeout: Duration,
) -> Result<serde_json::Value, StatusError> {
    let request = format!(
        "POST /flows/{flow}/{action} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n"
    );
    let (line, code, body) = exchange(addr, request, timeout).await?;
    let invalid = |reason: String| StatusError::Invalid { addr, reason };
    let body: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| invalid(format!("{line}: {e}")))?;
    if !code.is_some_and(|c| (200..300).contains(&c)) {
        let message = body["error"].as_str().unwrap_or_default();
        return Err(invalid(format!("{line}: {message}")));
    }
    Ok(body)
}

/// Reads `/status` from a daemon (HTTP/1.0, one request).
pub async fn fetch_status(addr: SocketAddr, timeout: Duration) -> Result<Status, StatusError> {
    let request = format!("GET /status HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let (line, code, body) = exchange(addr, request, timeout).await?;
    let invalid = |reason: String| StatusError::Invalid { addr, reason };
    if code != Some(200) {
        return Err(invalid(line));
    }
    serde_json::from_slice(&body).map_err(|e| invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get_status(addr: SocketAddr) -> Result<Status, StatusError> {
        fetch_status(addr, Duration::from_secs(5)).await
    }

    /// Whether the server closed `stream` within `within` (a read returns end of stream).
    async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(within, stream.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    #[tokio::test]
    async fn connections_are_capped_per_address_and_silent_ones_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = HttpLimits {
            connections_max: 8,
            connections_per_ip_max: 3,
            idle_ms: 500,
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let dir = tempfile::tempdir().unwrap();
        let server = tokio::spawn(serve_with(
            listener,
            Api {
                metrics: Arc::new(Metrics::default()),
                controls: Arc::new(Controls::load(dir.path(), &[]).unwrap()),
                control_from: vec!["127.0.0.1".parse().unwrap()],
            },
            async move {
                let _ = stop_rx.await;
            },
            limits,
        ));
        // Three silent connections from 127.0.0.1 take its slots; a fourth is closed at once.
        let mut silent = Vec::new();
        for _ in 0..3 {
            silent.push(TcpStream::connect(addr).await.unwrap());
        }
        let mut fourth = TcpStream::connect(addr).await.unwrap();
        assert!(closed_within(&mut fourth, Duration::from_millis(300)).await);
        // Another address is still served meanwhile.
        let other = tokio::net::TcpSocket::new_v4().unwrap();
        other.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut other = other.connect(addr).await.unwrap();
        other
            .write_all(b"GET /status HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        other.read_to_end(&mut answer).await.unwrap();
        assert!(
            answer.starts_with(b"HTTP/1.0 200"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        // A client sending its request a byte at a time, slower than the idle time, is cut.
        let mut slow = silent.pop().unwrap();
        slow.write_all(b"G").await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        slow.write_all(b"E").await.unwrap();
        assert!(closed_within(&mut slow, Duration::from_secs(3)).await);
        // The silent ones are closed after the idle time, and their slots come back.
        for mut s in silent {
            assert!(closed_within(&mut s, Duration::from_secs(3)).await);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(get_status(addr).await.is_ok());
        let _ = stop_tx.send(());
        server.await.unwrap().unwrap();
    }

    /// Sends raw bytes from `source` and returns the whole answer.
    async fn raw(addr: SocketAddr, source: &str, request: &[u8]) -> String {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        let mut s = socket.connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await.unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[test]
    fn an_adoption_query_is_read_whole_or_refused() {
        let q = AdoptQuery::parse(Some(
            "topic=orders.v2&partition=3&source=10&target=12&count=5",
        ))
        .unwrap();
        assert_eq!(
            (
                q.topic.as_str(),
                q.partition,
                q.expected.source_next,
                q.expected.target_next,
                q.count
            ),
            ("orders.v2", 3, 10, 12, 5)
        );
        for (bad, why) in [
            (None, "missing `topic`"),
            (
                Some("topic=o&partition=0&source=1&target=1"),
                "missing `count`",
            ),
            (
                Some("topic=o&partition=0&source=1&target=1&count=x"),
                "not a number",
            ),
            (
                Some("topic=o&partition=0&source=1&target=1&count=1&colour=red"),
                "unknown parameter",
            ),
            (
                Some("topic=o&topic=p&partition=0&source=1&target=1&count=1"),
                "given twice",
            ),
            (
                Some("topic=a%20b&partition=0&source=1&target=1&count=1"),
                "not a topic name",
            ),
            (
                Some("topic=o&partition=9999999999&source=1&target=1&count=1"),
                "out of range",
            ),
            (Some("topic"), "not KEY=VALUE"),
        ] {
            let err = AdoptQuery::parse(bad).err().unwrap();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[tokio::test]
    async fn flow_controls_answer_only_allowed_addresses_and_a_bad_request_changes_nothing() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let controls = Arc::new(Controls::load(dir.path(), &["f".to_string()]).unwrap());
        // A supervisor that follows the operator's wish, as the daemon's does.
        let control_of = controls.clone();
        let follower = tokio::spawn(async move {
            let control = control_of.flow("f").unwrap();
            control.set_running(true);
            let mut wish = control.stopped();
            loop {
                if wish.changed().await.is_err() {
                    return;
                }
                let stopped = *wish.borrow();
                control.set_running(!stopped);
            }
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            Api {
                metrics: Arc::new(Metrics::default()),
                controls: controls.clone(),
                control_from: vec!["127.0.0.2".parse().unwrap()],
            },
            async move {
                let _ = stop_rx.await;
            },
        ));
        let stop = b"POST /flows/f/stop HTTP/1.0\r\n\r\n";
        // Not from an allowed address: refused, nothing changes.
        let answer = raw(addr, "127.0.0.1", stop).await;
        assert!(answer.starts_with("HTTP/1.0 403"), "{answer}");
        assert!(!controls.is_stopped("f"));
        // Malformed or misdirected requests from an allowed address change nothing either.
        for (request, status) in [
            (&b"BLAH\r\n\r\n"[..], "400"),
            (b"GET /flows/f/stop HTTP/1.0\r\n\r\n", "405"),
            (b"POST /flows/f/explode HTTP/1.0\r\n\r\n", "404"),
            (b"POST /flows/nope/stop HTTP/1.0\r\n\r\n", "404"),
            (b"POST /flows/f HTTP/1.0\r\n\r\n", "404"),
        ] {
            let answer = raw(addr, "127.0.0.2", request).await;
            assert!(
                answer.starts_with(&format!("HTTP/1.0 {status}"))
                    || answer.starts_with(&format!("HTTP/1.1 {status}")),
                "{}: {answer}",
                String::from_utf8_lossy(request)
            );
            assert!(!controls.is_stopped("f"));
        }
        // From an allowed address: stopped (and on disk), then started.
        let answer = raw(addr, "127.0.0.2", stop).await;
        assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
        assert!(answer.contains("\"state\":\"stopped\""), "{answer}");
        assert!(Controls::load(dir.path(), &["f".to_string()])
            .unwrap()
            .is_stopped("f"));
        let answer = raw(addr, "127.0.0.2", b"POST /flows/f/start HTTP/1.0\r\n\r\n").await;
        assert!(answer.contains("\"state\":\"running\""), "{answer}");
        assert!(!controls.is_stopped("f"));
        let _ = stop_tx.send(());
        server.await.unwrap().unwrap();
        follower.abort();
    }
}
