//! [`RaftQuorum`]: a running quorum member, and what the rest of the broker asks of it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, Fatal, InitializeError, RaftError};
use openraft::{BasicNode, RaftMetrics};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::network::{self, CallError, NetworkFactory, Refusals};
use super::server::{self, Handler};
use super::state_machine::StateMachineStore;
use super::store::LogStore;
use super::wire::{ForwardReply, JoinReply, Request, Response};
use super::{NodeId, QuorumError, Raft, RaftConfig, RaftTuning};
use crate::controller::image::{CommandResult, MetadataCommand, MetadataImage};

/// A handle to this node's member of the metadata quorum; clones share it.
#[derive(Clone)]
pub struct RaftQuorum {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: NodeId,
    advertised: String,
    voters: Arc<BTreeMap<NodeId, String>>,
    tuning: RaftTuning,
    local_addr: SocketAddr,
    raft: Raft,
    metrics: watch::Receiver<RaftMetrics<NodeId, BasicNode>>,
    images: watch::Receiver<Arc<MetadataImage>>,
    handler: Arc<Handler>,
    refusals: Arc<Refusals>,
    /// Cancelled by `shutdown` or by the token given to `start`.
    stop: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl RaftQuorum {
    /// Opens the node's state in `config.dir`, binds the controller listener and starts raft.
    /// A voter with an empty log bootstraps the cluster with the configured voters; any other
    /// node joins as a learner, asking the voters until one that leads adds it.
    pub async fn start(
        config: RaftConfig,
        shutdown: CancellationToken,
    ) -> Result<RaftQuorum, QuorumError> {
        config.validate()?;
        let raft_config = Arc::new(config.tuning.openraft_config()?);
        let dir = config.dir.clone();
        let (log, (state_machine, images)) = tokio::task::spawn_blocking(move || {
            let log = LogStore::open(&dir)?;
            let state_machine = StateMachineStore::open(&dir)?;
            Ok::<_, std::io::Error>((log, state_machine))
        })
        .await
        .map_err(|e| QuorumError::Fatal(format!("opening the metadata log failed: {e}")))?
        .map_err(QuorumError::io(format!(
            "cannot open the metadata log in {}",
            config.dir.display()
        )))?;
        let listener = TcpListener::bind(&config.listen)
            .await
            .map_err(QuorumError::io(format!(
                "cannot bind the controller listener {}",
                config.listen
            )))?;
        let local_addr = listener
            .local_addr()
            .map_err(QuorumError::io("controller listener address"))?;

        let voters = Arc::new(config.voters.clone());
        let refusals = Arc::new(Refusals::default());
        let network = NetworkFactory::new(config.node_id, voters.clone(), Arc::clone(&refusals));
        let raft = Raft::new(config.node_id, raft_config, network, log, state_machine)
            .await
            .map_err(|e| QuorumError::Fatal(e.to_string()))?;

        let stop = shutdown.child_token();
        let handler = Arc::new(Handler {
            node_id: config.node_id,
            raft: raft.clone(),
            voters: voters.clone(),
            propose_timeout: config.tuning.propose_timeout,
        });
        let quorum = RaftQuorum {
            inner: Arc::new(Inner {
                node_id: config.node_id,
                advertised: config.advertised(),
                voters: voters.clone(),
                tuning: config.tuning.clone(),
                local_addr,
                metrics: raft.metrics(),
                raft: raft.clone(),
                images,
                handler: handler.clone(),
                refusals,
                stop: stop.clone(),
                tasks: Mutex::new(Vec::new()),
            }),
        };
        let mut tasks = vec![tokio::spawn(server::serve(listener, handler, stop.clone()))];

        if !config.is_voter() {
            let joiner = quorum.clone();
            tasks.push(tokio::spawn(async move { joiner.join_as_learner().await }));
        }
        // The caller's token stops us too; the task ends with the quorum either way.
        let watcher = quorum.clone();
        tasks.push(tokio::spawn(async move {
            watcher.inner.stop.cancelled().await;
            let _ = watcher.inner.raft.shutdown().await;
        }));
        quorum.inner.tasks.lock().extend(tasks);
        if config.is_voter() {
            if let Err(e) = quorum.bootstrap().await {
                quorum.shutdown().await;
                return Err(e);
            }
        }
        tracing::info!(
            node_id = config.node_id,
            voter = config.is_voter(),
            %local_addr,
            dir = %config.dir.display(),
            "metadata quorum started"
        );
        Ok(quorum)
    }

    /// A voter's first start: propose the configured voters as the membership. Every voter does
    /// it; the first to win an election makes it stick, the others' are refused or identical.
    async fn bootstrap(&self) -> Result<(), QuorumError> {
        let raft = &self.inner.raft;
        if raft.is_initialized().await.map_err(|e| fatal(&e))? {
            return Ok(());
        }
        let members: BTreeMap<NodeId, BasicNode> = self
            .inner
            .voters
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr.clone())))
            .collect();
        match raft.initialize(members).await {
            Ok(()) => Ok(()),
            // Another voter reached us first: we follow its log.
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(RaftError::APIError(e)) => Err(QuorumError::Config(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(fatal(&e)),
        }
    }

    /// A learner asks the voters to add it, until its address is in the membership it
    /// replicates; then it watches, in case it is removed or comes back at another address.
    async fn join_as_learner(&self) {
        let inner = &self.inner;
        let request = Request::Join {
            node_id: inner.node_id,
            addr: inner.advertised.clone(),
        };
        let voters: Vec<(NodeId, String)> = inner
            .voters
            .iter()
            .map(|(id, a)| (*id, a.clone()))
            .collect();
        let mut next_voter = 0usize;
        let mut hint: Option<String> = None;
        let mut backoff = Duration::from_millis(50);
        let mut metrics = inner.metrics.clone();
        loop {
            if self.in_membership() {
                backoff = Duration::from_millis(50);
                tokio::select! {
                    _ = inner.stop.cancelled() => return,
                    changed = metrics.changed() => if changed.is_err() { return },
                }
                continue;
            }
            let addr = hint.take().unwrap_or_else(|| {
                let (_, addr) = &voters[next_voter % voters.len()];
                next_voter += 1;
                addr.clone()
            });
            let outcome = tokio::select! {
                _ = inner.stop.cancelled() => return,
                outcome = network::request(&addr, &request, inner.tuning.rpc_timeout) => outcome,
            };
            let wait = match outcome {
                Ok(Response::Join(JoinReply::Joined)) => {
                    // The membership reaches us with the next replication.
                    backoff = Duration::from_millis(50);
                    inner.tuning.heartbeat_interval
                }
                Ok(Response::Join(JoinReply::NotLeader {
                    addr: Some(leader), ..
                })) => {
                    hint = Some(leader);
                    Duration::from_millis(20)
                }
                other => {
                    tracing::debug!(%addr, outcome = ?other, "join attempt failed");
                    let wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    wait
                }
            };
            tokio::select! {
                _ = inner.stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    fn in_membership(&self) -> bool {
        let metrics = self.inner.metrics.borrow();
        metrics
            .membership_config
            .membership()
            .get_node(&self.inner.node_id)
            .is_some_and(|node| node.addr == self.inner.advertised)
    }

    /// Proposes a command and returns its result once committed and applied locally. On a
    /// node that does not lead, the command goes to the leader over the controller transport.
    /// While there is no leader it retries, up to `tuning.propose_timeout` in all.
    pub async fn propose(&self, command: MetadataCommand) -> Result<CommandResult, QuorumError> {
        let inner = &self.inner;
        let started = Instant::now();
        let deadline = started + inner.tuning.propose_timeout;
        let mut backoff = Duration::from_millis(10);
        // A leader named by a node that does not lead, tried before our own view catches up.
        let mut hint: Option<(NodeId, String)> = None;
        loop {
            if inner.stop.is_cancelled() {
                return Err(QuorumError::ShutDown);
            }
            let target = hint.take().or_else(|| {
                self.leader()
                    .map(|id| (id, self.addr_of(id).unwrap_or_default()))
            });
            match target {
                Some((leader, _)) if leader == inner.node_id => {
                    if let Some(result) = self.write_locally(&command, deadline, started).await? {
                        return Ok(result);
                    }
                }
                Some((leader, addr)) if !addr.is_empty() => {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    let request = Request::Forward(command.clone());
                    match network::request(&addr, &request, remaining).await {
                        Ok(Response::Forward(ForwardReply::Applied { result, index })) => {
                            self.wait_applied_locally(index, deadline).await;
                            return Ok(result);
                        }
                        Ok(Response::Forward(ForwardReply::NotLeader {
                            leader: Some(id),
                            addr: Some(a),
                        })) if id != leader => {
                            hint = Some((id, a));
                        }
                        Ok(Response::Forward(ForwardReply::NotLeader { .. })) => {}
                        Ok(Response::Forward(ForwardReply::Failed(message))) => {
                            return Err(QuorumError::Leader { leader, message });
                        }
                        Ok(other) => {
                            return Err(QuorumError::Leader {
                                leader,
                                message: format!(
                                    "unexpected response to a forwarded command: {other:?}"
                                ),
                            })
                        }
                        // Not sent: the leader is gone or unreachable; wait for the next one.
                        Err(CallError::Connect(e)) => {
                            tracing::debug!(leader, %addr, error = %e, "metadata leader unreachable");
                        }
                        Err(CallError::Timeout) => {
                            return Err(QuorumError::Timeout {
                                waited: started.elapsed(),
                            })
                        }
                        Err(CallError::Io(source)) => {
                            return Err(QuorumError::Interrupted {
                                leader,
                                addr,
                                source,
                            });
                        }
                        Err(CallError::TooLarge(source)) => {
                            return Err(QuorumError::Io {
                                context: "the metadata command cannot be sent".into(),
                                source,
                            });
                        }
                    }
                }
                _ => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(QuorumError::NoLeader {
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep(backoff.min(deadline - now)).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }

    /// Writes on this node, its leader. `Ok(None)`: it no longer leads and nothing was written.
    async fn write_locally(
        &self,
        command: &MetadataCommand,
        deadline: Instant,
        started: Instant,
    ) -> Result<Option<CommandResult>, QuorumError> {
        let write = self.inner.raft.client_write(command.clone());
        match tokio::time::timeout_at(deadline, write).await {
            Ok(Ok(response)) => Ok(Some(response.data)),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => Ok(None),
            Ok(Err(RaftError::APIError(e))) => Err(QuorumError::Leader {
                leader: self.inner.node_id,
                message: e.to_string(),
            }),
            Ok(Err(RaftError::Fatal(e))) => Err(QuorumError::Leader {
                leader: self.inner.node_id,
                message: e.to_string(),
            }),
            Err(_) => Err(QuorumError::Timeout {
                waited: started.elapsed(),
            }),
        }
    }

    /// After a forwarded command is applied on the leader, waits until this node has applied
    /// it too, so the caller's next `image()` shows its effect. It is committed either way: past
    /// the deadline the result is returned all the same.
    async fn wait_applied_locally(&self, index: u64, deadline: Instant) {
        let mut metrics = self.inner.metrics.clone();
        let applied = async {
            loop {
                if metrics
                    .borrow_and_update()
                    .last_applied
                    .is_some_and(|a| a.index >= index)
                {
                    return;
                }
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        };
        if tokio::time::timeout_at(deadline, applied).await.is_err() {
            tracing::warn!(
                index,
                "a forwarded metadata command is committed but not yet applied here"
            );
        }
    }

    /// The applied image: every node sees every committed command applied in order.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.inner.images.clone()
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.inner.images.borrow().clone()
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.inner.metrics.borrow().current_leader
    }

    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.inner.node_id)
    }

    /// Resolves once the leader this node knows of is other than `known` (at once if it
    /// already is); never if the quorum stops.
    pub async fn leader_other_than(&self, known: Option<NodeId>) {
        let mut metrics = self.inner.metrics.clone();
        loop {
            if metrics.borrow_and_update().current_leader != known {
                return;
            }
            if metrics.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Peers whose controller listener refuses this node's connections, and since when: their
    /// process is gone. Kept fresh only on the leader, which contacts every member.
    pub fn refusing_peers(&self) -> BTreeMap<NodeId, network::Refused> {
        self.inner.refusals.snapshot()
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// The bound address of the controller listener.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    #[cfg(test)]
    pub(crate) fn inner_purged_index(&self) -> Option<u64> {
        self.inner.metrics.borrow().purged.map(|p| p.index)
    }

    fn addr_of(&self, id: NodeId) -> Option<String> {
        self.inner.handler.addr_of(id)
    }

    /// Builds a snapshot now (they are also built every `tuning.snapshot_every` entries) and
    /// waits, bounded by `tuning.snapshot_timeout`, until it is written.
    pub async fn snapshot(&self) -> Result<(), QuorumError> {
        let inner = &self.inner;
        let applied = inner.metrics.borrow().last_applied;
        inner
            .raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| fatal(&e))?;
        let Some(applied) = applied else {
            return Ok(());
        };
        let mut metrics = inner.metrics.clone();
        let done = async {
            loop {
                if metrics
                    .borrow_and_update()
                    .snapshot
                    .is_some_and(|s| s.index >= applied.index)
                {
                    return true;
                }
                if metrics.changed().await.is_err() {
                    return false;
                }
            }
        };
        match tokio::time::timeout(inner.tuning.snapshot_timeout, done).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(QuorumError::ShutDown),
            Err(_) => Err(QuorumError::Timeout {
                waited: inner.tuning.snapshot_timeout,
            }),
        }
    }

    /// Stops raft, the listener and every task of this node. Idempotent.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.stop.cancel();
        if let Err(e) = inner.raft.shutdown().await {
            tracing::debug!(error = %e, "raft shutdown");
        }
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *inner.tasks.lock());
        for task in tasks {
            let _ = task.await;
        }
        tracing::info!(node_id = inner.node_id, "metadata quorum stopped");
    }
}

fn fatal(e: &Fatal<NodeId>) -> QuorumError {
    match e {
        Fatal::Stopped => QuorumError::ShutDown,
        other => QuorumError::Fatal(other.to_string()),
    }
}
