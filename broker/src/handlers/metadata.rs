//! Metadata: brokers, topics, partitions, leaders, replicas and ISRs from this node's copy of
//! the metadata image; auto-creates topics when allowed.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::broker::{Broker, BrokerError, NewTopic, Topic};
use crate::controller::image::{MetadataImage, NO_LEADER};
use crate::topic_config::validate_topic_name;

/// Kafka's "authorized operations not requested" marker.
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

fn ids(v: &[i32]) -> Vec<BrokerId> {
    v.iter().copied().map(BrokerId).collect()
}

fn topic_entry(image: &MetadataImage, topic: &Topic) -> MetadataResponseTopic {
    let partitions = image
        .topics
        .get(&topic.name)
        .filter(|t| t.id == topic.id)
        .map(|t| t.partitions.as_slice())
        .unwrap_or_default();
    let partitions = partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let offline: Vec<i32> = p
                .replicas
                .iter()
                .copied()
                .filter(|r| image.brokers.get(r).is_none_or(|b| b.fenced))
                .collect();
            let error = if p.leader == NO_LEADER {
                ResponseError::LeaderNotAvailable.code()
            } else {
                0
            };
            MetadataResponsePartition::default()
                .with_error_code(error)
                .with_partition_index(i32::try_from(i).unwrap_or(i32::MAX))
                .with_leader_id(BrokerId(p.leader))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(ids(&p.replicas))
                .with_isr_nodes(ids(&p.isr))
                .with_offline_replicas(ids(&offline))
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
pub async fn handle(broker: &Broker, req: MetadataRequest, version: i16) -> MetadataResponse {
    // v0 sends an empty list to mean "all topics"; v1+ uses null for that.
    let wanted = match req.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(t),
    };
    // Auto-creation: v0-v3 always allow it; later versions say so in the request.
    let may_create =
        broker.config().auto_create_topics_enable && (version < 4 || req.allow_auto_topic_creation);
    let mut topics = Vec::new();
    match wanted {
        None => {
            let image = broker.image();
            topics.extend(broker.topics().iter().map(|t| topic_entry(&image, t)));
        }
        Some(requested) => {
            for rt in &requested {
                let Some(name) = rt.name.as_ref().map(|n| n.0.to_string()) else {
                    topics.push(match broker.topic_by_id(rt.topic_id) {
                        Some(t) => topic_entry(&broker.image(), &t),
                        None => MetadataResponseTopic::default()
                            .with_error_code(ResponseError::UnknownTopicId.code())
                            .with_topic_id(rt.topic_id)
                            .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED),
                    });
                    continue;
                };
                if let Some(t) = broker.topic(&name) {
                    topics.push(topic_entry(&broker.image(), &t));
                    continue;
                }
                if let Err(reason) = validate_topic_name(&name) {
                    tracing::debug!(topic = %name, %reason, "metadata for invalid topic name");
                    topics.push(error_entry(
                        &name,
                        ResponseError::InvalidTopicException.code(),
                    ));
                    continue;
                }
                if !may_create {
                    topics.push(error_entry(
                        &name,
                        ResponseError::UnknownTopicOrPartition.code(),
                    ));
                    continue;
                }
                let new = NewTopic {
                    name: name.clone(),
                    num_partitions: -1,
                    replication_factor: -1,
                    configs: Default::default(),
                    assignment: None,
                };
                let entry = match broker.create_topic(&new).await {
                    Ok(t) => topic_entry(&broker.image(), &t),
                    // A concurrent request created it first: answer with what exists.
                    Err(BrokerError::TopicAlreadyExists(_)) => match broker.topic(&name) {
                        Some(t) => topic_entry(&broker.image(), &t),
                        None => error_entry(&name, ResponseError::LeaderNotAvailable.code()),
                    },
                    Err(BrokerError::Refused { code, .. })
                        if code == ResponseError::TopicAlreadyExists.code() =>
                    {
                        match broker.topic(&name) {
                            Some(t) => topic_entry(&broker.image(), &t),
                            None => error_entry(&name, ResponseError::LeaderNotAvailable.code()),
                        }
                    }
                    Err(e) => {
                        tracing::warn!(topic = %name, error = %e, "auto-create failed");
                        error_entry(&name, e.kafka_error_code())
                    }
                };
                topics.push(entry);
            }
        }
    }
    let image = broker.image();
    // Kafka lists only unfenced brokers. One exception: a node in its own controlled shutdown
    // is fenced from the moment its leaderships moved (Kafka fences only at the very end), yet
    // still answers until it closes its connections, and it lists itself meanwhile. A response
    // without the node that sent it makes librdkafka (2.10 on) drop that broker; when it was
    // the only one, the client has no broker left until its re-bootstrap, 5 minutes later.
    let me = broker.node_id();
    let listed: Vec<_> = image
        .brokers
        .values()
        .filter(|b| !b.fenced || (b.id == me && b.shutting_down))
        .collect();
    let controller = listed_controller(
        broker.controller().leader_id(),
        me,
        &listed.iter().map(|b| b.id).collect::<Vec<_>>(),
    );
    let brokers = listed
        .iter()
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.id))
                .with_host(StrBytes::from_string(b.host.clone()))
                .with_port(b.port)
        })
        .collect();
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(StrBytes::from_string(broker.cluster_id())))
        .with_controller_id(BrokerId(controller))
        .with_topics(topics)
        .with_cluster_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}

/// The controller id a Metadata response names: the active controller (`leader`) when it is
/// one of the `listed` brokers; when it is not (its broker fenced, or not yet applied by the
/// answering node), this node if listed, else the lowest listed id; -1 while no active
/// controller is known (clients then ask again) or no broker is listed. Clients send admin
/// requests to the named node, and every broker forwards them to the active controller, so
/// any listed broker serves (Kafka in KRaft mode names a random live broker). Naming a node
/// the response does not list would strand librdkafka: it waits for a broker state change to
/// look the controller up again, and a broker it only just learned of stays idle without one,
/// so its admin request times out.
fn listed_controller(leader: Option<i32>, me: i32, listed: &[i32]) -> i32 {
    let Some(leader) = leader else {
        return -1;
    };
    [leader, me]
        .into_iter()
        .chain(listed.iter().copied().min())
        .find(|id| listed.contains(id))
        .unwrap_or(-1)
}

#[cfg(test)]
mod tests {
    use super::listed_controller;

    #[test]
    fn the_named_controller_is_always_a_listed_broker() {
        // The active controller when it is listed.
        assert_eq!(listed_controller(Some(2), 1, &[1, 2, 3]), 2);
        // Not listed (its broker is fenced, or not applied here yet): this node, then the
        // lowest listed id. This is what a node answered, before the fix, with only broker 3
        // listed and controller 2 named, which left librdkafka's CreateTopics waiting.
        assert_eq!(listed_controller(Some(2), 1, &[1, 3]), 1);
        assert_eq!(listed_controller(Some(2), 1, &[3]), 3);
        assert_eq!(listed_controller(Some(2), 1, &[]), -1);
        // No active controller known (an election): none named, so clients ask again.
        assert_eq!(listed_controller(None, 1, &[1, 2, 3]), -1);
    }
}
