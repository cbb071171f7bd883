//! Broker and topic configuration under Kafka's own names: parsing, validation, defaults and
//! the effective value of every topic setting.

pub mod defs;
pub mod dynamic;
pub(crate) mod properties;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::security::mapping::PrincipalMapping;
use crate::security::sasl::{
    is_listener_jaas_key, jaas_credentials, listener_jaas_key, InterBrokerSasl, SaslMechanism,
};
use crate::security::tls::{ClientAuth, TlsSettings};
use crate::security::SecurityProtocol;

pub use defs::{broker_def, topic_def, ConfigDef, ConfigType, TopicDef, BROKER_DEFS, TOPIC_DEFS};

/// Why a configuration was refused.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}:{line}: {message}")]
    Syntax {
        origin: String,
        line: usize,
        message: String,
    },
    #[error("unknown setting `{key}`")]
    Unknown { key: String },
    #[error("invalid value `{value}` for `{key}`: expected {expected}")]
    Invalid {
        key: String,
        value: String,
        expected: String,
    },
    #[error("`{key}` is not set, and {reason}")]
    Missing { key: String, reason: String },
    /// A setting of a configuration file was refused: the file, the line, and why.
    #[error("{}:{line}: {source}", path.display())]
    InFile {
        path: PathBuf,
        line: usize,
        source: Box<ConfigError>,
    },
}

impl ConfigError {
    /// The setting the error is about, when it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Unknown { key }
            | ConfigError::Invalid { key, .. }
            | ConfigError::Missing { key, .. } => Some(key),
            ConfigError::InFile { source, .. } => source.key(),
            ConfigError::Read { .. } | ConfigError::Syntax { .. } => None,
        }
    }
}

/// One listener: a name (`PLAINTEXT`) and the host and port it binds or advertises.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Listener {
    pub name: String,
    pub host: String,
    pub port: u16,
}

impl Listener {
    /// Parses `NAME://host:port`, or a bare `host:port` taken as PLAINTEXT.
    pub fn parse(key: &str, text: &str) -> Result<Listener, ConfigError> {
        let invalid = |expected: &str| ConfigError::Invalid {
            key: key.to_string(),
            value: text.to_string(),
            expected: expected.to_string(),
        };
        let (name, rest) = match text.split_once("://") {
            Some((name, rest)) => (name.to_string(), rest),
            None => ("PLAINTEXT".to_string(), text),
        };
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| invalid("NAME://host:port"))?;
        let port = port
            .parse::<u16>()
            .map_err(|_| invalid("a port between 0 and 65535"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Ok(Listener { name, host, port })
    }

    /// The address to bind: an empty host means every interface, as in Kafka.
    pub fn bind_address(&self) -> String {
        let host = if self.host.is_empty() {
            "0.0.0.0"
        } else {
            self.host.as_str()
        };
        if host.contains(':') {
            format!("[{host}]:{}", self.port)
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// A client listener and the security protocol `listener.security.protocol.map` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientListener {
    pub listener: Listener,
    pub protocol: SecurityProtocol,
}

/// The broker's configuration, resolved and validated once at start.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub node_id: i32,
    /// Whether `process.roles` has `broker`: the node hosts partitions and serves clients. A
    /// controller-only node (`process.roles=controller`) votes in the metadata quorum and
    /// runs the controller when elected, and nothing else.
    pub is_broker: bool,
    /// The inter-broker listener (`inter.broker.listener.name`): the address registered for
    /// replication; on a controller-only node, its controller listener.
    pub listener: Listener,
    /// The configured advertised address of the inter-broker listener; `None` until the
    /// listener is bound: then derived from the bound address.
    pub advertised: Option<Listener>,
    /// Every client listener (the inter-broker one included), in `listeners` order.
    pub listeners: Vec<ClientListener>,
    /// `advertised.listeners`, by listener name; a listener missing here advertises its
    /// bound address.
    pub advertised_listeners: Vec<Listener>,
    /// TLS, SASL and connection limits.
    pub security: SecuritySettings,
    /// The listener for metadata quorum traffic (a name in `controller.listener.names`).
    pub controller_listener: Option<Listener>,
    /// The TLS settings of quorum traffic when the controller listener's protocol is SSL
    /// (`listener.name.controller.ssl.*`, else `ssl.*`), on every node of the cluster.
    pub controller_tls: Option<TlsSettings>,
    /// `controller.quorum.voters`: node id to `host:port`; empty means a standalone broker
    /// that keeps its metadata alone, or a broker that joins through `quorum_bootstrap`. A
    /// standalone first controller of `controller.quorum.bootstrap.servers` is its only voter.
    pub voters: std::collections::BTreeMap<i32, String>,
    /// `controller.quorum.bootstrap.servers`: `host:port` of controllers to join the quorum
    /// through when the voters are not listed.
    pub quorum_bootstrap: Vec<String>,
    /// `broker.rack`, for rack-aware replica placement.
    pub rack: Option<String>,
    /// `replica.lag.time.max.ms`: a follower behind for longer leaves the ISR.
    pub replica_lag_time_max: std::time::Duration,
    /// `log.dir.failure.timeout.ms`: a broker that cannot tell the controller about a failed
    /// log directory for this long shuts down.
    pub log_dir_failure_timeout: std::time::Duration,
    /// `quota.window.num` and `quota.window.size.seconds`: the sampled windows client quotas
    /// are measured over.
    pub quota_window_num: u32,
    pub quota_window_size: std::time::Duration,
    /// `controller.quota.window.num` times `controller.quota.window.size.seconds`: how long a
    /// client's `controller_mutation_rate` may be spent at once.
    pub controller_quota_span: std::time::Duration,
    pub replica_fetch_wait_max_ms: i32,
    pub replica_fetch_max_bytes: i32,
    /// `max.incremental.fetch.session.cache.slots`: fetch sessions kept at most.
    pub fetch_session_slots: usize,
    /// `follower.replication.throttled.rate` from `server.properties`: bytes per second
    /// copied as a follower; a dynamic value in `dynamic` takes its place.
    pub follower_throttle: Option<u64>,
    /// The settings changed at run time (IncrementalAlterConfigs on this broker).
    pub dynamic: dynamic::DynamicSettings,
    /// How often a broker tells the controller it is alive, and how long the controller
    /// waits before fencing one that went quiet.
    pub broker_heartbeat_interval: std::time::Duration,
    pub broker_session_timeout: std::time::Duration,
    pub offsets_topic_replication_factor: i16,
    /// `request.timeout.ms`: the longest an internal request (replica fetch, heartbeat) waits.
    pub request_timeout: std::time::Duration,
    /// `log.dirs` (or `log.dir`): the log directories, in the order given; the first also
    /// holds the cluster metadata.
    pub log_dirs: Vec<PathBuf>,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub auto_create_topics: bool,
    pub delete_topic_enable: bool,
    pub message_max_bytes: i32,
    pub socket_request_max_bytes: usize,
    /// `queued.max.request.bytes`: the bytes of requests all connections may hold at once;
    /// `None` (-1 or 0) is unbounded.
    pub queued_max_request_bytes: Option<usize>,
    pub metrics_address: Option<String>,
    pub offsets_topic_partitions: i32,
    pub offsets_topic_segment_bytes: i32,
    pub group: crate::group::GroupConfig,
    pub txn: crate::txn::TxnConfig,
    /// How often retention runs (`log.retention.check.interval.ms`).
    pub retention_check_interval: std::time::Duration,
    /// Whether compaction runs, and its pause between passes (`log.cleaner.enable`,
    /// `log.cleaner.backoff.ms`).
    pub cleaner_enable: bool,
    pub cleaner_backoff: std::time::Duration,
    /// ACL authorization (`authorizer.class.name`, `super.users`,
    /// `allow.everyone.if.no.acl.found`).
    pub authorizer: crate::security::authorizer::Authorizer,
    /// How this broker authenticates on a SASL inter-broker listener.
    pub inter_broker_sasl: Option<InterBrokerSasl>,
    /// Every setting given explicitly, by Kafka name, for DescribeConfigs and topic defaults.
    explicit: BTreeMap<String, String>,
}

impl BrokerConfig {
    /// Builds the configuration from a properties file (if any) overlaid with explicit
    /// settings (flags and environment), validating every key and value.
    pub fn load(
        file: Option<&Path>,
        overrides: BTreeMap<String, String>,
    ) -> Result<BrokerConfig, ConfigError> {
        let mut file_settings = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                properties::parse(&text, &path.display().to_string())?
            }
            None => properties::Properties::default(),
        };
        // A flag or variable wins over the file: an error about it is not the file's.
        for key in overrides.keys() {
            file_settings.lines.remove(key);
        }
        let lines = file_settings.lines;
        let mut settings = file_settings.values;
        settings.extend(overrides);
        BrokerConfig::from_settings_in_pod(settings, pod_name_from_env().as_deref()).map_err(
            |error| match (file, error.key().and_then(|key| lines.get(key))) {
                (Some(path), Some(line)) => ConfigError::InFile {
                    path: path.to_path_buf(),
                    line: *line,
                    source: Box::new(error),
                },
                _ => error,
            },
        )
    }

    /// Validates settings given by Kafka name and resolves them, with no pod name to derive
    /// `node.id` from.
    pub fn from_settings(settings: BTreeMap<String, String>) -> Result<BrokerConfig, ConfigError> {
        BrokerConfig::from_settings_in_pod(settings, None)
    }

    /// Validates settings given by Kafka name and resolves them. A broker of a cluster
    /// (`controller.quorum.voters` set) without `node.id` takes the ordinal of its StatefulSet
    /// pod name (`pod_name`, `main-2` giving 2), as the operator numbers its brokers; a
    /// standalone broker without it is node 0.
    pub fn from_settings_in_pod(
        settings: BTreeMap<String, String>,
        pod_name: Option<&str>,
    ) -> Result<BrokerConfig, ConfigError> {
        for (key, value) in &settings {
            if is_listener_jaas_key(key) {
                // The value holds a password: it is checked, never echoed.
                jaas_credentials(value).map_err(|reason| ConfigError::Invalid {
                    key: key.clone(),
                    value: "(hidden)".to_string(),
                    expected: format!("a JAAS login module with username and password ({reason})"),
                })?;
                continue;
            }
            let def = match listener_key(key) {
                Some((_, base_key)) => broker_def(base_key),
                None => broker_def(key),
            }
            .ok_or_else(|| ConfigError::Unknown { key: key.clone() })?;
            // A listener's setting is named as it was given, not by its base key.
            defs::validate(def, value).map_err(|e| match e {
                ConfigError::Invalid {
                    value, expected, ..
                } => ConfigError::Invalid {
                    key: key.clone(),
                    value,
                    expected,
                },
                other => other,
            })?;
        }
        let get = |key: &str| -> String {
            settings
                .get(key)
                .cloned()
                .or_else(|| broker_def(key).and_then(|d| d.default).map(str::to_string))
                .unwrap_or_default()
        };
        let int = |key: &str| -> i64 { get(key).parse::<i64>().unwrap_or_default() };
        let explicit_node_id = settings
            .get("node.id")
            .or_else(|| settings.get("broker.id"))
            .and_then(|v| v.parse::<i32>().ok())
            .filter(|id| *id >= 0);
        let controller_names: Vec<String> = get("controller.listener.names")
            .split(',')
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect();
        let protocols = parse_protocol_map(&get("listener.security.protocol.map"))?;
        let (listeners, controller_listener) = split_listeners(
            "listeners",
            &get("listeners"),
            &controller_names,
            &protocols,
        )?;
        let advertised_listeners = match settings.get("advertised.listeners") {
            Some(text) => {
                let (advertised, _) =
                    split_listeners("advertised.listeners", text, &controller_names, &protocols)?;
                if let Some(unknown) = advertised
                    .iter()
                    .find(|a| !listeners.iter().any(|l| l.listener.name == a.listener.name))
                {
                    return Err(ConfigError::Invalid {
                        key: "advertised.listeners".to_string(),
                        value: text.clone(),
                        expected: format!(
                            "names of client listeners in `listeners` ({} is not one)",
                            unknown.listener.name
                        ),
                    });
                }
                advertised.into_iter().map(|a| a.listener).collect()
            }
            None => Vec::new(),
        };
        let mut voters = parse_voters(&get("controller.quorum.voters"))?;
        let quorum_bootstrap =
            parse_bootstrap_servers(&get("controller.quorum.bootstrap.servers"))?;
        let in_cluster = !voters.is_empty() || !quorum_bootstrap.is_empty();
        let roles: Vec<String> = get("process.roles")
            .split(',')
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
            .collect();
        let invalid_roles = |expected: &str| ConfigError::Invalid {
            key: "process.roles".to_string(),
            value: roles.join(","),
            expected: expected.to_string(),
        };
        let is_broker = roles.iter().any(|r| r == "broker");
        let is_voter = roles.iter().any(|r| r == "controller");
        if !is_broker && !is_voter {
            return Err(invalid_roles("broker, controller, or broker,controller"));
        }
        if !is_broker && !in_cluster {
            return Err(invalid_roles(
                "broker or broker,controller without controller.quorum.voters or controller.quorum.bootstrap.servers (a controller-only node needs a quorum)",
            ));
        }
        // A controller-only node, as in Kafka, listens on its controller listener alone.
        let listener = match (&controller_listener, is_broker) {
            (_, true) => inter_broker_listener(
                &listeners,
                settings
                    .get("inter.broker.listener.name")
                    .map(String::as_str),
            )?,
            (Some(controller), false) if listeners.is_empty() => controller.clone(),
            (_, false) => {
                return Err(ConfigError::Invalid {
                    key: "listeners".to_string(),
                    value: get("listeners"),
                    expected: format!(
                        "only the controller listener ({}) when process.roles=controller",
                        controller_names.join(",")
                    ),
                })
            }
        };
        let advertised = advertised_listeners
            .iter()
            .find(|a| a.name == listener.name)
            .cloned();
        let listener_get = |listener: &str, key: &str| -> String {
            settings
                .get(&format!("listener.name.{}.{key}", listener.to_lowercase()))
                .cloned()
                .unwrap_or_else(|| get(key))
        };
        let mut security = SecuritySettings::from_settings(&get, &listener_get, &listeners)?;
        for client in &listeners {
            let own = |key: &str| {
                settings
                    .get(&format!(
                        "listener.name.{}.{key}",
                        client.listener.name.to_lowercase()
                    ))
                    .cloned()
            };
            let limits = ListenerLimits {
                max_connections: own("max.connections")
                    .and_then(|v| v.parse::<i64>().ok())
                    .filter(|max| *max < i64::from(i32::MAX))
                    .and_then(|max| usize::try_from(max).ok()),
                max_connection_creation_rate: own("max.connection.creation.rate")
                    .and_then(|v| dynamic::connection_creation_rate_value(&v)),
            };
            if limits != ListenerLimits::default() {
                security
                    .listener_limits
                    .insert(client.listener.name.clone(), limits);
            }
        }
        // Quorum traffic uses the first controller listener's protocol, on every node of a
        // cluster: a broker-only node has no controller listener, but connects to the
        // controllers'.
        let controller_protocol = controller_names.first().filter(|_| in_cluster).map(|name| {
            let protocol = protocols
                .get(name)
                .copied()
                .or_else(|| SecurityProtocol::from_name(name));
            (name, protocol)
        });
        let controller_tls = match controller_protocol {
            Some((name, Some(protocol))) if protocol.uses_sasl() => {
                return Err(ConfigError::Invalid {
                    key: "listener.security.protocol.map".to_string(),
                    value: get("listener.security.protocol.map"),
                    expected: format!(
                        "PLAINTEXT or SSL for the controller listener {name} (SASL for quorum traffic is not supported)"
                    ),
                })
            }
            Some((name, Some(protocol))) if protocol.uses_tls() => {
                Some(listener_tls(name, &listener_get)?)
            }
            _ => None,
        };
        let inter_broker_sasl = if !in_cluster || !is_broker {
            // A standalone broker has no other broker to log in to, a controller-only node
            // no inter-broker listener.
            None
        } else {
            inter_broker_sasl(&listeners, &listener, &security, &settings)?
        };
        let derived_node_id = match explicit_node_id {
            None if in_cluster => Some(node_id_from_pod_name(pod_name)?),
            _ => None,
        };
        let node_id = explicit_node_id.or(derived_node_id).unwrap_or(0);
        if voters.is_empty() && is_voter && !quorum_bootstrap.is_empty() {
            voters = standalone_first_controller(
                node_id,
                &quorum_bootstrap,
                controller_listener.as_ref(),
            )?;
        }
        if !voters.is_empty() {
            if is_voter != voters.contains_key(&node_id) {
                return Err(invalid_roles(&format!(
                    "`controller` exactly when node {node_id} is one of controller.quorum.voters"
                )));
            }
            if is_voter && controller_listener.is_none() {
                return Err(ConfigError::Invalid {
                    key: "listeners".to_string(),
                    value: get("listeners"),
                    expected: format!(
                        "a listener named in controller.listener.names ({}) for quorum traffic",
                        controller_names.join(",")
                    ),
                });
            }
        }
        let rack = settings
            .get("broker.rack")
            .cloned()
            .filter(|r| !r.is_empty());
        let log_dirs = parse_log_dirs(
            settings
                .get("log.dirs")
                .or_else(|| settings.get("log.dir"))
                .cloned()
                .unwrap_or_else(|| get("log.dirs")),
        )?;
        let metrics = get("metrics.address");
        Ok(BrokerConfig {
            node_id,
            is_broker,
            listener,
            advertised,
            listeners,
            advertised_listeners,
            security,
            controller_listener,
            controller_tls,
            voters,
            quorum_bootstrap,
            rack,
            replica_lag_time_max: millis(int("replica.lag.time.max.ms")),
            log_dir_failure_timeout: millis(int("log.dir.failure.timeout.ms")),
            quota_window_num: u32::try_from(int("quota.window.num")).unwrap_or(11),
            quota_window_size: std::time::Duration::from_secs(
                u64::try_from(int("quota.window.size.seconds")).unwrap_or(1),
            ),
            controller_quota_span: std::time::Duration::from_secs(
                u64::try_from(int("controller.quota.window.num"))
                    .unwrap_or(11)
                    .saturating_mul(
                        u64::try_from(int("controller.quota.window.size.seconds")).unwrap_or(1),
                    ),
            ),
            replica_fetch_wait_max_ms: int("replica.fetch.wait.max.ms") as i32,
            replica_fetch_max_bytes: int("replica.fetch.max.bytes") as i32,
            fetch_session_slots: usize::try_from(int("max.incremental.fetch.session.cache.slots"))
                .unwrap_or(0),
            follower_throttle: u64::try_from(int("follower.replication.throttled.rate"))
                .ok()
                .filter(|rate| *rate > 0),
            dynamic: dynamic::DynamicSettings::default(),
            broker_heartbeat_interval: millis(int("broker.heartbeat.interval.ms")),
            broker_session_timeout: millis(int("broker.session.timeout.ms")),
            offsets_topic_replication_factor: int("offsets.topic.replication.factor") as i16,
            request_timeout: millis(int("request.timeout.ms")),
            log_dirs,
            num_partitions: int("num.partitions") as i32,
            default_replication_factor: int("default.replication.factor") as i16,
            auto_create_topics: get("auto.create.topics.enable") == "true",
            delete_topic_enable: get("delete.topic.enable") == "true",
            message_max_bytes: int("message.max.bytes") as i32,
            socket_request_max_bytes: int("socket.request.max.bytes") as usize,
            queued_max_request_bytes: usize::try_from(int("queued.max.request.bytes"))
                .ok()
                .filter(|bytes| *bytes > 0),
            metrics_address: (!metrics.is_empty()).then_some(metrics),
            offsets_topic_partitions: int("offsets.topic.num.partitions") as i32,
            offsets_topic_segment_bytes: int("offsets.topic.segment.bytes") as i32,
            txn: crate::txn::TxnConfig {
                partitions: int("transaction.state.log.num.partitions") as i32,
                replication_factor: int("transaction.state.log.replication.factor") as i16,
                min_isr: int("transaction.state.log.min.isr") as i32,
                segment_bytes: int("transaction.state.log.segment.bytes") as i32,
                max_timeout_ms: int("transaction.max.timeout.ms") as i32,
                abort_interval: millis(int(
                    "transaction.abort.timed.out.transaction.cleanup.interval.ms",
                )),
                expire_interval: millis(int(
                    "transaction.remove.expired.transaction.cleanup.interval.ms",
                )),
                id_expiration_ms: int("transactional.id.expiration.ms"),
                verify_partitions: get("transaction.partition.verification.enable") == "true",
            },
            group: crate::group::GroupConfig {
                initial_rebalance_delay: millis(int("group.initial.rebalance.delay.ms")),
                min_session_timeout: millis(int("group.min.session.timeout.ms")),
                max_session_timeout: millis(int("group.max.session.timeout.ms")),
                offset_metadata_max_bytes: int("offset.metadata.max.bytes") as usize,
            },
            retention_check_interval: millis(int("log.retention.check.interval.ms")),
            cleaner_enable: get("log.cleaner.enable") == "true",
            cleaner_backoff: millis(int("log.cleaner.backoff.ms")),
            authorizer: crate::security::authorizer::Authorizer::from_settings(&get)?,
            inter_broker_sasl,
            explicit: {
                // JAAS settings hold passwords: they are not kept for DescribeConfigs.
                let mut explicit: BTreeMap<String, String> = settings
                    .into_iter()
                    .filter(|(key, _)| !is_listener_jaas_key(key))
                    .collect();
                if let Some(id) = derived_node_id {
                    // Reported by DescribeConfigs as if it were set.
                    explicit.insert("node.id".to_string(), id.to_string());
                }
                // Kafka reports its older name with the same value.
                explicit.insert("broker.id".to_string(), node_id.to_string());
                explicit
            },
        })
    }

    /// Whether this broker is part of a cluster's metadata quorum (a voter or a broker that
    /// joins one), rather than a standalone broker keeping its metadata alone.
    pub fn in_cluster(&self) -> bool {
        !self.voters.is_empty() || !self.quorum_bootstrap.is_empty()
    }

    /// `process.roles` as resolved: what this node does.
    pub fn roles(&self) -> &'static str {
        match (self.is_broker, self.voters.contains_key(&self.node_id)) {
            (false, _) => "controller",
            (true, true) => "broker,controller",
            (true, false) => "broker",
        }
    }

    /// The settings given explicitly that have no effect in Oxbow, each with the reason.
    pub fn without_effect(&self) -> Vec<(&str, &'static str)> {
        self.explicit
            .keys()
            .filter_map(|key| {
                let reason = broker_def(key)?.no_effect?;
                Some((key.as_str(), reason))
            })
            .collect()
    }

    /// The value of a broker setting given explicitly, if any.
    pub fn explicit(&self, key: &str) -> Option<&str> {
        self.explicit.get(key).map(String::as_str)
    }

    /// The effective value of a broker setting: explicit, else its default.
    pub fn value(&self, key: &str) -> Option<String> {
        self.explicit(key)
            .map(str::to_string)
            .or_else(|| broker_def(key).and_then(|d| d.default).map(str::to_string))
    }

    /// The broker-level default of a topic setting: the first explicit broker synonym
    /// (converted to the topic's unit), else the topic setting's own default.
    /// The security protocol of the inter-broker listener.
    pub fn inter_broker_protocol(&self) -> SecurityProtocol {
        self.listeners
            .iter()
            .find(|l| l.listener.name == self.listener.name)
            .map_or(SecurityProtocol::Plaintext, |l| l.protocol)
    }

    pub fn topic_default(&self, def: &TopicDef) -> (String, ConfigSource) {
        for (synonym, factor) in def.broker_synonyms {
            if let Some(value) = self.explicit(synonym) {
                return (scale(value, *factor), ConfigSource::StaticBroker);
            }
        }
        (
            def.def.default.unwrap_or_default().to_string(),
            ConfigSource::Default,
        )
    }

    /// Effective topic settings for a topic with the given overrides.
    pub fn topic_config(&self, overrides: &BTreeMap<String, String>) -> TopicConfig {
        let value = |name: &str| -> String {
            if let Some(v) = overrides.get(name) {
                return v.clone();
            }
            match topic_def(name) {
                Some(def) => self.topic_default(def).0,
                None => String::new(),
            }
        };
        let long = |name: &str| value(name).parse::<i64>().unwrap_or(i64::MAX);
        let level = |name: &str, default: i32| value(name).parse::<i32>().unwrap_or(default);
        TopicConfig {
            // Kafka's test-only internal.segment.bytes, when set, wins over segment.bytes.
            segment_bytes: overrides
                .get("internal.segment.bytes")
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or_else(|| long("segment.bytes"))
                .max(1) as u64,
            segment_ms: u64::try_from(long("segment.ms")).ok(),
            index_interval_bytes: long("index.interval.bytes").clamp(4, i64::from(i32::MAX)) as u32,
            max_message_bytes: long("max.message.bytes").max(0) as usize,
            flush_messages: u64::try_from(long("flush.messages"))
                .unwrap_or(u64::MAX)
                .max(1),
            flush_ms: u64::try_from(long("flush.ms"))
                .ok()
                .filter(|ms| *ms != i64::MAX as u64),
            min_insync_replicas: usize::try_from(long("min.insync.replicas"))
                .unwrap_or(1)
                .max(1),
            unclean_leader_election: value("unclean.leader.election.enable") == "true",
            retention_ms: long("retention.ms"),
            retention_bytes: long("retention.bytes"),
            log_append_time: value("message.timestamp.type") == "LogAppendTime",
            timestamp_before_max_ms: long("message.timestamp.before.max.ms"),
            timestamp_after_max_ms: long("message.timestamp.after.max.ms"),
            // Every value was validated when it was set; a name that still does not parse
            // keeps what the producer sent.
            compression: crate::log::TopicCompression::from_config(
                &value("compression.type"),
                level("compression.gzip.level", -1),
                level("compression.lz4.level", 9),
                level("compression.zstd.level", 3),
            )
            .unwrap_or_default(),
            cleanup_delete: value("cleanup.policy")
                .split(',')
                .any(|p| p.trim() == "delete"),
            cleanup_compact: value("cleanup.policy")
                .split(',')
                .any(|p| p.trim() == "compact"),
            compaction: crate::log::CompactionSettings {
                min_cleanable_dirty_ratio: value("min.cleanable.dirty.ratio")
                    .parse()
                    .unwrap_or(0.5),
                min_compaction_lag_ms: long("min.compaction.lag.ms"),
                delete_retention_ms: long("delete.retention.ms"),
            },
        }
    }
}

fn millis(value: i64) -> std::time::Duration {
    std::time::Duration::from_millis(u64::try_from(value).unwrap_or(0))
}

fn scale(value: &str, factor: i64) -> String {
    match value.parse::<i64>() {
        Ok(n) if factor != 1 && n >= 0 => n.saturating_mul(factor).to_string(),
        _ => value.to_string(),
    }
}

/// Parses `listener.security.protocol.map`: `NAME:PROTOCOL,...`. A listener named after a
/// protocol (`SSL://...`) needs no entry, and a controller listener without one is PLAINTEXT.
fn parse_protocol_map(text: &str) -> Result<BTreeMap<String, SecurityProtocol>, ConfigError> {
    let mut map = BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let protocol = entry
            .split_once(':')
            .and_then(|(name, protocol)| {
                SecurityProtocol::from_name(protocol.trim()).map(|p| (name.trim(), p))
            })
            .filter(|(name, _)| !name.is_empty());
        let Some((name, protocol)) = protocol else {
            return Err(ConfigError::Invalid {
                key: "listener.security.protocol.map".to_string(),
                value: text.to_string(),
                expected: "NAME:PROTOCOL entries, PROTOCOL one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"
                    .to_string(),
            });
        };
        map.insert(name.to_string(), protocol);
    }
    Ok(map)
}

/// Splits a listener list into the client listeners (with their protocols) and the
/// controller listener.
fn split_listeners(
    key: &str,
    text: &str,
    controller_names: &[String],
    protocols: &BTreeMap<String, SecurityProtocol>,
) -> Result<(Vec<ClientListener>, Option<Listener>), ConfigError> {
    let invalid = |expected: String| ConfigError::Invalid {
        key: key.to_string(),
        value: text.to_string(),
        expected,
    };
    let mut clients: Vec<ClientListener> = Vec::new();
    let mut controller: Option<Listener> = None;
    for part in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let listener = Listener::parse(key, part)?;
        let protocol = protocols
            .get(&listener.name)
            .copied()
            .or_else(|| SecurityProtocol::from_name(&listener.name));
        if controller_names.contains(&listener.name) {
            if protocol.is_some_and(SecurityProtocol::uses_sasl) {
                return Err(invalid(format!(
                    "a PLAINTEXT or SSL controller listener ({} is mapped to {}; SASL for quorum traffic is not supported)",
                    listener.name,
                    protocol.map_or("", SecurityProtocol::name)
                )));
            }
            if controller.is_some() {
                return Err(invalid(format!("one {} listener", listener.name)));
            }
            controller = Some(listener);
            continue;
        }
        let Some(protocol) = protocol else {
            return Err(invalid(format!(
                "listener names with a protocol in listener.security.protocol.map ({} has none)",
                listener.name
            )));
        };
        if clients.iter().any(|c| c.listener.name == listener.name) {
            return Err(invalid(format!("one {} listener", listener.name)));
        }
        clients.push(ClientListener { listener, protocol });
    }
    Ok((clients, controller))
}

/// The listener other brokers reach this one on: `inter.broker.listener.name`, or when it is
/// not set the PLAINTEXT listener, else the only client listener.
fn inter_broker_listener(
    listeners: &[ClientListener],
    name: Option<&str>,
) -> Result<Listener, ConfigError> {
    let names = || {
        listeners
            .iter()
            .map(|l| l.listener.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let chosen = match name {
        Some(name) => listeners.iter().find(|l| l.listener.name == name),
        None => listeners
            .iter()
            .find(|l| l.listener.name == "PLAINTEXT")
            .or(match listeners {
                [only] => Some(only),
                _ => None,
            }),
    };
    let Some(chosen) = chosen else {
        return Err(ConfigError::Invalid {
            key: "inter.broker.listener.name".to_string(),
            value: name.unwrap_or("").to_string(),
            expected: if listeners.is_empty() {
                "a client listener in `listeners`".to_string()
            } else {
                format!("one of the client listeners: {}", names())
            },
        });
    };
    Ok(chosen.listener.clone())
}

/// How the broker authenticates on its inter-broker listener when that listener uses SASL:
/// `sasl.mechanism.inter.broker.protocol`, one of `sasl.enabled.mechanisms`, and the username
/// and password of the listener's JAAS setting for that mechanism.
fn inter_broker_sasl(
    listeners: &[ClientListener],
    listener: &Listener,
    security: &SecuritySettings,
    settings: &BTreeMap<String, String>,
) -> Result<Option<InterBrokerSasl>, ConfigError> {
    let uses_sasl = listeners
        .iter()
        .any(|l| l.listener.name == listener.name && l.protocol.uses_sasl());
    if !uses_sasl {
        return Ok(None);
    }
    const KEY: &str = "sasl.mechanism.inter.broker.protocol";
    let name = settings.get(KEY).cloned().unwrap_or_default();
    let mechanism = SaslMechanism::from_name(&name)
        .filter(|m| security.sasl_mechanisms.contains(m))
        .ok_or_else(|| ConfigError::Invalid {
            key: KEY.to_string(),
            value: name.clone(),
            expected: format!(
                "one of sasl.enabled.mechanisms ({}) for the SASL inter-broker listener {}",
                security
                    .sasl_mechanisms
                    .iter()
                    .map(|m| m.name())
                    .collect::<Vec<_>>()
                    .join(", "),
                listener.name
            ),
        })?;
    let jaas_key = listener_jaas_key(&listener.name, mechanism);
    let jaas = settings.get(&jaas_key).ok_or_else(|| ConfigError::Invalid {
        key: jaas_key.clone(),
        value: String::new(),
        expected: format!(
            "the username and password this broker logs in with on {} ({} required username=\"...\" password=\"...\";)",
            listener.name,
            if matches!(mechanism, SaslMechanism::Plain) {
                "org.apache.kafka.common.security.plain.PlainLoginModule"
            } else {
                "org.apache.kafka.common.security.scram.ScramLoginModule"
            }
        ),
    })?;
    let (username, password) = jaas_credentials(jaas).map_err(|reason| ConfigError::Invalid {
        key: jaas_key.clone(),
        value: "(hidden)".to_string(),
        expected: format!("a JAAS login module with username and password ({reason})"),
    })?;
    Ok(Some(InterBrokerSasl {
        mechanism,
        username,
        password,
    }))
}

/// A listener-prefixed TLS setting, `listener.name.<listener>.ssl.<...>`, split into the
/// listener's (lowercase) name and the `ssl.*` key it overrides for that listener.
fn listener_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix("listener.name.")?;
    let (listener, base_key) = rest.split_once('.')?;
    (!listener.is_empty() && (base_key.starts_with("ssl.") || LISTENER_LIMITS.contains(&base_key)))
        .then_some((listener, base_key))
}

/// The connection limits Kafka also takes per listener (`listener.name.<name>.<key>`).
const LISTENER_LIMITS: &[&str] = &["max.connections", "max.connection.creation.rate"];

/// One listener's own connection limits (`listener.name.<name>.max.connections` and
/// `.max.connection.creation.rate`); `None` for none, as in Kafka, whatever the broker-wide
/// values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListenerLimits {
    pub max_connections: Option<usize>,
    pub max_connection_creation_rate: Option<u32>,
}

/// The TLS settings of listener `name`, each from `listener.name.<name>.ssl.*` or else the
/// broker's `ssl.*` (`get` resolves that order).
fn listener_tls(
    name: &str,
    get: &dyn Fn(&str, &str) -> String,
) -> Result<TlsSettings, ConfigError> {
    let prefixed = |key: &str| format!("listener.name.{}.{key}", name.to_lowercase());
    let keystore = get(name, "ssl.keystore.location");
    if keystore.is_empty() {
        return Err(ConfigError::Invalid {
            key: prefixed("ssl.keystore.location"),
            value: String::new(),
            expected: format!(
                "a PEM file with the certificate chain and private key for the {name} listener (or ssl.keystore.location for every TLS listener)"
            ),
        });
    }
    let truststore = get(name, "ssl.truststore.location");
    let rules = get(name, "ssl.principal.mapping.rules");
    let principal_mapping =
        PrincipalMapping::parse(&rules).map_err(|reason| ConfigError::Invalid {
            key: "ssl.principal.mapping.rules".to_string(),
            value: rules.clone(),
            expected: format!("DEFAULT or RULE:pattern/replacement/[LU] rules ({reason})"),
        })?;
    Ok(TlsSettings {
        keystore: PathBuf::from(keystore),
        truststore: (!truststore.is_empty()).then(|| PathBuf::from(truststore)),
        client_auth: ClientAuth::parse(&get(name, "ssl.client.auth")).unwrap_or(ClientAuth::None),
        principal_mapping,
    })
}

/// The settings of TLS, SASL and connection limits, resolved.
#[derive(Debug, Clone)]
pub struct SecuritySettings {
    /// The TLS settings of each SSL and SASL_SSL listener, by listener name: its
    /// `listener.name.<name>.ssl.*` settings, else the broker's `ssl.*` ones.
    pub tls: BTreeMap<String, TlsSettings>,
    /// `sasl.enabled.mechanisms`.
    pub sasl_mechanisms: Vec<SaslMechanism>,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// `max.connection.creation.rate`: new connections a second the broker accepts on all
    /// listeners but the inter-broker one; `None` for no limit (Kafka's default, `i32::MAX`).
    /// A dynamic value takes its place ([`dynamic::connection_creation_rate`]).
    pub max_connection_creation_rate: Option<u32>,
    /// Listeners with connection limits of their own, by name.
    pub listener_limits: BTreeMap<String, ListenerLimits>,
    /// `connections.max.idle.ms`; `None` never closes an idle connection.
    pub idle_timeout: Option<std::time::Duration>,
    /// `connection.failed.authentication.delay.ms`: a failed SASL authentication is answered
    /// only after this long.
    pub failed_authentication_delay: std::time::Duration,
}

impl SecuritySettings {
    fn from_settings(
        get: &dyn Fn(&str) -> String,
        listener_get: &dyn Fn(&str, &str) -> String,
        listeners: &[ClientListener],
    ) -> Result<SecuritySettings, ConfigError> {
        let count = |key: &str| usize::try_from(get(key).parse::<i64>().unwrap_or(0)).unwrap_or(0);
        let mut tls = BTreeMap::new();
        for client in listeners.iter().filter(|l| l.protocol.uses_tls()) {
            let name = client.listener.name.as_str();
            tls.insert(name.to_string(), listener_tls(name, listener_get)?);
        }
        let sasl_mechanisms: Vec<SaslMechanism> = get("sasl.enabled.mechanisms")
            .split(',')
            .filter_map(|m| SaslMechanism::from_name(m.trim()))
            .collect();
        if sasl_mechanisms.is_empty() && listeners.iter().any(|l| l.protocol.uses_sasl()) {
            return Err(ConfigError::Invalid {
                key: "sasl.enabled.mechanisms".to_string(),
                value: get("sasl.enabled.mechanisms"),
                expected: "at least one mechanism for the SASL listeners".to_string(),
            });
        }
        let idle = get("connections.max.idle.ms").parse::<i64>().unwrap_or(-1);
        Ok(SecuritySettings {
            tls,
            sasl_mechanisms,
            max_connections: count("max.connections"),
            listener_limits: BTreeMap::new(),
            max_connections_per_ip: count("max.connections.per.ip"),
            max_connection_creation_rate: dynamic::connection_creation_rate_value(&get(
                "max.connection.creation.rate",
            )),
            idle_timeout: u64::try_from(idle)
                .ok()
                .map(std::time::Duration::from_millis),
            failed_authentication_delay: std::time::Duration::from_millis(
                u64::try_from(
                    get("connection.failed.authentication.delay.ms")
                        .parse::<i64>()
                        .unwrap_or(0),
                )
                .unwrap_or(0),
            ),
        })
    }
}

/// The name to derive `node.id` from when it is not set: the StatefulSet pod's name, from
/// `POD_NAME` (the operator passes it through the downward API), else `HOSTNAME` (a pod's
/// hostname is its name).
pub fn pod_name_from_env() -> Option<String> {
    ["POD_NAME", "HOSTNAME"].iter().find_map(|key| {
        std::env::var(key)
            .ok()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    })
}

/// The ordinal of a StatefulSet pod name: the number after its last `-` (`main-2` is 2).
pub fn pod_ordinal(name: &str) -> Option<i32> {
    let (prefix, ordinal) = name.trim().rsplit_once('-')?;
    if prefix.is_empty() || ordinal.is_empty() || !ordinal.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ordinal.parse().ok()
}

/// `node.id` of a cluster broker that does not set it: its pod's ordinal, unchanged (pod
/// `main-0` is node 0), which is what the operator writes and how it picks the voters (the
/// lowest ordinals).
fn node_id_from_pod_name(pod_name: Option<&str>) -> Result<i32, ConfigError> {
    let missing = |reason: String| ConfigError::Missing {
        key: "node.id".to_string(),
        reason,
    };
    match pod_name {
        Some(name) => pod_ordinal(name).ok_or_else(|| {
            missing(format!(
                "the pod name `{name}` (POD_NAME, else HOSTNAME) does not end in a StatefulSet ordinal (`name-N`) to take it from"
            ))
        }),
        None => Err(missing(
            "there is no StatefulSet pod name (POD_NAME, else HOSTNAME, as `name-N`) to take it from".to_string(),
        )),
    }
}

/// Parses `controller.quorum.bootstrap.servers`: `host:port,host:port,...`.
fn parse_bootstrap_servers(text: &str) -> Result<Vec<String>, ConfigError> {
    let mut servers = Vec::new();
    for part in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let valid = part
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !valid {
            return Err(ConfigError::Invalid {
                key: "controller.quorum.bootstrap.servers".to_string(),
                value: text.to_string(),
                expected: "a comma-separated list of host:port".to_string(),
            });
        }
        servers.push(part.to_string());
    }
    Ok(servers)
}

/// The voters of a controller given `controller.quorum.bootstrap.servers` instead of
/// `controller.quorum.voters`: it is the standalone first controller of its quorum (what
/// `kafka-storage format --standalone` makes of Kafka's own `server.properties`), so the one
/// bootstrap server is its own controller listener and it is the only voter.
fn standalone_first_controller(
    node_id: i32,
    bootstrap: &[String],
    controller: Option<&Listener>,
) -> Result<std::collections::BTreeMap<i32, String>, ConfigError> {
    let port_matches = |address: &str| {
        controller.is_some_and(|listener| {
            address
                .rsplit_once(':')
                .is_some_and(|(_, port)| port.parse::<u16>().ok() == Some(listener.port))
        })
    };
    match bootstrap {
        [own] if port_matches(own) => {
            Ok(std::collections::BTreeMap::from([(node_id, own.clone())]))
        }
        _ => Err(ConfigError::Invalid {
            key: "controller.quorum.bootstrap.servers".to_string(),
            value: bootstrap.join(","),
            expected: "on a controller, its own controller listener alone (a standalone first \
                       controller); a quorum of several controllers is given by \
                       controller.quorum.voters"
                .to_string(),
        }),
    }
}

/// Parses `controller.quorum.voters`: `1@host:9093,2@host:9093,...`.
fn parse_voters(text: &str) -> Result<std::collections::BTreeMap<i32, String>, ConfigError> {
    let mut voters = std::collections::BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let invalid = || ConfigError::Invalid {
            key: "controller.quorum.voters".to_string(),
            value: text.to_string(),
            expected: "a comma-separated list of id@host:port".to_string(),
        };
        let (id, address) = part.split_once('@').ok_or_else(invalid)?;
        let id = id.trim().parse::<i32>().map_err(|_| invalid())?;
        let (_, port) = address.rsplit_once(':').ok_or_else(invalid)?;
        port.parse::<u16>().map_err(|_| invalid())?;
        if voters.insert(id, address.to_string()).is_some() {
            return Err(invalid());
        }
    }
    Ok(voters)
}

/// Where a setting's value comes from, with Kafka's DescribeConfigs codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    Topic,
    DynamicBroker,
    /// A cluster-wide dynamic value (the BROKER resource with an empty name).
    DynamicDefaultBroker,
    StaticBroker,
    Default,
}

impl ConfigSource {
    pub fn code(self) -> i8 {
        match self {
            ConfigSource::Topic => 1,
            ConfigSource::DynamicBroker => 2,
            ConfigSource::DynamicDefaultBroker => 3,
            ConfigSource::StaticBroker => 4,
            ConfigSource::Default => 5,
        }
    }
}

/// Validates topic overrides (CreateTopics configs): every key known, every value valid.
pub fn validate_topic_configs(configs: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    for (key, value) in configs {
        let def = topic_def(key).ok_or_else(|| ConfigError::Unknown { key: key.clone() })?;
        defs::validate(&def.def, value)?;
    }
    Ok(())
}

/// The topic settings the storage engine acts on, resolved from overrides and broker defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicConfig {
    pub segment_bytes: u64,
    pub segment_ms: Option<u64>,
    pub index_interval_bytes: u32,
    pub max_message_bytes: usize,
    /// Records between fsyncs (`flush.messages`); `u64::MAX` leaves syncing to the OS.
    pub flush_messages: u64,
    /// Longest time appended data stays unsynced (`flush.ms`); `None` leaves it to the OS.
    pub flush_ms: Option<u64>,
    /// `message.timestamp.type=LogAppendTime`.
    pub log_append_time: bool,
    /// `message.timestamp.before.max.ms` and `message.timestamp.after.max.ms`.
    pub timestamp_before_max_ms: i64,
    pub timestamp_after_max_ms: i64,
    /// `compression.type` with the level of its codec.
    pub compression: crate::log::TopicCompression,
    /// `min.insync.replicas`: the ISR size an `acks=all` write needs.
    pub min_insync_replicas: usize,
    pub unclean_leader_election: bool,
    /// `retention.ms` and `retention.bytes`; -1 is unlimited.
    pub retention_ms: i64,
    pub retention_bytes: i64,
    /// `cleanup.policy` contains `delete` / `compact`.
    pub cleanup_delete: bool,
    pub cleanup_compact: bool,
    pub compaction: crate::log::CompactionSettings,
}

/// Topic names Kafka accepts: 1-249 characters of ASCII letters, digits, `.`, `_` and `-`,
/// and neither `.` nor `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".to_string());
    }
    if name == "." || name == ".." {
        return Err(format!("topic name `{name}` is not allowed"));
    }
    if name.len() > 249 {
        return Err(format!(
            "topic name is {} characters long; at most 249 are allowed",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic name `{name}` contains `{bad}`; only ASCII letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    Ok(())
}

/// The directories of `log.dirs`: comma-separated, each given once. Blank entries are
/// skipped (Kafka's list parsing), and two entries naming the same path, spelled differently
/// (`/a/b`, `/a/b/`, `/a/./b`), are refused as Kafka refuses a duplicate log directory.
fn parse_log_dirs(value: String) -> Result<Vec<PathBuf>, ConfigError> {
    let invalid = |expected: String| ConfigError::Invalid {
        key: "log.dirs".to_string(),
        value: value.clone(),
        expected,
    };
    let mut dirs: Vec<PathBuf> = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let dir = PathBuf::from(entry);
        let normal = normalize_path(&dir);
        if let Some(same) = dirs.iter().find(|d| normalize_path(d) == normal) {
            return Err(invalid(format!(
                "each directory once (`{entry}` and `{}` are the same directory)",
                same.display()
            )));
        }
        dirs.push(dir);
    }
    if dirs.is_empty() {
        return Err(invalid("at least one directory".to_string()));
    }
    Ok(dirs)
}

/// `path` spelled one way: `.` components and repeated or trailing separators dropped, and
/// `name/..` resolved where `name` is not itself `..`. Symbolic links are not followed
/// (the broker compares the canonical paths when it opens the directories).
pub(crate) fn normalize_path(path: &std::path::Path) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<Component<'_>> = Vec::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir) => {}
                _ => out.push(component),
            },
            other => out.push(other),
        }
    }
    if out.is_empty() {
        return PathBuf::from(".");
    }
    out.iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_embedded_default_listens_on_localhost_9092_with_data_in_data() {
        let config = BrokerConfig::from_settings(BTreeMap::new()).expect("defaults are valid");
        assert_eq!(config.listener.bind_address(), "localhost:9092");
        assert_eq!(config.log_dirs, vec![PathBuf::from("./data")]);
        assert_eq!(config.node_id, 0);
        assert!(config.auto_create_topics);
        assert_eq!(config.socket_request_max_bytes, 100 * 1024 * 1024);
    }

    #[test]
    fn log_dirs_take_several_directories_in_order_from_either_name() {
        let config = BrokerConfig::from_settings(settings(&[("log.dirs", "/d/a, /d/b,,/d/c")]))
            .expect("three directories");
        assert_eq!(
            config.log_dirs,
            vec![
                PathBuf::from("/d/a"),
                PathBuf::from("/d/b"),
                PathBuf::from("/d/c")
            ]
        );
        let config =
            BrokerConfig::from_settings(settings(&[("log.dir", "/old")])).expect("the older name");
        assert_eq!(config.log_dirs, vec![PathBuf::from("/old")]);
        let config =
            BrokerConfig::from_settings(settings(&[("log.dir", "/old"), ("log.dirs", "/new")]))
                .expect("both names");
        assert_eq!(
            config.log_dirs,
            vec![PathBuf::from("/new")],
            "log.dirs wins"
        );
    }

    #[test]
    fn log_dirs_naming_one_directory_twice_or_none_are_refused() {
        for value in [
            "/d/a,/d/a",
            "/d/a,/d/a/",
            "/d/a,/d/./a",
            "/d/a,/d/b/../a",
            "a,./a",
        ] {
            let err =
                BrokerConfig::from_settings(settings(&[("log.dirs", value)])).expect_err(value);
            assert!(
                err.to_string().contains("each directory once"),
                "{value}: {err}"
            );
        }
        for value in ["", " , ,"] {
            let err =
                BrokerConfig::from_settings(settings(&[("log.dirs", value)])).expect_err(value);
            assert!(
                err.to_string().contains("at least one directory"),
                "{value:?}: {err}"
            );
        }
        assert_eq!(
            normalize_path(std::path::Path::new("/../x/")),
            PathBuf::from("/x")
        );
        assert_eq!(
            normalize_path(std::path::Path::new("../x")),
            PathBuf::from("../x")
        );
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let err = BrokerConfig::from_settings(settings(&[("log.retention.dayz", "3")]))
            .expect_err("unknown");
        assert!(err.to_string().contains("log.retention.dayz"), "{err}");
    }

    #[test]
    fn an_invalid_value_is_refused_with_the_expectation() {
        let err = BrokerConfig::from_settings(settings(&[("num.partitions", "zero")]))
            .expect_err("invalid");
        assert!(err.to_string().contains("num.partitions"), "{err}");
        let err =
            BrokerConfig::from_settings(settings(&[("listeners", "SSL://h:1")])).expect_err("ssl");
        assert!(err.to_string().contains("ssl.keystore.location"), "{err}");
    }

    #[test]
    fn broker_retention_hours_become_the_topic_default_in_milliseconds() {
        let config =
            BrokerConfig::from_settings(settings(&[("log.retention.hours", "2")])).expect("valid");
        let def = topic_def("retention.ms").expect("known");
        assert_eq!(
            config.topic_default(def),
            ("7200000".to_string(), ConfigSource::StaticBroker)
        );
        let config = BrokerConfig::from_settings(settings(&[
            ("log.retention.hours", "2"),
            ("log.retention.ms", "5"),
        ]))
        .expect("valid");
        assert_eq!(config.topic_default(def).0, "5");
    }

    #[test]
    fn topic_overrides_win_over_broker_defaults() {
        let config = BrokerConfig::from_settings(settings(&[("log.segment.bytes", "2097152")]))
            .expect("valid");
        assert_eq!(config.topic_config(&BTreeMap::new()).segment_bytes, 2097152);
        let overrides = settings(&[("segment.bytes", "4194304")]);
        assert_eq!(config.topic_config(&overrides).segment_bytes, 4194304);
        let internal = settings(&[
            ("segment.bytes", "4194304"),
            ("internal.segment.bytes", "20000"),
        ]);
        assert_eq!(config.topic_config(&internal).segment_bytes, 20000);
        assert!(BrokerConfig::from_settings(settings(&[("log.segment.bytes", "2048")])).is_err());
    }

    #[test]
    fn topic_names_follow_kafkas_rules() {
        assert!(validate_topic_name("orders.v1_eu-west").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("has space").is_err());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
    }

    #[test]
    fn each_tls_listener_takes_its_listener_prefixed_ssl_settings_over_the_brokers() {
        let config = BrokerConfig::from_settings(settings(&[
            ("listeners", "REPLICATION://:9091,EXTERNAL://:9094"),
            (
                "listener.security.protocol.map",
                "REPLICATION:SSL,EXTERNAL:SSL,CONTROLLER:PLAINTEXT",
            ),
            ("inter.broker.listener.name", "REPLICATION"),
            ("ssl.keystore.location", "/etc/oxbow/user-facing.pem"),
            (
                "listener.name.replication.ssl.keystore.location",
                "/etc/oxbow/cluster-ca-signed.pem",
            ),
            (
                "listener.name.replication.ssl.truststore.location",
                "/etc/oxbow/cluster-ca.crt",
            ),
            ("listener.name.replication.ssl.client.auth", "required"),
        ]))
        .expect("valid");
        let replication = &config.security.tls["REPLICATION"];
        assert_eq!(
            replication.keystore,
            PathBuf::from("/etc/oxbow/cluster-ca-signed.pem")
        );
        assert_eq!(
            replication.truststore.as_deref(),
            Some(Path::new("/etc/oxbow/cluster-ca.crt"))
        );
        assert_eq!(replication.client_auth, ClientAuth::Required);
        let external = &config.security.tls["EXTERNAL"];
        assert_eq!(
            external.keystore,
            PathBuf::from("/etc/oxbow/user-facing.pem")
        );
        assert_eq!(external.truststore, None);
        assert_eq!(external.client_auth, ClientAuth::None);

        let bad_value = BrokerConfig::from_settings(settings(&[
            ("listeners", "SSL://:9094"),
            ("ssl.keystore.location", "/etc/oxbow/broker.pem"),
            ("listener.name.ssl.ssl.client.auth", "sometimes"),
        ]));
        assert!(bad_value.is_err(), "{bad_value:?}");
        let unknown = BrokerConfig::from_settings(settings(&[(
            "listener.name.ssl.ssl.no.such.setting",
            "x",
        )]));
        assert!(
            matches!(unknown, Err(ConfigError::Unknown { .. })),
            "{unknown:?}"
        );
        let missing = BrokerConfig::from_settings(settings(&[
            ("listeners", "PLAINTEXT://:9092,SSL://:9094"),
            ("listener.name.plaintext.ssl.keystore.location", "/x.pem"),
        ]))
        .expect_err("the SSL listener has no key store");
        assert!(
            missing
                .to_string()
                .contains("listener.name.ssl.ssl.keystore.location"),
            "{missing}"
        );
    }

    #[test]
    fn named_listeners_take_their_protocol_from_the_map() {
        let config = BrokerConfig::from_settings(settings(&[
            (
                "listeners",
                "INTERNAL://127.0.0.1:9092,EXTERNAL://:9094,CONTROLLER://127.0.0.1:9093",
            ),
            (
                "listener.security.protocol.map",
                "INTERNAL:PLAINTEXT,EXTERNAL:SASL_SSL,CONTROLLER:PLAINTEXT",
            ),
            ("advertised.listeners", "EXTERNAL://kafka.example.com:443"),
            ("inter.broker.listener.name", "INTERNAL"),
            ("ssl.keystore.location", "/etc/oxbow/broker.pem"),
            ("sasl.enabled.mechanisms", "SCRAM-SHA-512"),
        ]))
        .expect("valid");
        let protocols: Vec<(&str, SecurityProtocol)> = config
            .listeners
            .iter()
            .map(|l| (l.listener.name.as_str(), l.protocol))
            .collect();
        assert_eq!(
            protocols,
            [
                ("INTERNAL", SecurityProtocol::Plaintext),
                ("EXTERNAL", SecurityProtocol::SaslSsl)
            ]
        );
        assert_eq!(config.listener.name, "INTERNAL");
        assert_eq!(config.advertised, None);
        assert_eq!(config.advertised_listeners[0].host, "kafka.example.com");
        assert_eq!(config.controller_listener.expect("controller").port, 9093);
        let tls = config
            .security
            .tls
            .get("EXTERNAL")
            .expect("a TLS listener needs TLS settings");
        assert_eq!(tls.keystore, PathBuf::from("/etc/oxbow/broker.pem"));
        assert_eq!(
            config.security.sasl_mechanisms,
            [SaslMechanism::Scram(
                crate::security::scram::ScramMechanism::Sha512
            )]
        );
    }

    #[test]
    fn listeners_named_after_a_protocol_need_no_map_entry() {
        let config = BrokerConfig::from_settings(settings(&[(
            "listeners",
            "SASL_PLAINTEXT://127.0.0.1:9095,PLAINTEXT://127.0.0.1:9092",
        )]))
        .expect("valid");
        assert_eq!(config.listeners.len(), 2);
        assert_eq!(
            config.listeners[0].protocol,
            SecurityProtocol::SaslPlaintext
        );
        assert_eq!(
            config.listener.name, "PLAINTEXT",
            "the PLAINTEXT listener replicates"
        );
        let only = BrokerConfig::from_settings(settings(&[("listeners", "SASL_PLAINTEXT://:1")]))
            .expect("a standalone broker may have only a SASL listener");
        assert_eq!(only.listener.name, "SASL_PLAINTEXT");
    }

    #[test]
    fn a_sasl_inter_broker_listener_takes_its_mechanism_and_jaas_credentials() {
        let config = BrokerConfig::from_settings(settings(&[
            ("listeners", "PLAINTEXT://:1,INTERNAL://:2,CONTROLLER://:3"),
            (
                "listener.security.protocol.map",
                "PLAINTEXT:PLAINTEXT,INTERNAL:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT",
            ),
            ("controller.quorum.voters", "0@127.0.0.1:3"),
            ("node.id", "0"),
            ("inter.broker.listener.name", "INTERNAL"),
            ("sasl.mechanism.inter.broker.protocol", "SCRAM-SHA-512"),
            (
                "listener.name.internal.scram-sha-512.sasl.jaas.config",
                "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"broker\" password=\"broker-secret\";",
            ),
        ]))
        .expect("valid");
        let sasl = config
            .inter_broker_sasl
            .clone()
            .expect("SASL between brokers");
        assert_eq!(
            (
                sasl.mechanism.name(),
                sasl.username.as_str(),
                sasl.password.as_str()
            ),
            ("SCRAM-SHA-512", "broker", "broker-secret")
        );
        assert!(
            !format!("{config:?}").contains("broker-secret"),
            "the password shows in the configuration's Debug"
        );
        assert_eq!(
            config.explicit("listener.name.internal.scram-sha-512.sasl.jaas.config"),
            None
        );
    }

    #[test]
    fn inconsistent_listener_settings_are_refused_with_the_reason() {
        let refused = |pairs: &[(&str, &str)], expected: &str| {
            let err = BrokerConfig::from_settings(settings(pairs)).expect_err(expected);
            assert!(err.to_string().contains(expected), "{err}");
        };
        refused(&[("listeners", "EXTERNAL://:1")], "EXTERNAL has none");
        refused(
            &[("listeners", "PLAINTEXT://:1,PLAINTEXT://:2")],
            "one PLAINTEXT listener",
        );
        refused(
            &[("listener.security.protocol.map", "A:TLS")],
            "NAME:PROTOCOL",
        );
        refused(
            &[
                ("listeners", "PLAINTEXT://:1"),
                ("advertised.listeners", "SSL://h:2"),
            ],
            "SSL is not one",
        );
        refused(
            &[
                ("listeners", "PLAINTEXT://:1,SSL://:2"),
                ("inter.broker.listener.name", "INTERNAL"),
            ],
            "one of the client listeners: PLAINTEXT, SSL",
        );
        refused(
            &[
                ("listeners", "SASL_SSL://:1,CONTROLLER://:2"),
                ("ssl.keystore.location", "k.pem"),
                ("controller.quorum.voters", "0@127.0.0.1:2"),
            ],
            "one of sasl.enabled.mechanisms (SCRAM-SHA-256, SCRAM-SHA-512) for the SASL inter-broker listener",
        );
        refused(
            &[
                ("listeners", "SASL_PLAINTEXT://:1,CONTROLLER://:2"),
                ("controller.quorum.voters", "0@127.0.0.1:2"),
                ("sasl.mechanism.inter.broker.protocol", "SCRAM-SHA-512"),
            ],
            "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config",
        );
        refused(
            &[(
                "listener.name.internal.plain.sasl.jaas.config",
                "PlainLoginModule required username=\"broker\";",
            )],
            "no password",
        );
        refused(
            &[
                ("listeners", "PLAINTEXT://:1,CONTROLLER://:2"),
                (
                    "listener.security.protocol.map",
                    "PLAINTEXT:PLAINTEXT,CONTROLLER:SASL_SSL",
                ),
            ],
            "SASL for quorum traffic is not supported",
        );
        refused(
            &[("ssl.client.auth", "always")],
            "none, requested, required",
        );
        refused(&[("sasl.enabled.mechanisms", "GSSAPI")], "SCRAM-SHA-256");
    }

    #[test]
    fn a_cluster_broker_without_node_id_takes_its_pod_ordinal() {
        let cluster = |extra: &[(&str, &str)]| {
            let mut all = settings(&[
                ("listeners", "PLAINTEXT://:9092,CONTROLLER://:9093"),
                (
                    "controller.quorum.voters",
                    "0@main-0.h:9093,1@main-1.h:9093,2@main-2.h:9093",
                ),
            ]);
            all.extend(settings(extra));
            all
        };
        let config =
            BrokerConfig::from_settings_in_pod(cluster(&[]), Some("main-2")).expect("a voter");
        assert_eq!(config.node_id, 2);
        assert_eq!(config.explicit("node.id"), Some("2"));
        let config = BrokerConfig::from_settings_in_pod(
            cluster(&[("process.roles", "broker")]),
            Some("oxbow-kafka-12"),
        )
        .expect("a broker that does not vote");
        assert_eq!(config.node_id, 12);
        // An explicit node.id wins over the pod name.
        let config =
            BrokerConfig::from_settings_in_pod(cluster(&[("node.id", "1")]), Some("main-2"))
                .expect("explicit");
        assert_eq!(config.node_id, 1);
        for (pod, why) in [
            (None, "there is no StatefulSet pod name"),
            (Some("laptop"), "the pod name `laptop`"),
            (Some("main-x"), "the pod name `main-x`"),
        ] {
            let err = BrokerConfig::from_settings_in_pod(cluster(&[]), pod)
                .expect_err("no node id")
                .to_string();
            assert!(
                err.starts_with("`node.id` is not set") && err.contains(why),
                "{err}"
            );
        }
        // The ordinal must name a voter exactly when the broker votes.
        let err = BrokerConfig::from_settings_in_pod(cluster(&[]), Some("main-5"))
            .expect_err("a voter that is not in the quorum")
            .to_string();
        assert!(err.contains("node 5"), "{err}");
        // A standalone broker is node 0 wherever it runs.
        let config =
            BrokerConfig::from_settings_in_pod(BTreeMap::new(), Some("web-3")).expect("standalone");
        assert_eq!(config.node_id, 0);
    }

    #[test]
    fn a_controller_only_node_listens_on_its_controller_listener_alone_and_must_vote() {
        let voters = ("controller.quorum.voters", "1@c1:9093,2@c2:9093,3@c3:9093");
        let controller = BrokerConfig::from_settings(settings(&[
            ("node.id", "2"),
            ("process.roles", "controller"),
            ("listeners", "CONTROLLER://:9093"),
            voters,
        ]))
        .expect("Kafka's controller.properties");
        assert!(!controller.is_broker);
        assert_eq!(controller.roles(), "controller");
        assert!(controller.listeners.is_empty());
        assert_eq!(controller.listener.port, 9093);
        // Kafka's shipped config/controller.properties: the standalone first controller.
        let shipped = BrokerConfig::from_settings(settings(&[
            ("node.id", "1"),
            ("process.roles", "controller"),
            ("listeners", "CONTROLLER://:9093"),
            ("advertised.listeners", "CONTROLLER://localhost:9093"),
            ("controller.listener.names", "CONTROLLER"),
            ("controller.quorum.bootstrap.servers", "localhost:9093"),
            (
                "listener.security.protocol.map",
                "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL",
            ),
        ]))
        .expect("Kafka's shipped controller.properties");
        assert_eq!(
            shipped.voters,
            BTreeMap::from([(1, "localhost:9093".to_string())])
        );
        assert_eq!(shipped.roles(), "controller");
        let broker = BrokerConfig::from_settings(settings(&[
            ("node.id", "4"),
            ("process.roles", "broker"),
            ("listeners", "PLAINTEXT://:9092"),
            voters,
        ]))
        .expect("Kafka's broker.properties");
        assert!(broker.is_broker);
        assert_eq!(broker.roles(), "broker");
        for (extra, why) in [
            (
                vec![
                    ("node.id", "2"),
                    ("listeners", "PLAINTEXT://:9092,CONTROLLER://:9093"),
                    voters,
                ],
                "only the controller listener",
            ),
            (
                vec![
                    ("node.id", "5"),
                    ("listeners", "CONTROLLER://:9093"),
                    voters,
                ],
                "node 5",
            ),
            (
                vec![("node.id", "2"), ("listeners", "PLAINTEXT://:9092")],
                "needs a quorum",
            ),
        ] {
            let mut all = extra;
            all.push(("process.roles", "controller"));
            let err = BrokerConfig::from_settings(settings(&all))
                .expect_err(why)
                .to_string();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn connection_limits_per_listener_are_taken_as_kafka_takes_them() {
        let config = BrokerConfig::from_settings(settings(&[
            ("listeners", "PLAINTEXT://:9092,EXTERNAL://:9094"),
            (
                "listener.security.protocol.map",
                "PLAINTEXT:PLAINTEXT,EXTERNAL:PLAINTEXT",
            ),
            ("listener.name.external.max.connections", "100"),
            ("listener.name.external.max.connection.creation.rate", "20"),
            ("max.connections", "1000"),
        ]))
        .expect("Kafka's per-listener limits");
        assert_eq!(
            config.security.listener_limits.get("EXTERNAL"),
            Some(&ListenerLimits {
                max_connections: Some(100),
                max_connection_creation_rate: Some(20),
            })
        );
        assert_eq!(config.security.listener_limits.get("PLAINTEXT"), None);
        let err = BrokerConfig::from_settings(settings(&[(
            "listener.name.plaintext.max.connections",
            "-1",
        )]))
        .expect_err("a negative limit")
        .to_string();
        assert!(
            err.contains("listener.name.plaintext.max.connections"),
            "{err}"
        );
    }

    #[test]
    fn quorum_traffic_is_tls_when_the_controller_listener_is_ssl_and_never_sasl() {
        let node = |map: &str, extra: &[(&'static str, &'static str)]| {
            let mut all = vec![
                ("node.id", "4"),
                ("process.roles", "broker"),
                ("listeners", "PLAINTEXT://:9092"),
                ("controller.quorum.voters", "1@c1:9093"),
            ];
            all.push(("listener.security.protocol.map", map));
            all.extend_from_slice(extra);
            BrokerConfig::from_settings(settings(&all))
        };
        let plain = node("PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT", &[]).expect("plaintext");
        assert!(plain.controller_tls.is_none());
        let tls = node(
            "PLAINTEXT:PLAINTEXT,CONTROLLER:SSL",
            &[("listener.name.controller.ssl.keystore.location", "/k.pem")],
        )
        .expect("a broker that does not vote connects to SSL controllers");
        assert_eq!(
            tls.controller_tls.map(|t| t.keystore),
            Some(PathBuf::from("/k.pem"))
        );
        let err = node("PLAINTEXT:PLAINTEXT,CONTROLLER:SSL", &[])
            .expect_err("no keystore")
            .to_string();
        assert!(err.contains("ssl.keystore.location"), "{err}");
        for sasl in ["SASL_SSL", "SASL_PLAINTEXT"] {
            let err = node(&format!("PLAINTEXT:PLAINTEXT,CONTROLLER:{sasl}"), &[])
                .expect_err("SASL")
                .to_string();
            assert!(err.contains("SASL for quorum traffic"), "{err}");
        }
    }

    #[test]
    fn quorum_bootstrap_servers_make_a_standalone_first_controller_or_a_joining_broker() {
        let controller = BrokerConfig::from_settings(settings(&[
            ("node.id", "1"),
            ("listeners", "PLAINTEXT://:9092,CONTROLLER://:9093"),
            ("controller.quorum.bootstrap.servers", "localhost:9093"),
        ]))
        .expect("Kafka's shipped combined node");
        assert_eq!(
            controller.voters,
            BTreeMap::from([(1, "localhost:9093".to_string())])
        );
        let broker = BrokerConfig::from_settings(settings(&[
            ("node.id", "2"),
            ("process.roles", "broker"),
            ("listeners", "PLAINTEXT://:9094"),
            ("controller.quorum.bootstrap.servers", "localhost:9093"),
        ]))
        .expect("a broker-only node needs no controller listener");
        assert!(broker.in_cluster() && broker.voters.is_empty());
        assert_eq!(broker.quorum_bootstrap, ["localhost:9093"]);
        for servers in ["a:9093,b:9093", "localhost:9999"] {
            let err = BrokerConfig::from_settings(settings(&[
                ("node.id", "1"),
                ("listeners", "PLAINTEXT://:9092,CONTROLLER://:9093"),
                ("controller.quorum.bootstrap.servers", servers),
            ]))
            .expect_err("not this controller alone");
            assert!(
                err.to_string().contains("standalone first controller"),
                "{err}"
            );
        }
    }

    #[test]
    fn an_error_of_a_file_names_the_file_the_line_and_the_key() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("server.properties");
        std::fs::write(&path, "num.partitions=2\n\nnum.io.threads=0\n").expect("written");
        let err = BrokerConfig::load(Some(&path), BTreeMap::new()).expect_err("invalid");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("{}:3: ", path.display()))
                && text.contains("`num.io.threads`"),
            "{text}"
        );
        // A flag that overrides the file's value is not the file's error.
        let err = BrokerConfig::load(Some(&path), settings(&[("num.io.threads", "0")]))
            .expect_err("invalid");
        assert!(matches!(err, ConfigError::Invalid { .. }), "{err}");
    }

    #[test]
    fn pod_ordinals() {
        assert_eq!(pod_ordinal("main-0"), Some(0));
        assert_eq!(pod_ordinal("my-kafka-17"), Some(17));
        for name in ["main", "-3", "main-", "main-1a", "main-99999999999"] {
            assert_eq!(pod_ordinal(name), None, "{name}");
        }
    }

    #[test]
    fn listeners_parse_with_and_without_a_name() {
        let l = Listener::parse("listeners", "PLAINTEXT://:9092").expect("valid");
        assert_eq!(l.bind_address(), "0.0.0.0:9092");
        let l = Listener::parse("listeners", "127.0.0.1:19092").expect("valid");
        assert_eq!((l.host.as_str(), l.port), ("127.0.0.1", 19092));
        assert!(Listener::parse("listeners", "PLAINTEXT://host").is_err());
    }
}

#[cfg(test)]
mod docs_tests {
    use super::*;

    /// Every setting the broker accepts is documented in docs/configuration.md.
    #[test]
    fn the_docs_document_every_broker_and_topic_setting() {
        let readme = include_str!("../../../docs/configuration.md");
        let missing: Vec<&str> = BROKER_DEFS
            .iter()
            .map(|d| d.name)
            .chain(TOPIC_DEFS.iter().map(|t| t.def.name))
            .filter(|name| !readme.contains(&format!("`{name}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/configuration.md does not document: {missing:?}"
        );
    }
}
