//! Committed offsets: OffsetCommit, OffsetFetch and OffsetDelete.

use std::collections::BTreeMap;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchRequest, OffsetFetchResponse,
};
use kafka_protocol::ResponseError;

use super::{str_bytes, topic_name, RequestContext};
use crate::broker::Broker;
use crate::group::offsets::OffsetRecord;
use crate::group::CommittedOffset;
use crate::security::authorizer::{Operation, ResourceType};

/// Per topic, each partition's record to write or the error to answer.
type CommitPlan = Vec<(String, Vec<(i32, Result<OffsetRecord, ResponseError>)>)>;
/// Per topic, each partition's committed offset (if any) or the error to answer for it.
type Committed = Vec<(
    String,
    Vec<(i32, Result<Option<CommittedOffset>, ResponseError>)>,
)>;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(super) async fn commit(
    broker: &Broker,
    context: &RequestContext,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let group = request.group_id.0.to_string();
    let group_allowed = context.allowed(broker, Operation::Read, ResourceType::Group, &group);
    let checked = if group_allowed {
        Ok(())
    } else {
        Err(ResponseError::GroupAuthorizationFailed)
    };
    let checked = checked
        .and_then(|()| broker.check_coordinator(&group))
        .and_then(|()| {
            broker.groups.check_commit(
                &group,
                request.generation_id_or_member_epoch,
                request.member_id.as_str(),
                request.group_instance_id.as_ref().map(|s| s.as_str()),
            )
        });
    let image = broker.image();
    let timestamp = now_ms();
    let max_metadata = broker.groups.metadata_max_bytes();
    let mut plan: CommitPlan = Vec::new();
    for topic in &request.topics {
        let name = topic.name.0.to_string();
        let topic_allowed = context.allowed(broker, Operation::Read, ResourceType::Topic, &name);
        let partitions = topic
            .partitions
            .iter()
            .map(|p| {
                let outcome = match checked {
                    Err(e) => Err(e),
                    Ok(()) if !topic_allowed => Err(ResponseError::TopicAuthorizationFailed),
                    Ok(()) if image.partition(&name, p.partition_index).is_none() => {
                        Err(ResponseError::UnknownTopicOrPartition)
                    }
                    Ok(())
                        if p.committed_metadata
                            .as_ref()
                            .is_some_and(|m| m.len() > max_metadata) =>
                    {
                        Err(ResponseError::OffsetMetadataTooLarge)
                    }
                    Ok(()) => Ok(OffsetRecord {
                        group: group.clone(),
                        topic: name.clone(),
                        partition: p.partition_index,
                        value: Some(CommittedOffset {
                            offset: p.committed_offset,
                            leader_epoch: p.committed_leader_epoch,
                            metadata: p
                                .committed_metadata
                                .as_ref()
                                .map(|m| m.to_string())
                                .unwrap_or_default(),
                            commit_timestamp: timestamp,
                        }),
                    }),
                };
                (p.partition_index, outcome)
            })
            .collect();
        plan.push((name, partitions));
    }
    let records: Vec<OffsetRecord> = plan
        .iter()
        .flat_map(|(_, partitions)| {
            partitions
                .iter()
                .filter_map(|(_, r)| r.as_ref().ok().cloned())
        })
        .collect();
    let stored = if records.is_empty() {
        Ok(())
    } else {
        broker
            .write_offsets(&group, records)
            .await
            .map_err(|e| e.code)
    };
    let topics = plan
        .into_iter()
        .map(|(name, partitions)| {
            OffsetCommitResponseTopic::default()
                .with_name(topic_name(&name))
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|(index, outcome)| {
                            let error = match (outcome, &stored) {
                                (Err(e), _) => e.code(),
                                (Ok(_), Err(e)) => e.code(),
                                (Ok(_), Ok(())) => 0,
                            };
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(index)
                                .with_error_code(error)
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// The committed offsets of `group` for the requested partitions, or all it has (`None`)
/// on the topics the principal may describe. With `require_stable`, a partition whose offset
/// an open transaction is about to change answers UNSTABLE_OFFSET_COMMIT (the client retries
/// until the transaction ends), as Kafka does for read_committed consumers.
fn lookup(
    broker: &Broker,
    context: &RequestContext,
    group: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> Committed {
    let committed = broker.groups.committed(group);
    let may_describe =
        |topic: &str| context.allowed(broker, Operation::Describe, ResourceType::Topic, topic);
    let settled = |topic: &str, partition: i32, offset: Option<CommittedOffset>| {
        if require_stable && broker.groups.has_pending_offset(group, topic, partition) {
            Err(ResponseError::UnstableOffsetCommit)
        } else {
            Ok(offset)
        }
    };
    match wanted {
        Some(topics) => topics
            .into_iter()
            .map(|(topic, partitions)| {
                let authorized = may_describe(&topic);
                let found = partitions
                    .into_iter()
                    .map(|p| {
                        let answer = if authorized {
                            settled(&topic, p, committed.get(&(topic.clone(), p)).cloned())
                        } else {
                            Err(ResponseError::TopicAuthorizationFailed)
                        };
                        (p, answer)
                    })
                    .collect();
                (topic, found)
            })
            .collect(),
        None => {
            let mut by_topic: BTreeMap<String, Vec<_>> = BTreeMap::new();
            for ((topic, partition), offset) in committed {
                let answer = settled(&topic, partition, Some(offset));
                by_topic.entry(topic).or_default().push((partition, answer));
            }
            by_topic
                .into_iter()
                .filter(|(topic, _)| may_describe(topic))
                .collect()
        }
    }
}

/// A partition's error code, committed offset, leader epoch and metadata.
fn fields(answer: &Result<Option<CommittedOffset>, ResponseError>) -> (i16, i64, i32, String) {
    match answer {
        Ok(Some(o)) => (0, o.offset, o.leader_epoch, o.metadata.clone()),
        Ok(None) => (0, -1, -1, String::new()),
        Err(e) => (e.code(), -1, -1, String::new()),
    }
}

pub(super) fn fetch(
    broker: &Broker,
    context: &RequestContext,
    request: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    let check_group = |group: &str| {
        if context.allowed(broker, Operation::Describe, ResourceType::Group, group) {
            broker.check_coordinator(group)
        } else {
            Err(ResponseError::GroupAuthorizationFailed)
        }
    };
    if version >= 8 {
        let groups = request
            .groups
            .into_iter()
            .map(|g| {
                let wanted = g.topics.map(|topics| {
                    topics
                        .into_iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes))
                        .collect()
                });
                if let Err(code) = check_group(g.group_id.0.as_str()) {
                    return OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id)
                        .with_error_code(code.code());
                }
                let group = g.group_id.0.as_str();
                let topics = lookup(broker, context, group, wanted, request.require_stable)
                    .into_iter()
                    .map(|(topic, partitions)| {
                        OffsetFetchResponseTopics::default()
                            .with_name(topic_name(&topic))
                            .with_partitions(
                                partitions
                                    .iter()
                                    .map(|(index, answer)| {
                                        let (error, committed, epoch, metadata) = fields(answer);
                                        OffsetFetchResponsePartitions::default()
                                            .with_error_code(error)
                                            .with_partition_index(*index)
                                            .with_committed_offset(committed)
                                            .with_committed_leader_epoch(epoch)
                                            .with_metadata(Some(str_bytes(&metadata)))
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id)
                    .with_topics(topics)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    if let Err(code) = check_group(request.group_id.0.as_str()) {
        if version >= 2 {
            return OffsetFetchResponse::default().with_error_code(code.code());
        }
        // v1 has no top-level error: every requested partition carries it.
        let topics = request
            .topics
            .unwrap_or_default()
            .into_iter()
            .map(|t| {
                OffsetFetchResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(
                        t.partition_indexes
                            .iter()
                            .map(|i| {
                                OffsetFetchResponsePartition::default()
                                    .with_partition_index(*i)
                                    .with_committed_offset(-1)
                                    .with_error_code(code.code())
                            })
                            .collect(),
                    )
            })
            .collect();
        return OffsetFetchResponse::default().with_topics(topics);
    }
    let wanted = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let group = request.group_id.0.as_str();
    let topics = lookup(broker, context, group, wanted, request.require_stable)
        .into_iter()
        .map(|(topic, partitions)| {
            OffsetFetchResponseTopic::default()
                .with_name(topic_name(&topic))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|(index, answer)| {
                            let (error, committed, epoch, metadata) = fields(answer);
                            let partition = OffsetFetchResponsePartition::default()
                                .with_error_code(error)
                                .with_partition_index(*index)
                                .with_committed_offset(committed)
                                .with_metadata(Some(str_bytes(&metadata)));
                            if version >= 5 {
                                partition.with_committed_leader_epoch(epoch)
                            } else {
                                partition
                            }
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}

pub(super) async fn delete(
    broker: &Broker,
    context: &RequestContext,
    request: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    let group = request.group_id.0.to_string();
    if !context.allowed(broker, Operation::Delete, ResourceType::Group, &group) {
        return OffsetDeleteResponse::default()
            .with_error_code(ResponseError::GroupAuthorizationFailed.code());
    }
    if let Err(code) = broker.check_coordinator(&group) {
        return OffsetDeleteResponse::default().with_error_code(code.code());
    }
    let mut records = Vec::new();
    let mut topics = Vec::new();
    for topic in &request.topics {
        let name = topic.name.0.to_string();
        let allowed = if context.allowed(broker, Operation::Read, ResourceType::Topic, &name) {
            broker.groups.check_offset_delete(&group, &name)
        } else {
            Err(ResponseError::TopicAuthorizationFailed)
        };
        if allowed == Err(ResponseError::GroupIdNotFound) {
            return OffsetDeleteResponse::default()
                .with_error_code(ResponseError::GroupIdNotFound.code());
        }
        let partitions = topic
            .partitions
            .iter()
            .map(|p| {
                let error = match allowed {
                    Err(e) => e.code(),
                    Ok(()) => {
                        records.push(OffsetRecord {
                            group: group.clone(),
                            topic: name.clone(),
                            partition: p.partition_index,
                            value: None,
                        });
                        0
                    }
                };
                OffsetDeleteResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(error)
            })
            .collect();
        topics.push(
            OffsetDeleteResponseTopic::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions),
        );
    }
    if !records.is_empty() {
        if let Err(e) = broker.write_offsets(&group, records).await {
            return OffsetDeleteResponse::default().with_error_code(e.code.code());
        }
    }
    OffsetDeleteResponse::default().with_topics(topics)
}
