//! DeleteRecords: move each partition's log start offset (the low watermark) forward.

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use crate::broker::Broker;

/// Answers a DeleteRecords request. The request's timeout is moot on a single node: the new
/// start is in place (and saved) before the response goes out.
pub fn handle(broker: &Broker, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let result = DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index);
                    let outcome = if name == crate::group::storage::OFFSETS_TOPIC {
                        // Only the group coordinator may drop its own history (it compacts).
                        Err(crate::broker::BrokerError::InvalidTopic(format!(
                            "cannot delete records of internal topic `{name}`"
                        )))
                    } else {
                        broker.delete_records(&name, p.partition_index, p.offset)
                    };
                    match outcome {
                        Ok(low_watermark) => result.with_low_watermark(low_watermark),
                        Err(e) => {
                            tracing::debug!(topic = %name, partition = p.partition_index,
                                offset = p.offset, error = %e, "delete records rejected");
                            result
                                .with_low_watermark(-1)
                                .with_error_code(e.kafka_error_code())
                        }
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}
