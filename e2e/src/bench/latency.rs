//! End-to-end latency: how long a record takes from `send` to a consumer's `poll`, at a fixed
//! rate well below saturation.
//!
//! One producer and one consumer in the same process share a monotonic clock. The producer
//! writes its send time and a sequence number into the first 16 bytes of each payload, paced
//! to the target rate; the consumer, assigned to every partition from the beginning before the
//! first send, subtracts that time from its own on receipt. Records sent during the warm-up
//! (connections, first fetches) carry a flag and are not measured. The producer's own
//! acknowledgement latency is reported beside it, which splits the total into the produce
//! path and the fetch path.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::Serialize;

use super::stats::Percentiles;
use super::{
    default_payloads, prepare_topic, Connection, Diagnostics, ProducerSettings, TopicSpec,
};

/// Bytes at the head of each payload: send time (ns) and sequence number, little-endian.
pub const STAMP_BYTES: usize = 16;
/// Set in the sequence number of warm-up records.
const WARMUP_FLAG: u64 = 1 << 63;
const POLL_WAIT: Duration = Duration::from_millis(50);

#[derive(Debug, Clone)]
pub struct LatencyOptions {
    /// Records per second.
    pub rate: f64,
    /// Measured sending time (after the warm-up).
    pub duration: Duration,
    pub warmup: Duration,
    pub topic: TopicSpec,
    pub producer: ProducerSettings,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyReport {
    pub partitions: i32,
    pub rate: f64,
    /// Measured records sent (warm-up excluded).
    pub sent: u64,
    /// Measured records the consumer received.
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    /// Send to consumer receipt.
    pub end_to_end: Option<Percentiles>,
    /// Send to the producer's delivery report (the broker's acknowledgement).
    pub ack: Option<Percentiles>,
    pub failed: u64,
    pub first_error: Option<String>,
    pub client_problems: u64,
}

/// Encodes the stamp into the head of a payload.
pub fn stamp(payload: &mut [u8], sent_nanos: u64, sequence: u64) {
    payload[..8].copy_from_slice(&sent_nanos.to_le_bytes());
    payload[8..16].copy_from_slice(&sequence.to_le_bytes());
}

/// Decodes a payload's stamp: send time in ns and sequence number (with its warm-up flag).
pub fn read_stamp(payload: &[u8]) -> Option<(u64, u64)> {
    let sent = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
    let sequence = u64::from_le_bytes(payload.get(8..16)?.try_into().ok()?);
    Some((sent, sequence))
}

/// One send's identity, carried to its delivery report.
struct Sent {
    nanos: u64,
    measured: bool,
}

struct Acks {
    diagnostics: Diagnostics,
    epoch: Instant,
    samples: Mutex<Vec<u64>>,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Acks {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.diagnostics.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.diagnostics.error(error, reason);
    }
}

impl ProducerContext for Acks {
    type DeliveryOpaque = Box<Sent>;

    fn delivery(&self, result: &DeliveryResult<'_>, sent: Box<Sent>) {
        let now = self.epoch.elapsed().as_nanos() as u64;
        match result {
            Ok(_) if sent.measured => {
                if let Ok(mut samples) = self.samples.lock() {
                    samples.push(now.saturating_sub(sent.nanos));
                }
            }
            Ok(_) => {}
            Err((error, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.first_error.lock() {
                    first.get_or_insert_with(|| error.to_string());
                }
            }
        }
    }
}

pub fn run(connection: &Connection, options: &LatencyOptions) -> Result<LatencyReport> {
    if options.producer.record_size < STAMP_BYTES {
        bail!("--record-size must be at least {STAMP_BYTES} for the latency stamp");
    }
    if options.rate <= 0.0 || !options.rate.is_finite() {
        bail!("--rate must be a positive number of records per second");
    }
    let partitions = prepare_topic(connection, &options.topic)?;
    let epoch = Instant::now();
    let measured_records = (options.rate * options.duration.as_secs_f64()).round() as u64;
    let warmup_records = (options.rate * options.warmup.as_secs_f64()).round() as u64;

    let consumer = start_consumer(connection, partitions)?;
    let receiver = Receiver {
        consumer,
        epoch,
        expected: measured_records,
        producer_done: Arc::new(AtomicBool::new(false)),
        timeout: connection.timeout(),
    };
    let producer_done = Arc::clone(&receiver.producer_done);
    let receiving = thread::Builder::new()
        .name("latency-consumer".to_owned())
        .spawn(move || receiver.run())
        .context("spawning the consumer thread")?;

    let sending = send_paced(
        connection,
        options,
        partitions,
        epoch,
        warmup_records,
        measured_records,
    );
    producer_done.store(true, Ordering::Relaxed);
    let received = receiving
        .join()
        .map_err(|_| anyhow!("the consumer thread panicked"))?;
    let producer = sending?;
    let received = received?;

    let context = producer.context();
    let acks = context
        .samples
        .lock()
        .map(|mut s| std::mem::take(&mut *s))
        .unwrap_or_default();
    let first_error = context.first_error.lock().ok().and_then(|e| e.clone());
    let count = received.samples.len() as u64;
    Ok(LatencyReport {
        partitions,
        rate: options.rate,
        sent: measured_records,
        received: count,
        lost: measured_records.saturating_sub(count),
        duplicates: received.duplicates,
        end_to_end: Percentiles::from_nanos(received.samples),
        ack: Percentiles::from_nanos(acks),
        failed: context.failed.load(Ordering::Relaxed),
        first_error: first_error.or(received.first_error),
        client_problems: context.diagnostics.problems() + received.problems,
    })
}

fn start_consumer(connection: &Connection, partitions: i32) -> Result<BaseConsumer<Diagnostics>> {
    let consumer: BaseConsumer<Diagnostics> = connection
        .consumer_config()
        .create_with_context(connection.diagnostics("latency-consumer"))
        .context("creating the latency consumer")?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(&connection.topic, partition, Offset::Beginning)
            .context("building the assignment")?;
    }
    consumer
        .assign(&assignment)
        .context("assigning partitions")?;
    Ok(consumer)
}

/// Sends warm-up then measured records at the target rate; returns the flushed producer.
fn send_paced(
    connection: &Connection,
    options: &LatencyOptions,
    partitions: i32,
    epoch: Instant,
    warmup_records: u64,
    measured_records: u64,
) -> Result<BaseProducer<Acks>> {
    let mut settings = options.producer.clone();
    settings.linger_ms.get_or_insert(0);
    let context = Acks {
        diagnostics: connection.diagnostics("latency-producer"),
        epoch,
        samples: Mutex::new(Vec::with_capacity(measured_records as usize)),
        failed: AtomicU64::new(0),
        first_error: Mutex::new(None),
    };
    let producer: BaseProducer<Acks> = settings
        .client_config(connection)
        .create_with_context(context)
        .context("creating the latency producer")?;
    let payloads = default_payloads(settings.record_size);
    let keys = settings.key_pool();
    let mut payload = vec![0u8; settings.record_size];
    let interval = Duration::from_secs_f64(1.0 / options.rate);
    let start = Instant::now();
    for index in 0..warmup_records + measured_records {
        // Waiting inside `poll` serves delivery reports as they come, so the ack latencies
        // are not rounded up to the send interval.
        let due = start + interval.mul_f64(index as f64);
        loop {
            producer.poll(due.saturating_duration_since(Instant::now()));
            if Instant::now() >= due {
                break;
            }
        }
        let measured = index >= warmup_records;
        let sequence = if measured {
            index - warmup_records
        } else {
            index | WARMUP_FLAG
        };
        payload.copy_from_slice(&payloads[index as usize % payloads.len()]);
        let nanos = epoch.elapsed().as_nanos() as u64;
        stamp(&mut payload, nanos, sequence);
        let mut record =
            BaseRecord::with_opaque_to(&connection.topic, Box::new(Sent { nanos, measured }))
                .payload(&payload[..]);
        if keys.is_empty() {
            record = record.partition((index % partitions as u64) as i32);
        } else {
            record = record.key(&keys[index as usize % keys.len()][..]);
        }
        producer
            .send::<[u8], [u8]>(record)
            .map_err(|(err, _)| anyhow!("send: {err}"))?;
    }
    producer
        .flush(connection.timeout())
        .map_err(|err| anyhow!("flushing the latency producer: {err}"))?;
    Ok(producer)
}

struct Received {
    samples: Vec<u64>,
    duplicates: u64,
    first_error: Option<String>,
    problems: u64,
}

struct Receiver {
    consumer: BaseConsumer<Diagnostics>,
    epoch: Instant,
    expected: u64,
    producer_done: Arc<AtomicBool>,
    timeout: Duration,
}

impl Receiver {
    /// Receives until every measured record arrived, or the timeout passed without one.
    fn run(self) -> Result<Received> {
        let mut samples = Vec::with_capacity(self.expected as usize);
        let mut seen = vec![false; self.expected as usize];
        let mut duplicates = 0;
        let mut first_error = None;
        let mut last_progress = Instant::now();
        while (samples.len() as u64) < self.expected {
            if last_progress.elapsed() >= self.timeout {
                if self.producer_done.load(Ordering::Relaxed) {
                    break; // The missing records are reported as lost.
                }
                bail!(
                    "no record received for {:?} while the producer was sending",
                    self.timeout
                );
            }
            match self.consumer.poll(POLL_WAIT) {
                Some(Ok(message)) => {
                    let now = self.epoch.elapsed().as_nanos() as u64;
                    last_progress = Instant::now();
                    let Some((sent, sequence)) = message.payload().and_then(read_stamp) else {
                        first_error.get_or_insert_with(|| "a record without a stamp".to_owned());
                        continue;
                    };
                    if sequence & WARMUP_FLAG != 0 {
                        continue;
                    }
                    match seen.get_mut(sequence as usize) {
                        Some(true) => duplicates += 1,
                        Some(slot) => {
                            *slot = true;
                            samples.push(now.saturating_sub(sent));
                        }
                        None => {
                            first_error.get_or_insert_with(|| format!("sequence {sequence}"));
                        }
                    }
                }
                Some(Err(err)) => {
                    first_error.get_or_insert_with(|| format!("consumer: {err}"));
                }
                None => {}
            }
        }
        Ok(Received {
            samples,
            duplicates,
            first_error,
            problems: self.consumer.context().problems(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_reads_back_with_its_warmup_flag() {
        let mut payload = vec![b'A'; 32];
        stamp(&mut payload, 123_456_789, 42 | WARMUP_FLAG);
        assert_eq!(read_stamp(&payload), Some((123_456_789, 42 | WARMUP_FLAG)));
        assert_eq!(&payload[16..], &[b'A'; 16]);
        assert_eq!(read_stamp(&payload[..10]), None);
    }
}
