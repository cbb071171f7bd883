//! One segment of a partition log: a `.log` file of record batches and its two sparse
//! indexes, all named by the segment's base offset (`{:020}.log`, `.index`, `.timeindex`).
//!
//! The `.log` is a plain concatenation of `RecordBatch` v2 (see [`super::batch`]); its size is
//! the number of bytes of whole batches, nothing else. The indexes are described in
//! [`super::index`]. Only the newest segment, the [`ActiveSegment`], is written to; an
//! older [`Segment`] is immutable and was made durable when it stopped being active, which
//! is why recovery after a crash only needs to look at the active one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kafka_protocol::records::{RecordBatchDecoder, TimestampType};

use super::batch::{
    self, BatchHeader, CountRule, ProducedBatch, HEADER_SIZE, LOG_OVERHEAD, MIN_BATCH_LENGTH,
};
use super::error::{IoError, IoResultExt, ReadError};
use super::index::{
    self, IndexBuilder, IndexFiles, NewEntries, OffsetEntry, SegmentIndex, TimeEntry, NO_TIMESTAMP,
    OFFSET_ENTRY_SIZE, TIME_ENTRY_SIZE,
};
use super::TimestampOffset;

pub(crate) const LOG_EXTENSION: &str = "log";
pub(crate) const INDEX_EXTENSION: &str = "index";
pub(crate) const TIME_INDEX_EXTENSION: &str = "timeindex";

/// Index entries hold positions and relative offsets as u32, so a segment ends before 4 GiB
/// and before 2^32 offsets past its base, whatever `segment_bytes` says.
pub(crate) const MAX_SEGMENT_BYTES: u64 = u32::MAX as u64;
pub(crate) const MAX_RELATIVE_OFFSET: i64 = u32::MAX as i64;

const LAST_ENTRY_MISMATCH: &str =
    "the last offset index entry does not point at a batch with the offset it names";

/// Read-ahead when scanning batch headers to serve a fetch: a little more than the default
/// index interval, so one read usually covers the scan.
const READ_CHUNK: usize = 16 * 1024;
/// Read-ahead when scanning a whole segment to recover it or rebuild its indexes.
const SCAN_CHUNK: usize = 256 * 1024;

/// Source of [`Segment::id`]s: unique within the process, so a segment that was replaced by
/// another with the same base offset (by compaction, say) is never mistaken for it.
static NEXT_SEGMENT_ID: AtomicU64 = AtomicU64::new(1);

fn next_segment_id() -> u64 {
    NEXT_SEGMENT_ID.fetch_add(1, Ordering::Relaxed)
}

/// `{base:020}.{extension}`: zero padding makes names sort like offsets.
pub(crate) fn file_name(base_offset: i64, extension: &str) -> String {
    format!("{base_offset:020}.{extension}")
}

/// The base offset and extension of a segment file name (`00000000000000000042.log`).
pub(crate) fn parse_file_name(name: &str) -> Option<(i64, &str)> {
    let (stem, extension) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, extension))
}

#[derive(Debug, Clone)]
struct Paths {
    log: PathBuf,
    offset_index: PathBuf,
    time_index: PathBuf,
}

impl Paths {
    fn new(dir: &Path, base_offset: i64) -> Self {
        Paths {
            log: dir.join(file_name(base_offset, LOG_EXTENSION)),
            offset_index: dir.join(file_name(base_offset, INDEX_EXTENSION)),
            time_index: dir.join(file_name(base_offset, TIME_INDEX_EXTENSION)),
        }
    }
}

/// A segment's log file and what is known about it. On its own, a segment no longer
/// written to; the active segment wraps one.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Identifies this segment object for as long as the process runs; see
    /// [`next_segment_id`].
    id: u64,
    base_offset: i64,
    paths: Paths,
    log: File,
    /// Bytes of whole batches in the `.log`; reads never look past it.
    size: u64,
    /// The offset after the last batch for the active segment; for an older one, the next
    /// segment's base offset, which bounds it.
    end_offset: i64,
    /// The largest batch max timestamp and the base offset of the first batch reaching it.
    max_timestamp: i64,
    offset_of_max_timestamp: i64,
    /// Loaded on first use: a large partition has many segments nobody reads.
    index: OnceLock<SegmentIndex>,
    index_interval_bytes: u32,
}

/// The newest segment, the only one appended to. Its indexes stay in memory and in files
/// open for appending.
#[derive(Debug)]
pub(crate) struct ActiveSegment {
    segment: Segment,
    index: SegmentIndex,
    builder: IndexBuilder,
    files: IndexFiles,
    /// Wall-clock time of the first append, which `segment_ms` counts from.
    rolling_since: Option<SystemTime>,
}

/// A batch that does not parse, found while scanning a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fault {
    position: u64,
    reason: String,
}

impl Segment {
    /// Opens a segment that is no longer active. `next_base_offset` is the base offset of
    /// the segment after it.
    pub(crate) fn open(
        dir: &Path,
        base_offset: i64,
        next_base_offset: i64,
        index_interval_bytes: u32,
    ) -> Result<Segment, IoError> {
        let paths = Paths::new(dir, base_offset);
        let log = open_log(&paths.log)?;
        let size = log.metadata().at("inspect segment", &paths.log)?.len();
        let mut segment = Segment {
            id: next_segment_id(),
            base_offset,
            paths,
            log,
            size,
            end_offset: next_base_offset,
            max_timestamp: NO_TIMESTAMP,
            offset_of_max_timestamp: base_offset,
            index: OnceLock::new(),
            index_interval_bytes,
        };
        // Only the last entries are checked here so that opening a partition does not read
        // every index; the rest is checked when an index is first loaded.
        match segment.probe_indexes()? {
            Ok(last_time) => {
                if let Some(entry) = last_time {
                    segment.max_timestamp = entry.timestamp;
                    segment.offset_of_max_timestamp =
                        base_offset + i64::from(entry.relative_offset);
                }
            }
            Err(reason) => {
                tracing::warn!(
                    segment = %segment.paths.log.display(),
                    %reason,
                    "segment index is missing or inconsistent; rebuilding it from the log"
                );
                let index = segment.rebuild_index()?;
                IndexFiles::rewrite(
                    &segment.paths.offset_index,
                    &segment.paths.time_index,
                    &index,
                )?;
                segment.set_index(index);
            }
        }
        Ok(segment)
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn base_offset(&self) -> i64 {
        self.base_offset
    }

    /// The base offset of the segment after this one (for an inactive segment).
    pub(crate) fn end_offset(&self) -> i64 {
        self.end_offset
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.paths.log
    }

    /// The segment's `.log`, `.index` and `.timeindex`, the log first.
    pub(crate) fn file_paths(&self) -> [&Path; 3] {
        [
            &self.paths.log,
            &self.paths.offset_index,
            &self.paths.time_index,
        ]
    }

    /// Another handle on the `.log`, for reading it without borrowing the segment: it keeps
    /// working after the file is renamed or removed.
    pub(crate) fn clone_log(&self) -> Result<File, IoError> {
        self.log
            .try_clone()
            .at("duplicate segment handle", &self.paths.log)
    }

    /// When the `.log` was last written, in milliseconds since the epoch.
    pub(crate) fn modified_ms(&self) -> Result<i64, IoError> {
        let modified = self
            .log
            .metadata()
            .and_then(|m| m.modified())
            .at("inspect segment", &self.paths.log)?;
        // A clock before 1970 counts as the epoch: the segment is then simply very old.
        let since_epoch = modified.duration_since(UNIX_EPOCH).unwrap_or_default();
        Ok(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
    }

    /// `(timestamp, offset)` of the largest timestamp in the segment.
    pub(crate) fn max_timestamp(&self) -> (i64, i64) {
        (self.max_timestamp, self.offset_of_max_timestamp)
    }

    fn set_index(&mut self, index: SegmentIndex) {
        if let Some((timestamp, offset)) = index
            .times
            .last()
            .map(|e| (e.timestamp, self.base_offset + i64::from(e.relative_offset)))
        {
            self.max_timestamp = timestamp;
            self.offset_of_max_timestamp = offset;
        }
        self.index = OnceLock::from(index);
    }

    /// Cheap consistency check of the index files: sizes and last entries. The outer result
    /// is an I/O failure; the inner one says why the files cannot be trusted, or gives the
    /// last time index entry.
    fn probe_indexes(&self) -> Result<Result<Option<TimeEntry>, String>, IoError> {
        let last_offset = match last_entry(&self.paths.offset_index, OFFSET_ENTRY_SIZE)? {
            Probe::Last(entry) => entry.as_deref().map(index::decode_offset_entry),
            Probe::Unusable(reason) => return Ok(Err(reason)),
        };
        let last_time = match last_entry(&self.paths.time_index, TIME_ENTRY_SIZE)? {
            Probe::Last(entry) => entry.as_deref().map(index::decode_time_entry),
            Probe::Unusable(reason) => return Ok(Err(reason)),
        };
        if let Err(reason) = index::check_last_entries(
            last_offset,
            last_time,
            self.size,
            self.end_offset - self.base_offset,
        ) {
            return Ok(Err(reason));
        }
        if let Some(entry) = last_offset {
            if !self.entry_matches(entry)? {
                return Ok(Err(LAST_ENTRY_MISMATCH.to_owned()));
            }
        }
        Ok(Ok(last_time))
    }

    /// Whether the batch at `entry`'s position has the offset the entry names. Checked for
    /// the last entry only: it catches an index that belongs to other contents at the cost
    /// of one small read.
    fn entry_matches(&self, entry: OffsetEntry) -> Result<bool, IoError> {
        let position = u64::from(entry.position);
        if position + HEADER_SIZE as u64 > self.size {
            return Ok(false);
        }
        let mut header = [0; HEADER_SIZE];
        self.log
            .read_exact_at(&mut header, position)
            .at("read segment", &self.paths.log)?;
        // An index from a damaged file can name an offset past the largest one.
        let Some(expected) = self
            .base_offset
            .checked_add(i64::from(entry.relative_offset))
        else {
            return Ok(false);
        };
        Ok(BatchHeader::parse(&header).is_some_and(|h| h.base_offset == expected))
    }

    /// The segment's index, loading it on first use. An index file that turns out to be
    /// inconsistent is replaced by one rebuilt in memory.
    fn index(&self) -> Result<&SegmentIndex, IoError> {
        if let Some(index) = self.index.get() {
            return Ok(index);
        }
        let loaded = self.load_index()?;
        // A concurrent reader may have won the race; both loaded the same thing.
        Ok(self.index.get_or_init(|| loaded))
    }

    fn load_index(&self) -> Result<SegmentIndex, IoError> {
        let offsets = read_if_exists(&self.paths.offset_index)?;
        let times = read_if_exists(&self.paths.time_index)?;
        let mut decoded = match (offsets, times) {
            (Some(offsets), Some(times)) => SegmentIndex::decode(&offsets, &times).and_then(|i| {
                i.check_bounds(self.size, self.end_offset - self.base_offset)
                    .map(|()| i)
            }),
            _ => Err("index file disappeared".to_owned()),
        };
        if let Ok(Some(&entry)) = decoded.as_ref().map(|i| i.offsets.last()) {
            if !self.entry_matches(entry)? {
                decoded = Err(LAST_ENTRY_MISMATCH.to_owned());
            }
        }
        match decoded {
            Ok(index) => Ok(index),
            Err(reason) => {
                tracing::warn!(
                    segment = %self.paths.log.display(),
                    %reason,
                    "segment index is inconsistent; serving reads from an index rebuilt in memory"
                );
                self.rebuild_index()
            }
        }
    }

    /// Rebuilds the indexes of this (inactive) segment by scanning batch headers.
    fn rebuild_index(&self) -> Result<SegmentIndex, IoError> {
        let scan = scan(
            &self.log,
            &self.paths.log,
            self.base_offset,
            self.size,
            self.index_interval_bytes,
            Verify::Framing,
        )?;
        if let Some(fault) = &scan.fault {
            // Older segments are never truncated: the offsets after them are already taken.
            tracing::error!(
                segment = %self.paths.log.display(),
                position = fault.position,
                reason = %fault.reason,
                "inactive segment is corrupt; its index covers only the batches before the damage"
            );
        }
        let mut index = scan.index;
        scan.builder.seal(&mut index);
        Ok(index)
    }

    /// Whole batches from the first one holding `offset` (or the first after it), at least
    /// one batch and otherwise at most `max_bytes`. `None` when no batch of this segment
    /// ends at or after `offset`.
    pub(crate) fn read(&self, offset: i64, max_bytes: usize) -> Result<Option<Bytes>, ReadError> {
        self.read_with(self.index()?, offset, max_bytes)
    }

    fn read_with(
        &self,
        index: &SegmentIndex,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Option<Bytes>, ReadError> {
        let start = index.position_for(self.relative(offset));
        let found = self.find(u64::from(start), |h| h.last_offset() >= offset)?;
        let Some((position, first)) = found else {
            return Ok(None);
        };
        let first_size = first.size();
        let available = usize::try_from(self.size - position).unwrap_or(usize::MAX);
        // KIP-74: the first batch is returned whole even when it exceeds max_bytes, so a
        // consumer can always make progress.
        let len = first_size.max(max_bytes.min(available));
        let mut buf = read_at(&self.log, position, len).at("read segment", &self.paths.log)?;
        let end = whole_batches(&buf, first_size);
        buf.truncate(end);
        Ok(Some(Bytes::from(buf)))
    }

    /// The first record at or after `from` whose timestamp is at least `timestamp`; see
    /// [`super::PartitionLog::offset_for_timestamp`].
    pub(crate) fn find_timestamp(
        &self,
        timestamp: i64,
        from: i64,
    ) -> Result<Option<TimestampOffset>, ReadError> {
        self.find_timestamp_with(self.index()?, timestamp, from)
    }

    /// Starts at the time index's last entry before `timestamp` and walks batch headers to
    /// the first batch whose max timestamp reaches it, then looks at that batch's records,
    /// as Kafka's `FileRecords.searchForTimestamp` does. A batch whose records all lie before
    /// `from` (or that has none left after compaction) passes the search on to the next.
    fn find_timestamp_with(
        &self,
        index: &SegmentIndex,
        timestamp: i64,
        from: i64,
    ) -> Result<Option<TimestampOffset>, ReadError> {
        let mut start = index
            .time_floor(timestamp)
            .map_or(0, |e| u64::from(index.position_for(e.relative_offset)));
        while let Some((position, header)) = self.find(start, |h| {
            h.max_timestamp >= timestamp && h.last_offset() >= from
        })? {
            if let Some(hit) = self.record_at_or_after(position, &header, timestamp, from)? {
                return Ok(Some(hit));
            }
            start = position + header.size() as u64;
        }
        Ok(None)
    }

    /// The first record of the batch at `position` that is at or after offset `from` with a
    /// timestamp of at least `timestamp`. The records of a `LogAppendTime` batch all carry
    /// the batch's max timestamp, as Kafka's record iterator reports them.
    fn record_at_or_after(
        &self,
        position: u64,
        header: &BatchHeader,
        timestamp: i64,
        from: i64,
    ) -> Result<Option<TimestampOffset>, ReadError> {
        let bytes =
            read_at(&self.log, position, header.size()).at("read segment", &self.paths.log)?;
        let set = RecordBatchDecoder::decode(&mut Bytes::from(bytes)).map_err(|e| {
            ReadError::Corrupt {
                path: self.paths.log.clone(),
                position,
                reason: format!("cannot decode the batch's records: {e:#}"),
            }
        })?;
        let log_append_time = header.timestamp_type() == TimestampType::LogAppend;
        let leader_epoch =
            (header.partition_leader_epoch >= 0).then_some(header.partition_leader_epoch);
        Ok(set
            .records
            .iter()
            .map(|record| {
                let record_timestamp = if log_append_time {
                    header.max_timestamp
                } else {
                    record.timestamp
                };
                (record.offset, record_timestamp)
            })
            .find(|&(offset, record_timestamp)| record_timestamp >= timestamp && offset >= from)
            .map(|(offset, timestamp)| TimestampOffset {
                timestamp,
                offset,
                leader_epoch,
            }))
    }

    /// Scans batch headers from `start` for the first batch matching `wanted`.
    fn find(
        &self,
        start: u64,
        wanted: impl Fn(&BatchHeader) -> bool,
    ) -> Result<Option<(u64, BatchHeader)>, ReadError> {
        let mut cursor = Cursor::new(
            &self.log,
            &self.paths.log,
            self.base_offset,
            start,
            self.size,
            READ_CHUNK,
        );
        loop {
            match cursor.next(Verify::Framing)? {
                Step::End => return Ok(None),
                Step::Batch { position, header } if wanted(&header) => {
                    return Ok(Some((position, header)))
                }
                Step::Batch { .. } => {}
                Step::Fault(fault) => {
                    return Err(ReadError::Corrupt {
                        path: self.paths.log.clone(),
                        position: fault.position,
                        reason: fault.reason,
                    })
                }
            }
        }
    }

    /// Where truncating the log at `offset` cuts this segment, which must start at or before
    /// `offset`: the position of the first batch whose last offset is at or past `offset`
    /// (the segment's size when no batch is), and the offset after the last batch before
    /// that position (the segment's base offset when there is none). A batch holding
    /// `offset` is thus cut whole.
    pub(crate) fn cut_point(&self, offset: i64) -> Result<(u64, i64), ReadError> {
        self.cut_point_with(self.index()?, offset)
    }

    fn cut_point_with(&self, index: &SegmentIndex, offset: i64) -> Result<(u64, i64), ReadError> {
        // The entry a read would start from may name the very batch that is cut; one entry
        // earlier names a batch that ends before `offset`, so the scan sees the batch before
        // the cut too.
        let at_or_before = index
            .offsets
            .partition_point(|e| e.relative_offset <= self.relative(offset));
        let start = at_or_before
            .checked_sub(2)
            .map_or(0, |i| u64::from(index.offsets[i].position));
        match self.scan_for_cut(start, offset)? {
            Some(cut) => Ok(cut),
            // Not expected from a consistent index: look again from the start.
            None => Ok(self
                .scan_for_cut(0, offset)?
                .unwrap_or((0, self.base_offset))),
        }
    }

    /// The cut point, scanning from `start`; `None` when the batch at `start` is already
    /// cut, so that the end of the one before it is unknown.
    fn scan_for_cut(&self, start: u64, offset: i64) -> Result<Option<(u64, i64)>, ReadError> {
        let mut cursor = Cursor::new(
            &self.log,
            &self.paths.log,
            self.base_offset,
            start,
            self.size,
            READ_CHUNK,
        );
        let mut end = (start == 0).then_some(self.base_offset);
        loop {
            match cursor.next(Verify::Framing)? {
                Step::End => return Ok(end.map(|end| (self.size, end))),
                Step::Batch { position, header } if header.last_offset() >= offset => {
                    return Ok(end.map(|end| (position, end)))
                }
                Step::Batch { header, .. } => end = Some(header.last_offset() + 1),
                Step::Fault(fault) => {
                    return Err(ReadError::Corrupt {
                        path: self.paths.log.clone(),
                        position: fault.position,
                        reason: fault.reason,
                    })
                }
            }
        }
    }

    /// The headers of this segment's batches, in order (see [`SegmentBatches`]).
    pub(crate) fn batches(&self) -> SegmentBatches<'_> {
        SegmentBatches::new(&self.log, &self.paths.log, self.base_offset, self.size)
    }

    /// `offset` relative to the base, clamped into what an index can hold.
    fn relative(&self, offset: i64) -> u32 {
        let relative = offset.saturating_sub(self.base_offset);
        u32::try_from(relative.clamp(0, MAX_RELATIVE_OFFSET)).unwrap_or(u32::MAX)
    }
}

impl ActiveSegment {
    /// Creates a new, empty segment starting at `base_offset`.
    pub(crate) fn create(
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u32,
    ) -> Result<ActiveSegment, IoError> {
        let paths = Paths::new(dir, base_offset);
        let log = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&paths.log)
            .at("create segment", &paths.log)?;
        let index = SegmentIndex::default();
        let created = IndexFiles::rewrite(&paths.offset_index, &paths.time_index, &index)
            .and_then(|files| sync_dir(dir).map(|()| files));
        let files = match created {
            Ok(files) => files,
            Err(error) => {
                // Leave no empty segment behind, or the next roll would trip over its name.
                for path in [&paths.log, &paths.offset_index, &paths.time_index] {
                    let _ = fs::remove_file(path);
                }
                return Err(error);
            }
        };
        Ok(ActiveSegment {
            segment: Segment {
                id: next_segment_id(),
                base_offset,
                paths,
                log,
                size: 0,
                end_offset: base_offset,
                max_timestamp: NO_TIMESTAMP,
                offset_of_max_timestamp: base_offset,
                index: OnceLock::new(),
                index_interval_bytes,
            },
            index,
            builder: IndexBuilder::new(index_interval_bytes),
            files,
            rolling_since: None,
        })
    }

    /// Opens the newest segment of a partition. After a clean shutdown its indexes are
    /// trusted once they pass a consistency check; otherwise every batch is verified and
    /// the log is cut at the first one that is torn or corrupt.
    pub(crate) fn open(
        dir: &Path,
        base_offset: i64,
        clean_shutdown: bool,
        index_interval_bytes: u32,
    ) -> Result<ActiveSegment, IoError> {
        let paths = Paths::new(dir, base_offset);
        let log = open_log(&paths.log)?;
        let metadata = log.metadata().at("inspect segment", &paths.log)?;
        let rolling_since = (metadata.len() > 0)
            .then(|| metadata.created().or_else(|_| metadata.modified()).ok())
            .flatten();
        let segment = Segment {
            id: next_segment_id(),
            base_offset,
            paths,
            log,
            size: metadata.len(),
            end_offset: base_offset,
            max_timestamp: NO_TIMESTAMP,
            offset_of_max_timestamp: base_offset,
            index: OnceLock::new(),
            index_interval_bytes,
        };
        if clean_shutdown {
            match resume(&segment)? {
                Ok((index, next_offset)) => {
                    let files =
                        IndexFiles::open(&segment.paths.offset_index, &segment.paths.time_index)?;
                    // Exact: closing sealed the time index with the largest timestamp.
                    let builder = IndexBuilder::resume(index_interval_bytes, &index, segment.size);
                    return Ok(Self::assemble(
                        segment,
                        index,
                        builder,
                        next_offset,
                        files,
                        rolling_since,
                    ));
                }
                Err(reason) => tracing::warn!(
                    segment = %segment.paths.log.display(),
                    %reason,
                    "segment does not match its indexes despite a clean shutdown; recovering it"
                ),
            }
        }
        let mut segment = segment;
        let scan = scan(
            &segment.log,
            &segment.paths.log,
            base_offset,
            segment.size,
            index_interval_bytes,
            Verify::Crc,
        )?;
        if let Some(fault) = &scan.fault {
            tracing::warn!(
                dir = %dir.display(),
                segment = %segment.paths.log.display(),
                position = fault.position,
                dropped_bytes = segment.size - fault.position,
                reason = %fault.reason,
                "truncating the torn or corrupt tail of the active segment"
            );
            segment
                .log
                .set_len(fault.position)
                .and_then(|()| segment.log.sync_all())
                .at("truncate segment", &segment.paths.log)?;
            segment.size = fault.position;
        }
        let files = IndexFiles::rewrite(
            &segment.paths.offset_index,
            &segment.paths.time_index,
            &scan.index,
        )?;
        let rolling_since = rolling_since.filter(|_| segment.size > 0);
        Ok(Self::assemble(
            segment,
            scan.index,
            scan.builder,
            scan.next_offset,
            files,
            rolling_since,
        ))
    }

    fn assemble(
        mut segment: Segment,
        index: SegmentIndex,
        builder: IndexBuilder,
        next_offset: i64,
        files: IndexFiles,
        rolling_since: Option<SystemTime>,
    ) -> ActiveSegment {
        segment.end_offset = next_offset;
        let (timestamp, relative) = builder.max_timestamp();
        segment.max_timestamp = timestamp;
        segment.offset_of_max_timestamp = segment.base_offset + i64::from(relative);
        ActiveSegment {
            segment,
            index,
            builder,
            files,
            rolling_since,
        }
    }

    pub(crate) fn base_offset(&self) -> i64 {
        self.segment.base_offset
    }

    pub(crate) fn size(&self) -> u64 {
        self.segment.size
    }

    /// The segment this active one wraps, e.g. for its file paths.
    pub(crate) fn segment(&self) -> &Segment {
        &self.segment
    }

    /// The offset the next appended batch gets.
    pub(crate) fn end_offset(&self) -> i64 {
        self.segment.end_offset
    }

    pub(crate) fn max_timestamp(&self) -> (i64, i64) {
        self.segment.max_timestamp()
    }

    pub(crate) fn rolling_since(&self) -> Option<SystemTime> {
        self.rolling_since
    }

    /// Whether `bytes` more, ending at `last_offset`, still fit what the index can address.
    pub(crate) fn can_address(&self, bytes: u64, last_offset: i64) -> bool {
        self.segment.size.saturating_add(bytes) <= MAX_SEGMENT_BYTES
            && last_offset.saturating_sub(self.segment.base_offset) <= MAX_RELATIVE_OFFSET
    }

    /// Appends batches whose offsets are assigned. `data` holds them back to back, `len`
    /// bytes in pieces written with one vectored write; each [`ProducedBatch`] gives a batch's
    /// start in `data` and its final header. The caller rolled when [`Self::can_address`]
    /// said no. On error nothing changed.
    pub(crate) fn append(
        &mut self,
        data: &mut [IoSlice<'_>],
        len: usize,
        batches: &[ProducedBatch],
        now: SystemTime,
    ) -> Result<(), IoError> {
        let segment = &mut self.segment;
        let position = segment.size;
        if let Err(error) = write_all_at(&segment.log, data, position) {
            // Bytes of a partial write lie past `size`, where reads never look; cutting them
            // spares the next recovery, and failing to is harmless.
            let _ = segment.log.set_len(position);
            return Err(error).at("append to segment", &segment.paths.log);
        }
        for batch in batches {
            let header = &batch.header;
            let entries = self.builder.observe(
                &mut self.index,
                to_u32(header.base_offset - segment.base_offset),
                to_u32(position + batch.start as u64),
                to_u32(header.size() as u64),
                header.max_timestamp,
            );
            if entries != NewEntries::default() {
                self.files.append(entries);
            }
            segment.end_offset = header.last_offset() + 1;
        }
        segment.size += len as u64;
        let (timestamp, relative) = self.builder.max_timestamp();
        segment.max_timestamp = timestamp;
        segment.offset_of_max_timestamp = segment.base_offset + i64::from(relative);
        self.rolling_since.get_or_insert(now);
        Ok(())
    }

    pub(crate) fn read(&self, offset: i64, max_bytes: usize) -> Result<Option<Bytes>, ReadError> {
        self.segment.read_with(&self.index, offset, max_bytes)
    }

    pub(crate) fn find_timestamp(
        &self,
        timestamp: i64,
        from: i64,
    ) -> Result<Option<TimestampOffset>, ReadError> {
        self.segment
            .find_timestamp_with(&self.index, timestamp, from)
    }

    /// Makes the log and both indexes durable, the log first so that a durable index never
    /// points past durable data.
    pub(crate) fn sync(&mut self) -> Result<(), IoError> {
        self.segment
            .log
            .sync_data()
            .at("sync segment", &self.segment.paths.log)?;
        self.files.sync(&self.index)
    }

    /// Seals the time index with the segment's largest timestamp and makes everything
    /// durable: the segment may stop being active after this.
    pub(crate) fn finish(&mut self) -> Result<(), IoError> {
        if let Some(entry) = self.builder.seal(&mut self.index) {
            self.files.append(NewEntries {
                offset: None,
                time: Some(entry),
            });
        }
        self.sync()
    }

    /// Makes an inactive segment the active one again, for a truncation that removes every
    /// segment after it: [`Self::truncate`] must follow, which sets the end offset (until
    /// then it is the removed next segment's base) and rewrites the index files.
    pub(crate) fn reactivate(mut segment: Segment) -> Result<ActiveSegment, IoError> {
        let index = match segment.index.take() {
            Some(index) => index,
            None => segment.load_index()?,
        };
        // The time index of an inactive segment is sealed, so this is exact.
        let builder = IndexBuilder::resume(segment.index_interval_bytes, &index, segment.size);
        let files = IndexFiles::open(&segment.paths.offset_index, &segment.paths.time_index)?;
        let rolling_since = if segment.size > 0 {
            let metadata = segment
                .log
                .metadata()
                .at("inspect segment", &segment.paths.log)?;
            metadata.created().or_else(|_| metadata.modified()).ok()
        } else {
            None
        };
        let end_offset = segment.end_offset;
        Ok(Self::assemble(
            segment,
            index,
            builder,
            end_offset,
            files,
            rolling_since,
        ))
    }

    /// Where truncating the log at `offset` (at or past the base) cuts this segment; see
    /// [`Segment::cut_point`].
    pub(crate) fn cut_point(&self, offset: i64) -> Result<(u64, i64), ReadError> {
        self.segment.cut_point_with(&self.index, offset)
    }

    /// Cuts the segment at `position`, a batch boundary from [`Self::cut_point`], leaving
    /// `end_offset` as its end, and makes the cut durable: the `.log` is cut and fsynced
    /// first, then both indexes are replaced by their entries for the batches that remain
    /// (the caller fsyncs the directory). The index builder and the largest timestamp are
    /// recomputed from the remaining index and the batches after its last offset entry.
    pub(crate) fn truncate(&mut self, position: u64, end_offset: i64) -> Result<(), ReadError> {
        let segment = &mut self.segment;
        segment
            .log
            .set_len(position)
            .and_then(|()| segment.log.sync_all())
            .at("truncate segment", &segment.paths.log)?;
        segment.size = position;
        segment.end_offset = end_offset;
        let relative_end = end_offset - segment.base_offset;
        self.index
            .offsets
            .retain(|e| u64::from(e.position) < position);
        // Entries naming a remaining batch stay true: the batches up to it are all still
        // there. The time index only grows, so this keeps a prefix.
        self.index
            .times
            .retain(|e| i64::from(e.relative_offset) < relative_end);
        let mut builder = IndexBuilder::resume(segment.index_interval_bytes, &self.index, position);
        // The remaining time entries cover the batches up to the last offset entry; later
        // batches may have larger timestamps that only the builder knew.
        let from = self
            .index
            .offsets
            .last()
            .map_or(0, |e| u64::from(e.position));
        let mut cursor = Cursor::new(
            &segment.log,
            &segment.paths.log,
            segment.base_offset,
            from,
            position,
            SCAN_CHUNK,
        );
        loop {
            match cursor.next(Verify::Framing)? {
                Step::End => break,
                Step::Batch { header, .. } => builder.raise_max(
                    to_u32(header.base_offset - segment.base_offset),
                    header.max_timestamp,
                ),
                Step::Fault(fault) => {
                    return Err(ReadError::Corrupt {
                        path: segment.paths.log.clone(),
                        position: fault.position,
                        reason: fault.reason,
                    })
                }
            }
        }
        let (timestamp, relative) = builder.max_timestamp();
        segment.max_timestamp = timestamp;
        segment.offset_of_max_timestamp = segment.base_offset + i64::from(relative);
        self.builder = builder;
        self.files = IndexFiles::rewrite(
            &segment.paths.offset_index,
            &segment.paths.time_index,
            &self.index,
        )?;
        if position == 0 {
            self.rolling_since = None;
        }
        Ok(())
    }

    /// The segment as an inactive one; call [`Self::finish`] first.
    pub(crate) fn into_segment(self) -> Segment {
        let mut segment = self.segment;
        segment.index = OnceLock::from(self.index);
        segment
    }
}

/// Picks up a cleanly shut down active segment: loads its indexes and scans only the tail
/// after the last index entry to find the log end. The inner error says why the segment
/// needs a full recovery instead.
fn resume(segment: &Segment) -> Result<Result<(SegmentIndex, i64), String>, IoError> {
    let (Some(offsets), Some(times)) = (
        read_if_exists(&segment.paths.offset_index)?,
        read_if_exists(&segment.paths.time_index)?,
    ) else {
        return Ok(Err("an index file is missing".to_owned()));
    };
    let index = match SegmentIndex::decode(&offsets, &times) {
        Ok(index) => index,
        Err(reason) => return Ok(Err(reason)),
    };
    let tail = index.offsets.last().copied();
    if let Some(entry) = tail {
        if !segment.entry_matches(entry)? {
            return Ok(Err(LAST_ENTRY_MISMATCH.to_owned()));
        }
    }
    let tail = tail.unwrap_or(OffsetEntry {
        relative_offset: 0,
        position: 0,
    });
    let mut cursor = Cursor::new(
        &segment.log,
        &segment.paths.log,
        segment.base_offset,
        u64::from(tail.position),
        segment.size,
        SCAN_CHUNK,
    );
    cursor.min_next_offset = segment.base_offset + i64::from(tail.relative_offset);
    let mut next_offset = segment.base_offset;
    loop {
        match cursor.next(Verify::Framing)? {
            Step::End => break,
            Step::Batch { header, .. } => next_offset = header.last_offset() + 1,
            Step::Fault(fault) => {
                return Ok(Err(format!(
                    "batch at position {}: {}",
                    fault.position, fault.reason
                )))
            }
        }
    }
    if let Err(reason) = index.check_bounds(segment.size, next_offset - segment.base_offset) {
        return Ok(Err(reason));
    }
    Ok(Ok((index, next_offset)))
}

/// How much of each batch a scan verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    /// Headers only: lengths, magic, offsets. Reads just the headers.
    Framing,
    /// Also the CRC of every batch, which reads every byte.
    Crc,
}

/// The result of scanning a segment from its start.
#[derive(Debug)]
struct Scan {
    index: SegmentIndex,
    builder: IndexBuilder,
    /// The offset after the last good batch (the base offset when there is none).
    next_offset: i64,
    /// The first bad batch, where the good part of the segment ends.
    fault: Option<Fault>,
}

/// Scans a whole segment, rebuilding its indexes, up to the end or the first bad batch.
fn scan(
    log: &File,
    path: &Path,
    base_offset: i64,
    size: u64,
    index_interval_bytes: u32,
    verify: Verify,
) -> Result<Scan, IoError> {
    let mut cursor = Cursor::new(log, path, base_offset, 0, size, SCAN_CHUNK);
    let mut index = SegmentIndex::default();
    let mut builder = IndexBuilder::new(index_interval_bytes);
    let mut next_offset = base_offset;
    let fault = loop {
        match cursor.next(verify)? {
            Step::End => break None,
            Step::Fault(fault) => break Some(fault),
            Step::Batch { position, header } => {
                builder.observe(
                    &mut index,
                    to_u32(header.base_offset - base_offset),
                    to_u32(position),
                    to_u32(header.size() as u64),
                    header.max_timestamp,
                );
                next_offset = header.last_offset() + 1;
            }
        }
    };
    Ok(Scan {
        index,
        builder,
        next_offset,
        fault,
    })
}

/// One step of a [`Cursor`].
#[derive(Debug)]
enum Step {
    End,
    Batch { position: u64, header: BatchHeader },
    Fault(Fault),
}

/// Walks the batches of a segment with positional reads (so it works through `&File`),
/// reading ahead in chunks so that small batches do not cost a system call each.
struct Cursor<'a> {
    log: &'a File,
    path: &'a Path,
    base_offset: i64,
    /// Batches must not go back in offset: the smallest base offset the next one may have.
    min_next_offset: i64,
    position: u64,
    end: u64,
    chunk: usize,
    buf: Vec<u8>,
    buf_start: u64,
}

impl<'a> Cursor<'a> {
    fn new(
        log: &'a File,
        path: &'a Path,
        base_offset: i64,
        start: u64,
        end: u64,
        chunk: usize,
    ) -> Self {
        Cursor {
            log,
            path,
            base_offset,
            min_next_offset: base_offset,
            position: start,
            end,
            chunk,
            buf: Vec::new(),
            buf_start: 0,
        }
    }

    fn next(&mut self, verify: Verify) -> Result<Step, IoError> {
        let position = self.position;
        if position >= self.end {
            return Ok(Step::End);
        }
        let fault = |reason: String| Ok(Step::Fault(Fault { position, reason }));
        let remaining = self.end - position;
        if remaining < HEADER_SIZE as u64 {
            return fault(format!(
                "{remaining} trailing bytes are shorter than a batch header"
            ));
        }
        let Some(header) = BatchHeader::parse(self.fetch(position, HEADER_SIZE)?) else {
            return fault("batch header is cut short".to_owned());
        };
        if header.batch_length < MIN_BATCH_LENGTH {
            return fault(format!(
                "batchLength {} is below the minimum of {MIN_BATCH_LENGTH}",
                header.batch_length
            ));
        }
        let size = header.size() as u64;
        if size > remaining {
            return fault(format!(
                "batch of {size} bytes runs {} bytes past the end of the segment",
                size - remaining
            ));
        }
        if position > MAX_SEGMENT_BYTES {
            return fault("batch starts beyond what a segment index can address".to_owned());
        }
        let checked = match verify {
            Verify::Framing => batch::check_header(&header, CountRule::Stored),
            Verify::Crc => {
                let Ok(len) = usize::try_from(size) else {
                    return fault(format!("batch of {size} bytes cannot be read whole"));
                };
                batch::check_batch(self.fetch(position, len)?, CountRule::Stored).map(|_| ())
            }
        };
        if let Err(reason) = checked {
            return fault(reason.to_string());
        }
        if header.base_offset < self.min_next_offset {
            return fault(format!(
                "base offset {} goes back from the expected {}",
                header.base_offset, self.min_next_offset
            ));
        }
        if header.last_offset() - self.base_offset > MAX_RELATIVE_OFFSET {
            return fault(format!(
                "last offset {} is too far past the segment base {}",
                header.last_offset(),
                self.base_offset
            ));
        }
        let Some(next_offset) = header.last_offset().checked_add(1) else {
            return fault(format!(
                "last offset {} leaves no offset after it",
                header.last_offset()
            ));
        };
        self.min_next_offset = next_offset;
        self.position += size;
        Ok(Step::Batch { position, header })
    }

    /// `len` bytes at `at`, which the caller checked lie before `end`.
    fn fetch(&mut self, at: u64, len: usize) -> Result<&[u8], IoError> {
        let buf_end = self.buf_start + self.buf.len() as u64;
        if at < self.buf_start || at + len as u64 > buf_end {
            let available = usize::try_from(self.end - at).unwrap_or(usize::MAX);
            read_into(
                self.log,
                at,
                len.max(self.chunk).min(available).max(len),
                &mut self.buf,
            )
            .at("read segment", self.path)?;
            self.buf_start = at;
        }
        let from = (at - self.buf_start) as usize;
        Ok(&self.buf[from..from + len])
    }
}

/// One batch of a segment, as [`SegmentBatches::next_batch`] returns it.
pub(crate) struct StoredBatch<'a> {
    pub(crate) position: u64,
    pub(crate) header: BatchHeader,
    pub(crate) bytes: &'a [u8],
}

/// The batches of a segment file in order, for the cleaner and for crash recovery: either
/// headers only (framing checked) or whole batches (CRC checked too). A batch that does not
/// parse ends the walk with [`ReadError::Corrupt`].
pub(crate) struct SegmentBatches<'a> {
    cursor: Cursor<'a>,
}

impl<'a> SegmentBatches<'a> {
    /// Walks the first `size` bytes of `log`, a segment whose base offset is `base_offset`.
    pub(crate) fn new(log: &'a File, path: &'a Path, base_offset: i64, size: u64) -> Self {
        SegmentBatches {
            cursor: Cursor::new(log, path, base_offset, 0, size, SCAN_CHUNK),
        }
    }

    /// The next batch's position and header, reading only the header.
    pub(crate) fn next_header(&mut self) -> Result<Option<(u64, BatchHeader)>, ReadError> {
        self.step(Verify::Framing)
    }

    /// The next batch, whole and CRC-checked.
    pub(crate) fn next_batch(&mut self) -> Result<Option<StoredBatch<'_>>, ReadError> {
        let Some((position, header)) = self.step(Verify::Crc)? else {
            return Ok(None);
        };
        // Verifying the CRC read the whole batch into the cursor's buffer, so this reads
        // nothing from the file again.
        let bytes = self.cursor.fetch(position, header.size())?;
        Ok(Some(StoredBatch {
            position,
            header,
            bytes,
        }))
    }

    fn step(&mut self, verify: Verify) -> Result<Option<(u64, BatchHeader)>, ReadError> {
        match self.cursor.next(verify)? {
            Step::End => Ok(None),
            Step::Batch { position, header } => Ok(Some((position, header))),
            Step::Fault(fault) => Err(ReadError::Corrupt {
                path: self.cursor.path.to_path_buf(),
                position: fault.position,
                reason: fault.reason,
            }),
        }
    }
}

/// `len` bytes of `file` from `position`, read straight into a new buffer's uninitialised
/// capacity: a fetch costs the kernel's copy and nothing more (no zero-filling first).
fn read_at(file: &File, position: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    read_into(file, position, len, &mut buf)?;
    Ok(buf)
}

/// Replaces the contents of `buf` with `len` bytes of `file` from `position`, reading into
/// its capacity (grown as needed) without initialising it first. On error `buf` is empty.
fn read_into(file: &File, position: u64, len: usize, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    buf.reserve_exact(len);
    while buf.len() < len {
        let at = position + buf.len() as u64;
        // Reads into all the spare capacity, which may go past `len`: cut below.
        let failed: io::Error =
            match rustix::io::pread(file, rustix::buffer::spare_capacity(buf), at) {
                Ok(0) => io::ErrorKind::UnexpectedEof.into(),
                Ok(_) | Err(rustix::io::Errno::INTR) => continue,
                Err(errno) => errno.into(),
            };
        buf.clear();
        return Err(failed);
    }
    buf.truncate(len);
    Ok(())
}

/// Writes the concatenation of `pieces` at `position`, with as few vectored writes as the
/// system's limit on pieces per call and short writes allow. The slices are consumed.
fn write_all_at(file: &File, pieces: &mut [IoSlice<'_>], position: u64) -> io::Result<()> {
    /// Pieces per `pwritev` (Linux accepts 1024).
    const MAX_PIECES: usize = 512;
    let mut position = position;
    for mut rest in pieces.chunks_mut(MAX_PIECES) {
        // Leading empty pieces are dropped, so a write of nothing is never asked for.
        IoSlice::advance_slices(&mut rest, 0);
        while !rest.is_empty() {
            match rustix::io::pwritev(file, rest, position) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => {
                    position += written as u64;
                    IoSlice::advance_slices(&mut rest, written);
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(errno) => return Err(errno.into()),
            }
        }
    }
    Ok(())
}

/// The length of the whole batches at the start of `buf`, whose first batch is known to be
/// `first_size` bytes.
fn whole_batches(buf: &[u8], first_size: usize) -> usize {
    let mut end = first_size;
    while let Some(length) = buf.get(end..).and_then(batch::batch_length) {
        let Ok(length) = usize::try_from(length) else {
            break;
        };
        let next = end + LOG_OVERHEAD + length;
        if length < MIN_BATCH_LENGTH as usize || next > buf.len() {
            break;
        }
        end = next;
    }
    end
}

/// Converts a position, size or relative offset that the roll rules keep below 2^32.
fn to_u32(value: impl TryInto<u32>) -> u32 {
    value.try_into().unwrap_or(u32::MAX)
}

fn open_log(path: &Path) -> Result<File, IoError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .at("open segment", path)
}

fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, IoError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).at("read index", path),
    }
}

/// What the end of an index file says about it.
enum Probe {
    /// The file's last entry, `None` for an empty file.
    Last(Option<Vec<u8>>),
    /// Why the file must be rebuilt.
    Unusable(String),
}

/// The last entry of an index file, without reading the rest.
fn last_entry(path: &Path, entry_size: usize) -> Result<Probe, IoError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Probe::Unusable(format!("{} is missing", path.display())))
        }
        Err(e) => return Err(e).at("open index", path),
    };
    let len = file.metadata().at("inspect index", path)?.len();
    if len % entry_size as u64 != 0 {
        return Ok(Probe::Unusable(format!(
            "{} of {len} bytes is not a whole number of {entry_size}-byte entries",
            path.display()
        )));
    }
    if len == 0 {
        return Ok(Probe::Last(None));
    }
    let mut entry = vec![0; entry_size];
    file.read_exact_at(&mut entry, len - entry_size as u64)
        .at("read index", path)?;
    Ok(Probe::Last(Some(entry)))
}

/// Makes file creations, renames and removals in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), IoError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .at("sync directory", dir)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_zero_padded_base_offsets_and_parse_back() {
        assert_eq!(file_name(42, "log"), "00000000000000000042.log");
        assert_eq!(
            parse_file_name("00000000000000000042.timeindex"),
            Some((42, "timeindex"))
        );
        assert_eq!(
            parse_file_name("00000000000000000042.index.tmp"),
            Some((42, "index.tmp"))
        );
        assert_eq!(parse_file_name("42.log"), None);
        assert_eq!(parse_file_name(".clean_shutdown"), None);
        assert_eq!(parse_file_name("99999999999999999999.log"), None);
    }

    #[test]
    fn vectored_writes_put_every_piece_in_order_beyond_the_pieces_per_call() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pieces");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        // Empty pieces too, and more pieces than one call takes.
        let pieces: Vec<Vec<u8>> = (0..1500).map(|i| vec![i as u8; i % 7]).collect();
        let expected = pieces.concat();
        let mut pieces: Vec<IoSlice<'_>> = pieces.iter().map(|p| IoSlice::new(p)).collect();
        write_all_at(&file, &mut pieces, 5).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            5 + expected.len() as u64
        );
        assert_eq!(read_at(&file, 5, expected.len()).unwrap(), expected);
        let mut reused = vec![9; 3];
        read_into(&file, 6, 10, &mut reused).unwrap();
        assert_eq!(reused, expected[1..11]);
        let past_end = read_into(&file, 5, expected.len() + 1, &mut reused).unwrap_err();
        assert_eq!(past_end.kind(), io::ErrorKind::UnexpectedEof);
        assert!(reused.is_empty());
    }

    #[test]
    fn whole_batches_stops_before_a_batch_cut_by_the_buffer_end() {
        let first = batch::tests::encode_batch(1, 10, 0);
        let second = batch::tests::encode_batch(2, 10, 0);
        let all = [first.clone(), second.clone(), second.clone()].concat();
        assert_eq!(whole_batches(&all, first.len()), all.len());
        let cut = &all[..all.len() - 1];
        assert_eq!(whole_batches(cut, first.len()), first.len() + second.len());
        assert_eq!(whole_batches(&first, first.len()), first.len());
    }

    /// Found by the `segment` fuzz target (fuzz/fuzz_targets/segment.rs): a segment based
    /// just below the largest offset whose last batch ends at it. Recovery added one to that
    /// offset and panicked; it now cuts that batch and keeps the three before it.
    #[test]
    fn recovery_cuts_a_batch_that_ends_at_the_largest_offset() {
        let fuzzed = include_bytes!("testdata/segment-last-offset-max.log");
        let dir = tempfile::tempdir().unwrap();
        let base = i64::MAX - 1_000;
        fs::write(dir.path().join(file_name(base, LOG_EXTENSION)), fuzzed).unwrap();
        let active = ActiveSegment::open(dir.path(), base, false, 4096).unwrap();
        assert_eq!(active.end_offset(), i64::MAX - 2);
        assert_eq!(active.size(), 339);
    }

    /// Found by the `segment` fuzz target: after a clean shutdown, a segment based just
    /// below the largest offset whose offset index names a relative offset past it. Checking
    /// that entry against the log overflowed; the index is now distrusted and the segment
    /// recovered from its batches.
    #[test]
    fn an_index_entry_past_the_largest_offset_sends_the_segment_to_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let base = i64::MAX - 1_000;
        let mut first = batch::tests::encode_batch(3, 10, 0);
        // The base offset is outside the batch's CRC.
        first[..8].copy_from_slice(&base.to_be_bytes());
        fs::write(dir.path().join(file_name(base, LOG_EXTENSION)), &first).unwrap();
        let entry = OffsetEntry {
            relative_offset: u32::MAX,
            position: 0,
        };
        let mut offsets = Vec::new();
        offsets.extend_from_slice(&entry.relative_offset.to_be_bytes());
        offsets.extend_from_slice(&entry.position.to_be_bytes());
        fs::write(dir.path().join(file_name(base, INDEX_EXTENSION)), offsets).unwrap();
        fs::write(dir.path().join(file_name(base, TIME_INDEX_EXTENSION)), []).unwrap();
        let active = ActiveSegment::open(dir.path(), base, true, 4096).unwrap();
        assert_eq!(active.end_offset(), base + 3);
        assert_eq!(active.size(), first.len() as u64);
    }
}
