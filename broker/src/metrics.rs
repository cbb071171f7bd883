//! Prometheus metrics of the broker and the HTTP endpoint that serves them at `/metrics`.

use std::net::SocketAddr;

use std::sync::Arc;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use tokio_util::sync::CancellationToken;

/// The broker's metrics, registered once in their own registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_errors: IntCounterVec,
    pub request_latency: HistogramVec,
    pub bytes_in: IntCounterVec,
    pub bytes_out: IntCounterVec,
    pub messages_in: IntCounterVec,
    pub connections: IntGauge,
    pub consumer_lag: IntGaugeVec,
    pub leader_count: IntGauge,
    pub replica_count: IntGauge,
    pub under_replicated_partitions: IntGauge,
    pub under_min_isr_partitions: IntGauge,
    pub offline_partitions: IntGauge,
    pub offline_log_dirs: IntGauge,
    pub active_controller: IntGauge,
    pub quorum_members: IntGaugeVec,
    pub isr_shrinks: prometheus::IntCounter,
    pub isr_expands: prometheus::IntCounter,
    pub quota_throttle_time: HistogramVec,
    pub fetch_sessions: crate::fetch_session::SessionMetrics,
    pub transactions_open: IntGauge,
    pub transactions_ended: IntCounterVec,
    pub transactions_timed_out: prometheus::IntCounter,
    pub last_stable_offset_lag: IntGaugeVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("oxbow_requests_total", "Requests handled, by API."),
            &["api"],
        )
        .expect("static metric definition");
        let request_errors = IntCounterVec::new(
            Opts::new(
                "oxbow_request_errors_total",
                "Requests that closed the connection because they could not be parsed or answered, by API.",
            ),
            &["api"],
        )
        .expect("static metric definition");
        let request_latency = HistogramVec::new(
            HistogramOpts::new(
                "oxbow_request_duration_seconds",
                "Time from a request's arrival to its response, by API.",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0,
            ]),
            &["api"],
        )
        .expect("static metric definition");
        let bytes_in = IntCounterVec::new(
            Opts::new(
                "oxbow_topic_bytes_in_total",
                "Record batch bytes appended, by topic.",
            ),
            &["topic"],
        )
        .expect("static metric definition");
        let bytes_out = IntCounterVec::new(
            Opts::new(
                "oxbow_topic_bytes_out_total",
                "Record batch bytes served to fetches, by topic.",
            ),
            &["topic"],
        )
        .expect("static metric definition");
        let messages_in = IntCounterVec::new(
            Opts::new(
                "oxbow_topic_messages_in_total",
                "Records appended, by topic.",
            ),
            &["topic"],
        )
        .expect("static metric definition");
        let connections = IntGauge::new("oxbow_connections", "Open client connections.")
            .expect("static metric definition");
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                "oxbow_consumer_group_lag",
                "Records between a group's committed offset and the high watermark, by group and partition.",
            ),
            &["group", "topic", "partition"],
        )
        .expect("static metric definition");
        let gauge =
            |name: &str, help: &str| IntGauge::new(name, help).expect("static metric definition");
        let leader_count = gauge("oxbow_leader_partitions", "Partitions this broker leads.");
        let replica_count = gauge(
            "oxbow_replica_partitions",
            "Partition replicas this broker hosts.",
        );
        let under_replicated_partitions = gauge(
            "oxbow_under_replicated_partitions",
            "Partitions led here whose ISR is smaller than their replica set.",
        );
        let under_min_isr_partitions = gauge(
            "oxbow_under_min_isr_partitions",
            "Partitions led here whose ISR is below min.insync.replicas: acks=all writes fail.",
        );
        let offline_partitions = gauge(
            "oxbow_offline_partitions",
            "Partitions without a leader (reported by the active controller).",
        );
        let offline_log_dirs = gauge(
            "oxbow_offline_log_directories",
            "Log directories of this broker taken offline by an I/O error.",
        );
        let active_controller = gauge(
            "oxbow_active_controller",
            "1 on the active controller, else 0.",
        );
        let quorum_members = IntGaugeVec::new(
            Opts::new(
                "oxbow_metadata_quorum_member",
                "1 for every member of the metadata quorum's membership as this broker knows it, by node id and role (voter or learner).",
            ),
            &["node", "role"],
        )
        .expect("static metric definition");
        let counter = |name: &str, help: &str| {
            prometheus::IntCounter::new(name, help).expect("static metric definition")
        };
        let isr_shrinks = counter(
            "oxbow_isr_shrinks_total",
            "ISR shrinks proposed by partitions led here.",
        );
        let isr_expands = counter(
            "oxbow_isr_expands_total",
            "ISR expansions proposed by partitions led here.",
        );
        let quota_throttle_time = HistogramVec::new(
            HistogramOpts::new(
                "oxbow_quota_throttle_time_seconds",
                "Throttle times given to clients over their quotas, by quota (produce, fetch, request).",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            &["quota"],
        )
        .expect("static metric definition");
        let fetch_sessions = crate::fetch_session::SessionMetrics {
            sessions: gauge(
                "oxbow_fetch_sessions",
                "Incremental fetch sessions cached (Kafka's NumIncrementalFetchSessions).",
            ),
            partitions: gauge(
                "oxbow_fetch_session_partitions",
                "Partitions in the cached fetch sessions (Kafka's NumIncrementalFetchPartitionsCached).",
            ),
            evictions: counter(
                "oxbow_fetch_session_evictions_total",
                "Fetch sessions evicted to make room for another.",
            ),
        };
        let transactions_open = gauge(
            "oxbow_transactions_open",
            "Transactions this broker coordinates that are ongoing or being completed.",
        );
        let transactions_ended = IntCounterVec::new(
            Opts::new(
                "oxbow_transactions_ended_total",
                "Transactions this broker's coordinator completed, by outcome (committed, aborted).",
            ),
            &["outcome"],
        )
        .expect("static metric definition");
        let transactions_timed_out = counter(
            "oxbow_transactions_timed_out_total",
            "Transactions aborted by the coordinator because they outlived transaction.timeout.ms.",
        );
        let last_stable_offset_lag = IntGaugeVec::new(
            Opts::new(
                "oxbow_last_stable_offset_lag",
                "High watermark minus last stable offset of each partition led here: records an open transaction holds back from read_committed consumers (Kafka's LastStableOffsetLag).",
            ),
            &["topic", "partition"],
        )
        .expect("static metric definition");
        for collector in [
            Box::new(consumer_lag.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(transactions_open.clone()),
            Box::new(transactions_ended.clone()),
            Box::new(transactions_timed_out.clone()),
            Box::new(last_stable_offset_lag.clone()),
            Box::new(quota_throttle_time.clone()),
            Box::new(leader_count.clone()),
            Box::new(replica_count.clone()),
            Box::new(under_replicated_partitions.clone()),
            Box::new(under_min_isr_partitions.clone()),
            Box::new(offline_partitions.clone()),
            Box::new(offline_log_dirs.clone()),
            Box::new(active_controller.clone()),
            Box::new(quorum_members.clone()),
            Box::new(isr_shrinks.clone()),
            Box::new(isr_expands.clone()),
            Box::new(fetch_sessions.sessions.clone()),
            Box::new(fetch_sessions.partitions.clone()),
            Box::new(fetch_sessions.evictions.clone()),
            Box::new(requests.clone()),
            Box::new(request_errors.clone()),
            Box::new(request_latency.clone()),
            Box::new(bytes_in.clone()),
            Box::new(bytes_out.clone()),
            Box::new(messages_in.clone()),
            Box::new(connections.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        Metrics {
            registry,
            requests,
            request_errors,
            request_latency,
            bytes_in,
            bytes_out,
            messages_in,
            connections,
            consumer_lag,
            leader_count,
            replica_count,
            under_replicated_partitions,
            under_min_isr_partitions,
            offline_partitions,
            offline_log_dirs,
            active_controller,
            quorum_members,
            isr_shrinks,
            isr_expands,
            quota_throttle_time,
            fetch_sessions,
            transactions_open,
            transactions_ended,
            transactions_timed_out,
            last_stable_offset_lag,
        }
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

/// Serves `GET /metrics` and `GET /ready` on `listener` until `shutdown` is cancelled;
/// `refresh` updates the gauges computed from state just before each scrape, and `ready`
/// says whether the broker should receive traffic (200) or why not (503).
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    refresh: Arc<dyn Fn() + Send + Sync>,
    ready: Arc<dyn Fn() -> Result<(), String> + Send + Sync>,
    shutdown: CancellationToken,
) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            refresh();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    metrics.render(),
                )
            }
        }),
    );
    let app = app.route(
        "/ready",
        axum::routing::get(move || {
            let answer = ready();
            async move {
                match answer {
                    Ok(()) => (axum::http::StatusCode::OK, "ready\n".to_string()),
                    Err(reason) => (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        format!("{reason}\n"),
                    ),
                }
            }
        }),
    );
    let address: Option<SocketAddr> = listener.local_addr().ok();
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        tracing::error!(?address, error = %e, "metrics endpoint failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every broker series the chart's Grafana dashboard queries is one the broker exports
    /// (the labelled ones once they have a value).
    #[test]
    fn every_broker_series_the_dashboard_queries_is_exported() {
        let metrics = Metrics::new();
        metrics.requests.with_label_values(&["Produce"]).inc();
        metrics.request_errors.with_label_values(&["Produce"]).inc();
        metrics
            .request_latency
            .with_label_values(&["Produce"])
            .observe(0.001);
        metrics.bytes_in.with_label_values(&["t"]).inc();
        metrics.bytes_out.with_label_values(&["t"]).inc();
        metrics.messages_in.with_label_values(&["t"]).inc();
        metrics
            .consumer_lag
            .with_label_values(&["g", "t", "0"])
            .set(1);
        let text = metrics.render();
        let dashboard = oxbow_e2e::dashboard::dashboard().expect("the chart's dashboard");
        let queried: Vec<String> = oxbow_e2e::dashboard::queried_metrics(&dashboard, "oxbow_")
            .into_iter()
            .filter(|name| !name.starts_with("oxbow_operator_"))
            .collect();
        assert!(queried.len() >= 8, "{queried:?}");
        for name in queried {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "the dashboard queries {name}, which the broker does not export:\n{text}"
            );
        }
    }
}
