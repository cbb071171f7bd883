//! Runs the controllers for the watched namespaces, and with leader election only while this
//! replica holds the Lease. Losing the lease stops the controllers at once.

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::context::Context;
use crate::http::Health;
use crate::leader::LeaderElector;
use crate::{cluster, topic};

/// Runs both controllers over each of `namespaces` (every namespace when empty) until
/// `shutdown` is cancelled.
pub async fn run_controllers(
    ctx: Arc<Context>,
    namespaces: &[String],
    shutdown: CancellationToken,
) {
    let mut controllers = Vec::new();
    for scope in scopes(namespaces) {
        tracing::info!(namespace = scope.as_deref().unwrap_or("(all)"), "watching");
        controllers.push(tokio::spawn(cluster::run(
            Arc::clone(&ctx),
            scope.clone(),
            shutdown.clone().cancelled_owned(),
        )));
        controllers.push(tokio::spawn(topic::run(
            Arc::clone(&ctx),
            scope,
            shutdown.clone().cancelled_owned(),
        )));
    }
    for controller in controllers {
        if let Err(error) = controller.await {
            tracing::error!(%error, "a controller task failed");
        }
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
        async move { run_controllers(ctx, &namespaces, stop).await }
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
