//! The broker's shared state: configuration, the metadata quorum, the hosted partition
//! replicas and the group coordinator, and the operations that change topics through the
//! metadata (create, grow, configure, delete).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use parking_lot::{Mutex, RwLock};
use thiserror::Error;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::client::Connector;
use crate::config::{self, BrokerConfig, Listener, TopicConfig};
use crate::controller::image::{
    BrokerRegistration, CommandResult, MetadataCommand, MetadataImage, PartitionState, TopicImage,
};
use crate::controller::store::StandaloneStore;
use crate::controller::{placement, raft, Quorum, QuorumError};
use crate::fetch_session::FetchSessionCache;
use crate::group::offsets::{self, OffsetRecord};
use crate::group::{GroupCoordinator, OFFSETS_TOPIC};
use crate::log::dirs::{LogDirError, LogDirs};
use crate::log::LogConfig;
use crate::metrics::Metrics;
use crate::replica::fetcher::Fetchers;
use crate::replica::Partition;
use crate::txn::{TransactionCoordinator, TRANSACTION_TOPIC};

/// A Kafka error code with the message that explains it to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ResponseError,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ResponseError, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }
}

/// Why the broker could not start.
#[derive(Debug, Error)]
pub enum StartError {
    #[error(transparent)]
    LogDirs(#[from] LogDirError),
    #[error("cannot open the metadata: {0}")]
    Metadata(#[from] crate::controller::store::MetadataError),
    #[error("cannot start the metadata quorum: {0}")]
    Quorum(#[from] raft::QuorumError),
    #[error("cannot register with the controller: {0}")]
    Register(String),
    #[error("invalid TLS settings for the SSL inter-broker listener: {0}")]
    InterBrokerTls(#[from] crate::security::tls::TlsError),
}

/// The local replicas, by topic and partition index.
pub(crate) type HostedPartitions = HashMap<Arc<str>, BTreeMap<i32, Arc<Partition>>>;

/// Producer ids reserved from the metadata at a time.
const PRODUCER_ID_BLOCK: i64 = 1000;

/// The state every connection shares.
pub struct Broker {
    pub config: BrokerConfig,
    /// The address of the inter-broker listener, as other brokers are told to reach it.
    pub advertised: Listener,
    /// The advertised address of every client listener.
    pub endpoints: Vec<Listener>,
    pub metrics: Metrics,
    pub groups: GroupCoordinator,
    pub quorum: Quorum,
    /// Changes at every start, so the cluster tells a restart from a retry.
    pub incarnation: Uuid,
    pub(crate) partitions: RwLock<HostedPartitions>,
    /// The log directories (`log.dirs`).
    pub(crate) log_dirs: LogDirs,
    /// Where each partition found on disk at start is (its position in `log.dirs`), for
    /// opening it there.
    pub(crate) found_logs: Mutex<HashMap<(String, i32), usize>>,
    /// Replicas whose log directory failed: not opened again until the broker restarts, and
    /// answered with KAFKA_STORAGE_ERROR.
    pub(crate) offline_replicas: Mutex<HashSet<(String, i32)>>,
    /// Where replicas report I/O errors that fail their log directory.
    pub(crate) dir_failures: crate::replica::DirFailures,
    /// Why the broker is shutting down on its own (every log directory failed, ...).
    failure: Mutex<Option<String>>,
    /// The directory AlterReplicaLogDirs asked for a replica this broker does not host yet:
    /// it is created there (Kafka's preferred log directory).
    pub(crate) preferred_dirs: Mutex<HashMap<(String, i32), usize>>,
    /// `__consumer_offsets` partitions whose groups this broker coordinates, with the leader
    /// epoch at which it loaded them.
    pub(crate) coordinated: Mutex<BTreeMap<i32, i32>>,
    pub(crate) fetchers: Fetchers,
    /// The incremental fetch sessions of the consumers and followers fetching here.
    pub(crate) fetch_sessions: FetchSessionCache,
    /// How this broker reaches the others' inter-broker listeners (replication, heartbeats).
    pub(crate) connector: Connector,
    /// Serialises applying the metadata to the local replicas.
    pub(crate) reconciling: tokio::sync::Mutex<()>,
    producer_ids: Mutex<(i64, i64)>,
    /// The rates clients are measured at against their quotas.
    pub quotas: crate::quota::manager::QuotaManager,
    /// The transaction coordinator of the `__transaction_state` partitions led here.
    pub txns: TransactionCoordinator,
    pub shutdown: CancellationToken,
}

impl Broker {
    /// Opens the metadata (standalone, or the quorum of `controller.quorum.voters`), registers
    /// this broker, and brings up the local replicas the metadata assigns to it.
    pub async fn start(
        config: BrokerConfig,
        endpoints: Vec<Listener>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Broker>, StartError> {
        let advertised = endpoints
            .iter()
            .find(|e| e.name == config.listener.name)
            .cloned()
            .unwrap_or_else(|| config.listener.clone());
        let log_dirs = LogDirs::open(&config.log_dirs, config.node_id)?;
        let (dir_failures, failed_dirs) = crate::replica::DirFailures::channel();
        let found_logs = log_dirs.scan()?;
        let dir = log_dirs.metadata_dir().to_path_buf();
        // A standalone broker reaches no other broker: only a cluster's needs TLS or SASL.
        let connector = if !config.in_cluster() {
            Connector::plain()
        } else {
            Connector {
                tls: match config.security.tls.get(&config.listener.name) {
                    Some(settings) if config.inter_broker_protocol().uses_tls() => {
                        Some(crate::security::tls::client_config(settings)?)
                    }
                    _ => None,
                },
                sasl: config.inter_broker_sasl.clone().map(Arc::new),
            }
        };
        let quorum = if !config.in_cluster() {
            Quorum::Standalone(Arc::new(StandaloneStore::open(&dir)?))
        } else {
            // A broker without a controller listener of its own (Kafka's broker-only node)
            // takes quorum traffic on an ephemeral port beside its inter-broker listener.
            let controller = config.controller_listener.clone();
            let listen = match &controller {
                Some(l) => l.bind_address(),
                None => Listener {
                    port: 0,
                    ..config.listener.clone()
                }
                .bind_address(),
            };
            let advertised_controller = match &controller {
                Some(l) if !l.host.is_empty() && l.host != "0.0.0.0" => {
                    format!("{}:{}", l.host, l.port)
                }
                Some(l) => format!("{}:{}", advertised.host, l.port),
                None => Listener {
                    port: 0,
                    ..advertised.clone()
                }
                .bind_address(),
            };
            let raft_config = raft::RaftConfig {
                node_id: u64::try_from(config.node_id).unwrap_or_default(),
                voters: config
                    .voters
                    .iter()
                    .map(|(id, address)| (u64::try_from(*id).unwrap_or_default(), address.clone()))
                    .collect(),
                advertised: advertised_controller,
                bootstrap: config.quorum_bootstrap.clone(),
                listen,
                dir: dir.join("__cluster_metadata"),
                tls: match &config.controller_tls {
                    Some(settings) => Some(raft::QuorumTls {
                        acceptor: tokio_rustls::TlsAcceptor::from(
                            crate::security::tls::server_config(settings)?,
                        ),
                        connector: tokio_rustls::TlsConnector::from(
                            crate::security::tls::client_config(settings)?,
                        ),
                    }),
                    None => None,
                },
                ..raft::RaftConfig::default()
            };
            Quorum::Raft(raft::RaftQuorum::start(raft_config, shutdown.clone()).await?)
        };
        let quotas = crate::quota::manager::QuotaManager::new(
            config.quota_window_num,
            config.quota_window_size,
            config.controller_quota_span,
        );
        let metrics = Metrics::new();
        let fetch_sessions =
            FetchSessionCache::new(config.fetch_session_slots, metrics.fetch_sessions.clone());
        let broker = Arc::new(Broker {
            groups: GroupCoordinator::new(config.group.clone()),
            txns: TransactionCoordinator::new(config.txn.clone()),
            config,
            advertised,
            endpoints,
            metrics,
            quorum,
            incarnation: Uuid::new_v4(),
            partitions: RwLock::new(HashMap::new()),
            log_dirs,
            found_logs: Mutex::new(found_logs),
            offline_replicas: Mutex::new(HashSet::new()),
            dir_failures,
            failure: Mutex::new(None),
            preferred_dirs: Mutex::new(HashMap::new()),
            coordinated: Mutex::new(BTreeMap::new()),
            fetchers: Fetchers::default(),
            fetch_sessions,
            connector,
            reconciling: tokio::sync::Mutex::new(()),
            producer_ids: Mutex::new((0, 0)),
            quotas,
            shutdown,
        });
        tokio::spawn(crate::replica::dir_failure::run(
            Arc::clone(&broker),
            failed_dirs,
        ));
        broker.register().await?;
        broker.log_dirs.write_meta(&broker.cluster_id())?;
        crate::replica::manager::reconcile(&broker).await;
        let image = broker.image();
        tracing::info!(
            dirs = ?broker.log_dirs.dirs().iter().map(|d| d.path.display().to_string()).collect::<Vec<_>>(),
            cluster_id = image.cluster_id,
            brokers = image.brokers.len(),
            topics = image.topics.len(),
            partitions = broker.partitions.read().values().map(BTreeMap::len).sum::<usize>(),
            "metadata loaded"
        );
        Ok(broker)
    }

    /// Registers this broker (and names the cluster on its first start).
    async fn register(&self) -> Result<(), StartError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let outcome = async {
                if self.image().cluster_id.is_empty() {
                    self.quorum
                        .propose(MetadataCommand::InitCluster {
                            cluster_id: new_cluster_id(),
                        })
                        .await?;
                }
                if !self.config.is_broker {
                    // A controller-only node hosts nothing and serves no client.
                    return Ok(CommandResult::Applied);
                }
                self.quorum
                    .propose(MetadataCommand::RegisterBroker(BrokerRegistration {
                        id: self.config.node_id,
                        incarnation: self.incarnation,
                        host: self.advertised.host.clone(),
                        port: self.advertised.port,
                        rack: self.config.rack.clone(),
                        fenced: false,
                        shutting_down: false,
                        endpoints: self.endpoints.clone(),
                    }))
                    .await
            }
            .await;
            match outcome {
                Ok(_) => return Ok(()),
                Err(e)
                    if tokio::time::Instant::now() < deadline && !self.shutdown.is_cancelled() =>
                {
                    tracing::warn!(error = %e, "registration with the controller failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(StartError::Register(e.to_string())),
            }
        }
    }

    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    /// The controller id Metadata and DescribeCluster give clients: the active controller when
    /// it is a broker, else this broker, which forwards what clients send it to the
    /// controller (Kafka answers with a live broker as well: clients cannot reach a
    /// controller-only node). -1 while there is no controller.
    pub fn controller_id_for_clients(&self) -> i32 {
        match self.quorum.active_controller(self.node_id()) {
            Some(id) if self.image().brokers.contains_key(&id) => id,
            Some(_) => self.node_id(),
            None => -1,
        }
    }

    /// The latest metadata this broker has applied.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.quorum.image()
    }

    pub fn cluster_id(&self) -> String {
        self.image().cluster_id.clone()
    }

    pub fn topic(&self, name: &str) -> Option<TopicImage> {
        self.image().topics.get(name).cloned()
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<TopicImage> {
        self.image().topic_by_id(id).cloned()
    }

    pub fn topics(&self) -> Vec<TopicImage> {
        self.image().topics.values().cloned().collect()
    }

    /// The local replica of a partition, if this broker hosts one.
    pub fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        self.partitions.read().get(topic)?.get(&index).cloned()
    }

    /// The log directory a replica this broker is to host goes to: where it was found at
    /// start, else where AlterReplicaLogDirs asked for it, else the directory with the
    /// fewest replicas (current and future, and those found at start not opened yet), the
    /// first of those in `log.dirs` on a tie.
    pub(crate) fn log_dir_for(&self, topic: &str, index: i32) -> PathBuf {
        let dirs = self.log_dirs.dirs();
        let key = (topic.to_string(), index);
        let found = self.found_logs.lock().get(&key).copied();
        let online = |i: &usize| self.log_dirs.is_online(*i);
        let chosen = found
            .filter(online)
            .or_else(|| self.preferred_dirs.lock().remove(&key).filter(online))
            .unwrap_or_else(|| {
                let mut counts: Vec<usize> = (0..dirs.len())
                    .map(|i| if online(&i) { 0 } else { usize::MAX })
                    .collect();
                let partitions = self.partitions.read();
                for partition in partitions.values().flat_map(BTreeMap::values) {
                    let future = partition.future_replica().map(|f| f.root);
                    for root in std::iter::once(partition.log_dir()).chain(future) {
                        if let Some(i) = self.log_dirs.position(&root) {
                            counts[i] = counts[i].saturating_add(1);
                        }
                    }
                }
                for ((name, index), i) in self.found_logs.lock().iter() {
                    let opened = partitions
                        .get(name.as_str())
                        .is_some_and(|list| list.contains_key(index));
                    if !opened {
                        if let Some(count) = counts.get_mut(*i) {
                            *count = count.saturating_add(1);
                        }
                    }
                }
                crate::log::dirs::place(&counts)
            });
        dirs.get(chosen).map_or_else(
            || self.log_dirs.metadata_dir().to_path_buf(),
            |d| d.path.clone(),
        )
    }

    /// The local replica when this broker leads the partition; otherwise the error a client
    /// gets (NOT_LEADER_OR_FOLLOWER, or UNKNOWN_TOPIC_OR_PARTITION).
    pub fn leader_partition(
        &self,
        topic: &str,
        index: i32,
    ) -> Result<Arc<Partition>, ResponseError> {
        let image = self.image();
        let Some(state) = image.partition(topic, index) else {
            return Err(ResponseError::UnknownTopicOrPartition);
        };
        let hosted = self.partition(topic, index);
        match hosted {
            Some(partition)
                if state.leader == self.node_id()
                    && partition.role().0 == crate::replica::Role::Leader =>
            {
                Ok(partition)
            }
            // A replica whose log directory failed is no longer hosted.
            None if self
                .offline_replicas
                .lock()
                .contains(&(topic.to_string(), index)) =>
            {
                Err(ResponseError::KafkaStorageError)
            }
            _ => Err(ResponseError::NotLeaderOrFollower),
        }
    }

    /// Shuts the broker down for `reason` (it cannot go on safely); the process exits with
    /// an error.
    pub fn fail(&self, reason: String) {
        tracing::error!(reason, "shutting down");
        self.failure.lock().get_or_insert(reason);
        self.shutdown.cancel();
    }

    /// Why the broker shut down on its own, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().clone()
    }

    /// Takes every replica in failed log directory `root` offline here: it leads and follows
    /// nothing, waiting writes hear NOT_LEADER_OR_FOLLOWER, requests KAFKA_STORAGE_ERROR, and
    /// it is not opened again. The replicas the metadata assigns here, by topic id and index.
    pub(crate) async fn take_replicas_offline(&self, root: &Path) -> Vec<(Uuid, i32)> {
        let _serial = self.reconciling.lock().await;
        let mut gone = Vec::new();
        {
            let mut partitions = self.partitions.write();
            for list in partitions.values_mut() {
                for partition in list.values() {
                    if partition.future_replica().is_some_and(|f| f.root == root) {
                        partition.cancel_move();
                    }
                }
                let failed: Vec<i32> = list
                    .iter()
                    .filter(|(_, p)| p.log_dir() == root)
                    .map(|(i, _)| *i)
                    .collect();
                for index in failed {
                    if let Some(partition) = list.remove(&index) {
                        gone.push(partition);
                    }
                }
            }
            partitions.retain(|_, list| !list.is_empty());
        }
        let mut offline = self.offline_replicas.lock();
        for partition in &gone {
            partition.retire();
            self.fetchers.unfollow(partition);
            offline.insert((partition.topic.to_string(), partition.index));
        }
        if let Some(i) = self.log_dirs.position(root) {
            self.found_logs.lock().retain(|key, dir| {
                if *dir == i {
                    offline.insert(key.clone());
                }
                *dir != i
            });
        }
        let image = self.image();
        offline
            .iter()
            .filter_map(|(topic, index)| {
                let topic = image.topics.get(topic)?;
                let state = topic.partitions.get(usize::try_from(*index).ok()?)?;
                state
                    .replicas
                    .contains(&self.node_id())
                    .then_some((topic.id, *index))
            })
            .collect()
    }

    /// The effective storage settings of a topic.
    pub fn topic_config(&self, topic: &TopicImage) -> TopicConfig {
        self.config.topic_config(&topic.configs)
    }

    async fn propose(&self, command: MetadataCommand) -> Result<CommandResult, ApiError> {
        let result = self
            .quorum
            .propose(command)
            .await
            .map_err(|e: QuorumError| {
                tracing::warn!(error = %e, "metadata change not committed");
                ApiError::new(ResponseError::RequestTimedOut, e.to_string())
            })?;
        // Bring the local replicas in line before answering, so a client that acts on the
        // answer at once finds them.
        crate::replica::manager::reconcile_now(self).await;
        Ok(result)
    }

    /// Creates a topic, or checks that it could be created (`validate_only`). Replicas are
    /// placed over the live brokers unless `assignment` gives them.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        assignment: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    ) -> Result<TopicImage, ApiError> {
        config::validate_topic_name(name)
            .map_err(|m| ApiError::new(ResponseError::InvalidTopicException, m))?;
        config::validate_topic_configs(&configs)
            .map_err(|e| ApiError::new(ResponseError::InvalidConfig, e.to_string()))?;
        let image = self.image();
        if image.topics.contains_key(name) {
            return Err(topic_exists(name));
        }
        let assignment = match assignment {
            Some(assignment) => {
                for replicas in &assignment {
                    if let Some(unknown) = replicas.iter().find(|r| !image.brokers.contains_key(r))
                    {
                        return Err(ApiError::new(
                            ResponseError::InvalidReplicaAssignment,
                            format!("broker {unknown} in the assignment is not registered"),
                        ));
                    }
                }
                assignment
            }
            None => {
                let partitions = if partitions == -1 {
                    self.config.num_partitions
                } else {
                    partitions
                };
                if partitions < 1 {
                    return Err(ApiError::new(
                        ResponseError::InvalidPartitions,
                        format!("number of partitions must be at least 1, not {partitions}"),
                    ));
                }
                let replication_factor = if replication_factor == -1 {
                    self.config.default_replication_factor
                } else {
                    replication_factor
                };
                placement::place(&image, partitions as usize, replication_factor).map_err(|e| {
                    ApiError::new(ResponseError::InvalidReplicationFactor, e.to_string())
                })?
            }
        };
        let topic = TopicImage {
            name: name.to_string(),
            id: Uuid::new_v4(),
            configs: configs.clone(),
            partitions: assignment
                .iter()
                .cloned()
                .map(PartitionState::new)
                .collect(),
        };
        if validate_only {
            return Ok(topic);
        }
        let result = self
            .propose(MetadataCommand::CreateTopic {
                name: name.to_string(),
                id: topic.id,
                configs,
                assignment,
            })
            .await?;
        match result {
            CommandResult::Rejected { reason } if self.topic(name).is_some() => {
                tracing::debug!(topic = name, reason, "topic created concurrently");
                Err(topic_exists(name))
            }
            CommandResult::Rejected { reason } => {
                Err(ApiError::new(ResponseError::InvalidRequest, reason))
            }
            _ => {
                tracing::info!(
                    topic = name,
                    partitions = topic.partitions.len(),
                    "topic created"
                );
                self.topic(name).ok_or_else(|| {
                    ApiError::new(
                        ResponseError::UnknownServerError,
                        "topic vanished after creation",
                    )
                })
            }
        }
    }

    /// Creates a topic with the broker's defaults, as a Metadata request may ask.
    pub async fn auto_create_topic(&self, name: &str) -> Result<TopicImage, ApiError> {
        match self
            .create_topic(name, -1, -1, BTreeMap::new(), None, false)
            .await
        {
            Err(e) if e.code == ResponseError::TopicAlreadyExists => self.topic(name).ok_or(e),
            other => other,
        }
    }

    /// Grows a topic to `count` partitions.
    pub async fn create_partitions(
        &self,
        name: &str,
        count: i32,
        assignment: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    ) -> Result<TopicImage, ApiError> {
        if name == OFFSETS_TOPIC {
            return Err(ApiError::new(
                ResponseError::InvalidTopicException,
                format!("`{OFFSETS_TOPIC}` is internal: its partition count decides where each group lives"),
            ));
        }
        let image = self.image();
        let topic = image.topics.get(name).ok_or_else(|| unknown_topic(name))?;
        let current = topic.partitions.len() as i32;
        if count <= current {
            return Err(ApiError::new(
                ResponseError::InvalidPartitions,
                format!(
                    "topic `{name}` has {current} partitions; the new count {count} must be larger"
                ),
            ));
        }
        let added = (count - current) as usize;
        let assignment = match assignment {
            Some(assignment) if assignment.len() == added => assignment,
            Some(assignment) => {
                return Err(ApiError::new(
                    ResponseError::InvalidReplicaAssignment,
                    format!(
                        "{} assignments given for {added} new partitions",
                        assignment.len()
                    ),
                ))
            }
            None => placement::place(&image, added, topic.replication_factor()).map_err(|e| {
                ApiError::new(ResponseError::InvalidReplicationFactor, e.to_string())
            })?,
        };
        if validate_only {
            let mut grown = topic.clone();
            grown
                .partitions
                .extend(assignment.into_iter().map(PartitionState::new));
            return Ok(grown);
        }
        match self
            .propose(MetadataCommand::CreatePartitions {
                name: name.to_string(),
                assignment,
            })
            .await?
        {
            CommandResult::Rejected { reason } => {
                Err(ApiError::new(ResponseError::InvalidRequest, reason))
            }
            _ => {
                tracing::info!(topic = name, partitions = count, "partitions added");
                self.topic(name).ok_or_else(|| unknown_topic(name))
            }
        }
    }

    /// Replaces a topic's setting overrides after validating them.
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        overrides: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), ApiError> {
        config::validate_topic_configs(&overrides)
            .map_err(|e| ApiError::new(ResponseError::InvalidConfig, e.to_string()))?;
        if self.topic(name).is_none() {
            return Err(unknown_topic(name));
        }
        if validate_only {
            return Ok(());
        }
        match self
            .propose(MetadataCommand::SetTopicConfigs {
                name: name.to_string(),
                configs: overrides,
            })
            .await?
        {
            CommandResult::Rejected { reason } => Err(ApiError::new(
                ResponseError::UnknownTopicOrPartition,
                reason,
            )),
            _ => {
                tracing::info!(topic = name, "topic configuration changed");
                Ok(())
            }
        }
    }

    /// Makes `configs` the dynamic settings of broker `target` (or, with
    /// [`crate::controller::image::BROKER_DEFAULTS`], the cluster-wide defaults), through the
    /// metadata quorum so they outlive a restart; brokers apply them when they reconcile with
    /// the new image.
    pub async fn set_dynamic_configs(
        &self,
        target: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<(), ApiError> {
        match self
            .propose(MetadataCommand::SetBrokerConfigs {
                broker: target,
                configs,
            })
            .await?
        {
            CommandResult::Rejected { reason } => {
                Err(ApiError::new(ResponseError::InvalidRequest, reason))
            }
            _ => Ok(()),
        }
    }

    /// Deletes a topic: the metadata forgets it, and every replica removes its logs.
    pub async fn delete_topic(&self, name: &str) -> Result<TopicImage, ApiError> {
        if !self.config.delete_topic_enable {
            return Err(ApiError::new(
                ResponseError::TopicDeletionDisabled,
                "topic deletion is disabled on this broker (delete.topic.enable=false)",
            ));
        }
        if name == OFFSETS_TOPIC {
            return Err(ApiError::new(
                ResponseError::InvalidTopicException,
                format!(
                    "`{OFFSETS_TOPIC}` is internal: it holds the committed offsets of every group"
                ),
            ));
        }
        let topic = self.topic(name).ok_or_else(|| unknown_topic(name))?;
        match self
            .propose(MetadataCommand::DeleteTopic {
                name: name.to_string(),
            })
            .await?
        {
            CommandResult::Rejected { .. } => Err(unknown_topic(name)),
            _ => {
                tracing::info!(topic = name, "topic deleted");
                Ok(topic)
            }
        }
    }

    /// Elects a partition's preferred leader, or (not `preferred`: ElectLeaders' unclean
    /// election) a leader for a partition that has none: an in-sync replica when one is live,
    /// otherwise any live replica, whatever the topic's `unclean.leader.election.enable`
    /// says, as Kafka's controller does for an election an operator asked for by name.
    pub async fn elect_leader(
        &self,
        topic: &str,
        partition: i32,
        preferred: bool,
    ) -> Result<(), ApiError> {
        let image = self.image();
        let Some(state) = image.partition(topic, partition) else {
            return Err(ApiError::new(
                ResponseError::UnknownTopicOrPartition,
                format!("{topic}-{partition} does not exist"),
            ));
        };
        if preferred && state.replicas.first() == Some(&state.leader) {
            return Err(ApiError::new(
                ResponseError::ElectionNotNeeded,
                format!("{topic}-{partition} is already led by its preferred replica"),
            ));
        }
        if !preferred && state.leader != crate::controller::image::NO_LEADER {
            return Err(ApiError::new(
                ResponseError::ElectionNotNeeded,
                format!("{topic}-{partition} has a leader"),
            ));
        }
        match self
            .propose(MetadataCommand::ElectLeader {
                topic: topic.to_string(),
                partition,
                preferred,
                unclean: !preferred,
            })
            .await?
        {
            CommandResult::Rejected { reason } if preferred => Err(ApiError::new(
                ResponseError::PreferredLeaderNotAvailable,
                reason,
            )),
            CommandResult::Rejected { reason } => Err(ApiError::new(
                ResponseError::EligibleLeadersNotAvailable,
                reason,
            )),
            _ => Ok(()),
        }
    }

    /// Sets feature levels (UpdateFeatures), all or none; with `validate_only`, only says
    /// whether they would be set. Refusals are INVALID_UPDATE_VERSION with Kafka's reason.
    pub async fn update_features(
        &self,
        updates: Vec<crate::controller::features::FeatureUpdate>,
        validate_only: bool,
    ) -> Result<(), ApiError> {
        let refused = |reason| ApiError::new(ResponseError::InvalidUpdateVersion, reason);
        if validate_only {
            return crate::controller::features::apply(
                &self.image().features,
                &updates,
                self.node_id(),
            )
            .map(|_| ())
            .map_err(refused);
        }
        match self
            .propose(MetadataCommand::UpdateFeatures {
                broker: self.node_id(),
                updates,
            })
            .await?
        {
            CommandResult::Rejected { reason } => Err(refused(reason)),
            _ => Ok(()),
        }
    }

    /// Starts moving a partition to `target` replicas (or cancels a move when `None`).
    pub async fn reassign(
        &self,
        topic: &str,
        partition: i32,
        target: Option<Vec<i32>>,
        allow_replication_factor_change: bool,
    ) -> Result<(), ApiError> {
        let image = self.image();
        let Some(state) = image.partition(topic, partition) else {
            return Err(ApiError::new(
                ResponseError::UnknownTopicOrPartition,
                format!("{topic}-{partition} does not exist"),
            ));
        };
        let command = match target {
            None => MetadataCommand::CancelReassignment {
                topic: topic.to_string(),
                partition,
            },
            Some(target) => {
                let mut distinct = target.clone();
                distinct.sort_unstable();
                distinct.dedup();
                if target.is_empty() || distinct.len() != target.len() {
                    return Err(ApiError::new(
                        ResponseError::InvalidReplicaAssignment,
                        format!("replica list {target:?} is empty or names a broker twice"),
                    ));
                }
                if let Some(unknown) = target.iter().find(|r| !image.brokers.contains_key(r)) {
                    return Err(ApiError::new(
                        ResponseError::InvalidReplicaAssignment,
                        format!("broker {unknown} is not registered"),
                    ));
                }
                let current = state.replicas.len() - state.removing.len();
                if !allow_replication_factor_change && target.len() != current {
                    return Err(ApiError::new(
                        ResponseError::InvalidReplicationFactor,
                        format!(
                            "{} replicas would change the replication factor {current}",
                            target.len()
                        ),
                    ));
                }
                MetadataCommand::Reassign {
                    topic: topic.to_string(),
                    partition,
                    target,
                }
            }
        };
        match self.propose(command).await? {
            CommandResult::Rejected { reason } => Err(ApiError::new(
                ResponseError::NoReassignmentInProgress,
                reason,
            )),
            _ => Ok(()),
        }
    }

    /// A new producer id for InitProducerId, from a block reserved in the metadata.
    pub async fn allocate_producer_id(&self) -> Result<i64, ApiError> {
        {
            let mut ids = self.producer_ids.lock();
            if ids.0 < ids.1 {
                ids.0 += 1;
                return Ok(ids.0 - 1);
            }
        }
        match self
            .propose(MetadataCommand::AllocateProducerIds {
                count: PRODUCER_ID_BLOCK,
            })
            .await?
        {
            CommandResult::ProducerIds { first } => {
                let mut ids = self.producer_ids.lock();
                *ids = (first + 1, first + PRODUCER_ID_BLOCK);
                Ok(first)
            }
            other => Err(ApiError::new(
                ResponseError::UnknownServerError,
                format!("producer ids not allocated: {other:?}"),
            )),
        }
    }

    /// The `__consumer_offsets` partition of a group, when the topic exists.
    pub fn offsets_partition_of(&self, group: &str) -> Option<i32> {
        let count = self.image().topics.get(OFFSETS_TOPIC)?.partitions.len() as i32;
        Some(offsets::partition_for(group, count))
    }

    /// Ok when this broker coordinates `group`: it leads the group's offsets partition and
    /// has loaded it. A leader still loading answers COORDINATOR_LOAD_IN_PROGRESS (the client
    /// retries here), as Kafka does.
    pub fn check_coordinator(&self, group: &str) -> Result<(), ResponseError> {
        let partition = self
            .offsets_partition_of(group)
            .ok_or(ResponseError::CoordinatorNotAvailable)?;
        if self.coordinated.lock().contains_key(&partition) {
            Ok(())
        } else if self.leader_partition(OFFSETS_TOPIC, partition).is_ok() {
            Err(ResponseError::CoordinatorLoadInProgress)
        } else {
            Err(ResponseError::NotCoordinator)
        }
    }

    /// Creates `__consumer_offsets` the first time a group needs it.
    pub async fn ensure_offsets_topic(&self) -> Result<(), ApiError> {
        self.ensure_internal_topic(
            OFFSETS_TOPIC,
            self.config.offsets_topic_partitions,
            self.config.offsets_topic_replication_factor,
            "offsets.topic.replication.factor",
            BTreeMap::from([
                ("cleanup.policy".to_string(), "compact".to_string()),
                (
                    "segment.bytes".to_string(),
                    self.config.offsets_topic_segment_bytes.to_string(),
                ),
            ]),
        )
        .await
    }

    /// Creates `__transaction_state` the first time a transactional producer needs it.
    pub async fn ensure_transaction_topic(&self) -> Result<(), ApiError> {
        let txn = &self.txns.config;
        self.ensure_internal_topic(
            TRANSACTION_TOPIC,
            txn.partitions,
            txn.replication_factor,
            "transaction.state.log.replication.factor",
            BTreeMap::from([
                ("cleanup.policy".to_string(), "compact".to_string()),
                ("segment.bytes".to_string(), txn.segment_bytes.to_string()),
                ("min.insync.replicas".to_string(), txn.min_isr.to_string()),
                ("compression.type".to_string(), "uncompressed".to_string()),
            ]),
        )
        .await
    }

    /// Creates an internal topic with as many replicas as `wanted` asks, fewer (with a
    /// warning) when fewer brokers are alive, as Kafka does for a first cluster.
    async fn ensure_internal_topic(
        &self,
        name: &str,
        partitions: i32,
        wanted: i16,
        setting: &str,
        mut configs: BTreeMap<String, String>,
    ) -> Result<(), ApiError> {
        if self.topic(name).is_some() {
            return Ok(());
        }
        let live = self.image().live_brokers().count();
        let replication_factor = wanted.min(i16::try_from(live).unwrap_or(i16::MAX)).max(1);
        if replication_factor < wanted {
            tracing::warn!(
                wanted,
                live,
                "creating {name} with fewer replicas than {setting}"
            );
        }
        if let Some(min_isr) = configs.get_mut("min.insync.replicas") {
            let capped = min_isr.parse::<i16>().unwrap_or(1).min(replication_factor);
            *min_isr = capped.to_string();
        }
        match self
            .create_topic(name, partitions, replication_factor, configs, None, false)
            .await
        {
            Err(e) if e.code != ResponseError::TopicAlreadyExists => Err(e),
            _ => Ok(()),
        }
    }

    /// The `__transaction_state` partition of a transactional id, when the topic exists.
    pub fn transaction_partition_of(&self, transactional_id: &str) -> Option<i32> {
        let count = self.image().topics.get(TRANSACTION_TOPIC)?.partitions.len() as i32;
        Some(self.txns.partition_for(transactional_id, count))
    }

    /// Ok when this broker coordinates the transactional id: it leads the id's
    /// `__transaction_state` partition and has loaded it.
    pub fn check_transaction_coordinator(
        &self,
        transactional_id: &str,
    ) -> Result<(), ResponseError> {
        let partition = self
            .transaction_partition_of(transactional_id)
            .ok_or(ResponseError::CoordinatorNotAvailable)?;
        if self.txns.is_loaded(partition) {
            Ok(())
        } else if self.leader_partition(TRANSACTION_TOPIC, partition).is_ok() {
            Err(ResponseError::CoordinatorLoadInProgress)
        } else {
            Err(ResponseError::NotCoordinator)
        }
    }

    /// Appends a coordinator's batch to an internal topic partition this broker leads and
    /// waits until it is durable and on every in-sync replica.
    pub async fn append_internal(
        &self,
        topic: &str,
        index: i32,
        batch: &[u8],
    ) -> Result<(), ApiError> {
        let partition = self.leader_partition(topic, index).map_err(|_| {
            ApiError::new(
                ResponseError::NotCoordinator,
                format!("this broker no longer leads {topic}-{index}"),
            )
        })?;
        let info = partition.append(batch, true).map_err(|e| {
            tracing::error!(topic, partition = index, error = %e, "coordinator state could not be stored");
            ApiError::new(ResponseError::CoordinatorNotAvailable, e.to_string())
        })?;
        self.make_durable(&partition, info.last_offset + 1).await
    }

    /// Waits until a leader's partition has everything below `end` fsynced (when it syncs
    /// every write) and on every in-sync replica.
    pub async fn make_durable(&self, partition: &Arc<Partition>, end: i64) -> Result<(), ApiError> {
        if partition.syncs_every_write() {
            partition
                .sync_through(end)
                .await
                .map_err(|e| ApiError::new(ResponseError::KafkaStorageError, e.to_string()))?;
        }
        partition
            .wait_replicated(end, self.config.request_timeout)
            .await
            .map_err(|e| {
                let code = match e {
                    crate::replica::ReplicationError::NotLeader => {
                        ResponseError::NotLeaderOrFollower
                    }
                    crate::replica::ReplicationError::NotEnoughReplicasAfterAppend => {
                        ResponseError::NotEnoughReplicasAfterAppend
                    }
                    crate::replica::ReplicationError::Timeout => ResponseError::RequestTimedOut,
                };
                ApiError::new(code, e.to_string())
            })
    }

    /// A connection to another broker's inter-broker listener.
    pub async fn connect_broker(&self, node: i32) -> Result<crate::client::Connection, String> {
        let image = self.image();
        let registration = image
            .brokers
            .get(&node)
            .ok_or_else(|| format!("broker {node} is not registered"))?;
        let address = format!("{}:{}", registration.host, registration.port);
        self.connector
            .connect(&address)
            .await
            .map_err(|e| e.to_string())
    }

    /// Whether the broker is stopping.
    pub fn shutdown_requested(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Appends offset changes of `group` to its `__consumer_offsets` partition, waits until
    /// every in-sync replica has them, then makes them visible.
    pub async fn write_offsets(
        &self,
        group: &str,
        records: Vec<OffsetRecord>,
    ) -> Result<(), ApiError> {
        let batch = offsets::encode_batch(&records, now_ms())
            .map_err(|e| ApiError::new(ResponseError::UnknownServerError, e.to_string()))?;
        self.append_to_group_partition(group, &batch).await?;
        self.groups.apply_offsets(records);
        Ok(())
    }

    /// Stores a group's membership after a rebalance (or, for `None`, its removal) in its
    /// `__consumer_offsets` partition and waits until every in-sync replica has it.
    pub async fn write_group_metadata(
        &self,
        group: &str,
        metadata: Option<&offsets::GroupMetadata>,
    ) -> Result<(), ApiError> {
        let batch = offsets::encode_group_batch(group, metadata, now_ms())
            .map_err(|e| ApiError::new(ResponseError::UnknownServerError, e.to_string()))?;
        self.append_to_group_partition(group, &batch).await
    }

    /// Appends a batch to the `__consumer_offsets` partition of `group` and waits until every
    /// in-sync replica has it; errors are the ones a group coordinator answers.
    async fn append_to_group_partition(&self, group: &str, batch: &[u8]) -> Result<(), ApiError> {
        let index = self.offsets_partition_of(group).ok_or_else(|| {
            ApiError::new(
                ResponseError::CoordinatorNotAvailable,
                "no offsets topic yet",
            )
        })?;
        self.append_internal(OFFSETS_TOPIC, index, batch)
            .await
            .map_err(|e| match e.code {
                ResponseError::NotCoordinator
                | ResponseError::CoordinatorNotAvailable
                | ResponseError::KafkaStorageError => e,
                ResponseError::NotLeaderOrFollower => {
                    ApiError::new(ResponseError::NotCoordinator, e.message)
                }
                _ => ApiError::new(ResponseError::RequestTimedOut, e.message),
            })
    }

    /// Deletes an empty group: its stored membership and its committed offsets.
    pub async fn delete_group(&self, group: &str) -> Result<(), ResponseError> {
        self.check_coordinator(group)?;
        let keys = self.groups.delete_group(group)?;
        self.write_group_metadata(group, None)
            .await
            .map_err(|e| e.code)?;
        if keys.is_empty() {
            return Ok(());
        }
        let tombstones = keys
            .into_iter()
            .map(|(topic, partition)| OffsetRecord {
                group: group.to_string(),
                topic,
                partition,
                value: None,
            })
            .collect();
        self.write_offsets(group, tombstones)
            .await
            .map_err(|e| e.code)
    }

    /// Every hosted partition with its topic's effective settings.
    pub(crate) fn partitions_with_config(&self) -> Vec<(Arc<Partition>, TopicConfig)> {
        let image = self.image();
        let partitions = self.partitions.read();
        let mut out = Vec::new();
        for (name, list) in partitions.iter() {
            if let Some(topic) = image.topics.get(&**name) {
                let config = self.topic_config(topic);
                out.extend(list.values().map(|p| (Arc::clone(p), config.clone())));
            }
        }
        out
    }

    /// Deletes segments past `retention.ms` / `retention.bytes` in topics whose cleanup policy
    /// includes `delete`.
    pub fn enforce_retention(&self) {
        let now = now_ms();
        for (partition, config) in self.partitions_with_config() {
            if !config.cleanup_delete || (config.retention_ms < 0 && config.retention_bytes < 0) {
                continue;
            }
            match partition.apply_retention(now, config.retention_ms, config.retention_bytes) {
                Ok(outcome) if !outcome.deleted_segments.is_empty() => tracing::info!(
                    partition = ?partition,
                    segments = outcome.deleted_segments.len(),
                    bytes = outcome.deleted_bytes,
                    log_start_offset = outcome.log_start_offset,
                    "segments past retention deleted"
                ),
                Ok(_) => {}
                Err(e) => tracing::error!(partition = ?partition, error = %e, "retention failed"),
            }
        }
    }

    /// One pass of the log cleaner over topics whose cleanup policy includes `compact`.
    pub fn compact_logs(&self) {
        let now = now_ms();
        for (partition, config) in self.partitions_with_config() {
            if !config.cleanup_compact {
                continue;
            }
            match partition.compact(now, &config.compaction) {
                Ok(Some(outcome)) => tracing::info!(
                    partition = ?partition,
                    records_before = outcome.records_before,
                    records_after = outcome.records_after,
                    bytes_before = outcome.bytes_before,
                    bytes_after = outcome.bytes_after,
                    "log compacted"
                ),
                Ok(None) => {}
                Err(e) => tracing::error!(partition = ?partition, error = %e, "compaction failed"),
            }
        }
    }

    /// Fsyncs partitions whose `flush.ms` has passed since their oldest unsynced append.
    pub fn flush_due(&self) {
        let now = std::time::Instant::now();
        for (partition, config) in self.partitions_with_config() {
            if config.flush_ms.is_none() {
                continue;
            }
            if let Err(e) = partition.flush_if_due(now) {
                tracing::error!(partition = ?partition, error = %e, "scheduled flush failed");
            }
        }
    }

    /// Advances a partition's log start offset (DeleteRecords); -1 means the high watermark.
    pub fn delete_records(&self, topic: &str, index: i32, offset: i64) -> Result<i64, ApiError> {
        let partition = self.leader_partition(topic, index).map_err(|code| {
            ApiError::new(code, format!("{topic}-{index} is not led by this broker"))
        })?;
        let policy_allows = self
            .topic(topic)
            .is_some_and(|t| self.topic_config(&t).cleanup_delete);
        if !policy_allows {
            return Err(ApiError::new(
                ResponseError::PolicyViolation,
                format!("records of {topic}-{index} cannot be deleted: its cleanup.policy does not include delete"),
            ));
        }
        let high_watermark = partition.high_watermark();
        let target = if offset == -1 { high_watermark } else { offset };
        if target < 0 || target > high_watermark {
            return Err(ApiError::new(
                ResponseError::OffsetOutOfRange,
                format!("{topic}-{index}: offset {offset} is beyond the high watermark {high_watermark}"),
            ));
        }
        partition
            .delete_records_before(target)
            .map_err(|e| ApiError::new(e.response_error(), e.to_string()))
    }

    /// Whether this broker should receive traffic: registered, not fenced, and every replica
    /// it follows back in its partition's ISR (caught up); a controller-only node, once the
    /// quorum has a leader and the cluster its id. The reason when not.
    pub fn readiness(&self) -> Result<(), String> {
        let image = self.image();
        let node = self.node_id();
        if !self.config.is_broker {
            return match self.quorum.active_controller(node) {
                None => Err("the metadata quorum has no leader".to_string()),
                Some(_) if image.cluster_id.is_empty() => {
                    Err("the cluster is not initialized yet".to_string())
                }
                Some(_) => Ok(()),
            };
        }
        match image.brokers.get(&node) {
            None => return Err(format!("broker {node} is not registered")),
            Some(b) if b.fenced => return Err(format!("broker {node} is fenced")),
            Some(_) => {}
        }
        let behind: Vec<String> = image
            .topics
            .values()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| {
                        p.replicas.contains(&node)
                            && p.leader != crate::controller::image::NO_LEADER
                    })
                    .filter(|(_, p)| !p.isr.contains(&node))
                    .map(move |(i, _)| format!("{}-{i}", t.name))
            })
            .collect();
        if behind.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} replicas still catching up, e.g. {}",
                behind.len(),
                behind[0]
            ))
        }
    }

    /// Updates the gauges computed from state rather than counted.
    pub fn refresh_metrics(&self) {
        self.metrics.consumer_lag.reset();
        for (group, topic, partition, committed) in self.groups.all_committed() {
            if let Some(p) = self.partition(&topic, partition) {
                let lag = (p.high_watermark() - committed).max(0);
                self.metrics
                    .consumer_lag
                    .with_label_values(&[group.as_str(), topic.as_str(), &partition.to_string()])
                    .set(lag);
            }
        }
        self.metrics
            .transactions_open
            .set(i64::try_from(self.txns.open_count()).unwrap_or(i64::MAX));
        self.metrics.last_stable_offset_lag.reset();
        let image = self.image();
        let (mut leaders, mut replicas, mut under_replicated, mut under_min_isr, mut offline) =
            (0, 0, 0, 0, 0);
        for topic in image.topics.values() {
            let min_isr = self.topic_config(topic).min_insync_replicas;
            for (index, state) in (0..).zip(&topic.partitions) {
                if state.leader == crate::controller::image::NO_LEADER {
                    offline += 1;
                }
                if state.replicas.contains(&self.node_id()) {
                    replicas += 1;
                }
                if state.leader == self.node_id() {
                    leaders += 1;
                    if let Some(p) = self.partition(&topic.name, index) {
                        self.metrics
                            .last_stable_offset_lag
                            .with_label_values(&[topic.name.as_str(), &index.to_string()])
                            .set((p.high_watermark() - p.last_stable_offset()).max(0));
                    }
                    if state.isr.len() < state.replicas.len() {
                        under_replicated += 1;
                    }
                    if state.isr.len() < min_isr {
                        under_min_isr += 1;
                    }
                }
            }
        }
        self.metrics.leader_count.set(leaders);
        self.metrics.replica_count.set(replicas);
        self.metrics
            .under_replicated_partitions
            .set(under_replicated);
        self.metrics.under_min_isr_partitions.set(under_min_isr);
        self.metrics
            .offline_partitions
            .set(if self.quorum.is_active_controller() {
                offline
            } else {
                0
            });
        self.metrics
            .active_controller
            .set(i64::from(self.quorum.is_active_controller()));
        self.metrics.quorum_members.reset();
        let (voters, learners) = self.quorum.members(self.node_id());
        for (ids, role) in [(voters, "voter"), (learners, "learner")] {
            for id in ids {
                self.metrics
                    .quorum_members
                    .with_label_values(&[id.to_string().as_str(), role])
                    .set(1);
            }
        }
    }

    /// Flushes and closes every log, marking a clean shutdown.
    pub fn close_logs(&self) {
        let partitions = std::mem::take(&mut *self.partitions.write());
        let mut closed = 0usize;
        for partition in partitions.into_values().flat_map(BTreeMap::into_values) {
            // An unfinished move is dropped at the next start anyway.
            partition.cancel_move();
            let name = format!("{partition:?}");
            let result = match Arc::try_unwrap(partition) {
                Ok(partition) => partition.close(),
                Err(shared) => shared.flush(),
            };
            match result {
                Ok(()) => closed += 1,
                Err(e) => tracing::error!(partition = name, error = %e, "could not close the log"),
            }
        }
        tracing::info!(partitions = closed, "logs flushed and closed");
    }
}

/// The storage settings of one partition log.
pub fn log_config(topic: &TopicConfig) -> LogConfig {
    LogConfig {
        segment_bytes: topic.segment_bytes,
        segment_ms: topic.segment_ms,
        index_interval_bytes: topic.index_interval_bytes,
        max_batch_bytes: topic.max_message_bytes,
        // flush.messages=1 is served by group commit in the partition, not per append.
        flush_messages: if topic.flush_messages <= 1 {
            u64::MAX
        } else {
            topic.flush_messages
        },
        flush_ms: topic.flush_ms,
        log_append_time: topic.log_append_time,
        timestamp_before_max_ms: topic.timestamp_before_max_ms,
        timestamp_after_max_ms: topic.timestamp_after_max_ms,
        compression: topic.compression,
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub fn unknown_topic(name: &str) -> ApiError {
    ApiError::new(
        ResponseError::UnknownTopicOrPartition,
        format!("topic `{name}` does not exist"),
    )
}

fn topic_exists(name: &str) -> ApiError {
    ApiError::new(
        ResponseError::TopicAlreadyExists,
        format!("topic `{name}` already exists"),
    )
}

/// A cluster id in Kafka's form: a random UUID in URL-safe base64 without padding.
fn new_cluster_id() -> String {
    crate::log::dirs::new_kafka_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_look_like_kafkas() {
        let id = new_cluster_id();
        assert_eq!(id.len(), 22);
        assert!(id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_ne!(id, new_cluster_id());
    }
}
