//! What the fuzz targets and the seed generator share: valid record batches encoded with the
//! broker's codec, and the CRC fix-up that lets mutated batches past the checksum.

use bytes::Bytes;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// Where a batch's CRC sits, and where the bytes it covers start.
const CRC_AT: usize = 17;
const CRC_COVERS_FROM: usize = 21;

/// One `RecordBatch` v2 of `count` keyed records, as a producer sends it (base offset 0).
pub fn encode_batch(count: usize, value_len: usize, compression: Compression) -> Vec<u8> {
    let records: Vec<Record> = (0..count)
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
            timestamp: 1_700_000_000_000 + i as i64,
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(vec![b'v'; value_len])),
            headers: IndexMap::new(),
        })
        .collect();
    let mut out = Vec::new();
    RecordBatchEncoder::encode(
        &mut out,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encoding a batch of plain records");
    out
}

/// Recomputes the CRC-32C of every batch the length fields frame, up to the first that does
/// not fit in `records`.
pub fn fix_crcs(records: &mut [u8]) {
    let mut at = 0;
    while let Some(length) = records.get(at + 8..at + 12) {
        let length = i32::from_be_bytes([length[0], length[1], length[2], length[3]]);
        let Some(end) = usize::try_from(length)
            .ok()
            .and_then(|l| (at + 12).checked_add(l))
        else {
            return;
        };
        if end > records.len() || end < at + CRC_COVERS_FROM {
            return;
        }
        let crc = crc32c::crc32c(&records[at + CRC_COVERS_FROM..end]);
        records[at + CRC_AT..at + CRC_COVERS_FROM].copy_from_slice(&crc.to_be_bytes());
        at = end;
    }
}
