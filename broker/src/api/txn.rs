//! Transactions: InitProducerId with a transactional id, AddPartitionsToTxn, AddOffsetsToTxn,
//! EndTxn, TxnOffsetCommit, WriteTxnMarkers (between brokers), DescribeTransactions,
//! ListTransactions and DescribeProducers. The decisions are the coordinator's (`txn`); these
//! handlers check authorization and coordination, and translate.

use std::sync::Arc;

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeProducersRequest, DescribeProducersResponse,
    DescribeTransactionsRequest, DescribeTransactionsResponse, EndTxnRequest, EndTxnResponse,
    InitProducerIdRequest, InitProducerIdResponse, ListTransactionsRequest,
    ListTransactionsResponse, ProducerId, TransactionalId, TxnOffsetCommitRequest,
    TxnOffsetCommitResponse, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};
use kafka_protocol::ResponseError;

use super::{str_bytes, topic_name, RequestContext};
use crate::broker::{now_ms, Broker};
use crate::group::offsets::{self, OffsetRecord};
use crate::group::{CommittedOffset, OFFSETS_TOPIC};
use crate::log::control::Marker;
use crate::security::authorizer::{Operation, ResourceType};
use crate::txn::markers::{complete_in_background, transition, write_markers_here};
use crate::txn::{decide_add, decide_end, decide_init, Add, End, Init, TxnMetadata};

/// Older clients know INVALID_PRODUCER_EPOCH where newer versions of an API say
/// PRODUCER_FENCED (KIP-588): the first version of each API that may carry it.
fn fenced_for(code: ResponseError, version: i16, first: i16) -> ResponseError {
    if code == ResponseError::ProducerFenced && version < first {
        ResponseError::InvalidProducerEpoch
    } else {
        code
    }
}

fn txn_id(id: &TransactionalId) -> String {
    id.0.to_string()
}

/// The transactional id is one the principal may write, and this broker coordinates it.
fn check_txn(broker: &Broker, context: &RequestContext, id: &str) -> Result<(), ResponseError> {
    if !context.allowed(broker, Operation::Write, ResourceType::TransactionalId, id) {
        return Err(ResponseError::TransactionalIdAuthorizationFailed);
    }
    broker.check_transaction_coordinator(id)
}

/// InitProducerId for a transactional producer.
pub(super) async fn init(
    broker: &Arc<Broker>,
    context: &RequestContext,
    request: &InitProducerIdRequest,
    id: &str,
    version: i16,
) -> InitProducerIdResponse {
    let failed = |code: ResponseError| {
        InitProducerIdResponse::default()
            .with_error_code(fenced_for(code, version, 4).code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if let Err(code) = check_txn(broker, context, id) {
        return failed(code);
    }
    let timeout = request.transaction_timeout_ms;
    if timeout <= 0 || timeout > broker.txns.config.max_timeout_ms {
        return failed(ResponseError::InvalidTransactionTimeout);
    }
    let current = broker.txns.get(id);
    let now = now_ms();
    let decision = decide_init(
        current.as_ref(),
        request.producer_id.0,
        request.producer_epoch,
        timeout,
        now,
    );
    let next = match decision {
        Init::Refuse(code) => return failed(code),
        Init::AbortFirst(next) => {
            let outcome = transition(broker, current.as_ref(), next).await;
            if outcome.is_ok() {
                tracing::info!(
                    transactional_id = id,
                    "a new producer instance aborts the open transaction of the one before"
                );
                complete_in_background(broker, id.to_string());
            }
            return failed(ResponseError::ConcurrentTransactions);
        }
        Init::Write(next) => next,
        Init::NewProducerId => {
            let producer_id = match broker.allocate_producer_id().await {
                Ok(producer_id) => producer_id,
                Err(e) => return failed(e.code),
            };
            let mut next = TxnMetadata::new(id, producer_id, timeout, now);
            if let Some(old) = &current {
                next.last_producer_id = old.producer_id;
                next.last_producer_epoch = old.producer_epoch;
            }
            next
        }
    };
    let (producer_id, epoch) = (next.producer_id, next.producer_epoch);
    if current.as_ref() == Some(&next) {
        // A retry of the call that made the current epoch (KIP-360).
        return InitProducerIdResponse::default()
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch);
    }
    match transition(broker, current.as_ref(), next).await {
        Ok(()) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch),
        Err(e) => failed(e.code),
    }
}

/// Adds partitions to the producer's transaction: the outcome is the same for each.
async fn add(
    broker: &Broker,
    id: &str,
    producer_id: i64,
    epoch: i16,
    partitions: &[(String, i32)],
) -> Result<(), ResponseError> {
    let current = broker.txns.get(id);
    match decide_add(current.as_ref(), producer_id, epoch, partitions, now_ms()) {
        Add::AlreadyIn => Ok(()),
        Add::Refuse(code) => Err(code),
        Add::Write(next) => transition(broker, current.as_ref(), next)
            .await
            .map_err(|e| e.code),
    }
}

/// Which of `partitions` the principal may write to and that exist; the others with their
/// error.
fn check_partitions(
    broker: &Broker,
    context: &RequestContext,
    partitions: &[(String, i32)],
) -> Vec<((String, i32), Option<ResponseError>)> {
    let image = broker.image();
    partitions
        .iter()
        .map(|(topic, index)| {
            let error = if !context.allowed(broker, Operation::Write, ResourceType::Topic, topic) {
                Some(ResponseError::TopicAuthorizationFailed)
            } else if image.partition(topic, *index).is_none() {
                Some(ResponseError::UnknownTopicOrPartition)
            } else {
                None
            };
            ((topic.clone(), *index), error)
        })
        .collect()
}

/// A transactional producer as a request names it.
#[derive(Debug, Clone, Copy)]
struct Producer<'a> {
    id: &'a str,
    producer_id: i64,
    epoch: i16,
}

/// Per topic, each partition's offset to stage or the error to answer.
type TxnCommitPlan = Vec<(String, Vec<(i32, Result<OffsetRecord, ResponseError>)>)>;

/// One transaction's AddPartitionsToTxn: per partition, its error code.
async fn add_partitions(
    broker: &Broker,
    context: &RequestContext,
    producer: Producer<'_>,
    verify_only: bool,
    partitions: Vec<(String, i32)>,
    version: i16,
) -> Vec<((String, i32), i16)> {
    let Producer {
        id,
        producer_id,
        epoch,
    } = producer;
    let all = |code: ResponseError| {
        partitions
            .iter()
            .map(|p| (p.clone(), fenced_for(code, version, 2).code()))
            .collect()
    };
    if verify_only {
        // A partition leader asks (KIP-890): no authorization of the producer's principal,
        // the leader has it checked already; the request itself needs CLUSTER_ACTION.
        if !context.allowed_on_cluster(broker, Operation::ClusterAction) {
            return all(ResponseError::ClusterAuthorizationFailed);
        }
        if let Err(code) = broker.check_transaction_coordinator(id) {
            return all(code);
        }
        let current = broker.txns.get(id);
        return partitions
            .iter()
            .map(|p| {
                let code = match crate::txn::verify(current.as_ref(), producer_id, epoch, p) {
                    Ok(()) => 0,
                    Err(code) => code.code(),
                };
                (p.clone(), code)
            })
            .collect();
    }
    if let Err(code) = check_txn(broker, context, id) {
        return all(code);
    }
    let checked = check_partitions(broker, context, &partitions);
    if checked.iter().any(|(_, e)| e.is_some()) {
        // Kafka adds none when any fails; the others are reported as not attempted.
        return checked
            .into_iter()
            .map(|(p, e)| (p, e.unwrap_or(ResponseError::OperationNotAttempted).code()))
            .collect();
    }
    let code = match add(broker, id, producer_id, epoch, &partitions).await {
        Ok(()) => 0,
        Err(code) => fenced_for(code, version, 2).code(),
    };
    partitions.into_iter().map(|p| (p, code)).collect()
}

fn topic_results(results: Vec<((String, i32), i16)>) -> Vec<AddPartitionsToTxnTopicResult> {
    let mut by_topic: Vec<AddPartitionsToTxnTopicResult> = Vec::new();
    for ((topic, index), code) in results {
        let result = AddPartitionsToTxnPartitionResult::default()
            .with_partition_index(index)
            .with_partition_error_code(code);
        match by_topic.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(entry) => entry.results_by_partition.push(result),
            None => by_topic.push(
                AddPartitionsToTxnTopicResult::default()
                    .with_name(topic_name(&topic))
                    .with_results_by_partition(vec![result]),
            ),
        }
    }
    by_topic
}

pub(super) async fn add_partitions_to_txn(
    broker: &Broker,
    context: &RequestContext,
    request: AddPartitionsToTxnRequest,
    version: i16,
) -> AddPartitionsToTxnResponse {
    if version <= 3 {
        let partitions = request
            .v3_and_below_topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.name.0.to_string(), *p)))
            .collect();
        let id = txn_id(&request.v3_and_below_transactional_id);
        let producer = Producer {
            id: &id,
            producer_id: request.v3_and_below_producer_id.0,
            epoch: request.v3_and_below_producer_epoch,
        };
        let results = add_partitions(broker, context, producer, false, partitions, version).await;
        return AddPartitionsToTxnResponse::default()
            .with_results_by_topic_v3_and_below(topic_results(results));
    }
    let mut results = Vec::with_capacity(request.transactions.len());
    for txn in request.transactions {
        let partitions = txn
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.name.0.to_string(), *p)))
            .collect();
        let id = txn_id(&txn.transactional_id);
        let producer = Producer {
            id: &id,
            producer_id: txn.producer_id.0,
            epoch: txn.producer_epoch,
        };
        let outcome = add_partitions(
            broker,
            context,
            producer,
            txn.verify_only,
            partitions,
            version,
        )
        .await;
        results.push(
            AddPartitionsToTxnResult::default()
                .with_transactional_id(txn.transactional_id)
                .with_topic_results(topic_results(outcome)),
        );
    }
    AddPartitionsToTxnResponse::default().with_results_by_transaction(results)
}

pub(super) async fn add_offsets_to_txn(
    broker: &Broker,
    context: &RequestContext,
    request: &AddOffsetsToTxnRequest,
    version: i16,
) -> AddOffsetsToTxnResponse {
    let id = txn_id(&request.transactional_id);
    let group = request.group_id.0.to_string();
    let outcome = async {
        check_txn(broker, context, &id)?;
        if !context.allowed(broker, Operation::Read, ResourceType::Group, &group) {
            return Err(ResponseError::GroupAuthorizationFailed);
        }
        broker.ensure_offsets_topic().await.map_err(|e| e.code)?;
        let partition = broker
            .offsets_partition_of(&group)
            .ok_or(ResponseError::CoordinatorNotAvailable)?;
        add(
            broker,
            &id,
            request.producer_id.0,
            request.producer_epoch,
            &[(OFFSETS_TOPIC.to_string(), partition)],
        )
        .await
    }
    .await;
    let code = outcome
        .err()
        .map_or(0, |c| fenced_for(c, version, 2).code());
    AddOffsetsToTxnResponse::default().with_error_code(code)
}

pub(super) async fn end_txn(
    broker: &Arc<Broker>,
    context: &RequestContext,
    request: &EndTxnRequest,
    version: i16,
) -> EndTxnResponse {
    let id = txn_id(&request.transactional_id);
    let outcome = async {
        check_txn(broker, context, &id)?;
        let current = broker.txns.get(&id);
        match decide_end(
            current.as_ref(),
            request.producer_id.0,
            request.producer_epoch,
            request.committed,
            now_ms(),
        ) {
            End::Done => Ok(()),
            End::Refuse(code) => Err(code),
            End::Prepare(next) => {
                transition(broker, current.as_ref(), next)
                    .await
                    .map_err(|e| e.code)?;
                complete_in_background(broker, id.clone());
                Ok(())
            }
        }
    }
    .await;
    let code = outcome
        .err()
        .map_or(0, |c| fenced_for(c, version, 2).code());
    EndTxnResponse::default()
        .with_error_code(code)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
}

pub(super) async fn txn_offset_commit(
    broker: &Broker,
    context: &RequestContext,
    request: TxnOffsetCommitRequest,
    version: i16,
) -> TxnOffsetCommitResponse {
    let group = request.group_id.0.to_string();
    let id = txn_id(&request.transactional_id);
    let producer = (request.producer_id.0, request.producer_epoch);
    let checked = (|| {
        if !context.allowed(broker, Operation::Write, ResourceType::TransactionalId, &id) {
            return Err(ResponseError::TransactionalIdAuthorizationFailed);
        }
        if !context.allowed(broker, Operation::Read, ResourceType::Group, &group) {
            return Err(ResponseError::GroupAuthorizationFailed);
        }
        broker.check_coordinator(&group)?;
        if version >= 3 && request.generation_id >= 0 {
            broker.groups.check_commit(
                &group,
                request.generation_id,
                request.member_id.as_str(),
                request.group_instance_id.as_ref().map(|s| s.as_str()),
            )?;
        }
        Ok(())
    })();
    let image = broker.image();
    let timestamp = now_ms();
    let mut plan: TxnCommitPlan = Vec::new();
    for topic in &request.topics {
        let name = topic.name.0.to_string();
        let allowed = context.allowed(broker, Operation::Read, ResourceType::Topic, &name);
        let partitions = topic
            .partitions
            .iter()
            .map(|p| {
                let outcome = match checked {
                    Err(e) => Err(e),
                    Ok(()) if !allowed => Err(ResponseError::TopicAuthorizationFailed),
                    Ok(()) if image.partition(&name, p.partition_index).is_none() => {
                        Err(ResponseError::UnknownTopicOrPartition)
                    }
                    Ok(()) => Ok(OffsetRecord {
                        group: group.clone(),
                        topic: name.clone(),
                        partition: p.partition_index,
                        value: Some(CommittedOffset {
                            offset: p.committed_offset,
                            leader_epoch: p.committed_leader_epoch,
                            metadata: p
                                .committed_metadata
                                .as_ref()
                                .map(|m| m.to_string())
                                .unwrap_or_default(),
                            commit_timestamp: timestamp,
                        }),
                    }),
                };
                (p.partition_index, outcome)
            })
            .collect();
        plan.push((name, partitions));
    }
    let records: Vec<OffsetRecord> = plan
        .iter()
        .flat_map(|(_, ps)| ps.iter().filter_map(|(_, r)| r.as_ref().ok().cloned()))
        .collect();
    let stored = if records.is_empty() {
        Ok(())
    } else {
        store_txn_offsets(broker, &group, producer, records).await
    };
    let topics = plan
        .into_iter()
        .map(|(name, partitions)| {
            TxnOffsetCommitResponseTopic::default()
                .with_name(topic_name(&name))
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|(index, outcome)| {
                            let code = match (outcome, stored) {
                                (Err(e), _) | (Ok(_), Err(e)) => fenced_for(e, version, 3).code(),
                                (Ok(_), Ok(())) => 0,
                            };
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(index)
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

/// Appends a producer's transactional offsets to the group's offsets partition and stages
/// them until the transaction's marker.
async fn store_txn_offsets(
    broker: &Broker,
    group: &str,
    producer: (i64, i16),
    records: Vec<OffsetRecord>,
) -> Result<(), ResponseError> {
    let index = broker
        .offsets_partition_of(group)
        .ok_or(ResponseError::CoordinatorNotAvailable)?;
    let partition = broker
        .leader_partition(OFFSETS_TOPIC, index)
        .map_err(|_| ResponseError::NotCoordinator)?;
    let batch = offsets::encode_transactional_batch(&records, now_ms(), producer)
        .map_err(|_| ResponseError::UnknownServerError)?;
    let info = partition.append_from_coordinator(&batch).map_err(|e| {
        tracing::warn!(group, error = %e, "transactional offsets not stored");
        crate::api::produce_error_code(&e)
    })?;
    broker
        .make_durable(&partition, info.last_offset + 1)
        .await
        .map_err(|e| e.code)?;
    broker.groups.stage_transactional(producer.0, records);
    Ok(())
}

/// WriteTxnMarkers, from a transaction coordinator to this partition leader.
pub(super) async fn write_txn_markers(
    broker: &Broker,
    context: &RequestContext,
    request: WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    let allowed = context.allowed_on_cluster(broker, Operation::ClusterAction);
    let mut results = Vec::with_capacity(request.markers.len());
    for marker in request.markers {
        let partitions: Vec<(String, i32)> = marker
            .topics
            .iter()
            .flat_map(|t| {
                t.partition_indexes
                    .iter()
                    .map(|p| (t.name.0.to_string(), *p))
            })
            .collect();
        let written = if allowed {
            write_markers_here(
                broker,
                marker.producer_id.0,
                marker.producer_epoch,
                Marker {
                    commit: marker.transaction_result,
                    coordinator_epoch: marker.coordinator_epoch,
                },
                &partitions,
            )
            .await
        } else {
            partitions
                .into_iter()
                .map(|p| (p, Some(ResponseError::ClusterAuthorizationFailed)))
                .collect()
        };
        let mut topics: Vec<WritableTxnMarkerTopicResult> = Vec::new();
        for ((topic, index), code) in written {
            let result = WritableTxnMarkerPartitionResult::default()
                .with_partition_index(index)
                .with_error_code(code.map_or(0, |c| c.code()));
            match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
                Some(entry) => entry.partitions.push(result),
                None => topics.push(
                    WritableTxnMarkerTopicResult::default()
                        .with_name(topic_name(&topic))
                        .with_partitions(vec![result]),
                ),
            }
        }
        results.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(marker.producer_id)
                .with_topics(topics),
        );
    }
    WriteTxnMarkersResponse::default().with_markers(results)
}

pub(super) fn describe_transactions(
    broker: &Broker,
    context: &RequestContext,
    request: &DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let states = request
        .transactional_ids
        .iter()
        .map(|raw| {
            let id = txn_id(raw);
            let state = TransactionState::default().with_transactional_id(raw.clone());
            if !context.allowed(
                broker,
                Operation::Describe,
                ResourceType::TransactionalId,
                &id,
            ) {
                return state
                    .with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code());
            }
            if let Err(code) = broker.check_transaction_coordinator(&id) {
                return state.with_error_code(code.code());
            }
            let Some(meta) = broker.txns.get(&id).filter(|m| m.producer_id >= 0) else {
                return state.with_error_code(ResponseError::TransactionalIdNotFound.code());
            };
            let mut topics: Vec<TopicData> = Vec::new();
            for (topic, index) in &meta.partitions {
                match topics.iter_mut().find(|t| t.topic.0.as_str() == topic) {
                    Some(entry) => entry.partitions.push(*index),
                    None => topics.push(
                        TopicData::default()
                            .with_topic(topic_name(topic))
                            .with_partitions(vec![*index]),
                    ),
                }
            }
            state
                .with_transaction_state(str_bytes(meta.state.name()))
                .with_transaction_timeout_ms(meta.timeout_ms)
                .with_transaction_start_time_ms(meta.start_ms)
                .with_producer_id(ProducerId(meta.producer_id))
                .with_producer_epoch(meta.producer_epoch)
                .with_topics(topics)
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

pub(super) fn list_transactions(
    broker: &Broker,
    context: &RequestContext,
    request: &ListTransactionsRequest,
    version: i16,
) -> ListTransactionsResponse {
    use kafka_protocol::messages::list_transactions_response::TransactionState as Listed;
    const STATES: [&str; 8] = [
        "Empty",
        "Ongoing",
        "PrepareCommit",
        "PrepareAbort",
        "CompleteCommit",
        "CompleteAbort",
        "Dead",
        "PrepareEpochFence",
    ];
    let unknown: Vec<_> = request
        .state_filters
        .iter()
        .filter(|s| !STATES.contains(&s.as_str()))
        .cloned()
        .collect();
    let pattern = match request.transactional_id_pattern.as_ref() {
        Some(p) if version >= 2 && !p.is_empty() => {
            match regex::Regex::new(&format!("^(?:{p})$")) {
                Ok(re) => Some(re),
                Err(_) => {
                    return ListTransactionsResponse::default()
                        .with_error_code(ResponseError::InvalidRegularExpression.code())
                }
            }
        }
        _ => None,
    };
    let now = now_ms();
    let listed = broker
        .txns
        .list(now)
        .into_iter()
        .filter(|t| {
            request.state_filters.is_empty()
                || request
                    .state_filters
                    .iter()
                    .any(|s| s.as_str() == t.state.name())
        })
        .filter(|t| {
            request.producer_id_filters.is_empty()
                || request
                    .producer_id_filters
                    .iter()
                    .any(|p| p.0 == t.producer_id)
        })
        .filter(|t| {
            version < 1 || request.duration_filter < 0 || t.duration_ms > request.duration_filter
        })
        .filter(|t| {
            pattern
                .as_ref()
                .is_none_or(|re| re.is_match(&t.transactional_id))
        })
        .filter(|t| {
            context.allowed(
                broker,
                Operation::Describe,
                ResourceType::TransactionalId,
                &t.transactional_id,
            )
        })
        .map(|t| {
            Listed::default()
                .with_transactional_id(TransactionalId(str_bytes(&t.transactional_id)))
                .with_producer_id(ProducerId(t.producer_id))
                .with_transaction_state(str_bytes(t.state.name()))
        })
        .collect();
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(listed)
}

pub(super) fn describe_producers(
    broker: &Broker,
    context: &RequestContext,
    request: &DescribeProducersRequest,
) -> DescribeProducersResponse {
    let topics = request
        .topics
        .iter()
        .map(|topic| {
            let name = topic.name.0.to_string();
            let allowed = context.allowed(broker, Operation::Read, ResourceType::Topic, &name);
            let partitions = topic
                .partition_indexes
                .iter()
                .map(|index| {
                    let response = PartitionResponse::default().with_partition_index(*index);
                    if !allowed {
                        return response
                            .with_error_code(ResponseError::TopicAuthorizationFailed.code());
                    }
                    match broker.leader_partition(&name, *index) {
                        Err(code) => response.with_error_code(code.code()),
                        Ok(partition) => response.with_active_producers(
                            partition
                                .producers()
                                .into_iter()
                                .map(|p| {
                                    ProducerState::default()
                                        .with_producer_id(ProducerId(p.producer_id))
                                        .with_producer_epoch(i32::from(p.epoch))
                                        .with_last_sequence(p.last_sequence)
                                        .with_last_timestamp(-1)
                                        .with_coordinator_epoch(p.coordinator_epoch)
                                        .with_current_txn_start_offset(
                                            p.txn_first_offset.unwrap_or(-1),
                                        )
                                })
                                .collect(),
                        ),
                    }
                })
                .collect();
            TopicResponse::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}
