//! Checks on untrusted Kafka-protocol bytes before `kafka-protocol` decodes them.
//!
//! `kafka-protocol` 0.18 reserves every array from the count it reads off the wire
//! (`Vec::with_capacity(n)`) before it reads an element, so a hundred-byte request claiming two
//! billion elements makes it ask for hundreds of gigabytes, and an allocation failure aborts the
//! process (it is not a panic that a task boundary could catch). No release fixes this yet, and
//! strait keeps no patched copy of the crate, so every message from a peer is first walked
//! against its layout ([`schema`], [`messages`]): every count and length must fit in the bytes
//! that are left before the decoder sees the message. [`records`] does the same for the records
//! inside a record batch, which the crate decodes separately.

pub(crate) mod records;
pub mod schema;

#[rustfmt::skip]
mod messages;

#[cfg(test)]
mod tests;

use kafka_protocol::messages::ApiKey;

pub use schema::{Problem, WireError};

/// The layout of a request body of `key`, for every API the broker serves.
fn request_layout(key: ApiKey) -> Option<&'static schema::Schema> {
    use messages::*;
    Some(match key {
        ApiKey::Produce => &PRODUCE_REQUEST,
        ApiKey::Fetch => &FETCH_REQUEST,
        ApiKey::ListOffsets => &LIST_OFFSETS_REQUEST,
        ApiKey::Metadata => &METADATA_REQUEST,
        ApiKey::ApiVersions => &API_VERSIONS_REQUEST,
        ApiKey::CreateTopics => &CREATE_TOPICS_REQUEST,
        ApiKey::DeleteTopics => &DELETE_TOPICS_REQUEST,
        ApiKey::FindCoordinator => &FIND_COORDINATOR_REQUEST,
        ApiKey::JoinGroup => &JOIN_GROUP_REQUEST,
        ApiKey::SyncGroup => &SYNC_GROUP_REQUEST,
        ApiKey::Heartbeat => &HEARTBEAT_REQUEST,
        ApiKey::LeaveGroup => &LEAVE_GROUP_REQUEST,
        ApiKey::OffsetCommit => &OFFSET_COMMIT_REQUEST,
        ApiKey::OffsetFetch => &OFFSET_FETCH_REQUEST,
        ApiKey::OffsetDelete => &OFFSET_DELETE_REQUEST,
        ApiKey::ListGroups => &LIST_GROUPS_REQUEST,
        ApiKey::DescribeGroups => &DESCRIBE_GROUPS_REQUEST,
        ApiKey::DeleteGroups => &DELETE_GROUPS_REQUEST,
        ApiKey::InitProducerId => &INIT_PRODUCER_ID_REQUEST,
        ApiKey::DeleteRecords => &DELETE_RECORDS_REQUEST,
        ApiKey::DescribeConfigs => &DESCRIBE_CONFIGS_REQUEST,
        ApiKey::AlterConfigs => &ALTER_CONFIGS_REQUEST,
        ApiKey::CreatePartitions => &CREATE_PARTITIONS_REQUEST,
        ApiKey::IncrementalAlterConfigs => &INCREMENTAL_ALTER_CONFIGS_REQUEST,
        ApiKey::OffsetForLeaderEpoch => &OFFSET_FOR_LEADER_EPOCH_REQUEST,
        _ => return None,
    })
}

/// The layout of a response body of `key`, for the responses a follower decodes.
fn response_layout(key: ApiKey) -> Option<&'static schema::Schema> {
    use messages::*;
    Some(match key {
        ApiKey::Fetch => &FETCH_RESPONSE,
        ApiKey::OffsetForLeaderEpoch => &OFFSET_FOR_LEADER_EPOCH_RESPONSE,
        _ => return None,
    })
}

/// Why a message may not be handed to the decoder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// strait has no layout for this message, so it does not decode it.
    #[error("no layout for {0:?}")]
    Unchecked(ApiKey),
    /// A length or count does not fit.
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// Checks a request body (the bytes after the request header) of `key` at `version`.
pub fn check_request(key: ApiKey, version: i16, body: &[u8]) -> Result<(), CheckError> {
    let layout = request_layout(key).ok_or(CheckError::Unchecked(key))?;
    schema::walk(layout, version, body)?;
    Ok(())
}

/// Checks a response body (the bytes after the response header) of `key` at `version`.
pub fn check_response(key: ApiKey, version: i16, body: &[u8]) -> Result<(), CheckError> {
    let layout = response_layout(key).ok_or(CheckError::Unchecked(key))?;
    schema::walk(layout, version, body)?;
    Ok(())
}

/// Checks a consumer-protocol subscription (a JoinGroup member's metadata) at `version`.
pub(crate) fn check_subscription(version: i16, bytes: &[u8]) -> Result<(), WireError> {
    schema::walk(&messages::CONSUMER_PROTOCOL_SUBSCRIPTION, version, bytes).map(|_| ())
}
