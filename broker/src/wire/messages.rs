//! Layouts of the messages strait decodes from untrusted peers, transcribed field by field from
//! `kafka-protocol` 0.18's decoders (which follow Kafka's message definitions): the requests of
//! every API the broker serves, the consumer protocol's subscription (a JoinGroup member's
//! metadata), and the two responses a follower decodes from its leader.
//!
//! A name `A__B` is struct `B` nested in message `A`. `tests.rs` checks every layout against the
//! crate: random messages built from a layout decode with the crate, to the last byte.

use super::schema::{array, f, nullable_array, Elem, Kind, Schema};
use super::schema::{BYTES, NEVER, NULLABLE_BYTES, NULLABLE_STR, STR};

pub(crate) static PRODUCE_REQUEST__PARTITION_PRODUCE_DATA: Schema = Schema {
    name: "PartitionProduceData",
    versions: (3, 13),
    flexible_from: 9,
    fields: &[
        f("index", 3, 13, Kind::Int32),
        f("records", 3, 13, NULLABLE_BYTES).compact_from(9),
    ],
};

pub(crate) static PRODUCE_REQUEST__TOPIC_PRODUCE_DATA: Schema = Schema {
    name: "TopicProduceData",
    versions: (3, 13),
    flexible_from: 9,
    fields: &[
        f("name", 3, 12, STR).compact_from(9),
        f("topic_id", 13, 13, Kind::Uuid),
        f("partition_data", 3, 13, array(&PRODUCE_REQUEST__PARTITION_PRODUCE_DATA)).compact_from(9),
    ],
};

pub(crate) static PRODUCE_REQUEST: Schema = Schema {
    name: "ProduceRequest",
    versions: (3, 13),
    flexible_from: 9,
    fields: &[
        f("transactional_id", 3, 13, NULLABLE_STR).compact_from(9),
        f("acks", 3, 13, Kind::Int16),
        f("timeout_ms", 3, 13, Kind::Int32),
        f("topic_data", 3, 13, array(&PRODUCE_REQUEST__TOPIC_PRODUCE_DATA)).compact_from(9),
    ],
};

pub(crate) static FETCH_REQUEST__REPLICA_STATE: Schema = Schema {
    name: "ReplicaState",
    versions: (4, 18),
    flexible_from: 12,
    fields: &[
        f("replica_id", 15, 18, Kind::Int32),
        f("replica_epoch", 15, 18, Kind::Int64),
    ],
};

pub(crate) static FETCH_REQUEST__FETCH_PARTITION: Schema = Schema {
    name: "FetchPartition",
    versions: (4, 18),
    flexible_from: 12,
    fields: &[
        f("partition", 4, 18, Kind::Int32),
        f("current_leader_epoch", 9, 18, Kind::Int32),
        f("fetch_offset", 4, 18, Kind::Int64),
        f("last_fetched_epoch", 12, 18, Kind::Int32),
        f("log_start_offset", 5, 18, Kind::Int64),
        f("partition_max_bytes", 4, 18, Kind::Int32),
        f("replica_directory_id", 17, 18, Kind::Uuid).tag(0),
        f("high_watermark", 18, 18, Kind::Int64).tag(1),
    ],
};

pub(crate) static FETCH_REQUEST__FETCH_TOPIC: Schema = Schema {
    name: "FetchTopic",
    versions: (4, 18),
    flexible_from: 12,
    fields: &[
        f("topic", 4, 12, STR).compact_from(12),
        f("topic_id", 13, 18, Kind::Uuid),
        f("partitions", 4, 18, array(&FETCH_REQUEST__FETCH_PARTITION)).compact_from(12),
    ],
};

pub(crate) static FETCH_REQUEST__FORGOTTEN_TOPIC: Schema = Schema {
    name: "ForgottenTopic",
    versions: (4, 18),
    flexible_from: 12,
    fields: &[
        f("topic", 7, 12, STR).compact_from(12),
        f("topic_id", 13, 18, Kind::Uuid),
        f("partitions", 7, 18, Kind::Array { of: Elem::Int32, nullable: false }).compact_from(12),
    ],
};

pub(crate) static FETCH_REQUEST: Schema = Schema {
    name: "FetchRequest",
    versions: (4, 18),
    flexible_from: 12,
    fields: &[
        f("cluster_id", 12, 18, NULLABLE_STR).tag(0),
        f("replica_id", 4, 14, Kind::Int32),
        f("replica_state", 15, 18, Kind::Struct(&FETCH_REQUEST__REPLICA_STATE)).tag(1),
        f("max_wait_ms", 4, 18, Kind::Int32),
        f("min_bytes", 4, 18, Kind::Int32),
        f("max_bytes", 4, 18, Kind::Int32),
        f("isolation_level", 4, 18, Kind::Int8),
        f("session_id", 7, 18, Kind::Int32),
        f("session_epoch", 7, 18, Kind::Int32),
        f("topics", 4, 18, array(&FETCH_REQUEST__FETCH_TOPIC)).compact_from(12),
        f("forgotten_topics_data", 7, 18, array(&FETCH_REQUEST__FORGOTTEN_TOPIC)).compact_from(12),
        f("rack_id", 11, 18, STR).compact_from(12),
    ],
};

pub(crate) static LIST_OFFSETS_REQUEST__LIST_OFFSETS_PARTITION: Schema = Schema {
    name: "ListOffsetsPartition",
    versions: (1, 10),
    flexible_from: 6,
    fields: &[
        f("partition_index", 1, 10, Kind::Int32),
        f("current_leader_epoch", 4, 10, Kind::Int32),
        f("timestamp", 1, 10, Kind::Int64),
    ],
};

pub(crate) static LIST_OFFSETS_REQUEST__LIST_OFFSETS_TOPIC: Schema = Schema {
    name: "ListOffsetsTopic",
    versions: (1, 10),
    flexible_from: 6,
    fields: &[
        f("name", 1, 10, STR).compact_from(6),
        f("partitions", 1, 10, array(&LIST_OFFSETS_REQUEST__LIST_OFFSETS_PARTITION)).compact_from(6),
    ],
};

pub(crate) static LIST_OFFSETS_REQUEST: Schema = Schema {
    name: "ListOffsetsRequest",
    versions: (1, 10),
    flexible_from: 6,
    fields: &[
        f("replica_id", 1, 10, Kind::Int32),
        f("isolation_level", 2, 10, Kind::Int8),
        f("topics", 1, 10, array(&LIST_OFFSETS_REQUEST__LIST_OFFSETS_TOPIC)).compact_from(6),
        f("timeout_ms", 10, 10, Kind::Int32),
    ],
};

pub(crate) static METADATA_REQUEST__METADATA_REQUEST_TOPIC: Schema = Schema {
    name: "MetadataRequestTopic",
    versions: (0, 13),
    flexible_from: 9,
    fields: &[
        f("topic_id", 10, 13, Kind::Uuid),
        f("name", 0, 13, NULLABLE_STR).compact_from(9),
    ],
};

pub(crate) static METADATA_REQUEST: Schema = Schema {
    name: "MetadataRequest",
    versions: (0, 13),
    flexible_from: 9,
    fields: &[
        f("topics", 0, 13, nullable_array(&METADATA_REQUEST__METADATA_REQUEST_TOPIC)).compact_from(9),
        f("allow_auto_topic_creation", 4, 13, Kind::Bool),
        f("include_cluster_authorized_operations", 8, 10, Kind::Bool),
        f("include_topic_authorized_operations", 8, 13, Kind::Bool),
    ],
};

pub(crate) static API_VERSIONS_REQUEST: Schema = Schema {
    name: "ApiVersionsRequest",
    versions: (0, 4),
    flexible_from: 3,
    fields: &[
        f("client_software_name", 3, 4, STR).compact_from(3),
        f("client_software_version", 3, 4, STR).compact_from(3),
    ],
};

pub(crate) static CREATE_TOPICS_REQUEST__CREATABLE_REPLICA_ASSIGNMENT: Schema = Schema {
    name: "CreatableReplicaAssignment",
    versions: (2, 7),
    flexible_from: 5,
    fields: &[
        f("partition_index", 2, 7, Kind::Int32),
        f("broker_ids", 2, 7, Kind::Array { of: Elem::Int32, nullable: false }).compact_from(5),
    ],
};

pub(crate) static CREATE_TOPICS_REQUEST__CREATABLE_TOPIC_CONFIG: Schema = Schema {
    name: "CreatableTopicConfig",
    versions: (2, 7),
    flexible_from: 5,
    fields: &[
        f("name", 2, 7, STR).compact_from(5),
        f("value", 2, 7, NULLABLE_STR).compact_from(5),
    ],
};

pub(crate) static CREATE_TOPICS_REQUEST__CREATABLE_TOPIC: Schema = Schema {
    name: "CreatableTopic",
    versions: (2, 7),
    flexible_from: 5,
    fields: &[
        f("name", 2, 7, STR).compact_from(5),
        f("num_partitions", 2, 7, Kind::Int32),
        f("replication_factor", 2, 7, Kind::Int16),
        f("assignments", 2, 7, array(&CREATE_TOPICS_REQUEST__CREATABLE_REPLICA_ASSIGNMENT)).compact_from(5),
        f("configs", 2, 7, array(&CREATE_TOPICS_REQUEST__CREATABLE_TOPIC_CONFIG)).compact_from(5),
    ],
};

pub(crate) static CREATE_TOPICS_REQUEST: Schema = Schema {
    name: "CreateTopicsRequest",
    versions: (2, 7),
    flexible_from: 5,
    fields: &[
        f("topics", 2, 7, array(&CREATE_TOPICS_REQUEST__CREATABLE_TOPIC)).compact_from(5),
        f("timeout_ms", 2, 7, Kind::Int32),
        f("validate_only", 2, 7, Kind::Bool),
    ],
};

pub(crate) static DELETE_TOPICS_REQUEST__DELETE_TOPIC_STATE: Schema = Schema {
    name: "DeleteTopicState",
    versions: (1, 6),
    flexible_from: 4,
    fields: &[
        f("name", 6, 6, NULLABLE_STR).compact_from(6),
        f("topic_id", 6, 6, Kind::Uuid),
    ],
};

pub(crate) static DELETE_TOPICS_REQUEST: Schema = Schema {
    name: "DeleteTopicsRequest",
    versions: (1, 6),
    flexible_from: 4,
    fields: &[
        f("topics", 6, 6, array(&DELETE_TOPICS_REQUEST__DELETE_TOPIC_STATE)).compact_from(6),
        f("topic_names", 1, 5, Kind::Array { of: Elem::Str, nullable: false }).compact_from(4),
        f("timeout_ms", 1, 6, Kind::Int32),
    ],
};

pub(crate) static FIND_COORDINATOR_REQUEST: Schema = Schema {
    name: "FindCoordinatorRequest",
    versions: (0, 6),
    flexible_from: 3,
    fields: &[
        f("key", 0, 3, STR).compact_from(3),
        f("key_type", 1, 6, Kind::Int8),
        f("coordinator_keys", 4, 6, Kind::Array { of: Elem::Str, nullable: false }).compact_from(4),
    ],
};

pub(crate) static JOIN_GROUP_REQUEST__JOIN_GROUP_REQUEST_PROTOCOL: Schema = Schema {
    name: "JoinGroupRequestProtocol",
    versions: (0, 9),
    flexible_from: 6,
    fields: &[
        f("name", 0, 9, STR).compact_from(6),
        f("metadata", 0, 9, BYTES).compact_from(6),
    ],
};

pub(crate) static JOIN_GROUP_REQUEST: Schema = Schema {
    name: "JoinGroupRequest",
    versions: (0, 9),
    flexible_from: 6,
    fields: &[
        f("group_id", 0, 9, STR).compact_from(6),
        f("session_timeout_ms", 0, 9, Kind::Int32),
        f("rebalance_timeout_ms", 1, 9, Kind::Int32),
        f("member_id", 0, 9, STR).compact_from(6),
        f("group_instance_id", 5, 9, NULLABLE_STR).compact_from(6),
        f("protocol_type", 0, 9, STR).compact_from(6),
        f("protocols", 0, 9, array(&JOIN_GROUP_REQUEST__JOIN_GROUP_REQUEST_PROTOCOL)).compact_from(6),
        f("reason", 8, 9, NULLABLE_STR).compact_from(8),
    ],
};

pub(crate) static SYNC_GROUP_REQUEST__SYNC_GROUP_REQUEST_ASSIGNMENT: Schema = Schema {
    name: "SyncGroupRequestAssignment",
    versions: (0, 5),
    flexible_from: 4,
    fields: &[
        f("member_id", 0, 5, STR).compact_from(4),
        f("assignment", 0, 5, BYTES).compact_from(4),
    ],
};

pub(crate) static SYNC_GROUP_REQUEST: Schema = Schema {
    name: "SyncGroupRequest",
    versions: (0, 5),
    flexible_from: 4,
    fields: &[
        f("group_id", 0, 5, STR).compact_from(4),
        f("generation_id", 0, 5, Kind::Int32),
        f("member_id", 0, 5, STR).compact_from(4),
        f("group_instance_id", 3, 5, NULLABLE_STR).compact_from(4),
        f("protocol_type", 5, 5, NULLABLE_STR).compact_from(5),
        f("protocol_name", 5, 5, NULLABLE_STR).compact_from(5),
        f("assignments", 0, 5, array(&SYNC_GROUP_REQUEST__SYNC_GROUP_REQUEST_ASSIGNMENT)).compact_from(4),
    ],
};

pub(crate) static HEARTBEAT_REQUEST: Schema = Schema {
    name: "HeartbeatRequest",
    versions: (0, 4),
    flexible_from: 4,
    fields: &[
        f("group_id", 0, 4, STR).compact_from(4),
        f("generation_id", 0, 4, Kind::Int32),
        f("member_id", 0, 4, STR).compact_from(4),
        f("group_instance_id", 3, 4, NULLABLE_STR).compact_from(4),
    ],
};

pub(crate) static LEAVE_GROUP_REQUEST__MEMBER_IDENTITY: Schema = Schema {
    name: "MemberIdentity",
    versions: (0, 5),
    flexible_from: 4,
    fields: &[
        f("member_id", 3, 5, STR).compact_from(4),
        f("group_instance_id", 3, 5, NULLABLE_STR).compact_from(4),
        f("reason", 5, 5, NULLABLE_STR).compact_from(5),
    ],
};

pub(crate) static LEAVE_GROUP_REQUEST: Schema = Schema {
    name: "LeaveGroupRequest",
    versions: (0, 5),
    flexible_from: 4,
    fields: &[
        f("group_id", 0, 5, STR).compact_from(4),
        f("member_id", 0, 2, STR),
        f("members", 3, 5, array(&LEAVE_GROUP_REQUEST__MEMBER_IDENTITY)).compact_from(4),
    ],
};

pub(crate) static OFFSET_COMMIT_REQUEST__OFFSET_COMMIT_REQUEST_PARTITION: Schema = Schema {
    name: "OffsetCommitRequestPartition",
    versions: (2, 9),
    flexible_from: 8,
    fields: &[
        f("partition_index", 2, 9, Kind::Int32),
        f("committed_offset", 2, 9, Kind::Int64),
        f("committed_leader_epoch", 6, 9, Kind::Int32),
        f("committed_metadata", 2, 9, NULLABLE_STR).compact_from(8),
    ],
};

pub(crate) static OFFSET_COMMIT_REQUEST__OFFSET_COMMIT_REQUEST_TOPIC: Schema = Schema {
    name: "OffsetCommitRequestTopic",
    versions: (2, 9),
    flexible_from: 8,
    fields: &[
        f("name", 2, 9, STR).compact_from(8),
        f("partitions", 2, 9, array(&OFFSET_COMMIT_REQUEST__OFFSET_COMMIT_REQUEST_PARTITION)).compact_from(8),
    ],
};

pub(crate) static OFFSET_COMMIT_REQUEST: Schema = Schema {
    name: "OffsetCommitRequest",
    versions: (2, 9),
    flexible_from: 8,
    fields: &[
        f("group_id", 2, 9, STR).compact_from(8),
        f("generation_id_or_member_epoch", 2, 9, Kind::Int32),
        f("member_id", 2, 9, STR).compact_from(8),
        f("group_instance_id", 7, 9, NULLABLE_STR).compact_from(8),
        f("retention_time_ms", 2, 4, Kind::Int64),
        f("topics", 2, 9, array(&OFFSET_COMMIT_REQUEST__OFFSET_COMMIT_REQUEST_TOPIC)).compact_from(8),
    ],
};

pub(crate) static OFFSET_FETCH_REQUEST__OFFSET_FETCH_REQUEST_TOPIC: Schema = Schema {
    name: "OffsetFetchRequestTopic",
    versions: (1, 9),
    flexible_from: 6,
    fields: &[
        f("name", 1, 7, STR).compact_from(6),
        f("partition_indexes", 1, 7, Kind::Array { of: Elem::Int32, nullable: false }).compact_from(6),
    ],
};

pub(crate) static OFFSET_FETCH_REQUEST__OFFSET_FETCH_REQUEST_TOPICS: Schema = Schema {
    name: "OffsetFetchRequestTopics",
    versions: (1, 9),
    flexible_from: 6,
    fields: &[
        f("name", 8, 9, STR).compact_from(8),
        f("partition_indexes", 8, 9, Kind::Array { of: Elem::Int32, nullable: false }).compact_from(8),
    ],
};

pub(crate) static OFFSET_FETCH_REQUEST__OFFSET_FETCH_REQUEST_GROUP: Schema = Schema {
    name: "OffsetFetchRequestGroup",
    versions: (1, 9),
    flexible_from: 6,
    fields: &[
        f("group_id", 8, 9, STR).compact_from(8),
        f("member_id", 9, 9, NULLABLE_STR).compact_from(9),
        f("member_epoch", 9, 9, Kind::Int32),
        f("topics", 8, 9, nullable_array(&OFFSET_FETCH_REQUEST__OFFSET_FETCH_REQUEST_TOPICS)).compact_from(8),
    ],
};

pub(crate) static OFFSET_FETCH_REQUEST: Schema = Schema {
    name: "OffsetFetchRequest",
    versions: (1, 9),
    flexible_from: 6,
    fields: &[
        f("group_id", 1, 7, STR).compact_from(6),
        f("topics", 1, 7, nullable_array(&OFFSET_FETCH_REQUEST__OFFSET_FETCH_REQUEST_TOPIC)).compact_from(6),
        f("groups", 8, 9, array(&OFFSET_FETCH_REQUEST__OFFSET_FETCH_REQUEST_GROUP)).compact_from(8),
        f("require_stable", 7, 9, Kind::Bool),
    ],
};

pub(crate) static OFFSET_DELETE_REQUEST__OFFSET_DELETE_REQUEST_PARTITION: Schema = Schema {
    name: "OffsetDeleteRequestPartition",
    versions: (0, 0),
    flexible_from: NEVER,
    fields: &[
        f("partition_index", 0, 0, Kind::Int32),
    ],
};

pub(crate) static OFFSET_DELETE_REQUEST__OFFSET_DELETE_REQUEST_TOPIC: Schema = Schema {
    name: "OffsetDeleteRequestTopic",
    versions: (0, 0),
    flexible_from: NEVER,
    fields: &[
        f("name", 0, 0, STR),
        f("partitions", 0, 0, array(&OFFSET_DELETE_REQUEST__OFFSET_DELETE_REQUEST_PARTITION)),
    ],
};

pub(crate) static OFFSET_DELETE_REQUEST: Schema = Schema {
    name: "OffsetDeleteRequest",
    versions: (0, 0),
    flexible_from: NEVER,
    fields: &[
        f("group_id", 0, 0, STR),
        f("topics", 0, 0, array(&OFFSET_DELETE_REQUEST__OFFSET_DELETE_REQUEST_TOPIC)),
    ],
};

pub(crate) static LIST_GROUPS_REQUEST: Schema = Schema {
    name: "ListGroupsRequest",
    versions: (0, 5),
    flexible_from: 3,
    fields: &[
        f("states_filter", 4, 5, Kind::Array { of: Elem::Str, nullable: false }).compact_from(4),
        f("types_filter", 5, 5, Kind::Array { of: Elem::Str, nullable: false }).compact_from(5),
    ],
};

pub(crate) static DESCRIBE_GROUPS_REQUEST: Schema = Schema {
    name: "DescribeGroupsRequest",
    versions: (0, 6),
    flexible_from: 5,
    fields: &[
        f("groups", 0, 6, Kind::Array { of: Elem::Str, nullable: false }).compact_from(5),
        f("include_authorized_operations", 3, 6, Kind::Bool),
    ],
};

pub(crate) static DELETE_GROUPS_REQUEST: Schema = Schema {
    name: "DeleteGroupsRequest",
    versions: (0, 2),
    flexible_from: 2,
    fields: &[
        f("groups_names", 0, 2, Kind::Array { of: Elem::Str, nullable: false }).compact_from(2),
    ],
};

pub(crate) static INIT_PRODUCER_ID_REQUEST: Schema = Schema {
    name: "InitProducerIdRequest",
    versions: (0, 5),
    flexible_from: 2,
    fields: &[
        f("transactional_id", 0, 5, NULLABLE_STR).compact_from(2),
        f("transaction_timeout_ms", 0, 5, Kind::Int32),
        f("producer_id", 3, 5, Kind::Int64),
        f("producer_epoch", 3, 5, Kind::Int16),
    ],
};

pub(crate) static DELETE_RECORDS_REQUEST__DELETE_RECORDS_PARTITION: Schema = Schema {
    name: "DeleteRecordsPartition",
    versions: (0, 2),
    flexible_from: 2,
    fields: &[
        f("partition_index", 0, 2, Kind::Int32),
        f("offset", 0, 2, Kind::Int64),
    ],
};

pub(crate) static DELETE_RECORDS_REQUEST__DELETE_RECORDS_TOPIC: Schema = Schema {
    name: "DeleteRecordsTopic",
    versions: (0, 2),
    flexible_from: 2,
    fields: &[
        f("name", 0, 2, STR).compact_from(2),
        f("partitions", 0, 2, array(&DELETE_RECORDS_REQUEST__DELETE_RECORDS_PARTITION)).compact_from(2),
    ],
};

pub(crate) static DELETE_RECORDS_REQUEST: Schema = Schema {
    name: "DeleteRecordsRequest",
    versions: (0, 2),
    flexible_from: 2,
    fields: &[
        f("topics", 0, 2, array(&DELETE_RECORDS_REQUEST__DELETE_RECORDS_TOPIC)).compact_from(2),
        f("timeout_ms", 0, 2, Kind::Int32),
    ],
};

pub(crate) static DESCRIBE_CONFIGS_REQUEST__DESCRIBE_CONFIGS_RESOURCE: Schema = Schema {
    name: "DescribeConfigsResource",
    versions: (1, 4),
    flexible_from: 4,
    fields: &[
        f("resource_type", 1, 4, Kind::Int8),
        f("resource_name", 1, 4, STR).compact_from(4),
        f("configuration_keys", 1, 4, Kind::Array { of: Elem::Str, nullable: true }).compact_from(4),
    ],
};

pub(crate) static DESCRIBE_CONFIGS_REQUEST: Schema = Schema {
    name: "DescribeConfigsRequest",
    versions: (1, 4),
    flexible_from: 4,
    fields: &[
        f("resources", 1, 4, array(&DESCRIBE_CONFIGS_REQUEST__DESCRIBE_CONFIGS_RESOURCE)).compact_from(4),
        f("include_synonyms", 1, 4, Kind::Bool),
        f("include_documentation", 3, 4, Kind::Bool),
    ],
};

pub(crate) static ALTER_CONFIGS_REQUEST__ALTERABLE_CONFIG: Schema = Schema {
    name: "AlterableConfig",
    versions: (0, 2),
    flexible_from: 2,
    fields: &[
        f("name", 0, 2, STR).compact_from(2),
        f("value", 0, 2, NULLABLE_STR).compact_from(2),
    ],
};

pub(crate) static ALTER_CONFIGS_REQUEST__ALTER_CONFIGS_RESOURCE: Schema = Schema {
    name: "AlterConfigsResource",
    versions: (0, 2),
    flexible_from: 2,
    fields: &[
        f("resource_type", 0, 2, Kind::Int8),
        f("resource_name", 0, 2, STR).compact_from(2),
        f("configs", 0, 2, array(&ALTER_CONFIGS_REQUEST__ALTERABLE_CONFIG)).compact_from(2),
    ],
};

pub(crate) static ALTER_CONFIGS_REQUEST: Schema = Schema {
    name: "AlterConfigsRequest",
    versions: (0, 2),
    flexible_from: 2,
    fields: &[
        f("resources", 0, 2, array(&ALTER_CONFIGS_REQUEST__ALTER_CONFIGS_RESOURCE)).compact_from(2),
        f("validate_only", 0, 2, Kind::Bool),
    ],
};

pub(crate) static CREATE_PARTITIONS_REQUEST__CREATE_PARTITIONS_ASSIGNMENT: Schema = Schema {
    name: "CreatePartitionsAssignment",
    versions: (0, 3),
    flexible_from: 2,
    fields: &[
        f("broker_ids", 0, 3, Kind::Array { of: Elem::Int32, nullable: false }).compact_from(2),
    ],
};

pub(crate) static CREATE_PARTITIONS_REQUEST__CREATE_PARTITIONS_TOPIC: Schema = Schema {
    name: "CreatePartitionsTopic",
    versions: (0, 3),
    flexible_from: 2,
    fields: &[
        f("name", 0, 3, STR).compact_from(2),
        f("count", 0, 3, Kind::Int32),
        f("assignments", 0, 3, nullable_array(&CREATE_PARTITIONS_REQUEST__CREATE_PARTITIONS_ASSIGNMENT)).compact_from(2),
    ],
};

pub(crate) static CREATE_PARTITIONS_REQUEST: Schema = Schema {
    name: "CreatePartitionsRequest",
    versions: (0, 3),
    flexible_from: 2,
    fields: &[
        f("topics", 0, 3, array(&CREATE_PARTITIONS_REQUEST__CREATE_PARTITIONS_TOPIC)).compact_from(2),
        f("timeout_ms", 0, 3, Kind::Int32),
        f("validate_only", 0, 3, Kind::Bool),
    ],
};

pub(crate) static INCREMENTAL_ALTER_CONFIGS_REQUEST__ALTERABLE_CONFIG: Schema = Schema {
    name: "AlterableConfig",
    versions: (0, 1),
    flexible_from: 1,
    fields: &[
        f("name", 0, 1, STR).compact_from(1),
        f("config_operation", 0, 1, Kind::Int8),
        f("value", 0, 1, NULLABLE_STR).compact_from(1),
    ],
};

pub(crate) static INCREMENTAL_ALTER_CONFIGS_REQUEST__ALTER_CONFIGS_RESOURCE: Schema = Schema {
    name: "AlterConfigsResource",
    versions: (0, 1),
    flexible_from: 1,
    fields: &[
        f("resource_type", 0, 1, Kind::Int8),
        f("resource_name", 0, 1, STR).compact_from(1),
        f("configs", 0, 1, array(&INCREMENTAL_ALTER_CONFIGS_REQUEST__ALTERABLE_CONFIG)).compact_from(1),
    ],
};

pub(crate) static INCREMENTAL_ALTER_CONFIGS_REQUEST: Schema = Schema {
    name: "IncrementalAlterConfigsRequest",
    versions: (0, 1),
    flexible_from: 1,
    fields: &[
        f("resources", 0, 1, array(&INCREMENTAL_ALTER_CONFIGS_REQUEST__ALTER_CONFIGS_RESOURCE)).compact_from(1),
        f("validate_only", 0, 1, Kind::Bool),
    ],
};

pub(crate) static OFFSET_FOR_LEADER_EPOCH_REQUEST__OFFSET_FOR_LEADER_PARTITION: Schema = Schema {
    name: "OffsetForLeaderPartition",
    versions: (2, 4),
    flexible_from: 4,
    fields: &[
        f("partition", 2, 4, Kind::Int32),
        f("current_leader_epoch", 2, 4, Kind::Int32),
        f("leader_epoch", 2, 4, Kind::Int32),
    ],
};

pub(crate) static OFFSET_FOR_LEADER_EPOCH_REQUEST__OFFSET_FOR_LEADER_TOPIC: Schema = Schema {
    name: "OffsetForLeaderTopic",
    versions: (2, 4),
    flexible_from: 4,
    fields: &[
        f("topic", 2, 4, STR).compact_from(4),
        f("partitions", 2, 4, array(&OFFSET_FOR_LEADER_EPOCH_REQUEST__OFFSET_FOR_LEADER_PARTITION)).compact_from(4),
    ],
};

pub(crate) static OFFSET_FOR_LEADER_EPOCH_REQUEST: Schema = Schema {
    name: "OffsetForLeaderEpochRequest",
    versions: (2, 4),
    flexible_from: 4,
    fields: &[
        f("replica_id", 3, 4, Kind::Int32),
        f("topics", 2, 4, array(&OFFSET_FOR_LEADER_EPOCH_REQUEST__OFFSET_FOR_LEADER_TOPIC)).compact_from(4),
    ],
};

pub(crate) static CONSUMER_PROTOCOL_SUBSCRIPTION__TOPIC_PARTITION: Schema = Schema {
    name: "TopicPartition",
    versions: (0, 3),
    flexible_from: NEVER,
    fields: &[
        f("topic", 1, 3, STR),
        f("partitions", 1, 3, Kind::Array { of: Elem::Int32, nullable: false }),
    ],
};

pub(crate) static CONSUMER_PROTOCOL_SUBSCRIPTION: Schema = Schema {
    name: "ConsumerProtocolSubscription",
    versions: (0, 3),
    flexible_from: NEVER,
    fields: &[
        f("topics", 0, 3, Kind::Array { of: Elem::Str, nullable: false }),
        f("user_data", 0, 3, NULLABLE_BYTES),
        f("owned_partitions", 1, 3, array(&CONSUMER_PROTOCOL_SUBSCRIPTION__TOPIC_PARTITION)),
        f("generation_id", 2, 3, Kind::Int32),
        f("rack_id", 3, 3, NULLABLE_STR),
    ],
};

pub(crate) static FETCH_RESPONSE__EPOCH_END_OFFSET: Schema = Schema {
    name: "EpochEndOffset",
    versions: (4, 18),
    flexible_from: 12,
    fields: &[
        f("epoch", 12, 18, Kind::Int32),
        f("end_offset", 12, 18, Kind::Int64),
    ],
};

pub(crate) static FETCH_RESPONSE__LEADER_ID_AND_EPOCH: Schema = Schema {
    name: "LeaderIdAndEpoch",
    versions: (4, 18),
    flexible_from: 12,
    fields: &[
        f("leader_id", 12, 18, Kind::Int32),
        f("leader_epoch", 12, 18, Kind::Int32),
    ],
};

pub(crate) static FETCH_RESPONSE__SNAPSHOT_ID: Schema = Schema {
    name: "SnapshotId",
    versions: (4, 18),
    flexible_from: 12,
    fields: &[
        f("end_offset", 4, 18, Kind::Int64),
        f("epoch", 4, 18, Kind::Int32),
    ],
};

pub(crate) static FETCH_RESPONSE__ABORTED_TRANSACTION: Schema = Schema {
    name: "AbortedTransaction",
    versions: (4, 18),
    flexible_from: 12,
    fields: &[
        f("producer_id", 4, 18, Kind::Int64),
        f("first_offset", 4, 18, Kind::Int64),
    ],
};

pub(crate) static FETCH_RESPONSE__PARTITION_DATA: Schema = Schema {
    name: "PartitionData",
    versions: (4, 18),
    flexible_from: 12,
    fields: &[
        f("partition_index", 4, 18, Kind::Int32),
        f("error_code", 4, 18, Kind::Int16),
        f("high_watermark", 4, 18, Kind::Int64),
        f("last_stable_offset", 4, 18, Kind::Int64),
        f("log_start_offset", 5, 18, Kind::Int64),
        f("diverging_epoch", 12, 18, Kind::Struct(&FETCH_RESPONSE__EPOCH_END_OFFSET)).tag(0),
        f("current_leader", 12, 18, Kind::Struct(&FETCH_RESPONSE__LEADER_ID_AND_EPOCH)).tag(1),
        f("snapshot_id", 12, 18, Kind::Struct(&FETCH_RESPONSE__SNAPSHOT_ID)).tag(2),
        f("aborted_transactions", 4, 18, nullable_array(&FETCH_RESPONSE__ABORTED_TRANSACTION)).compact_from(12),
        f("preferred_read_replica", 11, 18, Kind::Int32),
        f("records", 4, 18, NULLABLE_BYTES).compact_from(12),
    ],
};

pub(crate) static FETCH_RESPONSE__FETCHABLE_TOPIC_RESPONSE: Schema = Schema {
    name: "FetchableTopicResponse",
    versions: (4, 18),
    flexible_from: 12,
    fields: &[
        f("topic", 4, 12, STR).compact_from(12),
        f("topic_id", 13, 18, Kind::Uuid),
        f("partitions", 4, 18, array(&FETCH_RESPONSE__PARTITION_DATA)).compact_from(12),
    ],
};

pub(crate) static FETCH_RESPONSE__NODE_ENDPOINT: Schema = Schema {
    name: "NodeEndpoint",
    versions: (4, 18),
    flexible_from: 12,
    fields: &[
        f("node_id", 16, 18, Kind::Int32),
        f("host", 16, 18, STR).compact_from(16),
        f("port", 16, 18, Kind::Int32),
        f("rack", 16, 18, NULLABLE_STR).compact_from(16),
    ],
};

pub(crate) static FETCH_RESPONSE: Schema = Schema {
    name: "FetchResponse",
    versions: (4, 18),
    flexible_from: 12,
    fields: &[
        f("throttle_time_ms", 4, 18, Kind::Int32),
        f("error_code", 7, 18, Kind::Int16),
        f("session_id", 7, 18, Kind::Int32),
        f("responses", 4, 18, array(&FETCH_RESPONSE__FETCHABLE_TOPIC_RESPONSE)).compact_from(12),
        f("node_endpoints", 16, 18, array(&FETCH_RESPONSE__NODE_ENDPOINT)).tag(0),
    ],
};

pub(crate) static OFFSET_FOR_LEADER_EPOCH_RESPONSE__EPOCH_END_OFFSET: Schema = Schema {
    name: "EpochEndOffset",
    versions: (2, 4),
    flexible_from: 4,
    fields: &[
        f("error_code", 2, 4, Kind::Int16),
        f("partition", 2, 4, Kind::Int32),
        f("leader_epoch", 2, 4, Kind::Int32),
        f("end_offset", 2, 4, Kind::Int64),
    ],
};

pub(crate) static OFFSET_FOR_LEADER_EPOCH_RESPONSE__OFFSET_FOR_LEADER_TOPIC_RESULT: Schema = Schema {
    name: "OffsetForLeaderTopicResult",
    versions: (2, 4),
    flexible_from: 4,
    fields: &[
        f("topic", 2, 4, STR).compact_from(4),
        f("partitions", 2, 4, array(&OFFSET_FOR_LEADER_EPOCH_RESPONSE__EPOCH_END_OFFSET)).compact_from(4),
    ],
};

pub(crate) static OFFSET_FOR_LEADER_EPOCH_RESPONSE: Schema = Schema {
    name: "OffsetForLeaderEpochResponse",
    versions: (2, 4),
    flexible_from: 4,
    fields: &[
        f("throttle_time_ms", 2, 4, Kind::Int32),
        f("topics", 2, 4, array(&OFFSET_FOR_LEADER_EPOCH_RESPONSE__OFFSET_FOR_LEADER_TOPIC_RESULT)).compact_from(4),
    ],
};

