//! An rdkafka producer that collects every delivery report.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig,
};
use rdkafka::ClientContext;

use super::*;

/// Outcome of one produced record, identified by the index the test gave it.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub index: usize,
    pub result: Result<(i32, i64), KafkaError>,
}

impl Delivery {
    pub fn error_code(&self) -> Option<RDKafkaErrorCode> {
        match &self.result {
            Ok(_) => None,
            Err(e) => e.rdkafka_error_code(),
        }
    }
}

pub struct CollectingContext {
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    acked: Arc<AtomicU64>,
}

impl ClientContext for CollectingContext {}

impl ProducerContext for CollectingContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        let result = match result {
            Ok(m) => {
                self.acked.fetch_add(1, Ordering::Relaxed);
                Ok((m.partition(), m.offset()))
            }
            Err((e, _)) => Err(e.clone()),
        };
        self.deliveries
            .lock()
            .unwrap()
            .push(Delivery { index, result });
    }
}

/// A BaseProducer whose delivery reports are collected by record index.
pub struct TestProducer {
    pub producer: BaseProducer<CollectingContext>,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    acked: Arc<AtomicU64>,
}

impl TestProducer {
    pub fn new(bootstrap: &str, extra: &[(&str, &str)]) -> TestProducer {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", bootstrap)
            .set("client.id", "strait-e2e-producer")
            .set("acks", "all")
            .set("enable.idempotence", "false")
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "20000")
            .set("message.timeout.ms", "60000")
            .set("request.timeout.ms", "30000")
            .set("socket.timeout.ms", "10000");
        for (k, v) in extra {
            c.set(*k, *v);
        }
        let deliveries = Arc::new(Mutex::new(Vec::new()));
        let acked = Arc::new(AtomicU64::new(0));
        let producer = c
            .create_with_context(CollectingContext {
                deliveries: deliveries.clone(),
                acked: acked.clone(),
            })
            .expect("create producer");
        TestProducer {
            producer,
            deliveries,
            acked,
        }
    }

    /// Enqueues one record, waiting (bounded by `deadline`) while the local
    /// queue is full. Returns the local enqueue error, if any other.
    pub fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        index: usize,
        rec: &TestRecord,
        deadline: Instant,
    ) -> Result<(), KafkaError> {
        loop {
            let mut r: BaseRecord<'_, [u8], [u8], usize> = BaseRecord::with_opaque_to(topic, index);
            if let Some(p) = partition {
                r = r.partition(p);
            }
            if let Some(k) = &rec.key {
                r = r.key(k.as_slice());
            }
            if let Some(v) = &rec.value {
                r = r.payload(v.as_slice());
            }
            if let Some(ts) = rec.timestamp {
                r = r.timestamp(ts);
            }
            if !rec.headers.is_empty() {
                let mut h = OwnedHeaders::new_with_capacity(rec.headers.len());
                for (k, v) in &rec.headers {
                    h = h.insert(Header {
                        key: k.as_str(),
                        value: v.as_ref(),
                    });
                }
                r = r.headers(h);
            }
            match self.producer.send(r) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    if Instant::now() >= deadline {
                        panic!("producer queue stayed full until the deadline");
                    }
                    self.producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Serves delivery reports for up to `timeout`.
    pub fn poll(&self, timeout: Duration) {
        self.producer.poll(timeout);
    }

    /// Waits (bounded) until every enqueued record has a delivery report.
    pub fn flush(&self, timeout: Duration) {
        self.producer
            .flush(timeout)
            .unwrap_or_else(|e| panic!("producer flush did not finish within {timeout:?}: {e}"));
        // flush() returns when the queue is empty; serve the final reports.
        self.producer.poll(Duration::ZERO);
    }

    /// Drops queued and in-flight records (they get error delivery reports).
    pub fn purge(&self) {
        self.producer
            .purge(PurgeConfig::default().queue().inflight());
        self.producer.poll(Duration::from_millis(100));
    }

    pub fn delivered_count(&self) -> usize {
        self.deliveries.lock().unwrap().len()
    }

    /// Number of records acknowledged so far (over the producer's lifetime).
    pub fn acked_count(&self) -> usize {
        self.acked.load(Ordering::Relaxed) as usize
    }

    /// A shared counter of acknowledged records, readable from other threads.
    pub fn acked_counter(&self) -> Arc<AtomicU64> {
        self.acked.clone()
    }

    /// Takes all delivery reports collected so far.
    pub fn take_deliveries(&self) -> Vec<Delivery> {
        std::mem::take(&mut *self.deliveries.lock().unwrap())
    }

    /// Produces `records` (indices 0..n), waits for every delivery report and
    /// returns them ordered by index, whatever their outcome.
    pub fn produce_collect(
        &self,
        topic: &str,
        partition: Option<i32>,
        records: &[TestRecord],
        timeout: Duration,
    ) -> Vec<Delivery> {
        let deadline = Instant::now() + timeout;
        let mut local_errors = Vec::new();
        for (i, rec) in records.iter().enumerate() {
            if let Err(e) = self.send(topic, partition, i, rec, deadline) {
                local_errors.push(Delivery {
                    index: i,
                    result: Err(e),
                });
            }
            if i % 1000 == 999 {
                self.producer.poll(Duration::ZERO);
            }
        }
        self.flush(deadline.saturating_duration_since(Instant::now()));
        let mut all = self.take_deliveries();
        all.extend(local_errors);
        all.sort_by_key(|d| d.index);
        assert_eq!(
            all.len(),
            records.len(),
            "expected exactly one delivery report per record"
        );
        all
    }

    /// Produces `records`, asserts every one was acknowledged, returns their
    /// (partition, offset) in record order.
    pub fn produce_all(
        &self,
        topic: &str,
        partition: Option<i32>,
        records: &[TestRecord],
        timeout: Duration,
    ) -> Vec<(i32, i64)> {
        self.produce_collect(topic, partition, records, timeout)
            .into_iter()
            .map(|d| match d.result {
                Ok(po) => po,
                Err(e) => panic!("record #{} to {topic} was not acknowledged: {e}", d.index),
            })
            .collect()
    }
}
