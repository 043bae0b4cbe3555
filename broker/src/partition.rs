//! One partition hosted on this node, as Kafka's `cluster/Partition`: its log, the replica
//! state last applied from the metadata image, and, while this node leads it, what the leader
//! knows of its followers, the high watermark, and when the ISR must shrink or grow.
//!
//! - A follower fetches with its replica id; the fetch offset is its log end offset (LEO).
//!   The leader records it and when the follower last caught up: at the time of a fetch that
//!   reached the leader's LEO, or, for a fetch that reached the LEO the leader had at the
//!   previous fetch, at that previous fetch's time (Kafka's approximation).
//! - The high watermark is the minimum LEO of the ISR, the leader's own included; it never
//!   moves back on a leader. While an ISR expansion is being committed the follower already
//!   counts (Kafka's "maximal ISR"), so the HW never gets ahead of a replica the controller may
//!   elect.
//! - A follower not caught up for `replica_lag_time_max_ms` leaves the ISR; one whose LEO
//!   reached the high watermark and the start of the leader's epoch joins it. Both are
//!   AlterPartition commands to the controller; the local ISR changes only when the image
//!   carrying the change is applied.
//!
//! Knows nothing of the broker: the broker owns partitions, the fetcher and the request
//! handlers use them.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::watch;

use crate::clock::now_ms;
use crate::controller::image::{PartitionImage, TailTruncation};
use crate::log::PartitionLog;

/// A partition's replicas, ISR and leader as this node last applied them from the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaState {
    /// The leader, or -1.
    pub leader: i32,
    /// The leader epoch.
    pub leader_epoch: i32,
    /// The partition epoch.
    pub partition_epoch: i32,
    /// Assigned replicas.
    pub replicas: Vec<i32>,
    /// In-sync replicas.
    pub isr: Vec<i32>,
    /// The last tail truncation asked of the partition.
    pub tail_truncation: Option<TailTruncation>,
}

impl From<&PartitionImage> for ReplicaState {
    fn from(p: &PartitionImage) -> ReplicaState {
        ReplicaState {
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            replicas: p.replicas.clone(),
            isr: p.isr.clone(),
            tail_truncation: p.tail_truncation,
        }
    }
}

/// One partition hosted on this node: its log and its replica state.
pub struct Partition {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub index: i32,
    log: RwLock<PartitionLog>,
    replica: RwLock<ReplicaState>,
    /// The leader's view of its followers (see `replication`); empty when not leading.
    pub(crate) leader: std::sync::Mutex<LeaderState>,
    /// The broker-wide change signal: bumped on appends, high watermark moves and replica
    /// state changes; fetches and acks=all produces wait on it.
    changed: Arc<watch::Sender<u64>>,
}

impl Partition {
    /// A partition of `topic` hosted here with `log`, in replica state `state`; `changed` is
    /// the broker-wide change signal it bumps.
    pub(crate) fn new(
        topic: String,
        index: i32,
        log: PartitionLog,
        state: ReplicaState,
        changed: Arc<watch::Sender<u64>>,
    ) -> Partition {
        Partition {
            topic,
            index,
            log: RwLock::new(log),
            replica: RwLock::new(state),
            leader: std::sync::Mutex::new(LeaderState {
                epoch: -1,
                ..LeaderState::default()
            }),
            changed,
        }
    }

    /// Shared access to the log (reads run concurrently).
    pub fn log(&self) -> RwLockReadGuard<'_, PartitionLog> {
        // A poisoned lock means a thread panicked mid-append; the log's own recovery on the
        // next start is the remedy, so keep serving what is there.
        self.log.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Exclusive access to the log (appends, flushes).
    pub fn log_mut(&self) -> RwLockWriteGuard<'_, PartitionLog> {
        self.log.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The high watermark: every record below it is on every ISR member.
    pub fn high_watermark(&self) -> i64 {
        self.log().high_watermark()
    }

    /// Wakes everything waiting on the broker's change signal.
    pub fn notify_changed(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Replicas, ISR and leader as last applied.
    pub fn replica_state(&self) -> ReplicaState {
        self.replica
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_replica_state(&self, state: ReplicaState) {
        *self.replica.write().unwrap_or_else(|p| p.into_inner()) = state;
    }

    /// The leader epoch, when `node` leads this partition.
    pub fn leader_epoch_on(&self, node: i32) -> Option<i32> {
        let state = self.replica.read().unwrap_or_else(|p| p.into_inner());
        (state.leader == node).then_some(state.leader_epoch)
    }
}

/// What a leader knows of one follower.
#[derive(Debug, Clone, Copy)]
pub struct FollowerState {
    /// The follower's log end offset (its last fetch offset); -1 before its first fetch.
    pub log_end_offset: i64,
    /// When the follower was last known to be caught up (0: never).
    pub last_caught_up_ms: i64,
    last_fetch_ms: i64,
    last_fetch_leader_end: i64,
}

/// The leader's bookkeeping for one partition, for one leader epoch.
#[derive(Debug, Default)]
pub struct LeaderState {
    /// The leader epoch this state belongs to (-1: not leading).
    pub epoch: i32,
    /// Followers by broker id.
    pub followers: BTreeMap<i32, FollowerState>,
    /// An ISR change sent to the controller and not yet applied here.
    pub pending_isr: Option<Vec<i32>>,
}

/// An ISR change a leader should ask the controller for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    /// The ISR wanted.
    pub isr: Vec<i32>,
    /// The leader epoch it is based on.
    pub leader_epoch: i32,
    /// The partition epoch it is based on.
    pub partition_epoch: i32,
}

impl Partition {
    fn leader_state(&self) -> std::sync::MutexGuard<'_, LeaderState> {
        self.leader.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called when this node becomes (or stays, in a new epoch) the leader: marks the epoch's
    /// start in the log and starts follower bookkeeping afresh, every ISR member counting as
    /// caught up now (Kafka does the same).
    pub fn become_leader(&self, me: i32, state: &ReplicaState) -> Result<(), crate::log::LogError> {
        let now = now_ms();
        {
            let mut log = self.log_mut();
            // A tail truncation acts once per replica: on a leader whose log has not started
            // the epoch that carries it. That is the leader it was asked of, or, if that one
            // failed before this replica fetched from it, whichever replica leads a later
            // epoch without having seen it (it would otherwise bring the tail back). A
            // restart finds the epoch started and leaves what was appended since alone.
            if let Some(cut) = state
                .tail_truncation
                .filter(|t| t.leader_epoch <= state.leader_epoch)
            {
                if log.latest_epoch() < Some(cut.leader_epoch)
                    && log.log_end_offset() > cut.end_offset
                {
                    tracing::warn!(topic = %self.topic, partition = self.index,
                        from = log.log_end_offset(), to = cut.end_offset, leader_epoch = cut.leader_epoch,
                        "truncating the tail as asked (a failback)");
                    log.truncate_to(cut.end_offset)?;
                }
            }
            log.assign_epoch_start_offset(state.leader_epoch)?;
        }
        {
            let mut leader = self.leader_state();
            leader.epoch = state.leader_epoch;
            leader.pending_isr = None;
            leader.followers = state
                .replicas
                .iter()
                .filter(|r| **r != me)
                .map(|r| {
                    (
                        *r,
                        FollowerState {
                            log_end_offset: -1,
                            last_caught_up_ms: if state.isr.contains(r) { now } else { 0 },
                            last_fetch_ms: 0,
                            last_fetch_leader_end: -1,
                        },
                    )
                })
                .collect();
        }
        self.maybe_advance_high_watermark(me);
        Ok(())
    }

    /// Called when this node stops leading the partition.
    pub fn stop_leading(&self) {
        let mut leader = self.leader_state();
        leader.epoch = -1;
        leader.followers.clear();
        leader.pending_isr = None;
    }

    /// Moves the high watermark up to the minimum LEO of the maximal ISR (the ISR as applied
    /// plus members of a pending expansion), if that is higher. Returns whether it moved
    /// (waiters are woken). Runs after every leader append: no allocation but the ISR copy.
    pub fn maybe_advance_high_watermark(&self, me: i32) -> bool {
        let isr = self.replica_state().isr;
        let followers_end = {
            let leader = self.leader_state();
            let pending = leader.pending_isr.as_deref().unwrap_or_default();
            isr.iter()
                .chain(pending)
                .filter(|r| **r != me)
                // An ISR member not heard from in this epoch holds the HW where it is.
                .map(|r| leader.followers.get(r).map_or(-1, |f| f.log_end_offset))
                .min()
                .unwrap_or(i64::MAX)
        };
        let moved = {
            let mut log = self.log_mut();
            let candidate = log.log_end_offset().min(followers_end);
            // The high watermark never passes an ISR member's log end (nor the leader's).
            assert!(
                candidate <= followers_end && candidate <= log.log_end_offset(),
                "{}-{}: high watermark candidate {candidate} above an ISR member's end",
                self.topic,
                self.index
            );
            if candidate > log.high_watermark() {
                log.set_high_watermark(candidate);
                true
            } else {
                false
            }
        };
        if moved {
            self.notify_changed();
        }
        moved
    }

    /// Records a follower's fetch at `fetch_offset` (its LEO). Returns the ISR expansion to
    /// ask for when the follower is out of the ISR and has caught up.
    pub fn record_follower_fetch(
        &self,
        me: i32,
        follower: i32,
        fetch_offset: i64,
    ) -> Option<IsrChange> {
        let now = now_ms();
        let (leader_end, high_watermark, epoch_start) = {
            let log = self.log();
            (
                log.log_end_offset(),
                log.high_watermark(),
                log.leader_epoch_cache()
                    .latest_entry()
                    .map(|e| e.start_offset)
                    .unwrap_or(0),
            )
        };
        {
            let mut leader = self.leader_state();
            let f = leader.followers.get_mut(&follower)?;
            if fetch_offset >= leader_end {
                f.last_caught_up_ms = now;
            } else if f.last_fetch_leader_end >= 0 && fetch_offset >= f.last_fetch_leader_end {
                f.last_caught_up_ms = f.last_caught_up_ms.max(f.last_fetch_ms);
            }
            f.log_end_offset = fetch_offset;
            f.last_fetch_ms = now;
            f.last_fetch_leader_end = leader_end;
        }
        self.maybe_advance_high_watermark(me);
        let state = self.replica_state();
        if state.leader != me || state.isr.contains(&follower) {
            return None;
        }
        let mut leader = self.leader_state();
        if leader.pending_isr.is_some() || leader.epoch != state.leader_epoch {
            return None;
        }
        if fetch_offset >= high_watermark && fetch_offset >= epoch_start {
            let mut isr = state.isr.clone();
            isr.push(follower);
            leader.pending_isr = Some(isr.clone());
            return Some(IsrChange {
                isr,
                leader_epoch: state.leader_epoch,
                partition_epoch: state.partition_epoch,
            });
        }
        None
    }

    /// The ISR shrink to ask for: ISR members (not this node) not caught up within
    /// `lag_max_ms`.
    pub fn isr_shrink(&self, me: i32, lag_max_ms: i64) -> Option<IsrChange> {
        let state = self.replica_state();
        if state.leader != me {
            return None;
        }
        let now = now_ms();
        let mut leader = self.leader_state();
        if leader.pending_isr.is_some() || leader.epoch != state.leader_epoch {
            return None;
        }
        let lagging: Vec<i32> = state
            .isr
            .iter()
            .copied()
            .filter(|r| *r != me)
            .filter(|r| {
                leader
                    .followers
                    .get(r)
                    .is_none_or(|f| now - f.last_caught_up_ms > lag_max_ms)
            })
            .collect();
        if lagging.is_empty() {
            return None;
        }
        let isr: Vec<i32> = state
            .isr
            .iter()
            .copied()
            .filter(|r| !lagging.contains(r))
            .collect();
        // A shrink is not pending in the "maximal ISR" sense: until it is applied the leader
        // keeps counting the old members, which only holds the HW back.
        leader.pending_isr = Some(isr.clone());
        Some(IsrChange {
            isr,
            leader_epoch: state.leader_epoch,
            partition_epoch: state.partition_epoch,
        })
    }

    /// How many ISR members this leader counts as in sync now: itself and the followers caught
    /// up within `lag_max_ms`. Normally the ISR's size; smaller while a shrink cannot be
    /// committed (the metadata quorum is lost), which is what the acks=all check against
    /// `min.insync.replicas` must see (see ARCHITECTURE.md, deviations).
    pub fn in_sync_count(&self, me: i32, lag_max_ms: i64) -> usize {
        let state = self.replica_state();
        let now = now_ms();
        let leader = self.leader_state();
        state
            .isr
            .iter()
            .filter(|r| {
                **r == me
                    || leader
                        .followers
                        .get(r)
                        .is_some_and(|f| now - f.last_caught_up_ms <= lag_max_ms)
            })
            .count()
    }

    /// Forgets a pending ISR change (committed, refused or failed).
    pub fn clear_pending_isr(&self) {
        self.leader_state().pending_isr = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::image::TailTruncation;
    use crate::log::batch::split_and_validate;
    use crate::log::batch::test_util::simple_batch;
    use crate::log::LogConfig;

    fn partition_with(
        records_per_batch: usize,
        batches: usize,
        epoch: i32,
    ) -> (tempfile::TempDir, Partition) {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig::default();
        let mut log = PartitionLog::open(&dir.path().join("t-0"), config.clone(), 0).unwrap();
        log.assign_epoch_start_offset(epoch).unwrap();
        for i in 0..batches {
            let mut raw = simple_batch(records_per_batch, 10, i as i64);
            let headers = split_and_validate(&raw, config.max_batch_bytes).unwrap();
            log.append(&mut raw, &headers, epoch, None, 0).unwrap();
        }
        let state = ReplicaState {
            leader: 1,
            leader_epoch: epoch,
            partition_epoch: 0,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2, 3],
            tail_truncation: None,
        };
        let (changed, _) = watch::channel(0);
        let p = Partition::new("t".into(), 0, log, state, Arc::new(changed));
        (dir, p)
    }

    fn leading(epoch: i32, cut: Option<TailTruncation>) -> ReplicaState {
        ReplicaState {
            leader: 1,
            leader_epoch: epoch,
            partition_epoch: 1,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2, 3],
            tail_truncation: cut,
        }
    }

    #[test]
    fn a_replica_that_never_started_the_truncation_epoch_cuts_when_it_leads_a_later_one() {
        // A follower of epoch 4 that never fetched from the leader of epoch 5 (which cut at
        // 30 and then failed) is elected for epoch 6: it cuts too, or the tail comes back.
        let (_dir, p) = partition_with(10, 5, 4);
        assert_eq!(p.log().log_end_offset(), 50);
        let cut = TailTruncation {
            leader_epoch: 5,
            end_offset: 30,
        };
        p.become_leader(1, &leading(6, Some(cut))).unwrap();
        assert_eq!(p.log().log_end_offset(), 30);
        assert_eq!(p.log().latest_epoch(), Some(6));
        // Once it has started an epoch at or after the cut's, nothing is cut again.
        let mut raw = simple_batch(10, 10, 9);
        let headers = split_and_validate(&raw, LogConfig::default().max_batch_bytes).unwrap();
        p.log_mut().append(&mut raw, &headers, 6, None, 0).unwrap();
        p.become_leader(1, &leading(7, Some(cut))).unwrap();
        assert_eq!(p.log().log_end_offset(), 40);
    }

    #[test]
    fn a_truncation_of_a_later_epoch_waits_for_that_epoch() {
        // A leader of epoch 4 told of a cut that belongs to epoch 5 does nothing yet.
        let (_dir, p) = partition_with(10, 5, 3);
        let cut = TailTruncation {
            leader_epoch: 5,
            end_offset: 30,
        };
        p.become_leader(1, &leading(4, Some(cut))).unwrap();
        assert_eq!(p.log().log_end_offset(), 50);
        p.become_leader(1, &leading(5, Some(cut))).unwrap();
        assert_eq!(p.log().log_end_offset(), 30);
    }
}
