//! DescribeConfigs: the effective settings of topics and of the broker, with their sources,
//! types and read-only flags as Kafka reports them (secrets hidden).
//! AlterConfigs and IncrementalAlterConfigs: topic overrides, and the broker's dynamic
//! settings (see `config::dynamic`) on the BROKER resource named by this broker's node id or
//! on the cluster-wide default. Settings Kafka does not change at run time are read-only.

use std::collections::BTreeMap;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse as IncrementalAlterConfigsResourceResponse;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::ResponseError;

use super::{str_bytes, RequestContext};
use crate::broker::Broker;
use crate::config::dynamic;
use crate::config::{ConfigDef, ConfigSource, BROKER_DEFS, TOPIC_DEFS};
use crate::controller::image::BROKER_DEFAULTS;
use crate::security::authorizer::{Operation, ResourceType};

/// Broker settings Kafka describes only when they have a value: its dynamic-only quota
/// settings and the authorizer's own. (`follower.replication.throttled.rate`, which Oxbow
/// also takes from `server.properties`, is always described, with its default of -1.)
const DESCRIBED_WHEN_SET: &[&str] = &[
    "leader.replication.throttled.rate",
    "replica.alter.log.dirs.io.max.bytes.per.second",
    "super.users",
    "allow.everyone.if.no.acl.found",
];

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

struct Options {
    synonyms: bool,
    documentation: bool,
    version: i16,
}

/// Whether the principal may perform `operation` (DESCRIBE_CONFIGS or ALTER_CONFIGS) on a
/// topic's or the broker's settings; the broker's belong to the cluster resource.
fn authorize(
    broker: &Broker,
    context: &RequestContext,
    operation: Operation,
    resource_type: i8,
    name: &str,
) -> Result<(), Failure> {
    let (allowed, code) = match resource_type {
        RESOURCE_TOPIC => (
            context.allowed(broker, operation, ResourceType::Topic, name),
            ResponseError::TopicAuthorizationFailed,
        ),
        RESOURCE_BROKER => (
            context.allowed_on_cluster(broker, operation),
            ResponseError::ClusterAuthorizationFailed,
        ),
        _ => return Ok(()),
    };
    if allowed {
        Ok(())
    } else {
        Err((
            code,
            format!("{} may not {operation:?} `{name}`", context.principal),
        ))
    }
}

pub(super) fn describe(
    broker: &Broker,
    context: &RequestContext,
    request: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let options = Options {
        synonyms: request.include_synonyms,
        documentation: request.include_documentation,
        version,
    };
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let name = resource.resource_name.to_string();
            let keys: Option<Vec<String>> = resource
                .configuration_keys
                .map(|keys| keys.iter().map(|k| k.to_string()).collect());
            let wanted = |key: &str| {
                keys.as_ref()
                    .is_none_or(|keys| keys.iter().any(|k| k == key))
            };
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            let authorized = authorize(
                broker,
                context,
                Operation::DescribeConfigs,
                resource.resource_type,
                &name,
            );
            let configs = match resource.resource_type {
                _ if authorized.is_err() => authorized.map(|()| Vec::new()),
                RESOURCE_TOPIC => topic_configs(broker, &name, &options, &wanted),
                RESOURCE_BROKER => broker_configs(broker, &name, &options, &wanted),
                other => Err((
                    ResponseError::InvalidRequest,
                    format!("resource type {other} is not supported; use 2 (topic) or 4 (broker)"),
                )),
            };
            match configs {
                Ok(configs) => result.with_configs(configs),
                Err((code, message)) => result
                    .with_error_code(code.code())
                    .with_error_message(Some(str_bytes(&message))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

type Failure = (ResponseError, String);

fn entry(
    def: &ConfigDef,
    value: Option<String>,
    source: ConfigSource,
    read_only: bool,
    options: &Options,
) -> DescribeConfigsResourceResult {
    let value = if def.is_sensitive() { None } else { value };
    let mut entry = DescribeConfigsResourceResult::default()
        .with_name(str_bytes(def.name))
        .with_value(value.as_deref().map(str_bytes))
        .with_read_only(read_only)
        .with_is_sensitive(def.is_sensitive())
        .with_config_source(source.code());
    if options.version >= 3 {
        entry = entry.with_config_type(def.ty.code());
        if options.documentation {
            entry = entry.with_documentation(Some(str_bytes(&def.documentation())));
        }
    }
    entry
}

fn topic_configs(
    broker: &Broker,
    name: &str,
    options: &Options,
    wanted: &dyn Fn(&str) -> bool,
) -> Result<Vec<DescribeConfigsResourceResult>, Failure> {
    let topic = broker.topic(name).ok_or_else(|| {
        (
            ResponseError::UnknownTopicOrPartition,
            format!("topic `{name}` does not exist"),
        )
    })?;
    Ok(TOPIC_DEFS
        .iter()
        .filter(|def| wanted(def.def.name))
        // Kafka lists an internal setting only where the topic sets it.
        .filter(|def| !def.def.internal || topic.configs.contains_key(def.def.name))
        .map(|def| {
            let override_value = topic.configs.get(def.def.name).cloned();
            let (value, source) = match &override_value {
                Some(v) => (v.clone(), ConfigSource::Topic),
                None => broker.config.topic_default(def),
            };
            let mut result = entry(&def.def, Some(value), source, false, options);
            if options.synonyms {
                let mut synonyms = Vec::new();
                if let Some(v) = override_value {
                    synonyms.push(synonym(def.def.name, Some(v), ConfigSource::Topic));
                }
                // Kafka's order: each source in turn (static, then default) over the broker
                // names in order, then everything before the first name's own entry dropped
                // (so `retention.ms`, whose default lives on `log.retention.hours`, lists no
                // default, as on Kafka).
                let mut broker_side = Vec::new();
                for (broker_key, _) in def.broker_synonyms {
                    if let Some(v) = broker.config.explicit(broker_key) {
                        broker_side.push(synonym(
                            broker_key,
                            Some(v.to_string()),
                            ConfigSource::StaticBroker,
                        ));
                    }
                }
                for (broker_key, _) in def.broker_synonyms {
                    if let Some(default) =
                        crate::config::broker_def(broker_key).and_then(|d| d.default)
                    {
                        broker_side.push(synonym(
                            broker_key,
                            Some(default.to_string()),
                            ConfigSource::Default,
                        ));
                    }
                }
                if let Some((first, _)) = def.broker_synonyms.first() {
                    let own = broker_side
                        .iter()
                        .position(|s| s.name.as_str() == *first)
                        .unwrap_or(broker_side.len());
                    synonyms.extend(broker_side.drain(own..));
                }
                result = result.with_synonyms(synonyms);
            }
            result
        })
        .collect())
}

fn broker_configs(
    broker: &Broker,
    name: &str,
    options: &Options,
    wanted: &dyn Fn(&str) -> bool,
) -> Result<Vec<DescribeConfigsResourceResult>, Failure> {
    if !name.is_empty() && name.parse::<i32>().ok() != Some(broker.node_id()) {
        return Err((
            ResponseError::InvalidRequest,
            format!("broker `{name}` is not this broker ({})", broker.node_id()),
        ));
    }
    let image = broker.image();
    let defaults = image.broker_configs.get(&BROKER_DEFAULTS);
    if name.is_empty() {
        // The cluster-wide defaults, as Kafka describes its default BROKER resource: only the
        // settings that have one.
        return Ok(BROKER_DEFS
            .iter()
            .filter(|def| wanted(def.name))
            .filter_map(|def| {
                let value = defaults.and_then(|d| d.get(def.name))?;
                let mut result = entry(
                    def,
                    Some(value.clone()),
                    ConfigSource::DynamicDefaultBroker,
                    false,
                    options,
                );
                if options.synonyms {
                    result = result.with_synonyms(vec![synonym(
                        def.name,
                        Some(value.clone()),
                        ConfigSource::DynamicDefaultBroker,
                    )]);
                }
                Some(result)
            })
            .collect());
    }
    let own = image.broker_configs.get(&broker.node_id());
    Ok(BROKER_DEFS
        .iter()
        .filter(|def| wanted(def.name))
        .filter_map(|def| {
            let dynamic = own.and_then(|o| o.get(def.name)).cloned();
            let default = defaults.and_then(|d| d.get(def.name)).cloned();
            let explicit = broker.config.explicit(def.name).map(str::to_string);
            if DESCRIBED_WHEN_SET.contains(&def.name)
                && dynamic.is_none()
                && default.is_none()
                && explicit.is_none()
            {
                return None;
            }
            let source = if dynamic.is_some() {
                ConfigSource::DynamicBroker
            } else if default.is_some() {
                ConfigSource::DynamicDefaultBroker
            } else if explicit.is_some() {
                ConfigSource::StaticBroker
            } else {
                ConfigSource::Default
            };
            let value = dynamic
                .clone()
                .or_else(|| default.clone())
                .or_else(|| explicit.clone())
                .or_else(|| broker.config.value(def.name));
            let read_only = !def.dynamic;
            let mut result = entry(def, value.clone(), source, read_only, options);
            if options.synonyms {
                let mut synonyms = Vec::new();
                if let Some(v) = dynamic {
                    synonyms.push(synonym(def.name, Some(v), ConfigSource::DynamicBroker));
                }
                if let Some(v) = default {
                    synonyms.push(synonym(
                        def.name,
                        Some(v),
                        ConfigSource::DynamicDefaultBroker,
                    ));
                }
                if let Some(v) = explicit {
                    synonyms.push(synonym(def.name, Some(v), ConfigSource::StaticBroker));
                }
                if let Some(default) = def.default {
                    synonyms.push(synonym(
                        def.name,
                        Some(default.to_string()),
                        ConfigSource::Default,
                    ));
                }
                result = result.with_synonyms(synonyms);
            }
            Some(result)
        })
        .collect())
}

fn synonym(name: &str, value: Option<String>, source: ConfigSource) -> DescribeConfigsSynonym {
    let secret = crate::config::broker_def(name).is_some_and(ConfigDef::is_sensitive);
    let value = if secret { None } else { value };
    DescribeConfigsSynonym::default()
        .with_name(str_bytes(name))
        .with_value(value.as_deref().map(str_bytes))
        .with_source(source.code())
}

/// An incremental change to one setting (IncrementalAlterConfigs operations).
enum Change {
    Set(String),
    Delete,
    Append(String),
    Subtract(String),
}

/// The topic's overrides after `changes`; AlterConfigs replaces them all (`replace`).
fn changed_overrides(
    broker: &Broker,
    name: &str,
    changes: Vec<(String, Change)>,
    replace: bool,
) -> Result<BTreeMap<String, String>, Failure> {
    let topic = broker.topic(name).ok_or_else(|| {
        (
            ResponseError::UnknownTopicOrPartition,
            format!("topic `{name}` does not exist"),
        )
    })?;
    let mut overrides = if replace {
        Default::default()
    } else {
        topic.configs.clone()
    };
    for (key, change) in changes {
        let def = crate::config::topic_def(&key).ok_or_else(|| {
            (
                ResponseError::InvalidConfig,
                format!("unknown topic setting `{key}`"),
            )
        })?;
        let current = || {
            overrides
                .get(&key)
                .cloned()
                .unwrap_or_else(|| broker.config.topic_default(def).0)
        };
        let list = |value: &str| -> Vec<String> {
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        };
        let is_list = def.def.ty == crate::config::ConfigType::List;
        match change {
            Change::Set(value) => {
                overrides.insert(key, value);
            }
            Change::Delete => {
                overrides.remove(&key);
            }
            Change::Append(_) | Change::Subtract(_) if !is_list => {
                return Err((
                    ResponseError::InvalidConfig,
                    format!("`{key}` is not a list: only SET and DELETE apply"),
                ));
            }
            Change::Append(value) => {
                let mut items = list(&current());
                for item in list(&value) {
                    if !items.contains(&item) {
                        items.push(item);
                    }
                }
                overrides.insert(key, items.join(","));
            }
            Change::Subtract(value) => {
                let remove = list(&value);
                let items: Vec<String> = list(&current())
                    .into_iter()
                    .filter(|i| !remove.contains(i))
                    .collect();
                overrides.insert(key, items.join(","));
            }
        }
    }
    Ok(overrides)
}

/// Commits the overrides a change computed, unless it failed already.
async fn apply_overrides(
    broker: &Broker,
    name: &str,
    overrides: Result<BTreeMap<String, String>, Failure>,
    validate_only: bool,
) -> Result<(), Failure> {
    broker
        .alter_topic_configs(name, overrides?, validate_only)
        .await
        .map_err(|e| (e.code, e.message))
}

fn alter_result(
    resource_type: i8,
    resource_name: &kafka_protocol::protocol::StrBytes,
    outcome: Result<(), Failure>,
) -> (
    i16,
    Option<kafka_protocol::protocol::StrBytes>,
    i8,
    kafka_protocol::protocol::StrBytes,
) {
    match outcome {
        Ok(()) => (0, None, resource_type, resource_name.clone()),
        Err((code, message)) => {
            tracing::info!(resource = %resource_name.as_str(), %message, "config change refused");
            (
                code.code(),
                Some(str_bytes(&message)),
                resource_type,
                resource_name.clone(),
            )
        }
    }
}

fn check_resource(resource_type: i8) -> Result<(), Failure> {
    match resource_type {
        RESOURCE_TOPIC | RESOURCE_BROKER => Ok(()),
        other => Err((
            ResponseError::InvalidRequest,
            format!("resource type {other} is not supported; use 2 (topic) or 4 (broker)"),
        )),
    }
}

/// Changes this broker's dynamic settings, or with an empty name the cluster-wide defaults
/// (`replace` for AlterConfigs). A broker's own settings are changed only through that broker;
/// the defaults through any. Read-only settings are refused with INVALID_REQUEST, unknown ones
/// and bad values with INVALID_CONFIG, and nothing applies unless every change is valid.
async fn alter_broker(
    broker: &Broker,
    name: &str,
    changes: Vec<(String, Change)>,
    replace: bool,
    validate_only: bool,
) -> Result<(), Failure> {
    let target = if name.is_empty() {
        BROKER_DEFAULTS
    } else {
        broker.node_id()
    };
    if !name.is_empty() && name.parse::<i32>().ok() != Some(broker.node_id()) {
        return Err((
            ResponseError::InvalidRequest,
            format!(
                "broker `{name}` is not this broker ({}): send the change to that broker",
                broker.node_id()
            ),
        ));
    }
    let mut values = Vec::with_capacity(changes.len());
    for (key, change) in changes {
        let value = match change {
            Change::Set(value) => Some(value),
            Change::Delete => None,
            Change::Append(_) | Change::Subtract(_) => {
                return Err((
                    ResponseError::InvalidConfig,
                    format!("`{key}` is not a list: only SET and DELETE apply"),
                ))
            }
        };
        values.push((key, value));
    }
    let image = broker.image();
    let changed = dynamic::changed(image.broker_configs.get(&target), &values, replace).map_err(
        |refused| {
            let code = if refused.read_only {
                ResponseError::InvalidRequest
            } else {
                ResponseError::InvalidConfig
            };
            (code, refused.message)
        },
    )?;
    if !validate_only {
        broker
            .set_dynamic_configs(target, changed)
            .await
            .map_err(|e| (e.code, e.message))?;
    }
    Ok(())
}

/// Applies the changes to a topic's overrides or to the broker's dynamic settings.
async fn apply_changes(
    broker: &Broker,
    resource_type: i8,
    name: &str,
    changes: Result<Vec<(String, Change)>, Failure>,
    replace: bool,
    validate_only: bool,
) -> Result<(), Failure> {
    let changes = changes?;
    if resource_type == RESOURCE_BROKER {
        return alter_broker(broker, name, changes, replace, validate_only).await;
    }
    let overrides = changed_overrides(broker, name, changes, replace);
    apply_overrides(broker, name, overrides, validate_only).await
}

pub(super) async fn alter(
    broker: &Broker,
    context: &RequestContext,
    request: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in &request.resources {
        let name = resource.resource_name.as_str();
        let changes = authorize(
            broker,
            context,
            Operation::AlterConfigs,
            resource.resource_type,
            name,
        )
        .and_then(|()| check_resource(resource.resource_type))
        .map(|()| {
            resource
                .configs
                .iter()
                .map(|config| {
                    let change = match &config.value {
                        Some(value) => Change::Set(value.to_string()),
                        None => Change::Delete,
                    };
                    (config.name.to_string(), change)
                })
                .collect()
        });
        let outcome = apply_changes(
            broker,
            resource.resource_type,
            name,
            changes,
            true,
            request.validate_only,
        )
        .await;
        let (code, message, resource_type, name) =
            alter_result(resource.resource_type, &resource.resource_name, outcome);
        responses.push(
            AlterConfigsResourceResponse::default()
                .with_error_code(code)
                .with_error_message(message)
                .with_resource_type(resource_type)
                .with_resource_name(name),
        );
    }
    AlterConfigsResponse::default().with_responses(responses)
}

pub(super) async fn incremental_alter(
    broker: &Broker,
    context: &RequestContext,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in &request.resources {
        let name = resource.resource_name.as_str();
        let changes = authorize(
            broker,
            context,
            Operation::AlterConfigs,
            resource.resource_type,
            name,
        )
        .and_then(|()| check_resource(resource.resource_type))
        .and_then(|()| {
            let mut changes = Vec::new();
            for config in &resource.configs {
                let value = config.value.as_ref().map(|v| v.to_string());
                let change = match (config.config_operation, value) {
                    (0, Some(v)) => Change::Set(v),
                    (1, _) => Change::Delete,
                    (2, Some(v)) => Change::Append(v),
                    (3, Some(v)) => Change::Subtract(v),
                    (op, _) => {
                        return Err((
                            ResponseError::InvalidRequest,
                            format!(
                                "operation {op} on `{}` needs a value or is unknown",
                                config.name.as_str()
                            ),
                        ))
                    }
                };
                changes.push((config.name.to_string(), change));
            }
            Ok(changes)
        });
        let outcome = apply_changes(
            broker,
            resource.resource_type,
            name,
            changes,
            false,
            request.validate_only,
        )
        .await;
        let (code, message, resource_type, name) =
            alter_result(resource.resource_type, &resource.resource_name, outcome);
        responses.push(
            IncrementalAlterConfigsResourceResponse::default()
                .with_error_code(code)
                .with_error_message(message)
                .with_resource_type(resource_type)
                .with_resource_name(name),
        );
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
