//! A KafkaCluster's status, computed from what the StatefulSet and pods report. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

use super::roll::{PodView, RollStep, MANUAL_ROLL_ANNOTATION};
use super::scaling::ScalingDecision;
use super::validate::{InvalidCluster, ValidatedCluster};
use crate::balance::step::Health;
use crate::conditions::{self, Wanted, DEGRADED, READY, RECONCILING};
use crate::crd::{BalanceStatus, BrokerStatus, ControllerStatus, KafkaClusterStatus};

/// What Kubernetes reports about the brokers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedBrokers {
    /// Whether the StatefulSet controller has seen the StatefulSet's latest spec.
    pub spec_seen: bool,
    /// Pods the StatefulSet has.
    pub replicas: i32,
    pub ready: i32,
    /// Pods running the StatefulSet's current template.
    pub updated: i32,
    /// Readiness of each pod, by name.
    pub pods: BTreeMap<String, bool>,
    /// The StatefulSet's current revision (`status.updateRevision`).
    pub update_revision: Option<String>,
    /// Each pod of the StatefulSet by ordinal, for rolling restarts.
    pub by_ordinal: BTreeMap<i32, PodView>,
}

impl ObservedBrokers {
    pub fn from_objects(statefulset: &StatefulSet, pods: &[Pod]) -> Self {
        let status = statefulset.status.clone().unwrap_or_default();
        let spec_seen = match (statefulset.metadata.generation, status.observed_generation) {
            (Some(generation), Some(observed)) => observed >= generation,
            _ => false,
        };
        let prefix = format!(
            "{}-",
            statefulset.metadata.name.as_deref().unwrap_or_default()
        );
        let templates: Vec<String> = statefulset
            .spec
            .iter()
            .flat_map(|spec| spec.volume_claim_templates.iter().flatten())
            .filter_map(|claim| claim.metadata.name.clone())
            .collect();
        let mut by_ordinal = BTreeMap::new();
        let pods = pods
            .iter()
            .filter_map(|pod| {
                let name = pod.metadata.name.clone()?;
                let ready = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|conditions| {
                        conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                    });
                if let Some(ordinal) = name
                    .strip_prefix(&prefix)
                    .and_then(|o| o.parse::<i32>().ok())
                {
                    by_ordinal.insert(
                        ordinal,
                        PodView {
                            revision: pod
                                .metadata
                                .labels
                                .as_ref()
                                .and_then(|l| l.get("controller-revision-hash").cloned()),
                            ready,
                            terminating: pod.metadata.deletion_timestamp.is_some(),
                            restart_requested: conditions::annotation_is_true(
                                &pod.metadata,
                                MANUAL_ROLL_ANNOTATION,
                            ),
                            missing_volume: templates.iter().any(|template| {
                                !pod.spec
                                    .iter()
                                    .flat_map(|spec| spec.volumes.iter().flatten())
                                    .any(|volume| volume.name == *template)
                            }),
                        },
                    );
                }
                Some((name, ready))
            })
            .collect();
        Self {
            spec_seen,
            replicas: status.replicas,
            ready: status.ready_replicas.unwrap_or(0),
            updated: status.updated_replicas.unwrap_or(0),
            pods,
            update_revision: status.update_revision,
            by_ordinal,
        }
    }
}

/// The status of a valid cluster. `storage_refused` says why a storage change of the spec is
/// not carried out.
pub fn cluster_status(
    cluster: &ValidatedCluster,
    observed: &ObservedBrokers,
    scaling: &ScalingDecision,
    storage_refused: Option<&str>,
    roll: &RollStep,
    previous: Option<&KafkaClusterStatus>,
    now: Timestamp,
) -> KafkaClusterStatus {
    let wanted = cluster.replicas;
    // Every ready pod counts, those of brokers still draining included.
    let ready = observed.ready;
    let settled = observed.spec_seen && observed.replicas == wanted && observed.updated >= wanted;
    let all_ready = settled && observed.ready >= wanted;
    let progress = format!("{ready}/{wanted} brokers ready");

    let reconciling = if all_ready {
        Wanted::new(RECONCILING, false, "UpToDate", "")
    } else if !observed.spec_seen {
        Wanted::new(
            RECONCILING,
            true,
            "Applying",
            "the StatefulSet controller has not yet seen the latest spec",
        )
    } else if observed.replicas != wanted {
        Wanted::new(
            RECONCILING,
            true,
            "Scaling",
            format!("{} brokers, {wanted} wanted", observed.replicas),
        )
    } else if observed.updated < wanted {
        Wanted::new(
            RECONCILING,
            true,
            "RollingUpdate",
            format!(
                "{}/{wanted} brokers run the current configuration",
                observed.updated
            ),
        )
    } else {
        Wanted::new(RECONCILING, true, "BrokersStarting", progress.clone())
    };
    // Not ready says what is missing, which the count of ready brokers alone may not show
    // (every pod ready, but not yet from the current template).
    let ready_condition = if all_ready {
        Wanted::new(READY, true, "AllBrokersReady", progress)
    } else {
        Wanted::new(READY, false, "BrokersNotReady", reconciling.message.clone())
    };
    let refusals: Vec<(&str, &str)> = [
        scaling
            .refused
            .as_deref()
            .map(|why| ("ScalingRefused", why)),
        storage_refused.map(|why| ("StorageChangeRefused", why)),
    ]
    .into_iter()
    .flatten()
    .collect();
    let degraded = match refusals.first() {
        Some((reason, _)) => Wanted::new(
            DEGRADED,
            true,
            *reason,
            refusals
                .iter()
                .map(|(_, why)| *why)
                .collect::<Vec<_>>()
                .join("; "),
        ),
        None => Wanted::new(DEGRADED, false, "SpecValid", ""),
    };
    let (ready_condition, reconciling) = if let Some(why) = &scaling.refused {
        (
            Wanted::new(READY, false, "ScalingRefused", why.clone()),
            Wanted::new(RECONCILING, false, "ScalingRefused", ""),
        )
    } else if let Some(what) = &scaling.waiting {
        let phase = scaling
            .operation
            .as_ref()
            .map_or("Scaling".to_string(), |op| format!("{:?}", op.phase));
        (
            Wanted::new(READY, false, phase.clone(), what.clone()),
            Wanted::new(RECONCILING, true, phase, what.clone()),
        )
    } else if let Some(what) = match roll {
        RollStep::UpToDate => None,
        RollStep::Restart(ordinal) => Some(format!(
            "restarting broker {ordinal} for the current configuration"
        )),
        RollStep::Wait(why) => Some(why.clone()),
    } {
        (
            Wanted::new(READY, false, "RollingRestart", what.clone()),
            Wanted::new(RECONCILING, true, "RollingRestart", what),
        )
    } else {
        (ready_condition, reconciling)
    };
    // The brokers may all serve, but not as the spec says.
    let ready_condition = match storage_refused {
        Some(why) if scaling.refused.is_none() => {
            Wanted::new(READY, false, "StorageChangeRefused", why)
        }
        _ => ready_condition,
    };

    let previous_conditions = previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let brokers = (0..wanted.max(scaling.statefulset_replicas))
        .map(|ordinal| {
            let pod = cluster.pod_name(ordinal);
            BrokerStatus {
                id: ordinal,
                ready: observed.pods.get(&pod).copied().unwrap_or(false),
                controller: cluster.voters().contains(&ordinal),
                pod,
                replicas: None,
                leaders: None,
            }
        })
        .collect();
    KafkaClusterStatus {
        observed_generation: cluster.generation,
        conditions: conditions::merge(
            previous_conditions,
            &[ready_condition, reconciling, degraded],
            cluster.generation,
            now,
        ),
        replicas: observed.replicas,
        ready_brokers: ready,
        bootstrap: Some(cluster.bootstrap_address()),
        // The reconciler adds them once it knows the node ports.
        listeners: Vec::new(),
        brokers,
        // The reconciler adds them from their own StatefulSet.
        controllers: Vec::new(),
        scaling: scaling.operation.clone(),
        balance: None,
        // The reconciler adds them once it has the CAs.
        certificate_authorities: previous
            .map(|p| p.certificate_authorities.clone())
            .unwrap_or_default(),
    }
}

/// Adds what the brokers report (replicas and leaders per broker, imbalance, lagging and
/// moving partitions) to `status`; without a report, the figures are left out.
pub fn add_balance(status: &mut KafkaClusterStatus, health: Option<&Health>) {
    let Some(health) = health else {
        status.balance = None;
        return;
    };
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    for broker in &mut status.brokers {
        if health.brokers.contains(&broker.id) {
            broker.replicas = health
                .distribution
                .replicas
                .get(&broker.id)
                .map(|n| count(*n));
            broker.leaders = health.leaders.get(&broker.id).map(|n| count(*n));
        }
    }
    status.balance = Some(BalanceStatus {
        replica_imbalance: count(health.distribution.replica_spread()),
        leader_imbalance: count(spread(&health.leaders)),
        under_replicated_partitions: count(health.under_replicated),
        reassignments_in_flight: count(health.reassigning),
    });
}

fn spread(counts: &BTreeMap<i32, usize>) -> usize {
    let min = counts.values().min().copied().unwrap_or(0);
    let max = counts.values().max().copied().unwrap_or(0);
    max - min
}

/// The status of a cluster whose spec is invalid: what was observed before stays, the
/// conditions say why nothing is being changed.
pub fn invalid_status(
    invalid: &InvalidCluster,
    generation: Option<i64>,
    previous: Option<&KafkaClusterStatus>,
    now: Timestamp,
) -> KafkaClusterStatus {
    let message = invalid.to_string();
    let previous = previous.cloned().unwrap_or_default();
    KafkaClusterStatus {
        observed_generation: generation,
        conditions: conditions::merge(
            &previous.conditions,
            &[
                Wanted::new(READY, false, "InvalidSpec", message.clone()),
                Wanted::new(
                    RECONCILING,
                    false,
                    "InvalidSpec",
                    "waiting for the spec to be corrected",
                ),
                Wanted::new(DEGRADED, true, "InvalidSpec", message),
            ],
            generation,
            now,
        ),
        ..previous
    }
}

/// The status while the load balancers of `services` have no address yet: the brokers are
/// not configured before they know what to advertise. The generation is not marked observed.
pub fn waiting_for_load_balancers(
    services: &[String],
    previous: Option<&KafkaClusterStatus>,
    now: Timestamp,
) -> KafkaClusterStatus {
    let previous = previous.cloned().unwrap_or_default();
    let message = format!(
        "waiting for the load balancer addresses of Services {}",
        services.join(", ")
    );
    let generation = previous.observed_generation;
    KafkaClusterStatus {
        conditions: conditions::merge(
            &previous.conditions,
            &[
                Wanted::new(READY, false, "WaitingForLoadBalancer", message.clone()),
                Wanted::new(RECONCILING, true, "WaitingForLoadBalancer", message),
                Wanted::new(DEGRADED, false, "SpecValid", ""),
            ],
            generation,
            now,
        ),
        ..previous
    }
}

/// The status after a reconciliation that failed: what the cluster had, with `Ready` false and
/// `Degraded` true saying why while the operator retries with back-off. The generation is not
/// marked observed: it has not been carried out.
pub fn failed_status(
    reason: &str,
    message: &str,
    generation: Option<i64>,
    previous: Option<&KafkaClusterStatus>,
    now: Timestamp,
) -> KafkaClusterStatus {
    let previous = previous.cloned().unwrap_or_default();
    KafkaClusterStatus {
        conditions: conditions::merge(
            &previous.conditions,
            &[
                Wanted::new(READY, false, reason, message),
                Wanted::new(RECONCILING, true, "Retrying", "retrying with back-off"),
                Wanted::new(DEGRADED, true, reason, message),
            ],
            generation,
            now,
        ),
        ..previous
    }
}

/// Adds the dedicated controllers (`observed` from their StatefulSet and pods) to `status`. A
/// cluster whose controllers are not all ready from the current template is not ready:
/// `Ready` turns false with reason `ControllersNotReady`.
pub fn add_controllers(
    status: &mut KafkaClusterStatus,
    cluster: &ValidatedCluster,
    observed: &ObservedBrokers,
    previous: Option<&KafkaClusterStatus>,
    now: Timestamp,
) {
    let Some(pool) = &cluster.controllers else {
        return;
    };
    status.controllers = pool
        .ids()
        .map(|id| {
            let pod = cluster.pod_name(id);
            ControllerStatus {
                id,
                ready: observed.pods.get(&pod).copied().unwrap_or(false),
                pod,
            }
        })
        .collect();
    let wanted = pool.replicas;
    let why = if !observed.spec_seen || observed.replicas != wanted || observed.updated < wanted {
        format!(
            "{}/{wanted} controllers run the current configuration",
            observed.updated.min(observed.replicas)
        )
    } else if observed.ready < wanted {
        format!("{}/{wanted} controllers ready", observed.ready)
    } else {
        return;
    };
    const REASON: &str = "ControllersNotReady";
    let since = previous
        .and_then(|p| p.conditions.iter().find(|c| c.type_ == READY))
        .filter(|c| c.status == "False" && c.reason == REASON)
        .map(|c| c.last_transition_time.clone());
    if let Some(ready) = status
        .conditions
        .iter_mut()
        .find(|c| c.type_ == READY && c.status == "True")
    {
        ready.status = "False".to_string();
        ready.reason = REASON.to_string();
        ready.message = why;
        ready.last_transition_time =
            since.unwrap_or(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
    }
}

/// A cluster whose pods all say ready but whose brokers the operator cannot reach is not
/// ready: `Ready` turns false with reason `BrokersUnreachable` and `why`.
pub fn mark_unreachable(status: &mut KafkaClusterStatus, why: &str, now: Timestamp) {
    if let Some(ready) = status
        .conditions
        .iter_mut()
        .find(|c| c.type_ == READY && c.status == "True")
    {
        ready.status = "False".to_string();
        ready.reason = "BrokersUnreachable".to_string();
        ready.message = why.to_string();
        ready.last_transition_time = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::validate::{validate, OperatorSettings};
    use crate::conditions::{is_true, reason};
    use crate::test_support::{cluster, MINIMAL_CLUSTER};

    fn valid() -> ValidatedCluster {
        validate(&cluster(MINIMAL_CLUSTER), &OperatorSettings::default()).expect("valid")
    }

    fn steady() -> ScalingDecision {
        ScalingDecision::steady(3)
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).expect("time")
    }

    fn observed(replicas: i32, ready: i32, updated: i32, spec_seen: bool) -> ObservedBrokers {
        ObservedBrokers {
            spec_seen,
            replicas,
            ready,
            updated,
            pods: (0..replicas)
                .map(|i| (format!("main-{i}"), i < ready))
                .collect(),
            ..ObservedBrokers::default()
        }
    }

    /// Three brokers, all ready and up to date.
    fn ready_status() -> KafkaClusterStatus {
        cluster_status(
            &valid(),
            &observed(3, 3, 3, true),
            &steady(),
            None,
            &RollStep::UpToDate,
            None,
            now(),
        )
    }

    #[test]
    fn a_cluster_with_every_broker_ready_is_ready() {
        let status = ready_status();
        assert!(is_true(&status.conditions, READY));
        assert!(!is_true(&status.conditions, RECONCILING));
        assert!(!is_true(&status.conditions, DEGRADED));
        assert_eq!(status.ready_brokers, 3);
        assert_eq!(status.observed_generation, Some(4));
        assert_eq!(
            status.bootstrap.as_deref(),
            Some("main-bootstrap.streaming.svc:9092")
        );
        assert_eq!(status.brokers.len(), 3);
        assert!(status.brokers.iter().all(|b| b.ready && b.controller));
    }

    #[test]
    fn unreachable_brokers_make_a_ready_cluster_not_ready() {
        let mut status = ready_status();
        let later = Timestamp::from_second(1_700_000_100).expect("time");
        mark_unreachable(&mut status, "connection refused", later);
        assert!(!is_true(&status.conditions, READY));
        assert_eq!(
            reason(&status.conditions, READY),
            Some("BrokersUnreachable")
        );
        let ready = status.conditions.iter().find(|c| c.type_ == READY);
        assert_eq!(
            ready.map(|c| c.message.as_str()),
            Some("connection refused")
        );
        assert_eq!(ready.map(|c| c.last_transition_time.0), Some(later));

        let mut starting = cluster_status(
            &valid(),
            &observed(3, 1, 3, true),
            &steady(),
            None,
            &RollStep::UpToDate,
            None,
            now(),
        );
        let before = starting.clone();
        mark_unreachable(&mut starting, "connection refused", later);
        assert_eq!(starting, before, "a cluster not ready keeps its own reason");
    }

    #[test]
    fn waiting_for_load_balancers_names_them_and_keeps_what_was_observed() {
        let ready = ready_status();
        let services = [
            "main-cloud-bootstrap".to_string(),
            "main-cloud-2".to_string(),
        ];
        let waiting = waiting_for_load_balancers(&services, Some(&ready), now());
        assert!(!is_true(&waiting.conditions, READY));
        assert!(is_true(&waiting.conditions, RECONCILING));
        assert!(!is_true(&waiting.conditions, DEGRADED));
        assert_eq!(
            reason(&waiting.conditions, READY),
            Some("WaitingForLoadBalancer")
        );
        let message = &waiting.conditions[0].message;
        assert!(
            message.contains("main-cloud-bootstrap, main-cloud-2"),
            "{message}"
        );
        assert_eq!(waiting.observed_generation, ready.observed_generation);
        assert_eq!(waiting.brokers, ready.brokers);
    }

    #[test]
    fn a_failed_reconciliation_is_degraded_and_keeps_what_was_observed() {
        let ready = ready_status();
        let failed = failed_status(
            "ApplyFailed",
            "cannot apply StatefulSet streaming/main: forbidden",
            Some(5),
            Some(&ready),
            now(),
        );
        assert!(!is_true(&failed.conditions, READY));
        assert!(is_true(&failed.conditions, DEGRADED));
        assert!(is_true(&failed.conditions, RECONCILING));
        assert_eq!(reason(&failed.conditions, DEGRADED), Some("ApplyFailed"));
        assert_eq!(
            failed.observed_generation, ready.observed_generation,
            "generation 5 was not carried out"
        );
        assert_eq!(failed.brokers, ready.brokers);
        assert_eq!(failed.bootstrap, ready.bootstrap);
    }

    #[test]
    fn a_starting_cluster_is_reconciling_with_per_broker_state() {
        let status = cluster_status(
            &valid(),
            &observed(3, 1, 3, true),
            &steady(),
            None,
            &RollStep::UpToDate,
            None,
            now(),
        );
        assert!(!is_true(&status.conditions, READY));
        assert_eq!(
            reason(&status.conditions, RECONCILING),
            Some("BrokersStarting")
        );
        assert_eq!(status.conditions[0].message, "1/3 brokers ready");
        let ready: Vec<bool> = status.brokers.iter().map(|b| b.ready).collect();
        assert_eq!(ready, [true, false, false]);
    }

    #[test]
    fn a_rolling_update_and_a_scale_are_named() {
        let rolling = cluster_status(
            &valid(),
            &observed(3, 3, 1, true),
            &steady(),
            None,
            &RollStep::UpToDate,
            None,
            now(),
        );
        assert_eq!(
            reason(&rolling.conditions, RECONCILING),
            Some("RollingUpdate")
        );
        assert!(!is_true(&rolling.conditions, READY));
        assert_eq!(
            rolling.conditions[0].message, "1/3 brokers run the current configuration",
            "not ready says why, not \"3/3 brokers ready\""
        );
        let scaling = cluster_status(
            &valid(),
            &observed(2, 2, 2, true),
            &steady(),
            None,
            &RollStep::UpToDate,
            None,
            now(),
        );
        assert_eq!(reason(&scaling.conditions, RECONCILING), Some("Scaling"));
        let unseen = cluster_status(
            &valid(),
            &observed(3, 3, 3, false),
            &steady(),
            None,
            &RollStep::UpToDate,
            None,
            now(),
        );
        assert_eq!(reason(&unseen.conditions, RECONCILING), Some("Applying"));
        assert!(
            unseen.conditions[0]
                .message
                .contains("not yet seen the latest spec"),
            "{}",
            unseen.conditions[0].message
        );
    }

    #[test]
    fn every_ready_broker_is_counted() {
        let draining = ScalingDecision {
            waiting: Some("draining brokers [3, 4] before removing them".to_string()),
            ..ScalingDecision::steady(5)
        };
        let status = cluster_status(
            &valid(),
            &observed(5, 5, 5, true),
            &draining,
            None,
            &RollStep::UpToDate,
            None,
            now(),
        );
        assert_eq!(status.ready_brokers, 5, "not capped at the 3 wanted");
    }

    #[test]
    fn a_refused_scale_down_is_degraded_and_a_drain_is_reconciling() {
        let refused = ScalingDecision {
            refused: Some("cannot remove brokers [3, 4]: topic `orders`".to_string()),
            ..ScalingDecision::steady(5)
        };
        let status = cluster_status(
            &valid(),
            &observed(5, 5, 5, true),
            &refused,
            None,
            &RollStep::UpToDate,
            None,
            now(),
        );
        assert!(is_true(&status.conditions, DEGRADED));
        assert_eq!(reason(&status.conditions, READY), Some("ScalingRefused"));
        assert!(status.conditions[2].message.contains("`orders`"));
        assert_eq!(
            status.brokers.len(),
            5,
            "the brokers still running are listed"
        );

        let draining = ScalingDecision {
            operation: Some(crate::crd::ScalingStatus {
                from: 5,
                to: 3,
                phase: crate::crd::ScalingPhase::Draining,
                reassignments_in_flight: 2,
                reassignments_pending: 7,
                reassignments_submitted: 2,
            }),
            waiting: Some("draining brokers [3, 4] before removing them".to_string()),
            ..ScalingDecision::steady(5)
        };
        let status = cluster_status(
            &valid(),
            &observed(5, 5, 5, true),
            &draining,
            None,
            &RollStep::UpToDate,
            None,
            now(),
        );
        assert!(!is_true(&status.conditions, READY));
        assert!(!is_true(&status.conditions, DEGRADED));
        assert_eq!(reason(&status.conditions, RECONCILING), Some("Draining"));
        assert_eq!(
            status
                .scaling
                .map(|s| (s.reassignments_in_flight, s.reassignments_pending)),
            Some((2, 7))
        );
    }

    #[test]
    fn a_roll_in_progress_is_reconciling_and_not_ready() {
        let waiting = RollStep::Wait(
            "2 brokers to restart; waiting: 1 partitions are under-replicated".to_string(),
        );
        let status = cluster_status(
            &valid(),
            &observed(3, 3, 1, true),
            &steady(),
            None,
            &waiting,
            None,
            now(),
        );
        assert!(!is_true(&status.conditions, READY));
        assert_eq!(
            reason(&status.conditions, RECONCILING),
            Some("RollingRestart")
        );
        assert!(status.conditions[1].message.contains("under-replicated"));
        let restarting = cluster_status(
            &valid(),
            &observed(3, 3, 1, true),
            &steady(),
            None,
            &RollStep::Restart(2),
            None,
            now(),
        );
        assert!(restarting.conditions[1]
            .message
            .contains("restarting broker 2"));
    }

    #[test]
    fn the_brokers_report_adds_replicas_leaders_and_imbalance() {
        let mut status = ready_status();
        let health = Health {
            brokers: [0, 1].into(),
            under_replicated: 1,
            offline: 0,
            reassigning: 2,
            distribution: crate::balance::Distribution {
                replicas: [(0, 5), (1, 2)].into(),
                leaders: [(0, 3), (1, 1)].into(),
            },
            leaders: [(0, 4), (1, 1)].into(),
        };
        add_balance(&mut status, Some(&health));
        assert_eq!(
            status.balance,
            Some(BalanceStatus {
                replica_imbalance: 3,
                leader_imbalance: 3,
                under_replicated_partitions: 1,
                reassignments_in_flight: 2,
            })
        );
        assert_eq!(
            (status.brokers[0].replicas, status.brokers[0].leaders),
            (Some(5), Some(4))
        );
        assert_eq!(
            (status.brokers[2].replicas, status.brokers[2].leaders),
            (None, None),
            "broker 2 has not registered"
        );
        add_balance(&mut status, None);
        assert_eq!(status.balance, None);
    }

    #[test]
    fn observed_brokers_come_from_the_statefulset_and_pod_conditions() {
        let sts: StatefulSet = serde_yaml::from_str(
            "metadata: {name: main, generation: 2}\nstatus: {replicas: 3, readyReplicas: 2, updatedReplicas: 3, observedGeneration: 2, updateRevision: main-7d9}\n",
        )
        .expect("sts");
        let pods: Vec<Pod> = serde_yaml::from_str(
            "- metadata: {name: main-0, labels: {controller-revision-hash: main-7d9}}\n  status: {conditions: [{type: Ready, status: \"True\"}]}\n- metadata: {name: main-1, labels: {controller-revision-hash: main-5c1}, deletionTimestamp: \"2026-01-01T00:00:00Z\"}\n  status: {conditions: [{type: Ready, status: \"False\"}]}\n",
        )
        .expect("pods");
        let observed = ObservedBrokers::from_objects(&sts, &pods);
        assert!(observed.spec_seen);
        assert_eq!(
            (observed.replicas, observed.ready, observed.updated),
            (3, 2, 3)
        );
        assert!(observed.pods["main-0"]);
        assert!(!observed.pods["main-1"]);
        assert_eq!(observed.update_revision.as_deref(), Some("main-7d9"));
        assert_eq!(
            observed.by_ordinal[&0],
            PodView {
                revision: Some("main-7d9".to_string()),
                ready: true,
                terminating: false,
                restart_requested: false,
                missing_volume: false,
            }
        );
        assert!(observed.by_ordinal[&1].terminating);
        assert_eq!(
            observed.by_ordinal[&1].revision.as_deref(),
            Some("main-5c1")
        );
    }

    #[test]
    fn an_invalid_spec_is_degraded_and_keeps_what_was_observed() {
        let previous = ready_status();
        let invalid = InvalidCluster {
            problems: vec!["spec.replicas is 0".to_string()],
        };
        let status = invalid_status(&invalid, Some(5), Some(&previous), now());
        assert_eq!(status.observed_generation, Some(5));
        assert!(is_true(&status.conditions, DEGRADED));
        assert!(!is_true(&status.conditions, READY));
        assert_eq!(reason(&status.conditions, READY), Some("InvalidSpec"));
        assert_eq!(status.conditions[2].message, "spec.replicas is 0");
        assert_eq!(status.ready_brokers, 3);
        assert_eq!(status.brokers, previous.brokers);
    }
}
