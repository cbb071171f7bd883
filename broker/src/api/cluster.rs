//! DescribeCluster: the live brokers of the cluster and its active controller.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::ResponseError;

use super::acl::AUTHORIZED_OPERATIONS_OMITTED;
use super::str_bytes;
use crate::broker::Broker;
use crate::security::authorizer::{ResourceType, CLUSTER_NAME};

/// Endpoint type 2 asks for controllers; they are reached through the brokers here.
const ENDPOINT_TYPE_CONTROLLER: i8 = 2;

pub(super) fn describe(
    broker: &Broker,
    context: &super::RequestContext,
    request: &DescribeClusterRequest,
) -> DescribeClusterResponse {
    if !context.allowed_on_cluster(broker, crate::security::authorizer::Operation::Describe) {
        return DescribeClusterResponse::default()
            .with_endpoint_type(request.endpoint_type)
            .with_cluster_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
            .with_error_message(Some(str_bytes(&format!(
                "{} may not describe the cluster",
                context.principal
            ))));
    }
    let image = broker.image();
    let controller = broker
        .quorum
        .active_controller(broker.node_id())
        .unwrap_or(-1);
    let response = DescribeClusterResponse::default()
        .with_endpoint_type(request.endpoint_type)
        .with_cluster_id(str_bytes(&image.cluster_id))
        .with_controller_id(BrokerId(controller))
        .with_cluster_authorized_operations(context.authorized_operations(
            broker,
            request.include_cluster_authorized_operations,
            ResourceType::Cluster,
            CLUSTER_NAME,
        ));
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
