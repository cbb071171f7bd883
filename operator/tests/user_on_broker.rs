//! The KafkaUser controller's admin calls against a real `oxbow-broker` process on 127.0.0.1
//! with ACL authorization (the reconciler's own flows run on a real Kubernetes cluster:
//! `kubernetes_users.rs`). Needs the broker binary: `cargo build -p oxbow-broker`, or
//! `OXBOW_BROKER_BIN`.

use oxbow_broker::security::scram::ScramMechanism;
use oxbow_e2e::harness::{self, BrokerOptions, BrokerProcess};
use oxbow_operator::crd::KafkaUser;
use oxbow_operator::topic::admin::KafkaAdmin;
use oxbow_operator::user::admin::new_credential;
use oxbow_operator::user::plan::{desired, plan, removal, ObservedUser, Step};

fn start_broker() -> BrokerProcess {
    let binary = harness::broker_binary().unwrap_or_else(|err| panic!("{err:#}"));
    BrokerProcess::start(
        BrokerOptions::new(binary)
            .arg("--override")
            .arg("authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer")
            .arg("--override")
            .arg("super.users=User:ANONYMOUS"),
    )
    .expect("the broker starts")
}

fn user(spec: &str) -> KafkaUser {
    serde_yaml::from_str(&format!(
        "apiVersion: oxbow.dev/v1alpha1\nkind: KafkaUser\nmetadata:\n  name: alice\nspec:\n  clusterRef:\n    name: main\n{spec}"
    ))
    .expect("a KafkaUser")
}

async fn carry_out(admin: &KafkaAdmin, bootstrap: &str, steps: &[Step], password: &str) {
    for step in steps {
        let credential = match step {
            Step::UpsertCredential(m) => Some(new_credential(*m, password).expect("a credential")),
            _ => None,
        };
        admin
            .apply_user_step(bootstrap, "alice", step, credential.as_ref())
            .await
            .unwrap_or_else(|e| panic!("{step:?}: {e}"));
    }
}

#[tokio::test]
async fn a_user_is_created_corrected_and_removed_through_the_kafka_protocol() {
    let broker = start_broker();
    let bootstrap = broker.bootstrap();
    let admin = KafkaAdmin::default();
    assert_eq!(
        admin
            .describe_user(&bootstrap, "alice")
            .await
            .expect("describe"),
        ObservedUser::default(),
        "a user the cluster has never seen has nothing"
    );

    let first = desired(
        &user(
            "  authentication:
    type: scram-sha-256
  authorization:
    acls:
      - resource: {type: topic, name: orders, patternType: prefix}
        operations: [Write, Describe]
      - resource: {type: group, name: billing}
        operations: [Read]
      - resource: {type: topic, name: secrets}
        operations: [All]
        type: deny
        host: 10.0.0.7
  quotas:
    producerByteRate: 1048576
    consumerByteRate: 2097152
",
        ),
        "alice",
    )
    .expect("valid");
    let steps = plan(&first, &ObservedUser::default(), false);
    carry_out(&admin, &bootstrap, &steps, "first").await;
    let have = admin
        .describe_user(&bootstrap, "alice")
        .await
        .expect("describe");
    assert_eq!(
        have.credentials.keys().collect::<Vec<_>>(),
        [&ScramMechanism::Sha256]
    );
    assert_eq!(
        have.acls, first.acls,
        "the ACLs read back as they were created"
    );
    assert_eq!(have.quotas, first.quotas);
    assert_eq!(plan(&first, &have, true), [], "in sync after one round");

    // The spec changes: another mechanism, one ACL fewer and one more, one quota gone.
    let second = desired(
        &user(
            "  authentication:
    type: scram-sha-512
  authorization:
    acls:
      - resource: {type: topic, name: orders, patternType: prefix}
        operations: [Write, Describe]
      - resource: {type: cluster}
        operations: [IdempotentWrite]
  quotas:
    producerByteRate: 524288
",
        ),
        "alice",
    )
    .expect("valid");
    let steps = plan(&second, &have, true);
    assert_eq!(steps.len(), 5, "{steps:?}");
    carry_out(&admin, &bootstrap, &steps, "second").await;
    let have = admin
        .describe_user(&bootstrap, "alice")
        .await
        .expect("describe");
    assert_eq!(
        have.credentials.keys().collect::<Vec<_>>(),
        [&ScramMechanism::Sha512]
    );
    assert_eq!(have.acls, second.acls);
    assert_eq!(have.quotas, second.quotas);
    assert_eq!(plan(&second, &have, true), []);

    let steps = removal("alice", &have);
    carry_out(&admin, &bootstrap, &steps, "").await;
    assert_eq!(
        admin
            .describe_user(&bootstrap, "alice")
            .await
            .expect("describe"),
        ObservedUser::default(),
        "nothing of the user is left"
    );
    // Removing again finds nothing to do, and a deletion of what is gone is not an error.
    assert_eq!(removal("alice", &ObservedUser::default()), []);
    carry_out(
        &admin,
        &bootstrap,
        &[Step::DeleteCredentials(vec![ScramMechanism::Sha512])],
        "",
    )
    .await;
}
