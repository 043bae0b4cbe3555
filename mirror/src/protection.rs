//! Write protection of topics on a strait broker: a flow's mirror topics on its target accept
//! only the flow's own producer while the flow runs, and a failover fences the flow's source
//! topics against every producer.
//!
//! The attribute lives in the broker's replicated metadata, beside the topic's configs; it is
//! read and written as the pseudo-config [`WRITE_PROTECTION_KEY`] through DescribeConfigs and
//! AlterConfigs (alone in its request, which the broker requires). A broker that is not
//! strait refuses the key; the mirror then runs without protection and says so once per
//! topic.

use std::time::Duration;

use rdkafka::admin::{AdminOptions, AlterConfig, ResourceSpecifier};

use crate::clients::{Admin, MirrorError, REQUEST_TIMEOUT_MS};
use crate::config::FlowConfig;

/// The pseudo-config that carries the protection.
pub const WRITE_PROTECTION_KEY: &str = "strait.write.protection";

/// The protection of a flow's mirror topics on its target: only the flow's producer writes.
pub fn replica_value(flow: &FlowConfig) -> String {
    format!("flow={},writer={}", flow.name, flow.writer_client_id())
}

/// The protection of a flow's source topics during a failover: nobody writes.
pub fn fence_value(flow: &FlowConfig) -> String {
    format!("flow={}", flow.name)
}

fn options() -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(Duration::from_millis(REQUEST_TIMEOUT_MS)))
        .operation_timeout(Some(Duration::from_millis(REQUEST_TIMEOUT_MS)))
}

/// Sets `topic`'s protection to `value`, or clears it with `None`.
pub async fn set(admin: &Admin, topic: &str, value: Option<&str>) -> Result<(), MirrorError> {
    let alter = AlterConfig::new(ResourceSpecifier::Topic(topic))
        .set(WRITE_PROTECTION_KEY, value.unwrap_or(""));
    let what = match value {
        Some(v) => format!("write-protecting {topic} ({v})"),
        None => format!("clearing the write protection of {topic}"),
    };
    let results = admin
        .alter_configs([&alter], &options())
        .await
        .map_err(MirrorError::kafka(what.clone()))?;
    match results.into_iter().next() {
        Some(Ok(_)) => Ok(()),
        Some(Err((_, code))) => Err(MirrorError::Other(format!("{what}: {code}"))),
        None => Err(MirrorError::Other(format!("{what}: no result"))),
    }
}

/// `topic`'s protection as the broker reports it (`None`: unprotected).
pub async fn get(admin: &Admin, topic: &str) -> Result<Option<String>, MirrorError> {
    let what = format!("reading the write protection of {topic}");
    let results = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &options())
        .await
        .map_err(MirrorError::kafka(what.clone()))?;
    match results.into_iter().next() {
        Some(Ok(resource)) => Ok(resource
            .entries
            .into_iter()
            .find(|e| e.name == WRITE_PROTECTION_KEY)
            .and_then(|e| e.value)),
        Some(Err(code)) => Err(MirrorError::Other(format!("{what}: {code}"))),
        None => Err(MirrorError::Other(format!("{what}: no result"))),
    }
}
