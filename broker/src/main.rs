//! The `oxbow-broker` binary: command line, logging, signals, and the listeners.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use oxbow_broker::broker::Broker;
use oxbow_broker::config::{BrokerConfig, Listener};
use oxbow_broker::controller::image::MetadataCommand;
use oxbow_broker::security::scram::InitialCredential;
use oxbow_broker::security::tls;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A Kafka-compatible event streaming broker.
///
/// With no arguments it listens on localhost:9092 and keeps its data in ./data. Settings use
/// Kafka's `server.properties` names; a flag or OXBOW_* variable overrides the file.
#[derive(Debug, Parser)]
#[command(name = "oxbow-broker", version, about)]
struct Cli {
    /// A Kafka-style server.properties file.
    #[arg(long, env = "OXBOW_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// `listeners`: where to accept clients, NAME://host:port (default PLAINTEXT://localhost:9092).
    #[arg(long, env = "OXBOW_LISTENERS")]
    listeners: Option<String>,
    /// `advertised.listeners`: the address given to clients (default: derived from listeners).
    #[arg(long, env = "OXBOW_ADVERTISED_LISTENERS")]
    advertised_listeners: Option<String>,
    /// `log.dirs`: the data directories, comma-separated (default ./data).
    #[arg(long, env = "OXBOW_LOG_DIRS")]
    log_dirs: Option<String>,
    /// `node.id`: this broker's id (default 0; in a cluster, the ordinal of the StatefulSet
    /// pod name in POD_NAME or HOSTNAME, `name-N`).
    #[arg(long, env = "OXBOW_NODE_ID")]
    node_id: Option<String>,
    /// `num.partitions`: partitions of automatically created topics (default 1).
    #[arg(long, env = "OXBOW_NUM_PARTITIONS")]
    num_partitions: Option<String>,
    /// `auto.create.topics.enable` (default true).
    #[arg(long, env = "OXBOW_AUTO_CREATE_TOPICS_ENABLE")]
    auto_create_topics_enable: Option<String>,
    /// `log.segment.bytes`: segment size (default 1 GiB).
    #[arg(long, env = "OXBOW_LOG_SEGMENT_BYTES")]
    log_segment_bytes: Option<String>,
    /// `log.retention.ms`: how long data is kept.
    #[arg(long, env = "OXBOW_LOG_RETENTION_MS")]
    log_retention_ms: Option<String>,
    /// `log.retention.hours`: how long data is kept (default 168).
    #[arg(long, env = "OXBOW_LOG_RETENTION_HOURS")]
    log_retention_hours: Option<String>,
    /// `message.max.bytes`: largest record batch accepted (default 1048588).
    #[arg(long, env = "OXBOW_MESSAGE_MAX_BYTES")]
    message_max_bytes: Option<String>,
    /// `socket.request.max.bytes`: largest request read (default 104857600).
    #[arg(long, env = "OXBOW_SOCKET_REQUEST_MAX_BYTES")]
    socket_request_max_bytes: Option<String>,
    /// `metrics.address`: host:port of the Prometheus endpoint (default localhost:9404; empty disables).
    #[arg(long, env = "OXBOW_METRICS_ADDRESS")]
    metrics_address: Option<String>,
    /// Any other setting by its Kafka name, KEY=VALUE; repeatable.
    #[arg(long = "override", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// A SCRAM credential to create at start unless the user already has one for that
    /// mechanism, as `kafka-storage format --add-scram` takes it:
    /// 'SCRAM-SHA-256=[name=admin,password=admin-secret]'; repeatable (in OXBOW_ADD_SCRAM, one
    /// per line).
    #[arg(
        long = "add-scram",
        env = "OXBOW_ADD_SCRAM",
        value_name = "CREDENTIAL",
        value_delimiter = '\n'
    )]
    add_scram: Vec<String>,
    /// Log output format.
    #[arg(long, env = "OXBOW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

impl Cli {
    /// The explicit settings from flags and environment, under their Kafka names.
    fn settings(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let mut settings = BTreeMap::new();
        for raw in &self.overrides {
            let (key, value) = raw
                .split_once('=')
                .with_context(|| format!("--override `{raw}` is not KEY=VALUE"))?;
            settings.insert(key.trim().to_string(), value.trim().to_string());
        }
        let flags = [
            ("listeners", &self.listeners),
            ("advertised.listeners", &self.advertised_listeners),
            ("log.dirs", &self.log_dirs),
            ("node.id", &self.node_id),
            ("num.partitions", &self.num_partitions),
            ("auto.create.topics.enable", &self.auto_create_topics_enable),
            ("log.segment.bytes", &self.log_segment_bytes),
            ("log.retention.ms", &self.log_retention_ms),
            ("log.retention.hours", &self.log_retention_hours),
            ("message.max.bytes", &self.message_max_bytes),
            ("socket.request.max.bytes", &self.socket_request_max_bytes),
            ("metrics.address", &self.metrics_address),
        ];
        for (key, value) in flags {
            if let Some(value) = value {
                settings.insert(key.to_string(), value.clone());
            }
        }
        Ok(settings)
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OXBOW_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The address to advertise for a listener: the configured one, else the listener's host (or
/// this machine's name when bound to every interface) with the port actually bound.
fn advertised_listener(config: &BrokerConfig, listener: &Listener, bound_port: u16) -> Listener {
    if let Some(advertised) = config
        .advertised_listeners
        .iter()
        .find(|a| a.name == listener.name)
    {
        return advertised.clone();
    }
    let host = match listener.host.as_str() {
        "" | "0.0.0.0" | "::" => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".to_string()),
        host => host.to_string(),
    };
    Listener {
        name: listener.name.clone(),
        host,
        port: bound_port,
    }
}

/// Binds a client listener.
async fn bind(listener: &Listener) -> anyhow::Result<TcpListener> {
    let bind = listener.bind_address();
    TcpListener::bind(&bind)
        .await
        .with_context(|| format!("cannot listen on {bind} ({})", listener.name))
}

/// Creates the `--add-scram` credentials that do not exist yet.
async fn add_initial_credentials(
    broker: &Broker,
    credentials: Vec<InitialCredential>,
) -> anyhow::Result<()> {
    for initial in credentials {
        let (user, mechanism) = (initial.user.clone(), initial.mechanism);
        broker
            .quorum
            .propose(MetadataCommand::UpsertScramCredential {
                user: initial.user,
                mechanism: initial.mechanism,
                credential: initial.credential,
                only_if_absent: true,
            })
            .await
            .with_context(|| format!("cannot store the {mechanism} credential of {user}"))?;
        tracing::info!(%user, %mechanism, "SCRAM credential present");
    }
    Ok(())
}

/// Longest wait for leadership to move away on SIGTERM before stopping anyway.
const CONTROLLED_SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let config = BrokerConfig::load(cli.config.as_deref(), cli.settings()?)
        .context("invalid configuration")?;
    let without_effect = config.without_effect();
    if !without_effect.is_empty() {
        tracing::warn!(
            settings = %without_effect
                .iter()
                .map(|(key, reason)| format!("{key}: {reason}"))
                .collect::<Vec<_>>()
                .join(" | "),
            "settings accepted as in Kafka that have no effect in Oxbow"
        );
    }
    let initial_credentials = cli
        .add_scram
        .iter()
        .filter(|text| !text.trim().is_empty())
        .map(|text| InitialCredential::parse(text).map_err(|e| anyhow::anyhow!("--add-scram: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut acceptors = std::collections::BTreeMap::new();
    for (listener, settings) in &config.security.tls {
        let config = tls::server_config(settings)
            .with_context(|| format!("invalid TLS settings of the {listener} listener"))?;
        acceptors.insert(listener.clone(), tokio_rustls::TlsAcceptor::from(config));
    }

    // Signal handlers first: a SIGTERM that arrives while the logs load must still mean a
    // clean shutdown, not the default of dying on the spot.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch SIGTERM")?;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("cannot watch SIGINT")?;

    // The metrics endpoint is bound first: a port taken by another broker on this host stops
    // the start before anything else happens.
    let metrics = match config.metrics_address.clone() {
        Some(address) => {
            let listener = TcpListener::bind(&address).await.with_context(|| {
                format!(
                    "cannot serve metrics on {address} (metrics.address): give each broker on \
                     this host its own metrics.address, or set it empty to turn the endpoint off"
                )
            })?;
            Some((address, listener))
        }
        None => None,
    };

    // Bind after the logs are loaded, so a connection that succeeds means a broker ready to
    // serve; only an ephemeral port (0) has to be bound first to know what to advertise.
    let mut early = Vec::new();
    let mut advertised = Vec::new();
    for client in &config.listeners {
        let listener = &client.listener;
        let bound = if listener.port == 0 {
            Some(bind(listener).await?)
        } else {
            None
        };
        let port = match &bound {
            Some(bound) => bound
                .local_addr()
                .context("listener has no local address")?
                .port(),
            None => listener.port,
        };
        advertised.push(advertised_listener(&config, listener, port));
        early.push(bound);
    }
    let shutdown = CancellationToken::new();
    let listeners = config.listeners.clone();
    let broker = Broker::start(config, advertised, shutdown.clone())
        .await
        .context("cannot start the broker")?;
    add_initial_credentials(&broker, initial_credentials).await?;
    let mut endpoints = Vec::new();
    for (client, early) in listeners.into_iter().zip(early) {
        let listener = match early {
            Some(listener) => listener,
            None => bind(&client.listener).await?,
        };
        let bound = listener
            .local_addr()
            .context("listener has no local address")?;
        tracing::info!(
            listener = %client.listener.name,
            protocol = %client.protocol,
            address = %bound,
            "listening"
        );
        endpoints.push(oxbow_broker::server::Endpoint {
            listener,
            name: client.listener.name.as_str().into(),
            protocol: client.protocol,
            tls: acceptors.get(&client.listener.name).cloned(),
        });
    }

    if let Some((address, metrics_listener)) = metrics {
        tracing::info!(address = %address, "metrics at /metrics");
        let refreshed = std::sync::Arc::clone(&broker);
        let checked = std::sync::Arc::clone(&broker);
        tokio::spawn(oxbow_broker::metrics::serve(
            metrics_listener,
            broker.metrics.clone(),
            std::sync::Arc::new(move || refreshed.refresh_metrics()),
            std::sync::Arc::new(move || checked.readiness()),
            shutdown.clone(),
        ));
    }
    let on_signal = shutdown.clone();
    let stopping = std::sync::Arc::clone(&broker);
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT: shutting down"),
            _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
        }
        oxbow_broker::controller::tasks::controlled_shutdown(
            &stopping,
            CONTROLLED_SHUTDOWN_TIMEOUT,
        )
        .await;
        on_signal.cancel();
    });
    oxbow_broker::controller::tasks::spawn(&broker);
    tokio::spawn(run_group_timers(
        std::sync::Arc::clone(&broker),
        shutdown.clone(),
    ));
    tokio::spawn(run_log_maintenance(
        std::sync::Arc::clone(&broker),
        shutdown.clone(),
    ));
    tokio::spawn(oxbow_broker::txn::markers::run_timers(
        std::sync::Arc::clone(&broker),
        shutdown.clone(),
    ));
    tracing::info!(
        advertised = %broker
            .endpoints
            .iter()
            .map(|e| format!("{}://{}:{}", e.name, e.host, e.port))
            .collect::<Vec<_>>()
            .join(","),
        node_id = broker.node_id(),
        roles = broker.config.roles(),
        "broker started"
    );
    oxbow_broker::server::run(endpoints, std::sync::Arc::clone(&broker), shutdown).await;
    broker.quorum.shutdown().await;
    broker.close_logs();
    if let Some(reason) = broker.failure() {
        anyhow::bail!("the broker stopped: {reason}");
    }
    tracing::info!("broker stopped");
    Ok(())
}

/// Expires group members and completes rebalances on time.
async fn run_group_timers(broker: std::sync::Arc<Broker>, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = interval.tick() => broker.groups.tick(),
        }
    }
}

/// Background log work: scheduled flushes, retention, and the cleaner of compacted topics.
/// Each pass runs on the blocking pool, since it does disk I/O.
async fn run_log_maintenance(broker: std::sync::Arc<Broker>, shutdown: CancellationToken) {
    use std::time::Duration;
    let mut flush = tokio::time::interval(Duration::from_millis(100));
    let mut retention = tokio::time::interval(broker.config.retention_check_interval);
    let mut cleaner = tokio::time::interval(
        broker
            .config
            .cleaner_backoff
            .max(Duration::from_millis(100)),
    );
    for timer in [&mut flush, &mut retention, &mut cleaner] {
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    loop {
        let pass: fn(&Broker) = tokio::select! {
            () = shutdown.cancelled() => return,
            _ = flush.tick() => Broker::flush_due,
            _ = retention.tick() => Broker::enforce_retention,
            _ = cleaner.tick(), if broker.config.cleaner_enable => Broker::compact_logs,
        };
        let broker = std::sync::Arc::clone(&broker);
        if let Err(e) = tokio::task::spawn_blocking(move || pass(&broker)).await {
            tracing::error!(error = %e, "log maintenance pass panicked");
        }
    }
}
