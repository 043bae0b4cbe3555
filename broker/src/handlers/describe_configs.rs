//! DescribeConfigs: every config of a topic or of this broker, with value, source, synonyms
//! (when asked), read-only and sensitive flags, and from v3 the type and documentation.

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;
use crate::broker_config::DescribedConfig;
use crate::controller::image::WRITE_PROTECTION_KEY;
use crate::handlers::config_resource::{resolve, ConfigResource};

fn entry(
    c: DescribedConfig,
    include_synonyms: bool,
    include_documentation: bool,
    version: i16,
) -> DescribeConfigsResourceResult {
    let synonyms = if include_synonyms {
        c.synonyms
            .into_iter()
            .map(|s| {
                DescribeConfigsSynonym::default()
                    .with_name(StrBytes::from_string(s.name))
                    .with_value(s.value.map(StrBytes::from_string))
                    .with_source(s.source)
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut result = DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_static_str(c.def.name))
        .with_value(c.value.map(StrBytes::from_string))
        .with_read_only(c.read_only)
        .with_config_source(c.source)
        // No config strait knows is a password.
        .with_is_sensitive(false)
        .with_synonyms(synonyms);
    // Type and documentation exist from v3 on; older encoders must see their defaults.
    if version >= 3 {
        result = result
            .with_config_type(c.def.config_type())
            // Null unless asked for, as Kafka.
            .with_documentation(
                include_documentation.then(|| StrBytes::from_static_str(c.def.doc)),
            );
    }
    result
}

/// Answers a DescribeConfigs request.
pub fn handle(
    broker: &Broker,
    req: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let include_documentation = version >= 3 && req.include_documentation;
    let results = req
        .resources
        .into_iter()
        .map(|r| {
            let base = DescribeConfigsResult::default()
                .with_error_message(None)
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let mut protection = None;
            let described = match resolve(broker, r.resource_type, r.resource_name.as_str()) {
                Ok(ConfigResource::Topic(name)) => match broker.topic(&name) {
                    Some(topic) => {
                        protection = topic.write_protection.clone();
                        broker.broker_configs().describe_topic(&topic.config)
                    }
                    // Deleted since it was resolved.
                    None => Vec::new(),
                },
                Ok(ConfigResource::Broker { per_broker }) => {
                    broker.broker_configs().describe_broker(per_broker)
                }
                Err((code, message)) => {
                    tracing::debug!(resource = %r.resource_name.as_str(), code, %message,
                        "describe configs rejected");
                    return base
                        .with_error_code(code)
                        .with_error_message(Some(StrBytes::from_string(message)));
                }
            };
            // Null or empty keys mean every config, as Kafka's ConfigHelper.
            let wanted = |name: &str| {
                r.configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.is_empty() || keys.iter().any(|k| k.as_str() == name))
            };
            let mut configs: Vec<_> = described
                .into_iter()
                .filter(|c| wanted(c.def.name))
                .map(|c| entry(c, req.include_synonyms, include_documentation, version))
                .collect();
            if let Some(p) = protection.filter(|_| wanted(WRITE_PROTECTION_KEY)) {
                // Not a topic config: source UNKNOWN (0), so tools that copy a topic's own
                // overrides (DYNAMIC_TOPIC_CONFIG) leave it behind.
                configs.push(
                    DescribeConfigsResourceResult::default()
                        .with_name(StrBytes::from_static_str(WRITE_PROTECTION_KEY))
                        .with_value(Some(StrBytes::from_string(p.to_value())))
                        .with_read_only(false)
                        .with_config_source(0)
                        .with_is_sensitive(false),
                );
            }
            base.with_configs(configs)
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}
