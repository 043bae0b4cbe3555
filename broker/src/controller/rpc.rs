//! The controller listener: how quorum members talk to each other.
//!
//! One request/response protocol over TCP, separate from the Kafka listener (as KRaft's
//! `controller.listener.names`): frames `[length u32][JSON]`, one request at a time per
//! connection. It carries openraft's three RPCs (vote, append entries, install snapshot) and
//! the broker-to-controller requests that Kafka sends to the active controller: forwarded
//! metadata commands (registrations, admin requests, ISR changes, producer-id blocks) and
//! broker heartbeats.
//!
//! Every request carries the sender's cluster id once it knows one; a node that knows another
//! cluster id answers [`RpcReply::ClusterMismatch`], so nodes of two clusters never mix.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::image::{CommandResult, MetadataCommand};
use super::store::NodeId;
use super::TypeConfig;
use crate::net::PerIpSlots;

/// The largest frame either side accepts (snapshot chunks are 3 MiB by default).
pub const MAX_FRAME_BYTES: u32 = 32 * 1024 * 1024;
/// Room reserved for a frame before its bytes arrive.
const FRAME_RESERVE_BYTES: usize = 64 * 1024;
/// Connections the controller listener serves at once: the other voters and the brokers that
/// forward to this node need a handful each.
const LISTENER_CONNECTIONS_MAX: usize = 256;
/// Connections from one address the controller listener serves at once.
const LISTENER_CONNECTIONS_PER_IP_MAX: usize = 128;
/// A controller connection on which nothing arrived for this long is closed (peers send
/// heartbeats every few seconds and reconnect on demand).
const LISTENER_IDLE_MS: u64 = 600_000;
/// How long a connection attempt to a peer may take.
const CONNECT_TIMEOUT_MS: u64 = 1_000;

/// A broker's periodic heartbeat to the active controller (Kafka's BrokerHeartbeat).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    /// Broker id.
    pub broker_id: i32,
    /// Its registration (broker epoch).
    pub broker_epoch: u64,
    /// The metadata log index the broker has applied.
    pub applied_index: u64,
    /// Set during a controlled shutdown.
    pub want_shutdown: bool,
}

/// The controller's answer to a heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum HeartbeatReply {
    /// Accepted; `fenced` says whether the broker is fenced now, `shutdown_done` whether a
    /// requested controlled shutdown is complete.
    Ok {
        /// Fenced.
        fenced: bool,
        /// Controlled shutdown complete (leaderships moved away).
        shutdown_done: bool,
    },
    /// The broker's registration is unknown or stale: register again.
    Reregister,
    /// This node is not the active controller; try `leader`.
    NotController {
        /// The leader this node knows of.
        leader: Option<i32>,
    },
}

/// Why a forwarded command did not run.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum ForwardError {
    /// This node is not the leader (any more).
    #[error("not the active controller (leader: {leader:?})")]
    NotController {
        /// The leader this node knows of.
        leader: Option<i32>,
    },
    /// Raft failed.
    #[error("{0}")]
    Raft(String),
}

/// A request on the controller listener.
#[derive(Debug, Serialize, Deserialize)]
pub struct RpcRequest {
    /// The sender's cluster id, once it knows it.
    pub cluster_id: Option<String>,
    /// The sender's node id.
    pub from: i32,
    /// What it asks.
    pub body: RpcBody,
}

/// The requests.
#[derive(Debug, Serialize, Deserialize)]
pub enum RpcBody {
    /// Raft append entries.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// Raft vote.
    Vote(VoteRequest<NodeId>),
    /// Raft install snapshot (one chunk).
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A metadata command for the leader to propose.
    Forward(MetadataCommand),
    /// A broker heartbeat for the active controller.
    Heartbeat(HeartbeatRequest),
    /// Which cluster do you belong to?
    Hello,
}

/// The replies.
#[derive(Debug, Serialize, Deserialize)]
pub enum RpcReply {
    /// To AppendEntries.
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    /// To Vote.
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    /// To InstallSnapshot.
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    /// To Forward: the log index it was committed at and its result.
    Forward(Result<(u64, CommandResult), ForwardError>),
    /// To Heartbeat.
    Heartbeat(HeartbeatReply),
    /// To Hello.
    Hello {
        /// The cluster id this node knows, if any.
        cluster_id: Option<String>,
    },
    /// The receiver belongs to another cluster.
    ClusterMismatch {
        /// The receiver's cluster id.
        cluster_id: String,
    },
    /// The request could not be handled.
    Error(String),
}

/// Reads one frame; `Ok(None)` on a clean end of stream.
async fn read_frame(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len);
    if len > MAX_FRAME_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("controller frame of {len} bytes exceeds {MAX_FRAME_BYTES}"),
        ));
    }
    // The buffer grows with the bytes that arrive, never from the announced length alone, so
    // a peer that announces 32 MiB and sends nothing holds next to no memory.
    let mut buf = Vec::with_capacity((len as usize).min(FRAME_RESERVE_BYTES));
    let read = (&mut *stream)
        .take(u64::from(len))
        .read_to_end(&mut buf)
        .await?;
    if read < len as usize {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Some(buf))
}

async fn write_frame(stream: &mut TcpStream, payload: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|l| *l <= MAX_FRAME_BYTES)
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("controller frame of {} bytes is too large", payload.len()),
            )
        })?;
    let mut frame = Vec::with_capacity(payload.len() + 4);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(payload);
    stream.write_all(&frame).await
}

/// What serves the requests (the [`super::Controller`]).
pub trait RpcHandler: Send + Sync + 'static {
    /// Handles one request.
    fn handle(&self, req: RpcRequest) -> impl std::future::Future<Output = RpcReply> + Send;
}

/// Accepts connections on the controller listener until `stop` turns true, at most
/// [`LISTENER_CONNECTIONS_MAX`] at once and [`LISTENER_CONNECTIONS_PER_IP_MAX`] per address;
/// a connection idle for [`LISTENER_IDLE_MS`] is closed.
pub async fn serve<H: RpcHandler>(
    listener: TcpListener,
    handler: Arc<H>,
    mut stop: watch::Receiver<bool>,
) {
    let connections = Arc::new(tokio::sync::Semaphore::new(LISTENER_CONNECTIONS_MAX));
    let per_ip = Arc::new(PerIpSlots::default());
    let warnings = Arc::new(crate::net::default_log_limiter());
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        let (mut stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                if let Some(held_back) = warnings.allow() {
                    tracing::warn!(error = %e, held_back, "controller listener accept failed");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            if let Some(held_back) = warnings.allow() {
                tracing::warn!(%peer, held_back, "too many controller connections; closing new one");
            }
            continue;
        };
        let Some(slot) = PerIpSlots::take(&per_ip, peer.ip(), LISTENER_CONNECTIONS_PER_IP_MAX)
        else {
            if let Some(held_back) = warnings.allow() {
                tracing::warn!(%peer, held_back, "too many controller connections from this address; closing new one");
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let mut stop = stop.clone();
        let warnings = warnings.clone();
        tokio::spawn(async move {
            let idle = Duration::from_millis(LISTENER_IDLE_MS);
            loop {
                let frame = tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    frame = tokio::time::timeout(idle, read_frame(&mut stream)) => frame,
                };
                let bytes = match frame {
                    Ok(Ok(Some(b))) => b,
                    Ok(Ok(None)) => break,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "controller connection closed");
                        break;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "idle controller connection closed");
                        break;
                    }
                };
                let reply = match serde_json::from_slice::<RpcRequest>(&bytes) {
                    Ok(req) => handler.handle(req).await,
                    Err(e) => {
                        if let Some(held_back) = warnings.allow() {
                            tracing::warn!(%peer, error = %e, held_back, "malformed controller request");
                        }
                        RpcReply::Error(format!("malformed request: {e}"))
                    }
                };
                let Ok(out) = serde_json::to_vec(&reply) else {
                    break;
                };
                if let Err(e) = write_frame(&mut stream, &out).await {
                    tracing::debug!(%peer, error = %e, "controller reply not sent");
                    break;
                }
            }
            drop(slot);
            drop(permit);
        });
    }
}

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No connection could be made.
    #[error("cannot connect to node {node} at {addr}: {reason}")]
    Unreachable {
        /// Peer.
        node: i32,
        /// Address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The connection failed mid-call or timed out.
    #[error("call to node {node} failed: {reason}")]
    Network {
        /// Peer.
        node: i32,
        /// Why.
        reason: String,
    },
    /// The peer belongs to another cluster.
    #[error("node {node} belongs to cluster {theirs}, this node to cluster {ours}")]
    ClusterMismatch {
        /// Peer.
        node: i32,
        /// Its cluster id.
        theirs: String,
        /// Ours.
        ours: String,
    },
}

/// Shared identity stamped on every outgoing request.
#[derive(Clone)]
pub struct Identity {
    /// This node.
    pub node_id: i32,
    /// This node's cluster id once known.
    pub cluster_id: Arc<Mutex<Option<String>>>,
}

impl Identity {
    fn cluster_id(&self) -> Option<String> {
        self.cluster_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// One connection to one peer, reopened after any failure.
pub struct PeerClient {
    identity: Identity,
    node: i32,
    addr: String,
    stream: Option<TcpStream>,
}

impl PeerClient {
    /// A client of `node` at `addr` (not connected until the first call).
    pub fn new(identity: Identity, node: i32, addr: String) -> PeerClient {
        PeerClient {
            identity,
            node,
            addr,
            stream: None,
        }
    }

    /// Sends `body` and waits up to `timeout` for the reply.
    pub async fn call(&mut self, body: RpcBody, timeout: Duration) -> Result<RpcReply, CallError> {
        let req = RpcRequest {
            cluster_id: self.identity.cluster_id(),
            from: self.identity.node_id,
            body,
        };
        let payload = serde_json::to_vec(&req).map_err(|e| CallError::Network {
            node: self.node,
            reason: e.to_string(),
        })?;
        if self.stream.is_none() {
            let connect = tokio::time::timeout(
                Duration::from_millis(CONNECT_TIMEOUT_MS),
                TcpStream::connect(&self.addr),
            )
            .await;
            let stream = match connect {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    return Err(CallError::Unreachable {
                        node: self.node,
                        addr: self.addr.clone(),
                        reason: e.to_string(),
                    })
                }
                Err(_) => {
                    return Err(CallError::Unreachable {
                        node: self.node,
                        addr: self.addr.clone(),
                        reason: "connect timed out".into(),
                    })
                }
            };
            let _ = stream.set_nodelay(true);
            self.stream = Some(stream);
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(CallError::Network {
                node: self.node,
                reason: "no connection".into(),
            });
        };
        let exchange = async {
            write_frame(stream, &payload).await?;
            read_frame(stream).await
        };
        let reply = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(Some(bytes))) => serde_json::from_slice::<RpcReply>(&bytes)
                .map_err(|e| format!("malformed reply: {e}")),
            Ok(Ok(None)) => Err("connection closed".to_string()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no reply within {} ms", timeout.as_millis())),
        };
        match reply {
            Ok(RpcReply::ClusterMismatch { cluster_id }) => {
                self.stream = None;
                Err(CallError::ClusterMismatch {
                    node: self.node,
                    theirs: cluster_id,
                    ours: self.identity.cluster_id().unwrap_or_default(),
                })
            }
            Ok(r) => Ok(r),
            Err(reason) => {
                self.stream = None;
                Err(CallError::Network {
                    node: self.node,
                    reason,
                })
            }
        }
    }
}

/// Clients of every voter, one connection each for requests outside Raft replication.
pub struct Peers {
    identity: Identity,
    addrs: HashMap<i32, String>,
    clients: HashMap<i32, tokio::sync::Mutex<PeerClient>>,
}

impl Peers {
    /// Clients of the given voters.
    pub fn new(identity: Identity, voters: &[(i32, SocketAddr)]) -> Peers {
        let addrs: HashMap<i32, String> = voters
            .iter()
            .map(|(id, addr)| (*id, addr.to_string()))
            .collect();
        let clients = addrs
            .iter()
            .map(|(id, addr)| {
                (
                    *id,
                    tokio::sync::Mutex::new(PeerClient::new(identity.clone(), *id, addr.clone())),
                )
            })
            .collect();
        Peers {
            identity,
            addrs,
            clients,
        }
    }

    /// Calls voter `node`.
    pub async fn call(
        &self,
        node: i32,
        body: RpcBody,
        timeout: Duration,
    ) -> Result<RpcReply, CallError> {
        let Some(client) = self.clients.get(&node) else {
            return Err(CallError::Unreachable {
                node,
                addr: String::new(),
                reason: "not a controller quorum voter".into(),
            });
        };
        client.lock().await.call(body, timeout).await
    }

    /// The network factory openraft uses (its own connections, one per replication stream).
    pub fn raft_network(&self) -> RaftNet {
        RaftNet {
            identity: self.identity.clone(),
            addrs: self.addrs.clone(),
        }
    }
}

/// openraft's view of the network.
pub struct RaftNet {
    identity: Identity,
    addrs: HashMap<i32, String>,
}

impl RaftNetworkFactory<TypeConfig> for RaftNet {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        let id = i32::try_from(target).unwrap_or(-1);
        let addr = self
            .addrs
            .get(&id)
            .cloned()
            .unwrap_or_else(|| node.addr.clone());
        PeerClient::new(self.identity.clone(), id, addr)
    }
}

fn rpc_error<E: std::error::Error>(e: CallError) -> RPCError<NodeId, BasicNode, E> {
    match &e {
        CallError::Unreachable { .. } | CallError::ClusterMismatch { .. } => {
            RPCError::Unreachable(Unreachable::new(&e))
        }
        CallError::Network { .. } => RPCError::Network(NetworkError::new(&e)),
    }
}

fn unexpected<E: std::error::Error>(node: i32, reply: RpcReply) -> RPCError<NodeId, BasicNode, E> {
    let e = CallError::Network {
        node,
        reason: format!("unexpected reply {reply:?}"),
    };
    RPCError::Network(NetworkError::new(&e))
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let node = self.node;
        match self
            .call(RpcBody::AppendEntries(rpc), option.hard_ttl())
            .await
            .map_err(rpc_error)?
        {
            RpcReply::AppendEntries(Ok(r)) => Ok(r),
            RpcReply::AppendEntries(Err(e)) => {
                Err(RPCError::RemoteError(RemoteError::new(target(node), e)))
            }
            other => Err(unexpected(node, other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let node = self.node;
        match self
            .call(RpcBody::InstallSnapshot(rpc), option.hard_ttl())
            .await
            .map_err(rpc_error)?
        {
            RpcReply::InstallSnapshot(Ok(r)) => Ok(r),
            RpcReply::InstallSnapshot(Err(e)) => {
                Err(RPCError::RemoteError(RemoteError::new(target(node), e)))
            }
            other => Err(unexpected(node, other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let node = self.node;
        match self
            .call(RpcBody::Vote(rpc), option.hard_ttl())
            .await
            .map_err(rpc_error)?
        {
            RpcReply::Vote(Ok(r)) => Ok(r),
            RpcReply::Vote(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(target(node), e))),
            other => Err(unexpected(node, other)),
        }
    }
}

fn target(node: i32) -> NodeId {
    u64::try_from(node).unwrap_or_default()
}
