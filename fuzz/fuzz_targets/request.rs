//! Request decoding: a frame's bytes (after the size prefix) through the broker's own path,
//! `server::parse_frame` then `api::decode`, and the checks handlers make on what a request
//! carries before they touch any state: record batches of a Produce, topic names and configs
//! of CreateTopics and AlterConfigs. Any panic, abort or unbounded allocation is a bug.
#![no_main]

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::RequestKind;
use kafka_protocol::records::RecordBatchDecoder;
use libfuzzer_sys::fuzz_target;
use oxbow_broker::log::batch;
use oxbow_broker::{api, config, server};

/// `message.max.bytes`'s default: the largest batch a Produce may carry.
const MAX_BATCH_BYTES: usize = 1_048_588;

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = server::parse_frame(Bytes::copy_from_slice(data)) else {
        return;
    };
    if frame.version < frame.supported.min || frame.version > frame.supported.max {
        // What the broker answers instead of decoding (ApiVersions) or closes with.
        let _ = api::unsupported_version(frame.api_key, frame.version);
        return;
    }
    let Ok(request) = api::decode(frame.api_key, frame.version, frame.body) else {
        return;
    };
    match request {
        RequestKind::Produce(produce) => {
            for topic in &produce.topic_data {
                let _ = config::validate_topic_name(topic.name.0.as_str());
                for partition in &topic.partition_data {
                    if let Some(records) = &partition.records {
                        // The log's validation, then the decoding a compacted topic's
                        // key check does (which decompresses).
                        let _ = batch::split_produced(records, MAX_BATCH_BYTES);
                        let _ = RecordBatchDecoder::decode_all(&mut records.clone());
                    }
                }
            }
        }
        RequestKind::CreateTopics(create) => {
            for topic in &create.topics {
                let _ = config::validate_topic_name(topic.name.0.as_str());
                let configs: BTreeMap<String, String> = topic
                    .configs
                    .iter()
                    .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
                    .collect();
                let _ = config::validate_topic_configs(&configs);
            }
        }
        RequestKind::AlterConfigs(alter) => {
            for resource in &alter.resources {
                let configs: BTreeMap<String, String> = resource
                    .configs
                    .iter()
                    .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
                    .collect();
                let _ = config::validate_topic_configs(&configs);
            }
        }
        RequestKind::IncrementalAlterConfigs(alter) => {
            for resource in &alter.resources {
                let configs: BTreeMap<String, String> = resource
                    .configs
                    .iter()
                    .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
                    .collect();
                let _ = config::validate_topic_configs(&configs);
            }
        }
        _ => {}
    }
});
