//! The working copy every planner edits: replica lists, per-broker replica and
//! preferred-leader counts, racks, and the two balancing passes they share. Pure.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::flow::Network;
use super::ClusterState;

/// Replica lists being planned, with the counts and racks the planners decide by.
///
/// Slots are partitions: the first ones mirror `ClusterState::partitions` in order, placement
/// appends new ones. A planner may only change the slots marked movable.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    /// Brokers replicas may be placed on and that balance is measured over, ascending.
    targets: Vec<i32>,
    /// Rack index of every broker; a broker without a rack is a rack of its own.
    rack_of: BTreeMap<i32, usize>,
    /// Distinct racks among the targets.
    target_racks: usize,
    pub(super) replicas: Vec<Vec<i32>>,
    pub(super) movable: Vec<bool>,
    replica_count: BTreeMap<i32, usize>,
    leader_count: BTreeMap<i32, usize>,
}

impl Layout {
    /// Every partition of `state`, movable when `movable` says so, planned over `targets`.
    pub(super) fn new(
        state: &ClusterState,
        targets: &BTreeSet<i32>,
        movable: impl Fn(usize) -> bool,
    ) -> Layout {
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        let mut rack_of = BTreeMap::new();
        let mut next = 0;
        for broker in &state.brokers {
            let index = match broker.rack.as_deref() {
                Some(rack) => *names.entry(rack).or_insert_with(|| {
                    next += 1;
                    next - 1
                }),
                None => {
                    next += 1;
                    next - 1
                }
            };
            rack_of.insert(broker.id, index);
        }
        // Brokers that hold replicas but are not listed (gone, fenced): racks of their own.
        for id in state.partitions.iter().flat_map(|p| p.replicas.iter()) {
            rack_of.entry(*id).or_insert_with(|| {
                next += 1;
                next - 1
            });
        }
        for id in targets {
            rack_of.entry(*id).or_insert_with(|| {
                next += 1;
                next - 1
            });
        }
        let target_racks = targets
            .iter()
            .filter_map(|id| rack_of.get(id))
            .collect::<BTreeSet<_>>()
            .len();
        let mut layout = Layout {
            targets: targets.iter().copied().collect(),
            rack_of,
            target_racks,
            replicas: Vec::with_capacity(state.partitions.len()),
            movable: Vec::with_capacity(state.partitions.len()),
            replica_count: BTreeMap::new(),
            leader_count: BTreeMap::new(),
        };
        for (index, partition) in state.partitions.iter().enumerate() {
            layout.push_slot(partition.replicas.clone(), movable(index));
        }
        layout
    }

    /// Adds a slot (a partition to place or being planned) and counts its replicas.
    pub(super) fn push_slot(&mut self, replicas: Vec<i32>, movable: bool) -> usize {
        for (position, id) in replicas.iter().enumerate() {
            *self.replica_count.entry(*id).or_default() += 1;
            if position == 0 {
                *self.leader_count.entry(*id).or_default() += 1;
            }
        }
        self.replicas.push(replicas);
        self.movable.push(movable);
        self.replicas.len() - 1
    }

    pub(super) fn is_target(&self, id: i32) -> bool {
        self.targets.binary_search(&id).is_ok()
    }

    pub(super) fn replicas_on(&self, id: i32) -> usize {
        self.replica_count.get(&id).copied().unwrap_or(0)
    }

    pub(super) fn leaders_on(&self, id: i32) -> usize {
        self.leader_count.get(&id).copied().unwrap_or(0)
    }

    fn rack(&self, id: i32) -> usize {
        self.rack_of.get(&id).copied().unwrap_or(usize::MAX)
    }

    /// How many racks a replica list spans.
    fn span(&self, replicas: &[i32]) -> usize {
        replicas
            .iter()
            .map(|r| self.rack(*r))
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// Racks a partition of `rf` replicas should span: as many as it has replicas, or all.
    pub(super) fn required_span(&self, rf: usize) -> usize {
        rf.min(self.target_racks)
    }

    /// Whether the slot spans the racks it should.
    pub(super) fn rack_valid(&self, slot: usize) -> bool {
        let replicas = &self.replicas[slot];
        self.span(replicas) >= self.required_span(replicas.len())
    }

    /// Replicas of the slot on the rack of `id`.
    fn on_rack_of(&self, slot: usize, id: i32) -> usize {
        let rack = self.rack(id);
        self.replicas[slot]
            .iter()
            .filter(|r| self.rack(**r) == rack)
            .count()
    }

    /// Whether replacing `from` by `to` in the slot keeps the racks it spans (or the span it
    /// needs, whichever is smaller): a move never makes rack spread worse than required.
    fn keeps_racks(&self, slot: usize, from: i32, to: i32) -> bool {
        let replicas = &self.replicas[slot];
        let before = self.span(replicas);
        let after: Vec<i32> = replicas
            .iter()
            .map(|r| if *r == from { to } else { *r })
            .collect();
        self.span(&after) >= before.min(self.required_span(replicas.len()))
    }

    /// Puts `to` where `from` is in the slot's list, so it inherits the position (and the
    /// preferred leadership, when `from` was first).
    pub(super) fn replace(&mut self, slot: usize, from: i32, to: i32) {
        let Some(position) = self.replicas[slot].iter().position(|r| *r == from) else {
            return;
        };
        self.replicas[slot][position] = to;
        decrement(&mut self.replica_count, from);
        *self.replica_count.entry(to).or_default() += 1;
        if position == 0 {
            decrement(&mut self.leader_count, from);
            *self.leader_count.entry(to).or_default() += 1;
        }
    }

    /// Appends a replica to the slot (the last place: never the preferred leader, unless the
    /// slot was empty).
    pub(super) fn add(&mut self, slot: usize, id: i32) {
        if self.replicas[slot].is_empty() {
            *self.leader_count.entry(id).or_default() += 1;
        }
        self.replicas[slot].push(id);
        *self.replica_count.entry(id).or_default() += 1;
    }

    pub(super) fn remove(&mut self, slot: usize, id: i32) {
        let Some(position) = self.replicas[slot].iter().position(|r| *r == id) else {
            return;
        };
        self.replicas[slot].remove(position);
        decrement(&mut self.replica_count, id);
        if position == 0 {
            decrement(&mut self.leader_count, id);
            if let Some(next) = self.replicas[slot].first() {
                *self.leader_count.entry(*next).or_default() += 1;
            }
        }
    }

    /// Makes `id` the slot's preferred leader, keeping the order of the others.
    fn prefer(&mut self, slot: usize, id: i32) {
        let Some(position) = self.replicas[slot].iter().position(|r| *r == id) else {
            return;
        };
        if position == 0 {
            return;
        }
        let previous = self.replicas[slot][0];
        let chosen = self.replicas[slot].remove(position);
        self.replicas[slot].insert(0, chosen);
        decrement(&mut self.leader_count, previous);
        *self.leader_count.entry(id).or_default() += 1;
    }

    /// The target broker to give one more replica of the slot to: a rack the slot uses least
    /// first (so the slot spreads over racks), then the fewest replicas, then the fewest
    /// preferred leaders when it will lead, then the lowest id. `None` when every target
    /// already holds a replica of it.
    pub(super) fn best_new_replica(&self, slot: usize, leads: bool) -> Option<i32> {
        self.targets
            .iter()
            .copied()
            .filter(|id| !self.replicas[slot].contains(id))
            .min_by_key(|id| {
                (
                    self.on_rack_of(slot, *id),
                    self.replicas_on(*id),
                    if leads { self.leaders_on(*id) } else { 0 },
                    *id,
                )
            })
    }

    /// Moves every replica of movable slots off brokers that are not targets, each to the
    /// target the slot's racks and the counts favour.
    pub(super) fn evacuate(&mut self) {
        let finals = self.final_counts();
        for slot in 0..self.replicas.len() {
            if !self.movable[slot] {
                continue;
            }
            let leaving: Vec<i32> = self.replicas[slot]
                .iter()
                .copied()
                .filter(|r| !self.is_target(*r))
                .collect();
            for from in leaving {
                // Choose as if `from` were already gone, so its rack does not count as used.
                let leads = self.replicas[slot].first() == Some(&from);
                self.replace(slot, from, NOWHERE);
                let to = self.best_receiver(slot, leads, &finals);
                match to {
                    Some(to) => self.replace(slot, NOWHERE, to),
                    // Cannot happen when the replication factor fits the targets (checked
                    // by the callers); keep the replica rather than lose it.
                    None => self.replace(slot, NOWHERE, from),
                }
            }
        }
    }

    /// Moves replicas of movable slots spanning fewer racks than they should, one at a time
    /// from a crowded rack to an unused one.
    pub(super) fn spread_racks(&mut self) {
        for slot in 0..self.replicas.len() {
            if !self.movable[slot] {
                continue;
            }
            while !self.rack_valid(slot) {
                let Some(from) = self.crowded_replica(slot) else {
                    break;
                };
                let leads = self.replicas[slot].first() == Some(&from);
                self.replace(slot, from, NOWHERE);
                match self.best_new_replica(slot, leads) {
                    Some(to) if self.on_rack_of(slot, to) == 0 => self.replace(slot, NOWHERE, to),
                    _ => {
                        self.replace(slot, NOWHERE, from);
                        break;
                    }
                }
            }
        }
    }

    /// The replica to move off a rack holding more than one replica of the slot: the one on
    /// the busiest broker, a follower before the preferred leader.
    fn crowded_replica(&self, slot: usize) -> Option<i32> {
        self.replicas[slot]
            .iter()
            .enumerate()
            .filter(|(_, r)| self.on_rack_of(slot, **r) > 1)
            .max_by_key(|(position, r)| {
                (
                    !self.is_target(**r),
                    *position > 0,
                    self.replicas_on(**r),
                    *position,
                )
            })
            .map(|(_, r)| *r)
    }

    /// The replica count each target should end with: floor or ceil of the mean, ceil for
    /// the busiest (so they shed the least), counting replicas on every broker.
    fn final_counts(&self) -> BTreeMap<i32, usize> {
        let total: usize = self.replica_count.values().sum::<usize>()
            - self.replica_count.get(&NOWHERE).copied().unwrap_or(0);
        let n = self.targets.len().max(1);
        let (floor, extra) = (total / n, total % n);
        self.by_load_descending()
            .into_iter()
            .enumerate()
            .map(|(i, id)| (id, if i < extra { floor + 1 } else { floor }))
            .collect()
    }

    /// Like [`Layout::best_new_replica`], but among equally good racks a target still below
    /// its final count first, so the replica does not have to move again.
    fn best_receiver(
        &self,
        slot: usize,
        leads: bool,
        finals: &BTreeMap<i32, usize>,
    ) -> Option<i32> {
        self.targets
            .iter()
            .copied()
            .filter(|id| !self.replicas[slot].contains(id))
            .min_by_key(|id| {
                let full = self.replicas_on(*id) >= finals.get(id).copied().unwrap_or(0);
                (
                    self.on_rack_of(slot, *id),
                    full,
                    self.replicas_on(*id),
                    if leads { self.leaders_on(*id) } else { 0 },
                    *id,
                )
            })
    }

    /// Moves replicas of movable slots so every target ends within one of the mean and no
    /// replica stays elsewhere, with the fewest moves: a minimum-cost flow where each unit is
    /// a replica leaving a broker with too many, passing through as many moves as it costs,
    /// to a broker with too few.
    ///
    /// Network: source → broker (what it must shed to reach floor(mean); everything on a
    /// broker that is not a target) → slot it holds (1, free) → target lacking the slot (1,
    /// one move) → sink (what it lacks to reach floor(mean)). The `extra` brokers that may
    /// end at floor + 1 are a pool: any target can keep or take one more through it (1,
    /// free). A flow passing a broker (received one slot, gave another) is two moves, so
    /// the cheapest flow finds chains when a direct move is impossible.
    ///
    /// A slot whose racks would end spread worse than allowed keeps its replicas; later
    /// passes take care of it and of anything the flow could not place.
    pub(super) fn flow_moves(&mut self) {
        if self.targets.is_empty() {
            return;
        }
        let total: usize = self.replica_count.values().sum();
        let n = self.targets.len();
        let (floor, extra) = (total / n, total % n);
        let brokers: Vec<i32> = self
            .replica_count
            .keys()
            .copied()
            .chain(self.targets.iter().copied())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let shed = |id: i32| {
            if self.is_target(id) {
                self.replicas_on(id).saturating_sub(floor)
            } else {
                self.replicas_on(id)
            }
        };
        let lack = |id: i32| {
            if self.is_target(id) {
                floor.saturating_sub(self.replicas_on(id))
            } else {
                0
            }
        };
        let must_move = brokers.iter().any(|id| {
            if self.is_target(*id) {
                self.replicas_on(*id) > floor + usize::from(extra > 0) || lack(*id) > 0
            } else {
                self.replicas_on(*id) > 0
            }
        });
        if !must_move {
            return;
        }
        let cap = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let node_of: BTreeMap<i32, usize> = brokers
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, 3 + i))
            .collect();
        let first_slot = 3 + brokers.len();
        let mut network = Network::new(first_slot + self.replicas.len());
        let (source, sink, pool) = (0, 1, 2);
        for id in &brokers {
            let node = node_of[id];
            if shed(*id) > 0 {
                network.edge(source, node, cap(shed(*id)), 0);
            }
            if lack(*id) > 0 {
                network.edge(node, sink, cap(lack(*id)), 0);
            }
            if self.is_target(*id) && extra > 0 {
                network.edge(node, pool, 1, 0);
            }
        }
        network.edge(pool, sink, cap(extra), 0);
        let mut leaves: Vec<(usize, i32, usize)> = Vec::new();
        let mut arrives: Vec<(usize, i32, usize)> = Vec::new();
        for slot in 0..self.replicas.len() {
            if !self.movable[slot] {
                continue;
            }
            let replicas = &self.replicas[slot];
            for from in replicas {
                let edge = network.edge(node_of[from], first_slot + slot, 1, 0);
                leaves.push((slot, *from, edge));
            }
            for to in &self.targets {
                if !replicas.contains(to)
                    && replicas.iter().any(|f| self.keeps_racks(slot, *f, *to))
                {
                    let edge = network.edge(first_slot + slot, node_of[to], 1, 1);
                    arrives.push((slot, *to, edge));
                }
            }
        }
        network.min_cost_max_flow(source, sink);
        let mut moves: BTreeMap<usize, (Vec<i32>, Vec<i32>)> = BTreeMap::new();
        for (slot, from, edge) in leaves {
            if network.flow(edge) > 0 {
                moves.entry(slot).or_default().0.push(from);
            }
        }
        for (slot, to, edge) in arrives {
            if network.flow(edge) > 0 {
                moves.entry(slot).or_default().1.push(to);
            }
        }
        for (slot, (from, to)) in moves {
            let before = self.replicas[slot].clone();
            let span_before = self.span(&before);
            // The preferred leader's replica, if it moves, goes to the receiver leading least.
            let mut to = to;
            to.sort_by_key(|id| (self.leaders_on(*id), *id));
            let mut from = from;
            from.sort_by_key(|id| before.iter().position(|r| r == id));
            for (f, t) in from.iter().zip(&to) {
                self.replace(slot, *f, *t);
            }
            let required = self.required_span(before.len());
            if self.span(&self.replicas[slot]) < span_before.min(required) {
                for (f, t) in from.iter().zip(&to) {
                    self.replace(slot, *t, *f);
                }
            }
        }
    }

    /// The replica to drop when the slot has one too many: never the preferred leader; from
    /// the rack holding most of the slot's replicas, then from the busiest broker.
    pub(super) fn replica_to_drop(&self, slot: usize) -> Option<i32> {
        self.replicas[slot]
            .iter()
            .enumerate()
            .skip(1)
            .max_by_key(|(position, r)| {
                (self.on_rack_of(slot, **r), self.replicas_on(**r), *position)
            })
            .map(|(_, r)| *r)
    }

    /// Target brokers ordered by replica count, most loaded first (more preferred leaders,
    /// then the lower id, first among equals).
    fn by_load_descending(&self) -> Vec<i32> {
        let mut brokers = self.targets.clone();
        brokers.sort_by_key(|id| {
            (
                std::cmp::Reverse(self.replicas_on(*id)),
                std::cmp::Reverse(self.leaders_on(*id)),
                *id,
            )
        });
        brokers
    }

    /// Moves replicas of movable slots from the most to the least loaded targets until every
    /// target is within one of the others, or no move that keeps racks is left.
    ///
    /// Each move goes from a broker to one holding at least two replicas fewer, so it lowers
    /// the sum of squared counts and the loop ends. Without rack constraints the busiest broker
    /// always has a replica the idlest lacks; with them a move may have to pass through a
    /// third broker. This finishes what [`Layout::flow_moves`] could not do, and evens counts
    /// out for planners that move only some partitions.
    pub(super) fn balance_replicas(&mut self) {
        self.balance_replicas_moving(false);
    }

    /// [`Layout::balance_replicas`], moving only followers when `followers_only`, so
    /// preferred-leader counts stay as they are.
    fn balance_replicas_moving(&mut self, followers_only: bool) {
        loop {
            if self.replica_spread() <= 1 {
                return;
            }
            if let Some((slot, from, to)) = self.direct_move(followers_only) {
                self.replace(slot, from, to);
                continue;
            }
            // Racks forbid every direct move: pass through a third broker that stays as is.
            match self.two_step_move(followers_only) {
                Some(((first, from, via), (second, via_again, to))) => {
                    self.replace(first, from, via);
                    self.replace(second, via_again, to);
                }
                None => return,
            }
        }
    }

    /// Largest difference of replica counts between targets.
    pub(super) fn replica_spread(&self) -> usize {
        spread(self.targets.iter().map(|id| self.replicas_on(*id)))
    }

    /// Largest difference of preferred-leader counts between targets.
    pub(super) fn leader_spread(&self) -> usize {
        spread(self.targets.iter().map(|id| self.leaders_on(*id)))
    }

    fn direct_move(&self, followers_only: bool) -> Option<(usize, i32, i32)> {
        let descending = self.by_load_descending();
        let mut ascending = descending.clone();
        ascending.reverse();
        // Among equally loaded receivers, the one with fewer leaders first.
        ascending.sort_by_key(|id| (self.replicas_on(*id), self.leaders_on(*id), *id));
        for from in &descending {
            let load = self.replicas_on(*from);
            for to in &ascending {
                if self.replicas_on(*to) + 2 > load {
                    break;
                }
                if let Some(slot) = self.slot_to_move(*from, *to, followers_only) {
                    return Some((slot, *from, *to));
                }
            }
        }
        None
    }

    /// The movable slot whose replica on `from` is best moved to `to`: one `to` lacks and
    /// whose racks stay spread; a preferred leader when `from` leads two more than `to`, a
    /// follower otherwise (so leadership moves only when it helps).
    fn slot_to_move(&self, from: i32, to: i32, followers_only: bool) -> Option<usize> {
        let shift_leader = self.leaders_on(from) >= self.leaders_on(to) + 2;
        (0..self.replicas.len())
            .filter(|slot| self.movable[*slot])
            .filter(|slot| {
                let replicas = &self.replicas[*slot];
                !(followers_only && replicas.first() == Some(&from))
                    && replicas.contains(&from)
                    && !replicas.contains(&to)
                    && self.keeps_racks(*slot, from, to)
            })
            .min_by_key(|slot| {
                let leads = self.replicas[*slot].first() == Some(&from);
                (leads != shift_leader, *slot)
            })
    }

    /// A move `from` → `via` and a move `via` → `to` (different slots) with `from` at least
    /// two replicas above `to`: `via` ends where it started.
    #[allow(clippy::type_complexity)]
    fn two_step_move(
        &self,
        followers_only: bool,
    ) -> Option<((usize, i32, i32), (usize, i32, i32))> {
        let descending = self.by_load_descending();
        let ascending: Vec<i32> = descending.iter().rev().copied().collect();
        // Slots whose replica on `a` may move to `b`; two are enough to find one differing
        // from the other step's.
        let movable_to = |a: i32, b: i32| -> Vec<usize> {
            (0..self.replicas.len())
                .filter(|slot| {
                    let replicas = &self.replicas[*slot];
                    self.movable[*slot]
                        && !(followers_only && replicas.first() == Some(&a))
                        && replicas.contains(&a)
                        && !replicas.contains(&b)
                        && self.keeps_racks(*slot, a, b)
                })
                .take(2)
                .collect()
        };
        for from in &descending {
            for to in &ascending {
                if self.replicas_on(*to) + 2 > self.replicas_on(*from) {
                    break;
                }
                for via in &self.targets {
                    if via == from || via == to {
                        continue;
                    }
                    let seconds = movable_to(*via, *to);
                    if seconds.is_empty() {
                        continue;
                    }
                    // The second step's slot is untouched by the first (they differ), so
                    // both can be judged on the layout as it is.
                    for first in movable_to(*from, *via) {
                        if let Some(second) = seconds.iter().find(|s| **s != first) {
                            return Some(((first, *from, *via), (*second, *via, *to)));
                        }
                    }
                }
            }
        }
        None
    }

    /// Reorders movable slots so preferred-leader counts over the targets end within one of
    /// each other where the replica placement allows it.
    ///
    /// Moves leadership along the shortest chain broker → partition it leads → another
    /// replica of it → ... ending at a broker leading at least two fewer: the first broker
    /// loses one, the last gains one, the others keep their count. When no chain is left from
    /// any broker to one two below it, the counts are as even as the replicas allow.
    pub(super) fn balance_leaders(&mut self) {
        loop {
            if self.leader_spread() <= 1 {
                return;
            }
            let mut sources = self.targets.clone();
            sources.sort_by_key(|id| (std::cmp::Reverse(self.leaders_on(*id)), *id));
            let chain = sources
                .iter()
                .find_map(|source| self.leadership_chain(*source));
            match chain {
                Some(chain) => {
                    for (slot, to) in chain {
                        self.prefer(slot, to);
                    }
                }
                None => return,
            }
        }
    }

    /// [`Layout::balance_leaders`], then, where reordering is not enough, moves a preferred
    /// leader's replica to a broker leading two fewer (and, when that unbalances replica
    /// counts, a follower back), until preferred leaders are within one or nothing helps.
    ///
    /// Each step lowers the sum of squared leader counts and keeps replicas within the
    /// spread they had (or within one), so the loop ends.
    pub(super) fn balance_leaders_moving_replicas(&mut self) {
        loop {
            self.balance_leaders();
            if self.leader_spread() <= 1 || !self.move_a_leader() {
                return;
            }
        }
    }

    /// One leadership move by replica move; false when none helps.
    ///
    /// Leadership goes from a broker leading too many (`source`) to one leading too few
    /// (`sink`): handed over by reordering to some broker `x`, whose replica of a partition it
    /// leads moves to a broker `y`, which hands leadership on to `sink` by reordering. If that
    /// leaves replica counts uneven, followers (or, failing that, any replicas) move back.
    fn move_a_leader(&mut self) -> bool {
        let spread_before = self.replica_spread().max(1);
        let squares_before = self.leader_squares();
        let mut sources = self.targets.clone();
        sources.sort_by_key(|id| (std::cmp::Reverse(self.leaders_on(*id)), *id));
        let mut sinks = self.targets.clone();
        sinks.sort_by_key(|id| (self.leaders_on(*id), self.replicas_on(*id), *id));
        let mut trials = 0;
        for source in &sources {
            let reach = self.leadership_reach(*source);
            for sink in &sinks {
                if self.leaders_on(*sink) + 2 > self.leaders_on(*source) {
                    break;
                }
                let onward = self.leadership_reach_to(*sink);
                let mut candidates: Vec<(usize, i32, i32, usize)> = Vec::new();
                for (x, chain_in) in &reach {
                    for slot in 0..self.replicas.len() {
                        let replicas = &self.replicas[slot];
                        if !self.movable[slot] || replicas.first() != Some(x) {
                            continue;
                        }
                        for (y, chain_out) in &onward {
                            if !replicas.contains(y) && self.keeps_racks(slot, *x, *y) {
                                let hops = chain_in.len() + chain_out.len();
                                candidates.push((slot, *x, *y, hops));
                            }
                        }
                    }
                }
                // A move from a broker with more replicas than the receiver first: nothing
                // has to move back; then the fewest hand-overs.
                candidates.sort_by_key(|(slot, x, y, hops)| {
                    (
                        self.replicas_on(*x) <= self.replicas_on(*y),
                        *hops,
                        *slot,
                        *y,
                    )
                });
                for (slot, x, y, _) in candidates {
                    trials += 1;
                    if trials > MAX_LEADER_TRIALS {
                        return false;
                    }
                    let mut trial = self.clone();
                    for (hop, to) in &reach[&x] {
                        trial.prefer(*hop, *to);
                    }
                    trial.replace(slot, x, y);
                    for (hop, to) in &onward[&y] {
                        trial.prefer(*hop, *to);
                    }
                    trial.balance_replicas_moving(true);
                    if trial.replica_spread() > spread_before {
                        // No follower can even the counts out: let any replica move, and
                        // keep the result only if leadership still ends more even.
                        trial.balance_replicas_moving(false);
                    }
                    trial.balance_leaders();
                    if trial.replica_spread() <= spread_before
                        && trial.leader_squares() < squares_before
                    {
                        *self = trial;
                        return true;
                    }
                }
            }
        }
        false
    }

    /// Every target that can hand a preferred leadership on to `sink` by reordering, with the
    /// hand-overs in order (empty for `sink` itself).
    fn leadership_reach_to(&self, sink: i32) -> BTreeMap<i32, Vec<(usize, i32)>> {
        let mut reach = BTreeMap::from([(sink, Vec::new())]);
        let mut queue = VecDeque::from([sink]);
        while let Some(broker) = queue.pop_front() {
            let onward = reach.get(&broker).cloned().unwrap_or_default();
            for slot in 0..self.replicas.len() {
                let replicas = &self.replicas[slot];
                let Some(leader) = replicas.first().copied() else {
                    continue;
                };
                if self.movable[slot]
                    && self.is_target(leader)
                    && replicas.contains(&broker)
                    && !reach.contains_key(&leader)
                {
                    let mut chain = vec![(slot, broker)];
                    chain.extend(onward.iter().copied());
                    reach.insert(leader, chain);
                    queue.push_back(leader);
                }
            }
        }
        reach
    }

    /// Sum of squared preferred-leader counts over the targets: lower is more even.
    fn leader_squares(&self) -> usize {
        self.targets
            .iter()
            .map(|id| self.leaders_on(*id).pow(2))
            .sum()
    }

    /// Every target that can take a preferred leadership from `source` by reordering, with
    /// the hand-overs getting it there (empty for `source` itself).
    fn leadership_reach(&self, source: i32) -> BTreeMap<i32, Vec<(usize, i32)>> {
        let mut reach = BTreeMap::from([(source, Vec::new())]);
        let mut queue = VecDeque::from([source]);
        while let Some(broker) = queue.pop_front() {
            let chain = reach.get(&broker).cloned().unwrap_or_default();
            for slot in 0..self.replicas.len() {
                let replicas = &self.replicas[slot];
                if !self.movable[slot] || replicas.first() != Some(&broker) {
                    continue;
                }
                for next in replicas {
                    if self.is_target(*next) && !reach.contains_key(next) {
                        let mut longer = chain.clone();
                        longer.push((slot, *next));
                        reach.insert(*next, longer);
                        queue.push_back(*next);
                    }
                }
            }
        }
        reach
    }

    /// Breadth-first search for the shortest chain of leadership hand-overs from `source` to a
    /// target leading at least two fewer; the hand-overs (slot, new preferred leader) in order.
    fn leadership_chain(&self, source: i32) -> Option<Vec<(usize, i32)>> {
        let limit = self.leaders_on(source).checked_sub(2)?;
        let mut led_by: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
        for (slot, replicas) in self.replicas.iter().enumerate() {
            if let (true, Some(first)) = (self.movable[slot], replicas.first()) {
                led_by.entry(*first).or_default().push(slot);
            }
        }
        let mut parent: BTreeMap<i32, (i32, usize)> = BTreeMap::new();
        let mut queue = VecDeque::from([source]);
        let mut seen = BTreeSet::from([source]);
        while !queue.is_empty() {
            // One level at a time, so the least loaded end of the shortest chains wins.
            let level: Vec<i32> = queue.drain(..).collect();
            let mut reached = Vec::new();
            for broker in level {
                for slot in led_by.get(&broker).into_iter().flatten() {
                    for next in &self.replicas[*slot] {
                        if self.is_target(*next) && seen.insert(*next) {
                            parent.insert(*next, (broker, *slot));
                            reached.push(*next);
                        }
                    }
                }
            }
            if let Some(end) = reached
                .iter()
                .copied()
                .filter(|id| self.leaders_on(*id) <= limit)
                .min_by_key(|id| (self.leaders_on(*id), *id))
            {
                let mut chain = Vec::new();
                let mut at = end;
                while let Some((previous, slot)) = parent.get(&at) {
                    chain.push((*slot, at));
                    at = *previous;
                }
                chain.reverse();
                return Some(chain);
            }
            queue.extend(reached);
        }
        None
    }
}

/// Replica moves tried for one leadership before leader balancing settles for what it has:
/// each trial copies the layout.
const MAX_LEADER_TRIALS: usize = 200;

/// A placeholder broker id while a replica is between brokers; never a real broker (ids are
/// non-negative).
const NOWHERE: i32 = i32::MIN;

fn decrement(counts: &mut BTreeMap<i32, usize>, id: i32) {
    if let Some(count) = counts.get_mut(&id) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            counts.remove(&id);
        }
    }
}

fn spread(counts: impl Iterator<Item = usize>) -> usize {
    let (min, max) = counts.fold((usize::MAX, 0), |(lo, hi), c| (lo.min(c), hi.max(c)));
    max.saturating_sub(min.min(max))
}
