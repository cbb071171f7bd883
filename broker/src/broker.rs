//! The broker's shared state: configuration, cluster metadata and the hosted partitions,
//! and the topic operations (create, grow, delete) that change them together.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use kafka_protocol::ResponseError;
use parking_lot::{Mutex, RwLock};
use thiserror::Error;
use uuid::Uuid;

use crate::config::{self, BrokerConfig, Listener, TopicConfig};
use crate::controller::{MetadataError, MetadataStore, TopicMeta};
use crate::group::offsets::{self, OffsetRecord};
use crate::group::{GroupCoordinator, OFFSETS_TOPIC};
use crate::log::{LogConfig, LogError};
use crate::metrics::Metrics;
use crate::replica::Partition;

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
    #[error("cannot create log directory {path}: {source}")]
    LogDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("cannot prepare {OFFSETS_TOPIC}: {0}")]
    OffsetsTopic(String),
    #[error("cannot open the log of {topic}-{partition}: {source}")]
    Log {
        topic: String,
        partition: i32,
        source: LogError,
    },
}

/// The state every connection shares.
pub struct Broker {
    pub config: BrokerConfig,
    /// The address clients are told to connect to.
    pub advertised: Listener,
    pub metrics: Metrics,
    pub groups: GroupCoordinator,
    metadata: RwLock<MetadataStore>,
    partitions: RwLock<HashMap<Arc<str>, Vec<Arc<Partition>>>>,
    /// Serialises topic changes so metadata and logs change together.
    admin: Mutex<()>,
}

impl Broker {
    /// Opens the log directory: loads the metadata and recovers every partition log.
    pub fn open(config: BrokerConfig, advertised: Listener) -> Result<Arc<Broker>, StartError> {
        let dir = config.log_dir.clone();
        std::fs::create_dir_all(&dir).map_err(|source| StartError::LogDir {
            path: dir.clone(),
            source,
        })?;
        remove_deleted_dirs(&dir);
        let metadata = MetadataStore::open(&dir, config.node_id)?;
        let mut partitions = HashMap::new();
        for topic in metadata.topics() {
            let name: Arc<str> = Arc::from(topic.name.as_str());
            let topic_config = config.topic_config(&topic.configs);
            let log_config = log_config(&topic_config);
            let mut opened = Vec::with_capacity(topic.partitions as usize);
            for index in 0..topic.partitions {
                let partition = Partition::open(
                    &dir,
                    Arc::clone(&name),
                    topic.id,
                    index,
                    &topic_config,
                    log_config.clone(),
                )
                .map_err(|source| StartError::Log {
                    topic: topic.name.clone(),
                    partition: index,
                    source,
                })?;
                opened.push(Arc::new(partition));
            }
            partitions.insert(name, opened);
        }
        tracing::info!(
            dir = %dir.display(),
            topics = partitions.len(),
            partitions = partitions.values().map(Vec::len).sum::<usize>(),
            cluster_id = metadata.cluster_id(),
            "log directory loaded"
        );
        let broker = Broker {
            groups: GroupCoordinator::new(config.group.clone()),
            config,
            advertised,
            metrics: Metrics::new(),
            metadata: RwLock::new(metadata),
            partitions: RwLock::new(partitions),
            admin: Mutex::new(()),
        };
        broker.load_offsets()?;
        Ok(Arc::new(broker))
    }

    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    pub fn cluster_id(&self) -> String {
        self.metadata.read().cluster_id().to_string()
    }

    pub fn topic(&self, name: &str) -> Option<TopicMeta> {
        self.metadata.read().topic(name).cloned()
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<TopicMeta> {
        self.metadata.read().topic_by_id(id).cloned()
    }

    pub fn topics(&self) -> Vec<TopicMeta> {
        self.metadata.read().topics().cloned().collect()
    }

    pub fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        let partitions = self.partitions.read();
        let list = partitions.get(topic)?;
        usize::try_from(index)
            .ok()
            .and_then(|i| list.get(i))
            .cloned()
    }

    /// The effective storage settings of a topic.
    pub fn topic_config(&self, topic: &TopicMeta) -> TopicConfig {
        self.config.topic_config(&topic.configs)
    }

    /// Creates `__consumer_offsets` on first start, then loads every committed offset in it.
    fn load_offsets(&self) -> Result<(), StartError> {
        if self.topic(OFFSETS_TOPIC).is_none() {
            let configs = BTreeMap::from([
                ("cleanup.policy".to_string(), "compact".to_string()),
                (
                    "segment.bytes".to_string(),
                    self.config.offsets_topic_segment_bytes.to_string(),
                ),
            ]);
            self.create_topic(
                OFFSETS_TOPIC,
                self.config.offsets_topic_partitions,
                1,
                configs,
                false,
            )
            .map_err(|e| StartError::OffsetsTopic(e.message))?;
        }
        let count = self.topic(OFFSETS_TOPIC).map_or(0, |t| t.partitions);
        let mut loaded = 0usize;
        for index in 0..count {
            let Some(partition) = self.partition(OFFSETS_TOPIC, index) else {
                continue;
            };
            let mut offset = partition.log_start_offset();
            let end = partition.log_end_offset();
            while offset < end {
                let read = partition
                    .read(offset, 1 << 20)
                    .map_err(|e| StartError::OffsetsTopic(format!("partition {index}: {e}")))?;
                if read.records.is_empty() {
                    break;
                }
                let mut last = offset;
                let mut rest = &read.records[..];
                while let Some(header) = crate::log::BatchHeader::parse(rest) {
                    last = header.last_offset();
                    rest = rest.get(header.size()..).unwrap_or_default();
                }
                let records = offsets::decode_batches(read.records)
                    .map_err(|e| StartError::OffsetsTopic(format!("partition {index}: {e}")))?;
                loaded += records.len();
                self.groups.load(records);
                offset = last + 1;
            }
        }
        tracing::info!(records = loaded, "committed offsets loaded");
        Ok(())
    }

    /// Appends offset changes of `group` to its `__consumer_offsets` partition, then makes
    /// them visible: an acknowledged commit is on disk like any produced record.
    pub fn write_offsets(&self, group: &str, records: Vec<OffsetRecord>) -> Result<(), ApiError> {
        let count = self.topic(OFFSETS_TOPIC).map_or(0, |t| t.partitions);
        let index = offsets::partition_for(group, count);
        let partition = self.partition(OFFSETS_TOPIC, index).ok_or_else(|| {
            ApiError::new(
                ResponseError::CoordinatorNotAvailable,
                format!("{OFFSETS_TOPIC}-{index} is not available"),
            )
        })?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let batch = offsets::encode_batch(&records, now)
            .map_err(|e| ApiError::new(ResponseError::UnknownServerError, e.to_string()))?;
        partition.append(&batch).map_err(|e| {
            tracing::error!(group, error = %e, "offsets could not be stored");
            ApiError::new(ResponseError::KafkaStorageError, e.to_string())
        })?;
        self.groups.apply_offsets(records);
        Ok(())
    }

    /// Deletes an empty group and its committed offsets.
    pub fn delete_group(&self, group: &str) -> Result<(), ResponseError> {
        let keys = self.groups.delete_group(group)?;
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
        self.write_offsets(group, tombstones).map_err(|e| e.code)
    }

    /// Every hosted partition with its topic's effective settings.
    fn partitions_with_config(&self) -> Vec<(Arc<Partition>, TopicConfig)> {
        let topics: HashMap<String, TopicConfig> = self
            .topics()
            .iter()
            .map(|t| (t.name.clone(), self.topic_config(t)))
            .collect();
        let partitions = self.partitions.read();
        partitions
            .iter()
            .filter_map(|(name, list)| topics.get(&**name).map(|config| (list, config)))
            .flat_map(|(list, config)| list.iter().map(move |p| (Arc::clone(p), config.clone())))
            .collect()
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
        let partition = self.partition(topic, index).ok_or_else(|| {
            ApiError::new(
                ResponseError::UnknownTopicOrPartition,
                format!("{topic}-{index} does not exist"),
            )
        })?;
        let target = if offset == -1 {
            partition.high_watermark()
        } else {
            offset
        };
        if target < 0 || target > partition.high_watermark() {
            return Err(ApiError::new(
                ResponseError::OffsetOutOfRange,
                format!(
                    "{topic}-{index}: offset {offset} is beyond the high watermark {}",
                    partition.high_watermark()
                ),
            ));
        }
        partition
            .delete_records_before(target)
            .map_err(|e| ApiError::new(e.response_error(), e.to_string()))
    }

    /// Updates the gauges computed from state rather than counted: consumer lag.
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
    }

    /// A new producer id for InitProducerId.
    pub fn allocate_producer_id(&self) -> Result<i64, ApiError> {
        self.metadata
            .write()
            .allocate_producer_id()
            .map_err(storage_error)
    }

    /// Creates a topic with its partition logs, or checks that it could be (`validate_only`).
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<TopicMeta, ApiError> {
        config::validate_topic_name(name)
            .map_err(|m| ApiError::new(ResponseError::InvalidTopicException, m))?;
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
        if replication_factor != 1 {
            return Err(ApiError::new(
                ResponseError::InvalidReplicationFactor,
                format!(
                    "replication factor {replication_factor} is larger than the 1 available broker"
                ),
            ));
        }
        config::validate_topic_configs(&configs)
            .map_err(|e| ApiError::new(ResponseError::InvalidConfig, e.to_string()))?;
        let _admin = self.admin.lock();
        if self.metadata.read().topic(name).is_some() {
            return Err(ApiError::new(
                ResponseError::TopicAlreadyExists,
                format!("topic `{name}` already exists"),
            ));
        }
        let topic = TopicMeta {
            name: name.to_string(),
            id: Uuid::new_v4(),
            partitions,
            replication_factor,
            configs,
        };
        if validate_only {
            return Ok(topic);
        }
        let shared: Arc<str> = Arc::from(name);
        let opened = self.open_partitions(&topic, &shared, 0)?;
        self.metadata
            .write()
            .put_topic(topic.clone())
            .map_err(storage_error)?;
        self.partitions.write().insert(shared, opened);
        tracing::info!(topic = name, partitions, "topic created");
        Ok(topic)
    }

    /// Replaces a topic's setting overrides after validating them, and applies them to its
    /// partition logs.
    pub fn alter_topic_configs(
        &self,
        name: &str,
        overrides: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), ApiError> {
        config::validate_topic_configs(&overrides)
            .map_err(|e| ApiError::new(ResponseError::InvalidConfig, e.to_string()))?;
        if validate_only {
            return Ok(());
        }
        let _admin = self.admin.lock();
        let mut topic = self.topic(name).ok_or_else(|| unknown_topic(name))?;
        topic.configs = overrides;
        self.metadata
            .write()
            .put_topic(topic.clone())
            .map_err(storage_error)?;
        let topic_config = self.topic_config(&topic);
        if let Some(partitions) = self.partitions.read().get(name) {
            for partition in partitions {
                partition.set_config(&topic_config, log_config(&topic_config));
            }
        }
        tracing::info!(topic = name, "topic configuration changed");
        Ok(())
    }

    /// Creates a topic with the broker's defaults, as a Metadata request may ask.
    pub fn auto_create_topic(&self, name: &str) -> Result<TopicMeta, ApiError> {
        match self.create_topic(name, -1, -1, BTreeMap::new(), false) {
            Err(e) if e.code == ResponseError::TopicAlreadyExists => self.topic(name).ok_or(e),
            other => other,
        }
    }

    /// Grows a topic to `count` partitions.
    pub fn create_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<TopicMeta, ApiError> {
        let _admin = self.admin.lock();
        let mut topic = self
            .metadata
            .read()
            .topic(name)
            .cloned()
            .ok_or_else(|| unknown_topic(name))?;
        if count <= topic.partitions {
            return Err(ApiError::new(
                ResponseError::InvalidPartitions,
                format!(
                    "topic `{name}` has {} partitions; the new count {count} must be larger",
                    topic.partitions
                ),
            ));
        }
        if validate_only {
            topic.partitions = count;
            return Ok(topic);
        }
        let first_new = topic.partitions;
        topic.partitions = count;
        let shared: Arc<str> = self
            .partitions
            .read()
            .get_key_value(name)
            .map(|(k, _)| Arc::clone(k))
            .unwrap_or_else(|| Arc::from(name));
        let opened = self.open_partitions(&topic, &shared, first_new)?;
        self.metadata
            .write()
            .put_topic(topic.clone())
            .map_err(storage_error)?;
        self.partitions
            .write()
            .entry(shared)
            .or_default()
            .extend(opened);
        tracing::info!(topic = name, partitions = count, "partitions added");
        Ok(topic)
    }

    /// Deletes a topic: forgets it in the metadata first, then removes its logs.
    pub fn delete_topic(&self, name: &str) -> Result<TopicMeta, ApiError> {
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
        let _admin = self.admin.lock();
        let removed = self
            .metadata
            .write()
            .remove_topic(name)
            .map_err(storage_error)?
            .ok_or_else(|| unknown_topic(name))?;
        self.partitions.write().remove(name);
        for index in 0..removed.partitions {
            let dir = self.config.log_dir.join(format!("{name}-{index}"));
            let doomed = self
                .config
                .log_dir
                .join(format!("{name}-{index}.{}-delete", removed.id.simple()));
            if let Err(e) =
                std::fs::rename(&dir, &doomed).and_then(|()| std::fs::remove_dir_all(&doomed))
            {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove the log of a deleted topic; it is removed at the next start");
            }
        }
        tracing::info!(topic = name, "topic deleted");
        Ok(removed)
    }

    fn open_partitions(
        &self,
        topic: &TopicMeta,
        shared: &Arc<str>,
        from: i32,
    ) -> Result<Vec<Arc<Partition>>, ApiError> {
        let topic_config = self.topic_config(topic);
        let log_config = log_config(&topic_config);
        let mut opened = Vec::new();
        for index in from..topic.partitions {
            let dir = self.config.log_dir.join(format!("{}-{index}", topic.name));
            // A directory the metadata does not know is left over from a crash mid-delete.
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| {
                    ApiError::new(
                        ResponseError::KafkaStorageError,
                        format!("cannot clear {}: {e}", dir.display()),
                    )
                })?;
            }
            let partition = Partition::open(
                &self.config.log_dir,
                Arc::clone(shared),
                topic.id,
                index,
                &topic_config,
                log_config.clone(),
            )
            .map_err(|e| ApiError::new(ResponseError::KafkaStorageError, e.to_string()))?;
            opened.push(Arc::new(partition));
        }
        Ok(opened)
    }

    /// Flushes and closes every log, marking a clean shutdown.
    pub fn shutdown(&self) {
        let partitions = std::mem::take(&mut *self.partitions.write());
        let mut closed = 0usize;
        for partition in partitions.into_values().flatten() {
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
    }
}

fn now_ms() -> i64 {
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

fn storage_error(e: MetadataError) -> ApiError {
    tracing::error!(error = %e, "metadata could not be persisted");
    ApiError::new(ResponseError::KafkaStorageError, e.to_string())
}

/// Removes partition directories renamed for deletion before a crash or a failed removal.
fn remove_deleted_dirs(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() && path.to_string_lossy().ends_with("-delete") {
            if let Err(e) = std::fs::remove_dir_all(&path) {
                tracing::warn!(dir = %path.display(), error = %e, "could not remove a deleted partition");
            }
        }
    }
}
