//! The replicated cluster with real broker processes on 127.0.0.1: it forms, spreads leaders,
//! honours min.insync.replicas, brings a restarted broker back into the ISR, moves a partition
//! by reassignment, restores preferred leaders, shuts down without failing writes, keeps
//! committed group offsets when the coordinator dies, copies a log whose start lies
//! inside a batch, replicates batches the leader re-compressed, replicates in incremental
//! fetch sessions whose every replica serves every record after leader changes, and ends
//! transactions all or nothing across brokers when their coordinator dies.
//!
//! Tests run one at a time (a lock below): each starts three or four debug-build brokers, and
//! two clusters side by side on two cores would turn timing into noise. Failure detection is
//! shortened (`broker.session.timeout.ms=3000`) so faults resolve in seconds; `jepsen.rs`
//! measures failover with the defaults.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::describe_quorum_response::ReplicaState;
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::update_features_request::FeatureUpdateKey;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, ApiVersionsRequest, BrokerId, DeleteRecordsRequest,
    DeleteTopicsRequest, DescribeClusterRequest, DescribeGroupsRequest, DescribeLogDirsRequest,
    ElectLeadersRequest, FetchRequest, GroupId, HeartbeatRequest, JoinGroupRequest,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, SyncGroupRequest,
    UnregisterBrokerRequest, UpdateFeaturesRequest,
};
use kafka_protocol::ResponseError;
use oxbow_broker::client::Connection;
use oxbow_e2e::cluster::{
    Cluster, ClusterOptions, Delivery, NodeId, NodeState, PartitionView, RecordingContext,
};
use oxbow_e2e::harness::sample;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, FutureProducer, FutureRecord, Producer, ThreadedProducer};
use rdkafka::Offset;

mod support;

use support::{
    expect_code, expect_ok, find_coordinator, now_ms, produce_request, str_bytes, topic_name,
    BatchBuilder, GROUP_KEY, TRANSACTION_KEY,
};

/// A record read back: partition, offset, value.
type Record = (i32, i64, String);

/// The broker under test: this build's, or `OXBOW_BROKER_BIN` (e.g. a release build).
fn broker_bin() -> String {
    std::env::var("OXBOW_BROKER_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_oxbow-broker").to_string())
}
/// Generous bound for anything the cluster has to settle (elections, ISR changes, catch-up).
const SETTLE: Duration = Duration::from_secs(30);

/// One cluster test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Kafka's defaults except a shorter session, so a killed broker is fenced in about 3 s.
fn options() -> ClusterOptions {
    ClusterOptions::new(broker_bin())
        .set("broker.session.timeout.ms", "3000")
        .set("broker.heartbeat.interval.ms", "500")
}

/// Starts the cluster, runs the scenario, and on failure adds every broker's log tail.
fn with_cluster(
    options: ClusterOptions,
    scenario: impl FnOnce(&mut Cluster) -> Result<()>,
) -> Result<()> {
    let _serial = serial();
    let started = Instant::now();
    let mut cluster = Cluster::start(options)?;
    eprintln!(
        "cluster of {} brokers up in {:.1?}",
        cluster.node_ids().len(),
        started.elapsed()
    );
    let outcome = scenario(&mut cluster);
    eprintln!("scenario finished after {:.1?}", started.elapsed());
    cluster.explain(outcome)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building a runtime")
}

/// An idempotent `acks=all` producer that records every delivery report.
fn recording_producer(
    cluster: &Cluster,
    message_timeout_ms: &str,
) -> Result<ThreadedProducer<RecordingContext>> {
    cluster
        .client_config()
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", message_timeout_ms)
        .create_with_context(RecordingContext::default())
        .context("creating a producer")
}

/// Sends `count` records `<prefix>-<n>` round-robin over `partitions` and waits until every
/// one is reported; fails on the first failed delivery.
fn produce_all(
    cluster: &Cluster,
    topic: &str,
    partitions: i32,
    prefix: &str,
    count: usize,
) -> Result<Vec<Delivery>> {
    send_all(
        &recording_producer(cluster, "60000")?,
        topic,
        partitions,
        prefix,
        count,
    )
}

/// [`produce_all`] with a producer of the test's own.
fn send_all(
    producer: &ThreadedProducer<RecordingContext>,
    topic: &str,
    partitions: i32,
    prefix: &str,
    count: usize,
) -> Result<Vec<Delivery>> {
    for n in 0..count {
        let value = format!("{prefix}-{n}");
        let partition = i32::try_from(n).unwrap_or(0) % partitions;
        let mut record = BaseRecord::<(), _, _>::with_opaque_to(topic, Box::new(Instant::now()))
            .payload(&value)
            .partition(partition);
        let deadline = Instant::now() + SETTLE;
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if Instant::now() < deadline =>
                {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => bail!("sending {value}: {e}"),
            }
        }
    }
    producer
        .flush(Duration::from_secs(90))
        .context("flushing the producer")?;
    let deliveries = producer.context().log.snapshot();
    ensure!(
        deliveries.len() == count,
        "{} of {count} deliveries reported",
        deliveries.len()
    );
    if let Some(failed) = deliveries.iter().find(|d| d.error.is_some()) {
        bail!("delivery of {} failed: {:?}", failed.value, failed.error);
    }
    Ok(deliveries)
}

/// Fails when an acknowledged record is missing from what was read, or was read twice.
fn check_nothing_lost(acked: &[Delivery], read: &[Record]) -> Result<()> {
    let mut seen: HashSet<&str> = HashSet::new();
    for (partition, offset, value) in read {
        ensure!(
            seen.insert(value.as_str()),
            "{value} read twice (again at partition {partition} offset {offset})"
        );
    }
    let lost: Vec<&Delivery> = acked
        .iter()
        .filter(|d| d.error.is_none() && !seen.contains(d.value.as_str()))
        .collect();
    ensure!(
        lost.is_empty(),
        "{} acknowledged records lost, e.g. {:?}",
        lost.len(),
        lost.iter()
            .take(5)
            .map(|d| (&d.value, d.partition, d.offset))
            .collect::<Vec<_>>()
    );
    Ok(())
}

/// Waits until every running broker sees partition `partition` of `topic` satisfy `check`.
fn wait_for_partition(
    cluster: &mut Cluster,
    topic: &str,
    partition: i32,
    what: &str,
    check: impl Fn(&PartitionView) -> bool,
) -> Result<PartitionView> {
    cluster.wait_until(what, SETTLE, |cluster| {
        let mut last = None;
        for node in cluster.up() {
            let view = cluster
                .partitions_seen_by(node, topic)?
                .into_iter()
                .find(|p| p.partition == partition)
                .with_context(|| format!("no partition {partition}"))?;
            ensure!(check(&view), "broker {node} sees {view:?}");
            last = Some(view);
        }
        last.context("no broker is running")
    })
}

#[test]
fn a_three_broker_cluster_forms_and_each_broker_leads_one_partition_of_a_new_topic() -> Result<()> {
    with_cluster(options(), |cluster| {
        let voters: BTreeSet<NodeId> = [1, 2, 3].into();
        // Every broker lists all three at their addresses, and they agree on the controller.
        let controller = cluster.wait_until("the brokers agree on a controller", SETTLE, |c| {
            let mut controllers = BTreeSet::new();
            for node in c.node_ids() {
                let metadata = c.metadata(node, None)?;
                let listed: BTreeMap<i32, String> = metadata
                    .brokers
                    .iter()
                    .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
                    .collect();
                let expected: BTreeMap<i32, String> = c
                    .node_ids()
                    .into_iter()
                    .map(|id| (id, c.address(id).to_string()))
                    .collect();
                ensure!(listed == expected, "broker {node} lists {listed:?}");
                controllers.insert(metadata.controller_id.0);
            }
            ensure!(controllers.len() == 1, "controllers named: {controllers:?}");
            Ok(*controllers.first().context("no controller")?)
        })?;
        ensure!(
            voters.contains(&controller),
            "controller {controller} is not a voter"
        );

        let partitions = cluster.create_topic("spread", 3, 3, &[])?;
        let leaders: BTreeSet<NodeId> = partitions.iter().map(|p| p.leader).collect();
        ensure!(
            leaders == voters,
            "leaders are not spread over the brokers: {partitions:?}"
        );
        for p in &partitions {
            let replicas: BTreeSet<NodeId> = p.replicas.iter().copied().collect();
            ensure!(replicas == voters && p.replicas.len() == 3, "{p:?}");
            ensure!(
                p.leader == p.replicas[0],
                "not led by its preferred replica: {p:?}"
            );
        }
        Ok(())
    })
}

#[test]
fn describe_cluster_lists_every_broker_and_the_active_controller() -> Result<()> {
    with_cluster(options(), |cluster| {
        let controller = cluster.metadata(1, Some(&[]))?.controller_id.0;
        for node in cluster.node_ids() {
            let response = cluster.request(node, &DescribeClusterRequest::default(), 0)?;
            ensure!(response.error_code == 0, "broker {node}: {response:?}");
            let listed: BTreeSet<i32> = response.brokers.iter().map(|b| b.broker_id.0).collect();
            ensure!(
                listed == [1, 2, 3].into(),
                "DescribeCluster on broker {node} lists brokers {listed:?}"
            );
            ensure!(
                response.controller_id.0 == controller,
                "DescribeCluster on broker {node} names controller {}, Metadata names {controller}",
                response.controller_id.0
            );
        }
        Ok(())
    })
}

#[test]
fn acks_all_succeeds_with_one_broker_down_and_fails_with_not_enough_replicas_when_two_are_down(
) -> Result<()> {
    // One voter, so the controller (broker 1) keeps the metadata moving with two brokers down.
    with_cluster(options().voters(1), |cluster| {
        let topic = "min-isr";
        cluster.create_topic_assigned(topic, &[&[1, 2, 3]], &[("min.insync.replicas", "2")])?;
        let producer: FutureProducer = cluster
            .client_config()
            .set("acks", "all")
            .set("message.timeout.ms", "20000")
            .create()?;
        let rt = runtime()?;
        let send = |value: &str| {
            rt.block_on(producer.send(
                FutureRecord::<(), _>::to(topic).payload(value).partition(0),
                Duration::from_secs(5),
            ))
            .map_err(|(e, _)| e)
        };

        cluster.kill(3)?;
        send("with-one-down").context("acks=all with one broker down")?;
        let shrunk = wait_for_partition(cluster, topic, 0, "the ISR drops broker 3", |p| {
            p.isr.iter().copied().collect::<BTreeSet<_>>() == [1, 2].into()
        })?;
        ensure!(shrunk.offline == vec![3], "offline replicas: {shrunk:?}");

        cluster.kill(2)?;
        wait_for_partition(cluster, topic, 0, "the ISR is broker 1 alone", |p| {
            p.isr == vec![1] && p.leader == 1
        })?;
        // No retries: the broker's answer itself is the delivery error.
        let strict: FutureProducer = cluster
            .client_config()
            .set("acks", "all")
            .set("retries", "0")
            .set("enable.idempotence", "false")
            .set("message.timeout.ms", "5000")
            .create()?;
        let refused = rt.block_on(
            strict.send(
                FutureRecord::<(), _>::to(topic)
                    .payload("with-two-down")
                    .partition(0),
                Duration::from_secs(5),
            ),
        );
        match refused {
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::NotEnoughReplicas), _)) => {}
            other => bail!("acks=all with two brokers down answered {other:?}"),
        }

        cluster.start_nodes(&[2, 3])?;
        cluster.wait_for_full_isr(topic, SETTLE)?;
        send("after-recovery").context("acks=all after recovery")?;
        let read = cluster.read_all(topic, 1)?;
        let values: Vec<&str> = read.iter().map(|(_, _, v)| v.as_str()).collect();
        ensure!(
            values == ["with-one-down", "after-recovery"],
            "read back {values:?}"
        );
        Ok(())
    })
}

/// Waits until the replicas of `topic`'s `partitions` on `nodes` hold the same bytes:
/// DescribeLogDirs sizes agree on every broker.
fn wait_for_equal_replicas(
    cluster: &mut Cluster,
    topic: &str,
    partitions: usize,
    nodes: &[NodeId],
) -> Result<()> {
    cluster.wait_until("every replica has the same size", SETTLE, |c| {
        let mut sizes: BTreeMap<i32, BTreeMap<NodeId, i64>> = BTreeMap::new();
        for node in nodes {
            let all = DescribeLogDirsRequest::default().with_topics(None);
            let response = c.request(*node, &all, 1)?;
            for dir in &response.results {
                for t in dir.topics.iter().filter(|t| t.name.0.as_str() == topic) {
                    for p in &t.partitions {
                        sizes
                            .entry(p.partition_index)
                            .or_default()
                            .insert(*node, p.partition_size);
                    }
                }
            }
        }
        ensure!(sizes.len() == partitions, "sizes {sizes:?}");
        for (partition, by_node) in &sizes {
            let distinct: BTreeSet<i64> = by_node.values().copied().collect();
            ensure!(
                by_node.len() == nodes.len() && distinct.len() == 1,
                "partition {partition} sizes by broker {by_node:?}"
            );
        }
        Ok(())
    })
}

#[test]
fn a_killed_broker_restarted_catches_up_rejoins_the_isr_and_leads_with_every_acknowledged_record(
) -> Result<()> {
    // Broker 1 is the only voter and holds no replica, so brokers 2 and 3 can both be killed
    // at the end while the controller moves leadership to the restarted broker 4.
    with_cluster(options().brokers(4).voters(1), |cluster| {
        let topic = "catch-up";
        cluster.create_topic_assigned(
            topic,
            &[&[2, 3, 4], &[3, 4, 2], &[4, 2, 3]],
            &[("min.insync.replicas", "2")],
        )?;
        let mut acked = produce_all(cluster, topic, 3, "before", 3000)?;

        cluster.kill(4)?;
        acked.extend(produce_all(cluster, topic, 3, "while-down", 3000)?);
        for p in cluster.partitions(topic)? {
            ensure!(
                !p.isr.contains(&4),
                "broker 4 still in the ISR after writes: {p:?}"
            );
        }

        let restarted = Instant::now();
        cluster.restart(4)?;
        cluster.wait_for_full_isr(topic, SETTLE)?;
        eprintln!(
            "broker 4 back in every ISR {:.1?} after its restart",
            restarted.elapsed()
        );

        wait_for_equal_replicas(cluster, topic, 3, &[2, 3, 4])?;

        cluster.kill(2)?;
        cluster.kill(3)?;
        for partition in 0..3 {
            wait_for_partition(cluster, topic, partition, "broker 4 leads", |p| {
                p.leader == 4 && p.isr == vec![4]
            })?;
        }
        let read = cluster.read_all(topic, 3)?;
        check_nothing_lost(&acked, &read)?;
        eprintln!(
            "{} acknowledged records all read back from broker 4",
            acked.len()
        );
        Ok(())
    })
}

#[test]
fn followers_store_the_leaders_recompressed_batches_and_serve_them_after_a_failover() -> Result<()>
{
    with_cluster(options(), |cluster| {
        let topic = "recompressed";
        cluster.create_topic_assigned(
            topic,
            &[&[1, 2, 3]],
            &[("compression.type", "gzip"), ("min.insync.replicas", "2")],
        )?;
        let producer = cluster
            .client_config()
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "20")
            .set("compression.codec", "lz4")
            .create_with_context(RecordingContext::default())
            .context("creating an lz4 producer")?;
        let acked = send_all(&producer, topic, 1, "recompressed", 2000)?;
        cluster.wait_for_full_isr(topic, SETTLE)?;
        // Leader 1 turned the producer's lz4 batches into gzip; the followers hold its bytes.
        cluster.wait_until(
            "every replica holds the leader's gzip batches",
            SETTLE,
            |c| {
                let mut segments = BTreeMap::new();
                for node in [1, 2, 3] {
                    let path = c
                        .data_dir(node)
                        .join(format!("{topic}-0"))
                        .join("00000000000000000000.log");
                    let bytes = std::fs::read(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    segments.insert(node, bytes);
                }
                let leader = segments.get(&1).context("no segment on broker 1")?;
                let codecs = batch_codecs(leader)?;
                ensure!(
                    !codecs.is_empty() && codecs.iter().all(|codec| *codec == 1),
                    "broker 1 stores batches with codecs {codecs:?}, not gzip (1)"
                );
                for (node, bytes) in &segments {
                    ensure!(
                        bytes == leader,
                        "broker {node} holds {} bytes that differ from the leader's {}",
                        bytes.len(),
                        leader.len()
                    );
                }
                Ok(())
            },
        )?;
        cluster.kill(1)?;
        wait_for_partition(cluster, topic, 0, "a follower leads", |p| {
            p.leader == 2 || p.leader == 3
        })?;
        // A new leader may still know an older high watermark than its predecessor's last
        // (the followers learn it from their next fetch), and advances it once the dead broker
        // leaves the ISR: every acknowledged record must become visible within SETTLE.
        let acknowledged = i64::try_from(acked.iter().filter(|d| d.error.is_none()).count())?;
        cluster.wait_until(
            "the new leader's high watermark covers every acknowledged record",
            SETTLE,
            |c| {
                let reader: BaseConsumer = c.client_config().create()?;
                let (_, high) = reader.fetch_watermarks(topic, 0, Duration::from_secs(5))?;
                ensure!(
                    high >= acknowledged,
                    "high watermark {high} of {acknowledged} acknowledged"
                );
                Ok(())
            },
        )?;
        let read = cluster.read_all(topic, 1)?;
        check_nothing_lost(&acked, &read)?;
        Ok(())
    })
}

/// The codec bits (attributes bits 0-2) of each batch of a segment file.
fn batch_codecs(segment: &[u8]) -> Result<Vec<i16>> {
    let mut codecs = Vec::new();
    let mut at = 0;
    while at + 23 <= segment.len() {
        let length = i32::from_be_bytes(segment[at + 8..at + 12].try_into()?);
        codecs.push(i16::from_be_bytes(segment[at + 21..at + 23].try_into()?) & 7);
        at += 12 + usize::try_from(length)?;
    }
    Ok(codecs)
}

/// Live produce and consume during a fault or an admin operation.
struct Traffic {
    stop: Arc<AtomicBool>,
    /// Set once the producer has flushed: the consumer drains what is left and returns.
    drain: Arc<AtomicBool>,
    producer: Option<thread::JoinHandle<Result<Vec<Delivery>>>>,
    consumer: Option<thread::JoinHandle<Result<Vec<Record>>>>,
}

/// Starts a paced idempotent producer (`rate` records a second, round-robin over the
/// partitions) and a group consumer on `topic`, both running until [`Traffic::finish`].
fn start_traffic(cluster: &Cluster, topic: &str, partitions: i32, rate: u32) -> Result<Traffic> {
    let stop = Arc::new(AtomicBool::new(false));
    let drain = Arc::new(AtomicBool::new(false));
    let producer = recording_producer(cluster, "60000")?;
    let consumer: BaseConsumer = cluster
        .client_config()
        .set("group.id", format!("traffic-{topic}"))
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "500")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .create()?;
    consumer.subscribe(&[topic])?;
    let topic_owned = topic.to_string();
    let stopping = Arc::clone(&stop);
    let producer = thread::spawn(move || {
        let interval = Duration::from_secs(1) / rate.max(1);
        let mut n: u64 = 0;
        let mut next = Instant::now();
        while !stopping.load(Ordering::Relaxed) {
            let value = format!("live-{n}");
            let partition = i32::try_from(n % u64::try_from(partitions)?)?;
            let record =
                BaseRecord::<(), _, _>::with_opaque_to(&topic_owned, Box::new(Instant::now()))
                    .payload(&value)
                    .partition(partition);
            if producer.send(record).is_ok() {
                n += 1;
            }
            next += interval;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
        }
        producer.flush(Duration::from_secs(90))?;
        Ok(producer.context().log.snapshot())
    });
    let stopping = Arc::clone(&drain);
    let consumer = thread::spawn(move || {
        let mut read = Vec::new();
        // Once the producer has flushed, the consumer reads on until it has been idle for a
        // while, at most for a minute.
        let mut idle_since = Instant::now();
        let mut stopped_at: Option<Instant> = None;
        loop {
            if stopped_at.is_none() && stopping.load(Ordering::Relaxed) {
                stopped_at = Some(Instant::now());
                idle_since = Instant::now();
            }
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
                idle_since = Instant::now();
                read.push((
                    message.partition(),
                    message.offset(),
                    String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned(),
                ));
            }
            if let Some(at) = stopped_at {
                if idle_since.elapsed() > Duration::from_secs(3)
                    || at.elapsed() > Duration::from_secs(60)
                {
                    return Ok(read);
                }
            }
        }
    });
    Ok(Traffic {
        stop,
        drain,
        producer: Some(producer),
        consumer: Some(consumer),
    })
}

impl Traffic {
    /// Stops producing, waits for every delivery report and for the consumer to go idle.
    fn finish(mut self) -> Result<(Vec<Delivery>, Vec<Record>)> {
        self.stop.store(true, Ordering::Relaxed);
        let produced = self.producer.take().map(thread::JoinHandle::join);
        self.drain.store(true, Ordering::Relaxed);
        let read = self.consumer.take().map(thread::JoinHandle::join);
        let deliveries = produced
            .context("producer already joined")?
            .map_err(|_| anyhow::anyhow!("producer thread panicked"))??;
        let read = read
            .context("consumer already joined")?
            .map_err(|_| anyhow::anyhow!("consumer thread panicked"))??;
        Ok((deliveries, read))
    }
}

impl Drop for Traffic {
    /// A scenario that fails early still stops its client threads (they finish on their own).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.drain.store(true, Ordering::Relaxed);
    }
}

fn list_reassignments(
    rt: &tokio::runtime::Runtime,
    address: &str,
    topic: &str,
) -> Result<ListPartitionReassignmentsResponse> {
    rt.block_on(async {
        let mut connection = Connection::connect(address).await?;
        let request = ListPartitionReassignmentsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(Some(vec![ListPartitionReassignmentsTopics::default()
                .with_name(topic_name(topic))
                .with_partition_indexes(vec![0])]));
        connection.send(&request, 0).await
    })
    .context("ListPartitionReassignments")
}

#[test]
fn a_reassignment_moves_a_partition_to_another_broker_while_clients_keep_going() -> Result<()> {
    // Broker 4 fetches in small pieces, so catching up takes long enough to be seen.
    let options = options()
        .brokers(4)
        .voters(3)
        .set_on(4, "replica.fetch.max.bytes", "65536");
    with_cluster(options, |cluster| {
        let topic = "moving";
        cluster.create_topic_assigned(topic, &[&[1, 2, 3]], &[("min.insync.replicas", "2")])?;
        // A few megabytes for the new replica to copy.
        let padding = "x".repeat(1000);
        let filler = produce_all(cluster, topic, 1, &format!("fill-{padding}"), 4000)?;
        let traffic = start_traffic(cluster, topic, 1, 200)?;
        thread::sleep(Duration::from_secs(1));

        let rt = runtime()?;
        let address = cluster.address(2).to_string();
        let response = rt.block_on(async {
            let mut connection = Connection::connect(&address).await?;
            let request = AlterPartitionReassignmentsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![ReassignableTopic::default()
                    .with_name(topic_name(topic))
                    .with_partitions(vec![ReassignablePartition::default()
                        .with_partition_index(0)
                        .with_replicas(Some(vec![
                            BrokerId(4),
                            BrokerId(2),
                            BrokerId(3),
                        ]))])]);
            connection.send(&request, 0).await
        })?;
        ensure!(response.error_code == 0, "{response:?}");
        for t in &response.responses {
            for p in &t.partitions {
                ensure!(p.error_code == 0, "reassignment refused: {p:?}");
            }
        }
        let started = Instant::now();

        let ongoing = list_reassignments(&rt, &address, topic)?;
        let in_progress = ongoing
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.partition_index == 0)
            .with_context(|| format!("no reassignment listed right after it began: {ongoing:?}"))?;
        ensure!(
            in_progress.adding_replicas == vec![BrokerId(4)]
                && in_progress.removing_replicas == vec![BrokerId(1)],
            "reassignment in progress listed as {in_progress:?}"
        );

        cluster.wait_until("the reassignment completes", Duration::from_secs(60), |c| {
            for node in c.up() {
                let listed = list_reassignments(&rt, &c.address(node).to_string(), topic)?;
                ensure!(listed.topics.is_empty(), "broker {node} lists {listed:?}");
            }
            Ok(())
        })?;
        eprintln!("reassignment completed in {:.1?}", started.elapsed());
        let moved = wait_for_partition(cluster, topic, 0, "replicas are 4, 2, 3", |p| {
            p.replicas == vec![4, 2, 3] && p.fully_in_sync()
        })?;
        ensure!(
            moved.leader != 1,
            "the removed broker still leads: {moved:?}"
        );
        let old_dir = cluster.data_dir(1).join(format!("{topic}-0"));
        cluster.wait_until("broker 1 deletes its replica", SETTLE, |_| {
            ensure!(!old_dir.exists(), "{} still exists", old_dir.display());
            Ok(())
        })?;

        thread::sleep(Duration::from_secs(2));
        let (live, consumed) = traffic.finish()?;
        let failed: Vec<&Delivery> = live.iter().filter(|d| d.error.is_some()).collect();
        ensure!(
            failed.is_empty(),
            "{} failed deliveries, e.g. {:?}",
            failed.len(),
            failed.first()
        );
        let consumed: HashSet<&str> = consumed.iter().map(|(_, _, v)| v.as_str()).collect();
        let missed: Vec<&str> = live
            .iter()
            .map(|d| d.value.as_str())
            .filter(|v| !consumed.contains(v))
            .collect();
        ensure!(
            missed.is_empty(),
            "the live consumer missed {} acknowledged records, e.g. {:?}",
            missed.len(),
            missed.first()
        );
        let mut acked = filler;
        acked.extend(live.iter().cloned());
        check_nothing_lost(&acked, &cluster.read_all(topic, 1)?)?;
        eprintln!("{} records produced during the move, none lost", live.len());
        Ok(())
    })
}

#[test]
fn preferred_leader_election_gives_leadership_back_to_a_restarted_broker() -> Result<()> {
    with_cluster(options(), |cluster| {
        let topic = "preferred";
        let before = cluster.create_topic(topic, 3, 3, &[("min.insync.replicas", "2")])?;
        let victim = before[0].leader;
        cluster.kill(victim)?;
        cluster.wait_for_leaders(topic, SETTLE)?;
        cluster.restart(victim)?;
        let rejoined = cluster.wait_for_full_isr(topic, SETTLE)?;
        ensure!(
            rejoined.iter().all(|p| p.leader != victim),
            "the restarted broker leads again without an election: {rejoined:?}"
        );

        let rt = runtime()?;
        let address = cluster.address(victim).to_string();
        let response = rt.block_on(async {
            let mut connection = Connection::connect(&address).await?;
            let request = ElectLeadersRequest::default()
                .with_election_type(0)
                .with_timeout_ms(10_000)
                .with_topic_partitions(Some(vec![TopicPartitions::default()
                    .with_topic(topic_name(topic))
                    .with_partitions(vec![0, 1, 2])]));
            connection.send(&request, 1).await
        })?;
        ensure!(response.error_code == 0, "{response:?}");
        for result in response
            .replica_election_results
            .iter()
            .flat_map(|r| r.partition_result.iter())
        {
            let ok = result.error_code == 0
                || result.error_code == ResponseError::ElectionNotNeeded.code();
            ensure!(ok, "election refused: {result:?}");
        }
        for partition in 0..3 {
            wait_for_partition(
                cluster,
                topic,
                partition,
                "the preferred replica leads",
                |p| p.leader == p.replicas[0],
            )?;
        }
        let after = cluster.partitions(topic)?;
        ensure!(
            after.iter().map(|p| p.leader).collect::<Vec<_>>()
                == before.iter().map(|p| p.leader).collect::<Vec<_>>(),
            "leaders before {before:?}, after {after:?}"
        );
        produce_all(cluster, topic, 3, "after-election", 30)?;
        Ok(())
    })
}

/// Kills `victim` and waits until a running broker's Metadata no longer lists it, names
/// another controller, and shows every partition of `topic` it led (of `partitions`) with
/// another leader. Those partitions and how long it took.
fn kill_until_replaced(
    cluster: &mut Cluster,
    victim: NodeId,
    topic: &str,
    partitions: &[PartitionView],
) -> Result<(Vec<i32>, Duration)> {
    let led: Vec<i32> = partitions
        .iter()
        .filter(|p| p.leader == victim)
        .map(|p| p.partition)
        .collect();
    let killed = Instant::now();
    cluster.kill(victim)?;
    cluster.wait_until("the killed broker is fenced and replaced", SETTLE, |c| {
        let survivor = *c.up().first().context("no broker is running")?;
        let metadata = c.metadata(survivor, Some(&[]))?;
        ensure!(
            metadata.controller_id.0 >= 0 && metadata.controller_id.0 != victim,
            "controller {}",
            metadata.controller_id.0
        );
        ensure!(
            metadata.brokers.iter().all(|b| b.node_id.0 != victim),
            "broker {victim} is still listed"
        );
        for view in c.partitions_seen_by(survivor, topic)? {
            ensure!(
                !led.contains(&view.partition) || (view.leader >= 0 && view.leader != victim),
                "{view:?}"
            );
        }
        Ok(())
    })?;
    Ok((led, killed.elapsed()))
}

/// With the default timings, a killed broker is fenced and its partitions led elsewhere within
/// moments (its controller listener refuses connections); the killed controller too, once
/// the others have elected a new one. Waiting for a heartbeat session, or the grace for a
/// broken heartbeat connection, would take several seconds.
#[test]
fn a_killed_broker_or_controller_is_replaced_within_seconds_with_the_default_timings() -> Result<()>
{
    with_cluster(ClusterOptions::new(broker_bin()), |cluster| {
        let topic = "quick-failover";
        cluster.create_topic(topic, 3, 3, &[("min.insync.replicas", "2")])?;
        for (kills_controller, bound) in [
            (false, Duration::from_secs(2)),
            (true, Duration::from_secs(4)),
        ] {
            let partitions = cluster.wait_for_full_isr(topic, SETTLE)?;
            let asked = *cluster.up().first().context("no broker is running")?;
            let controller = cluster.metadata(asked, Some(&[]))?.controller_id.0;
            let victim = if kills_controller {
                controller
            } else {
                partitions
                    .iter()
                    .map(|p| p.leader)
                    .find(|leader| *leader != controller)
                    .context("only the controller leads")?
            };
            let (led, took) = kill_until_replaced(cluster, victim, topic, &partitions)?;
            eprintln!(
                "broker {victim} (controller: {kills_controller}, led {led:?}) replaced after {took:.2?}"
            );
            ensure!(
                took < bound,
                "replacing broker {victim} (controller: {kills_controller}) took {took:.2?}, more than {bound:?}"
            );
            produce_all(cluster, topic, 3, &format!("after-{victim}"), 30)?;
            cluster.restart(victim)?;
        }
        Ok(())
    })
}

#[test]
fn brokers_without_node_id_take_the_ordinal_of_their_pod_name() -> Result<()> {
    with_cluster(options().pod_names("oxbow"), |cluster| {
        // oxbow-1, oxbow-2 and oxbow-3 registered as brokers 1, 2 and 3 at their own addresses.
        let metadata = cluster.metadata(1, Some(&[]))?;
        let mut brokers: Vec<(i32, String)> = metadata
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port)))
            .collect();
        brokers.sort();
        let expected: Vec<(i32, String)> = cluster
            .node_ids()
            .into_iter()
            .map(|id| (id, cluster.address(id).to_string()))
            .collect();
        ensure!(
            brokers == expected,
            "brokers {brokers:?}, expected {expected:?}"
        );
        cluster.create_topic("by-ordinal", 3, 3, &[])?;
        produce_all(cluster, "by-ordinal", 3, "v", 30)?;

        // A pod name without an ordinal, and no node.id: the broker refuses to start, and
        // says why.
        let config = cluster
            .config_path(1)
            .with_file_name("no-ordinal.properties");
        std::fs::write(
            &config,
            "process.roles=broker,controller\n\
             controller.quorum.voters=1@127.0.0.1:1\n\
             listeners=PLAINTEXT://127.0.0.1:0,CONTROLLER://127.0.0.1:0\n",
        )?;
        let output = std::process::Command::new(broker_bin())
            .arg("--config")
            .arg(&config)
            .env("POD_NAME", "oxbow")
            .env_remove("HOSTNAME")
            .env_remove("OXBOW_NODE_ID")
            .stdin(std::process::Stdio::null())
            .output()?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        ensure!(
            !output.status.success()
                && stderr.contains("`node.id` is not set")
                && stderr.contains("`oxbow`"),
            "exit {:?}, stderr: {stderr}",
            output.status
        );
        Ok(())
    })
}

#[test]
fn a_new_replica_whose_log_starts_inside_a_batch_of_the_leader_catches_up() -> Result<()> {
    with_cluster(options(), |cluster| {
        let topic = "midbatch";
        let created = cluster.create_topic_assigned(topic, &[&[1, 2]], &[])?;
        let leader = created[0].leader;
        // One batch of ten records at offsets 0..=9.
        let values: Vec<String> = (0..10).map(|n| format!("mid-{n}")).collect();
        let produce = produce_request(topic, 0, BatchBuilder::default().values(&values)?, -1)
            .with_timeout_ms(10_000);
        let produced = cluster.request(leader, &produce, 9)?;
        let answer = produced
            .responses
            .first()
            .and_then(|t| t.partition_responses.first())
            .context("Produce answered no partition")?;
        ensure!(
            answer.error_code == 0 && answer.base_offset == 0,
            "{answer:?}"
        );
        // The log start moves into the middle of that batch.
        let delete = DeleteRecordsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![DeleteRecordsTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(vec![DeleteRecordsPartition::default()
                    .with_partition_index(0)
                    .with_offset(5)])]);
        let deleted = cluster.request(leader, &delete, 2)?;
        let result = deleted
            .topics
            .first()
            .and_then(|t| t.partitions.first())
            .context("DeleteRecords answered no partition")?;
        ensure!(
            result.error_code == 0 && result.low_watermark == 5,
            "{result:?}"
        );

        // Broker 3 joins with an empty log: it starts at the leader's log start, 5, and
        // the leader answers its fetch with the batch that begins at 0.
        let reassign = AlterPartitionReassignmentsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![ReassignableTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(vec![ReassignablePartition::default()
                    .with_partition_index(0)
                    .with_replicas(Some(vec![
                        BrokerId(3),
                        BrokerId(1),
                        BrokerId(2),
                    ]))])]);
        let response = cluster.request(leader, &reassign, 0)?;
        ensure!(response.error_code == 0, "{response:?}");
        wait_for_partition(cluster, topic, 0, "broker 3 joins the ISR", |p| {
            p.replicas == vec![3, 1, 2] && p.isr.contains(&3)
        })?;

        // Led by broker 3, the partition starts at 5 and holds the rest of the batch.
        let elect = ElectLeadersRequest::default()
            .with_election_type(0)
            .with_timeout_ms(10_000)
            .with_topic_partitions(Some(vec![TopicPartitions::default()
                .with_topic(topic_name(topic))
                .with_partitions(vec![0])]));
        let elected = cluster.request(leader, &elect, 1)?;
        ensure!(elected.error_code == 0, "{elected:?}");
        wait_for_partition(cluster, topic, 0, "broker 3 leads", |p| p.leader == 3)?;
        let consumer: BaseConsumer = cluster
            .client_config()
            .set("group.id", "midbatch-reader")
            .set("enable.auto.commit", "false")
            .create()?;
        let (low, high) = consumer.fetch_watermarks(topic, 0, Duration::from_secs(10))?;
        ensure!(
            (low, high) == (5, 10),
            "broker 3's log spans [{low}, {high})"
        );
        let read = cluster.read_all(topic, 1)?;
        let expected: Vec<Record> = (5..10).map(|n| (0, n, format!("mid-{n}"))).collect();
        ensure!(read == expected, "read {read:?}");
        Ok(())
    })
}

/// Sends `count` copies of `value` to partition 0 of `topic` at once and waits for every
/// acknowledgement.
fn send_to_partition_zero(
    rt: &tokio::runtime::Runtime,
    producer: &FutureProducer,
    topic: &str,
    value: &[u8],
    count: usize,
) -> Result<()> {
    rt.block_on(async {
        let mut sends = Vec::with_capacity(count);
        for _ in 0..count {
            sends.push(producer.send(
                FutureRecord::<(), _>::to(topic).payload(value).partition(0),
                Duration::from_secs(10),
            ));
        }
        for send in sends {
            send.await.map_err(|(e, _)| e)?;
        }
        Ok::<(), KafkaError>(())
    })?;
    Ok(())
}

/// The longest time between consecutive acknowledgements of a partition from `from` on.
fn longest_ack_gap(deliveries: &[Delivery], partition: i32, from: Instant) -> Duration {
    let mut acks: Vec<Instant> = deliveries
        .iter()
        .filter(|d| d.partition == partition && d.error.is_none())
        .map(|d| d.reported)
        .collect();
    acks.sort();
    let mut previous = from;
    let mut longest = Duration::ZERO;
    for at in acks.into_iter().filter(|at| *at >= from) {
        longest = longest.max(at - previous);
        previous = at;
    }
    longest
}

#[test]
fn a_controlled_shutdown_of_a_leader_fails_no_idempotent_acks_all_write() -> Result<()> {
    with_cluster(options(), |cluster| {
        let topic = "graceful";
        let partitions = cluster.create_topic(topic, 3, 3, &[("min.insync.replicas", "2")])?;
        let traffic = start_traffic(cluster, topic, 3, 300)?;
        thread::sleep(Duration::from_secs(2));

        let victim = partitions[0].leader;
        let stopped_at = Instant::now();
        let status = cluster.stop(victim)?;
        eprintln!("broker {victim} stopped in {:.1?}", stopped_at.elapsed());
        ensure!(status.success(), "broker {victim} exited with {status}");
        ensure!(
            cluster.state(victim) == NodeState::Down,
            "broker {victim} still running"
        );
        ensure!(
            cluster
                .log_lines(victim, "controlled shutdown timed out")
                .is_empty()
                && !cluster
                    .log_lines(victim, "leadership moved away")
                    .is_empty(),
            "leadership did not move away cleanly:\n{}",
            cluster.log_tail(victim, 40)
        );
        thread::sleep(Duration::from_secs(3));
        let (deliveries, _) = traffic.finish()?;

        let failed: Vec<&Delivery> = deliveries.iter().filter(|d| d.error.is_some()).collect();
        ensure!(
            failed.is_empty(),
            "{} of {} writes failed around the controlled shutdown, e.g. {:?}",
            failed.len(),
            deliveries.len(),
            failed.first()
        );
        for partition in 0..3 {
            eprintln!(
                "partition {partition}: longest gap between acknowledgements after SIGTERM {:.2?}",
                longest_ack_gap(&deliveries, partition, stopped_at)
            );
        }
        check_nothing_lost(&deliveries, &cluster.read_all(topic, 3)?)?;
        eprintln!("{} writes, none failed, none lost", deliveries.len());
        Ok(())
    })
}

#[test]
fn committed_offsets_survive_the_death_of_the_group_coordinator() -> Result<()> {
    with_cluster(options(), |cluster| {
        let topic = "committed";
        let group = "survivor";
        cluster.create_topic(topic, 3, 3, &[("min.insync.replicas", "2")])?;
        produce_all(cluster, topic, 3, "record", 300)?;

        let base = cluster.client_config();
        let group_config = || {
            let mut config = base.clone();
            config
                .set("group.id", group)
                .set("enable.auto.commit", "false")
                .set("auto.offset.reset", "earliest")
                .set("session.timeout.ms", "6000");
            config
        };
        let first: BaseConsumer = group_config().create()?;
        first.subscribe(&[topic])?;
        let mut consumed = 0;
        let deadline = Instant::now() + SETTLE;
        while consumed < 150 {
            ensure!(
                Instant::now() < deadline,
                "consumed only {consumed} records"
            );
            if let Some(message) = first.poll(Duration::from_millis(200)) {
                message?;
                consumed += 1;
            }
        }
        first.commit_consumer_state(CommitMode::Sync)?;
        let committed: BTreeMap<i32, i64> = first
            .committed(Duration::from_secs(10))?
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect();
        ensure!(
            committed.values().sum::<i64>() == 150,
            "committed {committed:?} after consuming 150"
        );
        drop(first);

        let coordinator = find_coordinator(cluster, group, GROUP_KEY)?;
        cluster.kill(coordinator)?;
        let successor =
            cluster.wait_until("another broker coordinates the group", SETTLE, |c| {
                let node = find_coordinator(c, group, GROUP_KEY)?;
                ensure!(node != coordinator, "still {node}");
                ensure!(c.up().contains(&node), "{node} is not running");
                Ok(node)
            })?;
        eprintln!("coordinator moved from broker {coordinator} to {successor}");

        let second: BaseConsumer = group_config().create()?;
        second.subscribe(&[topic])?;
        let mut first_seen: BTreeMap<i32, i64> = BTreeMap::new();
        let expected: BTreeSet<i32> = committed
            .iter()
            .filter(|(_, offset)| **offset < 100)
            .map(|(p, _)| *p)
            .collect();
        let deadline = Instant::now() + SETTLE;
        while !expected.iter().all(|p| first_seen.contains_key(p)) {
            ensure!(
                Instant::now() < deadline,
                "the new consumer read only {first_seen:?}"
            );
            // Errors about the dead broker's connections are expected here.
            if let Some(Ok(message)) = second.poll(Duration::from_millis(200)) {
                first_seen
                    .entry(message.partition())
                    .or_insert(message.offset());
            }
        }
        for (partition, offset) in &first_seen {
            let resume = committed.get(partition).copied().unwrap_or(0);
            ensure!(
                *offset == resume,
                "partition {partition} resumed at {offset}, committed {resume}"
            );
        }
        let fetched: BTreeMap<i32, i64> = second
            .committed(Duration::from_secs(10))?
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect();
        ensure!(
            fetched == committed,
            "the new coordinator returns {fetched:?}, committed {committed:?}"
        );
        Ok(())
    })
}

/// A group's membership survives the death of its coordinator, as in Kafka: the broker that
/// takes the group over loads the membership the last rebalance stored, so the members go on
/// heartbeating (and committing) in their generation instead of being told they are unknown
/// and rejoining.
#[test]
fn a_group_keeps_its_members_and_generation_when_its_coordinator_dies() -> Result<()> {
    with_cluster(options(), |cluster| {
        let group = "kept";
        let coordinator = cluster.wait_until("the group has a coordinator", SETTLE, |c| {
            find_coordinator(c, group, GROUP_KEY)
        })?;
        let join = |member: &str| {
            JoinGroupRequest::default()
                .with_group_id(GroupId(str_bytes(group)))
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(10_000)
                .with_member_id(str_bytes(member))
                .with_protocol_type(str_bytes("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(str_bytes("range"))
                    .with_metadata(bytes::Bytes::from_static(b"subscription"))])
        };
        let first = cluster.request(coordinator, &join(""), 5)?;
        expect_code(
            "the first JoinGroup",
            first.error_code,
            ResponseError::MemberIdRequired,
        )?;
        let member = first.member_id.to_string();
        let joined = cluster.request(coordinator, &join(&member), 5)?;
        expect_ok("JoinGroup with the member id", joined.error_code)?;
        ensure!(joined.leader.as_str() == member, "{member} does not lead");
        let assignment = bytes::Bytes::from_static(b"partitions of kept");
        let sync = SyncGroupRequest::default()
            .with_group_id(GroupId(str_bytes(group)))
            .with_generation_id(joined.generation_id)
            .with_member_id(str_bytes(&member))
            .with_assignments(vec![SyncGroupRequestAssignment::default()
                .with_member_id(str_bytes(&member))
                .with_assignment(assignment.clone())]);
        let synced = cluster.request(coordinator, &sync, 3)?;
        expect_ok("SyncGroup of the leader", synced.error_code)?;

        cluster.kill(coordinator)?;
        let heartbeat = HeartbeatRequest::default()
            .with_group_id(GroupId(str_bytes(group)))
            .with_generation_id(joined.generation_id)
            .with_member_id(str_bytes(&member));
        let successor = cluster.wait_until(
            "another broker coordinates the group and knows the member",
            SETTLE,
            |c| {
                let node = find_coordinator(c, group, GROUP_KEY)?;
                ensure!(node != coordinator, "still {node}");
                let answer = c.request(node, &heartbeat, 3)?;
                // UNKNOWN_MEMBER_ID is what a coordinator that lost the membership says: fail
                // at once rather than wait for it to change.
                if answer.error_code == ResponseError::UnknownMemberId.code() {
                    bail!(
                        "broker {node} took the group over without its member: UNKNOWN_MEMBER_ID"
                    );
                }
                expect_ok(&format!("Heartbeat to broker {node}"), answer.error_code)?;
                Ok(node)
            },
        )?;
        let described = cluster.request(
            successor,
            &DescribeGroupsRequest::default().with_groups(vec![GroupId(str_bytes(group))]),
            5,
        )?;
        let described = described
            .groups
            .first()
            .context("DescribeGroups answered no group")?;
        ensure!(
            described.group_state.as_str() == "Stable"
                && described.members.len() == 1
                && described.members[0].member_id.as_str() == member
                && described.members[0].member_assignment == assignment,
            "broker {successor} describes {described:?}"
        );
        let again = cluster.request(successor, &sync, 3)?;
        expect_ok("SyncGroup after the move", again.error_code)?;
        ensure!(
            again.assignment == assignment,
            "the assignment after the move is {:?}",
            again.assignment
        );
        eprintln!("the group moved from broker {coordinator} to {successor} with its member");
        Ok(())
    })
}

/// With every in-sync replica dead, a topic that allows unclean elections gets an
/// out-of-sync leader as soon as one is alive; a topic that does not stays offline.
#[test]
fn an_out_of_sync_replica_leads_only_where_unclean_election_is_enabled() -> Result<()> {
    // One voter (broker 1, holding no replica), so the metadata keeps moving.
    with_cluster(options().voters(1), |cluster| {
        cluster.create_topic_assigned(
            "unclean",
            &[&[2, 3]],
            &[("unclean.leader.election.enable", "true")],
        )?;
        cluster.create_topic_assigned("clean", &[&[2, 3]], &[])?;
        for topic in ["unclean", "clean"] {
            wait_for_partition(cluster, topic, 0, "both replicas in sync", |p| {
                p.isr.len() == 2
            })?;
        }
        // Broker 3 dies first and leaves the ISRs; then the only in-sync replica, broker 2.
        cluster.kill(3)?;
        for topic in ["unclean", "clean"] {
            wait_for_partition(cluster, topic, 0, "broker 3 out of the ISR", |p| {
                p.isr == vec![2]
            })?;
        }
        cluster.kill(2)?;
        for topic in ["unclean", "clean"] {
            wait_for_partition(cluster, topic, 0, "no leader", |p| p.leader == -1)?;
        }
        cluster.restart(3)?;
        let elected =
            wait_for_partition(cluster, "unclean", 0, "broker 3 leads out of sync", |p| {
                p.leader == 3
            })?;
        ensure!(
            elected.isr == vec![3],
            "the unclean leader is the whole ISR: {elected:?}"
        );
        // Give the controller several passes: the clean topic must not follow.
        std::thread::sleep(Duration::from_secs(2));
        let clean = cluster.partitions("clean")?;
        ensure!(
            clean.first().is_some_and(|p| p.leader == -1),
            "a topic without unclean election got a leader: {clean:?}"
        );
        Ok(())
    })
}

/// `follower.replication.throttled.rate` paces a follower: 1 MB at 200 KB/s takes seconds to
/// copy, yet the follower catches up in the end. Meanwhile it falls out of the ISR and its
/// `/ready` says so; once caught up it is ready again.
#[test]
fn a_throttled_follower_copies_at_its_rate_and_catches_up() -> Result<()> {
    let options = options()
        .brokers(2)
        .voters(1)
        .set("replica.lag.time.max.ms", "1000")
        .set_on(2, "follower.replication.throttled.rate", "200000");
    with_cluster(options, |cluster| {
        let topic = "throttled";
        cluster.create_topic_assigned(topic, &[&[1, 2]], &[])?;
        wait_for_partition(cluster, topic, 0, "both replicas in sync", |p| {
            p.isr.len() == 2
        })?;
        let producer: FutureProducer = cluster
            .client_config()
            .set("acks", "1")
            .set("linger.ms", "5")
            .create()?;
        let rt = runtime()?;
        let value = vec![b'x'; 1000];
        let started = Instant::now();
        send_to_partition_zero(&rt, &producer, topic, &value, 1000)?;
        let (status, body) = cluster.readiness(1)?;
        ensure!(status == 200, "the leader is not ready: {status} {body}");
        let lagging = cluster.wait_until(
            "the throttled follower is not ready",
            Duration::from_secs(30),
            |c| {
                let (status, body) = c.readiness(2)?;
                ensure!(status == 503, "still ready: {body}");
                Ok(body)
            },
        )?;
        ensure!(
            lagging.contains("catching up"),
            "unexpected reason: {lagging}"
        );
        let size_on = |cluster: &Cluster, node| -> Result<i64> {
            let request =
                kafka_protocol::messages::DescribeLogDirsRequest::default().with_topics(None);
            let response = cluster.request(node, &request, 4)?;
            Ok(response
                .results
                .iter()
                .flat_map(|d| d.topics.iter())
                .filter(|t| t.name.0.as_str() == topic)
                .flat_map(|t| t.partitions.iter())
                .map(|p| p.partition_size)
                .sum())
        };
        let leader_size = size_on(cluster, 1)?;
        ensure!(
            leader_size >= 1_000_000,
            "the leader holds only {leader_size} bytes"
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while size_on(cluster, 2)? < leader_size {
            ensure!(
                Instant::now() < deadline,
                "the throttled follower never caught up"
            );
            thread::sleep(Duration::from_millis(100));
        }
        let took = started.elapsed();
        ensure!(
            took >= Duration::from_secs(3),
            "{leader_size} bytes reached the follower in {took:?}: faster than 200 KB/s allows"
        );
        println!("{leader_size} bytes copied to the throttled follower in {took:?}");
        cluster.wait_until(
            "the follower is ready again",
            Duration::from_secs(30),
            |c| {
                let (status, body) = c.readiness(2)?;
                ensure!(status == 200, "not ready yet: {body}");
                Ok(())
            },
        )?;
        Ok(())
    })
}

/// Bytes of `topic` a broker holds (DescribeLogDirs).
fn bytes_on(cluster: &Cluster, node: NodeId, topic: &str) -> Result<i64> {
    let request = DescribeLogDirsRequest::default().with_topics(None);
    let response = cluster.request(node, &request, 4)?;
    Ok(response
        .results
        .iter()
        .flat_map(|d| d.topics.iter())
        .filter(|t| t.name.0.as_str() == topic)
        .flat_map(|t| t.partitions.iter())
        .map(|p| p.partition_size)
        .sum())
}

/// IncrementalAlterConfigs of one broker's settings, sent to `to`: the resource's error code
/// and message.
fn alter_broker_config(
    cluster: &Cluster,
    to: NodeId,
    broker: &str,
    key: &str,
    value: Option<&str>,
) -> Result<(i16, Option<String>)> {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    let config = AlterableConfig::default()
        .with_name(str_bytes(key))
        .with_config_operation(if value.is_some() { 0 } else { 1 })
        .with_value(value.map(str_bytes));
    let request = kafka_protocol::messages::IncrementalAlterConfigsRequest::default()
        .with_resources(vec![AlterConfigsResource::default()
            .with_resource_type(4)
            .with_resource_name(str_bytes(broker))
            .with_configs(vec![config])]);
    let response = cluster.request(to, &request, 1)?;
    let result = response
        .responses
        .first()
        .context("no result for the broker resource")?;
    Ok((
        result.error_code,
        result.error_message.as_ref().map(|m| m.to_string()),
    ))
}

/// One broker setting as that broker describes it: value, source code, read-only.
fn describe_broker_config(
    cluster: &Cluster,
    node: NodeId,
    key: &str,
) -> Result<(Option<String>, i8, bool)> {
    describe_broker_resource(cluster, node, &node.to_string(), key)?
        .context("setting not described")
}

/// DescribeConfigs of one setting of the BROKER resource `name` (an id, or "" for the
/// cluster-wide defaults), sent to `to`: value, source and read-only flag, `None` when the
/// setting is not listed.
fn describe_broker_resource(
    cluster: &Cluster,
    to: NodeId,
    name: &str,
    key: &str,
) -> Result<Option<(Option<String>, i8, bool)>> {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    let request = kafka_protocol::messages::DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(4)
            .with_resource_name(str_bytes(name))
            .with_configuration_keys(Some(vec![str_bytes(key)])),
    ]);
    let response = cluster.request(to, &request, 1)?;
    let result = response.results.first().context("no result")?;
    ensure!(result.error_code == 0, "DescribeConfigs failed: {result:?}");
    Ok(result.configs.first().map(|config| {
        (
            config.value.as_ref().map(|v| v.to_string()),
            config.config_source,
            config.read_only,
        )
    }))
}

/// `follower.replication.throttled.rate` set at run time on a follower (IncrementalAlterConfigs
/// on its BROKER resource) slows its copying to about that rate without a restart, and
/// DescribeConfigs reports it as a dynamic broker setting, also after the broker restarts;
/// deleting it lets the follower catch up at once. Read-only broker settings are refused naming the key.
#[test]
fn a_follower_throttle_set_at_run_time_slows_copying_and_deleting_it_lets_the_follower_catch_up(
) -> Result<()> {
    const RATE: &str = "follower.replication.throttled.rate";
    const RATE_BYTES: i64 = 100_000;
    let options = options()
        .brokers(2)
        .voters(1)
        .set("replica.fetch.max.bytes", "65536");
    with_cluster(options, |cluster| {
        let topic = "throttled-at-run-time";
        cluster.create_topic_assigned(topic, &[&[1, 2]], &[])?;
        wait_for_partition(cluster, topic, 0, "both replicas in sync", |p| {
            p.isr.len() == 2
        })?;

        let (code, message) = alter_broker_config(cluster, 2, "2", "num.partitions", Some("5"))?;
        ensure!(
            code == ResponseError::InvalidRequest.code()
                && message
                    .as_deref()
                    .is_some_and(|m| m.contains("num.partitions")),
            "a read-only setting was not refused clearly: {code} {message:?}"
        );
        let (code, message) = alter_broker_config(cluster, 1, "2", RATE, Some("1000"))?;
        ensure!(
            code == ResponseError::InvalidRequest.code(),
            "broker 1 took a change for broker 2: {code} {message:?}"
        );
        let (code, message) = alter_broker_config(cluster, 2, "2", RATE, Some("fast"))?;
        ensure!(
            code == ResponseError::InvalidConfig.code(),
            "a bad rate was taken: {code} {message:?}"
        );
        ensure!(
            describe_broker_config(cluster, 2, RATE)? == (Some("-1".to_string()), 5, false),
            "before any change the default applies"
        );

        let (code, message) =
            alter_broker_config(cluster, 2, "2", RATE, Some(&RATE_BYTES.to_string()))?;
        ensure!(code == 0, "setting the throttle failed: {code} {message:?}");
        let described = describe_broker_config(cluster, 2, RATE)?;
        ensure!(
            described == (Some(RATE_BYTES.to_string()), 2, false),
            "not described as a dynamic broker setting: {described:?}"
        );
        // The setting lives in the metadata quorum: a restarted broker has it again.
        cluster.restart(2)?;
        cluster.wait_until("broker 2 has its dynamic setting back", SETTLE, |c| {
            let described = describe_broker_config(c, 2, RATE)?;
            ensure!(
                described == (Some(RATE_BYTES.to_string()), 2, false),
                "after a restart: {described:?}"
            );
            Ok(())
        })?;
        wait_for_partition(cluster, topic, 0, "both replicas in sync again", |p| {
            p.isr.len() == 2
        })?;

        let producer: FutureProducer = cluster
            .client_config()
            .set("acks", "1")
            .set("linger.ms", "5")
            .create()?;
        let value = vec![b'x'; 1000];
        let started = Instant::now();
        send_to_partition_zero(&runtime()?, &producer, topic, &value, 2000)?;
        let leader_bytes = bytes_on(cluster, 1, topic)?;
        ensure!(
            leader_bytes >= 2_000_000,
            "the leader holds only {leader_bytes} bytes"
        );
        // Watch the follower for a few seconds: it copies, but no faster than about the rate
        // (allowing double the rate plus a few fetches of slack on this busy machine).
        println!("produced {leader_bytes} bytes in {:?}", started.elapsed());
        let watch_until = Instant::now() + Duration::from_secs(4);
        let mut samples = Vec::new();
        while Instant::now() < watch_until {
            thread::sleep(Duration::from_millis(500));
            let copied = bytes_on(cluster, 2, topic)?;
            let elapsed = started.elapsed();
            samples.push((elapsed, copied));
            let allowed = 2 * RATE_BYTES * elapsed.as_millis() as i64 / 1000 + 200_000;
            ensure!(
                copied <= allowed,
                "the throttled follower copied {copied} bytes in {elapsed:?} (at most {allowed} \
                 expected at {RATE_BYTES} B/s); samples {samples:?}"
            );
        }
        ensure!(samples.len() >= 4, "too few samples: {samples:?}");
        let throttled = bytes_on(cluster, 2, topic)?;
        ensure!(
            throttled > 0 && throttled < leader_bytes,
            "the throttled follower holds {throttled} of {leader_bytes} bytes"
        );
        println!("throttled follower: {samples:?}");

        let (code, message) = alter_broker_config(cluster, 2, "2", RATE, None)?;
        ensure!(
            code == 0,
            "deleting the throttle failed: {code} {message:?}"
        );
        let described = describe_broker_config(cluster, 2, RATE)?;
        ensure!(
            described == (Some("-1".to_string()), 5, false),
            "the deleted throttle is still described: {described:?}"
        );
        let deleted = Instant::now();
        cluster.wait_until(
            "the follower catches up once unthrottled",
            Duration::from_secs(10),
            |c| {
                let copied = bytes_on(c, 2, topic)?;
                ensure!(copied >= leader_bytes, "{copied} of {leader_bytes} bytes");
                Ok(())
            },
        )?;
        let rest = leader_bytes - throttled;
        let took = deleted.elapsed();
        println!("unthrottled: the remaining {rest} bytes copied in {took:?}");
        ensure!(
            took < Duration::from_secs_f64(rest as f64 / RATE_BYTES as f64),
            "the remaining {rest} bytes took {took:?}: no faster than the deleted throttle"
        );
        Ok(())
    })
}

#[test]
fn a_broker_that_does_not_lead_a_partition_names_its_leader_in_produce_and_fetch_answers(
) -> Result<()> {
    with_cluster(options(), |cluster| {
        let topic = "leaderhint";
        let created = cluster.create_topic_assigned(topic, &[&[2]], &[])?;
        let (leader, epoch) = (created[0].leader, created[0].leader_epoch);
        ensure!(leader == 2, "{created:?}");
        let address = cluster.address(leader);
        let endpoint = (address.ip().to_string(), i32::from(address.port()));

        // Produce v10 and later carry the leader and its endpoint (KIP-951); v9 only the error.
        for version in [9, 10, 11] {
            let produce = produce_request(topic, 0, BatchBuilder::default().values(&["hint"])?, 1)
                .with_timeout_ms(10_000);
            let answer = cluster.request(1, &produce, version)?;
            let partition = answer
                .responses
                .first()
                .and_then(|t| t.partition_responses.first())
                .context("Produce answered no partition")?;
            ensure!(
                partition.error_code == ResponseError::NotLeaderOrFollower.code(),
                "v{version}: {partition:?}"
            );
            let hinted = (
                partition.current_leader.leader_id.0,
                partition.current_leader.leader_epoch,
            );
            let endpoints: Vec<(i32, String, i32)> = answer
                .node_endpoints
                .iter()
                .map(|n| (n.node_id.0, n.host.to_string(), n.port))
                .collect();
            if version >= 10 {
                ensure!(hinted == (leader, epoch), "v{version}: {partition:?}");
                ensure!(
                    endpoints == vec![(leader, endpoint.0.clone(), endpoint.1)],
                    "v{version}: {endpoints:?}"
                );
            } else {
                ensure!(
                    hinted == (-1, -1) && endpoints.is_empty(),
                    "v{version}: {answer:?}"
                );
            }
        }

        // Fetch v12 carries the leader; v16 by topic id also its endpoint.
        let topic_id = cluster
            .metadata(3, Some(&[topic]))?
            .topics
            .first()
            .map(|t| t.topic_id)
            .context("Metadata answered no topic")?;
        for version in [12, 16] {
            let fetch = FetchRequest::default()
                .with_max_wait_ms(0)
                .with_max_bytes(1 << 20)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(topic_name(topic))
                    .with_topic_id(topic_id)
                    .with_partitions(vec![FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(0)
                        .with_partition_max_bytes(1 << 20)])]);
            let answer = cluster.request(3, &fetch, version)?;
            let partition = answer
                .responses
                .first()
                .and_then(|t| t.partitions.first())
                .context("Fetch answered no partition")?;
            ensure!(
                partition.error_code == ResponseError::NotLeaderOrFollower.code()
                    && (
                        partition.current_leader.leader_id.0,
                        partition.current_leader.leader_epoch
                    ) == (leader, epoch),
                "v{version}: {partition:?}"
            );
            let endpoints: Vec<(i32, String, i32)> = answer
                .node_endpoints
                .iter()
                .map(|n| (n.node_id.0, n.host.to_string(), n.port))
                .collect();
            let expected = if version >= 16 {
                vec![(leader, endpoint.0.clone(), endpoint.1)]
            } else {
                Vec::new()
            };
            ensure!(endpoints == expected, "v{version}: {endpoints:?}");
        }
        Ok(())
    })
}

/// Brokers replicate over an SSL inter-broker listener with mutual TLS (each
/// broker checks the others' certificates and presents its own): with min.insync.replicas=3,
/// acks=all writes succeed only if both followers copy over it, every record reads back, and
/// all three brokers hold the same bytes. Clients keep the PLAINTEXT listener.
#[test]
fn brokers_replicate_over_an_ssl_inter_broker_listener_with_mutual_tls() -> Result<()> {
    let certificates = tempfile::tempdir().context("a directory for the certificates")?;
    let pki = support::make_pki(certificates.path())?;
    let options = options()
        .inter_broker_listener("INTERNAL", "SSL")
        .set("ssl.keystore.location", pki.broker.display().to_string())
        .set("ssl.truststore.location", pki.ca.display().to_string())
        .set("ssl.client.auth", "required");
    with_cluster(options, every_replica_copies_over_the_inter_broker_listener)
}

/// Quorum traffic over mutual TLS (`CONTROLLER:SSL` with `ssl.client.auth=required`, as Kafka
/// secures it): three voters and a broker that does not vote form the cluster, heartbeat and
/// replicate an `acks=all` topic; a controller listener answers a peer whose certificate the
/// CA signed, and answers nothing to a plaintext connection or to TLS without a certificate.
#[test]
fn quorum_traffic_over_mutual_tls_answers_only_certified_peers() -> Result<()> {
    let certificates = tempfile::tempdir().context("a directory for the certificates")?;
    let pki = support::make_pki(certificates.path())?;
    let options = options()
        .brokers(4)
        .voters(3)
        .set(
            "listener.security.protocol.map",
            "PLAINTEXT:PLAINTEXT,CONTROLLER:SSL",
        )
        .set("ssl.keystore.location", pki.broker.display().to_string())
        .set("ssl.truststore.location", pki.ca.display().to_string())
        .set("ssl.client.auth", "required");
    with_cluster(options, |cluster| {
        let topic = "quorum-over-tls";
        cluster.create_topic(topic, 3, 3, &[("min.insync.replicas", "2")])?;
        let acked = produce_all(cluster, topic, 3, "tls", 300)?;
        check_nothing_lost(&acked, &cluster.read_all(topic, 3)?)?;
        let address = cluster.controller_address(1);
        runtime()?.block_on(controller_listener_admits(address, &pki))
    })
}

/// What a controller listener on mutual TLS answers a DescribeQuorum frame with: nothing over
/// plaintext or over TLS without a client certificate, a response with one.
async fn controller_listener_admits(
    address: std::net::SocketAddr,
    pki: &support::Pki,
) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const ANSWER: Duration = Duration::from_secs(10);
    let body = br#""DescribeQuorum""#;
    let mut frame = u32::try_from(body.len())?.to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    let name = rustls::pki_types::ServerName::try_from(address.ip().to_string())?;

    // A plaintext frame fails the TLS handshake: at most a TLS alert comes back, and the
    // connection closes.
    let mut plain = tokio::net::TcpStream::connect(address).await?;
    plain.write_all(&frame).await?;
    let mut received = Vec::new();
    let _ = tokio::time::timeout(ANSWER, plain.read_to_end(&mut received)).await?;
    ensure!(
        !String::from_utf8_lossy(&received).contains("DescribeQuorum"),
        "a plaintext connection was answered: {}",
        String::from_utf8_lossy(&received)
    );
    let mut answer = [0u8; 4];

    for (with_certificate, must_answer) in [(false, false), (true, true)] {
        let tcp = tokio::net::TcpStream::connect(address).await?;
        let connector = support::tls_connector(pki, with_certificate)?;
        let handshake = tokio::time::timeout(ANSWER, connector.connect(name.clone(), tcp)).await?;
        let read = match handshake {
            Ok(mut tls) => {
                let written = tls.write_all(&frame).await;
                match written {
                    Ok(()) => tokio::time::timeout(ANSWER, tls.read_exact(&mut answer))
                        .await?
                        .map(|_| u32::from_be_bytes(answer)),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        match (must_answer, read) {
            (true, Ok(len)) => ensure!(len > 0, "an empty answer"),
            (true, Err(e)) => bail!("a peer with a certificate was not answered: {e}"),
            (false, Ok(len)) => bail!("TLS without a certificate was answered ({len} bytes)"),
            (false, Err(_)) => {}
        }
    }
    Ok(())
}

/// Brokers log in to each other with SCRAM-SHA-512 on a SASL_PLAINTEXT inter-broker listener
/// (`sasl.mechanism.inter.broker.protocol` and the listener's JAAS username and password, the
/// credential given with OXBOW_ADD_SCRAM): replication works through it.
#[test]
fn brokers_replicate_over_a_sasl_inter_broker_listener_with_scram() -> Result<()> {
    let options = options()
        .inter_broker_listener("INTERNAL", "SASL_PLAINTEXT")
        .set("sasl.enabled.mechanisms", "SCRAM-SHA-512")
        .set("sasl.mechanism.inter.broker.protocol", "SCRAM-SHA-512")
        .set(
            "listener.name.internal.scram-sha-512.sasl.jaas.config",
            "org.apache.kafka.common.security.scram.ScramLoginModule required \
             username=\"broker\" password=\"broker-secret\";",
        )
        .env(
            "OXBOW_ADD_SCRAM",
            "SCRAM-SHA-512=[name=broker,password=broker-secret]",
        );
    with_cluster(options, every_replica_copies_over_the_inter_broker_listener)
}

/// With min.insync.replicas=3, acks=all writes succeed only if both followers copy, every
/// record reads back, and all three brokers hold the same bytes.
fn every_replica_copies_over_the_inter_broker_listener(cluster: &mut Cluster) -> Result<()> {
    let topic = "replicated-inside";
    cluster.create_topic(topic, 3, 3, &[("min.insync.replicas", "3")])?;
    let acked = produce_all(cluster, topic, 3, "inside", 600)?;
    let read = cluster.read_all(topic, 3)?;
    check_nothing_lost(&acked, &read)?;
    cluster.wait_until("every replica holds every byte", SETTLE, |c| {
        let sizes = c
            .node_ids()
            .into_iter()
            .map(|node| bytes_on(c, node, topic).map(|bytes| (node, bytes)))
            .collect::<Result<BTreeMap<NodeId, i64>>>()?;
        let distinct: BTreeSet<i64> = sizes.values().copied().collect();
        ensure!(
            distinct.len() == 1 && sizes.values().all(|b| *b > 0),
            "bytes per broker: {sizes:?}"
        );
        Ok(())
    })
}

/// A dynamic broker setting on the empty BROKER resource is the cluster-wide default (Kafka's
/// `--entity-default`): set through any broker, every broker takes it (source
/// DYNAMIC_DEFAULT_BROKER_CONFIG) unless it has its own value (DYNAMIC_BROKER_CONFIG), and
/// deleting it brings back server.properties.
#[test]
fn a_cluster_wide_dynamic_default_applies_to_every_broker_without_its_own_value() -> Result<()> {
    const RATE: &str = "follower.replication.throttled.rate";
    const DYNAMIC: i8 = 2;
    const DYNAMIC_DEFAULT: i8 = 3;
    const DEFAULT: i8 = 5;
    with_cluster(options().brokers(2).voters(1), |cluster| {
        let (code, message) = alter_broker_config(cluster, 1, "", RATE, Some("123456"))?;
        ensure!(code == 0, "setting the default failed: {code} {message:?}");
        let expect = |c: &Cluster, node: NodeId, value: &str, source: i8| {
            let described = describe_broker_config(c, node, RATE)?;
            ensure!(
                described == (Some(value.to_string()), source, false),
                "broker {node}: {described:?}"
            );
            Ok(())
        };
        cluster.wait_until("both brokers take the default", SETTLE, |c| {
            expect(c, 1, "123456", DYNAMIC_DEFAULT)?;
            expect(c, 2, "123456", DYNAMIC_DEFAULT)
        })?;
        let listed = describe_broker_resource(cluster, 2, "", RATE)?;
        ensure!(
            listed == Some((Some("123456".to_string()), DYNAMIC_DEFAULT, false)),
            "the default resource lists {listed:?}"
        );

        let (code, message) = alter_broker_config(cluster, 2, "2", RATE, Some("654321"))?;
        ensure!(
            code == 0,
            "setting broker 2's own value failed: {code} {message:?}"
        );
        expect(cluster, 2, "654321", DYNAMIC)?;
        expect(cluster, 1, "123456", DYNAMIC_DEFAULT)?;

        let (code, message) = alter_broker_config(cluster, 2, "", RATE, None)?;
        ensure!(code == 0, "deleting the default failed: {code} {message:?}");
        cluster.wait_until("the default is gone everywhere", SETTLE, |c| {
            expect(c, 1, "-1", DEFAULT)?;
            expect(c, 2, "654321", DYNAMIC)
        })?;
        let listed = describe_broker_resource(cluster, 1, "", RATE)?;
        ensure!(
            listed.is_none(),
            "the default resource still lists {listed:?}"
        );
        Ok(())
    })
}

/// UnregisterBroker of `node` sent to broker `via`: the error code and message.
fn unregister(cluster: &Cluster, via: NodeId, node: NodeId) -> Result<(i16, String)> {
    let request = UnregisterBrokerRequest::default().with_broker_id(BrokerId(node));
    let response = cluster.request(via, &request, 0)?;
    Ok((
        response.error_code,
        response
            .error_message
            .map(|m| m.to_string())
            .unwrap_or_default(),
    ))
}

/// Brokers DescribeCluster v2 lists on `via`, fenced ones included, with their fencing.
fn registered_brokers(cluster: &Cluster, via: NodeId) -> Result<BTreeMap<i32, bool>> {
    let request = DescribeClusterRequest::default().with_include_fenced_brokers(true);
    let response = cluster.request(via, &request, 2)?;
    ensure!(response.error_code == 0, "DescribeCluster: {response:?}");
    Ok(response
        .brokers
        .iter()
        .map(|b| (b.broker_id.0, b.is_fenced))
        .collect())
}

/// The members of the metadata quorum broker `via` knows, by node id, with their roles.
fn quorum_members(cluster: &Cluster, via: NodeId) -> Result<BTreeMap<i32, String>> {
    let metrics = cluster.scrape_metrics(via)?;
    let mut members = BTreeMap::new();
    for line in metrics.lines() {
        let Some(labels) = line.strip_prefix("oxbow_metadata_quorum_member{") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|l| l.trim().strip_prefix(&format!("{name}=\"")))
                .and_then(|v| v.split('"').next())
                .map(str::to_string)
        };
        if let (Some(node), Some(role)) = (label("node"), label("role")) {
            members.insert(node.parse().context("node label")?, role);
        }
    }
    Ok(members)
}

/// Warnings and errors in broker `node`'s log about reaching node 4 of the quorum.
fn complaints_about_node_4(cluster: &Cluster, node: NodeId) -> usize {
    cluster
        .log_lines(node, "")
        .iter()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .filter(|l| l.contains("target=4") || l.contains("target: 4") || l.contains("\"target\":4"))
        .count()
}

#[test]
fn a_stopped_learner_holding_no_replica_is_unregistered_and_leaves_the_quorum() -> Result<()> {
    let options = options().brokers(4).voters(3);
    with_cluster(options, |cluster| {
        cluster.wait_for_brokers(4, SETTLE)?;
        let members = quorum_members(cluster, 1)?;
        ensure!(
            members.get(&4).map(String::as_str) == Some("learner"),
            "broker 4 is not a learner: {members:?}"
        );
        cluster.create_topic_assigned("on-four", &[&[4, 1]], &[])?;

        // A live broker, a voter (even a stopped, fenced one) and an unknown id are refused.
        let (code, message) = unregister(cluster, 1, 4)?;
        ensure!(
            code == ResponseError::InvalidRequest.code() && message.contains("alive"),
            "a live broker: {code} {message}"
        );
        cluster.stop(3)?;
        cluster.wait_until("broker 3 is fenced", SETTLE, |c| {
            let brokers = registered_brokers(c, 1)?;
            ensure!(brokers.get(&3) == Some(&true), "{brokers:?}");
            Ok(())
        })?;
        let (code, message) = unregister(cluster, 1, 3)?;
        ensure!(
            code == ResponseError::InvalidRequest.code() && message.contains("voter"),
            "a voter: {code} {message}"
        );
        let (code, _) = unregister(cluster, 1, 42)?;
        ensure!(
            code == ResponseError::BrokerIdNotRegistered.code(),
            "an unknown id: {code}"
        );

        // Broker 4 stops; it stays registered (fenced) and a learner while it holds a replica.
        cluster.stop(4)?;
        cluster.wait_until("broker 4 is fenced", SETTLE, |c| {
            let brokers = registered_brokers(c, 1)?;
            ensure!(brokers.get(&4) == Some(&true), "{brokers:?}");
            Ok(())
        })?;
        let (code, message) = unregister(cluster, 2, 4)?;
        ensure!(
            code == ResponseError::InvalidRequest.code() && message.contains("on-four-0"),
            "a broker holding a replica: {code} {message}"
        );
        ensure!(quorum_members(cluster, 1)?.contains_key(&4));
        // Meanwhile the controller keeps trying to reach it, and says so.
        let controller = cluster.metadata(1, Some(&[]))?.controller_id.0;
        let before = complaints_about_node_4(cluster, controller);
        thread::sleep(Duration::from_secs(2));
        let grown = complaints_about_node_4(cluster, controller) - before;
        eprintln!("{grown} complaints about node 4 on the controller in 2 s");
        ensure!(
            grown > 0,
            "the controller says nothing about the stopped node 4"
        );
        cluster.restart(3)?;
        cluster.wait_for_brokers(3, SETTLE)?;

        let delete = DeleteTopicsRequest::default()
            .with_topic_names(vec![topic_name("on-four")])
            .with_timeout_ms(10_000);
        let deleted = cluster.request(1, &delete, 4)?;
        ensure!(
            deleted.responses.iter().all(|r| r.error_code == 0),
            "{deleted:?}"
        );
        let controller = cluster.metadata(1, Some(&[]))?.controller_id.0;
        let via = cluster
            .node_ids()
            .into_iter()
            .find(|n| *n != controller && *n != 4)
            .context("a broker that is not the controller")?;
        let (code, message) = unregister(cluster, via, 4)?;
        ensure!(
            code == 0,
            "unregistering broker 4 through broker {via}: {code} {message}"
        );

        cluster.wait_until(
            "no broker lists broker 4 or has it in the quorum",
            SETTLE,
            |c| {
                for node in [1, 2, 3] {
                    let brokers = registered_brokers(c, node)?;
                    ensure!(!brokers.contains_key(&4), "broker {node} lists {brokers:?}");
                    let members = quorum_members(c, node)?;
                    ensure!(
                        members.keys().copied().collect::<Vec<_>>() == [1, 2, 3],
                        "broker {node} knows the members {members:?}"
                    );
                }
                Ok(())
            },
        )?;
        let (code, _) = unregister(cluster, 1, 4)?;
        ensure!(
            code == ResponseError::BrokerIdNotRegistered.code(),
            "unregistered twice: {code}"
        );

        // The controller stops trying to reach it: its log stops growing with complaints.
        let before = complaints_about_node_4(cluster, controller);
        thread::sleep(Duration::from_secs(3));
        let after = complaints_about_node_4(cluster, controller);
        eprintln!("complaints about node 4 on the controller: {before} then {after}");
        ensure!(
            after == before,
            "the controller logged {} more warnings about node 4 after it left the quorum",
            after - before
        );
        Ok(())
    })
}

/// ListOffsets v4+ answers with the leader epoch of the record it found, as Kafka does: a
/// Java consumer compares it with OffsetForLeaderEpoch after a leader change, and a wrong
/// one (it was always 0) makes it detect a truncation that never happened.
#[test]
fn list_offsets_reports_the_leader_epoch_of_each_record_found_after_a_leader_change() -> Result<()>
{
    with_cluster(options(), |cluster| {
        let topic = "epochs";
        cluster.create_topic_assigned(topic, &[&[2, 3, 1]], &[])?;
        let first = wait_for_partition(cluster, topic, 0, "every replica in sync", |p| {
            p.isr.len() == 3
        })?;
        produce_at(cluster, first.leader, topic, 1_000, &["a", "b", "c"])?;
        cluster.kill(first.leader)?;
        let second = wait_for_partition(cluster, topic, 0, "a new leader", |p| {
            p.leader != first.leader && p.leader != -1
        })?;
        ensure!(
            second.leader_epoch > first.leader_epoch,
            "{first:?} then {second:?}"
        );
        produce_at(cluster, second.leader, topic, 2_000, &["d", "e", "f"])?;

        let (old, new) = (first.leader_epoch, second.leader_epoch);
        for (timestamp, offset, epoch) in [
            (-2, 0, old),  // earliest: the first record's epoch
            (-1, 6, new),  // latest: the partition's current epoch
            (500, 0, old), // by timestamp: the epoch of the record found
            (1_500, 3, new),
            (-3, 3, new), // max timestamp: its first record
        ] {
            for version in [4, 7] {
                let answer = cluster.request(
                    second.leader,
                    &support::list_offsets_request(topic, 0, timestamp),
                    version,
                )?;
                let partition = answer
                    .topics
                    .first()
                    .and_then(|t| t.partitions.first())
                    .context("ListOffsets answered no partition")?;
                ensure!(
                    partition.error_code == 0
                        && partition.offset == offset
                        && partition.leader_epoch == epoch,
                    "v{version} timestamp {timestamp}: expected offset {offset} in epoch {epoch}, \
                     got {partition:?}"
                );
            }
        }
        Ok(())
    })
}

/// Produces one batch of `values` with CreateTime `timestamp` to `leader`, acks=all.
fn produce_at(
    cluster: &Cluster,
    leader: NodeId,
    topic: &str,
    timestamp: i64,
    values: &[&str],
) -> Result<()> {
    let records = BatchBuilder::default()
        .timestamp(timestamp)
        .values(values)?;
    let produce = produce_request(topic, 0, records, -1).with_timeout_ms(10_000);
    let answer = cluster.request(leader, &produce, 9)?;
    let partition = answer
        .responses
        .first()
        .and_then(|t| t.partition_responses.first())
        .context("Produce answered no partition")?;
    ensure!(partition.error_code == 0, "{partition:?}");
    Ok(())
}

/// An operator's unclean ElectLeaders (election type 1) elects an out-of-sync replica even
/// where the topic disallows unclean elections, as Kafka's controller does: the controller
/// alone never would (see the test above), the operator asked for it by name.
#[test]
fn an_unclean_elect_leaders_request_elects_an_out_of_sync_replica_whatever_the_topic_says(
) -> Result<()> {
    with_cluster(options().voters(1), |cluster| {
        let topic = "forced";
        cluster.create_topic_assigned(topic, &[&[2, 3]], &[])?;
        wait_for_partition(cluster, topic, 0, "both replicas in sync", |p| {
            p.isr.len() == 2
        })?;
        cluster.kill(3)?;
        wait_for_partition(cluster, topic, 0, "broker 3 out of the ISR", |p| {
            p.isr == vec![2]
        })?;
        cluster.kill(2)?;
        wait_for_partition(cluster, topic, 0, "no leader", |p| p.leader == -1)?;
        cluster.restart(3)?;
        std::thread::sleep(Duration::from_secs(2));
        let offline = cluster.partitions(topic)?;
        ensure!(
            offline.first().is_some_and(|p| p.leader == -1),
            "the controller elected an out-of-sync leader on its own: {offline:?}"
        );

        let elect = |election_type: i8| {
            ElectLeadersRequest::default()
                .with_election_type(election_type)
                .with_timeout_ms(10_000)
                .with_topic_partitions(Some(vec![TopicPartitions::default()
                    .with_topic(topic_name(topic))
                    .with_partitions(vec![0])]))
        };
        let preferred = cluster.request(1, &elect(0), 2)?;
        let refused = preferred
            .replica_election_results
            .first()
            .and_then(|r| r.partition_result.first())
            .context("ElectLeaders answered no partition")?;
        ensure!(
            refused.error_code == ResponseError::PreferredLeaderNotAvailable.code(),
            "a preferred election with the preferred replica down: {refused:?}"
        );
        let unclean = cluster.request(1, &elect(1), 2)?;
        let result = unclean
            .replica_election_results
            .first()
            .and_then(|r| r.partition_result.first())
            .context("ElectLeaders answered no partition")?;
        ensure!(
            unclean.error_code == 0 && result.error_code == 0,
            "unclean election refused: {unclean:?}"
        );
        let elected = wait_for_partition(cluster, topic, 0, "broker 3 leads", |p| p.leader == 3)?;
        ensure!(
            elected.isr == vec![3],
            "the unclean leader is the whole ISR: {elected:?}"
        );
        Ok(())
    })
}

/// Kafka's separate controllers (`process.roles=controller`, the controller listener alone):
/// three controller-only nodes run the metadata quorum, three brokers serve clients. Clients
/// see only the brokers; the brokers heartbeat to whichever controller leads. Killing the
/// active controller elects another without failing a write, and a killed broker is fenced by
/// the new controller and its partitions led elsewhere; nothing acknowledged is lost.
#[test]
fn dedicated_controllers_run_the_quorum_while_brokers_serve_and_failures_of_either_are_survived(
) -> Result<()> {
    with_cluster(
        options().brokers(6).voters(3).dedicated_controllers(),
        |cluster| {
            let controllers = [1, 2, 3];
            ensure!(cluster.node_ids() == [4, 5, 6], "{:?}", cluster.node_ids());
            for node in controllers {
                ensure!(
                    std::net::TcpStream::connect(cluster.address(node)).is_err(),
                    "controller {node} accepts clients"
                );
                let metrics = cluster.scrape_metrics(node)?;
                ensure!(
                    metrics.contains("oxbow_active_controller"),
                    "controller {node} exports no controller gauge"
                );
            }
            let (_, quorum) = cluster.describe_quorum(4)?;
            let ids = |replicas: &[ReplicaState]| {
                replicas.iter().map(|r| r.replica_id.0).collect::<Vec<_>>()
            };
            ensure!(
                ids(&quorum.current_voters) == controllers
                    && ids(&quorum.observers) == [4, 5, 6]
                    && controllers.contains(&quorum.leader_id.0),
                "{quorum:?}"
            );
            let topic = "separated";
            cluster.create_topic(topic, 3, 3, &[("min.insync.replicas", "2")])?;
            cluster.wait_for_full_isr(topic, SETTLE)?;
            let mut acked = produce_all(cluster, topic, 3, "first", 300)?;

            let first_controller = quorum.leader_id.0;
            cluster.kill(first_controller)?;
            let producer = recording_producer(cluster, "60000")?;
            acked.extend(send_all(&producer, topic, 3, "controller-killed", 300)?);
            let second_controller =
                cluster.wait_until("another controller leads", SETTLE, |c| {
                    let (_, quorum) = c.describe_quorum(5)?;
                    ensure!(
                        quorum.leader_id.0 != first_controller && quorum.leader_id.0 >= 0,
                        "{quorum:?}"
                    );
                    Ok(quorum.leader_id.0)
                })?;
            eprintln!("controller {first_controller} killed; {second_controller} leads");

            let partitions = cluster.wait_for_full_isr(topic, SETTLE)?;
            let victim = partitions.first().context("no partition")?.leader;
            let (led, took) = kill_until_replaced(cluster, victim, topic, &partitions)?;
            eprintln!(
                "broker {victim} (led {led:?}) fenced and replaced by controller {second_controller} after {took:.2?}"
            );
            acked.extend(produce_all(cluster, topic, 3, "broker-killed", 300)?);

            cluster.start_nodes(&[first_controller, victim])?;
            cluster.wait_for_brokers(3, SETTLE)?;
            cluster.wait_for_full_isr(topic, SETTLE)?;
            let read = cluster.read_all(topic, 3)?;
            check_nothing_lost(&acked, &read)?;
            ensure!(read.len() == 900, "{} records read, 900 sent", read.len());
            Ok(())
        },
    )
}

/// DescribeQuorum, asked of any broker, answers as Kafka's controller does: the leader and
/// its epoch, the high watermark, the voters and the observers (brokers that do not vote)
/// with their log end offsets and when they last fetched and were caught up; v2 adds the
/// voters' controller endpoints. A stopped observer's last fetch stops moving.
#[test]
fn describe_quorum_reports_the_leader_voters_and_observers_from_any_broker() -> Result<()> {
    with_cluster(options().brokers(4).voters(3), |cluster| {
        cluster.create_topic("quorum", 1, 3, &[])?;
        let describe = |cluster: &Cluster, node: NodeId| cluster.describe_quorum(node);
        let controller = cluster.metadata(4, Some(&[]))?.controller_id.0;
        let now = now_ms();
        let (response, status) = describe(cluster, 4)?;
        let ids =
            |replicas: &[ReplicaState]| replicas.iter().map(|r| r.replica_id.0).collect::<Vec<_>>();
        ensure!(
            status.leader_id.0 == controller,
            "leader {status:?}, controller {controller}"
        );
        ensure!(status.leader_epoch >= 1, "{status:?}");
        ensure!(
            ids(&status.current_voters) == [1, 2, 3],
            "voters {status:?}"
        );
        ensure!(ids(&status.observers) == [4], "observers {status:?}");
        ensure!(status.high_watermark > 0, "{status:?}");
        for replica in status.current_voters.iter().chain(&status.observers) {
            ensure!(
                replica.log_end_offset > 0 && replica.log_end_offset <= status.high_watermark + 10,
                "log end offset of {replica:?}, high watermark {}",
                status.high_watermark
            );
            for at in [
                replica.last_fetch_timestamp,
                replica.last_caught_up_timestamp,
            ] {
                ensure!(
                    (now - 10_000..now + 10_000).contains(&at),
                    "timestamps of {replica:?}"
                );
            }
        }
        let mut endpoints: Vec<(i32, u16)> = response
            .nodes
            .iter()
            .flat_map(|n| n.listeners.iter().map(move |l| (n.node_id.0, l.port)))
            .collect();
        endpoints.sort_unstable();
        ensure!(
            endpoints.iter().map(|e| e.0).collect::<Vec<_>>() == [1, 2, 3]
                && endpoints.iter().all(|e| e.1 > 0),
            "voter endpoints {:?}",
            response.nodes
        );
        // The same answer from the leader itself and from a voter that follows.
        for node in [1, 2, 3] {
            let (_, seen) = describe(cluster, node)?;
            ensure!(
                seen.leader_id == status.leader_id && ids(&seen.observers) == [4],
                "broker {node} answered {seen:?}"
            );
        }

        cluster.kill(4)?;
        std::thread::sleep(Duration::from_secs(3));
        let (_, later) = describe(cluster, 1)?;
        let now = now_ms();
        let observer = later.observers.first().context("the observer is gone")?;
        ensure!(
            now - observer.last_fetch_timestamp >= 2_500,
            "a stopped observer still fetches: {observer:?} at {now}"
        );
        for voter in &later.current_voters {
            ensure!(
                now - voter.last_fetch_timestamp < 2_000,
                "voter {voter:?} at {now}"
            );
        }
        Ok(())
    })
}

/// Finalized feature levels live in the replicated metadata: an UpdateFeatures sent to any
/// broker is reported by every broker's ApiVersions, and by a broker that restarted.
#[test]
fn a_feature_level_set_through_one_broker_is_reported_by_every_broker() -> Result<()> {
    with_cluster(options(), |cluster| {
        let update = UpdateFeaturesRequest::default()
            .with_timeout_ms(10_000)
            .with_feature_updates(vec![FeatureUpdateKey::default()
                .with_feature(str_bytes("metadata.version"))
                .with_max_version_level(25)
                .with_upgrade_type(2)]);
        let answer = cluster.request(3, &update, 1)?;
        ensure!(answer.error_code == 0, "{answer:?}");
        let metadata_version = |cluster: &Cluster, node: NodeId| -> Result<i16> {
            let versions = cluster.request(node, &ApiVersionsRequest::default(), 3)?;
            versions
                .finalized_features
                .iter()
                .find(|f| f.name.as_str() == "metadata.version")
                .map(|f| f.max_version_level)
                .with_context(|| format!("broker {node} finalizes no metadata.version"))
        };
        cluster.wait_until("every broker reports 4.0-IV3", SETTLE, |cluster| {
            for node in cluster.up() {
                let level = metadata_version(cluster, node)?;
                ensure!(level == 25, "broker {node} reports {level}");
            }
            Ok(())
        })?;
        cluster.restart(1)?;
        let level = metadata_version(cluster, 1)?;
        ensure!(level == 25, "broker 1 reports {level} after a restart");
        Ok(())
    })
}

#[test]
fn followers_fetch_in_sessions_and_every_replica_serves_every_record_after_leader_changes(
) -> Result<()> {
    // Broker 1 is the only voter and holds no replica, so any two of the others can be down.
    with_cluster(options().brokers(4).voters(1), |cluster| {
        let topic = "in-sessions";
        let rotations: [&[NodeId]; 3] = [&[2, 3, 4], &[3, 4, 2], &[4, 2, 3]];
        let assignment: Vec<&[NodeId]> = (0..12).map(|p| rotations[p % 3]).collect();
        cluster.create_topic_assigned(topic, &assignment, &[("min.insync.replicas", "2")])?;
        let mut acked = produce_all(cluster, topic, 12, "first", 2400)?;
        // Each leader keeps one session for each of its two followers, of the 4 partitions it
        // leads.
        cluster.wait_until("every leader keeps its followers' sessions", SETTLE, |c| {
            for node in [2, 3, 4] {
                let text = c.scrape_metrics(node)?;
                let sessions = sample(&text, "oxbow_fetch_sessions");
                let partitions = sample(&text, "oxbow_fetch_session_partitions");
                ensure!(
                    sessions == Some(2.0) && partitions == Some(8.0),
                    "broker {node}: {sessions:?} sessions of {partitions:?} partitions"
                );
            }
            Ok(())
        })?;

        cluster.kill(4)?;
        acked.extend(produce_all(cluster, topic, 12, "without-4", 2400)?);
        cluster.restart(4)?;
        cluster.wait_for_full_isr(topic, SETTLE)?;
        acked.extend(produce_all(cluster, topic, 12, "back", 2400)?);
        wait_for_equal_replicas(cluster, topic, 12, &[2, 3, 4])?;

        // Each replica in turn leads every partition alone and serves every record.
        for reader in [4, 2, 3] {
            let others: Vec<NodeId> = [2, 3, 4].into_iter().filter(|n| *n != reader).collect();
            for node in &others {
                cluster.kill(*node)?;
            }
            for partition in 0..12 {
                wait_for_partition(cluster, topic, partition, "the reader leads", |p| {
                    p.leader == reader
                })?;
            }
            let read = cluster.read_all(topic, 12)?;
            check_nothing_lost(&acked, &read)?;
            eprintln!("{} records read back from broker {reader}", read.len());
            for node in &others {
                cluster.restart(*node)?;
            }
            cluster.wait_for_full_isr(topic, SETTLE)?;
        }
        Ok(())
    })
}

/// Sends `values` round-robin over `partitions` in the producer's open transaction.
fn send_in_transaction(
    producer: &rdkafka::producer::BaseProducer,
    topic: &str,
    partitions: i32,
    values: &[String],
) -> Result<()> {
    for (i, value) in values.iter().enumerate() {
        let partition = i32::try_from(i).unwrap_or(0) % partitions;
        let mut record = BaseRecord::<(), _>::to(topic)
            .partition(partition)
            .payload(value.as_str());
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    producer.poll(Duration::from_millis(10));
                    record = r;
                }
                Err((e, _)) => bail!("send failed: {e}"),
            }
        }
    }
    producer.flush(SETTLE).context("flush")?;
    Ok(())
}

/// A transaction's markers reach partition leaders on other brokers (WriteTxnMarkers), and
/// when the coordinator dies with a transaction open, its successor loads the state from
/// `__transaction_state` and the transaction ends all or nothing: a `read_committed`
/// consumer sees every record of each committed transaction and none of an aborted one.
#[test]
fn transactions_span_brokers_and_end_all_or_nothing_when_their_coordinator_dies() -> Result<()> {
    with_cluster(options(), |cluster| {
        let topic = "txn-orders";
        let partitions = 6;
        cluster.create_topic(topic, partitions, 3, &[("min.insync.replicas", "2")])?;
        let id = "cluster-txn";
        let producer: rdkafka::producer::BaseProducer = cluster
            .client_config()
            .set("transactional.id", id)
            .set("transaction.timeout.ms", "60000")
            .set("linger.ms", "5")
            .create()
            .context("creating a transactional producer")?;
        producer.init_transactions(SETTLE)?;
        let values = |prefix: &str, count: usize| -> Vec<String> {
            (0..count).map(|i| format!("{prefix}-{i}")).collect()
        };
        producer.begin_transaction()?;
        send_in_transaction(&producer, topic, partitions, &values("first", 600))?;
        producer.commit_transaction(SETTLE)?;

        producer.begin_transaction()?;
        send_in_transaction(&producer, topic, partitions, &values("open", 300))?;
        let coordinator = find_coordinator(cluster, id, TRANSACTION_KEY)?;
        cluster.kill(coordinator)?;
        let successor = cluster.wait_until("another broker coordinates the id", SETTLE, |c| {
            let node = find_coordinator(c, id, TRANSACTION_KEY)?;
            ensure!(node != coordinator, "still {node}");
            ensure!(c.up().contains(&node), "{node} is not running");
            Ok(node)
        })?;
        eprintln!("transaction coordinator moved from broker {coordinator} to {successor}");
        let open_committed = match producer.commit_transaction(SETTLE) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("the open transaction did not commit: {e}");
                if e.rdkafka_error_code() != Some(RDKafkaErrorCode::Fenced) {
                    producer.abort_transaction(SETTLE)?;
                }
                false
            }
        };
        producer.begin_transaction()?;
        send_in_transaction(&producer, topic, partitions, &values("after", 300))?;
        producer.commit_transaction(SETTLE)?;

        let expected = 900 + if open_committed { 300 } else { 0 };
        let consumer: BaseConsumer = cluster
            .client_config()
            .set("group.id", "txn-reader")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .create()?;
        consumer.subscribe(&[topic])?;
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut total = 0;
        let deadline = Instant::now() + SETTLE;
        while total < expected && Instant::now() < deadline {
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
                let value = String::from_utf8_lossy(message.payload().unwrap_or_default());
                let prefix = value.split('-').next().unwrap_or_default().to_string();
                *seen.entry(prefix).or_default() += 1;
                total += 1;
            }
        }
        // Nothing more may follow: a partial transaction would show up as extra records.
        let quiet = Instant::now() + Duration::from_secs(2);
        while Instant::now() < quiet {
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
                let value = String::from_utf8_lossy(message.payload().unwrap_or_default());
                let prefix = value.split('-').next().unwrap_or_default().to_string();
                *seen.entry(prefix).or_default() += 1;
            }
        }
        let mut want = BTreeMap::from([("first".to_string(), 600), ("after".to_string(), 300)]);
        if open_committed {
            want.insert("open".to_string(), 300);
        }
        ensure!(
            seen == want,
            "read_committed read {seen:?}, expected {want:?} (the open transaction committed: {open_committed})"
        );
        Ok(())
    })
}
