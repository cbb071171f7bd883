//! Outgoing controller traffic: openraft's RPCs to peers over one reused connection per
//! replication stream, and one-off requests (forwarded proposals, joins). Every call is bounded
//! by a timeout and a failed connection is dropped, to be re-established by the next call.
//! Peers whose controller listener refuses connections are noted in [`Refusals`]: nothing
//! listens there, so their process is gone.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use openraft::error::{
    Fatal, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, ReplicationClosed,
    StreamingError, Timeout, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend, RPCTypes, Snapshot};
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tokio_rustls::TlsConnector;

use super::progress::Progress;
use super::wire::{encode, Connection, Request, Response};
use super::{NodeId, TypeConfig, Vote};

/// How long openraft waits before retrying a peer that could not be reached.
const UNREACHABLE_BACKOFF: Duration = Duration::from_millis(250);

/// Why a call failed; says whether the request may have reached the peer.
#[derive(Debug)]
pub(crate) enum CallError {
    /// No connection: the request was not sent.
    Connect(io::Error),
    /// Sent, but no response in time.
    Timeout,
    /// The connection failed after the request was (perhaps) sent.
    Io(io::Error),
    /// The request exceeds the frame limit; it was not sent.
    TooLarge(io::Error),
}

/// A connection to one address, opened on first use (with the TLS handshake, when the
/// transport has TLS) and kept while calls succeed.
pub(crate) struct Channel {
    addr: String,
    tls: Option<TlsConnector>,
    conn: Option<Connection>,
}

impl Channel {
    pub(crate) fn new(addr: String, tls: Option<TlsConnector>) -> Channel {
        Channel {
            addr,
            tls,
            conn: None,
        }
    }

    /// A connection to the address, within `deadline`: not established is not sent.
    async fn open(&self, deadline: Instant) -> Result<Connection, CallError> {
        let timed_out = || {
            CallError::Connect(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connecting to {} timed out", self.addr),
            ))
        };
        let stream = match timeout_at(deadline, TcpStream::connect(&self.addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(CallError::Connect(e)),
            Err(_) => return Err(timed_out()),
        };
        let Some(tls) = &self.tls else {
            return Ok(Connection::new(stream));
        };
        let _ = stream.set_nodelay(true);
        let name = crate::security::tls::server_name(&self.addr).ok_or_else(|| {
            CallError::Connect(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} has no host name for TLS", self.addr),
            ))
        })?;
        match timeout_at(deadline, tls.connect(name, stream)).await {
            Ok(Ok(stream)) => Ok(Connection::over(Box::new(stream))),
            Ok(Err(e)) => Err(CallError::Connect(io::Error::new(
                e.kind(),
                format!("TLS handshake with {}: {e}", self.addr),
            ))),
            Err(_) => Err(timed_out()),
        }
    }

    /// Sends `request` and waits for its response, all within `timeout`.
    pub(crate) async fn call(
        &mut self,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, CallError> {
        let deadline = Instant::now() + timeout;
        let frame = encode(request).map_err(CallError::TooLarge)?;
        // Taken out for the exchange and put back only after a whole one: a call abandoned
        // half-way (timeout, cancellation) leaves no response in flight on a reused connection.
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => self.open(deadline).await?,
        };
        let exchange = async {
            conn.write_frame(&frame).await?;
            conn.read::<Response>().await?.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection",
                )
            })
        };
        match timeout_at(deadline, exchange).await {
            Ok(Ok(response)) => {
                self.conn = Some(conn);
                Ok(response)
            }
            Ok(Err(e)) => Err(CallError::Io(e)),
            Err(_) => Err(CallError::Timeout),
        }
    }
}

/// One request on a fresh connection. Used for proposals and joins, so that a connection error
/// before sending is told apart from one after.
pub(crate) async fn request(
    addr: &str,
    tls: Option<&TlsConnector>,
    request: &Request,
    timeout: Duration,
) -> Result<Response, CallError> {
    Channel::new(addr.to_string(), tls.cloned())
        .call(request, timeout)
        .await
}

/// A run of refused connections to one peer: when it began and the latest refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub since: StdInstant,
    pub last: StdInstant,
}

/// Peers whose controller listener refused this node's last connection attempts. A live
/// process accepts (even a stopped one: the kernel completes the handshake), so a refusal
/// means nothing listens: the process is gone. The leader tries every member at least every
/// heartbeat, and an unreachable one every 250 ms (its backoff), which keeps these fresh
/// on the node that needs them, the active controller.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    peers: Mutex<BTreeMap<NodeId, Refused>>,
}

impl Refusals {
    fn refused(&self, peer: NodeId) {
        let now = StdInstant::now();
        self.peers
            .lock()
            .entry(peer)
            .and_modify(|r| r.last = now)
            .or_insert(Refused {
                since: now,
                last: now,
            });
    }

    /// The peer accepted a connection, or left the membership: no run of refusals.
    pub(crate) fn forget(&self, peer: NodeId) {
        self.peers.lock().remove(&peer);
    }

    /// The peers refusing connections now, with their runs of refusals.
    pub(crate) fn snapshot(&self) -> BTreeMap<NodeId, Refused> {
        self.peers.lock().clone()
    }
}

/// Makes openraft's clients to peers. A voter's address comes from the configuration (it may
/// have changed since the membership recorded it); a learner's from the membership.
pub(crate) struct NetworkFactory {
    local: NodeId,
    voters: Arc<BTreeMap<NodeId, String>>,
    refusals: Arc<Refusals>,
    progress: Arc<Progress>,
    tls: Option<TlsConnector>,
}

impl NetworkFactory {
    pub(crate) fn new(
        local: NodeId,
        voters: Arc<BTreeMap<NodeId, String>>,
        refusals: Arc<Refusals>,
        progress: Arc<Progress>,
        tls: Option<TlsConnector>,
    ) -> NetworkFactory {
        NetworkFactory {
            local,
            voters,
            refusals,
            progress,
            tls,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        let addr = self
            .voters
            .get(&target)
            .cloned()
            .unwrap_or_else(|| node.addr.clone());
        PeerClient {
            local: self.local,
            target,
            channel: Channel::new(addr, self.tls.clone()),
            refusals: Arc::clone(&self.refusals),
            progress: Arc::clone(&self.progress),
        }
    }
}

/// openraft's client to one peer.
pub(crate) struct PeerClient {
    local: NodeId,
    target: NodeId,
    channel: Channel,
    refusals: Arc<Refusals>,
    /// Where answered AppendEntries are noted, for DescribeQuorum.
    progress: Arc<Progress>,
}

impl PeerClient {
    fn timeout(&self, action: RPCTypes, timeout: Duration) -> Timeout<NodeId> {
        Timeout {
            action,
            id: self.local,
            target: self.target,
            timeout,
        }
    }

    /// One call to the peer, noting whether its listener refused the connection.
    async fn call(&mut self, request: &Request, ttl: Duration) -> Result<Response, CallError> {
        let result = self.channel.call(request, ttl).await;
        match &result {
            Ok(_) => self.refusals.forget(self.target),
            Err(CallError::Connect(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                self.refusals.refused(self.target);
            }
            Err(_) => {}
        }
        result
    }

    /// A raft RPC whose remote error is a `RaftError`.
    async fn rpc<T>(
        &mut self,
        action: RPCTypes,
        request: Request,
        option: &RPCOption,
        unpack: impl FnOnce(Response) -> Option<Result<T, RaftError<NodeId>>>,
    ) -> Result<T, RpcFailure> {
        let ttl = option.hard_ttl();
        match self.call(&request, ttl).await {
            Ok(response) => match unpack(response) {
                Some(Ok(reply)) => Ok(reply),
                Some(Err(e)) => Err(RpcFailure::Rpc(Box::new(RPCError::RemoteError(
                    RemoteError::new(self.target, e),
                )))),
                None => Err(RpcFailure::Rpc(Box::new(RPCError::Network(
                    NetworkError::new(&unexpected(action)),
                )))),
            },
            Err(CallError::Connect(e)) => Err(RpcFailure::Rpc(Box::new(RPCError::Unreachable(
                Unreachable::new(&e),
            )))),
            Err(CallError::Timeout) => Err(RpcFailure::Rpc(Box::new(RPCError::Timeout(
                self.timeout(action, ttl),
            )))),
            Err(CallError::Io(e)) => Err(RpcFailure::Rpc(Box::new(RPCError::Network(
                NetworkError::new(&e),
            )))),
            Err(CallError::TooLarge(e)) => Err(RpcFailure::TooLarge(e)),
        }
    }
}

/// A failed raft RPC, with a request too large to send kept apart so AppendEntries can ask
/// openraft to split it.
enum RpcFailure {
    Rpc(Box<RPCError<NodeId, BasicNode, RaftError<NodeId>>>),
    TooLarge(io::Error),
}

impl RpcFailure {
    fn into_rpc_error(self) -> RPCError<NodeId, BasicNode, RaftError<NodeId>> {
        match self {
            RpcFailure::Rpc(e) => *e,
            RpcFailure::TooLarge(e) => RPCError::Network(NetworkError::new(&e)),
        }
    }
}

fn unexpected(action: RPCTypes) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unexpected response to {action}"),
    )
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let entries = rpc.entries.len() as u64;
        let sent_up_to = rpc
            .entries
            .last()
            .map(|e| e.log_id.index)
            .or(rpc.prev_log_id.map(|id| id.index));
        let result = self
            .rpc(
                RPCTypes::AppendEntries,
                Request::AppendEntries(rpc),
                &option,
                |r| match r {
                    Response::AppendEntries(result) => Some(result),
                    _ => None,
                },
            )
            .await
            .map_err(|e| match e {
                // Too big for one frame: openraft resends fewer entries at a time.
                RpcFailure::TooLarge(_) if entries > 1 => {
                    RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(entries / 2))
                }
                e => e.into_rpc_error(),
            });
        match &result {
            Ok(AppendEntriesResponse::Success) => {
                self.progress.acknowledged(self.target, sent_up_to)
            }
            Ok(AppendEntriesResponse::PartialSuccess(matching)) => self
                .progress
                .acknowledged(self.target, matching.map(|id| id.index)),
            _ => {}
        }
        result
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.rpc(RPCTypes::Vote, Request::Vote(rpc), &option, |r| match r {
            Response::Vote(result) => Some(result),
            _ => None,
        })
        .await
        .map_err(RpcFailure::into_rpc_error)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let request = Request::Snapshot {
            vote,
            meta: snapshot.meta,
            image: snapshot.snapshot,
        };
        let ttl = option.hard_ttl();
        let result = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            result = self.call(&request, ttl) => result,
        };
        match result {
            Ok(Response::Snapshot(Ok(reply))) => Ok(reply),
            Ok(Response::Snapshot(Err(e))) => Err(StreamingError::RemoteError(RemoteError::new(
                self.target,
                e,
            ))),
            Ok(_) => Err(StreamingError::Network(NetworkError::new(&unexpected(
                RPCTypes::InstallSnapshot,
            )))),
            Err(CallError::Connect(e)) => Err(StreamingError::Unreachable(Unreachable::new(&e))),
            Err(CallError::Timeout) => Err(StreamingError::Timeout(
                self.timeout(RPCTypes::InstallSnapshot, ttl),
            )),
            Err(CallError::Io(e) | CallError::TooLarge(e)) => {
                Err(StreamingError::Network(NetworkError::new(&e)))
            }
        }
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(UNREACHABLE_BACKOFF))
    }
}
