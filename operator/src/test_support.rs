//! Test fixtures: small YAML documents turned into typed resources, and a recording
//! [`TopicAdmin`] that keeps topics in memory.

use std::collections::BTreeMap;
use std::sync::Mutex;

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::crd::{KafkaCluster, KafkaTopic};
use crate::topic::admin::{AdminError, ConfigChange, NewTopic, TopicAdmin, TopicDescription};

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
                    topic: topic.name.clone(),
                    code: kafka_protocol::ResponseError::InvalidConfig,
                    message: Some("unknown topic setting `bogus.setting`".to_string()),
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
}

/// A context over an in-memory Kubernetes API holding `objects` (KafkaCluster, KafkaTopic and
/// their status subresources registered), with a [`MemoryAdmin`] for Kafka.
pub(crate) async fn fake_context(
    builder: kube_fake_client::ClientBuilder,
) -> (
    std::sync::Arc<crate::context::Context>,
    std::sync::Arc<MemoryAdmin>,
) {
    use k8s_openapi::api::apps::v1::StatefulSet;
    let client = builder
        .with_resource::<KafkaCluster>()
        .with_resource::<KafkaTopic>()
        .with_status_subresource::<StatefulSet>()
        .build()
        .await
        .expect("fake API");
    let admin = std::sync::Arc::new(MemoryAdmin::default());
    let ctx = crate::context::Context::new(
        client,
        std::sync::Arc::new(crate::metrics::Metrics::new()),
        crate::cluster::validate::OperatorSettings::default(),
        admin.clone(),
        Some("test".to_string()),
    );
    (std::sync::Arc::new(ctx), admin)
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
