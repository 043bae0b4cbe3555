//! MirrorMaker 2's record formats for the topics other tools read: `<source>.checkpoints.internal`
//! and `heartbeats`. Keys and values are Kafka protocol structs (`Schema.write` in Kafka's
//! `org.apache.kafka.common.protocol.types`): fields in order, `INT16`/`INT32`/`INT64`
//! big-endian, `STRING` as an `INT16` length and UTF-8 bytes; a value starts with a header
//! struct holding its schema version (0 for both).
//!
//! | record | key | value (after `version: INT16`) |
//! |---|---|---|
//! | checkpoint | `group: STRING, topic: STRING, partition: INT32` | `upstream_offset: INT64, offset: INT64, metadata: STRING` |
//! | heartbeat | `source_cluster_alias: STRING, target_cluster_alias: STRING` | `timestamp: INT64` |
//!
//! A checkpoint's topic is the topic's name on the target (the remote topic), as MirrorMaker
//! 2 writes it: `RemoteClusterUtils.translateOffsets` hands it straight to a consumer there.

/// The version of both value schemas.
pub const VERSION: i16 = 0;

/// Why bytes are not a record of these formats.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The bytes end inside a field.
    #[error("cut short reading `{0}`")]
    Short(&'static str),
    /// A string is not UTF-8 or has a negative length.
    #[error("field `{0}` is not a string")]
    BadString(&'static str),
    /// A value of a version this code does not know.
    #[error("value version {0} (only {VERSION} is known)")]
    Version(i16),
    /// Bytes after the last field.
    #[error("{0} bytes after the last field")]
    Trailing(usize),
    /// A string longer than an `INT16` length can say.
    #[error("field `{0}` is longer than 32767 bytes")]
    TooLong(&'static str),
}

/// A checkpoint: where a consumer group resumes on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The consumer group.
    pub group: String,
    /// The topic's name on the target.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The group's committed offset on the source.
    pub upstream_offset: i64,
    /// Its translation on the target.
    pub downstream_offset: i64,
    /// The metadata committed with it.
    pub metadata: String,
}

/// A heartbeat: `source` -> `target` was alive at `timestamp_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// Source cluster alias.
    pub source: String,
    /// Target cluster alias.
    pub target: String,
    /// When it was written (Unix ms).
    pub timestamp_ms: i64,
}

fn put_string(out: &mut Vec<u8>, field: &'static str, s: &str) -> Result<(), FormatError> {
    let len = i16::try_from(s.len()).map_err(|_| FormatError::TooLong(field))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], FormatError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(FormatError::Short(field))?;
        self.0 = rest;
        Ok(*head)
    }

    fn i16(&mut self, field: &'static str) -> Result<i16, FormatError> {
        self.take::<2>(field).map(i16::from_be_bytes)
    }

    fn i32(&mut self, field: &'static str) -> Result<i32, FormatError> {
        self.take::<4>(field).map(i32::from_be_bytes)
    }

    fn i64(&mut self, field: &'static str) -> Result<i64, FormatError> {
        self.take::<8>(field).map(i64::from_be_bytes)
    }

    fn string(&mut self, field: &'static str) -> Result<String, FormatError> {
        let len = usize::try_from(self.i16(field)?).map_err(|_| FormatError::BadString(field))?;
        if self.0.len() < len {
            return Err(FormatError::Short(field));
        }
        let (s, rest) = self.0.split_at(len);
        self.0 = rest;
        String::from_utf8(s.to_vec()).map_err(|_| FormatError::BadString(field))
    }

    fn end(self) -> Result<(), FormatError> {
        match self.0.len() {
            0 => Ok(()),
            n => Err(FormatError::Trailing(n)),
        }
    }

    fn version(&mut self) -> Result<(), FormatError> {
        match self.i16("version")? {
            VERSION => Ok(()),
            v => Err(FormatError::Version(v)),
        }
    }
}

impl Checkpoint {
    /// The record key.
    pub fn key(&self) -> Result<Vec<u8>, FormatError> {
        let mut out = Vec::with_capacity(self.group.len() + self.topic.len() + 8);
        put_string(&mut out, "group", &self.group)?;
        put_string(&mut out, "topic", &self.topic)?;
        out.extend_from_slice(&self.partition.to_be_bytes());
        Ok(out)
    }

    /// The record value.
    pub fn value(&self) -> Result<Vec<u8>, FormatError> {
        let mut out = Vec::with_capacity(20 + self.metadata.len());
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&self.upstream_offset.to_be_bytes());
        out.extend_from_slice(&self.downstream_offset.to_be_bytes());
        put_string(&mut out, "metadata", &self.metadata)?;
        Ok(out)
    }

    /// Decodes a record of `<source>.checkpoints.internal`.
    pub fn decode(key: &[u8], value: &[u8]) -> Result<Checkpoint, FormatError> {
        let mut k = Reader(key);
        let group = k.string("group")?;
        let topic = k.string("topic")?;
        let partition = k.i32("partition")?;
        k.end()?;
        let mut v = Reader(value);
        v.version()?;
        let upstream_offset = v.i64("upstream_offset")?;
        let downstream_offset = v.i64("offset")?;
        let metadata = v.string("metadata")?;
        v.end()?;
        Ok(Checkpoint {
            group,
            topic,
            partition,
            upstream_offset,
            downstream_offset,
            metadata,
        })
    }
}

impl Heartbeat {
    /// The record key.
    pub fn key(&self) -> Result<Vec<u8>, FormatError> {
        let mut out = Vec::with_capacity(self.source.len() + self.target.len() + 4);
        put_string(&mut out, "source_cluster_alias", &self.source)?;
        put_string(&mut out, "target_cluster_alias", &self.target)?;
        Ok(out)
    }

    /// The record value.
    pub fn value(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(10);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        out
    }

    /// Decodes a record of `heartbeats`.
    pub fn decode(key: &[u8], value: &[u8]) -> Result<Heartbeat, FormatError> {
        let mut k = Reader(key);
        let source = k.string("source_cluster_alias")?;
        let target = k.string("target_cluster_alias")?;
        k.end()?;
        let mut v = Reader(value);
        v.version()?;
        let timestamp_ms = v.i64("timestamp")?;
        v.end()?;
        Ok(Heartbeat {
            source,
            target,
            timestamp_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_has_kafkas_struct_layout_and_round_trips() {
        let c = Checkpoint {
            group: "g".into(),
            topic: "a.t".into(),
            partition: 2,
            upstream_offset: 7,
            downstream_offset: 5,
            metadata: "".into(),
        };
        let key = c.key().unwrap();
        assert_eq!(key, b"\0\x01g\0\x03a.t\0\0\0\x02");
        let value = c.value().unwrap();
        assert_eq!(
            value,
            b"\0\0\0\0\0\0\0\0\0\x07\0\0\0\0\0\0\0\x05\0\0".to_vec()
        );
        assert_eq!(Checkpoint::decode(&key, &value).unwrap(), c);
        assert_eq!(
            Checkpoint::decode(&key, &value[..10]),
            Err(FormatError::Short("offset"))
        );
        let mut v1 = value.clone();
        v1[1] = 1;
        assert_eq!(Checkpoint::decode(&key, &v1), Err(FormatError::Version(1)));
        let mut long = key.clone();
        long.push(0);
        assert_eq!(
            Checkpoint::decode(&long, &value),
            Err(FormatError::Trailing(1))
        );
    }

    #[test]
    fn a_heartbeat_has_kafkas_struct_layout_and_round_trips() {
        let h = Heartbeat {
            source: "a".into(),
            target: "b".into(),
            timestamp_ms: 1,
        };
        let key = h.key().unwrap();
        assert_eq!(key, b"\0\x01a\0\x01b");
        assert_eq!(h.value(), b"\0\0\0\0\0\0\0\0\0\x01");
        assert_eq!(Heartbeat::decode(&key, &h.value()).unwrap(), h);
        assert_eq!(
            Heartbeat::decode(&key[..3], &h.value()),
            Err(FormatError::Short("target_cluster_alias"))
        );
    }
}
