//! Fetch: whole batches from each partition's log, long-polling until `min_bytes` are ready
//! or `max_wait_ms` has passed.
//!
//! Only a partition's leader answers. Consumers read below the high watermark; a follower
//! (a request with a replica id >= 0) reads up to the log end, and its fetch offset tells the
//! leader how far it got (see `replication`), which may move the high watermark or add the
//! follower to the ISR.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::FetchPartition;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use tokio::time::Instant;

use crate::broker::Broker;
use crate::log::LogError;

/// Longest a fetch may park, whatever the client asks: bounds how long a connection is held.
pub const FETCH_MAX_WAIT_MS_LIMIT: i32 = 30_000;

fn partition_error(index: i32, code: i16) -> PartitionData {
    PartitionData::default()
        .with_partition_index(index)
        .with_error_code(code)
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_preferred_read_replica(BrokerId(-1))
}

/// Reads one partition; `budget_bytes` is what the response may still carry and
/// `first_with_data` says whether one whole batch may exceed it (Kafka's KIP-74 rule: only the
/// first partition with data may go over the limits, so a consumer always makes progress).
fn read_partition(
    broker: &Broker,
    topic: &str,
    fp: &FetchPartition,
    replica_id: i32,
    budget_bytes: usize,
    first_with_data: bool,
) -> PartitionData {
    let (partition, leader_epoch) = match broker.leader_partition(topic, fp.partition) {
        Ok(p) => p,
        Err(e) => return partition_error(fp.partition, e.kafka_error_code()),
    };
    // Kafka's epoch check (KIP-320): a client with an older epoch is fenced, one with a newer
    // epoch knows of a leader change this node has not applied yet.
    if fp.current_leader_epoch >= 0 && fp.current_leader_epoch != leader_epoch {
        let code = if fp.current_leader_epoch < leader_epoch {
            ResponseError::FencedLeaderEpoch.code()
        } else {
            ResponseError::UnknownLeaderEpoch.code()
        };
        return partition_error(fp.partition, code);
    }
    let log = partition.log();
    let high_watermark = log.high_watermark();
    // Followers read everything the leader has; consumers only what is committed.
    let read_limit = if replica_id >= 0 {
        log.log_end_offset()
    } else {
        high_watermark
    };
    let partition_max_bytes = usize::try_from(fp.partition_max_bytes.max(0)).unwrap_or(0);
    let limit_bytes = partition_max_bytes.min(budget_bytes);
    let records = if fp.fetch_offset == read_limit {
        Ok(Bytes::new())
    } else {
        log.read(fp.fetch_offset, limit_bytes, read_limit)
    };
    let records = match records {
        Ok(r) if !first_with_data && r.len() > limit_bytes => Bytes::new(),
        Ok(r) => r,
        Err(e @ LogError::OffsetOutOfRange { .. }) => {
            tracing::debug!(topic, partition = fp.partition, error = %e, "fetch out of range");
            return partition_error(fp.partition, ResponseError::OffsetOutOfRange.code())
                .with_high_watermark(high_watermark)
                .with_last_stable_offset(high_watermark)
                .with_log_start_offset(log.log_start_offset());
        }
        Err(e) => {
            tracing::error!(topic, partition = fp.partition, error = %e, "fetch read failed");
            return partition_error(fp.partition, e.kafka_error_code());
        }
    };
    PartitionData::default()
        .with_partition_index(fp.partition)
        .with_high_watermark(high_watermark)
        // Without transactions everything below the high watermark is stable.
        .with_last_stable_offset(high_watermark)
        .with_log_start_offset(log.log_start_offset())
        .with_aborted_transactions(Some(Vec::new()))
        .with_preferred_read_replica(BrokerId(-1))
        .with_records(Some(records))
}

/// One pass over every requested partition: the response, its record bytes, and whether any
/// partition carries an error (which answers at once, as in Kafka).
fn read_all(broker: &Broker, req: &FetchRequest, replica_id: i32) -> (FetchResponse, usize, bool) {
    let max_bytes = usize::try_from(req.max_bytes.max(0)).unwrap_or(0);
    let mut total_bytes = 0usize;
    let mut has_error = false;
    let mut topics = Vec::with_capacity(req.topics.len());
    for ft in &req.topics {
        let name = ft.topic.0.as_str();
        let mut partitions = Vec::with_capacity(ft.partitions.len());
        for fp in &ft.partitions {
            let budget = max_bytes.saturating_sub(total_bytes);
            let data = read_partition(broker, name, fp, replica_id, budget, total_bytes == 0);
            has_error |= data.error_code != 0;
            total_bytes += data.records.as_ref().map_or(0, Bytes::len);
            partitions.push(data);
        }
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(ft.topic.clone())
                .with_topic_id(ft.topic_id)
                .with_partitions(partitions),
        );
    }
    (
        FetchResponse::default().with_responses(topics),
        total_bytes,
        has_error,
    )
}

/// Records a follower's fetch offsets with the leader's bookkeeping, asking the controller to
/// add the follower to an ISR it caught up with.
async fn record_follower_fetch(broker: &Broker, req: &FetchRequest, follower: i32) {
    let me = broker.node_id();
    if follower == me {
        return;
    }
    for ft in &req.topics {
        for fp in &ft.partitions {
            let Ok((partition, _)) = broker.leader_partition(ft.topic.0.as_str(), fp.partition)
            else {
                continue;
            };
            if let Some(change) = partition.record_follower_fetch(me, follower, fp.fetch_offset) {
                tracing::info!(topic = %partition.topic, partition = partition.index, follower,
                    isr = ?change.isr, "follower caught up: expanding the ISR");
                broker.alter_isr(&partition, change).await;
            }
        }
    }
}

/// Hands the record buffers of an encoded response back for reuse (they were read into
/// recycled buffers; see `crate::buffers`).
pub fn recycle_records(resp: &mut FetchResponse) {
    for topic in &mut resp.responses {
        for partition in &mut topic.partitions {
            if let Some(Ok(buf)) = partition.records.take().map(Bytes::try_into_mut) {
                crate::buffers::recycle(buf);
            }
        }
    }
}

/// Answers a Fetch request, waiting for data when there is less than `min_bytes`.
pub async fn handle(broker: &Broker, req: FetchRequest, version: i16) -> FetchResponse {
    // Fetch v15+ carries the replica in `replica_state`; we serve up to v12.
    let replica_id = if version <= 14 { req.replica_id.0 } else { -1 };
    if replica_id >= 0 {
        record_follower_fetch(broker, &req, replica_id).await;
    }
    let wait_ms = req.max_wait_ms.clamp(0, FETCH_MAX_WAIT_MS_LIMIT);
    let deadline = Instant::now() + Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0));
    let min_bytes = usize::try_from(req.min_bytes.max(0)).unwrap_or(0);
    let mut appended = broker.subscribe_appends();
    loop {
        // Mark the current append count seen before reading, so an append that lands after
        // the read wakes the wait below instead of being missed.
        appended.borrow_and_update();
        let (resp, bytes, has_error) = read_all(broker, &req, replica_id);
        if bytes >= min_bytes || has_error {
            return resp;
        }
        if Instant::now() >= deadline {
            return resp;
        }
        match tokio::time::timeout_at(deadline, appended.changed()).await {
            Ok(Ok(())) => continue,
            // Timed out (or the broker is going away): one last read so data that arrived at
            // the deadline is not left behind.
            _ => return read_all(broker, &req, replica_id).0,
        }
    }
}
