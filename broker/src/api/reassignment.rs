//! Moving leadership and replicas: ElectLeaders, AlterPartitionReassignments and
//! ListPartitionReassignments. The operator's balancer drives these.

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ElectLeadersRequest, ElectLeadersResponse, ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse,
};

use kafka_protocol::ResponseError;

use super::{str_bytes, topic_name, RequestContext};
use crate::broker::{ApiError, Broker};
use crate::security::authorizer::Operation;

/// Why a principal without `operation` on the cluster is refused.
fn cluster_denied(context: &RequestContext, operation: Operation) -> ApiError {
    ApiError::new(
        ResponseError::ClusterAuthorizationFailed,
        format!("{} may not {operation:?} the cluster", context.principal),
    )
}

const ELECTION_PREFERRED: i8 = 0;

pub(super) async fn elect_leaders(
    broker: &Broker,
    context: &RequestContext,
    request: ElectLeadersRequest,
    version: i16,
) -> ElectLeadersResponse {
    let denied = (!context.allowed_on_cluster(broker, Operation::Alter))
        .then(|| cluster_denied(context, Operation::Alter));
    let preferred = version == 0 || request.election_type == ELECTION_PREFERRED;
    // Asked for every partition (null), Kafka's controller answers only for the partitions
    // where an election was tried and was needed; ELECTION_NOT_NEEDED is left out.
    let every_partition = request.topic_partitions.is_none();
    let targets: Vec<(String, Vec<i32>)> = match request.topic_partitions {
        Some(list) => list
            .into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect(),
        None => broker
            .topics()
            .into_iter()
            .map(|t| (t.name.clone(), (0..t.partitions.len() as i32).collect()))
            .collect(),
    };
    let mut results = Vec::with_capacity(targets.len());
    for (topic, partitions) in targets {
        let mut outcomes = Vec::with_capacity(partitions.len());
        for partition in partitions {
            let outcome = match &denied {
                Some(e) => Err(e.clone()),
                None => broker.elect_leader(&topic, partition, preferred).await,
            };
            if every_partition
                && matches!(&outcome, Err(e) if e.code == ResponseError::ElectionNotNeeded)
            {
                continue;
            }
            let result = PartitionResult::default().with_partition_id(partition);
            outcomes.push(match outcome {
                Ok(()) => result,
                Err(e) => result
                    .with_error_code(e.code.code())
                    .with_error_message(Some(str_bytes(&e.message))),
            });
        }
        if every_partition && outcomes.is_empty() {
            continue;
        }
        results.push(
            ReplicaElectionResult::default()
                .with_topic(topic_name(&topic))
                .with_partition_result(outcomes),
        );
    }
    let response = ElectLeadersResponse::default().with_replica_election_results(results);
    match denied {
        Some(e) => response.with_error_code(e.code.code()),
        None => response,
    }
}

pub(super) async fn alter_reassignments(
    broker: &Broker,
    context: &RequestContext,
    request: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    if !context.allowed_on_cluster(broker, Operation::Alter) {
        let e = cluster_denied(context, Operation::Alter);
        return AlterPartitionReassignmentsResponse::default()
            .with_allow_replication_factor_change(request.allow_replication_factor_change)
            .with_error_code(e.code.code())
            .with_error_message(Some(str_bytes(&e.message)));
    }
    let mut responses = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let target = p
                .replicas
                .map(|r| r.into_iter().map(|id| id.0).collect::<Vec<_>>());
            let outcome: Result<(), ApiError> = broker
                .reassign(
                    &name,
                    p.partition_index,
                    target,
                    request.allow_replication_factor_change,
                )
                .await;
            let result =
                ReassignablePartitionResponse::default().with_partition_index(p.partition_index);
            partitions.push(match outcome {
                Ok(()) => result,
                Err(e) => result
                    .with_error_code(e.code.code())
                    .with_error_message(Some(str_bytes(&e.message))),
            });
        }
        responses.push(
            ReassignableTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(request.allow_replication_factor_change)
        .with_responses(responses)
}

pub(super) fn list_reassignments(
    broker: &Broker,
    context: &RequestContext,
    request: &ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    if !context.allowed_on_cluster(broker, Operation::Describe) {
        let e = cluster_denied(context, Operation::Describe);
        return ListPartitionReassignmentsResponse::default()
            .with_error_code(e.code.code())
            .with_error_message(Some(str_bytes(&e.message)));
    }
    let image = broker.image();
    let ids = |list: &[i32]| list.iter().copied().map(BrokerId).collect::<Vec<_>>();
    let mut topics = Vec::new();
    for topic in image.topics.values() {
        let wanted: Option<&Vec<i32>> = match &request.topics {
            None => None,
            Some(list) => match list.iter().find(|t| t.name.0.as_str() == topic.name) {
                Some(t) => Some(&t.partition_indexes),
                None => continue,
            },
        };
        let partitions: Vec<OngoingPartitionReassignment> = topic
            .partitions
            .iter()
            .enumerate()
            .filter(|(i, state)| {
                (!state.adding.is_empty() || !state.removing.is_empty())
                    && wanted.is_none_or(|w| w.contains(&(*i as i32)))
            })
            .map(|(i, state)| {
                OngoingPartitionReassignment::default()
                    .with_partition_index(i as i32)
                    .with_replicas(ids(&state.replicas))
                    .with_adding_replicas(ids(&state.adding))
                    .with_removing_replicas(ids(&state.removing))
            })
            .collect();
        if !partitions.is_empty() {
            topics.push(
                OngoingTopicReassignment::default()
                    .with_name(topic_name(&topic.name))
                    .with_partitions(partitions),
            );
        }
    }
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}
