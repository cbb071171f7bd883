//! APIs between brokers: OffsetForLeaderEpoch (a follower matching its log to the leader's);
//! and the log directories' APIs, DescribeLogDirs and AlterReplicaLogDirs.

use kafka_protocol::messages::alter_replica_log_dirs_response::{
    AlterReplicaLogDirPartitionResult, AlterReplicaLogDirTopicResult,
};
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    AlterReplicaLogDirsRequest, AlterReplicaLogDirsResponse, DescribeLogDirsRequest,
    DescribeLogDirsResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
};
use kafka_protocol::ResponseError;

use super::{str_bytes, topic_name, RequestContext};
use crate::broker::Broker;
use crate::security::authorizer::{Operation, ResourceType};

pub(super) fn offset_for_leader_epoch(
    broker: &Broker,
    context: &RequestContext,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    // Followers ask as the cluster; consumers checking for truncation need DESCRIBE (KIP-320).
    let cluster_action = context.allowed_on_cluster(broker, Operation::ClusterAction);
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let name = topic.topic.0.to_string();
            let authorized = cluster_action
                || context.allowed(broker, Operation::Describe, ResourceType::Topic, &name);
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let result = EpochEndOffset::default()
                        .with_partition(p.partition)
                        .with_leader_epoch(-1)
                        .with_end_offset(-1);
                    if !authorized {
                        return result
                            .with_error_code(ResponseError::TopicAuthorizationFailed.code());
                    }
                    let partition = match broker.leader_partition(&name, p.partition) {
                        Ok(partition) => partition,
                        Err(code) => return result.with_error_code(code.code()),
                    };
                    let (_, epoch) = partition.role();
                    if p.current_leader_epoch >= 0 && p.current_leader_epoch < epoch {
                        return result.with_error_code(ResponseError::FencedLeaderEpoch.code());
                    }
                    if p.current_leader_epoch > epoch {
                        return result.with_error_code(ResponseError::UnknownLeaderEpoch.code());
                    }
                    match partition.end_offset_for_epoch(p.leader_epoch) {
                        Some((found, end)) => result.with_leader_epoch(found).with_end_offset(end),
                        None => result,
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

pub(super) fn describe_log_dirs(
    broker: &Broker,
    context: &RequestContext,
    request: &DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    if !context.allowed_on_cluster(broker, Operation::Describe) {
        // v3+ carries the error; older versions, like Kafka, just list nothing.
        return DescribeLogDirsResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code());
    }
    let wanted = |topic: &str, partition: i32| match &request.topics {
        None => true,
        Some(topics) => topics
            .iter()
            .any(|t| t.topic.0.as_str() == topic && t.partitions.contains(&partition)),
    };
    let dirs = broker.log_dirs.dirs();
    let mut topics: Vec<Vec<DescribeLogDirsTopic>> = vec![Vec::new(); dirs.len()];
    let mut add = |root: &std::path::Path, topic: &str, entry: DescribeLogDirsPartition| {
        let Some(i) = broker.log_dirs.position(root) else {
            return;
        };
        match topics[i].iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(t) => t.partitions.push(entry),
            None => topics[i].push(
                DescribeLogDirsTopic::default()
                    .with_name(topic_name(topic))
                    .with_partitions(vec![entry]),
            ),
        }
    };
    for (partition, _) in broker.partitions_with_config() {
        if !wanted(&partition.topic, partition.index) {
            continue;
        }
        let end = partition.log_end_offset();
        let lag = match partition.role().0 {
            crate::replica::Role::Leader => 0,
            _ => (partition.high_watermark() - end).max(0),
        };
        add(
            &partition.log_dir(),
            &partition.topic,
            DescribeLogDirsPartition::default()
                .with_partition_index(partition.index)
                .with_partition_size(i64::try_from(partition.size_bytes()).unwrap_or(i64::MAX))
                .with_offset_lag(lag),
        );
        if let Some(future) = partition.future_replica() {
            // Kafka's lag of a future replica: how far it is behind the current one.
            add(
                &future.root,
                &partition.topic,
                DescribeLogDirsPartition::default()
                    .with_partition_index(partition.index)
                    .with_partition_size(i64::try_from(future.size).unwrap_or(i64::MAX))
                    .with_offset_lag((end - future.end_offset).max(0))
                    .with_is_future_key(true),
            );
        }
    }
    let results = dirs
        .iter()
        .zip(topics)
        .enumerate()
        .map(|(i, (dir, topics))| {
            if !broker.log_dirs.is_online(i) {
                // As Kafka reports an offline directory: its error, no replicas, no sizes.
                return DescribeLogDirsResult::default()
                    .with_error_code(ResponseError::KafkaStorageError.code())
                    .with_log_dir(str_bytes(&dir.path.display().to_string()))
                    .with_total_bytes(-1)
                    .with_usable_bytes(-1);
            }
            let (total_bytes, usable_bytes) = filesystem_space(&dir.path).unwrap_or_else(|e| {
                tracing::warn!(dir = %dir.path.display(), error = %e, "cannot measure the log directory's filesystem");
                (-1, -1)
            });
            DescribeLogDirsResult::default()
                .with_log_dir(str_bytes(&dir.path.display().to_string()))
                .with_topics(topics)
                .with_total_bytes(total_bytes)
                .with_usable_bytes(usable_bytes)
        })
        .collect();
    DescribeLogDirsResponse::default().with_results(results)
}

/// AlterReplicaLogDirs: moves replicas this broker hosts to another of its log directories
/// (copied while they keep serving, then swapped). As in Kafka: a directory not in
/// `log.dirs` is LOG_DIR_NOT_FOUND, one an I/O error took offline KAFKA_STORAGE_ERROR; a
/// partition that does not exist is
/// UNKNOWN_TOPIC_OR_PARTITION; a replica not hosted here is REPLICA_NOT_AVAILABLE, and the
/// directory is remembered for it, so a replica a reassignment is about to create here is
/// created there (the reassignment tool retries until the replica exists).
pub(super) fn alter_replica_log_dirs(
    broker: &Broker,
    context: &RequestContext,
    request: &AlterReplicaLogDirsRequest,
) -> AlterReplicaLogDirsResponse {
    let authorized = context.allowed_on_cluster(broker, Operation::Alter);
    let mut results: Vec<AlterReplicaLogDirTopicResult> = Vec::new();
    for dir in &request.dirs {
        let target = broker
            .log_dirs
            .find(std::path::Path::new(dir.path.as_str()))
            .map(|d| d.path.clone());
        for topic in &dir.topics {
            let name = topic.name.0.as_str();
            let partitions = topic.partitions.iter().map(|&index| {
                let code = if !authorized {
                    ResponseError::ClusterAuthorizationFailed.code()
                } else {
                    match &target {
                        None => ResponseError::LogDirNotFound.code(),
                        Some(target)
                            if broker
                                .log_dirs
                                .position(target)
                                .is_some_and(|i| !broker.log_dirs.is_online(i)) =>
                        {
                            ResponseError::KafkaStorageError.code()
                        }
                        Some(target) => move_replica(broker, name, index, target),
                    }
                };
                AlterReplicaLogDirPartitionResult::default()
                    .with_partition_index(index)
                    .with_error_code(code)
            });
            match results.iter_mut().find(|r| r.topic_name.0.as_str() == name) {
                Some(result) => result.partitions.extend(partitions),
                None => {
                    let partitions = partitions.collect();
                    results.push(
                        AlterReplicaLogDirTopicResult::default()
                            .with_topic_name(topic_name(name))
                            .with_partitions(partitions),
                    );
                }
            }
        }
    }
    AlterReplicaLogDirsResponse::default().with_results(results)
}

/// Starts moving replica `topic`-`index` to log directory `target`: the error code.
fn move_replica(broker: &Broker, topic: &str, index: i32, target: &std::path::Path) -> i16 {
    match broker.partition(topic, index) {
        Some(partition) => match partition.move_to_log_dir(target) {
            Ok(()) => 0,
            Err(e) => {
                tracing::warn!(partition = ?partition, to = %target.display(), error = %e, "cannot start moving the replica");
                ResponseError::KafkaStorageError.code()
            }
        },
        None if broker.image().partition(topic, index).is_none() => {
            ResponseError::UnknownTopicOrPartition.code()
        }
        None => {
            if let Some(i) = broker.log_dirs.position(target) {
                broker
                    .preferred_dirs
                    .lock()
                    .insert((topic.to_string(), index), i);
            }
            ResponseError::ReplicaNotAvailable.code()
        }
    }
}

/// Size and space left to an unprivileged writer of the filesystem holding `dir`, in bytes,
/// as Java's `FileStore.getTotalSpace` and `getUsableSpace` report them to Kafka's
/// DescribeLogDirs (blocks and blocks available to non-root users, times the fragment size).
fn filesystem_space(dir: &std::path::Path) -> std::io::Result<(i64, i64)> {
    let stat = rustix::fs::statvfs(dir)?;
    let bytes = |blocks: u64| {
        i64::try_from(u128::from(blocks) * u128::from(stat.f_frsize)).unwrap_or(i64::MAX)
    };
    Ok((bytes(stat.f_blocks), bytes(stat.f_bavail)))
}
