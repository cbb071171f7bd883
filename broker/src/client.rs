//! The crate's own Kafka client: one connection, typed requests through `kafka-protocol`.
//! Replication and broker heartbeats use it, and so do the tests. A [`Connector`] reaches
//! other brokers in plain TCP or, on an SSL inter-broker listener, in TLS.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    RequestHeader, ResponseHeader, SaslAuthenticateRequest, SaslAuthenticateResponse,
    SaslHandshakeRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

use crate::security::sasl::{InterBrokerSasl, SaslMechanism};
use crate::security::scram::{ScramClient, ScramError};

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("`{address}` has no host name a TLS certificate can be checked against")]
    ServerName { address: String },
    #[error("SASL login to {address} failed: {reason}")]
    Sasl { address: String, reason: String },
    #[error("TLS handshake with {address} failed: {source}")]
    Tls {
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

/// A byte stream a connection runs over: TCP, or TLS over TCP.
/// A connection's byte stream: plain TCP or TLS over it.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Stream for T {}

/// How connections to other brokers are made: plain TCP or TLS with the broker's trust store
/// (and its own certificate, for listeners that ask for one), then, on a SASL listener, a
/// SASL login with the broker's own credentials.
#[derive(Clone, Default)]
pub struct Connector {
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub sasl: Option<Arc<InterBrokerSasl>>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("tls", &self.tls.is_some())
            .field("sasl", &self.sasl)
            .finish()
    }
}

impl Connector {
    /// Plain TCP, no login.
    pub fn plain() -> Connector {
        Connector::default()
    }

    /// Connects to `address` (`host:port`) and logs in. With TLS, the certificate presented
    /// must be valid for `host` (Kafka's `ssl.endpoint.identification.algorithm=https`).
    pub async fn connect(&self, address: &str) -> Result<Connection, ClientError> {
        let mut connection = self.open(address).await?;
        if let Some(sasl) = &self.sasl {
            connection.login(sasl).await?;
        }
        Ok(connection)
    }

    async fn open(&self, address: &str) -> Result<Connection, ClientError> {
        let tcp = TcpStream::connect(address)
            .await
            .map_err(|source| ClientError::Connect {
                address: address.to_string(),
                source,
            })?;
        tcp.set_nodelay(true).map_err(|source| ClientError::Io {
            address: address.to_string(),
            source,
        })?;
        let stream: Box<dyn Stream> = match &self.tls {
            None => Box::new(tcp),
            Some(config) => {
                let name = crate::security::tls::server_name(address).ok_or_else(|| {
                    ClientError::ServerName {
                        address: address.to_string(),
                    }
                })?;
                let tls = tokio_rustls::TlsConnector::from(Arc::clone(config))
                    .connect(name, tcp)
                    .await
                    .map_err(|source| ClientError::Tls {
                        address: address.to_string(),
                        source,
                    })?;
                Box::new(tls)
            }
        };
        Ok(Connection {
            address: address.to_string(),
            stream,
            next_correlation: 1,
            client_id: StrBytes::from_static_str("oxbow"),
        })
    }
}

/// A single connection to a broker. Requests are answered in order.
pub struct Connection {
    address: String,
    stream: Box<dyn Stream>,
    next_correlation: i32,
    client_id: StrBytes,
}

impl Connection {
    /// A plain TCP connection to `address`.
    pub async fn connect(address: &str) -> Result<Connection, ClientError> {
        Connector::plain().connect(address).await
    }

    /// Sends the client id `client_id` from now on (`oxbow` by default): quotas, logs and
    /// metrics know a client by it.
    pub fn with_client_id(mut self, client_id: &str) -> Connection {
        self.client_id = StrBytes::from_string(client_id.to_string());
        self
    }

    /// SaslHandshake (v1) and SaslAuthenticate (v2) with `sasl`'s mechanism and credentials;
    /// for SCRAM the server's final message must prove that it knows the credential too.
    async fn login(&mut self, sasl: &InterBrokerSasl) -> Result<(), ClientError> {
        let address = self.address.clone();
        let failed = |reason: String| ClientError::Sasl {
            address: address.clone(),
            reason,
        };
        let refused = |code: i16, message: Option<&StrBytes>| {
            failed(format!(
                "refused with error {code}{}",
                message.map(|m| format!(" ({m})")).unwrap_or_default()
            ))
        };
        let handshake = SaslHandshakeRequest::default()
            .with_mechanism(StrBytes::from_static_str(sasl.mechanism.name()));
        let answer = self.send(&handshake, 1).await?;
        if answer.error_code != 0 {
            return Err(refused(answer.error_code, None));
        }
        match sasl.mechanism {
            SaslMechanism::Plain => {
                let token = format!("\0{}\0{}", sasl.username, sasl.password).into_bytes();
                let answer = self.sasl_authenticate(token).await?;
                if answer.error_code != 0 {
                    return Err(refused(answer.error_code, answer.error_message.as_ref()));
                }
            }
            SaslMechanism::Scram(mechanism) => {
                let scram = |e: ScramError| failed(e.to_string());
                let mut client =
                    ScramClient::new(mechanism, &sasl.username, &sasl.password).map_err(scram)?;
                let first = self.sasl_authenticate(client.client_first()).await?;
                if first.error_code != 0 {
                    return Err(refused(first.error_code, first.error_message.as_ref()));
                }
                let last = client.client_final(&first.auth_bytes).map_err(scram)?;
                let done = self.sasl_authenticate(last).await?;
                if done.error_code != 0 {
                    return Err(refused(done.error_code, done.error_message.as_ref()));
                }
                client.server_final(&done.auth_bytes).map_err(scram)?;
            }
        }
        Ok(())
    }

    async fn sasl_authenticate(
        &mut self,
        token: Vec<u8>,
    ) -> Result<SaslAuthenticateResponse, ClientError> {
        let request = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token));
        self.send(&request, 2).await
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
        let io = |source| ClientError::Io {
            address: self.address.clone(),
            source,
        };
        self.stream.write_all(bytes).await.map_err(io)?;
        // TLS may hold the end of the frame in its buffer until flushed.
        self.stream.flush().await.map_err(io)
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
