//! Storage through the real `oxbow-broker` binary: retention by time and by size, DeleteRecords,
//! log compaction end to end, topic configuration (validation, sources, persistence across
//! SIGTERM and SIGKILL), the flush policies (`flush.messages=1` with concurrent producers,
//! `flush.ms`), and what Kafka refuses because of a topic's storage settings (keyless records
//! on compacted topics, DeleteRecords without the delete policy, batches over `segment.bytes`),
//! a full log directory, a torn write at the end of a segment (power loss), and the broker's
//! clock jumping back and forward (libfaketime).
//!
//! Background work (retention, the cleaner) runs on the broker's own schedule, shortened here
//! with `log.retention.check.interval.ms` and `log.cleaner.backoff.ms`. Tests never sleep to
//! assert: they poll what a client can observe (ListOffsets, Fetch, the segment files) until
//! it converges, bounded by [`CONVERGE_TIMEOUT`], and report the last state seen otherwise.
//!
//! Not here: the 20-kill crash loop (`crash.rs`) and the compaction property test against a
//! model (`src/log/cleaner.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use bytes::Bytes;
use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResult;
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource as IncrementalResource, AlterableConfig as IncrementalConfig,
};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{
    AlterConfigsRequest, DescribeConfigsRequest, IncrementalAlterConfigsRequest,
};
use kafka_protocol::records::RecordBatchDecoder;
use kafka_protocol::ResponseError;
use oxbow_broker::client::Connection;
use oxbow_e2e::harness::{self, BrokerProcess};
use oxbow_e2e::sandbox::{self, sandboxed};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::timeout;

mod support;
use support::{
    call, connect, create_topic, create_topic_ok, expect_code, expect_ok, fetch_request,
    list_offsets_request, now_ms, produce_request, start_without_auto_create as start, str_bytes,
    BatchBuilder, IO_TIMEOUT,
};

/// Longest wait for background work (retention, cleaning) to reach the state a test expects;
/// the passes themselves run every 200 ms here.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause between two looks at a converging state.
const POLL: Duration = Duration::from_millis(100);
/// Longest wait for a whole topic to be read back by a consumer.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the broker looks for segments past retention and cleans compacted logs.
const BACKGROUND_INTERVAL_MS: &str = "200";

// Versions the raw requests speak: recent, flexible, addressing topics by name.
const PRODUCE_V: i16 = 9;
const FETCH_V: i16 = 12;
const LIST_OFFSETS_V: i16 = 7;
const DESCRIBE_CONFIGS_V: i16 = 4;
const ALTER_CONFIGS_V: i16 = 2;
const INCREMENTAL_ALTER_CONFIGS_V: i16 = 1;

/// ListOffsets timestamps.
const EARLIEST: i64 = -2;
const LATEST: i64 = -1;
/// DescribeConfigs resource types and config sources.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;
/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;

// ---------------------------------------------------------------------------------------------
// Retention by time and size
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_past_retention_ms_are_deleted_and_reads_below_the_new_start_are_out_of_range(
) -> Result<()> {
    let broker = start(&[
        "--override",
        &format!("log.retention.check.interval.ms={BACKGROUND_INTERVAL_MS}"),
    ])?;
    let outcome = retention_by_time(&broker).await;
    broker.explain(outcome)
}

async fn retention_by_time(broker: &BrokerProcess) -> Result<()> {
    let topic = "aging";
    let mut conn = connect(broker).await?;
    // Each batch is ~700 bytes and segments hold 1024, so every batch is a segment of its own
    // and the expired batches end exactly at a segment boundary.
    create_topic_ok(
        &mut conn,
        topic,
        1,
        &[
            ("internal.segment.bytes", "1024"),
            ("retention.ms", "600000"),
        ],
    )
    .await?;
    let day_ago = now_ms() - 86_400_000;
    let (old_batches, fresh_batches, per_batch) = (6, 4, 5);
    let mut produced = Vec::new();
    for b in 0..old_batches + fresh_batches {
        let timestamp = if b < old_batches { day_ago } else { now_ms() };
        let values: Vec<Vec<u8>> = (0..per_batch)
            .map(|i| padded(&format!("batch-{b}-record-{i}"), 120))
            .collect();
        let base = produce_ok(&mut conn, topic, &values, timestamp).await?;
        ensure!(
            base == produced.len() as i64,
            "batch {b} was stored at offset {base}, expected {}",
            produced.len()
        );
        produced.extend(values);
    }
    let log_end = produced.len() as i64;
    let first_fresh = old_batches * per_batch;

    // Records a day old are past a 10-minute retention at once; the fresh ones are not.
    let earliest = wait_for_earliest(&mut conn, topic, |e| e >= first_fresh).await?;
    ensure!(
        earliest == first_fresh,
        "log start offset {earliest} after retention; the records from {first_fresh} on are \
         fresh and must stay"
    );
    let segments = segment_files(broker.data_dir(), topic, 0)?;
    ensure!(
        segments.first().map(|s| s.0) == Some(earliest),
        "the log starts at {earliest} but the oldest segment file is {segments:?}"
    );
    let last_base = first_fresh + (fresh_batches - 1) * per_batch;
    ensure!(
        segments.last().map(|s| s.0) == Some(last_base),
        "the active segment (base {last_base}) is gone: {segments:?}"
    );
    ensure!(
        latest(&mut conn, topic, 0).await? == log_end,
        "retention moved the log end"
    );
    expect_out_of_range(&mut conn, topic, 0, 0, earliest).await?;
    expect_out_of_range(&mut conn, topic, 0, earliest - 1, earliest).await?;
    let kept = read_values(&mut conn, topic, 0, earliest).await?;
    check_values(&kept, &produced, earliest)?;

    // Shortening retention applies to the live log: the fresh records expire too, the active
    // segment with them (Kafka rolls it first), and the log end stays where it was.
    incremental_alter_ok(&mut conn, topic, &[(OP_SET, "retention.ms", Some("1500"))]).await?;
    let earliest = wait_for_earliest(&mut conn, topic, |e| e >= log_end).await?;
    ensure!(
        earliest == log_end,
        "log start offset {earliest} is past the log end {log_end}"
    );
    ensure!(
        latest(&mut conn, topic, 0).await? == log_end,
        "deleting every segment moved the log end"
    );
    expect_out_of_range(&mut conn, topic, 0, log_end - 1, log_end).await?;
    let fetched = fetch(&mut conn, topic, 0, log_end).await?;
    expect_ok("Fetch at the log end of an emptied log", fetched.error_code)?;

    // Appends continue at the old log end.
    incremental_alter_ok(
        &mut conn,
        topic,
        &[(OP_SET, "retention.ms", Some("600000"))],
    )
    .await?;
    let values = vec![padded("after-expiry", 50)];
    let base = produce_ok(&mut conn, topic, &values, now_ms()).await?;
    ensure!(
        base == log_end,
        "the first append after every segment expired went to offset {base}, not {log_end}"
    );
    let read = read_values(&mut conn, topic, 0, log_end).await?;
    ensure!(
        read == vec![(log_end, values[0].clone())],
        "read back {read:?} after the append"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_bytes_trims_the_oldest_segments_until_the_log_fits() -> Result<()> {
    let broker = start(&[
        "--override",
        &format!("log.retention.check.interval.ms={BACKGROUND_INTERVAL_MS}"),
    ])?;
    let outcome = retention_by_size(&broker).await;
    broker.explain(outcome)
}

async fn retention_by_size(broker: &BrokerProcess) -> Result<()> {
    let topic = "bounded";
    let (segment_bytes, retention_bytes) = (1024u64, 3000u64);
    let mut conn = connect(broker).await?;
    create_topic_ok(
        &mut conn,
        topic,
        1,
        &[
            ("internal.segment.bytes", &segment_bytes.to_string()),
            ("retention.bytes", &retention_bytes.to_string()),
        ],
    )
    .await?;
    let mut produced = Vec::new();
    for b in 0..20 {
        let values: Vec<Vec<u8>> = (0..5)
            .map(|i| padded(&format!("batch-{b}-record-{i}"), 120))
            .collect();
        produce_ok(&mut conn, topic, &values, now_ms()).await?;
        produced.extend(values);
    }
    let log_end = produced.len() as i64;

    // Kafka's rule: the oldest segment goes while the log stays at least retention.bytes
    // without it. Converged means no segment is deletable any more.
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    let segments = loop {
        let segments = segment_files(broker.data_dir(), topic, 0)?;
        let total: u64 = segments.iter().map(|s| s.1).sum();
        let first = segments.first().map_or(0, |s| s.1);
        if total.saturating_sub(first) < retention_bytes && earliest(&mut conn, topic, 0).await? > 0
        {
            break segments;
        }
        ensure!(
            Instant::now() < deadline,
            "the log did not shrink to retention.bytes={retention_bytes} within \
             {CONVERGE_TIMEOUT:?}: {total} bytes in segments {segments:?}"
        );
        tokio::time::sleep(POLL).await;
    };
    let total: u64 = segments.iter().map(|s| s.1).sum();
    ensure!(
        total >= retention_bytes,
        "retention deleted too much: {total} bytes left of retention.bytes={retention_bytes} \
         ({segments:?})"
    );
    ensure!(
        total <= retention_bytes + segment_bytes,
        "{total} bytes left, more than retention.bytes plus one segment ({segments:?})"
    );
    let earliest = earliest(&mut conn, topic, 0).await?;
    ensure!(
        segments.first().map(|s| s.0) == Some(earliest),
        "the log starts at {earliest} but the oldest segment file is {segments:?}"
    );
    ensure!(
        latest(&mut conn, topic, 0).await? == log_end,
        "retention moved the log end"
    );
    expect_out_of_range(&mut conn, topic, 0, earliest - 1, earliest).await?;
    expect_out_of_range(&mut conn, topic, 0, 0, earliest).await?;
    let kept = read_values(&mut conn, topic, 0, earliest).await?;
    check_values(&kept, &produced, earliest)
}

// ---------------------------------------------------------------------------------------------
// DeleteRecords
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_records_moves_the_low_watermark_durably_and_hides_what_is_below_it() -> Result<()> {
    let mut broker = start(&[
        "--override",
        &format!("log.retention.check.interval.ms={BACKGROUND_INTERVAL_MS}"),
    ])?;
    let outcome = delete_records(&mut broker).await;
    broker.explain(outcome)
}

async fn delete_records(broker: &mut BrokerProcess) -> Result<()> {
    let topic = "trimmed";
    let bootstrap = broker.bootstrap();
    let mut conn = connect(broker).await?;
    // Batches of ten records, one segment each.
    create_topic_ok(&mut conn, topic, 1, &[("internal.segment.bytes", "1024")]).await?;
    let mut produced = Vec::new();
    for b in 0..10 {
        let values: Vec<Vec<u8>> = (0..10)
            .map(|i| padded(&format!("batch-{b}-record-{i}"), 40))
            .collect();
        produce_ok(&mut conn, topic, &values, now_ms()).await?;
        produced.extend(values);
    }
    let admin: AdminClient<DefaultClientContext> = harness::client_config(&bootstrap)
        .create()
        .context("creating an admin client")?;

    // In the middle of a batch and of a segment.
    let low = admin_delete_records(&admin, topic, Offset::Offset(35)).await?;
    ensure!(low == Ok(35), "DeleteRecords before 35 answered {low:?}");
    check_trimmed(&mut conn, topic, &produced, 35).await?;
    let first = consume_all(&bootstrap, topic, 1).await?;
    ensure!(
        first.first().map(|r| r.offset) == Some(35) && first.len() == 65,
        "a consumer from the beginning read {} records starting at {:?}; expected 65 from 35",
        first.len(),
        first.first().map(|r| r.offset)
    );
    // Segments wholly below the low watermark go (0, 10, 20); the one holding 35 stays.
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let segments = segment_files(broker.data_dir(), topic, 0)?;
        if segments.first().map(|s| s.0) == Some(30) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "segments below the low watermark 35 are still on disk: {segments:?}"
        );
        tokio::time::sleep(POLL).await;
    }

    // The log start offset is checkpointed: a crash does not bring the records back.
    drop(conn);
    broker.kill()?;
    broker.restart()?;
    let mut conn = connect(broker).await?;
    check_trimmed(&mut conn, topic, &produced, 35).await?;

    // Below the low watermark changes nothing; past the high watermark is out of range;
    // Offset::End (-1) means the high watermark.
    let low = admin_delete_records(&admin, topic, Offset::Offset(20)).await?;
    ensure!(low == Ok(35), "DeleteRecords before 20 answered {low:?}");
    let low = admin_delete_records(&admin, topic, Offset::Offset(500)).await?;
    ensure!(
        low == Err(RDKafkaErrorCode::OffsetOutOfRange),
        "DeleteRecords before 500 of a 100-record log answered {low:?}"
    );
    let low = admin_delete_records(&admin, topic, Offset::End).await?;
    ensure!(low == Ok(100), "DeleteRecords to the end answered {low:?}");
    ensure!(
        earliest(&mut conn, topic, 0).await? == 100 && latest(&mut conn, topic, 0).await? == 100,
        "after deleting everything the log is not empty at 100"
    );
    expect_out_of_range(&mut conn, topic, 0, 99, 100).await?;

    drop(conn);
    let status = broker.stop()?;
    ensure!(status.success(), "SIGTERM exit status {status}");
    broker.restart()?;
    let mut conn = connect(broker).await?;
    ensure!(
        earliest(&mut conn, topic, 0).await? == 100,
        "the low watermark did not survive a clean restart"
    );
    let base = produce_ok(&mut conn, topic, &[b"next".to_vec()], now_ms()).await?;
    ensure!(base == 100, "the append after DeleteRecords went to {base}");
    Ok(())
}

/// The log starts at `low`: ListOffsets says so, fetches below it are out of range, and
/// everything from it on is what was produced.
async fn check_trimmed(
    conn: &mut Connection,
    topic: &str,
    produced: &[Vec<u8>],
    low: i64,
) -> Result<()> {
    let start = earliest(conn, topic, 0).await?;
    ensure!(
        start == low,
        "ListOffsets earliest is {start}, the low watermark {low}"
    );
    expect_out_of_range(conn, topic, 0, low - 1, low).await?;
    expect_out_of_range(conn, topic, 0, 0, low).await?;
    let kept = read_values(conn, topic, 0, low).await?;
    check_values(&kept, produced, low)
}

/// DeleteRecords through librdkafka's admin API: the low watermark, or the partition's error.
async fn admin_delete_records(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    before: Offset,
) -> Result<std::result::Result<i64, RDKafkaErrorCode>> {
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset(topic, 0, before)?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let result = timeout(IO_TIMEOUT, admin.delete_records(&offsets, &options))
        .await
        .with_context(|| format!("DeleteRecords {topic} before {before:?} timed out"))?
        .with_context(|| format!("DeleteRecords {topic} before {before:?}"))?;
    let element = result
        .find_partition(topic, 0)
        .with_context(|| format!("DeleteRecords answered without {topic}-0: {result:?}"))?;
    Ok(match element.error() {
        Err(KafkaError::OffsetFetch(code) | KafkaError::AdminOp(code)) => Err(code),
        Err(other) => bail!("DeleteRecords {topic}-0 failed with {other:?}"),
        Ok(()) => match element.offset() {
            Offset::Offset(low) => Ok(low),
            other => bail!("DeleteRecords {topic}-0 answered low watermark {other:?}"),
        },
    })
}

// ---------------------------------------------------------------------------------------------
// Compaction
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_topic_keeps_the_latest_value_of_each_key_at_its_offset_and_drops_tombstones(
) -> Result<()> {
    let broker = start(&[
        "--override",
        &format!("log.cleaner.backoff.ms={BACKGROUND_INTERVAL_MS}"),
    ])?;
    let outcome = compaction(&broker).await;
    broker.explain(outcome)
}

async fn compaction(broker: &BrokerProcess) -> Result<()> {
    let topic = "table";
    let (keys, rounds) = (50usize, 5usize);
    let bootstrap = broker.bootstrap();
    let mut conn = connect(broker).await?;
    create_topic_ok(
        &mut conn,
        topic,
        1,
        &[
            ("cleanup.policy", "compact"),
            ("internal.segment.bytes", "2048"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("delete.retention.ms", "100"),
        ],
    )
    .await?;
    // Small batches, some compressed: the cleaner rewrites batches of every kind.
    let producers = ["none", "lz4", "gzip"]
        .into_iter()
        .map(|codec| {
            harness::producer_config(&bootstrap)
                .set("compression.type", codec)
                .set("batch.num.messages", "16")
                .create::<FutureProducer>()
                .with_context(|| format!("creating a {codec} producer"))
        })
        .collect::<Result<Vec<_>>>()?;
    let key = |k: usize| format!("key-{k:02}");

    // The latest record of each key as acknowledged: key -> (offset, value; None = tombstone).
    let mut latest_of: BTreeMap<String, (i64, Option<Vec<u8>>)> = BTreeMap::new();
    let mut sent = 0usize;
    for round in 0..rounds {
        let writes: Vec<(String, Option<Vec<u8>>)> = (0..keys)
            .map(|k| {
                let value = padded(&format!("{}-round-{round}", key(k)), 60);
                (key(k), Some(value))
            })
            .collect();
        sent += writes.len();
        if round + 1 < rounds {
            send_keyed(&producers[round % 3], topic, writes, &mut latest_of).await?;
        } else {
            // The values that stay: half in gzip batches, half in lz4 ones, so the tombstones
            // below leave compressed batches of both kinds partly alive, to be rewritten.
            let (even, odd): (Vec<_>, Vec<_>) = writes
                .into_iter()
                .enumerate()
                .partition(|(k, _)| k % 2 == 0);
            let strip = |w: Vec<(usize, _)>| w.into_iter().map(|(_, w)| w).collect();
            send_keyed(&producers[2], topic, strip(even), &mut latest_of).await?;
            send_keyed(&producers[1], topic, strip(odd), &mut latest_of).await?;
        }
    }
    // Tombstones for every fifth key (compressed batches), then three of them written again.
    let tombstones: Vec<(String, Option<Vec<u8>>)> =
        (0..keys).step_by(5).map(|k| (key(k), None)).collect();
    sent += tombstones.len();
    send_keyed(&producers[1], topic, tombstones, &mut latest_of).await?;
    let reborn: Vec<(String, Option<Vec<u8>>)> = [0, 20, 40]
        .into_iter()
        .map(|k| (key(k), Some(padded(&format!("{}-reborn", key(k)), 60))))
        .collect();
    sent += reborn.len();
    send_keyed(&producers[2], topic, reborn, &mut latest_of).await?;
    // Distinct filler keys until the tombstones are out of the active segment, which the
    // cleaner never touches.
    let last_keyed = latest_of.values().map(|v| v.0).max().unwrap_or_default();
    let mut filler = 0usize;
    loop {
        let writes: Vec<(String, Option<Vec<u8>>)> = (filler..filler + 16)
            .map(|f| {
                (
                    format!("filler-{f:03}"),
                    Some(padded(&format!("filler-{f}"), 60)),
                )
            })
            .collect();
        filler += writes.len();
        sent += writes.len();
        send_keyed(&producers[0], topic, writes, &mut latest_of).await?;
        let active = segment_files(broker.data_dir(), topic, 0)?
            .last()
            .map_or(0, |s| s.0);
        if active > last_keyed {
            break;
        }
        ensure!(
            filler < 1000,
            "the log never rolled past offset {last_keyed}"
        );
    }
    let log_end = latest(&mut conn, topic, 0).await?;
    ensure!(
        log_end == sent as i64,
        "{sent} records acknowledged but the log ends at {log_end}"
    );
    let size_before: u64 = segment_files(broker.data_dir(), topic, 0)?
        .iter()
        .map(|s| s.1)
        .sum();
    let dead: BTreeSet<&String> = latest_of
        .iter()
        .filter(|(_, (_, value))| value.is_none())
        .map(|(k, _)| k)
        .collect();
    ensure!(dead.len() == 7, "expected 7 deleted keys, have {dead:?}");

    // Cleaned means: the log shrank, no deleted key is left at all (tombstones are past
    // delete.retention.ms), and below the active segment every key appears once.
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let segments = segment_files(broker.data_dir(), topic, 0)?;
        let size: u64 = segments.iter().map(|s| s.1).sum();
        let active = segments.last().map_or(0, |s| s.0);
        let records = read_records(&mut conn, topic, 0, 0).await?;
        let mut below_active: BTreeMap<String, usize> = BTreeMap::new();
        for record in records.iter().filter(|r| r.offset < active) {
            *below_active.entry(record.key_text()).or_default() += 1;
        }
        let duplicated: Vec<_> = below_active.iter().filter(|(_, n)| **n > 1).collect();
        let undead: Vec<_> = records
            .iter()
            .filter(|r| dead.contains(&r.key_text()))
            .map(|r| (r.offset, r.key_text()))
            .collect();
        if size < size_before && duplicated.is_empty() && undead.is_empty() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "not compacted within {CONVERGE_TIMEOUT:?}: {size} of {size_before} bytes, keys \
             repeated below the active segment {duplicated:?}, records of deleted keys \
             {undead:?}"
        );
        tokio::time::sleep(POLL).await;
    }

    // What a real consumer sees from the beginning.
    let read = consume_all(&bootstrap, topic, 1).await?;
    let mut last_seen: BTreeMap<String, (i64, Option<Vec<u8>>)> = BTreeMap::new();
    for record in &read {
        let key = record.key_text();
        ensure!(
            latest_of.contains_key(&key),
            "read a record with key {key:?} that was never produced at {}",
            record.offset
        );
        last_seen.insert(key, (record.offset, record.value.clone()));
    }
    for (key, expected) in &latest_of {
        let seen = last_seen.get(key);
        match &expected.1 {
            None => ensure!(seen.is_none(), "deleted key {key} is still read: {seen:?}"),
            Some(_) => ensure!(
                seen == Some(expected),
                "key {key}: the last record read is {:?}, the last acknowledged {:?}",
                seen.map(|s| (s.0, s.1.as_deref().map(String::from_utf8_lossy))),
                (
                    expected.0,
                    expected.1.as_deref().map(String::from_utf8_lossy)
                )
            ),
        }
    }
    ensure!(
        read.len() < sent,
        "compaction removed nothing: {} of {sent} records read",
        read.len()
    );
    Ok(())
}

/// Sends keyed records (None = tombstone) and records where each was acknowledged.
async fn send_keyed(
    producer: &FutureProducer,
    topic: &str,
    writes: Vec<(String, Option<Vec<u8>>)>,
    acked: &mut BTreeMap<String, (i64, Option<Vec<u8>>)>,
) -> Result<()> {
    let mut pending: Vec<(String, Option<Vec<u8>>, DeliveryFuture)> = Vec::new();
    for (key, value) in writes {
        let mut record = FutureRecord::<str, [u8]>::to(topic).key(key.as_str());
        if let Some(value) = &value {
            record = record.payload(value.as_slice());
        }
        let delivery = producer
            .send_result(record)
            .map_err(|(e, _)| anyhow!("queueing {key} for {topic}: {e}"))?;
        pending.push((key, value, delivery));
    }
    for (key, value, delivery) in pending {
        let offset = await_delivery(&key, delivery).await?.1;
        // Deliveries of one partition complete in offset order, but keep the newest anyway.
        if acked.get(&key).is_none_or(|(o, _)| *o < offset) {
            acked.insert(key, (offset, value));
        }
    }
    Ok(())
}

async fn await_delivery(what: &str, delivery: DeliveryFuture) -> Result<(i32, i64)> {
    let delivered = timeout(Duration::from_secs(30), delivery)
        .await
        .with_context(|| format!("{what} not acknowledged within 30 s"))?
        .with_context(|| format!("the producer dropped the delivery of {what}"))?
        .map_err(|(e, _)| anyhow!("{what} was not stored: {e}"))?;
    Ok((delivered.partition, delivered.offset))
}

// ---------------------------------------------------------------------------------------------
// Topic configuration
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_topic_configs_are_invalid_config_and_change_nothing_and_good_ones_survive_restarts(
) -> Result<()> {
    let mut broker = start(&["--override", "log.retention.hours=2"])?;
    let outcome = configs(&mut broker).await;
    broker.explain(outcome)
}

async fn configs(broker: &mut BrokerProcess) -> Result<()> {
    let mut conn = connect(broker).await?;

    // CreateTopics refuses bad values and unknown keys, names the key, and creates nothing.
    for (key, value) in [
        ("retention.ms", "abc"),
        ("cleanup.policy", "shred"),
        ("retention.dayz", "3"),
        ("segment.bytes", "10"),
        ("segment.bytes", "1048575"),
        ("internal.segment.bytes", "abc"),
        ("min.cleanable.dirty.ratio", "1.5"),
    ] {
        let result = create_topic(&mut conn, "refused", 1, &[(key, value)]).await?;
        expect_refusal(
            &format!("CreateTopics with {key}={value}"),
            result.error_code,
            result.error_message.as_deref(),
            key,
        )?;
        let described = describe_result(&mut conn, RESOURCE_TOPIC, "refused", false, None).await?;
        expect_code(
            &format!("DescribeConfigs of `refused` after CreateTopics with {key}={value}"),
            described.error_code,
            ResponseError::UnknownTopicOrPartition,
        )?;
    }

    // A topic created with one override: the broker-level log.retention.hours=2 is its
    // retention.ms default, in milliseconds, from the static broker config.
    let topic = "configured";
    let created = create_topic(&mut conn, topic, 1, &[("segment.bytes", "1048576")]).await?;
    expect_ok("CreateTopics configured", created.error_code)?;
    let returned: BTreeMap<String, (Option<String>, i8)> = created
        .configs
        .iter()
        .flatten()
        .map(|c| {
            (
                c.name.to_string(),
                (c.value.as_ref().map(ToString::to_string), c.config_source),
            )
        })
        .collect();
    ensure!(
        returned.get("retention.ms") == Some(&(Some("7200000".into()), SOURCE_STATIC_BROKER)),
        "CreateTopics v7 returned retention.ms {:?}",
        returned.get("retention.ms")
    );
    let initial = describe(&mut conn, RESOURCE_TOPIC, topic, false, None).await?;
    expect_entry(&initial, "retention.ms", "7200000", SOURCE_STATIC_BROKER)?;
    expect_entry(&initial, "cleanup.policy", "delete", SOURCE_DEFAULT)?;
    expect_entry(&initial, "segment.bytes", "1048576", SOURCE_TOPIC)?;
    // Kafka's test-only internal.segment.bytes is listed only where a topic sets it, and has
    // no minimum there.
    ensure!(
        !initial.contains_key("internal.segment.bytes")
            && !returned.contains_key("internal.segment.bytes"),
        "internal.segment.bytes listed for a topic that does not set it"
    );
    let small = create_topic(
        &mut conn,
        "small",
        1,
        &[("internal.segment.bytes", "20000")],
    )
    .await?;
    expect_ok(
        "CreateTopics with internal.segment.bytes=20000",
        small.error_code,
    )?;
    let small = describe(&mut conn, RESOURCE_TOPIC, "small", false, None).await?;
    expect_entry(&small, "internal.segment.bytes", "20000", SOURCE_TOPIC)?;
    let broker_configs = describe(&mut conn, RESOURCE_BROKER, "0", false, None).await?;
    expect_entry(
        &broker_configs,
        "log.retention.hours",
        "2",
        SOURCE_STATIC_BROKER,
    )?;

    // AlterConfigs (replace all) with a bad value anywhere changes nothing.
    for (what, configs) in [
        ("retention.ms=abc", vec![("retention.ms", "abc")]),
        (
            "a valid segment.bytes with cleanup.policy=shred",
            vec![("segment.bytes", "2097152"), ("cleanup.policy", "shred")],
        ),
        ("retention.dayz=1", vec![("retention.dayz", "1")]),
    ] {
        let key = configs.last().map_or("", |c| c.0);
        let (code, message) = alter_configs(&mut conn, topic, &configs, false).await?;
        expect_refusal(
            &format!("AlterConfigs {what}"),
            code,
            message.as_deref(),
            key,
        )?;
        let now = describe(&mut conn, RESOURCE_TOPIC, topic, false, None).await?;
        ensure_same(
            &initial,
            &now,
            &format!("after the refused AlterConfigs {what}"),
        )?;
    }

    // IncrementalAlterConfigs likewise, operation by operation and all or nothing.
    for (what, ops) in [
        (
            "SET retention.ms=abc",
            vec![(OP_SET, "retention.ms", Some("abc"))],
        ),
        (
            "APPEND cleanup.policy shred",
            vec![(OP_APPEND, "cleanup.policy", Some("shred"))],
        ),
        (
            "SET retention.dayz=1",
            vec![(OP_SET, "retention.dayz", Some("1"))],
        ),
        (
            "APPEND to the non-list retention.ms",
            vec![(OP_APPEND, "retention.ms", Some("5"))],
        ),
        (
            "a valid SET retention.ms with SET min.cleanable.dirty.ratio=2",
            vec![
                (OP_SET, "retention.ms", Some("3600000")),
                (OP_SET, "min.cleanable.dirty.ratio", Some("2")),
            ],
        ),
    ] {
        let key = ops.last().map_or("", |o| o.1);
        let (code, message) = incremental_alter(&mut conn, topic, &ops, false).await?;
        expect_refusal(
            &format!("IncrementalAlterConfigs {what}"),
            code,
            message.as_deref(),
            key,
        )?;
        let now = describe(&mut conn, RESOURCE_TOPIC, topic, false, None).await?;
        ensure_same(
            &initial,
            &now,
            &format!("after the refused IncrementalAlterConfigs {what}"),
        )?;
    }
    // validate_only checks a valid change without making it.
    let valid = [
        (OP_SET, "retention.ms", Some("3600000")),
        (OP_APPEND, "cleanup.policy", Some("compact")),
    ];
    let (code, message) = incremental_alter(&mut conn, topic, &valid, true).await?;
    expect_ok(
        &format!("validate-only IncrementalAlterConfigs ({message:?})"),
        code,
    )?;
    let now = describe(&mut conn, RESOURCE_TOPIC, topic, false, None).await?;
    ensure_same(
        &initial,
        &now,
        "after a validate-only IncrementalAlterConfigs",
    )?;

    // The valid change: values, sources and synonyms.
    incremental_alter_ok(&mut conn, topic, &valid).await?;
    let altered = describe(&mut conn, RESOURCE_TOPIC, topic, true, None).await?;
    expect_entry(&altered, "retention.ms", "3600000", SOURCE_TOPIC)?;
    expect_entry(&altered, "cleanup.policy", "delete,compact", SOURCE_TOPIC)?;
    expect_entry(&altered, "segment.bytes", "1048576", SOURCE_TOPIC)?;
    let synonyms = &altered["retention.ms"].synonyms;
    ensure!(
        synonyms.first() == Some(&("retention.ms".into(), Some("3600000".into()), SOURCE_TOPIC)),
        "retention.ms synonyms do not start with the topic override: {synonyms:?}"
    );
    let synonyms = &altered["cleanup.policy"].synonyms;
    ensure!(
        *synonyms
            == vec![
                (
                    "cleanup.policy".to_string(),
                    Some("delete,compact".to_string()),
                    SOURCE_TOPIC
                ),
                (
                    "log.cleanup.policy".to_string(),
                    Some("delete".to_string()),
                    SOURCE_DEFAULT
                ),
            ],
        "cleanup.policy synonyms: {synonyms:?}"
    );
    let only = describe(
        &mut conn,
        RESOURCE_TOPIC,
        topic,
        false,
        Some(&["retention.ms"]),
    )
    .await?;
    ensure!(
        only.keys().collect::<Vec<_>>() == vec!["retention.ms"],
        "DescribeConfigs for retention.ms only answered {:?}",
        only.keys().collect::<Vec<_>>()
    );
    let altered = describe(&mut conn, RESOURCE_TOPIC, topic, false, None).await?;

    // Overrides survive a clean restart and a crash.
    drop(conn);
    let status = broker.stop()?;
    ensure!(status.success(), "SIGTERM exit status {status}");
    broker.restart()?;
    let mut conn = connect(broker).await?;
    let now = describe(&mut conn, RESOURCE_TOPIC, topic, false, None).await?;
    ensure_same(&altered, &now, "after a SIGTERM restart")?;
    drop(conn);
    broker.kill()?;
    broker.restart()?;
    let mut conn = connect(broker).await?;
    let now = describe(&mut conn, RESOURCE_TOPIC, topic, false, None).await?;
    ensure_same(&altered, &now, "after a SIGKILL restart")?;

    // Removing an override is persisted too: the broker default is back after a crash.
    incremental_alter_ok(&mut conn, topic, &[(OP_DELETE, "retention.ms", None)]).await?;
    drop(conn);
    broker.kill()?;
    broker.restart()?;
    let mut conn = connect(broker).await?;
    let now = describe(&mut conn, RESOURCE_TOPIC, topic, false, None).await?;
    expect_entry(&now, "retention.ms", "7200000", SOURCE_STATIC_BROKER)?;
    expect_entry(&now, "cleanup.policy", "delete,compact", SOURCE_TOPIC)?;
    expect_entry(&now, "segment.bytes", "1048576", SOURCE_TOPIC)?;
    Ok(())
}

/// One described setting: its value, its source, and its synonyms (name, value, source).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Described {
    value: Option<String>,
    source: i8,
    synonyms: Vec<(String, Option<String>, i8)>,
}

/// The settings of one resource, with values, sources and (when asked) synonyms.
async fn describe(
    conn: &mut Connection,
    resource_type: i8,
    name: &str,
    synonyms: bool,
    keys: Option<&[&str]>,
) -> Result<BTreeMap<String, Described>> {
    let result = describe_result(conn, resource_type, name, synonyms, keys).await?;
    expect_ok(
        &format!("DescribeConfigs {name} ({:?})", result.error_message),
        result.error_code,
    )?;
    Ok(result
        .configs
        .iter()
        .map(|c| {
            (
                c.name.to_string(),
                Described {
                    value: c.value.as_ref().map(ToString::to_string),
                    source: c.config_source,
                    synonyms: c
                        .synonyms
                        .iter()
                        .map(|s| {
                            (
                                s.name.to_string(),
                                s.value.as_ref().map(ToString::to_string),
                                s.source,
                            )
                        })
                        .collect(),
                },
            )
        })
        .collect())
}

async fn describe_result(
    conn: &mut Connection,
    resource_type: i8,
    name: &str,
    synonyms: bool,
    keys: Option<&[&str]>,
) -> Result<DescribeConfigsResult> {
    let request = DescribeConfigsRequest::default()
        .with_include_synonyms(synonyms)
        .with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(str_bytes(name))
            .with_configuration_keys(
                keys.map(|keys| keys.iter().map(|k| str_bytes(k)).collect()),
            )]);
    let response = call(conn, &request, DESCRIBE_CONFIGS_V).await?;
    response
        .results
        .into_iter()
        .next()
        .context("DescribeConfigs answered no resource")
}

fn expect_entry(
    configs: &BTreeMap<String, Described>,
    name: &str,
    value: &str,
    source: i8,
) -> Result<()> {
    let entry = configs
        .get(name)
        .with_context(|| format!("DescribeConfigs does not list {name}"))?;
    ensure!(
        entry.value.as_deref() == Some(value) && entry.source == source,
        "{name} is {:?} from source {}, expected {value:?} from source {source}",
        entry.value,
        entry.source
    );
    Ok(())
}

/// Two descriptions list the same values from the same sources.
fn ensure_same(
    before: &BTreeMap<String, Described>,
    after: &BTreeMap<String, Described>,
    when: &str,
) -> Result<()> {
    let changed: Vec<String> = before
        .keys()
        .chain(after.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| format!("{k}: {:?} -> {:?}", before.get(k), after.get(k)))
        .collect();
    ensure!(changed.is_empty(), "configs changed {when}: {changed:?}");
    Ok(())
}

/// INVALID_CONFIG with a message that names the offending key.
fn expect_refusal(what: &str, code: i16, message: Option<&str>, key: &str) -> Result<()> {
    expect_code(what, code, ResponseError::InvalidConfig)?;
    ensure!(
        message.is_some_and(|m| m.contains(key)),
        "{what}: the error message {message:?} does not name `{key}`"
    );
    Ok(())
}

async fn alter_configs(
    conn: &mut Connection,
    topic: &str,
    configs: &[(&str, &str)],
    validate_only: bool,
) -> Result<(i16, Option<String>)> {
    let request = AlterConfigsRequest::default()
        .with_validate_only(validate_only)
        .with_resources(vec![AlterConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(str_bytes(topic))
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        AlterableConfig::default()
                            .with_name(str_bytes(k))
                            .with_value(Some(str_bytes(v)))
                    })
                    .collect(),
            )]);
    let response = call(conn, &request, ALTER_CONFIGS_V).await?;
    let result = response
        .responses
        .first()
        .context("AlterConfigs answered no resource")?;
    Ok((
        result.error_code,
        result.error_message.as_ref().map(ToString::to_string),
    ))
}

async fn incremental_alter(
    conn: &mut Connection,
    topic: &str,
    ops: &[(i8, &str, Option<&str>)],
    validate_only: bool,
) -> Result<(i16, Option<String>)> {
    let request = IncrementalAlterConfigsRequest::default()
        .with_validate_only(validate_only)
        .with_resources(vec![IncrementalResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(str_bytes(topic))
            .with_configs(
                ops.iter()
                    .map(|(op, k, v)| {
                        IncrementalConfig::default()
                            .with_name(str_bytes(k))
                            .with_config_operation(*op)
                            .with_value(v.map(str_bytes))
                    })
                    .collect(),
            )]);
    let response = call(conn, &request, INCREMENTAL_ALTER_CONFIGS_V).await?;
    let result = response
        .responses
        .first()
        .context("IncrementalAlterConfigs answered no resource")?;
    Ok((
        result.error_code,
        result.error_message.as_ref().map(ToString::to_string),
    ))
}

async fn incremental_alter_ok(
    conn: &mut Connection,
    topic: &str,
    ops: &[(i8, &str, Option<&str>)],
) -> Result<()> {
    let (code, message) = incremental_alter(conn, topic, ops, false).await?;
    expect_ok(
        &format!("IncrementalAlterConfigs {ops:?} on {topic} ({message:?})"),
        code,
    )
}

// ---------------------------------------------------------------------------------------------
// Flush policies
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_messages_one_acknowledges_concurrent_producers_and_loses_nothing_on_sigkill(
) -> Result<()> {
    let mut broker = start(&[])?;
    let outcome = flush_every_message(&mut broker).await;
    broker.explain(outcome)
}

async fn flush_every_message(broker: &mut BrokerProcess) -> Result<()> {
    let (topic, partitions, producers, per_producer) = ("synced", 2, 4usize, 5_000usize);
    let bootstrap = broker.bootstrap();
    let mut conn = connect(broker).await?;
    create_topic_ok(&mut conn, topic, partitions, &[("flush.messages", "1")]).await?;

    // Four producers at once, so acknowledgements wait on shared fsyncs (group commit).
    let tasks: Vec<_> = (0..producers)
        .map(|p| {
            let bootstrap = bootstrap.clone();
            tokio::spawn(async move {
                // Idempotent, so a request retried by the client on a slow machine is not
                // stored twice: every record must be stored exactly once.
                let producer: FutureProducer = harness::producer_config(&bootstrap)
                    .set("acks", "all")
                    .set("enable.idempotence", "true")
                    .create()
                    .context("creating a producer")?;
                let mut pending = Vec::with_capacity(per_producer);
                for i in 0..per_producer {
                    let key = format!("producer-{p}-{}", i % 64);
                    let value = padded(&format!("producer-{p}-record-{i}"), 40);
                    let delivery = producer
                        .send_result(FutureRecord::to(topic).key(&key).payload(&value))
                        .map_err(|(e, _)| anyhow!("queueing record {i} of producer {p}: {e}"))?;
                    pending.push((format!("producer {p} record {i}"), value, delivery));
                }
                let mut acked = Vec::with_capacity(per_producer);
                for (what, value, delivery) in pending {
                    let (partition, offset) = await_delivery(&what, delivery).await?;
                    acked.push(((partition, offset), value));
                }
                anyhow::Ok(acked)
            })
        })
        .collect();
    let mut acked: BTreeMap<(i32, i64), Vec<u8>> = BTreeMap::new();
    for task in tasks {
        for (position, value) in task.await.context("a producer task panicked")?? {
            ensure!(
                acked.insert(position, value).is_none(),
                "two records acknowledged at {position:?}"
            );
        }
    }
    ensure!(
        acked.len() == producers * per_producer,
        "{} acknowledged of {}",
        acked.len(),
        producers * per_producer
    );
    check_read_back(&bootstrap, topic, partitions, &acked, "before the crash").await?;

    drop(conn);
    broker.kill()?;
    broker.restart()?;
    check_read_back(&bootstrap, topic, partitions, &acked, "after SIGKILL").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_ms_flushes_in_the_background_and_the_data_reads_back_intact() -> Result<()> {
    let mut broker = start(&[])?;
    let outcome = flush_on_schedule(&mut broker).await;
    broker.explain(outcome)
}

async fn flush_on_schedule(broker: &mut BrokerProcess) -> Result<()> {
    let topic = "scheduled";
    let bootstrap = broker.bootstrap();
    let mut conn = connect(broker).await?;
    create_topic_ok(&mut conn, topic, 1, &[("flush.ms", "100")]).await?;
    let producer = harness::future_producer(&bootstrap)?;
    let mut pending = Vec::new();
    for i in 0..2_000 {
        let value = padded(&format!("scheduled-{i}"), 40);
        let delivery = producer
            .send_result(FutureRecord::<str, [u8]>::to(topic).payload(value.as_slice()))
            .map_err(|(e, _)| anyhow!("queueing record {i}: {e}"))?;
        pending.push((i, value, delivery));
    }
    let mut acked = BTreeMap::new();
    for (i, value, delivery) in pending {
        let position = await_delivery(&format!("record {i}"), delivery).await?;
        acked.insert(position, value);
    }
    // Several scheduled flush passes (every 100 ms) run meanwhile; this only waits for them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    check_read_back(&bootstrap, topic, 1, &acked, "after the scheduled flushes").await?;
    let log = std::fs::read_to_string(broker.log_path()).context("reading the broker log")?;
    let failures: Vec<&str> = log.lines().filter(|l| l.contains("flush failed")).collect();
    ensure!(failures.is_empty(), "flushes failed: {failures:?}");

    drop(conn);
    broker.kill()?;
    broker.restart()?;
    check_read_back(&bootstrap, topic, 1, &acked, "after SIGKILL").await
}

/// A fresh consumer reads exactly the acknowledged records, at their offsets.
async fn check_read_back(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    acked: &BTreeMap<(i32, i64), Vec<u8>>,
    when: &str,
) -> Result<()> {
    let read = consume_all(bootstrap, topic, partitions).await?;
    let stored: BTreeMap<(i32, i64), Vec<u8>> = read
        .into_iter()
        .map(|r| ((r.partition, r.offset), r.value.unwrap_or_default()))
        .collect();
    let missing: Vec<_> = acked.keys().filter(|k| !stored.contains_key(k)).collect();
    let changed: Vec<_> = acked
        .iter()
        .filter(|(k, v)| stored.get(*k).is_some_and(|s| s != *v))
        .map(|(k, _)| k)
        .collect();
    let extra: Vec<_> = stored.keys().filter(|k| !acked.contains_key(k)).collect();
    ensure!(
        missing.is_empty() && changed.is_empty() && extra.is_empty(),
        "{when}: of {} acknowledged records {} are missing (first {:?}), {} changed (first \
         {:?}), and {} records were never acknowledged (first {:?})",
        acked.len(),
        missing.len(),
        missing.first(),
        changed.len(),
        changed.first(),
        extra.len(),
        extra.first()
    );
    Ok(())
}

/// Power loss at the end of a segment: a write the broker had not acknowledged reached the disk
/// only in part. After a SIGKILL the active segment of a `flush.messages=1` partition (every
/// acknowledged record on disk) is given a torn tail, as a power cut leaves one: first the
/// front half of a real batch, then, after another restart, a batch header that claims more
/// bytes than follow. Each time the broker cuts the torn tail on recovery (the segment is back
/// to its last whole batch), every acknowledged record reads back at its offset, and the next
/// record is stored right after the last good one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_batch_at_the_end_of_a_segment_is_cut_on_recovery_and_nothing_acknowledged_is_lost(
) -> Result<()> {
    let mut broker = start(&[])?;
    let outcome = torn_tail(&mut broker).await;
    broker.explain(outcome)
}

/// Produces `count` records to partition 0 of `topic` with acks=all, each acknowledged before
/// the next is sent, into `acked`.
async fn produce_acked(
    bootstrap: &str,
    topic: &str,
    from: usize,
    count: usize,
    acked: &mut BTreeMap<(i32, i64), Vec<u8>>,
) -> Result<()> {
    let producer: FutureProducer = harness::producer_config(bootstrap)
        .set("acks", "all")
        .create()
        .context("creating a producer")?;
    for i in from..from + count {
        let value = padded(&format!("torn-record-{i}"), 100);
        let delivery = producer
            .send_result(
                FutureRecord::to(topic)
                    .key("k")
                    .payload(&value)
                    .partition(0),
            )
            .map_err(|(e, _)| anyhow!("queueing record {i}: {e}"))?;
        let position = await_delivery(&format!("record {i}"), delivery).await?;
        ensure!(
            acked.insert(position, value).is_none(),
            "two records acknowledged at {position:?}"
        );
    }
    Ok(())
}

/// A torn write: the bytes a power cut leaves after a segment (given whole) whose last batch
/// starts at the offset given.
type TornTail = fn(&[u8], usize) -> Vec<u8>;

/// Where each batch of a segment file starts: a batch is its base offset (8 bytes), its length
/// (4 bytes) and that many bytes.
fn batch_starts(segment: &[u8]) -> Result<Vec<usize>> {
    let mut starts = Vec::new();
    let mut at = 0;
    while at < segment.len() {
        let length = segment
            .get(at + 8..at + 12)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(i32::from_be_bytes)
            .context("a batch header past the end of the segment")?;
        starts.push(at);
        at += 12 + usize::try_from(length)?;
    }
    ensure!(at == segment.len(), "the segment ends inside a batch");
    Ok(starts)
}

async fn torn_tail(broker: &mut BrokerProcess) -> Result<()> {
    let topic = "torn";
    let bootstrap = broker.bootstrap();
    let mut conn = connect(broker).await?;
    create_topic_ok(&mut conn, topic, 1, &[("flush.messages", "1")]).await?;
    drop(conn);
    let mut acked = BTreeMap::new();
    produce_acked(&bootstrap, topic, 0, 50, &mut acked).await?;
    let segment = broker
        .data_dir()
        .join(format!("{topic}-0"))
        .join("00000000000000000000.log");

    let tails: [(&str, TornTail); 2] = [
        ("the front half of the last batch", |whole, last| {
            let batch = &whole[last..];
            batch[..batch.len() / 2].to_vec()
        }),
        ("a header claiming a megabyte", |whole, _| {
            let next = i64::try_from(whole.len()).unwrap_or(i64::MAX);
            let mut tail = next.to_be_bytes().to_vec();
            tail.extend(1_048_576_i32.to_be_bytes());
            tail.extend([0xAB; 40]);
            tail
        }),
    ];
    for (round, (what, torn)) in tails.into_iter().enumerate() {
        broker.kill()?;
        let whole = std::fs::read(&segment).with_context(|| format!("reading {segment:?}"))?;
        let starts = batch_starts(&whole)?;
        let last = *starts.last().context("a segment without batches")?;
        let tail = torn(&whole, last);
        let mut damaged = whole.clone();
        damaged.extend(&tail);
        std::fs::write(&segment, &damaged)?;
        broker.restart()?;

        let after = std::fs::read(&segment)?;
        ensure!(
            after == whole,
            "{what}: the segment holds {} bytes after recovery, {} before the torn write of {}",
            after.len(),
            whole.len(),
            tail.len()
        );
        check_read_back(&bootstrap, topic, 1, &acked, &format!("after {what}")).await?;
        let next = acked.len();
        produce_acked(&bootstrap, topic, next, 1, &mut acked).await?;
        let (position, _) = acked.iter().next_back().context("an acknowledged record")?;
        ensure!(
            *position == (0, i64::try_from(next)?),
            "round {round} ({what}): the next record went to {position:?}, not right after the last good one"
        );
    }
    check_read_back(&bootstrap, topic, 1, &acked, "at the end").await
}

// ---------------------------------------------------------------------------------------------
// What Kafka refuses because of a topic's storage settings
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_without_a_key_is_refused_by_a_compacted_topic_as_invalid_record() -> Result<()> {
    let broker = start(&[])?;
    let outcome = async {
        let topic = "keys-only";
        let mut conn = connect(&broker).await?;
        create_topic_ok(&mut conn, topic, 1, &[("cleanup.policy", "compact")]).await?;
        let keyed: &[(Option<&[u8]>, &[u8])] = &[(Some(b"k"), b"v")];
        let result = produce(&mut conn, topic, keyed, now_ms()).await?;
        expect_ok("Produce of a keyed record", result.error_code)?;
        // Kafka's LogValidator: "Compacted topic cannot accept message without key".
        let keyless: &[(Option<&[u8]>, &[u8])] = &[(Some(b"k"), b"v"), (None, b"no key")];
        let result = produce(&mut conn, topic, keyless, now_ms()).await?;
        expect_code(
            &format!(
                "Produce of a batch holding a keyless record to a compacted topic ({:?})",
                result.error_message
            ),
            result.error_code,
            ResponseError::InvalidRecord,
        )?;
        ensure!(
            latest(&mut conn, topic, 0).await? == 1,
            "the refused batch reached the log"
        );
        Ok(())
    }
    .await;
    broker.explain(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_records_on_a_topic_without_the_delete_policy_is_a_policy_violation() -> Result<()> {
    let broker = start(&[])?;
    let outcome = async {
        let topic = "compact-only";
        let mut conn = connect(&broker).await?;
        create_topic_ok(&mut conn, topic, 1, &[("cleanup.policy", "compact")]).await?;
        for i in 0..10u8 {
            let record: &[(Option<&[u8]>, &[u8])] = &[(Some(&[i]), b"value")];
            let result = produce(&mut conn, topic, record, now_ms()).await?;
            expect_ok("Produce", result.error_code)?;
        }
        let admin: AdminClient<DefaultClientContext> =
            harness::client_config(&broker.bootstrap()).create()?;
        // Kafka's Partition.deleteRecordsOnLeader: "Records of partition ... can not be
        // deleted due to the configured policy" unless cleanup.policy includes delete.
        let low = admin_delete_records(&admin, topic, Offset::Offset(5)).await?;
        ensure!(
            low == Err(RDKafkaErrorCode::PolicyViolation),
            "DeleteRecords on a cleanup.policy=compact topic answered {low:?}, Kafka answers \
             POLICY_VIOLATION (44)"
        );
        let start = earliest(&mut conn, topic, 0).await?;
        ensure!(
            start == 0,
            "the refused DeleteRecords moved the log start to {start}"
        );
        Ok(())
    }
    .await;
    broker.explain(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_segment_bytes_is_refused_as_record_list_too_large() -> Result<()> {
    let broker = start(&[])?;
    let outcome = async {
        let topic = "small-segments";
        let mut conn = connect(&broker).await?;
        create_topic_ok(&mut conn, topic, 1, &[("internal.segment.bytes", "1024")]).await?;
        // ~1.6 KB in one batch, under max.message.bytes but over the segment size: Kafka's
        // UnifiedLog.append refuses it ("exceeds the maximum configured segment size").
        let values: Vec<Vec<u8>> = (0..5).map(|i| padded(&format!("big-{i}"), 300)).collect();
        let records: Vec<(Option<&[u8]>, &[u8])> = values.iter().map(|v| (None, &v[..])).collect();
        let result = produce_batches(&mut conn, topic, &records, now_ms(), true).await?;
        expect_code(
            &format!(
                "Produce of a 1.6 KB batch to a topic with internal.segment.bytes=1024 ({:?})",
                result.error_message
            ),
            result.error_code,
            ResponseError::RecordListTooLarge,
        )?;
        ensure!(
            latest(&mut conn, topic, 0).await? == 0,
            "the refused batch reached the log"
        );
        Ok(())
    }
    .await;
    broker.explain(outcome)
}

// ---------------------------------------------------------------------------------------------
// Helpers: broker, raw requests
// ---------------------------------------------------------------------------------------------

async fn list_offset(conn: &mut Connection, topic: &str, partition: i32, at: i64) -> Result<i64> {
    let request = list_offsets_request(topic, partition, at);
    let response = call(conn, &request, LIST_OFFSETS_V).await?;
    let result = response
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .context("ListOffsets answered no partition")?;
    expect_ok(
        &format!("ListOffsets {topic}-{partition} at {at}"),
        result.error_code,
    )?;
    Ok(result.offset)
}

async fn earliest(conn: &mut Connection, topic: &str, partition: i32) -> Result<i64> {
    list_offset(conn, topic, partition, EARLIEST).await
}

async fn latest(conn: &mut Connection, topic: &str, partition: i32) -> Result<i64> {
    list_offset(conn, topic, partition, LATEST).await
}

/// Polls ListOffsets earliest of partition 0 until `done` holds, bounded by
/// [`CONVERGE_TIMEOUT`].
async fn wait_for_earliest(
    conn: &mut Connection,
    topic: &str,
    done: impl Fn(i64) -> bool,
) -> Result<i64> {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let start = earliest(conn, topic, 0).await?;
        if done(start) {
            return Ok(start);
        }
        ensure!(
            Instant::now() < deadline,
            "{topic}-0: the log start offset is still {start} after {CONVERGE_TIMEOUT:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// `text` padded with dots to `len` bytes, so batch sizes are predictable.
fn padded(text: &str, len: usize) -> Vec<u8> {
    let mut value = text.as_bytes().to_vec();
    value.resize(len.max(value.len()), b'.');
    value
}

/// Produces `values` (without keys) as one uncompressed batch with CreateTime `timestamp`;
/// returns its base offset.
async fn produce_ok(
    conn: &mut Connection,
    topic: &str,
    values: &[Vec<u8>],
    timestamp: i64,
) -> Result<i64> {
    let records: Vec<(Option<&[u8]>, &[u8])> = values.iter().map(|v| (None, &v[..])).collect();
    let result = produce(conn, topic, &records, timestamp).await?;
    expect_ok(
        &format!("Produce to {topic}-0 ({:?})", result.error_message),
        result.error_code,
    )?;
    Ok(result.base_offset)
}

/// Produces `(key, value)` records, an uncompressed batch per record, with CreateTime
/// `timestamp` to partition 0 and returns the partition's answer.
async fn produce(
    conn: &mut Connection,
    topic: &str,
    records: &[(Option<&[u8]>, &[u8])],
    timestamp: i64,
) -> Result<PartitionProduceResponse> {
    produce_batches(conn, topic, records, timestamp, false).await
}

/// Produces `records` to partition 0 with acks=all, as one batch (`one_batch`) or a batch per
/// record (see [`BatchBuilder::without_sequences`]).
async fn produce_batches(
    conn: &mut Connection,
    topic: &str,
    records: &[(Option<&[u8]>, &[u8])],
    timestamp: i64,
    one_batch: bool,
) -> Result<PartitionProduceResponse> {
    let builder = BatchBuilder::default().timestamp(timestamp);
    let builder = if one_batch {
        builder
    } else {
        builder.without_sequences()
    };
    let request = produce_request(topic, 0, builder.records(records)?, -1);
    let response = call(conn, &request, PRODUCE_V).await?;
    response
        .responses
        .into_iter()
        .flat_map(|t| t.partition_responses)
        .next()
        .context("Produce answered no partition")
}

async fn fetch(
    conn: &mut Connection,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<PartitionData> {
    let response = call(
        conn,
        &fetch_request(topic, partition, offset, 0, 1),
        FETCH_V,
    )
    .await?;
    expect_ok("Fetch (top level)", response.error_code)?;
    response
        .responses
        .into_iter()
        .next()
        .and_then(|t| t.partitions.into_iter().next())
        .context("Fetch answered no partition")
}

/// A fetch at `offset` is OFFSET_OUT_OF_RANGE and reports the log start offset `start`.
async fn expect_out_of_range(
    conn: &mut Connection,
    topic: &str,
    partition: i32,
    offset: i64,
    start: i64,
) -> Result<()> {
    let data = fetch(conn, topic, partition, offset).await?;
    expect_code(
        &format!("Fetch {topic}-{partition} at {offset}, below the log start offset {start}"),
        data.error_code,
        ResponseError::OffsetOutOfRange,
    )?;
    ensure!(
        data.records.as_ref().is_none_or(Bytes::is_empty),
        "the OFFSET_OUT_OF_RANGE answer at {offset} carries records"
    );
    Ok(())
}

/// A record as read back through raw fetches.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RawRecord {
    offset: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
}

impl RawRecord {
    fn key_text(&self) -> String {
        String::from_utf8_lossy(self.key.as_deref().unwrap_or_default()).into_owned()
    }
}

/// Every record from `from` to the log end, through raw fetches (compressed batches decoded);
/// each fetch must succeed and the offsets must increase.
async fn read_records(
    conn: &mut Connection,
    topic: &str,
    partition: i32,
    from: i64,
) -> Result<Vec<RawRecord>> {
    let end = latest(conn, topic, partition).await?;
    let mut offset = from;
    let mut records: Vec<RawRecord> = Vec::new();
    while offset < end {
        let data = fetch(conn, topic, partition, offset).await?;
        expect_ok(
            &format!("Fetch {topic}-{partition} at {offset}"),
            data.error_code,
        )?;
        ensure!(
            data.log_start_offset <= offset,
            "Fetch at {offset} answered log start offset {}",
            data.log_start_offset
        );
        let mut bytes = data.records.unwrap_or_default();
        // Where the next fetch starts: past the last batch returned, even one left empty by
        // compaction (Kafka keeps some; clients step over them by their last offset).
        let next = batch_ranges(&bytes)?
            .last()
            .map_or(offset, |(_, last)| last + 1);
        ensure!(
            next > offset,
            "Fetch at {offset} (log end {end}) returned no batch reaching {offset}: {:?}",
            batch_ranges(&bytes)?
        );
        let sets = RecordBatchDecoder::decode_all(&mut bytes)
            .with_context(|| format!("decoding the batches fetched at {offset}"))?;
        for record in sets.into_iter().flat_map(|s| s.records) {
            // A fetch inside a batch returns the whole batch; clients skip what is before.
            if record.offset < offset {
                continue;
            }
            if let Some(last) = records.last() {
                ensure!(
                    record.offset > last.offset,
                    "offset {} read after {}",
                    record.offset,
                    last.offset
                );
            }
            records.push(RawRecord {
                offset: record.offset,
                key: record.key,
                value: record.value,
            });
        }
        offset = next;
    }
    Ok(records)
}

/// (base offset, last offset) of each whole RecordBatch in fetched bytes, from the headers:
/// base offset at byte 0, batch length at 8, last offset delta at 23.
fn batch_ranges(bytes: &[u8]) -> Result<Vec<(i64, i64)>> {
    let mut ranges = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 27 {
        let field = |at: usize, len: usize| -> Result<&[u8]> {
            rest.get(at..at + len).context("batch header cut short")
        };
        let base = i64::from_be_bytes(field(0, 8)?.try_into()?);
        let length = i32::from_be_bytes(field(8, 4)?.try_into()?);
        let last_delta = i32::from_be_bytes(field(23, 4)?.try_into()?);
        let size = 12 + usize::try_from(length).context("negative batch length")?;
        if rest.len() < size {
            break;
        }
        ranges.push((base, base + i64::from(last_delta)));
        rest = &rest[size..];
    }
    Ok(ranges)
}

/// (offset, value) of every record from `from` on.
async fn read_values(
    conn: &mut Connection,
    topic: &str,
    partition: i32,
    from: i64,
) -> Result<Vec<(i64, Vec<u8>)>> {
    Ok(read_records(conn, topic, partition, from)
        .await?
        .into_iter()
        .map(|r| (r.offset, r.value.map(|v| v.to_vec()).unwrap_or_default()))
        .collect())
}

/// `read` is exactly `produced[from..]` at offsets `from..`.
fn check_values(read: &[(i64, Vec<u8>)], produced: &[Vec<u8>], from: i64) -> Result<()> {
    let expected: Vec<(i64, Vec<u8>)> = produced
        .iter()
        .enumerate()
        .skip(usize::try_from(from)?)
        .map(|(i, v)| (i as i64, v.clone()))
        .collect();
    if read != expected {
        let first_difference = read
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(read.len().min(expected.len()));
        bail!(
            "read {} records from {from}, expected {}; first difference at index \
             {first_difference}: {:?} vs {:?}",
            read.len(),
            expected.len(),
            read.get(first_difference)
                .map(|r| (r.0, String::from_utf8_lossy(&r.1))),
            expected
                .get(first_difference)
                .map(|r| (r.0, String::from_utf8_lossy(&r.1)))
        );
    }
    Ok(())
}

/// (base offset, bytes) of every `.log` segment file of a partition, oldest first.
fn segment_files(data_dir: &Path, topic: &str, partition: i32) -> Result<Vec<(i64, u64)>> {
    let dir = data_dir.join(format!("{topic}-{partition}"));
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".log") else {
            continue;
        };
        let Ok(base) = stem.parse::<i64>() else {
            continue;
        };
        // A file removed between the listing and here is simply gone.
        if let Ok(meta) = entry.metadata() {
            segments.push((base, meta.len()));
        }
    }
    segments.sort_unstable();
    Ok(segments)
}

// ---------------------------------------------------------------------------------------------
// Helpers: a real consumer
// ---------------------------------------------------------------------------------------------

/// A record as librdkafka delivers it.
#[derive(Debug, Clone)]
struct Consumed {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
}

impl Consumed {
    fn key_text(&self) -> String {
        String::from_utf8_lossy(self.key.as_deref().unwrap_or_default()).into_owned()
    }
}

/// Reads every partition from the beginning to its end with librdkafka (CRCs checked), in
/// delivery order; offsets must increase within each partition.
async fn consume_all(bootstrap: &str, topic: &str, partitions: i32) -> Result<Vec<Consumed>> {
    let consumer: StreamConsumer = harness::consumer_config(bootstrap, "oxbow-storage-reader")
        .set("enable.partition.eof", "true")
        .set("check.crcs", "true")
        .create()
        .context("creating a consumer")?;
    let mut ends = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, partition, IO_TIMEOUT)
            .with_context(|| format!("ListOffsets {topic}-{partition}"))?;
        ends.insert(partition, high);
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut read = Vec::new();
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    let mut at_end = BTreeSet::new();
    while at_end.len() < ends.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = match timeout(left, consumer.recv()).await {
            Err(_) => bail!(
                "{topic}: read {} records in {READ_TIMEOUT:?} without reaching the ends \
                 {ends:?} (last offsets {last:?})",
                read.len()
            ),
            Ok(Err(KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
                continue;
            }
            Ok(Err(e)) => bail!("{topic}: consumer error after {} records: {e}", read.len()),
            Ok(Ok(message)) => message,
        };
        let (partition, offset) = (message.partition(), message.offset());
        if let Some(previous) = last.insert(partition, offset) {
            ensure!(
                offset > previous,
                "{topic}-{partition}: offset {offset} delivered after {previous}"
            );
        }
        read.push(Consumed {
            partition,
            offset,
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
        });
    }
    for (partition, end) in &ends {
        let reached = last.get(partition).map_or(-1, |o| o + 1);
        ensure!(
            reached <= *end,
            "{topic}-{partition}: read offset {reached} beyond the high watermark {end}"
        );
    }
    Ok(read)
}

/// The broker's wall clock jumps back 30 minutes, forward 2 hours and back again (libfaketime
/// in the broker process; its monotonic clock, which timeouts use, runs on), on a topic that
/// stamps records with the broker's clock (`LogAppendTime`), rolls segments after
/// `segment.ms` (10 minutes) and keeps records for `retention.ms` (1 hour). A jump back rolls
/// no segment and deletes nothing; the jump forward rolls the active segment once (not at
/// every append) and retention then deletes the segment it aged past an hour, and nothing
/// newer; every record not deleted reads back, and the broker runs throughout.
#[tokio::test]
async fn a_clock_jumping_back_and_forward_keeps_segment_rolling_and_time_retention_sane(
) -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let clock = harness::FakeClock::new(scratch.path().join("clock"))?;
    let options = clock.env().into_iter().fold(
        harness::BrokerOptions::new(env!("CARGO_BIN_EXE_oxbow-broker")),
        |options, (key, value)| options.env(key, value),
    );
    let broker = BrokerProcess::start(options.args([
        "--override",
        "auto.create.topics.enable=false",
        "--override",
        &format!("log.retention.check.interval.ms={BACKGROUND_INTERVAL_MS}"),
    ]))?;
    let outcome = clock_jumps(&broker, &clock).await;
    broker.explain(outcome)
}

async fn clock_jumps(broker: &BrokerProcess, clock: &harness::FakeClock) -> Result<()> {
    const TOPIC: &str = "clocked";
    let mut conn = connect(broker).await?;
    create_topic_ok(
        &mut conn,
        TOPIC,
        1,
        &[
            ("message.timestamp.type", "LogAppendTime"),
            ("segment.ms", "600000"),
            ("retention.ms", "3600000"),
        ],
    )
    .await?;
    let mut produced: Vec<Vec<u8>> = Vec::new();
    let segments = || segment_files(broker.data_dir(), TOPIC, 0);
    produce_round(&mut conn, TOPIC, &mut produced, "before").await?;
    ensure!(segments()?.len() == 1, "segments {:?}", segments()?);

    clock.set("-30m")?;
    produce_round(&mut conn, TOPIC, &mut produced, "behind").await?;
    // Retention gets several passes to misjudge the records stamped "in the future".
    tokio::time::sleep(Duration::from_secs(2)).await;
    ensure!(
        segments()?.len() == 1,
        "a jump back rolled segments: {:?}",
        segments()?
    );
    ensure!(
        earliest(&mut conn, TOPIC, 0).await? == 0,
        "a jump back deleted records"
    );

    clock.set("+2h")?;
    produce_round(&mut conn, TOPIC, &mut produced, "ahead").await?;
    let after = segments()?;
    ensure!(
        after.len() <= 2 && after.last().map(|s| s.0) == Some(200),
        "the jump forward should roll the active segment once, at offset 200: {after:?}"
    );
    // The sealed segment's newest record is two and a half hours old by the broker's clock.
    wait_for_earliest(&mut conn, TOPIC, |start| start == 200).await?;
    check_values(
        &read_values(&mut conn, TOPIC, 0, 200).await?,
        &produced,
        200,
    )
    .context("reading what the jump forward left")?;

    clock.set("+0")?;
    produce_round(&mut conn, TOPIC, &mut produced, "back").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let last = segments()?;
    ensure!(
        last.len() == 1 && last[0].0 == 200,
        "the jump back to real time should roll nothing and delete nothing more: {last:?}"
    );
    ensure!(earliest(&mut conn, TOPIC, 0).await? == 200);
    check_values(
        &read_values(&mut conn, TOPIC, 0, 200).await?,
        &produced,
        200,
    )
    .context("reading after the clock came back")?;
    Ok(())
}

/// Five requests of 20 records to partition 0, each acknowledged right after the last.
async fn produce_round(
    conn: &mut Connection,
    topic: &str,
    produced: &mut Vec<Vec<u8>>,
    label: &str,
) -> Result<()> {
    for request in 0..5 {
        let values: Vec<Vec<u8>> = (0..20)
            .map(|i| padded(&format!("{label}-{request}-{i}"), 100))
            .collect();
        let base = produce_ok(conn, topic, &values, now_ms()).await?;
        ensure!(
            base == i64::try_from(produced.len())?,
            "{label}: acknowledged at {base} after {} records",
            produced.len()
        );
        produced.extend(values);
    }
    Ok(())
}

/// A log directory that fills up: produce is refused with KAFKA_STORAGE_ERROR (nothing is
/// acknowledged that was not stored), the broker stays up and keeps serving reads of what it
/// has, no segment is left with a torn batch, and writes succeed again once there is space,
/// with every acknowledged record still at its offset, also after a restart. The log
/// directory is a size-limited tmpfs mounted in the test's own sandbox.
#[test]
fn a_full_log_directory_refuses_writes_with_a_storage_error_and_recovers_when_space_returns() {
    sandboxed(
        "a_full_log_directory_refuses_writes_with_a_storage_error_and_recovers_when_space_returns",
        || {
            let scratch = tempfile::tempdir().context("a directory for the small filesystem")?;
            let data = scratch.path().join("data");
            std::fs::create_dir_all(&data)?;
            let mount = |options: &str| {
                sandbox::run(
                    "mount",
                    &[
                        "-t",
                        "tmpfs",
                        "-o",
                        options,
                        "oxbow-small",
                        &data.display().to_string(),
                    ],
                )
            };
            mount("size=12m")?;
            let outcome = tokio::runtime::Runtime::new()?.block_on(disk_full(&data));
            let _ = sandbox::run("umount", &[&data.display().to_string()]);
            outcome
        },
    );
}

async fn disk_full(data: &Path) -> Result<()> {
    let mut broker = BrokerProcess::start(
        harness::BrokerOptions::new(env!("CARGO_BIN_EXE_oxbow-broker"))
            .data_dir(data)
            .args(["--override", "auto.create.topics.enable=false"]),
    )?;
    let outcome = fill_and_recover(&mut broker, data).await;
    broker.explain(outcome)
}

async fn fill_and_recover(broker: &mut BrokerProcess, data: &Path) -> Result<()> {
    const TOPIC: &str = "filling";
    let mut conn = connect(broker).await?;
    create_topic_ok(&mut conn, TOPIC, 1, &[("segment.bytes", "1048576")]).await?;
    // 64 records of 1 KiB a request: a 12 MiB filesystem fills within a few hundred.
    let mut acknowledged: Vec<Vec<u8>> = Vec::new();
    let mut refused = None;
    for request in 0..1000 {
        let values: Vec<Vec<u8>> = (0..64)
            .map(|i| padded(&format!("r{request}-{i}"), 1024))
            .collect();
        let records: Vec<(Option<&[u8]>, &[u8])> = values.iter().map(|v| (None, &v[..])).collect();
        let result = produce_batches(&mut conn, TOPIC, &records, now_ms(), true).await?;
        if result.error_code != 0 {
            refused = Some((request, result.error_code, result.error_message));
            break;
        }
        ensure!(
            result.base_offset == i64::try_from(acknowledged.len())?,
            "request {request} acknowledged at {} after {} records",
            result.base_offset,
            acknowledged.len()
        );
        acknowledged.extend(values);
    }
    let (at, code, message) = refused.context("1000 requests of 64 KiB fit in 12 MiB")?;
    eprintln!(
        "the 12 MiB log directory refused request {at} after {} records were acknowledged: {code} {message:?}",
        acknowledged.len()
    );
    expect_code(
        &format!("Produce to a full disk (request {at}: {message:?})"),
        code,
        ResponseError::KafkaStorageError,
    )?;
    // Still full: refused again, and nothing acknowledged goes missing meanwhile.
    let more: Vec<Vec<u8>> = (0..64)
        .map(|i| padded(&format!("full-{i}"), 1024))
        .collect();
    let records: Vec<(Option<&[u8]>, &[u8])> = more.iter().map(|v| (None, &v[..])).collect();
    let again = produce_batches(&mut conn, TOPIC, &records, now_ms(), true).await?;
    expect_code(
        "Produce to a disk still full",
        again.error_code,
        ResponseError::KafkaStorageError,
    )?;
    ensure!(broker.is_running(), "the broker exited on a full disk");
    check_values(
        &read_values(&mut conn, TOPIC, 0, 0).await?,
        &acknowledged,
        0,
    )
    .context("reading back what was acknowledged before the disk filled")?;

    // Space returns: the same filesystem, grown.
    sandbox::run(
        "mount",
        &["-o", "remount,size=64m", &data.display().to_string()],
    )?;
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    let mut last = None;
    let mut recovered = false;
    while Instant::now() < deadline {
        let values: Vec<Vec<u8>> = (0..64)
            .map(|i| padded(&format!("after-{}-{i}", acknowledged.len()), 1024))
            .collect();
        let records: Vec<(Option<&[u8]>, &[u8])> = values.iter().map(|v| (None, &v[..])).collect();
        let result = produce_batches(&mut conn, TOPIC, &records, now_ms(), true).await?;
        if result.error_code == 0 {
            ensure!(
                result.base_offset == i64::try_from(acknowledged.len())?,
                "acknowledged at {} after {} records",
                result.base_offset,
                acknowledged.len()
            );
            acknowledged.extend(values);
            recovered = true;
            break;
        }
        last = Some((result.error_code, result.error_message));
        tokio::time::sleep(POLL).await;
    }
    ensure!(
        recovered,
        "writes still refused {CONVERGE_TIMEOUT:?} after space returned: {last:?}"
    );
    eprintln!(
        "writes accepted again {:.1?} after the filesystem grew",
        CONVERGE_TIMEOUT.saturating_sub(deadline.saturating_duration_since(Instant::now()))
    );
    for round in 0..10 {
        let values: Vec<Vec<u8>> = (0..64)
            .map(|i| padded(&format!("later-{round}-{i}"), 1024))
            .collect();
        let base = produce_ok(&mut conn, TOPIC, &values, now_ms()).await?;
        ensure!(
            base == i64::try_from(acknowledged.len())?,
            "acknowledged at {base}"
        );
        acknowledged.extend(values);
    }
    check_values(
        &read_values(&mut conn, TOPIC, 0, 0).await?,
        &acknowledged,
        0,
    )
    .context("reading back after space returned")?;

    // Recovery from the files finds every batch whole.
    let status = broker.stop()?;
    ensure!(
        status.success(),
        "the broker exited with {status} on SIGTERM"
    );
    broker.restart()?;
    let mut conn = connect(broker).await?;
    check_values(
        &read_values(&mut conn, TOPIC, 0, 0).await?,
        &acknowledged,
        0,
    )
    .context("reading back after a restart")?;
    Ok(())
}
