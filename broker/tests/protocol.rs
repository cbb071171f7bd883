//! The Kafka protocol as the real `oxbow-broker` binary speaks it, checked byte by byte through
//! the crate's own client: bad input gets the error code Apache Kafka gives it, or a closed
//! connection where Kafka closes one, and never harms the broker; framing, ordering, acks=0,
//! idempotence, long-polls, metrics, configuration and shutdown behave as clients expect.
//!
//! Every test starts its own broker process and bounds every read with a timeout. After each
//! refusal the test checks that a fresh connection is still served and, where a write was
//! refused, that nothing reached the log (ListOffsets latest).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, CreatePartitionsRequest, CreateTopicsRequest,
    CreateTopicsResponse, DeleteTopicsRequest, DescribeClusterRequest, DescribeConfigsRequest,
    FetchRequest, InitProducerIdRequest, ListOffsetsRequest, MetadataRequest, MetadataResponse,
    ProduceRequest, ProducerId, ResponseHeader,
};
use kafka_protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, FindCoordinatorRequest, GroupId, HeartbeatRequest,
    JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest, OffsetCommitRequest,
    OffsetDeleteRequest, OffsetFetchRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::records::RecordBatchDecoder;
use kafka_protocol::ResponseError;
use oxbow_broker::client::{ClientError, Connection};
use oxbow_e2e::harness::{sample, BrokerOptions, BrokerProcess};
use tokio::time::timeout;
use uuid::Uuid;

mod support;
use support::{
    call, connect, create_topic_ok, encode_body, expect_code, expect_ok, fetch_request,
    list_offsets_request, metadata, now_ms, produce_partition, produce_request, raw_frame,
    topic_name, BatchBuilder, CREATE_TOPICS_V, IO_TIMEOUT, METADATA_V,
};

const BROKER_BIN: &str = env!("CARGO_BIN_EXE_oxbow-broker");
/// Longest a refused configuration may keep the binary running.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

// The versions the typed helpers speak: recent, flexible, and still addressing topics by name
// (Produce v13 and Fetch v13+ address them by id).
const PRODUCE_V: i16 = 9;
const FETCH_V: i16 = 12;
const LIST_OFFSETS_V: i16 = 7;
const API_VERSIONS_V: i16 = 3;
const INIT_PRODUCER_ID_V: i16 = 4;
/// The consumer group the API probes use; it never has members.
const PROBE_GROUP: &str = "probe-group";
const PROBE_TXN: &str = "probe-txn";

// ---------------------------------------------------------------------------------------------
// ApiVersions and the advertised version ranges
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn api_versions_newer_than_the_broker_knows_is_answered_at_v0_with_unsupported_version(
) -> Result<()> {
    let broker = start(&[])?;
    let outcome = async {
        let mut conn = connect(&broker).await?;
        // A v9 header over a v3-style body: what a client newer than the broker sends first.
        let body = encode_body(&api_versions_request(), 3)?;
        let correlation_id = 4242;
        let frame = raw_frame(ApiKey::ApiVersions as i16, 9, correlation_id, 2, &body)?;
        conn.write_raw(&frame).await?;
        let mut frame = read_frame(&mut conn, "ApiVersions v9").await?;
        // ApiVersions responses always carry header v0, so an old client can read them.
        let header = ResponseHeader::decode(&mut frame, 0).context("response header v0")?;
        ensure!(
            header.correlation_id == correlation_id,
            "correlation id {} answers request {correlation_id}",
            header.correlation_id
        );
        let response = ApiVersionsResponse::decode(&mut frame, 0)
            .context("the answer to ApiVersions v9 does not decode as ApiVersionsResponse v0")?;
        ensure!(
            !frame.has_remaining(),
            "{} bytes left after ApiVersionsResponse v0",
            frame.remaining()
        );
        expect_code(
            "ApiVersions v9",
            response.error_code,
            ResponseError::UnsupportedVersion,
        )?;
        let keys: BTreeSet<i16> = response.api_keys.iter().map(|a| a.api_key).collect();
        for key in [ApiKey::Produce, ApiKey::Fetch, ApiKey::ApiVersions] {
            ensure!(
                keys.contains(&(key as i16)),
                "the UNSUPPORTED_VERSION answer does not list {key:?}: {keys:?}"
            );
        }
        // The client retries at a version from the list on the same connection.
        let retry = call(&mut conn, &api_versions_request(), API_VERSIONS_V).await?;
        expect_ok("ApiVersions v3 after the v9 refusal", retry.error_code)?;
        assert_alive(&broker).await
    }
    .await;
    broker.explain(outcome)
}

#[tokio::test]
async fn every_advertised_api_answers_at_every_version_it_advertises() -> Result<()> {
    let broker = start(&[])?;
    let outcome = async {
        let mut conn = connect(&broker).await?;
        let mut advertised = None;
        for version in 0..=4 {
            let response = call(&mut conn, &api_versions_request(), version).await?;
            expect_ok(&format!("ApiVersions v{version}"), response.error_code)?;
            let list = api_list(&response);
            ensure!(!list.is_empty(), "ApiVersions v{version} lists no API");
            match &advertised {
                None => advertised = Some(list),
                Some(first) => ensure!(
                    *first == list,
                    "ApiVersions v{version} lists {list:?}, v0 listed {first:?}"
                ),
            }
        }
        let advertised = advertised.context("no ApiVersions answer")?;
        // KIP-896: what Kafka 4 clients require, and no version below Kafka 4's floor.
        for (key, floor) in [
            (ApiKey::Produce, 3),
            (ApiKey::Fetch, 4),
            (ApiKey::Metadata, 0),
        ] {
            let range = advertised
                .iter()
                .find(|(k, _, _)| *k == key as i16)
                .with_context(|| format!("{key:?} is not advertised: {advertised:?}"))?;
            ensure!(
                range.1 == floor,
                "{key:?} advertised from v{}, expected v{floor}",
                range.1
            );
        }

        let probe = Probe::prepare(&broker).await?;
        let mut unprobed = Vec::new();
        for &(key, min, max) in &advertised {
            let api = ApiKey::try_from(key)
                .map_err(|()| anyhow::anyhow!("ApiVersions advertises unknown API key {key}"))?;
            ensure!(min <= max, "{api:?} advertised as v{min}-v{max}");
            // A connection per API, so one that gets closed does not hide the others.
            let mut conn = connect(&broker).await?;
            for version in min..=max {
                if !probe
                    .run(&mut conn, api, version)
                    .await
                    .with_context(|| format!("{api:?} v{version}, advertised v{min}-v{max}"))?
                {
                    unprobed.push(api);
                    break;
                }
            }
        }
        ensure!(
            unprobed.is_empty(),
            "advertised but without a probe in this test (add one to Probe::run): {unprobed:?}"
        );
        assert_alive(&broker).await
    }
    .await;
    broker.explain(outcome)
}

/// Minimal valid requests for each API, at any version, against a prepared topic.
struct Probe {
    topic: String,
    topic_id: Uuid,
    /// The producer id and epoch of the transactional id `PROBE_TXN`.
    txn_producer: (i64, i16),
}

impl Probe {
    async fn prepare(broker: &BrokerProcess) -> Result<Probe> {
        let mut conn = connect(broker).await?;
        let topic = "probe".to_string();
        create_topic_ok(&mut conn, &topic, 1, &[]).await?;
        create_topic_ok(&mut conn, "probe-grow", 1, &[]).await?;
        let meta = metadata(&mut conn, Some(&[topic.as_str()]), false).await?;
        let topic_id = meta
            .topics
            .first()
            .map(|t| t.topic_id)
            .context("no metadata for the probe topic")?;
        ensure!(!topic_id.is_nil(), "topic {topic} has no id");
        // Group APIs need the group's coordinator, which a client finds first; this also
        // creates __consumer_offsets.
        let find = kafka_protocol::messages::FindCoordinatorRequest::default()
            .with_key(StrBytes::from_static_str(PROBE_GROUP));
        let found = call(&mut conn, &find, 3).await?;
        expect_ok("FindCoordinator", found.error_code)?;
        // The transaction APIs need a transactional id with a producer id: its coordinator
        // first (which creates __transaction_state), then InitProducerId.
        let find = kafka_protocol::messages::FindCoordinatorRequest::default()
            .with_key(StrBytes::from_static_str(PROBE_TXN))
            .with_key_type(1);
        let found = call(&mut conn, &find, 3).await?;
        expect_ok("FindCoordinator of a transactional id", found.error_code)?;
        let init = kafka_protocol::messages::InitProducerIdRequest::default()
            .with_transactional_id(Some(kafka_protocol::messages::TransactionalId(
                StrBytes::from_static_str(PROBE_TXN),
            )))
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(kafka_protocol::messages::ProducerId(-1))
            .with_producer_epoch(-1);
        let started = std::time::Instant::now();
        let initialized = loop {
            let r = call(&mut conn, &init, 4).await?;
            // The coordinator loads its partitions as their leadership arrives.
            if r.error_code == ResponseError::CoordinatorLoadInProgress.code()
                && started.elapsed() < IO_TIMEOUT
            {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
            expect_ok("InitProducerId of a transactional id", r.error_code)?;
            break r;
        };
        Ok(Probe {
            topic,
            topic_id,
            txn_producer: (initialized.producer_id.0, initialized.producer_epoch),
        })
    }

    /// Sends one minimal request of `api` at `version` and checks the answer decodes and
    /// succeeds; `false` when this test has no probe for the API.
    async fn run(&self, conn: &mut Connection, api: ApiKey, version: i16) -> Result<bool> {
        let topic = self.topic.as_str();
        match api {
            ApiKey::ApiVersions => {
                let r = call(conn, &api_versions_request(), version).await?;
                expect_ok("ApiVersions", r.error_code)?;
            }
            ApiKey::Metadata => {
                // v0 spells "every topic" as an empty list, later versions as null.
                // allow_auto_topic_creation exists from v4; before, it must keep its default.
                let all = MetadataRequest::default()
                    .with_topics((version == 0).then(Vec::new))
                    .with_allow_auto_topic_creation(version < 4);
                let r = call(conn, &all, version).await?;
                ensure!(!r.brokers.is_empty(), "no brokers in {r:?}");
                ensure!(
                    find_topic(&r, topic).is_some(),
                    "every-topic metadata lacks {topic}"
                );
                let one = MetadataRequest::default()
                    .with_topics(Some(vec![metadata_topic(topic)]))
                    .with_allow_auto_topic_creation(version < 4);
                let r = call(conn, &one, version).await?;
                let t = find_topic(&r, topic).context("topic missing")?;
                expect_ok("Metadata topic", t.error_code)?;
                ensure!(t.partitions.len() == 1, "partitions {:?}", t.partitions);
            }
            ApiKey::Produce => {
                let records = batch(&[b"probe".to_vec()])?;
                let data = PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(records));
                let topic_data = if version >= 13 {
                    TopicProduceData::default().with_topic_id(self.topic_id)
                } else {
                    TopicProduceData::default().with_name(topic_name(topic))
                };
                let request = ProduceRequest::default()
                    .with_acks(1)
                    .with_timeout_ms(5000)
                    .with_topic_data(vec![topic_data.with_partition_data(vec![data])]);
                let r = call(conn, &request, version).await?;
                let p = r
                    .responses
                    .first()
                    .and_then(|t| t.partition_responses.first())
                    .context("no partition in the Produce response")?;
                expect_ok("Produce", p.error_code)?;
                ensure!(p.base_offset >= 0, "base offset {}", p.base_offset);
            }
            ApiKey::Fetch => {
                let partition = FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20);
                let fetch_topic = if version >= 13 {
                    FetchTopic::default().with_topic_id(self.topic_id)
                } else {
                    FetchTopic::default().with_topic(topic_name(topic))
                };
                let request = FetchRequest::default()
                    .with_max_wait_ms(0)
                    .with_min_bytes(0)
                    .with_session_epoch(-1)
                    .with_topics(vec![fetch_topic.with_partitions(vec![partition])]);
                let r = call(conn, &request, version).await?;
                expect_ok("Fetch", r.error_code)?;
                let p = r
                    .responses
                    .first()
                    .and_then(|t| t.partitions.first())
                    .context("no partition in the Fetch response")?;
                expect_ok("Fetch partition", p.error_code)?;
            }
            ApiKey::ListOffsets => {
                let request = list_offsets_request(topic, 0, -1);
                let r = call(conn, &request, version).await?;
                let p = r
                    .topics
                    .first()
                    .and_then(|t| t.partitions.first())
                    .context("no partition in the ListOffsets response")?;
                expect_ok("ListOffsets", p.error_code)?;
                ensure!(p.offset >= 0, "latest offset {}", p.offset);
            }
            ApiKey::DescribeCluster => {
                let r = call(conn, &DescribeClusterRequest::default(), version).await?;
                expect_ok("DescribeCluster", r.error_code)?;
                ensure!(!r.brokers.is_empty(), "no brokers in {r:?}");
            }
            ApiKey::CreateTopics => {
                let name = format!("probe-create-v{version}");
                let request = CreateTopicsRequest::default()
                    .with_timeout_ms(5000)
                    .with_topics(vec![creatable_topic(&name, 1)]);
                let r = call(conn, &request, version).await?;
                let t = r.topics.first().context("no topic in the response")?;
                expect_ok("CreateTopics", t.error_code)?;
            }
            ApiKey::DeleteTopics => {
                let name = format!("probe-delete-v{version}");
                create_topic_ok(conn, &name, 1, &[]).await?;
                let request = if version >= 6 {
                    DeleteTopicsRequest::default().with_topics(vec![
                        DeleteTopicState::default().with_name(Some(topic_name(&name)))
                    ])
                } else {
                    DeleteTopicsRequest::default().with_topic_names(vec![topic_name(&name)])
                };
                let r = call(conn, &request.with_timeout_ms(5000), version).await?;
                let t = r.responses.first().context("no topic in the response")?;
                expect_ok("DeleteTopics", t.error_code)?;
            }
            ApiKey::DescribeConfigs => {
                let resource = DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_string(topic.to_string()))
                    .with_configuration_keys(None);
                let request = DescribeConfigsRequest::default().with_resources(vec![resource]);
                let r = call(conn, &request, version).await?;
                let result = r.results.first().context("no resource in the response")?;
                expect_ok("DescribeConfigs", result.error_code)?;
                ensure!(!result.configs.is_empty(), "no configs for topic {topic}");
            }
            ApiKey::CreatePartitions => {
                // Each version grows the topic by one partition.
                let grow = CreatePartitionsTopic::default()
                    .with_name(topic_name("probe-grow"))
                    .with_count(2 + i32::from(version))
                    .with_assignments(None);
                let request = CreatePartitionsRequest::default()
                    .with_timeout_ms(5000)
                    .with_topics(vec![grow]);
                let r = call(conn, &request, version).await?;
                let t = r.results.first().context("no topic in the response")?;
                expect_ok("CreatePartitions", t.error_code)?;
            }
            ApiKey::InitProducerId => {
                let r = call(conn, &init_producer_id_request(), version).await?;
                expect_ok("InitProducerId", r.error_code)?;
                ensure!(r.producer_id.0 >= 0, "producer id {:?}", r.producer_id);
            }
            ApiKey::FindCoordinator => {
                let group = StrBytes::from_static_str(PROBE_GROUP);
                // v4 batches the keys (KIP-699); before, one key per request.
                let request = if version >= 4 {
                    FindCoordinatorRequest::default().with_coordinator_keys(vec![group])
                } else {
                    FindCoordinatorRequest::default().with_key(group)
                };
                let r = call(conn, &request, version).await?;
                let (code, node) = match r.coordinators.first() {
                    Some(c) if version >= 4 => (c.error_code, c.node_id.0),
                    _ => (r.error_code, r.node_id.0),
                };
                expect_ok("FindCoordinator", code)?;
                ensure!(node >= 0, "coordinator node {node}");
            }
            ApiKey::JoinGroup => {
                // An empty group id is refused at once, before any rebalance wait.
                let r = call(conn, &JoinGroupRequest::default(), version).await?;
                expect_code(
                    "JoinGroup with an empty group id",
                    r.error_code,
                    ResponseError::InvalidGroupId,
                )?;
            }
            ApiKey::SyncGroup => {
                let request = SyncGroupRequest::default()
                    .with_group_id(GroupId(StrBytes::from_static_str(PROBE_GROUP)))
                    .with_generation_id(1)
                    .with_member_id(StrBytes::from_static_str("nobody"));
                let r = call(conn, &request, version).await?;
                ensure!(
                    r.error_code != 0,
                    "SyncGroup of an unknown member succeeded"
                );
            }
            ApiKey::Heartbeat => {
                let request = HeartbeatRequest::default()
                    .with_group_id(GroupId(StrBytes::from_static_str(PROBE_GROUP)))
                    .with_generation_id(1)
                    .with_member_id(StrBytes::from_static_str("nobody"));
                let r = call(conn, &request, version).await?;
                ensure!(
                    r.error_code != 0,
                    "Heartbeat of an unknown member succeeded"
                );
            }
            ApiKey::LeaveGroup => {
                let nobody = StrBytes::from_static_str("nobody");
                // v3 leaves in batches (KIP-345); before, one member per request.
                let request = if version >= 3 {
                    LeaveGroupRequest::default()
                        .with_members(vec![MemberIdentity::default().with_member_id(nobody)])
                } else {
                    LeaveGroupRequest::default().with_member_id(nobody)
                };
                let request =
                    request.with_group_id(GroupId(StrBytes::from_static_str(PROBE_GROUP)));
                call(conn, &request, version).await?;
            }
            ApiKey::ListGroups => {
                let r = call(conn, &ListGroupsRequest::default(), version).await?;
                expect_ok("ListGroups", r.error_code)?;
            }
            ApiKey::DescribeGroups => {
                let request = DescribeGroupsRequest::default()
                    .with_groups(vec![GroupId(StrBytes::from_static_str(PROBE_GROUP))]);
                let r = call(conn, &request, version).await?;
                ensure!(r.groups.len() == 1, "{} groups described", r.groups.len());
            }
            ApiKey::DeleteGroups => {
                let request = DeleteGroupsRequest::default()
                    .with_groups_names(vec![GroupId(StrBytes::from_static_str("no-such-group"))]);
                let r = call(conn, &request, version).await?;
                ensure!(r.results.len() == 1, "{} results", r.results.len());
            }
            ApiKey::OffsetCommit => {
                // A commit outside any generation, as a consumer using assign() makes.
                let partition = OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(0);
                let request = OffsetCommitRequest::default()
                    .with_group_id(GroupId(StrBytes::from_static_str(PROBE_GROUP)))
                    .with_generation_id_or_member_epoch(-1)
                    .with_topics(vec![OffsetCommitRequestTopic::default()
                        .with_name(topic_name(topic))
                        .with_partitions(vec![partition])]);
                let r = call(conn, &request, version).await?;
                let p = r
                    .topics
                    .first()
                    .and_then(|t| t.partitions.first())
                    .context("no partition in the OffsetCommit response")?;
                expect_ok("OffsetCommit", p.error_code)?;
            }
            ApiKey::OffsetFetch => {
                let group = GroupId(StrBytes::from_static_str(PROBE_GROUP));
                // v8 fetches for several groups at once (KIP-709).
                let request = if version >= 8 {
                    OffsetFetchRequest::default().with_groups(vec![
                        OffsetFetchRequestGroup::default()
                            .with_group_id(group)
                            .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                                .with_name(topic_name(topic))
                                .with_partition_indexes(vec![0])])),
                    ])
                } else {
                    OffsetFetchRequest::default()
                        .with_group_id(group)
                        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                            .with_name(topic_name(topic))
                            .with_partition_indexes(vec![0])]))
                };
                let r = call(conn, &request, version).await?;
                let code = match r.groups.first() {
                    Some(g) if version >= 8 => g.error_code,
                    _ => r.error_code,
                };
                expect_ok("OffsetFetch", code)?;
            }
            ApiKey::OffsetDelete => {
                let request = OffsetDeleteRequest::default()
                    .with_group_id(GroupId(StrBytes::from_static_str(PROBE_GROUP)))
                    .with_topics(vec![OffsetDeleteRequestTopic::default()
                        .with_name(topic_name(topic))
                        .with_partitions(vec![
                            OffsetDeleteRequestPartition::default().with_partition_index(0)
                        ])]);
                call(conn, &request, version).await?;
            }
            ApiKey::AlterConfigs => {
                let resource =
                    kafka_protocol::messages::alter_configs_request::AlterConfigsResource::default(
                    )
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_string(topic.to_string()))
                    .with_configs(vec![
                        kafka_protocol::messages::alter_configs_request::AlterableConfig::default()
                            .with_name(StrBytes::from_static_str("retention.ms"))
                            .with_value(Some(StrBytes::from_string(format!(
                                "{}",
                                3_600_000 + i64::from(version)
                            )))),
                    ]);
                let request = kafka_protocol::messages::AlterConfigsRequest::default()
                    .with_resources(vec![resource]);
                let r = call(conn, &request, version).await?;
                let result = r.responses.first().context("no resource in the response")?;
                expect_ok("AlterConfigs", result.error_code)?;
            }
            ApiKey::IncrementalAlterConfigs => {
                use kafka_protocol::messages::incremental_alter_configs_request::{
                    AlterConfigsResource, AlterableConfig,
                };
                let resource = AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_string(topic.to_string()))
                    .with_configs(vec![AlterableConfig::default()
                        .with_name(StrBytes::from_static_str("cleanup.policy"))
                        .with_config_operation(0)
                        .with_value(Some(StrBytes::from_static_str("delete")))]);
                let request = kafka_protocol::messages::IncrementalAlterConfigsRequest::default()
                    .with_resources(vec![resource]);
                let r = call(conn, &request, version).await?;
                let result = r.responses.first().context("no resource in the response")?;
                expect_ok("IncrementalAlterConfigs", result.error_code)?;
            }
            ApiKey::DeleteRecords => {
                use kafka_protocol::messages::delete_records_request::{
                    DeleteRecordsPartition, DeleteRecordsTopic,
                };
                let request = kafka_protocol::messages::DeleteRecordsRequest::default()
                    .with_timeout_ms(5000)
                    .with_topics(vec![DeleteRecordsTopic::default()
                        .with_name(topic_name(topic))
                        .with_partitions(vec![DeleteRecordsPartition::default()
                            .with_partition_index(0)
                            .with_offset(0)])]);
                let r = call(conn, &request, version).await?;
                let t = r.topics.first().context("no topic in the response")?;
                let p = t
                    .partitions
                    .first()
                    .context("no partition in the response")?;
                expect_ok("DeleteRecords", p.error_code)?;
            }
            ApiKey::OffsetForLeaderEpoch => {
                use kafka_protocol::messages::offset_for_leader_epoch_request::{
                    OffsetForLeaderPartition, OffsetForLeaderTopic,
                };
                let request = kafka_protocol::messages::OffsetForLeaderEpochRequest::default()
                    .with_topics(vec![OffsetForLeaderTopic::default()
                        .with_topic(topic_name(topic))
                        .with_partitions(vec![OffsetForLeaderPartition::default()
                            .with_partition(0)
                            .with_current_leader_epoch(-1)
                            .with_leader_epoch(0)])]);
                let r = call(conn, &request, version).await?;
                let p = r
                    .topics
                    .first()
                    .and_then(|t| t.partitions.first())
                    .context("no partition in the response")?;
                expect_ok("OffsetForLeaderEpoch", p.error_code)?;
                ensure!(p.end_offset >= 0, "end offset {}", p.end_offset);
            }
            ApiKey::DescribeLogDirs => {
                let request =
                    kafka_protocol::messages::DescribeLogDirsRequest::default().with_topics(None);
                let r = call(conn, &request, version).await?;
                let dir = r.results.first().context("no log dir in the response")?;
                expect_ok("DescribeLogDirs", dir.error_code)?;
                ensure!(
                    dir.topics.iter().any(|t| t.name.0.as_str() == topic),
                    "log dir does not list {topic}"
                );
            }
            ApiKey::AlterReplicaLogDirs => {
                use kafka_protocol::messages::alter_replica_log_dirs_request::{
                    AlterReplicaLogDir, AlterReplicaLogDirTopic,
                };
                // To the directory the replica is in (the broker's only one): nothing moves.
                let described = call(
                    conn,
                    &kafka_protocol::messages::DescribeLogDirsRequest::default().with_topics(None),
                    1,
                )
                .await?;
                let dir = described
                    .results
                    .first()
                    .context("no log dir in DescribeLogDirs")?
                    .log_dir
                    .clone();
                let request = kafka_protocol::messages::AlterReplicaLogDirsRequest::default()
                    .with_dirs(vec![AlterReplicaLogDir::default()
                        .with_path(dir)
                        .with_topics(vec![AlterReplicaLogDirTopic::default()
                            .with_name(topic_name(topic))
                            .with_partitions(vec![0])])]);
                let r = call(conn, &request, version).await?;
                let p = r
                    .results
                    .first()
                    .and_then(|t| t.partitions.first())
                    .context("no partition in the response")?;
                expect_ok("AlterReplicaLogDirs", p.error_code)?;
            }
            ApiKey::ElectLeaders => {
                use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
                let request = kafka_protocol::messages::ElectLeadersRequest::default()
                    .with_election_type(0)
                    .with_timeout_ms(5000)
                    .with_topic_partitions(Some(vec![TopicPartitions::default()
                        .with_topic(topic_name(topic))
                        .with_partitions(vec![0])]));
                let r = call(conn, &request, version).await?;
                let p = r
                    .replica_election_results
                    .first()
                    .and_then(|t| t.partition_result.first())
                    .context("no partition in the response")?;
                // A single broker already leads everything it hosts.
                ensure!(
                    p.error_code == ResponseError::ElectionNotNeeded.code(),
                    "ElectLeaders: expected ELECTION_NOT_NEEDED, got {}",
                    p.error_code
                );
            }
            ApiKey::AlterPartitionReassignments => {
                use kafka_protocol::messages::alter_partition_reassignments_request::{
                    ReassignablePartition, ReassignableTopic,
                };
                let request =
                    kafka_protocol::messages::AlterPartitionReassignmentsRequest::default()
                        .with_timeout_ms(5000)
                        .with_topics(vec![ReassignableTopic::default()
                            .with_name(topic_name(topic))
                            .with_partitions(vec![ReassignablePartition::default()
                                .with_partition_index(0)
                                .with_replicas(Some(vec![
                                    kafka_protocol::messages::BrokerId(0),
                                ]))])]);
                let r = call(conn, &request, version).await?;
                expect_ok("AlterPartitionReassignments", r.error_code)?;
                let p = r
                    .responses
                    .first()
                    .and_then(|t| t.partitions.first())
                    .context("no partition in the response")?;
                expect_ok("AlterPartitionReassignments partition", p.error_code)?;
            }
            ApiKey::ListPartitionReassignments => {
                let request =
                    kafka_protocol::messages::ListPartitionReassignmentsRequest::default()
                        .with_timeout_ms(5000)
                        .with_topics(None);
                let r = call(conn, &request, version).await?;
                expect_ok("ListPartitionReassignments", r.error_code)?;
                ensure!(r.topics.is_empty(), "no reassignment should be in progress");
            }
            // Without an authorizer (as here) the ACL APIs answer SECURITY_DISABLED, as Kafka's
            // do; broker/tests/acl.rs runs every version with an authorizer on.
            ApiKey::DescribeAcls => {
                let request = kafka_protocol::messages::DescribeAclsRequest::default()
                    .with_resource_type_filter(1)
                    .with_pattern_type_filter(1)
                    .with_operation(1)
                    .with_permission_type(1);
                let r = call(conn, &request, version).await?;
                ensure!(
                    r.error_code == ResponseError::SecurityDisabled.code(),
                    "DescribeAcls without an authorizer answered {r:?}"
                );
            }
            ApiKey::CreateAcls => {
                use kafka_protocol::messages::create_acls_request::AclCreation;
                let request = kafka_protocol::messages::CreateAclsRequest::default()
                    .with_creations(vec![AclCreation::default()
                        .with_resource_type(2)
                        .with_resource_name(StrBytes::from_string(topic.to_string()))
                        .with_resource_pattern_type(3)
                        .with_principal(StrBytes::from_static_str("User:probe"))
                        .with_host(StrBytes::from_static_str("*"))
                        .with_operation(3)
                        .with_permission_type(3)]);
                let r = call(conn, &request, version).await?;
                let result = r.results.first().context("no result in the response")?;
                ensure!(
                    result.error_code == ResponseError::SecurityDisabled.code(),
                    "CreateAcls without an authorizer answered {r:?}"
                );
            }
            ApiKey::DeleteAcls => {
                use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
                let request =
                    kafka_protocol::messages::DeleteAclsRequest::default().with_filters(vec![
                        DeleteAclsFilter::default()
                            .with_resource_type_filter(1)
                            .with_pattern_type_filter(1)
                            .with_operation(1)
                            .with_permission_type(1),
                    ]);
                let r = call(conn, &request, version).await?;
                let result = r.filter_results.first().context("no filter result")?;
                ensure!(
                    result.error_code == ResponseError::SecurityDisabled.code(),
                    "DeleteAcls without an authorizer answered {r:?}"
                );
            }
            // On a PLAINTEXT listener the SASL requests are answered ILLEGAL_SASL_STATE, as in
            // Kafka; broker/tests/security.rs covers them on SASL listeners.
            ApiKey::SaslHandshake => {
                let request = kafka_protocol::messages::SaslHandshakeRequest::default()
                    .with_mechanism(StrBytes::from_static_str("SCRAM-SHA-256"));
                let r = call(conn, &request, version).await?;
                ensure!(
                    r.error_code == ResponseError::IllegalSaslState.code(),
                    "SaslHandshake on PLAINTEXT answered {r:?}"
                );
            }
            ApiKey::SaslAuthenticate => {
                let request = kafka_protocol::messages::SaslAuthenticateRequest::default()
                    .with_auth_bytes(Bytes::from_static(b"\0probe\0secret"));
                let r = call(conn, &request, version).await?;
                ensure!(
                    r.error_code == ResponseError::IllegalSaslState.code(),
                    "SaslAuthenticate on PLAINTEXT answered {r:?}"
                );
            }
            ApiKey::AlterUserScramCredentials => {
                use kafka_protocol::messages::alter_user_scram_credentials_request::ScramCredentialUpsertion;
                let upsert = ScramCredentialUpsertion::default()
                    .with_name(StrBytes::from_static_str("probe"))
                    .with_mechanism(1)
                    .with_iterations(4096)
                    .with_salt(Bytes::from_static(b"probe-salt"))
                    .with_salted_password(Bytes::from(vec![7u8; 32]));
                let request = kafka_protocol::messages::AlterUserScramCredentialsRequest::default()
                    .with_upsertions(vec![upsert]);
                let r = call(conn, &request, version).await?;
                let result = r.results.first().context("no result")?;
                expect_ok("AlterUserScramCredentials", result.error_code)?;
            }
            ApiKey::DescribeUserScramCredentials => {
                let request =
                    kafka_protocol::messages::DescribeUserScramCredentialsRequest::default()
                        .with_users(None);
                let r = call(conn, &request, version).await?;
                expect_ok("DescribeUserScramCredentials", r.error_code)?;
            }
            ApiKey::UnregisterBroker => {
                let request = kafka_protocol::messages::UnregisterBrokerRequest::default()
                    .with_broker_id(kafka_protocol::messages::BrokerId(99));
                let r = call(conn, &request, version).await?;
                ensure!(
                    r.error_code == ResponseError::BrokerIdNotRegistered.code(),
                    "UnregisterBroker of an unknown id: expected BROKER_ID_NOT_REGISTERED, got {} ({:?})",
                    r.error_code,
                    r.error_message
                );
            }
            ApiKey::AlterClientQuotas => {
                use kafka_protocol::messages::alter_client_quotas_request::{
                    EntityData, EntryData, OpData,
                };
                let request = kafka_protocol::messages::AlterClientQuotasRequest::default()
                    .with_entries(vec![EntryData::default()
                        .with_entity(vec![EntityData::default()
                            .with_entity_type(StrBytes::from_static_str("client-id"))
                            .with_entity_name(Some(StrBytes::from_static_str("probe")))])
                        .with_ops(vec![OpData::default()
                            .with_key(StrBytes::from_static_str("producer_byte_rate"))
                            .with_value(1e9)])]);
                let r = call(conn, &request, version).await?;
                let entry = r.entries.first().context("no AlterClientQuotas result")?;
                expect_ok("AlterClientQuotas", entry.error_code)?;
            }
            ApiKey::DescribeClientQuotas => {
                let request = kafka_protocol::messages::DescribeClientQuotasRequest::default();
                let r = call(conn, &request, version).await?;
                expect_ok("DescribeClientQuotas", r.error_code)?;
                ensure!(r.entries.is_some(), "no entries in {r:?}");
            }
            ApiKey::UpdateFeatures => {
                // The current level: a no-op at v0, a dry run from v1.
                let request = update_features(&[("metadata.version", 27, 1)], version > 0, version);
                let r = call(conn, &request, version).await?;
                expect_ok("UpdateFeatures", r.error_code)?;
            }
            ApiKey::DescribeQuorum => {
                use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
                let request = kafka_protocol::messages::DescribeQuorumRequest::default()
                    .with_topics(vec![TopicData::default()
                        .with_topic_name(topic_name("__cluster_metadata"))
                        .with_partitions(vec![PartitionData::default()])]);
                let r = call(conn, &request, version).await?;
                expect_ok("DescribeQuorum", r.error_code)?;
                let p = r
                    .topics
                    .first()
                    .and_then(|t| t.partitions.first())
                    .context("no partition in the DescribeQuorum response")?;
                expect_ok("DescribeQuorum partition", p.error_code)?;
                ensure!(
                    p.current_voters.len() == 1 && p.leader_id == p.current_voters[0].replica_id,
                    "a standalone broker is the only voter and leads: {p:?}"
                );
            }
            ApiKey::AddPartitionsToTxn => {
                use kafka_protocol::messages::add_partitions_to_txn_request::{
                    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
                };
                let id =
                    kafka_protocol::messages::TransactionalId(StrBytes::from_static_str(PROBE_TXN));
                let producer_id = kafka_protocol::messages::ProducerId(self.txn_producer.0);
                let topics = vec![AddPartitionsToTxnTopic::default()
                    .with_name(topic_name(topic))
                    .with_partitions(vec![0])];
                let request = if version <= 3 {
                    kafka_protocol::messages::AddPartitionsToTxnRequest::default()
                        .with_v3_and_below_transactional_id(id)
                        .with_v3_and_below_producer_id(producer_id)
                        .with_v3_and_below_producer_epoch(self.txn_producer.1)
                        .with_v3_and_below_topics(topics)
                } else {
                    kafka_protocol::messages::AddPartitionsToTxnRequest::default()
                        .with_transactions(vec![AddPartitionsToTxnTransaction::default()
                            .with_transactional_id(id)
                            .with_producer_id(producer_id)
                            .with_producer_epoch(self.txn_producer.1)
                            .with_topics(topics)])
                };
                let r = call(conn, &request, version).await?;
                let results = if version <= 3 {
                    r.results_by_topic_v3_and_below
                } else {
                    expect_ok("AddPartitionsToTxn", r.error_code)?;
                    r.results_by_transaction
                        .into_iter()
                        .flat_map(|t| t.topic_results)
                        .collect()
                };
                let codes: Vec<i16> = results
                    .iter()
                    .flat_map(|t| {
                        t.results_by_partition
                            .iter()
                            .map(|p| p.partition_error_code)
                    })
                    .collect();
                ensure!(codes == [0], "AddPartitionsToTxn answered {codes:?}");
            }
            ApiKey::AddOffsetsToTxn => {
                let request = kafka_protocol::messages::AddOffsetsToTxnRequest::default()
                    .with_transactional_id(kafka_protocol::messages::TransactionalId(
                        StrBytes::from_static_str(PROBE_TXN),
                    ))
                    .with_producer_id(kafka_protocol::messages::ProducerId(self.txn_producer.0))
                    .with_producer_epoch(self.txn_producer.1)
                    .with_group_id(kafka_protocol::messages::GroupId(
                        StrBytes::from_static_str(PROBE_GROUP),
                    ));
                let r = call(conn, &request, version).await?;
                expect_ok("AddOffsetsToTxn", r.error_code)?;
            }
            ApiKey::TxnOffsetCommit => {
                use kafka_protocol::messages::txn_offset_commit_request::{
                    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
                };
                let request = kafka_protocol::messages::TxnOffsetCommitRequest::default()
                    .with_transactional_id(kafka_protocol::messages::TransactionalId(
                        StrBytes::from_static_str(PROBE_TXN),
                    ))
                    .with_group_id(kafka_protocol::messages::GroupId(
                        StrBytes::from_static_str(PROBE_GROUP),
                    ))
                    .with_producer_id(kafka_protocol::messages::ProducerId(self.txn_producer.0))
                    .with_producer_epoch(self.txn_producer.1)
                    .with_generation_id(-1)
                    .with_topics(vec![TxnOffsetCommitRequestTopic::default()
                        .with_name(topic_name(topic))
                        .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(0)])]);
                let r = call(conn, &request, version).await?;
                let codes: Vec<i16> = r
                    .topics
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
                    .collect();
                ensure!(codes == [0], "TxnOffsetCommit answered {codes:?}");
            }
            ApiKey::EndTxn => {
                let request = kafka_protocol::messages::EndTxnRequest::default()
                    .with_transactional_id(kafka_protocol::messages::TransactionalId(
                        StrBytes::from_static_str(PROBE_TXN),
                    ))
                    .with_producer_id(kafka_protocol::messages::ProducerId(self.txn_producer.0))
                    .with_producer_epoch(self.txn_producer.1)
                    .with_committed(true);
                let r = call(conn, &request, version).await?;
                // The first commit prepares; later ones find it completing or completed.
                ensure!(
                    [0, ResponseError::ConcurrentTransactions.code()].contains(&r.error_code),
                    "EndTxn answered {}",
                    r.error_code
                );
            }
            ApiKey::WriteTxnMarkers => {
                use kafka_protocol::messages::write_txn_markers_request::{
                    WritableTxnMarker, WritableTxnMarkerTopic,
                };
                let request = kafka_protocol::messages::WriteTxnMarkersRequest::default()
                    .with_markers(vec![WritableTxnMarker::default()
                        .with_producer_id(kafka_protocol::messages::ProducerId(1))
                        .with_transaction_result(false)
                        .with_topics(vec![WritableTxnMarkerTopic::default()
                            .with_name(topic_name("no-such-topic"))
                            .with_partition_indexes(vec![0])])]);
                let r = call(conn, &request, version).await?;
                let codes: Vec<i16> = r
                    .markers
                    .iter()
                    .flat_map(|m| m.topics.iter())
                    .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
                    .collect();
                ensure!(
                    codes == [ResponseError::UnknownTopicOrPartition.code()],
                    "WriteTxnMarkers to a missing topic answered {codes:?}"
                );
            }
            ApiKey::DescribeProducers => {
                use kafka_protocol::messages::describe_producers_request::TopicRequest;
                let request = kafka_protocol::messages::DescribeProducersRequest::default()
                    .with_topics(vec![TopicRequest::default()
                        .with_name(topic_name(topic))
                        .with_partition_indexes(vec![0])]);
                let r = call(conn, &request, version).await?;
                let codes: Vec<i16> = r
                    .topics
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
                    .collect();
                ensure!(codes == [0], "DescribeProducers answered {codes:?}");
            }
            ApiKey::DescribeTransactions => {
                let request = kafka_protocol::messages::DescribeTransactionsRequest::default()
                    .with_transactional_ids(vec![kafka_protocol::messages::TransactionalId(
                        StrBytes::from_static_str(PROBE_TXN),
                    )]);
                let r = call(conn, &request, version).await?;
                let state = r
                    .transaction_states
                    .first()
                    .context("no transaction state")?;
                expect_ok("DescribeTransactions", state.error_code)?;
                ensure!(
                    state.producer_id.0 == self.txn_producer.0,
                    "DescribeTransactions names producer {:?}",
                    state.producer_id
                );
            }
            ApiKey::ListTransactions => {
                let request = kafka_protocol::messages::ListTransactionsRequest::default()
                    .with_duration_filter(-1);
                let r = call(conn, &request, version).await?;
                expect_ok("ListTransactions", r.error_code)?;
                ensure!(
                    r.transaction_states
                        .iter()
                        .any(|t| t.transactional_id.0.as_str() == PROBE_TXN),
                    "ListTransactions lacks {PROBE_TXN}: {:?}",
                    r.transaction_states
                );
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// An UpdateFeatures request of `(feature, level, upgrade type)` updates.
/// At `version` 0 the upgrade type travels as `allow_downgrade`.
fn update_features(
    updates: &[(&str, i16, i8)],
    validate_only: bool,
    version: i16,
) -> kafka_protocol::messages::UpdateFeaturesRequest {
    use kafka_protocol::messages::update_features_request::FeatureUpdateKey;
    kafka_protocol::messages::UpdateFeaturesRequest::default()
        .with_timeout_ms(10_000)
        .with_validate_only(validate_only)
        .with_feature_updates(
            updates
                .iter()
                .map(|(name, level, upgrade)| {
                    let key = FeatureUpdateKey::default()
                        .with_feature(StrBytes::from_string((*name).to_string()))
                        .with_max_version_level(*level);
                    if version == 0 {
                        key.with_allow_downgrade(*upgrade != 1)
                    } else {
                        key.with_upgrade_type(*upgrade)
                    }
                })
                .collect(),
        )
}

/// `(name, min, max)` of the supported features and `(name, level)` of the finalized ones.
type Features = (Vec<(String, i16, i16)>, Vec<(String, i16)>, i64);

async fn features(conn: &mut Connection) -> Result<Features> {
    let r = call(conn, &api_versions_request(), 3).await?;
    expect_ok("ApiVersions", r.error_code)?;
    let supported = r
        .supported_features
        .iter()
        .map(|f| (f.name.to_string(), f.min_version, f.max_version))
        .collect();
    let finalized = r
        .finalized_features
        .iter()
        .map(|f| {
            ensure!(f.min_version_level == f.max_version_level, "{f:?}");
            Ok((f.name.to_string(), f.max_version_level))
        })
        .collect::<Result<_>>()?;
    Ok((supported, finalized, r.finalized_features_epoch))
}

/// ApiVersions v3 reports the supported and finalized features as Kafka 4.1 does, and
/// UpdateFeatures changes the finalized levels with Kafka's validation: a downgrade needs a
/// downgrade type and is refused across a metadata.version that changed the metadata, a
/// level the broker does not support is refused, a dry run changes nothing, and what was
/// set survives a restart.
#[tokio::test]
async fn update_features_validates_like_kafka_and_the_levels_survive_a_restart() -> Result<()> {
    let mut broker = start(&[])?;
    let outcome = async {
        let mut conn = connect(&broker).await?;
        let (supported, finalized, epoch) = features(&mut conn).await?;
        let names: Vec<&str> = supported.iter().map(|f| f.0.as_str()).collect();
        for name in [
            "metadata.version",
            "kraft.version",
            "group.version",
            "transaction.version",
            "eligible.leader.replicas.version",
            "share.version",
        ] {
            ensure!(names.contains(&name), "{name} is not among {supported:?}");
        }
        ensure!(
            supported.contains(&("metadata.version".to_string(), 7, 27)),
            "{supported:?}"
        );
        ensure!(
            finalized == [("metadata.version".to_string(), 27)],
            "a new cluster finalizes metadata.version 4.1-IV1 only: {finalized:?}"
        );
        ensure!(epoch >= 0, "finalized features epoch {epoch}");

        let refused =
            |what: &str, r: &kafka_protocol::messages::UpdateFeaturesResponse, says: &str| {
                ensure!(
                    r.error_code == ResponseError::InvalidUpdateVersion.code()
                        && r.error_message.as_ref().is_some_and(|m| m.contains(says)),
                    "{what}: expected INVALID_UPDATE_VERSION saying {says:?}, got {r:?}"
                );
                Ok(())
            };
        let r = call(
            &mut conn,
            &update_features(&[("metadata.version", 24, 1)], false, 1),
            1,
        )
        .await?;
        refused(
            "a downgrade typed as an upgrade",
            &r,
            "without setting the upgrade type",
        )?;
        let r = call(
            &mut conn,
            &update_features(&[("metadata.version", 21, 2)], false, 1),
            1,
        )
        .await?;
        refused("a downgrade below 4.0-IV1", &r, "might delete metadata")?;
        let r = call(
            &mut conn,
            &update_features(&[("group.version", 1, 1)], false, 1),
            1,
        )
        .await?;
        refused("an unsupported level", &r, "does not support this feature")?;
        let r = call(
            &mut conn,
            &update_features(&[("metadata.version", 24, 2)], true, 1),
            1,
        )
        .await?;
        expect_ok("dry-run downgrade", r.error_code)?;
        ensure!(
            features(&mut conn).await?.1 == finalized,
            "a dry run changed the levels"
        );

        let r = call(
            &mut conn,
            &update_features(&[("metadata.version", 24, 2)], false, 2),
            2,
        )
        .await?;
        expect_ok("safe downgrade to 4.0-IV2", r.error_code)?;
        let (_, lowered, later) = features(&mut conn).await?;
        ensure!(
            lowered == [("metadata.version".to_string(), 24)],
            "{lowered:?}"
        );
        ensure!(
            later > epoch,
            "the epoch did not grow: {epoch} then {later}"
        );
        Ok(())
    }
    .await;
    let outcome = match outcome {
        Ok(()) => {
            async {
                broker.restart()?;
                let mut conn = connect(&broker).await?;
                let (_, finalized, _) = features(&mut conn).await?;
                ensure!(
                    finalized == [("metadata.version".to_string(), 24)],
                    "after a restart: {finalized:?}"
                );
                let r = call(
                    &mut conn,
                    &update_features(&[("metadata.version", 27, 1)], false, 0),
                    0,
                )
                .await?;
                expect_ok("upgrade back at v0", r.error_code)?;
                ensure!(
                    r.results.len() == 1 && r.results[0].error_code == 0,
                    "v0 answers each feature: {r:?}"
                );
                Ok(())
            }
            .await
        }
        Err(e) => Err(e),
    };
    broker.explain(outcome)
}

/// DescribeLogDirs v4 reports the size of the log directory's filesystem and the space left
/// on it, as Kafka does from Java's FileStore (`kafka-log-dirs.sh` prints both).
#[tokio::test]
async fn describe_log_dirs_reports_the_total_and_usable_bytes_of_the_filesystem() -> Result<()> {
    let broker = start(&[])?;
    let outcome = async {
        let mut conn = connect(&broker).await?;
        let request = kafka_protocol::messages::DescribeLogDirsRequest::default().with_topics(None);
        let response = call(&mut conn, &request, 4).await?;
        let dir = response.results.first().context("no log directory")?;
        expect_ok("DescribeLogDirs", dir.error_code)?;
        let stat = rustix::fs::statvfs(broker.data_dir())?;
        let total = i64::try_from(stat.f_blocks * stat.f_frsize)?;
        let usable = i64::try_from(stat.f_bavail * stat.f_frsize)?;
        ensure!(
            dir.total_bytes == total,
            "total bytes {}, the filesystem has {total}",
            dir.total_bytes
        );
        // Other writers share the disk: allow what they may write in between.
        ensure!(
            dir.usable_bytes > 0 && (dir.usable_bytes - usable).abs() < 1 << 30,
            "usable bytes {}, the filesystem has {usable} available",
            dir.usable_bytes
        );
        ensure!(dir.usable_bytes <= dir.total_bytes, "{dir:?}");
        Ok(())
    }
    .await;
    broker.explain(outcome)
}

// ---------------------------------------------------------------------------------------------
// Requests the broker cannot answer: the connection is closed, the broker lives on
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_unknown_api_key_closes_the_connection_and_the_broker_keeps_serving() -> Result<()> {
    let broker = start(&[])?;
    let outcome = async {
        let mut conn = connect(&broker).await?;
        conn.write_raw(&raw_frame(9999, 0, 1, 1, &[])?).await?;
        expect_closed(&mut conn, "a request with API key 9999").await?;
        assert_alive(&broker).await
    }
    .await;
    broker.explain(outcome)
}

#[tokio::test]
async fn produce_below_the_version_floor_closes_the_connection_and_writes_nothing() -> Result<()> {
    let broker = start(&[])?;
    let outcome = async {
        let mut conn = connect(&broker).await?;
        create_topic_ok(&mut conn, "floor", 1, &[]).await?;
        // Produce v2 is v3 without the leading nullable transactional id (encoded -1: 2 bytes).
        let v3_body = encode_body(
            &produce_request("floor", 0, batch(&[b"old".to_vec()])?, 1),
            3,
        )?;
        let v2_body = &v3_body[2..];
        let mut old = connect(&broker).await?;
        old.write_raw(&raw_frame(ApiKey::Produce as i16, 2, 7, 1, v2_body)?)
            .await?;
        expect_closed(&mut old, "Produce v2").await?;
        assert_alive(&broker).await?;
        ensure_latest(&mut conn, "floor", 0, 0).await
    }
    .await;
    broker.explain(outcome)
}

#[tokio::test]
async fn a_frame_larger_than_socket_request_max_bytes_closes_the_connection() -> Result<()> {
    let broker = start(&["--socket-request-max-bytes", "1048576"])?;
    let outcome = async {
        let mut conn = connect(&broker).await?;
        let mut frame = BytesMut::new();
        frame.put_i32(2 * 1024 * 1024);
        frame.put_slice(&[0x5a; 1024]);
        conn.write_raw(&frame).await?;
        expect_closed(&mut conn, "a 2 MiB frame over a 1 MiB limit").await?;
        assert_alive(&broker).await
    }
    .await;
    broker.explain(outcome)
}

#[tokio::test]
async fn a_frame_cut_short_by_the_client_closes_the_connection() -> Result<()> {
    let mut broker = start(&[])?;
    let outcome = async {
        let mut conn = connect(&broker).await?;
        let mut frame = BytesMut::new();
        frame.put_i32(100);
        frame.put_slice(&[0, 3, 0, 12, 0, 0, 0, 1, 0, 0]);
        conn.write_raw(&frame).await?;
        conn.shutdown_write().await?;
        expect_closed(&mut conn, "10 of 100 announced bytes, then FIN").await?;
        ensure!(broker.is_running(), "the broker exited");
        assert_alive(&broker).await
    }
    .await;
    broker.explain(outcome)
}

#[tokio::test]
async fn garbage_frames_close_the_connection_without_harming_the_broker() -> Result<()> {
    let mut broker = start(&[])?;
    let outcome = async {
        let mut frames: Vec<(String, Bytes)> = Vec::new();
        frames.push(("an empty frame".into(), Bytes::from_static(&[0, 0, 0, 0])));
        frames.push((
            "a negative size".into(),
            Bytes::from_static(&[0xff, 0xff, 0xff, 0xfe, 1, 2, 3, 4]),
        ));
        frames.push((
            "a frame shorter than any header".into(),
            Bytes::from_static(&[0, 0, 0, 3, 0, 3, 0]),
        ));
        for seed in [1u64, 7, 42, 1234, 99_999] {
            let mut frame = BytesMut::new();
            frame.put_i32(64);
            frame.put_slice(&pseudo_random(seed, 64));
            frames.push((format!("64 random bytes (seed {seed})"), frame.freeze()));
        }
        let produce = encode_body(
            &produce_request("garbage", 0, batch(&[b"x".to_vec()])?, 1),
            PRODUCE_V,
        )?;
        frames.push((
            "a Produce v9 request cut in half".into(),
            raw_frame(
                ApiKey::Produce as i16,
                PRODUCE_V,
                4,
                2,
                &produce[..produce.len() / 2],
            )?,
        ));
        expect_each_closes(&mut broker, &frames).await
    }
    .await;
    broker.explain(outcome)
}

#[tokio::test]
async fn request_bodies_that_do_not_decode_close_the_connection() -> Result<()> {
    let mut broker = start(&[])?;
    let outcome = async {
        let metadata = ApiKey::Metadata as i16;
        let mut short_array = BytesMut::new();
        short_array.put_i32(3); // three topics announced, none sent
        let mut huge_array = BytesMut::new();
        huge_array.put_i32(i32::MAX); // 2^31-1 topics announced in a 4-byte body
        let frames: Vec<(String, Bytes)> = vec![
            (
                "Metadata v1 announcing 3 topics and sending none".into(),
                raw_frame(metadata, 1, 1, 1, &short_array)?,
            ),
            (
                "Metadata v12 announcing 3 topics (compact length 4) and sending none".into(),
                raw_frame(metadata, 12, 2, 2, &[4])?,
            ),
            (
                "Metadata v1 announcing 2^31-1 topics in a 4-byte body".into(),
                raw_frame(metadata, 1, 3, 1, &huge_array)?,
            ),
            (
                "Metadata v12 whose body is 32 bytes of 0xff (compact length 2^32-2)".into(),
                raw_frame(metadata, 12, 4, 2, &[0xff; 32])?,
            ),
        ];
        expect_each_closes(&mut broker, &frames).await
    }
    .await;
    broker.explain(outcome)
}

// ---------------------------------------------------------------------------------------------
// Refusals with Kafka's error codes
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn invalid_topic_names_are_refused_with_invalid_topic_exception_and_never_created(
) -> Result<()> {
    let broker = start(&[])?;
    let outcome = async {
        let mut conn = connect(&broker).await?;
        let long = "x".repeat(250);
        let names = ["bad name", "..", long.as_str()];
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(5000)
            .with_topics(names.iter().map(|n| creatable_topic(n, 1)).collect());
        let response: CreateTopicsResponse = call(&mut conn, &request, CREATE_TOPICS_V).await?;
        ensure!(
            response.topics.len() == names.len(),
            "{} results for {} topics",
            response.topics.len(),
            names.len()
        );
        for name in names {
            let result = response
                .topics
                .iter()
                .find(|t| t.name.0.as_str() == name)
                .with_context(|| format!("no result for topic {name:?}"))?;
            expect_code(
                &format!("CreateTopics {name:?}"),
                result.error_code,
                ResponseError::InvalidTopicException,
            )?;
        }

        // Metadata may create topics on demand, but never one with an invalid name.
        let asked = metadata(&mut conn, Some(&["bad name"]), true).await?;
        let topic = find_topic(&asked, "bad name").context("no answer for `bad name`")?;
        expect_code(
            "Metadata with auto-creation for `bad name`",
            topic.error_code,
            ResponseError::InvalidTopicException,
        )?;
        let all = metadata(&mut conn, None, false).await?;
        for name in names {
            ensure!(
                find_topic(&all, name).is_none(),
                "topic {name:?} exists after it was refused"
            );
        }
        assert_alive(&broker).await
    }
    .await;
    broker.explain(outcome)
}

#[tokio::test]
async fn a_batch_with_a_flipped_crc_covered_byte_is_refused_as_corrupt_and_not_stored() -> Result<()>
{
    let broker = start(&[])?;
    let outcome = async {
        let mut conn = connect(&broker).await?;
        create_topic_ok(&mut conn, "crc", 1, &[]).await?;
        let good = batch(&[b"first".to_vec(), b"second".to_vec()])?;
        let mut bad = BytesMut::from(&good[..]);
        // The last byte belongs to the last record's value, inside the CRC-32C's range.
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        let refused = produce_partition(&mut conn, "crc", 0, bad.freeze(), 1).await?;
        expect_code(
            "Produce with a flipped byte",
            refused.error_code,
            ResponseError::CorruptMessage,
        )?;
        ensure_latest(&mut conn, "crc", 0, 0).await?;
        assert_alive(&broker).await?;

        // The same batch unharmed is accepted: the refusal was about the flipped byte.
        let accepted = produce_partition(&mut conn, "crc", 0, good, 1).await?;
        expect_ok("Produce of the intact batch", accepted.error_code)?;
        ensure_latest(&mut conn, "crc", 0, 2).await
    }
    .await;
    broker.explain(outcome)
}

#[tokio::test]
async fn produce_to_a_missing_partition_or_topic_is_unknown_and_creates_nothing() -> Result<()> {
    let broker = start(&[])?;
    let outcome = async {
        let mut conn = connect(&broker).await?;
        create_topic_ok(&mut conn, "present", 2, &[]).await?;
        let records = batch(&[b"lost".to_vec()])?;

        let missing_partition =
            produce_partition(&mut conn, "present", 99, records.clone(), 1).await?;
        expect_code(
            "Produce to present-99",
            missing_partition.error_code,
            ResponseError::UnknownTopicOrPartition,
        )?;
        ensure_latest(&mut conn, "present", 0, 0).await?;
        ensure_latest(&mut conn, "present", 1, 0).await?;

        // Produce never creates topics, even where Metadata would (auto.create.topics.enable).
        let missing_topic = produce_partition(&mut conn, "ghost", 0, records, 1).await?;
        expect_code(
            "Produce to a topic that does not exist",
            missing_topic.error_code,
            ResponseError::UnknownTopicOrPartition,
        )?;
        let asked = metadata(&mut conn, Some(&["ghost"]), false).await?;
        let ghost = find_topic(&asked, "ghost").context("no answer for `ghost`")?;
        expect_code(
            "Metadata for `ghost` without auto-creation",
            ghost.error_code,
            ResponseError::UnknownTopicOrPartition,
        )?;
        let all = metadata(&mut conn, None, false).await?;
        ensure!(
            find_topic(&all, "ghost").is_none(),
            "Produce created topic `ghost`"
        );
        assert_alive(&broker).await
    }
    .await;
    broker.explain(outcome)
}

#[tokio::test]
async fn a_batch_larger_than_message_max_bytes_is_refused_as_too_large() -> Result<()> {
    let broker = start(&["--message-max-bytes", "1000"])?;
    let outcome = async {
        let mut conn = connect(&broker).await?;
        create_topic_ok(&mut conn, "small", 1, &[]).await?;
        let refused =
            produce_partition(&mut conn, "small", 0, batch(&[vec![b'b'; 5000]])?, 1).await?;
        expect_code(
            "Produce of a 5000-byte record over message.max.bytes=1000",
            refused.error_code,
            ResponseError::MessageTooLarge,
        )?;
        ensure_latest(&mut conn, "small", 0, 0).await?;

        let accepted =
            produce_partition(&mut conn, "small", 0, batch(&[vec![b's'; 100]])?, 1).await?;
        expect_ok("Produce of a 100-byte record", accepted.error_code)?;
        ensure_latest(&mut conn, "small", 0, 1).await?;
        assert_alive(&broker).await
    }
    .await;
    broker.explain(outcome)
}

// ---------------------------------------------------------------------------------------------
// Idempotence, acks=0, pipelining
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_idempotent_retry_is_stored_once_and_a_sequence_gap_is_refused() -> Result<()> {
    let broker = start(&[])?;
    let outcome = async {
        let mut conn = connect(&broker).await?;
        create_topic_ok(&mut conn, "idempotent", 1, &[]).await?;
        let init = call(&mut conn, &init_producer_id_request(), INIT_PRODUCER_ID_V).await?;
        expect_ok("InitProducerId", init.error_code)?;
        let (id, epoch) = (init.producer_id.0, init.producer_epoch);
        ensure!(id >= 0 && epoch >= 0, "producer id {id}, epoch {epoch}");

        let values = [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()];
        let first = idempotent_batch(&values, id, epoch, 0)?;
        let stored = produce_partition(&mut conn, "idempotent", 0, first.clone(), -1).await?;
        expect_ok("first idempotent batch", stored.error_code)?;
        ensure!(
            stored.base_offset == 0,
            "base offset {}",
            stored.base_offset
        );

        // A retry, as after a lost response: acknowledged where it already is, not stored again.
        let retried = produce_partition(&mut conn, "idempotent", 0, first, -1).await?;
        expect_ok("retried idempotent batch", retried.error_code)?;
        ensure!(
            retried.base_offset == 0,
            "the retry was acknowledged at {}, the original at 0",
            retried.base_offset
        );
        ensure_latest(&mut conn, "idempotent", 0, 3).await?;

        let gap = idempotent_batch(&values, id, epoch, 5)?;
        let refused = produce_partition(&mut conn, "idempotent", 0, gap, -1).await?;
        expect_code(
            "idempotent batch with base sequence 5 after 0-2",
            refused.error_code,
            ResponseError::OutOfOrderSequenceNumber,
        )?;
        ensure_latest(&mut conn, "idempotent", 0, 3).await?;

        // The producer continues where its sequence stands.
        let next = idempotent_batch(&values, id, epoch, 3)?;
        let stored = produce_partition(&mut conn, "idempotent", 0, next, -1).await?;
        expect_ok("idempotent batch with base sequence 3", stored.error_code)?;
        ensure!(
            stored.base_offset == 3,
            "base offset {}",
            stored.base_offset
        );
        ensure_latest(&mut conn, "idempotent", 0, 6).await
    }
    .await;
    broker.explain(outcome)
}

#[tokio::test]
async fn a_produce_with_acks_zero_gets_no_response_but_is_stored() -> Result<()> {
    let broker = start(&[])?;
    let outcome = async {
        let mut conn = connect(&broker).await?;
        create_topic_ok(&mut conn, "fire-and-forget", 1, &[]).await?;
        let request = produce_request("fire-and-forget", 0, batch(&[b"once".to_vec()])?, 0);
        conn.send_only(&request, PRODUCE_V).await?;
        let correlation_id = conn
            .send_only(&api_versions_request(), API_VERSIONS_V)
            .await?;
        // The first frame back must be the ApiVersions answer: read_response checks the id.
        let response = timeout(
            IO_TIMEOUT,
            conn.read_response::<ApiVersionsRequest>(correlation_id, API_VERSIONS_V),
        )
        .await
        .context("no answer to ApiVersions after an acks=0 Produce")?
        .context("the first frame after an acks=0 Produce is not the ApiVersions answer")?;
        expect_ok("ApiVersions", response.error_code)?;
        ensure_latest(&mut conn, "fire-and-forget", 0, 1).await
    }
    .await;
    broker.explain(outcome)
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() -> Result<()> {
    let broker = start(&[])?;
    let outcome = async {
        let mut conn = connect(&broker).await?;
        create_topic_ok(&mut conn, "pipeline", 1, &[]).await?;
        let meta = MetadataRequest::default()
            .with_topics(Some(vec![metadata_topic("pipeline")]))
            .with_allow_auto_topic_creation(false);
        let (meta_id, meta_frame) = conn.encode_request(&meta, METADATA_V)?;
        let (versions_id, versions_frame) =
            conn.encode_request(&api_versions_request(), API_VERSIONS_V)?;
        let (offsets_id, offsets_frame) =
            conn.encode_request(&list_offsets_request("pipeline", 0, -1), LIST_OFFSETS_V)?;
        let mut all = BytesMut::new();
        for frame in [&meta_frame, &versions_frame, &offsets_frame] {
            all.put_slice(frame);
        }
        conn.write_raw(&all).await?;

        let meta = timeout(
            IO_TIMEOUT,
            conn.read_response::<MetadataRequest>(meta_id, METADATA_V),
        )
        .await
        .context("no first response")?
        .context("first response is not the Metadata answer")?;
        let topic = find_topic(&meta, "pipeline").context("Metadata lacks the topic")?;
        expect_ok("Metadata", topic.error_code)?;
        let versions = timeout(
            IO_TIMEOUT,
            conn.read_response::<ApiVersionsRequest>(versions_id, API_VERSIONS_V),
        )
        .await
        .context("no second response")?
        .context("second response is not the ApiVersions answer")?;
        expect_ok("ApiVersions", versions.error_code)?;
        let offsets = timeout(
            IO_TIMEOUT,
            conn.read_response::<ListOffsetsRequest>(offsets_id, LIST_OFFSETS_V),
        )
        .await
        .context("no third response")?
        .context("third response is not the ListOffsets answer")?;
        let partition = offsets
            .topics
            .first()
            .and_then(|t| t.partitions.first())
            .context("ListOffsets without a partition")?;
        expect_ok("ListOffsets", partition.error_code)?;
        Ok(())
    }
    .await;
    broker.explain(outcome)
}

// ---------------------------------------------------------------------------------------------
// Fetch
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_waiting_fetch_returns_as_soon_as_records_arrive() -> Result<()> {
    let broker = start(&[])?;
    let outcome = async {
        let mut consumer = connect(&broker).await?;
        let mut producer = connect(&broker).await?;
        create_topic_ok(&mut producer, "wake", 1, &[]).await?;
        let request = fetch_request("wake", 0, 0, 5000, 1);
        let started = Instant::now();
        let fetching = async {
            let response = call(&mut consumer, &request, FETCH_V).await?;
            Ok::<_, anyhow::Error>((started.elapsed(), response))
        };
        let producing = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let stored =
                produce_partition(&mut producer, "wake", 0, batch(&[b"wake up".to_vec()])?, 1)
                    .await?;
            expect_ok("Produce", stored.error_code)
        };
        let (fetched, produced) = tokio::join!(fetching, producing);
        produced?;
        let (waited, response) = fetched?;
        let partition = fetch_partition(&response)?;
        expect_ok("Fetch", partition.error_code)?;
        let records = partition.records.clone().unwrap_or_default();
        ensure!(
            !records.is_empty(),
            "the fetch returned after {waited:?} without the record produced at 200 ms"
        );
        // max_wait_ms is 5 s: returning well before it means the append woke the fetch.
        ensure!(
            waited < Duration::from_secs(3),
            "the fetch took {waited:?} although a record arrived after 200 ms"
        );
        Ok(())
    }
    .await;
    broker.explain(outcome)
}

#[tokio::test]
async fn a_fetch_with_nothing_to_return_waits_for_max_wait_ms() -> Result<()> {
    let broker = start(&[])?;
    let outcome = async {
        let mut conn = connect(&broker).await?;
        create_topic_ok(&mut conn, "quiet", 1, &[]).await?;
        let started = Instant::now();
        let response = call(&mut conn, &fetch_request("quiet", 0, 0, 300, 1), FETCH_V).await?;
        let waited = started.elapsed();
        let partition = fetch_partition(&response)?;
        expect_ok("Fetch", partition.error_code)?;
        let records = partition.records.clone().unwrap_or_default();
        ensure!(
            records.is_empty(),
            "{} bytes from an empty log",
            records.len()
        );
        ensure!(
            waited >= Duration::from_millis(250),
            "the fetch returned after {waited:?}, before max_wait_ms 300"
        );
        ensure!(
            waited < Duration::from_secs(3),
            "the fetch took {waited:?} for max_wait_ms 300"
        );
        Ok(())
    }
    .await;
    broker.explain(outcome)
}

#[tokio::test]
async fn a_fetch_beyond_the_log_end_is_offset_out_of_range() -> Result<()> {
    let broker = start(&[])?;
    let outcome = async {
        let mut conn = connect(&broker).await?;
        create_topic_ok(&mut conn, "short", 1, &[]).await?;
        let values: Vec<Vec<u8>> = (0..5).map(|i| format!("r{i}").into_bytes()).collect();
        expect_ok(
            "Produce",
            produce_partition(&mut conn, "short", 0, batch(&values)?, 1)
                .await?
                .error_code,
        )?;
        let response = call(&mut conn, &fetch_request("short", 0, 10, 0, 1), FETCH_V).await?;
        expect_code(
            "Fetch at offset 10 of a 5-record log",
            fetch_partition(&response)?.error_code,
            ResponseError::OffsetOutOfRange,
        )?;
        // The log end itself is in range: nothing yet, no error.
        let response = call(&mut conn, &fetch_request("short", 0, 5, 0, 1), FETCH_V).await?;
        expect_ok(
            "Fetch at the log end",
            fetch_partition(&response)?.error_code,
        )?;
        assert_alive(&broker).await
    }
    .await;
    broker.explain(outcome)
}

#[tokio::test]
async fn a_fetch_inside_a_batch_returns_the_whole_batch() -> Result<()> {
    let broker = start(&[])?;
    let outcome = async {
        let mut conn = connect(&broker).await?;
        create_topic_ok(&mut conn, "batched", 1, &[]).await?;
        let values: Vec<Vec<u8>> = (0..5).map(|i| format!("r{i}").into_bytes()).collect();
        expect_ok(
            "Produce",
            produce_partition(&mut conn, "batched", 0, batch(&values)?, 1)
                .await?
                .error_code,
        )?;
        let response = call(&mut conn, &fetch_request("batched", 0, 3, 0, 1), FETCH_V).await?;
        let partition = fetch_partition(&response)?;
        expect_ok("Fetch at offset 3", partition.error_code)?;
        let mut records = partition.records.clone().unwrap_or_default();
        ensure!(!records.is_empty(), "no records at offset 3");
        let sets = RecordBatchDecoder::decode_all(&mut records).context("decoding the batches")?;
        let offsets: Vec<i64> = sets
            .iter()
            .flat_map(|s| s.records.iter().map(|r| r.offset))
            .collect();
        ensure!(
            offsets == vec![0, 1, 2, 3, 4],
            "fetch at offset 3 returned offsets {offsets:?}; Kafka serves the whole batch 0-4"
        );
        Ok(())
    }
    .await;
    broker.explain(outcome)
}

// ---------------------------------------------------------------------------------------------
// Metrics, configuration, shutdown
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn metrics_count_requests_by_api_and_bytes_by_topic() -> Result<()> {
    let broker = start(&[])?;
    let outcome = async {
        let mut conn = connect(&broker).await?;
        create_topic_ok(&mut conn, "metered", 1, &[]).await?;
        let stored =
            produce_partition(&mut conn, "metered", 0, batch(&[b"counted".to_vec()])?, 1).await?;
        expect_ok("Produce", stored.error_code)?;
        let fetched = call(&mut conn, &fetch_request("metered", 0, 0, 0, 1), FETCH_V).await?;
        expect_ok("Fetch", fetch_partition(&fetched)?.error_code)?;

        let text = broker.scrape_metrics()?;
        for series in [
            r#"oxbow_requests_total{api="Produce"}"#,
            r#"oxbow_requests_total{api="Fetch"}"#,
            r#"oxbow_topic_bytes_in_total{topic="metered"}"#,
            r#"oxbow_topic_bytes_out_total{topic="metered"}"#,
        ] {
            let value = sample(&text, series)
                .with_context(|| format!("{series} is not in /metrics:\n{text}"))?;
            ensure!(value > 0.0, "{series} is {value}");
        }
        Ok(())
    }
    .await;
    broker.explain(outcome)
}

#[tokio::test]
async fn the_binary_refuses_bad_configuration_and_names_the_key() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("server.properties");
    std::fs::write(&file, "num.partitions=3\nno.such.setting=1\n")?;
    let file = file.display().to_string();
    let cases: [(&[&str], &str); 3] = [
        (
            &["--override", "log.retention.dayz=3"],
            "log.retention.dayz",
        ),
        (&["--num-partitions", "zero"], "num.partitions"),
        (&["--config", file.as_str()], "no.such.setting"),
    ];
    for (args, key) in cases {
        let (status, stderr) = run_binary(dir.path(), args).await?;
        ensure!(
            !status.success(),
            "{args:?} was accepted ({status}); stderr:\n{stderr}"
        );
        ensure!(
            stderr.contains(key),
            "{args:?} failed ({status}) without naming `{key}`; stderr:\n{stderr}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn config_file_values_apply_and_flags_override_them() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("server.properties");
    std::fs::write(
        &file,
        "# auto-created topics get three partitions\nnum.partitions=3\n",
    )?;
    let file = file.display().to_string();
    for (args, expected) in [
        (vec!["--config", file.as_str()], 3),
        (vec!["--config", file.as_str(), "--num-partitions", "2"], 2),
    ] {
        let broker = start(&args)?;
        let outcome = async {
            let mut conn = connect(&broker).await?;
            let response = metadata(&mut conn, Some(&["auto"]), true).await?;
            let topic = find_topic(&response, "auto").context("no answer for `auto`")?;
            expect_ok("Metadata with auto-creation", topic.error_code)?;
            ensure!(
                topic.partitions.len() == expected,
                "with {args:?} the auto-created topic has {} partitions, expected {expected}",
                topic.partitions.len()
            );
            Ok(())
        }
        .await;
        broker.explain(outcome)?;
    }
    Ok(())
}

#[tokio::test]
async fn sigterm_during_a_waiting_fetch_exits_cleanly_and_promptly() -> Result<()> {
    let mut broker = start(&[])?;
    let outcome = async {
        let mut conn = connect(&broker).await?;
        create_topic_ok(&mut conn, "parked", 1, &[]).await?;
        conn.send_only(&fetch_request("parked", 0, 0, 30_000, 1), FETCH_V)
            .await?;
        // Let the fetch reach the broker and park.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = Instant::now();
        let status = broker.stop()?;
        let took = started.elapsed();
        ensure!(
            status.success(),
            "SIGTERM with a parked fetch: exit {status}"
        );
        ensure!(
            took < Duration::from_secs(10),
            "the broker took {took:?} to exit with a fetch parked for 30 s"
        );
        // Whether the parked fetch got an (empty) answer first or not, the connection ends.
        match timeout(IO_TIMEOUT, conn.read_frame()).await {
            Err(_) => bail!("the connection stayed open after the broker exited"),
            Ok(_) => Ok(()),
        }
    }
    .await;
    broker.explain(outcome)
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn start(args: &[&str]) -> Result<BrokerProcess> {
    BrokerProcess::start(BrokerOptions::new(BROKER_BIN).args(args.iter().copied()))
}

/// A fresh connection is accepted and answered: the broker survived what came before.
async fn assert_alive(broker: &BrokerProcess) -> Result<()> {
    let mut conn = connect(broker)
        .await
        .context("the broker no longer accepts connections")?;
    let response = call(&mut conn, &api_versions_request(), API_VERSIONS_V)
        .await
        .context("the broker no longer answers ApiVersions on a fresh connection")?;
    expect_ok("ApiVersions on a fresh connection", response.error_code)?;
    ensure!(!response.api_keys.is_empty(), "ApiVersions lists no API");
    Ok(())
}

/// The broker closes the connection (EOF or reset) instead of answering.
async fn expect_closed(conn: &mut Connection, what: &str) -> Result<()> {
    match timeout(IO_TIMEOUT, conn.read_frame()).await {
        Err(_) => {
            bail!("{what}: the connection was neither answered nor closed within {IO_TIMEOUT:?}")
        }
        Ok(Ok(None) | Err(ClientError::Io { .. })) => Ok(()),
        Ok(Ok(Some(frame))) => bail!(
            "{what}: expected the connection to be closed, got a {}-byte response {:02x?}",
            frame.len(),
            &frame[..frame.len().min(64)]
        ),
        Ok(Err(e)) => bail!("{what}: expected the connection to be closed, got {e}"),
    }
}

/// Sends each frame on a fresh connection and expects the broker to close it and live on.
/// Every frame is tried (the broker is restarted if one kills it), and all failures reported.
async fn expect_each_closes(broker: &mut BrokerProcess, frames: &[(String, Bytes)]) -> Result<()> {
    let mut failures = Vec::new();
    for (what, frame) in frames {
        let outcome = async {
            let mut conn = connect(broker).await?;
            conn.write_raw(frame).await?;
            expect_closed(&mut conn, what).await?;
            // Give a crashing broker a moment to be seen as gone.
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert_alive(broker).await
        }
        .await;
        let crashed = !broker.is_running();
        match (outcome, crashed) {
            (_, true) => {
                failures.push(format!("{what}: the broker process exited"));
                broker.restart()?;
            }
            (Err(e), false) => failures.push(format!("{what}: {e:#}")),
            (Ok(()), false) => {}
        }
    }
    ensure!(
        failures.is_empty(),
        "{} of {} frames were mishandled:\n{}",
        failures.len(),
        frames.len(),
        failures.join("\n")
    );
    Ok(())
}

async fn read_frame(conn: &mut Connection, what: &str) -> Result<Bytes> {
    timeout(IO_TIMEOUT, conn.read_frame())
        .await
        .with_context(|| format!("no answer to {what} within {IO_TIMEOUT:?}"))??
        .with_context(|| format!("the broker closed the connection instead of answering {what}"))
}

/// Deterministic noise (xorshift64*), so a failing case replays exactly.
fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

fn api_versions_request() -> ApiVersionsRequest {
    ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("oxbow-protocol-tests"))
        .with_client_software_version(StrBytes::from_static_str("1.0"))
}

/// (api key, min, max) of every advertised API, sorted.
fn api_list(response: &ApiVersionsResponse) -> Vec<(i16, i16, i16)> {
    let mut list: Vec<_> = response
        .api_keys
        .iter()
        .map(|a| (a.api_key, a.min_version, a.max_version))
        .collect();
    list.sort_unstable();
    list
}

fn init_producer_id_request() -> InitProducerIdRequest {
    InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
}

fn creatable_topic(name: &str, partitions: i32) -> CreatableTopic {
    CreatableTopic::default()
        .with_name(topic_name(name))
        .with_num_partitions(partitions)
        .with_replication_factor(1)
}

fn metadata_topic(name: &str) -> MetadataRequestTopic {
    MetadataRequestTopic::default().with_name(Some(topic_name(name)))
}

fn find_topic<'a>(response: &'a MetadataResponse, name: &str) -> Option<&'a MetadataResponseTopic> {
    response
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == name))
}

/// Checks the partition's latest offset (ListOffsets, timestamp -1): what was written.
async fn ensure_latest(
    conn: &mut Connection,
    topic: &str,
    partition: i32,
    expected: i64,
) -> Result<()> {
    let response = call(
        conn,
        &list_offsets_request(topic, partition, -1),
        LIST_OFFSETS_V,
    )
    .await?;
    let result = response
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .context("ListOffsets without a partition")?;
    expect_ok(
        &format!("ListOffsets {topic}-{partition}"),
        result.error_code,
    )?;
    ensure!(
        result.offset == expected,
        "{topic}-{partition} ends at offset {}, expected {expected}",
        result.offset
    );
    Ok(())
}

/// One uncompressed RecordBatch v2 holding `values`, without a producer id (sequences from -1).
fn batch(values: &[Vec<u8>]) -> Result<Bytes> {
    BatchBuilder::default()
        .base_sequence(-1)
        .timestamp(now_ms())
        .values(values)
}

/// One idempotent RecordBatch v2 holding `values`, sequences from `base_sequence`.
fn idempotent_batch(
    values: &[Vec<u8>],
    producer_id: i64,
    epoch: i16,
    base_sequence: i32,
) -> Result<Bytes> {
    BatchBuilder::default()
        .producer(producer_id, epoch)
        .base_sequence(base_sequence)
        .timestamp(now_ms())
        .values(values)
}

fn fetch_partition(response: &kafka_protocol::messages::FetchResponse) -> Result<&PartitionData> {
    expect_ok("Fetch (top level)", response.error_code)?;
    response
        .responses
        .first()
        .and_then(|t| t.partitions.first())
        .context("the Fetch response has no partition")
}

/// Runs the binary outside the harness with `args`, expecting it to exit by itself; returns
/// its status and stderr. A binary still running after [`EXIT_TIMEOUT`] is killed and reported.
async fn run_binary(dir: &Path, args: &[&str]) -> Result<(std::process::ExitStatus, String)> {
    let output = tokio::process::Command::new(BROKER_BIN)
        .arg("--listeners")
        .arg("PLAINTEXT://127.0.0.1:0")
        .arg("--log-dirs")
        .arg(dir.join("data"))
        .arg("--metrics-address")
        .arg("127.0.0.1:0")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = timeout(EXIT_TIMEOUT, output)
        .await
        .with_context(|| format!("the broker with {args:?} still runs after {EXIT_TIMEOUT:?}"))?
        .with_context(|| format!("running {BROKER_BIN}"))?;
    Ok((
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}
