//! The controller listener: accepts peers' connections and answers their requests — raft RPCs
//! into openraft, forwarded proposals and joins when this node leads.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, Snapshot};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::network::Refusals;
use super::progress::{self, Progress, QuorumStatus, ReplicaStatus};
use super::wire::{
    Connection, DescribeReply, ForwardReply, HeartbeatReply, JoinReply, RemoveReply, Request,
    Response,
};
use super::{NodeId, Raft};
use crate::controller::image::MetadataCommand;
use crate::controller::Liveness;

/// Peers are few; this only bounds what a misbehaving client can hold open.
const MAX_CONNECTIONS: usize = 256;

/// How long a peer may take to complete the TLS handshake before its connection is closed.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What request handlers share.
pub(crate) struct Handler {
    pub(crate) node_id: NodeId,
    pub(crate) raft: Raft,
    pub(crate) voters: Arc<BTreeMap<NodeId, String>>,
    /// How long a forwarded proposal may wait for its commit.
    pub(crate) propose_timeout: Duration,
    /// The leader forgets a removed learner's refused connections.
    pub(crate) refusals: Arc<Refusals>,
    /// The members' answers to this node's AppendEntries, while it leads.
    pub(crate) progress: Arc<Progress>,
    /// Brokers' heartbeats, while this node is the active controller.
    pub(crate) liveness: Arc<Liveness>,
}

impl Handler {
    /// The controller address of `id`: a voter's from the configuration, else the membership's.
    pub(crate) fn addr_of(&self, id: NodeId) -> Option<String> {
        if let Some(addr) = self.voters.get(&id) {
            return Some(addr.clone());
        }
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
    }

    async fn dispatch(&self, request: Request) -> Response {
        match request {
            Request::AppendEntries(rpc) => {
                Response::AppendEntries(self.raft.append_entries(rpc).await)
            }
            Request::Vote(rpc) => Response::Vote(self.raft.vote(rpc).await),
            Request::Snapshot { vote, meta, image } => Response::Snapshot(
                self.raft
                    .install_full_snapshot(
                        vote,
                        Snapshot {
                            meta,
                            snapshot: image,
                        },
                    )
                    .await,
            ),
            Request::Forward(command) => Response::Forward(self.forward(command).await),
            Request::Join { node_id, addr } => Response::Join(self.join(node_id, addr).await),
            Request::RemoveLearner { node_id } => {
                Response::RemoveLearner(self.remove_learner(node_id).await)
            }
            Request::DescribeQuorum => Response::DescribeQuorum(self.describe().await),
            Request::Heartbeat { broker } => Response::Heartbeat(self.heartbeat(broker)),
        }
    }

    /// A broker's heartbeat, noted when this node leads.
    fn heartbeat(&self, broker: i32) -> HeartbeatReply {
        let leader = self.raft.metrics().borrow().current_leader;
        if leader == Some(self.node_id) {
            self.liveness.heartbeat(broker);
            HeartbeatReply::Noted
        } else {
            HeartbeatReply::NotLeader {
                leader,
                addr: leader.and_then(|id| self.addr_of(id)),
            }
        }
    }

    /// On the leader: the quorum as Kafka's DescribeQuorum reports it. Each field comes from
    /// openraft's state where it has one: the epoch is the raft term, the high watermark the
    /// committed index, a member's log end its matched index (the leader's own: its last
    /// index); the timestamps from [`Progress`]. The leader itself fetched and caught up
    /// just now, as Kafka reports its leader.
    pub(crate) async fn describe(&self) -> DescribeReply {
        let committed = match self.raft.with_raft_state(|state| state.committed).await {
            Ok(committed) => committed,
            Err(e) => return DescribeReply::Failed(e.to_string()),
        };
        let metrics = self.raft.metrics().borrow().clone();
        let (Some(leader), Some(replication)) = (metrics.current_leader, &metrics.replication)
        else {
            return DescribeReply::NotLeader {
                leader: metrics.current_leader,
                addr: metrics.current_leader.and_then(|id| self.addr_of(id)),
            };
        };
        if leader != self.node_id {
            return DescribeReply::NotLeader {
                leader: Some(leader),
                addr: self.addr_of(leader),
            };
        }
        let now = progress::now_ms();
        let replica = |id: NodeId| {
            if id == self.node_id {
                return ReplicaStatus {
                    node_id: progress::to_i32(id),
                    log_end_offset: progress::offset_after(metrics.last_log_index),
                    last_fetch_timestamp: now,
                    last_caught_up_timestamp: now,
                };
            }
            let (last_fetch_timestamp, last_caught_up_timestamp) = self.progress.times(id);
            ReplicaStatus {
                node_id: progress::to_i32(id),
                log_end_offset: replication.get(&id).map_or(-1, |matched| {
                    progress::offset_after(matched.map(|m| m.index))
                }),
                last_fetch_timestamp,
                last_caught_up_timestamp,
            }
        };
        let membership = metrics.membership_config.membership();
        let voter_ids: BTreeSet<NodeId> = membership.voter_ids().collect();
        let voter_endpoints = voter_ids
            .iter()
            .filter_map(|id| {
                let addr = self.addr_of(*id)?;
                let (host, port) = addr.rsplit_once(':')?;
                Some((progress::to_i32(*id), host.to_string(), port.parse().ok()?))
            })
            .collect();
        DescribeReply::Status(QuorumStatus {
            leader_id: progress::to_i32(leader),
            leader_epoch: i32::try_from(metrics.current_term).unwrap_or(i32::MAX),
            high_watermark: progress::offset_after(committed.map(|c| c.index)),
            voters: voter_ids.iter().map(|id| replica(*id)).collect(),
            observers: membership
                .nodes()
                .map(|(id, _)| *id)
                .filter(|id| !voter_ids.contains(id))
                .map(replica)
                .collect(),
            voter_endpoints,
        })
    }

    async fn forward(&self, command: MetadataCommand) -> ForwardReply {
        match tokio::time::timeout(self.propose_timeout, self.raft.client_write(command)).await {
            Ok(Ok(response)) => ForwardReply::Applied {
                result: response.data,
                index: response.log_id.index,
            },
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(to)))) => {
                ForwardReply::NotLeader {
                    leader: to.leader_id,
                    addr: to.leader_id.and_then(|id| self.addr_of(id)),
                }
            }
            Ok(Err(e)) => ForwardReply::Failed(e.to_string()),
            Err(_) => ForwardReply::Failed(format!(
                "no commit within {:?} on leader {}",
                self.propose_timeout, self.node_id
            )),
        }
    }

    async fn join(&self, node_id: NodeId, addr: String) -> JoinReply {
        let (known, is_voter) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            let membership = metrics.membership_config.membership();
            (
                membership.get_node(&node_id).map(|n| n.addr.clone()),
                membership.voter_ids().any(|id| id == node_id),
            )
        };
        // A voter's address comes from every node's configuration, never from a join.
        if known.as_deref() == Some(addr.as_str()) || is_voter {
            return JoinReply::Joined;
        }
        let node = BasicNode::new(addr.clone());
        let result = if known.is_some() {
            // A learner that came back at another address.
            self.raft
                .change_membership(
                    ChangeMembers::SetNodes(BTreeMap::from([(node_id, node)])),
                    false,
                )
                .await
        } else {
            self.raft.add_learner(node_id, node, false).await
        };
        match result {
            Ok(_) => {
                tracing::info!(node_id, %addr, "learner joined the metadata quorum");
                JoinReply::Joined
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(to))) => {
                JoinReply::NotLeader {
                    leader: to.leader_id,
                    addr: to.leader_id.and_then(|id| self.addr_of(id)),
                }
            }
            Err(e) => JoinReply::Failed(e.to_string()),
        }
    }

    /// On the leader: takes learner `node_id` out of the membership, so the leader stops
    /// replicating to it. A learner that is still running notices and joins again.
    pub(crate) async fn remove_learner(&self, node_id: NodeId) -> RemoveReply {
        let (leader, known, is_voter) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            let membership = metrics.membership_config.membership();
            (
                metrics.current_leader,
                membership.get_node(&node_id).is_some(),
                membership.voter_ids().any(|id| id == node_id),
            )
        };
        if leader != Some(self.node_id) {
            return RemoveReply::NotLeader {
                leader,
                addr: leader.and_then(|id| self.addr_of(id)),
            };
        }
        if is_voter {
            return RemoveReply::Voter;
        }
        if !known {
            return RemoveReply::Removed;
        }
        let change = ChangeMembers::RemoveNodes(BTreeSet::from([node_id]));
        match tokio::time::timeout(
            self.propose_timeout,
            self.raft.change_membership(change, false),
        )
        .await
        {
            Ok(Ok(_)) => {
                self.refusals.forget(node_id);
                tracing::info!(node_id, "learner removed from the metadata quorum");
                RemoveReply::Removed
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(to)))) => {
                RemoveReply::NotLeader {
                    leader: to.leader_id,
                    addr: to.leader_id.and_then(|id| self.addr_of(id)),
                }
            }
            Ok(Err(e)) => RemoveReply::Failed(e.to_string()),
            Err(_) => RemoveReply::Failed(format!(
                "the membership change was not committed within {:?} on leader {}",
                self.propose_timeout, self.node_id
            )),
        }
    }
}

/// Accepts connections until `shutdown`, then closes the listener and every connection.
pub(crate) async fn serve(
    listener: TcpListener,
    handler: Arc<Handler>,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    let mut backoff = Duration::from_millis(10);
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = limit.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(10);
                let handler = handler.clone();
                let shutdown = shutdown.clone();
                let tls = tls.clone();
                connections.spawn(async move {
                    let _permit = permit;
                    let conn = match tls {
                        None => Connection::new(stream),
                        Some(tls) => {
                            let _ = stream.set_nodelay(true);
                            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(stream))
                                .await
                            {
                                Ok(Ok(stream)) => Connection::over(Box::new(stream)),
                                // Closed before a handshake: a TCP probe (the kubelet's) or
                                // a port scan, not a peer.
                                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                                    tracing::debug!(%peer, "controller connection closed before a TLS handshake");
                                    return;
                                }
                                Ok(Err(e)) => {
                                    tracing::warn!(%peer, error = %e, "controller connection refused: TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "controller connection closed: no TLS handshake in time");
                                    return;
                                }
                            }
                        }
                    };
                    serve_connection(conn, &handler, &shutdown).await;
                    tracing::trace!(%peer, "controller connection closed");
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!(error = %e, "controller listener failed to accept");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    connections.shutdown().await;
}

/// Serves one connection; when a broker heartbeat on it and it closes (not for our shutdown),
/// the broker may be gone: a killed process's sockets reset at once.
async fn serve_connection(mut conn: Connection, handler: &Handler, shutdown: &CancellationToken) {
    let mut heartbeat_of = None;
    serve_requests(&mut conn, handler, shutdown, &mut heartbeat_of).await;
    if let Some(broker) = heartbeat_of {
        if !shutdown.is_cancelled() {
            handler.liveness.connection_lost(broker);
        }
    }
}

async fn serve_requests(
    conn: &mut Connection,
    handler: &Handler,
    shutdown: &CancellationToken,
    heartbeat_of: &mut Option<i32>,
) {
    loop {
        let request = tokio::select! {
            _ = shutdown.cancelled() => return,
            request = conn.read::<Request>() => request,
        };
        let request = match request {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "dropping a controller connection");
                return;
            }
        };
        let heartbeat = match &request {
            Request::Heartbeat { broker } => Some(*broker),
            _ => None,
        };
        let response = tokio::select! {
            _ = shutdown.cancelled() => return,
            response = handler.dispatch(request) => response,
        };
        if matches!(response, Response::Heartbeat(HeartbeatReply::Noted)) {
            *heartbeat_of = heartbeat;
        }
        if let Err(e) = conn.write(&response).await {
            tracing::debug!(error = %e, "dropping a controller connection");
            return;
        }
    }
}
