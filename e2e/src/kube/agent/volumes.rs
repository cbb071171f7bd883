//! A pod's volumes as directories on this machine: emptyDir, ConfigMap, Secret, downward API
//! and projected volumes (ServiceAccount tokens from the TokenRequest API) are written under
//! the pod's own directory; a PersistentVolumeClaim is the directory of the volume it is
//! bound to, which outlives the pod; a hostPath is itself.

use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod,
    Secret, ServiceAccount, Volume,
};
use kube::api::PostParams;
use kube::{Api, Client};

use super::downward;

/// Why a pod's volumes are not ready yet.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// Something the pod waits for, as a kubelet would (a claim not yet bound, a ConfigMap not
    /// yet created): tried again.
    #[error("{0}")]
    Waiting(String),
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl From<std::io::Error> for VolumeError {
    fn from(error: std::io::Error) -> VolumeError {
        VolumeError::Failed(error.into())
    }
}

/// The directory of each volume of a pod, by name.
pub type VolumeDirs = BTreeMap<String, PathBuf>;

/// A file of a volume: its path inside the volume, contents and mode (the volume's default
/// when `None`).
type VolumeFile = (String, Vec<u8>, Option<i32>);

/// Writes (or rewrites) every volume of `pod` under `pod_dir` and returns where each is.
pub async fn prepare(
    client: &Client,
    pod: &Pod,
    address: Ipv4Addr,
    pod_dir: &Path,
) -> Result<VolumeDirs, VolumeError> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let spec = pod.spec.as_ref().context("pod without spec")?;
    let fs_group = spec
        .security_context
        .as_ref()
        .and_then(|s| s.fs_group)
        .map(|g| g as u32);
    let mut dirs = VolumeDirs::new();
    for volume in spec.volumes.iter().flatten() {
        let dir = pod_dir.join("volumes").join(&volume.name);
        let path = if let Some(claim) = &volume.persistent_volume_claim {
            let path = claim_path(client, &namespace, &claim.claim_name).await?;
            if let Some(gid) = fs_group {
                give_group(&path, gid)?;
            }
            path
        } else if let Some(host) = &volume.host_path {
            PathBuf::from(&host.path)
        } else {
            write_volume(client, pod, address, &namespace, volume, &dir, fs_group).await?;
            dir
        };
        dirs.insert(volume.name.clone(), path);
    }
    Ok(dirs)
}

async fn write_volume(
    client: &Client,
    pod: &Pod,
    address: Ipv4Addr,
    namespace: &str,
    volume: &Volume,
    dir: &Path,
    fs_group: Option<u32>,
) -> Result<(), VolumeError> {
    if volume.empty_dir.is_some() {
        // An emptyDir keeps its contents across container restarts; it is world-writable, as
        // the kubelet makes it.
        fs::create_dir_all(dir).context("creating an emptyDir")?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o777)).context("emptyDir mode")?;
        if let Some(gid) = fs_group {
            give_group(dir, gid)?;
        }
        return Ok(());
    }
    let mut files: Vec<VolumeFile> = Vec::new();
    let default_mode;
    if let Some(source) = &volume.config_map {
        default_mode = source.default_mode;
        let data = config_map(
            client,
            namespace,
            &source.name,
            source.optional.unwrap_or(false),
        )
        .await?;
        files.extend(select(&data, source.items.as_deref(), &source.name)?);
    } else if let Some(source) = &volume.secret {
        default_mode = source.default_mode;
        let name = source.secret_name.clone().unwrap_or_default();
        let data = secret(client, namespace, &name, source.optional.unwrap_or(false)).await?;
        files.extend(select(&data, source.items.as_deref(), &name)?);
    } else if let Some(source) = &volume.downward_api {
        default_mode = source.default_mode;
        files.extend(downward_files(
            pod,
            address,
            source.items.as_deref().unwrap_or_default(),
        )?);
    } else if let Some(source) = &volume.projected {
        default_mode = source.default_mode;
        for projection in source.sources.iter().flatten() {
            if let Some(token) = &projection.service_account_token {
                let jwt = request_token(
                    client,
                    pod,
                    token.audience.clone(),
                    token.expiration_seconds,
                )
                .await?;
                files.push((token.path.clone(), jwt.into_bytes(), None));
            }
            if let Some(cm) = &projection.config_map {
                let data =
                    config_map(client, namespace, &cm.name, cm.optional.unwrap_or(false)).await?;
                files.extend(select(&data, cm.items.as_deref(), &cm.name)?);
            }
            if let Some(s) = &projection.secret {
                let data = secret(client, namespace, &s.name, s.optional.unwrap_or(false)).await?;
                files.extend(select(&data, s.items.as_deref(), &s.name)?);
            }
            if let Some(d) = &projection.downward_api {
                files.extend(downward_files(
                    pod,
                    address,
                    d.items.as_deref().unwrap_or_default(),
                )?);
            }
        }
    } else {
        return Err(anyhow::anyhow!(
            "volume {} has a type the node agent does not support",
            volume.name
        )
        .into());
    }
    // Rewritten whole each time, so a ConfigMap's new contents reach a restarted container.
    if dir.exists() {
        fs::remove_dir_all(dir).context("clearing a volume")?;
    }
    fs::create_dir_all(dir).context("creating a volume")?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).context("volume mode")?;
    for (relative, bytes, mode) in files {
        if relative.split('/').any(|part| part == "..") || relative.starts_with('/') {
            return Err(anyhow::anyhow!(
                "volume {}: path {relative:?} leaves the volume",
                volume.name
            )
            .into());
        }
        let path = dir.join(&relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        let mode = mode.or(default_mode).unwrap_or(0o644) as u32;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o777))?;
        if let Some(gid) = fs_group {
            std::os::unix::fs::chown(&path, None, Some(gid))?;
        }
    }
    Ok(())
}

fn select(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    source: &str,
) -> Result<Vec<VolumeFile>, VolumeError> {
    match items {
        None => Ok(data
            .iter()
            .map(|(k, v)| (k.clone(), v.clone(), None))
            .collect()),
        Some(items) => items
            .iter()
            .map(|item| {
                data.get(&item.key)
                    .map(|v| (item.path.clone(), v.clone(), item.mode))
                    .ok_or_else(|| {
                        VolumeError::Waiting(format!("{source} has no key {:?}", item.key))
                    })
            })
            .collect(),
    }
}

fn downward_files(
    pod: &Pod,
    address: Ipv4Addr,
    items: &[DownwardAPIVolumeFile],
) -> anyhow::Result<Vec<VolumeFile>> {
    items
        .iter()
        .map(|item| {
            let value = match &item.field_ref {
                Some(field) => downward::field(pod, address, &field.field_path)?,
                None => bail!(
                    "downward API file {} without fieldRef is not supported",
                    item.path
                ),
            };
            Ok((item.path.clone(), value.into_bytes(), item.mode))
        })
        .collect()
}

/// The data of a ConfigMap, text and binary; an optional one that is missing is empty.
pub async fn config_map(
    client: &Client,
    namespace: &str,
    name: &str,
    optional: bool,
) -> Result<BTreeMap<String, Vec<u8>>, VolumeError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(name).await.context("reading a ConfigMap")? {
        Some(cm) => {
            let mut data: BTreeMap<String, Vec<u8>> = cm
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            data.extend(
                cm.binary_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0)),
            );
            Ok(data)
        }
        None if optional => Ok(BTreeMap::new()),
        None => Err(VolumeError::Waiting(format!(
            "configmap {namespace}/{name} not found"
        ))),
    }
}

/// The data of a Secret; an optional one that is missing is empty.
pub async fn secret(
    client: &Client,
    namespace: &str,
    name: &str,
    optional: bool,
) -> Result<BTreeMap<String, Vec<u8>>, VolumeError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(name).await.context("reading a Secret")? {
        Some(secret) => {
            let mut data: BTreeMap<String, Vec<u8>> = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            data.extend(
                secret
                    .string_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes())),
            );
            Ok(data)
        }
        None if optional => Ok(BTreeMap::new()),
        None => Err(VolumeError::Waiting(format!(
            "secret {namespace}/{name} not found"
        ))),
    }
}

/// A token of the pod's ServiceAccount bound to the pod, as the kubelet requests it.
async fn request_token(
    client: &Client,
    pod: &Pod,
    audience: Option<String>,
    expiration_seconds: Option<i64>,
) -> Result<String, VolumeError> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".to_string());
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audience.into_iter().collect(),
            expiration_seconds: Some(expiration_seconds.unwrap_or(3607)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".to_string()),
                kind: Some("Pod".to_string()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..TokenRequest::default()
    };
    let answer = api
        .create_token_request(&account, &PostParams::default(), &request)
        .await
        .map_err(|e| {
            VolumeError::Waiting(format!(
                "token for serviceaccount {namespace}/{account}: {e}"
            ))
        })?;
    answer
        .status
        .map(|s| s.token)
        .ok_or_else(|| VolumeError::Waiting("TokenRequest answered without a token".to_string()))
}

/// The directory of the volume a claim is bound to.
async fn claim_path(client: &Client, namespace: &str, claim: &str) -> Result<PathBuf, VolumeError> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let pvc = claims
        .get_opt(claim)
        .await
        .context("reading a PersistentVolumeClaim")?
        .ok_or_else(|| {
            VolumeError::Waiting(format!("persistentvolumeclaim {claim:?} not found"))
        })?;
    let volume = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            VolumeError::Waiting(format!("persistentvolumeclaim {claim:?} is not bound"))
        })?;
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let pv = volumes
        .get_opt(&volume)
        .await
        .context("reading a PersistentVolume")?
        .ok_or_else(|| VolumeError::Waiting(format!("persistentvolume {volume:?} not found")))?;
    super::storage::finish_filesystem_resize(client, &pvc, &pv)
        .await
        .context("growing the filesystem of a PersistentVolumeClaim")?;
    let spec = pv.spec.unwrap_or_default();
    let path = spec
        .host_path
        .map(|h| h.path)
        .or(spec.local.map(|l| l.path))
        .ok_or_else(|| {
            anyhow::anyhow!("persistentvolume {volume} is neither hostPath nor local")
        })?;
    let path = PathBuf::from(path);
    fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    Ok(path)
}

/// fsGroup: the volume's files belong to the group, and its directories are group-writable
/// with the set-group-ID bit. Like `fsGroupChangePolicy: OnRootMismatch`, a volume whose root
/// already has the group and mode is left alone.
fn give_group(root: &Path, gid: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = fs::metadata(root)?;
    if meta.gid() == gid && meta.mode() & 0o2070 == 0o2070 {
        return Ok(());
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path)?;
        std::os::unix::fs::chown(&path, None, Some(gid))?;
        if meta.is_dir() {
            let mode = meta.mode() & 0o7777;
            fs::set_permissions(&path, fs::Permissions::from_mode(mode | 0o2070))?;
            for entry in fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        } else if meta.is_file() {
            let mode = meta.mode() & 0o7777;
            fs::set_permissions(&path, fs::Permissions::from_mode(mode | 0o060))?;
        }
    }
    Ok(())
}
