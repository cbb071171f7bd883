//! Log compaction (`cleanup.policy=compact`): keeps the latest record of every key, drops
//! tombstones once they are older than `delete.retention.ms`, and swaps the cleaned segments
//! in so that a crash at any point leaves a consistent log.
//!
//! # Three steps, so appends are not blocked
//!
//! 1. [`PartitionLog::compaction_plan`] (read lock, cheap): picks the cleanable segments
//!    and decides whether they are dirty enough; the plan holds duplicated file handles.
//! 2. [`CompactionPlan::run`] (no lock): reads the immutable segments through those handles
//!    and writes the cleaned segments next to them as `.cleaned` files.
//! 3. [`PartitionLog::install_cleaned`] (write lock): checks that the segments it replaces
//!    are still the ones it read (retention may have deleted some meanwhile) and swaps.
//!
//! Only inactive segments are cleaned, and only those before the first segment holding a
//! record younger than `min.compaction.lag.ms` (Kafka's rule, whole segments at a time).
//! The offset up to which the log was cleaned is checkpointed (see [`super::checkpoint`]):
//! segments before it are clean, those after it dirty, and a clean starts when
//! `dirty / (clean + dirty)` bytes reaches `min.cleanable.dirty.ratio`, or when a tombstone
//! the last clean kept has since expired (as Kafka does since KIP-534; the oldest kept
//! tombstone is remembered in memory only, so after a restart only dirt triggers a clean).
//!
//! # Which records stay
//!
//! A key's latest offset is taken from the dirty segments (the clean ones hold no duplicates
//! by construction). A record stays when it is at or past the log start offset and either
//! has no key (Kafka refuses those at produce for compacted topics; any that got in are
//! kept), or has no later record with the same key in the dirty part and is not a tombstone
//! whose timestamp is older than `now - delete.retention.ms`. Removing a tombstone is safe
//! because every older record of its key lies in the same cleaned range and goes with it.
//! Control batches are kept whole.
//!
//! # Batches
//!
//! A batch keeps its records' offsets and timestamps. One that keeps every record is copied
//! byte for byte. One that keeps some is decoded with `RecordBatchDecoder` and re-encoded with
//! `RecordBatchEncoder` with the batch's compression, producer id, epoch, leader epoch and
//! matching sequence numbers; the header is then patched to keep the original last offset
//! (so the producer's last sequence survives, as in Kafka), the timestamp type and a
//! log-append max timestamp. Limitation: the decoder keeps record headers in a map, so a
//! re-encoded record loses duplicate header keys (only the last value of each stays).
//!
//! A batch left with no records is dropped, except that, as an empty batch (header only,
//! see [`super::batch::empty_batch`]), Kafka-style:
//! - the last batch of each producer in the cleaned range stays, so its sequence numbers
//!   can be rebuilt from the log (Kafka keeps the last batch of each producer in the log; a
//!   later one beyond the cleaned range is not looked for, so a few more may stay), and
//! - the last batch of every cleaned segment stays, so the segment's last offset is the
//!   one it had: the swap recovery below relies on it.
//!
//! # Swap protocol
//!
//! Consecutive source segments are merged into one cleaned segment while their sizes add up
//! to at most `segment.bytes` (never ending a group on an empty segment), named after the
//! first source's base offset `B`. For each cleaned segment, oldest first:
//!
//! 1. `run` writes `B.log.cleaned`, `B.index.cleaned`, `B.timeindex.cleaned`, each fsynced.
//! 2. The index files are renamed to `B.*.swap`, then `B.log.cleaned` to `B.log.swap`, and
//!    the directory is fsynced. **The rename of the log to `.swap` commits the swap.**
//! 3. The source segments' files are renamed to `*.deleted`.
//! 4. The `.swap` files take their final names, index files first, and the directory is
//!    fsynced; then the `.deleted` files are removed.
//!
//! On open, before anything else: `*.cleaned` files belong to a swap that never committed and
//! are removed; for each `B.log.swap`, the swap is completed: with `L` the last offset in it,
//! every `.log` with a base offset in `[B, L]` is one of its sources (a source never starts
//! after the last batch of the group, and the next segment starts after `L`) and is removed
//! with its indexes; `B.index.swap`/`B.timeindex.swap` replace whatever has their final name
//! (without them, step 4 had begun, so the final index files are already the new ones); and
//! `B.log.swap` becomes `B.log`. Then `*.deleted` files are removed. Swapping oldest first
//! keeps every intermediate state correct: a cleaned segment only drops a record when a later
//! record of its key exists, or a tombstone whose older records are in segments cleaned in
//! the same pass before it.

use crate::producer::AbortedTxn;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use kafka_protocol::records::{
    Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::batch::{self, BatchHeader, LOG_APPEND_TIME_ATTRIBUTE};
use super::checkpoint::{self, CLEANER_OFFSET_FILE};
use super::error::{IoError, IoResultExt, LogError};
use super::index::{IndexBuilder, SegmentIndex, NO_TIMESTAMP};
use super::retention::{self, deleted_path};
use super::segment::{
    file_name, parse_file_name, sync_dir, Segment, SegmentBatches, INDEX_EXTENSION, LOG_EXTENSION,
    MAX_RELATIVE_OFFSET, MAX_SEGMENT_BYTES, TIME_INDEX_EXTENSION,
};
use super::PartitionLog;

/// Suffix of a cleaned segment's files before the swap commits.
const CLEANED_SUFFIX: &str = "cleaned";
/// Suffix of a cleaned segment's files once the swap committed.
const SWAP_SUFFIX: &str = "swap";

/// The three files of a segment; renames go in this order, so the log is renamed last.
const EXTENSIONS_LOG_LAST: [&str; 3] = [TIME_INDEX_EXTENSION, INDEX_EXTENSION, LOG_EXTENSION];

/// The topic settings that drive compaction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompactionSettings {
    /// Clean once dirty bytes are at least this share of the cleanable bytes
    /// (`min.cleanable.dirty.ratio`).
    pub min_cleanable_dirty_ratio: f64,
    /// Never clean a segment holding a record younger than this (`min.compaction.lag.ms`).
    pub min_compaction_lag_ms: i64,
    /// Keep tombstones at least this long after their timestamp (`delete.retention.ms`).
    pub delete_retention_ms: i64,
}

impl Default for CompactionSettings {
    /// Kafka's defaults.
    fn default() -> Self {
        CompactionSettings {
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            delete_retention_ms: 86_400_000,
        }
    }
}

/// Segments chosen for cleaning, with handles to read them without the log's lock.
#[derive(Debug)]
pub struct CompactionPlan {
    dir: PathBuf,
    sources: Vec<Source>,
    /// `sources[first_dirty..]` are dirty: the keys' latest offsets come from them.
    first_dirty: usize,
    log_start_offset: i64,
    now_ms: i64,
    settings: CompactionSettings,
    segment_bytes: u64,
    index_interval_bytes: u32,
    dirty_ratio: f64,
    /// Aborted transactions' offset ranges, by producer id.
    aborted: HashMap<i64, Vec<(i64, i64)>>,
}

/// What the cleaner must know of a log's transactions.
#[derive(Debug, Clone, Default)]
pub struct Transactions {
    /// The last stable offset: nothing at or past it is cleaned. `None`: no bound.
    pub stable_end: Option<i64>,
    /// Aborted transactions of the log.
    pub aborted: Vec<AbortedTxn>,
}

impl Transactions {
    fn aborted_by_producer(&self) -> HashMap<i64, Vec<(i64, i64)>> {
        let mut by_producer: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
        for txn in &self.aborted {
            by_producer
                .entry(txn.producer_id)
                .or_default()
                .push((txn.first_offset, txn.last_offset));
        }
        by_producer
    }
}

/// One segment to clean.
#[derive(Debug)]
struct Source {
    id: u64,
    base_offset: i64,
    end_offset: i64,
    size: u64,
    path: PathBuf,
    /// A duplicate of the segment's handle: valid even if the file is deleted meanwhile.
    log: File,
}

/// Cleaned segments written by [`CompactionPlan::run`], waiting for
/// [`PartitionLog::install_cleaned`]. Dropping them uninstalled removes their files.
#[derive(Debug)]
pub struct CleanedSegments {
    outputs: Vec<Cleaned>,
    /// The end of the cleaned range: the new first dirty offset once installed.
    end_offset: i64,
    /// Files written and not yet handed to the log.
    owned: Vec<PathBuf>,
}

/// One cleaned segment and the sources it replaces.
#[derive(Debug)]
struct Cleaned {
    base_offset: i64,
    end_offset: i64,
    source_ids: Vec<u64>,
    stats: CompactionStats,
}

/// Sizes before and after cleaning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct CompactionStats {
    bytes_before: u64,
    bytes_after: u64,
    records_before: u64,
    records_after: u64,
    /// The timestamp of the oldest tombstone kept.
    oldest_tombstone: Option<i64>,
}

/// What [`PartitionLog::install_cleaned`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionOutcome {
    /// Segments replaced, and the cleaned segments that replaced them.
    pub segments_replaced: usize,
    pub segments_installed: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub records_before: u64,
    pub records_after: u64,
    /// Whether every cleaned segment was installed or found deleted. `false` when the log
    /// changed under the clean in a way that makes the rest unsafe to install: plan again.
    pub complete: bool,
    /// The offset below which the log is clean.
    pub cleaned_up_to: i64,
}

/// A key's latest offset in the dirty part and each producer's last batch in the plan.
#[derive(Debug, Default)]
struct OffsetMap {
    latest: HashMap<Bytes, i64>,
    last_batch_of_producer: HashMap<i64, i64>,
}

/// What the cleaner makes of one batch.
enum Filtered<'a> {
    Whole(&'a [u8]),
    Rewritten(Vec<u8>),
    Empty([u8; batch::HEADER_SIZE]),
    Dropped,
}

impl PartitionLog {
    /// The segments a clean would rewrite now, or `None` when there is too little to gain:
    /// no inactive segment old enough for `min_compaction_lag_ms`, or a dirty ratio below
    /// `min_cleanable_dirty_ratio`. Cheap; meant to run under the read lock.
    ///
    /// # Errors
    ///
    /// [`LogError::Io`] when a segment cannot be inspected or its handle duplicated.
    pub fn compaction_plan(
        &self,
        now_ms: i64,
        settings: &CompactionSettings,
    ) -> Result<Option<CompactionPlan>, LogError> {
        self.compaction_plan_with(now_ms, settings, Transactions::default())
    }

    /// [`Self::compaction_plan`] for a log with transactions: only segments below
    /// `transactions.stable_end` are cleaned (an undecided transaction's records must not
    /// replace a committed value yet), and the records of aborted transactions are removed
    /// and never count as a key's latest value, as Kafka's cleaner does.
    ///
    /// # Errors
    ///
    /// As [`Self::compaction_plan`].
    pub fn compaction_plan_with(
        &self,
        now_ms: i64,
        settings: &CompactionSettings,
        transactions: Transactions,
    ) -> Result<Option<CompactionPlan>, LogError> {
        let mut cleanable = 0;
        for segment in &self.segments {
            if transactions
                .stable_end
                .is_some_and(|end| segment.end_offset() > end)
            {
                break;
            }
            if settings.min_compaction_lag_ms > 0
                && largest_timestamp(segment)?
                    > now_ms.saturating_sub(settings.min_compaction_lag_ms)
            {
                break;
            }
            cleanable += 1;
        }
        // A group must not end on an empty segment (see the swap protocol); leaving out empty
        // ones at the end costs nothing.
        while cleanable > 0 && self.segments[cleanable - 1].size() == 0 {
            cleanable -= 1;
        }
        let segments = &self.segments[..cleanable];
        if segments.is_empty() {
            return Ok(None);
        }
        let first_dirty_offset = self.first_dirty_offset.max(self.log_start_offset);
        let first_dirty = segments
            .iter()
            .position(|s| s.end_offset() > first_dirty_offset)
            .unwrap_or(segments.len());
        let clean_bytes: u64 = segments[..first_dirty].iter().map(Segment::size).sum();
        let dirty_bytes: u64 = segments[first_dirty..].iter().map(Segment::size).sum();
        let dirty_ratio = dirty_bytes as f64 / (clean_bytes + dirty_bytes).max(1) as f64;
        // Tombstones the last clean kept because they were young may have expired since; like
        // Kafka (KIP-534), that alone is reason to clean.
        let tombstones_expired = self
            .oldest_clean_tombstone
            .is_some_and(|t| t < tombstone_horizon(now_ms, settings));
        let dirty_enough = dirty_bytes > 0 && dirty_ratio >= settings.min_cleanable_dirty_ratio;
        if !dirty_enough && !tombstones_expired {
            return Ok(None);
        }
        let sources = segments
            .iter()
            .map(|s| {
                Ok(Source {
                    id: s.id(),
                    base_offset: s.base_offset(),
                    end_offset: s.end_offset(),
                    size: s.size(),
                    path: s.log_path().to_path_buf(),
                    log: s.clone_log()?,
                })
            })
            .collect::<Result<Vec<_>, IoError>>()?;
        Ok(Some(CompactionPlan {
            dir: self.dir.clone(),
            sources,
            first_dirty,
            log_start_offset: self.log_start_offset,
            now_ms,
            settings: *settings,
            segment_bytes: self.config.segment_bytes,
            index_interval_bytes: self.config.index_interval_bytes,
            dirty_ratio,
            aborted: transactions.aborted_by_producer(),
        }))
    }

    /// Swaps in what [`CompactionPlan::run`] wrote, oldest segment first, following the swap
    /// protocol in the module docs. A cleaned segment whose sources are now below the log
    /// start offset (deleted by retention meanwhile) is skipped; one whose sources changed
    /// otherwise stops the install there.
    ///
    /// # Errors
    ///
    /// [`LogError::Io`] when a rename or sync fails. Reads stay correct (the log keeps its
    /// open handles), but the directory is mid-swap until the next open completes it, so the
    /// partition should be reopened.
    pub fn install_cleaned(
        &mut self,
        mut cleaned: CleanedSegments,
    ) -> Result<CompactionOutcome, LogError> {
        // The cleaned files' names must be durable before a rename refers to them.
        sync_dir(&self.dir)?;
        let mut outcome = CompactionOutcome {
            complete: true,
            ..CompactionOutcome::default()
        };
        let mut oldest_tombstone = None;
        for output in std::mem::take(&mut cleaned.outputs) {
            let Some(position) = self.position_of_sources(&output.source_ids) else {
                if output.end_offset <= self.log_start_offset {
                    // Retention or DeleteRecords deleted the sources meanwhile.
                    continue;
                }
                // Something else replaced them: what follows may depend on them.
                outcome.complete = false;
                break;
            };
            self.swap_in(&output, position, &mut cleaned.owned)?;
            outcome.segments_replaced += output.source_ids.len();
            outcome.segments_installed += 1;
            outcome.bytes_before += output.stats.bytes_before;
            outcome.bytes_after += output.stats.bytes_after;
            outcome.records_before += output.stats.records_before;
            outcome.records_after += output.stats.records_after;
            oldest_tombstone = earliest(oldest_tombstone, output.stats.oldest_tombstone);
        }
        if outcome.complete {
            // The installed segments are now the whole clean part.
            self.oldest_clean_tombstone = oldest_tombstone;
            if cleaned.end_offset > self.first_dirty_offset {
                checkpoint::write(&self.dir, CLEANER_OFFSET_FILE, cleaned.end_offset)?;
                self.first_dirty_offset = cleaned.end_offset;
            }
        } else {
            self.oldest_clean_tombstone = earliest(self.oldest_clean_tombstone, oldest_tombstone);
        }
        outcome.cleaned_up_to = self.first_dirty_offset.max(self.log_start_offset);
        tracing::info!(
            dir = %self.dir.display(),
            replaced = outcome.segments_replaced,
            installed = outcome.segments_installed,
            bytes_before = outcome.bytes_before,
            bytes_after = outcome.bytes_after,
            complete = outcome.complete,
            "compacted log segments"
        );
        Ok(outcome)
    }

    /// Plans, runs and installs a clean in one go, holding `&mut self` throughout: for tests
    /// and for callers that do not mind blocking appends. `None` when nothing needs cleaning.
    ///
    /// # Errors
    ///
    /// As [`Self::compaction_plan`], [`CompactionPlan::run`] and [`Self::install_cleaned`].
    pub fn compact(
        &mut self,
        now_ms: i64,
        settings: &CompactionSettings,
    ) -> Result<Option<CompactionOutcome>, LogError> {
        let Some(plan) = self.compaction_plan(now_ms, settings)? else {
            return Ok(None);
        };
        let cleaned = plan.run()?;
        self.install_cleaned(cleaned).map(Some)
    }

    /// Where the segments with these ids sit, consecutively and in this order.
    fn position_of_sources(&self, ids: &[u64]) -> Option<usize> {
        let first = *ids.first()?;
        let position = self.segments.iter().position(|s| s.id() == first)?;
        let found = self.segments.get(position..position + ids.len())?;
        found
            .iter()
            .map(Segment::id)
            .eq(ids.iter().copied())
            .then_some(position)
    }

    /// Steps 2 to 4 of the swap protocol for one cleaned segment replacing
    /// `self.segments[position..]`.
    fn swap_in(
        &mut self,
        output: &Cleaned,
        position: usize,
        owned: &mut Vec<PathBuf>,
    ) -> Result<(), LogError> {
        let base = output.base_offset;
        for extension in EXTENSIONS_LOG_LAST {
            let from = suffixed(&self.dir, base, extension, CLEANED_SUFFIX);
            let to = suffixed(&self.dir, base, extension, SWAP_SUFFIX);
            fs::rename(&from, &to).at("commit cleaned segment", &from)?;
            owned.retain(|p| p != &from);
        }
        sync_dir(&self.dir)?;
        let sources = position..position + output.source_ids.len();
        let mut retired = Vec::new();
        for segment in &self.segments[sources.clone()] {
            retired.extend(retention::rename_for_deletion(segment)?);
        }
        for extension in EXTENSIONS_LOG_LAST {
            let from = suffixed(&self.dir, base, extension, SWAP_SUFFIX);
            let to = self.dir.join(file_name(base, extension));
            fs::rename(&from, &to).at("install cleaned segment", &from)?;
        }
        sync_dir(&self.dir)?;
        let segment = Segment::open(
            &self.dir,
            base,
            output.end_offset,
            self.config.index_interval_bytes,
        )?;
        self.segments.splice(sources, [segment]);
        retention::remove_files(&retired);
        Ok(())
    }
}

impl CompactionPlan {
    /// The share of dirty bytes among the cleanable ones.
    pub fn dirty_ratio(&self) -> f64 {
        self.dirty_ratio
    }

    /// The offsets the clean covers: from the first source's base to the first offset it
    /// leaves alone.
    pub fn offsets(&self) -> Range<i64> {
        let start = self.sources.first().map_or(0, |s| s.base_offset);
        start..self.end_offset()
    }

    /// How many segments the clean rewrites.
    pub fn segment_count(&self) -> usize {
        self.sources.len()
    }

    fn end_offset(&self) -> i64 {
        self.sources.last().map_or(0, |s| s.end_offset)
    }

    /// Whether a batch belongs to an aborted transaction.
    fn is_aborted(&self, header: &BatchHeader) -> bool {
        header.is_transactional()
            && !header.is_control()
            && self.aborted.get(&header.producer_id).is_some_and(|ranges| {
                ranges
                    .iter()
                    .any(|(first, last)| (*first..=*last).contains(&header.base_offset))
            })
    }

    /// Writes the cleaned segments as `.cleaned` files (step 1 of the swap protocol). Needs
    /// no lock: the segments it reads are immutable and it reads them through its own
    /// handles.
    ///
    /// # Errors
    ///
    /// [`LogError::Corrupt`] when a batch does not parse, [`LogError::Reencode`] when kept
    /// records cannot be encoded, [`LogError::Io`] when reading or writing fails. Whatever
    /// was written is removed.
    pub fn run(self) -> Result<CleanedSegments, LogError> {
        let map = self.build_offset_map()?;
        let mut cleaned = CleanedSegments {
            outputs: Vec::new(),
            end_offset: self.end_offset(),
            owned: Vec::new(),
        };
        for group in group_sources(&self.sources, self.segment_bytes) {
            let output = self.clean_group(&self.sources[group], &map, &mut cleaned.owned)?;
            cleaned.outputs.push(output);
        }
        Ok(cleaned)
    }

    /// Reads the keys of the dirty segments and the producers of all of them.
    fn build_offset_map(&self) -> Result<OffsetMap, LogError> {
        let mut map = OffsetMap::default();
        for (i, source) in self.sources.iter().enumerate() {
            let mut batches =
                SegmentBatches::new(&source.log, &source.path, source.base_offset, source.size);
            if i < self.first_dirty {
                while let Some((_, header)) = batches.next_header()? {
                    note_producer(&mut map, &header);
                }
                continue;
            }
            while let Some(batch) = batches.next_batch()? {
                note_producer(&mut map, &batch.header);
                if batch.header.is_control()
                    || batch.header.records_count == 0
                    || self.is_aborted(&batch.header)
                {
                    continue;
                }
                for record in decode(batch.bytes, &source.path, batch.position)? {
                    if let Some(key) = record.key {
                        // A copy: a slice would keep the whole decoded batch alive.
                        map.latest
                            .insert(Bytes::copy_from_slice(&key), record.offset);
                    }
                }
            }
        }
        Ok(map)
    }

    /// Writes one cleaned segment from `group`, a run of consecutive sources.
    fn clean_group(
        &self,
        group: &[Source],
        map: &OffsetMap,
        owned: &mut Vec<PathBuf>,
    ) -> Result<Cleaned, LogError> {
        let base = group.first().map_or(0, |s| s.base_offset);
        let end = group.last().map_or(base, |s| s.end_offset);
        let log_path = suffixed(&self.dir, base, LOG_EXTENSION, CLEANED_SUFFIX);
        let mut out = SegmentWriter::create(&log_path, base, self.index_interval_bytes, owned)?;
        let mut stats = CompactionStats::default();
        let mut last_read: Option<BatchHeader> = None;
        for source in group {
            stats.bytes_before += source.size;
            let mut batches =
                SegmentBatches::new(&source.log, &source.path, source.base_offset, source.size);
            while let Some(batch) = batches.next_batch()? {
                let header = batch.header;
                last_read = Some(header);
                stats.records_before += u64::try_from(header.records_count).unwrap_or(0);
                let filtered =
                    self.filter(&header, batch.bytes, map, &source.path, batch.position)?;
                stats.oldest_tombstone = earliest(stats.oldest_tombstone, filtered.1);
                match filtered.0 {
                    Filtered::Whole(bytes) => out.write(bytes)?,
                    Filtered::Rewritten(bytes) => out.write(&bytes)?,
                    Filtered::Empty(bytes) => out.write(&bytes)?,
                    Filtered::Dropped => {}
                }
            }
        }
        // The group's last offset must stay what it was (see the swap protocol).
        if let Some(last) = last_read {
            if out.last_offset != Some(last.last_offset()) {
                out.write(&batch::empty_batch(&last))?;
            }
        }
        stats.bytes_after = out.position;
        stats.records_after = out.records;
        out.finish(&self.dir, base, owned)?;
        Ok(Cleaned {
            base_offset: base,
            end_offset: end,
            source_ids: group.iter().map(|s| s.id).collect(),
            stats,
        })
    }

    /// Decides what stays of one batch; also gives the timestamp of the oldest tombstone
    /// that stays.
    fn filter<'a>(
        &self,
        header: &BatchHeader,
        bytes: &'a [u8],
        map: &OffsetMap,
        path: &Path,
        position: u64,
    ) -> Result<(Filtered<'a>, Option<i64>), LogError> {
        if header.is_control() {
            return Ok((Filtered::Whole(bytes), None));
        }
        if self.is_aborted(header) {
            // An aborted transaction's records go; a producer's last batch stays as an empty
            // one, for its sequence.
            let last_of_producer =
                map.last_batch_of_producer.get(&header.producer_id) == Some(&header.base_offset);
            let filtered = if last_of_producer {
                Filtered::Empty(batch::empty_batch(header))
            } else {
                Filtered::Dropped
            };
            return Ok((filtered, None));
        }
        let records = if header.records_count == 0 {
            Vec::new()
        } else {
            decode(bytes, path, position)?
        };
        let kept: Vec<&Record> = records
            .iter()
            .filter(|r| self.keeps(header, r, map))
            .collect();
        let oldest_tombstone = kept
            .iter()
            .filter(|r| r.key.is_some() && r.value.is_none())
            .map(|r| record_timestamp(header, r))
            .min();
        if !kept.is_empty() && kept.len() == records.len() {
            return Ok((Filtered::Whole(bytes), oldest_tombstone));
        }
        if kept.is_empty() {
            let last_of_producer = header.producer_id >= 0
                && map.last_batch_of_producer.get(&header.producer_id) == Some(&header.base_offset);
            let filtered = match (last_of_producer, records.is_empty()) {
                (false, _) => Filtered::Dropped,
                (true, true) => Filtered::Whole(bytes),
                (true, false) => Filtered::Empty(batch::empty_batch(header)),
            };
            return Ok((filtered, None));
        }
        let rewritten = reencode(header, &kept).map_err(|reason| LogError::Reencode {
            path: path.to_path_buf(),
            offset: header.base_offset,
            reason,
        })?;
        Ok((Filtered::Rewritten(rewritten), oldest_tombstone))
    }

    fn keeps(&self, header: &BatchHeader, record: &Record, map: &OffsetMap) -> bool {
        if record.offset < self.log_start_offset {
            return false;
        }
        let Some(key) = &record.key else {
            return true;
        };
        if map
            .latest
            .get(key)
            .is_some_and(|&latest| record.offset < latest)
        {
            return false;
        }
        record.value.is_some()
            || record_timestamp(header, record) >= tombstone_horizon(self.now_ms, &self.settings)
    }
}

impl CleanedSegments {
    /// How many cleaned segments are waiting to be installed.
    pub fn segment_count(&self) -> usize {
        self.outputs.len()
    }
}

impl Drop for CleanedSegments {
    fn drop(&mut self) {
        retention::remove_files(&self.owned);
    }
}

/// A cleaned `.log` being written, with its index built alongside.
struct SegmentWriter {
    file: BufWriter<File>,
    path: PathBuf,
    base_offset: i64,
    position: u64,
    records: u64,
    last_offset: Option<i64>,
    index: SegmentIndex,
    builder: IndexBuilder,
}

impl SegmentWriter {
    fn create(
        path: &Path,
        base_offset: i64,
        index_interval_bytes: u32,
        owned: &mut Vec<PathBuf>,
    ) -> Result<Self, IoError> {
        // `create_new`: a file of that name belongs to another clean, which must not be
        // overwritten (and is not ours to remove).
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .at("create cleaned segment", path)?;
        owned.push(path.to_path_buf());
        Ok(SegmentWriter {
            file: BufWriter::new(file),
            path: path.to_path_buf(),
            base_offset,
            position: 0,
            records: 0,
            last_offset: None,
            index: SegmentIndex::default(),
            builder: IndexBuilder::new(index_interval_bytes),
        })
    }

    /// Appends one whole, valid batch.
    fn write(&mut self, bytes: &[u8]) -> Result<(), LogError> {
        let header = BatchHeader::parse(bytes).ok_or_else(|| LogError::Reencode {
            path: self.path.clone(),
            offset: self.last_offset.map_or(self.base_offset, |o| o + 1),
            reason: "a cleaned batch is shorter than a header".to_owned(),
        })?;
        let relative = header.base_offset - self.base_offset;
        let end = self.position + bytes.len() as u64;
        if end > MAX_SEGMENT_BYTES || header.last_offset() - self.base_offset > MAX_RELATIVE_OFFSET
        {
            return Err(LogError::Reencode {
                path: self.path.clone(),
                offset: header.base_offset,
                reason: "the cleaned segment outgrew what an index can address".to_owned(),
            });
        }
        self.file
            .write_all(bytes)
            .at("write cleaned segment", &self.path)?;
        // Both fit in u32: checked against the limits just above.
        self.builder.observe(
            &mut self.index,
            u32::try_from(relative).unwrap_or(u32::MAX),
            u32::try_from(self.position).unwrap_or(u32::MAX),
            u32::try_from(bytes.len()).unwrap_or(u32::MAX),
            header.max_timestamp,
        );
        self.position = end;
        self.records += u64::try_from(header.records_count).unwrap_or(0);
        self.last_offset = Some(header.last_offset());
        Ok(())
    }

    /// Makes the log durable and writes its two index files, also durably.
    fn finish(mut self, dir: &Path, base: i64, owned: &mut Vec<PathBuf>) -> Result<(), IoError> {
        self.file
            .flush()
            .and_then(|()| self.file.get_ref().sync_all())
            .at("sync cleaned segment", &self.path)?;
        self.builder.seal(&mut self.index);
        let files = [
            (INDEX_EXTENSION, self.index.encode_offsets()),
            (TIME_INDEX_EXTENSION, self.index.encode_times()),
        ];
        for (extension, contents) in files {
            let path = suffixed(dir, base, extension, CLEANED_SUFFIX);
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .at("create cleaned index", &path)?;
            owned.push(path.clone());
            file.write_all(&contents)
                .and_then(|()| file.sync_all())
                .at("write cleaned index", &path)?;
        }
        Ok(())
    }
}

/// Splits the sources into runs that become one cleaned segment each: consecutive, at most
/// `segment_bytes` together (a single larger source alone), addressable by one index, and
/// never ending on an empty segment.
fn group_sources(sources: &[Source], segment_bytes: u64) -> Vec<Range<usize>> {
    let limit = segment_bytes.min(MAX_SEGMENT_BYTES);
    let mut groups = Vec::new();
    let mut start = 0;
    let mut size = 0u64;
    for (i, source) in sources.iter().enumerate() {
        let fits = size.saturating_add(source.size) <= limit
            && source.end_offset - 1 - sources[start].base_offset <= MAX_RELATIVE_OFFSET;
        if i > start && !fits && sources[i - 1].size > 0 {
            groups.push(start..i);
            start = i;
            size = 0;
        }
        size = size.saturating_add(source.size);
    }
    if start < sources.len() {
        groups.push(start..sources.len());
    }
    groups
}

fn note_producer(map: &mut OffsetMap, header: &BatchHeader) {
    if header.producer_id >= 0 {
        map.last_batch_of_producer
            .insert(header.producer_id, header.base_offset);
    }
}

fn decode(bytes: &[u8], path: &Path, position: u64) -> Result<Vec<Record>, LogError> {
    let mut buf = Bytes::copy_from_slice(bytes);
    RecordBatchDecoder::decode(&mut buf)
        .map(|set| set.records)
        .map_err(|e| LogError::Corrupt {
            path: path.to_path_buf(),
            position,
            reason: format!("cannot decode the batch's records: {e:#}"),
        })
}

/// Encodes the records `kept` of the batch `header` as one batch (see the module docs).
fn reencode(header: &BatchHeader, kept: &[&Record]) -> Result<Vec<u8>, String> {
    let first = kept.first().map_or(header.base_offset, |r| r.offset);
    let delta = |offset: i64| {
        i32::try_from(offset - first)
            .map_err(|_| format!("offset {offset} is too far from {first}"))
    };
    // The encoder derives the base sequence from the first record and starts a new batch
    // wherever `offset - sequence` changes, so sequences must follow offsets exactly. A batch
    // without a producer keeps a base sequence of -1.
    let base_sequence = if header.base_sequence < 0 {
        -1
    } else {
        header
            .base_sequence
            .wrapping_add(i32::try_from(first - header.base_offset).map_err(|e| e.to_string())?)
    };
    let records = kept
        .iter()
        .map(|r| {
            Ok(Record {
                sequence: base_sequence.wrapping_add(delta(r.offset)?),
                ..(*r).clone()
            })
        })
        .collect::<Result<Vec<Record>, String>>()?;
    let compression = header
        .compression()
        .ok_or_else(|| "unknown compression codec".to_owned())?;
    let mut buf = Vec::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: batch::MAGIC_V2,
            compression,
        },
    )
    .map_err(|e| format!("{e:#}"))?;
    let encoded = BatchHeader::parse(&buf)
        .filter(|h| h.size() == buf.len())
        .ok_or_else(|| "the encoder did not produce exactly one batch".to_owned())?;
    let log_append = header.timestamp_type() == TimestampType::LogAppend;
    let attributes = if log_append {
        encoded.attributes | LOG_APPEND_TIME_ATTRIBUTE
    } else {
        encoded.attributes
    };
    let last_offset_delta = i32::try_from(header.last_offset() - encoded.base_offset)
        .map_err(|e| format!("last offset delta: {e}"))?;
    let max_timestamp = if log_append {
        header.max_timestamp
    } else {
        encoded.max_timestamp
    };
    batch::restamp(&mut buf, attributes, last_offset_delta, max_timestamp);
    Ok(buf)
}

/// A record's timestamp: in a log-append batch every record carries the broker's time, the
/// batch's max timestamp.
fn record_timestamp(header: &BatchHeader, record: &Record) -> i64 {
    if header.timestamp_type() == TimestampType::LogAppend {
        header.max_timestamp
    } else {
        record.timestamp
    }
}

/// Tombstones with a timestamp below this are old enough to remove.
fn tombstone_horizon(now_ms: i64, settings: &CompactionSettings) -> i64 {
    now_ms.saturating_sub(settings.delete_retention_ms.max(0))
}

fn earliest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The largest timestamp the compaction lag judges a segment by, as Kafka does: its largest
/// record timestamp, or its file's modification time when it has none.
fn largest_timestamp(segment: &Segment) -> Result<i64, IoError> {
    let (timestamp, _) = segment.max_timestamp();
    if timestamp > NO_TIMESTAMP {
        Ok(timestamp)
    } else {
        segment.modified_ms()
    }
}

/// `dir/{base:020}.{extension}.{suffix}`.
fn suffixed(dir: &Path, base: i64, extension: &str, suffix: &str) -> PathBuf {
    dir.join(format!("{}.{suffix}", file_name(base, extension)))
}

/// Completes or rolls back a swap a crash interrupted (see the module docs). Runs on open,
/// before the segments are listed.
pub(crate) fn recover(dir: &Path) -> Result<(), LogError> {
    let mut logs = Vec::new();
    let mut swaps = Vec::new();
    let mut uncommitted = Vec::new();
    for entry in fs::read_dir(dir).at("list partition directory", dir)? {
        let entry = entry.at("list partition directory", dir)?;
        let name = entry.file_name();
        let Some((base, extension)) = name.to_str().and_then(parse_file_name) else {
            continue;
        };
        let Some((segment_extension, suffix)) = extension.split_once('.') else {
            if extension == LOG_EXTENSION {
                logs.push(base);
            }
            continue;
        };
        if !EXTENSIONS_LOG_LAST.contains(&segment_extension) {
            continue;
        }
        match suffix {
            CLEANED_SUFFIX => uncommitted.push(entry.path()),
            SWAP_SUFFIX if segment_extension == LOG_EXTENSION => swaps.push(base),
            SWAP_SUFFIX => uncommitted.push(entry.path()),
            _ => {}
        }
    }
    // Index `.swap` files of a committed swap are completed below, not removed.
    uncommitted.retain(|path| {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        !name.ends_with(SWAP_SUFFIX)
            || !parse_file_name(name).is_some_and(|(base, _)| swaps.contains(&base))
    });
    for path in &uncommitted {
        tracing::info!(file = %path.display(), "removing a cleaned segment whose swap never committed");
        fs::remove_file(path).at("remove uncommitted cleaned segment", path)?;
    }
    swaps.sort_unstable();
    for base in swaps {
        complete_swap(dir, base, &logs)?;
    }
    retention::remove_deleted_files(dir)?;
    sync_dir(dir)?;
    Ok(())
}

/// Finishes a committed swap of the cleaned segment `base` (see the module docs).
fn complete_swap(dir: &Path, base: i64, logs: &[i64]) -> Result<(), LogError> {
    let swap_log = suffixed(dir, base, LOG_EXTENSION, SWAP_SUFFIX);
    let file = File::open(&swap_log).at("open swapped segment", &swap_log)?;
    let size = file
        .metadata()
        .at("inspect swapped segment", &swap_log)?
        .len();
    let mut last_offset = base;
    let mut batches = SegmentBatches::new(&file, &swap_log, base, size);
    while let Some((_, header)) = batches.next_header()? {
        last_offset = header.last_offset();
    }
    tracing::info!(
        segment = %swap_log.display(),
        last_offset,
        "completing a compaction swap interrupted by a crash"
    );
    for &source in logs.iter().filter(|&&b| base <= b && b <= last_offset) {
        for extension in EXTENSIONS_LOG_LAST {
            // The final index names of `base` itself are settled by the renames below.
            if source == base && extension != LOG_EXTENSION {
                continue;
            }
            let path = dir.join(file_name(source, extension));
            let target = deleted_path(&path);
            match fs::rename(&path, &target) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).at("retire swapped-out segment", &path)?,
            }
        }
    }
    for extension in EXTENSIONS_LOG_LAST {
        let from = suffixed(dir, base, extension, SWAP_SUFFIX);
        let to = dir.join(file_name(base, extension));
        match fs::rename(&from, &to) {
            Ok(()) => {}
            // Already renamed before the crash: the file with the final name is the new one.
            Err(e) if e.kind() == io::ErrorKind::NotFound && extension != LOG_EXTENSION => {}
            Err(e) => return Err(e).at("install swapped segment", &from)?,
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::batch::{check_batch, CountRule};
    use super::super::tests::segment_file;
    use super::super::{LogConfig, ReadError};
    use super::*;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::records::Compression;
    use tempfile::TempDir;

    /// One record to produce: its key (`None` for a null key) and value (`None` for a
    /// tombstone).
    #[derive(Debug, Clone)]
    struct Put {
        key: Option<String>,
        value: Option<String>,
    }

    fn put(key: &str, value: &str) -> Put {
        Put {
            key: Some(key.to_owned()),
            value: Some(value.to_owned()),
        }
    }

    fn tombstone(key: &str) -> Put {
        Put {
            key: Some(key.to_owned()),
            value: None,
        }
    }

    /// A producer's id, epoch and the sequence of the batch's first record.
    type Producer = (i64, i16, i32);

    /// One batch of `puts` with timestamps `timestamp, timestamp + 1, ...`, encoded with the
    /// real Kafka codec.
    fn encode(
        puts: &[Put],
        timestamp: i64,
        compression: Compression,
        producer: Option<Producer>,
    ) -> Vec<u8> {
        encode_as(puts, timestamp, compression, producer, false)
    }

    /// [`encode`], as a transactional producer's batch when `transactional`.
    fn encode_as(
        puts: &[Put],
        timestamp: i64,
        compression: Compression,
        producer: Option<Producer>,
        transactional: bool,
    ) -> Vec<u8> {
        let (producer_id, producer_epoch, first_sequence) = producer.unwrap_or((-1, -1, -1));
        let records: Vec<Record> = puts
            .iter()
            .enumerate()
            .map(|(i, p)| Record {
                transactional,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id,
                producer_epoch,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: first_sequence.wrapping_add(i as i32),
                timestamp: timestamp + i as i64,
                key: p.key.clone().map(Bytes::from),
                value: p.value.clone().map(Bytes::from),
                headers: IndexMap::new(),
            })
            .collect();
        let mut buf = Vec::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf
    }

    /// A record as read back: offset, key, value, timestamp.
    type Stored = (i64, Option<Bytes>, Option<Bytes>, i64);

    /// Every batch from the log start to the log end, each checked for framing and CRC.
    fn all_batches(log: &PartitionLog) -> Vec<(BatchHeader, Vec<u8>)> {
        let mut out = Vec::new();
        let mut offset = log.log_start_offset();
        while offset < log.log_end_offset() {
            let read = log.read(offset, usize::MAX).unwrap();
            assert!(!read.records.is_empty(), "nothing at offset {offset}");
            let mut rest = &read.records[..];
            while !rest.is_empty() {
                let header = BatchHeader::parse(rest).unwrap();
                let (bytes, tail) = rest.split_at(header.size());
                check_batch(bytes, CountRule::Stored).unwrap();
                if header.last_offset() >= offset {
                    out.push((header, bytes.to_vec()));
                    offset = header.last_offset() + 1;
                }
                rest = tail;
            }
        }
        out
    }

    fn all_records(log: &PartitionLog) -> Vec<Stored> {
        let start = log.log_start_offset();
        all_batches(log)
            .iter()
            .flat_map(|(header, bytes)| {
                let records = if header.records_count == 0 {
                    Vec::new()
                } else {
                    RecordBatchDecoder::decode(&mut Bytes::copy_from_slice(bytes))
                        .unwrap()
                        .records
                };
                assert_eq!(records.len(), header.records_count as usize);
                records
                    .into_iter()
                    .filter(move |r| r.offset >= start)
                    .map(|r| (r.offset, r.key, r.value, r.timestamp))
            })
            .collect()
    }

    fn keys_and_values(records: &[Stored]) -> Vec<(i64, Option<String>, Option<String>)> {
        let text = |b: &Option<Bytes>| b.as_ref().map(|b| String::from_utf8(b.to_vec()).unwrap());
        records
            .iter()
            .map(|(o, k, v, _)| (*o, text(k), text(v)))
            .collect()
    }

    /// Settings that clean whatever is inactive and keep tombstones for `delete_retention_ms`.
    fn eager(delete_retention_ms: i64) -> CompactionSettings {
        CompactionSettings {
            min_cleanable_dirty_ratio: 0.0,
            min_compaction_lag_ms: 0,
            delete_retention_ms,
        }
    }

    fn config(segment_bytes: u64) -> LogConfig {
        LogConfig {
            segment_bytes,
            index_interval_bytes: 64,
            ..LogConfig::default()
        }
    }

    /// Appends one batch per record of `puts`, at timestamps 1000, 1010, ...
    fn append_each(log: &mut PartitionLog, puts: &[Put]) {
        for (i, p) in puts.iter().enumerate() {
            let batch = encode(
                std::slice::from_ref(p),
                1_000 + 10 * i as i64,
                Compression::None,
                None,
            );
            log.append(&batch, 0).unwrap();
        }
    }

    /// Offsets 0..9: a=1 b=1 a=2 c=1 b=- a=3 d=1 c=2 e=1 f=1, one batch each, segments of
    /// three batches (the last one active).
    fn overwritten_keys(dir: &Path) -> PartitionLog {
        let one = encode(&[put("a", "1")], 0, Compression::None, None).len() as u64;
        let mut log = PartitionLog::open(dir, config(3 * one)).unwrap();
        append_each(
            &mut log,
            &[
                put("a", "1"),
                put("b", "1"),
                put("a", "2"),
                put("c", "1"),
                tombstone("b"),
                put("a", "3"),
                put("d", "1"),
                put("c", "2"),
                put("e", "1"),
                put("f", "1"),
            ],
        );
        assert_eq!(log.segment_count(), 4);
        log
    }

    fn expected_after_clean() -> Vec<(i64, Option<String>, Option<String>)> {
        let s = |v: &str| Some(v.to_owned());
        vec![
            (5, s("a"), s("3")),
            (6, s("d"), s("1")),
            (7, s("c"), s("2")),
            (8, s("e"), s("1")),
            (9, s("f"), s("1")),
        ]
    }

    /// Offsets 0..3: a=committed, then producer 7's transactional a=aborted, its abort
    /// marker, and b=1; a segment per batch.
    fn aborted_overwrite(dir: &Path) -> PartitionLog {
        let mut log = PartitionLog::open(dir, config(1)).unwrap();
        append_each(&mut log, &[put("a", "committed")]);
        let aborted = encode_as(
            &[put("a", "aborted")],
            1_010,
            Compression::None,
            Some((7, 0, 0)),
            true,
        );
        log.append(&aborted, 0).unwrap();
        let marker = crate::log::control::marker_batch(
            7,
            0,
            crate::log::control::Marker {
                commit: false,
                coordinator_epoch: 0,
            },
            1_020,
        )
        .unwrap();
        log.append(&marker, 0).unwrap();
        append_each(&mut log, &[put("b", "1")]);
        log
    }

    fn data_records(log: &PartitionLog) -> Vec<(i64, Option<String>, Option<String>)> {
        let control: Vec<i64> = all_batches(log)
            .iter()
            .filter(|(h, _)| h.is_control())
            .map(|(h, _)| h.base_offset)
            .collect();
        keys_and_values(&all_records(log))
            .into_iter()
            .filter(|(offset, _, _)| !control.contains(offset))
            .collect()
    }

    #[test]
    fn aborted_records_are_removed_and_never_replace_a_committed_value() {
        let dir = TempDir::new().unwrap();
        let mut log = aborted_overwrite(dir.path());
        let transactions = Transactions {
            stable_end: Some(log.log_end_offset()),
            aborted: vec![AbortedTxn {
                producer_id: 7,
                first_offset: 1,
                last_offset: 2,
            }],
        };
        let plan = log
            .compaction_plan_with(10_000, &eager(1), transactions)
            .unwrap()
            .unwrap();
        let cleaned = plan.run().unwrap();
        log.install_cleaned(cleaned).unwrap();
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(
            data_records(&log),
            vec![(0, s("a"), s("committed")), (3, s("b"), s("1"))]
        );
        assert!(
            all_batches(&log).iter().any(|(h, _)| h.is_control()),
            "the marker stays"
        );
    }

    #[test]
    fn nothing_at_or_past_the_last_stable_offset_is_cleaned() {
        let dir = TempDir::new().unwrap();
        let log = aborted_overwrite(dir.path());
        // The transaction at offset 1 undecided: only the segment below it may be cleaned,
        // and a lone segment with one record has nothing to gain.
        let transactions = Transactions {
            stable_end: Some(1),
            aborted: Vec::new(),
        };
        let plan = log
            .compaction_plan_with(10_000, &eager(1), transactions)
            .unwrap();
        assert!(plan.is_none_or(|p| p.end_offset() <= 1));
    }

    #[test]
    fn compaction_keeps_the_latest_value_of_each_key_at_its_original_offset() {
        let dir = TempDir::new().unwrap();
        let mut log = overwritten_keys(dir.path());
        let size_before = log.size_bytes();
        // Tombstone b (offset 4, timestamp 1040) is older than 1 ms at now = 10_000.
        let outcome = log.compact(10_000, &eager(1)).unwrap().unwrap();
        assert!(outcome.complete);
        assert_eq!(outcome.cleaned_up_to, 9);
        assert_eq!((outcome.records_before, outcome.records_after), (9, 4));
        assert_eq!(outcome.segments_replaced, 3);
        assert!(log.size_bytes() < size_before);
        assert_eq!(keys_and_values(&all_records(&log)), expected_after_clean());
        // Removed offsets read as the next batch; the log's range is unchanged.
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 10));
        // The first segment ends with an empty batch at offset 2 (see the module docs).
        let read = log.read(0, 0).unwrap();
        let first = BatchHeader::parse(&read.records).unwrap();
        assert_eq!((first.base_offset, first.records_count), (2, 0));

        drop(log);
        let log = PartitionLog::open(dir.path(), config(1_000)).unwrap();
        assert_eq!(keys_and_values(&all_records(&log)), expected_after_clean());
    }

    #[test]
    fn a_clean_log_is_not_planned_again_until_enough_of_it_is_dirty_even_after_a_reopen() {
        let dir = TempDir::new().unwrap();
        let mut log = overwritten_keys(dir.path());
        assert!(log.compact(10_000, &eager(1)).unwrap().is_some());
        assert!(log.compaction_plan(10_000, &eager(1)).unwrap().is_none());
        drop(log);
        let mut log = PartitionLog::open(dir.path(), config(200)).unwrap();
        assert!(log.compaction_plan(10_000, &eager(1)).unwrap().is_none());
        // A roll makes the old active segment dirty; its share decides.
        append_each(&mut log, &[put("a", "4"), put("g", "1")]);
        let settings = CompactionSettings {
            min_cleanable_dirty_ratio: 0.99,
            ..eager(1)
        };
        assert!(log.compaction_plan(10_000, &settings).unwrap().is_none());
        let plan = log.compaction_plan(10_000, &eager(1)).unwrap().unwrap();
        assert!(plan.dirty_ratio() > 0.0 && plan.dirty_ratio() < 0.99);
        assert_eq!(plan.offsets().start, 0);
    }

    #[test]
    fn tombstones_are_kept_until_they_are_older_than_delete_retention() {
        let dir = TempDir::new().unwrap();
        let mut log = overwritten_keys(dir.path());
        // The tombstone's timestamp is 1040: at now = 2040 it is exactly 1000 ms old.
        log.compact(2_040, &eager(1_000)).unwrap().unwrap();
        let b = Some("b".to_owned());
        assert!(keys_and_values(&all_records(&log)).contains(&(4, b.clone(), None)));
        // Nothing is dirty, but the kept tombstone expiring is reason enough to clean.
        assert!(log.compaction_plan(2_040, &eager(1_000)).unwrap().is_none());
        log.compact(2_041, &eager(1_000)).unwrap().unwrap();
        assert!(log.compaction_plan(2_041, &eager(1_000)).unwrap().is_none());
        assert!(!keys_and_values(&all_records(&log))
            .iter()
            .any(|(_, k, _)| k == &b));
    }

    #[test]
    fn the_active_segment_and_segments_within_the_compaction_lag_are_left_alone() {
        let dir = TempDir::new().unwrap();
        let mut log = overwritten_keys(dir.path());
        // Segments: 0-2 (newest record 1020), 3-5 (1050), 6-8 (1080), active 9.
        let lagged = CompactionSettings {
            min_compaction_lag_ms: 1_000,
            ..eager(1)
        };
        let plan = log.compaction_plan(2_060, &lagged).unwrap().unwrap();
        assert_eq!(plan.offsets(), 0..6);
        assert_eq!(plan.segment_count(), 2);
        let outcome = log.install_cleaned(plan.run().unwrap()).unwrap();
        assert_eq!(outcome.cleaned_up_to, 6);
        let s = |v: &str| Some(v.to_owned());
        // a=3 at 5 supersedes a=1 and a=2; c=2 at 7 lies beyond the lag, so c=1 stays.
        assert_eq!(
            keys_and_values(&all_records(&log))[..2],
            [(3, s("c"), s("1")), (5, s("a"), s("3"))]
        );
        assert!(log.compaction_plan(1_500, &lagged).unwrap().is_none());
    }

    #[test]
    fn records_without_a_key_are_always_kept() {
        let dir = TempDir::new().unwrap();
        let one = encode(&[put("a", "1")], 0, Compression::None, None).len() as u64;
        let mut log = PartitionLog::open(dir.path(), config(2 * one)).unwrap();
        let no_key = Put {
            key: None,
            value: Some("x".to_owned()),
        };
        append_each(
            &mut log,
            &[
                no_key.clone(),
                put("a", "1"),
                no_key,
                put("a", "2"),
                put("z", "1"),
            ],
        );
        log.compact(10_000, &eager(1)).unwrap().unwrap();
        let offsets: Vec<i64> = all_records(&log).iter().map(|r| r.0).collect();
        assert_eq!(offsets, [0, 2, 3, 4]);
    }

    #[test]
    fn a_partly_kept_compressed_batch_keeps_its_codec_producer_offsets_and_timestamps() {
        let dir = TempDir::new().unwrap();
        let mut log = PartitionLog::open(dir.path(), config(1 << 20)).unwrap();
        let batch = encode(
            &[put("a", "1"), put("b", "1"), put("c", "1"), put("d", "1")],
            5_000,
            Compression::Gzip,
            Some((42, 3, 100)),
        );
        log.append(&batch, 7).unwrap();
        log.append(
            &encode(
                &[put("a", "2"), put("d", "2")],
                6_000,
                Compression::Lz4,
                None,
            ),
            7,
        )
        .unwrap();
        log.roll().unwrap();
        log.compact(10_000, &eager(1)).unwrap().unwrap();

        let batches = all_batches(&log);
        let (header, _) = &batches[0];
        // a and d went: the batch now starts at b (offset 1) and still ends at offset 3.
        assert_eq!((header.base_offset, header.last_offset()), (1, 3));
        assert_eq!(header.records_count, 2);
        assert_eq!(header.compression(), Some(Compression::Gzip));
        assert_eq!(
            (
                header.producer_id,
                header.producer_epoch,
                header.base_sequence
            ),
            (42, 3, 101)
        );
        assert_eq!(header.partition_leader_epoch, 7);
        assert_eq!(
            (header.base_timestamp, header.max_timestamp),
            (5_001, 5_002)
        );
        // The producer's last sequence is where it was: 101 + (3 - 1) = 103.
        assert_eq!(header.base_sequence + header.last_offset_delta, 100 + 3);
        let records = all_records(&log);
        assert_eq!(
            records.iter().map(|r| (r.0, r.3)).collect::<Vec<_>>(),
            [(1, 5_001), (2, 5_002), (4, 6_000), (5, 6_001)]
        );
        assert_eq!(batches[1].0.compression(), Some(Compression::Lz4));
    }

    #[test]
    fn a_producers_last_batch_stays_as_an_empty_batch_when_all_its_records_go() {
        let dir = TempDir::new().unwrap();
        let mut log = PartitionLog::open(dir.path(), config(1 << 20)).unwrap();
        let producer = |seq| Some((9, 0, seq));
        log.append(
            &encode(&[put("a", "1")], 1_000, Compression::None, producer(0)),
            0,
        )
        .unwrap();
        log.append(
            &encode(
                &[put("a", "2"), put("b", "1")],
                1_001,
                Compression::Snappy,
                producer(1),
            ),
            0,
        )
        .unwrap();
        log.append(&encode(&[put("c", "1")], 1_002, Compression::None, None), 0)
            .unwrap();
        log.append(
            &encode(
                &[put("a", "3"), put("b", "2")],
                1_003,
                Compression::None,
                None,
            ),
            0,
        )
        .unwrap();
        log.append(&encode(&[put("z", "1")], 1_004, Compression::None, None), 0)
            .unwrap();
        log.roll().unwrap();
        log.compact(10_000, &eager(1)).unwrap().unwrap();

        let headers: Vec<BatchHeader> = all_batches(&log).into_iter().map(|(h, _)| h).collect();
        let summary: Vec<(i64, i64, i32, i64)> = headers
            .iter()
            .map(|h| {
                (
                    h.base_offset,
                    h.last_offset(),
                    h.records_count,
                    h.producer_id,
                )
            })
            .collect();
        // Batch 0 (producer 9, superseded) goes; batch 1-2 is producer 9's last and stays
        // empty, uncompressed, with its sequence; the rest is kept whole.
        assert_eq!(
            summary,
            [(1, 2, 0, 9), (3, 3, 1, -1), (4, 5, 2, -1), (6, 6, 1, -1)]
        );
        assert_eq!(headers[0].compression(), Some(Compression::None));
        assert_eq!(headers[0].base_sequence, 1);
    }

    #[test]
    fn the_last_batch_of_a_cleaned_segment_stays_as_an_empty_batch_when_all_its_records_go() {
        let dir = TempDir::new().unwrap();
        let one = encode(&[put("a", "1")], 0, Compression::None, None).len() as u64;
        let mut log = PartitionLog::open(dir.path(), config(2 * one)).unwrap();
        append_each(
            &mut log,
            &[
                put("x", "1"),
                put("a", "1"),
                put("a", "2"),
                put("z", "1"),
                put("w", "1"),
            ],
        );
        log.compact(10_000, &eager(1)).unwrap().unwrap();
        let summary: Vec<(i64, i32)> = all_batches(&log)
            .iter()
            .map(|(h, _)| (h.last_offset(), h.records_count))
            .collect();
        // Segments [x a=1] [a=2 z] [w]: a=1 goes, but as the last batch of its segment it stays
        // as an empty batch.
        assert_eq!(summary, [(0, 1), (1, 0), (2, 1), (3, 1), (4, 1)]);
    }

    #[test]
    fn cleaned_segments_whose_sources_retention_deleted_are_skipped() {
        let dir = TempDir::new().unwrap();
        let mut log = overwritten_keys(dir.path());
        let plan = log.compaction_plan(10_000, &eager(1)).unwrap().unwrap();
        let cleaned = plan.run().unwrap();
        assert_eq!(cleaned.segment_count(), 3);
        log.delete_records_before(3).unwrap();
        let outcome = log.install_cleaned(cleaned).unwrap();
        assert!(outcome.complete);
        assert_eq!(outcome.segments_installed, 2);
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(keys_and_values(&all_records(&log)), expected_after_clean());
        assert_eq!(log.log_start_offset(), 3);
        assert!(matches!(
            log.read(2, 10),
            Err(ReadError::OffsetOutOfRange { .. })
        ));
        assert_eq!(keys_and_values(&all_records(&log))[0].2, s("3"));
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn cleaned_segments_are_not_installed_over_segments_that_changed() {
        let dir = TempDir::new().unwrap();
        let mut log = overwritten_keys(dir.path());
        let before = all_records(&log);
        let plan = log.compaction_plan(10_000, &eager(1)).unwrap().unwrap();
        // Another clean replaces the segments first.
        log.compact(10_000, &eager(1)).unwrap().unwrap();
        let after_first = all_records(&log);
        assert_ne!(before, after_first);
        // The plan's handles still read the old files; its output no longer fits.
        let cleaned = plan.run();
        // The first clean's files were renamed away, so writing did not collide.
        let outcome = log.install_cleaned(cleaned.unwrap()).unwrap();
        assert!(!outcome.complete);
        assert_eq!(outcome.segments_installed, 0);
        assert_eq!(all_records(&log), after_first);
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn dropping_cleaned_segments_removes_their_files() {
        let dir = TempDir::new().unwrap();
        let log = overwritten_keys(dir.path());
        let cleaned = log
            .compaction_plan(10_000, &eager(1))
            .unwrap()
            .unwrap()
            .run()
            .unwrap();
        assert_eq!(leftovers(dir.path()).len(), 9);
        drop(cleaned);
        assert!(leftovers(dir.path()).is_empty());
    }

    /// Files of the cleaner or of deletions still in the directory.
    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".cleaned") || n.ends_with(".swap") || n.ends_with(".deleted"))
            .collect()
    }

    fn rename(from: PathBuf, to: PathBuf) -> impl Fn() {
        move || fs::rename(&from, &to).unwrap()
    }

    /// Every file operation of one swap, in order, as the install performs them.
    fn swap_steps(dir: &Path, base: i64, sources: &[i64]) -> Vec<Box<dyn Fn()>> {
        let mut steps: Vec<Box<dyn Fn()>> = Vec::new();
        for extension in EXTENSIONS_LOG_LAST {
            steps.push(Box::new(rename(
                suffixed(dir, base, extension, CLEANED_SUFFIX),
                suffixed(dir, base, extension, SWAP_SUFFIX),
            )));
        }
        for &source in sources {
            for extension in [LOG_EXTENSION, INDEX_EXTENSION, TIME_INDEX_EXTENSION] {
                let path = segment_file(dir, source, extension);
                steps.push(Box::new(rename(path.clone(), deleted_path(&path))));
            }
        }
        for extension in EXTENSIONS_LOG_LAST {
            steps.push(Box::new(rename(
                suffixed(dir, base, extension, SWAP_SUFFIX),
                dir.join(file_name(base, extension)),
            )));
        }
        steps
    }

    #[test]
    fn a_swap_interrupted_at_any_step_is_rolled_back_or_completed_on_open() {
        // The reference: the same log cleaned without interruption, into one segment.
        let reference_dir = TempDir::new().unwrap();
        let mut reference = overwritten_keys(reference_dir.path());
        let original = all_records(&reference);
        reference.set_config(config(1 << 20));
        let outcome = reference.compact(10_000, &eager(1)).unwrap().unwrap();
        assert_eq!(
            (outcome.segments_replaced, outcome.segments_installed),
            (3, 1)
        );
        let cleaned = all_records(&reference);

        let steps = swap_steps(Path::new("unused"), 0, &[0, 3, 6]).len();
        for crash_after in 0..=steps {
            let dir = TempDir::new().unwrap();
            let mut log = overwritten_keys(dir.path());
            log.set_config(config(1 << 20));
            let output = log
                .compaction_plan(10_000, &eager(1))
                .unwrap()
                .unwrap()
                .run()
                .unwrap();
            for step in &swap_steps(dir.path(), 0, &[0, 3, 6])[..crash_after] {
                step();
            }
            // A crash: the process dies without removing anything.
            std::mem::forget(output);
            drop(log);

            let log = PartitionLog::open(dir.path(), config(1 << 20)).unwrap();
            let expected = if crash_after < 3 { &original } else { &cleaned };
            assert_eq!(
                &all_records(&log),
                expected,
                "crash after step {crash_after}"
            );
            assert_eq!(log.log_end_offset(), 10, "crash after step {crash_after}");
            let segments = if crash_after < 3 { 4 } else { 2 };
            assert_eq!(
                log.segment_count(),
                segments,
                "crash after step {crash_after}"
            );
            assert!(
                leftovers(dir.path()).is_empty(),
                "crash after step {crash_after}"
            );
            for offset in 0..10 {
                log.read(offset, 0).unwrap();
            }
        }
    }

    #[test]
    fn stray_swap_index_files_without_a_committed_log_are_removed_on_open() {
        let dir = TempDir::new().unwrap();
        let log = overwritten_keys(dir.path());
        let records = all_records(&log);
        drop(log);
        let stray = suffixed(dir.path(), 3, INDEX_EXTENSION, SWAP_SUFFIX);
        fs::write(&stray, [0u8; 8]).unwrap();
        let cleaned = suffixed(dir.path(), 0, LOG_EXTENSION, CLEANED_SUFFIX);
        fs::write(&cleaned, b"partial").unwrap();
        let log = PartitionLog::open(dir.path(), config(1_000)).unwrap();
        assert!(!stray.exists() && !cleaned.exists());
        assert_eq!(all_records(&log), records);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// One produced batch: records as `(key, is a tombstone)` with `None` for a null
        /// key, a codec, and whether an idempotent producer (id 1 or 2) sent it.
        type Spec = (Vec<(Option<u8>, bool)>, u8, Option<i64>);

        fn specs() -> impl Strategy<Value = Vec<Spec>> {
            let record = (
                prop::option::weighted(0.95, 0u8..8),
                prop::bool::weighted(0.2),
            );
            let batch = (
                prop::collection::vec(record, 1..5),
                0u8..4,
                prop::option::weighted(0.3, 1i64..3),
            );
            prop::collection::vec(batch, 1..30)
        }

        fn codec(n: u8) -> Compression {
            [
                Compression::None,
                Compression::Gzip,
                Compression::Lz4,
                Compression::Snappy,
            ][usize::from(n) % 4]
        }

        /// Appends the batches, the i-th at timestamp 1000 + 100 i, and returns the records
        /// as the model holds them.
        fn produce(
            log: &mut PartitionLog,
            specs: &[Spec],
            first_timestamp: i64,
            sequences: &mut HashMap<i64, i32>,
            model: &mut Vec<Stored>,
        ) {
            for (i, (records, codec_id, producer)) in specs.iter().enumerate() {
                let timestamp = first_timestamp + 100 * i as i64;
                let base = log.log_end_offset();
                let puts: Vec<Put> = records
                    .iter()
                    .enumerate()
                    .map(|(j, (key, tomb))| Put {
                        key: key.map(|k| format!("key-{k}")),
                        value: (!tomb).then(|| format!("value-{}-{j}-{}", base, "x".repeat(20))),
                    })
                    .collect();
                let producer = producer.map(|id| {
                    let next = sequences.entry(id).or_insert(0);
                    let first = *next;
                    *next += puts.len() as i32;
                    (id, 0, first)
                });
                let batch = encode(&puts, timestamp, codec(*codec_id), producer);
                log.append(&batch, 0).unwrap();
                for (j, p) in puts.into_iter().enumerate() {
                    model.push((
                        base + j as i64,
                        p.key.map(Bytes::from),
                        p.value.map(Bytes::from),
                        timestamp + j as i64,
                    ));
                }
            }
        }

        /// What a clean of the offsets below `end` leaves, by definition.
        fn model_clean(model: &mut Vec<Stored>, end: i64, horizon: i64) {
            let mut latest: HashMap<Bytes, i64> = HashMap::new();
            for (offset, key, _, _) in model.iter().filter(|r| r.0 < end) {
                if let Some(key) = key {
                    latest.insert(key.clone(), *offset);
                }
            }
            model.retain(|(offset, key, value, timestamp)| match key {
                _ if *offset >= end => true,
                None => true,
                Some(key) => {
                    latest.get(key) == Some(offset) && (value.is_some() || *timestamp >= horizon)
                }
            });
        }

        /// Each producer's last offset and last sequence in the log.
        fn producer_ends(log: &PartitionLog) -> HashMap<i64, (i64, i32)> {
            all_batches(log)
                .iter()
                .filter(|(h, _)| h.producer_id >= 0)
                .map(|(h, _)| {
                    (
                        h.producer_id,
                        (h.last_offset(), h.base_sequence + h.last_offset_delta),
                    )
                })
                .collect()
        }

        fn check(log: &PartitionLog, model: &[Stored]) -> Result<(), TestCaseError> {
            let records = all_records(log);
            prop_assert_eq!(&records, &model.to_vec());
            prop_assert!(records.windows(2).all(|w| w[0].0 < w[1].0));
            for offset in log.log_start_offset()..log.log_end_offset() {
                let read = log.read(offset, 1).unwrap();
                let header = BatchHeader::parse(&read.records).unwrap();
                prop_assert!(header.last_offset() >= offset, "offset {}", offset);
            }
            // Every record is readable at its own offset, in the first batch returned.
            for (offset, ..) in &records {
                let read = log.read(*offset, 1).unwrap();
                let header = BatchHeader::parse(&read.records).unwrap();
                prop_assert!(header.base_offset <= *offset && *offset <= header.last_offset());
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            #[test]
            fn compaction_matches_the_model_and_survives_a_reopen(
                first in specs(),
                second in specs(),
                segment_bytes in 150u64..1_200,
                delete_retention_ms in 0i64..7_000,
                merge_segments in any::<bool>(),
            ) {
                let dir = TempDir::new().unwrap();
                let mut log = PartitionLog::open(dir.path(), config(segment_bytes)).unwrap();
                let mut sequences = HashMap::new();
                let mut model = Vec::new();
                let settings = eager(delete_retention_ms);

                let mut cleaned_up_to = 0;
                for (phase, specs) in [&first, &second].into_iter().enumerate() {
                    if phase == 1 && merge_segments {
                        log.set_config(config(segment_bytes * 4));
                    }
                    let first_timestamp = 1_000 + 3_000 * phase as i64;
                    produce(&mut log, specs, first_timestamp, &mut sequences, &mut model);
                    let producers = producer_ends(&log);
                    let now = 5_000 + 3_000 * phase as i64;
                    let horizon = now - delete_retention_ms;
                    let end = log.active.base_offset();
                    // A clean runs when something new is inactive, or a tombstone in the
                    // part cleaned before has expired.
                    let expired = model.iter().any(|(offset, key, value, timestamp)| {
                        *offset < cleaned_up_to
                            && key.is_some()
                            && value.is_none()
                            && *timestamp < horizon
                    });
                    let outcome = log.compact(now, &settings).unwrap();
                    prop_assert_eq!(outcome.is_some(), end > cleaned_up_to || expired);
                    if let Some(outcome) = outcome {
                        prop_assert!(outcome.complete);
                        prop_assert_eq!(outcome.cleaned_up_to, end);
                        model_clean(&mut model, end, horizon);
                        cleaned_up_to = end;
                    }
                    check(&log, &model)?;
                    prop_assert_eq!(producer_ends(&log), producers);
                }

                let end_offset = log.log_end_offset();
                let segments = log.segment_count();
                let batches = all_batches(&log);
                drop(log);
                let log = PartitionLog::open(dir.path(), config(segment_bytes)).unwrap();
                prop_assert_eq!(log.log_end_offset(), end_offset);
                prop_assert_eq!(log.segment_count(), segments);
                prop_assert_eq!(all_batches(&log), batches);
                check(&log, &model)?;
            }
        }
    }
}
