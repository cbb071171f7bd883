//! Leader balancing: which broker should be each partition's preferred leader so every
//! broker leads within one partition of the others, without moving any replica. Pure.

use super::layout::Layout;
use super::{plan_from, ClusterState, Plan};

/// Reorders replica lists (reassignments that only change the order) so preferred leaders are
/// spread over the listed brokers as evenly as the replicas allow, and elects the preferred
/// leader of every partition it does not lead yet.
pub fn balance_leaders(state: &ClusterState) -> Plan {
    let mut layout = Layout::new(state, &state.broker_ids(), |_| true);
    layout.balance_leaders();
    plan_from(state, &layout)
}
