//! Several log directories per broker (JBOD), through real interfaces: a broker process on
//! three directories, Apache Kafka 4.1's `kafka-topics`, `kafka-log-dirs` and
//! `kafka-reassign-partitions` (with `log_dirs`), librdkafka producing and consuming while a
//! partition moves between directories, a restart, the refusals at start, and the error
//! codes of AlterReplicaLogDirs.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use kafka_protocol::messages::alter_replica_log_dirs_request::{
    AlterReplicaLogDir, AlterReplicaLogDirTopic,
};
use kafka_protocol::messages::{AlterReplicaLogDirsRequest, DescribeLogDirsRequest};
use kafka_protocol::records::RecordBatchDecoder;
use kafka_protocol::ResponseError;
use oxbow_e2e::harness::{self, BrokerOptions, BrokerProcess};
use oxbow_e2e::kafka::{self, eventually};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use support::{call, connect, expect_code, expect_ok, str_bytes, topic_name, BatchBuilder};

const TOPIC: &str = "spread";

fn broker_on(dirs: &[PathBuf]) -> Result<BrokerProcess> {
    BrokerProcess::start(
        BrokerOptions::new(env!("CARGO_BIN_EXE_oxbow-broker"))
            .log_dirs(dirs.iter().cloned())
            .args(["--override", "auto.create.topics.enable=false"]),
    )
}

/// The partitions of `topic` whose directories are in `dir`.
fn partitions_in(dir: &Path, topic: &str) -> Result<Vec<i32>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(index) = name
            .strip_prefix(&format!("{topic}-"))
            .and_then(|i| i.parse().ok())
        {
            found.push(index);
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// `kafka-log-dirs --describe`: each log directory of the broker with the partitions of
/// `topic` it holds (`-future` marks a future replica) and their sizes.
fn describe_log_dirs(
    broker: &BrokerProcess,
    topic: &str,
) -> Result<BTreeMap<String, Vec<(String, i64)>>> {
    let out = kafka::tool(
        "kafka-log-dirs",
        &[
            "--bootstrap-server",
            &broker.bootstrap(),
            "--describe",
            "--topic-list",
            topic,
        ],
    )?;
    ensure!(
        out.stdout
            .contains("Received log directory information from brokers 0"),
        "{out}"
    );
    let report = out.json_line()?;
    let mut dirs = BTreeMap::new();
    for dir in report["brokers"][0]["logDirs"]
        .as_array()
        .with_context(|| format!("no logDirs: {report}"))?
    {
        ensure!(dir["error"].is_null(), "{report}");
        let path = dir["logDir"].as_str().context("logDir")?.to_string();
        let mut partitions = Vec::new();
        for p in dir["partitions"].as_array().context("partitions")? {
            let mut name = p["partition"].as_str().context("partition")?.to_string();
            if p["isFuture"].as_bool() == Some(true) {
                name.push_str("-future");
            }
            partitions.push((name, p["size"].as_i64().context("size")?));
        }
        partitions.sort();
        dirs.insert(path, partitions);
    }
    Ok(dirs)
}

/// What a producer thread had acknowledged: (offset, value) in partition 0, in order.
fn produce_until(
    bootstrap: &str,
    stop: &Arc<AtomicBool>,
    first: usize,
) -> std::thread::JoinHandle<Result<Vec<(i64, String)>>> {
    let bootstrap = bootstrap.to_string();
    let stop = Arc::clone(stop);
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let producer = harness::future_producer(&bootstrap)?;
            let mut acked = Vec::new();
            let mut n = first;
            while !stop.load(Ordering::Relaxed) {
                let value = format!("record-{n:08}-{}", "x".repeat(200));
                let delivered = producer
                    .send(
                        FutureRecord::to(TOPIC)
                            .partition(0)
                            .key("k")
                            .payload(&value),
                        Duration::from_secs(30),
                    )
                    .await
                    .map_err(|(e, _)| anyhow::anyhow!("record {n} not acknowledged: {e}"))?;
                acked.push((delivered.offset, value));
                n += 1;
            }
            Ok(acked)
        })
    })
}

/// Reads partition 0 from the start until `expected` records came, and checks they are
/// exactly the acknowledged ones, at their offsets, in order.
fn consume_all(bootstrap: &str, expected: &[(i64, String)]) -> Result<()> {
    let consumer: BaseConsumer = harness::base_consumer(bootstrap, "jbod-check")?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(TOPIC, 0, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    let mut read: Vec<(i64, String)> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while read.len() < expected.len() {
        ensure!(
            std::time::Instant::now() < deadline,
            "read {} of {} records",
            read.len(),
            expected.len()
        );
        if let Some(message) = consumer.poll(Duration::from_millis(500)) {
            let message = message?;
            let value = String::from_utf8_lossy(message.payload().unwrap_or_default());
            read.push((message.offset(), value.into_owned()));
        }
    }
    ensure!(
        read.len() == expected.len(),
        "more records than acknowledged"
    );
    for (got, want) in read.iter().zip(expected) {
        ensure!(
            got == want,
            "at offset {}: read {:?}, acknowledged {:?}",
            want.0,
            got,
            want
        );
    }
    Ok(())
}

/// A broker on three log directories spreads a topic's partitions over them,
/// `kafka-log-dirs` shows each directory with its partitions, `kafka-reassign-partitions`
/// with `log_dirs` moves a partition to another directory while a producer keeps writing,
/// and every acknowledged record is read back from the new directory, in order, before and
/// after a restart.
#[test]
fn partitions_spread_over_three_log_dirs_and_move_between_them_while_producing() -> Result<()> {
    let root = tempfile::tempdir()?;
    let dirs: Vec<PathBuf> = ["a", "b", "c"]
        .iter()
        .map(|d| root.path().join(d))
        .collect();
    let mut broker = broker_on(&dirs)?;
    let bootstrap = broker.bootstrap();
    let outcome = run_spread_and_move(&mut broker, &bootstrap, &dirs);
    broker.explain(outcome)
}

fn run_spread_and_move(
    broker: &mut BrokerProcess,
    bootstrap: &str,
    dirs: &[PathBuf],
) -> Result<()> {
    // Each directory is a Kafka log directory: one cluster, one node, its own id.
    let mut ids = Vec::new();
    let mut clusters = Vec::new();
    for dir in dirs {
        let text = std::fs::read_to_string(dir.join("meta.properties"))?;
        ensure!(
            text.contains("node.id=0\n") && text.contains("version=1\n"),
            "{text}"
        );
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .map(str::to_string)
                .with_context(|| format!("no {key} in {text}"))
        };
        clusters.push(field("cluster.id")?);
        ids.push(field("directory.id")?);
    }
    ensure!(clusters.iter().all(|c| *c == clusters[0]), "{clusters:?}");
    ids.sort();
    ids.dedup();
    ensure!(ids.len() == 3, "a directory.id per directory: {ids:?}");

    let created = kafka::tool(
        "kafka-topics",
        &[
            "--bootstrap-server",
            bootstrap,
            "--create",
            "--topic",
            TOPIC,
            "--partitions",
            "6",
            "--replication-factor",
            "1",
        ],
    )?;
    ensure!(
        created.stdout.contains("Created topic spread."),
        "{created}"
    );
    // The fewest partitions first, ties in log.dirs order: 0,3 → a; 1,4 → b; 2,5 → c.
    ensure!(partitions_in(&dirs[0], TOPIC)? == vec![0, 3]);
    ensure!(partitions_in(&dirs[1], TOPIC)? == vec![1, 4]);
    ensure!(partitions_in(&dirs[2], TOPIC)? == vec![2, 5]);

    let described = describe_log_dirs(broker, TOPIC)?;
    let names = |list: &[&str]| {
        list.iter()
            .map(|n| format!("{TOPIC}-{n}"))
            .collect::<Vec<_>>()
    };
    let listed = |dir: &Path| -> Vec<String> {
        described
            .get(&dir.display().to_string())
            .map(|ps| ps.iter().map(|(n, _)| n.clone()).collect())
            .unwrap_or_default()
    };
    ensure!(described.len() == 3, "{described:?}");
    ensure!(listed(&dirs[0]) == names(&["0", "3"]), "{described:?}");
    ensure!(listed(&dirs[1]) == names(&["1", "4"]), "{described:?}");
    ensure!(listed(&dirs[2]) == names(&["2", "5"]), "{described:?}");

    // Some data first, so that the move has something to copy, then a producer that keeps
    // writing while the partition moves.
    let stop = Arc::new(AtomicBool::new(false));
    let before = produce_until(bootstrap, &stop, 0);
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let mut acked = before
        .join()
        .map_err(|_| anyhow::anyhow!("producer panicked"))??;
    ensure!(!acked.is_empty(), "nothing produced");
    let stop = Arc::new(AtomicBool::new(false));
    let during = produce_until(bootstrap, &stop, acked.len());
    std::thread::sleep(Duration::from_millis(500));

    let scratch = tempfile::tempdir()?;
    let plan = scratch.path().join("move.json");
    let target = dirs[1].display().to_string();
    std::fs::write(
        &plan,
        serde_json::json!({
            "version": 1,
            "partitions": [{
                "topic": TOPIC, "partition": 0, "replicas": [0], "log_dirs": [target]
            }]
        })
        .to_string(),
    )?;
    let plan = plan.to_string_lossy().into_owned();
    let executed = kafka::tool(
        "kafka-reassign-partitions",
        &[
            "--bootstrap-server",
            bootstrap,
            "--execute",
            "--reassignment-json-file",
            &plan,
        ],
    )?;
    ensure!(
        executed.stdout.contains(&format!(
            "Successfully started moving log directory to {target} for replica {TOPIC}-0 with broker 0"
        )),
        "{executed}"
    );
    eventually("the move verified", Duration::from_secs(60), || {
        let verified = kafka::tool(
            "kafka-reassign-partitions",
            &[
                "--bootstrap-server",
                bootstrap,
                "--verify",
                "--reassignment-json-file",
                &plan,
            ],
        )?;
        ensure!(
            verified.stdout.contains(&format!(
                "Reassignment of replica {TOPIC}-0-0 completed successfully"
            )),
            "{verified}"
        );
        Ok(())
    })
    .inspect_err(|_| stop.store(true, Ordering::Relaxed))?;
    // The producer went on through the swap.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let written = during
        .join()
        .map_err(|_| anyhow::anyhow!("producer panicked"))??;
    ensure!(!written.is_empty(), "nothing produced during the move");
    acked.extend(written);

    ensure!(partitions_in(&dirs[0], TOPIC)? == vec![3], "moved out of a");
    ensure!(
        partitions_in(&dirs[1], TOPIC)? == vec![0, 1, 4],
        "moved into b"
    );
    eventually(
        "no -future or -delete left",
        Duration::from_secs(10),
        || {
            let leftovers = transient_dirs(dirs)?;
            ensure!(leftovers.is_empty(), "{leftovers:?}");
            Ok(())
        },
    )?;
    let described = describe_log_dirs(broker, TOPIC)?;
    let in_b = described
        .get(&target)
        .with_context(|| format!("{target} not described: {described:?}"))?;
    ensure!(
        in_b.iter().any(|(n, size)| n == "spread-0" && *size > 0),
        "{described:?}"
    );
    consume_all(bootstrap, &acked)?;

    broker.restart()?;
    ensure!(
        partitions_in(&dirs[0], TOPIC)? == vec![3],
        "still out of a after a restart"
    );
    ensure!(
        partitions_in(&dirs[1], TOPIC)? == vec![0, 1, 4],
        "still in b after a restart"
    );
    consume_all(bootstrap, &acked)?;
    Ok(())
}

/// Log directories the broker cannot use stop it at start, saying which and why.
#[test]
fn unusable_log_dirs_are_refused_at_start() -> Result<()> {
    let root = tempfile::tempdir()?;
    let good = root.path().join("good");
    let file = root.path().join("a-file");
    std::fs::write(&file, b"not a directory")?;
    let refused = |dirs: &[PathBuf], expected: &str| -> Result<()> {
        match broker_on(dirs) {
            Ok(_) => bail!("started on {dirs:?}"),
            Err(e) => {
                let text = format!("{e:#}");
                ensure!(text.contains(expected), "expected `{expected}` in: {text}");
                Ok(())
            }
        }
    };
    refused(
        &[good.clone(), file.clone()],
        &format!("log directory {} is not a directory", file.display()),
    )?;
    refused(
        &[good.clone(), root.path().join("good/")],
        "expected each directory once",
    )?;
    let link = root.path().join("link");
    std::os::unix::fs::symlink(&good, &link)?;
    refused(&[good.clone(), link], "are the same directory")?;

    let locked = root.path().join("locked");
    std::fs::create_dir(&locked)?;
    let _unlock = make_unwritable(&locked)?;
    refused(
        &[good.clone(), locked.clone()],
        &format!("log directory {} is not writable", locked.display()),
    )?;

    // A partition in two directories: the broker refuses to pick one.
    let other = root.path().join("other");
    {
        let broker = broker_on(&[good.clone(), other.clone()])?;
        let runtime = tokio::runtime::Runtime::new()?;
        runtime.block_on(async {
            let mut conn = connect(&broker).await?;
            support::create_topic_ok(&mut conn, "twice", 1, &[]).await
        })?;
    }
    let copy = other.join("twice-0");
    std::fs::create_dir_all(&copy)?;
    refused(
        &[good.clone(), other.clone()],
        "partition twice-0 has a log in two log directories",
    )?;
    std::fs::remove_dir(&copy)?;
    drop(broker_on(&[good, other])?);
    Ok(())
}

/// Makes `dir` refuse new files, for root too (the immutable attribute): the guard undoes it.
fn make_unwritable(dir: &Path) -> Result<impl Drop> {
    struct Unlock(PathBuf, bool);
    impl Drop for Unlock {
        fn drop(&mut self) {
            if self.1 {
                let _ = std::process::Command::new("chattr")
                    .arg("-i")
                    .arg(&self.0)
                    .status();
            }
            let _ = std::fs::set_permissions(
                &self.0,
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            );
        }
    }
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o555))?;
    let mut guard = Unlock(dir.to_path_buf(), false);
    let probe = dir.join("probe");
    if std::fs::write(&probe, b"x").is_ok() {
        // Root ignores permissions.
        std::fs::remove_file(&probe)?;
        let status = std::process::Command::new("chattr")
            .arg("+i")
            .arg(dir)
            .status()?;
        ensure!(status.success(), "chattr +i {} failed", dir.display());
        guard.1 = true;
        ensure!(
            std::fs::write(&probe, b"x").is_err(),
            "{} is still writable",
            dir.display()
        );
    }
    Ok(guard)
}

/// AlterReplicaLogDirs answers Kafka's codes: LOG_DIR_NOT_FOUND for a directory not in
/// `log.dirs`, UNKNOWN_TOPIC_OR_PARTITION for a topic or a partition that does not exist; a
/// move to the directory the replica is in is a success that moves nothing. (A partition
/// that exists but has no replica on the broker, REPLICA_NOT_AVAILABLE, needs a second
/// broker.)
#[tokio::test]
async fn alter_replica_log_dirs_answers_kafkas_errors() -> Result<()> {
    let root = tempfile::tempdir()?;
    let dirs: Vec<PathBuf> = ["a", "b"].iter().map(|d| root.path().join(d)).collect();
    let broker = broker_on(&dirs)?;
    let mut conn = connect(&broker).await?;
    support::create_topic_ok(&mut conn, "held", 1, &[]).await?;
    let request = |dir: &Path, topic: &str, partition: i32| {
        AlterReplicaLogDirsRequest::default().with_dirs(vec![AlterReplicaLogDir::default()
            .with_path(str_bytes(&dir.display().to_string()))
            .with_topics(vec![AlterReplicaLogDirTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(vec![partition])])])
    };
    let code = |response: kafka_protocol::messages::AlterReplicaLogDirsResponse| -> Result<i16> {
        let result = response.results.first().context("no topic result")?;
        Ok(result
            .partitions
            .first()
            .context("no partition result")?
            .error_code)
    };
    for version in [1, 2] {
        let elsewhere = root.path().join("not-a-log-dir");
        let answer = call(&mut conn, &request(&elsewhere, "held", 0), version).await?;
        expect_code(
            "a directory not in log.dirs",
            code(answer)?,
            ResponseError::LogDirNotFound,
        )?;
        let answer = call(&mut conn, &request(&dirs[1], "held", 7), version).await?;
        expect_code(
            "a partition that does not exist",
            code(answer)?,
            ResponseError::UnknownTopicOrPartition,
        )?;
        let answer = call(&mut conn, &request(&dirs[1], "absent", 0), version).await?;
        expect_code(
            "a topic that does not exist",
            code(answer)?,
            ResponseError::UnknownTopicOrPartition,
        )?;
        let answer = call(&mut conn, &request(&dirs[0], "held", 0), version).await?;
        expect_ok("where it already is", code(answer)?)?;
    }
    ensure!(partitions_in(&dirs[0], "held")? == vec![0]);
    ensure!(partitions_in(&dirs[1], "held")?.is_empty());
    Ok(())
}

const FETCH_V: i16 = 12;
const LIST_OFFSETS_V: i16 = 7;
const DESCRIBE_LOG_DIRS_V: i16 = 4;

/// One partition as DescribeLogDirs reports it: log directory, size, offset lag, isFuture.
type Replica = (String, i64, i64, bool);

/// DescribeLogDirs (every topic): the replicas of `topic`-`partition`, and each directory's
/// total and usable bytes.
async fn described(
    conn: &mut oxbow_broker::client::Connection,
    topic: &str,
    partition: i32,
) -> Result<(Vec<Replica>, Vec<(String, i64, i64)>)> {
    let request = DescribeLogDirsRequest::default().with_topics(None);
    let response = call(conn, &request, DESCRIBE_LOG_DIRS_V).await?;
    expect_ok("DescribeLogDirs", response.error_code)?;
    let mut replicas = Vec::new();
    let mut space = Vec::new();
    for dir in &response.results {
        expect_ok("DescribeLogDirs (a directory)", dir.error_code)?;
        let path = dir.log_dir.to_string();
        space.push((path.clone(), dir.total_bytes, dir.usable_bytes));
        for p in dir
            .topics
            .iter()
            .filter(|t| t.name.0.as_str() == topic)
            .flat_map(|t| &t.partitions)
            .filter(|p| p.partition_index == partition)
        {
            replicas.push((
                path.clone(),
                p.partition_size,
                p.offset_lag,
                p.is_future_key,
            ));
        }
    }
    replicas.sort();
    Ok((replicas, space))
}

/// The log end offset of `topic`-`partition` (ListOffsets latest).
async fn log_end(
    conn: &mut oxbow_broker::client::Connection,
    topic: &str,
    partition: i32,
) -> Result<i64> {
    let response = call(
        conn,
        &support::list_offsets_request(topic, partition, -1),
        LIST_OFFSETS_V,
    )
    .await?;
    let answer = response
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .context("ListOffsets answered no partition")?;
    expect_ok("ListOffsets", answer.error_code)?;
    Ok(answer.offset)
}

/// Produces `values` to `topic`-`partition` with acks=1: the base offset.
async fn produce(
    conn: &mut oxbow_broker::client::Connection,
    topic: &str,
    partition: i32,
    values: &[Vec<u8>],
) -> Result<i64> {
    let records = BatchBuilder::default().without_sequences().values(values)?;
    let answer = support::produce_partition(conn, topic, partition, records, 1).await?;
    expect_ok("Produce", answer.error_code)?;
    Ok(answer.base_offset)
}

/// Every record value of `topic`-`partition`, read by Fetch from offset 0 to `end`.
async fn read_all(
    conn: &mut oxbow_broker::client::Connection,
    topic: &str,
    partition: i32,
    end: i64,
) -> Result<Vec<(i64, Vec<u8>)>> {
    let mut read: Vec<(i64, Vec<u8>)> = Vec::new();
    let mut offset = 0;
    while offset < end {
        let response = call(
            conn,
            &support::fetch_request(topic, partition, offset, 0, 1),
            FETCH_V,
        )
        .await?;
        expect_ok("Fetch", response.error_code)?;
        let data = response
            .responses
            .into_iter()
            .next()
            .and_then(|t| t.partitions.into_iter().next())
            .context("Fetch answered no partition")?;
        expect_ok("Fetch (the partition)", data.error_code)?;
        let mut bytes = data.records.unwrap_or_default();
        let sets = RecordBatchDecoder::decode_all(&mut bytes)
            .with_context(|| format!("decoding the batches fetched at {offset}"))?;
        let before = offset;
        for record in sets.into_iter().flat_map(|s| s.records) {
            if record.offset < offset {
                continue;
            }
            read.push((
                record.offset,
                record.value.map(|v| v.to_vec()).unwrap_or_default(),
            ));
            offset = record.offset + 1;
        }
        ensure!(
            offset > before,
            "Fetch at {before} (end {end}) returned nothing"
        );
    }
    Ok(read)
}

/// While AlterReplicaLogDirs moves a replica, DescribeLogDirs shows it twice: the current
/// replica in its directory and the future one (isFuture, with its lag behind the current)
/// in the destination; the partition takes writes and serves reads meanwhile; once moved,
/// it is in the destination alone, with the same size and every record, and the source
/// directory keeps no trace of it. Each directory reports its filesystem's space.
#[tokio::test]
async fn a_moving_replica_shows_as_future_in_its_destination_and_keeps_serving() -> Result<()> {
    let root = tempfile::tempdir()?;
    let dirs: Vec<PathBuf> = ["a", "b"].iter().map(|d| root.path().join(d)).collect();
    let broker = broker_on(&dirs)?;
    let outcome = async {
        let mut conn = connect(&broker).await?;
        support::create_topic_ok(&mut conn, "moving", 1, &[]).await?;
        ensure!(partitions_in(&dirs[0], "moving")? == vec![0], "placed in a");
        // Enough data that the copy takes a while: 48 MiB in batches of 1 MiB.
        let mut expected: Vec<(i64, Vec<u8>)> = Vec::new();
        for batch in 0..48u8 {
            let values: Vec<Vec<u8>> = (0..16u8).map(|i| vec![batch ^ i; 64 * 1024]).collect();
            let base = produce(&mut conn, "moving", 0, &values).await?;
            expected.extend((base..).zip(values));
        }
        let (before, space) = described(&mut conn, "moving", 0).await?;
        let a = dirs[0].display().to_string();
        let b = dirs[1].display().to_string();
        ensure!(
            space.iter().map(|(p, _, _)| p.clone()).collect::<Vec<_>>() == vec![a.clone(), b.clone()],
            "the directories in log.dirs order: {space:?}"
        );
        for (path, total, usable) in &space {
            ensure!(*total > 0 && *usable > 0 && usable <= total, "{path}: {total} total, {usable} usable");
        }
        let size = match before.as_slice() {
            [(path, size, 0, false)] if *path == a && *size > 48 << 20 => *size,
            other => bail!("before the move: {other:?}"),
        };

        let request = AlterReplicaLogDirsRequest::default().with_dirs(vec![
            AlterReplicaLogDir::default()
                .with_path(str_bytes(&b))
                .with_topics(vec![AlterReplicaLogDirTopic::default()
                    .with_name(topic_name("moving"))
                    .with_partitions(vec![0])]),
        ]);
        let answer = call(&mut conn, &request, 2).await?;
        let code = answer
            .results
            .first()
            .and_then(|t| t.partitions.first())
            .context("AlterReplicaLogDirs answered no partition")?
            .error_code;
        expect_ok("AlterReplicaLogDirs", code)?;
        let (during, _) = described(&mut conn, "moving", 0).await?;
        match during.as_slice() {
            [(current, current_size, 0, false), (future, _, lag, true)]
                if *current == a && *current_size == size && *future == b && *lag >= 0 => {}
            other => bail!("while moving, expected the current replica in {a} and the future in {b}: {other:?}"),
        }
        // Writable and readable while the copy goes on.
        let extra: Vec<Vec<u8>> = vec![b"written during the move".to_vec()];
        let base = produce(&mut conn, "moving", 0, &extra).await?;
        expected.extend((base..).zip(extra));
        let end = log_end(&mut conn, "moving", 0).await?;
        ensure!(end == base + 1, "log end {end}, the last write at {base}");
        let head = call(
            &mut conn,
            &support::fetch_request("moving", 0, 0, 0, 1),
            FETCH_V,
        )
        .await?;
        let first = head
            .responses
            .first()
            .and_then(|t| t.partitions.first())
            .context("Fetch answered no partition")?;
        expect_ok("Fetch while moving", first.error_code)?;
        ensure!(first.records.as_ref().is_some_and(|r| !r.is_empty()), "no records while moving");

        let mut after = Vec::new();
        for _ in 0..600 {
            after = described(&mut conn, "moving", 0).await?.0;
            if after.iter().all(|(path, _, _, future)| *path == b && !future) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        match after.as_slice() {
            [(path, moved_size, 0, false)] if *path == b && *moved_size > size => {}
            other => bail!("after the move, expected the replica in {b} alone: {other:?}"),
        }
        ensure!(partitions_in(&dirs[0], "moving")?.is_empty(), "left in a");
        ensure!(partitions_in(&dirs[1], "moving")? == vec![0], "moved to b");
        // The old copy is removed right after the swap, outside the partition's lock.
        let mut leftovers = Vec::new();
        for _ in 0..100 {
            leftovers = transient_dirs(&dirs)?;
            if leftovers.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ensure!(leftovers.is_empty(), "{leftovers:?}");
        ensure!(log_end(&mut conn, "moving", 0).await? == end, "the log end moved");
        let read = read_all(&mut conn, "moving", 0, end).await?;
        ensure!(read.len() == expected.len(), "read {} of {} records", read.len(), expected.len());
        ensure!(read == expected, "the records read back differ from those written");
        Ok(())
    }
    .await;
    broker.explain(outcome)
}

/// The `-future` and `-delete` directories left in `dirs`.
fn transient_dirs(dirs: &[PathBuf]) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for dir in dirs {
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name.ends_with("-future") || name.ends_with("-delete") {
                found.push(name);
            }
        }
    }
    Ok(found)
}

/// A log directory failing under a running producer, as Kafka's log-directory failure
/// handling takes it: three brokers, each on two directories, broker 2 leading every
/// partition; its second directory is replaced by a file (as Kafka's own test does), so its
/// next write there fails. That directory goes offline, alone: its partitions are led by
/// other in-sync replicas and list broker 2 as offline, the first directory's stay led by
/// broker 2, DescribeLogDirs reports the failed one with KAFKA_STORAGE_ERROR, the gauge
/// counts it, the broker keeps running, and the idempotent `acks=all` producer loses
/// nothing. Once the directory is back (an empty disk) and broker 2 restarted, its replicas
/// are rebuilt and rejoin every ISR.
#[test]
fn a_failed_log_directory_goes_offline_alone_and_its_partitions_are_led_elsewhere_losing_nothing(
) -> Result<()> {
    use oxbow_e2e::cluster::{Cluster, ClusterOptions, RecordingContext};
    use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

    const FAILING: &str = "failing";
    const PARTITIONS: i32 = 6;
    const BROKER: i32 = 2;
    let mut cluster = Cluster::start(
        ClusterOptions::new(env!("CARGO_BIN_EXE_oxbow-broker"))
            .set("auto.create.topics.enable", "false")
            .two_log_dirs(),
    )?;
    let [first, second] = <[PathBuf; 2]>::try_from(cluster.log_dirs(BROKER))
        .map_err(|dirs| anyhow::anyhow!("log directories {dirs:?}"))?;
    let outcome = (|| -> Result<()> {
        let assignment: Vec<Vec<i32>> = (0..PARTITIONS)
            .map(|p| {
                if p % 2 == 0 {
                    vec![BROKER, 1, 3]
                } else {
                    vec![BROKER, 3, 1]
                }
            })
            .collect();
        let assignment: Vec<&[i32]> = assignment.iter().map(Vec::as_slice).collect();
        cluster.create_topic_assigned(
            FAILING,
            &assignment,
            &[("min.insync.replicas", "2"), ("segment.bytes", "1048576")],
        )?;
        let on_first = partitions_in(&first, FAILING)?;
        let on_second = partitions_in(&second, FAILING)?;
        ensure!(
            on_first.len() == 3 && on_second.len() == 3,
            "partitions spread {on_first:?} / {on_second:?}"
        );

        let producer: ThreadedProducer<RecordingContext> = cluster
            .client_config()
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "120000")
            .create_with_context(RecordingContext::default())
            .context("creating the producer")?;
        let stop = Arc::new(AtomicBool::new(false));
        let sender = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(
                move || -> Result<(usize, ThreadedProducer<RecordingContext>)> {
                    let mut sent = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        let value = format!("v{sent:08}-{}", "x".repeat(500));
                        let partition = i32::try_from(sent)? % PARTITIONS;
                        let record = BaseRecord::<(), _, _>::with_opaque_to(
                            FAILING,
                            Box::new(std::time::Instant::now()),
                        )
                        .payload(&value)
                        .partition(partition);
                        match producer.send(record) {
                            Ok(()) => sent += 1,
                            Err((
                                rdkafka::error::KafkaError::MessageProduction(
                                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                                ),
                                _,
                            )) => {}
                            Err((e, _)) => bail!("sending record {sent}: {e}"),
                        }
                        if sent % 20 == 0 {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                    producer.flush(Duration::from_secs(150))?;
                    Ok((sent, producer))
                },
            )
        };
        std::thread::sleep(Duration::from_secs(3));

        // The disk goes: its directory is gone, and a file stands in its place.
        cluster.fail_log_dir(BROKER, 1)?;
        let failed_at = std::time::Instant::now();
        let seen = cluster.wait_until(
            "the failed directory's partitions are led elsewhere",
            Duration::from_secs(30),
            |cluster| {
                let partitions = cluster.partitions_seen_by(1, FAILING)?;
                for view in &partitions {
                    if on_second.contains(&view.partition) {
                        ensure!(
                            view.leader != BROKER
                                && view.leader >= 0
                                && view.offline == vec![BROKER]
                                && !view.isr.contains(&BROKER),
                            "{view:?}"
                        );
                    } else {
                        ensure!(view.leader == BROKER && view.offline.is_empty(), "{view:?}");
                    }
                }
                Ok(partitions)
            },
        )?;
        eprintln!(
            "led elsewhere {:.1?} after the directory failed: {seen:?}",
            failed_at.elapsed()
        );
        ensure!(
            cluster.state(BROKER) == oxbow_e2e::cluster::NodeState::Running,
            "broker {BROKER} stopped on one failed directory of two"
        );
        let described: kafka_protocol::messages::DescribeLogDirsResponse = cluster.request(
            BROKER,
            &DescribeLogDirsRequest::default().with_topics(None),
            4,
        )?;
        for result in &described.results {
            let path = PathBuf::from(result.log_dir.as_str());
            let held: Vec<i32> = result
                .topics
                .iter()
                .filter(|t| t.name.0.as_str() == FAILING)
                .flat_map(|t| t.partitions.iter().map(|p| p.partition_index))
                .collect();
            if path == second {
                expect_code(
                    "DescribeLogDirs of the failed directory",
                    result.error_code,
                    ResponseError::KafkaStorageError,
                )?;
                ensure!(held.is_empty(), "the failed directory lists {held:?}");
            } else {
                ensure!(path == first, "unknown directory {}", path.display());
                expect_ok("DescribeLogDirs of the good directory", result.error_code)?;
                ensure!(held == on_first, "the good directory lists {held:?}");
            }
        }
        let metrics = cluster.scrape_metrics(BROKER)?;
        ensure!(
            harness::sample(&metrics, "oxbow_offline_log_directories") == Some(1.0),
            "gauge: {:?}",
            harness::sample(&metrics, "oxbow_offline_log_directories")
        );

        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
        let (sent, producer) = sender
            .join()
            .map_err(|_| anyhow::anyhow!("the producer thread panicked"))??;
        let deliveries = producer.context().log.snapshot();
        let failed: Vec<_> = deliveries.iter().filter(|d| d.error.is_some()).collect();
        ensure!(
            deliveries.len() == sent && failed.is_empty(),
            "{sent} sent, {} reported, failed: {:?}",
            deliveries.len(),
            failed.iter().take(5).collect::<Vec<_>>()
        );
        let read = cluster.read_all(FAILING, PARTITIONS)?;
        let at: BTreeMap<(i32, i64), &str> = read
            .iter()
            .map(|(p, o, v)| ((*p, *o), v.as_str()))
            .collect();
        ensure!(at.len() == read.len(), "an offset read twice");
        let mut values: Vec<&str> = read.iter().map(|(_, _, v)| v.as_str()).collect();
        values.sort_unstable();
        values.dedup();
        ensure!(values.len() == read.len(), "a value stored twice");
        for delivery in &deliveries {
            ensure!(
                at.get(&(delivery.partition, delivery.offset)) == Some(&delivery.value.as_str()),
                "acknowledged {}-{} is {:?} in the log",
                delivery.partition,
                delivery.offset,
                at.get(&(delivery.partition, delivery.offset))
            );
        }
        eprintln!(
            "{sent} records acknowledged across the failure, every one read back at its offset"
        );

        // A new disk: the broker starts on it, and its replicas are rebuilt from the leaders.
        cluster.stop(BROKER)?;
        cluster.replace_log_dir(BROKER, 1)?;
        cluster.start_nodes(&[BROKER])?;
        let healed = cluster.wait_for_full_isr(FAILING, Duration::from_secs(60))?;
        ensure!(
            healed.iter().all(|v| v.offline.is_empty()),
            "still offline after the restart: {healed:?}"
        );
        let rebuilt =
            partitions_in(&first, FAILING)?.len() + partitions_in(&second, FAILING)?.len();
        ensure!(
            rebuilt == 6,
            "{rebuilt} replicas on broker {BROKER} after the restart"
        );
        Ok(())
    })();
    cluster.explain(outcome)
}

/// The last log directory failing stops the broker with an error, as Kafka's does: it has
/// nowhere to keep anything.
#[test]
fn a_broker_whose_every_log_directory_failed_stops_with_an_error() -> Result<()> {
    let root = tempfile::tempdir()?;
    let only = root.path().join("only");
    let mut broker = broker_on(std::slice::from_ref(&only))?;
    std::fs::remove_dir_all(&only)?;
    std::fs::write(&only, b"not a directory")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while broker.is_running() {
        ensure!(
            std::time::Instant::now() < deadline,
            "still running 30 s after its only log directory failed\n{}",
            broker.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = broker.stop()?;
    ensure!(!status.success(), "exited with {status}");
    let log = std::fs::read_to_string(broker.log_path())?;
    ensure!(
        log.contains("every log directory has failed"),
        "{}",
        broker.log_tail(30)
    );
    Ok(())
}
