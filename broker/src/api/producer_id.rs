//! InitProducerId: producer ids and epochs for idempotent producers.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use super::RequestContext;
use crate::broker::Broker;
use crate::security::authorizer::{Operation, ResourceType};

pub(super) async fn init(
    broker: &Broker,
    context: &RequestContext,
    request: &InitProducerIdRequest,
) -> InitProducerIdResponse {
    let failed = |code: ResponseError| {
        InitProducerIdResponse::default()
            .with_error_code(code.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if request.transactional_id.is_some() {
        tracing::info!(
            "InitProducerId for a transactional producer refused: transactions are not supported"
        );
        return failed(ResponseError::TransactionalIdAuthorizationFailed);
    }
    // An idempotent producer needs IDEMPOTENT_WRITE on the cluster or WRITE on some topic.
    if !context.allowed_on_cluster(broker, Operation::IdempotentWrite)
        && !context.allowed_on_any(broker, Operation::Write, ResourceType::Topic)
    {
        return failed(ResponseError::ClusterAuthorizationFailed);
    }
    // A producer that already has an id asks for a bumped epoch (KIP-360) to reset its
    // sequences; the epoch wrapping over means a fresh id.
    let known = request.producer_id.0;
    if known >= 0 && request.producer_epoch >= 0 && request.producer_epoch < i16::MAX - 1 {
        return InitProducerIdResponse::default()
            .with_producer_id(ProducerId(known))
            .with_producer_epoch(request.producer_epoch + 1);
    }
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
