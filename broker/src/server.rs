//! The Kafka listeners: accept connections (plain TCP or TLS) within the connection limits,
//! read size-prefixed frames, authenticate SASL clients, answer requests in the order they
//! arrived, and shut down cleanly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Decodable, VersionRange};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::api::response::ResponseFrame;
use crate::api::{self, Outcome, RequestContext};
use crate::broker::Broker;
use crate::security::limits::ConnectionLimits;
use crate::security::sasl::SaslSession;
use crate::security::{Principal, SecurityProtocol};

/// Longest time a TLS client may take to complete its handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The read buffer a connection starts with, and the least it grows by.
const INITIAL_BUFFER: usize = 8 * 1024;
/// A read buffer left larger than this after a big request is given back.
const RETAINED_BUFFER: usize = 1024 * 1024;
/// Requests up to this size do not draw on `queued.max.request.bytes`: every connection's
/// read buffer holds that much anyway, and small requests (heartbeats, ApiVersions, Metadata)
/// never wait behind large ones for memory.
const UNCOUNTED_REQUEST: usize = INITIAL_BUFFER;

/// How frames are read: the size limits shared by every connection of the broker.
struct FrameLimits {
    /// `socket.request.max.bytes`.
    max: usize,
    /// `connections.max.idle.ms`.
    idle: Option<Duration>,
    /// `queued.max.request.bytes` as a semaphore of bytes, and its size; `None` is unbounded.
    pool: Option<(Arc<Semaphore>, usize)>,
}

impl FrameLimits {
    fn new(broker: &Broker) -> Self {
        let config = &broker.config;
        FrameLimits {
            max: config.socket_request_max_bytes,
            idle: config.security.idle_timeout,
            pool: config.queued_max_request_bytes.map(|bytes| {
                let bytes = bytes.min(Semaphore::MAX_PERMITS);
                (Arc::new(Semaphore::new(bytes)), bytes)
            }),
        }
    }

    /// Takes `size` bytes of the request pool for a request about to be read, waiting until
    /// other connections release enough. `None`: the request is not counted.
    async fn reserve(&self, size: usize) -> Result<Option<OwnedSemaphorePermit>, FrameError> {
        let Some((pool, bytes)) = &self.pool else {
            return Ok(None);
        };
        if size <= UNCOUNTED_REQUEST {
            return Ok(None);
        }
        if size > *bytes {
            return Err(FrameError::LargerThanPool { size, pool: *bytes });
        }
        let permits =
            u32::try_from(size).map_err(|_| FrameError::LargerThanPool { size, pool: *bytes })?;
        match Arc::clone(pool).try_acquire_many_owned(permits) {
            Ok(permit) => Ok(Some(permit)),
            Err(TryAcquireError::Closed) => Err(FrameError::PoolClosed),
            Err(TryAcquireError::NoPermits) => {
                tracing::debug!(
                    size,
                    "queued.max.request.bytes in use: waiting for memory before reading"
                );
                Arc::clone(pool)
                    .acquire_many_owned(permits)
                    .await
                    .map(Some)
                    .map_err(|_| FrameError::PoolClosed)
            }
        }
    }
}

/// A request read from a connection, with its share of `queued.max.request.bytes`, held until
/// the request has been answered.
struct ReadFrame {
    bytes: Bytes,
    _memory: Option<OwnedSemaphorePermit>,
}

/// A bound client listener, ready to accept.
pub struct Endpoint {
    pub listener: TcpListener,
    /// The listener's name (`PLAINTEXT`, `EXTERNAL`): Metadata answers with the addresses of
    /// this listener.
    pub name: Arc<str>,
    pub protocol: SecurityProtocol,
    /// Set for SSL and SASL_SSL listeners.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Accepts connections on every endpoint until `shutdown` is cancelled, then waits for every
/// connection to finish the request it is handling.
pub async fn run(endpoints: Vec<Endpoint>, broker: Arc<Broker>, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    let security = &broker.config.security;
    let limits = ConnectionLimits::new(security.max_connections, security.max_connections_per_ip);
    let frames = Arc::new(FrameLimits::new(&broker));
    for endpoint in endpoints {
        tracker.spawn(accept(
            endpoint,
            Arc::clone(&broker),
            Arc::clone(&limits),
            Arc::clone(&frames),
            shutdown.clone(),
            tracker.clone(),
        ));
    }
    shutdown.cancelled().await;
    tracker.close();
    tracker.wait().await;
}

/// The accept loop of one listener.
async fn accept(
    endpoint: Endpoint,
    broker: Arc<Broker>,
    limits: Arc<ConnectionLimits>,
    frames: Arc<FrameLimits>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let inter_broker = *endpoint.name == *broker.config.listener.name;
    let several_listeners = broker.config.listeners.len() > 1;
    let own_limits = broker
        .config
        .security
        .listener_limits
        .get(&*endpoint.name)
        .copied()
        .unwrap_or_default();
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = endpoint.listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::warn!(listener = %endpoint.name, error = %e, ?backoff, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(10);
        // The broker-wide max.connection.creation.rate and the listener's own (KIP-612) delay
        // this connection and the next accepts on this listener, by the longer of the two; the
        // inter-broker listener is exempt from the broker-wide one when there are others, as
        // in Kafka.
        let broker_limit = if inter_broker && several_listeners {
            None
        } else {
            crate::config::dynamic::connection_creation_rate(
                &broker.config.dynamic.subscribe().borrow(),
                broker.config.security.max_connection_creation_rate,
            )
        };
        let wait = broker_limit
            .map_or(0, |limit| broker.quotas.record_broker_connection(limit))
            .max(own_limits.max_connection_creation_rate.map_or(0, |limit| {
                broker
                    .quotas
                    .record_listener_connection(&endpoint.name, limit)
            }));
        if wait > 0 {
            tracing::debug!(%peer, wait_ms = wait, "max.connection.creation.rate exceeded: accepting later");
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(Duration::from_millis(u64::try_from(wait).unwrap_or(0))) => {}
            }
        }
        // An address over its connection_creation_rate, on any listener, has the connection
        // held for the throttle time, then closed, as Kafka does.
        let throttle = broker
            .quotas
            .record_connection(&broker.image().client_quotas, peer.ip());
        if throttle > 0 {
            broker.quotas.unrecord_connection(
                broker_limit.is_some(),
                own_limits
                    .max_connection_creation_rate
                    .map(|_| &*endpoint.name),
            );
            broker
                .metrics
                .quota_throttle_time
                .with_label_values(&["connection_creation"])
                .observe(throttle as f64 / 1000.0);
            tracing::debug!(%peer, throttle_ms = throttle, "connection_creation_rate exceeded: closing after the throttle time");
            let held = u64::try_from(throttle).unwrap_or(0);
            let shutdown = shutdown.clone();
            tracker.spawn(async move {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = tokio::time::sleep(Duration::from_millis(held)) => {}
                }
                drop(socket);
            });
            continue;
        }
        let slot = match limits.admit(
            peer.ip(),
            inter_broker,
            &endpoint.name,
            own_limits.max_connections,
        ) {
            Ok(slot) => slot,
            Err(refused) => {
                tracing::info!(%peer, listener = %endpoint.name, %refused, "connection refused");
                drop(socket);
                continue;
            }
        };
        if let Err(e) = socket.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
        }
        let connection = Connection {
            peer,
            listener: Arc::clone(&endpoint.name),
            sasl: endpoint
                .protocol
                .uses_sasl()
                .then(|| Arc::new(parking_lot::Mutex::new(SaslSession::default()))),
            certificate: None,
        };
        let tls = endpoint.tls.clone();
        let broker = Arc::clone(&broker);
        let shutdown = shutdown.clone();
        let frames = Arc::clone(&frames);
        let span = tracing::debug_span!("connection", %peer, listener = %endpoint.name);
        tracker.spawn(
            async move {
                let _slot = slot;
                broker.metrics.connections.inc();
                match tls {
                    None => {
                        serve_connection(socket, &connection, &broker, &frames, &shutdown).await
                    }
                    Some(acceptor) => {
                        let handshake =
                            tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(socket));
                        let stream = tokio::select! {
                            () = shutdown.cancelled() => None,
                            stream = handshake => match stream {
                                Ok(Ok(stream)) => Some(stream),
                                Ok(Err(e)) => {
                                    tracing::info!(error = %e, "TLS handshake failed");
                                    None
                                }
                                Err(_) => {
                                    tracing::info!("TLS handshake timed out");
                                    None
                                }
                            },
                        };
                        let default_mapping = crate::security::mapping::PrincipalMapping::default();
                        let mapping = broker
                            .config
                            .security
                            .tls
                            .get(&*connection.listener)
                            .map_or(&default_mapping, |tls| &tls.principal_mapping);
                        let principal = stream.as_ref().map(|stream| {
                            crate::security::tls::peer_principal(stream.get_ref().1, mapping)
                        });
                        match (stream, principal) {
                            (Some(stream), Some(Ok(principal))) => {
                                tracing::debug!(%principal, "TLS client");
                                let connection = Connection {
                                    certificate: Some(principal),
                                    ..connection
                                };
                                serve_connection(stream, &connection, &broker, &frames, &shutdown)
                                    .await;
                            }
                            (_, Some(Err(e))) => {
                                tracing::info!(error = %e, "client certificate refused");
                            }
                            _ => {}
                        }
                    }
                }
                broker.metrics.connections.dec();
            }
            .instrument(span),
        );
    }
    drop(endpoint);
}

/// What the requests of one connection share.
struct Connection {
    peer: SocketAddr,
    listener: Arc<str>,
    /// Set on SASL listeners.
    sasl: Option<Arc<parking_lot::Mutex<SaslSession>>>,
    /// On TLS listeners, after the handshake: the principal of the client's certificate
    /// (`User:ANONYMOUS` without one).
    certificate: Option<Principal>,
}

impl Connection {
    /// Who is on the other end: the SASL user once authenticated (on SASL_SSL it wins over the
    /// certificate, as in Kafka), else the client certificate's subject, else anonymous.
    fn principal(&self) -> Principal {
        match &self.sasl {
            Some(sasl) => sasl.lock().principal().cloned(),
            None => self.certificate.clone(),
        }
        .unwrap_or_else(Principal::anonymous)
    }

    /// Whether this request may be handled now: before a SASL client has authenticated only
    /// ApiVersions and the SASL requests are, as in Kafka.
    fn admits(&self, key: ApiKey) -> bool {
        match &self.sasl {
            Some(sasl) if sasl.lock().principal().is_none() => matches!(
                key,
                ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
            ),
            _ => true,
        }
    }

    fn authentication_failed(&self) -> bool {
        self.sasl
            .as_ref()
            .is_some_and(|sasl| sasl.lock().is_failed())
    }

    fn expects_raw_token(&self) -> bool {
        self.sasl
            .as_ref()
            .is_some_and(|sasl| sasl.lock().expects_raw_token())
    }
}

/// Why a connection is closed by the broker.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("request of {size} bytes is larger than socket.request.max.bytes ({max})")]
    TooLarge { size: usize, max: usize },
    #[error("request of {size} bytes is larger than queued.max.request.bytes ({pool})")]
    LargerThanPool { size: usize, pool: usize },
    #[error("the request memory pool is closed")]
    PoolClosed,
    #[error("request size {0} is negative")]
    NegativeSize(i32),
    #[error("connection closed in the middle of a request")]
    Truncated,
    #[error("nothing received for connections.max.idle.ms ({0:?})")]
    Idle(Duration),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads one size-prefixed frame. `Ok(None)` is a clean close between requests.
///
/// The buffer grows with the bytes that arrive, never to the size a frame announces: a client
/// announcing a large request and sending little holds little memory. Once the size is known,
/// the request's bytes are taken from `queued.max.request.bytes` before its body is read: when
/// the pool is used up the socket is not read until other requests are answered.
async fn read_frame<R: AsyncRead + Unpin>(
    socket: &mut R,
    buffer: &mut BytesMut,
    limits: &FrameLimits,
) -> Result<Option<ReadFrame>, FrameError> {
    let mut memory = None;
    let mut reserved = false;
    loop {
        let missing = if buffer.len() >= 4 {
            let size = i32::from_be_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]);
            let size = usize::try_from(size).map_err(|_| FrameError::NegativeSize(size))?;
            if size > limits.max {
                return Err(FrameError::TooLarge {
                    size,
                    max: limits.max,
                });
            }
            if !reserved {
                memory = limits.reserve(size).await?;
                reserved = true;
            }
            if buffer.len() >= 4 + size {
                buffer.advance(4);
                let frame = buffer.split_to(size).freeze();
                if buffer.is_empty() && buffer.capacity() > RETAINED_BUFFER {
                    *buffer = BytesMut::with_capacity(INITIAL_BUFFER);
                }
                return Ok(Some(ReadFrame {
                    bytes: frame,
                    _memory: memory,
                }));
            }
            4 + size - buffer.len()
        } else {
            4 - buffer.len()
        };
        // Room for at most as much again as has arrived, so memory follows the bytes actually
        // received rather than the size announced.
        buffer.reserve(
            buffer
                .len()
                .max(INITIAL_BUFFER)
                .min(missing.max(INITIAL_BUFFER)),
        );
        // Read little beyond this request, so the bytes held stay near those reserved.
        let mut room = (&mut *buffer).limit(missing.max(INITIAL_BUFFER));
        let read = match limits.idle {
            Some(idle) => tokio::time::timeout(idle, socket.read_buf(&mut room))
                .await
                .map_err(|_| FrameError::Idle(idle))?,
            None => socket.read_buf(&mut room).await,
        };
        if read? == 0 {
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

async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    connection: &Connection,
    broker: &Arc<Broker>,
    frames: &FrameLimits,
    shutdown: &CancellationToken,
) {
    // Requests are read and answered one at a time, so one buffered stream serves both ways.
    let mut stream = BufWriter::with_capacity(64 * 1024, stream);
    let mut buffer = BytesMut::with_capacity(INITIAL_BUFFER);
    loop {
        let frame = tokio::select! {
            () = shutdown.cancelled() => break,
            frame = read_frame(&mut stream, &mut buffer, frames) => frame,
        };
        let ReadFrame {
            bytes: frame,
            _memory: memory,
        } = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                tracing::info!(error = %e, "closing connection");
                break;
            }
        };
        let response = if connection.expects_raw_token() {
            raw_sasl_token(broker, connection, frame)
                .await
                .map(|reply| (reply.map(ResponseFrame::from), Duration::ZERO))
        } else {
            handle_frame(broker, connection, frame, shutdown).await
        };
        // The request has been handled and its response encoded: its memory is free again.
        drop(memory);
        let (response, throttle) = match response {
            Ok(response) => response,
            Err(reason) => {
                tracing::warn!(%reason, "closing connection after a request that cannot be answered");
                break;
            }
        };
        let throttled_until = Instant::now() + throttle;
        if let Some(response) = response {
            if let Err(e) = response.write_to(&mut stream).await {
                tracing::debug!(error = %e, "client went away");
                break;
            }
        }
        if connection.authentication_failed() {
            tracing::info!("closing connection after failed authentication");
            break;
        }
        // Flush once the pipelined requests already received have all been answered, and
        // before a throttled client's silence, so it has its response and throttle time.
        if !has_complete_frame(&buffer) || !throttle.is_zero() {
            if let Err(e) = stream.flush().await {
                tracing::debug!(error = %e, "client went away");
                break;
            }
        }
        // A client over its quota: the connection is muted, nothing is read or answered until
        // its throttle time has passed (KIP-219).
        if !throttle.is_zero() {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep_until(throttled_until.into()) => {}
            }
        }
    }
    let _ = stream.flush().await;
}

/// A SASL token sent without SaslAuthenticate framing, after a v0 SaslHandshake; the answer
/// goes back the same way (size-prefixed token). A failure closes the connection.
async fn raw_sasl_token(
    broker: &Arc<Broker>,
    connection: &Connection,
    token: Bytes,
) -> Result<Option<Bytes>, String> {
    let Some(sasl) = &connection.sasl else {
        return Err("a raw SASL token on a listener without SASL".into());
    };
    let reply = api::sasl::step(broker, sasl, token).await?;
    let size = i32::try_from(reply.len()).map_err(|_| "SASL token too large".to_string())?;
    let mut out = BytesMut::with_capacity(4 + reply.len());
    out.put_i32(size);
    out.put_slice(&reply);
    Ok(Some(out.freeze()))
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
/// as for a Produce with acks=0), with how long the connection is then muted for a client
/// over its quota. An error means the connection must be closed.
async fn handle_frame(
    broker: &Arc<Broker>,
    connection: &Connection,
    frame: Bytes,
    shutdown: &CancellationToken,
) -> Result<(Option<ResponseFrame>, Duration), String> {
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
    if !connection.admits(api_key) {
        return Err(format!(
            "{api_key:?} before SASL authentication (only ApiVersions, SaslHandshake and SaslAuthenticate are allowed)"
        ));
    }
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
            peer: connection.peer,
            principal: connection.principal(),
            listener: Arc::clone(&connection.listener),
            sasl: connection.sasl.clone(),
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
        Outcome::Respond {
            response,
            version,
            throttle,
        } => api::response::encode(header.correlation_id, api_key, version, *response)
            .map(|frame| (Some(frame), throttle)),
        Outcome::NoResponse { throttle } => Ok((None, throttle)),
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
