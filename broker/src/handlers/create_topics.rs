//! CreateTopics: validate every topic, then create those that passed (unless validate_only).

use std::collections::{BTreeMap, HashMap};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::broker::{Broker, BrokerError, NewTopic};
use crate::topic_config::TopicConfig;

/// The created topic's configs as CreateTopics v5+ reports them (value and source).
fn describe(broker: &Broker, config: &TopicConfig) -> Vec<CreatableTopicConfigs> {
    broker
        .broker_configs()
        .describe_topic(config)
        .into_iter()
        .map(|c| {
            CreatableTopicConfigs::default()
                .with_name(StrBytes::from_static_str(c.def.name))
                .with_value(c.value.map(StrBytes::from_string))
                .with_read_only(c.read_only)
                .with_config_source(c.source)
        })
        .collect()
}

/// Answers a CreateTopics request.
pub fn handle(broker: &Broker, req: CreateTopicsRequest, version: i16) -> CreateTopicsResponse {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for t in &req.topics {
        *seen.entry(t.name.0.to_string()).or_default() += 1;
    }
    let results = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let mut result = CreatableTopicResult::default()
                .with_name(t.name.clone())
                .with_num_partitions(-1)
                .with_replication_factor(-1);
            let fail = |result: CreatableTopicResult, code: i16, message: String| {
                tracing::debug!(topic = %name, code, %message, "create topic rejected");
                result
                    .with_error_code(code)
                    .with_error_message(Some(StrBytes::from_string(message)))
            };
            if seen.get(&name).copied().unwrap_or(0) > 1 {
                return fail(
                    result,
                    ResponseError::InvalidRequest.code(),
                    format!("topic `{name}` appears more than once in the request"),
                );
            }
            let mut configs = BTreeMap::new();
            for c in &t.configs {
                match &c.value {
                    Some(v) => {
                        configs.insert(c.name.to_string(), v.to_string());
                    }
                    None => {
                        return fail(
                            result,
                            ResponseError::InvalidConfig.code(),
                            format!("config `{}` has a null value", c.name.as_str()),
                        )
                    }
                }
            }
            let mut num_partitions = t.num_partitions;
            let mut replication_factor = t.replication_factor;
            if !t.assignments.is_empty() {
                if num_partitions != -1 || replication_factor != -1 {
                    return fail(
                        result,
                        ResponseError::InvalidRequest.code(),
                        "both manual assignments and partition count or replication factor were given".into(),
                    );
                }
                if let Some(bad) = t
                    .assignments
                    .iter()
                    .flat_map(|a| a.broker_ids.iter())
                    .find(|b| b.0 != broker.node_id())
                {
                    return fail(
                        result,
                        ResponseError::InvalidReplicaAssignment.code(),
                        format!("unknown broker {} in the replica assignment", bad.0),
                    );
                }
                num_partitions = i32::try_from(t.assignments.len()).unwrap_or(i32::MAX);
                replication_factor = i16::try_from(t.assignments[0].broker_ids.len()).unwrap_or(i16::MAX);
            }
            let new = NewTopic {
                name: name.clone(),
                num_partitions,
                replication_factor,
                configs,
            };
            let outcome = if req.validate_only {
                broker.validate_new_topic(&new).map(|(p, rf, c)| (p, rf, c, None))
            } else {
                broker.create_topic(&new).map(|topic| {
                    let p = i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX);
                    (p, 1, topic.config.clone(), Some(topic.id))
                })
            };
            match outcome {
                Ok((partitions, rf, config, id)) => {
                    result = result
                        .with_num_partitions(partitions)
                        .with_replication_factor(rf);
                    if version >= 5 {
                        result = result.with_configs(Some(describe(broker, &config)));
                    }
                    if let (Some(id), true) = (id, version >= 7) {
                        result = result.with_topic_id(id);
                    }
                    result
                }
                Err(e @ BrokerError::TopicAlreadyExists(_)) => {
                    fail(result, e.kafka_error_code(), e.to_string())
                }
                Err(e) => fail(result, e.kafka_error_code(), e.to_string()),
            }
        })
        .map(|r| {
            // Fields that older versions do not carry must stay at their defaults.
            if version < 5 {
                r.with_num_partitions(-1).with_replication_factor(-1)
            } else {
                r
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(results)
}
