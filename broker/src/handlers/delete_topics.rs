//! DeleteTopics: by name (v1+) or by topic id (v6+).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use crate::broker::Broker;

async fn delete_one(
    broker: &Broker,
    name: Option<String>,
    id: Uuid,
    version: i16,
) -> DeletableTopicResult {
    let resolved = match (&name, id.is_nil()) {
        (Some(n), _) => broker.topic(n),
        (None, false) => broker.topic_by_id(id),
        (None, true) => None,
    };
    let mut result = DeletableTopicResult::default();
    let Some(topic) = resolved else {
        let (code, message) = match &name {
            Some(n) => (
                ResponseError::UnknownTopicOrPartition.code(),
                format!("unknown topic `{n}`"),
            ),
            None => (
                ResponseError::UnknownTopicId.code(),
                format!("unknown topic id {id}"),
            ),
        };
        result = result.with_name(name.map(|n| TopicName(StrBytes::from_string(n))));
        if version >= 6 {
            result = result.with_topic_id(id);
        }
        if version >= 5 {
            result = result.with_error_message(Some(StrBytes::from_string(message)));
        }
        return result.with_error_code(code);
    };
    result = result.with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))));
    if version >= 6 {
        result = result.with_topic_id(topic.id);
    }
    if let Err(e) = broker.delete_topic(&topic.name).await {
        result = result.with_error_code(e.kafka_error_code());
        if version >= 5 {
            result = result.with_error_message(Some(StrBytes::from_string(e.to_string())));
        }
    }
    result
}

/// Answers a DeleteTopics request.
pub async fn handle(
    broker: &Broker,
    req: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let targets: Vec<(Option<String>, Uuid)> = if version >= 6 {
        req.topics
            .into_iter()
            .map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        req.topic_names
            .into_iter()
            .map(|n| (Some(n.0.to_string()), Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::with_capacity(targets.len());
    for (name, id) in targets {
        responses.push(delete_one(broker, name, id, version).await);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}
