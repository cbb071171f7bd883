//! KafkaRebalance on a real Kubernetes control plane, with real brokers in their pods: a
//! proposal computed into the status is not carried out before approval, is carried out
//! after it (nothing lost), and a rebalance naming brokers the cluster lacks is refused in its
//! status. The example (`examples/kafkarebalance.yaml`) is applied too.
//!
//! Runs in a sandbox of its own, as `operator/tests/kubernetes.rs` describes. Needs root, and
//! `cargo build --workspace --bins` first.

use std::time::Duration;

use anyhow::{ensure, Context as _};
use oxbow_e2e::kube::env::{python_json, repository, runtime, sandboxed, EnvOptions, KubeEnv};
use serde_json::{json, Value};

/// A confluent-kafka client run as `python3 -c CLIENT <action> <bootstrap> <args..>`; it prints
/// one JSON object.
/// - `create <topic>`: six partitions of two replicas, all on brokers 0 and 1, and 600
///   records produced with acks=all (`delivered`);
/// - `replicas <topic>`: each partition's replicas (`partitions`);
/// - `count <topic>`: the records read back from the beginning.
const CLIENT: &str = r#"
import json, sys, time
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

action, bootstrap, topic = sys.argv[1], sys.argv[2], sys.argv[3]
config = {'bootstrap.servers': bootstrap}
admin = AdminClient(config)
if action == 'create':
    assignment = [[0, 1] if p % 2 == 0 else [1, 0] for p in range(6)]
    admin.create_topics([NewTopic(topic, 6, replica_assignment=assignment)])[topic].result()
    delivered = []
    producer = Producer(dict(config, acks='all'))
    for i in range(600):
        producer.produce(topic, key=str(i), value='record-%d' % i,
                         on_delivery=lambda err, msg: delivered.append(err is None))
    producer.flush(60)
    print(json.dumps({'delivered': delivered.count(True)}))
elif action == 'replicas':
    md = admin.list_topics(topic, timeout=30).topics[topic]
    print(json.dumps({'partitions': {str(p): sorted(md.partitions[p].replicas)
                                     for p in md.partitions}}))
else:
    consumer = Consumer(dict(config, **{'group.id': 'count', 'enable.auto.commit': False}))
    partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    seen = set()
    end = time.time() + 60
    while len(seen) < 600 and time.time() < end:
        msg = consumer.poll(1)
        if msg is not None and not msg.error():
            seen.add(msg.value())
    consumer.close()
    print(json.dumps({'count': len(seen)}))
"#;

const BOOTSTRAP: &str = "balanced-bootstrap.default.svc:9092";

fn client(action: &str, topic: &str) -> anyhow::Result<Value> {
    python_json(CLIENT, &[action, BOOTSTRAP, topic])
}

const CLUSTER: &str = "apiVersion: oxbow.dev/v1alpha1
kind: KafkaCluster
metadata:
  name: balanced
spec:
  replicas: 3
  storage:
    size: 1Gi
";

fn rebalance(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: oxbow.dev/v1alpha1\nkind: KafkaRebalance\nmetadata:\n  name: {name}\nspec:\n  clusterRef:\n    name: balanced\n{extra}"
    )
}

fn state(env: &KubeEnv, name: &str) -> anyhow::Result<String> {
    env.jsonpath(
        "default",
        &format!("kafkarebalance/{name}"),
        "{.status.state}",
    )
}

fn wait_state(env: &KubeEnv, name: &str, wanted: &str, timeout: Duration) -> anyhow::Result<()> {
    env.wait(&format!("kafkarebalance/{name} {wanted}"), timeout, |env| {
        Ok(state(env, name)? == wanted)
    })
}

/// Replicas per broker over the topic's partitions.
fn per_broker(replicas: &Value) -> anyhow::Result<[usize; 3]> {
    let mut counts = [0; 3];
    for list in replicas["partitions"]
        .as_object()
        .with_context(|| format!("partitions: {replicas}"))?
        .values()
    {
        for broker in list.as_array().context("replicas")? {
            let id = usize::try_from(broker.as_i64().context("a broker id")?)?;
            *counts.get_mut(id).context("a broker of three")? += 1;
        }
    }
    Ok(counts)
}

#[test]
fn a_rebalance_proposal_waits_for_approval_then_moves_replicas_onto_every_broker() {
    sandboxed(
        "a_rebalance_proposal_waits_for_approval_then_moves_replicas_onto_every_broker",
        || {
            runtime().block_on(async {
                let env = KubeEnv::start(EnvOptions::default()).await?;

                let example =
                    std::fs::read_to_string(repository().join("examples/kafkarebalance.yaml"))?;
                env.apply(&example)?;
                let missing = rebalance("missing", "  mode: add-brokers\n");
                let refused = env
                    .apply(&missing)
                    .expect_err("add-brokers without brokers");
                ensure!(
                    refused
                        .to_string()
                        .contains("name the brokers in spec.brokers"),
                    "the API server's reason: {refused:#}"
                );

                env.apply(CLUSTER)?;
                env.wait_cluster_ready("default", "balanced", 3, Duration::from_secs(240))?;
                let created = client("create", "skewed")?;
                ensure!(created["delivered"] == 600, "{created}");
                let before = per_broker(&client("replicas", "skewed")?)?;
                ensure!(before == [6, 6, 0], "all on brokers 0 and 1: {before:?}");

                env.apply(&format!(
                    "{}---\n{}",
                    rebalance("full", "  mode: full\n"),
                    rebalance("unknown", "  mode: remove-brokers\n  brokers: [7]\n")
                ))?;
                wait_state(&env, "full", "ProposalReady", Duration::from_secs(60))?;
                let proposal: Value = serde_json::from_str(&env.jsonpath(
                    "default",
                    "kafkarebalance/full",
                    "{.status.proposal}",
                )?)?;
                eprintln!("proposal: {proposal}");
                ensure!(
                    proposal["partitionMoves"].as_i64().unwrap_or_default() > 0
                        && proposal["replicasAfter"] == json!({"0": 4, "1": 4, "2": 4}),
                    "a proposal that balances: {proposal}"
                );
                wait_state(&env, "unknown", "NotReady", Duration::from_secs(60))?;
                let why = env.jsonpath("default", "kafkarebalance/unknown", "{.status.message}")?;
                ensure!(
                    why.contains("[7]"),
                    "why the rebalance cannot be made: {why}"
                );

                // Not carried out before approval.
                std::thread::sleep(Duration::from_secs(5));
                let waiting = per_broker(&client("replicas", "skewed")?)?;
                ensure!(waiting == before, "moved before approval: {waiting:?}");

                env.annotate(
                    "default",
                    "kafkarebalance/full",
                    "oxbow.dev/rebalance=approve",
                )?;
                wait_state(&env, "full", "Ready", Duration::from_secs(180))?;
                let after = per_broker(&client("replicas", "skewed")?)?;
                ensure!(after == [4, 4, 4], "balanced: {after:?}");
                ensure!(
                    env.ready_gauge("kafkarebalance", "full")? == Some(1.0)
                        && env.ready_gauge("kafkarebalance", "unknown")? == Some(0.0),
                    "the operator's readiness gauges of the rebalances"
                );
                let annotation = env.jsonpath(
                    "default",
                    "kafkarebalance/full",
                    "{.metadata.annotations.oxbow\\.dev/rebalance}",
                )?;
                ensure!(
                    annotation.is_empty(),
                    "the approval is consumed: {annotation}"
                );
                let read = client("count", "skewed")?;
                ensure!(read["count"] == 600, "every record after the moves: {read}");
                let columns = env.kubectl(&["-n", "default", "get", "kafkarebalances"])?;
                ensure!(
                    columns.contains("STATE") && columns.contains("MOVES"),
                    "printer columns: {columns}"
                );
                // The example's rebalances wait for their cluster, which does not exist here.
                let example_state = state(&env, "main-full")?;
                ensure!(example_state == "NotReady", "the example: {example_state}");
                Ok(())
            })
        },
    );
}
