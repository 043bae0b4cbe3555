//! The records a group coordinator keeps in `__consumer_offsets`, in Apache Kafka's own formats
//! (`OffsetCommitKey`/`OffsetCommitValue` v3, `GroupMetadataKey`/`GroupMetadataValue` v3), so a
//! Kafka tool that decodes the offsets topic reads ours too.
//!
//! A key starts with an int16 version: 0 and 1 are offset commits, 2 is group metadata. A record
//! with a null value is a tombstone: the offset or the group is gone.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The internal topic holding groups and committed offsets (Kafka's name).
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

const OFFSET_KEY_VERSION: i16 = 1;
const GROUP_KEY_VERSION: i16 = 2;
const OFFSET_VALUE_VERSION: i16 = 3;
const GROUP_VALUE_VERSION: i16 = 3;

/// The `__consumer_offsets` partition that owns `group`: Kafka's
/// `abs(groupId.hashCode()) % partitions`, with Java's `String.hashCode` over UTF-16 units.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    assert!(partitions > 0, "offsets topic needs at least one partition");
    let mut hash: i32 = 0;
    for unit in group.encode_utf16() {
        hash = hash.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    // Kafka's Utils.abs: masks the sign bit, so i32::MIN maps to 0 rather than overflowing.
    (hash & 0x7fff_ffff) % partitions
}

/// A committed offset as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    /// The next offset the group will consume.
    pub offset: i64,
    /// Leader epoch of the committed record, -1 if unknown.
    pub leader_epoch: i32,
    /// Client metadata string.
    pub metadata: String,
    /// When the commit was accepted.
    pub commit_timestamp_ms: i64,
}

/// One member as stored in group metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    /// Member id.
    pub member_id: String,
    /// Static membership id.
    pub group_instance_id: Option<String>,
    /// Client id of the member.
    pub client_id: String,
    /// Where the member connects from.
    pub client_host: String,
    /// Rebalance timeout.
    pub rebalance_timeout_ms: i32,
    /// Session timeout.
    pub session_timeout_ms: i32,
    /// Subscription metadata for the chosen protocol.
    pub subscription: Bytes,
    /// The assignment the leader gave it.
    pub assignment: Bytes,
}

/// A group's metadata as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    /// Protocol type (`consumer`, `connect`, ...); empty for an offsets-only group.
    pub protocol_type: String,
    /// Generation.
    pub generation: i32,
    /// Chosen protocol (assignor) name.
    pub protocol: Option<String>,
    /// Leader member id.
    pub leader: Option<String>,
    /// When the group entered its current state.
    pub current_state_timestamp_ms: i64,
    /// Members.
    pub members: Vec<MemberValue>,
}

/// A decoded `__consumer_offsets` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredRecord {
    /// An offset commit; `None` is a tombstone.
    Offset {
        /// Group.
        group: String,
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The commit, or None when deleted.
        value: Option<OffsetValue>,
    },
    /// Group metadata; `None` is a tombstone (group deleted).
    Group {
        /// Group.
        group: String,
        /// The metadata, or None when deleted.
        value: Option<GroupValue>,
    },
}

/// A record that does not decode.
#[derive(Debug, thiserror::Error)]
#[error("undecodable __consumer_offsets record: {0}")]
pub struct DecodeError(pub String);

fn put_string(buf: &mut BytesMut, s: &str) {
    let len = i16::try_from(s.len()).unwrap_or(i16::MAX);
    buf.put_i16(len);
    buf.put_slice(&s.as_bytes()[..len as usize]);
}

fn put_nullable_string(buf: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_string(buf, s),
        None => buf.put_i16(-1),
    }
}

fn put_bytes(buf: &mut BytesMut, b: &[u8]) {
    buf.put_i32(i32::try_from(b.len()).unwrap_or(i32::MAX));
    buf.put_slice(b);
}

struct Reader(Bytes);

impl Reader {
    fn need(&self, n: usize, what: &str) -> Result<(), DecodeError> {
        if self.0.remaining() < n {
            return Err(DecodeError(format!("truncated at {what}")));
        }
        Ok(())
    }
    fn i16(&mut self, what: &str) -> Result<i16, DecodeError> {
        self.need(2, what)?;
        Ok(self.0.get_i16())
    }
    fn i32(&mut self, what: &str) -> Result<i32, DecodeError> {
        self.need(4, what)?;
        Ok(self.0.get_i32())
    }
    fn i64(&mut self, what: &str) -> Result<i64, DecodeError> {
        self.need(8, what)?;
        Ok(self.0.get_i64())
    }
    fn nullable_string(&mut self, what: &str) -> Result<Option<String>, DecodeError> {
        let len = self.i16(what)?;
        if len < 0 {
            return Ok(None);
        }
        let len = len as usize;
        self.need(len, what)?;
        let raw = self.0.split_to(len);
        String::from_utf8(raw.to_vec())
            .map(Some)
            .map_err(|_| DecodeError(format!("{what} is not UTF-8")))
    }
    fn string(&mut self, what: &str) -> Result<String, DecodeError> {
        self.nullable_string(what)?
            .ok_or_else(|| DecodeError(format!("{what} is null")))
    }
    fn bytes(&mut self, what: &str) -> Result<Bytes, DecodeError> {
        let len = self.i32(what)?;
        if len < 0 {
            return Ok(Bytes::new());
        }
        let len = len as usize;
        self.need(len, what)?;
        // Copied: a slice would keep the whole buffer the log was read into alive for as long
        // as the group keeps the value (member subscriptions and assignments live for days).
        Ok(Bytes::copy_from_slice(&self.0.split_to(len)))
    }
}

/// The key of a committed offset.
pub fn offset_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut buf = BytesMut::with_capacity(8 + group.len() + topic.len());
    buf.put_i16(OFFSET_KEY_VERSION);
    put_string(&mut buf, group);
    put_string(&mut buf, topic);
    buf.put_i32(partition);
    buf.freeze()
}

/// The value of a committed offset.
pub fn offset_value(v: &OffsetValue) -> Bytes {
    let mut buf = BytesMut::with_capacity(26 + v.metadata.len());
    buf.put_i16(OFFSET_VALUE_VERSION);
    buf.put_i64(v.offset);
    buf.put_i32(v.leader_epoch);
    put_string(&mut buf, &v.metadata);
    buf.put_i64(v.commit_timestamp_ms);
    buf.freeze()
}

/// The key of a group's metadata.
pub fn group_key(group: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(4 + group.len());
    buf.put_i16(GROUP_KEY_VERSION);
    put_string(&mut buf, group);
    buf.freeze()
}

/// The value of a group's metadata.
pub fn group_value(v: &GroupValue) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(GROUP_VALUE_VERSION);
    put_string(&mut buf, &v.protocol_type);
    buf.put_i32(v.generation);
    put_nullable_string(&mut buf, v.protocol.as_deref());
    put_nullable_string(&mut buf, v.leader.as_deref());
    buf.put_i64(v.current_state_timestamp_ms);
    buf.put_i32(i32::try_from(v.members.len()).unwrap_or(i32::MAX));
    for m in &v.members {
        put_string(&mut buf, &m.member_id);
        put_nullable_string(&mut buf, m.group_instance_id.as_deref());
        put_string(&mut buf, &m.client_id);
        put_string(&mut buf, &m.client_host);
        buf.put_i32(m.rebalance_timeout_ms);
        buf.put_i32(m.session_timeout_ms);
        put_bytes(&mut buf, &m.subscription);
        put_bytes(&mut buf, &m.assignment);
    }
    buf.freeze()
}

fn decode_offset_value(value: Bytes) -> Result<OffsetValue, DecodeError> {
    let mut r = Reader(value);
    let version = r.i16("offset value version")?;
    // v0: offset, metadata, timestamp; v1 adds an expire timestamp; v2 drops it; v3 adds the
    // leader epoch. Read them all, write v3.
    let offset = r.i64("offset")?;
    let leader_epoch = if version >= 3 {
        r.i32("leader epoch")?
    } else {
        -1
    };
    let metadata = r.string("metadata")?;
    let commit_timestamp_ms = r.i64("commit timestamp")?;
    if version == 1 {
        r.i64("expire timestamp")?;
    }
    if !(0..=4).contains(&version) {
        return Err(DecodeError(format!("offset value version {version}")));
    }
    Ok(OffsetValue {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
    })
}

fn decode_group_value(value: Bytes) -> Result<GroupValue, DecodeError> {
    let mut r = Reader(value);
    let version = r.i16("group value version")?;
    if !(0..=3).contains(&version) {
        return Err(DecodeError(format!("group value version {version}")));
    }
    let protocol_type = r.string("protocol type")?;
    let generation = r.i32("generation")?;
    let protocol = r.nullable_string("protocol")?;
    let leader = r.nullable_string("leader")?;
    let current_state_timestamp_ms = if version >= 2 {
        r.i64("state timestamp")?
    } else {
        -1
    };
    let count = r.i32("member count")?;
    let mut members = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(10_000));
    for _ in 0..count.max(0) {
        let member_id = r.string("member id")?;
        let group_instance_id = if version >= 3 {
            r.nullable_string("group instance id")?
        } else {
            None
        };
        let client_id = r.string("client id")?;
        let client_host = r.string("client host")?;
        let rebalance_timeout_ms = if version >= 1 {
            r.i32("rebalance timeout")?
        } else {
            -1
        };
        let session_timeout_ms = r.i32("session timeout")?;
        let rebalance_timeout_ms = if version >= 1 {
            rebalance_timeout_ms
        } else {
            session_timeout_ms
        };
        let subscription = r.bytes("subscription")?;
        let assignment = r.bytes("assignment")?;
        members.push(MemberValue {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    Ok(GroupValue {
        protocol_type,
        generation,
        protocol,
        leader,
        current_state_timestamp_ms,
        members,
    })
}

/// Decodes one record of the offsets topic.
pub fn decode(key: Bytes, value: Option<Bytes>) -> Result<StoredRecord, DecodeError> {
    let mut r = Reader(key);
    let version = r.i16("key version")?;
    match version {
        0 | 1 => {
            let group = r.string("group")?;
            let topic = r.string("topic")?;
            let partition = r.i32("partition")?;
            let value = value.map(decode_offset_value).transpose()?;
            Ok(StoredRecord::Offset {
                group,
                topic,
                partition,
                value,
            })
        }
        2 => {
            let group = r.string("group")?;
            let value = value.map(decode_group_value).transpose()?;
            Ok(StoredRecord::Group { group, value })
        }
        other => Err(DecodeError(format!("key version {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_matches_kafka_for_known_groups() {
        let java_hash = |s: &str| {
            s.encode_utf16()
                .fold(0i32, |h, u| h.wrapping_mul(31).wrapping_add(i32::from(u)))
        };
        // "a".hashCode() == 97 in Java.
        assert_eq!(java_hash("a"), 97);
        assert_eq!(partition_for("a", 50), 97 % 50);
        // "polygenelubricants".hashCode() == Integer.MIN_VALUE in Java: Kafka's abs gives 0.
        assert_eq!(java_hash("polygenelubricants"), i32::MIN);
        assert_eq!(partition_for("polygenelubricants", 50), 0);
        for g in ["", "g", "strait-mirror-a-to-b", "ümlaut"] {
            let p = partition_for(g, 50);
            assert!((0..50).contains(&p), "{g}: {p}");
        }
    }

    #[test]
    fn offset_records_round_trip() {
        let v = OffsetValue {
            offset: 42,
            leader_epoch: 3,
            metadata: "meta".into(),
            commit_timestamp_ms: 1_700_000_000_000,
        };
        let rec = decode(offset_key("g", "t", 7), Some(offset_value(&v))).unwrap();
        assert_eq!(
            rec,
            StoredRecord::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 7,
                value: Some(v),
            }
        );
        let tomb = decode(offset_key("g", "t", 7), None).unwrap();
        assert!(matches!(tomb, StoredRecord::Offset { value: None, .. }));
    }

    #[test]
    fn group_records_round_trip() {
        let v = GroupValue {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            current_state_timestamp_ms: 17,
            members: vec![MemberValue {
                member_id: "m1".into(),
                group_instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 10_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        let rec = decode(group_key("g"), Some(group_value(&v))).unwrap();
        assert_eq!(
            rec,
            StoredRecord::Group {
                group: "g".into(),
                value: Some(v),
            }
        );
    }

    #[test]
    fn truncated_values_are_errors_not_panics() {
        let full = offset_value(&OffsetValue {
            offset: 1,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: 0,
        });
        for cut in 0..full.len() {
            assert!(decode(offset_key("g", "t", 0), Some(full.slice(..cut))).is_err());
        }
        assert!(decode(Bytes::from_static(&[0, 9]), None).is_err());
    }
}
