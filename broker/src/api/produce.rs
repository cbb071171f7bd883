//! Produce: append record batches to the partitions this broker leads; with `acks=all`,
//! answer once every in-sync replica has them.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::records::Compression;
use kafka_protocol::ResponseError;

use super::{leader_hint, str_bytes, RequestContext};
use crate::broker::Broker;
use crate::log::BatchHeader;
use crate::producer::{MarkerError, SequenceError};
use crate::replica::{Partition, ProduceError, ReplicationError};
use crate::security::authorizer::{Operation, ResourceType};

/// A write that still has to be made durable or replicated before it is acknowledged.
struct Pending {
    topic_at: usize,
    partition_at: usize,
    partition: Arc<Partition>,
    end: i64,
}

pub fn produce_error_code(error: &ProduceError) -> ResponseError {
    match error {
        ProduceError::Append(e) => e.response_error(),
        ProduceError::Sequence(SequenceError::OutOfOrder { .. }) => {
            ResponseError::OutOfOrderSequenceNumber
        }
        ProduceError::Sequence(SequenceError::InvalidEpoch { .. }) => {
            ResponseError::InvalidProducerEpoch
        }
        ProduceError::InvalidRecord(_) => ResponseError::InvalidRecord,
        ProduceError::NotLeader => ResponseError::NotLeaderOrFollower,
        ProduceError::NotEnoughReplicas { .. } => ResponseError::NotEnoughReplicas,
        ProduceError::RecordListTooLarge { .. } => ResponseError::RecordListTooLarge,
        ProduceError::Marker(MarkerError::InvalidEpoch { .. }) => {
            ResponseError::InvalidProducerEpoch
        }
        ProduceError::Marker(MarkerError::CoordinatorFenced { .. }) => {
            ResponseError::TransactionCoordinatorFenced
        }
    }
}

/// Whether any batch of a produce request's records is zstd-compressed (Produce before v7
/// predates zstd, and Kafka refuses it there).
fn has_zstd_batch(records: &[u8]) -> bool {
    let mut rest = records;
    while let Some(header) = BatchHeader::parse(rest) {
        if header.compression() == Some(Compression::Zstd) {
            return true;
        }
        rest = rest.get(header.size()..).unwrap_or_default();
    }
    false
}

/// KIP-890 verification: before a producer's first transactional batch of a transaction
/// lands in a partition, the partition's leader asks the transaction coordinator whether the
/// partition is in that transaction, so a late batch of an ended transaction cannot open a
/// transaction nobody will close. Coordinator trouble is answered NOT_ENOUGH_REPLICAS, which
/// every client retries, as Kafka does.
async fn verify_transaction(
    broker: &Broker,
    transactional_id: Option<&kafka_protocol::messages::TransactionalId>,
    partition: &Partition,
    records: &[u8],
) -> Result<(), (ResponseError, String)> {
    let Some(header) = BatchHeader::parse(records).filter(|h| h.is_transactional()) else {
        return Ok(());
    };
    if !broker.txns.config.verify_partitions
        || partition.in_transaction(header.producer_id, header.producer_epoch)
    {
        return Ok(());
    }
    let Some(id) = transactional_id else {
        return Err((
            ResponseError::TransactionalIdAuthorizationFailed,
            "a transactional batch needs the request's transactional id".to_string(),
        ));
    };
    let id = id.0.as_str();
    let tp = (partition.topic.to_string(), partition.index);
    let outcome = crate::txn::markers::verify_partition(
        broker,
        id,
        header.producer_id,
        header.producer_epoch,
        &tp,
    )
    .await;
    match outcome {
        Ok(()) => Ok(()),
        Err(
            code @ (ResponseError::InvalidTxnState
            | ResponseError::InvalidProducerIdMapping
            | ResponseError::ProducerFenced
            | ResponseError::InvalidProducerEpoch
            | ResponseError::TransactionalIdAuthorizationFailed),
        ) => {
            let code = if code == ResponseError::ProducerFenced {
                ResponseError::InvalidProducerEpoch
            } else {
                code
            };
            Err((
                code,
                format!("{}-{} is not in the producer's transaction", tp.0, tp.1),
            ))
        }
        Err(code) => Err((
            ResponseError::NotEnoughReplicas,
            format!("the transaction coordinator could not verify the partition: {code:?}"),
        )),
    }
}

pub(super) async fn handle(
    broker: &Broker,
    context: &RequestContext,
    request: ProduceRequest,
    version: i16,
) -> Option<ProduceResponse> {
    let acks = request.acks;
    let acks_valid = matches!(acks, -1..=1);
    let timeout = Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0));
    let mut responses: Vec<TopicProduceResponse> = Vec::with_capacity(request.topic_data.len());
    let mut pending: Vec<Pending> = Vec::new();
    for topic in request.topic_data {
        let name: Option<Cow<'_, str>> = if version >= 13 {
            broker
                .topic_by_id(topic.topic_id)
                .map(|t| Cow::Owned(t.name))
        } else {
            Some(Cow::Borrowed(topic.name.0.as_str()))
        };
        let authorized = name
            .as_deref()
            .is_none_or(|n| context.allowed(broker, Operation::Write, ResourceType::Topic, n));
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for data in topic.partition_data {
            let result = PartitionProduceResponse::default()
                .with_index(data.index)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1);
            let failed = |code: ResponseError, message: String| {
                tracing::debug!(topic = name.as_deref().unwrap_or(""), partition = data.index, ?code, %message, "produce refused");
                result
                    .clone()
                    .with_error_code(code.code())
                    .with_error_message(Some(str_bytes(&message)))
            };
            let outcome = 'outcome: {
                if !acks_valid {
                    break 'outcome failed(
                        ResponseError::InvalidRequiredAcks,
                        format!("acks must be -1, 0 or 1, not {acks}"),
                    );
                }
                let Some(name) = name.as_deref() else {
                    break 'outcome failed(
                        ResponseError::UnknownTopicId,
                        format!("no topic has id {}", topic.topic_id),
                    );
                };
                if !authorized {
                    break 'outcome failed(
                        ResponseError::TopicAuthorizationFailed,
                        format!("{} may not write to `{name}`", context.principal),
                    );
                }
                let partition = match broker.leader_partition(name, data.index) {
                    Ok(partition) => partition,
                    Err(code) => {
                        break 'outcome failed(
                            code,
                            format!("{name}-{} is not led by this broker", data.index),
                        );
                    }
                };
                let Some(records) = data.records.as_ref() else {
                    break 'outcome failed(
                        ResponseError::CorruptMessage,
                        "the request carries no records".to_string(),
                    );
                };
                if version < 7 && has_zstd_batch(records) {
                    break 'outcome failed(
                        ResponseError::UnsupportedCompressionType,
                        format!(
                            "Produce v{version} may not carry zstd batches; zstd needs v7 or later"
                        ),
                    );
                }
                if let Err((code, message)) = verify_transaction(
                    broker,
                    request.transactional_id.as_ref(),
                    &partition,
                    records,
                )
                .await
                {
                    break 'outcome failed(code, message);
                }
                match partition.append(records, acks == -1) {
                    Ok(info) => {
                        broker
                            .metrics
                            .bytes_in
                            .with_label_values(&[name])
                            .inc_by(info.bytes as u64);
                        broker
                            .metrics
                            .messages_in
                            .with_label_values(&[name])
                            .inc_by(info.record_count);
                        pending.push(Pending {
                            topic_at: responses.len(),
                            partition_at: partitions.len(),
                            partition: Arc::clone(&partition),
                            end: info.last_offset + 1,
                        });
                        let append_time = if partition.log_append_time() {
                            info.max_timestamp
                        } else {
                            -1
                        };
                        result
                            .with_base_offset(info.base_offset)
                            .with_log_append_time_ms(append_time)
                            .with_log_start_offset(partition.log_start_offset())
                    }
                    Err(e) => {
                        let code = produce_error_code(&e);
                        if code == ResponseError::KafkaStorageError {
                            tracing::error!(partition = ?partition, error = %e, "append failed");
                        }
                        failed(code, format!("{name}-{}: {e}", data.index))
                    }
                }
            };
            partitions.push(outcome);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic.name.clone())
                .with_topic_id(topic.topic_id)
                .with_partition_responses(partitions),
        );
    }
    for write in pending {
        let outcome = async {
            if write.partition.syncs_every_write() {
                write.partition.sync_through(write.end).await.map_err(|e| {
                    tracing::error!(partition = ?write.partition, error = %e, "fsync failed: the write is not acknowledged");
                    (ResponseError::KafkaStorageError, e.to_string())
                })?;
            }
            if acks == -1 {
                write
                    .partition
                    .wait_replicated(write.end, timeout)
                    .await
                    .map_err(|e| {
                        let code = match e {
                            ReplicationError::NotLeader => ResponseError::NotLeaderOrFollower,
                            ReplicationError::NotEnoughReplicasAfterAppend => {
                                ResponseError::NotEnoughReplicasAfterAppend
                            }
                            ReplicationError::Timeout => ResponseError::RequestTimedOut,
                        };
                        (code, e.to_string())
                    })?;
            }
            Ok::<(), (ResponseError, String)>(())
        }
        .await;
        if let Err((code, message)) = outcome {
            if let Some(p) = responses
                .get_mut(write.topic_at)
                .and_then(|t| t.partition_responses.get_mut(write.partition_at))
            {
                p.error_code = code.code();
                p.error_message = Some(str_bytes(&message));
            }
        }
    }
    if acks == 0 {
        return None;
    }
    let mut response = ProduceResponse::default().with_responses(responses);
    leader_hint::fill_produce(broker, &context.listener, version, &mut response);
    Some(response)
}
