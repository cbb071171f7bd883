//! The balancer against a real local cluster (the `oxbow-e2e` harness): three voters with
//! topics of replication factor 2 and 3 under a running producer and consumer, two brokers
//! added and balanced onto, then two brokers drained, with every acknowledged record read
//! back; and a throttled run that sets `follower.replication.throttled.rate` on the brokers
//! receiving replicas while it moves them and removes it at the end. Tests run one at a time.
//! Needs the broker binary: `cargo build -p oxbow-broker`, or `OXBOW_BROKER_BIN`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use oxbow_e2e::cluster::{Cluster, ClusterOptions, Delivery, NodeId, RecordingContext};
use oxbow_e2e::harness;
use oxbow_operator::balance::executor::{self, Goal, Settings};
use oxbow_operator::balance::PlanError;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::Offset;

/// Topics, their partition counts and replication factors.
const TOPICS: [(&str, i32, i32); 3] = [("orders", 6, 3), ("events", 8, 2), ("audit", 3, 2)];
/// Generous bound for anything the cluster has to settle.
const SETTLE: Duration = Duration::from_secs(60);

/// One cluster at a time on this machine.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building a runtime")
}

/// Replicas and current leaders per broker, over every partition of the cluster.
#[derive(Debug, Default)]
struct Spread {
    replicas: BTreeMap<NodeId, usize>,
    leaders: BTreeMap<NodeId, usize>,
    /// Partitions not fully in sync, or led by a broker outside the counted ones.
    unsettled: Vec<String>,
}

fn spread_of(cluster: &Cluster, node: NodeId, brokers: &[NodeId]) -> Result<Spread> {
    let metadata = cluster.metadata(node, None)?;
    let mut spread = Spread {
        replicas: brokers.iter().map(|b| (*b, 0)).collect(),
        leaders: brokers.iter().map(|b| (*b, 0)).collect(),
        unsettled: Vec::new(),
    };
    for topic in &metadata.topics {
        let name = topic
            .name
            .as_ref()
            .map(|n| n.0.to_string())
            .unwrap_or_default();
        for p in &topic.partitions {
            let replicas: Vec<i32> = p.replica_nodes.iter().map(|b| b.0).collect();
            let isr: BTreeSet<i32> = p.isr_nodes.iter().map(|b| b.0).collect();
            for r in &replicas {
                *spread.replicas.entry(*r).or_default() += 1;
            }
            *spread.leaders.entry(p.leader_id.0).or_default() += 1;
            if isr != replicas.iter().copied().collect() || !brokers.contains(&p.leader_id.0) {
                spread.unsettled.push(format!(
                    "{name}-{}: replicas {replicas:?} isr {isr:?} leader {}",
                    p.partition_index, p.leader_id.0
                ));
            }
        }
    }
    Ok(spread)
}

fn within_one(counts: &BTreeMap<NodeId, usize>) -> bool {
    let min = counts.values().min().copied().unwrap_or(0);
    let max = counts.values().max().copied().unwrap_or(0);
    max - min <= 1
}

/// Records `<topic>-<prefix>-<n>`, round-robin over partitions, from an idempotent
/// `acks=all` producer, until stopped; a group consumer reads all topics meanwhile.
struct Traffic {
    stop: Arc<AtomicBool>,
    /// Set once every delivery is reported: the consumer may stop when it has caught up.
    produced: Arc<AtomicBool>,
    producer: thread::JoinHandle<Result<Vec<Delivery>>>,
    consumer: thread::JoinHandle<Result<Vec<String>>>,
}

fn producer(cluster: &Cluster) -> Result<ThreadedProducer<RecordingContext>> {
    cluster
        .client_config()
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "90000")
        .create_with_context(RecordingContext::default())
        .context("creating a producer")
}

fn send(
    producer: &ThreadedProducer<RecordingContext>,
    topic: &str,
    partition: i32,
    value: &str,
) -> Result<()> {
    let mut record = BaseRecord::<(), _, _>::with_opaque_to(topic, Box::new(Instant::now()))
        .payload(value)
        .partition(partition);
    let deadline = Instant::now() + SETTLE;
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
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

/// A few thousand records per topic before anything moves, so moves copy data.
fn prefill(cluster: &Cluster) -> Result<Vec<Delivery>> {
    let producer = producer(cluster)?;
    let padding = "p".repeat(200);
    let mut count = 0;
    for (topic, partitions, _) in TOPICS {
        for n in 0..1500 {
            let partition = n % partitions;
            send(
                &producer,
                topic,
                partition,
                &format!("{topic}-fill-{n}-{padding}"),
            )?;
            count += 1;
        }
    }
    producer.flush(Duration::from_secs(90))?;
    let deliveries = producer.context().log.snapshot();
    ensure!(
        deliveries.len() == count,
        "{} of {count} reported",
        deliveries.len()
    );
    if let Some(failed) = deliveries.iter().find(|d| d.error.is_some()) {
        bail!(
            "prefill delivery of {} failed: {:?}",
            failed.value,
            failed.error
        );
    }
    Ok(deliveries)
}

fn start_traffic(cluster: &Cluster) -> Result<Traffic> {
    let stop = Arc::new(AtomicBool::new(false));
    let producer = producer(cluster)?;
    let consumer: BaseConsumer = cluster
        .client_config()
        .set("group.id", "balance-traffic")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "500")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .create()?;
    let topics: Vec<&str> = TOPICS.iter().map(|t| t.0).collect();
    consumer.subscribe(&topics)?;
    let stopping = Arc::clone(&stop);
    let producer = thread::spawn(move || {
        let interval = Duration::from_millis(5);
        let mut n: u64 = 0;
        while !stopping.load(Ordering::Relaxed) {
            for (topic, partitions, _) in TOPICS {
                let partition = i32::try_from(n % u64::try_from(partitions)?)?;
                let value = format!("{topic}-live-{n}");
                let record =
                    BaseRecord::<(), _, _>::with_opaque_to(topic, Box::new(Instant::now()))
                        .payload(&value)
                        .partition(partition);
                // A full queue skips the record: it is never acknowledged, so never expected.
                let _ = producer.send(record);
            }
            n += 1;
            thread::sleep(interval);
        }
        producer.flush(Duration::from_secs(120))?;
        Ok(producer.context().log.snapshot())
    });
    let produced = Arc::new(AtomicBool::new(false));
    let finishing = Arc::clone(&produced);
    let consumer = thread::spawn(move || {
        let mut read = Vec::new();
        let mut checked = Instant::now();
        let mut deadline = None;
        loop {
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
                read.push(
                    String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned(),
                );
            }
            if !finishing.load(Ordering::Relaxed) || checked.elapsed() < Duration::from_secs(1) {
                continue;
            }
            checked = Instant::now();
            let deadline = *deadline.get_or_insert(Instant::now() + SETTLE);
            if caught_up(&consumer)? || Instant::now() > deadline {
                return Ok(read);
            }
        }
    });
    Ok(Traffic {
        stop,
        produced,
        producer,
        consumer,
    })
}

/// Whether the consumer is assigned every partition and positioned at its end.
fn caught_up(consumer: &BaseConsumer) -> Result<bool> {
    let total: i32 = TOPICS.iter().map(|t| t.1).sum();
    let positions = consumer.position()?;
    if positions.count() < usize::try_from(total)? {
        return Ok(false);
    }
    for element in positions.elements() {
        let (_, high) = consumer.fetch_watermarks(
            element.topic(),
            element.partition(),
            Duration::from_secs(5),
        )?;
        let at_end = match element.offset() {
            Offset::Offset(position) => position >= high,
            _ => high == 0,
        };
        if !at_end {
            return Ok(false);
        }
    }
    Ok(true)
}

impl Traffic {
    fn finish(self) -> Result<(Vec<Delivery>, Vec<String>)> {
        self.stop.store(true, Ordering::Relaxed);
        let deliveries = self
            .producer
            .join()
            .map_err(|_| anyhow::anyhow!("producer thread panicked"))??;
        self.produced.store(true, Ordering::Relaxed);
        let read = self
            .consumer
            .join()
            .map_err(|_| anyhow::anyhow!("consumer thread panicked"))??;
        Ok((deliveries, read))
    }
}

/// Every acknowledged record is in the topics exactly once (the producer is idempotent), and
/// the live consumer saw every live one.
fn check_nothing_lost(cluster: &Cluster, acked: &[Delivery], consumed: &[String]) -> Result<()> {
    let mut stored: HashMap<String, (String, i64)> = HashMap::new();
    for (topic, partitions, _) in TOPICS {
        for (partition, offset, value) in cluster.read_all(topic, partitions)? {
            let at = (format!("{topic}-{partition}"), offset);
            if let Some(first) = stored.insert(value.clone(), at.clone()) {
                // Not a loss, but an idempotent producer must never write a record twice.
                bail!(
                    "{value} stored twice, at {}@{} and {}@{}, by an idempotent producer",
                    first.0,
                    first.1,
                    at.0,
                    at.1
                );
            }
        }
    }
    let lost: Vec<&str> = acked
        .iter()
        .filter(|d| d.error.is_none() && !stored.contains_key(&d.value))
        .map(|d| d.value.as_str())
        .collect();
    ensure!(
        lost.is_empty(),
        "{} acknowledged records lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    let consumed: HashSet<&str> = consumed.iter().map(String::as_str).collect();
    let missed: Vec<&str> = acked
        .iter()
        .filter(|d| d.error.is_none() && d.value.contains("-live-"))
        .map(|d| d.value.as_str())
        .filter(|v| !consumed.contains(v))
        .collect();
    ensure!(
        missed.is_empty(),
        "the live consumer missed {} acknowledged records, e.g. {:?}",
        missed.len(),
        &missed[..missed.len().min(5)]
    );
    Ok(())
}

/// Waits until some running broker shows every partition fully in sync, led from `brokers`,
/// and returns the counts.
fn settled(cluster: &mut Cluster, brokers: &[NodeId]) -> Result<Spread> {
    cluster.wait_until("every partition is in sync", SETTLE, |c| {
        let node = *c.up().first().context("no broker is up")?;
        let spread = spread_of(c, node, brokers)?;
        ensure!(spread.unsettled.is_empty(), "{:?}", spread.unsettled);
        Ok(spread)
    })
}

/// `oxbow-operator balance` with these arguments; its JSON report.
fn balance_command(cluster: &Cluster, args: &[&str]) -> Result<serde_json::Value> {
    let output = Command::new(env!("CARGO_BIN_EXE_oxbow-operator"))
        .arg("balance")
        .arg("--bootstrap")
        .arg(cluster.bootstrap())
        .args([
            "--output",
            "json",
            "--poll-ms",
            "200",
            "--timeout-secs",
            "120",
        ])
        .args(args)
        .output()
        .context("running oxbow-operator balance")?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("--- oxbow-operator balance {args:?} ---\n{stderr}");
    ensure!(
        output.status.success(),
        "oxbow-operator balance {args:?} failed ({}):\n{stderr}",
        output.status
    );
    serde_json::from_slice(&output.stdout).context("reading the JSON report")
}

fn scenario(cluster: &mut Cluster) -> Result<()> {
    // Brokers 4 and 5 join later: until then the cluster is the three voters.
    cluster.stop(4)?;
    cluster.stop(5)?;
    cluster.wait_for_brokers(3, SETTLE)?;
    for (topic, partitions, replication) in TOPICS {
        let mut configs = Vec::new();
        if replication == 3 {
            configs.push(("min.insync.replicas", "2"));
        }
        cluster.create_topic(topic, partitions, replication, &configs)?;
    }
    let mut acked = prefill(cluster)?;
    let traffic = start_traffic(cluster)?;
    thread::sleep(Duration::from_secs(2));

    // Scale up: two empty brokers join, the balancer moves replicas and leaders onto them.
    cluster.start_nodes(&[4, 5])?;
    cluster.wait_for_brokers(5, SETTLE)?;
    let all = [1, 2, 3, 4, 5];
    let before = settled(cluster, &all)?;
    ensure!(
        before.replicas[&4] == 0 && before.replicas[&5] == 0,
        "{before:?}"
    );
    let plan = balance_command(cluster, &["--dry-run"])?;
    let planned_moves = plan["plan"]["moves"].as_array().map_or(0, Vec::len);
    ensure!(planned_moves > 0, "the dry run plans nothing: {plan}");
    ensure!(
        settled(cluster, &all)?.replicas[&4] == 0,
        "a dry run moved replicas"
    );
    let started = Instant::now();
    let report = balance_command(cluster, &["--max-moves", "4"])?;
    eprintln!(
        "scale-up: {} reassignments in {:.1?}: {}",
        report["reassignments_submitted"],
        started.elapsed(),
        report["after"]
    );
    let after = settled(cluster, &all)?;
    ensure!(
        within_one(&after.replicas),
        "replicas per broker after scale-up: {:?}",
        after.replicas
    );
    ensure!(
        within_one(&after.leaders),
        "leaders per broker after scale-up: {:?}",
        after.leaders
    );
    let again = balance_command(cluster, &["--dry-run"])?;
    ensure!(
        again["plan"]["moves"].as_array().is_some_and(Vec::is_empty),
        "a balanced cluster still has moves planned: {}",
        again["plan"]
    );

    // Drain: a voter and a new broker give up every replica.
    let rt = runtime()?;
    let bootstrap = cluster.bootstrap();
    let refused = rt.block_on(executor::run(
        &bootstrap,
        &Goal::Rebalance {
            brokers: None,
            drain: vec![1, 2, 5],
        },
        &Settings::default(),
        true,
        &mut |_| {},
    ));
    match refused {
        Err(executor::ExecError::Plan(PlanError::ReplicationFactorExceedsBrokers {
            replication_factor: 3,
            remaining: 2,
            ..
        })) => {}
        other => bail!("draining three of five brokers under RF 3 topics: {other:?}"),
    }
    let drain = Goal::Rebalance {
        brokers: None,
        drain: vec![2, 5],
    };
    let settings = Settings {
        max_moves: 4,
        poll_interval: Duration::from_millis(200),
        timeout: Duration::from_secs(120),
        ..Settings::default()
    };
    let started = Instant::now();
    let report = rt
        .block_on(executor::run(
            &bootstrap,
            &drain,
            &settings,
            false,
            &mut |event| {
                if let executor::Event::Submitted { moves } = event {
                    for m in moves {
                        eprintln!(
                            "drain: {}-{} {:?} -> {:?}",
                            m.topic, m.partition, m.from, m.to
                        );
                    }
                }
            },
        ))
        .context("draining brokers 2 and 5")?;
    eprintln!(
        "drain: {} reassignments in {:.1?}",
        report.reassignments_submitted,
        started.elapsed()
    );
    let remaining = [1, 3, 4];
    let after = settled(cluster, &remaining)?;
    for gone in [2, 5] {
        ensure!(
            after.replicas.get(&gone).copied().unwrap_or(0) == 0,
            "broker {gone} still holds replicas: {:?}",
            after.replicas
        );
        ensure!(
            after.leaders.get(&gone).copied().unwrap_or(0) == 0,
            "broker {gone} still leads: {:?}",
            after.leaders
        );
    }
    let kept: BTreeMap<NodeId, usize> = remaining.iter().map(|b| (*b, after.replicas[b])).collect();
    let led: BTreeMap<NodeId, usize> = remaining.iter().map(|b| (*b, after.leaders[b])).collect();
    ensure!(within_one(&kept), "replicas after the drain: {kept:?}");
    ensure!(within_one(&led), "leaders after the drain: {led:?}");

    thread::sleep(Duration::from_secs(2));
    let (live, consumed) = traffic.finish()?;
    let failed = live.iter().filter(|d| d.error.is_some()).count();
    eprintln!(
        "{} live records acknowledged, {failed} failed, {} consumed",
        live.len() - failed,
        consumed.len()
    );
    acked.extend(live);
    check_nothing_lost(cluster, &acked, &consumed)
}

#[test]
fn scaling_up_and_draining_a_live_cluster_balances_it_and_loses_nothing() -> Result<()> {
    let _serial = serial();
    let binary = harness::broker_binary()?;
    let options = ClusterOptions::new(binary)
        .brokers(5)
        .voters(3)
        .set("broker.session.timeout.ms", "3000")
        .set("broker.heartbeat.interval.ms", "500")
        .set("offsets.topic.num.partitions", "4");
    let started = Instant::now();
    let mut cluster = Cluster::start(options)?;
    let outcome = scenario(&mut cluster);
    eprintln!("scenario finished after {:.1?}", started.elapsed());
    cluster.explain(outcome)
}

/// `follower.replication.throttled.rate` as broker `node` describes it: value and source.
fn throttle_on(cluster: &Cluster, node: NodeId) -> Result<(Option<String>, i8)> {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::protocol::StrBytes;
    let request = kafka_protocol::messages::DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(4)
            .with_resource_name(StrBytes::from_string(node.to_string()))
            .with_configuration_keys(Some(vec![StrBytes::from_static_str(
                executor::THROTTLE_SETTING,
            )])),
    ]);
    let response = cluster.request(node, &request, 1)?;
    let result = response.results.first().context("no result")?;
    ensure!(result.error_code == 0, "DescribeConfigs failed: {result:?}");
    let config = result.configs.first().context("setting not described")?;
    Ok((
        config.value.as_ref().map(|v| v.to_string()),
        config.config_source,
    ))
}

/// A throttled run sets the rate (a dynamic broker setting, DescribeConfigs source 2) on every
/// broker receiving a replica before its moves are submitted, and deletes it when done.
#[test]
fn a_throttled_run_sets_the_rate_on_receiving_brokers_and_removes_it_at_the_end() -> Result<()> {
    const RATE: u64 = 500_000;
    let _serial = serial();
    let binary = harness::broker_binary()?;
    let options = ClusterOptions::new(binary)
        .brokers(3)
        .voters(1)
        .set("broker.session.timeout.ms", "3000")
        .set("broker.heartbeat.interval.ms", "500");
    let mut cluster = Cluster::start(options)?;
    let outcome = (|| -> Result<()> {
        let cluster = &mut cluster;
        cluster.wait_for_brokers(3, SETTLE)?;
        let topic = "throttled-moves";
        cluster.create_topic_assigned(topic, &[&[1], &[1]], &[])?;
        let producer = producer(cluster)?;
        for n in 0..400 {
            send(&producer, topic, n % 2, &format!("{n:0>1000}"))?;
        }
        producer.flush(Duration::from_secs(30))?;
        for node in [1, 2, 3] {
            ensure!(
                throttle_on(cluster, node)? == (Some("-1".to_string()), 5),
                "broker {node} is throttled before the run"
            );
        }
        let settings = Settings {
            max_moves: 1,
            poll_interval: Duration::from_millis(200),
            timeout: Duration::from_secs(120),
            throttle: Some(RATE),
            ..Settings::default()
        };
        let goal = Goal::ReplicationFactor {
            topic: topic.to_string(),
            replication_factor: 2,
        };
        let mut checked = Vec::new();
        let mut problems = Vec::new();
        let mut removed = BTreeSet::new();
        let report = runtime()?
            .block_on(executor::run(
                &cluster.bootstrap(),
                &goal,
                &settings,
                false,
                &mut |event| match event {
                    executor::Event::Submitted { moves } => {
                        for m in moves {
                            for to in m.to.iter().filter(|r| !m.from.contains(r)) {
                                match throttle_on(cluster, *to) {
                                    Ok(found) if found == (Some(RATE.to_string()), 2) => {
                                        checked.push(*to)
                                    }
                                    other => problems.push(format!(
                                        "broker {to} receives {}-{} with throttle {other:?}",
                                        m.topic, m.partition
                                    )),
                                }
                            }
                        }
                    }
                    executor::Event::Throttled {
                        brokers,
                        rate: None,
                    } => removed.extend(brokers.iter().copied()),
                    _ => {}
                },
            ))
            .context("the throttled run")?;
        ensure!(problems.is_empty(), "{problems:?}");
        ensure!(
            report.reassignments_submitted == 2 && checked.len() == 2,
            "expected two moves, each to a throttled broker: {} submitted, checked {checked:?}",
            report.reassignments_submitted
        );
        let receivers: BTreeSet<NodeId> = checked.iter().copied().collect();
        ensure!(
            removed == receivers,
            "throttle removed from {removed:?}, set on {receivers:?}"
        );
        for node in [1, 2, 3] {
            let found = throttle_on(cluster, node)?;
            ensure!(
                found == (Some("-1".to_string()), 5),
                "broker {node} is still throttled after the run: {found:?}"
            );
        }
        Ok(())
    })();
    cluster.explain(outcome)
}
