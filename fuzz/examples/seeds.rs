//! Writes the seed corpora of the fuzz targets from valid inputs: requests of every API the
//! broker supports encoded with the broker's codec, record batches with every compression
//! codec, and segments a real `PartitionLog` wrote. The seeds are committed under
//! `fuzz/seeds/<target>/`; rerun this after the formats change:
//!
//! ```text
//! cargo +nightly run --manifest-path fuzz/Cargo.toml --example seeds -- fuzz/seeds
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::Compression;
use oxbow_broker::api;
use oxbow_broker::log::{LogConfig, PartitionLog};
use oxbow_fuzz::encode_batch;

const CODECS: [(&str, Compression); 5] = [
    ("none", Compression::None),
    ("gzip", Compression::Gzip),
    ("snappy", Compression::Snappy),
    ("lz4", Compression::Lz4),
    ("zstd", Compression::Zstd),
];

fn main() {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/seeds".to_owned());
    let out = Path::new(&out);
    let mut seeds: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    request_seeds(&mut seeds);
    batch_seeds(&mut seeds);
    segment_seeds(&mut seeds);
    for (name, bytes) in &seeds {
        let path = out.join(name);
        std::fs::create_dir_all(path.parent().expect("a seed path has a directory"))
            .expect("create the seed directory");
        std::fs::write(&path, bytes).expect("write a seed");
    }
    println!("wrote {} seeds under {}", seeds.len(), out.display());
}

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_owned())
}

/// A frame as `server::parse_frame` takes it: request header and body, no size prefix.
fn frame(key: ApiKey, version: i16, request: &RequestKind) -> Option<Vec<u8>> {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(s("fuzz-seed")))
        .encode(&mut buf, key.request_header_version(version))
        .ok()?;
    request.encode(&mut buf, version).ok()?;
    Some(buf.to_vec())
}

fn empty_request(key: ApiKey) -> Option<RequestKind> {
    Some(match key {
        ApiKey::Produce => RequestKind::Produce(Default::default()),
        ApiKey::Fetch => RequestKind::Fetch(Default::default()),
        ApiKey::ListOffsets => RequestKind::ListOffsets(Default::default()),
        ApiKey::Metadata => RequestKind::Metadata(Default::default()),
        ApiKey::ApiVersions => RequestKind::ApiVersions(Default::default()),
        ApiKey::CreateTopics => RequestKind::CreateTopics(Default::default()),
        ApiKey::DeleteTopics => RequestKind::DeleteTopics(Default::default()),
        ApiKey::DescribeConfigs => RequestKind::DescribeConfigs(Default::default()),
        ApiKey::CreatePartitions => RequestKind::CreatePartitions(Default::default()),
        ApiKey::DescribeCluster => RequestKind::DescribeCluster(Default::default()),
        ApiKey::InitProducerId => RequestKind::InitProducerId(Default::default()),
        ApiKey::FindCoordinator => RequestKind::FindCoordinator(Default::default()),
        ApiKey::JoinGroup => RequestKind::JoinGroup(Default::default()),
        ApiKey::SyncGroup => RequestKind::SyncGroup(Default::default()),
        ApiKey::Heartbeat => RequestKind::Heartbeat(Default::default()),
        ApiKey::LeaveGroup => RequestKind::LeaveGroup(Default::default()),
        ApiKey::ListGroups => RequestKind::ListGroups(Default::default()),
        ApiKey::DescribeGroups => RequestKind::DescribeGroups(Default::default()),
        ApiKey::DeleteGroups => RequestKind::DeleteGroups(Default::default()),
        ApiKey::OffsetCommit => RequestKind::OffsetCommit(Default::default()),
        ApiKey::OffsetFetch => RequestKind::OffsetFetch(Default::default()),
        ApiKey::OffsetDelete => RequestKind::OffsetDelete(Default::default()),
        ApiKey::AlterConfigs => RequestKind::AlterConfigs(Default::default()),
        ApiKey::IncrementalAlterConfigs => RequestKind::IncrementalAlterConfigs(Default::default()),
        ApiKey::DeleteRecords => RequestKind::DeleteRecords(Default::default()),
        ApiKey::OffsetForLeaderEpoch => RequestKind::OffsetForLeaderEpoch(Default::default()),
        ApiKey::DescribeLogDirs => RequestKind::DescribeLogDirs(Default::default()),
        ApiKey::ElectLeaders => RequestKind::ElectLeaders(Default::default()),
        ApiKey::AlterPartitionReassignments => {
            RequestKind::AlterPartitionReassignments(Default::default())
        }
        ApiKey::ListPartitionReassignments => {
            RequestKind::ListPartitionReassignments(Default::default())
        }
        ApiKey::SaslHandshake => RequestKind::SaslHandshake(Default::default()),
        ApiKey::SaslAuthenticate => RequestKind::SaslAuthenticate(Default::default()),
        _ => return None,
    })
}

/// Requests whose content the broker checks before touching any state, or which carry
/// nested lists: one per API, at every version the broker supports.
fn rich_requests(codec: Compression) -> Vec<RequestKind> {
    let topic = TopicName(s("orders"));
    vec![
        RequestKind::Produce(
            ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(1_000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(topic.clone())
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::from(encode_batch(3, 8, codec))))])]),
        ),
        RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(topic.clone())),
        ]))),
        RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(
            vec![CreatableTopic::default()
                .with_name(topic.clone())
                .with_num_partitions(3)
                .with_replication_factor(1)
                .with_configs(vec![
                    CreatableTopicConfig::default()
                        .with_name(s("cleanup.policy"))
                        .with_value(Some(s("compact"))),
                    CreatableTopicConfig::default()
                        .with_name(s("retention.ms"))
                        .with_value(Some(s("60000"))),
                ])],
        )),
        RequestKind::IncrementalAlterConfigs(
            IncrementalAlterConfigsRequest::default().with_resources(vec![
                AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("orders"))
                    .with_configs(vec![AlterableConfig::default()
                        .with_name(s("segment.bytes"))
                        .with_config_operation(0)
                        .with_value(Some(s("1048576")))]),
            ]),
        ),
        RequestKind::Fetch(FetchRequest::default().with_max_wait_ms(100).with_topics(
            vec![FetchTopic::default()
                    .with_topic(topic.clone())
                    .with_partitions(vec![FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(5)
                        .with_partition_max_bytes(1 << 20)])],
        )),
        RequestKind::JoinGroup(
            JoinGroupRequest::default()
                .with_group_id(GroupId(s("group")))
                .with_session_timeout_ms(10_000)
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(s("range"))
                    .with_metadata(Bytes::from_static(
                        b"\x00\x01\x00\x00\x00\x01\x00\x06orders",
                    ))]),
        ),
    ]
}

fn kind_key(request: &RequestKind) -> ApiKey {
    match request {
        RequestKind::Produce(_) => ApiKey::Produce,
        RequestKind::Metadata(_) => ApiKey::Metadata,
        RequestKind::CreateTopics(_) => ApiKey::CreateTopics,
        RequestKind::IncrementalAlterConfigs(_) => ApiKey::IncrementalAlterConfigs,
        RequestKind::Fetch(_) => ApiKey::Fetch,
        RequestKind::JoinGroup(_) => ApiKey::JoinGroup,
        _ => unreachable!("rich_requests builds only these"),
    }
}

fn request_seeds(seeds: &mut BTreeMap<String, Vec<u8>>) {
    for (key, range) in api::supported_apis() {
        let Some(request) = empty_request(key) else {
            continue;
        };
        for version in [range.min, range.max] {
            if let Some(bytes) = frame(key, version, &request) {
                seeds.insert(
                    format!("request/{}-v{version}-empty", api::name(key)),
                    bytes,
                );
            }
        }
        // One version past the range: ApiVersions answers it, everything else is refused.
        if let Some(bytes) = frame(key, range.max, &request) {
            let mut bytes = bytes;
            bytes[2..4].copy_from_slice(&(range.max + 1).to_be_bytes());
            seeds.insert(
                format!("request/{}-v{}-unsupported", api::name(key), range.max + 1),
                bytes,
            );
        }
    }
    for (codec_name, codec) in CODECS {
        for request in rich_requests(codec) {
            let key = kind_key(&request);
            if key != ApiKey::Produce && codec != Compression::None {
                continue;
            }
            let Some(range) = api::supported_versions(key) else {
                continue;
            };
            for version in range.min..=range.max {
                if let Some(bytes) = frame(key, version, &request) {
                    seeds.insert(
                        format!("request/{}-v{version}-{codec_name}", api::name(key)),
                        bytes,
                    );
                }
            }
        }
    }
}

fn batch_seeds(seeds: &mut BTreeMap<String, Vec<u8>>) {
    for (name, codec) in CODECS {
        for (records, value_len) in [(1, 0), (5, 40)] {
            let batch = encode_batch(records, value_len, codec);
            // Mode byte 0 keeps the CRC as it is, 1 recomputes it after a mutation.
            for mode in [0u8, 1] {
                seeds.insert(
                    format!("batch/{name}-{records}-records-mode{mode}"),
                    [&[mode][..], &batch].concat(),
                );
            }
        }
    }
    let two = [
        encode_batch(2, 4, Compression::None),
        encode_batch(3, 4, Compression::Gzip),
    ]
    .concat();
    seeds.insert("batch/two-batches".to_owned(), [&[1u8][..], &two].concat());
}

/// The files of a log a real `PartitionLog` wrote and closed cleanly.
struct WrittenLog {
    log: Vec<u8>,
    offset_index: Vec<u8>,
    time_index: Vec<u8>,
}

fn write_log(index_interval_bytes: u32) -> WrittenLog {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = LogConfig {
        index_interval_bytes,
        ..LogConfig::default()
    };
    let mut log = PartitionLog::open(dir.path(), config).expect("open a new log");
    for (epoch, (records, codec)) in [
        (2, Compression::None),
        (4, Compression::Gzip),
        (1, Compression::Lz4),
        (3, Compression::None),
    ]
    .into_iter()
    .enumerate()
    {
        log.append(&encode_batch(records, 10, codec), epoch as i32)
            .expect("append a batch");
    }
    log.close().expect("close the log");
    let read = |extension: &str| {
        std::fs::read(dir.path().join(format!("{:020}.{extension}", 0))).expect("read a file")
    };
    WrittenLog {
        log: read("log"),
        offset_index: read("index"),
        time_index: read("timeindex"),
    }
}

/// `flags`, then the index files when flag bit 1 is set, then the log: the segment
/// target's input.
fn segment_input(flags: u8, written: &WrittenLog, log: &[u8]) -> Vec<u8> {
    let mut out = vec![flags];
    if flags & 2 != 0 {
        out.extend_from_slice(&(written.offset_index.len() as u16).to_be_bytes());
        out.extend_from_slice(&(written.time_index.len() as u16).to_be_bytes());
        out.extend_from_slice(&written.offset_index);
        out.extend_from_slice(&written.time_index);
    }
    out.extend_from_slice(log);
    out
}

/// The log with every batch's base offset moved by `by` (not covered by the CRC).
fn shifted(log: &[u8], by: i64) -> Vec<u8> {
    let mut out = log.to_vec();
    let mut at = 0;
    while let Some(header) = oxbow_broker::log::BatchHeader::parse(&out[at..]) {
        out[at..at + 8].copy_from_slice(&(header.base_offset + by).to_be_bytes());
        at += header.size();
    }
    out
}

fn segment_seeds(seeds: &mut BTreeMap<String, Vec<u8>>) {
    let sparse = write_log(4096);
    let dense = write_log(1);
    let torn = &sparse.log[..sparse.log.len() - 7];
    let cases: [(&str, u8, &WrittenLog, Vec<u8>); 8] = [
        ("crash", 0, &sparse, sparse.log.clone()),
        ("crash-torn-tail", 0, &sparse, torn.to_vec()),
        ("crash-with-index", 2, &sparse, sparse.log.clone()),
        ("crash-fix-crc", 4, &sparse, sparse.log.clone()),
        ("clean", 3, &sparse, sparse.log.clone()),
        ("clean-dense-index", 3 | 32, &dense, dense.log.clone()),
        ("crash-dense-index", 2 | 32, &dense, dense.log.clone()),
        ("crash-base-1000", 8, &sparse, shifted(&sparse.log, 1_000)),
    ];
    for (name, flags, written, log) in cases {
        seeds.insert(
            format!("segment/{name}"),
            segment_input(flags, written, &log),
        );
    }
    // Base offset i64::MAX - 1000 (flag bits 3-4), the last batch ending at i64::MAX.
    let last_offset = 9;
    seeds.insert(
        "segment/crash-base-max".to_owned(),
        segment_input(0x18, &sparse, &shifted(&sparse.log, i64::MAX - last_offset)),
    );
    seeds.insert(
        "segment/clean-base-1000".to_owned(),
        segment_input(3 | 8, &sparse, &shifted(&sparse.log, 1_000)),
    );
}
