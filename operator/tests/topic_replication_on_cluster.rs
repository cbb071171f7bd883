//! The KafkaTopic reconciler changing a topic's replication factor on a real local cluster
//! of three brokers (the `oxbow-e2e` harness; Kubernetes stays in memory): 1 → 3 → 2, by
//! reassignment, with progress in the status and every acknowledged record read back after
//! each change. Needs the broker binary: `cargo build -p oxbow-broker`, or `OXBOW_BROKER_BIN`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use kube::api::{Patch, PatchParams};
use kube::Api;
use oxbow_e2e::cluster::{Cluster, ClusterOptions, PartitionView, RecordingContext};
use oxbow_e2e::harness;
use oxbow_operator::balance::step::KafkaBalanceAdmin;
use oxbow_operator::cluster::validate::OperatorSettings;
use oxbow_operator::conditions::{is_true, reason, READY, RECONCILING};
use oxbow_operator::context::Context;
use oxbow_operator::crd::{KafkaCluster, KafkaClusterStatus, KafkaTopic};
use oxbow_operator::metrics::Metrics;
use oxbow_operator::topic::admin::KafkaAdmin;
use oxbow_operator::topic::{reconcile, CHANGING_REPLICATION_FACTOR};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

const TOPIC: &str = "ledger";
const PARTITIONS: i32 = 4;
const RECORDS: usize = 2000;
/// Bound of one replication-factor change, reconciliations included.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(90);

fn topic_yaml() -> String {
    format!(
        "\
apiVersion: oxbow.dev/v1alpha1
kind: KafkaTopic
metadata:
  name: {TOPIC}
  namespace: streaming
  uid: 6f0c3f5e-0000-4000-8000-0000000000b2
  # The in-memory API cannot JSON-patch-test a missing finalizer list; give it one.
  finalizers: [test.oxbow.dev/placeholder]
spec:
  clusterRef: {{name: main}}
  partitions: {PARTITIONS}
  replicas: 1"
    )
}

/// Produces `RECORDS` records with acks=all and returns their values.
fn produce(cluster: &Cluster, prefix: &str) -> Result<Vec<String>> {
    let producer: ThreadedProducer<RecordingContext> = cluster
        .client_config()
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create_with_context(RecordingContext::default())
        .context("creating a producer")?;
    for n in 0..RECORDS {
        let value = format!("{prefix}-{n}");
        let partition = i32::try_from(n)? % PARTITIONS;
        producer
            .send(
                BaseRecord::<(), _, _>::with_opaque_to(TOPIC, Box::new(Instant::now()))
                    .payload(&value)
                    .partition(partition),
            )
            .map_err(|(e, _)| anyhow::anyhow!("sending {value}: {e}"))?;
    }
    producer.flush(Duration::from_secs(60))?;
    let deliveries = producer.context().log.snapshot();
    ensure!(deliveries.len() == RECORDS, "{} reported", deliveries.len());
    if let Some(failed) = deliveries.iter().find(|d| d.error.is_some()) {
        bail!("delivery of {} failed: {:?}", failed.value, failed.error);
    }
    Ok(deliveries.into_iter().map(|d| d.value).collect())
}

fn check_kept(cluster: &Cluster, acknowledged: &[String]) -> Result<()> {
    let stored: BTreeSet<String> = cluster
        .read_all(TOPIC, PARTITIONS)?
        .into_iter()
        .map(|(_, _, value)| value)
        .collect();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|v| !stored.contains(*v))
        .collect();
    ensure!(
        lost.is_empty(),
        "{} acknowledged records lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(3)]
    );
    Ok(())
}

struct Operator {
    rt: tokio::runtime::Runtime,
    ctx: Arc<Context>,
    topics: Api<KafkaTopic>,
}

impl Operator {
    fn reconcile(&self) -> Result<Arc<KafkaTopic>> {
        self.rt.block_on(async {
            let current = Arc::new(self.topics.get(TOPIC).await?);
            reconcile(current, Arc::clone(&self.ctx)).await?;
            Ok(Arc::new(self.topics.get(TOPIC).await?))
        })
    }

    fn set_replicas(&self, replicas: i32) -> Result<()> {
        self.rt.block_on(self.topics.patch(
            TOPIC,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": replicas}})),
        ))?;
        Ok(())
    }

    /// Reconciles until the topic is Ready again; returns the progress messages seen on the
    /// way.
    fn until_ready(&self) -> Result<Vec<String>> {
        let deadline = Instant::now() + CHANGE_TIMEOUT;
        let mut progress = Vec::new();
        loop {
            let topic = self.reconcile()?;
            let status = topic.status.clone().unwrap_or_default();
            if is_true(&status.conditions, READY) {
                return Ok(progress);
            }
            ensure!(
                reason(&status.conditions, RECONCILING) == Some(CHANGING_REPLICATION_FACTOR),
                "not ready and not reassigning: {:?}",
                status.conditions
            );
            progress.extend(status.message);
            ensure!(
                Instant::now() < deadline,
                "still not ready after {CHANGE_TIMEOUT:?}: {progress:?}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// Every partition has `rf` replicas, all in sync, and one leader among them.
fn check_replication(cluster: &mut Cluster, rf: usize) -> Result<Vec<PartitionView>> {
    cluster.wait_until(
        &format!("every partition has {rf} replicas in sync"),
        Duration::from_secs(30),
        |c| {
            let partitions = c.partitions(TOPIC)?;
            ensure!(partitions.len() == usize::try_from(PARTITIONS)?);
            for p in &partitions {
                ensure!(
                    p.replicas.len() == rf && p.fully_in_sync(),
                    "partition {}: replicas {:?}, isr {:?}",
                    p.partition,
                    p.replicas,
                    p.isr
                );
            }
            Ok(partitions)
        },
    )
}

fn scenario(cluster: &mut Cluster) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut main: KafkaCluster = serde_yaml::from_str(
        "apiVersion: oxbow.dev/v1alpha1\nkind: KafkaCluster\nmetadata: {name: main, namespace: streaming, uid: 6f0c3f5e-0000-4000-8000-0000000000b1}\nspec: {replicas: 3}",
    )?;
    main.status = Some(KafkaClusterStatus {
        bootstrap: Some(cluster.bootstrap()),
        ..KafkaClusterStatus::default()
    });
    let topic: KafkaTopic = serde_yaml::from_str(&topic_yaml())?;
    let client = rt.block_on(
        kube_fake_client::ClientBuilder::new()
            .with_resource::<KafkaCluster>()
            .with_resource::<KafkaTopic>()
            .with_object(main)
            .with_object(topic)
            .build(),
    )?;
    // Two partitions at a time, so a change takes more than one round.
    let admin = KafkaAdmin {
        max_moves: 2,
        ..KafkaAdmin::default()
    };
    let operator = Operator {
        ctx: Arc::new(Context::new(
            client.clone(),
            Arc::new(Metrics::new()),
            OperatorSettings::default(),
            Arc::new(admin),
            Arc::new(KafkaBalanceAdmin::default()),
            None,
        )),
        topics: Api::namespaced(client, "streaming"),
        rt,
    };

    // Created with one replica per partition.
    operator.reconcile()?;
    operator.until_ready()?;
    check_replication(cluster, 1)?;
    let mut acknowledged = produce(cluster, "rf1")?;

    // 1 → 3: two new replicas per partition, copied from the leader.
    operator.set_replicas(3)?;
    let progress = operator.until_ready()?;
    eprintln!("1 → 3: {progress:#?}");
    ensure!(
        progress.iter().any(|m| m.contains("from 1 to 3")),
        "no progress was reported: {progress:?}"
    );
    let status = operator.reconcile()?.status.clone().unwrap_or_default();
    ensure!(status.replicas == Some(3), "status: {status:?}");
    let three = check_replication(cluster, 3)?;
    let leaders: BTreeSet<i32> = three.iter().map(|p| p.leader).collect();
    ensure!(
        leaders.len() >= 2,
        "preferred leaders are spread: {three:?}"
    );
    check_kept(cluster, &acknowledged)?;
    acknowledged.extend(produce(cluster, "rf3")?);

    // 3 → 2: one replica per partition goes; the data stays on the other two.
    operator.set_replicas(2)?;
    let progress = operator.until_ready()?;
    eprintln!("3 → 2: {progress:#?}");
    let status = operator.reconcile()?.status.clone().unwrap_or_default();
    ensure!(status.replicas == Some(2), "status: {status:?}");
    let two = check_replication(cluster, 2)?;
    for p in &two {
        ensure!(
            p.replicas.contains(&p.leader),
            "partition {} is led from outside its replicas: {p:?}",
            p.partition
        );
    }
    check_kept(cluster, &acknowledged)?;
    acknowledged.extend(produce(cluster, "rf2")?);
    check_kept(cluster, &acknowledged)
}

#[test]
fn a_kafkatopic_replication_factor_goes_from_one_to_three_to_two_keeping_every_record() -> Result<()>
{
    let binary = harness::broker_binary()?;
    let options = ClusterOptions::new(binary)
        .brokers(3)
        .voters(3)
        .set("broker.session.timeout.ms", "3000")
        .set("broker.heartbeat.interval.ms", "500")
        .set("offsets.topic.num.partitions", "2")
        .set("offsets.topic.replication.factor", "1");
    let mut cluster = Cluster::start(options)?;
    let outcome = scenario(&mut cluster);
    cluster.explain(outcome)
}
