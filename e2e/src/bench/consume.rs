//! Consumer throughput: reading a topic's existing records from the beginning.
//!
//! Consumers use manual assignment (partition `p` goes to consumer `p % consumers`), no
//! consumer group and no commits, so the figure is the fetch path alone. Each consumer
//! connects and reads metadata first; the clock runs from the common start until the last
//! record of the target has arrived.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::cpu::{ClientCpu, Lines, Measured};
use super::stats::Throughput;
use super::{wait_for_topic, Connection, Diagnostics};

/// How long one poll waits before the loop checks its deadlines.
const POLL_WAIT: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct ConsumeOptions {
    /// Records to read in total; `None` reads what the partitions held at the start.
    pub records: Option<u64>,
    pub consumers: usize,
}

/// The outcome of a consumer run.
#[derive(Debug, Clone, Serialize)]
pub struct ConsumeReport {
    #[serde(flatten)]
    pub throughput: Throughput,
    pub partitions: i32,
    /// The record count the run waited for.
    pub target: u64,
    /// From the start to the first record (assignment, offset lookup, first fetch).
    pub first_record_s: Option<f64>,
    /// Errors the consumers' polls returned.
    pub poll_errors: u64,
    pub first_error: Option<String>,
    pub client_problems: u64,
    /// The benchmark process's own CPU time over the run.
    pub client_cpu: ClientCpu,
}

pub fn run(connection: &Connection, options: &ConsumeOptions) -> Result<ConsumeReport> {
    let consumers = options.consumers.max(1);
    let mut clients = Vec::with_capacity(consumers);
    for index in 0..consumers {
        clients.push(create_consumer(connection, index)?);
    }
    let partitions = wait_for_topic(
        clients[0].client(),
        &connection.topic,
        None,
        connection.timeout(),
    )?;
    let target = match options.records {
        Some(records) => records,
        None => available_records(&clients[0], &connection.topic, partitions, connection)?,
    };
    let consumed = Arc::new(AtomicU64::new(0));
    let lines = Arc::new(Lines::new(consumers));
    let mut workers = Vec::with_capacity(consumers);
    for (index, consumer) in clients.into_iter().enumerate() {
        let mut assignment = TopicPartitionList::new();
        for partition in (0..partitions).filter(|p| *p as usize % consumers == index) {
            assignment
                .add_partition_offset(&connection.topic, partition, Offset::Beginning)
                .context("building the assignment")?;
        }
        let reader = Reader {
            index,
            consumer,
            assignment,
            target,
            consumed: Arc::clone(&consumed),
            lines: Arc::clone(&lines),
            timeout: connection.timeout(),
        };
        workers.push(
            thread::Builder::new()
                .name(format!("consumer-{index}"))
                .spawn(move || reader.run())
                .context("spawning a consumer thread")?,
        );
    }
    let measured = lines.measure();
    let mut totals = ReaderTotals::default();
    let mut errors = Vec::new();
    for worker in workers {
        match worker.join() {
            Ok(Ok(t)) => totals.add(t),
            Ok(Err(err)) => errors.push(format!("{err:#}")),
            Err(_) => errors.push("a consumer thread panicked".to_owned()),
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("; "));
    }
    let Measured {
        start,
        elapsed,
        cpu: client_cpu,
    } = measured?;
    Ok(ConsumeReport {
        throughput: Throughput::new(totals.records, totals.bytes, elapsed),
        partitions,
        target,
        first_record_s: totals
            .first_record
            .map(|at| at.saturating_duration_since(start).as_secs_f64()),
        poll_errors: totals.poll_errors,
        first_error: totals.first_error,
        client_problems: totals.problems,
        client_cpu,
    })
}

fn create_consumer(connection: &Connection, index: usize) -> Result<BaseConsumer<Diagnostics>> {
    connection
        .consumer_config()
        .create_with_context(connection.diagnostics(format!("consumer-{index}")))
        .with_context(|| format!("creating consumer {index} for {}", connection.bootstrap))
}

/// Records between each partition's log start and high watermark.
fn available_records(
    consumer: &BaseConsumer<Diagnostics>,
    topic: &str,
    partitions: i32,
    connection: &Connection,
) -> Result<u64> {
    let mut total = 0;
    for partition in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, connection.timeout())
            .with_context(|| format!("ListOffsets {topic}-{partition}"))?;
        total += u64::try_from(high - low).unwrap_or(0);
    }
    Ok(total)
}

#[derive(Debug, Default)]
struct ReaderTotals {
    records: u64,
    bytes: u64,
    poll_errors: u64,
    problems: u64,
    first_error: Option<String>,
    first_record: Option<Instant>,
}

impl ReaderTotals {
    fn add(&mut self, other: ReaderTotals) {
        self.first_record = match (self.first_record, other.first_record) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.records += other.records;
        self.bytes += other.bytes;
        self.poll_errors += other.poll_errors;
        self.problems += other.problems;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

struct Reader {
    index: usize,
    consumer: BaseConsumer<Diagnostics>,
    assignment: TopicPartitionList,
    target: u64,
    consumed: Arc<AtomicU64>,
    lines: Arc<Lines>,
    timeout: Duration,
}

impl Reader {
    /// Reads until the target; passes the start and the finish exactly once whatever happens
    /// (the others wait for it there), and keeps the consumer until the run is measured.
    fn run(self) -> Result<ReaderTotals> {
        self.lines.start();
        let read = self.read();
        self.lines.finish();
        read
    }

    fn read(&self) -> Result<ReaderTotals> {
        self.consumer
            .assign(&self.assignment)
            .with_context(|| format!("consumer {}: assign", self.index))?;
        let mut totals = ReaderTotals::default();
        // Progress is the whole run's, so a consumer with idle partitions does not time out
        // while the others still read. Messages already fetched are taken without waiting and
        // without reading the clock (at a million records a second a clock read per record
        // cost the reader a fifth of its time); only an empty queue reads it, and waits.
        let mut last_seen = 0;
        let mut progressed = false;
        let mut last_progress = Instant::now();
        loop {
            let consumed = self.consumed.load(Ordering::Relaxed);
            if consumed >= self.target {
                break;
            }
            if consumed != last_seen {
                last_seen = consumed;
                progressed = true;
            }
            let polled = match self.consumer.poll(Duration::ZERO) {
                Some(polled) => Some(polled),
                None => {
                    let now = Instant::now();
                    if progressed {
                        progressed = false;
                        last_progress = now;
                    } else if now.duration_since(last_progress) >= self.timeout {
                        bail!(
                            "consumer {}: no record for {:?} at {consumed} of {} records",
                            self.index,
                            self.timeout,
                            self.target
                        );
                    }
                    self.consumer.poll(POLL_WAIT)
                }
            };
            match polled {
                Some(Ok(message)) => {
                    totals.first_record.get_or_insert_with(Instant::now);
                    totals.records += 1;
                    totals.bytes +=
                        (message.payload_len() + message.key().map_or(0, <[u8]>::len)) as u64;
                    self.consumed.fetch_add(1, Ordering::Relaxed);
                }
                Some(Err(err)) => {
                    totals.poll_errors += 1;
                    totals
                        .first_error
                        .get_or_insert_with(|| format!("consumer {}: {err}", self.index));
                }
                None => {}
            }
        }
        totals.problems = self.consumer.context().problems();
        Ok(totals)
    }
}
