//! Client quotas at request time, as Kafka applies them: a produce request's bytes count
//! against `producer_byte_rate`, a consumer fetch response's against `consumer_byte_rate`,
//! and the time spent handling any request against `request_percentage`. Over a quota, the
//! response goes out at once carrying `throttle_time_ms` and the connection then reads
//! nothing for that long (KIP-219). Followers and the brokers' own requests are exempt.

use std::future::Future;
use std::time::{Duration, Instant};

use kafka_protocol::messages::{RequestKind, ResponseKind};
use kafka_protocol::protocol::Encodable;

use super::{Outcome, RequestContext};
use crate::broker::Broker;
use crate::quota::manager::Client;
use crate::quota::QuotaKey;

/// What a request is measured against.
#[derive(Debug, Clone, Copy)]
pub(super) enum Metered {
    /// The cluster's own traffic: follower fetches, heartbeats, transaction markers, SASL
    /// before a principal exists.
    Exempt,
    /// A produce request of this many bytes.
    Produce(usize),
    /// A consumer's fetch: its response's size counts.
    Fetch,
    /// Any other request: its handling time alone.
    Other,
}

/// Decides how `request` is measured and, for a consumer's fetch governed by a byte-rate
/// quota, asks for no more than one quota window may take (Kafka's
/// `getMaxValueInQuotaWindow`).
pub(super) fn prepare(
    broker: &Broker,
    context: &RequestContext,
    request: &mut RequestKind,
    version: i16,
    size: usize,
) -> Metered {
    match request {
        RequestKind::Produce(_) => Metered::Produce(size),
        RequestKind::Fetch(fetch) => {
            let replica = if version >= 15 {
                fetch.replica_state.replica_id.0
            } else {
                fetch.replica_id.0
            };
            if replica >= 0 {
                return Metered::Exempt;
            }
            let image = broker.image();
            if let Some(most) = broker.quotas.max_in_window(
                &image.client_quotas,
                QuotaKey::ConsumerByteRate,
                client(context),
            ) {
                let most = if most >= f64::from(i32::MAX) {
                    i32::MAX
                } else {
                    most as i32
                };
                fetch.max_bytes = fetch.max_bytes.min(most.max(1));
            }
            Metered::Fetch
        }
        RequestKind::SaslHandshake(_)
        | RequestKind::SaslAuthenticate(_)
        | RequestKind::DescribeQuorum(_)
        | RequestKind::WriteTxnMarkers(_) => Metered::Exempt,
        _ => Metered::Other,
    }
}

pub(super) fn client(context: &RequestContext) -> Client<'_> {
    Client {
        user: &context.principal.name,
        client_id: &context.client_id,
    }
}

/// Runs `work`, also returning the time spent inside it (polled), not waiting: a fetch that
/// waits for data or a produce that waits for replicas costs only what it computed, as Kafka
/// counts a request handler thread's time.
pub(super) async fn busy<F: Future>(work: F) -> (F::Output, Duration) {
    let mut work = std::pin::pin!(work);
    let mut spent = Duration::ZERO;
    let output = std::future::poll_fn(|cx| {
        let started = Instant::now();
        let poll = work.as_mut().poll(cx);
        spent += started.elapsed();
        poll
    })
    .await;
    (output, spent)
}

/// Records the request against the client's quotas and sets the throttle time of its
/// response: the longest of its quotas' throttles.
pub(super) fn finish(
    broker: &Broker,
    context: &RequestContext,
    metered: Metered,
    outcome: Outcome,
    busy: Duration,
) -> Outcome {
    if matches!(metered, Metered::Exempt) {
        return outcome;
    }
    let image = broker.image();
    let quotas = &image.client_quotas;
    let who = client(context);
    // Kafka's request quota counts handler time as a percentage of one thread per second.
    let request_ms = broker.quotas.record(
        quotas,
        QuotaKey::RequestPercentage,
        who,
        busy.as_secs_f64() * 100.0,
    );
    match outcome {
        Outcome::Respond {
            mut response,
            version,
            ..
        } => {
            let bytes_ms = match (&metered, response.as_mut()) {
                (Metered::Produce(size), _) => {
                    broker
                        .quotas
                        .record(quotas, QuotaKey::ProducerByteRate, who, *size as f64)
                }
                (Metered::Fetch, ResponseKind::Fetch(fetch)) => {
                    let size = fetch.compute_size(version).unwrap_or(0) as f64;
                    let ms = broker
                        .quotas
                        .record(quotas, QuotaKey::ConsumerByteRate, who, size);
                    if ms.max(request_ms) > 0 {
                        // A throttled fetch sends no records, so they do not count.
                        broker
                            .quotas
                            .unrecord(quotas, QuotaKey::ConsumerByteRate, who, size);
                        fetch.responses.clear();
                    }
                    ms
                }
                _ => 0,
            };
            // CreateTopics, DeleteTopics and CreatePartitions set their own: the wait their
            // controller_mutation_rate asks for.
            let mutation_ms = match response.as_ref() {
                ResponseKind::CreateTopics(r) => i64::from(r.throttle_time_ms),
                ResponseKind::DeleteTopics(r) => i64::from(r.throttle_time_ms),
                ResponseKind::CreatePartitions(r) => i64::from(r.throttle_time_ms),
                _ => 0,
            };
            let throttle = observe(broker, &metered, bytes_ms, request_ms, mutation_ms);
            set_throttle_time(&mut response, throttle);
            Outcome::Respond {
                response,
                version,
                throttle: Duration::from_millis(u64::try_from(throttle).unwrap_or(0)),
            }
        }
        Outcome::NoResponse { .. } => {
            let bytes_ms = match metered {
                Metered::Produce(size) => {
                    broker
                        .quotas
                        .record(quotas, QuotaKey::ProducerByteRate, who, size as f64)
                }
                _ => 0,
            };
            let throttle = observe(broker, &metered, bytes_ms, request_ms, 0);
            Outcome::NoResponse {
                throttle: Duration::from_millis(u64::try_from(throttle).unwrap_or(0)),
            }
        }
        close @ Outcome::Close(_) => close,
    }
}

/// The throttle a request earns, counted in the metrics by the quota that set it.
fn observe(
    broker: &Broker,
    metered: &Metered,
    bytes_ms: i64,
    request_ms: i64,
    mutation_ms: i64,
) -> i32 {
    let throttle = bytes_ms.max(request_ms).max(mutation_ms);
    if throttle <= 0 {
        return 0;
    }
    let quota = match metered {
        _ if mutation_ms == throttle => "controller_mutation",
        _ if request_ms >= bytes_ms => "request",
        Metered::Produce(_) => "produce",
        _ => "fetch",
    };
    broker
        .metrics
        .quota_throttle_time
        .with_label_values(&[quota])
        .observe(throttle as f64 / 1000.0);
    tracing::debug!(
        quota,
        throttle_ms = throttle,
        "client over its quota: throttled"
    );
    i32::try_from(throttle).unwrap_or(i32::MAX)
}

/// Sets `throttle_time_ms` of any response that has one (the SASL, quorum and transaction
/// marker responses the exempt requests get have none).
fn set_throttle_time(response: &mut ResponseKind, ms: i32) {
    macro_rules! throttled {
        ($($kind:ident),* $(,)?) => {
            match response {
                $(ResponseKind::$kind(r) => r.throttle_time_ms = ms,)*
                _ => {}
            }
        };
    }
    throttled!(
        Produce,
        Fetch,
        ListOffsets,
        Metadata,
        ApiVersions,
        CreateTopics,
        DeleteTopics,
        DescribeConfigs,
        CreatePartitions,
        DescribeCluster,
        InitProducerId,
        FindCoordinator,
        JoinGroup,
        SyncGroup,
        Heartbeat,
        LeaveGroup,
        ListGroups,
        DescribeGroups,
        DeleteGroups,
        OffsetCommit,
        OffsetFetch,
        OffsetDelete,
        AlterConfigs,
        IncrementalAlterConfigs,
        DeleteRecords,
        OffsetForLeaderEpoch,
        DescribeLogDirs,
        AlterReplicaLogDirs,
        ElectLeaders,
        AlterPartitionReassignments,
        ListPartitionReassignments,
        DescribeUserScramCredentials,
        AlterUserScramCredentials,
        DescribeAcls,
        CreateAcls,
        DeleteAcls,
        UnregisterBroker,
        UpdateFeatures,
        DescribeClientQuotas,
        AlterClientQuotas,
        AddPartitionsToTxn,
        AddOffsetsToTxn,
        EndTxn,
        TxnOffsetCommit,
        DescribeProducers,
        DescribeTransactions,
        ListTransactions,
    );
}
