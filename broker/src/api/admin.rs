//! Topic administration: CreateTopics, DeleteTopics and CreatePartitions.

use std::collections::{BTreeMap, HashSet};

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    BrokerId, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest,
    CreateTopicsResponse, DeleteRecordsRequest, DeleteRecordsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse,
};
use kafka_protocol::ResponseError;

use super::{str_bytes, topic_name, RequestContext};
use crate::broker::{ApiError, Broker};
use crate::config::TOPIC_DEFS;
use crate::controller::image::TopicImage;
use crate::security::authorizer::{Operation, ResourceType};

/// Creating and deleting partitions under the client's `controller_mutation_rate`
/// (KIP-599). Strict requests (CreateTopics v6+, CreatePartitions v3+, DeleteTopics v5+) have a
/// topic refused with THROTTLING_QUOTA_EXCEEDED while the quota is spent, and the response
/// says how long to wait; older versions are always let through and then told how long to
/// wait. A topic is judged before it is changed, and its partitions counted after, so one
/// topic may take the bucket below zero, as in Kafka. `validate_only` counts nothing.
struct MutationQuota<'a> {
    broker: &'a Broker,
    image: std::sync::Arc<crate::controller::image::MetadataImage>,
    client: crate::quota::manager::Client<'a>,
    strict: bool,
    /// The longest wait a refused topic was given.
    refused_wait: i64,
}

impl<'a> MutationQuota<'a> {
    fn new(broker: &'a Broker, context: &'a RequestContext, strict: bool) -> Self {
        MutationQuota {
            broker,
            image: broker.image(),
            client: super::throttle::client(context),
            strict,
            refused_wait: 0,
        }
    }

    /// Whether a topic may be changed now.
    fn check(&mut self) -> Result<(), ApiError> {
        if !self.strict {
            return Ok(());
        }
        let wait = self
            .broker
            .quotas
            .mutation_throttle_ms(&self.image.client_quotas, self.client);
        if wait > 0 {
            self.refused_wait = self.refused_wait.max(wait);
            return Err(ApiError::new(
                ResponseError::ThrottlingQuotaExceeded,
                "The throttling quota has been exceeded.",
            ));
        }
        Ok(())
    }

    fn record(&self, partitions: usize) {
        self.broker.quotas.record_mutations(
            &self.image.client_quotas,
            self.client,
            partitions as f64,
        );
    }

    /// The response's `throttle_time_ms`.
    fn throttle_ms(&self) -> i32 {
        let wait = if self.strict {
            self.refused_wait
        } else {
            self.broker
                .quotas
                .mutation_throttle_ms(&self.image.client_quotas, self.client)
        };
        i32::try_from(wait).unwrap_or(i32::MAX)
    }
}

/// The error of a topic operation the principal may not perform.
fn topic_denied(context: &RequestContext, operation: Operation, name: &str) -> ApiError {
    ApiError::new(
        ResponseError::TopicAuthorizationFailed,
        format!("{} may not {operation:?} topic `{name}`", context.principal),
    )
}

pub(super) async fn create_topics(
    broker: &Broker,
    context: &RequestContext,
    request: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    // CREATE on the cluster allows every topic; otherwise CREATE on each topic is needed.
    let create_any = context.allowed_on_cluster(broker, Operation::Create);
    let mut seen = HashSet::new();
    let duplicates: HashSet<String> = request
        .topics
        .iter()
        .filter(|t| !seen.insert(t.name.0.to_string()))
        .map(|t| t.name.0.to_string())
        .collect();
    let mut quota = MutationQuota::new(broker, context, version >= 6);
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let outcome = if duplicates.contains(&name) {
            Err(ApiError::new(
                ResponseError::InvalidRequest,
                format!("topic `{name}` appears more than once in the request"),
            ))
        } else if !create_any
            && !context.allowed(broker, Operation::Create, ResourceType::Topic, &name)
        {
            Err(topic_denied(context, Operation::Create, &name))
        } else if request.validate_only {
            create_one(broker, topic, true).await
        } else {
            match quota.check() {
                Ok(()) => {
                    let created = create_one(broker, topic, false).await;
                    if let Ok(topic) = &created {
                        quota.record(topic.partitions.len());
                    }
                    created
                }
                Err(e) => Err(e),
            }
        };
        let result = CreatableTopicResult::default()
            .with_name(topic_name(&name))
            .with_num_partitions(-1)
            .with_replication_factor(-1);
        results.push(match outcome {
            Ok(created) => {
                let result = result
                    .with_num_partitions(created.partitions.len() as i32)
                    .with_replication_factor(created.replication_factor());
                let result = if version >= 7 {
                    result.with_topic_id(created.id)
                } else {
                    result
                };
                if context.allowed(
                    broker,
                    Operation::DescribeConfigs,
                    ResourceType::Topic,
                    &name,
                ) {
                    result.with_configs(Some(effective_configs(broker, &created.configs)))
                } else {
                    result.with_topic_config_error_code(
                        ResponseError::TopicAuthorizationFailed.code(),
                    )
                }
            }
            Err(e) => {
                tracing::info!(topic = name, error = %e.message, "topic not created");
                result
                    .with_error_code(e.code.code())
                    .with_error_message(Some(str_bytes(&e.message)))
            }
        });
    }
    CreateTopicsResponse::default()
        .with_topics(results)
        .with_throttle_time_ms(quota.throttle_ms())
}

async fn create_one(
    broker: &Broker,
    topic: CreatableTopic,
    validate_only: bool,
) -> Result<TopicImage, ApiError> {
    let mut configs = BTreeMap::new();
    for config in &topic.configs {
        let Some(value) = &config.value else {
            return Err(ApiError::new(
                ResponseError::InvalidConfig,
                format!("config `{}` has a null value", config.name.as_str()),
            ));
        };
        configs.insert(config.name.to_string(), value.to_string());
    }
    let assignment = if topic.assignments.is_empty() {
        None
    } else {
        if topic.num_partitions != -1 || topic.replication_factor != -1 {
            return Err(ApiError::new(
                ResponseError::InvalidRequest,
                "give either replica assignments or a partition count and replication factor, not both",
            ));
        }
        let mut assignments: Vec<_> = topic.assignments.iter().collect();
        assignments.sort_by_key(|a| a.partition_index);
        let mut lists = Vec::with_capacity(assignments.len());
        for (expected, assignment) in assignments.iter().enumerate() {
            if usize::try_from(assignment.partition_index).ok() != Some(expected) {
                return Err(ApiError::new(
                    ResponseError::InvalidReplicaAssignment,
                    "replica assignments must cover partitions 0..n exactly once",
                ));
            }
            lists.push(check_replicas(&assignment.broker_ids)?);
        }
        Some(lists)
    };
    broker
        .create_topic(
            topic.name.as_str(),
            topic.num_partitions,
            topic.replication_factor,
            configs,
            assignment,
            validate_only,
        )
        .await
}

/// A replica list from a request: not empty, no broker twice.
fn check_replicas(replicas: &[BrokerId]) -> Result<Vec<i32>, ApiError> {
    let listed: Vec<i32> = replicas.iter().map(|id| id.0).collect();
    let mut distinct = listed.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if listed.is_empty() || distinct.len() != listed.len() {
        return Err(ApiError::new(
            ResponseError::InvalidReplicaAssignment,
            format!("replica list {listed:?} is empty or names a broker twice"),
        ));
    }
    Ok(listed)
}

/// The topic's effective settings as CreateTopics v5+ reports them.
fn effective_configs(
    broker: &Broker,
    overrides: &BTreeMap<String, String>,
) -> Vec<CreatableTopicConfigs> {
    TOPIC_DEFS
        .iter()
        .filter(|def| !def.def.internal || overrides.contains_key(def.def.name))
        .map(|def| {
            let (value, source) = match overrides.get(def.def.name) {
                Some(v) => (v.clone(), crate::config::ConfigSource::Topic),
                None => broker.config.topic_default(def),
            };
            CreatableTopicConfigs::default()
                .with_name(str_bytes(def.def.name))
                .with_value(Some(str_bytes(&value)))
                .with_config_source(source.code())
        })
        .collect()
}

pub(super) async fn delete_topics(
    broker: &Broker,
    context: &RequestContext,
    request: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let targets: Vec<(Option<String>, uuid::Uuid)> = if version >= 6 {
        request
            .topics
            .into_iter()
            .map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        request
            .topic_names
            .into_iter()
            .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
            .collect()
    };
    let mut quota = MutationQuota::new(broker, context, version >= 5);
    let mut responses = Vec::with_capacity(targets.len());
    for (name, id) in targets {
        let resolved = match &name {
            Some(name) => Ok(name.clone()),
            None => broker.topic_by_id(id).map(|t| t.name).ok_or_else(|| {
                ApiError::new(
                    ResponseError::UnknownTopicId,
                    format!("no topic has id {id}"),
                )
            }),
        };
        let outcome = match resolved {
            Ok(name) if !context.allowed(broker, Operation::Delete, ResourceType::Topic, &name) => {
                Err(topic_denied(context, Operation::Delete, &name))
            }
            Ok(name) => match quota.check() {
                Ok(()) => {
                    let deleted = broker.delete_topic(&name).await;
                    if let Ok(topic) = &deleted {
                        quota.record(topic.partitions.len());
                    }
                    deleted
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        let result = DeletableTopicResult::default().with_name(name.as_deref().map(topic_name));
        responses.push(match outcome {
            Ok(deleted) => result
                .with_name(Some(topic_name(&deleted.name)))
                .with_topic_id(deleted.id),
            Err(e) => result
                .with_topic_id(id)
                .with_error_code(e.code.code())
                .with_error_message(Some(str_bytes(&e.message))),
        });
    }
    DeleteTopicsResponse::default()
        .with_responses(responses)
        .with_throttle_time_ms(quota.throttle_ms())
}

pub(super) async fn create_partitions(
    broker: &Broker,
    context: &RequestContext,
    request: CreatePartitionsRequest,
    version: i16,
) -> CreatePartitionsResponse {
    let mut quota = MutationQuota::new(broker, context, version >= 3);
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let assignment = match &topic.assignments {
            Some(list) => list
                .iter()
                .map(|a| check_replicas(&a.broker_ids))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            None => Ok(None),
        };
        let outcome = match assignment {
            _ if !context.allowed(broker, Operation::Alter, ResourceType::Topic, &name) => {
                Err(topic_denied(context, Operation::Alter, &name))
            }
            Ok(assignment) if request.validate_only => {
                broker
                    .create_partitions(&name, topic.count, assignment, true)
                    .await
            }
            Ok(assignment) => match quota.check() {
                Ok(()) => {
                    let before = broker.topic(&name).map_or(0, |t| t.partitions.len());
                    let grown = broker
                        .create_partitions(&name, topic.count, assignment, false)
                        .await;
                    if let Ok(topic) = &grown {
                        quota.record(topic.partitions.len().saturating_sub(before));
                    }
                    grown
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        let result = CreatePartitionsTopicResult::default().with_name(topic.name);
        results.push(match outcome {
            Ok(_) => result,
            Err(e) => result
                .with_error_code(e.code.code())
                .with_error_message(Some(str_bytes(&e.message))),
        });
    }
    CreatePartitionsResponse::default()
        .with_results(results)
        .with_throttle_time_ms(quota.throttle_ms())
}

pub(super) fn delete_records(
    broker: &Broker,
    context: &RequestContext,
    request: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let name = topic.name.0.to_string();
            let authorized = context.allowed(broker, Operation::Delete, ResourceType::Topic, &name);
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let result = DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index);
                    let outcome = if authorized {
                        broker.delete_records(&name, p.partition_index, p.offset)
                    } else {
                        Err(topic_denied(context, Operation::Delete, &name))
                    };
                    match outcome {
                        Ok(low_watermark) => result.with_low_watermark(low_watermark),
                        Err(e) => {
                            tracing::info!(topic = name, partition = p.partition_index, error = %e.message, "records not deleted");
                            result.with_low_watermark(-1).with_error_code(e.code.code())
                        }
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default().with_name(topic.name).with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}
