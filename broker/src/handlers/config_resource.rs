//! The resource a config request names (Kafka's `ConfigResource`), resolved against this node.

use kafka_protocol::error::ResponseError;

use crate::broker::Broker;
use crate::topic_config::validate_topic_name;

/// Kafka's `ConfigResource.Type` codes.
pub const RESOURCE_TOPIC: i8 = 2;
/// Kafka's `ConfigResource.Type` code of a broker.
pub const RESOURCE_BROKER: i8 = 4;

/// A resource strait serves configs for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigResource {
    /// An existing topic.
    Topic(String),
    /// This broker (`per_broker`), or the cluster-wide default (resource name `""`).
    Broker {
        /// Whether the resource is this node rather than the cluster default.
        per_broker: bool,
    },
}

fn type_name(resource_type: i8) -> &'static str {
    match resource_type {
        0 => "UNKNOWN",
        8 => "BROKER_LOGGER",
        16 => "CLIENT_METRICS",
        32 => "GROUP",
        _ => "UNKNOWN",
    }
}

/// Resolves a resource as Kafka's ConfigHelper / ConfigAdminManager do, or the error code and
/// message the resource's result must carry.
pub fn resolve(
    broker: &Broker,
    resource_type: i8,
    name: &str,
) -> Result<ConfigResource, (i16, String)> {
    match resource_type {
        RESOURCE_TOPIC => {
            validate_topic_name(name)
                .map_err(|m| (ResponseError::InvalidTopicException.code(), m))?;
            if broker.topic(name).is_none() {
                return Err((
                    ResponseError::UnknownTopicOrPartition.code(),
                    format!("The topic '{name}' does not exist."),
                ));
            }
            Ok(ConfigResource::Topic(name.to_string()))
        }
        RESOURCE_BROKER if name.is_empty() => Ok(ConfigResource::Broker { per_broker: false }),
        RESOURCE_BROKER => match name.parse::<i32>() {
            Ok(id) if id == broker.node_id() => Ok(ConfigResource::Broker { per_broker: true }),
            Ok(_) => Err((
                ResponseError::InvalidRequest.code(),
                format!(
                    "Unexpected broker id, expected {} or empty string, but received {name}",
                    broker.node_id()
                ),
            )),
            Err(_) => Err((
                ResponseError::InvalidRequest.code(),
                format!("Broker id must be an integer, but it is: {name}"),
            )),
        },
        other => Err((
            ResponseError::InvalidRequest.code(),
            format!(
                "Unsupported resource type: {} ({other}); strait serves TOPIC (2) and BROKER (4)",
                type_name(other)
            ),
        )),
    }
}
