//! A log directory that fails, as Kafka handles it (its `LogDirFailureChannel` and
//! `ReplicaManager.handleLogDirFailure`): an I/O error of any replica's log, or of the
//! periodic probe of an idle directory, takes the whole directory offline. Its replicas stop
//! leading and following here and answer KAFKA_STORAGE_ERROR, new replicas go to the other
//! directories, and the controller is told (`ReplicasOffline`) so leadership moves to the
//! in-sync replicas on other brokers and this broker leaves their ISRs. The directory stays
//! offline until the broker restarts. When no directory is left, or the one holding the
//! cluster metadata failed, or the controller cannot be told within
//! `log.dir.failure.timeout.ms`, the broker shuts down.
//!
//! A full filesystem is not a failure (see [`IoError::fails_directory`]): writes are refused
//! with KAFKA_STORAGE_ERROR until there is room again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use uuid::Uuid;

use crate::broker::Broker;
use crate::controller::image::{CommandResult, MetadataCommand};
use crate::log::IoError;

/// How often each online log directory is probed (a small file written, synced and
/// removed), so one that fails while no replica writes to it goes offline too.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// Pause between two attempts to tell the controller.
const REPORT_RETRY: Duration = Duration::from_millis(500);

/// An I/O error that fails the log directory holding `path`.
#[derive(Debug)]
pub struct DirFailure {
    pub path: PathBuf,
    pub error: String,
}

/// Where replicas report the I/O errors that fail their log directory; one that reaches
/// nothing (replicas opened outside a broker) by default.
#[derive(Debug, Clone, Default)]
pub struct DirFailures(Option<mpsc::UnboundedSender<DirFailure>>);

impl DirFailures {
    pub fn channel() -> (DirFailures, mpsc::UnboundedReceiver<DirFailure>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (DirFailures(Some(sender)), receiver)
    }

    pub fn report(&self, error: &IoError) {
        if let Some(sender) = &self.0 {
            // The receiver is gone only when the broker is stopping.
            let _ = sender.send(DirFailure {
                path: error.path.clone(),
                error: format!("{error}: {}", error.source),
            });
        }
    }
}

/// Takes failed directories offline as their failures arrive, and probes the online ones.
pub async fn run(broker: Arc<Broker>, mut failures: mpsc::UnboundedReceiver<DirFailure>) {
    let mut probe = tokio::time::interval(PROBE_INTERVAL);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let failure = tokio::select! {
            () = broker.shutdown.cancelled() => return,
            failure = failures.recv() => match failure {
                Some(failure) => failure,
                None => return,
            },
            _ = probe.tick() => {
                let probed = Arc::clone(&broker);
                match tokio::task::spawn_blocking(move || probed.log_dirs.probe()).await {
                    Ok(found) => {
                        for (_, error) in found.iter().filter(|(_, e)| e.fails_directory()) {
                            broker.dir_failures.report(error);
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "log directory probe panicked"),
                }
                continue;
            }
        };
        fail_directory(&broker, failure).await;
    }
}

async fn fail_directory(broker: &Arc<Broker>, failure: DirFailure) {
    let Some(index) = broker.log_dirs.containing(&failure.path) else {
        tracing::warn!(path = %failure.path.display(), error = failure.error, "I/O error outside the log directories");
        return;
    };
    if !broker.log_dirs.take_offline(index) {
        return;
    }
    let dirs = broker.log_dirs.dirs();
    let root = dirs[index].path.clone();
    broker
        .metrics
        .offline_log_dirs
        .set(i64::try_from(broker.log_dirs.offline_count()).unwrap_or(i64::MAX));
    tracing::error!(dir = %root.display(), error = failure.error, "log directory failed: its replicas are offline on this broker");
    if broker.log_dirs.offline_count() == dirs.len() {
        broker.fail(format!(
            "every log directory has failed (the last: {}, {})",
            root.display(),
            failure.error
        ));
        return;
    }
    if root == broker.log_dirs.metadata_dir() {
        broker.fail(format!(
            "the log directory holding the cluster metadata failed: {}, {}",
            root.display(),
            failure.error
        ));
        return;
    }
    let replicas = broker.take_replicas_offline(&root).await;
    tracing::warn!(dir = %root.display(), replicas = replicas.len(), "replicas taken offline");
    let broker = Arc::clone(broker);
    tokio::spawn(async move { tell_controller(&broker, replicas, root).await });
}

/// Proposes `ReplicasOffline` until it is committed; the broker shuts down when that takes
/// longer than `log.dir.failure.timeout.ms`, as Kafka's does, since the controller would
/// keep electing it leader of partitions it cannot serve.
async fn tell_controller(broker: &Broker, replicas: Vec<(Uuid, i32)>, root: PathBuf) {
    let timeout = broker.config.log_dir_failure_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    let command = MetadataCommand::ReplicasOffline {
        broker: broker.node_id(),
        incarnation: broker.incarnation,
        partitions: replicas,
    };
    loop {
        let outcome = tokio::select! {
            () = broker.shutdown.cancelled() => return,
            outcome = tokio::time::timeout_at(deadline, broker.quorum.propose(command.clone())) => outcome,
        };
        match outcome {
            Ok(Ok(CommandResult::Applied)) => {
                tracing::info!(dir = %root.display(), "the controller took this broker's replicas in the failed directory offline");
                crate::replica::manager::reconcile(broker).await;
                return;
            }
            Ok(Ok(other)) => {
                // Refused while this broker is not registered yet (a directory that failed as
                // the broker started): it is, moments later.
                tracing::warn!(dir = %root.display(), result = ?other, "the controller refused the offline replicas; retrying");
            }
            Ok(Err(e)) => {
                tracing::warn!(dir = %root.display(), error = %e, "could not tell the controller about the failed log directory; retrying");
            }
            Err(_) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            broker.fail(format!(
                "could not tell the controller within log.dir.failure.timeout.ms ({} ms) that log directory {} failed",
                timeout.as_millis(),
                root.display()
            ));
            return;
        }
        tokio::time::sleep(REPORT_RETRY).await;
    }
}
