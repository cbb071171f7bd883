//! A cluster of real Apache Kafka brokers for tests that need several replicas: `count` KRaft
//! nodes, each broker and controller in one process, all of them voters of a static quorum
//! (`controller.quorum.voters`), on loopback, from the jars of `scripts/kafka-tools.sh`.

use std::fs;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use base64::Engine as _;
use tempfile::TempDir;

use crate::harness::free_local_addr;
use crate::kafka::{main_class, run_tool, JavaProcess};

/// How long the cluster may take to start (three JVMs electing a controller).
const START_TIMEOUT: Duration = Duration::from_secs(180);

pub struct KafkaCluster {
    nodes: Vec<(JavaProcess, SocketAddr)>,
    _dir: TempDir,
}

impl KafkaCluster {
    /// Formats and starts `count` nodes with Kafka's defaults plus `extra` settings
    /// (`key=value` lines), and waits until every one serves.
    pub fn start(count: usize, extra: &[&str]) -> Result<KafkaCluster> {
        ensure!(count >= 1, "a cluster needs at least one node");
        let dir = tempfile::Builder::new()
            .prefix("kafka-cluster-")
            .tempdir()?;
        let addresses = (0..count)
            .map(|_| Ok((free_local_addr()?, free_local_addr()?)))
            .collect::<Result<Vec<_>>>()?;
        let voters = addresses
            .iter()
            .enumerate()
            .map(|(i, (_, controller))| format!("{}@{controller}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        // As Kafka's own ids: never one that starts with '-', which reads as an option.
        let cluster_id = std::iter::repeat_with(|| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes())
        })
        .find(|id| !id.starts_with('-'))
        .context("a cluster id")?;
        let mut configs = Vec::with_capacity(count);
        for (index, (listener, controller)) in addresses.iter().enumerate() {
            let home = dir.path().join(format!("node-{}", index + 1));
            fs::create_dir_all(&home).with_context(|| format!("creating {}", home.display()))?;
            let mut settings = vec![
                "process.roles=broker,controller".to_string(),
                format!("node.id={}", index + 1),
                format!("controller.quorum.voters={voters}"),
                format!("listeners=PLAINTEXT://{listener},CONTROLLER://{controller}"),
                format!("advertised.listeners=PLAINTEXT://{listener}"),
                "controller.listener.names=CONTROLLER".to_string(),
                "inter.broker.listener.name=PLAINTEXT".to_string(),
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
                    .to_string(),
                format!("log.dirs={}", home.join("data").display()),
                "group.initial.rebalance.delay.ms=0".to_string(),
            ];
            settings.extend(extra.iter().map(|s| s.to_string()));
            let properties = home.join("server.properties");
            fs::write(&properties, settings.join("\n") + "\n")
                .with_context(|| format!("writing {}", properties.display()))?;
            let properties_arg = properties.to_string_lossy().into_owned();
            run_tool(
                "kafka-storage",
                &["format", "-t", &cluster_id, "-c", &properties_arg],
                None,
            )?
            .ok()
            .with_context(|| format!("formatting node {}'s storage", index + 1))?;
            configs.push((home, properties_arg));
        }
        let mut nodes = Vec::with_capacity(count);
        for (index, (home, properties)) in configs.iter().enumerate() {
            let process = JavaProcess::start(
                &format!("Kafka node {}", index + 1),
                main_class("kafka-server-start")?,
                &[properties],
                &home.join("kafka.log"),
            )?;
            nodes.push((process, addresses[index].0));
        }
        for (process, _) in &mut nodes {
            process.wait_for_log("Kafka Server started", START_TIMEOUT)?;
        }
        Ok(KafkaCluster { nodes, _dir: dir })
    }

    /// Every node's client address, comma-separated.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|(_, address)| address.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The last `lines` lines of every node's log.
    pub fn log_tails(&self, lines: usize) -> String {
        self.nodes
            .iter()
            .map(|(process, _)| process.log_tail(lines))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
