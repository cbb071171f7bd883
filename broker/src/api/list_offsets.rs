//! ListOffsets: the earliest, latest or first-at-a-timestamp offset of partitions.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;

use super::fetch::leader_for;
use super::RequestContext;
use crate::broker::Broker;
use crate::log::{ReadError, TimestampOffset};
use crate::replica::Partition;
use crate::security::authorizer::{Operation, ResourceType};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

/// `replica_id` of a consumer's request; followers send their broker id, and debugging
/// tools -2.
const CONSUMER_REPLICA_ID: i32 = -1;

pub(super) fn handle(
    broker: &Broker,
    context: &RequestContext,
    request: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let reader = match (request.replica_id.0, request.isolation_level) {
        (CONSUMER_REPLICA_ID, 1) if version >= 2 => Reader::ReadCommitted,
        (CONSUMER_REPLICA_ID, _) => Reader::Consumer,
        _ => Reader::Replica,
    };
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
                    let result = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_timestamp(-1)
                        .with_offset(-1);
                    if !authorized {
                        return result.with_error_code(ResponseError::TopicAuthorizationFailed.code());
                    }
                    let partition = match leader_for(broker, &name, p.partition_index, p.current_leader_epoch) {
                        Ok(partition) => partition,
                        Err(code) => return result.with_error_code(code.code()),
                    };
                    match lookup(&partition, p.timestamp, reader) {
                        Ok(Some(found)) => {
                            let result = result.with_offset(found.offset).with_timestamp(found.timestamp);
                            // Absent from the answer (-1) when the record's batch has no epoch.
                            match found.leader_epoch {
                                Some(epoch) if version >= 4 => result.with_leader_epoch(epoch),
                                _ => result,
                            }
                        }
                        Ok(None) => result,
                        Err(Lookup::UnknownTimestamp) => {
                            tracing::debug!(timestamp = p.timestamp, "unknown ListOffsets timestamp");
                            result.with_error_code(ResponseError::InvalidRequest.code())
                        }
                        Err(Lookup::Read(e)) => {
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

/// Who asks, which bounds the latest offset: a follower or a debugging tool may read to the
/// log end, a consumer to the high watermark, a `read_committed` consumer to the last stable
/// offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reader {
    Replica,
    Consumer,
    ReadCommitted,
}

enum Lookup {
    UnknownTimestamp,
    Read(ReadError),
}

/// The offset, timestamp and leader epoch ListOffsets answers for `timestamp`, as Kafka's
/// `Partition.fetchOffsetForTimestamp` and `UnifiedLog.fetchOffsetByTimestamp` do: the latest
/// offset a consumer may read (the high watermark; the log end for followers and tools)
/// with the partition's current leader epoch, the log start with the epoch of its first
/// record, or the record found by timestamp with its batch's epoch. A record found at or past
/// what a consumer may read is not reported.
fn lookup(
    partition: &Partition,
    timestamp: i64,
    reader: Reader,
) -> Result<Option<TimestampOffset>, Lookup> {
    let last_fetchable = match reader {
        Reader::Replica => partition.log_end_offset(),
        Reader::Consumer => partition.high_watermark(),
        Reader::ReadCommitted => partition.last_stable_offset(),
    };
    let found = match timestamp {
        LATEST => {
            let (_, leader_epoch) = partition.role();
            return Ok(Some(TimestampOffset {
                timestamp: -1,
                offset: last_fetchable,
                leader_epoch: Some(leader_epoch),
            }));
        }
        EARLIEST | EARLIEST_LOCAL => {
            return Ok(Some(TimestampOffset {
                timestamp: -1,
                offset: partition.log_start_offset(),
                leader_epoch: partition.earliest_epoch(),
            }));
        }
        MAX_TIMESTAMP => partition.max_timestamp_record(),
        // No tiered storage: nothing is in the remote tier.
        LATEST_TIERED => Ok(None),
        timestamp if timestamp >= 0 => partition.offset_for_timestamp(timestamp),
        _ => return Err(Lookup::UnknownTimestamp),
    };
    Ok(found
        .map_err(Lookup::Read)?
        .filter(|found| found.offset < last_fetchable))
}
