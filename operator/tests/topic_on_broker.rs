//! The Kafka admin client against a real `oxbow-broker` process on 127.0.0.1 (the
//! reconciler's own flows run on a real Kubernetes cluster: `kubernetes.rs`). Needs the broker binary:
//! `cargo build -p oxbow-broker`, or `OXBOW_BROKER_BIN`.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use oxbow_e2e::harness::{self, BrokerOptions, BrokerProcess};
use oxbow_operator::topic::admin::{AdminError, ConfigChange, KafkaAdmin, NewTopic, TopicAdmin};

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
