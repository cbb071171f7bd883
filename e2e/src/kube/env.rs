//! A whole test cluster: sandbox, control plane, node agent, and the operator installed with
//! its Helm chart, for tests (through [`sandboxed`]) and for a person (`oxbow-kube-up`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use kube::Client;

use super::agent::node::NodeSpec;
use super::control_plane::{self, ControlPlane};
use super::sandbox::{self, Sandbox};
use crate::harness::workspace_binary;
pub use crate::sandbox::sandboxed;

/// The namespace the chart is installed in.
pub const OPERATOR_NAMESPACE: &str = "oxbow-system";
/// The image names the chart and the operator use by default; the node agent maps them to the
/// checkout's binaries.
pub const BROKER_IMAGE: &str = "oxbow-broker";
pub const OPERATOR_IMAGE: &str = "oxbow-operator";

/// The repository's root.
pub fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Python example `examples/python/<name>` with `localhost:9092` replaced by `bootstrap`.
pub fn python_example_source(name: &str, bootstrap: &str) -> anyhow::Result<String> {
    let path = repository().join("examples/python").join(name);
    let source =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    if !source.contains("localhost:9092") {
        bail!("{name} no longer names localhost:9092");
    }
    Ok(source.replace("localhost:9092", bootstrap))
}

/// Runs [`python_example_source`]: its stdout, or an error with its output.
pub fn run_python_example(name: &str, bootstrap: &str) -> anyhow::Result<String> {
    let output = Command::new("python3")
        .args(["-c", &python_example_source(name, bootstrap)?])
        .stdin(Stdio::null())
        .output()?;
    if !output.status.success() {
        bail!(
            "{name} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The runtime the operator tests run their environment in: two workers, as the machine has
/// two cores.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Runs `python3 -c script args..`, a client that prints one JSON object on stdout, and
/// returns that object with the client's stderr (librdkafka's log) added as `log`.
/// The start every confluent-kafka client of the operator tests shares: the imports, the action
/// and the client configuration (JSON) from the arguments, client errors gathered through
/// `error_cb`, and `finish(result)`, which prints the result with those errors as one JSON
/// object and exits.
const CONFLUENT_PREAMBLE: &str = r#"
import hashlib, json, os, socket, ssl, sys, time
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

action, config = sys.argv[1], json.loads(sys.argv[2])
errors = []
config['error_cb'] = lambda e: errors.append(str(e))

def finish(result):
    result['errors'] = errors
    print(json.dumps(result))
    sys.exit(0)
"#;

/// Runs `body` after [`CONFLUENT_PREAMBLE`] as `python3 -c <script> <action> <config as
/// JSON> <args..>` and returns the JSON object it prints, as [`python_json`] does.
pub fn confluent_client(
    body: &str,
    action: &str,
    config: &serde_json::Value,
    args: &[&str],
) -> anyhow::Result<serde_json::Value> {
    let script = format!("{CONFLUENT_PREAMBLE}{body}");
    let config = config.to_string();
    python_json(&script, &[&[action, config.as_str()], args].concat())
}

pub fn python_json(script: &str, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut result: serde_json::Value = serde_json::from_str(stdout.trim()).with_context(|| {
        format!(
            "the client ({}) printed no result: {stdout}{stderr}",
            args.first().copied().unwrap_or_default()
        )
    })?;
    result["log"] = stderr.into_owned().into();
    Ok(result)
}

/// Options of [`KubeEnv::start`].
#[derive(Debug, Clone)]
pub struct EnvOptions {
    pub nodes: Vec<NodeSpec>,
    /// Helm values (`--set`) for the chart.
    pub helm_values: Vec<String>,
}

impl Default for EnvOptions {
    fn default() -> EnvOptions {
        EnvOptions {
            nodes: ["node-a=zone-a", "node-b=zone-b", "node-c=zone-c"]
                .iter()
                .filter_map(|n| n.parse().ok())
                .collect(),
            helm_values: Vec::new(),
        }
    }
}

/// The cluster of one test.
pub struct KubeEnv {
    pub dir: tempfile::TempDir,
    pub sandbox: Sandbox,
    pub plane: ControlPlane,
    agent: Option<Child>,
    agent_args: Vec<String>,
    pub client: Client,
    pub state_dir: PathBuf,
}

impl std::fmt::Debug for KubeEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeEnv")
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl KubeEnv {
    /// Sandbox network, control plane, node agent; then the operator with `helm install`,
    /// waiting until its pod is Ready.
    pub async fn start(options: EnvOptions) -> anyhow::Result<KubeEnv> {
        let started = Instant::now();
        // Test builds may link two rustls providers (ring, and aws-lc through test-only
        // dependencies): the kube client takes ring, as the operator does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::Builder::new().prefix("oxbow-kube-").tempdir()?;
        let sandbox = sandbox::setup(dir.path())?;
        let bin = control_plane::bin_dir()?;
        let plane = ControlPlane::start(&dir.path().join("control-plane"), &bin)?;
        eprintln!(
            "control plane ready after {:.1}s",
            started.elapsed().as_secs_f64()
        );
        let kubeconfig = kube::config::Kubeconfig::read_from(&plane.kubeconfig)?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
        let client = Client::try_from(config)?;
        let state_dir = dir.path().join("node-agent");
        let mut agent_args = vec![
            format!("--kubeconfig={}", plane.kubeconfig.display()),
            format!("--state-dir={}", state_dir.display()),
            format!("--hosts-file={}", sandbox.hosts_file.display()),
            format!(
                "--image={BROKER_IMAGE}={}",
                workspace_binary("oxbow-broker", "OXBOW_BROKER_BIN")?.display()
            ),
            format!(
                "--image={OPERATOR_IMAGE}={}",
                workspace_binary("oxbow-operator", "OXBOW_OPERATOR_BIN")?.display()
            ),
        ];
        for node in &options.nodes {
            agent_args.push(format!("--node={}={}", node.name, node.zone));
        }
        let mut env = KubeEnv {
            dir,
            sandbox,
            plane,
            agent: None,
            agent_args,
            client,
            state_dir,
        };
        env.start_agent()?;
        env.wait("the nodes to be Ready", Duration::from_secs(60), |env| {
            let out = env.kubectl(&[
                "get",
                "nodes",
                "-o",
                "jsonpath={.items[*].status.conditions[?(@.type==\"Ready\")].status}",
            ])?;
            Ok(out.split_whitespace().filter(|s| *s == "True").count() == options.nodes.len())
        })?;
        env.helm_install(&options.helm_values)?;
        eprintln!(
            "operator installed after {:.1}s",
            started.elapsed().as_secs_f64()
        );
        Ok(env)
    }

    /// (Re)starts the node agent.
    pub fn start_agent(&mut self) -> anyhow::Result<()> {
        let agent = workspace_binary("oxbow-node-agent", "OXBOW_NODE_AGENT_BIN")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("node-agent.log"))?;
        let child = Command::new(agent)
            .args(&self.agent_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the node agent")?;
        self.agent = Some(child);
        Ok(())
    }

    /// `kubectl` with the admin kubeconfig: its stdout, or an error with its stderr.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = self
            .plane
            .kubectl()
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        if !output.status.success() {
            bail!(
                "kubectl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// `kubectl apply -f -` of `yaml`.
    pub fn apply(&self, yaml: &str) -> anyhow::Result<String> {
        use std::io::Write as _;
        let mut child = self
            .plane
            .kubectl()
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("kubectl's stdin")?
            .write_all(yaml.as_bytes())?;
        let output = child.wait_with_output()?;
        if !output.status.success() {
            bail!(
                "kubectl apply failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// `helm` (built by `scripts/k8s-tools.sh`) against this cluster.
    pub fn helm(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = Command::new(self.plane.bin.join("helm"))
            .args(args)
            .env("KUBECONFIG", &self.plane.kubeconfig)
            .env("HELM_CACHE_HOME", self.dir.path().join("helm/cache"))
            .env("HELM_CONFIG_HOME", self.dir.path().join("helm/config"))
            .env("HELM_DATA_HOME", self.dir.path().join("helm/data"))
            .current_dir(repository())
            .stdin(Stdio::null())
            .output()?;
        if !output.status.success() {
            bail!(
                "helm {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn helm_install(&self, values: &[String]) -> anyhow::Result<()> {
        let mut args = vec![
            "install",
            "oxbow",
            "charts/oxbow",
            "--namespace",
            OPERATOR_NAMESPACE,
            "--create-namespace",
            "--set",
            "logFormat=text",
        ];
        for value in values {
            args.extend(["--set", value]);
        }
        self.helm(&args)?;
        self.wait(
            "the operator's pod to be Ready",
            Duration::from_secs(90),
            |env| {
                let out = env.kubectl(&[
                    "-n",
                    OPERATOR_NAMESPACE,
                    "get",
                    "pods",
                    "-l",
                    "app.kubernetes.io/instance=oxbow",
                    "-o",
                    "jsonpath={.items[*].status.conditions[?(@.type==\"Ready\")].status}",
                ])?;
                Ok(out.trim() == "True")
            },
        )
    }

    /// Field `field` (`status`, `reason`, `message`, ...) of condition `type_` of `object`.
    pub fn condition(
        &self,
        namespace: &str,
        object: &str,
        type_: &str,
        field: &str,
    ) -> anyhow::Result<String> {
        self.jsonpath(
            namespace,
            object,
            &format!("{{.status.conditions[?(@.type==\"{type_}\")].{field}}}"),
        )
    }

    /// `kubectl get` of one JSONPath of one object.
    pub fn jsonpath(&self, namespace: &str, object: &str, path: &str) -> anyhow::Result<String> {
        self.kubectl(&[
            "-n",
            namespace,
            "get",
            object,
            "-o",
            &format!("jsonpath={path}"),
        ])
    }

    /// `kubectl annotate --overwrite` of one object (`kind/name`) in `namespace`;
    /// `key-` removes the annotation.
    pub fn annotate(&self, namespace: &str, object: &str, annotation: &str) -> anyhow::Result<()> {
        self.kubectl(&[
            "-n",
            namespace,
            "annotate",
            "--overwrite",
            object,
            annotation,
        ])?;
        Ok(())
    }

    /// The operator's Prometheus metrics, as its pod serves them.
    pub fn operator_metrics(&self) -> anyhow::Result<String> {
        let ip = self.jsonpath(OPERATOR_NAMESPACE, "pods", "{.items[0].status.podIP}")?;
        crate::http::get(&format!("{ip}:8080"), "/metrics")
    }

    /// The operator's readiness gauge of one resource (`controller` is `kafkauser`, ...):
    /// `None` while it has no series.
    pub fn ready_gauge(&self, controller: &str, name: &str) -> anyhow::Result<Option<f64>> {
        let series = format!(
            "oxbow_operator_resource_ready{{controller=\"{controller}\",name=\"{name}\",namespace=\"default\"}} "
        );
        Ok(self
            .operator_metrics()?
            .lines()
            .find_map(|line| line.strip_prefix(&series)?.trim().parse::<f64>().ok()))
    }

    /// Waits until condition `type_` of `object` (`kind/name`) in `namespace` has `status`.
    pub fn wait_condition(
        &self,
        namespace: &str,
        object: &str,
        type_: &str,
        status: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let path = format!("{{.status.conditions[?(@.type==\"{type_}\")].status}}");
        self.wait(&format!("{object} {type_}={status}"), timeout, |env| {
            Ok(env.jsonpath(namespace, object, &path)? == status)
        })
    }

    /// Waits until the KafkaCluster `name` is Ready with `brokers` ready brokers and has
    /// observed its latest generation.
    pub fn wait_cluster_ready(
        &self,
        namespace: &str,
        name: &str,
        brokers: usize,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let object = format!("kafkacluster/{name}");
        self.wait(
            &format!("{object} Ready with {brokers} brokers"),
            timeout,
            |env| {
                let ready = env.jsonpath(
                    namespace,
                    &object,
                    "{.status.conditions[?(@.type==\"Ready\")].status}",
                )?;
                let ready_brokers = env.jsonpath(namespace, &object, "{.status.readyBrokers}")?;
                let generation = env.jsonpath(namespace, &object, "{.metadata.generation}")?;
                let observed = env.jsonpath(namespace, &object, "{.status.observedGeneration}")?;
                Ok(ready == "True"
                    && ready_brokers == brokers.to_string()
                    && generation == observed)
            },
        )
    }

    /// Polls `check` every half second until it says yes; an error after `timeout`, with the
    /// cluster's state and logs printed.
    pub fn wait(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&KubeEnv) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last_error = None;
        loop {
            match check(self) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(error) => last_error = Some(error),
            }
            if Instant::now() > deadline {
                self.dump();
                let detail = last_error
                    .map(|e| format!(" (last error: {e:#})"))
                    .unwrap_or_default();
                bail!("timed out after {timeout:?} waiting for {what}{detail}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Prints what a person debugging a failure looks at first: pods, events, and the tails of
    /// the node agent's, the operator's and each container's logs.
    pub fn dump(&self) {
        for args in [
            vec!["get", "pods", "-A", "-o", "wide"],
            vec![
                "get",
                "kafkaclusters,kafkatopics,kafkausers,kafkarebalances",
                "-A",
            ],
            vec!["get", "events", "-A", "--sort-by=.lastTimestamp"],
        ] {
            match self.kubectl(&args) {
                Ok(out) => eprintln!("--- kubectl {}\n{out}", args.join(" ")),
                Err(error) => eprintln!("--- kubectl {}: {error:#}", args.join(" ")),
            }
        }
        let mut logs = vec![self.dir.path().join("node-agent.log")];
        if let Ok(pods) = std::fs::read_dir(self.state_dir.join("pods")) {
            for pod in pods.flatten() {
                if let Ok(files) = std::fs::read_dir(pod.path()) {
                    logs.extend(
                        files
                            .flatten()
                            .map(|f| f.path())
                            .filter(|p| p.extension().is_some_and(|e| e == "log")),
                    );
                }
            }
        }
        for log in logs {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("--- {} (last {} lines)", log.display(), tail.len());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }

    /// Whether the node agent is still running.
    pub fn agent_running(&mut self) -> bool {
        self.agent
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops the node agent with SIGKILL, leaving its pods' processes running as a crashed
    /// kubelet would.
    pub fn kill_agent(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
    }
}

impl Drop for KubeEnv {
    fn drop(&mut self) {
        self.kill_agent();
        // Pods' processes are in their own process groups: end every process left in the
        // sandbox's pod namespaces.
        if let Ok(namespaces) = std::fs::read_dir("/run/netns") {
            for namespace in namespaces.flatten() {
                let name = namespace.file_name().to_string_lossy().into_owned();
                let _ = Command::new("ip")
                    .args(["netns", "pids", &name])
                    .output()
                    .map(|out| {
                        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                            let _ = Command::new("kill").args(["-9", pid]).status();
                        }
                    });
            }
        }
    }
}
