//! The KafkaRebalance controller: computes a proposal with the balancer's planner (the moves,
//! and replicas and preferred leaders per broker before and after) into the status, and
//! carries it out, one bounded round per reconciliation as the cluster controller's own
//! rebalances do, only after the resource is annotated `oxbow.dev/rebalance=approve`. `stop`
//! stops submitting new reassignments (those in flight finish); `refresh` computes a new
//! proposal. The operator removes the annotation once it has acted on it.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use thiserror::Error;

use crate::balance::executor::{ExecError, Goal, Observed};
use crate::balance::step::{self, Health};
use crate::balance::Plan;
use crate::cluster::{MAX_MOVES, REASSIGNMENT_POLL};
use crate::conditions::{self, Wanted, DEGRADED, READY, RECONCILING};
use crate::context::Context;
use crate::controller::{self, apply_status, backoff_key, retry, run_per_cluster};
use crate::crd::{
    KafkaCluster, KafkaRebalance, KafkaRebalanceSpec, KafkaRebalanceStatus, RebalanceMode,
    RebalanceProposal,
};
use crate::metrics::REBALANCE;

/// Annotation that drives a rebalance: `approve`, `stop` or `refresh`.
pub const ANNOTATION: &str = "oxbow.dev/rebalance";
/// How often a rebalance waiting for its cluster is looked at again.
pub const WAIT_FOR_CLUSTER: Duration = Duration::from_secs(30);
/// Moves listed in the proposal.
const LISTED_MOVES: usize = 50;

pub const PROPOSAL_READY: &str = "ProposalReady";
pub const REBALANCING: &str = "Rebalancing";
pub const READY_STATE: &str = "Ready";
pub const STOPPED: &str = "Stopped";
pub const NOT_READY: &str = "NotReady";

/// What the annotation asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Approve,
    Stop,
    Refresh,
}

impl Request {
    fn parse(value: &str) -> Option<Request> {
        match value.trim().to_ascii_lowercase().as_str() {
            "approve" => Some(Request::Approve),
            "stop" => Some(Request::Stop),
            "refresh" => Some(Request::Refresh),
            _ => None,
        }
    }
}

/// What a reconciliation does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Compute a proposal.
    Propose,
    /// Keep the state as it is (waiting for approval, done or stopped).
    Stay,
    /// Take the next round of the approved rebalance.
    Execute,
    /// Stop submitting.
    Stop,
}

/// The step for a rebalance in `state` (none before the first proposal) given the request
/// the annotation carries (pure).
pub fn next(state: Option<&str>, request: Option<Request>) -> Next {
    match (state, request) {
        (Some(REBALANCING), Some(Request::Stop)) | (Some(PROPOSAL_READY), Some(Request::Stop)) => {
            Next::Stop
        }
        (Some(REBALANCING), _) => Next::Execute,
        (Some(PROPOSAL_READY), Some(Request::Approve)) => Next::Execute,
        (_, Some(Request::Refresh)) | (None, _) | (Some(NOT_READY), _) => Next::Propose,
        _ => Next::Stay,
    }
}

/// The balancing goal of a spec.
pub fn goal(spec: &KafkaRebalanceSpec) -> Goal {
    Goal::Rebalance {
        brokers: None,
        drain: match spec.mode {
            RebalanceMode::RemoveBrokers => spec.brokers.clone(),
            RebalanceMode::Full | RebalanceMode::AddBrokers => Vec::new(),
        },
    }
}

/// What is wrong with the spec against the brokers the cluster has, if anything.
pub fn check_brokers(spec: &KafkaRebalanceSpec, registered: &[i32]) -> Option<String> {
    let unknown: Vec<i32> = spec
        .brokers
        .iter()
        .copied()
        .filter(|b| !registered.contains(b))
        .collect();
    (spec.mode != RebalanceMode::Full && !unknown.is_empty()).then(|| {
        format!("spec.brokers names brokers {unknown:?}, which the cluster does not have (it has {registered:?})")
    })
}

fn by_broker(counts: &BTreeMap<i32, usize>) -> BTreeMap<String, i32> {
    counts
        .iter()
        .map(|(b, c)| (b.to_string(), i32::try_from(*c).unwrap_or(i32::MAX)))
        .collect()
}

/// The proposal of `plan` on the cluster `observed` describes (pure).
pub fn proposal(observed: &Observed, plan: &Plan, goal: &Goal) -> RebalanceProposal {
    let targets = goal.targets(&observed.state);
    let mut brokers = observed.state.broker_ids();
    brokers.extend(targets.iter().copied());
    let before = observed.state.distribution(Some(&brokers));
    let after = plan.apply(&observed.state).distribution(Some(&brokers));
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    RebalanceProposal {
        partition_moves: count(plan.moves.len()),
        replica_moves: count(plan.replica_moves()),
        leader_elections: count(plan.elections.len()),
        replicas_before: by_broker(&before.replicas),
        replicas_after: by_broker(&after.replicas),
        leaders_before: by_broker(&before.leaders),
        leaders_after: by_broker(&after.leaders),
        moves: plan
            .moves
            .iter()
            .take(LISTED_MOVES)
            .map(|m| format!("{}-{}: {:?} -> {:?}", m.topic, m.partition, m.from, m.to))
            .collect(),
    }
}

#[derive(Debug, Error)]
pub enum Error {
    #[error("KafkaRebalance has no {0}")]
    MissingMetadata(&'static str),
    #[error("{action} for KafkaRebalance {namespace}/{name}: {source}")]
    Kube {
        action: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("KafkaRebalance {namespace}/{name}: {source}")]
    Kafka {
        namespace: String,
        name: String,
        #[source]
        source: ExecError,
    },
}

impl Error {
    fn metric_label(&self) -> &'static str {
        match self {
            Error::MissingMetadata(_) => "missing_metadata",
            Error::Kube { .. } => "kube",
            Error::Kafka { .. } => "kafka",
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Error::MissingMetadata(_) => "InvalidObject",
            Error::Kube { .. } => "KubernetesError",
            Error::Kafka { .. } => "KafkaError",
        }
    }
}

/// The status parts a reconciliation decides.
struct Outcome {
    state: &'static str,
    proposal: Option<RebalanceProposal>,
    progress: Option<String>,
    message: String,
}

fn status(rebalance: &KafkaRebalance, outcome: Outcome) -> KafkaRebalanceStatus {
    let previous = rebalance.status.clone().unwrap_or_default();
    let generation = rebalance.metadata.generation;
    let (ready, reconciling, degraded) = match outcome.state {
        READY_STATE => (true, false, false),
        REBALANCING => (false, true, false),
        NOT_READY => (false, false, true),
        _ => (false, false, false),
    };
    KafkaRebalanceStatus {
        observed_generation: generation,
        state: Some(outcome.state.to_string()),
        conditions: conditions::merge(
            &previous.conditions,
            &[
                Wanted::new(READY, ready, outcome.state, outcome.message.clone()),
                Wanted::new(RECONCILING, reconciling, outcome.state, ""),
                Wanted::new(
                    DEGRADED,
                    degraded,
                    if degraded { NOT_READY } else { "NoProblem" },
                    if degraded {
                        outcome.message.as_str()
                    } else {
                        ""
                    },
                ),
            ],
            generation,
            Timestamp::now(),
        ),
        proposal: outcome.proposal,
        progress: outcome.progress,
        message: Some(outcome.message),
    }
}

async fn write_status(
    rebalance: &KafkaRebalance,
    ctx: &Context,
    status: &KafkaRebalanceStatus,
) -> Result<(), Error> {
    apply_status(&ctx.client, rebalance, status)
        .await
        .map_err(|source| Error::Kube {
            action: "writing the status",
            namespace: rebalance.namespace().unwrap_or_default(),
            name: rebalance.name_any(),
            source,
        })
}

async fn remove_annotation(rebalance: &KafkaRebalance, ctx: &Context) -> Result<(), Error> {
    let namespace = rebalance.namespace().unwrap_or_default();
    let api: Api<KafkaRebalance> = Api::namespaced(ctx.client.clone(), &namespace);
    controller::remove_annotation(&api, &rebalance.name_any(), ANNOTATION)
        .await
        .map_err(|source| Error::Kube {
            action: "removing the rebalance annotation",
            namespace,
            name: rebalance.name_any(),
            source,
        })?;
    Ok(())
}

async fn publish(
    ctx: &Context,
    rebalance: &KafkaRebalance,
    type_: EventType,
    reason: &str,
    note: String,
) {
    ctx.publish(
        &rebalance.object_ref(&()),
        type_,
        reason,
        "Reconcile",
        &note,
    )
    .await;
}

/// Reconciles one KafkaRebalance.
pub async fn reconcile(rebalance: Arc<KafkaRebalance>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile(REBALANCE);
    let namespace = rebalance
        .metadata
        .namespace
        .clone()
        .ok_or(Error::MissingMetadata("namespace"))?;
    match reconcile_once(&rebalance, &ctx, &namespace).await {
        Ok(action) => {
            ctx.backoff.succeeded(&backoff_key(rebalance.as_ref()));
            Ok(action)
        }
        Err(error) => {
            publish(
                &ctx,
                &rebalance,
                EventType::Warning,
                error.reason(),
                error.to_string(),
            )
            .await;
            Err(error)
        }
    }
}

async fn reconcile_once(
    rebalance: &KafkaRebalance,
    ctx: &Context,
    namespace: &str,
) -> Result<Action, Error> {
    if rebalance.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let previous = rebalance.status.clone().unwrap_or_default();
    if conditions::is_paused(&rebalance.metadata) {
        let status = KafkaRebalanceStatus {
            conditions: conditions::with_paused(
                &previous.conditions,
                rebalance.metadata.generation,
                Timestamp::now(),
            ),
            ..previous.clone()
        };
        if status != previous {
            write_status(rebalance, ctx, &status).await?;
        }
        return Ok(Action::await_change());
    }
    let request = rebalance
        .annotations()
        .get(ANNOTATION)
        .and_then(|v| Request::parse(v));
    let name = rebalance.name_any();
    let cluster_name = &rebalance.spec.cluster_ref.name;
    let clusters: Api<KafkaCluster> = Api::namespaced(ctx.client.clone(), namespace);
    let cluster = clusters
        .get_opt(cluster_name)
        .await
        .map_err(|source| Error::Kube {
            action: "reading the KafkaCluster",
            namespace: namespace.to_string(),
            name: name.clone(),
            source,
        })?;
    let cluster_status = cluster
        .as_ref()
        .and_then(|c| c.status.clone())
        .unwrap_or_default();
    let waiting = match (&cluster, &cluster_status.bootstrap) {
        (None, _) => Some(format!(
            "KafkaCluster {cluster_name} does not exist in this namespace"
        )),
        (Some(_), None) => Some(format!("KafkaCluster {cluster_name} is not serving yet")),
        (Some(_), Some(_)) if cluster_status.scaling.is_some() => Some(format!(
            "KafkaCluster {cluster_name} is scaling; the rebalance waits until it is done"
        )),
        _ => None,
    };
    if let Some(message) = waiting {
        let outcome = Outcome {
            state: previous_state(&previous).unwrap_or(NOT_READY),
            proposal: previous.proposal.clone(),
            progress: previous.progress.clone(),
            message,
        };
        write_status(rebalance, ctx, &status(rebalance, outcome)).await?;
        return Ok(Action::requeue(WAIT_FOR_CLUSTER));
    }
    let bootstrap = cluster_status.bootstrap.unwrap_or_default();
    let kafka_error = |source| Error::Kafka {
        namespace: namespace.to_string(),
        name: name.clone(),
        source,
    };
    let observed = ctx
        .balancer
        .observe(&bootstrap)
        .await
        .map_err(kafka_error)?;
    let goal = goal(&rebalance.spec);
    let registered: Vec<i32> = Health::of(&observed).brokers.into_iter().collect();
    let step_now = next(previous.state.as_deref(), request);
    let (outcome, action) = match step_now {
        Next::Propose => match check_brokers(&rebalance.spec, &registered) {
            Some(problem) => (
                Outcome {
                    state: NOT_READY,
                    proposal: None,
                    progress: None,
                    message: problem,
                },
                Action::await_change(),
            ),
            None => match goal.plan(&observed.state) {
                Err(problem) => (
                    Outcome {
                        state: NOT_READY,
                        proposal: None,
                        progress: None,
                        message: format!("no proposal can be made: {problem}"),
                    },
                    Action::await_change(),
                ),
                Ok(plan) => {
                    let proposed = proposal(&observed, &plan, &goal);
                    let (state, message) = if plan.is_empty() {
                        (READY_STATE, "the cluster is balanced: nothing to move".to_string())
                    } else {
                        (
                            PROPOSAL_READY,
                            format!(
                                "{} partitions to reassign ({} replicas to copy) and {} leaders to elect; annotate {ANNOTATION}=approve to carry it out",
                                proposed.partition_moves, proposed.replica_moves, proposed.leader_elections
                            ),
                        )
                    };
                    publish(ctx, rebalance, EventType::Normal, state, message.clone()).await;
                    (
                        Outcome {
                            state,
                            proposal: Some(proposed),
                            progress: None,
                            message,
                        },
                        Action::await_change(),
                    )
                }
            },
        },
        Next::Execute => {
            let report = step::step(ctx.balancer.as_ref(), &bootstrap, &goal, &observed, MAX_MOVES)
                .await
                .map_err(kafka_error)?;
            if previous.state.as_deref() != Some(REBALANCING) {
                publish(
                    ctx,
                    rebalance,
                    EventType::Normal,
                    REBALANCING,
                    "approved: rebalancing".to_string(),
                )
                .await;
            }
            if report.progress.done {
                let message = "the rebalance is done".to_string();
                publish(ctx, rebalance, EventType::Normal, READY_STATE, message.clone()).await;
                (
                    Outcome {
                        state: READY_STATE,
                        proposal: previous.proposal.clone(),
                        progress: Some(report.progress.describe()),
                        message,
                    },
                    Action::await_change(),
                )
            } else {
                (
                    Outcome {
                        state: REBALANCING,
                        proposal: previous.proposal.clone(),
                        progress: Some(report.progress.describe()),
                        message: format!("rebalancing: {}", report.progress.describe()),
                    },
                    Action::requeue(REASSIGNMENT_POLL),
                )
            }
        }
        Next::Stop => {
            let in_flight = observed.reassigning.len();
            let message = format!(
                "stopped: no new reassignments; {in_flight} in flight finish on their own. Annotate {ANNOTATION}=refresh for a new proposal"
            );
            publish(ctx, rebalance, EventType::Normal, STOPPED, message.clone()).await;
            (
                Outcome {
                    state: STOPPED,
                    proposal: previous.proposal.clone(),
                    progress: previous.progress.clone(),
                    message,
                },
                Action::await_change(),
            )
        }
        // Nothing to do and nothing to say: the status stays as written (a reconciliation
        // woken by an older copy of the resource must not write an older state back).
        Next::Stay if request.is_none() => return Ok(Action::await_change()),
        Next::Stay => (
            Outcome {
                state: previous_state(&previous).unwrap_or(NOT_READY),
                proposal: previous.proposal.clone(),
                progress: previous.progress.clone(),
                message: match request {
                    Some(Request::Approve) => format!(
                        "{ANNOTATION}=approve applies to a proposal that is ready; annotate {ANNOTATION}=refresh for a new one"
                    ),
                    _ => previous.message.clone().unwrap_or_default(),
                },
            },
            Action::await_change(),
        ),
    };
    let ready = outcome.state == READY_STATE;
    // The new state first: the removal of the annotation wakes the next reconciliation, which
    // must see it.
    write_status(rebalance, ctx, &status(rebalance, outcome)).await?;
    if rebalance.annotations().contains_key(ANNOTATION) {
        remove_annotation(rebalance, ctx).await?;
    }
    ctx.metrics.set_ready(REBALANCE, namespace, &name, ready);
    Ok(action)
}

fn previous_state(previous: &KafkaRebalanceStatus) -> Option<&'static str> {
    match previous.state.as_deref() {
        Some(PROPOSAL_READY) => Some(PROPOSAL_READY),
        Some(REBALANCING) => Some(REBALANCING),
        Some(READY_STATE) => Some(READY_STATE),
        Some(STOPPED) => Some(STOPPED),
        Some(NOT_READY) => Some(NOT_READY),
        _ => None,
    }
}

/// Logs and counts a failed reconciliation, then retries it with a growing delay.
pub fn error_policy(rebalance: Arc<KafkaRebalance>, error: &Error, ctx: Arc<Context>) -> Action {
    retry(
        &ctx,
        rebalance.as_ref(),
        REBALANCE,
        error.metric_label(),
        error,
    )
}

/// The KafkaCluster a KafkaRebalance names.
fn cluster_of(rebalance: &KafkaRebalance) -> &str {
    &rebalance.spec.cluster_ref.name
}

/// Runs the KafkaRebalance controller over `namespace` (all namespaces when `None`) until
/// `shutdown` completes. A KafkaCluster change (becoming ready, or done scaling) wakes its
/// rebalances.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    run_per_cluster(
        ctx,
        namespace,
        shutdown,
        cluster_of,
        reconcile,
        error_policy,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ClusterReference;
    use crate::test_support::{observed, partition};

    fn spec(mode: RebalanceMode, brokers: &[i32]) -> KafkaRebalanceSpec {
        KafkaRebalanceSpec {
            cluster_ref: ClusterReference {
                name: "main".to_string(),
            },
            mode,
            brokers: brokers.to_vec(),
        }
    }

    #[test]
    fn nothing_is_carried_out_before_approval_and_stop_and_refresh_do_what_they_say() {
        assert_eq!(next(None, None), Next::Propose);
        assert_eq!(
            next(None, Some(Request::Approve)),
            Next::Propose,
            "no proposal to approve yet"
        );
        assert_eq!(next(Some(PROPOSAL_READY), None), Next::Stay);
        assert_eq!(
            next(Some(PROPOSAL_READY), Some(Request::Approve)),
            Next::Execute
        );
        assert_eq!(
            next(Some(PROPOSAL_READY), Some(Request::Refresh)),
            Next::Propose
        );
        assert_eq!(next(Some(REBALANCING), None), Next::Execute);
        assert_eq!(next(Some(REBALANCING), Some(Request::Stop)), Next::Stop);
        assert_eq!(
            next(Some(REBALANCING), Some(Request::Refresh)),
            Next::Execute,
            "refresh waits for a stop"
        );
        assert_eq!(next(Some(STOPPED), Some(Request::Approve)), Next::Stay);
        assert_eq!(next(Some(STOPPED), Some(Request::Refresh)), Next::Propose);
        assert_eq!(next(Some(READY_STATE), None), Next::Stay);
        assert_eq!(next(Some(NOT_READY), None), Next::Propose);
        assert_eq!(Request::parse(" Approve "), Some(Request::Approve));
        assert_eq!(Request::parse("yes"), None);
    }

    #[test]
    fn a_proposal_counts_moves_and_the_balance_before_and_after() {
        // Six single-replica partitions, all on broker 0 of three.
        let partitions = (0..6).map(|p| partition("orders", p, &[0])).collect();
        let cluster = observed(&[0, 1, 2], partitions);
        let goal = goal(&spec(RebalanceMode::Full, &[]));
        let plan = goal.plan(&cluster.state).expect("a plan");
        let proposed = proposal(&cluster, &plan, &goal);
        assert_eq!(proposed.partition_moves, 4);
        assert_eq!(proposed.replica_moves, 4);
        assert_eq!(
            proposed.replicas_before,
            BTreeMap::from([("0".into(), 6), ("1".into(), 0), ("2".into(), 0)])
        );
        assert_eq!(
            proposed.replicas_after,
            BTreeMap::from([("0".into(), 2), ("1".into(), 2), ("2".into(), 2)])
        );
        assert_eq!(proposed.moves.len(), 4);
    }

    #[test]
    fn remove_brokers_drains_them_and_unknown_brokers_are_refused() {
        let partitions = (0..6).map(|p| partition("orders", p, &[p % 3])).collect();
        let cluster = observed(&[0, 1, 2], partitions);
        let goal = goal(&spec(RebalanceMode::RemoveBrokers, &[2]));
        let plan = goal.plan(&cluster.state).expect("a plan");
        let proposed = proposal(&cluster, &plan, &goal);
        assert_eq!(proposed.replicas_after.get("2"), Some(&0));
        assert_eq!(proposed.replica_moves, 2);
        assert!(check_brokers(&spec(RebalanceMode::RemoveBrokers, &[2]), &[0, 1, 2]).is_none());
        let problem = check_brokers(&spec(RebalanceMode::AddBrokers, &[5]), &[0, 1, 2])
            .expect("broker 5 is unknown");
        assert!(problem.contains("[5]"), "{problem}");
    }
}
