//! Validation of a `KafkaCluster`: the raw resource in, a [`ValidatedCluster`] out that holds
//! everything the builders need, resolved once. Pure: no I/O, so every rule is unit-tested.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;

use crate::crd::{
    AdminCredentials, AuthorizationSpec, CertificateAuthority, ClientAuth, ControllerPoolSpec,
    KafkaCluster, ListenerSpec, ListenerTls, ListenerType, PodTemplateOverrides, PullPolicy,
    StorageSpec, MAX_CLUSTER_NAME, MAX_VOLUMES,
};

/// Settings the operator was started with that shape every cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorSettings {
    /// Broker image for clusters that do not name one.
    pub broker_image: String,
    /// DNS suffix of the Kubernetes cluster (`cluster.local`).
    pub cluster_domain: String,
    /// The operator's image, which broker pods run as their init container.
    pub operator_image: String,
    /// ClusterRole allowing `get` on nodes, bound to the brokers' service account of clusters
    /// with `spec.rack` (the chart creates it).
    pub broker_cluster_role: String,
    /// How long a resource that is in sync waits before it is compared with the cluster again,
    /// so that a change made behind the operator's back is corrected.
    pub resync: std::time::Duration,
    /// The operator's own pods, which the clusters' NetworkPolicies admit to the brokers'
    /// internal and controller ports; `None` when the operator does not run in a pod (no
    /// NetworkPolicy is made then).
    pub operator_pods: Option<OperatorPods>,
}

/// Where the operator's pods run and how they are labelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorPods {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

impl Default for OperatorSettings {
    fn default() -> Self {
        Self {
            broker_image: format!("oxbow-broker:{}", env!("CARGO_PKG_VERSION")),
            cluster_domain: "cluster.local".to_string(),
            operator_image: format!("oxbow-operator:{}", env!("CARGO_PKG_VERSION")),
            broker_cluster_role: "oxbow-broker".to_string(),
            resync: std::time::Duration::from_secs(300),
            operator_pods: None,
        }
    }
}

/// Broker settings the operator writes itself; a `spec.config` entry for one is refused.
/// Listeners, TLS, SASL and authorization are set through `spec.listeners` and
/// `spec.security`.
pub const OWNED_SETTINGS: [&str; 21] = [
    "node.id",
    "broker.id",
    "process.roles",
    "controller.quorum.voters",
    "controller.listener.names",
    "listeners",
    "advertised.listeners",
    "listener.security.protocol.map",
    "inter.broker.listener.name",
    "log.dirs",
    "log.dir",
    "metrics.address",
    "broker.rack",
    "ssl.keystore.type",
    "ssl.keystore.location",
    "ssl.truststore.type",
    "ssl.truststore.location",
    "ssl.client.auth",
    "sasl.enabled.mechanisms",
    "authorizer.class.name",
    "super.users",
];

/// Listener names the operator uses itself, that name a security protocol (and would imply
/// it), or whose port name (`kafka`, `metrics`) is taken.
pub const RESERVED_LISTENER_NAMES: [&str; 7] = [
    "PLAINTEXT",
    "CONTROLLER",
    "SSL",
    "SASL_SSL",
    "SASL_PLAINTEXT",
    "KAFKA",
    "METRICS",
];

/// The class name that turns on the broker's ACL authorizer.
pub const AUTHORIZER_CLASS: &str = "org.apache.kafka.metadata.authorizer.StandardAuthorizer";

/// The principal of the brokers and the operator on the internal PLAINTEXT listener.
pub const INTERNAL_PRINCIPAL: &str = "User:ANONYMOUS";

/// Longest Service name (a DNS label).
const MAX_SERVICE_NAME: usize = 63;

/// The security protocol of an additional listener.
pub fn protocol(listener: &ListenerSpec) -> &'static str {
    match (
        listener.tls.is_some(),
        listener.authentication.mechanism().is_some(),
    ) {
        (false, false) => "PLAINTEXT",
        (true, false) => "SSL",
        (false, true) => "SASL_PLAINTEXT",
        (true, true) => "SASL_SSL",
    }
}

/// The Service and container port name of an additional listener: `EXTERNAL_TLS` →
/// `external-tls`.
pub fn port_name(listener: &ListenerSpec) -> String {
    listener.name.to_ascii_lowercase().replace('_', "-")
}

/// Everything wrong with a KafkaCluster spec, each problem naming its field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidCluster {
    pub problems: Vec<String>,
}

impl fmt::Display for InvalidCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problems.join("; "))
    }
}

impl std::error::Error for InvalidCluster {}

/// A KafkaCluster that passed validation, with defaults applied and names derived.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedCluster {
    pub name: String,
    pub namespace: String,
    pub generation: Option<i64>,
    pub owner: OwnerReference,
    pub replicas: i32,
    pub image: String,
    pub image_pull_policy: Option<PullPolicy>,
    pub client_port: i32,
    pub controller_port: i32,
    /// Port of the metrics endpoint, `None` when metrics are off.
    pub metrics_port: Option<i32>,
    /// Each broker's data volumes: one, or several (JBOD).
    pub volumes: Vec<DataVolume>,
    pub delete_claim: bool,
    pub resources: Option<ResourceRequirements>,
    pub rack_topology_key: Option<String>,
    pub user_config: BTreeMap<String, String>,
    pub pod: PodTemplateOverrides,
    pub cluster_domain: String,
    /// Image of the init container (the operator's).
    pub operator_image: String,
    /// ClusterRole the brokers' service account is bound to when they read their node.
    pub broker_cluster_role: String,
    /// The operator's pods (see [`OperatorSettings::operator_pods`]).
    pub operator_pods: Option<OperatorPods>,
    /// Client listeners beside the internal PLAINTEXT one.
    pub additional_listeners: Vec<ListenerSpec>,
    /// The TLS settings every TLS listener shares.
    pub tls: Option<ListenerTls>,
    /// The SASL mechanism every SASL listener offers.
    pub sasl_mechanism: Option<&'static str>,
    pub admin: Option<AdminCredentials>,
    pub authorization: Option<AuthorizationSpec>,
    /// The `host:port` each broker advertises on each `nodeport` or `loadbalancer` listener,
    /// by `(listener, ordinal)`: its node's address (the [`NODE_ADDRESS`] token) and the node
    /// port the API server gave its Service, or its Service's load balancer address and the
    /// listener's port. Known only once the Services exist: the reconciler fills this in
    /// before it builds the brokers' configuration.
    ///
    /// [`NODE_ADDRESS`]: crate::broker_init::NODE_ADDRESS
    pub external_addresses: BTreeMap<(String, i32), String>,
    /// The `host:port` of each `loadbalancer` listener's bootstrap Service, by listener, once
    /// its load balancer has an address: the brokers' certificates name it.
    pub external_bootstraps: BTreeMap<String, String>,
    /// Every node's addresses, when [`Self::names_nodes_in_certificates`]: a broker advertises
    /// its node's address on a `nodeport` listener, known only once its pod is scheduled, so
    /// every broker's certificate names every node's. The reconciler fills this in.
    pub node_addresses: Vec<String>,
    pub cluster_ca: CertificateAuthority,
    pub clients_ca: CertificateAuthority,
    /// Counts the renewals of the brokers' certificates (the generation of Secret
    /// `<cluster>-broker-certs`): a change rolls the brokers. The reconciler fills this in
    /// once it has made the certificates.
    pub certificates_generation: u64,
    /// The dedicated controllers (`spec.controllers`), `None` when the first brokers form the
    /// quorum.
    pub controllers: Option<ControllerPool>,
}

/// The node id of the first dedicated controller: the pool's StatefulSet starts its ordinals
/// there, so a pod's name ends in its node id, and broker ordinals never reach it.
pub const FIRST_CONTROLLER_ID: i32 = 1000;

/// A cluster's dedicated controllers.
#[derive(Debug, Clone, PartialEq)]
pub struct ControllerPool {
    pub replicas: i32,
    /// Each controller's one volume.
    pub volume: DataVolume,
    pub resources: Option<ResourceRequirements>,
}

impl ControllerPool {
    /// The controllers' node ids.
    pub fn ids(&self) -> std::ops::Range<i32> {
        FIRST_CONTROLLER_ID..FIRST_CONTROLLER_ID + self.replicas
    }
}

/// One of a broker's data volumes: its claim template, where it is mounted, and the log
/// directory in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataVolume {
    /// The JBOD volume's id; `None` for the single volume of a cluster without `volumes`.
    pub id: Option<u32>,
    pub size: String,
    pub storage_class_name: Option<String>,
}

impl DataVolume {
    /// The StatefulSet's claim template (and pod volume) name; the claims are
    /// `<template>-<pod>`.
    pub fn claim_template(&self) -> String {
        match self.id {
            None => "data".to_string(),
            Some(id) => format!("data-{id}"),
        }
    }

    /// Where the broker container mounts it.
    pub fn mount_path(&self) -> String {
        match self.id {
            None => DATA_MOUNT.to_string(),
            Some(id) => format!("{DATA_MOUNT}/data-{id}"),
        }
    }

    /// The log directory inside it: a directory, not the mount point, so a filesystem's own
    /// entries (`lost+found`) are never taken for partitions.
    pub fn log_dir(&self) -> String {
        match self.id {
            None => format!("{DATA_MOUNT}/data"),
            Some(id) => format!("{DATA_MOUNT}/data-{id}/log"),
        }
    }
}

/// Where the broker's data volume is mounted (under it, each JBOD volume's mount).
pub const DATA_MOUNT: &str = "/var/lib/oxbow";

/// The volumes `storage` asks for, in the order of their ids.
fn data_volumes(storage: &StorageSpec) -> Vec<DataVolume> {
    if storage.volumes.is_empty() {
        return vec![DataVolume {
            id: None,
            size: storage.size.clone(),
            storage_class_name: storage.storage_class_name.clone(),
        }];
    }
    let mut volumes: Vec<DataVolume> = storage
        .volumes
        .iter()
        .map(|v| DataVolume {
            id: Some(v.id),
            size: v.size.clone().unwrap_or_else(|| storage.size.clone()),
            storage_class_name: v
                .storage_class_name
                .clone()
                .or_else(|| storage.storage_class_name.clone()),
        })
        .collect();
    volumes.sort_by_key(|v| v.id);
    volumes
}

fn check_storage(storage: &StorageSpec, problems: &mut Vec<String>) {
    let mut check_size = |field: &str, size: &str| match parse_quantity(size) {
        Ok(bytes) if bytes < MIN_STORAGE_BYTES => {
            problems.push(format!("{field} `{size}` is less than 1Mi"))
        }
        Ok(_) => {}
        Err(why) => problems.push(format!(
            "{field} `{size}` is not a quantity: {why} (for example 10Gi)"
        )),
    };
    check_size("spec.storage.size", &storage.size);
    for volume in &storage.volumes {
        if let Some(size) = &volume.size {
            check_size(
                &format!("spec.storage.volumes[id={}].size", volume.id),
                size,
            );
        }
    }
    let classes = std::iter::once((
        "spec.storage.storageClassName".to_string(),
        &storage.storage_class_name,
    ))
    .chain(storage.volumes.iter().map(|v| {
        (
            format!("spec.storage.volumes[id={}].storageClassName", v.id),
            &v.storage_class_name,
        )
    }));
    for (field, class) in classes {
        if let Some(class) = class {
            if !is_dns_subdomain(class) {
                problems.push(format!(
                    "{field} `{class}` is not a valid storage class name"
                ));
            }
        }
    }
    let mut ids = BTreeSet::new();
    for volume in &storage.volumes {
        if !ids.insert(volume.id) {
            problems.push(format!(
                "spec.storage.volumes lists id {} twice: each volume needs an id of its own",
                volume.id
            ));
        }
    }
    if storage.volumes.len() > MAX_VOLUMES {
        problems.push(format!(
            "spec.storage.volumes lists {} volumes; a broker has at most {MAX_VOLUMES}",
            storage.volumes.len()
        ));
    }
}

impl ValidatedCluster {
    /// The additional listeners of type `nodeport`.
    pub fn node_port_listeners(&self) -> impl Iterator<Item = &ListenerSpec> {
        self.additional_listeners
            .iter()
            .filter(|l| l.type_ == ListenerType::NodePort)
    }

    /// The additional listeners reached from outside the Kubernetes cluster, through Services
    /// of their own: `nodeport` and `loadbalancer`.
    pub fn external_listeners(&self) -> impl Iterator<Item = &ListenerSpec> {
        self.additional_listeners
            .iter()
            .filter(|l| l.type_ != ListenerType::Internal)
    }

    /// The Service of external `listener` for broker `ordinal`, or its bootstrap Service
    /// (`None`).
    pub fn external_service_name(&self, listener: &ListenerSpec, ordinal: Option<i32>) -> String {
        match ordinal {
            Some(ordinal) => format!("{}-{}-{ordinal}", self.name, port_name(listener)),
            None => format!("{}-{}-bootstrap", self.name, port_name(listener)),
        }
    }

    /// The StatefulSet, and the prefix of every pod name.
    pub fn statefulset_name(&self) -> String {
        self.name.clone()
    }

    /// The headless Service that gives every broker its DNS name.
    pub fn headless_service_name(&self) -> String {
        format!("{}-brokers", self.name)
    }

    /// The Service clients bootstrap from.
    pub fn bootstrap_service_name(&self) -> String {
        format!("{}-bootstrap", self.name)
    }

    pub fn config_map_name(&self) -> String {
        format!("{}-config", self.name)
    }

    pub fn pdb_name(&self) -> String {
        self.name.clone()
    }

    /// The dedicated controllers' StatefulSet (and PodDisruptionBudget), and the prefix of
    /// their pod names.
    pub fn controller_statefulset_name(&self) -> String {
        format!("{}-controller", self.name)
    }

    /// Whether node `id` is a dedicated controller.
    pub fn is_controller(&self, id: i32) -> bool {
        self.controllers
            .as_ref()
            .is_some_and(|pool| pool.ids().contains(&id))
    }

    /// Every node of a cluster running `brokers` brokers: the brokers, then the dedicated
    /// controllers.
    pub fn node_ids(&self, brokers: i32) -> Vec<i32> {
        (0..brokers)
            .chain(self.controllers.iter().flat_map(ControllerPool::ids))
            .collect()
    }

    /// The service account of the broker pods, when they need one (`spec.rack`: the init
    /// container reads the pod's Node).
    pub fn broker_service_account_name(&self) -> String {
        format!("{}-broker", self.name)
    }

    /// The ClusterRoleBinding that lets the brokers' service account read nodes. Cluster
    /// scoped, so it names the namespace; `:` occurs in neither name, so it is unambiguous.
    pub fn node_reader_binding_name(&self) -> String {
        node_reader_binding_name(&self.namespace, &self.name)
    }

    /// Whether broker pods read their node (`spec.rack`), and so need a ServiceAccount
    /// allowed to.
    pub fn reads_node(&self) -> bool {
        self.rack_topology_key.is_some()
    }

    /// Whether the TLS listeners serve certificates of the cluster CA (no `secretName`).
    pub fn serves_cluster_ca_certificates(&self) -> bool {
        self.tls
            .as_ref()
            .is_some_and(|tls| tls.secret_name.is_none())
    }

    /// The cluster's NetworkPolicy.
    pub fn network_policy_name(&self) -> String {
        format!("{}-network-policy", self.name)
    }

    /// The Secret with each broker's key store (`<pod>.pem`) and both CA certificates.
    pub fn broker_certs_secret_name(&self) -> String {
        format!("{}-broker-certs", self.name)
    }

    /// Every name a client reaches broker `ordinal` by (a dedicated controller: its pod's DNS
    /// names alone): its pod's DNS names, the bootstrap
    /// Service's, and its and its listeners' bootstraps' load balancer addresses (not a node
    /// port's node address, which the pod learns at start).
    pub fn broker_certificate_names(&self, ordinal: i32) -> Vec<String> {
        let pod = self.pod_name(ordinal);
        let headless = self.headless_service_name();
        let bootstrap = self.bootstrap_service_name();
        let ns = &self.namespace;
        let domain = &self.cluster_domain;
        let mut names = vec![
            format!("{pod}.{headless}.{ns}.svc.{domain}"),
            format!("{pod}.{headless}.{ns}.svc"),
            format!("{pod}.{headless}.{ns}"),
        ];
        if self.is_controller(ordinal) {
            // Only its peers reach a dedicated controller, by its pod's name.
            return names;
        }
        names.extend([
            format!("{bootstrap}.{ns}.svc.{domain}"),
            format!("{bootstrap}.{ns}.svc"),
            format!("{bootstrap}.{ns}"),
            bootstrap.clone(),
        ]);
        for listener in self.external_listeners() {
            names.push(format!(
                "{}.{ns}.svc",
                self.external_service_name(listener, None)
            ));
            let addresses = [
                self.external_addresses
                    .get(&(listener.name.clone(), ordinal)),
                self.external_bootstraps.get(&listener.name),
            ];
            for address in addresses.into_iter().flatten() {
                let host = address
                    .rsplit_once(':')
                    .map_or(address.as_str(), |(host, _)| host)
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                // A node port's address is the node's, put in at pod start: not known here.
                if !host.contains('%') && !names.iter().any(|n| n == host) {
                    names.push(host.to_string());
                }
            }
        }
        if self.node_port_listeners().next().is_some() {
            for address in &self.node_addresses {
                if !names.contains(address) {
                    names.push(address.clone());
                }
            }
        }
        names
    }

    /// Whether the brokers' certificates must name the nodes' addresses: a `nodeport` listener
    /// with TLS serves the operator's certificates.
    pub fn names_nodes_in_certificates(&self) -> bool {
        self.serves_cluster_ca_certificates()
            && self
                .node_port_listeners()
                .any(|listener| listener.tls.is_some())
    }

    /// Whether broker pods start with the `broker-init` init container: to read their node's
    /// rack, to join the TLS certificate and key into one PEM file, or to put their node's
    /// address into what a `nodeport` listener advertises.
    pub fn needs_init(&self) -> bool {
        self.reads_node()
            || self
                .tls
                .as_ref()
                .is_some_and(|tls| tls.secret_name.is_some())
            || self.node_port_listeners().next().is_some()
    }

    /// Whether the brokers check client certificates (and need the secret's `ca.crt`).
    pub fn checks_client_certificates(&self) -> bool {
        self.tls
            .as_ref()
            .is_some_and(|tls| tls.client_auth != ClientAuth::None)
    }

    /// `super.users`: the internal principal, the admin user, then the listed ones.
    pub fn super_users(&self) -> Option<String> {
        let authorization = self.authorization.as_ref()?;
        let mut users = vec![INTERNAL_PRINCIPAL.to_string()];
        if let Some(admin) = &self.admin {
            users.push(format!("User:{}", admin.username));
        }
        for user in &authorization.super_users {
            if !users.contains(user) {
                users.push(user.clone());
            }
        }
        Some(users.join(";"))
    }

    /// The pod of node `id`: a broker's ordinal, or a dedicated controller's.
    pub fn pod_name(&self, id: i32) -> String {
        if self.is_controller(id) {
            format!("{}-{id}", self.controller_statefulset_name())
        } else {
            format!("{}-{id}", self.name)
        }
    }

    /// A broker's stable DNS name through the headless Service.
    pub fn pod_host(&self, ordinal: i32) -> String {
        format!(
            "{}.{}.{}.svc.{}",
            self.pod_name(ordinal),
            self.headless_service_name(),
            self.namespace,
            self.cluster_domain
        )
    }

    /// `host:port` of the client Service.
    pub fn bootstrap_address(&self) -> String {
        format!(
            "{}.{}.svc:{}",
            self.bootstrap_service_name(),
            self.namespace,
            self.client_port
        )
    }

    /// Node ids of the metadata quorum voters: the dedicated controllers, else the lowest
    /// ordinals, one below three brokers and three from three on (an even count adds no fault
    /// tolerance).
    pub fn voters(&self) -> Vec<i32> {
        if let Some(pool) = &self.controllers {
            return pool.ids().collect();
        }
        let count = if self.replicas >= 3 { 3 } else { 1 };
        (0..count).collect()
    }
}

/// The two CAs of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaKind {
    /// Signs the brokers' certificates.
    Cluster,
    /// Signs the certificates of TLS KafkaUsers.
    Clients,
}

impl CaKind {
    pub fn name(self) -> &'static str {
        match self {
            CaKind::Cluster => "cluster-ca",
            CaKind::Clients => "clients-ca",
        }
    }
}

/// Name of the ClusterRoleBinding that lets the brokers of cluster `namespace/name` read
/// nodes.
pub fn node_reader_binding_name(namespace: &str, name: &str) -> String {
    format!("oxbow:{namespace}:{name}:broker")
}

/// Checks `cluster` and resolves what the builders need. Every problem is reported at once.
pub fn validate(
    cluster: &KafkaCluster,
    settings: &OperatorSettings,
) -> Result<ValidatedCluster, InvalidCluster> {
    let mut problems = Vec::new();
    let spec = &cluster.spec;
    let meta = &cluster.metadata;

    let name = meta.name.clone().unwrap_or_default();
    if name.is_empty() {
        problems.push("metadata.name is missing".to_string());
    } else if name.len() > MAX_CLUSTER_NAME {
        problems.push(format!(
            "metadata.name `{name}` has {} characters; at most {MAX_CLUSTER_NAME} fit in the labels derived from it",
            name.len()
        ));
    } else if !is_dns_label(&name) || !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        problems.push(format!(
            "metadata.name `{name}` must start with a letter and hold only lowercase letters, digits and '-'"
        ));
    }
    let namespace = meta.namespace.clone().unwrap_or_default();
    if namespace.is_empty() {
        problems.push("metadata.namespace is missing".to_string());
    }
    let owner = cluster.controller_owner_ref(&());
    if owner.is_none() {
        problems
            .push("metadata.uid is missing (the resource was not read from the API)".to_string());
    }

    if spec.replicas < 1 {
        problems.push(format!(
            "spec.replicas is {}; a cluster has at least one broker",
            spec.replicas
        ));
    }

    let image = spec
        .image
        .clone()
        .unwrap_or_else(|| settings.broker_image.clone());
    if image.trim().is_empty() || image.chars().any(char::is_whitespace) {
        problems.push(format!(
            "spec.image `{image}` is not an image reference (empty or containing spaces)"
        ));
    }

    let listeners = &spec.listeners;
    let mut ports = vec![
        ("spec.listeners.clientPort", listeners.client_port),
        ("spec.listeners.controllerPort", listeners.controller_port),
    ];
    if spec.metrics.enabled {
        ports.push(("spec.metrics.port", spec.metrics.port));
    }
    let listener_fields: Vec<String> = listeners
        .additional
        .iter()
        .map(|l| format!("spec.listeners.additional[{}].port", l.name))
        .collect();
    let mut ports: Vec<(&str, i32)> = ports;
    for (field, listener) in listener_fields.iter().zip(&listeners.additional) {
        ports.push((field.as_str(), listener.port));
    }
    for (field, port) in &ports {
        if !(1..=65535).contains(port) {
            problems.push(format!("{field} is {port}; a port is between 1 and 65535"));
        }
    }
    for (i, (field, port)) in ports.iter().enumerate() {
        if let Some((other, _)) = ports[..i].iter().find(|(_, p)| p == port) {
            problems.push(format!("{field} and {other} are both {port}"));
        }
    }
    let (tls, sasl_mechanism) = check_listeners(&listeners.additional, &mut problems);
    for listener in &listeners.additional {
        check_ingress(listener, spec.replicas, &mut problems);
    }
    for listener in &listeners.additional {
        if listener.type_ == ListenerType::Internal {
            continue;
        }
        // The longest of the listener's Service names: the bootstrap's, or the last broker's.
        let longest = format!("{name}-{}-bootstrap", port_name(listener))
            .len()
            .max(format!("{name}-{}-{}", port_name(listener), spec.replicas - 1).len());
        if longest > MAX_SERVICE_NAME {
            problems.push(format!(
                "spec.listeners.additional[{}]: its Services are named <cluster>-{}-bootstrap and <cluster>-{}-<broker>, which take {longest} characters here; a Service name has at most {MAX_SERVICE_NAME}: shorten the cluster's or the listener's name",
                listener.name,
                port_name(listener),
                port_name(listener)
            ));
        }
    }
    let security = spec.security.clone().unwrap_or_default();
    check_security(
        security.admin.as_ref(),
        security.authorization.as_ref(),
        &mut problems,
    );

    check_storage(&spec.storage, &mut problems);
    let controllers = spec.controllers.as_ref().map(|pool| {
        check_controllers(&name, spec.replicas, pool, &mut problems);
        let brokers = data_volumes(&spec.storage);
        let storage = pool.storage.as_ref();
        ControllerPool {
            replicas: pool.replicas,
            volume: DataVolume {
                id: None,
                size: storage.map_or_else(|| brokers[0].size.clone(), |s| s.size.clone()),
                storage_class_name: match storage {
                    Some(s) => s.storage_class_name.clone(),
                    None => brokers[0].storage_class_name.clone(),
                },
            },
            resources: pool.resources.clone(),
        }
    });

    if let Some(rack) = &spec.rack {
        if !is_label_key(&rack.topology_key) {
            problems.push(format!(
                "spec.rack.topologyKey `{}` is not a label key (like topology.kubernetes.io/zone)",
                rack.topology_key
            ));
        }
    }

    for (key, value) in &spec.config {
        if OWNED_SETTINGS.contains(&key.as_str()) {
            problems.push(format!(
                "spec.config.{key} is set by the operator and cannot be overridden"
            ));
        } else if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            problems.push(format!(
                "spec.config key `{key}` is not a setting name (letters, digits, '.', '_', '-')"
            ));
        }
        if value.chars().any(char::is_control) || value.ends_with('\\') {
            problems.push(format!(
                "spec.config.{key} holds a line break, control character or trailing backslash"
            ));
        }
    }

    let pod = spec.pod_template.clone().unwrap_or_default();
    if let Some(seconds) = pod.termination_grace_period_seconds {
        if seconds < 0 {
            problems.push(format!(
                "spec.podTemplate.terminationGracePeriodSeconds is {seconds}; it cannot be negative"
            ));
        }
    }
    for key in pod.labels.keys().chain(pod.annotations.keys()) {
        if !is_label_key(key) {
            problems.push(format!(
                "spec.podTemplate key `{key}` is not a valid label or annotation key"
            ));
        }
    }
    for (key, value) in &pod.labels {
        if !is_label_value(value) {
            problems.push(format!(
                "spec.podTemplate.labels.{key} is `{value}`: a label value has at most 63 letters, digits, '-', '_' or '.', and starts and ends with a letter or digit"
            ));
        }
    }

    if !problems.is_empty() {
        return Err(InvalidCluster { problems });
    }
    let Some(owner) = owner else {
        return Err(InvalidCluster {
            problems: vec!["metadata.uid is missing".to_string()],
        });
    };
    Ok(ValidatedCluster {
        name,
        namespace,
        generation: meta.generation,
        owner,
        replicas: spec.replicas,
        image,
        image_pull_policy: spec.image_pull_policy,
        client_port: listeners.client_port,
        controller_port: listeners.controller_port,
        metrics_port: spec.metrics.enabled.then_some(spec.metrics.port),
        volumes: data_volumes(&spec.storage),
        delete_claim: spec.storage.delete_claim,
        resources: spec.resources.clone(),
        rack_topology_key: spec.rack.as_ref().map(|r| r.topology_key.clone()),
        user_config: spec.config.clone(),
        pod,
        cluster_domain: settings.cluster_domain.clone(),
        operator_image: settings.operator_image.clone(),
        broker_cluster_role: settings.broker_cluster_role.clone(),
        operator_pods: settings.operator_pods.clone(),
        additional_listeners: listeners.additional.clone(),
        tls,
        sasl_mechanism,
        admin: security.admin,
        authorization: security.authorization,
        external_addresses: BTreeMap::new(),
        external_bootstraps: BTreeMap::new(),
        node_addresses: Vec::new(),
        cluster_ca: spec.cluster_ca.clone().unwrap_or_default(),
        clients_ca: spec.clients_ca.clone().unwrap_or_default(),
        certificates_generation: 0,
        controllers,
    })
}

/// Checks `spec.controllers` of cluster `name` with `brokers` brokers.
fn check_controllers(
    name: &str,
    brokers: i32,
    pool: &ControllerPoolSpec,
    problems: &mut Vec<String>,
) {
    if ![1, 3, 5].contains(&pool.replicas) {
        problems.push(format!(
            "spec.controllers.replicas is {}; a controller pool has 1, 3 or 5 controllers (an even count adds no fault tolerance)",
            pool.replicas
        ));
    }
    if brokers > FIRST_CONTROLLER_ID {
        problems.push(format!(
            "spec.replicas is {brokers}; with spec.controllers a cluster has at most {FIRST_CONTROLLER_ID} brokers (the controllers' node ids start at {FIRST_CONTROLLER_ID})"
        ));
    }
    let longest = MAX_CLUSTER_NAME - "-controller".len();
    if name.len() > longest {
        problems.push(format!(
            "metadata.name `{name}` has {} characters; with spec.controllers at most {longest} fit in the labels of StatefulSet `{name}-controller`",
            name.len()
        ));
    }
    if let Some(storage) = &pool.storage {
        match parse_quantity(&storage.size) {
            Ok(bytes) if bytes < MIN_STORAGE_BYTES => problems.push(format!(
                "spec.controllers.storage.size `{}` is less than 1Mi",
                storage.size
            )),
            Ok(_) => {}
            Err(why) => problems.push(format!(
                "spec.controllers.storage.size `{}` is not a quantity: {why} (for example 1Gi)",
                storage.size
            )),
        }
        if let Some(class) = &storage.storage_class_name {
            if !is_dns_subdomain(class) {
                problems.push(format!(
                    "spec.controllers.storage.storageClassName `{class}` is not a valid storage class name"
                ));
            }
        }
    }
}

/// Checks the additional listeners; returns the TLS settings and the SASL mechanism they
/// share.
fn check_listeners(
    listeners: &[ListenerSpec],
    problems: &mut Vec<String>,
) -> (Option<ListenerTls>, Option<&'static str>) {
    let mut tls: Option<(&str, &ListenerTls)> = None;
    let mut sasl: Option<(&str, &'static str)> = None;
    for (i, listener) in listeners.iter().enumerate() {
        let name = &listener.name;
        let field = format!("spec.listeners.additional[{name}]");
        if !is_listener_name(name) {
            problems.push(format!(
                "{field}: `{name}` is not a listener name (uppercase letters, digits and single '_', starting with a letter, at most 15 characters)"
            ));
        } else if RESERVED_LISTENER_NAMES.contains(&name.as_str()) {
            problems.push(format!(
                "{field}: the name {name} is reserved ({} are taken by the operator or name security protocols)",
                RESERVED_LISTENER_NAMES.join(", ")
            ));
        }
        if listeners[..i].iter().any(|other| other.name == *name) {
            problems.push(format!("{field}: two listeners are named {name}"));
        }
        if let Some(this) = &listener.tls {
            if let Some(secret) = this.secret_name.as_deref().filter(|s| !is_dns_subdomain(s)) {
                problems.push(format!(
                    "{field}.tls.secretName `{secret}` is not a Secret name"
                ));
            }
            let source = |tls: &ListenerTls| match &tls.secret_name {
                Some(secret) => format!("secret {secret}"),
                None => "the cluster CA's certificates".to_string(),
            };
            match tls {
                None => tls = Some((name, this)),
                Some((first, shared)) if shared.secret_name != this.secret_name => {
                    problems.push(format!(
                        "{field}.tls uses {} but listener {first} uses {}: a broker serves one certificate, so every TLS listener takes it from the same place",
                        source(this),
                        source(shared)
                    ));
                }
                Some((first, shared)) if shared.client_auth != this.client_auth => {
                    problems.push(format!(
                        "{field}.tls.clientAuth is {} but listener {first} has {}: the brokers have one ssl.client.auth for every TLS listener",
                        this.client_auth.as_str(),
                        shared.client_auth.as_str()
                    ));
                }
                Some(_) => {}
            }
        }
        if let Some(mechanism) = listener.authentication.mechanism() {
            if mechanism == "PLAIN" && listener.tls.is_none() {
                problems.push(format!(
                    "{field}: authentication plain sends passwords in the clear; give the listener tls, or use scram-sha-256 or scram-sha-512"
                ));
            }
            match sasl {
                None => sasl = Some((name, mechanism)),
                Some((first, shared)) if shared != mechanism => problems.push(format!(
                    "{field}.authentication is {mechanism} but listener {first} uses {shared}: the brokers offer one set of SASL mechanisms on every SASL listener, so they all use the same"
                )),
                Some(_) => {}
            }
        }
    }
    check_node_ports(listeners, problems);
    (
        tls.map(|(_, settings)| settings.clone()),
        sasl.map(|(_, mechanism)| mechanism),
    )
}

/// An `ingress` listener: TLS (the ingress controller passes it through, routing by SNI), a
/// bootstrap host and one for each of the `brokers`, all distinct, and no node ports; other
/// listeners have no hosts.
fn check_ingress(listener: &ListenerSpec, brokers: i32, problems: &mut Vec<String>) {
    let field = format!("spec.listeners.additional[{}]", listener.name);
    let configuration = listener.configuration.clone().unwrap_or_default();
    if listener.type_ != ListenerType::Ingress {
        let hosts = configuration
            .bootstrap
            .as_ref()
            .is_some_and(|b| b.host.is_some())
            || configuration.brokers.iter().any(|b| b.host.is_some())
            || configuration.host_template.is_some()
            || configuration.class.is_some();
        if hosts {
            problems.push(format!(
                "{field}.configuration: hosts, hostTemplate and class are for ingress listeners"
            ));
        }
        return;
    }
    if listener.tls.is_none() {
        problems.push(format!(
            "{field}: an ingress listener needs tls (the ingress controller passes TLS through to the broker, routing by its server name)"
        ));
    }
    if configuration
        .bootstrap
        .as_ref()
        .and_then(|b| b.node_port)
        .is_some()
        || configuration.brokers.iter().any(|b| b.node_port.is_some())
    {
        problems.push(format!(
            "{field}.configuration: node ports are for nodeport and loadbalancer listeners"
        ));
    }
    if let Some(template) = &configuration.host_template {
        if !template.contains("{nodeId}") {
            problems.push(format!(
                "{field}.configuration.hostTemplate `{template}` has no {{nodeId}}, so every broker would get the same host"
            ));
        }
    }
    if let Some(class) = configuration
        .class
        .as_ref()
        .filter(|c| !is_dns_subdomain(c))
    {
        problems.push(format!(
            "{field}.configuration.class `{class}` is not an IngressClass name"
        ));
    }
    let mut hosts: Vec<(String, String)> = Vec::new();
    match listener.ingress_host(None) {
        Some(host) => hosts.push((host, format!("{field}.configuration.bootstrap.host"))),
        None => problems.push(format!(
            "{field}.configuration.bootstrap.host is missing: an ingress listener's clients bootstrap from it"
        )),
    }
    for id in 0..brokers {
        match listener.ingress_host(Some(id)) {
            Some(host) => hosts.push((host, format!("{field}: broker {id}'s host"))),
            None => problems.push(format!(
                "{field}.configuration: broker {id} has no host; give hostTemplate (with {{nodeId}}) or a host in brokers"
            )),
        }
    }
    for (i, (host, at)) in hosts.iter().enumerate() {
        if !is_dns_subdomain(host) || host.contains('{') {
            problems.push(format!("{at} `{host}` is not a host name"));
        } else if let Some((_, first)) = hosts[..i].iter().find(|(h, _)| h == host) {
            problems.push(format!("{at} `{host}` is also {first}"));
        }
    }
}

/// Fixed node ports: only on external listeners, each broker once per listener, in range,
/// and no port twice in the cluster (the API server would refuse the second Service).
fn check_node_ports(listeners: &[ListenerSpec], problems: &mut Vec<String>) {
    let mut taken: Vec<(i32, String)> = Vec::new();
    for listener in listeners {
        let Some(configuration) = &listener.configuration else {
            continue;
        };
        let field = format!("spec.listeners.additional[{}].configuration", listener.name);
        if listener.type_ == ListenerType::Internal {
            problems.push(format!(
                "{field}: node ports are for nodeport and loadbalancer listeners, and {} is internal",
                listener.name
            ));
        }
        let mut ports: Vec<(i32, String)> = Vec::new();
        if let Some(port) = configuration.bootstrap.as_ref().and_then(|b| b.node_port) {
            ports.push((port, format!("{field}.bootstrap.nodePort")));
        }
        for (i, broker) in configuration.brokers.iter().enumerate() {
            if broker.broker < 0 {
                problems.push(format!(
                    "{field}.brokers: broker {} is not a broker id",
                    broker.broker
                ));
            }
            if configuration.brokers[..i]
                .iter()
                .any(|other| other.broker == broker.broker)
            {
                problems.push(format!(
                    "{field}.brokers: broker {} is listed twice",
                    broker.broker
                ));
            }
            if let Some(port) = broker.node_port {
                ports.push((port, format!("{field}.brokers[{}].nodePort", broker.broker)));
            }
        }
        for (port, at) in ports {
            if !(1..=65535).contains(&port) {
                problems.push(format!("{at}: {port} is not a port"));
            } else if let Some((_, first)) = taken.iter().find(|(p, _)| *p == port) {
                problems.push(format!("{at}: node port {port} is also {first}"));
            } else {
                taken.push((port, at));
            }
        }
    }
}

fn check_security(
    admin: Option<&AdminCredentials>,
    authorization: Option<&AuthorizationSpec>,
    problems: &mut Vec<String>,
) {
    if let Some(admin) = admin {
        let name = &admin.username;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'))
        {
            problems.push(format!(
                "spec.security.admin.username `{name}` holds characters other than letters, digits, '.', '_', '@' and '-'"
            ));
        }
        let secret = &admin.password_secret;
        if !is_dns_subdomain(&secret.name) {
            problems.push(format!(
                "spec.security.admin.passwordSecret.name `{}` is not a Secret name",
                secret.name
            ));
        }
        if secret.key.is_empty()
            || !secret
                .key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        {
            problems.push(format!(
                "spec.security.admin.passwordSecret.key `{}` is not a Secret key",
                secret.key
            ));
        }
    }
    if let Some(authorization) = authorization {
        for user in &authorization.super_users {
            let valid = user.strip_prefix("User:").is_some_and(|name| {
                !name.is_empty() && !name.chars().any(|c| c == ';' || c.is_control())
            });
            if !valid {
                problems.push(format!(
                    "spec.security.authorization.superUsers: `{user}` is not a principal like User:alice (no ';')"
                ));
            }
        }
    }
}

/// A Kafka listener name the operator accepts: `^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$`, at most 15
/// characters, so that its lowercase form is a valid port name.
fn is_listener_name(name: &str) -> bool {
    name.len() <= 15
        && name.starts_with(|c: char| c.is_ascii_uppercase())
        && !name.ends_with('_')
        && !name.contains("__")
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

const MIN_STORAGE_BYTES: f64 = 1024.0 * 1024.0;

/// The value of a Kubernetes quantity (`10Gi`, `500M`, `1e9`), as a float: close enough to
/// compare sizes. Refuses what the API server refuses, and milli-units (a fraction of a byte).
pub fn parse_quantity(text: &str) -> Result<f64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("it is empty".to_string());
    }
    let number_end = text
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || (i == 0 && (c == '+' || c == '-'))))
        .map_or(text.len(), |(i, _)| i);
    let (number, suffix) = text.split_at(number_end);
    let digits = number.trim_start_matches(['+', '-']);
    if digits.is_empty() || digits == "." || digits.matches('.').count() > 1 {
        return Err(format!("`{number}` is not a number"));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{number}` is not a number"))?;
    let multiplier = match suffix {
        "" => 1.0,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "m" => return Err("a milli-unit is a fraction of a byte".to_string()),
        exp if exp.starts_with(['e', 'E']) => {
            let power: i32 = exp[1..]
                .parse()
                .map_err(|_| format!("`{suffix}` is not an exponent"))?;
            10f64.powi(power)
        }
        other => return Err(format!("unknown suffix `{other}`")),
    };
    let bytes = value * multiplier;
    if bytes <= 0.0 {
        return Err("it is not positive".to_string());
    }
    Ok(bytes)
}

/// RFC 1123 label: lowercase alphanumerics and '-', at most 63, alphanumeric at both ends.
fn is_dns_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 characters.
fn is_dns_subdomain(text: &str) -> bool {
    text.len() <= 253 && text.split('.').all(is_dns_label)
}

/// A label or annotation key: an optional DNS-subdomain prefix and `/`, then a name of at
/// most 63 alphanumerics, '-', '_' or '.', alphanumeric at both ends.
fn is_label_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    name_ok && prefix.is_none_or(is_dns_subdomain)
}

/// A label value: empty, or at most 63 alphanumerics, '-', '_' or '.', alphanumeric at both
/// ends.
fn is_label_value(value: &str) -> bool {
    value.is_empty() || (value.len() <= 63 && is_label_key(value) && !value.contains('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{cluster, MINIMAL_CLUSTER};

    #[test]
    fn pod_label_values_the_api_server_would_refuse_are_refused() {
        let problem = one_problem(&format!(
            "{MINIMAL_CLUSTER}\n  podTemplate:\n    labels:\n      team: \"data platform\"\n      tier: \"\"\n      owner: a.b_c-1\n"
        ));
        assert!(
            problem.contains("spec.podTemplate.labels.team is `data platform`"),
            "{problem}"
        );
        assert!(is_label_value(""));
        assert!(!is_label_value("a/b"));
        assert!(!is_label_value(&"a".repeat(64)));
    }

    fn problems(yaml: &str) -> Vec<String> {
        validate(&cluster(yaml), &OperatorSettings::default())
            .expect_err("the spec is invalid")
            .problems
    }

    fn one_problem(yaml: &str) -> String {
        let problems = problems(yaml);
        assert_eq!(problems.len(), 1, "{problems:?}");
        problems.into_iter().next().unwrap_or_default()
    }

    #[test]
    fn nodeport_service_names_too_long_for_a_dns_label_are_refused() {
        let long = "a".repeat(48);
        let yaml = MINIMAL_CLUSTER.replace("name: main", &format!("name: {long}"));
        let problem = one_problem(&format!(
            "{yaml}\n  listeners:\n    additional:\n    - name: OUTSIDE\n      port: 9095\n      type: nodeport\n"
        ));
        assert!(
            problem.contains("shorten the cluster's or the listener's name"),
            "{problem}"
        );
        assert!(problem.contains("take 66 characters"), "{problem}");
        let fits = cluster(&format!(
            "{MINIMAL_CLUSTER}\n  listeners:\n    additional:\n    - name: OUTSIDE\n      port: 9095\n      type: nodeport\n"
        ));
        assert!(validate(&fits, &OperatorSettings::default()).is_ok());
    }

    #[test]
    fn a_minimal_cluster_takes_defaults_and_the_operator_image() {
        let settings = OperatorSettings {
            broker_image: "registry.example/oxbow-broker:9.9".to_string(),
            cluster_domain: "corp.local".to_string(),
            operator_image: "registry.example/oxbow-operator:9.9".to_string(),
            broker_cluster_role: "corp-oxbow-broker".to_string(),
            ..OperatorSettings::default()
        };
        let valid = validate(&cluster(MINIMAL_CLUSTER), &settings).expect("valid");
        assert_eq!(valid.name, "main");
        assert_eq!(valid.namespace, "streaming");
        assert_eq!(valid.replicas, 3);
        assert_eq!(valid.image, "registry.example/oxbow-broker:9.9");
        assert_eq!(valid.client_port, 9092);
        assert_eq!(valid.metrics_port, Some(9404));
        assert_eq!(valid.volumes[0].size, "10Gi");
        assert_eq!(valid.volumes[0].claim_template(), "data");
        assert_eq!(valid.owner.kind, "KafkaCluster");
        assert_eq!(valid.owner.controller, Some(true));
        assert_eq!(
            valid.pod_host(2),
            "main-2.main-brokers.streaming.svc.corp.local"
        );
        assert_eq!(
            valid.bootstrap_address(),
            "main-bootstrap.streaming.svc:9092"
        );
        assert_eq!(valid.operator_image, "registry.example/oxbow-operator:9.9");
        assert_eq!(valid.broker_cluster_role, "corp-oxbow-broker");
        assert_eq!(valid.broker_service_account_name(), "main-broker");
        assert_eq!(
            valid.node_reader_binding_name(),
            "oxbow:streaming:main:broker"
        );
        assert!(!valid.needs_init(), "no rack, no init container");
    }

    #[test]
    fn the_quorum_is_one_voter_below_three_brokers_and_three_from_three_on() {
        let settings = OperatorSettings::default();
        let voters = |replicas: i32| {
            let yaml = format!("{MINIMAL_CLUSTER}\n  replicas: {replicas}\n");
            validate(&cluster(&yaml), &settings)
                .expect("valid")
                .voters()
        };
        assert_eq!(voters(1), vec![0]);
        assert_eq!(voters(2), vec![0]);
        assert_eq!(voters(3), vec![0, 1, 2]);
        assert_eq!(voters(7), vec![0, 1, 2]);
    }

    #[test]
    fn dedicated_controllers_are_the_quorum_and_their_pool_is_checked() {
        let settings = OperatorSettings::default();
        let yaml = format!("{MINIMAL_CLUSTER}\n  replicas: 1\n  controllers:\n    replicas: 5\n");
        let valid = validate(&cluster(&yaml), &settings).expect("valid");
        assert_eq!(valid.voters(), vec![1000, 1001, 1002, 1003, 1004]);
        assert_eq!(valid.node_ids(2), vec![0, 1, 1000, 1001, 1002, 1003, 1004]);
        assert_eq!(valid.pod_name(1003), "main-controller-1003");
        assert_eq!(valid.pod_name(3), "main-3");
        let pool = valid.controllers.expect("a pool");
        assert_eq!(pool.volume.size, "10Gi", "the brokers' size by default");
        let refused = format!(
            "{MINIMAL_CLUSTER}\n  replicas: 1001\n  controllers:\n    replicas: 2\n    storage:\n      size: 1k\n      storageClassName: Not_A_Class\n"
        );
        let problems = validate(&cluster(&refused), &settings)
            .expect_err("refused")
            .problems;
        for expected in [
            "spec.controllers.replicas is 2",
            "at most 1000 brokers",
            "spec.controllers.storage.size `1k` is less than 1Mi",
            "storageClassName `Not_A_Class`",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "{expected}: {problems:?}"
            );
        }
        let long = format!(
            "{}\n  controllers:\n    replicas: 3\n",
            MINIMAL_CLUSTER.replace("name: main", &format!("name: {}", "a".repeat(45)))
        );
        let problems = validate(&cluster(&long), &settings)
            .expect_err("refused")
            .problems;
        assert!(problems[0].contains("at most 41"), "{problems:?}");
    }

    #[test]
    fn zero_replicas_are_refused() {
        let message = one_problem(&format!("{MINIMAL_CLUSTER}\n  replicas: 0\n"));
        assert!(message.contains("spec.replicas is 0"), "{message}");
    }

    #[test]
    fn names_that_do_not_fit_in_service_names_and_labels_are_refused() {
        let long = "a".repeat(53);
        let message = one_problem(&MINIMAL_CLUSTER.replace("name: main", &format!("name: {long}")));
        assert!(message.contains("53 characters"), "{message}");
        let message = one_problem(&MINIMAL_CLUSTER.replace("name: main", "name: 1main"));
        assert!(message.contains("must start with a letter"), "{message}");
        let message = one_problem(&MINIMAL_CLUSTER.replace("name: main", "name: Main"));
        assert!(message.contains("lowercase"), "{message}");
    }

    #[test]
    fn jbod_volumes_need_ids_of_their_own_and_valid_sizes_and_classes() {
        let yaml = format!(
            "{MINIMAL_CLUSTER}\n  storage:\n    volumes:\n      - id: 3\n        size: lots\n      - id: 3\n        storageClassName: Fast_SSD\n"
        );
        let cluster = cluster(&yaml);
        let Err(invalid) = validate(&cluster, &OperatorSettings::default()) else {
            panic!("refused");
        };
        let all = invalid.problems.join("\n");
        assert!(
            all.contains("spec.storage.volumes[id=3].size `lots`"),
            "{all}"
        );
        assert!(
            all.contains("spec.storage.volumes[id=3].storageClassName `Fast_SSD`"),
            "{all}"
        );
        assert!(all.contains("lists id 3 twice"), "{all}");
        let volumes = (0..17)
            .map(|id| format!("      - id: {id}\n"))
            .collect::<String>();
        let message = one_problem(&format!(
            "{MINIMAL_CLUSTER}\n  storage:\n    volumes:\n{volumes}"
        ));
        assert!(message.contains("at most 16"), "{message}");
    }

    #[test]
    fn storage_sizes_must_be_positive_quantities_of_at_least_a_mebibyte() {
        for bad in ["ten", "10Qi", "0", "-5Gi", "500m", "1k", "1.2.3Gi", ""] {
            let yaml = format!("{MINIMAL_CLUSTER}\n  storage:\n    size: \"{bad}\"\n");
            let message = one_problem(&yaml);
            assert!(message.contains("spec.storage.size"), "{bad}: {message}");
        }
        for good in ["10Gi", "1Mi", "1.5Ti", "2e9", "100M", "+1Gi", "1E7"] {
            let yaml = format!("{MINIMAL_CLUSTER}\n  storage:\n    size: \"{good}\"\n");
            assert!(
                validate(&cluster(&yaml), &OperatorSettings::default()).is_ok(),
                "{good}"
            );
        }
    }

    #[test]
    fn quantities_parse_to_bytes() {
        assert_eq!(parse_quantity("10Gi"), Ok(10.0 * 1024f64.powi(3)));
        assert_eq!(parse_quantity("1k"), Ok(1000.0));
        assert_eq!(parse_quantity("2e3"), Ok(2000.0));
        assert!(parse_quantity("1e").is_err());
        assert!(parse_quantity(".").is_err());
    }

    #[test]
    fn settings_the_operator_owns_cannot_be_overridden() {
        let yaml = format!(
            "{MINIMAL_CLUSTER}\n  config:\n    node.id: \"4\"\n    listeners: PLAINTEXT://:1\n    log.retention.hours: \"1\"\n"
        );
        let problems = problems(&yaml);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("spec.config.listeners is set by the operator"));
        assert!(problems[1].contains("spec.config.node.id is set by the operator"));
    }

    #[test]
    fn config_values_cannot_inject_lines_into_the_properties_file() {
        let yaml =
            format!("{MINIMAL_CLUSTER}\n  config:\n    log.retention.hours: \"1\\nnode.id=7\"\n");
        assert!(one_problem(&yaml).contains("line break"));
        let yaml = format!("{MINIMAL_CLUSTER}\n  config:\n    \"bad key\": x\n");
        assert!(one_problem(&yaml).contains("not a setting name"));
    }

    #[test]
    fn clashing_ports_are_named() {
        let yaml = format!(
            "{MINIMAL_CLUSTER}\n  listeners:\n    clientPort: 9092\n    controllerPort: 9092\n  metrics:\n    port: 70000\n"
        );
        let problems = problems(&yaml);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("spec.metrics.port is 70000"));
        assert!(problems[1].contains("controllerPort and spec.listeners.clientPort are both 9092"));
    }

    #[test]
    fn a_metrics_port_is_not_checked_when_metrics_are_off() {
        let yaml = format!("{MINIMAL_CLUSTER}\n  metrics:\n    enabled: false\n    port: 9092\n");
        let valid = validate(&cluster(&yaml), &OperatorSettings::default()).expect("valid");
        assert_eq!(valid.metrics_port, None);
    }

    #[test]
    fn images_rack_keys_storage_classes_and_pod_keys_are_checked() {
        let yaml = format!(
            "{MINIMAL_CLUSTER}\n  image: \"oxbow broker\"\n  rack:\n    topologyKey: \"not a key\"\n  storage:\n    storageClassName: Fast_SSD\n  podTemplate:\n    labels:\n      \"-bad\": x\n    terminationGracePeriodSeconds: -1\n"
        );
        let problems = problems(&yaml);
        assert_eq!(problems.len(), 5, "{problems:?}");
        for expected in [
            "spec.image",
            "spec.storage.storageClassName",
            "spec.rack.topologyKey",
            "terminationGracePeriodSeconds",
            "`-bad`",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "{expected}: {problems:?}"
            );
        }
    }

    #[test]
    fn a_cluster_not_read_from_the_api_is_refused() {
        let mut resource = cluster(MINIMAL_CLUSTER);
        resource.metadata.uid = None;
        resource.metadata.namespace = None;
        let problems = validate(&resource, &OperatorSettings::default())
            .expect_err("invalid")
            .problems;
        assert!(problems.iter().any(|p| p.contains("metadata.uid")));
        assert!(problems.iter().any(|p| p.contains("metadata.namespace")));
    }

    fn listeners(items: &str) -> String {
        format!("{MINIMAL_CLUSTER}\n  listeners:\n    additional:\n{items}")
    }

    #[test]
    fn a_sasl_ssl_listener_resolves_its_protocol_tls_and_mechanism() {
        let yaml = listeners(
            "    - name: EXTERNAL\n      port: 9094\n      tls:\n        secretName: main-tls\n      authentication: scram-sha-512\n    - name: APPS_PLAIN\n      port: 9095\n      tls:\n        secretName: main-tls\n",
        );
        let valid = validate(&cluster(&yaml), &OperatorSettings::default()).expect("valid");
        assert_eq!(valid.additional_listeners.len(), 2);
        assert_eq!(protocol(&valid.additional_listeners[0]), "SASL_SSL");
        assert_eq!(protocol(&valid.additional_listeners[1]), "SSL");
        assert_eq!(port_name(&valid.additional_listeners[1]), "apps-plain");
        assert_eq!(
            valid.tls.as_ref().and_then(|t| t.secret_name.as_deref()),
            Some("main-tls")
        );
        assert_eq!(valid.sasl_mechanism, Some("SCRAM-SHA-512"));
        assert!(valid.needs_init(), "the key store is joined at start");
        assert!(!valid.reads_node());
        assert_eq!(valid.super_users(), None, "no authorization");
    }

    #[test]
    fn listener_names_must_be_unique_valid_and_not_reserved() {
        let problems = problems(&listeners(
            "    - name: EXTERNAL\n      port: 9094\n    - name: EXTERNAL\n      port: 9095\n    - name: CONTROLLER\n      port: 9096\n    - name: external\n      port: 9097\n    - name: A_VERY_LONG_NAME_X\n      port: 9098\n",
        ));
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(
            problems[0].contains("two listeners are named EXTERNAL"),
            "{problems:?}"
        );
        assert!(
            problems[1].contains("the name CONTROLLER is reserved"),
            "{problems:?}"
        );
        assert!(
            problems[2].contains("`external` is not a listener name"),
            "{problems:?}"
        );
        assert!(
            problems[3].contains("`A_VERY_LONG_NAME_X` is not a listener name"),
            "{problems:?}"
        );
        for reserved in RESERVED_LISTENER_NAMES {
            let message = one_problem(&listeners(&format!(
                "    - name: {reserved}\n      port: 9094\n"
            )));
            assert!(message.contains("is reserved"), "{reserved}: {message}");
        }
    }

    #[test]
    fn fixed_node_ports_are_for_external_listeners_once_each_and_no_port_twice() {
        let problems = problems(&listeners(
            "    - name: INSIDE\n      port: 9094\n      configuration:\n        bootstrap: {nodePort: 31000}\n    - name: NODES\n      port: 9095\n      type: nodeport\n      configuration:\n        bootstrap: {nodePort: 31000}\n        brokers:\n        - {broker: 0, nodePort: 31001}\n        - {broker: 0, nodePort: 31002}\n        - {broker: 1, nodePort: 31001}\n",
        ));
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].contains("INSIDE is internal"), "{problems:?}");
        assert!(
            problems[1].contains("broker 0 is listed twice"),
            "{problems:?}"
        );
        assert!(
            problems[2].contains(
                "bootstrap.nodePort: node port 31000 is also spec.listeners.additional[INSIDE]"
            ),
            "{problems:?}"
        );
        assert!(
            problems[3].contains("brokers[1].nodePort: node port 31001 is also"),
            "{problems:?}"
        );
        let valid = validate(
            &cluster(&listeners(
                "    - name: NODES\n      port: 9095\n      type: nodeport\n      configuration:\n        bootstrap: {nodePort: 31000}\n        brokers:\n        - {broker: 0, nodePort: 31001}\n",
            )),
            &OperatorSettings::default(),
        );
        assert!(valid.is_ok(), "{:?}", valid.err());
    }

    #[test]
    fn an_ingress_listener_needs_tls_and_a_distinct_host_for_the_bootstrap_and_each_broker() {
        let problems = problems(&listeners(
            "    - name: ROUTED\n      port: 9097\n      type: ingress\n      configuration:\n        bootstrap: {nodePort: 31000}\n        hostTemplate: broker.example.test\n        brokers:\n        - {broker: 0, host: Not_A_Host}\n    - name: NODES\n      port: 9095\n      type: nodeport\n      configuration:\n        class: nginx\n",
        ));
        for expected in [
            "[NODES].configuration: hosts, hostTemplate and class are for ingress listeners",
            "[ROUTED]: an ingress listener needs tls",
            "[ROUTED].configuration: node ports are for nodeport and loadbalancer listeners",
            "hostTemplate `broker.example.test` has no {nodeId}",
            "bootstrap.host is missing",
            "broker 0's host `Not_A_Host` is not a host name",
            "broker 2's host `broker.example.test` is also spec.listeners.additional[ROUTED]: broker 1's host",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "{expected}: {problems:?}"
            );
        }
        let valid = validate(
            &cluster(&listeners(
                "    - name: ROUTED\n      port: 9097\n      type: ingress\n      tls: {}\n      configuration:\n        bootstrap: {host: kafka.example.test}\n        hostTemplate: 'broker-{nodeId}.example.test'\n",
            )),
            &OperatorSettings::default(),
        );
        assert!(valid.is_ok(), "{:?}", valid.err());
    }

    #[test]
    fn listener_ports_must_not_clash_with_each_other_or_the_internal_ones() {
        let problems = problems(&listeners(
            "    - name: ONE\n      port: 9092\n    - name: TWO\n      port: 9404\n    - name: THREE\n      port: 9404\n    - name: FOUR\n      port: 0\n",
        ));
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems
            .iter()
            .any(|p| p.contains("additional[FOUR].port is 0")));
        assert!(problems.iter().any(
            |p| p.contains("additional[ONE].port and spec.listeners.clientPort are both 9092")
        ));
        assert!(problems
            .iter()
            .any(|p| p.contains("additional[TWO].port and spec.metrics.port are both 9404")));
        assert!(problems
            .iter()
            .any(|p| p.contains("additional[THREE].port and spec.metrics.port are both 9404")));
    }

    #[test]
    fn tls_listeners_share_one_secret_and_client_auth() {
        let message = one_problem(&listeners(
            "    - name: ONE\n      port: 9094\n      tls:\n        secretName: a-tls\n    - name: TWO\n      port: 9095\n      tls:\n        secretName: b-tls\n",
        ));
        assert!(
            message.contains("listener ONE uses secret a-tls"),
            "{message}"
        );
        assert!(message.contains("one certificate"), "{message}");
        let message = one_problem(&listeners(
            "    - name: ONE\n      port: 9094\n      tls:\n        secretName: a-tls\n    - name: TWO\n      port: 9095\n      tls:\n        secretName: a-tls\n        clientAuth: required\n",
        ));
        assert!(
            message.contains("clientAuth is required but listener ONE has none"),
            "{message}"
        );
        let message = one_problem(&listeners(
            "    - name: ONE\n      port: 9094\n      tls:\n        secretName: Bad_Name\n",
        ));
        assert!(
            message.contains("secretName `Bad_Name` is not a Secret name"),
            "{message}"
        );
    }

    #[test]
    fn sasl_listeners_share_one_mechanism_and_plain_needs_tls() {
        let message = one_problem(&listeners(
            "    - name: ONE\n      port: 9094\n      authentication: scram-sha-256\n    - name: TWO\n      port: 9095\n      authentication: scram-sha-512\n",
        ));
        assert!(
            message.contains("authentication is SCRAM-SHA-512 but listener ONE uses SCRAM-SHA-256"),
            "{message}"
        );
        let message = one_problem(&listeners(
            "    - name: ONE\n      port: 9094\n      authentication: plain\n",
        ));
        assert!(
            message.contains("plain sends passwords in the clear"),
            "{message}"
        );
    }

    #[test]
    fn security_settings_are_checked_and_super_users_include_the_internal_principal() {
        let problems = problems(&format!(
            "{MINIMAL_CLUSTER}\n  security:\n    admin:\n      username: \"ad,min\"\n      passwordSecret:\n        name: Admin_Secret\n        key: \"pass word\"\n    authorization:\n      superUsers: [\"ops\", \"User:a;User:b\"]\n"
        ));
        assert_eq!(problems.len(), 5, "{problems:?}");
        for expected in [
            "admin.username `ad,min`",
            "passwordSecret.name `Admin_Secret`",
            "passwordSecret.key `pass word`",
            "`ops` is not a principal",
            "`User:a;User:b` is not a principal",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "{expected}: {problems:?}"
            );
        }
        let valid = validate(
            &cluster(&format!(
                "{MINIMAL_CLUSTER}\n  security:\n    admin:\n      username: admin\n      passwordSecret:\n        name: main-admin\n    authorization:\n      superUsers: [\"User:ops\", \"User:admin\"]\n"
            )),
            &OperatorSettings::default(),
        )
        .expect("valid");
        assert_eq!(
            valid.super_users().as_deref(),
            Some("User:ANONYMOUS;User:admin;User:ops")
        );
        let admin = valid.admin.expect("admin");
        assert_eq!(admin.password_secret.key, "password", "the default key");
        assert_eq!(
            admin.mechanism.as_str(),
            "SCRAM-SHA-512",
            "the default mechanism"
        );
    }

    #[test]
    fn security_settings_in_spec_config_are_refused() {
        for key in [
            "ssl.keystore.location",
            "sasl.enabled.mechanisms",
            "authorizer.class.name",
            "super.users",
        ] {
            let message = one_problem(&format!("{MINIMAL_CLUSTER}\n  config:\n    {key}: x\n"));
            assert!(
                message.contains("is set by the operator"),
                "{key}: {message}"
            );
        }
    }

    #[test]
    fn label_keys_follow_the_kubernetes_rules() {
        assert!(is_label_key("topology.kubernetes.io/zone"));
        assert!(is_label_key("app"));
        assert!(!is_label_key("Bad_Prefix/zone"));
        assert!(!is_label_key("zone-"));
        assert!(!is_label_key(""));
        assert!(!is_label_key(&"a".repeat(64)));
    }
}
