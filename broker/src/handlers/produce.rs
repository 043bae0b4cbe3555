//! Produce: validate each partition's record batches and append them as sent.
//!
//! As Kafka's LogValidator: the batch must be magic v2 with a correct CRC and within
//! `max.message.bytes`; the broker rewrites only the base offset (and, for LogAppendTime
//! topics, the timestamp fields, recomputing the CRC). Compressed batches are stored as sent.
//!
//! Batches of idempotent producers are checked by the partition log: a retry of a batch already
//! written succeeds with the original batch's base offset (and nothing is written), while a
//! fenced epoch or a sequence gap gets INVALID_PRODUCER_EPOCH or OUT_OF_ORDER_SEQUENCE_NUMBER.
//!
//! A topic under write protection (a mirror's replica, or a source fenced for a failover)
//! refuses every producer but the one its protection names, with POLICY_VIOLATION, before
//! anything is validated or written.
//!
//! Only the leader appends. With acks=all fewer in-sync replicas than `min.insync.replicas` is
//! NOT_ENOUGH_REPLICAS before anything is written (in sync: ISR members the leader heard from
//! within `replica_lag_time_max_ms`, so a leader whose ISR shrink cannot be committed, the
//! metadata quorum being lost, still refuses); after the append the response waits
//! (Kafka's delayed produce, bounded by the request's timeout) until the high watermark
//! passes the appended records, and is NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR shrank
//! below the minimum meanwhile, REQUEST_TIMED_OUT if the timeout passed, and
//! NOT_LEADER_OR_FOLLOWER if the leadership moved.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;
use crate::clock::now_ms;
use crate::log::batch;
use crate::replication::{replica_lag_time_max_ms, Appended};

/// Result of producing to one partition: the response entry, plus a reason for the log, and
/// for acks=all what to wait for.
fn produce_partition(
    broker: &Broker,
    topic: &str,
    index: i32,
    records: Option<Bytes>,
    acks: i16,
    client_id: &str,
) -> Result<(PartitionProduceResponse, Option<Appended>), (i16, String)> {
    let topic_state = broker.topic(topic).ok_or_else(|| {
        (
            ResponseError::UnknownTopicOrPartition.code(),
            format!("unknown topic `{topic}`"),
        )
    })?;
    if topic == crate::group::storage::OFFSETS_TOPIC {
        // Kafka refuses client appends to internal topics: only the coordinator writes there.
        return Err((
            ResponseError::InvalidTopicException.code(),
            format!("cannot append to internal topic `{topic}`"),
        ));
    }
    if let Some(p) = &topic_state.write_protection {
        if p.writer.as_deref() != Some(client_id) {
            return Err((
                ResponseError::PolicyViolation.code(),
                match &p.writer {
                    Some(_) => format!(
                        "topic `{topic}` is a replica written by mirror flow `{}`: it is read-only until that flow fails over",
                        p.flow
                    ),
                    None => format!(
                        "topic `{topic}` is fenced for a failover of mirror flow `{}`: produce to the flow's target site",
                        p.flow
                    ),
                },
            ));
        }
    }
    let (partition, leader_epoch) = broker
        .leader_partition(topic, index)
        .map_err(|e| (e.kafka_error_code(), e.to_string()))?;
    let min_insync_replicas: usize = topic_state
        .config
        .get("min.insync.replicas")
        .parse()
        .unwrap_or(1);
    if acks == -1 {
        let isr = partition.replica_state().isr.len();
        let in_sync =
            partition.in_sync_count(broker.node_id(), replica_lag_time_max_ms(broker.config()));
        if in_sync < min_insync_replicas {
            return Err((
                ResponseError::NotEnoughReplicas.code(),
                format!(
                    "{in_sync} of the {isr} ISR member(s) of {topic}-{index} are in sync, below min.insync.replicas={min_insync_replicas}"
                ),
            ));
        }
    }
    let records = records.ok_or_else(|| {
        (
            ResponseError::CorruptMessage.code(),
            "produce request without records".to_string(),
        )
    })?;
    let headers = batch::split_and_validate(&records, topic_state.config.max_message_bytes())
        .map_err(|e| (e.kafka_error_code(), e.to_string()))?;
    // The log rewrites offsets in place, so the records are copied once, into a recycled
    // buffer (a fresh one per request cost more in page faults than the copy itself).
    let mut buf = crate::buffers::take(records.len());
    buf.extend_from_slice(&records);
    let log_append_time_ms = topic_state.config.log_append_time().then(now_ms);
    let appended = broker.append(&partition, &mut buf, &headers, log_append_time_ms);
    crate::buffers::recycle(buf);
    let info = appended.map_err(|e| (e.kafka_error_code(), e.to_string()))?;
    let log_start_offset = partition.log().log_start_offset();
    let log_append_time_ms = match info.duplicate {
        // The original append time, which LogAppendTime batches store as their max timestamp.
        Some(duplicate) => log_append_time_ms.map(|_| duplicate.max_timestamp_ms),
        None => log_append_time_ms,
    };
    let response = PartitionProduceResponse::default()
        .with_index(index)
        .with_base_offset(info.first_offset)
        .with_log_append_time_ms(log_append_time_ms.unwrap_or(-1))
        .with_log_start_offset(log_start_offset);
    let waiting = (acks == -1).then(|| Appended {
        partition,
        leader_epoch,
        last_offset: info.last_offset,
        min_insync_replicas,
    });
    Ok((response, waiting))
}

/// Answers a Produce request; `None` for acks=0, which gets no response.
///
/// `client_id` is the request header's: the one writer a write-protected topic still accepts
/// is named by it. That keeps mistakes out, not attackers (a client can claim any id); access
/// control is the ACLs' work.
pub async fn handle(
    broker: &Broker,
    req: ProduceRequest,
    version: i16,
    client_id: &str,
) -> Option<ProduceResponse> {
    let acks = req.acks;
    let timeout_ms = u64::try_from(req.timeout_ms.max(0)).unwrap_or(0);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
    let mut waiting: Vec<(usize, usize, Appended)> = Vec::new();
    let acks_valid = matches!(acks, -1..=1);
    let mut responses = Vec::with_capacity(req.topic_data.len());
    for topic in req.topic_data {
        let name = topic.name.0.to_string();
        let mut partition_responses = Vec::with_capacity(topic.partition_data.len());
        for pd in topic.partition_data {
            let result = if acks_valid {
                produce_partition(broker, &name, pd.index, pd.records, acks, client_id).map(
                    |(r, w)| {
                        if let Some(w) = w {
                            waiting.push((responses.len(), partition_responses.len(), w));
                        }
                        r
                    },
                )
            } else {
                Err((
                    ResponseError::InvalidRequiredAcks.code(),
                    format!("acks must be -1, 0 or 1, got {acks}"),
                ))
            };
            partition_responses.push(result.unwrap_or_else(|(code, reason)| {
                tracing::debug!(topic = %name, partition = pd.index, code, %reason, "produce rejected");
                PartitionProduceResponse::default()
                    .with_index(pd.index)
                    .with_error_code(code)
                    .with_base_offset(-1)
                    .with_log_append_time_ms(-1)
                    .with_log_start_offset(-1)
                    // error_message exists from v8 on; older encoders must not see it.
                    .with_error_message((version >= 8).then(|| StrBytes::from_string(reason)))
            }));
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_partition_responses(partition_responses),
        );
    }
    if acks == 0 {
        return None;
    }
    for (t, p, w) in waiting {
        let code = broker.wait_replicated(&w, deadline).await;
        if code != 0 {
            tracing::debug!(topic = %w.partition.topic, partition = w.partition.index, code,
                last_offset = w.last_offset, "acks=all produce not replicated");
            let r = &mut responses[t].partition_responses[p];
            *r = std::mem::take(r).with_error_code(code).with_base_offset(-1);
        }
    }
    Some(ProduceResponse::default().with_responses(responses))
}
