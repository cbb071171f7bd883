//! Fault tests in the style of Jepsen's Kafka workload, against three real brokers: an
//! idempotent workload with the default timing settings, the same workload under network
//! partitions, and a transactional one.
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
//! be in the final log at that offset, committed group offsets must never go backwards, and
//! once the followers have caught up every replica of a partition holds the same bytes.
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
//!
//! The second test runs the same workload with each broker in a network namespace of its own
//! (inside a sandbox: the test runs itself again under `unshare`), the nemesis dropping
//! packets between brokers with iptables while the clients still reach every one: a leader
//! isolated from its followers, the active controller isolated, a bridge (the leader cut from
//! one broker, the third seeing both), a one-way cut (what the leader sends is lost), every
//! broker isolated, a leader's links flapping, with a kill, a pause and a long pause between
//! them, a leader's links dropping a fifth of their packets (the ISR must stay whole:
//! the fault is far shorter than `replica.lag.time.max.ms`), a leader's links slowed to
//! 512 kbit/s both ways (an HTB rate limit; the ISR must stay whole too), and the second of a
//! leader's two
//! log directories failing (its disk gone: that directory goes offline alone, its partitions
//! are led elsewhere; then the broker gets a new disk and restarts), and a leader's wall clock
//! jumping 10 minutes ahead, then behind, then back (libfaketime). Each fault's row shows
//! the p99 of the `acks=all` latency of what was sent while it lasted. Its settings:
//! `OXBOW_JEPSEN_PARTITION_ROUNDS` (13, one of each), `OXBOW_JEPSEN_CUT_SECS` (12, longer
//! than the session; also how long a link stays lossy or slow), `OXBOW_JEPSEN_CUT_ALL_SECS` (8),
//! `OXBOW_JEPSEN_DISK_SECS` (8, how long the broker runs on with a failed directory),
//! `OXBOW_JEPSEN_SCHEDULE` (`every-kind`: every fault of both runs and the disk, each cycle in
//! an order the seed draws, for the long runs), and the ones above. The long run, 112 faults
//! against a release build (25 minutes on 2 cores):
//!
//! ```text
//! cargo build --release -p oxbow-broker
//! OXBOW_BROKER_BIN=target/release/oxbow-broker OXBOW_JEPSEN_SCHEDULE=every-kind \
//!     OXBOW_JEPSEN_PARTITION_ROUNDS=112 OXBOW_JEPSEN_SEED=<seed to replay> \
//!     cargo test -p oxbow-broker --test jepsen -- --nocapture \
//!     acks_all_writes_survive_network_partitions
//! ```
//!
//! Another runs the same workload on three brokers and three controller-only nodes
//! (`process.roles=controller`), each in a network namespace: the nemesis isolates and kills
//! the active controller, which leads no partition, between a leader's kill, isolation and
//! long pause.
//!
//! The third test runs a transactional workload against three brokers with a 3 s broker
//! session, each broker in a network namespace of its own (a sandbox again):
//! transactional producers write transactions of `t<producer>-<txn>-<i>-<c|a>` values
//! round-robin over the partitions, committing them (`c`) or aborting every third on purpose
//! (`a`, written before the abort); an exactly-once pipeline reads the topic with
//! read_committed in a consumer group and copies each record to an output topic, its
//! offsets sent in the same transaction, restarting (same transactional id, same group)
//! after any error. The nemesis kills, pauses (shorter and longer than the broker session),
//! cuts off from the other brokers (clients still reaching it) and stops the transaction
//! coordinators of the ids, the pipeline's group coordinator and partition leaders. After
//! the healing, read_committed may show no record of an aborted transaction, every
//! acknowledged commit whole, no transaction in part (an unacknowledged one is all or
//! nothing), and the output every committed input exactly once. The pipeline producer's
//! librdkafka log (`debug=eos,protocol,broker`) is kept, and shown when one of its calls
//! does not return. The tests never run at once (a lock). Its settings:
//! `OXBOW_JEPSEN_TXN_ROUNDS` (10, one of each fault of the schedule), `OXBOW_JEPSEN_SEED`,
//! `OXBOW_JEPSEN_TXN_PRODUCERS` (2), `OXBOW_JEPSEN_TXN_PARTITIONS` (3),
//! `OXBOW_JEPSEN_TXN_RECORDS` (6 per transaction), `OXBOW_JEPSEN_TXN_ABORT_EVERY` (3),
//! `OXBOW_JEPSEN_TXN_DOWN_SECS` (5), `OXBOW_JEPSEN_TXN_PAUSE_SECS` (2),
//! `OXBOW_JEPSEN_TXN_LONG_PAUSE_SECS` (6, also how long a broker stays cut off) and
//! `OXBOW_JEPSEN_TXN_DRAIN_SECS` (120: how long the pipeline may take to catch up). A
//! pipeline instance whose `send_offsets_to_transaction` has not returned after 60 s is given
//! up for a new one (librdkafka 2.12.1 can wait there for ever, see [`STUCK_CALL`]); the
//! summary counts them, and the producers' librdkafka log is written to a file named in the
//! output when it happens.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, ensure, Context, Result};
use oxbow_e2e::cluster::{ClientLog, Cluster, ClusterOptions, Delivery, NodeId, RecordingContext};
use oxbow_e2e::sandbox::sandboxed;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

mod support;

use support::{find_coordinator, GROUP_KEY, TRANSACTION_KEY};

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
    cut: Duration,
    cut_all: Duration,
    disk_down: Duration,
    /// Every fault kind, in an order the seed draws, instead of the test's fixed schedule.
    every_kind: bool,
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
            cut: secs("OXBOW_JEPSEN_CUT_SECS", 12),
            cut_all: secs("OXBOW_JEPSEN_CUT_ALL_SECS", 8),
            disk_down: secs("OXBOW_JEPSEN_DISK_SECS", 8),
            every_kind: std::env::var("OXBOW_JEPSEN_SCHEDULE").is_ok_and(|v| v == "every-kind"),
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
    /// Cut a partition leader off from the other brokers, both ways, past the session
    /// timeout; clients still reach it, so it goes on taking writes it cannot replicate.
    IsolateLeader,
    /// Cut the active controller off from the other brokers, past the session timeout.
    IsolateController,
    /// SIGKILL the active controller (with dedicated controllers, a node that is no broker);
    /// it stays down past the session timeout.
    KillController,
    /// Cut a partition leader and one other broker from each other; the third sees both.
    BridgeLeader,
    /// Drop what a partition leader sends to the other brokers; what they send still arrives.
    OneWayLeader,
    /// Cut every broker off from every other: no quorum, no replication.
    CutAll,
    /// Isolate a partition leader for a second, heal for a second, six times over.
    FlapLeader,
    /// Drop a fifth of the packets between a partition leader and the other brokers, both
    /// ways: replication goes on, retransmitting, and the ISR must stay whole (the outage is
    /// far shorter than `replica.lag.time.max.ms`).
    LossyLeader,
    /// Limit the links between a partition leader and the other brokers to [`SLOW_LINK_KBIT`]
    /// both ways: what exceeds the rate queues (delay) or is dropped; replication slows but the
    /// ISR must stay whole (the fault is far shorter than `replica.lag.time.max.ms`).
    SlowLeader,
    /// Jump a partition leader's wall clock [`CLOCK_JUMP`] ahead, then as far behind real
    /// time, then back (libfaketime; its monotonic clock runs on): nothing time-based may
    /// misbehave, records stamped by clients are still within the broker's timestamp bounds.
    ClockJumpLeader,
    /// A partition leader's second log directory fails (its disk is gone): that directory
    /// goes offline alone, its partitions are led elsewhere; then the broker is stopped,
    /// given a new disk and started again, and its replicas are copied back.
    FailDiskLeader,
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

/// The partition run: every network fault, with kills and pauses between them.
const PARTITION_SCHEDULE: [Fault; 13] = [
    Fault::IsolateLeader,
    Fault::KillLeader,
    Fault::IsolateController,
    Fault::PauseLeader,
    Fault::BridgeLeader,
    Fault::OneWayLeader,
    Fault::LongPauseLeader,
    Fault::CutAll,
    Fault::FlapLeader,
    Fault::LossyLeader,
    Fault::SlowLeader,
    Fault::FailDiskLeader,
    Fault::ClockJumpLeader,
];

/// The run with dedicated controllers: the active controller, a node of its own, isolated and
/// killed, between faults of the brokers.
const DEDICATED_SCHEDULE: [Fault; 5] = [
    Fault::IsolateController,
    Fault::KillLeader,
    Fault::KillController,
    Fault::IsolateLeader,
    Fault::LongPauseLeader,
];

/// How far a leader's clock jumps each way: well inside `message.timestamp.after.max.ms`
/// (an hour), so the producers' records are still accepted when it runs behind.
const CLOCK_JUMP: &str = "10m";
/// How long a leader's clock stays ahead, and then behind.
const CLOCK_JUMP_HOLD: Duration = Duration::from_secs(5);

/// The share of packets a lossy link drops.
const LINK_LOSS: f64 = 0.2;
/// The rate of a slow link, in kilobits a second: about twice what replicating the
/// producers' records takes, so queues build up in bursts.
const SLOW_LINK_KBIT: u32 = 512;

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
            Fault::IsolateLeader => "leader isolated",
            Fault::IsolateController => "controller isolated",
            Fault::KillController => "SIGKILL active controller",
            Fault::BridgeLeader => "bridge (leader cut from one)",
            Fault::OneWayLeader => "leader's packets dropped",
            Fault::CutAll => "every broker isolated",
            Fault::FlapLeader => "leader's links flapping",
            Fault::LossyLeader => "leader's links lossy (20%)",
            Fault::SlowLeader => "leader's links slow (512 kbit/s)",
            Fault::FailDiskLeader => "leader's log directory failed",
            Fault::ClockJumpLeader => "leader's clock jumped +/-10 min",
        }
    }
}

/// One fault as it happened.
#[derive(Debug, Clone)]
struct FaultRecord {
    round: usize,
    fault: Fault,
    node: NodeId,
    /// The second broker of [`Fault::KillTwo`] and [`Fault::BridgeLeader`].
    also: Option<NodeId>,
    /// Partitions `node` led when the fault began.
    led: Vec<i32>,
    was_controller: bool,
    start: Instant,
    /// When the cluster was whole again (full ISR).
    healed: Instant,
    /// Where this fault's window ends: the next fault, or the end of the run.
    window_end: Instant,
    /// Partitions seen with a shrunk ISR while a lossy or slow link lasted.
    isr_shrunk: Vec<String>,
}

/// One OffsetFetch answer of the group consumer: partition -> committed offset (-1: none).
type CommittedSnapshot = (Instant, BTreeMap<i32, i64>);

#[test]
fn idempotent_acks_all_writes_survive_kills_pauses_and_restarts_of_leaders() -> Result<()> {
    let _serial = serial();
    let settings = Settings::from_env();
    eprintln!("jepsen settings: {settings:?}");
    let started = Instant::now();
    let mut cluster = Cluster::start(ClusterOptions::new(broker_bin()))?;
    let outcome = run(&mut cluster, &settings, &SCHEDULE, started);
    eprintln!("jepsen run took {:.1?}", started.elapsed());
    cluster.explain(outcome)
}

/// The same workload and checker with the brokers in network namespaces of their own (in a
/// sandbox: the test runs itself again under `unshare`), the nemesis cutting the network
/// between them ([`PARTITION_SCHEDULE`]) between kills and pauses.
#[test]
fn acks_all_writes_survive_network_partitions_mixed_with_kills_and_pauses() {
    let _serial = serial();
    sandboxed(
        "acks_all_writes_survive_network_partitions_mixed_with_kills_and_pauses",
        || {
            let mut settings = Settings::from_env();
            settings.rounds = env_or("OXBOW_JEPSEN_PARTITION_ROUNDS", PARTITION_SCHEDULE.len());
            eprintln!("jepsen settings: {settings:?}");
            let schedule = if settings.every_kind {
                every_kind_schedule(settings.seed, settings.rounds)
            } else {
                PARTITION_SCHEDULE.to_vec()
            };
            let started = Instant::now();
            let mut cluster = Cluster::start(
                ClusterOptions::new(broker_bin())
                    .network_namespaces()
                    .two_log_dirs()
                    .fake_clocks(),
            )?;
            let outcome = run(&mut cluster, &settings, &schedule, started);
            eprintln!("jepsen run took {:.1?}", started.elapsed());
            cluster.explain(outcome)
        },
    );
}

/// The same workload and checker on three brokers and three controller-only nodes
/// (`process.roles=controller`), each in a network namespace of its own: the brokers heartbeat
/// to a controller that leads no partition, and the nemesis cuts off and kills that controller
/// as well as partition leaders ([`DEDICATED_SCHEDULE`]).
#[test]
fn acks_all_writes_survive_faults_of_dedicated_controllers_and_brokers() {
    let _serial = serial();
    sandboxed(
        "acks_all_writes_survive_faults_of_dedicated_controllers_and_brokers",
        || {
            let mut settings = Settings::from_env();
            settings.rounds = DEDICATED_SCHEDULE.len();
            eprintln!("jepsen settings: {settings:?}");
            let started = Instant::now();
            let mut cluster = Cluster::start(
                ClusterOptions::new(broker_bin())
                    .brokers(6)
                    .voters(3)
                    .dedicated_controllers()
                    .network_namespaces(),
            )?;
            let outcome = run(&mut cluster, &settings, &DEDICATED_SCHEDULE, started);
            eprintln!("jepsen run took {:.1?}", started.elapsed());
            cluster.explain(outcome)
        },
    );
}

/// `rounds` faults for the long runs (`OXBOW_JEPSEN_SCHEDULE=every-kind`): cycles of every
/// kind of both schedules, each cycle in an order drawn from `seed` (the kinds in the order
/// they first appear, which a seed's schedule depends on).
fn every_kind_schedule(seed: u64, rounds: usize) -> Vec<Fault> {
    let mut kinds: Vec<Fault> = Vec::new();
    for fault in SCHEDULE.iter().chain(&PARTITION_SCHEDULE) {
        if !kinds.contains(fault) {
            kinds.push(*fault);
        }
    }
    let mut rng = Rng::new(seed.rotate_left(17));
    let mut schedule = Vec::with_capacity(rounds + kinds.len());
    while schedule.len() < rounds {
        let mut cycle = kinds.clone();
        for i in (1..cycle.len()).rev() {
            cycle.swap(i, rng.below(i + 1));
        }
        schedule.extend(cycle);
    }
    schedule.truncate(rounds);
    schedule
}

/// The long run's schedule: every kind once per cycle, the same for the same seed.
#[test]
fn the_every_kind_schedule_runs_each_kind_once_a_cycle_in_an_order_the_seed_fixes() {
    let kinds: HashSet<&str> = SCHEDULE
        .iter()
        .chain(&PARTITION_SCHEDULE)
        .map(|f| f.name())
        .collect();
    assert_eq!(kinds.len(), 17);
    let schedule = every_kind_schedule(1_796_662_002_842_592_185, 119);
    assert_eq!(schedule.len(), 119);
    for cycle in schedule.chunks(kinds.len()) {
        let seen: HashSet<&str> = cycle.iter().map(|f| f.name()).collect();
        assert_eq!(seen, kinds, "{cycle:?}");
    }
    assert_eq!(
        schedule,
        every_kind_schedule(1_796_662_002_842_592_185, 119)
    );
    assert_ne!(schedule, every_kind_schedule(1, 119));
}

fn run(
    cluster: &mut Cluster,
    settings: &Settings,
    schedule: &[Fault],
    started: Instant,
) -> Result<()> {
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
        let fault = schedule[round % schedule.len()];
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
    let diverged = replicas_diverged(cluster, settings.partitions)?;
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
            diverged.len(),
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
        diverged.is_empty(),
        "replicas differ after the healing: {diverged:?}"
    );
    ensure!(
        terminate_failures == 0,
        "{terminate_failures} writes failed around controlled shutdowns"
    );
    let isr_shrunk: Vec<&String> = faults.iter().flat_map(|f| &f.isr_shrunk).collect();
    ensure!(
        isr_shrunk.is_empty(),
        "the ISR shrank over lossy or slow links, well within replica.lag.time.max.ms: {isr_shrunk:?}"
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

/// Partitions whose replicas differ byte for byte after the healing, once the followers have
/// had [`HEAL_TIMEOUT`] to catch up (the producers have stopped).
fn replicas_diverged(cluster: &Cluster, partitions: i32) -> Result<Vec<String>> {
    let deadline = Instant::now() + HEAL_TIMEOUT;
    loop {
        let mut diverged = Vec::new();
        for partition in 0..partitions {
            let mut logs = Vec::new();
            for node in cluster.node_ids() {
                logs.push((node, cluster.log_bytes(node, TOPIC, partition)?));
            }
            let Some(((first_node, first), rest)) = logs.split_first() else {
                continue;
            };
            for (node, bytes) in rest {
                if bytes != first {
                    let from = first
                        .iter()
                        .zip(bytes.iter())
                        .position(|(a, b)| a != b)
                        .unwrap_or(first.len().min(bytes.len()));
                    diverged.push(format!(
                        "{TOPIC}-{partition}: broker {node} ({} bytes) and broker {first_node} ({} bytes) differ from byte {from}",
                        bytes.len(),
                        first.len()
                    ));
                }
            }
        }
        if diverged.is_empty() || Instant::now() >= deadline {
            return Ok(diverged);
        }
        thread::sleep(Duration::from_millis(500));
    }
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
    let controller = cluster.quorum_leader(asked)?;
    let node = match fault {
        Fault::KillAny => cluster.node_ids()[rng.below(3)],
        Fault::IsolateController | Fault::KillController => controller,
        _ => partitions[rng.below(partitions.len())].leader,
    };
    let led: Vec<i32> = partitions
        .iter()
        .filter(|p| p.leader == node)
        .map(|p| p.partition)
        .collect();
    let also = matches!(fault, Fault::KillTwo | Fault::BridgeLeader).then(|| {
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
    let mut isr_shrunk = Vec::new();
    match fault {
        Fault::KillLeader | Fault::KillAny | Fault::KillController => {
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
        Fault::IsolateLeader | Fault::IsolateController => {
            cluster.isolate(node)?;
            thread::sleep(settings.cut);
            cluster.heal_network()?;
        }
        Fault::BridgeLeader => {
            cluster.cut_between(node, also.context("a second broker")?)?;
            thread::sleep(settings.cut);
            cluster.heal_network()?;
        }
        Fault::OneWayLeader => {
            for other in cluster.node_ids().into_iter().filter(|n| *n != node) {
                cluster.cut(node, other)?;
            }
            thread::sleep(settings.cut);
            cluster.heal_network()?;
        }
        Fault::CutAll => {
            for node in cluster.node_ids() {
                cluster.isolate(node)?;
            }
            thread::sleep(settings.cut_all);
            cluster.heal_network()?;
        }
        Fault::FlapLeader => {
            for _ in 0..6 {
                cluster.isolate(node)?;
                thread::sleep(Duration::from_secs(1));
                cluster.heal_network()?;
                thread::sleep(Duration::from_secs(1));
            }
        }
        Fault::ClockJumpLeader => {
            cluster.set_clock(node, &format!("+{CLOCK_JUMP}"))?;
            thread::sleep(CLOCK_JUMP_HOLD);
            cluster.set_clock(node, &format!("-{CLOCK_JUMP}"))?;
            thread::sleep(CLOCK_JUMP_HOLD);
            cluster.set_clock(node, "+0")?;
        }
        Fault::FailDiskLeader => {
            let dir = cluster.fail_log_dir(node, 1)?;
            thread::sleep(settings.disk_down);
            let status = cluster.stop(node)?;
            ensure!(
                status.success(),
                "broker {node} exited with {status} on SIGTERM after {} failed",
                dir.display()
            );
            cluster.replace_log_dir(node, 1)?;
            cluster.start_nodes(&[node])?;
        }
        Fault::LossyLeader | Fault::SlowLeader => {
            for other in cluster.node_ids().into_iter().filter(|n| *n != node) {
                if fault == Fault::LossyLeader {
                    cluster.degrade(node, other, LINK_LOSS)?;
                    cluster.degrade(other, node, LINK_LOSS)?;
                } else {
                    cluster.slow(node, other, SLOW_LINK_KBIT)?;
                    cluster.slow(other, node, SLOW_LINK_KBIT)?;
                }
            }
            let until = Instant::now() + settings.cut;
            while Instant::now() < until {
                for p in cluster.partitions(TOPIC)? {
                    if !p.fully_in_sync() {
                        isr_shrunk.push(format!(
                            "{TOPIC}-{} at {:.1?}: leader {} isr {:?}",
                            p.partition,
                            start.elapsed(),
                            p.leader,
                            p.isr
                        ));
                    }
                }
                thread::sleep(Duration::from_millis(500));
            }
            cluster.heal_network()?;
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
        isr_shrunk,
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
    /// The 99th percentile of the acknowledgement latency of records sent while the fault
    /// lasted (from its start until the cluster was whole again).
    ack_p99: Option<Duration>,
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
        let mut latencies: Vec<Duration> = deliveries
            .iter()
            .filter(|d| d.error.is_none() && (record.start..record.healed).contains(&d.sent))
            .map(|d| d.reported.saturating_duration_since(d.sent))
            .collect();
        latencies.sort();
        let ack_p99 = latencies
            .get((latencies.len() * 99 / 100).min(latencies.len().saturating_sub(1)))
            .copied();
        FaultRow {
            record: record.clone(),
            led_stall,
            other_stall,
            failed,
            ack_p99,
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
    diverged: usize,
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
        ("replicas differing byte for byte after healing", diverged),
    ] {
        let _ = writeln!(out, "| {name} | {value} |");
    }
    let _ = writeln!(
        out,
        "\n| round | fault | broker | led partitions | unavailable (led) | unavailable (others) | failed writes | acks=all p99 | healed after |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for row in rows {
        let r = &row.record;
        let _ = writeln!(
            out,
            "| {} | {} | {}{}{} | {:?} | {} | {} | {} | {} | {:.1}s |",
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
            seconds(row.ack_p99),
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

// The transactional workload.

const TXN_TOPIC: &str = "jepsen-txn";
const TXN_OUTPUT: &str = "jepsen-txn-out";
const PIPELINE_ID: &str = "jepsen-txn-pipeline";
const PIPELINE_GROUP: &str = "jepsen-txn-pipeline";
const OFFSETS_TOPIC: &str = "__consumer_offsets";
const TRANSACTION_TOPIC: &str = "__transaction_state";
/// Bound of one transactional call of a client (init, send offsets, commit, abort).
const TXN_CALL: Duration = Duration::from_secs(15);
/// How long a client may keep failing to get a producer id before the test gives up.
const TXN_INIT_BUDGET: Duration = Duration::from_secs(90);

/// The transactional run's knobs, from the environment.
#[derive(Debug, Clone)]
struct TxnSettings {
    rounds: usize,
    seed: u64,
    producers: usize,
    partitions: i32,
    /// Records per transaction of the transactional producers.
    records: usize,
    /// Every `abort_every`-th transaction of a producer is aborted on purpose.
    abort_every: u64,
    down: Duration,
    pause: Duration,
    long_pause: Duration,
    /// How long the pipeline may take to copy every committed input after the healing.
    drain: Duration,
}

impl TxnSettings {
    fn from_env() -> TxnSettings {
        let clock = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let secs = |name: &str, default: u64| Duration::from_secs(env_or(name, default));
        TxnSettings {
            rounds: env_or("OXBOW_JEPSEN_TXN_ROUNDS", TXN_SCHEDULE.len()),
            seed: env_or("OXBOW_JEPSEN_SEED", clock),
            producers: env_or("OXBOW_JEPSEN_TXN_PRODUCERS", 2),
            partitions: env_or("OXBOW_JEPSEN_TXN_PARTITIONS", 3),
            records: env_or("OXBOW_JEPSEN_TXN_RECORDS", 6),
            abort_every: env_or("OXBOW_JEPSEN_TXN_ABORT_EVERY", 3).max(1),
            down: secs("OXBOW_JEPSEN_TXN_DOWN_SECS", 5),
            pause: secs("OXBOW_JEPSEN_TXN_PAUSE_SECS", 2),
            long_pause: secs("OXBOW_JEPSEN_TXN_LONG_PAUSE_SECS", 6),
            drain: secs("OXBOW_JEPSEN_TXN_DRAIN_SECS", 120),
        }
    }
}

/// What a transactional round does to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxnAction {
    /// SIGKILL, down for `down`, restarted.
    Kill,
    /// SIGKILL and restarted at once.
    KillRestart,
    /// SIGSTOP for less than the broker session.
    Pause,
    /// SIGSTOP past the broker session: the broker is fenced, and comes back believing it
    /// still leads and coordinates.
    LongPause,
    /// Cut off from the other brokers past the broker session (clients still reach it): it
    /// is fenced while it goes on answering clients as a leader and coordinator.
    Isolate,
    /// SIGTERM (controlled shutdown), down for `down`, restarted.
    Terminate,
}

/// Which broker a transactional round hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxnTarget {
    /// The transaction coordinator of one of the transactional ids (producers' or the
    /// pipeline's).
    TxnCoordinator,
    /// The transaction coordinator of the pipeline's transactional id.
    PipelineTxnCoordinator,
    /// The group coordinator of the pipeline's consumer group.
    GroupCoordinator,
    /// The leader of a partition of the transactional topic (the pipeline's input).
    InputLeader,
    /// The leader of a partition of the pipeline's output.
    OutputLeader,
}

const TXN_SCHEDULE: [(TxnAction, TxnTarget); 10] = [
    (TxnAction::Kill, TxnTarget::TxnCoordinator),
    (TxnAction::Isolate, TxnTarget::PipelineTxnCoordinator),
    (TxnAction::Pause, TxnTarget::InputLeader),
    (TxnAction::Terminate, TxnTarget::GroupCoordinator),
    (TxnAction::Isolate, TxnTarget::InputLeader),
    (TxnAction::KillRestart, TxnTarget::PipelineTxnCoordinator),
    (TxnAction::LongPause, TxnTarget::TxnCoordinator),
    (TxnAction::Kill, TxnTarget::OutputLeader),
    (TxnAction::Isolate, TxnTarget::GroupCoordinator),
    (TxnAction::LongPause, TxnTarget::GroupCoordinator),
];

impl TxnAction {
    fn name(self) -> &'static str {
        match self {
            TxnAction::Kill => "SIGKILL",
            TxnAction::KillRestart => "SIGKILL+restart",
            TxnAction::Pause => "SIGSTOP",
            TxnAction::LongPause => "long SIGSTOP",
            TxnAction::Isolate => "cut off from the other brokers",
            TxnAction::Terminate => "SIGTERM",
        }
    }
}

impl TxnTarget {
    fn name(self) -> &'static str {
        match self {
            TxnTarget::TxnCoordinator => "transaction coordinator",
            TxnTarget::PipelineTxnCoordinator => "pipeline's transaction coordinator",
            TxnTarget::GroupCoordinator => "pipeline's group coordinator",
            TxnTarget::InputLeader => "input partition leader",
            TxnTarget::OutputLeader => "output partition leader",
        }
    }
}

/// One transactional fault as it happened.
#[derive(Debug, Clone)]
struct TxnFaultRecord {
    round: usize,
    action: TxnAction,
    target: TxnTarget,
    node: NodeId,
    /// What the broker was to the workload when it was hit.
    roles: String,
    healed_after: Duration,
}

/// How a transaction ended, as its producer was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxnOutcome {
    /// commit_transaction succeeded.
    Committed,
    /// abort_transaction succeeded.
    Aborted,
    /// Neither was acknowledged (fenced, timed out, the producer replaced): either may have
    /// happened, but all or nothing.
    Uncertain,
}

/// One transaction of a transactional producer.
#[derive(Debug, Clone)]
struct TxnLog {
    producer: usize,
    txn: u64,
    intent_commit: bool,
    records: usize,
    outcome: TxnOutcome,
    error: Option<String>,
}

/// The value of record `i` of transaction `txn` of `producer`: `t<producer>-<txn>-<i>-<c|a>`,
/// `c` when the producer means to commit it, `a` when it means to abort it.
fn txn_value(producer: usize, txn: u64, i: usize, commit: bool) -> String {
    format!("t{producer}-{txn}-{i}-{}", if commit { 'c' } else { 'a' })
}

/// (producer, txn, record, intent to commit) of a value written by [`txn_value`].
fn parse_txn_value(value: &str) -> Option<(usize, u64, usize, bool)> {
    let mut parts = value.strip_prefix('t')?.split('-');
    let producer = parts.next()?.parse().ok()?;
    let txn = parts.next()?.parse().ok()?;
    let record = parts.next()?.parse().ok()?;
    let commit = match parts.next()? {
        "c" => true,
        "a" => false,
        _ => return None,
    };
    parts
        .next()
        .is_none()
        .then_some((producer, txn, record, commit))
}

/// A transactional producer whose delivery reports a thread of its own serves: aborting
/// purges the records still in flight and waits for their reports.
type TxnProducer = ThreadedProducer<ClientLog>;

/// Whether an error of a transactional call may be retried, and whether it asks for an
/// abort; neither is fatal. Commit flushes first: records not delivered within the call's
/// timeout may be delivered on a retry.
fn txn_error_kind(error: &KafkaError) -> (bool, bool) {
    match error {
        KafkaError::Transaction(e) => (e.is_retriable(), e.txn_requires_abort()),
        KafkaError::Flush(_) => (true, false),
        _ => (false, false),
    }
}

/// One test with three brokers at a time: two clusters on two shared cores would turn the
/// faults' timing into noise.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Waits for a worker thread, at most until `deadline`: a thread stuck in a client call
/// fails the test instead of hanging it.
fn join_by<T>(handle: thread::JoinHandle<Result<T>>, deadline: Instant, what: &str) -> Result<T> {
    while !handle.is_finished() {
        ensure!(
            Instant::now() < deadline,
            "{what} did not finish in time (stuck in a client call)"
        );
        thread::sleep(Duration::from_millis(100));
    }
    handle
        .join()
        .map_err(|_| anyhow!("{what} panicked"))?
        .with_context(|| what.to_string())
}

/// Drops a client on a thread of its own: closing a consumer or producer whose brokers are
/// away may take a while, and the worker goes on meanwhile.
fn drop_in_background<T: Send + 'static>(client: T) {
    thread::spawn(move || drop(client));
}

/// The brokers' timings: a shorter broker session (faults resolve in seconds), coordinators
/// spread over every broker with few internal partitions, timed-out transactions aborted
/// within a second of their timeout, and no initial rebalance delay.
fn txn_cluster_options() -> ClusterOptions {
    ClusterOptions::new(broker_bin())
        .set("broker.session.timeout.ms", "3000")
        .set("broker.heartbeat.interval.ms", "500")
        .set("offsets.topic.num.partitions", "6")
        .set("transaction.state.log.num.partitions", "6")
        .set(
            "transaction.abort.timed.out.transaction.cleanup.interval.ms",
            "1000",
        )
        .set("group.initial.rebalance.delay.ms", "0")
}

#[test]
fn transactions_commit_or_abort_all_or_nothing_and_a_pipeline_copies_exactly_once_under_faults() {
    let _serial = serial();
    sandboxed(
        "transactions_commit_or_abort_all_or_nothing_and_a_pipeline_copies_exactly_once_under_faults",
        || {
            let settings = TxnSettings::from_env();
            eprintln!("jepsen transactional settings: {settings:?}");
            let started = Instant::now();
            let mut cluster = Cluster::start(txn_cluster_options().network_namespaces())?;
            let outcome = run_transactional(&mut cluster, &settings, started);
            eprintln!("jepsen transactional run took {:.1?}", started.elapsed());
            cluster.explain(outcome)
        },
    );
}

/// An acknowledged commit of the pipeline: its instance, when, and the input offsets it
/// copied per partition (first, last).
type PipelineCommit = (usize, Instant, BTreeMap<i32, (i64, i64)>);

/// What the pipeline did: input values of its acknowledged commits, and counters.
#[derive(Debug, Default)]
struct PipelineState {
    /// Input values copied by transactions whose commit was acknowledged.
    copied: HashSet<String>,
    committed: usize,
    failed: usize,
    restarts: usize,
    errors: BTreeMap<String, usize>,
    /// Each acknowledged commit: the instance, when, and the input offsets it copied per
    /// partition (first, last), to explain a duplicate.
    commits: Vec<PipelineCommit>,
    /// Each restart: when, and why.
    restart_log: Vec<(Instant, String)>,
    /// Batches dropped because a rebalance rewound the consumer while they were gathered.
    rewinds: usize,
    /// Instances given up because a call of their producer never returned ([`StuckCall`]).
    abandoned: usize,
    /// What the pipeline is doing, since when: a stuck pipeline says where.
    step: Option<(&'static str, Instant)>,
}

fn set_step(state: &Mutex<PipelineState>, step: &'static str) -> Result<()> {
    state
        .lock()
        .map_err(|_| anyhow!("pipeline state poisoned"))?
        .step = Some((step, Instant::now()));
    Ok(())
}

fn run_transactional(
    cluster: &mut Cluster,
    settings: &TxnSettings,
    started: Instant,
) -> Result<()> {
    let log = |what: String| eprintln!("[{:>6.1?}] {what}", started.elapsed());
    for topic in [TXN_TOPIC, TXN_OUTPUT] {
        cluster.create_topic(
            topic,
            settings.partitions,
            3,
            &[("min.insync.replicas", "2")],
        )?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stop_pipeline = Arc::new(AtomicBool::new(false));
    let pipeline_state = Arc::new(Mutex::new(PipelineState::default()));
    let producers: Vec<_> = (0..settings.producers)
        .map(|p| {
            let config = cluster.client_config();
            let settings = settings.clone();
            let stop = Arc::clone(&stop);
            thread::spawn(move || run_txn_producer(config, p, &settings, &stop))
        })
        .collect();
    let pipeline_log = ClientLog::new(started, 20_000);
    let pipeline = {
        let config = cluster.client_config();
        let state = Arc::clone(&pipeline_state);
        let stop = Arc::clone(&stop_pipeline);
        let log = pipeline_log.clone();
        thread::spawn(move || run_pipeline(config, &state, &stop, &log))
    };
    // The nemesis starts once the pipeline has committed: the internal topics exist then.
    let warm_up = Instant::now() + Duration::from_secs(90);
    while pipeline_state
        .lock()
        .map_err(|_| anyhow!("pipeline state poisoned"))?
        .committed
        == 0
    {
        ensure!(
            Instant::now() < warm_up,
            "the pipeline committed no transaction within 90 s"
        );
        ensure!(
            !pipeline.is_finished(),
            "the pipeline stopped before its first commit"
        );
        thread::sleep(Duration::from_millis(200));
    }
    log("pipeline committing; the nemesis starts".to_string());

    let ids: Vec<String> = (0..settings.producers)
        .map(|p| format!("jepsen-txn-p{p}"))
        .chain([PIPELINE_ID.to_string()])
        .collect();
    let mut rng = Rng::new(settings.seed);
    let mut faults = Vec::new();
    for round in 0..settings.rounds {
        let (action, target) = TXN_SCHEDULE[round % TXN_SCHEDULE.len()];
        faults.push(txn_nemesis(
            cluster, settings, &mut rng, &ids, round, action, target, &log,
        )?);
    }

    log("healing; the producers stop".to_string());
    cluster.heal()?;
    wait_for_txn_cluster(cluster)?;
    stop.store(true, Ordering::Relaxed);
    let producers_deadline = Instant::now() + Duration::from_secs(120);
    let mut txns: Vec<TxnLog> = Vec::new();
    let mut producer_restarts = 0;
    for (p, handle) in producers.into_iter().enumerate() {
        let (log, restarts) = join_by(handle, producers_deadline, &format!("producer {p}"))?;
        txns.extend(log);
        producer_restarts += restarts;
    }

    log("reading the input with read_committed".to_string());
    let input = read_topic(cluster, TXN_TOPIC, settings.partitions, true)?;
    let input_uncommitted = read_topic(cluster, TXN_TOPIC, settings.partitions, false)?;
    let mut txn_check = TxnCheck::new(&txns, &input);

    log(format!(
        "waiting for the pipeline to copy the {} committed inputs",
        input.len()
    ));
    let drain_deadline = Instant::now() + settings.drain;
    let missing: Vec<String> = loop {
        let missing: Vec<String> = {
            let state = pipeline_state
                .lock()
                .map_err(|_| anyhow!("pipeline state poisoned"))?;
            input
                .iter()
                .map(|(_, _, v)| v)
                .filter(|v| !state.copied.contains(*v))
                .cloned()
                .collect()
        };
        if missing.is_empty() || Instant::now() >= drain_deadline || pipeline.is_finished() {
            break missing;
        }
        thread::sleep(Duration::from_millis(500));
    };
    stop_pipeline.store(true, Ordering::Relaxed);
    let step = pipeline_state
        .lock()
        .map_err(|_| anyhow!("pipeline state poisoned"))?
        .step;
    join_by(
        pipeline,
        Instant::now() + Duration::from_secs(60),
        "the pipeline",
    )
    .with_context(|| {
        format!(
            "the pipeline was {} for {:.1?} when told to stop; {} committed inputs were not copied; the last lines its producer logged:\n{}",
            step.map_or("starting", |(what, _)| what),
            step.map(|(_, since)| since.elapsed()).unwrap_or_default(),
            missing.len(),
            pipeline_log.tail(400).join("\n")
        )
    })?;
    let drained_after = started.elapsed();
    log("reading the pipeline's output with read_committed".to_string());
    let output = read_topic(cluster, TXN_OUTPUT, settings.partitions, true)?;
    let pipeline_check = PipelineCheck::new(&input, &output);
    txn_check.uncommitted_read = input_uncommitted.len();

    let state = pipeline_state
        .lock()
        .map_err(|_| anyhow!("pipeline state poisoned"))?;
    println!(
        "{}",
        txn_summary(
            settings,
            &txn_check,
            &pipeline_check,
            &state,
            &faults,
            producer_restarts,
            drained_after
        )
    );
    ensure!(
        txn_check.aborted_read.is_empty(),
        "read_committed read records of aborted transactions: {:?}",
        sample(&txn_check.aborted_read)
    );
    ensure!(
        txn_check.lost_commit.is_empty(),
        "acknowledged commits missing records: {:?}",
        sample(&txn_check.lost_commit)
    );
    ensure!(
        txn_check.partial.is_empty(),
        "transactions partly visible: {:?}",
        sample(&txn_check.partial)
    );
    ensure!(
        txn_check.duplicated.is_empty(),
        "records read twice from the input: {:?}",
        sample(&txn_check.duplicated)
    );
    ensure!(
        txn_check.unknown.is_empty(),
        "records no producer wrote: {:?}",
        sample(&txn_check.unknown)
    );
    ensure!(
        txn_check.committed > 0 && txn_check.aborted > 0,
        "the workload needs acknowledged commits and aborts (committed {}, aborted {})",
        txn_check.committed,
        txn_check.aborted
    );
    ensure!(
        missing.is_empty(),
        "the pipeline had not copied {} committed inputs {:.0?} after the healing (e.g. {:?})",
        missing.len(),
        settings.drain,
        sample(&missing)
    );
    if !pipeline_check.duplicated.is_empty() {
        for (at, why) in &state.restart_log {
            eprintln!(
                "pipeline restart at {:.1?}: {why}",
                at.duration_since(started)
            );
        }
        let input_at: HashMap<&str, (i32, i64)> = input
            .iter()
            .map(|(p, o, v)| (v.as_str(), (*p, *o)))
            .collect();
        for duplicate in pipeline_check.duplicated.iter().take(3) {
            let value = duplicate.split(' ').next().unwrap_or_default();
            let Some((partition, offset)) = input_at.get(value) else {
                continue;
            };
            for (instance, at, ranges) in &state.commits {
                if ranges
                    .get(partition)
                    .is_some_and(|(first, last)| (*first..=*last).contains(offset))
                {
                    eprintln!(
                        "{value} (input {partition}/{offset}) copied by instance {instance} in a commit acknowledged at {:.1?} of input {ranges:?}",
                        at.duration_since(started)
                    );
                }
            }
        }
    }
    ensure!(
        pipeline_check.duplicated.is_empty(),
        "the pipeline's output holds inputs more than once: {:?}",
        sample(&pipeline_check.duplicated)
    );
    ensure!(
        pipeline_check.missing.is_empty(),
        "the pipeline's output lacks committed inputs: {:?}",
        sample(&pipeline_check.missing)
    );
    ensure!(
        pipeline_check.foreign.is_empty(),
        "the pipeline's output holds values not among the committed inputs: {:?}",
        sample(&pipeline_check.foreign)
    );
    Ok(())
}

/// Waits until every partition of the workload's topics, internal ones included, has a
/// running leader and a full ISR.
fn wait_for_txn_cluster(cluster: &mut Cluster) -> Result<()> {
    for topic in [TXN_TOPIC, TXN_OUTPUT, TRANSACTION_TOPIC, OFFSETS_TOPIC] {
        cluster.wait_for_full_isr(topic, HEAL_TIMEOUT)?;
    }
    Ok(())
}

/// Runs one transactional fault and heals it.
#[allow(clippy::too_many_arguments)]
fn txn_nemesis(
    cluster: &mut Cluster,
    settings: &TxnSettings,
    rng: &mut Rng,
    ids: &[String],
    round: usize,
    action: TxnAction,
    target: TxnTarget,
    log: &impl Fn(String),
) -> Result<TxnFaultRecord> {
    wait_for_txn_cluster(cluster)?;
    let leader_of = |cluster: &mut Cluster, topic: &str, rng: &mut Rng| -> Result<NodeId> {
        let partitions = cluster.partitions(topic)?;
        let chosen = partitions
            .get(rng.below(partitions.len()))
            .with_context(|| format!("{topic} has no partitions"))?;
        Ok(chosen.leader)
    };
    let node = match target {
        TxnTarget::TxnCoordinator => {
            let id = &ids[rng.below(ids.len())];
            find_coordinator(cluster, id, TRANSACTION_KEY)?
        }
        TxnTarget::PipelineTxnCoordinator => {
            find_coordinator(cluster, PIPELINE_ID, TRANSACTION_KEY)?
        }
        TxnTarget::GroupCoordinator => find_coordinator(cluster, PIPELINE_GROUP, GROUP_KEY)?,
        TxnTarget::InputLeader => leader_of(cluster, TXN_TOPIC, rng)?,
        TxnTarget::OutputLeader => leader_of(cluster, TXN_OUTPUT, rng)?,
    };
    let mut roles = Vec::new();
    for id in ids {
        if find_coordinator(cluster, id, TRANSACTION_KEY)? == node {
            roles.push(format!("txn coordinator of {id}"));
        }
    }
    if find_coordinator(cluster, PIPELINE_GROUP, GROUP_KEY)? == node {
        roles.push("group coordinator".to_string());
    }
    for topic in [TXN_TOPIC, TXN_OUTPUT] {
        let led: Vec<i32> = cluster
            .partitions(topic)?
            .iter()
            .filter(|p| p.leader == node)
            .map(|p| p.partition)
            .collect();
        if !led.is_empty() {
            roles.push(format!("leads {topic} {led:?}"));
        }
    }
    let roles = roles.join("; ");
    log(format!(
        "round {round}: {} on broker {node}, the {} ({roles})",
        action.name(),
        target.name()
    ));
    let start = Instant::now();
    match action {
        TxnAction::Kill => {
            cluster.kill(node)?;
            thread::sleep(settings.down);
            cluster.restart(node)?;
        }
        TxnAction::KillRestart => {
            cluster.kill(node)?;
            thread::sleep(Duration::from_secs(1));
            cluster.restart(node)?;
        }
        TxnAction::Pause | TxnAction::LongPause => {
            cluster.pause(node)?;
            thread::sleep(if action == TxnAction::Pause {
                settings.pause
            } else {
                settings.long_pause
            });
            cluster.resume(node)?;
        }
        TxnAction::Isolate => {
            cluster.isolate(node)?;
            thread::sleep(settings.long_pause);
            cluster.heal_network()?;
        }
        TxnAction::Terminate => {
            let status = cluster.stop(node)?;
            ensure!(
                status.success(),
                "broker {node} exited with {status} on SIGTERM"
            );
            thread::sleep(settings.down);
            cluster.restart(node)?;
        }
    }
    wait_for_txn_cluster(cluster)?;
    let healed_after = start.elapsed();
    log(format!("round {round}: healed after {healed_after:.1?}"));
    thread::sleep(QUIET);
    Ok(TxnFaultRecord {
        round,
        action,
        target,
        node,
        roles,
        healed_after,
    })
}

/// A transactional producer ready to begin: created and given its producer id, retried
/// while the coordinator is away, within [`TXN_INIT_BUDGET`].
fn init_txn_producer(config: &ClientConfig, id: &str, log: &ClientLog) -> Result<TxnProducer> {
    let deadline = Instant::now() + TXN_INIT_BUDGET;
    let mut last = String::new();
    while Instant::now() < deadline {
        let producer: TxnProducer = config
            .clone()
            .set("transactional.id", id)
            .set("transaction.timeout.ms", "10000")
            .set("linger.ms", "5")
            .create_with_context(log.clone())
            .with_context(|| format!("creating the transactional producer {id}"))?;
        match producer.init_transactions(TXN_CALL) {
            Ok(()) => return Ok(producer),
            Err(e) => {
                last = e.to_string();
                let (retriable, _) = txn_error_kind(&e);
                if !retriable {
                    // A fatal error (e.g. fenced by a zombie's late answer): a new instance.
                    drop_in_background(producer);
                    thread::sleep(Duration::from_millis(500));
                    continue;
                }
                // Retriable: the same instance may try again.
                let retry_until = Instant::now() + TXN_CALL;
                let mut ready = false;
                while Instant::now() < retry_until.min(deadline) {
                    thread::sleep(Duration::from_millis(500));
                    match producer.init_transactions(TXN_CALL) {
                        Ok(()) => {
                            ready = true;
                            break;
                        }
                        Err(e) => last = e.to_string(),
                    }
                }
                if ready {
                    return Ok(producer);
                }
                drop_in_background(producer);
            }
        }
    }
    bail!("{id} got no producer id within {TXN_INIT_BUDGET:?}: {last}")
}

/// Sends `value` to `topic`/`partition`, waiting while the local queue is full, at most
/// [`TXN_CALL`].
fn send_bounded(producer: &TxnProducer, topic: &str, partition: i32, value: &str) -> Result<()> {
    let deadline = Instant::now() + TXN_CALL;
    let mut record = BaseRecord::<(), _>::to(topic)
        .partition(partition)
        .payload(value);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                if Instant::now() < deadline =>
            {
                thread::sleep(Duration::from_millis(10));
                record = r;
            }
            Err((e, _)) => bail!("sending {value}: {e}"),
        }
    }
}

/// Commits (retrying a retriable failure a few times) or aborts the open transaction;
/// returns how it ended and the error seen on the way, if any.
fn end_txn(producer: &TxnProducer, commit: bool) -> (TxnOutcome, Option<String>) {
    let mut error = None;
    if commit {
        for _ in 0..3 {
            match producer.commit_transaction(TXN_CALL) {
                Ok(()) => return (TxnOutcome::Committed, error),
                Err(e) => {
                    error = Some(format!("commit: {e}"));
                    let (retriable, abortable) = txn_error_kind(&e);
                    if abortable {
                        break;
                    }
                    if !retriable {
                        return (TxnOutcome::Uncertain, error);
                    }
                }
            }
        }
    }
    for _ in 0..3 {
        match producer.abort_transaction(TXN_CALL) {
            Ok(()) => return (TxnOutcome::Aborted, error),
            Err(e) => {
                error = Some(format!("abort: {e}"));
                let (retriable, _) = txn_error_kind(&e);
                if !retriable {
                    break;
                }
            }
        }
    }
    (TxnOutcome::Uncertain, error)
}

/// A transactional producer: transactions of `records` values round-robin over the
/// partitions, every `abort_every`-th aborted on purpose, the others committed. An
/// uncertain end gets a new producer instance with the same transactional id, which fences
/// the old one. Returns every transaction and how many instances replaced one.
fn run_txn_producer(
    config: ClientConfig,
    index: usize,
    settings: &TxnSettings,
    stop: &AtomicBool,
) -> Result<(Vec<TxnLog>, usize)> {
    let id = format!("jepsen-txn-p{index}");
    let client_log = ClientLog::new(Instant::now(), 100);
    let mut producer = init_txn_producer(&config, &id, &client_log)?;
    let mut txns = Vec::new();
    let mut restarts = 0;
    let mut txn: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let commit = (txn + 1) % settings.abort_every != 0;
        let (outcome, error) = match producer.begin_transaction() {
            Err(e) => (TxnOutcome::Uncertain, Some(format!("begin: {e}"))),
            Ok(()) => {
                let mut sent = Ok(());
                for i in 0..settings.records {
                    let partition = i32::try_from(i)? % settings.partitions;
                    sent = send_bounded(
                        &producer,
                        TXN_TOPIC,
                        partition,
                        &txn_value(index, txn, i, commit),
                    );
                    if sent.is_err() {
                        break;
                    }
                }
                // A transaction aborted on purpose first has its records written, so the
                // log holds aborted data for read_committed to skip.
                if sent.is_ok() && !commit {
                    sent = producer
                        .flush(TXN_CALL)
                        .map_err(|e| anyhow!("flushing before the abort: {e}"));
                }
                match sent {
                    Ok(()) => end_txn(&producer, commit),
                    Err(e) => {
                        let (outcome, _) = end_txn(&producer, false);
                        (outcome, Some(format!("{e:#}")))
                    }
                }
            }
        };
        txns.push(TxnLog {
            producer: index,
            txn,
            intent_commit: commit,
            records: settings.records,
            outcome,
            error,
        });
        txn += 1;
        if outcome == TxnOutcome::Uncertain {
            drop_in_background(producer);
            producer = init_txn_producer(&config, &id, &client_log)?;
            restarts += 1;
        }
        thread::sleep(Duration::from_millis(20));
    }
    drop_in_background(producer);
    Ok((txns, restarts))
}

/// One instance of the pipeline: its producer (the pipeline's transactional id) and its
/// read_committed group consumer.
fn start_pipeline_instance(
    config: &ClientConfig,
    log: &ClientLog,
) -> Result<(Arc<TxnProducer>, BaseConsumer)> {
    // The producer first: its InitProducerId completes (or aborts) what an earlier instance
    // left open, so the consumer reads committed offsets that include it. Its transactional
    // and protocol debug lines go to the log, to show where a stuck call waits.
    let mut producer_config = config.clone();
    producer_config
        .set("debug", "eos,protocol,broker")
        .set_log_level(RDKafkaLogLevel::Debug);
    let producer = init_txn_producer(&producer_config, PIPELINE_ID, log)?;
    let consumer: BaseConsumer = config
        .clone()
        .set("group.id", PIPELINE_GROUP)
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .set("max.poll.interval.ms", "20000")
        .create()
        .context("creating the pipeline's consumer")?;
    consumer.subscribe(&[TXN_TOPIC])?;
    Ok((Arc::new(producer), consumer))
}

/// The exactly-once consume-transform-produce loop: reads the transactional topic with
/// read_committed, writes `o|<input>` to the same partition of the output topic and the
/// consumed offsets in the same transaction. Any failure aborts and restarts the instance
/// (same transactional id, same group), which resumes from the committed offsets.
fn run_pipeline(
    config: ClientConfig,
    state: &Mutex<PipelineState>,
    stop: &AtomicBool,
    log: &ClientLog,
) -> Result<()> {
    let record_failure = |error: String| -> Result<()> {
        let mut state = state
            .lock()
            .map_err(|_| anyhow!("pipeline state poisoned"))?;
        state.failed += 1;
        let kind: String = error.chars().take(120).collect();
        *state.errors.entry(kind).or_default() += 1;
        Ok(())
    };
    let mut instance = start_pipeline_instance(&config, log)?;
    while !stop.load(Ordering::Relaxed) {
        let (producer, consumer) = &instance;
        let mut batch: Vec<(i32, i64, String)> = Vec::new();
        let mut last: BTreeMap<i32, i64> = BTreeMap::new();
        let gather_until = Instant::now() + Duration::from_millis(300);
        set_step(state, "polling")?;
        while batch.len() < 50 && Instant::now() < gather_until {
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
                // A rebalance in the middle of the batch rewinds the consumer to the committed
                // offsets: what was gathered since would be copied twice in one transaction.
                if last
                    .get(&message.partition())
                    .is_some_and(|at| message.offset() <= *at)
                {
                    batch.clear();
                    last.clear();
                    state
                        .lock()
                        .map_err(|_| anyhow!("pipeline state poisoned"))?
                        .rewinds += 1;
                }
                last.insert(message.partition(), message.offset());
                let value =
                    String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
                batch.push((message.partition(), message.offset(), value));
            }
        }
        if batch.is_empty() {
            continue;
        }
        match copy_in_transaction(producer, consumer, &batch, &|step| set_step(state, step)) {
            Ok(()) => {
                let mut ranges: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
                for (partition, offset, _) in &batch {
                    let range = ranges.entry(*partition).or_insert((*offset, *offset));
                    range.0 = range.0.min(*offset);
                    range.1 = range.1.max(*offset);
                }
                let mut state = state
                    .lock()
                    .map_err(|_| anyhow!("pipeline state poisoned"))?;
                state.committed += 1;
                let instance = state.restarts;
                state.commits.push((instance, Instant::now(), ranges));
                state.copied.extend(batch.into_iter().map(|(_, _, v)| v));
            }
            Err(e) => {
                record_failure(format!("{e:#}"))?;
                state
                    .lock()
                    .map_err(|_| anyhow!("pipeline state poisoned"))?
                    .restart_log
                    .push((Instant::now(), format!("{e:#}")));
                if e.downcast_ref::<StuckCall>().is_some() {
                    // The stuck call holds the producer: leave it to its thread. The next
                    // instance's InitProducerId fences it and ends its transaction. The
                    // producer's whole log goes to a file: other instances' lines interleave.
                    let path = std::env::temp_dir().join(format!(
                        "oxbow-jepsen-stuck-pipeline-{}.log",
                        std::process::id()
                    ));
                    let written = std::fs::write(&path, log.tail(usize::MAX).join("\n"));
                    eprintln!(
                        "{e:#}; the pipeline producer's log: {} ({written:?})",
                        path.display()
                    );
                    state
                        .lock()
                        .map_err(|_| anyhow!("pipeline state poisoned"))?
                        .abandoned += 1;
                } else {
                    set_step(state, "aborting")?;
                    let _ = producer.abort_transaction(TXN_CALL);
                }
                let (producer, consumer) = instance;
                drop_in_background(consumer);
                drop_in_background(producer);
                set_step(state, "starting a new instance")?;
                instance = start_pipeline_instance(&config, log)?;
                state
                    .lock()
                    .map_err(|_| anyhow!("pipeline state poisoned"))?
                    .restarts += 1;
            }
        }
    }
    let (producer, consumer) = instance;
    drop_in_background(consumer);
    drop_in_background(producer);
    Ok(())
}

/// A transactional call of the pipeline's producer that did not return within
/// [`STUCK_CALL`].
#[derive(Debug)]
struct StuckCall(&'static str);

impl std::fmt::Display for StuckCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} had not returned after {STUCK_CALL:?}", self.0)
    }
}

impl std::error::Error for StuckCall {}

/// How long the pipeline waits for `send_offsets_to_transaction`, whose own timeout is
/// [`TXN_CALL`], before it gives the instance up. librdkafka 2.12.1 can wait for ever there:
/// the TxnOffsetCommit goes through its coordinator-request state machine, whose timeout is
/// set but never checked (`creq_ts_timeout` in rdkafka_coord.c), and which waits for a
/// broker's connection to change state after a FindCoordinator it no longer retries; the
/// call itself waits without bound (`RD_POLL_INFINITE`) for that request's answer.
const STUCK_CALL: Duration = Duration::from_secs(60);

/// Copies `batch` and commits its offsets in one transaction.
fn copy_in_transaction(
    producer: &Arc<TxnProducer>,
    consumer: &BaseConsumer,
    batch: &[(i32, i64, String)],
    step: &dyn Fn(&'static str) -> Result<()>,
) -> Result<()> {
    step("beginning a transaction")?;
    producer.begin_transaction().context("begin")?;
    step("sending the copies")?;
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for (partition, offset, value) in batch {
        send_bounded(producer, TXN_OUTPUT, *partition, &format!("o|{value}"))?;
        let entry = next.entry(*partition).or_insert(0);
        *entry = (*entry).max(offset + 1);
    }
    let mut offsets = TopicPartitionList::new();
    for (partition, offset) in &next {
        offsets.add_partition_offset(TXN_TOPIC, *partition, Offset::Offset(*offset))?;
    }
    let metadata = consumer
        .group_metadata()
        .context("the consumer has no group metadata")?;
    step("sending the offsets")?;
    let (answer, answered) = std::sync::mpsc::channel();
    let caller = Arc::clone(producer);
    thread::spawn(move || {
        let _ = answer.send(caller.send_offsets_to_transaction(&offsets, &metadata, TXN_CALL));
    });
    answered
        .recv_timeout(STUCK_CALL)
        .map_err(|_| StuckCall("send_offsets_to_transaction"))?
        .context("send offsets")?;
    step("committing")?;
    producer.commit_transaction(TXN_CALL).context("commit")?;
    Ok(())
}

/// Every record of `topic` from the beginning, with read_committed or read_uncommitted, in
/// offset order per partition: read until the consumer's position (which passes control
/// records and aborted data) reaches the high watermark of every partition.
fn read_topic(
    cluster: &Cluster,
    topic: &str,
    partitions: i32,
    committed: bool,
) -> Result<Vec<Record>> {
    let consumer: BaseConsumer = cluster
        .client_config()
        .set("group.id", "jepsen-txn-checker")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set(
            "isolation.level",
            if committed {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        )
        .set("check.crcs", "true")
        .create()?;
    let mut ends = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .with_context(|| format!("high watermark of {topic}-{partition}"))?;
        ends.insert(partition, high);
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut records = Vec::new();
    let mut last_error = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let positions: BTreeMap<i32, i64> = consumer
            .position()?
            .elements()
            .iter()
            .map(|e| {
                let offset = match e.offset() {
                    Offset::Offset(o) => o,
                    _ => 0,
                };
                (e.partition(), offset)
            })
            .collect();
        if ends
            .iter()
            .all(|(p, end)| *end == 0 || positions.get(p).is_some_and(|at| at >= end))
        {
            return Ok(records);
        }
        ensure!(
            Instant::now() < deadline,
            "reading {topic} stalled at {positions:?} of {ends:?}; last error {last_error:?}"
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                let value =
                    String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
                records.push((message.partition(), message.offset(), value));
            }
            Some(Err(e)) => last_error = Some(e),
            None => {}
        }
    }
}

/// The checker's findings on the transactional producers' topic.
#[derive(Debug, Default)]
struct TxnCheck {
    txns: usize,
    committed: usize,
    aborted: usize,
    /// Aborts acknowledged for transactions meant to commit (the commit failed first).
    aborted_after_failed_commit: usize,
    uncertain: usize,
    /// Uncertain transactions read whole (they did commit).
    uncertain_visible: usize,
    read: usize,
    /// Records read_uncommitted sees (aborted and committed).
    uncommitted_read: usize,
    /// Records of a transaction meant to abort, or whose abort was acknowledged.
    aborted_read: Vec<String>,
    /// Acknowledged commits not read whole.
    lost_commit: Vec<String>,
    /// Transactions read in part.
    partial: Vec<String>,
    duplicated: Vec<String>,
    unknown: Vec<String>,
    /// Errors the producers saw, by kind, with their count.
    errors: BTreeMap<String, usize>,
}

impl TxnCheck {
    fn new(txns: &[TxnLog], read: &[Record]) -> TxnCheck {
        let mut check = TxnCheck {
            txns: txns.len(),
            read: read.len(),
            ..TxnCheck::default()
        };
        let mut seen: BTreeMap<(usize, u64), BTreeSet<usize>> = BTreeMap::new();
        let mut values: HashSet<&str> = HashSet::new();
        let logged: HashMap<(usize, u64), &TxnLog> =
            txns.iter().map(|t| ((t.producer, t.txn), t)).collect();
        for (partition, offset, value) in read {
            if !values.insert(value) {
                check
                    .duplicated
                    .push(format!("{value} (again at {partition}/{offset})"));
            }
            match parse_txn_value(value) {
                None => check.unknown.push(value.clone()),
                Some((producer, txn, record, commit)) => {
                    let aborted = logged
                        .get(&(producer, txn))
                        .is_some_and(|t| t.outcome == TxnOutcome::Aborted);
                    if !commit || aborted {
                        check
                            .aborted_read
                            .push(format!("{value} at {partition}/{offset}"));
                    }
                    seen.entry((producer, txn)).or_default().insert(record);
                }
            }
        }
        for txn in txns {
            let found = seen.get(&(txn.producer, txn.txn)).map_or(0, |s| s.len());
            match txn.outcome {
                TxnOutcome::Committed => {
                    check.committed += 1;
                    if found != txn.records {
                        check.lost_commit.push(format!(
                            "t{}-{}: {found} of {} records",
                            txn.producer, txn.txn, txn.records
                        ));
                    }
                }
                TxnOutcome::Aborted => {
                    check.aborted += 1;
                    if txn.intent_commit {
                        check.aborted_after_failed_commit += 1;
                    }
                }
                TxnOutcome::Uncertain => {
                    check.uncertain += 1;
                    if found == txn.records {
                        check.uncertain_visible += 1;
                    }
                }
            }
            if found != 0 && found != txn.records {
                check.partial.push(format!(
                    "t{}-{} ({:?}): {found} of {} records",
                    txn.producer, txn.txn, txn.outcome, txn.records
                ));
            }
            if let Some(error) = &txn.error {
                let kind: String = error.chars().take(120).collect();
                *check.errors.entry(kind).or_default() += 1;
            }
        }
        for (producer, txn) in seen.keys() {
            if !logged.contains_key(&(*producer, *txn)) {
                check
                    .unknown
                    .push(format!("t{producer}-{txn} (never begun)"));
            }
        }
        check
    }
}

/// The checker's findings on the pipeline's output.
#[derive(Debug, Default)]
struct PipelineCheck {
    read: usize,
    /// Inputs copied more than once.
    duplicated: Vec<String>,
    /// Committed inputs not in the output.
    missing: Vec<String>,
    /// Output records that are no committed input's copy.
    foreign: Vec<String>,
}

impl PipelineCheck {
    fn new(input: &[Record], output: &[Record]) -> PipelineCheck {
        let mut check = PipelineCheck {
            read: output.len(),
            ..PipelineCheck::default()
        };
        let inputs: HashMap<&str, i32> = input.iter().map(|(p, _, v)| (v.as_str(), *p)).collect();
        let mut copies: HashMap<&str, usize> = HashMap::new();
        for (partition, offset, value) in output {
            let original = value.strip_prefix("o|").unwrap_or(value);
            match inputs.get(original) {
                Some(from) if from == partition => {
                    let count = copies.entry(original).or_default();
                    *count += 1;
                    if *count == 2 {
                        check
                            .duplicated
                            .push(format!("{original} (again at {partition}/{offset})"));
                    }
                }
                _ => check
                    .foreign
                    .push(format!("{value} at {partition}/{offset}")),
            }
        }
        check.missing = input
            .iter()
            .filter(|(_, _, v)| !copies.contains_key(v.as_str()))
            .map(|(p, o, v)| format!("{v} (input {p}/{o})"))
            .collect();
        check
    }
}

fn txn_summary(
    settings: &TxnSettings,
    txn: &TxnCheck,
    pipeline: &PipelineCheck,
    state: &PipelineState,
    faults: &[TxnFaultRecord],
    producer_restarts: usize,
    duration: Duration,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## Jepsen-style transactional run: {} rounds, seed {}, {} producers x {} records per transaction (every {}th aborted), {} partitions, RF=3, min.insync.replicas=2, {:.0?}\n",
        settings.rounds, settings.seed, settings.producers, settings.records, settings.abort_every, settings.partitions, duration
    );
    let _ = writeln!(out, "| checker | count |\n| --- | --- |");
    for (name, value) in [
        ("transactions", txn.txns),
        ("commits acknowledged", txn.committed),
        ("aborts acknowledged", txn.aborted),
        (
            "of which after a failed commit",
            txn.aborted_after_failed_commit,
        ),
        ("uncertain (neither acknowledged)", txn.uncertain),
        ("uncertain and visible whole", txn.uncertain_visible),
        ("producer instances replaced", producer_restarts),
        ("records read (read_committed)", txn.read),
        (
            "records in the log (read_uncommitted)",
            txn.uncommitted_read,
        ),
        ("aborted records read", txn.aborted_read.len()),
        ("acknowledged commits not read whole", txn.lost_commit.len()),
        ("transactions partly visible", txn.partial.len()),
        ("records read twice", txn.duplicated.len()),
        ("pipeline transactions committed", state.committed),
        ("pipeline transactions failed", state.failed),
        ("pipeline instances replaced", state.restarts),
        ("pipeline batches dropped after a rewind", state.rewinds),
        (
            "pipeline instances given up in a call that never returned",
            state.abandoned,
        ),
        ("pipeline output records", pipeline.read),
        ("inputs copied twice", pipeline.duplicated.len()),
        ("committed inputs not copied", pipeline.missing.len()),
        (
            "output records of no committed input",
            pipeline.foreign.len(),
        ),
    ] {
        let _ = writeln!(out, "| {name} | {value} |");
    }
    let _ = writeln!(
        out,
        "\n| round | fault | broker | its roles | healed after |\n| --- | --- | --- | --- | --- |"
    );
    for f in faults {
        let _ = writeln!(
            out,
            "| {} | {} of the {} | {} | {} | {:.1}s |",
            f.round,
            f.action.name(),
            f.target.name(),
            f.node,
            f.roles,
            f.healed_after.as_secs_f64()
        );
    }
    let _ = writeln!(out, "\nErrors the transactional producers saw:");
    for (error, count) in &txn.errors {
        let _ = writeln!(out, "- {count} x {error}");
    }
    let _ = writeln!(out, "\nErrors the pipeline saw:");
    for (error, count) in &state.errors {
        let _ = writeln!(out, "- {count} x {error}");
    }
    out
}
