//! Replication-factor change of one topic: add replicas on the least loaded brokers (racks
//! first), or remove them from the most crowded racks and busiest brokers. Pure.

use super::layout::Layout;
use super::{plan_from, ClusterState, Plan, PlanError};

/// The plan that gives every partition of `topic` exactly `rf` replicas. New replicas go last
/// (the preferred leader stays); removed ones are never the preferred leader. Only the topic's
/// partitions change: new replicas go to the least loaded brokers and removed ones come off
/// the busiest, then the topic's replicas move from the busiest brokers to the idlest as far as
/// that evens the counts out, and its preferred leaders are reordered. What only moving
/// other topics could even out is left to [`super::rebalance`].
pub fn change_replication_factor(
    state: &ClusterState,
    topic: &str,
    rf: usize,
) -> Result<Plan, PlanError> {
    let targets = state.broker_ids();
    if !state.partitions.iter().any(|p| p.topic == topic) {
        return Err(PlanError::UnknownTopic(topic.to_string()));
    }
    if rf == 0 || rf > targets.len() {
        return Err(PlanError::InvalidReplicationFactor {
            topic: topic.to_string(),
            requested: rf,
            brokers: targets.len(),
        });
    }
    let mut layout = Layout::new(state, &targets, |slot| {
        state.partitions[slot].topic == topic
    });
    for slot in 0..state.partitions.len() {
        if !layout.movable[slot] {
            continue;
        }
        while layout.replicas[slot].len() < rf {
            let Some(id) = layout.best_new_replica(slot, false) else {
                break;
            };
            layout.add(slot, id);
        }
        while layout.replicas[slot].len() > rf {
            let Some(id) = layout.replica_to_drop(slot) else {
                break;
            };
            layout.remove(slot, id);
        }
    }
    layout.spread_racks();
    layout.balance_replicas();
    layout.balance_leaders();
    Ok(plan_from(state, &layout))
}
