//! Real librdkafka clients against a real `oxbow-broker` process: produce, consume, restart,
//! long-poll.
//!
//! Consumer groups are not implemented yet, so consumers here carry a group id (librdkafka
//! requires one) but read through manual `assign`, never `subscribe`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use oxbow_e2e::harness::{self, Ack, BrokerOptions, BrokerProcess};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::timeout;

const BROKER_BIN: &str = env!("CARGO_BIN_EXE_oxbow-broker");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_keyed_records_are_read_back_once_in_order_per_partition() -> Result<()> {
    let broker = start_broker()?;
    let outcome = produce_and_consume_keyed(&broker).await;
    broker.explain(outcome)
}

async fn produce_and_consume_keyed(broker: &BrokerProcess) -> Result<()> {
    let (topic, partitions, count) = ("keyed", 6, 100_000);
    let bootstrap = broker.bootstrap();
    harness::create_topic(&bootstrap, topic, partitions).await?;

    let producer = harness::future_producer(&bootstrap)?;
    let mut acks = Vec::with_capacity(count);
    harness::produce_numbered(&producer, topic, 0..count, |_| None, &mut acks).await?;
    check_keys_stick_to_partitions(&acks)?;
    ensure!(
        acks.iter().any(|ack| ack.0 != acks[0].0),
        "all {count} records landed in partition {}: keys are not spread",
        acks[0].0
    );

    let received = consume_all(&bootstrap, topic, partitions, count).await?;
    check_read_back(&acks, &received)?;
    check_high_watermarks(&bootstrap, topic, partitions, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_and_records_survive_a_clean_restart() -> Result<()> {
    let mut broker = start_broker()?;
    let outcome = survive_restart(&mut broker, Stop::Sigterm).await;
    broker.explain(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_sigkill() -> Result<()> {
    let mut broker = start_broker()?;
    let outcome = survive_restart(&mut broker, Stop::Sigkill).await;
    broker.explain(outcome)
}

#[derive(Debug, Clone, Copy)]
enum Stop {
    Sigterm,
    Sigkill,
}

/// Writes records, brings the broker down the given way and back up, then checks that the
/// topic and every acknowledged record are there and that appends continue after them.
async fn survive_restart(broker: &mut BrokerProcess, stop: Stop) -> Result<()> {
    let (topic, partitions, before, after) = ("durable", 6, 5_000, 1_000);
    let bootstrap = broker.bootstrap();
    harness::create_topic(&bootstrap, topic, partitions).await?;

    let mut acks = Vec::with_capacity(before + after);
    {
        let producer = harness::future_producer(&bootstrap)?;
        harness::produce_numbered(&producer, topic, 0..before, |_| None, &mut acks).await?;
    }
    match stop {
        Stop::Sigterm => {
            let status = broker.stop()?;
            ensure!(status.success(), "broker exited with {status} on SIGTERM");
        }
        Stop::Sigkill => broker.kill()?,
    }
    broker.restart()?;

    check_topic_metadata(&bootstrap, topic, partitions, broker.node_id())?;
    let producer = harness::future_producer(&bootstrap)?;
    harness::produce_numbered(
        &producer,
        topic,
        before..before + after,
        |_| None,
        &mut acks,
    )
    .await?;
    check_keys_stick_to_partitions(&acks)?;

    let received = consume_all(&bootstrap, topic, partitions, before + after).await?;
    check_read_back(&acks, &received)?;
    check_high_watermarks(&bootstrap, topic, partitions, before + after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_long_poll_returns_as_soon_as_a_record_arrives() -> Result<()> {
    let broker = start_broker()?;
    let outcome = long_poll_wakes_up(&broker).await;
    broker.explain(outcome)
}

async fn long_poll_wakes_up(broker: &BrokerProcess) -> Result<()> {
    let topic = "long-poll";
    let max_wait = Duration::from_millis(5000);
    let bound = Duration::from_secs(2);
    let bootstrap = broker.bootstrap();
    harness::create_topic(&bootstrap, topic, 1).await?;

    let producer = harness::future_producer(&bootstrap)?;
    let consumer: StreamConsumer = harness::consumer_config(&bootstrap, "oxbow-e2e-long-poll")
        .set("fetch.wait.max.ms", max_wait.as_millis().to_string())
        .create()
        .context("creating the long-poll consumer")?;
    assign_all(&consumer, topic, 1)?;

    // Reading a first record proves the consumer fetches at the end of the log.
    send_one(&producer, topic, "warm-up").await?;
    let warm = receive(&consumer, Duration::from_secs(30)).await?;
    ensure!(
        warm.1 == "warm-up",
        "expected the warm-up record, got {:?}",
        warm.1
    );

    // Each idle period leaves the next fetch parked on the broker; a broker that only answers
    // when fetch.wait.max.ms runs out would deliver 3 s or more after the ack.
    for idle in [300, 1000, 2000].map(Duration::from_millis) {
        tokio::time::sleep(idle).await;
        let value = format!("after {idle:?} idle");
        send_one(&producer, topic, &value).await?;
        let acked = Instant::now();
        let (_, got) = receive(&consumer, max_wait * 2).await?;
        let waited = acked.elapsed();
        ensure!(got == value, "expected {value:?}, got {got:?}");
        ensure!(
            waited < bound,
            "record produced after {idle:?} idle reached the consumer {waited:?} after its ack \
             (bound {bound:?}, fetch.wait.max.ms {max_wait:?}): the fetch was not woken"
        );
    }
    Ok(())
}

fn start_broker() -> Result<BrokerProcess> {
    BrokerProcess::start(BrokerOptions::new(BROKER_BIN))
}

async fn send_one(producer: &FutureProducer, topic: &str, value: &str) -> Result<Ack> {
    let delivery = producer
        .send(
            FutureRecord::<(), _>::to(topic).payload(value),
            Duration::from_secs(5),
        )
        .await
        .map_err(|(err, _)| anyhow!("producing {value:?} to {topic}: {err}"))?;
    Ok((delivery.partition, delivery.offset))
}

/// A record as read back: where it was and what it carried.
#[derive(Debug)]
struct Received {
    partition: i32,
    offset: i64,
    key: String,
    seq: usize,
}

impl Received {
    fn parse(message: &BorrowedMessage<'_>) -> Result<Self> {
        let at = format!(
            "{}-{}@{}",
            message.topic(),
            message.partition(),
            message.offset()
        );
        let key = message
            .key()
            .with_context(|| format!("record {at} has no key"))?;
        let value = message
            .payload()
            .with_context(|| format!("record {at} has no value"))?;
        let value = std::str::from_utf8(value).with_context(|| format!("record {at} value"))?;
        let seq = value
            .strip_prefix("seq-")
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("record {at} value {value:?} carries no sequence number"))?;
        Ok(Self {
            partition: message.partition(),
            offset: message.offset(),
            key: String::from_utf8_lossy(key).into_owned(),
            seq,
        })
    }
}

fn assign_all(consumer: &impl Consumer, topic: &str, partitions: i32) -> Result<()> {
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .with_context(|| format!("assigning {topic}-{partition}"))?;
    }
    consumer
        .assign(&assignment)
        .with_context(|| format!("assigning {topic}"))
}

/// Reads every partition from the beginning until `expected` records arrived, then listens a
/// little longer so a duplicate or stray record would show.
async fn consume_all(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    expected: usize,
) -> Result<Vec<Received>> {
    let limit = Duration::from_secs(180);
    let consumer = harness::stream_consumer(bootstrap, "oxbow-e2e-reader")?;
    assign_all(&consumer, topic, partitions)?;
    let deadline = Instant::now() + limit;
    let mut received = Vec::with_capacity(expected);
    while received.len() < expected {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, consumer.recv()).await {
            Ok(Ok(message)) => received.push(Received::parse(&message)?),
            Ok(Err(err)) => bail!(
                "consumer error after {} of {expected} records from {topic}: {err}",
                received.len()
            ),
            Err(_) => bail!(
                "read only {} of {expected} records from {topic} in {limit:?}",
                received.len()
            ),
        }
    }
    if let Ok(extra) = timeout(Duration::from_millis(500), consumer.recv()).await {
        let extra = extra.context("consumer error after reading every record")?;
        bail!(
            "read a record beyond the {expected} produced: {:?}",
            Received::parse(&extra)
        );
    }
    Ok(received)
}

/// Reads a single record's partition and value.
async fn receive(consumer: &StreamConsumer, limit: Duration) -> Result<(i32, String)> {
    let message = timeout(limit, consumer.recv())
        .await
        .with_context(|| format!("no record within {limit:?}"))?
        .context("consumer error")?;
    let value = message.payload().map(String::from_utf8_lossy);
    Ok((message.partition(), value.unwrap_or_default().into_owned()))
}

fn check_keys_stick_to_partitions(acks: &[Ack]) -> Result<()> {
    let mut home: HashMap<String, i32> = HashMap::new();
    for (seq, &(partition, _)) in acks.iter().enumerate() {
        let key = harness::numbered_key(seq);
        let first = *home.entry(key.clone()).or_insert(partition);
        ensure!(
            first == partition,
            "key {key} went to partition {first} and then to {partition} (record {seq})"
        );
    }
    Ok(())
}

/// Every acknowledged record read exactly once, where it was acknowledged, and in order
/// within its partition.
fn check_read_back(acks: &[Ack], received: &[Received]) -> Result<()> {
    let mut seen = vec![false; acks.len()];
    let mut last_in_partition: HashMap<i32, (i64, usize)> = HashMap::new();
    for record in received {
        let seq = record.seq;
        ensure!(seq < acks.len(), "read unknown record {record:?}");
        ensure!(
            !seen[seq],
            "read record {seq} twice (second time {record:?})"
        );
        seen[seq] = true;
        ensure!(
            record.key == harness::numbered_key(seq),
            "record {seq} has key {:?}, produced with {:?}",
            record.key,
            harness::numbered_key(seq)
        );
        ensure!(
            (record.partition, record.offset) == acks[seq],
            "record {seq} read at {}@{}, acknowledged at {}@{}",
            record.partition,
            record.offset,
            acks[seq].0,
            acks[seq].1
        );
        if let Some(&(offset, prev)) = last_in_partition.get(&record.partition) {
            ensure!(
                record.offset > offset && seq > prev,
                "partition {} out of order: record {prev}@{offset} then {seq}@{}",
                record.partition,
                record.offset
            );
        }
        last_in_partition.insert(record.partition, (record.offset, seq));
    }
    let missing: Vec<usize> = (0..acks.len()).filter(|&seq| !seen[seq]).collect();
    ensure!(
        missing.is_empty(),
        "{} acknowledged records never read, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    Ok(())
}

/// ListOffsets agrees: the high watermarks add up to the records written.
fn check_high_watermarks(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    count: usize,
) -> Result<()> {
    let consumer = harness::base_consumer(bootstrap, "oxbow-e2e-watermarks")?;
    let mut total = 0;
    for partition in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .with_context(|| format!("ListOffsets {topic}-{partition}"))?;
        ensure!(
            low == 0,
            "{topic}-{partition} log start offset is {low}, expected 0"
        );
        total += high;
    }
    ensure!(
        usize::try_from(total).ok() == Some(count),
        "{topic} high watermarks add up to {total}, expected {count}"
    );
    Ok(())
}

fn check_topic_metadata(bootstrap: &str, topic: &str, partitions: i32, node: i32) -> Result<()> {
    let consumer = harness::base_consumer(bootstrap, "oxbow-e2e-metadata")?;
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .context("Metadata for all topics")?;
    let listed = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .with_context(|| {
            let names: Vec<&str> = metadata.topics().iter().map(|t| t.name()).collect();
            format!("metadata does not list {topic}; it lists {names:?}")
        })?;
    ensure!(
        listed.error().is_none(),
        "metadata for {topic} carries error {:?}",
        listed.error()
    );
    ensure!(
        listed.partitions().len() == usize::try_from(partitions)?,
        "metadata lists {} partitions for {topic}, expected {partitions}",
        listed.partitions().len()
    );
    for partition in listed.partitions() {
        ensure!(
            partition.error().is_none() && partition.leader() == node,
            "{topic}-{} has leader {} and error {:?}, expected leader {node}",
            partition.id(),
            partition.leader(),
            partition.error()
        );
    }
    Ok(())
}

/// librdkafka's test 0054 (`offsets_for_times`): records with distinct timestamps produced in
/// one batch are each found by their own timestamp, not at the batch's first offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_for_times_finds_each_record_of_a_multi_record_batch() -> Result<()> {
    let broker = start_broker()?;
    let outcome = offsets_for_times_inside_a_batch(&broker).await;
    broker.explain(outcome)
}

async fn offsets_for_times_inside_a_batch(broker: &BrokerProcess) -> Result<()> {
    let topic = "times";
    let bootstrap = broker.bootstrap();
    harness::create_topic(&bootstrap, topic, 1).await?;
    // A long linger and queueing every record before awaiting any puts them in one batch.
    let producer: FutureProducer = harness::producer_config(&bootstrap)
        .set("linger.ms", "500")
        .create()
        .context("creating a producer")?;
    let base = 1_700_000_000_000_i64;
    let mut pending = Vec::new();
    for i in 0..5_i64 {
        let value = format!("at-{i}");
        let record = FutureRecord::<(), _>::to(topic)
            .payload(&value)
            .partition(0)
            .timestamp(base + 10 * i);
        pending.push(
            producer
                .send_result(record)
                .map_err(|(err, _)| anyhow!("queueing {value}: {err}"))?,
        );
    }
    let mut offsets = Vec::new();
    for delivery in pending {
        let delivery = timeout(Duration::from_secs(10), delivery)
            .await
            .context("no delivery report")?
            .context("delivery report dropped")?
            .map_err(|(err, _)| anyhow!("delivery failed: {err}"))?;
        offsets.push(delivery.offset);
    }
    ensure!(offsets == [0, 1, 2, 3, 4], "offsets {offsets:?}");

    let consumer = harness::base_consumer(&bootstrap, "times-reader")?;
    for (timestamp, expected) in [
        (base - 1, Offset::Offset(0)),
        (base, Offset::Offset(0)),
        (base + 1, Offset::Offset(1)),
        (base + 25, Offset::Offset(3)),
        (base + 40, Offset::Offset(4)),
        (base + 41, Offset::End),
    ] {
        let mut wanted = TopicPartitionList::new();
        wanted
            .add_partition_offset(topic, 0, Offset::Offset(timestamp))
            .context("building the query")?;
        let found = consumer
            .offsets_for_times(wanted, Duration::from_secs(10))
            .with_context(|| format!("offsets_for_times({timestamp})"))?;
        let offset = found
            .find_partition(topic, 0)
            .context("no answer for the partition")?
            .offset();
        ensure!(
            offset == expected,
            "timestamp base+{}: {offset:?}, expected {expected:?}",
            timestamp - base
        );
    }
    Ok(())
}
