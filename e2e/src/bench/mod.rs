//! `oxbow-bench`'s workloads, driven through librdkafka against any Kafka-compatible broker.
//!
//! Three workloads, one module each: [`produce`] (producer throughput), [`consume`]
//! (consumer throughput over data already in a topic) and [`latency`] (end-to-end latency at a
//! fixed rate). This module holds what they share: how to reach the broker, the producer
//! settings, the topic they work on, the payloads they send, and a client context that shows
//! librdkafka's complaints instead of swallowing them.
//!
//! The workloads are deterministic in what they send: payloads come from a fixed-seed
//! generator, records without keys go round-robin over the partitions (chosen by the tool, not
//! by librdkafka's sticky partitioner), so two brokers see the same requests.

pub mod consume;
pub mod cpu;
pub mod latency;
pub mod produce;
pub mod stats;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{Client, DefaultClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};
use serde::Serialize;

/// Client errors and warnings printed per client; the rest are only counted.
const REPORTED_CLIENT_PROBLEMS: u64 = 10;
/// How many distinct payloads a run cycles through (so compression sees varied records).
const PAYLOAD_POOL: usize = 1024;

/// How to reach the broker, shared by every workload.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// Bootstrap servers, host:port[,host:port...].
    #[arg(
        long,
        env = "OXBOW_BENCH_BOOTSTRAP",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    pub bootstrap: String,
    /// The topic the workload writes or reads.
    #[arg(long, default_value = "oxbow-bench", global = true)]
    pub topic: String,
    /// An extra librdkafka setting for every client, KEY=VALUE; repeatable.
    #[arg(long = "property", value_name = "KEY=VALUE", value_parser = parse_property, global = true)]
    pub properties: Vec<(String, String)>,
    /// Seconds without progress after which the run fails (bounds every wait).
    #[arg(
        long = "timeout",
        value_name = "SECONDS",
        default_value_t = 30.0,
        global = true
    )]
    pub timeout_s: f64,
}

impl Connection {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_s.max(0.1))
    }

    /// Settings every client shares; workload-specific ones go on top, `--property` last.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap)
            .set("client.id", "oxbow-bench")
            .set_log_level(if self.debugging() {
                RDKafkaLogLevel::Debug
            } else {
                RDKafkaLogLevel::Warning
            });
        config
    }

    /// Whether `--property debug=...` asked librdkafka for debug logs (then all are printed).
    pub fn debugging(&self) -> bool {
        self.properties.iter().any(|(key, _)| key == "debug")
    }

    /// The client context for one client of this run.
    pub fn diagnostics(&self, label: impl Into<String>) -> Diagnostics {
        Diagnostics {
            label: label.into(),
            problems: AtomicU64::new(0),
            verbose: self.debugging().then(Instant::now),
        }
    }

    /// Consumer settings: manual assignment from the beginning, no commits, `--property` last.
    pub fn consumer_config(&self) -> ClientConfig {
        let mut config = self.client_config();
        config
            // librdkafka needs a group for `assign`, though the group is never joined.
            .set("group.id", "oxbow-bench")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest")
            // When the application falls behind and the local queue is full, librdkafka stops
            // fetching for this long (default 1000 ms): on a busy machine that turned a 1 s
            // read into 2, 3 or 4 s at random, whatever the broker. Resume quickly instead.
            .set("fetch.queue.backoff.ms", "10");
        self.apply_properties(&mut config);
        config
    }

    /// Applies `--property` settings; call after the workload's own settings so they win.
    pub fn apply_properties(&self, config: &mut ClientConfig) {
        for (key, value) in &self.properties {
            config.set(key, value);
        }
    }
}

fn parse_property(raw: &str) -> Result<(String, String), String> {
    raw.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{raw}` is not KEY=VALUE"))
}

/// The topic a producing workload writes, created first when `--partitions` is given.
#[derive(Debug, Clone, Args)]
pub struct TopicSpec {
    /// Create the topic with this many partitions first (otherwise it must exist).
    #[arg(long)]
    pub partitions: Option<i32>,
    /// Replication factor of a topic created with --partitions.
    #[arg(long, default_value_t = 1)]
    pub replication_factor: i32,
}

/// Producer settings, the same for every producer of a run.
#[derive(Debug, Clone, Args, Serialize)]
pub struct ProducerSettings {
    /// Payload bytes per record.
    #[arg(long, default_value_t = 100)]
    pub record_size: usize,
    /// `acks`: 0, 1 or all.
    #[arg(long, default_value = "1")]
    pub acks: String,
    /// `compression.type`: none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// `linger.ms` (librdkafka's default, 5, when not given; the latency workload uses 0).
    #[arg(long)]
    pub linger_ms: Option<u64>,
    /// `batch.size` in bytes (librdkafka's default when not given).
    #[arg(long)]
    pub batch_size: Option<u64>,
    /// Distinct keys, cycled through (librdkafka partitions by key); 0 sends no keys and
    /// spreads records round-robin over the partitions.
    #[arg(long, default_value_t = 0)]
    pub keys: u64,
}

impl ProducerSettings {
    pub fn client_config(&self, connection: &Connection) -> ClientConfig {
        let mut config = connection.client_config();
        config
            .set("acks", &self.acks)
            .set("compression.type", &self.compression)
            // A broker that stops answering fails the run within the timeout instead of
            // librdkafka's five minutes.
            .set(
                "message.timeout.ms",
                connection.timeout().as_millis().to_string(),
            );
        if let Some(linger) = self.linger_ms {
            config.set("linger.ms", linger.to_string());
        }
        if let Some(batch) = self.batch_size {
            config.set("batch.size", batch.to_string());
        }
        connection.apply_properties(&mut config);
        config
    }

    /// The keys a run cycles through (empty without `--keys`).
    pub fn key_pool(&self) -> Vec<Vec<u8>> {
        (0..self.keys)
            .map(|i| format!("key-{i:08}").into_bytes())
            .collect()
    }
}

/// `count` distinct payloads of `size` bytes of uppercase letters from a fixed seed, as
/// Kafka's own producer benchmark sends: compressible like text, identical across runs.
pub fn payload_pool(size: usize, count: usize) -> Vec<Vec<u8>> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        // xorshift64*: fast, fixed, good enough for filler.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    (0..count.max(1))
        .map(|_| (0..size).map(|_| b'A' + (next() % 26) as u8).collect())
        .collect()
}

/// The default payload pool for a record size.
pub fn default_payloads(size: usize) -> Vec<Vec<u8>> {
    payload_pool(size, PAYLOAD_POOL)
}

/// Creates the topic when the spec asks for it, then waits until the broker reports all its
/// partitions with leaders. Returns the partition count.
pub fn prepare_topic(connection: &Connection, spec: &TopicSpec) -> Result<i32> {
    if let Some(partitions) = spec.partitions {
        create_topic(connection, partitions, spec.replication_factor)?;
    }
    let mut config = connection.client_config();
    connection.apply_properties(&mut config);
    let admin: AdminClient<DefaultClientContext> = config
        .create()
        .with_context(|| format!("creating an admin client for {}", connection.bootstrap))?;
    wait_for_topic(
        admin.inner(),
        &connection.topic,
        spec.partitions,
        connection.timeout(),
    )
}

fn create_topic(connection: &Connection, partitions: i32, replication_factor: i32) -> Result<()> {
    let mut config = connection.client_config();
    connection.apply_properties(&mut config);
    let admin: AdminClient<DefaultClientContext> = config
        .create()
        .with_context(|| format!("creating an admin client for {}", connection.bootstrap))?;
    let topic = NewTopic::new(
        &connection.topic,
        partitions,
        TopicReplication::Fixed(replication_factor),
    );
    let options = AdminOptions::new()
        .request_timeout(Some(connection.timeout()))
        .operation_timeout(Some(connection.timeout()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime for the admin client")?;
    let results = runtime
        .block_on(async {
            tokio::time::timeout(
                connection.timeout() + Duration::from_secs(1),
                admin.create_topics([&topic], &options),
            )
            .await
        })
        .with_context(|| format!("CreateTopics {} timed out", connection.topic))?
        .with_context(|| format!("CreateTopics {}", connection.topic))?;
    for result in results {
        match result {
            Ok(_) => {}
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                eprintln!("topic {name} already exists; using it as it is");
            }
            Err((name, code)) => bail!("CreateTopics {name} ({partitions} partitions): {code}"),
        }
    }
    Ok(())
}

/// Polls metadata until `topic` exists with `expected` partitions (any count when `None`),
/// each with a leader; returns the partition count.
pub fn wait_for_topic<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    expected: Option<i32>,
    timeout: Duration,
) -> Result<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match client.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            Ok(metadata) => match metadata.topics().iter().find(|t| t.name() == topic) {
                Some(t) if t.error().is_some() => format!("topic error {:?}", t.error()),
                Some(t) => {
                    let count = t.partitions().len() as i32;
                    let led = t.partitions().iter().filter(|p| p.leader() >= 0).count() as i32;
                    if count > 0 && led == count && expected.is_none_or(|n| n == count) {
                        return Ok(count);
                    }
                    format!("{count} partitions, {led} with a leader")
                }
                None => "topic not in metadata".to_owned(),
            },
            Err(err) => err.to_string(),
        };
        if Instant::now() >= deadline {
            bail!("topic {topic} not ready within {timeout:?}: {last}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A client context that prints librdkafka's warnings and errors to stderr (the first few per
/// client, then only counts them), so a broker misbehaving under load is visible in the run.
/// With `--property debug=...` it prints every log line, stamped with ms since the client
/// started.
#[derive(Debug)]
pub struct Diagnostics {
    label: String,
    problems: AtomicU64,
    verbose: Option<Instant>,
}

impl Diagnostics {
    /// Warnings and errors librdkafka reported for this client.
    pub fn problems(&self) -> u64 {
        self.problems.load(Ordering::Relaxed)
    }

    fn report(&self, what: &str) {
        let seen = self.problems.fetch_add(1, Ordering::Relaxed) + 1;
        if seen <= REPORTED_CLIENT_PROBLEMS {
            eprintln!("[{}] librdkafka: {what}", self.label);
        } else if seen == REPORTED_CLIENT_PROBLEMS + 1 {
            eprintln!("[{}] librdkafka: further problems only counted", self.label);
        }
    }
}

impl ClientContext for Diagnostics {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if let Some(start) = self.verbose {
            let ms = start.elapsed().as_secs_f64() * 1e3;
            eprintln!("[{}] {ms:9.3} {level:?} {fac}: {message}", self.label);
        }
        if matches!(
            level,
            RDKafkaLogLevel::Emerg
                | RDKafkaLogLevel::Alert
                | RDKafkaLogLevel::Critical
                | RDKafkaLogLevel::Error
                | RDKafkaLogLevel::Warning
        ) {
            self.report(&format!("{level:?} {fac}: {message}"));
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.report(&format!("error {error}: {reason}"));
    }
}

impl ConsumerContext for Diagnostics {}

/// Sleeps until `target` when it lies ahead: the pacing step of rate-limited sends.
pub fn sleep_until(target: Instant) {
    let now = Instant::now();
    if target > now {
        std::thread::sleep(target - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_fixed_letters_of_the_requested_size() {
        let a = payload_pool(100, 3);
        assert_eq!(a, payload_pool(100, 3));
        assert_eq!(a.len(), 3);
        assert!(a.iter().all(|p| p.len() == 100));
        assert!(a.iter().flatten().all(u8::is_ascii_uppercase));
        assert_ne!(a[0], a[1]);
    }

    #[test]
    fn properties_are_key_value_pairs() {
        assert_eq!(
            parse_property("fetch.wait.max.ms = 100"),
            Ok(("fetch.wait.max.ms".to_owned(), "100".to_owned()))
        );
        assert!(parse_property("novalue").is_err());
        assert!(parse_property("=1").is_err());
    }
}
