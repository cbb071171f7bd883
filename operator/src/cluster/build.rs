//! The objects a KafkaCluster consists of, built from a [`ValidatedCluster`]: ConfigMap,
//! headless and client Services, StatefulSet and PodDisruptionBudget, and with `spec.rack` the
//! brokers' ServiceAccount and the ClusterRoleBinding that lets it read nodes. Pure functions.
//!
//! # How a broker pod finds its configuration
//!
//! The ConfigMap holds one complete `server.properties` per broker, keyed
//! `<pod name>.properties` (`main-0.properties`, ...), so each pod's `node.id`,
//! `process.roles` and `advertised.listeners` are fixed by the operator, not computed in the
//! pod. The broker container gets `POD_NAME` and `POD_NAMESPACE` from the downward API and
//! `OXBOW_CONFIG=/etc/oxbow/$(POD_NAME).properties`, and runs with `--config $(OXBOW_CONFIG)`;
//! Kubernetes expands both itself (the images have no shell). The broker reads its file and
//! nothing else (the arguments also replace the image's defaults, which would override it).
//! The node id equals the pod ordinal, the suffix of `POD_NAME` after its last `-`, should a
//! broker ever need to derive it.
//!
//! With `spec.rack`, the broker's `broker.rack` is its node's topology label, which the
//! downward API cannot read. Then an init container runs the operator image
//! (`oxbow-operator broker-init`, see [`crate::broker_init`]): under the cluster's own
//! ServiceAccount, with a token mounted in that container only, it reads the Node named by
//! `spec.nodeName` and writes the ConfigMap's file plus `broker.rack` to an emptyDir, and
//! `OXBOW_CONFIG` points there instead. Without `spec.rack` there is no init container.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetOrdinals, StatefulSetPersistentVolumeClaimRetentionPolicy,
    StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapProjection, ConfigMapVolumeSource, Container,
    ContainerPort, DownwardAPIProjection, DownwardAPIVolumeFile, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler, ObjectFieldSelector,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ProjectedVolumeSource,
    ResourceRequirements, SeccompProfile, SecretKeySelector, SecretVolumeSource, SecurityContext,
    Service, ServiceAccount, ServiceAccountTokenProjection, ServicePort, ServiceSpec, SleepAction,
    TCPSocketAction, TopologySpreadConstraint, Volume, VolumeMount, VolumeProjection,
    VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, NetworkPolicy, NetworkPolicyIngressRule,
    NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec, ServiceBackendPort,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::validate::{
    parse_quantity, port_name, protocol, DataVolume, ValidatedCluster, AUTHORIZER_CLASS,
    FIRST_CONTROLLER_ID,
};
use crate::crd::ListenerType;

/// Pod-template annotation holding a hash of everything that must restart the brokers when it
/// changes (shared configuration, quorum, image): a change rolls the pods one at a time.
pub const CONFIG_HASH_ANNOTATION: &str = "oxbow.dev/config-hash";
/// Where the ConfigMap is mounted.
pub const CONFIG_MOUNT: &str = "/etc/oxbow";
/// The broker runs as this unprivileged user (the image's `nonroot` user).
pub const BROKER_UID: i64 = 65532;
/// Default time a broker gets between SIGTERM and SIGKILL.
pub const DEFAULT_GRACE_SECONDS: i64 = 120;
/// Seconds the pod waits before SIGTERM, so Services stop routing to it first.
pub const PRE_STOP_SLEEP_SECONDS: i64 = 5;

/// The emptyDir the init container writes the broker's files to (memory-backed).
pub const RUN_MOUNT: &str = "/var/run/oxbow";
/// The broker's `server.properties` as the init container writes it.
pub const RUN_CONFIG: &str = "/var/run/oxbow/server.properties";
/// Where the TLS secret of the listeners is mounted (`tls.crt`, `tls.key`, `ca.crt`).
pub const TLS_MOUNT: &str = "/etc/oxbow-tls";
/// The key store the init container joins from `tls.crt` and `tls.key`
/// (`ssl.keystore.location`).
pub const KEYSTORE: &str = "/var/run/oxbow/keystore.pem";
/// Where a Kubernetes client looks for its service account token; mounted in the init
/// container only.
pub const SERVICE_ACCOUNT_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

const CONTAINER: &str = "broker";
const INIT_CONTAINER: &str = "broker-init";
const CONFIG_VOLUME: &str = "config";
const RUN_VOLUME: &str = "run";
const TOKEN_VOLUME: &str = "kube-api-access";
const TLS_VOLUME: &str = "tls";
const CERTS_VOLUME: &str = "certs";
/// Where Secret `<cluster>-broker-certs` is mounted: each broker's key store (`<pod>.pem`, a
/// certificate of the cluster CA and its key), `cluster-ca.crt` and `clients-ca.crt`.
pub const CERTS_MOUNT: &str = "/etc/oxbow-certs";
/// The prefix of the controller listener's TLS settings.
const CONTROLLER_SSL: &str = "listener.name.controller.ssl";
/// Pod template annotation with the generation of the brokers' certificates: a renewal
/// changes it, and so rolls the brokers onto the new certificates.
pub const CERTIFICATES_ANNOTATION: &str = "oxbow.dev/certificates-generation";

/// Everything a KafkaCluster consists of.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterResources {
    pub config_map: ConfigMap,
    pub headless_service: Service,
    pub bootstrap_service: Service,
    pub stateful_set: StatefulSet,
    pub pdb: PodDisruptionBudget,
    /// The brokers' own ServiceAccount, when their init container reads their node.
    pub service_account: Option<ServiceAccount>,
    /// Lets that ServiceAccount read nodes (cluster scoped, so not owned by the cluster: the
    /// operator deletes it through a finalizer).
    pub node_reader_binding: Option<ClusterRoleBinding>,
    /// The Services of `nodeport`, `loadbalancer` and `ingress` listeners (see
    /// [`external_services`]).
    pub external_services: Vec<Service>,
    /// The Ingresses of `ingress` listeners (see [`ingresses`]).
    pub ingresses: Vec<Ingress>,
    /// Who may reach which broker port (see [`network_policy`]).
    pub network_policy: Option<NetworkPolicy>,
    /// The dedicated controllers and their PodDisruptionBudget (`spec.controllers`).
    pub controllers: Option<(StatefulSet, PodDisruptionBudget)>,
}

/// What a pod of the cluster runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A broker (and, without dedicated controllers, for the first ones, a voter too).
    Broker,
    /// A dedicated controller (`process.roles=controller`).
    Controller,
}

impl Role {
    /// Its `app.kubernetes.io/component` label.
    fn component(self) -> &'static str {
        match self {
            Role::Broker => "broker",
            Role::Controller => "controller",
        }
    }
}

/// Builds every object of the cluster.
pub fn build(cluster: &ValidatedCluster) -> ClusterResources {
    build_running(cluster, cluster.replicas)
}

/// Builds every object with `brokers` pods, which differs from `spec.replicas` while a
/// scale-down drains the brokers that leave: they keep running, with their configuration,
/// until they are empty.
pub fn build_running(cluster: &ValidatedCluster, brokers: i32) -> ClusterResources {
    let mut stateful_set = stateful_set(cluster);
    if let Some(spec) = stateful_set.spec.as_mut() {
        spec.replicas = Some(brokers);
    }
    ClusterResources {
        config_map: config_map_for(cluster, brokers.max(cluster.replicas)),
        headless_service: headless_service(cluster),
        bootstrap_service: bootstrap_service(cluster),
        stateful_set,
        pdb: pod_disruption_budget(cluster),
        service_account: cluster.reads_node().then(|| service_account(cluster)),
        node_reader_binding: cluster.reads_node().then(|| node_reader_binding(cluster)),
        external_services: external_services(cluster, brokers.max(cluster.replicas)),
        ingresses: ingresses(cluster, brokers.max(cluster.replicas)),
        network_policy: network_policy(cluster),
        controllers: controller_stateful_set(cluster).map(|sts| {
            (
                sts,
                disruption_budget(
                    cluster,
                    cluster.controller_statefulset_name(),
                    Role::Controller,
                ),
            )
        }),
    }
}

/// The brokers' ingress: the controller port only from the cluster's brokers and the
/// operator's pods; so is the internal listener when ACLs are enforced (its clients are
/// `User:ANONYMOUS`, a super user), else it is open as the application listeners and the
/// metrics port are. `None` without the operator's pods to admit.
pub fn network_policy(cluster: &ValidatedCluster) -> Option<NetworkPolicy> {
    let operator = cluster.operator_pods.as_ref()?;
    let port = |port: i32| NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".to_string()),
        ..NetworkPolicyPort::default()
    };
    let mut private = vec![port(cluster.controller_port)];
    let mut open: Vec<NetworkPolicyPort> = cluster
        .additional_listeners
        .iter()
        .map(|l| port(l.port))
        .chain(cluster.metrics_port.map(port))
        .collect();
    if cluster.authorization.is_some() {
        private.push(port(cluster.client_port));
    } else {
        open.push(port(cluster.client_port));
    }
    let peers = vec![
        NetworkPolicyPeer {
            pod_selector: Some(LabelSelector {
                match_labels: Some(cluster_selector_labels(cluster)),
                ..LabelSelector::default()
            }),
            ..NetworkPolicyPeer::default()
        },
        NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "kubernetes.io/metadata.name".to_string(),
                    operator.namespace.clone(),
                )])),
                ..LabelSelector::default()
            }),
            pod_selector: Some(LabelSelector {
                match_labels: Some(operator.labels.clone()),
                ..LabelSelector::default()
            }),
            ..NetworkPolicyPeer::default()
        },
    ];
    Some(NetworkPolicy {
        metadata: metadata(cluster, cluster.network_policy_name()),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(cluster_selector_labels(cluster)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".to_string()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    from: Some(peers),
                    ports: Some(private),
                },
                NetworkPolicyIngressRule {
                    from: None,
                    ports: Some(open),
                },
            ]),
            ..NetworkPolicySpec::default()
        }),
    })
}

/// The ServiceAccount broker pods run as when their init container reads their node. No
/// token is mounted automatically: the pod mounts one into the init container alone.
pub fn service_account(cluster: &ValidatedCluster) -> ServiceAccount {
    ServiceAccount {
        metadata: metadata(cluster, cluster.broker_service_account_name()),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

/// Binds the operator's node-reading ClusterRole to the brokers' ServiceAccount. Labelled
/// with the cluster's namespace and name, since an owner reference cannot cross from a
/// cluster-scoped object to a namespaced one.
pub fn node_reader_binding(cluster: &ValidatedCluster) -> ClusterRoleBinding {
    let mut labels = labels(cluster);
    labels.insert("oxbow.dev/namespace".to_string(), cluster.namespace.clone());
    ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(cluster.node_reader_binding_name()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_string(),
            kind: "ClusterRole".to_string(),
            name: cluster.broker_cluster_role.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_string(),
            name: cluster.broker_service_account_name(),
            namespace: Some(cluster.namespace.clone()),
            ..Subject::default()
        }]),
    }
}

/// Labels that select the cluster's broker pods. Never change: a StatefulSet's selector is
/// immutable.
pub fn selector_labels(cluster: &ValidatedCluster) -> BTreeMap<String, String> {
    role_selector_labels(cluster, Role::Broker)
}

/// Labels that select the cluster's pods of `role`.
pub fn role_selector_labels(cluster: &ValidatedCluster, role: Role) -> BTreeMap<String, String> {
    let mut labels = cluster_selector_labels(cluster);
    labels.insert(
        "app.kubernetes.io/component".to_string(),
        role.component().to_string(),
    );
    labels
}

/// Labels that select every pod of the cluster, brokers and dedicated controllers.
pub fn cluster_selector_labels(cluster: &ValidatedCluster) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "oxbow".to_string()),
        (
            "app.kubernetes.io/instance".to_string(),
            cluster.name.clone(),
        ),
    ])
}

/// Labels on every object the operator creates for the cluster.
pub fn labels(cluster: &ValidatedCluster) -> BTreeMap<String, String> {
    role_labels(cluster, Role::Broker)
}

/// Labels on the objects of the pods of `role`.
fn role_labels(cluster: &ValidatedCluster, role: Role) -> BTreeMap<String, String> {
    let mut labels = role_selector_labels(cluster, role);
    labels.insert(
        "app.kubernetes.io/managed-by".to_string(),
        "oxbow-operator".to_string(),
    );
    labels.insert("app.kubernetes.io/part-of".to_string(), "oxbow".to_string());
    labels.insert("oxbow.dev/cluster".to_string(), cluster.name.clone());
    labels
}

/// The `<label>=<value>,...` form of the selector, for listing pods.
pub fn selector_string(cluster: &ValidatedCluster) -> String {
    selector_labels(cluster)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn metadata(cluster: &ValidatedCluster, name: String) -> ObjectMeta {
    role_metadata(cluster, name, Role::Broker)
}

fn role_metadata(cluster: &ValidatedCluster, name: String, role: Role) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(cluster.namespace.clone()),
        labels: Some(role_labels(cluster, role)),
        owner_references: Some(vec![cluster.owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// Settings every broker shares, in file order: quorum, storage, metrics, replication
/// defaults, then the user's settings.
pub fn shared_properties(cluster: &ValidatedCluster) -> Vec<(String, String)> {
    let voters = cluster
        .voters()
        .iter()
        .map(|id| format!("{id}@{}:{}", cluster.pod_host(*id), cluster.controller_port))
        .collect::<Vec<_>>()
        .join(",");
    let mut settings = vec![
        ("controller.quorum.voters".to_string(), voters),
        (
            "controller.listener.names".to_string(),
            "CONTROLLER".to_string(),
        ),
        (
            "listener.security.protocol.map".to_string(),
            std::iter::once("PLAINTEXT:PLAINTEXT,CONTROLLER:SSL".to_string())
                .chain(
                    cluster
                        .additional_listeners
                        .iter()
                        .map(|l| format!("{}:{}", l.name, protocol(l))),
                )
                .collect::<Vec<_>>()
                .join(","),
        ),
        (
            "inter.broker.listener.name".to_string(),
            "PLAINTEXT".to_string(),
        ),
        // Quorum traffic on mutual TLS: each broker presents its certificate of the cluster CA
        // (`listener.name.controller.ssl.keystore.location`, set per broker) and answers only
        // peers with one.
        (format!("{CONTROLLER_SSL}.keystore.type"), "PEM".to_string()),
        (
            format!("{CONTROLLER_SSL}.truststore.type"),
            "PEM".to_string(),
        ),
        (
            format!("{CONTROLLER_SSL}.truststore.location"),
            format!("{CERTS_MOUNT}/cluster-ca.crt"),
        ),
        (
            format!("{CONTROLLER_SSL}.client.auth"),
            "required".to_string(),
        ),
        (
            "log.dirs".to_string(),
            cluster
                .volumes
                .iter()
                .map(DataVolume::log_dir)
                .collect::<Vec<_>>()
                .join(","),
        ),
        (
            "metrics.address".to_string(),
            cluster
                .metrics_port
                .map(|port| format!("0.0.0.0:{port}"))
                .unwrap_or_default(),
        ),
    ];
    if let Some(tls) = &cluster.tls {
        settings.push(("ssl.keystore.type".to_string(), "PEM".to_string()));
        if tls.secret_name.is_some() {
            settings.push(("ssl.keystore.location".to_string(), KEYSTORE.to_string()));
        }
        settings.push((
            "ssl.client.auth".to_string(),
            tls.client_auth.as_str().to_string(),
        ));
        if cluster.checks_client_certificates() {
            settings.push(("ssl.truststore.type".to_string(), "PEM".to_string()));
            settings.push((
                "ssl.truststore.location".to_string(),
                if tls.secret_name.is_some() {
                    format!("{TLS_MOUNT}/ca.crt")
                } else {
                    format!("{CERTS_MOUNT}/clients-ca.crt")
                },
            ));
        }
    }
    if let Some(mechanism) = cluster.sasl_mechanism {
        settings.push(("sasl.enabled.mechanisms".to_string(), mechanism.to_string()));
    }
    if let Some(super_users) = cluster.super_users() {
        settings.push((
            "authorizer.class.name".to_string(),
            AUTHORIZER_CLASS.to_string(),
        ));
        settings.push(("super.users".to_string(), super_users));
    }
    settings.extend(replication_defaults(cluster));
    settings.extend(
        cluster
            .user_config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    settings
}

/// Replication defaults that fit the cluster's size, except those the user set. They change
/// with the number of brokers, so they stay out of [`config_hash`]: a change of size writes
/// them to the files without restarting any broker, and each broker takes them at its next
/// start.
pub fn replication_defaults(cluster: &ValidatedCluster) -> Vec<(String, String)> {
    let replication = cluster.replicas.min(3);
    [
        ("default.replication.factor", replication.to_string()),
        ("min.insync.replicas", (replication - 1).max(1).to_string()),
    ]
    .into_iter()
    .filter(|(key, _)| !cluster.user_config.contains_key(*key))
    .map(|(key, value)| (key.to_string(), value))
    .collect()
}

/// Settings particular to broker `ordinal`.
pub fn broker_properties(cluster: &ValidatedCluster, ordinal: i32) -> Vec<(String, String)> {
    let voter = cluster.voters().contains(&ordinal);
    let host = cluster.pod_host(ordinal);
    let mut listeners = vec![format!("PLAINTEXT://:{}", cluster.client_port)];
    let mut advertised = vec![format!("PLAINTEXT://{host}:{}", cluster.client_port)];
    for listener in &cluster.additional_listeners {
        listeners.push(format!("{}://:{}", listener.name, listener.port));
        // For a `nodeport` listener the init container puts the node's address in place of
        // the token.
        let external = cluster
            .external_addresses
            .get(&(listener.name.clone(), ordinal));
        advertised.push(match external {
            Some(address) => format!("{}://{address}", listener.name),
            None => format!("{}://{host}:{}", listener.name, listener.port),
        });
    }
    // Every broker listens for quorum traffic: voters vote, and the others are learners that
    // the leader replicates the metadata log to (a broker without a controller address cannot
    // join the quorum, and exits).
    listeners.push(format!("CONTROLLER://:{}", cluster.controller_port));
    let keystore = cluster.serves_cluster_ca_certificates().then(|| {
        (
            "ssl.keystore.location".to_string(),
            format!("{CERTS_MOUNT}/{}.pem", cluster.pod_name(ordinal)),
        )
    });
    let mut properties = vec![
        ("node.id".to_string(), ordinal.to_string()),
        (
            "process.roles".to_string(),
            if voter { "broker,controller" } else { "broker" }.to_string(),
        ),
        ("listeners".to_string(), listeners.join(",")),
        ("advertised.listeners".to_string(), advertised.join(",")),
    ];
    properties.extend(keystore);
    properties.push((
        format!("{CONTROLLER_SSL}.keystore.location"),
        format!("{CERTS_MOUNT}/{}.pem", cluster.pod_name(ordinal)),
    ));
    properties
}

/// Settings particular to dedicated controller `id`: it listens on the controller listener
/// alone, and keeps the metadata log on its own volume.
pub fn controller_properties(cluster: &ValidatedCluster, id: i32) -> Vec<(String, String)> {
    vec![
        ("node.id".to_string(), id.to_string()),
        ("process.roles".to_string(), "controller".to_string()),
        (
            "listeners".to_string(),
            format!("CONTROLLER://:{}", cluster.controller_port),
        ),
        (
            format!("{CONTROLLER_SSL}.keystore.location"),
            format!("{CERTS_MOUNT}/{}.pem", cluster.pod_name(id)),
        ),
    ]
}

/// Node `id`'s complete `server.properties`: a broker's or a dedicated controller's.
pub fn server_properties(cluster: &ValidatedCluster, id: i32) -> String {
    let pool = cluster
        .controllers
        .as_ref()
        .filter(|_| cluster.is_controller(id));
    let mut text = format!(
        "# server.properties of {role} {pod} in KafkaCluster {ns}/{name}.\n\
         # Written by oxbow-operator: edit the KafkaCluster (spec.config), not this file.\n\
         # The pod reads it as OXBOW_CONFIG=/etc/oxbow/$(POD_NAME).properties.\n",
        role = if pool.is_some() {
            "controller"
        } else {
            "broker"
        },
        pod = cluster.pod_name(id),
        ns = cluster.namespace,
        name = cluster.name,
    );
    let own = match pool {
        Some(_) => controller_properties(cluster, id),
        None => broker_properties(cluster, id),
    };
    let shared = shared_properties(cluster)
        .into_iter()
        .map(|(key, value)| match pool {
            Some(pool) if key == "log.dirs" => (key, pool.volume.log_dir()),
            _ => (key, value),
        });
    for (key, value) in own.into_iter().chain(shared) {
        // Values were checked for line breaks and trailing backslashes by validation.
        let _ = writeln!(text, "{key}={value}");
    }
    text
}

pub fn config_map(cluster: &ValidatedCluster) -> ConfigMap {
    config_map_for(cluster, cluster.replicas)
}

/// The ConfigMap with the files of brokers `0..brokers` and of the dedicated controllers.
fn config_map_for(cluster: &ValidatedCluster, brokers: i32) -> ConfigMap {
    let data = cluster
        .node_ids(brokers)
        .into_iter()
        .map(|id| {
            (
                format!("{}.properties", cluster.pod_name(id)),
                server_properties(cluster, id),
            )
        })
        .collect();
    ConfigMap {
        metadata: metadata(cluster, cluster.config_map_name()),
        data: Some(data),
        ..ConfigMap::default()
    }
}

/// FNV-1a, 64 bits: stable across Rust releases (unlike `DefaultHasher`), so upgrading the
/// operator does not roll every cluster.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Hash of what a running broker depends on: the shared settings (quorum included), ports,
/// and image. Nothing in it depends on the number of brokers (the quorum cannot change with
/// it, and the [`replication_defaults`] are left out), so a change of size restarts none of
/// the brokers already running.
pub fn config_hash(cluster: &ValidatedCluster) -> String {
    let by_size = replication_defaults(cluster);
    let mut input = String::new();
    for (key, value) in shared_properties(cluster)
        .into_iter()
        .filter(|(key, _)| !by_size.iter().any(|(sized, _)| sized == key))
    {
        let _ = writeln!(input, "{key}={value}");
    }
    let _ = writeln!(
        input,
        "ports={},{}\nimage={}",
        cluster.client_port, cluster.controller_port, cluster.image
    );
    format!("{:016x}", fnv1a(input.as_bytes()))
}

fn port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_string()),
        port,
        target_port: Some(IntOrString::String(name.to_string())),
        protocol: Some("TCP".to_string()),
        ..ServicePort::default()
    }
}

/// The ports of the client listeners: the internal one (`kafka`), then the additional ones.
fn client_ports(cluster: &ValidatedCluster) -> Vec<ServicePort> {
    std::iter::once(port("kafka", cluster.client_port))
        .chain(
            cluster
                .additional_listeners
                .iter()
                .map(|l| port(&port_name(l), l.port)),
        )
        .collect()
}

/// The headless Service behind the brokers' DNS names. It lists pods before they are ready,
/// since brokers must reach each other (quorum, replication) to become ready at all.
pub fn headless_service(cluster: &ValidatedCluster) -> Service {
    let mut ports = client_ports(cluster);
    ports.insert(1, port("controller", cluster.controller_port));
    if let Some(metrics) = cluster.metrics_port {
        ports.push(port("metrics", metrics));
    }
    Service {
        metadata: metadata(cluster, cluster.headless_service_name()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_string()),
            publish_not_ready_addresses: Some(true),
            // Brokers and dedicated controllers: every node's name resolves.
            selector: Some(cluster_selector_labels(cluster)),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The Service clients bootstrap from: ready brokers only.
pub fn bootstrap_service(cluster: &ValidatedCluster) -> Service {
    Service {
        metadata: metadata(cluster, cluster.bootstrap_service_name()),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(selector_labels(cluster)),
            ports: Some(client_ports(cluster)),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The Services of every `nodeport`, `loadbalancer` and `ingress` listener: one to bootstrap
/// from (ready brokers only) and one per broker of `brokers`, of type NodePort (each gets the
/// node port the listener fixes for it, or one the API server assigns), LoadBalancer (each
/// gets the address its load balancer controller assigns) or ClusterIP (behind an Ingress).
pub fn external_services(cluster: &ValidatedCluster, brokers: i32) -> Vec<Service> {
    let mut services = Vec::new();
    for listener in cluster.external_listeners() {
        let ports = |broker: Option<i32>| {
            vec![ServicePort {
                node_port: listener.fixed_node_port(broker),
                ..port(&port_name(listener), listener.port)
            }]
        };
        let type_ = match listener.type_ {
            ListenerType::LoadBalancer => "LoadBalancer",
            // The ingress controller reaches them inside the cluster.
            ListenerType::Ingress => "ClusterIP",
            ListenerType::NodePort | ListenerType::Internal => "NodePort",
        };
        services.push(Service {
            metadata: metadata(cluster, cluster.external_service_name(listener, None)),
            spec: Some(ServiceSpec {
                type_: Some(type_.to_string()),
                selector: Some(selector_labels(cluster)),
                ports: Some(ports(None)),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        });
        for ordinal in 0..brokers {
            let mut selector = selector_labels(cluster);
            selector.insert(
                "statefulset.kubernetes.io/pod-name".to_string(),
                cluster.pod_name(ordinal),
            );
            services.push(Service {
                metadata: metadata(
                    cluster,
                    cluster.external_service_name(listener, Some(ordinal)),
                ),
                spec: Some(ServiceSpec {
                    type_: Some(type_.to_string()),
                    selector: Some(selector),
                    // The broker is in the cluster's metadata before its pod is ready.
                    publish_not_ready_addresses: Some(true),
                    ports: Some(ports(Some(ordinal))),
                    ..ServiceSpec::default()
                }),
                ..Service::default()
            });
        }
    }
    services
}

/// The port clients reach an `ingress` listener on: the ingress controller's HTTPS port.
pub const INGRESS_PORT: i32 = 443;

/// The annotation that asks ingress-nginx to pass TLS through to the Service, routing by the
/// server name of the handshake, rather than terminate it.
pub const SSL_PASSTHROUGH: &str = "nginx.ingress.kubernetes.io/ssl-passthrough";

/// The Ingresses of every `ingress` listener: one per Service of [`external_services`], each
/// routing its host (TLS passed through, by SNI) to the Service's port.
pub fn ingresses(cluster: &ValidatedCluster, brokers: i32) -> Vec<Ingress> {
    let mut ingresses = Vec::new();
    for listener in cluster
        .external_listeners()
        .filter(|l| l.type_ == ListenerType::Ingress)
    {
        let class = listener
            .configuration
            .as_ref()
            .and_then(|c| c.class.clone());
        for broker in std::iter::once(None).chain((0..brokers).map(Some)) {
            let Some(host) = listener.ingress_host(broker) else {
                continue;
            };
            let name = cluster.external_service_name(listener, broker);
            let mut metadata = metadata(cluster, name.clone());
            metadata.annotations = Some(BTreeMap::from([
                (SSL_PASSTHROUGH.to_string(), "true".to_string()),
                (
                    "nginx.ingress.kubernetes.io/backend-protocol".to_string(),
                    "HTTPS".to_string(),
                ),
            ]));
            ingresses.push(Ingress {
                metadata,
                spec: Some(IngressSpec {
                    ingress_class_name: class.clone(),
                    rules: Some(vec![IngressRule {
                        host: Some(host.clone()),
                        http: Some(HTTPIngressRuleValue {
                            paths: vec![HTTPIngressPath {
                                path: Some("/".to_string()),
                                path_type: "Prefix".to_string(),
                                backend: IngressBackend {
                                    service: Some(IngressServiceBackend {
                                        name,
                                        port: Some(ServiceBackendPort {
                                            number: Some(listener.port),
                                            ..ServiceBackendPort::default()
                                        }),
                                    }),
                                    ..IngressBackend::default()
                                },
                            }],
                        }),
                    }]),
                    tls: Some(vec![IngressTLS {
                        hosts: Some(vec![host]),
                        ..IngressTLS::default()
                    }]),
                    ..IngressSpec::default()
                }),
                ..Ingress::default()
            });
        }
    }
    ingresses
}

fn env_from_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_string(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn tcp_probe(port: &str, period: i32, failures: i32) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String(port.to_string()),
            ..TCPSocketAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(3),
        ..Probe::default()
    }
}

/// Readiness means "registered, not fenced, every replica back in its ISR": the broker's
/// `GET /ready` on the metrics port. Without a metrics port, an open Kafka port is all there
/// is to check.
fn readiness_probe(cluster: &ValidatedCluster, role: Role) -> Probe {
    match cluster.metrics_port {
        Some(_) => Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/ready".to_string()),
                port: IntOrString::String("metrics".to_string()),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(5),
            failure_threshold: Some(3),
            timeout_seconds: Some(3),
            ..Probe::default()
        },
        None => tcp_probe(role.served_port(), 5, 3),
    }
}

impl Role {
    /// The port whose opening says the process has started: a dedicated controller listens
    /// on its controller port alone.
    fn served_port(self) -> &'static str {
        match self {
            Role::Broker => "kafka",
            Role::Controller => "controller",
        }
    }
}

fn broker_container(cluster: &ValidatedCluster, role: Role) -> Container {
    let mut ports = Vec::new();
    if role == Role::Broker {
        ports.push(ContainerPort {
            name: Some("kafka".to_string()),
            container_port: cluster.client_port,
            protocol: Some("TCP".to_string()),
            ..ContainerPort::default()
        });
    }
    ports.push(ContainerPort {
        name: Some("controller".to_string()),
        container_port: cluster.controller_port,
        protocol: Some("TCP".to_string()),
        ..ContainerPort::default()
    });
    let client_listeners = match role {
        Role::Broker => cluster.additional_listeners.as_slice(),
        Role::Controller => &[],
    };
    for listener in client_listeners {
        ports.push(ContainerPort {
            name: Some(port_name(listener)),
            container_port: listener.port,
            protocol: Some("TCP".to_string()),
            ..ContainerPort::default()
        });
    }
    if let Some(metrics) = cluster.metrics_port {
        ports.push(ContainerPort {
            name: Some("metrics".to_string()),
            container_port: metrics,
            protocol: Some("TCP".to_string()),
            ..ContainerPort::default()
        });
    }
    Container {
        name: CONTAINER.to_string(),
        image: Some(cluster.image.clone()),
        image_pull_policy: cluster.image_pull_policy.map(|p| p.as_str().to_string()),
        // Replaces the image's default arguments, which as flags would override the file.
        args: Some(vec!["--config".to_string(), "$(OXBOW_CONFIG)".to_string()]),
        env: Some(broker_env(cluster)),
        ports: Some(ports),
        resources: match (role, &cluster.controllers) {
            (Role::Controller, Some(pool)) => pool.resources.clone(),
            _ => cluster.resources.clone(),
        },
        volume_mounts: Some(broker_mounts(cluster, role)),
        // Recovery of a large log after a crash may take minutes: the startup probe allows
        // ten, then liveness and readiness take over.
        startup_probe: Some(tcp_probe(role.served_port(), 5, 120)),
        liveness_probe: Some(tcp_probe(role.served_port(), 10, 6)),
        readiness_probe: Some(readiness_probe(cluster, role)),
        lifecycle: Some(Lifecycle {
            // Leave the Services before SIGTERM starts the controlled shutdown.
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: PRE_STOP_SLEEP_SECONDS,
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        security_context: Some(container_security()),
        ..Container::default()
    }
}

fn broker_env(cluster: &ValidatedCluster) -> Vec<EnvVar> {
    let mut env = vec![
        env_from_field("POD_NAME", "metadata.name"),
        env_from_field("POD_NAMESPACE", "metadata.namespace"),
        EnvVar {
            name: "OXBOW_CONFIG".to_string(),
            value: Some(if cluster.needs_init() {
                RUN_CONFIG.to_string()
            } else {
                format!("{CONFIG_MOUNT}/$(POD_NAME).properties")
            }),
            ..EnvVar::default()
        },
    ];
    if let Some(admin) = &cluster.admin {
        // The password stays in its Secret: the kubelet puts it in the variable, and expands
        // `$(OXBOW_ADMIN_PASSWORD)` in the next one (declared after it, as it must be).
        env.push(EnvVar {
            name: "OXBOW_ADMIN_PASSWORD".to_string(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: admin.password_secret.name.clone(),
                    key: admin.password_secret.key.clone(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        });
        env.push(EnvVar {
            name: "OXBOW_ADD_SCRAM".to_string(),
            value: Some(format!(
                "{}=[name={},password=\"$(OXBOW_ADMIN_PASSWORD)\"]",
                admin.mechanism.as_str(),
                admin.username
            )),
            ..EnvVar::default()
        });
    }
    env
}

fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_string()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

fn mount(volume: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: volume.to_string(),
        mount_path: path.to_string(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

/// The data volumes of the pods of `role`: a broker's, or a dedicated controller's one.
fn role_volumes(cluster: &ValidatedCluster, role: Role) -> &[DataVolume] {
    match (role, &cluster.controllers) {
        (Role::Controller, Some(pool)) => std::slice::from_ref(&pool.volume),
        _ => &cluster.volumes,
    }
}

fn broker_mounts(cluster: &ValidatedCluster, role: Role) -> Vec<VolumeMount> {
    let mut mounts: Vec<VolumeMount> = role_volumes(cluster, role)
        .iter()
        .map(|v| mount(&v.claim_template(), &v.mount_path(), false))
        .collect();
    mounts.push(mount(CONFIG_VOLUME, CONFIG_MOUNT, true));
    if cluster.needs_init() {
        mounts.push(mount(RUN_VOLUME, RUN_MOUNT, true));
    }
    let own_secret = cluster
        .tls
        .as_ref()
        .is_some_and(|tls| tls.secret_name.is_some());
    if own_secret && cluster.checks_client_certificates() {
        // The trust store (`ca.crt`) is read by the broker itself.
        mounts.push(mount(TLS_VOLUME, TLS_MOUNT, true));
    }
    // Every broker presents its certificate on the controller listener.
    mounts.push(mount(CERTS_VOLUME, CERTS_MOUNT, true));
    mounts
}

/// `oxbow-operator broker-init`: writes the broker's `server.properties` to the emptyDir, with
/// `broker.rack` read from the pod's node (the only container with an API token), and joins
/// the TLS secret's certificate chain and key into the one PEM file the broker reads.
fn init_container(cluster: &ValidatedCluster) -> Container {
    let mut args = vec![
        "broker-init".to_string(),
        "--config-in".to_string(),
        format!("{CONFIG_MOUNT}/$(POD_NAME).properties"),
        "--config-out".to_string(),
        RUN_CONFIG.to_string(),
    ];
    let mut env = vec![env_from_field("POD_NAME", "metadata.name")];
    if let Some(key) = &cluster.rack_topology_key {
        // Only a pod that reads its node's rack is told the node's name: the kubelet expands
        // `$(NODE_NAME)` in the arguments from this variable.
        env.push(env_from_field("NODE_NAME", "spec.nodeName"));
        args.extend([
            "--node".to_string(),
            "$(NODE_NAME)".to_string(),
            "--rack-label".to_string(),
            key.clone(),
        ]);
    }
    if cluster.node_port_listeners().next().is_some() {
        // What `nodeport` listeners advertise: the address of the pod's node.
        env.push(env_from_field("HOST_IP", "status.hostIP"));
        args.extend(["--node-address".to_string(), "$(HOST_IP)".to_string()]);
    }
    let mut mounts = vec![
        mount(CONFIG_VOLUME, CONFIG_MOUNT, true),
        mount(RUN_VOLUME, RUN_MOUNT, false),
    ];
    if cluster.reads_node() {
        mounts.push(mount(TOKEN_VOLUME, SERVICE_ACCOUNT_MOUNT, true));
    }
    if cluster
        .tls
        .as_ref()
        .is_some_and(|tls| tls.secret_name.is_some())
    {
        args.extend([
            "--tls-cert".to_string(),
            format!("{TLS_MOUNT}/tls.crt"),
            "--tls-key".to_string(),
            format!("{TLS_MOUNT}/tls.key"),
            "--keystore-out".to_string(),
            KEYSTORE.to_string(),
        ]);
        mounts.push(mount(TLS_VOLUME, TLS_MOUNT, true));
    }
    Container {
        name: INIT_CONTAINER.to_string(),
        image: Some(cluster.operator_image.clone()),
        image_pull_policy: cluster.image_pull_policy.map(|p| p.as_str().to_string()),
        args: Some(args),
        env: Some(env),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("10m".to_string())),
                ("memory".to_string(), Quantity("32Mi".to_string())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_string(),
                Quantity("128Mi".to_string()),
            )])),
            ..ResourceRequirements::default()
        }),
        volume_mounts: Some(mounts),
        security_context: Some(container_security()),
        ..Container::default()
    }
}

/// What `automountServiceAccountToken` would mount, as a projected volume, so that only the
/// init container gets it.
fn token_volume() -> Volume {
    Volume {
        name: TOKEN_VOLUME.to_string(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: "token".to_string(),
                        expiration_seconds: Some(3607),
                        ..ServiceAccountTokenProjection::default()
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "kube-root-ca.crt".to_string(),
                        items: Some(vec![KeyToPath {
                            key: "ca.crt".to_string(),
                            path: "ca.crt".to_string(),
                            ..KeyToPath::default()
                        }]),
                        ..ConfigMapProjection::default()
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    downward_api: Some(DownwardAPIProjection {
                        items: Some(vec![DownwardAPIVolumeFile {
                            path: "namespace".to_string(),
                            field_ref: Some(ObjectFieldSelector {
                                field_path: "metadata.namespace".to_string(),
                                ..ObjectFieldSelector::default()
                            }),
                            ..DownwardAPIVolumeFile::default()
                        }]),
                    }),
                    ..VolumeProjection::default()
                },
            ]),
            ..ProjectedVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn pod_volumes(cluster: &ValidatedCluster) -> Vec<Volume> {
    let mut volumes = vec![Volume {
        name: CONFIG_VOLUME.to_string(),
        config_map: Some(ConfigMapVolumeSource {
            name: cluster.config_map_name(),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }];
    if cluster.needs_init() {
        volumes.push(Volume {
            name: RUN_VOLUME.to_string(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".to_string()),
                size_limit: Some(Quantity("1Mi".to_string())),
            }),
            ..Volume::default()
        });
    }
    if cluster.reads_node() {
        volumes.push(token_volume());
    }
    if let Some(secret) = cluster.tls.as_ref().and_then(|tls| tls.secret_name.clone()) {
        volumes.push(Volume {
            name: TLS_VOLUME.to_string(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret),
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    volumes.push(Volume {
        name: CERTS_VOLUME.to_string(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(cluster.broker_certs_secret_name()),
            default_mode: Some(0o440),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    });
    volumes
}

/// Brokers (and dedicated controllers) prefer distinct nodes unless the user gave their own
/// affinity.
fn affinity(cluster: &ValidatedCluster, role: Role) -> Affinity {
    if let Some(affinity) = &cluster.pod.affinity {
        return affinity.clone();
    }
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        label_selector: Some(LabelSelector {
                            match_labels: Some(role_selector_labels(cluster, role)),
                            ..LabelSelector::default()
                        }),
                        topology_key: "kubernetes.io/hostname".to_string(),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

fn pod_template(cluster: &ValidatedCluster, role: Role) -> PodTemplateSpec {
    let mut pod_labels = cluster.pod.labels.clone();
    pod_labels.extend(role_labels(cluster, role));
    let mut annotations = cluster.pod.annotations.clone();
    annotations.insert(CONFIG_HASH_ANNOTATION.to_string(), config_hash(cluster));
    annotations.insert(
        CERTIFICATES_ANNOTATION.to_string(),
        cluster.certificates_generation.to_string(),
    );
    if let Some(metrics) = cluster.metrics_port {
        annotations.insert("prometheus.io/scrape".to_string(), "true".to_string());
        annotations.insert("prometheus.io/port".to_string(), metrics.to_string());
        annotations.insert("prometheus.io/path".to_string(), "/metrics".to_string());
    }
    let spread = cluster.rack_topology_key.as_ref().map(|key| {
        vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: key.clone(),
            when_unsatisfiable: "ScheduleAnyway".to_string(),
            label_selector: Some(LabelSelector {
                match_labels: Some(role_selector_labels(cluster, role)),
                ..LabelSelector::default()
            }),
            ..TopologySpreadConstraint::default()
        }]
    });
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            init_containers: cluster.needs_init().then(|| vec![init_container(cluster)]),
            containers: vec![broker_container(cluster, role)],
            service_account_name: cluster
                .reads_node()
                .then(|| cluster.broker_service_account_name()),
            affinity: Some(affinity(cluster, role)),
            topology_spread_constraints: spread,
            tolerations: (!cluster.pod.tolerations.is_empty())
                .then(|| cluster.pod.tolerations.clone()),
            node_selector: (!cluster.pod.node_selector.is_empty())
                .then(|| cluster.pod.node_selector.clone()),
            priority_class_name: cluster.pod.priority_class_name.clone(),
            termination_grace_period_seconds: Some(
                cluster
                    .pod
                    .termination_grace_period_seconds
                    .unwrap_or(DEFAULT_GRACE_SECONDS),
            ),
            // The broker talks to Kafka clients only; it needs no Kubernetes credentials. The
            // init container, when there is one, mounts its token itself.
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(BROKER_UID),
                run_as_group: Some(BROKER_UID),
                fs_group: Some(BROKER_UID),
                // The volume is chowned once, not at every start: a large log would otherwise
                // delay each restart by a walk over every file.
                fs_group_change_policy: Some("OnRootMismatch".to_string()),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".to_string(),
                    ..SeccompProfile::default()
                }),
                ..PodSecurityContext::default()
            }),
            volumes: Some(pod_volumes(cluster)),
            ..PodSpec::default()
        }),
    }
}

fn volume_claim_template(
    cluster: &ValidatedCluster,
    volume: &DataVolume,
    role: Role,
) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(volume.claim_template()),
            labels: Some(role_selector_labels(cluster, role)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_string()]),
            storage_class_name: volume.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(volume.size.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

/// The brokers. Pods start in parallel (a quorum needs its voters up together); a changed
/// template restarts no pod by itself (`OnDelete`): the operator deletes one outdated pod at a
/// time, waiting for zero under-replicated partitions in between.
pub fn stateful_set(cluster: &ValidatedCluster) -> StatefulSet {
    pool_stateful_set(
        cluster,
        Role::Broker,
        cluster.statefulset_name(),
        cluster.replicas,
    )
}

/// The dedicated controllers: their ordinals (and node ids) start at
/// [`FIRST_CONTROLLER_ID`]. Holding no partitions, they roll as the StatefulSet controller
/// rolls them: one at a time, the next once the last is ready again, that is once it knows the
/// quorum's leader.
pub fn controller_stateful_set(cluster: &ValidatedCluster) -> Option<StatefulSet> {
    let pool = cluster.controllers.as_ref()?;
    let mut sts = pool_stateful_set(
        cluster,
        Role::Controller,
        cluster.controller_statefulset_name(),
        pool.replicas,
    );
    if let Some(spec) = sts.spec.as_mut() {
        spec.ordinals = Some(StatefulSetOrdinals {
            start: Some(FIRST_CONTROLLER_ID),
        });
        spec.update_strategy = Some(StatefulSetUpdateStrategy {
            type_: Some("RollingUpdate".to_string()),
            ..StatefulSetUpdateStrategy::default()
        });
    }
    Some(sts)
}

fn pool_stateful_set(
    cluster: &ValidatedCluster,
    role: Role,
    name: String,
    replicas: i32,
) -> StatefulSet {
    let retention = if cluster.delete_claim {
        "Delete"
    } else {
        "Retain"
    };
    StatefulSet {
        metadata: role_metadata(cluster, name, role),
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(cluster.headless_service_name()),
            selector: LabelSelector {
                match_labels: Some(role_selector_labels(cluster, role)),
                ..LabelSelector::default()
            },
            pod_management_policy: Some("Parallel".to_string()),
            // The operator restarts outdated brokers itself, one at a time and only while the
            // cluster is healthy (`cluster::roll`).
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".to_string()),
                ..StatefulSetUpdateStrategy::default()
            }),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(retention.to_string()),
                    // The operator shrinks the StatefulSet only once the leaving brokers are
                    // drained, so their volumes hold nothing the cluster needs.
                    when_scaled: Some(retention.to_string()),
                },
            ),
            template: pod_template(cluster, role),
            volume_claim_templates: Some(
                role_volumes(cluster, role)
                    .iter()
                    .map(|volume| volume_claim_template(cluster, volume, role))
                    .collect(),
            ),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

/// Each volume claim template of a StatefulSet, by name: its storage request and class.
fn claim_storage(sts: &StatefulSet) -> BTreeMap<String, (String, Option<String>)> {
    let templates = sts
        .spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_ref());
    templates
        .into_iter()
        .flatten()
        .filter_map(|template| {
            let claim = template.spec.as_ref()?;
            let size = claim
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|requests| requests.get("storage"))
                .map(|q| q.0.clone())?;
            Some((
                template.metadata.name.clone()?,
                (size, claim.storage_class_name.clone()),
            ))
        })
        .collect()
}

/// The volumes the `running` StatefulSet's brokers have, read back from its claim templates;
/// `None` when one is not a template the operator makes.
pub fn running_volumes(running: &StatefulSet) -> Option<Vec<DataVolume>> {
    let templates = claim_storage(running);
    if templates.is_empty() {
        return None;
    }
    templates
        .into_iter()
        .map(|(template, (size, storage_class_name))| {
            let id = match template.strip_prefix("data-") {
                Some(id) => Some(id.parse().ok()?),
                None if template == "data" => None,
                None => return None,
            };
            Some(DataVolume {
                id,
                size,
                storage_class_name,
            })
        })
        .collect()
}

/// The spec field that sizes the volumes of claim template `template`.
pub fn volume_field(template: &str) -> String {
    match template.strip_prefix("data-") {
        Some(id) => format!("spec.storage.volumes[id={id}]"),
        None => "spec.storage".to_string(),
    }
}

/// One volume claim template whose claims grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeGrowth {
    /// The claim template: the claims are `<template>-<pod>`.
    pub template: String,
    pub from: String,
    pub to: String,
}

/// What the spec's storage asks of the volumes the running brokers have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageChange {
    /// The volumes are as the spec says, or there are none yet.
    Unchanged,
    /// Larger volumes of the same class: the claims grow in place, if their StorageClass
    /// allows it, and the StatefulSet is made again with the larger templates.
    Grow(Vec<VolumeGrowth>),
    /// JBOD volumes added after every one the brokers have (the claim templates named), the
    /// others as they were: the StatefulSet is made again with them, and the brokers roll
    /// onto them.
    Add(Vec<String>),
    /// What volumes cannot do (shrink, change class, be removed, be added before another, or
    /// grow while others are added), with why.
    Refused(String),
}

/// Compares the volume claims `stateful_set` asks for with those of the `running` one.
pub fn storage_change(stateful_set: &StatefulSet, running: Option<&StatefulSet>) -> StorageChange {
    let had = running.map(claim_storage).unwrap_or_default();
    if had.is_empty() {
        return StorageChange::Unchanged;
    }
    let wanted = claim_storage(stateful_set);
    if wanted.is_empty() {
        return StorageChange::Unchanged;
    }
    if !had.keys().eq(wanted.keys()) {
        let names = |m: &BTreeMap<String, _>| m.keys().cloned().collect::<Vec<_>>().join(", ");
        let id = |template: &str| template.strip_prefix("data-")?.parse::<u32>().ok();
        let last = had.keys().map(|t| id(t)).max().flatten();
        let added: Vec<String> = wanted
            .keys()
            .filter(|t| !had.contains_key(*t))
            .cloned()
            .collect();
        let kept = had
            .iter()
            .all(|(template, storage)| wanted.get(template) == Some(storage));
        let after = had.keys().all(|t| id(t).is_some())
            && added
                .iter()
                .all(|t| id(t).zip(last).is_some_and(|(new, last)| new > last));
        if kept && after {
            return StorageChange::Add(added);
        }
        let why = if !had.keys().all(|t| wanted.contains_key(t)) {
            "a volume cannot be removed from running brokers (the replicas on it would be lost)"
        } else if !after {
            "a volume can be added to running brokers only after every volume they have (a higher id: the first one holds the metadata log, and the order of log.dirs stays), and only to brokers with JBOD volumes"
        } else {
            "volumes are added to running brokers one change at a time: leave the sizes and classes of the others as they are meanwhile"
        };
        return StorageChange::Refused(format!(
            "spec.storage asks for the volumes {} but the brokers have {}: {why}, so they are kept as they are (set spec.storage.volumes back; every other change is applied)",
            names(&wanted),
            names(&had)
        ));
    }
    let mut growth = Vec::new();
    for (template, (size, class)) in wanted {
        let Some((had_size, had_class)) = had.get(&template).cloned() else {
            continue;
        };
        let field = volume_field(&template);
        let back = format!(
            "set {field} back to size {had_size}{}",
            had_class
                .as_ref()
                .map(|class| format!(", storageClassName {class}"))
                .unwrap_or_default()
        );
        if class != had_class {
            let name = |class: &Option<String>| {
                class
                    .clone()
                    .unwrap_or_else(|| "the cluster's default".to_string())
            };
            return StorageChange::Refused(format!(
                "{field}.storageClassName is {} but the volumes were created with {}: a volume cannot change class, so they are kept as they are ({back}; every other change is applied)",
                name(&class),
                name(&had_class)
            ));
        }
        match (parse_quantity(&size), parse_quantity(&had_size)) {
            (Ok(wanted), Ok(had)) if wanted > had => growth.push(VolumeGrowth {
                template,
                from: had_size,
                to: size,
            }),
            (Ok(wanted), Ok(had)) if wanted == had => {}
            _ if size == had_size => {}
            _ => {
                return StorageChange::Refused(format!(
                    "{field}.size is {size} but the brokers' volumes have {had_size}: a volume cannot shrink, so they are kept as they are ({back}; every other change is applied)"
                ))
            }
        }
    }
    if growth.is_empty() {
        StorageChange::Unchanged
    } else {
        StorageChange::Grow(growth)
    }
}

/// A StatefulSet's `volumeClaimTemplates` cannot change once it exists (the API server answers
/// 422): for a refused storage change, `stateful_set` keeps the `running` StatefulSet's
/// templates, which lets every other change still apply.
pub fn keep_volume_claims(stateful_set: &mut StatefulSet, running: Option<&StatefulSet>) {
    let kept = running
        .and_then(|running| running.spec.as_ref())
        .and_then(|spec| spec.volume_claim_templates.clone());
    if let (Some(spec), Some(kept)) = (stateful_set.spec.as_mut(), kept) {
        spec.volume_claim_templates = Some(kept);
    }
}

/// The claim of broker `ordinal`'s volume from claim template `template`, as the StatefulSet
/// controller names it.
pub fn claim_name(cluster: &ValidatedCluster, template: &str, ordinal: i32) -> String {
    format!("{template}-{}", cluster.pod_name(ordinal))
}

/// At most one broker down for voluntary disruptions (node drains, upgrades).
pub fn pod_disruption_budget(cluster: &ValidatedCluster) -> PodDisruptionBudget {
    disruption_budget(cluster, cluster.pdb_name(), Role::Broker)
}

/// At most one pod of `role` down for voluntary disruptions.
fn disruption_budget(cluster: &ValidatedCluster, name: String, role: Role) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: role_metadata(cluster, name, role),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(role_selector_labels(cluster, role)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker_init::NODE_ADDRESS;
    use crate::cluster::validate::{validate, OperatorSettings};
    use crate::test_support::{cluster, MINIMAL_CLUSTER};

    fn valid(yaml: &str) -> ValidatedCluster {
        validate(&cluster(yaml), &OperatorSettings::default()).expect("valid fixture")
    }

    fn with(spec_lines: &str) -> ValidatedCluster {
        valid(&format!("{MINIMAL_CLUSTER}\n{spec_lines}"))
    }

    fn properties(text: &str) -> BTreeMap<String, String> {
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn pod_spec(sts: &StatefulSet) -> PodSpec {
        sts.spec
            .clone()
            .and_then(|s| s.template.spec)
            .expect("pod spec")
    }

    fn container(sts: &StatefulSet) -> Container {
        pod_spec(sts).containers[0].clone()
    }

    fn template_annotations(sts: &StatefulSet) -> BTreeMap<String, String> {
        sts.spec
            .clone()
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.annotations)
            .expect("annotations")
    }

    #[test]
    fn every_object_is_owned_by_the_cluster_and_labelled() {
        let c = valid(MINIMAL_CLUSTER);
        let r = build(&c);
        let metas = [
            &r.config_map.metadata,
            &r.headless_service.metadata,
            &r.bootstrap_service.metadata,
            &r.stateful_set.metadata,
            &r.pdb.metadata,
        ];
        for meta in metas {
            assert_eq!(meta.namespace.as_deref(), Some("streaming"));
            let owners = meta.owner_references.as_ref().expect("owner");
            assert_eq!(owners.len(), 1);
            assert_eq!(owners[0].kind, "KafkaCluster");
            assert_eq!(owners[0].name, "main");
            assert_eq!(owners[0].uid, "6f0c3f5e-0000-4000-8000-000000000001");
            assert_eq!(owners[0].controller, Some(true));
            let labels = meta.labels.as_ref().expect("labels");
            assert_eq!(labels["app.kubernetes.io/instance"], "main");
            assert_eq!(labels["app.kubernetes.io/managed-by"], "oxbow-operator");
        }
        let names: Vec<_> = metas
            .iter()
            .map(|m| m.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(
            names,
            [
                "main-config",
                "main-brokers",
                "main-bootstrap",
                "main",
                "main"
            ]
        );
    }

    #[test]
    fn the_broker_accepts_every_server_properties_the_operator_writes() {
        let c = with("  replicas: 5\n  config:\n    log.retention.hours: \"24\"");
        for (name, text) in config_map(&c).data.expect("data") {
            let settings = properties(&text);
            let config = oxbow_broker::config::BrokerConfig::from_settings(settings)
                .unwrap_or_else(|e| panic!("{name} is refused by the broker: {e}"));
            // Voter or learner, a broker joins the metadata quorum on its controller listener.
            assert!(
                config.controller_listener.is_some(),
                "{name} has no controller listener"
            );
        }
    }

    #[test]
    fn dedicated_controllers_are_a_statefulset_of_their_own_and_the_quorum() {
        let c = with(
            "  replicas: 2\n  storage:\n    volumes:\n      - id: 0\n      - id: 1\n  controllers:\n    replicas: 3\n    storage:\n      size: 2Gi",
        );
        let data = config_map(&c).data.expect("data");
        assert_eq!(
            data.keys().collect::<Vec<_>>(),
            [
                "main-0.properties",
                "main-1.properties",
                "main-controller-1000.properties",
                "main-controller-1001.properties",
                "main-controller-1002.properties"
            ]
        );
        let broker = properties(&data["main-1.properties"]);
        assert_eq!(broker["process.roles"], "broker");
        assert_eq!(
            broker["controller.quorum.voters"],
            "1000@main-controller-1000.main-brokers.streaming.svc.cluster.local:9093,\
             1001@main-controller-1001.main-brokers.streaming.svc.cluster.local:9093,\
             1002@main-controller-1002.main-brokers.streaming.svc.cluster.local:9093"
        );
        assert_eq!(
            broker["log.dirs"],
            "/var/lib/oxbow/data-0/log,/var/lib/oxbow/data-1/log"
        );
        // Two brokers, yet replication as the cluster's size allows.
        assert_eq!(broker["default.replication.factor"], "2");
        let controller = properties(&data["main-controller-1001.properties"]);
        assert_eq!(controller["node.id"], "1001");
        assert_eq!(controller["process.roles"], "controller");
        assert_eq!(controller["listeners"], "CONTROLLER://:9093");
        assert!(!controller.contains_key("advertised.listeners"));
        assert_eq!(controller["log.dirs"], "/var/lib/oxbow/data");
        assert_eq!(
            controller["controller.quorum.voters"],
            broker["controller.quorum.voters"]
        );
        assert_eq!(
            controller["listener.name.controller.ssl.keystore.location"],
            format!("{CERTS_MOUNT}/main-controller-1001.pem")
        );

        let r = build(&c);
        let (sts, pdb) = r.controllers.expect("the controllers");
        let spec = sts.spec.clone().expect("spec");
        assert_eq!(sts.metadata.name.as_deref(), Some("main-controller"));
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(
            spec.ordinals.and_then(|o| o.start),
            Some(FIRST_CONTROLLER_ID)
        );
        assert_eq!(
            spec.update_strategy.and_then(|u| u.type_).as_deref(),
            Some("RollingUpdate")
        );
        assert_eq!(spec.service_name.as_deref(), Some("main-brokers"));
        let component =
            |labels: &BTreeMap<String, String>| labels.get("app.kubernetes.io/component").cloned();
        assert_eq!(
            component(spec.selector.match_labels.as_ref().expect("selector")).as_deref(),
            Some("controller")
        );
        let claims = spec.volume_claim_templates.clone().expect("claims");
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0].metadata.name.as_deref(), Some("data"));
        assert_eq!(
            claims[0]
                .spec
                .as_ref()
                .and_then(|s| s.resources.as_ref())
                .and_then(|r| r.requests.as_ref())
                .map(|r| r["storage"].0.clone())
                .as_deref(),
            Some("2Gi")
        );
        let ports: Vec<_> = container(&sts)
            .ports
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| p.name)
            .collect();
        assert_eq!(ports, ["controller", "metrics"]);
        assert_eq!(
            component(
                pdb.spec
                    .and_then(|s| s.selector)
                    .and_then(|s| s.match_labels)
                    .as_ref()
                    .expect("pdb selector")
            )
            .as_deref(),
            Some("controller")
        );
        // Every node resolves through the headless Service; clients reach brokers only.
        let headless = r
            .headless_service
            .spec
            .and_then(|s| s.selector)
            .expect("selector");
        assert_eq!(component(&headless), None);
        let bootstrap = r
            .bootstrap_service
            .spec
            .and_then(|s| s.selector)
            .expect("selector");
        assert_eq!(component(&bootstrap).as_deref(), Some("broker"));
        assert_eq!(
            c.broker_certificate_names(1000),
            [
                "main-controller-1000.main-brokers.streaming.svc.cluster.local",
                "main-controller-1000.main-brokers.streaming.svc",
                "main-controller-1000.main-brokers.streaming"
            ]
        );
        assert!(build(&with("  replicas: 2")).controllers.is_none());
    }

    #[test]
    fn each_broker_gets_its_own_complete_server_properties() {
        let c = valid(MINIMAL_CLUSTER);
        let data = config_map(&c).data.expect("data");
        assert_eq!(
            data.keys().collect::<Vec<_>>(),
            [
                "main-0.properties",
                "main-1.properties",
                "main-2.properties"
            ]
        );
        let zero = properties(&data["main-0.properties"]);
        assert_eq!(zero["node.id"], "0");
        assert_eq!(zero["process.roles"], "broker,controller");
        assert_eq!(zero["listeners"], "PLAINTEXT://:9092,CONTROLLER://:9093");
        assert_eq!(
            zero["advertised.listeners"],
            "PLAINTEXT://main-0.main-brokers.streaming.svc.cluster.local:9092"
        );
        assert_eq!(
            zero["controller.quorum.voters"],
            "0@main-0.main-brokers.streaming.svc.cluster.local:9093,\
             1@main-1.main-brokers.streaming.svc.cluster.local:9093,\
             2@main-2.main-brokers.streaming.svc.cluster.local:9093"
        );
        assert_eq!(zero["controller.listener.names"], "CONTROLLER");
        // Quorum traffic on mutual TLS with each broker's certificate of the cluster CA.
        assert_eq!(
            zero["listener.security.protocol.map"],
            "PLAINTEXT:PLAINTEXT,CONTROLLER:SSL"
        );
        assert_eq!(
            zero["listener.name.controller.ssl.keystore.location"],
            format!("{CERTS_MOUNT}/main-0.pem")
        );
        assert_eq!(
            zero["listener.name.controller.ssl.truststore.location"],
            format!("{CERTS_MOUNT}/cluster-ca.crt")
        );
        assert_eq!(zero["listener.name.controller.ssl.client.auth"], "required");
        assert_eq!(zero["log.dirs"], "/var/lib/oxbow/data");
        assert_eq!(zero["metrics.address"], "0.0.0.0:9404");
        assert_eq!(zero["default.replication.factor"], "3");
        assert_eq!(zero["min.insync.replicas"], "2");
        let two = properties(&data["main-2.properties"]);
        assert_eq!(two["node.id"], "2");
        assert_eq!(
            two["advertised.listeners"],
            "PLAINTEXT://main-2.main-brokers.streaming.svc.cluster.local:9092"
        );
    }

    #[test]
    fn brokers_beyond_the_quorum_have_the_broker_role_only_and_learn_on_the_controller_port() {
        let c = with("  replicas: 5");
        let four = properties(&server_properties(&c, 4));
        assert_eq!(four["process.roles"], "broker");
        assert_eq!(four["listeners"], "PLAINTEXT://:9092,CONTROLLER://:9093");
        assert_eq!(
            four["advertised.listeners"],
            "PLAINTEXT://main-4.main-brokers.streaming.svc.cluster.local:9092"
        );
        assert_eq!(four["controller.quorum.voters"].matches('@').count(), 3);
    }

    #[test]
    fn a_single_broker_is_its_own_quorum_with_replication_one() {
        let c = with("  replicas: 1");
        let zero = properties(&server_properties(&c, 0));
        assert_eq!(zero["process.roles"], "broker,controller");
        assert_eq!(
            zero["controller.quorum.voters"],
            "0@main-0.main-brokers.streaming.svc.cluster.local:9093"
        );
        assert_eq!(zero["default.replication.factor"], "1");
        assert_eq!(zero["min.insync.replicas"], "1");
    }

    #[test]
    fn user_settings_are_written_and_win_over_replication_defaults() {
        let c = with("  config:\n    min.insync.replicas: \"1\"\n    log.retention.hours: \"72\"");
        let text = server_properties(&c, 0);
        let zero = properties(&text);
        assert_eq!(zero["min.insync.replicas"], "1");
        assert_eq!(zero["log.retention.hours"], "72");
        assert_eq!(text.matches("min.insync.replicas=").count(), 1);
    }

    #[test]
    fn disabled_metrics_leave_the_address_empty_and_remove_the_port() {
        let c = with("  metrics:\n    enabled: false");
        let zero = properties(&server_properties(&c, 0));
        assert_eq!(zero["metrics.address"], "");
        let r = build(&c);
        let ports = container(&r.stateful_set).ports.expect("ports");
        assert!(ports.iter().all(|p| p.name.as_deref() != Some("metrics")));
        assert!(!template_annotations(&r.stateful_set).contains_key("prometheus.io/scrape"));
    }

    #[test]
    fn the_headless_service_publishes_not_ready_brokers() {
        let spec = headless_service(&valid(MINIMAL_CLUSTER))
            .spec
            .expect("spec");
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        let ports: Vec<_> = spec
            .ports
            .expect("ports")
            .iter()
            .map(|p| (p.name.clone().unwrap_or_default(), p.port))
            .collect();
        assert_eq!(
            ports,
            [
                ("kafka".to_string(), 9092),
                ("controller".to_string(), 9093),
                ("metrics".to_string(), 9404)
            ]
        );
        // Brokers and dedicated controllers alike.
        assert_eq!(
            spec.selector,
            Some(cluster_selector_labels(&valid(MINIMAL_CLUSTER)))
        );
    }

    #[test]
    fn the_bootstrap_service_serves_the_client_port_of_ready_brokers() {
        let spec = bootstrap_service(&with("  listeners:\n    clientPort: 19092"))
            .spec
            .expect("spec");
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(spec.publish_not_ready_addresses, None);
        let ports = spec.ports.expect("ports");
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].port, 19092);
        assert_eq!(
            ports[0].target_port,
            Some(IntOrString::String("kafka".to_string()))
        );
    }

    #[test]
    fn the_statefulset_starts_pods_in_parallel_and_keeps_claims_on_scale_down() {
        let sts = stateful_set(&valid(MINIMAL_CLUSTER));
        let spec = sts.spec.clone().expect("spec");
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.service_name.as_deref(), Some("main-brokers"));
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        assert_eq!(
            spec.update_strategy.and_then(|u| u.type_).as_deref(),
            Some("OnDelete"),
            "the operator rolls the pods"
        );
        let retention = spec
            .persistent_volume_claim_retention_policy
            .expect("retention");
        assert_eq!(retention.when_deleted.as_deref(), Some("Retain"));
        assert_eq!(retention.when_scaled.as_deref(), Some("Retain"));
        let claims = spec.volume_claim_templates.expect("claims");
        let claim = claims[0].spec.clone().expect("claim spec");
        assert_eq!(
            claim.resources.and_then(|r| r.requests).expect("requests")["storage"],
            Quantity("10Gi".to_string())
        );
        assert_eq!(claim.storage_class_name, None);
        assert_eq!(
            spec.selector.match_labels,
            Some(selector_labels(&valid(MINIMAL_CLUSTER)))
        );
    }

    #[test]
    fn storage_settings_reach_the_claim_template() {
        let sts = stateful_set(&with(
            "  storage:\n    size: 50Gi\n    storageClassName: fast-ssd\n    deleteClaim: true",
        ));
        let spec = sts.spec.expect("spec");
        let claim = spec.volume_claim_templates.expect("claims")[0]
            .spec
            .clone()
            .expect("claim spec");
        assert_eq!(claim.storage_class_name.as_deref(), Some("fast-ssd"));
        assert_eq!(
            claim.resources.and_then(|r| r.requests).expect("requests")["storage"],
            Quantity("50Gi".to_string())
        );
        let retention = spec
            .persistent_volume_claim_retention_policy
            .expect("retention");
        assert_eq!(retention.when_deleted.as_deref(), Some("Delete"));
        assert_eq!(retention.when_scaled.as_deref(), Some("Delete"));
    }

    #[test]
    fn larger_volumes_grow_and_smaller_or_reclassed_ones_are_refused() {
        let running = stateful_set(&valid(MINIMAL_CLUSTER));
        let grown = stateful_set(&with("  replicas: 4\n  storage:\n    size: 20Gi"));
        assert_eq!(
            storage_change(&grown, Some(&running)),
            StorageChange::Grow(vec![VolumeGrowth {
                template: "data".to_string(),
                from: "10Gi".to_string(),
                to: "20Gi".to_string()
            }])
        );
        let mut shrunk = stateful_set(&with("  replicas: 4\n  storage:\n    size: 5Gi"));
        let StorageChange::Refused(why) = storage_change(&shrunk, Some(&running)) else {
            panic!("a smaller volume is refused");
        };
        assert!(
            why.contains("spec.storage.size is 5Gi") && why.contains("have 10Gi"),
            "{why}"
        );
        keep_volume_claims(&mut shrunk, Some(&running));
        let claims = |sts: &StatefulSet| sts.spec.clone().and_then(|s| s.volume_claim_templates);
        assert_eq!(
            claims(&shrunk),
            claims(&running),
            "the claims stay as they are"
        );
        assert_eq!(
            shrunk.spec.as_ref().and_then(|s| s.replicas),
            Some(4),
            "other changes still apply"
        );
        let classed = stateful_set(&with(
            "  storage:\n    size: 20Gi\n    storageClassName: fast",
        ));
        let StorageChange::Refused(why) = storage_change(&classed, Some(&running)) else {
            panic!("another class is refused, even with more room");
        };
        assert!(why.contains("storageClassName is fast"), "{why}");

        // The same size written differently, or no StatefulSet yet: nothing to do.
        let same = stateful_set(&with("  storage:\n    size: 10240Mi"));
        assert_eq!(
            storage_change(&same, Some(&running)),
            StorageChange::Unchanged
        );
        let new = stateful_set(&with("  storage:\n    size: 20Gi"));
        assert_eq!(storage_change(&new, None), StorageChange::Unchanged);
        assert_eq!(
            claim_name(&valid(MINIMAL_CLUSTER), "data", 2),
            "data-main-2"
        );
    }

    const JBOD: &str = "  storage:\n    size: 20Gi\n    storageClassName: fast\n    volumes:\n      - id: 1\n        size: 50Gi\n      - id: 0\n        storageClassName: slow";

    #[test]
    fn jbod_volumes_are_claims_of_their_own_each_a_log_directory() {
        let cluster = with(JBOD);
        let sts = stateful_set(&cluster);
        let spec = sts.spec.clone().expect("spec");
        let claims: Vec<_> = spec
            .volume_claim_templates
            .expect("claims")
            .into_iter()
            .map(|claim| {
                let spec = claim.spec.expect("claim spec");
                (
                    claim.metadata.name.expect("name"),
                    spec.resources.and_then(|r| r.requests).expect("requests")["storage"]
                        .0
                        .clone(),
                    spec.storage_class_name.expect("class"),
                )
            })
            .collect();
        assert_eq!(
            claims,
            [
                ("data-0".to_string(), "20Gi".to_string(), "slow".to_string()),
                ("data-1".to_string(), "50Gi".to_string(), "fast".to_string()),
            ],
            "ordered by id; size and class default to spec.storage's"
        );
        let mounts: Vec<_> = container(&sts)
            .volume_mounts
            .expect("mounts")
            .into_iter()
            .filter(|m| m.name.starts_with("data"))
            .map(|m| (m.name, m.mount_path))
            .collect();
        assert_eq!(
            mounts,
            [
                ("data-0".to_string(), "/var/lib/oxbow/data-0".to_string()),
                ("data-1".to_string(), "/var/lib/oxbow/data-1".to_string()),
            ]
        );
        let configs = config_map(&cluster).data.expect("data");
        let zero = properties(&configs["main-0.properties"]);
        assert_eq!(
            zero["log.dirs"],
            "/var/lib/oxbow/data-0/log,/var/lib/oxbow/data-1/log"
        );
    }

    #[test]
    fn a_jbod_volume_grows_on_its_own_is_added_after_the_others_and_never_removed() {
        let running = stateful_set(&with(JBOD));
        let grown = stateful_set(&with(&JBOD.replace("50Gi", "80Gi")));
        assert_eq!(
            storage_change(&grown, Some(&running)),
            StorageChange::Grow(vec![VolumeGrowth {
                template: "data-1".to_string(),
                from: "50Gi".to_string(),
                to: "80Gi".to_string()
            }])
        );
        let shrunk = stateful_set(&with(&JBOD.replace("50Gi", "40Gi")));
        let StorageChange::Refused(why) = storage_change(&shrunk, Some(&running)) else {
            panic!("a smaller volume is refused");
        };
        assert!(
            why.contains("spec.storage.volumes[id=1].size is 40Gi"),
            "{why}"
        );
        // Added after the others: the brokers take it.
        let added = stateful_set(&with(&format!("{JBOD}\n      - id: 2")));
        assert_eq!(
            storage_change(&added, Some(&running)),
            StorageChange::Add(vec!["data-2".to_string()])
        );
        let refused = |spec: &str| match storage_change(&stateful_set(&with(spec)), Some(&running))
        {
            StorageChange::Refused(why) => why,
            other => panic!("{spec}: {other:?}"),
        };
        let removed = refused("  storage:\n    volumes:\n      - id: 0\n        size: 20Gi\n        storageClassName: slow");
        assert!(
            removed.contains("asks for the volumes data-0 but the brokers have data-0, data-1")
                && removed.contains("cannot be removed"),
            "{removed}"
        );
        // Before volume 1 of brokers with volumes 1 and 2: a new first directory would move
        // the metadata log.
        let later = JBOD.replace("id: 0", "id: 2");
        let StorageChange::Refused(before) = storage_change(
            &stateful_set(&with(&format!("{later}\n      - id: 0"))),
            Some(&stateful_set(&with(&later))),
        ) else {
            panic!("a volume before the others is refused");
        };
        assert!(before.contains("only after every volume"), "{before}");
        let both = refused(&format!("{}\n      - id: 2", JBOD.replace("50Gi", "80Gi")));
        assert!(both.contains("one change at a time"), "{both}");
        let single = stateful_set(&valid(MINIMAL_CLUSTER));
        assert!(matches!(
            storage_change(&single, Some(&running)),
            StorageChange::Refused(_)
        ));
        // Refused, the brokers keep what they have, read back from the running templates.
        assert_eq!(running_volumes(&running), Some(with(JBOD).volumes));
        assert_eq!(
            running_volumes(&single),
            Some(valid(MINIMAL_CLUSTER).volumes)
        );
    }

    #[test]
    fn the_broker_reads_its_own_file_through_the_downward_api() {
        let c = container(&stateful_set(&valid(MINIMAL_CLUSTER)));
        let env = c.env.expect("env");
        let names: Vec<_> = env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["POD_NAME", "POD_NAMESPACE", "OXBOW_CONFIG"]);
        let pod_name = env[0]
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str());
        assert_eq!(pod_name, Some("metadata.name"));
        assert_eq!(
            env[2].value.as_deref(),
            Some("/etc/oxbow/$(POD_NAME).properties")
        );
        assert_eq!(
            c.args.as_deref(),
            Some(&["--config".to_string(), "$(OXBOW_CONFIG)".to_string()][..]),
            "no image default arguments override the file"
        );
        let mounts = c.volume_mounts.expect("mounts");
        assert_eq!(mounts[0].mount_path, "/var/lib/oxbow");
        assert_eq!(mounts[0].name, "data");
        assert_eq!(mounts[1].mount_path, CONFIG_MOUNT);
        assert_eq!(mounts[1].read_only, Some(true));
    }

    #[test]
    fn readiness_asks_the_broker_whether_it_is_registered_and_caught_up() {
        let c = container(&stateful_set(&valid(MINIMAL_CLUSTER)));
        let get = c
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("an HTTP readiness probe");
        assert_eq!(get.path.as_deref(), Some("/ready"));
        assert_eq!(get.port, IntOrString::String("metrics".to_string()));
    }

    #[test]
    fn probes_use_the_kafka_port_and_pre_stop_waits_before_sigterm() {
        let c = container(&stateful_set(&valid(MINIMAL_CLUSTER)));
        for probe in [&c.startup_probe, &c.liveness_probe] {
            let port = probe
                .as_ref()
                .and_then(|p| p.tcp_socket.as_ref())
                .map(|t| t.port.clone());
            assert_eq!(port, Some(IntOrString::String("kafka".to_string())));
        }
        let sleep = c
            .lifecycle
            .and_then(|l| l.pre_stop)
            .and_then(|h| h.sleep)
            .map(|s| s.seconds);
        assert_eq!(sleep, Some(PRE_STOP_SLEEP_SECONDS));
        let pod = pod_spec(&stateful_set(&valid(MINIMAL_CLUSTER)));
        assert_eq!(
            pod.termination_grace_period_seconds,
            Some(DEFAULT_GRACE_SECONDS)
        );
    }

    #[test]
    fn brokers_run_unprivileged() {
        let sts = stateful_set(&valid(MINIMAL_CLUSTER));
        let pod = pod_spec(&sts);
        let security = pod.security_context.expect("pod security");
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(security.fs_group, Some(BROKER_UID));
        assert_eq!(
            security.fs_group_change_policy.as_deref(),
            Some("OnRootMismatch"),
            "no walk over the whole volume at every start"
        );
        let container = container(&sts)
            .security_context
            .expect("container security");
        assert_eq!(container.allow_privilege_escalation, Some(false));
        assert_eq!(container.read_only_root_filesystem, Some(true));
        assert_eq!(pod.automount_service_account_token, Some(false));
    }

    #[test]
    fn image_pull_policy_and_resources_reach_the_container() {
        let c = container(&stateful_set(&valid(&format!(
            "{}\n  image: example/oxbow-broker:1.2\n  resources:\n    requests:\n      cpu: 500m\n      memory: 1Gi\n    limits:\n      memory: 2Gi",
            MINIMAL_CLUSTER.replace("IfNotPresent", "Always")
        ))));
        assert_eq!(c.image.as_deref(), Some("example/oxbow-broker:1.2"));
        assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
        let resources = c.resources.expect("resources");
        assert_eq!(
            resources.requests.expect("requests")["cpu"],
            Quantity("500m".to_string())
        );
        assert_eq!(
            resources.limits.expect("limits")["memory"],
            Quantity("2Gi".to_string())
        );
    }

    #[test]
    fn brokers_prefer_distinct_nodes_by_default() {
        let pod = pod_spec(&stateful_set(&valid(MINIMAL_CLUSTER)));
        let terms = pod
            .affinity
            .and_then(|a| a.pod_anti_affinity)
            .and_then(|a| a.preferred_during_scheduling_ignored_during_execution)
            .expect("anti-affinity");
        assert_eq!(
            terms[0].pod_affinity_term.topology_key,
            "kubernetes.io/hostname"
        );
        assert_eq!(pod.topology_spread_constraints, None);
    }

    #[test]
    fn a_rack_key_spreads_brokers_and_pod_overrides_are_applied() {
        let pod_and_meta = stateful_set(&with(
            "  rack:\n    topologyKey: topology.kubernetes.io/zone\n  podTemplate:\n    labels:\n      team: data\n      app.kubernetes.io/name: spoofed\n    annotations:\n      owner: me\n    nodeSelector:\n      disk: ssd\n    tolerations:\n    - key: dedicated\n      operator: Equal\n      value: kafka\n      effect: NoSchedule\n    priorityClassName: high\n    terminationGracePeriodSeconds: 300\n    affinity:\n      nodeAffinity:\n        requiredDuringSchedulingIgnoredDuringExecution:\n          nodeSelectorTerms:\n          - matchExpressions:\n            - key: disk\n              operator: In\n              values: [ssd]",
        ));
        let template = pod_and_meta.spec.expect("spec").template;
        let meta = template.metadata.expect("meta");
        let labels = meta.labels.expect("labels");
        assert_eq!(labels["team"], "data");
        assert_eq!(
            labels["app.kubernetes.io/name"], "oxbow",
            "operator labels win"
        );
        assert_eq!(meta.annotations.expect("annotations")["owner"], "me");
        let pod = template.spec.expect("pod");
        let spread = pod.topology_spread_constraints.expect("spread");
        assert_eq!(spread[0].topology_key, "topology.kubernetes.io/zone");
        assert_eq!(spread[0].max_skew, 1);
        assert_eq!(pod.node_selector.expect("selector")["disk"], "ssd");
        assert_eq!(
            pod.tolerations.expect("tolerations")[0].value.as_deref(),
            Some("kafka")
        );
        assert_eq!(pod.priority_class_name.as_deref(), Some("high"));
        assert_eq!(pod.termination_grace_period_seconds, Some(300));
        let affinity = pod.affinity.expect("affinity");
        assert!(affinity.node_affinity.is_some());
        assert!(
            affinity.pod_anti_affinity.is_none(),
            "the user's affinity replaces ours"
        );
    }

    #[test]
    fn a_config_or_image_change_rolls_the_pods_and_a_scale_up_does_not() {
        let hash = |c: &ValidatedCluster| {
            template_annotations(&stateful_set(c))[CONFIG_HASH_ANNOTATION].clone()
        };
        let base = hash(&valid(MINIMAL_CLUSTER));
        assert_eq!(base.len(), 16);
        assert_eq!(base, hash(&valid(MINIMAL_CLUSTER)), "deterministic");
        assert_ne!(
            base,
            hash(&with("  config:\n    log.retention.hours: \"1\""))
        );
        assert_ne!(base, hash(&with("  image: oxbow-broker:other")));
        assert_eq!(
            base,
            hash(&with("  replicas: 5")),
            "same quorum, same shared config"
        );
        assert_ne!(base, hash(&with("  replicas: 1")), "the quorum changes");
        assert_ne!(
            base,
            hash(&with("  config:\n    min.insync.replicas: \"1\"")),
            "a replication setting the user chose rolls the brokers"
        );
    }

    #[test]
    fn a_change_of_size_that_keeps_the_quorum_restarts_no_broker() {
        let hash = |c: &ValidatedCluster| {
            template_annotations(&stateful_set(c))[CONFIG_HASH_ANNOTATION].clone()
        };
        // One voter below three brokers: 1 and 2 brokers share a quorum, as do 3, 4 and 5;
        // their replication defaults differ (1 and 2 replicas; 3 from three brokers on).
        assert_eq!(hash(&with("  replicas: 1")), hash(&with("  replicas: 2")));
        assert_eq!(hash(&with("  replicas: 3")), hash(&with("  replicas: 5")));
        let two = properties(&server_properties(&with("  replicas: 2"), 0));
        assert_eq!(two["default.replication.factor"], "2");
        assert_eq!(two["min.insync.replicas"], "1");
    }

    #[test]
    fn the_pdb_allows_one_broker_down() {
        let spec = pod_disruption_budget(&valid(MINIMAL_CLUSTER))
            .spec
            .expect("spec");
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(spec.min_available, None);
        assert_eq!(
            spec.selector.and_then(|s| s.match_labels),
            Some(selector_labels(&valid(MINIMAL_CLUSTER)))
        );
    }

    #[test]
    fn a_draining_cluster_keeps_its_leaving_brokers_running_and_configured() {
        let c = valid(MINIMAL_CLUSTER);
        let r = build_running(&c, 5);
        assert_eq!(r.stateful_set.spec.and_then(|s| s.replicas), Some(5));
        let data = r.config_map.data.expect("data");
        assert_eq!(data.len(), 5);
        assert_eq!(properties(&data["main-4.properties"])["node.id"], "4");
        assert_eq!(
            properties(&data["main-0.properties"]),
            properties(&server_properties(&c, 0)),
            "the remaining brokers' settings are those of the spec"
        );
        // While growing, the new brokers' files are there before their pods.
        let grown = build_running(&c, 2);
        assert_eq!(grown.config_map.data.expect("data").len(), 3);
    }

    #[test]
    fn the_selector_string_lists_every_selector_label() {
        assert_eq!(
            selector_string(&valid(MINIMAL_CLUSTER)),
            "app.kubernetes.io/component=broker,app.kubernetes.io/instance=main,app.kubernetes.io/name=oxbow"
        );
    }

    const ZONE_RACK: &str = "  rack:\n    topologyKey: topology.kubernetes.io/zone";

    fn env_value<'a>(container: &'a Container, name: &str) -> Option<&'a EnvVar> {
        container
            .env
            .as_ref()
            .and_then(|env| env.iter().find(|e| e.name == name))
    }

    fn field_path(var: Option<&EnvVar>) -> Option<String> {
        var.and_then(|v| v.value_from.as_ref())
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.clone())
    }

    fn mount_paths(container: &Container) -> Vec<(String, String, bool)> {
        container
            .volume_mounts
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|m| (m.name, m.mount_path, m.read_only.unwrap_or(false)))
            .collect()
    }

    #[test]
    fn without_a_rack_key_there_is_no_init_container_account_or_binding() {
        let c = valid(MINIMAL_CLUSTER);
        let r = build(&c);
        assert_eq!(r.service_account, None);
        assert_eq!(r.node_reader_binding, None);
        let pod = pod_spec(&r.stateful_set);
        assert_eq!(pod.init_containers, None);
        assert_eq!(pod.service_account_name, None);
        let volumes: Vec<_> = pod
            .volumes
            .expect("volumes")
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(volumes, [CONFIG_VOLUME, CERTS_VOLUME]);
    }

    #[test]
    fn a_rack_key_adds_an_init_container_that_writes_broker_rack_from_the_node() {
        let c = with(ZONE_RACK);
        let sts = stateful_set(&c);
        let pod = pod_spec(&sts);
        let init = pod.init_containers.clone().expect("init containers");
        assert_eq!(init.len(), 1);
        let init = &init[0];
        assert_eq!(init.name, INIT_CONTAINER);
        assert_eq!(
            init.image.as_deref(),
            Some(OperatorSettings::default().operator_image.as_str()),
            "the operator image runs the init container"
        );
        assert_eq!(init.image_pull_policy.as_deref(), Some("IfNotPresent"));
        assert_eq!(
            init.args.clone().expect("args"),
            [
                "broker-init",
                "--config-in",
                "/etc/oxbow/$(POD_NAME).properties",
                "--config-out",
                RUN_CONFIG,
                "--node",
                "$(NODE_NAME)",
                "--rack-label",
                "topology.kubernetes.io/zone",
            ]
        );
        assert_eq!(
            field_path(env_value(init, "NODE_NAME")).as_deref(),
            Some("spec.nodeName")
        );
        assert_eq!(
            field_path(env_value(init, "POD_NAME")).as_deref(),
            Some("metadata.name")
        );
        assert_eq!(
            mount_paths(init),
            [
                (CONFIG_VOLUME.to_string(), CONFIG_MOUNT.to_string(), true),
                (RUN_VOLUME.to_string(), RUN_MOUNT.to_string(), false),
                (
                    TOKEN_VOLUME.to_string(),
                    SERVICE_ACCOUNT_MOUNT.to_string(),
                    true
                ),
            ]
        );
        let security = init.security_context.clone().expect("security");
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));

        // The broker reads the file the init container wrote, and has no API token.
        let broker = container(&sts);
        assert_eq!(
            env_value(&broker, "OXBOW_CONFIG").and_then(|e| e.value.as_deref()),
            Some(RUN_CONFIG)
        );
        assert!(RUN_CONFIG.starts_with(RUN_MOUNT));
        let broker_mounts = mount_paths(&broker);
        assert!(broker_mounts.contains(&(RUN_VOLUME.to_string(), RUN_MOUNT.to_string(), true)));
        assert!(broker_mounts
            .iter()
            .all(|(name, _, _)| name != TOKEN_VOLUME));

        // The pod runs as the cluster's account, with no token mounted automatically.
        assert_eq!(pod.service_account_name.as_deref(), Some("main-broker"));
        assert_eq!(pod.automount_service_account_token, Some(false));
        let volumes = pod.volumes.expect("volumes");
        let run = volumes
            .iter()
            .find(|v| v.name == RUN_VOLUME)
            .and_then(|v| v.empty_dir.clone())
            .expect("emptyDir");
        assert_eq!(run.medium.as_deref(), Some("Memory"));
        let token = volumes
            .iter()
            .find(|v| v.name == TOKEN_VOLUME)
            .and_then(|v| v.projected.clone())
            .and_then(|p| p.sources)
            .expect("projected token");
        assert_eq!(
            token[0]
                .service_account_token
                .as_ref()
                .map(|t| t.path.as_str()),
            Some("token")
        );
        assert_eq!(
            token[1].config_map.as_ref().map(|c| c.name.as_str()),
            Some("kube-root-ca.crt")
        );
        assert!(token[2].downward_api.is_some(), "the namespace file");
    }

    /// What broker-init receives when the kubelet runs `init` in pod `main-0` on node
    /// `node-a`: the container's env (downward-API fields resolved), `$(VAR)` in its args
    /// expanded from that env, and clap's environment fallbacks taken from the same env,
    /// parsed by the `broker-init` subcommand as the binary declares it.
    fn broker_init_as_run(
        init: &Container,
    ) -> Result<crate::broker_init::BrokerInitArgs, clap::Error> {
        use clap::{Args as _, FromArgMatches as _};
        let env: BTreeMap<String, String> = init
            .env
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|var| {
                let value = match field_path(Some(&var)).as_deref() {
                    Some("metadata.name") => "main-0".to_string(),
                    Some("metadata.namespace") => "streaming".to_string(),
                    Some("spec.nodeName") => "node-a".to_string(),
                    Some(other) => panic!("no test value for field {other}"),
                    None => var.value.clone().unwrap_or_default(),
                };
                (var.name, value)
            })
            .collect();
        let mut argv: Vec<String> = init
            .args
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|arg| {
                env.iter().fold(arg, |arg, (name, value)| {
                    arg.replace(&format!("$({name})"), value)
                })
            })
            .collect();
        let command =
            crate::broker_init::BrokerInitArgs::augment_args(clap::Command::new("broker-init"));
        for arg in command.get_arguments() {
            let (Some(var), Some(long)) = (arg.get_env(), arg.get_long()) else {
                continue;
            };
            let flag = format!("--{long}");
            let given = argv.iter().any(|a| a == &flag);
            if let Some(value) = var.to_str().and_then(|var| env.get(var)) {
                if !given {
                    argv.extend([flag, value.clone()]);
                }
            }
        }
        let matches = clap::Command::new("oxbow-operator")
            .subcommand(command)
            .try_get_matches_from(std::iter::once("oxbow-operator".to_string()).chain(argv))?;
        let sub = matches
            .subcommand_matches("broker-init")
            .expect("the broker-init subcommand");
        crate::broker_init::BrokerInitArgs::from_arg_matches(sub)
    }

    #[test]
    fn broker_init_accepts_its_arguments_and_environment_with_and_without_a_rack() {
        let tls = pod_spec(&stateful_set(&with(SASL_SSL)))
            .init_containers
            .expect("init")[0]
            .clone();
        assert_eq!(env_value(&tls, "NODE_NAME"), None, "no rack, no node name");
        let args = broker_init_as_run(&tls)
            .unwrap_or_else(|e| panic!("broker-init refuses its TLS pod's command line: {e}"));
        assert_eq!(args.node, None);
        assert_eq!(args.rack_label, None);
        assert_eq!(
            args.config_in,
            std::path::PathBuf::from("/etc/oxbow/main-0.properties")
        );
        assert_eq!(args.keystore_out, Some(std::path::PathBuf::from(KEYSTORE)));

        let racked = pod_spec(&stateful_set(&with(&format!("{SASL_SSL}\n{ZONE_RACK}"))))
            .init_containers
            .expect("init")[0]
            .clone();
        let args = broker_init_as_run(&racked)
            .unwrap_or_else(|e| panic!("broker-init refuses its rack pod's command line: {e}"));
        assert_eq!(args.node.as_deref(), Some("node-a"));
        assert_eq!(
            args.rack_label.as_deref(),
            Some("topology.kubernetes.io/zone")
        );
        assert!(args.tls_cert.is_some());
    }

    #[test]
    fn a_rack_key_gets_an_account_and_a_binding_to_the_node_reading_role() {
        let c = with(ZONE_RACK);
        let r = build(&c);
        let account = r.service_account.expect("service account");
        assert_eq!(account.metadata.name.as_deref(), Some("main-broker"));
        assert_eq!(account.metadata.namespace.as_deref(), Some("streaming"));
        assert_eq!(account.automount_service_account_token, Some(false));
        assert_eq!(
            account.metadata.owner_references.expect("owner")[0].name,
            "main"
        );
        let binding = r.node_reader_binding.expect("binding");
        assert_eq!(
            binding.metadata.name.as_deref(),
            Some("oxbow:streaming:main:broker")
        );
        assert_eq!(binding.metadata.namespace, None, "cluster scoped");
        assert_eq!(
            binding.metadata.owner_references, None,
            "no namespaced owner for a cluster-scoped object"
        );
        assert_eq!(
            binding.metadata.labels.expect("labels")["oxbow.dev/namespace"],
            "streaming"
        );
        assert_eq!(binding.role_ref.kind, "ClusterRole");
        assert_eq!(binding.role_ref.name, "oxbow-broker");
        let subjects = binding.subjects.expect("subjects");
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0].kind, "ServiceAccount");
        assert_eq!(subjects[0].name, "main-broker");
        assert_eq!(subjects[0].namespace.as_deref(), Some("streaming"));
    }

    /// An internal PLAINTEXT listener for replication and a SASL_SSL one for applications,
    /// with an admin user and ACLs.
    const SASL_SSL: &str = "  listeners:\n    additional:\n    - name: EXTERNAL\n      port: 9094\n      tls:\n        secretName: main-tls\n      authentication: scram-sha-512\n  security:\n    admin:\n      username: admin\n      passwordSecret:\n        name: main-admin\n    authorization:\n      superUsers: [\"User:ops\"]";

    #[test]
    fn a_nodeport_listener_gets_a_service_per_broker_and_advertises_the_node_and_its_port() {
        let mut c = with(
            "  listeners:\n    additional:\n    - name: OUTSIDE\n      port: 9095\n      type: nodeport\n",
        );
        let services = external_services(&c, 3);
        let names: Vec<String> = services
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        assert_eq!(
            names,
            [
                "main-outside-bootstrap",
                "main-outside-0",
                "main-outside-1",
                "main-outside-2"
            ]
        );
        for service in &services {
            let spec = service.spec.as_ref().expect("spec");
            assert_eq!(spec.type_.as_deref(), Some("NodePort"));
            let ports = spec.ports.as_ref().expect("ports");
            assert_eq!(
                (ports.len(), ports[0].port, ports[0].node_port),
                (1, 9095, None)
            );
        }
        let fixed = with(
            "  listeners:\n    additional:\n    - name: OUTSIDE\n      port: 9095\n      type: nodeport\n      configuration:\n        bootstrap: {nodePort: 31090}\n        brokers:\n        - {broker: 1, nodePort: 31091}\n",
        );
        let node_ports: Vec<Option<i32>> = external_services(&fixed, 3)
            .iter()
            .map(|s| {
                s.spec
                    .as_ref()
                    .and_then(|s| s.ports.as_ref())
                    .and_then(|p| p.first())
                    .and_then(|p| p.node_port)
            })
            .collect();
        assert_eq!(
            node_ports,
            [Some(31090), None, Some(31091), None],
            "fixed where configured, assigned elsewhere"
        );
        let broker_one = services[2].spec.as_ref().and_then(|s| s.selector.clone());
        assert_eq!(
            broker_one
                .as_ref()
                .and_then(|s| s.get("statefulset.kubernetes.io/pod-name"))
                .map(String::as_str),
            Some("main-1")
        );

        // Before the node ports are known, the pod's own name; once they are, the node's
        // address (put in by the init container) and the broker's node port.
        let before = properties(&server_properties(&c, 1));
        assert!(before["advertised.listeners"]
            .ends_with("OUTSIDE://main-1.main-brokers.streaming.svc.cluster.local:9095"));
        c.external_addresses
            .insert(("OUTSIDE".to_string(), 1), format!("{NODE_ADDRESS}:31001"));
        let after = properties(&server_properties(&c, 1));
        assert!(
            after["advertised.listeners"].ends_with(&format!("OUTSIDE://{NODE_ADDRESS}:31001")),
            "{}",
            after["advertised.listeners"]
        );
        let init = pod_spec(&stateful_set(&c))
            .init_containers
            .and_then(|c| c.into_iter().next())
            .expect("an init container puts the node's address in");
        let args = init.args.unwrap_or_default();
        assert!(
            args.windows(2)
                .any(|w| w == ["--node-address", "$(HOST_IP)"]),
            "{args:?}"
        );
        assert!(init
            .env
            .unwrap_or_default()
            .iter()
            .any(|e| e.name == "HOST_IP"));
        assert!(build(&c).external_services.len() == 4);
    }

    #[test]
    fn a_loadbalancer_listener_gets_a_load_balancer_per_broker_and_advertises_its_address() {
        let mut c = with(
            "  listeners:\n    additional:\n    - name: CLOUD\n      port: 9096\n      type: loadbalancer\n",
        );
        let services = external_services(&c, 2);
        let names: Vec<String> = services
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        assert_eq!(
            names,
            ["main-cloud-bootstrap", "main-cloud-0", "main-cloud-1"]
        );
        for service in &services {
            let spec = service.spec.as_ref().expect("spec");
            assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
            assert_eq!(spec.ports.as_ref().map(|p| p[0].port), Some(9096));
        }
        c.external_addresses
            .insert(("CLOUD".to_string(), 1), "203.0.113.7:9096".to_string());
        let one = properties(&server_properties(&c, 1));
        assert!(
            one["advertised.listeners"].ends_with("CLOUD://203.0.113.7:9096"),
            "{}",
            one["advertised.listeners"]
        );
        // No node address to read: a load balancer's address is known to the operator.
        assert!(pod_spec(&stateful_set(&c)).init_containers.is_none());
    }

    #[test]
    fn an_ingress_listener_gets_a_passthrough_ingress_per_broker_and_advertises_its_host() {
        let mut c = with(
            "  listeners:\n    additional:\n    - name: ROUTED\n      port: 9097\n      type: ingress\n      tls: {}\n      configuration:\n        class: nginx\n        bootstrap: {host: kafka.example.test}\n        hostTemplate: 'broker-{nodeId}.example.test'\n        brokers:\n        - {broker: 1, host: one.example.test}\n",
        );
        let services = external_services(&c, 3);
        for service in &services {
            let spec = service.spec.as_ref().expect("spec");
            assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
            assert_eq!(spec.ports.as_ref().map(|p| p[0].port), Some(9097));
        }
        let routed: Vec<(String, String, String, i32)> = ingresses(&c, 3)
            .into_iter()
            .map(|ingress| {
                assert_eq!(
                    ingress.metadata.annotations.as_ref().expect("annotations")[SSL_PASSTHROUGH],
                    "true"
                );
                let spec = ingress.spec.expect("spec");
                assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
                let rule = spec.rules.expect("rules")[0].clone();
                let backend = rule.http.expect("http").paths[0]
                    .backend
                    .service
                    .clone()
                    .expect("a Service");
                let host = rule.host.expect("host");
                assert_eq!(spec.tls.expect("tls")[0].hosts, Some(vec![host.clone()]));
                (
                    ingress.metadata.name.expect("name"),
                    host,
                    backend.name,
                    backend.port.and_then(|p| p.number).expect("port"),
                )
            })
            .collect();
        let expected = [
            ("main-routed-bootstrap", "kafka.example.test"),
            ("main-routed-0", "broker-0.example.test"),
            ("main-routed-1", "one.example.test"),
            ("main-routed-2", "broker-2.example.test"),
        ];
        assert_eq!(
            routed,
            expected
                .iter()
                .map(|(name, host)| (name.to_string(), host.to_string(), name.to_string(), 9097))
                .collect::<Vec<_>>()
        );
        assert!(ingresses(&with(""), 3).is_empty());
        c.external_addresses.insert(
            ("ROUTED".to_string(), 1),
            format!("one.example.test:{INGRESS_PORT}"),
        );
        c.external_bootstraps.insert(
            "ROUTED".to_string(),
            format!("kafka.example.test:{INGRESS_PORT}"),
        );
        let one = properties(&server_properties(&c, 1));
        assert!(
            one["advertised.listeners"].ends_with("ROUTED://one.example.test:443"),
            "{}",
            one["advertised.listeners"]
        );
        let names = c.broker_certificate_names(1);
        for host in ["one.example.test", "kafka.example.test"] {
            assert!(names.iter().any(|n| n == host), "{host} in {names:?}");
        }
    }

    #[test]
    fn additional_listeners_are_listened_on_advertised_and_mapped_to_their_protocol() {
        let c = with(SASL_SSL);
        let zero = properties(&server_properties(&c, 0));
        assert_eq!(
            zero["listeners"],
            "PLAINTEXT://:9092,EXTERNAL://:9094,CONTROLLER://:9093"
        );
        assert_eq!(
            zero["advertised.listeners"],
            "PLAINTEXT://main-0.main-brokers.streaming.svc.cluster.local:9092,\
             EXTERNAL://main-0.main-brokers.streaming.svc.cluster.local:9094"
        );
        assert_eq!(
            zero["listener.security.protocol.map"],
            "PLAINTEXT:PLAINTEXT,CONTROLLER:SSL,EXTERNAL:SASL_SSL"
        );
        assert_eq!(
            zero["inter.broker.listener.name"], "PLAINTEXT",
            "replication stays on the internal listener"
        );
        assert_eq!(zero["ssl.keystore.type"], "PEM");
        assert_eq!(zero["ssl.keystore.location"], KEYSTORE);
        assert_eq!(zero["ssl.client.auth"], "none");
        assert!(!zero.contains_key("ssl.truststore.location"));
        assert_eq!(zero["sasl.enabled.mechanisms"], "SCRAM-SHA-512");
        assert_eq!(zero["authorizer.class.name"], AUTHORIZER_CLASS);
        assert_eq!(
            zero["super.users"], "User:ANONYMOUS;User:admin;User:ops",
            "the brokers and the operator (internal listener), the admin, the listed"
        );
        let four = properties(&server_properties(
            &with(&format!("{SASL_SSL}\n  replicas: 5")),
            4,
        ));
        assert_eq!(
            four["listeners"],
            "PLAINTEXT://:9092,EXTERNAL://:9094,CONTROLLER://:9093"
        );
    }

    #[test]
    fn the_broker_accepts_the_server_properties_of_a_sasl_ssl_cluster() {
        for spec in [
            SASL_SSL.to_string(),
            "  listeners:\n    additional:\n    - name: MTLS\n      port: 9095\n      tls:\n        secretName: main-tls\n        clientAuth: required\n    - name: SASL_INTERNAL\n      port: 9096\n      authentication: scram-sha-256".to_string(),
        ] {
            let c = with(&spec);
            for (name, text) in config_map(&c).data.expect("data") {
                oxbow_broker::config::BrokerConfig::from_settings(properties(&text))
                    .unwrap_or_else(|e| panic!("{name} is refused by the broker: {e}\n{text}"));
            }
        }
    }

    #[test]
    fn client_certificates_add_the_trust_store_from_the_secret() {
        let c = with("  listeners:\n    additional:\n    - name: MTLS\n      port: 9095\n      tls:\n        secretName: main-tls\n        clientAuth: required");
        let zero = properties(&server_properties(&c, 0));
        assert_eq!(
            zero["listener.security.protocol.map"].rsplit(',').next(),
            Some("MTLS:SSL")
        );
        assert_eq!(zero["ssl.client.auth"], "required");
        assert_eq!(zero["ssl.truststore.location"], "/etc/oxbow-tls/ca.crt");
        assert!(!zero.contains_key("sasl.enabled.mechanisms"));
        assert!(!zero.contains_key("authorizer.class.name"));
        let broker = container(&stateful_set(&c));
        assert!(
            mount_paths(&broker).contains(&(TLS_VOLUME.to_string(), TLS_MOUNT.to_string(), true)),
            "the broker reads ca.crt itself"
        );
    }

    #[test]
    fn the_network_policy_keeps_the_controller_port_and_with_acls_the_internal_listener_to_brokers_and_operator(
    ) {
        use crate::cluster::validate::OperatorPods;
        let settings = OperatorSettings {
            operator_pods: Some(OperatorPods {
                namespace: "oxbow-system".to_string(),
                labels: BTreeMap::from([("app".to_string(), "op".to_string())]),
            }),
            ..OperatorSettings::default()
        };
        let ports = |rule: &NetworkPolicyIngressRule| -> Vec<i32> {
            rule.ports
                .iter()
                .flatten()
                .filter_map(|p| match p.port {
                    Some(IntOrString::Int(port)) => Some(port),
                    _ => None,
                })
                .collect()
        };
        let listener = "  listeners:\n    additional:\n    - name: APPS\n      port: 9094\n      authentication: scram-sha-512";
        for (authorization, private, open) in [
            (false, vec![9093], vec![9094, 9404, 9092]),
            (true, vec![9093, 9092], vec![9094, 9404]),
        ] {
            let mut spec = format!("{MINIMAL_CLUSTER}\n{listener}\n  metrics:\n    enabled: true");
            if authorization {
                spec.push_str("\n  security:\n    authorization:\n      superUsers: []");
            }
            let c = validate(&cluster(&spec), &settings).expect("valid");
            let policy = network_policy(&c).expect("a policy");
            assert_eq!(policy.metadata.name.as_deref(), Some("main-network-policy"));
            let spec = policy.spec.expect("spec");
            // Every pod of the cluster: brokers and dedicated controllers.
            assert_eq!(
                spec.pod_selector.and_then(|s| s.match_labels),
                Some(cluster_selector_labels(&c))
            );
            let rules = spec.ingress.expect("rules");
            assert_eq!(ports(&rules[0]), private, "authorization {authorization}");
            assert_eq!(ports(&rules[1]), open, "authorization {authorization}");
            assert!(rules[1].from.is_none(), "open to every source");
            let peers = rules[0].from.clone().expect("peers");
            assert_eq!(
                peers[0].pod_selector.clone().and_then(|s| s.match_labels),
                Some(cluster_selector_labels(&c))
            );
            assert_eq!(
                peers[1]
                    .namespace_selector
                    .clone()
                    .and_then(|s| s.match_labels)
                    .expect("namespace")["kubernetes.io/metadata.name"],
                "oxbow-system"
            );
        }
        assert!(
            network_policy(&with("")).is_none(),
            "no policy without the operator's pods to admit"
        );
    }

    #[test]
    fn a_tls_listener_without_a_secret_serves_each_broker_its_cluster_ca_certificate() {
        let mut c = with("  listeners:\n    additional:\n    - name: MTLS\n      port: 9095\n      tls:\n        clientAuth: required");
        c.certificates_generation = 3;
        for ordinal in 0..3 {
            let props = properties(&server_properties(&c, ordinal));
            assert_eq!(
                props["ssl.keystore.location"],
                format!("{CERTS_MOUNT}/main-{ordinal}.pem")
            );
            assert_eq!(props["ssl.keystore.type"], "PEM");
            assert_eq!(
                props["ssl.truststore.location"],
                format!("{CERTS_MOUNT}/clients-ca.crt")
            );
            oxbow_broker::config::BrokerConfig::from_settings(props.clone())
                .unwrap_or_else(|e| panic!("broker {ordinal}'s properties are refused: {e}"));
        }
        let sts = stateful_set(&c);
        let pod = pod_spec(&sts);
        assert!(
            pod.init_containers.is_none(),
            "no key store to join: the Secret holds it"
        );
        assert!(mount_paths(&container(&sts)).contains(&(
            CERTS_VOLUME.to_string(),
            CERTS_MOUNT.to_string(),
            true
        )));
        let volume = pod
            .volumes
            .clone()
            .expect("volumes")
            .into_iter()
            .find(|v| v.name == CERTS_VOLUME)
            .expect("the certificates' volume");
        assert_eq!(
            volume.secret.and_then(|s| s.secret_name).as_deref(),
            Some("main-broker-certs")
        );
        let annotations = sts
            .spec
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.annotations)
            .expect("annotations");
        assert_eq!(annotations[CERTIFICATES_ANNOTATION], "3");
        let names = c.broker_certificate_names(1);
        for name in [
            "main-1.main-brokers.streaming.svc.cluster.local",
            "main-1.main-brokers.streaming.svc",
            "main-bootstrap.streaming.svc",
            "main-bootstrap",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
        }
        assert!(!names.iter().any(|n| n.starts_with("main-0.")), "{names:?}");
        assert!(!c.names_nodes_in_certificates(), "no nodeport listener");
    }

    #[test]
    fn a_tls_nodeport_listener_has_every_node_address_in_each_broker_certificate() {
        let mut c = with("  listeners:\n    additional:\n    - name: NODES\n      port: 9096\n      type: nodeport\n      tls: {}");
        assert!(c.names_nodes_in_certificates());
        c.node_addresses = vec!["10.0.0.7".to_string(), "node-b.example".to_string()];
        for ordinal in 0..3 {
            let names = c.broker_certificate_names(ordinal);
            assert!(
                names.contains(&"10.0.0.7".to_string())
                    && names.contains(&"node-b.example".to_string()),
                "{names:?}"
            );
        }
        let plain = with("  listeners:\n    additional:\n    - name: NODES\n      port: 9096\n      type: nodeport");
        assert!(!plain.names_nodes_in_certificates(), "no TLS on it");
    }

    #[test]
    fn a_tls_listener_gets_the_secret_and_an_init_container_that_joins_the_key_store() {
        let c = with(SASL_SSL);
        let sts = stateful_set(&c);
        let pod = pod_spec(&sts);
        let init = pod.init_containers.clone().expect("init")[0].clone();
        assert_eq!(
            init.args.clone().expect("args"),
            [
                "broker-init",
                "--config-in",
                "/etc/oxbow/$(POD_NAME).properties",
                "--config-out",
                RUN_CONFIG,
                "--tls-cert",
                "/etc/oxbow-tls/tls.crt",
                "--tls-key",
                "/etc/oxbow-tls/tls.key",
                "--keystore-out",
                KEYSTORE,
            ]
        );
        assert!(
            KEYSTORE.starts_with(RUN_MOUNT),
            "in the emptyDir the broker reads"
        );
        let init_mounts = mount_paths(&init);
        assert!(init_mounts.contains(&(TLS_VOLUME.to_string(), TLS_MOUNT.to_string(), true)));
        assert!(
            init_mounts.iter().all(|(name, _, _)| name != TOKEN_VOLUME),
            "no API token without a rack"
        );
        assert_eq!(pod.service_account_name, None);
        let secret = pod
            .volumes
            .expect("volumes")
            .into_iter()
            .find(|v| v.name == TLS_VOLUME)
            .and_then(|v| v.secret)
            .expect("secret volume");
        assert_eq!(secret.secret_name.as_deref(), Some("main-tls"));
        assert_eq!(secret.default_mode, Some(0o440));
        let broker = container(&sts);
        assert!(
            mount_paths(&broker)
                .iter()
                .all(|(name, _, _)| name != TLS_VOLUME),
            "without client certificates the broker needs only the key store"
        );
        assert_eq!(
            env_value(&broker, "OXBOW_CONFIG").and_then(|e| e.value.as_deref()),
            Some(RUN_CONFIG)
        );
        let r = build(&c);
        assert_eq!(r.service_account, None);
        assert_eq!(r.node_reader_binding, None);
    }

    #[test]
    fn the_admin_password_comes_from_its_secret_and_never_reaches_the_config_map() {
        let c = with(SASL_SSL);
        let broker = container(&stateful_set(&c));
        let env = broker.env.clone().expect("env");
        let names: Vec<_> = env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "POD_NAME",
                "POD_NAMESPACE",
                "OXBOW_CONFIG",
                "OXBOW_ADMIN_PASSWORD",
                "OXBOW_ADD_SCRAM"
            ],
            "the password variable comes before the one that expands it"
        );
        let secret = env[3]
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .expect("secretKeyRef");
        assert_eq!(secret.name, "main-admin");
        assert_eq!(secret.key, "password");
        assert_eq!(secret.optional, Some(false));
        let add_scram = env[4].value.clone().expect("value");
        assert_eq!(
            add_scram,
            "SCRAM-SHA-512=[name=admin,password=\"$(OXBOW_ADMIN_PASSWORD)\"]"
        );
        // What the kubelet makes of it is what the broker parses.
        let expanded = add_scram.replace("$(OXBOW_ADMIN_PASSWORD)", "s3cret, with comma");
        let credential = oxbow_broker::security::scram::InitialCredential::parse(&expanded)
            .expect("the broker parses the credential");
        assert_eq!(credential.user, "admin");
        for text in config_map(&c).data.expect("data").values() {
            assert!(!text.contains("PASSWORD") && !text.contains("main-admin"));
        }
    }

    #[test]
    fn services_and_the_container_expose_every_client_listener() {
        let c = with(SASL_SSL);
        let names = |ports: Vec<ServicePort>| -> Vec<(String, i32)> {
            ports
                .into_iter()
                .map(|p| (p.name.unwrap_or_default(), p.port))
                .collect()
        };
        let bootstrap = bootstrap_service(&c)
            .spec
            .and_then(|s| s.ports)
            .expect("ports");
        assert_eq!(
            names(bootstrap),
            [("kafka".to_string(), 9092), ("external".to_string(), 9094)]
        );
        let headless = headless_service(&c)
            .spec
            .and_then(|s| s.ports)
            .expect("ports");
        assert_eq!(
            names(headless),
            [
                ("kafka".to_string(), 9092),
                ("controller".to_string(), 9093),
                ("external".to_string(), 9094),
                ("metrics".to_string(), 9404)
            ]
        );
        let ports: Vec<_> = container(&stateful_set(&c))
            .ports
            .expect("ports")
            .into_iter()
            .map(|p| (p.name.unwrap_or_default(), p.container_port))
            .collect();
        assert!(ports.contains(&("external".to_string(), 9094)), "{ports:?}");
    }

    #[test]
    fn a_listener_change_rolls_the_brokers() {
        let hash = |c: &ValidatedCluster| {
            template_annotations(&stateful_set(c))[CONFIG_HASH_ANNOTATION].clone()
        };
        let plain = hash(&valid(MINIMAL_CLUSTER));
        let secured = hash(&with(SASL_SSL));
        assert_ne!(plain, secured);
        assert_ne!(
            secured,
            hash(&with(&SASL_SSL.replace("scram-sha-512", "scram-sha-256")))
        );
    }

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
