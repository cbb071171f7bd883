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
        for collector in [
            Box::new(consumer_lag.clone()) as Box<dyn prometheus::core::Collector>,
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

/// Serves `GET /metrics` on `listener` until `shutdown` is cancelled; `refresh` updates the
/// gauges computed from state just before each scrape.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    refresh: Arc<dyn Fn() + Send + Sync>,
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
    let address: Option<SocketAddr> = listener.local_addr().ok();
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        tracing::error!(?address, error = %e, "metrics endpoint failed");
    }
}
