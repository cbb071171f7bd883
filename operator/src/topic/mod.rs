//! The KafkaTopic controller: creates the topic on its cluster, grows its partitions,
//! corrects config drift, changes its replication factor by reassignment (the balancer's
//! planner, one bounded round per reconciliation, progress in the status), and deletes it
//! behind a finalizer unless `deletionPolicy` is `Retain`. It only ever changes or deletes the topic it created (recorded by topic id), or
//! one it was told to adopt; other topics are left alone.

pub mod admin;
pub mod plan;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{finalizer, Event};
use kube::{Api, Resource, ResourceExt};
use thiserror::Error;

use crate::conditions::{self, Wanted, DEGRADED, READY, RECONCILING};
use crate::context::Context;
use crate::controller::{
    apply_status, backoff_key, finalizer_label, finalizer_reason, retry, run_per_cluster,
};
use crate::crd::{
    CertificateAuthority, DeletionPolicy, KafkaCluster, KafkaTopic, KafkaTopicStatus,
};
use crate::metrics::TOPIC;
use admin::{AdminError, TopicDescription};
use plan::{ownership, plan, DesiredTopic, Ownership, Step};

/// Finalizer that holds a KafkaTopic until its topic is deleted (or retained).
pub const FINALIZER: &str = "kafkatopics.oxbow.dev/finalizer";
/// Annotation (`"true"`) that lets a KafkaTopic take over a topic that already exists.
pub const ADOPT_ANNOTATION: &str = "oxbow.dev/adopt";
/// How often a topic waiting for its cluster is looked at again.
pub const WAIT_FOR_CLUSTER: Duration = Duration::from_secs(30);
/// How soon a topic refused for want of brokers is tried again while its cluster starts.
pub const WAIT_FOR_BROKERS: Duration = Duration::from_secs(10);
/// How often a replication-factor change in progress is looked at again.
pub const REASSIGNMENT_POLL: Duration = Duration::from_secs(5);
/// Condition reason written just before the topic is created: a topic found later without a
/// recorded id is then known to be this KafkaTopic's own (the operator may have stopped
/// between creating it and recording its id).
pub const CREATING: &str = "Creating";
/// Condition reason while replicas are being reassigned for a replication-factor change.
pub const CHANGING_REPLICATION_FACTOR: &str = "ChangingReplicationFactor";

#[derive(Debug, Error)]
pub enum Error {
    #[error("KafkaTopic has no {0}")]
    MissingMetadata(&'static str),
    #[error("{action} for KafkaTopic {namespace}/{name}: {source}")]
    Kube {
        action: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("KafkaTopic {namespace}/{name}: {source}")]
    Admin {
        namespace: String,
        name: String,
        #[source]
        source: AdminError,
    },
    #[error(transparent)]
    Finalizer(#[from] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// The error kind, as the `error` label of the failure counter.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::MissingMetadata(_) => "missing_metadata",
            Error::Kube { .. } => "kube",
            Error::Admin { source, .. } => source.metric_label(),
            Error::Finalizer(inner) => finalizer_label(inner, Error::metric_label),
        }
    }
}

/// Reconciles one KafkaTopic: its finalizer first, then the topic.
pub async fn reconcile(topic: Arc<KafkaTopic>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile(TOPIC);
    let namespace = topic
        .metadata
        .namespace
        .clone()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let topics: Api<KafkaTopic> = Api::namespaced(ctx.client.clone(), &namespace);
    let action = finalizer(&topics, FINALIZER, Arc::clone(&topic), |event| async {
        match event {
            Event::Apply(topic) => apply(&topic, &ctx).await,
            Event::Cleanup(topic) => cleanup(&topic, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    match action {
        Ok(action) => {
            ctx.backoff.succeeded(&backoff_key(topic.as_ref()));
            Ok(action)
        }
        Err(error) => {
            report_failure(&topic, &ctx, &error).await;
            Err(error)
        }
    }
}

impl Error {
    /// The condition and event reason of a failed reconciliation.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::MissingMetadata(_) => "InvalidObject",
            Error::Kube { .. } => "KubernetesError",
            Error::Admin { source, .. } if source.unreachable() => "KafkaUnreachable",
            Error::Admin { .. } => "KafkaError",
            Error::Finalizer(inner) => finalizer_reason(inner, Error::reason),
        }
    }

    /// What went wrong, for the status and the event: the innermost error of the finalizer.
    fn explain(&self) -> String {
        match self {
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e) => e.explain(),
                kube::runtime::finalizer::Error::CleanupFailed(e) => format!(
                    "the topic could not be deleted and the KafkaTopic waits for it (retrying with back-off): {}",
                    e.explain()
                ),
                other => other.to_string(),
            },
            other => other.to_string(),
        }
    }
}

/// Makes a failed reconciliation visible: `Ready` false and `Degraded` true with the error in
/// the status, and a Warning event when the problem is new (not at every retry). Failing to
/// say so is logged.
async fn report_failure(topic: &KafkaTopic, ctx: &Context, error: &Error) {
    let reason = error.reason();
    let message = error.explain();
    let previous = topic.status.clone().unwrap_or_default();
    let new_problem = !conditions::is_true(&previous.conditions, DEGRADED)
        || conditions::reason(&previous.conditions, DEGRADED) != Some(reason)
        || previous
            .conditions
            .iter()
            .any(|c| c.type_ == DEGRADED && c.message != message);
    let outcome = Outcome {
        ready: Wanted::new(READY, false, reason, message.clone()),
        degraded: Wanted::new(DEGRADED, true, reason, message.clone()),
        reconciling: Wanted::new(RECONCILING, true, "Retrying", "retrying with back-off"),
        topic_id: previous.topic_id.clone(),
        observed: None,
        message: message.clone(),
    };
    if new_problem {
        publish(ctx, topic, EventType::Warning, reason, message).await;
    }
    ctx.metrics.set_ready(
        TOPIC,
        &topic.namespace().unwrap_or_default(),
        &topic.name_any(),
        false,
    );
    if let Err(status_error) = write_status(topic, ctx, &status(topic, outcome)).await {
        tracing::warn!(error = %status_error, "cannot report a failed reconciliation in the status");
    }
}

/// Logs and counts a failed reconciliation, then retries it with a growing delay.
pub fn error_policy(topic: Arc<KafkaTopic>, error: &Error, ctx: Arc<Context>) -> Action {
    retry(&ctx, topic.as_ref(), TOPIC, error.metric_label(), error)
}

/// Where a KafkaCluster takes admin requests, if it can yet.
pub(crate) enum ClusterState {
    NotFound,
    Deleting,
    NoBootstrap,
    /// The bootstrap address; while the cluster is not ready, the brokers it is to have (some
    /// may not have registered yet).
    Bootstrap {
        address: String,
        starting: Option<i32>,
        /// The clients CA's settings, for the certificates of TLS users.
        clients_ca: CertificateAuthority,
    },
}

/// The state of the KafkaCluster `name` in `namespace`, for the resources that refer to it.
pub(crate) async fn state_of_cluster(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<ClusterState, kube::Error> {
    let clusters: Api<KafkaCluster> = Api::namespaced(ctx.client.clone(), namespace);
    Ok(match clusters.get_opt(name).await? {
        None => ClusterState::NotFound,
        Some(c) if c.metadata.deletion_timestamp.is_some() => ClusterState::Deleting,
        Some(c) => {
            let status = c.status.unwrap_or_default();
            let ready = conditions::is_true(&status.conditions, READY);
            match status.bootstrap {
                Some(address) => ClusterState::Bootstrap {
                    address,
                    starting: (!ready).then_some(c.spec.replicas),
                    clients_ca: c.spec.clients_ca.clone().unwrap_or_default(),
                },
                None => ClusterState::NoBootstrap,
            }
        }
    })
}

async fn cluster_state(topic: &KafkaTopic, ctx: &Context) -> Result<ClusterState, Error> {
    let namespace = topic.namespace().unwrap_or_default();
    state_of_cluster(ctx, &namespace, &topic.spec.cluster_ref.name)
        .await
        .map_err(|source| Error::Kube {
            action: "reading the KafkaCluster",
            namespace,
            name: topic.name_any(),
            source,
        })
}

fn admin_error(topic: &KafkaTopic, source: AdminError) -> Error {
    Error::Admin {
        namespace: topic.namespace().unwrap_or_default(),
        name: topic.name_any(),
        source,
    }
}

/// The status parts a reconciliation decides; [`status`] adds the rest.
struct Outcome {
    ready: Wanted,
    degraded: Wanted,
    reconciling: Wanted,
    topic_id: Option<String>,
    observed: Option<TopicDescription>,
    message: String,
}

impl Outcome {
    fn waiting(reason: &str, message: String, topic: &KafkaTopic) -> Self {
        Self {
            ready: Wanted::new(READY, false, reason, message.clone()),
            degraded: Wanted::new(DEGRADED, false, "NoProblem", ""),
            reconciling: Wanted::new(RECONCILING, true, reason, message.clone()),
            topic_id: topic.status.as_ref().and_then(|s| s.topic_id.clone()),
            observed: None,
            message,
        }
    }

    fn blocked(reason: &str, message: String, topic_id: Option<String>) -> Self {
        Self {
            ready: Wanted::new(READY, false, reason, message.clone()),
            degraded: Wanted::new(DEGRADED, true, reason, message.clone()),
            reconciling: Wanted::new(RECONCILING, false, reason, ""),
            topic_id,
            observed: None,
            message,
        }
    }
}

fn status(topic: &KafkaTopic, outcome: Outcome) -> KafkaTopicStatus {
    let previous = topic.status.clone().unwrap_or_default();
    let generation = topic.metadata.generation;
    KafkaTopicStatus {
        observed_generation: generation,
        conditions: conditions::merge(
            &previous.conditions,
            &[outcome.ready, outcome.reconciling, outcome.degraded],
            generation,
            Timestamp::now(),
        ),
        topic_name: Some(topic.topic_name()),
        topic_id: outcome.topic_id,
        partitions: outcome
            .observed
            .as_ref()
            .map(|t| t.partitions)
            .or(previous.partitions),
        replicas: outcome
            .observed
            .as_ref()
            .map(|t| t.replicas)
            .or(previous.replicas),
        message: Some(outcome.message),
    }
}

async fn write_status(
    topic: &KafkaTopic,
    ctx: &Context,
    status: &KafkaTopicStatus,
) -> Result<(), Error> {
    apply_status(&ctx.client, topic, status)
        .await
        .map_err(|source| Error::Kube {
            action: "writing the status",
            namespace: topic.namespace().unwrap_or_default(),
            name: topic.name_any(),
            source,
        })
}

async fn publish(ctx: &Context, topic: &KafkaTopic, type_: EventType, reason: &str, note: String) {
    ctx.publish(&topic.object_ref(&()), type_, reason, "Reconcile", &note)
        .await;
}

fn desired(topic: &KafkaTopic) -> DesiredTopic {
    DesiredTopic {
        name: topic.topic_name(),
        partitions: topic.spec.partitions,
        replicas: topic.spec.replicas,
        config: topic.spec.config.clone(),
    }
}

/// Makes the topic match the spec.
async fn apply(topic: &KafkaTopic, ctx: &Context) -> Result<Action, Error> {
    if conditions::is_paused(&topic.metadata) {
        let previous = topic.status.clone().unwrap_or_default();
        let status = KafkaTopicStatus {
            conditions: conditions::with_paused(
                &previous.conditions,
                topic.metadata.generation,
                Timestamp::now(),
            ),
            ..previous.clone()
        };
        if status != previous {
            write_status(topic, ctx, &status).await?;
        }
        return Ok(Action::await_change());
    }
    let (outcome, action) = match cluster_state(topic, ctx).await? {
        ClusterState::NotFound => (
            Outcome::waiting(
                "ClusterNotFound",
                format!(
                    "KafkaCluster {} does not exist in this namespace",
                    topic.spec.cluster_ref.name
                ),
                topic,
            ),
            Action::requeue(WAIT_FOR_CLUSTER),
        ),
        ClusterState::Deleting | ClusterState::NoBootstrap => (
            Outcome::waiting(
                "ClusterNotReady",
                format!(
                    "KafkaCluster {} is not serving yet",
                    topic.spec.cluster_ref.name
                ),
                topic,
            ),
            Action::requeue(WAIT_FOR_CLUSTER),
        ),
        ClusterState::Bootstrap {
            address, starting, ..
        } => sync(topic, ctx, &address, starting).await?,
    };
    let was = topic
        .status
        .as_ref()
        .and_then(|s| conditions::reason(&s.conditions, DEGRADED).map(str::to_string));
    if outcome.degraded.status && was.as_deref() != Some(outcome.degraded.reason.as_str()) {
        publish(
            ctx,
            topic,
            EventType::Warning,
            &outcome.degraded.reason,
            outcome.degraded.message.clone(),
        )
        .await;
    }
    let ready = outcome.ready.status;
    write_status(topic, ctx, &status(topic, outcome)).await?;
    ctx.metrics.set_ready(
        TOPIC,
        &topic.namespace().unwrap_or_default(),
        &topic.name_any(),
        ready,
    );
    Ok(action)
}

/// Compares the topic on `bootstrap` with the spec and closes the gap. `starting` is the
/// number of brokers of a cluster that is not ready yet.
async fn sync(
    topic: &KafkaTopic,
    ctx: &Context,
    bootstrap: &str,
    starting: Option<i32>,
) -> Result<(Outcome, Action), Error> {
    let want = desired(topic);
    let recorded = topic.status.as_ref().and_then(|s| s.topic_id.clone());
    let adopt = topic
        .annotations()
        .get(ADOPT_ANNOTATION)
        .is_some_and(|v| v == "true");
    let observed = match ctx.admin.describe(bootstrap, &want.name).await {
        Ok(observed) => observed,
        Err(e) if e.unreachable() && starting.is_some() => {
            // A cluster that is not ready yet: its brokers may not serve.
            let message = format!(
                "KafkaCluster {} is not ready and its brokers cannot be reached yet, trying again in {}s: {e}",
                topic.spec.cluster_ref.name,
                WAIT_FOR_BROKERS.as_secs()
            );
            return Ok((
                Outcome::waiting("WaitingForBrokers", message, topic),
                Action::requeue(WAIT_FOR_BROKERS),
            ));
        }
        Err(e) => return Err(admin_error(topic, e)),
    };
    // The controller's cache may not hold the status this operator wrote a moment ago (the
    // creation's id): before calling a topic foreign, read the KafkaTopic from the API server.
    let (recorded, creating) = match &observed {
        Some(found) if recorded.as_deref() != Some(found.topic_id.as_str()) => {
            latest_claim(topic, ctx).await?
        }
        _ => (recorded, false),
    };
    let mut topic_id = match ownership(observed.as_ref(), recorded.as_deref(), adopt || creating) {
        Ownership::Foreign { topic_id } => {
            let message = format!(
                "topic `{}` (id {topic_id}) exists and was not created by this KafkaTopic; it is left alone (annotate with {ADOPT_ANNOTATION}=\"true\" to manage it)",
                want.name
            );
            return Ok((
                Outcome::blocked("TopicConflict", message, recorded),
                Action::requeue(ctx.settings.resync),
            ));
        }
        Ownership::Ours => observed.as_ref().map(|t| t.topic_id.clone()),
        Ownership::Absent => None,
    };

    let changing = topic.status.as_ref().is_some_and(|s| {
        conditions::is_true(&s.conditions, RECONCILING)
            && conditions::reason(&s.conditions, RECONCILING) == Some(CHANGING_REPLICATION_FACTOR)
    });
    let plan = plan(&want, observed.as_ref(), changing);
    let mut changed = false;
    // A replication-factor change still under way: (from, to, progress).
    let mut reassigning = None;
    for step in &plan.steps {
        let result = match step {
            Step::Create(new) => {
                let message = format!("creating topic `{}`", new.name);
                write_status(
                    topic,
                    ctx,
                    &status(topic, Outcome::waiting(CREATING, message, topic)),
                )
                .await?;
                ctx.admin.create(bootstrap, new).await.map(|id| {
                    topic_id = Some(id);
                    ("Created", format!("created topic `{}`", new.name))
                })
            }
            Step::CreatePartitions(count) => ctx
                .admin
                .create_partitions(bootstrap, &want.name, *count)
                .await
                .map(|()| ("PartitionsIncreased", format!("grew to {count} partitions"))),
            Step::AlterConfigs(changes) => ctx
                .admin
                .alter_configs(bootstrap, &want.name, changes)
                .await
                .map(|()| {
                    (
                        "ConfigUpdated",
                        format!("{} settings changed", changes.len()),
                    )
                }),
            Step::ChangeReplicationFactor { from, to } => ctx
                .admin
                .change_replication_factor(bootstrap, &want.name, *to)
                .await
                .map(|progress| {
                    let started = !changing;
                    let done = progress.done;
                    reassigning = (!done).then_some((*from, *to, progress));
                    match (started, done) {
                        (_, true) => (
                            "ReplicationFactorChanged",
                            format!("every partition has {to} replicas"),
                        ),
                        (true, false) => (
                            "ReplicationFactorChanging",
                            format!("reassigning replicas: replication factor {from} to {to}"),
                        ),
                        // A round of a change already announced: no event.
                        (false, false) => ("", String::new()),
                    }
                }),
        };
        match result {
            Ok((reason, note)) => {
                changed = true;
                if !reason.is_empty() {
                    publish(ctx, topic, EventType::Normal, reason, note).await;
                }
            }
            Err(e)
                if e.too_few_brokers()
                    && starting.is_some_and(|brokers| {
                        want.replicas.is_none_or(|replicas| replicas <= brokers)
                    }) =>
            {
                // Brokers of a cluster applied with the topic are still registering.
                let message = format!(
                    "{e}; KafkaCluster {} is not ready yet, trying again in {}s",
                    topic.spec.cluster_ref.name,
                    WAIT_FOR_BROKERS.as_secs()
                );
                return Ok((
                    Outcome::waiting("WaitingForBrokers", message, topic),
                    Action::requeue(WAIT_FOR_BROKERS),
                ));
            }
            Err(e) if e.needs_spec_change() => {
                let message = e.to_string();
                // A created topic is recorded even when a later step is refused.
                return Ok((
                    Outcome::blocked("Rejected", message, topic_id.or(recorded)),
                    Action::await_change(),
                ));
            }
            Err(e) => return Err(admin_error(topic, e)),
        }
    }
    let observed = if changed {
        ctx.admin
            .describe(bootstrap, &want.name)
            .await
            .map_err(|e| admin_error(topic, e))?
    } else {
        observed
    };
    let summary = observed.as_ref().map_or_else(
        || format!("topic `{}` is being created", want.name),
        |t| {
            format!(
                "topic `{}`: {} partitions, replication factor {}",
                want.name, t.partitions, t.replicas
            )
        },
    );
    if let Some((from, to, progress)) = reassigning {
        let change = if from == to {
            format!("finishing the change to replication factor {to}")
        } else {
            format!("changing the replication factor from {from} to {to}")
        };
        let message = format!("topic `{}`: {change}: {}", want.name, progress.describe());
        let outcome = Outcome {
            ready: Wanted::new(READY, false, CHANGING_REPLICATION_FACTOR, message.clone()),
            degraded: Wanted::new(DEGRADED, false, "NoProblem", ""),
            reconciling: Wanted::new(
                RECONCILING,
                true,
                CHANGING_REPLICATION_FACTOR,
                message.clone(),
            ),
            topic_id,
            observed,
            message,
        };
        return Ok((outcome, Action::requeue(REASSIGNMENT_POLL)));
    }
    let outcome = if let Some(blocker) = plan.blockers.first() {
        Outcome {
            observed,
            ..Outcome::blocked(blocker.reason(), blocker.message(), topic_id)
        }
    } else {
        Outcome {
            ready: Wanted::new(READY, true, "InSync", summary.clone()),
            degraded: Wanted::new(DEGRADED, false, "NoProblem", ""),
            reconciling: Wanted::new(RECONCILING, false, "InSync", ""),
            topic_id,
            observed,
            message: summary,
        }
    };
    Ok((outcome, Action::requeue(ctx.settings.resync)))
}

/// The KafkaTopic's claim as the API server has it now: the topic id its status records, and
/// whether it was creating its topic when last written.
async fn latest_claim(topic: &KafkaTopic, ctx: &Context) -> Result<(Option<String>, bool), Error> {
    let namespace = topic.namespace().unwrap_or_default();
    let topics: Api<KafkaTopic> = Api::namespaced(ctx.client.clone(), &namespace);
    let latest = topics
        .get_status(&topic.name_any())
        .await
        .map_err(|source| Error::Kube {
            action: "reading the KafkaTopic",
            namespace,
            name: topic.name_any(),
            source,
        })?;
    let status = latest
        .status
        .filter(|_| latest.metadata.uid == topic.metadata.uid)
        .unwrap_or_default();
    let creating = conditions::is_true(&status.conditions, RECONCILING)
        && conditions::reason(&status.conditions, RECONCILING) == Some(CREATING);
    Ok((status.topic_id, creating))
}

/// Deletes the topic when the KafkaTopic goes, unless it is retained or not ours.
async fn cleanup(topic: &KafkaTopic, ctx: &Context) -> Result<Action, Error> {
    let name = topic.topic_name();
    ctx.metrics.forget(
        TOPIC,
        &topic.namespace().unwrap_or_default(),
        &topic.name_any(),
    );
    if topic.spec.deletion_policy == DeletionPolicy::Retain {
        publish(
            ctx,
            topic,
            EventType::Normal,
            "Retained",
            format!("topic `{name}` kept (deletionPolicy: Retain)"),
        )
        .await;
        return Ok(Action::await_change());
    }
    let bootstrap = match cluster_state(topic, ctx).await? {
        ClusterState::Bootstrap { address, .. } => address,
        // The cluster, and its topics with it, is gone or going.
        ClusterState::NotFound | ClusterState::Deleting | ClusterState::NoBootstrap => {
            return Ok(Action::await_change())
        }
    };
    let recorded = topic.status.as_ref().and_then(|s| s.topic_id.clone());
    let observed = ctx
        .admin
        .describe(&bootstrap, &name)
        .await
        .map_err(|e| admin_error(topic, e))?;
    let (recorded, creating) = match &observed {
        Some(found) if recorded.as_deref() != Some(found.topic_id.as_str()) => {
            latest_claim(topic, ctx).await?
        }
        _ => (recorded, false),
    };
    match ownership(observed.as_ref(), recorded.as_deref(), creating) {
        Ownership::Ours => {
            ctx.admin
                .delete(&bootstrap, &name)
                .await
                .map_err(|e| admin_error(topic, e))?;
            publish(
                ctx,
                topic,
                EventType::Normal,
                "Deleted",
                format!("deleted topic `{name}`"),
            )
            .await;
        }
        Ownership::Foreign { .. } => {
            tracing::info!(topic = %name, "not deleting a topic this KafkaTopic does not own")
        }
        Ownership::Absent => {}
    }
    Ok(Action::await_change())
}

/// The KafkaCluster a KafkaTopic names.
fn cluster_of(topic: &KafkaTopic) -> &str {
    &topic.spec.cluster_ref.name
}

/// Runs the KafkaTopic controller over `namespace` (all namespaces when `None`) until
/// `shutdown` completes. A KafkaCluster change (becoming ready, say) wakes its topics.
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
    //! The reconciler against an in-memory Kubernetes API and an in-memory Kafka.

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::api::{Patch, PatchParams};

    use super::admin::TopicAdmin as _;
    use super::*;
    use crate::conditions::{is_true, reason};
    use crate::test_support::{
        cluster, event_reasons, fake_context, topic, MemoryAdmin, MINIMAL_CLUSTER, MINIMAL_TOPIC,
    };

    const BOOTSTRAP: &str = "main-bootstrap.streaming.svc:9092";
    const PLACEHOLDER_FINALIZER: &str = "test.oxbow.dev/placeholder";

    fn serving_cluster() -> KafkaCluster {
        let mut cluster = cluster(MINIMAL_CLUSTER);
        cluster.status = Some(crate::crd::KafkaClusterStatus {
            bootstrap: Some(BOOTSTRAP.to_string()),
            ..Default::default()
        });
        cluster
    }

    /// A cluster whose brokers are all up.
    fn ready_cluster() -> KafkaCluster {
        let mut ready = serving_cluster();
        if let Some(s) = ready.status.as_mut() {
            s.conditions = conditions::merge(
                &[],
                &[Wanted::new(
                    READY,
                    true,
                    "AllBrokersReady",
                    "3/3 brokers ready",
                )],
                None,
                Timestamp::now(),
            );
        }
        ready
    }

    async fn setup(
        topics: Vec<KafkaTopic>,
        with_cluster: bool,
    ) -> (Arc<Context>, Arc<MemoryAdmin>) {
        setup_on(topics, with_cluster.then(serving_cluster)).await
    }

    async fn setup_on(
        topics: Vec<KafkaTopic>,
        cluster: Option<KafkaCluster>,
    ) -> (Arc<Context>, Arc<MemoryAdmin>) {
        let mut builder = kube_fake_client::ClientBuilder::new();
        if let Some(cluster) = cluster {
            builder = builder.with_object(cluster);
        }
        for mut t in topics {
            // The in-memory API refuses a JSON patch `test` of a missing path, which the real
            // API server takes as null; kube's finalizer helper tests `/metadata/finalizers`
            // before adding the first one, so every fixture carries one already.
            t.metadata
                .finalizers
                .get_or_insert_with(Vec::new)
                .insert(0, PLACEHOLDER_FINALIZER.to_string());
            builder = builder.with_object(t);
        }
        fake_context(builder).await
    }

    fn api(ctx: &Context) -> Api<KafkaTopic> {
        Api::namespaced(ctx.client.clone(), "streaming")
    }

    async fn fetch(ctx: &Context) -> Option<Arc<KafkaTopic>> {
        api(ctx).get_opt("orders").await.expect("get").map(Arc::new)
    }

    /// Reconciles until the finalizer is in place and the topic reconciled once.
    async fn settle(ctx: &Arc<Context>) -> Action {
        let mut action = Action::await_change();
        for _ in 0..2 {
            let current = fetch(ctx).await.expect("topic");
            action = reconcile(current, Arc::clone(ctx))
                .await
                .expect("reconciled");
        }
        action
    }

    fn status(t: &KafkaTopic) -> KafkaTopicStatus {
        t.status.clone().expect("status")
    }

    fn with_spec(extra: &str) -> KafkaTopic {
        topic(&format!("{MINIMAL_TOPIC}\n{extra}"))
    }

    /// A KafkaTopic being deleted, whose topic (if any) has `topic_id`.
    fn deleting(extra: &str, topic_id: Option<&str>) -> KafkaTopic {
        let mut t = with_spec(extra);
        t.metadata.finalizers = Some(vec![FINALIZER.to_string()]);
        t.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        t.status = Some(KafkaTopicStatus {
            topic_id: topic_id.map(str::to_string),
            ..Default::default()
        });
        t
    }

    fn existing(topic_id: &str, partitions: i32) -> admin::TopicDescription {
        admin::TopicDescription {
            topic_id: topic_id.to_string(),
            partitions,
            replicas: 1,
            min_replicas: 1,
            reassigning: 0,
            overrides: Default::default(),
        }
    }

    #[tokio::test]
    async fn a_new_topic_gets_a_finalizer_then_is_created_and_ready() {
        let (ctx, kafka) = setup(
            vec![with_spec(
                "  partitions: 3\n  config:\n    retention.ms: \"60000\"",
            )],
            true,
        )
        .await;
        let first = reconcile(fetch(&ctx).await.expect("topic"), Arc::clone(&ctx))
            .await
            .expect("finalizer added");
        assert_eq!(first, Action::await_change());
        let current = fetch(&ctx).await.expect("topic");
        assert_eq!(
            current.metadata.finalizers.as_deref(),
            Some(&[PLACEHOLDER_FINALIZER.to_string(), FINALIZER.to_string()][..])
        );
        assert!(
            kafka.calls().is_empty(),
            "nothing done before the finalizer is in place"
        );

        let action = reconcile(current, Arc::clone(&ctx)).await.expect("created");
        assert_eq!(
            action,
            Action::requeue(crate::cluster::validate::OperatorSettings::default().resync)
        );
        assert_eq!(
            kafka.calls(),
            ["describe orders", "create orders", "describe orders"]
        );
        let created = kafka.topic("orders").expect("topic on the cluster");
        assert_eq!(created.partitions, 3);
        assert_eq!(created.overrides["retention.ms"], "60000");
        let now = fetch(&ctx).await.expect("topic");
        let s = status(&now);
        assert!(is_true(&s.conditions, READY), "{:?}", s.conditions);
        assert_eq!(s.topic_id.as_deref(), Some("topic-id-1"));
        assert_eq!(s.topic_name.as_deref(), Some("orders"));
        assert_eq!((s.partitions, s.replicas), (Some(3), Some(1)));
        assert_eq!(s.observed_generation, now.metadata.generation);
        let events = event_reasons(&ctx.client, "streaming", "orders").await;
        assert_eq!(events, ["Created"]);
    }

    #[tokio::test]
    async fn a_topic_in_sync_is_only_described() {
        let (ctx, kafka) = setup(vec![with_spec("  partitions: 2")], true).await;
        settle(&ctx).await;
        let before = kafka.calls().len();
        reconcile(fetch(&ctx).await.expect("topic"), Arc::clone(&ctx))
            .await
            .expect("again");
        assert_eq!(kafka.calls()[before..], ["describe orders"]);
    }

    #[tokio::test]
    async fn more_partitions_and_config_drift_are_corrected() {
        let (ctx, kafka) = setup(
            vec![with_spec(
                "  partitions: 2\n  config:\n    cleanup.policy: compact",
            )],
            true,
        )
        .await;
        settle(&ctx).await;
        // Someone adds an override by hand and changes another.
        kafka
            .alter_configs(
                BOOTSTRAP,
                "orders",
                &[
                    admin::ConfigChange::Set("segment.bytes".to_string(), "1048576".to_string()),
                    admin::ConfigChange::Set("cleanup.policy".to_string(), "delete".to_string()),
                ],
            )
            .await
            .expect("drift");
        api(&ctx)
            .patch(
                "orders",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"partitions": 5}})),
            )
            .await
            .expect("grow");
        reconcile(fetch(&ctx).await.expect("topic"), Arc::clone(&ctx))
            .await
            .expect("reconciled");
        let on_cluster = kafka.topic("orders").expect("topic");
        assert_eq!(on_cluster.partitions, 5);
        assert_eq!(
            on_cluster.overrides,
            [("cleanup.policy".to_string(), "compact".to_string())].into()
        );
        let s = status(&fetch(&ctx).await.expect("topic"));
        assert!(is_true(&s.conditions, READY));
        assert_eq!(s.partitions, Some(5));
        let events = event_reasons(&ctx.client, "streaming", "orders").await;
        assert!(
            events.contains(&"PartitionsIncreased".to_string()),
            "{events:?}"
        );
        assert!(events.contains(&"ConfigUpdated".to_string()), "{events:?}");
    }

    async fn change_replicas(ctx: &Context, replicas: i32) {
        api(ctx)
            .patch(
                "orders",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"replicas": replicas}})),
            )
            .await
            .expect("change");
    }

    #[tokio::test]
    async fn a_replication_factor_change_reassigns_round_by_round_and_reports_progress() {
        let (ctx, kafka) = setup(vec![with_spec("  partitions: 4\n  replicas: 1")], true).await;
        settle(&ctx).await;
        change_replicas(&ctx, 3).await;

        let action = reconcile(fetch(&ctx).await.expect("topic"), Arc::clone(&ctx))
            .await
            .expect("first round");
        assert_eq!(
            action,
            Action::requeue(REASSIGNMENT_POLL),
            "looks again soon"
        );
        let s = status(&fetch(&ctx).await.expect("topic"));
        assert!(!is_true(&s.conditions, READY));
        assert!(is_true(&s.conditions, RECONCILING));
        assert!(!is_true(&s.conditions, DEGRADED));
        assert_eq!(
            reason(&s.conditions, RECONCILING),
            Some(CHANGING_REPLICATION_FACTOR)
        );
        let message = s.message.unwrap_or_default();
        assert!(
            message.contains("from 1 to 3") && message.contains("4 reassignments in flight"),
            "{message}"
        );

        let action = reconcile(fetch(&ctx).await.expect("topic"), Arc::clone(&ctx))
            .await
            .expect("second round");
        assert_eq!(
            action,
            Action::requeue(crate::cluster::validate::OperatorSettings::default().resync)
        );
        let s = status(&fetch(&ctx).await.expect("topic"));
        assert!(is_true(&s.conditions, READY), "{:?}", s.conditions);
        assert_eq!(s.replicas, Some(3));
        let calls = kafka.calls();
        assert_eq!(
            calls
                .iter()
                .filter(|c| c.starts_with("change_replication_factor"))
                .count(),
            2,
            "{calls:?}"
        );
        let events = event_reasons(&ctx.client, "streaming", "orders").await;
        assert!(
            events.contains(&"ReplicationFactorChanging".to_string())
                && events.contains(&"ReplicationFactorChanged".to_string()),
            "{events:?}"
        );

        // In sync again: no more rounds.
        let before = kafka.calls().len();
        reconcile(fetch(&ctx).await.expect("topic"), Arc::clone(&ctx))
            .await
            .expect("again");
        assert_eq!(kafka.calls()[before..], ["describe orders"]);
    }

    #[tokio::test]
    async fn a_replication_factor_beyond_the_brokers_is_degraded_and_waits_for_a_change() {
        let (ctx, kafka) = setup(vec![with_spec("  replicas: 1")], true).await;
        settle(&ctx).await;
        change_replicas(&ctx, 5).await;
        let action = reconcile(fetch(&ctx).await.expect("topic"), Arc::clone(&ctx))
            .await
            .expect("reconciled");
        assert_eq!(action, Action::await_change(), "no retry storm");
        let s = status(&fetch(&ctx).await.expect("topic"));
        assert!(is_true(&s.conditions, DEGRADED));
        assert_eq!(reason(&s.conditions, DEGRADED), Some("Rejected"));
        let message = s.message.unwrap_or_default();
        assert!(
            message.contains("replication factor 5") && message.contains("3 brokers"),
            "{message}"
        );
        assert_eq!(kafka.topic("orders").expect("topic").replicas, 1);
    }

    #[tokio::test]
    async fn a_topic_applied_with_its_cluster_waits_for_the_brokers_to_register() {
        let (ctx, kafka) = setup(vec![with_spec("  replicas: 3")], true).await;
        *kafka.registered.lock().expect("lock") = Some(1);
        let action = settle(&ctx).await;
        assert_eq!(
            action,
            Action::requeue(WAIT_FOR_BROKERS),
            "tried again soon"
        );
        let s = status(&fetch(&ctx).await.expect("topic"));
        assert!(!is_true(&s.conditions, READY));
        assert!(!is_true(&s.conditions, DEGRADED), "{:?}", s.conditions);
        assert_eq!(reason(&s.conditions, READY), Some("WaitingForBrokers"));
        let message = s.message.unwrap_or_default();
        assert!(
            message.contains("InvalidReplicationFactor") && message.contains("not ready yet"),
            "{message}"
        );
        assert_eq!(kafka.topic("orders"), None);

        *kafka.registered.lock().expect("lock") = None;
        let action = reconcile(fetch(&ctx).await.expect("topic"), Arc::clone(&ctx))
            .await
            .expect("created");
        assert_eq!(
            action,
            Action::requeue(crate::cluster::validate::OperatorSettings::default().resync)
        );
        assert_eq!(kafka.topic("orders").expect("created").replicas, 3);
        assert!(is_true(
            &status(&fetch(&ctx).await.expect("topic")).conditions,
            READY
        ));
    }

    #[tokio::test]
    async fn too_few_brokers_on_a_ready_cluster_or_more_replicas_than_it_will_have_is_rejected() {
        let (ctx, kafka) = setup_on(vec![with_spec("  replicas: 3")], Some(ready_cluster())).await;
        *kafka.registered.lock().expect("lock") = Some(2);
        let action = settle(&ctx).await;
        assert_eq!(action, Action::await_change());
        let s = status(&fetch(&ctx).await.expect("topic"));
        assert_eq!(reason(&s.conditions, DEGRADED), Some("Rejected"));

        // Starting, but asking for more replicas than the cluster will ever have.
        let (ctx, kafka) = setup(vec![with_spec("  replicas: 4")], true).await;
        *kafka.registered.lock().expect("lock") = Some(1);
        assert_eq!(settle(&ctx).await, Action::await_change());
        let s = status(&fetch(&ctx).await.expect("topic"));
        assert_eq!(reason(&s.conditions, DEGRADED), Some("Rejected"));
    }

    #[tokio::test]
    async fn a_setting_the_broker_refuses_is_degraded_and_waits_for_a_change() {
        let (ctx, _) = setup(vec![with_spec("  config:\n    bogus.setting: x")], true).await;
        let action = settle(&ctx).await;
        assert_eq!(action, Action::await_change(), "no retry storm");
        let s = status(&fetch(&ctx).await.expect("topic"));
        assert_eq!(reason(&s.conditions, DEGRADED), Some("Rejected"));
        assert!(s.message.unwrap_or_default().contains("bogus.setting"));
        let events = event_reasons(&ctx.client, "streaming", "orders").await;
        assert_eq!(events, ["Rejected"]);
    }

    #[tokio::test]
    async fn a_topic_that_exists_and_is_not_ours_is_left_alone() {
        let (ctx, kafka) = setup(vec![with_spec("  partitions: 9")], true).await;
        kafka.insert("orders", existing("someone-elses", 2));
        settle(&ctx).await;
        assert_eq!(kafka.topic("orders"), Some(existing("someone-elses", 2)));
        let s = status(&fetch(&ctx).await.expect("topic"));
        assert_eq!(reason(&s.conditions, READY), Some("TopicConflict"));
        assert_eq!(s.topic_id, None);
        assert!(kafka.calls().iter().all(|c| c.starts_with("describe")));
    }

    #[tokio::test]
    async fn a_reconcile_from_a_cache_without_the_recorded_id_still_owns_the_topic() {
        let (ctx, kafka) = setup(vec![with_spec("  partitions: 2")], true).await;
        settle(&ctx).await;
        let current = fetch(&ctx).await.expect("topic");
        let id = status(&current).topic_id.expect("recorded");
        // The controller's cache still has the object as it was before the status write.
        let mut stale = (*current).clone();
        stale.status = None;
        reconcile(Arc::new(stale), Arc::clone(&ctx))
            .await
            .expect("reconciled");
        let s = status(&fetch(&ctx).await.expect("topic"));
        assert!(is_true(&s.conditions, READY), "{:?}", s.conditions);
        assert_eq!(s.topic_id, Some(id));
        let creates = kafka
            .calls()
            .iter()
            .filter(|c| *c == "create orders")
            .count();
        assert_eq!(creates, 1);
        assert!(event_reasons(&ctx.client, "streaming", "orders")
            .await
            .iter()
            .all(|r| r != "TopicConflict"));
    }

    #[tokio::test]
    async fn a_topic_created_just_before_the_operator_stopped_is_recorded_not_refused() {
        let (ctx, kafka) = setup(vec![with_spec("  partitions: 2")], true).await;
        let first = fetch(&ctx).await.expect("topic");
        reconcile(first, Arc::clone(&ctx)).await.expect("finalizer");
        // The operator wrote that it was creating the topic, created it and stopped before
        // recording its id.
        let current = fetch(&ctx).await.expect("topic");
        let message = "creating topic `orders`".to_string();
        write_status(
            &current,
            &ctx,
            &super::status(&current, Outcome::waiting(CREATING, message, &current)),
        )
        .await
        .expect("status");
        kafka.insert("orders", existing("created-then-stopped", 2));
        let current = fetch(&ctx).await.expect("topic");
        reconcile(current, Arc::clone(&ctx))
            .await
            .expect("reconciled");
        let s = status(&fetch(&ctx).await.expect("topic"));
        assert!(is_true(&s.conditions, READY), "{:?}", s.conditions);
        assert_eq!(s.topic_id.as_deref(), Some("created-then-stopped"));
    }

    #[tokio::test]
    async fn an_existing_topic_is_adopted_when_annotated() {
        let mut t = with_spec("  partitions: 4");
        t.metadata.annotations = Some([(ADOPT_ANNOTATION.to_string(), "true".to_string())].into());
        let (ctx, kafka) = setup(vec![t], true).await;
        kafka.insert("orders", existing("preexisting", 2));
        settle(&ctx).await;
        assert_eq!(kafka.topic("orders").expect("topic").partitions, 4);
        let s = status(&fetch(&ctx).await.expect("topic"));
        assert_eq!(s.topic_id.as_deref(), Some("preexisting"));
        assert!(is_true(&s.conditions, READY));
    }

    #[tokio::test]
    async fn a_topic_whose_cluster_does_not_exist_waits_for_it() {
        let (ctx, kafka) = setup(vec![with_spec("  partitions: 1")], false).await;
        let action = settle(&ctx).await;
        assert_eq!(action, Action::requeue(WAIT_FOR_CLUSTER));
        let s = status(&fetch(&ctx).await.expect("topic"));
        assert_eq!(reason(&s.conditions, READY), Some("ClusterNotFound"));
        assert!(kafka.calls().is_empty());
    }

    #[tokio::test]
    async fn an_unreachable_cluster_is_reported_and_retried_with_backoff() {
        let (ctx, kafka) =
            setup_on(vec![with_spec("  partitions: 1")], Some(ready_cluster())).await;
        *kafka.unreachable.lock().expect("lock") = true;
        reconcile(fetch(&ctx).await.expect("topic"), Arc::clone(&ctx))
            .await
            .expect("finalizer");
        let current = fetch(&ctx).await.expect("topic");
        let error = reconcile(Arc::clone(&current), Arc::clone(&ctx))
            .await
            .expect_err("unreachable");
        assert_eq!(error.metric_label(), "kafka_timeout");
        assert_eq!(
            error_policy(current, &error, Arc::clone(&ctx)),
            Action::requeue(Duration::from_secs(5))
        );
        let s = status(&fetch(&ctx).await.expect("topic"));
        assert!(!is_true(&s.conditions, READY));
        assert!(is_true(&s.conditions, DEGRADED));
        assert_eq!(reason(&s.conditions, DEGRADED), Some("KafkaUnreachable"));
        let message = s.message.unwrap_or_default();
        assert!(message.contains(BOOTSTRAP), "{message}");

        // Retries say nothing new: one event for the problem, not one per attempt.
        let error = reconcile(fetch(&ctx).await.expect("topic"), Arc::clone(&ctx))
            .await
            .expect_err("still unreachable");
        assert_eq!(error.reason(), "KafkaUnreachable");
        let reasons = event_reasons(&ctx.client, "streaming", "orders").await;
        assert_eq!(
            reasons.iter().filter(|r| *r == "KafkaUnreachable").count(),
            1,
            "{reasons:?}"
        );
    }

    #[tokio::test]
    async fn unreachable_brokers_of_a_starting_cluster_are_waited_for() {
        let (ctx, kafka) = setup(vec![with_spec("  partitions: 1")], true).await;
        *kafka.unreachable.lock().expect("lock") = true;
        assert_eq!(settle(&ctx).await, Action::requeue(WAIT_FOR_BROKERS));
        let s = status(&fetch(&ctx).await.expect("topic"));
        assert_eq!(reason(&s.conditions, READY), Some("WaitingForBrokers"));
        assert!(!is_true(&s.conditions, DEGRADED));
    }

    #[tokio::test]
    async fn a_deletion_the_brokers_cannot_carry_out_says_why_it_waits() {
        let (ctx, kafka) = setup(vec![deleting("", Some("ours"))], true).await;
        kafka.insert("orders", existing("ours", 1));
        *kafka.unreachable.lock().expect("lock") = true;
        let error = reconcile(fetch(&ctx).await.expect("topic"), Arc::clone(&ctx))
            .await
            .expect_err("cannot delete");
        assert_eq!(error.reason(), "DeletionFailed");
        let s = status(&fetch(&ctx).await.expect("still there"));
        assert_eq!(reason(&s.conditions, DEGRADED), Some("DeletionFailed"));
        let message = s.message.unwrap_or_default();
        assert!(
            message.contains("the KafkaTopic waits for it") && message.contains(BOOTSTRAP),
            "{message}"
        );
        assert!(event_reasons(&ctx.client, "streaming", "orders")
            .await
            .contains(&"DeletionFailed".to_string()));
    }

    #[tokio::test]
    async fn finalized_topic_with_deletion_policy_delete_deletes_the_topic() {
        let (ctx, kafka) = setup(vec![deleting("", Some("ours"))], true).await;
        kafka.insert("orders", existing("ours", 1));
        reconcile(fetch(&ctx).await.expect("topic"), Arc::clone(&ctx))
            .await
            .expect("cleaned up");
        assert_eq!(kafka.topic("orders"), None);
        assert!(kafka.calls().contains(&"delete orders".to_string()));
        let released = fetch(&ctx).await.is_none_or(|t| {
            !t.metadata
                .finalizers
                .as_ref()
                .is_some_and(|f| f.contains(&FINALIZER.to_string()))
        });
        assert!(released, "the finalizer is removed");
    }

    #[tokio::test]
    async fn finalized_topic_with_deletion_policy_retain_keeps_the_topic() {
        let (ctx, kafka) = setup(
            vec![deleting("  deletionPolicy: Retain", Some("ours"))],
            true,
        )
        .await;
        kafka.insert("orders", existing("ours", 1));
        reconcile(fetch(&ctx).await.expect("topic"), Arc::clone(&ctx))
            .await
            .expect("cleaned up");
        assert_eq!(kafka.topic("orders"), Some(existing("ours", 1)));
        assert!(kafka.calls().is_empty());
    }

    #[tokio::test]
    async fn deleting_a_kafkatopic_never_deletes_a_topic_it_does_not_own() {
        let (ctx, kafka) = setup(vec![deleting("", None)], true).await;
        kafka.insert("orders", existing("someone-elses", 1));
        reconcile(fetch(&ctx).await.expect("topic"), Arc::clone(&ctx))
            .await
            .expect("cleaned up");
        assert_eq!(kafka.topic("orders"), Some(existing("someone-elses", 1)));
        assert!(!kafka.calls().contains(&"delete orders".to_string()));
    }

    #[tokio::test]
    async fn a_kafkatopic_whose_cluster_is_gone_is_released_at_once() {
        let (ctx, kafka) = setup(vec![deleting("", Some("ours"))], false).await;
        reconcile(fetch(&ctx).await.expect("topic"), Arc::clone(&ctx))
            .await
            .expect("cleaned up");
        assert!(kafka.calls().is_empty());
    }
}
