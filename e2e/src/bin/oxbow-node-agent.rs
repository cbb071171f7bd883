//! `oxbow-node-agent`: runs the pods of the tests' Kubernetes nodes as real processes (see
//! `oxbow_e2e::kube::agent`). Runs inside the sandbox of `oxbow_e2e::kube::sandbox`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use oxbow_e2e::kube::agent::exec::{self, ContainerSpec};
use oxbow_e2e::kube::agent::node::NodeSpec;
use oxbow_e2e::kube::agent::{self, AgentConfig};

#[derive(Debug, Parser)]
#[command(name = "oxbow-node-agent", about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Admin kubeconfig of the cluster.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// A node to register and run pods for: NAME or NAME=ZONE (repeatable).
    #[arg(long = "node")]
    nodes: Vec<NodeSpec>,
    /// Pods' files and logs, and the provisioned volumes.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// The sandbox's hosts file (mounted over /etc/hosts).
    #[arg(long)]
    hosts_file: Option<PathBuf>,
    /// REPOSITORY=PROGRAM: pods whose image is REPOSITORY (any registry and tag) run PROGRAM
    /// (repeatable).
    #[arg(long = "image", value_parser = parse_image)]
    images: Vec<(String, PathBuf)>,
    /// Longest wait before restarting a crashed container, in seconds.
    #[arg(long, default_value_t = 20)]
    crash_backoff_max_seconds: u64,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inside a pod's namespaces: mount its volumes and exec its program (JSON spec).
    RunContainer { spec: String },
}

fn parse_image(text: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = text
        .split_once('=')
        .ok_or_else(|| format!("--image takes REPOSITORY=PROGRAM, not {text:?}"))?;
    Ok((name.to_string(), PathBuf::from(path)))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::RunContainer { spec }) = cli.command {
        let spec: ContainerSpec = serde_json::from_str(&spec)?;
        return Err(exec::run_container(&spec));
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OXBOW_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let missing = |what: &str| anyhow::anyhow!("--{what} is required");
    let config = AgentConfig {
        kubeconfig: cli.kubeconfig.ok_or_else(|| missing("kubeconfig"))?,
        nodes: if cli.nodes.is_empty() {
            vec!["node-a=zone-a".parse().map_err(anyhow::Error::msg)?]
        } else {
            cli.nodes
        },
        state_dir: cli.state_dir.ok_or_else(|| missing("state-dir"))?,
        hosts_file: cli.hosts_file.ok_or_else(|| missing("hosts-file"))?,
        images: cli.images,
        agent_binary: std::env::current_exe()?,
        crash_backoff_max: Duration::from_secs(cli.crash_backoff_max_seconds),
    };
    tokio::runtime::Runtime::new()?.block_on(agent::run(config))
}
