//! Cluster metadata: the image every broker applies, how it is agreed on (a standalone store,
//! or the replicated quorum), and the active controller's liveness tracking that fences
//! brokers which stop heartbeating.

pub mod image;
pub mod placement;
pub mod raft;
pub mod store;
pub mod tasks;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use thiserror::Error;
use tokio::sync::watch;

use image::{CommandResult, MetadataCommand, MetadataImage};
use store::{MetadataError, StandaloneStore};

/// Why a metadata command could not be committed.
#[derive(Debug, Error)]
pub enum QuorumError {
    #[error(transparent)]
    Standalone(#[from] MetadataError),
    #[error(transparent)]
    Raft(#[from] raft::QuorumError),
}

/// Where the metadata lives: alone on this broker, or replicated by the quorum.
#[derive(Clone)]
pub enum Quorum {
    Standalone(Arc<StandaloneStore>),
    Raft(raft::RaftQuorum),
}

impl Quorum {
    /// Commits a command and returns its result once applied on this broker.
    pub async fn propose(&self, command: MetadataCommand) -> Result<CommandResult, QuorumError> {
        match self {
            Quorum::Standalone(store) => Ok(store.propose(&command)?),
            Quorum::Raft(quorum) => Ok(quorum.propose(command).await?),
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        match self {
            Quorum::Standalone(store) => store.subscribe(),
            Quorum::Raft(quorum) => quorum.subscribe(),
        }
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        match self {
            Quorum::Standalone(store) => store.image(),
            Quorum::Raft(quorum) => quorum.image(),
        }
    }

    /// The node id of the active controller, if known.
    pub fn active_controller(&self, own_id: i32) -> Option<i32> {
        match self {
            Quorum::Standalone(_) => Some(own_id),
            Quorum::Raft(quorum) => quorum.leader().and_then(|id| i32::try_from(id).ok()),
        }
    }

    pub fn is_active_controller(&self) -> bool {
        match self {
            Quorum::Standalone(_) => true,
            Quorum::Raft(quorum) => quorum.is_leader(),
        }
    }

    pub async fn shutdown(&self) {
        if let Quorum::Raft(quorum) = self {
            quorum.shutdown().await;
        }
    }
}

/// What the active controller knows of broker liveness: when each broker last heartbeat,
/// and whose heartbeat connection broke. Kept in memory only: a new active controller gives
/// every broker a full session first.
#[derive(Default)]
pub struct Liveness {
    last_seen: Mutex<HashMap<i32, Instant>>,
    /// When a broker's heartbeat connection closed: a killed process's sockets reset at once,
    /// so a broker that does not reconnect within a heartbeat interval is gone.
    lost: Mutex<HashMap<i32, Instant>>,
    /// The incarnation each broker was last seen registered with; a new one counts as a
    /// heartbeat, so a restarted broker is not fenced for its previous life's silence.
    incarnations: Mutex<HashMap<i32, uuid::Uuid>>,
    active_since: Mutex<Option<Instant>>,
}

/// A change the controller wants for a broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceDecision {
    Fence(i32),
    Unfence(i32),
}

impl Liveness {
    pub fn heartbeat(&self, broker: i32) {
        self.last_seen.lock().insert(broker, Instant::now());
        self.lost.lock().remove(&broker);
    }

    /// The connection a broker heartbeat on closed.
    pub fn connection_lost(&self, broker: i32) {
        self.lost.lock().insert(broker, Instant::now());
    }

    /// Forgets everything when this node stops being the active controller.
    pub fn set_active(&self, active: bool) {
        let mut since = self.active_since.lock();
        match (active, since.is_some()) {
            (true, false) => *since = Some(Instant::now()),
            (false, true) => {
                *since = None;
                self.last_seen.lock().clear();
                self.lost.lock().clear();
            }
            _ => {}
        }
    }

    /// Brokers to fence (silent for a whole `session`, or whose heartbeat connection broke
    /// and stayed broken for `reconnect_grace`) and to unfence (heard from again).
    pub fn decisions(
        &self,
        image: &MetadataImage,
        session: Duration,
        reconnect_grace: Duration,
        now: Instant,
    ) -> Vec<FenceDecision> {
        let Some(active_since) = *self.active_since.lock() else {
            return Vec::new();
        };
        {
            let mut incarnations = self.incarnations.lock();
            let mut last_seen = self.last_seen.lock();
            for broker in image.brokers.values() {
                match incarnations.insert(broker.id, broker.incarnation) {
                    Some(previous) if previous != broker.incarnation => {
                        last_seen.insert(broker.id, now);
                        self.lost.lock().remove(&broker.id);
                    }
                    _ => {}
                }
            }
        }
        let last_seen = self.last_seen.lock();
        let lost = self.lost.lock();
        let mut decisions = Vec::new();
        for broker in image.brokers.values() {
            let heard = last_seen.get(&broker.id).copied();
            let silent = match heard {
                Some(at) => now.duration_since(at.max(active_since)) > session,
                // Live brokers reach a new controller within a heartbeat interval or two;
                // one that never does (often the previous controller itself) is gone.
                None => now.duration_since(active_since) > (reconnect_grace * 2).min(session),
            };
            let gone = lost
                .get(&broker.id)
                .is_some_and(|at| now.duration_since(*at) > reconnect_grace);
            if !broker.fenced && (silent || gone) {
                decisions.push(FenceDecision::Fence(broker.id));
            }
            if broker.fenced
                && !broker.shutting_down
                && !gone
                && heard.is_some_and(|t| now.duration_since(t) < session)
            {
                decisions.push(FenceDecision::Unfence(broker.id));
            }
        }
        decisions
    }
}

#[cfg(test)]
mod tests {
    use super::image::BrokerRegistration;
    use super::*;

    fn image_with(brokers: &[(i32, bool)]) -> MetadataImage {
        let mut image = MetadataImage::default();
        for (id, fenced) in brokers {
            image.brokers.insert(
                *id,
                BrokerRegistration {
                    id: *id,
                    incarnation: uuid::Uuid::nil(),
                    host: "h".into(),
                    port: 1,
                    rack: None,
                    fenced: *fenced,
                    shutting_down: false,
                },
            );
        }
        image
    }

    #[test]
    fn a_silent_broker_is_fenced_after_a_session_and_unfenced_when_heard_again() {
        let liveness = Liveness::default();
        let session = Duration::from_millis(50);
        let image = image_with(&[(1, false), (2, false)]);
        liveness.set_active(true);
        assert!(
            liveness
                .decisions(&image, session, session, Instant::now())
                .is_empty(),
            "a new controller waits a session"
        );
        std::thread::sleep(Duration::from_millis(60));
        liveness.heartbeat(1);
        assert_eq!(
            liveness.decisions(&image, session, session, Instant::now()),
            vec![FenceDecision::Fence(2)]
        );
        let fenced = image_with(&[(1, false), (2, true)]);
        liveness.heartbeat(2);
        assert_eq!(
            liveness.decisions(&fenced, session, session, Instant::now()),
            vec![FenceDecision::Unfence(2)]
        );
    }

    #[test]
    fn a_broken_heartbeat_connection_fences_after_the_grace_not_the_session() {
        let liveness = Liveness::default();
        let image = image_with(&[(1, false)]);
        liveness.set_active(true);
        liveness.heartbeat(1);
        liveness.connection_lost(1);
        let session = Duration::from_secs(60);
        let grace = Duration::from_millis(20);
        assert!(liveness
            .decisions(&image, session, grace, Instant::now())
            .is_empty());
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(
            liveness.decisions(&image, session, grace, Instant::now()),
            vec![FenceDecision::Fence(1)]
        );
        liveness.heartbeat(1);
        assert!(
            liveness
                .decisions(&image, session, grace, Instant::now())
                .is_empty(),
            "it reconnected"
        );
    }

    #[test]
    fn a_new_incarnation_counts_as_a_heartbeat() {
        let liveness = Liveness::default();
        let session = Duration::from_millis(20);
        let mut image = image_with(&[(1, false)]);
        liveness.set_active(true);
        liveness.decisions(&image, session, session, Instant::now());
        std::thread::sleep(Duration::from_millis(30));
        if let Some(b) = image.brokers.get_mut(&1) {
            b.incarnation = uuid::Uuid::from_u128(7);
        }
        assert!(
            liveness
                .decisions(&image, session, session, Instant::now())
                .is_empty(),
            "a restarted broker is not fenced for its previous life's silence"
        );
    }

    #[test]
    fn a_standby_controller_decides_nothing() {
        let liveness = Liveness::default();
        let image = image_with(&[(1, false)]);
        std::thread::sleep(Duration::from_millis(5));
        assert!(liveness
            .decisions(
                &image,
                Duration::from_millis(1),
                Duration::from_millis(1),
                Instant::now()
            )
            .is_empty());
    }
}
