//! The Kafka admin client and the KafkaTopic reconciler against a real `oxbow-broker`
//! process on 127.0.0.1 (Kubernetes stays in memory). Needs the broker binary:
//! `cargo build -p oxbow-broker`, or `OXBOW_BROKER_BIN`.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kafka_protocol::ResponseError;
use kube::api::{Patch, PatchParams};
use kube::Api;
use oxbow_e2e::harness::{self, BrokerOptions, BrokerProcess};
use oxbow_operator::balance::step::KafkaBalanceAdmin;
use oxbow_operator::cluster::validate::OperatorSettings;
use oxbow_operator::conditions::{is_true, READY};
use oxbow_operator::context::Context;
use oxbow_operator::crd::{KafkaCluster, KafkaClusterStatus, KafkaTopic};
use oxbow_operator::metrics::Metrics;
use oxbow_operator::topic::admin::{AdminError, ConfigChange, KafkaAdmin, NewTopic, TopicAdmin};
use oxbow_operator::topic::{reconcile, FINALIZER};

fn start_broker() -> BrokerProcess {
    let binary = harness::broker_binary().unwrap_or_else(|err| panic!("{err:#}"));
    BrokerProcess::start(BrokerOptions::new(binary)).expect("the broker starts")
}

fn new_topic(name: &str, partitions: Option<i32>, config: &[(&str, &str)]) -> NewTopic {
    NewTopic {
        name: name.to_string(),
        partitions,
        replicas: None,
        config: config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

#[tokio::test]
async fn the_admin_client_creates_grows_reconfigures_and_deletes_a_topic() {
    let broker = start_broker();
    let bootstrap = broker.bootstrap();
    let admin = KafkaAdmin::default();

    assert_eq!(
        admin
            .describe(&bootstrap, "orders")
            .await
            .expect("describe"),
        None
    );
    let id = admin
        .create(
            &bootstrap,
            &new_topic("orders", Some(2), &[("retention.ms", "60000")]),
        )
        .await
        .expect("create");
    assert_ne!(id, "00000000-0000-0000-0000-000000000000");

    let described = admin
        .describe(&bootstrap, "orders")
        .await
        .expect("describe")
        .expect("the topic exists");
    assert_eq!(described.topic_id, id);
    assert_eq!((described.partitions, described.replicas), (2, 1));
    assert_eq!(
        described.overrides,
        BTreeMap::from([("retention.ms".to_string(), "60000".to_string())]),
        "only the topic's own settings, not the defaults it inherits"
    );

    admin
        .create_partitions(&bootstrap, "orders", 5)
        .await
        .expect("grow");
    admin
        .alter_configs(
            &bootstrap,
            "orders",
            &[
                ConfigChange::Set("cleanup.policy".to_string(), "compact".to_string()),
                ConfigChange::Delete("retention.ms".to_string()),
            ],
        )
        .await
        .expect("alter");
    let described = admin
        .describe(&bootstrap, "orders")
        .await
        .expect("describe")
        .expect("the topic exists");
    assert_eq!(described.partitions, 5);
    assert_eq!(
        described.overrides,
        BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())])
    );

    admin.delete(&bootstrap, "orders").await.expect("delete");
    assert_eq!(
        admin
            .describe(&bootstrap, "orders")
            .await
            .expect("describe"),
        None
    );
    admin
        .delete(&bootstrap, "orders")
        .await
        .expect("deleting a deleted topic is not an error");
}

#[tokio::test]
async fn what_the_broker_refuses_is_reported_as_needing_a_spec_change() {
    let broker = start_broker();
    let bootstrap = broker.bootstrap();
    let admin = KafkaAdmin::default();

    let rejected = |result: Result<(), AdminError>, code: ResponseError| match result {
        Err(e @ AdminError::Rejected { .. }) => {
            assert!(e.needs_spec_change());
            assert!(
                matches!(e, AdminError::Rejected { code: c, .. } if c == code),
                "{e}"
            );
        }
        other => panic!("expected a {code:?} rejection, got {other:?}"),
    };
    rejected(
        admin
            .create(
                &bootstrap,
                &new_topic("bad-config", Some(1), &[("bogus.setting", "1")]),
            )
            .await
            .map(|_| ()),
        ResponseError::InvalidConfig,
    );
    let mut too_replicated = new_topic("too-replicated", Some(1), &[]);
    too_replicated.replicas = Some(3);
    rejected(
        admin.create(&bootstrap, &too_replicated).await.map(|_| ()),
        ResponseError::InvalidReplicationFactor,
    );
    admin
        .create(&bootstrap, &new_topic("shrink", Some(3), &[]))
        .await
        .expect("create");
    rejected(
        admin.create_partitions(&bootstrap, "shrink", 2).await,
        ResponseError::InvalidPartitions,
    );
}

#[tokio::test]
async fn an_unreachable_broker_is_a_retriable_error() {
    let address = oxbow_e2e::harness::free_local_addr()
        .expect("a free port")
        .to_string();
    let error = KafkaAdmin::default()
        .describe(&address, "orders")
        .await
        .expect_err("nothing listens there");
    assert!(matches!(error, AdminError::Unreachable { .. }), "{error}");
    assert!(!error.needs_spec_change());
}

const CLUSTER: &str = "\
apiVersion: oxbow.dev/v1alpha1
kind: KafkaCluster
metadata: {name: main, namespace: streaming, uid: 6f0c3f5e-0000-4000-8000-0000000000a1}
spec: {replicas: 1}";

const TOPIC: &str = "\
apiVersion: oxbow.dev/v1alpha1
kind: KafkaTopic
metadata:
  name: payments
  namespace: streaming
  uid: 6f0c3f5e-0000-4000-8000-0000000000a2
  # The in-memory API cannot JSON-patch-test a missing finalizer list; give it one.
  finalizers: [test.oxbow.dev/placeholder]
spec:
  clusterRef: {name: main}
  partitions: 3
  config: {retention.ms: \"3600000\"}";

async fn current(topics: &Api<KafkaTopic>) -> Arc<KafkaTopic> {
    Arc::new(topics.get("payments").await.expect("the KafkaTopic"))
}

#[tokio::test]
async fn the_topic_reconciler_takes_a_topic_through_its_life_on_a_real_broker() {
    let broker = start_broker();
    let bootstrap = broker.bootstrap();
    let mut cluster: KafkaCluster = serde_yaml::from_str(CLUSTER).expect("cluster fixture");
    cluster.status = Some(KafkaClusterStatus {
        bootstrap: Some(bootstrap.clone()),
        ..KafkaClusterStatus::default()
    });
    let topic: KafkaTopic = serde_yaml::from_str(TOPIC).expect("topic fixture");
    let client = kube_fake_client::ClientBuilder::new()
        .with_resource::<KafkaCluster>()
        .with_resource::<KafkaTopic>()
        .with_object(cluster)
        .with_object(topic)
        .build()
        .await
        .expect("in-memory API");
    let ctx = Arc::new(Context::new(
        client.clone(),
        Arc::new(Metrics::new()),
        OperatorSettings::default(),
        Arc::new(KafkaAdmin::default()),
        Arc::new(KafkaBalanceAdmin::default()),
        None,
    ));
    let topics: Api<KafkaTopic> = Api::namespaced(client, "streaming");
    let admin = KafkaAdmin::default();

    // First pass adds the finalizer, the second creates the topic.
    for _ in 0..2 {
        reconcile(current(&topics).await, Arc::clone(&ctx))
            .await
            .expect("reconciled");
    }
    let on_broker = admin
        .describe(&bootstrap, "payments")
        .await
        .expect("describe")
        .expect("created on the broker");
    assert_eq!(on_broker.partitions, 3);
    assert_eq!(on_broker.overrides["retention.ms"], "3600000");
    let status = current(&topics).await.status.clone().expect("status");
    assert!(
        is_true(&status.conditions, READY),
        "{:?}",
        status.conditions
    );
    assert_eq!(
        status.topic_id.as_deref(),
        Some(on_broker.topic_id.as_str())
    );

    // Drift made by hand, and a spec change: both are put right.
    admin
        .alter_configs(
            &bootstrap,
            "payments",
            &[ConfigChange::Set(
                "segment.bytes".to_string(),
                "1048576".to_string(),
            )],
        )
        .await
        .expect("drift");
    topics
        .patch(
            "payments",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"partitions": 6}})),
        )
        .await
        .expect("grow");
    reconcile(current(&topics).await, Arc::clone(&ctx))
        .await
        .expect("reconciled");
    let on_broker = admin
        .describe(&bootstrap, "payments")
        .await
        .expect("describe")
        .expect("still there");
    assert_eq!(on_broker.partitions, 6);
    assert_eq!(
        on_broker.overrides,
        BTreeMap::from([("retention.ms".to_string(), "3600000".to_string())])
    );

    // Deletion: the finalizer deletes the topic, then lets the resource go.
    let mut deleting = (*current(&topics).await).clone();
    deleting.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    reconcile(Arc::new(deleting), Arc::clone(&ctx))
        .await
        .expect("cleaned up");
    assert_eq!(
        admin
            .describe(&bootstrap, "payments")
            .await
            .expect("describe"),
        None
    );
    let finalizers = current(&topics)
        .await
        .metadata
        .finalizers
        .clone()
        .unwrap_or_default();
    assert!(
        !finalizers.contains(&FINALIZER.to_string()),
        "{finalizers:?}"
    );
}
