//! Validation of a `KafkaCluster`: the raw resource in, a [`ValidatedCluster`] out that holds
//! everything the builders need, resolved once. Pure: no I/O, so every rule is unit-tested.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;

use crate::crd::{KafkaCluster, PodTemplateOverrides, PullPolicy, MAX_CLUSTER_NAME};

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
}

impl Default for OperatorSettings {
    fn default() -> Self {
        Self {
            broker_image: format!("oxbow-broker:{}", env!("CARGO_PKG_VERSION")),
            cluster_domain: "cluster.local".to_string(),
            operator_image: format!("oxbow-operator:{}", env!("CARGO_PKG_VERSION")),
            broker_cluster_role: "oxbow-broker".to_string(),
        }
    }
}

/// Broker settings the operator writes itself; a `spec.config` entry for one is refused.
pub const OWNED_SETTINGS: [&str; 13] = [
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
];

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
    pub storage_size: String,
    pub storage_class_name: Option<String>,
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
}

impl ValidatedCluster {
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

    /// Whether broker pods start with the `broker-init` init container.
    pub fn needs_init(&self) -> bool {
        self.rack_topology_key.is_some()
    }

    pub fn pod_name(&self, ordinal: i32) -> String {
        format!("{}-{ordinal}", self.name)
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

    /// Node ids of the metadata quorum voters: the lowest ordinals, one below three brokers
    /// and three from three on (an even count adds no fault tolerance).
    pub fn voters(&self) -> Vec<i32> {
        let count = if self.replicas >= 3 { 3 } else { 1 };
        (0..count).collect()
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

    match parse_quantity(&spec.storage.size) {
        Ok(bytes) if bytes < MIN_STORAGE_BYTES => problems.push(format!(
            "spec.storage.size `{}` is less than 1Mi",
            spec.storage.size
        )),
        Ok(_) => {}
        Err(why) => problems.push(format!(
            "spec.storage.size `{}` is not a quantity: {why} (for example 10Gi)",
            spec.storage.size
        )),
    }
    if let Some(class) = &spec.storage.storage_class_name {
        if !is_dns_subdomain(class) {
            problems.push(format!(
                "spec.storage.storageClassName `{class}` is not a valid storage class name"
            ));
        }
    }

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
        storage_size: spec.storage.size.clone(),
        storage_class_name: spec.storage.storage_class_name.clone(),
        delete_claim: spec.storage.delete_claim,
        resources: spec.resources.clone(),
        rack_topology_key: spec.rack.as_ref().map(|r| r.topology_key.clone()),
        user_config: spec.config.clone(),
        pod,
        cluster_domain: settings.cluster_domain.clone(),
        operator_image: settings.operator_image.clone(),
        broker_cluster_role: settings.broker_cluster_role.clone(),
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{cluster, MINIMAL_CLUSTER};

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
    fn a_minimal_cluster_takes_defaults_and_the_operator_image() {
        let settings = OperatorSettings {
            broker_image: "registry.example/oxbow-broker:9.9".to_string(),
            cluster_domain: "corp.local".to_string(),
            operator_image: "registry.example/oxbow-operator:9.9".to_string(),
            broker_cluster_role: "corp-oxbow-broker".to_string(),
        };
        let valid = validate(&cluster(MINIMAL_CLUSTER), &settings).expect("valid");
        assert_eq!(valid.name, "main");
        assert_eq!(valid.namespace, "streaming");
        assert_eq!(valid.replicas, 3);
        assert_eq!(valid.image, "registry.example/oxbow-broker:9.9");
        assert_eq!(valid.client_port, 9092);
        assert_eq!(valid.metrics_port, Some(9404));
        assert_eq!(valid.storage_size, "10Gi");
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
