//! ISR replication: the follower's side, fetching from leaders ([`fetcher`] over
//! [`client`]), and the wait of an acks=all produce or a coordinator write for its records to
//! reach every ISR member ([`wait_replicated`], Kafka's delayed produce). The leader's
//! bookkeeping of its followers lives with the partition (`crate::partition`).

pub mod client;
pub mod fetcher;

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use tokio::sync::watch;

use crate::config::NodeConfig;
use crate::partition::Partition;

/// Records appended by this node as leader, to be acknowledged once replicated (acks=all
/// produce, group coordinator writes).
pub struct Appended {
    /// The partition written.
    pub partition: Arc<Partition>,
    /// The leader epoch the append happened in.
    pub leader_epoch: i32,
    /// Offset of the last record appended.
    pub last_offset: i64,
    /// The partition's `min.insync.replicas` at the time of the append.
    pub min_insync_replicas: usize,
}

/// `replica_lag_time_max_ms` of a node, as the in-sync checks take it.
pub fn replica_lag_time_max_ms(config: &NodeConfig) -> i64 {
    i64::try_from(config.replica_lag_time_max_ms).unwrap_or(i64::MAX)
}

/// Waits (Kafka's delayed produce) until the high watermark passes `appended.last_offset` or
/// `deadline`; the error code to answer, 0 when replicated: NOT_LEADER_OR_FOLLOWER once this
/// node no longer leads in the append's epoch, NOT_ENOUGH_REPLICAS_AFTER_APPEND when fewer
/// replicas than `min.insync.replicas` are in sync by then, REQUEST_TIMED_OUT at the deadline.
///
/// `changes` is the broker's change signal (bumped on appends, high watermark moves and replica
/// state changes), `me` this node, `lag_max_ms` its `replica_lag_time_max_ms`.
pub async fn wait_replicated(
    mut changes: watch::Receiver<u64>,
    me: i32,
    lag_max_ms: i64,
    appended: &Appended,
    deadline: tokio::time::Instant,
) -> i16 {
    loop {
        changes.borrow_and_update();
        if appended.partition.leader_epoch_on(me) != Some(appended.leader_epoch) {
            return ResponseError::NotLeaderOrFollower.code();
        }
        if appended.partition.high_watermark() > appended.last_offset {
            let in_sync = appended.partition.in_sync_count(me, lag_max_ms);
            return if in_sync < appended.min_insync_replicas {
                ResponseError::NotEnoughReplicasAfterAppend.code()
            } else {
                0
            };
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => continue,
            _ => return ResponseError::RequestTimedOut.code(),
        }
    }
}
