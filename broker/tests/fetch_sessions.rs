//! Incremental fetch sessions (KIP-227) over the wire, by hand through the crate's client: a
//! full fetch opens a session, an incremental fetch answers only the partitions with news,
//! forgotten partitions leave the session, a wrong epoch or an unknown session is refused with
//! Kafka's error, epoch -1 closes a session, and when the slots run out a follower takes a
//! consumer's. The gauges at `/metrics` count the sessions and their partitions.

use anyhow::{ensure, Context, Result};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use kafka_protocol::ResponseError;
use oxbow_broker::client::Connection;
use oxbow_e2e::harness::{sample, BrokerOptions, BrokerProcess};
use uuid::Uuid;

mod support;
use support::{
    call, connect, create_topic_ok, expect_code, expect_ok, metadata, now_ms, produce_partition,
    topic_name, BatchBuilder,
};

const BROKER_BIN: &str = env!("CARGO_BIN_EXE_oxbow-broker");
/// Topics by name, sessions included.
const FETCH_BY_NAME: i16 = 12;
/// Topics by id.
const FETCH_BY_ID: i16 = 13;

fn start(args: &[&str]) -> Result<BrokerProcess> {
    BrokerProcess::start(BrokerOptions::new(BROKER_BIN).args(args.iter().copied()))
}

/// A fetch in session `session_id` at `epoch` of `partitions` (index, fetch offset) of
/// `topic` by name, forgetting `forgotten`; it waits up to `max_wait_ms` for one byte.
fn fetch(
    session_id: i32,
    epoch: i32,
    topic: &str,
    partitions: &[(i32, i64)],
    forgotten: &[i32],
    max_wait_ms: i32,
) -> FetchRequest {
    let topics = if partitions.is_empty() {
        Vec::new()
    } else {
        vec![FetchTopic::default()
            .with_topic(topic_name(topic))
            .with_partitions(
                partitions
                    .iter()
                    .map(|(index, offset)| {
                        FetchPartition::default()
                            .with_partition(*index)
                            .with_fetch_offset(*offset)
                            .with_partition_max_bytes(1 << 20)
                    })
                    .collect(),
            )]
    };
    let forgotten = if forgotten.is_empty() {
        Vec::new()
    } else {
        vec![ForgottenTopic::default()
            .with_topic(topic_name(topic))
            .with_partitions(forgotten.to_vec())]
    };
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_id(session_id)
        .with_session_epoch(epoch)
        .with_topics(topics)
        .with_forgotten_topics_data(forgotten)
}

/// Every partition in a response, with whether it carries records.
fn answered(response: &FetchResponse) -> Vec<(i32, bool)> {
    response
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .map(|p| {
            let has_records = p.records.as_ref().is_some_and(|r| !r.is_empty());
            (p.partition_index, has_records)
        })
        .collect()
}

async fn produce_one(conn: &mut Connection, topic: &str, partition: i32) -> Result<()> {
    let records = BatchBuilder::default()
        .base_sequence(-1)
        .timestamp(now_ms())
        .values(&[b"news".to_vec()])?;
    let answer = produce_partition(conn, topic, partition, records, 1).await?;
    expect_ok("Produce", answer.error_code)
}

/// The value of a metric without labels at `/metrics`.
fn metric(broker: &BrokerProcess, name: &str) -> Result<f64> {
    let text = broker.scrape_metrics()?;
    sample(&text, name).with_context(|| format!("{name} is not in /metrics:\n{text}"))
}

#[tokio::test]
async fn an_incremental_session_answers_only_the_partitions_with_news() -> Result<()> {
    let broker = start(&[])?;
    let outcome = async {
        let mut conn = connect(&broker).await?;
        let mut producer = connect(&broker).await?;
        let topic = "sessions";
        create_topic_ok(&mut conn, topic, 3, &[]).await?;
        produce_one(&mut producer, topic, 0).await?;

        // A full fetch (epoch 0) answers every partition and opens a session.
        let all = [(0, 0), (1, 0), (2, 0)];
        let full = call(&mut conn, &fetch(0, 0, topic, &all, &[], 0), FETCH_BY_NAME).await?;
        expect_ok("full fetch", full.error_code)?;
        let session = full.session_id;
        ensure!(session != 0, "a full fetch with epoch 0 got no session");
        ensure!(
            answered(&full) == vec![(0, true), (1, false), (2, false)],
            "full fetch answered {:?}",
            answered(&full)
        );
        ensure!(metric(&broker, "oxbow_fetch_sessions")? == 1.0);
        ensure!(metric(&broker, "oxbow_fetch_session_partitions")? == 3.0);

        // Partition 0 moves on; nothing else changed: the answer waits and has no partition.
        let quiet = call(
            &mut conn,
            &fetch(session, 1, topic, &[(0, 1)], &[], 300),
            FETCH_BY_NAME,
        )
        .await?;
        expect_ok("incremental fetch", quiet.error_code)?;
        ensure!(
            quiet.session_id == session,
            "session id {}",
            quiet.session_id
        );
        ensure!(
            answered(&quiet).is_empty(),
            "nothing changed, yet {:?} answered",
            answered(&quiet)
        );

        // New records in partition 2: it alone is answered.
        produce_one(&mut producer, topic, 2).await?;
        let news = call(
            &mut conn,
            &fetch(session, 2, topic, &[], &[], 1000),
            FETCH_BY_NAME,
        )
        .await?;
        expect_ok("incremental fetch", news.error_code)?;
        ensure!(
            answered(&news) == vec![(2, true)],
            "answered {:?}",
            answered(&news)
        );

        // Epoch 2 again: a duplicate, refused without partitions.
        let duplicate = call(
            &mut conn,
            &fetch(session, 2, topic, &[], &[], 0),
            FETCH_BY_NAME,
        )
        .await?;
        expect_code(
            "a repeated epoch",
            duplicate.error_code,
            ResponseError::InvalidFetchSessionEpoch,
        )?;
        ensure!(duplicate.responses.is_empty());

        // Partition 2 is forgotten: new records in 1 and 2 answer 1 only.
        produce_one(&mut producer, topic, 1).await?;
        produce_one(&mut producer, topic, 2).await?;
        let forgetting = call(
            &mut conn,
            &fetch(session, 3, topic, &[], &[2], 1000),
            FETCH_BY_NAME,
        )
        .await?;
        expect_ok("incremental fetch forgetting 2", forgetting.error_code)?;
        ensure!(
            answered(&forgetting) == vec![(1, true)],
            "answered {:?}",
            answered(&forgetting)
        );
        ensure!(metric(&broker, "oxbow_fetch_session_partitions")? == 2.0);

        // An id never given out.
        let unknown = call(
            &mut conn,
            &fetch(session ^ 1, 1, topic, &[], &[], 0),
            FETCH_BY_NAME,
        )
        .await?;
        expect_code(
            "an unknown session",
            unknown.error_code,
            ResponseError::FetchSessionIdNotFound,
        )?;

        // Epoch -1 closes the session: the fetch is answered in full, without a session.
        let closing = call(
            &mut conn,
            &fetch(session, -1, topic, &[(0, 1)], &[], 0),
            FETCH_BY_NAME,
        )
        .await?;
        expect_ok("closing fetch", closing.error_code)?;
        ensure!(closing.session_id == 0, "session {}", closing.session_id);
        ensure!(answered(&closing) == vec![(0, false)]);
        let closed = call(
            &mut conn,
            &fetch(session, 4, topic, &[], &[], 0),
            FETCH_BY_NAME,
        )
        .await?;
        expect_code(
            "a closed session",
            closed.error_code,
            ResponseError::FetchSessionIdNotFound,
        )?;
        ensure!(metric(&broker, "oxbow_fetch_sessions")? == 0.0);
        Ok(())
    }
    .await;
    broker.explain(outcome)
}

#[tokio::test]
async fn sessions_by_topic_id_refuse_fetches_by_name_and_epoch_zero_starts_over() -> Result<()> {
    let broker = start(&[])?;
    let outcome = async {
        let mut conn = connect(&broker).await?;
        let topic = "by-id";
        create_topic_ok(&mut conn, topic, 2, &[]).await?;
        let described = metadata(&mut conn, Some(&[topic]), false).await?;
        let id: Uuid = described
            .topics
            .first()
            .map(|t| t.topic_id)
            .context("no topic in Metadata")?;
        let by_id = |session_id: i32, epoch: i32, partitions: &[i32]| {
            let mut request = fetch(session_id, epoch, topic, &[], &[], 0);
            if !partitions.is_empty() {
                request.topics = vec![FetchTopic::default().with_topic_id(id).with_partitions(
                    partitions
                        .iter()
                        .map(|p| {
                            FetchPartition::default()
                                .with_partition(*p)
                                .with_partition_max_bytes(1 << 20)
                        })
                        .collect(),
                )];
            }
            request
        };
        let full = call(&mut conn, &by_id(0, 0, &[0, 1]), FETCH_BY_ID).await?;
        expect_ok("full fetch by id", full.error_code)?;
        let session = full.session_id;
        ensure!(session != 0, "no session");
        let topic_ids: Vec<Uuid> = full.responses.iter().map(|t| t.topic_id).collect();
        ensure!(topic_ids == vec![id], "answered topics {topic_ids:?}");

        let by_name = call(
            &mut conn,
            &fetch(session, 1, topic, &[], &[], 0),
            FETCH_BY_NAME,
        )
        .await?;
        expect_code(
            "a session by id fetched by name",
            by_name.error_code,
            ResponseError::FetchSessionTopicIdError,
        )?;
        let incremental = call(&mut conn, &by_id(session, 1, &[]), FETCH_BY_ID).await?;
        expect_ok("incremental fetch by id", incremental.error_code)?;
        ensure!(incremental.session_id == session);

        // Epoch 0 with the session's id closes it and opens another.
        let again = call(&mut conn, &by_id(session, 0, &[0]), FETCH_BY_ID).await?;
        expect_ok("full fetch restarting", again.error_code)?;
        ensure!(
            again.session_id != 0 && again.session_id != session,
            "restarted as session {}",
            again.session_id
        );
        let old = call(&mut conn, &by_id(session, 2, &[]), FETCH_BY_ID).await?;
        expect_code(
            "the replaced session",
            old.error_code,
            ResponseError::FetchSessionIdNotFound,
        )?;
        ensure!(metric(&broker, "oxbow_fetch_sessions")? == 1.0);
        Ok(())
    }
    .await;
    broker.explain(outcome)
}

#[tokio::test]
async fn when_the_slots_run_out_a_follower_evicts_a_consumer_but_a_consumer_gets_none() -> Result<()>
{
    let broker = start(&["--override", "max.incremental.fetch.session.cache.slots=1"])?;
    let outcome = async {
        let mut conn = connect(&broker).await?;
        let topic = "crowded";
        create_topic_ok(&mut conn, topic, 2, &[]).await?;
        let first = call(
            &mut conn,
            &fetch(0, 0, topic, &[(0, 0)], &[], 0),
            FETCH_BY_NAME,
        )
        .await?;
        expect_ok("first consumer", first.error_code)?;
        ensure!(first.session_id != 0, "the one slot was free");

        // The slot is taken by a young consumer session: another consumer is served without one.
        let second = call(
            &mut conn,
            &fetch(0, 0, topic, &[(0, 0), (1, 0)], &[], 0),
            FETCH_BY_NAME,
        )
        .await?;
        expect_ok("second consumer", second.error_code)?;
        ensure!(second.session_id == 0, "got session {}", second.session_id);
        ensure!(answered(&second).len() == 2, "a sessionless fetch is full");

        // A follower's fetch (a replica id) is privileged and takes the consumer's slot.
        let mut follower = fetch(0, 0, topic, &[(1, 0)], &[], 0);
        follower.replica_id = BrokerId(7);
        let followed = call(&mut conn, &follower, FETCH_BY_NAME).await?;
        expect_ok("follower", followed.error_code)?;
        ensure!(followed.session_id != 0, "the follower got no session");
        let evicted = call(
            &mut conn,
            &fetch(first.session_id, 1, topic, &[], &[], 0),
            FETCH_BY_NAME,
        )
        .await?;
        expect_code(
            "the evicted session",
            evicted.error_code,
            ResponseError::FetchSessionIdNotFound,
        )?;
        ensure!(metric(&broker, "oxbow_fetch_session_evictions_total")? == 1.0);
        ensure!(metric(&broker, "oxbow_fetch_sessions")? == 1.0);
        Ok(())
    }
    .await;
    broker.explain(outcome)
}
