//! Runs a balancing goal against a live cluster: reads the state (Metadata and
//! ListPartitionReassignments), plans, submits AlterPartitionReassignments a bounded number of
//! partitions at a time, waits for them, and elects preferred leaders (ElectLeaders).
//!
//! Nothing is remembered outside the cluster, so a run that is interrupted (or an operator
//! that restarts) picks up where the cluster is: reassignments still in flight count against
//! the bound and are waited for, finished ones are not redone. A partition in flight is
//! planned as if its reassignment had finished, and is never submitted again while it is in
//! flight. Within a run the plan is followed to its end, every round checking each move
//! against the cluster's state first (a partition that changed meanwhile is left to the next
//! plan), then the cluster is planned again, until a plan has no moves; the preferred leaders
//! are elected last.
//!
//! The bound on concurrent moves (`max_moves`) limits how many partitions copy at once. With
//! a `throttle`, every broker about to receive a replica gets the dynamic broker setting
//! `follower.replication.throttled.rate` (IncrementalAlterConfigs on its BROKER resource, sent
//! to that broker) before the moves are submitted, and the run deletes it again on every
//! broker it set it on when it ends, done or failed. A run that is killed leaves the rate in
//! place (brokers keep dynamic settings in the metadata quorum, across restarts) until the
//! next throttled run ends or someone deletes it. Oxbow's brokers throttle the follower side only: there is no
//! `leader.replication.throttled.rate` nor per-topic list of throttled replicas, so the rate
//! also paces a receiving broker's ordinary follower traffic while the run lasts.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, DescribeClusterRequest, ElectLeadersRequest,
    IncrementalAlterConfigsRequest, ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse, MetadataRequest, TopicName, UnregisterBrokerRequest,
};
use kafka_protocol::protocol::{Request, StrBytes};
use kafka_protocol::ResponseError;
use oxbow_broker::client::{ClientError, Connection};
use serde::Serialize;
use thiserror::Error;

use super::{
    balance_leaders, change_replication_factor, rebalance, BrokerInfo, ClusterState, Distribution,
    Move, PartitionInfo, Plan, PlanError,
};

/// Protocol versions used; all are supported by Oxbow and by Apache Kafka 3.x and 4.x.
const METADATA_V: i16 = 12;
const LIST_REASSIGNMENTS_V: i16 = 0;
/// v1 carries `allow_replication_factor_change`, so a balancing move can never change a
/// partition's replication factor by mistake.
const ALTER_REASSIGNMENTS_V: i16 = 1;
const ELECT_LEADERS_V: i16 = 2;
const INCREMENTAL_ALTER_CONFIGS_V: i16 = 1;
/// v2 lists fenced brokers too (Kafka 4.0 and later).
const DESCRIBE_CLUSTER_V: i16 = 2;
const UNREGISTER_BROKER_V: i16 = 0;
/// The broker setting a throttled run sets on the brokers receiving replicas.
pub const THROTTLE_SETTING: &str = "follower.replication.throttled.rate";
const RESOURCE_BROKER: i8 = 4;
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const PREFERRED_ELECTION: i8 = 0;
/// Plans made after the first one has been carried out, before giving up: the cluster may
/// change under a run (a broker fails, someone else reassigns), but not forever.
const MAX_REPLANS: usize = 5;
/// Reads of Metadata between two agreeing reassignment lists before taking the last one.
const OBSERVE_ATTEMPTS: usize = 5;

/// What the run should achieve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "goal")]
pub enum Goal {
    /// Replicas and leaders balanced over `brokers` (every live broker when `None`), with
    /// nothing left on `drain`.
    Rebalance {
        brokers: Option<Vec<i32>>,
        drain: Vec<i32>,
    },
    /// Preferred leaders spread evenly; no replica moves.
    Leaders,
    /// Every partition of `topic` with `replication_factor` replicas.
    ReplicationFactor {
        topic: String,
        replication_factor: usize,
    },
}

impl Goal {
    pub fn plan(&self, state: &ClusterState) -> Result<Plan, PlanError> {
        match self {
            Goal::Rebalance { brokers, drain } => rebalance(state, brokers.as_deref(), drain),
            Goal::Leaders => Ok(balance_leaders(state)),
            Goal::ReplicationFactor {
                topic,
                replication_factor,
            } => change_replication_factor(state, topic, *replication_factor),
        }
    }

    /// Brokers the goal balances over.
    pub fn targets(&self, state: &ClusterState) -> BTreeSet<i32> {
        match self {
            Goal::Rebalance { brokers, drain } => brokers
                .as_ref()
                .map_or_else(|| state.broker_ids(), |b| b.iter().copied().collect())
                .into_iter()
                .filter(|id| !drain.contains(id))
                .collect(),
            Goal::Leaders | Goal::ReplicationFactor { .. } => state.broker_ids(),
        }
    }

    /// Whether the goal is about partitions of `topic`: its reassignments in flight are the
    /// goal's to wait for.
    pub fn concerns(&self, topic: &str) -> bool {
        match self {
            Goal::Rebalance { .. } | Goal::Leaders => true,
            Goal::ReplicationFactor { topic: t, .. } => t == topic,
        }
    }

    /// Brokers the goal may leave replicas on although they are not live.
    fn tolerates_offline(&self, id: i32) -> bool {
        matches!(self, Goal::Rebalance { drain, .. } if drain.contains(&id))
    }
}

/// How the executor paces itself.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Partitions being reassigned at once, counting those already in flight (at least 1).
    pub max_moves: usize,
    /// Pause between two looks at the cluster.
    pub poll_interval: Duration,
    /// Bound of one request, connection included.
    pub request_timeout: Duration,
    /// Bound of the whole run.
    pub timeout: Duration,
    /// How often preferred leaders that could not be elected are retried before giving up.
    pub election_attempts: usize,
    /// Bytes per second each broker receiving replicas copies at most while the run lasts
    /// (`follower.replication.throttled.rate`); `None` for no throttle.
    pub throttle: Option<u64>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_moves: 10,
            poll_interval: Duration::from_millis(500),
            request_timeout: Duration::from_secs(30),
            timeout: Duration::from_secs(3600),
            election_attempts: 10,
            throttle: None,
        }
    }
}

#[derive(Debug, Error)]
pub enum ExecError {
    #[error("no broker of {addresses:?} answered {operation}: {source}")]
    Unreachable {
        operation: &'static str,
        addresses: Vec<String>,
        #[source]
        source: ClientError,
    },
    #[error("{operation} on {address} timed out after {timeout:?}")]
    Timeout {
        operation: &'static str,
        address: String,
        timeout: Duration,
    },
    #[error("{operation} on {address} failed: {source}")]
    Broken {
        operation: &'static str,
        address: String,
        #[source]
        source: ClientError,
    },
    #[error("{operation} refused{}: {code:?}{}", target.as_deref().map(|t| format!(" for {t}")).unwrap_or_default(), message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Refused {
        operation: &'static str,
        /// `topic-partition`, when the refusal is about one partition.
        target: Option<String>,
        code: ResponseError,
        message: Option<String>,
    },
    #[error("{operation}: unexpected response: {detail}")]
    Protocol {
        operation: &'static str,
        detail: String,
    },
    #[error("cannot plan: {0}")]
    Plan(#[from] PlanError),
    /// Replicas live on brokers that are not in the cluster's metadata (stopped or fenced):
    /// moving them away is a decision for the user, not a side effect of balancing.
    #[error("brokers {brokers:?} hold replicas but are not live; start them again, or drain them (--drain) to move their replicas away")]
    OfflineReplicas { brokers: Vec<i32> },
    #[error("gave up after {elapsed:?}: {in_flight} reassignments still in flight ({examples:?}) and {pending} pending")]
    TimedOut {
        elapsed: Duration,
        in_flight: usize,
        pending: usize,
        examples: Vec<String>,
    },
    /// Every finished plan is followed by another: a planner bug, or someone else
    /// reassigning concurrently.
    #[error("the plan does not converge: {moves} moves still planned after {replans} plans were carried out, e.g. {example}")]
    NotConverging {
        replans: usize,
        moves: usize,
        example: String,
    },
}

/// A reassignment the cluster reports in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ongoing {
    /// Target replicas first, then those being removed.
    pub replicas: Vec<i32>,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

impl Ongoing {
    /// The replica list the partition will have once the reassignment completes.
    pub fn target(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.removing.contains(r))
            .collect()
    }
}

/// The cluster as one broker described it.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Partitions as they will be once the reassignments in flight complete.
    pub state: ClusterState,
    /// Replica lists as they are now, in flight replicas included.
    pub current: BTreeMap<(String, i32), Vec<i32>>,
    pub reassigning: BTreeMap<(String, i32), Ongoing>,
}

/// What happened, for the user.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    /// The plan as of the first look at the cluster.
    Planned {
        plan: &'a Plan,
        before: &'a Distribution,
        after: &'a Distribution,
    },
    Submitted {
        moves: &'a [Move],
    },
    /// The replication throttle was set (`Some(rate)`) or removed (`None`) on `brokers`.
    Throttled {
        brokers: &'a [i32],
        rate: Option<u64>,
    },
    Waiting {
        in_flight: usize,
        pending: usize,
        done: usize,
    },
    Electing {
        partitions: &'a [(String, i32)],
    },
    /// Partitions whose preferred leader could not take over (yet).
    NotElected {
        failures: &'a [NotElected],
    },
}

/// A preferred-leader election that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotElected {
    pub topic: String,
    pub partition: i32,
    pub reason: String,
}

/// The outcome of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub goal: Goal,
    pub dry_run: bool,
    /// The plan as first computed.
    pub plan: Plan,
    /// Replicas and preferred leaders per broker before the run, and as the plan (dry run)
    /// or the cluster (after a run) has them.
    pub before: Distribution,
    pub after: Distribution,
    /// Current leaders per broker at the end of a run.
    pub leaders_after: BTreeMap<i32, usize>,
    pub reassignments_submitted: usize,
    pub elections_requested: usize,
    pub not_elected: Vec<NotElected>,
    pub rounds: usize,
    pub elapsed_ms: u128,
}

/// Plans `goal` on the cluster at `bootstrap` (comma-separated `host:port`s) and, unless
/// `dry_run`, carries it out; `on_event` hears about progress.
pub async fn run(
    bootstrap: &str,
    goal: &Goal,
    settings: &Settings,
    dry_run: bool,
    on_event: &mut (dyn FnMut(Event<'_>) + Send),
) -> Result<Report, ExecError> {
    let started = Instant::now();
    let mut admin = Admin::new(bootstrap, settings.request_timeout);
    let max_moves = settings.max_moves.max(1);
    let first = admin.observe().await?;
    check_offline(goal, &first.state)?;
    let plan = goal.plan(&first.state)?;
    let targets = goal.targets(&first.state);
    let mut counted: BTreeSet<i32> = targets.clone();
    counted.extend(first.state.broker_ids());
    counted.extend(
        first
            .state
            .partitions
            .iter()
            .flat_map(|p| p.replicas.clone()),
    );
    let before = first.state.distribution(Some(&counted));
    let planned_after = plan.apply(&first.state).distribution(Some(&counted));
    on_event(Event::Planned {
        plan: &plan,
        before: &before,
        after: &planned_after,
    });
    let mut report = Report {
        goal: goal.clone(),
        dry_run,
        plan: plan.clone(),
        before,
        after: planned_after,
        leaders_after: BTreeMap::new(),
        reassignments_submitted: 0,
        elections_requested: 0,
        not_elected: Vec::new(),
        rounds: 0,
        elapsed_ms: 0,
    };
    if dry_run {
        report.elapsed_ms = started.elapsed().as_millis();
        return Ok(report);
    }

    // Submitted by this run and not yet seen in flight or finished: the broker that answered
    // may not show them yet, and submitting the same target again must not happen.
    let mut unconfirmed: BTreeMap<(String, i32), (Vec<i32>, Instant)> = BTreeMap::new();
    let mut submitted: BTreeSet<(String, i32)> = BTreeSet::new();
    let mut elections_left = settings.election_attempts;
    let mut replans = 0;
    let mut observed = first;
    // The plan's moves not submitted yet, in plan order. The plan is followed to its end
    // (so its moves fit together), then the cluster is planned again.
    let mut queue: VecDeque<Move> = plan.moves.iter().cloned().collect();
    // Brokers this run set the throttle on: it is removed from them when the run ends.
    let mut throttled: BTreeSet<i32> = BTreeSet::new();
    let outcome = async {
        loop {
            report.rounds += 1;
            unconfirmed.retain(|key, (target, since)| {
                let visible = observed.reassigning.contains_key(key)
                    || observed.current.get(key) == Some(target);
                !visible && since.elapsed() < Duration::from_secs(10)
            });
            let in_flight: BTreeSet<(String, i32)> = observed
                .reassigning
                .keys()
                .chain(unconfirmed.keys())
                .cloned()
                .collect();
            on_event(Event::Waiting {
                in_flight: in_flight.len(),
                pending: queue.len(),
                done: submitted.difference(&in_flight).count(),
            });
            if queue.is_empty() && in_flight.is_empty() {
                // Done with the plan: the cluster may have changed meanwhile, so look again.
                let fresh = goal.plan(&observed.state)?;
                if !fresh.moves.is_empty() {
                    replans += 1;
                    if replans > MAX_REPLANS {
                        return Err(ExecError::NotConverging {
                            replans: MAX_REPLANS,
                            moves: fresh.moves.len(),
                            example: fresh
                                .moves
                                .first()
                                .map(|m| {
                                    format!(
                                        "{}-{} {:?} -> {:?}",
                                        m.topic, m.partition, m.from, m.to
                                    )
                                })
                                .unwrap_or_default(),
                        });
                    }
                    queue = fresh.moves.into_iter().collect();
                    continue;
                }
                if fresh.elections.is_empty() || elections_left == 0 {
                    break;
                }
                elections_left -= 1;
                on_event(Event::Electing {
                    partitions: &fresh.elections,
                });
                report.elections_requested += fresh.elections.len();
                let failures = admin.elect(&fresh.elections).await?;
                if !failures.is_empty() {
                    on_event(Event::NotElected {
                        failures: &failures,
                    });
                }
                report.not_elected = failures;
            } else if started.elapsed() > settings.timeout {
                return Err(ExecError::TimedOut {
                    elapsed: started.elapsed(),
                    in_flight: in_flight.len(),
                    pending: queue.len(),
                    examples: in_flight
                        .iter()
                        .take(5)
                        .map(|(t, p)| format!("{t}-{p}"))
                        .collect(),
                });
            } else {
                let targets: BTreeMap<(&str, i32), &Vec<i32>> = observed
                    .state
                    .partitions
                    .iter()
                    .map(|p| ((p.topic.as_str(), p.partition), &p.replicas))
                    .collect();
                let mut room = max_moves.saturating_sub(in_flight.len());
                let mut batch = Vec::new();
                let mut waiting = VecDeque::new();
                while let Some(m) = queue.pop_front() {
                    let key = (m.topic.clone(), m.partition);
                    if room == 0 || in_flight.contains(&key) {
                        waiting.push_back(m);
                    } else if targets.get(&(m.topic.as_str(), m.partition)) == Some(&&m.from) {
                        room -= 1;
                        batch.push(m);
                    }
                    // Otherwise the partition changed since the plan was made: the next plan
                    // decides about it.
                }
                queue = waiting;
                if let Some(rate) = settings.throttle {
                    let receiving: Vec<i32> = batch
                        .iter()
                        .flat_map(|m| m.to.iter().filter(|r| !m.from.contains(r)))
                        .chain(observed.reassigning.values().flat_map(|o| o.adding.iter()))
                        .copied()
                        .filter(|id| !throttled.contains(id))
                        .collect::<BTreeSet<i32>>()
                        .into_iter()
                        .collect();
                    for id in &receiving {
                        // Recorded first: a failure may come after the broker applied it.
                        throttled.insert(*id);
                        admin.set_throttle(*id, Some(rate)).await?;
                    }
                    if !receiving.is_empty() {
                        on_event(Event::Throttled {
                            brokers: &receiving,
                            rate: Some(rate),
                        });
                    }
                }
                if !batch.is_empty() {
                    for m in &batch {
                        let key = (m.topic.clone(), m.partition);
                        unconfirmed.insert(key.clone(), (m.to.clone(), Instant::now()));
                        submitted.insert(key);
                    }
                    admin.reassign(&batch).await?;
                    report.reassignments_submitted += batch.len();
                    on_event(Event::Submitted { moves: &batch });
                }
            }
            tokio::time::sleep(settings.poll_interval).await;
            observed = admin.observe().await?;
            check_offline(goal, &observed.state)?;
        }
        Ok::<(), ExecError>(())
    }
    .await;
    let cleared = admin.clear_throttles(&throttled).await;
    if !cleared.is_empty() {
        on_event(Event::Throttled {
            brokers: &cleared,
            rate: None,
        });
    }
    outcome?;
    if let Some(left) = throttled.iter().find(|id| !cleared.contains(id)) {
        // Clearing failed on a broker (the error is in the log): retry once to report why.
        admin.set_throttle(*left, None).await?;
    }
    let counted: BTreeSet<i32> = report
        .before
        .replicas
        .keys()
        .copied()
        .chain(observed.state.broker_ids())
        .collect();
    report.after = observed.state.distribution(Some(&counted));
    report.leaders_after = counted.iter().map(|id| (*id, 0)).collect();
    for partition in &observed.state.partitions {
        if let Some(count) = report.leaders_after.get_mut(&partition.leader) {
            *count += 1;
        }
    }
    report.elapsed_ms = started.elapsed().as_millis();
    Ok(report)
}

/// Refuses to plan around replicas on brokers that are not live, unless they are drained.
pub(super) fn check_offline(goal: &Goal, state: &ClusterState) -> Result<(), ExecError> {
    let live = state.broker_ids();
    let offline: BTreeSet<i32> = state
        .partitions
        .iter()
        .flat_map(|p| p.replicas.iter().copied())
        .filter(|id| !live.contains(id) && !goal.tolerates_offline(*id))
        .collect();
    if offline.is_empty() {
        Ok(())
    } else {
        Err(ExecError::OfflineReplicas {
            brokers: offline.into_iter().collect(),
        })
    }
}

/// Reads the cluster's state from `bootstrap` (comma-separated `host:port`s).
pub async fn observe(bootstrap: &str, request_timeout: Duration) -> Result<Observed, ExecError> {
    Admin::new(bootstrap, request_timeout).observe().await
}

/// Submits `moves` as AlterPartitionReassignments to the cluster at `bootstrap`.
pub async fn submit(
    bootstrap: &str,
    request_timeout: Duration,
    moves: &[Move],
) -> Result<(), ExecError> {
    Admin::new(bootstrap, request_timeout).reassign(moves).await
}

/// Elects the preferred leaders of `partitions` on the cluster at `bootstrap`; returns those
/// that could not be elected.
pub async fn elect_preferred(
    bootstrap: &str,
    request_timeout: Duration,
    partitions: &[(String, i32)],
) -> Result<Vec<NotElected>, ExecError> {
    Admin::new(bootstrap, request_timeout)
        .elect(partitions)
        .await
}

/// Every broker registered with the cluster at `bootstrap`, fenced (stopped) ones included.
pub async fn registered_brokers(
    bootstrap: &str,
    request_timeout: Duration,
) -> Result<BTreeSet<i32>, ExecError> {
    Admin::new(bootstrap, request_timeout)
        .registered_brokers()
        .await
}

/// Unregisters broker `id` (UnregisterBroker): it leaves the cluster's metadata and quorum.
/// One that is not registered (any more) counts as done.
pub async fn unregister_broker(
    bootstrap: &str,
    request_timeout: Duration,
    id: i32,
) -> Result<(), ExecError> {
    Admin::new(bootstrap, request_timeout).unregister(id).await
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn ids(list: &[BrokerId]) -> Vec<i32> {
    list.iter().map(|b| b.0).collect()
}

fn refusal(
    operation: &'static str,
    target: Option<String>,
    code: i16,
    message: Option<&StrBytes>,
) -> ExecError {
    match ResponseError::try_from_code(code) {
        Some(code) => ExecError::Refused {
            operation,
            target,
            code,
            message: message.map(|m| m.to_string()),
        },
        None => ExecError::Protocol {
            operation,
            detail: format!("unknown error code {code}"),
        },
    }
}

/// One connection to some broker of the cluster, re-established on failure.
struct Admin {
    /// Bootstrap addresses first, then brokers learned from Metadata.
    addresses: Vec<String>,
    timeout: Duration,
    connection: Option<(String, Connection)>,
    /// Each broker's address, from the last Metadata.
    brokers: BTreeMap<i32, String>,
}

impl Admin {
    fn new(bootstrap: &str, timeout: Duration) -> Admin {
        Admin {
            addresses: bootstrap
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect(),
            timeout,
            connection: None,
            brokers: BTreeMap::new(),
        }
    }

    /// Sends one request. Reads (`retry`) go to the next broker when one fails; writes are
    /// sent once, since a write whose answer was lost may have been applied.
    async fn call<R: Request>(
        &mut self,
        operation: &'static str,
        request: &R,
        version: i16,
        retry: bool,
    ) -> Result<R::Response, ExecError> {
        let mut last_error = None;
        for attempt in 0..self.addresses.len().max(1) {
            if self.connection.is_none() {
                self.connect(operation, attempt).await?;
            }
            let Some((address, connection)) = self.connection.as_mut() else {
                continue;
            };
            let address = address.clone();
            match tokio::time::timeout(self.timeout, connection.send(request, version)).await {
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(source)) => {
                    self.connection = None;
                    last_error = Some(ExecError::Broken {
                        operation,
                        address,
                        source,
                    });
                }
                Err(_) => {
                    self.connection = None;
                    last_error = Some(ExecError::Timeout {
                        operation,
                        address,
                        timeout: self.timeout,
                    });
                }
            }
            if !retry {
                break;
            }
        }
        Err(last_error.unwrap_or(ExecError::Protocol {
            operation,
            detail: "no broker address to send to".to_string(),
        }))
    }

    /// Connects to the first address that answers, starting at `offset` in the list.
    async fn connect(&mut self, operation: &'static str, offset: usize) -> Result<(), ExecError> {
        let mut last = None;
        let count = self.addresses.len();
        for i in 0..count {
            let address = &self.addresses[(offset + i) % count];
            match tokio::time::timeout(self.timeout, Connection::connect(address)).await {
                Ok(Ok(connection)) => {
                    self.connection = Some((address.clone(), connection));
                    return Ok(());
                }
                Ok(Err(e)) => last = Some(e),
                Err(_) => {
                    last = Some(ClientError::Connect {
                        address: address.clone(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "connection timed out",
                        ),
                    })
                }
            }
        }
        Err(ExecError::Unreachable {
            operation,
            addresses: self.addresses.clone(),
            source: last.unwrap_or(ClientError::Encode("no address given".to_string())),
        })
    }

    /// The reassignments in flight.
    async fn list_reassignments(
        &mut self,
    ) -> Result<ListPartitionReassignmentsResponse, ExecError> {
        let request = ListPartitionReassignmentsRequest::default()
            .with_timeout_ms(self.timeout_ms())
            .with_topics(None);
        let listed = self
            .call(
                "ListPartitionReassignments",
                &request,
                LIST_REASSIGNMENTS_V,
                true,
            )
            .await?;
        if listed.error_code != 0 {
            return Err(refusal(
                "ListPartitionReassignments",
                None,
                listed.error_code,
                listed.error_message.as_ref(),
            ));
        }
        Ok(listed)
    }

    /// Metadata of every topic and the reassignments in flight. Metadata lists a partition in
    /// flight with the replicas it is losing, which only the reassignment list tells apart:
    /// the list is read before and after Metadata, again until both agree, so a reassignment
    /// that starts or ends in between is not mistaken for a bigger replica set.
    async fn observe(&mut self) -> Result<Observed, ExecError> {
        let request = MetadataRequest::default()
            .with_topics(None)
            .with_allow_auto_topic_creation(false);
        let in_flight = |listed: &ListPartitionReassignmentsResponse| {
            listed
                .topics
                .iter()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .map(move |p| (t.name.clone(), p.clone()))
                })
                .collect::<Vec<_>>()
        };
        let mut listed = self.list_reassignments().await?;
        let mut metadata = self.call("Metadata", &request, METADATA_V, true).await?;
        for _ in 0..OBSERVE_ATTEMPTS {
            let again = self.list_reassignments().await?;
            if in_flight(&again) == in_flight(&listed) {
                break;
            }
            listed = again;
            metadata = self.call("Metadata", &request, METADATA_V, true).await?;
        }
        for broker in &metadata.brokers {
            let address = format!("{}:{}", broker.host, broker.port);
            self.brokers.insert(broker.node_id.0, address.clone());
            if !self.addresses.contains(&address) {
                self.addresses.push(address);
            }
        }
        let mut observed = Observed::default();
        for topic in &listed.topics {
            for p in &topic.partitions {
                observed.reassigning.insert(
                    (topic.name.0.to_string(), p.partition_index),
                    Ongoing {
                        replicas: ids(&p.replicas),
                        adding: ids(&p.adding_replicas),
                        removing: ids(&p.removing_replicas),
                    },
                );
            }
        }
        let mut brokers: Vec<BrokerInfo> = metadata
            .brokers
            .iter()
            .map(|b| BrokerInfo {
                id: b.node_id.0,
                rack: b.rack.as_ref().map(|r| r.to_string()),
            })
            .collect();
        brokers.sort_by_key(|b| b.id);
        let mut partitions = Vec::new();
        for topic in &metadata.topics {
            let Some(name) = topic.name.as_ref().map(|n| n.0.to_string()) else {
                continue;
            };
            if topic.error_code != 0 && topic.partitions.is_empty() {
                continue;
            }
            for p in &topic.partitions {
                let key = (name.clone(), p.partition_index);
                let replicas = ids(&p.replica_nodes);
                let removing = observed
                    .reassigning
                    .get(&key)
                    .map(|o| o.removing.clone())
                    .unwrap_or_default();
                observed.current.insert(key, replicas.clone());
                partitions.push(PartitionInfo {
                    topic: name.clone(),
                    partition: p.partition_index,
                    replicas: replicas
                        .iter()
                        .copied()
                        .filter(|r| !removing.contains(r))
                        .collect(),
                    leader: p.leader_id.0,
                    isr: ids(&p.isr_nodes)
                        .into_iter()
                        .filter(|r| !removing.contains(r))
                        .collect(),
                });
            }
        }
        partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        observed.state = ClusterState {
            brokers,
            partitions,
        };
        Ok(observed)
    }

    async fn registered_brokers(&mut self) -> Result<BTreeSet<i32>, ExecError> {
        const OPERATION: &str = "DescribeCluster";
        let request = DescribeClusterRequest::default().with_include_fenced_brokers(true);
        let response = self
            .call(OPERATION, &request, DESCRIBE_CLUSTER_V, true)
            .await?;
        if response.error_code != 0 {
            return Err(refusal(
                OPERATION,
                None,
                response.error_code,
                response.error_message.as_ref(),
            ));
        }
        Ok(response.brokers.iter().map(|b| b.broker_id.0).collect())
    }

    async fn unregister(&mut self, id: i32) -> Result<(), ExecError> {
        const OPERATION: &str = "UnregisterBroker";
        let request = UnregisterBrokerRequest::default().with_broker_id(BrokerId(id));
        // Safe to repeat: a second time finds the broker not registered.
        let response = self
            .call(OPERATION, &request, UNREGISTER_BROKER_V, true)
            .await?;
        match ResponseError::try_from_code(response.error_code) {
            None | Some(ResponseError::BrokerIdNotRegistered) => Ok(()),
            Some(_) => Err(refusal(
                OPERATION,
                Some(format!("broker {id}")),
                response.error_code,
                response.error_message.as_ref(),
            )),
        }
    }

    /// Sets (`Some`) or deletes (`None`) `follower.replication.throttled.rate` on broker `id`,
    /// sending the change to that broker (a broker takes changes of its own settings only).
    async fn set_throttle(&mut self, id: i32, rate: Option<u64>) -> Result<(), ExecError> {
        const OPERATION: &str = "IncrementalAlterConfigs";
        let address = self
            .brokers
            .get(&id)
            .cloned()
            .ok_or_else(|| ExecError::Protocol {
                operation: OPERATION,
                detail: format!("broker {id} is not in the cluster's metadata"),
            })?;
        let config = AlterableConfig::default()
            .with_name(StrBytes::from_static_str(THROTTLE_SETTING))
            .with_config_operation(if rate.is_some() { OP_SET } else { OP_DELETE })
            .with_value(rate.map(|r| StrBytes::from_string(r.to_string())));
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(RESOURCE_BROKER)
                .with_resource_name(StrBytes::from_string(id.to_string()))
                .with_configs(vec![config]),
        ]);
        let mut broker = Admin::new(&address, self.timeout);
        let response = broker
            .call(OPERATION, &request, INCREMENTAL_ALTER_CONFIGS_V, false)
            .await?;
        for resource in &response.responses {
            if resource.error_code != 0 {
                return Err(refusal(
                    OPERATION,
                    Some(format!("broker {id}")),
                    resource.error_code,
                    resource.error_message.as_ref(),
                ));
            }
        }
        Ok(())
    }

    /// Deletes the throttle on `brokers`; returns those where that worked and logs the others.
    async fn clear_throttles(&mut self, brokers: &BTreeSet<i32>) -> Vec<i32> {
        let mut cleared = Vec::new();
        for id in brokers {
            match self.set_throttle(*id, None).await {
                Ok(()) => cleared.push(*id),
                Err(e) => {
                    tracing::warn!(broker = id, error = %e, "cannot remove the replication throttle")
                }
            }
        }
        cleared
    }

    fn timeout_ms(&self) -> i32 {
        i32::try_from(self.timeout.as_millis()).unwrap_or(i32::MAX)
    }

    /// Submits the moves: those changing a replication factor in a request that allows it,
    /// the others in one that does not.
    async fn reassign(&mut self, moves: &[Move]) -> Result<(), ExecError> {
        for allow in [false, true] {
            let mut topics: BTreeMap<&str, Vec<ReassignablePartition>> = BTreeMap::new();
            for m in moves
                .iter()
                .filter(|m| m.changes_replication_factor() == allow)
            {
                topics.entry(&m.topic).or_default().push(
                    ReassignablePartition::default()
                        .with_partition_index(m.partition)
                        .with_replicas(Some(m.to.iter().copied().map(BrokerId).collect())),
                );
            }
            if topics.is_empty() {
                continue;
            }
            let request = AlterPartitionReassignmentsRequest::default()
                .with_timeout_ms(self.timeout_ms())
                .with_allow_replication_factor_change(allow)
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(name, partitions)| {
                            ReassignableTopic::default()
                                .with_name(topic_name(name))
                                .with_partitions(partitions)
                        })
                        .collect(),
                );
            let response = self
                .call(
                    "AlterPartitionReassignments",
                    &request,
                    ALTER_REASSIGNMENTS_V,
                    false,
                )
                .await?;
            if response.error_code != 0 {
                return Err(refusal(
                    "AlterPartitionReassignments",
                    None,
                    response.error_code,
                    response.error_message.as_ref(),
                ));
            }
            for topic in &response.responses {
                for p in &topic.partitions {
                    if p.error_code != 0 {
                        return Err(refusal(
                            "AlterPartitionReassignments",
                            Some(format!("{}-{}", topic.name.0, p.partition_index)),
                            p.error_code,
                            p.error_message.as_ref(),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Elects the preferred leader of each partition; returns those that could not be.
    async fn elect(&mut self, partitions: &[(String, i32)]) -> Result<Vec<NotElected>, ExecError> {
        let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (topic, partition) in partitions {
            topics.entry(topic).or_default().push(*partition);
        }
        let request = ElectLeadersRequest::default()
            .with_election_type(PREFERRED_ELECTION)
            .with_timeout_ms(self.timeout_ms())
            .with_topic_partitions(Some(
                topics
                    .into_iter()
                    .map(|(topic, partitions)| {
                        TopicPartitions::default()
                            .with_topic(topic_name(topic))
                            .with_partitions(partitions)
                    })
                    .collect(),
            ));
        let response = self
            .call("ElectLeaders", &request, ELECT_LEADERS_V, true)
            .await?;
        if response.error_code != 0 {
            return Err(refusal("ElectLeaders", None, response.error_code, None));
        }
        let mut failures = Vec::new();
        for topic in &response.replica_election_results {
            for p in &topic.partition_result {
                let fine =
                    p.error_code == 0 || p.error_code == ResponseError::ElectionNotNeeded.code();
                if !fine {
                    let code = ResponseError::try_from_code(p.error_code)
                        .map_or_else(|| format!("error {}", p.error_code), |c| format!("{c:?}"));
                    failures.push(NotElected {
                        topic: topic.topic.0.to_string(),
                        partition: p.partition_id,
                        reason: match &p.error_message {
                            Some(m) => format!("{code}: {m}"),
                            None => code,
                        },
                    });
                }
            }
        }
        Ok(failures)
    }
}
