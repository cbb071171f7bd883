//! The one table of every setting Oxbow understands: Kafka's names, types, defaults and
//! validation, for the broker and for topics. Everything else reads defaults from here.

use super::ConfigError;

/// The type of a setting, as Kafka reports it in DescribeConfigs (KIP-569).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean,
    String,
    Int,
    Short,
    Long,
    Double,
    List,
}

impl ConfigType {
    /// Kafka's numeric code for DescribeConfigs v3+.
    pub fn code(self) -> i8 {
        match self {
            ConfigType::Boolean => 1,
            ConfigType::String => 2,
            ConfigType::Int => 3,
            ConfigType::Short => 4,
            ConfigType::Long => 5,
            ConfigType::Double => 6,
            ConfigType::List => 7,
        }
    }
}

/// What values a setting accepts beyond its type.
#[derive(Debug, Clone, Copy)]
pub enum Check {
    Any,
    AtLeast(i64),
    Between(i64, i64),
    /// Between the first two, or exactly the third (Kafka's `compression.gzip.level`: 1..9 or -1).
    BetweenOr(i64, i64, i64),
    OneOf(&'static [&'static str]),
    ListOf(&'static [&'static str]),
    Fraction,
}

/// One setting: its Kafka name, type, default and what it means.
#[derive(Debug, Clone, Copy)]
pub struct ConfigDef {
    pub name: &'static str,
    pub ty: ConfigType,
    /// `None` when Kafka's default is null (derived from another setting).
    pub default: Option<&'static str>,
    pub check: Check,
    pub doc: &'static str,
}

/// A topic setting and the broker settings that supply its default, with the factor that
/// turns the broker setting's unit into the topic setting's (hours into milliseconds).
#[derive(Debug, Clone, Copy)]
pub struct TopicDef {
    pub def: ConfigDef,
    pub broker_synonyms: &'static [(&'static str, i64)],
}

const fn def(
    name: &'static str,
    ty: ConfigType,
    default: Option<&'static str>,
    check: Check,
    doc: &'static str,
) -> ConfigDef {
    ConfigDef {
        name,
        ty,
        default,
        check,
        doc,
    }
}

const MAX_LONG: &str = "9223372036854775807";
const COMPRESSION: &[&str] = &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"];
const CLEANUP: &[&str] = &["delete", "compact"];
const TIMESTAMP_TYPES: &[&str] = &["CreateTime", "LogAppendTime"];

/// Every broker setting, by its `server.properties` name.
pub const BROKER_DEFS: &[ConfigDef] = &[
    def(
        "node.id",
        ConfigType::Int,
        Some("0"),
        Check::AtLeast(0),
        "The id of this broker. Unset in a cluster: the ordinal N of its StatefulSet pod name (POD_NAME, else HOSTNAME, as name-N).",
    ),
    def(
        "broker.id",
        ConfigType::Int,
        None,
        Check::AtLeast(0),
        "Older name of node.id.",
    ),
    def(
        "listeners",
        ConfigType::String,
        Some("PLAINTEXT://localhost:9092"),
        Check::Any,
        "Where the broker listens: NAME://host:port, comma-separated, one per listener name.",
    ),
    def(
        "advertised.listeners",
        ConfigType::String,
        None,
        Check::Any,
        "The address clients of each listener are told to use: NAME://host:port; a listener not named here advertises its own address.",
    ),
    def(
        "process.roles",
        ConfigType::List,
        Some("broker,controller"),
        Check::ListOf(&["broker", "controller"]),
        "broker, or broker,controller for a node that also votes in the metadata quorum.",
    ),
    def(
        "controller.quorum.voters",
        ConfigType::List,
        Some(""),
        Check::Any,
        "The metadata quorum: id@host:port of each voter; empty for a standalone broker.",
    ),
    def(
        "controller.listener.names",
        ConfigType::List,
        Some("CONTROLLER"),
        Check::Any,
        "Names of the listeners that carry metadata quorum traffic.",
    ),
    def(
        "listener.security.protocol.map",
        ConfigType::String,
        Some("PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT"),
        Check::Any,
        "Security protocol of each listener name: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.",
    ),
    def(
        "inter.broker.listener.name",
        ConfigType::String,
        None,
        Check::Any,
        "The listener brokers use to reach each other (replication); default: the PLAINTEXT listener, else the only client listener.",
    ),
    def(
        "ssl.keystore.type",
        ConfigType::String,
        Some("PEM"),
        Check::OneOf(&["PEM"]),
        "Format of the key store; only PEM.",
    ),
    def(
        "ssl.keystore.location",
        ConfigType::String,
        None,
        Check::Any,
        "PEM file with the certificate chain and the unencrypted private key of the SSL and SASL_SSL listeners.",
    ),
    def(
        "ssl.truststore.type",
        ConfigType::String,
        Some("PEM"),
        Check::OneOf(&["PEM"]),
        "Format of the trust store; only PEM.",
    ),
    def(
        "ssl.truststore.location",
        ConfigType::String,
        None,
        Check::Any,
        "PEM file with the CA certificates that sign client certificates.",
    ),
    def(
        "ssl.client.auth",
        ConfigType::String,
        Some("none"),
        Check::OneOf(&["none", "requested", "required"]),
        "Whether TLS clients must present a certificate signed by the trust store.",
    ),
    def(
        "ssl.principal.mapping.rules",
        ConfigType::String,
        Some("DEFAULT"),
        Check::Any,
        "How a client certificate's subject becomes a User principal: DEFAULT or RULE:pattern/replacement/[LU], comma-separated.",
    ),
    def(
        "sasl.mechanism.inter.broker.protocol",
        ConfigType::String,
        None,
        Check::Any,
        "The SASL mechanism brokers authenticate with on a SASL inter-broker listener (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512); the listener's listener.name.<listener>.<mechanism>.sasl.jaas.config gives username and password.",
    ),
    def(
        "sasl.enabled.mechanisms",
        ConfigType::List,
        Some("SCRAM-SHA-256,SCRAM-SHA-512"),
        Check::ListOf(&["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]),
        "SASL mechanisms offered on SASL_PLAINTEXT and SASL_SSL listeners.",
    ),
    def(
        "max.connections",
        ConfigType::Int,
        Some("2147483647"),
        Check::AtLeast(0),
        "Client connections the broker holds at once; more are closed at accept (inter-broker listener exempt).",
    ),
    def(
        "max.connections.per.ip",
        ConfigType::Int,
        Some("2147483647"),
        Check::AtLeast(0),
        "Connections one address may hold at once; more are closed at accept.",
    ),
    def(
        "connection.failed.authentication.delay.ms",
        ConfigType::Int,
        Some("100"),
        Check::AtLeast(0),
        "How long a failed SASL authentication is held before it is answered, to slow password guessing.",
    ),
    def(
        "connections.max.idle.ms",
        ConfigType::Long,
        Some("600000"),
        Check::AtLeast(-1),
        "A connection that sends nothing for this long is closed; -1 never.",
    ),
    def(
        "broker.rack",
        ConfigType::String,
        None,
        Check::Any,
        "The rack (or zone) of this broker, for replica placement.",
    ),
    def(
        "replica.lag.time.max.ms",
        ConfigType::Long,
        Some("30000"),
        Check::AtLeast(1),
        "A follower that has not caught up for this long leaves the ISR.",
    ),
    def(
        "replica.fetch.wait.max.ms",
        ConfigType::Int,
        Some("500"),
        Check::AtLeast(0),
        "How long a follower's fetch waits at the leader for new data.",
    ),
    def(
        "follower.replication.throttled.rate",
        ConfigType::Long,
        Some("-1"),
        Check::AtLeast(-1),
        "Bytes per second this broker copies from leaders as a follower; -1 for no limit.",
    ),
    def(
        "replica.fetch.max.bytes",
        ConfigType::Int,
        Some("1048576"),
        Check::AtLeast(1),
        "Bytes per partition a follower asks for in one fetch.",
    ),
    def(
        "broker.heartbeat.interval.ms",
        ConfigType::Int,
        Some("2000"),
        Check::AtLeast(1),
        "How often a broker heartbeats to the controller.",
    ),
    def(
        "broker.session.timeout.ms",
        ConfigType::Int,
        Some("9000"),
        Check::AtLeast(1),
        "How long the controller waits for a heartbeat before fencing a broker.",
    ),
    def(
        "offsets.topic.replication.factor",
        ConfigType::Short,
        Some("3"),
        Check::AtLeast(1),
        "Replication factor of __consumer_offsets, capped at the brokers available when it is created.",
    ),
    def(
        "request.timeout.ms",
        ConfigType::Int,
        Some("30000"),
        Check::AtLeast(1),
        "Longest wait of a request between brokers.",
    ),
    def(
        "log.dirs",
        ConfigType::String,
        Some("./data"),
        Check::Any,
        "The directory that holds the partition logs.",
    ),
    def(
        "log.dir",
        ConfigType::String,
        None,
        Check::Any,
        "Older name of log.dirs.",
    ),
    def(
        "num.partitions",
        ConfigType::Int,
        Some("1"),
        Check::AtLeast(1),
        "Partitions of an automatically created topic.",
    ),
    def(
        "default.replication.factor",
        ConfigType::Short,
        Some("1"),
        Check::AtLeast(1),
        "Replication factor of an automatically created topic.",
    ),
    def(
        "auto.create.topics.enable",
        ConfigType::Boolean,
        Some("true"),
        Check::Any,
        "Create a topic when a client asks for its metadata or produces to it.",
    ),
    def(
        "delete.topic.enable",
        ConfigType::Boolean,
        Some("true"),
        Check::Any,
        "Allow DeleteTopics.",
    ),
    def(
        "log.segment.bytes",
        ConfigType::Int,
        Some("1073741824"),
        Check::AtLeast(14),
        "Size at which a segment is rolled.",
    ),
    def(
        "log.roll.ms",
        ConfigType::Long,
        None,
        Check::AtLeast(1),
        "Age at which a segment is rolled, in ms.",
    ),
    def(
        "log.roll.hours",
        ConfigType::Int,
        Some("168"),
        Check::AtLeast(1),
        "Age at which a segment is rolled, in hours.",
    ),
    def(
        "log.retention.ms",
        ConfigType::Long,
        None,
        Check::AtLeast(-1),
        "How long data is kept, in ms (-1: forever).",
    ),
    def(
        "log.retention.minutes",
        ConfigType::Int,
        None,
        Check::AtLeast(-1),
        "How long data is kept, in minutes.",
    ),
    def(
        "log.retention.hours",
        ConfigType::Int,
        Some("168"),
        Check::AtLeast(-1),
        "How long data is kept, in hours.",
    ),
    def(
        "log.retention.bytes",
        ConfigType::Long,
        Some("-1"),
        Check::AtLeast(-1),
        "Size a partition is trimmed to (-1: no limit).",
    ),
    def(
        "log.cleanup.policy",
        ConfigType::List,
        Some("delete"),
        Check::ListOf(CLEANUP),
        "delete, compact or both.",
    ),
    def(
        "log.index.interval.bytes",
        ConfigType::Int,
        Some("4096"),
        Check::AtLeast(4),
        "Bytes of log between two offset index entries.",
    ),
    def(
        "log.flush.interval.messages",
        ConfigType::Long,
        Some(MAX_LONG),
        Check::AtLeast(1),
        "Messages appended before the log is fsynced.",
    ),
    def(
        "log.flush.interval.ms",
        ConfigType::Long,
        None,
        Check::AtLeast(0),
        "Time data may stay unsynced, in ms.",
    ),
    def(
        "log.message.timestamp.type",
        ConfigType::String,
        Some("CreateTime"),
        Check::OneOf(TIMESTAMP_TYPES),
        "CreateTime or LogAppendTime.",
    ),
    def(
        "log.retention.check.interval.ms",
        ConfigType::Long,
        Some("300000"),
        Check::AtLeast(1),
        "How often segments past retention are looked for, in ms.",
    ),
    def(
        "log.cleaner.enable",
        ConfigType::Boolean,
        Some("true"),
        Check::Any,
        "Run the log cleaner for compacted topics.",
    ),
    def(
        "log.cleaner.backoff.ms",
        ConfigType::Long,
        Some("15000"),
        Check::AtLeast(0),
        "Pause between passes of the log cleaner, in ms.",
    ),
    def(
        "log.cleaner.delete.retention.ms",
        ConfigType::Long,
        Some("86400000"),
        Check::AtLeast(0),
        "How long tombstones are kept in compacted topics.",
    ),
    def(
        "log.cleaner.min.compaction.lag.ms",
        ConfigType::Long,
        Some("0"),
        Check::AtLeast(0),
        "Minimum age of a record before compaction.",
    ),
    def(
        "log.cleaner.min.cleanable.ratio",
        ConfigType::Double,
        Some("0.5"),
        Check::Fraction,
        "Dirty ratio that triggers compaction.",
    ),
    def(
        "compression.type",
        ConfigType::String,
        Some("producer"),
        Check::OneOf(COMPRESSION),
        "Compression of stored batches.",
    ),
    def(
        "compression.gzip.level",
        ConfigType::Int,
        Some("-1"),
        Check::BetweenOr(1, 9, -1),
        "The compression level to use if compression.type is set to gzip: 1 to 9, or -1 for zlib's default (6).",
    ),
    def(
        "compression.lz4.level",
        ConfigType::Int,
        Some("9"),
        Check::Between(1, 17),
        "The compression level to use if compression.type is set to lz4.",
    ),
    def(
        "compression.zstd.level",
        ConfigType::Int,
        Some("3"),
        Check::Between(-131072, 22),
        "The compression level to use if compression.type is set to zstd.",
    ),
    def(
        "min.insync.replicas",
        ConfigType::Int,
        Some("1"),
        Check::AtLeast(1),
        "Replicas that must acknowledge acks=all.",
    ),
    def(
        "unclean.leader.election.enable",
        ConfigType::Boolean,
        Some("false"),
        Check::Any,
        "Allow an out-of-sync replica to become leader.",
    ),
    def(
        "message.max.bytes",
        ConfigType::Int,
        Some("1048588"),
        Check::AtLeast(0),
        "Largest record batch the broker accepts.",
    ),
    def(
        "socket.request.max.bytes",
        ConfigType::Int,
        Some("104857600"),
        Check::AtLeast(1),
        "Largest request the broker reads; larger ones close the connection.",
    ),
    def(
        "queued.max.request.bytes",
        ConfigType::Long,
        Some("536870912"),
        Check::AtLeast(-1),
        "Bytes of requests all connections may hold at once; a request that does not fit waits, unread. -1 or 0: unbounded.",
    ),
    def(
        "offsets.topic.num.partitions",
        ConfigType::Int,
        Some("50"),
        Check::AtLeast(1),
        "Partitions of the internal __consumer_offsets topic, fixed when it is created.",
    ),
    def(
        "offsets.topic.segment.bytes",
        ConfigType::Int,
        Some("104857600"),
        Check::AtLeast(1),
        "Segment size of __consumer_offsets.",
    ),
    def(
        "offset.metadata.max.bytes",
        ConfigType::Int,
        Some("4096"),
        Check::AtLeast(0),
        "Largest metadata string of a committed offset.",
    ),
    def(
        "group.initial.rebalance.delay.ms",
        ConfigType::Int,
        Some("3000"),
        Check::AtLeast(0),
        "How long an empty group waits for more members before its first rebalance.",
    ),
    def(
        "group.min.session.timeout.ms",
        ConfigType::Int,
        Some("6000"),
        Check::AtLeast(1),
        "Shortest session timeout a member may ask for.",
    ),
    def(
        "group.max.session.timeout.ms",
        ConfigType::Int,
        Some("1800000"),
        Check::AtLeast(1),
        "Longest session timeout a member may ask for.",
    ),
    def(
        "metrics.address",
        ConfigType::String,
        Some("localhost:9404"),
        Check::Any,
        "host:port of the Prometheus /metrics endpoint; empty disables it.",
    ),
    def(
        "authorizer.class.name",
        ConfigType::String,
        Some(""),
        Check::Any,
        "Turns ACL authorization on: org.apache.kafka.metadata.authorizer.StandardAuthorizer (or kafka.security.authorizer.AclAuthorizer); empty for none.",
    ),
    def(
        "super.users",
        ConfigType::String,
        Some(""),
        Check::Any,
        "Principals allowed everything, separated by ';' (User:admin;User:broker).",
    ),
    def(
        "allow.everyone.if.no.acl.found",
        ConfigType::Boolean,
        Some("false"),
        Check::Any,
        "With an authorizer, allow every principal on resources no ACL matches (default: deny).",
    ),
];

/// Every topic setting, with the broker settings that give its default.
pub const TOPIC_DEFS: &[TopicDef] = &[
    TopicDef {
        def: def(
            "cleanup.policy",
            ConfigType::List,
            Some("delete"),
            Check::ListOf(CLEANUP),
            "delete, compact or both.",
        ),
        broker_synonyms: &[("log.cleanup.policy", 1)],
    },
    TopicDef {
        def: def(
            "compression.type",
            ConfigType::String,
            Some("producer"),
            Check::OneOf(COMPRESSION),
            "Compression of stored batches.",
        ),
        broker_synonyms: &[("compression.type", 1)],
    },
    TopicDef {
        def: def(
            "compression.gzip.level",
            ConfigType::Int,
            Some("-1"),
            Check::BetweenOr(1, 9, -1),
            "The compression level to use if compression.type is set to gzip: 1 to 9, or -1 for zlib's default (6).",
        ),
        broker_synonyms: &[("compression.gzip.level", 1)],
    },
    TopicDef {
        def: def(
            "compression.lz4.level",
            ConfigType::Int,
            Some("9"),
            Check::Between(1, 17),
            "The compression level to use if compression.type is set to lz4.",
        ),
        broker_synonyms: &[("compression.lz4.level", 1)],
    },
    TopicDef {
        def: def(
            "compression.zstd.level",
            ConfigType::Int,
            Some("3"),
            Check::Between(-131072, 22),
            "The compression level to use if compression.type is set to zstd.",
        ),
        broker_synonyms: &[("compression.zstd.level", 1)],
    },
    TopicDef {
        def: def(
            "delete.retention.ms",
            ConfigType::Long,
            Some("86400000"),
            Check::AtLeast(0),
            "How long tombstones are kept.",
        ),
        broker_synonyms: &[("log.cleaner.delete.retention.ms", 1)],
    },
    TopicDef {
        def: def(
            "flush.messages",
            ConfigType::Long,
            Some(MAX_LONG),
            Check::AtLeast(1),
            "Messages between fsyncs.",
        ),
        broker_synonyms: &[("log.flush.interval.messages", 1)],
    },
    TopicDef {
        def: def(
            "flush.ms",
            ConfigType::Long,
            Some(MAX_LONG),
            Check::AtLeast(0),
            "Time between fsyncs, in ms.",
        ),
        broker_synonyms: &[("log.flush.interval.ms", 1)],
    },
    TopicDef {
        def: def(
            "index.interval.bytes",
            ConfigType::Int,
            Some("4096"),
            Check::AtLeast(4),
            "Bytes between offset index entries.",
        ),
        broker_synonyms: &[("log.index.interval.bytes", 1)],
    },
    TopicDef {
        def: def(
            "max.message.bytes",
            ConfigType::Int,
            Some("1048588"),
            Check::AtLeast(0),
            "Largest record batch accepted.",
        ),
        broker_synonyms: &[("message.max.bytes", 1)],
    },
    TopicDef {
        def: def(
            "message.timestamp.type",
            ConfigType::String,
            Some("CreateTime"),
            Check::OneOf(TIMESTAMP_TYPES),
            "CreateTime or LogAppendTime.",
        ),
        broker_synonyms: &[("log.message.timestamp.type", 1)],
    },
    TopicDef {
        def: def(
            "min.cleanable.dirty.ratio",
            ConfigType::Double,
            Some("0.5"),
            Check::Fraction,
            "Dirty ratio that triggers compaction.",
        ),
        broker_synonyms: &[("log.cleaner.min.cleanable.ratio", 1)],
    },
    TopicDef {
        def: def(
            "min.compaction.lag.ms",
            ConfigType::Long,
            Some("0"),
            Check::AtLeast(0),
            "Minimum age before compaction.",
        ),
        broker_synonyms: &[("log.cleaner.min.compaction.lag.ms", 1)],
    },
    TopicDef {
        def: def(
            "min.insync.replicas",
            ConfigType::Int,
            Some("1"),
            Check::AtLeast(1),
            "Replicas for acks=all.",
        ),
        broker_synonyms: &[("min.insync.replicas", 1)],
    },
    TopicDef {
        def: def(
            "retention.bytes",
            ConfigType::Long,
            Some("-1"),
            Check::AtLeast(-1),
            "Size limit per partition.",
        ),
        broker_synonyms: &[("log.retention.bytes", 1)],
    },
    TopicDef {
        def: def(
            "retention.ms",
            ConfigType::Long,
            Some("604800000"),
            Check::AtLeast(-1),
            "How long data is kept.",
        ),
        broker_synonyms: &[
            ("log.retention.ms", 1),
            ("log.retention.minutes", 60_000),
            ("log.retention.hours", 3_600_000),
        ],
    },
    TopicDef {
        def: def(
            "segment.bytes",
            ConfigType::Int,
            Some("1073741824"),
            Check::AtLeast(14),
            "Segment size.",
        ),
        broker_synonyms: &[("log.segment.bytes", 1)],
    },
    TopicDef {
        def: def(
            "segment.ms",
            ConfigType::Long,
            Some("604800000"),
            Check::AtLeast(1),
            "Segment age.",
        ),
        broker_synonyms: &[("log.roll.ms", 1), ("log.roll.hours", 3_600_000)],
    },
    TopicDef {
        def: def(
            "unclean.leader.election.enable",
            ConfigType::Boolean,
            Some("false"),
            Check::Any,
            "Allow an out-of-sync leader.",
        ),
        broker_synonyms: &[("unclean.leader.election.enable", 1)],
    },
];

/// Finds a broker setting by name.
pub fn broker_def(name: &str) -> Option<&'static ConfigDef> {
    BROKER_DEFS.iter().find(|d| d.name == name)
}

/// Finds a topic setting by name.
pub fn topic_def(name: &str) -> Option<&'static TopicDef> {
    TOPIC_DEFS.iter().find(|d| d.def.name == name)
}

/// Checks a value against its setting's type and rule; the error says what was expected.
pub fn validate(def: &ConfigDef, value: &str) -> Result<(), ConfigError> {
    let invalid = |expected: String| ConfigError::Invalid {
        key: def.name.to_string(),
        value: value.to_string(),
        expected,
    };
    let number = match def.ty {
        ConfigType::Boolean => {
            return match value {
                "true" | "false" => Ok(()),
                _ => Err(invalid("true or false".to_string())),
            }
        }
        ConfigType::Int => Some(
            value
                .parse::<i32>()
                .map(i64::from)
                .map_err(|_| invalid("a 32-bit integer".to_string()))?,
        ),
        ConfigType::Short => Some(
            value
                .parse::<i16>()
                .map(i64::from)
                .map_err(|_| invalid("a 16-bit integer".to_string()))?,
        ),
        ConfigType::Long => Some(
            value
                .parse::<i64>()
                .map_err(|_| invalid("a 64-bit integer".to_string()))?,
        ),
        ConfigType::Double => {
            let v = value
                .parse::<f64>()
                .map_err(|_| invalid("a number".to_string()))?;
            if matches!(def.check, Check::Fraction) && !(0.0..=1.0).contains(&v) {
                return Err(invalid("a number between 0 and 1".to_string()));
            }
            None
        }
        ConfigType::String | ConfigType::List => None,
    };
    match (def.check, number) {
        (Check::AtLeast(min), Some(n)) if n < min => Err(invalid(format!("at least {min}"))),
        (Check::Between(min, max), Some(n)) if n < min || n > max => {
            Err(invalid(format!("between {min} and {max}")))
        }
        (Check::BetweenOr(min, max, also), Some(n)) if n != also && (n < min || n > max) => {
            Err(invalid(format!("between {min} and {max}, or {also}")))
        }
        (Check::OneOf(allowed), _) if !allowed.contains(&value) => {
            Err(invalid(format!("one of {}", allowed.join(", "))))
        }
        (Check::ListOf(allowed), _) => {
            let items: Vec<&str> = value.split(',').map(str::trim).collect();
            if items.is_empty() || items.iter().any(|item| !allowed.contains(item)) {
                Err(invalid(format!(
                    "a comma-separated list of {}",
                    allowed.join(", ")
                )))
            } else {
                Ok(())
            }
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_passes_its_own_validation() {
        for d in BROKER_DEFS.iter().chain(TOPIC_DEFS.iter().map(|t| &t.def)) {
            if let Some(default) = d.default {
                validate(d, default).unwrap_or_else(|e| panic!("{}: {e}", d.name));
            }
        }
    }

    #[test]
    fn every_topic_synonym_is_a_broker_setting() {
        for t in TOPIC_DEFS {
            for (name, _) in t.broker_synonyms {
                assert!(broker_def(name).is_some(), "{name}");
            }
        }
    }

    #[test]
    fn bad_values_are_rejected_with_what_was_expected() {
        let seg = &topic_def("segment.bytes").expect("known").def;
        assert!(validate(seg, "abc").is_err());
        assert!(validate(seg, "10").is_err());
        assert!(validate(seg, "1048576").is_ok());
        let policy = &topic_def("cleanup.policy").expect("known").def;
        assert!(validate(policy, "compact,delete").is_ok());
        let err = validate(policy, "shred").expect_err("invalid");
        assert!(err.to_string().contains("delete, compact"), "{err}");
        let ratio = &topic_def("min.cleanable.dirty.ratio").expect("known").def;
        assert!(validate(ratio, "1.5").is_err());
        let gzip = &topic_def("compression.gzip.level").expect("known").def;
        for good in ["-1", "1", "9"] {
            assert!(validate(gzip, good).is_ok(), "{good}");
        }
        for bad in ["0", "10", "-2"] {
            let err = validate(gzip, bad).expect_err(bad);
            assert!(err.to_string().contains("between 1 and 9, or -1"), "{err}");
        }
        let zstd = &topic_def("compression.zstd.level").expect("known").def;
        assert!(validate(zstd, "-131072").is_ok());
        assert!(validate(zstd, "22").is_ok());
        assert!(validate(zstd, "23").is_err());
        assert!(validate(zstd, "-131073").is_err());
        let lz4 = &topic_def("compression.lz4.level").expect("known").def;
        assert!(validate(lz4, "0").is_err());
        assert!(validate(lz4, "17").is_ok());
        assert!(validate(lz4, "18").is_err());
    }
}
