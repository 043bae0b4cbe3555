//! Consumer-group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, OffsetDelete, ListGroups, DescribeGroups and DeleteGroups.
//!
//! Each handler turns the versioned request into the coordinator's plain types and back; the
//! rules live in [`crate::group`]. Version-gated response fields are only set for the versions
//! that carry them (the encoder refuses anything else).

use bytes::Bytes;
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse, OffsetFetchRequest,
    OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;
use crate::group::{CommitPartition, CommitRequest, JoinRequest, SyncRequest};

/// Who sent a request, for the group coordinator's member records.
#[derive(Debug, Clone, Default)]
pub struct Client {
    /// `client.id` from the request header.
    pub client_id: String,
    /// Peer address in Kafka's notation (`/127.0.0.1`).
    pub host: String,
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// How long FindCoordinator waits for the creation of `__consumer_offsets` before it answers
/// COORDINATOR_NOT_AVAILABLE. Requests on a connection are answered in order, so a long wait
/// (no metadata quorum) would hold up the client's fetches on the same connection; Kafka
/// answers at once and creates the topic in the background.
const OFFSETS_TOPIC_CREATE_WAIT_MS: u64 = 250;

/// FindCoordinator: a group's coordinator is the leader of its `__consumer_offsets`
/// partition. The topic is created on first use, as Kafka does; until its partition has a
/// leader the answer is COORDINATOR_NOT_AVAILABLE, which clients retry.
pub async fn find_coordinator(
    broker: &Broker,
    req: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    if req.key_type == 0 {
        let wait = std::time::Duration::from_millis(OFFSETS_TOPIC_CREATE_WAIT_MS);
        // A creation cut short may still commit: the proposal is in the controller's hands.
        match tokio::time::timeout(wait, broker.groups().ensure_offsets_topic(broker)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot create the offsets topic"),
            Err(_) => tracing::debug!(
                wait_ms = OFFSETS_TOPIC_CREATE_WAIT_MS,
                "the offsets topic is not created yet"
            ),
        }
    }
    let image = broker.image();
    let partitions = broker.groups().config().offsets_topic_num_partitions;
    // (error code, message, (node, host, port))
    let answer = |key: &str| -> (i16, Option<String>, Option<(i32, String, i32)>) {
        match req.key_type {
            0 => {}
            // No transactions: INVALID_REQUEST (as for InitProducerId with a transactional
            // id) makes clients fail at once instead of retrying a coordinator lookup forever.
            1 => {
                return (
                    E::InvalidRequest.code(),
                    Some("transactions are not supported by strait".to_string()),
                    None,
                )
            }
            other => {
                return (
                    E::InvalidRequest.code(),
                    Some(format!("unknown coordinator key type {other}")),
                    None,
                )
            }
        }
        let partition = crate::group::storage::partition_for(key, partitions);
        let leader = image
            .partition(crate::group::storage::OFFSETS_TOPIC, partition)
            .map(|p| p.leader)
            .and_then(|leader| image.brokers.get(&leader))
            .filter(|b| !b.fenced);
        match leader {
            Some(b) => (0, None, Some((b.id, b.host.clone(), b.port))),
            None => (
                E::CoordinatorNotAvailable.code(),
                Some("the group's offsets partition has no leader yet".to_string()),
                None,
            ),
        }
    };
    if version >= 4 {
        let coordinators = req
            .coordinator_keys
            .iter()
            .map(|key| {
                let (code, message, node) = answer(key.as_str());
                let c = Coordinator::default()
                    .with_key(key.clone())
                    .with_error_code(code)
                    .with_error_message(message.map(StrBytes::from_string));
                match node {
                    Some((id, host, port)) => c
                        .with_node_id(BrokerId(id))
                        .with_host(StrBytes::from_string(host))
                        .with_port(port),
                    None => c.with_node_id(BrokerId(-1)).with_port(-1),
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let (code, message, node) = answer(req.key.as_str());
    let resp = FindCoordinatorResponse::default().with_error_code(code);
    let resp = if version >= 1 {
        resp.with_error_message(message.map(StrBytes::from_string))
    } else {
        resp
    };
    match node {
        Some((id, host, port)) => resp
            .with_node_id(BrokerId(id))
            .with_host(StrBytes::from_string(host))
            .with_port(port),
        None => resp.with_node_id(BrokerId(-1)).with_port(-1),
    }
}

/// JoinGroup.
pub async fn join_group(
    broker: &Broker,
    req: JoinGroupRequest,
    version: i16,
    client: &Client,
) -> JoinGroupResponse {
    let request = JoinRequest {
        group_id: req.group_id.to_string(),
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.as_ref().map(|i| i.to_string()),
        client_id: client.client_id.clone(),
        client_host: client.host.clone(),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 {
            req.rebalance_timeout_ms
        } else {
            -1
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .iter()
            // Copied, not sliced: the group keeps it, and a slice would keep the
            // connection's whole read buffer alive with it.
            .map(|p| (p.name.to_string(), Bytes::copy_from_slice(&p.metadata)))
            .collect(),
        require_known_member_id: version >= 4,
    };
    if let Some(reason) = &req.reason {
        tracing::debug!(group = %req.group_id.as_str(), %reason, "join reason");
    }
    let r = broker.groups().join(broker, request).await;
    use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
    let members = r
        .members
        .into_iter()
        .map(|m| {
            let member = JoinGroupResponseMember::default()
                .with_member_id(s(&m.member_id))
                .with_metadata(m.metadata);
            if version >= 5 {
                member.with_group_instance_id(m.group_instance_id.map(StrBytes::from_string))
            } else {
                member
            }
        })
        .collect();
    JoinGroupResponse::default()
        .with_error_code(r.error_code.code())
        .with_generation_id(r.generation_id)
        .with_protocol_type(r.protocol_type.map(StrBytes::from_string))
        .with_protocol_name(r.protocol_name.map(StrBytes::from_string))
        .with_leader(s(&r.leader_id))
        .with_member_id(s(&r.member_id))
        .with_members(members)
}

/// SyncGroup.
pub async fn sync_group(broker: &Broker, req: SyncGroupRequest, version: i16) -> SyncGroupResponse {
    let request = SyncRequest {
        group_id: req.group_id.to_string(),
        generation_id: req.generation_id,
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.as_ref().map(|i| i.to_string()),
        protocol_type: req.protocol_type.as_ref().map(|t| t.to_string()),
        protocol_name: req.protocol_name.as_ref().map(|n| n.to_string()),
        assignments: req
            .assignments
            .iter()
            // Copied for the same reason as JoinGroup's metadata.
            .map(|a| {
                (
                    a.member_id.to_string(),
                    Bytes::copy_from_slice(&a.assignment),
                )
            })
            .collect(),
    };
    let r = broker.groups().sync(broker, request).await;
    let resp = SyncGroupResponse::default()
        .with_error_code(r.error_code.code())
        .with_assignment(r.assignment);
    if version >= 5 {
        resp.with_protocol_type(r.protocol_type.map(StrBytes::from_string))
            .with_protocol_name(r.protocol_name.map(StrBytes::from_string))
    } else {
        resp
    }
}

/// Heartbeat.
pub fn heartbeat(broker: &Broker, req: HeartbeatRequest) -> HeartbeatResponse {
    let code = broker.groups().heartbeat(
        req.group_id.as_str(),
        req.member_id.as_str(),
        req.group_instance_id.as_deref(),
        req.generation_id,
    );
    HeartbeatResponse::default().with_error_code(code.code())
}

/// LeaveGroup: one member (v0–v2) or a batch (v3+).
pub fn leave_group(broker: &Broker, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    use kafka_protocol::messages::leave_group_response::MemberResponse;
    let group_id = req.group_id.to_string();
    if version < 3 {
        let codes = broker
            .groups()
            .leave(broker, &group_id, &[(req.member_id.to_string(), None)]);
        return LeaveGroupResponse::default().with_error_code(codes[0].code());
    }
    let members: Vec<(String, Option<String>)> = req
        .members
        .iter()
        .map(|m| {
            (
                m.member_id.to_string(),
                m.group_instance_id.as_ref().map(|i| i.to_string()),
            )
        })
        .collect();
    let codes = broker.groups().leave(broker, &group_id, &members);
    let responses = req
        .members
        .into_iter()
        .zip(codes)
        .map(|(m, code)| {
            MemberResponse::default()
                .with_member_id(m.member_id)
                .with_group_instance_id(m.group_instance_id)
                .with_error_code(code.code())
        })
        .collect();
    LeaveGroupResponse::default().with_members(responses)
}

/// OffsetCommit.
pub async fn offset_commit(
    broker: &Broker,
    req: OffsetCommitRequest,
    version: i16,
) -> OffsetCommitResponse {
    use kafka_protocol::messages::offset_commit_response::{
        OffsetCommitResponsePartition, OffsetCommitResponseTopic,
    };
    let mut partitions = Vec::new();
    for t in &req.topics {
        for p in &t.partitions {
            partitions.push(CommitPartition {
                topic: t.name.to_string(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: if version >= 6 {
                    p.committed_leader_epoch
                } else {
                    -1
                },
                metadata: p
                    .committed_metadata
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
            });
        }
    }
    let request = CommitRequest {
        group_id: req.group_id.to_string(),
        generation_id: req.generation_id_or_member_epoch,
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.as_ref().map(|i| i.to_string()),
        partitions,
    };
    let codes = broker.groups().commit(broker, &request).await;
    let mut codes = codes.into_iter();
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(
                            codes
                                .next()
                                .map_or(E::UnknownServerError.code(), |c| c.code()),
                        )
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// A committed offset as OffsetFetch reports it: partition, offset, leader epoch, metadata
/// (-1, -1 and "" when nothing was committed).
type FetchedOffset = (i32, i64, i32, String);

/// OffsetFetch: one group (v1–v7) or several (v8+).
pub fn offset_fetch(broker: &Broker, req: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    use kafka_protocol::messages::offset_fetch_response::{
        OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
        OffsetFetchResponseTopic, OffsetFetchResponseTopics,
    };
    let lookup = |group: &str, topics: Option<Vec<(String, Vec<i32>)>>| {
        let mut by_topic: Vec<(String, Vec<FetchedOffset>)> = Vec::new();
        for (topic, partition, value) in broker.groups().fetch_offsets(group, topics.as_deref()) {
            let (offset, epoch, metadata) = match value {
                Some(v) => (v.offset, v.leader_epoch, v.metadata),
                None => (-1, -1, String::new()),
            };
            match by_topic.last_mut() {
                Some((t, parts)) if *t == topic => parts.push((partition, offset, epoch, metadata)),
                _ => by_topic.push((topic, vec![(partition, offset, epoch, metadata)])),
            }
        }
        by_topic
    };
    if version >= 8 {
        let groups = req
            .groups
            .iter()
            .map(|g| {
                let topics = g.topics.as_ref().map(|ts| {
                    ts.iter()
                        .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
                        .collect()
                });
                let topics = lookup(g.group_id.as_str(), topics)
                    .into_iter()
                    .map(|(name, parts)| {
                        OffsetFetchResponseTopics::default()
                            .with_name(TopicName(s(&name)))
                            .with_partitions(
                                parts
                                    .into_iter()
                                    .map(|(p, offset, epoch, metadata)| {
                                        OffsetFetchResponsePartitions::default()
                                            .with_partition_index(p)
                                            .with_committed_offset(offset)
                                            .with_committed_leader_epoch(epoch)
                                            .with_metadata(Some(StrBytes::from_string(metadata)))
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                let group = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
                if broker.groups().is_coordinator(g.group_id.as_str()) {
                    group.with_topics(topics)
                } else {
                    group.with_error_code(E::NotCoordinator.code())
                }
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    if !broker.groups().is_coordinator(req.group_id.as_str()) {
        return OffsetFetchResponse::default().with_error_code(E::NotCoordinator.code());
    }
    let topics = req.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let topics = lookup(req.group_id.as_str(), topics)
        .into_iter()
        .map(|(name, parts)| {
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(s(&name)))
                .with_partitions(
                    parts
                        .into_iter()
                        .map(|(p, offset, epoch, metadata)| {
                            let part = OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(offset)
                                .with_metadata(Some(StrBytes::from_string(metadata)));
                            if version >= 5 {
                                part.with_committed_leader_epoch(epoch)
                            } else {
                                part
                            }
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}

/// OffsetDelete.
pub fn offset_delete(broker: &Broker, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    use kafka_protocol::messages::offset_delete_response::{
        OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
    };
    let partitions: Vec<(String, i32)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.to_string(), p.partition_index))
        })
        .collect();
    match broker
        .groups()
        .delete_offsets(broker, req.group_id.as_str(), &partitions)
    {
        Err(code) => OffsetDeleteResponse::default().with_error_code(code.code()),
        Ok(codes) => {
            let mut codes = codes.into_iter();
            let topics = req
                .topics
                .into_iter()
                .map(|t| {
                    let partitions = t
                        .partitions
                        .iter()
                        .map(|p| {
                            OffsetDeleteResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(codes.next().map_or(0, |c| c.code()))
                        })
                        .collect();
                    OffsetDeleteResponseTopic::default()
                        .with_name(t.name)
                        .with_partitions(partitions)
                })
                .collect();
            OffsetDeleteResponse::default().with_topics(topics)
        }
    }
}

/// ListGroups (states filter from v4).
pub fn list_groups(broker: &Broker, req: ListGroupsRequest, version: i16) -> ListGroupsResponse {
    use kafka_protocol::messages::list_groups_response::ListedGroup;
    let filter: Vec<String> = if version >= 4 {
        req.states_filter.iter().map(|s| s.to_string()).collect()
    } else {
        Vec::new()
    };
    let groups = broker
        .groups()
        .list(&filter)
        .into_iter()
        .map(|g| {
            let listed = ListedGroup::default()
                .with_group_id(GroupId(s(&g.group_id)))
                .with_protocol_type(s(&g.protocol_type));
            if version >= 4 {
                listed.with_group_state(s(g.state.name()))
            } else {
                listed
            }
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

/// DescribeGroups.
pub fn describe_groups(
    broker: &Broker,
    req: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    use kafka_protocol::messages::describe_groups_response::{
        DescribedGroup, DescribedGroupMember,
    };
    let groups = req
        .groups
        .iter()
        .map(|id| {
            if !broker.groups().is_coordinator(id.as_str()) {
                return DescribedGroup::default()
                    .with_group_id(id.clone())
                    .with_error_code(E::NotCoordinator.code());
            }
            let d = broker.groups().describe(id.as_str());
            let members = d
                .members
                .into_iter()
                .map(|m| {
                    let member = DescribedGroupMember::default()
                        .with_member_id(s(&m.member_id))
                        .with_client_id(s(&m.client_id))
                        .with_client_host(s(&m.client_host))
                        .with_member_metadata(m.metadata)
                        .with_member_assignment(m.assignment);
                    if version >= 4 {
                        member
                            .with_group_instance_id(m.group_instance_id.map(StrBytes::from_string))
                    } else {
                        member
                    }
                })
                .collect();
            let group = DescribedGroup::default()
                .with_group_id(id.clone())
                .with_group_state(s(d.state.name()))
                .with_protocol_type(s(&d.protocol_type))
                .with_protocol_data(s(&d.protocol_name))
                .with_members(members);
            if version >= 3 {
                // No ACLs: report "not requested" unless asked, then every group operation.
                group.with_authorized_operations(if req.include_authorized_operations {
                    GROUP_OPERATIONS_ALL
                } else {
                    i32::MIN
                })
            } else {
                group
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

/// READ (3), DELETE (6) and DESCRIBE (8) as a bit set: what Kafka allows on a group.
const GROUP_OPERATIONS_ALL: i32 = (1 << 3) | (1 << 6) | (1 << 8);

/// DeleteGroups.
pub fn delete_groups(broker: &Broker, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
    let results = req
        .groups_names
        .into_iter()
        .map(|id| {
            let code = broker.groups().delete_group(broker, id.as_str());
            DeletableGroupResult::default()
                .with_group_id(id)
                .with_error_code(code.code())
        })
        .collect();
    DeleteGroupsResponse::default().with_results(results)
}
