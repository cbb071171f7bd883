//! The Kafka listener: accepts connections, reads size-prefixed frames, answers requests in
//! the order they arrived, and shuts down cleanly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, VersionRange};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::api::{self, Outcome, RequestContext};
use crate::broker::Broker;

/// Accepts connections until `shutdown` is cancelled, then waits for every connection to
/// finish the request it is handling.
pub async fn run(listener: TcpListener, broker: Arc<Broker>, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((socket, peer)) => {
                backoff = Duration::from_millis(10);
                if let Err(e) = socket.set_nodelay(true) {
                    tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
                }
                let broker = Arc::clone(&broker);
                let shutdown = shutdown.clone();
                let span = tracing::debug_span!("connection", %peer);
                tracker.spawn(
                    async move {
                        broker.metrics.connections.inc();
                        serve_connection(socket, peer, &broker, &shutdown).await;
                        broker.metrics.connections.dec();
                    }
                    .instrument(span),
                );
            }
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::warn!(error = %e, ?backoff, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

/// Why a connection is closed by the broker.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("request of {size} bytes is larger than socket.request.max.bytes ({max})")]
    TooLarge { size: usize, max: usize },
    #[error("request size {0} is negative")]
    NegativeSize(i32),
    #[error("connection closed in the middle of a request")]
    Truncated,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads one size-prefixed frame. `Ok(None)` is a clean close between requests.
async fn read_frame(
    socket: &mut tokio::net::tcp::OwnedReadHalf,
    buffer: &mut BytesMut,
    max: usize,
) -> Result<Option<Bytes>, FrameError> {
    loop {
        if buffer.len() >= 4 {
            let size = i32::from_be_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]);
            let size = usize::try_from(size).map_err(|_| FrameError::NegativeSize(size))?;
            if size > max {
                return Err(FrameError::TooLarge { size, max });
            }
            if buffer.len() >= 4 + size {
                buffer.advance(4);
                return Ok(Some(buffer.split_to(size).freeze()));
            }
            buffer.reserve(4 + size - buffer.len());
        } else {
            buffer.reserve(4096);
        }
        if socket.read_buf(buffer).await? == 0 {
            return if buffer.is_empty() {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
    }
}

fn has_complete_frame(buffer: &BytesMut) -> bool {
    buffer.len() >= 4 && {
        let size = i32::from_be_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]);
        usize::try_from(size).is_ok_and(|size| buffer.len() >= 4 + size)
    }
}

async fn serve_connection(
    socket: TcpStream,
    peer: std::net::SocketAddr,
    broker: &Arc<Broker>,
    shutdown: &CancellationToken,
) {
    let (mut reader, writer) = socket.into_split();
    let mut writer = BufWriter::with_capacity(64 * 1024, writer);
    let mut buffer = BytesMut::with_capacity(8 * 1024);
    let max = broker.config.socket_request_max_bytes;
    let heartbeat_of = Arc::new(parking_lot::Mutex::new(None));
    loop {
        let frame = tokio::select! {
            () = shutdown.cancelled() => break,
            frame = read_frame(&mut reader, &mut buffer, max) => frame,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "closing connection");
                break;
            }
        };
        let response = match handle_frame(broker, peer, &heartbeat_of, frame, shutdown).await {
            Ok(response) => response,
            Err(reason) => {
                tracing::warn!(%reason, "closing connection after a request that cannot be answered");
                break;
            }
        };
        if let Some(response) = response {
            if let Err(e) = writer.write_all(&response).await {
                tracing::debug!(error = %e, "client went away");
                break;
            }
        }
        // Flush once the pipelined requests already received have all been answered.
        if !has_complete_frame(&buffer) {
            if let Err(e) = writer.flush().await {
                tracing::debug!(error = %e, "client went away");
                break;
            }
        }
    }
    let _ = writer.flush().await;
    let heartbeat = *heartbeat_of.lock();
    if let Some(id) = heartbeat {
        if !shutdown.is_cancelled() {
            broker.liveness.connection_lost(id);
        }
    }
}

/// A request frame with its API, version and header read; the body is left to
/// [`api::decode`].
#[derive(Debug)]
pub struct RequestFrame {
    pub api_key: ApiKey,
    pub version: i16,
    /// The versions of this API the broker answers.
    pub supported: VersionRange,
    pub header: RequestHeader,
    pub body: Bytes,
}

/// Why a frame is refused before any handler sees it: the connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum FrameRefused {
    #[error("{0}")]
    Malformed(String),
    #[error("API {key:?} (key {code}) is not supported")]
    Unsupported { key: ApiKey, code: i16 },
}

/// Reads the API key, version and request header of a frame (the bytes after its size
/// prefix). It does no I/O, so the fuzz targets run it on arbitrary bytes.
pub fn parse_frame(frame: Bytes) -> Result<RequestFrame, FrameRefused> {
    if frame.len() < 8 {
        return Err(FrameRefused::Malformed(format!(
            "a request of {} bytes is too short for a header",
            frame.len()
        )));
    }
    let key_code = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let api_key = ApiKey::try_from(key_code)
        .map_err(|()| FrameRefused::Malformed(format!("unknown API key {key_code}")))?;
    let Some(supported) = api::supported_versions(api_key) else {
        return Err(FrameRefused::Unsupported {
            key: api_key,
            code: key_code,
        });
    };
    let mut body = frame;
    let header = RequestHeader::decode(&mut body, api_key.request_header_version(version))
        .map_err(|e| {
            FrameRefused::Malformed(format!(
                "malformed request header for {api_key:?} v{version}: {e}"
            ))
        })?;
    Ok(RequestFrame {
        api_key,
        version,
        supported,
        header,
        body,
    })
}

/// Decodes a request, runs its handler, and encodes the response frame (`None`: no response,
/// as for a Produce with acks=0). An error means the connection must be closed.
async fn handle_frame(
    broker: &Arc<Broker>,
    peer: std::net::SocketAddr,
    heartbeat_of: &Arc<parking_lot::Mutex<Option<i32>>>,
    frame: Bytes,
    shutdown: &CancellationToken,
) -> Result<Option<Bytes>, String> {
    let started = Instant::now();
    let RequestFrame {
        api_key,
        version,
        supported,
        header,
        body,
    } = match parse_frame(frame) {
        Ok(frame) => frame,
        Err(refused) => {
            if let FrameRefused::Unsupported { key, .. } = refused {
                broker
                    .metrics
                    .request_errors
                    .with_label_values(&[api::name(key)])
                    .inc();
            }
            return Err(refused.to_string());
        }
    };
    let span = tracing::debug_span!(
        "request",
        api = api::name(api_key),
        version,
        correlation_id = header.correlation_id,
        client_id = header.client_id.as_ref().map(|c| c.as_str()).unwrap_or(""),
    );
    let outcome = async {
        if version < supported.min || version > supported.max {
            return api::unsupported_version(api_key, version);
        }
        let context = RequestContext {
            client_id: header
                .client_id
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_default(),
            peer,
            heartbeat_of: Arc::clone(heartbeat_of),
            principal: crate::security::Principal::anonymous(),
        };
        api::handle(broker, &context, api_key, version, body, shutdown).await
    }
    .instrument(span.clone())
    .await;
    let api_label = api::name(api_key);
    broker
        .metrics
        .requests
        .with_label_values(&[api_label])
        .inc();
    let result = match outcome {
        Outcome::Respond { response, version } => {
            let mut out = BytesMut::with_capacity(256);
            out.put_i32(0);
            let response_header =
                ResponseHeader::default().with_correlation_id(header.correlation_id);
            response_header
                .encode(&mut out, api_key.response_header_version(version))
                .and_then(|()| response.encode(&mut out, version))
                .map_err(|e| format!("cannot encode the {api_key:?} v{version} response: {e}"))?;
            let size =
                i32::try_from(out.len() - 4).map_err(|_| "response too large".to_string())?;
            out[..4].copy_from_slice(&size.to_be_bytes());
            Ok(Some(out.freeze()))
        }
        Outcome::NoResponse => Ok(None),
        Outcome::Close(reason) => {
            broker
                .metrics
                .request_errors
                .with_label_values(&[api_label])
                .inc();
            Err(reason)
        }
    };
    broker
        .metrics
        .request_latency
        .with_label_values(&[api_label])
        .observe(started.elapsed().as_secs_f64());
    span.in_scope(|| {
        tracing::trace!(
            elapsed_us = started.elapsed().as_micros() as u64,
            "answered"
        )
    });
    result
}
