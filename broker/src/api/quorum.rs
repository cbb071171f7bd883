//! DescribeQuorum: the metadata quorum's leader, epoch, high watermark, and each voter's and
//! observer's replication of the metadata log, as the leader of the quorum knows them
//! (`kafka-metadata-quorum.sh describe --status` and `--replication`).

use kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::{BrokerId, DescribeQuorumRequest, DescribeQuorumResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{str_bytes, topic_name, RequestContext};
use crate::broker::Broker;
use crate::controller::raft::{QuorumStatus, ReplicaStatus};
use crate::security::authorizer::Operation;

/// The topic Kafka's metadata log is, and the only one DescribeQuorum describes.
pub(crate) const METADATA_TOPIC: &str = "__cluster_metadata";
/// The listener name voters' endpoints get when no controller listener is configured.
const DEFAULT_CONTROLLER_LISTENER: &str = "CONTROLLER";

pub(super) async fn describe(
    broker: &Broker,
    context: &RequestContext,
    request: &DescribeQuorumRequest,
    version: i16,
) -> DescribeQuorumResponse {
    if !context.allowed_on_cluster(broker, Operation::Describe) {
        return DescribeQuorumResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
            .with_error_message(Some(str_bytes(&format!(
                "{} may not describe the cluster",
                context.principal
            ))));
    }
    let names_the_metadata_log = request.topics.len() == 1
        && request.topics.iter().all(|t| {
            t.topic_name.0.as_str() == METADATA_TOPIC
                && t.partitions.len() == 1
                && t.partitions.iter().all(|p| p.partition_index == 0)
        });
    if !names_the_metadata_log {
        // As Kafka: each named partition is unknown.
        let topics = request
            .topics
            .iter()
            .map(|t| {
                TopicData::default()
                    .with_topic_name(t.topic_name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                partition_error(
                                    p.partition_index,
                                    ResponseError::UnknownTopicOrPartition,
                                    None,
                                )
                            })
                            .collect(),
                    )
            })
            .collect();
        return DescribeQuorumResponse::default().with_topics(topics);
    }
    let controller = broker.config.controller_listener.as_ref();
    let status = broker
        .quorum
        .describe(
            broker.node_id(),
            controller.map(|l| (l.host.clone(), l.port)),
        )
        .await;
    let listener_name = controller.map_or(DEFAULT_CONTROLLER_LISTENER, |l| l.name.as_str());
    match status {
        Ok(status) => respond(&status, listener_name, version),
        Err(e) => {
            tracing::warn!(error = %e, "DescribeQuorum: the quorum leader did not answer");
            DescribeQuorumResponse::default().with_topics(vec![metadata_topic(partition_error(
                0,
                ResponseError::NotLeaderOrFollower,
                Some(e.to_string()),
            ))])
        }
    }
}

fn metadata_topic(partition: PartitionData) -> TopicData {
    TopicData::default()
        .with_topic_name(topic_name(METADATA_TOPIC))
        .with_partitions(vec![partition])
}

fn partition_error(index: i32, error: ResponseError, message: Option<String>) -> PartitionData {
    PartitionData::default()
        .with_partition_index(index)
        .with_error_code(error.code())
        .with_error_message(message.map(StrBytes::from_string))
        .with_leader_id(BrokerId(-1))
        .with_leader_epoch(-1)
        .with_high_watermark(-1)
}

/// The answer Kafka's `RaftUtil.singletonDescribeQuorumResponse` builds: v2 adds the voters'
/// controller endpoints (the directory ids stay zero: members here have none).
fn respond(status: &QuorumStatus, listener_name: &str, version: i16) -> DescribeQuorumResponse {
    let replicas = |list: &[ReplicaStatus]| -> Vec<ReplicaState> {
        list.iter()
            .map(|r| {
                ReplicaState::default()
                    .with_replica_id(BrokerId(r.node_id))
                    .with_log_end_offset(r.log_end_offset)
                    .with_last_fetch_timestamp(r.last_fetch_timestamp)
                    .with_last_caught_up_timestamp(r.last_caught_up_timestamp)
            })
            .collect()
    };
    let partition = PartitionData::default()
        .with_partition_index(0)
        .with_leader_id(BrokerId(status.leader_id))
        .with_leader_epoch(status.leader_epoch)
        .with_high_watermark(status.high_watermark)
        .with_current_voters(replicas(&status.voters))
        .with_observers(replicas(&status.observers));
    let response = DescribeQuorumResponse::default().with_topics(vec![metadata_topic(partition)]);
    if version < 2 {
        return response;
    }
    response.with_nodes(
        status
            .voter_endpoints
            .iter()
            .map(|(id, host, port)| {
                Node::default()
                    .with_node_id(BrokerId(*id))
                    .with_listeners(vec![Listener::default()
                        .with_name(str_bytes(listener_name))
                        .with_host(str_bytes(host))
                        .with_port(*port)])
            })
            .collect(),
    )
}
