//! Runs the controllers for the watched namespaces, and with leader election only while this
//! replica holds the Lease. Losing the lease stops the controllers at once.

use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt as _;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::context::Context;
use crate::http::Health;
use crate::leader::LeaderElector;
use crate::{cluster, rebalance, topic, user};

/// Runs the controllers over each of `namespaces` (every namespace when empty) until
/// `shutdown` is cancelled. A controller that panics or stops before then turns `health`
/// red (`/healthz` answers 500, the liveness probe restarts the pod) and stops the others.
pub async fn run_controllers(
    ctx: Arc<Context>,
    namespaces: &[String],
    health: &Health,
    shutdown: CancellationToken,
) {
    let mut controllers = JoinSet::new();
    let stop = shutdown.child_token();
    for scope in scopes(namespaces) {
        let watched = scope.clone().unwrap_or_else(|| "(all)".to_string());
        tracing::info!(namespace = %watched, "watching");
        controllers.spawn(
            cluster::run(
                Arc::clone(&ctx),
                scope.clone(),
                stop.clone().cancelled_owned(),
            )
            .map(move |()| format!("the KafkaCluster controller of namespace {watched}")),
        );
        let watched = scope.clone().unwrap_or_else(|| "(all)".to_string());
        controllers.spawn(
            topic::run(
                Arc::clone(&ctx),
                scope.clone(),
                stop.clone().cancelled_owned(),
            )
            .map(move |()| format!("the KafkaTopic controller of namespace {watched}")),
        );
        let watched = scope.clone().unwrap_or_else(|| "(all)".to_string());
        controllers.spawn(
            rebalance::run(
                Arc::clone(&ctx),
                scope.clone(),
                stop.clone().cancelled_owned(),
            )
            .map(move |()| format!("the KafkaRebalance controller of namespace {watched}")),
        );
        let watched = scope.clone().unwrap_or_else(|| "(all)".to_string());
        controllers.spawn(
            user::run(Arc::clone(&ctx), scope, stop.clone().cancelled_owned())
                .map(move |()| format!("the KafkaUser controller of namespace {watched}")),
        );
    }
    supervise(controllers, health, &shutdown, &stop).await;
}

/// Waits for every task of `controllers` (each names itself when it ends). One that ends
/// before `shutdown`, or panics, marks `health` failed and cancels `stop`, which the others
/// watch.
async fn supervise(
    mut controllers: JoinSet<String>,
    health: &Health,
    shutdown: &CancellationToken,
    stop: &CancellationToken,
) {
    while let Some(ended) = controllers.join_next().await {
        if shutdown.is_cancelled() {
            if let Err(error) = ended {
                tracing::error!(%error, "a controller failed while stopping");
            }
            continue;
        }
        let why = match ended {
            Ok(which) => format!("{which} stopped"),
            Err(error) if error.is_panic() => {
                format!(
                    "a controller panicked: {}",
                    panic_message(error.into_panic())
                )
            }
            Err(error) => format!("a controller failed: {error}"),
        };
        tracing::error!(%why, "the operator is unhealthy: /healthz fails until it is restarted");
        health.fail(why);
        stop.cancel();
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => payload
            .downcast_ref::<&str>()
            .map_or_else(|| "(no message)".to_string(), |m| (*m).to_string()),
    }
}

/// The namespaces to watch, `None` for all of them: every namespace when none is named. Empty
/// items name no namespace (the chart's `OXBOW_WATCH_NAMESPACES: ""` means all, and `a,,b`
/// means `a` and `b`); surrounding spaces are dropped.
pub fn scopes(namespaces: &[String]) -> Vec<Option<String>> {
    let named: Vec<Option<String>> = namespaces
        .iter()
        .map(|namespace| namespace.trim())
        .filter(|namespace| !namespace.is_empty())
        .map(|namespace| Some(namespace.to_string()))
        .collect();
    if named.is_empty() {
        vec![None]
    } else {
        named
    }
}

/// How leading ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Shutdown was asked for.
    Shutdown,
    /// The lease could not be renewed in time: another replica may lead now.
    LostLease,
}

/// Waits to become leader, then runs the controllers while renewing the lease.
pub async fn lead(
    elector: LeaderElector,
    ctx: Arc<Context>,
    namespaces: Vec<String>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> Ended {
    let retry = elector.config().retry_period;
    let lease_duration = elector.config().lease_duration;
    loop {
        match elector.try_acquire_or_renew().await {
            Ok(true) => break,
            Ok(false) => health.set_ready(true),
            Err(error) => tracing::warn!(%error, "cannot reach the lease"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ended::Shutdown,
            () = tokio::time::sleep(retry) => {}
        }
    }
    health.set_ready(true);
    tracing::info!(identity = %elector.config().identity, "leading");
    let stop = shutdown.child_token();
    let controllers = tokio::spawn({
        let stop = stop.clone();
        let health = Arc::clone(&health);
        async move { run_controllers(ctx, &namespaces, &health, stop).await }
    });
    let mut renewed = Instant::now();
    let ended = loop {
        tokio::select! {
            () = shutdown.cancelled() => break Ended::Shutdown,
            () = tokio::time::sleep(retry) => {}
        }
        match elector.try_acquire_or_renew().await {
            Ok(true) => renewed = Instant::now(),
            Ok(false) => break Ended::LostLease,
            Err(error) => {
                tracing::warn!(%error, "cannot renew the lease");
                // Stop before the lease can expire, so two leaders never overlap.
                if renewed.elapsed() + retry >= lease_duration {
                    break Ended::LostLease;
                }
            }
        }
    };
    stop.cancel();
    if let Err(error) = controllers.await {
        tracing::error!(%error, "controllers failed");
    }
    if ended == Ended::Shutdown {
        if let Err(error) = elector.release().await {
            tracing::warn!(%error, "cannot release the lease");
        }
    }
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicked_controller_fails_health_and_stops_the_others() {
        let health = Health::default();
        let shutdown = CancellationToken::new();
        let stop = shutdown.child_token();
        let mut controllers = JoinSet::new();
        let other = stop.clone();
        controllers.spawn(async move {
            other.cancelled().await;
            "the healthy controller".to_string()
        });
        controllers.spawn(async {
            tokio::task::yield_now().await;
            panic!("reconciler bug");
        });
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            supervise(controllers, &health, &shutdown, &stop),
        )
        .await
        .expect("the other controller is stopped");
        let failure = health.failure().expect("health failed");
        assert!(failure.contains("panicked: reconciler bug"), "{failure}");
        assert!(stop.is_cancelled());
    }

    #[tokio::test]
    async fn controllers_stopped_by_shutdown_leave_health_alone() {
        let health = Health::default();
        let shutdown = CancellationToken::new();
        let stop = shutdown.child_token();
        let mut controllers = JoinSet::new();
        let token = stop.clone();
        controllers.spawn(async move {
            token.cancelled().await;
            "a controller".to_string()
        });
        shutdown.cancel();
        supervise(controllers, &health, &shutdown, &stop).await;
        assert_eq!(health.failure(), None);
    }

    fn names(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_empty_namespace_list_or_empty_items_mean_every_namespace() {
        assert_eq!(scopes(&[]), [None]);
        assert_eq!(scopes(&names(&[""])), [None], "the chart's empty value");
        assert_eq!(scopes(&names(&["", " "])), [None]);
        assert_eq!(
            scopes(&names(&["team-a", "", " team-b "])),
            [Some("team-a".to_string()), Some("team-b".to_string())]
        );
    }
}
