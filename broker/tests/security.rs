//! Listeners, TLS, SASL, SCRAM credentials and connection limits of the real `oxbow-broker`
//! binary: real clients (librdkafka over SASL_PLAINTEXT with PLAIN, rustls over SSL) and the
//! crate's own client for the admin APIs and for misbehaving connections.
//!
//! Certificates are made by each test (rcgen) in its temporary directory. SCRAM over SASL_SSL
//! with kcat and confluent-kafka is in `e2e/python/test_security.py` (the librdkafka built
//! here has no OpenSSL, which SCRAM needs).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, ApiVersionsRequest, ApiVersionsResponse, CreateAclsRequest,
    DescribeUserScramCredentialsRequest, MetadataRequest, MetadataResponse, ResponseHeader,
    SaslAuthenticateRequest, SaslHandshakeRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::ResponseError;
use oxbow_e2e::harness;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tempfile::TempDir;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

mod support;
use support::{connect_to, create_topic_ok, encode_body, make_pki, raw_frame, tls_connector};

const BROKER_BIN: &str = env!("CARGO_BIN_EXE_oxbow-broker");
/// Longest wait for one network answer.
const ANSWER: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// A broker with several listeners, started from a properties file
// ---------------------------------------------------------------------------------------------

/// One broker process with named listeners on free loopback ports.
struct SecureBroker {
    child: Option<Child>,
    addresses: BTreeMap<String, SocketAddr>,
    log: PathBuf,
    dir: TempDir,
}

impl SecureBroker {
    /// Starts a broker with `listeners` (name, protocol; the first is the inter-broker one),
    /// extra settings, and extra command-line arguments.
    fn start(listeners: &[(&str, &str)], settings: &[(&str, &str)], args: &[&str]) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("oxbow-security-")
            .tempdir()?;
        let mut addresses = BTreeMap::new();
        for (name, _) in listeners {
            addresses.insert(name.to_string(), harness::free_local_addr()?);
        }
        let listed = |f: &dyn Fn(&str, &SocketAddr) -> String| {
            listeners
                .iter()
                .map(|(name, _)| f(name, &addresses[*name]))
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut properties = String::new();
        let mut put = |k: &str, v: &str| {
            let _ = writeln!(properties, "{k}={v}");
        };
        put("node.id", "0");
        put("log.dirs", &dir.path().join("data").display().to_string());
        put("metrics.address", "");
        put("listeners", &listed(&|n, a| format!("{n}://{a}")));
        put(
            "listener.security.protocol.map",
            &listeners
                .iter()
                .map(|(n, p)| format!("{n}:{p}"))
                .collect::<Vec<_>>()
                .join(","),
        );
        put("inter.broker.listener.name", listeners[0].0);
        for (k, v) in settings {
            put(k, v);
        }
        let config = dir.path().join("server.properties");
        fs::write(&config, properties)?;
        let log = dir.path().join("broker.log");
        let out = fs::File::create(&log)?;
        let child = Command::new(BROKER_BIN)
            .arg("--config")
            .arg(&config)
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("OXBOW_ADD_SCRAM")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("spawning the broker")?;
        let mut broker = SecureBroker {
            child: Some(child),
            addresses,
            log,
            dir,
        };
        broker.wait_until_listening()?;
        Ok(broker)
    }

    fn wait_until_listening(&mut self) -> Result<()> {
        let deadline = Instant::now() + harness::START_TIMEOUT;
        for address in self.addresses.values() {
            loop {
                if let Some(status) = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok())
                    .flatten()
                {
                    bail!("broker exited with {status}\n{}", self.log_tail());
                }
                if std::net::TcpStream::connect_timeout(address, Duration::from_millis(200)).is_ok()
                {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("broker is not listening on {address}\n{}", self.log_tail());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    fn address(&self, listener: &str) -> String {
        self.addresses[listener].to_string()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "--- broker log ---\n{}",
            lines[lines.len().saturating_sub(60)..].join("\n")
        )
    }

    /// Adds the broker log to a failure.
    fn explain<T>(&self, outcome: Result<T>) -> Result<T> {
        outcome.map_err(|e| anyhow::anyhow!("{e:#}\n{}", self.log_tail()))
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SecureBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------------

/// The principal of the test client certificate, as Kafka's DEFAULT mapping writes it.
const ALICE: &str = "User:CN=alice,OU=eng,O=Example";

// ---------------------------------------------------------------------------------------------
// Requests over any stream (TCP or TLS)
// ---------------------------------------------------------------------------------------------

/// Sends a request and reads its response; `Ok(None)` when the broker closed the connection.
async fn exchange<R: Request, S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    request: &R,
    version: i16,
) -> Result<Option<R::Response>> {
    let body = encode_body(request, version)?;
    let frame = raw_frame(R::KEY, version, 7, R::header_version(version), &body)?;
    stream.write_all(&frame).await?;
    let mut size = [0u8; 4];
    match timeout(ANSWER, stream.read_exact(&mut size)).await? {
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e.into()),
    }
    let mut body = vec![0u8; usize::try_from(i32::from_be_bytes(size))?];
    timeout(ANSWER, stream.read_exact(&mut body)).await??;
    let mut body = Bytes::from(body);
    let header = ResponseHeader::decode(&mut body, R::Response::header_version(version))?;
    ensure!(
        header.correlation_id == 7,
        "correlation {}",
        header.correlation_id
    );
    Ok(Some(R::Response::decode(&mut body, version)?))
}

/// Whether the broker closes `stream` within `within` (reads EOF or a reset).
async fn closed_within<S: AsyncRead + Unpin>(stream: &mut S, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        timeout(within, stream.read(&mut byte)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

async fn api_versions_answered<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) -> Result<()> {
    let response: Option<ApiVersionsResponse> =
        exchange(stream, &ApiVersionsRequest::default(), 3).await?;
    let response = response.context("the broker closed the connection instead of answering")?;
    ensure!(response.error_code == 0, "ApiVersions failed: {response:?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// SASL with PLAIN through librdkafka
// ---------------------------------------------------------------------------------------------

fn sasl_config(bootstrap: &str, user: &str, password: &str) -> ClientConfig {
    let mut config = harness::client_config(bootstrap);
    config
        .set("security.protocol", "SASL_PLAINTEXT")
        .set("sasl.mechanism", "PLAIN")
        .set("sasl.username", user)
        .set("sasl.password", password);
    config
}

/// Fetches metadata as `config` and returns (broker id, host, port) of each broker.
fn metadata_brokers(config: &ClientConfig) -> Result<Vec<(i32, String, i32)>> {
    let consumer: BaseConsumer = config.clone().create()?;
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(10))?;
    Ok(metadata
        .brokers()
        .iter()
        .map(|b| (b.id(), b.host().to_string(), b.port()))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_over_sasl_plaintext_lets_the_right_password_in_and_refuses_a_wrong_one() -> Result<()>
{
    let broker = SecureBroker::start(
        &[
            ("PLAINTEXT", "PLAINTEXT"),
            ("SASL_PLAINTEXT", "SASL_PLAINTEXT"),
        ],
        &[("sasl.enabled.mechanisms", "PLAIN,SCRAM-SHA-256")],
        &[
            "--add-scram",
            "SCRAM-SHA-256=[name=admin,password=admin-secret]",
        ],
    )?;
    let outcome = async {
        let bootstrap = broker.address("SASL_PLAINTEXT");
        let mut producer_config = sasl_config(&bootstrap, "admin", "admin-secret");
        producer_config
            .set("acks", "all")
            .set("enable.idempotence", "false");
        let producer: FutureProducer = producer_config.create()?;
        for i in 0..10 {
            let payload = format!("secret-{i}");
            producer
                .send(
                    FutureRecord::to("secured").key("k").payload(&payload),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| anyhow::anyhow!("produce as admin failed: {e}"))?;
        }
        let mut consumer_config = sasl_config(&bootstrap, "admin", "admin-secret");
        consumer_config
            .set("group.id", "secured-readers")
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false");
        let consumer: rdkafka::consumer::StreamConsumer = consumer_config.create()?;
        consumer.subscribe(&["secured"])?;
        let mut read = Vec::new();
        while read.len() < 10 {
            let message = timeout(Duration::from_secs(30), consumer.recv())
                .await
                .context("no record within 30 s")??;
            read.push(
                rdkafka::Message::payload_view::<str>(&message)
                    .context("no payload")?
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?
                    .to_string(),
            );
        }
        ensure!(
            read[0] == "secret-0" && read[9] == "secret-9",
            "read {read:?}"
        );

        let wrong = metadata_brokers(&sasl_config(&bootstrap, "admin", "wrong-secret"));
        ensure!(
            wrong.is_err(),
            "a wrong password fetched metadata: {wrong:?}"
        );
        let unknown = metadata_brokers(&sasl_config(&bootstrap, "nobody", "admin-secret"));
        ensure!(
            unknown.is_err(),
            "an unknown user fetched metadata: {unknown:?}"
        );
        ensure!(
            broker
                .log_text()
                .contains("PLAIN: invalid credentials for user admin"),
            "the broker did not log the refused login"
        );
        // No credentials at all: librdkafka without SASL on a SASL listener gets nowhere.
        let plain = metadata_brokers(&harness::client_config(&bootstrap));
        ensure!(plain.is_err(), "an unauthenticated client fetched metadata");
        Ok(())
    }
    .await;
    broker.explain(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_advertises_the_listener_the_client_connected_on() -> Result<()> {
    let broker = SecureBroker::start(
        &[("INTERNAL", "PLAINTEXT"), ("EXTERNAL", "SASL_PLAINTEXT")],
        &[("sasl.enabled.mechanisms", "PLAIN")],
        &[
            "--add-scram",
            "SCRAM-SHA-512=[name=app,password=app-secret]",
        ],
    )?;
    let outcome = async {
        let internal = broker.addresses["INTERNAL"];
        let external = broker.addresses["EXTERNAL"];
        let seen = metadata_brokers(&harness::client_config(&internal.to_string()))?;
        ensure!(
            seen == [(0, internal.ip().to_string(), i32::from(internal.port()))],
            "internal clients were given {seen:?}"
        );
        let seen = metadata_brokers(&sasl_config(&external.to_string(), "app", "app-secret"))?;
        ensure!(
            seen == [(0, external.ip().to_string(), i32::from(external.port()))],
            "external clients were given {seen:?}, not the external listener {external}"
        );
        Ok(())
    }
    .await;
    broker.explain(outcome)
}

#[tokio::test]
async fn requests_before_sasl_authentication_close_the_connection() -> Result<()> {
    let broker = SecureBroker::start(
        &[
            ("PLAINTEXT", "PLAINTEXT"),
            ("SASL_PLAINTEXT", "SASL_PLAINTEXT"),
        ],
        &[("sasl.enabled.mechanisms", "SCRAM-SHA-512")],
        &[],
    )?;
    let outcome = async {
        let address = broker.address("SASL_PLAINTEXT");
        // ApiVersions is allowed, then Metadata is not.
        let mut stream = TcpStream::connect(&address).await?;
        api_versions_answered(&mut stream).await?;
        let metadata = exchange(&mut stream, &MetadataRequest::default(), 12).await?;
        ensure!(
            metadata.is_none(),
            "Metadata answered before authentication"
        );
        // A mechanism that is not enabled is refused with the enabled list, then closed.
        let mut stream = TcpStream::connect(&address).await?;
        let request =
            SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN"));
        let response = exchange(&mut stream, &request, 1)
            .await?
            .context("no SaslHandshake answer")?;
        ensure!(
            response.error_code == ResponseError::UnsupportedSaslMechanism.code(),
            "{response:?}"
        );
        let offered: Vec<&str> = response.mechanisms.iter().map(|m| m.as_str()).collect();
        ensure!(offered == ["SCRAM-SHA-512"], "offered {offered:?}");
        ensure!(
            closed_within(&mut stream, ANSWER).await,
            "the connection stayed open after a refused mechanism"
        );
        // The PLAINTEXT listener is not affected.
        let mut stream = TcpStream::connect(broker.address("PLAINTEXT")).await?;
        let metadata = exchange(&mut stream, &MetadataRequest::default(), 12).await?;
        ensure!(metadata.is_some(), "PLAINTEXT Metadata was refused");
        Ok(())
    }
    .await;
    broker.explain(outcome)
}

/// A failed SASL authentication is answered only after
/// `connection.failed.authentication.delay.ms`, so a password guesser waits for every answer;
/// the right password is still let in.
#[tokio::test]
async fn a_failed_authentication_is_answered_after_the_configured_delay() -> Result<()> {
    const DELAY: Duration = Duration::from_millis(700);
    let broker = SecureBroker::start(
        &[("SASL_PLAINTEXT", "SASL_PLAINTEXT")],
        &[
            ("sasl.enabled.mechanisms", "PLAIN"),
            (
                "connection.failed.authentication.delay.ms",
                &DELAY.as_millis().to_string(),
            ),
        ],
        &[
            "--add-scram",
            "SCRAM-SHA-256=[name=admin,password=admin-secret]",
        ],
    )?;
    let outcome = async {
        let address = broker.address("SASL_PLAINTEXT");
        let authenticate = |password: &'static str| {
            let address = address.clone();
            async move {
                let mut stream = TcpStream::connect(&address).await?;
                let handshake = SaslHandshakeRequest::default()
                    .with_mechanism(StrBytes::from_static_str("PLAIN"));
                let answer = exchange(&mut stream, &handshake, 1)
                    .await?
                    .context("no SaslHandshake answer")?;
                ensure!(answer.error_code == 0, "{answer:?}");
                let token = format!("\0admin\0{password}");
                let request = SaslAuthenticateRequest::default()
                    .with_auth_bytes(Bytes::from(token.into_bytes()));
                let started = Instant::now();
                let answer = exchange(&mut stream, &request, 2)
                    .await?
                    .context("no SaslAuthenticate answer")?;
                anyhow::Ok((answer.error_code, started.elapsed()))
            }
        };
        let (code, took) = authenticate("guess").await?;
        ensure!(
            code == ResponseError::SaslAuthenticationFailed.code(),
            "a wrong password was answered {code}"
        );
        ensure!(
            took >= DELAY,
            "the failure was answered after {took:?}, before the {DELAY:?} delay"
        );
        let (code, _) = authenticate("admin-secret").await?;
        ensure!(code == 0, "the right password was answered {code}");
        Ok(())
    }
    .await;
    broker.explain(outcome)
}

// ---------------------------------------------------------------------------------------------
// SCRAM credentials through the admin APIs
// ---------------------------------------------------------------------------------------------

fn salted_password(password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
    let mut out = vec![0u8; 64];
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA512,
        std::num::NonZeroU32::new(iterations).expect("iterations"),
        salt,
        password.as_bytes(),
        &mut out,
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_credentials_are_altered_described_deleted_and_checked_at_login() -> Result<()> {
    let broker = SecureBroker::start(
        &[
            ("PLAINTEXT", "PLAINTEXT"),
            ("SASL_PLAINTEXT", "SASL_PLAINTEXT"),
        ],
        &[("sasl.enabled.mechanisms", "PLAIN")],
        &[],
    )?;
    let outcome = async {
        let mut admin = connect_to(&broker.address("PLAINTEXT")).await?;
        let sasl = broker.address("SASL_PLAINTEXT");
        ensure!(
            metadata_brokers(&sasl_config(&sasl, "alice", "alice-secret")).is_err(),
            "alice logged in before she had a credential"
        );
        let salt = b"alice-salt".to_vec();
        let upsert = ScramCredentialUpsertion::default()
            .with_name(StrBytes::from_static_str("alice"))
            .with_mechanism(2)
            .with_iterations(4096)
            .with_salt(Bytes::from(salt.clone()))
            .with_salted_password(Bytes::from(salted_password("alice-secret", &salt, 4096)));
        let too_few = upsert
            .clone()
            .with_name(StrBytes::from_static_str("bob"))
            .with_iterations(10);
        let request =
            AlterUserScramCredentialsRequest::default().with_upsertions(vec![upsert, too_few]);
        let response = admin.send(&request, 0).await?;
        let codes: BTreeMap<String, i16> = response
            .results
            .iter()
            .map(|r| (r.user.to_string(), r.error_code))
            .collect();
        ensure!(
            codes
                == BTreeMap::from([
                    ("alice".to_string(), 0),
                    (
                        "bob".to_string(),
                        ResponseError::UnacceptableCredential.code()
                    )
                ]),
            "{response:?}"
        );

        let describe = DescribeUserScramCredentialsRequest::default().with_users(Some(vec![
            UserName::default().with_name(StrBytes::from_static_str("alice")),
            UserName::default().with_name(StrBytes::from_static_str("bob")),
        ]));
        let described = admin.send(&describe, 0).await?;
        let alice = described
            .results
            .iter()
            .find(|r| r.user.as_str() == "alice")
            .context("alice not described")?;
        ensure!(
            alice.error_code == 0
                && alice.credential_infos.len() == 1
                && alice.credential_infos[0].mechanism == 2
                && alice.credential_infos[0].iterations == 4096,
            "{alice:?}"
        );
        let bob = described
            .results
            .iter()
            .find(|r| r.user.as_str() == "bob")
            .context("bob not described")?;
        ensure!(
            bob.error_code == ResponseError::ResourceNotFound.code(),
            "{bob:?}"
        );

        // PLAIN checks the password against the SCRAM credential.
        metadata_brokers(&sasl_config(&sasl, "alice", "alice-secret"))
            .context("alice could not log in with her new credential")?;
        ensure!(
            metadata_brokers(&sasl_config(&sasl, "alice", "alice-wrong")).is_err(),
            "a wrong password was accepted"
        );

        let delete = AlterUserScramCredentialsRequest::default().with_deletions(vec![
            ScramCredentialDeletion::default()
                .with_name(StrBytes::from_static_str("alice"))
                .with_mechanism(2),
        ]);
        let deleted = admin.send(&delete, 0).await?;
        ensure!(deleted.results[0].error_code == 0, "{deleted:?}");
        let again = admin.send(&delete, 0).await?;
        ensure!(
            again.results[0].error_code == ResponseError::ResourceNotFound.code(),
            "{again:?}"
        );
        ensure!(
            metadata_brokers(&sasl_config(&sasl, "alice", "alice-secret")).is_err(),
            "alice logged in after her credential was deleted"
        );
        // The metadata on disk holds no password.
        let mut stored = String::new();
        for entry in walk(&broker.dir().join("data"))? {
            stored.push_str(&String::from_utf8_lossy(&fs::read(entry)?));
        }
        ensure!(
            !stored.contains("alice-secret"),
            "a password reached the disk"
        );
        Ok(())
    }
    .await;
    broker.explain(outcome)
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(walk(&path)?);
        } else {
            files.push(path);
        }
    }
    Ok(files)
}

// ---------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_ssl_listener_serves_tls_clients_and_requires_their_certificates() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let pki = make_pki(scratch.path())?;
    let keystore = pki.broker.display().to_string();
    let truststore = pki.ca.display().to_string();
    let broker = SecureBroker::start(
        &[("PLAINTEXT", "PLAINTEXT"), ("SSL", "SSL")],
        &[
            ("ssl.keystore.type", "PEM"),
            ("ssl.keystore.location", &keystore),
            ("ssl.truststore.location", &truststore),
            ("ssl.client.auth", "required"),
        ],
        &[],
    )?;
    let outcome = async {
        let address = broker.address("SSL");
        let name = rustls::pki_types::ServerName::try_from("localhost")?;
        let tcp = TcpStream::connect(&address).await?;
        let mut tls = timeout(
            ANSWER,
            tls_connector(&pki, true)?.connect(name.clone(), tcp),
        )
        .await??;
        api_versions_answered(&mut tls).await?;
        let metadata = exchange(&mut tls, &MetadataRequest::default(), 12)
            .await?
            .context("no Metadata over TLS")?;
        let port = i32::from(broker.addresses["SSL"].port());
        ensure!(
            metadata.brokers.first().map(|b| b.port) == Some(port),
            "TLS clients were given {:?}, not the SSL listener",
            metadata.brokers
        );

        // Without a client certificate the handshake (TLS 1.3: the first read) fails.
        let tcp = TcpStream::connect(&address).await?;
        let refused = match timeout(ANSWER, tls_connector(&pki, false)?.connect(name, tcp)).await? {
            Err(_) => true,
            Ok(mut tls) => match exchange(&mut tls, &ApiVersionsRequest::default(), 3).await {
                Err(_) | Ok(None) => true,
                Ok(Some(_)) => false,
            },
        };
        ensure!(refused, "a client without a certificate was served");

        // Plain TCP on the TLS port gets nothing back.
        let mut plain = TcpStream::connect(&address).await?;
        let answer = exchange(&mut plain, &ApiVersionsRequest::default(), 3).await;
        ensure!(
            !matches!(answer, Ok(Some(_))),
            "plain Kafka on the SSL port was answered"
        );
        Ok(())
    }
    .await;
    broker.explain(outcome)
}

/// The error code of `topic` in a Metadata answer to a TLS client that names it.
async fn topic_code_over_tls<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    topic: &str,
) -> Result<i16> {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![
            kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_string(topic.to_string())))),
        ]))
        .with_allow_auto_topic_creation(false);
    let response: Option<MetadataResponse> = exchange(stream, &request, 12).await?;
    let response = response.context("the broker closed the TLS connection")?;
    response
        .topics
        .first()
        .map(|t| t.error_code)
        .context("no topic in a Metadata answer for one named topic")
}

#[tokio::test]
async fn a_client_certificate_is_the_principal_acls_are_checked_against() -> Result<()> {
    certificate_principal_meets_acls("DEFAULT", ALICE).await
}

/// `ssl.principal.mapping.rules` turns the certificate's subject into the principal the ACLs
/// name (here `alice@eng`, not the whole subject).
#[tokio::test]
async fn ssl_principal_mapping_rules_name_the_principal_acls_are_checked_against() -> Result<()> {
    certificate_principal_meets_acls(
        "RULE:^CN=([^,]*),OU=([^,]*),O=Nobody$/nobody/, RULE:^CN=([^,]*),OU=([^,]*),O=.*$/$1@$2/L",
        "User:alice@eng",
    )
    .await
}

/// A client certificate no rule of `ssl.principal.mapping.rules` maps is refused: the
/// connection closes before any request is answered.
#[tokio::test]
async fn a_certificate_no_mapping_rule_applies_to_is_refused() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let pki = make_pki(scratch.path())?;
    let keystore = pki.broker.display().to_string();
    let truststore = pki.ca.display().to_string();
    let broker = SecureBroker::start(
        &[("SSL", "SSL")],
        &[
            ("ssl.keystore.location", &keystore),
            ("ssl.truststore.location", &truststore),
            ("ssl.client.auth", "required"),
            ("ssl.principal.mapping.rules", "RULE:^CN=bob,.*$/bob/"),
        ],
        &[],
    )?;
    let outcome = async {
        let tcp = TcpStream::connect(&broker.address("SSL")).await?;
        let name = rustls::pki_types::ServerName::try_from("localhost")?;
        let mut alice = timeout(ANSWER, tls_connector(&pki, true)?.connect(name, tcp)).await??;
        let answer: Result<Option<ApiVersionsResponse>> =
            exchange(&mut alice, &ApiVersionsRequest::default(), 3).await;
        ensure!(
            !matches!(answer, Ok(Some(_))),
            "a certificate no rule maps was answered: {answer:?}"
        );
        Ok(())
    }
    .await;
    broker.explain(outcome)
}

/// A client certificate's principal (as `rules` map it) is denied a topic until an ACL for
/// `principal` allows it; a client without a certificate is User:ANONYMOUS.
async fn certificate_principal_meets_acls(rules: &str, principal: &str) -> Result<()> {
    use kafka_protocol::messages::create_acls_request::AclCreation;
    let scratch = tempfile::tempdir()?;
    let pki = make_pki(scratch.path())?;
    let keystore = pki.broker.display().to_string();
    let truststore = pki.ca.display().to_string();
    // PLAINTEXT clients are User:ANONYMOUS, the super user that creates the topic and the ACL.
    let broker = SecureBroker::start(
        &[("PLAINTEXT", "PLAINTEXT"), ("SSL", "SSL")],
        &[
            ("ssl.keystore.type", "PEM"),
            ("ssl.keystore.location", &keystore),
            ("ssl.truststore.location", &truststore),
            ("ssl.client.auth", "requested"),
            ("ssl.principal.mapping.rules", rules),
            (
                "authorizer.class.name",
                "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            ),
            ("super.users", "User:ANONYMOUS"),
        ],
        &[],
    )?;
    let outcome = async {
        let topic = "alice-only";
        let mut admin = connect_to(&broker.address("PLAINTEXT")).await?;
        create_topic_ok(&mut admin, topic, 1, &[]).await?;

        let address = broker.address("SSL");
        let name = rustls::pki_types::ServerName::try_from("localhost")?;
        let pki = &pki;
        let connect = |with_cert: bool| {
            let name = name.clone();
            let address = address.clone();
            async move {
                let tcp = TcpStream::connect(&address).await?;
                let tls =
                    timeout(ANSWER, tls_connector(pki, with_cert)?.connect(name, tcp)).await??;
                anyhow::Ok(tls)
            }
        };
        let mut alice = connect(true).await?;
        let denied = ResponseError::TopicAuthorizationFailed.code();
        let code = topic_code_over_tls(&mut alice, topic).await?;
        ensure!(
            code == denied,
            "alice, without an ACL, was answered {code} for {topic}, not {denied}"
        );
        // ssl.client.auth=requested: a client without a certificate is User:ANONYMOUS, here
        // the super user.
        let mut anonymous = connect(false).await?;
        let code = topic_code_over_tls(&mut anonymous, topic).await?;
        ensure!(
            code == 0,
            "a client without a certificate was answered {code}"
        );

        let acl = AclCreation::default()
            .with_resource_type(2) // TOPIC
            .with_resource_name(StrBytes::from_static_str(topic))
            .with_resource_pattern_type(3) // LITERAL
            .with_principal(StrBytes::from_string(principal.to_string()))
            .with_host(StrBytes::from_static_str("*"))
            .with_operation(8) // DESCRIBE
            .with_permission_type(3); // ALLOW
        let response = timeout(
            ANSWER,
            admin.send(&CreateAclsRequest::default().with_creations(vec![acl]), 3),
        )
        .await??;
        let code = response.results.first().map(|r| r.error_code);
        ensure!(code == Some(0), "CreateAcls answered {code:?}");

        let code = topic_code_over_tls(&mut alice, topic).await?;
        ensure!(
            code == 0,
            "alice, with an ACL for {principal}, was answered {code} for {topic}"
        );
        Ok(())
    }
    .await;
    broker.explain(outcome)
}

// ---------------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------------

/// VmRSS and VmSize of a process, in KiB.
fn memory_kib(pid: u32) -> Result<(u64, u64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmSize:")?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_announcing_huge_requests_leave_the_broker_responsive_and_small(
) -> Result<()> {
    const CONNECTIONS: usize = 500;
    let broker = SecureBroker::start(&[("PLAINTEXT", "PLAINTEXT")], &[], &[])?;
    let outcome = async {
        let address = broker.address("PLAINTEXT");
        let producer = harness::future_producer(&address)?;
        producer
            .send(
                FutureRecord::to("warm").key("k").payload("before"),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| anyhow::anyhow!("{e}"))?;
        let (rss_before, size_before) = memory_kib(broker.pid())?;

        // Each announces just under socket.request.max.bytes (100 MiB) and sends a little.
        let mut held = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            let mut stream = TcpStream::connect(&address).await?;
            let mut partial = BytesMut::new();
            partial.put_i32(100 * 1024 * 1024 - 1);
            partial.put_slice(&[0x5a; 1000]);
            stream.write_all(&partial).await?;
            held.push(stream);
        }
        // Let the broker read them all.
        tokio::time::sleep(Duration::from_secs(2)).await;

        let started = Instant::now();
        let record = producer
            .send(
                FutureRecord::to("warm").key("k").payload("during"),
                Duration::from_secs(30),
            )
            .await;
        ensure!(
            record.is_ok(),
            "produce failed while the partial frames were held: {record:?}"
        );
        let mut conn = connect_to(&address).await?;
        let versions = conn.send(&ApiVersionsRequest::default(), 3).await?;
        ensure!(versions.error_code == 0, "{versions:?}");
        let answered_in = started.elapsed();

        let (rss_after, size_after) = memory_kib(broker.pid())?;
        let rss_growth = rss_after.saturating_sub(rss_before);
        let size_growth = size_after.saturating_sub(size_before);
        eprintln!(
            "{CONNECTIONS} partial 100 MiB frames: RSS {rss_before} -> {rss_after} KiB, \
             VmSize {size_before} -> {size_after} KiB, produce+ApiVersions in {answered_in:?}"
        );
        // Reserving the announced size would take 500 x 100 MiB = 50 GiB of address space.
        ensure!(
            rss_growth < 64 * 1024,
            "RSS grew by {rss_growth} KiB for {CONNECTIONS} partial frames"
        );
        ensure!(
            size_growth < 1024 * 1024,
            "address space grew by {size_growth} KiB for {CONNECTIONS} partial frames"
        );
        for stream in &mut held {
            ensure!(
                !closed_within(stream, Duration::from_millis(1)).await,
                "a partial frame's connection was closed early"
            );
        }
        Ok(())
    }
    .await;
    broker.explain(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_large_requests_on_many_connections_hold_no_more_than_the_request_pool(
) -> Result<()> {
    const CONNECTIONS: usize = 24;
    const REQUEST: usize = 4 * 1024 * 1024;
    const POOL: usize = 8 * 1024 * 1024;
    let broker = SecureBroker::start(
        &[("PLAINTEXT", "PLAINTEXT")],
        &[
            ("socket.request.max.bytes", &REQUEST.to_string()),
            ("queued.max.request.bytes", &POOL.to_string()),
        ],
        &[],
    )?;
    let outcome = async {
        let address = broker.address("PLAINTEXT");
        let mut warm = TcpStream::connect(&address).await?;
        api_versions_answered(&mut warm).await?;
        let (rss_before, _) = memory_kib(broker.pid())?;

        // Each connection sends a whole 4 MiB request but its last byte, so a broker reading
        // them all would hold every one. The bytes are no API (key 0x5a5a): once complete, the
        // request is refused and the connection closed.
        let mut frame = BytesMut::with_capacity(4 + REQUEST);
        frame.put_i32(i32::try_from(REQUEST)?);
        frame.put_bytes(0x5a, REQUEST);
        let frame = frame.freeze();
        let mut senders = Vec::with_capacity(CONNECTIONS);
        let mut clients = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            let mut stream = TcpStream::connect(&address).await?;
            let frame = frame.clone();
            let (go, last_byte) = tokio::sync::oneshot::channel::<()>();
            senders.push(go);
            clients.push(tokio::spawn(async move {
                stream.write_all(&frame[..frame.len() - 1]).await?;
                last_byte.await?;
                stream.write_all(&frame[frame.len() - 1..]).await?;
                anyhow::Ok(closed_within(&mut stream, Duration::from_secs(30)).await)
            }));
        }
        // Let the broker read what it will, and take the highest RSS seen meanwhile.
        let mut rss_peak = 0;
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            rss_peak = rss_peak.max(memory_kib(broker.pid())?.0);
        }

        // Small requests are not counted against the pool: a new client is answered.
        let mut fresh = TcpStream::connect(&address).await?;
        api_versions_answered(&mut fresh).await?;
        let growth = rss_peak.saturating_sub(rss_before);
        eprintln!(
            "{CONNECTIONS} complete {REQUEST}-byte requests, pool {POOL}: RSS {rss_before} -> \
             peak {rss_peak} KiB (+{growth} KiB)"
        );
        // Without the pool the broker holds 24 x 4 MiB = 96 MiB; with it about 8 MiB, plus
        // what the allocator keeps of the buffers' growth.
        ensure!(
            growth < 40 * 1024,
            "RSS grew by {growth} KiB for {CONNECTIONS} requests of {REQUEST} bytes \
             with queued.max.request.bytes={POOL}"
        );

        // Completing the requests frees their memory, and the connections that waited for it
        // are read in turn: every one ends refused and closed.
        for go in senders {
            let _ = go.send(());
        }
        for client in clients {
            let closed = timeout(Duration::from_secs(60), client).await???;
            ensure!(closed, "a complete request's connection was not closed");
        }
        api_versions_answered(&mut warm).await?;
        ensure!(
            broker.log_text().contains("unknown API key 23130"),
            "the refused requests were not logged"
        );
        Ok(())
    }
    .await;
    broker.explain(outcome)
}

#[tokio::test]
async fn connections_over_the_per_address_limit_and_idle_ones_are_closed() -> Result<()> {
    let broker = SecureBroker::start(
        &[("PLAINTEXT", "PLAINTEXT")],
        &[
            ("max.connections.per.ip", "3"),
            ("connections.max.idle.ms", "1000"),
        ],
        &[],
    )?;
    let outcome = async {
        let address = broker.address("PLAINTEXT");
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut stream = TcpStream::connect(&address).await?;
            api_versions_answered(&mut stream).await?;
            held.push(stream);
        }
        let mut fourth = TcpStream::connect(&address).await?;
        ensure!(
            closed_within(&mut fourth, Duration::from_secs(2)).await,
            "a fourth connection from 127.0.0.1 was kept"
        );
        ensure!(
            broker.log_text().contains("max.connections.per.ip=3"),
            "the refusal was not logged"
        );

        // Idle for longer than connections.max.idle.ms: closed, with or without a partial
        // request; their places are free again afterwards.
        let mut partial = BytesMut::new();
        partial.put_i32(1000);
        partial.put_slice(&[1, 2, 3]);
        held[0].write_all(&partial).await?;
        let started = Instant::now();
        for stream in &mut held {
            ensure!(
                closed_within(stream, Duration::from_secs(5)).await,
                "an idle connection stayed open"
            );
        }
        ensure!(
            started.elapsed() >= Duration::from_millis(500),
            "closed after only {:?}",
            started.elapsed()
        );
        let mut again = TcpStream::connect(&address).await?;
        api_versions_answered(&mut again).await?;
        Ok(())
    }
    .await;
    broker.explain(outcome)
}
