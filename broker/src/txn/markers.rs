//! The coordinator's side effects: storing metadata in `__transaction_state`, completing
//! prepared transactions by writing their markers to every partition in them (through
//! WriteTxnMarkers to the partitions' leaders, or directly when this broker leads them),
//! and the periodic abort of timed-out transactions and removal of expired ids.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, ProducerId, TopicName, TransactionalId, WriteTxnMarkersRequest,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio_util::sync::CancellationToken;

use super::log::TxnRecord;
use super::{completed, TxnMetadata, TxnState, TRANSACTION_TOPIC};
use crate::broker::{now_ms, ApiError, Broker};
use crate::group::OFFSETS_TOPIC;
use crate::log::control::Marker;
use crate::replica::ProduceError;

/// WriteTxnMarkers version used between brokers.
const WRITE_TXN_MARKERS_VERSION: i16 = 1;
/// AddPartitionsToTxn version of a partition leader's verify-only request (KIP-890).
const ADD_PARTITIONS_TO_TXN_VERIFY_VERSION: i16 = 4;
/// Pause between attempts to reach a partition leader that did not take a marker.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// Stores `next` for its transactional id, if the id's metadata is still `decided_on`; the
/// change takes effect once every in-sync replica of the coordinator's partition has it.
pub async fn transition(
    broker: &Broker,
    decided_on: Option<&TxnMetadata>,
    next: TxnMetadata,
) -> Result<(), ApiError> {
    let coordinator = &broker.txns;
    coordinator
        .begin_write(&next.transactional_id, decided_on)
        .map_err(|code| ApiError::new(code, "another change of the transaction is in flight"))?;
    match store(broker, &next.transactional_id, next.record()).await {
        Ok(()) => {
            coordinator.finish_write(next);
            Ok(())
        }
        Err(e) => {
            coordinator.abandon_write(&next.transactional_id);
            Err(e)
        }
    }
}

/// Appends one record to the id's `__transaction_state` partition, durably and replicated.
async fn store(broker: &Broker, transactional_id: &str, record: TxnRecord) -> Result<(), ApiError> {
    let index = broker
        .transaction_partition_of(transactional_id)
        .ok_or_else(|| {
            ApiError::new(
                ResponseError::CoordinatorNotAvailable,
                "no transaction state topic yet",
            )
        })?;
    let batch = super::log::encode_batch(&[record], now_ms())
        .map_err(|e| ApiError::new(ResponseError::UnknownServerError, e))?;
    broker
        .append_internal(TRANSACTION_TOPIC, index, &batch)
        .await
        .map_err(|e| {
            // The producer retries on NOT_COORDINATOR and finds the new coordinator.
            ApiError::new(ResponseError::NotCoordinator, e.message)
        })
}

/// Writes a tombstone for an expired id and forgets it.
async fn forget(broker: &Broker, meta: &TxnMetadata) -> Result<(), ApiError> {
    broker
        .txns
        .begin_write(&meta.transactional_id, Some(meta))
        .map_err(|code| ApiError::new(code, "the id changed"))?;
    let tombstone = TxnRecord {
        transactional_id: meta.transactional_id.clone(),
        value: None,
    };
    match store(broker, &meta.transactional_id, tombstone).await {
        Ok(()) => {
            broker.txns.remove(&meta.transactional_id);
            Ok(())
        }
        Err(e) => {
            broker.txns.abandon_write(&meta.transactional_id);
            Err(e)
        }
    }
}

/// Completes a prepared transaction in the background: markers to every partition, then the
/// complete state. Stops when this broker no longer coordinates the id (the next coordinator
/// resumes from the stored prepared state).
pub fn complete_in_background(broker: &Arc<Broker>, transactional_id: String) {
    let broker = Arc::clone(broker);
    tokio::spawn(async move {
        loop {
            let Some(meta) = broker.txns.get(&transactional_id) else {
                return;
            };
            if !matches!(meta.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
                return;
            }
            let Some(index) = broker.transaction_partition_of(&transactional_id) else {
                return;
            };
            let Some(coordinator_epoch) = broker.txns.coordinator_epoch(index) else {
                return;
            };
            if !write_markers(&broker, &meta, coordinator_epoch).await {
                return;
            }
            // The markers are written: storing the complete state is retried for as long as
            // this broker coordinates the id at the same epoch (an ISR below
            // min.insync.replicas for a moment must not leave the transaction prepared
            // forever, its producer refused with CONCURRENT_TRANSACTIONS).
            loop {
                match transition(&broker, Some(&meta), completed(&meta, now_ms())).await {
                    Ok(()) => {
                        tracing::debug!(transactional_id, state = ?meta.state, "transaction completed");
                        let outcome = if meta.state == TxnState::PrepareCommit {
                            "committed"
                        } else {
                            "aborted"
                        };
                        broker
                            .metrics
                            .transactions_ended
                            .with_label_values(&[outcome])
                            .inc();
                        return;
                    }
                    Err(e) if e.code == ResponseError::ConcurrentTransactions => {
                        tokio::time::sleep(RETRY_BACKOFF).await;
                        break;
                    }
                    Err(e)
                        if broker.txns.coordinator_epoch(index) == Some(coordinator_epoch)
                            && !broker.shutdown_requested() =>
                    {
                        tracing::debug!(transactional_id, error = %e.message, "could not store a completed transaction yet; retrying");
                        tokio::time::sleep(RETRY_BACKOFF).await;
                    }
                    Err(e) => {
                        tracing::warn!(transactional_id, error = %e.message, "could not store a completed transaction; the next coordinator completes it");
                        return;
                    }
                }
            }
        }
    });
}

/// Writes the markers of a prepared transaction to all its partitions, retrying leaders
/// that are moving. False when this broker stopped coordinating the id meanwhile.
async fn write_markers(broker: &Arc<Broker>, meta: &TxnMetadata, coordinator_epoch: i32) -> bool {
    let marker = Marker {
        commit: meta.state == TxnState::PrepareCommit,
        coordinator_epoch,
    };
    let mut left: Vec<(String, i32)> = meta.partitions.iter().cloned().collect();
    while !left.is_empty() {
        if broker.txns.get(&meta.transactional_id).as_ref() != Some(meta)
            || broker.shutdown_requested()
        {
            return false;
        }
        let image = broker.image();
        let mut by_leader: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
        for (topic, partition) in left {
            match image.partition(&topic, partition) {
                // The topic was deleted: nothing is left to mark.
                None => {}
                Some(state) => by_leader
                    .entry(state.leader)
                    .or_default()
                    .push((topic, partition)),
            }
        }
        left = Vec::new();
        for (leader, partitions) in by_leader {
            let failed = if leader == broker.config.node_id {
                write_local(
                    broker,
                    meta.producer_id,
                    meta.producer_epoch,
                    marker,
                    &partitions,
                )
                .await
            } else {
                write_remote(broker, leader, meta, marker, &partitions).await
            };
            left.extend(failed);
        }
        if !left.is_empty() {
            tracing::debug!(
                transactional_id = meta.transactional_id,
                ?left,
                "markers not written yet; retrying"
            );
            tokio::time::sleep(RETRY_BACKOFF).await;
        }
    }
    true
}

/// Writes a marker to partitions this broker leads, as WriteTxnMarkers does, and returns the
/// partitions that failed with their error.
pub async fn write_local(
    broker: &Broker,
    producer_id: i64,
    producer_epoch: i16,
    marker: Marker,
    partitions: &[(String, i32)],
) -> Vec<(String, i32)> {
    let results = write_markers_here(broker, producer_id, producer_epoch, marker, partitions).await;
    results
        .into_iter()
        .filter(|(_, code)| code.is_some())
        .map(|(p, _)| p)
        .collect()
}

/// The marker written to each partition this broker leads, with the error of each that
/// failed. Offsets partitions also settle the producer's pending transactional offsets.
pub async fn write_markers_here(
    broker: &Broker,
    producer_id: i64,
    producer_epoch: i16,
    marker: Marker,
    partitions: &[(String, i32)],
) -> Vec<((String, i32), Option<ResponseError>)> {
    let mut out = Vec::with_capacity(partitions.len());
    for (topic, index) in partitions {
        let outcome = async {
            let partition = broker
                .leader_partition(topic, *index)
                .map_err(|code| (code, None))?;
            let info = match partition.append_marker(producer_id, producer_epoch, marker) {
                Ok(info) => info,
                Err(e) => return Err((crate::api::produce_error_code(&e), Some(e))),
            };
            broker
                .make_durable(&partition, info.last_offset + 1)
                .await
                .map_err(|e| (e.code, None))?;
            if topic == OFFSETS_TOPIC {
                broker.groups.complete_transaction(
                    producer_id,
                    |group| broker.offsets_partition_of(group) == Some(*index),
                    marker.commit,
                );
            }
            Ok::<(), (ResponseError, Option<ProduceError>)>(())
        }
        .await;
        let code = match outcome {
            Ok(()) => None,
            Err((code, error)) => {
                if let Some(error) = error {
                    tracing::warn!(topic, partition = index, error = %error, "transaction marker refused");
                }
                Some(code)
            }
        };
        out.push(((topic.clone(), *index), code));
    }
    out
}

/// Sends the markers for `partitions` to their leader `leader`; returns those not written.
async fn write_remote(
    broker: &Broker,
    leader: i32,
    meta: &TxnMetadata,
    marker: Marker,
    partitions: &[(String, i32)],
) -> Vec<(String, i32)> {
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in partitions {
        topics.entry(topic).or_default().push(*partition);
    }
    let request =
        WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
            .with_producer_id(ProducerId(meta.producer_id))
            .with_producer_epoch(meta.producer_epoch)
            .with_transaction_result(marker.commit)
            .with_coordinator_epoch(marker.coordinator_epoch)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(topic, ids)| {
                        WritableTxnMarkerTopic::default()
                            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                            .with_partition_indexes(ids)
                    })
                    .collect(),
            )]);
    let timeout = broker.config.request_timeout;
    let answer = async {
        let mut connection = broker.connect_broker(leader).await?;
        connection
            .send(&request, WRITE_TXN_MARKERS_VERSION)
            .await
            .map_err(|e| e.to_string())
    };
    let response = match tokio::time::timeout(timeout, answer).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => {
            tracing::debug!(leader, error = %e, "WriteTxnMarkers failed");
            return partitions.to_vec();
        }
        Err(_) => return partitions.to_vec(),
    };
    let mut failed = Vec::new();
    let mut answered = 0;
    for result in response.markers {
        for topic in result.topics {
            for partition in topic.partitions {
                answered += 1;
                let code = partition.error_code;
                if code != 0 {
                    if code == ResponseError::InvalidProducerEpoch.code()
                        || code == ResponseError::TransactionCoordinatorFenced.code()
                    {
                        // A newer epoch or coordinator wrote here: this marker is moot.
                        tracing::warn!(leader, topic = %topic.name.0, partition = partition.partition_index, code, "marker refused as stale");
                        continue;
                    }
                    failed.push((topic.name.0.to_string(), partition.partition_index));
                }
            }
        }
    }
    if answered < partitions.len() {
        return partitions.to_vec();
    }
    failed
}

/// Asks the coordinator of `transactional_id` whether `partition` is in the producer's
/// ongoing transaction (KIP-890): directly when it is this broker, else with a verify-only
/// AddPartitionsToTxn.
pub async fn verify_partition(
    broker: &Broker,
    transactional_id: &str,
    producer_id: i64,
    epoch: i16,
    partition: &(String, i32),
) -> Result<(), ResponseError> {
    let index = broker
        .transaction_partition_of(transactional_id)
        .ok_or(ResponseError::CoordinatorNotAvailable)?;
    let image = broker.image();
    let coordinator = image
        .partition(TRANSACTION_TOPIC, index)
        .map(|p| p.leader)
        .ok_or(ResponseError::CoordinatorNotAvailable)?;
    if coordinator == broker.config.node_id {
        broker.check_transaction_coordinator(transactional_id)?;
        return super::verify(
            broker.txns.get(transactional_id).as_ref(),
            producer_id,
            epoch,
            partition,
        );
    }
    let request = AddPartitionsToTxnRequest::default().with_transactions(vec![
        AddPartitionsToTxnTransaction::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(
                transactional_id.to_string(),
            )))
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch)
            .with_verify_only(true)
            .with_topics(vec![AddPartitionsToTxnTopic::default()
                .with_name(TopicName(StrBytes::from_string(partition.0.clone())))
                .with_partitions(vec![partition.1])]),
    ]);
    let answer = async {
        let mut connection = broker.connect_broker(coordinator).await.ok()?;
        connection
            .send(&request, ADD_PARTITIONS_TO_TXN_VERIFY_VERSION)
            .await
            .ok()
    };
    let response = tokio::time::timeout(broker.config.request_timeout, answer)
        .await
        .ok()
        .flatten()
        .ok_or(ResponseError::CoordinatorNotAvailable)?;
    if response.error_code != 0 {
        return Err(ResponseError::try_from_code(response.error_code)
            .unwrap_or(ResponseError::UnknownServerError));
    }
    let code = response
        .results_by_transaction
        .iter()
        .flat_map(|t| t.topic_results.iter())
        .flat_map(|t| t.results_by_partition.iter())
        .map(|p| p.partition_error_code)
        .next()
        .ok_or(ResponseError::UnknownServerError)?;
    match code {
        0 => Ok(()),
        code => {
            Err(ResponseError::try_from_code(code).unwrap_or(ResponseError::UnknownServerError))
        }
    }
}

/// Aborts timed-out transactions and forgets expired ids, until `shutdown`.
pub async fn run_timers(broker: Arc<Broker>, shutdown: CancellationToken) {
    let abort_every = broker.txns.config.abort_interval;
    let expire_every = broker.txns.config.expire_interval;
    let mut abort = tokio::time::interval(abort_every);
    let mut expire = tokio::time::interval(expire_every);
    abort.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    expire.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            ids = broker.txns.resumed() => {
                for id in ids {
                    complete_in_background(&broker, id);
                }
            }
            _ = abort.tick() => {
                for (current, next) in broker.txns.timed_out(now_ms()) {
                    let id = next.transactional_id.clone();
                    match transition(&broker, Some(&current), next).await {
                        Ok(()) => {
                            tracing::info!(transactional_id = id, "aborting a transaction past its timeout; its producer is fenced");
                            broker.metrics.transactions_timed_out.inc();
                            complete_in_background(&broker, id);
                        }
                        Err(e) => tracing::debug!(transactional_id = id, error = %e.message, "timed-out transaction not aborted yet"),
                    }
                }
            }
            _ = expire.tick() => {
                for meta in broker.txns.expired(now_ms()) {
                    if let Err(e) = forget(&broker, &meta).await {
                        tracing::debug!(transactional_id = meta.transactional_id, error = %e.message, "expired id not removed yet");
                    } else {
                        tracing::info!(transactional_id = meta.transactional_id, "transactional id expired");
                    }
                }
            }
        }
    }
}
