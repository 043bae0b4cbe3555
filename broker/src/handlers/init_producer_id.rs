//! InitProducerId: hands an idempotent producer its producer id and epoch.
//!
//! As Kafka's `TransactionCoordinator.handleInitProducerId` for a null transactional id: every
//! request gets a fresh producer id with epoch 0, whatever producer id and epoch it carries
//! (KIP-360 clients send their current ones when they want to bump the epoch; for a
//! non-transactional producer Kafka answers with a new id, which serves the same purpose).
//! Transactions are not supported: a transactional id is refused with INVALID_REQUEST.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse};

use crate::broker::Broker;
use crate::log::producer_state::{NO_PRODUCER_EPOCH, NO_PRODUCER_ID};

/// Answers an InitProducerId request.
pub async fn handle(
    broker: &Broker,
    req: InitProducerIdRequest,
    _version: i16,
) -> InitProducerIdResponse {
    let refuse = |code: i16| {
        InitProducerIdResponse::default()
            .with_error_code(code)
            .with_producer_id(NO_PRODUCER_ID.into())
            .with_producer_epoch(NO_PRODUCER_EPOCH)
    };
    // Kafka's KafkaApis: the KIP-360 producer id and epoch come together or not at all.
    let has_id = i64::from(req.producer_id) != NO_PRODUCER_ID;
    let has_epoch = req.producer_epoch != NO_PRODUCER_EPOCH;
    if has_id != has_epoch {
        tracing::debug!(
            producer_id = i64::from(req.producer_id),
            producer_epoch = req.producer_epoch,
            "InitProducerId refused: producer id and epoch must both be set or both be -1"
        );
        return refuse(ResponseError::InvalidRequest.code());
    }
    if let Some(transactional_id) = &req.transactional_id {
        tracing::warn!(transactional_id = %transactional_id.0,
            "InitProducerId refused with INVALID_REQUEST: strait does not support transactions \
             (only idempotent producers, with no transactional.id)");
        return refuse(ResponseError::InvalidRequest.code());
    }
    match broker.generate_producer_id().await {
        Ok(producer_id) => {
            tracing::debug!(producer_id, "InitProducerId: new idempotent producer");
            InitProducerIdResponse::default()
                .with_producer_id(producer_id.into())
                .with_producer_epoch(0)
        }
        Err(e) => {
            // Kafka answers a failed id allocation with UNKNOWN_SERVER_ERROR.
            tracing::error!(error = %e, "InitProducerId: cannot allocate a producer id");
            refuse(ResponseError::UnknownServerError.code())
        }
    }
}
