//! What the broker's integration tests share when they speak the Kafka protocol themselves:
//! the crate's client (`oxbow_broker::client`) connected to a broker process, typed requests
//! bounded in time, checks of error codes, and the few requests most tests send.
//!
//! Each test binary includes this module (`mod support;`) and uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, FetchRequest, FindCoordinatorRequest,
    ListOffsetsRequest, MetadataRequest, MetadataResponse, ProduceRequest, RequestHeader,
    TopicName,
};
use kafka_protocol::protocol::{Encodable, Request, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use kafka_protocol::ResponseError;
use oxbow_broker::client::Connection;
use oxbow_e2e::cluster::{Cluster, NodeId};
use oxbow_e2e::harness::{BrokerOptions, BrokerProcess};
use tokio::time::timeout;

/// A broker of this checkout that creates topics only when asked
/// (`auto.create.topics.enable=false`), with `args` after that.
pub(crate) fn start_without_auto_create(args: &[&str]) -> Result<BrokerProcess> {
    BrokerProcess::start(
        BrokerOptions::new(env!("CARGO_BIN_EXE_oxbow-broker"))
            .args(["--override", "auto.create.topics.enable=false"])
            .args(args.iter().copied()),
    )
}

/// Bound for connecting and for one request's answer.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(15);

pub(crate) const METADATA_V: i16 = 12;
pub(crate) const CREATE_TOPICS_V: i16 = 7;

/// A connection to the broker's first listener.
pub(crate) async fn connect(broker: &BrokerProcess) -> Result<Connection> {
    connect_to(&broker.bootstrap()).await
}

/// A connection to `address`, bounded by [`IO_TIMEOUT`].
pub(crate) async fn connect_to(address: &str) -> Result<Connection> {
    timeout(IO_TIMEOUT, Connection::connect(address))
        .await
        .with_context(|| format!("connecting to {address} took over {IO_TIMEOUT:?}"))?
        .with_context(|| format!("connecting to {address}"))
}

/// Sends a typed request and waits, bounded, for its typed response.
pub(crate) async fn call<R: Request>(
    conn: &mut Connection,
    request: &R,
    version: i16,
) -> Result<R::Response> {
    let api =
        ApiKey::try_from(R::KEY).map_or_else(|()| format!("API {}", R::KEY), |k| format!("{k:?}"));
    timeout(IO_TIMEOUT, conn.send(request, version))
        .await
        .with_context(|| format!("no answer to {api} v{version} within {IO_TIMEOUT:?}"))?
        .with_context(|| format!("{api} v{version}"))
}

pub(crate) fn expect_ok(what: &str, code: i16) -> Result<()> {
    ensure!(
        code == 0,
        "{what}: expected no error, got {code} ({:?})",
        ResponseError::try_from_code(code)
    );
    Ok(())
}

pub(crate) fn expect_code(what: &str, code: i16, expected: ResponseError) -> Result<()> {
    ensure!(
        code == expected.code(),
        "{what}: expected {expected:?} ({}), got {code} ({:?})",
        expected.code(),
        ResponseError::try_from_code(code)
    );
    Ok(())
}

pub(crate) fn str_bytes(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

pub(crate) fn topic_name(name: &str) -> TopicName {
    TopicName(str_bytes(name))
}

/// Metadata for `topics` (every topic when `None`).
pub(crate) async fn metadata(
    conn: &mut Connection,
    topics: Option<&[&str]>,
    allow_auto_creation: bool,
) -> Result<MetadataResponse> {
    let request = MetadataRequest::default()
        .with_topics(topics.map(|names| {
            names
                .iter()
                .map(|n| MetadataRequestTopic::default().with_name(Some(topic_name(n))))
                .collect()
        }))
        .with_allow_auto_topic_creation(allow_auto_creation);
    call(conn, &request, METADATA_V).await
}

/// Creates a topic with replication factor 1 and these configs; returns the broker's result.
pub(crate) async fn create_topic(
    conn: &mut Connection,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<CreatableTopicResult> {
    let topic = CreatableTopic::default()
        .with_name(topic_name(name))
        .with_num_partitions(partitions)
        .with_replication_factor(1)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(str_bytes(k))
                        .with_value(Some(str_bytes(v)))
                })
                .collect(),
        );
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(5000)
        .with_topics(vec![topic]);
    let response = call(conn, &request, CREATE_TOPICS_V).await?;
    response
        .topics
        .into_iter()
        .next()
        .context("CreateTopics answered no topic")
}

/// Creates a topic as [`create_topic`] does and fails unless it was created.
pub(crate) async fn create_topic_ok(
    conn: &mut Connection,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<()> {
    let result = create_topic(conn, name, partitions, configs).await?;
    expect_ok(
        &format!(
            "CreateTopics {name} with {configs:?} ({:?})",
            result.error_message
        ),
        result.error_code,
    )
}

/// A Produce request (by topic name) of `records` to one partition, with a 5 s timeout.
pub(crate) fn produce_request(
    topic: &str,
    partition: i32,
    records: Bytes,
    acks: i16,
) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])])
}

/// Produces `records` to `topic`-`partition` with `acks` (Produce v9) and returns that
/// partition's answer.
pub(crate) async fn produce_partition(
    conn: &mut Connection,
    topic: &str,
    partition: i32,
    records: Bytes,
    acks: i16,
) -> Result<PartitionProduceResponse> {
    let response = call(conn, &produce_request(topic, partition, records, acks), 9).await?;
    response
        .responses
        .into_iter()
        .flat_map(|t| t.partition_responses)
        .find(|p| p.index == partition)
        .with_context(|| format!("the Produce response lacks {topic}-{partition}"))
}

/// A consumer's Fetch request (by topic name) of one partition from `offset`, up to 1 MiB.
pub(crate) fn fetch_request(
    topic: &str,
    partition: i32,
    offset: i64,
    max_wait_ms: i32,
    min_bytes: i32,
) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(1 << 20)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic_name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])])
}

/// A consumer's ListOffsets request for one partition at `timestamp` (-1 latest, -2 earliest).
pub(crate) fn list_offsets_request(
    topic: &str,
    partition: i32,
    timestamp: i64,
) -> ListOffsetsRequest {
    ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_current_leader_epoch(-1)
                .with_timestamp(timestamp)])])
}

/// A request body encoded by the codec at `version`, without header or size.
pub(crate) fn encode_body<R: Encodable>(request: &R, version: i16) -> Result<Bytes> {
    let mut body = BytesMut::new();
    request.encode(&mut body, version)?;
    Ok(body.freeze())
}

/// A size-prefixed frame with a codec-encoded header claiming any key and version, followed by
/// `body` as given: for requests the typed client refuses to build, and for streams the client
/// does not own (TLS).
pub(crate) fn raw_frame(
    api_key: i16,
    version: i16,
    correlation_id: i32,
    header_version: i16,
    body: &[u8],
) -> Result<Bytes> {
    let header = RequestHeader::default()
        .with_request_api_key(api_key)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("oxbow-broker-tests")));
    let mut frame = BytesMut::new();
    frame.put_i32(0);
    header.encode(&mut frame, header_version)?;
    frame.put_slice(body);
    let size = i32::try_from(frame.len() - 4)?;
    frame[..4].copy_from_slice(&size.to_be_bytes());
    Ok(frame.freeze())
}

/// FindCoordinator's key type of a consumer group.
pub(crate) const GROUP_KEY: i8 = 0;
/// FindCoordinator's key type of a transactional id.
pub(crate) const TRANSACTION_KEY: i8 = 1;

/// The broker coordinating `key` (a group with [`GROUP_KEY`], a transactional id with
/// [`TRANSACTION_KEY`]), asked of each running broker until one answers.
pub(crate) fn find_coordinator(cluster: &mut Cluster, key: &str, key_type: i8) -> Result<NodeId> {
    let mut errors = Vec::new();
    for node in cluster.up() {
        let request = FindCoordinatorRequest::default()
            .with_key(str_bytes(key))
            .with_key_type(key_type);
        match cluster.request(node, &request, 3) {
            Ok(response) if response.error_code == 0 => return Ok(response.node_id.0),
            Ok(response) => errors.push(format!(
                "broker {node}: {:?}",
                ResponseError::try_from_code(response.error_code)
            )),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    bail!("no coordinator (key type {key_type}) for {key}: {errors:?}")
}

/// Milliseconds since the Unix epoch, for record timestamps.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Uncompressed RecordBatch v2 bytes, as a producer sends them in a Produce request.
///
/// By default: no producer id or epoch (-1), sequences 0, 1, 2, … and timestamp 0.
/// kafka-protocol's encoder starts a new batch wherever offset minus sequence changes, so
/// sequences that follow the offsets give one batch, and [`BatchBuilder::without_sequences`]
/// (every sequence -1) gives a batch per record.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BatchBuilder {
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: Option<i32>,
    timestamp: i64,
    transactional: bool,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self {
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: Some(0),
            timestamp: 0,
            transactional: false,
        }
    }
}

impl BatchBuilder {
    /// An idempotent producer's id and epoch.
    pub(crate) fn producer(self, producer_id: i64, producer_epoch: i16) -> Self {
        Self {
            producer_id,
            producer_epoch,
            ..self
        }
    }

    /// The first record's sequence; the others follow it.
    pub(crate) fn base_sequence(self, base_sequence: i32) -> Self {
        Self {
            base_sequence: Some(base_sequence),
            ..self
        }
    }

    /// Every record with sequence -1: the encoder writes a batch per record.
    pub(crate) fn without_sequences(self) -> Self {
        Self {
            base_sequence: None,
            ..self
        }
    }

    /// CreateTime of every record.
    pub(crate) fn timestamp(self, timestamp: i64) -> Self {
        Self { timestamp, ..self }
    }

    /// A transactional producer's batch (the producer's id and epoch set with `producer`).
    pub(crate) fn transactional(self) -> Self {
        Self {
            transactional: true,
            ..self
        }
    }

    /// Records with these values and no key.
    pub(crate) fn values<V: AsRef<[u8]>>(self, values: &[V]) -> Result<Bytes> {
        let records: Vec<(Option<&[u8]>, &[u8])> =
            values.iter().map(|v| (None, v.as_ref())).collect();
        self.records(&records)
    }

    /// Records with these `(key, value)` pairs, at offsets 0, 1, 2, …
    pub(crate) fn records(self, records: &[(Option<&[u8]>, &[u8])]) -> Result<Bytes> {
        let records: Vec<Record> = records
            .iter()
            .enumerate()
            .map(|(i, (key, value))| {
                let delta = i32::try_from(i).unwrap_or(i32::MAX);
                Record {
                    transactional: self.transactional,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: -1,
                    producer_id: self.producer_id,
                    producer_epoch: self.producer_epoch,
                    timestamp_type: TimestampType::Creation,
                    offset: i64::from(delta),
                    sequence: self
                        .base_sequence
                        .map_or(-1, |base| base.wrapping_add(delta)),
                    timestamp: self.timestamp,
                    key: key.map(Bytes::copy_from_slice),
                    value: Some(Bytes::copy_from_slice(value)),
                    headers: Default::default(),
                }
            })
            .collect();
        let mut batch = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut batch,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )?;
        Ok(batch.freeze())
    }
}

/// A test CA, a broker certificate for localhost/127.0.0.1 and a client certificate (subject
/// `O=Example, OU=eng, CN=alice`, principal `User:CN=alice,OU=eng,O=Example`), as PEM files in `dir`.
pub(crate) struct Pki {
    pub(crate) ca: PathBuf,
    pub(crate) broker: PathBuf,
    pub(crate) client_cert: String,
    pub(crate) client_key: String,
    pub(crate) ca_pem: String,
}

/// A TLS client trusting the test CA, presenting the client certificate (`alice`, signed by
/// the CA) when `with_client_cert`.
pub(crate) fn tls_connector(
    pki: &Pki,
    with_client_cert: bool,
) -> Result<tokio_rustls::TlsConnector> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes())?)?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = if with_client_cert {
        builder.with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(pki.client_cert.as_bytes())?],
            PrivateKeyDer::from_pem_slice(pki.client_key.as_bytes())?,
        )?
    } else {
        builder.with_no_client_auth()
    };
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
}

pub(crate) fn make_pki(dir: &Path) -> Result<Pki> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "oxbow test CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let broker_key = KeyPair::generate()?;
    let mut broker_params = CertificateParams::new(vec!["localhost".to_string()])?;
    broker_params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    let broker = broker_params.signed_by(&broker_key, &ca, &ca_key)?;
    let client_key = KeyPair::generate()?;
    let mut client_params = CertificateParams::new(Vec::<String>::new())?;
    // Without the default subject (CN=rcgen self signed cert), which would keep CN first.
    client_params.distinguished_name = rcgen::DistinguishedName::new();
    for (kind, value) in [
        (DnType::OrganizationName, "Example"),
        (DnType::OrganizationalUnitName, "eng"),
        (DnType::CommonName, "alice"),
    ] {
        client_params.distinguished_name.push(kind, value);
    }
    let client = client_params.signed_by(&client_key, &ca, &ca_key)?;
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca.pem())?;
    let broker_path = dir.join("broker.pem");
    std::fs::write(
        &broker_path,
        format!("{}{}", broker.pem(), broker_key.serialize_pem()),
    )?;
    Ok(Pki {
        ca: ca_path,
        broker: broker_path,
        client_cert: client.pem(),
        client_key: client_key.serialize_pem(),
        ca_pem: ca.pem(),
    })
}
