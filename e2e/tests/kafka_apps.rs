//! Kafka Streams and Kafka Connect, Apache Kafka 4.1's own, on Oxbow and on a real Kafka
//! broker side by side: a word count with a repartition and a changelog topic that restores its
//! counts after a restart, the same with exactly-once processing, also after being killed inside
//! a transaction, and a distributed Connect cluster moving a file through a topic while a second
//! worker joins; and a confluent-kafka (Python) transactional application.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use oxbow_e2e::harness::free_local_addr;
use oxbow_e2e::http;
use oxbow_e2e::kafka::{eventually, java_source, JavaProcess, Server};
use oxbow_e2e::side_by_side;
use oxbow_e2e::transactions::{self, Isolation};

const START: Duration = Duration::from_secs(120);
const STOP: Duration = Duration::from_secs(30);

/// The latest count of each word on the output topic, read from the beginning with
/// `isolation` (`read_uncommitted` or `read_committed`).
fn counts(server: &Server, records: usize, isolation: &str) -> Result<BTreeMap<String, u64>> {
    let out = server.tool(
        "kafka-console-consumer",
        &[
            "--topic",
            "counts",
            "--isolation-level",
            isolation,
            "--from-beginning",
            "--max-messages",
            &records.to_string(),
            "--timeout-ms",
            "60000",
            "--property",
            "print.key=true",
            "--property",
            "key.separator==",
        ],
    )?;
    let mut latest = BTreeMap::new();
    for line in out.lines() {
        let (word, count) = line
            .split_once('=')
            .with_context(|| format!("not word=count: {line:?}"))?;
        latest.insert(word.to_string(), count.parse()?);
    }
    Ok(latest)
}

fn streams_word_count_restores_its_counts_after_a_restart(server: &Server) -> Result<()> {
    word_count(server, "at_least_once", "read_uncommitted")
}
side_by_side!(streams_word_count_restores_its_counts_after_a_restart);

/// The same word count with Kafka Streams' exactly-once processing (`exactly_once_v2`:
/// a transactional producer per thread, offsets committed in its transactions), read with
/// `read_committed`.
fn streams_word_count_exactly_once_restores_its_counts_after_a_restart(
    server: &Server,
) -> Result<()> {
    word_count(server, "exactly_once_v2", "read_committed")
}
side_by_side!(streams_word_count_exactly_once_restores_its_counts_after_a_restart);

/// The word count's input and output topics, two partitions each.
fn create_word_count_topics(server: &Server) -> Result<()> {
    for topic in ["text", "counts"] {
        server.create_topic(topic, 2)?;
    }
    Ok(())
}

/// Starts the word count with `guarantee` (and `commit_interval`, else 200 ms) and its state
/// in `dir/state`, logging to `dir/log`, and waits until it runs.
fn start_word_count(
    server: &Server,
    dir: &Path,
    state: &str,
    log: &str,
    guarantee: &str,
    commit_interval: Option<Duration>,
) -> Result<JavaProcess> {
    let source = java_source("WordCount.java");
    let bootstrap = server.bootstrap();
    let state = dir.join(state).to_string_lossy().into_owned();
    let interval = commit_interval.map(|i| i.as_millis().to_string());
    let mut args = vec![
        bootstrap.as_str(),
        "wordcount",
        "text",
        "counts",
        &state,
        guarantee,
    ];
    args.extend(interval.as_deref());
    let mut app = JavaProcess::start(
        "the word count",
        &source.to_string_lossy(),
        &args,
        &dir.join(log),
    )?;
    app.wait_for_log("WORDCOUNT RUNNING", START)?;
    Ok(app)
}

/// Runs the word count with `guarantee`, stops it, and starts it again on a fresh state
/// directory: the counts come back from the changelog topic.
fn word_count(server: &Server, guarantee: &str, isolation: &str) -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let dir = scratch.path();
    create_word_count_topics(server)?;
    let start = |state: &str, log: &str| start_word_count(server, dir, state, log, guarantee, None);

    let mut app = start("state-1", "wordcount-1.log")?;
    server
        .run(
            "kafka-console-producer",
            &["--topic", "text"],
            Some("Hello world\nhello Streams\n"),
        )?
        .ok()?;
    let first =
        counts(server, 4, isolation).map_err(|e| anyhow::anyhow!("{e:#}\n{}", app.log_tail(40)))?;
    let want: BTreeMap<String, u64> = [("hello", 2), ("streams", 1), ("world", 1)]
        .map(|(w, c)| (w.to_string(), c))
        .into();
    ensure!(first == want, "{first:?}\n{}", app.log_tail(400));
    // A JVM ended by SIGTERM exits with 143 after its shutdown hooks ran.
    let status = app.stop(STOP)?;
    ensure!(
        app.logged("WORDCOUNT CLOSED"),
        "the word count did not close cleanly ({status})\n{}",
        app.log_tail(40)
    );

    let topics = server.tool("kafka-topics", &["--list"])?;
    for internal in [
        "wordcount-by-word-repartition",
        "wordcount-counts-changelog",
    ] {
        ensure!(topics.lines().contains(&internal), "{internal}: {topics}");
    }

    server
        .run(
            "kafka-console-producer",
            &["--topic", "text"],
            Some("hello again\n"),
        )?
        .ok()?;
    // A fresh state directory: the counts can only come back from the changelog topic.
    let app = start("state-2", "wordcount-2.log")?;
    let second =
        counts(server, 6, isolation).map_err(|e| anyhow::anyhow!("{e:#}\n{}", app.log_tail(40)))?;
    ensure!(second.get("hello") == Some(&3), "{second:?}");
    ensure!(second.get("again") == Some(&1), "{second:?}");
    ensure!(second.get("world") == Some(&1), "{second:?}");
    Ok(())
}

/// The word count with `exactly_once_v2` is SIGKILLed while one of its transactions is open
/// with output in the log (a read_uncommitted reader of the output is ahead of a
/// read_committed one for a second; the commit interval is 5 s), and restarted on the same
/// state directory: the committed output holds one count update per committed input word,
/// and the latest count of each word is exact. The input itself comes in transactions, every
/// fourth aborted: those words are never counted.
fn streams_word_count_exactly_once_killed_mid_transaction_counts_exactly(
    server: &Server,
) -> Result<()> {
    const COMMIT_INTERVAL: Duration = Duration::from_secs(5);
    let scratch = tempfile::tempdir()?;
    let dir = scratch.path();
    create_word_count_topics(server)?;
    let start = |log: &str| {
        start_word_count(
            server,
            dir,
            "state",
            log,
            "exactly_once_v2",
            Some(COMMIT_INTERVAL),
        )
    };
    let mut app = start("wordcount-1.log")?;
    let watch = |name: &str, isolation: Isolation| {
        transactions::start(
            server,
            dir,
            name,
            "consume",
            &["counts", isolation.as_str(), "follow"],
        )
    };
    let uncommitted = watch("uncommitted", Isolation::ReadUncommitted)?;
    let committed = watch("committed", Isolation::ReadCommitted)?;
    let seen = |reader: &JavaProcess| reader.lines("RECORD ").len();
    // Input in rounds until a transaction of the word count is seen open for a second: on a
    // loaded machine the readers may start after the first round's output is committed.
    // Each line "<id>-T-R" is three words: the round's id, T and R.
    let pattern = "ccca".repeat(10);
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    let deadline = Instant::now() + START;
    let mut round = 0;
    'rounds: loop {
        ensure!(
            Instant::now() < deadline,
            "no transaction of the word count seen open for a second in {round} rounds of input\n{}",
            app.log_tail(40)
        );
        round += 1;
        let input = transactions::produce(server, "text", &format!("lines{round}"), &pattern, 5)?;
        for line in &input.committed {
            for word in line.split('-') {
                *want.entry(word.to_string()).or_default() += 1;
            }
        }
        let window = Instant::now() + 2 * COMMIT_INTERVAL;
        let mut ahead_since = None;
        while Instant::now() < window {
            let open = seen(&uncommitted) > seen(&committed);
            match (open, ahead_since) {
                (false, _) => ahead_since = None,
                (true, None) => ahead_since = Some(Instant::now()),
                (true, Some(since)) if since.elapsed() >= Duration::from_secs(1) => break 'rounds,
                (true, Some(_)) => {}
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let words: u64 = want.values().sum();
    app.kill()?;
    drop(app);

    let app = start("wordcount-2.log")?;
    let output = eventually("every committed word counted", START, || {
        let output = transactions::consume(server, "counts", Isolation::ReadCommitted)?;
        let mut latest = BTreeMap::new();
        for record in &output.records {
            latest.insert(record.key.clone(), record.value.parse::<u64>()?);
        }
        ensure!(
            latest == want,
            "read_committed latest counts {latest:?}, want {want:?}"
        );
        Ok(output)
    })
    .map_err(|e| anyhow::anyhow!("{e:#}\n{}", app.log_tail(40)))?;
    ensure!(
        output.records.len() as u64 == words,
        "{} committed count updates for {words} committed input words",
        output.records.len()
    );
    let all = transactions::consume(server, "counts", Isolation::ReadUncommitted)?;
    ensure!(
        all.records.len() > output.records.len(),
        "no aborted output in the log: the kill did not land inside a transaction"
    );
    Ok(())
}
side_by_side!(streams_word_count_exactly_once_killed_mid_transaction_counts_exactly);

/// A distributed Connect worker's settings, its REST API on `rest`.
fn worker_properties(bootstrap: &str, rest: &str) -> String {
    [
        format!("bootstrap.servers={bootstrap}"),
        "group.id=oxbow-connect".to_string(),
        "key.converter=org.apache.kafka.connect.storage.StringConverter".to_string(),
        "value.converter=org.apache.kafka.connect.storage.StringConverter".to_string(),
        "config.storage.topic=connect-configs".to_string(),
        "offset.storage.topic=connect-offsets".to_string(),
        "status.storage.topic=connect-status".to_string(),
        "config.storage.replication.factor=1".to_string(),
        "offset.storage.replication.factor=1".to_string(),
        "status.storage.replication.factor=1".to_string(),
        "offset.flush.interval.ms=500".to_string(),
        format!("listeners=http://{rest}"),
        "plugin.discovery=service_load".to_string(),
    ]
    .join("\n")
        + "\n"
}

fn start_worker(server: &Server, dir: &Path, name: &str) -> Result<(JavaProcess, String)> {
    let rest = free_local_addr()?.to_string();
    let properties = dir.join(format!("{name}.properties"));
    std::fs::write(&properties, worker_properties(&server.bootstrap(), &rest))?;
    let mut worker = JavaProcess::start(
        name,
        oxbow_e2e::kafka::main_class("connect-distributed")?,
        &[&properties.to_string_lossy()],
        &dir.join(format!("{name}.log")),
    )?;
    worker.wait_for_log("Herder started", START)?;
    eventually("the REST API", START, || http::get(&rest, "/connectors"))?;
    Ok((worker, rest))
}

fn file_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn connect_moves_a_file_through_a_topic_and_a_second_worker_joins(server: &Server) -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let dir = scratch.path();
    let input = dir.join("in.txt");
    let output = dir.join("out.txt");
    std::fs::write(&input, "first\nsecond\n")?;
    let (_one, rest) = start_worker(server, dir, "worker-1")?;

    let source = serde_json::json!({
        "name": "file-source",
        "config": {
            "connector.class": "org.apache.kafka.connect.file.FileStreamSourceConnector",
            "tasks.max": "1",
            "file": input.to_string_lossy(),
            "topic": "connect-lines",
        }
    });
    let sink = serde_json::json!({
        "name": "file-sink",
        "config": {
            "connector.class": "org.apache.kafka.connect.file.FileStreamSinkConnector",
            "tasks.max": "1",
            "file": output.to_string_lossy(),
            "topics": "connect-lines",
        }
    });
    for connector in [&source, &sink] {
        let created = http::request(&rest, "POST", "/connectors", Some(&connector.to_string()))?;
        ensure!(created.status == 201, "{created:?}");
    }
    eventually("the two lines in the sink file", START, || {
        let lines = file_lines(&output);
        ensure!(lines == ["first", "second"], "{lines:?}");
        Ok(())
    })?;

    let (_two, rest_two) = start_worker(server, dir, "worker-2")?;
    let connectors: serde_json::Value =
        serde_json::from_str(&eventually("worker-2 sees the connectors", START, || {
            let listed = http::get(&rest_two, "/connectors")?;
            ensure!(
                listed.contains("file-source") && listed.contains("file-sink"),
                "{listed}"
            );
            Ok(listed)
        })?)?;
    ensure!(
        connectors.as_array().map(Vec::len) == Some(2),
        "{connectors}"
    );
    // The work is spread over both workers once the second has joined the group.
    eventually("work on both workers", START, || {
        let mut workers = std::collections::BTreeSet::new();
        for name in ["file-source", "file-sink"] {
            let status: serde_json::Value =
                serde_json::from_str(&http::get(&rest, &format!("/connectors/{name}/status"))?)?;
            ensure!(status["connector"]["state"] == "RUNNING", "{status}");
            workers.insert(status["connector"]["worker_id"].to_string());
            for task in status["tasks"].as_array().context("tasks")? {
                ensure!(task["state"] == "RUNNING", "{status}");
                workers.insert(task["worker_id"].to_string());
            }
        }
        ensure!(workers.len() == 2, "{workers:?}");
        Ok(())
    })?;

    let mut more = std::fs::OpenOptions::new().append(true).open(&input)?;
    std::io::Write::write_all(&mut more, b"third\nfourth\n")?;
    eventually("the new lines in the sink file", START, || {
        let lines = file_lines(&output);
        ensure!(lines == ["first", "second", "third", "fourth"], "{lines:?}");
        Ok(())
    })?;
    Ok(())
}
side_by_side!(connect_moves_a_file_through_a_topic_and_a_second_worker_joins);

/// confluent-kafka's transactions (e2e/python/transactions_app.py): commit, abort, what each
/// isolation level reads, and offsets sent with send_offsets_to_transaction committed with
/// their transaction and dropped with an aborted one.
fn confluent_kafka_transactions(server: &Server) -> Result<()> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/transactions_app.py");
    let output = std::process::Command::new("python3")
        .arg(&script)
        .arg(server.bootstrap())
        .stdin(std::process::Stdio::null())
        .output()
        .context("running python3 (scripts/test.sh installs confluent-kafka)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.success(),
        "{} {}\n{stdout}\n{stderr}",
        script.display(),
        output.status
    );
    let passed = stdout.lines().filter(|l| l.starts_with("PASS ")).count();
    ensure!(passed == 2, "{passed} checks passed:\n{stdout}\n{stderr}");
    Ok(())
}
side_by_side!(confluent_kafka_transactions);
