//! The broker as the group coordinator's [`PartitionWriter`]: `__consumer_offsets` is an
//! ordinary replicated topic of this node, written with acks=all semantics.

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError as E;

use crate::broker::{Broker, BrokerError, NewTopic};
use crate::error_code::ErrorCode;
use crate::group::storage::OFFSETS_TOPIC;
use crate::group::{PartitionWriter, WriteError};
use crate::log::batch;
use crate::replication::Appended;

fn write_error(e: BrokerError) -> WriteError {
    WriteError::new(ErrorCode::from_wire(e.kafka_error_code()), e.to_string())
}

impl PartitionWriter for Broker {
    type Appended = Appended;

    fn append(&self, partition: i32, buf: &mut BytesMut) -> Result<(i64, Appended), WriteError> {
        let (p, leader_epoch) = self
            .leader_partition(OFFSETS_TOPIC, partition)
            .map_err(write_error)?;
        let min_insync_replicas = self
            .topic(OFFSETS_TOPIC)
            .and_then(|t| t.config.get("min.insync.replicas").parse().ok())
            .unwrap_or(1);
        let headers = batch::split_and_validate(buf, usize::MAX)
            .map_err(|e| WriteError::new(E::CorruptMessage, format!("group records: {e}")))?;
        let info = Broker::append(self, &p, buf, &headers, None).map_err(write_error)?;
        Ok((
            info.last_offset,
            Appended {
                partition: p,
                leader_epoch,
                last_offset: info.last_offset,
                min_insync_replicas,
            },
        ))
    }

    fn log_offsets(&self, partition: i32) -> Result<(i64, i64), WriteError> {
        let p = self
            .partition(OFFSETS_TOPIC, partition)
            .map_err(write_error)?;
        let log = p.log();
        Ok((log.log_start_offset(), log.log_end_offset()))
    }

    fn read(
        &self,
        partition: i32,
        offset: i64,
        max_bytes: usize,
        end: i64,
    ) -> Result<Bytes, WriteError> {
        let p = self
            .partition(OFFSETS_TOPIC, partition)
            .map_err(write_error)?;
        let bytes = p.log().read(offset, max_bytes, end);
        bytes.map_err(|e| write_error(e.into()))
    }

    fn delete_records(&self, partition: i32, offset: i64) -> Result<i64, WriteError> {
        Broker::delete_records(self, OFFSETS_TOPIC, partition, offset).map_err(write_error)
    }

    async fn wait_replicated(
        &self,
        appended: &Appended,
        deadline: tokio::time::Instant,
    ) -> ErrorCode {
        ErrorCode::from_wire(Broker::wait_replicated(self, appended, deadline).await)
    }

    fn offsets_topic_exists(&self) -> bool {
        self.topic(OFFSETS_TOPIC).is_some()
    }

    /// The replication factor is `offsets_topic_replication_factor` capped by the brokers
    /// registered (Kafka refuses instead; a small site should still get groups).
    async fn create_offsets_topic(
        &self,
        partitions: i32,
        configs: &[(&str, &str)],
    ) -> Result<(), WriteError> {
        let available = self.controller().image().active_brokers().len();
        let replication_factor = self
            .config()
            .offsets_topic_replication_factor
            .min(i16::try_from(available).unwrap_or(i16::MAX))
            .max(1);
        let created = self
            .create_topic(&NewTopic {
                name: OFFSETS_TOPIC.to_string(),
                num_partitions: partitions,
                replication_factor,
                configs: configs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                assignment: None,
            })
            .await;
        match created {
            Ok(_) => Ok(()),
            // Another node created it first.
            Err(BrokerError::TopicAlreadyExists(_)) => Ok(()),
            Err(BrokerError::Refused { code, .. }) if code == E::TopicAlreadyExists.code() => {
                Ok(())
            }
            Err(e) => Err(write_error(e)),
        }
    }

    fn partition_exists(&self, topic: &str, partition: i32) -> bool {
        Broker::partition_exists(self, topic, partition)
    }
}
