//! `oxbow-operator broker-init`: the init container of broker pods that need something the
//! downward API cannot give them.
//!
//! The broker's rack is a label of the node its pod runs on, and a pod cannot see its node's
//! labels. So, as Strimzi does, an init container running the operator image reads the Node
//! through the Kubernetes API (the pod's own service account may `get` nodes) and writes the
//! broker's `server.properties` into an emptyDir: the file from the ConfigMap plus
//! `broker.rack=<label value>`. The broker then reads that file instead of the ConfigMap's.
//!
//! A TLS listener's Secret holds `tls.crt` and `tls.key`, and the broker reads one PEM file
//! with both (`ssl.keystore.location`): this command joins them, in the same emptyDir.
//!
//! Both images are distroless, without a shell: the work is done here, not in a script.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use thiserror::Error;

/// Prepare a broker pod's files: its `server.properties` with `broker.rack` from its node's
/// topology label, and its TLS key store.
#[derive(Debug, Clone, Args)]
pub struct BrokerInitArgs {
    /// The broker's `server.properties` as the operator wrote it (the ConfigMap's file).
    #[arg(long, value_name = "FILE")]
    pub config_in: PathBuf,
    /// Where to write the broker's `server.properties`, with the settings found here.
    #[arg(long, value_name = "FILE")]
    pub config_out: PathBuf,
    /// The node the pod runs on (`spec.nodeName` through the downward API). Given as an
    /// argument only, never taken from the environment: a pod template that sets `NODE_NAME`
    /// without a rack (older operators did) must not turn on the rack lookup.
    #[arg(long, requires = "rack_label")]
    pub node: Option<String>,
    /// The node label whose value is the broker's rack, e.g. `topology.kubernetes.io/zone`.
    #[arg(long, requires = "node")]
    pub rack_label: Option<String>,
    /// The TLS certificate chain, leaf first (a `kubernetes.io/tls` Secret's `tls.crt`).
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "keystore_out"])]
    pub tls_cert: Option<PathBuf>,
    /// Its private key (`tls.key`).
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "keystore_out"])]
    pub tls_key: Option<PathBuf>,
    /// Where to write the key store: the chain, then the key, in one PEM file (mode 0600).
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_key"])]
    pub keystore_out: Option<PathBuf>,
    /// The address of the pod's node (`status.hostIP` through the downward API): put in place
    /// of [`NODE_ADDRESS`] in what `nodeport` listeners advertise.
    #[arg(long, value_name = "ADDRESS")]
    pub node_address: Option<String>,
}

/// The token the operator writes in `advertised.listeners` where a broker's node address
/// goes; the init container replaces it.
pub const NODE_ADDRESS: &str = "%NODE_ADDRESS%";

/// `properties` with the node's address in place of [`NODE_ADDRESS`]: an IP address, or a
/// host name of letters, digits, '-' and '.'.
pub fn with_node_address(properties: &str, address: &str) -> anyhow::Result<String> {
    let plausible = !address.is_empty()
        && address
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    if !plausible {
        anyhow::bail!("`{address}` is not a node address (status.hostIP)");
    }
    // An IPv6 address is written in brackets in a listener.
    let address = if address.contains(':') {
        format!("[{address}]")
    } else {
        address.to_string()
    };
    Ok(properties.replace(NODE_ADDRESS, &address))
}

/// Why the TLS files cannot make a key store.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum KeystoreError {
    #[error("{file} holds no PEM certificate (-----BEGIN CERTIFICATE-----); the TLS Secret's tls.crt must be the certificate chain")]
    NoCertificate { file: String },
    #[error("{file} holds no PEM private key (-----BEGIN ... PRIVATE KEY-----); the TLS Secret's tls.key must be the unencrypted key")]
    NoKey { file: String },
    #[error("{file} holds an encrypted private key; the broker needs it unencrypted")]
    EncryptedKey { file: String },
}

/// The key store the broker reads: the certificate chain, then the private key.
pub fn keystore_pem(
    cert: &str,
    cert_file: &str,
    key: &str,
    key_file: &str,
) -> Result<String, KeystoreError> {
    if !cert.contains("-----BEGIN CERTIFICATE-----") {
        return Err(KeystoreError::NoCertificate {
            file: cert_file.to_string(),
        });
    }
    if key.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || key.contains("Proc-Type: 4,ENCRYPTED")
    {
        return Err(KeystoreError::EncryptedKey {
            file: key_file.to_string(),
        });
    }
    let has_key = key
        .lines()
        .any(|line| line.starts_with("-----BEGIN ") && line.ends_with("PRIVATE KEY-----"));
    if !has_key {
        return Err(KeystoreError::NoKey {
            file: key_file.to_string(),
        });
    }
    let mut pem = cert.trim_end().to_string();
    pem.push('\n');
    pem.push_str(key.trim_end());
    pem.push('\n');
    Ok(pem)
}

fn read(path: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Writes `text` to `path`, readable by its owner only (it holds a private key).
fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Why a broker's rack cannot be known.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RackError {
    #[error("node {node} has no label {label} (its labels: {present}); label the node, or remove spec.rack from the KafkaCluster")]
    MissingLabel {
        node: String,
        label: String,
        present: String,
    },
    #[error("label {label} of node {node} is empty; a broker's rack needs a value")]
    EmptyValue { node: String, label: String },
    #[error("label {label} of node {node} holds `{value}`, which cannot be written to server.properties (control character or backslash)")]
    UnsafeValue {
        node: String,
        label: String,
        value: String,
    },
}

/// The rack of a broker on `node`: the value of its label `label`.
pub fn rack_of(
    node: &str,
    labels: Option<&BTreeMap<String, String>>,
    label: &str,
) -> Result<String, RackError> {
    let Some(value) = labels.and_then(|labels| labels.get(label)) else {
        let present = labels
            .map(|labels| labels.keys().cloned().collect::<Vec<_>>().join(", "))
            .filter(|keys| !keys.is_empty())
            .unwrap_or_else(|| "none".to_string());
        return Err(RackError::MissingLabel {
            node: node.to_string(),
            label: label.to_string(),
            present,
        });
    };
    let value = value.trim();
    if value.is_empty() {
        return Err(RackError::EmptyValue {
            node: node.to_string(),
            label: label.to_string(),
        });
    }
    if value.chars().any(|c| c.is_control() || c == '\\') {
        return Err(RackError::UnsafeValue {
            node: node.to_string(),
            label: label.to_string(),
            value: value.to_string(),
        });
    }
    Ok(value.to_string())
}

/// `properties` with `additions` appended, each replacing a line that set the same key.
pub fn with_settings(properties: &str, additions: &[(&str, String)]) -> String {
    let mut text: String = properties
        .lines()
        .filter(|line| {
            let key = line.split_once('=').map(|(key, _)| key.trim());
            !additions.iter().any(|(added, _)| Some(*added) == key)
        })
        .flat_map(|line| [line, "\n"])
        .collect();
    if !additions.is_empty() {
        text.push_str("# Added by oxbow-operator broker-init (the pod's init container).\n");
    }
    for (key, value) in additions {
        text.push_str(key);
        text.push('=');
        text.push_str(value);
        text.push('\n');
    }
    text
}

/// How long reading the Node may take before the init container fails (and the kubelet
/// retries it with backoff).
const API_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the init container's work.
pub async fn run(args: BrokerInitArgs) -> anyhow::Result<()> {
    let properties = std::fs::read_to_string(&args.config_in)
        .with_context(|| format!("cannot read {}", args.config_in.display()))?;
    let mut additions = Vec::new();
    if let (Some(node), Some(label)) = (&args.node, &args.rack_label) {
        let client = kube::Client::try_default().await.context(
            "cannot configure the Kubernetes client (is the service account token mounted?)",
        )?;
        let nodes: Api<Node> = Api::all(client);
        let rack = tokio::time::timeout(API_TIMEOUT, node_rack(&nodes, node, label))
            .await
            .with_context(|| {
                format!(
                    "reading node {node} took more than {}s",
                    API_TIMEOUT.as_secs()
                )
            })??;
        tracing::info!(%node, %label, %rack, "broker.rack from the node's label");
        additions.push(("broker.rack", rack));
    }
    if let (Some(cert_file), Some(key_file), Some(out)) =
        (&args.tls_cert, &args.tls_key, &args.keystore_out)
    {
        let pem = keystore_pem(
            &read(cert_file)?,
            &cert_file.display().to_string(),
            &read(key_file)?,
            &key_file.display().to_string(),
        )?;
        write_private(out, &pem)?;
        tracing::info!(file = %out.display(), "wrote the TLS key store");
    }
    let properties = match &args.node_address {
        Some(address) => {
            tracing::info!(%address, "advertising the node's address on the nodeport listeners");
            with_node_address(&properties, address)?
        }
        None => properties,
    };
    let text = with_settings(&properties, &additions);
    std::fs::write(&args.config_out, text)
        .with_context(|| format!("cannot write {}", args.config_out.display()))?;
    tracing::info!(file = %args.config_out.display(), "wrote the broker's server.properties");
    Ok(())
}

/// The rack of `node`, read through `nodes`.
pub async fn node_rack(nodes: &Api<Node>, node: &str, label: &str) -> anyhow::Result<String> {
    let found = nodes.get(node).await.with_context(|| {
        format!("cannot read node {node} (the broker's service account needs `get` on nodes)")
    })?;
    Ok(rack_of(node, found.metadata.labels.as_ref(), label)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const ZONE: &str = "topology.kubernetes.io/zone";

    #[test]
    fn the_rack_is_the_value_of_the_nodes_label() {
        let node = labels(&[(ZONE, "eu-west-1a"), ("kubernetes.io/hostname", "n1")]);
        assert_eq!(
            rack_of("n1", Some(&node), ZONE),
            Ok("eu-west-1a".to_string())
        );
        assert_eq!(
            rack_of("n1", Some(&node), "kubernetes.io/hostname"),
            Ok("n1".to_string())
        );
    }

    #[test]
    fn a_missing_label_names_the_node_the_label_and_the_labels_it_has() {
        let node = labels(&[("kubernetes.io/hostname", "n1"), ("disk", "ssd")]);
        let error = rack_of("n1", Some(&node), ZONE).expect_err("no zone label");
        assert_eq!(
            error,
            RackError::MissingLabel {
                node: "n1".to_string(),
                label: ZONE.to_string(),
                present: "disk, kubernetes.io/hostname".to_string(),
            }
        );
        let message = error.to_string();
        assert!(message.contains("node n1 has no label topology.kubernetes.io/zone"));
        assert!(message.contains("remove spec.rack"), "{message}");
        let unlabelled = rack_of("n2", None, ZONE).expect_err("no labels at all");
        assert!(unlabelled.to_string().contains("(its labels: none)"));
    }

    #[test]
    fn empty_and_unsafe_values_are_refused() {
        let empty = labels(&[(ZONE, " ")]);
        assert!(matches!(
            rack_of("n1", Some(&empty), ZONE),
            Err(RackError::EmptyValue { .. })
        ));
        let unsafe_value = labels(&[(ZONE, "a\nnode.id=7")]);
        assert!(matches!(
            rack_of("n1", Some(&unsafe_value), ZONE),
            Err(RackError::UnsafeValue { .. })
        ));
    }

    #[tokio::test]
    async fn the_rack_is_read_from_the_node_object_through_the_api() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "labels": {ZONE: "eu-west-1b"}}
        }))
        .expect("node");
        let client = kube_fake_client::ClientBuilder::new()
            .with_object(node)
            .build()
            .await
            .expect("client");
        let nodes: Api<Node> = Api::all(client);
        assert_eq!(
            node_rack(&nodes, "n1", ZONE).await.expect("rack"),
            "eu-west-1b"
        );
        let missing = node_rack(&nodes, "n1", "example.com/rack")
            .await
            .expect_err("no such label");
        assert!(
            missing
                .to_string()
                .contains("node n1 has no label example.com/rack"),
            "{missing}"
        );
        let unknown = node_rack(&nodes, "n9", ZONE)
            .await
            .expect_err("no such node");
        assert!(
            unknown.to_string().contains("cannot read node n9"),
            "{unknown}"
        );
    }

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----";

    #[test]
    fn the_keystore_is_the_chain_then_the_key() {
        let pem = keystore_pem(CERT, "tls.crt", KEY, "tls.key").expect("key store");
        assert_eq!(pem, format!("{CERT}{KEY}\n"));
        let ec = "-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n";
        assert!(keystore_pem(CERT, "tls.crt", ec, "tls.key").is_ok());
    }

    #[test]
    fn files_that_are_not_a_chain_and_a_plain_key_are_refused_by_name() {
        let swapped =
            keystore_pem(KEY, "/etc/oxbow-tls/tls.crt", CERT, "tls.key").expect_err("swapped");
        assert_eq!(
            swapped,
            KeystoreError::NoCertificate {
                file: "/etc/oxbow-tls/tls.crt".to_string()
            }
        );
        assert!(swapped
            .to_string()
            .contains("/etc/oxbow-tls/tls.crt holds no PEM certificate"));
        assert!(matches!(
            keystore_pem(CERT, "tls.crt", "", "tls.key"),
            Err(KeystoreError::NoKey { .. })
        ));
        let encrypted =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIF\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert!(matches!(
            keystore_pem(CERT, "tls.crt", encrypted, "tls.key"),
            Err(KeystoreError::EncryptedKey { .. })
        ));
    }

    #[test]
    fn settings_are_appended_and_replace_earlier_lines_of_the_same_key() {
        let file = "# written by the operator\nnode.id=0\nbroker.rack=stale\nlog.dirs=/d\n";
        let text = with_settings(file, &[("broker.rack", "zone-b".to_string())]);
        assert_eq!(
            text,
            "# written by the operator\nnode.id=0\nlog.dirs=/d\n\
             # Added by oxbow-operator broker-init (the pod's init container).\n\
             broker.rack=zone-b\n"
        );
        assert_eq!(with_settings(file, &[]), file, "nothing to add, same file");
    }

    #[test]
    fn the_node_address_takes_the_place_of_its_token() {
        let file = format!("advertised.listeners=PLAINTEXT://main-0.main-brokers:9092,EXTERNAL://{NODE_ADDRESS}:31234\n");
        assert_eq!(
            with_node_address(&file, "10.0.0.5").expect("an address"),
            "advertised.listeners=PLAINTEXT://main-0.main-brokers:9092,EXTERNAL://10.0.0.5:31234\n"
        );
        assert!(with_node_address(&file, "fd00::5")
            .expect("an IPv6 address")
            .contains("EXTERNAL://[fd00::5]:31234"));
        assert!(with_node_address(&file, "").is_err());
        assert!(with_node_address(&file, "10.0.0.5,EVIL://x:1").is_err());
    }

    #[test]
    fn the_written_file_is_accepted_by_the_broker_with_its_rack() {
        let file = "node.id=0\nprocess.roles=broker,controller\nlisteners=PLAINTEXT://:9092,CONTROLLER://:9093\nlog.dirs=/d\n";
        let text = with_settings(file, &[("broker.rack", "zone-a".to_string())]);
        let settings: BTreeMap<String, String> = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let config = oxbow_broker::config::BrokerConfig::from_settings(settings).expect("accepted");
        assert_eq!(config.rack.as_deref(), Some("zone-a"));
    }
}
