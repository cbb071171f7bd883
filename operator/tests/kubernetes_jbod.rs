//! Several volumes per broker (JBOD) on a real Kubernetes control plane, with real brokers in
//! their pods: `examples/kafkacluster-jbod.yaml` applied as it is gives each broker a claim
//! per volume, each mounted and one of its `log.dirs`; a topic's replicas are spread over both
//! directories of every broker (DescribeLogDirs, and the files on the volumes themselves); one
//! volume grows without a broker restart or the other volume changing; a third volume added
//! to the running brokers rolls them onto it, and new partitions fill it first; removing a
//! volume is refused in the status; every record reads back.
//!
//! Runs in a sandbox of its own, as `operator/tests/kubernetes.rs` describes. Needs root, and
//! `cargo build --workspace --bins` first.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Context as _};
use oxbow_e2e::kube::env::{python_json, repository, runtime, sandboxed, EnvOptions, KubeEnv};
use serde_json::Value;

/// A kafka-python client run as `python3 -c CLIENT <action> <bootstrap> <topic>`; it prints one
/// JSON object.
/// - `create`: six partitions of three replicas, and 600 records produced with acks=all
///   (`delivered`);
/// - `dirs`: DescribeLogDirs of every broker: by broker, by directory, the topic's partitions
///   there and their bytes;
/// - `count`: the records read back from the beginning.
const CLIENT: &str = r#"
import json, sys, time
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

action, bootstrap, topic = sys.argv[1], sys.argv[2], sys.argv[3]
if action == 'create':
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, 6, 3)])
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks='all')
    futures = [producer.send(topic, key=str(i).encode(), value=b'record-%d' % i) for i in range(600)]
    producer.flush(60)
    print(json.dumps({'delivered': sum(1 for f in futures if f.succeeded())}))
elif action == 'dirs':
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    brokers = {}
    for broker in admin.describe_log_dirs():
        dirs = {}
        for log_dir in broker['log_dirs']:
            assert log_dir['error_code'] == 0, log_dir
            partitions = [p for t in log_dir['topics'] if t['name'] == topic for p in t['partitions']]
            dirs[log_dir['log_dir']] = {
                'partitions': sorted(p['partition_index'] for p in partitions),
                'bytes': sum(p['partition_size'] for p in partitions),
            }
        brokers[str(broker['broker'])] = dirs
    print(json.dumps(brokers))
else:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    consumer.assign([TopicPartition(topic, p) for p in range(6)])
    consumer.seek_to_beginning()
    seen = set()
    end = time.time() + 60
    while len(seen) < 600 and time.time() < end:
        for records in consumer.poll(1000).values():
            seen.update(r.value for r in records)
    print(json.dumps({'count': len(seen)}))
"#;

const BOOTSTRAP: &str = "jbod-bootstrap.default.svc:9092";
const TOPIC: &str = "spread";
const DIRS: [&str; 2] = ["/var/lib/oxbow/data-0/log", "/var/lib/oxbow/data-1/log"];

fn client(action: &str, topic: &str) -> anyhow::Result<Value> {
    python_json(CLIENT, &[action, BOOTSTRAP, topic])
}

/// The log directories broker `broker` reports in a `dirs` answer, in order.
fn directories<'a>(described: &'a Value, broker: &str) -> anyhow::Result<Vec<&'a String>> {
    Ok(described[broker]
        .as_object()
        .with_context(|| format!("broker {broker}: {described}"))?
        .keys()
        .collect())
}

/// The partitions of one directory of a `dirs` answer.
fn partitions(dir: &Value) -> anyhow::Result<Vec<i64>> {
    Ok(dir["partitions"]
        .as_array()
        .with_context(|| format!("partitions: {dir}"))?
        .iter()
        .filter_map(Value::as_i64)
        .collect())
}

/// Every claim of the cluster: name to (phase, requested size, capacity).
fn claims(env: &KubeEnv) -> anyhow::Result<BTreeMap<String, (String, String, String)>> {
    let listed = env.kubectl(&[
        "-n",
        "default",
        "get",
        "pvc",
        "-l",
        "app.kubernetes.io/instance=jbod",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.status.phase} {.spec.resources.requests.storage} {.status.capacity.storage}{\"\\n\"}{end}",
    ])?;
    listed
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields[..] {
                [name, phase, requested, capacity] => Ok((
                    name.to_string(),
                    (
                        phase.to_string(),
                        requested.to_string(),
                        capacity.to_string(),
                    ),
                )),
                _ => anyhow::bail!("a claim line: {line}"),
            }
        })
        .collect()
}

/// The claims as `name=size` for those of volume `id`, sorted.
fn sizes(claims: &BTreeMap<String, (String, String, String)>, id: u32) -> Vec<String> {
    claims
        .iter()
        .filter(|(name, _)| name.starts_with(&format!("data-{id}-")))
        .map(|(name, (_, _, capacity))| format!("{name}={capacity}"))
        .collect()
}

fn pod_uids(env: &KubeEnv) -> anyhow::Result<String> {
    env.kubectl(&[
        "-n",
        "default",
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/instance=jbod",
        "-o",
        "jsonpath={.items[*].metadata.uid}",
    ])
}

/// Where the volume of claim `claim` lives on the node (the test provisioner's hostPath).
fn volume_path(env: &KubeEnv, claim: &str) -> anyhow::Result<PathBuf> {
    let volume = env.jsonpath("default", &format!("pvc/{claim}"), "{.spec.volumeName}")?;
    let path = env.kubectl(&["get", "pv", &volume, "-o", "jsonpath={.spec.hostPath.path}"])?;
    ensure!(
        !path.is_empty(),
        "volume {volume} of claim {claim} has no path"
    );
    Ok(PathBuf::from(path))
}

fn patch_volumes(env: &KubeEnv, volumes: &str) -> anyhow::Result<()> {
    env.kubectl(&[
        "-n",
        "default",
        "patch",
        "kafkacluster",
        "jbod",
        "--type=merge",
        "-p",
        &format!("{{\"spec\":{{\"storage\":{{\"volumes\":{volumes}}}}}}}"),
    ])?;
    Ok(())
}

#[test]
fn jbod_brokers_spread_partitions_over_their_volumes_and_a_volume_grows_on_its_own() {
    sandboxed(
        "jbod_brokers_spread_partitions_over_their_volumes_and_a_volume_grows_on_its_own",
        || {
            runtime().block_on(async {
                let env = KubeEnv::start(EnvOptions::default()).await?;

                let duplicate = "apiVersion: oxbow.dev/v1alpha1\nkind: KafkaCluster\nmetadata:\n  name: twice\nspec:\n  replicas: 1\n  storage:\n    volumes:\n      - id: 1\n      - id: 1\n";
                let refused = env.apply(duplicate).expect_err("two volumes with one id");
                ensure!(
                    refused.to_string().contains("each volume needs an id of its own"),
                    "the API server's reason: {refused:#}"
                );

                let example =
                    std::fs::read_to_string(repository().join("examples/kafkacluster-jbod.yaml"))?;
                env.apply(&example)?;
                env.wait_cluster_ready("default", "jbod", 3, Duration::from_secs(300))?;
                let found = claims(&env)?;
                let expected: BTreeMap<String, (String, String, String)> = [0, 1]
                    .into_iter()
                    .flat_map(|id| {
                        (0..3).map(move |n| {
                            let size = if id == 0 { "100Gi" } else { "200Gi" };
                            (
                                format!("data-{id}-jbod-{n}"),
                                ("Bound".to_string(), size.to_string(), size.to_string()),
                            )
                        })
                    })
                    .collect();
                ensure!(found == expected, "a bound claim per volume and broker: {found:?}");

                let created = client("create", TOPIC)?;
                ensure!(created["delivered"] == 600, "{created}");
                let described = client("dirs", TOPIC)?;
                eprintln!("log directories: {described}");
                for broker in ["0", "1", "2"] {
                    let dirs = &described[broker];
                    let names = directories(&described, broker)?;
                    ensure!(names == DIRS, "broker {broker}'s directories: {names:?}");
                    let mut all = Vec::new();
                    for dir in DIRS {
                        let partitions = partitions(&dirs[dir])?;
                        ensure!(
                            partitions.len() == 3,
                            "broker {broker}: three of the six replicas in {dir}: {dirs}"
                        );
                        ensure!(
                            dirs[dir]["bytes"].as_i64().unwrap_or_default() > 0,
                            "broker {broker}: records in {dir}: {dirs}"
                        );
                        all.extend(partitions);
                    }
                    all.sort_unstable();
                    ensure!(all == [0, 1, 2, 3, 4, 5], "broker {broker}: every replica once: {all:?}");
                }
                // The replicas are on the volumes themselves, not in the container's own
                // filesystem.
                for (id, dir) in DIRS.iter().enumerate() {
                    let volume = volume_path(&env, &format!("data-{id}-jbod-0"))?;
                    let mut on_volume: Vec<i64> = std::fs::read_dir(volume.join("log"))
                        .with_context(|| format!("{}", volume.display()))?
                        .filter_map(|entry| entry.ok())
                        .filter_map(|entry| {
                            entry
                                .file_name()
                                .to_str()?
                                .strip_prefix(&format!("{TOPIC}-"))?
                                .parse()
                                .ok()
                        })
                        .collect();
                    on_volume.sort_unstable();
                    let described = partitions(&described["0"][dir])?;
                    ensure!(
                        on_volume == described,
                        "claim data-{id}-jbod-0 holds {on_volume:?}, DescribeLogDirs says {described:?}"
                    );
                    ensure!(
                        volume.join("log/meta.properties").is_file(),
                        "meta.properties on volume {id}"
                    );
                }

                // Volume 1 grows; volume 0 and the brokers stay as they are.
                let pods_before = pod_uids(&env)?;
                patch_volumes(&env, "[{\"id\":0},{\"id\":1,\"size\":\"300Gi\"}]")?;
                env.wait("the claims of volume 1 grown to 300Gi", Duration::from_secs(120), |env| {
                    let found = claims(env)?;
                    let template = env.jsonpath(
                        "default",
                        "statefulset/jbod",
                        "{.spec.volumeClaimTemplates[1].spec.resources.requests.storage}",
                    )?;
                    Ok(sizes(&found, 1).iter().all(|s| s.ends_with("=300Gi")) && template == "300Gi")
                })?;
                env.wait_cluster_ready("default", "jbod", 3, Duration::from_secs(120))?;
                let found = claims(&env)?;
                ensure!(
                    sizes(&found, 0) == ["data-0-jbod-0=100Gi", "data-0-jbod-1=100Gi", "data-0-jbod-2=100Gi"],
                    "volume 0 untouched: {found:?}"
                );
                ensure!(pod_uids(&env)? == pods_before, "growing a volume restarted a broker");

                // Volume 2 added to the running brokers: each restarts once, one at a time, and
                // takes it as a third log directory; new partitions fill it first.
                patch_volumes(&env, "[{\"id\":0},{\"id\":1,\"size\":\"300Gi\"},{\"id\":2,\"size\":\"50Gi\"}]")?;
                env.wait("every broker on three volumes", Duration::from_secs(360), |env| {
                    let found = claims(env)?;
                    let ready = env.jsonpath("default", "kafkacluster/jbod", "{.status.conditions[?(@.type==\"Ready\")].status}")?;
                    let generation = env.jsonpath("default", "kafkacluster/jbod", "{.metadata.generation}")?;
                    let observed = env.jsonpath("default", "kafkacluster/jbod", "{.status.observedGeneration}")?;
                    Ok(sizes(&found, 2).len() == 3 && ready == "True" && generation == observed)
                })?;
                let found = claims(&env)?;
                ensure!(
                    sizes(&found, 2) == ["data-2-jbod-0=50Gi", "data-2-jbod-1=50Gi", "data-2-jbod-2=50Gi"]
                        && sizes(&found, 0).len() == 3
                        && sizes(&found, 1).iter().all(|s| s.ends_with("=300Gi")),
                    "a claim of volume 2 per broker, the others kept: {found:?}"
                );
                let after = pod_uids(&env)?;
                ensure!(
                    after.split_whitespace().all(|uid| !pods_before.contains(uid)),
                    "every broker restarted to take the volume: {pods_before} then {after}"
                );
                let events = env.kubectl(&["-n", "default", "get", "events", "--field-selector", "involvedObject.name=jbod", "-o", "jsonpath={.items[*].reason}"])?;
                ensure!(events.contains("VolumesAdding"), "events: {events}");
                let more = client("create", "spread-more")?;
                ensure!(more["delivered"] == 600, "{more}");
                let described = client("dirs", "spread-more")?;
                eprintln!("log directories after adding volume 2: {described}");
                let three = [DIRS[0], DIRS[1], "/var/lib/oxbow/data-2/log"];
                for broker in ["0", "1", "2"] {
                    let dirs = &described[broker];
                    let names = directories(&described, broker)?;
                    ensure!(names == three, "broker {broker}'s directories: {names:?}");
                    // The empty directory takes new partitions first (4 of the 6 as they are
                    // created one by one; 2 if they were spread evenly).
                    let on_new = partitions(&dirs[three[2]])?;
                    ensure!(on_new.len() >= 3, "broker {broker}: {dirs}");
                }

                // A volume removed from running brokers is refused; they keep all three.
                let pods_now = pod_uids(&env)?;
                patch_volumes(&env, "[{\"id\":0},{\"id\":1,\"size\":\"300Gi\"}]")?;
                env.wait("the removal refused", Duration::from_secs(60), |env| {
                    let message = env.jsonpath(
                        "default",
                        "kafkacluster/jbod",
                        "{.status.conditions[?(@.type==\"Degraded\")].message}",
                    )?;
                    Ok(message.contains("data-0, data-1 but the brokers have data-0, data-1, data-2")
                        && message.contains("cannot be removed"))
                })?;
                patch_volumes(&env, "[{\"id\":0},{\"id\":1,\"size\":\"300Gi\"},{\"id\":2,\"size\":\"50Gi\"}]")?;
                env.wait_cluster_ready("default", "jbod", 3, Duration::from_secs(120))?;
                ensure!(pod_uids(&env)? == pods_now, "the refusal restarted a broker");
                let more = client("count", "spread-more")?;
                ensure!(more["count"] == 600, "every record of the second topic read back: {more}");

                let read = client("count", TOPIC)?;
                ensure!(read["count"] == 600, "every record read back: {read}");
                Ok(())
            })
        },
    );
}
