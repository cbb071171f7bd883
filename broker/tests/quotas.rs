//! Client quotas through the real broker: AlterClientQuotas validates and stores them as
//! Kafka's controller does, DescribeClientQuotas matches filters strictly or not, quotas
//! survive a restart and reach every broker of a cluster, and a client over its byte rate gets
//! `throttle_time_ms` in its response and a connection that stays silent that long, with the
//! most specific quota governing it, a client over its `controller_mutation_rate` has topics
//! refused or its responses throttled, connections from an address over its
//! `connection_creation_rate` are held and closed; without DESCRIBE_CONFIGS / ALTER_CONFIGS on
//! the cluster both APIs are refused.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, ApiVersionsRequest,
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, DescribeClientQuotasRequest,
    DescribeClientQuotasResponse, IncrementalAlterConfigsRequest,
};
use kafka_protocol::ResponseError;
use oxbow_broker::client::Connection;
use oxbow_e2e::cluster::{Cluster, ClusterOptions};

mod support;
use support::{
    call, connect, connect_to, create_topic_ok, expect_code, expect_ok, fetch_request,
    produce_request, start_without_auto_create, str_bytes, BatchBuilder,
};

const ALTER_V: i16 = 1;
const DESCRIBE_V: i16 = 1;
const PRODUCE_V: i16 = 9;
const FETCH_V: i16 = 12;

/// An entity from `(type, name)` pairs, `None` for the default.
fn entity(parts: &[(&str, Option<&str>)]) -> Vec<EntityData> {
    parts
        .iter()
        .map(|(t, n)| {
            EntityData::default()
                .with_entity_type(str_bytes(t))
                .with_entity_name(n.map(str_bytes))
        })
        .collect()
}

fn set(key: &str, value: f64) -> OpData {
    OpData::default().with_key(str_bytes(key)).with_value(value)
}

fn remove(key: &str) -> OpData {
    OpData::default().with_key(str_bytes(key)).with_remove(true)
}

async fn alter(
    conn: &mut Connection,
    entries: Vec<EntryData>,
    validate_only: bool,
) -> Result<AlterClientQuotasResponse> {
    call(
        conn,
        &AlterClientQuotasRequest::default()
            .with_entries(entries)
            .with_validate_only(validate_only),
        ALTER_V,
    )
    .await
}

async fn alter_one(
    conn: &mut Connection,
    parts: &[(&str, Option<&str>)],
    ops: Vec<OpData>,
) -> Result<(i16, String)> {
    let response = alter(
        conn,
        vec![EntryData::default()
            .with_entity(entity(parts))
            .with_ops(ops)],
        false,
    )
    .await?;
    let entry = response.entries.first().context("one result")?;
    Ok((
        entry.error_code,
        entry
            .error_message
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default(),
    ))
}

/// A filter component: `Some(name)` exact, `Some(None)`... as `(type, match_type, name)`.
fn component(entity_type: &str, match_type: i8, name: Option<&str>) -> ComponentData {
    ComponentData::default()
        .with_entity_type(str_bytes(entity_type))
        .with_match_type(match_type)
        .with_match(name.map(str_bytes))
}

async fn describe(
    conn: &mut Connection,
    components: Vec<ComponentData>,
    strict: bool,
) -> Result<DescribeClientQuotasResponse> {
    call(
        conn,
        &DescribeClientQuotasRequest::default()
            .with_components(components)
            .with_strict(strict),
        DESCRIBE_V,
    )
    .await
}

/// The described entries as sorted `type=name,...: key=value,...` lines.
fn lines(response: &DescribeClientQuotasResponse) -> Result<Vec<String>> {
    expect_ok("DescribeClientQuotas", response.error_code)?;
    let mut lines: Vec<String> = response
        .entries
        .as_ref()
        .context("entries")?
        .iter()
        .map(|e| {
            let entity: Vec<String> = e
                .entity
                .iter()
                .map(|p| {
                    format!(
                        "{}={}",
                        p.entity_type,
                        p.entity_name.as_ref().map_or("<default>", |n| n.as_str())
                    )
                })
                .collect();
            let mut values: Vec<String> = e
                .values
                .iter()
                .map(|v| format!("{}={}", v.key, v.value))
                .collect();
            values.sort();
            format!("{}: {}", entity.join(","), values.join(","))
        })
        .collect();
    lines.sort();
    Ok(lines)
}

#[tokio::test]
async fn quotas_are_validated_stored_described_with_filters_and_survive_a_restart() -> Result<()> {
    let mut broker = start_without_auto_create(&[])?;
    let outcome = async {
        let mut conn = connect(&broker).await?;
        let user = [("user", Some("alice"))];
        let user_client = [("user", Some("alice")), ("client-id", Some("app"))];
        let default_user = [("user", None)];
        let client = [("client-id", Some("app"))];
        let ip = [("ip", Some("10.1.2.3"))];
        for (parts, ops) in [
            (
                &user[..],
                vec![
                    set("producer_byte_rate", 1024.0),
                    set("consumer_byte_rate", 2048.0),
                ],
            ),
            (&user_client[..], vec![set("request_percentage", 12.5)]),
            (&default_user[..], vec![set("producer_byte_rate", 100.0)]),
            (&client[..], vec![set("controller_mutation_rate", 5.0)]),
            (&ip[..], vec![set("connection_creation_rate", 10.0)]),
        ] {
            let (code, message) = alter_one(&mut conn, parts, ops).await?;
            expect_ok(&format!("altering {parts:?}: {message}"), code)?;
        }

        // Kafka's checks, each refusing the whole entity with INVALID_REQUEST.
        for (parts, ops, message) in [
            (
                &user[..],
                vec![set("no_such_quota", 1.0)],
                "Invalid configuration key no_such_quota",
            ),
            (
                &user[..],
                vec![set("connection_creation_rate", 1.0)],
                "Invalid configuration key connection_creation_rate",
            ),
            (
                &ip[..],
                vec![set("producer_byte_rate", 1.0)],
                "Invalid configuration key producer_byte_rate",
            ),
            (
                &user[..],
                vec![set("producer_byte_rate", 1.5)],
                "producer_byte_rate cannot be a fractional value.",
            ),
            (
                &user[..],
                vec![set("producer_byte_rate", 0.0)],
                "Quota producer_byte_rate must be greater than 0",
            ),
            (
                &[("user", Some(""))][..],
                vec![set("producer_byte_rate", 1.0)],
                "Empty user not supported",
            ),
            (
                &[("group", Some("g"))][..],
                vec![set("producer_byte_rate", 1.0)],
                "Unhandled client quota entity type: group",
            ),
            (
                &[("ip", None), ("user", Some("alice"))][..],
                vec![set("connection_creation_rate", 1.0)],
                "IP entity should",
            ),
            (
                &[][..],
                vec![set("producer_byte_rate", 1.0)],
                "Invalid empty client quota entity",
            ),
        ] {
            let (code, got) = alter_one(&mut conn, parts, ops).await?;
            expect_code(
                &format!("altering {parts:?}"),
                code,
                ResponseError::InvalidRequest,
            )?;
            ensure!(
                got.contains(message),
                "{parts:?}: {got:?} lacks {message:?}"
            );
        }

        // validate_only checks and changes nothing.
        let checked = alter(
            &mut conn,
            vec![EntryData::default()
                .with_entity(entity(&[("client-id", None)]))
                .with_ops(vec![set("consumer_byte_rate", 4096.0)])],
            true,
        )
        .await?;
        expect_ok("validate_only", checked.entries[0].error_code)?;

        let everything = vec![
            "client-id=app: controller_mutation_rate=5",
            "ip=10.1.2.3: connection_creation_rate=10",
            "user=<default>: producer_byte_rate=100",
            "user=alice,client-id=app: request_percentage=12.5",
            "user=alice: consumer_byte_rate=2048,producer_byte_rate=1024",
        ];
        ensure!(lines(&describe(&mut conn, vec![], false).await?)? == everything);

        // Not strict: every entity with user alice; strict: the user alone.
        let alice = vec![component("user", 0, Some("alice"))];
        ensure!(
            lines(&describe(&mut conn, alice.clone(), false).await?)?
                == vec![everything[3], everything[4]]
        );
        ensure!(lines(&describe(&mut conn, alice, true).await?)? == vec![everything[4]]);
        // The default user, exactly; any named or default user with any client id.
        ensure!(
            lines(&describe(&mut conn, vec![component("user", 1, None)], true).await?)?
                == vec![everything[2]]
        );
        let with_client = vec![component("user", 2, None), component("client-id", 2, None)];
        ensure!(lines(&describe(&mut conn, with_client, true).await?)? == vec![everything[3]]);

        // Filters Kafka refuses.
        let refused = describe(&mut conn, vec![component("user", 0, None)], false).await?;
        expect_code(
            "exact without a name",
            refused.error_code,
            ResponseError::InvalidRequest,
        )?;
        let refused = describe(
            &mut conn,
            vec![component("ip", 2, None), component("user", 2, None)],
            false,
        )
        .await?;
        expect_code(
            "ip with user",
            refused.error_code,
            ResponseError::InvalidRequest,
        )?;
        let refused = describe(&mut conn, vec![component("group", 2, None)], false).await?;
        expect_code(
            "unknown type",
            refused.error_code,
            ResponseError::UnsupportedVersion,
        )?;

        // Removing a key; an entity left without keys is gone.
        let (code, _) =
            alter_one(&mut conn, &default_user, vec![remove("producer_byte_rate")]).await?;
        expect_ok("removing", code)?;
        let (code, _) =
            alter_one(&mut conn, &default_user, vec![remove("producer_byte_rate")]).await?;
        expect_ok("removing what is not there", code)?;
        let expected: Vec<&str> = everything
            .iter()
            .copied()
            .filter(|l| !l.starts_with("user=<default>"))
            .collect();
        ensure!(lines(&describe(&mut conn, vec![], false).await?)? == expected);

        drop(conn);
        broker.restart()?;
        let mut conn = connect(&broker).await?;
        let after = lines(&describe(&mut conn, vec![], false).await?)?;
        ensure!(after == expected, "after a restart: {after:?}");
        Ok(())
    }
    .await;
    broker.explain(outcome)
}

#[test]
fn a_quota_altered_through_one_broker_is_described_by_every_broker() -> Result<()> {
    let binary = env!("CARGO_BIN_EXE_oxbow-broker");
    let mut cluster = Cluster::start(ClusterOptions::new(binary).brokers(2).voters(1))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(async {
        let first = cluster.node_ids()[0];
        let mut conn = connect_to(&cluster.address(first).to_string()).await?;
        let (code, message) = alter_one(
            &mut conn,
            &[("client-id", None)],
            vec![set("producer_byte_rate", 5000.0)],
        )
        .await?;
        expect_ok(&format!("altering: {message}"), code)?;
        for node in cluster.node_ids() {
            let mut conn = connect_to(&cluster.address(node).to_string()).await?;
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let seen = lines(&describe(&mut conn, vec![], false).await?)?;
                if seen == vec!["client-id=<default>: producer_byte_rate=5000"] {
                    break;
                }
                ensure!(
                    Instant::now() < deadline,
                    "broker {node} describes {seen:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    });
    cluster.explain(outcome)
}

/// Produces `batch` over `conn` until `elapsed` passes, as a client that waits out its
/// throttle would: returns the bytes acknowledged and the largest throttle time seen.
async fn produce_for(
    conn: &mut Connection,
    topic: &str,
    batch: &bytes::Bytes,
    elapsed: Duration,
) -> Result<(usize, i32)> {
    let started = Instant::now();
    let mut bytes = 0;
    let mut most = 0;
    while started.elapsed() < elapsed {
        let response = call(
            conn,
            &produce_request(topic, 0, batch.clone(), 1),
            PRODUCE_V,
        )
        .await?;
        let partition = &response.responses[0].partition_responses[0];
        expect_ok("produce", partition.error_code)?;
        bytes += batch.len();
        most = most.max(response.throttle_time_ms);
    }
    Ok((bytes, most))
}

#[tokio::test]
async fn a_producer_over_its_byte_rate_is_throttled_and_muted_and_the_most_specific_quota_governs(
) -> Result<()> {
    // Short windows keep the test short: the rate is measured over at least 2 s.
    let broker = start_without_auto_create(&[
        "--override",
        "quota.window.num=3",
        "--override",
        "quota.window.size.seconds=1",
    ])?;
    let outcome = async {
        let mut admin = connect(&broker).await?;
        create_topic_ok(&mut admin, "metered", 1, &[]).await?;
        const RATE: f64 = 100_000.0;
        // Every client id is limited, the client `fast` of the anonymous user much less.
        let (code, _) = alter_one(
            &mut admin,
            &[("client-id", None)],
            vec![
                set("producer_byte_rate", RATE),
                set("consumer_byte_rate", RATE),
            ],
        )
        .await?;
        expect_ok("default client quota", code)?;
        let (code, _) = alter_one(
            &mut admin,
            &[("user", Some("ANONYMOUS")), ("client-id", Some("fast"))],
            vec![set("producer_byte_rate", 1e9)],
        )
        .await?;
        expect_ok("the fast client's quota", code)?;

        let value = vec![b'x'; 20_000];
        let batch = BatchBuilder::default().values(&[&value, &value])?;
        let mut slow = connect(&broker).await?.with_client_id("slow");
        let run = Duration::from_secs(6);
        let started = Instant::now();
        let (bytes, most) = produce_for(&mut slow, "metered", &batch, run).await?;
        let elapsed = started.elapsed().as_secs_f64();
        ensure!(most > 0, "the slow client was never throttled");
        // Kafka's tolerance: the rate over the measured span, which starts at 2 s, stays at
        // the quota; one request beyond it may be in flight.
        let allowed = RATE * (elapsed + 2.0) + batch.len() as f64 * 2.0;
        ensure!(
            (bytes as f64) <= allowed,
            "{bytes} bytes in {elapsed:.1} s exceeds {allowed:.0} at {RATE} B/s"
        );
        ensure!(
            bytes as f64 >= RATE * elapsed * 0.5,
            "{bytes} bytes in {elapsed:.1} s is far below the quota"
        );

        // Muted: after a throttled response, the next request waits out the throttle time.
        let response = call(
            &mut slow,
            &produce_request("metered", 0, batch.clone(), 1),
            PRODUCE_V,
        )
        .await?;
        let throttle = response.throttle_time_ms;
        ensure!(throttle > 100, "still over the quota: {throttle} ms");
        let asked = Instant::now();
        call(&mut slow, &ApiVersionsRequest::default(), 3).await?;
        let waited = asked.elapsed();
        ensure!(
            waited >= Duration::from_millis(u64::try_from(throttle)? * 9 / 10),
            "answered after {waited:?} while muted for {throttle} ms"
        );

        let mut fast = connect(&broker).await?.with_client_id("fast");
        let (bytes, most) =
            produce_for(&mut fast, "metered", &batch, Duration::from_secs(2)).await?;
        ensure!(most == 0, "the fast client was throttled for {most} ms");
        ensure!(
            bytes as f64 > RATE * 4.0,
            "the fast client sent only {bytes} bytes"
        );

        // A consumer over its byte rate gets a throttled, empty response.
        let mut consumer = connect(&broker).await?.with_client_id("reader");
        let mut throttled = false;
        for _ in 0..20 {
            let fetched = call(
                &mut consumer,
                &fetch_request("metered", 0, 0, 0, 1),
                FETCH_V,
            )
            .await?;
            if fetched.throttle_time_ms > 0 {
                ensure!(
                    fetched.responses.is_empty(),
                    "a throttled fetch carries records"
                );
                throttled = true;
                break;
            }
        }
        ensure!(throttled, "the consumer was never throttled");
        let metrics = broker.scrape_metrics()?;
        ensure!(
            metrics.contains("oxbow_quota_throttle_time_seconds_count{quota=\"produce\"}"),
            "no produce throttle in the metrics"
        );
        Ok(())
    }
    .await;
    broker.explain(outcome)
}

#[tokio::test]
async fn without_describe_configs_or_alter_configs_on_the_cluster_quotas_are_refused() -> Result<()>
{
    // The authorizer on, no ACLs and no super users: the anonymous client may do nothing.
    let broker = start_without_auto_create(&[
        "--override",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    ])?;
    let outcome = async {
        let mut conn = connect(&broker).await?;
        let described = describe(&mut conn, vec![], false).await?;
        expect_code(
            "DescribeClientQuotas",
            described.error_code,
            ResponseError::ClusterAuthorizationFailed,
        )?;
        let (code, _) = alter_one(
            &mut conn,
            &[("user", Some("alice"))],
            vec![set("producer_byte_rate", 1024.0)],
        )
        .await?;
        expect_code(
            "AlterClientQuotas",
            code,
            ResponseError::ClusterAuthorizationFailed,
        )
    }
    .await;
    broker.explain(outcome)
}

/// Creates topics of `partitions` partitions each in one CreateTopics request of `version`:
/// each topic's error code, and the response's throttle time.
async fn create_topics_at(
    conn: &mut Connection,
    names: &[&str],
    partitions: i32,
    version: i16,
) -> Result<(Vec<i16>, i32)> {
    let request = CreateTopicsRequest::default()
        .with_topics(
            names
                .iter()
                .map(|name| {
                    CreatableTopic::default()
                        .with_name(support::topic_name(name))
                        .with_num_partitions(partitions)
                        .with_replication_factor(1)
                })
                .collect(),
        )
        .with_timeout_ms(30_000);
    let response = call(conn, &request, version).await?;
    Ok((
        response.topics.iter().map(|t| t.error_code).collect(),
        response.throttle_time_ms,
    ))
}

/// CreatePartitions growing each topic to its count.
fn grow(topics: &[(&str, i32)]) -> CreatePartitionsRequest {
    CreatePartitionsRequest::default()
        .with_topics(
            topics
                .iter()
                .map(|(name, count)| {
                    CreatePartitionsTopic::default()
                        .with_name(support::topic_name(name))
                        .with_count(*count)
                        .with_assignments(None)
                })
                .collect(),
        )
        .with_timeout_ms(30_000)
}

/// DeleteTopics of these topics, by name.
fn delete(names: &[&str]) -> DeleteTopicsRequest {
    DeleteTopicsRequest::default()
        .with_topics(
            names
                .iter()
                .map(|name| DeleteTopicState::default().with_name(Some(support::topic_name(name))))
                .collect(),
        )
        .with_timeout_ms(30_000)
}

/// `controller_mutation_rate` (KIP-599) as Kafka enforces it: a client may create or delete
/// partitions in a burst of the rate times the quota windows, a topic being judged before it
/// is made (so one may take the bucket below zero); then CreateTopics v6+, CreatePartitions
/// v3+ and DeleteTopics v5+ refuse each further topic with THROTTLING_QUOTA_EXCEEDED and the
/// time to wait, and the connection is muted that long; older versions go through and are
/// told to wait. Other clients are not held to the quota.
#[tokio::test]
async fn controller_mutations_over_their_rate_are_refused_or_throttled_until_the_bucket_refills(
) -> Result<()> {
    // A burst of 2 partitions a second over 3 windows of 1 s: 6 partitions.
    let broker = start_without_auto_create(&[
        "--override",
        "controller.quota.window.num=3",
        "--override",
        "controller.quota.window.size.seconds=1",
    ])?;
    let outcome = async {
        let mut admin = connect(&broker).await?;
        let (code, _) = alter_one(
            &mut admin,
            &[("client-id", Some("ops"))],
            vec![set("controller_mutation_rate", 2.0)],
        )
        .await?;
        expect_ok("the ops client's quota", code)?;
        let mut ops = connect(&broker).await?.with_client_id("ops");

        // 4 + 4 partitions: the second topic is judged with 2 left, and takes the bucket to
        // -2; the third is refused, told to wait about a second.
        let (codes, throttle) = create_topics_at(&mut ops, &["m1", "m2", "m3"], 4, 7).await?;
        ensure!(
            codes == [0, 0, ResponseError::ThrottlingQuotaExceeded.code()],
            "the burst creates the first two, the third is over the quota: {codes:?}"
        );
        ensure!(
            (500..=1000).contains(&throttle),
            "2 partitions over at 2/s: throttled {throttle} ms"
        );
        // Another client is not held to it.
        let (codes, throttle) = create_topics_at(&mut admin, &["free"], 8, 7).await?;
        ensure!(codes == [0] && throttle == 0, "{codes:?} {throttle}");
        // The refusal muted the connection until the bucket was back at zero: version 5 goes
        // through, and is told to wait for what it took.
        let (codes, throttle) = create_topics_at(&mut ops, &["old"], 2, 5).await?;
        ensure!(codes == [0], "CreateTopics v5 goes through: {codes:?}");
        ensure!(
            (500..=1000).contains(&throttle),
            "and is throttled: {throttle}"
        );
        // Each next request's first topic passes and takes the bucket below zero again:
        // CreatePartitions v3 grows m1 by 6 and refuses m2, DeleteTopics v6 deletes m1 (its
        // 10 partitions) and refuses m2.
        let grown = call(&mut ops, &grow(&[("m1", 10), ("m2", 6)]), 3).await?;
        let codes: Vec<i16> = grown.results.iter().map(|r| r.error_code).collect();
        ensure!(
            codes == [0, ResponseError::ThrottlingQuotaExceeded.code()],
            "CreatePartitions: {codes:?}"
        );
        ensure!(
            (2_000..=3_000).contains(&grown.throttle_time_ms),
            "6 partitions over at 2/s: {}",
            grown.throttle_time_ms
        );
        let deleted = call(&mut ops, &delete(&["m1", "m2"]), 6).await?;
        let codes: Vec<i16> = deleted.responses.iter().map(|r| r.error_code).collect();
        ensure!(
            codes == [0, ResponseError::ThrottlingQuotaExceeded.code()],
            "DeleteTopics: {codes:?}"
        );
        ensure!(
            (4_000..=5_000).contains(&deleted.throttle_time_ms),
            "10 partitions over at 2/s: {}",
            deleted.throttle_time_ms
        );
        let deleted = call(&mut ops, &delete(&["m2"]), 6).await?;
        expect_ok(
            "DeleteTopics once the bucket refilled",
            deleted.responses[0].error_code,
        )?;
        let metrics = broker.scrape_metrics()?;
        ensure!(
            metrics
                .contains("oxbow_quota_throttle_time_seconds_count{quota=\"controller_mutation\"}"),
            "the throttles are counted by their quota"
        );
        Ok(())
    }
    .await;
    broker.explain(outcome)
}

/// Opens a connection from `source` (a loopback address) to `broker` and says whether an
/// ApiVersions request on it is answered, and how long the connection stayed open otherwise.
async fn answered_from(source: &str, broker: std::net::SocketAddr) -> Result<(bool, Duration)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse()?)?;
    let mut stream = tokio::time::timeout(Duration::from_secs(5), socket.connect(broker))
        .await
        .context("connecting")??;
    let opened = Instant::now();
    let body = support::encode_body(&ApiVersionsRequest::default(), 0)?;
    let frame = support::raw_frame(18, 0, 1, 1, &body)?;
    // A closed connection may refuse the write; the read says it either way.
    let _ = stream.write_all(&frame).await;
    let mut size = [0u8; 4];
    let read = tokio::time::timeout(Duration::from_secs(15), stream.read_exact(&mut size))
        .await
        .context("no answer and no close within 15 s")?;
    Ok((read.is_ok(), opened.elapsed()))
}

/// A `connection_creation_rate` quota on an address (KIP-612): connections from it beyond the
/// rate are held for the throttle time and closed unanswered, while another address, without
/// a quota, connects freely; once the rate has fallen back the address connects again.
#[tokio::test]
async fn connections_over_an_ip_connection_creation_rate_are_held_then_closed() -> Result<()> {
    // The rate is measured over 2 windows of 1 s: at 2 a second, the third connection within
    // a second is over it.
    let broker = start_without_auto_create(&[
        "--override",
        "quota.window.num=2",
        "--override",
        "quota.window.size.seconds=1",
    ])?;
    let address: std::net::SocketAddr = broker.bootstrap().parse()?;
    let outcome = async {
        let mut admin = connect(&broker).await?;
        let (code, _) = alter_one(
            &mut admin,
            &[("ip", Some("127.0.0.2"))],
            vec![set("connection_creation_rate", 2.0)],
        )
        .await?;
        expect_ok("the quota of 127.0.0.2", code)?;
        let mut outcomes = Vec::new();
        for _ in 0..6 {
            outcomes.push(answered_from("127.0.0.2", address).await?);
        }
        let answered = outcomes.iter().filter(|(ok, _)| *ok).count();
        // Two in the first moments are within 2 a second over the 1 s the rate is measured
        // over, the third is not; later ones pass only as the rate falls back.
        ensure!(
            outcomes[0].0 && outcomes[1].0 && !outcomes[2].0 && answered <= 4,
            "2 connections a second from 127.0.0.2: {outcomes:?}"
        );
        let held: Vec<Duration> = outcomes
            .iter()
            .filter(|(ok, _)| !*ok)
            .map(|(_, held)| *held)
            .collect();
        ensure!(
            held.iter().all(|d| *d >= Duration::from_millis(100)),
            "a throttled connection is held before it is closed: {outcomes:?}"
        );
        for _ in 0..6 {
            let (ok, _) = answered_from("127.0.0.3", address).await?;
            ensure!(ok, "127.0.0.3 has no quota and must be answered");
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (ok, _) = answered_from("127.0.0.2", address).await?;
        ensure!(ok, "the rate fell back: 127.0.0.2 must be answered again");
        eprintln!("127.0.0.2 at 2 connections/s: {outcomes:?}");
        Ok(())
    }
    .await;
    broker.explain(outcome)
}

/// The broker-wide `max.connection.creation.rate` (KIP-612): connections beyond it are served
/// late rather than closed, and a dynamic value set through IncrementalAlterConfigs replaces
/// the static one at once.
#[tokio::test]
async fn connections_over_the_broker_connection_creation_rate_wait_and_the_limit_is_dynamic(
) -> Result<()> {
    let broker = start_without_auto_create(&[
        "--override",
        "quota.window.num=2",
        "--override",
        "quota.window.size.seconds=1",
        "--override",
        "max.connection.creation.rate=2",
    ])?;
    let address: std::net::SocketAddr = broker.bootstrap().parse()?;
    let outcome = async {
        let mut limited = Vec::new();
        for _ in 0..5 {
            limited.push(answered_from("127.0.0.1", address).await?);
        }
        ensure!(
            limited.iter().all(|(ok, _)| *ok),
            "connections over the broker-wide rate wait, they are not closed: {limited:?}"
        );
        ensure!(
            limited[2].1 >= Duration::from_millis(200),
            "the third connection within a second waits: {limited:?}"
        );
        let mut admin = connect(&broker).await?;
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(4)
                .with_resource_name(str_bytes("0"))
                .with_configs(vec![AlterableConfig::default()
                    .with_name(str_bytes("max.connection.creation.rate"))
                    .with_config_operation(0)
                    .with_value(Some(str_bytes("1000")))]),
        ]);
        let response = call(&mut admin, &request, 1).await?;
        let code = response.responses.first().map_or(-1, |r| r.error_code);
        expect_ok("max.connection.creation.rate=1000", code)?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut free = Vec::new();
        for _ in 0..5 {
            free.push(answered_from("127.0.0.1", address).await?);
        }
        ensure!(
            free.iter()
                .all(|(ok, open)| *ok && *open < Duration::from_millis(150)),
            "at 1000 a second nothing waits: {free:?}"
        );
        eprintln!("at 2 a second: {limited:?}; at 1000: {free:?}");
        Ok(())
    }
    .await;
    broker.explain(outcome)
}

/// A listener's own limits, as Kafka takes them (`listener.name.<name>.max.connections` and
/// `.max.connection.creation.rate`): beyond its connections a new one is closed unanswered
/// until one of them closes, and beyond its rate a new one is served late.
#[tokio::test]
async fn a_listener_holds_its_own_connection_limits() -> Result<()> {
    let broker = start_without_auto_create(&[
        "--override",
        "quota.window.num=2",
        "--override",
        "quota.window.size.seconds=1",
        "--override",
        "listener.name.plaintext.max.connections=3",
        "--override",
        "listener.name.plaintext.max.connection.creation.rate=2",
    ])?;
    let address: std::net::SocketAddr = broker.bootstrap().parse()?;
    let outcome = async {
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(tokio::net::TcpStream::connect(address).await?);
        }
        let (answered, open) = answered_from("127.0.0.1", address).await?;
        ensure!(
            !answered,
            "a fourth connection on a listener of 3 was answered"
        );
        ensure!(
            open >= Duration::from_millis(200),
            "the listener's rate of 2 a second delays even a refused connection: {open:?}"
        );
        drop(held.pop());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (answered, _) = answered_from("127.0.0.1", address).await?;
        ensure!(answered, "a place freed on the listener, yet refused");
        Ok(())
    }
    .await;
    broker.explain(outcome)
}
