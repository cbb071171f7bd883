//! Access control: CreateAcls, DescribeAcls and DeleteAcls on the ACL bindings kept in the
//! cluster metadata, and the check every handler makes before it acts for a principal.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::ResponseError;

use super::{str_bytes, RequestContext};
use crate::broker::Broker;
use crate::controller::image::{CommandResult, MetadataCommand};
use crate::security::authorizer::{
    AclBinding, AclFilter, Operation, ResourceType, WireAcl, CLUSTER_NAME,
};

/// Kafka's marker for "authorized operations were not requested" (KIP-430).
pub(crate) const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

impl RequestContext {
    /// KIP-430: the operations this request's principal may perform on the resource `name`,
    /// as a bit field (bit `n` for the operation with code `n`), when the request asked for
    /// them (`requested`); Kafka's "not requested" marker otherwise. Without an authorizer
    /// every operation of the resource type is allowed.
    pub(crate) fn authorized_operations(
        &self,
        broker: &Broker,
        requested: bool,
        resource_type: ResourceType,
        name: &str,
    ) -> i32 {
        if !requested {
            return AUTHORIZED_OPERATIONS_OMITTED;
        }
        let authorizer = &broker.config.authorizer;
        let image = broker.image();
        resource_type
            .operations()
            .iter()
            .filter(|operation| {
                !authorizer.enabled()
                    || authorizer.authorize(
                        &image.acls,
                        &self.principal,
                        self.peer.ip(),
                        **operation,
                        resource_type,
                        name,
                    )
            })
            .fold(0, |bits, operation| bits | 1 << operation.code())
    }

    /// Whether this request's principal, from its host, may perform `operation` on the
    /// resource `name`. Always true when no authorizer is configured.
    pub(crate) fn allowed(
        &self,
        broker: &Broker,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        let authorizer = &broker.config.authorizer;
        if !authorizer.enabled() {
            return true;
        }
        let allowed = authorizer.authorize(
            &broker.image().acls,
            &self.principal,
            self.peer.ip(),
            operation,
            resource_type,
            name,
        );
        if !allowed {
            tracing::debug!(
                principal = %self.principal,
                host = %self.peer.ip(),
                ?operation,
                %resource_type,
                resource = name,
                "denied"
            );
        }
        allowed
    }

    /// [`RequestContext::allowed`] on the cluster resource.
    pub(crate) fn allowed_on_cluster(&self, broker: &Broker, operation: Operation) -> bool {
        self.allowed(broker, operation, ResourceType::Cluster, CLUSTER_NAME)
    }

    /// Whether the principal may perform `operation` on some resource of `resource_type`
    /// (an idempotent producer's WRITE on any topic).
    pub(crate) fn allowed_on_any(
        &self,
        broker: &Broker,
        operation: Operation,
        resource_type: ResourceType,
    ) -> bool {
        let authorizer = &broker.config.authorizer;
        !authorizer.enabled()
            || authorizer.authorize_any(
                &broker.image().acls,
                &self.principal,
                self.peer.ip(),
                operation,
                resource_type,
            )
    }
}

/// Why an ACL request cannot be served before looking at its content: no authorizer (Kafka's
/// SECURITY_DISABLED), or a principal without `operation` on the cluster.
fn refusal(
    broker: &Broker,
    context: &RequestContext,
    operation: Operation,
) -> Option<(ResponseError, String)> {
    if !broker.config.authorizer.enabled() {
        return Some((
            ResponseError::SecurityDisabled,
            "no authorizer is configured on this broker (authorizer.class.name)".to_string(),
        ));
    }
    if !context.allowed_on_cluster(broker, operation) {
        return Some((
            ResponseError::ClusterAuthorizationFailed,
            format!(
                "{} may not {operation:?} the cluster's ACLs",
                context.principal
            ),
        ));
    }
    None
}

/// Commits an ACL change to the metadata.
async fn commit(broker: &Broker, command: MetadataCommand) -> Result<(), (ResponseError, String)> {
    match broker.quorum.propose(command).await {
        Ok(CommandResult::Rejected { reason }) => Err((ResponseError::InvalidRequest, reason)),
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::warn!(error = %e, "ACL change not committed");
            Err((ResponseError::RequestTimedOut, e.to_string()))
        }
    }
}

fn failed_creation(code: ResponseError, message: &str) -> AclCreationResult {
    AclCreationResult::default()
        .with_error_code(code.code())
        .with_error_message(Some(str_bytes(message)))
}

pub(super) async fn create(
    broker: &Broker,
    context: &RequestContext,
    request: CreateAclsRequest,
) -> CreateAclsResponse {
    if let Some((code, message)) = refusal(broker, context, Operation::Alter) {
        let results = request
            .creations
            .iter()
            .map(|_| failed_creation(code, &message))
            .collect();
        return CreateAclsResponse::default().with_results(results);
    }
    let parsed: Vec<Result<AclBinding, String>> = request
        .creations
        .iter()
        .map(|c| {
            AclBinding::from_wire(&WireAcl {
                resource_type: c.resource_type,
                resource_name: Some(c.resource_name.as_str()),
                pattern_type: c.resource_pattern_type,
                principal: Some(c.principal.as_str()),
                host: Some(c.host.as_str()),
                operation: c.operation,
                permission: c.permission_type,
            })
        })
        .collect();
    let valid: Vec<AclBinding> = parsed
        .iter()
        .filter_map(|p| p.as_ref().ok())
        .cloned()
        .collect();
    let committed = if valid.is_empty() {
        Ok(())
    } else {
        commit(
            broker,
            MetadataCommand::CreateAcls {
                acls: valid.clone(),
            },
        )
        .await
    };
    if committed.is_ok() {
        for acl in &valid {
            tracing::info!(principal = %context.principal, acl = %acl, "ACL created");
        }
    }
    let results = parsed
        .into_iter()
        .map(|p| match (p, &committed) {
            (Err(reason), _) => failed_creation(ResponseError::InvalidRequest, &reason),
            (Ok(_), Err((code, message))) => failed_creation(*code, message),
            (Ok(_), Ok(())) => AclCreationResult::default(),
        })
        .collect();
    CreateAclsResponse::default().with_results(results)
}

pub(super) fn describe(
    broker: &Broker,
    context: &RequestContext,
    request: &DescribeAclsRequest,
) -> DescribeAclsResponse {
    let failed = |code: ResponseError, message: &str| {
        DescribeAclsResponse::default()
            .with_error_code(code.code())
            .with_error_message(Some(str_bytes(message)))
    };
    if let Some((code, message)) = refusal(broker, context, Operation::Describe) {
        return failed(code, &message);
    }
    let filter = match AclFilter::from_wire(&WireAcl {
        resource_type: request.resource_type_filter,
        resource_name: request.resource_name_filter.as_ref().map(|s| s.as_str()),
        pattern_type: request.pattern_type_filter,
        principal: request.principal_filter.as_ref().map(|s| s.as_str()),
        host: request.host_filter.as_ref().map(|s| s.as_str()),
        operation: request.operation,
        permission: request.permission_type,
    }) {
        Ok(filter) => filter,
        Err(reason) => return failed(ResponseError::InvalidRequest, &reason),
    };
    let image = broker.image();
    // Bindings sort by resource first, so each resource's ACLs are consecutive.
    let mut resources: BTreeMap<(i8, i8, &str), Vec<AclDescription>> = BTreeMap::new();
    for acl in image.acls.iter().filter(|acl| filter.matches(acl)) {
        resources
            .entry((
                acl.resource_type.code(),
                acl.pattern_type.code(),
                acl.resource_name.as_str(),
            ))
            .or_default()
            .push(
                AclDescription::default()
                    .with_principal(str_bytes(&acl.principal))
                    .with_host(str_bytes(&acl.host))
                    .with_operation(acl.operation.code())
                    .with_permission_type(acl.permission.code()),
            );
    }
    let resources = resources
        .into_iter()
        .map(|((resource_type, pattern_type, name), acls)| {
            DescribeAclsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(str_bytes(name))
                .with_pattern_type(pattern_type)
                .with_acls(acls)
        })
        .collect();
    DescribeAclsResponse::default().with_resources(resources)
}

fn matching_acl(acl: &AclBinding) -> DeleteAclsMatchingAcl {
    DeleteAclsMatchingAcl::default()
        .with_resource_type(acl.resource_type.code())
        .with_resource_name(str_bytes(&acl.resource_name))
        .with_pattern_type(acl.pattern_type.code())
        .with_principal(str_bytes(&acl.principal))
        .with_host(str_bytes(&acl.host))
        .with_operation(acl.operation.code())
        .with_permission_type(acl.permission.code())
}

fn failed_filter(code: ResponseError, message: &str) -> DeleteAclsFilterResult {
    DeleteAclsFilterResult::default()
        .with_error_code(code.code())
        .with_error_message(Some(str_bytes(message)))
}

pub(super) async fn delete(
    broker: &Broker,
    context: &RequestContext,
    request: DeleteAclsRequest,
) -> DeleteAclsResponse {
    if let Some((code, message)) = refusal(broker, context, Operation::Alter) {
        let results = request
            .filters
            .iter()
            .map(|_| failed_filter(code, &message))
            .collect();
        return DeleteAclsResponse::default().with_filter_results(results);
    }
    let image = broker.image();
    let matched: Vec<Result<Vec<AclBinding>, String>> = request
        .filters
        .iter()
        .map(|f| {
            let filter = AclFilter::from_wire(&WireAcl {
                resource_type: f.resource_type_filter,
                resource_name: f.resource_name_filter.as_ref().map(|s| s.as_str()),
                pattern_type: f.pattern_type_filter,
                principal: f.principal_filter.as_ref().map(|s| s.as_str()),
                host: f.host_filter.as_ref().map(|s| s.as_str()),
                operation: f.operation,
                permission: f.permission_type,
            })?;
            Ok(image
                .acls
                .iter()
                .filter(|acl| filter.matches(acl))
                .cloned()
                .collect())
        })
        .collect();
    let doomed: BTreeSet<AclBinding> = matched
        .iter()
        .filter_map(|m| m.as_ref().ok())
        .flatten()
        .cloned()
        .collect();
    let committed = if doomed.is_empty() {
        Ok(())
    } else {
        commit(
            broker,
            MetadataCommand::DeleteAcls {
                acls: doomed.iter().cloned().collect(),
            },
        )
        .await
    };
    if committed.is_ok() {
        for acl in &doomed {
            tracing::info!(principal = %context.principal, acl = %acl, "ACL deleted");
        }
    }
    let results = matched
        .into_iter()
        .map(|m| match (m, &committed) {
            (Err(reason), _) => failed_filter(ResponseError::InvalidRequest, &reason),
            (Ok(_), Err((code, message))) => failed_filter(*code, message),
            (Ok(acls), Ok(())) => DeleteAclsFilterResult::default()
                .with_matching_acls(acls.iter().map(matching_acl).collect()),
        })
        .collect();
    DeleteAclsResponse::default().with_filter_results(results)
}
