//! The operator's HTTP endpoint: `/metrics` (Prometheus), `/healthz` (the process serves and
//! no controller has died: a panicked one turns it red, so the liveness probe restarts the pod)
//! and `/readyz` (it has reached the API server and is leading or standing by).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Readiness, flipped by the supervisor, and liveness, lost for good when a controller dies.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    failure: Mutex<Option<String>>,
}

impl Health {
    /// Marks the process unhealthy: `/healthz` answers 500 with `why` from now on.
    pub fn fail(&self, why: String) {
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        failure.get_or_insert(why);
    }

    /// Why the process is unhealthy, if it is.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

pub fn router(metrics: Arc<Metrics>, health: Arc<Health>) -> Router {
    let liveness = Arc::clone(&health);
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let body = metrics.render();
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body) }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let failure = liveness.failure();
                async move {
                    match failure {
                        None => (StatusCode::OK, "ok".to_string()).into_response(),
                        Some(why) => (StatusCode::INTERNAL_SERVER_ERROR, why).into_response(),
                    }
                }
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let ready = health.is_ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ready").into_response()
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
                    }
                }
            }),
        )
}

/// Serves the endpoints on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    let address: Option<SocketAddr> = listener.local_addr().ok();
    if let Err(error) = axum::serve(listener, router(metrics, health))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        tracing::error!(?address, %error, "HTTP endpoint failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(address: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        response
    }

    #[tokio::test]
    async fn health_readiness_and_metrics_are_served() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let metrics = Arc::new(Metrics::new());
        metrics.set_ready(crate::metrics::CLUSTER, "ns", "main", true);
        let health = Arc::new(Health::default());
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            metrics,
            Arc::clone(&health),
            shutdown.clone(),
        ));
        assert!(get(address, "/healthz").await.starts_with("HTTP/1.0 200"));
        assert!(get(address, "/readyz").await.starts_with("HTTP/1.0 503"));
        health.set_ready(true);
        assert!(get(address, "/readyz").await.starts_with("HTTP/1.0 200"));
        let text = get(address, "/metrics").await;
        assert!(text.contains("oxbow_operator_resource_ready"), "{text}");
        health.fail("the KafkaCluster controller panicked: boom".to_string());
        let unhealthy = get(address, "/healthz").await;
        assert!(unhealthy.starts_with("HTTP/1.0 500"), "{unhealthy}");
        assert!(
            unhealthy.ends_with("the KafkaCluster controller panicked: boom"),
            "{unhealthy}"
        );
        shutdown.cancel();
        server.await.expect("server stops");
    }
}
