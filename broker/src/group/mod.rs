//! The group coordinator for the classic consumer group protocol: membership, rebalances,
//! generations, session timeouts, static membership, and committed offsets.
//!
//! Group state changes happen under one lock with no I/O; JoinGroup and SyncGroup calls that
//! must wait for other members park on a oneshot channel that the state machine completes.
//! Committed offsets are appended to `__consumer_offsets` before they become visible.

pub mod offsets;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use indexmap::IndexMap;
use kafka_protocol::ResponseError;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use uuid::Uuid;

pub use offsets::CommittedOffset;

/// Name of the internal topic holding committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Coordinator settings, under Kafka's names.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `group.initial.rebalance.delay.ms`: wait for more members before the first rebalance.
    pub initial_rebalance_delay: Duration,
    /// `group.min.session.timeout.ms` and `group.max.session.timeout.ms`.
    pub min_session_timeout: Duration,
    pub max_session_timeout: Duration,
    /// `offset.metadata.max.bytes`.
    pub offset_metadata_max_bytes: usize,
}

/// The states of a classic group, named as Kafka reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// What a JoinGroup call receives.
#[derive(Debug, Clone, Default)]
pub struct JoinResult {
    pub error: Option<ResponseError>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Filled for the leader only: every member with its metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinResult {
    fn error(error: ResponseError, member_id: &str) -> JoinResult {
        JoinResult {
            error: Some(error),
            generation: -1,
            member_id: member_id.to_string(),
            ..JoinResult::default()
        }
    }
}

/// What a SyncGroup call receives.
#[derive(Debug, Clone, Default)]
pub struct SyncResult {
    pub error: Option<ResponseError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    fn error(error: ResponseError) -> SyncResult {
        SyncResult {
            error: Some(error),
            ..SyncResult::default()
        }
    }
}

/// A JoinGroup request, as the coordinator needs it.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+ first hands out a member id and asks the client to join again with it.
    pub require_known_member_id: bool,
}

/// An answer now, or one that arrives when the rebalance completes.
pub enum Pending<T> {
    Ready(T),
    Wait(oneshot::Receiver<T>),
}

#[derive(Debug)]
struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_heartbeat: Instant,
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    sync_waiter: Option<oneshot::Sender<SyncResult>>,
}

impl Member {
    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }
}

#[derive(Debug)]
struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: IndexMap<String, Member>,
    /// group.instance.id to the member id that currently holds it.
    static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, until they join or expire.
    pending_members: HashMap<String, Instant>,
    rebalance_deadline: Option<Instant>,
    /// While the first members gather (group.initial.rebalance.delay.ms).
    initial_delay_until: Option<Instant>,
    offsets: BTreeMap<(String, i32), CommittedOffset>,
}

impl Group {
    fn new() -> Group {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: IndexMap::new(),
            static_members: HashMap::new(),
            pending_members: HashMap::new(),
            rebalance_deadline: None,
            initial_delay_until: None,
            offsets: BTreeMap::new(),
        }
    }

    fn is_empty_group(&self) -> bool {
        self.members.is_empty()
    }

    /// Protocols every member supports, in the first member's order of preference, and the
    /// one the members vote for.
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(name, _)| name)
            .filter(|name| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == *name))
            })
            .collect();
        let mut votes: Vec<(usize, &String)> = candidates.iter().map(|c| (0, *c)).collect();
        for member in self.members.values() {
            if let Some(choice) = member
                .protocols
                .iter()
                .find(|(name, _)| candidates.contains(&name))
            {
                if let Some(entry) = votes.iter_mut().find(|(_, c)| **c == choice.0) {
                    entry.0 += 1;
                }
            }
        }
        // The most votes wins; among equals, the first member's preference.
        let best = votes.iter().map(|(n, _)| *n).max()?;
        votes
            .into_iter()
            .find(|(n, _)| *n == best)
            .map(|(_, c)| c.clone())
    }

    /// Whether `protocols` has one in common with every current member.
    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        protocols.iter().any(|(name, _)| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        })
    }

    fn begin_rebalance(&mut self, now: Instant, initial_delay: Duration, reason: &str) {
        if self.state == GroupState::PreparingRebalance {
            return;
        }
        if self.state == GroupState::CompletingRebalance {
            for member in self.members.values_mut() {
                if let Some(waiter) = member.sync_waiter.take() {
                    let _ = waiter.send(SyncResult::error(ResponseError::RebalanceInProgress));
                }
            }
        }
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::ZERO);
        if self.state == GroupState::Empty && !initial_delay.is_zero() {
            self.initial_delay_until = Some(now + initial_delay.min(timeout));
        }
        self.rebalance_deadline = Some(now + timeout);
        self.state = GroupState::PreparingRebalance;
        tracing::debug!(generation = self.generation, reason, "rebalance started");
    }

    /// Completes the join phase when every member has rejoined (and the initial delay has
    /// passed), or when the rebalance timeout has expired, dropping members that did not rejoin.
    fn maybe_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = self.members.values().all(|m| m.join_waiter.is_some());
        let delayed = self.initial_delay_until.is_some_and(|until| now < until);
        let expired = self
            .rebalance_deadline
            .is_some_and(|deadline| now >= deadline);
        if !(expired || (all_joined && !delayed)) {
            return;
        }
        if expired {
            let gone: Vec<String> = self
                .members
                .values()
                .filter(|m| m.join_waiter.is_none())
                .map(|m| m.id.clone())
                .collect();
            for id in gone {
                tracing::info!(
                    member = id,
                    "member removed: did not rejoin within the rebalance timeout"
                );
                self.remove_member(&id);
            }
        }
        self.initial_delay_until = None;
        self.rebalance_deadline = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            return;
        }
        self.protocol = self.select_protocol();
        let leader_still_here = self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l));
        if !leader_still_here {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        let protocol = self.protocol.clone().unwrap_or_default();
        let leader = self.leader.clone().unwrap_or_default();
        let all: Vec<(String, Option<String>, Bytes)> = self
            .members
            .values()
            .map(|m| (m.id.clone(), m.instance_id.clone(), m.metadata(&protocol)))
            .collect();
        for member in self.members.values_mut() {
            member.assignment = Bytes::new();
            member.last_heartbeat = now;
            if let Some(waiter) = member.join_waiter.take() {
                let _ = waiter.send(JoinResult {
                    error: None,
                    generation: self.generation,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol.clone(),
                    leader: leader.clone(),
                    member_id: member.id.clone(),
                    members: if member.id == leader {
                        all.clone()
                    } else {
                        Vec::new()
                    },
                });
            }
        }
        tracing::info!(
            generation = self.generation,
            members = self.members.len(),
            protocol,
            leader,
            "group rebalanced"
        );
    }

    /// Takes the membership a stored [`offsets::GroupMetadata`] describes (stable in its
    /// generation, every session starting now), or none for a removed group. Its committed
    /// offsets stay as they are.
    fn restore(&mut self, metadata: Option<offsets::GroupMetadata>, now: Instant) {
        let offsets = std::mem::take(&mut self.offsets);
        *self = Group::new();
        self.offsets = offsets;
        let Some(metadata) = metadata else {
            return;
        };
        let ms = |value: i32| Duration::from_millis(u64::try_from(value).unwrap_or(0));
        let protocol = metadata.protocol.clone().unwrap_or_default();
        for stored in metadata.members {
            if let Some(instance) = &stored.group_instance_id {
                self.static_members
                    .insert(instance.clone(), stored.member_id.clone());
            }
            self.members.insert(
                stored.member_id.clone(),
                Member {
                    id: stored.member_id,
                    instance_id: stored.group_instance_id,
                    client_id: stored.client_id,
                    client_host: stored.client_host,
                    session_timeout: ms(stored.session_timeout_ms),
                    rebalance_timeout: ms(stored.rebalance_timeout_ms),
                    protocols: vec![(protocol.clone(), stored.subscription)],
                    assignment: stored.assignment,
                    last_heartbeat: now,
                    join_waiter: None,
                    sync_waiter: None,
                },
            );
        }
        self.generation = metadata.generation;
        self.protocol_type =
            Some(metadata.protocol_type).filter(|t| !t.is_empty() || !self.members.is_empty());
        self.protocol = metadata.protocol;
        self.leader = metadata.leader;
        self.state = if self.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
    }

    /// The membership to store once a rebalance has completed.
    fn metadata(&self) -> offsets::GroupMetadata {
        let protocol = self.protocol.clone().unwrap_or_default();
        let ms = |value: Duration| i32::try_from(value.as_millis()).unwrap_or(i32::MAX);
        offsets::GroupMetadata {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            current_state_timestamp: crate::broker::now_ms(),
            members: self
                .members
                .values()
                .map(|m| offsets::MemberMetadata {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: ms(m.rebalance_timeout),
                    session_timeout_ms: ms(m.session_timeout),
                    subscription: m.metadata(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    fn remove_member(&mut self, id: &str) {
        if let Some(member) = self.members.shift_remove(id) {
            if let Some(instance) = &member.instance_id {
                if self.static_members.get(instance).is_some_and(|m| m == id) {
                    self.static_members.remove(instance);
                }
            }
            if let Some(waiter) = member.join_waiter {
                let _ = waiter.send(JoinResult::error(ResponseError::UnknownMemberId, id));
            }
            if let Some(waiter) = member.sync_waiter {
                let _ = waiter.send(SyncResult::error(ResponseError::UnknownMemberId));
            }
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
        if self.members.is_empty() {
            self.protocol_type = None;
        }
    }

    /// Checks the member id, instance id and generation a request carries.
    fn check_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: Option<i32>,
    ) -> Result<(), ResponseError> {
        if let Some(instance) = instance_id {
            if let Some(holder) = self.static_members.get(instance) {
                if holder != member_id {
                    return Err(ResponseError::FencedInstanceId);
                }
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId);
        }
        if let Some(generation) = generation {
            if generation != self.generation {
                return Err(ResponseError::IllegalGeneration);
            }
        }
        Ok(())
    }

    /// Topics the members subscribe to, from the consumer protocol's subscription metadata.
    fn subscribed_topics(&self) -> Option<Vec<String>> {
        use kafka_protocol::messages::ConsumerProtocolSubscription;
        use kafka_protocol::protocol::Decodable;
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let protocol = self.protocol.as_deref()?;
        let mut topics = Vec::new();
        for member in self.members.values() {
            let mut metadata = member.metadata(protocol);
            if metadata.len() < 2 {
                return None;
            }
            let version = i16::from_be_bytes([metadata[0], metadata[1]]);
            bytes::Buf::advance(&mut metadata, 2);
            let subscription =
                ConsumerProtocolSubscription::decode(&mut metadata, version.clamp(0, 3)).ok()?;
            topics.extend(subscription.topics.iter().map(|t| t.to_string()));
        }
        Some(topics)
    }
}

/// A summary of a group for ListGroups and DescribeGroups.
#[derive(Debug, Clone)]
pub struct GroupSummary {
    pub group_id: String,
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberSummary>,
}

#[derive(Debug, Clone)]
pub struct MemberSummary {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// The group coordinator of this broker.
pub struct GroupCoordinator {
    config: GroupConfig,
    groups: Mutex<HashMap<String, Group>>,
    /// Offsets committed in open transactions (TxnOffsetCommit), by producer id: they take
    /// effect when the transaction's commit marker reaches their offsets partition.
    pending_txn: Mutex<HashMap<i64, Vec<offsets::OffsetRecord>>>,
}

impl GroupCoordinator {
    pub fn new(config: GroupConfig) -> GroupCoordinator {
        GroupCoordinator {
            config,
            groups: Mutex::new(HashMap::new()),
            pending_txn: Mutex::new(HashMap::new()),
        }
    }

    /// Applies what a `__consumer_offsets` partition holds, oldest first, when this broker
    /// takes over its groups: offset changes, and transactional ones as their markers say.
    pub fn load(&self, events: impl IntoIterator<Item = offsets::OffsetEvent>) {
        let mut groups = self.groups.lock();
        let mut pending: HashMap<i64, Vec<offsets::OffsetRecord>> = HashMap::new();
        let apply = |groups: &mut HashMap<String, Group>, record: offsets::OffsetRecord| {
            let group = groups.entry(record.group).or_insert_with(Group::new);
            let key = (record.topic, record.partition);
            match record.value {
                Some(value) => {
                    group.offsets.insert(key, value);
                }
                None => {
                    group.offsets.remove(&key);
                }
            }
        };
        for event in events {
            match event {
                offsets::OffsetEvent::Offset {
                    record,
                    producer: None,
                } => apply(&mut groups, record),
                offsets::OffsetEvent::Offset {
                    record,
                    producer: Some(producer_id),
                } => pending.entry(producer_id).or_default().push(record),
                offsets::OffsetEvent::Marker {
                    producer_id,
                    commit,
                } => {
                    let records = pending.remove(&producer_id).unwrap_or_default();
                    if commit {
                        for record in records {
                            apply(&mut groups, record);
                        }
                    }
                }
                offsets::OffsetEvent::Group { group, metadata } => groups
                    .entry(group)
                    .or_insert_with(Group::new)
                    .restore(metadata, Instant::now()),
            }
        }
        groups.retain(|_, g| !g.offsets.is_empty() || !g.members.is_empty());
        drop(groups);
        let mut staged = self.pending_txn.lock();
        for (producer_id, records) in pending {
            staged.entry(producer_id).or_default().extend(records);
        }
    }

    /// Stages offsets a transactional producer committed, until its transaction ends.
    pub fn stage_transactional(&self, producer_id: i64, records: Vec<offsets::OffsetRecord>) {
        self.pending_txn
            .lock()
            .entry(producer_id)
            .or_default()
            .extend(records);
    }

    /// Ends a producer's transaction for the groups `selects` picks (those of the offsets
    /// partition the marker was written to): on commit their staged offsets take effect.
    pub fn complete_transaction(
        &self,
        producer_id: i64,
        selects: impl Fn(&str) -> bool,
        commit: bool,
    ) {
        let settled = {
            let mut staged = self.pending_txn.lock();
            let Some(records) = staged.remove(&producer_id) else {
                return;
            };
            let (settled, kept): (Vec<_>, Vec<_>) =
                records.into_iter().partition(|r| selects(&r.group));
            if !kept.is_empty() {
                staged.insert(producer_id, kept);
            }
            settled
        };
        if commit {
            self.apply_offsets(settled);
        }
    }

    /// Whether an open transaction holds an offset of `group` for the partition (OffsetFetch
    /// with `require_stable` answers UNSTABLE_OFFSET_COMMIT then).
    pub fn has_pending_offset(&self, group: &str, topic: &str, partition: i32) -> bool {
        self.pending_txn
            .lock()
            .values()
            .flatten()
            .any(|r| r.group == group && r.topic == topic && r.partition == partition)
    }

    /// Drops the groups `hands_off` selects, when another broker takes over their
    /// coordination; members waiting in JoinGroup or SyncGroup are told NOT_COORDINATOR.
    pub fn unload(&self, hands_off: impl Fn(&str) -> bool) {
        self.pending_txn.lock().retain(|_, records| {
            records.retain(|r| !hands_off(&r.group));
            !records.is_empty()
        });
        let mut groups = self.groups.lock();
        let leaving: Vec<String> = groups.keys().filter(|g| hands_off(g)).cloned().collect();
        for id in leaving {
            if let Some(group) = groups.remove(&id) {
                for member in group.members.into_values() {
                    if let Some(waiter) = member.join_waiter {
                        let _ = waiter
                            .send(JoinResult::error(ResponseError::NotCoordinator, &member.id));
                    }
                    if let Some(waiter) = member.sync_waiter {
                        let _ = waiter.send(SyncResult::error(ResponseError::NotCoordinator));
                    }
                }
            }
        }
    }

    pub fn join(&self, request: JoinRequest) -> Pending<JoinResult> {
        let now = Instant::now();
        let fail = |e: ResponseError| Pending::Ready(JoinResult::error(e, &request.member_id));
        if request.group_id.is_empty() {
            return fail(ResponseError::InvalidGroupId);
        }
        if request.session_timeout < self.config.min_session_timeout
            || request.session_timeout > self.config.max_session_timeout
        {
            return fail(ResponseError::InvalidSessionTimeout);
        }
        if request.protocol_type.is_empty() || request.protocols.is_empty() {
            return fail(ResponseError::InconsistentGroupProtocol);
        }
        let mut groups = self.groups.lock();
        let group = groups
            .entry(request.group_id.clone())
            .or_insert_with(Group::new);
        group.pending_members.retain(|_, expires| *expires > now);
        if !group.supports(&request.protocol_type, &request.protocols) {
            return fail(ResponseError::InconsistentGroupProtocol);
        }
        let mut member_id = request.member_id.clone();
        if member_id.is_empty() {
            let client = if request.client_id.is_empty() {
                "member"
            } else {
                request.client_id.as_str()
            };
            member_id = format!("{client}-{}", Uuid::new_v4());
            if let Some(instance) = &request.group_instance_id {
                if let Some(old) = group.static_members.get(instance).cloned() {
                    return Pending::Ready(
                        self.replace_static_member(group, &old, &member_id, request, now),
                    );
                }
            } else if request.require_known_member_id {
                group
                    .pending_members
                    .insert(member_id.clone(), now + request.session_timeout);
                return Pending::Ready(JoinResult::error(
                    ResponseError::MemberIdRequired,
                    &member_id,
                ));
            }
        } else if !group.members.contains_key(&member_id) {
            if group.pending_members.remove(&member_id).is_none() {
                return fail(ResponseError::UnknownMemberId);
            }
        } else if let Err(e) =
            group.check_member(&member_id, request.group_instance_id.as_deref(), None)
        {
            return fail(e);
        }

        let (sender, receiver) = oneshot::channel();
        let existing = group.members.get(&member_id).map(|m| {
            (
                m.protocols.clone(),
                group.leader.as_deref() == Some(member_id.as_str()),
            )
        });
        match group.members.get_mut(&member_id) {
            Some(member) => {
                member.protocols = request.protocols.clone();
                member.session_timeout = request.session_timeout;
                member.rebalance_timeout = request.rebalance_timeout;
                member.last_heartbeat = now;
                member.join_waiter = Some(sender);
            }
            None => {
                if let Some(instance) = &request.group_instance_id {
                    group
                        .static_members
                        .insert(instance.clone(), member_id.clone());
                }
                group.members.insert(
                    member_id.clone(),
                    Member {
                        id: member_id.clone(),
                        instance_id: request.group_instance_id.clone(),
                        client_id: request.client_id.clone(),
                        client_host: request.client_host.clone(),
                        session_timeout: request.session_timeout,
                        rebalance_timeout: request.rebalance_timeout,
                        protocols: request.protocols.clone(),
                        assignment: Bytes::new(),
                        last_heartbeat: now,
                        join_waiter: Some(sender),
                        sync_waiter: None,
                    },
                );
                if let Some(until) = group.initial_delay_until {
                    // More members are arriving: give the rest another delay, within the timeout.
                    let cap = group.rebalance_deadline.unwrap_or(until);
                    group.initial_delay_until =
                        Some((now + self.config.initial_rebalance_delay).min(cap));
                }
            }
        }
        group.protocol_type = Some(request.protocol_type.clone());
        match (group.state, existing) {
            // A follower rejoining a stable group with unchanged metadata keeps the current
            // generation: answer at once, as Kafka does.
            (GroupState::Stable, Some((protocols, false))) if protocols == request.protocols => {
                if let Some(member) = group.members.get_mut(&member_id) {
                    member.join_waiter = None;
                }
                return Pending::Ready(JoinResult {
                    error: None,
                    generation: group.generation,
                    protocol_type: group.protocol_type.clone(),
                    protocol_name: group.protocol.clone(),
                    leader: group.leader.clone().unwrap_or_default(),
                    member_id,
                    members: Vec::new(),
                });
            }
            _ => {
                group.begin_rebalance(now, self.config.initial_rebalance_delay, "member joined");
                group.maybe_complete_join(now);
            }
        }
        Pending::Wait(receiver)
    }

    /// A static member restarted with a new member id: it takes over the old member's place
    /// and assignment without a rebalance when the group is stable.
    fn replace_static_member(
        &self,
        group: &mut Group,
        old: &str,
        new: &str,
        request: JoinRequest,
        now: Instant,
    ) -> JoinResult {
        let Some(mut member) = group.members.shift_remove(old) else {
            return JoinResult::error(ResponseError::UnknownMemberId, new);
        };
        if let Some(waiter) = member.join_waiter.take() {
            let _ = waiter.send(JoinResult::error(ResponseError::FencedInstanceId, old));
        }
        if let Some(waiter) = member.sync_waiter.take() {
            let _ = waiter.send(SyncResult::error(ResponseError::FencedInstanceId));
        }
        member.id = new.to_string();
        member.protocols = request.protocols;
        member.session_timeout = request.session_timeout;
        member.rebalance_timeout = request.rebalance_timeout;
        member.last_heartbeat = now;
        member.client_id = request.client_id;
        member.client_host = request.client_host;
        group.members.insert(new.to_string(), member);
        if let Some(instance) = &request.group_instance_id {
            group
                .static_members
                .insert(instance.clone(), new.to_string());
        }
        let was_leader = group.leader.as_deref() == Some(old);
        if was_leader {
            group.leader = Some(new.to_string());
        }
        if group.state != GroupState::Stable || was_leader {
            group.begin_rebalance(now, Duration::ZERO, "static leader rejoined");
            group.maybe_complete_join(now);
            return JoinResult::error(ResponseError::RebalanceInProgress, new);
        }
        JoinResult {
            error: None,
            generation: group.generation,
            protocol_type: group.protocol_type.clone(),
            protocol_name: group.protocol.clone(),
            leader: group.leader.clone().unwrap_or_default(),
            member_id: new.to_string(),
            members: Vec::new(),
        }
    }

    pub fn sync(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        protocol: (Option<&str>, Option<&str>),
        assignments: Vec<(String, Bytes)>,
    ) -> Pending<SyncResult> {
        let mut groups = self.groups.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return Pending::Ready(SyncResult::error(ResponseError::UnknownMemberId));
        };
        if let Err(e) = group.check_member(member_id, instance_id, Some(generation)) {
            return Pending::Ready(SyncResult::error(e));
        }
        let (protocol_type, protocol_name) = protocol;
        if protocol_type.is_some_and(|t| Some(t) != group.protocol_type.as_deref())
            || protocol_name.is_some_and(|n| Some(n) != group.protocol.as_deref())
        {
            return Pending::Ready(SyncResult::error(ResponseError::InconsistentGroupProtocol));
        }
        let answer = |group: &Group, assignment: Bytes| SyncResult {
            error: None,
            protocol_type: group.protocol_type.clone(),
            protocol_name: group.protocol.clone(),
            assignment,
        };
        match group.state {
            GroupState::PreparingRebalance => {
                Pending::Ready(SyncResult::error(ResponseError::RebalanceInProgress))
            }
            GroupState::Stable => {
                let assignment = group
                    .members
                    .get(member_id)
                    .map(|m| m.assignment.clone())
                    .unwrap_or_default();
                Pending::Ready(answer(group, assignment))
            }
            GroupState::CompletingRebalance => {
                let (sender, receiver) = oneshot::channel();
                if let Some(member) = group.members.get_mut(member_id) {
                    member.sync_waiter = Some(sender);
                    member.last_heartbeat = Instant::now();
                }
                if group.leader.as_deref() == Some(member_id) {
                    let mut by_member: HashMap<String, Bytes> = assignments.into_iter().collect();
                    group.state = GroupState::Stable;
                    let protocol_type = group.protocol_type.clone();
                    let protocol_name = group.protocol.clone();
                    for member in group.members.values_mut() {
                        member.assignment = by_member.remove(&member.id).unwrap_or_default();
                        if let Some(waiter) = member.sync_waiter.take() {
                            let _ = waiter.send(SyncResult {
                                error: None,
                                protocol_type: protocol_type.clone(),
                                protocol_name: protocol_name.clone(),
                                assignment: member.assignment.clone(),
                            });
                        }
                    }
                }
                Pending::Wait(receiver)
            }
            GroupState::Empty | GroupState::Dead => {
                Pending::Ready(SyncResult::error(ResponseError::UnknownMemberId))
            }
        }
    }

    /// The membership to store when `member_id` led the rebalance that made the group stable
    /// in `generation`: the leader's SyncGroup writes it to the group's offsets partition, so
    /// that a broker taking the group over knows its members.
    pub fn stable_metadata(
        &self,
        group_id: &str,
        member_id: &str,
        generation: i32,
    ) -> Option<offsets::GroupMetadata> {
        let groups = self.groups.lock();
        let group = groups.get(group_id)?;
        (group.state == GroupState::Stable
            && group.generation == generation
            && group.leader.as_deref() == Some(member_id))
        .then(|| group.metadata())
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Option<ResponseError> {
        let mut groups = self.groups.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return Some(ResponseError::UnknownMemberId);
        };
        if let Err(e) = group.check_member(member_id, instance_id, None) {
            return Some(e);
        }
        if let Some(member) = group.members.get_mut(member_id) {
            member.last_heartbeat = Instant::now();
        }
        match group.state {
            GroupState::PreparingRebalance => Some(ResponseError::RebalanceInProgress),
            _ if generation != group.generation => Some(ResponseError::IllegalGeneration),
            _ => None,
        }
    }

    /// Removes members; each entry is (member id, group instance id). Returns an error per member.
    pub fn leave(
        &self,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<Option<ResponseError>>, ResponseError> {
        let now = Instant::now();
        let mut groups = self.groups.lock();
        let group = groups
            .get_mut(group_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        let mut results = Vec::with_capacity(members.len());
        let mut removed = false;
        for (member_id, instance_id) in members {
            let id = match (member_id.is_empty(), instance_id) {
                (true, Some(instance)) => match group.static_members.get(instance) {
                    Some(id) => id.clone(),
                    None => {
                        results.push(Some(ResponseError::UnknownMemberId));
                        continue;
                    }
                },
                _ => member_id.clone(),
            };
            match group.check_member(&id, instance_id.as_deref(), None) {
                Ok(()) => {
                    group.remove_member(&id);
                    removed = true;
                    results.push(None);
                }
                Err(e) => results.push(Some(e)),
            }
        }
        if removed {
            tracing::info!(
                group = group_id,
                members = group.members.len(),
                "member left"
            );
            if group.state == GroupState::PreparingRebalance {
                group.maybe_complete_join(now);
            } else if group.members.is_empty() {
                group.state = GroupState::Empty;
                group.generation += 1;
                group.protocol = None;
                group.leader = None;
            } else {
                group.begin_rebalance(now, Duration::ZERO, "member left");
                group.maybe_complete_join(now);
            }
        }
        Ok(results)
    }

    /// Expires members whose session timed out and completes rebalances whose time is up;
    /// the broker calls it periodically.
    pub fn tick(&self) {
        let now = Instant::now();
        let mut groups = self.groups.lock();
        for (group_id, group) in groups.iter_mut() {
            group.pending_members.retain(|_, expires| *expires > now);
            if !matches!(group.state, GroupState::Empty | GroupState::Dead) {
                // A member waiting in JoinGroup or SyncGroup is alive; any other must keep
                // heartbeating, also while the group prepares a rebalance, or the rebalance
                // would wait for a dead member until the rebalance timeout.
                let expired: Vec<String> = group
                    .members
                    .values()
                    .filter(|m| {
                        m.join_waiter.is_none()
                            && m.sync_waiter.is_none()
                            && now.duration_since(m.last_heartbeat) > m.session_timeout
                    })
                    .map(|m| m.id.clone())
                    .collect();
                if !expired.is_empty() {
                    for id in &expired {
                        tracing::info!(group = group_id, member = id, "member session expired");
                        group.remove_member(id);
                    }
                    if group.state == GroupState::PreparingRebalance {
                        // The join completes below without them.
                    } else if group.members.is_empty() {
                        group.state = GroupState::Empty;
                        group.generation += 1;
                        group.protocol = None;
                        group.leader = None;
                    } else {
                        group.begin_rebalance(now, Duration::ZERO, "member session expired");
                    }
                }
            }
            group.maybe_complete_join(now);
        }
    }

    /// Validates an offset commit; offsets are stored with [`GroupCoordinator::apply_offsets`]
    /// once appended to the log.
    pub fn check_commit(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ResponseError> {
        if group_id.is_empty() {
            return Err(ResponseError::InvalidGroupId);
        }
        let groups = self.groups.lock();
        let Some(group) = groups.get(group_id) else {
            // A consumer outside any group (assign + commit) commits with generation -1.
            return if generation < 0 {
                Ok(())
            } else {
                Err(ResponseError::IllegalGeneration)
            };
        };
        if generation < 0 && group.is_empty_group() {
            return Ok(());
        }
        group.check_member(member_id, instance_id, Some(generation))?;
        // While the group prepares a rebalance, members still commit what they processed
        // (commit on revoke, as Kafka allows); only between join and sync is it refused.
        match group.state {
            GroupState::CompletingRebalance => Err(ResponseError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    pub fn metadata_max_bytes(&self) -> usize {
        self.config.offset_metadata_max_bytes
    }

    /// Makes appended offset changes visible.
    /// A tombstone never brings back a group: the tombstones of a deleted group are written
    /// after it is gone, and a group left with neither offsets nor members is dropped.
    pub fn apply_offsets(&self, records: Vec<offsets::OffsetRecord>) {
        let mut groups = self.groups.lock();
        for record in records {
            match record.value {
                Some(value) => {
                    groups
                        .entry(record.group)
                        .or_insert_with(Group::new)
                        .offsets
                        .insert((record.topic, record.partition), value);
                }
                None => {
                    let Some(group) = groups.get_mut(&record.group) else {
                        continue;
                    };
                    group.offsets.remove(&(record.topic, record.partition));
                    if group.offsets.is_empty() && group.members.is_empty() {
                        groups.remove(&record.group);
                    }
                }
            }
        }
    }

    /// Committed offsets of a group, all or for the given partitions.
    pub fn committed(&self, group_id: &str) -> BTreeMap<(String, i32), CommittedOffset> {
        self.groups
            .lock()
            .get(group_id)
            .map(|g| g.offsets.clone())
            .unwrap_or_default()
    }

    /// Every group's committed offsets, for lag metrics.
    pub fn all_committed(&self) -> Vec<(String, String, i32, i64)> {
        let groups = self.groups.lock();
        let mut out = Vec::new();
        for (group_id, group) in groups.iter() {
            for ((topic, partition), committed) in &group.offsets {
                out.push((
                    group_id.clone(),
                    topic.clone(),
                    *partition,
                    committed.offset,
                ));
            }
        }
        out
    }

    pub fn list(&self) -> Vec<GroupSummary> {
        let groups = self.groups.lock();
        let mut out: Vec<GroupSummary> = groups.iter().map(|(id, g)| summary(id, g)).collect();
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out
    }

    pub fn describe(&self, group_id: &str) -> GroupSummary {
        let groups = self.groups.lock();
        match groups.get(group_id) {
            Some(group) => summary(group_id, group),
            None => GroupSummary {
                group_id: group_id.to_string(),
                state: GroupState::Dead,
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            },
        }
    }

    /// Deletes an empty group; returns the offsets it had so tombstones can be written.
    pub fn delete_group(&self, group_id: &str) -> Result<Vec<(String, i32)>, ResponseError> {
        let mut groups = self.groups.lock();
        let group = groups.get(group_id).ok_or(ResponseError::GroupIdNotFound)?;
        if !group.is_empty_group() {
            return Err(ResponseError::NonEmptyGroup);
        }
        let keys = group.offsets.keys().cloned().collect();
        groups.remove(group_id);
        Ok(keys)
    }

    /// Whether offsets of `topic` may be deleted: the group exists and does not subscribe to it.
    pub fn check_offset_delete(&self, group_id: &str, topic: &str) -> Result<(), ResponseError> {
        let groups = self.groups.lock();
        let group = groups.get(group_id).ok_or(ResponseError::GroupIdNotFound)?;
        if group.is_empty_group() {
            return Ok(());
        }
        match group.subscribed_topics() {
            Some(topics) if !topics.iter().any(|t| t == topic) => Ok(()),
            _ => Err(ResponseError::GroupSubscribedToTopic),
        }
    }
}

fn summary(group_id: &str, group: &Group) -> GroupSummary {
    let protocol = group.protocol.clone().unwrap_or_default();
    GroupSummary {
        group_id: group_id.to_string(),
        state: group.state,
        protocol_type: group.protocol_type.clone().unwrap_or_default(),
        protocol: protocol.clone(),
        members: group
            .members
            .values()
            .map(|m| MemberSummary {
                member_id: m.id.clone(),
                group_instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: m.metadata(&protocol),
                assignment: m.assignment.clone(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coordinator(delay_ms: u64) -> GroupCoordinator {
        GroupCoordinator::new(GroupConfig {
            initial_rebalance_delay: Duration::from_millis(delay_ms),
            min_session_timeout: Duration::from_millis(10),
            max_session_timeout: Duration::from_secs(300),
            offset_metadata_max_bytes: 4096,
        })
    }

    fn join_request(member_id: &str, instance: Option<&str>) -> JoinRequest {
        JoinRequest {
            group_id: "g".into(),
            member_id: member_id.into(),
            group_instance_id: instance.map(str::to_string),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout: Duration::from_millis(200),
            rebalance_timeout: Duration::from_millis(500),
            protocol_type: "consumer".into(),
            protocols: vec![
                ("range".into(), Bytes::from_static(b"r")),
                ("roundrobin".into(), Bytes::new()),
            ],
            require_known_member_id: true,
        }
    }

    fn ready<T>(pending: Pending<T>) -> T {
        match pending {
            Pending::Ready(v) => v,
            Pending::Wait(mut rx) => rx.try_recv().expect("answered"),
        }
    }

    fn offset_record(group: &str, offset: Option<i64>) -> offsets::OffsetRecord {
        offsets::OffsetRecord {
            group: group.into(),
            topic: "t".into(),
            partition: 0,
            value: offset.map(|offset| offsets::CommittedOffset {
                offset,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp: 0,
            }),
        }
    }

    #[test]
    fn a_deleted_group_stays_gone_once_its_tombstones_are_applied() {
        let c = coordinator(0);
        c.apply_offsets(vec![
            offset_record("g", Some(5)),
            offset_record("h", Some(1)),
        ]);
        let keys = c.delete_group("g").expect("an empty group is deleted");
        assert_eq!(keys, vec![("t".to_string(), 0)]);
        c.apply_offsets(vec![offset_record("g", None)]);
        let listed: Vec<String> = c.list().into_iter().map(|g| g.group_id).collect();
        assert_eq!(listed, vec!["h".to_string()]);
        // Deleting a group's last offset (OffsetDelete) leaves nothing to list either.
        c.apply_offsets(vec![offset_record("h", None)]);
        assert!(c.list().is_empty());
    }

    #[test]
    fn a_new_member_is_asked_to_rejoin_with_its_id_then_leads_generation_one() {
        let c = coordinator(0);
        let first = ready(c.join(join_request("", None)));
        assert_eq!(first.error, Some(ResponseError::MemberIdRequired));
        let joined = ready(c.join(join_request(&first.member_id, None)));
        assert_eq!(joined.error, None);
        assert_eq!(joined.generation, 1);
        assert_eq!(joined.leader, first.member_id);
        assert_eq!(joined.protocol_name.as_deref(), Some("range"));
        assert_eq!(joined.members.len(), 1);
        let synced = ready(c.sync(
            "g",
            1,
            &first.member_id,
            None,
            (None, None),
            vec![(first.member_id.clone(), Bytes::from_static(b"all"))],
        ));
        assert_eq!(synced.error, None);
        assert_eq!(synced.assignment, Bytes::from_static(b"all"));
        assert_eq!(c.describe("g").state, GroupState::Stable);
    }

    #[test]
    fn a_second_member_triggers_a_rebalance_that_waits_for_the_first_to_rejoin() {
        let c = coordinator(0);
        let a = ready(c.join(join_request("", None))).member_id;
        ready(c.join(join_request(&a, None)));
        ready(c.sync("g", 1, &a, None, (None, None), vec![]));
        let b = ready(c.join(join_request("", None))).member_id;
        let Pending::Wait(mut b_join) = c.join(join_request(&b, None)) else {
            panic!("b must wait for a to rejoin");
        };
        assert!(b_join.try_recv().is_err());
        assert_eq!(
            c.heartbeat("g", 1, &a, None),
            Some(ResponseError::RebalanceInProgress)
        );
        let a_join = ready(c.join(join_request(&a, None)));
        let b_join = b_join.try_recv().expect("completed");
        assert_eq!(a_join.generation, 2);
        assert_eq!(b_join.generation, 2);
        assert_eq!(a_join.leader, a, "the old leader stays leader");
        assert_eq!(a_join.members.len(), 2);
        assert!(b_join.members.is_empty());
    }

    #[test]
    fn a_member_whose_session_expires_is_removed_and_the_others_rebalance() {
        let c = coordinator(0);
        let a = ready(c.join(join_request("", None))).member_id;
        ready(c.join(join_request(&a, None)));
        ready(c.sync("g", 1, &a, None, (None, None), vec![]));
        std::thread::sleep(Duration::from_millis(250));
        c.tick();
        assert_eq!(c.describe("g").state, GroupState::Empty);
        assert_eq!(
            c.heartbeat("g", 1, &a, None),
            Some(ResponseError::UnknownMemberId)
        );
    }

    #[test]
    fn a_coordinator_that_loads_the_stored_membership_knows_the_members_and_their_assignments() {
        let c = coordinator(0);
        let a = ready(c.join(join_request("", None))).member_id;
        ready(c.join(join_request(&a, None)));
        ready(c.sync(
            "g",
            1,
            &a,
            None,
            (None, None),
            vec![(a.clone(), Bytes::from_static(b"all"))],
        ));
        assert_eq!(c.stable_metadata("g", "someone-else", 1), None);
        assert_eq!(c.stable_metadata("g", &a, 0), None);
        let stored = c
            .stable_metadata("g", &a, 1)
            .expect("the leader's completed rebalance is stored");
        let batch = offsets::encode_group_batch("g", Some(&stored), 1).expect("encodes");
        let taken_over = coordinator(0);
        taken_over.load(offsets::decode_batches(batch).expect("decodes"));
        assert_eq!(taken_over.describe("g").state, GroupState::Stable);
        assert_eq!(taken_over.heartbeat("g", 1, &a, None), None);
        assert_eq!(taken_over.check_commit("g", 1, &a, None), Ok(()));
        let synced = ready(taken_over.sync("g", 1, &a, None, (None, None), vec![]));
        assert_eq!(synced.assignment, Bytes::from_static(b"all"));
        let removal = offsets::encode_group_batch("g", None, 2).expect("encodes");
        taken_over.load(offsets::decode_batches(removal).expect("decodes"));
        assert_eq!(
            taken_over.heartbeat("g", 1, &a, None),
            Some(ResponseError::UnknownMemberId)
        );
    }

    #[test]
    fn a_stale_generation_is_refused() {
        let c = coordinator(0);
        let a = ready(c.join(join_request("", None))).member_id;
        ready(c.join(join_request(&a, None)));
        assert_eq!(
            ready(c.sync("g", 7, &a, None, (None, None), vec![])).error,
            Some(ResponseError::IllegalGeneration)
        );
        assert_eq!(
            c.check_commit("g", 0, &a, None),
            Err(ResponseError::IllegalGeneration)
        );
    }

    #[test]
    fn a_restarted_static_member_takes_its_old_place_without_a_rebalance() {
        let c = coordinator(0);
        let leader = ready(c.join(join_request("", None))).member_id;
        ready(c.join(join_request(&leader, None)));
        let Pending::Wait(mut static_join) = c.join(join_request("", Some("pod-1"))) else {
            panic!("a static member joins without MEMBER_ID_REQUIRED and waits for the rebalance");
        };
        let leader_result = ready(c.join(join_request(&leader, None)));
        assert_eq!(static_join.try_recv().expect("rebalanced").error, None);
        let generation = leader_result.generation;
        let static_id = leader_result
            .members
            .iter()
            .find(|(_, instance, _)| instance.as_deref() == Some("pod-1"))
            .map(|(id, _, _)| id.clone())
            .expect("static member in group");
        ready(c.sync(
            "g",
            generation,
            &leader,
            None,
            (None, None),
            vec![(static_id.clone(), Bytes::from_static(b"p1"))],
        ));
        let rejoined = ready(c.join(join_request("", Some("pod-1"))));
        assert_eq!(rejoined.error, None);
        assert_eq!(rejoined.generation, generation, "no new generation");
        assert_ne!(rejoined.member_id, static_id);
        let synced = ready(c.sync(
            "g",
            generation,
            &rejoined.member_id,
            Some("pod-1"),
            (None, None),
            vec![],
        ));
        assert_eq!(synced.assignment, Bytes::from_static(b"p1"));
        assert_eq!(
            c.heartbeat("g", generation, &static_id, Some("pod-1")),
            Some(ResponseError::FencedInstanceId)
        );
    }

    #[test]
    fn members_must_share_a_protocol() {
        let c = coordinator(0);
        let a = ready(c.join(join_request("", None))).member_id;
        ready(c.join(join_request(&a, None)));
        let mut other = join_request("", None);
        other.protocols = vec![("sticky".into(), Bytes::new())];
        assert_eq!(
            ready(c.join(other)).error,
            Some(ResponseError::InconsistentGroupProtocol)
        );
    }

    #[test]
    fn only_an_empty_group_can_be_deleted() {
        let c = coordinator(0);
        let a = ready(c.join(join_request("", None))).member_id;
        ready(c.join(join_request(&a, None)));
        assert_eq!(c.delete_group("g"), Err(ResponseError::NonEmptyGroup));
        c.leave("g", &[(a, None)]).expect("group exists");
        assert_eq!(c.delete_group("g"), Ok(vec![]));
        assert_eq!(c.delete_group("g"), Err(ResponseError::GroupIdNotFound));
    }
}
