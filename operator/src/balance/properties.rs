//! Property tests of the planners over random clusters: replication factors kept, racks
//! respected, balanced within one, no more moves than the counts require, and a balanced
//! cluster planned again gives nothing to do.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::sample::subsequence;

use super::*;

/// How racks are laid out in a generated cluster.
#[derive(Debug, Clone, Copy)]
enum Racks {
    None,
    /// `n` racks of equal size (brokers assigned round-robin).
    Even(usize),
    /// Any rack for any broker, among `n`.
    Uneven(usize),
}

/// A cluster whose `old` first brokers hold every replica (as before a scale-up), with
/// `new` more brokers that hold nothing.
fn cluster(racks: Racks) -> impl Strategy<Value = ClusterState> {
    let sizes = match racks {
        // With even racks old and new brokers come in whole rows of racks.
        Racks::Even(n) => (1usize..=3, 0usize..=1)
            .prop_map(move |(old, new)| (n * old, n * new))
            .boxed(),
        _ => (1usize..=7, 0usize..=3).boxed(),
    };
    (sizes, proptest::collection::vec(0usize..4, 12))
        .prop_flat_map(move |((old, new), rack_choice)| {
            let total = old + new;
            let brokers: Vec<BrokerInfo> = (0..total)
                .map(|i| BrokerInfo {
                    id: i32::try_from(i).unwrap_or(0) + 1,
                    rack: match racks {
                        Racks::None => None,
                        Racks::Even(n) => Some(format!("r{}", i % n)),
                        Racks::Uneven(n) => Some(format!("r{}", rack_choice[i % 12] % n)),
                    },
                })
                .collect();
            let old_ids: Vec<i32> = brokers.iter().take(old).map(|b| b.id).collect();
            let topic = (1usize..=10, 1usize..=old.min(3)).prop_flat_map({
                let old_ids = old_ids.clone();
                move |(partitions, rf)| {
                    proptest::collection::vec(
                        (subsequence(old_ids.clone(), rf).prop_shuffle(), 0usize..rf),
                        partitions,
                    )
                }
            });
            (Just(brokers), proptest::collection::vec(topic, 1..=4))
        })
        .prop_map(|(brokers, topics)| {
            let mut partitions = Vec::new();
            for (t, topic) in topics.into_iter().enumerate() {
                for (p, (replicas, leader)) in topic.into_iter().enumerate() {
                    partitions.push(PartitionInfo {
                        topic: format!("topic-{t}"),
                        partition: i32::try_from(p).unwrap_or(0),
                        leader: replicas[leader],
                        isr: replicas.clone(),
                        replicas,
                    });
                }
            }
            ClusterState {
                brokers,
                partitions,
            }
        })
}

fn any_racks() -> impl Strategy<Value = Racks> {
    prop_oneof![
        Just(Racks::None),
        (1usize..=3).prop_map(Racks::Even),
        (1usize..=3).prop_map(Racks::Uneven),
    ]
}

fn rack_of(state: &ClusterState) -> BTreeMap<i32, String> {
    state
        .brokers
        .iter()
        .map(|b| {
            (
                b.id,
                b.rack.clone().unwrap_or_else(|| format!("own-{}", b.id)),
            )
        })
        .collect()
}

/// Every partition spans `min(rf, racks among targets)` racks.
fn check_racks(state: &ClusterState, targets: &BTreeSet<i32>) -> Result<(), TestCaseError> {
    let racks = rack_of(state);
    let available = targets
        .iter()
        .filter_map(|id| racks.get(id))
        .collect::<BTreeSet<_>>()
        .len();
    for p in &state.partitions {
        let spanned = p
            .replicas
            .iter()
            .filter_map(|id| racks.get(id))
            .collect::<BTreeSet<_>>()
            .len();
        prop_assert!(
            spanned >= p.replicas.len().min(available),
            "{}-{} {:?} spans {spanned} of {available} racks",
            p.topic,
            p.partition,
            p.replicas
        );
    }
    Ok(())
}

/// Replication factors kept, replicas distinct and on targets only.
fn check_replicas(
    before: &ClusterState,
    after: &ClusterState,
    targets: &BTreeSet<i32>,
) -> Result<(), TestCaseError> {
    for (b, a) in before.partitions.iter().zip(&after.partitions) {
        prop_assert_eq!(
            b.replicas.len(),
            a.replicas.len(),
            "{}-{}",
            a.topic,
            a.partition
        );
        let distinct: BTreeSet<_> = a.replicas.iter().collect();
        prop_assert_eq!(distinct.len(), a.replicas.len(), "{:?}", a.replicas);
        prop_assert!(
            a.replicas.iter().all(|r| targets.contains(r)),
            "{}-{} {:?} outside {:?}",
            a.topic,
            a.partition,
            a.replicas,
            targets
        );
    }
    Ok(())
}

fn is_rack_valid(state: &ClusterState) -> bool {
    check_racks(state, &state.broker_ids()).is_ok()
}

/// The fewest new replicas that can bring every target within one of the others and empty
/// every other broker: the c busiest targets may keep ceil(mean), the rest floor(mean).
fn fewest_moves(state: &ClusterState, targets: &BTreeSet<i32>) -> usize {
    let mut load: BTreeMap<i32, usize> = targets.iter().map(|t| (*t, 0)).collect();
    for p in &state.partitions {
        for r in &p.replicas {
            *load.entry(*r).or_default() += 1;
        }
    }
    let total: usize = load.values().sum();
    let floor = total / targets.len();
    let extra = total % targets.len();
    let mut target_loads: Vec<usize> = targets.iter().map(|t| load[t]).collect();
    target_loads.sort_unstable_by(|a, b| b.cmp(a));
    let on_targets: usize = target_loads
        .iter()
        .enumerate()
        .map(|(i, l)| l.saturating_sub(if i < extra { floor + 1 } else { floor }))
        .sum();
    let elsewhere: usize = load
        .iter()
        .filter(|(id, _)| !targets.contains(id))
        .map(|(_, l)| l)
        .sum();
    on_targets + elsewhere
}

/// Replica moves: exactly `fewest` when reordering can balance the leaders afterwards;
/// otherwise at most two more per leadership that reordering could not place (a preferred
/// leader's replica moved, and a follower moved back).
fn check_fewest_moves(
    state: &ClusterState,
    targets: &BTreeSet<i32>,
    plan: &Plan,
    fewest: usize,
) -> Result<(), TestCaseError> {
    let moves = plan.replica_moves();
    let excess = leaders_reordering_cannot_place(state, targets);
    if excess == 0 {
        prop_assert_eq!(moves, fewest);
    } else {
        prop_assert!(
            moves >= fewest && moves <= fewest + 2 * excess,
            "{moves} moves, {fewest} for replicas, {excess} leaders to place"
        );
    }
    Ok(())
}

/// Preferred leaderships reordering alone cannot place after the replica moves (beyond
/// ceil(mean) on some broker, or missing below floor(mean) on another): those need replica
/// moves.
fn leaders_reordering_cannot_place(state: &ClusterState, targets: &BTreeSet<i32>) -> usize {
    let mut layout = layout::Layout::new(state, targets, |_| true);
    layout.spread_racks();
    layout.flow_moves();
    layout.evacuate();
    layout.spread_racks();
    layout.balance_replicas();
    layout.balance_leaders();
    if layout.leader_spread() <= 1 {
        return 0;
    }
    let leaders: Vec<usize> = targets.iter().map(|t| layout.leaders_on(*t)).collect();
    let total: usize = leaders.iter().sum();
    let ceil = total.div_ceil(targets.len());
    let floor = total / targets.len();
    let above: usize = leaders.iter().map(|l| l.saturating_sub(ceil)).sum();
    let below: usize = leaders.iter().map(|l| floor.saturating_sub(*l)).sum();
    above.max(below).max(1)
}

/// The plan's moves start from the state as it is.
fn check_moves_start_from(state: &ClusterState, plan: &Plan) -> Result<(), TestCaseError> {
    let current: BTreeMap<(&str, i32), &Vec<i32>> = state
        .partitions
        .iter()
        .map(|p| ((p.topic.as_str(), p.partition), &p.replicas))
        .collect();
    for m in &plan.moves {
        prop_assert_eq!(
            Some(&&m.from),
            current.get(&(m.topic.as_str(), m.partition))
        );
        prop_assert_ne!(&m.from, &m.to);
    }
    Ok(())
}

proptest! {
    // PROPTEST_CASES=5000 for a longer search.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(400),
        max_global_rejects: 100_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn scale_up_keeps_replication_factors_and_racks_and_balances_within_one(
        state in any_racks().prop_flat_map(cluster)
    ) {
        let plan = scale_up(&state).expect("a plan");
        check_moves_start_from(&state, &plan)?;
        let after = plan.apply(&state);
        let targets = state.broker_ids();
        check_replicas(&state, &after, &targets)?;
        check_racks(&after, &targets)?;
        let uneven = state.brokers.iter().any(|b| b.rack.is_some())
            && !even_racks(&state);
        if !uneven {
            let d = after.distribution(None);
            prop_assert!(d.replica_spread() <= 1, "replicas {:?}", d.replicas);
            prop_assert!(d.leader_spread() <= 1, "leaders {:?}", d.leaders);
        }
        // Replanning the result: nothing left to do.
        let again = scale_up(&after).expect("a plan");
        prop_assert!(again.is_empty(), "second plan {:?}", again);
    }

    #[test]
    fn scale_up_without_racks_moves_the_fewest_replicas(
        state in cluster(Racks::None)
    ) {
        let plan = scale_up(&state).expect("a plan");
        let targets = state.broker_ids();
        // Every broker above its share holds a partition any broker below it lacks, so the
        // count bound is reachable.
        check_fewest_moves(&state, &targets, &plan, fewest_moves(&state, &targets))?;
    }

    #[test]
    fn drain_and_scale_up_of_small_clusters_move_the_fewest_replicas(
        (state, leaving) in small_cluster().prop_flat_map(|state| {
            let ids: Vec<i32> = state.broker_ids().into_iter().collect();
            let count = ids.len();
            (Just(state), subsequence(ids, 0..count))
        })
    ) {
        let targets: BTreeSet<i32> = state
            .broker_ids()
            .into_iter()
            .filter(|id| !leaving.contains(id))
            .collect();
        if let Ok(plan) = drain(&state, &leaving) {
            let fewest = exact_fewest_moves(&state, &targets).expect("a balanced layout exists");
            check_fewest_moves(&state, &targets, &plan, fewest)?;
        }
    }

    #[test]
    fn scale_up_with_racks_moves_at_most_twice_the_fewest_replicas(
        state in (1usize..=3).prop_map(Racks::Even).prop_flat_map(cluster)
    ) {
        prop_assume!(is_rack_valid(&state));
        let plan = scale_up(&state).expect("a plan");
        let targets = state.broker_ids();
        // A move the counts want may break a partition's rack spread, and then takes a
        // detour through a third broker.
        let twice = 2 * fewest_moves(&state, &targets);
        let leaders = leaders_reordering_cannot_place(&state, &targets);
        prop_assert!(
            plan.replica_moves() <= twice + 2 * leaders,
            "{} moves, {} for replicas, {} leaders to place", plan.replica_moves(), twice, leaders
        );
    }

    #[test]
    fn planning_a_balanced_cluster_is_a_no_op(
        state in any_racks().prop_flat_map(cluster)
    ) {
        let balanced = scale_up(&state).expect("a plan").apply(&state);
        prop_assert!(scale_up(&balanced).expect("a plan").is_empty());
        prop_assert!(balance_leaders(&balanced).is_empty());
        prop_assert!(rebalance(&balanced, None, &[]).expect("a plan").is_empty());
    }

    #[test]
    fn drain_empties_the_leaving_brokers_or_says_why_it_cannot(
        (state, leaving) in any_racks().prop_flat_map(cluster).prop_flat_map(|state| {
            let ids: Vec<i32> = state.broker_ids().into_iter().collect();
            let count = ids.len();
            (Just(state), subsequence(ids, 0..count))
        })
    ) {
        let targets: BTreeSet<i32> = state
            .broker_ids()
            .into_iter()
            .filter(|id| !leaving.contains(id))
            .collect();
        let widest = state.partitions.iter().map(|p| p.replicas.len()).max().unwrap_or(0);
        match drain(&state, &leaving) {
            Ok(plan) => {
                prop_assert!(widest <= targets.len());
                check_moves_start_from(&state, &plan)?;
                let after = plan.apply(&state);
                check_replicas(&state, &after, &targets)?;
                check_racks(&after, &targets)?;
                if state.brokers.iter().all(|b| b.rack.is_none()) {
                    let d = after.distribution(Some(&targets));
                    prop_assert!(d.replica_spread() <= 1, "replicas {:?}", d.replicas);
                    prop_assert!(d.leader_spread() <= 1, "leaders {:?}", d.leaders);
                    prop_assert!(plan.replica_moves() >= fewest_moves(&state, &targets));
                }
                prop_assert!(drain(&after, &leaving).expect("a plan").is_empty());
            }
            Err(PlanError::ReplicationFactorExceedsBrokers { replication_factor, remaining, .. }) => {
                prop_assert!(replication_factor > remaining);
                prop_assert_eq!(remaining, targets.len());
                prop_assert!(widest > targets.len());
            }
            Err(PlanError::NoBrokers) => prop_assert!(targets.is_empty()),
            Err(other) => prop_assert!(false, "unexpected {other}"),
        }
    }

    #[test]
    fn leader_balancing_only_reorders_and_is_stable(
        state in any_racks().prop_flat_map(cluster)
    ) {
        let plan = balance_leaders(&state);
        prop_assert!(plan.moves.iter().all(Move::is_reorder));
        prop_assert_eq!(plan.replica_moves(), 0);
        let after = plan.apply(&state);
        prop_assert!(
            after.distribution(None).leader_spread()
                <= state.distribution(None).leader_spread().max(1)
        );
        for p in &after.partitions {
            prop_assert_eq!(p.leader, p.replicas[0]);
        }
        prop_assert!(balance_leaders(&after).is_empty());
    }

    #[test]
    fn leader_balancing_of_balanced_replicas_ends_within_one(
        state in cluster(Racks::None)
    ) {
        // Balanced replicas, then scrambled preferred leaders: only the order is left to fix.
        let mut balanced = scale_up(&state).expect("a plan").apply(&state);
        for (i, p) in balanced.partitions.iter_mut().enumerate() {
            let len = p.replicas.len();
            p.replicas.rotate_left(i % len);
        }
        let after = balance_leaders(&balanced).apply(&balanced);
        let d = after.distribution(None);
        prop_assert!(d.leader_spread() <= 1, "leaders {:?}", d.leaders);
        prop_assert_eq!(d.replicas, balanced.distribution(None).replicas);
    }

    #[test]
    fn new_partitions_keep_a_balanced_cluster_balanced(
        (state, count, rf) in cluster(Racks::None).prop_flat_map(|state| {
            let brokers = state.brokers.len();
            (Just(state), 1usize..=12, 1usize..=brokers.min(3))
        })
    ) {
        let balanced = scale_up(&state).expect("a plan").apply(&state);
        let placed = place_partitions(&balanced, "new", count, rf).expect("placed");
        prop_assert_eq!(placed.len(), count);
        let mut after = balanced.clone();
        for (i, replicas) in placed.into_iter().enumerate() {
            let distinct: BTreeSet<_> = replicas.iter().collect();
            prop_assert_eq!(distinct.len(), rf);
            after.partitions.push(PartitionInfo {
                topic: "new".into(),
                partition: i32::try_from(i).unwrap_or(0),
                leader: replicas[0],
                isr: replicas.clone(),
                replicas,
            });
        }
        let d = after.distribution(None);
        prop_assert!(d.replica_spread() <= 1, "replicas {:?}", d.replicas);
        // Existing partitions stay as they are, which may leave no way to within one.
        prop_assert!(d.leader_spread() <= 2, "leaders {:?}", d.leaders);
    }

    #[test]
    fn new_partitions_span_racks(
        (state, count, rf) in any_racks().prop_flat_map(cluster).prop_flat_map(|state| {
            let brokers = state.brokers.len();
            (Just(state), 1usize..=12, 1usize..=brokers.min(4))
        })
    ) {
        let placed = place_partitions(&state, "new", count, rf).expect("placed");
        let mut after = state.clone();
        after.partitions = placed
            .into_iter()
            .enumerate()
            .map(|(i, replicas)| PartitionInfo {
                topic: "new".into(),
                partition: i32::try_from(i).unwrap_or(0),
                leader: replicas[0],
                isr: replicas.clone(),
                replicas,
            })
            .collect();
        prop_assert!(after.partitions.iter().all(|p| p.replicas.len() == rf));
        check_racks(&after, &state.broker_ids())?;
    }

    #[test]
    fn replication_factor_changes_touch_only_the_topic_and_keep_racks(
        (state, rf) in any_racks().prop_flat_map(cluster).prop_flat_map(|state| {
            let brokers = state.brokers.len();
            (Just(state), 1usize..=brokers.min(4))
        })
    ) {
        let plan = change_replication_factor(&state, "topic-0", rf).expect("a plan");
        check_moves_start_from(&state, &plan)?;
        prop_assert!(plan.moves.iter().all(|m| m.topic == "topic-0"));
        let after = plan.apply(&state);
        for p in after.partitions.iter().filter(|p| p.topic == "topic-0") {
            prop_assert_eq!(p.replicas.len(), rf);
            let distinct: BTreeSet<_> = p.replicas.iter().collect();
            prop_assert_eq!(distinct.len(), rf);
        }
        let topic_only = ClusterState {
            brokers: after.brokers.clone(),
            partitions: after
                .partitions
                .iter()
                .filter(|p| p.topic == "topic-0")
                .cloned()
                .collect(),
        };
        check_racks(&topic_only, &state.broker_ids())?;
        prop_assert!(change_replication_factor(&after, "topic-0", rf).expect("a plan").is_empty());
    }

    #[test]
    fn replication_factor_changes_of_a_single_topic_cluster_stay_within_one(
        (state, rf) in cluster(Racks::None).prop_flat_map(|state| {
            let brokers = state.brokers.len();
            (Just(state), 1usize..=brokers.min(4))
        })
    ) {
        // With other topics in place, only moving them could even out what the change
        // exposes; that is `rebalance`'s job.
        let mut state = state;
        state.partitions.retain(|p| p.topic == "topic-0");
        let balanced = scale_up(&state).expect("a plan").apply(&state);
        let after = change_replication_factor(&balanced, "topic-0", rf)
            .expect("a plan")
            .apply(&balanced);
        prop_assert!(after.distribution(None).replica_spread() <= 1);
    }
}

/// Up to five brokers and six partitions anywhere on them: small enough to try every layout.
fn small_cluster() -> impl Strategy<Value = ClusterState> {
    (1usize..=5).prop_flat_map(|n| {
        let ids: Vec<i32> = (1..=i32::try_from(n).unwrap_or(1)).collect();
        let replica_list = (1usize..=n.min(3)).prop_flat_map({
            let ids = ids.clone();
            move |rf| subsequence(ids.clone(), rf).prop_shuffle()
        });
        (Just(ids), proptest::collection::vec(replica_list, 1..=6)).prop_map(|(ids, lists)| {
            ClusterState {
                brokers: brokers(&ids),
                partitions: lists
                    .into_iter()
                    .enumerate()
                    .map(|(i, replicas)| partition("t", i32::try_from(i).unwrap_or(0), &replicas))
                    .collect(),
            }
        })
    })
}

/// The fewest replica moves that put every partition on distinct targets with every target
/// within one of the others, found by trying every layout; `None` when there is none.
fn exact_fewest_moves(state: &ClusterState, targets: &BTreeSet<i32>) -> Option<usize> {
    let targets: Vec<i32> = targets.iter().copied().collect();
    let total: usize = state.partitions.iter().map(|p| p.replicas.len()).sum();
    let floor = total / targets.len();
    let extra = total % targets.len();
    let subsets: Vec<Vec<i32>> = (0u32..(1 << targets.len()))
        .map(|mask| {
            targets
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, id)| *id)
                .collect()
        })
        .collect();
    fn search(
        partitions: &[PartitionInfo],
        subsets: &[Vec<i32>],
        load: &mut BTreeMap<i32, usize>,
        floor: usize,
        extra: usize,
        cost: usize,
        best: &mut Option<usize>,
    ) {
        if best.is_some_and(|b| cost >= b) {
            return;
        }
        let Some((first, rest)) = partitions.split_first() else {
            let above = load.values().filter(|l| **l == floor + 1).count();
            if load.values().all(|l| *l >= floor) && above == extra {
                *best = Some(cost);
            }
            return;
        };
        for subset in subsets.iter().filter(|s| s.len() == first.replicas.len()) {
            let kept = subset
                .iter()
                .filter(|id| first.replicas.contains(id))
                .count();
            for id in subset {
                *load.entry(*id).or_default() += 1;
            }
            let fits = load.values().all(|l| *l <= floor + 1)
                && load.values().filter(|l| **l == floor + 1).count() <= extra;
            if fits {
                let moved = first.replicas.len() - kept;
                search(rest, subsets, load, floor, extra, cost + moved, best);
            }
            for id in subset {
                *load.entry(*id).or_default() -= 1;
            }
        }
    }
    let mut load: BTreeMap<i32, usize> = targets.iter().map(|t| (*t, 0)).collect();
    let mut best = None;
    search(
        &state.partitions,
        &subsets,
        &mut load,
        floor,
        extra,
        0,
        &mut best,
    );
    best
}

/// Every rack has the same number of brokers.
fn even_racks(state: &ClusterState) -> bool {
    let mut sizes: BTreeMap<String, usize> = BTreeMap::new();
    for (_, rack) in rack_of(state) {
        *sizes.entry(rack).or_default() += 1;
    }
    sizes.values().collect::<BTreeSet<_>>().len() <= 1
}

fn partition(topic: &str, index: i32, replicas: &[i32]) -> PartitionInfo {
    PartitionInfo {
        topic: topic.to_string(),
        partition: index,
        replicas: replicas.to_vec(),
        leader: replicas[0],
        isr: replicas.to_vec(),
    }
}

fn brokers(ids: &[i32]) -> Vec<BrokerInfo> {
    ids.iter()
        .map(|id| BrokerInfo {
            id: *id,
            rack: None,
        })
        .collect()
}

#[test]
fn two_new_brokers_take_their_share_of_replicas_and_leaders() {
    let state = ClusterState {
        brokers: brokers(&[1, 2, 3, 4, 5]),
        partitions: (0..6)
            .map(|i| partition("orders", i, &[1 + i % 3, 1 + (i + 1) % 3, 1 + (i + 2) % 3]))
            .collect(),
    };
    let plan = scale_up(&state).expect("a plan");
    let after = plan.apply(&state).distribution(None);
    // 18 replicas over 5 brokers: 4, 4, 4, 3, 3, so 6 move; 6 leaders: 1 or 2 each.
    assert_eq!(plan.replica_moves(), 6);
    assert!(
        after.replicas.values().all(|n| (3..=4).contains(n)),
        "{after:?}"
    );
    assert!(
        after.leaders.values().all(|n| (1..=2).contains(n)),
        "{after:?}"
    );
}

#[test]
fn draining_below_the_replication_factor_is_refused_with_the_topic_named() {
    let state = ClusterState {
        brokers: brokers(&[1, 2, 3]),
        partitions: vec![
            partition("orders", 0, &[1, 2, 3]),
            partition("logs", 0, &[1]),
        ],
    };
    let error = drain(&state, &[3]).expect_err("refused");
    assert_eq!(
        error.to_string(),
        "topic `orders` has replication factor 3 but only 2 brokers would remain ([1, 2]) after draining [3]; lower its replication factor or keep more brokers"
    );
}

#[test]
fn a_drained_broker_that_is_already_gone_is_still_emptied() {
    let state = ClusterState {
        brokers: brokers(&[1, 2, 3]),
        partitions: vec![
            partition("orders", 0, &[4, 1]),
            partition("orders", 1, &[1, 4]),
        ],
    };
    let plan = drain(&state, &[4]).expect("a plan");
    let after = plan.apply(&state);
    assert!(after.partitions.iter().all(|p| !p.replicas.contains(&4)));
    assert!(matches!(
        drain(&state, &[9]),
        Err(PlanError::UnknownBrokers(ids)) if ids == vec![9]
    ));
}

#[test]
fn a_replica_taking_the_place_of_the_preferred_leader_becomes_the_preferred_leader() {
    let state = ClusterState {
        brokers: brokers(&[1, 2, 3]),
        partitions: vec![partition("t", 0, &[3, 1]), partition("t", 1, &[1, 2])],
    };
    let plan = drain(&state, &[3]).expect("a plan");
    assert_eq!(
        plan.moves,
        vec![Move {
            topic: "t".into(),
            partition: 0,
            from: vec![3, 1],
            to: vec![2, 1],
        }]
    );
    assert_eq!(plan.elections, vec![("t".to_string(), 0)]);
}

#[test]
fn a_partition_on_one_rack_is_spread_over_two() {
    let mut state = ClusterState {
        brokers: brokers(&[1, 2, 3, 4]),
        partitions: vec![partition("t", 0, &[1, 2]), partition("t", 1, &[3, 4])],
    };
    for b in &mut state.brokers {
        b.rack = Some(if b.id <= 2 { "a" } else { "b" }.to_string());
    }
    let after = scale_up(&state).expect("a plan").apply(&state);
    for p in &after.partitions {
        let racks: BTreeSet<bool> = p.replicas.iter().map(|r| *r <= 2).collect();
        assert_eq!(racks.len(), 2, "{p:?}");
    }
}

#[test]
fn a_leader_that_is_not_the_preferred_one_is_elected_back() {
    let mut p = partition("t", 0, &[1, 2]);
    p.leader = 2;
    let state = ClusterState {
        brokers: brokers(&[1, 2]),
        partitions: vec![p, partition("t", 1, &[2, 1])],
    };
    let plan = balance_leaders(&state);
    assert!(plan.moves.is_empty());
    assert_eq!(plan.elections, vec![("t".to_string(), 0)]);
}

#[test]
fn a_preferred_leader_out_of_sync_is_not_elected() {
    let mut p = partition("t", 0, &[1, 2]);
    p.leader = 2;
    p.isr = vec![2];
    let state = ClusterState {
        brokers: brokers(&[1, 2]),
        partitions: vec![p, partition("t", 1, &[2, 1])],
    };
    assert!(balance_leaders(&state).is_empty());
}

#[test]
fn growing_and_shrinking_the_replication_factor_keeps_the_preferred_leader() {
    let state = ClusterState {
        brokers: brokers(&[1, 2, 3, 4]),
        partitions: vec![partition("t", 0, &[1, 2]), partition("t", 1, &[3, 4])],
    };
    let grown = change_replication_factor(&state, "t", 3).expect("a plan");
    assert_eq!(grown.replica_moves(), 2);
    let after = grown.apply(&state);
    assert_eq!(after.partitions[0].replicas[0], 1);
    assert_eq!(after.partitions[1].replicas[0], 3);
    let shrunk = change_replication_factor(&after, "t", 1)
        .expect("a plan")
        .apply(&after);
    assert_eq!(shrunk.partitions[0].replicas, vec![1]);
    assert_eq!(shrunk.partitions[1].replicas, vec![3]);
    assert!(matches!(
        change_replication_factor(&state, "t", 5),
        Err(PlanError::InvalidReplicationFactor {
            requested: 5,
            brokers: 4,
            ..
        })
    ));
    assert!(matches!(
        change_replication_factor(&state, "nope", 1),
        Err(PlanError::UnknownTopic(_))
    ));
}

#[test]
fn a_thousand_partitions_spread_onto_three_new_brokers_and_off_three_old_ones() {
    let partitions = (0..1000)
        .map(|i| {
            partition(
                &format!("t{}", i % 7),
                i,
                &[1 + i % 6, 1 + (i + 1) % 6, 1 + (i + 2) % 6],
            )
        })
        .collect();
    let mut state = ClusterState {
        brokers: brokers(&[1, 2, 3, 4, 5, 6, 7, 8, 9]),
        partitions,
    };
    for racks in [false, true] {
        for b in &mut state.brokers {
            b.rack = racks.then(|| format!("r{}", b.id % 3));
        }
        let plan = scale_up(&state).expect("a plan");
        // 3000 replicas: 500 on each old broker, 333 or 334 wanted.
        assert_eq!(plan.replica_moves(), 999);
        let grown = plan.apply(&state);
        let d = grown.distribution(None);
        assert!(d.replica_spread() <= 1 && d.leader_spread() <= 1, "{d:?}");
        let plan = drain(&grown, &[1, 2, 3]).expect("a plan");
        let on_leaving: usize = [1, 2, 3].iter().map(|b| d.replicas[b]).sum();
        assert_eq!(plan.replica_moves(), on_leaving);
        let remaining = BTreeSet::from([4, 5, 6, 7, 8, 9]);
        let d = plan.apply(&grown).distribution(Some(&remaining));
        assert!(d.replica_spread() <= 1 && d.leader_spread() <= 1, "{d:?}");
    }
}
