//! The crate's own Kafka client: one connection, typed requests through `kafka-protocol`.
//! Used by tests today, and by replication and the operator later.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("connection to {address} failed: {source}")]
    Io {
        address: String,
        source: std::io::Error,
    },
    #[error("cannot encode the request: {0}")]
    Encode(String),
    #[error("cannot decode the response: {0}")]
    Decode(String),
    #[error("response correlation id {got} does not match request {expected}")]
    Correlation { expected: i32, got: i32 },
    #[error("response of {0} bytes is larger than the client accepts")]
    TooLarge(usize),
}

/// Largest response the client reads.
const MAX_RESPONSE: usize = 256 * 1024 * 1024;

/// A single connection to a broker. Requests are answered in order.
pub struct Connection {
    address: String,
    stream: TcpStream,
    next_correlation: i32,
    client_id: StrBytes,
}

impl Connection {
    pub async fn connect(address: &str) -> Result<Connection, ClientError> {
        let stream = TcpStream::connect(address)
            .await
            .map_err(|source| ClientError::Connect {
                address: address.to_string(),
                source,
            })?;
        stream.set_nodelay(true).map_err(|source| ClientError::Io {
            address: address.to_string(),
            source,
        })?;
        Ok(Connection {
            address: address.to_string(),
            stream,
            next_correlation: 1,
            client_id: StrBytes::from_static_str("oxbow"),
        })
    }

    /// Sends `request` at `version` and waits for its response.
    pub async fn send<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, ClientError> {
        let correlation_id = self.write_request(request, version).await?;
        self.read_response::<R>(correlation_id, version).await
    }

    /// Sends `request` without reading a response (Produce with acks=0).
    pub async fn send_only<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<i32, ClientError> {
        self.write_request(request, version).await
    }

    /// Encodes a request frame without sending it, for tests that tamper with bytes.
    pub fn encode_request<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<(i32, Bytes), ClientError> {
        let correlation_id = self.next_correlation;
        self.next_correlation = self.next_correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        let mut frame = BytesMut::new();
        frame.put_i32(0);
        header
            .encode(&mut frame, R::header_version(version))
            .and_then(|()| request.encode(&mut frame, version))
            .map_err(|e| ClientError::Encode(e.to_string()))?;
        let size = i32::try_from(frame.len() - 4)
            .map_err(|_| ClientError::Encode("request too large".to_string()))?;
        frame[..4].copy_from_slice(&size.to_be_bytes());
        Ok((correlation_id, frame.freeze()))
    }

    async fn write_request<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<i32, ClientError> {
        let (correlation_id, frame) = self.encode_request(request, version)?;
        self.write_raw(&frame).await?;
        Ok(correlation_id)
    }

    /// Writes bytes as they are: a frame of the caller's making, valid or not.
    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(|source| ClientError::Io {
                address: self.address.clone(),
                source,
            })
    }

    /// Closes the sending half (TCP FIN) and keeps the receiving half open, as a client does
    /// that gives up in the middle of a request; responses can still be read.
    pub async fn shutdown_write(&mut self) -> Result<(), ClientError> {
        self.stream
            .shutdown()
            .await
            .map_err(|source| ClientError::Io {
                address: self.address.clone(),
                source,
            })
    }

    /// Reads one response frame; `Ok(None)` when the broker closed the connection.
    pub async fn read_frame(&mut self) -> Result<Option<Bytes>, ClientError> {
        let io = |source| ClientError::Io {
            address: self.address.clone(),
            source,
        };
        let mut size = [0u8; 4];
        match self.stream.read_exact(&mut size).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
            Err(e) => return Err(io(e)),
        }
        let size = usize::try_from(i32::from_be_bytes(size))
            .map_err(|_| ClientError::Decode("negative size".to_string()))?;
        if size > MAX_RESPONSE {
            return Err(ClientError::TooLarge(size));
        }
        let mut body = vec![0u8; size];
        self.stream.read_exact(&mut body).await.map_err(io)?;
        Ok(Some(Bytes::from(body)))
    }

    /// Reads the response to the request with `correlation_id`.
    pub async fn read_response<R: Request>(
        &mut self,
        correlation_id: i32,
        version: i16,
    ) -> Result<R::Response, ClientError> {
        let mut frame = self.read_frame().await?.ok_or_else(|| ClientError::Io {
            address: self.address.clone(),
            source: std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
        })?;
        let header = ResponseHeader::decode(&mut frame, R::Response::header_version(version))
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        if header.correlation_id != correlation_id {
            return Err(ClientError::Correlation {
                expected: correlation_id,
                got: header.correlation_id,
            });
        }
        let response = R::Response::decode(&mut frame, version)
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        if frame.has_remaining() {
            return Err(ClientError::Decode(format!(
                "{} bytes left after the response",
                frame.remaining()
            )));
        }
        Ok(response)
    }
}
