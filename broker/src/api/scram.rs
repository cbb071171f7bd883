//! AlterUserScramCredentials and DescribeUserScramCredentials: SCRAM credentials kept in the
//! cluster metadata, so every broker authenticates the same users.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::ResponseError;

use super::{str_bytes, RequestContext};
use crate::broker::{ApiError, Broker};
use crate::controller::image::{CommandResult, MetadataCommand};
use crate::security::authorizer::Operation;
use crate::security::scram::{ScramCredential, ScramMechanism, MAX_ITERATIONS, MIN_ITERATIONS};

/// One change asked for a user.
enum Change {
    Delete(ScramMechanism),
    Upsert(ScramMechanism, ScramCredential),
}

pub(super) async fn alter(
    broker: &Broker,
    context: &RequestContext,
    request: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    if !context.allowed_on_cluster(broker, Operation::Alter) {
        let users: BTreeSet<String> = request
            .deletions
            .iter()
            .map(|d| d.name.to_string())
            .chain(request.upsertions.iter().map(|u| u.name.to_string()))
            .collect();
        let message = format!(
            "{} may not alter the cluster's credentials",
            context.principal
        );
        let results = users
            .iter()
            .map(|user| {
                AlterUserScramCredentialsResult::default()
                    .with_user(str_bytes(user))
                    .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
                    .with_error_message(Some(str_bytes(&message)))
            })
            .collect();
        return AlterUserScramCredentialsResponse::default().with_results(results);
    }
    // Every change of a user is checked before any is applied; a user whose request is
    // invalid gets one error and none of its changes.
    let mut by_user: BTreeMap<String, Result<Vec<Change>, ApiError>> = BTreeMap::new();
    let mut seen: BTreeSet<(String, i8)> = BTreeSet::new();
    let deletions = request
        .deletions
        .into_iter()
        .map(|d| (d.name.to_string(), d.mechanism, None));
    let upsertions = request.upsertions.into_iter().map(|u| {
        (
            u.name.to_string(),
            u.mechanism,
            Some((u.iterations, u.salt, u.salted_password)),
        )
    });
    for (user, code, upsert) in deletions.chain(upsertions) {
        let duplicate = !seen.insert((user.clone(), code));
        let entry = by_user.entry(user.clone()).or_insert(Ok(Vec::new()));
        let Ok(changes) = entry else { continue };
        let change = if duplicate {
            Err(ApiError::new(
                ResponseError::DuplicateResource,
                "a user's mechanism may appear once in a request",
            ))
        } else {
            check_change(broker, &user, code, upsert)
        };
        match change {
            Ok(change) => changes.push(change),
            Err(e) => *entry = Err(e),
        }
    }
    let mut results = Vec::with_capacity(by_user.len());
    for (user, changes) in by_user {
        let outcome = match changes {
            Ok(changes) => apply(broker, &user, changes).await,
            Err(e) => Err(e),
        };
        let mut result = AlterUserScramCredentialsResult::default().with_user(str_bytes(&user));
        if let Err(e) = outcome {
            tracing::info!(%user, error = %e.message, "SCRAM credential change refused");
            result = result
                .with_error_code(e.code.code())
                .with_error_message(Some(str_bytes(&e.message)));
        } else {
            tracing::info!(%user, "SCRAM credentials changed");
        }
        results.push(result);
    }
    AlterUserScramCredentialsResponse::default().with_results(results)
}

fn check_change(
    broker: &Broker,
    user: &str,
    code: i8,
    upsert: Option<(i32, bytes::Bytes, bytes::Bytes)>,
) -> Result<Change, ApiError> {
    let unacceptable =
        |message: String| ApiError::new(ResponseError::UnacceptableCredential, message);
    if user.is_empty() {
        return Err(unacceptable("the user name is empty".into()));
    }
    let mechanism = ScramMechanism::from_code(code).ok_or_else(|| {
        ApiError::new(
            ResponseError::UnsupportedSaslMechanism,
            format!("unknown SCRAM mechanism {code} (1: SCRAM-SHA-256, 2: SCRAM-SHA-512)"),
        )
    })?;
    let Some((iterations, salt, salted_password)) = upsert else {
        let exists = broker
            .image()
            .scram_credentials
            .get(user)
            .is_some_and(|c| c.contains_key(&mechanism));
        if !exists {
            return Err(ApiError::new(
                ResponseError::ResourceNotFound,
                format!("user {user} has no {mechanism} credential to delete"),
            ));
        }
        return Ok(Change::Delete(mechanism));
    };
    let iterations = u32::try_from(iterations).unwrap_or(0);
    if iterations < MIN_ITERATIONS {
        return Err(unacceptable(format!(
            "{iterations} iterations are too few; at least {MIN_ITERATIONS}"
        )));
    }
    if iterations > MAX_ITERATIONS {
        return Err(unacceptable(format!(
            "{iterations} iterations are too many; at most {MAX_ITERATIONS}"
        )));
    }
    if salt.is_empty() || salted_password.is_empty() {
        return Err(unacceptable(
            "the salt and salted password must not be empty".into(),
        ));
    }
    Ok(Change::Upsert(
        mechanism,
        ScramCredential::from_salted_password(
            mechanism,
            &salted_password,
            salt.to_vec(),
            iterations,
        ),
    ))
}

async fn apply(broker: &Broker, user: &str, changes: Vec<Change>) -> Result<(), ApiError> {
    for change in changes {
        let command = match change {
            Change::Delete(mechanism) => MetadataCommand::DeleteScramCredential {
                user: user.to_string(),
                mechanism,
            },
            Change::Upsert(mechanism, credential) => MetadataCommand::UpsertScramCredential {
                user: user.to_string(),
                mechanism,
                credential,
                only_if_absent: false,
            },
        };
        let result = broker
            .quorum
            .propose(command)
            .await
            .map_err(|e| ApiError::new(ResponseError::RequestTimedOut, e.to_string()))?;
        if let CommandResult::Rejected { reason } = result {
            return Err(ApiError::new(ResponseError::ResourceNotFound, reason));
        }
    }
    Ok(())
}

pub(super) fn describe(
    broker: &Broker,
    context: &RequestContext,
    request: &DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    if !context.allowed_on_cluster(broker, Operation::Describe) {
        return DescribeUserScramCredentialsResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
            .with_error_message(Some(str_bytes(&format!(
                "{} may not describe the cluster's credentials",
                context.principal
            ))));
    }
    let image = broker.image();
    let wanted: Vec<String> = match &request.users {
        Some(users) if !users.is_empty() => users.iter().map(|u| u.name.to_string()).collect(),
        _ => image.scram_credentials.keys().cloned().collect(),
    };
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for user in &wanted {
        *counts.entry(user.as_str()).or_default() += 1;
    }
    let mut results = Vec::new();
    for (user, count) in counts {
        let result = DescribeUserScramCredentialsResult::default().with_user(str_bytes(user));
        let result = if count > 1 {
            result
                .with_error_code(ResponseError::DuplicateResource.code())
                .with_error_message(Some(str_bytes("the user is asked for more than once")))
        } else {
            match image.scram_credentials.get(user) {
                Some(credentials) if !credentials.is_empty() => result.with_credential_infos(
                    credentials
                        .iter()
                        .map(|(mechanism, credential)| {
                            CredentialInfo::default()
                                .with_mechanism(mechanism.code())
                                .with_iterations(
                                    i32::try_from(credential.iterations).unwrap_or(i32::MAX),
                                )
                        })
                        .collect(),
                ),
                _ => result
                    .with_error_code(ResponseError::ResourceNotFound.code())
                    .with_error_message(Some(str_bytes(&format!(
                        "user {user} has no SCRAM credentials"
                    )))),
            }
        };
        results.push(result);
    }
    DescribeUserScramCredentialsResponse::default().with_results(results)
}
