//! Authorization with real broker processes and real clients: with `authorizer.class.name`
//! set, a topic without ACLs is denied and hidden, CreateAcls allows it (rdkafka produces and
//! consumes in a group), DeleteAcls takes it away again, ACLs survive restarts, the ACL APIs
//! answer every version with Kafka's filter semantics, and a three-broker cluster replicates
//! while it enforces ACLs on every broker.
//!
//! Clients connect over PLAINTEXT here, so every request comes from `User:ANONYMOUS`; a broker
//! started with `super.users=User:ANONYMOUS` bootstraps the first ACLs, as an operator would.
//! The same scenario over SASL_SSL with SCRAM users is in `e2e/python/test_acl.py`.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    CreateAclsRequest, CreateTopicsRequest, DeleteAclsRequest, DescribeAclsRequest,
    DescribeAclsResponse, DescribeClusterRequest, MetadataRequest, TopicName,
};
use kafka_protocol::ResponseError;
use oxbow_broker::client::Connection;
use oxbow_e2e::cluster::{Cluster, ClusterOptions};
use oxbow_e2e::harness::{self, BrokerOptions, BrokerProcess};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};

mod support;
use support::{call, connect, metadata, str_bytes, topic_name, IO_TIMEOUT};

/// The broker under test: this build's, or `OXBOW_BROKER_BIN` (e.g. a release build).
fn broker_bin() -> String {
    std::env::var("OXBOW_BROKER_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_oxbow-broker").to_string())
}

const AUTHORIZER: (&str, &str) = (
    "authorizer.class.name",
    "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
);
const ANONYMOUS: &str = "User:ANONYMOUS";
const ACL_VERSION: i16 = 3;

// Kafka's ACL codes.
const ANY: i8 = 1;
const MATCH: i8 = 2;
const LITERAL: i8 = 3;
const PREFIXED: i8 = 4;
const TOPIC: i8 = 2;
const GROUP: i8 = 3;
const CLUSTER: i8 = 4;
const ALL: i8 = 2;
const READ: i8 = 3;
const WRITE: i8 = 4;
const CREATE: i8 = 5;
const ALTER: i8 = 7;
const DESCRIBE: i8 = 8;
const CLUSTER_ACTION: i8 = 9;
const DENY: i8 = 2;
const ALLOW: i8 = 3;

/// One ACL as the protocol carries it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Acl {
    resource_type: i8,
    name: String,
    pattern: i8,
    principal: String,
    host: String,
    operation: i8,
    permission: i8,
}

/// ALLOW `operation` on a literal resource for `User:ANONYMOUS` from any host.
fn allow(resource_type: i8, name: &str, operation: i8) -> Acl {
    Acl {
        resource_type,
        name: name.to_string(),
        pattern: LITERAL,
        principal: ANONYMOUS.to_string(),
        host: "*".to_string(),
        operation,
        permission: ALLOW,
    }
}

fn creation(acl: &Acl) -> AclCreation {
    AclCreation::default()
        .with_resource_type(acl.resource_type)
        .with_resource_name(str_bytes(&acl.name))
        .with_resource_pattern_type(acl.pattern)
        .with_principal(str_bytes(&acl.principal))
        .with_host(str_bytes(&acl.host))
        .with_operation(acl.operation)
        .with_permission_type(acl.permission)
}

fn create_request(acls: &[Acl]) -> CreateAclsRequest {
    CreateAclsRequest::default().with_creations(acls.iter().map(creation).collect())
}

/// A filter on resource type, name and pattern type; every other field ANY.
fn delete_filter(resource_type: i8, name: Option<&str>, pattern: i8) -> DeleteAclsFilter {
    DeleteAclsFilter::default()
        .with_resource_type_filter(resource_type)
        .with_resource_name_filter(name.map(str_bytes))
        .with_pattern_type_filter(pattern)
        .with_principal_filter(None)
        .with_host_filter(None)
        .with_operation(ANY)
        .with_permission_type(ANY)
}

fn describe_request(resource_type: i8, name: Option<&str>, pattern: i8) -> DescribeAclsRequest {
    DescribeAclsRequest::default()
        .with_resource_type_filter(resource_type)
        .with_resource_name_filter(name.map(str_bytes))
        .with_pattern_type_filter(pattern)
        .with_principal_filter(None)
        .with_host_filter(None)
        .with_operation(ANY)
        .with_permission_type(ANY)
}

/// The ACLs of a DescribeAcls answer, sorted.
fn described(response: &DescribeAclsResponse) -> Result<Vec<Acl>> {
    ensure!(
        response.error_code == 0,
        "DescribeAcls answered {:?}: {:?}",
        ResponseError::try_from_code(response.error_code),
        response.error_message
    );
    let mut acls: Vec<Acl> = response
        .resources
        .iter()
        .flat_map(|r| {
            r.acls.iter().map(|a| Acl {
                resource_type: r.resource_type,
                name: r.resource_name.to_string(),
                pattern: r.pattern_type,
                principal: a.principal.to_string(),
                host: a.host.to_string(),
                operation: a.operation,
                permission: a.permission_type,
            })
        })
        .collect();
    acls.sort();
    Ok(acls)
}

fn sorted(acls: &[Acl]) -> Vec<Acl> {
    let mut acls = acls.to_vec();
    acls.sort();
    acls
}

fn code_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        Some(e) => format!("{e:?}"),
        None if code == 0 => "NONE".to_string(),
        None => format!("code {code}"),
    }
}

/// A broker over `data_dir` with these settings on top of the harness's.
fn start(data_dir: &Path, settings: &[(&str, &str)]) -> Result<BrokerProcess> {
    let options = settings.iter().fold(
        BrokerOptions::new(broker_bin()).data_dir(data_dir),
        |options, (key, value)| options.arg("--override").arg(format!("{key}={value}")),
    );
    BrokerProcess::start(options)
}

/// Creates ACLs and checks every one was created.
async fn create_acls(conn: &mut Connection, acls: &[Acl]) -> Result<()> {
    let response = call(conn, &create_request(acls), ACL_VERSION).await?;
    ensure!(
        response.results.len() == acls.len(),
        "{} results for {} ACLs",
        response.results.len(),
        acls.len()
    );
    for (acl, result) in acls.iter().zip(&response.results) {
        ensure!(
            result.error_code == 0,
            "creating {acl:?}: {} {:?}",
            code_name(result.error_code),
            result.error_message
        );
    }
    Ok(())
}

async fn describe_acls(conn: &mut Connection, request: &DescribeAclsRequest) -> Result<Vec<Acl>> {
    described(&call(conn, request, ACL_VERSION).await?)
}

/// Deletes what one filter matches and returns the ACLs deleted, sorted.
async fn delete_acls(conn: &mut Connection, filter: DeleteAclsFilter) -> Result<Vec<Acl>> {
    let response = call(
        conn,
        &DeleteAclsRequest::default().with_filters(vec![filter]),
        ACL_VERSION,
    )
    .await?;
    let result = response
        .filter_results
        .first()
        .context("no filter result")?;
    ensure!(
        result.error_code == 0,
        "DeleteAcls: {} {:?}",
        code_name(result.error_code),
        result.error_message
    );
    let mut acls: Vec<Acl> = result
        .matching_acls
        .iter()
        .map(|m| Acl {
            resource_type: m.resource_type,
            name: m.resource_name.to_string(),
            pattern: m.pattern_type,
            principal: m.principal.to_string(),
            host: m.host.to_string(),
            operation: m.operation,
            permission: m.permission_type,
        })
        .collect();
    acls.sort();
    Ok(acls)
}

/// What Metadata says of `topic`: listed among all topics, and its error code when named.
async fn visibility(conn: &mut Connection, topic: &str) -> Result<(bool, i16)> {
    let all = metadata(conn, None, false).await?;
    let listed = all
        .topics
        .iter()
        .any(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic));
    let named = metadata(conn, Some(&[topic]), false).await?;
    let code = named
        .topics
        .first()
        .map(|t| t.error_code)
        .context("no topic in a Metadata answer for one named topic")?;
    Ok((listed, code))
}

fn producer(bootstrap: &str) -> Result<FutureProducer> {
    harness::producer_config(bootstrap)
        .set("message.timeout.ms", "10000")
        .create()
        .context("creating a producer")
}

/// Produces one record and returns the error code librdkafka reports, if any.
async fn produce_one(
    bootstrap: &str,
    topic: &str,
    value: &str,
) -> Result<Option<RDKafkaErrorCode>> {
    let producer = producer(bootstrap)?;
    let record = FutureRecord::<(), _>::to(topic).payload(value);
    match producer.send(record, Timeout::After(IO_TIMEOUT)).await {
        Ok(_) => Ok(None),
        Err((KafkaError::MessageProduction(code), _)) => Ok(Some(code)),
        Err((e, _)) => bail!("producing to {topic}: {e}"),
    }
}

/// Consumes `expected` values of `topic` as a member of `group`, then commits the position.
fn consume_in_group(bootstrap: &str, topic: &str, group: &str, expected: &[&str]) -> Result<()> {
    let consumer: BaseConsumer = harness::consumer_config(bootstrap, group)
        .set("session.timeout.ms", "6000")
        .create()
        .context("creating a consumer")?;
    consumer.subscribe(&[topic])?;
    let mut seen = Vec::new();
    let mut next = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < expected.len() {
        ensure!(
            Instant::now() < deadline,
            "consumed {seen:?} of {expected:?} from {topic} in group {group}"
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                seen.push(
                    String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned(),
                );
                next = message.offset() + 1;
            }
            Some(Err(e)) => bail!("consuming {topic} in group {group}: {e}"),
            None => {}
        }
    }
    ensure!(seen == expected, "consumed {seen:?}, expected {expected:?}");
    let mut position = TopicPartitionList::new();
    position.add_partition_offset(topic, 0, Offset::Offset(next))?;
    consumer
        .commit(&position, CommitMode::Sync)
        .context("committing the group's offset")?;
    Ok(())
}

/// Polls a consumer (subscribed, or assigned to `partition`) until librdkafka reports an
/// error; returns its code. Reading a record instead is a failure.
fn consume_error(
    bootstrap: &str,
    topic: &str,
    group: &str,
    partition: Option<i32>,
) -> Result<RDKafkaErrorCode> {
    let consumer: BaseConsumer = harness::consumer_config(bootstrap, group).create()?;
    match partition {
        Some(partition) => {
            let mut assignment = TopicPartitionList::new();
            assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
            consumer.assign(&assignment)?;
        }
        None => consumer.subscribe(&[topic])?,
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => bail!(
                "read {:?} from {topic} at offset {}",
                message.payload(),
                message.offset()
            ),
            Some(Err(e)) => {
                return e
                    .rdkafka_error_code()
                    .with_context(|| format!("error without a code: {e}"))
            }
            None => {}
        }
    }
    bail!("no error and no record from {topic} within 30 s")
}

#[tokio::test]
async fn deny_by_default_refuses_everything_but_the_handshake() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = start(dir.path(), &[AUTHORIZER])?;
    let outcome = async {
        let mut conn = connect(&broker).await?;
        let created = call(
            &mut conn,
            &CreateTopicsRequest::default().with_topics(vec![
                kafka_protocol::messages::create_topics_request::CreatableTopic::default()
                    .with_name(TopicName(str_bytes("nope")))
                    .with_num_partitions(1)
                    .with_replication_factor(1),
            ]),
            7,
        )
        .await?;
        let code = created.topics.first().map(|t| t.error_code);
        ensure!(
            code == Some(ResponseError::TopicAuthorizationFailed.code()),
            "CreateTopics without CREATE answered {code:?}"
        );
        let acl = call(
            &mut conn,
            &create_request(&[allow(CLUSTER, "kafka-cluster", ALL)]),
            ACL_VERSION,
        )
        .await?;
        let code = acl.results.first().map(|r| r.error_code);
        ensure!(
            code == Some(ResponseError::ClusterAuthorizationFailed.code()),
            "CreateAcls without ALTER on the cluster answered {code:?}"
        );
        let listed = call(&mut conn, &describe_request(ANY, None, ANY), ACL_VERSION).await?;
        ensure!(
            listed.error_code == ResponseError::ClusterAuthorizationFailed.code(),
            "DescribeAcls without DESCRIBE on the cluster answered {}",
            code_name(listed.error_code)
        );
        // As in Kafka, anyone may describe the cluster; the operations it may perform on it
        // are none.
        let cluster = call(
            &mut conn,
            &DescribeClusterRequest::default().with_include_cluster_authorized_operations(true),
            0,
        )
        .await?;
        ensure!(
            cluster.error_code == 0
                && cluster.brokers.len() == 1
                && cluster.cluster_authorized_operations == 0,
            "DescribeCluster answered {}, {} brokers, operations {}",
            code_name(cluster.error_code),
            cluster.brokers.len(),
            cluster.cluster_authorized_operations
        );
        // The producer's Metadata request is refused before any topic is created for it.
        let code = produce_one(&broker.bootstrap(), "auto", "x").await?;
        ensure!(
            code == Some(RDKafkaErrorCode::TopicAuthorizationFailed),
            "producing to a topic nobody may create: {code:?}"
        );
        Ok(())
    }
    .await;
    broker.explain(outcome)
}

#[tokio::test]
async fn an_acl_allows_a_denied_topic_until_it_is_deleted_and_acls_survive_restarts() -> Result<()>
{
    let dir = tempfile::tempdir()?;
    let topic = "guarded";
    let admin_acls = [
        allow(CLUSTER, "kafka-cluster", ALTER),
        allow(CLUSTER, "kafka-cluster", DESCRIBE),
    ];
    // Bootstrap as a super user: the topic, and the right to manage ACLs.
    {
        let broker = start(dir.path(), &[AUTHORIZER, ("super.users", ANONYMOUS)])?;
        let outcome = async {
            harness::create_topic(&broker.bootstrap(), topic, 1).await?;
            let mut conn = connect(&broker).await?;
            create_acls(&mut conn, &admin_acls).await
        }
        .await;
        broker.explain(outcome)?;
    }
    // From here on nobody is a super user.
    let mut broker = start(dir.path(), &[AUTHORIZER])?;
    let outcome = async {
        let bootstrap = broker.bootstrap();
        let mut conn = connect(&broker).await?;
        let listed = describe_acls(&mut conn, &describe_request(ANY, None, ANY)).await?;
        ensure!(
            listed == sorted(&admin_acls),
            "after a restart the ACLs are {listed:?}"
        );

        // Metadata creates a missing topic only for a principal with CREATE on it.
        let auto = "made-on-demand";
        create_acls(&mut conn, &[allow(TOPIC, auto, DESCRIBE)]).await?;
        let ask = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(TopicName(str_bytes(auto))))
            ]))
            .with_allow_auto_topic_creation(true);
        let code = call(&mut conn, &ask, 12)
            .await?
            .topics
            .first()
            .map(|t| t.error_code);
        ensure!(
            code == Some(ResponseError::TopicAuthorizationFailed.code()),
            "auto-creation without CREATE answered {code:?}"
        );
        create_acls(&mut conn, &[allow(TOPIC, auto, CREATE)]).await?;
        let code = call(&mut conn, &ask, 12)
            .await?
            .topics
            .first()
            .map(|t| t.error_code);
        ensure!(
            code == Some(0),
            "auto-creation with CREATE answered {code:?}"
        );

        // No ACL on the topic: hidden from Metadata and refused to producers.
        let (listed, code) = visibility(&mut conn, topic).await?;
        ensure!(
            !listed,
            "{topic} is listed to a client that may not describe it"
        );
        ensure!(
            code == ResponseError::TopicAuthorizationFailed.code(),
            "Metadata for {topic} answered {}",
            code_name(code)
        );
        let code = produce_one(&bootstrap, topic, "refused").await?;
        ensure!(
            code == Some(RDKafkaErrorCode::TopicAuthorizationFailed),
            "producing without any ACL: {code:?}"
        );

        // DESCRIBE alone shows the topic but the Produce request itself is refused.
        create_acls(&mut conn, &[allow(TOPIC, topic, DESCRIBE)]).await?;
        let (listed, code) = visibility(&mut conn, topic).await?;
        ensure!(
            listed && code == 0,
            "with DESCRIBE, {topic}: listed {listed}, {}",
            code_name(code)
        );
        let code = produce_one(&bootstrap, topic, "refused").await?;
        ensure!(
            code == Some(RDKafkaErrorCode::TopicAuthorizationFailed),
            "producing with DESCRIBE only: {code:?}"
        );

        // WRITE and READ on the topic, READ on the group: produce and consume work.
        let grants = [
            allow(TOPIC, topic, WRITE),
            allow(TOPIC, topic, READ),
            allow(GROUP, "readers", READ),
        ];
        create_acls(&mut conn, &grants).await?;
        for value in ["one", "two"] {
            let code = produce_one(&bootstrap, topic, value).await?;
            ensure!(code.is_none(), "producing {value} with WRITE: {code:?}");
        }
        consume_in_group(&bootstrap, topic, "readers", &["one", "two"])?;
        // Another group has no ACL.
        let refused = consume_error(&bootstrap, topic, "strangers", None)?;
        ensure!(
            refused == RDKafkaErrorCode::GroupAuthorizationFailed,
            "a group without ACLs got {refused:?}"
        );

        // The grants survive a restart.
        broker.restart()?;
        let bootstrap = broker.bootstrap();
        let mut conn = connect(&broker).await?;
        let code = produce_one(&bootstrap, topic, "three").await?;
        ensure!(code.is_none(), "producing after a restart: {code:?}");
        let on_topic =
            describe_acls(&mut conn, &describe_request(TOPIC, Some(topic), LITERAL)).await?;
        let mut expected = grants[..2].to_vec();
        expected.push(allow(TOPIC, topic, DESCRIBE));
        ensure!(
            on_topic == sorted(&expected),
            "ACLs on {topic} after a restart: {on_topic:?}"
        );

        // DeleteAcls takes it all away again.
        let deleted = delete_acls(&mut conn, delete_filter(TOPIC, Some(topic), LITERAL)).await?;
        ensure!(deleted == sorted(&expected), "deleted {deleted:?}");
        let code = produce_one(&bootstrap, topic, "refused again").await?;
        ensure!(
            code == Some(RDKafkaErrorCode::TopicAuthorizationFailed),
            "producing after DeleteAcls: {code:?}"
        );
        let (listed, code) = visibility(&mut conn, topic).await?;
        ensure!(
            !listed && code == ResponseError::TopicAuthorizationFailed.code(),
            "after DeleteAcls {topic} is listed {listed}, named {}",
            code_name(code)
        );
        Ok(())
    }
    .await;
    broker.explain(outcome)
}

/// The bit field of KIP-430 authorized operations for these operation codes.
fn operations(codes: &[i8]) -> i32 {
    codes.iter().fold(0, |bits, code| bits | 1 << code)
}

/// KIP-430: Metadata, DescribeCluster and DescribeGroups say which operations the principal
/// may perform on each topic, the cluster and each group when asked (implied operations
/// included: READ or WRITE grants DESCRIBE), and carry Kafka's "not asked" marker otherwise.
#[tokio::test]
async fn authorized_operations_are_reported_when_asked() -> Result<()> {
    use kafka_protocol::messages::{DescribeGroupsRequest, FindCoordinatorRequest};
    const OMITTED: i32 = i32::MIN;
    const DELETE: i8 = 6;
    const DESCRIBE_CONFIGS: i8 = 10;
    const ALTER_CONFIGS: i8 = 11;
    let dir = tempfile::tempdir()?;
    let topic = "ops";
    // Bootstrap as a super user: the topic and the ACLs; a super user may do everything.
    {
        let broker = start(dir.path(), &[AUTHORIZER, ("super.users", ANONYMOUS)])?;
        let outcome = async {
            harness::create_topic(&broker.bootstrap(), topic, 1).await?;
            let mut conn = connect(&broker).await?;
            create_acls(
                &mut conn,
                &[
                    allow(TOPIC, topic, READ),
                    allow(TOPIC, topic, WRITE),
                    allow(CLUSTER, "kafka-cluster", ALTER),
                    allow(GROUP, "readers", READ),
                ],
            )
            .await?;
            let ask = MetadataRequest::default()
                .with_topics(Some(vec![
                    MetadataRequestTopic::default().with_name(Some(topic_name(topic)))
                ]))
                .with_include_topic_authorized_operations(true);
            let answer = call(&mut conn, &ask, 10).await?;
            let described = answer.topics.first().context("no topic")?;
            let everything = operations(&[
                READ,
                WRITE,
                CREATE,
                DESCRIBE,
                DELETE,
                ALTER,
                DESCRIBE_CONFIGS,
                ALTER_CONFIGS,
            ]);
            ensure!(
                described.topic_authorized_operations == everything,
                "a super user may do everything to a topic: {described:?}"
            );
            Ok(())
        }
        .await;
        broker.explain(outcome)?;
    }
    let broker = start(dir.path(), &[AUTHORIZER])?;
    let outcome = async {
        let mut conn = connect(&broker).await?;
        let ask = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(topic_name(topic)))
            ]))
            .with_include_topic_authorized_operations(true)
            .with_include_cluster_authorized_operations(true);
        let answer = call(&mut conn, &ask, 10).await?;
        let described = answer.topics.first().context("no topic")?;
        ensure!(
            described.error_code == 0
                && described.topic_authorized_operations == operations(&[READ, WRITE, DESCRIBE]),
            "topic: {described:?}"
        );
        ensure!(
            answer.cluster_authorized_operations == operations(&[ALTER, DESCRIBE]),
            "cluster: {}",
            answer.cluster_authorized_operations
        );
        let plain = call(
            &mut conn,
            &ask.clone()
                .with_include_topic_authorized_operations(false)
                .with_include_cluster_authorized_operations(false),
            10,
        )
        .await?;
        ensure!(
            plain.cluster_authorized_operations == OMITTED
                && plain.topics.first().map(|t| t.topic_authorized_operations) == Some(OMITTED),
            "not asked, yet answered: {plain:?}"
        );

        let cluster = call(
            &mut conn,
            &DescribeClusterRequest::default().with_include_cluster_authorized_operations(true),
            0,
        )
        .await?;
        ensure!(
            cluster.error_code == 0
                && cluster.cluster_authorized_operations == operations(&[ALTER, DESCRIBE]),
            "DescribeCluster: {cluster:?}"
        );

        // The group coordinator (and __consumer_offsets) comes up on the first FindCoordinator.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let found = call(
                &mut conn,
                &FindCoordinatorRequest::default().with_key(str_bytes("readers")),
                3,
            )
            .await?;
            if found.error_code == 0 {
                break;
            }
            ensure!(Instant::now() < deadline, "no coordinator: {found:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let groups = call(
            &mut conn,
            &DescribeGroupsRequest::default()
                .with_groups(vec![kafka_protocol::messages::GroupId(str_bytes(
                    "readers",
                ))])
                .with_include_authorized_operations(true),
            5,
        )
        .await?;
        let group = groups.groups.first().context("no group")?;
        ensure!(
            group.error_code == 0 && group.authorized_operations == operations(&[READ, DESCRIBE]),
            "DescribeGroups: {group:?}"
        );
        Ok(())
    }
    .await;
    broker.explain(outcome)
}

#[tokio::test]
async fn the_acl_apis_answer_every_version_with_kafkas_filters() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = start(dir.path(), &[AUTHORIZER, ("super.users", ANONYMOUS)])?;
    let outcome = async {
        let mut conn = connect(&broker).await?;
        for version in 1..=3i16 {
            let name = format!("orders-v{version}");
            let prefix = format!("orders-v{version}-");
            let literal = Acl {
                principal: "User:alice".to_string(),
                host: "127.0.0.1".to_string(),
                ..allow(TOPIC, &name, READ)
            };
            let prefixed = Acl {
                pattern: PREFIXED,
                permission: DENY,
                principal: "User:bob".to_string(),
                ..allow(TOPIC, &prefix, WRITE)
            };
            let wildcard = Acl {
                principal: "User:*".to_string(),
                ..allow(GROUP, "*", DESCRIBE)
            };
            let invalid = [
                Acl {
                    pattern: MATCH,
                    ..literal.clone()
                },
                Acl {
                    principal: "alice".to_string(),
                    ..literal.clone()
                },
                Acl {
                    host: "not-an-ip".to_string(),
                    ..literal.clone()
                },
                Acl {
                    operation: ANY,
                    ..literal.clone()
                },
                allow(CLUSTER, "not-the-cluster", ALTER),
            ];
            let mut all = vec![literal.clone(), prefixed.clone(), wildcard.clone()];
            all.extend(invalid.iter().cloned());
            let response = call(&mut conn, &create_request(&all), version).await?;
            let codes: Vec<i16> = response.results.iter().map(|r| r.error_code).collect();
            let mut expected = vec![0, 0, 0];
            expected.extend(invalid.iter().map(|_| ResponseError::InvalidRequest.code()));
            ensure!(
                codes == expected,
                "v{version}: CreateAcls answered {codes:?}"
            );

            let mine = |acls: Vec<Acl>| -> Vec<Acl> {
                acls.into_iter()
                    .filter(|a| a.name.starts_with(&name) || a.resource_type == GROUP)
                    .collect()
            };
            let listed = mine(described(
                &call(&mut conn, &describe_request(ANY, None, ANY), version).await?,
            )?);
            ensure!(
                listed == sorted(&[literal.clone(), prefixed.clone(), wildcard.clone()]),
                "v{version}: ANY lists {listed:?}"
            );
            // MATCH on a name under the prefix: its literal ACL does not apply, the prefix does.
            let child = format!("{prefix}eu");
            let matched = described(
                &call(
                    &mut conn,
                    &describe_request(TOPIC, Some(&child), MATCH),
                    version,
                )
                .await?,
            )?;
            ensure!(
                matched == vec![prefixed.clone()],
                "v{version}: MATCH {child}: {matched:?}"
            );
            let matched = described(
                &call(
                    &mut conn,
                    &describe_request(GROUP, Some("any-group"), MATCH),
                    version,
                )
                .await?,
            )?;
            ensure!(
                matched == vec![wildcard.clone()],
                "v{version}: MATCH group: {matched:?}"
            );
            let exact = described(
                &call(
                    &mut conn,
                    &describe_request(TOPIC, Some(&name), LITERAL),
                    version,
                )
                .await?,
            )?;
            ensure!(
                exact == vec![literal.clone()],
                "v{version}: LITERAL {name}: {exact:?}"
            );
            let bad = call(&mut conn, &describe_request(TOPIC, None, 0), version).await?;
            ensure!(
                bad.error_code == ResponseError::InvalidRequest.code(),
                "v{version}: an UNKNOWN pattern filter answered {}",
                code_name(bad.error_code)
            );

            let response = call(
                &mut conn,
                &DeleteAclsRequest::default().with_filters(vec![
                    delete_filter(TOPIC, Some(&prefix), PREFIXED),
                    delete_filter(ANY, None, ANY)
                        .with_principal_filter(Some(str_bytes("User:alice"))),
                    delete_filter(GROUP, Some("*"), LITERAL),
                    delete_filter(TOPIC, Some(&name), 0),
                ]),
                version,
            )
            .await?;
            let summary: Vec<(i16, usize)> = response
                .filter_results
                .iter()
                .map(|r| (r.error_code, r.matching_acls.len()))
                .collect();
            ensure!(
                summary
                    == vec![
                        (0, 1),
                        (0, 1),
                        (0, 1),
                        (ResponseError::InvalidRequest.code(), 0)
                    ],
                "v{version}: DeleteAcls answered {summary:?}"
            );
            let left = mine(described(
                &call(&mut conn, &describe_request(ANY, None, ANY), version).await?,
            )?);
            ensure!(
                left.is_empty(),
                "v{version}: left after DeleteAcls: {left:?}"
            );
        }
        Ok(())
    }
    .await;
    broker.explain(outcome)
}

/// One cluster test at a time: three debug brokers side by side with another cluster would
/// turn timing into noise.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
fn a_cluster_with_the_authorizer_on_replicates_and_enforces_acls_on_every_broker() -> Result<()> {
    let _serial = serial();
    // No super user: until the first ACL, allow.everyone.if.no.acl.found lets the cluster
    // form; then the brokers' own CLUSTER_ACTION comes from an ACL like anyone else's.
    let options = ClusterOptions::new(broker_bin())
        .set(AUTHORIZER.0, AUTHORIZER.1)
        .set("allow.everyone.if.no.acl.found", "true")
        .set("broker.session.timeout.ms", "3000")
        .set("broker.heartbeat.interval.ms", "500");
    let mut cluster = Cluster::start(options)?;
    let outcome = (|| -> Result<()> {
        let topic = "secret";
        let cluster_acls = [
            allow(CLUSTER, "kafka-cluster", CLUSTER_ACTION),
            allow(CLUSTER, "kafka-cluster", CREATE),
            allow(CLUSTER, "kafka-cluster", ALTER),
            allow(CLUSTER, "kafka-cluster", DESCRIBE),
        ];
        let created = cluster.request(1, &create_request(&cluster_acls), ACL_VERSION)?;
        ensure!(
            created.results.iter().all(|r| r.error_code == 0),
            "CreateAcls on broker 1: {created:?}"
        );
        // Every write needs all three replicas: followers fetch under the authorizer.
        cluster.create_topic(topic, 3, 3, &[("min.insync.replicas", "3")])?;
        // Writers may write (and so describe) but not read.
        let topic_acls = [allow(TOPIC, topic, WRITE)];
        let created = cluster.request(2, &create_request(&topic_acls), ACL_VERSION)?;
        ensure!(
            created.results.iter().all(|r| r.error_code == 0),
            "CreateAcls on broker 2: {created:?}"
        );
        let mut expected = cluster_acls.to_vec();
        expected.extend(topic_acls.iter().cloned());
        let expected = sorted(&expected);
        cluster.wait_until("every broker lists the ACLs", IO_TIMEOUT, |cluster| {
            for node in cluster.node_ids() {
                let listed =
                    described(&cluster.request(node, &describe_request(ANY, None, ANY), 3)?)?;
                ensure!(listed == expected, "broker {node} lists {listed:?}");
            }
            Ok(())
        })?;

        let leaders: std::collections::BTreeSet<i32> = cluster
            .partitions(topic)?
            .iter()
            .map(|p| p.leader)
            .collect();
        ensure!(
            leaders.len() == 3,
            "leaders {leaders:?}: each broker should lead one partition"
        );
        let producer: FutureProducer = cluster
            .client_config()
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "30000")
            .create()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        for partition in 0..3 {
            let value = format!("p{partition}");
            let record = FutureRecord::<(), _>::to(topic)
                .payload(&value)
                .partition(partition);
            runtime
                .block_on(producer.send(record, Timeout::After(Duration::from_secs(30))))
                .map_err(|(e, _)| anyhow::anyhow!("acks=all write to {topic}-{partition}: {e}"))?;
        }
        cluster.wait_for_full_isr(topic, Duration::from_secs(30))?;

        // A broker that restarts heartbeats and catches up again.
        cluster.restart(3)?;
        cluster.wait_for_full_isr(topic, Duration::from_secs(60))?;

        // No READ: every leader refuses the consumer.
        let bootstrap = cluster.bootstrap();
        for partition in 0..3 {
            let refused = consume_error(&bootstrap, topic, "no-read", Some(partition))?;
            ensure!(
                refused == RDKafkaErrorCode::TopicAuthorizationFailed,
                "reading {topic}-{partition}: {refused:?}"
            );
        }
        Ok(())
    })();
    cluster.explain(outcome)
}
