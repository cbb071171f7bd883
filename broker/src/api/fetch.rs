//! Fetch: serve whole record batches, waiting up to max_wait_ms for min_bytes to arrive, in
//! incremental fetch sessions (KIP-227, `crate::fetch_session`) from version 7.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ProducerId, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{leader_hint, RequestContext};
use crate::broker::Broker;
use crate::fetch_session::{
    Answer, Context, FetchParams, PartitionKey, SessionError, TopicRef, FINAL_EPOCH, NO_SESSION,
};
use crate::log::ReadError;
use crate::replica::Partition;
use crate::security::authorizer::{Operation, ResourceType};

/// Longest wait honoured, whatever the client asks: a fetch is never parked forever.
const MAX_WAIT_CAP: Duration = Duration::from_secs(60);
/// From this version a fetch names its topics by id.
const TOPIC_IDS: i16 = 13;

pub(super) async fn handle(
    broker: &Arc<Broker>,
    context: &RequestContext,
    request: FetchRequest,
    version: i16,
    shutdown: &CancellationToken,
) -> FetchResponse {
    let (session_id, epoch) = if version >= 7 {
        (request.session_id, request.session_epoch)
    } else {
        (NO_SESSION, FINAL_EPOCH)
    };
    let requested = requested(&request, version);
    let session = broker.fetch_sessions.context(
        session_id,
        epoch,
        version >= TOPIC_IDS,
        &requested,
        &forgotten(&request, version),
        Instant::now(),
    );
    let wanted = match &session {
        Context::Error(error) => {
            return FetchResponse::default()
                .with_error_code(session_error(*error).code())
                .with_session_id(NO_SESSION);
        }
        Context::Incremental { partitions, .. } => partitions.as_slice(),
        Context::Sessionless | Context::Full => requested.as_slice(),
    };
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
    let plan = resolve(broker, wanted, version, &may_read);
    let wait =
        Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0)).min(MAX_WAIT_CAP);
    let deadline = tokio::time::Instant::now() + wait;
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    // isolation.level=read_committed (v4+): only records below the last stable offset.
    let read_committed = version >= 4 && request.isolation_level == 1;
    let max_bytes = usize::try_from(request.max_bytes).unwrap_or(0);
    let notify = Arc::new(Notify::new());
    let respond = |(mut response, _, errors): (FetchResponse, usize, bool)| {
        if errors {
            leader_hint::fill_fetch(broker, &context.listener, version, &mut response);
        }
        in_session(broker, &session, wanted, follower, version, response)
    };
    loop {
        // Watch before reading: an append between the read and the wait still wakes us.
        for topic in &plan {
            for (_, partition) in &topic.partitions {
                if let Ok(partition) = partition {
                    partition.watch(&notify);
                }
            }
        }
        let outcome = read(broker, &plan, max_bytes, follower, read_committed);
        let (_, bytes, errors) = &outcome;
        if *bytes >= min_bytes || *errors || tokio::time::Instant::now() >= deadline {
            return respond(outcome);
        }
        tokio::select! {
            () = notify.notified() => {}
            () = tokio::time::sleep_until(deadline) => {}
            () = shutdown.cancelled() => {
                return respond(read(broker, &plan, max_bytes, follower, read_committed));
            }
        }
    }
}

/// The partitions a fetch names, with what it asks of each.
fn requested(request: &FetchRequest, version: i16) -> Vec<(PartitionKey, FetchParams)> {
    request
        .topics
        .iter()
        .flat_map(|topic| {
            let topic_ref = topic_ref(version, topic.topic_id, &topic.topic);
            topic.partitions.iter().map(move |p| {
                let key = PartitionKey {
                    topic: topic_ref.clone(),
                    partition: p.partition,
                };
                let params = FetchParams {
                    fetch_offset: p.fetch_offset,
                    max_bytes: p.partition_max_bytes,
                    current_leader_epoch: p.current_leader_epoch,
                    log_start_offset: p.log_start_offset,
                    last_fetched_epoch: p.last_fetched_epoch,
                };
                (key, params)
            })
        })
        .collect()
}

/// The partitions an incremental fetch takes out of its session.
fn forgotten(request: &FetchRequest, version: i16) -> Vec<PartitionKey> {
    request
        .forgotten_topics_data
        .iter()
        .flat_map(|topic| {
            let topic_ref = topic_ref(version, topic.topic_id, &topic.topic);
            topic.partitions.iter().map(move |partition| PartitionKey {
                topic: topic_ref.clone(),
                partition: *partition,
            })
        })
        .collect()
}

fn topic_ref(version: i16, id: uuid::Uuid, name: &TopicName) -> TopicRef {
    if version >= TOPIC_IDS {
        TopicRef::Id(id)
    } else {
        TopicRef::Name(Arc::from(name.0.as_str()))
    }
}

fn session_error(error: SessionError) -> ResponseError {
    match error {
        SessionError::IdNotFound => ResponseError::FetchSessionIdNotFound,
        SessionError::InvalidEpoch => ResponseError::InvalidFetchSessionEpoch,
        SessionError::TopicIdError => ResponseError::FetchSessionTopicIdError,
    }
}

/// What the session needs to know of one partition's answer.
fn answer(data: &PartitionData) -> Answer {
    Answer {
        high_watermark: data.high_watermark,
        log_start_offset: data.log_start_offset,
        has_records: data.records.as_ref().is_some_and(|r| !r.is_empty()),
        error: data.error_code != 0,
        must_send: data.preferred_read_replica.0 >= 0 || data.diverging_epoch.epoch >= 0,
    }
}

/// The response as the session has it: a full fetch becomes a new session when the cache
/// has room; an incremental one carries only the partitions with news. `wanted` is in the
/// order of the response's partitions.
fn in_session(
    broker: &Broker,
    session: &Context,
    wanted: &[(PartitionKey, FetchParams)],
    follower: Option<i32>,
    version: i16,
    response: FetchResponse,
) -> FetchResponse {
    let answered = || {
        response
            .responses
            .iter()
            .flat_map(|t| t.partitions.iter())
            .zip(wanted)
    };
    match session {
        Context::Error(_) | Context::Sessionless => response.with_session_id(NO_SESSION),
        Context::Full => {
            let partitions = answered()
                .map(|(data, (key, params))| (key.clone(), *params, answer(data)))
                .collect();
            let id = broker.fetch_sessions.create(
                follower.is_some(),
                version >= TOPIC_IDS,
                partitions,
                Instant::now(),
            );
            response.with_session_id(id)
        }
        Context::Incremental { id, epoch, .. } => {
            let answers: Vec<(PartitionKey, Answer)> = answered()
                .map(|(data, (key, _))| (key.clone(), answer(data)))
                .collect();
            match broker.fetch_sessions.answer(*id, *epoch, &answers) {
                Ok(send) => {
                    let mut send = send.into_iter();
                    let mut response = response.with_session_id(*id);
                    for topic in &mut response.responses {
                        topic.partitions.retain(|_| send.next().unwrap_or(true));
                    }
                    response.responses.retain(|t| !t.partitions.is_empty());
                    response
                }
                Err(error) => FetchResponse::default()
                    .with_error_code(session_error(error).code())
                    .with_session_id(*id),
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

/// The partitions to read, grouped into topics as they come (a topic named twice apart
/// answers twice, as in Kafka), each with its leader replica or the error that replaces it.
fn resolve(
    broker: &Broker,
    wanted: &[(PartitionKey, FetchParams)],
    version: i16,
    may_read: &dyn Fn(&str) -> bool,
) -> Vec<TopicPlan> {
    let missing = if version >= TOPIC_IDS {
        ResponseError::UnknownTopicId
    } else {
        ResponseError::UnknownTopicOrPartition
    };
    let mut plan: Vec<TopicPlan> = Vec::new();
    let mut current: Option<(&TopicRef, bool)> = None;
    for (key, params) in wanted {
        if current.is_none_or(|(topic, _)| *topic != key.topic) {
            let (response_name, topic_id, name) = match &key.topic {
                TopicRef::Id(id) => (
                    TopicName::default(),
                    *id,
                    broker.topic_by_id(*id).map(|t| t.name),
                ),
                TopicRef::Name(name) => (
                    TopicName(StrBytes::from_string(name.to_string())),
                    uuid::Uuid::nil(),
                    Some(name.to_string()),
                ),
            };
            let authorized = name.as_deref().is_none_or(may_read);
            current = Some((&key.topic, authorized));
            plan.push(TopicPlan {
                response_name,
                topic_id,
                name,
                partitions: Vec::new(),
            });
        }
        let (Some((_, authorized)), Some(topic)) = (current, plan.last_mut()) else {
            continue;
        };
        let point = FetchPoint {
            index: key.partition,
            offset: params.fetch_offset,
            max_bytes: usize::try_from(params.max_bytes).unwrap_or(0),
        };
        let found = match &topic.name {
            Some(_) if !authorized => Err(ResponseError::TopicAuthorizationFailed),
            Some(name) => leader_for(broker, name, key.partition, params.current_leader_epoch),
            None => Err(missing),
        };
        topic.partitions.push((point, found));
    }
    plan
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
