//! The operator's Prometheus metrics: reconciliations, failures by error kind, reconcile
//! duration (measured by a drop guard, so early returns and errors are timed too), a ready
//! gauge per resource, and each KafkaCluster's balance: replicas and leaders per broker,
//! imbalance, under-replicated partitions, and reassignments planned, in flight and submitted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use crate::cluster::validate::CaKind;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Label value naming the KafkaCluster controller.
pub const CLUSTER: &str = "kafkacluster";
/// Label value naming the KafkaTopic controller.
pub const TOPIC: &str = "kafkatopic";
/// Label value naming the KafkaUser controller.
pub const USER: &str = "kafkauser";
/// Label value naming the KafkaRebalance controller.
pub const REBALANCE: &str = "kafkarebalance";

/// The operator's metrics, registered once in their own registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    reconciliations: IntCounterVec,
    failures: IntCounterVec,
    duration: HistogramVec,
    ready: IntGaugeVec,
    broker_replicas: IntGaugeVec,
    broker_leaders: IntGaugeVec,
    imbalance: IntGaugeVec,
    under_replicated: IntGaugeVec,
    reassignments: IntGaugeVec,
    certificate_expiry: IntGaugeVec,
    submitted: IntCounterVec,
    /// Brokers with series, per cluster: those that leave lose theirs.
    brokers_seen: Arc<Mutex<BrokersSeen>>,
}

/// Brokers that have series, by cluster (namespace, name).
type BrokersSeen = BTreeMap<(String, String), BTreeSet<i32>>;

/// A KafkaCluster's balance as the brokers report it, for [`Metrics::set_balance`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BalanceFigures {
    /// Replicas on each registered broker.
    pub replicas: BTreeMap<i32, usize>,
    /// Partitions each registered broker leads.
    pub leaders: BTreeMap<i32, usize>,
    pub under_replicated: usize,
    pub in_flight: usize,
    /// Reassignments a scaling operation still has to start.
    pub pending: usize,
}

fn spread(counts: &BTreeMap<i32, usize>) -> i64 {
    let min = counts.values().min().copied().unwrap_or(0);
    let max = counts.values().max().copied().unwrap_or(0);
    i64::try_from(max - min).unwrap_or(i64::MAX)
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition")
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciliations = IntCounterVec::new(
            Opts::new(
                "oxbow_operator_reconciliations_total",
                "Reconciliations started, by controller.",
            ),
            &["controller"],
        )
        .expect("static metric definition");
        let failures = IntCounterVec::new(
            Opts::new(
                "oxbow_operator_reconcile_failures_total",
                "Reconciliations that failed and were retried, by controller and error kind.",
            ),
            &["controller", "error"],
        )
        .expect("static metric definition");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "oxbow_operator_reconcile_duration_seconds",
                "Time one reconciliation took, by controller.",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            &["controller"],
        )
        .expect("static metric definition");
        let ready = IntGaugeVec::new(
            Opts::new(
                "oxbow_operator_resource_ready",
                "1 when the resource's Ready condition is True, else 0.",
            ),
            &["controller", "namespace", "name"],
        )
        .expect("static metric definition");
        let broker_replicas = gauge(
            "oxbow_operator_broker_replicas",
            "Partition replicas each broker of a KafkaCluster holds.",
            &["namespace", "name", "broker"],
        );
        let broker_leaders = gauge(
            "oxbow_operator_broker_leaders",
            "Partitions each broker of a KafkaCluster leads.",
            &["namespace", "name", "broker"],
        );
        let imbalance = gauge(
            "oxbow_operator_cluster_imbalance",
            "Largest difference between two brokers of a KafkaCluster, of replicas or of leaders (0 or 1 is balanced).",
            &["namespace", "name", "of"],
        );
        let under_replicated = gauge(
            "oxbow_operator_cluster_under_replicated_partitions",
            "Partitions of a KafkaCluster with fewer in-sync replicas than replicas.",
            &["namespace", "name"],
        );
        let reassignments = gauge(
            "oxbow_operator_cluster_reassignments",
            "Partition reassignments of a KafkaCluster in flight, and planned but not started.",
            &["namespace", "name", "state"],
        );
        let certificate_expiry = gauge(
            "oxbow_operator_certificate_expiration_timestamp_seconds",
            "When the certificate of each CA of a KafkaCluster (ca: cluster-ca, clients-ca) expires, in seconds since the Unix epoch.",
            &["namespace", "name", "ca"],
        );
        let submitted = IntCounterVec::new(
            Opts::new(
                "oxbow_operator_reassignments_submitted_total",
                "Partition reassignments the operator submitted, by KafkaCluster.",
            ),
            &["namespace", "name"],
        )
        .expect("static metric definition");
        for collector in [
            Box::new(reconciliations.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(failures.clone()),
            Box::new(duration.clone()),
            Box::new(ready.clone()),
            Box::new(broker_replicas.clone()),
            Box::new(broker_leaders.clone()),
            Box::new(imbalance.clone()),
            Box::new(under_replicated.clone()),
            Box::new(reassignments.clone()),
            Box::new(submitted.clone()),
            Box::new(certificate_expiry.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        Self {
            registry,
            reconciliations,
            failures,
            duration,
            ready,
            broker_replicas,
            broker_leaders,
            imbalance,
            under_replicated,
            reassignments,
            submitted,
            certificate_expiry,
            brokers_seen: Arc::default(),
        }
    }

    /// Records a KafkaCluster's balance; brokers no longer listed lose their series.
    pub fn set_balance(&self, namespace: &str, name: &str, figures: &BalanceFigures) {
        let now: BTreeSet<i32> = figures
            .replicas
            .keys()
            .chain(figures.leaders.keys())
            .copied()
            .collect();
        let before = self
            .brokers_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((namespace.to_string(), name.to_string()), now.clone())
            .unwrap_or_default();
        for gone in before.difference(&now) {
            for vec in [&self.broker_replicas, &self.broker_leaders] {
                // Absent when the broker never had this series: nothing to remove.
                let _ = vec.remove_label_values(&[namespace, name, &gone.to_string()]);
            }
        }
        for (broker, count) in &figures.replicas {
            self.broker_replicas
                .with_label_values(&[namespace, name, &broker.to_string()])
                .set(i64::try_from(*count).unwrap_or(i64::MAX));
        }
        for (broker, count) in &figures.leaders {
            self.broker_leaders
                .with_label_values(&[namespace, name, &broker.to_string()])
                .set(i64::try_from(*count).unwrap_or(i64::MAX));
        }
        self.imbalance
            .with_label_values(&[namespace, name, "replicas"])
            .set(spread(&figures.replicas));
        self.imbalance
            .with_label_values(&[namespace, name, "leaders"])
            .set(spread(&figures.leaders));
        self.under_replicated
            .with_label_values(&[namespace, name])
            .set(i64::try_from(figures.under_replicated).unwrap_or(i64::MAX));
        self.reassignments
            .with_label_values(&[namespace, name, "in_flight"])
            .set(i64::try_from(figures.in_flight).unwrap_or(i64::MAX));
        self.reassignments
            .with_label_values(&[namespace, name, "pending"])
            .set(i64::try_from(figures.pending).unwrap_or(i64::MAX));
    }

    /// Records when a KafkaCluster's CA certificate `ca` expires.
    pub fn set_certificate_expiry(
        &self,
        namespace: &str,
        name: &str,
        ca: &str,
        not_after: SystemTime,
    ) {
        let seconds = not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.certificate_expiry
            .with_label_values(&[namespace, name, ca])
            .set(seconds);
    }

    /// Counts reassignments submitted for a KafkaCluster.
    pub fn submitted(&self, namespace: &str, name: &str, count: usize) {
        self.submitted
            .with_label_values(&[namespace, name])
            .inc_by(u64::try_from(count).unwrap_or(u64::MAX));
    }

    /// Counts a reconciliation and times it until the returned guard is dropped.
    pub fn reconcile(&self, controller: &'static str) -> ReconcileMeasurer {
        self.reconciliations.with_label_values(&[controller]).inc();
        ReconcileMeasurer {
            start: Instant::now(),
            histogram: self.duration.with_label_values(&[controller]),
        }
    }

    /// Counts a failed reconciliation under its error kind.
    pub fn failure(&self, controller: &'static str, error: &str) {
        self.failures.with_label_values(&[controller, error]).inc();
    }

    pub fn set_ready(&self, controller: &'static str, namespace: &str, name: &str, ready: bool) {
        self.ready
            .with_label_values(&[controller, namespace, name])
            .set(i64::from(ready));
    }

    /// Drops the series of a deleted resource.
    pub fn forget(&self, controller: &'static str, namespace: &str, name: &str) {
        // Absent when the resource never reported readiness: nothing to remove.
        let _ = self
            .ready
            .remove_label_values(&[controller, namespace, name]);
    }

    /// Drops every series of a deleted KafkaCluster: its readiness, balance, reassignments and
    /// CA expiry.
    pub fn forget_cluster(&self, namespace: &str, name: &str) {
        self.forget(CLUSTER, namespace, name);
        let brokers = self
            .brokers_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(namespace.to_string(), name.to_string()))
            .unwrap_or_default();
        // Each removal is of a series that may never have had a value: nothing to remove then.
        for broker in brokers {
            for vec in [&self.broker_replicas, &self.broker_leaders] {
                let _ = vec.remove_label_values(&[namespace, name, &broker.to_string()]);
            }
        }
        for of in ["replicas", "leaders"] {
            let _ = self.imbalance.remove_label_values(&[namespace, name, of]);
        }
        for state in ["in_flight", "pending"] {
            let _ = self
                .reassignments
                .remove_label_values(&[namespace, name, state]);
        }
        for ca in [CaKind::Cluster, CaKind::Clients] {
            let _ = self
                .certificate_expiry
                .remove_label_values(&[namespace, name, ca.name()]);
        }
        let _ = self
            .under_replicated
            .remove_label_values(&[namespace, name]);
        let _ = self.submitted.remove_label_values(&[namespace, name]);
    }

    /// The metrics in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "could not encode metrics");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Observes the time since its creation into the duration histogram when dropped.
pub struct ReconcileMeasurer {
    start: Instant,
    histogram: prometheus::Histogram,
}

impl Drop for ReconcileMeasurer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_failures_durations_and_readiness_are_exported() {
        let metrics = Metrics::new();
        {
            let _timer = metrics.reconcile(CLUSTER);
        }
        metrics.failure(CLUSTER, "kube");
        metrics.set_ready(TOPIC, "ns", "orders", true);
        let text = metrics.render();
        assert!(
            text.contains("oxbow_operator_reconciliations_total{controller=\"kafkacluster\"} 1")
        );
        assert!(text.contains(
            "oxbow_operator_reconcile_failures_total{controller=\"kafkacluster\",error=\"kube\"} 1"
        ));
        assert!(text.contains(
            "oxbow_operator_reconcile_duration_seconds_count{controller=\"kafkacluster\"} 1"
        ));
        assert!(text.contains(
            "oxbow_operator_resource_ready{controller=\"kafkatopic\",name=\"orders\",namespace=\"ns\"} 1"
        ));
        metrics.forget(TOPIC, "ns", "orders");
        assert!(!metrics.render().contains("name=\"orders\""));
    }

    #[test]
    fn a_deleted_cluster_loses_every_series_and_the_others_keep_theirs() {
        let metrics = Metrics::new();
        let figures = BalanceFigures {
            replicas: BTreeMap::from([(0, 3), (1, 3)]),
            leaders: BTreeMap::from([(0, 2), (1, 1)]),
            under_replicated: 1,
            in_flight: 1,
            pending: 2,
        };
        for name in ["gone", "kept"] {
            metrics.set_ready(CLUSTER, "ns", name, true);
            metrics.set_balance("ns", name, &figures);
            metrics.submitted("ns", name, 4);
            for ca in [CaKind::Cluster, CaKind::Clients] {
                metrics.set_certificate_expiry("ns", name, ca.name(), SystemTime::now());
            }
        }
        metrics.forget_cluster("ns", "gone");
        let text = metrics.render();
        assert!(!text.contains("name=\"gone\""), "{text}");
        let kept = text.lines().filter(|l| l.contains("name=\"kept\"")).count();
        assert_eq!(kept, 1 + 2 + 2 + 2 + 1 + 2 + 1 + 2, "{text}");
    }

    /// Every operator series the chart's Grafana dashboard queries is one the operator
    /// exports once each kind of figure has a value.
    #[test]
    fn every_operator_series_the_dashboard_queries_is_exported() {
        let metrics = Metrics::new();
        {
            let _timer = metrics.reconcile(CLUSTER);
        }
        metrics.failure(CLUSTER, "kube");
        metrics.set_ready(TOPIC, "ns", "orders", false);
        let figures = BalanceFigures {
            replicas: [(0, 1)].into(),
            leaders: [(0, 1)].into(),
            under_replicated: 0,
            in_flight: 0,
            pending: 0,
        };
        metrics.set_balance("ns", "main", &figures);
        metrics.submitted("ns", "main", 1);
        metrics.set_certificate_expiry("ns", "main", "cluster-ca", SystemTime::now());
        let text = metrics.render();
        let dashboard = oxbow_e2e::dashboard::dashboard().expect("the chart's dashboard");
        let queried = oxbow_e2e::dashboard::queried_metrics(&dashboard, "oxbow_operator_");
        assert!(queried.len() >= 10, "{queried:?}");
        for name in queried {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "the dashboard queries {name}, which the operator does not export:\n{text}"
            );
        }
    }

    #[test]
    fn a_clusters_balance_is_exported_per_broker_with_its_imbalance() {
        let metrics = Metrics::new();
        let figures = BalanceFigures {
            replicas: [(0, 4), (1, 4), (2, 1)].into(),
            leaders: [(0, 2), (1, 2), (2, 1)].into(),
            under_replicated: 2,
            in_flight: 3,
            pending: 5,
        };
        metrics.set_balance("ns", "main", &figures);
        metrics.submitted("ns", "main", 3);
        let text = metrics.render();
        for line in [
            "oxbow_operator_broker_replicas{broker=\"2\",name=\"main\",namespace=\"ns\"} 1",
            "oxbow_operator_broker_leaders{broker=\"0\",name=\"main\",namespace=\"ns\"} 2",
            "oxbow_operator_cluster_imbalance{name=\"main\",namespace=\"ns\",of=\"replicas\"} 3",
            "oxbow_operator_cluster_imbalance{name=\"main\",namespace=\"ns\",of=\"leaders\"} 1",
            "oxbow_operator_cluster_under_replicated_partitions{name=\"main\",namespace=\"ns\"} 2",
            "oxbow_operator_cluster_reassignments{name=\"main\",namespace=\"ns\",state=\"pending\"} 5",
            "oxbow_operator_reassignments_submitted_total{name=\"main\",namespace=\"ns\"} 3",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        // Broker 2 is gone after a scale-down: its series go too.
        metrics.set_balance(
            "ns",
            "main",
            &BalanceFigures {
                replicas: [(0, 5), (1, 4)].into(),
                leaders: [(0, 3), (1, 2)].into(),
                ..BalanceFigures::default()
            },
        );
        assert!(!metrics.render().contains("broker=\"2\""));
    }
}
