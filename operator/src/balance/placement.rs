//! Placement of new partitions: on the brokers with the fewest replicas, over as many racks
//! as the replication factor allows, led by the brokers leading the fewest. Pure.

use super::layout::Layout;
use super::{ClusterState, PlanError};

/// Replica lists (preferred leader first) for `count` new partitions of `topic` with `rf`
/// replicas each, numbered after the topic's existing partitions: for CreateTopics or
/// CreatePartitions with explicit assignments.
///
/// Each replica goes to the listed broker with the fewest replicas among those on the racks
/// the partition uses least; then leadership of the new partitions is spread so preferred
/// leaders are as even as possible without touching existing partitions.
pub fn place_partitions(
    state: &ClusterState,
    topic: &str,
    count: usize,
    rf: usize,
) -> Result<Vec<Vec<i32>>, PlanError> {
    let targets = state.broker_ids();
    if rf == 0 || rf > targets.len() {
        return Err(PlanError::InvalidReplicationFactor {
            topic: topic.to_string(),
            requested: rf,
            brokers: targets.len(),
        });
    }
    let mut layout = Layout::new(state, &targets, |_| false);
    let first = layout.replicas.len();
    for _ in 0..count {
        let slot = layout.push_slot(Vec::new(), true);
        for position in 0..rf {
            if let Some(id) = layout.best_new_replica(slot, position == 0) {
                layout.add(slot, id);
            }
        }
    }
    layout.balance_leaders_moving_replicas();
    Ok(layout.replicas[first..].to_vec())
}
