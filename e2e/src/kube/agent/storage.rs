//! A dynamic volume provisioner for the StorageClass [`STORAGE_CLASS`]: each claim of that
//! class gets a PersistentVolume of its own, a directory under the agent's state directory
//! that outlives the pods using it; a released volume with the Delete policy is removed with
//! its directory; a claim that asks for more is grown (the class allows expansion), as an
//! external provisioner and resizer would do. With the class annotated [`OFFLINE_EXPANSION`]
//! the resizer grows the volume but leaves the filesystem to the next mount, as the CSI
//! drivers that expand offline do: the claim is `FileSystemResizePending` until a pod using it
//! starts ([`finish_filesystem_resize`], called when the agent mounts the claim).

use std::path::PathBuf;
use std::sync::Arc;

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client};
use serde_json::json;

/// The StorageClass the agent provisions: the cluster's default.
pub const STORAGE_CLASS: &str = "oxbow-local";
/// The provisioner name in the class and on the volumes it makes.
pub const PROVISIONER: &str = "oxbow.dev/node-agent";

/// Annotation of the StorageClass that makes growth offline: `"true"`.
pub const OFFLINE_EXPANSION: &str = "oxbow.dev/offline-expansion";

/// Creates the default StorageClass (Immediate binding, expandable).
pub async fn install_class(client: &Client) -> anyhow::Result<()> {
    let api: Api<StorageClass> = Api::all(client.clone());
    let class = json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": STORAGE_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
        "allowVolumeExpansion": true,
    });
    api.patch(
        STORAGE_CLASS,
        &PatchParams::apply("oxbow-node-agent").force(),
        &Patch::Apply(&class),
    )
    .await?;
    Ok(())
}

/// Provisions, grows and deletes volumes until cancelled.
pub async fn run(client: Client, root: PathBuf) {
    let root = Arc::new(root);
    let claims = {
        let client = client.clone();
        let root = root.clone();
        async move {
            let api: Api<PersistentVolumeClaim> = Api::all(client.clone());
            let stream = watcher(api, watcher::Config::default()).default_backoff();
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Apply(claim)) | Ok(watcher::Event::InitApply(claim)) => {
                        if let Err(error) = claim_changed(&client, &root, &claim).await {
                            tracing::warn!("provisioning a volume: {error:#}");
                        }
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!("watching claims: {error}"),
                }
            }
        }
    };
    let volumes = {
        let client = client.clone();
        async move {
            let api: Api<PersistentVolume> = Api::all(client.clone());
            let stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .applied_objects();
            futures::pin_mut!(stream);
            loop {
                match stream.try_next().await {
                    Ok(Some(volume)) => {
                        if let Err(error) = volume_changed(&client, &volume).await {
                            tracing::warn!("deleting a volume: {error:#}");
                        }
                    }
                    Ok(None) => break,
                    Err(error) => tracing::warn!("watching volumes: {error}"),
                }
            }
        }
    };
    tokio::join!(claims, volumes);
}

fn ours(claim: &PersistentVolumeClaim) -> bool {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .is_some_and(|c| c == STORAGE_CLASS)
}

async fn claim_changed(
    client: &Client,
    root: &std::path::Path,
    claim: &PersistentVolumeClaim,
) -> anyhow::Result<()> {
    if !ours(claim) || claim.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let namespace = claim.metadata.namespace.clone().unwrap_or_default();
    let name = claim.metadata.name.clone().unwrap_or_default();
    let uid = claim.metadata.uid.clone().unwrap_or_default();
    let spec = claim.spec.clone().unwrap_or_default();
    let requested = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage").cloned())
        .map(|q| q.0)
        .unwrap_or_else(|| "1Gi".to_string());
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let bound = spec.volume_name.clone().filter(|v| !v.is_empty());
    match bound {
        None => {
            let pv_name = format!("pvc-{uid}");
            if volumes.get_opt(&pv_name).await?.is_some() {
                return Ok(());
            }
            let path = root.join(&pv_name);
            std::fs::create_dir_all(&path)?;
            let volume: PersistentVolume = serde_json::from_value(json!({
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {
                    "name": pv_name,
                    "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
                },
                "spec": {
                    "capacity": {"storage": requested},
                    "accessModes": spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteOnce".to_string()]),
                    "persistentVolumeReclaimPolicy": "Delete",
                    "storageClassName": STORAGE_CLASS,
                    "hostPath": {"path": path.display().to_string(), "type": "DirectoryOrCreate"},
                    "claimRef": {
                        "apiVersion": "v1",
                        "kind": "PersistentVolumeClaim",
                        "namespace": namespace,
                        "name": name,
                        "uid": uid,
                    },
                },
            }))?;
            volumes.create(&PostParams::default(), &volume).await?;
            tracing::info!(claim = %format!("{namespace}/{name}"), volume = %pv_name, "provisioned");
        }
        Some(volume_name) => {
            // Growth: the claim asks for more than the volume has.
            let capacity = claim
                .status
                .as_ref()
                .and_then(|s| s.capacity.as_ref())
                .and_then(|c| c.get("storage").cloned())
                .map(|q| q.0);
            // A claim waiting for its filesystem to grow waits for a mount, not for this.
            if capacity
                .as_deref()
                .is_some_and(|c| bytes(c) < bytes(&requested))
                && !filesystem_resize_pending(claim)
            {
                let grow = json!({"spec": {"capacity": {"storage": requested}}});
                volumes
                    .patch(&volume_name, &PatchParams::default(), &Patch::Merge(&grow))
                    .await?;
                let claims: Api<PersistentVolumeClaim> =
                    Api::namespaced(client.clone(), &namespace);
                let status = if offline(client).await? {
                    let mut conditions = other_conditions(claim);
                    conditions.push(json!({
                        "type": "FileSystemResizePending",
                        "status": "True",
                        "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().to_string(),
                        "message": "waiting for a pod to mount the volume",
                    }));
                    json!({"status": {"conditions": conditions}})
                } else {
                    json!({"status": {"capacity": {"storage": requested}}})
                };
                claims
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await?;
                tracing::info!(claim = %format!("{namespace}/{name}"), %requested, "grown");
            }
        }
    }
    Ok(())
}

fn filesystem_resize_pending(claim: &PersistentVolumeClaim) -> bool {
    claim
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "FileSystemResizePending"))
}

/// The claim's conditions other than `FileSystemResizePending` (the API server's own, such as
/// `Unused`), for a merge patch that replaces the list.
fn other_conditions(claim: &PersistentVolumeClaim) -> Vec<serde_json::Value> {
    claim
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.type_ != "FileSystemResizePending")
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect()
}

/// Whether the class grows filesystems offline (annotated [`OFFLINE_EXPANSION`]).
async fn offline(client: &Client) -> kube::Result<bool> {
    let class = Api::<StorageClass>::all(client.clone())
        .get_opt(STORAGE_CLASS)
        .await?;
    Ok(class
        .and_then(|c| c.metadata.annotations)
        .is_some_and(|a| a.get(OFFLINE_EXPANSION).is_some_and(|v| v == "true")))
}

/// What the kubelet does when it mounts a claim left `FileSystemResizePending`: the
/// filesystem takes the volume's size, and the claim says so.
pub async fn finish_filesystem_resize(
    client: &Client,
    claim: &PersistentVolumeClaim,
    volume: &PersistentVolume,
) -> kube::Result<()> {
    let pending = filesystem_resize_pending(claim);
    let size = volume
        .spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"));
    let (true, Some(size)) = (pending, size) else {
        return Ok(());
    };
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(
        client.clone(),
        &claim.metadata.namespace.clone().unwrap_or_default(),
    );
    let conditions = other_conditions(claim);
    let status = json!({"status": {"capacity": {"storage": size}, "conditions": conditions}});
    claims
        .patch_status(
            &claim.metadata.name.clone().unwrap_or_default(),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await?;
    Ok(())
}

async fn volume_changed(client: &Client, volume: &PersistentVolume) -> anyhow::Result<()> {
    let provisioned = volume
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("pv.kubernetes.io/provisioned-by"))
        .is_some_and(|p| p == PROVISIONER);
    let spec = volume.spec.clone().unwrap_or_default();
    let released = volume.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
    if !provisioned
        || !released
        || spec.persistent_volume_reclaim_policy.as_deref() != Some("Delete")
    {
        return Ok(());
    }
    if let Some(path) = spec.host_path.map(|h| h.path) {
        let _ = std::fs::remove_dir_all(&path);
    }
    let api: Api<PersistentVolume> = Api::all(client.clone());
    let name = volume.metadata.name.clone().unwrap_or_default();
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => tracing::info!(volume = %name, "deleted"),
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(error) => return Err(error.into()),
    }
    Ok(())
}

/// Bytes of a storage quantity (`10Gi`, `500M`, `1024`); unknown suffixes count as zero.
pub fn bytes(quantity: &str) -> u128 {
    let digits: String = quantity
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    let number: u128 = digits.parse().unwrap_or(0);
    let factor: u128 = match &quantity[digits.len()..] {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => 0,
    };
    number * factor
}
