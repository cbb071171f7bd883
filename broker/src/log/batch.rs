//! Kafka `RecordBatch` v2 framing: header parsing, validation of produced batches, and the
//! two header fields the broker patches before writing a batch to the log.
//!
//! A batch is stored in the `.log` exactly as it travels on the wire, unless the topic's
//! `compression.type` re-compresses its records (see `compression`). All integers are
//! big-endian; the 61-byte header is:
//!
//! | bytes  | field                | type | notes                                        |
//! |--------|----------------------|------|----------------------------------------------|
//! | 0..8   | baseOffset           | i64  | assigned by the broker                       |
//! | 8..12  | batchLength          | i32  | bytes after this field, so size = 12 + this  |
//! | 12..16 | partitionLeaderEpoch | i32  | assigned by the broker                       |
//! | 16     | magic                | i8   | always 2 here                                |
//! | 17..21 | crc                  | u32  | CRC-32C (Castagnoli) of bytes 21..end        |
//! | 21..23 | attributes           | i16  | bits 0-2 codec, 3 log-append time, 4 txn, 5 control |
//! | 23..27 | lastOffsetDelta      | i32  | last record offset minus baseOffset          |
//! | 27..35 | baseTimestamp        | i64  |                                              |
//! | 35..43 | maxTimestamp         | i64  |                                              |
//! | 43..51 | producerId           | i64  |                                              |
//! | 51..53 | producerEpoch        | i16  |                                              |
//! | 53..57 | baseSequence         | i32  |                                              |
//! | 57..61 | recordsCount         | i32  |                                              |
//!
//! The records follow, compressed as one block when the codec bits say so. Because the CRC
//! starts at `attributes`, the broker can assign `baseOffset` and `partitionLeaderEpoch`
//! without recomputing it.
//!
//! Compaction may leave a batch with fewer records than its offset range spans, even none:
//! `lastOffsetDelta` keeps the original batch's last offset (so the producer's last sequence
//! number survives), and `recordsCount` counts what is left. An empty batch is a bare
//! uncompressed header ([`empty_batch`]), as Kafka writes for a producer's last batch.

use kafka_protocol::records::{Compression, TimestampType};

/// Size of the fixed `RecordBatch` v2 header.
pub const HEADER_SIZE: usize = 61;
/// Bytes before `batchLength`'s count starts (`baseOffset` and `batchLength`).
pub const LOG_OVERHEAD: usize = 12;
/// Smallest legal `batchLength`: a header with no records.
pub const MIN_BATCH_LENGTH: i32 = (HEADER_SIZE - LOG_OVERHEAD) as i32;
/// The only record format this log stores.
pub const MAGIC_V2: i8 = 2;

const LENGTH_AT: usize = 8;
const LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const MAX_TIMESTAMP_AT: usize = 35;
/// The CRC covers everything from `attributes` on.
const CRC_COVERS_FROM: usize = 21;

/// The attribute bits that name the codec.
pub(crate) const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 1 << 3;
const TRANSACTIONAL_BIT: i16 = 1 << 4;
const CONTROL_BIT: i16 = 1 << 5;

/// The fixed header of a `RecordBatch` v2, as parsed from its first [`HEADER_SIZE`] bytes.
///
/// Parsing checks nothing but the length of the input: use it on batches that are already
/// validated (read from the log), or validate the fields yourself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Parses the header at the start of `buf`; `None` when `buf` is shorter than a header.
    pub fn parse(buf: &[u8]) -> Option<BatchHeader> {
        let h = buf.get(..HEADER_SIZE)?;
        Some(BatchHeader {
            base_offset: i64::from_be_bytes(array(h, 0)),
            batch_length: i32::from_be_bytes(array(h, LENGTH_AT)),
            partition_leader_epoch: i32::from_be_bytes(array(h, LEADER_EPOCH_AT)),
            magic: i8::from_be_bytes(array(h, MAGIC_AT)),
            crc: u32::from_be_bytes(array(h, CRC_AT)),
            attributes: i16::from_be_bytes(array(h, 21)),
            last_offset_delta: i32::from_be_bytes(array(h, 23)),
            base_timestamp: i64::from_be_bytes(array(h, 27)),
            max_timestamp: i64::from_be_bytes(array(h, 35)),
            producer_id: i64::from_be_bytes(array(h, 43)),
            producer_epoch: i16::from_be_bytes(array(h, 51)),
            base_sequence: i32::from_be_bytes(array(h, 53)),
            records_count: i32::from_be_bytes(array(h, 57)),
        })
    }

    /// Total bytes the batch occupies, header included (0 for a negative `batchLength`).
    pub fn size(&self) -> usize {
        LOG_OVERHEAD + usize::try_from(self.batch_length).unwrap_or(0)
    }

    /// Offset of the batch's last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }

    /// The compression codec; `None` for a codec id Kafka does not define.
    pub fn compression(&self) -> Option<Compression> {
        match self.attributes & COMPRESSION_MASK {
            0 => Some(Compression::None),
            1 => Some(Compression::Gzip),
            2 => Some(Compression::Snappy),
            3 => Some(Compression::Lz4),
            4 => Some(Compression::Zstd),
            _ => None,
        }
    }

    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppend
        } else {
            TimestampType::Creation
        }
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }
}

fn array<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&buf[at..at + N]);
    out
}

/// Reads `batchLength` from the first [`LOG_OVERHEAD`] bytes of a batch.
pub(crate) fn batch_length(buf: &[u8]) -> Option<i32> {
    let b = buf.get(LENGTH_AT..LOG_OVERHEAD)?;
    Some(i32::from_be_bytes(array(b, 0)))
}

/// Why a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchFault {
    UnsupportedMagic(i8),
    Invalid(String),
}

impl std::fmt::Display for BatchFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchFault::UnsupportedMagic(magic) => write!(f, "unsupported magic {magic}"),
            BatchFault::Invalid(reason) => f.write_str(reason),
        }
    }
}

/// How strictly the record count is checked against the offset range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountRule {
    /// A producer's batch: `recordsCount == lastOffsetDelta + 1 > 0`, as Kafka's
    /// `LogValidator` requires.
    Produced,
    /// A batch already in the log: compaction may leave fewer records than the offset
    /// range spans, even none.
    Stored,
}

/// Checks the header fields of a batch whose framing is known to be sound.
pub(crate) fn check_header(header: &BatchHeader, rule: CountRule) -> Result<(), BatchFault> {
    if header.magic != MAGIC_V2 {
        return Err(BatchFault::UnsupportedMagic(header.magic));
    }
    if header.last_offset_delta < 0 {
        return Err(BatchFault::Invalid(format!(
            "negative lastOffsetDelta {}",
            header.last_offset_delta
        )));
    }
    if header.records_count < 0 {
        return Err(BatchFault::Invalid(format!(
            "negative recordsCount {}",
            header.records_count
        )));
    }
    if header.compression().is_none() {
        return Err(BatchFault::Invalid(format!(
            "unknown compression codec {}",
            header.attributes & COMPRESSION_MASK
        )));
    }
    if rule == CountRule::Produced
        && i64::from(header.records_count) != i64::from(header.last_offset_delta) + 1
    {
        return Err(BatchFault::Invalid(format!(
            "recordsCount {} does not match lastOffsetDelta {}",
            header.records_count, header.last_offset_delta
        )));
    }
    Ok(())
}

/// Validates one complete batch: `batch` must be exactly the batch's bytes.
pub fn check_batch(batch: &[u8], rule: CountRule) -> Result<BatchHeader, BatchFault> {
    let header = BatchHeader::parse(batch).ok_or_else(|| {
        BatchFault::Invalid(format!(
            "{} bytes is shorter than a batch header",
            batch.len()
        ))
    })?;
    if header.size() != batch.len() {
        return Err(BatchFault::Invalid(format!(
            "batchLength {} does not frame the {} bytes given",
            header.batch_length,
            batch.len()
        )));
    }
    // Magic first: other versions have a different layout, so their CRC means nothing here.
    if header.magic != MAGIC_V2 {
        return Err(BatchFault::UnsupportedMagic(header.magic));
    }
    let computed = crc32c::crc32c(&batch[CRC_COVERS_FROM..]);
    if computed != header.crc {
        return Err(BatchFault::Invalid(format!(
            "CRC-32C mismatch: header says {:#010x}, content has {computed:#010x}",
            header.crc
        )));
    }
    check_header(&header, rule)?;
    Ok(header)
}

/// One validated batch of an append: where it starts in the appended bytes and its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducedBatch {
    pub start: usize,
    pub header: BatchHeader,
}

/// Splits a produce request's records into batches, validating every one of them.
pub fn split_produced(
    records: &[u8],
    max_batch_bytes: usize,
) -> Result<Vec<ProducedBatch>, ProduceFault> {
    split(records, max_batch_bytes, CountRule::Produced)
}

/// Splits records into batches, validating the framing, magic and CRC of every one and its
/// header fields by `rule`: [`CountRule::Produced`] for a producer's request,
/// [`CountRule::Stored`] for batches a leader fetched from its log (compaction may have
/// thinned them).
pub fn split(
    records: &[u8],
    max_batch_bytes: usize,
    rule: CountRule,
) -> Result<Vec<ProducedBatch>, ProduceFault> {
    if records.is_empty() {
        return Err(ProduceFault::Invalid("no record batches".to_owned()));
    }
    let mut batches = Vec::new();
    let mut start = 0;
    while start < records.len() {
        let index = batches.len();
        let rest = &records[start..];
        let fault = |reason: String| {
            ProduceFault::Invalid(format!("batch {index} at byte {start}: {reason}"))
        };
        let length = batch_length(rest).ok_or_else(|| {
            fault(format!(
                "{} trailing bytes cannot hold a batch's offset and length",
                rest.len()
            ))
        })?;
        if length < MIN_BATCH_LENGTH {
            return Err(fault(format!(
                "batchLength {length} is below the minimum of {MIN_BATCH_LENGTH}"
            )));
        }
        let size = LOG_OVERHEAD + usize::try_from(length).unwrap_or(usize::MAX - LOG_OVERHEAD);
        if size > rest.len() {
            return Err(fault(format!(
                "batchLength {length} needs {size} bytes but only {} remain",
                rest.len()
            )));
        }
        let magic = i8::from_be_bytes([rest[MAGIC_AT]]);
        if magic != MAGIC_V2 {
            return Err(ProduceFault::UnsupportedMagic(magic));
        }
        if size > max_batch_bytes {
            return Err(ProduceFault::TooLarge {
                size,
                max: max_batch_bytes,
            });
        }
        let header = check_batch(&rest[..size], rule).map_err(|f| match f {
            BatchFault::UnsupportedMagic(magic) => ProduceFault::UnsupportedMagic(magic),
            BatchFault::Invalid(reason) => fault(reason),
        })?;
        batches.push(ProducedBatch { start, header });
        start += size;
    }
    Ok(batches)
}

/// Why a produce request's records were refused; mapped onto `AppendError` by the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProduceFault {
    Invalid(String),
    UnsupportedMagic(i8),
    TooLarge { size: usize, max: usize },
}

/// A batch with `header`'s offsets, timestamps, producer fields and flags but no records.
/// It is uncompressed whatever `header` says: there is nothing to compress, and an empty
/// payload is not a valid stream for every codec.
pub(crate) fn empty_batch(header: &BatchHeader) -> [u8; HEADER_SIZE] {
    let mut out = [0; HEADER_SIZE];
    out[..LENGTH_AT].copy_from_slice(&header.base_offset.to_be_bytes());
    out[LENGTH_AT..LEADER_EPOCH_AT].copy_from_slice(&MIN_BATCH_LENGTH.to_be_bytes());
    out[LEADER_EPOCH_AT..MAGIC_AT].copy_from_slice(&header.partition_leader_epoch.to_be_bytes());
    out[MAGIC_AT] = MAGIC_V2.to_be_bytes()[0];
    let attributes = header.attributes & !COMPRESSION_MASK;
    out[ATTRIBUTES_AT..LAST_OFFSET_DELTA_AT].copy_from_slice(&attributes.to_be_bytes());
    out[LAST_OFFSET_DELTA_AT..27].copy_from_slice(&header.last_offset_delta.to_be_bytes());
    out[27..MAX_TIMESTAMP_AT].copy_from_slice(&header.base_timestamp.to_be_bytes());
    out[MAX_TIMESTAMP_AT..43].copy_from_slice(&header.max_timestamp.to_be_bytes());
    out[43..51].copy_from_slice(&header.producer_id.to_be_bytes());
    out[51..53].copy_from_slice(&header.producer_epoch.to_be_bytes());
    out[53..57].copy_from_slice(&header.base_sequence.to_be_bytes());
    out[57..HEADER_SIZE].copy_from_slice(&0i32.to_be_bytes());
    let crc = crc32c::crc32c(&out[CRC_COVERS_FROM..]);
    out[CRC_AT..CRC_COVERS_FROM].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Rewrites header fields the CRC covers in a whole `batch`, then its CRC: the cleaner uses
/// it to restore what the record encoder cannot express (the timestamp type, the original
/// last offset, a log-append max timestamp).
pub(crate) fn restamp(
    batch: &mut [u8],
    attributes: i16,
    last_offset_delta: i32,
    max_timestamp: i64,
) {
    let (header, records) = batch.split_at_mut(HEADER_SIZE);
    restamp_header(
        header,
        records,
        attributes,
        last_offset_delta,
        max_timestamp,
    );
}

/// [`restamp`] for a batch held in two parts: its `header` (the first [`HEADER_SIZE`]
/// bytes, rewritten) and the `records` after it (only read, for the CRC).
pub(crate) fn restamp_header(
    header: &mut [u8],
    records: &[u8],
    attributes: i16,
    last_offset_delta: i32,
    max_timestamp: i64,
) {
    header[ATTRIBUTES_AT..LAST_OFFSET_DELTA_AT].copy_from_slice(&attributes.to_be_bytes());
    header[LAST_OFFSET_DELTA_AT..27].copy_from_slice(&last_offset_delta.to_be_bytes());
    header[MAX_TIMESTAMP_AT..43].copy_from_slice(&max_timestamp.to_be_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&header[CRC_COVERS_FROM..]), records);
    header[CRC_AT..CRC_COVERS_FROM].copy_from_slice(&crc.to_be_bytes());
}

/// The attribute bits that say the timestamps are the broker's append time.
pub(crate) const LOG_APPEND_TIME_ATTRIBUTE: i16 = TIMESTAMP_TYPE_BIT;

/// Writes `batchLength` (not covered by the CRC) into a batch whose records changed size.
pub(crate) fn set_length(batch: &mut [u8], length: i32) {
    batch[LENGTH_AT..LEADER_EPOCH_AT].copy_from_slice(&length.to_be_bytes());
}

/// Writes the broker-assigned fields into a batch. Neither is covered by the CRC.
pub(crate) fn assign(batch: &mut [u8], base_offset: i64, leader_epoch: i32) {
    batch[..LENGTH_AT].copy_from_slice(&base_offset.to_be_bytes());
    batch[LEADER_EPOCH_AT..MAGIC_AT].copy_from_slice(&leader_epoch.to_be_bytes());
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions};

    /// Encodes one uncompressed batch of `records` records, each carrying `value_len` bytes,
    /// with timestamps `timestamp, timestamp + 1, ...`, using the real Kafka codec.
    pub(crate) fn encode_batch(records: usize, value_len: usize, timestamp: i64) -> Vec<u8> {
        encode_batch_with(records, value_len, timestamp, Compression::None)
    }

    pub(crate) fn encode_batch_with(
        records: usize,
        value_len: usize,
        timestamp: i64,
        compression: Compression,
    ) -> Vec<u8> {
        let records: Vec<Record> = (0..records)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // The encoder starts a new batch whenever `offset - sequence` changes.
                sequence: i as i32,
                timestamp: timestamp + i as i64,
                key: Some(Bytes::from(format!("key-{i}"))),
                value: Some(Bytes::from(vec![b'v'; value_len])),
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
        .expect("encoding a test batch");
        buf
    }

    #[test]
    fn header_of_an_encoded_batch_reads_back_every_field() {
        let batch = encode_batch(3, 10, 1_000);
        let header = BatchHeader::parse(&batch).unwrap();
        assert_eq!(header.base_offset, 0);
        assert_eq!(header.size(), batch.len());
        assert_eq!(header.magic, 2);
        assert_eq!(header.last_offset_delta, 2);
        assert_eq!(header.records_count, 3);
        assert_eq!(header.base_timestamp, 1_000);
        assert_eq!(header.max_timestamp, 1_002);
        assert_eq!(header.producer_id, -1);
        assert_eq!(header.compression(), Some(Compression::None));
        assert_eq!(header.timestamp_type(), TimestampType::Creation);
        assert!(!header.is_transactional());
        assert!(!header.is_control());
    }

    #[test]
    fn parse_refuses_input_shorter_than_a_header() {
        let batch = encode_batch(1, 0, 0);
        assert!(BatchHeader::parse(&batch[..HEADER_SIZE - 1]).is_none());
        assert!(BatchHeader::parse(&batch[..HEADER_SIZE]).is_some());
    }

    #[test]
    fn assigning_offset_and_epoch_keeps_the_crc_valid() {
        let mut batch = encode_batch(2, 5, 7);
        assign(&mut batch, 1234, 9);
        let header = check_batch(&batch, CountRule::Produced).unwrap();
        assert_eq!(header.base_offset, 1234);
        assert_eq!(header.partition_leader_epoch, 9);
        assert_eq!(header.last_offset(), 1235);
    }

    #[test]
    fn compressed_batches_validate_like_plain_ones() {
        let batch = encode_batch_with(20, 100, 0, Compression::Gzip);
        let header = check_batch(&batch, CountRule::Produced).unwrap();
        assert_eq!(header.compression(), Some(Compression::Gzip));
        assert_eq!(header.records_count, 20);
    }

    #[test]
    fn several_batches_in_one_request_are_split_at_their_boundaries() {
        let first = encode_batch(2, 1, 0);
        let second = encode_batch(5, 1, 0);
        let records = [first.clone(), second].concat();
        let batches = split_produced(&records, usize::MAX).unwrap();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].start, 0);
        assert_eq!(batches[1].start, first.len());
        assert_eq!(batches[1].header.records_count, 5);
    }

    #[test]
    fn a_flipped_payload_bit_fails_the_crc_and_names_the_batch() {
        let mut records = [encode_batch(1, 4, 0), encode_batch(1, 4, 0)].concat();
        let last = records.len() - 1;
        records[last] ^= 0x40;
        let fault = split_produced(&records, usize::MAX).unwrap_err();
        let ProduceFault::Invalid(reason) = fault else {
            panic!("expected a CRC failure, got {fault:?}")
        };
        assert!(reason.starts_with("batch 1 at byte"), "{reason}");
        assert!(reason.contains("CRC"), "{reason}");
    }

    #[test]
    fn trailing_bytes_after_the_last_batch_are_refused() {
        let mut records = encode_batch(1, 4, 0);
        records.extend_from_slice(&[0; 5]);
        assert!(matches!(
            split_produced(&records, usize::MAX),
            Err(ProduceFault::Invalid(reason)) if reason.contains("trailing")
        ));
    }

    #[test]
    fn a_batch_length_below_the_header_size_is_refused() {
        let mut records = encode_batch(1, 4, 0);
        records[8..12].copy_from_slice(&48i32.to_be_bytes());
        assert!(matches!(
            split_produced(&records, usize::MAX),
            Err(ProduceFault::Invalid(reason)) if reason.contains("minimum")
        ));
    }

    #[test]
    fn record_count_must_match_the_offset_range_of_a_produced_batch() {
        let mut batch = encode_batch(3, 4, 0);
        batch[57..61].copy_from_slice(&2i32.to_be_bytes());
        let crc = crc32c::crc32c(&batch[CRC_COVERS_FROM..]);
        batch[CRC_AT..CRC_COVERS_FROM].copy_from_slice(&crc.to_be_bytes());
        assert!(check_batch(&batch, CountRule::Produced).is_err());
        assert!(check_batch(&batch, CountRule::Stored).is_ok());
    }

    #[test]
    fn an_empty_batch_keeps_the_offsets_and_producer_of_the_original_and_validates() {
        let mut original = encode_batch_with(4, 10, 500, Compression::Gzip);
        assign(&mut original, 100, 3);
        let header = BatchHeader::parse(&original).unwrap();
        let empty = empty_batch(&header);
        let stored = check_batch(&empty, CountRule::Stored).unwrap();
        assert_eq!(stored.base_offset, 100);
        assert_eq!(stored.last_offset(), 103);
        assert_eq!(stored.records_count, 0);
        assert_eq!(stored.compression(), Some(Compression::None));
        assert_eq!((stored.base_timestamp, stored.max_timestamp), (500, 503));
        assert_eq!(stored.partition_leader_epoch, 3);
        assert!(check_batch(&empty, CountRule::Produced).is_err());
    }

    #[test]
    fn restamping_rewrites_the_fields_and_keeps_the_crc_valid() {
        let mut batch = encode_batch(2, 5, 7);
        restamp(&mut batch, LOG_APPEND_TIME_ATTRIBUTE, 9, 1_234);
        let header = check_batch(&batch, CountRule::Stored).unwrap();
        assert_eq!(header.timestamp_type(), TimestampType::LogAppend);
        assert_eq!((header.last_offset_delta, header.max_timestamp), (9, 1_234));
    }

    // Inputs the `batch` fuzz target found (fuzz/fuzz_targets/batch.rs), as the broker
    // receives them. The codec decodes a produce request's records before the log validates
    // them for a compacted topic's key check, and the cleaner decodes stored batches.

    fn decode_all(records: &[u8]) -> anyhow::Result<usize> {
        let sets = kafka_protocol::records::RecordBatchDecoder::decode_all(
            &mut Bytes::copy_from_slice(records),
        )?;
        Ok(sets.iter().map(|set| set.records.len()).sum())
    }

    #[test]
    fn a_batch_claiming_millions_of_records_is_refused_without_reserving_for_them() {
        let fuzzed = include_bytes!("testdata/batch-record-count-oom.bin");
        assert_eq!(
            BatchHeader::parse(fuzzed).unwrap().records_count,
            17_039_359
        );
        assert!(split_produced(fuzzed, usize::MAX).is_err());
        assert!(decode_all(fuzzed).is_err());
        // The same forgery at the largest count: reserving for it aborted the process.
        let mut forged = fuzzed[..HEADER_SIZE].to_vec();
        forged[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        let crc = crc32c::crc32c(&forged[CRC_COVERS_FROM..]);
        forged[CRC_AT..CRC_COVERS_FROM].copy_from_slice(&crc.to_be_bytes());
        assert!(decode_all(&forged).is_err());
    }

    #[test]
    fn a_snappy_batch_claiming_gigabytes_is_refused_before_allocating_them() {
        let fuzzed = include_bytes!("testdata/batch-snappy-length-oom.bin");
        let first = BatchHeader::parse(fuzzed).unwrap();
        assert_eq!(first.compression(), Some(Compression::Snappy));
        assert!(check_batch(&fuzzed[..first.size()], CountRule::Stored).is_ok());
        let error = decode_all(&fuzzed[..first.size()]).unwrap_err();
        assert!(
            format!("{error:#}").contains("claims to decompress to"),
            "{error:#}"
        );
    }

    #[test]
    fn a_compressed_batch_expanding_past_the_decompression_bound_is_refused() {
        const MIB: usize = 1024 * 1024;
        for compression in [Compression::Gzip, Compression::Lz4, Compression::Zstd] {
            let within = encode_batch_with(60, MIB, 0, compression);
            assert_eq!(decode_all(&within).unwrap(), 60, "{compression:?}");
            // 65 MiB of one repeated byte shrinks to a few hundred kilobytes.
            let bomb = encode_batch_with(65, MIB, 0, compression);
            assert!(bomb.len() < MIB, "{compression:?}: {} bytes", bomb.len());
            let error = decode_all(&bomb).unwrap_err();
            assert!(
                format!("{error:#}").contains("decompresses to more than"),
                "{compression:?}: {error:#}"
            );
        }
    }

    #[test]
    fn a_record_timestamp_past_the_largest_long_is_an_error_not_a_panic() {
        let fuzzed = include_bytes!("testdata/batch-timestamp-overflow.bin");
        let first = BatchHeader::parse(fuzzed).unwrap();
        assert!(check_batch(&fuzzed[..first.size()], CountRule::Produced).is_ok());
        assert!(decode_all(&fuzzed[..first.size()]).is_err());
        assert!(split_produced(fuzzed, usize::MAX).is_err());
        assert!(decode_all(fuzzed).is_err());
    }

    #[test]
    fn an_oversized_batch_is_reported_with_its_size() {
        let batch = encode_batch(1, 100, 0);
        assert_eq!(
            split_produced(&batch, 100),
            Err(ProduceFault::TooLarge {
                size: batch.len(),
                max: 100
            })
        );
    }
}
