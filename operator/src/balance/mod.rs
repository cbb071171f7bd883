//! Balance: where replicas and leaders should be (pure planners), and the executor that
//! gets them there through the broker's admin APIs.
//!
//! Policy lives here, mechanism in the broker: a planner reads a [`ClusterState`] and returns
//! a [`Plan`] (reassignments and preferred-leader elections); the [`executor`] reads the state
//! from a cluster, plans, submits `AlterPartitionReassignments` a few partitions at a time,
//! waits for them, and elects preferred leaders; [`step`] takes one round of the same at a
//! time, for reconcilers that must not block.
//!
//! The planners share one model:
//! - **Targets**: the brokers replicas may live on. Replicas anywhere else are moved.
//! - **Racks**: a partition of replication factor `rf` spans `min(rf, racks among targets)`
//!   racks; a broker without `broker.rack` is a rack of its own, so without racks this just
//!   says "distinct brokers". A plan never lowers a partition's spread below that.
//! - **Balance**: every target holds within one replica of every other, and is the preferred
//!   leader (first replica) of within one partition of every other, whenever racks allow it.
//! - **Few moves**: which replicas move where is a minimum-cost flow from brokers above their
//!   share (and brokers being emptied) to brokers below it, so without racks a plan copies
//!   exactly as many replicas as the best plan reaching balance; a replica taking another's
//!   place takes its position too. Leadership changes only where counts differ by two or
//!   more: by reordering replica lists, and only where that cannot do it, by moving a
//!   preferred leader's replica. Planning a balanced cluster gives an empty plan.

pub mod cli;
pub mod executor;
mod flow;
mod layout;
mod leaders;
mod placement;
mod replication;
mod scale;
pub mod step;

#[cfg(test)]
mod properties;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use thiserror::Error;

pub use leaders::balance_leaders;
pub use placement::place_partitions;
pub use replication::change_replication_factor;
pub use scale::{drain, rebalance, scale_up};

/// A broker as the balancer sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokerInfo {
    pub id: i32,
    pub rack: Option<String>,
}

/// A partition's replicas (first = preferred leader), leader (-1 for none) and in-sync
/// replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionInfo {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub leader: i32,
    pub isr: Vec<i32>,
}

/// The live brokers and every partition. Replicas may name brokers that are not listed
/// (stopped or fenced ones).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClusterState {
    pub brokers: Vec<BrokerInfo>,
    pub partitions: Vec<PartitionInfo>,
}

impl ClusterState {
    pub fn broker_ids(&self) -> BTreeSet<i32> {
        self.brokers.iter().map(|b| b.id).collect()
    }

    /// Replicas and preferred leaders per broker, counted over `brokers` (every listed broker
    /// when `None`); brokers holding nothing count as zero.
    pub fn distribution(&self, brokers: Option<&BTreeSet<i32>>) -> Distribution {
        let brokers = brokers.cloned().unwrap_or_else(|| self.broker_ids());
        let mut replicas: BTreeMap<i32, usize> = brokers.iter().map(|b| (*b, 0)).collect();
        let mut leaders = replicas.clone();
        for partition in &self.partitions {
            for (position, id) in partition.replicas.iter().enumerate() {
                if let Some(count) = replicas.get_mut(id) {
                    *count += 1;
                }
                if position == 0 {
                    if let Some(count) = leaders.get_mut(id) {
                        *count += 1;
                    }
                }
            }
        }
        Distribution { replicas, leaders }
    }
}

/// How many replicas and preferred leaders each broker has.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Distribution {
    pub replicas: BTreeMap<i32, usize>,
    pub leaders: BTreeMap<i32, usize>,
}

impl Distribution {
    /// Largest difference of replica counts between two brokers (0 or 1 is balanced).
    pub fn replica_spread(&self) -> usize {
        spread(self.replicas.values())
    }

    /// Largest difference of preferred-leader counts between two brokers.
    pub fn leader_spread(&self) -> usize {
        spread(self.leaders.values())
    }
}

fn spread<'a>(counts: impl Iterator<Item = &'a usize>) -> usize {
    let (min, max) = counts.fold((usize::MAX, 0), |(lo, hi), c| (lo.min(*c), hi.max(*c)));
    max.saturating_sub(min.min(max))
}

/// One partition's reassignment: from its replica list to another. Same brokers in another
/// order only changes the preferred leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Move {
    pub topic: String,
    pub partition: i32,
    pub from: Vec<i32>,
    pub to: Vec<i32>,
}

impl Move {
    /// Brokers that get a new replica (which copies the partition's data).
    pub fn added(&self) -> Vec<i32> {
        self.to
            .iter()
            .copied()
            .filter(|b| !self.from.contains(b))
            .collect()
    }

    /// Brokers whose replica goes away.
    pub fn removed(&self) -> Vec<i32> {
        self.from
            .iter()
            .copied()
            .filter(|b| !self.to.contains(b))
            .collect()
    }

    /// Whether only the order changes (no data moves).
    pub fn is_reorder(&self) -> bool {
        self.added().is_empty() && self.removed().is_empty()
    }

    /// Whether the move changes the partition's replication factor.
    pub fn changes_replication_factor(&self) -> bool {
        self.from.len() != self.to.len()
    }
}

/// What to do: reassignments, then preferred-leader elections once they are done.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub moves: Vec<Move>,
    /// Partitions whose preferred leader (after the moves) should take over leadership.
    pub elections: Vec<(String, i32)>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.moves.is_empty() && self.elections.is_empty()
    }

    /// New replicas the plan creates: the data it copies, counted in partition replicas.
    pub fn replica_moves(&self) -> usize {
        self.moves.iter().map(|m| m.added().len()).sum()
    }

    /// The state once every move has completed and every election has run.
    pub fn apply(&self, state: &ClusterState) -> ClusterState {
        let mut after = state.clone();
        let moves: BTreeMap<(&str, i32), &Move> = self
            .moves
            .iter()
            .map(|m| ((m.topic.as_str(), m.partition), m))
            .collect();
        let elections: BTreeSet<(&str, i32)> = self
            .elections
            .iter()
            .map(|(t, p)| (t.as_str(), *p))
            .collect();
        for partition in &mut after.partitions {
            let key = (partition.topic.as_str(), partition.partition);
            if let Some(m) = moves.get(&key) {
                partition.replicas = m.to.clone();
                partition.isr = m.to.clone();
                if !m.to.contains(&partition.leader) {
                    partition.leader = m.to.first().copied().unwrap_or(-1);
                }
            }
            if elections.contains(&key) {
                partition.leader = partition.replicas.first().copied().unwrap_or(-1);
            }
        }
        after
    }
}

/// Why no plan can be made.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlanError {
    /// Draining (or restricting the target brokers) would leave fewer brokers than some
    /// topic has replicas per partition.
    #[error(
        "topic `{topic}` has replication factor {replication_factor} but only {remaining} brokers would remain ({targets:?}){}; lower its replication factor or keep more brokers",
        if leaving.is_empty() { String::new() } else { format!(" after draining {leaving:?}") }
    )]
    ReplicationFactorExceedsBrokers {
        topic: String,
        replication_factor: usize,
        remaining: usize,
        targets: Vec<i32>,
        leaving: Vec<i32>,
    },
    #[error("no broker is left to hold replicas")]
    NoBrokers,
    #[error("brokers {0:?} are not in the cluster")]
    UnknownBrokers(Vec<i32>),
    #[error("topic `{0}` does not exist")]
    UnknownTopic(String),
    #[error("replication factor {requested} of topic `{topic}` is not between 1 and the {brokers} brokers")]
    InvalidReplicationFactor {
        topic: String,
        requested: usize,
        brokers: usize,
    },
}

/// The plan that takes `state` to the replica lists of `layout` (its first slots mirror
/// `state.partitions`), with an election wherever the preferred leader does not lead.
fn plan_from(state: &ClusterState, layout: &layout::Layout) -> Plan {
    let mut plan = Plan::default();
    for (partition, replicas) in state.partitions.iter().zip(&layout.replicas) {
        if *replicas != partition.replicas {
            plan.moves.push(Move {
                topic: partition.topic.clone(),
                partition: partition.partition,
                from: partition.replicas.clone(),
                to: replicas.clone(),
            });
        }
        let Some(preferred) = replicas.first().copied() else {
            continue;
        };
        // A new replica is in sync by the time its reassignment completes; an old one must be
        // in sync now, or the election would fail.
        let electable =
            partition.isr.contains(&preferred) || !partition.replicas.contains(&preferred);
        if partition.leader != preferred && electable {
            plan.elections
                .push((partition.topic.clone(), partition.partition));
        }
    }
    plan
}
