//! Certificates the operator manages, on a real Kubernetes control plane with real brokers in
//! their pods: `examples/kafkacluster-mtls.yaml` (a mutual-TLS listener with no Secret of the
//! user's) and `examples/kafkauser-tls.yaml` (a TLS KafkaUser) as they are. The brokers serve
//! certificates of the cluster CA for the names clients use; the user's certificate of the
//! clients CA authenticates it as `User:CN=billing`, held to its ACLs, from inside and from
//! outside (load balancers, node ports, and Ingresses whose controller passes TLS through by
//! server name); a client without a
//! certificate, or with one the clients CA did not sign, is refused. Renewing the cluster CA
//! rolls the brokers onto new certificates while a producer that read the CA certificate
//! before the renewal goes on without a single failed delivery.
//!
//! Runs in a sandbox of its own, as `operator/tests/kubernetes.rs` describes. Needs root, and
//! `cargo build --workspace --bins` first.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context as _};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use oxbow_e2e::kube::env::{confluent_client, repository, runtime, sandboxed, EnvOptions, KubeEnv};
use serde_json::{json, Value};

/// A confluent-kafka client run as `confluent_client(CLIENT, <action>, <config>, <args..>)` (after the shared preamble). It
/// prints one JSON object: what the action found, and every error librdkafka reported on the
/// way (`errors`).
/// - `describe <timeout>`: the brokers' advertised `host:port` (`ok` says whether the cluster
///   answered);
/// - `produce <topic> <count>`: creates the topic (3 partitions, 3 replicas) unless it exists,
///   produces `count` records with acks=all: how many were delivered, the first failures;
/// - `run <topic> <stop file> <max seconds>`: produces numbered records with acks=all, about
///   200 a second, until the stop file exists: how many were sent, delivered and failed;
/// - `consume <topic> <count>`: reads every partition from the beginning until `count`
///   distinct values or 60 s;
/// - `handshake <host:port> <cert> <key>`: a TLS connection with Python's own TLS, presenting
///   the certificate and key, that then waits for the broker: `accepted` when the broker keeps
///   it open (it waits for a request), else the TLS error (the broker's alert);
/// - `served <host:port>..`: the SHA-256 of the certificate each broker serves, each handshake
///   verifying it (and its host name) against the client's `ssl.ca.location` with Python's
///   own TLS, presenting the client's certificate.
const CLIENT: &str = r#"
if action == 'handshake':
    context = ssl.create_default_context(cafile=config['ssl.ca.location'])
    context.load_cert_chain(sys.argv[4], sys.argv[5])
    host, port = sys.argv[3].rsplit(':', 1)
    try:
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                tls.recv(1)
                finish({'result': 'closed without an alert'})
    except socket.timeout:
        finish({'result': 'accepted'})
    except (ssl.SSLError, OSError) as e:
        finish({'result': str(e)})
if action == 'served':
    context = ssl.create_default_context(cafile=config['ssl.ca.location'])
    context.load_cert_chain(config['ssl.certificate.location'], config['ssl.key.location'])
    served = {}
    for address in sys.argv[3:]:
        host, port = address.rsplit(':', 1)
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                served[address] = hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()
    finish({'served': served})
admin = AdminClient(config)
if action == 'describe':
    try:
        md = admin.list_topics(timeout=float(sys.argv[3]))
    except KafkaException as e:
        admin.poll(1)
        finish({'ok': False, 'error': str(e)})
    finish({'ok': True, 'hosts': sorted('%s:%d' % (b.host, b.port) for b in md.brokers.values())})
topic = sys.argv[3]
if action in ('produce', 'run'):
    try:
        admin.create_topics([NewTopic(topic, 3, 3)], request_timeout=30)[topic].result()
    except KafkaException as e:
        errors.append('create: %s' % e)
    delivered, failed = [], []
    def report(err, msg):
        (failed.append(str(err)) if err else delivered.append(1))
    producer = Producer(dict(config, acks='all', **{'enable.idempotence': True,
                                                    'message.timeout.ms': 120000}))
    sent = 0
    if action == 'produce':
        for i in range(int(sys.argv[4])):
            producer.produce(topic, key=str(i), value='record-%d' % i, on_delivery=report)
            sent += 1
    else:
        stop, end = sys.argv[4], time.time() + float(sys.argv[5])
        while not os.path.exists(stop) and time.time() < end:
            for _ in range(20):
                producer.produce(topic, key=str(sent), value='record-%d' % sent,
                                 on_delivery=report)
                sent += 1
            producer.poll(0)
            time.sleep(0.1)
    left = producer.flush(120)
    finish({'sent': sent, 'delivered': len(delivered), 'failed': failed[:3],
            'failures': len(failed), 'unflushed': left})
count = int(sys.argv[4])
consumer = Consumer(dict(config, **{'group.id': 'billing', 'enable.auto.commit': False}))
partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
seen = set()
end = time.time() + 60
while len(seen) < count and time.time() < end:
    m = consumer.poll(1)
    if m is not None and m.error() is None:
        seen.add(m.value().decode())
consumer.close()
finish({'consumed': len(seen)})
"#;

fn client(action: &str, config: &Value, args: &[&str]) -> anyhow::Result<Value> {
    confluent_client(CLIENT, action, config, args)
}

const BOOTSTRAP: &str = "mtls-bootstrap.default.svc:9094";

/// The brokers' addresses on the TLS listener, as they advertise them.
fn brokers() -> Vec<String> {
    (0..3)
        .map(|i| format!("mtls-{i}.mtls-brokers.default.svc.cluster.local:9094"))
        .collect()
}

/// The example cluster with three more TLS listeners, `EXTERNAL` on port 9095 of type
/// `loadbalancer`, `NODES` on port 9096 of type `nodeport` and `ROUTED` on port 9097 of type
/// `ingress` (TLS passed through by the ingress controller): the brokers' certificates then
/// name the load balancers' addresses, the nodes' and the Ingresses' hosts.
fn with_external_listener(example: &str) -> anyhow::Result<String> {
    let mut cluster: serde_yaml::Value = serde_yaml::from_str(example)?;
    let listeners = cluster["spec"]["listeners"]["additional"]
        .as_sequence_mut()
        .context("the example's listeners")?;
    listeners.push(serde_yaml::from_str(
        "{name: EXTERNAL, port: 9095, type: loadbalancer, tls: {clientAuth: required}}",
    )?);
    listeners.push(serde_yaml::from_str(
        "{name: NODES, port: 9096, type: nodeport, tls: {clientAuth: required}}",
    )?);
    listeners.push(serde_yaml::from_str(
        "{name: ROUTED, port: 9097, type: ingress, tls: {clientAuth: required}, configuration: {class: nginx, bootstrap: {host: bootstrap.mtls.example.test}, hostTemplate: 'broker-{nodeId}.mtls.example.test'}}",
    )?);
    Ok(serde_yaml::to_string(&cluster)?)
}

/// The bytes of key `key` of Secret `secret`.
async fn secret_data(env: &KubeEnv, secret: &str, key: &str) -> anyhow::Result<Vec<u8>> {
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), "default");
    secrets
        .get(secret)
        .await?
        .data
        .and_then(|data| data.get(key).map(|value| value.0.clone()))
        .filter(|value| !value.is_empty())
        .with_context(|| format!("no {key} in Secret {secret}"))
}

/// Writes key `key` of Secret `secret` to `dir/<file>` and returns the path.
fn secret_file(
    env: &KubeEnv,
    secret: &str,
    key: &str,
    dir: &Path,
    file: &str,
) -> anyhow::Result<String> {
    let text = env.kubectl(&[
        "-n",
        "default",
        "get",
        "secret",
        secret,
        "-o",
        &format!("go-template={{{{index .data \"{key}\" | base64decode}}}}"),
    ])?;
    ensure!(
        text.contains("-----BEGIN"),
        "no PEM in {secret}/{key}: {text}"
    );
    let path = dir.join(file);
    std::fs::write(&path, text)?;
    Ok(path.display().to_string())
}

fn tls_client(ca: &str, cert: Option<(&str, &str)>) -> Value {
    let mut config = json!({
        "bootstrap.servers": BOOTSTRAP,
        "security.protocol": "SSL",
        "ssl.ca.location": ca,
    });
    if let Some((cert, key)) = cert {
        config["ssl.certificate.location"] = cert.into();
        config["ssl.key.location"] = key.into();
    }
    config
}

/// The `host:port` of each broker a `describe` found.
fn hosts(described: &Value) -> anyhow::Result<Vec<String>> {
    Ok(described["hosts"]
        .as_array()
        .with_context(|| format!("hosts: {described}"))?
        .iter()
        .filter_map(|h| h.as_str().map(str::to_string))
        .collect())
}

/// Each of `addresses` completes a handshake whose certificate verifies against its address.
fn served_by_each(config: &Value, addresses: &[String]) -> anyhow::Result<()> {
    let served = client(
        "served",
        config,
        &addresses.iter().map(String::as_str).collect::<Vec<_>>(),
    )?;
    ensure!(
        served["served"].as_object().map(|s| s.len()) == Some(addresses.len()),
        "every address served a certificate that names it: {served}"
    );
    Ok(())
}

/// Whether any error or log line of a client's outcome contains `text`.
fn reported(outcome: &Value, text: &str) -> bool {
    outcome["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .chain(outcome["log"].as_str().unwrap_or_default().lines())
        .chain(
            outcome["failed"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str),
        )
        .any(|line| line.contains(text))
}

/// The certificate generation each broker pod was started with.
fn pod_generations(env: &KubeEnv) -> anyhow::Result<Vec<String>> {
    (0..3)
        .map(|i| {
            env.jsonpath(
                "default",
                &format!("pod/mtls-{i}"),
                "{.metadata.annotations.oxbow\\.dev/certificates-generation}",
            )
        })
        .collect()
}

#[test]
fn operator_certificates_authenticate_tls_users_and_a_ca_renewal_rolls_the_brokers_under_a_running_producer(
) {
    sandboxed(
        "operator_certificates_authenticate_tls_users_and_a_ca_renewal_rolls_the_brokers_under_a_running_producer",
        || {
            runtime().block_on(async {
                let env = KubeEnv::start(EnvOptions::default()).await?;
                let dir = env.dir.path().join("client");
                std::fs::create_dir_all(&dir)?;
                let examples = repository().join("examples");
                let cluster = with_external_listener(&std::fs::read_to_string(
                    examples.join("kafkacluster-mtls.yaml"),
                )?)?;
                let user = std::fs::read_to_string(examples.join("kafkauser-tls.yaml"))?;
                env.apply(&format!("{cluster}\n---\n{user}"))?;
                env.wait_cluster_ready("default", "mtls", 3, Duration::from_secs(240))?;
                env.wait_condition(
                    "default",
                    "kafkauser/billing",
                    "Ready",
                    "True",
                    Duration::from_secs(90),
                )?;
                assert_eq!(
                    env.jsonpath("default", "kafkauser/billing", "{.status.username}")?,
                    "CN=billing"
                );
                assert_eq!(
                    env.jsonpath("default", "kafkauser/billing", "{.status.secret}")?,
                    "billing"
                );
                assert_eq!(
                    env.jsonpath(
                        "default",
                        "secret/mtls-cluster-ca-cert",
                        "{.metadata.annotations.oxbow\\.dev/ca-cert-generation}"
                    )?,
                    "0"
                );
                assert_eq!(pod_generations(&env)?, ["0", "0", "0"]);
                // The NetworkPolicy the API server accepted: with ACLs enforced, the internal
                // listener and the controller port admit the brokers and the operator alone,
                // and it selects the three brokers. (The test cluster's network does not
                // enforce NetworkPolicies, so only the object is checked.)
                let policy = "networkpolicy/mtls-network-policy";
                assert_eq!(
                    env.jsonpath("default", policy, "{.spec.ingress[0].ports[*].port}")?,
                    "9093 9092"
                );
                assert_eq!(
                    env.jsonpath("default", policy, "{.spec.ingress[1].ports[*].port}")?,
                    "9094 9095 9096 9097 9404",
                    "the listeners and the metrics port"
                );
                assert_eq!(
                    env.jsonpath("default", policy, "{.spec.ingress[0].from[1].podSelector.matchLabels.app\\.kubernetes\\.io/name}")?,
                    "oxbow-operator"
                );
                let selector = env.jsonpath("default", policy, "{.spec.podSelector.matchLabels}")?;
                let selector: std::collections::BTreeMap<String, String> = serde_json::from_str(&selector)?;
                let selector = selector
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",");
                assert_eq!(
                    env.kubectl(&["-n", "default", "get", "pods", "-l", &selector, "-o", "jsonpath={.items[*].metadata.name}"])?,
                    "mtls-0 mtls-1 mtls-2"
                );
                // The example's validityDays, as the operator's expiry gauge says.
                for ca in ["cluster-ca", "clients-ca"] {
                    let metrics = env.operator_metrics()?;
                    let expires = metrics
                        .lines()
                        .filter(|l| l.starts_with("oxbow_operator_certificate_expiration_timestamp_seconds{"))
                        .find(|l| l.contains(&format!("ca=\"{ca}\"")) && l.contains("name=\"mtls\""))
                        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                        .with_context(|| format!("no expiry of {ca} in\n{metrics}"))?;
                    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
                    let days = expires.saturating_sub(now) / 86_400;
                    assert!((364..=365).contains(&days), "{ca} expires in {days} days");
                }

                // The client's files, read once: the CA certificate as it was before renewal.
                let ca = secret_file(&env, "billing", "ca.crt", &dir, "ca.crt")?;
                let cluster_ca = secret_file(&env, "mtls-cluster-ca-cert", "ca.crt", &dir, "cluster-ca.crt")?;
                assert_eq!(std::fs::read_to_string(&ca)?, std::fs::read_to_string(&cluster_ca)?);
                let cert = secret_file(&env, "billing", "user.crt", &dir, "user.crt")?;
                let key = secret_file(&env, "billing", "user.key", &dir, "user.key")?;
                let billing = tls_client(&ca, Some((&cert, &key)));

                let described = client("describe", &billing, &["30"])?;
                assert_eq!(described["ok"], true, "{described}");
                assert_eq!(described["hosts"], json!(brokers()), "{described}");
                let served = client("served", &billing, &brokers().iter().map(String::as_str).collect::<Vec<_>>())?;
                let before = served["served"].as_object().context("served")?.clone();
                assert_eq!(before.len(), 3, "{served}");

                // Held to its ACLs.
                let allowed = client("produce", &billing, &["billing-invoices", "100"])?;
                assert_eq!(allowed["delivered"], 100, "{allowed}");
                let read = client("consume", &billing, &["billing-invoices", "100"])?;
                assert_eq!(read["consumed"], 100, "{read}");
                for denied in ["payments", "orders"] {
                    let outcome = client("produce", &billing, &[denied, "5"])?;
                    assert_eq!(outcome["delivered"], 0, "{denied}: {outcome}");
                    ensure!(
                        reported(&outcome, "authoriz") || reported(&outcome, "Authoriz"),
                        "{denied}: expected an authorization failure: {outcome}"
                    );
                }

                // From outside, through the load balancers: every address verifies against
                // the certificates' names.
                let external = env.jsonpath(
                    "default",
                    "kafkacluster/mtls",
                    "{.status.listeners[?(@.name==\"EXTERNAL\")].bootstrap}",
                )?;
                ensure!(external.starts_with("10.98."), "a load balancer address: {external}");
                let mut outside = billing.clone();
                outside["bootstrap.servers"] = external.clone().into();
                let described = client("describe", &outside, &["30"])?;
                assert_eq!(described["ok"], true, "{described}");
                let mut addresses = hosts(&described)?;
                ensure!(
                    addresses.len() == 3 && addresses.iter().all(|a| a.starts_with("10.98.")),
                    "each broker advertises its load balancer: {described}"
                );
                let moved = client("produce", &outside, &["billing-outside", "20"])?;
                assert_eq!(moved["delivered"], 20, "{moved}");
                addresses.push(external);
                served_by_each(&billing, &addresses)?;

                // Through the node ports: each broker advertises its node's address, which
                // every broker's certificate names.
                let nodes = env.jsonpath(
                    "default",
                    "kafkacluster/mtls",
                    "{.status.listeners[?(@.name==\"NODES\")].bootstrap}",
                )?;
                let mut via_nodes = billing.clone();
                via_nodes["bootstrap.servers"] = nodes.clone().into();
                let described = client("describe", &via_nodes, &["30"])?;
                eprintln!("through the node ports ({nodes}): {}", described["hosts"]);
                assert_eq!(described["ok"], true, "{described}");
                let mut node_addresses = hosts(&described)?;
                ensure!(
                    node_addresses.len() == 3 && !node_addresses.iter().any(|a| a.contains(".svc")),
                    "each broker advertises its node: {described}"
                );
                let moved = client("produce", &via_nodes, &["billing-nodes", "20"])?;
                assert_eq!(moved["delivered"], 20, "{moved}");
                node_addresses.push(nodes);
                served_by_each(&billing, &node_addresses)?;

                // Through the ingress controller, which passes TLS through by server name:
                // each broker advertises its Ingress's host on port 443, which its
                // certificate names.
                let routed = env.jsonpath(
                    "default",
                    "kafkacluster/mtls",
                    "{.status.listeners[?(@.name==\"ROUTED\")].bootstrap}",
                )?;
                assert_eq!(routed, "bootstrap.mtls.example.test:443");
                let ingresses = |env: &KubeEnv, path: &str| {
                    env.kubectl(&[
                        "-n",
                        "default",
                        "get",
                        "ingresses",
                        "-l",
                        "app.kubernetes.io/instance=mtls",
                        "-o",
                        &format!("jsonpath={{.items[*].{path}}}"),
                    ])
                };
                let classes = ingresses(&env, "spec.ingressClassName")?;
                assert_eq!(classes, "nginx nginx nginx nginx", "an Ingress per broker and one to bootstrap");
                env.wait("the ingress controller's address on the Ingresses", Duration::from_secs(30), |env| {
                    Ok(ingresses(env, "status.loadBalancer.ingress[0].ip")?
                        == "10.98.0.254 10.98.0.254 10.98.0.254 10.98.0.254")
                })?;
                let mut via_ingress = billing.clone();
                via_ingress["bootstrap.servers"] = routed.clone().into();
                let described = client("describe", &via_ingress, &["30"])?;
                eprintln!("through the ingress ({routed}): {}", described["hosts"]);
                assert_eq!(described["ok"], true, "{described}");
                let mut routed_addresses = hosts(&described)?;
                assert_eq!(
                    routed_addresses,
                    (0..3)
                        .map(|i| format!("broker-{i}.mtls.example.test:443"))
                        .collect::<Vec<_>>(),
                    "each broker advertises its Ingress's host"
                );
                let moved = client("produce", &via_ingress, &["billing-routed", "20"])?;
                assert_eq!(moved["delivered"], 20, "{moved}");
                routed_addresses.push(routed);
                served_by_each(&billing, &routed_addresses)?;

                // Refused at the handshake: no certificate, or one the clients CA did not sign
                // (a broker's, which the cluster CA signed); the user's own is accepted.
                let no_certificate = client("describe", &tls_client(&ca, None), &["10"])?;
                assert_eq!(no_certificate["ok"], false, "{no_certificate}");
                ensure!(
                    reported(&no_certificate, "alert certificate required"),
                    "no certificate: {no_certificate}"
                );
                let broker_pem = secret_file(&env, "mtls-broker-certs", "mtls-0.pem", &dir, "broker.pem")?;
                let bootstrap = BOOTSTRAP.to_string();
                let foreign = client("handshake", &billing, &[&bootstrap, &broker_pem, &broker_pem])?;
                ensure!(
                    foreign["result"].as_str().is_some_and(|r| r.to_lowercase().contains("unknown ca")),
                    "a certificate of the cluster CA: {foreign}"
                );
                let own = client("handshake", &billing, &[&bootstrap, &cert, &key])?;
                assert_eq!(own["result"], "accepted", "{own}");

                // Renewal of the cluster CA under a running producer.
                let stop: PathBuf = dir.join("stop");
                let running = {
                    let billing = billing.clone();
                    let stop = stop.display().to_string();
                    std::thread::spawn(move || {
                        client("run", &billing, &["billing-renewal", &stop, "400"])
                    })
                };
                std::thread::sleep(Duration::from_secs(5));
                env.annotate("default", "secret/mtls-cluster-ca-cert", "oxbow.dev/force-renew=true")?;
                env.wait("the cluster CA renewed", Duration::from_secs(60), |env| {
                    Ok(env.jsonpath(
                        "default",
                        "secret/mtls-cluster-ca-cert",
                        "{.metadata.annotations.oxbow\\.dev/ca-cert-generation}",
                    )? == "1")
                })?;
                assert_eq!(
                    env.jsonpath(
                        "default",
                        "secret/mtls-cluster-ca-cert",
                        "{.metadata.annotations.oxbow\\.dev/force-renew}"
                    )?,
                    "",
                    "the request is removed once done"
                );
                env.wait("every broker restarted on its new certificate", Duration::from_secs(420), |env| {
                    Ok(pod_generations(env)? == ["1", "1", "1"])
                })?;
                env.wait_cluster_ready("default", "mtls", 3, Duration::from_secs(180))?;
                assert_eq!(
                    env.jsonpath(
                        "default",
                        "kafkacluster/mtls",
                        "{.status.certificateAuthorities[*].name} {.status.certificateAuthorities[*].generation}"
                    )?,
                    "cluster-ca clients-ca 1 0"
                );
                std::thread::sleep(Duration::from_secs(5));
                std::fs::write(&stop, "")?;
                let produced = running
                    .join()
                    .map_err(|_| anyhow::anyhow!("the producer's thread panicked"))??;
                eprintln!("producer across the renewal: {produced}");
                assert_eq!(produced["failures"], 0, "{produced}");
                assert_eq!(produced["unflushed"], 0, "{produced}");
                assert_eq!(produced["delivered"], produced["sent"], "{produced}");
                let sent = produced["sent"].as_u64().context("sent")?;
                ensure!(sent > 1000, "the producer ran through the roll: {produced}");
                let read = client("consume", &billing, &["billing-renewal", &sent.to_string()])?;
                assert_eq!(read["consumed"], sent, "every delivered record is there: {read}");

                // New certificates, trusted through the CA certificate read before renewal;
                // the renewed CA certificate keeps the name and key.
                let served = client("served", &billing, &brokers().iter().map(String::as_str).collect::<Vec<_>>())?;
                let after = served["served"].as_object().context("served")?;
                for broker in brokers() {
                    assert_ne!(before.get(&broker), after.get(&broker), "{broker} serves a new certificate: {served}");
                }
                let renewed = secret_file(&env, "mtls-cluster-ca-cert", "ca.crt", &dir, "renewed-ca.crt")?;
                assert_ne!(std::fs::read_to_string(&renewed)?, std::fs::read_to_string(&cluster_ca)?);
                let with_renewed = client("served", &tls_client(&renewed, Some((&cert, &key))), &[&brokers()[0]])?;
                assert_eq!(with_renewed["served"].as_object().map(|s| s.len()), Some(1), "{with_renewed}");
                // The user's Secret carries the renewed CA certificate; its own certificate
                // (clients CA, not renewed) is the same.
                let renewed_pem = std::fs::read_to_string(&renewed)?;
                env.wait("the user's Secret to carry the renewed CA certificate", Duration::from_secs(120), |env| {
                    let user_ca = secret_file(env, "billing", "ca.crt", &dir, "user-ca.crt")?;
                    Ok(std::fs::read_to_string(user_ca)? == renewed_pem)
                })?;
                let user_cert = secret_file(&env, "billing", "user.crt", &dir, "user-now.crt")?;
                assert_eq!(std::fs::read_to_string(&user_cert)?, std::fs::read_to_string(&cert)?);

                // Renewal of the clients CA: the user's certificate is issued again and
                // authenticates; the brokers, whose certificates did not change, keep running.
                let uids = |env: &KubeEnv| -> anyhow::Result<Vec<String>> {
                    (0..3)
                        .map(|i| env.jsonpath("default", &format!("pod/mtls-{i}"), "{.metadata.uid}"))
                        .collect()
                };
                let before_uids = uids(&env)?;
                let old_cert = std::fs::read_to_string(&cert)?;
                env.annotate("default", "secret/mtls-clients-ca-cert", "oxbow.dev/force-renew=true")?;
                env.wait("the user's certificate issued again", Duration::from_secs(120), |env| {
                    let now = secret_file(env, "billing", "user.crt", &dir, "user-renewed.crt")?;
                    Ok(std::fs::read_to_string(now)? != old_cert)
                })?;
                let new_cert = secret_file(&env, "billing", "user.crt", &dir, "user-renewed.crt")?;
                let new_key = secret_file(&env, "billing", "user.key", &dir, "user-renewed.key")?;
                let renewed_user = tls_client(&ca, Some((&new_cert, &new_key)));
                let moved = client("produce", &renewed_user, &["billing-invoices", "10"])?;
                assert_eq!(moved["delivered"], 10, "{moved}");
                assert_eq!(
                    env.jsonpath(
                        "default",
                        "secret/mtls-clients-ca-cert",
                        "{.metadata.annotations.oxbow\\.dev/ca-cert-generation}"
                    )?,
                    "1"
                );
                assert_eq!(uids(&env)?, before_uids, "no broker restarted");

                // The same user through the PKCS#12 stores, as a Java client reads them: its key
                // store from its own Secret, the cluster CA's trust store from the CA's.
                let keystore = dir.join("user.p12");
                std::fs::write(&keystore, secret_data(&env, "billing", "user.p12").await?)?;
                let truststore = dir.join("ca.p12");
                std::fs::write(&truststore, secret_data(&env, "mtls-cluster-ca-cert", "ca.p12").await?)?;
                let password = |secret: &str, key: &str| {
                    let env = &env;
                    let (secret, key) = (secret.to_string(), key.to_string());
                    async move { anyhow::Ok(String::from_utf8(secret_data(env, &secret, &key).await?)?) }
                };
                let properties = dir.join("java-client.properties");
                std::fs::write(
                    &properties,
                    format!(
                        "security.protocol=SSL\nssl.keystore.type=PKCS12\nssl.keystore.location={}\nssl.keystore.password={}\nssl.truststore.type=PKCS12\nssl.truststore.location={}\nssl.truststore.password={}\n",
                        keystore.display(),
                        password("billing", "user.password").await?,
                        truststore.display(),
                        password("mtls-cluster-ca-cert", "ca.password").await?,
                    ),
                )?;
                let config = properties.display().to_string();
                // The listener requires a client certificate, and only CN=billing may see the
                // billing topics: listing them shows the key store was presented and read.
                let listed = oxbow_e2e::kafka::tool(
                    "kafka-topics",
                    &["--bootstrap-server", BOOTSTRAP, "--command-config", &config, "--list"],
                )?;
                ensure!(
                    listed.lines().contains(&"billing-invoices"),
                    "kafka-topics --list through the PKCS#12 stores: {listed}"
                );
                Ok(())
            })
        },
    );
}
