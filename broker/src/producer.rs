//! Idempotent producer state of one partition: for each producer id, its epoch and the last
//! five batches appended, so a retried batch is acknowledged without a second copy and a
//! sequence gap or a fenced epoch is refused. Snapshotted beside the log, rebuilt from it.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::log::batch::BatchHeader;

/// Batches remembered per producer: the most a producer has in flight
/// (`max.in.flight.requests.per.connection` <= 5 with idempotence).
pub const CACHED_BATCHES: usize = 5;

const SNAPSHOT_SUFFIX: &str = "producers";
const SNAPSHOTS_KEPT: usize = 2;

/// Where an appended batch sits in the log, by its sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMeta>,
}

/// What to do with an idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The next batch in sequence: append it.
    Append,
    /// A retry of a batch already in the log: answer with where it is.
    Duplicate(BatchMeta),
}

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum SequenceError {
    #[error("producer {producer_id} sent sequence {got}, expected {expected}")]
    OutOfOrder {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    #[error("producer {producer_id} epoch {got} is older than the current epoch {current}")]
    InvalidEpoch {
        producer_id: i64,
        current: i16,
        got: i16,
    },
}

/// The last sequence number of a batch; sequences wrap from `i32::MAX` to 0.
pub fn last_sequence(header: &BatchHeader) -> i32 {
    let last = i64::from(header.base_sequence) + i64::from(header.last_offset_delta);
    (last % (i64::from(i32::MAX) + 1)) as i32
}

fn next_sequence(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

/// Producer state of one partition.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerStateTable {
    producers: HashMap<i64, ProducerEntry>,
}

impl ProducerStateTable {
    /// Decides whether an idempotent batch (producer id >= 0) is appended, is a duplicate,
    /// or is refused.
    pub fn check(&self, header: &BatchHeader) -> Result<Verdict, SequenceError> {
        let first = header.base_sequence;
        let last = last_sequence(header);
        let out_of_order = |expected| SequenceError::OutOfOrder {
            producer_id: header.producer_id,
            expected,
            got: first,
        };
        let Some(entry) = self.producers.get(&header.producer_id) else {
            return if first == 0 {
                Ok(Verdict::Append)
            } else {
                Err(out_of_order(0))
            };
        };
        if header.producer_epoch < entry.epoch {
            return Err(SequenceError::InvalidEpoch {
                producer_id: header.producer_id,
                current: entry.epoch,
                got: header.producer_epoch,
            });
        }
        if header.producer_epoch > entry.epoch {
            return if first == 0 {
                Ok(Verdict::Append)
            } else {
                Err(out_of_order(0))
            };
        }
        if let Some(batch) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == first && b.last_seq == last)
        {
            return Ok(Verdict::Duplicate(*batch));
        }
        let expected = entry
            .batches
            .back()
            .map_or(0, |b| next_sequence(b.last_seq));
        if first == expected {
            Ok(Verdict::Append)
        } else {
            Err(out_of_order(expected))
        }
    }

    /// Remembers a batch appended at `base_offset`.
    pub fn record(&mut self, header: &BatchHeader, base_offset: i64) {
        let entry = self
            .producers
            .entry(header.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: header.producer_epoch,
                batches: VecDeque::new(),
            });
        if header.producer_epoch != entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(BatchMeta {
            first_seq: header.base_sequence,
            last_seq: last_sequence(header),
            base_offset,
            last_offset: base_offset + i64::from(header.last_offset_delta),
        });
        while entry.batches.len() > CACHED_BATCHES {
            entry.batches.pop_front();
        }
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Writes the state as of log offset `offset` to `dir/{offset:020}.producers`
    /// (through a temporary file and a rename) and removes older snapshots.
    pub fn write_snapshot(&self, dir: &Path, offset: i64) -> std::io::Result<()> {
        let path = dir.join(format!("{offset:020}.{SNAPSHOT_SUFFIX}"));
        let tmp = path.with_extension("producers.tmp");
        let bytes = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &path)?;
        let snapshots = list_snapshots(dir)?;
        for (_, old) in snapshots.iter().rev().skip(SNAPSHOTS_KEPT) {
            std::fs::remove_file(old)?;
        }
        Ok(())
    }

    /// Loads the newest snapshot at or below `log_end_offset`, returning the state and the
    /// offset it is valid at; snapshots beyond the log (after a truncation) are removed.
    pub fn load_snapshot(
        dir: &Path,
        log_end_offset: i64,
    ) -> std::io::Result<Option<(ProducerStateTable, i64)>> {
        for (offset, path) in list_snapshots(dir)?.into_iter().rev() {
            if offset > log_end_offset {
                std::fs::remove_file(&path)?;
                continue;
            }
            match std::fs::read(&path)
                .map(|bytes| serde_json::from_slice::<ProducerStateTable>(&bytes))
            {
                Ok(Ok(table)) => return Ok(Some((table, offset))),
                Ok(Err(e)) => {
                    tracing::warn!(snapshot = %path.display(), error = %e, "ignoring a corrupt producer snapshot");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

/// Removes every snapshot: the log they describe is gone (a follower restarting its log).
pub fn remove_snapshots(dir: &Path) -> std::io::Result<()> {
    for (_, path) in list_snapshots(dir)? {
        std::fs::remove_file(path)?;
    }
    Ok(())
}

fn list_snapshots(dir: &Path) -> std::io::Result<Vec<(i64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some(SNAPSHOT_SUFFIX) {
            continue;
        }
        if let Some(offset) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<i64>().ok())
        {
            found.push((offset, path));
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(producer_id: i64, epoch: i16, base_sequence: i32, records: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 49,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: records - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id,
            producer_epoch: epoch,
            base_sequence,
            records_count: records,
        }
    }

    #[test]
    fn batches_in_sequence_are_appended_and_a_retry_is_a_duplicate() {
        let mut table = ProducerStateTable::default();
        let first = header(7, 0, 0, 3);
        assert_eq!(table.check(&first), Ok(Verdict::Append));
        table.record(&first, 100);
        let second = header(7, 0, 3, 2);
        assert_eq!(table.check(&second), Ok(Verdict::Append));
        table.record(&second, 103);
        assert_eq!(
            table.check(&first),
            Ok(Verdict::Duplicate(BatchMeta {
                first_seq: 0,
                last_seq: 2,
                base_offset: 100,
                last_offset: 102
            }))
        );
    }

    #[test]
    fn a_gap_in_the_sequence_is_refused() {
        let mut table = ProducerStateTable::default();
        table.record(&header(7, 0, 0, 3), 0);
        assert_eq!(
            table.check(&header(7, 0, 5, 1)),
            Err(SequenceError::OutOfOrder {
                producer_id: 7,
                expected: 3,
                got: 5
            })
        );
        assert!(
            table.check(&header(8, 0, 4, 1)).is_err(),
            "a new producer starts at 0"
        );
    }

    #[test]
    fn an_older_epoch_is_fenced_and_a_newer_one_restarts_at_zero() {
        let mut table = ProducerStateTable::default();
        table.record(&header(7, 2, 0, 1), 0);
        assert!(matches!(
            table.check(&header(7, 1, 1, 1)),
            Err(SequenceError::InvalidEpoch { .. })
        ));
        assert_eq!(table.check(&header(7, 3, 0, 1)), Ok(Verdict::Append));
        assert!(table.check(&header(7, 3, 1, 1)).is_err());
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut table = ProducerStateTable::default();
        for i in 0..7 {
            table.record(&header(1, 0, i, 1), i64::from(i));
        }
        assert!(
            table.check(&header(1, 0, 1, 1)).is_err(),
            "too old to be known as a duplicate"
        );
        assert!(matches!(
            table.check(&header(1, 0, 2, 1)),
            Ok(Verdict::Duplicate(_))
        ));
    }

    #[test]
    fn sequences_wrap_after_the_largest_integer() {
        let mut table = ProducerStateTable::default();
        table.record(&header(1, 0, 0, 1), 0);
        let mut near_end = header(1, 0, i32::MAX - 1, 2);
        near_end.base_sequence = i32::MAX - 1;
        table
            .producers
            .get_mut(&1)
            .expect("present")
            .batches
            .back_mut()
            .expect("one")
            .last_seq = i32::MAX - 2;
        assert_eq!(table.check(&near_end), Ok(Verdict::Append));
        table.record(&near_end, 1);
        assert_eq!(table.check(&header(1, 0, 0, 1)), Ok(Verdict::Append));
    }

    #[test]
    fn snapshots_round_trip_and_later_ones_win() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut table = ProducerStateTable::default();
        table.record(&header(1, 0, 0, 1), 0);
        table.write_snapshot(dir.path(), 1).expect("write");
        table.record(&header(1, 0, 1, 1), 1);
        table.write_snapshot(dir.path(), 2).expect("write");
        table.write_snapshot(dir.path(), 3).expect("write");
        let (loaded, offset) = ProducerStateTable::load_snapshot(dir.path(), 2)
            .expect("read")
            .expect("found");
        assert_eq!(offset, 2);
        assert_eq!(loaded, table);
        assert_eq!(
            list_snapshots(dir.path()).expect("list").len(),
            1,
            "the one past the log end is removed"
        );
    }
}
