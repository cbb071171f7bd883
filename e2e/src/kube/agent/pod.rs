//! One pod's life on a node, as a kubelet leads it: its network, its volumes, its init
//! containers one after another, then its containers as processes with their probes, restarts
//! with back-off, the status written back to the API server, and on deletion the preStop hook,
//! SIGTERM, the grace period, SIGKILL and the final delete.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, LifecycleHandler, Pod, PodCondition, PodIP,
    PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::Api;
use rustix::process::{Pid, Signal};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use super::exec::{Bind, ContainerSpec};
use super::net::PodNetwork;
use super::probe::{ProbeState, Verdict};
use super::volumes::{self, VolumeDirs, VolumeError};
use super::{downward, Shared};
use crate::kube::control_plane::API_PORT;
use crate::kube::sandbox::GATEWAY;

/// What the agent last saw of a pod.
#[derive(Debug, Clone)]
pub enum Seen {
    Present(Box<Pod>),
    /// Removed from the API server (a forced deletion): stop everything at once.
    Gone,
}

/// One container (or init container) of the pod.
#[derive(Debug)]
struct Slot {
    container: Container,
    init: bool,
    child: Option<Child>,
    started_at: Option<Timestamp>,
    started: Option<Instant>,
    restarts: i32,
    last: Option<ContainerStateTerminated>,
    waiting: Option<(String, String)>,
    next_start: Option<Instant>,
    /// An init container that succeeded, or a container that will not be restarted.
    finished: bool,
    startup: Option<ProbeState>,
    liveness: Option<ProbeState>,
    readiness: Option<ProbeState>,
}

impl Slot {
    fn new(container: Container, init: bool) -> Slot {
        Slot {
            container,
            init,
            child: None,
            started_at: None,
            started: None,
            restarts: 0,
            last: None,
            waiting: Some(("PodInitializing".to_string(), String::new())),
            next_start: None,
            finished: false,
            startup: None,
            liveness: None,
            readiness: None,
        }
    }

    fn running(&self) -> bool {
        self.child.is_some()
    }

    fn ready(&self) -> bool {
        self.running()
            && self.startup.as_ref().is_none_or(|p| p.passing)
            && self.readiness.as_ref().is_none_or(|p| p.passing)
    }

    fn status(&self) -> ContainerStatus {
        let state = if self.running() {
            ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: self.started_at.map(Time),
                }),
                ..ContainerState::default()
            }
        } else if let (true, Some(last)) = (self.finished, &self.last) {
            ContainerState {
                terminated: Some(last.clone()),
                ..ContainerState::default()
            }
        } else {
            let (reason, message) = self.waiting.clone().unwrap_or_default();
            ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason),
                    message: (!message.is_empty()).then_some(message),
                }),
                ..ContainerState::default()
            }
        };
        let last_state = if self.finished {
            None
        } else {
            self.last.clone()
        }
        .map(|t| ContainerState {
            terminated: Some(t),
            ..ContainerState::default()
        });
        ContainerStatus {
            name: self.container.name.clone(),
            image: self.container.image.clone().unwrap_or_default(),
            image_id: format!(
                "oxbow://{}",
                self.container.image.clone().unwrap_or_default()
            ),
            container_id: self
                .started_at
                .map(|t| format!("oxbow://{}/{}", self.container.name, t.as_millisecond())),
            ready: !self.init && self.ready() || self.init && self.finished,
            started: Some(self.running() && self.startup.as_ref().is_none_or(|p| p.passing)),
            restart_count: self.restarts,
            state: Some(state),
            last_state,
            ..ContainerStatus::default()
        }
    }
}

/// Runs the pod until it is deleted.
pub async fn run(shared: Arc<Shared>, rx: watch::Receiver<Seen>) {
    let Seen::Present(pod) = rx.borrow().clone() else {
        return;
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let name = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    );
    let mut worker = match Worker::new(shared, rx, *pod) {
        Ok(worker) => worker,
        Err(error) => {
            tracing::error!(pod = %name, "cannot run the pod: {error:#}");
            return;
        }
    };
    if let Err(error) = worker.lead().await {
        tracing::error!(pod = %name, uid = %uid, "pod worker failed: {error:#}");
    }
    worker.cleanup().await;
}

struct Worker {
    shared: Arc<Shared>,
    rx: watch::Receiver<Seen>,
    pod: Pod,
    api: Api<Pod>,
    name: String,
    dir: PathBuf,
    network: Option<PodNetwork>,
    address: Option<Ipv4Addr>,
    volumes: VolumeDirs,
    slots: Vec<Slot>,
    started: Timestamp,
    transitions: BTreeMap<String, (String, Timestamp)>,
    last_status: Option<serde_json::Value>,
    volume_message: Option<String>,
}

enum Ending {
    Graceful,
    Now,
}

impl Worker {
    fn new(shared: Arc<Shared>, rx: watch::Receiver<Seen>, pod: Pod) -> anyhow::Result<Worker> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let dir = shared
            .config
            .state_dir
            .join("pods")
            .join(format!("{namespace}_{name}_{uid}"));
        std::fs::create_dir_all(&dir)?;
        let spec = pod.spec.clone().context("pod without spec")?;
        let mut slots: Vec<Slot> = spec
            .init_containers
            .unwrap_or_default()
            .into_iter()
            .map(|c| Slot::new(c, true))
            .collect();
        slots.extend(spec.containers.into_iter().map(|c| Slot::new(c, false)));
        Ok(Worker {
            api: Api::namespaced(shared.client.clone(), &namespace),
            shared,
            rx,
            pod,
            name,
            dir,
            network: None,
            address: None,
            volumes: VolumeDirs::new(),
            slots,
            started: Timestamp::now(),
            transitions: BTreeMap::new(),
            last_status: None,
            volume_message: None,
        })
    }

    /// The log file of a container.
    fn log_path(&self, container: &str) -> PathBuf {
        self.dir.join(format!("{container}.log"))
    }

    fn ending(&mut self) -> Option<Ending> {
        match &*self.rx.borrow_and_update() {
            Seen::Gone => Some(Ending::Now),
            Seen::Present(pod) => {
                self.pod = (**pod).clone();
                pod.metadata
                    .deletion_timestamp
                    .as_ref()
                    .map(|_| Ending::Graceful)
            }
        }
    }

    async fn pause(&mut self, duration: Duration) {
        let _ = tokio::time::timeout(duration, self.rx.changed()).await;
    }

    async fn lead(&mut self) -> anyhow::Result<()> {
        if let Some(ending) = self.ending() {
            return self.finish(ending).await;
        }
        let address = self.shared.addresses.take()?;
        self.address = Some(address);
        let uid = self.pod.metadata.uid.clone().unwrap_or_default();
        self.network = Some(PodNetwork::create(&uid, address)?);
        self.publish().await;
        loop {
            if let Some(ending) = self.ending() {
                return self.finish(ending).await;
            }
            match volumes::prepare(&self.shared.client, &self.pod, address, &self.dir).await {
                Ok(dirs) => {
                    self.volumes = dirs;
                    self.volume_message = None;
                    break;
                }
                Err(error) => {
                    if let VolumeError::Failed(error) = &error {
                        tracing::warn!(pod = %self.name, "volumes: {error:#}");
                    }
                    self.volume_message = Some(error.to_string());
                    self.publish().await;
                    self.pause(Duration::from_secs(1)).await;
                }
            }
        }
        loop {
            if let Some(ending) = self.ending() {
                return self.finish(ending).await;
            }
            self.step().await;
            self.publish().await;
            self.pause(Duration::from_millis(500)).await;
        }
    }

    /// One turn: reap exits, start what is due, run due probes.
    async fn step(&mut self) {
        let policy = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".to_string());
        let now = Instant::now();
        let backoff_max = self.shared.config.crash_backoff_max;
        // Exits.
        for slot in &mut self.slots {
            let Some(child) = slot.child.as_mut() else {
                continue;
            };
            let Ok(Some(status)) = child.try_wait() else {
                continue;
            };
            slot.child = None;
            let code = exit_code(&status);
            let reason = if code == 0 { "Completed" } else { "Error" };
            tracing::info!(pod = %self.name, container = %slot.container.name, code, "container exited");
            slot.last = Some(ContainerStateTerminated {
                exit_code: code,
                reason: Some(reason.to_string()),
                started_at: slot.started_at.map(Time),
                finished_at: Some(Time(Timestamp::now())),
                signal: None,
                message: None,
                container_id: None,
            });
            let restart = if slot.init {
                code != 0 && policy != "Never"
            } else {
                policy == "Always" || (policy == "OnFailure" && code != 0)
            };
            if slot.init && code == 0 || !restart {
                slot.finished = true;
                continue;
            }
            let ran_long = slot
                .started
                .is_some_and(|s| now.duration_since(s) > Duration::from_secs(60));
            let exponent = if ran_long {
                0
            } else {
                slot.restarts.clamp(0, 16) as u32
            };
            let delay = (Duration::from_secs(1) * 2u32.pow(exponent)).min(backoff_max);
            slot.restarts += 1;
            slot.next_start = Some(now + delay);
            slot.waiting = Some((
                "CrashLoopBackOff".to_string(),
                format!(
                    "back-off {}s restarting failed container={}",
                    delay.as_secs(),
                    slot.container.name
                ),
            ));
        }
        // Starts: init containers one at a time, in order; then every container.
        let first_pending_init = self.slots.iter().position(|s| s.init && !s.finished);
        let indexes: Vec<usize> = match first_pending_init {
            Some(i) => vec![i],
            None => (0..self.slots.len())
                .filter(|&i| !self.slots[i].init)
                .collect(),
        };
        for i in indexes {
            let slot = &self.slots[i];
            if slot.running() || slot.finished || slot.next_start.is_some_and(|t| t > now) {
                continue;
            }
            if let Err(error) = self.start(i).await {
                let slot = &mut self.slots[i];
                tracing::warn!(pod = %self.name, container = %slot.container.name, "cannot start: {error:#}");
                slot.waiting = Some(("CreateContainerError".to_string(), format!("{error:#}")));
                slot.next_start = Some(Instant::now() + Duration::from_secs(2));
            }
        }
        // Probes.
        let Some(address) = self.address else { return };
        let mut kill = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if !slot.running() || slot.init {
                continue;
            }
            let ports = slot.container.ports.clone().unwrap_or_default();
            let now = Instant::now();
            if let Some(probe) = slot.startup.as_mut().filter(|p| !p.passing) {
                if probe.due(now) && probe.run(address, &ports).await == Verdict::Failed {
                    kill.push((i, "Startup probe failed"));
                }
                continue;
            }
            if let Some(probe) = slot.liveness.as_mut() {
                if probe.due(now) && probe.run(address, &ports).await == Verdict::Failed {
                    kill.push((i, "Liveness probe failed"));
                    continue;
                }
            }
            if let Some(probe) = slot.readiness.as_mut() {
                if probe.due(now) {
                    probe.run(address, &ports).await;
                }
            }
        }
        for (i, why) in kill {
            tracing::info!(pod = %self.name, container = %self.slots[i].container.name, "{why}: restarting");
            let grace = self.grace();
            self.stop(i, grace).await;
        }
    }

    fn grace(&self) -> Duration {
        let seconds = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or(self
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30)
            .max(0);
        Duration::from_secs(seconds as u64)
    }

    async fn start(&mut self, index: usize) -> anyhow::Result<()> {
        let network = self.network.clone().context("no pod network")?;
        let address = self.address.context("no pod address")?;
        // Volumes are written again before each start, so a restarted container sees a
        // ConfigMap's current contents, as it eventually would under a kubelet.
        match volumes::prepare(&self.shared.client, &self.pod, address, &self.dir).await {
            Ok(dirs) => self.volumes = dirs,
            Err(error) => bail!("volumes: {error}"),
        }
        let container = self.slots[index].container.clone();
        let env = self.environment(&container, address).await?;
        let spec = self.container_spec(&container, &env)?;
        let log_path = self.log_path(&container.name);
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        {
            use std::io::Write as _;
            writeln!(
                log,
                "=== oxbow-node-agent: start {} (restart {}) ===",
                container.name, self.slots[index].restarts
            )?;
        }
        let json = serde_json::to_string(&spec)?;
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", network.path()))
            .args([
                "--",
                "unshare",
                "--mount",
                "--uts",
                "--propagation",
                "private",
                "--",
            ])
            .arg(&self.shared.config.agent_binary)
            .arg("run-container")
            .arg(json)
            .env_clear()
            .envs(&env)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true);
        let child = command.spawn().context("spawning nsenter")?;
        let now = Instant::now();
        let slot = &mut self.slots[index];
        slot.child = Some(child);
        slot.started = Some(now);
        slot.started_at = Some(Timestamp::now());
        slot.waiting = None;
        slot.next_start = None;
        slot.startup = container
            .startup_probe
            .clone()
            .map(|p| ProbeState::new(p, now));
        slot.liveness = container
            .liveness_probe
            .clone()
            .map(|p| ProbeState::new(p, now));
        slot.readiness = container
            .readiness_probe
            .clone()
            .map(|p| ProbeState::new(p, now));
        tracing::info!(pod = %self.name, container = %container.name, "container started");
        Ok(())
    }

    fn container_spec(
        &self,
        container: &Container,
        env: &BTreeMap<String, String>,
    ) -> anyhow::Result<ContainerSpec> {
        let image = container.image.clone().unwrap_or_default();
        let entrypoint = self.shared.config.binary_for(&image)?;
        let expand = |items: &Option<Vec<String>>| -> Vec<String> {
            items
                .iter()
                .flatten()
                .map(|a| downward::expand(a, env))
                .collect()
        };
        let (program, args) = match &container.command {
            Some(command) if !command.is_empty() => {
                let mut command = expand(&Some(command.clone()));
                let first = command.remove(0);
                // The image has one program; a command naming it by path means that program.
                let program = if std::path::Path::new(&first).file_name() == entrypoint.file_name()
                {
                    entrypoint.clone()
                } else {
                    PathBuf::from(first)
                };
                command.extend(expand(&container.args));
                (program, command)
            }
            _ => (entrypoint, expand(&container.args)),
        };
        let mut binds = Vec::new();
        for mount in container.volume_mounts.iter().flatten() {
            let source = self
                .volumes
                .get(&mount.name)
                .with_context(|| format!("volume {} is not in the pod", mount.name))?;
            let source = match mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
                Some(sub) => source.join(sub),
                None => source.clone(),
            };
            binds.push(Bind {
                source,
                target: PathBuf::from(&mount.mount_path),
                read_only: mount.read_only.unwrap_or(false),
            });
        }
        let pod_security = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.clone())
            .unwrap_or_default();
        let security = container.security_context.clone().unwrap_or_default();
        let uid = security
            .run_as_user
            .or(pod_security.run_as_user)
            .map(|u| u as u32);
        let gid = security
            .run_as_group
            .or(pod_security.run_as_group)
            .map(|g| g as u32);
        if security.run_as_non_root.or(pod_security.run_as_non_root) == Some(true)
            && uid.unwrap_or(0) == 0
        {
            bail!("container has runAsNonRoot and image will run as root");
        }
        Ok(ContainerSpec {
            program,
            args,
            binds,
            hostname: self.hostname(),
            uid,
            gid,
            working_dir: container.working_dir.as_ref().map(PathBuf::from),
            read_only_root: security.read_only_root_filesystem.unwrap_or(false),
        })
    }

    fn hostname(&self) -> String {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.hostname.clone())
            .or(self.pod.metadata.name.clone())
            .unwrap_or_default()
    }

    async fn environment(
        &self,
        container: &Container,
        address: Ipv4Addr,
    ) -> anyhow::Result<BTreeMap<String, String>> {
        let namespace = self.pod.metadata.namespace.clone().unwrap_or_default();
        let mut vars = BTreeMap::from([
            (
                "PATH".to_string(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            ),
            ("HOSTNAME".to_string(), self.hostname()),
            ("KUBERNETES_SERVICE_HOST".to_string(), GATEWAY.to_string()),
            ("KUBERNETES_SERVICE_PORT".to_string(), API_PORT.to_string()),
            (
                "KUBERNETES_SERVICE_PORT_HTTPS".to_string(),
                API_PORT.to_string(),
            ),
            (
                "KUBERNETES_PORT".to_string(),
                format!("tcp://{GATEWAY}:{API_PORT}"),
            ),
        ]);
        let client = &self.shared.client;
        for source in container.env_from.iter().flatten() {
            let prefix = source.prefix.clone().unwrap_or_default();
            let data = if let Some(cm) = &source.config_map_ref {
                volumes::config_map(client, &namespace, &cm.name, cm.optional.unwrap_or(false))
                    .await
            } else if let Some(s) = &source.secret_ref {
                volumes::secret(client, &namespace, &s.name, s.optional.unwrap_or(false)).await
            } else {
                continue;
            }
            .map_err(|e| anyhow::anyhow!("envFrom: {e}"))?;
            for (key, value) in data {
                vars.insert(
                    format!("{prefix}{key}"),
                    String::from_utf8_lossy(&value).into_owned(),
                );
            }
        }
        for var in container.env.iter().flatten() {
            let value = match (&var.value, &var.value_from) {
                (Some(value), _) => downward::expand(value, &vars),
                (None, Some(from)) => {
                    if let Some(field) = &from.field_ref {
                        downward::field(&self.pod, address, &field.field_path)?
                    } else if let Some(key) = &from.config_map_key_ref {
                        let data = volumes::config_map(
                            client,
                            &namespace,
                            &key.name,
                            key.optional.unwrap_or(false),
                        )
                        .await
                        .map_err(|e| anyhow::anyhow!("env {}: {e}", var.name))?;
                        match data.get(&key.key) {
                            Some(v) => String::from_utf8_lossy(v).into_owned(),
                            None if key.optional == Some(true) => continue,
                            None => bail!(
                                "env {}: configmap {} has no key {}",
                                var.name,
                                key.name,
                                key.key
                            ),
                        }
                    } else if let Some(key) = &from.secret_key_ref {
                        let data = volumes::secret(
                            client,
                            &namespace,
                            &key.name,
                            key.optional.unwrap_or(false),
                        )
                        .await
                        .map_err(|e| anyhow::anyhow!("env {}: {e}", var.name))?;
                        match data.get(&key.key) {
                            Some(v) => String::from_utf8_lossy(v).into_owned(),
                            None if key.optional == Some(true) => continue,
                            None => bail!(
                                "env {}: secret {} has no key {}",
                                var.name,
                                key.name,
                                key.key
                            ),
                        }
                    } else {
                        bail!("env {}: unsupported valueFrom", var.name);
                    }
                }
                (None, None) => String::new(),
            };
            vars.insert(var.name.clone(), value);
        }
        Ok(vars)
    }

    /// Stops one container: its preStop hook, SIGTERM, then SIGKILL after `grace`.
    async fn stop(&mut self, index: usize, grace: Duration) {
        let deadline = Instant::now() + grace;
        let hook = self.slots[index]
            .container
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.clone());
        if let (Some(hook), true) = (hook, self.slots[index].running()) {
            self.pre_stop(&hook, deadline).await;
        }
        let slot = &mut self.slots[index];
        let Some(mut child) = slot.child.take() else {
            return;
        };
        if let Some(pid) = child.id().and_then(|p| Pid::from_raw(p as i32)) {
            let _ = rustix::process::kill_process(pid, Signal::TERM);
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let status = match tokio::time::timeout(remaining, child.wait()).await {
            Ok(Ok(status)) => Some(status),
            _ => {
                let _ = child.start_kill();
                child.wait().await.ok()
            }
        };
        let code = status.map(|s| exit_code(&s)).unwrap_or(137);
        slot.last = Some(ContainerStateTerminated {
            exit_code: code,
            reason: Some(if code == 0 { "Completed" } else { "Error" }.to_string()),
            started_at: slot.started_at.map(Time),
            finished_at: Some(Time(Timestamp::now())),
            ..ContainerStateTerminated::default()
        });
        slot.restarts += 1;
        slot.next_start = Some(Instant::now());
        slot.waiting = Some(("ContainerCreating".to_string(), String::new()));
    }

    async fn pre_stop(&mut self, hook: &LifecycleHandler, deadline: Instant) {
        if let Some(sleep) = &hook.sleep {
            let wanted = Duration::from_secs(sleep.seconds.max(0) as u64);
            let until = (Instant::now() + wanted).min(deadline);
            tokio::time::sleep_until(until.into()).await;
        } else if hook.exec.is_some() || hook.http_get.is_some() {
            tracing::warn!(pod = %self.name, "exec and httpGet preStop hooks are not supported by the node agent");
        }
    }

    async fn finish(&mut self, ending: Ending) -> anyhow::Result<()> {
        let grace = match ending {
            Ending::Graceful => self.grace(),
            Ending::Now => Duration::ZERO,
        };
        tracing::info!(pod = %self.name, grace_s = grace.as_secs(), "stopping the pod");
        let indexes: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].running())
            .collect();
        let stops = indexes.len();
        // Containers stop together, each with the whole grace period.
        for i in indexes {
            self.stop(i, grace).await;
        }
        for slot in &mut self.slots {
            slot.finished = true;
            slot.next_start = None;
        }
        if stops > 0 {
            self.publish().await;
        }
        if matches!(ending, Ending::Graceful) {
            let uid = self.pod.metadata.uid.clone();
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid,
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            if let Err(error) = self.api.delete(&self.name_only(), &params).await {
                if !is_gone(&error) {
                    tracing::warn!(pod = %self.name, "final delete: {error}");
                }
            }
        }
        Ok(())
    }

    fn name_only(&self) -> String {
        self.pod.metadata.name.clone().unwrap_or_default()
    }

    async fn cleanup(&mut self) {
        for slot in &mut self.slots {
            if let Some(mut child) = slot.child.take() {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
        if let Some(network) = self.network.take() {
            network.delete();
        }
        if let Some(address) = self.address.take() {
            self.shared.addresses.release(address);
        }
        let volumes = self.dir.join("volumes");
        if volumes.exists() {
            let _ = std::fs::remove_dir_all(volumes);
        }
    }

    fn condition(&mut self, kind: &str, ok: bool, reason: Option<&str>) -> PodCondition {
        let status = if ok { "True" } else { "False" }.to_string();
        let entry = self
            .transitions
            .entry(kind.to_string())
            .or_insert_with(|| (status.clone(), Timestamp::now()));
        if entry.0 != status {
            *entry = (status.clone(), Timestamp::now());
        }
        PodCondition {
            type_: kind.to_string(),
            status,
            last_transition_time: Some(Time(entry.1)),
            reason: (!ok).then(|| reason.map(str::to_string)).flatten(),
            ..PodCondition::default()
        }
    }

    /// Writes the pod's status when it changed.
    async fn publish(&mut self) {
        let initialized = self.slots.iter().filter(|s| s.init).all(|s| s.finished);
        let containers: Vec<&Slot> = self.slots.iter().filter(|s| !s.init).collect();
        let all_ready = !containers.is_empty() && containers.iter().all(|s| s.ready());
        let all_done = !containers.is_empty() && containers.iter().all(|s| s.finished);
        let phase = if !initialized || containers.iter().all(|s| s.started.is_none()) {
            "Pending"
        } else if all_done {
            if containers
                .iter()
                .all(|s| s.last.as_ref().is_some_and(|t| t.exit_code == 0))
            {
                "Succeeded"
            } else {
                "Failed"
            }
        } else {
            "Running"
        };
        let networked = self.network.is_some();
        let conditions = vec![
            self.condition("PodReadyToStartContainers", networked, None),
            self.condition("Initialized", initialized, Some("ContainersNotInitialized")),
            self.condition("Ready", all_ready, Some("ContainersNotReady")),
            self.condition("ContainersReady", all_ready, Some("ContainersNotReady")),
            self.condition("PodScheduled", true, None),
        ];
        let mut init_statuses = Vec::new();
        let mut statuses = Vec::new();
        for slot in &self.slots {
            let mut status = slot.status();
            if let (Some(message), None) = (&self.volume_message, slot.started_at) {
                status.state = Some(ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some("ContainerCreating".to_string()),
                        message: Some(message.clone()),
                    }),
                    ..ContainerState::default()
                });
            }
            if slot.init {
                init_statuses.push(status);
            } else {
                statuses.push(status);
            }
        }
        let address = self.address.map(|a| a.to_string());
        let status = PodStatus {
            phase: Some(phase.to_string()),
            conditions: Some(conditions),
            host_ip: Some(GATEWAY.to_string()),
            host_ips: Some(vec![HostIP {
                ip: GATEWAY.to_string(),
            }]),
            pod_ip: address.clone(),
            pod_ips: address.map(|ip| vec![PodIP { ip }]),
            start_time: Some(Time(self.started)),
            init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
            container_statuses: Some(statuses),
            qos_class: self.pod.status.as_ref().and_then(|s| s.qos_class.clone()),
            ..PodStatus::default()
        };
        let Ok(value) = serde_json::to_value(&status) else {
            return;
        };
        if self.last_status.as_ref() == Some(&value) {
            return;
        }
        let patch = serde_json::json!({ "status": value });
        match self
            .api
            .patch_status(
                &self.name_only(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => self.last_status = Some(value),
            Err(error) if is_gone(&error) => self.last_status = Some(value),
            Err(error) => tracing::warn!(pod = %self.name, "writing pod status: {error}"),
        }
    }
}

fn exit_code(status: &std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

fn is_gone(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404 || status.code == 409)
}
