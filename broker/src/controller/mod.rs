//! The controller: every node is one voter of the metadata quorum (KRaft's combined mode).
//!
//! The metadata log is replicated with openraft; what it holds, applied, is the
//! [`MetadataImage`] (brokers, topics, partition leaders, ISRs and epochs, configs, producer-id
//! blocks). Every node applies every committed command itself, so every node's broker reads
//! cluster metadata from its own copy of the image, published on a watch channel.
//!
//! The Raft leader is the active controller. Besides proposing what brokers and admin requests
//! ask for (forwarded to it by whichever node received them), it does what Kafka's
//! `QuorumController` does on a timer: it tracks broker heartbeats and fences a broker whose
//! last heartbeat is older than `broker.session.timeout.ms`, which moves the broker's
//! leaderships to other ISR members (see [`image`]).
//!
//! A cluster id is chosen once, by the first leader, and committed as the first command. A node
//! learns it from the log and records it in `meta.properties`; on every later start the id is
//! checked against the other voters, and a node whose data directory belongs to another
//! cluster refuses to start.

pub mod image;
pub mod rpc;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Raft, ServerState};
use tokio::net::TcpListener;
use tokio::sync::watch;
use uuid::Uuid;

use image::{CommandResult, MetadataCommand, MetadataImage};
use rpc::{
    CallError, ForwardError, HeartbeatReply, HeartbeatRequest, Identity, Peers, RpcBody, RpcReply,
    RpcRequest,
};
use store::{LogStore, NodeId, StateMachine};

openraft::declare_raft_types!(
    /// The quorum's types: metadata commands in, command results out.
    pub TypeConfig:
        D = MetadataCommand,
        R = CommandResult,
        NodeId = u64,
        Node = BasicNode,
);

/// How often the active controller checks broker sessions.
const SESSION_CHECK_INTERVAL_MS: u64 = 100;
/// A gap this long between two session checks means this process was not running.
const PAUSE_DETECTION_MS: u64 = 1_000;
/// How long one RPC to a peer may take.
const RPC_TIMEOUT_MS: u64 = 5_000;
/// How long a stopping active controller lets its final heartbeat round reach the followers
/// (two of openraft's 100 ms heartbeat intervals).
const HANDOFF_MS: u64 = 200;

/// What the controller needs from the node's configuration.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// This node.
    pub node_id: i32,
    /// The quorum voters and their controller listeners (`controller.quorum.voters`); empty
    /// means a one-node quorum of this node alone.
    pub voters: Vec<(i32, SocketAddr)>,
    /// The node's data directory (the metadata log lives in `__cluster_metadata/` below it).
    pub data_dir: PathBuf,
    /// `broker.session.timeout.ms`.
    pub broker_session_timeout_ms: u64,
    /// The cluster id from `meta.properties`, if this data directory has one.
    pub known_cluster_id: Option<String>,
}

/// Why the controller could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The metadata directory could not be opened.
    #[error("cannot open the metadata log: {0}")]
    Storage(#[from] store::StoreError),
    /// Raft failed to start.
    #[error("cannot start the metadata quorum: {0}")]
    Raft(String),
    /// This data directory belongs to another cluster than the voters'.
    #[error("data directory {data_dir} belongs to cluster {ours}, but controller quorum voter {node} belongs to cluster {theirs}; refusing to start (point --data-dir at this cluster's directory or an empty one)")]
    ClusterMismatch {
        /// The data directory.
        data_dir: PathBuf,
        /// Its cluster id.
        ours: String,
        /// The voter that disagreed.
        node: i32,
        /// The voter's cluster id.
        theirs: String,
    },
    /// The metadata log was formed by another set of voters.
    #[error("data directory {data_dir} belongs to cluster {cluster_id}, whose controller quorum voters are {stored:?}, but controller_quorum_voters names {configured:?}; refusing to start (point --data-dir at this cluster's directory or an empty one)")]
    VotersMismatch {
        /// The data directory.
        data_dir: PathBuf,
        /// Its cluster id, as far as `meta.properties` knows.
        cluster_id: String,
        /// The voters its metadata log records.
        stored: Vec<u64>,
        /// The configured voters.
        configured: Vec<u64>,
    },
    /// No active controller answered in time.
    #[error("no active controller within {0} ms")]
    NotAvailable(u64),
}

impl ControllerError {
    /// The Kafka error code a client should get.
    pub fn kafka_error_code(&self) -> i16 {
        use kafka_protocol::error::ResponseError as E;
        match self {
            ControllerError::NotAvailable(_) => E::RequestTimedOut.code(),
            _ => E::UnknownServerError.code(),
        }
    }
}

struct Liveness {
    /// The Raft term in which `last_seen` was collected (reset when leadership changes).
    term: u64,
    last_seen: HashMap<i32, Instant>,
}

/// One node's controller: its Raft instance, its copy of the image, its peers.
pub struct Controller {
    node_id: i32,
    raft: Raft<TypeConfig>,
    images: watch::Receiver<Arc<MetadataImage>>,
    peers: Peers,
    identity: Identity,
    data_dir: PathBuf,
    session_timeout: Duration,
    liveness: Mutex<Liveness>,
    stop: watch::Sender<bool>,
}

fn raft_id(node: i32) -> NodeId {
    u64::try_from(node).unwrap_or_default()
}

fn node_id_of(id: NodeId) -> i32 {
    i32::try_from(id).unwrap_or(-1)
}

/// A new cluster id: 16 random bytes in URL-safe base64 without padding, as Kafka's
/// `Uuid.randomUuid().toString()`.
fn new_cluster_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = Uuid::new_v4().into_bytes();
    let mut bits: u32 = 0;
    let mut nbits = 0;
    let mut out = String::with_capacity(22);
    for b in bytes {
        bits = (bits << 8) | u32::from(b);
        nbits += 8;
        while nbits >= 6 {
            nbits -= 6;
            out.push(char::from(ALPHABET[((bits >> nbits) & 63) as usize]));
        }
    }
    if nbits > 0 {
        out.push(char::from(ALPHABET[((bits << (6 - nbits)) & 63) as usize]));
    }
    out
}

impl Controller {
    /// Opens the metadata log, starts Raft and the controller listener, and (on a data
    /// directory that has never been part of a quorum) initializes the quorum with the
    /// configured voters. Returns before a leader is elected.
    pub async fn start(
        config: ControllerConfig,
        listener: Option<TcpListener>,
    ) -> Result<Arc<Controller>, ControllerError> {
        let dir = store::metadata_dir(&config.data_dir);
        let log = LogStore::open(&dir).map_err(ControllerError::Storage)?;
        let sm = StateMachine::open(&dir).map_err(ControllerError::Storage)?;
        let images = sm.subscribe();
        let identity = Identity {
            node_id: config.node_id,
            cluster_id: Arc::new(Mutex::new(config.known_cluster_id.clone())),
        };
        let voters: Vec<(i32, SocketAddr)> = if config.voters.is_empty() {
            vec![(config.node_id, SocketAddr::from(([127, 0, 0, 1], 0)))]
        } else {
            config.voters.clone()
        };
        let peers = Peers::new(identity.clone(), &voters);

        if let Some(ours) = &config.known_cluster_id {
            // A data directory of another cluster must not join this quorum: ask the others.
            for (id, _) in voters.iter().filter(|(id, _)| *id != config.node_id) {
                let reply = peers
                    .call(*id, RpcBody::Hello, Duration::from_millis(1_000))
                    .await;
                if let Err(CallError::ClusterMismatch { theirs, .. }) = reply {
                    return Err(ControllerError::ClusterMismatch {
                        data_dir: config.data_dir.clone(),
                        ours: ours.clone(),
                        node: *id,
                        theirs,
                    });
                }
            }
        }

        let raft_config = openraft::Config {
            cluster_name: "strait".to_string(),
            heartbeat_interval: 100,
            election_timeout_min: 600,
            election_timeout_max: 1_200,
            install_snapshot_timeout: 5_000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(1_000),
            max_in_snapshot_log_to_keep: 500,
            ..openraft::Config::default()
        }
        .validate()
        .map_err(|e| ControllerError::Raft(e.to_string()))?;
        let raft = Raft::new(
            raft_id(config.node_id),
            Arc::new(raft_config),
            peers.raft_network(),
            log,
            sm,
        )
        .await
        .map_err(|e| ControllerError::Raft(e.to_string()))?;

        // A metadata log formed by other voters (another cluster's directory, or a one-node
        // cluster's) must not start a quorum of its own next to the configured one.
        let stored: Vec<NodeId> = raft
            .with_raft_state(|st| st.membership_state.effective().voter_ids().collect())
            .await
            .map_err(|e| ControllerError::Raft(e.to_string()))?;
        let configured: Vec<NodeId> = {
            let mut ids: Vec<NodeId> = voters.iter().map(|(id, _)| raft_id(*id)).collect();
            ids.sort_unstable();
            ids
        };
        let mut stored_sorted = stored.clone();
        stored_sorted.sort_unstable();
        if !stored_sorted.is_empty() && stored_sorted != configured {
            let _ = raft.shutdown().await;
            return Err(ControllerError::VotersMismatch {
                data_dir: config.data_dir.clone(),
                cluster_id: config
                    .known_cluster_id
                    .clone()
                    .unwrap_or_else(|| "(unknown)".to_string()),
                stored: stored_sorted,
                configured,
            });
        }
        let (stop, stop_rx) = watch::channel(false);
        let controller = Arc::new(Controller {
            node_id: config.node_id,
            raft,
            images,
            peers,
            identity,
            data_dir: config.data_dir.clone(),
            session_timeout: Duration::from_millis(config.broker_session_timeout_ms),
            liveness: Mutex::new(Liveness {
                term: 0,
                last_seen: HashMap::new(),
            }),
            stop,
        });
        if let Some(listener) = listener {
            tokio::spawn(rpc::serve(listener, controller.clone(), stop_rx.clone()));
        }
        let pristine = !controller
            .raft
            .is_initialized()
            .await
            .map_err(|e| ControllerError::Raft(e.to_string()))?;
        if pristine {
            let members: BTreeMap<NodeId, BasicNode> = voters
                .iter()
                .map(|(id, addr)| (raft_id(*id), BasicNode::new(addr.to_string())))
                .collect();
            tracing::info!(voters = ?members.keys().collect::<Vec<_>>(), "initializing the metadata quorum");
            if let Err(e) = controller.raft.initialize(members).await {
                tracing::debug!(error = %e, "quorum already initialized elsewhere");
            }
        }
        tokio::spawn(Controller::watch_quorum(
            controller.clone(),
            stop_rx.clone(),
        ));
        tokio::spawn(Controller::leader_duties(controller.clone(), stop_rx));
        Ok(controller)
    }

    /// Says what the quorum does, in a few lines at the level each deserves: once when it is
    /// formed, on every change of leader, and an ERROR only if Raft itself stopped. openraft's
    /// own log is off by default (see `strait`'s log filter): it reports the routine of forming
    /// a quorum and of peers stopping (votes ignored, a voter not listening yet, a heartbeat to
    /// a node shutting down) as WARN and ERROR, which a person reads as failure.
    async fn watch_quorum(controller: Arc<Controller>, mut stop: watch::Receiver<bool>) {
        let mut metrics = controller.raft.metrics();
        let mut leader: Option<u64> = None;
        let mut formed = false;
        loop {
            let (current, term, running) = {
                let m = metrics.borrow_and_update();
                (
                    m.current_leader,
                    m.current_term,
                    m.running_state.as_ref().err().map(|e| e.to_string()),
                )
            };
            if let Some(error) = running {
                if !*stop.borrow() {
                    tracing::error!(%error, "the metadata quorum stopped on this node; restart the node");
                }
                return;
            }
            if current != leader {
                match current {
                    Some(id) if !formed => {
                        formed = true;
                        tracing::info!(leader = node_id_of(id), term, "metadata quorum formed");
                    }
                    Some(id) => {
                        tracing::info!(
                            leader = node_id_of(id),
                            term,
                            "metadata quorum has a new leader"
                        )
                    }
                    None => tracing::info!(term, "metadata quorum is electing a leader"),
                }
                leader = current;
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                changed = metrics.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    /// The latest applied image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.images.borrow().clone()
    }

    /// A receiver of every new image.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.images.clone()
    }

    /// The active controller (Raft leader) this node knows of.
    pub fn leader_id(&self) -> Option<i32> {
        self.raft.metrics().borrow().current_leader.map(node_id_of)
    }

    fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(raft_id(self.node_id))
    }

    /// The cluster id, once committed.
    pub fn cluster_id(&self) -> Option<String> {
        self.image().cluster_id.clone()
    }

    /// Records the cluster id this node belongs to (stamped on every outgoing RPC).
    pub fn set_known_cluster_id(&self, id: &str) {
        *self
            .identity
            .cluster_id
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(id.to_string());
    }

    /// Proposes `command` through the active controller, wherever it is, retrying while there
    /// is none, for up to `timeout_ms`. Returns the log index it was committed at and its
    /// result.
    pub async fn propose(
        &self,
        command: MetadataCommand,
        timeout_ms: u64,
    ) -> Result<(u64, CommandResult), ControllerError> {
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        let mut logged = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = match self.leader_id() {
                // A leader without a quorum never commits: bound the wait by the deadline.
                Some(leader) if leader == self.node_id => {
                    match tokio::time::timeout(left, self.propose_locally(&command)).await {
                        Ok(r) => r,
                        Err(_) => Err(ForwardError::Raft(format!(
                            "not committed within {timeout_ms} ms (no quorum?)"
                        ))),
                    }
                }
                Some(leader) => {
                    match self
                        .peers
                        .call(
                            leader,
                            RpcBody::Forward(command.clone()),
                            Duration::from_millis(RPC_TIMEOUT_MS),
                        )
                        .await
                    {
                        Ok(RpcReply::Forward(r)) => r,
                        Ok(other) => Err(ForwardError::Raft(format!("unexpected reply {other:?}"))),
                        Err(e) => Err(ForwardError::Raft(e.to_string())),
                    }
                }
                None => Err(ForwardError::NotController { leader: None }),
            };
            match attempt {
                Ok(done) => return Ok(done),
                Err(e) => {
                    if Instant::now() >= deadline {
                        tracing::warn!(command = command.kind(), error = %e, "no active controller took the command");
                        return Err(ControllerError::NotAvailable(timeout_ms));
                    }
                    if !logged {
                        tracing::debug!(command = command.kind(), error = %e, "waiting for an active controller");
                        logged = true;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Like [`Controller::propose`], then waits until this node has applied the command too,
    /// so what the caller reads next from its own image includes it.
    pub async fn propose_and_apply(
        &self,
        command: MetadataCommand,
        timeout_ms: u64,
    ) -> Result<CommandResult, ControllerError> {
        let (index, result) = self.propose(command, timeout_ms).await?;
        self.wait_applied(index, timeout_ms).await?;
        Ok(result)
    }

    /// Waits until the local image has applied log index `index`.
    pub async fn wait_applied(&self, index: u64, timeout_ms: u64) -> Result<(), ControllerError> {
        let mut images = self.images.clone();
        let waited = tokio::time::timeout(
            Duration::from_millis(timeout_ms),
            images.wait_for(|i| i.applied_index >= index),
        )
        .await;
        match waited {
            Ok(Ok(_)) => Ok(()),
            _ => Err(ControllerError::NotAvailable(timeout_ms)),
        }
    }

    async fn propose_locally(
        &self,
        command: &MetadataCommand,
    ) -> Result<(u64, CommandResult), ForwardError> {
        match self.raft.client_write(command.clone()).await {
            Ok(resp) => Ok((resp.log_id.index, resp.data)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ForwardError::NotController {
                    leader: f.leader_id.map(node_id_of),
                })
            }
            Err(e) => Err(ForwardError::Raft(e.to_string())),
        }
    }

    /// Sends a heartbeat for this node's broker to the active controller.
    pub async fn heartbeat(&self, req: HeartbeatRequest) -> Result<HeartbeatReply, String> {
        match self.leader_id() {
            Some(leader) if leader == self.node_id => Ok(self.handle_heartbeat(req).await),
            Some(leader) => match self
                .peers
                .call(
                    leader,
                    RpcBody::Heartbeat(req),
                    Duration::from_millis(RPC_TIMEOUT_MS),
                )
                .await
            {
                Ok(RpcReply::Heartbeat(r)) => Ok(r),
                Ok(other) => Err(format!("unexpected reply {other:?}")),
                Err(e) => Err(e.to_string()),
            },
            None => Ok(HeartbeatReply::NotController { leader: None }),
        }
    }

    /// The active controller's side of a heartbeat: session bookkeeping, unfencing a broker
    /// that caught up, controlled shutdown.
    async fn handle_heartbeat(&self, req: HeartbeatRequest) -> HeartbeatReply {
        if !self.is_leader() {
            return HeartbeatReply::NotController {
                leader: self.leader_id(),
            };
        }
        let image = self.image();
        let Some(reg) = image.brokers.get(&req.broker_id) else {
            return HeartbeatReply::Reregister;
        };
        if reg.epoch != req.broker_epoch {
            return HeartbeatReply::Reregister;
        }
        self.lock_liveness()
            .last_seen
            .insert(req.broker_id, Instant::now());
        let timeout_ms = u64::try_from(self.session_timeout.as_millis()).unwrap_or(u64::MAX);
        if req.want_shutdown {
            if !reg.shutting_down {
                let command = MetadataCommand::ControlledShutdown {
                    id: req.broker_id,
                    epoch: req.broker_epoch,
                };
                if let Err(e) = self.propose(command, timeout_ms).await {
                    tracing::warn!(broker = req.broker_id, error = %e, "controlled shutdown not committed");
                    return HeartbeatReply::Ok {
                        fenced: reg.fenced,
                        shutdown_done: false,
                    };
                }
                tracing::info!(
                    broker = req.broker_id,
                    "controlled shutdown: leaderships moved away"
                );
            }
            return HeartbeatReply::Ok {
                fenced: true,
                shutdown_done: true,
            };
        }
        if reg.fenced && !reg.shutting_down && req.applied_index >= reg.epoch {
            let command = MetadataCommand::UnfenceBroker {
                id: req.broker_id,
                epoch: req.broker_epoch,
            };
            match self.propose(command, timeout_ms).await {
                Ok((_, r)) if r.error_code == 0 => {
                    tracing::info!(broker = req.broker_id, "broker unfenced");
                    return HeartbeatReply::Ok {
                        fenced: false,
                        shutdown_done: false,
                    };
                }
                Ok((_, r)) => {
                    tracing::warn!(broker = req.broker_id, message = ?r.message, "unfence refused")
                }
                Err(e) => {
                    tracing::warn!(broker = req.broker_id, error = %e, "unfence not committed")
                }
            }
        }
        HeartbeatReply::Ok {
            fenced: reg.fenced,
            shutdown_done: false,
        }
    }

    fn lock_liveness(&self) -> std::sync::MutexGuard<'_, Liveness> {
        self.liveness.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the active controller does on its own: name the cluster, fence silent brokers.
    async fn leader_duties(controller: Arc<Controller>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(SESSION_CHECK_INTERVAL_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_tick = Instant::now();
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                _ = tick.tick() => {}
            }
            let gap = last_tick.elapsed();
            last_tick = Instant::now();
            if !controller.is_leader() {
                continue;
            }
            if gap > Duration::from_millis(PAUSE_DETECTION_MS) {
                // This process did not run (SIGSTOP, a long GC-like stall of the machine):
                // silence it caused says nothing about the brokers, so every broker gets a
                // fresh session, as after a controller failover.
                let now = Instant::now();
                let mut liveness = controller.lock_liveness();
                for seen in liveness.last_seen.values_mut() {
                    *seen = now;
                }
                tracing::warn!(paused_ms = gap.as_millis() as u64,
                    "the active controller did not run for a while; every broker gets a fresh session");
            }
            let term = controller.raft.metrics().borrow().current_term;
            let image = controller.image();
            let silent: Vec<(i32, u64)> = {
                let mut liveness = controller.lock_liveness();
                let now = Instant::now();
                if liveness.term != term {
                    // A new active controller gives every broker a full session from now, as
                    // KRaft does after a controller failover.
                    liveness.term = term;
                    liveness.last_seen = image.brokers.keys().map(|id| (*id, now)).collect();
                    tracing::info!(term, "this node is the active controller");
                }
                image
                    .brokers
                    .values()
                    .filter(|b| !b.fenced)
                    .filter(|b| {
                        let seen = *liveness.last_seen.entry(b.id).or_insert(now);
                        now.duration_since(seen) > controller.session_timeout
                    })
                    .map(|b| (b.id, b.epoch))
                    .collect()
            };
            if image.cluster_id.is_none() {
                let cluster_id = new_cluster_id();
                match controller
                    .propose(MetadataCommand::InitCluster { cluster_id }, RPC_TIMEOUT_MS)
                    .await
                {
                    Ok(_) => {
                        let cluster_id = controller.wait_cluster_id().await;
                        tracing::info!(?cluster_id, "cluster id committed");
                    }
                    Err(e) => tracing::warn!(error = %e, "cluster id not committed yet"),
                }
            }
            for (id, epoch) in silent {
                tracing::warn!(
                    broker = id,
                    session_timeout_ms = controller.session_timeout.as_millis() as u64,
                    "no heartbeat within the session timeout: fencing the broker"
                );
                if let Err(e) = controller
                    .propose(MetadataCommand::FenceBroker { id, epoch }, RPC_TIMEOUT_MS)
                    .await
                {
                    tracing::warn!(broker = id, error = %e, "fencing not committed");
                }
            }
        }
    }

    async fn wait_cluster_id(&self) -> Option<String> {
        let mut images = self.images.clone();
        let waited = tokio::time::timeout(
            Duration::from_millis(RPC_TIMEOUT_MS),
            images.wait_for(|i| i.cluster_id.is_some()),
        )
        .await;
        match waited {
            Ok(Ok(image)) => image.cluster_id.clone(),
            _ => None,
        }
    }

    /// Stops Raft and the controller listener.
    ///
    /// An active controller first sends one more heartbeat round and gives it
    /// [`HANDOFF_MS`]: followers learn the commit index from the leader's next message, and
    /// with no leader after this one (two of three voters down) what it committed last, such
    /// as its own controlled shutdown, would otherwise stay unapplied on the survivor.
    pub async fn shutdown(&self) {
        if self.is_leader() {
            if let Err(e) = self.raft.trigger().heartbeat().await {
                tracing::debug!(error = %e, "final heartbeat not sent");
            }
            tokio::time::sleep(Duration::from_millis(HANDOFF_MS)).await;
        }
        let _ = self.stop.send(true);
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "metadata quorum did not stop cleanly");
        }
    }

    /// The data directory (for messages).
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }
}

impl rpc::RpcHandler for Controller {
    async fn handle(&self, req: RpcRequest) -> RpcReply {
        let ours = self
            .identity
            .cluster_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let (Some(ours), Some(theirs)) = (&ours, &req.cluster_id) {
            if ours != theirs {
                tracing::warn!(from = req.from, theirs = %theirs, ours = %ours,
                    "refused a controller request from a node of another cluster");
                return RpcReply::ClusterMismatch {
                    cluster_id: ours.clone(),
                };
            }
        }
        match req.body {
            RpcBody::AppendEntries(r) => RpcReply::AppendEntries(self.raft.append_entries(r).await),
            RpcBody::Vote(r) => RpcReply::Vote(self.raft.vote(r).await),
            RpcBody::InstallSnapshot(r) => {
                RpcReply::InstallSnapshot(self.raft.install_snapshot(r).await)
            }
            RpcBody::Forward(command) => {
                if !self.is_leader() {
                    return RpcReply::Forward(Err(ForwardError::NotController {
                        leader: self.leader_id(),
                    }));
                }
                RpcReply::Forward(self.propose_locally(&command).await)
            }
            RpcBody::Heartbeat(h) => RpcReply::Heartbeat(self.handle_heartbeat(h).await),
            RpcBody::Hello => RpcReply::Hello { cluster_id: ours },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_look_like_kafkas() {
        let id = new_cluster_id();
        assert_eq!(id.len(), 22);
        assert!(id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_ne!(id, new_cluster_id());
    }

    #[tokio::test]
    async fn a_single_voter_elects_itself_names_the_cluster_and_applies_commands() {
        let dir = tempfile::tempdir().unwrap();
        let config = ControllerConfig {
            node_id: 1,
            voters: Vec::new(),
            data_dir: dir.path().to_path_buf(),
            broker_session_timeout_ms: 9_000,
            known_cluster_id: None,
        };
        let c = Controller::start(config.clone(), None).await.unwrap();
        let (index, r) = c
            .propose(
                MetadataCommand::AllocateProducerIds {
                    broker: 1,
                    count: 1000,
                },
                10_000,
            )
            .await
            .unwrap();
        assert_eq!(r.error_code, 0);
        c.wait_applied(index, 5_000).await.unwrap();
        let cluster_id = c.wait_cluster_id().await.expect("cluster id");
        assert_eq!(c.image().next_producer_id, 1000);
        c.shutdown().await;
        drop(c);

        // Restart on the same directory: the log replays to the same image.
        let c = Controller::start(config, None).await.unwrap();
        let (_, r) = c
            .propose(
                MetadataCommand::AllocateProducerIds {
                    broker: 1,
                    count: 1000,
                },
                10_000,
            )
            .await
            .unwrap();
        assert_eq!(
            r.value, 1000,
            "a restarted quorum must not reuse producer ids"
        );
        assert_eq!(c.cluster_id().as_deref(), Some(cluster_id.as_str()));
        c.shutdown().await;
    }

    async fn three_voters(dirs: &[tempfile::TempDir]) -> Vec<Arc<Controller>> {
        let mut listeners = Vec::new();
        for _ in 0..3 {
            listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let voters: Vec<(i32, SocketAddr)> = listeners
            .iter()
            .enumerate()
            .map(|(i, l)| (i as i32 + 1, l.local_addr().unwrap()))
            .collect();
        let mut controllers = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let config = ControllerConfig {
                node_id: i as i32 + 1,
                voters: voters.clone(),
                data_dir: dirs[i].path().to_path_buf(),
                broker_session_timeout_ms: 60_000,
                known_cluster_id: None,
            };
            controllers.push(Controller::start(config, Some(listener)).await.unwrap());
        }
        controllers
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_voters_agree_forward_and_survive_the_loss_of_the_leader() {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let controllers = three_voters(&dirs).await;
        // A command proposed on each node lands once, whoever leads.
        for c in &controllers {
            let (index, r) = c
                .propose(
                    MetadataCommand::AllocateProducerIds {
                        broker: c.node_id(),
                        count: 10,
                    },
                    20_000,
                )
                .await
                .unwrap();
            assert_eq!(r.error_code, 0);
            for other in &controllers {
                other.wait_applied(index, 10_000).await.unwrap();
            }
        }
        for c in &controllers {
            assert_eq!(c.image().next_producer_id, 30);
        }
        let leader = controllers[0].leader_id().unwrap();
        let cluster_id = controllers[0].wait_cluster_id().await.unwrap();
        controllers[usize::try_from(leader - 1).unwrap()]
            .shutdown()
            .await;
        let survivors: Vec<_> = controllers
            .iter()
            .filter(|c| c.node_id() != leader)
            .collect();
        let (index, r) = survivors[0]
            .propose(
                MetadataCommand::AllocateProducerIds {
                    broker: 9,
                    count: 10,
                },
                20_000,
            )
            .await
            .unwrap();
        assert_eq!(r.value, 30);
        survivors[1].wait_applied(index, 10_000).await.unwrap();
        assert_ne!(survivors[1].leader_id(), Some(leader));
        assert_eq!(survivors[1].cluster_id(), Some(cluster_id));
        for c in survivors {
            c.shutdown().await;
        }
    }
}
