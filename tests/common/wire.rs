//! Hand-encoded Kafka frames over raw TCP, for the tests that send what no client would.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::*;

/// CRC-32C (Castagnoli), as used by record batch v2.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        if z < 0x80 {
            out.push(z as u8);
            return;
        }
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
}

/// Encodes an uncompressed record batch v2 with the given (key, value)
/// records, base offset 0, no producer id. The CRC is correct.
pub fn encode_record_batch(records: &[(Option<&[u8]>, &[u8])], base_ts: i64) -> Vec<u8> {
    let mut recs = Vec::new();
    for (i, (k, v)) in records.iter().enumerate() {
        let mut body = Vec::new();
        body.push(0u8); // attributes
        put_varint(&mut body, 0); // timestamp delta
        put_varint(&mut body, i as i64); // offset delta
        match k {
            Some(k) => {
                put_varint(&mut body, k.len() as i64);
                body.extend_from_slice(k);
            }
            None => put_varint(&mut body, -1),
        }
        put_varint(&mut body, v.len() as i64);
        body.extend_from_slice(v);
        put_varint(&mut body, 0); // headers
        put_varint(&mut recs, body.len() as i64);
        recs.extend_from_slice(&body);
    }
    // Everything the CRC covers: attributes .. end of records.
    let mut tail = Vec::new();
    tail.extend_from_slice(&0i16.to_be_bytes()); // attributes
    tail.extend_from_slice(&(records.len() as i32 - 1).to_be_bytes()); // last offset delta
    tail.extend_from_slice(&base_ts.to_be_bytes()); // base timestamp
    tail.extend_from_slice(&base_ts.to_be_bytes()); // max timestamp
    tail.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    tail.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    tail.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    tail.extend_from_slice(&(records.len() as i32).to_be_bytes());
    tail.extend_from_slice(&recs);

    let mut batch = Vec::new();
    batch.extend_from_slice(&0i64.to_be_bytes()); // base offset
    let batch_len = 4 + 1 + 4 + tail.len(); // epoch + magic + crc + tail
    batch.extend_from_slice(&(batch_len as i32).to_be_bytes());
    batch.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    batch.push(2); // magic
    batch.extend_from_slice(&crc32c(&tail).to_be_bytes());
    batch.extend_from_slice(&tail);
    batch
}

/// Byte offset inside an encoded batch of the first byte covered by the CRC.
pub const BATCH_CRC_COVERED_START: usize = 8 + 4 + 4 + 1 + 4;

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A complete size-prefixed request: header v1 (api key, version,
/// correlation id, client id) followed by `body`.
pub fn encode_request(api_key: i16, version: i16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::new();
    msg.extend_from_slice(&api_key.to_be_bytes());
    msg.extend_from_slice(&version.to_be_bytes());
    msg.extend_from_slice(&correlation_id.to_be_bytes());
    put_str(&mut msg, "strait-e2e-raw");
    msg.extend_from_slice(body);
    let mut frame = (msg.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&msg);
    frame
}

/// Body of a Produce request, versions 3..=8 (identical layout): null
/// transactional id, acks, timeout, one topic with one partition.
pub fn encode_produce_body(topic: &str, partition: i32, acks: i16, batch: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(-1i16).to_be_bytes()); // transactional_id = null
    b.extend_from_slice(&acks.to_be_bytes());
    b.extend_from_slice(&10_000i32.to_be_bytes()); // timeout ms
    b.extend_from_slice(&1i32.to_be_bytes()); // one topic
    put_str(&mut b, topic);
    b.extend_from_slice(&1i32.to_be_bytes()); // one partition
    b.extend_from_slice(&partition.to_be_bytes());
    b.extend_from_slice(&(batch.len() as i32).to_be_bytes());
    b.extend_from_slice(batch);
    b
}

/// A raw TCP connection to the broker with bounded reads/writes.
pub struct RawConn {
    pub stream: TcpStream,
}

impl RawConn {
    pub fn connect(addr: SocketAddr) -> RawConn {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        RawConn { stream }
    }

    /// Writes bytes; a broker that already closed the connection is fine.
    pub fn write_lossy(&mut self, data: &[u8]) {
        let _ = self.stream.write_all(data);
        let _ = self.stream.flush();
    }

    pub fn send(&mut self, data: &[u8]) {
        self.stream.write_all(data).expect("write request");
    }

    /// Reads one size-prefixed response; returns the bytes after the size.
    pub fn read_response(&mut self) -> Vec<u8> {
        let mut len = [0u8; 4];
        self.stream
            .read_exact(&mut len)
            .expect("read response size (connection closed or timed out)");
        let len = i32::from_be_bytes(len);
        assert!(
            (4..64 * 1024 * 1024).contains(&len),
            "implausible response size {len}"
        );
        let mut buf = vec![0u8; len as usize];
        self.stream
            .read_exact(&mut buf)
            .expect("read response body");
        buf
    }

    /// Waits (bounded by the read timeout) for the peer to close or to send
    /// something; returns true if the connection was closed/reset.
    pub fn closed_by_peer(&mut self) -> bool {
        let mut buf = [0u8; 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return false
                }
                Err(_) => return true,
            }
        }
    }
}

/// Minimal big-endian reader for responses.
pub struct Reader<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        assert!(
            self.pos + n <= self.buf.len(),
            "response truncated: need {n} bytes at {} of {}",
            self.pos,
            self.buf.len()
        );
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        s
    }
    pub fn i16(&mut self) -> i16 {
        i16::from_be_bytes(self.take(2).try_into().unwrap())
    }
    pub fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.take(4).try_into().unwrap())
    }
    pub fn i64(&mut self) -> i64 {
        i64::from_be_bytes(self.take(8).try_into().unwrap())
    }
    pub fn string(&mut self) -> String {
        let n = self.i16();
        assert!(n >= 0, "unexpected null string");
        String::from_utf8(self.take(n as usize).to_vec()).expect("utf8 string")
    }
}

/// ApiVersions v0 over a raw connection: (api_key, min, max) for every API.
pub fn raw_api_versions(conn: &mut RawConn) -> Vec<(i16, i16, i16)> {
    conn.send(&encode_request(18, 0, 4242, &[]));
    let resp = conn.read_response();
    let mut r = Reader::new(&resp);
    assert_eq!(r.i32(), 4242, "ApiVersions: correlation id not echoed");
    assert_eq!(r.i16(), 0, "ApiVersions v0: error code");
    let n = r.i32();
    (0..n).map(|_| (r.i16(), r.i16(), r.i16())).collect()
}

/// Sends a Produce request (choosing a version in 3..=8 the broker supports,
/// all of which share one request layout and response prefix) and returns
/// the partition's error code and base offset.
pub fn raw_produce(
    broker: &Broker,
    topic: &str,
    partition: i32,
    batch: &[u8],
    correlation_id: i32,
) -> (i16, i64) {
    let mut conn = RawConn::connect(broker.addr());
    let versions = raw_api_versions(&mut conn);
    let &(_, min, max) = versions
        .iter()
        .find(|(k, _, _)| *k == 0)
        .expect("broker does not advertise Produce in ApiVersions");
    let version = min.max(3);
    assert!(
        version <= max && version <= 8,
        "broker's Produce versions {min}..={max} have no overlap with the 3..=8 the raw test encodes"
    );
    conn.send(&encode_request(
        0,
        version,
        correlation_id,
        &encode_produce_body(topic, partition, 1, batch),
    ));
    let resp = conn.read_response();
    let mut r = Reader::new(&resp);
    assert_eq!(
        r.i32(),
        correlation_id,
        "Produce: correlation id not echoed"
    );
    assert_eq!(r.i32(), 1, "Produce response: one topic");
    assert_eq!(r.string(), topic, "Produce response: topic name");
    assert_eq!(r.i32(), 1, "Produce response: one partition");
    assert_eq!(r.i32(), partition, "Produce response: partition index");
    let error_code = r.i16();
    let base_offset = r.i64();
    (error_code, base_offset)
}

/// Sends one request encoded with kafka-protocol to `addr` on a fresh connection and decodes
/// the answer. Every step is bounded (connect 5 s, read and write 15 s); an error says which
/// step failed, so a caller polling a node that is down can retry.
pub fn try_raw_call_at<Req, Resp>(
    addr: SocketAddr,
    key: kafka_protocol::messages::ApiKey,
    version: i16,
    req: &Req,
) -> Result<Resp, String>
where
    Req: kafka_protocol::protocol::Encodable,
    Resp: kafka_protocol::protocol::Decodable,
{
    use kafka_protocol::messages::{RequestHeader, ResponseHeader};
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
    const CORRELATION_ID: i32 = 77;
    let mut body = bytes::BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(CORRELATION_ID)
        .with_client_id(Some(StrBytes::from_static_str("strait-e2e-raw")))
        .encode(&mut body, key.request_header_version(version))
        .map_err(|e| format!("encode request header: {e}"))?;
    req.encode(&mut body, version)
        .map_err(|e| format!("encode request: {e}"))?;
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .and_then(|()| stream.set_write_timeout(Some(Duration::from_secs(15))))
        .map_err(|e| format!("socket timeouts: {e}"))?;
    stream
        .write_all(&frame)
        .map_err(|e| format!("send {key:?} to {addr}: {e}"))?;
    let mut len = [0u8; 4];
    stream
        .read_exact(&mut len)
        .map_err(|e| format!("read {key:?} response size from {addr}: {e}"))?;
    let len = i32::from_be_bytes(len);
    if !(4..64 * 1024 * 1024).contains(&len) {
        return Err(format!(
            "implausible {key:?} response size {len} from {addr}"
        ));
    }
    let mut buf = vec![0u8; len as usize];
    stream
        .read_exact(&mut buf)
        .map_err(|e| format!("read {key:?} response from {addr}: {e}"))?;
    let mut resp = bytes::Bytes::from(buf);
    let header = ResponseHeader::decode(&mut resp, key.response_header_version(version))
        .map_err(|e| format!("decode {key:?} response header: {e}"))?;
    if header.correlation_id != CORRELATION_ID {
        return Err(format!(
            "{key:?} response has correlation id {}, sent {CORRELATION_ID}",
            header.correlation_id
        ));
    }
    Resp::decode(&mut resp, version).map_err(|e| format!("decode {key:?} response: {e}"))
}

/// [`try_raw_call_at`] that panics on failure.
pub fn raw_call_at<Req, Resp>(
    addr: SocketAddr,
    key: kafka_protocol::messages::ApiKey,
    version: i16,
    req: &Req,
) -> Resp
where
    Req: kafka_protocol::protocol::Encodable,
    Resp: kafka_protocol::protocol::Decodable,
{
    try_raw_call_at(addr, key, version, req).unwrap_or_else(|e| panic!("{e}"))
}
