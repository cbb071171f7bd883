//! DescribeConfigs: the effective settings of topics and of the broker, with their sources.

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::broker::Broker;
use crate::config::{ConfigDef, ConfigSource, BROKER_DEFS, TOPIC_DEFS};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

struct Options {
    synonyms: bool,
    documentation: bool,
    version: i16,
}

pub(super) fn describe(
    broker: &Broker,
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
            let configs = match resource.resource_type {
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
    let mut entry = DescribeConfigsResourceResult::default()
        .with_name(str_bytes(def.name))
        .with_value(value.as_deref().map(str_bytes))
        .with_read_only(read_only)
        .with_config_source(source.code());
    if options.version >= 3 {
        entry = entry.with_config_type(def.ty.code());
        if options.documentation {
            entry = entry.with_documentation(Some(str_bytes(def.doc)));
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
                for (broker_key, _) in def.broker_synonyms {
                    if let Some(v) = broker.config.explicit(broker_key) {
                        synonyms.push(synonym(
                            broker_key,
                            Some(v.to_string()),
                            ConfigSource::StaticBroker,
                        ));
                    }
                }
                if let Some((first, _)) = def.broker_synonyms.first() {
                    let default = crate::config::broker_def(first).and_then(|d| d.default);
                    let value = default
                        .map(str::to_string)
                        .or_else(|| def.def.default.map(str::to_string));
                    synonyms.push(synonym(first, value, ConfigSource::Default));
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
    Ok(BROKER_DEFS
        .iter()
        .filter(|def| wanted(def.name))
        .map(|def| {
            let explicit = broker.config.explicit(def.name).map(str::to_string);
            let source = if explicit.is_some() {
                ConfigSource::StaticBroker
            } else {
                ConfigSource::Default
            };
            let value = explicit.clone().or_else(|| broker.config.value(def.name));
            let mut result = entry(def, value.clone(), source, true, options);
            if options.synonyms {
                let mut synonyms = Vec::new();
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
            result
        })
        .collect())
}

fn synonym(name: &str, value: Option<String>, source: ConfigSource) -> DescribeConfigsSynonym {
    DescribeConfigsSynonym::default()
        .with_name(str_bytes(name))
        .with_value(value.as_deref().map(str_bytes))
        .with_source(source.code())
}
