//! The codec a topic stores its batches in (`compression.type` with `compression.gzip.level`,
//! `compression.lz4.level` and `compression.zstd.level`), and the re-compression of a
//! produced batch into it.
//!
//! As in Kafka's `LogValidator`, a batch is re-compressed only when its codec differs from
//! the topic's target: `producer` keeps whatever the producer sent, and a batch already in
//! the target codec is stored as it came even when the topic's level differs (the level
//! only applies when the broker compresses). An uncompressed control batch stays
//! uncompressed.
//!
//! Re-compression works on bytes, not on decoded records: the records section is
//! decompressed and compressed again, and the header keeps every field but the codec bits,
//! the length and the CRC. So offsets, timestamps, producer id, epoch, base sequence and the
//! transactional flag stay as the producer wrote them, and every record (key, value and
//! headers, duplicates included) is stored byte for byte. Kafka rebuilds the batch through
//! its record builder, which gives the same bytes for a batch whose records carry offset
//! deltas 0, 1, 2, … from the first record's timestamp, as every client writes them.
//!
//! CPU: decompressing and compressing every produced batch costs far more than the append
//! itself (zstd at the default level compresses at a few hundred MB/s per core, gzip at
//! tens); a topic whose codec matches what its producers send avoids it entirely.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::Compression;

use super::batch::{self, BatchHeader, HEADER_SIZE, LOG_OVERHEAD};

/// `compression.type` and the level of its codec, resolved from a topic's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TopicCompression {
    /// Keep the producer's codec.
    #[default]
    Producer,
    Uncompressed,
    /// A zlib level: 1 to 9, or -1 for zlib's default.
    Gzip(i32),
    Snappy,
    /// 1 to 17.
    Lz4(i32),
    /// -131072 to 22.
    Zstd(i32),
}

impl TopicCompression {
    /// The setting named by `compression.type` with the levels of the three codecs that have
    /// them; `None` for a name Kafka does not define.
    pub fn from_config(
        name: &str,
        gzip_level: i32,
        lz4_level: i32,
        zstd_level: i32,
    ) -> Option<Self> {
        Some(match name {
            "producer" => TopicCompression::Producer,
            "uncompressed" => TopicCompression::Uncompressed,
            "gzip" => TopicCompression::Gzip(gzip_level),
            "snappy" => TopicCompression::Snappy,
            "lz4" => TopicCompression::Lz4(lz4_level),
            "zstd" => TopicCompression::Zstd(zstd_level),
            _ => return None,
        })
    }

    /// The codec and level a batch the producer compressed with `source` is stored in.
    pub fn target(self, source: Compression) -> (Compression, Option<i32>) {
        match self {
            TopicCompression::Producer => (source, None),
            TopicCompression::Uncompressed => (Compression::None, None),
            TopicCompression::Gzip(level) => (Compression::Gzip, Some(level)),
            TopicCompression::Snappy => (Compression::Snappy, None),
            TopicCompression::Lz4(level) => (Compression::Lz4, Some(level)),
            TopicCompression::Zstd(level) => (Compression::Zstd, Some(level)),
        }
    }
}

/// The validated batches of a produce request (`batches`, found in `records`) in the
/// topic's codec: `None` when every batch already is, else all of them back to back, the
/// ones in another codec re-compressed.
///
/// # Errors
///
/// A message naming the batch when its records do not decompress, or do not hold exactly
/// the records its header counts.
pub(crate) fn to_topic_codec(
    records: &[u8],
    batches: &[batch::ProducedBatch],
    compression: TopicCompression,
) -> Result<Option<Vec<u8>>, String> {
    if compression == TopicCompression::Producer {
        return Ok(None);
    }
    let mut out: Option<Vec<u8>> = None;
    for (index, produced) in batches.iter().enumerate() {
        let bytes = &records[produced.start..produced.start + produced.header.size()];
        let source = produced
            .header
            .compression()
            .ok_or_else(|| format!("batch {index}: unknown compression codec"))?;
        let (target, level) = compression.target(source);
        let keep =
            target == source || (source == Compression::None && produced.header.is_control());
        if keep {
            if let Some(out) = out.as_mut() {
                out.extend_from_slice(bytes);
            }
            continue;
        }
        let out = out.get_or_insert_with(|| {
            let mut out = Vec::with_capacity(records.len());
            out.extend_from_slice(&records[..produced.start]);
            out
        });
        recompress_into(bytes, &produced.header, target, level, out)
            .map_err(|e| format!("batch {index} at byte {}: {e}", produced.start))?;
    }
    Ok(out)
}

/// Appends `bytes`, one whole batch with `header`, to `out` with its records compressed
/// with `target` at `level`.
fn recompress_into(
    bytes: &[u8],
    header: &BatchHeader,
    target: Compression,
    level: Option<i32>,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let source = header
        .compression()
        .ok_or_else(|| "unknown compression codec".to_owned())?;
    let payload = Bytes::copy_from_slice(bytes.get(HEADER_SIZE..).unwrap_or_default());
    let plain = kafka_protocol::compression::decompress(source, payload)
        .map_err(|e| format!("the {source:?} records do not decompress: {e:#}"))?;
    let count = count_records(&plain)?;
    if i64::from(header.records_count) != count as i64 {
        return Err(format!(
            "the header counts {} records but the batch holds {count}",
            header.records_count
        ));
    }
    let mut compressed = BytesMut::new();
    kafka_protocol::compression::compress_with_level(target, level, &plain, &mut compressed)
        .map_err(|e| format!("cannot compress the records with {target:?}: {e:#}"))?;
    let start = out.len();
    out.extend_from_slice(&bytes[..HEADER_SIZE]);
    out.extend_from_slice(&compressed);
    let length = i32::try_from(out.len() - start - LOG_OVERHEAD)
        .map_err(|_| format!("the {target:?} batch would be {} bytes", out.len() - start))?;
    let attributes = (header.attributes & !batch::COMPRESSION_MASK) | target as i16;
    batch::set_length(&mut out[start..], length);
    batch::restamp(
        &mut out[start..],
        attributes,
        header.last_offset_delta,
        header.max_timestamp,
    );
    Ok(())
}

/// How many records the uncompressed records section `plain` holds: each is a signed varint
/// length and that many bytes, and they must fill it exactly.
fn count_records(plain: &[u8]) -> Result<usize, String> {
    let mut rest = plain;
    let mut count = 0usize;
    while !rest.is_empty() {
        let at = plain.len() - rest.len();
        let (length, used) = read_varint(rest)
            .ok_or_else(|| format!("record {count} at byte {at} has no valid length"))?;
        rest = &rest[used..];
        let length = usize::try_from(length)
            .ok()
            .filter(|length| *length <= rest.len())
            .ok_or_else(|| {
                format!(
                    "record {count} at byte {at} claims {length} bytes; {} remain",
                    rest.len()
                )
            })?;
        rest = &rest[length..];
        count += 1;
    }
    Ok(count)
}

/// A zigzag-encoded varint of at most 32 bits (Kafka's `varint`) at the start of `buf`, and
/// the bytes it took.
fn read_varint(buf: &[u8]) -> Option<(i64, usize)> {
    let mut raw = 0u32;
    for (i, byte) in buf.iter().take(5).enumerate() {
        raw |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let value = i64::from((raw >> 1) as i32 ^ -((raw & 1) as i32));
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::log::batch::{split_produced, tests::encode_batch_with};
    use kafka_protocol::records::RecordBatchDecoder;

    const MAX: usize = 1 << 30;

    fn decoded(bytes: &[u8]) -> Vec<kafka_protocol::records::Record> {
        let mut bytes = Bytes::copy_from_slice(bytes);
        RecordBatchDecoder::decode_all(&mut bytes)
            .unwrap()
            .into_iter()
            .flat_map(|set| set.records)
            .collect()
    }

    #[test]
    fn every_codec_pair_keeps_the_records_and_header_fields() {
        let codecs = [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ];
        let targets = [
            TopicCompression::Uncompressed,
            TopicCompression::Gzip(9),
            TopicCompression::Snappy,
            TopicCompression::Lz4(1),
            TopicCompression::Zstd(-5),
            TopicCompression::Zstd(19),
        ];
        for source in codecs {
            let original = encode_batch_with(20, 100, 1_000, source);
            let batches = split_produced(&original, MAX).unwrap();
            for topic in targets {
                let (target, _) = topic.target(source);
                let stored = to_topic_codec(&original, &batches, topic).unwrap();
                let Some(stored) = stored else {
                    assert_eq!(target, source, "{source:?} -> {topic:?}");
                    continue;
                };
                let header = batch::check_batch(&stored, batch::CountRule::Produced).unwrap();
                assert_eq!(
                    header.compression(),
                    Some(target),
                    "{source:?} -> {topic:?}"
                );
                let before = batches[0].header;
                assert_eq!(
                    (header.attributes & !batch::COMPRESSION_MASK),
                    (before.attributes & !batch::COMPRESSION_MASK)
                );
                assert_eq!(
                    (
                        header.last_offset_delta,
                        header.base_timestamp,
                        header.max_timestamp,
                        header.producer_id,
                        header.producer_epoch,
                        header.base_sequence,
                        header.records_count
                    ),
                    (
                        before.last_offset_delta,
                        before.base_timestamp,
                        before.max_timestamp,
                        before.producer_id,
                        before.producer_epoch,
                        before.base_sequence,
                        before.records_count
                    ),
                    "{source:?} -> {topic:?}"
                );
                assert_eq!(
                    decoded(&stored),
                    decoded(&original),
                    "{source:?} -> {topic:?}"
                );
            }
        }
    }

    #[test]
    fn producer_and_matching_codecs_leave_the_request_as_it_came() {
        let gzip = encode_batch_with(3, 10, 0, Compression::Gzip);
        let batches = split_produced(&gzip, MAX).unwrap();
        assert_eq!(
            to_topic_codec(&gzip, &batches, TopicCompression::Producer).unwrap(),
            None
        );
        // Another level of the same codec is not a reason to re-compress, as in Kafka.
        assert_eq!(
            to_topic_codec(&gzip, &batches, TopicCompression::Gzip(1)).unwrap(),
            None
        );
    }

    #[test]
    fn only_the_batches_in_another_codec_change() {
        let mut records = encode_batch_with(2, 10, 0, Compression::Zstd).to_vec();
        records.extend_from_slice(&encode_batch_with(3, 10, 0, Compression::None));
        records.extend_from_slice(&encode_batch_with(4, 10, 0, Compression::Zstd));
        let batches = split_produced(&records, MAX).unwrap();
        let stored = to_topic_codec(&records, &batches, TopicCompression::Zstd(3))
            .unwrap()
            .unwrap();
        let after = split_produced(&stored, MAX).unwrap();
        let codecs: Vec<_> = after.iter().map(|b| b.header.compression()).collect();
        assert_eq!(codecs, vec![Some(Compression::Zstd); 3]);
        let first = batches[0].header.size();
        assert_eq!(stored[..first], records[..first]);
        assert_eq!(decoded(&stored), decoded(&records));
    }

    #[test]
    fn a_higher_level_compresses_repetitive_records_smaller() {
        let original = encode_batch_with(200, 500, 0, Compression::None);
        let batches = split_produced(&original, MAX).unwrap();
        let size = |topic| {
            to_topic_codec(&original, &batches, topic)
                .unwrap()
                .unwrap()
                .len()
        };
        assert!(size(TopicCompression::Gzip(9)) <= size(TopicCompression::Gzip(1)));
        assert!(size(TopicCompression::Zstd(19)) < size(TopicCompression::Zstd(-50)));
    }

    #[test]
    fn records_that_do_not_match_the_header_are_refused() {
        let mut original = encode_batch_with(3, 10, 0, Compression::None).to_vec();
        // Claim one record more than the batch holds, keeping the framing and CRC valid.
        let header = BatchHeader::parse(&original).unwrap();
        original[57..61].copy_from_slice(&(header.records_count + 1).to_be_bytes());
        original[23..27].copy_from_slice(&(header.last_offset_delta + 1).to_be_bytes());
        batch::restamp(
            &mut original,
            header.attributes,
            header.last_offset_delta + 1,
            header.max_timestamp,
        );
        let batches = split_produced(&original, MAX).unwrap();
        let error = to_topic_codec(&original, &batches, TopicCompression::Gzip(-1)).unwrap_err();
        assert!(
            error.contains("counts 4 records but the batch holds 3"),
            "{error}"
        );
    }

    #[test]
    fn a_corrupt_compressed_payload_is_refused() {
        let mut original = encode_batch_with(3, 100, 0, Compression::Zstd).to_vec();
        let header = BatchHeader::parse(&original).unwrap();
        for byte in &mut original[HEADER_SIZE + 4..HEADER_SIZE + 12] {
            *byte ^= 0xff;
        }
        batch::restamp(
            &mut original,
            header.attributes,
            header.last_offset_delta,
            header.max_timestamp,
        );
        let batches = split_produced(&original, MAX).unwrap();
        let error = to_topic_codec(&original, &batches, TopicCompression::Lz4(9)).unwrap_err();
        assert!(error.contains("do not decompress"), "{error}");
    }

    #[test]
    fn compression_type_names_are_kafkas() {
        assert_eq!(
            TopicCompression::from_config("zstd", -1, 9, 7),
            Some(TopicCompression::Zstd(7))
        );
        assert_eq!(
            TopicCompression::from_config("gzip", 4, 9, 3),
            Some(TopicCompression::Gzip(4))
        );
        assert_eq!(TopicCompression::from_config("brotli", -1, 9, 3), None);
    }
}
