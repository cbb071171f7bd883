//! Metadata: brokers, topics and partition leaders, creating topics on demand when allowed.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::{str_bytes, topic_name};
use crate::broker::Broker;
use crate::config::validate_topic_name;
use crate::controller::TopicMeta;

/// Kafka's marker for "authorized operations were not requested".
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

pub(super) fn handle(broker: &Broker, request: MetadataRequest, version: i16) -> MetadataResponse {
    // v0 asks for every topic with an empty list; later versions use null for that.
    let requested = match request.topics {
        Some(list) if version == 0 && list.is_empty() => None,
        other => other,
    };
    let auto_create =
        broker.config.auto_create_topics && (version < 4 || request.allow_auto_topic_creation);
    let topics = match requested {
        None => broker
            .topics()
            .iter()
            .map(|t| describe(broker, t))
            .collect(),
        Some(list) => list
            .into_iter()
            .map(|wanted| match wanted.name {
                Some(name) => by_name(broker, &name, auto_create),
                None => by_id(broker, wanted.topic_id),
            })
            .collect(),
    };
    let node = BrokerId(broker.node_id());
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(node)
            .with_host(str_bytes(&broker.advertised.host))
            .with_port(i32::from(broker.advertised.port))])
        .with_cluster_id(Some(str_bytes(&broker.cluster_id())))
        .with_controller_id(node)
        .with_topics(topics)
        .with_cluster_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}

fn by_name(broker: &Broker, name: &str, auto_create: bool) -> MetadataResponseTopic {
    if let Some(topic) = broker.topic(name) {
        return describe(broker, &topic);
    }
    let failed = |code: ResponseError| {
        MetadataResponseTopic::default()
            .with_name(Some(topic_name(name)))
            .with_error_code(code.code())
            .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
    };
    if let Err(reason) = validate_topic_name(name) {
        tracing::debug!(topic = name, %reason, "metadata for an invalid topic name");
        return failed(ResponseError::InvalidTopicException);
    }
    if !auto_create {
        return failed(ResponseError::UnknownTopicOrPartition);
    }
    match broker.auto_create_topic(name) {
        Ok(topic) => describe(broker, &topic),
        Err(e) => {
            tracing::warn!(topic = name, error = %e.message, "automatic topic creation failed");
            failed(e.code)
        }
    }
}

fn by_id(broker: &Broker, id: Uuid) -> MetadataResponseTopic {
    match broker.topic_by_id(id) {
        Some(topic) => describe(broker, &topic),
        None => MetadataResponseTopic::default()
            .with_topic_id(id)
            .with_error_code(ResponseError::UnknownTopicId.code())
            .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED),
    }
}

fn describe(broker: &Broker, topic: &TopicMeta) -> MetadataResponseTopic {
    let node = BrokerId(broker.node_id());
    let partitions = (0..topic.partitions)
        .map(|index| {
            MetadataResponsePartition::default()
                .with_partition_index(index)
                .with_leader_id(node)
                .with_leader_epoch(0)
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(&topic.name)))
        .with_topic_id(topic.id)
        .with_is_internal(topic.name == crate::group::OFFSETS_TOPIC)
        .with_partitions(partitions)
        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}
