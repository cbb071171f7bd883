//! librdkafka's own transaction tests, from the librdkafka that the `rdkafka` crate vendors,
//! built by `scripts/librdkafka-tests.sh`:
//! - 0103 (transactions: commit, abort, fencing, consume-transform-produce, empty
//!   transactions, offsets in transactions, the LSO and read_committed) and 0098 (a
//!   read_committed consumer over transactions written by Kafka's Java producer and by
//!   librdkafka) on a three-broker Oxbow cluster, as they create their topics with three
//!   replicas, and on three Apache Kafka 4.1 brokers;
//! - 0129 (a fetch of aborted records only is no error) on a single broker, Oxbow and Apache
//!   Kafka 4.1 side by side.
//!
//! Each run is bounded by a timeout; a run passes when the runner exits 0 and prints its test
//! PASSED, with no test or sub-test skipped.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use oxbow_e2e::cluster::{Cluster, ClusterOptions};
use oxbow_e2e::harness::broker_binary;
use oxbow_e2e::kafka::{eventually, Server};
use oxbow_e2e::kafka_cluster::KafkaCluster;
use oxbow_e2e::librdkafka;
use oxbow_e2e::side_by_side;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;

/// Sub-tests of 0103 against a broker, in the order the runner passes them.
const SUBTESTS_0103: &[&str] = &[
    "do_test_misuse_txn",
    "do_test_basic_producer_txn",
    "do_test_consumer_producer_txn",
    "do_test_fenced_txn",
    "do_test_fatal_idempo_error_without_kip360",
    "do_test_empty_txn",
    "do_test_wmark_isolation_level",
    "do_test_txn_abort_control_message_leader_epoch",
];

/// The runner's sub-tests that passed whose name starts with `name`.
fn passed<'a>(subtests: &'a [String], name: &str) -> Vec<&'a String> {
    subtests
        .iter()
        .filter(|l| l.contains(&format!("[ {name}:")))
        .collect()
}

/// The two cluster tests take turns: each runs three brokers and up to two clients.
static CLUSTERS: Mutex<()> = Mutex::new(());

#[test]
fn transactions_0103_and_consumer_txn_0098_pass_on_a_three_broker_oxbow_cluster() -> Result<()> {
    let _turn = CLUSTERS.lock().unwrap_or_else(PoisonError::into_inner);
    let options =
        ClusterOptions::new(broker_binary()?).set("group.initial.rebalance.delay.ms", "0");
    let mut cluster = Cluster::start(options)?;
    let outcome = transactions_0103_and_0098(&cluster.bootstrap());
    cluster.explain(outcome)
}

/// The same runs on three Apache Kafka 4.1.1 brokers: the tests' own reference.
#[test]
fn transactions_0103_and_consumer_txn_0098_pass_on_a_three_broker_kafka_cluster() -> Result<()> {
    let _turn = CLUSTERS.lock().unwrap_or_else(PoisonError::into_inner);
    let cluster = KafkaCluster::start(3, &[])?;
    transactions_0103_and_0098(&cluster.bootstrap())
        .map_err(|e| anyhow::anyhow!("Kafka: {e:#}\n{}", cluster.log_tails(40)))
}

fn transactions_0103_and_0098(bootstrap: &str) -> Result<()> {
    let run = librdkafka::run(bootstrap, "0103", &[], Duration::from_secs(420))?;
    let subtests = run.expect_passed(&["0103_transactions"])?;
    for name in SUBTESTS_0103 {
        ensure!(
            !passed(&subtests, name).is_empty(),
            "0103: sub-test {name} did not pass; passed: {subtests:#?}"
        );
    }
    println!("0103 passed in {:.1?}", run.elapsed);

    let run = librdkafka::run(bootstrap, "0098", &[], Duration::from_secs(420))?;
    run.expect_passed(&["0098_consumer_txn"])?;
    // Both halves ran: the transactions written by Kafka's Java producer, then by librdkafka;
    // every Java producer started and exited 0 (the runner only warns when one does not).
    for producer in ["java", "librdkafka"] {
        ensure!(
            !run.lines_with(&format!("tests using {producer} producer"))
                .is_empty(),
            "0098 ran no tests with the {producer} producer:\n{}",
            run.tail(60)
        );
    }
    let java_trouble: Vec<&str> = run
        .text
        .lines()
        .filter(|l| {
            l.contains("test_run_java(")
                || l.contains("exited with status")
                || l.contains("terminated by signal")
                || l.contains("quick mode")
        })
        .collect();
    ensure!(java_trouble.is_empty(), "0098: {java_trouble:#?}");
    println!("0098 passed in {:.1?}", run.elapsed);
    Ok(())
}

/// 0129: a transaction of 1000 records in a topic of small segments is aborted, then read
/// back from the start: the fetches that return aborted batches only are no error, and the
/// consumer reaches the end.
fn fetch_aborted_msgs_0129(server: &Server) -> Result<()> {
    let run = librdkafka::run(&server.bootstrap(), "0129", &[], Duration::from_secs(240))?;
    run.expect_passed(&["0129_fetch_aborted_msgs"])?;
    println!(
        "0129 on {:?} passed in {:.1?}",
        server.flavor(),
        run.elapsed
    );
    Ok(())
}
side_by_side!(fetch_aborted_msgs_0129);

/// A described config: its name and value.
type Entry = (String, Option<String>);

/// Kafka 4's segment sizes (KIP-1030): `segment.bytes` is at least 1 MiB, and the test-only
/// `internal.segment.bytes` has no minimum, takes precedence, and is described only when set.
fn segment_bytes_is_at_least_one_mebibyte_and_internal_segment_bytes_is_not(
    server: &Server,
) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", server.bootstrap())
        .create()
        .context("an admin client")?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let runtime = tokio::runtime::Runtime::new()?;
    let create = |name: &str, key: &str, value: &str| -> Result<Result<(), RDKafkaErrorCode>> {
        let topic = NewTopic::new(name, 1, TopicReplication::Fixed(1)).set(key, value);
        let results = runtime.block_on(admin.create_topics([&topic], &options))?;
        let result = results
            .into_iter()
            .next()
            .context("no CreateTopics result")?;
        Ok(result.map(|_| ()).map_err(|(_, code)| code))
    };
    for value in ["20000", "1048575", "-1"] {
        ensure!(
            create("small-segments", "segment.bytes", value)?
                == Err(RDKafkaErrorCode::InvalidConfig),
            "segment.bytes={value} was not refused as INVALID_CONFIG"
        );
    }
    create("one-mebibyte", "segment.bytes", "1048576")?
        .map_err(|code| anyhow::anyhow!("segment.bytes=1048576: {code:?}"))?;
    ensure!(
        create("not-a-number", "internal.segment.bytes", "abc")?
            == Err(RDKafkaErrorCode::InvalidConfig),
        "internal.segment.bytes=abc was not refused as INVALID_CONFIG"
    );
    create("tiny-segments", "internal.segment.bytes", "20000")?
        .map_err(|code| anyhow::anyhow!("internal.segment.bytes=20000: {code:?}"))?;

    // A broker may learn of a topic, and of its configs, a moment after CreateTopics
    // answers: until then Kafka describes it with no entries at all, so wait until the
    // description holds what the check is about.
    let describe = |topic: &str, check: &dyn Fn(&[Entry]) -> bool| -> Result<Vec<Entry>> {
        eventually(
            &format!("{topic} described"),
            Duration::from_secs(30),
            || {
                let resource = rdkafka::admin::ResourceSpecifier::Topic(topic);
                let results = runtime.block_on(admin.describe_configs([&resource], &options))?;
                let config = results
                    .into_iter()
                    .next()
                    .context("no DescribeConfigs result")?
                    .map_err(|code| anyhow::anyhow!("DescribeConfigs {topic}: {code:?}"))?;
                let entries: Vec<_> = config
                    .entries
                    .into_iter()
                    .map(|e| (e.name, e.value))
                    .collect();
                ensure!(check(&entries), "{topic}: {entries:?}");
                Ok(entries)
            },
        )
    };
    describe("tiny-segments", &|entries| {
        entries.contains(&(
            "internal.segment.bytes".to_string(),
            Some("20000".to_string()),
        ))
    })?;
    describe("one-mebibyte", &|entries| {
        entries.iter().any(|(k, _)| k == "segment.bytes")
            && !entries.iter().any(|(k, _)| k == "internal.segment.bytes")
    })?;
    Ok(())
}
side_by_side!(segment_bytes_is_at_least_one_mebibyte_and_internal_segment_bytes_is_not);
