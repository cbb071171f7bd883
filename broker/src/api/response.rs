//! Response frames: the size prefix, the response header and the encoded response, as a list
//! of chunks written in order. A Fetch response's larger record sets are chunks of their own,
//! the very buffers the log read, so the records go from the page cache to the socket with no
//! copy into the frame.
//!
//! kafka-protocol encodes into one contiguous buffer only. To leave the records out of it, a
//! Fetch response is encoded with each large record set replaced by a short placeholder that
//! is unique to this process; the placeholder is then found in the encoded bytes and the frame
//! is cut around it: the bytes before it, the length of the real record set (written with the
//! codec's own integer encoders), the record set itself, the bytes after it. A placeholder that
//! cannot be found exactly once (a topic name containing the same 16 bytes, say) makes the
//! whole response encode the plain way, so the bytes on the wire are always those of
//! [`ResponseKind::encode`].

use std::io;
use std::sync::LazyLock;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, FetchResponse, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::Encodable;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Record sets at least this large are written from their own buffers; smaller ones are
/// cheaper to copy into the frame than to track.
const SEPARATE_RECORDS_FROM: usize = 16 * 1024;

/// Bytes of a placeholder: a per-process random key and the record set's index.
const PLACEHOLDER_LEN: usize = 16;
const KEY_LEN: usize = PLACEHOLDER_LEN - 4;

/// Random, so that no client can predict a placeholder (and force the slower path).
static PLACEHOLDER_KEY: LazyLock<[u8; KEY_LEN]> = LazyLock::new(|| {
    let mut key = [0; KEY_LEN];
    key.copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..KEY_LEN]);
    key
});

/// One response, ready to write: its chunks concatenated are the frame, size prefix first.
/// Most responses are one chunk, which needs no list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResponseFrame {
    first: Bytes,
    rest: Vec<Bytes>,
}

impl ResponseFrame {
    /// Writes the frame. Through a buffered writer, small chunks are gathered in its buffer
    /// and a chunk larger than the buffer goes to the socket directly.
    pub(crate) async fn write_to<W: AsyncWrite + Unpin>(&self, writer: &mut W) -> io::Result<()> {
        writer.write_all(&self.first).await?;
        for chunk in &self.rest {
            writer.write_all(chunk).await?;
        }
        Ok(())
    }
}

impl From<Bytes> for ResponseFrame {
    /// A frame already encoded whole, size prefix included.
    fn from(frame: Bytes) -> Self {
        ResponseFrame {
            first: frame,
            rest: Vec::new(),
        }
    }
}

/// Encodes the frame of `response` to the request `correlation_id` of `api_key` at `version`.
pub(crate) fn encode(
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    response: ResponseKind,
) -> Result<ResponseFrame, String> {
    let failed =
        |e: anyhow::Error| format!("cannot encode the {api_key:?} v{version} response: {e}");
    let mut out = BytesMut::with_capacity(256);
    out.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut out, api_key.response_header_version(version))
        .map_err(failed)?;
    match response {
        ResponseKind::Fetch(fetch) => encode_fetch(fetch, version, out).map_err(failed),
        other => {
            other.encode(&mut out, version).map_err(failed)?;
            let len = out.len();
            Ok(sized(out, len).map_err(failed)?.into())
        }
    }
}

/// Writes the size prefix of a frame of `len` bytes (prefix included) whose first bytes are
/// `out`.
fn sized(mut out: BytesMut, len: usize) -> anyhow::Result<Bytes> {
    let size = i32::try_from(len - 4).map_err(|_| anyhow::anyhow!("response too large"))?;
    out[..4].copy_from_slice(&size.to_be_bytes());
    Ok(out.freeze())
}

/// Where a record set was taken out of the response: topic and partition positions.
struct Taken {
    /// Which placeholder stands in for the records.
    index: usize,
    topic: usize,
    partition: usize,
    records: Bytes,
}

/// Encodes a Fetch response after `out` (size prefix and header), its large record sets as
/// separate chunks.
fn encode_fetch(
    mut response: FetchResponse,
    version: i16,
    mut out: BytesMut,
) -> anyhow::Result<ResponseFrame> {
    let mut taken = Vec::new();
    for (t, topic) in response.responses.iter().enumerate() {
        for (p, partition) in topic.partitions.iter().enumerate() {
            if partition
                .records
                .as_ref()
                .is_some_and(|r| r.len() >= SEPARATE_RECORDS_FROM)
            {
                taken.push(Taken {
                    index: taken.len(),
                    topic: t,
                    partition: p,
                    records: Bytes::new(),
                });
            }
        }
    }
    let start = out.len();
    let expected = start + response.compute_size(version)?;
    if taken.is_empty() {
        out.reserve(expected - start);
        response.encode(&mut out, version)?;
        return Ok(sized(out, expected)?.into());
    }
    for t in &mut taken {
        let placeholder = placeholder(t.index);
        let partition = &mut response.responses[t.topic].partitions[t.partition];
        t.records = partition.records.replace(placeholder).unwrap_or_default();
    }
    out.reserve(response.compute_size(version)?);
    response.encode(&mut out, version)?;
    if let Some(fields) = locate(&out, &taken) {
        if let Some(prefixes) = prefixes(out.len(), &taken, &fields, expected) {
            return splice(out, &taken, &fields, prefixes, expected);
        }
    }
    // A placeholder was ambiguous: put the records back and encode the plain way.
    for t in taken {
        response.responses[t.topic].partitions[t.partition].records = Some(t.records);
    }
    out.truncate(start);
    out.reserve(expected - start);
    response.encode(&mut out, version)?;
    Ok(sized(out, expected)?.into())
}

fn placeholder(index: usize) -> Bytes {
    let mut bytes = BytesMut::with_capacity(PLACEHOLDER_LEN);
    bytes.put_slice(&PLACEHOLDER_KEY[..]);
    bytes.put_u32(u32::try_from(index).unwrap_or(u32::MAX));
    bytes.freeze()
}

/// How the codec wrote the records field at this version: compact (flexible versions, an
/// unsigned varint of the length plus one) or classic (an INT32 length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Compact,
    Classic,
}

impl Form {
    /// The length prefix of a non-null records field of `len` bytes. kafka-protocol keeps its
    /// integer encoders private, so these two lines mirror them; [`locate`] checks them against
    /// the codec's own bytes for the placeholder, and [`encode_fetch`] the frame's size against
    /// the codec's size of the whole response.
    fn prefix(self, len: usize) -> Option<Bytes> {
        let mut prefix = BytesMut::with_capacity(5);
        match self {
            Form::Compact => {
                let mut value = u32::try_from(len.checked_add(1)?).ok()?;
                while value >= 0x80 {
                    prefix.put_u8((value & 0x7f) as u8 | 0x80);
                    value >>= 7;
                }
                prefix.put_u8(value as u8);
            }
            Form::Classic => prefix.put_i32(i32::try_from(len).ok()?),
        }
        Some(prefix.freeze())
    }
}

/// Where a placeholder's field lies in the encoded response.
struct Field {
    start: usize,
    end: usize,
    /// Index into the taken record sets.
    taken: usize,
    form: Form,
}

/// The field of each placeholder in `encoded`, in order; `None` when a placeholder is not
/// found exactly once, or not inside a field as the codec writes one.
fn locate(encoded: &[u8], taken: &[Taken]) -> Option<Vec<Field>> {
    let mut found: Vec<Option<usize>> = vec![None; taken.len()];
    for at in find_all(encoded, &PLACEHOLDER_KEY[..]) {
        let index = encoded
            .get(at + KEY_LEN..at + PLACEHOLDER_LEN)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(|b| u32::from_be_bytes(b) as usize);
        // The key with an index we did not use is someone else's bytes, and harmless.
        if let Some(slot) = index.and_then(|i| found.get_mut(i)) {
            if slot.replace(at).is_some() {
                return None;
            }
        }
    }
    let mut fields = Vec::with_capacity(taken.len());
    for (index, at) in found.into_iter().enumerate() {
        let at = at?;
        let located = [Form::Compact, Form::Classic].into_iter().find_map(|form| {
            let prefix = form.prefix(PLACEHOLDER_LEN)?;
            let start = at.checked_sub(prefix.len())?;
            (encoded[start..at] == prefix[..]).then_some(Field {
                start,
                end: at + PLACEHOLDER_LEN,
                taken: index,
                form,
            })
        });
        fields.push(located?);
    }
    fields.sort_unstable_by_key(|f| f.start);
    if fields.windows(2).any(|pair| pair[1].start < pair[0].end) {
        return None;
    }
    Some(fields)
}

/// The length prefixes of the real record sets; `None` when the frame would not be
/// `expected` bytes long, the codec's size of the response with its records.
fn prefixes(
    encoded_len: usize,
    taken: &[Taken],
    fields: &[Field],
    expected: usize,
) -> Option<Vec<Bytes>> {
    let mut prefixes = Vec::with_capacity(fields.len());
    let mut size = encoded_len;
    for field in fields {
        let records = &taken[field.taken].records;
        let prefix = field.form.prefix(records.len())?;
        size = size - (field.end - field.start) + prefix.len() + records.len();
        prefixes.push(prefix);
    }
    (size == expected).then_some(prefixes)
}

/// Cuts `encoded` around the placeholders' fields and puts each real record set, after its
/// length prefix, in its place.
fn splice(
    encoded: BytesMut,
    taken: &[Taken],
    fields: &[Field],
    prefixes: Vec<Bytes>,
    len: usize,
) -> anyhow::Result<ResponseFrame> {
    let encoded = sized(encoded, len)?;
    let mut rest = Vec::with_capacity(3 * fields.len());
    let mut cursor = fields.first().map_or(encoded.len(), |f| f.start);
    let first = encoded.slice(..cursor);
    for (field, prefix) in fields.iter().zip(prefixes) {
        rest.push(encoded.slice(cursor..field.start));
        rest.push(prefix);
        rest.push(taken[field.taken].records.clone());
        cursor = field.end;
    }
    rest.push(encoded.slice(cursor..));
    rest.retain(|c| !c.is_empty());
    Ok(ResponseFrame { first, rest })
}

/// Start positions of `needle` (not empty) in `haystack`.
fn find_all<'a>(haystack: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    haystack
        .windows(needle.len())
        .enumerate()
        .filter(move |(_, w)| w[0] == needle[0] && *w == needle)
        .map(|(at, _)| at)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::{Message, StrBytes};

    impl ResponseFrame {
        fn chunks(&self) -> Vec<Bytes> {
            [self.first.clone()]
                .into_iter()
                .chain(self.rest.clone())
                .collect()
        }
    }

    fn plain(correlation_id: i32, version: i16, response: &ResponseKind) -> Vec<u8> {
        let mut out = BytesMut::new();
        out.put_i32(0);
        ResponseHeader::default()
            .with_correlation_id(correlation_id)
            .encode(&mut out, ApiKey::Fetch.response_header_version(version))
            .unwrap();
        response.encode(&mut out, version).unwrap();
        let size = (out.len() - 4) as i32;
        out[..4].copy_from_slice(&size.to_be_bytes());
        out.to_vec()
    }

    fn records(len: usize, seed: u8) -> Bytes {
        Bytes::from(
            (0..len)
                .map(|i| (i as u8).wrapping_mul(31) ^ seed)
                .collect::<Vec<u8>>(),
        )
    }

    fn fetch(topic_name: &str, sets: &[Option<Bytes>]) -> FetchResponse {
        let partitions = sets
            .iter()
            .enumerate()
            .map(|(i, records)| {
                PartitionData::default()
                    .with_partition_index(i as i32)
                    .with_high_watermark(1000 + i as i64)
                    .with_records(records.clone())
            })
            .collect();
        FetchResponse::default().with_responses(vec![
            FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_string(topic_name.to_owned())))
                .with_topic_id(uuid::Uuid::from_u128(7))
                .with_partitions(partitions),
            FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_static_str("other")))
                .with_partitions(vec![PartitionData::default()
                    .with_partition_index(3)
                    .with_records(Some(records(SEPARATE_RECORDS_FROM + 1, 9)))]),
        ])
    }

    /// Lengths on both sides of the codec's varint boundaries and of the separation limit.
    const SIZES: [usize; 7] = [
        0,
        100,
        SEPARATE_RECORDS_FROM - 1,
        SEPARATE_RECORDS_FROM,
        16_383,
        2_097_151,
        2_097_152,
    ];

    #[test]
    fn fetch_frames_are_byte_identical_to_the_codec_at_every_version() {
        let sets: Vec<Option<Bytes>> = SIZES
            .iter()
            .enumerate()
            .map(|(i, &n)| Some(records(n, i as u8)))
            .chain([None])
            .collect();
        let versions = <FetchResponse as Message>::VERSIONS;
        for version in versions.min..=versions.max {
            let response = ResponseKind::Fetch(fetch("orders", &sets));
            let expected = plain(42, version, &response);
            let frame = encode(42, ApiKey::Fetch, version, response).unwrap();
            assert_eq!(frame.chunks().concat(), expected, "v{version}");
            let other = records(SEPARATE_RECORDS_FROM + 1, 9);
            let large = sets
                .iter()
                .flatten()
                .filter(|r| r.len() >= SEPARATE_RECORDS_FROM)
                .chain([&other]);
            for set in large {
                assert!(
                    frame.chunks().contains(set),
                    "v{version}: a record set of {} bytes is a chunk of its own",
                    set.len()
                );
            }
        }
    }

    #[test]
    fn a_placeholder_found_twice_falls_back_to_the_plain_encoding() {
        // A small record set (copied into the frame) that happens to hold the placeholder of
        // the first large one.
        let sets = vec![
            Some(records(SEPARATE_RECORDS_FROM, 1)),
            Some(Bytes::from([&placeholder(0)[..], &[0; 8][..]].concat())),
        ];
        for version in [4, 11, 12, 16] {
            let response = ResponseKind::Fetch(fetch("orders", &sets));
            let expected = plain(7, version, &response);
            let frame = encode(7, ApiKey::Fetch, version, response).unwrap();
            assert_eq!(frame.chunks().concat(), expected, "v{version}");
            assert_eq!(frame.chunks().len(), 1, "v{version}: encoded the plain way");
        }
    }

    #[test]
    fn other_responses_are_one_chunk_as_the_codec_encodes_them() {
        let response = ResponseKind::Produce(kafka_protocol::messages::ProduceResponse::default());
        let frame = encode(5, ApiKey::Produce, 9, response.clone()).unwrap();
        let mut expected = BytesMut::new();
        expected.put_i32(0);
        ResponseHeader::default()
            .with_correlation_id(5)
            .encode(&mut expected, ApiKey::Produce.response_header_version(9))
            .unwrap();
        response.encode(&mut expected, 9).unwrap();
        let size = (expected.len() - 4) as i32;
        expected[..4].copy_from_slice(&size.to_be_bytes());
        assert_eq!(frame.chunks(), vec![expected.freeze()]);
    }
}
