//! Heartbeats: every `heartbeat_interval_ms` a record on the source's `heartbeats` topic.
//!
//! The pump mirrors the topic like any other (as `<source>.heartbeats` under the prefix
//! policy); the target's copy shows the flow is alive end to end, and the age of the newest
//! mirrored heartbeat is the `strait_mirror_heartbeat_age_seconds` gauge. Records are in
//! MirrorMaker 2's format ([`crate::mm2::Heartbeat`]), so tools that look for upstream
//! clusters through heartbeats work unchanged.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::FutureRecord;
use tokio::sync::watch;

use crate::clients::{admin, client_config, ensure_topic, MirrorContext, MirrorError, Producer};
use crate::config::{ClusterConfig, FlowConfig};
use crate::metrics::{now_ms, FlowMetrics};
use crate::pump::HEARTBEATS_TOPIC;

/// Writes heartbeats for `flow` on `source` until `stop`. Does nothing if the interval is 0.
pub async fn run(
    flow: Arc<FlowConfig>,
    source: ClusterConfig,
    metrics: Arc<FlowMetrics>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), MirrorError> {
    if flow.heartbeat_interval_ms == 0 {
        return Ok(());
    }
    ensure_topic(
        &Arc::new(admin(&source)?),
        HEARTBEATS_TOPIC,
        1,
        flow.heartbeats_topic_replication_factor,
        "heartbeats_topic_replication_factor",
        &[],
    )
    .await?;
    let producer: Producer =
        client_config(&source, &[("acks", "all"), ("message.timeout.ms", "10000")])
            .create_with_context(MirrorContext)
            .map_err(MirrorError::kafka("creating the heartbeat producer"))?;
    let mut heartbeat = crate::mm2::Heartbeat {
        source: flow.source.clone(),
        target: flow.target.clone(),
        timestamp_ms: 0,
    };
    let key = heartbeat
        .key()
        .map_err(|e| MirrorError::Other(format!("encoding a heartbeat key: {e}")))?;
    let mut tick = tokio::time::interval(Duration::from_millis(flow.heartbeat_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return Ok(()),
            _ = tick.tick() => {}
        }
        let now = now_ms();
        heartbeat.timestamp_ms = now;
        let value = heartbeat.value();
        let record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(HEARTBEATS_TOPIC)
            .key(key.as_slice())
            .payload(value.as_slice())
            .timestamp(now);
        // Not awaited in line: a slow source delays heartbeats, it does not stack them up
        // (librdkafka's queue is bounded and the timeout is short).
        let delivery = producer.send_result(record);
        let metrics = metrics.clone();
        match delivery {
            Ok(d) => {
                tokio::spawn(async move {
                    if !matches!(d.await, Ok(Ok(_))) {
                        metrics.error("heartbeat");
                    }
                });
            }
            Err((e, _)) => {
                tracing::warn!(flow = %flow.name, error = %e, "writing a heartbeat");
                metrics.error("heartbeat");
            }
        }
    }
}
