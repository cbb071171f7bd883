//! Crash safety with a real broker process: SIGKILL during heavy produce, restart, and every
//! acknowledged record is still there, at the offset it was acknowledged at.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use oxbow_e2e::harness::{self, client_config, consumer_config, BrokerOptions, BrokerProcess};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

const TOPIC: &str = "crash";
const PARTITIONS: i32 = 3;
const KILLS: usize = 20;
/// Records sent per round at most: enough to keep the broker writing when it is killed,
/// few enough that reading everything back stays quick in a debug build.
const MAX_PER_ROUND: u64 = 40_000;

/// Acknowledged records: (partition, offset) -> value.
type Acked = Arc<Mutex<BTreeMap<(i32, i64), Vec<u8>>>>;

struct Recorder {
    acked: Acked,
}

impl ClientContext for Recorder {}

impl ProducerContext for Recorder {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Ok(message) = result {
            if let (Some(value), Ok(mut acked)) = (message.payload(), self.acked.lock()) {
                acked.insert((message.partition(), message.offset()), value.to_vec());
            }
        }
    }
}

/// Produces as fast as librdkafka allows until `stop`, recording every acknowledgement.
fn produce_until(
    bootstrap: &str,
    round: usize,
    acked: Acked,
    stop: Arc<AtomicBool>,
) -> Result<u64> {
    let producer: ThreadedProducer<Recorder> = client_config(bootstrap)
        .set("acks", "1")
        .set("enable.idempotence", "false")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "3000")
        .set("queue.buffering.max.messages", "200000")
        .create_with_context(Recorder { acked })?;
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if sent >= MAX_PER_ROUND {
            thread::sleep(Duration::from_millis(5));
            continue;
        }
        let key = format!("key-{}", sent % 97);
        let value = format!("round-{round}-record-{sent}-{}", "x".repeat(64));
        match producer.send(BaseRecord::to(TOPIC).key(&key).payload(&value)) {
            Ok(()) => sent += 1,
            Err((_, _)) => thread::sleep(Duration::from_millis(1)),
        }
        // Paced so that writes are still flowing whenever in the round the kill comes.
        if sent % 50 == 0 {
            thread::sleep(Duration::from_millis(1));
        }
    }
    // Deliveries that still fail were never acknowledged and are not checked.
    let _ = producer.flush(Duration::from_secs(4));
    Ok(sent)
}

fn read_everything(bootstrap: &str) -> Result<BTreeMap<(i32, i64), Vec<u8>>> {
    let consumer: BaseConsumer = consumer_config(bootstrap, "crash-check")
        .set("check.crcs", "true")
        .create()?;
    let mut ends = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        let (_, high) = consumer.fetch_watermarks(TOPIC, partition, Duration::from_secs(10))?;
        ends.insert(partition, high);
        assignment.add_partition_offset(TOPIC, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut seen = BTreeMap::new();
    let mut next: BTreeMap<i32, i64> = (0..PARTITIONS).map(|p| (p, 0)).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while next.iter().any(|(p, n)| *n < ends[p]) {
        ensure!(
            Instant::now() < deadline,
            "reading back timed out at {next:?} of {ends:?}"
        );
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message =
            message.context("consumer error (a corrupt batch fails librdkafka's CRC check)")?;
        let (partition, offset) = (message.partition(), message.offset());
        ensure!(
            offset >= next[&partition],
            "partition {partition}: offset {offset} after {}",
            next[&partition]
        );
        next.insert(partition, offset + 1);
        seen.insert(
            (partition, offset),
            message.payload().unwrap_or_default().to_vec(),
        );
    }
    Ok(seen)
}

#[test]
fn sigkill_during_heavy_produce_loses_no_acknowledged_record_over_twenty_kills() -> Result<()> {
    let mut broker = BrokerProcess::start(
        BrokerOptions::new(env!("CARGO_BIN_EXE_oxbow-broker"))
            .args(["--log-segment-bytes", "1048576"])
            .args(["--override", "auto.create.topics.enable=false"]),
    )?;
    let bootstrap = broker.bootstrap();
    tokio::runtime::Runtime::new()?
        .block_on(harness::create_topic(&bootstrap, TOPIC, PARTITIONS))?;
    let acked: Acked = Arc::default();
    let mut sent_total = 0u64;
    for round in 0..KILLS {
        let stop = Arc::new(AtomicBool::new(false));
        let producer = {
            let (bootstrap, acked, stop) =
                (bootstrap.clone(), Arc::clone(&acked), Arc::clone(&stop));
            thread::spawn(move || produce_until(&bootstrap, round, acked, stop))
        };
        // Kill at a different point of the write stream each round.
        thread::sleep(Duration::from_millis(300 + (round as u64 * 53) % 500));
        broker.kill()?;
        // Back up at once: the producer's retries of unacknowledged batches land on the
        // restarted broker, so acknowledgements straddle the crash too.
        let down = Instant::now();
        broker.restart()?;
        let restarted = down.elapsed();
        stop.store(true, Ordering::Relaxed);
        sent_total += producer
            .join()
            .map_err(|_| anyhow::anyhow!("producer thread panicked"))??;
        println!(
            "round {round}: restart took {restarted:?}, round ended {:?} after the kill",
            down.elapsed()
        );
    }
    let acked = acked
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    ensure!(
        acked.len() > 1000,
        "too few acknowledged records to mean anything: {}",
        acked.len()
    );
    let stored = broker.explain(read_everything(&bootstrap))?;
    let mut missing = 0usize;
    let mut changed = 0usize;
    for (position, value) in &acked {
        match stored.get(position) {
            None => missing += 1,
            Some(found) if found != value => changed += 1,
            Some(_) => {}
        }
    }
    println!(
        "{KILLS} kills: {sent_total} sent, {} acknowledged, {} stored; {missing} missing, {changed} changed",
        acked.len(),
        stored.len()
    );
    ensure!(
        missing == 0 && changed == 0,
        "{missing} acknowledged records missing and {changed} changed after {KILLS} kills"
    );
    Ok(())
}
