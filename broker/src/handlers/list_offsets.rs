//! ListOffsets: earliest, latest, or the first offset at or after a timestamp.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use crate::broker::Broker;

/// Kafka's sentinel timestamps.
const LATEST_TIMESTAMP: i64 = -1;
const EARLIEST_TIMESTAMP: i64 = -2;

fn lookup(
    broker: &Broker,
    topic: &str,
    index: i32,
    timestamp: i64,
    current_leader_epoch: i32,
) -> ListOffsetsPartitionResponse {
    let base = ListOffsetsPartitionResponse::default()
        .with_partition_index(index)
        .with_timestamp(-1)
        .with_offset(-1)
        .with_leader_epoch(-1);
    let (partition, epoch) = match broker.leader_partition(topic, index) {
        Ok(p) => p,
        Err(e) => return base.with_error_code(e.kafka_error_code()),
    };
    if current_leader_epoch >= 0 && current_leader_epoch != epoch {
        return base.with_error_code(if current_leader_epoch < epoch {
            ResponseError::FencedLeaderEpoch.code()
        } else {
            ResponseError::UnknownLeaderEpoch.code()
        });
    }
    let log = partition.log();
    // Consumers never learn of offsets past the high watermark.
    let high_watermark = log.high_watermark();
    match timestamp {
        EARLIEST_TIMESTAMP => base
            .with_offset(log.log_start_offset())
            .with_leader_epoch(epoch),
        LATEST_TIMESTAMP => base.with_offset(high_watermark).with_leader_epoch(epoch),
        ts if ts < 0 => base.with_error_code(ResponseError::UnsupportedVersion.code()),
        ts => match log.offset_for_timestamp(ts) {
            Ok(Some((offset, found_ts))) if offset < high_watermark => base
                .with_offset(offset)
                .with_timestamp(found_ts)
                .with_leader_epoch(epoch),
            // No record at or after the timestamp: Kafka answers offset and timestamp -1.
            Ok(_) => base,
            Err(e) => {
                tracing::error!(topic, partition = index, error = %e, "timestamp lookup failed");
                base.with_error_code(e.kafka_error_code())
            }
        },
    }
}

/// Answers a ListOffsets request.
pub fn handle(broker: &Broker, req: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let current_epoch = if version >= 4 {
                        p.current_leader_epoch
                    } else {
                        -1
                    };
                    lookup(broker, &name, p.partition_index, p.timestamp, current_epoch)
                })
                // leader_epoch exists from v4 on; older encoders must see its default.
                .map(|r| {
                    if version < 4 {
                        r.with_leader_epoch(-1)
                    } else {
                        r
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}
