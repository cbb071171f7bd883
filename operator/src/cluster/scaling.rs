//! Scaling a KafkaCluster safely: what to do next, decided from what is observed. Pure.
//!
//! - **Up**: the StatefulSet grows at once; once every new broker has registered, the
//!   balancer moves replicas and leaders onto them (one bounded round per reconciliation);
//!   when nothing is left to move, the scale-up is over.
//! - **Down**: the StatefulSet keeps its size while the balancer drains the leaving brokers
//!   (the highest ordinals); a drain that would leave a topic with more replicas than brokers
//!   is refused with the topic named. Once no replica is left on them and no reassignment is
//!   in flight, the StatefulSet shrinks.
//! - Without dedicated controllers, the metadata quorum is the lowest ordinals (one voter
//!   below three brokers, three from three on), fixed when the cluster was formed: a change of
//!   size that would change the quorum is refused. With them, the brokers scale freely.
//!
//! - **Removed brokers** stay registered (fenced) and learners of the metadata quorum, whose
//!   leader keeps trying to reach them, until they are unregistered: once a broker is past the
//!   StatefulSet's size, its pod gone and no replica on it, the operator unregisters it.
//!
//! The operation under way is recorded in the status (`status.scaling`), so an operator that
//! restarts resumes it; everything else is read from Kubernetes and the cluster each time.

use std::collections::BTreeSet;

use crate::balance::executor::{ExecError, Goal, Observed};
use crate::balance::step::{next_round, Progress, Round};
use crate::crd::{ScalingPhase, ScalingStatus};

/// What the decision is made from.
#[derive(Debug, Clone, Copy)]
pub struct ScalingInput<'a> {
    /// `spec.replicas`.
    pub wanted: i32,
    /// The StatefulSet's `spec.replicas`; `None` before it exists.
    pub running: Option<i32>,
    /// The operation the last status recorded.
    pub operation: Option<&'a ScalingStatus>,
    /// The cluster as its brokers describe it; `None` when it could not be reached.
    pub kafka: Option<&'a Observed>,
    /// Reassignments in flight at once.
    pub max_moves: usize,
    /// Whether the first brokers are the metadata quorum's voters (no dedicated controllers),
    /// so that a change of size may change the quorum.
    pub quorum_in_brokers: bool,
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalingDecision {
    /// Pods the StatefulSet should have.
    pub statefulset_replicas: i32,
    /// The operation to record; `None` when none is under way.
    pub operation: Option<ScalingStatus>,
    /// Reassignments and elections to perform on the cluster now, for `goal`.
    pub round: Option<(Goal, Round)>,
    /// Why the spec cannot be carried out (the cluster stays as it is).
    pub refused: Option<String>,
    /// What the operation waits for.
    pub waiting: Option<String>,
}

impl ScalingDecision {
    /// Run `replicas` pods; nothing under way.
    pub fn steady(replicas: i32) -> Self {
        Self {
            statefulset_replicas: replicas,
            operation: None,
            round: None,
            refused: None,
            waiting: None,
        }
    }
}

/// Quorum voters of a cluster of `brokers` (see `ValidatedCluster::voters`).
fn voters(brokers: i32) -> i32 {
    if brokers >= 3 {
        3
    } else {
        1
    }
}

fn operation(from: i32, to: i32, phase: ScalingPhase, progress: &Progress) -> ScalingStatus {
    ScalingStatus {
        from,
        to,
        phase,
        reassignments_in_flight: saturating(progress.in_flight),
        reassignments_pending: saturating(progress.pending),
        reassignments_submitted: 0,
    }
}

fn saturating(count: usize) -> i32 {
    i32::try_from(count).unwrap_or(i32::MAX)
}

/// The next step of scaling, with the reassignments submitted so far counted.
pub fn decide(input: ScalingInput<'_>) -> ScalingDecision {
    let mut decision = next_step(input);
    let now = decision.round.as_ref().map_or(0, |(_, r)| r.submit.len());
    if let Some(op) = decision.operation.as_mut() {
        let before = input
            .operation
            .filter(|prev| (prev.from, prev.to) == (op.from, op.to))
            .map_or(0, |prev| prev.reassignments_submitted);
        op.reassignments_submitted = before.saturating_add(saturating(now));
    }
    decision
}

fn next_step(input: ScalingInput<'_>) -> ScalingDecision {
    let wanted = input.wanted;
    let Some(running) = input.running else {
        // A new cluster: nothing to move yet.
        return ScalingDecision::steady(wanted);
    };
    // The operation in progress, or the one the spec starts now.
    let (from, to) = match input.operation {
        Some(op) if op.to == wanted => (op.from, op.to),
        // The spec changed mid-way: a new operation from the brokers running (back to the
        // same size, it rebalances what the interrupted one moved).
        Some(_) => (running, wanted),
        None if wanted == running => return ScalingDecision::steady(running),
        None => (running, wanted),
    };
    if input.quorum_in_brokers && voters(from) != voters(to) {
        return ScalingDecision {
            refused: Some(format!(
                "cannot go from {from} to {to} brokers: the metadata quorum (the first {} brokers, fixed when the cluster was formed) would change to the first {}; keep spec.replicas {} 3",
                voters(from),
                voters(to),
                if from >= 3 { "at or above" } else { "below" }
            )),
            ..ScalingDecision::steady(running)
        };
    }
    if to > from || (to == from && input.operation.is_some()) {
        scale_up(input, running, from, to)
    } else {
        scale_down(input, running, from, to)
    }
}

/// Grown (or being grown) to `to`: wait for the brokers, then balance onto them.
fn scale_up(input: ScalingInput<'_>, running: i32, from: i32, to: i32) -> ScalingDecision {
    let waiting = |message: String| ScalingDecision {
        statefulset_replicas: to.max(running),
        operation: Some(operation(
            from,
            to,
            ScalingPhase::WaitingForBrokers,
            &Progress::default(),
        )),
        round: None,
        refused: None,
        waiting: Some(message),
    };
    let Some(kafka) = input.kafka else {
        return waiting("waiting for the cluster to answer".to_string());
    };
    let registered = kafka.state.broker_ids();
    let missing: Vec<i32> = (0..to).filter(|id| !registered.contains(id)).collect();
    if !missing.is_empty() {
        return waiting(format!("waiting for brokers {missing:?} to register"));
    }
    let goal = Goal::Rebalance {
        brokers: Some((0..to).collect()),
        drain: Vec::new(),
    };
    match next_round(&goal, kafka, input.max_moves) {
        Ok(round) if round.progress.done => ScalingDecision {
            round: Some((goal, round)),
            ..ScalingDecision::steady(to.max(running))
        },
        Ok(round) => ScalingDecision {
            statefulset_replicas: to.max(running),
            operation: Some(operation(
                from,
                to,
                ScalingPhase::Rebalancing,
                &round.progress,
            )),
            waiting: Some(format!(
                "balancing replicas over {to} brokers: {}",
                round.progress.describe()
            )),
            round: Some((goal, round)),
            refused: None,
        },
        Err(error) => waiting(format!("cannot balance yet: {error}")),
    }
}

/// Shrinking from `from` to `to`: drain the leaving brokers, then shrink.
fn scale_down(input: ScalingInput<'_>, running: i32, from: i32, to: i32) -> ScalingDecision {
    if running <= to {
        return ScalingDecision::steady(running);
    }
    let leaving: Vec<i32> = (to..running).collect();
    let waiting = |message: String, progress: &Progress| ScalingDecision {
        statefulset_replicas: running,
        operation: Some(operation(from, to, ScalingPhase::Draining, progress)),
        round: None,
        refused: None,
        waiting: Some(message),
    };
    let Some(kafka) = input.kafka else {
        return waiting(
            format!("waiting for the cluster to answer before draining brokers {leaving:?}"),
            &Progress::default(),
        );
    };
    // A leaving broker that never registered (a scale-up undone before its brokers joined)
    // and holds no replica has nothing to drain: it just goes.
    let registered = kafka.state.broker_ids();
    let to_drain: Vec<i32> = leaving
        .iter()
        .copied()
        .filter(|id| registered.contains(id) || !holds_nothing(kafka, &[*id]))
        .collect();
    if to_drain.is_empty() {
        return ScalingDecision::steady(to);
    }
    let goal = Goal::Rebalance {
        brokers: None,
        drain: to_drain,
    };
    match next_round(&goal, kafka, input.max_moves) {
        Ok(round) if round.progress.done && holds_nothing(kafka, &leaving) => ScalingDecision {
            round: Some((goal, round)),
            ..ScalingDecision::steady(to)
        },
        Ok(round) => ScalingDecision {
            waiting: Some(format!(
                "draining brokers {leaving:?} before removing them: {}",
                round.progress.describe()
            )),
            operation: Some(operation(from, to, ScalingPhase::Draining, &round.progress)),
            round: Some((goal, round)),
            ..ScalingDecision::steady(running)
        },
        Err(ExecError::Plan(error)) => ScalingDecision {
            refused: Some(format!(
                "cannot remove brokers {leaving:?}: {error}; the cluster keeps {running} brokers"
            )),
            ..ScalingDecision::steady(running)
        },
        Err(error) => waiting(
            format!("cannot drain brokers {leaving:?} yet: {error}"),
            &Progress::default(),
        ),
    }
}

/// Whether no partition has a replica on `brokers`.
fn holds_nothing(kafka: &Observed, brokers: &[i32]) -> bool {
    let brokers: BTreeSet<i32> = brokers.iter().copied().collect();
    kafka
        .current
        .values()
        .chain(kafka.state.partitions.iter().map(|p| &p.replicas))
        .all(|replicas| replicas.iter().all(|r| !brokers.contains(r)))
}

/// Brokers to unregister now: registered (fenced ones included) but past the `replicas` pods
/// the StatefulSet keeps, with no pod left (so their process has stopped), no replica, and
/// never a voter of the metadata quorum. While a scale-up is under way the StatefulSet already
/// has its new size, so a broker coming back is never among them.
pub fn to_unregister(
    registered: &BTreeSet<i32>,
    replicas: i32,
    pods: &BTreeSet<i32>,
    kafka: &Observed,
) -> Vec<i32> {
    registered
        .iter()
        .copied()
        .filter(|id| *id >= replicas.max(voters(replicas)))
        .filter(|id| !pods.contains(id))
        .filter(|id| holds_nothing(kafka, &[*id]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::executor::Ongoing;
    use crate::test_support::{observed, round_robin};

    /// `brokers` registered; partitions of RF `rf` spread round-robin over `hosts`.
    fn kafka(brokers: &[i32], hosts: &[i32], partitions: i32, rf: usize) -> Observed {
        observed(brokers, round_robin("orders", partitions, rf, hosts))
    }

    fn input<'a>(
        wanted: i32,
        running: Option<i32>,
        operation: Option<&'a ScalingStatus>,
        kafka: Option<&'a Observed>,
    ) -> ScalingInput<'a> {
        ScalingInput {
            wanted,
            running,
            operation,
            kafka,
            max_moves: 4,
            quorum_in_brokers: true,
        }
    }

    fn op(from: i32, to: i32, phase: ScalingPhase) -> ScalingStatus {
        ScalingStatus {
            from,
            to,
            phase,
            reassignments_in_flight: 0,
            reassignments_pending: 0,
            reassignments_submitted: 0,
        }
    }

    #[test]
    fn a_new_cluster_is_created_at_its_size_with_nothing_to_move() {
        let d = decide(input(5, None, None, None));
        assert_eq!(d, ScalingDecision::steady(5));
    }

    #[test]
    fn a_cluster_at_its_size_with_nothing_under_way_stays_as_it_is() {
        let k = kafka(&[0, 1, 2], &[0, 1, 2], 6, 2);
        assert_eq!(
            decide(input(3, Some(3), None, Some(&k))),
            ScalingDecision::steady(3)
        );
        assert_eq!(
            decide(input(3, Some(3), None, None)),
            ScalingDecision::steady(3),
            "an unreachable cluster changes nothing when nothing is asked"
        );
    }

    #[test]
    fn a_scale_up_grows_the_statefulset_and_waits_for_the_new_brokers() {
        let k = kafka(&[0, 1, 2], &[0, 1, 2], 6, 2);
        let d = decide(input(5, Some(3), None, Some(&k)));
        assert_eq!(d.statefulset_replicas, 5);
        assert_eq!(d.round, None, "nothing moves before the brokers are there");
        let recorded = d.operation.expect("recorded");
        assert_eq!(
            (recorded.from, recorded.to, recorded.phase),
            (3, 5, ScalingPhase::WaitingForBrokers)
        );
        assert!(
            d.waiting.expect("waiting").contains("[3, 4]"),
            "names the brokers it waits for"
        );
        // One of the two has registered.
        let k = kafka(&[0, 1, 2, 3], &[0, 1, 2], 6, 2);
        let d = decide(input(5, Some(5), Some(&recorded), Some(&k)));
        assert_eq!(d.statefulset_replicas, 5);
        assert!(d.waiting.expect("waiting").contains("[4]"));
        // Unreachable meanwhile: still waiting, still grown.
        let d = decide(input(5, Some(5), Some(&recorded), None));
        assert_eq!(d.statefulset_replicas, 5);
        assert!(d.round.is_none());
    }

    #[test]
    fn once_every_broker_registered_a_scale_up_rebalances_until_nothing_moves() {
        let recorded = op(3, 5, ScalingPhase::WaitingForBrokers);
        let k = kafka(&[0, 1, 2, 3, 4], &[0, 1, 2], 10, 2);
        let d = decide(input(5, Some(5), Some(&recorded), Some(&k)));
        let (goal, round) = d.round.clone().expect("a round");
        assert!(matches!(goal, Goal::Rebalance { ref drain, .. } if drain.is_empty()));
        assert_eq!(round.submit.len(), 4, "bounded by max_moves");
        assert!(round
            .submit
            .iter()
            .all(|m| m.added().iter().all(|b| *b >= 3)));
        let recorded = d.operation.expect("still under way");
        assert_eq!(recorded.phase, ScalingPhase::Rebalancing);
        assert_eq!(recorded.reassignments_in_flight, 4);
        assert_eq!(recorded.reassignments_submitted, 4);
        // The next round adds to the count.
        let mut moving = k.clone();
        if let Some((_, round)) = &d.round {
            for m in &round.submit {
                moving.reassigning.insert(
                    (m.topic.clone(), m.partition),
                    Ongoing {
                        replicas: m.to.iter().chain(&m.removed()).copied().collect(),
                        adding: m.added(),
                        removing: m.removed(),
                    },
                );
                if let Some(p) = moving
                    .state
                    .partitions
                    .iter_mut()
                    .find(|p| p.partition == m.partition)
                {
                    p.replicas = m.to.clone();
                }
            }
        }
        let next = decide(input(5, Some(5), Some(&recorded), Some(&moving)));
        assert_eq!(
            next.operation.map(|o| o.reassignments_submitted),
            Some(4),
            "the bound is full: nothing more submitted"
        );
        assert!(d.waiting.expect("waiting").contains("balancing"));

        // Balanced: the operation ends (elections may still run).
        let balanced = kafka(&[0, 1, 2, 3, 4], &[0, 1, 2, 3, 4], 10, 2);
        let d = decide(input(5, Some(5), Some(&recorded), Some(&balanced)));
        assert_eq!(d.operation, None);
        assert_eq!(d.waiting, None);
        assert_eq!(d.statefulset_replicas, 5);
        assert!(d
            .round
            .is_some_and(|(_, r)| r.progress.done && r.submit.is_empty()));
    }

    #[test]
    fn a_scale_up_waits_for_its_reassignments_in_flight() {
        let recorded = op(3, 5, ScalingPhase::Rebalancing);
        let mut k = kafka(&[0, 1, 2, 3, 4], &[0, 1, 2, 3, 4], 10, 2);
        k.reassigning.insert(
            ("orders".to_string(), 0),
            Ongoing {
                replicas: vec![0, 1, 3],
                adding: vec![],
                removing: vec![3],
            },
        );
        let d = decide(input(5, Some(5), Some(&recorded), Some(&k)));
        assert!(d.operation.is_some(), "not over while a move is in flight");
        assert!(d
            .waiting
            .expect("waiting")
            .contains("1 reassignments in flight"));
    }

    #[test]
    fn a_scale_down_drains_the_highest_ordinals_first_and_keeps_the_statefulset() {
        let k = kafka(&[0, 1, 2, 3, 4], &[0, 1, 2, 3, 4], 10, 2);
        let d = decide(input(3, Some(5), None, Some(&k)));
        assert_eq!(d.statefulset_replicas, 5, "no pod goes before it is empty");
        let (goal, round) = d.round.expect("a round");
        assert_eq!(
            goal,
            Goal::Rebalance {
                brokers: None,
                drain: vec![3, 4]
            }
        );
        assert!(!round.submit.is_empty());
        assert!(round.submit.iter().all(|m| m.to.iter().all(|b| *b < 3)));
        let recorded = d.operation.expect("recorded");
        assert_eq!(
            (recorded.from, recorded.to, recorded.phase),
            (5, 3, ScalingPhase::Draining)
        );
        assert!(d
            .waiting
            .expect("waiting")
            .contains("draining brokers [3, 4]"));
    }

    #[test]
    fn a_drained_cluster_shrinks_the_statefulset_and_ends_the_operation() {
        let recorded = op(5, 3, ScalingPhase::Draining);
        let k = kafka(&[0, 1, 2, 3, 4], &[0, 1, 2], 6, 2);
        let d = decide(input(3, Some(5), Some(&recorded), Some(&k)));
        assert_eq!(d.statefulset_replicas, 3);
        assert_eq!(d.operation, None);
        assert_eq!(d.refused, None);
        // Shrunk: steady.
        assert_eq!(
            decide(input(3, Some(3), None, Some(&k))),
            ScalingDecision::steady(3)
        );
    }

    #[test]
    fn a_replica_still_leaving_a_drained_broker_keeps_the_statefulset() {
        let recorded = op(5, 3, ScalingPhase::Draining);
        let mut k = kafka(&[0, 1, 2, 3, 4], &[0, 1, 2], 6, 2);
        // The last move is still removing broker 4's replica.
        k.current.insert(("orders".to_string(), 0), vec![0, 1, 4]);
        k.reassigning.insert(
            ("orders".to_string(), 0),
            Ongoing {
                replicas: vec![0, 1, 4],
                adding: vec![],
                removing: vec![4],
            },
        );
        let d = decide(input(3, Some(5), Some(&recorded), Some(&k)));
        assert_eq!(d.statefulset_replicas, 5);
        assert!(d.operation.is_some());
    }

    #[test]
    fn a_drain_below_a_topics_replication_factor_is_refused_with_the_topic_named() {
        let k = kafka(&[0, 1, 2, 3, 4], &[0, 1, 2, 3, 4], 6, 4);
        let d = decide(input(3, Some(5), None, Some(&k)));
        assert_eq!(d.statefulset_replicas, 5, "nothing is removed");
        assert!(d.round.is_none(), "nothing moves");
        assert_eq!(d.operation, None);
        let why = d.refused.expect("refused");
        assert!(
            why.contains("`orders`") && why.contains("replication factor 4"),
            "{why}"
        );
        assert!(why.contains("keeps 5 brokers"), "{why}");
    }

    #[test]
    fn a_drain_waits_while_the_cluster_cannot_be_reached_or_a_broker_is_down() {
        let d = decide(input(3, Some(5), None, None));
        assert_eq!(d.statefulset_replicas, 5);
        assert!(d.round.is_none());
        assert!(d.waiting.expect("waiting").contains("to answer"));
        // Broker 1 holds replicas but is not registered: no plan around it.
        let k = kafka(&[0, 2, 3, 4], &[0, 1, 2, 3, 4], 10, 2);
        let d = decide(input(3, Some(5), None, Some(&k)));
        assert_eq!(d.statefulset_replicas, 5);
        assert!(d.round.is_none());
        assert!(d.waiting.expect("waiting").contains("not live"));
    }

    #[test]
    fn a_scale_up_whose_brokers_never_registered_can_be_undone() {
        // 3 → 5, brokers 3 and 4 never joined; the spec goes back to 3.
        let recorded = op(3, 5, ScalingPhase::WaitingForBrokers);
        let k = kafka(&[0, 1, 2], &[0, 1, 2], 6, 2);
        let d = decide(input(3, Some(5), Some(&recorded), Some(&k)));
        assert_eq!(d.refused, None, "{d:?}");
        assert_eq!(
            d.statefulset_replicas, 3,
            "nothing to drain: shrunk at once"
        );
        assert_eq!(d.operation, None);
        assert!(d.round.is_none());
        // 1 → 2 on a single broker, back to 1.
        let recorded = op(1, 2, ScalingPhase::WaitingForBrokers);
        let k = kafka(&[0], &[0], 3, 1);
        let d = decide(input(1, Some(2), Some(&recorded), Some(&k)));
        assert_eq!((d.statefulset_replicas, d.refused), (1, None));
        // Broker 4 never joined but 3 did: only 3 is drained.
        let recorded = op(3, 5, ScalingPhase::WaitingForBrokers);
        let k = kafka(&[0, 1, 2, 3], &[0, 1, 2, 3], 8, 2);
        let d = decide(input(3, Some(5), Some(&recorded), Some(&k)));
        assert_eq!(d.statefulset_replicas, 5, "3 holds replicas");
        assert!(
            matches!(d.round, Some((Goal::Rebalance { ref drain, .. }, _)) if drain == &vec![3]),
            "{d:?}"
        );
        // A broker that is down but still holds replicas is not dropped silently.
        let k = kafka(&[0, 1, 2], &[0, 1, 2, 3], 8, 2);
        let d = decide(input(3, Some(4), None, Some(&k)));
        assert_eq!(d.statefulset_replicas, 4);
    }

    #[test]
    fn a_removed_broker_is_unregistered_once_its_pod_is_gone_and_it_holds_nothing() {
        let ids = |list: &[i32]| list.iter().copied().collect::<BTreeSet<i32>>();
        let drained = kafka(&[0, 1, 2], &[0, 1, 2], 6, 2);
        let registered = ids(&[0, 1, 2, 3, 4]);
        // Shrunk 5 → 3: not while the pods are still there (their brokers may be stopping).
        assert!(to_unregister(&registered, 3, &ids(&[0, 1, 2, 3, 4]), &drained).is_empty());
        assert_eq!(
            to_unregister(&registered, 3, &ids(&[0, 1, 2, 4]), &drained),
            vec![3]
        );
        assert_eq!(
            to_unregister(&registered, 3, &ids(&[0, 1, 2]), &drained),
            vec![3, 4]
        );
        // A broker still listed by a partition stays.
        let mut holding = drained.clone();
        holding
            .current
            .insert(("orders".to_string(), 0), vec![0, 4]);
        assert_eq!(
            to_unregister(&registered, 3, &ids(&[0, 1, 2]), &holding),
            vec![3]
        );
        // Being drained, or grown again: every broker has its pod in the StatefulSet's size.
        assert!(to_unregister(&registered, 5, &ids(&[0, 1, 2]), &drained).is_empty());
        // Never a voter, even with its pod gone.
        assert!(to_unregister(&ids(&[0]), 0, &BTreeSet::new(), &drained).is_empty());
        assert_eq!(
            to_unregister(&ids(&[0, 1]), 1, &ids(&[0]), &kafka(&[0], &[0], 2, 1)),
            vec![1]
        );
        // Nothing registered past the size: nothing to do.
        assert!(to_unregister(&ids(&[0, 1, 2]), 3, &ids(&[0, 1, 2]), &drained).is_empty());
    }

    #[test]
    fn a_size_change_that_would_change_the_quorum_is_refused() {
        let k = kafka(&[0, 1, 2], &[0, 1, 2], 3, 1);
        for (running, wanted) in [(3, 2), (3, 1), (1, 3), (2, 4)] {
            let d = decide(input(wanted, Some(running), None, Some(&k)));
            assert_eq!(d.statefulset_replicas, running, "{running} → {wanted}");
            assert!(
                d.refused.as_deref().is_some_and(|r| r.contains("quorum")),
                "{running} → {wanted}: {d:?}"
            );
        }
        let d = decide(input(2, Some(1), None, Some(&k)));
        assert_eq!(d.refused, None, "1 → 2 keeps the single voter");
        // With dedicated controllers the brokers are not the quorum.
        for (running, wanted) in [(3, 2), (1, 3), (2, 4)] {
            let d = decide(ScalingInput {
                quorum_in_brokers: false,
                ..input(wanted, Some(running), None, Some(&k))
            });
            assert_eq!(d.refused, None, "{running} → {wanted}: {d:?}");
        }
    }

    #[test]
    fn a_changed_mind_mid_operation_starts_from_the_brokers_running() {
        // Draining 5 → 3, then the spec says 4: drain only broker 4.
        let recorded = op(5, 3, ScalingPhase::Draining);
        let k = kafka(&[0, 1, 2, 3, 4], &[0, 1, 2, 3, 4], 10, 2);
        let d = decide(input(4, Some(5), Some(&recorded), Some(&k)));
        let recorded = d.operation.expect("a new drain");
        assert_eq!((recorded.from, recorded.to), (5, 4));
        assert!(
            matches!(d.round, Some((Goal::Rebalance { ref drain, .. }, _)) if drain == &vec![4])
        );
        // Draining 5 → 3, then the spec says 5 again: balance back over all five.
        let recorded = op(5, 3, ScalingPhase::Draining);
        let half = kafka(&[0, 1, 2, 3, 4], &[0, 1, 2], 10, 2);
        let d = decide(input(5, Some(5), Some(&recorded), Some(&half)));
        assert_eq!(d.refused, None);
        assert_eq!(d.statefulset_replicas, 5);
        assert_eq!(
            d.operation.map(|o| (o.from, o.to, o.phase)),
            Some((5, 5, ScalingPhase::Rebalancing))
        );
        assert!(
            matches!(d.round, Some((Goal::Rebalance { ref drain, .. }, ref r)) if drain.is_empty() && !r.submit.is_empty())
        );
    }
}
