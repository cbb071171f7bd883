//! The KafkaCluster controller, a pipeline: validate (pure) → observe (I/O: the StatefulSet
//! and the brokers) → decide (pure: [`scaling`]) → build (pure) → apply (I/O, server-side
//! apply, and the decided reassignments through the balancer) → roll (pure decision in
//! [`roll`], then at most one pod deleted) → status (I/O). An invalid spec
//! stops the pipeline with a `Degraded` condition and waits for the spec to change; a failed
//! API call is retried with backoff.
//!
//! A cluster with `spec.rack` carries the finalizer [`FINALIZER`]: its brokers' node-reading
//! ClusterRoleBinding is cluster scoped, which garbage collection cannot tie to a namespaced
//! owner, so the operator deletes it itself when the cluster goes or `spec.rack` is removed.

pub mod build;
pub mod certificates;
pub mod roll;
pub mod scaling;
pub mod status;
pub mod validate;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Node, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

use crate::balance::executor::{ExecError, Observed};
use crate::balance::step::{Health, Round};
use crate::broker_init::NODE_ADDRESS;
use crate::conditions::{self, DEGRADED, READY};
use crate::context::{Context, FIELD_MANAGER};
use crate::crd::{
    CertificateAuthorityStatus, KafkaCluster, KafkaClusterStatus, ListenerStatus, ListenerType,
};
use crate::metrics::{BalanceFigures, CLUSTER};
use build::{
    build, build_running, claim_name, external_services, ingresses, keep_volume_claims,
    role_selector_labels, running_volumes, selector_string, storage_change, volume_field,
    ClusterResources, Role, StorageChange, VolumeGrowth, INGRESS_PORT,
};
use roll::{next_restart, preferred_elections, RollStep, MANUAL_ROLL_ANNOTATION};
use scaling::{decide, ScalingDecision, ScalingInput};
use status::{
    add_balance, add_controllers, cluster_status, failed_status, invalid_status, mark_unreachable,
    waiting_for_load_balancers, ObservedBrokers,
};
use validate::{node_reader_binding_name, validate, CaKind, ControllerPool, ValidatedCluster};

/// Finalizer of a KafkaCluster whose brokers may read nodes: removed once the operator has
/// deleted the ClusterRoleBinding that allows it.
pub const FINALIZER: &str = "kafkaclusters.oxbow.dev/node-reader";

/// How often a cluster that is not ready yet is looked at again.
pub const PROGRESS_CHECK: Duration = Duration::from_secs(15);
/// How often a cluster whose replicas are moving is looked at again.
pub const REASSIGNMENT_POLL: Duration = Duration::from_secs(5);
/// Partition reassignments in flight at once while scaling (cluster-wide).
pub const MAX_MOVES: usize = 10;

#[derive(Debug, Error)]
pub enum Error {
    #[error("KafkaCluster has no {0}")]
    MissingMetadata(&'static str),
    #[error("cannot apply {kind} {namespace}/{name}: {source}")]
    Apply {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot list the pods of KafkaCluster {namespace}/{name}: {source}")]
    ListPods {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot list the nodes for the certificates of KafkaCluster {namespace}/{name} (the operator needs `list` on nodes): {source}")]
    ListNodes {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot write the status of KafkaCluster {namespace}/{name}: {source}")]
    Status {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot read the StatefulSet of KafkaCluster {namespace}/{name}: {source}")]
    ReadStatefulSet {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot restart pod {namespace}/{pod}: {source}")]
    RestartPod {
        namespace: String,
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot hand the manual rolling update of KafkaCluster {namespace}/{name} to its pods: {source}")]
    ManualRoll {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot update the finalizers of KafkaCluster {namespace}/{name}: {source}")]
    Finalizer {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot grow the volumes of KafkaCluster {namespace}/{name}: {source}")]
    GrowVolumes {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot read Secret {namespace}/{name}: {source}")]
    ReadSecret {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("certificate of Secret {namespace}/{name}: {source}")]
    Certificate {
        namespace: String,
        name: String,
        #[source]
        source: crate::certs::CertError,
    },
    #[error("the CA is supplied by the user (generateCertificateAuthority: false) and Secrets {namespace}/{cert} (ca.crt) and {namespace}/{key} (ca.key) are missing or incomplete")]
    MissingCa {
        namespace: String,
        cert: String,
        key: String,
    },
    #[error("cannot list the {kind}s of KafkaCluster {namespace}/{name}: {source}")]
    List {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot delete {kind} {namespace}/{name}: {source}")]
    Delete {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot delete ClusterRoleBinding {binding}: {source}")]
    DeleteBinding {
        binding: String,
        #[source]
        source: kube::Error,
    },
    #[error("{kind} {namespace}/{name} already exists and {owner}: the operator does not take it over; delete or rename it")]
    NotOwned {
        kind: &'static str,
        namespace: String,
        name: String,
        owner: String,
    },
    #[error("moving replicas of KafkaCluster {namespace}/{name}: {source}")]
    Kafka {
        namespace: String,
        name: String,
        #[source]
        source: ExecError,
    },
}

impl Error {
    /// The error kind, as the `error` label of the failure counter.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::MissingMetadata(_) => "missing_metadata",
            Error::Apply { .. } => "apply",
            Error::NotOwned { .. } => "not_owned",
            Error::ListPods { .. } => "list_pods",
            Error::ListNodes { .. } => "list_nodes",
            Error::Status { .. } => "status",
            Error::ReadStatefulSet { .. } => "read_statefulset",
            Error::Kafka { .. } => "kafka",
            Error::RestartPod { .. } => "restart_pod",
            Error::ManualRoll { .. } => "manual_roll",
            Error::Finalizer { .. } => "finalizer",
            Error::DeleteBinding { .. } => "delete_binding",
            Error::GrowVolumes { .. } => "grow_volumes",
            Error::Delete { .. } => "delete",
            Error::List { .. } => "list",
            Error::ReadSecret { .. } => "read_secret",
            Error::Certificate { .. } => "certificate",
            Error::MissingCa { .. } => "missing_ca",
        }
    }
}

fn backoff_key(cluster: &KafkaCluster) -> String {
    format!(
        "KafkaCluster/{}/{}",
        cluster.namespace().unwrap_or_default(),
        cluster.name_any()
    )
}

impl Error {
    /// The condition and event reason of a failed reconciliation.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::MissingMetadata(_) => "InvalidObject",
            Error::Apply { .. } => "ApplyFailed",
            Error::GrowVolumes { .. } => "VolumeGrowthFailed",
            Error::Delete { .. } => "DeleteFailed",
            Error::NotOwned { .. } => "ResourceConflict",
            Error::Status { .. } => "StatusFailed",
            Error::ListPods { .. }
            | Error::ListNodes { .. }
            | Error::ReadStatefulSet { .. }
            | Error::List { .. }
            | Error::ReadSecret { .. } => "ReadFailed",
            Error::Certificate { .. } => "CertificateFailed",
            Error::MissingCa { .. } => "CertificateAuthorityMissing",
            Error::RestartPod { .. } | Error::ManualRoll { .. } => "RestartFailed",
            Error::Finalizer { .. } | Error::DeleteBinding { .. } => "FinalizerFailed",
            Error::Kafka { .. } => "KafkaError",
        }
    }
}

/// Reconciles one KafkaCluster; a failure is reported in its status and events
/// ([`report_failure`]) before the controller retries it.
pub async fn reconcile(cluster: Arc<KafkaCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let result = reconcile_once(Arc::clone(&cluster), Arc::clone(&ctx)).await;
    if let Err(error) = &result {
        report_failure(&cluster, &ctx, error).await;
    }
    result
}

/// Makes a failed reconciliation visible: `Ready` false and `Degraded` true with the error in
/// the status, and a Warning event when the problem is new (not at every retry).
async fn report_failure(cluster: &KafkaCluster, ctx: &Context, error: &Error) {
    let (Some(name), Some(namespace)) = (&cluster.metadata.name, &cluster.metadata.namespace)
    else {
        return;
    };
    let reason = error.reason();
    let message = error.to_string();
    let previous = cluster.status.as_ref();
    let known = previous.is_some_and(|s| {
        s.conditions.iter().any(|c| {
            c.type_ == DEGRADED && c.status == "True" && c.reason == reason && c.message == message
        })
    });
    if !known {
        publish(ctx, cluster, EventType::Warning, reason, message.clone()).await;
    }
    ctx.metrics.set_ready(CLUSTER, namespace, name, false);
    let status = failed_status(
        reason,
        &message,
        cluster.metadata.generation,
        previous,
        Timestamp::now(),
    );
    let clusters: Api<KafkaCluster> = Api::namespaced(ctx.client.clone(), namespace);
    if let Err(status_error) = write_status(&clusters, name, &status).await {
        tracing::warn!(%namespace, %name, error = %status_error, "cannot report a failed reconciliation in the status");
    }
}

async fn reconcile_once(cluster: Arc<KafkaCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile(CLUSTER);
    let name = cluster
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingMetadata("name"))?;
    let namespace = cluster
        .metadata
        .namespace
        .clone()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let clusters: Api<KafkaCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let previous = cluster.status.as_ref();

    if cluster.metadata.deletion_timestamp.is_some() {
        // Owned objects go by garbage collection; the binding is the operator's to delete.
        release_node_reader(&ctx, &clusters, &cluster).await?;
        return Ok(Action::await_change());
    }

    if conditions::is_paused(&cluster.metadata) {
        let mut status = previous.cloned().unwrap_or_default();
        status.conditions = conditions::with_paused(
            &status.conditions,
            cluster.metadata.generation,
            Timestamp::now(),
        );
        if previous != Some(&status) {
            publish(
                &ctx,
                &cluster,
                EventType::Normal,
                "ReconciliationPaused",
                format!(
                    "{} is true: the cluster's objects are left as they are",
                    conditions::PAUSE_ANNOTATION
                ),
            )
            .await;
            write_status(&clusters, &name, &status)
                .await
                .map_err(|source| Error::Status {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    source,
                })?;
        }
        return Ok(Action::await_change());
    }

    let (status, action) = match validate(&cluster, &ctx.settings) {
        Err(invalid) => {
            tracing::warn!(%namespace, %name, problems = %invalid, "invalid KafkaCluster spec");
            let status = invalid_status(
                &invalid,
                cluster.metadata.generation,
                previous,
                Timestamp::now(),
            );
            // The spec will not fix itself: no retries until it changes.
            (status, Action::await_change())
        }
        Ok(valid) => {
            let statefulsets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &namespace);
            let read = |statefulset: String| {
                let statefulsets = statefulsets.clone();
                let (namespace, name) = (namespace.clone(), name.clone());
                async move {
                    statefulsets.get_opt(&statefulset).await.map_err(|source| {
                        Error::ReadStatefulSet {
                            namespace,
                            name,
                            source,
                        }
                    })
                }
            };
            let existing = read(valid.statefulset_name()).await?;
            let running = existing
                .as_ref()
                .and_then(|sts| sts.spec.as_ref())
                .and_then(|spec| spec.replicas);
            let existing_controllers = read(valid.controller_statefulset_name()).await?;
            let (mut valid, pool_refused) =
                kept_controllers(valid, running, existing_controllers.as_ref());
            let (kafka, unreachable) = match running {
                Some(_) => match ctx.balancer.observe(&valid.bootstrap_address()).await {
                    Ok(observed) => (Some(observed), None),
                    // Decisions that need the brokers' view wait.
                    Err(error) => (None, Some(error)),
                },
                None => (None, None),
            };
            let decision = match (pool_refused, running) {
                // Nothing changes until the spec's controllers are those running again.
                (Some(why), Some(running)) => ScalingDecision {
                    refused: Some(why),
                    ..ScalingDecision::steady(running)
                },
                _ => decide(ScalingInput {
                    wanted: valid.replicas,
                    running,
                    operation: previous.and_then(|s| s.scaling.as_ref()),
                    kafka: kafka.as_ref(),
                    max_moves: MAX_MOVES,
                    quorum_in_brokers: valid.controllers.is_none(),
                }),
            };
            valid = kept_size(valid, &decision);
            if let Some((_, round)) = &decision.round {
                perform(&ctx, &cluster, &valid, round).await?;
            }
            if valid.reads_node() {
                add_finalizer(&clusters, &cluster).await?;
            } else {
                release_node_reader(&ctx, &clusters, &cluster).await?;
            }
            // The node ports the API server assigned and the load balancers' addresses go
            // into what the brokers advertise, so the external listeners' Services come first.
            let external = apply_external_services(
                &ctx.client,
                &namespace,
                &valid,
                decision.statefulset_replicas.max(valid.replicas),
            )
            .await?;
            if !external.pending.is_empty() {
                // Brokers configured now would advertise the wrong address, and restart
                // once it is known.
                let status =
                    waiting_for_load_balancers(&external.pending, previous, Timestamp::now());
                write_status(&clusters, &name, &status)
                    .await
                    .map_err(|source| Error::Status {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        source,
                    })?;
                return Ok(Action::requeue(PROGRESS_CHECK));
            }
            valid.external_addresses = external.by_broker.clone();
            valid.external_bootstraps = external
                .bootstraps
                .iter()
                .filter_map(|(listener, bootstrap)| match bootstrap {
                    Bootstrap::Address(address) => Some((listener.clone(), address.clone())),
                    Bootstrap::NodePort(_) => None,
                })
                .collect();
            if valid.names_nodes_in_certificates() {
                valid.node_addresses =
                    node_addresses(&ctx.client)
                        .await
                        .map_err(|source| Error::ListNodes {
                            namespace: namespace.clone(),
                            name: name.clone(),
                            source,
                        })?;
            }
            let now = std::time::SystemTime::now();
            let cluster_ca = certificates::ensure_ca(
                &ctx.client,
                &valid,
                CaKind::Cluster,
                &valid.cluster_ca,
                now,
            )
            .await?;
            let clients_ca = certificates::ensure_ca(
                &ctx.client,
                &valid,
                CaKind::Clients,
                &valid.clients_ca,
                now,
            )
            .await?;
            for (kind, ca) in [
                (CaKind::Cluster, &cluster_ca),
                (CaKind::Clients, &clients_ca),
            ] {
                ctx.metrics.set_certificate_expiry(
                    &valid.namespace,
                    &valid.name,
                    kind.name(),
                    ca.authority.not_after(),
                );
            }
            valid.certificates_generation = certificates::ensure_broker_certificates(
                &ctx.client,
                &valid,
                &cluster_ca,
                &clients_ca,
                decision.statefulset_replicas.max(valid.replicas),
                now,
            )
            .await?;
            let mut resources = build_running(&valid, decision.statefulset_replicas);
            let storage_refused = match storage_change(&resources.stateful_set, existing.as_ref()) {
                StorageChange::Unchanged => None,
                StorageChange::Refused(why) => Some(why),
                StorageChange::Grow(growth) => match &existing {
                    Some(running) => grow_volumes(&ctx, &cluster, &valid, running, &growth).await?,
                    None => None,
                },
                StorageChange::Add(added) => {
                    if existing.is_some() {
                        add_volumes(&ctx, &cluster, &valid, &added).await?;
                    }
                    None
                }
            };
            if storage_refused.is_some() {
                // The brokers keep the volumes they have: their claims, mounts and log.dirs.
                if let Some(kept) = existing.as_ref().and_then(running_volumes) {
                    valid.volumes = kept;
                    resources = build_running(&valid, decision.statefulset_replicas);
                }
                keep_volume_claims(&mut resources.stateful_set, existing.as_ref());
            }
            // A controller's volume is fixed once made (claim templates cannot change in place).
            if let Some((controllers, _)) = resources.controllers.as_mut() {
                keep_volume_claims(controllers, existing_controllers.as_ref());
            }
            let (statefulset, controller_set) = apply(&ctx.client, &namespace, &resources).await?;
            let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
            let controllers = match &controller_set {
                Some(set) => {
                    let selector = role_selector_labels(&valid, Role::Controller)
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",");
                    let listed = pods
                        .list(&ListParams::default().labels(&selector))
                        .await
                        .map_err(|source| Error::ListPods {
                            namespace: namespace.clone(),
                            name: name.clone(),
                            source,
                        })?;
                    ObservedBrokers::from_objects(set, &listed.items)
                }
                None => ObservedBrokers::default(),
            };
            let pods = pods
                .list(&ListParams::default().labels(&selector_string(&valid)))
                .await
                .map_err(|source| Error::ListPods {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    source,
                })?;
            let mut observed = ObservedBrokers::from_objects(&statefulset, &pods.items);
            if restart_requested(&cluster.metadata) {
                request_restarts(&ctx, &cluster, &valid, &mut observed).await?;
            }
            if existing.is_some() {
                restart_for_filesystem_resize(&ctx, &cluster, &valid, &pods.items, &mut observed)
                    .await?;
            }
            let unregistering = unregister_removed(
                &ctx,
                &cluster,
                &valid,
                &observed,
                decision.statefulset_replicas,
                kafka.as_ref(),
            )
            .await;
            let roll = if decision.operation.is_some() {
                // A change of size first; the roll resumes after it.
                RollStep::UpToDate
            } else {
                next_restart(
                    &observed.by_ordinal,
                    decision.statefulset_replicas,
                    observed.update_revision.as_deref(),
                    kafka.as_ref(),
                )
            };
            match &roll {
                RollStep::Restart(ordinal) => {
                    let asked = observed
                        .by_ordinal
                        .get(ordinal)
                        .is_some_and(|pod| pod.restart_requested);
                    restart(&ctx, &cluster, &valid, *ordinal, asked).await?
                }
                RollStep::UpToDate if observed.ready >= decision.statefulset_replicas => {
                    // After a roll (or a broker's own restart), leaders go back to the
                    // preferred replicas, as Kafka's automatic leader rebalance would.
                    if let Some(kafka) = kafka.as_ref().filter(|k| k.reassigning.is_empty()) {
                        let elections = preferred_elections(kafka);
                        if !elections.is_empty() {
                            let round = Round {
                                elect: elections,
                                ..Round::default()
                            };
                            perform(&ctx, &cluster, &valid, &round).await?;
                        }
                    }
                }
                RollStep::UpToDate | RollStep::Wait(_) => {}
            }
            let mut status = cluster_status(
                &valid,
                &observed,
                &decision,
                storage_refused.as_deref(),
                &roll,
                previous,
                Timestamp::now(),
            );
            if let Some(error) = &unreachable {
                if conditions::is_true(&status.conditions, READY) {
                    tracing::warn!(%namespace, %name, %error, "every broker's pod is ready but the brokers cannot be reached");
                    mark_unreachable(
                        &mut status,
                        &format!(
                            "every broker's pod is ready but the operator cannot reach the brokers: {error}"
                        ),
                        Timestamp::now(),
                    );
                } else {
                    tracing::debug!(%namespace, %name, %error, "the brokers cannot be reached yet");
                }
            }
            add_controllers(
                &mut status,
                &valid,
                &controllers,
                previous,
                Timestamp::now(),
            );
            status.listeners = listener_statuses(&valid, &external.bootstraps, &pods.items);
            status.certificate_authorities = [
                (CaKind::Cluster, &cluster_ca),
                (CaKind::Clients, &clients_ca),
            ]
            .into_iter()
            .map(|(kind, ca)| CertificateAuthorityStatus {
                name: kind.name().to_string(),
                generation: ca.generation,
                not_after: Timestamp::try_from(ca.authority.not_after())
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
            })
            .collect();
            let health = kafka.as_ref().map(Health::of);
            add_balance(&mut status, health.as_ref());
            if let Some(health) = &health {
                ctx.metrics.set_balance(
                    &namespace,
                    &name,
                    &BalanceFigures {
                        replicas: health.distribution.replicas.clone(),
                        leaders: health.leaders.clone(),
                        under_replicated: health.under_replicated,
                        in_flight: health.reassigning,
                        pending: decision
                            .round
                            .as_ref()
                            .map_or(0, |(_, r)| r.progress.pending),
                    },
                );
            }
            let next = if decision.operation.is_some() || roll != RollStep::UpToDate {
                REASSIGNMENT_POLL
            } else if conditions::is_true(&status.conditions, READY) {
                ctx.settings.resync
            } else {
                PROGRESS_CHECK
            };
            // A removed broker is unregistered once the controller has fenced it: soon.
            let next = if unregistering {
                next.min(PROGRESS_CHECK)
            } else {
                next
            };
            (status, Action::requeue(next))
        }
    };

    write_status(&clusters, &name, &status)
        .await
        .map_err(|source| Error::Status {
            namespace: namespace.clone(),
            name: name.clone(),
            source,
        })?;
    publish_transitions(&ctx, &cluster, previous, &status).await;
    ctx.metrics.set_ready(
        CLUSTER,
        &namespace,
        &name,
        conditions::is_true(&status.conditions, READY),
    );
    ctx.backoff.succeeded(&backoff_key(&cluster));
    Ok(action)
}

/// The cluster as its objects are built and its status reported: a refused change of size
/// keeps the size the StatefulSet has, and with it everything derived from the size (the
/// quorum voters, the replication defaults, the pod template), as if the spec still asked for
/// it. Building from the refused size would rewrite `controller.quorum.voters` and make every
/// pod outdated.
fn kept_size(cluster: ValidatedCluster, decision: &ScalingDecision) -> ValidatedCluster {
    match decision.refused {
        Some(_) => ValidatedCluster {
            replicas: decision.statefulset_replicas,
            ..cluster
        },
        None => cluster,
    }
}

/// The cluster with the dedicated controllers that run: the quorum's voters cannot change
/// (that needs a dynamic quorum), so once the brokers run (`running`), a spec that adds,
/// removes or resizes `spec.controllers` is refused with the reason, and the cluster is built
/// with the controllers it has.
fn kept_controllers(
    mut cluster: ValidatedCluster,
    running: Option<i32>,
    controllers: Option<&StatefulSet>,
) -> (ValidatedCluster, Option<String>) {
    let has = controllers
        .and_then(|sts| sts.spec.as_ref())
        .and_then(|spec| spec.replicas);
    let wanted = cluster.controllers.as_ref().map(|pool| pool.replicas);
    if running.is_none() || has == wanted {
        return (cluster, None);
    }
    let why = match (has, wanted) {
        (None, _) => "spec.controllers cannot be added to a running cluster: its metadata quorum is its first brokers, fixed when it was formed; remove spec.controllers".to_string(),
        (Some(n), None) => format!("spec.controllers cannot be removed: its {n} dedicated controllers are the metadata quorum; put it back"),
        (Some(n), Some(m)) => format!("spec.controllers.replicas cannot change from {n} to {m}: the controllers are the metadata quorum's voters, fixed when the cluster was formed; keep {n}"),
    };
    cluster.controllers = has.map(|replicas| {
        let volume = controllers
            .and_then(running_volumes)
            .and_then(|volumes| volumes.into_iter().next());
        match cluster.controllers.take() {
            Some(pool) => ControllerPool {
                replicas,
                volume: volume.unwrap_or(pool.volume),
                ..pool
            },
            None => ControllerPool {
                replicas,
                volume: volume.unwrap_or_else(|| cluster.volumes[0].clone()),
                resources: None,
            },
        }
    });
    (cluster, Some(why))
}

/// Deletes broker `ordinal`'s pod so the StatefulSet recreates it from the current template.
/// Its preStop hook and SIGTERM's controlled shutdown move its leadership away first.
fn restart_requested(meta: &ObjectMeta) -> bool {
    conditions::annotation_is_true(meta, MANUAL_ROLL_ANNOTATION)
}

/// A manual rolling update of the whole cluster: the annotation moves from the KafkaCluster to
/// each broker pod (where it stays until the pod is restarted, across operator restarts), and
/// the roll restarts them one at a time.
async fn request_restarts(
    ctx: &Context,
    resource: &KafkaCluster,
    cluster: &ValidatedCluster,
    observed: &mut ObservedBrokers,
) -> Result<(), Error> {
    for (ordinal, pod) in observed.by_ordinal.iter_mut() {
        if pod.terminating || pod.restart_requested {
            continue;
        }
        request_restart(ctx, cluster, *ordinal).await?;
        pod.restart_requested = true;
    }
    let clusters: Api<KafkaCluster> = Api::namespaced(ctx.client.clone(), &cluster.namespace);
    crate::controller::remove_annotation(&clusters, &cluster.name, MANUAL_ROLL_ANNOTATION)
        .await
        .map_err(|source| Error::ManualRoll {
            namespace: cluster.namespace.clone(),
            name: cluster.name.clone(),
            source,
        })?;
    publish(
        ctx,
        resource,
        EventType::Normal,
        "ManualRollingUpdate",
        format!(
            "{} brokers to restart one at a time, as {MANUAL_ROLL_ANNOTATION} asked",
            observed.by_ordinal.len()
        ),
    )
    .await;
    Ok(())
}

/// Puts the restart annotation on broker `ordinal`'s pod: the roll restarts it, one broker at
/// a time with its safety checks.
async fn request_restart(
    ctx: &Context,
    cluster: &ValidatedCluster,
    ordinal: i32,
) -> Result<(), Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &cluster.namespace);
    let annotate = serde_json::json!({
        "metadata": { "annotations": { MANUAL_ROLL_ANNOTATION: "true" } }
    });
    pods.patch(
        &cluster.pod_name(ordinal),
        &PatchParams::default(),
        &Patch::Merge(&annotate),
    )
    .await
    .map_err(|source| Error::ManualRoll {
        namespace: cluster.namespace.clone(),
        name: cluster.name.clone(),
        source,
    })?;
    Ok(())
}

/// A class that grows volumes offline leaves a grown claim `FileSystemResizePending` until the
/// volume is next mounted: the broker using it is restarted, through the roll. Only a pod that
/// started before the claim became pending is: a newer one mounts (or has mounted) the volume
/// since, and the kubelet grows the filesystem then.
async fn restart_for_filesystem_resize(
    ctx: &Context,
    resource: &KafkaCluster,
    cluster: &ValidatedCluster,
    pods: &[Pod],
    observed: &mut ObservedBrokers,
) -> Result<(), Error> {
    let claims: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &cluster.namespace);
    let listed = claims
        .list(&ListParams::default().labels(&selector_string(cluster)))
        .await
        .map_err(|source| Error::GrowVolumes {
            namespace: cluster.namespace.clone(),
            name: cluster.name.clone(),
            source,
        })?;
    let mut restarting = Vec::new();
    for (ordinal, pod) in observed.by_ordinal.iter_mut() {
        if pod.terminating || pod.restart_requested {
            continue;
        }
        let names: Vec<String> = cluster
            .volumes
            .iter()
            .map(|v| claim_name(cluster, &v.claim_template(), *ordinal))
            .collect();
        let Some(pending_since) = listed
            .items
            .iter()
            .filter(|claim| names.contains(&claim.name_any()))
            .filter_map(filesystem_resize_pending_since)
            .min()
        else {
            continue;
        };
        let started = pods
            .iter()
            .find(|p| p.name_any() == cluster.pod_name(*ordinal))
            .and_then(|p| p.status.as_ref()?.start_time.clone());
        // A pod not started yet mounts the volume when it starts.
        if started.is_none_or(|started| started.0 >= pending_since) {
            continue;
        }
        request_restart(ctx, cluster, *ordinal).await?;
        pod.restart_requested = true;
        restarting.push(*ordinal);
    }
    if !restarting.is_empty() {
        publish(
            ctx,
            resource,
            EventType::Normal,
            "FileSystemResizePending",
            format!(
                "restarting brokers {restarting:?} one at a time: their volumes grew, and their filesystems grow when the volumes are next mounted"
            ),
        )
        .await;
    }
    Ok(())
}

/// When `claim` became `FileSystemResizePending`, if it is.
fn filesystem_resize_pending_since(claim: &PersistentVolumeClaim) -> Option<Timestamp> {
    claim
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "FileSystemResizePending" && c.status == "True")
        .map(|c| {
            c.last_transition_time
                .as_ref()
                .map_or(Timestamp::UNIX_EPOCH, |t| t.0)
        })
}

async fn restart(
    ctx: &Context,
    resource: &KafkaCluster,
    cluster: &ValidatedCluster,
    ordinal: i32,
    asked: bool,
) -> Result<(), Error> {
    let pod = cluster.pod_name(ordinal);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &cluster.namespace);
    pods.delete(&pod, &DeleteParams::default())
        .await
        .map_err(|source| Error::RestartPod {
            namespace: cluster.namespace.clone(),
            pod: pod.clone(),
            source,
        })?;
    publish(
        ctx,
        resource,
        EventType::Normal,
        "RestartingBroker",
        if asked {
            format!("restarting {pod} (broker {ordinal}) as {MANUAL_ROLL_ANNOTATION} asked")
        } else {
            format!("restarting {pod} (broker {ordinal}) for the current configuration")
        },
    )
    .await;
    Ok(())
}

/// Unregisters the brokers a scale-down removed (see [`scaling::to_unregister`]), so they
/// leave the cluster's metadata and quorum. Returns whether one is left registered for now:
/// the controller refuses a broker until it has noticed that it stopped.
async fn unregister_removed(
    ctx: &Context,
    resource: &KafkaCluster,
    cluster: &ValidatedCluster,
    observed: &ObservedBrokers,
    replicas: i32,
    kafka: Option<&Observed>,
) -> bool {
    let Some(kafka) = kafka else {
        return false;
    };
    let bootstrap = cluster.bootstrap_address();
    let registered = match ctx.balancer.registered_brokers(&bootstrap).await {
        Ok(registered) => registered,
        Err(error) => {
            tracing::warn!(cluster = %cluster.name, %error, "cannot list the registered brokers");
            return false;
        }
    };
    let pods = observed.by_ordinal.keys().copied().collect();
    let mut left = false;
    for id in scaling::to_unregister(&registered, replicas, &pods, kafka) {
        match ctx.balancer.unregister(&bootstrap, id).await {
            Ok(()) => {
                publish(
                    ctx,
                    resource,
                    EventType::Normal,
                    "UnregisteredBroker",
                    format!("broker {id} unregistered: its pod is gone and it holds no replica"),
                )
                .await;
            }
            Err(error) => {
                left = true;
                if matches!(error, ExecError::Refused { .. }) {
                    tracing::info!(cluster = %cluster.name, broker = id, %error, "removed broker not unregistered yet");
                } else {
                    tracing::warn!(cluster = %cluster.name, broker = id, %error, "cannot unregister a removed broker");
                }
            }
        }
    }
    left
}

/// Submits a round's reassignments and elections, and says so in an event.
async fn perform(
    ctx: &Context,
    resource: &KafkaCluster,
    cluster: &ValidatedCluster,
    round: &Round,
) -> Result<(), Error> {
    let failed = |source| Error::Kafka {
        namespace: cluster.namespace.clone(),
        name: cluster.name.clone(),
        source,
    };
    let bootstrap = cluster.bootstrap_address();
    if !round.submit.is_empty() {
        ctx.balancer
            .reassign(&bootstrap, &round.submit)
            .await
            .map_err(failed)?;
        ctx.metrics
            .submitted(&cluster.namespace, &cluster.name, round.submit.len());
        publish(
            ctx,
            resource,
            EventType::Normal,
            "Reassigning",
            format!(
                "{} partition reassignments submitted ({} pending)",
                round.submit.len(),
                round.progress.pending
            ),
        )
        .await;
    }
    if !round.elect.is_empty() {
        let not_elected = ctx
            .balancer
            .elect(&bootstrap, &round.elect)
            .await
            .map_err(failed)?;
        for miss in not_elected.iter().take(3) {
            tracing::info!(cluster = %cluster.name, topic = %miss.topic, partition = miss.partition, reason = %miss.reason, "preferred leader not elected yet");
        }
    }
    Ok(())
}

async fn publish(
    ctx: &Context,
    cluster: &KafkaCluster,
    type_: EventType,
    reason: &str,
    note: String,
) {
    ctx.publish(&cluster.object_ref(&()), type_, reason, "Reconcile", &note)
        .await;
}

/// Logs and counts a failed reconciliation, then retries it with a growing delay.
pub fn error_policy(cluster: Arc<KafkaCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failure(CLUSTER, error.metric_label());
    let delay = ctx.backoff.failed(&backoff_key(&cluster));
    tracing::warn!(error = %error, retry_in = ?delay, "KafkaCluster reconciliation failed");
    Action::requeue(delay)
}

/// Server-side applies every object, children before the StatefulSet so a new broker finds
/// its configuration; returns the StatefulSet as the API server has it (with its status).
pub async fn apply(
    client: &Client,
    namespace: &str,
    resources: &ClusterResources,
) -> Result<(StatefulSet, Option<StatefulSet>), Error> {
    if let Some(account) = &resources.service_account {
        apply_one(client, namespace, account).await?;
    }
    if let Some(binding) = &resources.node_reader_binding {
        let name = binding.metadata.name.clone().unwrap_or_default();
        Api::<ClusterRoleBinding>::all(client.clone())
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(binding),
            )
            .await
            .map_err(|source| Error::Apply {
                kind: "ClusterRoleBinding",
                namespace: String::new(),
                name,
                source,
            })?;
    }
    apply_one(client, namespace, &resources.config_map).await?;
    apply_one(client, namespace, &resources.headless_service).await?;
    apply_one(client, namespace, &resources.bootstrap_service).await?;
    apply_one(client, namespace, &resources.pdb).await?;
    if let Some(policy) = &resources.network_policy {
        apply_one(client, namespace, policy).await?;
    }
    let controllers = match &resources.controllers {
        Some((controllers, budget)) => {
            apply_one(client, namespace, budget).await?;
            Some(apply_one(client, namespace, controllers).await?)
        }
        None => None,
    };
    Ok((
        apply_one(client, namespace, &resources.stateful_set).await?,
        controllers,
    ))
}

/// Grows the claims of the `running` brokers as `growth` says when their StorageClass allows
/// it, then deletes the StatefulSet, leaving its pods running, for [`apply`] to make again with
/// the larger claim templates (which cannot change in place); the new StatefulSet adopts the
/// pods, so no broker restarts. Returns why not when a claim's class does not allow it.
async fn grow_volumes(
    ctx: &Context,
    cluster: &KafkaCluster,
    valid: &ValidatedCluster,
    running: &StatefulSet,
    growth: &[VolumeGrowth],
) -> Result<Option<String>, Error> {
    let failed = |source| Error::GrowVolumes {
        namespace: valid.namespace.clone(),
        name: valid.name.clone(),
        source,
    };
    let brokers = running.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &valid.namespace);
    let classes: Api<StorageClass> = Api::all(ctx.client.clone());
    let mut found = Vec::new();
    for grow in growth {
        for ordinal in 0..brokers {
            let name = claim_name(valid, &grow.template, ordinal);
            if let Some(claim) = claims.get_opt(&name).await.map_err(failed)? {
                found.push((grow, name, claim));
            }
        }
    }
    for (grow, name, claim) in &found {
        let VolumeGrowth { from, to, template } = grow;
        let field = volume_field(template);
        let back = format!("set {field}.size back to {from}");
        let Some(class) = claim
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.clone())
        else {
            return Ok(Some(format!(
                "{field}.size is {to} but claim {name} has no StorageClass, so it cannot grow ({back})"
            )));
        };
        let expandable = classes
            .get_opt(&class)
            .await
            .map_err(failed)?
            .and_then(|c| c.allow_volume_expansion)
            .unwrap_or(false);
        if !expandable {
            return Ok(Some(format!(
                "{field}.size is {to} but StorageClass {class} of claim {name} does not allow volume expansion (allowVolumeExpansion), so the volumes stay at {from} ({back}, or allow expansion)"
            )));
        }
    }
    for (grow, name, _) in &found {
        let grow = serde_json::json!({"spec": {"resources": {"requests": {"storage": grow.to}}}});
        claims
            .patch(name, &PatchParams::default(), &Patch::Merge(&grow))
            .await
            .map_err(failed)?;
    }
    let what = growth
        .iter()
        .map(|g| format!("{} from {} to {}", g.template, g.from, g.to))
        .collect::<Vec<_>>()
        .join(", ");
    publish(
        ctx,
        cluster,
        EventType::Normal,
        "VolumesGrowing",
        format!("growing {} claims: {what}", found.len()),
    )
    .await;
    remake_statefulset(ctx, valid).await?;
    Ok(None)
}

/// Adds the volumes of claim templates `added` to the running brokers: the StatefulSet is
/// made again with them (see [`remake_statefulset`]); its new pod template, which mounts
/// them and names them in `log.dirs`, then rolls the brokers one at a time, and the
/// StatefulSet controller makes each broker's new claims as it makes its pod again.
async fn add_volumes(
    ctx: &Context,
    cluster: &KafkaCluster,
    valid: &ValidatedCluster,
    added: &[String],
) -> Result<(), Error> {
    publish(
        ctx,
        cluster,
        EventType::Normal,
        "VolumesAdding",
        format!(
            "adding the volumes {} to every broker, which restart one at a time to take them",
            added.join(", ")
        ),
    )
    .await;
    remake_statefulset(ctx, valid).await
}

/// Deletes the brokers' StatefulSet, leaving its pods running, for [`apply`] to make again
/// with other claim templates (which cannot change in place); the new StatefulSet adopts the
/// pods.
async fn remake_statefulset(ctx: &Context, valid: &ValidatedCluster) -> Result<(), Error> {
    let failed = |source| Error::GrowVolumes {
        namespace: valid.namespace.clone(),
        name: valid.name.clone(),
        source,
    };
    let statefulsets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &valid.namespace);
    let orphan = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Orphan),
        ..DeleteParams::default()
    };
    match statefulsets
        .delete(&valid.statefulset_name(), &orphan)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(source) => return Err(failed(source)),
    }
    // The garbage collector takes the pods' owner references off before the StatefulSet
    // goes; one made again before that would be deleted with it. Should it take longer, the
    // next reconciliation (woken by the deletion) makes it.
    for _ in 0..50 {
        if statefulsets
            .get_opt(&valid.statefulset_name())
            .await
            .map_err(failed)?
            .is_none()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Every address of every node (IPs and DNS names, as each node reports them), sorted: a
/// broker on a `nodeport` listener advertises its node's, which the certificates must name.
async fn node_addresses(client: &kube::Client) -> Result<Vec<String>, kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut addresses: Vec<String> = nodes
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|node| node.status?.addresses)
        .flatten()
        .map(|address| address.address)
        .filter(|address| !address.is_empty())
        .collect();
    addresses.sort();
    addresses.dedup();
    Ok(addresses)
}

/// What the Services of the external listeners tell the brokers' configuration and the
/// status, once applied.
#[derive(Debug, Default)]
struct ExternalServices {
    /// What each broker advertises, by (listener, ordinal): see
    /// [`ValidatedCluster::external_addresses`].
    by_broker: BTreeMap<(String, i32), String>,
    /// Each listener's bootstrap Service.
    bootstraps: BTreeMap<String, Bootstrap>,
    /// The LoadBalancer Services that have no address yet.
    pending: Vec<String>,
}

/// Where an external listener's bootstrap Service is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Bootstrap {
    /// On every node, at this node port.
    NodePort(i32),
    /// At its load balancer's `host:port`, or its Ingress's host and port 443.
    Address(String),
}

/// Applies the Services of the cluster's `nodeport` and `loadbalancer` listeners for
/// `brokers` brokers, and reads back the node ports and load balancer addresses assigned.
/// Deletes the cluster's Services nothing needs any more: those of removed brokers and of
/// listeners no longer external, so their node ports and load balancers are given back.
async fn apply_external_services(
    client: &Client,
    namespace: &str,
    cluster: &ValidatedCluster,
    brokers: i32,
) -> Result<ExternalServices, Error> {
    let wanted = external_services(cluster, brokers);
    let mut keep: Vec<String> = wanted
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    keep.extend([
        cluster.headless_service_name(),
        cluster.bootstrap_service_name(),
    ]);
    delete_unneeded::<Service>(client, namespace, cluster, &keep).await?;
    let mut found = ExternalServices::default();
    for service in wanted {
        let applied = apply_one(client, namespace, &service).await?;
        let name = applied.metadata.name.clone().unwrap_or_default();
        for listener in cluster.external_listeners() {
            let bootstrap = cluster.external_service_name(listener, None) == name;
            let ordinal = (0..brokers)
                .find(|ordinal| cluster.external_service_name(listener, Some(*ordinal)) == name);
            if !bootstrap && ordinal.is_none() {
                continue;
            }
            let reached = match listener.type_ {
                ListenerType::LoadBalancer => match load_balancer_address(&applied) {
                    Some(host) => Bootstrap::Address(format!("{host}:{}", listener.port)),
                    None => {
                        found.pending.push(name.clone());
                        continue;
                    }
                },
                ListenerType::Ingress => {
                    let Some(host) = listener.ingress_host(ordinal) else {
                        continue;
                    };
                    Bootstrap::Address(format!("{host}:{INGRESS_PORT}"))
                }
                ListenerType::NodePort | ListenerType::Internal => {
                    let Some(node_port) = applied
                        .spec
                        .as_ref()
                        .and_then(|s| s.ports.as_ref())
                        .and_then(|ports| ports.first())
                        .and_then(|p| p.node_port)
                    else {
                        continue;
                    };
                    Bootstrap::NodePort(node_port)
                }
            };
            if let Some(ordinal) = ordinal {
                let address = match &reached {
                    Bootstrap::NodePort(port) => format!("{NODE_ADDRESS}:{port}"),
                    Bootstrap::Address(address) => address.clone(),
                };
                found
                    .by_broker
                    .insert((listener.name.clone(), ordinal), address);
            } else {
                found.bootstraps.insert(listener.name.clone(), reached);
            }
        }
    }
    apply_ingresses(client, namespace, cluster, brokers).await?;
    Ok(found)
}

/// Applies the Ingresses of the cluster's `ingress` listeners for `brokers` brokers, and
/// deletes those of the cluster nothing needs any more.
async fn apply_ingresses(
    client: &Client,
    namespace: &str,
    cluster: &ValidatedCluster,
    brokers: i32,
) -> Result<(), Error> {
    let wanted = ingresses(cluster, brokers);
    let keep: Vec<String> = wanted
        .iter()
        .filter_map(|i| i.metadata.name.clone())
        .collect();
    delete_unneeded::<Ingress>(client, namespace, cluster, &keep).await?;
    for ingress in &wanted {
        apply_one(client, namespace, ingress).await?;
    }
    Ok(())
}

/// Deletes the objects of kind `K` the cluster owns (by its labels and owner reference) but
/// `keep` does not name.
async fn delete_unneeded<K>(
    client: &Client,
    namespace: &str,
    cluster: &ValidatedCluster,
    keep: &[String],
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + DeserializeOwned,
{
    let kind = match K::kind(&()) {
        std::borrow::Cow::Borrowed(kind) => kind,
        std::borrow::Cow::Owned(_) => "object",
    };
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let owned = api
        .list(&ListParams::default().labels(&selector_string(cluster)))
        .await
        .map_err(|source| Error::List {
            kind,
            namespace: namespace.to_string(),
            name: cluster.name.clone(),
            source,
        })?;
    for object in owned.items {
        let name = object.name_any();
        let ours = object
            .owner_references()
            .iter()
            .any(|owner| owner.uid == cluster.owner.uid);
        if ours && !keep.contains(&name) {
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {
                    tracing::info!(%namespace, %kind, %name, "deleted an object no broker or listener needs")
                }
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(source) => {
                    return Err(Error::Delete {
                        kind,
                        namespace: namespace.to_string(),
                        name,
                        source,
                    })
                }
            }
        }
    }
    Ok(())
}

/// The first address a load balancer controller wrote into a Service's status: its IP, or
/// its host name when it gives only that.
fn load_balancer_address(service: &Service) -> Option<String> {
    let ingress = service
        .status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .first()?;
    ingress
        .ip
        .clone()
        .filter(|ip| !ip.is_empty())
        .or_else(|| ingress.hostname.clone().filter(|h| !h.is_empty()))
}

/// Where clients of each external listener bootstrap from: for `nodeport`, the node of a
/// ready broker pod at the bootstrap Service's node port; for `loadbalancer`, the bootstrap
/// Service's load balancer.
fn listener_statuses(
    cluster: &ValidatedCluster,
    bootstraps: &BTreeMap<String, Bootstrap>,
    pods: &[Pod],
) -> Vec<ListenerStatus> {
    let node = pods
        .iter()
        .filter(|pod| {
            pod.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .find_map(|pod| pod.status.as_ref()?.host_ip.clone());
    cluster
        .external_listeners()
        .map(|listener| {
            let (bootstrap, bootstrap_node_port) = match bootstraps.get(&listener.name) {
                Some(Bootstrap::NodePort(port)) => (
                    node.as_ref().map(|node| format!("{node}:{port}")),
                    Some(*port),
                ),
                Some(Bootstrap::Address(address)) => (Some(address.clone()), None),
                None => (None, None),
            };
            ListenerStatus {
                name: listener.name.clone(),
                bootstrap,
                bootstrap_node_port,
            }
        })
        .collect()
}

pub(crate) async fn apply_one<K>(client: &Client, namespace: &str, object: &K) -> Result<K, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + Serialize
        + DeserializeOwned,
{
    let kind = match K::kind(&()) {
        std::borrow::Cow::Borrowed(kind) => kind,
        std::borrow::Cow::Owned(_) => "object",
    };
    let name = object.meta().name.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let failed = |source| Error::Apply {
        kind,
        namespace: namespace.to_string(),
        name: name.clone(),
        source,
    };
    if let Some(existing) = api.get_opt(&name).await.map_err(failed)? {
        if let Some(owner) = foreign_owner(existing.meta(), object.meta()) {
            return Err(Error::NotOwned {
                kind,
                namespace: namespace.to_string(),
                name,
                owner,
            });
        }
    }
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .map_err(failed)
}

/// Who holds an object the operator is about to apply, when it is not this cluster: another
/// controller, or nobody with an object the operator did not make (its labels differ). An
/// orphan the operator made (the cluster deleted with `--cascade=orphan` and applied again)
/// is taken back.
fn foreign_owner(existing: &ObjectMeta, wanted: &ObjectMeta) -> Option<String> {
    let controller = |meta: &ObjectMeta| {
        meta.owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true))
            .cloned()
    };
    let ours = controller(wanted)?;
    match controller(existing) {
        Some(theirs) if theirs.uid == ours.uid => None,
        Some(theirs) => Some(format!(
            "it is controlled by {} {}",
            theirs.kind, theirs.name
        )),
        None => {
            let label = |meta: &ObjectMeta, key: &str| {
                meta.labels.as_ref().and_then(|l| l.get(key)).cloned()
            };
            let made_by_us = ["app.kubernetes.io/managed-by", "app.kubernetes.io/instance"]
                .iter()
                .all(|key| {
                    label(existing, key).is_some() && label(existing, key) == label(wanted, key)
                });
            (!made_by_us).then(|| "it was not made by the operator for this cluster".to_string())
        }
    }
}

/// Adds [`FINALIZER`] unless the cluster has it.
async fn add_finalizer(clusters: &Api<KafkaCluster>, cluster: &KafkaCluster) -> Result<(), Error> {
    let current = cluster.metadata.finalizers.clone().unwrap_or_default();
    if current.iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let mut wanted = current;
    wanted.push(FINALIZER.to_string());
    patch_finalizers(clusters, cluster, wanted).await
}

/// Deletes the brokers' node-reading ClusterRoleBinding, then removes [`FINALIZER`]; nothing
/// when the cluster does not carry it.
async fn release_node_reader(
    ctx: &Context,
    clusters: &Api<KafkaCluster>,
    cluster: &KafkaCluster,
) -> Result<(), Error> {
    let current = cluster.metadata.finalizers.clone().unwrap_or_default();
    if !current.iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let binding = node_reader_binding_name(
        cluster.metadata.namespace.as_deref().unwrap_or_default(),
        &cluster.name_any(),
    );
    match Api::<ClusterRoleBinding>::all(ctx.client.clone())
        .delete(&binding, &DeleteParams::default())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(source) => return Err(Error::DeleteBinding { binding, source }),
    }
    let wanted = current.into_iter().filter(|f| f != FINALIZER).collect();
    patch_finalizers(clusters, cluster, wanted).await
}

/// Sets the finalizer list, on the condition that the resource is still the version read
/// (a merge patch carrying `resourceVersion` fails with a conflict otherwise, and the
/// reconciliation is retried), so another controller's concurrent change is never lost.
async fn patch_finalizers(
    clusters: &Api<KafkaCluster>,
    cluster: &KafkaCluster,
    finalizers: Vec<String>,
) -> Result<(), Error> {
    let patch = serde_json::json!({
        "metadata": {
            "resourceVersion": cluster.metadata.resource_version,
            "finalizers": finalizers,
        }
    });
    clusters
        .patch(
            &cluster.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|source| Error::Finalizer {
            namespace: cluster.metadata.namespace.clone().unwrap_or_default(),
            name: cluster.name_any(),
            source,
        })?;
    Ok(())
}

/// The server-side apply patch of `status`. Absent fields are left out, never written as
/// null: the operator owns `.status` whole, so a field it applied before and omits now (an
/// operation that ended, figures that cannot be read) is removed by the API server.
fn status_patch(status: &KafkaClusterStatus) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": KafkaCluster::api_version(&()),
        "kind": KafkaCluster::kind(&()),
        "status": status,
    })
}

/// Writes the status with server-side apply: the operator owns `.status` whole.
pub async fn write_status(
    clusters: &Api<KafkaCluster>,
    name: &str,
    status: &KafkaClusterStatus,
) -> Result<(), kube::Error> {
    let patch = status_patch(status);
    clusters
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map(|_| ())
}

/// Kubernetes events for what changed: becoming ready, losing readiness, an invalid spec.
async fn publish_transitions(
    ctx: &Context,
    cluster: &KafkaCluster,
    previous: Option<&KafkaClusterStatus>,
    current: &KafkaClusterStatus,
) {
    let before = previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let degraded_of =
        |conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]| {
            conditions
                .iter()
                .find(|c| c.type_ == DEGRADED && c.status == "True")
                .map(|c| (c.reason.clone(), c.message.clone()))
        };
    let mut events = Vec::new();
    if let Some((reason, problems)) = degraded_of(&current.conditions) {
        if degraded_of(before).map(|(_, m)| m) != Some(problems.clone()) {
            events.push((EventType::Warning, reason, "Validate", problems));
        }
    }
    let was_ready = conditions::is_true(before, READY);
    let is_ready = conditions::is_true(&current.conditions, READY);
    if is_ready && !was_ready {
        events.push((
            EventType::Normal,
            "Ready".to_string(),
            "Reconcile",
            format!("{} brokers ready", current.ready_brokers),
        ));
    } else if was_ready && !is_ready {
        let why = current
            .conditions
            .iter()
            .find(|c| c.type_ == READY)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        events.push((EventType::Warning, "NotReady".to_string(), "Reconcile", why));
    }
    let reference = cluster.object_ref(&());
    for (type_, reason, action, note) in events {
        ctx.publish(&reference, type_, &reason, action, &note).await;
    }
}

/// The objects the operator would create for `cluster`, as multi-document YAML: for checking
/// the builders' output against the Kubernetes schemas without a cluster. A manifest without
/// namespace or uid gets placeholders.
pub fn manifests(
    mut cluster: KafkaCluster,
    settings: &validate::OperatorSettings,
) -> Result<String, String> {
    cluster
        .metadata
        .namespace
        .get_or_insert_with(|| "default".to_string());
    cluster
        .metadata
        .uid
        .get_or_insert_with(|| "00000000-0000-4000-8000-000000000000".to_string());
    let valid = validate(&cluster, settings).map_err(|invalid| invalid.to_string())?;
    let r = build(&valid);
    let mut documents = Vec::new();
    if let Some(account) = &r.service_account {
        documents.push(serde_yaml::to_string(account));
    }
    if let Some(binding) = &r.node_reader_binding {
        documents.push(serde_yaml::to_string(binding));
    }
    documents.extend([
        serde_yaml::to_string(&r.config_map),
        serde_yaml::to_string(&r.headless_service),
        serde_yaml::to_string(&r.bootstrap_service),
        serde_yaml::to_string(&r.pdb),
        serde_yaml::to_string(&r.stateful_set),
    ]);
    if let Some((controllers, budget)) = &r.controllers {
        documents.push(serde_yaml::to_string(budget));
        documents.push(serde_yaml::to_string(controllers));
    }
    documents.extend(r.network_policy.iter().map(serde_yaml::to_string));
    documents.extend(r.external_services.iter().map(serde_yaml::to_string));
    documents.extend(r.ingresses.iter().map(serde_yaml::to_string));
    let mut out = String::new();
    for document in documents {
        out.push_str("---\n");
        out.push_str(&document.map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// Runs the KafkaCluster controller over `namespace` (all namespaces when `None`) until
/// `shutdown` completes.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let metrics = ctx.metrics.clone();
    let clusters: Api<KafkaCluster> = scoped(&client, namespace.as_deref());
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=oxbow-operator");
    let brokers = watcher::Config::default()
        .labels("app.kubernetes.io/name=oxbow,app.kubernetes.io/component=broker");
    Controller::new(clusters, watcher::Config::default())
        // A broker pod annotated for a restart wakes its cluster.
        .watches(
            scoped::<Pod>(&client, namespace.as_deref()),
            brokers,
            |pod| {
                let cluster = pod.labels().get("app.kubernetes.io/instance").cloned()?;
                restart_requested(&pod.metadata)
                    .then(|| ObjectRef::new(&cluster).within(&pod.namespace().unwrap_or_default()))
            },
        )
        .owns(
            scoped::<StatefulSet>(&client, namespace.as_deref()),
            owned.clone(),
        )
        .owns(
            scoped::<ConfigMap>(&client, namespace.as_deref()),
            owned.clone(),
        )
        .owns(
            scoped::<Service>(&client, namespace.as_deref()),
            owned.clone(),
        )
        .owns(
            scoped::<PodDisruptionBudget>(&client, namespace.as_deref()),
            owned.clone(),
        )
        // The CAs' and the brokers' certificates: a renewal asked for by annotation, or a
        // Secret deleted, is acted on at once.
        .owns(
            scoped::<Secret>(&client, namespace.as_deref()),
            owned.clone(),
        )
        .owns(
            scoped::<NetworkPolicy>(&client, namespace.as_deref()),
            owned,
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            let metrics = metrics.clone();
            async move {
                match result {
                    Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                    // error_policy has logged the reconciler's own failures.
                    Err(kube::runtime::controller::Error::ReconcilerFailed(error, object)) => {
                        tracing::debug!(%error, %object, "KafkaCluster reconciliation failed")
                    }
                    // A cluster gone from the API (deleted, its finalizers done): its series go.
                    Err(kube::runtime::controller::Error::ObjectNotFound(object)) => {
                        metrics.forget_cluster(
                            object.namespace.as_deref().unwrap_or_default(),
                            &object.name,
                        );
                    }
                    Err(error) => tracing::warn!(%error, "KafkaCluster controller"),
                }
            }
        })
        .await;
}

/// An API over one namespace, or over all of them.
pub fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

#[cfg(test)]
mod tests {
    //! The reconciler against an in-memory Kubernetes API.

    use std::collections::BTreeMap;

    use k8s_openapi::api::apps::v1::StatefulSetStatus;
    use k8s_openapi::api::core::v1::ServiceAccount;
    use kube::api::{Patch, PatchParams, PostParams};

    use super::*;
    use crate::balance::{BrokerInfo, ClusterState, PartitionInfo};
    use crate::conditions::{is_true, reason, RECONCILING};
    use crate::test_support::{
        cluster, event_reasons, fake_context, fake_context_with_cluster, MemoryCluster,
        MINIMAL_CLUSTER,
    };

    async fn fetch(ctx: &Context) -> Arc<KafkaCluster> {
        let api: Api<KafkaCluster> = Api::namespaced(ctx.client.clone(), "streaming");
        Arc::new(api.get("main").await.expect("cluster"))
    }

    /// Partitions of topic `orders` with `rf` replicas round-robin over `hosts`, on a cluster
    /// whose registered brokers are `brokers`.
    fn kafka_state(brokers: &[i32], hosts: &[i32], partitions: i32, rf: usize) -> ClusterState {
        ClusterState {
            brokers: brokers
                .iter()
                .map(|id| BrokerInfo {
                    id: *id,
                    rack: None,
                })
                .collect(),
            partitions: (0..partitions)
                .map(|p| {
                    let first = usize::try_from(p).expect("index");
                    let replicas: Vec<i32> =
                        (0..rf).map(|i| hosts[(first + i) % hosts.len()]).collect();
                    PartitionInfo {
                        topic: "orders".to_string(),
                        partition: p,
                        leader: replicas[0],
                        isr: replicas.clone(),
                        replicas,
                    }
                })
                .collect(),
        }
    }

    async fn with_cluster_and_kafka(yaml: &str) -> (Arc<Context>, Arc<MemoryCluster>) {
        let builder = kube_fake_client::ClientBuilder::new().with_object(cluster(yaml));
        let (ctx, _, kafka) = fake_context_with_cluster(builder).await;
        (ctx, kafka)
    }

    async fn set_replicas(ctx: &Context, replicas: i32) {
        let clusters: Api<KafkaCluster> = Api::namespaced(ctx.client.clone(), "streaming");
        clusters
            .patch(
                "main",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"replicas": replicas}})),
            )
            .await
            .expect("spec change");
    }

    async fn sts_replicas(ctx: &Context) -> Option<i32> {
        statefulsets(ctx)
            .get("main")
            .await
            .expect("sts")
            .spec
            .and_then(|s| s.replicas)
    }

    #[test]
    fn objects_of_another_owner_are_not_taken_over_and_orphans_of_this_cluster_are() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
        let reference = |kind: &str, name: &str, uid: &str| OwnerReference {
            api_version: "v1".to_string(),
            kind: kind.to_string(),
            name: name.to_string(),
            uid: uid.to_string(),
            controller: Some(true),
            block_owner_deletion: None,
        };
        let labels = |instance: &str| {
            Some(BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    "oxbow-operator".to_string(),
                ),
                (
                    "app.kubernetes.io/instance".to_string(),
                    instance.to_string(),
                ),
            ]))
        };
        let wanted = ObjectMeta {
            owner_references: Some(vec![reference("KafkaCluster", "main", "uid-1")]),
            labels: labels("main"),
            ..ObjectMeta::default()
        };
        assert_eq!(foreign_owner(&wanted.clone(), &wanted), None);
        let orphan = ObjectMeta {
            labels: labels("main"),
            ..ObjectMeta::default()
        };
        assert_eq!(foreign_owner(&orphan, &wanted), None, "adopted");
        let someone_elses = ObjectMeta {
            owner_references: Some(vec![reference("Deployment", "web", "uid-2")]),
            ..ObjectMeta::default()
        };
        assert_eq!(
            foreign_owner(&someone_elses, &wanted).as_deref(),
            Some("it is controlled by Deployment web")
        );
        let made_by_hand = ObjectMeta::default();
        assert!(foreign_owner(&made_by_hand, &wanted).is_some());
        let of_another_cluster = ObjectMeta {
            labels: labels("other"),
            ..ObjectMeta::default()
        };
        assert!(foreign_owner(&of_another_cluster, &wanted).is_some());
        let unowned_object = ObjectMeta::default();
        assert_eq!(foreign_owner(&made_by_hand, &unowned_object), None);
    }
    #[tokio::test]
    async fn a_scale_up_grows_waits_for_the_new_brokers_rebalances_and_then_is_ready() {
        let (ctx, kafka) = with_cluster_and_kafka(MINIMAL_CLUSTER).await;
        reconcile(fetch(&ctx).await, Arc::clone(&ctx))
            .await
            .expect("created");
        brokers_become_ready(&ctx, 3).await;
        kafka.set_state(kafka_state(&[0, 1, 2], &[0, 1, 2], 10, 2));
        reconcile(fetch(&ctx).await, Arc::clone(&ctx))
            .await
            .expect("ready");
        assert!(is_true(
            &fetch(&ctx).await.status.clone().expect("status").conditions,
            READY
        ));

        set_replicas(&ctx, 5).await;
        let action = reconcile(fetch(&ctx).await, Arc::clone(&ctx))
            .await
            .expect("scaling");
        assert_eq!(action, Action::requeue(REASSIGNMENT_POLL));
        assert_eq!(sts_replicas(&ctx).await, Some(5), "grown at once");
        let status = fetch(&ctx).await.status.clone().expect("status");
        assert!(!is_true(&status.conditions, READY));
        assert_eq!(
            reason(&status.conditions, RECONCILING),
            Some("WaitingForBrokers")
        );
        assert!(!kafka.calls().iter().any(|c| c.starts_with("reassign")));

        brokers_become_ready(&ctx, 5).await;
        kafka.set_state(ClusterState {
            brokers: kafka_state(&[0, 1, 2, 3, 4], &[0], 0, 1).brokers,
            ..kafka.state()
        });
        let mut reasons = Vec::new();
        for _ in 0..30 {
            reconcile(fetch(&ctx).await, Arc::clone(&ctx))
                .await
                .expect("round");
            let status = fetch(&ctx).await.status.clone().expect("status");
            reasons.extend(reason(&status.conditions, RECONCILING).map(str::to_string));
            if status.scaling.is_none() {
                break;
            }
            assert!(status
                .scaling
                .is_some_and(|s| s.reassignments_in_flight <= MAX_MOVES as i32));
        }
        let status = fetch(&ctx).await.status.clone().expect("status");
        assert_eq!(status.scaling, None, "{reasons:?}");
        assert!(reasons.contains(&"Rebalancing".to_string()), "{reasons:?}");
        // The StatefulSet controller catches up with the last apply.
        brokers_become_ready(&ctx, 5).await;
        reconcile(fetch(&ctx).await, Arc::clone(&ctx))
            .await
            .expect("settled");
        let status = fetch(&ctx).await.status.clone().expect("status");
        assert!(
            is_true(&status.conditions, READY),
            "{:?}",
            status.conditions
        );
        let balance = status.balance.clone().expect("balance figures");
        assert!(balance.replica_imbalance <= 1, "{balance:?}");
        assert_eq!(balance.reassignments_in_flight, 0);
        assert!(status
            .brokers
            .iter()
            .all(|b| b.replicas.is_some_and(|n| n > 0)));
        let text = ctx.metrics.render();
        assert!(text.contains("oxbow_operator_reassignments_submitted_total{name=\"main\",namespace=\"streaming\"}"), "{text}");
        assert!(text.contains("oxbow_operator_broker_replicas{broker=\"4\",name=\"main\",namespace=\"streaming\"}"), "{text}");
        let spread = kafka.state().distribution(None);
        assert!(spread.replica_spread() <= 1, "{spread:?}");
        assert!(spread.leader_spread() <= 1, "{spread:?}");
        assert!(spread.replicas[&3] > 0 && spread.replicas[&4] > 0);
        let events = event_reasons(&ctx.client, "streaming", "main").await;
        assert!(events.contains(&"Reassigning".to_string()), "{events:?}");
    }

    #[tokio::test]
    async fn a_scale_down_drains_the_leaving_brokers_before_the_statefulset_shrinks() {
        let (ctx, kafka) =
            with_cluster_and_kafka(&format!("{MINIMAL_CLUSTER}\n  replicas: 5")).await;
        reconcile(fetch(&ctx).await, Arc::clone(&ctx))
            .await
            .expect("created");
        brokers_become_ready(&ctx, 5).await;
        kafka.set_state(kafka_state(&[0, 1, 2, 3, 4], &[0, 1, 2, 3, 4], 10, 2));

        set_replicas(&ctx, 3).await;
        let mut shrunk_while_holding = false;
        for _ in 0..30 {
            reconcile(fetch(&ctx).await, Arc::clone(&ctx))
                .await
                .expect("round");
            let replicas = sts_replicas(&ctx).await;
            let held = kafka.state().distribution(None);
            let holding = held.replicas.get(&3).copied().unwrap_or(0)
                + held.replicas.get(&4).copied().unwrap_or(0)
                > 0;
            shrunk_while_holding |= replicas == Some(3) && holding;
            if replicas == Some(3) {
                break;
            }
            let status = fetch(&ctx).await.status.clone().expect("status");
            assert_eq!(reason(&status.conditions, RECONCILING), Some("Draining"));
            assert_eq!(status.brokers.len(), 5);
        }
        assert!(
            !shrunk_while_holding,
            "a broker went while it held replicas"
        );
        assert_eq!(sts_replicas(&ctx).await, Some(3));
        let held = kafka.state().distribution(None);
        assert_eq!(held.replicas.get(&3), Some(&0));
        assert_eq!(held.replicas.get(&4), Some(&0));
        assert_eq!(
            kafka
                .state()
                .partitions
                .iter()
                .map(|p| p.replicas.len())
                .sum::<usize>(),
            20,
            "every replica kept"
        );
        let status = fetch(&ctx).await.status.clone().expect("status");
        assert_eq!(status.scaling, None);
    }

    #[tokio::test]
    async fn a_scale_down_below_a_topics_replication_factor_is_refused_with_a_clear_status() {
        let (ctx, kafka) =
            with_cluster_and_kafka(&format!("{MINIMAL_CLUSTER}\n  replicas: 5")).await;
        reconcile(fetch(&ctx).await, Arc::clone(&ctx))
            .await
            .expect("created");
        brokers_become_ready(&ctx, 5).await;
        kafka.set_state(kafka_state(&[0, 1, 2, 3, 4], &[0, 1, 2, 3, 4], 5, 4));
        set_replicas(&ctx, 3).await;
        reconcile(fetch(&ctx).await, Arc::clone(&ctx))
            .await
            .expect("reconciled");
        assert_eq!(sts_replicas(&ctx).await, Some(5), "no broker removed");
        assert!(!kafka.calls().iter().any(|c| c.starts_with("reassign")));
        let status = fetch(&ctx).await.status.clone().expect("status");
        assert!(is_true(&status.conditions, DEGRADED));
        assert_eq!(reason(&status.conditions, DEGRADED), Some("ScalingRefused"));
        let message = &status
            .conditions
            .iter()
            .find(|c| c.type_ == DEGRADED)
            .expect("degraded")
            .message;
        assert!(
            message.contains("topic `orders` has replication factor 4"),
            "{message}"
        );
        let events = event_reasons(&ctx.client, "streaming", "main").await;
        assert!(events.contains(&"ScalingRefused".to_string()), "{events:?}");
    }

    /// A ready broker pod created from StatefulSet revision `revision`.
    /// The minimal cluster created, its three pods on revision `rev-1` and ready, every
    /// partition fully replicated.
    async fn three_brokers_on_rev_1() -> (Arc<Context>, Arc<MemoryCluster>) {
        let (ctx, kafka) = with_cluster_and_kafka(MINIMAL_CLUSTER).await;
        reconcile(fetch(&ctx).await, Arc::clone(&ctx))
            .await
            .expect("created");
        for ordinal in 0..3 {
            pod_at(&ctx, ordinal, "rev-1").await;
        }
        statefulset_reports(&ctx, 3, 3, "rev-1").await;
        kafka.set_state(kafka_state(&[0, 1, 2], &[0, 1, 2], 6, 2));
        (ctx, kafka)
    }

    async fn pod_at(ctx: &Context, ordinal: i32, revision: &str) {
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), "streaming");
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": format!("main-{ordinal}"),
                "labels": {
                    "app.kubernetes.io/name": "oxbow",
                    "app.kubernetes.io/instance": "main",
                    "app.kubernetes.io/component": "broker",
                    "controller-revision-hash": revision,
                },
            },
            // As the StatefulSet controller makes it: a volume per claim template.
            "spec": {
                "containers": [],
                "volumes": [{
                    "name": "data",
                    "persistentVolumeClaim": {"claimName": format!("data-main-{ordinal}")},
                }],
            },
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        }))
        .expect("pod");
        pods.create(&PostParams::default(), &pod)
            .await
            .expect("pod");
    }

    /// What the StatefulSet controller reports: `updated` of `count` pods on `revision`.
    async fn statefulset_reports(ctx: &Context, count: i32, updated: i32, revision: &str) {
        let sts = statefulsets(ctx).get("main").await.expect("sts");
        statefulsets(ctx)
            .patch_status(
                "main",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "status": {
                    "replicas": count,
                    "readyReplicas": count,
                    "updatedReplicas": updated,
                    "updateRevision": revision,
                    "observedGeneration": sts.metadata.generation.map(|g| g + 1),
                }})),
            )
            .await
            .expect("sts status");
    }

    async fn pod_names(ctx: &Context) -> Vec<String> {
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), "streaming");
        pods.list(&ListParams::default())
            .await
            .expect("pods")
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    #[tokio::test]
    async fn a_config_change_restarts_one_broker_at_a_time_waiting_for_full_replication() {
        let (ctx, kafka) = three_brokers_on_rev_1().await;
        let action = reconcile(fetch(&ctx).await, Arc::clone(&ctx))
            .await
            .expect("steady");
        assert_eq!(pod_names(&ctx).await.len(), 3, "nothing to restart");
        assert_eq!(
            action,
            Action::requeue(crate::cluster::validate::OperatorSettings::default().resync)
        );

        // A config change: the StatefulSet controller makes a new revision, restarts nothing.
        let clusters: Api<KafkaCluster> = Api::namespaced(ctx.client.clone(), "streaming");
        clusters
            .patch(
                "main",
                &PatchParams::default(),
                &Patch::Merge(
                    serde_json::json!({"spec": {"config": {"log.retention.hours": "24"}}}),
                ),
            )
            .await
            .expect("spec change");
        reconcile(fetch(&ctx).await, Arc::clone(&ctx))
            .await
            .expect("applied");
        statefulset_reports(&ctx, 3, 0, "rev-2").await;
        let action = reconcile(fetch(&ctx).await, Arc::clone(&ctx))
            .await
            .expect("first restart");
        assert_eq!(action, Action::requeue(REASSIGNMENT_POLL));
        assert_eq!(
            pod_names(&ctx).await,
            ["main-0", "main-1"],
            "the highest ordinal first"
        );
        let status = fetch(&ctx).await.status.clone().expect("status");
        assert_eq!(
            reason(&status.conditions, RECONCILING),
            Some("RollingRestart")
        );
        assert!(!is_true(&status.conditions, READY));

        // Until its pod is back and ready, nothing else restarts.
        reconcile(fetch(&ctx).await, Arc::clone(&ctx))
            .await
            .expect("waiting");
        assert_eq!(pod_names(&ctx).await.len(), 2);
        pod_at(&ctx, 2, "rev-2").await;
        statefulset_reports(&ctx, 3, 1, "rev-2").await;
        // Back, but its replicas are catching up.
        let mut lagging = kafka_state(&[0, 1, 2], &[0, 1, 2], 6, 2);
        lagging.partitions[1].isr = vec![1];
        kafka.set_state(lagging);
        reconcile(fetch(&ctx).await, Arc::clone(&ctx))
            .await
            .expect("waiting for replication");
        assert_eq!(
            pod_names(&ctx).await.len(),
            3,
            "no restart while under-replicated"
        );
        let status = fetch(&ctx).await.status.clone().expect("status");
        let message = &status.conditions[1].message;
        assert!(
            message.contains("1 partitions are under-replicated"),
            "{message}"
        );

        // Caught up: the next broker goes.
        kafka.set_state(kafka_state(&[0, 1, 2], &[0, 1, 2], 6, 2));
        reconcile(fetch(&ctx).await, Arc::clone(&ctx))
            .await
            .expect("second restart");
        assert_eq!(pod_names(&ctx).await, ["main-0", "main-2"]);
        let events = event_reasons(&ctx.client, "streaming", "main").await;
        // Repeats of an event are one Event object with a count (kube's recorder).
        assert!(
            events.contains(&"RestartingBroker".to_string()),
            "{events:?}"
        );
    }

    #[tokio::test]
    async fn leaders_go_back_to_their_preferred_replicas_once_every_broker_is_up() {
        let (ctx, kafka) = with_cluster_and_kafka(MINIMAL_CLUSTER).await;
        reconcile(fetch(&ctx).await, Arc::clone(&ctx))
            .await
            .expect("created");
        for ordinal in 0..3 {
            pod_at(&ctx, ordinal, "rev-1").await;
        }
        statefulset_reports(&ctx, 3, 3, "rev-1").await;
        let mut moved = kafka_state(&[0, 1, 2], &[0, 1, 2], 6, 2);
        for p in &mut moved.partitions {
            p.leader = p.replicas[1];
        }
        kafka.set_state(moved);
        reconcile(fetch(&ctx).await, Arc::clone(&ctx))
            .await
            .expect("reconciled");
        assert!(
            kafka.calls().contains(&"elect 6".to_string()),
            "{:?}",
            kafka.calls()
        );
        assert!(kafka
            .state()
            .partitions
            .iter()
            .all(|p| p.leader == p.replicas[0]));
    }

    fn nulls(value: &serde_json::Value, path: &str, found: &mut Vec<String>) {
        match value {
            serde_json::Value::Null => found.push(path.to_string()),
            serde_json::Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    nulls(item, &format!("{path}[{i}]"), found);
                }
            }
            serde_json::Value::Object(fields) => {
                for (key, field) in fields {
                    nulls(field, &format!("{path}.{key}"), found);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn the_status_patch_writes_no_null_field() {
        let status = KafkaClusterStatus {
            observed_generation: Some(3),
            replicas: 3,
            ready_brokers: 3,
            bootstrap: Some("main-bootstrap.streaming.svc:9092".to_string()),
            brokers: vec![crate::crd::BrokerStatus {
                id: 0,
                pod: "main-0".to_string(),
                ready: true,
                controller: true,
                replicas: None,
                leaders: None,
            }],
            ..KafkaClusterStatus::default()
        };
        let mut found = Vec::new();
        nulls(&status_patch(&status), "", &mut found);
        assert!(found.is_empty(), "null fields: {found:?}");
    }

    #[test]
    fn a_refused_change_of_size_builds_every_object_for_the_size_kept() {
        use crate::cluster::validate::OperatorSettings;
        let spec = |replicas: i32| {
            validate(
                &cluster(&format!("{MINIMAL_CLUSTER}\n  replicas: {replicas}")),
                &OperatorSettings::default(),
            )
            .expect("valid")
        };
        let kafka = crate::test_support::observed(
            &[0, 1, 2],
            crate::test_support::round_robin("orders", 3, 1, &[0, 1, 2]),
        );
        // 3 → 2 would change the quorum from three voters to one.
        let decision = decide(ScalingInput {
            wanted: 2,
            running: Some(3),
            operation: None,
            kafka: Some(&kafka),
            max_moves: MAX_MOVES,
            quorum_in_brokers: true,
        });
        assert!(decision.refused.is_some(), "{decision:?}");
        let kept = kept_size(spec(2), &decision);
        assert_eq!(
            build_running(&kept, decision.statefulset_replicas),
            build(&spec(3)),
            "the refused spec changes no object"
        );
        // An accepted change of size builds from the spec.
        let steady = ScalingDecision::steady(3);
        assert_eq!(kept_size(spec(4), &steady).replicas, 4);
    }

    async fn with_cluster(yaml: &str) -> Arc<Context> {
        let builder = kube_fake_client::ClientBuilder::new().with_object(cluster(yaml));
        fake_context(builder).await.0
    }

    fn statefulsets(ctx: &Context) -> Api<StatefulSet> {
        Api::namespaced(ctx.client.clone(), "streaming")
    }

    /// Makes the StatefulSet report all its brokers ready, and creates their ready pods.
    async fn brokers_become_ready(ctx: &Context, count: i32) {
        let sts = statefulsets(ctx).get("main").await.expect("sts");
        let status = StatefulSetStatus {
            replicas: count,
            ready_replicas: Some(count),
            updated_replicas: Some(count),
            // The in-memory API bumps the generation on every write (the real one only when
            // the spec changes), so the next reconcile's apply will make it one higher.
            observed_generation: sts.metadata.generation.map(|g| g + 1),
            ..StatefulSetStatus::default()
        };
        statefulsets(ctx)
            .patch_status(
                "main",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "status": status })),
            )
            .await
            .expect("sts status");
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), "streaming");
        for ordinal in 0..count {
            if pods
                .get_opt(&format!("main-{ordinal}"))
                .await
                .expect("pod")
                .is_some()
            {
                continue;
            }
            let pod: Pod = serde_json::from_value(serde_json::json!({
                "metadata": {
                    "name": format!("main-{ordinal}"),
                    "labels": {
                        "app.kubernetes.io/name": "oxbow",
                        "app.kubernetes.io/instance": "main",
                        "app.kubernetes.io/component": "broker",
                    },
                },
                "status": {"conditions": [{"type": "Ready", "status": "True"}]},
            }))
            .expect("pod");
            pods.create(&PostParams::default(), &pod)
                .await
                .expect("pod");
        }
    }

    #[tokio::test]
    async fn a_new_cluster_gets_every_child_object_and_reports_progress() {
        let ctx = with_cluster(MINIMAL_CLUSTER).await;
        let action = reconcile(fetch(&ctx).await, Arc::clone(&ctx))
            .await
            .expect("reconciled");
        assert_eq!(action, Action::requeue(PROGRESS_CHECK));

        let ns = |c: &Context| c.client.clone();
        let config: Api<ConfigMap> = Api::namespaced(ns(&ctx), "streaming");
        let data = config.get("main-config").await.expect("config map").data;
        assert_eq!(data.map(|d| d.len()), Some(3));
        let services: Api<Service> = Api::namespaced(ns(&ctx), "streaming");
        services
            .get("main-brokers")
            .await
            .expect("headless service");
        services
            .get("main-bootstrap")
            .await
            .expect("bootstrap service");
        let pdbs: Api<PodDisruptionBudget> = Api::namespaced(ns(&ctx), "streaming");
        pdbs.get("main").await.expect("pdb");
        let sts = statefulsets(&ctx).get("main").await.expect("statefulset");
        assert_eq!(sts.spec.and_then(|s| s.replicas), Some(3));
        let owner = &sts.metadata.owner_references.expect("owner")[0];
        assert_eq!(owner.name, "main");

        let status = fetch(&ctx).await.status.clone().expect("status");
        assert_eq!(status.observed_generation, Some(4));
        assert!(!is_true(&status.conditions, READY));
        assert!(is_true(&status.conditions, RECONCILING));
        assert_eq!(
            status.bootstrap.as_deref(),
            Some("main-bootstrap.streaming.svc:9092")
        );
        assert_eq!(status.ready_brokers, 0);
    }

    fn has_finalizer(cluster: &KafkaCluster) -> bool {
        cluster
            .metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| f.iter().any(|f| f == FINALIZER))
    }

    #[tokio::test]
    async fn a_rack_cluster_gets_its_node_reader_binding_and_releases_it_when_rack_goes_or_the_cluster_is_deleted(
    ) {
        let ctx = with_cluster(&format!(
            "{MINIMAL_CLUSTER}\n  rack:\n    topologyKey: topology.kubernetes.io/zone"
        ))
        .await;
        reconcile(fetch(&ctx).await, Arc::clone(&ctx))
            .await
            .expect("reconciled");
        assert!(has_finalizer(&*fetch(&ctx).await), "finalizer added");
        let accounts: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), "streaming");
        let account = accounts.get("main-broker").await.expect("service account");
        assert_eq!(
            account.metadata.owner_references.expect("owner")[0].name,
            "main"
        );
        let bindings: Api<ClusterRoleBinding> = Api::all(ctx.client.clone());
        let binding = bindings
            .get("oxbow:streaming:main:broker")
            .await
            .expect("binding");
        assert_eq!(binding.role_ref.name, ctx.settings.broker_cluster_role);
        let sts = statefulsets(&ctx).get("main").await.expect("statefulset");
        let pod = sts.spec.and_then(|s| s.template.spec).expect("pod");
        assert_eq!(pod.service_account_name.as_deref(), Some("main-broker"));

        // A second pass keeps one finalizer.
        reconcile(fetch(&ctx).await, Arc::clone(&ctx))
            .await
            .expect("again");
        let finalizers = fetch(&ctx).await.metadata.finalizers.clone();
        assert_eq!(finalizers, Some(vec![FINALIZER.to_string()]));

        // Without spec.rack, the binding goes and so does the finalizer.
        let clusters: Api<KafkaCluster> = Api::namespaced(ctx.client.clone(), "streaming");
        clusters
            .patch(
                "main",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"rack": null}})),
            )
            .await
            .expect("rack removed");
        reconcile(fetch(&ctx).await, Arc::clone(&ctx))
            .await
            .expect("released");
        assert!(!has_finalizer(&*fetch(&ctx).await));
        assert!(bindings
            .get_opt("oxbow:streaming:main:broker")
            .await
            .expect("get")
            .is_none());

        // Back with a rack; then the cluster is deleted: the binding is deleted first.
        clusters
            .patch(
                "main",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({
                    "spec": {"rack": {"topologyKey": "topology.kubernetes.io/zone"}}
                })),
            )
            .await
            .expect("rack again");
        reconcile(fetch(&ctx).await, Arc::clone(&ctx))
            .await
            .expect("bound again");
        assert!(bindings
            .get_opt("oxbow:streaming:main:broker")
            .await
            .expect("get")
            .is_some());
        // The in-memory API deletes at once, finalizers or not: hand the reconciler the
        // resource as the API server shows it after a delete (deletionTimestamp set).
        let mut deleting = (*fetch(&ctx).await).clone();
        assert!(has_finalizer(&deleting), "the finalizer holds the deletion");
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()),
        );
        let deleting = Arc::new(deleting);
        let action = reconcile(deleting, Arc::clone(&ctx))
            .await
            .expect("cleaned up");
        assert_eq!(action, Action::await_change());
        assert!(bindings
            .get_opt("oxbow:streaming:main:broker")
            .await
            .expect("get")
            .is_none());
        let remaining = clusters.get("main").await.expect("still stored");
        assert!(!has_finalizer(&remaining), "the finalizer is released");
    }

    #[tokio::test]
    async fn a_cluster_whose_brokers_are_ready_is_ready_and_says_so_in_an_event() {
        let ctx = with_cluster(MINIMAL_CLUSTER).await;
        reconcile(fetch(&ctx).await, Arc::clone(&ctx))
            .await
            .expect("first pass");
        brokers_become_ready(&ctx, 3).await;
        let action = reconcile(fetch(&ctx).await, Arc::clone(&ctx))
            .await
            .expect("second pass");
        assert_eq!(
            action,
            Action::requeue(crate::cluster::validate::OperatorSettings::default().resync)
        );
        let status = fetch(&ctx).await.status.clone().expect("status");
        assert!(
            is_true(&status.conditions, READY),
            "{:?}",
            status.conditions
        );
        assert_eq!(reason(&status.conditions, RECONCILING), Some("UpToDate"));
        assert_eq!(status.ready_brokers, 3);
        assert!(status.brokers.iter().all(|b| b.ready));
        let events = event_reasons(&ctx.client, "streaming", "main").await;
        assert!(events.contains(&"Ready".to_string()), "{events:?}");
        assert!(ctx.metrics.render().contains(
            "oxbow_operator_resource_ready{controller=\"kafkacluster\",name=\"main\",namespace=\"streaming\"} 1"
        ));
    }

    #[tokio::test]
    async fn a_config_change_updates_the_files_and_the_pod_template_hash() {
        let ctx = with_cluster(MINIMAL_CLUSTER).await;
        reconcile(fetch(&ctx).await, Arc::clone(&ctx))
            .await
            .expect("first pass");
        let hash = |sts: StatefulSet| {
            sts.spec
                .and_then(|s| s.template.metadata)
                .and_then(|m| m.annotations)
                .map(|a| a[build::CONFIG_HASH_ANNOTATION].clone())
        };
        let before = hash(statefulsets(&ctx).get("main").await.expect("sts"));

        let clusters: Api<KafkaCluster> = Api::namespaced(ctx.client.clone(), "streaming");
        clusters
            .patch(
                "main",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({
                    "spec": {"config": {"log.retention.hours": "24"}, "replicas": 4}
                })),
            )
            .await
            .expect("spec change");
        reconcile(fetch(&ctx).await, Arc::clone(&ctx))
            .await
            .expect("second pass");
        let sts = statefulsets(&ctx).get("main").await.expect("sts");
        assert_eq!(sts.spec.as_ref().and_then(|s| s.replicas), Some(4));
        assert_ne!(hash(sts), before, "pods roll");
        let config: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), "streaming");
        let data = config
            .get("main-config")
            .await
            .expect("cm")
            .data
            .expect("data");
        assert_eq!(data.len(), 4);
        assert!(data["main-3.properties"].contains("log.retention.hours=24"));
    }

    #[tokio::test]
    async fn a_storage_change_is_refused_in_the_status_and_other_changes_still_apply() {
        let ctx = with_cluster(MINIMAL_CLUSTER).await;
        reconcile(fetch(&ctx).await, Arc::clone(&ctx))
            .await
            .expect("first pass");
        let clusters: Api<KafkaCluster> = Api::namespaced(ctx.client.clone(), "streaming");
        clusters
            .patch(
                "main",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({
                    "spec": {"storage": {"size": "5Gi"}, "config": {"log.retention.hours": "24"}}
                })),
            )
            .await
            .expect("spec change");
        let changed = fetch(&ctx).await;
        reconcile(Arc::clone(&changed), Arc::clone(&ctx))
            .await
            .expect("a refused storage change is no reconcile error");
        let sts = statefulsets(&ctx).get("main").await.expect("sts");
        let spec = sts.spec.expect("spec");
        let claim = spec.volume_claim_templates.expect("claims")[0]
            .spec
            .clone()
            .expect("claim");
        assert_eq!(
            claim.resources.and_then(|r| r.requests).expect("requests")["storage"].0,
            "10Gi",
            "the immutable claim templates are applied as they are"
        );
        let annotations = spec
            .template
            .metadata
            .and_then(|m| m.annotations)
            .expect("annotations");
        let valid = validate(&changed, &ctx.settings).expect("valid");
        assert_eq!(
            annotations[build::CONFIG_HASH_ANNOTATION],
            build::config_hash(&valid),
            "the config change is applied"
        );
        let status = fetch(&ctx).await.status.clone().expect("status");
        assert_eq!(status.observed_generation, changed.metadata.generation);
        assert!(is_true(&status.conditions, DEGRADED));
        assert_eq!(
            reason(&status.conditions, DEGRADED),
            Some("StorageChangeRefused")
        );
        assert_eq!(
            reason(&status.conditions, READY),
            Some("StorageChangeRefused")
        );
        let degraded = status
            .conditions
            .iter()
            .find(|c| c.type_ == DEGRADED)
            .expect("degraded");
        assert!(
            degraded.message.contains("spec.storage.size is 5Gi"),
            "{}",
            degraded.message
        );
        let events = event_reasons(&ctx.client, "streaming", "main").await;
        assert!(
            events.contains(&"StorageChangeRefused".to_string()),
            "{events:?}"
        );
    }

    /// The claims of the brokers `main-0` to `main-2`, of StorageClass `class`.
    fn claims_of(class: &str) -> Vec<PersistentVolumeClaim> {
        (0..3)
            .map(|ordinal| {
                serde_json::from_value(serde_json::json!({
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {
                        "name": format!("data-main-{ordinal}"),
                        "namespace": "streaming",
                        "labels": {
                            "app.kubernetes.io/name": "oxbow",
                            "app.kubernetes.io/instance": "main",
                            "app.kubernetes.io/component": "broker",
                        },
                    },
                    "spec": {
                        "storageClassName": class,
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "10Gi"}}
                    }
                }))
                .expect("claim")
            })
            .collect()
    }

    fn storage_class(name: &str, expandable: bool) -> StorageClass {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": name},
            "provisioner": "example.com/disks",
            "allowVolumeExpansion": expandable
        }))
        .expect("class")
    }

    /// A cluster whose brokers' claims are of StorageClass `class`, asked for 20Gi volumes.
    async fn grow_to_20_gi(class: &str, expandable: bool) -> Arc<Context> {
        let mut builder = kube_fake_client::ClientBuilder::new()
            .with_object(cluster(MINIMAL_CLUSTER))
            .with_object(storage_class(class, expandable));
        for claim in claims_of(class) {
            builder = builder.with_object(claim);
        }
        let ctx = fake_context(builder).await.0;
        reconcile(fetch(&ctx).await, Arc::clone(&ctx))
            .await
            .expect("first pass");
        let clusters: Api<KafkaCluster> = Api::namespaced(ctx.client.clone(), "streaming");
        clusters
            .patch(
                "main",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"storage": {"size": "20Gi"}}})),
            )
            .await
            .expect("spec change");
        reconcile(fetch(&ctx).await, Arc::clone(&ctx))
            .await
            .expect("second pass");
        ctx
    }

    fn claim_size(claim: &PersistentVolumeClaim) -> String {
        claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .map(|r| r["storage"].0.clone())
            .unwrap_or_default()
    }

    fn template_size(sts: &StatefulSet) -> String {
        sts.spec
            .as_ref()
            .and_then(|s| s.volume_claim_templates.as_ref())
            .and_then(|t| t.first())
            .map(claim_size)
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn larger_volumes_grow_the_claims_and_make_the_statefulset_again() {
        let ctx = grow_to_20_gi("disks", true).await;
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), "streaming");
        for ordinal in 0..3 {
            let claim = claims
                .get(&format!("data-main-{ordinal}"))
                .await
                .expect("claim");
            assert_eq!(claim_size(&claim), "20Gi", "data-main-{ordinal}");
        }
        let sts = statefulsets(&ctx).get("main").await.expect("sts");
        assert_eq!(
            template_size(&sts),
            "20Gi",
            "made again with the larger template"
        );
        let status = fetch(&ctx).await.status.clone().expect("status");
        assert!(!is_true(&status.conditions, DEGRADED));
        let events = event_reasons(&ctx.client, "streaming", "main").await;
        assert!(events.contains(&"VolumesGrowing".to_string()), "{events:?}");
    }

    #[tokio::test]
    async fn a_claim_whose_filesystem_grows_offline_restarts_its_broker() {
        let (ctx, _kafka) = three_brokers_on_rev_1().await;
        // Brokers 1 and 2 have claims waiting for a mount to grow their filesystems; broker
        // 2's pod started after that, so its filesystem has grown.
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), "streaming");
        for claim in claims_of("disks") {
            claims
                .create(&PostParams::default(), &claim)
                .await
                .expect("claim");
        }
        let pending = serde_json::json!({"status": {"conditions": [{
            "type": "FileSystemResizePending",
            "status": "True",
            "lastTransitionTime": "2030-01-01T00:00:00Z"
        }]}});
        for claim in ["data-main-1", "data-main-2"] {
            claims
                .patch_status(claim, &PatchParams::default(), &Patch::Merge(&pending))
                .await
                .expect("claim status");
        }
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), "streaming");
        for (pod, started) in [
            ("main-1", "2029-12-31T00:00:00Z"),
            ("main-2", "2030-01-01T00:05:00Z"),
        ] {
            pods.patch_status(
                pod,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"status": {"startTime": started}})),
            )
            .await
            .expect("pod status");
        }
        reconcile(fetch(&ctx).await, Arc::clone(&ctx))
            .await
            .expect("restart");
        assert_eq!(
            pod_names(&ctx).await,
            ["main-0", "main-2"],
            "broker 1 restarts, the others stay"
        );
        let events = event_reasons(&ctx.client, "streaming", "main").await;
        assert!(
            events.contains(&"FileSystemResizePending".to_string()),
            "{events:?}"
        );
    }

    #[tokio::test]
    async fn volumes_of_a_class_that_cannot_expand_are_refused_and_left_alone() {
        let ctx = grow_to_20_gi("fixed", false).await;
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), "streaming");
        let claim = claims.get("data-main-0").await.expect("claim");
        assert_eq!(claim_size(&claim), "10Gi");
        let sts = statefulsets(&ctx).get("main").await.expect("sts");
        assert_eq!(template_size(&sts), "10Gi");
        let status = fetch(&ctx).await.status.clone().expect("status");
        assert_eq!(
            reason(&status.conditions, DEGRADED),
            Some("StorageChangeRefused")
        );
        let degraded = status
            .conditions
            .iter()
            .find(|c| c.type_ == DEGRADED)
            .expect("degraded");
        assert!(
            degraded.message.contains(
                "StorageClass fixed of claim data-main-0 does not allow volume expansion"
            ),
            "{}",
            degraded.message
        );
    }

    #[tokio::test]
    async fn the_services_of_a_listener_no_longer_external_are_deleted() {
        let ctx = with_cluster(&format!(
            "{MINIMAL_CLUSTER}\n  listeners:\n    additional:\n    - name: OUTSIDE\n      port: 9095\n      type: nodeport\n"
        ))
        .await;
        reconcile(fetch(&ctx).await, Arc::clone(&ctx))
            .await
            .expect("first pass");
        let services: Api<Service> = Api::namespaced(ctx.client.clone(), "streaming");
        let names = || async {
            let mut names: Vec<String> = services
                .list(&ListParams::default())
                .await
                .expect("services")
                .items
                .iter()
                .map(|s| s.name_any())
                .collect();
            names.sort();
            names
        };
        assert_eq!(
            names().await,
            [
                "main-bootstrap",
                "main-brokers",
                "main-outside-0",
                "main-outside-1",
                "main-outside-2",
                "main-outside-bootstrap"
            ]
        );
        let clusters: Api<KafkaCluster> = Api::namespaced(ctx.client.clone(), "streaming");
        clusters
            .patch(
                "main",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({
                    "spec": {"listeners": {"additional": [{"name": "OUTSIDE", "port": 9095}]}}
                })),
            )
            .await
            .expect("spec change");
        reconcile(fetch(&ctx).await, Arc::clone(&ctx))
            .await
            .expect("second pass");
        assert_eq!(names().await, ["main-bootstrap", "main-brokers"]);
    }

    #[tokio::test]
    async fn drift_in_a_child_object_is_put_back() {
        let ctx = with_cluster(MINIMAL_CLUSTER).await;
        reconcile(fetch(&ctx).await, Arc::clone(&ctx))
            .await
            .expect("first pass");
        let config: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), "streaming");
        config
            .patch(
                "main-config",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"data": {"main-0.properties": "node.id=9\n"}})),
            )
            .await
            .expect("someone edits the config map");
        reconcile(fetch(&ctx).await, Arc::clone(&ctx))
            .await
            .expect("second pass");
        let data: BTreeMap<String, String> = config
            .get("main-config")
            .await
            .expect("cm")
            .data
            .expect("data");
        assert!(data["main-0.properties"].contains("node.id=0"));
    }

    #[tokio::test]
    async fn an_invalid_spec_is_degraded_creates_nothing_and_waits_for_a_change() {
        let ctx = with_cluster(&format!(
            "{MINIMAL_CLUSTER}\n  replicas: 0\n  storage:\n    size: lots"
        ))
        .await;
        let action = reconcile(fetch(&ctx).await, Arc::clone(&ctx))
            .await
            .expect("an invalid spec is not a reconcile error");
        assert_eq!(action, Action::await_change(), "no retry storm");
        assert!(statefulsets(&ctx)
            .get_opt("main")
            .await
            .expect("get")
            .is_none());
        let status = fetch(&ctx).await.status.clone().expect("status");
        assert!(is_true(&status.conditions, DEGRADED));
        assert_eq!(reason(&status.conditions, READY), Some("InvalidSpec"));
        let degraded = status
            .conditions
            .iter()
            .find(|c| c.type_ == DEGRADED)
            .expect("degraded");
        assert!(
            degraded.message.contains("spec.replicas is 0"),
            "{}",
            degraded.message
        );
        assert!(
            degraded.message.contains("spec.storage.size `lots`"),
            "{}",
            degraded.message
        );
        let events = event_reasons(&ctx.client, "streaming", "main").await;
        assert_eq!(events, ["InvalidSpec"]);

        // The same invalid spec again: no second warning.
        reconcile(fetch(&ctx).await, Arc::clone(&ctx))
            .await
            .expect("again");
        let events = event_reasons(&ctx.client, "streaming", "main").await;
        assert_eq!(events.len(), 1, "{events:?}");
    }

    #[tokio::test]
    async fn a_listener_spec_the_brokers_cannot_serve_is_degraded_with_the_reason() {
        let ctx = with_cluster(&format!(
            "{MINIMAL_CLUSTER}\n  listeners:\n    additional:\n    - name: ONE\n      port: 9094\n      tls:\n        secretName: a-tls\n    - name: TWO\n      port: 9094\n      tls:\n        secretName: b-tls"
        ))
        .await;
        let action = reconcile(fetch(&ctx).await, Arc::clone(&ctx))
            .await
            .expect("an invalid spec is not a reconcile error");
        assert_eq!(action, Action::await_change());
        assert!(statefulsets(&ctx)
            .get_opt("main")
            .await
            .expect("get")
            .is_none());
        let status = fetch(&ctx).await.status.clone().expect("status");
        let degraded = status
            .conditions
            .iter()
            .find(|c| c.type_ == DEGRADED && c.status == "True")
            .expect("degraded");
        assert!(
            degraded.message.contains(
                "additional[TWO].port and spec.listeners.additional[ONE].port are both 9094"
            ),
            "{}",
            degraded.message
        );
        assert!(
            degraded
                .message
                .contains("every TLS listener takes it from the same place"),
            "{}",
            degraded.message
        );
    }

    #[tokio::test]
    async fn failures_are_counted_by_kind_and_retried_ever_more_slowly() {
        let ctx = with_cluster(MINIMAL_CLUSTER).await;
        let cluster = fetch(&ctx).await;
        let error = Error::MissingMetadata("name");
        let first = error_policy(Arc::clone(&cluster), &error, Arc::clone(&ctx));
        let second = error_policy(Arc::clone(&cluster), &error, Arc::clone(&ctx));
        assert_eq!(first, Action::requeue(Duration::from_secs(5)));
        assert_eq!(second, Action::requeue(Duration::from_secs(10)));
        assert!(ctx.metrics.render().contains(
            "oxbow_operator_reconcile_failures_total{controller=\"kafkacluster\",error=\"missing_metadata\"} 2"
        ));
        reconcile(cluster, Arc::clone(&ctx)).await.expect("success");
        let after = error_policy(fetch(&ctx).await, &error, Arc::clone(&ctx));
        assert_eq!(
            after,
            Action::requeue(Duration::from_secs(5)),
            "a success resets"
        );
    }
}
