//! The index follower: applies a flow's offset-runs topic on the target, in order, to the
//! daemon's sled index.
//!
//! Every pump of a flow (this daemon's and any other daemon's on the same flow) appends its
//! [`RunUpdate`]s to that topic, so the follower gives each daemon the whole flow's index: a
//! daemon that takes a partition over knows where the previous owner stopped, and a daemon
//! started on an empty data directory rebuilds its index from the topic.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::clients::{blocking, client_config, watermarks, MirrorContext, MirrorError, Stream};
use crate::config::{ClusterConfig, FlowConfig};
use crate::offsets::{FlowIndex, RunUpdate};

/// Bytes an operator's update may queue (one small record).
const RECORD_QUEUE_BYTES: u64 = 1 << 20;
/// How long an operator's update may take to be acknowledged.
const RECORD_TIMEOUT_MS: u64 = 8_000;

/// Appends one update made outside the pump (an operator's: restored records adopted, a
/// divergence resolved) to `flow`'s runs topic and, once acknowledged, applies it to
/// `index`, so every daemon's follower and this daemon's index agree on it.
pub async fn record(
    flow: &FlowConfig,
    target: &ClusterConfig,
    index: &FlowIndex,
    update: &RunUpdate,
    what: &str,
) -> Result<(), MirrorError> {
    let producer =
        crate::clients::target_producer(target, RECORD_QUEUE_BYTES, RECORD_TIMEOUT_MS, None)?;
    let key = format!("{}/{}", update.topic, update.partition).into_bytes();
    let value = serde_json::to_vec(update)
        .map_err(|e| MirrorError::Other(format!("encoding an offset run: {e}")))?;
    crate::clients::send_to_partition_zero(
        &producer,
        &flow.offset_runs_topic(),
        &[(key, value)],
        what,
    )?
    .await?;
    index.apply(update)?;
    Ok(())
}

/// How long a pump waits for the follower to apply what the topic held when it asked.
pub const CATCH_UP_TIMEOUT_MS: u64 = 30_000;

/// A handle on a running follower.
#[derive(Clone)]
pub struct IndexFollower {
    applied: watch::Receiver<i64>,
    consumer: Arc<Stream>,
    topic: String,
}

impl IndexFollower {
    /// Starts following `flow`'s runs topic on `target` (which must exist) into `index`.
    pub async fn start(
        flow: &FlowConfig,
        target: &ClusterConfig,
        index: FlowIndex,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(IndexFollower, tokio::task::JoinHandle<()>), MirrorError> {
        let topic = flow.offset_runs_topic();
        let consumer: Arc<Stream> = Arc::new(
            client_config(
                target,
                &[
                    // Never joins or commits: partitions are assigned by hand and the position
                    // lives in sled next to what it describes.
                    ("group.id", &format!("strait-mirror-index-{}", flow.name)),
                    ("enable.auto.commit", "false"),
                    ("auto.offset.reset", "earliest"),
                ],
            )
            .create_with_context(MirrorContext)
            .map_err(MirrorError::kafka(format!(
                "creating the consumer of {topic}"
            )))?,
        );
        let mut next = index.applied_next_offset()?;
        let (_, high) = {
            let (c, t) = (consumer.clone(), topic.clone());
            blocking(move || watermarks(c.client(), &t, 0)).await?
        };
        if high < next {
            // The topic is younger than the index: it was deleted and recreated. The index
            // describes data that is gone from the topic, so start over from the topic.
            tracing::warn!(flow = %flow.name, topic, high, applied = next, "offset-runs topic is behind the index; rebuilding the index from the topic");
            index.clear()?;
            next = 0;
        } else if next == 0 && high > 0 {
            tracing::info!(flow = %flow.name, topic, records = high, "rebuilding the offset index from the offset-runs topic");
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Offset(next))
            .map_err(MirrorError::kafka("assigning the offset-runs topic"))?;
        consumer
            .assign(&tpl)
            .map_err(MirrorError::kafka("assigning the offset-runs topic"))?;
        let (applied_tx, applied) = watch::channel(next);
        let task_consumer = consumer.clone();
        let flow_name = flow.name.clone();
        let task = tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
                    m = task_consumer.recv() => m,
                };
                let message = match message {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(flow = %flow_name, error = %e, "reading the offset-runs topic");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                };
                let offset = message.offset();
                match message.payload().map(serde_json::from_slice::<RunUpdate>) {
                    Some(Ok(update)) => {
                        if let Err(e) = index.apply(&update) {
                            tracing::error!(flow = %flow_name, error = %e, "applying an offset run; the follower stops");
                            break;
                        }
                    }
                    other => {
                        tracing::warn!(flow = %flow_name, offset, problem = ?other.map(|r| r.err()), "skipping a malformed record of the offset-runs topic");
                    }
                }
                if let Err(e) = index.set_applied_next_offset(offset + 1) {
                    tracing::error!(flow = %flow_name, error = %e, "recording the follower's position; it stops");
                    break;
                }
                let _ = applied_tx.send(offset + 1);
            }
        });
        Ok((
            IndexFollower {
                applied,
                consumer,
                topic,
            },
            task,
        ))
    }

    /// Waits until everything the runs topic held when called has been applied.
    pub async fn caught_up(&self) -> Result<(), MirrorError> {
        let (c, t) = (self.consumer.clone(), self.topic.clone());
        let (_, high) = blocking(move || watermarks(c.client(), &t, 0)).await?;
        let mut applied = self.applied.clone();
        let outcome = tokio::time::timeout(
            Duration::from_millis(CATCH_UP_TIMEOUT_MS),
            applied.wait_for(|a| *a >= high),
        )
        .await
        .map(|r| r.map(|_| ()));
        match outcome {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(MirrorError::Other("the index follower stopped".into())),
            Err(_) => Err(MirrorError::Other(format!(
                "the index follower did not reach offset {high} of {} within {CATCH_UP_TIMEOUT_MS} ms",
                self.topic
            ))),
        }
    }
}
