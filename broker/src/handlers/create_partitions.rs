//! CreatePartitions: grow a topic (never shrink it), optionally with a manual assignment of
//! registered brokers.

use std::collections::HashMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::broker::{Broker, BrokerError};

/// Answers a CreatePartitions request.
pub async fn handle(broker: &Broker, req: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for t in &req.topics {
        *seen.entry(t.name.0.to_string()).or_default() += 1;
    }
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        results.push({
            let name = t.name.0.to_string();
            let result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            let outcome = if seen[&name] > 1 {
                Err((
                    ResponseError::InvalidRequest.code(),
                    Some("Duplicate topic name.".to_string()),
                ))
            } else {
                let assignments: Option<Vec<Vec<i32>>> = t.assignments.map(|a| {
                    a.into_iter()
                        .map(|a| a.broker_ids.into_iter().map(|b| b.0).collect())
                        .collect()
                });
                broker
                    .create_partitions(&name, t.count, assignments.as_deref(), req.validate_only)
                    .await
                    .map_err(|e| {
                        let message = match e {
                            // Kafka's controller answers an unknown topic without a message.
                            BrokerError::UnknownTopicOrPartition { .. } => None,
                            ref e => Some(e.to_string()),
                        };
                        (e.kafka_error_code(), message)
                    })
            };
            match outcome {
                Ok(()) => result,
                Err((code, message)) => {
                    tracing::debug!(topic = %name, code, ?message, "create partitions rejected");
                    result
                        .with_error_code(code)
                        .with_error_message(message.map(StrBytes::from_string))
                }
            }
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}
