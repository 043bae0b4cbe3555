//! Every way untrusted bytes enter the broker's decoders, as plain functions over a byte slice:
//! the entry points of the fuzz targets in `fuzz/` and of the regression test that replays their
//! corpus in the normal suite. Each does what the broker does with such bytes, minus the I/O,
//! and reports refusal as an `Err` (a refusal is a correct answer; only a crash, a hang or an
//! allocation out of proportion to the input is a finding).

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Decodable;

use crate::log::batch;

/// The most a record set may expand to when decompressed; a replay may allow for it.
pub use crate::log::batch::DECOMPRESSED_RECORDS_BYTES_MAX;

fn dec<T: Decodable>(body: &mut Bytes, version: i16) -> Result<(), String> {
    T::decode(body, version)
        .map(drop)
        .map_err(|e| format!("{e:#}"))
}

/// A request frame (everything after the 4-byte length) as `handlers::dispatch` takes it apart:
/// API key and version, header, the walk, then the body decode by kafka-protocol.
pub fn request_frame(frame: &[u8]) -> Result<(), String> {
    if frame.len() < 8 {
        return Err("too short".into());
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let key = ApiKey::try_from(raw_key).map_err(|_| format!("unknown api key {raw_key}"))?;
    let (min, max) =
        crate::handlers::supported_range(key).ok_or_else(|| format!("{key:?} not served"))?;
    if version < min || version > max {
        return Err(format!("{key:?} v{version} not served"));
    }
    let mut body = Bytes::copy_from_slice(frame);
    RequestHeader::decode(&mut body, key.request_header_version(version))
        .map_err(|e| format!("header: {e:#}"))?;
    crate::wire::check_request(key, version, &body).map_err(|e| e.to_string())?;
    let b = &mut body;
    match key {
        ApiKey::Produce => dec::<ProduceRequest>(b, version),
        ApiKey::Fetch => dec::<FetchRequest>(b, version),
        ApiKey::ListOffsets => dec::<ListOffsetsRequest>(b, version),
        ApiKey::Metadata => dec::<MetadataRequest>(b, version),
        ApiKey::ApiVersions => dec::<ApiVersionsRequest>(b, version),
        ApiKey::CreateTopics => dec::<CreateTopicsRequest>(b, version),
        ApiKey::DeleteTopics => dec::<DeleteTopicsRequest>(b, version),
        ApiKey::FindCoordinator => dec::<FindCoordinatorRequest>(b, version),
        ApiKey::JoinGroup => dec::<JoinGroupRequest>(b, version),
        ApiKey::SyncGroup => dec::<SyncGroupRequest>(b, version),
        ApiKey::Heartbeat => dec::<HeartbeatRequest>(b, version),
        ApiKey::LeaveGroup => dec::<LeaveGroupRequest>(b, version),
        ApiKey::OffsetCommit => dec::<OffsetCommitRequest>(b, version),
        ApiKey::OffsetFetch => dec::<OffsetFetchRequest>(b, version),
        ApiKey::OffsetDelete => dec::<OffsetDeleteRequest>(b, version),
        ApiKey::ListGroups => dec::<ListGroupsRequest>(b, version),
        ApiKey::DescribeGroups => dec::<DescribeGroupsRequest>(b, version),
        ApiKey::DeleteGroups => dec::<DeleteGroupsRequest>(b, version),
        ApiKey::InitProducerId => dec::<InitProducerIdRequest>(b, version),
        ApiKey::DeleteRecords => dec::<DeleteRecordsRequest>(b, version),
        ApiKey::DescribeConfigs => dec::<DescribeConfigsRequest>(b, version),
        ApiKey::AlterConfigs => dec::<AlterConfigsRequest>(b, version),
        ApiKey::CreatePartitions => dec::<CreatePartitionsRequest>(b, version),
        ApiKey::IncrementalAlterConfigs => dec::<IncrementalAlterConfigsRequest>(b, version),
        ApiKey::OffsetForLeaderEpoch => dec::<OffsetForLeaderEpochRequest>(b, version),
        other => Err(format!("{other:?} has no decoder here")),
    }
}

/// A response a follower reads from its leader: the first byte picks Fetch (even) or
/// OffsetForLeaderEpoch (odd) at the version the fetcher speaks, the rest is the body.
pub fn leader_response(data: &[u8]) -> Result<(), String> {
    let Some((&pick, body)) = data.split_first() else {
        return Err("empty".into());
    };
    let (key, version) = if pick % 2 == 0 {
        (ApiKey::Fetch, 12)
    } else {
        (ApiKey::OffsetForLeaderEpoch, 4)
    };
    crate::wire::check_response(key, version, body).map_err(|e| e.to_string())?;
    let mut b = Bytes::copy_from_slice(body);
    match key {
        ApiKey::Fetch => {
            let resp = FetchResponse::decode(&mut b, version).map_err(|e| format!("{e:#}"))?;
            // What the follower then does with each partition's records.
            for topic in &resp.responses {
                for partition in &topic.partitions {
                    if let Some(records) = &partition.records {
                        let _ = batch::split_fetched(records);
                    }
                }
            }
            Ok(())
        }
        _ => dec::<OffsetForLeaderEpochResponse>(&mut b, version),
    }
}

/// A consumer-protocol subscription (JoinGroup member metadata): version, then the body, as
/// the group coordinator reads it.
pub fn subscription(data: &[u8]) -> Result<(), String> {
    if data.len() < 2 {
        return Err("too short".into());
    }
    let version = i16::from_be_bytes([data[0], data[1]]).clamp(0, 3);
    crate::wire::check_subscription(version, &data[2..]).map_err(|e| e.to_string())?;
    let mut b = Bytes::copy_from_slice(&data[2..]);
    dec::<ConsumerProtocolSubscription>(&mut b, version)
}

/// A produced record set: validated as Produce does, then every batch read as the broker reads
/// stored batches (timestamp search, the coordinator's decode of `__consumer_offsets`).
pub fn record_set(data: &[u8]) -> Result<(), String> {
    let headers = batch::split_and_validate(data, usize::MAX).map_err(|e| e.to_string())?;
    let mut at = 0usize;
    for header in headers {
        let one = &data[at..at + header.total_len_bytes()];
        at += header.total_len_bytes();
        let _ = batch::first_record_at_or_after(one, i64::MIN);
        let _ = batch::first_record_at_or_after(one, header.max_timestamp);
        let _ = batch::decode_stored_records(Bytes::copy_from_slice(one));
    }
    Ok(())
}

/// A frame on the controller listener, decoded as the listener does.
pub fn controller_frame(data: &[u8]) -> Result<(), String> {
    serde_json::from_slice::<crate::controller::rpc::RpcRequest>(data)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// A node config file's text.
pub fn node_config(data: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(data).map_err(|e| e.to_string())?;
    crate::config::NodeConfig::parse(text, std::path::Path::new("fuzz.yaml"))
        .map(drop)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::protocol::Encodable;

    #[test]
    fn a_real_request_goes_all_the_way_through() {
        let mut buf = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(ApiKey::Metadata as i16)
            .with_request_api_version(12)
            .with_correlation_id(1)
            .encode(&mut buf, ApiKey::Metadata.request_header_version(12))
            .unwrap();
        MetadataRequest::default().encode(&mut buf, 12).unwrap();
        assert_eq!(request_frame(&buf), Ok(()));
        assert!(request_frame(&buf[..buf.len() - 1]).is_err());
    }
}
