//! `oxbow-bench`: producer throughput, consumer throughput and end-to-end latency against any
//! Kafka-compatible broker, through librdkafka.
//!
//! Prints one JSON object on a single stdout line (what scripts parse) and a human summary on
//! stderr. Exits 1 when the run failed or lost records, with the JSON still printed.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};
use oxbow_e2e::bench::consume::{self, ConsumeOptions};
use oxbow_e2e::bench::latency::{self, LatencyOptions};
use oxbow_e2e::bench::produce::{self, ProduceOptions};
use oxbow_e2e::bench::{Connection, ProducerSettings, TopicSpec};
use oxbow_e2e::cluster::{Cluster, ClusterOptions};
use oxbow_e2e::kafka::{KafkaBroker, SERVER_JVM};
use serde_json::{json, Value};

/// Kafka benchmark on librdkafka: producer and consumer throughput, end-to-end latency.
#[derive(Debug, Parser)]
#[command(name = "oxbow-bench", version, about)]
struct Cli {
    #[command(flatten)]
    connection: Connection,
    /// Free-form label copied into the JSON (e.g. the broker's name).
    #[arg(long, global = true, default_value = "")]
    label: String,
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Debug, Subcommand)]
enum Workload {
    /// Producer throughput: records/s and MB/s acknowledged.
    Produce(ProduceArgs),
    /// Consumer throughput over the records already in the topic.
    Consume(ConsumeArgs),
    /// End-to-end latency percentiles at a fixed rate.
    Latency(LatencyArgs),
    /// Starts a local Oxbow cluster (the e2e harness) for replicated runs: prints its bootstrap
    /// and broker process ids as one JSON line, then keeps it until stdin closes.
    Cluster(ClusterArgs),
    /// Starts an Apache Kafka broker (KRaft, broker and controller in one JVM, with the JVM
    /// flags of kafka-server-start.sh) from the jars scripts/kafka-tools.sh fetches: prints its
    /// bootstrap and process id as one JSON line, then keeps it until stdin closes.
    Kafka(KafkaArgs),
}

#[derive(Debug, Args)]
struct ProduceArgs {
    /// Records to send in total (across producers).
    #[arg(long, required_unless_present = "duration")]
    records: Option<u64>,
    /// Seconds to send for, instead of (or as a cap on) --records.
    #[arg(long)]
    duration: Option<f64>,
    /// Records per second in total (unlimited when not given).
    #[arg(long)]
    rate: Option<f64>,
    /// Producer clients, each on its own thread.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Transactional producers committing a transaction every this many records.
    #[arg(long)]
    transaction_records: Option<u64>,
    #[command(flatten)]
    topic: TopicSpec,
    #[command(flatten)]
    producer: ProducerSettings,
}

#[derive(Debug, Args)]
struct ConsumeArgs {
    /// Records to read (default: what the topic holds when the run starts).
    #[arg(long)]
    records: Option<u64>,
    /// Consumer clients, each on its own thread, partitions split between them.
    #[arg(long, default_value_t = 1)]
    consumers: usize,
}

#[derive(Debug, Args)]
struct LatencyArgs {
    /// Records per second.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds of measured sending.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Seconds of unmeasured sending first (connections, first fetches).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    #[command(flatten)]
    topic: TopicSpec,
    #[command(flatten)]
    producer: ProducerSettings,
}

#[derive(Debug, Args)]
struct ClusterArgs {
    /// The oxbow-broker binary to run.
    #[arg(long)]
    binary: PathBuf,
    /// Brokers (node ids 1..=N); up to three of them vote in the metadata quorum.
    #[arg(long, default_value_t = 3)]
    brokers: usize,
    /// A `server.properties` setting for every broker, KEY=VALUE; repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_setting)]
    settings: Vec<(String, String)>,
}

#[derive(Debug, Args)]
struct KafkaArgs {
    /// A `server.properties` setting, KEY=VALUE; repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_setting)]
    settings: Vec<(String, String)>,
}

fn parse_setting(raw: &str) -> Result<(String, String), String> {
    raw.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{raw}` is not KEY=VALUE"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let held = match &cli.workload {
        Workload::Cluster(args) => Some(("cluster", run_cluster(args))),
        Workload::Kafka(args) => Some(("kafka", run_kafka(args))),
        _ => None,
    };
    if let Some((mode, outcome)) = held {
        return match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("oxbow-bench {mode} failed: {err:#}");
                println!(
                    "{}",
                    json!({ "mode": mode, "ok": false, "error": format!("{err:#}") })
                );
                ExitCode::FAILURE
            }
        };
    }
    let (mode, outcome) = match &cli.workload {
        Workload::Produce(args) => ("produce", run_produce(&cli.connection, args)),
        Workload::Consume(args) => ("consume", run_consume(&cli.connection, args)),
        Workload::Latency(args) => ("latency", run_latency(&cli.connection, args)),
        Workload::Cluster(_) | Workload::Kafka(_) => return ExitCode::FAILURE,
    };
    let header = json!({
        "mode": mode,
        "label": cli.label,
        "bootstrap": cli.connection.bootstrap,
        "topic": cli.connection.topic,
    });
    let (ok, mut line) = match outcome {
        Ok((ok, report)) => (ok, report),
        Err(err) => {
            eprintln!("oxbow-bench {mode} failed: {err:#}");
            (false, json!({ "error": format!("{err:#}") }))
        }
    };
    if let (Value::Object(line), Value::Object(header)) = (&mut line, header) {
        line.extend(header);
        line.insert("ok".to_owned(), Value::Bool(ok));
    }
    println!("{line}");
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs the cluster until stdin reaches its end (the caller closing it, or exiting); the
/// brokers are killed when the cluster is dropped, whatever ends this.
fn run_cluster(args: &ClusterArgs) -> Result<()> {
    let mut options = ClusterOptions::new(&args.binary)
        .brokers(args.brokers)
        .voters(args.brokers.min(3));
    for (key, value) in &args.settings {
        options = options.set(key, value);
    }
    let cluster = Cluster::start(options)?;
    let pids: Vec<u32> = cluster
        .node_ids()
        .into_iter()
        .filter_map(|id| cluster.pid(id))
        .collect();
    hold(
        "cluster",
        &format!("cluster of {} brokers", args.brokers),
        &cluster.bootstrap(),
        &pids,
    )?;
    drop(cluster);
    Ok(())
}

/// Runs a Kafka broker until stdin reaches its end; it is killed when dropped.
fn run_kafka(args: &KafkaArgs) -> Result<()> {
    let settings: Vec<String> = args
        .settings
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let broker = KafkaBroker::start_with_jvm(&settings, SERVER_JVM)?;
    let pids: Vec<u32> = broker.pid().into_iter().collect();
    hold("kafka", "Apache Kafka broker", &broker.bootstrap(), &pids)?;
    drop(broker);
    Ok(())
}

/// Prints what was started as one JSON line, then waits for stdin to reach its end.
fn hold(mode: &str, what: &str, bootstrap: &str, pids: &[u32]) -> Result<()> {
    println!(
        "{}",
        json!({ "mode": mode, "ok": true, "bootstrap": bootstrap, "pids": pids })
    );
    std::io::stdout().flush()?;
    eprintln!("{what} at {bootstrap}; close stdin to stop it");
    std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink())?;
    Ok(())
}

fn seconds(value: f64, what: &str) -> Result<Duration> {
    if !(value.is_finite() && value >= 0.0) {
        bail!("{what} must be a non-negative number of seconds, not {value}");
    }
    Ok(Duration::from_secs_f64(value))
}

fn run_produce(connection: &Connection, args: &ProduceArgs) -> Result<(bool, Value)> {
    let options = ProduceOptions {
        records: args.records,
        duration: args
            .duration
            .map(|d| seconds(d, "--duration"))
            .transpose()?,
        rate: args.rate,
        producers: args.producers,
        transaction_records: args.transaction_records,
        topic: args.topic.clone(),
        producer: args.producer.clone(),
    };
    let report = produce::run(connection, &options)?;
    let t = &report.throughput;
    eprintln!(
        "produce {}: {} records ({} B each, {} partitions, {} producer(s)) in {:.2} s: \
         {:.0} records/s, {:.1} MB/s; {} failed",
        connection.topic,
        t.records,
        args.producer.record_size,
        report.partitions,
        args.producers,
        t.elapsed_s,
        t.records_per_s,
        t.mb_per_s,
        report.failed
    );
    if report.transactions > 0 {
        eprintln!("  {} transactions committed", report.transactions);
    }
    if let Some(err) = &report.first_error {
        eprintln!("  first error: {err}");
    }
    let ok = report.failed == 0 && args.records.is_none_or(|n| n == t.records);
    let mut value = serde_json::to_value(&report)?;
    value["settings"] = json!({
        "producer": args.producer,
        "producers": args.producers,
        "rate": args.rate,
        "transaction_records": args.transaction_records,
    });
    Ok((ok, value))
}

fn run_consume(connection: &Connection, args: &ConsumeArgs) -> Result<(bool, Value)> {
    let options = ConsumeOptions {
        records: args.records,
        consumers: args.consumers,
    };
    let report = consume::run(connection, &options)?;
    let t = &report.throughput;
    eprintln!(
        "consume {}: {} records ({} partitions, {} consumer(s)) in {:.2} s: \
         {:.0} records/s, {:.1} MB/s; {} poll errors",
        connection.topic,
        t.records,
        report.partitions,
        args.consumers,
        t.elapsed_s,
        t.records_per_s,
        t.mb_per_s,
        report.poll_errors
    );
    if let Some(err) = &report.first_error {
        eprintln!("  first error: {err}");
    }
    let ok = t.records >= report.target;
    let mut value = serde_json::to_value(&report)?;
    value["settings"] = json!({ "consumers": args.consumers });
    Ok((ok, value))
}

fn run_latency(connection: &Connection, args: &LatencyArgs) -> Result<(bool, Value)> {
    let options = LatencyOptions {
        rate: args.rate,
        duration: seconds(args.duration, "--duration")?,
        warmup: seconds(args.warmup, "--warmup")?,
        topic: args.topic.clone(),
        producer: args.producer.clone(),
    };
    let report = latency::run(connection, &options)?;
    match &report.end_to_end {
        Some(p) => eprintln!(
            "latency {}: {} of {} records at {}/s over {} partitions: \
             p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            connection.topic,
            report.received,
            report.sent,
            report.rate,
            report.partitions,
            p.p50_ms,
            p.p99_ms,
            p.p999_ms,
            p.max_ms
        ),
        None => eprintln!("latency {}: no record received", connection.topic),
    }
    if let Some(a) = &report.ack {
        eprintln!(
            "  producer acks: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            a.p50_ms, a.p99_ms, a.max_ms
        );
    }
    if let Some(err) = &report.first_error {
        eprintln!("  first error: {err}");
    }
    let ok = report.failed == 0 && report.lost == 0 && report.end_to_end.is_some();
    let mut value = serde_json::to_value(&report)?;
    let mut producer = args.producer.clone();
    producer.linger_ms.get_or_insert(0);
    value["settings"] = json!({ "producer": producer, "warmup_s": args.warmup });
    Ok((ok, value))
}
