//! Consumer groups with real librdkafka clients against a real `oxbow-broker` process: how
//! members share partitions, hand them over when one leaves or dies, resume from committed
//! offsets after a broker restart, start where `auto.offset.reset` says, and what the lag
//! metric reports; and the idempotent producer writing every record once.
//!
//! Each group member polls on its own thread. A member that must die without a LeaveGroup
//! runs in a child process — this test binary again, running only
//! `a_group_member_in_a_child_process_consumes_until_it_is_killed` — which reports what it
//! does on stdout, one line per event, and is killed with SIGKILL: librdkafka keeps
//! heartbeating from its own threads, so nothing short of killing the process makes a member
//! fall silent the way a crashed one does.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::ops::Range;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use bytes::{Buf, Bytes};
use kafka_protocol::messages::ConsumerProtocolAssignment;
use kafka_protocol::protocol::Decodable;
use oxbow_e2e::harness::{self, Ack, BrokerOptions, BrokerProcess};
use parking_lot::Mutex;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const BROKER_BIN: &str = env!("CARGO_BIN_EXE_oxbow-broker");
/// Short enough that a group gathers its first members quickly, long enough that members
/// created one after the other usually land in the same first rebalance.
const INITIAL_REBALANCE_DELAY: &str = "group.initial.rebalance.delay.ms=300";
/// Every member's `session.timeout.ms`: the broker's smallest allowed value by default.
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);
const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);
/// How long a rebalance may take once the coordinator has started it: members learn of it
/// at their next heartbeat, rejoin, and the leader's assignment goes out in SyncGroup.
const REBALANCE_ALLOWANCE: Duration = Duration::from_secs(10);
/// How long new members may take to join and receive their first assignment.
const JOIN_LIMIT: Duration = Duration::from_secs(30);
/// How long consumers may take to read what was produced.
const READ_LIMIT: Duration = Duration::from_secs(120);
/// How long one client request (metadata, committed offsets, watermarks) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a member blocks in one poll, which bounds how fast it notices it must stop.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// A member thread or child process gives up after this long, whatever the test does.
const MEMBER_LIFETIME: Duration = Duration::from_secs(600);

/// Prefix of the lines a child-process member writes about itself.
const ECHO: &str = "oxbow-member:";
/// The test that, run in a child process, is a group member.
const CHILD_TEST: &str = "a_group_member_in_a_child_process_consumes_until_it_is_killed";
const CHILD_BOOTSTRAP: &str = "OXBOW_GROUPS_CHILD_BOOTSTRAP";
const CHILD_GROUP: &str = "OXBOW_GROUPS_CHILD_GROUP";
const CHILD_TOPIC: &str = "OXBOW_GROUPS_CHILD_TOPIC";
const CHILD_NAME: &str = "OXBOW_GROUPS_CHILD_NAME";
const CHILD_COMMIT_EVERY: &str = "OXBOW_GROUPS_CHILD_COMMIT_EVERY";
/// Extra client settings for the child, `key=value` per line.
const CHILD_CONFIG: &str = "OXBOW_GROUPS_CHILD_CONFIG";

// ---------------------------------------------------------------------------------------
// 1. Assignment
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_using_the_range_assignor_split_six_partitions_without_overlap() -> Result<()>
{
    let broker = start_broker()?;
    let outcome = three_members_split_six_partitions(&broker, "range").await;
    broker.explain(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_using_the_roundrobin_assignor_split_six_partitions_without_overlap(
) -> Result<()> {
    let broker = start_broker()?;
    let outcome = three_members_split_six_partitions(&broker, "roundrobin").await;
    broker.explain(outcome)
}

/// Three members each get partitions; together they hold all six, none twice, two each;
/// the coordinator reports the group Stable with the same assignment the clients hold.
async fn three_members_split_six_partitions(broker: &BrokerProcess, strategy: &str) -> Result<()> {
    let (topic, partitions) = ("split", 6);
    let group = format!("split-{strategy}");
    let bootstrap = broker.bootstrap();
    harness::create_topic(&bootstrap, topic, partitions).await?;
    let all = partition_set(partitions);

    let mut members = Vec::new();
    for name in ["member-a", "member-b", "member-c"] {
        let mut config = member_config(&bootstrap, &group, name);
        config.set("partition.assignment.strategy", strategy);
        members.push(ThreadMember::spawn(
            &config,
            topic,
            Commits::AFTER_EACH_BATCH,
            false,
        )?);
    }
    let states: Vec<Arc<MemberState>> = members.iter().map(|m| Arc::clone(&m.state)).collect();

    let held = wait_for(
        "three members hold assignments that cover every partition",
        JOIN_LIMIT,
        || holding(&states, &all),
    )
    .await?;
    check_disjoint(&held)?;
    ensure!(
        held.iter().all(|h| h.len() == 2),
        "{strategy} gave three members {held:?}; six partitions split evenly are two each"
    );

    let view = wait_for(
        "the coordinator describes the group as Stable with what the clients hold",
        REBALANCE_ALLOWANCE,
        || {
            let view = describe_group(&bootstrap, &group).map_err(|e| format!("{e:#}"))?;
            let clients: BTreeMap<String, BTreeSet<i32>> = states
                .iter()
                .map(|s| (s.name.clone(), s.assignment()))
                .collect();
            if view.state == "Stable" && view.members == clients {
                Ok(view)
            } else {
                Err(format!("coordinator {view:?}, clients {clients:?}"))
            }
        },
    )
    .await?;
    ensure!(
        view.protocol == strategy,
        "the coordinator chose protocol {:?}, every member offered only {strategy:?}",
        view.protocol
    );
    for member in members {
        member.leave()?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 2. Leaving and dying members lose no record
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_of_a_member_that_leaves_or_is_killed_are_taken_over_and_no_record_is_lost(
) -> Result<()> {
    let broker = start_broker()?;
    let outcome = leave_and_death_lose_no_record(&broker).await;
    broker.explain(outcome)
}

/// Three members read and commit after processing; one leaves cleanly, the other two take
/// its partitions at once; one of those is killed, the last takes everything after the
/// session timeout, starting exactly where the dead member had committed. Every record is
/// read at least once and no partition has a gap.
async fn leave_and_death_lose_no_record(broker: &BrokerProcess) -> Result<()> {
    let (topic, partitions, group, per_phase) = ("orders", 6, "order-workers", 1000);
    // The killed member commits only every this many records, so it dies with records
    // read but not committed, which the survivor must read again.
    let doomed_commit_every = 97;
    let bootstrap = broker.bootstrap();
    harness::create_topic(&bootstrap, topic, partitions).await?;
    let all = partition_set(partitions);
    let inspector = inspector(&bootstrap, group)?;

    let leaver = ThreadMember::spawn(
        &member_config(&bootstrap, group, "member-a"),
        topic,
        Commits::AFTER_EACH_BATCH,
        false,
    )?;
    let survivor = ThreadMember::spawn(
        &member_config(&bootstrap, group, "member-b"),
        topic,
        Commits::AFTER_EACH_BATCH,
        false,
    )?;
    let mut doomed = ChildMember::spawn(
        &bootstrap,
        group,
        topic,
        "member-c",
        doomed_commit_every,
        &[],
    )?;
    let states = [
        Arc::clone(&leaver.state),
        Arc::clone(&survivor.state),
        Arc::clone(&doomed.state),
    ];
    let held = wait_for(
        "three members hold assignments that cover every partition",
        JOIN_LIMIT,
        || holding(&states, &all),
    )
    .await?;
    check_disjoint(&held)?;

    let producer = harness::future_producer(&bootstrap)?;
    let mut acks = Vec::with_capacity(3 * per_phase);
    harness::produce_numbered(&producer, topic, 0..per_phase, |_| None, &mut acks).await?;
    wait_for(
        "the three members read the first records",
        READ_LIMIT,
        || read_all(&states, 0..per_phase),
    )
    .await?;

    // A clean leave: LeaveGroup makes the coordinator rebalance at once, so the others take
    // over well before the leaver's session would have expired.
    let left_at = Instant::now();
    leaver.leave()?;
    let remaining = [Arc::clone(&survivor.state), Arc::clone(&doomed.state)];
    let held = wait_for(
        "the two remaining members take over the leaver's partitions within its session timeout",
        SESSION_TIMEOUT,
        || holding(&remaining, &all),
    )
    .await?;
    check_disjoint(&held)?;
    let handover = left_at.elapsed();

    harness::produce_numbered(
        &producer,
        topic,
        per_phase..2 * per_phase,
        |_| None,
        &mut acks,
    )
    .await?;
    wait_for(
        "the two remaining members read the records produced after the leave",
        READ_LIMIT,
        || read_all(&states, per_phase..2 * per_phase),
    )
    .await?;
    // Once the member has handled (and, when due, committed after) every record it read,
    // the committed offsets read right after its death are all it ever committed.
    wait_for(
        "the member about to be killed has handled every record it read",
        READ_LIMIT,
        || doomed.state.idle(),
    )
    .await?;

    // A death: SIGKILL, no LeaveGroup; only the silence tells the coordinator.
    let orphaned = doomed.state.assignment();
    let killed_at = Instant::now();
    doomed.kill()?;
    let committed_at_death = committed_offsets(&inspector, topic, partitions)?;
    harness::produce_numbered(
        &producer,
        topic,
        2 * per_phase..3 * per_phase,
        |_| None,
        &mut acks,
    )
    .await?;
    let last = [Arc::clone(&survivor.state)];
    wait_for(
        "the survivor takes over every partition within the session timeout and a rebalance",
        (SESSION_TIMEOUT + REBALANCE_ALLOWANCE).saturating_sub(killed_at.elapsed()),
        || holding(&last, &all),
    )
    .await?;
    let takeover = killed_at.elapsed();

    wait_for("every record produced is read", READ_LIMIT, || {
        read_all(&states, 0..3 * per_phase)
    })
    .await?;
    let ends = high_watermarks(&inspector, topic, partitions)?;
    let at_end: BTreeMap<i32, Option<i64>> = ends.iter().map(|(&p, &end)| (p, Some(end))).collect();
    wait_for(
        "the survivor commits the end of every partition",
        READ_LIMIT,
        || match committed_offsets(&inspector, topic, partitions) {
            Ok(committed) if committed == at_end => Ok(()),
            Ok(committed) => Err(format!("committed {committed:?}, end offsets {ends:?}")),
            Err(e) => Err(format!("{e:#}")),
        },
    )
    .await?;
    survivor.leave()?;

    let read: Vec<Consumed> = states.iter().flat_map(|s| s.records()).collect();
    let duplicates = check_every_record_read(&acks, &read)?;
    check_no_gaps(&ends, &read)?;
    let reread = check_resumed_at_commit(
        &doomed.state,
        &states[1],
        &orphaned,
        &committed_at_death,
        &ends,
    )?;
    println!(
        "{} records, {} reads ({duplicates} duplicates); clean leave handed over in {handover:?}; \
         after SIGKILL the survivor held every partition in {takeover:?} and re-read {reread} \
         records the killed member had read but not committed",
        acks.len(),
        read.len()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 3. Committed offsets survive restarts
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_a_clean_restart_and_a_new_member_resumes_at_them() -> Result<()>
{
    let mut broker = start_broker()?;
    let outcome = offsets_survive_restart(&mut broker, Stop::Sigterm).await;
    broker.explain(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_sigkill_and_a_new_member_resumes_at_them() -> Result<()> {
    let mut broker = start_broker()?;
    let outcome = offsets_survive_restart(&mut broker, Stop::Sigkill).await;
    broker.explain(outcome)
}

#[derive(Debug, Clone, Copy)]
enum Stop {
    Sigterm,
    Sigkill,
}

async fn offsets_survive_restart(broker: &mut BrokerProcess, stop: Stop) -> Result<()> {
    let (topic, partitions, group, count) = ("ledger", 3, "ledger-readers", 300);
    // Where the first member stops processing, per partition (each holds 100 records).
    let targets = BTreeMap::from([(0, 10), (1, 55), (2, 99)]);
    let bootstrap = broker.bootstrap();
    harness::create_topic(&bootstrap, topic, partitions).await?;
    let producer = harness::future_producer(&bootstrap)?;
    let mut acks = Vec::with_capacity(count);
    harness::produce_numbered(
        &producer,
        topic,
        0..count,
        |seq| Some(partition_of(seq, partitions)),
        &mut acks,
    )
    .await?;
    drop(producer);

    {
        let first = subscribe(&member_config(&bootstrap, group, "reader-before"), topic)?;
        process_until(&first, &targets)?;
        first
            .commit_consumer_state(CommitMode::Sync)
            .context("committing the processed records' offsets")?;
        let committed = first
            .committed(REQUEST_TIMEOUT)
            .context("reading the committed offsets back as the member")?;
        let seen = offsets_of(&committed)?;
        let wanted: BTreeMap<i32, Option<i64>> =
            targets.iter().map(|(&p, &o)| (p, Some(o))).collect();
        ensure!(
            seen == wanted,
            "before the restart the member reads back {seen:?}, it committed {wanted:?}"
        );
        // Dropping the consumer leaves the group, which is then empty but keeps its offsets.
    }

    match stop {
        Stop::Sigterm => {
            let status = broker.stop()?;
            ensure!(status.success(), "broker exited with {status} on SIGTERM");
        }
        Stop::Sigkill => broker.kill()?,
    }
    broker.restart()?;

    let inspector = inspector(&bootstrap, group)?;
    let committed = committed_offsets(&inspector, topic, partitions)?;
    let wanted: BTreeMap<i32, Option<i64>> = targets.iter().map(|(&p, &o)| (p, Some(o))).collect();
    ensure!(
        committed == wanted,
        "after the restart ({stop:?}) OffsetFetch answers {committed:?}, the group committed \
         {wanted:?}"
    );

    // `earliest` would start at offset 0 if the committed offsets were gone.
    let second = subscribe(&member_config(&bootstrap, group, "reader-after"), topic)?;
    let firsts = first_record_per_partition(&second, partitions)?;
    for (&partition, &target) in &targets {
        let first = firsts
            .get(&partition)
            .with_context(|| format!("no record read from partition {partition}"))?;
        ensure!(
            first.offset == target,
            "after the restart ({stop:?}) the new member started partition {partition} at \
             offset {}, the group had committed {target}",
            first.offset
        );
        ensure!(
            acks.get(first.seq) == Some(&(partition, first.offset)),
            "record {first:?} is not where it was acknowledged ({:?})",
            acks.get(first.seq)
        );
    }
    Ok(())
}

/// Polls until every partition has delivered the record just before its target, storing
/// the offsets of the records below each target (the ones "processed").
fn process_until(consumer: &BaseConsumer, targets: &BTreeMap<i32, i64>) -> Result<()> {
    let deadline = Instant::now() + READ_LIMIT;
    let mut reached = BTreeSet::new();
    while reached.len() < targets.len() {
        ensure!(
            Instant::now() < deadline,
            "read up to the targets {targets:?} only in partitions {reached:?} within \
             {READ_LIMIT:?}"
        );
        let Some(message) = consumer.poll(POLL_INTERVAL) else {
            continue;
        };
        let message = message.context("consumer error while processing")?;
        let (partition, offset) = (message.partition(), message.offset());
        let target = *targets
            .get(&partition)
            .with_context(|| format!("read from unexpected partition {partition}"))?;
        if offset < target {
            consumer
                .store_offset_from_message(&message)
                .with_context(|| format!("storing the offset of {partition}@{offset}"))?;
        }
        if offset + 1 >= target {
            reached.insert(partition);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 4. auto.offset.reset
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_group_with_auto_offset_reset_earliest_reads_every_partition_from_offset_zero(
) -> Result<()> {
    let broker = start_broker()?;
    let outcome = earliest_reads_from_zero(&broker).await;
    broker.explain(outcome)
}

async fn earliest_reads_from_zero(broker: &BrokerProcess) -> Result<()> {
    let (topic, partitions, count) = ("history", 3, 30);
    let bootstrap = broker.bootstrap();
    harness::create_topic(&bootstrap, topic, partitions).await?;
    let producer = harness::future_producer(&bootstrap)?;
    let mut acks = Vec::with_capacity(count);
    harness::produce_numbered(
        &producer,
        topic,
        0..count,
        |seq| Some(partition_of(seq, partitions)),
        &mut acks,
    )
    .await?;

    let consumer = subscribe(&member_config(&bootstrap, "from-earliest", "reader"), topic)?;
    let mut read: Vec<Consumed> = Vec::with_capacity(count);
    let deadline = Instant::now() + READ_LIMIT;
    while read.len() < count {
        ensure!(
            Instant::now() < deadline,
            "read {} of {count} records within {READ_LIMIT:?}",
            read.len()
        );
        if let Some(message) = consumer.poll(POLL_INTERVAL) {
            read.push(Consumed::of(&message.context("consumer error")?)?);
        }
    }
    for partition in 0..partitions {
        let offsets: Vec<i64> = read
            .iter()
            .filter(|r| r.partition == partition)
            .map(|r| r.offset)
            .collect();
        let expected: Vec<i64> = (0..10).collect();
        ensure!(
            offsets == expected,
            "a new group reading from earliest read partition {partition} at {offsets:?}, \
             expected {expected:?}"
        );
    }
    check_every_record_read(&acks, &read)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_group_with_auto_offset_reset_latest_reads_only_records_produced_after_its_assignment(
) -> Result<()> {
    let broker = start_broker()?;
    let outcome = latest_reads_only_new_records(&broker).await;
    broker.explain(outcome)
}

/// Records written before the member's assignment are never read; records written after it
/// are read without a gap, once the member has looked up where the partitions end. (That
/// lookup follows the assignment asynchronously, so the first few records written after
/// the assignment may precede it: the member writes until every partition delivers.)
async fn latest_reads_only_new_records(broker: &BrokerProcess) -> Result<()> {
    let (topic, partitions, before) = ("news", 3, 30);
    let bootstrap = broker.bootstrap();
    harness::create_topic(&bootstrap, topic, partitions).await?;
    let producer = harness::future_producer(&bootstrap)?;
    let mut acks = Vec::new();
    let spread = |seq| Some(partition_of(seq, partitions));
    harness::produce_numbered(&producer, topic, 0..before, spread, &mut acks).await?;

    let mut config = member_config(&bootstrap, "from-latest", "latecomer");
    config.set("auto.offset.reset", "latest");
    let consumer = subscribe(&config, topic)?;
    let deadline = Instant::now() + JOIN_LIMIT;
    loop {
        let assigned = consumer.assignment().context("reading the assignment")?;
        if assigned.count() == usize::try_from(partitions)? {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the member was not assigned all {partitions} partitions within {JOIN_LIMIT:?} \
             (holds {})",
            assigned.count()
        );
        if let Some(message) = consumer.poll(POLL_INTERVAL) {
            let message = message.context("consumer error before the assignment")?;
            bail!(
                "read {}-{}@{} before being assigned",
                message.topic(),
                message.partition(),
                message.offset()
            );
        }
    }

    // Write a round (one record per partition) at a time until every partition delivers.
    let mut read: Vec<Consumed> = Vec::new();
    let deadline = Instant::now() + READ_LIMIT;
    let delivering = |read: &[Consumed]| {
        read.iter()
            .map(|r| r.partition)
            .collect::<BTreeSet<i32>>()
            .len()
    };
    while delivering(&read) < usize::try_from(partitions)? {
        ensure!(
            Instant::now() < deadline,
            "after {} records written since the assignment, only partitions {:?} delivered",
            acks.len() - before,
            read.iter().map(|r| r.partition).collect::<BTreeSet<i32>>()
        );
        let start = acks.len();
        harness::produce_numbered(&producer, topic, start..start + 3, spread, &mut acks).await?;
        read.extend(poll_for(&consumer, Duration::from_millis(500))?);
    }
    // One more round: now that every partition delivers, these must all arrive.
    let start = acks.len();
    harness::produce_numbered(&producer, topic, start..start + 3, spread, &mut acks).await?;
    let deadline = Instant::now() + READ_LIMIT;
    while !(start..start + 3).all(|seq| read.iter().any(|r| r.seq == seq)) {
        ensure!(
            Instant::now() < deadline,
            "the last round of records (from record {start}) did not arrive within \
             {READ_LIMIT:?}"
        );
        read.extend(poll_for(&consumer, POLL_INTERVAL)?);
    }

    let old: Vec<&Consumed> = read.iter().filter(|r| r.seq < before).collect();
    ensure!(
        old.is_empty(),
        "a new group reading from latest read {} records written before its assignment: {:?}",
        old.len(),
        &old[..old.len().min(5)]
    );
    check_read_where_acknowledged(&acks, &read)?;
    for partition in 0..partitions {
        let offsets: Vec<i64> = read
            .iter()
            .filter(|r| r.partition == partition)
            .map(|r| r.offset)
            .collect();
        let first = *offsets
            .first()
            .context("checked above: every partition delivered")?;
        let contiguous: Vec<i64> = (first..first + i64::try_from(offsets.len())?).collect();
        ensure!(
            offsets == contiguous,
            "partition {partition} delivered {offsets:?}: not contiguous from its first record"
        );
    }
    Ok(())
}

/// Whatever the consumer delivers within `window`.
fn poll_for(consumer: &BaseConsumer, window: Duration) -> Result<Vec<Consumed>> {
    let until = Instant::now() + window;
    let mut read = Vec::new();
    while Instant::now() < until {
        if let Some(message) = consumer.poll(POLL_INTERVAL) {
            read.push(Consumed::of(&message.context("consumer error")?)?);
        }
    }
    Ok(read)
}

// ---------------------------------------------------------------------------------------
// 5. Idempotent producer
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_librdkafka_producer_writes_ten_thousand_records_exactly_once() -> Result<()>
{
    let broker = start_broker()?;
    let outcome = idempotent_producer_writes_once(&broker).await;
    broker.explain(outcome)
}

async fn idempotent_producer_writes_once(broker: &BrokerProcess) -> Result<()> {
    let (topic, partitions, count) = ("payments", 6, 10_000);
    let bootstrap = broker.bootstrap();
    harness::create_topic(&bootstrap, topic, partitions).await?;
    let producer: FutureProducer = harness::producer_config(&bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .context("creating an idempotent producer")?;
    let mut acks = Vec::with_capacity(count);
    harness::produce_numbered(&producer, topic, 0..count, |_| None, &mut acks).await?;

    let consumer = harness::base_consumer(&bootstrap, "payments-audit")?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .with_context(|| format!("assigning {topic}-{partition}"))?;
    }
    consumer
        .assign(&assignment)
        .context("assigning every partition")?;
    let mut read = Vec::with_capacity(count);
    let deadline = Instant::now() + READ_LIMIT;
    while read.len() < count {
        ensure!(
            Instant::now() < deadline,
            "read {} of {count} records within {READ_LIMIT:?}",
            read.len()
        );
        if let Some(message) = consumer.poll(POLL_INTERVAL) {
            read.push(Consumed::of(&message.context("consumer error")?)?);
        }
    }
    // A duplicate would be a record beyond the count: listen a little longer for one.
    read.extend(poll_for(&consumer, Duration::from_millis(500))?);
    ensure!(
        read.len() == count,
        "read {} records, {count} were produced",
        read.len()
    );
    let duplicates = check_every_record_read(&acks, &read)?;
    ensure!(duplicates == 0, "{duplicates} records were read twice");
    let total: i64 = high_watermarks(&consumer, topic, partitions)?
        .values()
        .sum();
    ensure!(
        total == i64::try_from(count)?,
        "the partitions hold {total} records, {count} were produced"
    );

    let metrics = broker.scrape_metrics()?;
    let init = metric(
        &metrics,
        "oxbow_requests_total",
        &[("api", "InitProducerId")],
    )
    .context("no oxbow_requests_total{api=\"InitProducerId\"} in /metrics")?;
    ensure!(
        init >= 1.0,
        "the idempotent producer never asked for a producer id (InitProducerId count {init})"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 6. Consumer lag
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_group_lag_is_the_distance_from_the_committed_offset_to_the_partition_end(
) -> Result<()> {
    let broker = start_broker()?;
    let outcome = lag_follows_commits_and_appends(&broker).await;
    broker.explain(outcome)
}

async fn lag_follows_commits_and_appends(broker: &BrokerProcess) -> Result<()> {
    let (topic, group) = ("lagging", "lag-watchers");
    // Partition 0 holds `end` records, of which the group commits the first `committed`.
    let (end, committed, more): (i64, i64, i64) = (40, 15, 10);
    let bootstrap = broker.bootstrap();
    harness::create_topic(&bootstrap, topic, 2).await?;
    let producer = harness::future_producer(&bootstrap)?;
    let mut acks = Vec::new();
    harness::produce_numbered(
        &producer,
        topic,
        0..usize::try_from(end)?,
        |_| Some(0),
        &mut acks,
    )
    .await?;

    let member = subscribe(&member_config(&bootstrap, group, "watcher"), topic)?;
    let deadline = Instant::now() + JOIN_LIMIT;
    while member
        .assignment()
        .context("reading the assignment")?
        .count()
        < 2
    {
        ensure!(
            Instant::now() < deadline,
            "the member was not assigned both partitions within {JOIN_LIMIT:?}"
        );
        // Polling drives the join; what it reads is not the point here.
        let _ = member.poll(POLL_INTERVAL);
    }
    let commit_at = |offset: i64| -> Result<()> {
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(topic, 0, Offset::Offset(offset))
            .context("building the commit")?;
        member
            .commit(&offsets, CommitMode::Sync)
            .with_context(|| format!("committing {topic}-0 at {offset}"))
    };
    let lag = |metrics: &str| {
        metric(
            metrics,
            "oxbow_consumer_group_lag",
            &[("group", group), ("topic", topic), ("partition", "0")],
        )
    };

    commit_at(committed)?;
    let metrics = broker.scrape_metrics()?;
    ensure!(
        lag(&metrics) == Some((end - committed) as f64),
        "committed {committed} of {end}: lag is {:?}, expected {}\n{}",
        lag(&metrics),
        end - committed,
        lag_lines(&metrics)
    );
    let other = metric(
        &metrics,
        "oxbow_consumer_group_lag",
        &[("group", group), ("topic", topic), ("partition", "1")],
    );
    ensure!(
        other.is_none(),
        "partition 1 has no committed offset, yet its lag is {other:?}"
    );

    let start = acks.len();
    harness::produce_numbered(
        &producer,
        topic,
        start..start + usize::try_from(more)?,
        |_| Some(0),
        &mut acks,
    )
    .await?;
    let metrics = broker.scrape_metrics()?;
    let grown = end + more - committed;
    ensure!(
        lag(&metrics) == Some(grown as f64),
        "after {more} more records the lag is {:?}, expected {grown}\n{}",
        lag(&metrics),
        lag_lines(&metrics)
    );

    commit_at(end + more)?;
    let metrics = broker.scrape_metrics()?;
    ensure!(
        lag(&metrics) == Some(0.0),
        "committed at the end: lag is {:?}, expected 0\n{}",
        lag(&metrics),
        lag_lines(&metrics)
    );
    Ok(())
}

fn lag_lines(metrics: &str) -> String {
    let lines: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("oxbow_consumer_group_lag"))
        .collect();
    format!("lag series in /metrics: {lines:?}")
}

// ---------------------------------------------------------------------------------------
// 7. Rebalance edge cases, as Kafka's coordinator handles them
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_from_the_revoke_callback_is_accepted_while_the_group_prepares_to_rebalance(
) -> Result<()> {
    let broker = start_broker()?;
    let outcome = revoke_callback_commits(&broker).await;
    broker.explain(outcome)
}

/// The classic pattern "commit what I processed when my partitions are revoked": the member
/// commits from its revoke callback while the group is PreparingRebalance, with the current
/// generation, which Kafka accepts (it refuses only in CompletingRebalance); refusing it makes
/// every rebalance re-deliver whatever was processed since the last commit.
async fn revoke_callback_commits(broker: &BrokerProcess) -> Result<()> {
    let (topic, partitions, group, count) = ("invoices", 2, "invoice-workers", 20);
    let bootstrap = broker.bootstrap();
    harness::create_topic(&bootstrap, topic, partitions).await?;
    let all = partition_set(partitions);
    let inspector = inspector(&bootstrap, group)?;
    let producer = harness::future_producer(&bootstrap)?;
    let mut acks = Vec::new();
    harness::produce_numbered(
        &producer,
        topic,
        0..count,
        |seq| Some(partition_of(seq, partitions)),
        &mut acks,
    )
    .await?;

    let first = ThreadMember::spawn(
        &member_config(&bootstrap, group, "member-a"),
        topic,
        Commits::NEVER,
        true,
    )?;
    let firsts = [Arc::clone(&first.state)];
    wait_for("the first member reads every record", READ_LIMIT, || {
        read_all(&firsts, 0..count)
    })
    .await?;
    wait_for(
        "the first member has handled every record",
        READ_LIMIT,
        || first.state.idle(),
    )
    .await?;

    let second = ThreadMember::spawn(
        &member_config(&bootstrap, group, "member-b"),
        topic,
        Commits::AFTER_EACH_BATCH,
        false,
    )?;
    let both = [Arc::clone(&first.state), Arc::clone(&second.state)];
    wait_for("the two members share the partitions", JOIN_LIMIT, || {
        holding(&both, &all)
    })
    .await?;
    let outcomes = first.state.with(|seen| seen.revoke_commits.clone());
    let outcome = outcomes
        .first()
        .context("the first member's partitions were never revoked")?;
    ensure!(
        outcome.is_ok(),
        "the commit made from the revoke callback, while the group was preparing to \
         rebalance, failed: {outcome:?}"
    );
    let committed = committed_offsets(&inspector, topic, partitions)?;
    let wanted: BTreeMap<i32, Option<i64>> = (0..partitions).map(|p| (p, Some(10))).collect();
    ensure!(
        committed == wanted,
        "after the revoke callback's commit the group has {committed:?}, expected {wanted:?}"
    );
    first.leave()?;
    second.leave()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_dies_while_the_group_rebalances_is_dropped_after_its_session_timeout(
) -> Result<()> {
    let broker = start_broker()?;
    let outcome = death_during_rebalance(&broker).await;
    broker.explain(outcome)
}

/// A member is killed and, before its session expires, another joins: the group is
/// PreparingRebalance with a member that will never rejoin. Kafka's coordinator still
/// expires that member's session and completes the rebalance without it; waiting instead for
/// the rebalance timeout (`max.poll.interval.ms`, 60 s here, 300 s by default) stalls the
/// whole group that long.
async fn death_during_rebalance(broker: &BrokerProcess) -> Result<()> {
    let (topic, partitions, group) = ("shipments", 6, "shipment-workers");
    let max_poll = ("max.poll.interval.ms", "60000");
    let bootstrap = broker.bootstrap();
    harness::create_topic(&bootstrap, topic, partitions).await?;
    let all = partition_set(partitions);

    let mut config = member_config(&bootstrap, group, "member-b");
    config.set(max_poll.0, max_poll.1);
    let survivor = ThreadMember::spawn(&config, topic, Commits::AFTER_EACH_BATCH, false)?;
    let mut doomed = ChildMember::spawn(&bootstrap, group, topic, "member-c", 1, &[max_poll])?;
    let pair = [Arc::clone(&survivor.state), Arc::clone(&doomed.state)];
    wait_for("two members share the partitions", JOIN_LIMIT, || {
        holding(&pair, &all)
    })
    .await?;

    let killed_at = Instant::now();
    doomed.kill()?;
    let mut config = member_config(&bootstrap, group, "member-d");
    config.set(max_poll.0, max_poll.1);
    let newcomer = ThreadMember::spawn(&config, topic, Commits::AFTER_EACH_BATCH, false)?;
    let living = [Arc::clone(&survivor.state), Arc::clone(&newcomer.state)];
    let held = wait_for(
        "the survivor and the newcomer share every partition within the dead member's session \
         timeout and a rebalance",
        (SESSION_TIMEOUT + REBALANCE_ALLOWANCE).saturating_sub(killed_at.elapsed()),
        || holding(&living, &all),
    )
    .await?;
    check_disjoint(&held)?;
    println!(
        "the group rebalanced without the dead member {:?} after its death",
        killed_at.elapsed()
    );
    survivor.leave()?;
    newcomer.leave()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The child-process member
// ---------------------------------------------------------------------------------------

#[test]
#[ignore = "a group member that other tests run in a child process and kill"]
fn a_group_member_in_a_child_process_consumes_until_it_is_killed() -> Result<()> {
    let Ok(bootstrap) = std::env::var(CHILD_BOOTSTRAP) else {
        return Ok(());
    };
    let var = |key: &str| std::env::var(key).with_context(|| format!("{key} is not set"));
    let (group, topic, name) = (var(CHILD_GROUP)?, var(CHILD_TOPIC)?, var(CHILD_NAME)?);
    let every: usize = var(CHILD_COMMIT_EVERY)?
        .parse()
        .context("parsing the commit interval")?;
    // The parent holds our stdin open: if it dies without killing us, we go too.
    thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    let mut config = member_config(&bootstrap, &group, &name);
    for line in var(CHILD_CONFIG)?.lines().filter(|l| !l.is_empty()) {
        let (key, value) = line
            .split_once('=')
            .with_context(|| format!("child setting {line:?} is not key=value"))?;
        config.set(key, value);
    }
    let state = MemberState::new(&name, true);
    let consumer: BaseConsumer<MemberContext> = config
        .create_with_context(MemberContext {
            state: Arc::clone(&state),
            commit_on_revoke: false,
        })
        .context("creating the child member")?;
    consumer.subscribe(&[&topic]).context("subscribing")?;
    let commits = Commits {
        every,
        when_idle: false,
    };
    run_member(&consumer, &state, &AtomicBool::new(false), commits)
}

/// A group member in a child process, seen through the events it prints.
struct ChildMember {
    state: Arc<MemberState>,
    child: Option<Child>,
    reader: Option<JoinHandle<()>>,
}

impl ChildMember {
    fn spawn(
        bootstrap: &str,
        group: &str,
        topic: &str,
        name: &str,
        commit_every: usize,
        settings: &[(&str, &str)],
    ) -> Result<Self> {
        let exe = std::env::current_exe().context("finding this test binary")?;
        let settings: String = settings.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        let mut child = Command::new(&exe)
            .args(["--exact", CHILD_TEST, "--ignored", "--nocapture"])
            .env(CHILD_BOOTSTRAP, bootstrap)
            .env(CHILD_GROUP, group)
            .env(CHILD_TOPIC, topic)
            .env(CHILD_NAME, name)
            .env(CHILD_COMMIT_EVERY, commit_every.to_string())
            .env(CHILD_CONFIG, settings)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} as group member {name}", exe.display()))?;
        let stdout = child.stdout.take().context("the child's stdout")?;
        let state = MemberState::new(name, false);
        let seen = Arc::clone(&state);
        let reader = thread::Builder::new()
            .name(format!("{name}-events"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    match line {
                        Ok(line) => seen.apply_echo(&line),
                        Err(e) => {
                            seen.note(format!("reading the child's output: {e}"));
                            break;
                        }
                    }
                }
            })
            .context("starting the child's output reader")?;
        Ok(Self {
            state,
            child: Some(child),
            reader: Some(reader),
        })
    }

    /// SIGKILL: the member vanishes without leaving the group. Returns once every event it
    /// printed has been applied to its state.
    fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().context("killing the child member")?;
            child.wait().context("reaping the child member")?;
        }
        if let Some(reader) = self.reader.take() {
            reader
                .join()
                .map_err(|_| anyhow!("the child's output reader panicked"))?;
        }
        Ok(())
    }
}

impl Drop for ChildMember {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

// ---------------------------------------------------------------------------------------
// Group members on threads
// ---------------------------------------------------------------------------------------

/// When a member commits the offsets it stored after processing records.
#[derive(Debug, Clone, Copy)]
struct Commits {
    /// After this many records since the last successful commit.
    every: usize,
    /// Also whenever a poll returns nothing and something is left uncommitted.
    when_idle: bool,
}

impl Commits {
    const AFTER_EACH_BATCH: Commits = Commits {
        every: 50,
        when_idle: true,
    };
    const NEVER: Commits = Commits {
        every: usize::MAX,
        when_idle: false,
    };
}

/// A group member polling on its own thread until it leaves.
struct ThreadMember {
    state: Arc<MemberState>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl ThreadMember {
    fn spawn(
        config: &ClientConfig,
        topic: &str,
        commits: Commits,
        commit_on_revoke: bool,
    ) -> Result<Self> {
        let name = config.get("client.id").unwrap_or("member").to_string();
        let state = MemberState::new(&name, false);
        let consumer: BaseConsumer<MemberContext> = config
            .create_with_context(MemberContext {
                state: Arc::clone(&state),
                commit_on_revoke,
            })
            .with_context(|| format!("creating member {name}"))?;
        consumer
            .subscribe(&[topic])
            .with_context(|| format!("{name} subscribing to {topic}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = thread::Builder::new()
            .name(name.clone())
            .spawn({
                let (state, stop) = (Arc::clone(&state), Arc::clone(&stop));
                move || {
                    let outcome = run_member(&consumer, &state, &stop, commits);
                    if let Err(e) = &outcome {
                        state.note(format!("stopped: {e:#}"));
                    }
                    // Dropping the consumer closes it, which sends LeaveGroup.
                    drop(consumer);
                    outcome
                }
            })
            .with_context(|| format!("starting the thread of {name}"))?;
        Ok(Self {
            state,
            stop,
            thread: Some(thread),
        })
    }

    /// Stops polling and closes the consumer, which leaves the group cleanly.
    fn leave(mut self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| anyhow!("member {} panicked", self.state.name))?,
            None => Ok(()),
        }
    }
}

impl Drop for ThreadMember {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Polls, records every record as processed, stores its offset, and commits per `commits`.
fn run_member<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    state: &MemberState,
    stop: &AtomicBool,
    commits: Commits,
) -> Result<()> {
    let deadline = Instant::now() + MEMBER_LIFETIME;
    let mut uncommitted = 0usize;
    while !stop.load(Ordering::SeqCst) {
        ensure!(
            Instant::now() < deadline,
            "member {} still running after {MEMBER_LIFETIME:?}",
            state.name
        );
        match consumer.poll(POLL_INTERVAL) {
            Some(Ok(message)) => {
                let consumed = Consumed::of(&message)?;
                state.consumed(consumed.partition, consumed.offset, consumed.seq);
                if let Err(e) = consumer.store_offset_from_message(&message) {
                    state.note(format!(
                        "storing the offset of {}@{}: {e}",
                        consumed.partition, consumed.offset
                    ));
                }
                uncommitted += 1;
                if uncommitted >= commits.every && commit(consumer, state) {
                    uncommitted = 0;
                }
                state.settled();
            }
            Some(Err(e)) => state.note(format!("consumer error: {e}")),
            None => {
                if commits.when_idle && uncommitted > 0 && commit(consumer, state) {
                    uncommitted = 0;
                }
            }
        }
    }
    Ok(())
}

/// Commits the stored offsets and waits for the answer; false when it should be retried.
fn commit<C: ConsumerContext>(consumer: &BaseConsumer<C>, state: &MemberState) -> bool {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => {
            state.committed(Ok(()));
            true
        }
        // Nothing stored since the last commit, e.g. because the partitions were revoked.
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => true,
        Err(e) => {
            state.committed(Err(e.to_string()));
            false
        }
    }
}

/// Keeps the member's view of its assignment current from inside librdkafka's rebalance
/// callback, so the test never sees a revoked assignment as still held.
struct MemberContext {
    state: Arc<MemberState>,
    /// Commit the stored offsets before giving the partitions up.
    commit_on_revoke: bool,
}

impl ClientContext for MemberContext {}

impl ConsumerContext for MemberContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance {
            if self.commit_on_revoke {
                let outcome = consumer
                    .commit_consumer_state(CommitMode::Sync)
                    .map_err(|e| e.to_string());
                self.state
                    .with_mut(|seen| seen.revoke_commits.push(outcome));
            }
            self.state.revoked();
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => self.state.assigned(
                partitions
                    .elements()
                    .iter()
                    .map(|e| e.partition())
                    .collect(),
            ),
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => self.state.note(format!("rebalance error: {e}")),
        }
    }
}

/// A record as a member read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Consumed {
    partition: i32,
    offset: i64,
    seq: usize,
    /// How many assignments the member had received when it read the record.
    epoch: usize,
}

impl Consumed {
    /// A record as read; its epoch is set when a member records it.
    fn of(message: &BorrowedMessage<'_>) -> Result<Self> {
        let at = format!(
            "{}-{}@{}",
            message.topic(),
            message.partition(),
            message.offset()
        );
        let value = message
            .payload()
            .with_context(|| format!("record {at} has no value"))?;
        let seq = std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.strip_prefix("seq-"))
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("record {at} carries no sequence number: {value:?}"))?;
        Ok(Self {
            partition: message.partition(),
            offset: message.offset(),
            seq,
            epoch: 0,
        })
    }
}

/// What one member has seen, shared by whoever drives it and the test.
struct MemberState {
    name: String,
    /// Print every event for a parent process to read (in a child-process member).
    echo: bool,
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    assignment: BTreeSet<i32>,
    /// Assignments received so far.
    epoch: usize,
    records: Vec<Consumed>,
    /// Records fully handled, commit included when one was due.
    settled: usize,
    commits: usize,
    commit_failures: Vec<String>,
    revoke_commits: Vec<Result<(), String>>,
    notes: Vec<String>,
}

impl MemberState {
    fn new(name: &str, echo: bool) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_string(),
            echo,
            seen: Mutex::new(Seen::default()),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.seen.lock())
    }

    fn with_mut<T>(&self, f: impl FnOnce(&mut Seen) -> T) -> T {
        f(&mut self.seen.lock())
    }

    fn echo(&self, event: &str) {
        if self.echo {
            println!("{ECHO} {event}");
        }
    }

    fn assigned(&self, partitions: BTreeSet<i32>) {
        let list: Vec<String> = partitions.iter().map(i32::to_string).collect();
        self.echo(&format!("assigned {}", list.join(" ")));
        self.with_mut(|seen| {
            seen.assignment = partitions;
            seen.epoch += 1;
        });
    }

    fn revoked(&self) {
        self.echo("revoked");
        self.with_mut(|seen| seen.assignment.clear());
    }

    fn consumed(&self, partition: i32, offset: i64, seq: usize) {
        self.echo(&format!("record {partition} {offset} {seq}"));
        self.with_mut(|seen| {
            let epoch = seen.epoch;
            seen.records.push(Consumed {
                partition,
                offset,
                seq,
                epoch,
            });
        });
    }

    fn settled(&self) {
        self.echo("settled");
        self.with_mut(|seen| seen.settled += 1);
    }

    fn committed(&self, outcome: Result<(), String>) {
        self.with_mut(|seen| match outcome {
            Ok(()) => seen.commits += 1,
            Err(e) => seen.commit_failures.push(e),
        });
    }

    fn note(&self, note: String) {
        self.with_mut(|seen| seen.notes.push(note));
    }

    /// Applies one line a child-process member printed.
    fn apply_echo(&self, line: &str) {
        let Some(event) = line.strip_prefix(ECHO) else {
            // libtest's own lines, or a panic message.
            self.note(format!("child said: {line}"));
            return;
        };
        let words: Vec<&str> = event.split_whitespace().collect();
        match words.as_slice() {
            ["assigned", partitions @ ..] => {
                self.assigned(partitions.iter().filter_map(|p| p.parse().ok()).collect());
            }
            ["revoked"] => self.revoked(),
            ["settled"] => self.settled(),
            ["record", partition, offset, seq] => {
                match (partition.parse(), offset.parse(), seq.parse()) {
                    (Ok(partition), Ok(offset), Ok(seq)) => self.consumed(partition, offset, seq),
                    _ => self.note(format!("unreadable event {event:?}")),
                }
            }
            _ => self.note(format!("unknown event {event:?}")),
        }
    }

    fn assignment(&self) -> BTreeSet<i32> {
        self.with(|seen| seen.assignment.clone())
    }

    fn records(&self) -> Vec<Consumed> {
        self.with(|seen| seen.records.clone())
    }

    /// Ok once the member has finished handling every record it reported.
    fn idle(&self) -> std::result::Result<(), String> {
        self.with(|seen| {
            if seen.settled == seen.records.len() {
                Ok(())
            } else {
                Err(format!(
                    "{} handled {} of {} records",
                    self.name,
                    seen.settled,
                    seen.records.len()
                ))
            }
        })
    }

    fn summary(&self) -> String {
        self.with(|seen| {
            let recent = &seen.notes[seen.notes.len().saturating_sub(3)..];
            format!(
                "{} holds {:?} (assignment #{}), read {} records, {} commits, {} failed \
                 commits, recent notes {recent:?}",
                self.name,
                seen.assignment,
                seen.epoch,
                seen.records.len(),
                seen.commits,
                seen.commit_failures.len()
            )
        })
    }
}

// ---------------------------------------------------------------------------------------
// Conditions and checks
// ---------------------------------------------------------------------------------------

/// Polls `check` until it returns `Ok`, for at most `limit`; its `Err` says what it saw and
/// goes into the failure.
async fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> std::result::Result<T, String>,
) -> Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        match check() {
            Ok(value) => return Ok(value),
            Err(seen) if Instant::now() >= deadline => {
                bail!("{what}: not within {limit:?}; last seen: {seen}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The members' assignments, once each holds something and together they hold `all`.
fn holding(
    members: &[Arc<MemberState>],
    all: &BTreeSet<i32>,
) -> std::result::Result<Vec<BTreeSet<i32>>, String> {
    let held: Vec<BTreeSet<i32>> = members.iter().map(|m| m.assignment()).collect();
    let union: BTreeSet<i32> = held.iter().flatten().copied().collect();
    if held.iter().all(|h| !h.is_empty()) && union == *all {
        Ok(held)
    } else {
        let states: Vec<String> = members.iter().map(|m| m.summary()).collect();
        Err(states.join("; "))
    }
}

fn check_disjoint(held: &[BTreeSet<i32>]) -> Result<()> {
    let mut owners: BTreeMap<i32, usize> = BTreeMap::new();
    for partitions in held {
        for &partition in partitions {
            *owners.entry(partition).or_default() += 1;
        }
    }
    let shared: Vec<i32> = owners
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(&p, _)| p)
        .collect();
    ensure!(
        shared.is_empty(),
        "partitions {shared:?} are assigned to more than one member: {held:?}"
    );
    Ok(())
}

/// Ok once some member has read every record numbered in `seqs`.
fn read_all(members: &[Arc<MemberState>], seqs: Range<usize>) -> std::result::Result<(), String> {
    let mut seen = vec![false; seqs.len()];
    for member in members {
        member.with(|s| {
            for record in &s.records {
                if seqs.contains(&record.seq) {
                    seen[record.seq - seqs.start] = true;
                }
            }
        });
    }
    let missing = seen.iter().filter(|&&s| !s).count();
    if missing == 0 {
        Ok(())
    } else {
        let states: Vec<String> = members.iter().map(|m| m.summary()).collect();
        Err(format!(
            "{missing} of {} records unread; {}",
            seqs.len(),
            states.join("; ")
        ))
    }
}

/// Every record read is where it was acknowledged.
fn check_read_where_acknowledged(acks: &[Ack], read: &[Consumed]) -> Result<()> {
    for record in read {
        let ack = acks
            .get(record.seq)
            .with_context(|| format!("read {record:?}, which was never produced"))?;
        ensure!(
            (record.partition, record.offset) == *ack,
            "record {} read at {}@{}, acknowledged at {}@{}",
            record.seq,
            record.partition,
            record.offset,
            ack.0,
            ack.1
        );
    }
    Ok(())
}

/// Every acknowledged record was read at least once, where it was acknowledged; returns how
/// many reads were duplicates.
fn check_every_record_read(acks: &[Ack], read: &[Consumed]) -> Result<usize> {
    check_read_where_acknowledged(acks, read)?;
    let mut times = vec![0usize; acks.len()];
    for record in read {
        times[record.seq] += 1;
    }
    let missing: Vec<usize> = (0..acks.len()).filter(|&seq| times[seq] == 0).collect();
    ensure!(
        missing.is_empty(),
        "{} of {} acknowledged records were never read, first {:?}",
        missing.len(),
        acks.len(),
        &missing[..missing.len().min(10)]
    );
    Ok(read.len() - acks.len())
}

/// Per partition, the offsets read are exactly `0..end`: no gap, nothing past the end.
fn check_no_gaps(ends: &BTreeMap<i32, i64>, read: &[Consumed]) -> Result<()> {
    for (&partition, &end) in ends {
        let offsets: BTreeSet<i64> = read
            .iter()
            .filter(|r| r.partition == partition)
            .map(|r| r.offset)
            .collect();
        let expected: BTreeSet<i64> = (0..end).collect();
        if offsets != expected {
            let gaps: Vec<i64> = expected.difference(&offsets).take(10).copied().collect();
            let beyond: Vec<i64> = offsets.difference(&expected).take(10).copied().collect();
            bail!(
                "partition {partition} (end offset {end}): offsets never read {gaps:?}, read \
                 past the end {beyond:?}"
            );
        }
    }
    Ok(())
}

/// The member that took over a dead member's partitions started each exactly at the offset
/// the dead member had committed, so it read again whatever the dead one had read without
/// committing. Returns how many records that was.
fn check_resumed_at_commit(
    dead: &MemberState,
    heir: &MemberState,
    orphaned: &BTreeSet<i32>,
    committed: &BTreeMap<i32, Option<i64>>,
    ends: &BTreeMap<i32, i64>,
) -> Result<usize> {
    let (dead_epoch, dead_read) = dead.with(|s| (s.epoch, s.records.clone()));
    let (heir_epoch, heir_read) = heir.with(|s| (s.epoch, s.records.clone()));
    let mut reread = 0;
    for &partition in orphaned {
        // No commit at all means the heir starts from the beginning (auto.offset.reset).
        let from = committed.get(&partition).copied().flatten().unwrap_or(0);
        let end = ends.get(&partition).copied().unwrap_or(0);
        let heir_offsets: BTreeSet<i64> = heir_read
            .iter()
            .filter(|r| r.epoch == heir_epoch && r.partition == partition)
            .map(|r| r.offset)
            .collect();
        match heir_offsets.first() {
            Some(&first) => ensure!(
                first == from,
                "partition {partition}: the killed member had committed offset {from}, the \
                 member that took over started at {first}"
            ),
            None => ensure!(
                from == end,
                "partition {partition}: the member that took over read nothing of it, yet the \
                 committed offset {from} is short of the end {end}"
            ),
        }
        let uncommitted: Vec<i64> = dead_read
            .iter()
            .filter(|r| r.epoch == dead_epoch && r.partition == partition && r.offset >= from)
            .map(|r| r.offset)
            .collect();
        let lost: Vec<i64> = uncommitted
            .iter()
            .copied()
            .filter(|o| !heir_offsets.contains(o))
            .collect();
        ensure!(
            lost.is_empty(),
            "partition {partition}: the killed member read offsets {lost:?} without committing \
             them and the member that took over never read them again"
        );
        reread += uncommitted.len();
    }
    Ok(reread)
}

// ---------------------------------------------------------------------------------------
// Broker, topics, records, and what the coordinator reports
// ---------------------------------------------------------------------------------------

fn start_broker() -> Result<BrokerProcess> {
    BrokerProcess::start(
        BrokerOptions::new(BROKER_BIN).args(["--override", INITIAL_REBALANCE_DELAY]),
    )
}

/// Settings of a subscribing group member: explicit commits of explicitly stored offsets.
fn member_config(bootstrap: &str, group: &str, name: &str) -> ClientConfig {
    let mut config = harness::client_config(bootstrap);
    config
        .set("group.id", group)
        .set("client.id", name)
        .set(
            "session.timeout.ms",
            SESSION_TIMEOUT.as_millis().to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            HEARTBEAT_INTERVAL.as_millis().to_string(),
        )
        .set("partition.assignment.strategy", "range")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false");
    config
}

fn subscribe(config: &ClientConfig, topic: &str) -> Result<BaseConsumer> {
    let consumer: BaseConsumer = config.create().context("creating a group member")?;
    consumer
        .subscribe(&[topic])
        .with_context(|| format!("subscribing to {topic}"))?;
    Ok(consumer)
}

/// A consumer that only asks the coordinator about `group` (committed offsets, watermarks):
/// it never subscribes, so it never joins.
fn inspector(bootstrap: &str, group: &str) -> Result<BaseConsumer> {
    harness::base_consumer(bootstrap, group)
}

/// Polls a member until it has read one record from each of `partitions`; the first of each.
fn first_record_per_partition(
    consumer: &BaseConsumer,
    partitions: i32,
) -> Result<BTreeMap<i32, Consumed>> {
    let deadline = Instant::now() + READ_LIMIT;
    let mut firsts = BTreeMap::new();
    while firsts.len() < usize::try_from(partitions)? {
        ensure!(
            Instant::now() < deadline,
            "read from partitions {:?} only within {READ_LIMIT:?}",
            firsts.keys().collect::<Vec<_>>()
        );
        if let Some(message) = consumer.poll(POLL_INTERVAL) {
            let record = Consumed::of(&message.context("consumer error")?)?;
            firsts.entry(record.partition).or_insert(record);
        }
    }
    Ok(firsts)
}

fn partition_set(partitions: i32) -> BTreeSet<i32> {
    (0..partitions).collect()
}

fn partition_of(seq: usize, partitions: i32) -> i32 {
    i32::try_from(seq % usize::try_from(partitions).unwrap_or(1)).unwrap_or(0)
}

/// The group's committed offset per partition (`None`: nothing committed), by OffsetFetch.
fn committed_offsets(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: i32,
) -> Result<BTreeMap<i32, Option<i64>>> {
    let mut wanted = TopicPartitionList::new();
    for partition in 0..partitions {
        wanted.add_partition(topic, partition);
    }
    let committed = consumer
        .committed_offsets(wanted, REQUEST_TIMEOUT)
        .with_context(|| format!("OffsetFetch for {topic}"))?;
    offsets_of(&committed)
}

fn offsets_of(list: &TopicPartitionList) -> Result<BTreeMap<i32, Option<i64>>> {
    list.elements()
        .iter()
        .map(|e| {
            e.error()
                .with_context(|| format!("committed offset of partition {}", e.partition()))?;
            let offset = match e.offset() {
                Offset::Offset(offset) => Some(offset),
                Offset::Invalid => None,
                other => bail!("partition {} has committed offset {other:?}", e.partition()),
            };
            Ok((e.partition(), offset))
        })
        .collect()
}

/// The high watermark of each partition, by ListOffsets.
fn high_watermarks(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: i32,
) -> Result<BTreeMap<i32, i64>> {
    (0..partitions)
        .map(|partition| {
            let (_, high) = consumer
                .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
                .with_context(|| format!("ListOffsets {topic}-{partition}"))?;
            Ok((partition, high))
        })
        .collect()
}

/// A group as DescribeGroups reports it; members by client id, with their partitions.
#[derive(Debug)]
struct GroupView {
    state: String,
    protocol: String,
    members: BTreeMap<String, BTreeSet<i32>>,
}

fn describe_group(bootstrap: &str, group: &str) -> Result<GroupView> {
    let client: BaseConsumer = harness::client_config(bootstrap)
        .create()
        .context("creating a client to describe groups")?;
    let groups = client
        .fetch_group_list(Some(group), REQUEST_TIMEOUT)
        .with_context(|| format!("describing group {group}"))?;
    let info = groups
        .groups()
        .iter()
        .find(|g| g.name() == group)
        .with_context(|| format!("group {group} is not described"))?;
    let mut members = BTreeMap::new();
    for member in info.members() {
        let partitions = decode_assignment(member.assignment().unwrap_or_default())
            .with_context(|| format!("assignment of {}", member.client_id()))?;
        members.insert(member.client_id().to_string(), partitions);
    }
    Ok(GroupView {
        state: info.state().to_string(),
        protocol: info.protocol().to_string(),
        members,
    })
}

/// The partitions in a consumer protocol assignment (a version, then the assignment).
fn decode_assignment(bytes: &[u8]) -> Result<BTreeSet<i32>> {
    if bytes.len() < 2 {
        return Ok(BTreeSet::new());
    }
    let mut buf = Bytes::copy_from_slice(bytes);
    let version = buf.get_i16();
    let assignment = ConsumerProtocolAssignment::decode(&mut buf, version.clamp(0, 3))
        .context("decoding a consumer protocol assignment")?;
    Ok(assignment
        .assigned_partitions
        .iter()
        .flat_map(|t| t.partitions.iter().copied())
        .collect())
}

/// The value of the series `name{labels}` (exactly those labels) in Prometheus text.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: BTreeMap<&str, &str> = labels.iter().copied().collect();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric_name, label_text) = match series.split_once('{') {
                Some((metric_name, rest)) => (metric_name, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let found: BTreeMap<&str, &str> = label_text
                .split(',')
                .filter(|pair| !pair.is_empty())
                .filter_map(|pair| {
                    let (key, value) = pair.split_once('=')?;
                    Some((key, value.trim_matches('"')))
                })
                .collect();
            (metric_name == name && found == wanted)
                .then(|| value.parse().ok())
                .flatten()
        })
}
