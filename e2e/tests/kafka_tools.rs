//! Apache Kafka 4.1's own CLI tools against Oxbow, and the same checks against a real Kafka
//! broker: each test runs once per flavor, so a check that holds on Kafka and fails on Oxbow
//! is an Oxbow bug, and one that fails on both is a wrong test. What a tool prints is checked,
//! not only its exit code. docs/compatibility.md lists where the two differ and why.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use oxbow_e2e::harness::sample;
use oxbow_e2e::kafka::{eventually, main_class, JavaProcess, Server, ToolOutput};
use oxbow_e2e::side_by_side;

/// `Key: value` pairs of a tab-separated `kafka-topics --describe` line.
fn fields(line: &str) -> BTreeMap<String, String> {
    line.split('\t')
        .filter_map(|part| {
            part.split_once(": ")
                .or_else(|| part.strip_suffix(':').map(|k| (k, "")))
        })
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// A `kafka-topics --describe` answer: the topic's line, then one per partition.
type Described = (BTreeMap<String, String>, Vec<BTreeMap<String, String>>);

fn describe_topic(server: &Server, topic: &str) -> Result<Described> {
    let out = server.tool("kafka-topics", &["--describe", "--topic", topic])?;
    let mut lines = out.lines().into_iter();
    let head = fields(lines.next().context("describe printed nothing")?);
    let partitions = lines.map(fields).collect();
    Ok((head, partitions))
}

/// `topic:partition:offset` lines of kafka-get-offsets, as a map.
fn offsets(out: &ToolOutput) -> Result<BTreeMap<String, i64>> {
    out.lines()
        .iter()
        .map(|line| {
            let (partition, offset) = line
                .rsplit_once(':')
                .with_context(|| format!("not topic:partition:offset: {line:?}"))?;
            Ok((partition.to_string(), offset.parse()?))
        })
        .collect()
}

fn topics_from_create_to_delete(server: &Server) -> Result<()> {
    let created = server.tool(
        "kafka-topics",
        &[
            "--create",
            "--topic",
            "orders",
            "--partitions",
            "3",
            "--replication-factor",
            "1",
            "--config",
            "retention.ms=3600000",
        ],
    )?;
    ensure!(
        created.stdout.contains("Created topic orders."),
        "{created}"
    );

    let again = server.run(
        "kafka-topics",
        &[
            "--create",
            "--topic",
            "orders",
            "--partitions",
            "3",
            "--replication-factor",
            "1",
        ],
        None,
    )?;
    ensure!(!again.success, "creating it twice must fail: {again}");
    ensure!(
        again.stderr.contains("already exists") || again.stdout.contains("already exists"),
        "{again}"
    );

    let bad = server.run(
        "kafka-topics",
        &["--create", "--topic", "bad name", "--partitions", "1"],
        None,
    )?;
    ensure!(!bad.success, "an invalid topic name must be refused: {bad}");

    let listed = server.tool("kafka-topics", &["--list"])?;
    ensure!(listed.lines().contains(&"orders"), "{listed}");

    let (head, partitions) = describe_topic(server, "orders")?;
    ensure!(
        head.get("Topic").map(String::as_str) == Some("orders"),
        "{head:?}"
    );
    ensure!(
        head.get("PartitionCount").map(String::as_str) == Some("3"),
        "{head:?}"
    );
    ensure!(
        head.get("ReplicationFactor").map(String::as_str) == Some("1"),
        "{head:?}"
    );
    ensure!(
        head.get("Configs")
            .is_some_and(|c| c.contains("retention.ms=3600000")),
        "{head:?}"
    );
    ensure!(
        head.get("TopicId").is_some_and(|id| id.len() == 22),
        "{head:?}"
    );
    ensure!(partitions.len() == 3, "{partitions:?}");
    let node = server.node_id().to_string();
    for (i, p) in partitions.iter().enumerate() {
        ensure!(p.get("Partition") == Some(&i.to_string()), "{p:?}");
        ensure!(p.get("Leader") == Some(&node), "{p:?}");
        ensure!(p.get("Replicas") == Some(&node), "{p:?}");
        ensure!(p.get("Isr") == Some(&node), "{p:?}");
    }

    server.tool(
        "kafka-topics",
        &["--alter", "--topic", "orders", "--partitions", "5"],
    )?;
    let (head, _) = describe_topic(server, "orders")?;
    ensure!(
        head.get("PartitionCount").map(String::as_str) == Some("5"),
        "{head:?}"
    );
    let fewer = server.run(
        "kafka-topics",
        &["--alter", "--topic", "orders", "--partitions", "2"],
        None,
    )?;
    ensure!(!fewer.success, "fewer partitions must be refused: {fewer}");

    server.tool("kafka-topics", &["--delete", "--topic", "orders"])?;
    eventually("orders gone from the list", Duration::from_secs(30), || {
        let listed = server.tool("kafka-topics", &["--list"])?;
        ensure!(!listed.lines().contains(&"orders"), "{listed}");
        Ok(())
    })
}
side_by_side!(topics_from_create_to_delete);

fn console_producer_consumer_offsets_and_delete_records(server: &Server) -> Result<()> {
    server.tool(
        "kafka-topics",
        &[
            "--create",
            "--topic",
            "lines",
            "--partitions",
            "1",
            "--replication-factor",
            "1",
        ],
    )?;
    let input = "k1:first\nk2:second\nk3:third\nk4:fourth\n";
    let produced = server.run(
        "kafka-console-producer",
        &[
            "--topic",
            "lines",
            "--property",
            "parse.key=true",
            "--property",
            "key.separator=:",
        ],
        Some(input),
    )?;
    ensure!(produced.success, "{produced}");

    let consumed = server.tool(
        "kafka-console-consumer",
        &[
            "--topic",
            "lines",
            "--from-beginning",
            "--max-messages",
            "4",
            "--timeout-ms",
            "30000",
            "--property",
            "print.key=true",
            "--property",
            "key.separator=:",
        ],
    )?;
    ensure!(
        consumed.lines() == vec!["k1:first", "k2:second", "k3:third", "k4:fourth"],
        "{consumed}"
    );
    ensure!(
        consumed.stderr.contains("Processed a total of 4 messages"),
        "{consumed}"
    );

    let from_offset = server.tool(
        "kafka-console-consumer",
        &[
            "--topic",
            "lines",
            "--partition",
            "0",
            "--offset",
            "2",
            "--max-messages",
            "2",
            "--timeout-ms",
            "30000",
        ],
    )?;
    ensure!(
        from_offset.lines() == vec!["third", "fourth"],
        "{from_offset}"
    );

    let latest = offsets(&server.tool("kafka-get-offsets", &["--topic", "lines"])?)?;
    ensure!(latest.get("lines:0") == Some(&4), "{latest:?}");

    let dir = tempfile::tempdir()?;
    let plan = dir.path().join("delete.json");
    std::fs::write(
        &plan,
        r#"{"version":1,"partitions":[{"topic":"lines","partition":0,"offset":3}]}"#,
    )?;
    let deleted = server.tool(
        "kafka-delete-records",
        &["--offset-json-file", &plan.to_string_lossy()],
    )?;
    ensure!(
        deleted
            .stdout
            .contains("partition: lines-0\tlow_watermark: 3"),
        "{deleted}"
    );

    let earliest =
        offsets(&server.tool("kafka-get-offsets", &["--topic", "lines", "--time", "-2"])?)?;
    ensure!(earliest.get("lines:0") == Some(&3), "{earliest:?}");
    let rest = server.tool(
        "kafka-console-consumer",
        &[
            "--topic",
            "lines",
            "--from-beginning",
            "--max-messages",
            "1",
            "--timeout-ms",
            "30000",
        ],
    )?;
    ensure!(rest.lines() == vec!["fourth"], "{rest}");
    Ok(())
}
side_by_side!(console_producer_consumer_offsets_and_delete_records);

/// One `kafka-consumer-groups --describe` row: column name → value.
fn group_rows(out: &ToolOutput) -> Result<Vec<BTreeMap<String, String>>> {
    table_rows(out, "GROUP")
}

/// The rows of a table a tool printed under a header line starting with `first_column`:
/// column name → value, values split at whitespace.
fn table_rows(out: &ToolOutput, first_column: &str) -> Result<Vec<BTreeMap<String, String>>> {
    let lines = out.lines();
    let header_at = lines
        .iter()
        .position(|l| l.starts_with(first_column))
        .with_context(|| format!("no header: {out}"))?;
    let header: Vec<&str> = lines[header_at].split_whitespace().collect();
    Ok(lines[header_at + 1..]
        .iter()
        .map(|line| {
            header
                .iter()
                .zip(line.split_whitespace())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect())
}

fn consumer_groups_lag_reset_and_delete(server: &Server) -> Result<()> {
    server.tool(
        "kafka-topics",
        &[
            "--create",
            "--topic",
            "events",
            "--partitions",
            "2",
            "--replication-factor",
            "1",
        ],
    )?;
    let input: String = (0..10).map(|i| format!("event-{i}\n")).collect();
    server
        .run(
            "kafka-console-producer",
            &["--topic", "events"],
            Some(&input),
        )?
        .ok()?;
    let consumed = server.tool(
        "kafka-console-consumer",
        &[
            "--topic",
            "events",
            "--group",
            "readers",
            "--from-beginning",
            "--max-messages",
            "10",
            "--timeout-ms",
            "30000",
        ],
    )?;
    ensure!(consumed.lines().len() == 10, "{consumed}");
    server
        .run(
            "kafka-console-producer",
            &["--topic", "events"],
            Some("late-1\nlate-2\nlate-3\n"),
        )?
        .ok()?;

    let listed = server.tool("kafka-consumer-groups", &["--list"])?;
    ensure!(listed.lines().contains(&"readers"), "{listed}");

    let described = server.tool(
        "kafka-consumer-groups",
        &["--describe", "--group", "readers"],
    )?;
    let rows = group_rows(&described)?;
    ensure!(rows.len() == 2, "{described}");
    let lag: i64 = rows
        .iter()
        .map(|r| {
            r.get("LAG")
                .and_then(|l| l.parse::<i64>().ok())
                .unwrap_or(-1)
        })
        .sum();
    ensure!(lag == 3, "total lag 3 expected: {described}");
    let committed: i64 = rows
        .iter()
        .map(|r| {
            r.get("CURRENT-OFFSET")
                .and_then(|l| l.parse::<i64>().ok())
                .unwrap_or(-1)
        })
        .sum();
    ensure!(committed == 10, "{described}");

    let state = server.tool(
        "kafka-consumer-groups",
        &["--describe", "--group", "readers", "--state"],
    )?;
    ensure!(state.stdout.contains("Empty"), "{state}");

    let planned = server.tool(
        "kafka-consumer-groups",
        &[
            "--reset-offsets",
            "--group",
            "readers",
            "--topic",
            "events",
            "--to-earliest",
            "--dry-run",
        ],
    )?;
    let rows = group_rows(&planned)?;
    ensure!(
        rows.iter()
            .all(|r| r.get("NEW-OFFSET").map(String::as_str) == Some("0")),
        "{planned}"
    );
    let unchanged = group_rows(&server.tool(
        "kafka-consumer-groups",
        &["--describe", "--group", "readers"],
    )?)?;
    ensure!(
        unchanged
            .iter()
            .map(|r| r["CURRENT-OFFSET"].parse::<i64>().unwrap_or(-1))
            .sum::<i64>()
            == 10,
        "a dry run changes nothing"
    );

    // The console producer's sticky partitioner may have put every record in one partition:
    // move back the partition that has at least two.
    let busy = unchanged
        .iter()
        .find(|r| r["LOG-END-OFFSET"].parse::<i64>().unwrap_or(0) >= 2)
        .with_context(|| format!("no partition with two records: {unchanged:?}"))?["PARTITION"]
        .clone();
    server.tool(
        "kafka-consumer-groups",
        &[
            "--reset-offsets",
            "--group",
            "readers",
            "--topic",
            &format!("events:{busy}"),
            "--to-offset",
            "1",
            "--execute",
        ],
    )?;
    let after = group_rows(&server.tool(
        "kafka-consumer-groups",
        &["--describe", "--group", "readers"],
    )?)?;
    let moved = after
        .iter()
        .find(|r| r.get("PARTITION") == Some(&busy))
        .context("the partition moved back")?;
    ensure!(
        moved.get("CURRENT-OFFSET").map(String::as_str) == Some("1"),
        "{after:?}"
    );

    let deleted = server.tool("kafka-consumer-groups", &["--delete", "--group", "readers"])?;
    ensure!(
        deleted
            .stdout
            .contains("Deletion of requested consumer groups ('readers') was successful."),
        "{deleted}"
    );
    let listed = server.tool("kafka-consumer-groups", &["--list"])?;
    ensure!(!listed.lines().contains(&"readers"), "{listed}");
    let missing = server.run(
        "kafka-consumer-groups",
        &["--describe", "--group", "readers"],
        None,
    )?;
    ensure!(
        missing.stdout.contains("Group readers not found."),
        "{missing}"
    );
    Ok(())
}
side_by_side!(consumer_groups_lag_reset_and_delete);

fn configs_of_brokers_topics_and_users(server: &Server) -> Result<()> {
    let node = server.node_id().to_string();
    server.tool(
        "kafka-topics",
        &[
            "--create",
            "--topic",
            "tuned",
            "--partitions",
            "1",
            "--replication-factor",
            "1",
        ],
    )?;

    server.tool(
        "kafka-configs",
        &[
            "--alter",
            "--entity-type",
            "topics",
            "--entity-name",
            "tuned",
            "--add-config",
            "retention.ms=86400000,cleanup.policy=compact",
        ],
    )?;
    let topic = server.tool(
        "kafka-configs",
        &[
            "--describe",
            "--entity-type",
            "topics",
            "--entity-name",
            "tuned",
        ],
    )?;
    ensure!(
        topic
            .stdout
            .contains("Dynamic configs for topic tuned are:"),
        "{topic}"
    );
    ensure!(topic.stdout.contains("retention.ms=86400000 sensitive=false synonyms={DYNAMIC_TOPIC_CONFIG:retention.ms=86400000}"), "{topic}");
    ensure!(topic.stdout.contains("cleanup.policy=compact"), "{topic}");
    server.tool(
        "kafka-configs",
        &[
            "--alter",
            "--entity-type",
            "topics",
            "--entity-name",
            "tuned",
            "--delete-config",
            "cleanup.policy",
        ],
    )?;
    let topic = server.tool(
        "kafka-configs",
        &[
            "--describe",
            "--entity-type",
            "topics",
            "--entity-name",
            "tuned",
        ],
    )?;
    ensure!(!topic.stdout.contains("cleanup.policy"), "{topic}");
    let unknown = server.run(
        "kafka-configs",
        &[
            "--alter",
            "--entity-type",
            "topics",
            "--entity-name",
            "tuned",
            "--add-config",
            "no.such.setting=1",
        ],
        None,
    )?;
    ensure!(
        !unknown.success,
        "an unknown topic setting must be refused: {unknown}"
    );

    server.tool(
        "kafka-configs",
        &[
            "--alter",
            "--entity-type",
            "brokers",
            "--entity-name",
            &node,
            "--add-config",
            "log.cleaner.threads=2",
        ],
    )?;
    let broker = server.tool(
        "kafka-configs",
        &[
            "--describe",
            "--entity-type",
            "brokers",
            "--entity-name",
            &node,
        ],
    )?;
    ensure!(
        broker
            .stdout
            .contains(&format!("Dynamic configs for broker {node} are:")),
        "{broker}"
    );
    ensure!(broker.stdout.contains("log.cleaner.threads=2 sensitive=false synonyms={DYNAMIC_BROKER_CONFIG:log.cleaner.threads=2"), "{broker}");
    let all = server.tool(
        "kafka-configs",
        &[
            "--describe",
            "--entity-type",
            "brokers",
            "--entity-name",
            &node,
            "--all",
        ],
    )?;
    ensure!(all.stdout.contains("All configs for broker"), "{all}");
    ensure!(all.stdout.contains("log.retention.hours=168"), "{all}");

    server.tool(
        "kafka-configs",
        &[
            "--alter",
            "--entity-type",
            "brokers",
            "--entity-default",
            "--add-config",
            "log.cleaner.threads=3",
        ],
    )?;
    let defaults = server.tool(
        "kafka-configs",
        &["--describe", "--entity-type", "brokers", "--entity-default"],
    )?;
    ensure!(
        defaults
            .stdout
            .contains("Default configs for brokers in the cluster are:"),
        "{defaults}"
    );
    ensure!(
        defaults.stdout.contains("log.cleaner.threads=3"),
        "{defaults}"
    );

    // SCRAM credentials of a user (AlterUserScramCredentials); `quotas_of_users_clients_and_ips`
    // describes them beside the user's quotas.
    server.tool(
        "kafka-configs",
        &[
            "--alter",
            "--entity-type",
            "users",
            "--entity-name",
            "alice",
            "--add-config",
            "SCRAM-SHA-256=[iterations=8192,password=alice-secret]",
        ],
    )?;
    // Quotas and SCRAM credentials go through different APIs: one alteration each.
    let both = server.run(
        "kafka-configs",
        &[
            "--alter",
            "--entity-type",
            "users",
            "--entity-name",
            "alice",
            "--add-config",
            "consumer_byte_rate=1024,SCRAM-SHA-256=[password=x]",
        ],
        None,
    )?;
    ensure!(!both.success, "{both}");
    Ok(())
}
side_by_side!(configs_of_brokers_topics_and_users);

/// `kafka-configs` on client quotas (AlterClientQuotas, DescribeClientQuotas): users with and
/// without client ids, clients, IPs and their defaults, a user's quotas beside its SCRAM
/// credentials, a value the broker refuses, and a quota deleted.
fn quotas_of_users_clients_and_ips(server: &Server) -> Result<()> {
    let configs = |args: &[&str]| server.tool("kafka-configs", args);
    let describe = |what: &str, args: &[&str], expected: &[&str]| {
        eventually(what, Duration::from_secs(15), || {
            let mut all = vec!["--describe"];
            all.extend_from_slice(args);
            let described = configs(&all)?;
            for line in expected {
                ensure!(
                    described.lines().contains(line),
                    "{what}: no {line:?} in {described}"
                );
            }
            Ok(described)
        })
    };
    let alice = ["--entity-type", "users", "--entity-name", "alice"];
    let altered = configs(
        &[
            &alice[..],
            &[
                "--alter",
                "--add-config",
                "producer_byte_rate=1048576,consumer_byte_rate=2097152",
            ],
        ]
        .concat(),
    )?;
    ensure!(
        altered.lines() == ["Completed updating config for user alice."],
        "{altered}"
    );
    configs(
        &[
            &alice[..],
            &[
                "--alter",
                "--add-config",
                "SCRAM-SHA-256=[iterations=8192,password=alice-secret]",
            ],
        ]
        .concat(),
    )?;
    let described = describe(
        "alice's quotas and credentials",
        &alice,
        &["SCRAM credential configs for user-principal 'alice' are SCRAM-SHA-256=iterations=8192"],
    )?;
    let quotas = described
        .lines()
        .into_iter()
        .find(|l| l.starts_with("Quota configs for user-principal 'alice' are "))
        .unwrap_or_default();
    ensure!(
        quotas.contains("producer_byte_rate=1048576.0")
            && quotas.contains("consumer_byte_rate=2097152.0"),
        "{described}"
    );

    let alice_app = [
        &alice[..],
        &["--entity-type", "clients", "--entity-name", "app"],
    ]
    .concat();
    let altered = configs(
        &[
            &alice_app[..],
            &["--alter", "--add-config", "request_percentage=25"],
        ]
        .concat(),
    )?;
    ensure!(
        altered.lines() == ["Completed updating config for user alice."],
        "{altered}"
    );
    let described = describe(
        "alice's quotas with client app",
        &alice_app,
        &["Quota configs for user-principal 'alice', client-id 'app' are request_percentage=25.0"],
    )?;
    ensure!(described.lines().len() == 1, "{described}");

    for (entity, config, done, expected) in [
        (
            ["--entity-type", "clients", "--entity-default"],
            "producer_byte_rate=1000",
            "Completed updating default config for clients in the cluster.",
            "Quota configs for the default client-id are producer_byte_rate=1000.0",
        ),
        (
            ["--entity-type", "users", "--entity-default"],
            "consumer_byte_rate=5000",
            "Completed updating default config for users in the cluster.",
            "Quota configs for the default user-principal are consumer_byte_rate=5000.0",
        ),
        (
            ["--entity-type", "ips", "--entity-default"],
            "connection_creation_rate=20",
            "Completed updating default config for ips in the cluster.",
            "Quota configs for the default ip are connection_creation_rate=20.0",
        ),
    ] {
        let altered = configs(&[&entity[..], &["--alter", "--add-config", config]].concat())?;
        ensure!(altered.lines() == [done], "{altered}");
        describe(done, &entity, &[expected])?;
    }
    let ip = ["--entity-type", "ips", "--entity-name", "10.1.2.3"];
    let altered = configs(
        &[
            &ip[..],
            &["--alter", "--add-config", "connection_creation_rate=10"],
        ]
        .concat(),
    )?;
    ensure!(
        altered.lines() == ["Completed updating config for ip 10.1.2.3."],
        "{altered}"
    );
    describe(
        "the IP's quota",
        &ip,
        &["Quota configs for ip '10.1.2.3' are connection_creation_rate=10.0"],
    )?;

    // Every client-id entity alone: the default one only (alice's is with a user).
    let clients = describe(
        "every client",
        &["--entity-type", "clients"],
        &["Quota configs for the default client-id are producer_byte_rate=1000.0"],
    )?;
    ensure!(clients.lines().len() == 1, "{clients}");

    // The broker refuses a fraction for a byte rate, with Kafka's message.
    let refused = server.run(
        "kafka-configs",
        &[
            &alice[..],
            &["--alter", "--add-config", "producer_byte_rate=1.5"],
        ]
        .concat(),
        None,
    )?;
    ensure!(
        !refused.success
            && refused
                .to_string()
                .contains("producer_byte_rate cannot be a fractional value."),
        "{refused}"
    );

    configs(
        &[
            &alice[..],
            &["--alter", "--delete-config", "producer_byte_rate"],
        ]
        .concat(),
    )?;
    let users = describe(
        "every user after a deletion",
        &["--entity-type", "users"],
        &[
            "Quota configs for user-principal 'alice' are consumer_byte_rate=2097152.0",
            "Quota configs for the default user-principal are consumer_byte_rate=5000.0",
            "SCRAM credential configs for user-principal 'alice' are SCRAM-SHA-256=iterations=8192",
        ],
    )?;
    ensure!(users.lines().len() == 3, "{users}");
    Ok(())
}
side_by_side!(quotas_of_users_clients_and_ips);

const AUTHORIZER: &[&str] = &[
    "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "allow.everyone.if.no.acl.found=true",
    "super.users=User:ANONYMOUS",
];

fn acls_added_listed_and_removed(server: &Server) -> Result<()> {
    let added = server.tool(
        "kafka-acls",
        &[
            "--add",
            "--allow-principal",
            "User:alice",
            "--operation",
            "Read",
            "--operation",
            "Describe",
            "--topic",
            "payments",
            "--group",
            "billing",
        ],
    )?;
    ensure!(added.stdout.contains("Adding ACLs for resource `ResourcePattern(resourceType=TOPIC, name=payments, patternType=LITERAL)`"), "{added}");
    server.tool(
        "kafka-acls",
        &[
            "--add",
            "--deny-principal",
            "User:mallory",
            "--operation",
            "All",
            "--topic",
            "pay",
            "--resource-pattern-type",
            "prefixed",
        ],
    )?;
    let listed = eventually("the ACLs listed", Duration::from_secs(15), || {
        let listed = server.tool("kafka-acls", &["--list", "--topic", "payments"])?;
        ensure!(
            listed
                .stdout
                .contains("(principal=User:alice, host=*, operation=READ, permissionType=ALLOW)"),
            "{listed}"
        );
        Ok(listed)
    })?;
    ensure!(
        listed
            .stdout
            .contains("(principal=User:alice, host=*, operation=DESCRIBE, permissionType=ALLOW)"),
        "{listed}"
    );
    let prefixed = server.tool(
        "kafka-acls",
        &[
            "--list",
            "--topic",
            "pay",
            "--resource-pattern-type",
            "prefixed",
        ],
    )?;
    ensure!(
        prefixed
            .stdout
            .contains("(principal=User:mallory, host=*, operation=ALL, permissionType=DENY)"),
        "{prefixed}"
    );
    let by_principal = server.tool("kafka-acls", &["--list", "--principal", "User:alice"])?;
    ensure!(
        by_principal.stdout.contains("name=billing"),
        "{by_principal}"
    );

    server.tool(
        "kafka-acls",
        &[
            "--remove",
            "--force",
            "--allow-principal",
            "User:alice",
            "--operation",
            "Read",
            "--operation",
            "Describe",
            "--topic",
            "payments",
            "--group",
            "billing",
        ],
    )?;
    eventually("the ACLs removed", Duration::from_secs(15), || {
        let listed = server.tool("kafka-acls", &["--list", "--principal", "User:alice"])?;
        ensure!(!listed.stdout.contains("(principal=User:alice"), "{listed}");
        Ok(())
    })
}
side_by_side!(acls_added_listed_and_removed, super::AUTHORIZER);

fn perf_tests_produce_and_consume(server: &Server) -> Result<()> {
    server.tool(
        "kafka-topics",
        &[
            "--create",
            "--topic",
            "perf",
            "--partitions",
            "2",
            "--replication-factor",
            "1",
        ],
    )?;
    let produced = oxbow_e2e::kafka::tool(
        "kafka-producer-perf-test",
        &[
            "--topic",
            "perf",
            "--num-records",
            "20000",
            "--record-size",
            "100",
            "--throughput",
            "-1",
            "--producer-props",
            &format!("bootstrap.servers={}", server.bootstrap()),
            "acks=all",
        ],
    )?;
    // The summary: "20000 records sent, 12345.6 records/sec (1.18 MB/sec), ... ms avg latency, ..."
    let summary = produced
        .lines()
        .into_iter()
        .rev()
        .find(|l| l.starts_with("20000 records sent"))
        .with_context(|| format!("no summary: {produced}"))?
        .to_string();
    ensure!(summary.contains("records/sec"), "{summary}");
    let latest = offsets(&server.tool("kafka-get-offsets", &["--topic", "perf"])?)?;
    ensure!(latest.values().sum::<i64>() == 20000, "{latest:?}");

    let consumed = server.tool(
        "kafka-consumer-perf-test",
        &[
            "--topic",
            "perf",
            "--messages",
            "20000",
            "--timeout",
            "60000",
        ],
    )?;
    // A header of column names, then one row of figures.
    let lines = consumed.lines();
    let header = lines
        .iter()
        .position(|l| l.starts_with("start.time"))
        .with_context(|| format!("no header: {consumed}"))?;
    let names: Vec<&str> = lines[header].split(',').map(str::trim).collect();
    let row: Vec<&str> = lines
        .get(header + 1)
        .with_context(|| format!("no figures: {consumed}"))?
        .split(',')
        .map(str::trim)
        .collect();
    let column = names
        .iter()
        .position(|n| *n == "data.consumed.in.nMsg")
        .with_context(|| format!("no message count: {consumed}"))?;
    ensure!(row.get(column) == Some(&"20000"), "{consumed}");
    Ok(())
}
side_by_side!(perf_tests_produce_and_consume);

/// Short quota windows, so a test sees throttling within seconds: the rate is measured over
/// at least two 1 s windows.
const SHORT_QUOTA_WINDOWS: &[&str] = &["quota.window.num=3", "quota.window.size.seconds=1"];

/// A producer over its client id's `producer_byte_rate` is slowed to about that rate and sees
/// the broker's throttle time in its metrics.
fn a_producer_over_its_byte_rate_is_throttled(server: &Server) -> Result<()> {
    const RATE: f64 = 200_000.0;
    server.tool(
        "kafka-topics",
        &[
            "--create",
            "--topic",
            "metered",
            "--partitions",
            "1",
            "--replication-factor",
            "1",
        ],
    )?;
    let client = [
        "--entity-type",
        "clients",
        "--entity-name",
        "metered-producer",
    ];
    server.tool(
        "kafka-configs",
        &[
            &client[..],
            &[
                "--alter",
                "--add-config",
                &format!("producer_byte_rate={RATE}"),
            ],
        ]
        .concat(),
    )?;
    eventually("the quota in place", Duration::from_secs(15), || {
        let described = server.tool("kafka-configs", &[&client[..], &["--describe"]].concat())?;
        ensure!(
            described.stdout.contains("producer_byte_rate=200000.0"),
            "{described}"
        );
        Ok(())
    })?;
    let produced = oxbow_e2e::kafka::tool(
        "kafka-producer-perf-test",
        &[
            "--topic",
            "metered",
            "--num-records",
            "2000",
            "--record-size",
            "1000",
            "--throughput",
            "-1",
            "--print-metrics",
            "--producer-props",
            &format!("bootstrap.servers={}", server.bootstrap()),
            "client.id=metered-producer",
            "acks=1",
        ],
    )?;
    // "2000 records sent, 230.1 records/sec (0.22 MB/sec), ..."
    let summary = produced
        .lines()
        .into_iter()
        .find(|l| l.starts_with("2000 records sent"))
        .with_context(|| format!("no summary: {produced}"))?;
    let mb_per_sec: f64 = summary
        .split('(')
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no rate in {summary:?}"))?;
    // 2 MB at 200 kB/s (0.19 MiB/s): both Oxbow and Kafka report about 0.18 MB/sec.
    let quota_mib = RATE / (1024.0 * 1024.0);
    ensure!(
        mb_per_sec <= quota_mib * 1.6 && mb_per_sec >= quota_mib * 0.3,
        "{mb_per_sec} MB/sec against a quota of {quota_mib:.2} MiB/s: {summary}"
    );
    let throttle_max: f64 = produced
        .lines()
        .into_iter()
        .find(|l| l.starts_with("producer-metrics:produce-throttle-time-max:"))
        .and_then(|l| l.rsplit(':').next())
        .and_then(|n| n.trim().parse().ok())
        .with_context(|| format!("no throttle time metric: {produced}"))?;
    ensure!(throttle_max > 0.0, "never throttled: {summary}");
    eprintln!("{summary}; largest throttle {throttle_max} ms");
    Ok(())
}
side_by_side!(
    a_producer_over_its_byte_rate_is_throttled,
    super::SHORT_QUOTA_WINDOWS
);

/// Keyed lines `k<n>:<prefix>-<n>` for `n` in `range`, spread over the partitions by key.
fn keyed_lines(prefix: &str, range: std::ops::Range<usize>) -> String {
    range.map(|n| format!("k{n}:{prefix}-{n}\n")).collect()
}

fn produce_keyed(server: &Server, topic: &str, input: &str) -> Result<()> {
    server
        .run(
            "kafka-console-producer",
            &[
                "--topic",
                topic,
                "--property",
                "parse.key=true",
                "--property",
                "key.separator=:",
            ],
            Some(input),
        )?
        .ok()?;
    Ok(())
}

/// The Java consumer of a topic of many partitions fetches in an incremental session
/// (KIP-227): records produced while it polls arrive, and on Oxbow the broker's gauges show
/// one session holding every partition.
fn a_consumer_of_many_partitions_fetches_in_a_session(server: &Server) -> Result<()> {
    server.tool(
        "kafka-topics",
        &[
            "--create",
            "--topic",
            "wide",
            "--partitions",
            "24",
            "--replication-factor",
            "1",
        ],
    )?;
    produce_keyed(server, "wide", &keyed_lines("before", 0..240))?;
    let scratch = tempfile::tempdir()?;
    let bootstrap = server.bootstrap();
    let mut consumer = JavaProcess::start(
        "kafka-console-consumer",
        main_class("kafka-console-consumer")?,
        &[
            "--bootstrap-server",
            &bootstrap,
            "--topic",
            "wide",
            "--group",
            "wide-readers",
            "--from-beginning",
        ],
        &scratch.path().join("consumer.log"),
    )?;
    for n in 0..240 {
        consumer.wait_for_log(&format!("before-{n}\n"), Duration::from_secs(60))?;
    }
    // While it polls in its session, new records reach a few partitions only.
    produce_keyed(server, "wide", &keyed_lines("during", 0..5))?;
    for n in 0..5 {
        consumer.wait_for_log(&format!("during-{n}\n"), Duration::from_secs(30))?;
    }
    if let Server::Oxbow(broker) = server {
        let text = broker.scrape_metrics()?;
        ensure!(
            sample(&text, "oxbow_fetch_sessions") == Some(1.0)
                && sample(&text, "oxbow_fetch_session_partitions") == Some(24.0),
            "expected one fetch session of 24 partitions:\n{text}"
        );
    }
    consumer.stop(Duration::from_secs(30))?;
    Ok(())
}
side_by_side!(a_consumer_of_many_partitions_fetches_in_a_session);

fn broker_api_versions_lists_every_api(server: &Server) -> Result<()> {
    let out = server.tool("kafka-broker-api-versions", &[])?;
    for api in [
        "Produce(0)",
        "Fetch(1)",
        "ListOffsets(2)",
        "Metadata(3)",
        "OffsetCommit(8)",
        "FindCoordinator(10)",
        "JoinGroup(11)",
        "ApiVersions(18)",
        "CreateTopics(19)",
        "DescribeConfigs(32)",
        "IncrementalAlterConfigs(44)",
    ] {
        let line = out
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with(api))
            .with_context(|| format!("{api} missing: {out}"))?;
        ensure!(line.contains("usable:"), "{api} is not usable: {line}");
    }
    Ok(())
}
side_by_side!(broker_api_versions_lists_every_api);

fn reassignment_leader_election_and_log_dirs(server: &Server) -> Result<()> {
    let node = server.node_id().to_string();
    server.tool(
        "kafka-topics",
        &[
            "--create",
            "--topic",
            "moved",
            "--partitions",
            "2",
            "--replication-factor",
            "1",
        ],
    )?;
    server
        .run(
            "kafka-console-producer",
            &["--topic", "moved"],
            Some("a\nb\nc\n"),
        )?
        .ok()?;
    let dir = tempfile::tempdir()?;
    let topics = dir.path().join("topics.json");
    std::fs::write(&topics, r#"{"version":1,"topics":[{"topic":"moved"}]}"#)?;
    let generated = server.tool(
        "kafka-reassign-partitions",
        &[
            "--generate",
            "--topics-to-move-json-file",
            &topics.to_string_lossy(),
            "--broker-list",
            &node,
        ],
    )?;
    let text = &generated.stdout;
    let current = text
        .find("Current partition replica assignment")
        .with_context(|| format!("{generated}"))?;
    let proposed = text
        .find("Proposed partition reassignment configuration")
        .with_context(|| format!("{generated}"))?;
    ensure!(current < proposed, "{generated}");
    let plan_json = text[proposed..]
        .lines()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("no proposed plan: {generated}"))?;
    let plan: serde_json::Value = serde_json::from_str(plan_json)?;
    let partitions = plan["partitions"].as_array().context("partitions")?;
    ensure!(partitions.len() == 2, "{plan}");
    ensure!(
        partitions
            .iter()
            .all(|p| p["replicas"] == serde_json::json!([server.node_id()])),
        "{plan}"
    );
    let plan_file = dir.path().join("plan.json");
    std::fs::write(&plan_file, plan_json)?;
    let executed = server.tool(
        "kafka-reassign-partitions",
        &[
            "--execute",
            "--reassignment-json-file",
            &plan_file.to_string_lossy(),
        ],
    )?;
    ensure!(
        executed
            .stdout
            .contains("Successfully started partition reassignment"),
        "{executed}"
    );
    eventually("the reassignment verified", Duration::from_secs(30), || {
        let verified = server.tool(
            "kafka-reassign-partitions",
            &[
                "--verify",
                "--reassignment-json-file",
                &plan_file.to_string_lossy(),
            ],
        )?;
        ensure!(
            verified
                .stdout
                .contains("Reassignment of partition moved-0 is completed"),
            "{verified}"
        );
        ensure!(
            verified
                .stdout
                .contains("Reassignment of partition moved-1 is completed"),
            "{verified}"
        );
        Ok(())
    })?;

    // Every preferred leader already leads: nothing to elect, nothing to report.
    let elected = server.tool(
        "kafka-leader-election",
        &["--election-type", "preferred", "--all-topic-partitions"],
    )?;
    ensure!(elected.lines().is_empty(), "{elected}");
    let one = server.run(
        "kafka-leader-election",
        &[
            "--election-type",
            "preferred",
            "--topic",
            "moved",
            "--partition",
            "0",
        ],
        None,
    )?;
    ensure!(
        one.stdout
            .contains("Valid replica already elected for partitions moved-0"),
        "{one}"
    );

    let dirs = server.tool("kafka-log-dirs", &["--describe", "--topic-list", "moved"])?;
    ensure!(
        dirs.stdout.contains(&format!(
            "Received log directory information from brokers {node}"
        )),
        "{dirs}"
    );
    let report = dirs.json_line()?;
    let broker = &report["brokers"][0];
    ensure!(
        broker["broker"] == serde_json::json!(server.node_id()),
        "{report}"
    );
    let log_dir = &broker["logDirs"][0];
    ensure!(log_dir["error"].is_null(), "{report}");
    let partitions = log_dir["partitions"].as_array().context("partitions")?;
    let names: Vec<&str> = partitions
        .iter()
        .filter_map(|p| p["partition"].as_str())
        .collect();
    ensure!(
        names.contains(&"moved-0") && names.contains(&"moved-1") && names.len() == 2,
        "{report}"
    );
    let size: i64 = partitions.iter().filter_map(|p| p["size"].as_i64()).sum();
    ensure!(size > 0, "three records take room: {report}");
    Ok(())
}
side_by_side!(reassignment_leader_election_and_log_dirs);

/// `kafka-log-dirs --describe` on a broker with two log directories (`log.dirs=a,b`): both
/// are listed, by the paths configured and without error, and the four partitions of a new
/// topic are spread over them, two in each (the fewest partitions first), none a future
/// replica, the ones written to with a size.
fn log_dirs_describes_both_directories(server: &Server, dirs: &[PathBuf]) -> Result<()> {
    server.create_topic("spread", 4)?;
    produce_keyed(server, "spread", &keyed_lines("spread", 0..40))?;
    let out = server.tool("kafka-log-dirs", &["--describe", "--topic-list", "spread"])?;
    ensure!(
        out.stdout.contains(&format!(
            "Received log directory information from brokers {}",
            server.node_id()
        )),
        "{out}"
    );
    let report = out.json_line()?;
    let listed = report["brokers"][0]["logDirs"]
        .as_array()
        .with_context(|| format!("no logDirs: {report}"))?;
    let mut by_dir: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut size = 0;
    for dir in listed {
        ensure!(dir["error"].is_null(), "{report}");
        let path = dir["logDir"].as_str().context("logDir")?.to_string();
        let mut names = Vec::new();
        for p in dir["partitions"].as_array().context("partitions")? {
            ensure!(p["isFuture"] == serde_json::json!(false), "{report}");
            ensure!(p["offsetLag"] == serde_json::json!(0), "{report}");
            size += p["size"].as_i64().context("size")?;
            names.push(p["partition"].as_str().context("partition")?.to_string());
        }
        by_dir.insert(path, names);
    }
    let expected: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    ensure!(
        by_dir.keys().cloned().collect::<Vec<_>>() == expected,
        "directories {:?}, configured {expected:?}",
        by_dir.keys()
    );
    ensure!(
        by_dir.values().all(|names| names.len() == 2),
        "two partitions in each directory: {by_dir:?}"
    );
    let mut all: Vec<&String> = by_dir.values().flatten().collect();
    all.sort();
    ensure!(
        all == ["spread-0", "spread-1", "spread-2", "spread-3"],
        "{by_dir:?}"
    );
    ensure!(size > 0, "forty records take room: {report}");
    Ok(())
}

mod log_dirs_describes_both_directories {
    use std::path::PathBuf;

    use anyhow::{anyhow, Result};
    use oxbow_e2e::harness::{broker_binary, BrokerOptions, BrokerProcess};
    use oxbow_e2e::kafka::{KafkaBroker, Server};

    fn two_dirs(root: &tempfile::TempDir) -> Vec<PathBuf> {
        ["a", "b"].iter().map(|d| root.path().join(d)).collect()
    }

    fn check(server: &Server, dirs: &[PathBuf]) -> Result<()> {
        super::log_dirs_describes_both_directories(server, dirs).map_err(|e| {
            anyhow!(
                "{:?}: {e:#}\n--- broker log ---\n{}",
                server.flavor(),
                server.log_tail(40)
            )
        })
    }

    #[test]
    fn oxbow() -> Result<()> {
        let root = tempfile::tempdir()?;
        let dirs = two_dirs(&root);
        let broker =
            BrokerProcess::start(BrokerOptions::new(broker_binary()?).log_dirs(dirs.clone()))?;
        check(&Server::Oxbow(Box::new(broker)), &dirs)
    }

    #[test]
    fn kafka() -> Result<()> {
        let root = tempfile::tempdir()?;
        let dirs = two_dirs(&root);
        let joined: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        let broker = KafkaBroker::start(&[&format!("log.dirs={}", joined.join(","))])?;
        check(&Server::Kafka(Box::new(broker)), &dirs)
    }
}

/// `kafka-transactions` lists, describes and shows the producers of transactions that
/// `kafka-producer-perf-test` wrote with a transactional id, and `read_committed` consumers see
/// every committed record while the markers take offsets of their own.
fn transactions_listed_described_and_their_producers_shown(server: &Server) -> Result<()> {
    server.tool(
        "kafka-topics",
        &[
            "--create",
            "--topic",
            "txns",
            "--partitions",
            "1",
            "--replication-factor",
            "1",
        ],
    )?;
    let produced = oxbow_e2e::kafka::tool(
        "kafka-producer-perf-test",
        &[
            "--topic",
            "txns",
            "--num-records",
            "2000",
            "--record-size",
            "50",
            "--throughput",
            "-1",
            "--transactional-id",
            "perf-txn",
            "--transaction-duration-ms",
            "50",
            "--producer-props",
            &format!("bootstrap.servers={}", server.bootstrap()),
        ],
    )?;
    ensure!(
        produced
            .lines()
            .iter()
            .any(|l| l.starts_with("2000 records sent")),
        "{produced}"
    );

    let listed = table_rows(
        &server.tool("kafka-transactions", &["list"])?,
        "TransactionalId",
    )?;
    let row = listed
        .iter()
        .find(|r| r.get("TransactionalId").map(String::as_str) == Some("perf-txn"))
        .with_context(|| format!("perf-txn not listed: {listed:?}"))?;
    ensure!(
        row.get("TransactionState").map(String::as_str) == Some("CompleteCommit"),
        "{row:?}"
    );
    ensure!(
        row.get("Coordinator").map(String::as_str) == Some(server.node_id().to_string().as_str()),
        "{row:?}"
    );
    let producer_id = row.get("ProducerId").cloned().context("no ProducerId")?;

    let described = table_rows(
        &server.tool(
            "kafka-transactions",
            &["describe", "--transactional-id", "perf-txn"],
        )?,
        "CoordinatorId",
    )?;
    let description = described.first().context("no description")?;
    ensure!(
        description.get("ProducerId") == Some(&producer_id),
        "{description:?}"
    );
    ensure!(
        description.get("TransactionState").map(String::as_str) == Some("CompleteCommit"),
        "{description:?}"
    );

    let producers = table_rows(
        &server.tool(
            "kafka-transactions",
            &["describe-producers", "--topic", "txns", "--partition", "0"],
        )?,
        "ProducerId",
    )?;
    let producer = producers
        .iter()
        .find(|p| p.get("ProducerId") == Some(&producer_id))
        .with_context(|| format!("producer {producer_id} not shown: {producers:?}"))?;
    ensure!(
        producer
            .get("CurrentTransactionStartOffset")
            .map(String::as_str)
            == Some("None"),
        "no transaction is open: {producer:?}"
    );

    let committed = server.tool(
        "kafka-console-consumer",
        &[
            "--topic",
            "txns",
            "--from-beginning",
            "--isolation-level",
            "read_committed",
            "--max-messages",
            "2000",
            "--timeout-ms",
            "30000",
        ],
    )?;
    ensure!(
        committed.lines().len() >= 2000,
        "{} records read",
        committed.lines().len()
    );
    let latest = offsets(&server.tool("kafka-get-offsets", &["--topic", "txns"])?)?;
    let end = latest.values().sum::<i64>();
    ensure!(
        end > 2000,
        "the markers take offsets too: the log ends at {end}"
    );
    Ok(())
}
side_by_side!(transactions_listed_described_and_their_producers_shown);

/// The columns `kafka-transactions find-hanging` prints.
const HANGING_COLUMNS: [&str; 8] = [
    "Topic",
    "Partition",
    "ProducerId",
    "ProducerEpoch",
    "CoordinatorEpoch",
    "StartOffset",
    "LastTimestamp",
    "Duration(min)",
];

/// `kafka-transactions find-hanging --broker-id` over every partition of the broker, counting
/// every open transaction as old enough (`--max-transaction-timeout 0`): its table's rows.
fn hanging(server: &Server) -> Result<Vec<BTreeMap<String, String>>> {
    let out = server.tool(
        "kafka-transactions",
        &[
            "find-hanging",
            "--broker-id",
            &server.node_id().to_string(),
            "--max-transaction-timeout",
            "0",
        ],
    )?;
    let header: Vec<&str> = out
        .lines()
        .first()
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    ensure!(header == HANGING_COLUMNS, "{out}");
    table_rows(&out, "Topic")
}

/// The start offsets of the transactions `kafka-transactions describe-producers` shows open on
/// partition 0 of `topic`.
fn open_transaction_starts(server: &Server, topic: &str) -> Result<Vec<String>> {
    let producers = table_rows(
        &server.tool(
            "kafka-transactions",
            &["describe-producers", "--topic", topic, "--partition", "0"],
        )?,
        "ProducerId",
    )?;
    Ok(producers
        .iter()
        .filter_map(|p| p.get("CurrentTransactionStartOffset"))
        .filter(|start| start.as_str() != "None")
        .cloned()
        .collect())
}

/// A producer killed with its transaction open (and a long `transaction.timeout.ms`) leaves
/// it open: `kafka-transactions describe` shows it Ongoing on its partition, `find-hanging`
/// does not count it as hanging (its coordinator still knows the partition),
/// `describe-producers` shows where it starts, and `abort --start-offset` ends it, so a
/// `read_committed` consumer reads past it to what was committed after.
fn transactions_aborted_by_start_offset_and_hanging_ones_sought(server: &Server) -> Result<()> {
    use oxbow_e2e::transactions::{self, Isolation};
    server.tool(
        "kafka-topics",
        &[
            "--create",
            "--topic",
            "stranded",
            "--partitions",
            "1",
            "--replication-factor",
            "1",
        ],
    )?;
    let early = transactions::produce(server, "stranded", "early", "c", 2)?;
    let scratch = tempfile::tempdir()?;
    let mut crashed = transactions::start(
        server,
        scratch.path(),
        "crashed",
        "open",
        &["stranded", "crashed", "3", "600000"],
    )?;
    crashed.wait_until(
        "holding a transaction open",
        Duration::from_secs(60),
        |lines| lines.iter().any(|l| l == "HANGING"),
    )?;
    let start = crashed
        .lines("OPEN 0 ")
        .first()
        .cloned()
        .with_context(|| crashed.log_tail(40))?;
    crashed.kill()?;
    let late = transactions::produce(server, "stranded", "late", "c", 2)?;

    let described = table_rows(
        &server.tool(
            "kafka-transactions",
            &["describe", "--transactional-id", "crashed"],
        )?,
        "CoordinatorId",
    )?;
    let description = described.first().context("no description")?;
    ensure!(
        description.get("TransactionState").map(String::as_str) == Some("Ongoing")
            && description.get("TopicPartitions").map(String::as_str) == Some("stranded-0"),
        "{description:?}"
    );
    ensure!(
        open_transaction_starts(server, "stranded")? == [start.clone()],
        "describe-producers does not show the transaction open at {start}"
    );
    let found = hanging(server)?;
    ensure!(found.is_empty(), "{found:?}");
    let held = transactions::consume(server, "stranded", Isolation::ReadCommitted)?;
    ensure!(held.values() == early.committed, "{held:?}");
    ensure!(
        held.ends.get(&0).map(i64::to_string) == Some(start.clone()),
        "{held:?}"
    );

    let missing = server.run(
        "kafka-transactions",
        &[
            "abort",
            "--topic",
            "stranded",
            "--partition",
            "0",
            "--start-offset",
            "1",
        ],
        None,
    )?;
    ensure!(
        !missing.success
            && missing.stderr.contains(
                "Could not find any open transactions starting at offset 1 on partition stranded-0"
            ),
        "{missing}"
    );
    let aborted = server.tool(
        "kafka-transactions",
        &[
            "abort",
            "--topic",
            "stranded",
            "--partition",
            "0",
            "--start-offset",
            &start,
        ],
    )?;
    ensure!(aborted.lines().is_empty(), "{aborted}");
    ensure!(
        open_transaction_starts(server, "stranded")?.is_empty(),
        "still open after the abort"
    );
    let found = hanging(server)?;
    ensure!(found.is_empty(), "{found:?}");

    let released = transactions::consume(server, "stranded", Isolation::ReadCommitted)?;
    let mut committed = early.committed.clone();
    committed.extend(late.committed.iter().cloned());
    ensure!(released.values() == committed, "{released:?}");
    let everything = transactions::consume(server, "stranded", Isolation::ReadUncommitted)?;
    ensure!(
        released.ends == everything.ends,
        "{released:?} {everything:?}"
    );
    ensure!(
        everything
            .values()
            .iter()
            .filter(|v| v.starts_with("crashed-open-"))
            .count()
            == 3,
        "{everything:?}"
    );
    Ok(())
}
side_by_side!(transactions_aborted_by_start_offset_and_hanging_ones_sought);
