//! Transaction markers: the control batches that end a producer's transaction in a partition
//! (KIP-98). A marker is a transactional, control `RecordBatch` v2 of one uncompressed record,
//! with the producer's id and epoch and no sequence:
//!
//! - key: `i16 version = 0, i16 type` (0 abort, 1 commit);
//! - value: `i16 version = 0, i32 coordinator_epoch`.
//!
//! Only the transaction coordinator writes them (through WriteTxnMarkers); a producer's
//! control batch is refused.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::batch::BatchHeader;

const ABORT: i16 = 0;
const COMMIT: i16 = 1;

/// What a marker says about the transaction it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub commit: bool,
    pub coordinator_epoch: i32,
}

/// A marker batch for `producer_id` at `producer_epoch`, ready to append (offsets and leader
/// epoch are assigned by the log).
pub fn marker_batch(
    producer_id: i64,
    producer_epoch: i16,
    marker: Marker,
    timestamp: i64,
) -> Result<Bytes, String> {
    let mut key = BytesMut::with_capacity(4);
    key.put_i16(0);
    key.put_i16(if marker.commit { COMMIT } else { ABORT });
    let mut value = BytesMut::with_capacity(6);
    value.put_i16(0);
    value.put_i32(marker.coordinator_epoch);
    let record = Record {
        transactional: true,
        control: true,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id,
        producer_epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp,
        key: Some(key.freeze()),
        value: Some(value.freeze()),
        headers: IndexMap::new(),
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        [record].iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| format!("encoding a transaction marker: {e}"))?;
    Ok(buf.freeze())
}

/// The marker a control batch carries; `None` for another batch, or a control record of a
/// kind other than a transaction marker (Kafka has others, which end no transaction).
pub fn parse_marker(header: &BatchHeader, batch: &[u8]) -> Option<Marker> {
    if !header.is_control() || !header.is_transactional() {
        return None;
    }
    let mut bytes = Bytes::copy_from_slice(batch);
    let sets = RecordBatchDecoder::decode_all(&mut bytes).ok()?;
    let record = sets.into_iter().next()?.records.into_iter().next()?;
    let mut key = record.key?;
    if key.remaining() < 4 {
        return None;
    }
    let _version = key.get_i16();
    let kind = key.get_i16();
    let coordinator_epoch = match record.value {
        Some(mut value) if value.remaining() >= 6 => {
            let _version = value.get_i16();
            value.get_i32()
        }
        _ => 0,
    };
    match kind {
        ABORT | COMMIT => Some(Marker {
            commit: kind == COMMIT,
            coordinator_epoch,
        }),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::log::batch::{split_produced, CountRule};

    #[test]
    fn a_marker_batch_is_a_valid_transactional_control_batch_that_parses_back() {
        for commit in [true, false] {
            let marker = Marker {
                commit,
                coordinator_epoch: 7,
            };
            let bytes = marker_batch(42, 3, marker, 1_000).unwrap();
            let batches = split_produced(&bytes, usize::MAX).unwrap();
            assert_eq!(batches.len(), 1);
            let header = batches[0].header;
            assert!(header.is_control() && header.is_transactional());
            assert_eq!((header.producer_id, header.producer_epoch), (42, 3));
            assert_eq!(header.base_sequence, -1);
            crate::log::batch::check_batch(&bytes, CountRule::Stored).unwrap();
            assert_eq!(parse_marker(&header, &bytes), Some(marker));
        }
    }

    #[test]
    fn a_data_batch_is_no_marker() {
        let marker = Marker {
            commit: true,
            coordinator_epoch: 0,
        };
        let bytes = marker_batch(1, 0, marker, 0).unwrap();
        let mut header = BatchHeader::parse(&bytes).unwrap();
        header.attributes &= !(1 << 5);
        assert_eq!(parse_marker(&header, &bytes), None);
    }
}
