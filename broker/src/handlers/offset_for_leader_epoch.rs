//! OffsetForLeaderEpoch: where a leader epoch ends in the leader's log (Kafka's
//! `endOffsetForEpoch`). Followers use it to find a divergent tail after a leader change;
//! consumers use it to validate their position after one (KIP-320).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use crate::broker::Broker;
use crate::log::{UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET};

fn one(
    broker: &Broker,
    topic: &str,
    partition: i32,
    current: i32,
    requested: i32,
) -> EpochEndOffset {
    let base = EpochEndOffset::default()
        .with_partition(partition)
        .with_leader_epoch(UNDEFINED_EPOCH)
        .with_end_offset(UNDEFINED_EPOCH_OFFSET);
    let (p, epoch) = match broker.leader_partition(topic, partition) {
        Ok(p) => p,
        Err(e) => return base.with_error_code(e.kafka_error_code()),
    };
    if current >= 0 && current != epoch {
        return base.with_error_code(if current < epoch {
            ResponseError::FencedLeaderEpoch.code()
        } else {
            ResponseError::UnknownLeaderEpoch.code()
        });
    }
    let (found_epoch, end_offset) = p.log().end_offset_for_epoch(requested);
    base.with_leader_epoch(found_epoch)
        .with_end_offset(end_offset)
}

/// Answers an OffsetForLeaderEpoch request.
pub fn handle(broker: &Broker, req: OffsetForLeaderEpochRequest) -> OffsetForLeaderEpochResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.topic.0.to_string();
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    one(
                        broker,
                        &name,
                        p.partition,
                        p.current_leader_epoch,
                        p.leader_epoch,
                    )
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
