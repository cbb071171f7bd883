//! Compression of stored batches through the real `oxbow-broker`, as Kafka 4.1 does it:
//! `compression.type` on a topic, or on the broker for topics that set none, re-compresses
//! every produced batch in another codec into the topic's (at `compression.gzip.level`,
//! `compression.lz4.level` or `compression.zstd.level`); `producer` keeps the producer's
//! codec; unknown codecs and out-of-range levels are refused; Produce versions older than
//! zstd may not carry it, while Fetch serves zstd at every version (as Kafka 4.1 does).
//!
//! What is stored is read back three ways: a raw Fetch (each batch's codec bits, and its
//! decompressed records compared byte for byte with what was sent), the segment file on
//! disk, and librdkafka consuming every record.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::IncrementalAlterConfigsRequest;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use kafka_protocol::ResponseError;
use oxbow_broker::client::Connection;
use oxbow_e2e::harness::{self, BrokerProcess};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

mod support;
use support::{
    call, connect, create_topic, create_topic_ok, expect_code, expect_ok, fetch_request,
    produce_request, start_without_auto_create as start, str_bytes,
};

const BROKER_BIN: &str = env!("CARGO_BIN_EXE_oxbow-broker");
const PRODUCE_V: i16 = 9;
const FETCH_V: i16 = 12;
const INCREMENTAL_ALTER_CONFIGS_V: i16 = 1;
const RESOURCE_TOPIC: i8 = 2;
const OP_SET: i8 = 0;
/// Longest wait for librdkafka to read a topic back.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Every codec a producer may send, with its `compression.type` name.
const CODECS: [(Compression, &str); 5] = [
    (Compression::None, "uncompressed"),
    (Compression::Gzip, "gzip"),
    (Compression::Snappy, "snappy"),
    (Compression::Lz4, "lz4"),
    (Compression::Zstd, "zstd"),
];

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_topic_codec_stores_batches_of_every_producer_codec_in_it() -> Result<()> {
    let broker = start(&[])?;
    let outcome = async {
        let mut conn = connect(&broker).await?;
        for (stored, name) in CODECS {
            let topic = format!("stored-{name}");
            create_topic_ok(&mut conn, &topic, 1, &[("compression.type", name)]).await?;
            let mut sent = Vec::new();
            for (source, _) in CODECS {
                let batch = encode(source, &format!("{name}-from-{source:?}"), 8)?;
                produce_ok(&mut conn, &topic, batch.clone(), PRODUCE_V).await?;
                sent.push(batch);
            }
            let fetched = fetch_batches(&mut conn, &topic, FETCH_V).await?;
            ensure!(
                fetched.len() == sent.len(),
                "{topic}: fetched {} batches, sent {}",
                fetched.len(),
                sent.len()
            );
            for (i, (got, put)) in fetched.iter().zip(&sent).enumerate() {
                ensure!(
                    codec(got)? == stored,
                    "{topic}: batch {i} (sent as {:?}) is stored as {:?}",
                    codec(put)?,
                    codec(got)?
                );
                ensure!(
                    plain_records(got)? == plain_records(put)?,
                    "{topic}: batch {i}'s records are not the bytes the producer sent"
                );
            }
            let on_disk = segment_batches(&broker, &topic)?;
            let codecs = on_disk
                .iter()
                .map(|b| codec(b))
                .collect::<Result<Vec<_>>>()?;
            ensure!(
                codecs == vec![stored; sent.len()],
                "{topic}: the segment holds {codecs:?}"
            );
            let expected = sent
                .iter()
                .map(decoded)
                .collect::<Result<Vec<_>>>()?
                .concat();
            // The workspace builds librdkafka without its optional zstd support; the raw
            // Fetch above already compared the zstd topic's records byte for byte.
            if stored != Compression::Zstd {
                let consumed = consume(&broker.bootstrap(), &topic, expected.len())?;
                ensure!(
                    consumed == expected,
                    "{topic}: librdkafka read back {consumed:?}, expected {expected:?}"
                );
            }
        }
        Ok(())
    }
    .await;
    broker.explain(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_setting_applies_to_topics_without_one_and_producer_keeps_what_was_sent(
) -> Result<()> {
    let broker = start(&["--override", "compression.type=lz4"])?;
    let outcome = async {
        let mut conn = connect(&broker).await?;
        create_topic_ok(&mut conn, "inherits", 1, &[]).await?;
        create_topic_ok(&mut conn, "keeps", 1, &[("compression.type", "producer")]).await?;
        for (source, _) in CODECS {
            let batch = encode(source, "default", 4)?;
            produce_ok(&mut conn, "inherits", batch.clone(), PRODUCE_V).await?;
            produce_ok(&mut conn, "keeps", batch, PRODUCE_V).await?;
        }
        // A real client's compressed batches take the same path.
        // (librdkafka sends a batch uncompressed when compressing would not make it smaller)
        let producer = harness::producer_config(&broker.bootstrap())
            .set("compression.codec", "snappy")
            .create::<rdkafka::producer::FutureProducer>()?;
        let payload = "snappy batch ".repeat(100);
        for topic in ["inherits", "keeps"] {
            producer
                .send(
                    FutureRecord::to(topic).key("rdkafka").payload(&payload),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)
                .with_context(|| format!("librdkafka producing to {topic}"))?;
        }
        let inherits = codecs(&mut conn, "inherits").await?;
        ensure!(
            inherits == vec![Compression::Lz4; 6],
            "a topic without compression.type stores {inherits:?}, not the broker's lz4"
        );
        let keeps = codecs(&mut conn, "keeps").await?;
        let mut expected: Vec<Compression> = CODECS.iter().map(|(c, _)| *c).collect();
        expected.push(Compression::Snappy);
        ensure!(
            keeps == expected,
            "compression.type=producer stores {keeps:?}, not the producers' {expected:?}"
        );
        // kafka-configs --alter on a running topic applies to the next batches.
        alter_topic(&mut conn, "keeps", "compression.type", "zstd").await?;
        produce_ok(
            &mut conn,
            "keeps",
            encode(Compression::Gzip, "after", 3)?,
            PRODUCE_V,
        )
        .await?;
        let after = codecs(&mut conn, "keeps").await?;
        ensure!(
            after.last() == Some(&Compression::Zstd) && after[..after.len() - 1] == expected[..],
            "after compression.type=zstd the topic holds {after:?}"
        );
        let consumed = consume(&broker.bootstrap(), "inherits", 21)?;
        ensure!(
            consumed.last().map(|r| (r.0.as_deref(), r.1.as_deref()))
                == Some((Some(&b"rdkafka"[..]), Some(payload.as_bytes()))),
            "librdkafka read {consumed:?}"
        );
        Ok(())
    }
    .await;
    broker.explain(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn levels_apply_and_unknown_codecs_or_levels_out_of_range_are_refused() -> Result<()> {
    let broker = start(&[])?;
    let outcome = async {
        let mut conn = connect(&broker).await?;
        for (topic, level) in [("zstd-fast", "-50"), ("zstd-strong", "19")] {
            create_topic_ok(
                &mut conn,
                topic,
                1,
                &[
                    ("compression.type", "zstd"),
                    ("compression.zstd.level", level),
                ],
            )
            .await?;
            produce_ok(
                &mut conn,
                topic,
                encode(Compression::None, "level", 200)?,
                PRODUCE_V,
            )
            .await?;
        }
        create_topic_ok(
            &mut conn,
            "other-levels",
            1,
            &[
                ("compression.type", "gzip"),
                ("compression.gzip.level", "9"),
                ("compression.lz4.level", "17"),
            ],
        )
        .await?;
        let fast = fetch_batches(&mut conn, "zstd-fast", FETCH_V).await?;
        let strong = fetch_batches(&mut conn, "zstd-strong", FETCH_V).await?;
        let (fast, strong) = (fast.concat().len(), strong.concat().len());
        ensure!(
            strong < fast,
            "zstd level 19 stored {strong} bytes, level -50 {fast}: the level is not applied"
        );
        for (key, value, says) in [
            (
                "compression.type",
                "brotli",
                "one of uncompressed, zstd, lz4",
            ),
            ("compression.gzip.level", "0", "between 1 and 9, or -1"),
            ("compression.gzip.level", "10", "between 1 and 9, or -1"),
            ("compression.lz4.level", "18", "between 1 and 17"),
            ("compression.zstd.level", "23", "between -131072 and 22"),
            (
                "compression.zstd.level",
                "-131073",
                "between -131072 and 22",
            ),
        ] {
            let result = create_topic(&mut conn, "refused", 1, &[(key, value)]).await?;
            let message = result
                .error_message
                .map(|m| m.to_string())
                .unwrap_or_default();
            expect_code(
                &format!("CreateTopics with {key}={value} ({message})"),
                result.error_code,
                ResponseError::InvalidConfig,
            )?;
            ensure!(
                message.contains(key) && message.contains(says),
                "{key}={value} was refused with `{message}`, which does not say {says:?}"
            );
        }
        Ok(())
    }
    .await;
    broker.explain(outcome)?;
    let dir = tempfile::tempdir()?;
    let output = std::process::Command::new(BROKER_BIN)
        .args([
            "--listeners",
            "PLAINTEXT://127.0.0.1:0",
            "--metrics-address",
            "127.0.0.1:0",
        ])
        .arg("--log-dirs")
        .arg(dir.path())
        .args(["--override", "compression.zstd.level=99"])
        .stdin(std::process::Stdio::null())
        .output()
        .context("running the broker with a bad level")?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        !output.status.success() && stderr.contains("compression.zstd.level"),
        "a broker with compression.zstd.level=99 exited with {} and said: {stderr}",
        output.status
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_versions_older_than_zstd_may_not_carry_it_and_old_fetches_read_zstd_topics(
) -> Result<()> {
    let broker = start(&[])?;
    let outcome = async {
        let mut conn = connect(&broker).await?;
        create_topic_ok(&mut conn, "zstd-topic", 1, &[("compression.type", "zstd")]).await?;
        create_topic_ok(&mut conn, "plain", 1, &[]).await?;
        let response = call(
            &mut conn,
            &produce_request("plain", 0, encode(Compression::Zstd, "old", 2)?, 1),
            5,
        )
        .await?;
        let code = response
            .responses
            .first()
            .and_then(|t| t.partition_responses.first())
            .map(|p| p.error_code)
            .context("Produce answered no partition")?;
        expect_code(
            "Produce v5 of a zstd batch",
            code,
            ResponseError::UnsupportedCompressionType,
        )?;
        // An older producer's uncompressed batch is fine, and stored as zstd.
        produce_ok(
            &mut conn,
            "zstd-topic",
            encode(Compression::None, "old", 2)?,
            5,
        )
        .await?;
        produce_ok(&mut conn, "plain", encode(Compression::Gzip, "old", 2)?, 5).await?;
        // Kafka 4.1 no longer refuses Fetch before v10 on a zstd topic (its KafkaApis has no
        // such check; older brokers answered UNSUPPORTED_COMPRESSION_TYPE).
        let old_fetch = fetch_batches(&mut conn, "zstd-topic", 9).await?;
        let codecs: Vec<Compression> = old_fetch.iter().map(|b| codec(b)).collect::<Result<_>>()?;
        ensure!(
            codecs == vec![Compression::Zstd],
            "Fetch v9 of the zstd topic: {codecs:?}"
        );
        ensure!(fetch_batches(&mut conn, "plain", 9).await?.len() == 1);
        Ok(())
    }
    .await;
    broker.explain(outcome)
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// One batch of `count` records compressed with `compression`, as a producer sends it: keys
/// and values that name `tag`, values long and repetitive enough for levels to matter, and a
/// header on every record.
fn encode(compression: Compression, tag: &str, count: usize) -> Result<Bytes> {
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32,
            timestamp: 1_700_000_000_000 + i as i64,
            key: Some(Bytes::from(format!("{tag}-key-{i}"))),
            value: Some(Bytes::from(
                (0..40)
                    .map(|j| format!("{tag} value {i} word {} ", (i * 7 + j * 13) % 50))
                    .collect::<String>(),
            )),
            headers: [(str_bytes("trace"), Some(Bytes::from(format!("{tag}-{i}"))))]
                .into_iter()
                .collect(),
        })
        .collect();
    let mut batch = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut batch,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )?;
    Ok(batch.freeze())
}

async fn produce_ok(conn: &mut Connection, topic: &str, batch: Bytes, version: i16) -> Result<()> {
    let response = call(conn, &produce_request(topic, 0, batch, 1), version).await?;
    let partition = response
        .responses
        .first()
        .and_then(|t| t.partition_responses.first())
        .context("Produce answered no partition")?;
    expect_ok(
        &format!(
            "Produce v{version} to {topic} ({:?})",
            partition.error_message
        ),
        partition.error_code,
    )
}

/// Every batch of partition 0 of `topic`, fetched from offset 0 at `version`.
async fn fetch_batches(conn: &mut Connection, topic: &str, version: i16) -> Result<Vec<Bytes>> {
    let response = call(conn, &fetch_request(topic, 0, 0, 0, 1), version).await?;
    let partition = response
        .responses
        .first()
        .and_then(|t| t.partitions.first())
        .context("Fetch answered no partition")?;
    expect_ok(
        &format!("Fetch v{version} of {topic}"),
        partition.error_code,
    )?;
    split(partition.records.clone().unwrap_or_default())
}

async fn codecs(conn: &mut Connection, topic: &str) -> Result<Vec<Compression>> {
    fetch_batches(conn, topic, FETCH_V)
        .await?
        .iter()
        .map(|b| codec(b))
        .collect()
}

/// The batches of the first segment of `topic`-0 as the broker wrote them.
fn segment_batches(broker: &BrokerProcess, topic: &str) -> Result<Vec<Bytes>> {
    let path = broker
        .data_dir()
        .join(format!("{topic}-0"))
        .join("00000000000000000000.log");
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    split(Bytes::from(bytes))
}

/// Whole batches, back to back.
fn split(mut records: Bytes) -> Result<Vec<Bytes>> {
    let mut batches = Vec::new();
    while records.len() >= 12 {
        let length = i32::from_be_bytes(records[8..12].try_into()?);
        let size = 12 + usize::try_from(length)?;
        ensure!(
            size <= records.len(),
            "a batch of {size} bytes is cut short"
        );
        batches.push(records.split_to(size));
    }
    Ok(batches)
}

/// The codec named by a batch's attribute bits 0-2.
fn codec(batch: &[u8]) -> Result<Compression> {
    let attributes = i16::from_be_bytes(batch.get(21..23).context("short batch")?.try_into()?);
    Ok(match attributes & 7 {
        0 => Compression::None,
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        other => bail!("unknown codec {other}"),
    })
}

/// A batch's records section, decompressed: the records exactly as they are encoded.
fn plain_records(batch: &Bytes) -> Result<Bytes> {
    kafka_protocol::compression::decompress(codec(batch)?, batch.slice(61..))
}

type Consumed = (Option<Vec<u8>>, Option<Vec<u8>>, Vec<(String, Vec<u8>)>);

/// Key, value and headers of every record of a batch, decoded by the codec.
fn decoded(batch: &Bytes) -> Result<Vec<Consumed>> {
    let mut bytes = batch.clone();
    let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes)?;
    Ok(set
        .records
        .into_iter()
        .map(|r| {
            (
                r.key.map(|k| k.to_vec()),
                r.value.map(|v| v.to_vec()),
                r.headers
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.map(|v| v.to_vec()).unwrap_or_default()))
                    .collect(),
            )
        })
        .collect())
}

/// Reads `count` records of `topic`-0 from the start with librdkafka.
fn consume(bootstrap: &str, topic: &str, count: usize) -> Result<Vec<Consumed>> {
    let consumer: BaseConsumer =
        harness::consumer_config(bootstrap, "compression-tests").create()?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    let mut out = Vec::new();
    let deadline = Instant::now() + READ_TIMEOUT;
    while out.len() < count {
        ensure!(
            Instant::now() < deadline,
            "librdkafka read {} of {count} records of {topic} in {READ_TIMEOUT:?}",
            out.len()
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.with_context(|| format!("consuming {topic}"))?;
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        out.push((
            message.key().map(<[u8]>::to_vec),
            message.payload().map(<[u8]>::to_vec),
            headers,
        ));
    }
    Ok(out)
}

/// Sets one topic setting with IncrementalAlterConfigs, as `kafka-configs --alter` does.
async fn alter_topic(conn: &mut Connection, topic: &str, key: &str, value: &str) -> Result<()> {
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(str_bytes(topic))
            .with_configs(vec![AlterableConfig::default()
                .with_name(str_bytes(key))
                .with_config_operation(OP_SET)
                .with_value(Some(str_bytes(value)))]),
    ]);
    let response = call(conn, &request, INCREMENTAL_ALTER_CONFIGS_V).await?;
    let result = response
        .responses
        .first()
        .context("IncrementalAlterConfigs answered no resource")?;
    expect_ok(
        &format!(
            "setting {key}={value} on {topic} ({:?})",
            result.error_message
        ),
        result.error_code,
    )
}
