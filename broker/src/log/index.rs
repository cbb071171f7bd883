//! Sparse per-segment indexes: `.index` maps offsets to file positions and `.timeindex` maps
//! timestamps to offsets. Both are derived from the `.log` and rebuilt from it whenever they
//! are missing or doubtful, so they are written with plain buffered appends and synced only
//! when the log is.
//!
//! On-disk format, all integers big-endian, offsets relative to the segment's base offset:
//!
//! - `.index`: 8-byte entries `(relative_offset: u32, position: u32)`. An entry says the batch
//!   whose *base* offset is `base + relative_offset` starts at byte `position` of the `.log`.
//!   One entry is added per `index_interval_bytes` of log written (never for the first batch,
//!   which is at position 0 anyway). Both fields strictly increase.
//! - `.timeindex`: 12-byte entries `(timestamp: i64, relative_offset: u32)`. An entry says
//!   that every batch of the segment up to and including the one with base offset
//!   `base + relative_offset` has a max timestamp of at most `timestamp`, and that this batch
//!   reached it. Entries are added alongside `.index` entries when the max timestamp grew,
//!   and once more when the segment stops being active, so the last entry of an inactive
//!   segment holds the segment's largest timestamp. Both fields strictly increase.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::error::{IoError, IoResultExt};

/// Bytes per `.index` entry.
pub(crate) const OFFSET_ENTRY_SIZE: usize = 8;
/// Bytes per `.timeindex` entry.
pub(crate) const TIME_ENTRY_SIZE: usize = 12;
/// Kafka's "no timestamp"; the max timestamp of a segment before anything raised it.
pub(crate) const NO_TIMESTAMP: i64 = -1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub(crate) relative_offset: u32,
    pub(crate) position: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub(crate) timestamp: i64,
    pub(crate) relative_offset: u32,
}

/// Both indexes of one segment, held in memory; the files mirror them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SegmentIndex {
    pub(crate) offsets: Vec<OffsetEntry>,
    pub(crate) times: Vec<TimeEntry>,
}

impl SegmentIndex {
    /// A log position at or before the batch holding `relative_offset`.
    pub(crate) fn position_for(&self, relative_offset: u32) -> u32 {
        let after = self
            .offsets
            .partition_point(|e| e.relative_offset <= relative_offset);
        after.checked_sub(1).map_or(0, |i| self.offsets[i].position)
    }

    /// The last entry whose timestamp is below `timestamp`: every batch up to the one it
    /// names is too old, so a search for `timestamp` may start there.
    pub(crate) fn time_floor(&self, timestamp: i64) -> Option<TimeEntry> {
        let after = self.times.partition_point(|e| e.timestamp < timestamp);
        after.checked_sub(1).map(|i| self.times[i])
    }

    /// Decodes both files' contents, checking entry sizes and that entries increase.
    pub(crate) fn decode(offset_bytes: &[u8], time_bytes: &[u8]) -> Result<Self, String> {
        if offset_bytes.len() % OFFSET_ENTRY_SIZE != 0 {
            return Err(format!(
                "offset index of {} bytes is not a whole number of {OFFSET_ENTRY_SIZE}-byte entries",
                offset_bytes.len()
            ));
        }
        if time_bytes.len() % TIME_ENTRY_SIZE != 0 {
            return Err(format!(
                "time index of {} bytes is not a whole number of {TIME_ENTRY_SIZE}-byte entries",
                time_bytes.len()
            ));
        }
        let offsets: Vec<OffsetEntry> = offset_bytes
            .chunks_exact(OFFSET_ENTRY_SIZE)
            .map(decode_offset_entry)
            .collect();
        let times: Vec<TimeEntry> = time_bytes
            .chunks_exact(TIME_ENTRY_SIZE)
            .map(decode_time_entry)
            .collect();
        if let Some(i) = offsets.windows(2).position(|w| {
            w[0].relative_offset >= w[1].relative_offset || w[0].position >= w[1].position
        }) {
            return Err(format!("offset index entry {} does not increase", i + 1));
        }
        if let Some(i) = times.windows(2).position(|w| {
            w[0].timestamp >= w[1].timestamp || w[0].relative_offset >= w[1].relative_offset
        }) {
            return Err(format!("time index entry {} does not increase", i + 1));
        }
        Ok(SegmentIndex { offsets, times })
    }

    /// Checks that the last entries point inside the segment: a position below `log_size`
    /// and offsets below `relative_end` (the segment's end offset minus its base).
    pub(crate) fn check_bounds(&self, log_size: u64, relative_end: i64) -> Result<(), String> {
        check_last_entries(
            self.offsets.last().copied(),
            self.times.last().copied(),
            log_size,
            relative_end,
        )
    }

    pub(crate) fn encode_offsets(&self) -> Vec<u8> {
        self.offsets
            .iter()
            .flat_map(|e| encode_offset_entry(*e))
            .collect()
    }

    pub(crate) fn encode_times(&self) -> Vec<u8> {
        self.times
            .iter()
            .flat_map(|e| encode_time_entry(*e))
            .collect()
    }
}

pub(crate) fn check_last_entries(
    offset: Option<OffsetEntry>,
    time: Option<TimeEntry>,
    log_size: u64,
    relative_end: i64,
) -> Result<(), String> {
    if let Some(e) = offset {
        if u64::from(e.position) >= log_size {
            return Err(format!(
                "offset index points at position {} of a {log_size}-byte log",
                e.position
            ));
        }
        if i64::from(e.relative_offset) >= relative_end {
            return Err(format!(
                "offset index names relative offset {} past the segment's end {relative_end}",
                e.relative_offset
            ));
        }
    }
    if let Some(e) = time {
        if log_size == 0 {
            return Err("time index has entries for an empty log".to_owned());
        }
        if i64::from(e.relative_offset) >= relative_end {
            return Err(format!(
                "time index names relative offset {} past the segment's end {relative_end}",
                e.relative_offset
            ));
        }
    }
    Ok(())
}

pub(crate) fn decode_offset_entry(b: &[u8]) -> OffsetEntry {
    OffsetEntry {
        relative_offset: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        position: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
    }
}

pub(crate) fn decode_time_entry(b: &[u8]) -> TimeEntry {
    TimeEntry {
        timestamp: i64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        relative_offset: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
    }
}

fn encode_offset_entry(e: OffsetEntry) -> [u8; OFFSET_ENTRY_SIZE] {
    let mut out = [0; OFFSET_ENTRY_SIZE];
    out[..4].copy_from_slice(&e.relative_offset.to_be_bytes());
    out[4..].copy_from_slice(&e.position.to_be_bytes());
    out
}

fn encode_time_entry(e: TimeEntry) -> [u8; TIME_ENTRY_SIZE] {
    let mut out = [0; TIME_ENTRY_SIZE];
    out[..8].copy_from_slice(&e.timestamp.to_be_bytes());
    out[8..].copy_from_slice(&e.relative_offset.to_be_bytes());
    out
}

/// Entries one appended batch added to the indexes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct NewEntries {
    pub(crate) offset: Option<OffsetEntry>,
    pub(crate) time: Option<TimeEntry>,
}

/// Decides which entries to add as batches are appended. The same rules run on live appends
/// and on rebuilds, so a rebuilt index equals the one written live (given the same interval).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexBuilder {
    interval: u64,
    bytes_since_entry: u64,
    max_timestamp: i64,
    relative_offset_of_max: u32,
}

impl IndexBuilder {
    pub(crate) fn new(interval_bytes: u32) -> Self {
        IndexBuilder {
            interval: u64::from(interval_bytes),
            bytes_since_entry: 0,
            max_timestamp: NO_TIMESTAMP,
            relative_offset_of_max: 0,
        }
    }

    /// Picks up where an index written earlier left off, for a segment of `log_size` bytes.
    /// Exact when the time index was sealed (clean shutdown) or rebuilt.
    pub(crate) fn resume(interval_bytes: u32, index: &SegmentIndex, log_size: u64) -> Self {
        let last_position = index.offsets.last().map_or(0, |e| u64::from(e.position));
        let (max_timestamp, relative_offset_of_max) = index
            .times
            .last()
            .map_or((NO_TIMESTAMP, 0), |e| (e.timestamp, e.relative_offset));
        IndexBuilder {
            interval: u64::from(interval_bytes),
            bytes_since_entry: log_size.saturating_sub(last_position),
            max_timestamp,
            relative_offset_of_max,
        }
    }

    /// Records a batch appended at `position`, adding index entries to `index` when due.
    pub(crate) fn observe(
        &mut self,
        index: &mut SegmentIndex,
        relative_offset: u32,
        position: u32,
        size: u32,
        max_timestamp: i64,
    ) -> NewEntries {
        if max_timestamp > self.max_timestamp {
            self.max_timestamp = max_timestamp;
            self.relative_offset_of_max = relative_offset;
        }
        let mut added = NewEntries::default();
        if self.bytes_since_entry >= self.interval && self.bytes_since_entry > 0 {
            let entry = OffsetEntry {
                relative_offset,
                position,
            };
            index.offsets.push(entry);
            added.offset = Some(entry);
            added.time = self.push_time_entry(index);
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += u64::from(size);
        added
    }

    /// The final time entry of a segment that stops being active, so its largest timestamp
    /// can be read from the file's last entry.
    pub(crate) fn seal(&self, index: &mut SegmentIndex) -> Option<TimeEntry> {
        self.push_time_entry(index)
    }

    fn push_time_entry(&self, index: &mut SegmentIndex) -> Option<TimeEntry> {
        let indexed = index.times.last().map_or(NO_TIMESTAMP, |e| e.timestamp);
        (self.max_timestamp > indexed).then(|| {
            let entry = TimeEntry {
                timestamp: self.max_timestamp,
                relative_offset: self.relative_offset_of_max,
            };
            index.times.push(entry);
            entry
        })
    }

    /// The largest timestamp seen so far and the relative offset of the batch that has it.
    pub(crate) fn max_timestamp(&self) -> (i64, u32) {
        (self.max_timestamp, self.relative_offset_of_max)
    }

    /// Takes into account a batch already in the log and in the index, whose timestamp the
    /// builder may not know yet (after a truncation, batches past the last index entry).
    pub(crate) fn raise_max(&mut self, relative_offset: u32, max_timestamp: i64) {
        if max_timestamp > self.max_timestamp {
            self.max_timestamp = max_timestamp;
            self.relative_offset_of_max = relative_offset;
        }
    }
}

/// The two index files of the active segment, open for appending.
#[derive(Debug)]
pub(crate) struct IndexFiles {
    offset_path: PathBuf,
    time_path: PathBuf,
    offsets: BufWriter<File>,
    times: BufWriter<File>,
    /// A write failed, so the files may not match memory; rewritten on the next sync. The
    /// log itself is intact, so an append must not fail for a derived file.
    stale: bool,
}

impl IndexFiles {
    /// Replaces both files with `index`'s entries and opens them for appending.
    pub(crate) fn rewrite(
        offset_path: &Path,
        time_path: &Path,
        index: &SegmentIndex,
    ) -> Result<Self, IoError> {
        replace_file(offset_path, &index.encode_offsets())?;
        replace_file(time_path, &index.encode_times())?;
        Self::open(offset_path, time_path)
    }

    /// Opens files that already match memory, for appending.
    pub(crate) fn open(offset_path: &Path, time_path: &Path) -> Result<Self, IoError> {
        Ok(IndexFiles {
            offset_path: offset_path.to_path_buf(),
            time_path: time_path.to_path_buf(),
            offsets: BufWriter::new(open_append(offset_path)?),
            times: BufWriter::new(open_append(time_path)?),
            stale: false,
        })
    }

    pub(crate) fn append(&mut self, entries: NewEntries) {
        if self.stale {
            return;
        }
        let mut result = Ok(());
        if let Some(e) = entries.offset {
            result = self.offsets.write_all(&encode_offset_entry(e));
        }
        if let (Ok(()), Some(e)) = (&result, entries.time) {
            result = self.times.write_all(&encode_time_entry(e));
        }
        if let Err(error) = result {
            tracing::warn!(
                index = %self.offset_path.display(),
                %error,
                "cannot append to segment index; it will be rewritten on the next flush"
            );
            self.stale = true;
        }
    }

    /// Makes the files durable and equal to `index`.
    pub(crate) fn sync(&mut self, index: &SegmentIndex) -> Result<(), IoError> {
        if !self.stale {
            let flushed = self
                .offsets
                .flush()
                .and_then(|()| self.offsets.get_ref().sync_data())
                .and_then(|()| self.times.flush())
                .and_then(|()| self.times.get_ref().sync_data());
            match flushed {
                Ok(()) => return Ok(()),
                Err(error) => {
                    tracing::warn!(
                        index = %self.offset_path.display(),
                        %error,
                        "cannot flush segment index; rewriting it"
                    );
                }
            }
        }
        // The old handles refer to the files this replaces, so whatever they still buffer
        // goes nowhere when they drop.
        *self = Self::rewrite(&self.offset_path, &self.time_path, index)?;
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<File, IoError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .at("open index", path)
}

/// Atomically replaces `path` with `contents`, durably: a rebuilt index must not come back
/// empty after a crash, since an inactive segment's largest timestamp is read from it.
fn replace_file(path: &Path, contents: &[u8]) -> Result<(), IoError> {
    let tmp = tmp_path(path);
    let mut file = File::create(&tmp).at("create index", &tmp)?;
    file.write_all(contents).at("write index", &tmp)?;
    file.sync_all().at("sync index", &tmp)?;
    fs::rename(&tmp, path).at("replace index", path)?;
    Ok(())
}

/// Where an index is written before it replaces the real one; leftovers are removed on open.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(TMP_SUFFIX);
    PathBuf::from(name)
}

pub(crate) const TMP_SUFFIX: &str = ".tmp";

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn offsets(entries: &[(u32, u32)]) -> SegmentIndex {
        SegmentIndex {
            offsets: entries
                .iter()
                .map(|&(relative_offset, position)| OffsetEntry {
                    relative_offset,
                    position,
                })
                .collect(),
            times: Vec::new(),
        }
    }

    #[test]
    fn position_lookup_returns_the_entry_at_or_below_the_offset() {
        let index = offsets(&[(10, 4100), (20, 8300)]);
        assert_eq!(index.position_for(0), 0);
        assert_eq!(index.position_for(9), 0);
        assert_eq!(index.position_for(10), 4100);
        assert_eq!(index.position_for(19), 4100);
        assert_eq!(index.position_for(25), 8300);
    }

    #[test]
    fn time_floor_is_the_last_entry_strictly_older_than_the_target() {
        let index = SegmentIndex {
            offsets: Vec::new(),
            times: vec![
                TimeEntry {
                    timestamp: 100,
                    relative_offset: 3,
                },
                TimeEntry {
                    timestamp: 200,
                    relative_offset: 9,
                },
            ],
        };
        assert_eq!(index.time_floor(100), None);
        assert_eq!(index.time_floor(101).map(|e| e.relative_offset), Some(3));
        assert_eq!(index.time_floor(200).map(|e| e.relative_offset), Some(3));
        assert_eq!(index.time_floor(201).map(|e| e.relative_offset), Some(9));
    }

    #[test]
    fn encoded_indexes_decode_to_the_same_entries() {
        let mut index = offsets(&[(1, 100), (7, 5000)]);
        index.times.push(TimeEntry {
            timestamp: 42,
            relative_offset: 7,
        });
        let decoded = SegmentIndex::decode(&index.encode_offsets(), &index.encode_times());
        assert_eq!(decoded, Ok(index));
    }

    #[test]
    fn decoding_refuses_partial_entries_and_decreasing_entries() {
        let index = offsets(&[(5, 100), (3, 200)]);
        assert!(SegmentIndex::decode(&index.encode_offsets(), &[]).is_err());
        assert!(SegmentIndex::decode(&[0; 9], &[]).is_err());
        assert!(SegmentIndex::decode(&[], &[0; 13]).is_err());
    }

    #[test]
    fn bounds_check_catches_entries_past_the_log() {
        let index = offsets(&[(5, 100)]);
        assert!(index.check_bounds(101, 6).is_ok());
        assert!(index.check_bounds(100, 6).is_err());
        assert!(index.check_bounds(101, 5).is_err());
    }

    #[test]
    fn builder_adds_an_entry_once_per_interval_and_time_entries_only_when_time_grows() {
        let mut builder = IndexBuilder::new(100);
        let mut index = SegmentIndex::default();
        // Batches of 60 bytes, one offset each.
        let timestamps = [5, 3, 9, 9, 9, 2];
        for (i, ts) in timestamps.into_iter().enumerate() {
            let i = i as u32;
            builder.observe(&mut index, i, i * 60, 60, ts);
        }
        // Entries before batches 2 (120 bytes since start) and 4 (120 since batch 2).
        assert_eq!(index.offsets, offsets(&[(2, 120), (4, 240)]).offsets);
        assert_eq!(
            index.times,
            vec![TimeEntry {
                timestamp: 9,
                relative_offset: 2
            }]
        );
        assert_eq!(builder.seal(&mut index), None);
        assert_eq!(builder.max_timestamp(), (9, 2));
    }

    #[test]
    fn sealing_records_a_max_timestamp_reached_after_the_last_entry() {
        let mut builder = IndexBuilder::new(1_000);
        let mut index = SegmentIndex::default();
        builder.observe(&mut index, 0, 0, 60, 10);
        builder.observe(&mut index, 1, 60, 60, 30);
        assert!(index.times.is_empty());
        assert_eq!(
            builder.seal(&mut index),
            Some(TimeEntry {
                timestamp: 30,
                relative_offset: 1
            })
        );
    }

    #[test]
    fn a_resumed_builder_continues_like_the_original() {
        let mut original = IndexBuilder::new(100);
        let mut index = SegmentIndex::default();
        for i in 0..5u32 {
            original.observe(&mut index, i, i * 70, 70, i64::from(i));
        }
        original.seal(&mut index);
        let resumed = IndexBuilder::resume(100, &index, 5 * 70);
        assert_eq!(resumed, original);
    }

    #[test]
    fn rewritten_files_hold_exactly_the_entries_in_memory() {
        let dir = tempfile::TempDir::new().unwrap();
        let (o, t) = (dir.path().join("0.index"), dir.path().join("0.timeindex"));
        std::fs::write(&o, [0xff; 3]).unwrap();
        let mut index = offsets(&[(2, 120)]);
        let mut files = IndexFiles::rewrite(&o, &t, &index).unwrap();
        let entry = OffsetEntry {
            relative_offset: 4,
            position: 240,
        };
        index.offsets.push(entry);
        files.append(NewEntries {
            offset: Some(entry),
            time: None,
        });
        files.sync(&index).unwrap();
        let decoded =
            SegmentIndex::decode(&std::fs::read(&o).unwrap(), &std::fs::read(&t).unwrap());
        assert_eq!(decoded, Ok(index));
        assert!(!tmp_path(&o).exists());
    }
}
