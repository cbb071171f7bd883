//! DescribeClientQuotas and AlterClientQuotas: client quotas kept in the cluster metadata, so
//! every broker enforces the same ones, validated and matched as Kafka's controller and
//! metadata image do.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::{
    alter_client_quotas_response, describe_client_quotas_response, AlterClientQuotasRequest,
    AlterClientQuotasResponse, DescribeClientQuotasRequest, DescribeClientQuotasResponse,
};
use kafka_protocol::ResponseError;

use super::{str_bytes, RequestContext};
use crate::broker::{ApiError, Broker};
use crate::controller::image::{CommandResult, MetadataCommand};
use crate::quota::{self, EntityType, QuotaChange, QuotaEntity, QuotaValue};
use crate::security::authorizer::Operation;

/// DescribeClientQuotas' match types.
const MATCH_EXACT: i8 = 0;
const MATCH_DEFAULT: i8 = 1;
const MATCH_SPECIFIED: i8 = 2;

/// A describe filter: names wanted exactly (`None`: the default), and types wanted with any
/// name.
#[derive(Debug, Default)]
struct Filter {
    exact: BTreeMap<EntityType, Option<String>>,
    specified: BTreeSet<EntityType>,
    strict: bool,
}

impl Filter {
    fn parse(request: &DescribeClientQuotasRequest) -> Result<Filter, ApiError> {
        let invalid = |message: String| ApiError::new(ResponseError::InvalidRequest, message);
        let mut filter = Filter {
            strict: request.strict,
            ..Filter::default()
        };
        for component in &request.components {
            let name = component.entity_type.as_str();
            if name.is_empty() {
                return Err(invalid("Invalid empty entity type.".into()));
            }
            let Some(entity_type) = EntityType::from_wire(name) else {
                return Err(ApiError::new(
                    ResponseError::UnsupportedVersion,
                    format!("Unsupported entity type {name}"),
                ));
            };
            if filter.exact.contains_key(&entity_type) || filter.specified.contains(&entity_type) {
                return Err(invalid(format!(
                    "Entity type {name} cannot appear more than once in the filter."
                )));
            }
            let matched = component._match.as_ref().map(|m| m.to_string());
            match (component.match_type, matched) {
                (MATCH_EXACT, Some(matched)) => {
                    filter.exact.insert(entity_type, Some(matched));
                }
                (MATCH_EXACT, None) => {
                    return Err(invalid(
                        "Request specified MATCH_TYPE_EXACT, but set match string to null.".into(),
                    ))
                }
                (MATCH_DEFAULT, None) => {
                    filter.exact.insert(entity_type, None);
                }
                (MATCH_DEFAULT, Some(_)) => {
                    return Err(invalid(
                        "Request specified MATCH_TYPE_DEFAULT, but also specified a match string."
                            .into(),
                    ))
                }
                (MATCH_SPECIFIED, None) => {
                    filter.specified.insert(entity_type);
                }
                (MATCH_SPECIFIED, Some(_)) => return Err(invalid(
                    "Request specified MATCH_TYPE_SPECIFIED, but also specified a match string."
                        .into(),
                )),
                (other, _) => return Err(invalid(format!("Unknown match type {other}"))),
            }
        }
        let names = |t: EntityType| filter.exact.contains_key(&t) || filter.specified.contains(&t);
        if names(EntityType::Ip) && (names(EntityType::User) || names(EntityType::ClientId)) {
            return Err(invalid(
                "Invalid entity filter component combination. IP filter component should not be used with user or clientId filter component."
                    .into(),
            ));
        }
        Ok(filter)
    }

    fn matches(&self, entity: &QuotaEntity) -> bool {
        if self.strict && entity.0.len() != self.exact.len() + self.specified.len() {
            return false;
        }
        self.exact
            .iter()
            .all(|(t, name)| entity.get(*t) == Some(name.as_deref()))
            && self.specified.iter().all(|t| entity.get(*t).is_some())
    }
}

pub(super) fn describe(
    broker: &Broker,
    context: &RequestContext,
    request: &DescribeClientQuotasRequest,
) -> DescribeClientQuotasResponse {
    let failed = |e: ApiError| {
        DescribeClientQuotasResponse::default()
            .with_error_code(e.code.code())
            .with_error_message(Some(str_bytes(&e.message)))
            .with_entries(None)
    };
    if !context.allowed_on_cluster(broker, Operation::DescribeConfigs) {
        return failed(ApiError::new(
            ResponseError::ClusterAuthorizationFailed,
            format!(
                "{} may not describe the cluster's quotas",
                context.principal
            ),
        ));
    }
    let filter = match Filter::parse(request) {
        Ok(filter) => filter,
        Err(e) => return failed(e),
    };
    let image = broker.image();
    let entries = image
        .client_quotas
        .0
        .iter()
        .filter(|(entity, _)| filter.matches(entity))
        .map(|(entity, values)| {
            describe_client_quotas_response::EntryData::default()
                .with_entity(
                    entity
                        .0
                        .iter()
                        .map(|(t, name)| {
                            describe_client_quotas_response::EntityData::default()
                                .with_entity_type(str_bytes(t.wire_name()))
                                .with_entity_name(name.as_deref().map(str_bytes))
                        })
                        .collect(),
                )
                .with_values(
                    values
                        .iter()
                        .map(|(key, value)| {
                            describe_client_quotas_response::ValueData::default()
                                .with_key(str_bytes(key))
                                .with_value(value.0)
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeClientQuotasResponse::default().with_entries(Some(entries))
}

/// How Kafka names an entity in its messages (`ClientQuotaEntity(entries={user=alice})`).
fn kafka_name(entity: &QuotaEntity) -> String {
    let entries: Vec<String> = entity
        .0
        .iter()
        .map(|(t, name)| format!("{}={}", t.wire_name(), name.as_deref().unwrap_or("null")))
        .collect();
    format!("ClientQuotaEntity(entries={{{}}})", entries.join(", "))
}

/// Whether an IP entity's name that is not an address names a host, as Kafka accepts.
async fn resolvable(entity: &QuotaEntity) -> bool {
    match entity.get(EntityType::Ip) {
        Some(Some(host)) if host.parse::<std::net::IpAddr>().is_err() => {
            tokio::net::lookup_host((host, 0)).await.is_ok()
        }
        _ => false,
    }
}

/// The changes one entry asks for, checked against the current quotas: only keys whose value
/// changes become changes.
fn check_entry(
    entity: &QuotaEntity,
    ops: &[kafka_protocol::messages::alter_client_quotas_request::OpData],
    host_resolves: bool,
    current: Option<&BTreeMap<String, QuotaValue>>,
) -> Result<Vec<QuotaChange>, ApiError> {
    let invalid = |message: String| ApiError::new(ResponseError::InvalidRequest, message);
    let mut wanted: BTreeMap<&str, Option<f64>> = BTreeMap::new();
    for op in ops {
        if wanted.contains_key(op.key.as_str()) {
            // Kafka reports a key given twice as the entity given twice.
            return Err(invalid(format!(
                "Ignoring duplicate entity {}",
                kafka_name(entity)
            )));
        }
        wanted.insert(op.key.as_str(), (!op.remove).then_some(op.value));
    }
    if let Some((t, _)) = entity.0.iter().find(|(_, n)| n.as_deref() == Some("")) {
        return Err(invalid(format!("Empty {} not supported", t.wire_name())));
    }
    let allowed = entity.allowed_keys(|_| host_resolves).map_err(invalid)?;
    let mut changes = Vec::new();
    for (key, value) in wanted {
        let existing = current.and_then(|values| values.get(key));
        match value {
            None => {
                if existing.is_some() {
                    changes.push(QuotaChange {
                        entity: entity.clone(),
                        key: key.to_string(),
                        value: None,
                    });
                }
            }
            Some(value) => {
                quota::validate(allowed, key, value).map_err(invalid)?;
                if existing != Some(&QuotaValue(value)) {
                    changes.push(QuotaChange {
                        entity: entity.clone(),
                        key: key.to_string(),
                        value: Some(QuotaValue(value)),
                    });
                }
            }
        }
    }
    Ok(changes)
}

/// One entity of an AlterClientQuotas request: as the client named it, as parsed, and what
/// became of it.
struct EntryOutcome {
    wire: Vec<(String, Option<String>)>,
    entity: QuotaEntity,
    outcome: Result<(), ApiError>,
}

pub(super) async fn alter(
    broker: &Broker,
    context: &RequestContext,
    request: AlterClientQuotasRequest,
) -> AlterClientQuotasResponse {
    // Entities in the order they first appear, each with its outcome.
    let mut results: Vec<EntryOutcome> = Vec::new();
    let mut changes = Vec::new();
    let authorized = context.allowed_on_cluster(broker, Operation::AlterConfigs);
    let image = broker.image();
    for entry in &request.entries {
        let wire: Vec<(String, Option<String>)> = entry
            .entity
            .iter()
            .map(|e| {
                (
                    e.entity_type.to_string(),
                    e.entity_name.as_ref().map(|n| n.to_string()),
                )
            })
            .collect();
        let parsed: Result<QuotaEntity, ApiError> = wire
            .iter()
            .map(|(t, n)| {
                EntityType::from_wire(t)
                    .map(|t| (t, n.clone()))
                    .ok_or_else(|| {
                        ApiError::new(
                            ResponseError::InvalidRequest,
                            format!("Unhandled client quota entity type: {t}"),
                        )
                    })
            })
            .collect::<Result<BTreeMap<_, _>, _>>()
            .map(QuotaEntity);
        let key = parsed.clone().unwrap_or_default();
        let outcome = if !authorized {
            Err(ApiError::new(
                ResponseError::ClusterAuthorizationFailed,
                format!("{} may not alter the cluster's quotas", context.principal),
            ))
        } else if results
            .iter()
            .any(|r| r.wire == wire || (parsed.is_ok() && r.entity == key))
        {
            Err(ApiError::new(
                ResponseError::InvalidRequest,
                format!("Ignoring duplicate entity {}", kafka_name(&key)),
            ))
        } else {
            match parsed {
                Ok(entity) => {
                    let host = resolvable(&entity).await;
                    check_entry(
                        &entity,
                        &entry.ops,
                        host,
                        image.client_quotas.0.get(&entity),
                    )
                    .map(|mut entity_changes| changes.append(&mut entity_changes))
                }
                Err(e) => Err(e),
            }
        };
        match results.iter_mut().find(|r| r.wire == wire) {
            Some(existing) => existing.outcome = outcome,
            None => results.push(EntryOutcome {
                wire,
                entity: key,
                outcome,
            }),
        }
    }
    if !request.validate_only && !changes.is_empty() {
        let refused = match broker
            .quorum
            .propose(MetadataCommand::AlterClientQuotas { changes })
            .await
        {
            Ok(CommandResult::Rejected { reason }) => {
                Some(ApiError::new(ResponseError::InvalidRequest, reason))
            }
            Ok(_) => None,
            Err(e) => Some(ApiError::new(ResponseError::RequestTimedOut, e.to_string())),
        };
        if let Some(refused) = refused {
            for result in &mut results {
                if result.outcome.is_ok() {
                    result.outcome = Err(ApiError::new(refused.code, refused.message.clone()));
                }
            }
        }
    }
    let entries = results
        .into_iter()
        .map(|result| {
            let EntryOutcome {
                wire,
                entity,
                outcome,
            } = result;

            match &outcome {
                Ok(()) if !request.validate_only => {
                    tracing::info!(entity = %entity, "client quotas altered");
                }
                Err(e) => {
                    tracing::info!(entity = %entity, error = %e.message, "client quota change refused");
                }
                Ok(()) => {}
            }
            let (code, message) = match outcome {
                Ok(()) => (0, None),
                Err(e) => (e.code.code(), Some(str_bytes(&e.message))),
            };
            alter_client_quotas_response::EntryData::default()
                .with_error_code(code)
                .with_error_message(message)
                .with_entity(
                    wire.into_iter()
                        .map(|(t, n)| {
                            alter_client_quotas_response::EntityData::default()
                                .with_entity_type(str_bytes(&t))
                                .with_entity_name(n.as_deref().map(str_bytes))
                        })
                        .collect(),
                )
        })
        .collect();
    AlterClientQuotasResponse::default().with_entries(entries)
}
