//! Consumer group membership: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! ListGroups, DescribeGroups and DeleteGroups.

use std::time::Duration;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::ResponseError;
use tokio_util::sync::CancellationToken;

use super::acl::AUTHORIZED_OPERATIONS_OMITTED;
use super::{str_bytes, RequestContext};
use crate::broker::Broker;
use crate::group::{GroupState, JoinRequest, JoinResult, Pending, SyncResult, OFFSETS_TOPIC};
use crate::security::authorizer::{Operation, ResourceType};
use crate::txn::TRANSACTION_TOPIC;
use kafka_protocol::protocol::StrBytes;

const KEY_TYPE_GROUP: i8 = 0;
/// FindCoordinator's key type for a transactional id.
const KEY_TYPE_TRANSACTION: i8 = 1;

fn code(error: Option<ResponseError>) -> i16 {
    error.map_or(0, |e| e.code())
}

/// Ok when the principal may perform `operation` on `group` and this broker coordinates it.
fn check_group(
    broker: &Broker,
    context: &RequestContext,
    operation: Operation,
    group: &str,
) -> Result<(), ResponseError> {
    if context.allowed(broker, operation, ResourceType::Group, group) {
        broker.check_coordinator(group)
    } else {
        Err(ResponseError::GroupAuthorizationFailed)
    }
}

/// Where a coordinator is: the leader of `partition` of the internal topic `topic`.
fn leader_of(
    broker: &Broker,
    listener: &str,
    topic: &str,
    partition: Option<i32>,
) -> Result<(i32, String, i32), ResponseError> {
    let partition = partition.ok_or(ResponseError::CoordinatorNotAvailable)?;
    let image = broker.image();
    let leader = image
        .partition(topic, partition)
        .map(|p| p.leader)
        .ok_or(ResponseError::CoordinatorNotAvailable)?;
    let (host, port) = image
        .brokers
        .get(&leader)
        .filter(|b| !b.fenced)
        .and_then(|b| b.endpoint(listener))
        .ok_or(ResponseError::CoordinatorNotAvailable)?;
    Ok((leader, host.to_string(), i32::from(port)))
}

/// Where the coordinator of `group` is: the leader of its `__consumer_offsets` partition.
async fn locate(
    broker: &Broker,
    listener: &str,
    group: &str,
) -> Result<(i32, String, i32), ResponseError> {
    if let Err(e) = broker.ensure_offsets_topic().await {
        tracing::warn!(error = %e.message, "{OFFSETS_TOPIC} is not available");
        return Err(ResponseError::CoordinatorNotAvailable);
    }
    leader_of(
        broker,
        listener,
        OFFSETS_TOPIC,
        broker.offsets_partition_of(group),
    )
}

/// Where the coordinator of a transactional id is: the leader of its `__transaction_state`
/// partition.
async fn locate_transaction(
    broker: &Broker,
    listener: &str,
    transactional_id: &str,
) -> Result<(i32, String, i32), ResponseError> {
    if let Err(e) = broker.ensure_transaction_topic().await {
        tracing::warn!(error = %e.message, "{TRANSACTION_TOPIC} is not available");
        return Err(ResponseError::CoordinatorNotAvailable);
    }
    leader_of(
        broker,
        listener,
        TRANSACTION_TOPIC,
        broker.transaction_partition_of(transactional_id),
    )
}

pub(super) async fn find_coordinator(
    broker: &Broker,
    context: &super::RequestContext,
    request: &FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let keys: Vec<StrBytes> = if version >= 4 {
        request.coordinator_keys.clone()
    } else {
        vec![request.key.clone()]
    };
    let mut found = Vec::with_capacity(keys.len());
    for key in keys {
        let outcome = if request.key_type == KEY_TYPE_TRANSACTION {
            if !context.allowed(
                broker,
                Operation::Describe,
                ResourceType::TransactionalId,
                &key,
            ) {
                Err((
                    ResponseError::TransactionalIdAuthorizationFailed,
                    "the principal may not describe this transactional id",
                ))
            } else {
                locate_transaction(broker, &context.listener, key.as_str())
                    .await
                    .map_err(|e| {
                        (
                            e,
                            "the transactional id's state partition has no leader yet",
                        )
                    })
            }
        } else if request.key_type != KEY_TYPE_GROUP {
            Err((
                ResponseError::InvalidRequest,
                "the key type is neither a group (0) nor a transactional id (1)",
            ))
        } else if !context.allowed(broker, Operation::Describe, ResourceType::Group, &key) {
            Err((
                ResponseError::GroupAuthorizationFailed,
                "the principal may not describe this group",
            ))
        } else {
            locate(broker, &context.listener, key.as_str())
                .await
                .map_err(|e| (e, "the group's offsets partition has no leader yet"))
        };
        found.push((key, outcome));
    }
    if version >= 4 {
        let coordinators = found
            .into_iter()
            .map(|(key, outcome)| {
                let coordinator = Coordinator::default().with_key(key);
                match outcome {
                    Ok((node, host, port)) => coordinator
                        .with_node_id(BrokerId(node))
                        .with_host(str_bytes(&host))
                        .with_port(port),
                    Err((e, message)) => coordinator
                        .with_node_id(BrokerId(-1))
                        .with_port(-1)
                        .with_error_code(e.code())
                        .with_error_message(Some(str_bytes(message))),
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let Some((_, outcome)) = found.into_iter().next() else {
        return FindCoordinatorResponse::default()
            .with_error_code(ResponseError::InvalidRequest.code());
    };
    match outcome {
        Ok((node, host, port)) => FindCoordinatorResponse::default()
            .with_node_id(BrokerId(node))
            .with_host(str_bytes(&host))
            .with_port(port),
        Err((e, message)) => {
            let response = FindCoordinatorResponse::default()
                .with_error_code(e.code())
                .with_node_id(BrokerId(-1))
                .with_port(-1);
            if version >= 1 {
                response.with_error_message(Some(str_bytes(message)))
            } else {
                response
            }
        }
    }
}

fn ms(value: i32) -> Duration {
    Duration::from_millis(u64::try_from(value).unwrap_or(0))
}

pub(super) async fn join(
    broker: &Broker,
    context: &RequestContext,
    request: JoinGroupRequest,
    version: i16,
    shutdown: &CancellationToken,
) -> JoinGroupResponse {
    let join = JoinRequest {
        group_id: request.group_id.0.to_string(),
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
        client_id: context.client_id.clone(),
        client_host: format!("/{}", context.peer.ip()),
        session_timeout: ms(request.session_timeout_ms),
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout: if version >= 1 {
            ms(request.rebalance_timeout_ms)
        } else {
            ms(request.session_timeout_ms)
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        require_known_member_id: version >= 4,
    };
    let member_id = join.member_id.clone();
    if let Err(e) = check_group(broker, context, Operation::Read, &join.group_id) {
        return JoinGroupResponse::default()
            .with_error_code(e.code())
            .with_generation_id(-1)
            .with_member_id(str_bytes(&member_id))
            .with_protocol_name((version < 7).then(|| str_bytes("")));
    }
    let result = match broker.groups.join(join) {
        Pending::Ready(result) => result,
        Pending::Wait(receiver) => tokio::select! {
            result = receiver => result.unwrap_or_else(|_| JoinResult {
                error: Some(ResponseError::UnknownMemberId),
                generation: -1,
                member_id: member_id.clone(),
                ..JoinResult::default()
            }),
            () = shutdown.cancelled() => JoinResult {
                error: Some(ResponseError::NotCoordinator),
                generation: -1,
                member_id,
                ..JoinResult::default()
            },
        },
    };
    let members = result
        .members
        .into_iter()
        .map(|(id, instance, metadata)| {
            JoinGroupResponseMember::default()
                .with_member_id(str_bytes(&id))
                .with_group_instance_id(instance.as_deref().map(str_bytes))
                .with_metadata(metadata)
        })
        .collect();
    JoinGroupResponse::default()
        .with_error_code(code(result.error))
        .with_generation_id(result.generation)
        .with_protocol_type(result.protocol_type.as_deref().map(str_bytes))
        .with_protocol_name(
            result
                .protocol_name
                .as_deref()
                .map(str_bytes)
                .or_else(|| (version < 7).then(|| str_bytes(""))),
        )
        .with_leader(str_bytes(&result.leader))
        .with_member_id(str_bytes(&result.member_id))
        .with_members(members)
}

pub(super) async fn sync(
    broker: &Broker,
    context: &RequestContext,
    request: SyncGroupRequest,
    shutdown: &CancellationToken,
) -> SyncGroupResponse {
    let assignments = request
        .assignments
        .iter()
        .map(|a| (a.member_id.to_string(), a.assignment.clone()))
        .collect();
    if let Err(e) = check_group(broker, context, Operation::Read, &request.group_id) {
        return SyncGroupResponse::default().with_error_code(e.code());
    }
    let pending = broker.groups.sync(
        request.group_id.0.as_str(),
        request.generation_id,
        request.member_id.as_str(),
        request.group_instance_id.as_ref().map(|s| s.as_str()),
        (
            request.protocol_type.as_ref().map(|s| s.as_str()),
            request.protocol_name.as_ref().map(|s| s.as_str()),
        ),
        assignments,
    );
    let result = match pending {
        Pending::Ready(result) => result,
        Pending::Wait(receiver) => tokio::select! {
            result = receiver => result.unwrap_or(SyncResult {
                error: Some(ResponseError::RebalanceInProgress),
                ..SyncResult::default()
            }),
            () = shutdown.cancelled() => SyncResult {
                error: Some(ResponseError::NotCoordinator),
                ..SyncResult::default()
            },
        },
    };
    if result.error.is_none() {
        let group = request.group_id.0.as_str();
        let member = request.member_id.as_str();
        if let Some(metadata) = broker
            .groups
            .stable_metadata(group, member, request.generation_id)
        {
            if let Err(e) = broker.write_group_metadata(group, Some(&metadata)).await {
                tracing::warn!(group, error = %e.message, "the group's new membership could not be stored");
                return SyncGroupResponse::default().with_error_code(e.code.code());
            }
        }
    }
    SyncGroupResponse::default()
        .with_error_code(code(result.error))
        .with_protocol_type(result.protocol_type.as_deref().map(str_bytes))
        .with_protocol_name(result.protocol_name.as_deref().map(str_bytes))
        .with_assignment(result.assignment)
}

pub(super) fn heartbeat(
    broker: &Broker,
    context: &RequestContext,
    request: &HeartbeatRequest,
) -> HeartbeatResponse {
    if let Err(e) = check_group(broker, context, Operation::Read, &request.group_id) {
        return HeartbeatResponse::default().with_error_code(e.code());
    }
    let error = broker.groups.heartbeat(
        request.group_id.0.as_str(),
        request.generation_id,
        request.member_id.as_str(),
        request.group_instance_id.as_ref().map(|s| s.as_str()),
    );
    HeartbeatResponse::default().with_error_code(code(error))
}

pub(super) fn leave(
    broker: &Broker,
    context: &RequestContext,
    request: &LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    if let Err(e) = check_group(broker, context, Operation::Read, &request.group_id) {
        return LeaveGroupResponse::default().with_error_code(e.code());
    }
    match broker.groups.leave(request.group_id.0.as_str(), &members) {
        Err(e) => LeaveGroupResponse::default().with_error_code(e.code()),
        Ok(results) if version < 3 => LeaveGroupResponse::default()
            .with_error_code(code(results.into_iter().next().flatten())),
        Ok(results) => LeaveGroupResponse::default().with_members(
            members
                .iter()
                .zip(results)
                .map(|((id, instance), error)| {
                    MemberResponse::default()
                        .with_member_id(str_bytes(id))
                        .with_group_instance_id(instance.as_deref().map(str_bytes))
                        .with_error_code(code(error))
                })
                .collect(),
        ),
    }
}

pub(super) fn list(
    broker: &Broker,
    context: &RequestContext,
    request: &ListGroupsRequest,
) -> ListGroupsResponse {
    // DESCRIBE on the cluster lists every group; otherwise the groups the principal may
    // describe (KIP-231).
    let every_group = context.allowed_on_cluster(broker, Operation::Describe);
    let groups = broker
        .groups
        .list()
        .into_iter()
        .filter(|g| {
            request.states_filter.is_empty()
                || request
                    .states_filter
                    .iter()
                    .any(|s| s.as_str().eq_ignore_ascii_case(g.state.name()))
        })
        .filter(|_| {
            request.types_filter.is_empty()
                || request
                    .types_filter
                    .iter()
                    .any(|t| t.as_str().eq_ignore_ascii_case("classic"))
        })
        .filter(|g| {
            every_group
                || context.allowed(
                    broker,
                    Operation::Describe,
                    ResourceType::Group,
                    &g.group_id,
                )
        })
        .map(|g| {
            ListedGroup::default()
                .with_group_id(GroupId(str_bytes(&g.group_id)))
                .with_protocol_type(str_bytes(&g.protocol_type))
                .with_group_state(str_bytes(g.state.name()))
                .with_group_type(str_bytes("classic"))
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

pub(super) fn describe(
    broker: &Broker,
    context: &RequestContext,
    request: &DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let groups = request
        .groups
        .iter()
        .map(|id| {
            if let Err(e) = check_group(broker, context, Operation::Describe, id) {
                return DescribedGroup::default()
                    .with_group_id(id.clone())
                    .with_error_code(e.code())
                    .with_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED);
            }
            let g = broker.groups.describe(id.0.as_str());
            // From v6 (KIP-1043) a group that does not exist is an error, not a Dead group.
            if version >= 6 && g.state == GroupState::Dead {
                return DescribedGroup::default()
                    .with_group_id(id.clone())
                    .with_group_state(str_bytes(g.state.name()))
                    .with_error_code(ResponseError::GroupIdNotFound.code())
                    .with_error_message(Some(str_bytes(&format!("Group {} not found.", id.0))))
                    .with_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED);
            }
            let members = g
                .members
                .into_iter()
                .map(|m| {
                    DescribedGroupMember::default()
                        .with_member_id(str_bytes(&m.member_id))
                        .with_group_instance_id(m.group_instance_id.as_deref().map(str_bytes))
                        .with_client_id(str_bytes(&m.client_id))
                        .with_client_host(str_bytes(&m.client_host))
                        .with_member_metadata(m.metadata)
                        .with_member_assignment(m.assignment)
                })
                .collect();
            DescribedGroup::default()
                .with_group_id(id.clone())
                .with_group_state(str_bytes(g.state.name()))
                .with_protocol_type(str_bytes(&g.protocol_type))
                .with_protocol_data(str_bytes(&g.protocol))
                .with_members(members)
                .with_authorized_operations(context.authorized_operations(
                    broker,
                    request.include_authorized_operations,
                    ResourceType::Group,
                    id.0.as_str(),
                ))
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

pub(super) async fn delete(
    broker: &Broker,
    context: &RequestContext,
    request: &DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(request.groups_names.len());
    for id in &request.groups_names {
        let error = if context.allowed(broker, Operation::Delete, ResourceType::Group, id) {
            broker.delete_group(id.0.as_str()).await.err()
        } else {
            Some(ResponseError::GroupAuthorizationFailed)
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(id.clone())
                .with_error_code(code(error)),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
