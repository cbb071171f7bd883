//! Cluster metadata: the image every broker applies, how it is agreed on (a standalone store,
//! or the replicated quorum), and the active controller's liveness tracking that fences
//! brokers which stop heartbeating.

pub mod features;
pub mod image;
pub mod placement;
pub mod raft;
pub mod store;
pub mod tasks;
pub mod unregister;

use std::collections::{BTreeMap, BTreeSet, HashMap};
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

/// The leader epoch a standalone broker reports: it leads from the start and never holds an
/// election, like a Kafka controller formatted `--standalone` after its first one.
const STANDALONE_EPOCH: i32 = 1;

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

    /// The quorum's state as Kafka's DescribeQuorum reports it. A standalone broker is the
    /// only voter and always the leader, of the one epoch its metadata ever has; its log
    /// ends after the last command that changed the image, and is all committed.
    /// `controller` is the standalone broker's controller listener, if it has one.
    pub async fn describe(
        &self,
        own_id: i32,
        controller: Option<(String, u16)>,
    ) -> Result<raft::QuorumStatus, QuorumError> {
        match self {
            Quorum::Raft(quorum) => Ok(quorum.describe().await?),
            Quorum::Standalone(store) => {
                let end = store.changes();
                let now = crate::controller::raft::now_ms();
                Ok(raft::QuorumStatus {
                    leader_id: own_id,
                    leader_epoch: STANDALONE_EPOCH,
                    high_watermark: end,
                    voters: vec![raft::ReplicaStatus {
                        node_id: own_id,
                        log_end_offset: end,
                        last_fetch_timestamp: now,
                        last_caught_up_timestamp: now,
                    }],
                    observers: Vec::new(),
                    voter_endpoints: controller
                        .map(|(host, port)| vec![(own_id, host, port)])
                        .unwrap_or_default(),
                })
            }
        }
    }

    /// The offset of the last metadata record applied here, -1 before any: Kafka's
    /// finalized-features epoch, which grows with every change of the metadata.
    pub fn applied_offset(&self) -> i64 {
        match self {
            Quorum::Standalone(store) => store.changes() - 1,
            Quorum::Raft(quorum) => quorum.applied_offset(),
        }
    }

    pub async fn shutdown(&self) {
        if let Quorum::Raft(quorum) = self {
            quorum.shutdown().await;
        }
    }

    /// Resolves once the active controller this node knows of is other than `known`; never
    /// for a standalone broker, whose controller is itself.
    pub async fn controller_other_than(&self, known: Option<i32>) {
        match self {
            Quorum::Standalone(_) => std::future::pending().await,
            Quorum::Raft(quorum) => {
                let known = known.and_then(|id| u64::try_from(id).ok());
                quorum.leader_other_than(known).await;
            }
        }
    }

    /// The voters and the learners of the metadata quorum as this node knows them; a
    /// standalone broker is its only voter.
    pub fn members(&self, own_id: i32) -> (BTreeSet<i32>, BTreeSet<i32>) {
        match self {
            Quorum::Standalone(_) => (BTreeSet::from([own_id]), BTreeSet::new()),
            Quorum::Raft(quorum) => {
                let (voters, learners) = quorum.members();
                let ids = |set: BTreeSet<raft::NodeId>| {
                    set.into_iter()
                        .filter_map(|id| i32::try_from(id).ok())
                        .collect()
                };
                (ids(voters), ids(learners))
            }
        }
    }

    /// Takes learner `id` out of the quorum's membership (see [`raft::RaftQuorum::remove_learner`]);
    /// a standalone broker has no learners.
    pub async fn remove_learner(&self, id: i32) -> Result<(), QuorumError> {
        match (self, raft::NodeId::try_from(id)) {
            (Quorum::Raft(quorum), Ok(node)) => Ok(quorum.remove_learner(node).await?),
            _ => Ok(()),
        }
    }

    /// Brokers whose controller listener refuses this node's connections (their process is
    /// gone), as seen by the quorum leader; empty elsewhere.
    pub fn refusing_brokers(&self) -> BTreeMap<i32, raft::Refused> {
        match self {
            Quorum::Standalone(_) => BTreeMap::new(),
            Quorum::Raft(quorum) => quorum
                .refusing_peers()
                .into_iter()
                .filter_map(|(id, r)| i32::try_from(id).ok().map(|id| (id, r)))
                .collect(),
        }
    }
}

/// How the active controller judges broker liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivenessTimings {
    /// `broker.session.timeout.ms`: a broker not heard from for this long is fenced.
    pub session: Duration,
    /// A broker whose heartbeat connection broke is fenced unless it heartbeats again within
    /// this; twice this is how long a new controller waits for a broker it never heard from.
    pub reconnect_grace: Duration,
    /// A broker whose controller listener keeps refusing connections for this long is fenced.
    pub refused_grace: Duration,
}

impl LivenessTimings {
    /// The timings for a broker heartbeat interval and session timeout: a broken heartbeat
    /// connection gets an interval and a half-second margin to come back (brokers reconnect at
    /// once, but may notice a broken connection only at their next heartbeat), a refusing
    /// listener [`REFUSED_GRACE`].
    pub fn new(heartbeat_interval: Duration, session: Duration) -> LivenessTimings {
        LivenessTimings {
            session,
            reconnect_grace: heartbeat_interval + Duration::from_millis(500),
            refused_grace: REFUSED_GRACE,
        }
    }
}

/// How long a broker's controller listener must keep refusing connections before it is
/// fenced. A refusal means no process listens there; the grace only confirms it with a
/// second attempt (the leader retries an unreachable peer every 250 ms).
pub const REFUSED_GRACE: Duration = Duration::from_millis(250);

/// A run of refusals counts while it goes on: its latest refusal is at most this old.
const REFUSAL_FRESH: Duration = Duration::from_secs(2);

/// What the active controller knows of broker liveness: when each broker last heartbeat,
/// and whose heartbeat connection broke. Kept in memory only, and forgotten when this node
/// stops or starts being the active controller. A new controller gives a broker it has not
/// heard from [`LivenessTimings::reconnect_grace`] twice over (live brokers heartbeat to a new
/// controller as soon as they learn of it), unless the broker's controller listener refuses
/// connections: then it is gone, and fenced after [`LivenessTimings::refused_grace`].
#[derive(Default)]
pub struct Liveness {
    last_seen: Mutex<HashMap<i32, Instant>>,
    /// When a broker's heartbeat connection closed: a killed process's sockets reset at once,
    /// so a broker that does not reconnect within the grace is gone.
    lost: Mutex<HashMap<i32, Instant>>,
    /// The incarnation each broker was last seen registered with; a new one counts as a
    /// heartbeat, so a restarted broker is not fenced for its previous life's silence.
    incarnations: Mutex<HashMap<i32, uuid::Uuid>>,
    /// When a new incarnation of a broker was noticed: refusals from before belong to its
    /// previous life (a registered broker's controller listener is already up).
    registered: Mutex<HashMap<i32, Instant>>,
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

    /// Tracks whether this node is the active controller. Becoming it drops the broken
    /// connections noted before (brokers that heartbeat here while another node led were
    /// refused and closed their connections); ceasing to be it forgets everything.
    pub fn set_active(&self, active: bool) {
        let mut since = self.active_since.lock();
        match (active, since.is_some()) {
            (true, false) => {
                *since = Some(Instant::now());
                self.lost.lock().clear();
            }
            (false, true) => {
                *since = None;
                self.last_seen.lock().clear();
                self.lost.lock().clear();
            }
            _ => {}
        }
    }

    /// Brokers to fence and to unfence (heard from again). A broker is fenced when it was
    /// silent for a whole session, when its heartbeat connection broke and stayed broken for
    /// the reconnect grace, or when its controller listener has been refusing connections
    /// (`refused`, by broker, as the quorum saw it while this node was active) for the
    /// refused grace.
    pub fn decisions(
        &self,
        image: &MetadataImage,
        timings: LivenessTimings,
        refused: &BTreeMap<i32, raft::Refused>,
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
                        self.registered.lock().insert(broker.id, now);
                    }
                    _ => {}
                }
            }
        }
        let last_seen = self.last_seen.lock();
        let lost = self.lost.lock();
        let registered = self.registered.lock();
        let mut decisions = Vec::new();
        for broker in image.brokers.values() {
            let heard = last_seen.get(&broker.id).copied();
            let silent = match heard {
                Some(at) => now.duration_since(at.max(active_since)) > timings.session,
                // Live brokers reach a new controller as soon as they learn of it; one that
                // never does (often the previous controller itself) is gone.
                None => {
                    now.duration_since(active_since)
                        > (timings.reconnect_grace * 2).min(timings.session)
                }
            };
            let disconnected = lost
                .get(&broker.id)
                .is_some_and(|at| now.duration_since(*at) > timings.reconnect_grace);
            // A run of refusals seen while this node is active, still going on, confirmed by
            // a later refusal, since the broker last registered.
            let refusing = refused.get(&broker.id).is_some_and(|r| {
                let floor = registered
                    .get(&broker.id)
                    .map_or(active_since, |at| (*at).max(active_since));
                r.last > r.since
                    && r.last >= floor
                    && now.saturating_duration_since(r.last) < REFUSAL_FRESH
                    && now.saturating_duration_since(r.since.max(floor)) > timings.refused_grace
            });
            let gone = disconnected || refusing;
            if !broker.fenced && (silent || gone) {
                decisions.push(FenceDecision::Fence(broker.id));
            }
            if broker.fenced
                && !broker.shutting_down
                && !gone
                && heard.is_some_and(|t| now.duration_since(t) < timings.session)
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
                    endpoints: Vec::new(),
                },
            );
        }
        image
    }

    fn timings(session: Duration, grace: Duration) -> LivenessTimings {
        LivenessTimings {
            session,
            reconnect_grace: grace,
            refused_grace: grace,
        }
    }

    fn none() -> BTreeMap<i32, raft::Refused> {
        BTreeMap::new()
    }

    #[test]
    fn a_silent_broker_is_fenced_after_a_session_and_unfenced_when_heard_again() {
        let liveness = Liveness::default();
        let session = Duration::from_millis(50);
        let t = timings(session, session);
        let image = image_with(&[(1, false), (2, false)]);
        liveness.set_active(true);
        assert!(
            liveness
                .decisions(&image, t, &none(), Instant::now())
                .is_empty(),
            "a new controller waits a session"
        );
        std::thread::sleep(Duration::from_millis(60));
        liveness.heartbeat(1);
        assert_eq!(
            liveness.decisions(&image, t, &none(), Instant::now()),
            vec![FenceDecision::Fence(2)]
        );
        let fenced = image_with(&[(1, false), (2, true)]);
        liveness.heartbeat(2);
        assert_eq!(
            liveness.decisions(&fenced, t, &none(), Instant::now()),
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
        let t = timings(Duration::from_secs(60), Duration::from_millis(20));
        assert!(liveness
            .decisions(&image, t, &none(), Instant::now())
            .is_empty());
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(
            liveness.decisions(&image, t, &none(), Instant::now()),
            vec![FenceDecision::Fence(1)]
        );
        liveness.heartbeat(1);
        assert!(
            liveness
                .decisions(&image, t, &none(), Instant::now())
                .is_empty(),
            "it reconnected"
        );
    }

    #[test]
    fn connections_lost_before_this_node_became_active_do_not_count() {
        let liveness = Liveness::default();
        let image = image_with(&[(1, false)]);
        // Broker 1 heartbeat here while another node led, was refused and hung up.
        liveness.connection_lost(1);
        std::thread::sleep(Duration::from_millis(30));
        liveness.set_active(true);
        let t = timings(Duration::from_secs(60), Duration::from_millis(20));
        assert!(
            liveness
                .decisions(&image, t, &none(), Instant::now())
                .is_empty(),
            "a stale broken connection fenced a live broker"
        );
    }

    #[test]
    fn a_listener_refusing_connections_fences_after_the_refused_grace() {
        let liveness = Liveness::default();
        let image = image_with(&[(1, false), (2, false)]);
        liveness.set_active(true);
        liveness.heartbeat(1);
        liveness.heartbeat(2);
        let t = LivenessTimings {
            session: Duration::from_secs(60),
            reconnect_grace: Duration::from_secs(60),
            refused_grace: Duration::from_millis(20),
        };
        let now = Instant::now();
        let refusing = |since: Instant| {
            BTreeMap::from([(
                2,
                raft::Refused {
                    since,
                    last: Instant::now(),
                },
            )])
        };
        let once = BTreeMap::from([(
            2,
            raft::Refused {
                since: now,
                last: now,
            },
        )]);
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            liveness
                .decisions(&image, t, &once, Instant::now())
                .is_empty(),
            "one refusal is not yet enough"
        );
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(
            liveness.decisions(&image, t, &refusing(now), Instant::now()),
            vec![FenceDecision::Fence(2)]
        );
        // A fenced broker that heartbeats while its listener still refuses stays fenced.
        let fenced = image_with(&[(1, false), (2, true)]);
        liveness.heartbeat(2);
        assert!(liveness
            .decisions(&fenced, t, &refusing(now), Instant::now())
            .is_empty());
        assert_eq!(
            liveness.decisions(&fenced, t, &none(), Instant::now()),
            vec![FenceDecision::Unfence(2)],
            "reachable again"
        );
    }

    #[test]
    fn refusals_seen_before_this_node_became_active_or_long_ago_do_not_count() {
        let liveness = Liveness::default();
        let image = image_with(&[(1, false)]);
        let t = timings(Duration::from_secs(60), Duration::from_millis(1));
        let before = Instant::now();
        std::thread::sleep(Duration::from_millis(5));
        liveness.set_active(true);
        liveness.heartbeat(1);
        let stale = BTreeMap::from([(
            1,
            raft::Refused {
                since: before,
                last: before,
            },
        )]);
        assert!(liveness
            .decisions(&image, t, &stale, Instant::now())
            .is_empty());
        let old = Instant::now();
        let long_ago = BTreeMap::from([(
            1,
            raft::Refused {
                since: old,
                last: old,
            },
        )]);
        assert!(liveness
            .decisions(
                &image,
                t,
                &long_ago,
                old + REFUSAL_FRESH + Duration::from_millis(1)
            )
            .is_empty());
    }

    #[test]
    fn refusals_from_before_a_broker_registered_again_do_not_count() {
        let liveness = Liveness::default();
        let t = timings(Duration::from_secs(60), Duration::from_millis(1));
        let mut image = image_with(&[(1, false)]);
        liveness.set_active(true);
        liveness.heartbeat(1);
        let since = Instant::now();
        std::thread::sleep(Duration::from_millis(5));
        let last = Instant::now();
        std::thread::sleep(Duration::from_millis(5));
        liveness.decisions(&image, t, &none(), Instant::now());
        // It restarted: the refusals of its previous life were before it registered again.
        if let Some(b) = image.brokers.get_mut(&1) {
            b.incarnation = uuid::Uuid::from_u128(9);
        }
        let old = BTreeMap::from([(1, raft::Refused { since, last })]);
        assert!(liveness
            .decisions(&image, t, &old, Instant::now())
            .is_empty());
        // Refused again after that: gone again.
        std::thread::sleep(Duration::from_millis(5));
        let again = BTreeMap::from([(
            1,
            raft::Refused {
                since,
                last: Instant::now(),
            },
        )]);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(
            liveness.decisions(&image, t, &again, Instant::now()),
            vec![FenceDecision::Fence(1)]
        );
    }

    #[test]
    fn a_new_incarnation_counts_as_a_heartbeat() {
        let liveness = Liveness::default();
        let session = Duration::from_millis(20);
        let t = timings(session, session);
        let mut image = image_with(&[(1, false)]);
        liveness.set_active(true);
        liveness.decisions(&image, t, &none(), Instant::now());
        std::thread::sleep(Duration::from_millis(30));
        if let Some(b) = image.brokers.get_mut(&1) {
            b.incarnation = uuid::Uuid::from_u128(7);
        }
        assert!(
            liveness
                .decisions(&image, t, &none(), Instant::now())
                .is_empty(),
            "a restarted broker is not fenced for its previous life's silence"
        );
    }

    #[test]
    fn a_standby_controller_decides_nothing() {
        let liveness = Liveness::default();
        let image = image_with(&[(1, false)]);
        std::thread::sleep(Duration::from_millis(5));
        let t = timings(Duration::from_millis(1), Duration::from_millis(1));
        assert!(liveness
            .decisions(&image, t, &none(), Instant::now())
            .is_empty());
    }
}
