//! The operator on a real Kubernetes control plane, with real brokers in its pods.
//!
//! Each test runs in a sandbox of its own (a private network and mount namespace, see
//! `oxbow_e2e::kube`): etcd, kube-apiserver with RBAC, kube-controller-manager and
//! kube-scheduler built from the Kubernetes sources by `scripts/k8s-tools.sh`; the node agent
//! running every pod as processes of the checkout's binaries; the operator installed with
//! `helm install` and running as the chart's ServiceAccount. Needs root, and
//! `cargo build --workspace --bins` first.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use oxbow_e2e::cluster::{produce_acknowledged, read_all};
use oxbow_e2e::harness;
use oxbow_e2e::kube::env::{
    python_example_source, repository, run_python_example, runtime, sandboxed, EnvOptions, KubeEnv,
};

/// Flow 1: `helm install`, then `kubectl apply -f examples/kafkacluster.yaml` gives three
/// Ready brokers with the status and printer columns a user reads, and the beginner's Python
/// examples produce and consume through the bootstrap Service's name.
#[test]
fn example_cluster_becomes_ready_and_serves_the_python_examples() {
    sandboxed(
        "example_cluster_becomes_ready_and_serves_the_python_examples",
        || {
            runtime().block_on(async {
                let env = KubeEnv::start(EnvOptions::default()).await?;
                let example =
                    std::fs::read_to_string(repository().join("examples/kafkacluster.yaml"))?;
                env.apply(&example)?;
                env.wait_cluster_ready("default", "main", 3, Duration::from_secs(240))?;

                let bootstrap =
                    env.jsonpath("default", "kafkacluster/main", "{.status.bootstrap}")?;
                assert_eq!(bootstrap, "main-bootstrap.default.svc:9092");
                let table = env.kubectl(&["get", "kafkaclusters"])?;
                let mut lines = table.lines();
                let header: Vec<&str> = lines
                    .next()
                    .context("a header")?
                    .split_whitespace()
                    .collect();
                assert_eq!(
                    header,
                    ["NAME", "REPLICAS", "READY", "STATUS", "BOOTSTRAP", "AGE"],
                    "{table}"
                );
                let row: Vec<&str> = lines.next().context("a row")?.split_whitespace().collect();
                assert_eq!(&row[..3], ["main", "3", "3"], "{table}");
                assert_eq!(row[4], bootstrap, "{table}");
                // Each broker's rack is its node's zone, read by the init container under the
                // cluster's own ServiceAccount.
                let zones = env.kubectl(&[
                    "get",
                    "pods",
                    "-l",
                    "app.kubernetes.io/instance=main",
                    "-o",
                    "jsonpath={.items[*].spec.nodeName}",
                ])?;
                assert_eq!(zones.split_whitespace().count(), 3, "{zones}");

                // hello_consumer starts at the end of the topic: it runs while hello_producer sends.
                let mut consumer = Command::new("python3")
                    .args([
                        "-u",
                        "-c",
                        &python_example_source("hello_consumer.py", &bootstrap)?,
                    ])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .spawn()?;
                let (lines_tx, lines_rx) = mpsc::channel();
                let stdout = consumer.stdout.take().context("the consumer's stdout")?;
                std::thread::spawn(move || {
                    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                        if lines_tx.send(line).is_err() {
                            break;
                        }
                    }
                });
                let deadline = Instant::now() + Duration::from_secs(90);
                let mut printed = false;
                while !printed && Instant::now() < deadline {
                    run_python_example("hello_producer.py", &bootstrap)?;
                    let until = Instant::now() + Duration::from_secs(5);
                    while let Ok(line) =
                        lines_rx.recv_timeout(until.saturating_duration_since(Instant::now()))
                    {
                        if line.contains("Hello world") {
                            printed = true;
                            break;
                        }
                    }
                }
                let _ = consumer.kill();
                let _ = consumer.wait();
                assert!(printed, "hello_consumer.py never printed Hello world");

                let delivered = run_python_example("confluent_producer.py", &bootstrap)?;
                assert_eq!(delivered.matches("Delivered ").count(), 5, "{delivered}");
                assert!(!delivered.contains("Delivery failed"), "{delivered}");

                // The quorum runs on mutual TLS: a broker's controller port accepts a
                // connection but answers a plaintext request (DescribeQuorum in the controller
                // transport's framing) with nothing the quorum says.
                let controller = "main-0.main-brokers.default.svc.cluster.local:9093";
                let mut plain = std::net::TcpStream::connect(controller)
                    .with_context(|| format!("connecting to {controller}"))?;
                plain.set_read_timeout(Some(Duration::from_secs(10)))?;
                let body = br#""DescribeQuorum""#;
                plain.write_all(&u32::try_from(body.len())?.to_be_bytes())?;
                plain.write_all(body)?;
                let mut received = Vec::new();
                let _ = plain.read_to_end(&mut received);
                let received = String::from_utf8_lossy(&received);
                assert!(
                    !received.contains("DescribeQuorum"),
                    "a plaintext request to the controller port was answered: {received}"
                );
                Ok(())
            })
        },
    );
}

/// Whether `kubectl get` finds nothing of `kinds` with the cluster's instance label.
fn owned_objects(env: &KubeEnv, kinds: &str) -> anyhow::Result<String> {
    env.kubectl(&[
        "-n",
        "default",
        "get",
        kinds,
        "-l",
        "app.kubernetes.io/instance=main",
        "-o",
        "name",
    ])
}

/// Flows 5 and 7: a pod deleted by hand comes back with its data (its claim outlives it), the
/// volumes grow when spec.storage.size does (refused while their StorageClass does not allow
/// expansion) without a broker restart or a lost record, and deleting the KafkaCluster removes everything it owned through the real garbage collector,
/// the ClusterRoleBinding (cluster-scoped, so not owned) behind the cluster's finalizer, while
/// the volumes stay (`deleteClaim: false`).
#[test]
fn a_deleted_pod_keeps_its_data_volumes_grow_and_deleting_the_cluster_removes_what_it_owned() {
    sandboxed(
        "a_deleted_pod_keeps_its_data_volumes_grow_and_deleting_the_cluster_removes_what_it_owned",
        || {
            runtime().block_on(async {
                let env = KubeEnv::start(EnvOptions::default()).await?;
                let example =
                    std::fs::read_to_string(repository().join("examples/kafkacluster.yaml"))?;
                env.apply(&example)?;
                env.wait_cluster_ready("default", "main", 3, Duration::from_secs(240))?;
                let bootstrap =
                    env.jsonpath("default", "kafkacluster/main", "{.status.bootstrap}")?;

                let delivered = run_python_example("confluent_producer.py", &bootstrap)?;
                assert_eq!(delivered.matches("Delivered ").count(), 5, "{delivered}");
                let claim_before = env.jsonpath("default", "pvc/data-main-1", "{.spec.volumeName}")?;
                let uid_before = env.jsonpath("default", "pod/main-1", "{.metadata.uid}")?;
                env.kubectl(&["-n", "default", "delete", "pod", "main-1", "--wait=true"])?;
                env.wait("main-1 to come back", Duration::from_secs(180), |env| {
                    let uid = env.jsonpath("default", "pod/main-1", "{.metadata.uid}").unwrap_or_default();
                    let ready = env.jsonpath("default", "pod/main-1", "{.status.conditions[?(@.type==\"Ready\")].status}")
                        .unwrap_or_default();
                    Ok(!uid.is_empty() && uid != uid_before && ready == "True")
                })?;
                env.wait_cluster_ready("default", "main", 3, Duration::from_secs(180))?;
                assert_eq!(
                    env.jsonpath("default", "pvc/data-main-1", "{.spec.volumeName}")?,
                    claim_before,
                    "the new pod has the old pod's volume"
                );
                let consumer = format!(
                    "from confluent_kafka import Consumer, TopicPartition\n\
                     c = Consumer({{'bootstrap.servers': '{bootstrap}', 'group.id': 'check', 'enable.auto.commit': False}})\n\
                     md = c.list_topics('topic_1', timeout=30)\n\
                     c.assign([TopicPartition('topic_1', p, 0) for p in md.topics['topic_1'].partitions])\n\
                     seen = set()\n\
                     import time\n\
                     end = time.time() + 60\n\
                     while len(seen) < 5 and time.time() < end:\n    \
                         m = c.poll(1)\n    \
                         if m is not None and m.error() is None: seen.add(m.value().decode())\n\
                     print(sorted(seen))\n"
                );
                let read_back = |when: &str| -> anyhow::Result<()> {
                    let output = Command::new("python3").args(["-c", &consumer]).output()?;
                    let read = String::from_utf8_lossy(&output.stdout).into_owned();
                    assert!(
                        read.contains("'message 0', 'message 1', 'message 2', 'message 3', 'message 4'"),
                        "{when}: {read}{}",
                        String::from_utf8_lossy(&output.stderr)
                    );
                    Ok(())
                };
                read_back("after the pod came back")?;

                // Volume growth: refused while the class does not allow expansion, then the
                // claims grow in place, no broker restarts and nothing is lost.
                let pods_before = env.kubectl(&["-n", "default", "get", "pods", "-l", "app.kubernetes.io/instance=main", "-o", "jsonpath={.items[*].metadata.uid}"])?;
                let sts_before = env.jsonpath("default", "statefulset/main", "{.metadata.uid}")?;
                let expansion = |allowed: bool| {
                    env.kubectl(&["patch", "storageclass", "oxbow-local", "--type=merge", "-p", &format!("{{\"allowVolumeExpansion\":{allowed}}}")])
                };
                expansion(false)?;
                env.kubectl(&["-n", "default", "patch", "kafkacluster", "main", "--type=merge", "-p", "{\"spec\":{\"storage\":{\"size\":\"20Gi\"}}}"])?;
                env.wait("the growth refused", Duration::from_secs(60), |env| {
                    let message = env.jsonpath("default", "kafkacluster/main", "{.status.conditions[?(@.type==\"Degraded\")].message}")?;
                    Ok(message.contains("StorageClass oxbow-local of claim data-main-0 does not allow volume expansion"))
                })?;
                assert_eq!(env.jsonpath("default", "pvc/data-main-0", "{.spec.resources.requests.storage}")?, "10Gi");
                expansion(true)?;
                env.wait("every claim grown to 20Gi", Duration::from_secs(90), |env| {
                    let grown = (0..3).try_fold(true, |all, n| {
                        let claim = format!("pvc/data-main-{n}");
                        Ok::<_, anyhow::Error>(all && env.jsonpath("default", &claim, "{.status.capacity.storage}")? == "20Gi")
                    })?;
                    let template = env.jsonpath("default", "statefulset/main", "{.spec.volumeClaimTemplates[0].spec.resources.requests.storage}")?;
                    Ok(grown && template == "20Gi")
                })?;
                env.wait_cluster_ready("default", "main", 3, Duration::from_secs(120))?;
                let sts_after = env.jsonpath("default", "statefulset/main", "{.metadata.uid}")?;
                assert_ne!(sts_after, sts_before, "the StatefulSet was made again");
                let pods_after = env.kubectl(&["-n", "default", "get", "pods", "-l", "app.kubernetes.io/instance=main", "-o", "jsonpath={.items[*].metadata.uid}"])?;
                assert_eq!(pods_after, pods_before, "growing the volumes restarted a broker");
                env.wait("the pods adopted by the new StatefulSet", Duration::from_secs(60), |env| {
                    let owners = env.kubectl(&["-n", "default", "get", "pods", "-l", "app.kubernetes.io/instance=main", "-o", "jsonpath={.items[*].metadata.ownerReferences[0].uid}"])?;
                    Ok(owners.split_whitespace().count() == 3 && owners.split_whitespace().all(|o| o == sts_after))
                })?;
                let events = events_about(&env, "main")?;
                assert!(
                    events.iter().any(|(_, reason, note)| reason == "VolumesGrowing" && note.contains("from 10Gi to 20Gi")),
                    "{events:?}"
                );
                read_back("after the volumes grew")?;

                // A class that grows filesystems only at the next mount: the claims wait
                // (FileSystemResizePending), and each broker is restarted once, through the roll.
                let restarts = |events: &[(String, String, String)]| {
                    events.iter().filter(|(_, reason, _)| reason == "RestartingBroker").count()
                };
                let restarts_before = restarts(&events);
                env.kubectl(&["annotate", "storageclass", "oxbow-local", "oxbow.dev/offline-expansion=true"])?;
                env.kubectl(&["-n", "default", "patch", "kafkacluster", "main", "--type=merge", "-p", "{\"spec\":{\"storage\":{\"size\":\"30Gi\"}}}"])?;
                env.wait("every filesystem grown to 30Gi at its broker's restart", Duration::from_secs(300), |env| {
                    (0..3).try_fold(true, |all, n| {
                        let claim = format!("pvc/data-main-{n}");
                        let capacity = env.jsonpath("default", &claim, "{.status.capacity.storage}")?;
                        let conditions = env.jsonpath("default", &claim, "{.status.conditions[*].type}")?;
                        Ok(all && capacity == "30Gi" && !conditions.contains("FileSystemResizePending"))
                    })
                })?;
                env.wait_cluster_ready("default", "main", 3, Duration::from_secs(180))?;
                let pods_restarted = env.kubectl(&["-n", "default", "get", "pods", "-l", "app.kubernetes.io/instance=main", "-o", "jsonpath={.items[*].metadata.uid}"])?;
                let kept: Vec<&str> = pods_restarted.split_whitespace().filter(|uid| pods_after.contains(*uid)).collect();
                assert!(kept.is_empty(), "pods not restarted for their filesystems: {kept:?}");
                let events = events_about(&env, "main")?;
                assert!(events.iter().any(|(_, reason, _)| reason == "FileSystemResizePending"), "{events:?}");
                assert_eq!(restarts(&events) - restarts_before, 3, "one restart per broker: {events:?}");
                env.kubectl(&["annotate", "storageclass", "oxbow-local", "oxbow.dev/offline-expansion-"])?;
                read_back("after the filesystems grew")?;

                let binding = env.kubectl(&["get", "clusterrolebindings", "-o", "name"])?;
                let binding: Vec<&str> = binding.lines().filter(|l| l.contains("main")).collect();
                assert_eq!(binding.len(), 1, "one ClusterRoleBinding for the rack: {binding:?}");
                let binding = binding[0].to_string();
                env.kubectl(&["-n", "default", "delete", "kafkacluster", "main", "--wait=true", "--timeout=120s"])?;
                env.wait("everything the cluster owned to be gone", Duration::from_secs(120), |env| {
                    let left = owned_objects(env, "statefulsets,services,configmaps,poddisruptionbudgets,pods")?;
                    let bindings = env.kubectl(&["get", "clusterrolebindings", "-o", "name"])?;
                    Ok(left.trim().is_empty() && !bindings.lines().any(|l| l == binding))
                })?;
                let claims = env.kubectl(&["-n", "default", "get", "pvc", "-o", "name"])?;
                assert_eq!(claims.lines().count(), 3, "deleteClaim: false keeps the volumes: {claims}");
                env.wait("the deleted cluster's metrics series gone", Duration::from_secs(30), |env| {
                    let metrics = env.operator_metrics()?;
                    Ok(!metrics.lines().any(|l| l.contains("kafkacluster") && l.contains("name=\"main\""))
                        && !metrics.lines().any(|l| l.starts_with("oxbow_operator_broker_replicas{") && l.contains("name=\"main\"")))
                })?;
                Ok(())
            })
        },
    );
}

/// Flow 2: a KafkaTopic applied together with its cluster becomes Ready once the brokers are
/// up; growing its partitions, a setting changed behind the operator's back (corrected at the
/// next resync, 5 s here), replication factor 3 → 2 → 3 keeping every acknowledged record,
/// and deletion through the finalizer with `deletionPolicy: Delete` and `Retain`, each checked
/// on the brokers.
#[test]
fn topics_are_created_grown_corrected_re_replicated_and_deleted() {
    use oxbow_operator::topic::admin::{ConfigChange, KafkaAdmin, TopicAdmin as _};
    sandboxed(
        "topics_are_created_grown_corrected_re_replicated_and_deleted",
        || {
            runtime().block_on(async {
                let options = EnvOptions {
                    helm_values: vec!["resyncIntervalSeconds=5".to_string()],
                    ..EnvOptions::default()
                };
                let env = KubeEnv::start(options).await?;
                let cluster =
                    std::fs::read_to_string(repository().join("examples/kafkacluster.yaml"))?;
                let orders =
                    std::fs::read_to_string(repository().join("examples/kafkatopic-orders.yaml"))?;
                env.apply(&format!("{cluster}\n---\n{orders}"))?;
                let topic_ready = |env: &KubeEnv, name: &str| {
                    env.jsonpath(
                        "default",
                        &format!("kafkatopic/{name}"),
                        "{.status.conditions[?(@.type==\"Ready\")].status}",
                    )
                    .map(|s| s == "True")
                };
                env.wait(
                    "orders Ready, applied with its cluster",
                    Duration::from_secs(240),
                    |env| topic_ready(env, "orders"),
                )?;
                let bootstrap =
                    env.jsonpath("default", "kafkacluster/main", "{.status.bootstrap}")?;
                let admin = KafkaAdmin::default();
                let described = admin
                    .describe(&bootstrap, "orders")
                    .await?
                    .context("orders exists")?;
                assert_eq!((described.partitions, described.replicas), (6, 3));
                assert_eq!(
                    described.overrides.get("retention.ms").map(String::as_str),
                    Some("604800000")
                );

                env.kubectl(&[
                    "-n",
                    "default",
                    "patch",
                    "kafkatopic",
                    "orders",
                    "--type=merge",
                    "-p",
                    r#"{"spec":{"partitions":8}}"#,
                ])?;
                let deadline = Instant::now() + Duration::from_secs(60);
                while admin
                    .describe(&bootstrap, "orders")
                    .await?
                    .map(|d| d.partitions)
                    != Some(8)
                {
                    if Instant::now() > deadline {
                        env.dump();
                        bail!("orders never grew to 8 partitions");
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }

                admin
                    .alter_configs(
                        &bootstrap,
                        "orders",
                        &[ConfigChange::Set(
                            "retention.ms".to_string(),
                            "1000".to_string(),
                        )],
                    )
                    .await?;
                let changed = admin
                    .describe(&bootstrap, "orders")
                    .await?
                    .context("orders exists")?;
                assert_eq!(
                    changed.overrides.get("retention.ms").map(String::as_str),
                    Some("1000")
                );
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let now = admin
                        .describe(&bootstrap, "orders")
                        .await?
                        .context("orders exists")?;
                    if now.overrides.get("retention.ms").map(String::as_str) == Some("604800000") {
                        break;
                    }
                    if Instant::now() > deadline {
                        env.dump();
                        bail!(
                            "the changed retention.ms was never corrected: {:?}",
                            now.overrides
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }

                let values: Vec<String> = (0..1000).map(|n| format!("order-{n}")).collect();
                let acknowledged =
                    produce_acknowledged(harness::client_config(&bootstrap), "orders", 8, &values)?;
                for replicas in [2, 3] {
                    env.kubectl(&[
                        "-n",
                        "default",
                        "patch",
                        "kafkatopic",
                        "orders",
                        "--type=merge",
                        "-p",
                        &format!(r#"{{"spec":{{"replicas":{replicas}}}}}"#),
                    ])?;
                    let deadline = Instant::now() + Duration::from_secs(180);
                    loop {
                        let now = admin
                            .describe(&bootstrap, "orders")
                            .await?
                            .context("orders exists")?;
                        if (now.replicas, now.min_replicas, now.reassigning)
                            == (replicas, replicas, 0)
                        {
                            break;
                        }
                        if Instant::now() > deadline {
                            env.dump();
                            bail!("orders never got {replicas} replicas per partition: {now:?}");
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    env.wait(
                        &format!("orders Ready with {replicas} replicas"),
                        Duration::from_secs(60),
                        |env| topic_ready(env, "orders"),
                    )?;
                    let stored: std::collections::BTreeSet<String> =
                        read_all(harness::client_config(&bootstrap), "orders", 8)?
                            .into_iter()
                            .map(|(_, _, value)| value)
                            .collect();
                    let lost = acknowledged.iter().filter(|v| !stored.contains(*v)).count();
                    assert_eq!(
                        lost, 0,
                        "acknowledged records lost going to {replicas} replicas"
                    );
                }

                let named =
                    std::fs::read_to_string(repository().join("examples/kafkatopic-named.yaml"))?;
                env.apply(&format!("{named}  deletionPolicy: Retain\n"))?;
                env.wait("legacy-events Ready", Duration::from_secs(60), |env| {
                    topic_ready(env, "legacy-events")
                })?;
                env.kubectl(&[
                    "-n",
                    "default",
                    "delete",
                    "kafkatopic",
                    "legacy-events",
                    "--wait=true",
                    "--timeout=60s",
                ])?;
                assert!(
                    admin
                        .describe(&bootstrap, "Legacy_Events.v1")
                        .await?
                        .is_some(),
                    "Retain keeps the topic"
                );

                env.kubectl(&[
                    "-n",
                    "default",
                    "delete",
                    "kafkatopic",
                    "orders",
                    "--wait=true",
                    "--timeout=60s",
                ])?;
                assert!(
                    admin.describe(&bootstrap, "orders").await?.is_none(),
                    "Delete removes the topic"
                );
                Ok(())
            })
        },
    );
}

/// A one-broker KafkaCluster named `name` with `extra` appended to its spec.
fn small_cluster(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: oxbow.dev/v1alpha1\nkind: KafkaCluster\nmetadata:\n  name: {name}\nspec:\n  replicas: 1\n  storage:\n    size: 1Gi\n{extra}"
    )
}

/// The `Degraded` condition of KafkaCluster `name`: (status, reason, message).
fn degraded(env: &KubeEnv, kind: &str, name: &str) -> anyhow::Result<(String, String, String)> {
    let path = |field: &str| format!("{{.status.conditions[?(@.type==\"Degraded\")].{field}}}");
    let object = format!("{kind}/{name}");
    Ok((
        env.jsonpath("default", &object, &path("status"))?,
        env.jsonpath("default", &object, &path("reason"))?,
        env.jsonpath("default", &object, &path("message"))?,
    ))
}

/// The events about `name` in `default`: (type, reason, note).
fn events_about(env: &KubeEnv, name: &str) -> anyhow::Result<Vec<(String, String, String)>> {
    let list: serde_json::Value = serde_json::from_str(&env.kubectl(&[
        "-n",
        "default",
        "get",
        "events.events.k8s.io",
        "-o",
        "json",
    ])?)?;
    Ok(list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["regarding"]["name"] == name)
        .map(|e| {
            let text = |field: &str| e[field].as_str().unwrap_or_default().to_string();
            (text("type"), text("reason"), text("note"))
        })
        .collect())
}

/// The operator's count of failed reconciliations with error kind `error`, from its /metrics.
fn operator_failures(env: &KubeEnv, error: &str) -> anyhow::Result<f64> {
    Ok(env
        .operator_metrics()?
        .lines()
        .filter(|l| {
            l.starts_with("oxbow_operator_reconcile_failures_total")
                && l.contains(&format!("error=\"{error}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// Flow 8: a spec the schema refuses is refused by kubectl with the schema's message; one the
/// operator refuses, an object the API server refuses (422), an object of the same name that
/// someone else made (a conflict) and a permission the operator lacks (403) each reach the resource's status and one Warning event with a clear message,
/// are retried with back-off rather than in a storm, and a restored permission lets the
/// cluster come up. Every event note fits the API server's 1 KiB.
#[test]
fn invalid_specs_and_api_errors_reach_status_and_events() {
    sandboxed(
        "invalid_specs_and_api_errors_reach_status_and_events",
        || {
            runtime().block_on(async {
                let env = KubeEnv::start(EnvOptions::default()).await?;

                let refused = env
                    .apply(&small_cluster("empty", "").replace("replicas: 1", "replicas: 0"))
                    .expect_err("the schema refuses zero brokers");
                assert!(
                    refused.to_string().contains("a cluster has at least one broker"),
                    "{refused:#}"
                );

                env.apply(&small_cluster("owned", "  config:\n    process.roles: broker\n"))?;
                env.wait("owned to be refused", Duration::from_secs(60), |env| {
                    Ok(degraded(env, "kafkacluster", "owned")?.1 == "InvalidSpec")
                })?;
                let (_, _, message) = degraded(&env, "kafkacluster", "owned")?;
                assert!(
                    message.contains("spec.config.process.roles is set by the operator"),
                    "{message}"
                );
                assert!(
                    env.kubectl(&["-n", "default", "get", "statefulsets", "-o", "name"])?
                        .trim()
                        .is_empty(),
                    "nothing is built from an invalid spec"
                );

                // Kubernetes refuses the StatefulSet (422): a toleration with operator Exists
                // may not name a value, which the CRD's schema cannot tell.
                env.apply(&small_cluster(
                    "tolerant",
                    "  podTemplate:\n    tolerations:\n      - key: dedicated\n        operator: Exists\n        value: kafka\n",
                ))?;
                env.wait("tolerant's 422 in its status", Duration::from_secs(60), |env| {
                    Ok(degraded(env, "kafkacluster", "tolerant")?.1 == "ApplyFailed")
                })?;
                let (_, _, message) = degraded(&env, "kafkacluster", "tolerant")?;
                assert!(
                    message.contains("StatefulSet default/tolerant")
                        && message.contains("tolerations")
                        && message.contains("422"),
                    "{message}"
                );

                // A ConfigMap of the same name made by someone else is not taken over.
                env.kubectl(&[
                    "-n",
                    "default",
                    "create",
                    "configmap",
                    "taken-config",
                    "--from-literal=owner=someone-else",
                ])?;
                env.apply(&small_cluster("taken", ""))?;
                env.wait("taken's conflict in its status", Duration::from_secs(60), |env| {
                    Ok(degraded(env, "kafkacluster", "taken")?.1 == "ResourceConflict")
                })?;
                let (_, _, message) = degraded(&env, "kafkacluster", "taken")?;
                assert!(
                    message.contains("ConfigMap default/taken-config already exists"),
                    "{message}"
                );
                assert_eq!(
                    env.jsonpath("default", "configmap/taken-config", "{.data}")?,
                    r#"{"owner":"someone-else"}"#,
                    "left as it was"
                );

                // Take the permission to write PodDisruptionBudgets away (403).
                let role: serde_json::Value =
                    serde_json::from_str(&env.kubectl(&["get", "clusterrole", "oxbow", "-o", "json"])?)?;
                let rule = role["rules"]
                    .as_array()
                    .context("rules")?
                    .iter()
                    .position(|r| r["resources"][0] == "poddisruptionbudgets")
                    .context("a rule for PodDisruptionBudgets")?;
                let verbs = role["rules"][rule]["verbs"].clone();
                let set_verbs = |verbs: &serde_json::Value| {
                    env.kubectl(&[
                        "patch",
                        "clusterrole",
                        "oxbow",
                        "--type=json",
                        "-p",
                        &serde_json::json!([{"op": "replace", "path": format!("/rules/{rule}/verbs"), "value": verbs}])
                            .to_string(),
                    ])
                };
                set_verbs(&serde_json::json!(["get", "list", "watch"]))?;
                env.apply(&small_cluster("guarded", ""))?;
                env.wait("guarded's 403 in its status", Duration::from_secs(60), |env| {
                    Ok(degraded(env, "kafkacluster", "guarded")?.1 == "ApplyFailed")
                })?;
                let (_, _, message) = degraded(&env, "kafkacluster", "guarded")?;
                assert!(
                    message.contains("PodDisruptionBudget default/guarded")
                        && message.contains("forbidden"),
                    "{message}"
                );
                assert_eq!(
                    env.jsonpath("default", "kafkacluster/guarded", "{.status.conditions[?(@.type==\"Ready\")].status}")?,
                    "False"
                );

                // Back-off, not a storm: two failing clusters over 30 s.
                let before = operator_failures(&env, "apply")?;
                std::thread::sleep(Duration::from_secs(30));
                let retries = operator_failures(&env, "apply")? - before;
                assert!(
                    (1.0..=12.0).contains(&retries),
                    "{retries} failed reconciliations of two clusters in 30 s"
                );
                for name in ["owned", "tolerant", "taken", "guarded"] {
                    let warnings: Vec<_> = events_about(&env, name)?
                        .into_iter()
                        .filter(|(type_, _, _)| type_ == "Warning")
                        .collect();
                    // One Warning per problem, never one per retry: its own problem, and for
                    // a cluster that retried after the PodDisruptionBudget permission was taken
                    // away, that one too.
                    let distinct: std::collections::BTreeSet<_> = warnings.iter().collect();
                    assert!(
                        (1..=2).contains(&warnings.len()) && distinct.len() == warnings.len(),
                        "one Warning per problem about {name}: {warnings:?}"
                    );
                }

                set_verbs(&verbs)?;
                env.wait_cluster_ready("default", "guarded", 1, Duration::from_secs(240))?;
                assert_eq!(degraded(&env, "kafkacluster", "guarded")?.0, "False");

                let all = events_about(&env, "owned")?
                    .into_iter()
                    .chain(events_about(&env, "tolerant")?)
                    .chain(events_about(&env, "taken")?)
                    .chain(events_about(&env, "guarded")?);
                for (_, reason, note) in all {
                    assert!(note.len() <= 1024, "{reason}: {} bytes", note.len());
                }
                Ok(())
            })
        },
    );
}

/// A KafkaTopic `name` of cluster `cluster` with one partition and one replica.
fn small_topic(name: &str, cluster: &str) -> String {
    format!(
        "apiVersion: oxbow.dev/v1alpha1\nkind: KafkaTopic\nmetadata:\n  name: {name}\nspec:\n  clusterRef:\n    name: {cluster}\n  partitions: 1\n  replicas: 1\n"
    )
}

/// Every container log the node agent keeps, concatenated.
fn container_logs(env: &KubeEnv) -> String {
    let mut text = String::new();
    let mut dirs = vec![env.state_dir.join("pods")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "log") {
                text.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }
    text
}

/// Bug 7: brokers whose pods are ready but which the operator cannot reach (its pod's routes
/// to Services dropped) make the cluster not Ready with the reason, logged at warn; a topic
/// deletion that cannot be carried out says so in the topic's status and a Warning event, a
/// topic applied meanwhile waits visibly; with the route back the deletion completes and the
/// new topic is created.
#[test]
fn unreachable_brokers_are_visible_in_status_events_and_logs() {
    use oxbow_operator::topic::admin::{KafkaAdmin, TopicAdmin as _};
    sandboxed(
        "unreachable_brokers_are_visible_in_status_events_and_logs",
        || {
            runtime().block_on(async {
                let options = EnvOptions {
                    helm_values: vec!["resyncIntervalSeconds=5".to_string()],
                    ..EnvOptions::default()
                };
                let env = KubeEnv::start(options).await?;
                env.apply(&format!(
                    "{}\n---\n{}",
                    small_cluster("solo", ""),
                    small_topic("events", "solo")
                ))?;
                env.wait_cluster_ready("default", "solo", 1, Duration::from_secs(180))?;
                let topic_condition = |env: &KubeEnv, name: &str, type_: &str, field: &str| {
                    env.jsonpath(
                        "default",
                        &format!("kafkatopic/{name}"),
                        &format!("{{.status.conditions[?(@.type==\"{type_}\")].{field}}}"),
                    )
                };
                env.wait("events Ready", Duration::from_secs(60), |env| {
                    Ok(topic_condition(env, "events", "Ready", "status")? == "True")
                })?;
                let bootstrap =
                    env.jsonpath("default", "kafkacluster/solo", "{.status.bootstrap}")?;

                let operator = env.jsonpath(
                    oxbow_e2e::kube::env::OPERATOR_NAMESPACE,
                    "pods",
                    "{.items[0].metadata.uid}",
                )?;
                let route = |action: &str| -> anyhow::Result<()> {
                    let status = Command::new("ip")
                        .args(["netns", "exec", &format!("pod-{operator}")])
                        .args(["ip", "route", action, "blackhole", "10.96.0.0/16"])
                        .status()?;
                    anyhow::ensure!(status.success(), "ip route {action} in the operator's pod");
                    Ok(())
                };
                route("add")?;

                env.wait(
                    "solo not Ready: unreachable",
                    Duration::from_secs(90),
                    |env| {
                        let reason = env.jsonpath(
                            "default",
                            "kafkacluster/solo",
                            "{.status.conditions[?(@.type==\"Ready\")].reason}",
                        )?;
                        Ok(reason == "BrokersUnreachable")
                    },
                )?;
                let message = env.jsonpath(
                    "default",
                    "kafkacluster/solo",
                    "{.status.conditions[?(@.type==\"Ready\")].message}",
                )?;
                assert!(message.contains("cannot reach the brokers"), "{message}");
                assert!(
                    events_about(&env, "solo")?
                        .iter()
                        .any(|(type_, reason, note)| type_ == "Warning"
                            && reason == "NotReady"
                            && note.contains("cannot reach")),
                    "a NotReady event says why"
                );
                let logs = container_logs(&env);
                assert!(
                    logs.lines().any(|l| l.contains("WARN")
                        && l.contains(
                            "every broker's pod is ready but the brokers cannot be reached"
                        )),
                    "logged at warn"
                );

                env.kubectl(&[
                    "-n",
                    "default",
                    "delete",
                    "kafkatopic",
                    "events",
                    "--wait=false",
                ])?;
                env.wait(
                    "the stuck deletion in events' status",
                    Duration::from_secs(90),
                    |env| {
                        Ok(topic_condition(env, "events", "Degraded", "reason")?
                            == "DeletionFailed")
                    },
                )?;
                let message = topic_condition(&env, "events", "Degraded", "message")?;
                assert!(message.contains("the KafkaTopic waits for it"), "{message}");
                assert!(
                    events_about(&env, "events")?
                        .iter()
                        .any(|(type_, reason, _)| type_ == "Warning" && reason == "DeletionFailed"),
                    "a DeletionFailed event"
                );

                env.apply(&small_topic("late", "solo"))?;
                env.wait("late waiting, visibly", Duration::from_secs(90), |env| {
                    Ok(topic_condition(env, "late", "Reconciling", "reason")?
                        == "WaitingForBrokers")
                })?;
                let message = topic_condition(&env, "late", "Reconciling", "message")?;
                assert!(message.contains("cannot be reached"), "{message}");

                route("del")?;
                env.wait_cluster_ready("default", "solo", 1, Duration::from_secs(120))?;
                env.wait(
                    "late Ready and events gone",
                    Duration::from_secs(180),
                    |env| {
                        let gone = env
                            .kubectl(&["-n", "default", "get", "kafkatopics", "-o", "name"])?
                            .lines()
                            .all(|l| l != "kafkatopic.oxbow.dev/events");
                        Ok(gone && topic_condition(env, "late", "Ready", "status")? == "True")
                    },
                )?;
                let admin = KafkaAdmin::default();
                assert!(
                    admin.describe(&bootstrap, "events").await?.is_none(),
                    "the topic was deleted"
                );
                assert!(admin.describe(&bootstrap, "late").await?.is_some());
                Ok(())
            })
        },
    );
}
