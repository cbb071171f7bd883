//! [`RaftQuorum`]: a running quorum member, and what the rest of the broker asks of it.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
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

use super::network::{self, CallError, Channel, NetworkFactory, Refusals};
use super::progress::{Progress, QuorumStatus};
use super::server::{self, Handler};
use super::state_machine::StateMachineStore;
use super::store::LogStore;
use super::wire::{
    DescribeReply, ForwardReply, HeartbeatReply, JoinReply, RemoveReply, Request, Response,
};
use super::{NodeId, QuorumError, Raft, RaftConfig, RaftTuning};
use crate::controller::image::{CommandResult, MetadataCommand, MetadataImage};
use crate::controller::Liveness;

/// A handle to this node's member of the metadata quorum; clones share it.
#[derive(Clone)]
pub struct RaftQuorum {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: NodeId,
    advertised: String,
    voters: Arc<BTreeMap<NodeId, String>>,
    /// The controllers a learner asks to join.
    join: Vec<String>,
    tuning: RaftTuning,
    local_addr: SocketAddr,
    raft: Raft,
    metrics: watch::Receiver<RaftMetrics<NodeId, BasicNode>>,
    images: watch::Receiver<Arc<MetadataImage>>,
    handler: Arc<Handler>,
    refusals: Arc<Refusals>,
    /// What this node hears of brokers when it is the active controller.
    liveness: Arc<Liveness>,
    /// The connection this node heartbeats on, to the leader (id and address) it was opened for.
    heartbeat: tokio::sync::Mutex<Option<(NodeId, String, Channel)>>,
    /// How this node connects to its peers when the transport has TLS.
    tls: Option<tokio_rustls::TlsConnector>,
    /// Cancelled by `shutdown` or by the token given to `start`.
    stop: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl RaftQuorum {
    /// Opens the node's state in `config.dir`, binds the controller listener and starts raft.
    /// A voter with an empty log bootstraps the cluster with the configured voters; any other
    /// node joins as a learner, asking the voters (or the bootstrap servers) until one that
    /// leads adds it.
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
        let progress = Arc::new(Progress::default());
        let connector = config.tls.as_ref().map(|tls| tls.connector.clone());
        let network = NetworkFactory::new(
            config.node_id,
            voters.clone(),
            Arc::clone(&refusals),
            Arc::clone(&progress),
            connector.clone(),
        );
        let raft = Raft::new(config.node_id, raft_config, network, log, state_machine)
            .await
            .map_err(|e| QuorumError::Fatal(e.to_string()))?;

        let stop = shutdown.child_token();
        let liveness = Arc::new(Liveness::default());
        let handler = Arc::new(Handler {
            node_id: config.node_id,
            raft: raft.clone(),
            voters: voters.clone(),
            propose_timeout: config.tuning.propose_timeout,
            refusals: Arc::clone(&refusals),
            progress: Arc::clone(&progress),
            liveness: Arc::clone(&liveness),
        });
        let quorum = RaftQuorum {
            inner: Arc::new(Inner {
                node_id: config.node_id,
                advertised: config.advertised(local_addr.port()),
                join: config.join_addresses(),
                voters: voters.clone(),
                tuning: config.tuning.clone(),
                local_addr,
                metrics: raft.metrics(),
                raft: raft.clone(),
                images,
                handler: handler.clone(),
                refusals,
                liveness,
                heartbeat: tokio::sync::Mutex::new(None),
                tls: connector,
                stop: stop.clone(),
                tasks: Mutex::new(Vec::new()),
            }),
        };
        let mut tasks = vec![
            tokio::spawn(server::serve(
                listener,
                handler,
                config.tls.as_ref().map(|tls| tls.acceptor.clone()),
                stop.clone(),
            )),
            tokio::spawn(track_leader_log(raft.metrics(), progress, stop.clone())),
        ];

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
        let voters = &inner.join;
        if voters.is_empty() {
            return;
        }
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
                let addr = &voters[next_voter % voters.len()];
                next_voter += 1;
                addr.clone()
            });
            let outcome = tokio::select! {
                _ = inner.stop.cancelled() => return,
                outcome = network::request(&addr, inner.tls.as_ref(), &request, inner.tuning.rpc_timeout) => outcome,
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

    /// The active controller's view of broker liveness, kept while this node leads.
    pub fn liveness(&self) -> &Liveness {
        &self.inner.liveness
    }

    /// Tells the active controller that broker `broker` is alive (Kafka's BrokerHeartbeat):
    /// noted here when this node leads, else sent to the leader over a connection kept
    /// between heartbeats, whose closing tells the controller the broker may be gone. Whether
    /// the controller noted it within `timeout`.
    pub async fn heartbeat(&self, broker: i32, timeout: Duration) -> bool {
        let Some(leader) = self.leader() else {
            return false;
        };
        if leader == self.inner.node_id {
            self.inner.liveness.heartbeat(broker);
            return true;
        }
        let Some(addr) = self.addr_of(leader) else {
            return false;
        };
        let mut slot = self.inner.heartbeat.lock().await;
        if slot
            .as_ref()
            .is_none_or(|(id, known, _)| *id != leader || *known != addr)
        {
            *slot = Some((
                leader,
                addr.clone(),
                Channel::new(addr, self.inner.tls.clone()),
            ));
        }
        let Some((_, _, channel)) = slot.as_mut() else {
            return false;
        };
        match channel.call(&Request::Heartbeat { broker }, timeout).await {
            Ok(Response::Heartbeat(HeartbeatReply::Noted)) => true,
            outcome => {
                tracing::debug!(leader, ?outcome, "heartbeat not noted");
                *slot = None;
                false
            }
        }
    }

    /// The voters and the learners of the membership this node knows of.
    pub fn members(&self) -> (BTreeSet<NodeId>, BTreeSet<NodeId>) {
        let metrics = self.inner.metrics.borrow();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let learners = membership
            .nodes()
            .map(|(id, _)| *id)
            .filter(|id| !voters.contains(id))
            .collect();
        (voters, learners)
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
        let request = Request::Forward(command.clone());
        let command = &command;
        let local = |deadline, started| async move {
            Ok(
                match self.write_locally(command, deadline, started).await? {
                    Some(result) => LeaderAnswer::Done((result, None)),
                    None => LeaderAnswer::NotLeader {
                        leader: None,
                        addr: None,
                    },
                },
            )
        };
        let unpack = |response| match response {
            Response::Forward(ForwardReply::Applied { result, index }) => {
                Some(Ok(LeaderAnswer::Done((result, Some(index)))))
            }
            Response::Forward(ForwardReply::NotLeader { leader, addr }) => {
                Some(Ok(LeaderAnswer::NotLeader { leader, addr }))
            }
            Response::Forward(ForwardReply::Failed(message)) => {
                Some(Ok(LeaderAnswer::Failed(message)))
            }
            _ => None,
        };
        let started = Instant::now();
        let (result, index) = self.on_leader(&request, local, unpack).await?;
        if let Some(index) = index {
            // Applied on the leader: wait until it is applied here too.
            let deadline = started + self.inner.tuning.propose_timeout;
            self.wait_applied_locally(index, deadline).await;
        }
        Ok(result)
    }

    /// The quorum's state (Kafka's DescribeQuorum), from the leader: this node when it leads,
    /// else asked over the controller transport. Retries while there is no leader, up to
    /// `tuning.propose_timeout` in all.
    pub async fn describe(&self) -> Result<QuorumStatus, QuorumError> {
        let answer = |reply| match reply {
            DescribeReply::Status(status) => LeaderAnswer::Done(status),
            DescribeReply::NotLeader { leader, addr } => LeaderAnswer::NotLeader { leader, addr },
            DescribeReply::Failed(message) => LeaderAnswer::Failed(message),
        };
        let local = |_, _| async { Ok(answer(self.inner.handler.describe().await)) };
        let unpack = |response| match response {
            Response::DescribeQuorum(reply) => Some(Ok(answer(reply))),
            _ => None,
        };
        self.on_leader(&Request::DescribeQuorum, local, unpack)
            .await
    }

    /// Takes learner `node_id` out of the membership, on the leader (over the controller
    /// transport from any other node), so the leader stops replicating to it. Taking out a
    /// voter is refused: that is a change of the quorum. Retries while there is no leader, up
    /// to `tuning.propose_timeout` in all.
    pub async fn remove_learner(&self, node_id: NodeId) -> Result<(), QuorumError> {
        let answer = |reply| match reply {
            RemoveReply::Removed => Ok(LeaderAnswer::Done(())),
            RemoveReply::Voter => Err(QuorumError::Voter { node_id }),
            RemoveReply::NotLeader { leader, addr } => Ok(LeaderAnswer::NotLeader { leader, addr }),
            RemoveReply::Failed(message) => Ok(LeaderAnswer::Failed(message)),
        };
        let local = |_, _| async { answer(self.inner.handler.remove_learner(node_id).await) };
        let unpack = |response| match response {
            Response::RemoveLearner(reply) => Some(answer(reply)),
            _ => None,
        };
        self.on_leader(&Request::RemoveLearner { node_id }, local, unpack)
            .await
    }

    /// Runs a request on the leader: `local` when this node leads, else `request` over the
    /// controller transport to the leader this node knows of, or the one another node named,
    /// its response read by `unpack` (`None`: not an answer to the request). While there is
    /// no leader it retries, up to `tuning.propose_timeout` in all.
    async fn on_leader<T, F>(
        &self,
        request: &Request,
        local: impl Fn(Instant, Instant) -> F,
        unpack: impl Fn(Response) -> Option<Result<LeaderAnswer<T>, QuorumError>>,
    ) -> Result<T, QuorumError>
    where
        F: Future<Output = Result<LeaderAnswer<T>, QuorumError>>,
    {
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
            let answer = match target {
                Some((leader, _)) if leader == inner.node_id => {
                    Some((leader, local(deadline, started).await?))
                }
                Some((leader, addr)) if !addr.is_empty() => {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    match network::request(&addr, inner.tls.as_ref(), request, remaining).await {
                        Ok(response) => match unpack(response) {
                            Some(answer) => Some((leader, answer?)),
                            None => {
                                return Err(QuorumError::Leader {
                                    leader,
                                    message: "unexpected response from the metadata leader"
                                        .to_string(),
                                })
                            }
                        },
                        // Not sent: the leader is gone or unreachable; wait for the next one.
                        Err(CallError::Connect(e)) => {
                            tracing::debug!(leader, %addr, error = %e, "metadata leader unreachable");
                            None
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
                                context: "the request to the metadata leader cannot be sent".into(),
                                source,
                            });
                        }
                    }
                }
                _ => None,
            };
            match answer {
                Some((_, LeaderAnswer::Done(value))) => return Ok(value),
                Some((leader, LeaderAnswer::Failed(message))) => {
                    return Err(QuorumError::Leader { leader, message });
                }
                Some((
                    leader,
                    LeaderAnswer::NotLeader {
                        leader: Some(id),
                        addr: Some(addr),
                    },
                )) if id != leader => hint = Some((id, addr)),
                Some((_, LeaderAnswer::NotLeader { .. })) | None => {}
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

    /// The raft log index of the last entry applied to this node's image, -1 before any.
    pub fn applied_offset(&self) -> i64 {
        self.inner
            .metrics
            .borrow()
            .last_applied
            .map_or(-1, |applied| {
                i64::try_from(applied.index).unwrap_or(i64::MAX)
            })
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

/// Keeps [`Progress`] told of this node's last log index, and clears it when a new term
/// begins, so a leader reports only answers to its own AppendEntries.
async fn track_leader_log(
    mut metrics: watch::Receiver<RaftMetrics<NodeId, BasicNode>>,
    progress: Arc<Progress>,
    stop: CancellationToken,
) {
    let mut term = None;
    loop {
        {
            let metrics = metrics.borrow_and_update();
            if term != Some(metrics.current_term) {
                term = Some(metrics.current_term);
                progress.reset();
            }
            progress.set_leader_last_index(metrics.last_log_index);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = metrics.changed() => if changed.is_err() { return },
        }
    }
}

/// What the leader (or a node that turned out not to be it) answered.
enum LeaderAnswer<T> {
    Done(T),
    /// This node does not lead; nothing was done. The leader it knows of, if any.
    NotLeader {
        leader: Option<NodeId>,
        addr: Option<String>,
    },
    /// The leader took the request but could not say how it ended.
    Failed(String),
}

fn fatal(e: &Fatal<NodeId>) -> QuorumError {
    match e {
        Fatal::Stopped => QuorumError::ShutDown,
        other => QuorumError::Fatal(other.to_string()),
    }
}
