//! The operator on a real Kubernetes control plane: TLS and SASL_SSL clusters serving
//! authenticated clients (flow 6, bug 1), a broker process killed inside its pod coming back
//! with its data (flow 5), and a storage change refused in the status while later changes still
//! apply (bug 3).
//!
//! Each test runs in a sandbox of its own, as `operator/tests/kubernetes.rs` describes. Needs
//! root, and `cargo build --workspace --bins` first.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use oxbow_e2e::harness::{
    client_config, consumer_config, future_producer, numbered_value, produce_numbered,
};
use oxbow_e2e::kube::env::{
    confluent_client, repository, runtime, sandboxed, EnvOptions, KubeEnv, OPERATOR_NAMESPACE,
};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};

/// A confluent-kafka (current librdkafka, with TLS and SASL) client run as
/// `confluent_client(CLIENT, <action>, <config>, <args..>)` (after the shared preamble). It prints one JSON object: `ok`, what
/// the action found, and every error librdkafka reported on the way (`errors`); librdkafka's
/// log (stderr) is added as `log`.
/// - `describe <timeout>`: the brokers' hosts from Metadata and their racks from
///   DescribeCluster;
/// - `produce-consume <topic> <count>`: creates the topic (3 partitions, 3 replicas), produces
///   `count` records with acks=all, and reads them back from the beginning.
const CLIENT: &str = r#"
admin = AdminClient(config)
if action == 'describe':
    try:
        md = admin.list_topics(timeout=float(sys.argv[3]))
        nodes = admin.describe_cluster(request_timeout=15).result().nodes
    except KafkaException as e:
        # Errors reach error_cb only when the client is polled.
        admin.poll(1)
        finish({'ok': False, 'error': str(e)})
    finish({'ok': True,
            'hosts': sorted('%s:%d' % (b.host, b.port) for b in md.brokers.values()),
            'racks': {str(n.id): n.rack for n in nodes}})

topic, count = sys.argv[3], int(sys.argv[4])
admin.create_topics([NewTopic(topic, 3, 3)], request_timeout=30)[topic].result()
delivered = []
producer = Producer(dict(config, acks='all'))
for i in range(count):
    producer.produce(topic, key=str(i), value='record-%d' % i,
                     on_delivery=lambda err, msg: delivered.append(err is None))
left = producer.flush(60)
consumer = Consumer(dict(config, **{'group.id': 'check', 'enable.auto.commit': False}))
partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
seen = set()
end = time.time() + 60
while len(seen) < count and time.time() < end:
    m = consumer.poll(1)
    if m is not None and m.error() is None:
        seen.add(m.value().decode())
consumer.close()
finish({'ok': True, 'delivered': delivered.count(True), 'unflushed': left,
        'consumed': len(seen & {'record-%d' % i for i in range(count)})})
"#;

fn python_client(action: &str, config: &Value, args: &[&str]) -> anyhow::Result<Value> {
    confluent_client(CLIENT, action, config, args)
}

/// A CA and one broker certificate for the pod and bootstrap names of `clusters` in the
/// `default` namespace, as a user would get them from cert-manager: (ca.crt, tls.crt, tls.key).
fn certificates(clusters: &[&str]) -> anyhow::Result<(String, String, String)> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "oxbow test CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let names = clusters
        .iter()
        .flat_map(|c| {
            [
                format!("*.{c}-brokers.default.svc.cluster.local"),
                format!("{c}-bootstrap.default.svc"),
                format!("{c}-bootstrap.default.svc.cluster.local"),
            ]
        })
        .collect::<Vec<_>>();
    let broker_key = KeyPair::generate()?;
    let broker = CertificateParams::new(names)?.signed_by(&broker_key, &ca, &ca_key)?;
    Ok((ca.pem(), broker.pem(), broker_key.serialize_pem()))
}

/// `examples/kafkacluster-sasl-ssl.yaml` as `name`, with `spec.rack` on the nodes' zones and a
/// second TLS listener, `TLS` on port 9095, without authentication (protocol SSL).
fn racked_variant(example: &str, name: &str) -> anyhow::Result<String> {
    let mut cluster: serde_yaml::Value = serde_yaml::from_str(example)?;
    cluster["metadata"]["name"] = name.into();
    let spec = &mut cluster["spec"];
    spec["rack"] = serde_yaml::from_str("topologyKey: topology.kubernetes.io/zone")?;
    let listeners = spec["listeners"]["additional"]
        .as_sequence_mut()
        .context("the example's additional listeners")?;
    let mut tls = listeners.first().context("the example's listener")?.clone();
    tls["name"] = "TLS".into();
    tls["port"] = 9095.into();
    tls["authentication"] = "none".into();
    listeners.push(tls);
    Ok(serde_yaml::to_string(&cluster)?)
}

/// The CA a client trusts, as a user reads it from the TLS Secret, written to `dir/ca.crt`.
fn ca_from_secret(env: &KubeEnv, secret: &str, dir: &Path) -> anyhow::Result<String> {
    let ca = env.kubectl(&[
        "-n",
        "default",
        "get",
        "secret",
        secret,
        "-o",
        r#"go-template={{index .data "ca.crt" | base64decode}}"#,
    ])?;
    ensure!(ca.contains("BEGIN CERTIFICATE"), "no CA in {secret}: {ca}");
    let path = dir.join("ca.crt");
    std::fs::write(&path, ca)?;
    Ok(path.display().to_string())
}

/// Flow 6 and bug 1: `examples/kafkacluster-sasl-ssl.yaml` as it is (TLS and SCRAM-SHA-512,
/// no `spec.rack`: the init container only builds the key store, and used to exit 2 on
/// `--node` without `--rack-label`) and a variant with `spec.rack` and a second, SSL-only
/// listener both become Ready. Clients that trust the CA from the TLS Secret produce and
/// consume with the admin's credentials from its Secret (and with none on the SSL listener);
/// a wrong password, no credentials, a client that does not trust the CA, and plaintext to a
/// TLS listener are all refused.
#[test]
fn tls_and_sasl_ssl_clusters_with_and_without_a_rack_serve_authenticated_clients_only() {
    sandboxed(
        "tls_and_sasl_ssl_clusters_with_and_without_a_rack_serve_authenticated_clients_only",
        || {
            runtime().block_on(async {
                let env = KubeEnv::start(EnvOptions::default()).await?;
                let dir = env.dir.path().join("client");
                std::fs::create_dir_all(&dir)?;
                let (ca, cert, key) = certificates(&["secure", "racked"])?;
                for (file, pem) in [("ca.pem", &ca), ("tls.crt", &cert), ("tls.key", &key)] {
                    std::fs::write(dir.join(file), pem)?;
                }
                let file = |name: &str| format!("--from-file={name}={}", dir.join(name).display());
                // As the example's header says, with ca.crt beside, as cert-manager writes it.
                env.kubectl(&[
                    "-n",
                    "default",
                    "create",
                    "secret",
                    "generic",
                    "secure-tls",
                    "--type=kubernetes.io/tls",
                    &file("tls.crt"),
                    &file("tls.key"),
                    &format!("--from-file=ca.crt={}", dir.join("ca.pem").display()),
                ])?;
                env.kubectl(&[
                    "-n",
                    "default",
                    "create",
                    "secret",
                    "generic",
                    "secure-admin",
                    "--from-literal=password=change-me",
                ])?;
                let example = std::fs::read_to_string(
                    repository().join("examples/kafkacluster-sasl-ssl.yaml"),
                )?;
                env.apply(&format!(
                    "{example}\n---\n{}",
                    racked_variant(&example, "racked")?
                ))?;
                env.wait_cluster_ready("default", "secure", 3, Duration::from_secs(240))?;
                env.wait_cluster_ready("default", "racked", 3, Duration::from_secs(120))?;

                // Bug 1: the init container of a cluster without a rack ran once, successfully.
                let init = env.jsonpath(
                    "default",
                    "pod/secure-0",
                    "{.status.initContainerStatuses[0].name} {.status.initContainerStatuses[0].restartCount} {.status.initContainerStatuses[0].state.terminated.exitCode}",
                )?;
                assert_eq!(init, "broker-init 0 0", "secure-0's init container");

                let ca_file = ca_from_secret(&env, "secure-tls", &dir)?;
                let password = env.kubectl(&[
                    "-n",
                    "default",
                    "get",
                    "secret",
                    "secure-admin",
                    "-o",
                    "go-template={{.data.password | base64decode}}",
                ])?;
                let sasl_ssl = |bootstrap: &str, password: &str| {
                    json!({
                        "bootstrap.servers": bootstrap,
                        "security.protocol": "SASL_SSL",
                        "ssl.ca.location": ca_file,
                        "sasl.mechanisms": "SCRAM-SHA-512",
                        "sasl.username": "admin",
                        "sasl.password": password,
                    })
                };
                let secure = "secure-bootstrap.default.svc:9094";
                let racked_sasl = "racked-bootstrap.default.svc:9094";
                let racked_ssl = "racked-bootstrap.default.svc:9095";

                // The clients that get in, each listener answering with its own addresses.
                let described = python_client("describe", &sasl_ssl(secure, &password), &["30"])?;
                assert_eq!(described["ok"], true, "{described}");
                assert_eq!(
                    described["hosts"],
                    json!((0..3)
                        .map(|i| format!("secure-{i}.secure-brokers.default.svc.cluster.local:9094"))
                        .collect::<Vec<_>>()),
                    "{described}"
                );
                assert_eq!(
                    described["racks"],
                    json!({"0": null, "1": null, "2": null}),
                    "{described}"
                );
                let racked_described =
                    python_client("describe", &sasl_ssl(racked_sasl, &password), &["30"])?;
                assert_eq!(racked_described["ok"], true, "{racked_described}");
                let mut racks: Vec<String> = racked_described["racks"]
                    .as_object()
                    .context("racks")?
                    .values()
                    .map(|r| r.as_str().unwrap_or("none").to_string())
                    .collect();
                racks.sort();
                assert_eq!(
                    racks,
                    ["zone-a", "zone-b", "zone-c"],
                    "one broker per zone: {racked_described}"
                );

                let moved = python_client(
                    "produce-consume",
                    &sasl_ssl(secure, &password),
                    &["payments", "200"],
                )?;
                assert_eq!(
                    (&moved["delivered"], &moved["consumed"]),
                    (&json!(200), &json!(200)),
                    "SASL_SSL without a rack: {moved}"
                );
                let ssl = json!({
                    "bootstrap.servers": racked_ssl,
                    "security.protocol": "SSL",
                    "ssl.ca.location": ca_file,
                });
                let moved = python_client("produce-consume", &ssl, &["invoices", "200"])?;
                assert_eq!(
                    (&moved["delivered"], &moved["consumed"]),
                    (&json!(200), &json!(200)),
                    "SSL with a rack: {moved}"
                );

                // The clients that do not, all tried at once (each waits out its timeout).
                let refused = [
                    ("a wrong password", sasl_ssl(secure, "wrong-password"), "Authentication failed"),
                    (
                        "a TLS client without credentials",
                        json!({"bootstrap.servers": secure, "security.protocol": "SSL", "ssl.ca.location": ca_file}),
                        // TLS is fine; the first request before SASL closes the connection.
                        "Disconnected: SSL connection closed by peer",
                    ),
                    (
                        "a client that does not trust the CA",
                        json!({
                            "bootstrap.servers": secure,
                            "security.protocol": "SASL_SSL",
                            "sasl.mechanisms": "SCRAM-SHA-512",
                            "sasl.username": "admin",
                            "sasl.password": password,
                        }),
                        "certificate verify failed",
                    ),
                    ("plaintext to a SASL_SSL listener", json!({"bootstrap.servers": secure}), "in state APIVERSION_QUERY"),
                    ("plaintext to an SSL listener", json!({"bootstrap.servers": racked_ssl}), "in state APIVERSION_QUERY"),
                ];
                let tries: Vec<_> = refused
                    .iter()
                    .map(|(what, config, _)| {
                        let config = config.clone();
                        let what = what.to_string();
                        std::thread::spawn(move || {
                            python_client("describe", &config, &["10"])
                                .with_context(|| what.clone())
                        })
                    })
                    .collect();
                for ((what, _, expected), attempt) in refused.iter().zip(tries) {
                    let outcome = attempt
                        .join()
                        .map_err(|_| anyhow::anyhow!("the client thread of {what} panicked"))??;
                    assert_eq!(outcome["ok"], false, "{what} got in: {outcome}");
                    let errors = outcome["errors"].as_array().into_iter().flatten();
                    let log = outcome["log"].as_str().unwrap_or_default().lines();
                    let reason = errors
                        .filter_map(Value::as_str)
                        .chain(log)
                        .find(|line| line.contains(expected))
                        .with_context(|| format!("{what}: expected an error with `{expected}`: {outcome}"))?;
                    eprintln!("{what}: refused: {reason}");
                }
                Ok(())
            })
        },
    );
}

/// The PIDs of the processes of `program` in the pod whose UID is `uid`, found through its
/// network namespace (the node agent names it `pod-<uid>`).
fn pod_processes(uid: &str, program: &str) -> anyhow::Result<Vec<String>> {
    let output = Command::new("ip")
        .args(["netns", "pids", &format!("pod-{uid}")])
        .output()?;
    ensure!(
        output.status.success(),
        "ip netns pids pod-{uid}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == program)
        })
        .map(str::to_string)
        .collect())
}

/// Reads `count` records of partition `partition` of `topic` from offset 0: (offset, value).
fn read_partition(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    count: usize,
) -> anyhow::Result<Vec<(i64, String)>> {
    let consumer: BaseConsumer = consumer_config(bootstrap, "after-the-kill").create()?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut read = Vec::new();
    while read.len() < count && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(message)) => read.push((
                message.offset(),
                String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned(),
            )),
            Some(Err(error)) => eprintln!("reading {topic}-{partition}: {error}"),
            None => {}
        }
    }
    Ok(read)
}

/// The operator's container log, as the node agent writes it.
fn operator_log(env: &KubeEnv) -> String {
    let mut text = String::new();
    if let Ok(pods) = std::fs::read_dir(env.state_dir.join("pods")) {
        for pod in pods.flatten() {
            if pod
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("{OPERATOR_NAMESPACE}_"))
            {
                text.push_str(
                    &std::fs::read_to_string(pod.path().join("operator.log")).unwrap_or_default(),
                );
            }
        }
    }
    text
}

fn status_condition(env: &KubeEnv, kind: &str, field: &str) -> anyhow::Result<String> {
    env.jsonpath(
        "default",
        "kafkacluster/main",
        &format!("{{.status.conditions[?(@.type==\"{kind}\")].{field}}}"),
    )
}

/// Flow 5 (the killed process) and bug 3. A broker process killed with SIGKILL inside its pod
/// is restarted by the node agent in the same pod (same UID, restartCount up, exit code 137)
/// with its data: the records produced with acks=all before, to a partition only that broker
/// holds and to one every broker replicates, are all read back, and the broker rejoins every
/// ISR. Then a smaller storage size is refused in the status (Degraded and Ready False with
/// reason StorageChangeRefused, a Warning event, the generation observed, the claim template
/// unchanged, no 422 from the API server), a later scale to four brokers is still applied, and
/// taking the size change back makes the cluster Ready again.
#[test]
fn a_killed_broker_keeps_its_data_and_a_storage_change_is_refused_while_scaling_still_applies() {
    sandboxed(
        "a_killed_broker_keeps_its_data_and_a_storage_change_is_refused_while_scaling_still_applies",
        || {
            runtime().block_on(async {
                let env = KubeEnv::start(EnvOptions::default()).await?;
                let example =
                    std::fs::read_to_string(repository().join("examples/kafkacluster.yaml"))?;
                env.apply(&example)?;
                env.wait_cluster_ready("default", "main", 3, Duration::from_secs(240))?;
                let bootstrap =
                    env.jsonpath("default", "kafkacluster/main", "{.status.bootstrap}")?;

                // `pinned` lives on broker 1 alone (so acks=all needs one in-sync replica, not
                // the cluster's two); `replicated` on all three.
                let admin: AdminClient<DefaultClientContext> =
                    client_config(&bootstrap).create()?;
                let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
                let pinned = NewTopic::new("pinned", 1, TopicReplication::Variable(&[&[1]]))
                    .set("min.insync.replicas", "1");
                let replicated = NewTopic::new("replicated", 3, TopicReplication::Fixed(3));
                for result in admin.create_topics([&pinned, &replicated], &options).await? {
                    result.map_err(|(topic, code)| anyhow::anyhow!("creating {topic}: {code}"))?;
                }
                let producer = future_producer(&bootstrap)?;
                let mut pinned_acks = Vec::new();
                produce_numbered(&producer, "pinned", 0..500, |_| Some(0), &mut pinned_acks)
                    .await?;
                let mut replicated_acks = Vec::new();
                produce_numbered(&producer, "replicated", 0..600, |s| Some((s % 3) as i32), &mut replicated_acks)
                    .await?;
                drop(producer);

                let uid = env.jsonpath("default", "pod/main-1", "{.metadata.uid}")?;
                let restarts_path =
                    "{.status.containerStatuses[?(@.name==\"broker\")].restartCount}";
                let restarts_before: u32 = env.jsonpath("default", "pod/main-1", restarts_path)?.parse()?;
                let pids = pod_processes(&uid, "oxbow-broker")?;
                ensure!(pids.len() == 1, "one broker process in main-1: {pids:?}");
                let status = Command::new("kill").args(["-KILL", &pids[0]]).status()?;
                ensure!(status.success(), "kill -KILL {}", pids[0]);
                let killed = Instant::now();

                env.wait("main-1's broker restarted in the same pod", Duration::from_secs(120), |env| {
                    let restarts: u32 = env.jsonpath("default", "pod/main-1", restarts_path)?.parse()?;
                    let ready = env.jsonpath("default", "pod/main-1", "{.status.conditions[?(@.type==\"Ready\")].status}")?;
                    Ok(restarts > restarts_before && ready == "True")
                })?;
                eprintln!("main-1 Ready again {:.1}s after the kill", killed.elapsed().as_secs_f64());
                assert_eq!(env.jsonpath("default", "pod/main-1", "{.metadata.uid}")?, uid, "the same pod");
                assert_eq!(
                    env.jsonpath("default", "pod/main-1", "{.status.containerStatuses[?(@.name==\"broker\")].lastState.terminated.exitCode}")?,
                    "137",
                    "killed by SIGKILL"
                );
                let new_pids = pod_processes(&uid, "oxbow-broker")?;
                ensure!(new_pids.len() == 1 && new_pids != pids, "a new broker process: {new_pids:?}");
                env.wait_cluster_ready("default", "main", 3, Duration::from_secs(60))?;

                let read = read_partition(&bootstrap, "pinned", 0, 500)?;
                let expected: Vec<(i64, String)> = pinned_acks
                    .iter()
                    .enumerate()
                    .map(|(seq, (_, offset))| (*offset, numbered_value(seq)))
                    .collect();
                assert_eq!(read, expected, "broker 1's own partition after the kill");
                for partition in 0..3 {
                    let expected: Vec<(i64, String)> = replicated_acks
                        .iter()
                        .enumerate()
                        .filter(|(_, (p, _))| *p == partition)
                        .map(|(seq, (_, offset))| (*offset, numbered_value(seq)))
                        .collect();
                    let read = read_partition(&bootstrap, "replicated", partition, expected.len())?;
                    assert_eq!(read, expected, "replicated-{partition} after the kill");
                }
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let metadata = admin.inner().fetch_metadata(Some("replicated"), Duration::from_secs(10))?;
                    let isrs: Vec<Vec<i32>> = metadata.topics()[0]
                        .partitions()
                        .iter()
                        .map(|p| p.isr().to_vec())
                        .collect();
                    if isrs.len() == 3 && isrs.iter().all(|isr| isr.contains(&1)) {
                        break;
                    }
                    if Instant::now() > deadline {
                        env.dump();
                        bail!("broker 1 never rejoined every ISR of replicated: {isrs:?}");
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }

                // Bug 3: a smaller size (volumes cannot shrink) is refused, in the status, once.
                let patch = |spec: &str| {
                    env.kubectl(&["-n", "default", "patch", "kafkacluster", "main", "--type=merge", "-p", spec])
                };
                let log_before = operator_log(&env).len();
                patch(r#"{"spec":{"storage":{"size":"5Gi"}}}"#)?;
                let generation = env.jsonpath("default", "kafkacluster/main", "{.metadata.generation}")?;
                env.wait("the storage change refused in the status", Duration::from_secs(60), |env| {
                    let observed = env.jsonpath("default", "kafkacluster/main", "{.status.observedGeneration}")?;
                    Ok(observed == generation
                        && status_condition(env, "Degraded", "reason")? == "StorageChangeRefused")
                })?;
                assert_eq!(status_condition(&env, "Degraded", "status")?, "True");
                assert_eq!(status_condition(&env, "Ready", "status")?, "False");
                assert_eq!(status_condition(&env, "Ready", "reason")?, "StorageChangeRefused");
                let message = status_condition(&env, "Degraded", "message")?;
                assert!(message.contains("spec.storage.size is 5Gi"), "{message}");
                assert_eq!(
                    env.jsonpath("default", "statefulset/main", "{.spec.volumeClaimTemplates[0].spec.resources.requests.storage}")?,
                    "10Gi",
                    "the claim template as it was"
                );
                env.wait("a StorageChangeRefused event", Duration::from_secs(30), |env| {
                    let events = env.kubectl(&[
                        "-n", "default", "get", "events",
                        "--field-selector", "involvedObject.kind=KafkaCluster,involvedObject.name=main,reason=StorageChangeRefused",
                        "-o", "jsonpath={.items[*].type}",
                    ])?;
                    Ok(events.split_whitespace().any(|t| t == "Warning"))
                })?;

                patch(r#"{"spec":{"replicas":4}}"#)?;
                let generation = env.jsonpath("default", "kafkacluster/main", "{.metadata.generation}")?;
                env.wait("the scale to 4 applied despite the refused storage change", Duration::from_secs(150), |env| {
                    let observed = env.jsonpath("default", "kafkacluster/main", "{.status.observedGeneration}")?;
                    let sts = env.jsonpath("default", "statefulset/main", "{.spec.replicas}")?;
                    let ready = env.jsonpath("default", "kafkacluster/main", "{.status.readyBrokers}")?;
                    Ok(observed == generation && sts == "4" && ready == "4")
                })?;
                assert_eq!(status_condition(&env, "Degraded", "reason")?, "StorageChangeRefused");

                patch(r#"{"spec":{"storage":{"size":"10Gi"}}}"#)?;
                env.wait_cluster_ready("default", "main", 4, Duration::from_secs(150))?;
                assert_eq!(status_condition(&env, "Degraded", "status")?, "False");
                let log = operator_log(&env);
                ensure!(!log.is_empty(), "no operator log under {}", env.state_dir.display());
                let since = log.get(log_before..).unwrap_or_default();
                assert!(
                    !since.contains("code: 422") && !since.contains("updates to statefulset spec"),
                    "the API server refused an apply: {since}"
                );
                let failures = env.kubectl(&[
                    "-n", "default", "get", "events",
                    "--field-selector", "involvedObject.kind=KafkaCluster,involvedObject.name=main,reason=ApplyFailed",
                    "-o", "name",
                ])?;
                assert_eq!(failures.trim(), "", "no apply failed");
                Ok(())
            })
        },
    );
}
