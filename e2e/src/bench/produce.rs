//! Producer throughput: records and bytes per second acknowledged by the broker.
//!
//! Each producer is its own librdkafka client on its own thread. All of them connect and read
//! the topic's metadata first, then start together; the clock runs from that start until the
//! last producer has every record acknowledged (`flush`), so the figure is acknowledged
//! throughput, not enqueue speed.
//!
//! With `transaction_records`, each producer is transactional (its own `transactional.id`) and
//! commits a transaction every that many records; the clock then runs until the last commit
//! returns, so the figure is committed throughput.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use serde::Serialize;

use super::cpu::{ClientCpu, Lines, Measured};
use super::stats::Throughput;
use super::{
    default_payloads, prepare_topic, sleep_until, wait_for_topic, Connection, Diagnostics,
    ProducerSettings, TopicSpec,
};

/// Sends between two non-blocking polls for delivery reports.
const POLL_EVERY: u64 = 256;

/// How much a run sends, and how fast it may.
#[derive(Debug, Clone)]
pub struct ProduceOptions {
    /// Records in total (across producers); `None` runs for `duration`.
    pub records: Option<u64>,
    pub duration: Option<Duration>,
    /// Records per second in total; `None` sends as fast as the client goes.
    pub rate: Option<f64>,
    pub producers: usize,
    /// Records per transaction; `None` produces without transactions.
    pub transaction_records: Option<u64>,
    pub topic: TopicSpec,
    pub producer: ProducerSettings,
}

/// The outcome of a producer run.
#[derive(Debug, Clone, Serialize)]
pub struct ProduceReport {
    #[serde(flatten)]
    pub throughput: Throughput,
    pub partitions: i32,
    /// Records the broker refused or that timed out.
    pub failed: u64,
    /// Transactions committed (0 without transactions).
    pub transactions: u64,
    pub first_error: Option<String>,
    /// librdkafka warnings and errors seen by the producers.
    pub client_problems: u64,
    /// The benchmark process's own CPU time over the run.
    pub client_cpu: ClientCpu,
}

/// Counts delivery reports; one per producer, read after the run.
struct Deliveries {
    diagnostics: Diagnostics,
    delivered: AtomicU64,
    bytes: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.diagnostics.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.diagnostics.error(error, reason);
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(message) => {
                let size = message.payload_len() + message.key().map_or(0, <[u8]>::len);
                self.delivered.fetch_add(1, Ordering::Relaxed);
                self.bytes.fetch_add(size as u64, Ordering::Relaxed);
            }
            Err((error, message)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.first_error.lock() {
                    first.get_or_insert_with(|| {
                        format!("partition {}: {error}", message.partition())
                    });
                }
            }
        }
    }
}

/// Runs the producer workload.
pub fn run(connection: &Connection, options: &ProduceOptions) -> Result<ProduceReport> {
    if options.records.is_none() && options.duration.is_none() {
        bail!("give --records or --duration");
    }
    if options.transaction_records == Some(0) {
        bail!("--transaction-records must be positive");
    }
    let partitions = prepare_topic(connection, &options.topic)?;
    let producers = options.producers.max(1);
    let payloads = Arc::new(default_payloads(options.producer.record_size));
    let keys = Arc::new(options.producer.key_pool());
    let lines = Arc::new(Lines::new(producers));

    let mut workers = Vec::with_capacity(producers);
    for index in 0..producers {
        let worker = Worker {
            index,
            producers,
            partitions,
            connection: connection.clone(),
            options: options.clone(),
            payloads: Arc::clone(&payloads),
            keys: Arc::clone(&keys),
            lines: Arc::clone(&lines),
        };
        workers.push(
            thread::Builder::new()
                .name(format!("producer-{index}"))
                .spawn(move || worker.run())
                .context("spawning a producer thread")?,
        );
    }
    // Threads that failed before the start line still pass it and the finish (see `Worker::run`).
    let measured = lines.measure();
    let mut totals = WorkerTotals::default();
    let mut errors = Vec::new();
    for worker in workers {
        match worker.join() {
            Ok(Ok(t)) => totals.add(&t),
            Ok(Err(err)) => errors.push(format!("{err:#}")),
            Err(_) => errors.push("a producer thread panicked".to_owned()),
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("; "));
    }
    let Measured {
        elapsed,
        cpu: client_cpu,
        ..
    } = measured?;
    Ok(ProduceReport {
        throughput: Throughput::new(totals.delivered, totals.bytes, elapsed),
        partitions,
        failed: totals.failed,
        transactions: totals.transactions,
        first_error: totals.first_error,
        client_problems: totals.problems,
        client_cpu,
    })
}

#[derive(Debug, Default)]
struct WorkerTotals {
    delivered: u64,
    bytes: u64,
    failed: u64,
    transactions: u64,
    problems: u64,
    first_error: Option<String>,
}

impl WorkerTotals {
    fn add(&mut self, other: &WorkerTotals) {
        self.delivered += other.delivered;
        self.bytes += other.bytes;
        self.failed += other.failed;
        self.transactions += other.transactions;
        self.problems += other.problems;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }
}

struct Worker {
    index: usize,
    producers: usize,
    partitions: i32,
    connection: Connection,
    options: ProduceOptions,
    payloads: Arc<Vec<Vec<u8>>>,
    keys: Arc<Vec<Vec<u8>>>,
    lines: Arc<Lines>,
}

impl Worker {
    fn run(self) -> Result<WorkerTotals> {
        // Every thread must pass the start and the finish exactly once, or the others wait
        // forever; the producer is dropped only after the finish, once its CPU time is read.
        let producer = self.connect();
        self.lines.start();
        let sent = match &producer {
            Ok(producer) => self.send_all(producer),
            Err(_) => Ok(0),
        };
        self.lines.finish();
        let producer = producer?;
        let transactions = sent?;
        let context = producer.context();
        Ok(WorkerTotals {
            delivered: context.delivered.load(Ordering::Relaxed),
            bytes: context.bytes.load(Ordering::Relaxed),
            failed: context.failed.load(Ordering::Relaxed),
            transactions,
            problems: context.diagnostics.problems(),
            first_error: context.first_error.lock().ok().and_then(|e| e.clone()),
        })
    }

    /// Creates the producer and warms its connection: bootstrap, metadata, partition leaders.
    fn connect(&self) -> Result<BaseProducer<Deliveries>> {
        let context = Deliveries {
            diagnostics: self
                .connection
                .diagnostics(format!("producer-{}", self.index)),
            delivered: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            first_error: Mutex::new(None),
        };
        let mut config = self.options.producer.client_config(&self.connection);
        if self.options.transaction_records.is_some() {
            config.set(
                "transactional.id",
                format!("oxbow-bench-{}-{}", self.connection.topic, self.index),
            );
        }
        let producer: BaseProducer<Deliveries> = config
            .create_with_context(context)
            .context("creating a producer")?;
        wait_for_topic(
            producer.client(),
            &self.connection.topic,
            Some(self.partitions),
            self.connection.timeout(),
        )?;
        if self.options.transaction_records.is_some() {
            producer
                .init_transactions(self.connection.timeout())
                .map_err(|err| anyhow!("producer {}: init_transactions: {err}", self.index))?;
        }
        Ok(producer)
    }

    /// Sends this producer's share and waits for every acknowledgement (or the last commit);
    /// returns the transactions committed.
    fn send_all(&self, producer: &BaseProducer<Deliveries>) -> Result<u64> {
        let start = Instant::now();
        let stride = self.producers as u64;
        let quota = self.options.records.map(|total| {
            // Records index..total step stride belong to this producer.
            (total + stride - 1 - self.index as u64) / stride
        });
        let deadline = self.options.duration.map(|d| start + d);
        let interval = self
            .options
            .rate
            .filter(|r| *r > 0.0)
            .map(|rate| Duration::from_secs_f64(stride as f64 / rate));
        let topic = self.connection.topic.as_str();
        let per_transaction = self.options.transaction_records;
        let mut committed: u64 = 0;
        let mut open = false;

        let mut sent: u64 = 0;
        loop {
            if quota.is_some_and(|q| sent >= q) {
                break;
            }
            if sent % POLL_EVERY == 0 {
                producer.poll(Duration::ZERO);
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
            }
            if let Some(interval) = interval {
                sleep_until(start + interval.mul_f64(sent as f64));
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
            }
            if let Some(size) = per_transaction {
                if open && sent % size == 0 {
                    self.commit(producer)?;
                    committed += 1;
                    open = false;
                }
                if !open {
                    producer
                        .begin_transaction()
                        .map_err(|err| anyhow!("producer {}: begin: {err}", self.index))?;
                    open = true;
                }
            }
            let global = sent * stride + self.index as u64;
            let payload = &self.payloads[(global % self.payloads.len() as u64) as usize];
            let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).payload(payload);
            if self.keys.is_empty() {
                record = record.partition((global % self.partitions as u64) as i32);
            } else {
                record = record.key(&self.keys[(global % self.keys.len() as u64) as usize]);
            }
            self.send_one(producer, record)?;
            sent += 1;
        }
        if open {
            self.commit(producer)?;
            committed += 1;
        }
        producer
            .flush(self.connection.timeout())
            .map_err(|err| anyhow!("flushing producer {}: {err}", self.index))?;
        Ok(committed)
    }

    /// Commits the open transaction: librdkafka flushes its records first.
    fn commit(&self, producer: &BaseProducer<Deliveries>) -> Result<()> {
        producer
            .commit_transaction(self.connection.timeout())
            .map_err(|err| anyhow!("producer {}: commit: {err}", self.index))
    }

    /// Enqueues one record, waiting for deliveries while librdkafka's queue is full; fails when
    /// nothing is acknowledged for the whole timeout.
    fn send_one<'a>(
        &self,
        producer: &BaseProducer<Deliveries>,
        mut record: BaseRecord<'a, [u8], [u8]>,
    ) -> Result<()> {
        let mut stalled_since: Option<(Instant, u64)> = None;
        loop {
            match producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(5));
                    let progress = producer.context().delivered.load(Ordering::Relaxed)
                        + producer.context().failed.load(Ordering::Relaxed);
                    match stalled_since {
                        Some((_, seen)) if seen != progress => {
                            stalled_since = Some((Instant::now(), progress));
                        }
                        Some((since, _)) if since.elapsed() >= self.connection.timeout() => {
                            bail!(
                                "producer {}: no record acknowledged for {:?} with the queue full",
                                self.index,
                                self.connection.timeout()
                            );
                        }
                        Some(_) => {}
                        None => stalled_since = Some((Instant::now(), progress)),
                    }
                }
                Err((err, _)) => bail!("producer {}: send: {err}", self.index),
            }
        }
    }
}
