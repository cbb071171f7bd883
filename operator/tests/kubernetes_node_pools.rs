//! Dedicated controllers on a real Kubernetes control plane, with real brokers and controllers
//! in their pods: `examples/kafkacluster-dedicated-controllers.yaml` applied as it is runs the
//! metadata quorum on a pool of three controllers (StatefulSet `pools-controller`, node ids
//! 1000-1002) beside two brokers. Under an `acks=all` producer the broker pool scales on its
//! own, 2 → 3 through the scale subresource and back to 2 (which a cluster whose first brokers
//! are the quorum refuses), without touching a controller; a change of the controller pool's
//! size is refused with the reason; a controller killed is replaced while the producer goes
//! on; every acknowledged record reads back.
//!
//! Runs in a sandbox of its own, as `operator/tests/kubernetes.rs` describes. Needs root, and
//! `cargo build --workspace --bins` first.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use oxbow_e2e::kube::env::{repository, runtime, sandboxed, EnvOptions, KubeEnv};
use oxbow_e2e::kube::load::{read_back, Producing};
use oxbow_operator::balance::executor;

const NS: &str = "default";
const CLUSTER: &str = "kafkacluster/pools";
const BOOTSTRAP: &str = "pools-bootstrap.default.svc:9092";
const TOPIC: &str = "events";
const PARTITIONS: i32 = 6;
const TOPIC_MANIFEST: &str = "apiVersion: oxbow.dev/v1alpha1
kind: KafkaTopic
metadata:
  name: events
spec:
  clusterRef:
    name: pools
  partitions: 6
  replicas: 2
";
const CONTROLLERS: [&str; 3] = [
    "pools-controller-1000",
    "pools-controller-1001",
    "pools-controller-1002",
];
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Each pod of the cluster with `component` (`broker` or `controller`) by name: its uid and
/// its container's restart count, which a replaced pod or a restarted process changes.
fn runs(env: &KubeEnv, component: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let out = env.kubectl(&[
        "-n",
        NS,
        "get",
        "pods",
        "-l",
        &format!("app.kubernetes.io/instance=pools,app.kubernetes.io/component={component}"),
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}{\" \"}{.metadata.uid}/{.status.containerStatuses[0].restartCount}{\"\\n\"}{end}",
    ])?;
    Ok(out
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(name, run)| (name.to_string(), run.to_string()))
        .collect())
}

fn patch(env: &KubeEnv, spec: &str) -> anyhow::Result<()> {
    env.kubectl(&[
        "-n",
        NS,
        "patch",
        "kafkacluster",
        "pools",
        "--type=merge",
        "-p",
        &format!(r#"{{"spec":{spec}}}"#),
    ])
    .map(drop)
}

/// The metadata quorum's voters as broker `ordinal` reports them in its metrics.
fn voters_seen_by(ordinal: i32) -> anyhow::Result<BTreeSet<i32>> {
    let host = format!("pools-{ordinal}.pools-brokers.default.svc.cluster.local:9404");
    let response = oxbow_e2e::http::get(&host, "/metrics")?;
    Ok(response
        .lines()
        .filter(|l| {
            l.starts_with("oxbow_metadata_quorum_member{")
                && l.contains("role=\"voter\"")
                && l.ends_with(" 1")
        })
        .filter_map(|l| {
            l.split_once("node=\"")
                .and_then(|(_, rest)| rest.split_once('"'))
                .and_then(|(node, _)| node.parse().ok())
        })
        .collect())
}

async fn registered() -> anyhow::Result<BTreeSet<i32>> {
    Ok(executor::registered_brokers(BOOTSTRAP, REQUEST_TIMEOUT).await?)
}

/// Whether the Ready condition is true, the status is of the current generation, and every
/// controller in it is ready.
fn ready_with_controllers(env: &KubeEnv, brokers: usize) -> anyhow::Result<bool> {
    let ready = env.condition(NS, CLUSTER, "Ready", "status")?;
    let generation = env.jsonpath(NS, CLUSTER, "{.metadata.generation}")?;
    let observed = env.jsonpath(NS, CLUSTER, "{.status.observedGeneration}")?;
    let ready_brokers = env.jsonpath(NS, CLUSTER, "{.status.readyBrokers}")?;
    let controllers = env.jsonpath(NS, CLUSTER, "{.status.controllers[*].ready}")?;
    Ok(ready == "True"
        && generation == observed
        && ready_brokers == brokers.to_string()
        && controllers == "true true true")
}

#[test]
fn a_broker_pool_scales_on_its_own_beside_dedicated_controllers() {
    sandboxed(
        "a_broker_pool_scales_on_its_own_beside_dedicated_controllers",
        || {
            runtime().block_on(async {
                let env = KubeEnv::start(EnvOptions::default()).await?;
                let started = Instant::now();
                let example = std::fs::read_to_string(
                    repository().join("examples/kafkacluster-dedicated-controllers.yaml"),
                )?;
                env.apply(&format!("{example}\n---\n{TOPIC_MANIFEST}"))?;
                env.wait(
                    "pools Ready with 2 brokers and 3 controllers",
                    Duration::from_secs(240),
                    |env| ready_with_controllers(env, 2),
                )?;
                env.wait("events Ready", Duration::from_secs(120), |env| {
                    env.jsonpath(
                        NS,
                        "kafkatopic/events",
                        "{.status.conditions[?(@.type==\"Ready\")].status}",
                    )
                    .map(|s| s == "True")
                })?;
                eprintln!("cluster and topic Ready after {:?}", started.elapsed());

                // The controllers: a StatefulSet of their own, their pods named by node id.
                assert_eq!(
                    env.jsonpath(NS, CLUSTER, "{.status.controllers[*].pod}")?,
                    CONTROLLERS.join(" ")
                );
                assert_eq!(
                    env.jsonpath(NS, "statefulset/pools-controller", "{.spec.ordinals.start}")?,
                    "1000"
                );
                assert_eq!(
                    env.jsonpath(NS, CLUSTER, "{.status.brokers[*].controller}")?,
                    "false false"
                );
                let controller_runs = runs(&env, "controller")?;
                assert_eq!(
                    controller_runs
                        .keys()
                        .map(String::as_str)
                        .collect::<Vec<_>>(),
                    CONTROLLERS
                );
                let controller_generation =
                    env.jsonpath(NS, "statefulset/pools-controller", "{.metadata.generation}")?;
                // The quorum is the controllers; clients see the brokers alone, and a
                // controller has no client port.
                assert_eq!(voters_seen_by(0)?, (1000..1003).collect());
                assert_eq!(registered().await?, (0..2).collect());
                let controller =
                    "pools-controller-1000.pools-brokers.default.svc.cluster.local:9092"
                        .to_socket_addrs()?
                        .next()
                        .context("the controller's address")?;
                ensure!(
                    TcpStream::connect_timeout(&controller, Duration::from_secs(3)).is_err(),
                    "a controller accepted a connection on the client port"
                );

                // The broker pool grows on its own, through the scale subresource.
                let producing = Producing::start(BOOTSTRAP, TOPIC)?;
                producing.wait_for_progress(200, "starting").await?;
                env.kubectl(&["-n", NS, "scale", "kafkacluster", "pools", "--replicas=3"])?;
                env.wait(
                    "pools Ready with 3 brokers",
                    Duration::from_secs(180),
                    |env| {
                        Ok(ready_with_controllers(env, 3)?
                            && env.jsonpath(NS, CLUSTER, "{.status.scaling}")?.is_empty())
                    },
                )?;
                producing
                    .wait_for_progress(200, "growing to 3 brokers")
                    .await?;
                let kafka = executor::observe(BOOTSTRAP, REQUEST_TIMEOUT).await?;
                assert_eq!(kafka.state.broker_ids(), (0..3).collect());
                let spread = kafka.state.distribution(None);
                assert!(
                    spread.replicas.values().all(|n| *n > 0),
                    "replicas per broker: {:?}",
                    spread.replicas
                );
                assert_eq!(
                    voters_seen_by(2)?,
                    (1000..1003).collect(),
                    "the new broker's quorum"
                );
                eprintln!("grown to 3 brokers after {:?}", started.elapsed());

                // And shrinks back to 2: with the first brokers as the quorum, 3 → 2 would be
                // refused (three voters to one).
                patch(&env, r#"{"replicas":2}"#)?;
                env.wait(
                    "pools Ready with 2 brokers",
                    Duration::from_secs(180),
                    |env| {
                        Ok(ready_with_controllers(env, 2)?
                            && env.jsonpath(NS, "statefulset/pools", "{.spec.replicas}")? == "2"
                            && env.jsonpath(NS, CLUSTER, "{.status.scaling}")?.is_empty())
                    },
                )?;
                assert_eq!(env.condition(NS, CLUSTER, "Degraded", "status")?, "False");
                let deadline = Instant::now() + Duration::from_secs(90);
                while registered().await? != (0..2).collect::<BTreeSet<i32>>() {
                    if Instant::now() > deadline {
                        env.dump();
                        bail!("broker 2 still registered after the scale-down");
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                producing
                    .wait_for_progress(200, "shrinking to 2 brokers")
                    .await?;
                assert_eq!(
                    runs(&env, "controller")?,
                    controller_runs,
                    "scaling the brokers restarted a controller"
                );
                assert_eq!(
                    env.jsonpath(NS, "statefulset/pools-controller", "{.metadata.generation}")?,
                    controller_generation,
                    "scaling the brokers changed the controllers' StatefulSet"
                );
                eprintln!("shrunk to 2 brokers after {:?}", started.elapsed());

                // The controller pool's size is the quorum's: a change is refused with the
                // reason, and leaves the controllers as they are.
                patch(&env, r#"{"controllers":{"replicas":5}}"#)?;
                env.wait(
                    "the controllers' resize refused",
                    Duration::from_secs(60),
                    |env| {
                        let generation = env.jsonpath(NS, CLUSTER, "{.metadata.generation}")?;
                        let observed = env.jsonpath(NS, CLUSTER, "{.status.observedGeneration}")?;
                        Ok(generation == observed
                            && env.condition(NS, CLUSTER, "Degraded", "status")? == "True")
                    },
                )?;
                assert_eq!(
                    env.condition(NS, CLUSTER, "Degraded", "reason")?,
                    "ScalingRefused"
                );
                let why = env.condition(NS, CLUSTER, "Degraded", "message")?;
                assert!(
                    why.contains("spec.controllers.replicas cannot change from 3 to 5"),
                    "{why}"
                );
                tokio::time::sleep(Duration::from_secs(3)).await;
                assert_eq!(
                    env.jsonpath(NS, "statefulset/pools-controller", "{.spec.replicas}")?,
                    "3"
                );
                assert_eq!(
                    runs(&env, "controller")?,
                    controller_runs,
                    "a refused resize restarted a controller"
                );
                patch(&env, r#"{"controllers":{"replicas":3}}"#)?;
                env.wait("pools Ready again", Duration::from_secs(60), |env| {
                    ready_with_controllers(env, 2)
                })?;
                assert_eq!(env.condition(NS, CLUSTER, "Degraded", "status")?, "False");

                // A controller killed: the StatefulSet replaces it, the quorum goes on.
                env.kubectl(&[
                    "-n",
                    NS,
                    "delete",
                    "pod",
                    CONTROLLERS[1],
                    "--grace-period=0",
                    "--force",
                ])?;
                producing
                    .wait_for_progress(200, "a controller was killed")
                    .await?;
                env.wait(
                    "the killed controller replaced and ready",
                    Duration::from_secs(120),
                    |env| {
                        let now = runs(env, "controller")?;
                        Ok(now
                            .get(CONTROLLERS[1])
                            .is_some_and(|run| Some(run) != controller_runs.get(CONTROLLERS[1]))
                            && ready_with_controllers(env, 2)?)
                    },
                )?;
                producing
                    .wait_for_progress(200, "after the controller came back")
                    .await?;

                let (acked, failed) = producing.stop().await?;
                eprintln!(
                    "{} records acknowledged, {failed} not, after {:?}",
                    acked.len(),
                    started.elapsed()
                );
                ensure!(failed == 0, "{failed} records were not acknowledged");
                read_back(BOOTSTRAP, TOPIC, PARTITIONS, &acked)?;
                Ok(())
            })
        },
    );
}
