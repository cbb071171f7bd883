//! `oxbow-node-agent`: the kubelet's work for the tests' cluster. It registers its Nodes and
//! keeps their Leases; runs every pod scheduled to them as real processes (the image mapped to
//! a binary built from the checkout), each pod in its own network namespace with its volumes
//! mounted where the pod spec says; runs probes and writes pod status back; restarts crashed
//! containers; stops deleted pods with SIGTERM and their grace period. Beside that it provisions
//! the default StorageClass's volumes, gives LoadBalancer Services their addresses (see
//! [`loadbalancer`]), passes TLS through to the Services of passthrough Ingresses (see
//! [`ingress`]) and keeps cluster names and Service addresses working (see [`dns`]). It must run inside the sandbox ([`crate::kube::sandbox`]).

pub mod dns;
pub mod downward;
pub mod exec;
pub mod ingress;
pub mod loadbalancer;
pub mod net;
pub mod node;
pub mod pod;
pub mod probe;
pub mod storage;
pub mod volumes;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client};
use tokio::sync::watch;

use self::net::AddressPool;
use self::node::NodeSpec;
use self::pod::Seen;

/// What the agent is told at start.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub kubeconfig: PathBuf,
    pub nodes: Vec<NodeSpec>,
    /// Pods' files, logs and the provisioned volumes.
    pub state_dir: PathBuf,
    /// The sandbox's hosts file.
    pub hosts_file: PathBuf,
    /// Image repository (its last path segment, without tag) → the program it runs.
    pub images: Vec<(String, PathBuf)>,
    /// The agent's own binary, for `run-container`.
    pub agent_binary: PathBuf,
    /// The longest wait before restarting a crashed container (a kubelet's is 5 minutes).
    pub crash_backoff_max: Duration,
}

impl AgentConfig {
    /// The program an image runs.
    pub fn binary_for(&self, image: &str) -> anyhow::Result<PathBuf> {
        let repository = image_repository(image);
        self.images
            .iter()
            .find(|(name, _)| *name == repository)
            .map(|(_, path)| path.clone())
            .with_context(|| format!("image {image:?}: the node agent maps no program to {repository:?} (ErrImagePull)"))
    }
}

/// `registry:5000/org/oxbow-broker:0.1@sha256:..` → `oxbow-broker`.
pub fn image_repository(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    let last = image.rsplit('/').next().unwrap_or(image);
    last.split(':').next().unwrap_or(last)
}

/// What pod workers share.
pub struct Shared {
    pub client: Client,
    pub config: AgentConfig,
    pub addresses: AddressPool,
}

/// Runs the agent until the process ends.
pub async fn run(mut config: AgentConfig) -> anyhow::Result<()> {
    // The Kubernetes client's TLS runs on ring; a build of the workspace's binaries may link
    // aws-lc as well (features unify across the workspace), and rustls then refuses to guess.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = kube::config::Kubeconfig::read_from(&config.kubeconfig)?;
    let client_config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    let client = Client::try_from(client_config)?;
    std::fs::create_dir_all(config.state_dir.join("volumes"))?;
    allow_traversal(&config.state_dir)?;
    pull_images(&mut config)?;
    storage::install_class(&client)
        .await
        .context("installing the StorageClass")?;
    for node in &config.nodes {
        node::register(&client, node)
            .await
            .with_context(|| format!("registering node {}", node.name))?;
        tokio::spawn(node::heartbeat(client.clone(), node.clone()));
    }
    tokio::spawn(storage::run(
        client.clone(),
        config.state_dir.join("volumes"),
    ));
    tokio::spawn(dns::run(client.clone(), config.hosts_file.clone()));
    tokio::spawn(loadbalancer::run(client.clone()));
    let shared = Arc::new(Shared {
        client: client.clone(),
        config,
        addresses: AddressPool::default(),
    });
    tracing::info!(nodes = ?shared.config.nodes.iter().map(|n| &n.name).collect::<Vec<_>>(), "node agent running");
    let nodes: Vec<String> = shared.config.nodes.iter().map(|n| n.name.clone()).collect();
    let mut workers: HashMap<String, watch::Sender<Seen>> = HashMap::new();
    let stream = watcher(Api::<Pod>::all(client), watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!("watching pods: {error}");
                continue;
            }
        };
        workers.retain(|_, sender| !sender.is_closed());
        match event {
            watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => {
                let mine = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_ref())
                    .is_some_and(|n| nodes.contains(n));
                let Some(uid) = pod.metadata.uid.clone().filter(|_| mine) else {
                    continue;
                };
                match workers.get(&uid) {
                    Some(sender) => {
                        let _ = sender.send(Seen::Present(Box::new(pod)));
                    }
                    None => {
                        let (sender, receiver) = watch::channel(Seen::Present(Box::new(pod)));
                        tokio::spawn(pod::run(shared.clone(), receiver));
                        workers.insert(uid, sender);
                    }
                }
            }
            watcher::Event::Delete(pod) => {
                if let Some(sender) = pod.metadata.uid.as_ref().and_then(|uid| workers.get(uid)) {
                    let _ = sender.send(Seen::Gone);
                }
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
    }
    Ok(())
}

/// The state directory is read by pods running as other users: it and its parents must let
/// them through.
/// Puts each image's program in the agent's own image store, as a kubelet pulls an image
/// before it starts a container: the programs come from a build directory the pods' users
/// may not be able to reach (a home directory is often private), the store is open to all.
fn pull_images(config: &mut AgentConfig) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let store = config.state_dir.join("images");
    for (repository, program) in &mut config.images {
        let dir = store.join(repository.as_str());
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        let name = program.file_name().with_context(|| {
            format!("image {repository:?}: {} names no file", program.display())
        })?;
        let pulled = dir.join(name);
        if pulled.exists() {
            std::fs::remove_file(&pulled)?;
        }
        if std::fs::hard_link(&*program, &pulled).is_err() {
            std::fs::copy(&*program, &pulled).with_context(|| {
                format!("pulling image {repository:?} from {}", program.display())
            })?;
        }
        let mode = std::fs::metadata(&pulled)?.permissions().mode();
        if mode & 0o005 != 0o005 {
            std::fs::set_permissions(&pulled, std::fs::Permissions::from_mode(mode | 0o005))?;
        }
        *program = pulled;
    }
    Ok(())
}

fn allow_traversal(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut current = Some(dir);
    while let Some(path) = current {
        let meta = std::fs::metadata(path)?;
        let mode = meta.permissions().mode();
        if mode & 0o005 != 0o005 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | 0o005))?;
        }
        current = path.parent().filter(|p| *p != Path::new("/"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_repositories() {
        assert_eq!(image_repository("oxbow-broker:0.1.0"), "oxbow-broker");
        assert_eq!(
            image_repository("registry:5000/org/oxbow-operator:dev"),
            "oxbow-operator"
        );
        assert_eq!(image_repository("oxbow-broker@sha256:abc"), "oxbow-broker");
        assert_eq!(image_repository("oxbow-broker"), "oxbow-broker");
    }
}
