//! The broker's cluster duties in the background: apply every new metadata image to the local
//! replicas, heartbeat to the active controller, and, on the active controller, fence brokers
//! that went quiet; as a partition leader, drop lagging followers from the ISR. Plus the
//! controlled shutdown that moves leadership away before the broker stops.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::image::MetadataCommand;
use super::raft::RaftQuorum;
use super::{FenceDecision, LivenessTimings, Quorum};
use crate::broker::Broker;
use crate::replica::{manager, Role};

/// Starts the background work; every task ends when the broker shuts down.
pub fn spawn(broker: &Arc<Broker>) {
    tokio::spawn(apply_metadata(Arc::clone(broker)));
    tokio::spawn(shrink_isr(Arc::clone(broker)));
    if let Quorum::Raft(quorum) = &broker.quorum {
        if broker.config.is_broker {
            tokio::spawn(heartbeat(Arc::clone(broker), quorum.clone()));
        }
        tokio::spawn(fence(Arc::clone(broker), quorum.clone()));
    }
}

async fn apply_metadata(broker: Arc<Broker>) {
    let mut images = broker.quorum.subscribe();
    loop {
        tokio::select! {
            () = broker.shutdown.cancelled() => return,
            changed = images.changed() => {
                if changed.is_err() {
                    return;
                }
                manager::reconcile(&broker).await;
            }
        }
    }
}

async fn shrink_isr(broker: Arc<Broker>) {
    let lag = broker.config.replica_lag_time_max;
    let mut interval = tokio::time::interval((lag / 2).max(Duration::from_millis(200)));
    loop {
        tokio::select! {
            () = broker.shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let now = Instant::now();
        let leading: Vec<_> = broker
            .partitions
            .read()
            .values()
            .flat_map(|list| list.values().cloned())
            .filter(|p| p.role().0 == Role::Leader)
            .collect();
        for partition in leading {
            if let Some(change) = partition.isr_shrink(lag, now) {
                tracing::info!(partition = ?partition, isr = ?change.isr, "followers lagging: shrinking the ISR");
                manager::propose_isr_change(&broker, &partition, change);
            }
        }
    }
}

/// Pause before another heartbeat after one failed (no controller yet, refused, unreachable).
const HEARTBEAT_RETRY: Duration = Duration::from_millis(200);

/// How often the active controller looks for brokers to fence.
const FENCE_CHECK: Duration = Duration::from_millis(100);

/// Tells the active controller this broker is alive: every heartbeat interval, at once when
/// another node becomes the controller (so a new controller hears from every live broker
/// within moments, and can fence the ones it does not hear from early), and again shortly
/// after a heartbeat that failed. A call still waiting when another node becomes the
/// controller is abandoned; none waits longer than a heartbeat interval (at least a second):
/// a controller that slow would be replaced or heard from next time.
async fn heartbeat(broker: Arc<Broker>, quorum: RaftQuorum) {
    let interval = broker.config.broker_heartbeat_interval;
    let limit = interval
        .max(Duration::from_secs(1))
        .min(broker.config.request_timeout);
    let node = broker.node_id();
    let mut wait = Duration::ZERO;
    loop {
        let controller = broker.quorum.active_controller(node);
        tokio::select! {
            () = broker.shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
            () = broker.quorum.controller_other_than(controller) => {}
        }
        let controller = broker.quorum.active_controller(node);
        let noted = tokio::select! {
            noted = quorum.heartbeat(node, limit) => noted,
            () = broker.quorum.controller_other_than(controller) => false,
        };
        wait = if noted {
            interval
        } else {
            HEARTBEAT_RETRY.min(interval)
        };
    }
}

/// On the active controller: fence brokers that stopped heartbeating, unfence returning ones.
/// Checks every [`FENCE_CHECK`], and at once when the controller changes, so a new controller
/// starts its liveness clock when it takes over.
async fn fence(broker: Arc<Broker>, quorum: RaftQuorum) {
    let timings = LivenessTimings::new(
        broker.config.broker_heartbeat_interval,
        broker.config.broker_session_timeout,
    );
    let mut interval = tokio::time::interval(FENCE_CHECK);
    loop {
        let controller = broker.quorum.active_controller(broker.node_id());
        tokio::select! {
            () = broker.shutdown.cancelled() => return,
            _ = interval.tick() => {}
            () = broker.quorum.controller_other_than(controller) => {}
        }
        let active = broker.quorum.is_active_controller();
        quorum.liveness().set_active(active);
        if !active {
            continue;
        }
        let image = broker.image();
        let refused = broker.quorum.refusing_brokers();
        for decision in quorum
            .liveness()
            .decisions(&image, timings, &refused, Instant::now())
        {
            let command = match decision {
                FenceDecision::Fence(id) => {
                    let why = if refused.contains_key(&id) {
                        "its controller listener refuses connections"
                    } else {
                        "it stopped heartbeating"
                    };
                    tracing::warn!(broker = id, why, "fencing broker");
                    MetadataCommand::SetFenced {
                        broker: id,
                        fenced: true,
                    }
                }
                FenceDecision::Unfence(id) => {
                    tracing::info!(broker = id, "heartbeating again: unfencing");
                    MetadataCommand::SetFenced {
                        broker: id,
                        fenced: false,
                    }
                }
            };
            if let Err(e) = broker.quorum.propose(command).await {
                tracing::warn!(error = %e, "fencing change not committed");
            }
        }
        elect_unclean(&broker).await;
    }
}

/// Partitions left without an in-sync replica get any live replica as leader, but only in
/// topics that allow it (`unclean.leader.election.enable`): what the new leader lacks is lost.
async fn elect_unclean(broker: &Broker) {
    let image = broker.image();
    let live = image.leader_candidates();
    for topic in image.topics.values() {
        if !broker.topic_config(topic).unclean_leader_election {
            continue;
        }
        for (index, state) in topic.partitions.iter().enumerate() {
            if state.leader != super::image::NO_LEADER
                || !state.replicas.iter().any(|r| live.contains(r))
            {
                continue;
            }
            tracing::warn!(
                topic = topic.name,
                partition = index,
                "no in-sync replica is alive: electing an out-of-sync leader, as the topic allows"
            );
            let command = MetadataCommand::ElectLeader {
                topic: topic.name.clone(),
                partition: index as i32,
                preferred: false,
                unclean: true,
            };
            if let Err(e) = broker.quorum.propose(command).await {
                tracing::warn!(error = %e, "unclean election not committed");
            }
        }
    }
}

/// Moves leadership off this broker before it stops (SIGTERM), so producers see no failed
/// write: the controller elects other in-sync leaders, then this broker waits until the
/// metadata shows it leads nothing that another replica could lead.
pub async fn controlled_shutdown(broker: &Broker, timeout: Duration) {
    if matches!(broker.quorum, Quorum::Standalone(_)) || !broker.config.is_broker {
        return;
    }
    let node = broker.node_id();
    let deadline = tokio::time::Instant::now() + timeout;
    let proposed = tokio::time::timeout_at(
        deadline,
        broker
            .quorum
            .propose(MetadataCommand::BeginShutdown { broker: node }),
    )
    .await;
    if !matches!(proposed, Ok(Ok(_))) {
        tracing::warn!("controlled shutdown not committed; stopping anyway");
        return;
    }
    loop {
        let image = broker.image();
        let still_leading = image
            .topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .filter(|p| p.leader == node && p.isr.iter().any(|r| *r != node))
            .count();
        if still_leading == 0 {
            tracing::info!("leadership moved away; stopping");
            manager::reconcile(broker).await;
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                partitions = still_leading,
                "controlled shutdown timed out; stopping anyway"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
