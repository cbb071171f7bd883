//! ListOffsets: the earliest, latest or first-at-a-timestamp offset of partitions.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;

use super::RequestContext;
use crate::broker::Broker;
use crate::security::authorizer::{Operation, ResourceType};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

pub(super) fn handle(
    broker: &Broker,
    context: &RequestContext,
    request: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let name = topic.name.0.to_string();
            let authorized = context.allowed(broker, Operation::Describe, ResourceType::Topic, &name);
            let partitions = topic
                .partitions
                .into_iter()
                .map(|p| {
                    let mut result = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_timestamp(-1)
                        .with_offset(-1);
                    if !authorized {
                        return result.with_error_code(ResponseError::TopicAuthorizationFailed.code());
                    }
                    let partition = match broker.leader_partition(&name, p.partition_index) {
                        Ok(partition) => partition,
                        Err(code) => return result.with_error_code(code.code()),
                    };
                    if version >= 4 {
                        result = result.with_leader_epoch(0);
                    }
                    let found = match p.timestamp {
                        LATEST => Ok(Some((partition.high_watermark(), -1))),
                        EARLIEST | EARLIEST_LOCAL => Ok(Some((partition.log_start_offset(), -1))),
                        MAX_TIMESTAMP => Ok(partition.max_timestamp().map(|(ts, offset)| (offset, ts))),
                        // No tiered storage: nothing is in the remote tier.
                        LATEST_TIERED => Ok(None),
                        timestamp if timestamp >= 0 => partition.offset_for_timestamp(timestamp),
                        other => {
                            tracing::debug!(timestamp = other, "unknown ListOffsets timestamp");
                            return result.with_error_code(ResponseError::InvalidRequest.code());
                        }
                    };
                    match found {
                        Ok(Some((offset, timestamp))) => result.with_offset(offset).with_timestamp(timestamp),
                        Ok(None) => result,
                        Err(e) => {
                            tracing::error!(partition = ?partition, error = %e, "offset lookup failed");
                            result.with_error_code(ResponseError::KafkaStorageError.code())
                        }
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}
