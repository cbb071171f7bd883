//! The partitions this broker hosts: each wraps its on-disk log, and wakes fetches that wait
//! for data when an append lands.

use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::log::{AppendError, AppendInfo, LogConfig, LogError, PartitionLog, ReadError, ReadResult};

/// One partition replica on this broker. On a single broker it is always the leader, and the
/// high watermark is the log end offset.
pub struct Partition {
    pub topic: Arc<str>,
    pub topic_id: Uuid,
    pub index: i32,
    log: RwLock<PartitionLog>,
    waiters: Mutex<Vec<Arc<Notify>>>,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.index)
    }
}

impl Partition {
    pub fn new(topic: Arc<str>, topic_id: Uuid, index: i32, log: PartitionLog) -> Partition {
        Partition {
            topic,
            topic_id,
            index,
            log: RwLock::new(log),
            waiters: Mutex::new(Vec::new()),
        }
    }

    /// Opens (recovering if needed) the log of `topic`-`index` under `dir`.
    pub fn open(
        dir: &std::path::Path,
        topic: Arc<str>,
        topic_id: Uuid,
        index: i32,
        config: LogConfig,
    ) -> Result<Partition, LogError> {
        let log = PartitionLog::open(&dir.join(format!("{topic}-{index}")), config)?;
        Ok(Partition::new(topic, topic_id, index, log))
    }

    /// Appends the batches of a Produce request and wakes every fetch waiting on this partition.
    pub fn append(&self, records: &[u8]) -> Result<AppendInfo, AppendError> {
        let info = self.log.write().append(records, 0)?;
        let waiters = std::mem::take(&mut *self.waiters.lock());
        for waiter in waiters {
            waiter.notify_one();
        }
        Ok(info)
    }

    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult, ReadError> {
        self.log.read().read(offset, max_bytes)
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log.read().log_start_offset()
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log.read().log_end_offset()
    }

    /// The offset below which records are committed; consumers never read past it.
    pub fn high_watermark(&self) -> i64 {
        self.log_end_offset()
    }

    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, ReadError> {
        self.log.read().offset_for_timestamp(timestamp)
    }

    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        self.log.read().max_timestamp()
    }

    pub fn size_bytes(&self) -> u64 {
        self.log.read().size_bytes()
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

    pub fn flush(&self) -> Result<(), LogError> {
        self.log.write().flush()
    }

    /// Flushes and closes the log, marking a clean shutdown; used once nothing else holds it.
    pub fn close(self) -> Result<(), LogError> {
        self.log.into_inner().close()
    }
}
