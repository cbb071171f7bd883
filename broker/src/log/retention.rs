//! Deleting from the front of a partition log: retention by time and size, DeleteRecords,
//! and the log start offset they advance.
//!
//! Only whole segments are ever removed. Offsets between the first segment's base and the log
//! start offset (a DeleteRecords in the middle of a segment) stay on disk but are out of range
//! for readers until their segment goes as a whole.
//!
//! Deleting a segment first renames its files to `<name>.deleted`, the `.log` first: that
//! rename is the moment the segment leaves the log, so a crash at any point leaves either the
//! whole segment or none of it (index files without a `.log` are removed on open, like any
//! `.deleted` file). The log start offset checkpoint is written before any rename, so after a
//! crash it is never behind the segments still on disk.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::checkpoint::{self, LOG_START_OFFSET_FILE};
use super::error::{IoError, IoResultExt, LogError};
use super::index::NO_TIMESTAMP;
use super::segment::{parse_file_name, sync_dir, Segment};
use super::PartitionLog;

/// Suffix of the files of a segment being deleted.
pub(crate) const DELETED_SUFFIX: &str = ".deleted";

/// What [`PartitionLog::apply_retention`] deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    /// Base offsets of the deleted segments, oldest first.
    pub deleted_segments: Vec<i64>,
    /// Bytes of `.log` the deleted segments held.
    pub deleted_bytes: u64,
    /// The log start offset afterwards.
    pub log_start_offset: i64,
    /// Whether the active segment had expired and was rolled so that it could go too.
    pub rolled: bool,
}

impl PartitionLog {
    /// Deletes the oldest segments that retention no longer keeps, with Kafka's rules; `-1`
    /// (any negative value) disables a limit:
    ///
    /// - by time, a prefix of segments whose largest timestamp is older than
    ///   `now_ms - retention_ms` (the file's modification time standing in for a segment
    ///   without timestamps);
    /// - then by size, the oldest segments while the log exceeds `retention_bytes` by at
    ///   least the whole segment;
    /// - and any segment wholly below the log start offset (left by DeleteRecords).
    ///
    /// The active segment counts like the others when it is not empty: if it has to go, the
    /// log first rolls to a new, empty one, so the log end offset stays where it was. The
    /// log start offset moves to the first remaining segment's base and is persisted.
    ///
    /// On a replicated partition the caller must not let retention pass the high watermark:
    /// this log does not know it.
    ///
    /// # Errors
    ///
    /// [`LogError::Io`] when a segment cannot be inspected, rolled or deleted; segments
    /// deleted before the failure stay deleted.
    pub fn apply_retention(
        &mut self,
        now_ms: i64,
        retention_ms: i64,
        retention_bytes: i64,
    ) -> Result<RetentionOutcome, LogError> {
        let count = self.expired_segments(now_ms, retention_ms, retention_bytes)?;
        let rolled = count > self.segments.len();
        if rolled {
            self.roll()?;
        }
        let (deleted_segments, deleted_bytes) = self.delete_oldest_segments(count)?;
        if !deleted_segments.is_empty() {
            tracing::info!(
                dir = %self.dir.display(),
                segments = deleted_segments.len(),
                bytes = deleted_bytes,
                log_start_offset = self.log_start_offset,
                rolled,
                "deleted segments past retention"
            );
        }
        Ok(RetentionOutcome {
            deleted_segments,
            deleted_bytes,
            log_start_offset: self.log_start_offset,
            rolled,
        })
    }

    /// How many segments from the oldest one retention deletes; one more than there are
    /// inactive segments means the active one too. Each rule extends the prefix the previous
    /// ones left, as Kafka runs them one after the other.
    fn expired_segments(
        &self,
        now_ms: i64,
        retention_ms: i64,
        retention_bytes: i64,
    ) -> Result<usize, IoError> {
        let active = self.active.segment();
        let all: Vec<&Segment> = self.segments.iter().chain([active]).collect();
        // An empty active segment holds nothing to delete, and rolling it would gain nothing.
        let candidates = if active.size() == 0 {
            self.segments.len()
        } else {
            all.len()
        };
        let mut count = self
            .segments
            .iter()
            .take_while(|s| s.end_offset() <= self.log_start_offset)
            .count();
        if retention_ms >= 0 {
            let limit = now_ms.saturating_sub(retention_ms);
            while count < candidates && largest_timestamp(all[count])? < limit {
                count += 1;
            }
        }
        if retention_bytes >= 0 {
            let remaining: u64 = all[count..].iter().map(|s| s.size()).sum();
            let mut excess = i128::from(remaining) - i128::from(retention_bytes);
            while count < candidates && excess >= i128::from(all[count].size()) {
                excess -= i128::from(all[count].size());
                count += 1;
            }
        }
        Ok(count)
    }

    /// Moves the log start offset up to `offset` (DeleteRecords) and deletes the segments
    /// wholly below it. `offset` may be anywhere up to the log end; one at or below the
    /// current log start changes nothing, as in Kafka. Returns the new log start offset, the
    /// partition's low watermark. Kafka's `-1` ("up to the high watermark") is for the caller
    /// to resolve.
    ///
    /// # Errors
    ///
    /// [`LogError::OffsetOutOfRange`] for a negative offset or one past the log end, with
    /// nothing changed; [`LogError::Io`] when the checkpoint cannot be written (nothing
    /// changed) or a segment cannot be deleted (the new log start offset holds).
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64, LogError> {
        let log_end = self.log_end_offset();
        if offset < 0 || offset > log_end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start: self.log_start_offset,
                log_end,
            });
        }
        if offset <= self.log_start_offset {
            return Ok(self.log_start_offset);
        }
        self.set_log_start_offset(offset)?;
        let below = self
            .segments
            .iter()
            .take_while(|s| s.end_offset() <= offset)
            .count();
        self.delete_oldest_segments(below)?;
        tracing::info!(
            dir = %self.dir.display(),
            log_start_offset = offset,
            "records deleted up to the new log start offset"
        );
        Ok(offset)
    }

    /// Persists and sets the log start offset. The checkpoint comes first: a log start that
    /// readers saw must survive a crash. Moving it forward drops the leader epochs below it
    /// but the one covering it (see `epoch`); a crash before that is repaired on open.
    pub(crate) fn set_log_start_offset(&mut self, offset: i64) -> Result<(), IoError> {
        if offset != self.log_start_offset {
            checkpoint::write(&self.dir, LOG_START_OFFSET_FILE, offset)?;
            let forward = offset > self.log_start_offset;
            self.log_start_offset = offset;
            if forward {
                self.change_epochs(|epochs| epochs.truncate_from_start(offset))?;
            }
        }
        Ok(())
    }

    /// Deletes the `count` oldest inactive segments, first raising the log start offset to
    /// the base of the segment that becomes the first. Returns their base offsets and bytes.
    pub(crate) fn delete_oldest_segments(
        &mut self,
        count: usize,
    ) -> Result<(Vec<i64>, u64), IoError> {
        let count = count.min(self.segments.len());
        if count == 0 {
            return Ok((Vec::new(), 0));
        }
        let next_base = self
            .segments
            .get(count)
            .map_or(self.active.base_offset(), Segment::base_offset);
        self.set_log_start_offset(next_base.max(self.log_start_offset))?;
        let mut renamed = Vec::new();
        let mut retired = 0;
        let mut failure = None;
        for segment in &self.segments[..count] {
            match rename_for_deletion(segment) {
                Ok(paths) => {
                    renamed.extend(paths);
                    retired += 1;
                }
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        // Segments whose `.log` was renamed are gone from the log whatever happens next.
        let gone: Vec<Segment> = self.segments.drain(..retired).collect();
        let bases = gone.iter().map(Segment::base_offset).collect();
        let bytes = gone.iter().map(Segment::size).sum();
        drop(gone);
        if let Some(error) = failure {
            return Err(error);
        }
        sync_dir(&self.dir)?;
        remove_files(&renamed);
        Ok((bases, bytes))
    }
}

/// The timestamp time-based retention judges a segment by, as Kafka does: its largest
/// record timestamp, or when it has none its file's modification time.
fn largest_timestamp(segment: &Segment) -> Result<i64, IoError> {
    let (timestamp, _) = segment.max_timestamp();
    if timestamp > NO_TIMESTAMP {
        Ok(timestamp)
    } else {
        segment.modified_ms()
    }
}

/// Renames a segment's files to `*.deleted`, the `.log` first. Returns the new paths.
pub(crate) fn rename_for_deletion(segment: &Segment) -> Result<Vec<PathBuf>, IoError> {
    let mut renamed = Vec::with_capacity(3);
    for (i, path) in segment.file_paths().into_iter().enumerate() {
        let target = deleted_path(path);
        match fs::rename(path, &target) {
            Ok(()) => renamed.push(target),
            // A missing index is rebuilt on open anyway; a missing log is not ours to judge.
            Err(e) if i > 0 && e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).at("rename segment file for deletion", path),
        }
    }
    Ok(renamed)
}

pub(crate) fn deleted_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(DELETED_SUFFIX);
    PathBuf::from(name)
}

/// Removes files renamed for deletion. A failure only leaves a file that the next open
/// removes, so it is reported and otherwise ignored.
pub(crate) fn remove_files(paths: &[PathBuf]) {
    for path in paths {
        if let Err(error) = fs::remove_file(path) {
            if error.kind() != io::ErrorKind::NotFound {
                tracing::warn!(file = %path.display(), %error, "cannot remove deleted segment file");
            }
        }
    }
}

/// Removes the `*.deleted` segment files a crash or a failed removal left behind.
pub(crate) fn remove_deleted_files(dir: &Path) -> Result<(), IoError> {
    for entry in fs::read_dir(dir).at("list partition directory", dir)? {
        let entry = entry.at("list partition directory", dir)?;
        let name = entry.file_name();
        let ours = name
            .to_str()
            .and_then(parse_file_name)
            .is_some_and(|(_, extension)| extension.ends_with(DELETED_SUFFIX));
        if ours {
            let path = entry.path();
            tracing::info!(file = %path.display(), "removing a segment file left from a deletion");
            fs::remove_file(&path).at("remove deleted segment file", &path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::batch::tests::encode_batch;
    use super::super::tests::{fill, segment_file, small};
    use super::super::{LogConfig, ReadError};
    use super::*;
    use tempfile::TempDir;

    fn one_batch() -> u64 {
        encode_batch(3, 50, 0).len() as u64
    }

    /// Six segments of two batches each (offsets 6i..6i+5, timestamps from 1000 by 10 per
    /// batch) and an active segment with one batch (offsets 36..38, timestamp 1120).
    fn seven_segments(dir: &Path) -> PartitionLog {
        let mut log = PartitionLog::open(dir, small(2 * one_batch())).unwrap();
        fill(&mut log, 13);
        assert_eq!(log.segment_count(), 7);
        log
    }

    #[test]
    fn time_retention_deletes_the_segments_whose_newest_record_is_too_old() {
        let dir = TempDir::new().unwrap();
        let mut log = seven_segments(dir.path());
        // Segment i's newest record is 1000 + 20i + 12; retention 100ms at now = 1150 keeps
        // everything from timestamp 1050 on, so segments 0 (1012) and 1 (1032) go.
        let outcome = log.apply_retention(1_150, 100, -1).unwrap();
        assert_eq!(
            outcome,
            RetentionOutcome {
                deleted_segments: vec![0, 6],
                deleted_bytes: 4 * one_batch(),
                log_start_offset: 12,
                rolled: false,
            }
        );
        assert_eq!(log.segment_count(), 5);
        assert_eq!(log.log_start_offset(), 12);
        assert!(!segment_file(dir.path(), 0, "log").exists());
        assert!(!segment_file(dir.path(), 6, "index").exists());
        assert!(segment_file(dir.path(), 12, "log").exists());
        assert!(matches!(
            log.read(11, 100),
            Err(ReadError::OffsetOutOfRange { log_start: 12, .. })
        ));
        assert_eq!(log.read(12, 0).unwrap().log_start_offset, 12);
        // Nothing else is old enough, so a second pass deletes nothing.
        assert_eq!(
            log.apply_retention(1_150, 100, -1)
                .unwrap()
                .deleted_segments,
            Vec::<i64>::new()
        );
    }

    #[test]
    fn the_log_start_offset_moved_by_retention_survives_a_reopen() {
        let dir = TempDir::new().unwrap();
        let mut log = seven_segments(dir.path());
        log.apply_retention(1_150, 100, -1).unwrap();
        drop(log);
        let log = PartitionLog::open(dir.path(), small(2 * one_batch())).unwrap();
        assert_eq!(log.log_start_offset(), 12);
        assert_eq!(log.log_end_offset(), 39);
        assert!(log.read(6, 10).is_err());
    }

    #[test]
    fn an_expired_active_segment_is_rolled_and_deleted_keeping_the_log_end() {
        let dir = TempDir::new().unwrap();
        let mut log = seven_segments(dir.path());
        let outcome = log.apply_retention(1_000_000, 1_000, -1).unwrap();
        assert_eq!(outcome.deleted_segments, [0, 6, 12, 18, 24, 30, 36]);
        assert!(outcome.rolled);
        assert_eq!(outcome.log_start_offset, 39);
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (39, 39));
        assert_eq!((log.segment_count(), log.size_bytes()), (1, 0));
        assert!(log.read(39, 100).unwrap().records.is_empty());
        assert_eq!(
            log.append(&encode_batch(1, 1, 0), 0).unwrap().base_offset,
            39
        );
        // An empty active segment is never rolled for retention.
        let mut empty = PartitionLog::open(TempDir::new().unwrap().path(), small(100)).unwrap();
        assert!(!empty.apply_retention(i64::MAX, 0, 0).unwrap().rolled);
        assert_eq!(empty.segment_count(), 1);
    }

    #[test]
    fn size_retention_deletes_the_oldest_segments_only_while_a_whole_one_is_in_excess() {
        let dir = TempDir::new().unwrap();
        let mut log = seven_segments(dir.path());
        let segment = 2 * one_batch();
        // 13 batches; a limit of 8.5 batches is exceeded by 4.5, so two whole segments go.
        let limit = (8 * one_batch() + one_batch() / 2) as i64;
        let outcome = log.apply_retention(0, -1, limit).unwrap();
        assert_eq!(outcome.deleted_segments, [0, 6]);
        assert_eq!(outcome.deleted_bytes, 2 * segment);
        assert_eq!(log.size_bytes(), 9 * one_batch());
        assert_eq!(log.log_start_offset(), 12);
        // Exceeding by exactly one segment deletes it.
        let outcome = log
            .apply_retention(0, -1, (7 * one_batch()) as i64)
            .unwrap();
        assert_eq!(outcome.deleted_segments, [12]);
        assert!(!outcome.rolled);
        // A limit of zero takes everything, the active segment included.
        let outcome = log.apply_retention(0, -1, 0).unwrap();
        assert_eq!(outcome.deleted_segments, [18, 24, 30, 36]);
        assert!(outcome.rolled);
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (39, 39));
    }

    #[test]
    fn unlimited_retention_deletes_nothing() {
        let dir = TempDir::new().unwrap();
        let mut log = seven_segments(dir.path());
        let outcome = log.apply_retention(i64::MAX, -1, -1).unwrap();
        assert_eq!(outcome, RetentionOutcome::default());
        assert_eq!(log.segment_count(), 7);
    }

    #[test]
    fn a_segment_without_timestamps_is_judged_by_its_modification_time() {
        let dir = TempDir::new().unwrap();
        let one = encode_batch(1, 10, -1).len() as u64;
        let mut log = PartitionLog::open(dir.path(), small(one)).unwrap();
        for _ in 0..3 {
            // Timestamp -1: the encoder gives no record a timestamp.
            log.append(&encode_batch(1, 10, -1), 0).unwrap();
        }
        assert_eq!(log.segment_count(), 3);
        let now = log.segments[0].modified_ms().unwrap();
        assert_eq!(
            log.apply_retention(now, 60_000, -1)
                .unwrap()
                .deleted_segments,
            Vec::<i64>::new()
        );
        let outcome = log.apply_retention(now + 120_000, 60_000, -1).unwrap();
        assert_eq!(outcome.deleted_segments, [0, 1, 2]);
        assert!(outcome.rolled);
    }

    #[test]
    fn delete_records_moves_the_log_start_and_deletes_the_segments_below_it() {
        let dir = TempDir::new().unwrap();
        let mut log = seven_segments(dir.path());
        assert_eq!(log.delete_records_before(14).unwrap(), 14);
        // Segments 0 and 6 are wholly below 14; segment 12 holds it and stays.
        assert_eq!(log.segment_count(), 5);
        assert!(!segment_file(dir.path(), 6, "log").exists());
        assert!(matches!(
            log.read(13, 100),
            Err(ReadError::OffsetOutOfRange {
                offset: 13,
                log_start: 14,
                log_end: 39
            })
        ));
        // A read at the log start returns the whole batch holding it.
        let read = log.read(14, 0).unwrap();
        assert_eq!(read.log_start_offset, 14);
        assert_eq!(
            crate::log::BatchHeader::parse(&read.records)
                .unwrap()
                .base_offset,
            12
        );
        // Below the log start is a no-op that answers with the current low watermark.
        assert_eq!(log.delete_records_before(3).unwrap(), 14);
        drop(log);
        let mut log = PartitionLog::open(dir.path(), small(2 * one_batch())).unwrap();
        assert_eq!(log.log_start_offset(), 14);
        assert_eq!(log.segment_count(), 5);
        // Up to the log end leaves only the active segment, which is never deleted for it.
        assert_eq!(log.delete_records_before(39).unwrap(), 39);
        assert_eq!(log.segment_count(), 1);
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (39, 39));
        assert!(log.read(39, 100).unwrap().records.is_empty());
    }

    #[test]
    fn delete_records_refuses_offsets_outside_the_log() {
        let dir = TempDir::new().unwrap();
        let mut log = seven_segments(dir.path());
        for offset in [-1, 40, i64::MAX] {
            let error = log.delete_records_before(offset).unwrap_err();
            assert!(
                matches!(error, LogError::OffsetOutOfRange { offset: o, log_start: 0, log_end: 39 } if o == offset),
                "{error:?}"
            );
            assert_eq!(
                error.response_error(),
                kafka_protocol::ResponseError::OffsetOutOfRange
            );
        }
        assert_eq!(log.log_start_offset(), 0);
        assert_eq!(log.segment_count(), 7);
    }

    #[test]
    fn a_log_start_past_a_log_end_cut_by_recovery_starts_the_log_over_there() {
        let dir = TempDir::new().unwrap();
        let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        fill(&mut log, 4);
        log.delete_records_before(12).unwrap();
        drop(log);
        // A crash tore the last two batches off the active segment.
        let path = segment_file(dir.path(), 0, "log");
        let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(2 * one_batch() + 5).unwrap();

        let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (12, 12));
        assert_eq!(log.segment_count(), 1);
        assert!(!path.exists());
        assert_eq!(
            log.append(&encode_batch(1, 1, 0), 0).unwrap().base_offset,
            12
        );
    }

    #[test]
    fn a_segment_left_wholly_below_the_log_start_by_a_crash_is_deleted_on_open() {
        let dir = TempDir::new().unwrap();
        let log = seven_segments(dir.path());
        drop(log);
        // The checkpoint was written but the crash came before the segments were renamed.
        checkpoint::write(dir.path(), LOG_START_OFFSET_FILE, 13).unwrap();
        let log = PartitionLog::open(dir.path(), small(2 * one_batch())).unwrap();
        assert_eq!(log.log_start_offset(), 13);
        assert_eq!(log.segment_count(), 5);
        assert!(!segment_file(dir.path(), 6, "log").exists());
    }

    #[test]
    fn files_of_an_interrupted_deletion_are_removed_on_open() {
        let dir = TempDir::new().unwrap();
        let log = seven_segments(dir.path());
        // The crash came after the log of segment 0 was renamed, before its indexes were.
        let segment = &log.segments[0];
        let [log_path, ..] = segment.file_paths();
        fs::rename(log_path, deleted_path(log_path)).unwrap();
        drop(log);
        let log = PartitionLog::open(dir.path(), small(2 * one_batch())).unwrap();
        assert_eq!(log.log_start_offset(), 6);
        assert_eq!(log.segment_count(), 6);
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.starts_with("00000000000000000000."))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
