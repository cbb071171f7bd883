//! DescribeCluster (the live brokers of the cluster and its active controller) and
//! UnregisterBroker (a broker that left for good goes from the metadata and the quorum).

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, UnregisterBrokerRequest,
    UnregisterBrokerResponse,
};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::broker::Broker;
use crate::controller::unregister::{self, Refusal, UnregisterError};
use crate::controller::QuorumError;
use crate::security::authorizer::{Operation, ResourceType, CLUSTER_NAME};

/// Endpoint type 2 asks for controllers; they are reached through the brokers here.
const ENDPOINT_TYPE_CONTROLLER: i8 = 2;

pub(super) fn describe(
    broker: &Broker,
    context: &super::RequestContext,
    request: &DescribeClusterRequest,
) -> DescribeClusterResponse {
    // Anyone may describe the cluster (as Kafka, which asks for DESCRIBE only before listing
    // the operations the principal may perform on it: none without it).
    let operations = if request.include_cluster_authorized_operations
        && !context.allowed_on_cluster(broker, Operation::Describe)
    {
        0
    } else {
        context.authorized_operations(
            broker,
            request.include_cluster_authorized_operations,
            ResourceType::Cluster,
            CLUSTER_NAME,
        )
    };
    let image = broker.image();
    let controller = broker.controller_id_for_clients();
    let response = DescribeClusterResponse::default()
        .with_endpoint_type(request.endpoint_type)
        .with_cluster_id(str_bytes(&image.cluster_id))
        .with_controller_id(BrokerId(controller))
        .with_cluster_authorized_operations(operations);
    if request.endpoint_type == ENDPOINT_TYPE_CONTROLLER {
        return response
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_error_message(Some(str_bytes(
                "controllers have no endpoint of their own here: ask a broker",
            )));
    }
    // v2 can ask for fenced brokers too; earlier versions see the live ones.
    let brokers = image
        .brokers
        .values()
        .filter(|b| !b.fenced || request.include_fenced_brokers)
        .filter_map(|b| {
            let (host, port) = b.endpoint(&context.listener)?;
            let entry = DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.id))
                .with_host(str_bytes(host))
                .with_port(i32::from(port))
                .with_rack(b.rack.as_deref().map(str_bytes));
            Some(if request.include_fenced_brokers {
                entry.with_is_fenced(b.fenced)
            } else {
                entry
            })
        })
        .collect();
    response.with_brokers(brokers)
}

/// Needs ALTER on the cluster, as in Kafka. Whatever broker receives it, the registration's
/// removal is committed through the active controller and the membership change is made by
/// the quorum leader.
pub(super) async fn unregister(
    broker: &Broker,
    context: &super::RequestContext,
    request: &UnregisterBrokerRequest,
) -> UnregisterBrokerResponse {
    let id = request.broker_id.0;
    let outcome = if context.allowed_on_cluster(broker, Operation::Alter) {
        unregister::unregister(&broker.quorum, broker.node_id(), id)
            .await
            .map_err(|e| (unregister_error_code(&e), e.to_string()))
    } else {
        Err((
            ResponseError::ClusterAuthorizationFailed,
            format!("{} may not alter the cluster", context.principal),
        ))
    };
    match outcome {
        Ok(()) => UnregisterBrokerResponse::default(),
        Err((code, message)) => {
            tracing::info!(broker = id, error = %message, "UnregisterBroker refused");
            UnregisterBrokerResponse::default()
                .with_error_code(code.code())
                .with_error_message(Some(str_bytes(&message)))
        }
    }
}

fn unregister_error_code(error: &UnregisterError) -> ResponseError {
    match error {
        UnregisterError::Refused(Refusal::NotRegistered(_)) => ResponseError::BrokerIdNotRegistered,
        UnregisterError::Refused(_)
        | UnregisterError::Rejected { .. }
        | UnregisterError::Quorum(QuorumError::Raft(
            crate::controller::raft::QuorumError::Voter { .. },
        )) => ResponseError::InvalidRequest,
        UnregisterError::Quorum(QuorumError::Raft(
            crate::controller::raft::QuorumError::NoLeader { .. },
        )) => ResponseError::NotController,
        UnregisterError::Quorum(_) => ResponseError::RequestTimedOut,
    }
}
