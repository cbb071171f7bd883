//! The `oxbow-operator` binary: command line, logging, the HTTP endpoint, signals, leader
//! election, and the KafkaCluster and KafkaTopic controllers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{ArgAction, Parser, Subcommand, ValueEnum};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use oxbow_operator::balance::cli::BalanceArgs;
use oxbow_operator::balance::step::KafkaBalanceAdmin;
use oxbow_operator::broker_init::BrokerInitArgs;
use oxbow_operator::cluster::validate::{OperatorPods, OperatorSettings};
use oxbow_operator::context::Context;
use oxbow_operator::http::{self, Health};
use oxbow_operator::leader::{LeaderElector, LeaseConfig};
use oxbow_operator::metrics::Metrics;
use oxbow_operator::supervisor::{self, Ended};
use oxbow_operator::topic::admin::KafkaAdmin;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Kubernetes operator for Oxbow: runs KafkaCluster and KafkaTopic resources.
#[derive(Debug, Parser)]
#[command(name = "oxbow-operator", version, about)]
struct Cli {
    /// Namespaces to watch, comma-separated; every namespace when empty.
    #[arg(long, env = "OXBOW_WATCH_NAMESPACES", value_delimiter = ',')]
    watch_namespaces: Vec<String>,
    /// Broker image of clusters that name none.
    #[arg(long, env = "OXBOW_BROKER_IMAGE", default_value_t = OperatorSettings::default().broker_image)]
    broker_image: String,
    /// The operator's own image: broker pods run it as their init container
    /// (`broker-init`).
    #[arg(long, env = "OXBOW_OPERATOR_IMAGE", default_value_t = OperatorSettings::default().operator_image)]
    operator_image: String,
    /// ClusterRole that lets broker pods read their node (for `broker.rack`); the operator
    /// binds it to the service account of each KafkaCluster with `spec.rack`.
    #[arg(long, env = "OXBOW_BROKER_CLUSTER_ROLE", default_value_t = OperatorSettings::default().broker_cluster_role)]
    broker_cluster_role: String,
    /// Seconds before a KafkaCluster or KafkaTopic in sync is compared with the brokers again
    /// (a topic setting changed behind the operator's back is corrected then).
    #[arg(long, env = "OXBOW_RESYNC_INTERVAL_SECONDS", default_value_t = OperatorSettings::default().resync.as_secs())]
    resync_interval_seconds: u64,
    /// DNS suffix of the Kubernetes cluster, for brokers' stable names.
    #[arg(long, env = "OXBOW_CLUSTER_DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// host:port of /metrics, /healthz and /readyz.
    #[arg(long, env = "OXBOW_METRICS_ADDRESS", default_value = "0.0.0.0:8080")]
    metrics_address: String,
    /// Log filter (`info`, `debug`, `oxbow_operator=debug,kube=info`, ...).
    #[arg(long, env = "OXBOW_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Log output format.
    #[arg(long, env = "OXBOW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Elect a leader through a Lease, for running more than one replica.
    #[arg(long, env = "OXBOW_LEADER_ELECTION", action = ArgAction::Set, default_value_t = true)]
    leader_election: bool,
    /// Name of the Lease.
    #[arg(long, env = "OXBOW_LEASE_NAME", default_value = "oxbow-operator")]
    lease_name: String,
    /// Namespace of the Lease; the operator's own namespace by default.
    #[arg(long, env = "OXBOW_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// The operator pods' namespace; with `--operator-pod-labels`, each cluster gets a
    /// NetworkPolicy that admits those pods (and the cluster's brokers) alone to the
    /// controller port, and to the internal listener when ACLs are enforced.
    #[arg(long, env = "OXBOW_OPERATOR_NAMESPACE")]
    operator_namespace: Option<String>,
    /// The operator pods' labels, `key=value` comma-separated.
    #[arg(long, env = "OXBOW_OPERATOR_POD_LABELS", value_delimiter = ',')]
    operator_pod_labels: Vec<String>,
    /// This replica's name in the Lease and in events; the pod name by default.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Without a command, run the controllers.
    #[command(subcommand)]
    command: Option<Command>,
}

/// The operator's pods from `--operator-namespace` and `--operator-pod-labels`: both, or
/// neither.
fn operator_pods(cli: &Cli) -> anyhow::Result<Option<OperatorPods>> {
    let labels = cli
        .operator_pod_labels
        .iter()
        .filter(|l| !l.is_empty())
        .map(|label| {
            label
                .split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("--operator-pod-labels: `{label}` is not key=value"))
        })
        .collect::<anyhow::Result<BTreeMap<String, String>>>()?;
    match (&cli.operator_namespace, labels.is_empty()) {
        (Some(namespace), false) => Ok(Some(OperatorPods {
            namespace: namespace.clone(),
            labels,
        })),
        (None, true) => Ok(None),
        _ => anyhow::bail!("--operator-namespace and --operator-pod-labels go together"),
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Balance a cluster reachable at a bootstrap address, without Kubernetes.
    Balance(BalanceArgs),
    /// Init container of broker pods: writes the broker's server.properties with
    /// `broker.rack` read from its node's label, and joins a TLS certificate and key into the
    /// broker's key store.
    BrokerInit(BrokerInitArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(level: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .with_context(|| format!("invalid log level `{level}`"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

/// The namespace this pod runs in, as the service account mount tells.
fn own_namespace() -> Option<String> {
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "oxbow-operator".to_string())
}

async fn wait_for_signal(shutdown: CancellationToken) {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::error!(%error, "cannot watch SIGTERM");
                return;
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
    }
    shutdown.cancel();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(&cli.log_level, cli.log_format)?;
    // The Kubernetes client's TLS runs on ring. Say so, rather than leave rustls to guess: a
    // build that also links aws-lc (test-only dependencies unify features into the binary)
    // would otherwise panic at its first request.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Some(Command::Balance(args)) => {
            oxbow_operator::balance::cli::run(args).await?;
            return Ok(());
        }
        Some(Command::BrokerInit(args)) => {
            oxbow_operator::broker_init::run(args).await?;
            return Ok(());
        }
        None => {}
    }
    let identity = cli.identity.clone().unwrap_or_else(hostname);

    let shutdown = CancellationToken::new();
    tokio::spawn(wait_for_signal(shutdown.clone()));

    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let listener = TcpListener::bind(&cli.metrics_address)
        .await
        .with_context(|| format!("cannot listen on {}", cli.metrics_address))?;
    tracing::info!(address = %cli.metrics_address, "serving /metrics, /healthz, /readyz");
    let http = tokio::spawn(http::serve(
        listener,
        Arc::clone(&metrics),
        Arc::clone(&health),
        shutdown.clone(),
    ));

    let client = kube::Client::try_default()
        .await
        .context("cannot configure the Kubernetes client")?;
    let settings = OperatorSettings {
        broker_image: cli.broker_image.clone(),
        cluster_domain: cli.cluster_domain.clone(),
        operator_image: cli.operator_image.clone(),
        broker_cluster_role: cli.broker_cluster_role.clone(),
        resync: Duration::from_secs(cli.resync_interval_seconds.max(1)),
        operator_pods: operator_pods(&cli)?,
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        Arc::clone(&metrics),
        settings,
        Arc::new(KafkaAdmin::default()),
        Arc::new(KafkaBalanceAdmin::default()),
        Some(identity.clone()),
    ));

    let ended = if cli.leader_election {
        let namespace = cli
            .lease_namespace
            .clone()
            .or_else(own_namespace)
            .unwrap_or_else(|| client.default_namespace().to_string());
        let elector = LeaderElector::new(
            Api::<Lease>::namespaced(client, &namespace),
            LeaseConfig {
                name: cli.lease_name.clone(),
                identity,
                lease_duration: Duration::from_secs(15),
                retry_period: Duration::from_secs(3),
            },
        );
        supervisor::lead(
            elector,
            ctx,
            cli.watch_namespaces.clone(),
            Arc::clone(&health),
            shutdown.clone(),
        )
        .await
    } else {
        health.set_ready(true);
        supervisor::run_controllers(ctx, &cli.watch_namespaces, &health, shutdown.clone()).await;
        Ended::Shutdown
    };
    shutdown.cancel();
    let _ = http.await;
    match ended {
        Ended::Shutdown => {
            tracing::info!("stopped");
            Ok(())
        }
        // Exit non-zero: Kubernetes restarts the pod, which then stands by for the lease.
        Ended::LostLease => anyhow::bail!("lost the leader lease"),
    }
}
