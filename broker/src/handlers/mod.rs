//! Request handlers: decoded request in, encoded response out, no sockets.
//!
//! `dispatch` is the one entry point the network layer calls for a frame. It decides, as Kafka's
//! SocketServer and KafkaApis do, between three outcomes: a response, no response (acks=0
//! produce), or closing the connection (an API we do not serve, an unsupported version of
//! anything but ApiVersions, or a body that does not decode).

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::broker::Broker;

#[cfg(test)]
mod admin_tests;
pub mod alter_configs;
pub mod api_versions;
pub mod config_resource;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_configs;
pub mod fetch;
pub mod groups;
pub mod init_producer_id;
pub mod list_offsets;
pub mod metadata;
pub mod offset_for_leader_epoch;
pub mod produce;

/// The APIs this broker serves, with the version range of each. Anything else closes the
/// connection, as Kafka does for an API that is not enabled on a listener.
pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    // v0-v5: every version kafka-protocol 0.18 can decode (its v6 is response-only).
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    // v2-v4: the versions kafka-protocol 0.18 can decode.
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
];

/// The version range this broker serves for `key`, if any.
pub fn supported_range(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED_APIS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|&(_, min, max)| (min, max))
}

/// Why a request ends the connection instead of getting a response.
#[derive(Debug, thiserror::Error)]
pub enum CloseReason {
    /// Fewer bytes than a request header's fixed part.
    #[error("frame of {0} bytes is too short for a request header")]
    TooShort(usize),
    /// The API key is not one Kafka defines.
    #[error("unknown api key {0}")]
    UnknownApiKey(i16),
    /// The API exists but this broker does not serve it.
    #[error("api {0:?} is not enabled on this broker")]
    ApiNotEnabled(ApiKey),
    /// The version is outside what we advertise (ApiVersions is answered instead).
    #[error("api {key:?} version {version} is not supported (supported: {min}..={max})")]
    UnsupportedVersion {
        /// API.
        key: ApiKey,
        /// Requested version.
        version: i16,
        /// Lowest supported.
        min: i16,
        /// Highest supported.
        max: i16,
    },
    /// Header or body failed to decode.
    #[error("malformed {key:?} v{version} request: {reason}")]
    Malformed {
        /// API.
        key: ApiKey,
        /// Version.
        version: i16,
        /// Decoder message.
        reason: String,
    },
    /// A response could not be encoded (a bug: fields out of range for the version).
    #[error("cannot encode {key:?} v{version} response: {reason}")]
    Encode {
        /// API.
        key: ApiKey,
        /// Version.
        version: i16,
        /// Encoder message.
        reason: String,
    },
}

/// What to do with one request frame.
#[derive(Debug)]
pub enum Outcome {
    /// Send this frame: length prefix, header and body.
    Respond(BytesMut),
    /// Send nothing (acks=0 produce).
    NoResponse,
}

/// A decoded request body, typed per API.
pub(crate) fn decode_body<T: Decodable>(
    key: ApiKey,
    version: i16,
    body: &mut Bytes,
) -> Result<T, CloseReason> {
    T::decode(body, version).map_err(|e| CloseReason::Malformed {
        key,
        version,
        reason: e.to_string(),
    })
}

/// Encodes a response header and body for `key`/`version`.
pub(crate) fn encode_response<T: Encodable>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<BytesMut, CloseReason> {
    let header_version = if key == ApiKey::ApiVersions {
        // KIP-511: ApiVersions responses always use header v0 so any client can read them.
        0
    } else {
        key.response_header_version(version)
    };
    let err = |reason: String| CloseReason::Encode {
        key,
        version,
        reason,
    };
    // Sized up front (no regrowth copies) from the recycled buffers (no page faults); the
    // server recycles it once written.
    let body_bytes = body.compute_size(version).map_err(|e| err(e.to_string()))?;
    let mut buf = crate::buffers::take(4 + 16 + body_bytes);
    // Reserve the length prefix; filled in once the size is known, so the frame goes out in
    // one write without copying the body.
    buf.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, header_version)
        .map_err(|e| err(e.to_string()))?;
    body.encode(&mut buf, version)
        .map_err(|e| err(e.to_string()))?;
    let len = i32::try_from(buf.len() - 4)
        .map_err(|_| err(format!("response of {} bytes exceeds a frame", buf.len())))?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

/// Handles one request frame (everything after the 4-byte length) from an unknown peer.
#[cfg(test)]
pub async fn dispatch(broker: &Broker, frame: Bytes) -> Result<Outcome, CloseReason> {
    dispatch_from(broker, frame, None).await
}

/// Handles one request frame from `peer` (recorded for group members, as Kafka's client host).
///
/// The frame is a slice of its connection's read buffer (see `server`): a handler that keeps
/// anything of the request beyond the request (a member's metadata, say) copies it, or it
/// keeps that whole buffer alive and the connection allocates a new one.
pub async fn dispatch_from(
    broker: &Broker,
    mut frame: Bytes,
    peer: Option<std::net::SocketAddr>,
) -> Result<Outcome, CloseReason> {
    if frame.len() < 8 {
        return Err(CloseReason::TooShort(frame.len()));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let key = ApiKey::try_from(raw_key).map_err(|_| CloseReason::UnknownApiKey(raw_key))?;
    let (min, max) = supported_range(key).ok_or(CloseReason::ApiNotEnabled(key))?;
    if version < min || version > max {
        if key == ApiKey::ApiVersions {
            // Kafka answers an unknown ApiVersions version with a v0 body carrying
            // UNSUPPORTED_VERSION and the full list, so the client can pick a version.
            let body = api_versions::unsupported_version_response();
            return encode_response(key, 0, correlation_id, &body).map(Outcome::Respond);
        }
        return Err(CloseReason::UnsupportedVersion {
            key,
            version,
            min,
            max,
        });
    }
    let header_version = key.request_header_version(version);
    let header =
        RequestHeader::decode(&mut frame, header_version).map_err(|e| CloseReason::Malformed {
            key,
            version,
            reason: format!("header: {e}"),
        })?;
    // kafka-protocol reserves arrays from counts read off the wire; walk the body first so a
    // count the frame cannot hold never reaches it (see `wire`).
    crate::wire::check_request(key, version, &frame).map_err(|e| CloseReason::Malformed {
        key,
        version,
        reason: e.to_string(),
    })?;
    let body = &mut frame;
    let cid = header.correlation_id;
    let respond = |resp: Result<BytesMut, CloseReason>| resp.map(Outcome::Respond);
    match key {
        ApiKey::ApiVersions => {
            let req = decode_body(key, version, body)?;
            respond(encode_response(
                key,
                version,
                cid,
                &api_versions::handle(&req, version),
            ))
        }
        ApiKey::Metadata => {
            let req = decode_body(key, version, body)?;
            let resp = metadata::handle(broker, req, version).await;
            respond(encode_response(key, version, cid, &resp))
        }
        ApiKey::Produce => {
            let req = decode_body(key, version, body)?;
            let client_id = header.client_id.as_ref().map_or("", |c| c.as_str());
            match produce::handle(broker, req, version, client_id).await {
                Some(resp) => respond(encode_response(key, version, cid, &resp)),
                None => Ok(Outcome::NoResponse),
            }
        }
        ApiKey::Fetch => {
            let req = decode_body(key, version, body)?;
            let mut resp = fetch::handle(broker, req, version).await;
            let out = encode_response(key, version, cid, &resp);
            fetch::recycle_records(&mut resp);
            respond(out)
        }
        ApiKey::ListOffsets => {
            let req = decode_body(key, version, body)?;
            let resp = list_offsets::handle(broker, req, version);
            respond(encode_response(key, version, cid, &resp))
        }
        ApiKey::CreateTopics => {
            let req = decode_body(key, version, body)?;
            let resp = create_topics::handle(broker, req, version).await;
            respond(encode_response(key, version, cid, &resp))
        }
        ApiKey::DeleteTopics => {
            let req = decode_body(key, version, body)?;
            let resp = delete_topics::handle(broker, req, version).await;
            respond(encode_response(key, version, cid, &resp))
        }
        ApiKey::FindCoordinator => {
            let req = decode_body(key, version, body)?;
            let resp = groups::find_coordinator(broker, req, version).await;
            respond(encode_response(key, version, cid, &resp))
        }
        ApiKey::JoinGroup => {
            let req = decode_body(key, version, body)?;
            let client = groups::Client {
                client_id: header
                    .client_id
                    .as_ref()
                    .map(|c| c.to_string())
                    .unwrap_or_default(),
                host: peer.map(|p| format!("/{}", p.ip())).unwrap_or_default(),
            };
            let resp = groups::join_group(broker, req, version, &client).await;
            respond(encode_response(key, version, cid, &resp))
        }
        ApiKey::SyncGroup => {
            let req = decode_body(key, version, body)?;
            let resp = groups::sync_group(broker, req, version).await;
            respond(encode_response(key, version, cid, &resp))
        }
        ApiKey::Heartbeat => {
            let req = decode_body(key, version, body)?;
            respond(encode_response(
                key,
                version,
                cid,
                &groups::heartbeat(broker, req),
            ))
        }
        ApiKey::LeaveGroup => {
            let req = decode_body(key, version, body)?;
            let resp = groups::leave_group(broker, req, version);
            respond(encode_response(key, version, cid, &resp))
        }
        ApiKey::OffsetCommit => {
            let req = decode_body(key, version, body)?;
            let resp = groups::offset_commit(broker, req, version).await;
            respond(encode_response(key, version, cid, &resp))
        }
        ApiKey::OffsetFetch => {
            let req = decode_body(key, version, body)?;
            let resp = groups::offset_fetch(broker, req, version);
            respond(encode_response(key, version, cid, &resp))
        }
        ApiKey::OffsetDelete => {
            let req = decode_body(key, version, body)?;
            let resp = groups::offset_delete(broker, req);
            respond(encode_response(key, version, cid, &resp))
        }
        ApiKey::ListGroups => {
            let req = decode_body(key, version, body)?;
            let resp = groups::list_groups(broker, req, version);
            respond(encode_response(key, version, cid, &resp))
        }
        ApiKey::DescribeGroups => {
            let req = decode_body(key, version, body)?;
            let resp = groups::describe_groups(broker, req, version);
            respond(encode_response(key, version, cid, &resp))
        }
        ApiKey::DeleteGroups => {
            let req = decode_body(key, version, body)?;
            let resp = groups::delete_groups(broker, req);
            respond(encode_response(key, version, cid, &resp))
        }
        ApiKey::InitProducerId => {
            let req = decode_body(key, version, body)?;
            let resp = init_producer_id::handle(broker, req, version).await;
            respond(encode_response(key, version, cid, &resp))
        }
        ApiKey::DescribeConfigs => {
            let req = decode_body(key, version, body)?;
            let resp = describe_configs::handle(broker, req, version);
            respond(encode_response(key, version, cid, &resp))
        }
        ApiKey::AlterConfigs => {
            let req = decode_body(key, version, body)?;
            let resp = alter_configs::handle_alter(broker, req).await;
            respond(encode_response(key, version, cid, &resp))
        }
        ApiKey::IncrementalAlterConfigs => {
            let req = decode_body(key, version, body)?;
            let resp = alter_configs::handle_incremental(broker, req).await;
            respond(encode_response(key, version, cid, &resp))
        }
        ApiKey::CreatePartitions => {
            let req = decode_body(key, version, body)?;
            let resp = create_partitions::handle(broker, req).await;
            respond(encode_response(key, version, cid, &resp))
        }
        ApiKey::DeleteRecords => {
            let req = decode_body(key, version, body)?;
            let resp = delete_records::handle(broker, req);
            respond(encode_response(key, version, cid, &resp))
        }
        ApiKey::OffsetForLeaderEpoch => {
            let req = decode_body(key, version, body)?;
            let resp = offset_for_leader_epoch::handle(broker, req);
            respond(encode_response(key, version, cid, &resp))
        }
        other => Err(CloseReason::ApiNotEnabled(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NodeConfig;
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{
        ApiVersionsRequest, ApiVersionsResponse, CreateTopicsRequest, CreateTopicsResponse,
        FetchRequest, FetchResponse, InitProducerIdRequest, InitProducerIdResponse,
        ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse, ProduceRequest,
        ProduceResponse, TopicName, TransactionalId,
    };
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    async fn broker(dir: &std::path::Path) -> std::sync::Arc<Broker> {
        let yaml = format!(
            "node_id: 1\nlisten: 127.0.0.1:0\ndata_dir: {}\n",
            dir.display()
        );
        let config = NodeConfig::parse(&yaml, std::path::Path::new("test.yaml")).unwrap();
        crate::node::open_standalone(config).await.unwrap()
    }

    fn frame<T: Encodable>(key: ApiKey, version: i16, body: &T) -> Bytes {
        let mut buf = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(7)
            .with_client_id(Some(StrBytes::from_static_str("unit")))
            .encode(&mut buf, key.request_header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    /// Sends a request through `dispatch` and decodes the response at `version`.
    async fn call<Req: Encodable, Resp: Decodable>(
        b: &Broker,
        key: ApiKey,
        version: i16,
        req: &Req,
    ) -> Resp {
        let Outcome::Respond(out) = dispatch(b, frame(key, version, req)).await.unwrap() else {
            panic!("expected a response");
        };
        let mut bytes = out.freeze();
        let len = i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        assert_eq!(len as usize, bytes.len() - 4, "length prefix");
        let _ = bytes.split_to(4);
        let header_version = if key == ApiKey::ApiVersions {
            0
        } else {
            key.response_header_version(version)
        };
        let header = ResponseHeader::decode(&mut bytes, header_version).unwrap();
        assert_eq!(header.correlation_id, 7);
        Resp::decode(&mut bytes, version).unwrap()
    }

    /// The frame that aborted a node: a Fetch v4 whose topics array claims i32::MAX elements
    /// (kafka-protocol reserved them all before reading one). Now the connection is closed
    /// with the path of the count, and the broker goes on answering.
    #[tokio::test]
    async fn a_fetch_claiming_two_billion_topics_is_refused_before_decoding() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path()).await;
        let mut hostile = BytesMut::from(&frame(ApiKey::Fetch, 4, &FetchRequest::default())[..]);
        hostile.truncate(hostile.len() - 4);
        hostile.put_i32(i32::MAX);
        match dispatch(&b, hostile.freeze()).await {
            Err(CloseReason::Malformed { key, reason, .. }) => {
                assert_eq!(key, ApiKey::Fetch);
                assert!(
                    reason.starts_with("FetchRequest.topics: array of 2147483647"),
                    "{reason}"
                );
            }
            other => panic!("expected a closed connection, got {other:?}"),
        }
        let ok: ApiVersionsResponse =
            call(&b, ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()).await;
        assert_eq!(ok.error_code, 0);
    }

    fn batch(values: &[&str]) -> Bytes {
        producer_batch(-1, -1, -1, values)
    }

    /// A batch from producer `producer_id` at `epoch`, sequences from `base_sequence` on.
    fn producer_batch(producer_id: i64, epoch: i16, base_sequence: i32, values: &[&str]) -> Bytes {
        let records: Vec<Record> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id,
                producer_epoch: epoch,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: if base_sequence < 0 {
                    -1
                } else {
                    base_sequence + i as i32
                },
                timestamp: 1_000 + i as i64,
                key: None,
                value: Some(Bytes::copy_from_slice(v.as_bytes())),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        buf.freeze()
    }

    #[tokio::test]
    async fn api_versions_lists_supported_apis_and_rejects_unknown_versions() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path()).await;
        let resp: ApiVersionsResponse =
            call(&b, ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()).await;
        assert_eq!(resp.error_code, 0);
        assert_eq!(resp.api_keys.len(), SUPPORTED_APIS.len());
        // A version we do not serve: answered in v0 with error 35 and the list.
        let mut raw = BytesMut::new();
        raw.put_i16(ApiKey::ApiVersions as i16);
        raw.put_i16(99);
        raw.put_i32(7);
        raw.put_i16(-1);
        let Outcome::Respond(out) = dispatch(&b, raw.freeze()).await.unwrap() else {
            panic!()
        };
        let mut bytes = out.freeze().split_off(4);
        assert_eq!(
            ResponseHeader::decode(&mut bytes, 0)
                .unwrap()
                .correlation_id,
            7
        );
        let resp = ApiVersionsResponse::decode(&mut bytes, 0).unwrap();
        assert_eq!(resp.error_code, 35);
        assert!(resp
            .api_keys
            .iter()
            .any(|k| k.api_key == ApiKey::Produce as i16 && k.max_version == 9));
    }

    #[tokio::test]
    async fn unserved_apis_and_malformed_frames_close_the_connection() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path()).await;
        let acls = frame(
            ApiKey::DescribeAcls,
            1,
            &kafka_protocol::messages::DescribeAclsRequest::default(),
        );
        assert!(matches!(
            dispatch(&b, acls).await,
            Err(CloseReason::ApiNotEnabled(ApiKey::DescribeAcls))
        ));
        let mut unknown = BytesMut::new();
        unknown.put_i16(999);
        unknown.put_i16(0);
        unknown.put_i32(1);
        assert!(matches!(
            dispatch(&b, unknown.freeze()).await,
            Err(CloseReason::UnknownApiKey(999))
        ));
        let meta = frame(ApiKey::Metadata, 12, &MetadataRequest::default());
        let truncated = meta.slice(..meta.len() - 3);
        assert!(matches!(
            dispatch(&b, truncated).await,
            Err(CloseReason::Malformed { .. })
        ));
        assert!(matches!(
            dispatch(&b, Bytes::from_static(b"abc")).await,
            Err(CloseReason::TooShort(3))
        ));
    }

    #[tokio::test]
    async fn every_advertised_version_round_trips_produce_fetch_and_list_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path()).await;
        // The offsets topic exists once a group coordinator was looked up, as in Kafka.
        b.groups().ensure_offsets_topic(&*b).await.unwrap();
        let name = TopicName(StrBytes::from_static_str("t"));
        for v in 2..=7 {
            let req = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(format!("ct{v}"))))
                .with_num_partitions(2)
                .with_replication_factor(1)]);
            let resp: CreateTopicsResponse = call(&b, ApiKey::CreateTopics, v, &req).await;
            assert_eq!(resp.topics[0].error_code, 0, "CreateTopics v{v}");
        }
        for v in 0..=12 {
            let all =
                MetadataRequest::default().with_topics(if v == 0 { Some(vec![]) } else { None });
            let resp: MetadataResponse = call(&b, ApiKey::Metadata, v, &all).await;
            let (internal, user): (Vec<_>, Vec<_>) = resp.topics.iter().partition(|t| {
                let name = t.name.as_ref().unwrap().as_str();
                // is_internal exists from v1 on.
                assert_eq!(v >= 1 && name == "__consumer_offsets", t.is_internal);
                name == "__consumer_offsets"
            });
            assert_eq!(user.len(), 6, "Metadata v{v} lists every topic");
            assert!(user.iter().all(|t| t.partitions.len() == 2));
            let internal: Vec<_> = internal
                .iter()
                .map(|t| t.name.as_ref().unwrap().as_str())
                .collect();
            assert_eq!(internal, vec!["__consumer_offsets"], "Metadata v{v}");
        }
        let req = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
            .with_name(name.clone())
            .with_num_partitions(1)
            .with_replication_factor(1)]);
        let _: CreateTopicsResponse = call(&b, ApiKey::CreateTopics, 7, &req).await;
        let mut expected_offset = 0;
        for v in 3..=9 {
            let req = ProduceRequest::default()
                .with_acks(1)
                .with_timeout_ms(1000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(name.clone())
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch(&["a", "b"])))])]);
            let resp: ProduceResponse = call(&b, ApiKey::Produce, v, &req).await;
            let p = &resp.responses[0].partition_responses[0];
            assert_eq!(
                (p.error_code, p.base_offset),
                (0, expected_offset),
                "Produce v{v}"
            );
            expected_offset += 2;
        }
        for v in 4..=12 {
            let req = FetchRequest::default()
                .with_max_bytes(1 << 20)
                .with_max_wait_ms(0)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(name.clone())
                    .with_partitions(vec![FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(2)
                        .with_partition_max_bytes(1 << 20)])]);
            let resp: FetchResponse = call(&b, ApiKey::Fetch, v, &req).await;
            let p = &resp.responses[0].partitions[0];
            assert_eq!(p.error_code, 0, "Fetch v{v}");
            assert_eq!(p.high_watermark, expected_offset);
            let mut records = p.records.clone().unwrap();
            let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut records).unwrap();
            assert_eq!(
                set.records[0].offset, 2,
                "Fetch v{v} starts at the batch holding offset 2"
            );
        }
        for v in 1..=6 {
            let req = ListOffsetsRequest::default()
                .with_replica_id(kafka_protocol::messages::BrokerId(-1))
                .with_topics(vec![ListOffsetsTopic::default()
                    .with_name(name.clone())
                    .with_partitions(vec![ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-1)])]);
            let resp: ListOffsetsResponse = call(&b, ApiKey::ListOffsets, v, &req).await;
            assert_eq!(
                resp.topics[0].partitions[0].offset, expected_offset,
                "ListOffsets v{v}"
            );
        }
    }

    #[tokio::test]
    async fn corrupt_batches_and_unknown_partitions_get_error_codes_and_append_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path()).await;
        let name = TopicName(StrBytes::from_static_str("t"));
        let _: MetadataResponse = call(
            &b,
            ApiKey::Metadata,
            12,
            &MetadataRequest::default()
                .with_topics(Some(vec![
                    kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                        .with_name(Some(name.clone())),
                ]))
                .with_allow_auto_topic_creation(true),
        )
        .await;
        let mut bad = BytesMut::from(&batch(&["x"])[..]);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        let produce = |records: Bytes, partition: i32| {
            ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(1000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(name.clone())
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(records))])])
        };
        let resp: ProduceResponse = call(&b, ApiKey::Produce, 9, &produce(bad.freeze(), 0)).await;
        assert_eq!(
            resp.responses[0].partition_responses[0].error_code, 2,
            "CORRUPT_MESSAGE"
        );
        assert_eq!(
            b.partition("t", 0).unwrap().high_watermark(),
            0,
            "corrupt batch not appended"
        );
        // acks=0: appended, and no response at all (the client expects none).
        let silent = produce(batch(&["y"]), 0).with_acks(0);
        let out = dispatch(&b, frame(ApiKey::Produce, 9, &silent))
            .await
            .unwrap();
        assert!(
            matches!(out, Outcome::NoResponse),
            "acks=0 gets no response"
        );
        assert_eq!(
            b.partition("t", 0).unwrap().high_watermark(),
            1,
            "acks=0 record appended"
        );
        let resp: ProduceResponse = call(&b, ApiKey::Produce, 9, &produce(batch(&["x"]), 5)).await;
        assert_eq!(
            resp.responses[0].partition_responses[0].error_code, 3,
            "UNKNOWN_TOPIC_OR_PARTITION"
        );
        assert_eq!(
            b.partition("t", 0).unwrap().high_watermark(),
            1,
            "nothing appended for the unknown partition"
        );
    }

    #[tokio::test]
    async fn every_group_api_version_encodes_and_answers() {
        use kafka_protocol::error::ResponseError;
        use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
        use kafka_protocol::messages::leave_group_request::MemberIdentity;
        use kafka_protocol::messages::offset_commit_request::{
            OffsetCommitRequestPartition, OffsetCommitRequestTopic,
        };
        use kafka_protocol::messages::offset_fetch_request::{
            OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
        };
        use kafka_protocol::messages::*;
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path()).await;
        b.create_topic(&crate::broker::NewTopic {
            name: "t".into(),
            num_partitions: 1,
            replication_factor: 1,
            configs: Default::default(),
            assignment: None,
        })
        .await
        .unwrap();
        let g = || GroupId(StrBytes::from_static_str("g"));
        let t = || TopicName(StrBytes::from_static_str("t"));
        for v in 0..=4 {
            let req = if v >= 4 {
                FindCoordinatorRequest::default()
                    .with_coordinator_keys(vec![StrBytes::from_static_str("g")])
            } else {
                FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("g"))
            };
            let r: FindCoordinatorResponse = call(&b, ApiKey::FindCoordinator, v, &req).await;
            let (code, node, port) = if v >= 4 {
                let c = &r.coordinators[0];
                (c.error_code, c.node_id, c.port)
            } else {
                (r.error_code, r.node_id, r.port)
            };
            assert_eq!((code, node.0, port), (0, 1, 9092), "v{v}");
        }
        for v in 0..=9 {
            // A session timeout below the minimum answers at once at every version.
            let req = JoinGroupRequest::default()
                .with_group_id(g())
                .with_session_timeout_ms(1)
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str("range"))]);
            let r: JoinGroupResponse = call(&b, ApiKey::JoinGroup, v, &req).await;
            assert_eq!(
                r.error_code,
                ResponseError::InvalidSessionTimeout.code(),
                "v{v}"
            );
        }
        for v in 4..=9 {
            let req = JoinGroupRequest::default()
                .with_group_id(g())
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(10_000)
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str("range"))]);
            let r: JoinGroupResponse = call(&b, ApiKey::JoinGroup, v, &req).await;
            assert_eq!(r.error_code, ResponseError::MemberIdRequired.code(), "v{v}");
            assert!(
                r.member_id.starts_with("unit-"),
                "v{v}: {}",
                r.member_id.as_str()
            );
        }
        for v in 0..=5 {
            let req = SyncGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("nog")));
            let r: SyncGroupResponse = call(&b, ApiKey::SyncGroup, v, &req).await;
            assert_eq!(r.error_code, ResponseError::UnknownMemberId.code(), "v{v}");
        }
        for v in 0..=4 {
            let req = HeartbeatRequest::default().with_group_id(g());
            let r: HeartbeatResponse = call(&b, ApiKey::Heartbeat, v, &req).await;
            assert_eq!(r.error_code, ResponseError::UnknownMemberId.code(), "v{v}");
        }
        for v in 0..=5 {
            let x = StrBytes::from_static_str("x");
            let req = if v >= 3 {
                LeaveGroupRequest::default()
                    .with_group_id(g())
                    .with_members(vec![MemberIdentity::default().with_member_id(x)])
            } else {
                LeaveGroupRequest::default()
                    .with_group_id(g())
                    .with_member_id(x)
            };
            let r: LeaveGroupResponse = call(&b, ApiKey::LeaveGroup, v, &req).await;
            let code = if v >= 3 {
                r.members[0].error_code
            } else {
                r.error_code
            };
            assert_eq!(code, ResponseError::UnknownMemberId.code(), "v{v}");
        }
        for v in 2..=8 {
            let req = OffsetCommitRequest::default()
                .with_group_id(g())
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![OffsetCommitRequestTopic::default()
                    .with_name(t())
                    .with_partitions(vec![OffsetCommitRequestPartition::default()
                        .with_committed_offset(100 + i64::from(v))])]);
            let r: OffsetCommitResponse = call(&b, ApiKey::OffsetCommit, v, &req).await;
            assert_eq!(r.topics[0].partitions[0].error_code, 0, "v{v}");
        }
        for v in 1..=8 {
            let req = if v >= 8 {
                OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
                    .with_group_id(g())
                    .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                        .with_name(t())
                        .with_partition_indexes(vec![0])]))])
            } else {
                OffsetFetchRequest::default()
                    .with_group_id(g())
                    .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                        .with_name(t())
                        .with_partition_indexes(vec![0])]))
            };
            let r: OffsetFetchResponse = call(&b, ApiKey::OffsetFetch, v, &req).await;
            let offset = if v >= 8 {
                r.groups[0].topics[0].partitions[0].committed_offset
            } else {
                r.topics[0].partitions[0].committed_offset
            };
            assert_eq!(offset, 108, "v{v} reads the last commit");
        }
        let r: ListGroupsResponse =
            call(&b, ApiKey::ListGroups, 0, &ListGroupsRequest::default()).await;
        assert_eq!(r.groups.len(), 1);
        for v in 1..=4 {
            let r: ListGroupsResponse =
                call(&b, ApiKey::ListGroups, v, &ListGroupsRequest::default()).await;
            assert_eq!(r.groups[0].group_id.as_str(), "g", "v{v}");
            if v >= 4 {
                assert_eq!(r.groups[0].group_state.as_str(), "Empty");
            }
        }
        for v in 0..=5 {
            let req = DescribeGroupsRequest::default()
                .with_groups(vec![g(), GroupId(StrBytes::from_static_str("unknown"))]);
            let r: DescribeGroupsResponse = call(&b, ApiKey::DescribeGroups, v, &req).await;
            assert_eq!(r.groups[0].group_state.as_str(), "Empty", "v{v}");
            assert_eq!(r.groups[1].group_state.as_str(), "Dead", "v{v}");
        }
        let req = OffsetDeleteRequest::default()
            .with_group_id(g())
            .with_topics(vec![
                kafka_protocol::messages::offset_delete_request::OffsetDeleteRequestTopic::default(
                )
                .with_name(t())
                .with_partitions(vec![Default::default()]),
            ]);
        let r: OffsetDeleteResponse = call(&b, ApiKey::OffsetDelete, 0, &req).await;
        assert_eq!((r.error_code, r.topics[0].partitions[0].error_code), (0, 0));
        for v in 0..=2 {
            let req = DeleteGroupsRequest::default().with_groups_names(vec![g()]);
            let r: DeleteGroupsResponse = call(&b, ApiKey::DeleteGroups, v, &req).await;
            let expected = if v == 0 {
                0
            } else {
                ResponseError::GroupIdNotFound.code()
            };
            assert_eq!(r.results[0].error_code, expected, "v{v}");
        }
    }

    async fn create_topic(b: &Broker, name: &'static str) {
        let req = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(name)))
            .with_num_partitions(1)
            .with_replication_factor(1)]);
        let resp: CreateTopicsResponse = call(b, ApiKey::CreateTopics, 7, &req).await;
        assert_eq!(resp.topics[0].error_code, 0);
    }

    fn produce_to(topic: &'static str, records: Bytes) -> ProduceRequest {
        ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(1000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str(topic)))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(records))])])
    }

    #[tokio::test]
    async fn init_producer_id_hands_out_fresh_ids_at_every_version() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path()).await;
        let (min, max) = supported_range(ApiKey::InitProducerId).unwrap();
        assert_eq!((min, max), (0, 5));
        let mut seen = Vec::new();
        for v in min..=max {
            let req = InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000);
            let resp: InitProducerIdResponse = call(&b, ApiKey::InitProducerId, v, &req).await;
            assert_eq!(resp.error_code, 0, "InitProducerId v{v}");
            assert_eq!(resp.producer_epoch, 0, "InitProducerId v{v}");
            seen.push(i64::from(resp.producer_id));
        }
        // KIP-360 (v3+): a producer asking to bump its epoch gets a new id, epoch 0, as Kafka
        // answers a producer without a transactional id.
        let req = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_producer_id(seen[0].into())
            .with_producer_epoch(0);
        let resp: InitProducerIdResponse = call(&b, ApiKey::InitProducerId, 4, &req).await;
        assert_eq!((resp.error_code, resp.producer_epoch), (0, 0));
        seen.push(i64::from(resp.producer_id));
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "ids are fresh and increasing: {seen:?}"
        );
        assert!(seen.iter().all(|id| *id >= 0));
        // After a restart, ids continue beyond everything handed out before.
        drop(b);
        let b = broker(dir.path()).await;
        let resp: InitProducerIdResponse = call(
            &b,
            ApiKey::InitProducerId,
            5,
            &InitProducerIdRequest::default().with_transactional_id(None),
        )
        .await;
        assert!(i64::from(resp.producer_id) > *seen.last().unwrap());
    }

    #[tokio::test]
    async fn init_producer_id_refuses_transactions_and_half_kip_360_requests() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path()).await;
        for v in 0..=5 {
            let req = InitProducerIdRequest::default().with_transactional_id(Some(
                TransactionalId(StrBytes::from_static_str("payments-tx")),
            ));
            let resp: InitProducerIdResponse = call(&b, ApiKey::InitProducerId, v, &req).await;
            assert_eq!(resp.error_code, 42, "INVALID_REQUEST at v{v}");
            assert_eq!((i64::from(resp.producer_id), resp.producer_epoch), (-1, -1));
        }
        let req = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_producer_id(5.into())
            .with_producer_epoch(-1);
        let resp: InitProducerIdResponse = call(&b, ApiKey::InitProducerId, 3, &req).await;
        assert_eq!(resp.error_code, 42, "producer id without epoch");
    }

    #[tokio::test]
    async fn produce_answers_duplicates_with_the_original_offset_and_maps_sequence_errors() {
        let dir = tempfile::tempdir().unwrap();
        let b = broker(dir.path()).await;
        create_topic(&b, "idem").await;
        let resp: InitProducerIdResponse = call(
            &b,
            ApiKey::InitProducerId,
            4,
            &InitProducerIdRequest::default().with_transactional_id(None),
        )
        .await;
        let pid = i64::from(resp.producer_id);
        for v in 3..=9 {
            let partition = || b.partition("idem", 0).unwrap();
            let start = partition().high_watermark();
            // Each version gets its own producer epoch, so every round starts at sequence 0.
            let epoch = v;
            let first = producer_batch(pid, epoch, 0, &["a", "b"]);
            let resp: ProduceResponse =
                call(&b, ApiKey::Produce, v, &produce_to("idem", first.clone())).await;
            let p = &resp.responses[0].partition_responses[0];
            assert_eq!((p.error_code, p.base_offset), (0, start), "Produce v{v}");
            let resp: ProduceResponse =
                call(&b, ApiKey::Produce, v, &produce_to("idem", first)).await;
            let p = &resp.responses[0].partition_responses[0];
            assert_eq!(
                (p.error_code, p.base_offset),
                (0, start),
                "Produce v{v}: the retry is answered with the original offset"
            );
            assert_eq!(
                partition().high_watermark(),
                start + 2,
                "v{v}: written once"
            );

            let gap = producer_batch(pid, epoch, 5, &["c"]);
            let resp: ProduceResponse =
                call(&b, ApiKey::Produce, v, &produce_to("idem", gap)).await;
            let p = &resp.responses[0].partition_responses[0];
            assert_eq!(p.error_code, 45, "OUT_OF_ORDER_SEQUENCE_NUMBER at v{v}");
            assert_eq!(p.base_offset, -1);
            assert_eq!(
                p.error_message.is_some(),
                v >= 8,
                "error_message only where v{v} has it"
            );
            let fenced = producer_batch(pid, epoch - 1, 2, &["d"]);
            let resp: ProduceResponse =
                call(&b, ApiKey::Produce, v, &produce_to("idem", fenced)).await;
            let p = &resp.responses[0].partition_responses[0];
            assert_eq!(p.error_code, 47, "INVALID_PRODUCER_EPOCH at v{v}");
            assert_eq!(
                partition().high_watermark(),
                start + 2,
                "v{v}: refusals write nothing"
            );
        }
    }
}
