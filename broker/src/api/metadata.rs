//! Metadata: brokers, topics, partition leaders, replicas and ISR, creating topics on demand
//! when allowed.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::acl::AUTHORIZED_OPERATIONS_OMITTED;
use super::{str_bytes, topic_name};
use crate::broker::Broker;
use crate::config::validate_topic_name;
use crate::controller::image::{MetadataImage, TopicImage, NO_LEADER};
use crate::group::OFFSETS_TOPIC;
use crate::security::authorizer::{Operation, ResourceType, CLUSTER_NAME};

/// Whether the principal may see `topic` at all: topics it may not describe are left out.
fn may_describe(broker: &Broker, context: &super::RequestContext, topic: &str) -> bool {
    context.allowed(broker, Operation::Describe, ResourceType::Topic, topic)
}

pub(super) async fn handle(
    broker: &Broker,
    context: &super::RequestContext,
    request: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    // v0 asks for every topic with an empty list; later versions use null for that.
    let requested = match request.topics {
        Some(list) if version == 0 && list.is_empty() => None,
        other => other,
    };
    let auto_create =
        broker.config.auto_create_topics && (version < 4 || request.allow_auto_topic_creation);
    let include_topic_operations = request.include_topic_authorized_operations;
    let include_cluster_operations = request.include_cluster_authorized_operations;
    let mut topics: Vec<MetadataResponseTopic> = match requested {
        None => {
            let image = broker.image();
            image
                .topics
                .values()
                .filter(|t| may_describe(broker, context, &t.name))
                .map(|t| describe(&image, t))
                .collect()
        }
        Some(list) => {
            let mut topics = Vec::with_capacity(list.len());
            for wanted in list {
                topics.push(match wanted.name {
                    Some(name) => by_name(broker, context, &name, auto_create).await,
                    None => by_id(broker, context, wanted.topic_id),
                });
            }
            topics
        }
    };
    // KIP-430: what the client may do with each topic it was told about.
    if include_topic_operations {
        for topic in topics.iter_mut().filter(|t| t.error_code == 0) {
            if let Some(name) = &topic.name {
                topic.topic_authorized_operations = context.authorized_operations(
                    broker,
                    true,
                    ResourceType::Topic,
                    name.0.as_str(),
                );
            }
        }
    }
    let image = broker.image();
    // Each broker's address on the listener this client came in on.
    let brokers = image
        .live_brokers()
        .filter_map(|b| {
            let (host, port) = b.endpoint(&context.listener)?;
            Some(
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(b.id))
                    .with_host(str_bytes(host))
                    .with_port(i32::from(port))
                    .with_rack(b.rack.as_deref().map(str_bytes)),
            )
        })
        .collect();
    let controller = broker.controller_id_for_clients();
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(str_bytes(&image.cluster_id)))
        .with_controller_id(BrokerId(controller))
        .with_topics(topics)
        .with_cluster_authorized_operations(context.authorized_operations(
            broker,
            include_cluster_operations,
            ResourceType::Cluster,
            CLUSTER_NAME,
        ))
}

async fn by_name(
    broker: &Broker,
    context: &super::RequestContext,
    name: &str,
    auto_create: bool,
) -> MetadataResponseTopic {
    let failed = |code: ResponseError| {
        MetadataResponseTopic::default()
            .with_name(Some(topic_name(name)))
            .with_error_code(code.code())
            .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
    };
    // Checked before existence, so the answer does not tell whether the topic exists.
    if !may_describe(broker, context, name) {
        return failed(ResponseError::TopicAuthorizationFailed);
    }
    let image = broker.image();
    if let Some(topic) = image.topics.get(name) {
        return describe(&image, topic);
    }
    if let Err(reason) = validate_topic_name(name) {
        tracing::debug!(topic = name, %reason, "metadata for an invalid topic name");
        return failed(ResponseError::InvalidTopicException);
    }
    if !auto_create {
        return failed(ResponseError::UnknownTopicOrPartition);
    }
    if !context.allowed_on_cluster(broker, Operation::Create)
        && !context.allowed(broker, Operation::Create, ResourceType::Topic, name)
    {
        return failed(ResponseError::TopicAuthorizationFailed);
    }
    match broker.auto_create_topic(name).await {
        Ok(topic) => describe(&broker.image(), &topic),
        Err(e) => {
            tracing::warn!(topic = name, error = %e.message, "automatic topic creation failed");
            failed(e.code)
        }
    }
}

fn by_id(broker: &Broker, context: &super::RequestContext, id: Uuid) -> MetadataResponseTopic {
    let image = broker.image();
    match image.topic_by_id(id) {
        Some(topic) if !may_describe(broker, context, &topic.name) => {
            MetadataResponseTopic::default()
                .with_topic_id(id)
                .with_error_code(ResponseError::TopicAuthorizationFailed.code())
                .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
        }
        Some(topic) => describe(&image, topic),
        None => MetadataResponseTopic::default()
            .with_topic_id(id)
            .with_error_code(ResponseError::UnknownTopicId.code())
            .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED),
    }
}

fn describe(image: &MetadataImage, topic: &TopicImage) -> MetadataResponseTopic {
    let ids = |list: &[i32]| list.iter().copied().map(BrokerId).collect::<Vec<_>>();
    let partitions = topic
        .partitions
        .iter()
        .enumerate()
        .map(|(index, state)| {
            let offline: Vec<i32> = state
                .replicas
                .iter()
                .copied()
                .filter(|r| {
                    state.offline.contains(r) || image.brokers.get(r).is_none_or(|b| b.fenced)
                })
                .collect();
            let partition = MetadataResponsePartition::default()
                .with_partition_index(index as i32)
                .with_leader_id(BrokerId(state.leader))
                .with_leader_epoch(state.leader_epoch)
                .with_replica_nodes(ids(&state.replicas))
                .with_isr_nodes(ids(&state.isr))
                .with_offline_replicas(ids(&offline));
            if state.leader == NO_LEADER {
                partition.with_error_code(ResponseError::LeaderNotAvailable.code())
            } else {
                partition
            }
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(&topic.name)))
        .with_topic_id(topic.id)
        .with_is_internal(topic.name == OFFSETS_TOPIC)
        .with_partitions(partitions)
        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}
