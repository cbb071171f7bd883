//! What the broker's integration tests share when they speak the Kafka protocol themselves:
//! the crate's client (`oxbow_broker::client`) connected to a broker process, typed requests
//! bounded in time, checks of error codes, and the few requests most tests send.
//!
//! Each test binary includes this module (`mod support;`) and uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, MetadataRequest, MetadataResponse, RequestHeader, TopicName,
};
use kafka_protocol::protocol::{Encodable, Request, StrBytes};
use kafka_protocol::ResponseError;
use oxbow_broker::client::Connection;
use oxbow_e2e::harness::BrokerProcess;
use tokio::time::timeout;

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

/// A test CA, a broker certificate for localhost/127.0.0.1 and a client certificate (subject
/// `O=Example, OU=eng, CN=alice`, principal `User:CN=alice,OU=eng,O=Example`), as PEM files in `dir`.
pub(crate) struct Pki {
    pub(crate) ca: PathBuf,
    pub(crate) broker: PathBuf,
    pub(crate) client_cert: String,
    pub(crate) client_key: String,
    pub(crate) ca_pem: String,
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
