//! Configuration through the real `oxbow-broker` binary, as a Kafka user brings it: Kafka 4.1's
//! own `server.properties` (ports and paths changed) serves a produce and consume round trip;
//! a broker-only node joins without a controller listener of its own, through
//! `controller.quorum.bootstrap.servers` or `controller.quorum.voters`; Kafka's separate
//! controller and broker files form a cluster; every Kafka broker and
//! topic setting is accepted, the ones without effect reported as Kafka reports them; a
//! record's timestamp is checked against `message.timestamp.{before,after}.max.ms`; errors in a
//! file name the file, the key and the line; a metrics port already taken names
//! `metrics.address`.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, ensure, Context, Result};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::IncrementalAlterConfigsRequest;
use kafka_protocol::ResponseError;
use oxbow_e2e::harness::{self, BrokerOptions, BrokerProcess};
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewTopic, OwnedResourceSpecifier,
    ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::time::timeout;

mod support;

const RESOURCE_BROKER: i8 = 4;

const BROKER_BIN: &str = env!("CARGO_BIN_EXE_oxbow-broker");
/// Kafka 4.1's shipped `config/server.properties`, key for key.
const KAFKA_SERVER_PROPERTIES: &str = include_str!("fixtures/kafka-4.1-server.properties");
const WAIT: Duration = Duration::from_secs(30);

/// A broker started from a configuration file alone, killed when dropped.
struct FileBroker {
    child: Child,
    bootstrap: SocketAddr,
    log: PathBuf,
}

impl FileBroker {
    /// Starts the binary with `--config file` and the metrics endpoint at `metrics`, and waits
    /// until `bootstrap` accepts connections.
    fn start(
        file: &Path,
        bootstrap: SocketAddr,
        metrics: SocketAddr,
        log: PathBuf,
    ) -> Result<Self> {
        let out = std::fs::File::create(&log).context("creating the broker log")?;
        let err = out.try_clone().context("sharing the broker log")?;
        let child = Command::new(BROKER_BIN)
            .arg("--config")
            .arg(file)
            .arg("--metrics-address")
            .arg(metrics.to_string())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .context("spawning oxbow-broker")?;
        let mut broker = FileBroker {
            child,
            bootstrap,
            log,
        };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = broker.child.try_wait().context("checking the broker")? {
                bail!("the broker exited with {status}:\n{}", broker.log_text());
            }
            if TcpStream::connect_timeout(&bootstrap, Duration::from_millis(200)).is_ok() {
                return Ok(broker);
            }
            if Instant::now() > deadline {
                bail!(
                    "the broker did not listen on {bootstrap}:\n{}",
                    broker.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn bootstrap(&self) -> String {
        self.bootstrap.to_string()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for FileBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kafka's shipped file with its ports (9092 clients, 9093 controller) and data directory
/// changed, nothing else.
fn kafka_server_properties(client_port: u16, controller_port: u16, data: &Path) -> String {
    KAFKA_SERVER_PROPERTIES
        .lines()
        .map(|line| {
            if line.starts_with("log.dirs=") {
                format!("log.dirs={}", data.display())
            } else {
                line.replace(":9092", &format!(":{client_port}"))
                    .replace(":9093", &format!(":{controller_port}"))
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Starts a broker from Kafka's own `server.properties`, in `dir`.
fn start_from_kafkas_file(dir: &Path) -> Result<(FileBroker, u16)> {
    let client = harness::free_local_addr()?;
    let controller = harness::free_local_addr()?;
    let metrics = harness::free_local_addr()?;
    let file = dir.join("server.properties");
    std::fs::write(
        &file,
        kafka_server_properties(client.port(), controller.port(), &dir.join("data")),
    )
    .context("writing server.properties")?;
    let broker = FileBroker::start(&file, client, metrics, dir.join("broker.log"))?;
    Ok((broker, controller.port()))
}

fn admin(bootstrap: &str) -> Result<AdminClient<DefaultClientContext>> {
    harness::client_config(bootstrap)
        .create()
        .context("creating an admin client")
}

fn admin_options() -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(Duration::from_secs(30)))
        .operation_timeout(Some(Duration::from_secs(10)))
}

/// Produces `count` records to `topic` and reads them back in order with a consumer group.
async fn round_trip(bootstrap: &str, topic: &str, count: usize) -> Result<()> {
    let producer: FutureProducer = harness::producer_config(bootstrap)
        .create()
        .context("creating a producer")?;
    for i in 0..count {
        let value = format!("value-{i}");
        producer
            .send(
                FutureRecord::to(topic).key("k").payload(&value),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| anyhow!("producing record {i}: {e}"))?;
    }
    let consumer: StreamConsumer = harness::consumer_config(bootstrap, "config-round-trip")
        .set("auto.offset.reset", "earliest")
        .create()
        .context("creating a consumer")?;
    consumer.subscribe(&[topic]).context("subscribing")?;
    for i in 0..count {
        let message = timeout(WAIT, consumer.recv())
            .await
            .with_context(|| format!("waiting for record {i}"))?
            .context("consuming")?;
        let value = message.payload().map(String::from_utf8_lossy);
        ensure!(
            value.as_deref() == Some(format!("value-{i}").as_str()),
            "record {i} read back as {value:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafkas_own_server_properties_starts_a_broker_that_serves_a_produce_and_consume_round_trip(
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (broker, _) = start_from_kafkas_file(dir.path())?;
    round_trip(&broker.bootstrap(), "kafka-file", 20)
        .await
        .with_context(|| broker.log_text())?;
    let log = broker.log_text();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("no effect")).collect();
    ensure!(warnings.len() == 1, "{log}");
    for key in [
        "num.network.threads",
        "num.io.threads",
        "socket.send.buffer.bytes",
        "share.coordinator.state.topic.replication.factor",
    ] {
        ensure!(
            warnings[0].contains(key),
            "{key} missing from {}",
            warnings[0]
        );
    }
    for applied in ["log.retention.hours", "transaction.state.log.min.isr"] {
        ensure!(
            !warnings[0].contains(applied),
            "an applied setting is called ineffective: {}",
            warnings[0]
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_only_node_joins_the_quorum_without_a_controller_listener_of_its_own() -> Result<()>
{
    let dir = tempfile::tempdir()?;
    let (controller, controller_port) = start_from_kafkas_file(dir.path())?;
    let through_bootstrap =
        BrokerProcess::start(BrokerOptions::new(BROKER_BIN).node_id(2).args([
            "--override",
            "process.roles=broker",
            "--override",
            &format!("controller.quorum.bootstrap.servers=localhost:{controller_port}"),
        ]))?;
    let through_voters = BrokerProcess::start(BrokerOptions::new(BROKER_BIN).node_id(3).args([
        "--override",
        "process.roles=broker",
        "--override",
        &format!("controller.quorum.voters=1@localhost:{controller_port}"),
    ]))?;
    let admin = admin(&controller.bootstrap())?;
    let deadline = Instant::now() + WAIT;
    loop {
        let metadata = admin
            .inner()
            .fetch_metadata(None, Duration::from_secs(5))
            .context("Metadata")?;
        let mut ids: Vec<i32> = metadata.brokers().iter().map(|b| b.id()).collect();
        ids.sort_unstable();
        if ids == [1, 2, 3] {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "brokers {ids:?} registered, not [1, 2, 3]\n{}\n{}",
                through_bootstrap.log_tail(40),
                through_voters.log_tail(40)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A topic on all three brokers serves a round trip through the broker-only node.
    let topic = NewTopic::new("everywhere", 1, TopicReplication::Fixed(3));
    for result in admin.create_topics([&topic], &admin_options()).await? {
        result.map_err(|(name, code)| anyhow!("CreateTopics {name}: {code}"))?;
    }
    round_trip(&through_bootstrap.bootstrap(), "everywhere", 10).await
}

/// `text` with each setting named in `changes` given its new value, or dropped for `None`.
fn with_settings(text: &str, changes: &[(&str, Option<String>)]) -> String {
    text.lines()
        .filter_map(|line| {
            let key = line.split_once('=').map(|(k, _)| k.trim());
            match changes.iter().find(|(k, _)| Some(*k) == key) {
                Some((k, Some(value))) => Some(format!("{k}={value}")),
                Some((_, None)) => None,
                None => Some(line.to_string()),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Kafka 4.1's quickstart with separate roles: its `controller.properties` and
/// `broker.properties` differ from its `server.properties` in the roles, node ids, listeners
/// and log directories, and so do these (ports and paths changed). The controller-only node
/// is the standalone first controller; the broker joins through
/// `controller.quorum.bootstrap.servers`, and it alone is what clients see; a round trip
/// through it works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafkas_separate_controller_and_broker_files_form_a_cluster() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let client = harness::free_local_addr()?;
    let controller_addr = harness::free_local_addr()?;
    let base = kafka_server_properties(client.port(), controller_addr.port(), dir.path());
    let controller_file = dir.path().join("controller.properties");
    std::fs::write(
        &controller_file,
        with_settings(
            &base,
            &[
                ("process.roles", Some("controller".into())),
                (
                    "listeners",
                    Some(format!("CONTROLLER://:{}", controller_addr.port())),
                ),
                (
                    "advertised.listeners",
                    Some(format!("CONTROLLER://localhost:{}", controller_addr.port())),
                ),
                ("inter.broker.listener.name", None),
                (
                    "log.dirs",
                    Some(dir.path().join("controller").display().to_string()),
                ),
            ],
        ),
    )?;
    let broker_file = dir.path().join("broker.properties");
    std::fs::write(
        &broker_file,
        with_settings(
            &base,
            &[
                ("process.roles", Some("broker".into())),
                ("node.id", Some("2".into())),
                (
                    "listeners",
                    Some(format!("PLAINTEXT://localhost:{}", client.port())),
                ),
                (
                    "advertised.listeners",
                    Some(format!("PLAINTEXT://localhost:{}", client.port())),
                ),
                (
                    "log.dirs",
                    Some(dir.path().join("broker").display().to_string()),
                ),
            ],
        ),
    )?;
    let _controller = FileBroker::start(
        &controller_file,
        controller_addr,
        harness::free_local_addr()?,
        dir.path().join("controller.log"),
    )?;
    let broker = FileBroker::start(
        &broker_file,
        client,
        harness::free_local_addr()?,
        dir.path().join("broker.log"),
    )?;
    let admin = admin(&broker.bootstrap())?;
    let deadline = Instant::now() + WAIT;
    loop {
        let metadata = admin
            .inner()
            .fetch_metadata(None, Duration::from_secs(5))
            .context("Metadata")?;
        let ids: Vec<i32> = metadata.brokers().iter().map(|b| b.id()).collect();
        if ids == [2] {
            break;
        }
        if Instant::now() > deadline {
            bail!("brokers {ids:?} listed, not [2]\n{}", broker.log_text());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let topic = NewTopic::new("separate", 2, TopicReplication::Fixed(1));
    for result in admin.create_topics([&topic], &admin_options()).await? {
        result.map_err(|(name, code)| anyhow!("CreateTopics {name}: {code}"))?;
    }
    round_trip(&broker.bootstrap(), "separate", 10).await
}

#[test]
fn a_second_broker_on_the_same_metrics_address_stops_with_an_error_naming_metrics_address(
) -> Result<()> {
    let first = BrokerProcess::start(BrokerOptions::new(BROKER_BIN))?;
    let taken = first.metrics_url();
    let address = taken
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_string();
    let dir = tempfile::tempdir()?;
    let output = run_to_exit(&[
        "--listeners",
        &format!("PLAINTEXT://{}", harness::free_local_addr()?),
        "--log-dirs",
        &dir.path().join("data").display().to_string(),
        "--metrics-address",
        &address,
    ])?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        !output.status.success(),
        "a second broker started:\n{stderr}"
    );
    ensure!(
        stderr.contains("metrics.address") && stderr.contains(&address),
        "{stderr}"
    );
    Ok(())
}

/// Runs the binary to its exit (a configuration it refuses), bounded.
fn run_to_exit(args: &[&str]) -> Result<Output> {
    let mut child = Command::new(BROKER_BIN)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning oxbow-broker")?;
    let deadline = Instant::now() + WAIT;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("the broker kept running with {args:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().context("collecting the output")
}

#[test]
fn errors_in_a_configuration_file_name_the_file_the_key_and_the_line() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("server.properties");
    for (text, line, key) in [
        (
            "num.partitions=3\n# a comment\nlog.retention.dayz=3\n",
            3,
            "log.retention.dayz",
        ),
        ("\nnum.io.threads=many\n", 2, "num.io.threads"),
        (
            "process.roles=broker,controller\nnode.id=1\ncontroller.quorum.bootstrap.servers=a:1,b:2\nlisteners=PLAINTEXT://127.0.0.1:0,CONTROLLER://127.0.0.1:0\n",
            3,
            "controller.quorum.bootstrap.servers",
        ),
    ] {
        std::fs::write(&file, text)?;
        let output = run_to_exit(&["--config", &file.display().to_string()])?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        ensure!(!output.status.success(), "{text:?} was accepted");
        let place = format!("{}:{line}:", file.display());
        ensure!(
            stderr.contains(&place) && stderr.contains(&format!("`{key}`")),
            "{text:?}: the error does not say {place} and `{key}`:\n{stderr}"
        );
    }
    Ok(())
}

/// Every topic setting Kafka 4.1 has that Oxbow refused before.
const NEW_TOPIC_SETTINGS: &[(&str, &str)] = &[
    ("max.compaction.lag.ms", "86400000"),
    ("segment.jitter.ms", "1000"),
    ("segment.index.bytes", "1048576"),
    ("file.delete.delay.ms", "1000"),
    ("preallocate", "true"),
    ("compression.gzip.level", "5"),
    ("compression.lz4.level", "10"),
    ("compression.zstd.level", "7"),
    ("message.timestamp.before.max.ms", "86400000"),
    ("message.timestamp.after.max.ms", "60000"),
    ("leader.replication.throttled.replicas", "0:0"),
    ("follower.replication.throttled.replicas", "*"),
    ("remote.storage.enable", "false"),
    ("local.retention.ms", "-2"),
    ("local.retention.bytes", "-2"),
    ("remote.log.copy.disable", "false"),
    ("remote.log.delete.on.disable", "false"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kafka_topic_and_broker_setting_is_accepted_and_described_as_kafka_does() -> Result<()>
{
    let broker = BrokerProcess::start(BrokerOptions::new(BROKER_BIN).args([
        "--override",
        "num.network.threads=5",
        "--override",
        "ssl.keystore.password=secret",
    ]))?;
    let outcome = accepted_and_described(&broker).await;
    broker.explain(outcome)
}

async fn accepted_and_described(broker: &BrokerProcess) -> Result<()> {
    let admin = admin(&broker.bootstrap())?;
    let mut topic = NewTopic::new("all-settings", 1, TopicReplication::Fixed(1));
    for (key, value) in NEW_TOPIC_SETTINGS {
        topic = topic.set(key, value);
    }
    for result in admin.create_topics([&topic], &admin_options()).await? {
        result.map_err(|(name, code)| anyhow!("CreateTopics {name}: {code}"))?;
    }
    let refused =
        NewTopic::new("tiered", 1, TopicReplication::Fixed(1)).set("remote.storage.enable", "true");
    let outcome = admin.create_topics([&refused], &admin_options()).await?;
    ensure!(
        matches!(
            outcome.as_slice(),
            [Err((_, RDKafkaErrorCode::InvalidConfig))]
        ),
        "tiered storage was accepted: {outcome:?}"
    );

    // A setting Kafka does not change at run time is read-only here too.
    let node = broker.node_id().to_string();
    let mut conn = support::connect(broker).await?;
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(RESOURCE_BROKER)
            .with_resource_name(support::str_bytes(&node))
            .with_configs(vec![AlterableConfig::default()
                .with_name(support::str_bytes("transaction.state.log.min.isr"))
                .with_config_operation(0)
                .with_value(Some(support::str_bytes("1")))]),
    ]);
    let response = support::call(&mut conn, &request, 1).await?;
    let code = response.responses.first().map(|r| r.error_code);
    ensure!(
        code == Some(ResponseError::InvalidRequest.code()),
        "IncrementalAlterConfigs transaction.state.log.min.isr answered {code:?}, not \
         INVALID_REQUEST"
    );
    // librdkafka's own AlterConfigs test (0081) sets a Kerberos setting on a broker; Kafka
    // changes both at run time.
    let change = AlterConfig::new(ResourceSpecifier::Broker(broker.node_id()))
        .set("sasl.kerberos.min.time.before.relogin", "58000")
        .set("num.io.threads", "4");
    for result in admin.alter_configs([&change], &admin_options()).await? {
        result.map_err(|(spec, code)| anyhow!("AlterConfigs {spec:?}: {code}"))?;
    }

    let described = admin
        .describe_configs(
            [
                &ResourceSpecifier::Broker(broker.node_id()),
                &ResourceSpecifier::Topic("all-settings"),
            ],
            &admin_options(),
        )
        .await?;
    let [Ok(brokers), Ok(topics)] = described.as_slice() else {
        bail!("DescribeConfigs failed: {described:?}");
    };
    ensure!(
        brokers.specifier == OwnedResourceSpecifier::Broker(broker.node_id()),
        "{node}: {:?}",
        brokers.specifier
    );
    let entry = |name: &str| {
        brokers
            .get(name)
            .ok_or_else(|| anyhow!("broker setting {name} is not described"))
    };
    let threads = entry("num.network.threads")?;
    ensure!(
        threads.value.as_deref() == Some("5")
            && threads.source == ConfigSource::StaticBroker
            && !threads.is_read_only,
        "{threads:?}"
    );
    let io = entry("num.io.threads")?;
    ensure!(
        io.value.as_deref() == Some("4") && io.source == ConfigSource::DynamicBroker,
        "{io:?}"
    );
    let isr = entry("transaction.state.log.min.isr")?;
    ensure!(
        isr.value.as_deref() == Some("2")
            && isr.source == ConfigSource::Default
            && isr.is_read_only,
        "{isr:?}"
    );
    let kerberos = entry("sasl.kerberos.min.time.before.relogin")?;
    ensure!(
        kerberos.value.as_deref() == Some("58000")
            && kerberos.source == ConfigSource::DynamicBroker
            && !kerberos.is_read_only,
        "{kerberos:?}"
    );
    let password = entry("ssl.keystore.password")?;
    ensure!(
        password.value.is_none() && password.is_sensitive,
        "{password:?}"
    );
    ensure!(
        brokers.entries.len() > 250,
        "only {} broker settings described",
        brokers.entries.len()
    );
    for (key, value) in NEW_TOPIC_SETTINGS {
        let entry = topics
            .get(key)
            .ok_or_else(|| anyhow!("topic setting {key} is not described"))?;
        ensure!(
            entry.value.as_deref() == Some(*value) && entry.source == ConfigSource::DynamicTopic,
            "{key}: {entry:?}"
        );
    }
    Ok(())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_whose_timestamp_lies_beyond_the_topics_limits_is_refused_as_invalid_timestamp(
) -> Result<()> {
    let broker = BrokerProcess::start(BrokerOptions::new(BROKER_BIN))?;
    let outcome = timestamps_checked(&broker).await;
    broker.explain(outcome)
}

async fn timestamps_checked(broker: &BrokerProcess) -> Result<()> {
    let admin = admin(&broker.bootstrap())?;
    let topic = NewTopic::new("clocked", 1, TopicReplication::Fixed(1))
        .set("message.timestamp.before.max.ms", "600000");
    for result in admin.create_topics([&topic], &admin_options()).await? {
        result.map_err(|(name, code)| anyhow!("CreateTopics {name}: {code}"))?;
    }
    let producer: FutureProducer = harness::producer_config(&broker.bootstrap())
        .set("retries", "0")
        .create()
        .context("creating a producer")?;
    let hour = 3_600_000;
    // Kafka's broker default allows an hour into the future; the topic ten minutes back.
    for (timestamp, accepted) in [
        (now_ms(), true),
        (now_ms() - 2 * hour, false),
        (now_ms() + 2 * hour, false),
        (now_ms() + hour / 2, true),
    ] {
        let sent = producer
            .send(
                FutureRecord::to("clocked")
                    .key("k")
                    .payload("v")
                    .timestamp(timestamp),
                Duration::from_secs(30),
            )
            .await;
        match (sent, accepted) {
            (Ok(_), true) => {}
            (
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::InvalidTimestamp), _)),
                false,
            ) => {}
            (other, _) => bail!(
                "a record {} ms from now was answered {:?}",
                timestamp - now_ms(),
                other.map_err(|(e, _)| e)
            ),
        }
    }
    Ok(())
}
