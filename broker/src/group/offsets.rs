//! Committed offsets as records of the internal topic `__consumer_offsets`, in Kafka's own
//! key and value layouts, so they replicate and survive restarts like any other data.
//!
//! Key (OffsetCommitKey v1): `i16 version=1, string group, string topic, i32 partition`.
//! Value (OffsetCommitValue v3): `i16 version=3, i64 offset, i32 leader_epoch,
//! string metadata, i64 commit_timestamp`. A null value deletes the offset.
//! Strings are an `i16` length and UTF-8 bytes. Keys of version 2 are group metadata, which
//! this broker does not write and skips when loading.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// An offset a group committed for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

/// One change to a group's committed offsets: a new value, or `None` to delete it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetRecord {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub value: Option<CommittedOffset>,
}

const KEY_VERSION: i16 = 1;
const VALUE_VERSION: i16 = 3;

fn put_string(buf: &mut BytesMut, s: &str) {
    let len = i16::try_from(s.len()).unwrap_or(i16::MAX);
    buf.put_i16(len);
    buf.put_slice(&s.as_bytes()[..len as usize]);
}

fn get_string(buf: &mut Bytes) -> Option<String> {
    if buf.remaining() < 2 {
        return None;
    }
    let len = buf.get_i16();
    let len = usize::try_from(len).ok()?;
    if buf.remaining() < len {
        return None;
    }
    String::from_utf8(buf.split_to(len).to_vec()).ok()
}

fn encode_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(KEY_VERSION);
    put_string(&mut buf, group);
    put_string(&mut buf, topic);
    buf.put_i32(partition);
    buf.freeze()
}

fn encode_value(value: &CommittedOffset) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(VALUE_VERSION);
    buf.put_i64(value.offset);
    buf.put_i32(value.leader_epoch);
    put_string(&mut buf, &value.metadata);
    buf.put_i64(value.commit_timestamp);
    buf.freeze()
}

/// Decodes an offset record; `None` for keys of other kinds or malformed bytes.
fn decode(key: &Bytes, value: Option<&Bytes>) -> Option<OffsetRecord> {
    let mut key = key.clone();
    if key.remaining() < 2 {
        return None;
    }
    let version = key.get_i16();
    if !(0..=1).contains(&version) {
        return None;
    }
    let group = get_string(&mut key)?;
    let topic = get_string(&mut key)?;
    if key.remaining() < 4 {
        return None;
    }
    let partition = key.get_i32();
    let value = match value {
        None => None,
        Some(bytes) => {
            let mut v = bytes.clone();
            if v.remaining() < 10 {
                return None;
            }
            let version = v.get_i16();
            let offset = v.get_i64();
            let leader_epoch = if version >= 3 && v.remaining() >= 4 {
                v.get_i32()
            } else {
                -1
            };
            let metadata = get_string(&mut v)?;
            let commit_timestamp = if v.remaining() >= 8 { v.get_i64() } else { -1 };
            Some(CommittedOffset {
                offset,
                leader_epoch,
                metadata,
                commit_timestamp,
            })
        }
    };
    Some(OffsetRecord {
        group,
        topic,
        partition,
        value,
    })
}

/// Encodes changes as one uncompressed RecordBatch v2, ready to append.
pub fn encode_batch(records: &[OffsetRecord], timestamp: i64) -> anyhow::Result<Bytes> {
    encode(records, timestamp, None)
}

/// Encodes offsets a transactional producer commits (TxnOffsetCommit) as one transactional
/// batch of `producer`'s id and epoch: they take effect with the transaction's commit marker.
pub fn encode_transactional_batch(
    records: &[OffsetRecord],
    timestamp: i64,
    producer: (i64, i16),
) -> anyhow::Result<Bytes> {
    encode(records, timestamp, Some(producer))
}

fn encode(
    records: &[OffsetRecord],
    timestamp: i64,
    producer: Option<(i64, i16)>,
) -> anyhow::Result<Bytes> {
    let (producer_id, producer_epoch) = producer.unwrap_or((-1, -1));
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            transactional: producer.is_some(),
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch wherever offset minus sequence changes: keep it
            // constant so a commit is one batch (the coordinator's transactional batch is not
            // checked against the producer's sequences).
            sequence: i as i32,
            timestamp,
            key: Some(encode_key(&r.group, &r.topic, r.partition)),
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
    )?;
    Ok(buf.freeze())
}

/// What a `__consumer_offsets` partition holds, in log order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetEvent {
    /// An offset change; `producer` is set for one a transaction committed (or not yet).
    Offset {
        record: OffsetRecord,
        producer: Option<i64>,
    },
    /// A transaction marker: the producer's offsets take effect, or are dropped.
    Marker { producer_id: i64, commit: bool },
}

/// Decodes every offset change and transaction marker in a run of record batches read from
/// the log.
pub fn decode_batches(mut bytes: Bytes) -> anyhow::Result<Vec<OffsetEvent>> {
    let mut out = Vec::new();
    for set in RecordBatchDecoder::decode_all(&mut bytes)? {
        for record in set.records {
            if record.control {
                let mut key = record.key.clone().unwrap_or_default();
                if key.remaining() >= 4 {
                    let _version = key.get_i16();
                    let kind = key.get_i16();
                    if kind == 0 || kind == 1 {
                        out.push(OffsetEvent::Marker {
                            producer_id: record.producer_id,
                            commit: kind == 1,
                        });
                    }
                }
                continue;
            }
            if let Some(key) = &record.key {
                if let Some(decoded) = decode(key, record.value.as_ref()) {
                    out.push(OffsetEvent::Offset {
                        record: decoded,
                        producer: record.transactional.then_some(record.producer_id),
                    });
                }
            }
        }
    }
    Ok(out)
}

/// The `__consumer_offsets` partition that holds a group, as Kafka computes it: the Java
/// `String.hashCode` of the group id, made non-negative, modulo the partition count.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let hash = group.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    });
    (hash & 0x7fff_ffff) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_records_round_trip_through_a_record_batch() {
        let records = vec![
            OffsetRecord {
                group: "g".into(),
                topic: "orders".into(),
                partition: 3,
                value: Some(CommittedOffset {
                    offset: 42,
                    leader_epoch: 1,
                    metadata: "m".into(),
                    commit_timestamp: 1000,
                }),
            },
            OffsetRecord {
                group: "g".into(),
                topic: "orders".into(),
                partition: 4,
                value: None,
            },
        ];
        let batch = encode_batch(&records, 1000).expect("encodes");
        let decoded: Vec<OffsetRecord> = decode_batches(batch)
            .expect("decodes")
            .into_iter()
            .filter_map(|e| match e {
                OffsetEvent::Offset {
                    record,
                    producer: None,
                } => Some(record),
                _ => None,
            })
            .collect();
        assert_eq!(decoded, records);
    }

    #[test]
    fn transactional_offsets_of_several_partitions_are_one_batch_of_the_producer() {
        let records: Vec<OffsetRecord> = (0..3)
            .map(|partition| OffsetRecord {
                group: "g".into(),
                topic: "orders".into(),
                partition,
                value: Some(CommittedOffset {
                    offset: 7,
                    leader_epoch: -1,
                    metadata: String::new(),
                    commit_timestamp: 1,
                }),
            })
            .collect();
        let batch = encode_transactional_batch(&records, 1, (9, 2)).expect("encodes");
        let header = crate::log::BatchHeader::parse(&batch).expect("a header");
        assert_eq!(header.size(), batch.len(), "one batch");
        assert!(header.is_transactional());
        assert_eq!((header.producer_id, header.producer_epoch), (9, 2));
        let events = decode_batches(batch).expect("decodes");
        assert!(events.iter().all(|e| matches!(
            e,
            OffsetEvent::Offset {
                producer: Some(9),
                ..
            }
        )));
        assert_eq!(events.len(), 3);
    }

    #[test]
    fn group_partitions_match_kafkas_java_hash() {
        // Java: "hello".hashCode() == 99162322, and "polygenelubricants".hashCode() is
        // Integer.MIN_VALUE, which Kafka's Utils.abs maps to 0.
        assert_eq!(partition_for("hello", 50), 99_162_322 % 50);
        assert_eq!(partition_for("polygenelubricants", 50), 0);
        assert_eq!(partition_for("", 50), 0);
    }
}
