//! A user's credential, ACLs and quotas on a cluster, read and changed over the Kafka
//! protocol with the topic controller's admin client ([`KafkaAdmin`]: one short connection per
//! request, each bounded by its timeout).

use bytes::Bytes;
use kafka_protocol::messages::alter_client_quotas_request::{
    EntityData as AlterEntity, EntryData as AlterEntry, OpData,
};
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterUserScramCredentialsRequest, CreateAclsRequest,
    DeleteAclsRequest, DescribeAclsRequest, DescribeClientQuotasRequest,
    DescribeUserScramCredentialsRequest,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use oxbow_broker::quota::EntityType;
use oxbow_broker::security::authorizer::{AclBinding, WireAcl};
use oxbow_broker::security::scram::{
    new_salt, salted_password, ScramCredential, ScramMechanism, DEFAULT_ITERATIONS,
};

use super::plan::{principal, ObservedUser, Step};
use crate::topic::admin::{check_code, AdminError, KafkaAdmin};

/// Protocol versions used: supported by Oxbow and by Apache Kafka 3.x and 4.x.
const DESCRIBE_SCRAM_V: i16 = 0;
const ALTER_SCRAM_V: i16 = 0;
const DESCRIBE_ACLS_V: i16 = 3;
const CREATE_ACLS_V: i16 = 3;
const DELETE_ACLS_V: i16 = 3;
const DESCRIBE_QUOTAS_V: i16 = 1;
const ALTER_QUOTAS_V: i16 = 1;
/// Kafka's "any" in ACL filters.
const ANY: i8 = 1;
/// DescribeClientQuotas' match type for one name exactly.
const MATCH_EXACT: i8 = 0;

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

fn subject(user: &str) -> impl FnOnce() -> String + '_ {
    move || format!("user `{user}`")
}

/// The wire form of an ACL, as CreateAcls sends it.
fn creation(acl: &AclBinding) -> AclCreation {
    AclCreation::default()
        .with_resource_type(acl.resource_type.code())
        .with_resource_name(text(&acl.resource_name))
        .with_resource_pattern_type(acl.pattern_type.code())
        .with_principal(text(&acl.principal))
        .with_host(text(&acl.host))
        .with_operation(acl.operation.code())
        .with_permission_type(acl.permission.code())
}

/// A DeleteAcls filter that matches exactly one ACL.
fn exact_filter(acl: &AclBinding) -> DeleteAclsFilter {
    DeleteAclsFilter::default()
        .with_resource_type_filter(acl.resource_type.code())
        .with_resource_name_filter(Some(text(&acl.resource_name)))
        .with_pattern_type_filter(acl.pattern_type.code())
        .with_principal_filter(Some(text(&acl.principal)))
        .with_host_filter(Some(text(&acl.host)))
        .with_operation(acl.operation.code())
        .with_permission_type(acl.permission.code())
}

fn protocol(operation: &'static str, detail: String) -> AdminError {
    AdminError::Protocol { operation, detail }
}

/// The credential of `password` for `mechanism`, with a fresh salt and Kafka's default
/// iterations, and the salted password AlterUserScramCredentials carries.
pub fn new_credential(
    mechanism: ScramMechanism,
    password: &str,
) -> Result<(ScramCredential, Vec<u8>), AdminError> {
    let salt = new_salt().map_err(|e| protocol("AlterUserScramCredentials", e.to_string()))?;
    let salted = salted_password(mechanism, password.as_bytes(), &salt, DEFAULT_ITERATIONS);
    let credential =
        ScramCredential::from_salted_password(mechanism, &salted, salt, DEFAULT_ITERATIONS);
    Ok((credential, salted))
}

impl KafkaAdmin {
    /// The user's credentials, ACLs and quotas on the cluster at `bootstrap`.
    pub async fn describe_user(
        &self,
        bootstrap: &str,
        user: &str,
    ) -> Result<ObservedUser, AdminError> {
        let mut observed = ObservedUser::default();

        let request = DescribeUserScramCredentialsRequest::default()
            .with_users(Some(vec![UserName::default().with_name(text(user))]));
        let op = "DescribeUserScramCredentials";
        let response = self.call(op, bootstrap, &request, DESCRIBE_SCRAM_V).await?;
        check_code(
            op,
            subject(user),
            response.error_code,
            response.error_message.as_ref(),
        )?;
        for result in response.results.iter().filter(|r| r.user.as_str() == user) {
            // A user without any credential is RESOURCE_NOT_FOUND.
            if result.error_code == ResponseError::ResourceNotFound.code() {
                continue;
            }
            check_code(
                op,
                subject(user),
                result.error_code,
                result.error_message.as_ref(),
            )?;
            for info in &result.credential_infos {
                let mechanism = ScramMechanism::from_code(info.mechanism).ok_or_else(|| {
                    protocol(op, format!("unknown SCRAM mechanism {}", info.mechanism))
                })?;
                observed.credentials.insert(mechanism, info.iterations);
            }
        }

        // The defaults of the generated request are Some("") for the nullable strings: every
        // field is set.
        let request = DescribeAclsRequest::default()
            .with_resource_type_filter(ANY)
            .with_resource_name_filter(None)
            .with_pattern_type_filter(ANY)
            .with_host_filter(None)
            .with_principal_filter(Some(text(&principal(user))))
            .with_operation(ANY)
            .with_permission_type(ANY);
        let op = "DescribeAcls";
        let response = self.call(op, bootstrap, &request, DESCRIBE_ACLS_V).await?;
        check_code(
            op,
            subject(user),
            response.error_code,
            response.error_message.as_ref(),
        )?;
        for resource in &response.resources {
            for acl in &resource.acls {
                let binding = AclBinding::from_wire(&WireAcl {
                    resource_type: resource.resource_type,
                    resource_name: Some(resource.resource_name.as_str()),
                    pattern_type: resource.pattern_type,
                    principal: Some(acl.principal.as_str()),
                    host: Some(acl.host.as_str()),
                    operation: acl.operation,
                    permission: acl.permission_type,
                })
                .map_err(|e| protocol(op, e))?;
                observed.acls.insert(binding);
            }
        }

        let request = DescribeClientQuotasRequest::default()
            .with_components(vec![ComponentData::default()
                .with_entity_type(text(EntityType::User.wire_name()))
                .with_match_type(MATCH_EXACT)
                .with_match(Some(text(user)))])
            .with_strict(true);
        let op = "DescribeClientQuotas";
        let response = self
            .call(op, bootstrap, &request, DESCRIBE_QUOTAS_V)
            .await?;
        check_code(
            op,
            subject(user),
            response.error_code,
            response.error_message.as_ref(),
        )?;
        for entry in response.entries.iter().flatten() {
            for value in &entry.values {
                observed.quotas.insert(value.key.to_string(), value.value);
            }
        }
        Ok(observed)
    }

    /// Carries out one step for `user`. An upsert takes the credential (see
    /// [`new_credential`]) in `credential`.
    pub async fn apply_user_step(
        &self,
        bootstrap: &str,
        user: &str,
        step: &Step,
        credential: Option<&(ScramCredential, Vec<u8>)>,
    ) -> Result<(), AdminError> {
        match step {
            Step::UpsertCredential(mechanism) => {
                let Some((credential, salted)) = credential else {
                    return Err(protocol(
                        "AlterUserScramCredentials",
                        "no credential to set".to_string(),
                    ));
                };
                let upsertion = ScramCredentialUpsertion::default()
                    .with_name(text(user))
                    .with_mechanism(mechanism.code())
                    .with_iterations(i32::try_from(credential.iterations).unwrap_or(i32::MAX))
                    .with_salt(Bytes::from(credential.salt.clone()))
                    .with_salted_password(Bytes::from(salted.clone()));
                self.alter_scram(
                    bootstrap,
                    user,
                    AlterUserScramCredentialsRequest::default().with_upsertions(vec![upsertion]),
                )
                .await
            }
            Step::DeleteCredentials(mechanisms) => {
                let deletions = mechanisms
                    .iter()
                    .map(|m| {
                        ScramCredentialDeletion::default()
                            .with_name(text(user))
                            .with_mechanism(m.code())
                    })
                    .collect();
                self.alter_scram(
                    bootstrap,
                    user,
                    AlterUserScramCredentialsRequest::default().with_deletions(deletions),
                )
                .await
            }
            Step::CreateAcls(acls) => {
                let request = CreateAclsRequest::default()
                    .with_creations(acls.iter().map(creation).collect());
                let op = "CreateAcls";
                let response = self.call(op, bootstrap, &request, CREATE_ACLS_V).await?;
                for result in &response.results {
                    check_code(
                        op,
                        subject(user),
                        result.error_code,
                        result.error_message.as_ref(),
                    )?;
                }
                Ok(())
            }
            Step::DeleteAcls(acls) => {
                let request = DeleteAclsRequest::default()
                    .with_filters(acls.iter().map(exact_filter).collect());
                let op = "DeleteAcls";
                let response = self.call(op, bootstrap, &request, DELETE_ACLS_V).await?;
                for result in &response.filter_results {
                    check_code(
                        op,
                        subject(user),
                        result.error_code,
                        result.error_message.as_ref(),
                    )?;
                }
                Ok(())
            }
            Step::AlterQuotas(changes) => {
                let ops = changes
                    .iter()
                    .map(|(key, value)| {
                        OpData::default()
                            .with_key(text(key))
                            .with_value(value.unwrap_or_default())
                            .with_remove(value.is_none())
                    })
                    .collect();
                let request =
                    AlterClientQuotasRequest::default().with_entries(vec![AlterEntry::default()
                        .with_entity(vec![AlterEntity::default()
                            .with_entity_type(text(EntityType::User.wire_name()))
                            .with_entity_name(Some(text(user)))])
                        .with_ops(ops)]);
                let op = "AlterClientQuotas";
                let response = self.call(op, bootstrap, &request, ALTER_QUOTAS_V).await?;
                for entry in &response.entries {
                    check_code(
                        op,
                        subject(user),
                        entry.error_code,
                        entry.error_message.as_ref(),
                    )?;
                }
                Ok(())
            }
        }
    }

    async fn alter_scram(
        &self,
        bootstrap: &str,
        user: &str,
        request: AlterUserScramCredentialsRequest,
    ) -> Result<(), AdminError> {
        let op = "AlterUserScramCredentials";
        let response = self.call(op, bootstrap, &request, ALTER_SCRAM_V).await?;
        for result in &response.results {
            // Deleting a credential that is already gone is done.
            if request.upsertions.is_empty()
                && result.error_code == ResponseError::ResourceNotFound.code()
            {
                continue;
            }
            check_code(
                op,
                subject(user),
                result.error_code,
                result.error_message.as_ref(),
            )?;
        }
        Ok(())
    }
}
