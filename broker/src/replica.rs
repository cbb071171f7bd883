//! The partitions this broker hosts: each wraps its on-disk log, and wakes fetches that wait
//! for data when an append lands.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::config::TopicConfig;
use crate::log::batch::BatchHeader;
use crate::log::{
    AppendError, AppendInfo, CompactionOutcome, CompactionSettings, LogConfig, LogError,
    PartitionLog, ReadError, ReadResult, RetentionOutcome,
};
use crate::producer::{ProducerStateTable, SequenceError, Verdict};

/// Why a produce to a partition was refused; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error(transparent)]
    Sequence(#[from] SequenceError),
    #[error("{0}")]
    InvalidRecord(String),
}

struct State {
    log: PartitionLog,
    producers: ProducerStateTable,
}

/// One partition replica on this broker. On a single broker it is always the leader, and the
/// high watermark is the log end offset.
pub struct Partition {
    pub topic: Arc<str>,
    pub topic_id: Uuid,
    pub index: i32,
    state: RwLock<State>,
    waiters: Mutex<Vec<Arc<Notify>>>,
    /// `flush.messages=1`: every acknowledged write is fsynced first, by group commit.
    sync_every_write: AtomicBool,
    /// The offset up to which the log is known fsynced; holding the lock makes a caller
    /// the one that syncs, and the ones queued behind it usually find their write covered.
    synced_through: tokio::sync::Mutex<i64>,
    /// One compaction at a time per partition.
    cleaning: Mutex<()>,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.index)
    }
}

impl Partition {
    /// Wraps an open log, restoring the idempotent producer state from the newest snapshot
    /// and the batches written after it.
    pub fn new(
        topic: Arc<str>,
        topic_id: Uuid,
        index: i32,
        config: &TopicConfig,
        log: PartitionLog,
    ) -> Result<Partition, LogError> {
        let producers = restore_producers(&log)?;
        let end = log.log_end_offset();
        Ok(Partition {
            topic,
            topic_id,
            index,
            state: RwLock::new(State { log, producers }),
            waiters: Mutex::new(Vec::new()),
            sync_every_write: AtomicBool::new(config.flush_messages <= 1),
            synced_through: tokio::sync::Mutex::new(end),
            cleaning: Mutex::new(()),
        })
    }

    /// Opens (recovering if needed) the log of `topic`-`index` under `dir`.
    pub fn open(
        dir: &std::path::Path,
        topic: Arc<str>,
        topic_id: Uuid,
        index: i32,
        topic_config: &TopicConfig,
        config: LogConfig,
    ) -> Result<Partition, LogError> {
        let log = PartitionLog::open(&dir.join(format!("{topic}-{index}")), config)?;
        Partition::new(topic, topic_id, index, topic_config, log)
    }

    /// Appends the batches of a Produce request and wakes every fetch waiting on this
    /// partition. A retried idempotent batch is answered with where it already is.
    pub fn append(&self, records: &[u8]) -> Result<AppendInfo, ProduceError> {
        let idempotent = idempotent_batch(records)?;
        let mut state = self.state.write();
        if let Some(header) = &idempotent {
            if let Verdict::Duplicate(batch) = state.producers.check(header)? {
                tracing::debug!(partition = ?self, producer_id = header.producer_id, first_seq = batch.first_seq, "duplicate batch acknowledged");
                return Ok(AppendInfo {
                    base_offset: batch.base_offset,
                    last_offset: batch.last_offset,
                    max_timestamp: header.max_timestamp,
                    batch_count: 0,
                    record_count: 0,
                    bytes: 0,
                });
            }
        }
        let segments_before = state.log.segment_count();
        let info = state.log.append(records, 0)?;
        if let Some(header) = &idempotent {
            state.producers.record(header, info.base_offset);
        }
        if state.log.segment_count() != segments_before && !state.producers.is_empty() {
            // A snapshot per segment bounds the log scanned to rebuild the state after a crash.
            let end = state.log.log_end_offset();
            if let Err(e) = state.producers.write_snapshot(state.log.dir(), end) {
                tracing::warn!(partition = ?self, error = %e, "could not snapshot producer state");
            }
        }
        drop(state);
        let waiters = std::mem::take(&mut *self.waiters.lock());
        for waiter in waiters {
            waiter.notify_one();
        }
        Ok(info)
    }

    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult, ReadError> {
        self.state.read().log.read(offset, max_bytes)
    }

    pub fn log_start_offset(&self) -> i64 {
        self.state.read().log.log_start_offset()
    }

    pub fn log_end_offset(&self) -> i64 {
        self.state.read().log.log_end_offset()
    }

    /// The offset below which records are committed; consumers never read past it.
    pub fn high_watermark(&self) -> i64 {
        self.log_end_offset()
    }

    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, ReadError> {
        self.state.read().log.offset_for_timestamp(timestamp)
    }

    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        self.state.read().log.max_timestamp()
    }

    pub fn size_bytes(&self) -> u64 {
        self.state.read().log.size_bytes()
    }

    /// Registers `notify` to be woken by the next append. A wake that comes before the
    /// waiter starts waiting is kept as a permit, so no append is missed.
    pub fn watch(&self, notify: &Arc<Notify>) {
        let mut waiters = self.waiters.lock();
        // Drop waiters whose fetch has finished (we hold the only reference) so an idle
        // partition polled by many fetches does not collect them.
        waiters.retain(|w| Arc::strong_count(w) > 1);
        if !waiters.iter().any(|w| Arc::ptr_eq(w, notify)) {
            waiters.push(Arc::clone(notify));
        }
    }

    /// Whether acknowledgements wait for an fsync ([`Partition::sync_through`]).
    pub fn syncs_every_write(&self) -> bool {
        self.sync_every_write.load(Ordering::Relaxed)
    }

    /// Waits until everything below `end_offset` is fsynced. Concurrent callers share
    /// fsyncs: one syncs the whole log while the others queue, and most of them then find
    /// their write already covered (group commit).
    pub async fn sync_through(self: &Arc<Self>, end_offset: i64) -> Result<(), LogError> {
        let mut synced = self.synced_through.lock().await;
        if *synced >= end_offset {
            return Ok(());
        }
        let partition = Arc::clone(self);
        let flushed = tokio::task::spawn_blocking(move || {
            let mut state = partition.state.write();
            let end = state.log.log_end_offset();
            state.log.flush().map(|()| end)
        })
        .await
        .map_err(|e| {
            LogError::from(crate::log::IoError {
                op: "fsync",
                path: std::path::PathBuf::from(format!("{}-{}", self.topic, self.index)),
                source: std::io::Error::other(e.to_string()),
            })
        })??;
        *synced = flushed;
        Ok(())
    }

    /// Applies changed topic settings.
    pub fn set_config(&self, topic: &TopicConfig, log: LogConfig) {
        self.sync_every_write
            .store(topic.flush_messages <= 1, Ordering::Relaxed);
        self.state.write().log.set_config(log);
    }

    pub fn apply_retention(
        &self,
        now_ms: i64,
        retention_ms: i64,
        retention_bytes: i64,
    ) -> Result<RetentionOutcome, LogError> {
        self.state
            .write()
            .log
            .apply_retention(now_ms, retention_ms, retention_bytes)
    }

    pub fn delete_records_before(&self, offset: i64) -> Result<i64, LogError> {
        self.state.write().log.delete_records_before(offset)
    }

    /// Compacts the log: plans under the read lock, cleans with no lock held, and swaps the
    /// cleaned segments in under the write lock, so appends wait only for the swap.
    pub fn compact(
        &self,
        now_ms: i64,
        settings: &CompactionSettings,
    ) -> Result<Option<CompactionOutcome>, LogError> {
        let Some(_cleaning) = self.cleaning.try_lock() else {
            return Ok(None);
        };
        let Some(plan) = self.state.read().log.compaction_plan(now_ms, settings)? else {
            return Ok(None);
        };
        let cleaned = plan.run()?;
        self.state.write().log.install_cleaned(cleaned).map(Some)
    }

    pub fn flush_if_due(&self, now: std::time::Instant) -> Result<bool, LogError> {
        self.state.write().log.flush_if_due(now)
    }

    pub fn flush(&self) -> Result<(), LogError> {
        self.state.write().log.flush()
    }

    /// Flushes and closes the log, marking a clean shutdown; used once nothing else holds it.
    pub fn close(self) -> Result<(), LogError> {
        let state = self.state.into_inner();
        if !state.producers.is_empty() {
            if let Err(e) = state
                .producers
                .write_snapshot(state.log.dir(), state.log.log_end_offset())
            {
                tracing::warn!(partition = ?state.log.dir(), error = %e, "could not snapshot producer state");
            }
        }
        state.log.close()
    }
}

/// The header of the batch when `records` is one idempotent batch; an error when an
/// idempotent or transactional batch is not alone, as Kafka requires.
fn idempotent_batch(records: &[u8]) -> Result<Option<BatchHeader>, ProduceError> {
    let Some(header) = BatchHeader::parse(records) else {
        return Ok(None);
    };
    if header.is_transactional() {
        return Err(ProduceError::InvalidRecord(
            "transactional batches are not supported".to_string(),
        ));
    }
    if header.producer_id < 0 {
        return Ok(None);
    }
    if header.size() != records.len() {
        return Err(ProduceError::InvalidRecord(
            "an idempotent produce must carry exactly one record batch per partition".to_string(),
        ));
    }
    Ok(Some(header))
}

/// Rebuilds producer state: the newest snapshot, then every idempotent batch after it.
fn restore_producers(log: &PartitionLog) -> Result<ProducerStateTable, LogError> {
    let end = log.log_end_offset();
    let io = |source: std::io::Error| {
        LogError::from(crate::log::IoError {
            op: "restore producer state in",
            path: log.dir().to_path_buf(),
            source,
        })
    };
    let (mut table, mut offset) =
        match ProducerStateTable::load_snapshot(log.dir(), end).map_err(io)? {
            Some((table, offset)) => (table, offset),
            None => (ProducerStateTable::default(), log.log_start_offset()),
        };
    offset = offset.max(log.log_start_offset());
    while offset < end {
        let read = match log.read(offset, 1 << 20) {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(dir = %log.dir().display(), offset, error = %e, "producer state rebuilt only up to here");
                break;
            }
        };
        if read.records.is_empty() {
            break;
        }
        let mut rest = &read.records[..];
        while let Some(header) = BatchHeader::parse(rest) {
            if header.producer_id >= 0 && header.last_offset() >= offset {
                table.record(&header, header.base_offset);
            }
            offset = header.last_offset() + 1;
            rest = rest.get(header.size()..).unwrap_or_default();
        }
    }
    Ok(table)
}
