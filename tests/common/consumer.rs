//! Reading partitions back with rdkafka, and the admin calls tests use.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::*;

/// A consumer for `assign()` use only. librdkafka refuses `assign()` without
/// a `group.id`, so one is set, but nothing is ever committed or subscribed.
/// Anything clients bootstrap from: one test [`Broker`], or a cluster's bootstrap list.
pub trait Site {
    fn bootstrap(&self) -> String;
}

impl Site for Broker {
    fn bootstrap(&self) -> String {
        Broker::bootstrap(self)
    }
}

impl Site for String {
    fn bootstrap(&self) -> String {
        self.clone()
    }
}

/// Client settings every test client starts from.
pub fn client_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("client.id", "strait-e2e")
        .set("socket.timeout.ms", "10000");
    c
}

/// (low, high) watermarks of a partition.
pub fn watermarks(bootstrap: &str, topic: &str, partition: i32) -> (i64, i64) {
    make_consumer(bootstrap)
        .fetch_watermarks(topic, partition, OP_TIMEOUT)
        .unwrap_or_else(|e| panic!("fetch_watermarks({topic}/{partition}) failed: {e}"))
}

pub fn make_consumer(bootstrap: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("client.id", "strait-e2e-consumer")
        .set("group.id", unique("strait-e2e"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        // An out-of-range start offset must surface as an error, not be
        // silently "fixed" by jumping to the end.
        .set("auto.offset.reset", "error")
        .set("fetch.wait.max.ms", "100")
        .set("socket.timeout.ms", "10000")
        .create()
        .expect("create consumer")
}

/// Reads exactly `expected` records of `topic`/`partition` starting at
/// `from`; panics (with how far it got) on timeout or on any consumer error.
pub fn consume_all(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    from: Offset,
    expected: usize,
    timeout: Duration,
) -> Vec<Consumed> {
    let consumer = make_consumer(bootstrap);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, from)
        .expect("add partition offset");
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + timeout;
    let mut out = Vec::with_capacity(expected);
    while out.len() < expected {
        let now = Instant::now();
        if now >= deadline {
            panic!(
                "consume_all({topic}/{partition} from {from:?}): got only {} of {expected} records \
                 within {timeout:?}; last offset read: {:?}",
                out.len(),
                out.last().map(|c: &Consumed| c.offset)
            );
        }
        let wait = (deadline - now).min(Duration::from_millis(200));
        match consumer.poll(wait) {
            None => {}
            // librdkafka reports a lost connection to a broker it knows of (a node of a
            // cluster that is down) and reconnects by itself; the deadline still bounds us.
            Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::BrokerTransportFailure))) => {
            }
            Some(Err(e)) => panic!(
                "consume_all({topic}/{partition}): consumer error after {} records: {e}",
                out.len()
            ),
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| (h.key.to_string(), h.value.map(|v| v.to_vec())))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Consumed {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(|k| k.to_vec()),
                    value: m.payload().map(|v| v.to_vec()),
                    headers,
                    timestamp: m.timestamp(),
                });
            }
        }
    }
    out
}

/// Offsets returned by ListOffsets-by-timestamp for each of `timestamps`.
pub fn offsets_for_times(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    timestamps: &[i64],
) -> Vec<Offset> {
    let consumer = make_consumer(bootstrap);
    timestamps
        .iter()
        .map(|&ts| {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, partition, Offset::Offset(ts))
                .unwrap();
            let res = consumer
                .offsets_for_times(tpl, OP_TIMEOUT)
                .unwrap_or_else(|e| panic!("offsets_for_times({topic}, {ts}) failed: {e}"));
            let elem = res
                .find_partition(topic, partition)
                .unwrap_or_else(|| panic!("no result for {topic}/{partition}"));
            if let Err(e) = elem.error() {
                panic!("offsets_for_times({topic}/{partition}, {ts}) partition error: {e}");
            }
            elem.offset()
        })
        .collect()
}

/// Produces one fresh record with rdkafka and reads it back at its
/// acknowledged offset: proof the broker still serves normal clients.
pub fn assert_round_trip(broker: &Broker, topic: &str) {
    let rec = TestRecord::kv(
        unique("rt-key").into_bytes(),
        unique("rt-value").into_bytes(),
    );
    let p = broker.producer(&[]);
    let acked = p.produce_all(
        topic,
        Some(0),
        std::slice::from_ref(&rec),
        Duration::from_secs(30),
    );
    drop(p);
    let (partition, offset) = acked[0];
    let got = broker.consume_all(
        topic,
        partition,
        Offset::Offset(offset),
        1,
        Duration::from_secs(30),
    );
    assert_eq!(got[0].offset, offset, "round trip: wrong offset read back");
    assert_record_eq(&rec, &got[0], "round trip record");
}
