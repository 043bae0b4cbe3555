//! End-to-end tests of topic and broker configs, CreatePartitions, DeleteRecords and retention
//! on one real `strait broker` process, driven by rdkafka's AdminClient, producer and consumer.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rdkafka::admin::{
    AdminOptions, AlterConfig, ConfigResource, ConfigSource, NewPartitions, OwnedResourceSpecifier,
    ResourceSpecifier,
};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Message, Timestamp};
use rdkafka::{Offset, TopicPartitionList};

use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, ApiKey, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

const SHORT: Duration = Duration::from_secs(30);
/// node_id in configs/single-node.yaml, which the harness starts every broker with.
const NODE_ID: i32 = 1;

fn admin_options() -> AdminOptions {
    AdminOptions::new().request_timeout(Some(OP_TIMEOUT))
}

fn describe(broker: &Broker, resource: ResourceSpecifier<'_>) -> ConfigResource {
    let admin = broker.admin();
    let mut results = block_on(
        admin.describe_configs(&[resource], &admin_options()),
        OP_TIMEOUT + Duration::from_secs(5),
    )
    .expect("DescribeConfigs request failed");
    assert_eq!(results.len(), 1);
    results
        .pop()
        .unwrap()
        .unwrap_or_else(|code| panic!("DescribeConfigs {resource:?} failed: {code:?}"))
}

/// (value, source) of one config.
fn config_of(
    broker: &Broker,
    resource: ResourceSpecifier<'_>,
    name: &str,
) -> (String, ConfigSource) {
    let described = describe(broker, resource);
    let entry = described
        .get(name)
        .unwrap_or_else(|| panic!("{resource:?} has no config {name}"));
    (
        entry.value.clone().unwrap_or_default(),
        clone_source(&entry.source),
    )
}

fn clone_source(s: &ConfigSource) -> ConfigSource {
    match s {
        ConfigSource::Unknown => ConfigSource::Unknown,
        ConfigSource::DynamicTopic => ConfigSource::DynamicTopic,
        ConfigSource::DynamicBroker => ConfigSource::DynamicBroker,
        ConfigSource::DynamicDefaultBroker => ConfigSource::DynamicDefaultBroker,
        ConfigSource::StaticBroker => ConfigSource::StaticBroker,
        ConfigSource::Default => ConfigSource::Default,
    }
}

/// Runs AlterConfigs (replace semantics) on one resource with rdkafka's admin client. rdkafka
/// 0.39 does not surface per-resource errors of AlterConfigs, so failures are checked with
/// [`raw_alter`] and successes by describing the resource afterwards.
fn alter(broker: &Broker, resource: ResourceSpecifier<'_>, entries: &[(&str, &str)]) {
    let admin = broker.admin();
    let mut change = AlterConfig::new(resource);
    for (k, v) in entries {
        change = change.set(k, v);
    }
    let results = block_on(
        admin.alter_configs(&[change], &admin_options()),
        OP_TIMEOUT + Duration::from_secs(5),
    )
    .expect("AlterConfigs request failed");
    assert_eq!(results.len(), 1, "{results:?}");
}

/// Sends one request encoded with kafka-protocol over a raw connection and decodes the answer.
fn raw_call<Req: Encodable, Resp: Decodable>(
    broker: &Broker,
    key: ApiKey,
    version: i16,
    req: &Req,
) -> Resp {
    raw_call_at(broker.addr(), key, version, req)
}

/// AlterConfigs v2 on one resource (2 = topic, 4 = broker): the error code and message.
fn raw_alter(
    broker: &Broker,
    resource_type: i8,
    name: &str,
    entries: &[(&str, &str)],
) -> (i16, Option<String>) {
    use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
    let req = AlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
        .with_resource_type(resource_type)
        .with_resource_name(StrBytes::from_string(name.to_string()))
        .with_configs(
            entries
                .iter()
                .map(|(k, v)| {
                    AlterableConfig::default()
                        .with_name(StrBytes::from_string(k.to_string()))
                        .with_value(Some(StrBytes::from_string(v.to_string())))
                })
                .collect(),
        )]);
    let resp: AlterConfigsResponse = raw_call(broker, ApiKey::AlterConfigs, 2, &req);
    let r = &resp.responses[0];
    (
        r.error_code,
        r.error_message.as_ref().map(|m| m.to_string()),
    )
}

/// IncrementalAlterConfigs v1 on one topic: (name, op, value) with op 0 SET, 1 DELETE,
/// 2 APPEND, 3 SUBTRACT; returns the error code.
fn raw_incremental(broker: &Broker, topic: &str, ops: &[(&str, i8, Option<&str>)]) -> i16 {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configs(
                ops.iter()
                    .map(|(k, op, v)| {
                        AlterableConfig::default()
                            .with_name(StrBytes::from_string(k.to_string()))
                            .with_config_operation(*op)
                            .with_value(v.map(|v| StrBytes::from_string(v.to_string())))
                    })
                    .collect(),
            ),
    ]);
    let resp: IncrementalAlterConfigsResponse =
        raw_call(broker, ApiKey::IncrementalAlterConfigs, 1, &req);
    resp.responses[0].error_code
}

/// Kafka error codes the raw requests check.
const INVALID_CONFIG: i16 = 40;
const INVALID_REQUEST: i16 = 42;

fn consumer_with_reset(broker: &Broker, reset: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", unique("configs-e2e"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", reset)
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("create consumer")
}

fn assign_at(consumer: &BaseConsumer, topic: &str, offset: i64) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(offset))
        .unwrap();
    consumer.assign(&tpl).expect("assign");
}

fn records(tag: &str, n: usize, base_ts: i64) -> Vec<TestRecord> {
    (0..n).map(|i| generated_record(tag, i, base_ts)).collect()
}

#[test]
fn topic_and_broker_configs_take_effect_and_survive_a_restart() {
    let mut broker = Broker::start();
    let topic = unique("cfg");
    broker.create_topic(&topic, 1, &[]);
    let t = ResourceSpecifier::Topic(&topic);
    let b = ResourceSpecifier::Broker(NODE_ID);

    // configs/single-node.yaml sets log.retention_ms: the topic inherits it statically.
    assert_eq!(
        config_of(&broker, t, "retention.ms"),
        ("604800000".to_string(), ConfigSource::StaticBroker)
    );
    let described = describe(&broker, b);
    let node_id = described.get("node.id").expect("node.id described");
    assert!(node_id.is_read_only);
    assert_eq!(node_id.value.as_deref(), Some("1"));
    assert!(!described.get("log.retention.ms").unwrap().is_read_only);
    assert!(matches!(
        described.specifier,
        OwnedResourceSpecifier::Broker(NODE_ID)
    ));

    // Topic override: max.message.bytes is enforced at once.
    alter(
        &broker,
        t,
        &[("max.message.bytes", "2000"), ("retention.ms", "3600000")],
    );
    assert_eq!(
        config_of(&broker, t, "max.message.bytes"),
        ("2000".to_string(), ConfigSource::DynamicTopic)
    );
    // One record per batch, so the small one is not judged together with the big one.
    let producer = broker.producer(&[("linger.ms", "0"), ("batch.num.messages", "1")]);
    let big = TestRecord::kv("big", vec![b'x'; 5_000]);
    let small = TestRecord::kv("small", vec![b'y'; 100]);
    let deliveries = producer.produce_collect(&topic, Some(0), &[big], SHORT);
    assert_eq!(
        deliveries[0].error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge),
        "a 5 kB record is over the topic's max.message.bytes"
    );
    let deliveries = producer.produce_collect(&topic, Some(0), &[small], SHORT);
    assert!(deliveries[0].result.is_ok(), "{:?}", deliveries[0]);

    // An invalid value and an unknown name: INVALID_CONFIG, nothing changed.
    for (bad, key) in [
        (&[("retention.ms", "soon")][..], "retention.ms"),
        (
            &[("max.message.bytes", "4000"), ("retention.mss", "1")][..],
            "retention.mss",
        ),
    ] {
        let (code, message) = raw_alter(&broker, 2, &topic, bad);
        assert_eq!(code, INVALID_CONFIG, "{bad:?}: {message:?}");
        assert!(
            message.as_deref().unwrap_or_default().contains(key),
            "{message:?}"
        );
        assert_eq!(
            config_of(&broker, t, "retention.ms"),
            ("3600000".to_string(), ConfigSource::DynamicTopic)
        );
        assert_eq!(config_of(&broker, t, "max.message.bytes").0, "2000");
    }

    // Broker: LogAppendTime as the node's default reaches the topic (no override of its own).
    alter(
        &broker,
        b,
        &[("log.message.timestamp.type", "LogAppendTime")],
    );
    assert_eq!(
        config_of(&broker, b, "log.message.timestamp.type"),
        ("LogAppendTime".to_string(), ConfigSource::DynamicBroker)
    );
    assert_eq!(
        config_of(&broker, t, "message.timestamp.type"),
        ("LogAppendTime".to_string(), ConfigSource::DynamicBroker)
    );
    let old_ts = now_ms() - 86_400_000;
    let mut old = TestRecord::kv("old", "stamped yesterday");
    old.timestamp = Some(old_ts);
    let acked = producer.produce_all(&topic, Some(0), &[old], SHORT);
    let got = broker.consume_all(&topic, 0, Offset::Offset(acked[0].1), 1, SHORT);
    match got[0].timestamp {
        Timestamp::LogAppendTime(ts) => assert!(ts > old_ts + 3_600_000, "append time {ts}"),
        other => panic!("expected a LogAppendTime timestamp, got {other:?}"),
    }
    // A config that is not dynamic: refused as Kafka refuses it.
    assert_eq!(
        raw_alter(&broker, 4, "1", &[("log.dirs", "/elsewhere")]),
        (
            INVALID_REQUEST,
            Some("Cannot update these configs dynamically: Set(log.dirs)".to_string())
        )
    );
    // IncrementalAlterConfigs: SET and DELETE touch only what they name; a bad SET changes
    // nothing.
    assert_eq!(
        raw_incremental(&broker, &topic, &[("segment.ms", 0, Some("86400000"))]),
        0
    );
    assert_eq!(
        raw_incremental(&broker, &topic, &[("segment.ms", 0, Some("0"))]),
        INVALID_CONFIG
    );
    assert_eq!(
        config_of(&broker, t, "segment.ms"),
        ("86400000".to_string(), ConfigSource::DynamicTopic)
    );
    assert_eq!(
        raw_incremental(&broker, &topic, &[("segment.ms", 1, None)]),
        0
    );
    assert_eq!(
        config_of(&broker, t, "segment.ms"),
        ("604800000".to_string(), ConfigSource::StaticBroker)
    );
    assert_eq!(config_of(&broker, t, "max.message.bytes").0, "2000");
    drop(producer);

    broker.sigterm_and_wait();
    broker.restart();
    assert_eq!(
        config_of(&broker, t, "retention.ms"),
        ("3600000".to_string(), ConfigSource::DynamicTopic)
    );
    assert_eq!(
        config_of(&broker, t, "max.message.bytes"),
        ("2000".to_string(), ConfigSource::DynamicTopic)
    );
    assert_eq!(
        config_of(&broker, b, "log.message.timestamp.type"),
        ("LogAppendTime".to_string(), ConfigSource::DynamicBroker)
    );
    let producer = broker.producer(&[("linger.ms", "0"), ("batch.num.messages", "1")]);
    let deliveries = producer.produce_collect(
        &topic,
        Some(0),
        &[TestRecord::kv("big", vec![b'x'; 5_000])],
        SHORT,
    );
    assert_eq!(
        deliveries[0].error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge),
        "max.message.bytes still enforced after the restart"
    );
}

#[test]
fn create_partitions_then_produce_to_the_new_partition() {
    let broker = Broker::start();
    let topic = unique("grow");
    broker.create_topic(&topic, 1, &[]);
    let admin = broker.admin();
    let grow = |count: usize| {
        block_on(
            admin.create_partitions(&[NewPartitions::new(&topic, count)], &admin_options()),
            OP_TIMEOUT + Duration::from_secs(5),
        )
        .expect("CreatePartitions request failed")
        .pop()
        .expect("one result")
    };
    assert_eq!(grow(3), Ok(topic.clone()));
    broker.wait_for_topic(&topic, 3);
    let rec = TestRecord::kv("k", "on the new partition");
    let producer = broker.producer(&[]);
    let acked = producer.produce_all(&topic, Some(2), std::slice::from_ref(&rec), SHORT);
    assert_eq!(acked, vec![(2, 0)]);
    let got = broker.consume_all(&topic, 2, Offset::Beginning, 1, SHORT);
    assert_record_eq(&rec, &got[0], "record on partition 2");
    // Fewer or equal: INVALID_PARTITIONS, still three.
    assert_eq!(
        grow(2),
        Err((topic.clone(), RDKafkaErrorCode::InvalidPartitions))
    );
    assert_eq!(
        grow(3),
        Err((topic.clone(), RDKafkaErrorCode::InvalidPartitions))
    );
    assert_eq!(broker.topic_partition_count(&topic), Some(3));
}

#[test]
fn delete_records_moves_the_low_watermark_and_survives_a_crash() {
    let mut broker = Broker::start();
    let topic = unique("delrec");
    broker.create_topic(&topic, 1, &[("segment.bytes", "4096")]);
    let base_ts = now_ms();
    // Small batches, so the log spans many segments.
    let producer = broker.producer(&[("batch.num.messages", "10")]);
    producer.produce_all(&topic, Some(0), &records("dr", 200, base_ts), SHORT);
    drop(producer);
    assert_eq!(broker.watermarks(&topic, 0), (0, 200));
    let segments_before = segment_files(&broker, &topic).len();

    let admin = broker.admin();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Offset(120))
        .unwrap();
    let result = block_on(
        admin.delete_records(&tpl, &admin_options()),
        OP_TIMEOUT + Duration::from_secs(5),
    )
    .expect("DeleteRecords failed");
    let elem = result
        .find_partition(&topic, 0)
        .expect("result for partition 0");
    assert!(elem.error().is_ok(), "{:?}", elem.error());
    assert_eq!(elem.offset(), Offset::Offset(120), "new low watermark");
    assert_eq!(broker.watermarks(&topic, 0), (120, 200));
    assert!(
        segment_files(&broker, &topic).len() < segments_before,
        "whole segments below offset 120 are gone from disk"
    );

    // Beyond the high watermark: OFFSET_OUT_OF_RANGE.
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Offset(500))
        .unwrap();
    let result = block_on(
        admin.delete_records(&tpl, &admin_options()),
        OP_TIMEOUT + Duration::from_secs(5),
    );
    let failed = match result {
        Ok(tpl) => tpl.find_partition(&topic, 0).unwrap().error().err(),
        Err(e) => Some(e),
    };
    assert_eq!(
        failed.and_then(|e| e.rdkafka_error_code()),
        Some(RDKafkaErrorCode::OffsetOutOfRange)
    );
    drop(admin);

    broker.sigkill();
    broker.restart();
    assert_eq!(broker.watermarks(&topic, 0), (120, 200));
    let got = broker.consume_all(&topic, 0, Offset::Beginning, 80, SHORT);
    assert_eq!(
        got[0].offset, 120,
        "reading from the beginning starts at the new start"
    );
}

fn segment_files(broker: &Broker, topic: &str) -> Vec<std::path::PathBuf> {
    let dir = broker.data_dir().join(format!("{topic}-0"));
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    files
}

#[test]
fn retention_drops_old_segments_and_out_of_range_consumers_follow_their_reset_policy() {
    let broker = Broker::start_with_args(&["--log-retention-check-interval-ms", "200"]);
    let topic = unique("retain");
    broker.create_topic(
        &topic,
        1,
        &[("segment.bytes", "2048"), ("retention.bytes", "8192")],
    );
    let producer = broker.producer(&[("batch.num.messages", "5")]);
    producer.produce_all(&topic, Some(0), &records("rb", 400, now_ms()), SHORT);
    drop(producer);

    let (low, high) = wait_for("retention.bytes to drop old segments", SHORT, || {
        // Files first, watermarks second: a retention pass between the two reads can then only
        // raise the low watermark read, never pair an old one with already shrunk files.
        let size: u64 = segment_files(&broker, &topic)
            .iter()
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
            .sum();
        let (low, high) = broker.watermarks(&topic, 0);
        // Kafka keeps whole segments: at most retention.bytes + one segment.
        (low > 0 && size <= 8192 + 2048).then_some((low, high))
    });
    assert_eq!(high, 400);
    assert!(
        low >= 200,
        "at most ~10 kB of 400 records of ~130 bytes are kept, low watermark {low}"
    );
    let files = segment_files(&broker, &topic);
    assert!(files.len() <= 6, "{files:?}");
    let first_base: i64 = files[0]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        first_base <= low,
        "the first segment holds the low watermark"
    );

    // A consumer positioned before the start: with earliest it resumes at the new start...
    let earliest = consumer_with_reset(&broker, "earliest");
    assign_at(&earliest, &topic, 0);
    let first = poll_message(&earliest, SHORT);
    assert_eq!(first, Ok(low), "resumed at the low watermark");
    // ...with error it is told.
    let strict = consumer_with_reset(&broker, "error");
    assign_at(&strict, &topic, 0);
    let outcome = poll_message(&strict, SHORT);
    assert!(
        matches!(
            outcome,
            Err(Some(RDKafkaErrorCode::AutoOffsetReset))
                | Err(Some(RDKafkaErrorCode::OffsetOutOfRange))
        ),
        "{outcome:?}"
    );
}

/// The offset of the first message, or the error code of the first consumer error.
fn poll_message(
    consumer: &BaseConsumer,
    timeout: Duration,
) -> Result<i64, Option<RDKafkaErrorCode>> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            None => continue,
            Some(Ok(m)) => return Ok(m.offset()),
            Some(Err(e)) => return Err(e.rdkafka_error_code()),
        }
    }
    panic!("no message and no error within {timeout:?}");
}

#[test]
fn retention_ms_expires_every_record_but_keeps_the_offsets() {
    let broker = Broker::start_with_args(&["--log-retention-check-interval-ms", "200"]);
    let topic = unique("expire");
    broker.create_topic(&topic, 1, &[("segment.bytes", "2048")]);
    // Records stamped two hours ago; then a one-hour retention.
    let producer = broker.producer(&[]);
    producer.produce_all(
        &topic,
        Some(0),
        &records("old", 100, now_ms() - 7_200_000),
        SHORT,
    );
    drop(producer);
    assert_eq!(broker.watermarks(&topic, 0), (0, 100));
    let admin = broker.admin();
    let change = AlterConfig::new(ResourceSpecifier::Topic(&topic)).set("retention.ms", "3600000");
    let result = block_on(
        admin.alter_configs(&[change], &admin_options()),
        OP_TIMEOUT + Duration::from_secs(5),
    )
    .expect("AlterConfigs");
    assert!(result[0].is_ok(), "{result:?}");
    wait_for("every record to expire", SHORT, || {
        (broker.watermarks(&topic, 0) == (100, 100)).then_some(())
    });
    let files = segment_files(&broker, &topic);
    assert_eq!(
        files.len(),
        1,
        "only the fresh active segment is left: {files:?}"
    );
    assert!(files[0].ends_with("00000000000000000100.log"), "{files:?}");
    // Producing continues at offset 100.
    let producer = broker.producer(&[]);
    let acked = producer.produce_all(&topic, Some(0), &records("new", 1, now_ms()), SHORT);
    assert_eq!(acked, vec![(0, 100)]);
}
