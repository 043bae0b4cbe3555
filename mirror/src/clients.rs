//! The rdkafka clients a flow makes, and the few blocking librdkafka calls wrapped for async
//! code.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{Client, ClientContext};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use crate::config::ClusterConfig;

/// How long one metadata, watermark or admin call may take before the task retries later.
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;

/// Header added to every mirrored record: the alias of the cluster the record was first
/// written to. A record carrying the target's alias came from there and is not copied back.
pub const ORIGIN_HEADER: &str = "strait.origin";

/// The context of the mirror's librdkafka clients: their errors and log lines reach `tracing`
/// at the level they deserve. A cluster node that goes away (killed, restarted, partitioned)
/// makes every client report transport failures until it is back or the partitions moved;
/// librdkafka retries those by itself, so they are warnings. ERROR is kept for what needs a
/// person (a refused authentication, an invalid config, a fatal idempotence error).
#[derive(Clone, Copy, Debug, Default)]
pub struct MirrorContext;

impl ClientContext for MirrorContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log_client_line(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error(&error, reason);
    }
}

impl rdkafka::consumer::ConsumerContext for MirrorContext {}

/// A producer of the mirror.
pub type Producer = FutureProducer<MirrorContext>;
/// An admin client of the mirror.
pub type Admin = AdminClient<MirrorContext>;
/// A polling consumer (or group-offsets client) of the mirror.
pub type PollConsumer = BaseConsumer<MirrorContext>;
/// A streaming consumer of the mirror.
pub type Stream = StreamConsumer<MirrorContext>;

/// Whether librdkafka recovers from `code` by itself (reconnects, refreshes metadata, retries).
pub fn is_transient(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::BrokerTransportFailure
            | C::AllBrokersDown
            | C::Resolve
            | C::MessageTimedOut
            | C::OperationTimedOut
            | C::RequestTimedOut
            | C::NetworkException
            | C::BrokerNotAvailable
            | C::LeaderNotAvailable
            | C::NotLeaderForPartition
            | C::NotCoordinator
            | C::CoordinatorNotAvailable
            | C::CoordinatorLoadInProgress
            | C::TimedOutQueue
            | C::WaitingForCoordinator
            | C::UnknownTopicOrPartition
            | C::NotEnoughReplicas
            | C::NotEnoughReplicasAfterAppend
            | C::KafkaStorageError
    )
}

/// Logs an error librdkafka reported on its own (not the result of a call).
pub fn log_client_error(error: &KafkaError, reason: &str) {
    match error.rdkafka_error_code() {
        Some(code) if is_transient(code) => {
            tracing::warn!(target: "librdkafka", %error, reason, "cluster client: retrying")
        }
        _ => tracing::error!(target: "librdkafka", %error, reason, "cluster client error"),
    }
}

/// Logs one of librdkafka's log lines (at warning and above, see `log_level` below). A failed
/// connection (`FAIL`) is logged as a warning: the client reconnects.
pub fn log_client_line(level: RDKafkaLogLevel, facility: &str, message: &str) {
    use RDKafkaLogLevel as L;
    match level {
        L::Emerg | L::Alert | L::Critical | L::Error if facility != "FAIL" => {
            tracing::error!(target: "librdkafka", facility, "{message}")
        }
        L::Emerg | L::Alert | L::Critical | L::Error | L::Warning => {
            tracing::warn!(target: "librdkafka", facility, "{message}")
        }
        L::Notice | L::Info => tracing::info!(target: "librdkafka", facility, "{message}"),
        L::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
    }
}

/// Header added to every mirrored record: `<flow>/<source offset>`. A daemon taking a
/// partition over reads the target partition past the recorded cursor and, through this
/// header, finds what a previous owner wrote there without recording it, so it is not sent
/// again.
pub const SOURCE_HEADER: &str = "strait.source";

/// The value of [`SOURCE_HEADER`] for a record of `flow` at `source_offset`.
pub fn source_header(flow: &str, source_offset: i64) -> String {
    format!("{flow}/{source_offset}")
}

/// The source offset a [`SOURCE_HEADER`] value names for `flow`, if it is one of `flow`'s.
pub fn parse_source_header(flow: &str, value: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(value).ok()?;
    let (name, offset) = text.rsplit_once('/')?;
    (name == flow).then(|| offset.parse().ok()).flatten()
}

/// What a flow's task could not do.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// A Kafka client call failed.
    #[error("{what}: {source}")]
    Kafka {
        /// What was being done, with which cluster or topic.
        what: String,
        /// librdkafka's error.
        source: KafkaError,
    },
    /// The offset index failed.
    #[error(transparent)]
    Offsets(#[from] crate::offsets::OffsetsError),
    /// The pump lost its partitions to another member of the flow's group without being
    /// told in time (it was stopped or cut off); it must start over as a new member.
    #[error("fenced: {0}")]
    Fenced(String),
    /// Anything else, said in words.
    #[error("{0}")]
    Other(String),
}

impl MirrorError {
    /// Wraps a Kafka error with what was being done.
    pub fn kafka(what: impl Into<String>) -> impl FnOnce(KafkaError) -> MirrorError {
        let what = what.into();
        move |source| MirrorError::Kafka { what, source }
    }
}

/// Client settings for `cluster`: its bootstrap servers, then `extra` (the mirror's own
/// choices), then the cluster's `client` overrides from the config file, which win.
pub fn client_config(cluster: &ClusterConfig, extra: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cluster.bootstrap_servers);
    c.set("log_level", "4"); // librdkafka logs at warning and above reach tracing
    for (k, v) in extra {
        c.set(*k, *v);
    }
    for (k, v) in &cluster.client {
        c.set(k, v);
    }
    c
}

/// The target producer: idempotent with acks=all, so retries never duplicate or reorder a
/// partition's records; `queue_bytes` bounds what librdkafka buffers. A record not delivered
/// within `message_timeout_ms` fails (the caller starts over from what it recorded); the
/// timeout is set after the cluster's `client` overrides, which cannot change it; so is
/// `client_id` when given (the writer a write-protected mirror topic accepts).
pub fn target_producer(
    cluster: &ClusterConfig,
    queue_bytes: u64,
    message_timeout_ms: u64,
    client_id: Option<&str>,
) -> Result<Producer, MirrorError> {
    let queue_kbytes = (queue_bytes / 1024).max(1024).to_string();
    let mut config = client_config(
        cluster,
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            // Fuller batches: `strait bench mirror` measured the same catch-up rate with 20 as
            // with librdkafka's 5, at 9.3 instead of 16.6 CPU s per GB in the mirror and 10.8
            // instead of 17.7 in the six nodes, for about 15 ms more latency.
            ("linger.ms", "20"),
            ("queue.buffering.max.kbytes", &queue_kbytes),
            // Partitions the topic syncer adds are known within seconds (librdkafka's
            // default is 5 minutes; the pump reads their watermarks before it sends).
            ("topic.metadata.refresh.interval.ms", "2000"),
        ],
    );
    config.set("message.timeout.ms", message_timeout_ms.to_string());
    if let Some(id) = client_id {
        config.set("client.id", id);
    }
    config
        .create_with_context(MirrorContext)
        .map_err(MirrorError::kafka("creating the target producer"))
}

/// An admin client for `cluster`.
pub fn admin(cluster: &ClusterConfig) -> Result<Admin, MirrorError> {
    client_config(cluster, &[])
        .create_with_context(MirrorContext)
        .map_err(MirrorError::kafka("creating an admin client"))
}

/// Runs a blocking librdkafka call off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, MirrorError> + Send + 'static,
) -> Result<T, MirrorError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| MirrorError::Other(format!("blocking client call panicked: {e}")))?
}

/// Low and high watermark of a partition.
pub fn watermarks<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    partition: i32,
) -> Result<(i64, i64), MirrorError> {
    client
        .fetch_watermarks(topic, partition, Duration::from_millis(REQUEST_TIMEOUT_MS))
        .map_err(MirrorError::kafka(format!(
            "reading the watermarks of {topic}/{partition}"
        )))
}

/// Creates `topic` with `partitions` partitions and `replication_factor` replicas unless it
/// exists; `setting` names the config key that chose the factor, for the error a cluster with
/// fewer brokers gets. Returns whether it created the topic.
pub async fn ensure_topic(
    admin: &std::sync::Arc<Admin>,
    topic: &str,
    partitions: i32,
    replication_factor: i16,
    setting: &str,
    configs: &[(&str, &str)],
) -> Result<bool, MirrorError> {
    let mut new = NewTopic::new(
        topic,
        partitions,
        TopicReplication::Fixed(i32::from(replication_factor)),
    );
    for (k, v) in configs {
        new = new.set(k, v);
    }
    let opts =
        AdminOptions::new().operation_timeout(Some(Duration::from_millis(REQUEST_TIMEOUT_MS)));
    let results = admin
        .create_topics([&new], &opts)
        .await
        .map_err(MirrorError::kafka(format!("creating topic {topic}")))?;
    match results.into_iter().next() {
        Some(Ok(_)) => Ok(true),
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Ok(false),
        Some(Err((_, RDKafkaErrorCode::InvalidReplicationFactor))) => {
            let a = admin.clone();
            let brokers = blocking(move || {
                a.inner()
                    .fetch_metadata(None, Duration::from_millis(REQUEST_TIMEOUT_MS))
                    .map(|m| m.brokers().len())
                    .map_err(MirrorError::kafka("reading the cluster's brokers"))
            })
            .await
            .map_or_else(|_| "fewer".to_string(), |n| n.to_string());
            Err(MirrorError::Other(format!(
                "creating topic {topic}: replication factor {replication_factor} (`{setting}`) is more than the cluster's {brokers} brokers; set `{setting}` in the flow to at most that"
            )))
        }
        Some(Err((_, code))) => Err(MirrorError::Other(format!(
            "creating topic {topic}: {code}"
        ))),
        None => Err(MirrorError::Other(format!(
            "creating topic {topic}: no result"
        ))),
    }
}

/// Sends every `(key, value)` to partition 0 of `topic` now, and returns a future that
/// resolves once all are acknowledged, or with the first failure. `what` names the records in
/// errors (e.g. "publishing a checkpoint").
pub fn send_to_partition_zero(
    producer: &Producer,
    topic: &str,
    records: &[(Vec<u8>, Vec<u8>)],
    what: &str,
) -> Result<impl std::future::Future<Output = Result<(), MirrorError>> + Send + 'static, MirrorError>
{
    let failed = |source| MirrorError::Kafka {
        what: format!("{what} to {topic}"),
        source,
    };
    let mut deliveries = Vec::with_capacity(records.len());
    for (key, value) in records {
        let record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic)
            .partition(0)
            .key(key.as_slice())
            .payload(value.as_slice());
        deliveries.push(producer.send_result(record).map_err(|(e, _)| failed(e))?);
    }
    let (what, topic) = (what.to_string(), topic.to_string());
    Ok(async move {
        for d in deliveries {
            match d.await {
                Ok(Ok(_)) => {}
                Ok(Err((source, _))) => {
                    return Err(MirrorError::Kafka {
                        what: format!("{what} to {topic}"),
                        source,
                    })
                }
                Err(_) => {
                    return Err(MirrorError::Other(format!(
                        "{what} to {topic}: the producer was dropped"
                    )))
                }
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_header_names_the_flow_and_the_offset() {
        let v = source_header("a-to-b", 42);
        assert_eq!(v, "a-to-b/42");
        assert_eq!(parse_source_header("a-to-b", v.as_bytes()), Some(42));
        assert_eq!(
            parse_source_header("b-to-c", v.as_bytes()),
            None,
            "another flow's"
        );
        assert_eq!(
            parse_source_header("x/y", b"x/y/7"),
            Some(7),
            "a flow name may hold a slash"
        );
        assert_eq!(parse_source_header("a-to-b", b"a-to-b/"), None);
        assert_eq!(parse_source_header("a-to-b", b"\xff/1"), None);
    }
}
