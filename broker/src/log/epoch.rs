//! The leader-epoch cache (Kafka's `leader-epoch-checkpoint`): for every leader epoch that
//! wrote to the partition, the offset of its first batch. OffsetForLeaderEpoch answers from
//! it, and a follower uses the answer to truncate its log to where it agrees with the leader's.
//!
//! On-disk format: `leader-epoch-checkpoint` in the partition directory, text like Kafka's file
//! of the same name and like the other checkpoints (see [`super::checkpoint`]):
//!
//! ```text
//! 0            format version
//! 2            number of entries
//! 0 0          one entry per line: the epoch, one space, the offset it starts at
//! 3 52311
//! ```
//!
//! Every line ends with `\n`. Epochs and start offsets are non-negative and strictly increase
//! from one entry to the next. The file is replaced atomically and durably whenever the cache
//! changes ([`super::checkpoint::replace`]); a leftover `.tmp` is removed on open.
//!
//! # Keeping it true to the log
//!
//! - An append whose batch carries an epoch higher than the latest one adds an entry at that
//!   batch's base offset, and writes the file *before* the batch: a crash can leave an entry
//!   whose batch never made it (dropped on open, being at or past the log end), never a batch
//!   whose epoch the file lacks. Batches with a negative epoch (none assigned) add nothing.
//! - Truncating the log end drops the entries at or past the new end (Kafka's
//!   `truncateFromEnd`). Moving the log start forward (retention, DeleteRecords) drops the
//!   entries at or below it except the latest of them, which is moved to start at the log
//!   start (Kafka's `truncateFromStart`): the epoch covering the log start stays known, even
//!   when retention left no batch at all.
//! - On open the file is checked against the log with two batch reads: the first batch at or
//!   after the latest entry's start must have that entry's epoch, and the last batch of the
//!   log must not have a newer one. A file that is missing, does not parse or fails the check
//!   is rebuilt by reading every batch header, with the rule appends follow. The check cannot
//!   see a wrong entry before the latest one; only a damaged file could hold one.

use std::fs;
use std::io;
use std::path::Path;

use super::checkpoint;
use super::error::{IoError, IoResultExt, LogError, ReadError};
use super::PartitionLog;

/// The file the cache is persisted in, inside the partition directory.
pub(crate) const LEADER_EPOCH_FILE: &str = "leader-epoch-checkpoint";

const VERSION: &str = "0";

/// The first offset written in one leader epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EpochEntry {
    pub(crate) epoch: i32,
    pub(crate) start_offset: i64,
}

/// The entries of the cache, oldest first, both fields strictly increasing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LeaderEpochCache {
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    pub(crate) fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub(crate) fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// Whether a batch of `epoch` opens a new epoch: it is not negative and is higher than
    /// the latest one. Whether a lower one may be written at all is the caller's decision.
    pub(crate) fn opens_epoch(&self, epoch: i32) -> bool {
        epoch >= 0 && self.latest().is_none_or(|latest| epoch > latest.epoch)
    }

    /// Records that `epoch` starts at `start_offset` when [`Self::opens_epoch`]; returns
    /// whether it did. An entry starting at or past `start_offset` has no batch left (the
    /// one an emptied log keeps at its end) and is replaced, as Kafka does.
    pub(crate) fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if !self.opens_epoch(epoch) {
            return false;
        }
        self.truncate_from_end(start_offset);
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// Drops the entries starting at or past `end_offset`, the new log end. Returns whether
    /// any were.
    pub(crate) fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let keep = self
            .entries
            .partition_point(|e| e.start_offset < end_offset);
        let changed = keep < self.entries.len();
        self.entries.truncate(keep);
        changed
    }

    /// Drops the entries starting at or before `start_offset`, the new log start, except the
    /// latest of them, which now starts at `start_offset`. Returns whether anything changed.
    pub(crate) fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        let below = self
            .entries
            .partition_point(|e| e.start_offset <= start_offset);
        let Some(covering) = below.checked_sub(1) else {
            return false;
        };
        let changed = covering > 0 || self.entries[covering].start_offset != start_offset;
        self.entries.drain(..covering);
        self.entries[0].start_offset = start_offset;
        changed
    }

    /// OffsetForLeaderEpoch: the largest epoch at or below `epoch`, and where it ended: the
    /// start of the next higher epoch, or `log_end_offset` when it is the latest. `None`
    /// (Kafka's UNDEFINED_EPOCH / UNDEFINED_EPOCH_OFFSET) for a negative epoch or one below
    /// every cached epoch.
    pub(crate) fn end_offset_for(&self, epoch: i32, log_end_offset: i64) -> Option<(i32, i64)> {
        if epoch < 0 {
            return None;
        }
        let after = self.entries.partition_point(|e| e.epoch <= epoch);
        let floor = self.entries.get(after.checked_sub(1)?)?;
        let end = self
            .entries
            .get(after)
            .map_or(log_end_offset, |next| next.start_offset);
        Some((floor.epoch, end))
    }

    /// Where exactly `epoch` starts, if it is cached.
    pub(crate) fn start_offset_of(&self, epoch: i32) -> Option<i64> {
        self.entries
            .binary_search_by_key(&epoch, |e| e.epoch)
            .ok()
            .map(|i| self.entries[i].start_offset)
    }

    fn encode(&self) -> String {
        let mut text = format!("{VERSION}\n{}\n", self.entries.len());
        for e in &self.entries {
            text.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        text
    }

    fn parse(text: &str) -> Result<LeaderEpochCache, String> {
        let mut lines = text.lines();
        match lines.next() {
            Some(VERSION) => {}
            Some(other) => return Err(format!("unknown version {other:?}")),
            None => return Err("empty file".to_owned()),
        }
        let count: usize = lines
            .next()
            .ok_or_else(|| "no entry count".to_owned())?
            .parse()
            .map_err(|e| format!("bad entry count: {e}"))?;
        let mut cache = LeaderEpochCache::default();
        for i in 0..count {
            let line = lines
                .next()
                .ok_or_else(|| format!("{count} entries announced, {i} found"))?;
            let (epoch, offset) = line
                .split_once(' ')
                .ok_or_else(|| format!("entry {i} is not `epoch offset`: {line:?}"))?;
            let entry = EpochEntry {
                epoch: epoch
                    .parse()
                    .map_err(|e| format!("entry {i}: bad epoch: {e}"))?,
                start_offset: offset
                    .parse()
                    .map_err(|e| format!("entry {i}: bad offset: {e}"))?,
            };
            if entry.epoch < 0 || entry.start_offset < 0 {
                return Err(format!("entry {i} is negative: {line:?}"));
            }
            if let Some(previous) = cache.latest() {
                if entry.epoch <= previous.epoch || entry.start_offset <= previous.start_offset {
                    return Err(format!("entry {i} does not increase: {line:?}"));
                }
            }
            cache.entries.push(entry);
        }
        if lines.any(|line| !line.is_empty()) {
            return Err("unexpected lines after the entries".to_owned());
        }
        Ok(cache)
    }

    /// The cache saved in `dir`; `None` when there is none or it does not parse (reported),
    /// in which case the caller rebuilds it from the log.
    pub(crate) fn read(dir: &Path) -> Result<Option<LeaderEpochCache>, IoError> {
        let path = dir.join(LEADER_EPOCH_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                tracing::warn!(file = %path.display(), "leader epoch checkpoint is not text; rebuilding it");
                return Ok(None);
            }
            Err(e) => return Err(e).at("read leader epoch checkpoint", &path),
        };
        match Self::parse(&text) {
            Ok(cache) => Ok(Some(cache)),
            Err(reason) => {
                tracing::warn!(file = %path.display(), %reason, "leader epoch checkpoint does not parse; rebuilding it");
                Ok(None)
            }
        }
    }

    /// Replaces the file in `dir` with this cache, durably.
    pub(crate) fn write(&self, dir: &Path) -> Result<(), IoError> {
        checkpoint::replace(dir, LEADER_EPOCH_FILE, &self.encode())
    }
}

impl PartitionLog {
    /// The leader epoch of the last batch appended (the latest epoch in the cache: epochs
    /// never go back within a log). It stays known when retention has removed every batch;
    /// `None` when no batch with an epoch was ever appended, or after
    /// [`truncate_fully_and_start_at`](Self::truncate_fully_and_start_at).
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.latest().map(|e| e.epoch)
    }

    /// The epoch of the log's first record (ListOffsets `EARLIEST`): the earliest cached
    /// epoch when it starts at or before the log start offset, as Kafka checks; `None` when
    /// the cache does not reach back that far.
    pub fn earliest_epoch(&self) -> Option<i32> {
        self.epochs
            .entries()
            .first()
            .filter(|e| e.start_offset <= self.log_start_offset())
            .map(|e| e.epoch)
    }

    /// Kafka's OffsetForLeaderEpoch: the largest cached epoch at or below `epoch`, and the
    /// offset where that epoch ended: the start offset of the next higher epoch, or the log
    /// end offset when it is the latest epoch. `None` (UNDEFINED_EPOCH) when `epoch` is
    /// negative or below the earliest cached epoch; Kafka answers the latter with `epoch`
    /// and the earliest epoch's start offset instead, so a follower asking that must fall
    /// back to truncating to its high watermark.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        self.epochs.end_offset_for(epoch, self.log_end_offset())
    }

    /// The offset of the first batch of `epoch` (or the log start offset, if retention
    /// removed the start of it); `None` when `epoch` is not cached.
    pub fn epoch_start_offset(&self, epoch: i32) -> Option<i64> {
        self.epochs.start_offset_of(epoch)
    }

    /// The leader-epoch cache as `(epoch, start offset)` pairs, oldest first.
    pub fn epoch_entries(&self) -> Vec<(i32, i64)> {
        self.epochs
            .entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect()
    }

    /// Replaces the cache by `next`, writing the file first; on failure the cache in memory
    /// is left as it was (the file may be either) and rewritten by the next change or close.
    pub(crate) fn commit_epochs(&mut self, next: LeaderEpochCache) -> Result<(), IoError> {
        if next == self.epochs && !self.epochs_unsaved {
            return Ok(());
        }
        match next.write(&self.dir) {
            Ok(()) => {
                self.epochs = next;
                self.epochs_unsaved = false;
                Ok(())
            }
            Err(error) => {
                self.epochs_unsaved = true;
                Err(error)
            }
        }
    }

    /// Applies a change to a copy of the cache and commits it if anything changed.
    pub(crate) fn change_epochs(
        &mut self,
        change: impl FnOnce(&mut LeaderEpochCache) -> bool,
    ) -> Result<(), IoError> {
        let mut next = self.epochs.clone();
        if change(&mut next) || self.epochs_unsaved {
            self.commit_epochs(next)?;
        }
        Ok(())
    }

    /// Loads the cache on open, after the segments and the log start offset: drops what a
    /// crash left beyond the log end or below the log start, checks the rest against the
    /// log, and rebuilds it from the batches when it is missing or wrong (see the module
    /// docs).
    pub(crate) fn load_epochs(&mut self) -> Result<(), LogError> {
        let saved = LeaderEpochCache::read(&self.dir)?;
        let log_start = self.log_start_offset;
        let log_end = self.log_end_offset();
        let mut cache = saved.clone().unwrap_or_default();
        cache.truncate_from_start(log_start);
        // An empty log keeps an entry at its end: retention removed the epoch's batches.
        let empty = log_end == log_start;
        cache.truncate_from_end(if empty {
            log_end.saturating_add(1)
        } else {
            log_end
        });
        let trusted = saved.is_some() && self.epochs_match_log(&cache)?;
        if !trusted {
            if saved.is_some() {
                tracing::warn!(
                    dir = %self.dir.display(),
                    "leader epoch checkpoint does not match the log; rebuilding it from the batches"
                );
            }
            cache = self.scan_epochs()?;
        }
        if saved.is_none() && cache.entries.is_empty() {
            // Nothing to remember, and nothing stale on disk.
            self.epochs = cache;
            return Ok(());
        }
        if saved.as_ref() == Some(&cache) {
            self.epochs = cache;
            return Ok(());
        }
        // Force the write: the file differs from what memory will hold.
        self.epochs_unsaved = true;
        self.commit_epochs(cache)?;
        Ok(())
    }

    /// The cheap check of the module docs: two batch reads.
    fn epochs_match_log(&self, cache: &LeaderEpochCache) -> Result<bool, LogError> {
        let log_end = self.log_end_offset();
        if log_end == self.log_start_offset {
            return Ok(true);
        }
        // No batch ends at the log end when the newest segment is empty and starts past the
        // last batch (a gap on the leader); the entry check below still runs.
        if let Some(last) = self.first_batch_epoch_at(log_end - 1)? {
            if last >= 0 && cache.latest().is_none_or(|latest| last > latest.epoch) {
                return Ok(false);
            }
        }
        let Some(latest) = cache.latest() else {
            return Ok(true);
        };
        Ok(self.first_batch_epoch_at(latest.start_offset)? == Some(latest.epoch))
    }

    /// The leader epoch of the first batch whose last offset is at or past `offset`; `None`
    /// when there is no such batch or the segment holding it is damaged there.
    fn first_batch_epoch_at(&self, offset: i64) -> Result<Option<i32>, LogError> {
        match self.read(offset, 0) {
            Ok(read) => Ok(super::batch::BatchHeader::parse(&read.records)
                .map(|header| header.partition_leader_epoch)),
            Err(ReadError::Io(error)) => Err(error.into()),
            Err(ReadError::Corrupt { .. } | ReadError::OffsetOutOfRange { .. }) => Ok(None),
        }
    }

    /// Rebuilds the cache from every batch header of every segment.
    fn scan_epochs(&self) -> Result<LeaderEpochCache, LogError> {
        let mut cache = LeaderEpochCache::default();
        for segment in self.segments.iter().chain([self.active.segment()]) {
            let mut batches = segment.batches();
            loop {
                match batches.next_header() {
                    Ok(Some((_, header))) => {
                        cache.assign(header.partition_leader_epoch, header.base_offset);
                    }
                    Ok(None) => break,
                    Err(ReadError::Io(error)) => return Err(error.into()),
                    Err(error) => {
                        // An older segment damaged after it was written: its batches after
                        // the damage cannot be read anyway.
                        tracing::error!(
                            segment = %segment.log_path().display(),
                            %error,
                            "leader epochs rebuilt only up to the damage in this segment"
                        );
                        break;
                    }
                }
            }
        }
        cache.truncate_from_start(self.log_start_offset);
        Ok(cache)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::batch::tests::encode_batch;
    use super::super::tests::{segment_file, small};
    use super::super::{LogConfig, CLEAN_SHUTDOWN_FILE};
    use super::*;
    use tempfile::TempDir;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        LeaderEpochCache {
            entries: entries
                .iter()
                .map(|&(epoch, start_offset)| EpochEntry {
                    epoch,
                    start_offset,
                })
                .collect(),
        }
    }

    fn pairs(cache: &LeaderEpochCache) -> Vec<(i32, i64)> {
        cache
            .entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect()
    }

    /// Appends one three-record batch per epoch in `epochs`.
    fn append_epochs(log: &mut PartitionLog, epochs: &[i32]) {
        for &epoch in epochs {
            log.append(&encode_batch(3, 20, 1_000), epoch).unwrap();
        }
    }

    #[test]
    fn only_a_higher_non_negative_epoch_opens_an_entry() {
        let mut c = LeaderEpochCache::default();
        assert!(!c.assign(-1, 0));
        assert!(c.assign(0, 0));
        assert!(!c.assign(0, 5));
        assert!(c.assign(3, 10));
        assert!(!c.assign(2, 20));
        assert_eq!(pairs(&c), [(0, 0), (3, 10)]);
        // An entry without batches (an emptied log's) gives way to one at the same offset.
        assert!(c.assign(4, 10));
        assert_eq!(pairs(&c), [(0, 0), (4, 10)]);
    }

    #[test]
    fn end_offset_for_epoch_answers_every_case_like_offset_for_leader_epoch() {
        let c = cache(&[(2, 0), (4, 10), (7, 25)]);
        // An epoch that is cached: ends where the next one starts.
        assert_eq!(c.end_offset_for(2, 40), Some((2, 10)));
        assert_eq!(c.end_offset_for(4, 40), Some((4, 25)));
        // An epoch between two cached ones: the one below, and where it ended.
        assert_eq!(c.end_offset_for(5, 40), Some((4, 25)));
        assert_eq!(c.end_offset_for(3, 40), Some((2, 10)));
        // The latest epoch, or any above it: the log end.
        assert_eq!(c.end_offset_for(7, 40), Some((7, 40)));
        assert_eq!(c.end_offset_for(9, 40), Some((7, 40)));
        // Below the earliest, negative, or nothing cached: undefined.
        assert_eq!(c.end_offset_for(1, 40), None);
        assert_eq!(c.end_offset_for(-1, 40), None);
        assert_eq!(LeaderEpochCache::default().end_offset_for(0, 40), None);
        assert_eq!(c.start_offset_of(4), Some(10));
        assert_eq!(c.start_offset_of(5), None);
    }

    #[test]
    fn truncating_from_the_end_drops_entries_at_or_past_the_new_end() {
        let mut c = cache(&[(2, 0), (4, 10), (7, 25)]);
        assert!(!c.truncate_from_end(26));
        assert!(c.truncate_from_end(25));
        assert_eq!(pairs(&c), [(2, 0), (4, 10)]);
        assert!(c.truncate_from_end(0));
        assert!(c.entries().is_empty());
    }

    #[test]
    fn truncating_from_the_start_moves_the_covering_entry_to_the_new_start() {
        let mut c = cache(&[(2, 0), (4, 10), (7, 25)]);
        assert!(!c.truncate_from_start(0));
        assert!(c.truncate_from_start(12));
        assert_eq!(pairs(&c), [(4, 12), (7, 25)]);
        assert!(c.truncate_from_start(25));
        assert_eq!(pairs(&c), [(7, 25)]);
        assert!(!c.truncate_from_start(25));
        assert!(c.truncate_from_start(90));
        assert_eq!(pairs(&c), [(7, 90)]);
    }

    #[test]
    fn the_file_format_reads_back_and_garbage_is_refused() {
        let c = cache(&[(0, 0), (3, 52_311)]);
        assert_eq!(c.encode(), "0\n2\n0 0\n3 52311\n");
        assert_eq!(LeaderEpochCache::parse(&c.encode()).unwrap(), c);
        assert_eq!(
            LeaderEpochCache::parse("0\n0\n").unwrap(),
            LeaderEpochCache::default()
        );
        for garbage in [
            "",
            "1\n0\n",
            "0\n",
            "0\n2\n0 0\n",
            "0\n1\n0,0\n",
            "0\n1\n-1 0\n",
            "0\n2\n3 0\n2 5\n",
            "0\n2\n1 5\n2 5\n",
            "0\n1\n0 0\n1 1\n",
            "0\nx\n",
        ] {
            assert!(LeaderEpochCache::parse(garbage).is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn rising_epochs_open_entries_at_their_first_batch_and_persist_across_a_reopen() {
        let dir = TempDir::new().unwrap();
        let mut log = PartitionLog::open(dir.path(), small(1 << 20)).unwrap();
        assert_eq!(log.latest_epoch(), None);
        append_epochs(&mut log, &[0, 0, 2, 2, 2, 5]);
        assert_eq!(log.epoch_entries(), [(0, 0), (2, 6), (5, 15)]);
        assert_eq!(log.latest_epoch(), Some(5));
        assert_eq!(log.epoch_start_offset(2), Some(6));
        // Written at the next flush, roll or close, not on the append path.
        log.flush().unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join(LEADER_EPOCH_FILE)).unwrap(),
            "0\n3\n0 0\n2 6\n5 15\n"
        );
        log.close().unwrap();
        let log = PartitionLog::open(dir.path(), small(1 << 20)).unwrap();
        assert_eq!(log.epoch_entries(), [(0, 0), (2, 6), (5, 15)]);
        assert_eq!(log.end_offset_for_epoch(2), Some((2, 15)));
        assert_eq!(log.end_offset_for_epoch(5), Some((5, 18)));
    }

    #[test]
    fn several_epochs_in_one_replicated_request_each_open_an_entry() {
        let dir = TempDir::new().unwrap();
        let mut leader = PartitionLog::open(dir.path(), small(1 << 20)).unwrap();
        append_epochs(&mut leader, &[1, 1, 3, 4]);
        let records = leader.read(0, usize::MAX).unwrap().records;
        let other = TempDir::new().unwrap();
        let mut follower = PartitionLog::open(other.path(), small(1 << 20)).unwrap();
        follower.append_replicated(&records).unwrap();
        assert_eq!(follower.epoch_entries(), [(1, 0), (3, 6), (4, 9)]);
    }

    #[test]
    fn a_deleted_or_garbled_checkpoint_is_rebuilt_from_the_batches() {
        let one = encode_batch(3, 20, 1_000).len() as u64;
        for damage in ["delete", "garble", "wrong"] {
            let dir = TempDir::new().unwrap();
            let mut log = PartitionLog::open(dir.path(), small(2 * one)).unwrap();
            append_epochs(&mut log, &[0, 1, 1, 1, 4, 4, 6]);
            let expected = log.epoch_entries();
            assert_eq!(expected, [(0, 0), (1, 3), (4, 12), (6, 18)]);
            log.close().unwrap();
            let path = dir.path().join(LEADER_EPOCH_FILE);
            match damage {
                "delete" => fs::remove_file(&path).unwrap(),
                "garble" => fs::write(&path, "0\n9\n1 2\n").unwrap(),
                // Well-formed, but the latest epoch is not what the log holds.
                _ => fs::write(&path, "0\n2\n0 0\n1 3\n").unwrap(),
            }
            let log = PartitionLog::open(dir.path(), small(2 * one)).unwrap();
            assert_eq!(log.epoch_entries(), expected, "{damage}");
            assert_eq!(
                LeaderEpochCache::read(dir.path()).unwrap().unwrap(),
                log.epochs
            );
        }
    }

    #[test]
    fn an_entry_whose_batch_a_crash_lost_is_dropped_on_open() {
        let dir = TempDir::new().unwrap();
        let mut log = PartitionLog::open(dir.path(), small(1 << 20)).unwrap();
        append_epochs(&mut log, &[0, 0]);
        let good = log.size_bytes();
        append_epochs(&mut log, &[3]);
        drop(log);
        // The batch of epoch 3 is torn; its entry was written before it.
        let file = fs::OpenOptions::new()
            .write(true)
            .open(segment_file(dir.path(), 0, "log"))
            .unwrap();
        file.set_len(good + 10).unwrap();
        let mut log = PartitionLog::open(dir.path(), small(1 << 20)).unwrap();
        assert_eq!(log.log_end_offset(), 6);
        assert_eq!(log.epoch_entries(), [(0, 0)]);
        append_epochs(&mut log, &[3]);
        assert_eq!(log.epoch_entries(), [(0, 0), (3, 6)]);
    }

    #[test]
    fn retention_moves_the_covering_entry_to_the_log_start_and_keeps_the_latest_epoch() {
        let dir = TempDir::new().unwrap();
        let one = encode_batch(3, 20, 1_000).len() as u64;
        let mut log = PartitionLog::open(dir.path(), small(2 * one)).unwrap();
        append_epochs(&mut log, &[0, 1, 1, 1, 4]);
        assert_eq!(log.epoch_entries(), [(0, 0), (1, 3), (4, 12)]);
        // Segments of two batches: [0, 6) goes.
        log.apply_retention(i64::MAX, -1, (3 * one) as i64).unwrap();
        assert_eq!(log.log_start_offset(), 6);
        assert_eq!(log.epoch_entries(), [(1, 6), (4, 12)]);
        assert_eq!(log.end_offset_for_epoch(0), None);
        assert_eq!(log.end_offset_for_epoch(1), Some((1, 12)));
        // DeleteRecords inside a batch moves the entry to the exact offset.
        log.delete_records_before(13).unwrap();
        assert_eq!(log.epoch_entries(), [(4, 13)]);
        // Everything deleted: the latest epoch is still known, and survives a reopen.
        log.apply_retention(i64::MAX, 0, -1).unwrap();
        assert_eq!(log.log_start_offset(), 15);
        assert_eq!(log.epoch_entries(), [(4, 15)]);
        assert_eq!(log.latest_epoch(), Some(4));
        drop(log);
        let mut log = PartitionLog::open(dir.path(), small(2 * one)).unwrap();
        assert_eq!(log.epoch_entries(), [(4, 15)]);
        assert_eq!(log.end_offset_for_epoch(4), Some((4, 15)));
        append_epochs(&mut log, &[4, 5]);
        assert_eq!(log.epoch_entries(), [(4, 15), (5, 18)]);
    }

    #[test]
    fn a_new_epoch_appended_to_an_emptied_log_replaces_the_entry_kept_at_its_end() {
        let dir = TempDir::new().unwrap();
        let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        append_epochs(&mut log, &[0, 0]);
        log.delete_records_before(6).unwrap();
        assert_eq!(log.epoch_entries(), [(0, 6)]);
        log.close().unwrap();
        // A restarted broker leads in a later epoch.
        let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        append_epochs(&mut log, &[3]);
        assert_eq!(log.epoch_entries(), [(3, 6)]);
        assert_eq!(log.end_offset_for_epoch(0), None);
        drop(log);
        let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        assert_eq!(log.epoch_entries(), [(3, 6)]);
    }

    #[test]
    fn an_older_epoch_is_refused_and_changes_nothing() {
        let dir = TempDir::new().unwrap();
        let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        append_epochs(&mut log, &[3]);
        let error = log.append(&encode_batch(1, 1, 0), 2).unwrap_err();
        assert!(
            matches!(
                error,
                super::super::AppendError::StaleLeaderEpoch {
                    epoch: 2,
                    latest: 3
                }
            ),
            "{error:?}"
        );
        assert!(matches!(
            log.append(&encode_batch(1, 1, 0), -1),
            Err(super::super::AppendError::StaleLeaderEpoch { .. })
        ));
        assert_eq!(log.log_end_offset(), 3);
        assert_eq!(log.epoch_entries(), [(3, 0)]);
    }

    #[test]
    fn a_crash_before_the_checkpoint_is_written_is_repaired_from_the_batches() {
        let dir = TempDir::new().unwrap();
        let mut log = PartitionLog::open(dir.path(), small(1 << 20)).unwrap();
        append_epochs(&mut log, &[0, 0]);
        log.flush().unwrap();
        append_epochs(&mut log, &[3, 3, 7]);
        // Crash: the newer epochs never reached the checkpoint file.
        drop(log);
        let log = PartitionLog::open(dir.path(), small(1 << 20)).unwrap();
        assert_eq!(log.epoch_entries(), [(0, 0), (3, 6), (7, 12)]);
    }

    #[test]
    fn batches_without_an_epoch_open_no_entry_until_one_has_an_epoch() {
        let dir = TempDir::new().unwrap();
        let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        append_epochs(&mut log, &[-1, -1]);
        assert_eq!(log.latest_epoch(), None);
        assert!(!dir.path().join(LEADER_EPOCH_FILE).exists());
        append_epochs(&mut log, &[0]);
        assert_eq!(log.epoch_entries(), [(0, 6)]);
        log.flush().unwrap();
        drop(log);
        fs::remove_file(dir.path().join(LEADER_EPOCH_FILE)).unwrap();
        let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        assert_eq!(log.epoch_entries(), [(0, 6)]);
        assert!(!dir.path().join(CLEAN_SHUTDOWN_FILE).exists());
    }
}
