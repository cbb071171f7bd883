//! Request handlers, one module per API family, and the table of what the broker supports.

mod acl;
mod admin;
mod api_versions;
mod client_quotas;
mod cluster;
mod configs;
mod features;
mod fetch;
mod group;
mod leader_hint;
mod list_offsets;
mod metadata;
mod offsets;
mod produce;
pub use produce::produce_error_code;
mod producer_id;
mod quorum;
mod reassignment;
mod replication;
pub(crate) mod response;
pub(crate) mod sasl;
mod scram;
mod throttle;
mod txn;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{
    AlterConfigsRequest, ApiKey, ApiVersionsRequest, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteGroupsRequest, DeleteRecordsRequest, DeleteTopicsRequest, DescribeClusterRequest,
    DescribeConfigsRequest, DescribeGroupsRequest, FetchRequest, FindCoordinatorRequest,
    HeartbeatRequest, IncrementalAlterConfigsRequest, InitProducerIdRequest, JoinGroupRequest,
    LeaveGroupRequest, ListGroupsRequest, ListOffsetsRequest, MetadataRequest, OffsetCommitRequest,
    OffsetDeleteRequest, OffsetFetchRequest, ProduceRequest, RequestKind, ResponseKind,
    SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::{Message, Request, StrBytes, VersionRange};
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;

/// What the connection does with a request once handled.
#[derive(Debug)]
pub enum Outcome {
    /// Send this response, encoded at `version`, then read nothing from the connection for
    /// `throttle` (a client over its quota).
    Respond {
        response: Box<ResponseKind>,
        version: i16,
        throttle: Duration,
    },
    /// Send nothing (Produce with acks=0), and read nothing for `throttle`.
    NoResponse { throttle: Duration },
    /// Close the connection, as Kafka does for requests it cannot parse.
    Close(String),
}

/// The APIs this broker implements. Every version of each, as the codec defines them, is
/// handled; ApiVersions advertises exactly this list.
const SUPPORTED: &[ApiKey] = &[
    ApiKey::Produce,
    ApiKey::Fetch,
    ApiKey::ListOffsets,
    ApiKey::Metadata,
    ApiKey::ApiVersions,
    ApiKey::CreateTopics,
    ApiKey::DeleteTopics,
    ApiKey::DescribeConfigs,
    ApiKey::CreatePartitions,
    ApiKey::DescribeCluster,
    ApiKey::InitProducerId,
    ApiKey::FindCoordinator,
    ApiKey::JoinGroup,
    ApiKey::SyncGroup,
    ApiKey::Heartbeat,
    ApiKey::LeaveGroup,
    ApiKey::ListGroups,
    ApiKey::DescribeGroups,
    ApiKey::DeleteGroups,
    ApiKey::OffsetCommit,
    ApiKey::OffsetFetch,
    ApiKey::OffsetDelete,
    ApiKey::AlterConfigs,
    ApiKey::IncrementalAlterConfigs,
    ApiKey::DeleteRecords,
    ApiKey::OffsetForLeaderEpoch,
    ApiKey::DescribeLogDirs,
    ApiKey::AlterReplicaLogDirs,
    ApiKey::ElectLeaders,
    ApiKey::AlterPartitionReassignments,
    ApiKey::ListPartitionReassignments,
    ApiKey::SaslHandshake,
    ApiKey::SaslAuthenticate,
    ApiKey::DescribeUserScramCredentials,
    ApiKey::AlterUserScramCredentials,
    ApiKey::DescribeAcls,
    ApiKey::CreateAcls,
    ApiKey::DeleteAcls,
    ApiKey::UnregisterBroker,
    ApiKey::DescribeQuorum,
    ApiKey::UpdateFeatures,
    ApiKey::DescribeClientQuotas,
    ApiKey::AlterClientQuotas,
    ApiKey::AddPartitionsToTxn,
    ApiKey::AddOffsetsToTxn,
    ApiKey::EndTxn,
    ApiKey::WriteTxnMarkers,
    ApiKey::TxnOffsetCommit,
    ApiKey::DescribeProducers,
    ApiKey::DescribeTransactions,
    ApiKey::ListTransactions,
];

/// The versions both the request and the response schema of `R` define.
fn versions<R: Request>() -> VersionRange {
    R::VERSIONS.intersect(&<R::Response as Message>::VERSIONS)
}

/// The versions of `key` the broker answers, or `None` when the API is not implemented.
pub fn supported_versions(key: ApiKey) -> Option<VersionRange> {
    if !SUPPORTED.contains(&key) {
        return None;
    }
    Some(match key {
        ApiKey::Produce => versions::<ProduceRequest>(),
        ApiKey::Fetch => versions::<FetchRequest>(),
        ApiKey::ListOffsets => versions::<ListOffsetsRequest>(),
        ApiKey::Metadata => versions::<MetadataRequest>(),
        ApiKey::ApiVersions => versions::<ApiVersionsRequest>(),
        ApiKey::CreateTopics => versions::<CreateTopicsRequest>(),
        ApiKey::DeleteTopics => versions::<DeleteTopicsRequest>(),
        ApiKey::DescribeConfigs => versions::<DescribeConfigsRequest>(),
        ApiKey::CreatePartitions => versions::<CreatePartitionsRequest>(),
        ApiKey::DescribeCluster => versions::<DescribeClusterRequest>(),
        ApiKey::InitProducerId => versions::<InitProducerIdRequest>(),
        ApiKey::FindCoordinator => versions::<FindCoordinatorRequest>(),
        ApiKey::JoinGroup => versions::<JoinGroupRequest>(),
        ApiKey::SyncGroup => versions::<SyncGroupRequest>(),
        ApiKey::Heartbeat => versions::<HeartbeatRequest>(),
        ApiKey::LeaveGroup => versions::<LeaveGroupRequest>(),
        ApiKey::ListGroups => versions::<ListGroupsRequest>(),
        ApiKey::DescribeGroups => versions::<DescribeGroupsRequest>(),
        ApiKey::DeleteGroups => versions::<DeleteGroupsRequest>(),
        ApiKey::OffsetCommit => versions::<OffsetCommitRequest>(),
        ApiKey::OffsetFetch => versions::<OffsetFetchRequest>(),
        ApiKey::OffsetDelete => versions::<OffsetDeleteRequest>(),
        ApiKey::AlterConfigs => versions::<AlterConfigsRequest>(),
        ApiKey::IncrementalAlterConfigs => versions::<IncrementalAlterConfigsRequest>(),
        ApiKey::DeleteRecords => versions::<DeleteRecordsRequest>(),
        ApiKey::OffsetForLeaderEpoch => {
            versions::<kafka_protocol::messages::OffsetForLeaderEpochRequest>()
        }
        ApiKey::DescribeLogDirs => versions::<kafka_protocol::messages::DescribeLogDirsRequest>(),
        ApiKey::AlterReplicaLogDirs => {
            versions::<kafka_protocol::messages::AlterReplicaLogDirsRequest>()
        }
        ApiKey::ElectLeaders => versions::<kafka_protocol::messages::ElectLeadersRequest>(),
        ApiKey::AlterPartitionReassignments => {
            versions::<kafka_protocol::messages::AlterPartitionReassignmentsRequest>()
        }
        ApiKey::ListPartitionReassignments => {
            versions::<kafka_protocol::messages::ListPartitionReassignmentsRequest>()
        }
        ApiKey::SaslHandshake => versions::<kafka_protocol::messages::SaslHandshakeRequest>(),
        ApiKey::SaslAuthenticate => versions::<kafka_protocol::messages::SaslAuthenticateRequest>(),
        ApiKey::DescribeUserScramCredentials => {
            versions::<kafka_protocol::messages::DescribeUserScramCredentialsRequest>()
        }
        ApiKey::AlterUserScramCredentials => {
            versions::<kafka_protocol::messages::AlterUserScramCredentialsRequest>()
        }
        ApiKey::DescribeAcls => versions::<kafka_protocol::messages::DescribeAclsRequest>(),
        ApiKey::CreateAcls => versions::<kafka_protocol::messages::CreateAclsRequest>(),
        ApiKey::DeleteAcls => versions::<kafka_protocol::messages::DeleteAclsRequest>(),
        ApiKey::UnregisterBroker => versions::<kafka_protocol::messages::UnregisterBrokerRequest>(),
        ApiKey::DescribeQuorum => versions::<kafka_protocol::messages::DescribeQuorumRequest>(),
        ApiKey::UpdateFeatures => versions::<kafka_protocol::messages::UpdateFeaturesRequest>(),
        ApiKey::DescribeClientQuotas => {
            versions::<kafka_protocol::messages::DescribeClientQuotasRequest>()
        }
        ApiKey::AlterClientQuotas => {
            versions::<kafka_protocol::messages::AlterClientQuotasRequest>()
        }
        ApiKey::AddPartitionsToTxn => {
            versions::<kafka_protocol::messages::AddPartitionsToTxnRequest>()
        }
        ApiKey::AddOffsetsToTxn => versions::<kafka_protocol::messages::AddOffsetsToTxnRequest>(),
        ApiKey::EndTxn => versions::<kafka_protocol::messages::EndTxnRequest>(),
        ApiKey::WriteTxnMarkers => versions::<kafka_protocol::messages::WriteTxnMarkersRequest>(),
        ApiKey::TxnOffsetCommit => versions::<kafka_protocol::messages::TxnOffsetCommitRequest>(),
        ApiKey::DescribeProducers => {
            versions::<kafka_protocol::messages::DescribeProducersRequest>()
        }
        ApiKey::DescribeTransactions => {
            versions::<kafka_protocol::messages::DescribeTransactionsRequest>()
        }
        ApiKey::ListTransactions => versions::<kafka_protocol::messages::ListTransactionsRequest>(),
        _ => return None,
    })
}

/// Every supported API with its version range, for ApiVersions.
pub fn supported_apis() -> impl Iterator<Item = (ApiKey, VersionRange)> {
    SUPPORTED
        .iter()
        .filter_map(|key| supported_versions(*key).map(|range| (*key, range)))
}

/// A short static name of an API, for metric labels and log fields.
pub fn name(key: ApiKey) -> &'static str {
    match key {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::CreatePartitions => "CreatePartitions",
        ApiKey::DescribeCluster => "DescribeCluster",
        ApiKey::InitProducerId => "InitProducerId",
        ApiKey::FindCoordinator => "FindCoordinator",
        ApiKey::JoinGroup => "JoinGroup",
        ApiKey::SyncGroup => "SyncGroup",
        ApiKey::Heartbeat => "Heartbeat",
        ApiKey::LeaveGroup => "LeaveGroup",
        ApiKey::ListGroups => "ListGroups",
        ApiKey::DescribeGroups => "DescribeGroups",
        ApiKey::DeleteGroups => "DeleteGroups",
        ApiKey::OffsetCommit => "OffsetCommit",
        ApiKey::OffsetFetch => "OffsetFetch",
        ApiKey::OffsetDelete => "OffsetDelete",
        ApiKey::AlterConfigs => "AlterConfigs",
        ApiKey::IncrementalAlterConfigs => "IncrementalAlterConfigs",
        ApiKey::DeleteRecords => "DeleteRecords",
        ApiKey::OffsetForLeaderEpoch => "OffsetForLeaderEpoch",
        ApiKey::BrokerHeartbeat => "BrokerHeartbeat",
        ApiKey::DescribeLogDirs => "DescribeLogDirs",
        ApiKey::AlterReplicaLogDirs => "AlterReplicaLogDirs",
        ApiKey::ElectLeaders => "ElectLeaders",
        ApiKey::AlterPartitionReassignments => "AlterPartitionReassignments",
        ApiKey::ListPartitionReassignments => "ListPartitionReassignments",
        ApiKey::SaslHandshake => "SaslHandshake",
        ApiKey::SaslAuthenticate => "SaslAuthenticate",
        ApiKey::DescribeUserScramCredentials => "DescribeUserScramCredentials",
        ApiKey::AlterUserScramCredentials => "AlterUserScramCredentials",
        ApiKey::DescribeAcls => "DescribeAcls",
        ApiKey::CreateAcls => "CreateAcls",
        ApiKey::DeleteAcls => "DeleteAcls",
        ApiKey::UnregisterBroker => "UnregisterBroker",
        ApiKey::DescribeQuorum => "DescribeQuorum",
        ApiKey::UpdateFeatures => "UpdateFeatures",
        ApiKey::DescribeClientQuotas => "DescribeClientQuotas",
        ApiKey::AlterClientQuotas => "AlterClientQuotas",
        ApiKey::AddPartitionsToTxn => "AddPartitionsToTxn",
        ApiKey::AddOffsetsToTxn => "AddOffsetsToTxn",
        ApiKey::EndTxn => "EndTxn",
        ApiKey::WriteTxnMarkers => "WriteTxnMarkers",
        ApiKey::TxnOffsetCommit => "TxnOffsetCommit",
        ApiKey::DescribeProducers => "DescribeProducers",
        ApiKey::DescribeTransactions => "DescribeTransactions",
        ApiKey::ListTransactions => "ListTransactions",
        _ => "Unsupported",
    }
}

/// The answer to a request at a version the broker does not support. ApiVersions gets the
/// UNSUPPORTED_VERSION response at v0 with the supported list, so the client can pick a
/// version; any other API closes the connection, as Kafka does.
pub fn unsupported_version(key: ApiKey, version: i16) -> Outcome {
    if key == ApiKey::ApiVersions {
        return Outcome::Respond {
            response: Box::new(ResponseKind::ApiVersions(api_versions::unsupported())),
            version: 0,
            throttle: Duration::ZERO,
        };
    }
    match supported_versions(key) {
        Some(range) => Outcome::Close(format!(
            "{key:?} v{version} is not supported (supported: v{}-v{})",
            range.min, range.max
        )),
        None => Outcome::Close(format!("{key:?} is not supported")),
    }
}

/// Who sent a request.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub client_id: String,
    pub peer: std::net::SocketAddr,
    /// Who authenticated on this connection.
    pub principal: crate::security::Principal,
    /// The name of the listener the client connected to: Metadata and FindCoordinator answer
    /// with the brokers' addresses on this listener.
    pub listener: Arc<str>,
    /// The SASL state of a connection on a SASL listener.
    pub sasl: Option<Arc<parking_lot::Mutex<crate::security::sasl::SaslSession>>>,
}

/// Decodes the body of a `key` request at `version` (the header already read). An error
/// says why the request cannot be parsed: the connection is closed then.
pub fn decode(key: ApiKey, version: i16, mut body: Bytes) -> Result<RequestKind, String> {
    RequestKind::decode(key, &mut body, version)
        .map_err(|e| format!("malformed {key:?} v{version} request: {e}"))
}

/// Decodes the request body, runs its handler, and throttles a client over its quotas.
pub async fn handle(
    broker: &Arc<Broker>,
    context: &RequestContext,
    key: ApiKey,
    version: i16,
    body: Bytes,
    shutdown: &CancellationToken,
) -> Outcome {
    let size = body.len();
    let mut request = match decode(key, version, body) {
        Ok(request) => request,
        Err(reason) => return Outcome::Close(reason),
    };
    let metered = throttle::prepare(broker, context, &mut request, version, size);
    let (outcome, busy) =
        throttle::busy(dispatch(broker, context, request, version, shutdown)).await;
    throttle::finish(broker, context, metered, outcome, busy)
}

/// Runs the handler of a decoded request.
async fn dispatch(
    broker: &Arc<Broker>,
    context: &RequestContext,
    request: RequestKind,
    version: i16,
    shutdown: &CancellationToken,
) -> Outcome {
    let response = match request {
        RequestKind::ApiVersions(r) => ResponseKind::ApiVersions(api_versions::handle(broker, &r)),
        RequestKind::Metadata(r) => {
            ResponseKind::Metadata(metadata::handle(broker, context, r, version).await)
        }
        RequestKind::Produce(r) => match produce::handle(broker, context, r, version).await {
            Some(response) => ResponseKind::Produce(response),
            None => {
                return Outcome::NoResponse {
                    throttle: Duration::ZERO,
                }
            }
        },
        RequestKind::Fetch(r) => {
            ResponseKind::Fetch(fetch::handle(broker, context, r, version, shutdown).await)
        }
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(list_offsets::handle(broker, context, r, version))
        }
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(admin::create_topics(broker, context, r, version).await)
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(admin::delete_topics(broker, context, r, version).await)
        }
        RequestKind::CreatePartitions(r) => ResponseKind::CreatePartitions(
            admin::create_partitions(broker, context, r, version).await,
        ),
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(configs::describe(broker, context, r, version))
        }
        RequestKind::DescribeCluster(r) => {
            ResponseKind::DescribeCluster(cluster::describe(broker, context, &r))
        }
        RequestKind::UpdateFeatures(r) => {
            ResponseKind::UpdateFeatures(features::update(broker, context, r, version).await)
        }
        RequestKind::DescribeQuorum(r) => {
            ResponseKind::DescribeQuorum(quorum::describe(broker, context, &r, version).await)
        }
        RequestKind::UnregisterBroker(r) => {
            ResponseKind::UnregisterBroker(cluster::unregister(broker, context, &r).await)
        }
        RequestKind::InitProducerId(r) => match r.transactional_id.as_ref() {
            Some(id) => ResponseKind::InitProducerId(
                txn::init(broker, context, &r, &id.0.to_string(), version).await,
            ),
            None => ResponseKind::InitProducerId(producer_id::init(broker, context).await),
        },
        RequestKind::AddPartitionsToTxn(r) => ResponseKind::AddPartitionsToTxn(
            txn::add_partitions_to_txn(broker, context, r, version).await,
        ),
        RequestKind::AddOffsetsToTxn(r) => ResponseKind::AddOffsetsToTxn(
            txn::add_offsets_to_txn(broker, context, &r, version).await,
        ),
        RequestKind::EndTxn(r) => {
            ResponseKind::EndTxn(txn::end_txn(broker, context, &r, version).await)
        }
        RequestKind::TxnOffsetCommit(r) => {
            ResponseKind::TxnOffsetCommit(txn::txn_offset_commit(broker, context, r, version).await)
        }
        RequestKind::WriteTxnMarkers(r) => {
            ResponseKind::WriteTxnMarkers(txn::write_txn_markers(broker, context, r).await)
        }
        RequestKind::DescribeTransactions(r) => {
            ResponseKind::DescribeTransactions(txn::describe_transactions(broker, context, &r))
        }
        RequestKind::ListTransactions(r) => {
            ResponseKind::ListTransactions(txn::list_transactions(broker, context, &r, version))
        }
        RequestKind::DescribeProducers(r) => {
            ResponseKind::DescribeProducers(txn::describe_producers(broker, context, &r))
        }
        RequestKind::FindCoordinator(r) => ResponseKind::FindCoordinator(
            group::find_coordinator(broker, context, &r, version).await,
        ),
        RequestKind::JoinGroup(r) => {
            ResponseKind::JoinGroup(group::join(broker, context, r, version, shutdown).await)
        }
        RequestKind::SyncGroup(r) => {
            ResponseKind::SyncGroup(group::sync(broker, context, r, shutdown).await)
        }
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(group::heartbeat(broker, context, &r)),
        RequestKind::LeaveGroup(r) => {
            ResponseKind::LeaveGroup(group::leave(broker, context, &r, version))
        }
        RequestKind::ListGroups(r) => ResponseKind::ListGroups(group::list(broker, context, &r)),
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(group::describe(broker, context, &r, version))
        }
        RequestKind::DeleteGroups(r) => {
            ResponseKind::DeleteGroups(group::delete(broker, context, &r).await)
        }
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(offsets::commit(broker, context, r).await)
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(offsets::fetch(broker, context, r, version))
        }
        RequestKind::OffsetDelete(r) => {
            ResponseKind::OffsetDelete(offsets::delete(broker, context, r).await)
        }
        RequestKind::AlterConfigs(r) => {
            ResponseKind::AlterConfigs(configs::alter(broker, context, r).await)
        }
        RequestKind::OffsetForLeaderEpoch(r) => ResponseKind::OffsetForLeaderEpoch(
            replication::offset_for_leader_epoch(broker, context, r),
        ),
        RequestKind::DescribeLogDirs(r) => {
            ResponseKind::DescribeLogDirs(replication::describe_log_dirs(broker, context, &r))
        }
        RequestKind::AlterReplicaLogDirs(r) => ResponseKind::AlterReplicaLogDirs(
            replication::alter_replica_log_dirs(broker, context, &r),
        ),
        RequestKind::ElectLeaders(r) => ResponseKind::ElectLeaders(
            reassignment::elect_leaders(broker, context, r, version).await,
        ),
        RequestKind::AlterPartitionReassignments(r) => ResponseKind::AlterPartitionReassignments(
            reassignment::alter_reassignments(broker, context, r).await,
        ),
        RequestKind::ListPartitionReassignments(r) => ResponseKind::ListPartitionReassignments(
            reassignment::list_reassignments(broker, context, &r),
        ),
        RequestKind::DeleteRecords(r) => {
            ResponseKind::DeleteRecords(admin::delete_records(broker, context, r))
        }
        RequestKind::SaslHandshake(r) => {
            ResponseKind::SaslHandshake(sasl::handshake(broker, context, &r, version))
        }
        RequestKind::SaslAuthenticate(r) => {
            ResponseKind::SaslAuthenticate(sasl::authenticate(broker, context, r).await)
        }
        RequestKind::DescribeUserScramCredentials(r) => {
            ResponseKind::DescribeUserScramCredentials(scram::describe(broker, context, &r))
        }
        RequestKind::AlterUserScramCredentials(r) => {
            ResponseKind::AlterUserScramCredentials(scram::alter(broker, context, r).await)
        }
        RequestKind::CreateAcls(r) => {
            ResponseKind::CreateAcls(acl::create(broker, context, r).await)
        }
        RequestKind::DescribeAcls(r) => {
            ResponseKind::DescribeAcls(acl::describe(broker, context, &r))
        }
        RequestKind::DeleteAcls(r) => {
            ResponseKind::DeleteAcls(acl::delete(broker, context, r).await)
        }
        RequestKind::IncrementalAlterConfigs(r) => ResponseKind::IncrementalAlterConfigs(
            configs::incremental_alter(broker, context, r).await,
        ),
        RequestKind::DescribeClientQuotas(r) => {
            ResponseKind::DescribeClientQuotas(client_quotas::describe(broker, context, &r))
        }
        RequestKind::AlterClientQuotas(r) => {
            ResponseKind::AlterClientQuotas(client_quotas::alter(broker, context, r).await)
        }
        other => {
            return Outcome::Close(format!(
                "no handler for {:?}",
                std::mem::discriminant(&other)
            ));
        }
    };
    Outcome::Respond {
        response: Box::new(response),
        version,
        throttle: Duration::ZERO,
    }
}

pub(crate) fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub(crate) fn topic_name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table of supported APIs in docs/apis.md is the documentation users read: it must list
    /// exactly what ApiVersions advertises.
    #[test]
    fn the_docs_list_every_supported_api_with_its_versions() {
        let readme = include_str!("../../../docs/apis.md");
        let expected: Vec<String> = supported_apis()
            .map(|(key, range)| {
                format!(
                    "| {} | {} | {}–{} |",
                    name(key),
                    key as i16,
                    range.min,
                    range.max
                )
            })
            .collect();
        let missing: Vec<&String> = expected
            .iter()
            .filter(|line| !readme.contains(line.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/apis.md lacks these rows:\n{}",
            expected.join("\n")
        );
        let rows = readme
            .lines()
            .filter(|l| l.starts_with("| ") && l.ends_with(" |") && l.contains('–'))
            .count();
        assert_eq!(
            rows,
            expected.len(),
            "docs/apis.md lists APIs that are not advertised"
        );
    }
}
