//! A fault test in the style of Jepsen's Kafka workload, against three real brokers with the
//! default timing settings.
//!
//! Idempotent `acks=all` producers write unique values (`p<producer>-<seq>`, each producer
//! round-robin over the partitions) to an RF=3, `min.insync.replicas=2` topic, while a consumer
//! group consumes and commits, and a nemesis kills (SIGKILL), pauses (SIGSTOP, then SIGCONT),
//! stops (SIGTERM, a controlled shutdown) and restarts brokers, partition leaders included.
//! One round also kills two brokers at once, so the metadata quorum loses its majority.
//! At the end everything is healed, every partition is read from the beginning, and the
//! checker reports acknowledged, lost (acknowledged but not read), duplicated (read twice),
//! reordered (a producer's values out of order within a partition), acknowledged at another
//! offset than read, and unacknowledged-but-present records; every record the group read must
//! be in the final log at that offset, and committed group offsets must never go backwards.
//! For each fault it reports how long producing to the partitions was
//! unavailable: the longest gap between acknowledgements, from the fault to the next one.
//!
//! The faults cycle through a fixed schedule (seven kinds); the seed picks which broker and
//! partition each one hits. The defaults (8 rounds) finish in under two minutes in a debug
//! build. Longer runs, against a release build, keeping the brokers' logs:
//!
//! ```text
//! OXBOW_JEPSEN_ROUNDS=60 cargo test -p oxbow-broker --test jepsen -- --nocapture
//! OXBOW_BROKER_BIN=target/release/oxbow-broker OXBOW_KEEP_CLUSTER=1 OXBOW_JEPSEN_ROUNDS=28 \
//!     cargo test -p oxbow-broker --test jepsen -- --nocapture
//! ```
//!
//! Settings (environment): `OXBOW_JEPSEN_ROUNDS` (8), `OXBOW_JEPSEN_SEED` (from the clock,
//! printed), `OXBOW_JEPSEN_PRODUCERS` (3), `OXBOW_JEPSEN_PARTITIONS` (4),
//! `OXBOW_JEPSEN_RATE` (records a second per producer, 100), `OXBOW_JEPSEN_KILL_DOWN_SECS`
//! (how long a killed broker stays down, 12: longer than the 9 s session, so failover is by
//! fencing, not by the restart), `OXBOW_JEPSEN_TERMINATE_DOWN_SECS` (the same after SIGTERM,
//! 12), `OXBOW_JEPSEN_PAUSE_SECS` (3), `OXBOW_JEPSEN_LONG_PAUSE_SECS`
//! (12: the paused broker is fenced and comes back as a stale leader),
//! `OXBOW_JEPSEN_MAX_KILL_STALL_SECS` (5, the issue's target: the bound of the median
//! unavailability after a leader's SIGKILL).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, ensure, Context, Result};
use oxbow_e2e::cluster::{Cluster, ClusterOptions, Delivery, NodeId, RecordingContext};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The broker under test: this build's, or `OXBOW_BROKER_BIN` (e.g. a release build).
fn broker_bin() -> String {
    std::env::var("OXBOW_BROKER_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_oxbow-broker").to_string())
}
const TOPIC: &str = "jepsen";
const GROUP: &str = "jepsen-group";
/// How long the cluster may take to heal after a fault (restart, catch-up, ISR).
const HEAL_TIMEOUT: Duration = Duration::from_secs(60);
/// Quiet time after the cluster healed, so one fault's window does not hold the last one's
/// aftermath.
const QUIET: Duration = Duration::from_secs(2);
/// The median unavailability after a leader's SIGKILL the issue asks for (default settings).
const KILL_STALL_TARGET: Duration = Duration::from_secs(5);

fn env_or<T: FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The run's knobs, from the environment.
#[derive(Debug, Clone)]
struct Settings {
    rounds: usize,
    seed: u64,
    producers: usize,
    partitions: i32,
    rate: u32,
    kill_down: Duration,
    terminate_down: Duration,
    pause: Duration,
    long_pause: Duration,
    max_kill_stall: Duration,
}

impl Settings {
    fn from_env() -> Settings {
        let clock = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let secs = |name: &str, default: u64| Duration::from_secs(env_or(name, default));
        Settings {
            rounds: env_or("OXBOW_JEPSEN_ROUNDS", 8),
            seed: env_or("OXBOW_JEPSEN_SEED", clock),
            producers: env_or("OXBOW_JEPSEN_PRODUCERS", 3),
            partitions: env_or("OXBOW_JEPSEN_PARTITIONS", 4),
            rate: env_or("OXBOW_JEPSEN_RATE", 100),
            kill_down: secs("OXBOW_JEPSEN_KILL_DOWN_SECS", 12),
            terminate_down: secs("OXBOW_JEPSEN_TERMINATE_DOWN_SECS", 12),
            pause: secs("OXBOW_JEPSEN_PAUSE_SECS", 3),
            long_pause: secs("OXBOW_JEPSEN_LONG_PAUSE_SECS", 12),
            max_kill_stall: secs("OXBOW_JEPSEN_MAX_KILL_STALL_SECS", 5),
        }
    }
}

/// xorshift64*: reproducible choices from the printed seed, no dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        usize::try_from(x % u64::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
    }
}

/// What the nemesis does in one round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// SIGKILL a partition leader; it stays down past the session timeout.
    KillLeader,
    /// SIGSTOP a partition leader for a few seconds (less than the session timeout).
    PauseLeader,
    /// SIGTERM a partition leader (controlled shutdown); it stays down past the session
    /// timeout, as a broker of a rolling restart may.
    TerminateLeader,
    /// SIGKILL a partition leader and restart it at once (a crash loop).
    KillRestartLeader,
    /// SIGSTOP a partition leader past the session timeout: it is fenced, then comes back
    /// believing it still leads.
    LongPauseLeader,
    /// SIGKILL any broker (a follower, the controller), down past the session timeout.
    KillAny,
    /// SIGKILL a partition leader and another broker: the metadata quorum loses its majority
    /// and nothing can be elected until both are back (started together).
    KillTwo,
}

const SCHEDULE: [Fault; 7] = [
    Fault::KillLeader,
    Fault::PauseLeader,
    Fault::TerminateLeader,
    Fault::KillRestartLeader,
    Fault::LongPauseLeader,
    Fault::KillAny,
    Fault::KillTwo,
];

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::KillLeader => "SIGKILL leader",
            Fault::PauseLeader => "SIGSTOP leader",
            Fault::TerminateLeader => "SIGTERM leader",
            Fault::KillRestartLeader => "SIGKILL+restart leader",
            Fault::LongPauseLeader => "long SIGSTOP leader",
            Fault::KillAny => "SIGKILL any broker",
            Fault::KillTwo => "SIGKILL leader + another",
        }
    }
}

/// One fault as it happened.
#[derive(Debug, Clone)]
struct FaultRecord {
    round: usize,
    fault: Fault,
    node: NodeId,
    /// The second broker of [`Fault::KillTwo`].
    also: Option<NodeId>,
    /// Partitions `node` led when the fault began.
    led: Vec<i32>,
    was_controller: bool,
    start: Instant,
    /// When the cluster was whole again (full ISR).
    healed: Instant,
    /// Where this fault's window ends: the next fault, or the end of the run.
    window_end: Instant,
}

/// One OffsetFetch answer of the group consumer: partition -> committed offset (-1: none).
type CommittedSnapshot = (Instant, BTreeMap<i32, i64>);

#[test]
fn idempotent_acks_all_writes_survive_kills_pauses_and_restarts_of_leaders() -> Result<()> {
    let settings = Settings::from_env();
    eprintln!("jepsen settings: {settings:?}");
    let started = Instant::now();
    let mut cluster = Cluster::start(ClusterOptions::new(broker_bin()))?;
    let outcome = run(&mut cluster, &settings, started);
    eprintln!("jepsen run took {:.1?}", started.elapsed());
    cluster.explain(outcome)
}

fn run(cluster: &mut Cluster, settings: &Settings, started: Instant) -> Result<()> {
    cluster.create_topic(
        TOPIC,
        settings.partitions,
        3,
        &[("min.insync.replicas", "2")],
    )?;
    let stop = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..settings.producers)
        .map(|p| spawn_producer(cluster.client_config(), p, settings, Arc::clone(&stop)))
        .collect::<Result<_>>()?;
    let committed = Arc::new(Mutex::new(Vec::<CommittedSnapshot>::new()));
    let group = spawn_group_consumer(
        cluster.client_config(),
        Arc::clone(&committed),
        Arc::clone(&stop),
    )?;
    let log = |what: String| eprintln!("[{:>6.1?}] {what}", started.elapsed());

    thread::sleep(Duration::from_secs(3));
    let mut rng = Rng::new(settings.seed);
    let mut faults: Vec<FaultRecord> = Vec::new();
    for round in 0..settings.rounds {
        let fault = SCHEDULE[round % SCHEDULE.len()];
        let record = nemesis(cluster, settings, &mut rng, round, fault, &log)?;
        if let Some(previous) = faults.last_mut() {
            previous.window_end = record.start;
        }
        faults.push(record);
    }

    log("healing and stopping the clients".to_string());
    cluster.heal()?;
    cluster.wait_for_full_isr(TOPIC, HEAL_TIMEOUT)?;
    thread::sleep(QUIET);
    let run_end = Instant::now();
    if let Some(last) = faults.last_mut() {
        last.window_end = run_end;
    }
    stop.store(true, Ordering::Relaxed);
    let mut deliveries = Vec::new();
    let mut sent = 0usize;
    for producer in producers {
        let (count, log) = producer
            .join()
            .map_err(|_| anyhow!("producer thread panicked"))??;
        sent += count;
        deliveries.extend(log);
    }
    let (group_read, commit_errors) = group
        .join()
        .map_err(|_| anyhow!("group consumer thread panicked"))??;

    log("reading every partition from the beginning".to_string());
    let read = read_everything(cluster, settings.partitions)?;
    let mut check = Check::new(sent, &deliveries, &read);
    check.check_group_reads(&group_read, &read);
    let committed = committed
        .lock()
        .map_err(|_| anyhow!("committed offsets poisoned"))?
        .clone();
    let backwards = offsets_going_backwards(&committed);
    let rows: Vec<FaultRow> = faults
        .iter()
        .map(|f| FaultRow::new(f, &deliveries, settings.partitions))
        .collect();

    let kill_stalls: Vec<Duration> = rows
        .iter()
        .filter(|r| matches!(r.record.fault, Fault::KillLeader | Fault::KillAny))
        .filter_map(|r| r.led_stall)
        .collect();
    let kill_median = median(&kill_stalls);
    let terminate_failures: usize = rows
        .iter()
        .filter(|r| r.record.fault == Fault::TerminateLeader)
        .map(|r| r.failed)
        .sum();

    println!(
        "{}",
        summary(
            settings,
            &check,
            &rows,
            &committed,
            &backwards,
            commit_errors,
            kill_median,
            run_end - started
        )
    );

    ensure!(
        check.lost.is_empty(),
        "lost acknowledged records: {:?}",
        sample(&check.lost)
    );
    ensure!(
        check.duplicated.is_empty(),
        "duplicated records: {:?}",
        sample(&check.duplicated)
    );
    ensure!(
        check.reordered.is_empty(),
        "reordered records: {:?}",
        sample(&check.reordered)
    );
    ensure!(
        check.misplaced.is_empty(),
        "records read at another offset than acknowledged: {:?}",
        sample(&check.misplaced)
    );
    ensure!(
        backwards.is_empty(),
        "committed offsets went backwards: {backwards:?}"
    );
    ensure!(
        terminate_failures == 0,
        "{terminate_failures} writes failed around controlled shutdowns"
    );
    if let Some(median) = kill_median {
        ensure!(
            median < settings.max_kill_stall,
            "median unavailability after a leader's SIGKILL {median:.1?} exceeds {:?}",
            settings.max_kill_stall
        );
    }
    ensure!(check.acknowledged > 0, "nothing was acknowledged");
    Ok(())
}

/// Runs one fault and heals it; returns what happened (its window ends at the next fault).
fn nemesis(
    cluster: &mut Cluster,
    settings: &Settings,
    rng: &mut Rng,
    round: usize,
    fault: Fault,
    log: &impl Fn(String),
) -> Result<FaultRecord> {
    let partitions = cluster.wait_for_full_isr(TOPIC, HEAL_TIMEOUT)?;
    let asked = *cluster.up().first().context("no broker is running")?;
    let controller = cluster.metadata(asked, Some(&[]))?.controller_id.0;
    let node = match fault {
        Fault::KillAny => cluster.node_ids()[rng.below(3)],
        _ => partitions[rng.below(partitions.len())].leader,
    };
    let led: Vec<i32> = partitions
        .iter()
        .filter(|p| p.leader == node)
        .map(|p| p.partition)
        .collect();
    let also = (fault == Fault::KillTwo).then(|| {
        let others: Vec<NodeId> = cluster
            .node_ids()
            .into_iter()
            .filter(|n| *n != node)
            .collect();
        others[rng.below(others.len())]
    });
    let role = if node == controller {
        ", controller"
    } else {
        ""
    };
    log(format!(
        "round {round}: {} on broker {node}{} (leads {led:?}{role})",
        fault.name(),
        also.map(|n| format!(" and {n}")).unwrap_or_default(),
    ));
    let start = Instant::now();
    match fault {
        Fault::KillLeader | Fault::KillAny => {
            cluster.kill(node)?;
            thread::sleep(settings.kill_down);
            cluster.restart(node)?;
        }
        Fault::KillTwo => {
            let other = also.context("a second broker")?;
            cluster.kill(node)?;
            cluster.kill(other)?;
            thread::sleep(settings.kill_down);
            cluster.start_nodes(&[node, other])?;
        }
        Fault::KillRestartLeader => {
            cluster.kill(node)?;
            thread::sleep(Duration::from_secs(1));
            cluster.restart(node)?;
        }
        Fault::PauseLeader | Fault::LongPauseLeader => {
            cluster.pause(node)?;
            thread::sleep(if fault == Fault::PauseLeader {
                settings.pause
            } else {
                settings.long_pause
            });
            cluster.resume(node)?;
        }
        Fault::TerminateLeader => {
            let status = cluster.stop(node)?;
            ensure!(
                status.success(),
                "broker {node} exited with {status} on SIGTERM"
            );
            log(format!(
                "broker {node} stopped after {:.1?}",
                start.elapsed()
            ));
            thread::sleep(settings.terminate_down);
            cluster.restart(node)?;
        }
    }
    cluster.wait_for_full_isr(TOPIC, HEAL_TIMEOUT)?;
    let healed = Instant::now();
    log(format!(
        "round {round}: healed after {:.1?}",
        healed - start
    ));
    thread::sleep(QUIET);
    Ok(FaultRecord {
        round,
        fault,
        node,
        also,
        led,
        was_controller: node == controller,
        start,
        healed,
        window_end: Instant::now(),
    })
}

type ProducerHandle = thread::JoinHandle<Result<(usize, Vec<Delivery>)>>;

/// A paced idempotent producer writing `p<index>-<seq>`, seq round-robin over partitions.
fn spawn_producer(
    mut config: ClientConfig,
    index: usize,
    settings: &Settings,
    stop: Arc<AtomicBool>,
) -> Result<ProducerHandle> {
    let producer: ThreadedProducer<RecordingContext> = config
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        // Far above any failover, so a record fails only when something is really wrong.
        .set("message.timeout.ms", "60000")
        .create_with_context(RecordingContext::default())
        .context("creating a producer")?;
    let partitions = settings.partitions;
    let interval = Duration::from_secs(1) / settings.rate.max(1);
    Ok(thread::spawn(move || {
        let mut seq: u64 = 0;
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let value = format!("p{index}-{seq}");
            let partition = i32::try_from(seq % u64::try_from(partitions)?)?;
            let record = BaseRecord::<(), _, _>::with_opaque_to(TOPIC, Box::new(Instant::now()))
                .payload(&value)
                .partition(partition);
            match producer.send(record) {
                Ok(()) => seq += 1,
                // The local queue is full while the cluster is unavailable: try again later,
                // with the same sequence number.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {}
                Err((e, _)) => {
                    let fatal = producer.client().fatal_error();
                    return Err(anyhow!(
                        "producer {index} could not send {value}: {e} (fatal error: {fatal:?})"
                    ));
                }
            }
            next += interval;
            match next.checked_duration_since(Instant::now()) {
                Some(wait) => thread::sleep(wait),
                // Fell behind (a stall blocked send): don't burst to catch up.
                None => next = Instant::now(),
            }
        }
        // Records still undelivered after this are unacknowledged: the checker counts them.
        let _ = producer.flush(Duration::from_secs(70));
        let sent = usize::try_from(seq)?;
        Ok((sent, producer.context().log.snapshot()))
    }))
}

/// What the group consumer read, and how many of its commits failed (during faults they may).
type GroupHandle = thread::JoinHandle<Result<(Vec<Record>, usize)>>;

/// A record read: partition, offset, value.
type Record = (i32, i64, String);

/// Consumes in the group and commits every second; records each OffsetFetch answer.
fn spawn_group_consumer(
    mut config: ClientConfig,
    committed: Arc<Mutex<Vec<CommittedSnapshot>>>,
    stop: Arc<AtomicBool>,
) -> Result<GroupHandle> {
    let consumer: BaseConsumer = config
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .context("creating the group consumer")?;
    consumer.subscribe(&[TOPIC])?;
    Ok(thread::spawn(move || {
        let mut last_commit = Instant::now();
        let mut failures = 0usize;
        let mut read = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            // Errors (a broker down) are expected; the consumer goes on.
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
                let value =
                    String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
                read.push((message.partition(), message.offset(), value));
            }
            if last_commit.elapsed() < Duration::from_secs(1) {
                continue;
            }
            last_commit = Instant::now();
            if consumer.assignment().map(|a| a.count()).unwrap_or(0) == 0 {
                continue;
            }
            if consumer.commit_consumer_state(CommitMode::Sync).is_err() {
                failures += 1;
            }
            if let Ok(list) = consumer.committed(Duration::from_secs(5)) {
                let snapshot: BTreeMap<i32, i64> = list
                    .elements()
                    .iter()
                    .map(|e| {
                        let offset = match e.offset() {
                            Offset::Offset(o) => o,
                            _ => -1,
                        };
                        (e.partition(), offset)
                    })
                    .collect();
                if let Ok(mut all) = committed.lock() {
                    all.push((Instant::now(), snapshot));
                }
            }
        }
        Ok((read, failures))
    }))
}

/// Every record of every partition, in offset order: (partition, offset, value).
fn read_everything(cluster: &Cluster, partitions: i32) -> Result<Vec<Record>> {
    let consumer: BaseConsumer = cluster
        .client_config()
        .set("group.id", "jepsen-checker")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("check.crcs", "true")
        .create()?;
    let mut ends = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        let (_, high) = consumer
            .fetch_watermarks(TOPIC, partition, Duration::from_secs(10))
            .with_context(|| format!("high watermark of {TOPIC}-{partition}"))?;
        ends.insert(partition, high);
        assignment.add_partition_offset(TOPIC, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut next: BTreeMap<i32, i64> = (0..partitions).map(|p| (p, 0)).collect();
    let mut records = Vec::new();
    let mut last_error = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    while next.iter().any(|(p, n)| *n < ends[p]) {
        ensure!(
            Instant::now() < deadline,
            "reading back stalled at {next:?} of {ends:?}; last error {last_error:?}"
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                let value =
                    String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
                next.insert(message.partition(), message.offset() + 1);
                records.push((message.partition(), message.offset(), value));
            }
            Some(Err(e)) => last_error = Some(e),
            None => {}
        }
    }
    Ok(records)
}

/// The checker's findings.
#[derive(Debug, Default)]
struct Check {
    sent: usize,
    acknowledged: usize,
    failed: usize,
    /// Sent, but no delivery report by the end (should not happen after a flush).
    unreported: usize,
    read: usize,
    lost: Vec<String>,
    duplicated: Vec<String>,
    reordered: Vec<String>,
    misplaced: Vec<String>,
    unacknowledged_present: usize,
    /// Records the group consumer read.
    group_read: usize,
    /// Read by the group consumer, but not in the final log at that offset: a read of
    /// something that was never committed.
    phantom: Vec<String>,
}

impl Check {
    fn new(sent: usize, deliveries: &[Delivery], read: &[Record]) -> Check {
        let mut check = Check {
            sent,
            read: read.len(),
            ..Check::default()
        };
        let mut where_read: HashMap<&str, (i32, i64)> = HashMap::new();
        // Last sequence number read per (producer, partition).
        let mut last_seq: HashMap<(&str, i32), u64> = HashMap::new();
        for (partition, offset, value) in read {
            if where_read.insert(value, (*partition, *offset)).is_some() {
                check
                    .duplicated
                    .push(format!("{value} (again at {partition}/{offset})"));
            }
            if let Some((producer, seq)) = value
                .split_once('-')
                .and_then(|(p, s)| s.parse::<u64>().ok().map(|s| (p, s)))
            {
                if let Some(previous) = last_seq.insert((producer, *partition), seq) {
                    if seq <= previous {
                        check.reordered.push(format!(
                            "{value} at {partition}/{offset} after {producer}-{previous}"
                        ));
                    }
                }
            }
        }
        let mut reported: HashMap<&str, &Delivery> = HashMap::new();
        for delivery in deliveries {
            reported.insert(&delivery.value, delivery);
            match delivery.error {
                None => {
                    check.acknowledged += 1;
                    match where_read.get(delivery.value.as_str()) {
                        None => check.lost.push(format!(
                            "{} acknowledged at {}/{}",
                            delivery.value, delivery.partition, delivery.offset
                        )),
                        Some(at) if *at != (delivery.partition, delivery.offset) => {
                            check.misplaced.push(format!(
                                "{} acknowledged at {}/{}, read at {}/{}",
                                delivery.value, delivery.partition, delivery.offset, at.0, at.1
                            ));
                        }
                        Some(_) => {}
                    }
                }
                Some(_) => {
                    check.failed += 1;
                    if where_read.contains_key(delivery.value.as_str()) {
                        check.unacknowledged_present += 1;
                    }
                }
            }
        }
        check.unreported = sent.saturating_sub(reported.len());
        check.unacknowledged_present += where_read
            .keys()
            .filter(|v| !reported.contains_key(*v))
            .count();
        check
    }
}

impl Check {
    fn check_group_reads(&mut self, group_read: &[Record], log: &[Record]) {
        let at: HashMap<(i32, i64), &str> =
            log.iter().map(|(p, o, v)| ((*p, *o), v.as_str())).collect();
        self.group_read = group_read.len();
        for (partition, offset, value) in group_read {
            if at.get(&(*partition, *offset)) != Some(&value.as_str()) {
                self.phantom.push(format!(
                    "{value} read by the group at {partition}/{offset}, the log has {:?}",
                    at.get(&(*partition, *offset))
                ));
            }
        }
    }
}

/// Per-partition committed offsets that went down (or vanished) from one OffsetFetch to a
/// later one.
fn offsets_going_backwards(snapshots: &[CommittedSnapshot]) -> Vec<String> {
    let mut highest: BTreeMap<i32, i64> = BTreeMap::new();
    let mut backwards = Vec::new();
    let first = snapshots.first().map(|(t, _)| *t);
    for (at, snapshot) in snapshots {
        for (partition, offset) in snapshot {
            let top = highest.entry(*partition).or_insert(-1);
            if *offset < *top {
                backwards.push(format!(
                    "partition {partition}: {top} then {offset} at +{:.1?}",
                    first.map(|f| *at - f).unwrap_or_default()
                ));
            }
            *top = (*top).max(*offset);
        }
    }
    backwards
}

/// A fault with its measured effect on producing.
struct FaultRow {
    record: FaultRecord,
    /// Longest acknowledgement gap on the partitions the faulted broker led.
    led_stall: Option<Duration>,
    /// Longest acknowledgement gap on the other partitions.
    other_stall: Option<Duration>,
    /// Failed deliveries reported in the fault's window (any partition).
    failed: usize,
}

impl FaultRow {
    fn new(record: &FaultRecord, deliveries: &[Delivery], partitions: i32) -> FaultRow {
        let window = record.start..record.window_end;
        let stall_of =
            |partition: i32| longest_gap(deliveries, partition, record.start, record.window_end);
        let led_stall = record.led.iter().map(|p| stall_of(*p)).max();
        let other_stall = (0..partitions)
            .filter(|p| !record.led.contains(p))
            .map(stall_of)
            .max();
        let failed = deliveries
            .iter()
            .filter(|d| d.error.is_some() && window.contains(&d.reported))
            .count();
        FaultRow {
            record: record.clone(),
            led_stall,
            other_stall,
            failed,
        }
    }
}

/// The longest time in [from, to) during which `partition` acknowledged nothing, counting
/// from `from` to its first acknowledgement and from its last one to `to`.
fn longest_gap(deliveries: &[Delivery], partition: i32, from: Instant, to: Instant) -> Duration {
    let mut acks: Vec<Instant> = deliveries
        .iter()
        .filter(|d| d.partition == partition && d.error.is_none())
        .map(|d| d.reported)
        .filter(|at| *at >= from && *at < to)
        .collect();
    acks.sort();
    let mut previous = from;
    let mut longest = Duration::ZERO;
    for at in acks {
        longest = longest.max(at - previous);
        previous = at;
    }
    longest.max(to - previous)
}

fn median(values: &[Duration]) -> Option<Duration> {
    let mut sorted = values.to_vec();
    sorted.sort();
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => Some(sorted[n / 2]),
        n => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2),
    }
}

/// Seconds with two decimals, or "-" for nothing measured.
fn seconds(duration: Option<Duration>) -> String {
    duration.map_or("-".to_string(), |d| format!("{:.2}s", d.as_secs_f64()))
}

fn sample(items: &[String]) -> Vec<&String> {
    items.iter().take(5).collect()
}

#[allow(clippy::too_many_arguments)]
fn summary(
    settings: &Settings,
    check: &Check,
    rows: &[FaultRow],
    committed: &[CommittedSnapshot],
    backwards: &[String],
    commit_errors: usize,
    kill_median: Option<Duration>,
    duration: Duration,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## Jepsen-style run: {} rounds, seed {}, {} producers x {} rec/s, {} partitions, RF=3, min.insync.replicas=2, {:.0?}\n",
        settings.rounds, settings.seed, settings.producers, settings.rate, settings.partitions, duration
    );
    let _ = writeln!(out, "| checker | count |\n| --- | --- |");
    for (name, value) in [
        ("sent", check.sent),
        ("acknowledged", check.acknowledged),
        ("failed (delivery error)", check.failed),
        ("unreported at the end", check.unreported),
        ("read back", check.read),
        ("lost (acknowledged, not read)", check.lost.len()),
        ("duplicated (read twice)", check.duplicated.len()),
        (
            "reordered (within producer and partition)",
            check.reordered.len(),
        ),
        (
            "read at another offset than acknowledged",
            check.misplaced.len(),
        ),
        ("unacknowledged but present", check.unacknowledged_present),
        (
            "read by the consumer group (at least once)",
            check.group_read,
        ),
        (
            "read by the group but not in the final log there",
            check.phantom.len(),
        ),
        ("committed-offset observations", committed.len()),
        ("committed offsets going backwards", backwards.len()),
        ("failed group commits", commit_errors),
    ] {
        let _ = writeln!(out, "| {name} | {value} |");
    }
    let _ = writeln!(
        out,
        "\n| round | fault | broker | led partitions | unavailable (led) | unavailable (others) | failed writes | healed after |\n| --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for row in rows {
        let r = &row.record;
        let _ = writeln!(
            out,
            "| {} | {} | {}{}{} | {:?} | {} | {} | {} | {:.1}s |",
            r.round,
            r.fault.name(),
            r.node,
            r.also.map(|n| format!(" + {n}")).unwrap_or_default(),
            if r.was_controller {
                " (controller)"
            } else {
                ""
            },
            r.led,
            seconds(row.led_stall),
            seconds(row.other_stall),
            row.failed,
            (r.healed - r.start).as_secs_f64()
        );
    }
    let mut by_fault: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    for row in rows {
        if let Some(stall) = row.led_stall {
            by_fault
                .entry(row.record.fault.name())
                .or_default()
                .push(stall);
        }
    }
    let _ = writeln!(out, "\n| fault | median unavailability of the led partitions | max | faults |\n| --- | --- | --- | --- |");
    for (name, stalls) in &by_fault {
        let _ = writeln!(
            out,
            "| {name} | {:.2}s | {:.2}s | {} |",
            median(stalls).unwrap_or_default().as_secs_f64(),
            stalls
                .iter()
                .max()
                .copied()
                .unwrap_or_default()
                .as_secs_f64(),
            stalls.len()
        );
    }
    let _ = writeln!(
        out,
        "\nMedian unavailability after SIGKILL of a leader: {} (target {:?}, CI bound {:?}).",
        kill_median.map_or("n/a".to_string(), |m| format!("{:.2}s", m.as_secs_f64())),
        KILL_STALL_TARGET,
        settings.max_kill_stall
    );
    let partitions_hit: BTreeSet<i32> = rows.iter().flat_map(|r| r.record.led.clone()).collect();
    let _ = writeln!(out, "Partitions whose leader was hit: {partitions_hit:?}.");
    out
}
