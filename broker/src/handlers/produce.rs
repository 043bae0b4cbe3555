//! Produce: validate each partition's record batches and append them as sent.
//!
//! As Kafka's LogValidator: the batch must be magic v2 with a correct CRC and within
//! `max.message.bytes`; the broker rewrites only the base offset (and, for LogAppendTime
//! topics, the timestamp fields, recomputing the CRC). Compressed batches are stored as sent.
//!
//! Batches of idempotent producers are checked by the partition log: a retry of a batch already
//! written succeeds with the original batch's base offset (and nothing is written), while a
//! fenced epoch or a sequence gap gets INVALID_PRODUCER_EPOCH or OUT_OF_ORDER_SEQUENCE_NUMBER.

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

use crate::broker::{now_ms, Broker};
use crate::log::batch;

/// Result of producing to one partition: the response entry, plus a reason for the log.
fn produce_partition(
    broker: &Broker,
    topic: &str,
    index: i32,
    records: Option<Bytes>,
) -> Result<PartitionProduceResponse, (i16, String)> {
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
    let partition = broker
        .partition(topic, index)
        .map_err(|e| (e.kafka_error_code(), e.to_string()))?;
    let records = records.ok_or_else(|| {
        (
            ResponseError::CorruptMessage.code(),
            "produce request without records".to_string(),
        )
    })?;
    let headers = batch::split_and_validate(&records, topic_state.config.max_message_bytes())
        .map_err(|e| (e.kafka_error_code(), e.to_string()))?;
    let mut buf = BytesMut::from(&records[..]);
    let log_append_time_ms = topic_state.config.log_append_time().then(now_ms);
    let info = broker
        .append(&partition, &mut buf, &headers, log_append_time_ms)
        .map_err(|e| (e.kafka_error_code(), e.to_string()))?;
    let log_start_offset = partition.log().log_start_offset();
    let log_append_time_ms = match info.duplicate {
        // The original append time, which LogAppendTime batches store as their max timestamp.
        Some(duplicate) => log_append_time_ms.map(|_| duplicate.max_timestamp_ms),
        None => log_append_time_ms,
    };
    Ok(PartitionProduceResponse::default()
        .with_index(index)
        .with_base_offset(info.first_offset)
        .with_log_append_time_ms(log_append_time_ms.unwrap_or(-1))
        .with_log_start_offset(log_start_offset))
}

/// Answers a Produce request; `None` for acks=0, which gets no response.
pub fn handle(broker: &Broker, req: ProduceRequest, version: i16) -> Option<ProduceResponse> {
    let acks = req.acks;
    let acks_valid = matches!(acks, -1..=1);
    let mut responses = Vec::with_capacity(req.topic_data.len());
    for topic in req.topic_data {
        let name = topic.name.0.to_string();
        let mut partition_responses = Vec::with_capacity(topic.partition_data.len());
        for pd in topic.partition_data {
            let result = if acks_valid {
                produce_partition(broker, &name, pd.index, pd.records)
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
    Some(ProduceResponse::default().with_responses(responses))
}
