//! InitProducerId for idempotent producers: a fresh producer id each time (transactional
//! producers are answered by the transaction coordinator, `txn`).

use kafka_protocol::messages::{InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use super::RequestContext;
use crate::broker::Broker;
use crate::security::authorizer::{Operation, ResourceType};

pub(super) async fn init(broker: &Broker, context: &RequestContext) -> InitProducerIdResponse {
    let failed = |code: ResponseError| {
        InitProducerIdResponse::default()
            .with_error_code(code.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    // An idempotent producer needs IDEMPOTENT_WRITE on the cluster or WRITE on some topic.
    if !context.allowed_on_cluster(broker, Operation::IdempotentWrite)
        && !context.allowed_on_any(broker, Operation::Write, ResourceType::Topic)
    {
        return failed(ResponseError::ClusterAuthorizationFailed);
    }
    // Without a transactional id every call gets a fresh producer id, as in Kafka.
    match broker.allocate_producer_id().await {
        Ok(id) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(e) => {
            tracing::error!(error = %e.message, "no producer id could be allocated");
            failed(e.code)
        }
    }
}
