//! Transaction metadata as records of the internal topic `__transaction_state`, in Kafka's
//! key and value layouts (`TransactionLogKey` v0, `TransactionLogValue` v0), so the
//! coordinator's state replicates and survives restarts like any other data.
//!
//! Key: `i16 version = 0, string transactional_id`.
//! Value: `i16 version = 0, i64 producer_id, i16 producer_epoch, i32 timeout_ms, i8 state,
//! [string topic, [i32 partition]] partitions (null: none), i64 last_update_ms, i64 start_ms`.
//! A null value removes an expired transactional id. Strings are an `i16` length and UTF-8
//! bytes, arrays an `i32` count.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::TxnState;
use crate::log::fields::{get_string, put_string};

/// One transactional id's stored state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnValue {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: Vec<(String, Vec<i32>)>,
    pub last_update_ms: i64,
    pub start_ms: i64,
}

/// One change to the coordinator's state: a new value, or `None` to forget the id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnRecord {
    pub transactional_id: String,
    pub value: Option<TxnValue>,
}

const KEY_VERSION: i16 = 0;
const VALUE_VERSION: i16 = 0;

fn get_count(buf: &mut Bytes) -> Option<Option<usize>> {
    if buf.remaining() < 4 {
        return None;
    }
    let count = buf.get_i32();
    if count < 0 {
        return Some(None);
    }
    let count = usize::try_from(count).ok()?;
    // Every element takes at least 2 bytes: a count past the bytes left is corrupt.
    (count <= buf.remaining()).then_some(Some(count))
}

fn encode_key(transactional_id: &str) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(KEY_VERSION);
    put_string(&mut buf, transactional_id);
    buf.freeze()
}

fn encode_value(value: &TxnValue) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(VALUE_VERSION);
    buf.put_i64(value.producer_id);
    buf.put_i16(value.producer_epoch);
    buf.put_i32(value.timeout_ms);
    buf.put_i8(value.state.id());
    buf.put_i32(i32::try_from(value.partitions.len()).unwrap_or(i32::MAX));
    for (topic, partitions) in &value.partitions {
        put_string(&mut buf, topic);
        buf.put_i32(i32::try_from(partitions.len()).unwrap_or(i32::MAX));
        for p in partitions {
            buf.put_i32(*p);
        }
    }
    buf.put_i64(value.last_update_ms);
    buf.put_i64(value.start_ms);
    buf.freeze()
}

fn decode_value(mut v: Bytes) -> Option<TxnValue> {
    if v.remaining() < 2 + 8 + 2 + 4 + 1 {
        return None;
    }
    let _version = v.get_i16();
    let producer_id = v.get_i64();
    let producer_epoch = v.get_i16();
    let timeout_ms = v.get_i32();
    let state = TxnState::from_id(v.get_i8())?;
    let mut partitions = Vec::new();
    if let Some(count) = get_count(&mut v)? {
        for _ in 0..count {
            let topic = get_string(&mut v)?;
            let ids = match get_count(&mut v)? {
                Some(n) if v.remaining() >= 4 * n => (0..n).map(|_| v.get_i32()).collect(),
                Some(_) => return None,
                None => Vec::new(),
            };
            partitions.push((topic, ids));
        }
    }
    if v.remaining() < 16 {
        return None;
    }
    Some(TxnValue {
        producer_id,
        producer_epoch,
        timeout_ms,
        state,
        partitions,
        last_update_ms: v.get_i64(),
        start_ms: v.get_i64(),
    })
}

fn decode(key: &Bytes, value: Option<&Bytes>) -> Option<TxnRecord> {
    let mut key = key.clone();
    if key.remaining() < 2 || key.get_i16() != KEY_VERSION {
        return None;
    }
    let transactional_id = get_string(&mut key)?;
    let value = match value {
        None => None,
        Some(bytes) => Some(decode_value(bytes.clone())?),
    };
    Some(TxnRecord {
        transactional_id,
        value,
    })
}

/// Encodes changes as one uncompressed RecordBatch v2, ready to append.
pub fn encode_batch(records: &[TxnRecord], timestamp: i64) -> Result<Bytes, String> {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32,
            timestamp,
            key: Some(encode_key(&r.transactional_id)),
            value: r.value.as_ref().map(encode_value),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| format!("encoding transaction state: {e}"))?;
    Ok(buf.freeze())
}

/// Decodes every transaction record in a run of record batches read from the log; records
/// that do not decode are skipped.
pub fn decode_batches(mut bytes: Bytes) -> Result<Vec<TxnRecord>, String> {
    let mut out = Vec::new();
    let sets = RecordBatchDecoder::decode_all(&mut bytes).map_err(|e| e.to_string())?;
    for set in sets {
        for record in set.records {
            if record.control {
                continue;
            }
            if let Some(key) = &record.key {
                if let Some(decoded) = decode(key, record.value.as_ref()) {
                    out.push(decoded);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn transaction_records_round_trip_through_a_record_batch() {
        let records = vec![
            TxnRecord {
                transactional_id: "app-1".to_string(),
                value: Some(TxnValue {
                    producer_id: 4000,
                    producer_epoch: 3,
                    timeout_ms: 60_000,
                    state: TxnState::Ongoing,
                    partitions: vec![
                        ("orders".to_string(), vec![0, 2]),
                        ("__consumer_offsets".to_string(), vec![17]),
                    ],
                    last_update_ms: 20,
                    start_ms: 10,
                }),
            },
            TxnRecord {
                transactional_id: "expired".to_string(),
                value: None,
            },
        ];
        let batch = encode_batch(&records, 99).unwrap();
        assert_eq!(decode_batches(batch).unwrap(), records);
    }

    #[test]
    fn a_corrupt_value_is_skipped_not_trusted() {
        let mut value = BytesMut::new();
        value.put_i16(0);
        value.put_i64(1);
        value.put_i16(0);
        value.put_i32(1000);
        value.put_i8(1);
        value.put_i32(1_000_000);
        assert_eq!(decode(&encode_key("x"), Some(&value.freeze())), None);
    }
}
