//! Transactions with a real librdkafka client against a real `oxbow-broker` process: what a
//! `read_committed` consumer sees of committed, aborted and open transactions, fencing of a
//! zombie producer, offsets committed in a transaction, timeouts, and restarts.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use oxbow_e2e::harness::{self, sample, BrokerOptions, BrokerProcess};
use oxbow_e2e::kafka::eventually;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

mod support;

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, EndTxnRequest, FindCoordinatorRequest,
    GroupId, InitProducerIdRequest, OffsetFetchRequest, ProducerId, TransactionalId,
    TxnOffsetCommitRequest,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use support::{call, connect, create_topic_ok, produce_request, topic_name, BatchBuilder};

const BROKER_BIN: &str = env!("CARGO_BIN_EXE_oxbow-broker");
const WAIT: Duration = Duration::from_secs(30);

fn start(args: &[&str]) -> Result<BrokerProcess> {
    BrokerProcess::start(BrokerOptions::new(BROKER_BIN).args(args.iter().copied()))
}

fn transactional_producer(bootstrap: &str, id: &str, timeout_ms: u32) -> Result<BaseProducer> {
    let producer: BaseProducer = harness::client_config(bootstrap)
        .set("transactional.id", id)
        .set("transaction.timeout.ms", timeout_ms.to_string())
        // librdkafka wants its socket and message timeouts within the transaction timeout.
        .set("socket.timeout.ms", timeout_ms.min(30_000).to_string())
        .set("message.timeout.ms", timeout_ms.min(30_000).to_string())
        .set("linger.ms", "5")
        .create()
        .context("creating a transactional producer")?;
    producer
        .init_transactions(WAIT)
        .context("init_transactions")?;
    Ok(producer)
}

fn send(
    producer: &BaseProducer,
    topic: &str,
    values: impl IntoIterator<Item = String>,
) -> Result<()> {
    for value in values {
        let key = value.clone();
        let mut record = BaseRecord::to(topic).key(&key).payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((
                    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    r,
                )) => {
                    producer.poll(Duration::from_millis(10));
                    record = r;
                }
                Err((e, _)) => bail!("send failed: {e}"),
            }
        }
    }
    producer.flush(WAIT).context("flush")?;
    Ok(())
}

fn consumer(bootstrap: &str, isolation: &str) -> Result<BaseConsumer> {
    harness::consumer_config(bootstrap, &format!("reader-{isolation}"))
        .set("isolation.level", isolation)
        .create()
        .context("creating a consumer")
}

/// Reads every partition of `topic` from the start until `want` values arrived or `quiet`
/// passed without any; returns the values in arrival order.
fn read_all(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: i32,
    want: usize,
    quiet: Duration,
) -> Result<Vec<String>> {
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut values = Vec::new();
    let mut last = Instant::now();
    let deadline = Instant::now() + WAIT;
    while values.len() < want && last.elapsed() < quiet && Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.context("consuming")?;
            values.push(String::from_utf8_lossy(message.payload().unwrap_or_default()).to_string());
            last = Instant::now();
        }
    }
    Ok(values)
}

fn named(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_sees_committed_transactions_only_and_read_uncommitted_sees_all(
) -> Result<()> {
    let broker = start(&[])?;
    let outcome = async {
        let bootstrap = broker.bootstrap();
        harness::create_topic(&bootstrap, "txn", 3).await?;
        let producer = transactional_producer(&bootstrap, "writer", 60_000)?;
        producer.begin_transaction()?;
        send(&producer, "txn", named("committed", 100))?;
        producer.commit_transaction(WAIT)?;
        producer.begin_transaction()?;
        send(&producer, "txn", named("aborted", 50))?;
        producer.abort_transaction(WAIT)?;
        producer.begin_transaction()?;
        send(&producer, "txn", named("later", 100))?;
        producer.commit_transaction(WAIT)?;

        let committed = read_all(
            &consumer(&bootstrap, "read_committed")?,
            "txn",
            3,
            200,
            Duration::from_secs(5),
        )?;
        ensure!(
            committed.len() == 200,
            "read_committed got {} values",
            committed.len()
        );
        ensure!(
            committed.iter().all(|v| !v.starts_with("aborted")),
            "read_committed saw aborted records"
        );
        let mut sorted = committed.clone();
        sorted.sort();
        let mut expected = [named("committed", 100), named("later", 100)].concat();
        expected.sort();
        ensure!(sorted == expected, "read_committed read {sorted:?}");
        let all = read_all(
            &consumer(&bootstrap, "read_uncommitted")?,
            "txn",
            3,
            250,
            Duration::from_secs(5),
        )?;
        ensure!(
            all.len() == 250,
            "read_uncommitted got {} values",
            all.len()
        );
        Ok(())
    }
    .await;
    broker.explain(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_holds_read_committed_consumers_until_it_commits() -> Result<()> {
    let broker = start(&[])?;
    let outcome = async {
        let bootstrap = broker.bootstrap();
        harness::create_topic(&bootstrap, "open", 1).await?;
        let producer = transactional_producer(&bootstrap, "slow-writer", 60_000)?;
        producer.begin_transaction()?;
        send(&producer, "open", named("pending", 10))?;
        let uncommitted = read_all(
            &consumer(&bootstrap, "read_uncommitted")?,
            "open",
            1,
            10,
            Duration::from_secs(5),
        )?;
        ensure!(
            uncommitted.len() == 10,
            "read_uncommitted got {}",
            uncommitted.len()
        );
        let reader = consumer(&bootstrap, "read_committed")?;
        let early = read_all(&reader, "open", 1, 1, Duration::from_secs(3))?;
        ensure!(
            early.is_empty(),
            "read_committed saw {early:?} before the commit"
        );
        let lag = "oxbow_last_stable_offset_lag{partition=\"0\",topic=\"open\"}";
        let open = broker.scrape_metrics()?;
        ensure!(
            sample(&open, "oxbow_transactions_open") == Some(1.0)
                && sample(&open, lag) == Some(10.0),
            "while the transaction is open /metrics says:\n{open}"
        );
        producer.commit_transaction(WAIT)?;
        let late = read_all(&reader, "open", 1, 10, Duration::from_secs(10))?;
        ensure!(
            late == named("pending", 10),
            "after the commit read_committed got {late:?}"
        );
        // The coordinator counts a transaction once its markers are written and its
        // completion is logged, a moment after the client's commit returns.
        eventually("the commit in /metrics", Duration::from_secs(10), || {
            let ended = broker.scrape_metrics()?;
            ensure!(
                sample(&ended, "oxbow_transactions_open") == Some(0.0)
                    && sample(
                        &ended,
                        "oxbow_transactions_ended_total{outcome=\"committed\"}"
                    ) == Some(1.0)
                    && sample(&ended, lag) == Some(0.0),
                "after the commit /metrics says:\n{ended}"
            );
            Ok(())
        })?;
        Ok(())
    }
    .await;
    broker.explain(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_producer_instance_fences_the_old_one_and_aborts_its_transaction() -> Result<()> {
    let broker = start(&[])?;
    let outcome = async {
        let bootstrap = broker.bootstrap();
        harness::create_topic(&bootstrap, "fenced", 2).await?;
        let zombie = transactional_producer(&bootstrap, "app", 60_000)?;
        zombie.begin_transaction()?;
        send(&zombie, "fenced", named("zombie", 20))?;
        let successor = transactional_producer(&bootstrap, "app", 60_000)?;
        successor.begin_transaction()?;
        send(&successor, "fenced", named("successor", 20))?;
        successor.commit_transaction(WAIT)?;
        let commit = zombie.commit_transaction(Duration::from_secs(10));
        ensure!(commit.is_err(), "the fenced producer committed");
        let values = read_all(
            &consumer(&bootstrap, "read_committed")?,
            "fenced",
            2,
            20,
            Duration::from_secs(5),
        )?;
        let mut values = values;
        values.sort();
        let mut expected = named("successor", 20);
        expected.sort();
        ensure!(values == expected, "read_committed got {values:?}");
        Ok(())
    }
    .await;
    broker.explain(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_sent_in_a_transaction_are_committed_with_it_and_dropped_on_abort() -> Result<()> {
    let broker = start(&[])?;
    let outcome = async {
        let bootstrap = broker.bootstrap();
        harness::create_topic(&bootstrap, "input", 1).await?;
        harness::create_topic(&bootstrap, "output", 1).await?;
        let plain = harness::future_producer(&bootstrap)?;
        for i in 0..10 {
            plain
                .send(
                    rdkafka::producer::FutureRecord::<(), _>::to("input")
                        .payload(&format!("in-{i}")),
                    WAIT,
                )
                .await
                .map_err(|(e, _)| anyhow::anyhow!("seeding input: {e}"))?;
        }
        let group = "copier";
        let input: BaseConsumer = harness::consumer_config(&bootstrap, group)
            .set("isolation.level", "read_committed")
            .create()?;
        input.subscribe(&["input"])?;
        let producer = transactional_producer(&bootstrap, "copier-1", 60_000)?;
        let mut copied = 0;
        let deadline = Instant::now() + WAIT;
        producer.begin_transaction()?;
        while copied < 10 && Instant::now() < deadline {
            if let Some(message) = input.poll(Duration::from_millis(100)) {
                let message = message?;
                let value =
                    String::from_utf8_lossy(message.payload().unwrap_or_default()).to_string();
                send(&producer, "output", [value])?;
                copied += 1;
            }
        }
        ensure!(copied == 10, "copied {copied} records");
        let mut offsets = TopicPartitionList::new();
        offsets.add_partition_offset("input", 0, Offset::Offset(10))?;
        let metadata = input.group_metadata().context("group metadata")?;
        producer.send_offsets_to_transaction(&offsets, &metadata, WAIT)?;
        producer.commit_transaction(WAIT)?;

        let committed = input.committed(WAIT)?;
        let at = committed.find_partition("input", 0).map(|p| p.offset());
        ensure!(
            at == Some(Offset::Offset(10)),
            "the group's offset is {at:?}"
        );

        producer.begin_transaction()?;
        let mut offsets = TopicPartitionList::new();
        offsets.add_partition_offset("input", 0, Offset::Offset(3))?;
        producer.send_offsets_to_transaction(&offsets, &metadata, WAIT)?;
        // While that offset is pending, a read_committed member asks for stable offsets
        // (OffsetFetch require_stable): the coordinator answers UNSTABLE_OFFSET_COMMIT and
        // librdkafka retries until its timeout. A read_uncommitted client of the group gets
        // the last committed offset at once.
        let pending = input.committed(Duration::from_secs(3));
        ensure!(
            pending.is_err(),
            "a read_committed member read {pending:?} while the transaction was open"
        );
        let peek: BaseConsumer = harness::consumer_config(&bootstrap, group)
            .set("isolation.level", "read_uncommitted")
            .create()?;
        let mut wanted = TopicPartitionList::new();
        wanted.add_partition("input", 0);
        let seen = peek.committed_offsets(wanted, WAIT)?;
        let at = seen.find_partition("input", 0).map(|p| p.offset());
        ensure!(
            at == Some(Offset::Offset(10)),
            "read_uncommitted saw {at:?} while the transaction was open"
        );
        producer.abort_transaction(WAIT)?;
        let committed = input.committed(WAIT)?;
        let at = committed.find_partition("input", 0).map(|p| p.offset());
        ensure!(
            at == Some(Offset::Offset(10)),
            "after the abort the offset is {at:?}"
        );
        let output = read_all(
            &consumer(&bootstrap, "read_committed")?,
            "output",
            1,
            10,
            Duration::from_secs(5),
        )?;
        ensure!(output == named("in", 10), "output holds {output:?}");
        Ok(())
    }
    .await;
    broker.explain(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_transaction_is_aborted_and_transactions_survive_a_restart() -> Result<()> {
    let mut broker = start(&[
        "--override",
        "transaction.abort.timed.out.transaction.cleanup.interval.ms=500",
    ])?;
    let outcome = async {
        let bootstrap = broker.bootstrap();
        harness::create_topic(&bootstrap, "durable", 1).await?;
        let producer = transactional_producer(&bootstrap, "keeper", 60_000)?;
        producer.begin_transaction()?;
        send(&producer, "durable", named("kept", 5))?;
        producer.commit_transaction(WAIT)?;
        producer.begin_transaction()?;
        send(&producer, "durable", named("dropped", 5))?;
        producer.abort_transaction(WAIT)?;
        drop(producer);
        // A producer that goes away inside a transaction: the coordinator aborts it after
        // its timeout, which frees the last stable offset.
        let abandoned = transactional_producer(&bootstrap, "abandoned", 2_000)?;
        abandoned.begin_transaction()?;
        send(&abandoned, "durable", named("abandoned", 5))?;
        let after = transactional_producer(&bootstrap, "after", 60_000)?;
        after.begin_transaction()?;
        send(&after, "durable", named("after", 5))?;
        after.commit_transaction(WAIT)?;
        let values = read_all(
            &consumer(&bootstrap, "read_committed")?,
            "durable",
            1,
            10,
            Duration::from_secs(15),
        )?;
        ensure!(
            values == [named("kept", 5), named("after", 5)].concat(),
            "before the restart read_committed got {values:?}"
        );
        eventually("the timeout in /metrics", Duration::from_secs(10), || {
            let text = broker.scrape_metrics()?;
            ensure!(
                sample(&text, "oxbow_transactions_timed_out_total") == Some(1.0)
                    && sample(&text, "oxbow_transactions_ended_total{outcome=\"aborted\"}")
                        == Some(2.0)
                    && sample(
                        &text,
                        "oxbow_transactions_ended_total{outcome=\"committed\"}"
                    ) == Some(2.0),
                "after one timeout, one abort and two commits /metrics says:\n{text}"
            );
            Ok(())
        })?;
        Ok::<(), anyhow::Error>(())
    }
    .await;
    let outcome = match outcome {
        Ok(()) => {
            broker.restart()?;
            let bootstrap = broker.bootstrap();
            let values = read_all(
                &consumer(&bootstrap, "read_committed")?,
                "durable",
                1,
                10,
                Duration::from_secs(15),
            )?;
            let counts: BTreeMap<String, usize> =
                values.iter().fold(BTreeMap::new(), |mut m, v| {
                    *m.entry(v.split('-').next().unwrap_or_default().to_string())
                        .or_default() += 1;
                    m
                });
            if values == [named("kept", 5), named("after", 5)].concat() {
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "after the restart read_committed got {counts:?}: {values:?}"
                ))
            }
        }
        Err(e) => Err(e),
    };
    broker.explain(outcome)
}

/// The error code of the one partition a Produce request wrote to.
async fn produce_code(
    conn: &mut oxbow_broker::client::Connection,
    id: &str,
    records: bytes::Bytes,
) -> Result<i16> {
    let request = produce_request("wire", 0, records, -1)
        .with_transactional_id(Some(TransactionalId(StrBytes::from_string(id.to_string()))));
    let response = call(conn, &request, 9).await?;
    response
        .responses
        .first()
        .and_then(|t| t.partition_responses.first())
        .map(|p| p.error_code)
        .context("no partition in the Produce answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_leader_refuses_transactional_batches_outside_the_transaction_and_client_markers(
) -> Result<()> {
    let broker = start(&[])?;
    let outcome = async {
        let mut conn = connect(&broker).await?;
        create_topic_ok(&mut conn, "wire", 1, &[]).await?;
        let id = "wire-txn";
        let find = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_static_str(id))
            .with_key_type(1);
        let found = call(&mut conn, &find, 3).await?;
        ensure!(
            found.error_code == 0,
            "FindCoordinator: {}",
            found.error_code
        );
        let init = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str(id))))
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let deadline = Instant::now() + WAIT;
        let initialized = loop {
            let r = call(&mut conn, &init, 4).await?;
            if r.error_code == ResponseError::CoordinatorLoadInProgress.code()
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            ensure!(r.error_code == 0, "InitProducerId: {}", r.error_code);
            break r;
        };
        let (pid, epoch) = (initialized.producer_id.0, initialized.producer_epoch);
        let batch = |sequence: i32| {
            BatchBuilder::default()
                .producer(pid, epoch)
                .base_sequence(sequence)
                .transactional()
                .values(&["v"])
        };

        let refused = produce_code(&mut conn, id, batch(0)?).await?;
        ensure!(
            refused == ResponseError::InvalidTxnState.code(),
            "a partition not added to the transaction: {refused}"
        );
        let add = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(StrBytes::from_static_str(id)))
            .with_v3_and_below_producer_id(ProducerId(pid))
            .with_v3_and_below_producer_epoch(epoch)
            .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                .with_name(topic_name("wire"))
                .with_partitions(vec![0])]);
        let added = call(&mut conn, &add, 3).await?;
        let codes: Vec<i16> = added
            .results_by_topic_v3_and_below
            .iter()
            .flat_map(|t| {
                t.results_by_partition
                    .iter()
                    .map(|p| p.partition_error_code)
            })
            .collect();
        ensure!(codes == [0], "AddPartitionsToTxn: {codes:?}");
        let accepted = produce_code(&mut conn, id, batch(0)?).await?;
        ensure!(accepted == 0, "a partition in the transaction: {accepted}");

        let marker = oxbow_broker::log::control::marker_batch(
            pid,
            epoch,
            oxbow_broker::log::control::Marker {
                commit: true,
                coordinator_epoch: 0,
            },
            0,
        )
        .map_err(anyhow::Error::msg)?;
        let forged = produce_code(&mut conn, id, marker).await?;
        ensure!(
            forged == ResponseError::InvalidRecord.code(),
            "a client's control batch: {forged}"
        );

        let end = EndTxnRequest::default()
            .with_transactional_id(TransactionalId(StrBytes::from_static_str(id)))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(false);
        let ended = call(&mut conn, &end, 3).await?;
        ensure!(ended.error_code == 0, "EndTxn: {}", ended.error_code);
        // A late batch of the aborted transaction may not open a new one nobody would end.
        let late = produce_code(&mut conn, id, batch(1)?).await?;
        ensure!(
            late == ResponseError::InvalidTxnState.code(),
            "a late batch after the abort: {late}"
        );
        Ok(())
    }
    .await;
    broker.explain(outcome)
}

/// Whether a coordinator's answer asks to try again (the coordinator is loading or moving, a
/// transaction is still completing).
fn transient(code: i16) -> bool {
    [
        ResponseError::CoordinatorLoadInProgress,
        ResponseError::CoordinatorNotAvailable,
        ResponseError::NotCoordinator,
        ResponseError::ConcurrentTransactions,
    ]
    .iter()
    .any(|e| e.code() == code)
}

/// InitProducerId for `id` as a new instance would send it: (producer id, epoch).
async fn init_producer_id(
    conn: &mut oxbow_broker::client::Connection,
    id: &str,
) -> Result<(i64, i16)> {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(StrBytes::from_string(id.to_string()))))
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let deadline = Instant::now() + WAIT;
    loop {
        let r = call(conn, &request, 4).await?;
        if transient(r.error_code) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        ensure!(r.error_code == 0, "InitProducerId: {}", r.error_code);
        return Ok((r.producer_id.0, r.producer_epoch));
    }
}

/// AddOffsetsToTxn of `group`, then TxnOffsetCommit of `offset` for partition 0 of `topic`:
/// the TxnOffsetCommit's error code.
async fn commit_offset_in_txn(
    conn: &mut oxbow_broker::client::Connection,
    (id, group, topic): (&str, &str, &str),
    (producer_id, epoch): (i64, i16),
    offset: i64,
) -> Result<i16> {
    let transactional_id = TransactionalId(StrBytes::from_string(id.to_string()));
    let group_id = GroupId(StrBytes::from_string(group.to_string()));
    let add = AddOffsetsToTxnRequest::default()
        .with_transactional_id(transactional_id.clone())
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch)
        .with_group_id(group_id.clone());
    let commit = TxnOffsetCommitRequest::default()
        .with_transactional_id(transactional_id)
        .with_group_id(group_id)
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch)
        .with_generation_id(-1)
        .with_topics(vec![TxnOffsetCommitRequestTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(offset)
                .with_committed_leader_epoch(-1)])]);
    let deadline = Instant::now() + WAIT;
    loop {
        let added = call(conn, &add, 3).await?.error_code;
        if transient(added) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        if added != 0 {
            return Ok(added);
        }
        let r = call(conn, &commit, 3).await?;
        let code = r
            .topics
            .first()
            .and_then(|t| t.partitions.first())
            .map(|p| p.error_code)
            .context("no partition in the TxnOffsetCommit answer")?;
        if transient(code) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        return Ok(code);
    }
}

/// A producer instance fenced by a newer one with the same transactional id cannot slip its
/// offsets into the group: the offsets partition saw the coordinator's abort marker with the
/// bumped epoch, so the zombie's TxnOffsetCommit (no sequence, the old epoch) is refused
/// instead of being staged and committed with the new instance's transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_producers_transactional_offsets_are_refused_and_never_committed() -> Result<()> {
    let broker = start(&[])?;
    let outcome = async {
        let mut conn = connect(&broker).await?;
        create_topic_ok(&mut conn, "zombie-in", 1, &[]).await?;
        let names = ("zombie-txn", "zombie-group", "zombie-in");
        // FindCoordinator creates the internal topics, as a client's first one does.
        for (key, key_type) in [(names.0, 1), (names.1, 0)] {
            let find = FindCoordinatorRequest::default()
                .with_key(StrBytes::from_static_str(key))
                .with_key_type(key_type);
            let deadline = Instant::now() + WAIT;
            loop {
                let found = call(&mut conn, &find, 3).await?;
                if transient(found.error_code) && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                ensure!(
                    found.error_code == 0,
                    "FindCoordinator {key}: {}",
                    found.error_code
                );
                break;
            }
        }
        let (producer_id, old_epoch) = init_producer_id(&mut conn, names.0).await?;
        let code = commit_offset_in_txn(&mut conn, names, (producer_id, old_epoch), 5).await?;
        ensure!(code == 0, "the first instance's TxnOffsetCommit: {code}");

        // A new instance: the coordinator aborts the open transaction with a bumped epoch.
        let (same_id, new_epoch) = init_producer_id(&mut conn, names.0).await?;
        ensure!(
            same_id == producer_id && new_epoch > old_epoch,
            "the new instance got {same_id}/{new_epoch}, the old one had {producer_id}/{old_epoch}"
        );
        let code = commit_offset_in_txn(&mut conn, names, (producer_id, new_epoch), 7).await?;
        ensure!(code == 0, "the new instance's TxnOffsetCommit: {code}");
        let zombie = TxnOffsetCommitRequest::default()
            .with_transactional_id(TransactionalId(StrBytes::from_static_str(names.0)))
            .with_group_id(GroupId(StrBytes::from_static_str(names.1)))
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(old_epoch)
            .with_generation_id(-1)
            .with_topics(vec![TxnOffsetCommitRequestTopic::default()
                .with_name(topic_name(names.2))
                .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(9)
                    .with_committed_leader_epoch(-1)])]);
        let answer = call(&mut conn, &zombie, 3).await?;
        let code = answer
            .topics
            .first()
            .and_then(|t| t.partitions.first())
            .map(|p| p.error_code)
            .context("no partition in the zombie's TxnOffsetCommit answer")?;
        ensure!(
            code == ResponseError::InvalidProducerEpoch.code()
                || code == ResponseError::ProducerFenced.code(),
            "the zombie's TxnOffsetCommit with epoch {old_epoch} (current {new_epoch}): {code}"
        );

        let end = EndTxnRequest::default()
            .with_transactional_id(TransactionalId(StrBytes::from_static_str(names.0)))
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(new_epoch)
            .with_committed(true);
        let ended = call(&mut conn, &end, 3).await?;
        ensure!(ended.error_code == 0, "EndTxn: {}", ended.error_code);
        let fetch = OffsetFetchRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str(names.1)))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(topic_name(names.2))
                .with_partition_indexes(vec![0])]));
        let deadline = Instant::now() + WAIT;
        let committed = loop {
            let r = call(&mut conn, &fetch, 6).await?;
            let offset = r
                .topics
                .first()
                .and_then(|t| t.partitions.first())
                .map(|p| p.committed_offset);
            // The markers complete in the background: wait until the offset moved.
            if offset == Some(-1) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            break offset;
        };
        ensure!(
            committed == Some(7),
            "the group's offset after the new instance's commit is {committed:?}, expected 7"
        );
        Ok(())
    }
    .await;
    broker.explain(outcome)
}
