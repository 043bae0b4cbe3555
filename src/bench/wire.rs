//! `strait bench wire`: what the check of every count and length costs before a request or a
//! leader's response is decoded (`strait_broker::wire`), against the decode it guards, on the
//! messages that carry the data: Produce and Fetch requests, and the Fetch response a
//! follower reads. Both run in this process on the same encoded bytes, so the ratio is free of
//! network and disk.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, ProduceRequest, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// `strait bench wire` options.
#[derive(Debug, clap::Args)]
pub struct WireBenchArgs {
    /// How long each measurement runs, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub measure_ms: u64,
}

/// One message to measure: its name, API key, version, encoded body, and whether it is a
/// response.
struct Case {
    name: String,
    key: ApiKey,
    version: i16,
    body: Bytes,
    response: bool,
}

fn topic(i: usize) -> TopicName {
    TopicName(StrBytes::from_string(format!("topic-{i:04}")))
}

fn encode<T: Encodable>(msg: &T, version: i16) -> Bytes {
    let mut buf = BytesMut::new();
    msg.encode(&mut buf, version)
        .expect("encode a benchmark message");
    buf.freeze()
}

fn records(bytes: usize) -> Bytes {
    Bytes::from(
        (0..bytes)
            .map(|i| (i * 31 % 251) as u8)
            .collect::<Vec<u8>>(),
    )
}

fn produce(partitions: usize, records_bytes: usize) -> Case {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic(0))
            .with_partition_data(
                (0..partitions)
                    .map(|p| {
                        PartitionProduceData::default()
                            .with_index(p as i32)
                            .with_records(Some(records(records_bytes)))
                    })
                    .collect(),
            )]);
    Case {
        name: format!(
            "Produce v9, {partitions} partition(s) x {} KiB",
            records_bytes / 1024
        ),
        key: ApiKey::Produce,
        version: 9,
        body: encode(&req, 9),
        response: false,
    }
}

fn fetch(topics: usize, partitions_each: usize) -> Case {
    let req = FetchRequest::default()
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(52_428_800)
        .with_topics(
            (0..topics)
                .map(|t| {
                    FetchTopic::default().with_topic(topic(t)).with_partitions(
                        (0..partitions_each)
                            .map(|p| {
                                FetchPartition::default()
                                    .with_partition(p as i32)
                                    .with_fetch_offset(1_000_000)
                                    .with_partition_max_bytes(1_048_576)
                            })
                            .collect(),
                    )
                })
                .collect(),
        );
    Case {
        name: format!("Fetch v12, {} partitions", topics * partitions_each),
        key: ApiKey::Fetch,
        version: 12,
        body: encode(&req, 12),
        response: false,
    }
}

fn fetch_response(partitions: usize, records_bytes: usize) -> Case {
    let resp = FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
        .with_topic(topic(0))
        .with_partitions(
            (0..partitions)
                .map(|p| {
                    PartitionData::default()
                        .with_partition_index(p as i32)
                        .with_high_watermark(2_000_000)
                        .with_records(Some(records(records_bytes)))
                })
                .collect(),
        )]);
    Case {
        name: format!(
            "Fetch response v12 (follower), {partitions} partitions x {} KiB",
            records_bytes / 1024
        ),
        key: ApiKey::Fetch,
        version: 12,
        body: encode(&resp, 12),
        response: true,
    }
}

/// Runs `op` repeatedly for at least `measure`, returning nanoseconds per call.
fn time_per_call(measure: Duration, mut op: impl FnMut()) -> f64 {
    // Warm up, and size a batch of calls so the clock is read rarely.
    let start = Instant::now();
    let mut batch = 1u64;
    while start.elapsed() < measure / 10 {
        for _ in 0..batch {
            op();
        }
        batch *= 2;
    }
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < measure {
        for _ in 0..batch {
            op();
        }
        calls += batch;
    }
    start.elapsed().as_nanos() as f64 / calls as f64
}

fn decode(case: &Case) {
    let mut b = case.body.clone();
    let ok = match (case.key, case.response) {
        (ApiKey::Produce, false) => ProduceRequest::decode(&mut b, case.version).is_ok(),
        (ApiKey::Fetch, false) => FetchRequest::decode(&mut b, case.version).is_ok(),
        (ApiKey::Fetch, true) => FetchResponse::decode(&mut b, case.version).is_ok(),
        _ => unreachable!("no such benchmark case"),
    };
    assert!(ok, "{}: the benchmark message does not decode", case.name);
}

fn check(case: &Case) {
    let r = if case.response {
        strait_broker::wire::check_response(case.key, case.version, &case.body)
    } else {
        strait_broker::wire::check_request(case.key, case.version, &case.body)
    };
    assert!(
        r.is_ok(),
        "{}: the check refuses a valid message: {r:?}",
        case.name
    );
}

/// Runs the benchmark and prints a table.
pub fn wire(args: WireBenchArgs) -> anyhow::Result<()> {
    let measure = Duration::from_millis(args.measure_ms.max(10));
    let cases = [
        produce(1, 1024 * 1024),
        produce(100, 16 * 1024),
        fetch(1, 100),
        fetch(10, 100),
        fetch_response(10, 1024 * 1024),
    ];
    println!(
        "{:<52} {:>10} {:>12} {:>12} {:>12} {:>14}",
        "message", "bytes", "check ns", "decode ns", "check/decode", "check CPU s/GB"
    );
    for case in &cases {
        check(case);
        decode(case);
        let check_ns = time_per_call(measure, || check(black_box(case)));
        let decode_ns = time_per_call(measure, || decode(black_box(case)));
        let seconds_per_gb = check_ns * 1e-9 * (1e9 / case.body.len() as f64);
        println!(
            "{:<52} {:>10} {:>12.0} {:>12.0} {:>12.3} {:>14.5}",
            case.name,
            case.body.len(),
            check_ns,
            decode_ns,
            check_ns / decode_ns,
            seconds_per_gb
        );
    }
    println!(
        "check: strait_broker::wire walks every count and length; decode: kafka-protocol's decoder, which the check guards. \
         Compare the CPU s/GB with a node's own (strait bench produce prints it)."
    );
    Ok(())
}
