//! The Kafka admin operations the topic reconciler needs, behind [`TopicAdmin`] so the
//! reconciler can be tested without a broker, and [`KafkaAdmin`], which performs them with
//! the broker crate's client over the Kafka protocol. Replication-factor changes go through
//! the balancer's planner and executor (`balance::step`), one bounded round per call.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest, ListPartitionReassignmentsRequest, MetadataRequest, TopicName,
};
use kafka_protocol::protocol::{Request, StrBytes};
use kafka_protocol::ResponseError;
use oxbow_broker::client::{ClientError, Connection};
use thiserror::Error;

use crate::balance::executor::{ExecError, Goal};
use crate::balance::step::{self, BalanceAdmin, KafkaBalanceAdmin, Progress};
use crate::balance::PlanError;

/// A topic as the cluster has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    pub topic_id: String,
    pub partitions: i32,
    /// Replicas of the most replicated partition, as it will be once the reassignments in
    /// flight complete.
    pub replicas: i32,
    /// Replicas of the least replicated partition, counted the same way.
    pub min_replicas: i32,
    /// Partitions being reassigned.
    pub reassigning: i32,
    /// The topic's own settings (not the broker defaults it inherits).
    pub overrides: BTreeMap<String, String>,
}

/// A topic to create. `None` takes the cluster's default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    pub partitions: Option<i32>,
    pub replicas: Option<i32>,
    pub config: BTreeMap<String, String>,
}

/// One change to a topic's settings.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConfigChange {
    Set(String, String),
    /// Remove the override: the topic inherits the broker's value again.
    Delete(String),
}

#[derive(Debug, Error)]
pub enum AdminError {
    /// The cluster could not be reached, or the connection broke: worth retrying.
    #[error("{operation} on {address}: {source}")]
    Unreachable {
        operation: &'static str,
        address: String,
        #[source]
        source: ClientError,
    },
    #[error("{operation} on {address} timed out after {timeout:?}")]
    Timeout {
        operation: &'static str,
        address: String,
        timeout: Duration,
    },
    /// The broker refused the request for a reason a retry will not change (a bad setting,
    /// too many replicas, ...): the spec must change.
    #[error("{operation} of {subject} refused: {code:?}{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Rejected {
        operation: &'static str,
        /// What the request was about, for example ``topic `orders` ``.
        subject: String,
        code: ResponseError,
        message: Option<String>,
    },
    /// The broker failed in a way that may pass (not the controller, busy, ...).
    #[error("{operation} of {subject} failed: {code:?}{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Retriable {
        operation: &'static str,
        subject: String,
        code: ResponseError,
        message: Option<String>,
    },
    #[error("{operation}: unexpected response: {detail}")]
    Protocol {
        operation: &'static str,
        detail: String,
    },
    /// A reassignment of the topic's replicas could not be planned or carried out.
    #[error("changing the replication factor of topic `{topic}`: {source}")]
    Reassignment {
        topic: String,
        #[source]
        source: ExecError,
    },
}

impl AdminError {
    /// Whether only a change of the spec (or of the cluster it names) can make the operation
    /// succeed.
    pub fn needs_spec_change(&self) -> bool {
        match self {
            AdminError::Rejected { .. } => true,
            AdminError::Reassignment { source, .. } => matches!(
                source,
                ExecError::Plan(
                    PlanError::InvalidReplicationFactor { .. }
                        | PlanError::ReplicationFactorExceedsBrokers { .. }
                        | PlanError::UnknownTopic(_)
                )
            ),
            _ => false,
        }
    }

    /// Whether the brokers could not be reached (or did not answer in time).
    pub fn unreachable(&self) -> bool {
        matches!(
            self,
            AdminError::Unreachable { .. } | AdminError::Timeout { .. }
        )
    }

    /// Whether the refusal is that the cluster has fewer brokers than the replication factor:
    /// permanent on a cluster that is up, passing on one whose brokers are still registering.
    pub fn too_few_brokers(&self) -> bool {
        match self {
            AdminError::Rejected { code, .. } => *code == ResponseError::InvalidReplicationFactor,
            AdminError::Reassignment { source, .. } => matches!(
                source,
                ExecError::Plan(
                    PlanError::InvalidReplicationFactor { .. }
                        | PlanError::ReplicationFactorExceedsBrokers { .. }
                )
            ),
            _ => false,
        }
    }

    pub fn metric_label(&self) -> &'static str {
        match self {
            AdminError::Unreachable { .. } => "kafka_unreachable",
            AdminError::Timeout { .. } => "kafka_timeout",
            AdminError::Rejected { .. } => "kafka_rejected",
            AdminError::Retriable { .. } => "kafka_error",
            AdminError::Protocol { .. } => "kafka_protocol",
            AdminError::Reassignment { .. } => "kafka_reassignment",
        }
    }
}

/// Topic administration on the cluster reachable at `bootstrap` (`host:port`).
pub trait TopicAdmin: Send + Sync {
    /// The topic, or `None` when the cluster has no topic of that name.
    fn describe<'a>(
        &'a self,
        bootstrap: &'a str,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<Option<TopicDescription>, AdminError>>;

    /// Creates the topic and returns its topic id.
    fn create<'a>(
        &'a self,
        bootstrap: &'a str,
        topic: &'a NewTopic,
    ) -> BoxFuture<'a, Result<String, AdminError>>;

    /// Grows the topic to `count` partitions.
    fn create_partitions<'a>(
        &'a self,
        bootstrap: &'a str,
        topic: &'a str,
        count: i32,
    ) -> BoxFuture<'a, Result<(), AdminError>>;

    fn alter_configs<'a>(
        &'a self,
        bootstrap: &'a str,
        topic: &'a str,
        changes: &'a [ConfigChange],
    ) -> BoxFuture<'a, Result<(), AdminError>>;

    /// Deletes the topic; a topic that is already gone is not an error.
    fn delete<'a>(
        &'a self,
        bootstrap: &'a str,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<(), AdminError>>;

    /// One round towards every partition of the topic having `replicas` replicas: plans with
    /// the balancer, submits a bounded number of reassignments, elects preferred leaders once
    /// nothing moves, and returns where the change stands without waiting for it.
    fn change_replication_factor<'a>(
        &'a self,
        bootstrap: &'a str,
        topic: &'a str,
        replicas: i32,
    ) -> BoxFuture<'a, Result<Progress, AdminError>>;
}

/// Protocol versions used: supported by Oxbow and by Apache Kafka 3.x and 4.x.
const METADATA_V: i16 = 12;
const CREATE_TOPICS_V: i16 = 7;
const CREATE_PARTITIONS_V: i16 = 3;
const DESCRIBE_CONFIGS_V: i16 = 4;
const INCREMENTAL_ALTER_CONFIGS_V: i16 = 1;
const DELETE_TOPICS_V: i16 = 6;
const LIST_REASSIGNMENTS_V: i16 = 0;
/// `resource_type` of a topic in the configs APIs.
const TOPIC_RESOURCE: i8 = 2;
/// `config_source` of a topic's own override (`DYNAMIC_TOPIC_CONFIG`).
const TOPIC_CONFIG_SOURCE: i8 = 1;

/// [`TopicAdmin`] over the Kafka protocol: one short connection per operation, each bounded
/// by a timeout, so a hung broker never stalls a reconciliation.
#[derive(Debug, Clone)]
pub struct KafkaAdmin {
    pub timeout: Duration,
    /// Partitions reassigned at once by a replication-factor change (cluster-wide, counting
    /// reassignments already in flight).
    pub max_moves: usize,
}

impl Default for KafkaAdmin {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(15),
            max_moves: 10,
        }
    }
}

/// A connection to the first of `bootstrap`'s comma-separated addresses that accepts one.
pub(crate) async fn connect_any(bootstrap: &str) -> Result<Connection, ClientError> {
    let mut last = None;
    for address in bootstrap
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        match Connection::connect(address).await {
            Ok(connection) => return Ok(connection),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| ClientError::Encode(format!("no address in `{bootstrap}`"))))
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

/// Rejections a retry will not cure.
fn is_permanent(code: ResponseError) -> bool {
    matches!(
        code,
        ResponseError::InvalidConfig
            | ResponseError::InvalidTopicException
            | ResponseError::InvalidPartitions
            | ResponseError::InvalidReplicationFactor
            | ResponseError::InvalidReplicaAssignment
            | ResponseError::PolicyViolation
            | ResponseError::TopicAuthorizationFailed
            | ResponseError::ClusterAuthorizationFailed
            | ResponseError::TopicDeletionDisabled
            | ResponseError::InvalidRequest
            | ResponseError::UnsupportedVersion
            | ResponseError::UnsupportedSaslMechanism
            | ResponseError::DuplicateResource
            | ResponseError::ResourceNotFound
            | ResponseError::SecurityDisabled
    )
}

fn check(
    operation: &'static str,
    topic: &str,
    code: i16,
    message: Option<&StrBytes>,
) -> Result<(), AdminError> {
    check_code(operation, || format!("topic `{topic}`"), code, message)
}

/// `Ok` for error code 0, else the error: [`AdminError::Rejected`] when a retry will not cure
/// it, [`AdminError::Retriable`] otherwise. `subject` names what the request was about.
pub(crate) fn check_code(
    operation: &'static str,
    subject: impl FnOnce() -> String,
    code: i16,
    message: Option<&StrBytes>,
) -> Result<(), AdminError> {
    if code == 0 {
        return Ok(());
    }
    let message = message.map(|m| m.to_string());
    let Some(error) = ResponseError::try_from_code(code) else {
        return Err(AdminError::Protocol {
            operation,
            detail: format!("unknown error code {code}"),
        });
    };
    let subject = subject();
    if is_permanent(error) {
        Err(AdminError::Rejected {
            operation,
            subject,
            code: error,
            message,
        })
    } else {
        Err(AdminError::Retriable {
            operation,
            subject,
            code: error,
            message,
        })
    }
}

impl KafkaAdmin {
    /// Connects, sends one request and reads its response, all within the timeout.
    pub(crate) async fn call<R: Request>(
        &self,
        operation: &'static str,
        bootstrap: &str,
        request: &R,
        version: i16,
    ) -> Result<R::Response, AdminError> {
        let exchange = async {
            let mut connection = connect_any(bootstrap).await?;
            connection.send(request, version).await
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(source)) => Err(AdminError::Unreachable {
                operation,
                address: bootstrap.to_string(),
                source,
            }),
            Err(_) => Err(AdminError::Timeout {
                operation,
                address: bootstrap.to_string(),
                timeout: self.timeout,
            }),
        }
    }

    async fn describe_topic(
        &self,
        bootstrap: &str,
        topic: &str,
    ) -> Result<Option<TopicDescription>, AdminError> {
        let request = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(topic_name(topic)))
            ]))
            .with_allow_auto_topic_creation(false);
        let response = self
            .call("Metadata", bootstrap, &request, METADATA_V)
            .await?;
        let Some(found) = response
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == topic))
        else {
            return Ok(None);
        };
        if found.error_code == ResponseError::UnknownTopicOrPartition.code() {
            return Ok(None);
        }
        check("Metadata", topic, found.error_code, None)?;
        let partitions = i32::try_from(found.partitions.len()).unwrap_or(i32::MAX);
        // Metadata lists a partition being reassigned with the replicas it is losing too;
        // only the reassignment list tells them apart.
        let request = ListPartitionReassignmentsRequest::default()
            .with_timeout_ms(i32::try_from(self.timeout.as_millis()).unwrap_or(i32::MAX))
            .with_topics(Some(vec![ListPartitionReassignmentsTopics::default()
                .with_name(topic_name(topic))
                .with_partition_indexes(
                    found.partitions.iter().map(|p| p.partition_index).collect(),
                )]));
        let listed = self
            .call(
                "ListPartitionReassignments",
                bootstrap,
                &request,
                LIST_REASSIGNMENTS_V,
            )
            .await?;
        check(
            "ListPartitionReassignments",
            topic,
            listed.error_code,
            listed.error_message.as_ref(),
        )?;
        let removing: BTreeMap<i32, Vec<i32>> = listed
            .topics
            .iter()
            .filter(|t| t.name.0.as_str() == topic)
            .flat_map(|t| &t.partitions)
            .map(|p| {
                (
                    p.partition_index,
                    p.removing_replicas.iter().map(|b| b.0).collect(),
                )
            })
            .collect();
        let reassigning = i32::try_from(removing.len()).unwrap_or(i32::MAX);
        let counts: Vec<usize> = found
            .partitions
            .iter()
            .map(|p| {
                let leaving = removing.get(&p.partition_index);
                p.replica_nodes
                    .iter()
                    .filter(|b| leaving.is_none_or(|l| !l.contains(&b.0)))
                    .count()
            })
            .collect();
        let replicas = counts.iter().copied().max().unwrap_or(0);
        let min_replicas = counts.iter().copied().min().unwrap_or(0);

        let request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(TOPIC_RESOURCE)
                .with_resource_name(text(topic))
                .with_configuration_keys(None),
        ]);
        let response = self
            .call("DescribeConfigs", bootstrap, &request, DESCRIBE_CONFIGS_V)
            .await?;
        let result = response.results.first().ok_or(AdminError::Protocol {
            operation: "DescribeConfigs",
            detail: "no result".to_string(),
        })?;
        check(
            "DescribeConfigs",
            topic,
            result.error_code,
            result.error_message.as_ref(),
        )?;
        let overrides = result
            .configs
            .iter()
            .filter(|c| c.config_source == TOPIC_CONFIG_SOURCE)
            .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
            .collect();
        Ok(Some(TopicDescription {
            topic_id: found.topic_id.to_string(),
            partitions,
            replicas: i32::try_from(replicas).unwrap_or(i32::MAX),
            min_replicas: i32::try_from(min_replicas).unwrap_or(i32::MAX),
            reassigning,
            overrides,
        }))
    }

    async fn create_topic(&self, bootstrap: &str, topic: &NewTopic) -> Result<String, AdminError> {
        let configs = topic
            .config
            .iter()
            .map(|(k, v)| {
                CreatableTopicConfig::default()
                    .with_name(text(k))
                    .with_value(Some(text(v)))
            })
            .collect();
        let replicas = topic
            .replicas
            .map_or(-1, |r| i16::try_from(r).unwrap_or(i16::MAX));
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(i32::try_from(self.timeout.as_millis()).unwrap_or(i32::MAX))
            .with_topics(vec![CreatableTopic::default()
                .with_name(topic_name(&topic.name))
                .with_num_partitions(topic.partitions.unwrap_or(-1))
                .with_replication_factor(replicas)
                .with_configs(configs)]);
        let response = self
            .call("CreateTopics", bootstrap, &request, CREATE_TOPICS_V)
            .await?;
        let result = response.topics.first().ok_or(AdminError::Protocol {
            operation: "CreateTopics",
            detail: "no result".to_string(),
        })?;
        check(
            "CreateTopics",
            &topic.name,
            result.error_code,
            result.error_message.as_ref(),
        )?;
        Ok(result.topic_id.to_string())
    }

    async fn grow(&self, bootstrap: &str, topic: &str, count: i32) -> Result<(), AdminError> {
        let request = CreatePartitionsRequest::default()
            .with_timeout_ms(i32::try_from(self.timeout.as_millis()).unwrap_or(i32::MAX))
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(topic_name(topic))
                .with_count(count)
                .with_assignments(None)]);
        let response = self
            .call("CreatePartitions", bootstrap, &request, CREATE_PARTITIONS_V)
            .await?;
        let result = response.results.first().ok_or(AdminError::Protocol {
            operation: "CreatePartitions",
            detail: "no result".to_string(),
        })?;
        check(
            "CreatePartitions",
            topic,
            result.error_code,
            result.error_message.as_ref(),
        )
    }

    async fn alter(
        &self,
        bootstrap: &str,
        topic: &str,
        changes: &[ConfigChange],
    ) -> Result<(), AdminError> {
        let configs = changes
            .iter()
            .map(|change| match change {
                ConfigChange::Set(key, value) => AlterableConfig::default()
                    .with_name(text(key))
                    .with_config_operation(0)
                    .with_value(Some(text(value))),
                ConfigChange::Delete(key) => AlterableConfig::default()
                    .with_name(text(key))
                    .with_config_operation(1)
                    .with_value(None),
            })
            .collect();
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(TOPIC_RESOURCE)
                .with_resource_name(text(topic))
                .with_configs(configs),
        ]);
        let response = self
            .call(
                "IncrementalAlterConfigs",
                bootstrap,
                &request,
                INCREMENTAL_ALTER_CONFIGS_V,
            )
            .await?;
        let result = response.responses.first().ok_or(AdminError::Protocol {
            operation: "IncrementalAlterConfigs",
            detail: "no result".to_string(),
        })?;
        check(
            "IncrementalAlterConfigs",
            topic,
            result.error_code,
            result.error_message.as_ref(),
        )
    }

    async fn delete_topic(&self, bootstrap: &str, topic: &str) -> Result<(), AdminError> {
        let request = DeleteTopicsRequest::default()
            .with_timeout_ms(i32::try_from(self.timeout.as_millis()).unwrap_or(i32::MAX))
            .with_topics(vec![
                DeleteTopicState::default().with_name(Some(topic_name(topic)))
            ]);
        let response = self
            .call("DeleteTopics", bootstrap, &request, DELETE_TOPICS_V)
            .await?;
        let result = response.responses.first().ok_or(AdminError::Protocol {
            operation: "DeleteTopics",
            detail: "no result".to_string(),
        })?;
        if result.error_code == ResponseError::UnknownTopicOrPartition.code() {
            return Ok(());
        }
        check(
            "DeleteTopics",
            topic,
            result.error_code,
            result.error_message.as_ref(),
        )
    }
}

impl KafkaAdmin {
    async fn reassign(
        &self,
        bootstrap: &str,
        topic: &str,
        replicas: i32,
    ) -> Result<Progress, AdminError> {
        let failed = |source| AdminError::Reassignment {
            topic: topic.to_string(),
            source,
        };
        let balancer = KafkaBalanceAdmin {
            request_timeout: self.timeout,
        };
        let goal = Goal::ReplicationFactor {
            topic: topic.to_string(),
            replication_factor: usize::try_from(replicas).unwrap_or(0),
        };
        let observed = balancer.observe(bootstrap).await.map_err(failed)?;
        let report = step::step(&balancer, bootstrap, &goal, &observed, self.max_moves)
            .await
            .map_err(failed)?;
        if let Some(first) = report.not_elected.first() {
            tracing::info!(%topic, partition = first.partition, reason = %first.reason, "preferred leader not elected yet");
        }
        Ok(report.progress)
    }
}

fn boxed<'a, T>(future: impl Future<Output = T> + Send + 'a) -> BoxFuture<'a, T> {
    future.boxed()
}

impl TopicAdmin for KafkaAdmin {
    fn describe<'a>(
        &'a self,
        bootstrap: &'a str,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<Option<TopicDescription>, AdminError>> {
        boxed(self.describe_topic(bootstrap, topic))
    }

    fn create<'a>(
        &'a self,
        bootstrap: &'a str,
        topic: &'a NewTopic,
    ) -> BoxFuture<'a, Result<String, AdminError>> {
        boxed(self.create_topic(bootstrap, topic))
    }

    fn create_partitions<'a>(
        &'a self,
        bootstrap: &'a str,
        topic: &'a str,
        count: i32,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        boxed(self.grow(bootstrap, topic, count))
    }

    fn alter_configs<'a>(
        &'a self,
        bootstrap: &'a str,
        topic: &'a str,
        changes: &'a [ConfigChange],
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        boxed(self.alter(bootstrap, topic, changes))
    }

    fn delete<'a>(
        &'a self,
        bootstrap: &'a str,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        boxed(self.delete_topic(bootstrap, topic))
    }

    fn change_replication_factor<'a>(
        &'a self,
        bootstrap: &'a str,
        topic: &'a str,
        replicas: i32,
    ) -> BoxFuture<'a, Result<Progress, AdminError>> {
        boxed(self.reassign(bootstrap, topic, replicas))
    }
}
