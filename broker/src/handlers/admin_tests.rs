//! Tests of the config, CreatePartitions and DeleteRecords handlers through `dispatch`, at every
//! version `SUPPORTED_APIS` advertises, against a real `Broker` on a temporary directory.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::create_partitions_request::{
    CreatePartitionsAssignment, CreatePartitionsTopic,
};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::incremental_alter_configs_request as incremental;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, ApiKey, BrokerId, CreatePartitionsRequest,
    CreatePartitionsResponse, DeleteRecordsRequest, DeleteRecordsResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, FetchRequest, FetchResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest,
    MetadataResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::broker::{Broker, NewTopic};
use crate::broker_config::source;
use crate::config::NodeConfig;
use crate::handlers::{dispatch, supported_range, Outcome};
use crate::log::batch::split_and_validate;
use crate::log::batch::test_util::simple_batch;
use crate::topic_config::config_type;

const INVALID_CONFIG: i16 = 40;
const INVALID_REQUEST: i16 = 42;
const INVALID_PARTITIONS: i16 = 37;
const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const OFFSET_OUT_OF_RANGE: i16 = 1;

async fn open_broker(dir: &Path) -> std::sync::Arc<Broker> {
    let yaml = format!(
        "node_id: 1\nlisten: 127.0.0.1:0\ndata_dir: {}\nlog:\n  retention_ms: 86400000\n",
        dir.display()
    );
    let config = NodeConfig::parse(&yaml, Path::new("test.yaml")).unwrap();
    crate::node::open_standalone(config).await.unwrap()
}

async fn create(b: &Broker, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    b.create_topic(&NewTopic {
        name: name.into(),
        num_partitions: partitions,
        replication_factor: 1,
        configs: configs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        assignment: None,
    })
    .await
    .unwrap();
}

fn versions(key: ApiKey) -> std::ops::RangeInclusive<i16> {
    let (min, max) = supported_range(key).expect("advertised");
    min..=max
}

async fn call<Req: Encodable, Resp: Decodable>(
    b: &Broker,
    key: ApiKey,
    version: i16,
    req: &Req,
) -> Resp {
    call_as(b, None, key, version, req).await
}

/// [`call`] with a client id in the request header.
async fn call_as<Req: Encodable, Resp: Decodable>(
    b: &Broker,
    client_id: Option<&str>,
    key: ApiKey,
    version: i16,
    req: &Req,
) -> Resp {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(11)
        .with_client_id(client_id.map(s))
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    req.encode(&mut buf, version).unwrap();
    let Outcome::Respond(out) = dispatch(b, buf.freeze()).await.unwrap() else {
        panic!("expected a response");
    };
    let mut bytes = out.freeze().split_off(4);
    let header = ResponseHeader::decode(&mut bytes, key.response_header_version(version)).unwrap();
    assert_eq!(header.correlation_id, 11);
    let resp = Resp::decode(&mut bytes, version).unwrap();
    assert!(bytes.is_empty(), "{key:?} v{version}: trailing bytes");
    resp
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn topic_resource(name: &str) -> DescribeConfigsResource {
    DescribeConfigsResource::default()
        .with_resource_type(2)
        .with_resource_name(s(name))
}

async fn describe(
    b: &Broker,
    version: i16,
    resources: Vec<DescribeConfigsResource>,
) -> DescribeConfigsResponse {
    let req = DescribeConfigsRequest::default()
        .with_resources(resources)
        .with_include_synonyms(true)
        // include_documentation exists from v3 on.
        .with_include_documentation(version >= 3);
    call(b, ApiKey::DescribeConfigs, version, &req).await
}

fn overrides(b: &Broker, topic: &str) -> BTreeMap<String, String> {
    b.topic(topic).unwrap().config.overrides().clone()
}

fn produce(b: &Broker, topic: &str, partition: i32, batches: usize) {
    let p = b.partition(topic, partition).unwrap();
    for i in 0..batches {
        let mut raw = simple_batch(2, 50, 1_000 + i as i64);
        let headers = split_and_validate(&raw, 1 << 20).unwrap();
        b.append(&p, &mut raw, &headers, None).unwrap();
    }
}

#[tokio::test]
async fn describe_configs_reports_values_sources_synonyms_and_docs_at_every_version() {
    let dir = tempfile::tempdir().unwrap();
    let b = open_broker(dir.path()).await;
    create(&b, "t", 1, &[("retention.ms", "1000")]).await;
    for v in versions(ApiKey::DescribeConfigs) {
        let resp = describe(&b, v, vec![topic_resource("t")]).await;
        let r = &resp.results[0];
        assert_eq!((r.error_code, r.resource_type), (0, 2), "v{v}");
        assert_eq!(r.configs.len(), crate::topic_config::TOPIC_CONFIGS.len());
        let get = |n: &str| r.configs.iter().find(|c| c.name.as_str() == n).unwrap();
        let retention = get("retention.ms");
        assert_eq!(retention.value.as_deref(), Some("1000"));
        assert_eq!(retention.config_source, source::DYNAMIC_TOPIC_CONFIG);
        assert!(!retention.read_only && !retention.is_sensitive);
        let chain: Vec<(&str, Option<&str>, i8)> = retention
            .synonyms
            .iter()
            .map(|s| (s.name.as_str(), s.value.as_deref(), s.source))
            .collect();
        assert_eq!(
            chain,
            vec![
                ("retention.ms", Some("1000"), source::DYNAMIC_TOPIC_CONFIG),
                (
                    "log.retention.ms",
                    Some("86400000"),
                    source::STATIC_BROKER_CONFIG
                ),
                (
                    "log.retention.ms",
                    Some("604800000"),
                    source::DEFAULT_CONFIG
                ),
            ],
            "v{v}"
        );
        let segment = get("segment.bytes");
        assert_eq!(segment.config_source, source::DEFAULT_CONFIG);
        if v >= 3 {
            assert_eq!(retention.config_type, config_type::LONG);
            assert_eq!(get("cleanup.policy").config_type, config_type::LIST);
            assert!(retention
                .documentation
                .as_deref()
                .unwrap()
                .contains("newest record"));
        } else {
            // Neither field is on the wire before v3.
            assert_eq!(retention.config_type, 0, "v{v} has no config type");
        }

        // Filtered by key; unknown keys are simply absent. Without include_synonyms, none.
        let req = DescribeConfigsRequest::default().with_resources(vec![topic_resource("t")
            .with_configuration_keys(Some(vec![
                s("retention.ms"),
                s("segment.bytes"),
                s("no.such.config"),
            ]))]);
        let resp: DescribeConfigsResponse = call(&b, ApiKey::DescribeConfigs, v, &req).await;
        let mut names: Vec<&str> = resp.results[0]
            .configs
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        names.sort();
        assert_eq!(names, vec!["retention.ms", "segment.bytes"], "v{v}");
        assert!(resp.results[0]
            .configs
            .iter()
            .all(|c| c.synonyms.is_empty()));
        if v >= 3 {
            assert!(resp.results[0]
                .configs
                .iter()
                .all(|c| c.documentation.is_none()));
        }

        let broker_resource = |name: &str| {
            DescribeConfigsResource::default()
                .with_resource_type(4)
                .with_resource_name(s(name))
        };
        let resp = describe(
            &b,
            v,
            vec![
                broker_resource("1"),
                broker_resource(""),
                broker_resource("7"),
                broker_resource("one"),
                topic_resource("missing"),
                topic_resource("bad name"),
                DescribeConfigsResource::default()
                    .with_resource_type(8)
                    .with_resource_name(s("1")),
            ],
        )
        .await;
        let codes: Vec<i16> = resp.results.iter().map(|r| r.error_code).collect();
        assert_eq!(
            codes,
            vec![
                0,
                0,
                INVALID_REQUEST,
                INVALID_REQUEST,
                UNKNOWN_TOPIC_OR_PARTITION,
                17,
                INVALID_REQUEST
            ],
            "v{v}"
        );
        let node = &resp.results[0].configs;
        let node_id = node.iter().find(|c| c.name.as_str() == "node.id").unwrap();
        assert!(node_id.read_only);
        assert_eq!(node_id.value.as_deref(), Some("1"));
        let lr = node
            .iter()
            .find(|c| c.name.as_str() == "log.retention.ms")
            .unwrap();
        assert!(!lr.read_only);
        assert_eq!(
            (lr.value.as_deref(), lr.config_source),
            (Some("86400000"), source::STATIC_BROKER_CONFIG)
        );
        assert!(
            resp.results[1].configs.is_empty(),
            "nothing set at the cluster-default level yet"
        );
        assert!(resp.results[2]
            .error_message
            .as_deref()
            .unwrap()
            .contains("Unexpected broker id"));
        assert_eq!(
            resp.results[4].error_message.as_deref(),
            Some("The topic 'missing' does not exist.")
        );
    }
}

fn alterable(name: &str, value: Option<&str>) -> AlterableConfig {
    AlterableConfig::default()
        .with_name(s(name))
        .with_value(value.map(s))
}

fn alter_request(
    resource_type: i8,
    name: &str,
    configs: &[(&str, Option<&str>)],
    validate_only: bool,
) -> AlterConfigsRequest {
    AlterConfigsRequest::default()
        .with_validate_only(validate_only)
        .with_resources(vec![AlterConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(s(name))
            .with_configs(configs.iter().map(|(n, v)| alterable(n, *v)).collect())])
}

#[tokio::test]
async fn alter_configs_replaces_the_whole_override_set_at_every_version() {
    let dir = tempfile::tempdir().unwrap();
    let b = open_broker(dir.path()).await;
    create(&b, "t", 2, &[("retention.ms", "1000")]).await;
    let mut expected_segment_bytes = 4096;
    for v in versions(ApiKey::AlterConfigs) {
        expected_segment_bytes += 1;
        let value = expected_segment_bytes.to_string();
        let req = alter_request(
            2,
            "t",
            &[
                ("segment.bytes", Some(&value)),
                ("message.timestamp.type", Some("LogAppendTime")),
                // A null value in AlterConfigs means "not set", as in Kafka.
                ("flush.ms", None),
            ],
            false,
        );
        let resp: AlterConfigsResponse = call(&b, ApiKey::AlterConfigs, v, &req).await;
        assert_eq!(
            resp.responses[0].error_code, 0,
            "v{v}: {:?}",
            resp.responses[0]
        );
        assert_eq!(
            overrides(&b, "t"),
            BTreeMap::from([
                (
                    "message.timestamp.type".to_string(),
                    "LogAppendTime".to_string()
                ),
                ("segment.bytes".to_string(), value.clone()),
            ]),
            "v{v}: retention.ms was dropped because the request did not name it"
        );
        for p in 0..2 {
            assert_eq!(
                b.partition("t", p).unwrap().log().config().segment_bytes,
                expected_segment_bytes,
                "v{v}: live on partition {p}"
            );
        }
        assert!(b.topic("t").unwrap().config.log_append_time());

        // One bad value among good ones: INVALID_CONFIG naming the key, nothing changes.
        let before = overrides(&b, "t");
        for bad in [
            &[("retention.ms", Some("5")), ("segment.bytes", Some("ten"))][..],
            &[("retention.mss", Some("5"))][..],
            &[("cleanup.policy", Some("compact"))][..],
        ] {
            let resp: AlterConfigsResponse = call(
                &b,
                ApiKey::AlterConfigs,
                v,
                &alter_request(2, "t", bad, false),
            )
            .await;
            let r = &resp.responses[0];
            assert_eq!(r.error_code, INVALID_CONFIG, "v{v} {bad:?}");
            let key = bad.last().unwrap().0;
            assert!(r.error_message.as_deref().unwrap().contains(key), "{r:?}");
            assert_eq!(overrides(&b, "t"), before);
        }
        // validate_only: accepted, not applied.
        let resp: AlterConfigsResponse = call(
            &b,
            ApiKey::AlterConfigs,
            v,
            &alter_request(2, "t", &[("retention.ms", Some("5"))], true),
        )
        .await;
        assert_eq!(resp.responses[0].error_code, 0);
        assert_eq!(overrides(&b, "t"), before);
        let resp: AlterConfigsResponse = call(
            &b,
            ApiKey::AlterConfigs,
            v,
            &alter_request(2, "nope", &[("retention.ms", Some("5"))], false),
        )
        .await;
        assert_eq!(resp.responses[0].error_code, UNKNOWN_TOPIC_OR_PARTITION);
    }

    // Broker resource: the cluster default reaches topics without an override; read-only
    // configs are refused as Kafka refuses them.
    let resp: AlterConfigsResponse = call(
        &b,
        ApiKey::AlterConfigs,
        2,
        &alter_request(4, "", &[("log.retention.bytes", Some("12345"))], false),
    )
    .await;
    assert_eq!(resp.responses[0].error_code, 0);
    assert_eq!(
        b.topic("t").unwrap().config.retention().retention_bytes,
        12345
    );
    let resp: AlterConfigsResponse = call(
        &b,
        ApiKey::AlterConfigs,
        2,
        &alter_request(4, "1", &[("log.dirs", Some("/elsewhere"))], false),
    )
    .await;
    assert_eq!(resp.responses[0].error_code, INVALID_REQUEST);
    assert_eq!(
        resp.responses[0].error_message.as_deref(),
        Some("Cannot update these configs dynamically: Set(log.dirs)")
    );
    let resp: AlterConfigsResponse = call(
        &b,
        ApiKey::AlterConfigs,
        2,
        &alter_request(4, "1", &[("log.segment.bytes", Some("2048"))], false),
    )
    .await;
    assert_eq!(resp.responses[0].error_code, 0);

    // Everything survives a restart.
    let topic_overrides = overrides(&b, "t");
    b.close();
    b.controller().shutdown().await;
    drop(b);
    let b = open_broker(dir.path()).await;
    assert_eq!(overrides(&b, "t"), topic_overrides);
    assert_eq!(
        b.topic("t").unwrap().config.retention().retention_bytes,
        12345
    );
    assert_eq!(
        b.broker_configs().value("log.segment.bytes").as_deref(),
        Some("2048")
    );
    let resp = describe(
        &b,
        4,
        vec![DescribeConfigsResource::default()
            .with_resource_type(4)
            .with_resource_name(s(""))],
    )
    .await;
    let d = &resp.results[0].configs;
    assert_eq!(d.len(), 1, "{resp:?}");
    assert_eq!(
        (d[0].name.as_str(), d[0].config_source),
        ("log.retention.bytes", source::DYNAMIC_DEFAULT_BROKER_CONFIG)
    );
}

fn op(name: &str, operation: i8, value: Option<&str>) -> incremental::AlterableConfig {
    incremental::AlterableConfig::default()
        .with_name(s(name))
        .with_config_operation(operation)
        .with_value(value.map(s))
}

fn incremental_request(
    resources: Vec<(i8, &str, Vec<incremental::AlterableConfig>)>,
) -> IncrementalAlterConfigsRequest {
    IncrementalAlterConfigsRequest::default().with_resources(
        resources
            .into_iter()
            .map(|(t, n, ops)| {
                incremental::AlterConfigsResource::default()
                    .with_resource_type(t)
                    .with_resource_name(s(n))
                    .with_configs(ops)
            })
            .collect(),
    )
}

#[tokio::test]
async fn incremental_alter_configs_sets_deletes_appends_and_subtracts_at_every_version() {
    const SET: i8 = 0;
    const DELETE: i8 = 1;
    const APPEND: i8 = 2;
    const SUBTRACT: i8 = 3;
    let dir = tempfile::tempdir().unwrap();
    let b = open_broker(dir.path()).await;
    let throttled = "leader.replication.throttled.replicas";
    for v in versions(ApiKey::IncrementalAlterConfigs) {
        let topic = format!("t{v}");
        create(
            &b,
            &topic,
            1,
            &[("retention.ms", "1000"), ("flush.messages", "10")],
        )
        .await;
        let req = incremental_request(vec![(
            2,
            &topic,
            vec![
                op("segment.bytes", SET, Some("8192")),
                op("retention.ms", DELETE, None),
                op(throttled, APPEND, Some("0:1,1:1")),
            ],
        )]);
        let resp: IncrementalAlterConfigsResponse =
            call(&b, ApiKey::IncrementalAlterConfigs, v, &req).await;
        assert_eq!(
            resp.responses[0].error_code, 0,
            "v{v}: {:?}",
            resp.responses[0]
        );
        assert_eq!(
            overrides(&b, &topic),
            BTreeMap::from([
                ("flush.messages".to_string(), "10".to_string()),
                (throttled.to_string(), "0:1,1:1".to_string()),
                ("segment.bytes".to_string(), "8192".to_string()),
            ]),
            "v{v}: untouched overrides stay"
        );
        assert_eq!(
            b.partition(&topic, 0).unwrap().log().config().segment_bytes,
            8192
        );
        for (operation, value, expected) in
            [(SUBTRACT, "0:1", "1:1"), (APPEND, "1:1,2:1", "1:1,2:1")]
        {
            let req = incremental_request(vec![(
                2,
                &topic,
                vec![op(throttled, operation, Some(value))],
            )]);
            let resp: IncrementalAlterConfigsResponse =
                call(&b, ApiKey::IncrementalAlterConfigs, v, &req).await;
            assert_eq!(resp.responses[0].error_code, 0, "v{v}");
            assert_eq!(overrides(&b, &topic)[throttled], expected);
        }

        let before = overrides(&b, &topic);
        let cases: Vec<(Vec<incremental::AlterableConfig>, i16, &str)> = vec![
            (
                vec![op("retention.ms", APPEND, Some("5"))],
                INVALID_CONFIG,
                "Can't APPEND to key retention.ms because its type is not LIST.",
            ),
            (
                vec![
                    op("retention.ms", SET, Some("5")),
                    op("segment.bytes", SET, Some("x")),
                ],
                INVALID_CONFIG,
                "segment.bytes",
            ),
            (
                vec![op("no.such", DELETE, None)],
                INVALID_CONFIG,
                "Unknown topic config name: no.such",
            ),
            (
                vec![op("retention.ms", SET, None)],
                INVALID_REQUEST,
                "Null value not supported",
            ),
            (
                vec![op("retention.ms", 9, Some("5"))],
                INVALID_REQUEST,
                "Unknown operations type 9",
            ),
            (
                vec![
                    op("retention.ms", SET, Some("5")),
                    op("retention.ms", DELETE, None),
                ],
                INVALID_REQUEST,
                "duplicate config keys",
            ),
            (
                vec![op("cleanup.policy", APPEND, Some("compact"))],
                INVALID_CONFIG,
                "compaction",
            ),
        ];
        for (ops, code, message) in cases {
            let resp: IncrementalAlterConfigsResponse = call(
                &b,
                ApiKey::IncrementalAlterConfigs,
                v,
                &incremental_request(vec![(2, &topic, ops)]),
            )
            .await;
            let r = &resp.responses[0];
            assert_eq!(r.error_code, code, "v{v} {message}");
            assert!(
                r.error_message.as_deref().unwrap().contains(message),
                "v{v}: {r:?}"
            );
            assert_eq!(
                overrides(&b, &topic),
                before,
                "v{v}: {message} changed nothing"
            );
        }
        // The same resource twice: both refused.
        let resp: IncrementalAlterConfigsResponse = call(
            &b,
            ApiKey::IncrementalAlterConfigs,
            v,
            &incremental_request(vec![
                (2, &topic, vec![op("retention.ms", SET, Some("5"))]),
                (2, &topic, vec![op("retention.ms", SET, Some("6"))]),
            ]),
        )
        .await;
        assert!(resp
            .responses
            .iter()
            .all(|r| r.error_code == INVALID_REQUEST));
        assert_eq!(overrides(&b, &topic), before);

        // Broker: a per-broker value wins over the cluster default; DELETE falls back to it.
        let resp: IncrementalAlterConfigsResponse = call(
            &b,
            ApiKey::IncrementalAlterConfigs,
            v,
            &incremental_request(vec![
                (4, "", vec![op("log.retention.ms", SET, Some("7000"))]),
                (4, "1", vec![op("log.retention.ms", SET, Some("9000"))]),
            ]),
        )
        .await;
        assert!(resp.responses.iter().all(|r| r.error_code == 0), "{resp:?}");
        assert_eq!(
            b.topic(&topic).unwrap().config.retention().retention_ms,
            9000
        );
        let resp: IncrementalAlterConfigsResponse = call(
            &b,
            ApiKey::IncrementalAlterConfigs,
            v,
            &incremental_request(vec![(4, "1", vec![op("log.retention.ms", DELETE, None)])]),
        )
        .await;
        assert_eq!(resp.responses[0].error_code, 0);
        assert_eq!(
            b.topic(&topic).unwrap().config.retention().retention_ms,
            7000
        );
        let resp: IncrementalAlterConfigsResponse = call(
            &b,
            ApiKey::IncrementalAlterConfigs,
            v,
            &incremental_request(vec![
                (4, "1", vec![op("num.partitions", SET, Some("3"))]),
                (4, "2", vec![op("log.retention.ms", SET, Some("1"))]),
                (4, "", vec![op("log.retention.ms", SET, Some("soon"))]),
            ]),
        )
        .await;
        let codes: Vec<i16> = resp.responses.iter().map(|r| r.error_code).collect();
        assert_eq!(codes, vec![INVALID_REQUEST; 3], "{resp:?}");
        assert_eq!(
            b.topic(&topic).unwrap().config.retention().retention_ms,
            7000
        );
    }
}

#[tokio::test]
async fn create_partitions_grows_topics_only_at_every_version() {
    let dir = tempfile::tempdir().unwrap();
    let b = open_broker(dir.path()).await;
    let cp = |name: &str, count: i32, assignments: Option<Vec<Vec<i32>>>| {
        CreatePartitionsTopic::default()
            .with_name(TopicName(s(name)))
            .with_count(count)
            .with_assignments(assignments.map(|a| {
                a.into_iter()
                    .map(|ids| {
                        CreatePartitionsAssignment::default()
                            .with_broker_ids(ids.into_iter().map(BrokerId).collect())
                    })
                    .collect()
            }))
    };
    for v in versions(ApiKey::CreatePartitions) {
        let topic = format!("t{v}");
        create(&b, &topic, 1, &[]).await;
        let req = CreatePartitionsRequest::default()
            .with_timeout_ms(1000)
            .with_topics(vec![
                cp(&topic, 3, Some(vec![vec![1], vec![1]])),
                cp("missing", 3, None),
                cp("dup", 2, None),
                cp("dup", 3, None),
            ]);
        let resp: CreatePartitionsResponse = call(&b, ApiKey::CreatePartitions, v, &req).await;
        let codes: Vec<i16> = resp.results.iter().map(|r| r.error_code).collect();
        assert_eq!(
            codes,
            vec![
                0,
                UNKNOWN_TOPIC_OR_PARTITION,
                INVALID_REQUEST,
                INVALID_REQUEST
            ],
            "v{v}: {resp:?}"
        );
        assert_eq!(b.topic(&topic).unwrap().partition_count, 3);
        let md: MetadataResponse = call(
            &b,
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(None),
        )
        .await;
        let t = md
            .topics
            .iter()
            .find(|t| t.name.as_ref().unwrap().0.as_str() == topic)
            .unwrap();
        assert_eq!(
            t.partitions.len(),
            3,
            "v{v}: Metadata shows the new partitions"
        );
        produce(&b, &topic, 2, 1);
        assert_eq!(b.partition(&topic, 2).unwrap().high_watermark(), 2);

        let shrink =
            format!("The topic {topic} currently has 3 partition(s); 2 would not be an increase.");
        let cases = [
            (cp(&topic, 3, None), INVALID_PARTITIONS, "Topic already has 3 partition(s)."),
            (cp(&topic, 2, None), INVALID_PARTITIONS, shrink.as_str()),
            (
                cp(&topic, 5, Some(vec![vec![1]])),
                INVALID_REPLICA_ASSIGNMENT,
                "Attempted to add 2 additional partition(s), but only 1 assignment(s) were specified.",
            ),
            (
                cp(&topic, 4, Some(vec![vec![9]])),
                INVALID_REPLICA_ASSIGNMENT,
                "The manual partition assignment includes broker 9, but no such broker is registered.",
            ),
        ];
        for (t, code, message) in cases {
            let req = CreatePartitionsRequest::default().with_topics(vec![t]);
            let resp: CreatePartitionsResponse = call(&b, ApiKey::CreatePartitions, v, &req).await;
            assert_eq!(resp.results[0].error_code, code, "v{v} {message}");
            assert_eq!(resp.results[0].error_message.as_deref(), Some(message));
        }
        let req = CreatePartitionsRequest::default()
            .with_validate_only(true)
            .with_topics(vec![cp(&topic, 8, None)]);
        let resp: CreatePartitionsResponse = call(&b, ApiKey::CreatePartitions, v, &req).await;
        assert_eq!(resp.results[0].error_code, 0);
        assert_eq!(b.topic(&topic).unwrap().partition_count, 3, "validate_only");
    }
    b.close();
    b.controller().shutdown().await;
    drop(b);
    let b = open_broker(dir.path()).await;
    assert_eq!(b.topic("t0").unwrap().partition_count, 3, "persisted");
    assert_eq!(b.partition("t0", 2).unwrap().high_watermark(), 2);
}

#[tokio::test]
async fn delete_records_moves_the_low_watermark_at_every_version() {
    let dir = tempfile::tempdir().unwrap();
    let b = open_broker(dir.path()).await;
    // Small segments so whole segments fall below the new start.
    create(&b, "t", 1, &[("segment.bytes", "300")]).await;
    produce(&b, "t", 0, 20);
    let hw = b.partition("t", 0).unwrap().high_watermark();
    assert_eq!(hw, 40);
    let segments_before = b.partition("t", 0).unwrap().log().segment_count();
    let name = TopicName(s("t"));
    let delete = |partition: i32, offset: i64| {
        DeleteRecordsRequest::default()
            .with_timeout_ms(1000)
            .with_topics(vec![DeleteRecordsTopic::default()
                .with_name(name.clone())
                .with_partitions(vec![DeleteRecordsPartition::default()
                    .with_partition_index(partition)
                    .with_offset(offset)])])
    };
    let mut target = 0;
    for v in versions(ApiKey::DeleteRecords) {
        target += 7;
        let resp: DeleteRecordsResponse =
            call(&b, ApiKey::DeleteRecords, v, &delete(0, target)).await;
        let p = &resp.topics[0].partitions[0];
        assert_eq!((p.error_code, p.low_watermark), (0, target), "v{v}");
        for (partition, offset, code) in [
            (0, hw + 1, OFFSET_OUT_OF_RANGE),
            (0, -5, OFFSET_OUT_OF_RANGE),
            (3, 1, UNKNOWN_TOPIC_OR_PARTITION),
        ] {
            let resp: DeleteRecordsResponse =
                call(&b, ApiKey::DeleteRecords, v, &delete(partition, offset)).await;
            let p = &resp.topics[0].partitions[0];
            assert_eq!((p.error_code, p.low_watermark), (code, -1), "v{v} {offset}");
        }
    }
    assert!(
        b.partition("t", 0).unwrap().log().segment_count() < segments_before,
        "whole segments below the start were deleted"
    );
    // ListOffsets earliest is the new start; a fetch below it is out of range.
    let earliest = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name.clone())
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-2)])]);
    let resp: ListOffsetsResponse = call(&b, ApiKey::ListOffsets, 6, &earliest).await;
    assert_eq!(resp.topics[0].partitions[0].offset, target);
    let fetch = |offset: i64| {
        FetchRequest::default()
            .with_max_bytes(1 << 20)
            .with_max_wait_ms(0)
            .with_topics(vec![FetchTopic::default()
                .with_topic(name.clone())
                .with_partitions(vec![FetchPartition::default()
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(1 << 20)])])
    };
    let resp: FetchResponse = call(&b, ApiKey::Fetch, 12, &fetch(target - 1)).await;
    let p = &resp.responses[0].partitions[0];
    assert_eq!(
        (p.error_code, p.log_start_offset),
        (OFFSET_OUT_OF_RANGE, target)
    );
    let resp: FetchResponse = call(&b, ApiKey::Fetch, 12, &fetch(target)).await;
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    assert!(!p
        .records
        .as_ref()
        .map_or(Bytes::new(), Bytes::clone)
        .is_empty());

    // -1 means the high watermark.
    let resp: DeleteRecordsResponse = call(&b, ApiKey::DeleteRecords, 2, &delete(0, -1)).await;
    assert_eq!(resp.topics[0].partitions[0].low_watermark, hw);
    // The start survives an unclean restart (no close).
    drop(b);
    let b = open_broker(dir.path()).await;
    assert_eq!(b.partition("t", 0).unwrap().log().log_start_offset(), hw);
}

#[tokio::test]
async fn a_node_in_controlled_shutdown_lists_itself_in_metadata_until_it_stops() {
    use crate::controller::image::MetadataCommand;
    let dir = tempfile::tempdir().unwrap();
    let b = open_broker(dir.path()).await;
    async fn listed(b: &Broker) -> Vec<i32> {
        let md: MetadataResponse = call(
            b,
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(None),
        )
        .await;
        md.brokers.iter().map(|x| x.node_id.0).collect()
    }
    let apply = |command| {
        let b = b.clone();
        async move {
            let result = b
                .controller()
                .propose_and_apply(command, 10_000)
                .await
                .unwrap();
            assert_eq!(result.error_code, 0, "{result:?}");
            // The handlers read the broker's copy of the image, which the reconcile loop
            // updates after the controller applied it.
            let applied = b.controller().image().applied_index;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while b.image().applied_index < applied {
                assert!(std::time::Instant::now() < deadline, "broker image lags");
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            result
        }
    };
    // As a node's start does: wait until the controller unfenced it (after that its
    // heartbeats propose nothing more).
    let mut images = b.controller().subscribe();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        images.wait_for(|i| i.brokers.get(&1).is_some_and(|r| !r.fenced)),
    )
    .await
    .expect("unfenced within 10 s")
    .unwrap();
    assert_eq!(listed(&b).await, vec![1]);

    // Another broker, registered (fenced until it catches up), then in controlled shutdown:
    // never listed here, as in Kafka.
    let registered = apply(MetadataCommand::RegisterBroker {
        id: 2,
        host: "127.0.0.1".into(),
        port: 9,
        incarnation_id: uuid::Uuid::new_v4(),
    })
    .await;
    let epoch_2 = u64::try_from(registered.value).unwrap();
    assert_eq!(listed(&b).await, vec![1]);
    apply(MetadataCommand::ControlledShutdown {
        id: 2,
        epoch: epoch_2,
    })
    .await;
    assert_eq!(listed(&b).await, vec![1]);

    // This node's own controlled shutdown fences it at once; it still answers, and names
    // itself, so a client of a single node keeps a broker to reconnect to.
    let epoch_1 = b.image().brokers[&1].epoch;
    apply(MetadataCommand::ControlledShutdown {
        id: 1,
        epoch: epoch_1,
    })
    .await;
    let image = b.image();
    assert!(image.brokers[&1].fenced && image.brokers[&1].shutting_down);
    assert_eq!(listed(&b).await, vec![1]);
}

const POLICY_VIOLATION: i16 = 44;

/// Produces one batch of one record to partition 0 of `topic` as `client_id`; the error
/// code and message.
async fn produce_as(b: &Broker, client_id: &str, topic: &str) -> (i16, Option<String>) {
    produce_records_as(b, client_id, topic, 1).await
}

/// Produces one batch of `count` records to partition 0 of `topic` as `client_id`.
async fn produce_records_as(
    b: &Broker,
    client_id: &str,
    topic: &str,
    count: usize,
) -> (i16, Option<String>) {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
    let req = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(1000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(s(topic)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from(
                    simple_batch(count, 10, 1_000).to_vec(),
                )))])]);
    let resp: ProduceResponse = call_as(b, Some(client_id), ApiKey::Produce, 9, &req).await;
    let p = &resp.responses[0].partition_responses[0];
    (
        p.error_code,
        p.error_message.as_ref().map(|m| m.to_string()),
    )
}

/// The write protection as DescribeConfigs reports it: (value, config source).
async fn described_protection(b: &Broker, topic: &str) -> Option<(String, i8)> {
    let resp = describe(b, 4, vec![topic_resource(topic)]).await;
    resp.results[0]
        .configs
        .iter()
        .find(|c| c.name.as_str() == "strait.write.protection")
        .map(|c| (c.value.as_ref().unwrap().to_string(), c.config_source))
}

#[tokio::test]
async fn write_protection_keeps_out_every_producer_but_its_writer_and_is_not_a_topic_config() {
    let dir = tempfile::tempdir().unwrap();
    let b = open_broker(dir.path()).await;
    create(&b, "m", 1, &[("retention.ms", "1000")]).await;
    let key = "strait.write.protection";
    let incremental = |ops| async {
        let resp: IncrementalAlterConfigsResponse = call(
            &b,
            ApiKey::IncrementalAlterConfigs,
            1,
            &incremental_request(vec![(2, "m", ops)]),
        )
        .await;
        (
            resp.responses[0].error_code,
            resp.responses[0]
                .error_message
                .as_ref()
                .map(|m| m.to_string()),
        )
    };
    assert_eq!(produce_as(&b, "app", "m").await.0, 0, "unprotected");

    // The flow's replica: only its producer writes.
    let set = incremental(vec![op(
        key,
        0,
        Some("flow=a-to-b,writer=strait-mirror-a-to-b"),
    )])
    .await;
    assert_eq!(set, (0, None));
    let (code, message) = produce_as(&b, "app", "m").await;
    assert_eq!(code, POLICY_VIOLATION);
    let message = message.expect("Produce v9 carries the reason");
    assert!(
        message.contains("a-to-b") && message.contains("read-only"),
        "{message}"
    );
    assert_eq!(produce_as(&b, "strait-mirror-a-to-b", "m").await.0, 0);
    assert_eq!(
        described_protection(&b, "m").await,
        Some(("flow=a-to-b,writer=strait-mirror-a-to-b".to_string(), 0)),
        "reported with source UNKNOWN, so config sync leaves it behind"
    );
    // Not among the configs: AlterConfigs, which replaces the whole override set, leaves it.
    let resp: AlterConfigsResponse = call(
        &b,
        ApiKey::AlterConfigs,
        1,
        &alter_request(2, "m", &[("retention.ms", Some("2000"))], false),
    )
    .await;
    assert_eq!(resp.responses[0].error_code, 0);
    assert_eq!(
        overrides(&b, "m").get("retention.ms").map(String::as_str),
        Some("2000")
    );
    assert!(!overrides(&b, "m").contains_key(key));
    assert_eq!(produce_as(&b, "app", "m").await.0, POLICY_VIOLATION);

    // Refused, changing nothing: mixed with a config, malformed, or an operation that
    // makes no sense for it.
    let mixed = incremental(vec![op(key, 1, None), op("retention.ms", 0, Some("5"))]).await;
    assert_eq!(mixed.0, INVALID_REQUEST, "{mixed:?}");
    for bad in [
        "writer=x",
        "flow=",
        "flow=a,flow=b",
        "flow=a,colour=red",
        "nonsense",
    ] {
        let r = incremental(vec![op(key, 0, Some(bad))]).await;
        assert_eq!(r.0, INVALID_CONFIG, "`{bad}`: {r:?}");
    }
    assert_eq!(
        incremental(vec![op(key, 2, Some("flow=a"))]).await.0,
        INVALID_REQUEST
    );
    let resp: IncrementalAlterConfigsResponse = call(
        &b,
        ApiKey::IncrementalAlterConfigs,
        1,
        &incremental_request(vec![(4, "1", vec![op(key, 0, Some("flow=a"))])]),
    )
    .await;
    assert_eq!(
        resp.responses[0].error_code, INVALID_REQUEST,
        "a broker resource"
    );
    assert_eq!(
        overrides(&b, "m").get("retention.ms").map(String::as_str),
        Some("2000")
    );
    assert_eq!(
        described_protection(&b, "m")
            .await
            .map(|(v, _)| v)
            .as_deref(),
        Some("flow=a-to-b,writer=strait-mirror-a-to-b")
    );

    // A source fenced for failover: nobody writes, the flow's producer neither.
    let resp: AlterConfigsResponse = call(
        &b,
        ApiKey::AlterConfigs,
        1,
        &alter_request(2, "m", &[(key, Some("flow=a-to-b"))], false),
    )
    .await;
    assert_eq!(resp.responses[0].error_code, 0);
    let (code, message) = produce_as(&b, "strait-mirror-a-to-b", "m").await;
    assert_eq!(code, POLICY_VIOLATION);
    assert!(message.unwrap().contains("fenced"));

    // Cleared: everyone writes again, and DescribeConfigs no longer lists it.
    assert_eq!(incremental(vec![op(key, 1, None)]).await, (0, None));
    assert_eq!(produce_as(&b, "app", "m").await.0, 0);
    assert_eq!(described_protection(&b, "m").await, None);
    assert_eq!(
        overrides(&b, "m").get("retention.ms").map(String::as_str),
        Some("2000")
    );
}

#[tokio::test]
async fn a_tail_truncation_cuts_a_fenced_topic_once_at_a_batch_boundary_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let b = open_broker(dir.path()).await;
    create(&b, "t", 1, &[]).await;
    for _ in 0..5 {
        assert_eq!(produce_records_as(&b, "app", "t", 10).await.0, 0);
    }
    let end = |b: &Broker| b.partition("t", 0).unwrap().log().log_end_offset();
    assert_eq!(end(&b), 50);
    let key = "strait.truncate.tail";
    let incremental = |b: std::sync::Arc<Broker>, ops| async move {
        let resp: IncrementalAlterConfigsResponse = call(
            &b,
            ApiKey::IncrementalAlterConfigs,
            1,
            &incremental_request(vec![(2, "t", ops)]),
        )
        .await;
        (
            resp.responses[0].error_code,
            resp.responses[0]
                .error_message
                .as_ref()
                .map(|m| m.to_string()),
        )
    };

    // A topic that takes writes is not cut: a producer could race the cut.
    let (code, message) = incremental(b.clone(), vec![op(key, 0, Some("0:20"))]).await;
    assert_eq!(code, POLICY_VIOLATION, "{message:?}");
    assert!(message.unwrap().contains("fence it"));
    assert_eq!(end(&b), 50);

    let protect = |value: &'static str| {
        incremental_request(vec![(
            2,
            "t",
            vec![op("strait.write.protection", 0, Some(value))],
        )])
    };
    let resp: IncrementalAlterConfigsResponse = call(
        &b,
        ApiKey::IncrementalAlterConfigs,
        1,
        &protect("flow=f,writer=restorer"),
    )
    .await;
    assert_eq!(resp.responses[0].error_code, 0);
    // Nor one that its writer may write to: that write could land before the cut and go
    // with it, acknowledged.
    let r = incremental(b.clone(), vec![op(key, 0, Some("0:20"))]).await;
    assert_eq!(r.0, POLICY_VIOLATION, "{r:?}");
    let resp: IncrementalAlterConfigsResponse =
        call(&b, ApiKey::IncrementalAlterConfigs, 1, &protect("flow=f")).await;
    assert_eq!(resp.responses[0].error_code, 0);

    // Refused, cutting nothing.
    for (bad, want) in [
        ("", INVALID_CONFIG),
        ("0", INVALID_CONFIG),
        ("0:-1", INVALID_CONFIG),
        ("0:5,0:6", INVALID_CONFIG),
        ("x:5", INVALID_CONFIG),
        ("3:5", UNKNOWN_TOPIC_OR_PARTITION),
    ] {
        let r = incremental(b.clone(), vec![op(key, 0, Some(bad))]).await;
        assert_eq!(r.0, want, "`{bad}`: {r:?}");
    }
    let r = incremental(b.clone(), vec![op(key, 1, None)]).await;
    assert_eq!(r.0, INVALID_REQUEST, "DELETE: {r:?}");
    let r = incremental(
        b.clone(),
        vec![op(key, 0, Some("0:20")), op("retention.ms", 0, Some("5"))],
    )
    .await;
    assert_eq!(r.0, INVALID_REQUEST, "mixed: {r:?}");
    assert_eq!(end(&b), 50);
    let epoch_before = b.partition("t", 0).unwrap().replica_state().leader_epoch;

    // 25 falls inside the third batch (20..30): whole batches go, so the log ends at 20.
    assert_eq!(
        incremental(b.clone(), vec![op(key, 0, Some("0:25"))]).await,
        (0, None)
    );
    let partition = b.partition("t", 0).unwrap();
    assert_eq!(end(&b), 20);
    assert_eq!(partition.high_watermark(), 20);
    assert_eq!(partition.replica_state().leader_epoch, epoch_before + 1);
    assert_eq!(
        partition.log().latest_epoch(),
        Some(epoch_before + 1),
        "the new epoch starts at the cut"
    );

    // The writer appends after the cut; a restart does not cut again.
    let resp: IncrementalAlterConfigsResponse = call(
        &b,
        ApiKey::IncrementalAlterConfigs,
        1,
        &protect("flow=f,writer=restorer"),
    )
    .await;
    assert_eq!(resp.responses[0].error_code, 0);
    assert_eq!(produce_records_as(&b, "restorer", "t", 10).await.0, 0);
    assert_eq!(end(&b), 30);
    b.close();
    b.controller().shutdown().await;
    drop((b, partition));
    let b = open_broker(dir.path()).await;
    assert_eq!(end(&b), 30, "the cut acted once");
    let image = b.controller().image();
    assert_eq!(
        image.topics["t"].partitions[0].tail_truncation,
        Some(crate::controller::image::TailTruncation {
            leader_epoch: epoch_before + 1,
            end_offset: 25
        })
    );
}
