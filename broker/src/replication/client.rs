//! The smallest Kafka client a follower needs: one connection to a leader's Kafka listener,
//! one request at a time, encoded and decoded with `kafka-protocol`.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest response accepted (a fetch response is bounded by
/// `replica_fetch_response_max_bytes`, far below this).
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// Why a call failed; the connection is unusable afterwards.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting, sending or receiving failed.
    #[error("{addr}: {source}")]
    Io {
        /// Peer.
        addr: String,
        /// Error.
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("{addr}: no response within {timeout_ms} ms")]
    Timeout {
        /// Peer.
        addr: String,
        /// Limit.
        timeout_ms: u64,
    },
    /// The bytes were not a valid response.
    #[error("{addr}: malformed response: {reason}")]
    Malformed {
        /// Peer.
        addr: String,
        /// Why.
        reason: String,
    },
}

/// One connection.
pub struct KafkaClient {
    addr: String,
    stream: TcpStream,
    correlation_id: i32,
    client_id: StrBytes,
    /// Responses are read into this one buffer, so a follower's fetches reuse its memory
    /// (each response is split off it; its records are dropped once appended).
    inbuf: BytesMut,
}

impl KafkaClient {
    /// Connects within `timeout`.
    pub async fn connect(
        addr: &str,
        client_id: &str,
        timeout: Duration,
    ) -> Result<KafkaClient, ClientError> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => {
                return Err(ClientError::Io {
                    addr: addr.to_string(),
                    source,
                })
            }
            Err(_) => {
                return Err(ClientError::Timeout {
                    addr: addr.to_string(),
                    timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                })
            }
        };
        let _ = stream.set_nodelay(true);
        Ok(KafkaClient {
            addr: addr.to_string(),
            stream,
            correlation_id: 0,
            client_id: StrBytes::from_string(client_id.to_string()),
            inbuf: BytesMut::new(),
        })
    }

    /// Sends `req` as `key` v`version` and waits up to `timeout` for the response.
    pub async fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, ClientError> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let correlation_id = self.correlation_id;
        let malformed = |reason: String| ClientError::Malformed {
            addr: self.addr.clone(),
            reason,
        };
        let mut buf = BytesMut::with_capacity(256);
        buf.extend_from_slice(&[0u8; 4]);
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(self.client_id.clone()))
            .encode(&mut buf, key.request_header_version(version))
            .map_err(|e| malformed(format!("cannot encode request header: {e}")))?;
        req.encode(&mut buf, version)
            .map_err(|e| malformed(format!("cannot encode request: {e}")))?;
        let len =
            i32::try_from(buf.len() - 4).map_err(|_| malformed("request too large".into()))?;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        let addr = self.addr.clone();
        let exchange = async {
            self.stream.write_all(&buf).await?;
            let mut len = [0u8; 4];
            self.stream.read_exact(&mut len).await?;
            let len = usize::try_from(i32::from_be_bytes(len)).unwrap_or(usize::MAX);
            if len > MAX_RESPONSE_BYTES {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("response of {len} bytes"),
                ));
            }
            self.inbuf.clear();
            // The previous response's memory once its records are gone; else exactly the
            // size needed (`reserve` would double, and a doubled buffer past the kept limit
            // would be let go after every large response).
            if !self.inbuf.try_reclaim(len) {
                self.inbuf = BytesMut::with_capacity(len);
            }
            while self.inbuf.len() < len {
                let missing = (len - self.inbuf.len()) as u64;
                if (&mut self.stream)
                    .take(missing)
                    .read_buf(&mut self.inbuf)
                    .await?
                    == 0
                {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
            let oversized = self.inbuf.capacity() > crate::buffers::KEPT_CAPACITY_MAX_BYTES;
            let body = self.inbuf.split_to(len).freeze();
            if oversized {
                // After an unusually large response, do not hold its memory from now on.
                self.inbuf = BytesMut::new();
            }
            Ok(body)
        };
        let body = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(b)) => b,
            Ok(Err(source)) => return Err(ClientError::Io { addr, source }),
            Err(_) => {
                return Err(ClientError::Timeout {
                    addr,
                    timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                })
            }
        };
        let mut bytes = body;
        let header = ResponseHeader::decode(&mut bytes, key.response_header_version(version))
            .map_err(|e| ClientError::Malformed {
                addr: addr.clone(),
                reason: format!("response header: {e}"),
            })?;
        if header.correlation_id != correlation_id {
            return Err(ClientError::Malformed {
                addr,
                reason: format!(
                    "correlation id {} answers request {correlation_id}",
                    header.correlation_id
                ),
            });
        }
        // A leader is a peer like any other: its counts are checked before the decoder
        // reserves anything from them (see `wire`).
        crate::wire::check_response(key, version, &bytes).map_err(|e| ClientError::Malformed {
            addr: addr.clone(),
            reason: e.to_string(),
        })?;
        let resp = Resp::decode(&mut bytes, version).map_err(|e| ClientError::Malformed {
            addr: addr.clone(),
            reason: e.to_string(),
        })?;
        if bytes.has_remaining() {
            tracing::debug!(%addr, left = bytes.remaining(), "trailing bytes after a response");
        }
        Ok(resp)
    }
}
