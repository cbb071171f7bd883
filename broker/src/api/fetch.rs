//! Fetch: serve whole record batches, waiting up to max_wait_ms for min_bytes to arrive.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ProducerId};
use kafka_protocol::ResponseError;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{leader_hint, RequestContext};
use crate::broker::Broker;
use crate::log::ReadError;
use crate::replica::Partition;
use crate::security::authorizer::{Operation, ResourceType};

/// Longest wait honoured, whatever the client asks: a fetch is never parked forever.
const MAX_WAIT_CAP: Duration = Duration::from_secs(60);

pub(super) async fn handle(
    broker: &Arc<Broker>,
    context: &RequestContext,
    request: FetchRequest,
    version: i16,
    shutdown: &CancellationToken,
) -> FetchResponse {
    // Incremental fetch sessions (KIP-227) are not offered: every response is a full one with
    // session id 0, which clients accept as "no session"; an id we never gave out is an error.
    if version >= 7 && request.session_id != 0 {
        return FetchResponse::default()
            .with_error_code(ResponseError::FetchSessionIdNotFound.code())
            .with_session_id(0);
    }
    // A follower's fetch names its broker id; a consumer's is -1.
    let replica = if version >= 15 {
        request.replica_state.replica_id.0
    } else {
        request.replica_id.0
    };
    let follower = (replica >= 0).then_some(replica);
    // A follower copies for the cluster (CLUSTER_ACTION); a consumer needs READ on each topic.
    let cluster_action =
        follower.is_some() && context.allowed_on_cluster(broker, Operation::ClusterAction);
    let may_read = |name: &str| match follower {
        Some(_) => cluster_action,
        None => context.allowed(broker, Operation::Read, ResourceType::Topic, name),
    };
    let plan = resolve(broker, &request, version, &may_read);
    let wait =
        Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0)).min(MAX_WAIT_CAP);
    let deadline = tokio::time::Instant::now() + wait;
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    // isolation.level=read_committed (v4+): only records below the last stable offset.
    let read_committed = version >= 4 && request.isolation_level == 1;
    let max_bytes = usize::try_from(request.max_bytes).unwrap_or(0);
    let notify = Arc::new(Notify::new());
    loop {
        // Watch before reading: an append between the read and the wait still wakes us.
        for topic in &plan {
            for (_, partition) in &topic.partitions {
                if let Ok(partition) = partition {
                    partition.watch(&notify);
                }
            }
        }
        let (mut response, bytes, errors) =
            read(broker, &plan, max_bytes, follower, read_committed);
        if bytes >= min_bytes || errors || tokio::time::Instant::now() >= deadline {
            if errors {
                leader_hint::fill_fetch(broker, &context.listener, version, &mut response);
            }
            return response;
        }
        tokio::select! {
            () = notify.notified() => {}
            () = tokio::time::sleep_until(deadline) => {}
            () = shutdown.cancelled() => {
                let (mut response, _, errors) = read(broker, &plan, max_bytes, follower, read_committed);
                if errors {
                    leader_hint::fill_fetch(broker, &context.listener, version, &mut response);
                }
                return response;
            }
        }
    }
}

struct TopicPlan {
    response_name: kafka_protocol::messages::TopicName,
    topic_id: uuid::Uuid,
    name: Option<String>,
    /// (fetch offset, partition max bytes) and the partition or the error that replaces it.
    partitions: Vec<(FetchPoint, Result<Arc<Partition>, ResponseError>)>,
}

struct FetchPoint {
    index: i32,
    offset: i64,
    max_bytes: usize,
}

/// The leader's replica, after checking the fetcher's idea of the leader epoch.
pub(super) fn leader_for(
    broker: &Broker,
    name: &str,
    index: i32,
    current_epoch: i32,
) -> Result<Arc<Partition>, ResponseError> {
    let partition = broker.leader_partition(name, index)?;
    let (_, epoch) = partition.role();
    match current_epoch {
        e if e < 0 => Ok(partition),
        e if e < epoch => Err(ResponseError::FencedLeaderEpoch),
        e if e > epoch => Err(ResponseError::UnknownLeaderEpoch),
        _ => Ok(partition),
    }
}

fn resolve(
    broker: &Broker,
    request: &FetchRequest,
    version: i16,
    may_read: &dyn Fn(&str) -> bool,
) -> Vec<TopicPlan> {
    request
        .topics
        .iter()
        .map(|topic| {
            let name = if version >= 13 {
                broker.topic_by_id(topic.topic_id).map(|t| t.name)
            } else {
                Some(topic.topic.0.to_string())
            };
            let missing = if version >= 13 {
                ResponseError::UnknownTopicId
            } else {
                ResponseError::UnknownTopicOrPartition
            };
            let authorized = name.as_deref().is_none_or(may_read);
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let point = FetchPoint {
                        index: p.partition,
                        offset: p.fetch_offset,
                        max_bytes: usize::try_from(p.partition_max_bytes).unwrap_or(0),
                    };
                    let found = match &name {
                        Some(_) if !authorized => Err(ResponseError::TopicAuthorizationFailed),
                        Some(name) => leader_for(broker, name, p.partition, p.current_leader_epoch),
                        None => Err(missing),
                    };
                    (point, found)
                })
                .collect();
            TopicPlan {
                response_name: topic.topic.clone(),
                topic_id: topic.topic_id,
                name,
                partitions,
            }
        })
        .collect()
}

/// Reads every partition of the plan once. Returns the response, the record bytes in it,
/// and whether any partition answered with an error.
fn read(
    broker: &Arc<Broker>,
    plan: &[TopicPlan],
    max_bytes: usize,
    follower: Option<i32>,
    read_committed: bool,
) -> (FetchResponse, usize, bool) {
    let now = std::time::Instant::now();
    let mut total = 0usize;
    let mut errors = false;
    let mut topics = Vec::with_capacity(plan.len());
    for topic in plan {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for (point, partition) in &topic.partitions {
            let data = PartitionData::default()
                .with_partition_index(point.index)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1);
            let partition = match partition {
                Ok(partition) => partition,
                Err(code) => {
                    errors = true;
                    partitions.push(
                        data.with_error_code(code.code())
                            .with_records(Some(Bytes::new())),
                    );
                    continue;
                }
            };
            if let Some(follower) = follower {
                if let Some(change) = partition.record_follower_fetch(follower, point.offset, now) {
                    crate::replica::manager::propose_isr_change(broker, partition, change);
                }
            }
            let high_watermark = partition.high_watermark();
            let log_start = partition.log_start_offset();
            let data = data
                .with_high_watermark(high_watermark)
                .with_last_stable_offset(partition.last_stable_offset())
                .with_log_start_offset(log_start);
            let limit = point.max_bytes.min(max_bytes.saturating_sub(total));
            let mut aborted = None;
            let records = if limit == 0 && total > 0 {
                Ok(Bytes::new())
            } else {
                let end = partition.log_end_offset();
                match follower {
                    // Followers copy the whole log; consumers see only what is committed.
                    Some(_) => partition
                        .read(point.offset, limit.max(1))
                        .map(|r| r.records),
                    None if point.offset > end || point.offset < log_start => {
                        Err(ReadError::OffsetOutOfRange {
                            offset: point.offset,
                            log_start,
                            log_end: end,
                        })
                    }
                    None if read_committed => partition
                        .read_stable(point.offset, limit.max(1))
                        .map(|(r, txns)| {
                            aborted = Some(
                                txns.into_iter()
                                    .map(|t| {
                                        AbortedTransaction::default()
                                            .with_producer_id(ProducerId(t.producer_id))
                                            .with_first_offset(t.first_offset)
                                    })
                                    .collect(),
                            );
                            r.records
                        }),
                    None => partition
                        .read_committed(point.offset, limit.max(1))
                        .map(|r| r.records),
                }
            };
            match records {
                // Only the first partition with data may exceed the limits (KIP-74), so a
                // consumer always makes progress even past a batch larger than max_bytes.
                Ok(records) if total > 0 && records.len() > limit => {
                    partitions.push(data.with_records(Some(Bytes::new())));
                }
                Ok(records) => {
                    total += records.len();
                    if !records.is_empty() {
                        if let Some(name) = &topic.name {
                            broker
                                .metrics
                                .bytes_out
                                .with_label_values(&[name])
                                .inc_by(records.len() as u64);
                        }
                    }
                    partitions.push(
                        data.with_records(Some(records))
                            .with_aborted_transactions(aborted),
                    );
                }
                Err(ReadError::OffsetOutOfRange { .. }) => {
                    errors = true;
                    partitions.push(
                        data.with_error_code(ResponseError::OffsetOutOfRange.code())
                            .with_records(Some(Bytes::new())),
                    );
                }
                Err(e) => {
                    errors = true;
                    tracing::error!(partition = ?partition, error = %e, "read failed");
                    partitions.push(
                        data.with_error_code(ResponseError::KafkaStorageError.code())
                            .with_records(Some(Bytes::new())),
                    );
                }
            }
        }
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(topic.response_name.clone())
                .with_topic_id(topic.topic_id)
                .with_partitions(partitions),
        );
    }
    (
        FetchResponse::default().with_responses(topics),
        total,
        errors,
    )
}
