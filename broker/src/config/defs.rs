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
    /// A Java class name.
    Class,
    /// A secret: DescribeConfigs reports it as sensitive, without its value.
    Password,
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
            ConfigType::Class => 8,
            ConfigType::Password => 9,
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
    /// `*`, or a comma-separated list of `partition:broker` pairs (the throttled replicas).
    ThrottledReplicas,
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
    /// Kafka changes it at run time (AlterConfigs on a BROKER resource); DescribeConfigs
    /// reports every other broker setting read-only, as Kafka does.
    pub dynamic: bool,
    /// Why the setting has no effect in Oxbow, when it has none: it is accepted, validated
    /// and reported as in Kafka, and the broker says so once at start.
    pub no_effect: Option<&'static str>,
    /// One of Kafka's internal (test-only) settings: accepted and used, but DescribeConfigs
    /// and CreateTopics list it only where it is set, as Kafka does.
    pub internal: bool,
}

impl ConfigDef {
    /// A setting Kafka changes at run time.
    const fn dynamic(self) -> ConfigDef {
        ConfigDef {
            dynamic: true,
            ..self
        }
    }

    /// One of Kafka's internal settings.
    const fn internal(self) -> ConfigDef {
        ConfigDef {
            internal: true,
            ..self
        }
    }

    /// The text DescribeConfigs gives as the setting's documentation.
    pub fn documentation(&self) -> String {
        match self.no_effect {
            Some(reason) => format!("Accepted as in Kafka; no effect in Oxbow: {reason}"),
            None => self.doc.to_string(),
        }
    }

    /// Kafka hides the value of a secret.
    pub fn is_sensitive(&self) -> bool {
        self.ty == ConfigType::Password
    }
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
        dynamic: false,
        no_effect: None,
        internal: false,
    }
}

/// A Kafka setting that has no effect in Oxbow, and why.
const fn kafka(
    name: &'static str,
    ty: ConfigType,
    default: Option<&'static str>,
    check: Check,
    no_effect: &'static str,
) -> ConfigDef {
    ConfigDef {
        name,
        ty,
        default,
        check,
        doc: "",
        dynamic: false,
        no_effect: Some(no_effect),
        internal: false,
    }
}

const MAX_LONG: &str = "9223372036854775807";
/// Kafka 4's smallest `segment.bytes` and `log.segment.bytes` (KIP-1030): 1 MiB. Tests that want
/// smaller segments set the topic's `internal.segment.bytes`, as Kafka's own tests do.
pub const MIN_SEGMENT_BYTES: i64 = 1 << 20;
const COMPRESSION: &[&str] = &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"];
const CLEANUP: &[&str] = &["delete", "compact"];
const TIMESTAMP_TYPES: &[&str] = &["CreateTime", "LogAppendTime"];

// Why a Kafka setting has no effect in Oxbow. DescribeConfigs gives the reason as the
// setting's documentation, and the broker logs it at start for every such setting it is given.
const ONE_RUNTIME: &str =
    "Oxbow serves every connection, disk and background task on one async runtime; it has no thread pool of this kind to size.";
const OS_BUFFERS: &str = "socket buffers and the listen backlog are left to the operating system.";
const BYTES_BOUND: &str =
    "requests waiting to be read are bounded in bytes (queued.max.request.bytes), not counted.";
const TXN_RETRIES_OWN: &str =
    "a partition leader asks the transaction coordinator once per producer and transaction, and the producer retries.";
const PRODUCERS_KEPT: &str = "idle producer ids are kept with their partition's producer state.";
const TXN_LOAD_OWN: &str = "the coordinator reads __transaction_state in batches of its own size.";
const NO_TWO_PHASE_COMMIT: &str =
    "Oxbow has no two-phase commit with external coordinators (KIP-939).";
const NO_SHARE_GROUPS: &str = "Oxbow has no share groups (KIP-932) yet.";
const CLASSIC_GROUPS: &str =
    "Oxbow's groups speak the classic protocol only; consumer (KIP-848) and streams (KIP-1071) groups do not exist yet.";
const NO_TIERED: &str = "Oxbow has no tiered storage: every segment stays on the local disk.";
const NO_QUOTAS: &str = "Oxbow enforces client byte-rate and request-time quotas (measured over quota.window.num windows of quota.window.size.seconds); controller mutations are counted over controller.quota.window.num windows of controller.quota.window.size.seconds; connection_creation_rate quotas are enforced per address and max.connection.creation.rate broker-wide, and replication is throttled by follower.replication.throttled.rate alone.";
const NO_GSSAPI: &str = "Oxbow offers PLAIN and SCRAM; there is no Kerberos (GSSAPI).";
const NO_OAUTH: &str = "Oxbow offers PLAIN and SCRAM; there is no OAUTHBEARER.";
const NO_LOGIN_MODULES: &str =
    "Oxbow offers PLAIN and SCRAM with credentials from listener.name.<listener>.<mechanism>.sasl.jaas.config; it has no login modules to tune.";
const LISTENER_JAAS: &str =
    "the credentials of the inter-broker login come from listener.name.<listener>.<mechanism>.sasl.jaas.config.";
const PLAIN_QUORUM: &str = "quorum traffic is PLAINTEXT in Oxbow.";
const PEM_ONLY: &str =
    "Oxbow's TLS reads PEM files (ssl.keystore.location, ssl.truststore.location) with rustls' own protocols, ciphers and algorithms; Java key stores and providers have no counterpart.";
const BY_LISTENER: &str =
    "the inter-broker listener is chosen by inter.broker.listener.name and its protocol by listener.security.protocol.map.";
const JAVA_PLUGIN: &str = "a Java class; Oxbow loads no plugins.";
const JAVA_INTERNAL: &str = "a tuning of the Java broker's internals with no counterpart in Oxbow.";
const ALTER_LOG_DIRS_OWN: &str =
    "Oxbow copies a replica moving between log directories with one thread per move, unthrottled.";
const FETCHER_TUNING: &str =
    "Oxbow's follower fetcher and inter-broker connections have their own timings; replica.fetch.wait.max.ms, replica.fetch.max.bytes and request.timeout.ms are the ones it takes.";
const QUORUM_OWN: &str =
    "Oxbow's metadata quorum (openraft) has its own log, snapshots and timings.";
const PROMETHEUS: &str = "Oxbow exports its metrics in Prometheus format at metrics.address.";
const NO_DELEGATION_TOKENS: &str = "Oxbow has no delegation tokens.";
const OPERATOR_BALANCES: &str =
    "leaders are balanced by the operator (or its one-shot balance command) through ElectLeaders, not by a broker timer.";
const ALWAYS_CONTROLLED: &str = "Oxbow always moves leadership away before it stops on SIGTERM.";
const NOT_ENFORCED: &str = "Oxbow does not enforce this limit.";
const OFFSETS_KEPT: &str = "committed offsets do not expire in Oxbow.";
const CLEANER_OWN: &str = "the log cleaner sizes its own buffers and does not throttle its I/O.";
const MAX_COMPACTION_LAG: &str =
    "the cleaner compacts a log when its dirty ratio is reached; it does not force compaction by age.";
const CHECKPOINTS_OWN: &str =
    "Oxbow writes its offset checkpoints when they change, not on a timer.";
const FLUSH_OWN: &str = "due flushes are looked for every 100 ms.";
const INDEX_GROWS: &str =
    "Oxbow's index files grow with their segment; they are not preallocated to a size.";
const NO_PREALLOCATE: &str = "segment files are not preallocated.";
const NO_JITTER: &str = "segments roll exactly at segment.ms.";
const DELETE_AT_ONCE: &str = "segments past retention are deleted at once.";
const BIND_ORDER: &str = "Oxbow binds every listener once its logs are loaded.";
const NO_REAUTH: &str = "Oxbow does not ask clients to re-authenticate (KIP-368).";
const FOLLOWER_SIDE_THROTTLE: &str =
    "Oxbow throttles replication on the follower side only (follower.replication.throttled.rate), for every partition it follows.";

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
        Some("-1"),
        Check::AtLeast(-1),
        "Older name of node.id; -1 leaves it to node.id.",
    ),
    def(
        "listeners",
        ConfigType::String,
        Some("PLAINTEXT://localhost:9092"),
        Check::Any,
        "Where the broker listens: NAME://host:port, comma-separated, one per listener name.",
    )
    .dynamic(),
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
        "broker; broker,controller for a node that also votes in the metadata quorum; controller for a node that only votes (and runs the controller when elected), listening on its controller listener alone.",
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
    )
    .dynamic(),
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
    )
    .dynamic(),
    def(
        "ssl.keystore.location",
        ConfigType::String,
        None,
        Check::Any,
        "PEM file with the certificate chain and the unencrypted private key of the SSL and SASL_SSL listeners.",
    )
    .dynamic(),
    def(
        "ssl.truststore.type",
        ConfigType::String,
        Some("PEM"),
        Check::OneOf(&["PEM"]),
        "Format of the trust store; only PEM.",
    )
    .dynamic(),
    def(
        "ssl.truststore.location",
        ConfigType::String,
        None,
        Check::Any,
        "PEM file with the CA certificates that sign client certificates.",
    )
    .dynamic(),
    def(
        "ssl.client.auth",
        ConfigType::String,
        Some("none"),
        Check::OneOf(&["none", "requested", "required"]),
        "Whether TLS clients must present a certificate signed by the trust store.",
    )
    .dynamic(),
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
    )
    .dynamic(),
    def(
        "sasl.enabled.mechanisms",
        ConfigType::List,
        Some("SCRAM-SHA-256,SCRAM-SHA-512"),
        Check::ListOf(&["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]),
        "SASL mechanisms offered on SASL_PLAINTEXT and SASL_SSL listeners.",
    )
    .dynamic(),
    def(
        "max.connections",
        ConfigType::Int,
        Some("2147483647"),
        Check::AtLeast(0),
        "Client connections the broker holds at once; more are closed at accept (inter-broker listener exempt).",
    )
    .dynamic(),
    def(
        "max.connections.per.ip",
        ConfigType::Int,
        Some("2147483647"),
        Check::AtLeast(0),
        "Connections one address may hold at once; more are closed at accept.",
    )
    .dynamic(),
    def(
        "max.connection.creation.rate",
        ConfigType::Int,
        Some("2147483647"),
        Check::AtLeast(0),
        "New connections a second the broker accepts on its listeners but the inter-broker one (KIP-612): beyond it, accepting waits; 2147483647 for no limit.",
    )
    .dynamic(),
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
        "controller.quota.window.num",
        ConfigType::Int,
        Some("11"),
        Check::AtLeast(1),
        "With controller.quota.window.size.seconds, the span whose worth of controller_mutation_rate a client may spend at once.",
    ),
    def(
        "controller.quota.window.size.seconds",
        ConfigType::Int,
        Some("1"),
        Check::AtLeast(1),
        "The time span of each sample for controller mutation quotas.",
    ),
    def(
        "quota.window.num",
        ConfigType::Int,
        Some("11"),
        Check::AtLeast(1),
        "The number of samples to retain in memory for client quotas.",
    ),
    def(
        "quota.window.size.seconds",
        ConfigType::Int,
        Some("1"),
        Check::AtLeast(1),
        "The time span of each sample for client quotas.",
    ),
    def(
        "log.dir.failure.timeout.ms",
        ConfigType::Long,
        Some("30000"),
        Check::AtLeast(1),
        "A broker whose log directory failed shuts down when the controller has not taken the directory's replicas offline within this time.",
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
    )
    .dynamic(),
    def(
        "replica.fetch.max.bytes",
        ConfigType::Int,
        Some("1048576"),
        Check::AtLeast(1),
        "Bytes per partition a follower asks for in one fetch.",
    ),
    def(
        "max.incremental.fetch.session.cache.slots",
        ConfigType::Int,
        Some("1000"),
        Check::AtLeast(0),
        "Incremental fetch sessions (KIP-227) this broker keeps for consumers and followers at most.",
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
        "The directories that hold the partition logs, comma-separated; the first also holds the cluster metadata.",
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
        ConfigType::Int,
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
        Check::AtLeast(MIN_SEGMENT_BYTES),
        "Size at which a segment is rolled.",
    )
    .dynamic(),
    def(
        "log.roll.ms",
        ConfigType::Long,
        None,
        Check::AtLeast(1),
        "Age at which a segment is rolled, in ms.",
    )
    .dynamic(),
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
    )
    .dynamic(),
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
    )
    .dynamic(),
    def(
        "log.cleanup.policy",
        ConfigType::List,
        Some("delete"),
        Check::ListOf(CLEANUP),
        "delete, compact or both.",
    )
    .dynamic(),
    def(
        "log.index.interval.bytes",
        ConfigType::Int,
        Some("4096"),
        Check::AtLeast(4),
        "Bytes of log between two offset index entries.",
    )
    .dynamic(),
    def(
        "log.flush.interval.messages",
        ConfigType::Long,
        Some(MAX_LONG),
        Check::AtLeast(1),
        "Messages appended before the log is fsynced.",
    )
    .dynamic(),
    def(
        "log.flush.interval.ms",
        ConfigType::Long,
        None,
        Check::AtLeast(0),
        "Time data may stay unsynced, in ms.",
    )
    .dynamic(),
    def(
        "log.message.timestamp.type",
        ConfigType::String,
        Some("CreateTime"),
        Check::OneOf(TIMESTAMP_TYPES),
        "CreateTime or LogAppendTime.",
    )
    .dynamic(),
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
    )
    .dynamic(),
    def(
        "log.cleaner.delete.retention.ms",
        ConfigType::Long,
        Some("86400000"),
        Check::AtLeast(0),
        "How long tombstones are kept in compacted topics.",
    )
    .dynamic(),
    def(
        "log.cleaner.min.compaction.lag.ms",
        ConfigType::Long,
        Some("0"),
        Check::AtLeast(0),
        "Minimum age of a record before compaction.",
    )
    .dynamic(),
    def(
        "log.cleaner.min.cleanable.ratio",
        ConfigType::Double,
        Some("0.5"),
        Check::Fraction,
        "Dirty ratio that triggers compaction.",
    )
    .dynamic(),
    def(
        "compression.type",
        ConfigType::String,
        Some("producer"),
        Check::OneOf(COMPRESSION),
        "Compression of stored batches.",
    )
    .dynamic(),
    def(
        "compression.gzip.level",
        ConfigType::Int,
        Some("-1"),
        Check::BetweenOr(1, 9, -1),
        "The compression level to use if compression.type is set to gzip: 1 to 9, or -1 for zlib's default (6).",
    )
    .dynamic(),
    def(
        "compression.lz4.level",
        ConfigType::Int,
        Some("9"),
        Check::Between(1, 17),
        "The compression level to use if compression.type is set to lz4.",
    )
    .dynamic(),
    def(
        "compression.zstd.level",
        ConfigType::Int,
        Some("3"),
        Check::Between(-131072, 22),
        "The compression level to use if compression.type is set to zstd.",
    )
    .dynamic(),
    def(
        "min.insync.replicas",
        ConfigType::Int,
        Some("1"),
        Check::AtLeast(1),
        "Replicas that must acknowledge acks=all.",
    )
    .dynamic(),
    def(
        "unclean.leader.election.enable",
        ConfigType::Boolean,
        Some("false"),
        Check::Any,
        "Allow an out-of-sync replica to become leader.",
    )
    .dynamic(),
    def(
        "message.max.bytes",
        ConfigType::Int,
        Some("1048588"),
        Check::AtLeast(0),
        "Largest record batch the broker accepts.",
    )
    .dynamic(),
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
    def(
        "log.message.timestamp.before.max.ms",
        ConfigType::Long,
        Some(MAX_LONG),
        Check::AtLeast(0),
        "How far in the past a record's CreateTime may lie, in ms, before a produce is refused.",
    )
    .dynamic(),
    def(
        "log.message.timestamp.after.max.ms",
        ConfigType::Long,
        Some("3600000"),
        Check::AtLeast(0),
        "How far in the future a record's CreateTime may lie, in ms, before a produce is refused.",
    )
    .dynamic(),
    kafka(
        "leader.replication.throttled.rate",
        ConfigType::Long,
        Some(MAX_LONG),
        Check::AtLeast(0),
        FOLLOWER_SIDE_THROTTLE,
    )
    .dynamic(),
    kafka(
        "replica.alter.log.dirs.io.max.bytes.per.second",
        ConfigType::Long,
        Some(MAX_LONG),
        Check::AtLeast(0),
        ALTER_LOG_DIRS_OWN,
    )
    .dynamic(),
    kafka("add.partitions.to.txn.retry.backoff.max.ms", ConfigType::Int, Some("100"), Check::AtLeast(0), TXN_RETRIES_OWN),
    kafka("add.partitions.to.txn.retry.backoff.ms", ConfigType::Int, Some("20"), Check::AtLeast(1), TXN_RETRIES_OWN),
    kafka("alter.config.policy.class.name", ConfigType::Class, None, Check::Any, JAVA_PLUGIN),
    kafka("alter.log.dirs.replication.quota.window.num", ConfigType::Int, Some("11"), Check::AtLeast(1), ALTER_LOG_DIRS_OWN),
    kafka("alter.log.dirs.replication.quota.window.size.seconds", ConfigType::Int, Some("1"), Check::AtLeast(1), ALTER_LOG_DIRS_OWN),
    kafka("auto.leader.rebalance.enable", ConfigType::Boolean, Some("true"), Check::Any, OPERATOR_BALANCES),
    kafka("background.threads", ConfigType::Int, Some("10"), Check::AtLeast(1), ONE_RUNTIME).dynamic(),
    kafka("client.quota.callback.class", ConfigType::Class, None, Check::Any, JAVA_PLUGIN),
    kafka("connections.max.reauth.ms", ConfigType::Long, Some("0"), Check::Any, NO_REAUTH),
    kafka("controlled.shutdown.enable", ConfigType::Boolean, Some("true"), Check::Any, ALWAYS_CONTROLLED),
    kafka("controller.quorum.append.linger.ms", ConfigType::Int, Some("25"), Check::AtLeast(0), QUORUM_OWN),
    def(
        "controller.quorum.bootstrap.servers",
        ConfigType::List,
        Some(""),
        Check::Any,
        "Controllers (host:port) a broker joins the metadata quorum through when controller.quorum.voters is not set; on a controller, its own controller listener alone: the standalone first controller.",
    ),
    kafka("controller.quorum.election.backoff.max.ms", ConfigType::Int, Some("1000"), Check::AtLeast(0), QUORUM_OWN),
    kafka("controller.quorum.election.timeout.ms", ConfigType::Int, Some("1000"), Check::AtLeast(0), QUORUM_OWN),
    kafka("controller.quorum.fetch.timeout.ms", ConfigType::Int, Some("2000"), Check::AtLeast(0), QUORUM_OWN),
    kafka("controller.quorum.request.timeout.ms", ConfigType::Int, Some("2000"), Check::AtLeast(0), QUORUM_OWN),
    kafka("controller.quorum.retry.backoff.ms", ConfigType::Int, Some("20"), Check::AtLeast(0), QUORUM_OWN),
    kafka("controller.socket.timeout.ms", ConfigType::Int, Some("30000"), Check::Any, QUORUM_OWN),
    kafka("create.topic.policy.class.name", ConfigType::Class, None, Check::Any, JAVA_PLUGIN),
    kafka("delegation.token.expiry.check.interval.ms", ConfigType::Long, Some("3600000"), Check::AtLeast(1), NO_DELEGATION_TOKENS),
    kafka("delegation.token.expiry.time.ms", ConfigType::Long, Some("86400000"), Check::AtLeast(1), NO_DELEGATION_TOKENS),
    kafka("delegation.token.max.lifetime.ms", ConfigType::Long, Some("604800000"), Check::AtLeast(1), NO_DELEGATION_TOKENS),
    kafka("delegation.token.secret.key", ConfigType::Password, None, Check::Any, NO_DELEGATION_TOKENS),
    kafka("delete.records.purgatory.purge.interval.requests", ConfigType::Int, Some("1"), Check::Any, JAVA_INTERNAL),
    kafka("early.start.listeners", ConfigType::String, None, Check::Any, BIND_ORDER),
    kafka("fetch.max.bytes", ConfigType::Int, Some("57671680"), Check::AtLeast(1024), NOT_ENFORCED),
    kafka("fetch.purgatory.purge.interval.requests", ConfigType::Int, Some("1000"), Check::Any, JAVA_INTERNAL),
    kafka("group.consumer.assignors", ConfigType::List, Some("uniform,range"), Check::Any, CLASSIC_GROUPS),
    kafka("group.consumer.heartbeat.interval.ms", ConfigType::Int, Some("5000"), Check::AtLeast(1), CLASSIC_GROUPS),
    kafka("group.consumer.max.heartbeat.interval.ms", ConfigType::Int, Some("15000"), Check::AtLeast(1), CLASSIC_GROUPS),
    kafka("group.consumer.max.session.timeout.ms", ConfigType::Int, Some("60000"), Check::AtLeast(1), CLASSIC_GROUPS),
    kafka("group.consumer.max.size", ConfigType::Int, Some("2147483647"), Check::AtLeast(1), CLASSIC_GROUPS),
    kafka("group.consumer.migration.policy", ConfigType::String, Some("bidirectional"), Check::Any, CLASSIC_GROUPS),
    kafka("group.consumer.min.heartbeat.interval.ms", ConfigType::Int, Some("5000"), Check::AtLeast(1), CLASSIC_GROUPS),
    kafka("group.consumer.min.session.timeout.ms", ConfigType::Int, Some("45000"), Check::AtLeast(1), CLASSIC_GROUPS),
    kafka("group.consumer.session.timeout.ms", ConfigType::Int, Some("45000"), Check::AtLeast(1), CLASSIC_GROUPS),
    kafka("group.coordinator.append.linger.ms", ConfigType::Int, Some("5"), Check::AtLeast(0), ONE_RUNTIME),
    kafka("group.coordinator.rebalance.protocols", ConfigType::List, Some("classic,consumer,streams"), Check::ListOf(&["consumer", "classic", "share", "streams"]), CLASSIC_GROUPS),
    kafka("group.coordinator.threads", ConfigType::Int, Some("4"), Check::AtLeast(1), ONE_RUNTIME),
    kafka("group.max.size", ConfigType::Int, Some("2147483647"), Check::AtLeast(1), NOT_ENFORCED),
    kafka("group.share.assignors", ConfigType::List, Some("simple"), Check::Any, NO_SHARE_GROUPS),
    kafka("group.share.delivery.count.limit", ConfigType::Int, Some("5"), Check::Between(2, 10), NO_SHARE_GROUPS),
    kafka("group.share.heartbeat.interval.ms", ConfigType::Int, Some("5000"), Check::AtLeast(1), NO_SHARE_GROUPS),
    kafka("group.share.max.heartbeat.interval.ms", ConfigType::Int, Some("15000"), Check::AtLeast(1), NO_SHARE_GROUPS),
    kafka("group.share.max.record.lock.duration.ms", ConfigType::Int, Some("60000"), Check::Between(30000, 3600000), NO_SHARE_GROUPS),
    kafka("group.share.max.session.timeout.ms", ConfigType::Int, Some("60000"), Check::AtLeast(1), NO_SHARE_GROUPS),
    kafka("group.share.max.share.sessions", ConfigType::Int, Some("2000"), Check::AtLeast(1), NO_SHARE_GROUPS),
    kafka("group.share.max.size", ConfigType::Int, Some("200"), Check::Between(1, 1000), NO_SHARE_GROUPS),
    kafka("group.share.min.heartbeat.interval.ms", ConfigType::Int, Some("5000"), Check::AtLeast(1), NO_SHARE_GROUPS),
    kafka("group.share.min.record.lock.duration.ms", ConfigType::Int, Some("15000"), Check::Between(1000, 30000), NO_SHARE_GROUPS),
    kafka("group.share.min.session.timeout.ms", ConfigType::Int, Some("45000"), Check::AtLeast(1), NO_SHARE_GROUPS),
    kafka("group.share.partition.max.record.locks", ConfigType::Int, Some("2000"), Check::Between(100, 10000), NO_SHARE_GROUPS),
    kafka("group.share.record.lock.duration.ms", ConfigType::Int, Some("30000"), Check::Between(1000, 3600000), NO_SHARE_GROUPS),
    kafka("group.share.session.timeout.ms", ConfigType::Int, Some("45000"), Check::AtLeast(1), NO_SHARE_GROUPS),
    kafka("group.streams.heartbeat.interval.ms", ConfigType::Int, Some("5000"), Check::AtLeast(1), CLASSIC_GROUPS),
    kafka("group.streams.max.heartbeat.interval.ms", ConfigType::Int, Some("15000"), Check::AtLeast(1), CLASSIC_GROUPS),
    kafka("group.streams.max.session.timeout.ms", ConfigType::Int, Some("60000"), Check::AtLeast(1), CLASSIC_GROUPS),
    kafka("group.streams.max.size", ConfigType::Int, Some("2147483647"), Check::AtLeast(1), CLASSIC_GROUPS),
    kafka("group.streams.max.standby.replicas", ConfigType::Int, Some("2"), Check::AtLeast(0), CLASSIC_GROUPS),
    kafka("group.streams.min.heartbeat.interval.ms", ConfigType::Int, Some("5000"), Check::AtLeast(1), CLASSIC_GROUPS),
    kafka("group.streams.min.session.timeout.ms", ConfigType::Int, Some("45000"), Check::AtLeast(1), CLASSIC_GROUPS),
    kafka("group.streams.num.standby.replicas", ConfigType::Int, Some("0"), Check::AtLeast(0), CLASSIC_GROUPS),
    kafka("group.streams.session.timeout.ms", ConfigType::Int, Some("45000"), Check::AtLeast(1), CLASSIC_GROUPS),
    kafka("initial.broker.registration.timeout.ms", ConfigType::Int, Some("60000"), Check::Any, QUORUM_OWN),
    kafka("kafka.metrics.polling.interval.secs", ConfigType::Int, Some("10"), Check::AtLeast(1), PROMETHEUS),
    kafka("kafka.metrics.reporters", ConfigType::List, Some(""), Check::Any, PROMETHEUS),
    kafka("leader.imbalance.check.interval.seconds", ConfigType::Long, Some("300"), Check::AtLeast(1), OPERATOR_BALANCES),
    kafka("log.cleaner.dedupe.buffer.size", ConfigType::Long, Some("134217728"), Check::Any, CLEANER_OWN).dynamic(),
    kafka("log.cleaner.io.buffer.load.factor", ConfigType::Double, Some("0.9"), Check::Any, CLEANER_OWN).dynamic(),
    kafka("log.cleaner.io.buffer.size", ConfigType::Int, Some("524288"), Check::AtLeast(0), CLEANER_OWN).dynamic(),
    kafka("log.cleaner.io.max.bytes.per.second", ConfigType::Double, Some("1.7976931348623157E308"), Check::Any, CLEANER_OWN).dynamic(),
    kafka("log.cleaner.max.compaction.lag.ms", ConfigType::Long, Some(MAX_LONG), Check::AtLeast(1), MAX_COMPACTION_LAG).dynamic(),
    kafka("log.cleaner.threads", ConfigType::Int, Some("1"), Check::AtLeast(0), ONE_RUNTIME).dynamic(),
    kafka("log.flush.offset.checkpoint.interval.ms", ConfigType::Int, Some("60000"), Check::AtLeast(0), CHECKPOINTS_OWN),
    kafka("log.flush.scheduler.interval.ms", ConfigType::Long, Some(MAX_LONG), Check::Any, FLUSH_OWN),
    kafka("log.flush.start.offset.checkpoint.interval.ms", ConfigType::Int, Some("60000"), Check::AtLeast(0), CHECKPOINTS_OWN),
    kafka("log.index.size.max.bytes", ConfigType::Int, Some("10485760"), Check::AtLeast(4), INDEX_GROWS).dynamic(),
    kafka("log.local.retention.bytes", ConfigType::Long, Some("-2"), Check::AtLeast(-2), NO_TIERED).dynamic(),
    kafka("log.local.retention.ms", ConfigType::Long, Some("-2"), Check::AtLeast(-2), NO_TIERED).dynamic(),
    kafka("log.preallocate", ConfigType::Boolean, Some("false"), Check::Any, NO_PREALLOCATE).dynamic(),
    kafka("log.roll.jitter.hours", ConfigType::Int, Some("0"), Check::AtLeast(0), NO_JITTER),
    kafka("log.roll.jitter.ms", ConfigType::Long, None, Check::Any, NO_JITTER).dynamic(),
    kafka("log.segment.delete.delay.ms", ConfigType::Long, Some("60000"), Check::AtLeast(0), DELETE_AT_ONCE).dynamic(),
    kafka("max.connections.per.ip.overrides", ConfigType::String, Some(""), Check::Any, NOT_ENFORCED).dynamic(),
    kafka("max.request.partition.size.limit", ConfigType::Int, Some("2000"), Check::AtLeast(1), NOT_ENFORCED),
    kafka("metadata.log.dir", ConfigType::String, None, Check::Any, QUORUM_OWN),
    kafka("metadata.log.max.record.bytes.between.snapshots", ConfigType::Long, Some("20971520"), Check::AtLeast(1), QUORUM_OWN),
    kafka("metadata.log.max.snapshot.interval.ms", ConfigType::Long, Some("3600000"), Check::AtLeast(0), QUORUM_OWN),
    kafka("metadata.log.segment.bytes", ConfigType::Int, Some("1073741824"), Check::AtLeast(8388608), QUORUM_OWN),
    kafka("metadata.log.segment.ms", ConfigType::Long, Some("604800000"), Check::Any, QUORUM_OWN),
    kafka("metadata.max.idle.interval.ms", ConfigType::Int, Some("500"), Check::AtLeast(0), QUORUM_OWN),
    kafka("metadata.max.retention.bytes", ConfigType::Long, Some("104857600"), Check::Any, QUORUM_OWN),
    kafka("metadata.max.retention.ms", ConfigType::Long, Some("604800000"), Check::Any, QUORUM_OWN),
    kafka("metric.reporters", ConfigType::List, Some("org.apache.kafka.common.metrics.JmxReporter"), Check::Any, PROMETHEUS).dynamic(),
    kafka("metrics.num.samples", ConfigType::Int, Some("2"), Check::AtLeast(1), PROMETHEUS),
    kafka("metrics.recording.level", ConfigType::String, Some("INFO"), Check::Any, PROMETHEUS),
    kafka("metrics.sample.window.ms", ConfigType::Long, Some("30000"), Check::AtLeast(1), PROMETHEUS),
    kafka("num.io.threads", ConfigType::Int, Some("8"), Check::AtLeast(1), ONE_RUNTIME).dynamic(),
    kafka("num.network.threads", ConfigType::Int, Some("3"), Check::AtLeast(1), ONE_RUNTIME).dynamic(),
    kafka("num.recovery.threads.per.data.dir", ConfigType::Int, Some("2"), Check::AtLeast(1), ONE_RUNTIME).dynamic(),
    kafka("num.replica.alter.log.dirs.threads", ConfigType::Int, None, Check::Any, ALTER_LOG_DIRS_OWN),
    kafka("num.replica.fetchers", ConfigType::Int, Some("1"), Check::Any, ONE_RUNTIME).dynamic(),
    kafka("offsets.commit.timeout.ms", ConfigType::Int, Some("5000"), Check::AtLeast(1), JAVA_INTERNAL),
    kafka("offsets.load.buffer.size", ConfigType::Int, Some("5242880"), Check::AtLeast(1), JAVA_INTERNAL),
    kafka("offsets.retention.check.interval.ms", ConfigType::Long, Some("600000"), Check::AtLeast(1), OFFSETS_KEPT),
    kafka("offsets.retention.minutes", ConfigType::Int, Some("10080"), Check::AtLeast(1), OFFSETS_KEPT),
    kafka("offsets.topic.compression.codec", ConfigType::Int, Some("0"), Check::Any, NOT_ENFORCED),
    kafka("principal.builder.class", ConfigType::Class, Some("org.apache.kafka.common.security.authenticator.DefaultKafkaPrincipalBuilder"), Check::Any, JAVA_PLUGIN).dynamic(),
    kafka("producer.id.expiration.ms", ConfigType::Int, Some("86400000"), Check::AtLeast(1), PRODUCERS_KEPT).dynamic(),
    kafka("producer.purgatory.purge.interval.requests", ConfigType::Int, Some("1000"), Check::Any, JAVA_INTERNAL),
    kafka("queued.max.requests", ConfigType::Int, Some("500"), Check::AtLeast(1), BYTES_BOUND),
    kafka("remote.fetch.max.wait.ms", ConfigType::Int, Some("500"), Check::AtLeast(1), NO_TIERED).dynamic(),
    kafka("remote.list.offsets.request.timeout.ms", ConfigType::Long, Some("30000"), Check::AtLeast(1), NO_TIERED).dynamic(),
    kafka("remote.log.index.file.cache.total.size.bytes", ConfigType::Long, Some("1073741824"), Check::AtLeast(1), NO_TIERED).dynamic(),
    kafka("remote.log.manager.copier.thread.pool.size", ConfigType::Int, Some("10"), Check::AtLeast(1), NO_TIERED).dynamic(),
    kafka("remote.log.manager.copy.max.bytes.per.second", ConfigType::Long, Some(MAX_LONG), Check::AtLeast(1), NO_TIERED).dynamic(),
    kafka("remote.log.manager.copy.quota.window.num", ConfigType::Int, Some("11"), Check::AtLeast(1), NO_TIERED),
    kafka("remote.log.manager.copy.quota.window.size.seconds", ConfigType::Int, Some("1"), Check::AtLeast(1), NO_TIERED),
    kafka("remote.log.manager.expiration.thread.pool.size", ConfigType::Int, Some("10"), Check::AtLeast(1), NO_TIERED).dynamic(),
    kafka("remote.log.manager.fetch.max.bytes.per.second", ConfigType::Long, Some(MAX_LONG), Check::AtLeast(1), NO_TIERED).dynamic(),
    kafka("remote.log.manager.fetch.quota.window.num", ConfigType::Int, Some("11"), Check::AtLeast(1), NO_TIERED),
    kafka("remote.log.manager.fetch.quota.window.size.seconds", ConfigType::Int, Some("1"), Check::AtLeast(1), NO_TIERED),
    kafka("remote.log.manager.task.interval.ms", ConfigType::Long, Some("30000"), Check::AtLeast(1), NO_TIERED),
    kafka("remote.log.manager.thread.pool.size", ConfigType::Int, Some("2"), Check::AtLeast(1), NO_TIERED),
    kafka("remote.log.metadata.custom.metadata.max.bytes", ConfigType::Int, Some("128"), Check::AtLeast(0), NO_TIERED),
    kafka("remote.log.metadata.manager.class.name", ConfigType::String, Some("org.apache.kafka.server.log.remote.metadata.storage.TopicBasedRemoteLogMetadataManager"), Check::Any, NO_TIERED),
    kafka("remote.log.metadata.manager.class.path", ConfigType::String, None, Check::Any, NO_TIERED),
    kafka("remote.log.metadata.manager.impl.prefix", ConfigType::String, Some("rlmm.config."), Check::Any, NO_TIERED),
    kafka("remote.log.metadata.manager.listener.name", ConfigType::String, None, Check::Any, NO_TIERED),
    kafka("remote.log.reader.max.pending.tasks", ConfigType::Int, Some("100"), Check::AtLeast(1), NO_TIERED),
    kafka("remote.log.reader.threads", ConfigType::Int, Some("10"), Check::AtLeast(1), NO_TIERED).dynamic(),
    kafka("remote.log.storage.manager.class.name", ConfigType::String, None, Check::Any, NO_TIERED),
    kafka("remote.log.storage.manager.class.path", ConfigType::String, None, Check::Any, NO_TIERED),
    kafka("remote.log.storage.manager.impl.prefix", ConfigType::String, Some("rsm.config."), Check::Any, NO_TIERED),
    kafka("remote.log.storage.system.enable", ConfigType::Boolean, Some("false"), Check::Any, NO_TIERED),
    kafka("replica.fetch.backoff.ms", ConfigType::Int, Some("1000"), Check::AtLeast(0), FETCHER_TUNING),
    kafka("replica.fetch.min.bytes", ConfigType::Int, Some("1"), Check::Any, FETCHER_TUNING),
    kafka("replica.fetch.response.max.bytes", ConfigType::Int, Some("10485760"), Check::AtLeast(0), FETCHER_TUNING),
    kafka("replica.high.watermark.checkpoint.interval.ms", ConfigType::Long, Some("5000"), Check::Any, FETCHER_TUNING),
    kafka("replica.selector.class", ConfigType::String, None, Check::Any, FETCHER_TUNING),
    kafka("replica.socket.receive.buffer.bytes", ConfigType::Int, Some("65536"), Check::Any, OS_BUFFERS),
    kafka("replica.socket.timeout.ms", ConfigType::Int, Some("30000"), Check::Any, FETCHER_TUNING),
    kafka("replication.quota.window.num", ConfigType::Int, Some("11"), Check::AtLeast(1), NO_QUOTAS),
    kafka("replication.quota.window.size.seconds", ConfigType::Int, Some("1"), Check::AtLeast(1), NO_QUOTAS),
    kafka("sasl.client.callback.handler.class", ConfigType::Class, None, Check::Any, JAVA_PLUGIN),
    kafka("sasl.jaas.config", ConfigType::Password, None, Check::Any, LISTENER_JAAS).dynamic(),
    kafka("sasl.kerberos.kinit.cmd", ConfigType::String, Some("/usr/bin/kinit"), Check::Any, NO_GSSAPI).dynamic(),
    kafka("sasl.kerberos.min.time.before.relogin", ConfigType::Long, Some("60000"), Check::Any, NO_GSSAPI).dynamic(),
    kafka("sasl.kerberos.principal.to.local.rules", ConfigType::List, Some("DEFAULT"), Check::Any, NO_GSSAPI).dynamic(),
    kafka("sasl.kerberos.service.name", ConfigType::String, None, Check::Any, NO_GSSAPI).dynamic(),
    kafka("sasl.kerberos.ticket.renew.jitter", ConfigType::Double, Some("0.05"), Check::Any, NO_GSSAPI).dynamic(),
    kafka("sasl.kerberos.ticket.renew.window.factor", ConfigType::Double, Some("0.8"), Check::Any, NO_GSSAPI).dynamic(),
    kafka("sasl.login.callback.handler.class", ConfigType::Class, None, Check::Any, NO_LOGIN_MODULES),
    kafka("sasl.login.class", ConfigType::Class, None, Check::Any, NO_LOGIN_MODULES),
    kafka("sasl.login.connect.timeout.ms", ConfigType::Int, None, Check::Any, NO_LOGIN_MODULES),
    kafka("sasl.login.read.timeout.ms", ConfigType::Int, None, Check::Any, NO_LOGIN_MODULES),
    kafka("sasl.login.refresh.buffer.seconds", ConfigType::Short, Some("300"), Check::Any, NO_LOGIN_MODULES).dynamic(),
    kafka("sasl.login.refresh.min.period.seconds", ConfigType::Short, Some("60"), Check::Any, NO_LOGIN_MODULES).dynamic(),
    kafka("sasl.login.refresh.window.factor", ConfigType::Double, Some("0.8"), Check::Any, NO_LOGIN_MODULES).dynamic(),
    kafka("sasl.login.refresh.window.jitter", ConfigType::Double, Some("0.05"), Check::Any, NO_LOGIN_MODULES).dynamic(),
    kafka("sasl.login.retry.backoff.max.ms", ConfigType::Long, Some("10000"), Check::Any, NO_LOGIN_MODULES),
    kafka("sasl.login.retry.backoff.ms", ConfigType::Long, Some("100"), Check::Any, NO_LOGIN_MODULES),
    kafka("sasl.mechanism.controller.protocol", ConfigType::String, Some("GSSAPI"), Check::Any, PLAIN_QUORUM),
    kafka("sasl.oauthbearer.assertion.algorithm", ConfigType::String, Some("RS256"), Check::Any, NO_OAUTH),
    kafka("sasl.oauthbearer.assertion.claim.aud", ConfigType::String, None, Check::Any, NO_OAUTH),
    kafka("sasl.oauthbearer.assertion.claim.exp.seconds", ConfigType::Int, Some("300"), Check::Between(0, 86400), NO_OAUTH),
    kafka("sasl.oauthbearer.assertion.claim.iss", ConfigType::String, None, Check::Any, NO_OAUTH),
    kafka("sasl.oauthbearer.assertion.claim.jti.include", ConfigType::Boolean, Some("false"), Check::Any, NO_OAUTH),
    kafka("sasl.oauthbearer.assertion.claim.nbf.seconds", ConfigType::Int, Some("60"), Check::Between(0, 3600), NO_OAUTH),
    kafka("sasl.oauthbearer.assertion.claim.sub", ConfigType::String, None, Check::Any, NO_OAUTH),
    kafka("sasl.oauthbearer.assertion.file", ConfigType::String, None, Check::Any, NO_OAUTH),
    kafka("sasl.oauthbearer.assertion.private.key.file", ConfigType::String, None, Check::Any, NO_OAUTH),
    kafka("sasl.oauthbearer.assertion.private.key.passphrase", ConfigType::Password, None, Check::Any, NO_OAUTH),
    kafka("sasl.oauthbearer.assertion.template.file", ConfigType::String, None, Check::Any, NO_OAUTH),
    kafka("sasl.oauthbearer.client.credentials.client.id", ConfigType::String, None, Check::Any, NO_OAUTH),
    kafka("sasl.oauthbearer.client.credentials.client.secret", ConfigType::Password, None, Check::Any, NO_OAUTH),
    kafka("sasl.oauthbearer.clock.skew.seconds", ConfigType::Int, Some("30"), Check::Any, NO_OAUTH),
    kafka("sasl.oauthbearer.expected.audience", ConfigType::List, None, Check::Any, NO_OAUTH),
    kafka("sasl.oauthbearer.expected.issuer", ConfigType::String, None, Check::Any, NO_OAUTH),
    kafka("sasl.oauthbearer.jwks.endpoint.refresh.ms", ConfigType::Long, Some("3600000"), Check::Any, NO_OAUTH),
    kafka("sasl.oauthbearer.jwks.endpoint.retry.backoff.max.ms", ConfigType::Long, Some("10000"), Check::Any, NO_OAUTH),
    kafka("sasl.oauthbearer.jwks.endpoint.retry.backoff.ms", ConfigType::Long, Some("100"), Check::Any, NO_OAUTH),
    kafka("sasl.oauthbearer.jwks.endpoint.url", ConfigType::String, None, Check::Any, NO_OAUTH),
    kafka("sasl.oauthbearer.jwt.retriever.class", ConfigType::Class, Some("org.apache.kafka.common.security.oauthbearer.DefaultJwtRetriever"), Check::Any, NO_OAUTH),
    kafka("sasl.oauthbearer.jwt.validator.class", ConfigType::Class, Some("org.apache.kafka.common.security.oauthbearer.DefaultJwtValidator"), Check::Any, NO_OAUTH),
    kafka("sasl.oauthbearer.scope", ConfigType::String, None, Check::Any, NO_OAUTH),
    kafka("sasl.oauthbearer.scope.claim.name", ConfigType::String, Some("scope"), Check::Any, NO_OAUTH),
    kafka("sasl.oauthbearer.sub.claim.name", ConfigType::String, Some("sub"), Check::Any, NO_OAUTH),
    kafka("sasl.oauthbearer.token.endpoint.url", ConfigType::String, None, Check::Any, NO_OAUTH),
    kafka("sasl.server.callback.handler.class", ConfigType::Class, None, Check::Any, JAVA_PLUGIN),
    kafka("sasl.server.max.receive.size", ConfigType::Int, Some("524288"), Check::Any, JAVA_INTERNAL),
    kafka("security.inter.broker.protocol", ConfigType::String, Some("PLAINTEXT"), Check::OneOf(&["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]), BY_LISTENER),
    kafka("security.providers", ConfigType::String, None, Check::Any, PEM_ONLY),
    kafka("share.coordinator.append.linger.ms", ConfigType::Int, Some("5"), Check::AtLeast(0), NO_SHARE_GROUPS),
    kafka("share.coordinator.load.buffer.size", ConfigType::Int, Some("5242880"), Check::AtLeast(1), NO_SHARE_GROUPS),
    kafka("share.coordinator.snapshot.update.records.per.snapshot", ConfigType::Int, Some("500"), Check::AtLeast(0), NO_SHARE_GROUPS),
    kafka("share.coordinator.state.topic.compression.codec", ConfigType::Int, Some("0"), Check::Any, NO_SHARE_GROUPS),
    kafka("share.coordinator.state.topic.min.isr", ConfigType::Short, Some("2"), Check::AtLeast(1), NO_SHARE_GROUPS),
    kafka("share.coordinator.state.topic.num.partitions", ConfigType::Int, Some("50"), Check::AtLeast(1), NO_SHARE_GROUPS),
    kafka("share.coordinator.state.topic.replication.factor", ConfigType::Short, Some("3"), Check::AtLeast(1), NO_SHARE_GROUPS),
    kafka("share.coordinator.state.topic.segment.bytes", ConfigType::Int, Some("104857600"), Check::AtLeast(1), NO_SHARE_GROUPS),
    kafka("share.coordinator.threads", ConfigType::Int, Some("1"), Check::AtLeast(1), NO_SHARE_GROUPS),
    kafka("share.coordinator.write.timeout.ms", ConfigType::Int, Some("5000"), Check::AtLeast(1), NO_SHARE_GROUPS),
    kafka("share.fetch.purgatory.purge.interval.requests", ConfigType::Int, Some("1000"), Check::Any, NO_SHARE_GROUPS),
    kafka("socket.connection.setup.timeout.max.ms", ConfigType::Long, Some("30000"), Check::Any, FETCHER_TUNING),
    kafka("socket.connection.setup.timeout.ms", ConfigType::Long, Some("10000"), Check::Any, FETCHER_TUNING),
    kafka("socket.listen.backlog.size", ConfigType::Int, Some("50"), Check::AtLeast(1), OS_BUFFERS),
    kafka("socket.receive.buffer.bytes", ConfigType::Int, Some("102400"), Check::Any, OS_BUFFERS),
    kafka("socket.send.buffer.bytes", ConfigType::Int, Some("102400"), Check::Any, OS_BUFFERS),
    kafka("ssl.allow.dn.changes", ConfigType::Boolean, Some("false"), Check::Any, PEM_ONLY),
    kafka("ssl.allow.san.changes", ConfigType::Boolean, Some("false"), Check::Any, PEM_ONLY),
    kafka("ssl.cipher.suites", ConfigType::List, Some(""), Check::Any, PEM_ONLY).dynamic(),
    kafka("ssl.enabled.protocols", ConfigType::List, Some("TLSv1.2,TLSv1.3"), Check::Any, PEM_ONLY).dynamic(),
    kafka("ssl.endpoint.identification.algorithm", ConfigType::String, Some("https"), Check::Any, PEM_ONLY).dynamic(),
    kafka("ssl.engine.factory.class", ConfigType::Class, None, Check::Any, PEM_ONLY).dynamic(),
    kafka("ssl.key.password", ConfigType::Password, None, Check::Any, PEM_ONLY).dynamic(),
    kafka("ssl.keymanager.algorithm", ConfigType::String, Some("SunX509"), Check::Any, PEM_ONLY).dynamic(),
    kafka("ssl.keystore.certificate.chain", ConfigType::Password, None, Check::Any, PEM_ONLY).dynamic(),
    kafka("ssl.keystore.key", ConfigType::Password, None, Check::Any, PEM_ONLY).dynamic(),
    kafka("ssl.keystore.password", ConfigType::Password, None, Check::Any, PEM_ONLY).dynamic(),
    kafka("ssl.protocol", ConfigType::String, Some("TLSv1.3"), Check::Any, PEM_ONLY).dynamic(),
    kafka("ssl.provider", ConfigType::String, None, Check::Any, PEM_ONLY).dynamic(),
    kafka("ssl.secure.random.implementation", ConfigType::String, None, Check::Any, PEM_ONLY).dynamic(),
    kafka("ssl.trustmanager.algorithm", ConfigType::String, Some("PKIX"), Check::Any, PEM_ONLY).dynamic(),
    kafka("ssl.truststore.certificates", ConfigType::Password, None, Check::Any, PEM_ONLY).dynamic(),
    kafka("ssl.truststore.password", ConfigType::Password, None, Check::Any, PEM_ONLY).dynamic(),
    kafka("telemetry.max.bytes", ConfigType::Int, Some("1048576"), Check::AtLeast(1), PROMETHEUS),
    def("transaction.abort.timed.out.transaction.cleanup.interval.ms", ConfigType::Int, Some("10000"), Check::AtLeast(1), "How often the transaction coordinator aborts transactions past their timeout (fencing their producers)."),
    def("transaction.max.timeout.ms", ConfigType::Int, Some("900000"), Check::AtLeast(1), "The longest transaction.timeout.ms a producer may ask for; a longer one is refused with INVALID_TRANSACTION_TIMEOUT."),
    def("transaction.partition.verification.enable", ConfigType::Boolean, Some("true"), Check::Any, "Before a partition leader appends a producer's first transactional batch of a transaction, it asks the transaction coordinator whether the partition is in it (KIP-890); the value of server.properties applies.").dynamic(),
    def("transaction.remove.expired.transaction.cleanup.interval.ms", ConfigType::Int, Some("3600000"), Check::AtLeast(1), "How often the transaction coordinator forgets transactional ids idle for transactional.id.expiration.ms."),
    kafka("transaction.state.log.load.buffer.size", ConfigType::Int, Some("5242880"), Check::AtLeast(1), TXN_LOAD_OWN),
    def("transaction.state.log.min.isr", ConfigType::Int, Some("2"), Check::AtLeast(1), "min.insync.replicas of __transaction_state (at most its replication factor)."),
    def("transaction.state.log.num.partitions", ConfigType::Int, Some("50"), Check::AtLeast(1), "Partitions of __transaction_state, created on the first transactional producer's FindCoordinator."),
    def("transaction.state.log.replication.factor", ConfigType::Short, Some("3"), Check::AtLeast(1), "Replicas of __transaction_state; fewer when fewer brokers are alive at its creation (with a warning)."),
    def("transaction.state.log.segment.bytes", ConfigType::Int, Some("104857600"), Check::AtLeast(1), "segment.bytes of __transaction_state."),
    kafka("transaction.two.phase.commit.enable", ConfigType::Boolean, Some("false"), Check::Any, NO_TWO_PHASE_COMMIT),
    def("transactional.id.expiration.ms", ConfigType::Int, Some("604800000"), Check::AtLeast(1), "A transactional id with no transaction for this long is forgotten by its coordinator."),

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
        broker_synonyms: &[
            ("log.flush.interval.ms", 1),
            ("log.flush.scheduler.interval.ms", 1),
        ],
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
            Check::AtLeast(MIN_SEGMENT_BYTES),
            "Segment size.",
        ),
        broker_synonyms: &[("log.segment.bytes", 1)],
    },
    TopicDef {
        def: def(
            "internal.segment.bytes",
            ConfigType::Int,
            None,
            Check::Any,
            "Segment size for tests, with no minimum; takes precedence over segment.bytes.",
        )
        .internal(),
        broker_synonyms: &[],
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
    TopicDef {
        def: kafka(
            "file.delete.delay.ms",
            ConfigType::Long,
            Some("60000"),
            Check::AtLeast(0),
            DELETE_AT_ONCE,
        ),
        broker_synonyms: &[("log.segment.delete.delay.ms", 1)],
    },
    TopicDef {
        def: kafka(
            "follower.replication.throttled.replicas",
            ConfigType::List,
            Some(""),
            Check::ThrottledReplicas,
            FOLLOWER_SIDE_THROTTLE,
        ),
        broker_synonyms: &[],
    },
    TopicDef {
        def: kafka(
            "leader.replication.throttled.replicas",
            ConfigType::List,
            Some(""),
            Check::ThrottledReplicas,
            FOLLOWER_SIDE_THROTTLE,
        ),
        broker_synonyms: &[],
    },
    TopicDef {
        def: kafka(
            "local.retention.bytes",
            ConfigType::Long,
            Some("-2"),
            Check::AtLeast(-2),
            NO_TIERED,
        ),
        broker_synonyms: &[("log.local.retention.bytes", 1)],
    },
    TopicDef {
        def: kafka(
            "local.retention.ms",
            ConfigType::Long,
            Some("-2"),
            Check::AtLeast(-2),
            NO_TIERED,
        ),
        broker_synonyms: &[("log.local.retention.ms", 1)],
    },
    TopicDef {
        def: kafka(
            "max.compaction.lag.ms",
            ConfigType::Long,
            Some(MAX_LONG),
            Check::AtLeast(1),
            MAX_COMPACTION_LAG,
        ),
        broker_synonyms: &[("log.cleaner.max.compaction.lag.ms", 1)],
    },
    TopicDef {
        def: def(
            "message.timestamp.after.max.ms",
            ConfigType::Long,
            Some("3600000"),
            Check::AtLeast(0),
            "How far in the future a record's CreateTime may lie, in ms.",
        ),
        broker_synonyms: &[("log.message.timestamp.after.max.ms", 1)],
    },
    TopicDef {
        def: def(
            "message.timestamp.before.max.ms",
            ConfigType::Long,
            Some(MAX_LONG),
            Check::AtLeast(0),
            "How far in the past a record's CreateTime may lie, in ms.",
        ),
        broker_synonyms: &[("log.message.timestamp.before.max.ms", 1)],
    },
    TopicDef {
        def: kafka(
            "preallocate",
            ConfigType::Boolean,
            Some("false"),
            Check::Any,
            NO_PREALLOCATE,
        ),
        broker_synonyms: &[("log.preallocate", 1)],
    },
    TopicDef {
        def: kafka(
            "remote.log.copy.disable",
            ConfigType::Boolean,
            Some("false"),
            Check::Any,
            NO_TIERED,
        ),
        broker_synonyms: &[],
    },
    TopicDef {
        def: kafka(
            "remote.log.delete.on.disable",
            ConfigType::Boolean,
            Some("false"),
            Check::Any,
            NO_TIERED,
        ),
        broker_synonyms: &[],
    },
    TopicDef {
        def: kafka(
            "remote.storage.enable",
            ConfigType::Boolean,
            Some("false"),
            Check::OneOf(&["false"]),
            NO_TIERED,
        ),
        broker_synonyms: &[],
    },
    TopicDef {
        def: kafka(
            "segment.index.bytes",
            ConfigType::Int,
            Some("10485760"),
            Check::AtLeast(4),
            INDEX_GROWS,
        ),
        broker_synonyms: &[("log.index.size.max.bytes", 1)],
    },
    TopicDef {
        def: kafka(
            "segment.jitter.ms",
            ConfigType::Long,
            Some("0"),
            Check::AtLeast(0),
            NO_JITTER,
        ),
        broker_synonyms: &[
            ("log.roll.jitter.ms", 1),
            ("log.roll.jitter.hours", 3600000),
        ],
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
        ConfigType::Boolean => match value {
            "true" | "false" => None,
            _ => return Err(invalid("true or false".to_string())),
        },
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
        ConfigType::String | ConfigType::List | ConfigType::Class | ConfigType::Password => None,
    };
    match (def.check, number) {
        (Check::AtLeast(min), Some(n)) if n < min => Err(invalid(format!("at least {min}"))),
        (Check::Between(min, max), Some(n)) if n < min || n > max => {
            Err(invalid(format!("between {min} and {max}")))
        }
        (Check::BetweenOr(min, max, other), Some(n)) if n != other && (n < min || n > max) => {
            Err(invalid(format!("between {min} and {max}, or {other}")))
        }
        (Check::ThrottledReplicas, _) => {
            let pair = |item: &str| {
                item.split_once(':').is_some_and(|(partition, broker)| {
                    partition.trim().parse::<u32>().is_ok() && broker.trim().parse::<u32>().is_ok()
                })
            };
            let items: Vec<&str> = value
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .collect();
            if value.trim() == "*" || items.iter().all(|item| pair(item)) {
                Ok(())
            } else {
                Err(invalid(
                    "`*` or a comma-separated list of partition:broker pairs".to_string(),
                ))
            }
        }
        (Check::OneOf(["false"]), _) if value != "false" => Err(invalid(format!(
            "false ({})",
            def.no_effect.unwrap_or("it cannot be turned on here")
        ))),
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
        let err = validate(seg, "1048575").expect_err("under 1 MiB");
        assert!(err.to_string().contains("1048576"), "{err}");
        assert!(validate(seg, "1048576").is_ok());
        let log_seg = broker_def("log.segment.bytes").expect("known");
        assert!(validate(log_seg, "1048575").is_err());
        assert!(validate(log_seg, "1048576").is_ok());
        let internal = &topic_def("internal.segment.bytes").expect("known").def;
        assert!(internal.internal);
        for good in ["20000", "1", "-5"] {
            assert!(validate(internal, good).is_ok(), "{good}");
        }
        assert!(validate(internal, "abc").is_err());
        assert!(validate(internal, "2147483648").is_err());
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

    #[test]
    fn kafkas_level_throttled_replica_and_tiered_storage_rules_hold() {
        let gzip = &topic_def("compression.gzip.level").expect("known").def;
        for (value, ok) in [
            ("-1", true),
            ("1", true),
            ("9", true),
            ("0", false),
            ("10", false),
        ] {
            assert_eq!(validate(gzip, value).is_ok(), ok, "{value}");
        }
        let replicas = &topic_def("leader.replication.throttled.replicas")
            .expect("known")
            .def;
        for (value, ok) in [
            ("", true),
            ("*", true),
            ("0:1,1:2", true),
            ("0", false),
            ("a:b", false),
        ] {
            assert_eq!(validate(replicas, value).is_ok(), ok, "{value}");
        }
        let tiered = &topic_def("remote.storage.enable").expect("known").def;
        assert!(validate(tiered, "false").is_ok());
        let err = validate(tiered, "true").expect_err("no tiered storage");
        assert!(err.to_string().contains("tiered storage"), "{err}");
    }

    #[test]
    fn only_settings_kafka_changes_at_run_time_are_dynamic_and_secrets_are_sensitive() {
        let dynamic = |name: &str| broker_def(name).expect(name).dynamic;
        assert!(dynamic("sasl.kerberos.min.time.before.relogin"));
        assert!(dynamic("message.max.bytes"));
        assert!(!dynamic("num.partitions"));
        assert!(!dynamic("controller.quorum.bootstrap.servers"));
        assert!(broker_def("ssl.keystore.password")
            .expect("known")
            .is_sensitive());
        let io = broker_def("num.io.threads").expect("known");
        assert!(io.no_effect.is_some() && io.documentation().contains("no effect"));
        assert!(broker_def("log.retention.hours")
            .expect("known")
            .no_effect
            .is_none());
    }
}
