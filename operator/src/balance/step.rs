//! One round of a balancing goal, for reconcilers that must not block: look at the cluster,
//! submit as many reassignments as the bound allows, elect preferred leaders once nothing moves,
//! report progress, and return. The next reconciliation takes the next round.
//!
//! The decision ([`next_round`]) is pure; [`step`] performs it through a [`BalanceAdmin`].
//! Nothing is remembered between rounds but the cluster itself (reassignments in flight are
//! listed by the broker), so an operator restarted mid-way resumes where the cluster is.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use serde::Serialize;

use super::executor::{self, check_offline, ExecError, Goal, NotElected, Observed};
use super::{ClusterState, Distribution, Move};

/// The cluster operations a round needs, behind a trait so reconcilers can be tested without
/// brokers.
pub trait BalanceAdmin: Send + Sync {
    /// The cluster's brokers, partitions and reassignments in flight.
    fn observe<'a>(&'a self, bootstrap: &'a str) -> BoxFuture<'a, Result<Observed, ExecError>>;

    /// Submits reassignments (AlterPartitionReassignments).
    fn reassign<'a>(
        &'a self,
        bootstrap: &'a str,
        moves: &'a [Move],
    ) -> BoxFuture<'a, Result<(), ExecError>>;

    /// Elects preferred leaders (ElectLeaders); returns the partitions that were not elected.
    fn elect<'a>(
        &'a self,
        bootstrap: &'a str,
        partitions: &'a [(String, i32)],
    ) -> BoxFuture<'a, Result<Vec<NotElected>, ExecError>>;

    /// Every registered broker, fenced (stopped) ones included (DescribeCluster).
    fn registered_brokers<'a>(
        &'a self,
        bootstrap: &'a str,
    ) -> BoxFuture<'a, Result<BTreeSet<i32>, ExecError>>;

    /// Takes a broker that left for good out of the cluster's metadata and quorum
    /// (UnregisterBroker); one not registered counts as done.
    fn unregister<'a>(
        &'a self,
        bootstrap: &'a str,
        id: i32,
    ) -> BoxFuture<'a, Result<(), ExecError>>;
}

/// [`BalanceAdmin`] over the Kafka protocol, each call bounded by `request_timeout`.
#[derive(Debug, Clone)]
pub struct KafkaBalanceAdmin {
    pub request_timeout: Duration,
}

impl Default for KafkaBalanceAdmin {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(15),
        }
    }
}

impl BalanceAdmin for KafkaBalanceAdmin {
    fn observe<'a>(&'a self, bootstrap: &'a str) -> BoxFuture<'a, Result<Observed, ExecError>> {
        executor::observe(bootstrap, self.request_timeout).boxed()
    }

    fn reassign<'a>(
        &'a self,
        bootstrap: &'a str,
        moves: &'a [Move],
    ) -> BoxFuture<'a, Result<(), ExecError>> {
        executor::submit(bootstrap, self.request_timeout, moves).boxed()
    }

    fn elect<'a>(
        &'a self,
        bootstrap: &'a str,
        partitions: &'a [(String, i32)],
    ) -> BoxFuture<'a, Result<Vec<NotElected>, ExecError>> {
        executor::elect_preferred(bootstrap, self.request_timeout, partitions).boxed()
    }

    fn registered_brokers<'a>(
        &'a self,
        bootstrap: &'a str,
    ) -> BoxFuture<'a, Result<BTreeSet<i32>, ExecError>> {
        executor::registered_brokers(bootstrap, self.request_timeout).boxed()
    }

    fn unregister<'a>(
        &'a self,
        bootstrap: &'a str,
        id: i32,
    ) -> BoxFuture<'a, Result<(), ExecError>> {
        executor::unregister_broker(bootstrap, self.request_timeout, id).boxed()
    }
}

/// Where a goal stands after a round.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// Reassignments the plan holds as of this round, in flight ones included.
    pub planned: usize,
    /// Reassignments of the goal's partitions in flight, this round's submissions included.
    pub in_flight: usize,
    /// Planned reassignments neither in flight nor submitted yet (the bound held them back).
    pub pending: usize,
    /// Preferred-leader elections requested this round.
    pub elections: usize,
    /// Nothing left to move and nothing in flight: the goal is reached (once the elections
    /// of this round are done).
    pub done: bool,
}

impl Progress {
    /// `"2 of 5 reassignments in flight, 3 pending"`, for status messages.
    pub fn describe(&self) -> String {
        if self.done {
            "no reassignment left".to_string()
        } else {
            format!(
                "{} reassignments in flight, {} pending",
                self.in_flight, self.pending
            )
        }
    }
}

/// What a round does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    pub submit: Vec<Move>,
    pub elect: Vec<(String, i32)>,
    pub progress: Progress,
}

/// The round that brings `observed` closer to `goal`, with at most `max_moves` reassignments in
/// flight cluster-wide (those already in flight count). A partition in flight is never
/// submitted again; the plan treats it as finished. Elections come only once nothing of the
/// goal moves, so they pick the final preferred leaders.
pub fn next_round(goal: &Goal, observed: &Observed, max_moves: usize) -> Result<Round, ExecError> {
    check_offline(goal, &observed.state)?;
    let plan = goal.plan(&observed.state)?;
    let in_flight: BTreeSet<&(String, i32)> = observed.reassigning.keys().collect();
    let ours_in_flight = in_flight
        .iter()
        .filter(|(topic, _)| goal.concerns(topic))
        .count();
    let mut room = max_moves.max(1).saturating_sub(in_flight.len());
    let mut submit = Vec::new();
    let mut pending = 0;
    for m in &plan.moves {
        if in_flight.contains(&(m.topic.clone(), m.partition)) {
            // Planned again while in flight: the next plan, after it lands, decides.
            pending += 1;
        } else if room > 0 {
            room -= 1;
            submit.push(m.clone());
        } else {
            pending += 1;
        }
    }
    let done = plan.moves.is_empty() && ours_in_flight == 0;
    let elect = if done { plan.elections } else { Vec::new() };
    Ok(Round {
        progress: Progress {
            planned: plan.moves.len() + ours_in_flight,
            in_flight: ours_in_flight + submit.len(),
            pending,
            elections: elect.len(),
            done,
        },
        submit,
        elect,
    })
}

/// What [`step`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepReport {
    pub progress: Progress,
    pub submitted: Vec<Move>,
    pub not_elected: Vec<NotElected>,
}

/// Performs one round of `goal` on the cluster at `bootstrap`, as `observed` describes it.
pub async fn step(
    admin: &dyn BalanceAdmin,
    bootstrap: &str,
    goal: &Goal,
    observed: &Observed,
    max_moves: usize,
) -> Result<StepReport, ExecError> {
    let round = next_round(goal, observed, max_moves)?;
    if !round.submit.is_empty() {
        admin.reassign(bootstrap, &round.submit).await?;
    }
    let not_elected = if round.elect.is_empty() {
        Vec::new()
    } else {
        admin.elect(bootstrap, &round.elect).await?
    };
    Ok(StepReport {
        progress: round.progress,
        submitted: round.submit,
        not_elected,
    })
}

/// What the cluster reports about its health and spread, for status, metrics and decisions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Health {
    /// Brokers registered and not fenced.
    pub brokers: BTreeSet<i32>,
    /// Partitions with fewer in-sync replicas than replicas (a replica being added counts until
    /// it has caught up).
    pub under_replicated: usize,
    /// Partitions without a leader.
    pub offline: usize,
    /// Reassignments in flight.
    pub reassigning: usize,
    /// Replicas and preferred leaders per registered broker.
    pub distribution: Distribution,
    /// Partitions each registered broker leads now.
    pub leaders: BTreeMap<i32, usize>,
}

impl Health {
    pub fn of(observed: &Observed) -> Health {
        let state: &ClusterState = &observed.state;
        let brokers = state.broker_ids();
        let mut leaders: BTreeMap<i32, usize> = brokers.iter().map(|b| (*b, 0)).collect();
        let mut under_replicated = 0;
        let mut offline = 0;
        for partition in &state.partitions {
            if partition.isr.len() < partition.replicas.len() {
                under_replicated += 1;
            }
            if partition.leader < 0 || !brokers.contains(&partition.leader) {
                offline += 1;
            } else if let Some(count) = leaders.get_mut(&partition.leader) {
                *count += 1;
            }
        }
        Health {
            distribution: state.distribution(None),
            brokers,
            under_replicated,
            offline,
            reassigning: observed.reassigning.len(),
            leaders,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::executor::Ongoing;
    use crate::test_support::{observed, partition};

    fn rf(topic: &str, replication_factor: usize) -> Goal {
        Goal::ReplicationFactor {
            topic: topic.to_string(),
            replication_factor,
        }
    }

    #[test]
    fn a_round_submits_no_more_than_the_bound_and_counts_the_rest_as_pending() {
        let state = observed(
            &[0, 1, 2],
            (0..5).map(|p| partition("orders", p, &[p % 3])).collect(),
        );
        let round = next_round(&rf("orders", 3), &state, 2).expect("round");
        assert_eq!(round.submit.len(), 2);
        assert!(round.submit.iter().all(|m| m.to.len() == 3));
        assert_eq!(
            round.progress,
            Progress {
                planned: 5,
                in_flight: 2,
                pending: 3,
                elections: 0,
                done: false
            }
        );
        assert!(round.elect.is_empty(), "no election while replicas move");
    }

    #[test]
    fn reassignments_in_flight_use_the_bound_and_are_never_submitted_again() {
        let mut state = observed(
            &[0, 1, 2],
            (0..3).map(|p| partition("orders", p, &[0])).collect(),
        );
        // Partition 0 is on its way to [0, 1, 2]: the state shows its target.
        state.state.partitions[0].replicas = vec![0, 1, 2];
        state.reassigning.insert(
            ("orders".to_string(), 0),
            Ongoing {
                replicas: vec![0, 1, 2],
                adding: vec![1, 2],
                removing: vec![],
            },
        );
        let round = next_round(&rf("orders", 3), &state, 2).expect("round");
        assert_eq!(round.submit.len(), 1, "one slot left of two");
        assert!(round.submit.iter().all(|m| m.partition != 0));
        assert_eq!(round.progress.in_flight, 2);
        // The other partition still to grow, and perhaps a reorder of the one in flight.
        assert!(round.progress.pending >= 1, "{:?}", round.progress);
        assert!(!round.progress.done);
    }

    #[test]
    fn a_reached_goal_elects_the_preferred_leaders_and_is_done() {
        let mut state = observed(&[0, 1, 2], vec![partition("orders", 0, &[1, 2, 0])]);
        state.state.partitions[0].leader = 0;
        let round = next_round(&rf("orders", 3), &state, 4).expect("round");
        assert!(round.submit.is_empty());
        assert_eq!(round.elect, [("orders".to_string(), 0)]);
        assert!(round.progress.done);
    }

    #[test]
    fn another_topics_reassignment_takes_room_but_does_not_hold_the_goal_back() {
        let mut state = observed(
            &[0, 1, 2],
            vec![
                partition("orders", 0, &[0, 1, 2]),
                partition("audit", 0, &[1]),
            ],
        );
        state.reassigning.insert(
            ("audit".to_string(), 0),
            Ongoing {
                replicas: vec![1, 2],
                adding: vec![2],
                removing: vec![],
            },
        );
        let round = next_round(&rf("orders", 3), &state, 1).expect("round");
        assert!(round.progress.done, "{:?}", round.progress);
        assert_eq!(round.progress.in_flight, 0);
    }

    #[test]
    fn an_impossible_goal_is_a_plan_error() {
        let state = observed(&[0, 1], vec![partition("orders", 0, &[0])]);
        match next_round(&rf("orders", 3), &state, 4) {
            Err(ExecError::Plan(crate::balance::PlanError::InvalidReplicationFactor {
                requested: 3,
                brokers: 2,
                ..
            })) => {}
            other => panic!("expected a plan error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn rounds_of_a_scale_up_reach_balance_with_the_bound_kept_and_end_in_elections() {
        use crate::test_support::{rebalance_goal, MemoryCluster};
        let cluster = MemoryCluster::default();
        // Three brokers hold everything; two new ones hold nothing.
        cluster.set_state(
            observed(
                &[0, 1, 2, 3, 4],
                (0..10)
                    .map(|p| partition("orders", p, &[p % 3, (p + 1) % 3]))
                    .collect(),
            )
            .state,
        );
        let mut rounds = 0;
        loop {
            rounds += 1;
            assert!(rounds < 50, "no end to the rounds");
            let seen = cluster.observe("memory").await.expect("observe");
            assert!(seen.reassigning.len() <= 3, "the bound holds");
            let report = step(&cluster, "memory", &rebalance_goal(), &seen, 3)
                .await
                .expect("round");
            if report.progress.done {
                break;
            }
        }
        let after = cluster.state().distribution(None);
        assert!(after.replica_spread() <= 1, "{after:?}");
        assert!(after.leader_spread() <= 1, "{after:?}");
        assert!(after.replicas[&3] > 0 && after.replicas[&4] > 0);
        let calls = cluster.calls();
        assert!(calls.iter().any(|c| c.starts_with("reassign")), "{calls:?}");
        assert!(
            calls.last().is_some_and(|c| c.starts_with("elect"))
                || calls.last() == Some(&"observe".to_string()),
            "{calls:?}"
        );
    }

    #[test]
    fn health_counts_lagging_leaderless_and_moving_partitions() {
        let mut state = observed(
            &[0, 1, 2],
            vec![
                partition("a", 0, &[0, 1]),
                partition("a", 1, &[1, 2]),
                partition("a", 2, &[2, 0]),
            ],
        );
        state.state.partitions[1].isr = vec![1];
        state.state.partitions[2].leader = -1;
        state.reassigning.insert(
            ("a".to_string(), 0),
            Ongoing {
                replicas: vec![0, 1],
                adding: vec![],
                removing: vec![],
            },
        );
        let health = Health::of(&state);
        assert_eq!(health.under_replicated, 1);
        assert_eq!(health.offline, 1);
        assert_eq!(health.reassigning, 1);
        assert_eq!(health.leaders, BTreeMap::from([(0, 1), (1, 1), (2, 0)]));
        assert_eq!(
            health.distribution.replicas,
            BTreeMap::from([(0, 2), (1, 2), (2, 2)])
        );
    }
}
