//! What the controllers of the resources that name a KafkaCluster (KafkaTopic, KafkaUser,
//! KafkaRebalance) share: running a controller that a change of the cluster wakes, writing a
//! status with server-side apply, and the metric label and reason of a finalizer's failure.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cluster::scoped;
use crate::context::{Context, FIELD_MANAGER};
use crate::crd::KafkaCluster;

/// Writes `status` as the status of `object`, with server-side apply as the operator.
pub async fn apply_status<K>(
    client: &Client,
    object: &K,
    status: &impl Serialize,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), &object.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &object.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Removes annotation `key` from the object `name` of `api` (a merge patch; an annotation that
/// is not there is no error).
pub async fn remove_annotation<K>(api: &Api<K>, name: &str, key: &str) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let patch = serde_json::json!({ "metadata": { "annotations": { key: null } } });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// The key of `object` in the retry back-off: `Kind/namespace/name`.
pub fn backoff_key<K: Resource<DynamicType = ()>>(object: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        object.namespace().unwrap_or_default(),
        object.name_any()
    )
}

/// The error policy of a controller: counts the failure under `controller` and `label`,
/// logs it, and retries the object after its next back-off delay.
pub fn retry<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    object: &K,
    controller: &'static str,
    label: &'static str,
    error: &dyn std::fmt::Display,
) -> Action {
    ctx.metrics.failure(controller, label);
    let delay = ctx.backoff.failed(&backoff_key(object));
    tracing::warn!(error = %error, retry_in = ?delay, "{} reconciliation failed", K::kind(&()));
    Action::requeue(delay)
}

/// The `error` label of a failed finalizer step: `inner`'s for the reconciler's own errors.
pub fn finalizer_label<E: std::error::Error + 'static>(
    error: &finalizer::Error<E>,
    inner: impl Fn(&E) -> &'static str,
) -> &'static str {
    match error {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => inner(e),
        finalizer::Error::AddFinalizer(_) | finalizer::Error::RemoveFinalizer(_) => "finalizer",
        _ => "finalizer_other",
    }
}

/// The condition and event reason of a failed finalizer step: `inner`'s for a failed
/// reconciliation, `DeletionFailed` for a failed cleanup.
pub fn finalizer_reason<E: std::error::Error + 'static>(
    error: &finalizer::Error<E>,
    inner: impl Fn(&E) -> &'static str,
) -> &'static str {
    match error {
        finalizer::Error::ApplyFailed(e) => inner(e),
        finalizer::Error::CleanupFailed(_) => "DeletionFailed",
        _ => "FinalizerFailed",
    }
}

/// Runs the controller of `K` over `namespace` (all namespaces when `None`) until `shutdown`
/// completes. A change of a KafkaCluster (becoming ready, say) wakes the objects whose
/// `cluster_of` names it.
pub async fn run_per_cluster<K, ReconcileFut, E>(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    cluster_of: fn(&K) -> &str,
    reconcile: impl FnMut(Arc<K>, Arc<Context>) -> ReconcileFut,
    error_policy: impl Fn(Arc<K>, &E, Arc<Context>) -> Action,
) where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
    ReconcileFut: Future<Output = Result<Action, E>> + Send + 'static,
    E: std::error::Error + Send + 'static,
{
    let client = ctx.client.clone();
    let objects: Api<K> = scoped(&client, namespace.as_deref());
    let clusters: Api<KafkaCluster> = scoped(&client, namespace.as_deref());
    let controller = Controller::new(objects, watcher::Config::default());
    let store = controller.store();
    let kind = K::kind(&()).into_owned();
    controller
        .watches(clusters, watcher::Config::default(), move |cluster| {
            let name = cluster.name_any();
            let namespace = cluster.namespace();
            store
                .state()
                .into_iter()
                .filter(|o| cluster_of(o) == name && o.namespace() == namespace)
                .map(|o| ObjectRef::from_obj(&*o))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            let kind = kind.clone();
            async move {
                match result {
                    Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                    // The error policy has logged the reconciler's own failures.
                    Err(kube::runtime::controller::Error::ReconcilerFailed(error, object)) => {
                        tracing::debug!(%error, %object, "{kind} reconciliation failed")
                    }
                    Err(error) => tracing::warn!(%error, "{kind} controller"),
                }
            }
        })
        .await;
}
