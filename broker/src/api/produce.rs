//! Produce: append record batches to partition logs.

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::broker::Broker;
use crate::producer::SequenceError;
use crate::replica::ProduceError;

pub(super) async fn handle(
    broker: &Broker,
    request: ProduceRequest,
    version: i16,
) -> Option<ProduceResponse> {
    let acks = request.acks;
    let acks_valid = matches!(acks, -1..=1);
    let mut responses = Vec::with_capacity(request.topic_data.len());
    // Partitions whose writes must be fsynced before they are acknowledged.
    let mut to_sync: Vec<(usize, usize, std::sync::Arc<crate::replica::Partition>, i64)> =
        Vec::new();
    for topic in request.topic_data {
        let name = if version >= 13 {
            broker.topic_by_id(topic.topic_id).map(|t| t.name)
        } else {
            Some(topic.name.0.to_string())
        };
        let partitions = topic
            .partition_data
            .into_iter()
            .map(|data| {
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
                if !acks_valid {
                    return failed(ResponseError::InvalidRequiredAcks, format!("acks must be -1, 0 or 1, not {acks}"));
                }
                let Some(name) = name.as_deref() else {
                    return failed(ResponseError::UnknownTopicId, format!("no topic has id {}", topic.topic_id));
                };
                let Some(partition) = broker.partition(name, data.index) else {
                    return failed(
                        ResponseError::UnknownTopicOrPartition,
                        format!("partition {name}-{} does not exist", data.index),
                    );
                };
                let Some(records) = data.records else {
                    return failed(ResponseError::CorruptMessage, "the request carries no records".to_string());
                };
                match partition.append(&records) {
                    Ok(info) => {
                        if partition.syncs_every_write() {
                            to_sync.push((responses.len(), data.index as usize, std::sync::Arc::clone(&partition), info.last_offset + 1));
                        }
                        broker.metrics.bytes_in.with_label_values(&[name]).inc_by(info.bytes as u64);
                        broker.metrics.messages_in.with_label_values(&[name]).inc_by(info.record_count);
                        result
                            .with_base_offset(info.base_offset)
                            .with_log_start_offset(partition.log_start_offset())
                    }
                    Err(e) => {
                        let code = match &e {
                            ProduceError::Append(e) => e.response_error(),
                            ProduceError::Sequence(SequenceError::OutOfOrder { .. }) => {
                                ResponseError::OutOfOrderSequenceNumber
                            }
                            ProduceError::Sequence(SequenceError::InvalidEpoch { .. }) => {
                                ResponseError::InvalidProducerEpoch
                            }
                            ProduceError::InvalidRecord(_) => ResponseError::InvalidRecord,
                        };
                        if code == ResponseError::KafkaStorageError {
                            tracing::error!(partition = ?partition, error = %e, "append failed");
                        }
                        failed(code, format!("{name}-{}: {e}", data.index))
                    }
                }
            })
            .collect();
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic.name.clone())
                .with_topic_id(topic.topic_id)
                .with_partition_responses(partitions),
        );
    }
    for (topic_at, partition_index, partition, end) in to_sync {
        if let Err(e) = partition.sync_through(end).await {
            tracing::error!(partition = ?partition, error = %e, "fsync failed: the write is not acknowledged");
            if let Some(p) = responses
                .get_mut(topic_at)
                .and_then(|t: &mut TopicProduceResponse| {
                    t.partition_responses
                        .iter_mut()
                        .find(|p| p.index as usize == partition_index)
                })
            {
                p.error_code = ResponseError::KafkaStorageError.code();
                p.error_message = Some(str_bytes(&e.to_string()));
            }
        }
    }
    if acks == 0 {
        return None;
    }
    Some(ProduceResponse::default().with_responses(responses))
}
