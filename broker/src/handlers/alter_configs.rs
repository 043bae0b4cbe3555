//! AlterConfigs and IncrementalAlterConfigs for topics and brokers.
//!
//! AlterConfigs replaces the whole override set of a resource (configs it does not name go back
//! to their inherited values); IncrementalAlterConfigs applies SET / DELETE / APPEND / SUBTRACT
//! to the current overrides. Either way the resulting set is validated whole before anything
//! changes, so a request with one bad entry leaves the resource untouched; `validate_only`
//! stops after validation.

use std::collections::{BTreeMap, HashMap, HashSet};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;
use crate::broker_config::{apply_incremental, broker_def, IncrementalOp};
use crate::controller::image::{
    parse_tail_truncation, WriteProtection, TAIL_TRUNCATION_KEY, WRITE_PROTECTION_KEY,
};
use crate::handlers::config_resource::{resolve, ConfigResource};
use crate::topic_config::topic_def;

/// A resource's outcome: nothing, or an error code with its message.
type AlterResult = Result<(), (i16, String)>;

/// What one resource entry asks for.
enum Change {
    /// AlterConfigs: the complete new override set (null values are left out, as Kafka).
    Replace(Vec<(String, Option<String>)>),
    /// IncrementalAlterConfigs: operations on the current overrides.
    Incremental(Vec<(String, i8, Option<String>)>),
}

impl Change {
    fn names(&self) -> Vec<&str> {
        match self {
            Change::Replace(c) => c.iter().map(|(n, _)| n.as_str()).collect(),
            Change::Incremental(c) => c.iter().map(|(n, _, _)| n.as_str()).collect(),
        }
    }
}

/// Computes the new override set from `current` and validates it by applying it (or only
/// validating, with `validate_only`).
async fn alter_resource(
    broker: &Broker,
    resource_type: i8,
    name: &str,
    change: Change,
    validate_only: bool,
) -> AlterResult {
    let invalid_request = |m: String| (ResponseError::InvalidRequest.code(), m);
    let names = change.names();
    if names.len() != names.iter().collect::<HashSet<_>>().len() {
        return Err(invalid_request("Error due to duplicate config keys".into()));
    }
    let resource = resolve(broker, resource_type, name)?;
    if names.contains(&WRITE_PROTECTION_KEY) {
        return alter_write_protection(broker, &resource, change, validate_only).await;
    }
    if names.contains(&TAIL_TRUNCATION_KEY) {
        return truncate_tails(broker, &resource, change, validate_only).await;
    }
    let (current, def_of): (BTreeMap<String, String>, fn(&str) -> _) = match &resource {
        ConfigResource::Topic(topic) => {
            let Some(t) = broker.topic(topic) else {
                return Err((
                    ResponseError::UnknownTopicOrPartition.code(),
                    format!("The topic '{topic}' does not exist."),
                ));
            };
            (t.config.overrides().clone(), topic_def)
        }
        ConfigResource::Broker { per_broker } => {
            let configs = broker.broker_configs();
            let layer = if *per_broker {
                &configs.dynamic().per_broker
            } else {
                &configs.dynamic().cluster_default
            };
            (layer.clone(), broker_def)
        }
    };
    let next = match change {
        Change::Replace(configs) => configs
            .into_iter()
            .filter_map(|(n, v)| v.map(|v| (n, v)))
            .collect(),
        Change::Incremental(ops) => {
            let mut decoded = Vec::with_capacity(ops.len());
            for (config, code, value) in ops {
                let op = IncrementalOp::from_code(code)
                    .ok_or_else(|| invalid_request(format!("Unknown operations type {code}")))?;
                if value.is_none() && op != IncrementalOp::Delete {
                    return Err(invalid_request(format!(
                        "Null value not supported for : {config}"
                    )));
                }
                if matches!(resource, ConfigResource::Topic(_)) && topic_def(&config).is_none() {
                    return Err((
                        ResponseError::InvalidConfig.code(),
                        format!("Unknown topic config name: {config}"),
                    ));
                }
                decoded.push((config, op, value));
            }
            apply_incremental(&current, &decoded, def_of)?
        }
    };
    let result = match resource {
        ConfigResource::Topic(topic) => {
            broker.alter_topic_config(&topic, next, validate_only).await
        }
        ConfigResource::Broker { per_broker } => {
            broker
                .alter_broker_config(per_broker, next, validate_only)
                .await
        }
    };
    result.map_err(|e| (e.kafka_error_code(), e.to_string()))
}

/// The topic and value of a request that names `key`, a strait attribute or operation that
/// must be alone in its request and applies to topics only: SET's value (AlterConfigs' value),
/// or `None` for DELETE where `delete` allows it.
fn sole_topic_value<'r>(
    key: &str,
    resource: &'r ConfigResource,
    change: Change,
    delete: bool,
) -> Result<(&'r str, Option<String>), (i16, String)> {
    let invalid = |m: String| (ResponseError::InvalidRequest.code(), m);
    let ConfigResource::Topic(topic) = resource else {
        return Err(invalid(format!("{key} applies to topics only")));
    };
    let value = match change {
        Change::Replace(mut c) if c.len() == 1 => c.pop().and_then(|(_, v)| v),
        Change::Incremental(mut c) if c.len() == 1 => match c.pop() {
            Some((_, 0, v)) => v,
            Some((_, 1, _)) if delete => None,
            Some((_, op, _)) if delete => {
                return Err(invalid(format!(
                    "{key} can be SET or DELETEd, not changed with operation {op}"
                )))
            }
            Some((_, op, _)) => {
                return Err(invalid(format!(
                    "{key} is an operation: SET it, not operation {op}"
                )))
            }
            None => None,
        },
        _ => {
            return Err(invalid(format!(
                "a request that names {key} may name no other config"
            )))
        }
    };
    Ok((topic.as_str(), value))
}

/// A request naming [`WRITE_PROTECTION_KEY`]: sets (a value) or clears (AlterConfigs with a
/// null or empty value, IncrementalAlterConfigs DELETE) the topic's write protection, and
/// nothing else, so it may name no other config.
async fn alter_write_protection(
    broker: &Broker,
    resource: &ConfigResource,
    change: Change,
    validate_only: bool,
) -> AlterResult {
    let (topic, value) = sole_topic_value(WRITE_PROTECTION_KEY, resource, change, true)?;
    let protection = match value.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(v) => Some(WriteProtection::parse(v).map_err(|reason| {
            (
                ResponseError::InvalidConfig.code(),
                format!("invalid {WRITE_PROTECTION_KEY} `{v}`: {reason}"),
            )
        })?),
    };
    broker
        .set_write_protection(topic, protection, validate_only)
        .await
        .map_err(|e| (e.kafka_error_code(), e.to_string()))
}

/// A request naming [`TAIL_TRUNCATION_KEY`] (SET, alone): cuts the named partitions of a
/// write-protected topic at the given offsets.
async fn truncate_tails(
    broker: &Broker,
    resource: &ConfigResource,
    change: Change,
    validate_only: bool,
) -> AlterResult {
    let (topic, value) = sole_topic_value(TAIL_TRUNCATION_KEY, resource, change, false)?;
    let value = value.unwrap_or_default();
    let ends = parse_tail_truncation(&value).map_err(|reason| {
        (
            ResponseError::InvalidConfig.code(),
            format!("invalid {TAIL_TRUNCATION_KEY} `{value}`: {reason}"),
        )
    })?;
    broker
        .truncate_tails(topic, ends, validate_only)
        .await
        .map_err(|e| (e.kafka_error_code(), e.to_string()))
}

/// Runs every resource of a request; a resource named twice is refused both times.
async fn alter_all(
    broker: &Broker,
    resources: Vec<(i8, StrBytes, Change)>,
    validate_only: bool,
) -> Vec<(i8, StrBytes, AlterResult)> {
    let mut seen: HashMap<(i8, StrBytes), usize> = HashMap::new();
    for (t, n, _) in &resources {
        *seen.entry((*t, n.clone())).or_default() += 1;
    }
    let mut results = Vec::with_capacity(resources.len());
    for (resource_type, name, change) in resources {
        results.push({
            let result = if seen[&(resource_type, name.clone())] > 1 {
                Err((
                    ResponseError::InvalidRequest.code(),
                    "Each resource may appear at most once in a request.".to_string(),
                ))
            } else {
                alter_resource(broker, resource_type, name.as_str(), change, validate_only).await
            };
            if let Err((code, message)) = &result {
                tracing::debug!(resource = %name.as_str(), resource_type, code, %message,
                    "alter configs rejected");
            }
            (resource_type, name, result)
        });
    }
    results
}

fn split(result: AlterResult) -> (i16, Option<StrBytes>) {
    match result {
        Ok(()) => (0, None),
        Err((code, message)) => (code, Some(StrBytes::from_string(message))),
    }
}

/// Answers an AlterConfigs request (replace semantics).
pub async fn handle_alter(broker: &Broker, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let resources = req
        .resources
        .into_iter()
        .map(|r| {
            let configs = r
                .configs
                .into_iter()
                .map(|c| (c.name.to_string(), c.value.map(|v| v.to_string())))
                .collect();
            (r.resource_type, r.resource_name, Change::Replace(configs))
        })
        .collect();
    let responses = alter_all(broker, resources, req.validate_only)
        .await
        .into_iter()
        .map(|(resource_type, name, result)| {
            let (code, message) = split(result);
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(resource_type)
                .with_resource_name(name)
                .with_error_code(code)
                .with_error_message(message)
        })
        .collect();
    AlterConfigsResponse::default().with_responses(responses)
}

/// Answers an IncrementalAlterConfigs request.
pub async fn handle_incremental(
    broker: &Broker,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let resources = req
        .resources
        .into_iter()
        .map(|r| {
            let ops = r
                .configs
                .into_iter()
                .map(|c| {
                    (
                        c.name.to_string(),
                        c.config_operation,
                        c.value.map(|v| v.to_string()),
                    )
                })
                .collect();
            (r.resource_type, r.resource_name, Change::Incremental(ops))
        })
        .collect();
    let responses = alter_all(broker, resources, req.validate_only)
        .await
        .into_iter()
        .map(|(resource_type, name, result)| {
            let (code, message) = split(result);
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(resource_type)
                .with_resource_name(name)
                .with_error_code(code)
                .with_error_message(message)
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
