//! CreateTopics: validate every topic, then create those that passed (unless validate_only).

use std::collections::{BTreeMap, HashMap};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
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
pub async fn handle(
    broker: &Broker,
    req: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for t in &req.topics {
        *seen.entry(t.name.0.to_string()).or_default() += 1;
    }
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let duplicated = seen.get(t.name.0.as_str()).copied().unwrap_or(0) > 1;
        let r = create_one(broker, t, duplicated, req.validate_only, version).await;
        // Fields that older versions do not carry must stay at their defaults.
        results.push(if version < 5 {
            r.with_num_partitions(-1).with_replication_factor(-1)
        } else {
            r
        });
    }
    CreateTopicsResponse::default().with_topics(results)
}

async fn create_one(
    broker: &Broker,
    t: CreatableTopic,
    duplicated: bool,
    validate_only: bool,
    version: i16,
) -> CreatableTopicResult {
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
    if duplicated {
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
                "both manual assignments and partition count or replication factor were given"
                    .into(),
            );
        }
        num_partitions = i32::try_from(t.assignments.len()).unwrap_or(i32::MAX);
        replication_factor = i16::try_from(t.assignments[0].broker_ids.len()).unwrap_or(i16::MAX);
    }
    let assignment = (!t.assignments.is_empty()).then(|| {
        t.assignments
            .iter()
            .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
            .collect()
    });
    let new = NewTopic {
        name: name.clone(),
        num_partitions,
        replication_factor,
        configs,
        assignment,
    };
    let outcome = match broker.validate_new_topic(&new) {
        Err(e) => Err(e),
        Ok(v) if validate_only => Ok((v.partitions, v.replication_factor, v.config, None)),
        Ok(v) => broker.create_topic(&new).await.map(|topic| {
            (
                topic.partition_count,
                v.replication_factor,
                topic.config.clone(),
                Some(topic.id),
            )
        }),
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
}
