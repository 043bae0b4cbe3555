//! Metadata: brokers, topics, partitions and leaders; auto-creates topics when allowed.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::broker::{validate_topic_name, Broker, BrokerError, NewTopic, Topic};

/// Kafka's "authorized operations not requested" marker.
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

fn topic_entry(broker: &Broker, topic: &Topic) -> MetadataResponseTopic {
    let node = BrokerId(broker.node_id());
    let partitions = topic
        .partitions
        .iter()
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p.index)
                .with_leader_id(node)
                .with_leader_epoch(0)
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_topic_id(topic.id)
        .with_is_internal(topic.name == crate::group::storage::OFFSETS_TOPIC)
        .with_partitions(partitions)
        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}

fn error_entry(name: &str, code: i16) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(code)
        .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}

/// Answers a Metadata request.
pub fn handle(broker: &Broker, req: MetadataRequest, version: i16) -> MetadataResponse {
    let (host, port) = broker.advertised();
    let brokers = vec![MetadataResponseBroker::default()
        .with_node_id(BrokerId(broker.node_id()))
        .with_host(StrBytes::from_string(host.to_string()))
        .with_port(port)];
    // v0 sends an empty list to mean "all topics"; v1+ uses null for that.
    let wanted = match req.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(t),
    };
    // Auto-creation: v0-v3 always allow it; later versions say so in the request.
    let may_create =
        broker.config().auto_create_topics_enable && (version < 4 || req.allow_auto_topic_creation);
    let topics = match wanted {
        None => broker
            .topics()
            .iter()
            .map(|t| topic_entry(broker, t))
            .collect(),
        Some(requested) => requested
            .iter()
            .map(|rt| {
                let Some(name) = rt.name.as_ref().map(|n| n.0.to_string()) else {
                    return match broker.topic_by_id(rt.topic_id) {
                        Some(t) => topic_entry(broker, &t),
                        None => MetadataResponseTopic::default()
                            .with_error_code(ResponseError::UnknownTopicId.code())
                            .with_topic_id(rt.topic_id)
                            .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED),
                    };
                };
                if let Some(t) = broker.topic(&name) {
                    return topic_entry(broker, &t);
                }
                if let Err(reason) = validate_topic_name(&name) {
                    tracing::debug!(topic = %name, %reason, "metadata for invalid topic name");
                    return error_entry(&name, ResponseError::InvalidTopicException.code());
                }
                if !may_create {
                    return error_entry(&name, ResponseError::UnknownTopicOrPartition.code());
                }
                let new = NewTopic {
                    name: name.clone(),
                    num_partitions: -1,
                    replication_factor: -1,
                    configs: Default::default(),
                };
                match broker.create_topic(&new) {
                    Ok(t) => topic_entry(broker, &t),
                    // A concurrent request created it first: answer with what exists.
                    Err(BrokerError::TopicAlreadyExists(_)) => match broker.topic(&name) {
                        Some(t) => topic_entry(broker, &t),
                        None => error_entry(&name, ResponseError::LeaderNotAvailable.code()),
                    },
                    Err(e) => {
                        tracing::warn!(topic = %name, error = %e, "auto-create failed");
                        error_entry(&name, e.kafka_error_code())
                    }
                }
            })
            .collect(),
    };
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(StrBytes::from_string(broker.cluster_id().to_string())))
        .with_controller_id(BrokerId(broker.node_id()))
        .with_topics(topics)
        .with_cluster_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}
