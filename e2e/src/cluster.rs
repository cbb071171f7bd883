//! A local Oxbow cluster: several real `oxbow-broker` processes on 127.0.0.1, each with its
//! own generated `server.properties`, that tests can kill, pause, stop and restart.
//!
//! Brokers are named by their `node.id`, 1 to N. The first one or three are voters of the
//! metadata quorum (`process.roles=broker,controller`), the rest are brokers only. Every
//! broker gets a PLAINTEXT listener for clients and a CONTROLLER listener for quorum traffic,
//! a data directory and a log file under one temporary directory; ports are chosen once, so a
//! restarted broker comes back at the same addresses over the same data.
//!
//! A broker binds its client listener only after it has registered with the quorum, so all
//! brokers of a cluster are spawned before any is waited for: a voter cannot register alone.
//!
//! Ports come from below the kernel's ephemeral range, so that while a broker is down no client
//! connection can take its port as a local address and keep it from coming back.
//!
//! With [`ClusterOptions::network_namespaces`] (inside a [`crate::sandbox`]) each broker runs
//! in a network namespace of its own at its own address instead, and the test can cut the
//! network between brokers while its clients reach them all.
//!
//! Like [`crate::harness`], the API is blocking: process control and the metadata polls are
//! short and bounded, and the rdkafka clients tests drive run on librdkafka's own threads.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::fmt::Write as _;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    describe_quorum_request, describe_quorum_response, DescribeQuorumRequest,
    DescribeQuorumResponse, MetadataRequest, MetadataResponse, RequestHeader, ResponseHeader,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message as _;
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tempfile::TempDir;

use crate::harness::{broker_log_outputs, FakeClock};
use crate::netns::BrokerNetwork;

/// A broker's `node.id`.
pub type NodeId = i32;

/// How long the brokers of a new cluster may take to form the quorum and accept clients.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a broker may take to exit after SIGTERM: its controlled shutdown waits up to 15 s
/// for leadership to move away.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(40);
/// Lines of each broker log quoted when a test fails.
pub const LOG_TAIL_LINES: usize = 60;
/// Broker log filter unless `OXBOW_LOG` is set (or a test sets it with [`ClusterOptions::env`]).
pub const DEFAULT_LOG_FILTER: &str = "info,openraft=warn";
/// Metadata version the harness asks with (v9+ is flexible; v5+ has offline replicas).
const METADATA_VERSION: i16 = 12;
/// Timeout of one harness request to a broker.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response the harness reads.
const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// What to start: the binary, how many brokers, how many of them vote, and extra settings.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    binary: PathBuf,
    brokers: usize,
    voters: usize,
    settings: BTreeMap<String, String>,
    node_settings: BTreeMap<NodeId, BTreeMap<String, String>>,
    env: Vec<(String, String)>,
    pod_prefix: Option<String>,
    /// A separate inter-broker listener: its name and security protocol.
    inter_broker: Option<(String, String)>,
    /// Each broker in a network namespace of its own (see [`crate::netns`]).
    network_namespaces: bool,
    /// Each broker on two log directories, so one can fail ([`Cluster::fail_log_dir`]).
    two_log_dirs: bool,
    /// Each broker's wall clock movable ([`Cluster::set_clock`]).
    fake_clocks: bool,
    /// The voters are controller-only nodes (`process.roles=controller`).
    dedicated_controllers: bool,
}

impl ClusterOptions {
    /// Three brokers, all voters, with Kafka's defaults for everything else.
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            brokers: 3,
            voters: 3,
            settings: BTreeMap::new(),
            node_settings: BTreeMap::new(),
            env: Vec::new(),
            pod_prefix: None,
            inter_broker: None,
            network_namespaces: false,
            two_log_dirs: false,
            fake_clocks: false,
            dedicated_controllers: false,
        }
    }

    /// How many nodes to run (node ids 1..=count): all brokers, except the voters when they
    /// are [`Self::dedicated_controllers`].
    pub fn brokers(mut self, count: usize) -> Self {
        self.brokers = count;
        self
    }

    /// How many of the brokers (the lowest node ids) vote in the metadata quorum: 1 or 3.
    pub fn voters(mut self, count: usize) -> Self {
        self.voters = count;
        self
    }

    /// A `server.properties` setting for every broker; it overrides what the harness writes.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.insert(key.into(), value.into());
        self
    }

    /// A setting for one broker only, applied after the cluster-wide ones.
    pub fn set_on(
        mut self,
        node: NodeId,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.node_settings
            .entry(node)
            .or_default()
            .insert(key.into(), value.into());
        self
    }

    /// An environment variable for every broker process (e.g. `OXBOW_LOG=debug`).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Brokers replicate and heartbeat over a listener of their own, `name` with `protocol`
    /// (e.g. `INTERNAL`, `SSL`), on a port of its own; clients and the harness keep the
    /// PLAINTEXT listener. The protocol's own settings (`ssl.*`) go in with [`Self::set`].
    pub fn inter_broker_listener(
        mut self,
        name: impl Into<String>,
        protocol: impl Into<String>,
    ) -> Self {
        self.inter_broker = Some((name.into(), protocol.into()));
        self
    }

    /// Each broker in a network namespace of its own on a bridge, so the test can cut the
    /// network between brokers ([`Cluster::cut`], [`Cluster::isolate`]) while its clients
    /// still reach every one. Only inside a [`crate::sandbox`].
    pub fn network_namespaces(mut self) -> Self {
        self.network_namespaces = true;
        self
    }

    /// Each broker on two log directories (`data` and `data-1` in its home; the first holds
    /// the cluster metadata), so a test can fail the second ([`Cluster::fail_log_dir`]).
    pub fn two_log_dirs(mut self) -> Self {
        self.two_log_dirs = true;
        self
    }

    /// The voters are controller-only nodes, as in Kafka's `controller.properties`
    /// (`process.roles=controller`, the controller listener alone); the other nodes are
    /// brokers that do not vote. [`Cluster::node_ids`] and [`Cluster::up`] list brokers only.
    pub fn dedicated_controllers(mut self) -> Self {
        self.dedicated_controllers = true;
        self
    }

    /// Each broker's wall clock follows a file the test writes ([`Cluster::set_clock`]:
    /// libfaketime, see [`FakeClock`]).
    pub fn fake_clocks(mut self) -> Self {
        self.fake_clocks = true;
        self
    }

    /// Brokers named like the pods of a StatefulSet: no `node.id` in their files, and
    /// `POD_NAME=<prefix>-<id>` in their environment, from which they take their ids.
    pub fn pod_names(mut self, prefix: impl Into<String>) -> Self {
        self.pod_prefix = Some(prefix.into());
        self
    }
}

/// What the harness last did to a broker process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Running,
    /// Stopped with SIGSTOP: alive, holding its sockets, answering nothing.
    Paused,
    /// Not running: killed, stopped, or exited on its own.
    Down,
}

#[derive(Debug)]
struct Node {
    id: NodeId,
    kafka: SocketAddr,
    controller: SocketAddr,
    metrics: SocketAddr,
    /// The port of the separate inter-broker listener, when there is one.
    internal: SocketAddr,
    config_path: PathBuf,
    log_path: PathBuf,
    data_dir: PathBuf,
    child: Option<Child>,
    paused: bool,
    starts: u32,
    /// Its movable wall clock, with [`ClusterOptions::fake_clocks`].
    clock: Option<FakeClock>,
}

/// One partition as a broker's Metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionView {
    pub partition: i32,
    /// -1 when the partition has no leader.
    pub leader: NodeId,
    pub leader_epoch: i32,
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    pub offline: Vec<NodeId>,
    pub error_code: i16,
}

impl PartitionView {
    /// Whether every replica is in sync and there is a leader.
    pub fn fully_in_sync(&self) -> bool {
        let replicas: BTreeSet<_> = self.replicas.iter().collect();
        let isr: BTreeSet<_> = self.isr.iter().collect();
        self.leader >= 0 && !replicas.is_empty() && replicas == isr
    }
}

/// N broker processes and the temporary directory holding their configs, data and logs.
/// Dropping it kills every broker; the directory is kept when a test is failing, so the logs
/// can be read afterwards (its path is printed), or always when `OXBOW_KEEP_CLUSTER` is set.
#[derive(Debug)]
pub struct Cluster {
    options: ClusterOptions,
    nodes: Vec<Node>,
    network: Option<BrokerNetwork>,
    // Last field: removed after the processes are gone (fields drop in declaration order).
    dir: Option<TempDir>,
}

impl Cluster {
    /// Writes every broker's config, spawns them all and waits until each accepts clients
    /// and the metadata of each lists every broker and a controller.
    pub fn start(options: ClusterOptions) -> Result<Cluster> {
        ensure!(options.brokers >= 1, "a cluster needs at least one broker");
        ensure!(
            (1..=options.brokers).contains(&options.voters),
            "{} voters for {} brokers",
            options.voters,
            options.brokers
        );
        let dir = tempfile::Builder::new()
            .prefix("oxbow-cluster-")
            .tempdir()
            .context("creating the cluster's directory")?;
        let ids: Vec<NodeId> = (1..=options.brokers)
            .map(NodeId::try_from)
            .collect::<Result<_, _>>()
            .context("too many brokers")?;
        let network = if options.network_namespaces {
            Some(BrokerNetwork::create(&ids)?)
        } else {
            None
        };
        let ports = match &network {
            // Each broker has its own addresses: the usual ports on its own address.
            Some(network) => ids
                .iter()
                .map(|id| {
                    let address = network.address(*id)?;
                    Ok([9092, 9093, 9404, 9094].map(|port| SocketAddr::from((address, port))))
                })
                .collect::<Result<Vec<_>>>()?
                .concat(),
            None => reserve_ports(options.brokers * 4)?,
        };
        let mut nodes = Vec::with_capacity(options.brokers);
        for (index, chunk) in ports.chunks(4).enumerate() {
            let id = NodeId::try_from(index + 1).context("too many brokers")?;
            let home = dir.path().join(format!("broker-{id}"));
            fs::create_dir_all(&home).with_context(|| format!("creating {}", home.display()))?;
            nodes.push(Node {
                id,
                kafka: chunk[0],
                controller: chunk[1],
                metrics: chunk[2],
                internal: chunk[3],
                config_path: home.join("server.properties"),
                log_path: home.join("broker.log"),
                data_dir: home.join("data"),
                child: None,
                paused: false,
                starts: 0,
                clock: if options.fake_clocks {
                    Some(FakeClock::new(home.join("clock"))?)
                } else {
                    None
                },
            });
        }
        let mut cluster = Cluster {
            options,
            nodes,
            network,
            dir: Some(dir),
        };
        for node in &cluster.nodes {
            let text = cluster.properties(node);
            fs::write(&node.config_path, text)
                .with_context(|| format!("writing {}", node.config_path.display()))?;
        }
        let all: Vec<NodeId> = cluster.nodes.iter().map(|n| n.id).collect();
        cluster.start_nodes(&all)?;
        let count = cluster.node_ids().len();
        cluster.wait_for_brokers(count, START_TIMEOUT)?;
        Ok(cluster)
    }

    /// The `server.properties` of one broker: what the harness decides, then the overrides.
    fn properties(&self, node: &Node) -> String {
        let voters = self
            .nodes
            .iter()
            .take(self.options.voters)
            .map(|n| format!("{}@{}", n.id, n.controller))
            .collect::<Vec<_>>()
            .join(",");
        let is_voter = usize::try_from(node.id).is_ok_and(|id| id <= self.options.voters);
        let mut settings = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            settings.insert(k.to_string(), v);
        };
        if self.options.pod_prefix.is_none() {
            put("node.id", node.id.to_string());
        }
        let controller_only = is_voter && self.options.dedicated_controllers;
        put(
            "process.roles",
            match (is_voter, controller_only) {
                (_, true) => "controller",
                (true, false) => "broker,controller",
                (false, _) => "broker",
            }
            .to_string(),
        );
        put("controller.quorum.voters", voters);
        match &self.options.inter_broker {
            _ if controller_only => {
                put("listeners", format!("CONTROLLER://{}", node.controller));
            }
            None => {
                put(
                    "listeners",
                    format!(
                        "PLAINTEXT://{},CONTROLLER://{}",
                        node.kafka, node.controller
                    ),
                );
                put(
                    "advertised.listeners",
                    format!("PLAINTEXT://{}", node.kafka),
                );
            }
            Some((name, protocol)) => {
                put(
                    "listeners",
                    format!(
                        "PLAINTEXT://{},{name}://{},CONTROLLER://{}",
                        node.kafka, node.internal, node.controller
                    ),
                );
                put(
                    "advertised.listeners",
                    format!("PLAINTEXT://{},{name}://{}", node.kafka, node.internal),
                );
                put(
                    "listener.security.protocol.map",
                    format!("PLAINTEXT:PLAINTEXT,{name}:{protocol},CONTROLLER:PLAINTEXT"),
                );
                put("inter.broker.listener.name", name.clone());
            }
        }
        put("controller.listener.names", "CONTROLLER".to_string());
        put(
            "log.dirs",
            self.log_dirs(node.id)
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(","),
        );
        put("metrics.address", node.metrics.to_string());
        for (k, v) in &self.options.settings {
            put(k, v.clone());
        }
        if let Some(own) = self.options.node_settings.get(&node.id) {
            for (k, v) in own {
                put(k, v.clone());
            }
        }
        let mut text = format!(
            "# Generated by oxbow-e2e for broker {} of a {}-broker local cluster.\n",
            node.id,
            self.nodes.len()
        );
        for (k, v) in settings {
            let _ = writeln!(text, "{k}={v}");
        }
        text
    }

    /// Node ids of every broker, running or not.
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .map(|n| n.id)
            .filter(|id| self.is_broker(*id))
            .collect()
    }

    /// Whether a node is a broker: all are, but the voters with
    /// [`ClusterOptions::dedicated_controllers`].
    pub fn is_broker(&self, node: NodeId) -> bool {
        !self.options.dedicated_controllers || !self.voter_ids().contains(&node)
    }

    /// Node ids of the voters of the metadata quorum.
    pub fn voter_ids(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .map(|n| n.id)
            .take(self.options.voters)
            .collect()
    }

    /// `host:port` of every broker, for a client's `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .filter(|n| self.is_broker(n.id))
            .map(|n| n.kafka.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client address of one broker.
    pub fn address(&self, node: NodeId) -> SocketAddr {
        self.node(node).kafka
    }

    /// The controller listener of one node.
    pub fn controller_address(&self, node: NodeId) -> SocketAddr {
        self.node(node).controller
    }

    /// The broker with this client address, if any.
    pub fn node_at(&self, address: &str) -> Option<NodeId> {
        self.nodes
            .iter()
            .find(|n| n.kafka.to_string() == address)
            .map(|n| n.id)
    }

    pub fn data_dir(&self, node: NodeId) -> &Path {
        &self.node(node).data_dir
    }

    pub fn log_path(&self, node: NodeId) -> &Path {
        &self.node(node).log_path
    }

    /// Moves one broker's wall clock to `offset` from real time (`+10m`, `-1h`, `+0`), with
    /// [`ClusterOptions::fake_clocks`].
    pub fn set_clock(&self, node: NodeId, offset: &str) -> Result<()> {
        self.node(node)
            .clock
            .as_ref()
            .with_context(|| format!("broker {node}'s clock is real: start the cluster with ClusterOptions::fake_clocks"))?
            .set(offset)
    }

    /// The log directories of one broker, in `log.dirs` order.
    pub fn log_dirs(&self, node: NodeId) -> Vec<PathBuf> {
        let first = self.data_dir(node).to_path_buf();
        if self.options.two_log_dirs {
            let second = first.with_file_name("data-1");
            vec![first, second]
        } else {
            vec![first]
        }
    }

    /// Makes log directory `index` of a broker fail, as a disk that is gone: the directory
    /// is removed and a file stands in its place, so the broker's next write there fails.
    pub fn fail_log_dir(&self, node: NodeId, index: usize) -> Result<PathBuf> {
        let dir = self
            .log_dirs(node)
            .get(index)
            .cloned()
            .with_context(|| format!("broker {node} has no log directory {index}"))?;
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        fs::write(&dir, b"a failed disk").with_context(|| format!("writing {}", dir.display()))?;
        Ok(dir)
    }

    /// A new, empty disk in place of a failed log directory (the broker creates the
    /// directory when it starts).
    pub fn replace_log_dir(&self, node: NodeId, index: usize) -> Result<()> {
        let dir = self
            .log_dirs(node)
            .get(index)
            .cloned()
            .with_context(|| format!("broker {node} has no log directory {index}"))?;
        if dir.is_file() {
            fs::remove_file(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        Ok(())
    }

    pub fn config_path(&self, node: NodeId) -> &Path {
        &self.node(node).config_path
    }

    pub fn pid(&self, node: NodeId) -> Option<u32> {
        self.node(node).child.as_ref().map(Child::id)
    }

    /// What the broker process is doing now (it may have exited on its own).
    pub fn state(&mut self, node: NodeId) -> NodeState {
        let node = self.node_mut(node);
        let alive = match node.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_)) | Err(_)) | None => false,
        };
        match (alive, node.paused) {
            (true, false) => NodeState::Running,
            (true, true) => NodeState::Paused,
            (false, _) => NodeState::Down,
        }
    }

    /// Brokers that are running and not paused.
    pub fn up(&mut self) -> Vec<NodeId> {
        self.node_ids()
            .into_iter()
            .filter(|id| self.state(*id) == NodeState::Running)
            .collect()
    }

    /// SIGKILL, as a crash or an OOM kill would; the process is reaped.
    pub fn kill(&mut self, node: NodeId) -> Result<()> {
        let node = self.node_mut(node);
        node.paused = false;
        let Some(mut child) = node.child.take() else {
            return Ok(());
        };
        // Fails only when the process already exited, which is fine: `wait` still reaps it.
        let _ = child.kill();
        child
            .wait()
            .with_context(|| format!("reaping killed broker {}", node.id))?;
        Ok(())
    }

    /// SIGSTOP: the broker stops answering but keeps its connections and state, like a
    /// process stalled by a long GC pause or a frozen VM.
    pub fn pause(&mut self, node: NodeId) -> Result<()> {
        ensure!(
            self.state(node) == NodeState::Running,
            "broker {node} is not running, cannot pause it"
        );
        signal(self.pid(node), "STOP")?;
        self.node_mut(node).paused = true;
        Ok(())
    }

    /// SIGCONT after [`Cluster::pause`].
    pub fn resume(&mut self, node: NodeId) -> Result<()> {
        ensure!(
            self.state(node) == NodeState::Paused,
            "broker {node} is not paused, cannot resume it"
        );
        signal(self.pid(node), "CONT")?;
        self.node_mut(node).paused = false;
        Ok(())
    }

    /// SIGTERM (a controlled shutdown) and the exit status. A paused broker is resumed first
    /// so it can act on the signal; one that has not exited within [`STOP_TIMEOUT`] is killed
    /// and reported as an error.
    pub fn stop(&mut self, node: NodeId) -> Result<ExitStatus> {
        if self.state(node) == NodeState::Paused {
            self.resume(node)?;
        }
        let tail = self.log_tail(node, LOG_TAIL_LINES);
        let entry = self.node_mut(node);
        let Some(mut child) = entry.child.take() else {
            bail!("broker {node} is not running");
        };
        if let Some(status) = child.try_wait().context("checking the broker process")? {
            return Ok(status);
        }
        signal(Some(child.id()), "TERM")?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().context("waiting for the broker to exit")? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "broker {node} did not exit within {STOP_TIMEOUT:?} of SIGTERM; killed it\n{tail}"
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a broker again at the same addresses over the same data, and waits until it
    /// accepts clients (it has registered with the quorum again). A running broker is stopped
    /// with SIGTERM first, a paused one is killed.
    pub fn restart(&mut self, node: NodeId) -> Result<()> {
        match self.state(node) {
            NodeState::Running => {
                let status = self.stop(node)?;
                if !status.success() {
                    bail!(
                        "broker {node} exited with {status} when stopped for a restart\n{}",
                        self.log_tail(node, LOG_TAIL_LINES)
                    );
                }
            }
            NodeState::Paused => self.kill(node)?,
            NodeState::Down => {}
        }
        self.start_nodes(&[node])
    }

    /// Starts brokers that are down, all at once, and waits until each accepts clients.
    /// Starting them together matters when the quorum has lost its majority: each voter waits
    /// for the others before it can register.
    pub fn start_nodes(&mut self, ids: &[NodeId]) -> Result<()> {
        for id in ids {
            ensure!(
                self.state(*id) == NodeState::Down,
                "broker {id} is already running"
            );
            self.spawn(*id)?;
        }
        let deadline = Instant::now() + START_TIMEOUT;
        let mut waiting: Vec<NodeId> = ids.to_vec();
        while !waiting.is_empty() {
            let mut still = Vec::new();
            for id in waiting {
                if self.state(id) == NodeState::Down {
                    let status = self.node_mut(id).child.take().map(|mut c| c.wait());
                    bail!(
                        "broker {id} exited ({status:?}) before accepting connections\n{}",
                        self.log_tail(id, LOG_TAIL_LINES)
                    );
                }
                let address = if self.is_broker(id) {
                    self.address(id)
                } else {
                    self.node(id).controller
                };
                if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
                    still.push(id);
                }
            }
            waiting = still;
            if waiting.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                let tails: Vec<String> = waiting
                    .iter()
                    .map(|id| self.log_tail(*id, LOG_TAIL_LINES))
                    .collect();
                bail!(
                    "brokers {waiting:?} did not accept connections within {START_TIMEOUT:?}\n{}",
                    tails.join("\n")
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Removes every network cut, starts every broker that is down and resumes every paused
    /// one.
    pub fn heal(&mut self) -> Result<()> {
        self.heal_network()?;
        let mut down = Vec::new();
        let all: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        for id in all {
            match self.state(id) {
                NodeState::Paused => self.resume(id)?,
                NodeState::Down => down.push(id),
                NodeState::Running => {}
            }
        }
        if down.is_empty() {
            return Ok(());
        }
        self.start_nodes(&down)
    }

    /// Drops every packet broker `from` sends to broker `to` (see [`BrokerNetwork::cut`]).
    pub fn cut(&mut self, from: NodeId, to: NodeId) -> Result<()> {
        self.network_mut()?.cut(from, to)
    }

    /// Drops each packet broker `from` sends to broker `to` with probability `loss`.
    pub fn degrade(&mut self, from: NodeId, to: NodeId, loss: f64) -> Result<()> {
        self.network_mut()?.degrade(from, to, loss)
    }

    /// Limits what broker `from` sends to broker `to` to `kbit` kilobits a second.
    pub fn slow(&mut self, from: NodeId, to: NodeId, kbit: u32) -> Result<()> {
        self.network_mut()?.slow(from, to, kbit)
    }

    /// Cuts two brokers from each other, both ways.
    pub fn cut_between(&mut self, a: NodeId, b: NodeId) -> Result<()> {
        self.network_mut()?.cut_between(a, b)
    }

    /// Cuts a broker from every other broker, both ways; clients still reach it.
    pub fn isolate(&mut self, node: NodeId) -> Result<()> {
        self.network_mut()?.isolate(node)
    }

    /// Removes every network cut and lossy link (nothing to do without network namespaces).
    pub fn heal_network(&mut self) -> Result<()> {
        match self.network.as_mut() {
            Some(network) => network.heal(),
            None => Ok(()),
        }
    }

    /// The network cuts in force, as (from, to) pairs.
    pub fn cuts(&self) -> Vec<(NodeId, NodeId)> {
        self.network
            .as_ref()
            .map(BrokerNetwork::cuts)
            .unwrap_or_default()
    }

    fn network_mut(&mut self) -> Result<&mut BrokerNetwork> {
        self.network.as_mut().context(
            "this cluster's brokers share the host's network: start it with ClusterOptions::network_namespaces to cut it",
        )
    }

    fn spawn(&mut self, id: NodeId) -> Result<()> {
        let binary = self.options.binary.clone();
        let mut env = self.options.env.clone();
        if let Some(prefix) = &self.options.pod_prefix {
            env.push(("POD_NAME".to_string(), format!("{prefix}-{id}")));
        }
        if let Some(clock) = &self.node(id).clock {
            env.extend(clock.env());
        }
        let node = self.node_mut(id);
        node.starts += 1;
        let (stdout, stderr) = broker_log_outputs(
            &node.log_path,
            &format!(
                "start #{} of broker {} ({})",
                node.starts,
                node.id,
                binary.display()
            ),
        )?;
        // openraft's own info lines (every vote, every membership step) drown the broker's.
        let filter = std::env::var("OXBOW_LOG").unwrap_or_else(|_| DEFAULT_LOG_FILTER.to_string());
        let mut command = match &self.network {
            Some(network) => network.command(id, &binary)?,
            None => Command::new(&binary),
        };
        let node = self.node_mut(id);
        let child = command
            .arg("--config")
            .arg(&node.config_path)
            // Plain log lines, readable in a file and in a failing test's output.
            .env("NO_COLOR", "1")
            .env("OXBOW_LOG", filter)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("spawning {}", binary.display()))?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    fn node(&self, id: NodeId) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no broker {id} in this cluster"))
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no broker {id} in this cluster"))
    }

    /// Sends one request to one broker and waits for its response (blocking, bounded).
    pub fn request<R: Request>(
        &self,
        node: NodeId,
        request: &R,
        version: i16,
    ) -> Result<R::Response> {
        send_request(self.address(node), request, version)
            .with_context(|| format!("request to broker {node}"))
    }

    /// Metadata as one broker sees it: every topic when `topics` is `None`.
    pub fn metadata(&self, node: NodeId, topics: Option<&[&str]>) -> Result<MetadataResponse> {
        let request = MetadataRequest::default()
            .with_topics(topics.map(|list| {
                list.iter()
                    .map(|t| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string((*t).to_string()))))
                    })
                    .collect()
            }))
            .with_allow_auto_topic_creation(false);
        self.request(node, &request, METADATA_VERSION)
    }

    /// DescribeQuorum (v2) of the metadata partition, asked of one broker: the response and
    /// its partition. Fails on an error code.
    pub fn describe_quorum(
        &self,
        node: NodeId,
    ) -> Result<(
        DescribeQuorumResponse,
        describe_quorum_response::PartitionData,
    )> {
        let request = DescribeQuorumRequest::default().with_topics(vec![
            describe_quorum_request::TopicData::default()
                .with_topic_name(TopicName(StrBytes::from_static_str("__cluster_metadata")))
                .with_partitions(vec![describe_quorum_request::PartitionData::default()]),
        ]);
        let response = self.request(node, &request, 2)?;
        let partition = response
            .topics
            .first()
            .and_then(|t| t.partitions.first())
            .cloned()
            .context("DescribeQuorum answered no partition")?;
        ensure!(
            response.error_code == 0 && partition.error_code == 0,
            "broker {node}: {response:?}"
        );
        Ok((response, partition))
    }

    /// The leader of the metadata quorum (the active controller) as one broker's DescribeQuorum
    /// reports it; -1 while there is none.
    pub fn quorum_leader(&self, node: NodeId) -> Result<NodeId> {
        Ok(self.describe_quorum(node)?.1.leader_id.0)
    }

    /// The partitions of `topic` as one broker sees them, by index.
    pub fn partitions_seen_by(&self, node: NodeId, topic: &str) -> Result<Vec<PartitionView>> {
        let response = self.metadata(node, Some(&[topic]))?;
        let Some(found) = response
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
        else {
            bail!("broker {node} returned no metadata for topic {topic}");
        };
        if found.error_code != 0 {
            bail!(
                "broker {node}: metadata of topic {topic} has error code {}",
                found.error_code
            );
        }
        let mut partitions: Vec<PartitionView> = found
            .partitions
            .iter()
            .map(|p| PartitionView {
                partition: p.partition_index,
                leader: p.leader_id.0,
                leader_epoch: p.leader_epoch,
                replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                offline: p.offline_replicas.iter().map(|b| b.0).collect(),
                error_code: p.error_code,
            })
            .collect();
        partitions.sort_by_key(|p| p.partition);
        Ok(partitions)
    }

    /// The partitions of `topic` as the first running broker that answers sees them.
    pub fn partitions(&mut self, topic: &str) -> Result<Vec<PartitionView>> {
        let mut errors = Vec::new();
        for node in self.up() {
            match self.partitions_seen_by(node, topic) {
                Ok(partitions) => return Ok(partitions),
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        bail!("no running broker described {topic}: {errors:?}")
    }

    /// The leader of one partition as a running broker sees it (-1 for none).
    pub fn leader_of(&mut self, topic: &str, partition: i32) -> Result<NodeId> {
        self.partitions(topic)?
            .iter()
            .find(|p| p.partition == partition)
            .map(|p| p.leader)
            .with_context(|| format!("{topic} has no partition {partition}"))
    }

    /// Polls `check` until it returns `Ok`, at most for `timeout`. `Err` from `check` means
    /// "not yet", and says why; the last reason is in the timeout error.
    pub fn wait_until<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&mut Cluster) -> Result<T>,
    ) -> Result<T> {
        let started = Instant::now();
        let deadline = started + timeout;
        loop {
            let reason = match check(self) {
                Ok(value) => return Ok(value),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "timed out after {:.1?} waiting until {what}; last: {reason}",
                    started.elapsed()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the Metadata of every running broker lists `count` brokers and an active
    /// controller that is one of the voters (with dedicated controllers, one of the brokers).
    pub fn wait_for_brokers(&mut self, count: usize, timeout: Duration) -> Result<()> {
        let voters = self.voter_ids();
        self.wait_until(
            &format!("{count} brokers and a controller are listed"),
            timeout,
            |cluster| {
                for node in cluster.up() {
                    let metadata = cluster.metadata(node, Some(&[]))?;
                    let listed: Vec<i32> = metadata.brokers.iter().map(|b| b.node_id.0).collect();
                    ensure!(
                        listed.len() == count,
                        "broker {node} lists brokers {listed:?}"
                    );
                    // A controller-only node is not for clients: a broker names itself.
                    let controllers = if cluster.options.dedicated_controllers {
                        &listed
                    } else {
                        &voters
                    };
                    ensure!(
                        controllers.contains(&metadata.controller_id.0),
                        "broker {node} names controller {}",
                        metadata.controller_id.0
                    );
                }
                Ok(())
            },
        )
    }

    /// Waits until every running broker sees every partition of `topic` with a running
    /// leader, and returns the partitions.
    pub fn wait_for_leaders(
        &mut self,
        topic: &str,
        timeout: Duration,
    ) -> Result<Vec<PartitionView>> {
        self.wait_until(
            &format!("every partition of {topic} has a running leader"),
            timeout,
            |cluster| {
                let up = cluster.up();
                let mut seen = Vec::new();
                for node in &up {
                    let partitions = cluster.partitions_seen_by(*node, topic)?;
                    ensure!(!partitions.is_empty(), "{topic} has no partitions");
                    for p in &partitions {
                        ensure!(
                            up.contains(&p.leader),
                            "broker {node} sees {topic}-{} led by {} (running: {up:?})",
                            p.partition,
                            p.leader
                        );
                    }
                    seen = partitions;
                }
                Ok(seen)
            },
        )
    }

    /// Waits until every running broker sees every partition of `topic` with a running
    /// leader and all replicas in the ISR, and returns the partitions.
    pub fn wait_for_full_isr(
        &mut self,
        topic: &str,
        timeout: Duration,
    ) -> Result<Vec<PartitionView>> {
        self.wait_until(
            &format!("every partition of {topic} is fully in sync"),
            timeout,
            |cluster| {
                let up = cluster.up();
                let mut seen = Vec::new();
                for node in &up {
                    let partitions = cluster.partitions_seen_by(*node, topic)?;
                    ensure!(!partitions.is_empty(), "{topic} has no partitions");
                    for p in &partitions {
                        ensure!(
                            p.fully_in_sync() && up.contains(&p.leader),
                            "broker {node} sees {topic}-{}: leader {} replicas {:?} isr {:?} (running: {up:?})",
                            p.partition,
                            p.leader,
                            p.replicas,
                            p.isr
                        );
                    }
                    seen = partitions;
                }
                Ok(seen)
            },
        )
    }

    /// The last `lines` lines of one broker's log, headed by its path.
    pub fn log_tail(&self, node: NodeId, lines: usize) -> String {
        let path = &self.node(node).log_path;
        match fs::read(path) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let all: Vec<&str> = text.lines().collect();
                let tail = &all[all.len().saturating_sub(lines)..];
                format!(
                    "--- broker {node}: last {} lines of {} ---\n{}\n--- end of broker {node} log ---",
                    tail.len(),
                    path.display(),
                    tail.join("\n")
                )
            }
            Err(err) => format!("(broker {node} log {} unreadable: {err})", path.display()),
        }
    }

    /// The log tails of every broker.
    pub fn log_tails(&self, lines: usize) -> String {
        self.nodes
            .iter()
            .map(|n| self.log_tail(n.id, lines))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every segment of one partition on one broker, concatenated oldest first: replicas that
    /// hold the same records hold the same bytes, wherever their segments roll.
    pub fn log_bytes(&self, node: NodeId, topic: &str, partition: i32) -> Result<Vec<u8>> {
        let name = format!("{topic}-{partition}");
        let dirs = self.log_dirs(node);
        let dir = dirs
            .iter()
            .map(|d| d.join(&name))
            .find(|d| d.is_dir())
            .unwrap_or_else(|| dirs[0].join(&name));
        let mut segments: Vec<PathBuf> = fs::read_dir(&dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("listing {}", dir.display()))?
            .into_iter()
            .filter(|path| path.extension().is_some_and(|e| e == "log"))
            .collect();
        // Zero-padded base offsets: the names sort as the offsets do.
        segments.sort();
        let mut bytes = Vec::new();
        for segment in segments {
            bytes.extend(
                fs::read(&segment).with_context(|| format!("reading {}", segment.display()))?,
            );
        }
        Ok(bytes)
    }

    /// Lines of one broker's log that contain `needle` (all of its starts).
    pub fn log_lines(&self, node: NodeId, needle: &str) -> Vec<String> {
        fs::read(&self.node(node).log_path)
            .map(|bytes| {
                String::from_utf8_lossy(&bytes)
                    .lines()
                    .filter(|l| l.contains(needle))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Adds every broker's log tail to a failed outcome and keeps the cluster directory, so a
    /// failing test shows what the brokers said.
    pub fn explain<T>(&mut self, outcome: Result<T>) -> Result<T> {
        outcome.map_err(|err| {
            let kept = self.keep_dir();
            anyhow!(
                "{err:#}\n\n{}\n(cluster directory kept at {kept})",
                self.log_tails(LOG_TAIL_LINES)
            )
        })
    }

    /// Keeps the cluster directory after the cluster is dropped; returns its path.
    pub fn keep_dir(&mut self) -> String {
        match self.dir.as_mut() {
            Some(dir) => {
                dir.disable_cleanup(true);
                dir.path().display().to_string()
            }
            None => "(gone)".to_string(),
        }
    }

    /// GET `/ready` on a broker's metrics port: its HTTP status and body.
    pub fn readiness(&self, node: NodeId) -> Result<(u16, String)> {
        let address = self.node(node).metrics.to_string();
        let response = crate::http::request(&address, "GET", "/ready", None)
            .with_context(|| format!("broker {node}'s readiness"))?;
        Ok((response.status, response.body.trim().to_string()))
    }

    /// GETs the Prometheus text of one broker.
    pub fn scrape_metrics(&self, node: NodeId) -> Result<String> {
        let address = self.node(node).metrics.to_string();
        crate::http::get(&address, "/metrics").with_context(|| format!("broker {node}'s metrics"))
    }
}

/// Clients: rdkafka configs reaching the whole cluster, topic creation, reading a topic back,
/// delivery recording.
impl Cluster {
    /// A client config with every broker as bootstrap server.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", self.bootstrap())
            .set("socket.timeout.ms", "10000")
            // Brokers die and come back in these tests; reconnect quickly.
            .set("reconnect.backoff.max.ms", "1000")
            .set("topic.metadata.refresh.interval.ms", "1000");
        config
    }

    /// Creates a topic through rdkafka's admin client with the cluster's placement, and waits
    /// until all its replicas are in sync.
    pub fn create_topic(
        &mut self,
        name: &str,
        partitions: i32,
        replication: i32,
        configs: &[(&str, &str)],
    ) -> Result<Vec<PartitionView>> {
        let topic = configs.iter().fold(
            NewTopic::new(name, partitions, TopicReplication::Fixed(replication)),
            |topic, (k, v)| topic.set(k, v),
        );
        self.create(topic)?;
        self.wait_for_full_isr(name, TOPIC_TIMEOUT)
    }

    /// Creates a topic with the given replicas for each partition (preferred leader first),
    /// and waits until all its replicas are in sync.
    pub fn create_topic_assigned(
        &mut self,
        name: &str,
        assignment: &[&[NodeId]],
        configs: &[(&str, &str)],
    ) -> Result<Vec<PartitionView>> {
        let count = i32::try_from(assignment.len()).context("too many partitions")?;
        let topic = configs.iter().fold(
            NewTopic::new(name, count, TopicReplication::Variable(assignment)),
            |topic, (k, v)| topic.set(k, v),
        );
        self.create(topic)?;
        self.wait_for_full_isr(name, TOPIC_TIMEOUT)
    }

    /// Every record of `topic` ([`read_all`] with this cluster's client settings).
    pub fn read_all(&self, topic: &str, partitions: i32) -> Result<Vec<(i32, i64, String)>> {
        read_all(self.client_config(), topic, partitions)
    }

    fn create(&self, topic: NewTopic<'_>) -> Result<()> {
        let name = topic.name.to_string();
        let admin: AdminClient<DefaultClientContext> = self
            .client_config()
            .create()
            .context("creating an admin client")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building a runtime for the admin client")?;
        let results = runtime
            .block_on(admin.create_topics(
                &[topic],
                &AdminOptions::new().operation_timeout(Some(TOPIC_TIMEOUT)),
            ))
            .with_context(|| format!("creating topic {name}"))?;
        for result in results {
            if let Err((topic, code)) = result {
                bail!("creating topic {topic}: {code:?}");
            }
        }
        Ok(())
    }
}

/// How long a new topic may take to be created and fully in sync.
pub const TOPIC_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`Cluster::read_all`] may go on before the records still missing fail it.
pub const READ_ALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The outcome of one produced record, as its delivery report told it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub value: String,
    pub partition: i32,
    /// -1 when the delivery failed.
    pub offset: i64,
    /// `None` when acknowledged.
    pub error: Option<RDKafkaErrorCode>,
    /// When the record was handed to the producer.
    pub sent: Instant,
    /// When the delivery report arrived.
    pub reported: Instant,
}

/// Every delivery report of a producer, in the order they arrived.
#[derive(Debug, Clone, Default)]
pub struct DeliveryLog(Arc<Mutex<Vec<Delivery>>>);

impl DeliveryLog {
    pub fn snapshot(&self) -> Vec<Delivery> {
        self.0.lock().map(|d| d.clone()).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.0.lock().map(|d| d.len()).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&self, delivery: Delivery) {
        if let Ok(mut log) = self.0.lock() {
            log.push(delivery);
        }
    }
}

/// A producer context that records every delivery report into a [`DeliveryLog`]. Send each
/// record with `Box::new(Instant::now())` as its delivery opaque.
#[derive(Debug, Clone, Default)]
pub struct RecordingContext {
    pub log: DeliveryLog,
}

impl ClientContext for RecordingContext {}

impl ProducerContext for RecordingContext {
    type DeliveryOpaque = Box<Instant>;

    fn delivery(&self, result: &DeliveryResult<'_>, sent: Box<Instant>) {
        let reported = Instant::now();
        let (message, error) = match result {
            Ok(message) => (message, None),
            Err((error, message)) => (
                message,
                Some(
                    error
                        .rdkafka_error_code()
                        .unwrap_or(RDKafkaErrorCode::Unknown),
                ),
            ),
        };
        let value = message
            .payload()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        self.log.push(Delivery {
            value,
            partition: message.partition(),
            offset: if error.is_none() {
                message.offset()
            } else {
                -1
            },
            error,
            sent: *sent,
            reported,
        });
    }
}

/// A producer context that keeps the last lines librdkafka logged (its debug lines too, with
/// the client's `debug` set), so a test can show what a client was doing when it got stuck.
/// Clones share the lines: one log can follow the successive instances of a client.
#[derive(Debug, Clone)]
pub struct ClientLog {
    lines: Arc<Mutex<VecDeque<String>>>,
    since: Instant,
    capacity: usize,
}

impl ClientLog {
    /// Keeps the last `capacity` lines, each stamped with the time since `since`.
    pub fn new(since: Instant, capacity: usize) -> ClientLog {
        ClientLog {
            lines: Arc::new(Mutex::new(VecDeque::new())),
            since,
            capacity,
        }
    }

    /// The last `count` lines, oldest first.
    pub fn tail(&self, count: usize) -> Vec<String> {
        self.lines
            .lock()
            .map(|lines| {
                lines
                    .iter()
                    .skip(lines.len().saturating_sub(count))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl ClientContext for ClientLog {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if let Ok(mut lines) = self.lines.lock() {
            if lines.len() >= self.capacity {
                lines.pop_front();
            }
            lines.push_back(format!(
                "[{:>6.1?}] {level:?} {fac}: {message}",
                self.since.elapsed()
            ));
        }
    }
}

impl ProducerContext for ClientLog {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &DeliveryResult<'_>, _: ()) {}
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let failing = thread::panicking();
        if failing {
            eprintln!("{}", self.log_tails(LOG_TAIL_LINES));
        }
        if failing || std::env::var_os("OXBOW_KEEP_CLUSTER").is_some() {
            eprintln!("cluster directory kept at {}", self.keep_dir());
        }
        for id in self.node_ids() {
            let _ = self.kill(id);
        }
    }
}

/// Sends a signal with the `kill` command (no libc: the workspace forbids unsafe code).
fn signal(pid: Option<u32>, name: &str) -> Result<()> {
    let pid = pid.context("the broker has no process")?;
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .with_context(|| format!("running `kill -{name} {pid}`"))?;
    ensure!(status.success(), "`kill -{name} {pid}` failed: {status}");
    Ok(())
}

/// Ports handed out by this process, so concurrent clusters in one test binary never share.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// `count` distinct loopback addresses that were free a moment ago, below the ephemeral range
/// when the kernel says where it starts (else any free port).
fn reserve_ports(count: usize) -> Result<Vec<SocketAddr>> {
    let ephemeral_start = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let low: u16 = 10_000;
    let mut handed = HANDED_OUT
        .lock()
        .map_err(|_| anyhow!("port registry poisoned"))?;
    let handed = handed.get_or_insert_with(HashSet::new);
    // Held until every port is chosen, so one call never returns the same port twice.
    let mut held = Vec::with_capacity(count);
    let random = std::collections::hash_map::RandomState::new();
    let mut attempt: u64 = 0;
    while held.len() < count {
        attempt += 1;
        ensure!(attempt < 10_000, "no free loopback ports found");
        let listener = if ephemeral_start > low + 1000 {
            let mut hasher = random.build_hasher();
            hasher.write_u64(attempt);
            let span = u64::from(ephemeral_start - low);
            let port = low + u16::try_from(hasher.finish() % span).unwrap_or(0);
            if handed.contains(&port) {
                continue;
            }
            match TcpListener::bind(("127.0.0.1", port)) {
                Ok(listener) => listener,
                Err(_) => continue,
            }
        } else {
            TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?
        };
        let address = listener.local_addr().context("reading a bound address")?;
        if handed.insert(address.port()) {
            held.push(listener);
        }
    }
    held.iter()
        .map(|l| l.local_addr().context("reading a bound address"))
        .collect()
}

/// One request on a fresh blocking connection; the codec is `kafka-protocol`'s.
fn send_request<R: Request>(address: SocketAddr, request: &R, version: i16) -> Result<R::Response> {
    const CORRELATION_ID: i32 = 1;
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(CORRELATION_ID)
        .with_client_id(Some(StrBytes::from_static_str("oxbow-e2e-cluster")));
    let mut frame = BytesMut::new();
    frame.put_i32(0);
    header
        .encode(&mut frame, R::header_version(version))
        .map_err(|e| anyhow!("encoding the request header: {e}"))?;
    request
        .encode(&mut frame, version)
        .map_err(|e| anyhow!("encoding the request: {e}"))?;
    let size = i32::try_from(frame.len() - 4).context("request too large")?;
    frame[..4].copy_from_slice(&size.to_be_bytes());

    let mut stream = TcpStream::connect_timeout(&address, REQUEST_TIMEOUT)
        .with_context(|| format!("connecting to {address}"))?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    stream
        .write_all(&frame)
        .with_context(|| format!("sending to {address}"))?;
    let mut size = [0u8; 4];
    stream
        .read_exact(&mut size)
        .with_context(|| format!("reading the response size from {address}"))?;
    let size = usize::try_from(i32::from_be_bytes(size)).context("negative response size")?;
    ensure!(
        size <= MAX_RESPONSE,
        "response of {size} bytes is too large"
    );
    let mut body = vec![0u8; size];
    stream
        .read_exact(&mut body)
        .with_context(|| format!("reading the response from {address}"))?;
    let mut body = bytes::Bytes::from(body);
    let header = ResponseHeader::decode(&mut body, R::Response::header_version(version))
        .map_err(|e| anyhow!("decoding the response header: {e}"))?;
    ensure!(
        header.correlation_id == CORRELATION_ID,
        "response correlation id {} for request {CORRELATION_ID}",
        header.correlation_id
    );
    let response = R::Response::decode(&mut body, version)
        .map_err(|e| anyhow!("decoding the response: {e}"))?;
    ensure!(
        !body.has_remaining(),
        "{} bytes left after the response",
        body.remaining()
    );
    Ok(response)
}

/// Sends `values` to `topic` (round robin over `partitions`) with acks from every in-sync
/// replica and waits for every delivery report: the values acknowledged, or an error naming
/// the first that failed. `config` reaches the cluster.
pub fn produce_acknowledged(
    mut config: ClientConfig,
    topic: &str,
    partitions: i32,
    values: &[String],
) -> Result<Vec<String>> {
    let producer: ThreadedProducer<RecordingContext> = config
        .set("acks", "all")
        .set("linger.ms", "5")
        .create_with_context(RecordingContext::default())
        .context("creating a producer")?;
    for (n, value) in values.iter().enumerate() {
        let partition = i32::try_from(n)? % partitions.max(1);
        producer
            .send(
                BaseRecord::<(), _, _>::with_opaque_to(topic, Box::new(Instant::now()))
                    .payload(value)
                    .partition(partition),
            )
            .map_err(|(e, _)| anyhow!("sending {value}: {e}"))?;
    }
    producer.flush(Duration::from_secs(60))?;
    let deliveries = producer.context().log.snapshot();
    ensure!(
        deliveries.len() == values.len(),
        "{} of {} deliveries reported",
        deliveries.len(),
        values.len()
    );
    if let Some(failed) = deliveries.iter().find(|d| d.error.is_some()) {
        bail!("delivery of {} failed: {:?}", failed.value, failed.error);
    }
    Ok(deliveries.into_iter().map(|d| d.value).collect())
}

/// Every record of `topic`, read from the beginning of each of its `partitions` up to the
/// end offset each has now: (partition, offset, value), in the order they arrived. A
/// client error (a broker that is down, a leader moving) is retried until a minute has
/// passed without the read completing; the last one is in the error then. `config` reaches
/// the cluster.
pub fn read_all(
    mut config: ClientConfig,
    topic: &str,
    partitions: i32,
) -> Result<Vec<(i32, i64, String)>> {
    let consumer: BaseConsumer = config
        .set("group.id", format!("read-all-{topic}"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .context("creating a reader")?;
    let mut ends = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .with_context(|| format!("high watermark of {topic}-{partition}"))?;
        ends.insert(partition, high);
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut next: BTreeMap<i32, i64> = (0..partitions).map(|p| (p, 0)).collect();
    let mut records = Vec::new();
    let mut last_error = None;
    let deadline = Instant::now() + READ_ALL_TIMEOUT;
    while next.iter().any(|(p, n)| *n < ends[p]) {
        ensure!(
            Instant::now() < deadline,
            "reading {topic} back stalled at {next:?} of {ends:?}; last error {last_error:?}"
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = match message {
            Ok(message) => message,
            Err(e) => {
                last_error = Some(e);
                continue;
            }
        };
        let value = String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
        next.insert(message.partition(), message.offset() + 1);
        records.push((message.partition(), message.offset(), value));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_ports_are_distinct_and_below_the_ephemeral_range() -> Result<()> {
        let ports = reserve_ports(30)?;
        let distinct: HashSet<u16> = ports.iter().map(SocketAddr::port).collect();
        ensure!(distinct.len() == 30, "{ports:?}");
        if let Some(start) = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
            .filter(|start| *start > 11_000)
        {
            ensure!(
                distinct.iter().all(|p| *p < start),
                "{ports:?} reach into the ephemeral range from {start}"
            );
        }
        let again = reserve_ports(30)?;
        ensure!(
            again.iter().all(|a| !distinct.contains(&a.port())),
            "a port was handed out twice"
        );
        Ok(())
    }

    #[test]
    fn generated_properties_name_the_voters_and_both_listeners() -> Result<()> {
        let options = ClusterOptions::new("/bin/false")
            .brokers(4)
            .voters(3)
            .set("min.insync.replicas", "2")
            .set_on(4, "broker.rack", "b");
        let ports = reserve_ports(16)?;
        let nodes: Vec<Node> = (0..4)
            .map(|i| Node {
                id: i + 1,
                kafka: ports[i as usize * 4],
                controller: ports[i as usize * 4 + 1],
                metrics: ports[i as usize * 4 + 2],
                internal: ports[i as usize * 4 + 3],
                config_path: PathBuf::new(),
                log_path: PathBuf::new(),
                data_dir: PathBuf::from(format!("/tmp/d{i}")),
                child: None,
                paused: false,
                starts: 0,
                clock: None,
            })
            .collect();
        let cluster = Cluster {
            options,
            nodes,
            network: None,
            dir: None,
        };
        let voter = cluster.properties(&cluster.nodes[0]);
        let broker_only = cluster.properties(&cluster.nodes[3]);
        let voters = format!(
            "controller.quorum.voters=1@{},2@{},3@{}",
            ports[1], ports[5], ports[9]
        );
        ensure!(voter.contains(&voters), "{voter}");
        ensure!(broker_only.contains(&voters), "{broker_only}");
        ensure!(voter.contains("process.roles=broker,controller"), "{voter}");
        ensure!(
            broker_only.contains("process.roles=broker\n"),
            "{broker_only}"
        );
        ensure!(
            broker_only.contains(&format!(
                "listeners=PLAINTEXT://{},CONTROLLER://{}",
                ports[12], ports[13]
            )),
            "{broker_only}"
        );
        ensure!(
            !broker_only.contains("inter.broker.listener.name"),
            "{broker_only}"
        );
        ensure!(broker_only.contains("broker.rack=b"), "{broker_only}");
        ensure!(!voter.contains("broker.rack"), "{voter}");
        ensure!(voter.contains("min.insync.replicas=2"), "{voter}");

        // A separate inter-broker listener gets its own port, protocol and name.
        let mut cluster = cluster;
        cluster.options = cluster
            .options
            .clone()
            .inter_broker_listener("INTERNAL", "SSL");
        let text = cluster.properties(&cluster.nodes[3]);
        for line in [
            format!(
                "listeners=PLAINTEXT://{},INTERNAL://{},CONTROLLER://{}",
                ports[12], ports[15], ports[13]
            ),
            format!(
                "advertised.listeners=PLAINTEXT://{},INTERNAL://{}",
                ports[12], ports[15]
            ),
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,INTERNAL:SSL,CONTROLLER:PLAINTEXT"
                .to_string(),
            "inter.broker.listener.name=INTERNAL".to_string(),
        ] {
            ensure!(text.contains(&line), "{line} missing from\n{text}");
        }
        Ok(())
    }
}
