//! Scale-up and drain: move replicas onto the target brokers until every one is within one
//! of the others, and empty the brokers that leave. Pure.

use std::collections::BTreeSet;

use super::layout::Layout;
use super::{plan_from, ClusterState, Plan, PlanError};

/// Passes over the layout before the plan is taken as it stands; one is enough unless racks
/// make balance unreachable.
const MAX_PASSES: usize = 8;

/// The plan that puts every replica on `brokers` (every listed broker when `None`) except
/// `leaving`, balanced: replicas on other brokers move, then replicas move from the busiest
/// targets to the idlest until all are within one, then preferred leaders are spread the same
/// way, and the preferred leaders that do not lead yet are elected.
///
/// Refuses when a partition has more replicas than there would be brokers to hold them, or
/// names a broker the cluster does not have.
pub fn rebalance(
    state: &ClusterState,
    brokers: Option<&[i32]>,
    leaving: &[i32],
) -> Result<Plan, PlanError> {
    let listed = state.broker_ids();
    let requested: BTreeSet<i32> = match brokers {
        Some(ids) => ids.iter().copied().collect(),
        None => listed.clone(),
    };
    let hosting: BTreeSet<i32> = state
        .partitions
        .iter()
        .flat_map(|p| p.replicas.iter().copied())
        .collect();
    let unknown: Vec<i32> = requested
        .iter()
        .copied()
        .filter(|id| !listed.contains(id))
        .chain(
            leaving
                .iter()
                .copied()
                .filter(|id| !listed.contains(id) && !hosting.contains(id)),
        )
        .collect();
    if !unknown.is_empty() {
        return Err(PlanError::UnknownBrokers(unknown));
    }
    let leaving: BTreeSet<i32> = leaving.iter().copied().collect();
    let targets: BTreeSet<i32> = requested.difference(&leaving).copied().collect();
    if targets.is_empty() {
        return Err(PlanError::NoBrokers);
    }
    for partition in &state.partitions {
        let rf = partition.replicas.iter().collect::<BTreeSet<_>>().len();
        if rf > targets.len() {
            return Err(PlanError::ReplicationFactorExceedsBrokers {
                topic: partition.topic.clone(),
                replication_factor: rf,
                remaining: targets.len(),
                targets: targets.iter().copied().collect(),
                leaving: leaving.iter().copied().collect(),
            });
        }
    }
    let mut layout = Layout::new(state, &targets, |_| true);
    // Where racks make balance unreachable, a pass can open moves an earlier pass lacked:
    // repeat until a pass changes nothing, so planning the result again finds nothing to do.
    for _ in 0..MAX_PASSES {
        let before = layout.replicas.clone();
        // Rack spread first (those moves are required whatever the counts), then the moves
        // the counts require, then whatever the flow could not place, then leaders.
        layout.spread_racks();
        layout.flow_moves();
        layout.evacuate();
        layout.spread_racks();
        layout.balance_replicas();
        layout.balance_leaders_moving_replicas();
        if layout.replicas == before {
            break;
        }
    }
    Ok(plan_from(state, &layout))
}

/// Balances the cluster over every listed broker, new ones included.
pub fn scale_up(state: &ClusterState) -> Result<Plan, PlanError> {
    rebalance(state, None, &[])
}

/// Moves every replica off `leaving` and balances the rest over the remaining brokers.
pub fn drain(state: &ClusterState, leaving: &[i32]) -> Result<Plan, PlanError> {
    rebalance(state, None, leaving)
}
