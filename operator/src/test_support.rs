//! Test fixtures: small YAML documents turned into typed resources, a recording
//! [`TopicAdmin`] that keeps topics in memory (on three brokers), and a [`BalanceAdmin`] over
//! an in-memory cluster whose reassignments land one look after they are submitted.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Mutex;

use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::{Deserialize, Serialize};

use crate::balance::executor::{ExecError, Goal, NotElected, Observed, Ongoing};
use crate::balance::step::{BalanceAdmin, Progress};
use crate::balance::{BrokerInfo, ClusterState, Move, PartitionInfo, PlanError};
use crate::crd::{KafkaCluster, KafkaTopic};
use crate::topic::admin::{AdminError, ConfigChange, NewTopic, TopicAdmin, TopicDescription};

/// A partition led by its first replica, with every replica in sync.
pub(crate) fn partition(topic: &str, index: i32, replicas: &[i32]) -> PartitionInfo {
    PartitionInfo {
        topic: topic.to_string(),
        partition: index,
        replicas: replicas.to_vec(),
        leader: replicas[0],
        isr: replicas.to_vec(),
    }
}

/// Partitions `0..count` of `topic` with `rf` replicas each, spread round-robin over `hosts`.
pub(crate) fn round_robin(topic: &str, count: i32, rf: usize, hosts: &[i32]) -> Vec<PartitionInfo> {
    (0..count)
        .map(|p| {
            let first = usize::try_from(p).expect("partition index");
            let replicas: Vec<i32> = (0..rf).map(|i| hosts[(first + i) % hosts.len()]).collect();
            partition(topic, p, &replicas)
        })
        .collect()
}

/// A cluster as the balancer observes it: `brokers` registered (without racks), `partitions`
/// settled, no reassignment in flight.
pub(crate) fn observed(brokers: &[i32], partitions: Vec<PartitionInfo>) -> Observed {
    Observed {
        current: partitions
            .iter()
            .map(|p| ((p.topic.clone(), p.partition), p.replicas.clone()))
            .collect(),
        state: ClusterState {
            brokers: brokers
                .iter()
                .map(|id| BrokerInfo {
                    id: *id,
                    rack: None,
                })
                .collect(),
            partitions,
        },
        reassigning: BTreeMap::new(),
    }
}

/// Brokers the in-memory Kafka of [`MemoryAdmin`] has.
pub(crate) const MEMORY_BROKERS: i32 = 3;

/// A KafkaCluster as read from the API (uid, namespace, generation set). Tests append
/// indented spec fields to it.
pub(crate) const MINIMAL_CLUSTER: &str = "\
apiVersion: oxbow.dev/v1alpha1
kind: KafkaCluster
metadata:
  name: main
  namespace: streaming
  uid: 6f0c3f5e-0000-4000-8000-000000000001
  generation: 4
spec:
  imagePullPolicy: IfNotPresent";

/// A KafkaTopic on `main`; tests append indented spec fields.
pub(crate) const MINIMAL_TOPIC: &str = "\
apiVersion: oxbow.dev/v1alpha1
kind: KafkaTopic
metadata:
  name: orders
  namespace: streaming
  uid: 6f0c3f5e-0000-4000-8000-000000000002
  generation: 1
spec:
  clusterRef:
    name: main";

pub(crate) fn cluster(yaml: &str) -> KafkaCluster {
    serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("bad KafkaCluster fixture: {e}\n{yaml}"))
}

pub(crate) fn topic(yaml: &str) -> KafkaTopic {
    serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("bad KafkaTopic fixture: {e}\n{yaml}"))
}

/// A [`TopicAdmin`] with topics in memory, recording every call as a line of text.
#[derive(Default)]
pub(crate) struct MemoryAdmin {
    pub(crate) topics: Mutex<BTreeMap<String, TopicDescription>>,
    pub(crate) calls: Mutex<Vec<String>>,
    /// When set, every call fails as if the cluster were unreachable.
    pub(crate) unreachable: Mutex<bool>,
    /// Brokers registered so far, while not all of them ([`MEMORY_BROKERS`] when `None`): a
    /// topic with more replicas is refused, as Kafka refuses it.
    pub(crate) registered: Mutex<Option<i32>>,
    next_id: Mutex<u32>,
}

impl MemoryAdmin {
    pub(crate) fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("lock").clone()
    }

    pub(crate) fn topic(&self, name: &str) -> Option<TopicDescription> {
        self.topics.lock().expect("lock").get(name).cloned()
    }

    /// A topic created behind the operator's back.
    pub(crate) fn insert(&self, name: &str, description: TopicDescription) {
        self.topics
            .lock()
            .expect("lock")
            .insert(name.to_string(), description);
    }

    fn record(&self, bootstrap: &str, call: String) -> Result<(), AdminError> {
        self.calls.lock().expect("lock").push(call);
        if *self.unreachable.lock().expect("lock") {
            return Err(AdminError::Timeout {
                operation: "test",
                address: bootstrap.to_string(),
                timeout: std::time::Duration::from_secs(1),
            });
        }
        Ok(())
    }
}

impl TopicAdmin for MemoryAdmin {
    fn describe<'a>(
        &'a self,
        bootstrap: &'a str,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<Option<TopicDescription>, AdminError>> {
        async move {
            self.record(bootstrap, format!("describe {topic}"))?;
            Ok(self.topic(topic))
        }
        .boxed()
    }

    fn create<'a>(
        &'a self,
        bootstrap: &'a str,
        topic: &'a NewTopic,
    ) -> BoxFuture<'a, Result<String, AdminError>> {
        async move {
            self.record(bootstrap, format!("create {}", topic.name))?;
            if topic.config.contains_key("bogus.setting") {
                return Err(AdminError::Rejected {
                    operation: "CreateTopics",
                    subject: format!("topic `{}`", topic.name),
                    code: kafka_protocol::ResponseError::InvalidConfig,
                    message: Some("unknown topic setting `bogus.setting`".to_string()),
                });
            }
            let registered = self
                .registered
                .lock()
                .expect("lock")
                .unwrap_or(MEMORY_BROKERS);
            let replicas = topic.replicas.unwrap_or(1);
            if replicas > registered {
                return Err(AdminError::Rejected {
                    operation: "CreateTopics",
                    subject: format!("topic `{}`", topic.name),
                    code: kafka_protocol::ResponseError::InvalidReplicationFactor,
                    message: Some(format!(
                        "replication factor {replicas} is larger than the {registered} brokers registered"
                    )),
                });
            }
            let mut next = self.next_id.lock().expect("lock");
            *next += 1;
            let id = format!("topic-id-{next}");
            self.insert(
                &topic.name,
                TopicDescription {
                    topic_id: id.clone(),
                    partitions: topic.partitions.unwrap_or(1),
                    replicas: topic.replicas.unwrap_or(1),
                    min_replicas: topic.replicas.unwrap_or(1),
                    reassigning: 0,
                    overrides: topic.config.clone(),
                },
            );
            Ok(id)
        }
        .boxed()
    }

    fn create_partitions<'a>(
        &'a self,
        bootstrap: &'a str,
        topic: &'a str,
        count: i32,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        async move {
            self.record(bootstrap, format!("create_partitions {topic} {count}"))?;
            if let Some(t) = self.topics.lock().expect("lock").get_mut(topic) {
                t.partitions = count;
            }
            Ok(())
        }
        .boxed()
    }

    fn alter_configs<'a>(
        &'a self,
        bootstrap: &'a str,
        topic: &'a str,
        changes: &'a [ConfigChange],
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        async move {
            self.record(bootstrap, format!("alter_configs {topic} {changes:?}"))?;
            if let Some(t) = self.topics.lock().expect("lock").get_mut(topic) {
                for change in changes {
                    match change {
                        ConfigChange::Set(k, v) => {
                            t.overrides.insert(k.clone(), v.clone());
                        }
                        ConfigChange::Delete(k) => {
                            t.overrides.remove(k);
                        }
                    }
                }
            }
            Ok(())
        }
        .boxed()
    }

    fn delete<'a>(
        &'a self,
        bootstrap: &'a str,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        async move {
            self.record(bootstrap, format!("delete {topic}"))?;
            self.topics.lock().expect("lock").remove(topic);
            Ok(())
        }
        .boxed()
    }

    /// The first round submits every partition (they show as reassigning, with their new
    /// size), the next one finds them landed and is done.
    fn change_replication_factor<'a>(
        &'a self,
        bootstrap: &'a str,
        topic: &'a str,
        replicas: i32,
    ) -> BoxFuture<'a, Result<Progress, AdminError>> {
        async move {
            self.record(
                bootstrap,
                format!("change_replication_factor {topic} {replicas}"),
            )?;
            if !(1..=MEMORY_BROKERS).contains(&replicas) {
                return Err(AdminError::Reassignment {
                    topic: topic.to_string(),
                    source: ExecError::Plan(PlanError::InvalidReplicationFactor {
                        topic: topic.to_string(),
                        requested: usize::try_from(replicas).unwrap_or(0),
                        brokers: MEMORY_BROKERS as usize,
                    }),
                });
            }
            let mut topics = self.topics.lock().expect("lock");
            let Some(t) = topics.get_mut(topic) else {
                return Err(AdminError::Reassignment {
                    topic: topic.to_string(),
                    source: ExecError::Plan(PlanError::UnknownTopic(topic.to_string())),
                });
            };
            let moving = usize::try_from(t.partitions).unwrap_or(0);
            if t.reassigning > 0 {
                t.reassigning = 0;
                Ok(Progress {
                    done: true,
                    ..Progress::default()
                })
            } else if t.replicas != replicas || t.min_replicas != replicas {
                t.replicas = replicas;
                t.min_replicas = replicas;
                t.reassigning = t.partitions;
                Ok(Progress {
                    planned: moving,
                    in_flight: moving,
                    ..Progress::default()
                })
            } else {
                Ok(Progress {
                    done: true,
                    ..Progress::default()
                })
            }
        }
        .boxed()
    }
}

/// A cluster in memory for [`BalanceAdmin`]: brokers register when the test says so, and a
/// submitted reassignment is reported in flight at the next look and landed at the one after.
#[derive(Default)]
pub(crate) struct MemoryCluster {
    pub(crate) state: Mutex<ClusterState>,
    /// Reassignments in flight, with how many more looks they stay so.
    pub(crate) moving: Mutex<BTreeMap<(String, i32), (Move, u32)>>,
    pub(crate) calls: Mutex<Vec<String>>,
    /// When set, every call fails as if the cluster were unreachable.
    pub(crate) unreachable: Mutex<bool>,
}

impl MemoryCluster {
    pub(crate) fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("lock").clone()
    }

    pub(crate) fn set_state(&self, state: ClusterState) {
        *self.state.lock().expect("lock") = state;
    }

    pub(crate) fn state(&self) -> ClusterState {
        self.state.lock().expect("lock").clone()
    }

    fn record(&self, call: String) -> Result<(), ExecError> {
        self.calls.lock().expect("lock").push(call);
        if *self.unreachable.lock().expect("lock") {
            return Err(ExecError::Timeout {
                operation: "test",
                address: "memory".to_string(),
                timeout: std::time::Duration::from_secs(1),
            });
        }
        Ok(())
    }
}

impl BalanceAdmin for MemoryCluster {
    fn observe<'a>(&'a self, _bootstrap: &'a str) -> BoxFuture<'a, Result<Observed, ExecError>> {
        async move {
            self.record("observe".to_string())?;
            let mut state = self.state.lock().expect("lock");
            let mut moving = self.moving.lock().expect("lock");
            let mut observed = Observed::default();
            let mut landed = Vec::new();
            for (key, (m, looks)) in moving.iter_mut() {
                if *looks == 0 {
                    landed.push(key.clone());
                    if let Some(p) = state
                        .partitions
                        .iter_mut()
                        .find(|p| p.topic == m.topic && p.partition == m.partition)
                    {
                        p.replicas = m.to.clone();
                        p.isr = m.to.clone();
                        if !m.to.contains(&p.leader) {
                            p.leader = m.to[0];
                        }
                    }
                } else {
                    *looks -= 1;
                    observed.reassigning.insert(
                        key.clone(),
                        Ongoing {
                            replicas: m.to.iter().chain(&m.removed()).copied().collect(),
                            adding: m.added(),
                            removing: m.removed(),
                        },
                    );
                }
            }
            for key in landed {
                moving.remove(&key);
            }
            let mut shown = state.clone();
            for p in &mut shown.partitions {
                let key = (p.topic.clone(), p.partition);
                observed.current.insert(key.clone(), p.replicas.clone());
                if let Some((m, _)) = moving.get(&key) {
                    p.replicas = m.to.clone();
                    p.isr.retain(|r| m.to.contains(r));
                }
            }
            observed.state = shown;
            Ok(observed)
        }
        .boxed()
    }

    fn reassign<'a>(
        &'a self,
        _bootstrap: &'a str,
        moves: &'a [Move],
    ) -> BoxFuture<'a, Result<(), ExecError>> {
        async move {
            for m in moves {
                self.record(format!(
                    "reassign {}-{} {:?} -> {:?}",
                    m.topic, m.partition, m.from, m.to
                ))?;
                self.moving
                    .lock()
                    .expect("lock")
                    .insert((m.topic.clone(), m.partition), (m.clone(), 1));
            }
            Ok(())
        }
        .boxed()
    }

    fn registered_brokers<'a>(
        &'a self,
        _bootstrap: &'a str,
    ) -> BoxFuture<'a, Result<std::collections::BTreeSet<i32>, ExecError>> {
        async move {
            self.record("registered brokers".to_string())?;
            Ok(self.state.lock().expect("lock").broker_ids())
        }
        .boxed()
    }

    fn unregister<'a>(
        &'a self,
        _bootstrap: &'a str,
        id: i32,
    ) -> BoxFuture<'a, Result<(), ExecError>> {
        async move {
            self.record(format!("unregister {id}"))?;
            self.state
                .lock()
                .expect("lock")
                .brokers
                .retain(|b| b.id != id);
            Ok(())
        }
        .boxed()
    }

    fn elect<'a>(
        &'a self,
        _bootstrap: &'a str,
        partitions: &'a [(String, i32)],
    ) -> BoxFuture<'a, Result<Vec<NotElected>, ExecError>> {
        async move {
            self.record(format!("elect {}", partitions.len()))?;
            let mut state = self.state.lock().expect("lock");
            for p in &mut state.partitions {
                if partitions.contains(&(p.topic.clone(), p.partition)) {
                    p.leader = p.replicas[0];
                }
            }
            Ok(Vec::new())
        }
        .boxed()
    }
}

/// The goal of a plain rebalance over every live broker, for tests.
pub(crate) fn rebalance_goal() -> Goal {
    Goal::Rebalance {
        brokers: None,
        drain: Vec::new(),
    }
}

/// A context over an in-memory Kubernetes API holding `objects` (KafkaCluster, KafkaTopic and
/// their status subresources registered), with a [`MemoryAdmin`] for Kafka.
pub(crate) async fn fake_context(
    builder: kube_fake_client::ClientBuilder,
) -> (
    std::sync::Arc<crate::context::Context>,
    std::sync::Arc<MemoryAdmin>,
) {
    let (ctx, admin, _) = fake_context_with_cluster(builder).await;
    (ctx, admin)
}

/// [`fake_context`], and the [`MemoryCluster`] its balancer works on.
pub(crate) async fn fake_context_with_cluster(
    builder: kube_fake_client::ClientBuilder,
) -> (
    std::sync::Arc<crate::context::Context>,
    std::sync::Arc<MemoryAdmin>,
    std::sync::Arc<MemoryCluster>,
) {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use kube_fake_client::interceptor::Funcs;
    let client = builder
        .with_resource::<KafkaCluster>()
        .with_resource::<KafkaTopic>()
        .with_status_subresource::<StatefulSet>()
        .with_interceptor_funcs(Funcs::new().patch_status(|ctx| {
            if ctx.patch_type != kube_fake_client::PatchType::ApplyPatch {
                return Ok(None);
            }
            match ctx.patch.get("kind").and_then(|k| k.as_str()) {
                Some("KafkaCluster") => apply_whole_status::<KafkaCluster>(&ctx),
                Some("KafkaTopic") => apply_whole_status::<KafkaTopic>(&ctx),
                _ => Ok(None),
            }
        }))
        .build()
        .await
        .expect("fake API");
    let admin = std::sync::Arc::new(MemoryAdmin::default());
    let cluster = std::sync::Arc::new(MemoryCluster::default());
    let ctx = crate::context::Context::new(
        client,
        std::sync::Arc::new(crate::metrics::Metrics::new()),
        crate::cluster::validate::OperatorSettings::default(),
        admin.clone(),
        cluster.clone(),
        Some("test".to_string()),
    );
    (std::sync::Arc::new(ctx), admin, cluster)
}

/// A custom resource as the in-memory API stores it: its metadata, and the rest as JSON. The
/// in-memory API's typed calls need `Default`, which the custom resources do not have.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
struct Stored<K> {
    metadata: ObjectMeta,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
    #[serde(skip)]
    resource: PhantomData<K>,
}

impl<K> Clone for Stored<K> {
    fn clone(&self) -> Self {
        Self {
            metadata: self.metadata.clone(),
            rest: self.rest.clone(),
            resource: PhantomData,
        }
    }
}

impl<K: Resource<DynamicType = ()>> Default for Stored<K> {
    fn default() -> Self {
        let mut rest = serde_json::Map::new();
        rest.insert("apiVersion".to_string(), K::api_version(&()).into());
        rest.insert("kind".to_string(), K::kind(&()).into());
        Self {
            metadata: ObjectMeta::default(),
            rest,
            resource: PhantomData,
        }
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Stored<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Server-side apply of the status by its only manager, as the API server does it: the
/// applied `.status` replaces the stored one, so a field the manager omits is removed (the
/// in-memory API merges an apply like a JSON merge patch, which would keep it).
fn apply_whole_status<K: Resource<DynamicType = ()>>(
    ctx: &kube_fake_client::interceptor::PatchStatusContext<'_>,
) -> kube_fake_client::Result<Option<serde_json::Value>> {
    let mut stored: Stored<K> = ctx.client.get(ctx.namespace, ctx.name)?;
    match ctx.patch.get("status") {
        Some(status) => stored.rest.insert("status".to_string(), status.clone()),
        None => stored.rest.remove("status"),
    };
    let updated =
        ctx.client
            .update_status(ctx.namespace, &stored, &kube::api::PostParams::default())?;
    Ok(Some(serde_json::to_value(updated)?))
}

/// Reasons of the events recorded about objects named `name`.
pub(crate) async fn event_reasons(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Vec<String> {
    use k8s_openapi::api::events::v1::Event;
    let events: kube::Api<Event> = kube::Api::namespaced(client.clone(), namespace);
    let list = events
        .list(&kube::api::ListParams::default())
        .await
        .expect("events");
    list.items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter_map(|e| e.reason)
        .collect()
}
