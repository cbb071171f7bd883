//! Producer state of one partition: for each producer id, its epoch and the last five batches
//! appended, so a retried batch is acknowledged without a second copy and a sequence gap or a
//! fenced epoch is refused; and the partition's transactions (KIP-98): the first offset of
//! each producer's open transaction, the transactions whose marker is not yet below the high
//! watermark (together they bound the last stable offset), and the aborted transactions a
//! `read_committed` fetch must be told of. Snapshotted beside the log, rebuilt from it.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::log::batch::BatchHeader;
use crate::log::control::{parse_marker, Marker};

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
    /// The offset of the first batch of the producer's open transaction here.
    #[serde(default)]
    txn_first_offset: Option<i64>,
    /// The epoch of the coordinator that wrote the producer's last marker here.
    #[serde(default)]
    coordinator_epoch: i32,
}

impl ProducerEntry {
    fn new(epoch: i16) -> ProducerEntry {
        ProducerEntry {
            epoch,
            batches: VecDeque::new(),
            txn_first_offset: None,
            coordinator_epoch: 0,
        }
    }
}

/// A transaction aborted in this partition: its data spans `first_offset..last_offset`, the
/// last being its marker. A `read_committed` consumer drops the producer's records in that
/// range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
}

/// A transaction whose marker is in the log but maybe not yet below the high watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct CompletedTxn {
    first_offset: i64,
    marker_offset: i64,
}

/// A producer's open transaction in this partition, for DescribeProducers and
/// DescribeTransactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerSummary {
    pub producer_id: i64,
    pub epoch: i16,
    pub last_sequence: i32,
    pub coordinator_epoch: i32,
    pub txn_first_offset: Option<i64>,
}

/// Why a transaction marker is refused.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum MarkerError {
    #[error("marker for producer {producer_id} has epoch {got}, older than its epoch {current}")]
    InvalidEpoch {
        producer_id: i64,
        current: i16,
        got: i16,
    },
    #[error("marker from coordinator epoch {got}, older than {current}")]
    CoordinatorFenced { current: i32, got: i32 },
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
    /// Aborted transactions by marker offset, oldest first.
    #[serde(default)]
    aborted: Vec<AbortedTxn>,
    /// Transactions ended by a marker that may not be below the high watermark yet.
    #[serde(default)]
    completed: Vec<CompletedTxn>,
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

    /// Checks the producer epoch of a batch the coordinator writes for a producer (the
    /// transactional offsets of TxnOffsetCommit carry no sequence): a zombie whose epoch is
    /// older than one this partition has seen is fenced, as its data batches would be.
    pub fn check_epoch(&self, header: &BatchHeader) -> Result<(), SequenceError> {
        match self.producers.get(&header.producer_id) {
            Some(entry) if header.producer_epoch < entry.epoch => {
                Err(SequenceError::InvalidEpoch {
                    producer_id: header.producer_id,
                    current: entry.epoch,
                    got: header.producer_epoch,
                })
            }
            _ => Ok(()),
        }
    }

    /// Remembers a batch appended at `base_offset`.
    pub fn record(&mut self, header: &BatchHeader, base_offset: i64) {
        let entry = self
            .producers
            .entry(header.producer_id)
            .or_insert_with(|| ProducerEntry::new(header.producer_epoch));
        if header.producer_epoch != entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        if header.is_transactional() && entry.txn_first_offset.is_none() {
            entry.txn_first_offset = Some(base_offset);
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

    /// Applies a batch read from the log (a follower's copy, or recovery): a producer's batch
    /// is recorded, a transaction marker ends the producer's transaction.
    pub fn replay(&mut self, header: &BatchHeader, batch: &[u8]) {
        if header.producer_id < 0 {
            return;
        }
        if header.is_control() {
            if let Some(marker) = parse_marker(header, batch) {
                self.end_transaction(
                    header.producer_id,
                    header.producer_epoch,
                    marker,
                    header.base_offset,
                );
            }
        } else {
            self.record(header, header.base_offset);
        }
    }

    /// Whether the producer has an open transaction here at `epoch`.
    pub fn in_transaction(&self, producer_id: i64, epoch: i16) -> bool {
        self.producers
            .get(&producer_id)
            .is_some_and(|e| e.epoch == epoch && e.txn_first_offset.is_some())
    }

    /// Checks a marker the coordinator wants written: its producer epoch and its own epoch
    /// may not be older than what this partition saw.
    pub fn check_marker(
        &self,
        producer_id: i64,
        epoch: i16,
        coordinator_epoch: i32,
    ) -> Result<(), MarkerError> {
        let Some(entry) = self.producers.get(&producer_id) else {
            return Ok(());
        };
        if epoch < entry.epoch {
            return Err(MarkerError::InvalidEpoch {
                producer_id,
                current: entry.epoch,
                got: epoch,
            });
        }
        if coordinator_epoch < entry.coordinator_epoch {
            return Err(MarkerError::CoordinatorFenced {
                current: entry.coordinator_epoch,
                got: coordinator_epoch,
            });
        }
        Ok(())
    }

    /// Ends the producer's open transaction with the marker written at `marker_offset`. A
    /// marker with a newer epoch (the coordinator fenced the producer) restarts its
    /// sequences.
    pub fn end_transaction(
        &mut self,
        producer_id: i64,
        epoch: i16,
        marker: Marker,
        marker_offset: i64,
    ) {
        let entry = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| ProducerEntry::new(epoch));
        if epoch != entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        entry.coordinator_epoch = entry.coordinator_epoch.max(marker.coordinator_epoch);
        if let Some(first_offset) = entry.txn_first_offset.take() {
            self.completed.push(CompletedTxn {
                first_offset,
                marker_offset,
            });
            if !marker.commit {
                self.aborted.push(AbortedTxn {
                    producer_id,
                    first_offset,
                    last_offset: marker_offset,
                });
            }
        }
    }

    /// The first offset a `read_committed` consumer may not read yet: the start of the
    /// oldest transaction that is open, or whose marker is not below `high_watermark`.
    pub fn first_unstable_offset(&self, high_watermark: i64) -> Option<i64> {
        let open = self.producers.values().filter_map(|e| e.txn_first_offset);
        let unreplicated = self
            .completed
            .iter()
            .filter(|t| t.marker_offset >= high_watermark)
            .map(|t| t.first_offset);
        open.chain(unreplicated).min()
    }

    /// Forgets completed transactions whose marker is below `high_watermark`.
    pub fn prune_completed(&mut self, high_watermark: i64) {
        self.completed.retain(|t| t.marker_offset >= high_watermark);
    }

    /// The aborted transactions a fetch of `from..to` must report: those whose range
    /// overlaps it.
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        self.aborted
            .iter()
            .filter(|t| t.last_offset >= from && t.first_offset < to)
            .copied()
            .collect()
    }

    /// Forgets aborted transactions that end before the log start.
    pub fn forget_before(&mut self, log_start_offset: i64) {
        self.aborted.retain(|t| t.last_offset >= log_start_offset);
    }

    /// Every producer with its state, for DescribeProducers.
    pub fn summaries(&self) -> Vec<ProducerSummary> {
        let mut out: Vec<ProducerSummary> = self
            .producers
            .iter()
            .map(|(&producer_id, e)| ProducerSummary {
                producer_id,
                epoch: e.epoch,
                last_sequence: e.batches.back().map_or(-1, |b| b.last_seq),
                coordinator_epoch: e.coordinator_epoch,
                txn_first_offset: e.txn_first_offset,
            })
            .collect();
        out.sort_by_key(|p| p.producer_id);
        out
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
    fn a_coordinator_batch_with_an_older_epoch_is_fenced_whatever_its_sequence() {
        let mut table = ProducerStateTable::default();
        assert_eq!(table.check_epoch(&transactional(7, 1, -1, 1)), Ok(()));
        table.record(&transactional(7, 2, -1, 1), 0);
        assert_eq!(
            table.check_epoch(&transactional(7, 1, -1, 1)),
            Err(SequenceError::InvalidEpoch {
                producer_id: 7,
                current: 2,
                got: 1
            })
        );
        assert_eq!(table.check_epoch(&transactional(7, 2, -1, 1)), Ok(()));
        assert_eq!(table.check_epoch(&transactional(7, 3, -1, 1)), Ok(()));
        table.end_transaction(7, 4, ABORT, 1);
        assert!(
            table.check_epoch(&transactional(7, 3, -1, 1)).is_err(),
            "a marker written for a bumped epoch fences the older one"
        );
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

    fn transactional(
        producer_id: i64,
        epoch: i16,
        base_sequence: i32,
        records: i32,
    ) -> BatchHeader {
        let mut h = header(producer_id, epoch, base_sequence, records);
        h.attributes |= 1 << 4;
        h
    }

    const COMMIT: Marker = Marker {
        commit: true,
        coordinator_epoch: 0,
    };
    const ABORT: Marker = Marker {
        commit: false,
        coordinator_epoch: 0,
    };

    #[test]
    fn open_transactions_hold_the_last_stable_offset_until_their_marker_is_replicated() {
        let mut table = ProducerStateTable::default();
        table.record(&transactional(1, 0, 0, 2), 10);
        table.record(&transactional(2, 0, 0, 1), 12);
        table.record(&transactional(1, 0, 2, 1), 13);
        assert_eq!(table.first_unstable_offset(14), Some(10));
        assert!(table.in_transaction(1, 0) && !table.in_transaction(1, 1));
        table.end_transaction(1, 0, COMMIT, 14);
        assert_eq!(
            table.first_unstable_offset(14),
            Some(10),
            "marker not replicated"
        );
        assert_eq!(table.first_unstable_offset(15), Some(12));
        table.end_transaction(2, 0, ABORT, 15);
        table.prune_completed(16);
        assert_eq!(table.first_unstable_offset(16), None);
        assert_eq!(
            table.aborted_between(0, 100),
            vec![AbortedTxn {
                producer_id: 2,
                first_offset: 12,
                last_offset: 15
            }]
        );
        assert!(table.aborted_between(16, 100).is_empty());
        assert!(table.aborted_between(0, 12).is_empty());
        table.forget_before(16);
        assert!(table.aborted_between(0, 100).is_empty());
    }

    #[test]
    fn markers_from_older_epochs_are_refused_and_a_newer_epoch_restarts_sequences() {
        let mut table = ProducerStateTable::default();
        table.record(&transactional(1, 3, 0, 1), 0);
        let fenced = Marker {
            commit: false,
            coordinator_epoch: 5,
        };
        assert!(table.check_marker(1, 2, 5).is_err());
        assert_eq!(table.check_marker(1, 4, 5), Ok(()));
        table.end_transaction(1, 4, fenced, 1);
        assert!(matches!(
            table.check_marker(1, 4, 4),
            Err(MarkerError::CoordinatorFenced { .. })
        ));
        assert_eq!(table.check(&transactional(1, 4, 0, 1)), Ok(Verdict::Append));
        assert!(table.check(&transactional(1, 3, 1, 1)).is_err());
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
