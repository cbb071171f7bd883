//! Truncating a partition log at its end: a follower cuts the tail where its log and a new
//! leader's disagree (found with OffsetForLeaderEpoch), or drops everything when it fell
//! behind the leader's log start.
//!
//! # Where a truncation cuts
//!
//! Only whole batches are removed, as in Kafka. [`PartitionLog::truncate_to`]`(offset)`
//! keeps the batches whose last offset is below `offset` and removes all others, so a batch
//! holding `offset` goes whole and the log end becomes that batch's base offset: the cut
//! rounds *down* to a batch boundary. After a gap that compaction left, the log end becomes
//! the end of the last batch kept. (Kafka sets its log end to `offset` itself even then,
//! leaving an empty range; here the log end is always where the last batch ends, which is
//! also what recovery finds after a crash.)
//!
//! # Steps, and crashes between them
//!
//! 1. The cleaner checkpoint comes down to the new end if it was past it (always safe: it
//!    only makes more of the log dirty), and the leader-epoch checkpoint drops the entries
//!    at or past the new end.
//! 2. The segments wholly past the cut are renamed to `*.deleted`, newest first, so that a
//!    crash leaves a prefix of the log, never one with a hole; the directory is fsynced.
//! 3. The segment holding the cut (made active again if it was not) has its `.log` cut and
//!    fsynced, then its indexes replaced with the entries for the batches that remain.
//! 4. If the cut removed a batch that a DeleteRecords had started the log inside, the log
//!    start offset comes down to the new end (nothing below the new end is exposed: it is
//!    all gone).
//!
//! A crash between two steps leaves a longer log than asked for; open() makes it consistent
//! (the epoch checkpoint is checked against the log and rebuilt if needed, a log start past
//! the log end starts the log over there), and the follower cuts again when it next
//! compares its log with the leader's.
//!
//! [`PartitionLog::truncate_fully_and_start_at`] empties the epoch cache, checkpoints the
//! new log start, renames every segment for deletion (newest first), creates an empty
//! segment at the new start, and then moves the cleaner checkpoint there. A crash in
//! between leaves either the old log with the new log start (read as after a DeleteRecords,
//! or started over empty when the start is past its end), or no segment at all, which
//! open() starts over at the checkpointed log start.

use std::time::Instant;

use super::checkpoint::{self, CLEANER_OFFSET_FILE, LOG_START_OFFSET_FILE};
use super::epoch::LeaderEpochCache;
use super::error::LogError;
use super::retention::{remove_files, rename_for_deletion};
use super::segment::{sync_dir, ActiveSegment, Segment};
use super::PartitionLog;

impl PartitionLog {
    /// Removes every record at and above `offset`, rounding down to a batch boundary: the
    /// batches whose last offset is below `offset` stay, a batch holding `offset` is removed
    /// whole (see the module docs). Returns the new log end offset, at or below `offset`; the
    /// next append continues there. Nothing changes when `offset` is at or past the log end.
    ///
    /// Newer segments are deleted, the segment holding the cut is cut and its indexes
    /// rewritten, all fsynced; the leader-epoch cache drops the epochs starting at or past
    /// the new end, and the cleaner offset and the log start offset come down to it if they
    /// were past it. An `offset` below the first segment's base empties the log like
    /// [`Self::truncate_fully_and_start_at`]`(offset)`, as Kafka does.
    ///
    /// A compaction planned before the truncation installs nothing that the truncation
    /// touched ([`Self::install_cleaned`] checks its segments); the caller's producer state
    /// must be rebuilt from the remaining log.
    ///
    /// # Errors
    ///
    /// [`LogError::OffsetOutOfRange`] for a negative `offset`, with nothing changed.
    /// [`LogError::Io`] or [`LogError::Corrupt`] when a step fails: the log may then be cut
    /// only partly, and must be reopened, which makes it consistent, before further use.
    pub fn truncate_to(&mut self, offset: i64) -> Result<i64, LogError> {
        let log_end = self.log_end_offset();
        if offset < 0 {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start: self.log_start_offset,
                log_end,
            });
        }
        if offset >= log_end {
            return Ok(log_end);
        }
        let first_base = self
            .segments
            .first()
            .map_or(self.active.base_offset(), Segment::base_offset);
        if offset < first_base {
            self.truncate_fully_and_start_at(offset)?;
            return Ok(offset);
        }
        // The inactive segment holding the cut, if it is not in the active one.
        let holder = (offset < self.active.base_offset()).then(|| {
            self.segments
                .partition_point(|s| s.base_offset() <= offset)
                .saturating_sub(1)
        });
        let (position, new_end) = match holder {
            None => self.active.cut_point(offset)?,
            Some(i) => self.segments[i].cut_point(offset)?,
        };
        // Step 1.
        if self.first_dirty_offset > new_end {
            checkpoint::write(&self.dir, CLEANER_OFFSET_FILE, new_end)?;
            self.first_dirty_offset = new_end;
            self.oldest_clean_tombstone = None;
        }
        self.change_epochs(|epochs| epochs.truncate_from_end(new_end))?;
        // Step 2.
        let mut renamed = Vec::new();
        let mut deleted_segments = 0;
        if let Some(i) = holder {
            renamed.extend(rename_for_deletion(self.active.segment())?);
            for segment in self.segments[i + 1..].iter().rev() {
                renamed.extend(rename_for_deletion(segment)?);
            }
            sync_dir(&self.dir)?;
            deleted_segments = self.segments.len() - i;
            self.segments.truncate(i + 1);
            if let Some(segment) = self.segments.pop() {
                // The old active segment's handle goes; its files are already renamed.
                self.active = ActiveSegment::reactivate(segment)?;
            }
        }
        // Step 3.
        self.active.truncate(position, new_end)?;
        sync_dir(&self.dir)?;
        remove_files(&renamed);
        // The cut and the remaining log are durable.
        self.unflushed_messages = 0;
        self.last_flush = Instant::now();
        // Step 4.
        if self.log_start_offset > new_end {
            self.set_log_start_offset(new_end)?;
        }
        tracing::info!(
            dir = %self.dir.display(),
            offset,
            log_end_offset = new_end,
            previous_log_end_offset = log_end,
            deleted_segments,
            "truncated the log"
        );
        Ok(new_end)
    }

    /// Deletes every segment and starts the log over, empty, at `offset`, which becomes both
    /// the log start and the log end offset (Kafka's `truncateFullyAndStartAt`): for a
    /// follower whose fetch offset is below the leader's log start, or whose whole log
    /// diverged. The leader-epoch cache is emptied and the cleaner offset moved to `offset`.
    /// `offset` may be below or above the current log.
    ///
    /// Files of the partition that are not the log's (producer snapshots, say) are left
    /// alone: the caller removes what it must.
    ///
    /// # Errors
    ///
    /// [`LogError::OffsetOutOfRange`] for a negative `offset`, with nothing changed.
    /// [`LogError::Io`] when a step fails; the log must then be reopened, which finishes the
    /// job or leaves the old log (see the module docs), before further use.
    pub fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<(), LogError> {
        let log_end = self.log_end_offset();
        if offset < 0 {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start: self.log_start_offset,
                log_end,
            });
        }
        self.change_epochs(|epochs| {
            let had_any = !epochs.entries().is_empty();
            *epochs = LeaderEpochCache::default();
            had_any
        })?;
        // Written even when unchanged: with no segment left, only the checkpoint says where
        // the log starts.
        checkpoint::write(&self.dir, LOG_START_OFFSET_FILE, offset)?;
        self.log_start_offset = offset;
        let mut renamed = rename_for_deletion(self.active.segment())?;
        for segment in self.segments.iter().rev() {
            renamed.extend(rename_for_deletion(segment)?);
        }
        sync_dir(&self.dir)?;
        let deleted_segments = self.segments.len() + 1;
        self.active = ActiveSegment::create(&self.dir, offset, self.config.index_interval_bytes)?;
        self.segments.clear();
        remove_files(&renamed);
        self.unflushed_messages = 0;
        self.last_flush = Instant::now();
        if self.first_dirty_offset != offset {
            checkpoint::write(&self.dir, CLEANER_OFFSET_FILE, offset)?;
            self.first_dirty_offset = offset;
        }
        self.oldest_clean_tombstone = None;
        tracing::info!(
            dir = %self.dir.display(),
            offset,
            previous_log_end_offset = log_end,
            deleted_segments,
            "emptied the log and started it over"
        );
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::fs;
    use std::path::Path;

    use super::super::batch::tests::encode_batch;
    use super::super::batch::BatchHeader;
    use super::super::segment;
    use super::super::tests::{segment_file, small};
    use super::super::{AppendError, LogConfig, ReadError};
    use super::*;
    use tempfile::TempDir;

    fn one() -> u64 {
        encode_batch(3, 50, 0).len() as u64
    }

    /// Appends one three-record batch (timestamps `ts..ts+2`) per epoch in `epochs`.
    fn append(log: &mut PartitionLog, epochs: &[i32], ts: i64) {
        for &epoch in epochs {
            log.append(&encode_batch(3, 50, ts), epoch).unwrap();
        }
    }

    /// Every batch from the log start to the log end, back to back, as a fetch would see it.
    fn contents(log: &PartitionLog) -> Vec<u8> {
        let mut out = Vec::new();
        let mut offset = log.log_start_offset();
        while offset < log.log_end_offset() {
            let read = log.read(offset, usize::MAX).unwrap();
            if read.records.is_empty() {
                break;
            }
            let mut rest = &read.records[..];
            while let Some(header) = BatchHeader::parse(rest) {
                offset = header.last_offset() + 1;
                rest = &rest[header.size()..];
            }
            out.extend_from_slice(&read.records);
        }
        out
    }

    fn bases(records: &[u8]) -> Vec<i64> {
        let mut out = Vec::new();
        let mut rest = records;
        while let Some(header) = BatchHeader::parse(rest) {
            out.push(header.base_offset);
            rest = &rest[header.size()..];
        }
        out
    }

    /// Every offset of the log reads back as the batch holding it.
    fn check_every_offset(log: &PartitionLog) {
        for offset in log.log_start_offset()..log.log_end_offset() {
            let read = log.read(offset, 0).unwrap();
            let header = BatchHeader::parse(&read.records).unwrap();
            assert!(
                header.base_offset <= offset && offset <= header.last_offset(),
                "offset {offset} read batch {}..={}",
                header.base_offset,
                header.last_offset()
            );
        }
    }

    /// Closes (or drops, for a crash) and reopens, checking that nothing changed.
    fn reopen(log: PartitionLog, dir: &Path, config: &LogConfig, clean: bool) -> PartitionLog {
        let before = (
            contents(&log),
            log.log_start_offset(),
            log.log_end_offset(),
            log.epoch_entries(),
            log.max_timestamp(),
        );
        if clean {
            log.close().unwrap();
        } else {
            drop(log);
        }
        let log = PartitionLog::open(dir, config.clone()).unwrap();
        let after = (
            contents(&log),
            log.log_start_offset(),
            log.log_end_offset(),
            log.epoch_entries(),
            log.max_timestamp(),
        );
        assert_eq!(after, before, "clean: {clean}");
        check_every_offset(&log);
        log
    }

    #[test]
    fn truncating_inside_the_active_segment_at_a_batch_boundary_keeps_everything_before() {
        for clean in [true, false] {
            let dir = TempDir::new().unwrap();
            let config = small(1 << 20);
            let mut log = PartitionLog::open(dir.path(), config.clone()).unwrap();
            append(&mut log, &[0, 0, 1, 1, 2], 1_000);
            let kept = log.read(0, (3 * one()) as usize).unwrap().records;
            assert_eq!(log.truncate_to(9).unwrap(), 9);
            assert_eq!(log.log_end_offset(), 9);
            assert_eq!(contents(&log), kept);
            assert_eq!(log.size_bytes(), 3 * one());
            assert_eq!(log.epoch_entries(), [(0, 0), (1, 6)]);
            assert_eq!(log.end_offset_for_epoch(1), Some((1, 9)));
            assert_eq!(
                fs::metadata(segment_file(dir.path(), 0, "log"))
                    .unwrap()
                    .len(),
                3 * one()
            );
            check_every_offset(&log);
            let log = reopen(log, dir.path(), &config, clean);
            let mut log = log;
            assert_eq!(
                log.append(&encode_batch(1, 5, 0), 3).unwrap().base_offset,
                9
            );
            assert_eq!(log.epoch_entries(), [(0, 0), (1, 6), (3, 9)]);
            reopen(log, dir.path(), &config, clean);
        }
    }

    #[test]
    fn an_offset_inside_a_batch_removes_the_whole_batch_and_rounds_down() {
        let dir = TempDir::new().unwrap();
        let mut log = PartitionLog::open(dir.path(), small(1 << 20)).unwrap();
        append(&mut log, &[0, 0, 0], 1_000);
        // Batch 3..=5 holds offset 4: it goes, and the log ends at 3.
        assert_eq!(log.truncate_to(4).unwrap(), 3);
        assert_eq!(bases(&contents(&log)), [0]);
        // Inside the first batch: nothing is left.
        assert_eq!(log.truncate_to(1).unwrap(), 0);
        assert_eq!((log.log_end_offset(), log.size_bytes()), (0, 0));
        assert_eq!(log.latest_epoch(), None);
        assert_eq!(
            log.append(&encode_batch(2, 5, 0), 4).unwrap().base_offset,
            0
        );
    }

    #[test]
    fn truncating_at_or_past_the_log_end_changes_nothing() {
        let dir = TempDir::new().unwrap();
        let mut log = PartitionLog::open(dir.path(), small(1 << 20)).unwrap();
        append(&mut log, &[0, 1], 1_000);
        let before = contents(&log);
        assert_eq!(log.truncate_to(6).unwrap(), 6);
        assert_eq!(log.truncate_to(100).unwrap(), 6);
        assert_eq!(contents(&log), before);
        assert_eq!(log.epoch_entries(), [(0, 0), (1, 3)]);
        assert!(matches!(
            log.truncate_to(-1),
            Err(LogError::OffsetOutOfRange { offset: -1, .. })
        ));
    }

    #[test]
    fn truncating_at_a_segment_boundary_empties_that_segment_and_deletes_the_later_ones() {
        for clean in [true, false] {
            let dir = TempDir::new().unwrap();
            let config = small(2 * one());
            let mut log = PartitionLog::open(dir.path(), config.clone()).unwrap();
            // Segments [0, 6), [6, 12), [12, 18), active [18, 21).
            append(&mut log, &[0, 0, 1, 1, 2, 2, 3], 1_000);
            assert_eq!(log.segment_count(), 4);
            assert_eq!(log.truncate_to(6).unwrap(), 6);
            assert_eq!(log.segment_count(), 2);
            assert_eq!(log.size_bytes(), 2 * one());
            for base in [12, 18] {
                assert!(!segment_file(dir.path(), base, "log").exists());
                assert!(!segment_file(dir.path(), base, "index").exists());
            }
            assert_eq!(
                fs::metadata(segment_file(dir.path(), 6, "log"))
                    .unwrap()
                    .len(),
                0
            );
            assert_eq!(log.epoch_entries(), [(0, 0)]);
            let mut log = reopen(log, dir.path(), &config, clean);
            append(&mut log, &[4, 4, 4], 2_000);
            // The emptied segment is the active one: it fills, then the log rolls.
            assert_eq!(bases(&contents(&log)), [0, 3, 6, 9, 12]);
            assert_eq!(log.segment_count(), 3);
            assert_eq!(log.epoch_entries(), [(0, 0), (4, 6)]);
            reopen(log, dir.path(), &config, clean);
        }
    }

    #[test]
    fn truncating_into_an_older_segment_makes_it_active_again_and_appends_continue_there() {
        for clean in [true, false] {
            let dir = TempDir::new().unwrap();
            let config = LogConfig {
                segment_bytes: 3 * one(),
                index_interval_bytes: 1,
                ..LogConfig::default()
            };
            let mut log = PartitionLog::open(dir.path(), config.clone()).unwrap();
            // Segments [0, 9), [9, 18), active [18, 24); the largest timestamp is in [9, 18).
            for (epoch, ts) in [
                (0, 100),
                (0, 200),
                (1, 300),
                (1, 900),
                (1, 400),
                (2, 500),
                (2, 600),
                (2, 700),
            ] {
                log.append(&encode_batch(3, 50, ts), epoch).unwrap();
            }
            assert_eq!(log.segment_count(), 3);
            assert_eq!(log.max_timestamp(), Some((902, 9)));
            // Offset 13 is inside batch 12..=14 of the middle segment.
            assert_eq!(log.truncate_to(13).unwrap(), 12);
            assert_eq!(log.segment_count(), 2);
            assert_eq!(bases(&contents(&log)), [0, 3, 6, 9]);
            assert_eq!(log.epoch_entries(), [(0, 0), (1, 6)]);
            assert_eq!(log.max_timestamp(), Some((902, 9)));
            assert!(!segment_file(dir.path(), 18, "log").exists());
            check_every_offset(&log);
            // Cutting the batch with the largest timestamp lowers it.
            assert_eq!(log.truncate_to(9).unwrap(), 9);
            assert_eq!(log.max_timestamp(), Some((302, 6)));
            assert_eq!(log.offset_for_timestamp(303).unwrap(), None);
            let mut log = reopen(log, dir.path(), &config, clean);
            append(&mut log, &[5, 5, 5], 1_000);
            assert_eq!(bases(&contents(&log)), [0, 3, 6, 9, 12, 15]);
            assert_eq!(log.segment_count(), 2);
            assert_eq!(log.epoch_entries(), [(0, 0), (1, 6), (5, 9)]);
            assert_eq!(
                log.offset_for_timestamp(303)
                    .unwrap()
                    .map(|f| (f.offset, f.timestamp)),
                Some((9, 1_000))
            );
            reopen(log, dir.path(), &config, clean);
        }
    }

    #[test]
    fn truncation_lowers_the_cleaner_offset_and_a_log_start_inside_a_removed_batch() {
        let dir = TempDir::new().unwrap();
        let config = small(2 * one());
        let mut log = PartitionLog::open(dir.path(), config.clone()).unwrap();
        append(&mut log, &[0, 0, 0, 0, 0], 1_000);
        log.first_dirty_offset = 12;
        checkpoint::write(dir.path(), CLEANER_OFFSET_FILE, 12).unwrap();
        assert_eq!(log.truncate_to(8).unwrap(), 6);
        assert_eq!(log.first_dirty_offset, 6);
        assert_eq!(
            checkpoint::read(dir.path(), CLEANER_OFFSET_FILE).unwrap(),
            Some(6)
        );
        // DeleteRecords started the log inside batch 3..=5; cutting that batch leaves an
        // empty log at its base.
        log.delete_records_before(4).unwrap();
        assert_eq!(log.truncate_to(5).unwrap(), 3);
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (3, 3));
        assert!(log.read(3, 100).unwrap().records.is_empty());
        assert_eq!(log.epoch_entries(), []);
        let mut log = reopen(log, dir.path(), &config, true);
        append(&mut log, &[1], 1_000);
        assert_eq!(bases(&contents(&log)), [3]);
    }

    #[test]
    fn a_cleaner_offset_a_crash_left_past_the_log_end_is_lowered_on_open() {
        let dir = TempDir::new().unwrap();
        let mut log = PartitionLog::open(dir.path(), small(1 << 20)).unwrap();
        append(&mut log, &[0, 0], 1_000);
        drop(log);
        checkpoint::write(dir.path(), CLEANER_OFFSET_FILE, 50).unwrap();
        let log = PartitionLog::open(dir.path(), small(1 << 20)).unwrap();
        assert_eq!(log.first_dirty_offset, 6);
        assert_eq!(
            checkpoint::read(dir.path(), CLEANER_OFFSET_FILE).unwrap(),
            Some(6)
        );
    }

    #[test]
    fn truncating_below_the_first_segment_empties_the_log_and_starts_it_there() {
        let dir = TempDir::new().unwrap();
        let config = small(2 * one());
        let mut log = PartitionLog::open(dir.path(), config.clone()).unwrap();
        append(&mut log, &[0, 0, 0, 1, 1], 1_000);
        log.apply_retention(i64::MAX, -1, (3 * one()) as i64)
            .unwrap();
        assert_eq!(log.log_start_offset(), 6);
        assert_eq!(log.truncate_to(2).unwrap(), 2);
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (2, 2));
        assert_eq!((log.segment_count(), log.size_bytes()), (1, 0));
        let log = reopen(log, dir.path(), &config, false);
        assert_eq!(log.log_start_offset(), 2);
    }

    #[test]
    fn truncate_fully_and_start_at_restarts_an_empty_log_at_the_offset() {
        for (offset, clean) in [(1_000, true), (1_000, false), (3, true), (0, false)] {
            let dir = TempDir::new().unwrap();
            let config = small(2 * one());
            let mut log = PartitionLog::open(dir.path(), config.clone()).unwrap();
            append(&mut log, &[0, 0, 1, 1, 2], 1_000);
            log.truncate_fully_and_start_at(offset).unwrap();
            assert_eq!(
                (log.log_start_offset(), log.log_end_offset()),
                (offset, offset)
            );
            assert_eq!((log.segment_count(), log.size_bytes()), (1, 0));
            assert_eq!(log.latest_epoch(), None);
            assert_eq!(log.max_timestamp(), None);
            assert_eq!(log.first_dirty_offset, offset);
            let names: Vec<String> = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n.ends_with(".log") || n.ends_with(".deleted"))
                .collect();
            assert_eq!(names, [segment::file_name(offset, "log")]);
            if offset > 0 {
                assert!(matches!(
                    log.read(offset - 1, 10),
                    Err(ReadError::OffsetOutOfRange { .. })
                ));
            }
            let mut log = reopen(log, dir.path(), &config, clean);
            assert_eq!(log.log_start_offset(), offset);
            append(&mut log, &[7], 1_000);
            assert_eq!(bases(&contents(&log)), [offset]);
            assert_eq!(log.epoch_entries(), [(7, offset)]);
            reopen(log, dir.path(), &config, clean);
        }
    }

    /// Copies what the follower lacks from the leader, one fetch of `fetch_bytes` at a time.
    fn replicate(leader: &PartitionLog, follower: &mut PartitionLog, fetch_bytes: usize) {
        while follower.log_end_offset() < leader.log_end_offset() {
            let fetched = leader
                .read(follower.log_end_offset(), fetch_bytes)
                .unwrap()
                .records;
            follower.append_replicated(&fetched).unwrap();
        }
    }

    #[test]
    fn a_follower_copy_stays_identical_through_truncations_of_both_logs() {
        let (leader_dir, follower_dir) = (TempDir::new().unwrap(), TempDir::new().unwrap());
        let config = small(2 * one());
        let mut leader = PartitionLog::open(leader_dir.path(), config.clone()).unwrap();
        let mut follower = PartitionLog::open(follower_dir.path(), config.clone()).unwrap();
        append(&mut leader, &[0, 0, 1, 1, 1], 1_000);
        replicate(&leader, &mut follower, usize::MAX);
        assert_eq!(contents(&follower), contents(&leader));
        // A new leader that lacked 9..15 of epoch 1 takes over in epoch 3; the follower
        // still has that tail.
        leader.truncate_to(9).unwrap();
        append(&mut leader, &[3, 3], 2_000);
        // OffsetForLeaderEpoch(1) on the new leader says where epoch 1 ended there.
        let (epoch, end) = leader.end_offset_for_epoch(1).unwrap();
        assert_eq!((epoch, end), (1, 9));
        let end = end.min(follower.end_offset_for_epoch(epoch).unwrap().1);
        assert_eq!(follower.truncate_to(end).unwrap(), 9);
        replicate(&leader, &mut follower, 0);
        assert_eq!(contents(&follower), contents(&leader));
        let missing = leader.read(12, usize::MAX).unwrap().records;
        assert_eq!(follower.epoch_entries(), leader.epoch_entries());
        assert!(matches!(
            follower.append_replicated(&missing),
            Err(AppendError::OffsetMismatch { .. })
        ));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            /// Batches of `(records, value bytes)` in one request; the epoch goes up by the
            /// bump first.
            Append(Vec<(usize, usize)>, u8),
            /// Truncates both logs at this fraction of the way from log start to log end.
            Truncate(f64),
            Reopen {
                clean: bool,
            },
        }

        fn ops() -> impl Strategy<Value = Vec<Op>> {
            let op = prop_oneof![
                6 => (prop::collection::vec((1usize..5, 0usize..200), 1..4), 0u8..3)
                    .prop_map(|(batches, bump)| Op::Append(batches, bump)),
                2 => (0.0f64..1.0).prop_map(Op::Truncate),
                1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
            ];
            prop::collection::vec(op, 1..30)
        }

        /// What a reopen must preserve.
        #[derive(Debug, PartialEq, Eq)]
        struct State {
            contents: Vec<u8>,
            log_start_offset: i64,
            log_end_offset: i64,
            epochs: Vec<(i32, i64)>,
            latest_epoch: Option<i32>,
        }

        fn state(log: &PartitionLog) -> State {
            State {
                contents: contents(log),
                log_start_offset: log.log_start_offset(),
                log_end_offset: log.log_end_offset(),
                epochs: log.epoch_entries(),
                latest_epoch: log.latest_epoch(),
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(40))]
            #[test]
            fn a_replicated_copy_stays_byte_identical_through_appends_truncations_and_reopens(
                ops in ops(),
                segment_bytes in 150u64..2_000,
                index_interval_bytes in 0u32..400,
                fetch_bytes in 0usize..1_000,
            ) {
                let config = LogConfig {
                    segment_bytes,
                    index_interval_bytes,
                    ..LogConfig::default()
                };
                let (leader_dir, follower_dir) = (TempDir::new().unwrap(), TempDir::new().unwrap());
                let mut leader = PartitionLog::open(leader_dir.path(), config.clone()).unwrap();
                let mut follower = PartitionLog::open(follower_dir.path(), config.clone()).unwrap();
                // The model: every batch the leader holds, with its bytes.
                let mut model: Vec<(i64, i64, Vec<u8>)> = Vec::new();
                let mut epoch = 0;
                for (step, op) in ops.into_iter().enumerate() {
                    match op {
                        Op::Append(batches, bump) => {
                            epoch += i32::from(bump);
                            let encoded: Vec<Vec<u8>> = batches
                                .iter()
                                .map(|&(records, value)| encode_batch(records, value, step as i64))
                                .collect();
                            leader.append(&encoded.concat(), epoch).unwrap();
                            let end = leader.log_end_offset();
                            let mut fetched = Vec::new();
                            let mut offset = model.last().map_or(0, |b| b.1 + 1);
                            while offset < end {
                                let read = leader.read(offset, 0).unwrap().records;
                                let header = BatchHeader::parse(&read).unwrap();
                                offset = header.last_offset() + 1;
                                fetched.push((header.base_offset, header.last_offset(), read.to_vec()));
                            }
                            for (_, _, bytes) in &fetched {
                                let header = BatchHeader::parse(bytes).unwrap();
                                prop_assert_eq!(header.partition_leader_epoch, epoch);
                            }
                            model.extend(fetched);
                            replicate(&leader, &mut follower, fetch_bytes);
                        }
                        Op::Truncate(fraction) => {
                            let (start, end) = (leader.log_start_offset(), leader.log_end_offset());
                            let offset = start + ((end - start) as f64 * fraction) as i64;
                            let new_end = leader.truncate_to(offset).unwrap();
                            prop_assert_eq!(follower.truncate_to(offset).unwrap(), new_end);
                            model.retain(|b| b.1 < offset);
                            prop_assert_eq!(new_end, model.last().map_or(0, |b| b.1 + 1));
                        }
                        Op::Reopen { clean } => {
                            let before = (state(&leader), state(&follower));
                            if clean {
                                leader.close().unwrap();
                                follower.close().unwrap();
                            } else {
                                drop(leader);
                                drop(follower);
                            }
                            leader = PartitionLog::open(leader_dir.path(), config.clone()).unwrap();
                            follower = PartitionLog::open(follower_dir.path(), config.clone()).unwrap();
                            prop_assert_eq!((state(&leader), state(&follower)), before);
                        }
                    }
                    let expected: Vec<u8> = model.iter().flat_map(|b| b.2.clone()).collect();
                    prop_assert_eq!(&contents(&leader), &expected, "leader after step {}", step);
                    prop_assert_eq!(&contents(&follower), &expected, "follower after step {}", step);
                    prop_assert_eq!(follower.log_end_offset(), leader.log_end_offset());
                    prop_assert_eq!(follower.epoch_entries(), leader.epoch_entries());
                    check_every_offset(&follower);
                }
            }
        }
    }
}
