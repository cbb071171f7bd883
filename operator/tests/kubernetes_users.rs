//! KafkaUser on a real Kubernetes control plane, with a real broker in its pod: users
//! authenticate with the password the operator generated (or took from a Secret), are held
//! to their ACLs, their produce quota and their controller mutation quota, drift is undone,
//! a changed password takes effect, deleting the resource removes the user from the cluster,
//! a paused user or cluster is left alone until unpaused, and a manual rolling update
//! restarts a pod, then the cluster. A `nodeport` listener is reached through its Services'
//! node ports (fixed in the listener's `configuration`), a `loadbalancer` one through its
//! Services' load balancer addresses. The example (`examples/kafkauser.yaml`) is applied too.
//!
//! Runs in a sandbox of its own, as `operator/tests/kubernetes.rs` describes. Needs root, and
//! `cargo build --workspace --bins` first.

use std::time::Duration;

use anyhow::{ensure, Context as _};
use oxbow_e2e::kube::env::{confluent_client, repository, runtime, sandboxed, EnvOptions, KubeEnv};
use serde_json::{json, Value};

/// A confluent-kafka client run as `confluent_client(CLIENT, <action>, <config>, <args..>)` (after the shared preamble). It
/// prints one JSON object: what the action found, and every error librdkafka reported on the
/// way (`errors`).
/// - `describe <timeout>`: lists topics and the brokers' advertised `host:port` (`ok` says
///   whether the cluster answered);
/// - `produce <topic> <count> <bytes>`: creates the topic (one partition) unless it exists,
///   produces `count` records of `bytes` bytes with acks=all and reports how many were
///   delivered, the delivery errors and the seconds the whole produce took;
/// - `consume <topic> <group> <count>`: reads with the group until `count` records or 60 s;
/// - `create-topics <prefix> <count> <partitions>`: creates `<prefix>-0`.. in one request and
///   reports each topic's outcome (`ok`, or librdkafka's error name) and the longest throttle
///   time, in seconds, librdkafka was given meanwhile;
/// - `acls <principal>`: the number of ACLs of the principal;
/// - `drop-acls <principal>`: deletes every ACL of the principal.
const CLIENT: &str = r#"
from confluent_kafka.admin import (AclBindingFilter, AclOperation, AclPermissionType,
    ResourcePatternType, ResourceType)

throttles = []
config['throttle_cb'] = lambda e: throttles.append(e.throttle_time)

def principal_filter(principal):
    return AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, principal, None,
                            AclOperation.ANY, AclPermissionType.ANY)

admin = AdminClient(config)
if action == 'describe':
    try:
        md = admin.list_topics(timeout=float(sys.argv[3]))
    except KafkaException as e:
        admin.poll(1)
        finish({'ok': False, 'error': str(e)})
    finish({'ok': True, 'topics': sorted(md.topics),
            'hosts': sorted('%s:%d' % (b.host, b.port) for b in md.brokers.values())})
if action == 'create-topics':
    prefix, count, partitions = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    names = ['%s-%d' % (prefix, i) for i in range(count)]
    futures = admin.create_topics([NewTopic(n, partitions, 1) for n in names], request_timeout=30)
    outcome = []
    for name in names:
        try:
            futures[name].result()
            outcome.append('ok')
        except KafkaException as e:
            outcome.append(e.args[0].name())
    admin.poll(1)
    finish({'topics': outcome, 'throttle': max(throttles, default=0)})
if action == 'acls':
    finish({'acls': len(admin.describe_acls(principal_filter(sys.argv[3])).result())})
if action == 'drop-acls':
    deleted = admin.delete_acls([principal_filter(sys.argv[3])])
    finish({'deleted': sum(len(f.result()) for f in deleted.values())})
if action == 'produce':
    topic, count, size = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    try:
        admin.create_topics([NewTopic(topic, 1, 1)], request_timeout=30)[topic].result()
    except KafkaException as e:
        errors.append('create: %s' % e)
    delivered, failed = [], []
    def report(err, msg):
        (failed.append(str(err)) if err else delivered.append(1))
    # One record per request, so a throttle shows between records.
    producer = Producer(dict(config, acks='all', **{'linger.ms': 0, 'batch.num.messages': 1,
                                                    'message.timeout.ms': 60000}))
    start = time.time()
    for i in range(count):
        while True:
            try:
                producer.produce(topic, value=b'x' * size, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(90)
    finish({'delivered': len(delivered), 'failed': failed[:3], 'unflushed': left,
            'seconds': time.time() - start})
topic, group, count = sys.argv[3], sys.argv[4], int(sys.argv[5])
consumer = Consumer(dict(config, **{'group.id': group, 'auto.offset.reset': 'earliest'}))
consumer.subscribe([topic])
seen, failures = 0, []
end = time.time() + 60
while seen < count and time.time() < end:
    msg = consumer.poll(1)
    if msg is None:
        continue
    if msg.error():
        failures.append(str(msg.error()))
        if len(failures) > 5 or 'authorization' in failures[-1].lower():
            break
        continue
    seen += 1
consumer.close()
finish({'consumed': seen, 'failed': failures[:3]})
"#;

fn client(action: &str, config: &Value, args: &[&str]) -> anyhow::Result<Value> {
    confluent_client(CLIENT, action, config, args)
}

/// The authenticated listener, the broker's internal one (`User:ANONYMOUS`, a super user).
const APPS: &str = "users-bootstrap.default.svc:9094";
const INTERNAL: &str = "users-bootstrap.default.svc:9092";

fn scram(user: &str, password: &str) -> Value {
    scram_at(APPS, user, password)
}

fn scram_at(bootstrap: &str, user: &str, password: &str) -> Value {
    json!({
        "bootstrap.servers": bootstrap,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": user,
        "sasl.password": password,
    })
}

fn internal() -> Value {
    json!({ "bootstrap.servers": INTERNAL })
}

const CLUSTER: &str = "apiVersion: oxbow.dev/v1alpha1
kind: KafkaCluster
metadata:
  name: users
spec:
  replicas: 1
  storage:
    size: 1Gi
  listeners:
    additional:
      - name: APPS
        port: 9094
        authentication: scram-sha-512
      - name: OUTSIDE
        port: 9095
        type: nodeport
        authentication: scram-sha-512
        configuration:
          bootstrap:
            nodePort: 31092
          brokers:
            - broker: 0
              nodePort: 31093
      - name: CLOUD
        port: 9096
        type: loadbalancer
        authentication: scram-sha-512
  security:
    authorization:
      superUsers: []
  config:
    # Quota rates over two windows of one second: a burst allowance of about one second of
    # the quota, so the produce below is throttled soon.
    quota.window.num: \"2\"
    quota.window.size.seconds: \"1\"
";

/// 50 KiB/s: the producer's 400 KiB below are eight seconds' worth of it.
const QUOTA: u64 = 51_200;
/// `quota.window.num` of the cluster.
const QUOTA_WINDOWS: f64 = 2.0;

fn users() -> String {
    format!(
        "apiVersion: oxbow.dev/v1alpha1
kind: KafkaUser
metadata:
  name: orders-app
spec:
  clusterRef:
    name: users
  authentication:
    type: scram-sha-512
  authorization:
    type: simple
    acls:
      - resource: {{type: topic, name: orders, patternType: prefix}}
        operations: [Create, Describe, Write]
      - resource: {{type: topic, name: payments}}
        operations: [All]
        type: deny
      - resource: {{type: topic, name: '*'}}
        operations: [Describe]
  quotas:
    producerByteRate: {QUOTA}
    controllerMutationRate: 1
---
apiVersion: oxbow.dev/v1alpha1
kind: KafkaUser
metadata:
  name: auditor
spec:
  clusterRef:
    name: users
  authentication:
    type: scram-sha-512
    password:
      valueFrom:
        secretKeyRef:
          name: auditor-password
          key: password
  authorization:
    acls:
      - resource: {{type: topic, name: orders, patternType: prefix}}
        operations: [Read, Describe]
      - resource: {{type: group, name: audit}}
        operations: [Read]
"
    )
}

fn secret_value(env: &KubeEnv, secret: &str, key: &str) -> anyhow::Result<String> {
    env.kubectl(&[
        "-n",
        "default",
        "get",
        "secret",
        secret,
        "-o",
        &format!("go-template={{{{index .data \"{key}\" | base64decode}}}}"),
    ])
}

fn wait_user_ready(env: &KubeEnv, name: &str) -> anyhow::Result<()> {
    let object = format!("kafkauser/{name}");
    env.wait(&format!("{object} Ready"), Duration::from_secs(90), |env| {
        let ready = env.jsonpath(
            "default",
            &object,
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        )?;
        let generation = env.jsonpath("default", &object, "{.metadata.generation}")?;
        let observed = env.jsonpath("default", &object, "{.status.observedGeneration}")?;
        Ok(ready == "True" && generation == observed)
    })
}

/// Whether a `describe` outcome was refused for its credentials.
fn authentication_failed(outcome: &Value) -> bool {
    outcome["ok"] == false
        && outcome["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .chain(outcome["log"].as_str().unwrap_or_default().lines())
            .any(|line| line.contains("Authentication failed"))
}

#[test]
fn kafka_users_authenticate_are_held_to_their_acls_and_quotas_and_go_with_their_resource_and_pauses_hold_changes(
) {
    sandboxed(
        "kafka_users_authenticate_are_held_to_their_acls_and_quotas_and_go_with_their_resource_and_pauses_hold_changes",
        || {
            runtime().block_on(async {
                let env = KubeEnv::start(EnvOptions::default()).await?;

                // A manifest the API server refuses, with the reason.
                let nameless = "apiVersion: oxbow.dev/v1alpha1\nkind: KafkaUser\nmetadata:\n  name: broken\nspec:\n  clusterRef:\n    name: users\n  authorization:\n    acls:\n      - resource: {type: group}\n        operations: [Read]\n";
                let refused = env.apply(nameless).expect_err("a group ACL without a name");
                ensure!(
                    refused.to_string().contains("needs a name"),
                    "the API server's reason: {refused:#}"
                );

                // The example, whose cluster does not exist here: accepted, and waiting for it.
                env.apply(&std::fs::read_to_string(
                    repository().join("examples/kafkauser.yaml"),
                )?)?;
                env.wait(
                    "the example's users waiting for their cluster",
                    Duration::from_secs(60),
                    |env| {
                        let reasons = env.kubectl(&[
                            "-n",
                            "default",
                            "get",
                            "kafkauser",
                            "orders-app",
                            "auditor",
                            "-o",
                            "jsonpath={.items[*].status.conditions[?(@.type==\"Ready\")].reason}",
                        ])?;
                        Ok(reasons == "ClusterNotFound ClusterNotFound")
                    },
                )?;
                env.kubectl(&[
                    "-n",
                    "default",
                    "delete",
                    "kafkauser",
                    "orders-app",
                    "auditor",
                    "--wait=true",
                ])?;

                env.kubectl(&[
                    "-n",
                    "default",
                    "create",
                    "secret",
                    "generic",
                    "auditor-password",
                    "--from-literal=password=first-password",
                ])?;
                env.apply(&format!("{CLUSTER}---\n{}", users()))?;
                env.wait_cluster_ready("default", "users", 1, Duration::from_secs(240))?;
                wait_user_ready(&env, "orders-app")?;
                wait_user_ready(&env, "auditor")?;

                for user in ["orders-app", "auditor"] {
                    ensure!(
                        env.ready_gauge("kafkauser", user)? == Some(1.0),
                        "the operator's readiness gauge of {user}"
                    );
                }
                let columns = env.kubectl(&["-n", "default", "get", "kafkausers"])?;
                for heading in ["CLUSTER", "AUTHENTICATION", "SECRET", "READY"] {
                    ensure!(columns.contains(heading), "printer columns: {columns}");
                }
                let password = secret_value(&env, "orders-app", "password")?;
                ensure!(
                    password.len() == 32 && password.chars().all(|c| c.is_ascii_alphanumeric()),
                    "a generated password: {password:?}"
                );
                let jaas = secret_value(&env, "orders-app", "sasl.jaas.config")?;
                ensure!(
                    jaas.contains("ScramLoginModule required username=\"orders-app\"")
                        && jaas.contains(&password),
                    "{jaas}"
                );
                ensure!(
                    secret_value(&env, "auditor", "password")? == "first-password",
                    "the auditor's Secret holds the password its spec names"
                );

                // The nodeport listener, reached through its Services' node ports on the node's
                // address: the broker advertises its own node port there.
                let external = env.jsonpath(
                    "default",
                    "kafkacluster/users",
                    "{.status.listeners[?(@.name==\"OUTSIDE\")].bootstrap}",
                )?;
                let bootstrap_port =
                    env.jsonpath("default", "service/users-outside-bootstrap", "{.spec.ports[0].nodePort}")?;
                let broker_port =
                    env.jsonpath("default", "service/users-outside-0", "{.spec.ports[0].nodePort}")?;
                let node = oxbow_e2e::kube::sandbox::GATEWAY;
                ensure!(
                    (bootstrap_port.as_str(), broker_port.as_str()) == ("31092", "31093"),
                    "the node ports the listener fixes: bootstrap {bootstrap_port}, broker {broker_port}"
                );
                ensure!(
                    external == format!("{node}:{bootstrap_port}"),
                    "the status's external bootstrap: {external} (node port {bootstrap_port})"
                );
                let outside = client("describe", &scram_at(&external, "orders-app", &password), &["30"])?;
                ensure!(
                    outside["ok"] == true && outside["hosts"] == json!([format!("{node}:{broker_port}")]),
                    "the broker advertises its node port on OUTSIDE: {outside}"
                );
                let sent = client(
                    "produce",
                    &scram_at(&external, "orders-app", &password),
                    &["orders-outside", "5", "100"],
                )?;
                ensure!(sent["delivered"] == 5, "produced from outside: {sent}");

                // The loadbalancer listener, reached through the addresses the load balancer
                // controller gave its Services: the broker advertises its own Service's.
                let cloud = env.jsonpath(
                    "default",
                    "kafkacluster/users",
                    "{.status.listeners[?(@.name==\"CLOUD\")].bootstrap}",
                )?;
                let load_balancer = |service: &str| {
                    env.jsonpath("default", service, "{.status.loadBalancer.ingress[0].ip}")
                };
                let bootstrap_address = load_balancer("service/users-cloud-bootstrap")?;
                let broker_address = load_balancer("service/users-cloud-0")?;
                ensure!(
                    cloud == format!("{bootstrap_address}:9096") && bootstrap_address != broker_address,
                    "the status's load balancer bootstrap: {cloud} (bootstrap {bootstrap_address}, broker {broker_address})"
                );
                let described = client("describe", &scram_at(&cloud, "orders-app", &password), &["30"])?;
                ensure!(
                    described["ok"] == true && described["hosts"] == json!([format!("{broker_address}:9096")]),
                    "the broker advertises its load balancer on CLOUD: {described}"
                );
                let sent = client(
                    "produce",
                    &scram_at(&cloud, "orders-app", &password),
                    &["orders-outside", "5", "100"],
                )?;
                ensure!(sent["delivered"] == 5, "produced through the load balancer: {sent}");

                // Unthrottled, through the internal listener: the same records take a moment.
                let baseline = client("produce", &internal(), &["baseline", "40", "10240"])?;
                ensure!(baseline["delivered"] == 40, "baseline: {baseline}");
                // Throttled to 50 KiB/s: past the burst the rate's windows allow, 400 KiB take
                // about six seconds.
                let produced = client(
                    "produce",
                    &scram("orders-app", &password),
                    &["orders-eu", "40", "10240"],
                )?;
                ensure!(produced["delivered"] == 40, "orders-app produces: {produced}");
                let seconds = produced["seconds"].as_f64().context("seconds")?;
                let bytes = 40.0 * 10240.0;
                let quota = QUOTA as f64;
                // The rate over the produce and the windows before it, as the broker measures.
                let rate = bytes / (seconds + QUOTA_WINDOWS);
                let unthrottled = baseline["seconds"].as_f64().context("seconds")?;
                eprintln!(
                    "orders-app: 400 KiB in {seconds:.2} s ({:.0} KiB/s over the windows, quota {} KiB/s); unthrottled: {unthrottled:.2} s",
                    rate / 1024.0,
                    QUOTA / 1024,
                );
                ensure!(
                    seconds >= 0.6 * (bytes / quota - QUOTA_WINDOWS)
                        && rate <= 1.5 * quota
                        && unthrottled < seconds / 2.0,
                    "the quota throttles the producer to its rate: {produced}, unthrottled {baseline}"
                );

                let denied = client(
                    "produce",
                    &scram("orders-app", &password),
                    &["payments", "1", "100"],
                )?;
                ensure!(denied["delivered"] == 0, "payments is denied: {denied}");
                let reasons = format!("{} {}", denied["failed"], denied["errors"]).to_lowercase();
                ensure!(
                    reasons.contains("authorization"),
                    "denied for authorization: {denied}"
                );

                // controllerMutationRate 1: a burst of 11 partitions (11 quota windows of
                // 1 s). librdkafka sends CreateTopics v4, which Kafka does not refuse over the
                // quota but throttles: 18 partitions leave the bucket 7 below zero, 7 s.
                let burst = client(
                    "create-topics",
                    &scram("orders-app", &password),
                    &["orders-burst", "3", "6"],
                )?;
                let throttle = burst["throttle"].as_f64().context("throttle")?;
                ensure!(
                    burst["topics"] == json!(["ok", "ok", "ok"]) && (5.0..=8.0).contains(&throttle),
                    "the controller mutation quota throttles: {burst}"
                );

                let read = client(
                    "consume",
                    &scram("auditor", "first-password"),
                    &["orders-eu", "audit", "40"],
                )?;
                ensure!(read["consumed"] == 40, "the auditor reads: {read}");
                let no_group = client(
                    "consume",
                    &scram("auditor", "first-password"),
                    &["orders-eu", "elsewhere", "1"],
                )?;
                ensure!(
                    no_group["consumed"] == 0
                        && no_group["failed"]
                            .to_string()
                            .to_lowercase()
                            .contains("authorization"),
                    "the auditor has no ACL for group `elsewhere`: {no_group}"
                );

                let wrong = client("describe", &scram("orders-app", "not-the-password"), &["10"])?;
                ensure!(authentication_failed(&wrong), "a wrong password: {wrong}");

                // Drift: ACLs removed behind the operator's back come back at its next look.
                let dropped = client("drop-acls", &internal(), &["User:orders-app"])?;
                ensure!(dropped["deleted"] == 5, "orders-app's ACLs: {dropped}");
                env.annotate("default", "kafkauser/orders-app", "example.com/touched=1")?;
                env.wait("orders-app's ACLs restored", Duration::from_secs(60), |_| {
                    Ok(client("acls", &internal(), &["User:orders-app"])?["acls"] == 5)
                })?;

                // Paused, the user is left as it is; unpaused, it is corrected again.
                env.annotate("default", "kafkauser/orders-app", "oxbow.dev/pause-reconciliation=true")?;
                env.wait_condition(
                    "default",
                    "kafkauser/orders-app",
                    "ReconciliationPaused",
                    "True",
                    Duration::from_secs(60),
                )?;
                let dropped = client("drop-acls", &internal(), &["User:orders-app"])?;
                ensure!(dropped["deleted"] == 5, "orders-app's ACLs: {dropped}");
                env.annotate("default", "kafkauser/orders-app", "example.com/touched=2")?;
                std::thread::sleep(Duration::from_secs(5));
                let acls = client("acls", &internal(), &["User:orders-app"])?;
                ensure!(acls["acls"] == 0, "a paused user is not corrected: {acls}");
                env.annotate("default", "kafkauser/orders-app", "oxbow.dev/pause-reconciliation-")?;
                env.wait("orders-app's ACLs restored after the pause", Duration::from_secs(60), |_| {
                    Ok(client("acls", &internal(), &["User:orders-app"])?["acls"] == 5)
                })?;
                ensure!(
                    env.jsonpath(
                        "default",
                        "kafkauser/orders-app",
                        "{.status.conditions[?(@.type==\"ReconciliationPaused\")].status}"
                    )?
                    .is_empty(),
                    "the pause condition goes with the annotation"
                );

                // A new password in the Secret the spec names takes effect.
                env.kubectl(&[
                    "-n",
                    "default",
                    "create",
                    "secret",
                    "generic",
                    "auditor-password",
                    "--from-literal=password=second-password",
                    "--dry-run=client",
                    "-o",
                    "yaml",
                ])
                .and_then(|yaml| env.apply(&yaml))?;
                env.annotate("default", "kafkauser/auditor", "example.com/touched=1")?;
                env.wait("the auditor's new password", Duration::from_secs(60), |_| {
                    Ok(client("describe", &scram("auditor", "second-password"), &["10"])?["ok"]
                        == true)
                })?;
                let old = client("describe", &scram("auditor", "first-password"), &["10"])?;
                ensure!(authentication_failed(&old), "the old password: {old}");

                // Deleting the resource removes the user, its ACLs and its Secret.
                env.kubectl(&["-n", "default", "delete", "kafkauser", "orders-app", "--wait=true"])?;
                let acls = client("acls", &internal(), &["User:orders-app"])?;
                ensure!(acls["acls"] == 0, "ACLs left: {acls}");
                env.wait("the Secret orders-app deleted", Duration::from_secs(60), |env| {
                    Ok(env
                        .kubectl(&["-n", "default", "get", "secrets", "-o", "name"])?
                        .lines()
                        .all(|line| line != "secret/orders-app"))
                })?;
                let gone = client("describe", &scram("orders-app", &password), &["10"])?;
                ensure!(authentication_failed(&gone), "a deleted user: {gone}");

                // A paused cluster ignores a spec change until it is unpaused.
                env.annotate("default", "kafkacluster/users", "oxbow.dev/pause-reconciliation=true")?;
                env.wait_condition(
                    "default",
                    "kafkacluster/users",
                    "ReconciliationPaused",
                    "True",
                    Duration::from_secs(60),
                )?;
                env.kubectl(&[
                    "-n",
                    "default",
                    "patch",
                    "kafkacluster",
                    "users",
                    "--type=merge",
                    "-p",
                    r#"{"spec":{"config":{"log.retention.hours":"100"}}}"#,
                ])?;
                std::thread::sleep(Duration::from_secs(5));
                let config = env.jsonpath("default", "configmap/users-config", "{.data}")?;
                ensure!(
                    !config.contains("log.retention.hours=100"),
                    "a paused cluster's ConfigMap is left as it was: {config}"
                );
                let generation = env.jsonpath("default", "kafkacluster/users", "{.metadata.generation}")?;
                let observed =
                    env.jsonpath("default", "kafkacluster/users", "{.status.observedGeneration}")?;
                ensure!(generation != observed, "the change is not observed while paused");
                env.annotate("default", "kafkacluster/users", "oxbow.dev/pause-reconciliation-")?;
                env.wait("the change applied after the pause", Duration::from_secs(60), |env| {
                    Ok(env
                        .jsonpath("default", "configmap/users-config", "{.data}")?
                        .contains("log.retention.hours=100"))
                })?;

                // Manual rolling updates: of one pod, then of the whole cluster, each once.
                let rolled = |env: &KubeEnv| -> anyhow::Result<bool> {
                    let revision =
                        env.jsonpath("default", "statefulset/users", "{.status.updateRevision}")?;
                    let pod = env.jsonpath(
                        "default",
                        "pod/users-0",
                        "{.metadata.labels.controller-revision-hash} {.status.conditions[?(@.type==\"Ready\")].status}",
                    )?;
                    Ok(pod == format!("{revision} True"))
                };
                env.wait("the configuration change rolled out", Duration::from_secs(180), |env| {
                    rolled(env)
                })?;
                for (kind, what) in [("pod/users-0", "one pod"), ("kafkacluster/users", "the cluster")] {
                    let before = env.jsonpath("default", "pod/users-0", "{.metadata.uid}")?;
                    env.annotate("default", kind, "oxbow.dev/manual-rolling-update=true")?;
                    env.wait(
                        &format!("a manual rolling update of {what}"),
                        Duration::from_secs(180),
                        |env| {
                            let uid = env.jsonpath("default", "pod/users-0", "{.metadata.uid}")?;
                            Ok(!uid.is_empty() && uid != before && rolled(env)?)
                        },
                    )?;
                    let left = env.jsonpath(
                        "default",
                        kind,
                        "{.metadata.annotations.oxbow\\.dev/manual-rolling-update}",
                    );
                    ensure!(
                        left.as_deref().map(str::is_empty).unwrap_or(true),
                        "the request is gone from {kind}: {left:?}"
                    );
                }
                let events = env.kubectl(&[
                    "-n",
                    "default",
                    "get",
                    "events",
                    "--field-selector",
                    "involvedObject.name=users",
                    "-o",
                    "jsonpath={range .items[*]}{.reason}: {.note}{.message}{\"\\n\"}{end}",
                ])?;
                let manual = events
                    .lines()
                    .filter(|line| {
                        line.starts_with("RestartingBroker")
                            && line.contains("as oxbow.dev/manual-rolling-update asked")
                    })
                    .count();
                ensure!(manual >= 1, "events of the manual restarts: {events}");
                Ok(())
            })
        },
    );
}
