//! The custom resources: `KafkaCluster`, `KafkaTopic`, `KafkaUser` and `KafkaRebalance` (group `oxbow.dev`, version
//! `v1alpha1`).
//!
//! Field doc comments become the schema descriptions `kubectl explain` shows, so they are
//! written for users. Rules the API server can enforce on its own (ranges, patterns, CEL
//! transition rules) live here; rules that need more than one field or a computation live in
//! `cluster::validate` and `topic`.

// `KubeSchema` copies each struct into a private scope to build its schema, and those copies
// keep the `pub` of the original: without this, every schema struct warns.
#![allow(unreachable_pub)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every Oxbow resource.
pub const GROUP: &str = "oxbow.dev";

/// Longest `KafkaCluster` name: the StatefulSet controller labels each pod with
/// `<name>-<hash>` (`controller-revision-hash`), and a label value holds at most 63 characters.
pub const MAX_CLUSTER_NAME: usize = 52;

/// Longest Kafka topic name (Kafka's own limit).
pub const MAX_TOPIC_NAME: usize = 249;

/// The cluster as it should be; the operator makes the brokers match it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "oxbow.dev",
    version = "v1alpha1",
    kind = "KafkaCluster",
    namespaced,
    status = "KafkaClusterStatus",
    shortname = "kc",
    category = "oxbow",
    doc = "A Kafka-compatible Oxbow cluster: brokers in a StatefulSet, their Services, configuration and disruption budget.",
    derive = "PartialEq",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Brokers wanted"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyBrokers",
        description = "Brokers ready"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "Why the cluster is or is not ready"
    ),
    printcolumn(
        name = "Bootstrap",
        type_ = "string",
        json_path = ".status.bootstrap",
        description = "Address clients connect to"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("size(self.metadata.name) <= 52")
        .message("a KafkaCluster name has at most 52 characters (pod labels derived from it must fit in 63)"),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
        .message("a KafkaCluster name starts with a letter and holds only lowercase letters, digits and '-' (it names Services)")
)]
#[serde(rename_all = "camelCase")]
pub struct KafkaClusterSpec {
    /// Number of brokers. Without `controllers`, the lowest ordinals (one broker below three
    /// replicas, three from three on) also form the metadata quorum.
    #[serde(default = "default_cluster_replicas")]
    #[schemars(range(min = 1))]
    #[x_kube(validation = Rule::new("self >= 1").message("a cluster has at least one broker"))]
    pub replicas: i32,

    /// A pool of dedicated controllers (`process.roles=controller`), which form the metadata
    /// quorum in place of the brokers: the brokers then scale without touching the quorum.
    /// Fixed when the cluster is formed (a change of the quorum's voters is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controllers: Option<ControllerPoolSpec>,

    /// Broker container image. Defaults to the image the operator was started with
    /// (`--broker-image`), which matches the operator's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// When the kubelet pulls the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,

    /// Ports the brokers listen on.
    #[serde(default)]
    pub listeners: ListenersSpec,

    /// Each broker's persistent volume.
    #[serde(default)]
    pub storage: StorageSpec,

    /// CPU and memory requests and limits of each broker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Spread brokers over failure domains (zones, racks, nodes), and tell each broker its
    /// own (`broker.rack`) so replicas of a partition go to different domains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<RackSpec>,

    /// Broker settings by their Kafka name (`server.properties`), for example
    /// `log.retention.hours: "72"`. Settings the operator owns (node.id, listeners,
    /// advertised.listeners, process.roles, controller.quorum.voters, log.dirs, ...) are
    /// refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,

    /// Additions to every broker pod: labels, annotations, scheduling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplateOverrides>,

    /// The brokers' Prometheus endpoint.
    #[serde(default)]
    pub metrics: MetricsSpec,

    /// First credentials and ACL authorization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<SecuritySpec>,

    /// The cluster CA, which signs the brokers' certificates: Secrets `<cluster>-cluster-ca-cert`
    /// (`ca.crt`, what clients trust) and `<cluster>-cluster-ca` (`ca.key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ca: Option<CertificateAuthority>,

    /// The clients CA, which signs the certificates of TLS KafkaUsers: Secrets
    /// `<cluster>-clients-ca-cert` and `<cluster>-clients-ca`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients_ca: Option<CertificateAuthority>,
}

/// The dedicated controllers of a cluster: StatefulSet `<cluster>-controller`, whose pods
/// `<cluster>-controller-<id>` have node ids from 1000 on.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ControllerPoolSpec {
    /// Voters of the metadata quorum: 1, 3 or 5 (an even count adds no fault tolerance).
    #[serde(default = "default_controller_replicas")]
    #[x_kube(validation = Rule::new("self == 1 || self == 3 || self == 5").message("a controller pool has 1, 3 or 5 controllers"))]
    pub replicas: i32,
    /// Each controller's volume for the metadata log; by default the size and class of
    /// `spec.storage` (its first volume's with JBOD), one volume, and `deleteClaim` as there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<ControllerStorage>,
    /// CPU and memory requests and limits of each controller container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

fn default_controller_replicas() -> i32 {
    3
}

/// A controller's volume.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ControllerStorage {
    /// Volume size as a Kubernetes quantity, for example `1Gi`.
    pub size: String,
    /// Storage class of the volume; the cluster's default class when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// A certificate authority of the cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.renewalDays < self.validityDays").message("renewalDays must be less than validityDays"))]
pub struct CertificateAuthority {
    /// Whether the operator generates the CA and renews its certificate. With `false` the
    /// user creates both Secrets (`ca.crt` with the CA certificate first, `ca.key` with its
    /// unencrypted key) and renews them; the operator only signs with it.
    #[serde(default = "default_true")]
    pub generate_certificate_authority: bool,
    /// Days a generated CA certificate, and each certificate the CA signs, is valid.
    #[serde(default = "default_validity_days")]
    #[schemars(range(min = 2, max = 36500))]
    pub validity_days: u32,
    /// Days before expiry a certificate is renewed. A renewed CA keeps its name and key, so
    /// clients that hold the old CA certificate still trust the brokers.
    #[serde(default = "default_renewal_days")]
    #[schemars(range(min = 1, max = 36499))]
    pub renewal_days: u32,
}

impl Default for CertificateAuthority {
    fn default() -> Self {
        Self {
            generate_certificate_authority: true,
            validity_days: default_validity_days(),
            renewal_days: default_renewal_days(),
        }
    }
}

fn default_validity_days() -> u32 {
    365
}

fn default_renewal_days() -> u32 {
    30
}

fn default_cluster_replicas() -> i32 {
    3
}

/// Image pull policy of the broker container.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Broker ports: the internal `PLAINTEXT` and `CONTROLLER` listeners, and any additional
/// client listeners.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ListenersSpec {
    /// Port of the internal client listener (`PLAINTEXT`), which brokers replicate over and
    /// the operator uses. It has no TLS or authentication: keep it inside the cluster's
    /// network and give applications an additional listener.
    #[serde(default = "default_client_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub client_port: i32,
    /// Port of the metadata quorum listener (`CONTROLLER`) on quorum members.
    #[serde(default = "default_controller_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub controller_port: i32,
    /// Client listeners beside the internal one, each on its own port, with TLS and/or SASL
    /// authentication. Every broker advertises its pod DNS name on each; the Services expose
    /// them all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional: Vec<ListenerSpec>,
}

/// A client listener.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ListenerSpec {
    /// Kafka listener name, for example `EXTERNAL`: uppercase letters, digits and single
    /// '_', at most 15 characters (its lowercase form names the Service port). `PLAINTEXT`,
    /// `CONTROLLER`, `SSL`, `SASL_SSL`, `SASL_PLAINTEXT`, `KAFKA` and `METRICS` are taken.
    #[schemars(
        length(min = 1, max = 15),
        regex(pattern = r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$")
    )]
    pub name: String,
    /// Port of the listener.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// TLS on this listener. Every TLS listener of a cluster uses the same secret and client
    /// authentication (a broker serves one certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
    /// How clients authenticate: `none`, or SASL with `scram-sha-256`, `scram-sha-512` or
    /// `plain` (checked against the user's SCRAM credential; TLS listeners only). Every SASL
    /// listener of a cluster uses the same mechanism.
    #[serde(default)]
    pub authentication: ListenerAuthentication,
    /// How clients reach the listener: `internal` (inside the Kubernetes cluster, by the
    /// brokers' pod DNS names), `nodeport` (from outside: a NodePort Service per broker,
    /// `<cluster>-<listener>-<n>`, and one to bootstrap from, `<cluster>-<listener>-bootstrap`;
    /// each broker advertises its node's address and its own node port on this listener) or
    /// `loadbalancer` (from outside: Services of type LoadBalancer with the same names; each
    /// broker advertises its own Service's load balancer address and the listener's port, and
    /// the brokers are configured only once every one of those Services has its address) or
    /// `ingress` (from outside, through an ingress controller with TLS passthrough, such as
    /// ingress-nginx with `--enable-ssl-passthrough`: a ClusterIP Service and an Ingress per
    /// broker and to bootstrap, each Ingress routing its host by SNI to its Service; each
    /// broker advertises its host and port 443, and its certificate names the hosts; the
    /// listener needs `tls`, `configuration.bootstrap.host`, and `configuration.hostTemplate`
    /// or a host for every broker).
    #[serde(rename = "type", default)]
    pub type_: ListenerType,
    /// Node ports fixed instead of assigned by the API server (`nodeport` and `loadbalancer`
    /// listeners), as Strimzi's listener `configuration`: for the bootstrap Service and for
    /// brokers by id. Each must be free and in the API server's node port range (30000-32767
    /// by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<ListenerConfiguration>,
}

/// Fixed node ports of an external listener's Services.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ListenerConfiguration {
    /// The bootstrap Service's node port, or (`ingress`) host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<BootstrapNodePort>,
    /// Brokers' node ports (a broker not listed gets one assigned), or (`ingress`) hosts, by
    /// broker id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub brokers: Vec<BrokerNodePort>,
    /// `ingress`: the host of each broker not listed in `brokers`, `{nodeId}` replaced by its
    /// id, for example `broker-{nodeId}.kafka.example.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_template: Option<String>,
    /// `ingress`: the Ingresses' `ingressClassName`; the cluster's default class when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
}

/// The node port of a listener's bootstrap Service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapNodePort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub node_port: Option<i32>,
    /// `ingress`: the host clients bootstrap from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// The node port of one broker's Service of a listener.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BrokerNodePort {
    /// The broker's id (its pod's ordinal).
    #[schemars(range(min = 0))]
    pub broker: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub node_port: Option<i32>,
    /// `ingress`: the broker's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

impl ListenerSpec {
    /// `ingress`: the host of the bootstrap Ingress (`None`) or broker `Some(id)`'s.
    pub fn ingress_host(&self, broker: Option<i32>) -> Option<String> {
        let configuration = self.configuration.as_ref()?;
        match broker {
            None => configuration.bootstrap.as_ref()?.host.clone(),
            Some(id) => configuration
                .brokers
                .iter()
                .find(|b| b.broker == id)
                .and_then(|b| b.host.clone())
                .or_else(|| {
                    configuration
                        .host_template
                        .as_ref()
                        .map(|template| template.replace("{nodeId}", &id.to_string()))
                }),
        }
    }

    /// The node port fixed for the bootstrap Service (`None`) or broker `Some(id)`'s.
    pub fn fixed_node_port(&self, broker: Option<i32>) -> Option<i32> {
        let configuration = self.configuration.as_ref()?;
        match broker {
            None => configuration.bootstrap.as_ref()?.node_port,
            Some(id) => {
                configuration
                    .brokers
                    .iter()
                    .find(|b| b.broker == id)?
                    .node_port
            }
        }
    }
}

/// How clients reach a listener.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ListenerType {
    #[default]
    #[serde(rename = "internal")]
    Internal,
    #[serde(rename = "nodeport")]
    NodePort,
    #[serde(rename = "loadbalancer")]
    LoadBalancer,
    #[serde(rename = "ingress")]
    Ingress,
}

/// The TLS settings of a listener.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ListenerTls {
    /// Secret in the cluster's namespace (type `kubernetes.io/tls`, as cert-manager writes
    /// it) with `tls.crt` (the certificate chain, leaf first) and `tls.key` (its unencrypted
    /// private key), and `ca.crt` (CAs of client certificates) when `clientAuth` is not
    /// `none`. Read when a broker starts: a renewed certificate takes effect at the next
    /// restart. Without it each broker serves a certificate of the cluster CA for every name
    /// clients reach it by, and client certificates are those of the clients CA (TLS
    /// KafkaUsers); the operator renews them and restarts the brokers one at a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,
    /// Whether clients present a certificate signed by the secret's `ca.crt` (by the clients
    /// CA without a secret).
    #[serde(default)]
    pub client_auth: ClientAuth,
}

/// `ssl.client.auth`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificate.
    #[default]
    None,
    /// A client may present a certificate; an invalid one is refused.
    Requested,
    /// Every client presents a valid certificate.
    Required,
}

impl ClientAuth {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::None => "none",
            ClientAuth::Requested => "requested",
            ClientAuth::Required => "required",
        }
    }
}

/// Client authentication on a listener.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ListenerAuthentication {
    /// No authentication: every client is `User:ANONYMOUS`.
    #[default]
    #[serde(rename = "none")]
    None,
    /// SASL SCRAM-SHA-256.
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// SASL SCRAM-SHA-512.
    #[serde(rename = "scram-sha-512")]
    ScramSha512,
    /// SASL PLAIN: the password travels in the clear, so only on TLS listeners.
    #[serde(rename = "plain")]
    Plain,
}

impl ListenerAuthentication {
    /// The SASL mechanism's Kafka name, `None` without SASL.
    pub fn mechanism(self) -> Option<&'static str> {
        match self {
            ListenerAuthentication::None => None,
            ListenerAuthentication::ScramSha256 => Some("SCRAM-SHA-256"),
            ListenerAuthentication::ScramSha512 => Some("SCRAM-SHA-512"),
            ListenerAuthentication::Plain => Some("PLAIN"),
        }
    }
}

/// First credentials and authorization.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecuritySpec {
    /// A SCRAM user the brokers create when they start, unless that user already has a
    /// credential for the mechanism (a password changed later is kept). The password comes
    /// from a Secret and never enters the ConfigMap. With authorization, this user is a
    /// super user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<AdminCredentials>,
    /// ACL authorization: when present, every request is checked against ACLs
    /// (deny-by-default). `User:ANONYMOUS` (the brokers and the operator on the internal
    /// PLAINTEXT listener, and every client of a listener without authentication) and the
    /// admin user are super users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<AuthorizationSpec>,
}

/// The first SCRAM user.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AdminCredentials {
    /// The user's name.
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9._@-]+$"))]
    pub username: String,
    /// The key of a Secret in the cluster's namespace that holds the password (any
    /// characters but `"` and line breaks).
    pub password_secret: SecretKeyReference,
    /// The SCRAM mechanism of the credential.
    #[serde(default)]
    pub mechanism: ScramMechanism,
}

/// A key of a Secret in the cluster's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyReference {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key in the Secret.
    #[serde(default = "default_password_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

fn default_password_key() -> String {
    "password".to_string()
}

/// A SCRAM mechanism.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ScramMechanism {
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[default]
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl ScramMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            ScramMechanism::ScramSha256 => "SCRAM-SHA-256",
            ScramMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// ACL authorization.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationSpec {
    /// More principals allowed everything, for example `User:ops`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub super_users: Vec<String>,
}

fn default_client_port() -> i32 {
    9092
}

fn default_controller_port() -> i32 {
    9093
}

impl Default for ListenersSpec {
    fn default() -> Self {
        Self {
            client_port: default_client_port(),
            controller_port: default_controller_port(),
            additional: Vec::new(),
        }
    }
}

/// Persistent volumes per broker, from the StatefulSet's volume claim templates: one, or
/// several (JBOD) when `volumes` lists them.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.volumes) || self.volumes.all(v, self.volumes.exists_one(w, w.id == v.id))")
        .message("spec.storage.volumes: each volume needs an id of its own")
)]
pub struct StorageSpec {
    /// Volume size as a Kubernetes quantity, for example `10Gi`.
    #[serde(default = "default_storage_size")]
    pub size: String,
    /// Storage class of the volumes; the cluster's default class when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Delete the volumes (and their data) when the KafkaCluster is deleted, and the volume of
    /// a broker removed by a scale-down once it has been drained. When false, volumes are
    /// kept in both cases (a broker scaled back in finds its old volume).
    #[serde(default)]
    pub delete_claim: bool,
    /// Several volumes per broker (JBOD): each is a claim of its own, mounted at
    /// `/var/lib/oxbow/data-<id>`, and its log directory `/var/lib/oxbow/data-<id>/log` is one of
    /// the broker's `log.dirs`; a new partition goes to the directory holding the fewest, and
    /// `kafka-reassign-partitions.sh` moves a replica between them. Empty: one volume of `size`.
    /// Each can grow; a volume with an id above every other can be added to running brokers
    /// (they restart one at a time to take it); none can be removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_VOLUMES))]
    pub volumes: Vec<VolumeSpec>,
}

/// The most JBOD volumes a broker has.
pub const MAX_VOLUMES: usize = 16;

/// One of a broker's JBOD volumes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSpec {
    /// Names the volume: its claim template is `data-<id>`.
    #[schemars(range(min = 0, max = 999))]
    pub id: u32,
    /// Volume size as a Kubernetes quantity; `spec.storage.size` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// Storage class of this volume; `spec.storage.storageClassName` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

fn default_storage_size() -> String {
    "10Gi".to_string()
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
            delete_claim: false,
            volumes: Vec::new(),
        }
    }
}

/// Failure-domain awareness.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RackSpec {
    /// Node label whose value names a broker's failure domain, for example
    /// `topology.kubernetes.io/zone`. Brokers are spread evenly over its values, and each
    /// broker's `broker.rack` is the value on its node, read at pod start by an init container
    /// (a node without the label keeps the pod from starting, with the reason in the init
    /// container's log).
    #[schemars(length(min = 1))]
    pub topology_key: String,
}

/// Additions to the broker pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateOverrides {
    /// Extra pod labels. The operator's own labels win on a clash.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra pod annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Pod affinity rules; replace the operator's default broker anti-affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Tolerations of the broker pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Node labels a broker's node must have.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Priority class of the broker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Seconds a broker gets to shut down cleanly (move leadership away, flush) after SIGTERM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub termination_grace_period_seconds: Option<i64>,
}

/// The brokers' Prometheus endpoint (`/metrics`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MetricsSpec {
    /// Serve metrics (`metrics.address`) and annotate pods for scraping.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Port of the metrics endpoint.
    #[serde(default = "default_metrics_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

fn default_true() -> bool {
    true
}

fn default_metrics_port() -> i32 {
    9404
}

impl Default for MetricsSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            port: default_metrics_port(),
        }
    }
}

/// What the operator last saw of a KafkaCluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct KafkaClusterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling` and `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Brokers the StatefulSet has (for the scale subresource).
    #[serde(default)]
    pub replicas: i32,
    /// Brokers whose pod is ready.
    #[serde(default)]
    pub ready_brokers: i32,
    /// `host:port` clients bootstrap from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<String>,
    /// Where clients outside the cluster bootstrap from, per listener of type `nodeport` or
    /// `loadbalancer`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerStatus>,
    /// One entry per broker.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub brokers: Vec<BrokerStatus>,
    /// One entry per dedicated controller (`spec.controllers`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub controllers: Vec<ControllerStatus>,
    /// Spread of replicas and leaders over the brokers; absent while they cannot be reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<BalanceStatus>,
    /// The change of size under way, if any: kept here so an operator that restarts resumes
    /// it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<ScalingStatus>,
    /// The cluster's CAs: how often each certificate was renewed, and when it expires.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificate_authorities: Vec<CertificateAuthorityStatus>,
}

/// One CA of a cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CertificateAuthorityStatus {
    /// `cluster-ca` or `clients-ca`.
    pub name: String,
    /// Renewals of its certificate so far (`oxbow.dev/ca-cert-generation` of its Secret).
    pub generation: u64,
    /// When its certificate expires (RFC 3339).
    pub not_after: String,
}

/// Where clients of one listener bootstrap from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ListenerStatus {
    /// The listener's name.
    pub name: String,
    /// `host:port` to bootstrap from: for `nodeport`, a ready broker's node address and the
    /// bootstrap Service's node port (every node forwards its node ports); for
    /// `loadbalancer`, the bootstrap Service's load balancer address and the listener's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<String>,
    /// The bootstrap Service's node port (`nodeport` listeners).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_node_port: Option<i32>,
}

/// A change of the number of brokers in progress.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ScalingStatus {
    /// Brokers before the change.
    pub from: i32,
    /// Brokers after it.
    pub to: i32,
    /// Where the change stands.
    pub phase: ScalingPhase,
    /// Partition reassignments of the change in flight.
    #[serde(default)]
    pub reassignments_in_flight: i32,
    /// Partition reassignments planned but not started yet (bounded concurrency).
    #[serde(default)]
    pub reassignments_pending: i32,
    /// Partition reassignments submitted since the change began; those not in flight are
    /// done.
    #[serde(default)]
    pub reassignments_submitted: i32,
}

/// How evenly the cluster's partitions are spread, as its brokers last reported.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BalanceStatus {
    /// Largest difference of replica counts between two brokers (0 or 1 is balanced).
    pub replica_imbalance: i32,
    /// Largest difference of led partitions between two brokers.
    pub leader_imbalance: i32,
    /// Partitions with fewer in-sync replicas than replicas.
    pub under_replicated_partitions: i32,
    /// Partition reassignments in flight.
    pub reassignments_in_flight: i32,
}

/// Steps of a change of size.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScalingPhase {
    /// Scale-up: the StatefulSet has grown; the new brokers have not all registered.
    WaitingForBrokers,
    /// Scale-up: replicas and leaders are moving onto the new brokers.
    Rebalancing,
    /// Scale-down: replicas are moving off the leaving brokers; their pods stay until empty.
    Draining,
}

/// One broker's state.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BrokerStatus {
    /// The broker's `node.id` (its pod's ordinal).
    pub id: i32,
    /// The broker's pod.
    pub pod: String,
    /// Whether the pod is ready.
    pub ready: bool,
    /// Whether this broker is a metadata quorum voter.
    #[serde(default)]
    pub controller: bool,
    /// Partition replicas the broker holds (absent while the brokers cannot be reached or
    /// the broker is not registered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Partitions the broker leads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaders: Option<i32>,
}

/// One dedicated controller's state.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ControllerStatus {
    /// The controller's `node.id` (its pod's ordinal).
    pub id: i32,
    /// The controller's pod.
    pub pod: String,
    /// Whether the pod is ready: the quorum has a leader it knows.
    pub ready: bool,
}

/// The topic as it should be; the operator makes the topic on the cluster match it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "oxbow.dev",
    version = "v1alpha1",
    kind = "KafkaTopic",
    namespaced,
    status = "KafkaTopicStatus",
    shortname = "kt",
    category = "oxbow",
    doc = "A Kafka topic on a KafkaCluster in the same namespace.",
    derive = "PartialEq",
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.clusterRef.name",
        description = "The KafkaCluster holding the topic"
    ),
    printcolumn(
        name = "Topic",
        type_ = "string",
        json_path = ".status.topicName",
        description = "The topic's name in Kafka"
    ),
    printcolumn(
        name = "Partitions",
        type_ = "integer",
        json_path = ".status.partitions",
        description = "Partitions the topic has"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".status.replicas",
        description = "Replication factor the topic has"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the topic matches its spec"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("has(self.spec.topicName) || size(self.metadata.name) <= 249")
        .message("without spec.topicName the resource name is the topic name, and a topic name has at most 249 characters")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(oldSelf.topicName) == has(self.topicName)")
        .message("spec.topicName cannot be added or removed after creation"),
    validation = Rule::new("!has(oldSelf.partitions) || has(self.partitions)")
        .message("spec.partitions cannot be removed once set")
)]
pub struct KafkaTopicSpec {
    /// The KafkaCluster (in this namespace) that holds the topic.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.clusterRef is immutable"))]
    pub cluster_ref: ClusterReference,

    /// The topic's name in Kafka; defaults to the resource's name. Needed for names that are
    /// not valid Kubernetes names (uppercase letters, underscores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 249), regex(pattern = r"^[a-zA-Z0-9._-]+$"))]
    #[x_kube(
        validation = Rule::new("self == oldSelf").message("spec.topicName is immutable"),
        validation = Rule::new("self != '.' && self != '..'").message("'.' and '..' are not topic names")
    )]
    pub topic_name: Option<String>,

    /// Number of partitions; the cluster's `num.partitions` when omitted. Partitions can be
    /// added but never removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    #[x_kube(validation = Rule::new("self >= oldSelf").message("partitions cannot be decreased"))]
    pub partitions: Option<i32>,

    /// Replication factor; the cluster's `default.replication.factor` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 32767))]
    pub replicas: Option<i32>,

    /// Topic settings by their Kafka name, for example `retention.ms: "86400000"` or
    /// `cleanup.policy: compact`. These are the topic's only overrides: one added outside this
    /// resource is removed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,

    /// What happens to the topic and its data when this resource is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// A KafkaCluster in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ClusterReference {
    /// The KafkaCluster's name.
    #[schemars(length(min = 1))]
    pub name: String,
}

/// What deleting a KafkaTopic does to the topic.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeletionPolicy {
    /// Delete the topic and its data.
    #[default]
    Delete,
    /// Keep the topic; only the resource goes.
    Retain,
}

/// What the operator last saw of a KafkaTopic.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct KafkaTopicStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling` and `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The topic's name in Kafka.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_name: Option<String>,
    /// The topic id Kafka gave the topic when this resource created it. The operator only
    /// changes or deletes the topic with this id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<String>,
    /// Partitions the topic has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,
    /// Replication factor the topic has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// What the operator is doing or what stops it, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl KafkaTopic {
    /// The topic's name in Kafka: `spec.topicName`, else the resource's name.
    pub fn topic_name(&self) -> String {
        self.spec
            .topic_name
            .clone()
            .or_else(|| self.metadata.name.clone())
            .unwrap_or_default()
    }
}

/// A user of a KafkaCluster: its SCRAM credential, its ACLs and its quotas. The operator keeps
/// the cluster's user in line with this resource, writes the user's password (generated unless
/// the spec names a Secret holding it) to a Secret named after the resource, and removes the
/// credential, the ACLs and the quotas when the resource is deleted.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "oxbow.dev",
    version = "v1alpha1",
    kind = "KafkaUser",
    namespaced,
    status = "KafkaUserStatus",
    shortname = "ku",
    category = "oxbow",
    doc = "A user of a KafkaCluster in the same namespace: its SCRAM credential, ACLs and quotas. The resource's name is the user's name.",
    derive = "PartialEq",
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.clusterRef.name",
        description = "The KafkaCluster the user belongs to"
    ),
    printcolumn(
        name = "Authentication",
        type_ = "string",
        json_path = ".spec.authentication.type",
        description = "How the user authenticates"
    ),
    printcolumn(
        name = "Secret",
        type_ = "string",
        json_path = ".status.secret",
        description = "The Secret holding the user's credentials"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the user matches its spec"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("size(self.metadata.name) <= 128")
        .message("a KafkaUser's name is the user's name, which has at most 128 characters")
)]
#[serde(rename_all = "camelCase")]
pub struct KafkaUserSpec {
    /// The KafkaCluster (in this namespace) the user belongs to.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.clusterRef is immutable"))]
    pub cluster_ref: ClusterReference,

    /// How the user authenticates. Without it the user has no credential: its ACLs and
    /// quotas still apply to `User:<name>` however that principal is established.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<UserAuthentication>,

    /// What the user may do. Without it the user has no ACLs of its own (with the cluster's
    /// ACL authorization, it may then do nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<UserAuthorization>,

    /// The user's quotas, enforced by every broker. An omitted quota is not set for the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quotas: Option<UserQuotas>,
}

/// A SCRAM credential or a client certificate.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type != 'tls' || !has(self.password)").message("a tls user has a certificate, not a password"))]
pub struct UserAuthentication {
    /// `scram-sha-512` or `scram-sha-256` (the user has a credential for this mechanism
    /// only), or `tls` (a client certificate of the clients CA).
    #[serde(rename = "type")]
    pub type_: UserAuthenticationType,
    /// Where the SCRAM password comes from. Without it the operator generates one (32
    /// letters and digits) and keeps it in the user's Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<PasswordSource>,
}

/// How a user authenticates, by the name Strimzi's KafkaUser uses: a SCRAM mechanism, or
/// `tls`, a client certificate of the cluster's clients CA (`CN=<user>`, so the user's
/// principal is `User:CN=<user>`), kept with its key in the user's Secret (`user.crt`,
/// `user.key`, and `ca.crt`, the cluster CA the brokers' certificates verify against).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserAuthenticationType {
    #[serde(rename = "scram-sha-512")]
    ScramSha512,
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    #[serde(rename = "tls")]
    Tls,
}

impl UserAuthenticationType {
    /// The SCRAM mechanism's Kafka name; `None` for `tls`.
    pub fn mechanism(self) -> Option<&'static str> {
        match self {
            UserAuthenticationType::ScramSha512 => Some("SCRAM-SHA-512"),
            UserAuthenticationType::ScramSha256 => Some("SCRAM-SHA-256"),
            UserAuthenticationType::Tls => None,
        }
    }
}

/// A password kept in a Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PasswordSource {
    pub value_from: PasswordValueFrom,
}

/// The Secret key holding a password.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PasswordValueFrom {
    /// A key of a Secret in the user's namespace. A change of the password there is applied
    /// at the next reconciliation of the user (at most five minutes later).
    pub secret_key_ref: SecretKeyReference,
}

/// ACL authorization of a user.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UserAuthorization {
    /// `simple`: ACLs kept by the brokers (Kafka's `StandardAuthorizer`).
    #[serde(rename = "type", default)]
    pub type_: AuthorizationType,
    /// The user's ACLs: these are all of them, an ACL of `User:<name>` added outside this
    /// resource is removed.
    #[serde(default)]
    pub acls: Vec<AclRule>,
}

/// The kind of authorization.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthorizationType {
    #[default]
    Simple,
}

/// One ACL rule: the operations allowed (or denied) on a resource.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AclRule {
    pub resource: AclResource,
    /// The operations the rule allows or denies.
    #[schemars(length(min = 1))]
    pub operations: Vec<AclOperation>,
    /// Whether the rule allows or denies. A deny wins over any allow.
    #[serde(rename = "type", default)]
    pub type_: AclRuleType,
    /// The client address the rule applies to: `*` (every host) or an IP address.
    #[serde(default = "default_acl_host")]
    pub host: String,
}

fn default_acl_host() -> String {
    "*".to_string()
}

/// The resource an ACL rule protects.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.type == 'cluster' || has(self.name)")
        .message("a topic, group or transactionalId resource needs a name ('*' for all)"),
    validation = Rule::new("self.type != 'cluster' || (!has(self.name) && (!has(self.patternType) || self.patternType == 'literal'))")
        .message("the cluster resource has no name and no prefix pattern")
)]
pub struct AclResource {
    #[serde(rename = "type")]
    pub type_: AclResourceType,
    /// The resource's name, a prefix of names (`patternType: prefix`), or `*` for every
    /// resource of the type. The cluster resource has no name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub name: Option<String>,
    /// How `name` matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern_type: Option<AclPatternType>,
}

/// The kinds of resource an ACL protects.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AclResourceType {
    #[serde(rename = "topic")]
    Topic,
    #[serde(rename = "group")]
    Group,
    #[serde(rename = "cluster")]
    Cluster,
    #[serde(rename = "transactionalId")]
    TransactionalId,
}

/// How an ACL's resource name matches.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AclPatternType {
    /// The resource of exactly that name (every resource for `*`).
    #[default]
    Literal,
    /// Every resource whose name starts with the name.
    Prefix,
}

/// An operation on a resource, by Kafka's name.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AclOperation {
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    ClusterAction,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
}

/// Whether an ACL rule allows or denies.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AclRuleType {
    #[default]
    Allow,
    Deny,
}

/// A user's quotas (Kafka's `producer_byte_rate`, `consumer_byte_rate`, `request_percentage`,
/// `controller_mutation_rate`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UserQuotas {
    /// Bytes per second the user may produce, per broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub producer_byte_rate: Option<i64>,
    /// Bytes per second the user may fetch, per broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub consumer_byte_rate: Option<i64>,
    /// Percentage of one request handler thread's time the user may take, per broker
    /// (200 is two threads' worth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub request_percentage: Option<i64>,
    /// Partitions a second the user may create or delete (CreateTopics, CreatePartitions,
    /// DeleteTopics), per broker; a fraction is allowed. Over it, requests are refused with
    /// THROTTLING_QUOTA_EXCEEDED until the quota allows them, and clients retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_mutation_rate: Option<f64>,
}

/// What the operator last saw of a KafkaUser.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct KafkaUserStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling` and `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The user's name in Kafka (its principal is `User:<username>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The Secret with the user's `password` and `sasl.jaas.config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// What the operator is doing or what stops it, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A rebalance of a KafkaCluster's replicas and leaders: the operator computes a proposal into
/// the status, and carries it out only once the resource is annotated
/// `oxbow.dev/rebalance=approve`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "oxbow.dev",
    version = "v1alpha1",
    kind = "KafkaRebalance",
    namespaced,
    status = "KafkaRebalanceStatus",
    shortname = "kr",
    category = "oxbow",
    doc = "A rebalance of a KafkaCluster in the same namespace: a proposal first, carried out after approval (annotation oxbow.dev/rebalance=approve; stop and refresh too).",
    derive = "PartialEq",
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.clusterRef.name",
        description = "The KafkaCluster to rebalance"
    ),
    printcolumn(
        name = "Mode",
        type_ = "string",
        json_path = ".spec.mode",
        description = "What the rebalance balances"
    ),
    printcolumn(
        name = "State",
        type_ = "string",
        json_path = ".status.state",
        description = "ProposalReady, Rebalancing, Ready, Stopped or NotReady"
    ),
    printcolumn(
        name = "Moves",
        type_ = "integer",
        json_path = ".status.proposal.partitionMoves",
        description = "Partitions the proposal reassigns"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.spec.mode == 'full' || (has(self.spec.brokers) && size(self.spec.brokers) > 0)")
        .message("add-brokers and remove-brokers name the brokers in spec.brokers")
)]
#[serde(rename_all = "camelCase")]
pub struct KafkaRebalanceSpec {
    /// The KafkaCluster (in this namespace) to rebalance.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.clusterRef is immutable"))]
    pub cluster_ref: ClusterReference,
    /// `full`: replicas and preferred leaders spread evenly over every broker.
    /// `add-brokers`: the same, after new brokers (named in `brokers`) joined, which then take
    /// their share. `remove-brokers`: every replica moved off the brokers named in `brokers`,
    /// the rest balanced over the others.
    #[serde(default)]
    pub mode: RebalanceMode,
    /// The brokers (node ids) `add-brokers` and `remove-brokers` are about.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub brokers: Vec<i32>,
}

/// What a rebalance balances.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RebalanceMode {
    #[default]
    #[serde(rename = "full")]
    Full,
    #[serde(rename = "add-brokers")]
    AddBrokers,
    #[serde(rename = "remove-brokers")]
    RemoveBrokers,
}

/// What the operator last saw of a KafkaRebalance.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct KafkaRebalanceStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `ProposalReady` (waiting for approval), `Rebalancing`, `Ready` (done, or nothing to
    /// do), `Stopped` or `NotReady` (no proposal can be made; see `message`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// `Ready`, `Reconciling` and `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// What the rebalance does, as proposed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposal: Option<RebalanceProposal>,
    /// Progress of an approved rebalance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// What the operator is doing or what stops it, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A rebalance proposal: the moves, and the balance before and after.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RebalanceProposal {
    /// Partitions whose replica list changes.
    pub partition_moves: i32,
    /// Replicas copied to a broker that did not have them.
    pub replica_moves: i32,
    /// Preferred-leader elections after the moves.
    pub leader_elections: i32,
    /// Replicas per broker now.
    pub replicas_before: BTreeMap<String, i32>,
    /// Replicas per broker once the proposal is carried out.
    pub replicas_after: BTreeMap<String, i32>,
    /// Preferred leaders per broker now.
    pub leaders_before: BTreeMap<String, i32>,
    /// Preferred leaders per broker afterwards.
    pub leaders_after: BTreeMap<String, i32>,
    /// The first moves, `topic-partition: [from] -> [to]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moves: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    fn rules_of(value: &serde_json::Value) -> Vec<String> {
        value["x-kubernetes-validations"]
            .as_array()
            .map(|rules| {
                rules
                    .iter()
                    .filter_map(|r| r["rule"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn schema_of<K: CustomResourceExt>() -> serde_json::Value {
        let crd = serde_json::to_value(K::crd()).expect("a CRD serializes");
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
    }

    #[test]
    fn topic_partitions_may_only_grow() {
        let schema = schema_of::<KafkaTopic>();
        let partitions = &schema["properties"]["spec"]["properties"]["partitions"];
        assert_eq!(rules_of(partitions), vec!["self >= oldSelf".to_string()]);
        assert_eq!(partitions["minimum"], 1.0);
    }

    #[test]
    fn topic_names_are_checked_by_pattern_length_and_cel() {
        let schema = schema_of::<KafkaTopic>();
        let name = &schema["properties"]["spec"]["properties"]["topicName"];
        assert_eq!(name["pattern"], "^[a-zA-Z0-9._-]+$");
        assert_eq!(name["maxLength"], 249);
        assert!(rules_of(name).contains(&"self == oldSelf".to_string()));
        assert!(rules_of(&schema)
            .iter()
            .any(|rule| rule.contains("size(self.metadata.name) <= 249")));
    }

    #[test]
    fn cluster_replicas_are_at_least_one_and_names_fit_in_labels() {
        let schema = schema_of::<KafkaCluster>();
        let replicas = &schema["properties"]["spec"]["properties"]["replicas"];
        assert_eq!(rules_of(replicas), vec!["self >= 1".to_string()]);
        assert!(rules_of(&schema)
            .iter()
            .any(|rule| rule.contains(&MAX_CLUSTER_NAME.to_string())));
    }

    #[test]
    fn every_resource_has_status_and_printer_columns() {
        for crd in [
            KafkaCluster::crd(),
            KafkaTopic::crd(),
            KafkaUser::crd(),
            KafkaRebalance::crd(),
        ] {
            let version = &crd.spec.versions[0];
            assert_eq!(crd.spec.group, GROUP);
            assert_eq!(version.name, "v1alpha1");
            assert!(version
                .subresources
                .as_ref()
                .is_some_and(|s| s.status.is_some()));
            let columns = version
                .additional_printer_columns
                .as_ref()
                .expect("columns");
            assert!(columns.len() >= 4, "{columns:?}");
        }
    }

    #[test]
    fn an_empty_cluster_spec_takes_documented_defaults() {
        let spec: KafkaClusterSpec = serde_json::from_str("{}").expect("defaults");
        assert_eq!(spec.replicas, 3);
        assert_eq!(spec.listeners.client_port, 9092);
        assert_eq!(spec.listeners.controller_port, 9093);
        assert_eq!(spec.storage.size, "10Gi");
        assert!(!spec.storage.delete_claim);
        assert!(spec.metrics.enabled);
        assert_eq!(spec.metrics.port, 9404);
    }

    #[test]
    fn a_topic_name_defaults_to_the_resource_name() {
        let mut topic = KafkaTopic::new(
            "orders",
            KafkaTopicSpec {
                cluster_ref: ClusterReference {
                    name: "main".to_string(),
                },
                topic_name: None,
                partitions: Some(3),
                replicas: None,
                config: BTreeMap::new(),
                deletion_policy: DeletionPolicy::default(),
            },
        );
        assert_eq!(topic.topic_name(), "orders");
        topic.spec.topic_name = Some("Orders_v2".to_string());
        assert_eq!(topic.topic_name(), "Orders_v2");
    }
}
