//! The on-disk log of one partition: segments of Kafka `RecordBatch` v2, sparse indexes,
//! segment rolling, and crash recovery.
//!
//! A partition lives in its own directory (e.g. `data/orders-3/`):
//!
//! ```text
//! 00000000000000000000.log        record batches with offsets 0..
//! 00000000000000000000.index      sparse offset -> position index
//! 00000000000000000000.timeindex  sparse timestamp -> offset index
//! 00000000000000052311.log        the next segment, starting at offset 52311
//! ...
//! log-start-offset.checkpoint     the log start offset, when it is past the first segment
//! cleaner-offset.checkpoint       the offset up to which compaction has cleaned the log
//! leader-epoch-checkpoint         where each leader epoch starts (see `epoch`)
//! .clean_shutdown                 present only while the log is closed cleanly
//! *.deleted                       files of a segment being deleted (retention)
//! *.cleaned, *.swap               files of a cleaned segment being swapped in (compaction)
//! ```
//!
//! Formats: batches in [`batch`], indexes in `index`, segment files in `segment`,
//! checkpoints in `checkpoint`, the leader-epoch cache in `epoch`; deletion in `retention`,
//! the compaction swap protocol in `cleaner` and truncation in `truncate`, which also say
//! how open() finishes what a crash interrupted. The newest segment is the only one written;
//! a segment is fsynced when it stops being active, so after a crash only the newest one can
//! be torn. Opening without the clean-shutdown marker therefore verifies the newest segment
//! batch by batch and cuts it at the first bad one.
//!
//! Replication: a leader appends with [`PartitionLog::append`], which assigns offsets,
//! stamps its epoch and re-compresses batches into the topic's codec (`compression`); a
//! follower writes the leader's batches as they are, so in the leader's codec, with
//! [`PartitionLog::append_replicated`], answers and asks OffsetForLeaderEpoch from the
//! epoch cache, and cuts a divergent tail with [`PartitionLog::truncate_to`]. Consumers read
//! below the high watermark with [`PartitionLog::read_up_to`].
//!
//! Appends are made durable by the flush policy (`flush_messages`, `flush_ms`), on a roll,
//! and on [`PartitionLog::flush`]; Kafka's defaults leave it to the operating system, relying
//! on replication for durability.
//!
//! [`PartitionLog`] is not synchronised: the caller wraps it in a `RwLock`. Reads take
//! `&self` and use positional reads, so any number run at once.

pub mod batch;
mod checkpoint;
mod cleaner;
mod compression;
pub mod control;
pub mod dirs;
mod epoch;
mod error;
pub(crate) mod fields;
mod index;
mod retention;
mod segment;
mod truncate;

use std::fmt;
use std::fs;
use std::io::{self, IoSlice};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

pub use self::batch::BatchHeader;
use self::batch::{CountRule, ProduceFault, ProducedBatch, HEADER_SIZE};
use self::checkpoint::{CLEANER_OFFSET_FILE, LOG_START_OFFSET_FILE};
pub use self::cleaner::{
    CleanedSegments, CompactionOutcome, CompactionPlan, CompactionSettings, Transactions,
};
pub use self::compression::TopicCompression;
use self::epoch::{EpochEntry, LeaderEpochCache};
use self::error::IoResultExt;
pub use self::error::{AppendError, DirectoryFault, IoError, LogError, ReadError};
use self::index::NO_TIMESTAMP;
pub use self::retention::RetentionOutcome;
use self::segment::{
    parse_file_name, sync_dir, ActiveSegment, Segment, INDEX_EXTENSION, LOG_EXTENSION,
    MAX_RELATIVE_OFFSET, MAX_SEGMENT_BYTES, TIME_INDEX_EXTENSION,
};

/// Written by [`PartitionLog::close`], removed by [`PartitionLog::open`]: its presence means
/// the files were left consistent and need no recovery.
pub const CLEAN_SHUTDOWN_FILE: &str = ".clean_shutdown";

/// Settings of one partition log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll to a new segment when an append would grow the active one past this
    /// (`segment.bytes`). A single append larger than this still goes into one segment.
    pub segment_bytes: u64,
    /// Roll when the active segment's first append is at least this many milliseconds old
    /// by the wall clock (`segment.ms`). After a restart, the segment file's creation time
    /// stands in for the first append.
    pub segment_ms: Option<u64>,
    /// Bytes of log between offset index entries (`index.interval.bytes`).
    pub index_interval_bytes: u32,
    /// Largest batch accepted (`message.max.bytes`).
    pub max_batch_bytes: usize,
    /// Fsync once this many records were appended since the last flush (`flush.messages`);
    /// `u64::MAX` never does.
    pub flush_messages: u64,
    /// Fsync when records have waited this many milliseconds since the last flush
    /// (`flush.ms`), checked by [`PartitionLog::flush_if_due`]; `None` never does.
    pub flush_ms: Option<u64>,
    /// `message.timestamp.type=LogAppendTime`: the broker stamps each batch with the time it
    /// appends it, and clients read that instead of the producer's timestamps.
    pub log_append_time: bool,
    /// How far before and after the append time a batch's CreateTime timestamps may lie, in
    /// ms (`message.timestamp.before.max.ms`, `message.timestamp.after.max.ms`); a batch
    /// outside is refused. `i64::MAX` does not check.
    pub timestamp_before_max_ms: i64,
    pub timestamp_after_max_ms: i64,
    /// `compression.type` and its level: the codec produced batches are stored in (see
    /// `compression`).
    pub compression: TopicCompression,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: None,
            index_interval_bytes: 4096,
            max_batch_bytes: 1_048_588,
            flush_messages: u64::MAX,
            flush_ms: None,
            log_append_time: false,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: i64::MAX,
            compression: TopicCompression::Producer,
        }
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Refuses a batch whose CreateTime timestamps (its first and its largest) lie further from
/// `now` than the log's `message.timestamp.before.max.ms` and `message.timestamp.after.max.ms`
/// allow, as Kafka does; a batch without timestamps (-1) passes.
fn check_timestamps(header: &BatchHeader, now: i64, config: &LogConfig) -> Result<(), AppendError> {
    let low = now.saturating_sub(config.timestamp_before_max_ms);
    let high = now.saturating_add(config.timestamp_after_max_ms);
    for timestamp in [header.base_timestamp, header.max_timestamp] {
        if timestamp >= 0 && (timestamp < low || timestamp > high) {
            return Err(AppendError::InvalidTimestamp {
                timestamp,
                low,
                high,
            });
        }
    }
    Ok(())
}

/// What an append wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the first record written.
    pub base_offset: i64,
    /// Offset of the last record written.
    pub last_offset: i64,
    /// Largest batch max timestamp among the batches written (-1 if none had one).
    pub max_timestamp: i64,
    pub batch_count: usize,
    pub record_count: u64,
    pub bytes: usize,
}

/// A record found by its timestamp (ListOffsets): its offset, its timestamp, and the leader
/// epoch of its batch when the batch has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampOffset {
    pub timestamp: i64,
    pub offset: i64,
    pub leader_epoch: Option<i32>,
}

/// What a read returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    /// Whole record batches, possibly none.
    pub records: Bytes,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}

/// The log of one partition.
pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    /// Older segments by base offset; all of them end before the active one starts.
    segments: Vec<Segment>,
    active: ActiveSegment,
    /// The first offset readers may see: at or past the first segment's base, persisted in
    /// [`LOG_START_OFFSET_FILE`] whenever it moves.
    log_start_offset: i64,
    /// Offsets below this were compacted by the last clean; persisted in
    /// [`CLEANER_OFFSET_FILE`]. May lag the log start offset.
    first_dirty_offset: i64,
    /// The timestamp of the oldest tombstone the last clean kept, if known (not persisted).
    oldest_clean_tombstone: Option<i64>,
    /// Records appended since the last fsync of the active segment.
    unflushed_messages: u64,
    /// When the active segment was last fsynced (or the log opened), for `flush_ms`.
    last_flush: Instant,
    /// Where each leader epoch starts; persisted in `leader-epoch-checkpoint` (see `epoch`).
    epochs: LeaderEpochCache,
    /// The epoch checkpoint may differ from `epochs` after a failed write.
    epochs_unsaved: bool,
}

impl fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionLog")
            .field("dir", &self.dir)
            .field("log_start_offset", &self.log_start_offset())
            .field("log_end_offset", &self.log_end_offset())
            .field("segments", &self.segment_count())
            .finish_non_exhaustive()
    }
}

impl PartitionLog {
    /// Opens the log in `dir`, creating the directory and an empty log at offset 0 when
    /// there is none. A compaction swap or segment deletion a crash interrupted is completed
    /// or rolled back first. Without the clean-shutdown marker, the newest segment is
    /// verified and any torn or corrupt tail is cut off; indexes that are missing or
    /// inconsistent are rebuilt. Segments wholly below the checkpointed log start offset are
    /// deleted; if that offset is past the recovered log end, the log starts over empty there.
    /// The leader-epoch cache is loaded, checked against the log, and rebuilt from the batch
    /// headers when it is missing or wrong.
    ///
    /// # Errors
    ///
    /// [`LogError::Io`] when a file or the directory cannot be created, read or repaired;
    /// [`LogError::Corrupt`] when an interrupted compaction swap cannot be completed because
    /// the cleaned segment is damaged.
    pub fn open(dir: &Path, config: LogConfig) -> Result<PartitionLog, LogError> {
        create_dir(dir)?;
        let marker = dir.join(CLEAN_SHUTDOWN_FILE);
        let clean_shutdown = match fs::remove_file(&marker) {
            Ok(()) => {
                // Appends that follow must not be mistaken for clean ones after a crash.
                sync_dir(dir)?;
                true
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => Err(e).at("remove clean-shutdown marker", &marker)?,
        };
        // Before listing: a half-done swap or deletion changes which segments exist.
        cleaner::recover(dir)?;
        checkpoint::remove_leftovers(dir)?;
        let interval = config.index_interval_bytes;
        let bases = list_segments(dir)?;
        let mut log = match bases.split_last() {
            None => {
                let active = ActiveSegment::create(dir, 0, interval)?;
                Self::assemble(dir, config, Vec::new(), active)
            }
            Some((&last, older)) => {
                let mut segments = Vec::with_capacity(older.len());
                for (&base, &next) in older.iter().zip(&bases[1..]) {
                    segments.push(Segment::open(dir, base, next, interval)?);
                }
                let active = ActiveSegment::open(dir, last, clean_shutdown, interval)?;
                Self::assemble(dir, config, segments, active)
            }
        };
        log.load_checkpoints()?;
        log.load_epochs()?;
        Ok(log)
    }

    fn assemble(
        dir: &Path,
        config: LogConfig,
        segments: Vec<Segment>,
        active: ActiveSegment,
    ) -> PartitionLog {
        let first_base = segments
            .first()
            .map_or(active.base_offset(), Segment::base_offset);
        PartitionLog {
            dir: dir.to_path_buf(),
            config,
            segments,
            active,
            log_start_offset: first_base,
            first_dirty_offset: first_base,
            oldest_clean_tombstone: None,
            unflushed_messages: 0,
            last_flush: Instant::now(),
            epochs: LeaderEpochCache::default(),
            epochs_unsaved: false,
        }
    }

    /// Applies the checkpointed log start and cleaner offsets to the segments found on disk.
    fn load_checkpoints(&mut self) -> Result<(), LogError> {
        let first_base = self.log_start_offset;
        let saved = checkpoint::read(&self.dir, LOG_START_OFFSET_FILE)?;
        let log_start = saved.map_or(first_base, |offset| offset.max(first_base));
        if log_start > self.log_end_offset() {
            // Recovery cut the log below its start (a DeleteRecords up to the end, then a
            // crash that tore what followed). Everything on disk is deleted data, and
            // offsets below the log start must never be handed out again: start over there.
            tracing::warn!(
                dir = %self.dir.display(),
                log_start_offset = log_start,
                log_end_offset = self.log_end_offset(),
                "the log ends before its start offset; starting it over empty at the start offset"
            );
            let next =
                ActiveSegment::create(&self.dir, log_start, self.config.index_interval_bytes)?;
            let old = std::mem::replace(&mut self.active, next);
            self.segments.push(old.into_segment());
        }
        // Already in the checkpoint (or the first base, which needs none): set, not written.
        self.log_start_offset = log_start;
        let below = self
            .segments
            .iter()
            .take_while(|s| s.end_offset() <= log_start)
            .count();
        self.delete_oldest_segments(below)?;
        let saved = checkpoint::read(&self.dir, CLEANER_OFFSET_FILE)?;
        self.first_dirty_offset = saved
            .unwrap_or(first_base)
            .min(self.log_end_offset())
            .max(self.log_start_offset);
        if saved.is_some_and(|saved| saved > self.first_dirty_offset) {
            // Past the log end (recovery cut a tail it covered, or a crash came between a
            // truncation and its checkpoint): what is appended there next is dirty, and must
            // not be taken for clean after another restart.
            checkpoint::write(&self.dir, CLEANER_OFFSET_FILE, self.first_dirty_offset)?;
        }
        Ok(())
    }

    /// The partition's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Validates `records` (one or more `RecordBatch` v2 from a Produce request), assigns
    /// them consecutive offsets from the log end, stamps `leader_epoch` into them, and
    /// appends them, rolling to a new segment first when the active one is full or old.
    /// All batches are checked before any byte is written, so a refused request changes
    /// nothing. A `leader_epoch` higher than [`Self::latest_epoch`] opens a new epoch in the
    /// leader-epoch cache; a negative one is written but never cached.
    ///
    /// # Errors
    ///
    /// [`AppendError::Corrupt`], [`AppendError::UnsupportedMagic`] or
    /// [`AppendError::BatchTooLarge`] when a batch is refused, and
    /// [`AppendError::StaleLeaderEpoch`] when `leader_epoch` is below the latest epoch in
    /// the log, with nothing written; [`AppendError::Io`] when writing fails, or when the
    /// fsync that `flush_messages` called for fails after the batches were written (they are
    /// in the log then, but may not be durable).
    pub fn append(&mut self, records: &[u8], leader_epoch: i32) -> Result<AppendInfo, AppendError> {
        let mut batches =
            batch::split_produced(records, self.config.max_batch_bytes).map_err(refused)?;
        // Batches in another codec than the topic's are re-compressed; the result is checked
        // again, since its size changed (Kafka also holds re-compressed batches to
        // `max.message.bytes`).
        let recompressed = compression::to_topic_codec(records, &batches, self.config.compression)
            .map_err(AppendError::Corrupt)?;
        let records = match &recompressed {
            Some(stored) => {
                batches =
                    batch::split_produced(stored, self.config.max_batch_bytes).map_err(refused)?;
                stored.as_slice()
            }
            None => records,
        };
        // The request's bytes are written as they are; only each batch's header changes, so
        // the new headers are written from their own buffers around the records (no copy of
        // the records).
        let mut headers = Vec::with_capacity(batches.len());
        let mut next_offset = self.log_end_offset();
        if !self.config.log_append_time {
            let now = unix_millis();
            for produced in &batches {
                check_timestamps(&produced.header, now, &self.config)?;
            }
        }
        for produced in &mut batches {
            let header = &mut produced.header;
            header.base_offset = next_offset;
            header.partition_leader_epoch = leader_epoch;
            let body = produced.start + HEADER_SIZE..produced.start + header.size();
            let mut bytes = [0; HEADER_SIZE];
            bytes.copy_from_slice(&records[produced.start..body.start]);
            batch::assign(&mut bytes, next_offset, leader_epoch);
            if self.config.log_append_time {
                let now = unix_millis();
                header.attributes |= batch::LOG_APPEND_TIME_ATTRIBUTE;
                header.max_timestamp = now;
                batch::restamp_header(
                    &mut bytes,
                    &records[body],
                    header.attributes,
                    header.last_offset_delta,
                    now,
                );
            }
            next_offset = header.last_offset().checked_add(1).ok_or_else(|| {
                AppendError::Corrupt(format!(
                    "batch at byte {} would run past the largest offset",
                    produced.start
                ))
            })?;
            headers.push(bytes);
        }
        let mut pieces = Vec::with_capacity(2 * batches.len());
        for (produced, header) in batches.iter().zip(&headers) {
            let body = produced.start + HEADER_SIZE..produced.start + produced.header.size();
            pieces.push(IoSlice::new(header));
            pieces.push(IoSlice::new(&records[body]));
        }
        self.write_batches(&mut pieces, &batches)
    }

    /// Appends batches a follower fetched from its leader, as they are: their offsets and
    /// leader epochs were assigned by the leader and are not touched. Each batch is checked
    /// like a batch recovered from disk: framing, magic, CRC-32C and header fields, but not
    /// the producer rules of [`Self::append`], since compaction on the leader may have left
    /// a batch with fewer records than offsets, or none. Nor is `max_batch_bytes`: a
    /// follower takes what its leader took (Kafka ignores the size limit on replication).
    ///
    /// The first batch must start at or after the log end offset and every batch after the
    /// previous one; a batch starting *past* that is a gap compaction left on the leader
    /// (whole batches removed) and is accepted. Epochs must not go back; each higher one
    /// opens an entry in the epoch cache. Segments roll and the flush policy applies as for
    /// [`Self::append`]. The result's offsets let the caller update its producer state.
    ///
    /// A follower whose log start falls inside the leader's first batch (after a
    /// DeleteRecords on the leader) gets [`AppendError::OffsetMismatch`] for an empty log;
    /// Kafka's answer is to [`Self::truncate_fully_and_start_at`] that batch's base offset,
    /// append again, and then [`Self::delete_records_before`] the leader's log start.
    ///
    /// # Errors
    ///
    /// [`AppendError::Corrupt`] or [`AppendError::UnsupportedMagic`] for a malformed batch
    /// (or no batch at all), [`AppendError::OffsetMismatch`] for a batch starting below
    /// where the log expects one, [`AppendError::StaleLeaderEpoch`] for an epoch below the
    /// latest: all with nothing written. [`AppendError::Io`] as for [`Self::append`].
    pub fn append_replicated(&mut self, records: &[u8]) -> Result<AppendInfo, AppendError> {
        let batches = batch::split(records, usize::MAX, CountRule::Stored).map_err(refused)?;
        let mut expected = self.log_end_offset();
        for (i, fetched) in batches.iter().enumerate() {
            let header = &fetched.header;
            if header.base_offset < expected {
                return Err(AppendError::OffsetMismatch {
                    expected,
                    got: header.base_offset,
                });
            }
            expected = header.last_offset().checked_add(1).ok_or_else(|| {
                AppendError::Corrupt(format!(
                    "batch {i} at byte {} runs past the largest offset",
                    fetched.start
                ))
            })?;
        }
        self.write_batches(&mut [IoSlice::new(records)], &batches)
    }

    /// Writes validated batches that carry their final offsets and epochs, back to back in
    /// `data` (the concatenation of its pieces): checks that they fit one segment and that no
    /// epoch goes back, rolls when due, records newly opened epochs (their checkpoint before
    /// the batches, see `epoch`), appends, and applies the flush policy.
    fn write_batches(
        &mut self,
        data: &mut [IoSlice<'_>],
        placed: &[ProducedBatch],
    ) -> Result<AppendInfo, AppendError> {
        let len: usize = data.iter().map(|piece| piece.len()).sum();
        let (Some(first), Some(last)) = (placed.first(), placed.last()) else {
            return Err(AppendError::Corrupt("no record batches".to_owned()));
        };
        let base_offset = first.header.base_offset;
        let last_offset = last.header.last_offset();
        if len as u64 > MAX_SEGMENT_BYTES || last_offset - base_offset > MAX_RELATIVE_OFFSET {
            // Not even an empty segment could index this, so no roll would help.
            return Err(AppendError::Corrupt(format!(
                "{} bytes with offsets {base_offset} to {last_offset} do not fit in one segment",
                len,
            )));
        }
        let mut opened = Vec::new();
        let mut latest = self.epochs.latest();
        let mut max_timestamp = NO_TIMESTAMP;
        let mut record_count = 0u64;
        for placed in placed {
            let header = &placed.header;
            let epoch = header.partition_leader_epoch;
            if let Some(latest) = latest.filter(|latest| epoch < latest.epoch) {
                return Err(AppendError::StaleLeaderEpoch {
                    epoch,
                    latest: latest.epoch,
                });
            }
            if epoch >= 0 && latest.is_none_or(|latest| epoch > latest.epoch) {
                let entry = EpochEntry {
                    epoch,
                    start_offset: header.base_offset,
                };
                opened.push(entry);
                latest = Some(entry);
            }
            max_timestamp = max_timestamp.max(header.max_timestamp);
            record_count += u64::try_from(header.records_count).unwrap_or(0);
        }
        let now = SystemTime::now();
        if self.should_roll(len as u64, last_offset, now) {
            self.roll_at(base_offset)?;
        }
        if !opened.is_empty() {
            // The checkpoint is written at the next flush, roll or close, not here: an fsync
            // per new epoch on the produce path stalls every partition's first append after
            // an election. A crash before the write is caught on open, where the newest
            // batch's epoch is newer than the file's, and the cache is rebuilt from the
            // batch headers.
            for entry in &opened {
                self.epochs.assign(entry.epoch, entry.start_offset);
            }
            self.epochs_unsaved = true;
        }
        if let Err(error) = self.active.append(data, len, placed, now) {
            if !opened.is_empty() {
                // Their batches are not in the log. The checkpoint is rewritten by the next
                // change or close; after a crash, open drops the entries past the log end.
                self.epochs.truncate_from_end(self.log_end_offset());
                self.epochs_unsaved = true;
            }
            return Err(error.into());
        }
        self.unflushed_messages = self.unflushed_messages.saturating_add(record_count);
        if self.unflushed_messages >= self.config.flush_messages {
            // The records are in the log; a failure here means they may not be durable,
            // which the producer must hear about (Kafka takes the log offline).
            self.sync_active()?;
        }
        Ok(AppendInfo {
            base_offset,
            last_offset,
            max_timestamp,
            batch_count: placed.len(),
            record_count,
            bytes: len,
        })
    }

    fn should_roll(&self, bytes: u64, last_offset: i64, now: SystemTime) -> bool {
        let active = &self.active;
        if active.size() == 0 {
            // An empty segment takes the batches, unless they start so far past its base
            // (after a gap on the leader) that its index could not address them.
            return !active.can_address(bytes, last_offset);
        }
        let limit = self.config.segment_bytes.min(MAX_SEGMENT_BYTES);
        let too_old = match (self.config.segment_ms, active.rolling_since()) {
            (Some(ms), Some(since)) => {
                // A clock that went backwards counts as no time passed.
                now.duration_since(since).unwrap_or_default() >= Duration::from_millis(ms)
            }
            _ => false,
        };
        active.size().saturating_add(bytes) > limit
            || !active.can_address(bytes, last_offset)
            || too_old
    }

    /// Seals the active segment, makes it durable, and starts a new one at the log end.
    fn roll(&mut self) -> Result<(), IoError> {
        self.roll_at(self.log_end_offset())
    }

    /// Seals the active segment, makes it durable, and starts a new one at `base_offset`:
    /// the log end, or the first offset of replicated batches that start after a gap.
    fn roll_at(&mut self, base_offset: i64) -> Result<(), IoError> {
        self.save_epochs()?;
        self.active.finish()?;
        // Everything appended so far is durable now.
        self.unflushed_messages = 0;
        self.last_flush = Instant::now();
        let next = ActiveSegment::create(&self.dir, base_offset, self.config.index_interval_bytes)?;
        let old = std::mem::replace(&mut self.active, next);
        tracing::debug!(
            dir = %self.dir.display(),
            base_offset = self.active.base_offset(),
            "rolled to a new segment"
        );
        self.segments.push(old.into_segment());
        Ok(())
    }

    /// Whole batches starting with the one that holds `offset`: at least that batch, then
    /// as many following ones as fit in `max_bytes`, stopping at the segment's end. Empty
    /// at the log end.
    ///
    /// # Errors
    ///
    /// [`ReadError::OffsetOutOfRange`] outside `[log_start_offset, log_end_offset]`;
    /// [`ReadError::Corrupt`] or [`ReadError::Io`] when the segment cannot be read.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult, ReadError> {
        let log_start = self.log_start_offset();
        let log_end = self.log_end_offset();
        if offset < log_start || offset > log_end {
            return Err(ReadError::OffsetOutOfRange {
                offset,
                log_start,
                log_end,
            });
        }
        let records = if offset == log_end {
            Bytes::new()
        } else {
            self.read_segments(offset, max_bytes)?
        };
        Ok(ReadResult {
            records,
            log_start_offset: log_start,
            log_end_offset: log_end,
        })
    }

    /// Like [`Self::read`], but only whole batches whose last offset is below `max_offset`
    /// (the high watermark, for consumers): possibly none, and none when `offset` is at or
    /// past `max_offset`. The first batch is still returned whole beyond `max_bytes` if it
    /// ends below `max_offset`.
    ///
    /// # Errors
    ///
    /// As [`Self::read`]: [`ReadError::OffsetOutOfRange`] outside
    /// `[log_start_offset, log_end_offset]`, whatever `max_offset` is.
    pub fn read_up_to(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
    ) -> Result<ReadResult, ReadError> {
        let log_start = self.log_start_offset();
        let log_end = self.log_end_offset();
        if offset < log_start || offset > log_end {
            return Err(ReadError::OffsetOutOfRange {
                offset,
                log_start,
                log_end,
            });
        }
        let records = if offset >= max_offset.min(log_end) {
            Bytes::new()
        } else {
            let records = self.read_segments(offset, max_bytes)?;
            let below = batches_below(&records, max_offset);
            records.slice(..below)
        };
        Ok(ReadResult {
            records,
            log_start_offset: log_start,
            log_end_offset: log_end,
        })
    }

    /// Reads from the segment holding `offset`, or from a later one when that has nothing
    /// at or after `offset`, which gaps in the offsets would cause.
    fn read_segments(&self, offset: i64, max_bytes: usize) -> Result<Bytes, ReadError> {
        if offset < self.active.base_offset() {
            let holding = self
                .segments
                .partition_point(|s| s.base_offset() <= offset)
                .saturating_sub(1);
            for segment in &self.segments[holding..] {
                if let Some(records) = segment.read(offset, max_bytes)? {
                    return Ok(records);
                }
            }
        }
        Ok(self.active.read(offset, max_bytes)?.unwrap_or_default())
    }

    /// The first offset of the log: the first segment's base, or later after retention or
    /// DeleteRecords moved it.
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// The offset the next appended record gets.
    pub fn log_end_offset(&self) -> i64 {
        self.active.end_offset()
    }

    /// The first record at or after the log start whose timestamp is at least `timestamp`,
    /// even inside a batch: the first batch whose max timestamp reaches `timestamp` is
    /// decoded and its records looked at, as Kafka's `UnifiedLog.fetchOffsetByTimestamp`
    /// does. `None` when no record is that recent.
    ///
    /// # Errors
    ///
    /// [`ReadError::Corrupt`] or [`ReadError::Io`] when a segment cannot be read.
    pub fn offset_for_timestamp(
        &self,
        timestamp: i64,
    ) -> Result<Option<TimestampOffset>, ReadError> {
        let log_start = self.log_start_offset();
        for segment in &self.segments {
            if segment.max_timestamp().0 >= timestamp && segment.end_offset() > log_start {
                if let Some(hit) = segment.find_timestamp(timestamp, log_start)? {
                    return Ok(Some(hit));
                }
            }
        }
        if self.active.max_timestamp().0 >= timestamp {
            return self.active.find_timestamp(timestamp, log_start);
        }
        Ok(None)
    }

    /// The first record holding the largest timestamp of the log, with its batch's leader
    /// epoch (ListOffsets `MAX_TIMESTAMP`): the earliest segment with that timestamp, and in
    /// it the first record that has it, as Kafka's `RecordBatch.offsetOfMaxTimestamp` finds.
    ///
    /// # Errors
    ///
    /// [`ReadError::Corrupt`] or [`ReadError::Io`] when a segment cannot be read.
    pub fn max_timestamp_record(&self) -> Result<Option<TimestampOffset>, ReadError> {
        let Some((max, _)) = self.max_timestamp() else {
            return Ok(None);
        };
        for segment in &self.segments {
            if segment.max_timestamp().0 == max {
                return segment.find_timestamp(max, i64::MIN);
            }
        }
        self.active.find_timestamp(max, i64::MIN)
    }

    /// `(timestamp, offset)` of the largest timestamp in the log, the offset being the base
    /// offset of the first batch that has it; `None` when no batch has a timestamp.
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        self.segments
            .iter()
            .map(Segment::max_timestamp)
            .chain([self.active.max_timestamp()])
            // Later segments win only with a strictly larger timestamp.
            .fold(None, |best: Option<(i64, i64)>, candidate| match best {
                Some(best) if best.0 >= candidate.0 => Some(best),
                _ => Some(candidate),
            })
            .filter(|&(timestamp, _)| timestamp > NO_TIMESTAMP)
    }

    /// Bytes of all `.log` files.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(Segment::size).sum::<u64>() + self.active.size()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len() + 1
    }

    /// Makes everything appended so far durable. Older segments already are.
    ///
    /// # Errors
    ///
    /// [`LogError::Io`] when syncing fails; what was appended may then not be durable.
    pub fn flush(&mut self) -> Result<(), LogError> {
        self.save_epochs()?;
        Ok(self.sync_active()?)
    }

    /// Writes the leader-epoch checkpoint if the cache changed since it was last written.
    fn save_epochs(&mut self) -> Result<(), IoError> {
        if self.epochs_unsaved {
            self.commit_epochs(self.epochs.clone())?;
        }
        Ok(())
    }

    fn sync_active(&mut self) -> Result<(), IoError> {
        self.active.sync()?;
        self.unflushed_messages = 0;
        self.last_flush = Instant::now();
        Ok(())
    }

    /// Flushes when `flush_ms` has passed since the last flush and something is unflushed;
    /// the caller's timer calls this periodically. Returns whether it flushed.
    ///
    /// # Errors
    ///
    /// [`LogError::Io`] when syncing fails.
    pub fn flush_if_due(&mut self, now: Instant) -> Result<bool, LogError> {
        let Some(ms) = self.config.flush_ms else {
            return Ok(false);
        };
        let due = self.unflushed_messages > 0
            && now.saturating_duration_since(self.last_flush) >= Duration::from_millis(ms);
        if due {
            self.sync_active()?;
        }
        Ok(due)
    }

    /// Records appended since the last flush.
    pub fn unflushed_messages(&self) -> u64 {
        self.unflushed_messages
    }

    /// Applies changed topic settings. Segment size and age, the batch size limit and the
    /// flush policy take effect from the next append (a lowered `flush_messages` already
    /// reached flushes then); the index interval applies to segments created after this.
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    /// Flushes and leaves the clean-shutdown marker, so the next open skips recovery.
    ///
    /// # Errors
    ///
    /// [`LogError::Io`] when flushing or writing the marker fails; the next open then
    /// recovers the log as after a crash.
    pub fn close(mut self) -> Result<(), LogError> {
        if self.epochs_unsaved {
            self.commit_epochs(self.epochs.clone())?;
        }
        self.active.finish()?;
        self.unflushed_messages = 0;
        let marker = self.dir.join(CLEAN_SHUTDOWN_FILE);
        fs::File::create(&marker)
            .and_then(|f| f.sync_all())
            .at("write clean-shutdown marker", &marker)?;
        sync_dir(&self.dir)?;
        Ok(())
    }

    /// Removes the partition's directory and everything in it.
    ///
    /// # Errors
    ///
    /// [`LogError::Io`] when the directory cannot be removed.
    pub fn delete(self) -> Result<(), LogError> {
        let dir = self.dir.clone();
        drop(self);
        fs::remove_dir_all(&dir).at("delete partition directory", &dir)?;
        Ok(())
    }
}

/// Why a batch was refused, as the append error.
/// The batches of a produce request in the codec `compression` stores (see `compression`):
/// `None` when every batch already is in it. A leader calls this before it takes its log's
/// lock, so that compressing does not hold up reads of the partition;
/// [`PartitionLog::append`] converts whatever still is in another codec (the setting may
/// have changed in between).
///
/// # Errors
///
/// As [`PartitionLog::append`] for a malformed or oversized batch, and
/// [`AppendError::Corrupt`] for records that do not decompress or do not match their header.
pub fn to_topic_codec(
    records: &[u8],
    max_batch_bytes: usize,
    compression: TopicCompression,
) -> Result<Option<Vec<u8>>, AppendError> {
    if compression == TopicCompression::Producer {
        return Ok(None);
    }
    let batches = batch::split_produced(records, max_batch_bytes).map_err(refused)?;
    compression::to_topic_codec(records, &batches, compression).map_err(AppendError::Corrupt)
}

fn refused(fault: ProduceFault) -> AppendError {
    match fault {
        ProduceFault::Invalid(reason) => AppendError::Corrupt(reason),
        ProduceFault::UnsupportedMagic(magic) => AppendError::UnsupportedMagic(magic),
        ProduceFault::TooLarge { size, max } => AppendError::BatchTooLarge { size, max },
    }
}

/// The length of the leading whole batches of `records` whose last offset is below
/// `max_offset`.
fn batches_below(records: &[u8], max_offset: i64) -> usize {
    let mut end = 0;
    while let Some(header) = records.get(end..).and_then(BatchHeader::parse) {
        let next = end + header.size();
        if header.last_offset() >= max_offset || header.size() == 0 || next > records.len() {
            break;
        }
        end = next;
    }
    end
}

/// Creates the partition directory, durably, when it does not exist.
fn create_dir(dir: &Path) -> Result<(), IoError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).at("create partition directory", dir)?;
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => Ok(()),
    }
}

/// Base offsets of the segments in `dir`, sorted. Leftovers of interrupted index rewrites
/// and index files without a `.log` are removed; other files are left alone.
fn list_segments(dir: &Path) -> Result<Vec<i64>, IoError> {
    let mut logs = Vec::new();
    let mut indexes = Vec::new();
    for entry in fs::read_dir(dir).at("list partition directory", dir)? {
        let entry = entry.at("list partition directory", dir)?;
        let name = entry.file_name();
        let Some((base, extension)) = name.to_str().and_then(parse_file_name) else {
            continue;
        };
        match extension {
            LOG_EXTENSION => logs.push(base),
            INDEX_EXTENSION | TIME_INDEX_EXTENSION => indexes.push((base, entry.path())),
            _ if is_index_tmp(extension) => remove_stray(&entry.path())?,
            _ => {}
        }
    }
    logs.sort_unstable();
    for (base, path) in indexes {
        if logs.binary_search(&base).is_err() {
            remove_stray(&path)?;
        }
    }
    Ok(logs)
}

/// Only our own temporary files: others (e.g. producer snapshots) share the directory.
fn is_index_tmp(extension: &str) -> bool {
    extension
        .strip_suffix(index::TMP_SUFFIX)
        .is_some_and(|ext| ext == INDEX_EXTENSION || ext == TIME_INDEX_EXTENSION)
}

fn remove_stray(path: &Path) -> Result<(), IoError> {
    tracing::info!(file = %path.display(), "removing leftover index file");
    fs::remove_file(path).at("remove leftover index file", path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::batch::tests::{encode_batch, encode_batch_with};
    use super::*;
    use kafka_protocol::records::Compression;
    use tempfile::TempDir;

    pub(super) fn small(segment_bytes: u64) -> LogConfig {
        LogConfig {
            segment_bytes,
            index_interval_bytes: 128,
            ..LogConfig::default()
        }
    }

    /// Splits fetched records into batches, checking each one's framing and CRC.
    fn batches(records: &[u8]) -> Vec<BatchHeader> {
        let mut out = Vec::new();
        let mut rest = records;
        while !rest.is_empty() {
            let header = BatchHeader::parse(rest).unwrap();
            let (one, tail) = rest.split_at(header.size());
            batch::check_batch(one, batch::CountRule::Produced).unwrap();
            out.push(header);
            rest = tail;
        }
        out
    }

    fn file_len(path: PathBuf) -> u64 {
        fs::metadata(path).unwrap().len()
    }

    pub(super) fn segment_file(dir: &Path, base: i64, extension: &str) -> PathBuf {
        dir.join(segment::file_name(base, extension))
    }

    /// Appends `count` single-batch requests of three records and 50-byte values.
    pub(super) fn fill(log: &mut PartitionLog, count: usize) {
        for i in 0..count {
            log.append(&encode_batch(3, 50, 1_000 + i as i64 * 10), 0)
                .unwrap();
        }
    }

    #[test]
    fn log_append_time_stamps_each_batch_with_the_append_time_and_a_valid_crc() {
        let dir = TempDir::new().unwrap();
        let config = LogConfig {
            log_append_time: true,
            ..LogConfig::default()
        };
        let mut log = PartitionLog::open(dir.path(), config).unwrap();
        let before = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        log.append(&encode_batch(3, 10, 5), 0).unwrap();
        let read = log.read(0, 1 << 20).unwrap();
        let header = batch::check_batch(&read.records, batch::CountRule::Produced).unwrap();
        assert_ne!(header.attributes & batch::LOG_APPEND_TIME_ATTRIBUTE, 0);
        assert!(
            header.max_timestamp >= before,
            "{} < {before}",
            header.max_timestamp
        );
        assert_eq!(header.base_offset, 0);
    }

    #[test]
    fn a_zstd_log_with_log_append_time_stores_zstd_batches_with_the_append_time() {
        let dir = TempDir::new().unwrap();
        let config = LogConfig {
            log_append_time: true,
            compression: TopicCompression::Zstd(3),
            ..LogConfig::default()
        };
        let mut log = PartitionLog::open(dir.path(), config).unwrap();
        log.append(&encode_batch(3, 10, 5), 0).unwrap();
        let gzip = encode_batch_with(2, 10, 9, Compression::Gzip);
        let info = log.append(&gzip, 0).unwrap();
        assert_eq!((info.base_offset, info.last_offset), (3, 4));
        let read = log.read(0, 1 << 20).unwrap();
        let headers = batches(&read.records);
        assert_eq!(headers.len(), 2);
        for header in &headers {
            assert_eq!(header.compression(), Some(Compression::Zstd));
            assert_ne!(header.attributes & batch::LOG_APPEND_TIME_ATTRIBUTE, 0);
        }
        assert_eq!(
            (headers[1].base_offset, headers[1].last_offset_delta),
            (3, 1)
        );
        let mut stored = read.records.clone();
        let values: Vec<_> = kafka_protocol::records::RecordBatchDecoder::decode_all(&mut stored)
            .unwrap()
            .into_iter()
            .flat_map(|set| set.records)
            .map(|r| (r.offset, r.key, r.value))
            .collect();
        let mut sent = Bytes::from(encode_batch(3, 10, 5));
        let mut expected: Vec<_> = kafka_protocol::records::RecordBatchDecoder::decode(&mut sent)
            .unwrap()
            .records
            .into_iter()
            .map(|r| (r.offset, r.key, r.value))
            .collect();
        let mut sent = Bytes::from(gzip);
        expected.extend(
            kafka_protocol::records::RecordBatchDecoder::decode(&mut sent)
                .unwrap()
                .records
                .into_iter()
                .map(|r| (r.offset + 3, r.key, r.value)),
        );
        assert_eq!(values, expected);
    }

    #[test]
    fn a_batch_that_decompresses_past_the_size_limit_is_refused_and_nothing_written() {
        let dir = TempDir::new().unwrap();
        let gzip = encode_batch_with(100, 500, 0, Compression::Gzip);
        let config = LogConfig {
            max_batch_bytes: gzip.len() * 2,
            compression: TopicCompression::Uncompressed,
            ..LogConfig::default()
        };
        let mut log = PartitionLog::open(dir.path(), config).unwrap();
        let error = log.append(&gzip, 0).unwrap_err();
        assert!(
            matches!(error, AppendError::BatchTooLarge { max, .. } if max == gzip.len() * 2),
            "{error}"
        );
        assert_eq!(
            error.response_error(),
            kafka_protocol::ResponseError::MessageTooLarge
        );
        assert_eq!(log.log_end_offset(), 0);
    }

    #[test]
    fn appended_batches_read_back_with_assigned_offsets_epoch_and_a_valid_crc() {
        let dir = TempDir::new().unwrap();
        let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        let first = log.append(&encode_batch(3, 10, 100), 7).unwrap();
        assert_eq!(
            first,
            AppendInfo {
                base_offset: 0,
                last_offset: 2,
                max_timestamp: 102,
                batch_count: 1,
                record_count: 3,
                bytes: encode_batch(3, 10, 100).len(),
            }
        );
        let second = log.append(&encode_batch(2, 10, 200), 8).unwrap();
        assert_eq!((second.base_offset, second.last_offset), (3, 4));
        assert_eq!(log.log_end_offset(), 5);

        let read = log.read(0, usize::MAX).unwrap();
        assert_eq!((read.log_start_offset, read.log_end_offset), (0, 5));
        let headers = batches(&read.records);
        assert_eq!(headers.len(), 2);
        assert_eq!(
            (headers[0].base_offset, headers[0].partition_leader_epoch),
            (0, 7)
        );
        assert_eq!(
            (headers[1].base_offset, headers[1].partition_leader_epoch),
            (3, 8)
        );
    }

    #[test]
    fn several_batches_in_one_request_get_consecutive_offsets() {
        let dir = TempDir::new().unwrap();
        let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        log.append(&encode_batch(1, 1, 0), 0).unwrap();
        let request = [
            encode_batch(2, 1, 5),
            encode_batch(4, 1, 50),
            encode_batch_with(3, 1, 9, Compression::Lz4),
        ]
        .concat();
        let info = log.append(&request, 0).unwrap();
        assert_eq!((info.base_offset, info.last_offset), (1, 9));
        assert_eq!((info.batch_count, info.record_count), (3, 9));
        assert_eq!(info.max_timestamp, 53);
        let bases: Vec<i64> = batches(&log.read(1, usize::MAX).unwrap().records)
            .iter()
            .map(|h| h.base_offset)
            .collect();
        assert_eq!(bases, [1, 3, 7]);
    }

    #[test]
    fn reading_from_inside_a_batch_returns_the_whole_batch() {
        let dir = TempDir::new().unwrap();
        let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        fill(&mut log, 3);
        let headers = batches(&log.read(4, usize::MAX).unwrap().records);
        assert_eq!(
            headers.iter().map(|h| h.base_offset).collect::<Vec<_>>(),
            [3, 6]
        );
    }

    #[test]
    fn max_bytes_limits_whole_batches_but_always_returns_the_first() {
        let dir = TempDir::new().unwrap();
        let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        fill(&mut log, 4);
        let one = encode_batch(3, 50, 0).len();
        assert_eq!(batches(&log.read(0, 0).unwrap().records).len(), 1);
        assert_eq!(batches(&log.read(0, one - 1).unwrap().records).len(), 1);
        assert_eq!(
            batches(&log.read(0, 2 * one + 10).unwrap().records).len(),
            2
        );
        assert_eq!(batches(&log.read(0, 2 * one).unwrap().records).len(), 2);
        assert_eq!(log.read(0, usize::MAX).unwrap().records.len(), 4 * one);
    }

    #[test]
    fn reads_outside_the_log_are_out_of_range_and_at_the_end_are_empty() {
        let dir = TempDir::new().unwrap();
        let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        assert!(log.read(0, 100).unwrap().records.is_empty());
        fill(&mut log, 1);
        let at_end = log.read(3, 100).unwrap();
        assert!(at_end.records.is_empty());
        assert_eq!(at_end.log_end_offset, 3);
        for offset in [-1, 4, i64::MAX] {
            assert!(matches!(
                log.read(offset, 100),
                Err(ReadError::OffsetOutOfRange { offset: o, log_start: 0, log_end: 3 }) if o == offset
            ));
        }
    }

    #[test]
    fn segments_roll_by_size_and_reads_span_them() {
        let dir = TempDir::new().unwrap();
        let one = encode_batch(3, 50, 0).len() as u64;
        let mut log = PartitionLog::open(dir.path(), small(2 * one + 1)).unwrap();
        fill(&mut log, 5);
        assert_eq!(log.segment_count(), 3);
        for (base, batches_in_it) in [(0, 2), (6, 2), (12, 1)] {
            let path = segment_file(dir.path(), base, "log");
            assert_eq!(file_len(path), batches_in_it * one);
            assert!(segment_file(dir.path(), base, "index").exists());
            assert!(segment_file(dir.path(), base, "timeindex").exists());
        }
        assert_eq!(log.size_bytes(), 5 * one);
        // A read stops at the end of its segment; the next one continues from there.
        let first = batches(&log.read(0, usize::MAX).unwrap().records);
        assert_eq!(first.last().unwrap().last_offset(), 5);
        let second = batches(&log.read(6, usize::MAX).unwrap().records);
        assert_eq!(second[0].base_offset, 6);
        for offset in 0..15 {
            let header = batches(&log.read(offset, 0).unwrap().records)[0];
            assert!(header.base_offset <= offset && offset <= header.last_offset());
        }
    }

    #[test]
    fn a_batch_larger_than_the_segment_size_gets_a_segment_of_its_own() {
        let dir = TempDir::new().unwrap();
        let mut log = PartitionLog::open(dir.path(), small(10)).unwrap();
        fill(&mut log, 3);
        assert_eq!(log.segment_count(), 3);
        assert_eq!(log.log_end_offset(), 9);
    }

    #[test]
    fn an_old_segment_rolls_on_the_next_append() {
        let dir = TempDir::new().unwrap();
        let config = LogConfig {
            segment_ms: Some(0),
            ..LogConfig::default()
        };
        let mut log = PartitionLog::open(dir.path(), config).unwrap();
        fill(&mut log, 1);
        assert_eq!(log.segment_count(), 1);
        fill(&mut log, 2);
        assert_eq!(log.segment_count(), 3);

        let dir = TempDir::new().unwrap();
        let config = LogConfig {
            segment_ms: Some(3_600_000),
            ..LogConfig::default()
        };
        let mut log = PartitionLog::open(dir.path(), config).unwrap();
        fill(&mut log, 3);
        assert_eq!(log.segment_count(), 1);
    }

    #[test]
    fn reopening_after_close_restores_the_log_end_and_contents() {
        let dir = TempDir::new().unwrap();
        let one = encode_batch(3, 50, 0).len() as u64;
        let mut log = PartitionLog::open(dir.path(), small(3 * one)).unwrap();
        fill(&mut log, 7);
        let before = log.read(0, usize::MAX).unwrap();
        let max = log.max_timestamp();
        log.close().unwrap();
        assert!(dir.path().join(CLEAN_SHUTDOWN_FILE).exists());

        let mut log = PartitionLog::open(dir.path(), small(3 * one)).unwrap();
        assert!(!dir.path().join(CLEAN_SHUTDOWN_FILE).exists());
        assert_eq!(log.log_end_offset(), 21);
        assert_eq!(log.segment_count(), 3);
        assert_eq!(log.read(0, usize::MAX).unwrap(), before);
        assert_eq!(log.max_timestamp(), max);
        assert_eq!(
            log.append(&encode_batch(1, 1, 0), 0).unwrap().base_offset,
            21
        );
    }

    #[test]
    fn reopening_without_the_marker_keeps_an_intact_log() {
        let dir = TempDir::new().unwrap();
        let mut log = PartitionLog::open(dir.path(), small(1_000)).unwrap();
        fill(&mut log, 10);
        let size = log.size_bytes();
        drop(log);
        let log = PartitionLog::open(dir.path(), small(1_000)).unwrap();
        assert_eq!(log.log_end_offset(), 30);
        assert_eq!(log.size_bytes(), size);
    }

    #[test]
    fn a_batch_torn_by_a_crash_is_cut_off_and_appends_continue_after_the_last_good_one() {
        let dir = TempDir::new().unwrap();
        let mut log = PartitionLog::open(dir.path(), small(1 << 20)).unwrap();
        fill(&mut log, 4);
        let good = log.size_bytes();
        fill(&mut log, 1);
        drop(log);
        let path = segment_file(dir.path(), 0, "log");
        let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(good + 30).unwrap();

        let mut log = PartitionLog::open(dir.path(), small(1 << 20)).unwrap();
        assert_eq!(log.log_end_offset(), 12);
        assert_eq!(file_len(path), good);
        let info = log.append(&encode_batch(2, 5, 0), 0).unwrap();
        assert_eq!(info.base_offset, 12);
        let headers = batches(&log.read(9, usize::MAX).unwrap().records);
        assert_eq!(
            headers.iter().map(|h| h.base_offset).collect::<Vec<_>>(),
            [9, 12]
        );
    }

    #[test]
    fn garbage_after_the_last_batch_is_cut_off_on_reopen() {
        for garbage in [
            vec![0u8; 100],
            vec![0xab; 7],
            encode_batch(1, 1, 0)[..70].to_vec(),
        ] {
            let dir = TempDir::new().unwrap();
            let mut log = PartitionLog::open(dir.path(), small(1 << 20)).unwrap();
            fill(&mut log, 3);
            let good = log.size_bytes();
            drop(log);
            let path = segment_file(dir.path(), 0, "log");
            let mut bytes = fs::read(&path).unwrap();
            bytes.extend_from_slice(&garbage);
            fs::write(&path, bytes).unwrap();

            let mut log = PartitionLog::open(dir.path(), small(1 << 20)).unwrap();
            assert_eq!((log.log_end_offset(), log.size_bytes()), (9, good));
            assert_eq!(
                log.append(&encode_batch(1, 1, 0), 0).unwrap().base_offset,
                9
            );
        }
    }

    #[test]
    fn a_batch_with_a_bad_crc_in_the_active_segment_is_cut_off_with_everything_after_it() {
        let dir = TempDir::new().unwrap();
        let mut log = PartitionLog::open(dir.path(), small(1 << 20)).unwrap();
        fill(&mut log, 5);
        drop(log);
        let path = segment_file(dir.path(), 0, "log");
        let mut bytes = fs::read(&path).unwrap();
        let one = encode_batch(3, 50, 0).len();
        bytes[2 * one + 70] ^= 1;
        fs::write(&path, bytes).unwrap();

        let log = PartitionLog::open(dir.path(), small(1 << 20)).unwrap();
        assert_eq!(log.log_end_offset(), 6);
        assert_eq!(log.size_bytes(), 2 * one as u64);
    }

    #[test]
    fn a_log_shorter_than_a_header_recovers_to_an_empty_log() {
        let dir = TempDir::new().unwrap();
        fs::write(segment_file(dir.path(), 0, "log"), [1u8; 40]).unwrap();
        let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        assert_eq!((log.log_end_offset(), log.size_bytes()), (0, 0));
        fill(&mut log, 1);
        assert_eq!(log.log_end_offset(), 3);
    }

    #[test]
    fn a_missing_directory_is_created_as_an_empty_log_at_offset_zero() {
        let parent = TempDir::new().unwrap();
        let dir = parent.path().join("orders-3");
        let log = PartitionLog::open(&dir, LogConfig::default()).unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
        assert_eq!(log.segment_count(), 1);
        assert_eq!(log.max_timestamp(), None);
        assert_eq!(log.offset_for_timestamp(0).unwrap(), None);
        assert!(segment_file(&dir, 0, "log").exists());
    }

    #[test]
    fn an_active_segment_emptied_by_recovery_keeps_its_base_offset() {
        let dir = TempDir::new().unwrap();
        let one = encode_batch(3, 50, 0).len() as u64;
        let mut log = PartitionLog::open(dir.path(), small(one)).unwrap();
        fill(&mut log, 2);
        drop(log);
        let path = segment_file(dir.path(), 3, "log");
        fs::OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(10)
            .unwrap();
        let mut log = PartitionLog::open(dir.path(), small(one)).unwrap();
        assert_eq!(log.log_end_offset(), 3);
        assert_eq!(
            log.append(&encode_batch(1, 1, 0), 0).unwrap().base_offset,
            3
        );
        assert_eq!(log.segment_count(), 2);
    }

    #[test]
    fn refused_requests_write_nothing() {
        let dir = TempDir::new().unwrap();
        let config = LogConfig {
            max_batch_bytes: 500,
            ..LogConfig::default()
        };
        let mut log = PartitionLog::open(dir.path(), config).unwrap();
        fill(&mut log, 1);
        let good = encode_batch(2, 10, 0);

        let mut bad_crc = encode_batch(2, 10, 0);
        *bad_crc.last_mut().unwrap() ^= 0xff;
        let mut bad_magic = encode_batch(2, 10, 0);
        bad_magic[16] = 1;
        let mut trailing = good.clone();
        trailing.extend_from_slice(&[0; 11]);
        let mut overlong_length = good.clone();
        overlong_length[8..12].copy_from_slice(&1_000i32.to_be_bytes());

        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            (
                "bad CRC after a good batch",
                [good.clone(), bad_crc].concat(),
            ),
            ("bad magic", bad_magic),
            ("trailing partial bytes", trailing),
            ("length past the end", overlong_length),
            (
                "too large",
                [good.clone(), encode_batch(1, 600, 0)].concat(),
            ),
        ];
        for (name, records) in cases {
            let error = log.append(&records, 0).unwrap_err();
            let expected = match name {
                "bad magic" => matches!(error, AppendError::UnsupportedMagic(1)),
                "too large" => matches!(error, AppendError::BatchTooLarge { max: 500, .. }),
                "bad CRC after a good batch" => matches!(
                    &error,
                    AppendError::Corrupt(reason) if reason.contains("batch 1") && reason.contains("CRC")
                ),
                _ => matches!(error, AppendError::Corrupt(_)),
            };
            assert!(expected, "{name}: unexpected {error:?}");
            assert_eq!(log.log_end_offset(), 3, "{name}");
            assert_eq!(
                file_len(segment_file(dir.path(), 0, "log")),
                log.size_bytes(),
                "{name}"
            );
        }
        assert_eq!(log.append(&good, 0).unwrap().base_offset, 3);
    }

    #[test]
    fn append_errors_map_to_kafka_error_codes() {
        use kafka_protocol::ResponseError;
        assert_eq!(
            AppendError::Corrupt(String::new()).response_error(),
            ResponseError::CorruptMessage
        );
        assert_eq!(
            AppendError::BatchTooLarge { size: 2, max: 1 }.response_error(),
            ResponseError::MessageTooLarge
        );
        let out_of_range = ReadError::OffsetOutOfRange {
            offset: 9,
            log_start: 0,
            log_end: 3,
        };
        assert_eq!(
            out_of_range.response_error(),
            ResponseError::OffsetOutOfRange
        );
        assert_eq!(
            out_of_range.to_string(),
            "offset 9 is outside the log's range [0, 3]"
        );
    }

    #[test]
    fn deleted_index_files_are_rebuilt_identically_on_open() {
        let dir = TempDir::new().unwrap();
        let one = encode_batch(3, 50, 0).len() as u64;
        let config = small(5 * one);
        let mut log = PartitionLog::open(dir.path(), config.clone()).unwrap();
        fill(&mut log, 12);
        let contents = log.read(0, usize::MAX).unwrap();
        log.close().unwrap();
        // The inactive segments; the active one's rebuilt index may lack the closing entry.
        let mut originals = Vec::new();
        for base in [0, 15] {
            for extension in ["index", "timeindex"] {
                let path = segment_file(dir.path(), base, extension);
                originals.push((path.clone(), fs::read(&path).unwrap()));
                fs::remove_file(path).unwrap();
            }
        }
        assert!(originals.iter().any(|(_, bytes)| !bytes.is_empty()));
        fs::remove_file(segment_file(dir.path(), 30, "index")).unwrap();

        let log = PartitionLog::open(dir.path(), config).unwrap();
        for (path, bytes) in &originals {
            assert_eq!(&fs::read(path).unwrap(), bytes, "{}", path.display());
        }
        assert_eq!(log.read(0, usize::MAX).unwrap(), contents);
        for offset in 0..36 {
            let header = batches(&log.read(offset, 0).unwrap().records)[0];
            assert!(header.base_offset <= offset && offset <= header.last_offset());
        }
    }

    #[test]
    fn inconsistent_index_files_are_not_trusted() {
        let dir = TempDir::new().unwrap();
        let one = encode_batch(3, 50, 0).len() as u64;
        let config = small(5 * one);
        let mut log = PartitionLog::open(dir.path(), config.clone()).unwrap();
        fill(&mut log, 12);
        log.close().unwrap();
        // A partial entry; entries out of order whose last one looks fine, which only a full
        // load notices; an entry past the end of the active segment.
        fs::write(segment_file(dir.path(), 0, "index"), [0u8; 11]).unwrap();
        let shuffled: Vec<u8> = [(9u32, 3 * one as u32), (3, one as u32)]
            .iter()
            .flat_map(|(o, p)| [o.to_be_bytes(), p.to_be_bytes()].concat())
            .collect();
        fs::write(segment_file(dir.path(), 15, "index"), shuffled).unwrap();
        let mut past_end = 1u32.to_be_bytes().to_vec();
        past_end.extend_from_slice(&1_000_000u32.to_be_bytes());
        fs::write(segment_file(dir.path(), 30, "index"), past_end).unwrap();

        let log = PartitionLog::open(dir.path(), config).unwrap();
        assert_eq!(file_len(segment_file(dir.path(), 0, "index")) % 8, 0);
        for offset in 0..36 {
            let header = batches(&log.read(offset, 0).unwrap().records)[0];
            assert!(header.base_offset <= offset && offset <= header.last_offset());
        }
    }

    #[test]
    fn an_index_entry_naming_the_wrong_batch_is_not_trusted() {
        let dir = TempDir::new().unwrap();
        let one = encode_batch(3, 50, 0).len() as u32;
        let config = small(u64::from(5 * one));
        let mut log = PartitionLog::open(dir.path(), config.clone()).unwrap();
        fill(&mut log, 8);
        log.close().unwrap();
        // Well-formed and in bounds, but the batch at 2 * one starts at offset 6, not 4.
        let wrong = [4u32.to_be_bytes(), (2 * one).to_be_bytes()].concat();
        fs::write(segment_file(dir.path(), 0, "index"), &wrong).unwrap();
        fs::write(segment_file(dir.path(), 15, "index"), &wrong).unwrap();

        let log = PartitionLog::open(dir.path(), config).unwrap();
        for offset in [4, 19] {
            let header = batches(&log.read(offset, 0).unwrap().records)[0];
            assert_eq!(header.base_offset, offset - 1);
        }
        assert_eq!(log.log_end_offset(), 24);
    }

    fn hit(offset: i64, timestamp: i64, epoch: i32) -> Option<TimestampOffset> {
        Some(TimestampOffset {
            timestamp,
            offset,
            leader_epoch: Some(epoch),
        })
    }

    #[test]
    fn offset_for_timestamp_finds_the_earliest_record_at_or_after_it_inside_its_batch() {
        let dir = TempDir::new().unwrap();
        let one = encode_batch(3, 50, 0).len() as u64;
        let mut log = PartitionLog::open(dir.path(), small(4 * one)).unwrap();
        // Batch i has offsets 3i..3i+2 and timestamps t..t+2; batch 6 is late.
        for t in [1000, 1010, 1020, 1030, 1040, 1050, 500, 1060, 1070, 1080] {
            log.append(&encode_batch(3, 50, t), 2).unwrap();
        }
        assert_eq!(log.segment_count(), 3);

        let found = |ts| log.offset_for_timestamp(ts).unwrap();
        assert_eq!(found(0), hit(0, 1_000, 2));
        assert_eq!(found(1_002), hit(2, 1_002, 2));
        assert_eq!(found(1_003), hit(3, 1_010, 2));
        assert_eq!(found(1_041), hit(13, 1_041, 2));
        assert_eq!(found(1_052), hit(17, 1_052, 2));
        assert_eq!(found(1_053), hit(21, 1_060, 2));
        assert_eq!(found(1_072), hit(26, 1_072, 2));
        assert_eq!(found(1_073), hit(27, 1_080, 2));
        assert_eq!(found(1_083), None);
        assert_eq!(log.max_timestamp(), Some((1_082, 27)));
        assert_eq!(log.max_timestamp_record().unwrap(), hit(29, 1_082, 2));
    }

    #[test]
    fn offset_for_timestamp_skips_records_before_the_log_start() {
        let dir = TempDir::new().unwrap();
        let mut log = PartitionLog::open(dir.path(), small(1 << 20)).unwrap();
        log.append(&encode_batch(5, 50, 1_000), 0).unwrap();
        log.append(&encode_batch(5, 50, 2_000), 1).unwrap();
        log.delete_records_before(3).unwrap();
        assert_eq!(log.offset_for_timestamp(0).unwrap(), hit(3, 1_003, 0));
        log.delete_records_before(5).unwrap();
        assert_eq!(log.offset_for_timestamp(0).unwrap(), hit(5, 2_000, 1));
        assert_eq!(log.earliest_epoch(), Some(1));
    }

    #[test]
    fn a_log_append_time_batch_is_found_by_its_append_time_at_its_first_record() {
        let dir = TempDir::new().unwrap();
        let config = LogConfig {
            log_append_time: true,
            ..small(1 << 20)
        };
        let mut log = PartitionLog::open(dir.path(), config).unwrap();
        log.append(&encode_batch(4, 50, 10), 3).unwrap();
        let stamped = log.max_timestamp().unwrap().0;
        assert!(stamped > 10);
        assert_eq!(log.offset_for_timestamp(12).unwrap(), hit(0, stamped, 3));
        assert_eq!(log.max_timestamp_record().unwrap(), hit(0, stamped, 3));
    }

    #[test]
    fn max_timestamp_is_the_first_batch_with_the_largest_timestamp_across_segments() {
        let dir = TempDir::new().unwrap();
        let one = encode_batch(1, 50, 0).len() as u64;
        let mut log = PartitionLog::open(dir.path(), small(2 * one)).unwrap();
        for ts in [10, 900, 20, 900, 30, 40] {
            log.append(&encode_batch(1, 50, ts), 0).unwrap();
        }
        assert_eq!(log.max_timestamp(), Some((900, 1)));
        log.close().unwrap();
        let log = PartitionLog::open(dir.path(), small(2 * one)).unwrap();
        assert_eq!(log.max_timestamp(), Some((900, 1)));
        assert_eq!(log.max_timestamp_record().unwrap(), hit(1, 900, 0));
        assert_eq!(log.offset_for_timestamp(100).unwrap(), hit(1, 900, 0));
    }

    #[test]
    fn max_timestamp_survives_a_crash_of_the_active_segment() {
        let dir = TempDir::new().unwrap();
        let mut log = PartitionLog::open(dir.path(), small(1 << 20)).unwrap();
        for ts in [10, 20, 5_000, 30] {
            log.append(&encode_batch(1, 50, ts), 0).unwrap();
        }
        drop(log);
        let log = PartitionLog::open(dir.path(), small(1 << 20)).unwrap();
        assert_eq!(log.max_timestamp(), Some((5_000, 2)));
    }

    #[test]
    fn appends_flush_once_flush_messages_records_are_unflushed() {
        let dir = TempDir::new().unwrap();
        let config = LogConfig {
            flush_messages: 5,
            ..LogConfig::default()
        };
        let mut log = PartitionLog::open(dir.path(), config).unwrap();
        assert_eq!(log.unflushed_messages(), 0);
        fill(&mut log, 1);
        assert_eq!(log.unflushed_messages(), 3);
        fill(&mut log, 1);
        assert_eq!(log.unflushed_messages(), 0);
        // One request past the threshold on its own is flushed at once.
        log.append(&encode_batch(7, 10, 0), 0).unwrap();
        assert_eq!(log.unflushed_messages(), 0);
    }

    #[test]
    fn without_a_flush_policy_records_stay_unflushed_until_a_flush_or_a_roll() {
        let dir = TempDir::new().unwrap();
        let one = encode_batch(3, 50, 0).len() as u64;
        let mut log = PartitionLog::open(dir.path(), small(2 * one)).unwrap();
        fill(&mut log, 2);
        assert_eq!(log.unflushed_messages(), 6);
        log.flush().unwrap();
        assert_eq!(log.unflushed_messages(), 0);
        fill(&mut log, 1);
        // The roll made the first segment durable; only the new batch is pending.
        assert_eq!(log.segment_count(), 2);
        assert_eq!(log.unflushed_messages(), 3);
        assert!(!log.flush_if_due(Instant::now()).unwrap());
    }

    #[test]
    fn flush_if_due_flushes_only_after_flush_ms_and_only_when_something_is_unflushed() {
        let dir = TempDir::new().unwrap();
        let config = LogConfig {
            flush_ms: Some(1_000),
            ..LogConfig::default()
        };
        let mut log = PartitionLog::open(dir.path(), config).unwrap();
        let start = Instant::now();
        let later = start + Duration::from_millis(1_500);
        assert!(!log.flush_if_due(later).unwrap());
        fill(&mut log, 1);
        assert!(!log.flush_if_due(start).unwrap());
        assert_eq!(log.unflushed_messages(), 3);
        assert!(log.flush_if_due(later).unwrap());
        assert_eq!(log.unflushed_messages(), 0);
        assert!(!log.flush_if_due(later + Duration::from_secs(60)).unwrap());
    }

    #[test]
    fn set_config_applies_new_segment_size_batch_limit_and_flush_policy_to_later_appends() {
        let dir = TempDir::new().unwrap();
        let one = encode_batch(3, 50, 0).len() as u64;
        let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        fill(&mut log, 4);
        assert_eq!(log.unflushed_messages(), 12);
        log.set_config(LogConfig {
            segment_bytes: one,
            max_batch_bytes: one as usize,
            flush_messages: 1,
            ..LogConfig::default()
        });
        assert_eq!(log.config().segment_bytes, one);
        fill(&mut log, 2);
        assert_eq!(log.segment_count(), 3);
        assert_eq!(log.unflushed_messages(), 0);
        assert!(matches!(
            log.append(&encode_batch(3, 60, 0), 0),
            Err(AppendError::BatchTooLarge { .. })
        ));
    }

    #[test]
    fn the_clean_shutdown_marker_exists_only_while_closed() {
        let dir = TempDir::new().unwrap();
        let marker = dir.path().join(CLEAN_SHUTDOWN_FILE);
        let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        fill(&mut log, 1);
        log.flush().unwrap();
        assert!(!marker.exists());
        log.close().unwrap();
        assert!(marker.exists());
        let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        assert!(!marker.exists());
        drop(log);
    }

    #[test]
    fn leftover_temporary_and_orphan_index_files_are_removed_and_others_kept() {
        let dir = TempDir::new().unwrap();
        let stray = [
            segment_file(dir.path(), 0, "index.tmp"),
            segment_file(dir.path(), 5, "timeindex.tmp"),
            segment_file(dir.path(), 77, "index"),
            segment_file(dir.path(), 77, "timeindex"),
        ];
        for path in &stray {
            fs::write(path, [0u8; 8]).unwrap();
        }
        let unrelated = dir.path().join("partition.metadata");
        fs::write(&unrelated, "topic_id: x").unwrap();
        let foreign_tmp = segment_file(dir.path(), 0, "producers.tmp");
        fs::write(&foreign_tmp, "x").unwrap();
        let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        assert_eq!(log.log_end_offset(), 0);
        assert!(stray.iter().all(|p| !p.exists()));
        assert!(unrelated.exists() && foreign_tmp.exists());
    }

    #[test]
    fn delete_removes_the_partition_directory() {
        let parent = TempDir::new().unwrap();
        let dir = parent.path().join("orders-0");
        let mut log = PartitionLog::open(&dir, small(200)).unwrap();
        fill(&mut log, 3);
        log.delete().unwrap();
        assert!(!dir.exists());
    }

    /// Every batch from the log start on, fetched the way a follower fetches.
    fn everything(log: &PartitionLog) -> Vec<u8> {
        let mut out = Vec::new();
        let mut offset = log.log_start_offset();
        while offset < log.log_end_offset() {
            let records = log.read(offset, usize::MAX).unwrap().records;
            let Some(last) = batches(&records).last().copied() else {
                break;
            };
            offset = last.last_offset() + 1;
            out.extend_from_slice(&records);
        }
        out
    }

    /// A producer's batch placed at `base` in `epoch`, as a leader would serve it.
    fn placed(records: usize, base: i64, epoch: i32) -> Vec<u8> {
        let mut bytes = encode_batch(records, 20, 1_000 + base);
        batch::assign(&mut bytes, base, epoch);
        bytes
    }

    #[test]
    fn replicated_batches_read_back_byte_identical_with_the_leaders_offsets_and_epochs() {
        let (a, b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
        let one = encode_batch(3, 50, 0).len() as u64;
        let mut leader = PartitionLog::open(a.path(), small(3 * one)).unwrap();
        fill(&mut leader, 2);
        let request = [
            encode_batch(2, 10, 5),
            encode_batch_with(4, 30, 50, Compression::Gzip),
        ]
        .concat();
        leader.append(&request, 2).unwrap();
        leader.append(&encode_batch(5, 40, 90), 2).unwrap();
        leader.append(&encode_batch(1, 40, 95), 5).unwrap();
        leader.append(&encode_batch(3, 40, 99), 6).unwrap();
        let raw = everything(&leader);

        let mut follower = PartitionLog::open(b.path(), small(3 * one)).unwrap();
        let info = follower.append_replicated(&raw).unwrap();
        assert_eq!(
            info,
            AppendInfo {
                base_offset: 0,
                last_offset: 20,
                max_timestamp: 1_012,
                batch_count: 7,
                record_count: 21,
                bytes: raw.len(),
            }
        );
        assert_eq!(follower.log_end_offset(), leader.log_end_offset());
        assert_eq!(everything(&follower), raw);
        for offset in 0..21 {
            assert_eq!(
                follower.read(offset, 0).unwrap(),
                leader.read(offset, 0).unwrap(),
                "offset {offset}"
            );
        }
        assert_eq!(follower.epoch_entries(), [(0, 0), (2, 6), (5, 17), (6, 18)]);
        assert_eq!(follower.epoch_entries(), leader.epoch_entries());
        follower.close().unwrap();
        let follower = PartitionLog::open(b.path(), small(3 * one)).unwrap();
        assert_eq!(everything(&follower), raw);
        assert_eq!(follower.epoch_entries(), leader.epoch_entries());
    }

    #[test]
    fn a_replicated_batch_overlapping_the_log_is_refused_and_a_compaction_gap_is_accepted() {
        let dir = TempDir::new().unwrap();
        let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        log.append_replicated(&[placed(3, 0, 1), placed(3, 3, 1)].concat())
            .unwrap();
        for (records, expected, got) in [
            (placed(3, 3, 1), 6, 3),
            (placed(3, 5, 1), 6, 5),
            // The second batch of a request goes back into the first.
            ([placed(3, 6, 1), placed(2, 8, 1)].concat(), 9, 8),
        ] {
            let error = log.append_replicated(&records).unwrap_err();
            assert!(
                matches!(error, AppendError::OffsetMismatch { expected: e, got: g } if e == expected && g == got),
                "{error:?}"
            );
            assert_eq!(log.log_end_offset(), 6);
        }
        // Whole batches that the leader's cleaner removed leave gaps, before the first
        // batch and between two.
        let info = log
            .append_replicated(&[placed(3, 9, 1), placed(1, 20, 2)].concat())
            .unwrap();
        assert_eq!((info.base_offset, info.last_offset), (9, 20));
        assert_eq!(log.log_end_offset(), 21);
        let after_gap = batches(&log.read(6, usize::MAX).unwrap().records);
        assert_eq!(
            after_gap.iter().map(|h| h.base_offset).collect::<Vec<_>>(),
            [9, 20]
        );
        assert_eq!(log.epoch_entries(), [(1, 0), (2, 20)]);
        drop(log);
        let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        assert_eq!(log.log_end_offset(), 21);
        assert_eq!(
            batches(&log.read(15, 0).unwrap().records)[0].base_offset,
            20
        );
    }

    #[test]
    fn replicated_batches_thinned_by_compaction_are_accepted_though_a_producer_may_not_send_them() {
        let dir = TempDir::new().unwrap();
        let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        // Two records left of a batch that spanned offsets 0..=4, and an empty batch that
        // keeps a producer's last offsets 5..=7.
        let mut thinned = placed(2, 0, 3);
        batch::restamp(&mut thinned, 0, 4, 1_001);
        let mut spanning = BatchHeader::parse(&placed(3, 5, 3)).unwrap();
        spanning.producer_id = 77;
        let empty = batch::empty_batch(&spanning);
        let records = [thinned.clone(), empty.to_vec()].concat();
        assert!(matches!(
            log.append(&records, 3),
            Err(AppendError::Corrupt(_))
        ));
        let info = log.append_replicated(&records).unwrap();
        assert_eq!((info.base_offset, info.last_offset), (0, 7));
        assert_eq!((info.batch_count, info.record_count), (2, 2));
        assert_eq!(log.log_end_offset(), 8);
        // Read back as they came (the test helpers would hold them to the producer rules).
        assert_eq!(&log.read(0, usize::MAX).unwrap().records[..], &records[..]);
        assert_eq!(&log.read(6, 0).unwrap().records[..], &empty[..]);
    }

    #[test]
    fn malformed_replicated_batches_are_refused_with_nothing_written() {
        let dir = TempDir::new().unwrap();
        let config = LogConfig {
            max_batch_bytes: 100,
            ..LogConfig::default()
        };
        let mut log = PartitionLog::open(dir.path(), config).unwrap();
        // Larger than this log's batch limit, which a follower does not apply.
        let big = placed(5, 0, 0);
        assert!(big.len() > 100);
        log.append_replicated(&big).unwrap();
        let mut bad_crc = placed(1, 5, 0);
        *bad_crc.last_mut().unwrap() ^= 1;
        let mut bad_magic = placed(1, 5, 0);
        bad_magic[16] = 1;
        let mut cut = placed(1, 5, 0);
        cut.pop();
        for (name, records) in [
            ("empty", Vec::new()),
            ("bad crc", bad_crc),
            ("bad magic", bad_magic),
            ("cut short", cut),
        ] {
            let error = log.append_replicated(&records).unwrap_err();
            let expected = match name {
                "bad magic" => matches!(error, AppendError::UnsupportedMagic(1)),
                _ => matches!(error, AppendError::Corrupt(_)),
            };
            assert!(expected, "{name}: {error:?}");
            assert_eq!(log.log_end_offset(), 5, "{name}");
            assert_eq!(log.size_bytes(), big.len() as u64, "{name}");
        }
        assert!(matches!(
            log.append_replicated(&placed(1, 5, -1)),
            Err(AppendError::StaleLeaderEpoch {
                epoch: -1,
                latest: 0
            })
        ));
    }

    #[test]
    fn replicated_appends_roll_segments_and_follow_the_flush_policy() {
        let dir = TempDir::new().unwrap();
        let one = placed(3, 0, 0).len() as u64;
        let config = LogConfig {
            flush_messages: 4,
            ..small(2 * one)
        };
        let mut log = PartitionLog::open(dir.path(), config).unwrap();
        log.append_replicated(&placed(3, 0, 0)).unwrap();
        assert_eq!(log.unflushed_messages(), 3);
        log.append_replicated(&placed(3, 3, 0)).unwrap();
        assert_eq!(log.unflushed_messages(), 0);
        log.append_replicated(&placed(3, 6, 0)).unwrap();
        assert_eq!(log.segment_count(), 2);
        assert!(segment_file(dir.path(), 6, "log").exists());
    }

    #[test]
    fn a_gap_too_wide_for_the_segment_index_starts_a_segment_at_the_batch() {
        let dir = TempDir::new().unwrap();
        let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        let far = 10_000_000_000;
        log.append_replicated(&placed(2, far, 0)).unwrap();
        assert_eq!(log.segment_count(), 2);
        assert!(segment_file(dir.path(), far, "log").exists());
        assert_eq!(log.log_end_offset(), far + 2);
        log.append_replicated(&placed(2, far + 2, 0)).unwrap();
        log.close().unwrap();
        let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        assert_eq!(log.log_end_offset(), far + 4);
        assert_eq!(
            batches(&log.read(0, usize::MAX).unwrap().records)[0].base_offset,
            far
        );
    }

    #[test]
    fn read_up_to_returns_only_whole_batches_below_the_max_offset() {
        let dir = TempDir::new().unwrap();
        let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        fill(&mut log, 3);
        let bases = |offset, max_offset| -> Vec<i64> {
            batches(
                &log.read_up_to(offset, usize::MAX, max_offset)
                    .unwrap()
                    .records,
            )
            .iter()
            .map(|h| h.base_offset)
            .collect()
        };
        assert_eq!(bases(0, 9), [0, 3, 6]);
        assert_eq!(bases(0, 100), [0, 3, 6]);
        assert_eq!(bases(0, 6), [0, 3]);
        // A batch reaching the bound is left out whole.
        assert_eq!(bases(0, 5), [0]);
        assert_eq!(bases(0, 2), Vec::<i64>::new());
        assert_eq!(bases(4, 9), [3, 6]);
        assert_eq!(bases(6, 6), Vec::<i64>::new());
        assert_eq!(bases(7, 3), Vec::<i64>::new());
        assert_eq!(bases(9, 9), Vec::<i64>::new());
        // max_bytes still limits, and still returns the first batch whole.
        let one = encode_batch(3, 50, 0).len();
        let read = log.read_up_to(0, one + 1, 9).unwrap();
        assert_eq!(batches(&read.records).len(), 1);
        assert_eq!((read.log_start_offset, read.log_end_offset), (0, 9));
        for offset in [-1, 10] {
            assert!(matches!(
                log.read_up_to(offset, 100, 5),
                Err(ReadError::OffsetOutOfRange { .. })
            ));
        }
    }

    #[test]
    fn the_log_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<PartitionLog>();
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Each request is a list of batches, each batch `(records, value bytes)`.
        fn requests() -> impl Strategy<Value = Vec<Vec<(usize, usize)>>> {
            prop::collection::vec(prop::collection::vec((1usize..6, 0usize..300), 1..4), 1..25)
        }

        /// Every offset reads back as a batch containing it, equal to the one appended.
        fn check_every_offset(log: &PartitionLog, expected: &[(i64, Vec<u8>)]) {
            for (base, bytes) in expected {
                let count = BatchHeader::parse(bytes).unwrap().last_offset_delta as i64 + 1;
                for offset in *base..*base + count {
                    let read = log.read(offset, 1).unwrap();
                    assert_eq!(&read.records[..], &bytes[..], "offset {offset}");
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(48))]
            #[test]
            fn every_offset_reads_back_its_batch_before_and_after_reopening(
                requests in requests(),
                segment_bytes in 100u64..3_000,
                index_interval_bytes in 0u32..600,
                clean in any::<bool>(),
            ) {
                let dir = TempDir::new().unwrap();
                let config = LogConfig {
                    segment_bytes,
                    index_interval_bytes,
                    ..LogConfig::default()
                };
                let mut log = PartitionLog::open(dir.path(), config.clone()).unwrap();
                let mut expected = Vec::new();
                for (i, request) in requests.iter().enumerate() {
                    let encoded: Vec<Vec<u8>> = request
                        .iter()
                        .map(|&(records, value)| encode_batch(records, value, i as i64))
                        .collect();
                    let info = log.append(&encoded.concat(), 3).unwrap();
                    let mut base = info.base_offset;
                    for mut bytes in encoded {
                        batch::assign(&mut bytes, base, 3);
                        let next = BatchHeader::parse(&bytes).unwrap().last_offset() + 1;
                        expected.push((base, bytes));
                        base = next;
                    }
                    prop_assert_eq!(base, log.log_end_offset());
                }
                check_every_offset(&log, &expected);
                let end = log.log_end_offset();
                if clean {
                    log.close().unwrap();
                } else {
                    drop(log);
                }
                let log = PartitionLog::open(dir.path(), config).unwrap();
                prop_assert_eq!(log.log_end_offset(), end);
                check_every_offset(&log, &expected);
            }
        }
    }
}
