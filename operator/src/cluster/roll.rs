//! Rolling restarts driven by the operator: which broker pod to restart next, decided from
//! what Kubernetes and the brokers report. Pure.
//!
//! The StatefulSet uses `updateStrategy: OnDelete`, so a changed pod template (configuration
//! hash, image, ...) restarts nothing by itself: the operator deletes one outdated pod at a
//! time and the StatefulSet controller recreates it from the new template. Before each
//! deletion every pod must be ready, every broker registered, no partition under-replicated
//! or leaderless, and no reassignment in flight. Leadership leaves the broker before it stops:
//! the pod's preStop hook takes it out of the Services, then SIGTERM starts the broker's
//! controlled shutdown, which moves the leaders of its partitions to other in-sync replicas
//! before it exits. Once every pod runs the new template and the cluster is healthy again, the
//! preferred leaders that do not lead are elected back.
//!
//! Pods go highest ordinal first (as the StatefulSet controller would), so the metadata quorum
//! voters (the lowest ordinals) go last; but pods that lack the volume of a claim template
//! added to running brokers go lowest first (see [`next_restart`]).

use std::collections::BTreeMap;

use crate::balance::executor::Observed;
use crate::balance::step::Health;

/// One broker pod as Kubernetes reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    /// The StatefulSet revision the pod was created from (`controller-revision-hash`).
    pub revision: Option<String>,
    pub ready: bool,
    /// Whether the pod is being deleted.
    pub terminating: bool,
    /// Whether a restart of the pod was asked for ([`MANUAL_ROLL_ANNOTATION`]).
    pub restart_requested: bool,
    /// Whether the pod lacks the volume of one of the StatefulSet's claim templates (one
    /// added to running brokers).
    pub missing_volume: bool,
}

/// Annotation (`"true"`) on a broker pod that restarts it, or on a KafkaCluster that restarts
/// every broker, one at a time under the roll's safety checks, with no change of the spec.
pub const MANUAL_ROLL_ANNOTATION: &str = "oxbow.dev/manual-rolling-update";

/// What the roll does now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollStep {
    /// Every pod runs the current template.
    UpToDate,
    /// Delete this pod (by ordinal): the StatefulSet recreates it from the new template.
    Restart(i32),
    /// Outdated pods remain but restarting one now could hurt: why.
    Wait(String),
}

/// The next step of a roll. `pods` are by ordinal; `running` is how many the StatefulSet has;
/// `update_revision` is the StatefulSet's current revision (unknown before its controller has
/// seen it: nothing to compare with, nothing restarts).
///
/// Pods at or above `running` are leaving (the StatefulSet controller removes them after a
/// scale-down) and are no part of the roll; a pod being deleted is never restarted, only
/// waited for.
pub fn next_restart(
    pods: &BTreeMap<i32, PodView>,
    running: i32,
    update_revision: Option<&str>,
    kafka: Option<&Observed>,
) -> RollStep {
    let Some(revision) = update_revision else {
        return RollStep::UpToDate;
    };
    let pods: BTreeMap<i32, &PodView> = pods
        .range(..running)
        .map(|(ordinal, pod)| (*ordinal, pod))
        .collect();
    let outdated: Vec<i32> = pods
        .iter()
        .filter(|(_, pod)| {
            !pod.terminating && (pod.restart_requested || pod.revision.as_deref() != Some(revision))
        })
        .map(|(ordinal, _)| *ordinal)
        .collect();
    // The StatefulSet controller tries in vain to add a new claim template's volume to the
    // running pods, and stops at the first one it fails on: only when the lowest such pod is
    // deleted does it make that pod again (and try the next). So those pods go lowest first.
    let lacking = outdated
        .iter()
        .copied()
        .filter(|ordinal| pods.get(ordinal).is_some_and(|pod| pod.missing_volume))
        .min();
    let Some(next) = lacking.or_else(|| outdated.iter().copied().max()) else {
        return RollStep::UpToDate;
    };
    let missing: Vec<i32> = (0..running).filter(|o| !pods.contains_key(o)).collect();
    if !missing.is_empty() {
        return RollStep::Wait(format!("waiting for the pods of brokers {missing:?}"));
    }
    if let Some((ordinal, _)) = pods.iter().find(|(_, p)| p.terminating || !p.ready) {
        return RollStep::Wait(format!(
            "{} brokers to restart; waiting for broker {ordinal} to be ready",
            outdated.len()
        ));
    }
    let Some(kafka) = kafka else {
        return RollStep::Wait(format!(
            "{} brokers to restart; waiting for the cluster to answer",
            outdated.len()
        ));
    };
    let health = Health::of(kafka);
    let unregistered: Vec<i32> = (0..running)
        .filter(|id| !health.brokers.contains(id))
        .collect();
    let blocker = if !unregistered.is_empty() {
        Some(format!("brokers {unregistered:?} have not registered"))
    } else if health.under_replicated > 0 {
        Some(format!(
            "{} partitions are under-replicated",
            health.under_replicated
        ))
    } else if health.offline > 0 {
        Some(format!("{} partitions have no leader", health.offline))
    } else if health.reassigning > 0 {
        Some(format!(
            "{} partition reassignments are in flight",
            health.reassigning
        ))
    } else {
        None
    };
    match blocker {
        Some(why) => RollStep::Wait(format!(
            "{} brokers to restart; waiting: {why}",
            outdated.len()
        )),
        None => RollStep::Restart(next),
    }
}

/// Partitions whose preferred leader (first replica) is in sync but does not lead: after a
/// roll, the restarted brokers take their leadership back.
pub fn preferred_elections(kafka: &Observed) -> Vec<(String, i32)> {
    kafka
        .state
        .partitions
        .iter()
        .filter(|p| {
            p.replicas
                .first()
                .is_some_and(|preferred| p.leader != *preferred && p.isr.contains(preferred))
        })
        .map(|p| (p.topic.clone(), p.partition))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::executor::Ongoing;
    use crate::test_support::{observed, round_robin};

    fn pods(revisions: &[&str]) -> BTreeMap<i32, PodView> {
        revisions
            .iter()
            .enumerate()
            .map(|(i, r)| {
                (
                    i32::try_from(i).expect("ordinal"),
                    PodView {
                        revision: Some(r.to_string()),
                        ready: true,
                        terminating: false,
                        restart_requested: false,
                        missing_volume: false,
                    },
                )
            })
            .collect()
    }

    fn healthy(brokers: &[i32]) -> Observed {
        observed(brokers, round_robin("orders", 6, 2, brokers))
    }

    #[test]
    fn pods_on_the_current_revision_need_nothing() {
        let k = healthy(&[0, 1, 2]);
        assert_eq!(
            next_restart(&pods(&["b", "b", "b"]), 3, Some("b"), Some(&k)),
            RollStep::UpToDate
        );
        assert_eq!(
            next_restart(&pods(&["a", "a", "a"]), 3, None, Some(&k)),
            RollStep::UpToDate,
            "no revision known yet: nothing to compare with"
        );
    }

    #[test]
    fn a_healthy_cluster_restarts_the_highest_outdated_ordinal_first() {
        let k = healthy(&[0, 1, 2]);
        assert_eq!(
            next_restart(&pods(&["a", "a", "a"]), 3, Some("b"), Some(&k)),
            RollStep::Restart(2)
        );
        assert_eq!(
            next_restart(&pods(&["a", "a", "b"]), 3, Some("b"), Some(&k)),
            RollStep::Restart(1)
        );
        assert_eq!(
            next_restart(&pods(&["a", "b", "b"]), 3, Some("b"), Some(&k)),
            RollStep::Restart(0),
            "the voters last"
        );
    }

    #[test]
    fn pods_without_an_added_volume_go_lowest_first() {
        let k = healthy(&[0, 1, 2]);
        let mut lacking = pods(&["a", "a", "a"]);
        for pod in lacking.values_mut() {
            pod.missing_volume = true;
        }
        assert_eq!(
            next_restart(&lacking, 3, Some("b"), Some(&k)),
            RollStep::Restart(0)
        );
        lacking.insert(
            0,
            PodView {
                revision: Some("b".to_string()),
                ready: true,
                terminating: false,
                restart_requested: false,
                missing_volume: false,
            },
        );
        assert_eq!(
            next_restart(&lacking, 3, Some("b"), Some(&k)),
            RollStep::Restart(1)
        );
    }

    #[test]
    fn a_pod_annotated_for_a_restart_is_restarted_like_an_outdated_one() {
        let k = healthy(&[0, 1, 2]);
        let mut asked = pods(&["b", "b", "b"]);
        if let Some(pod) = asked.get_mut(&1) {
            pod.restart_requested = true;
        }
        assert_eq!(
            next_restart(&asked, 3, Some("b"), Some(&k)),
            RollStep::Restart(1)
        );
        if let Some(pod) = asked.get_mut(&2) {
            pod.ready = false;
        }
        waits(
            next_restart(&asked, 3, Some("b"), Some(&k)),
            "waiting for broker 2 to be ready",
        );
    }

    fn waits(step: RollStep, needle: &str) {
        match step {
            RollStep::Wait(why) => assert!(why.contains(needle), "{why}"),
            other => panic!("expected a wait ({needle}), got {other:?}"),
        }
    }

    #[test]
    fn one_pod_at_a_time_each_waiting_for_the_last_to_be_ready() {
        let k = healthy(&[0, 1, 2]);
        let mut p = pods(&["a", "a", "b"]);
        p.get_mut(&2).expect("pod").ready = false;
        waits(
            next_restart(&p, 3, Some("b"), Some(&k)),
            "broker 2 to be ready",
        );
        let mut p = pods(&["a", "a", "a"]);
        p.get_mut(&2).expect("pod").terminating = true;
        waits(next_restart(&p, 3, Some("b"), Some(&k)), "broker 2");
        let mut p = pods(&["a", "a", "b"]);
        p.remove(&2);
        waits(next_restart(&p, 3, Some("b"), Some(&k)), "[2]");
    }

    #[test]
    fn pods_being_deleted_or_leaving_after_a_scale_down_are_never_restarted() {
        let k = healthy(&[0]);
        // Shrunk from 2 to 1: pod 1 is the StatefulSet's to remove, deleted or not yet.
        let mut p = pods(&["b", "a"]);
        assert_eq!(next_restart(&p, 1, Some("b"), Some(&k)), RollStep::UpToDate);
        p.get_mut(&1).expect("pod").terminating = true;
        assert_eq!(next_restart(&p, 1, Some("b"), Some(&k)), RollStep::UpToDate);
        // The only outdated pod is already being deleted: nothing to restart, only to wait.
        let mut p = pods(&["b", "b", "a"]);
        p.get_mut(&2).expect("pod").terminating = true;
        let k = healthy(&[0, 1, 2]);
        assert_eq!(next_restart(&p, 3, Some("b"), Some(&k)), RollStep::UpToDate);
    }

    #[test]
    fn no_restart_while_partitions_are_under_replicated_leaderless_or_moving() {
        let p = pods(&["a", "a", "b"]);
        let mut lagging = healthy(&[0, 1, 2]);
        lagging.state.partitions[3].isr.truncate(1);
        waits(
            next_restart(&p, 3, Some("b"), Some(&lagging)),
            "1 partitions are under-replicated",
        );
        let mut leaderless = healthy(&[0, 1, 2]);
        leaderless.state.partitions[0].leader = -1;
        waits(
            next_restart(&p, 3, Some("b"), Some(&leaderless)),
            "no leader",
        );
        let mut moving = healthy(&[0, 1, 2]);
        moving.reassigning.insert(
            ("orders".to_string(), 1),
            Ongoing {
                replicas: vec![1, 2],
                adding: vec![],
                removing: vec![],
            },
        );
        waits(next_restart(&p, 3, Some("b"), Some(&moving)), "in flight");
        let restarted = healthy(&[0, 1]);
        waits(
            next_restart(&p, 3, Some("b"), Some(&restarted)),
            "brokers [2] have not registered",
        );
        waits(next_restart(&p, 3, Some("b"), None), "to answer");
    }

    #[test]
    fn preferred_leaders_in_sync_that_do_not_lead_are_elected_back() {
        let mut k = healthy(&[0, 1, 2]);
        // Broker 2 restarted: its partitions are led by their second replica.
        for p in &mut k.state.partitions {
            if p.replicas[0] == 2 {
                p.leader = p.replicas[1];
            }
        }
        // One preferred leader is not back in sync yet.
        k.state.partitions[5].leader = 0;
        k.state.partitions[5].isr = vec![0];
        let elections = preferred_elections(&k);
        assert_eq!(elections, [("orders".to_string(), 2)]);
        assert!(preferred_elections(&healthy(&[0, 1, 2])).is_empty());
    }
}
