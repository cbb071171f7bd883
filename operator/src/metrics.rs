//! The operator's Prometheus metrics: reconciliations, failures by error kind, reconcile
//! duration (measured by a drop guard, so early returns and errors are timed too), and a
//! ready gauge per resource.

use std::time::Instant;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Label value naming the KafkaCluster controller.
pub const CLUSTER: &str = "kafkacluster";
/// Label value naming the KafkaTopic controller.
pub const TOPIC: &str = "kafkatopic";

/// The operator's metrics, registered once in their own registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    reconciliations: IntCounterVec,
    failures: IntCounterVec,
    duration: HistogramVec,
    ready: IntGaugeVec,
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
        for collector in [
            Box::new(reconciliations.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(failures.clone()),
            Box::new(duration.clone()),
            Box::new(ready.clone()),
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
        }
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
}
