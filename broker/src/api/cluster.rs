//! DescribeCluster: the brokers of the cluster and its controller.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::broker::Broker;

/// Endpoint type 2 asks for controllers; this broker has no separate controller listener.
const ENDPOINT_TYPE_CONTROLLER: i8 = 2;
/// Kafka's "authorized operations not requested / unknown" marker.
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

pub(super) fn describe(
    broker: &Broker,
    request: &DescribeClusterRequest,
) -> DescribeClusterResponse {
    let response = DescribeClusterResponse::default()
        .with_endpoint_type(request.endpoint_type)
        .with_cluster_id(str_bytes(&broker.cluster_id()))
        .with_controller_id(BrokerId(broker.node_id()))
        .with_cluster_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED);
    if request.endpoint_type == ENDPOINT_TYPE_CONTROLLER {
        return response
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_error_message(Some(str_bytes("this broker has no controller listener")));
    }
    response.with_brokers(vec![DescribeClusterBroker::default()
        .with_broker_id(BrokerId(broker.node_id()))
        .with_host(str_bytes(&broker.advertised.host))
        .with_port(i32::from(broker.advertised.port))])
}
