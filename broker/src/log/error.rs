//! Errors of the partition log, one enum per operation, each saying which file and offset.

use std::io;
use std::path::{Path, PathBuf};

use kafka_protocol::ResponseError;

/// An I/O failure on one of the log's files or its directory.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op} {}", path.display())]
pub struct IoError {
    /// What the log was doing, e.g. "append to segment".
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl IoError {
    /// Whether this failure means the log directory itself is failing (a read or write
    /// error, a directory gone or remounted read-only), as Kafka takes any `IOException` of a
    /// log: the directory goes offline. A full filesystem or quota is not: writes are
    /// refused until there is room again, and the directory stays.
    pub fn fails_directory(&self) -> bool {
        const ENOSPC: i32 = 28;
        const EDQUOT: i32 = 122;
        !matches!(self.source.raw_os_error(), Some(ENOSPC | EDQUOT))
            && self.source.kind() != io::ErrorKind::StorageFull
    }
}

/// A log operation's failure that may be its directory's: the I/O error, when there is one
/// and it fails the directory ([`IoError::fails_directory`]).
pub trait DirectoryFault {
    fn directory_fault(&self) -> Option<&IoError>;
}

impl DirectoryFault for IoError {
    fn directory_fault(&self) -> Option<&IoError> {
        Some(self).filter(|e| e.fails_directory())
    }
}

impl DirectoryFault for LogError {
    fn directory_fault(&self) -> Option<&IoError> {
        match self {
            LogError::Io(e) => e.directory_fault(),
            _ => None,
        }
    }
}

impl DirectoryFault for AppendError {
    fn directory_fault(&self) -> Option<&IoError> {
        match self {
            AppendError::Io(e) => e.directory_fault(),
            _ => None,
        }
    }
}

impl DirectoryFault for ReadError {
    fn directory_fault(&self) -> Option<&IoError> {
        match self {
            ReadError::Io(e) => e.directory_fault(),
            _ => None,
        }
    }
}

/// Attaches the operation and path to an I/O result.
pub(crate) trait IoResultExt<T> {
    fn at(self, op: &'static str, path: &Path) -> Result<T, IoError>;
}

impl<T> IoResultExt<T> for io::Result<T> {
    fn at(self, op: &'static str, path: &Path) -> Result<T, IoError> {
        self.map_err(|source| IoError {
            op,
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Failure to open, flush, close, delete, clean, trim or truncate a partition log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Io(#[from] IoError),
    /// [`delete_records_before`](super::PartitionLog::delete_records_before) was given an
    /// offset past the log end, or a negative one; or a truncation a negative offset.
    #[error(
        "cannot delete records before offset {offset}: the log's range is [{log_start}, {log_end}]"
    )]
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        log_end: i64,
    },
    /// A stored batch does not parse, found while cleaning or recovering: the segment was
    /// damaged after it was written.
    #[error("segment {} is corrupt at position {position}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    /// The records the cleaner kept of a batch could not be encoded again.
    #[error("cannot re-encode the batch at offset {offset} of segment {}: {reason}", path.display())]
    Reencode {
        path: PathBuf,
        offset: i64,
        reason: String,
    },
}

impl LogError {
    /// The error code a response carries for this failure (DeleteRecords, mostly).
    pub fn response_error(&self) -> ResponseError {
        match self {
            LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
            LogError::Io(_) | LogError::Corrupt { .. } | LogError::Reencode { .. } => {
                ResponseError::KafkaStorageError
            }
        }
    }
}

impl From<ReadError> for LogError {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::OffsetOutOfRange {
                offset,
                log_start,
                log_end,
            } => LogError::OffsetOutOfRange {
                offset,
                log_start,
                log_end,
            },
            ReadError::Corrupt {
                path,
                position,
                reason,
            } => LogError::Corrupt {
                path,
                position,
                reason,
            },
            ReadError::Io(error) => LogError::Io(error),
        }
    }
}

/// Why [`PartitionLog::append`](super::PartitionLog::append) or
/// [`PartitionLog::append_replicated`](super::PartitionLog::append_replicated) refused or
/// failed; when it refused, nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The records are not well-formed `RecordBatch` v2: bad framing, CRC, counts, or empty.
    /// The message names the batch (its index and byte position in the request) and why.
    #[error("corrupt record batch: {0}")]
    Corrupt(String),
    /// A batch uses a record format other than v2.
    #[error("unsupported record batch magic {0}; only v2 is accepted")]
    UnsupportedMagic(i8),
    /// A batch is larger than `max_batch_bytes` (message.max.bytes).
    #[error("record batch of {size} bytes exceeds the limit of {max} bytes")]
    BatchTooLarge { size: usize, max: usize },
    /// A batch's CreateTime lies outside what `message.timestamp.before.max.ms` and
    /// `message.timestamp.after.max.ms` allow around the append time.
    #[error("timestamp {timestamp} is out of range: it must be within [{low}, {high}]")]
    InvalidTimestamp { timestamp: i64, low: i64, high: i64 },
    /// [`append_replicated`](super::PartitionLog::append_replicated) was given a batch that
    /// starts below `expected`: the log end offset for the first batch, the offset after the
    /// previous batch for the others. The follower fetched from the wrong offset, or its log
    /// and the leader's overlap. (A batch starting *above* `expected` is a gap that the
    /// leader's compaction left, and is accepted.)
    #[error("replicated batch starts at offset {got}, below the expected {expected}")]
    OffsetMismatch { expected: i64, got: i64 },
    /// A batch carries a leader epoch older than the latest epoch already in the log
    /// ([`latest_epoch`](super::PartitionLog::latest_epoch)): epochs never go back within a
    /// log, or OffsetForLeaderEpoch answers would be wrong. The writer is a stale leader (or
    /// the follower's fetch is from one).
    #[error("leader epoch {epoch} is older than the log's latest leader epoch {latest}")]
    StaleLeaderEpoch { epoch: i32, latest: i32 },
    /// Writing failed. The log is unchanged, unless rolling to a new segment succeeded first.
    #[error(transparent)]
    Io(#[from] IoError),
}

impl AppendError {
    /// The error code a Produce response carries for this failure.
    pub fn response_error(&self) -> ResponseError {
        match self {
            AppendError::Corrupt(_) => ResponseError::CorruptMessage,
            // What Kafka answers Produce v3+ requests that carry v0/v1 message sets.
            AppendError::UnsupportedMagic(_) => ResponseError::InvalidRecord,
            AppendError::BatchTooLarge { .. } => ResponseError::MessageTooLarge,
            AppendError::InvalidTimestamp { .. } => ResponseError::InvalidTimestamp,
            // A follower-side failure that no client request causes.
            AppendError::OffsetMismatch { .. } => ResponseError::UnknownServerError,
            // A producer that reached a stale leader refreshes its metadata on this.
            AppendError::StaleLeaderEpoch { .. } => ResponseError::NotLeaderOrFollower,
            AppendError::Io(_) => ResponseError::KafkaStorageError,
        }
    }
}

/// Why [`PartitionLog::read`](super::PartitionLog::read) or a timestamp lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("offset {offset} is outside the log's range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        log_end: i64,
    },
    /// A stored batch does not parse: the segment was damaged after it was written.
    #[error("segment {} is corrupt at position {position}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    #[error(transparent)]
    Io(#[from] IoError),
}

impl ReadError {
    /// The error code a Fetch or ListOffsets response carries for this failure.
    pub fn response_error(&self) -> ResponseError {
        match self {
            ReadError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
            ReadError::Corrupt { .. } | ReadError::Io(_) => ResponseError::KafkaStorageError,
        }
    }
}
