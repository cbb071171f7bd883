//! Committed offsets as records of the internal topic `__consumer_offsets`, in Kafka's own
//! key and value layouts, so they replicate and survive restarts like any other data.
//!
//! Key (OffsetCommitKey v1): `i16 version=1, string group, string topic, i32 partition`.
//! Value (OffsetCommitValue v3): `i16 version=3, i64 offset, i32 leader_epoch,
//! string metadata, i64 commit_timestamp`. A null value deletes the offset.
//! Strings are an `i16` length and UTF-8 bytes (nullable ones -1 for null), bytes an `i32`
//! length.
//!
//! Group metadata, written when a rebalance completes so that a broker taking over the group
//! knows its members: key (GroupMetadataKey v2) `i16 version=2, string group`; value
//! (GroupMetadataValue v3) `i16 version=3, string protocol_type, i32 generation,
//! nullable string protocol, nullable string leader, i64 current_state_timestamp`, then an
//! `i32` count of members, each `string member_id, nullable string group_instance_id,
//! string client_id, string client_host, i32 rebalance_timeout, i32 session_timeout,
//! bytes subscription, bytes assignment`. A null value removes the group.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use indexmap::IndexMap;

use crate::log::fields::{
    get_bytes, get_i32, get_nullable_string, get_string, put_bytes, put_nullable_string, put_string,
};
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
const GROUP_KEY_VERSION: i16 = 2;
const GROUP_VALUE_VERSION: i16 = 3;

/// A group's membership as of its last completed rebalance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMetadata {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub current_state_timestamp: i64,
    pub members: Vec<MemberMetadata>,
}

/// One member of a [`GroupMetadata`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberMetadata {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// The member's metadata for the group's protocol.
    pub subscription: Bytes,
    pub assignment: Bytes,
}

fn encode_group_key(group: &str) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(GROUP_KEY_VERSION);
    put_string(&mut buf, group);
    buf.freeze()
}

fn encode_group_value(value: &GroupMetadata) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(GROUP_VALUE_VERSION);
    put_string(&mut buf, &value.protocol_type);
    buf.put_i32(value.generation);
    put_nullable_string(&mut buf, value.protocol.as_deref());
    put_nullable_string(&mut buf, value.leader.as_deref());
    buf.put_i64(value.current_state_timestamp);
    buf.put_i32(i32::try_from(value.members.len()).unwrap_or(i32::MAX));
    for member in &value.members {
        put_string(&mut buf, &member.member_id);
        put_nullable_string(&mut buf, member.group_instance_id.as_deref());
        put_string(&mut buf, &member.client_id);
        put_string(&mut buf, &member.client_host);
        buf.put_i32(member.rebalance_timeout_ms);
        buf.put_i32(member.session_timeout_ms);
        put_bytes(&mut buf, &member.subscription);
        put_bytes(&mut buf, &member.assignment);
    }
    buf.freeze()
}

/// Decodes a group metadata value of versions 0 to 3 (the non-flexible ones).
fn decode_group_value(bytes: &Bytes) -> Option<GroupMetadata> {
    let mut v = bytes.clone();
    if v.remaining() < 2 {
        return None;
    }
    let version = v.get_i16();
    if !(0..=3).contains(&version) {
        return None;
    }
    let protocol_type = get_string(&mut v)?;
    let generation = get_i32(&mut v)?;
    let protocol = get_nullable_string(&mut v)?;
    let leader = get_nullable_string(&mut v)?;
    let current_state_timestamp = if version >= 2 {
        (v.remaining() >= 8).then(|| v.get_i64())?
    } else {
        -1
    };
    let count = get_i32(&mut v)?;
    let mut members = Vec::new();
    for _ in 0..count.max(0) {
        let member_id = get_string(&mut v)?;
        let group_instance_id = if version >= 3 {
            get_nullable_string(&mut v)?
        } else {
            None
        };
        let client_id = get_string(&mut v)?;
        let client_host = get_string(&mut v)?;
        let rebalance_timeout_ms = if version >= 1 { get_i32(&mut v)? } else { -1 };
        let session_timeout_ms = get_i32(&mut v)?;
        let rebalance_timeout_ms = if rebalance_timeout_ms < 0 {
            session_timeout_ms
        } else {
            rebalance_timeout_ms
        };
        let subscription = get_bytes(&mut v)?;
        let assignment = get_bytes(&mut v)?;
        members.push(MemberMetadata {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    Some(GroupMetadata {
        protocol_type,
        generation,
        protocol,
        leader,
        current_state_timestamp,
        members,
    })
}

/// Encodes a group's metadata (or, for `None`, its removal) as one RecordBatch v2.
pub fn encode_group_batch(
    group: &str,
    value: Option<&GroupMetadata>,
    timestamp: i64,
) -> anyhow::Result<Bytes> {
    encode(
        &[(encode_group_key(group), value.map(encode_group_value))],
        timestamp,
        None,
    )
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

/// The group of a group metadata key; `None` for keys of other kinds.
fn decode_group_key(key: &Bytes) -> Option<String> {
    let mut key = key.clone();
    if key.remaining() < 2 || key.get_i16() != GROUP_KEY_VERSION {
        return None;
    }
    get_string(&mut key)
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
    encode(&offset_pairs(records), timestamp, None)
}

/// Encodes offsets a transactional producer commits (TxnOffsetCommit) as one transactional
/// batch of `producer`'s id and epoch: they take effect with the transaction's commit marker.
pub fn encode_transactional_batch(
    records: &[OffsetRecord],
    timestamp: i64,
    producer: (i64, i16),
) -> anyhow::Result<Bytes> {
    encode(&offset_pairs(records), timestamp, Some(producer))
}

fn offset_pairs(records: &[OffsetRecord]) -> Vec<(Bytes, Option<Bytes>)> {
    records
        .iter()
        .map(|r| {
            (
                encode_key(&r.group, &r.topic, r.partition),
                r.value.as_ref().map(encode_value),
            )
        })
        .collect()
}

/// (key, value) pairs as one uncompressed RecordBatch v2, of `producer` when set.
fn encode(
    records: &[(Bytes, Option<Bytes>)],
    timestamp: i64,
    producer: Option<(i64, i16)>,
) -> anyhow::Result<Bytes> {
    let (producer_id, producer_epoch) = producer.unwrap_or((-1, -1));
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
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
            key: Some(key.clone()),
            value: value.clone(),
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
    /// A group's membership after a rebalance, or `None` when the group was removed.
    Group {
        group: String,
        metadata: Option<GroupMetadata>,
    },
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
                if let Some(group) = decode_group_key(key) {
                    let metadata = record.value.as_ref().and_then(decode_group_value);
                    // A value this broker cannot read is skipped, not taken for a removal.
                    if record.value.is_none() || metadata.is_some() {
                        out.push(OffsetEvent::Group { group, metadata });
                    }
                } else if let Some(decoded) = decode(key, record.value.as_ref()) {
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
    fn group_metadata_round_trips_and_a_removal_is_a_null_value() {
        let metadata = GroupMetadata {
            protocol_type: "consumer".into(),
            generation: 7,
            protocol: Some("range".into()),
            leader: Some("m-1".into()),
            current_state_timestamp: 1234,
            members: vec![
                MemberMetadata {
                    member_id: "m-1".into(),
                    group_instance_id: None,
                    client_id: "c".into(),
                    client_host: "/10.0.0.1".into(),
                    rebalance_timeout_ms: 300_000,
                    session_timeout_ms: 45_000,
                    subscription: Bytes::from_static(b"sub"),
                    assignment: Bytes::from_static(b"assigned"),
                },
                MemberMetadata {
                    member_id: "m-2".into(),
                    group_instance_id: Some("static-2".into()),
                    client_id: "c2".into(),
                    client_host: "/10.0.0.2".into(),
                    rebalance_timeout_ms: 1000,
                    session_timeout_ms: 500,
                    subscription: Bytes::new(),
                    assignment: Bytes::new(),
                },
            ],
        };
        let mut bytes = BytesMut::new();
        bytes.extend_from_slice(&encode_group_batch("g", Some(&metadata), 1).expect("encodes"));
        bytes.extend_from_slice(&encode_group_batch("g", None, 2).expect("encodes"));
        let events = decode_batches(bytes.freeze()).expect("decodes");
        assert_eq!(
            events,
            vec![
                OffsetEvent::Group {
                    group: "g".into(),
                    metadata: Some(metadata),
                },
                OffsetEvent::Group {
                    group: "g".into(),
                    metadata: None,
                },
            ]
        );
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
