//! Kafka 4.1's CLI tools for the metadata quorum, features, offsets by timestamp and
//! leader election, against Oxbow and against a real Kafka broker: `kafka-metadata-quorum`,
//! `kafka-features`, `kafka-get-offsets --time` and `kafka-leader-election --election-type
//! unclean`. Checks read what the tools print. The unclean election needs several brokers,
//! so it runs on an Oxbow cluster only (the Kafka side runs a single broker).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context as _, Result};
use oxbow_e2e::cluster::{Cluster, ClusterOptions};
use oxbow_e2e::harness::{self, broker_binary};
use oxbow_e2e::kafka::{self, Server};
use oxbow_e2e::side_by_side;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// `Key: value` pairs of lines like kafka-metadata-quorum's `--status` output.
fn status_fields(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// The rows of a tab-separated table whose first line is its header, as maps.
fn table(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let names: Vec<&str> = header.split('\t').map(str::trim).collect();
    lines
        .map(|line| {
            names
                .iter()
                .zip(line.split('\t').map(str::trim))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

fn number(fields: &BTreeMap<String, String>, key: &str) -> Result<i64> {
    fields
        .get(key)
        .with_context(|| format!("no {key} in {fields:?}"))?
        .parse()
        .with_context(|| format!("{key} of {fields:?}"))
}

fn metadata_quorum_status_and_replication(server: &Server) -> Result<()> {
    let node = server.node_id();
    let out = server.tool("kafka-metadata-quorum", &["describe", "--status"])?;
    let status = status_fields(&out.stdout);
    ensure!(number(&status, "LeaderId")? == i64::from(node), "{out}");
    ensure!(number(&status, "LeaderEpoch")? >= 1, "{out}");
    ensure!(number(&status, "HighWatermark")? > 0, "{out}");
    ensure!(number(&status, "MaxFollowerLag")? == 0, "{out}");
    ensure!(
        status
            .get("CurrentVoters")
            .is_some_and(|v| v.contains(&format!("\"id\": {node}"))),
        "{out}"
    );
    ensure!(
        status.get("CurrentObservers").map(String::as_str) == Some("[]"),
        "{out}"
    );

    let out = server.tool("kafka-metadata-quorum", &["describe", "--replication"])?;
    let rows = table(&out.stdout);
    ensure!(rows.len() == 1, "one replica, the leader: {out}");
    let leader = &rows[0];
    ensure!(number(leader, "NodeId")? == i64::from(node), "{out}");
    ensure!(
        leader.get("Status").map(String::as_str) == Some("Leader"),
        "{out}"
    );
    ensure!(number(leader, "LogEndOffset")? > 0, "{out}");
    ensure!(number(leader, "Lag")? == 0, "{out}");
    let now = now_ms();
    let fetched = number(leader, "LastFetchTimestamp")?;
    ensure!((now - 60_000..=now + 60_000).contains(&fetched), "{out}");
    Ok(())
}
side_by_side!(metadata_quorum_status_and_replication);

/// `Feature: name\tKey: value...` lines of `kafka-features describe`, by feature.
fn features(server: &Server) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
    let out = server.tool("kafka-features", &["describe"])?;
    let features: BTreeMap<String, BTreeMap<String, String>> = out
        .lines()
        .iter()
        .map(|line| {
            let fields: BTreeMap<String, String> = line
                .split('\t')
                .filter_map(|part| part.split_once(": "))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect();
            (fields.get("Feature").cloned().unwrap_or_default(), fields)
        })
        .collect();
    ensure!(!features.is_empty(), "describe printed no feature: {out}");
    Ok(features)
}

fn finalized_metadata_version(server: &Server) -> Result<String> {
    features(server)?
        .get("metadata.version")
        .and_then(|f| f.get("FinalizedVersionLevel").cloned())
        .context("no finalized metadata.version")
}

fn features_describe_upgrade_and_downgrade(server: &Server) -> Result<()> {
    let described = features(server)?;
    for name in [
        "metadata.version",
        "kraft.version",
        "group.version",
        "transaction.version",
        "eligible.leader.replicas.version",
        "share.version",
    ] {
        let feature = described
            .get(name)
            .with_context(|| format!("{name} missing from {described:?}"))?;
        ensure!(feature.contains_key("Epoch"), "{feature:?}");
    }
    let metadata = &described["metadata.version"];
    for (key, value) in [
        ("SupportedMinVersion", "3.3-IV3"),
        ("SupportedMaxVersion", "4.1-IV1"),
        ("FinalizedVersionLevel", "4.1-IV1"),
    ] {
        ensure!(
            metadata.get(key).map(String::as_str) == Some(value),
            "{key} of {metadata:?}"
        );
    }

    let dry = server.tool(
        "kafka-features",
        &["downgrade", "--metadata", "4.0-IV2", "--dry-run"],
    )?;
    ensure!(
        dry.stdout
            .contains("metadata.version can be downgraded to 24."),
        "{dry}"
    );
    ensure!(
        finalized_metadata_version(server)? == "4.1-IV1",
        "a dry run downgraded"
    );

    let refused = server.run("kafka-features", &["downgrade", "--metadata", "3.9"], None)?;
    ensure!(
        refused.stdout.contains(
            "Could not downgrade metadata.version to 21. The update failed for all features since \
             the following feature had an error: Invalid metadata.version 21. Refusing to \
             perform the requested downgrade because it might delete metadata information."
        ),
        "{refused}"
    );
    ensure!(
        finalized_metadata_version(server)? == "4.1-IV1",
        "a refused downgrade stuck"
    );

    let lowered = server.tool("kafka-features", &["downgrade", "--metadata", "4.0-IV2"])?;
    ensure!(
        lowered
            .stdout
            .contains("metadata.version was downgraded to 24."),
        "{lowered}"
    );
    ensure!(
        finalized_metadata_version(server)? == "4.0-IV2",
        "not downgraded"
    );
    let raised = server.tool("kafka-features", &["upgrade", "--metadata", "4.1"])?;
    ensure!(
        raised
            .stdout
            .contains("metadata.version was upgraded to 27."),
        "{raised}"
    );
    ensure!(
        finalized_metadata_version(server)? == "4.1-IV1",
        "not upgraded"
    );
    Ok(())
}
side_by_side!(features_describe_upgrade_and_downgrade);

/// librdkafka's test 0054 through Kafka's own tool: records with distinct timestamps in one
/// batch are each found by `kafka-get-offsets --time`, not at the batch's first offset.
fn get_offsets_by_timestamp_inside_a_batch(server: &Server) -> Result<()> {
    server.tool(
        "kafka-topics",
        &[
            "--create",
            "--topic",
            "times",
            "--partitions",
            "1",
            "--replication-factor",
            "1",
        ],
    )?;
    // Recent, so no broker refuses them as too old; a long linger makes one batch.
    let base = now_ms() - 60_000;
    let producer: BaseProducer = harness::producer_config(&server.bootstrap())
        .set("linger.ms", "500")
        .create()
        .context("creating a producer")?;
    for i in 0..5_i64 {
        let value = format!("at-{i}");
        producer
            .send(
                BaseRecord::<(), _>::to("times")
                    .payload(&value)
                    .partition(0)
                    .timestamp(base + 10 * i),
            )
            .map_err(|(e, _)| anyhow::anyhow!("queueing {value}: {e}"))?;
    }
    producer
        .flush(Duration::from_secs(30))
        .context("flushing the producer")?;

    for (time, expected) in [
        (base.to_string(), "times:0:0"),
        ((base + 1).to_string(), "times:0:1"),
        ((base + 25).to_string(), "times:0:3"),
        ((base + 40).to_string(), "times:0:4"),
        ("-1".to_string(), "times:0:5"),
        ("-3".to_string(), "times:0:4"),
    ] {
        let out = server.tool("kafka-get-offsets", &["--topic", "times", "--time", &time])?;
        ensure!(
            out.lines() == [expected],
            "--time {time} (base {base}): expected {expected}, got {out}"
        );
    }
    Ok(())
}
side_by_side!(get_offsets_by_timestamp_inside_a_batch);

/// On an Oxbow cluster of four brokers, one of them the only voter (so the metadata keeps
/// moving while two others are down): `--replication` lists the voter as leader and the
/// other brokers as observers, and
/// `kafka-leader-election --election-type unclean` elects an out-of-sync replica of a topic
/// that does not allow unclean elections (the controller alone would not).
#[test]
fn oxbow_cluster_quorum_replication_and_unclean_leader_election() -> Result<()> {
    let options = ClusterOptions::new(broker_binary()?)
        .brokers(4)
        .voters(1)
        .set("broker.session.timeout.ms", "3000")
        .set("broker.heartbeat.interval.ms", "500");
    let mut cluster = Cluster::start(options)?;
    let outcome = quorum_and_unclean_election(&mut cluster);
    cluster.explain(outcome)
}

fn quorum_and_unclean_election(cluster: &mut Cluster) -> Result<()> {
    let bootstrap = cluster.bootstrap();
    let tool = |tool: &str, args: &[&str]| {
        let mut all = vec!["--bootstrap-server", bootstrap.as_str()];
        all.extend_from_slice(args);
        kafka::tool(tool, &all)
    };
    let (by_node, out) = replication_statuses(&tool)?;
    let statuses: Vec<&str> = by_node.values().map(String::as_str).collect();
    ensure!(
        by_node.keys().copied().collect::<Vec<_>>() == [1, 2, 3, 4]
            && by_node.get(&1).map(String::as_str) == Some("Leader")
            && statuses.iter().filter(|s| **s == "Observer").count() == 3,
        "{out}"
    );

    cluster.create_topic_assigned("forced", &[&[2, 3]], &[])?;
    let settle = Duration::from_secs(30);
    let isr_of = |cluster: &mut Cluster| -> Result<(i32, Vec<i32>)> {
        let partitions = cluster.partitions("forced")?;
        let p = partitions.first().context("no partition")?;
        Ok((p.leader, p.isr.clone()))
    };
    cluster.wait_until("both replicas in sync", settle, |c| {
        let (_, isr) = isr_of(c)?;
        ensure!(isr.len() == 2, "{isr:?}");
        Ok(())
    })?;
    cluster.kill(3)?;
    cluster.wait_until("broker 3 out of the ISR", settle, |c| {
        let (_, isr) = isr_of(c)?;
        ensure!(isr == [2], "{isr:?}");
        Ok(())
    })?;
    cluster.kill(2)?;
    cluster.wait_until("no leader", settle, |c| {
        let (leader, _) = isr_of(c)?;
        ensure!(leader == -1, "leader {leader}");
        Ok(())
    })?;
    cluster.restart(3)?;
    let bootstrap = cluster.bootstrap();
    // Broker 3 is back once it has registered again: until then no replica is live.
    cluster.wait_until("the unclean election", settle, |_| {
        let out = kafka::tool(
            "kafka-leader-election",
            &[
                "--bootstrap-server",
                &bootstrap,
                "--election-type",
                "unclean",
                "--topic",
                "forced",
                "--partition",
                "0",
            ],
        )?;
        ensure!(
            out.stdout.contains(
                "Successfully completed leader election (UNCLEAN) for partitions forced-0"
            ),
            "{out}"
        );
        Ok(())
    })?;
    cluster.wait_until("broker 3 leads", settle, |c| {
        let (leader, isr) = isr_of(c)?;
        ensure!(leader == 3 && isr == [3], "leader {leader}, isr {isr:?}");
        Ok(())
    })?;
    Ok(())
}

/// `kafka-metadata-quorum describe --replication` through `tool`: each node's status
/// (Leader, Follower, Observer) by node id, and the output.
fn replication_statuses(
    tool: &dyn Fn(&str, &[&str]) -> Result<kafka::ToolOutput>,
) -> Result<(BTreeMap<i64, String>, kafka::ToolOutput)> {
    let out = tool("kafka-metadata-quorum", &["describe", "--replication"])?;
    let by_node = table(&out.stdout)
        .iter()
        .map(|row| {
            Ok((
                number(row, "NodeId")?,
                row.get("Status").cloned().unwrap_or_default(),
            ))
        })
        .collect::<Result<_>>()?;
    Ok((by_node, out))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Kafka's separate controllers on Oxbow: three controller-only nodes and two brokers.
/// `kafka-metadata-quorum describe --replication` (through the brokers, the only nodes clients
/// reach) lists the three controllers as the leader and its followers and the brokers as
/// observers, and `kafka-topics` creates and describes a topic whose replicas are the brokers
/// alone.
#[test]
fn oxbow_dedicated_controllers_as_kafka_tools_see_them() -> Result<()> {
    let options = ClusterOptions::new(broker_binary()?)
        .brokers(5)
        .voters(3)
        .dedicated_controllers();
    let mut cluster = Cluster::start(options)?;
    let outcome = dedicated_controllers_seen_by_tools(&cluster);
    cluster.explain(outcome)
}

fn dedicated_controllers_seen_by_tools(cluster: &Cluster) -> Result<()> {
    let bootstrap = cluster.bootstrap();
    let tool = |tool: &str, args: &[&str]| {
        let mut all = vec!["--bootstrap-server", bootstrap.as_str()];
        all.extend_from_slice(args);
        kafka::tool(tool, &all)
    };
    let (by_node, out) = replication_statuses(&tool)?;
    let role = |node: i64| by_node.get(&node).map(String::as_str).unwrap_or_default();
    ensure!(
        by_node.keys().copied().collect::<Vec<_>>() == [1, 2, 3, 4, 5]
            && (1..=3).filter(|n| role(*n) == "Leader").count() == 1
            && (1..=3).filter(|n| role(*n) == "Follower").count() == 2
            && role(4) == "Observer"
            && role(5) == "Observer",
        "{out}"
    );
    tool(
        "kafka-topics",
        &[
            "--create",
            "--topic",
            "on-brokers",
            "--partitions",
            "4",
            "--replication-factor",
            "2",
        ],
    )?;
    let out = tool("kafka-topics", &["--describe", "--topic", "on-brokers"])?;
    let replicas: Vec<&str> = out
        .lines()
        .iter()
        .filter_map(|line| line.split("Replicas: ").nth(1))
        .map(|rest| rest.split('\t').next().unwrap_or_default())
        .collect();
    ensure!(
        replicas.len() == 4
            && replicas
                .iter()
                .all(|r| r.split(',').all(|id| id == "4" || id == "5")),
        "{out}"
    );
    Ok(())
}
