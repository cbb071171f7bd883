//! Segment recovery: fuzzed bytes written as a partition's only segment (`.log`, optionally
//! with `.index` and `.timeindex`), then `PartitionLog::open` as after a crash or a clean
//! shutdown. Opening must never panic; after a crash it must keep exactly the longest prefix
//! of valid batches, serve it back byte for byte, take a new append, and reopen to the same
//! log after a clean close.
//!
//! Input: a flags byte (bit 0: clean-shutdown marker; bit 1: index files follow; bit 2:
//! recompute every framed batch's CRC-32C; bits 3-4: the segment's base offset; bit 5: an
//! index entry for every batch), then with bit 1 two big-endian u16 lengths and the
//! `.index` and `.timeindex` bytes, then the `.log` bytes.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use kafka_protocol::records::Compression;
use libfuzzer_sys::fuzz_target;
use oxbow_broker::log::batch::{self, BatchHeader, CountRule};
use oxbow_broker::log::{LogConfig, PartitionLog, CLEAN_SHUTDOWN_FILE};

const BASE_OFFSETS: [i64; 4] = [0, 1_000, 1 << 40, i64::MAX - 1_000];
/// Index entries hold offsets relative to the segment base as u32.
const MAX_RELATIVE_OFFSET: i64 = u32::MAX as i64;

struct Input<'a> {
    clean_shutdown: bool,
    index: Option<(&'a [u8], &'a [u8])>,
    base_offset: i64,
    index_interval_bytes: u32,
    log: Vec<u8>,
}

fn parse(data: &[u8]) -> Option<Input<'_>> {
    let (&flags, mut rest) = data.split_first()?;
    let index = if flags & 2 != 0 {
        let lengths = rest.get(..4)?;
        let offsets_len = usize::from(u16::from_be_bytes([lengths[0], lengths[1]]));
        let times_len = usize::from(u16::from_be_bytes([lengths[2], lengths[3]]));
        rest = &rest[4..];
        let offsets = rest.get(..offsets_len.min(rest.len()))?;
        rest = &rest[offsets.len()..];
        let times = rest.get(..times_len.min(rest.len()))?;
        rest = &rest[times.len()..];
        Some((offsets, times))
    } else {
        None
    };
    let mut log = rest.to_vec();
    if flags & 4 != 0 {
        oxbow_fuzz::fix_crcs(&mut log);
    }
    Some(Input {
        clean_shutdown: flags & 1 != 0,
        index,
        base_offset: BASE_OFFSETS[usize::from((flags >> 3) & 3)],
        index_interval_bytes: if flags & 32 != 0 { 1 } else { 4096 },
        log,
    })
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = parse(data) else {
        return;
    };
    let dir = scratch_dir();
    let partition = dir.path().join("topic-0");
    std::fs::create_dir(&partition).expect("create the partition directory");
    let name = |extension: &str| partition.join(format!("{:020}.{extension}", input.base_offset));
    std::fs::write(name("log"), &input.log).expect("write the segment");
    if let Some((offsets, times)) = input.index {
        std::fs::write(name("index"), offsets).expect("write the offset index");
        std::fs::write(name("timeindex"), times).expect("write the time index");
    }
    if input.clean_shutdown {
        std::fs::write(partition.join(CLEAN_SHUTDOWN_FILE), b"").expect("write the marker");
    }
    let config = LogConfig {
        index_interval_bytes: input.index_interval_bytes,
        ..LogConfig::default()
    };
    let Ok(log) = PartitionLog::open(&partition, config.clone()) else {
        return;
    };
    if input.clean_shutdown {
        // The indexes are trusted after a clean shutdown, so only reading without a panic
        // is required of whatever the files hold.
        let _ = read_all(&log);
        return;
    }
    let prefix = valid_prefix(&input.log, input.base_offset);
    let on_disk = std::fs::read(name("log")).expect("read the recovered segment");
    assert_eq!(
        on_disk,
        input.log[..prefix.len].to_vec(),
        "recovery keeps exactly the valid prefix"
    );
    assert_eq!(log.log_start_offset(), input.base_offset);
    assert_eq!(log.log_end_offset(), prefix.next_offset);
    let served = read_all(&log).expect("the recovered log reads back");
    assert_eq!(
        served,
        input.log[..prefix.len].to_vec(),
        "reads serve the prefix"
    );
    let mut log = log;
    let epoch = log.latest_epoch().unwrap_or(0).max(0);
    if let Ok(info) = log.append(valid_batch(), epoch) {
        assert_eq!(info.base_offset, prefix.next_offset);
        let read = log
            .read(info.base_offset, 1 << 20)
            .expect("read the appended batch");
        let header = BatchHeader::parse(&read.records).expect("the appended batch");
        assert_eq!(header.base_offset, info.base_offset);
    }
    let end = log.log_end_offset();
    log.close().expect("close the log");
    let reopened = PartitionLog::open(&partition, config).expect("reopen after a clean close");
    assert_eq!(
        reopened.log_end_offset(),
        end,
        "a clean reopen keeps the log end"
    );
});

/// The longest run of batches from the start of `log` that recovery must keep: each whole,
/// valid as a stored batch, not going back in offset, addressable from the base, and leaving
/// an offset after it.
struct Prefix {
    len: usize,
    next_offset: i64,
}

fn valid_prefix(log: &[u8], base_offset: i64) -> Prefix {
    let mut prefix = Prefix {
        len: 0,
        next_offset: base_offset,
    };
    while let Some(header) = BatchHeader::parse(&log[prefix.len..]) {
        let size = header.size();
        if header.batch_length < batch::MIN_BATCH_LENGTH || size > log.len() - prefix.len {
            break;
        }
        let Some(next_offset) = header.last_offset().checked_add(1) else {
            break;
        };
        if batch::check_batch(&log[prefix.len..prefix.len + size], CountRule::Stored).is_err()
            || header.base_offset < prefix.next_offset
            || header.last_offset() - base_offset > MAX_RELATIVE_OFFSET
        {
            break;
        }
        prefix.len += size;
        prefix.next_offset = next_offset;
    }
    prefix
}

/// Every batch from the log start to the log end, read as a consumer would.
fn read_all(log: &PartitionLog) -> Result<Vec<u8>, oxbow_broker::log::ReadError> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let read = log.read(offset, 1 << 16)?;
        let mut rest = &read.records[..];
        let mut next = offset;
        while let Some(header) = BatchHeader::parse(rest) {
            next = next.max(header.last_offset().saturating_add(1));
            rest = rest.get(header.size()..).unwrap_or_default();
        }
        if next <= offset {
            break;
        }
        out.extend_from_slice(&read.records);
        offset = next;
    }
    Ok(out)
}

/// A directory for one run, in memory when the machine has a tmpfs.
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().expect("create a temporary directory")
}

/// One small batch a producer could send.
fn valid_batch() -> &'static [u8] {
    static BATCH: OnceLock<Vec<u8>> = OnceLock::new();
    BATCH.get_or_init(|| oxbow_fuzz::encode_batch(1, 5, Compression::None))
}
