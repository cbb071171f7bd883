//! The cluster metadata image and the commands that change it. Every broker applies the same
//! committed commands in the same order, so `apply` must be deterministic: no clocks, no
//! randomness, no I/O. Decisions (placement, elections) are made before a command is proposed.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::features::FeatureUpdate;
use crate::quota::{ClientQuotas, QuotaChange};
use crate::security::scram::{ScramCredential, ScramMechanism};

use crate::security::authorizer::AclBinding;

/// No leader: the partition is offline.
pub const NO_LEADER: i32 = -1;

/// A broker as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub id: i32,
    /// Changes at every start of the broker process, so a restart is told from a retry.
    pub incarnation: Uuid,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
    /// A fenced broker leads nothing and is out of every ISR it can leave.
    pub fenced: bool,
    /// Set by a controlled shutdown: the broker is about to stop, move leadership away.
    pub shutting_down: bool,
    /// The advertised address of every client listener, by listener name (empty in
    /// registrations from before named listeners: `host`/`port` serve every listener then).
    #[serde(default)]
    pub endpoints: Vec<crate::config::Listener>,
}

impl BrokerRegistration {
    /// Where clients of listener `name` reach this broker; `None` when it has no such listener.
    pub fn endpoint(&self, name: &str) -> Option<(&str, u16)> {
        if self.endpoints.is_empty() {
            return Some((&self.host, self.port));
        }
        self.endpoints
            .iter()
            .find(|e| e.name == name)
            .map(|e| (e.host.as_str(), e.port))
    }
}

/// One partition's replicas, leader and in-sync replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// The replica list; its first entry is the preferred leader.
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader: i32,
    /// Bumped at every leader change; written into the batches the leader appends.
    pub leader_epoch: i32,
    /// Bumped at every change of this partition, so a leader's ISR update can be checked
    /// against the state it was based on.
    pub partition_epoch: i32,
    /// Replicas being added or removed by a reassignment.
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
    /// Replicas whose log directory failed on their broker: they lead nothing and stay out of
    /// the ISR until that broker starts again (as Kafka's offline replicas).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offline: Vec<i32>,
}

impl PartitionState {
    pub fn new(replicas: Vec<i32>) -> PartitionState {
        PartitionState {
            leader: replicas.first().copied().unwrap_or(NO_LEADER),
            isr: replicas.clone(),
            replicas,
            leader_epoch: 0,
            partition_epoch: 0,
            adding: Vec::new(),
            removing: Vec::new(),
            offline: Vec::new(),
        }
    }
}

/// A topic as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicImage {
    pub name: String,
    pub id: Uuid,
    /// Overrides of topic settings, by Kafka name.
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<PartitionState>,
}

impl TopicImage {
    pub fn replication_factor(&self) -> i16 {
        self.partitions
            .first()
            .map_or(0, |p| i16::try_from(p.replicas.len()).unwrap_or(i16::MAX))
    }
}

/// Everything the cluster agrees on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataImage {
    pub cluster_id: String,
    pub brokers: BTreeMap<i32, BrokerRegistration>,
    pub topics: BTreeMap<String, TopicImage>,
    /// Producer ids below this have been handed out.
    pub next_producer_id: i64,
    /// SCRAM credentials by user and mechanism (salted and hashed, never the password).
    #[serde(default)]
    pub scram_credentials: BTreeMap<String, BTreeMap<ScramMechanism, ScramCredential>>,
    /// The ACLs the authorizer enforces (absent from images written before ACLs existed).
    #[serde(default)]
    pub acls: BTreeSet<AclBinding>,
    /// Dynamic broker settings (IncrementalAlterConfigs on a BROKER resource), by broker id
    /// ([`BROKER_DEFAULTS`] for the cluster-wide defaults) and Kafka name; kept here so they
    /// outlive a restart, as Kafka keeps them in its metadata log.
    #[serde(default)]
    pub broker_configs: BTreeMap<i32, BTreeMap<String, String>>,
    /// Feature levels set by UpdateFeatures (see `features`: one never set is at its
    /// default), kept here as Kafka keeps them in its metadata log.
    #[serde(default)]
    pub features: BTreeMap<String, i16>,
    /// Client quotas (AlterClientQuotas) by entity and key, as Kafka keeps them in its
    /// metadata log.
    #[serde(default)]
    pub client_quotas: ClientQuotas,
}

impl MetadataImage {
    pub fn topic_by_id(&self, id: Uuid) -> Option<&TopicImage> {
        self.topics.values().find(|t| t.id == id)
    }

    pub fn partition(&self, topic: &str, index: i32) -> Option<&PartitionState> {
        self.topics.get(topic).and_then(|t| {
            usize::try_from(index)
                .ok()
                .and_then(|i| t.partitions.get(i))
        })
    }

    /// Brokers that are registered and not fenced.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// Brokers that may lead: registered, not fenced and not shutting down.
    pub fn leader_candidates(&self) -> Vec<i32> {
        self.brokers
            .values()
            .filter(|b| !b.fenced && !b.shutting_down)
            .map(|b| b.id)
            .collect()
    }

    /// The partitions (`topic-index`) that list `broker` as a replica, in sync, being added
    /// or being removed.
    pub fn partitions_on(&self, broker: i32) -> Vec<String> {
        self.topics
            .values()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .enumerate()
                    .filter(move |(_, p)| {
                        [&p.replicas, &p.isr, &p.adding, &p.removing]
                            .iter()
                            .any(|list| list.contains(&broker))
                    })
                    .map(move |(index, _)| format!("{}-{index}", t.name))
            })
            .collect()
    }

    fn is_live(&self, id: i32) -> bool {
        self.brokers
            .get(&id)
            .is_some_and(|b| !b.fenced && !b.shutting_down)
    }
}

/// The key of [`MetadataImage::broker_configs`] that holds the cluster-wide dynamic defaults
/// (Kafka's BROKER resource with an empty name).
pub const BROKER_DEFAULTS: i32 = -1;

/// A change to the metadata, proposed by the controller and applied by every broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataCommand {
    /// The first command of a new cluster.
    InitCluster {
        cluster_id: String,
    },
    RegisterBroker(BrokerRegistration),
    /// Fence or unfence a broker, electing new leaders for the partitions it led.
    SetFenced {
        broker: i32,
        fenced: bool,
    },
    /// A broker is stopping: lead nothing from now on.
    BeginShutdown {
        broker: i32,
    },
    /// A broker left the cluster for good (UnregisterBroker): its registration goes. Refused
    /// while it is not fenced (alive, as far as the controller knows) or a partition still
    /// lists it.
    UnregisterBroker {
        broker: i32,
    },
    CreateTopic {
        name: String,
        id: Uuid,
        configs: BTreeMap<String, String>,
        /// Replicas of each partition, preferred leader first.
        assignment: Vec<Vec<i32>>,
    },
    DeleteTopic {
        name: String,
    },
    /// Adds partitions with these replica lists.
    CreatePartitions {
        name: String,
        assignment: Vec<Vec<i32>>,
    },
    SetTopicConfigs {
        name: String,
        configs: BTreeMap<String, String>,
    },
    /// Replaces a broker's dynamic settings (validated before they are proposed); an empty
    /// map removes them.
    SetBrokerConfigs {
        broker: i32,
        configs: BTreeMap<String, String>,
    },
    /// A partition leader's change of its ISR, valid only against `partition_epoch`.
    AlterIsr {
        topic: String,
        partition: i32,
        leader: i32,
        partition_epoch: i32,
        isr: Vec<i32>,
    },
    /// Elect a leader: the preferred one, or (unclean) any live replica.
    ElectLeader {
        topic: String,
        partition: i32,
        preferred: bool,
        unclean: bool,
    },
    /// A log directory of `broker` failed: its replicas of these partitions (by topic id and
    /// index) are offline, lead nothing and leave the ISRs. Refused from an earlier
    /// incarnation of the broker (a restart brings its replicas back).
    ReplicasOffline {
        broker: i32,
        incarnation: Uuid,
        partitions: Vec<(Uuid, i32)>,
    },
    /// Start moving a partition to `target` replicas.
    Reassign {
        topic: String,
        partition: i32,
        target: Vec<i32>,
    },
    /// Cancel a reassignment in progress.
    CancelReassignment {
        topic: String,
        partition: i32,
    },
    AllocateProducerIds {
        count: i64,
    },
    /// Sets a user's SCRAM credential for a mechanism; with `only_if_absent` an existing one
    /// stays (first credentials given at every start must not undo a later change).
    UpsertScramCredential {
        user: String,
        mechanism: ScramMechanism,
        credential: ScramCredential,
        only_if_absent: bool,
    },
    DeleteScramCredential {
        user: String,
        mechanism: ScramMechanism,
    },
    /// Adds ACL bindings (validated before they are proposed); present ones stay.
    CreateAcls {
        acls: Vec<AclBinding>,
    },
    /// Removes exactly these ACL bindings; absent ones are ignored.
    DeleteAcls {
        acls: Vec<AclBinding>,
    },
    /// Sets feature levels (UpdateFeatures), all or none, as `features::apply` allows;
    /// `broker` proposed it and is named when a level is not supported.
    UpdateFeatures {
        broker: i32,
        updates: Vec<FeatureUpdate>,
    },
    /// Sets and removes client quotas (validated before they are proposed), all together.
    AlterClientQuotas {
        changes: Vec<QuotaChange>,
    },
}

/// What applying a command produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    #[default]
    Applied,
    ProducerIds {
        first: i64,
    },
    /// The command was refused; the image is unchanged.
    Rejected {
        reason: String,
    },
}

fn rejected(reason: impl Into<String>) -> CommandResult {
    CommandResult::Rejected {
        reason: reason.into(),
    }
}

impl MetadataImage {
    /// Applies a committed command. Invalid commands change nothing and say why.
    pub fn apply(&mut self, command: &MetadataCommand) -> CommandResult {
        match command {
            MetadataCommand::UpdateFeatures { broker, updates } => {
                match super::features::apply(&self.features, updates, *broker) {
                    Ok(features) => {
                        self.features = features;
                        CommandResult::Applied
                    }
                    Err(reason) => rejected(reason),
                }
            }
            MetadataCommand::InitCluster { cluster_id } => {
                if self.cluster_id.is_empty() {
                    self.cluster_id = cluster_id.clone();
                }
                CommandResult::Applied
            }
            MetadataCommand::RegisterBroker(registration) => {
                let restarted = self
                    .brokers
                    .get(&registration.id)
                    .is_some_and(|old| old.incarnation != registration.incarnation);
                if restarted {
                    // A restarted broker lost its in-memory replication state: it leads nothing
                    // and leaves the ISRs until it has caught up again as a follower.
                    if let Some(old) = self.brokers.get_mut(&registration.id) {
                        old.fenced = true;
                    }
                    self.move_leadership_off(registration.id, true);
                }
                let fresh = self
                    .brokers
                    .get(&registration.id)
                    .is_none_or(|old| old.incarnation != registration.incarnation);
                if fresh {
                    // Whatever failed in its previous life, its directories opened this time.
                    self.bring_replicas_online(registration.id);
                }
                let mut registration = registration.clone();
                registration.fenced = false;
                registration.shutting_down = false;
                self.brokers.insert(registration.id, registration);
                self.elect_offline_leaders();
                CommandResult::Applied
            }
            MetadataCommand::SetFenced { broker, fenced } => {
                let Some(registration) = self.brokers.get_mut(broker) else {
                    return rejected(format!("broker {broker} is not registered"));
                };
                registration.fenced = *fenced;
                if *fenced {
                    self.move_leadership_off(*broker, true);
                } else {
                    registration.shutting_down = false;
                    self.elect_offline_leaders();
                }
                CommandResult::Applied
            }
            MetadataCommand::BeginShutdown { broker } => {
                let Some(registration) = self.brokers.get_mut(broker) else {
                    return rejected(format!("broker {broker} is not registered"));
                };
                registration.shutting_down = true;
                // As in Kafka's KRaft mode: it leaves the ISRs too, so acks=all writes do not
                // wait for it once it has stopped.
                self.move_leadership_off(*broker, true);
                CommandResult::Applied
            }
            MetadataCommand::UnregisterBroker { broker } => {
                let Some(registration) = self.brokers.get(broker) else {
                    return rejected(format!("broker {broker} is not registered"));
                };
                if !registration.fenced {
                    return rejected(format!("broker {broker} is alive (not fenced)"));
                }
                let held = self.partitions_on(*broker);
                if !held.is_empty() {
                    return rejected(format!(
                        "broker {broker} still holds replicas of {}",
                        held.join(", ")
                    ));
                }
                self.brokers.remove(broker);
                CommandResult::Applied
            }
            MetadataCommand::CreateTopic {
                name,
                id,
                configs,
                assignment,
            } => {
                if self.topics.contains_key(name) {
                    return rejected(format!("topic `{name}` already exists"));
                }
                if assignment.is_empty() || assignment.iter().any(Vec::is_empty) {
                    return rejected("every partition needs at least one replica");
                }
                self.topics.insert(
                    name.clone(),
                    TopicImage {
                        name: name.clone(),
                        id: *id,
                        configs: configs.clone(),
                        partitions: assignment
                            .iter()
                            .cloned()
                            .map(PartitionState::new)
                            .collect(),
                    },
                );
                self.elect_offline_leaders();
                CommandResult::Applied
            }
            MetadataCommand::DeleteTopic { name } => match self.topics.remove(name) {
                Some(_) => CommandResult::Applied,
                None => rejected(format!("topic `{name}` does not exist")),
            },
            MetadataCommand::CreatePartitions { name, assignment } => {
                let Some(topic) = self.topics.get_mut(name) else {
                    return rejected(format!("topic `{name}` does not exist"));
                };
                topic
                    .partitions
                    .extend(assignment.iter().cloned().map(PartitionState::new));
                self.elect_offline_leaders();
                CommandResult::Applied
            }
            MetadataCommand::SetTopicConfigs { name, configs } => {
                let Some(topic) = self.topics.get_mut(name) else {
                    return rejected(format!("topic `{name}` does not exist"));
                };
                topic.configs = configs.clone();
                CommandResult::Applied
            }
            MetadataCommand::SetBrokerConfigs { broker, configs } => {
                if configs.is_empty() {
                    self.broker_configs.remove(broker);
                } else {
                    self.broker_configs.insert(*broker, configs.clone());
                }
                CommandResult::Applied
            }
            MetadataCommand::AlterIsr {
                topic,
                partition,
                leader,
                partition_epoch,
                isr,
            } => {
                let live = self.leader_candidates();
                let Some(state) = self.partition_mut(topic, *partition) else {
                    return rejected(format!("partition {topic}-{partition} does not exist"));
                };
                if state.leader != *leader || state.partition_epoch != *partition_epoch {
                    return rejected(format!(
                        "stale ISR change for {topic}-{partition}: leader {leader} epoch {partition_epoch}, current leader {} epoch {}",
                        state.leader, state.partition_epoch
                    ));
                }
                if isr.is_empty()
                    || !isr.contains(leader)
                    || isr.iter().any(|r| !state.replicas.contains(r))
                {
                    return rejected(format!("invalid ISR {isr:?} for {topic}-{partition}"));
                }
                // As in Kafka (KIP-841): a fenced broker, or one shutting down, does not join
                // an ISR, or acks=all writes would wait for a broker about to be gone.
                if let Some(joining) = isr
                    .iter()
                    .find(|r| !state.isr.contains(r) && state.offline.contains(r))
                {
                    return rejected(format!(
                        "broker {joining}'s replica of {topic}-{partition} is offline: it cannot join the ISR"
                    ));
                }
                if let Some(joining) = isr
                    .iter()
                    .find(|r| !state.isr.contains(r) && !live.contains(r))
                {
                    return rejected(format!(
                        "broker {joining} is fenced or shutting down: it cannot join the ISR of {topic}-{partition}"
                    ));
                }
                state.isr = isr.clone();
                state.partition_epoch += 1;
                let (topic, partition) = (topic.clone(), *partition);
                self.complete_reassignment(&topic, partition);
                CommandResult::Applied
            }
            MetadataCommand::ElectLeader {
                topic,
                partition,
                preferred,
                unclean,
            } => {
                let live = self.leader_candidates();
                let Some(state) = self.partition_mut(topic, *partition) else {
                    return rejected(format!("partition {topic}-{partition} does not exist"));
                };
                let choice = if *preferred {
                    state.replicas.first().copied().filter(|p| {
                        state.isr.contains(p) && live.contains(p) && !state.offline.contains(p)
                    })
                } else {
                    elect(state, &live, *unclean)
                };
                match choice {
                    Some(leader) if leader == state.leader => CommandResult::Applied,
                    Some(leader) => {
                        set_leader(state, leader);
                        CommandResult::Applied
                    }
                    None => rejected(format!("no eligible leader for {topic}-{partition}")),
                }
            }
            MetadataCommand::ReplicasOffline {
                broker,
                incarnation,
                partitions,
            } => {
                let Some(registration) = self.brokers.get(broker) else {
                    return rejected(format!("broker {broker} is not registered"));
                };
                if registration.incarnation != *incarnation {
                    return rejected(format!(
                        "broker {broker} restarted since its log directory failed"
                    ));
                }
                let live = self.leader_candidates();
                for (id, index) in partitions {
                    let Some(state) =
                        self.topics
                            .values_mut()
                            .find(|t| t.id == *id)
                            .and_then(|t| {
                                usize::try_from(*index)
                                    .ok()
                                    .and_then(|i| t.partitions.get_mut(i))
                            })
                    else {
                        continue;
                    };
                    take_offline(state, *broker, &live);
                }
                CommandResult::Applied
            }
            MetadataCommand::Reassign {
                topic,
                partition,
                target,
            } => {
                if target.is_empty() {
                    return rejected("a reassignment needs at least one replica");
                }
                let Some(state) = self.partition_mut(topic, *partition) else {
                    return rejected(format!("partition {topic}-{partition} does not exist"));
                };
                // Judge the target against the replicas before any move in flight: sending the
                // same reassignment twice, or a new target mid-move, must not count replicas
                // still catching up as already there.
                let in_flight = !state.adding.is_empty() || !state.removing.is_empty();
                let current_target: Vec<i32> = state
                    .replicas
                    .iter()
                    .copied()
                    .filter(|r| !state.removing.contains(r))
                    .collect();
                if in_flight && current_target == *target {
                    return CommandResult::Applied;
                }
                let original: Vec<i32> = state
                    .replicas
                    .iter()
                    .copied()
                    .filter(|r| !state.adding.contains(r))
                    .collect();
                // Replicas = target first (so the preferred leader is the target's), then the
                // old replicas being removed; new ones join the ISR once they catch up.
                let adding: Vec<i32> = target
                    .iter()
                    .copied()
                    .filter(|r| !original.contains(r))
                    .collect();
                let removing: Vec<i32> = original
                    .iter()
                    .copied()
                    .filter(|r| !target.contains(r))
                    .collect();
                let mut replicas = target.clone();
                replicas.extend(removing.iter().copied());
                state.replicas = replicas;
                state.adding = adding;
                state.removing = removing;
                state.partition_epoch += 1;
                let (topic, partition) = (topic.clone(), *partition);
                self.complete_reassignment(&topic, partition);
                CommandResult::Applied
            }
            MetadataCommand::CancelReassignment { topic, partition } => {
                let Some(state) = self.partition_mut(topic, *partition) else {
                    return rejected(format!("partition {topic}-{partition} does not exist"));
                };
                if state.adding.is_empty() && state.removing.is_empty() {
                    return rejected(format!(
                        "no reassignment in progress for {topic}-{partition}"
                    ));
                }
                let adding = std::mem::take(&mut state.adding);
                state.removing.clear();
                state.replicas.retain(|r| !adding.contains(r));
                state.isr.retain(|r| !adding.contains(r));
                state.offline.retain(|r| !adding.contains(r));
                state.partition_epoch += 1;
                CommandResult::Applied
            }
            MetadataCommand::AllocateProducerIds { count } => {
                let first = self.next_producer_id;
                self.next_producer_id += count.max(&1);
                CommandResult::ProducerIds { first }
            }
            MetadataCommand::UpsertScramCredential {
                user,
                mechanism,
                credential,
                only_if_absent,
            } => {
                let credentials = self.scram_credentials.entry(user.clone()).or_default();
                if !(*only_if_absent && credentials.contains_key(mechanism)) {
                    credentials.insert(*mechanism, credential.clone());
                }
                CommandResult::Applied
            }
            MetadataCommand::DeleteScramCredential { user, mechanism } => {
                let Some(credentials) = self.scram_credentials.get_mut(user) else {
                    return rejected(format!("user {user} has no SCRAM credential"));
                };
                if credentials.remove(mechanism).is_none() {
                    return rejected(format!("user {user} has no {mechanism} credential"));
                }
                if credentials.is_empty() {
                    self.scram_credentials.remove(user);
                }
                CommandResult::Applied
            }
            MetadataCommand::CreateAcls { acls } => {
                self.acls.extend(acls.iter().cloned());
                CommandResult::Applied
            }
            MetadataCommand::DeleteAcls { acls } => {
                for acl in acls {
                    self.acls.remove(acl);
                }
                CommandResult::Applied
            }
            MetadataCommand::AlterClientQuotas { changes } => {
                self.client_quotas.apply(changes);
                CommandResult::Applied
            }
        }
    }

    fn partition_mut(&mut self, topic: &str, index: i32) -> Option<&mut PartitionState> {
        self.topics.get_mut(topic).and_then(|t| {
            usize::try_from(index)
                .ok()
                .and_then(|i| t.partitions.get_mut(i))
        })
    }

    /// A broker that is fenced (`fence`) or shutting down leads nothing: each partition it led
    /// gets a new leader from the ISR. A fenced broker also leaves every ISR where another
    /// member remains, so the high watermark no longer waits for it.
    fn move_leadership_off(&mut self, broker: i32, fence: bool) {
        let live = self.leader_candidates();
        for topic in self.topics.values_mut() {
            for state in &mut topic.partitions {
                let mut changed = false;
                if fence && state.isr.contains(&broker) && state.isr.len() > 1 {
                    state.isr.retain(|r| *r != broker);
                    changed = true;
                }
                if state.leader == broker {
                    let next = elect(state, &live, false).unwrap_or(NO_LEADER);
                    set_leader(state, next);
                    changed = false;
                }
                if changed {
                    state.partition_epoch += 1;
                }
            }
        }
    }

    /// A broker started again: its replicas that were offline (a failed log directory) are
    /// back, and may catch up and lead again.
    fn bring_replicas_online(&mut self, broker: i32) {
        for topic in self.topics.values_mut() {
            for state in &mut topic.partitions {
                if state.offline.contains(&broker) {
                    state.offline.retain(|r| *r != broker);
                    state.partition_epoch += 1;
                }
            }
        }
    }

    /// Partitions without a leader get one when an eligible replica is live.
    fn elect_offline_leaders(&mut self) {
        let live = self.leader_candidates();
        for topic in self.topics.values_mut() {
            for state in &mut topic.partitions {
                if state.leader == NO_LEADER || !live.contains(&state.leader) {
                    if let Some(leader) = elect(state, &live, false) {
                        if leader != state.leader {
                            set_leader(state, leader);
                        }
                    }
                }
            }
        }
    }

    /// Finishes a reassignment whose new replicas are all in the ISR: the removed replicas
    /// leave, and leadership moves if the leader was one of them.
    fn complete_reassignment(&mut self, topic: &str, index: i32) {
        let live: Vec<i32> = self
            .brokers
            .keys()
            .copied()
            .filter(|id| self.is_live(*id))
            .collect();
        let Some(state) = self.partition_mut(topic, index) else {
            return;
        };
        if state.adding.is_empty() && state.removing.is_empty() {
            return;
        }
        if !state.adding.iter().all(|r| state.isr.contains(r)) {
            return;
        }
        let removing = std::mem::take(&mut state.removing);
        state.adding.clear();
        state.replicas.retain(|r| !removing.contains(r));
        state.isr.retain(|r| !removing.contains(r));
        state.offline.retain(|r| !removing.contains(r));
        if removing.contains(&state.leader) || !state.replicas.contains(&state.leader) {
            let next = elect(state, &live, false).unwrap_or(NO_LEADER);
            set_leader(state, next);
        } else {
            state.partition_epoch += 1;
        }
    }
}

/// `broker`'s replica of the partition is offline: out of the ISR while another member
/// remains (the last one stays, as when fenced, so an unclean election is still a choice),
/// and leadership goes to another in-sync replica, or nowhere.
fn take_offline(state: &mut PartitionState, broker: i32, live: &[i32]) {
    if !state.replicas.contains(&broker) || state.offline.contains(&broker) {
        return;
    }
    state.offline.push(broker);
    if state.isr.contains(&broker) && state.isr.len() > 1 {
        state.isr.retain(|r| *r != broker);
    }
    if state.leader == broker {
        let next = elect(state, live, false).unwrap_or(NO_LEADER);
        set_leader(state, next);
    } else {
        state.partition_epoch += 1;
    }
}

/// The first replica, in replica order, that is live, online and in the ISR; with `unclean`,
/// any live and online replica when no in-sync one is.
pub fn elect(state: &PartitionState, live: &[i32], unclean: bool) -> Option<i32> {
    let eligible =
        |r: &&i32| live.contains(r) && !state.removing.contains(r) && !state.offline.contains(r);
    state
        .replicas
        .iter()
        .filter(eligible)
        .find(|r| state.isr.contains(r))
        .or_else(|| {
            if unclean {
                state.replicas.iter().find(eligible)
            } else {
                None
            }
        })
        .copied()
}

fn set_leader(state: &mut PartitionState, leader: i32) {
    state.leader = leader;
    state.leader_epoch += 1;
    state.partition_epoch += 1;
    if leader != NO_LEADER && !state.isr.contains(&leader) {
        // Unclean election: the new leader's log is the truth from now on.
        state.isr = vec![leader];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(id: i32) -> MetadataCommand {
        MetadataCommand::RegisterBroker(BrokerRegistration {
            id,
            incarnation: Uuid::nil(),
            host: "127.0.0.1".into(),
            port: 9000 + id as u16,
            rack: None,
            fenced: false,
            shutting_down: false,
            endpoints: Vec::new(),
        })
    }

    fn cluster() -> MetadataImage {
        let mut image = MetadataImage::default();
        for id in 1..=3 {
            image.apply(&broker(id));
        }
        image.apply(&MetadataCommand::CreateTopic {
            name: "t".into(),
            id: Uuid::nil(),
            configs: BTreeMap::new(),
            assignment: vec![vec![1, 2, 3], vec![2, 3, 1]],
        });
        image
    }

    #[test]
    fn replicas_in_a_failed_directory_lead_nothing_and_stay_out_of_the_isr_until_their_broker_restarts(
    ) {
        let mut image = cluster();
        let offline = |incarnation| MetadataCommand::ReplicasOffline {
            broker: 1,
            incarnation,
            partitions: vec![(Uuid::nil(), 0), (Uuid::nil(), 1)],
        };
        assert_eq!(image.apply(&offline(Uuid::nil())), CommandResult::Applied);
        let led = image.partition("t", 0).cloned().expect("t-0");
        assert_eq!(
            led.leader, 2,
            "leadership moves to the next in-sync replica"
        );
        assert_eq!(led.isr, vec![2, 3]);
        assert_eq!(led.offline, vec![1]);
        let followed = image.partition("t", 1).cloned().expect("t-1");
        assert_eq!(
            followed.leader, 2,
            "a partition it followed keeps its leader"
        );
        assert_eq!(followed.isr, vec![2, 3]);
        assert_eq!(followed.offline, vec![1]);

        // It catches up on nothing: the leader may not take it back into the ISR, and no
        // election chooses it, preferred or not.
        let rejoin = MetadataCommand::AlterIsr {
            topic: "t".into(),
            partition: 0,
            leader: 2,
            partition_epoch: led.partition_epoch,
            isr: vec![2, 3, 1],
        };
        assert!(
            matches!(image.apply(&rejoin), CommandResult::Rejected { reason } if reason.contains("offline"))
        );
        let preferred = MetadataCommand::ElectLeader {
            topic: "t".into(),
            partition: 0,
            preferred: true,
            unclean: false,
        };
        assert!(matches!(
            image.apply(&preferred),
            CommandResult::Rejected { .. }
        ));
        for fenced in [2, 3] {
            image.apply(&MetadataCommand::SetFenced {
                broker: fenced,
                fenced: true,
            });
        }
        assert_eq!(
            image.partition("t", 0).map(|p| p.leader),
            Some(NO_LEADER),
            "its only live replica is offline"
        );

        // A command from before a restart is refused; the restart brings the replicas back.
        let restarted = Uuid::from_u128(7);
        image.apply(&MetadataCommand::RegisterBroker(BrokerRegistration {
            incarnation: restarted,
            ..image.brokers[&1].clone()
        }));
        assert!(image
            .partition("t", 0)
            .is_some_and(|p| p.offline.is_empty()));
        assert!(
            matches!(image.apply(&offline(Uuid::nil())), CommandResult::Rejected { reason } if reason.contains("restarted"))
        );
        assert!(image
            .partition("t", 1)
            .is_some_and(|p| p.offline.is_empty()));
        image.apply(&MetadataCommand::ElectLeader {
            topic: "t".into(),
            partition: 0,
            preferred: false,
            unclean: true,
        });
        assert_eq!(image.partition("t", 0).map(|p| p.leader), Some(1));
    }

    #[test]
    fn a_new_topic_is_led_by_its_preferred_replicas() {
        let image = cluster();
        assert_eq!(image.partition("t", 0).map(|p| p.leader), Some(1));
        assert_eq!(image.partition("t", 1).map(|p| p.leader), Some(2));
        assert_eq!(
            image.partition("t", 0).map(|p| p.isr.clone()),
            Some(vec![1, 2, 3])
        );
    }

    #[test]
    fn only_a_fenced_broker_holding_no_replica_is_unregistered() {
        let mut image = cluster();
        image.apply(&broker(4));
        let unregister = |id| MetadataCommand::UnregisterBroker { broker: id };
        assert!(
            matches!(image.apply(&unregister(4)), CommandResult::Rejected { reason } if reason.contains("alive")),
            "an unfenced broker stays"
        );
        image.apply(&MetadataCommand::SetFenced {
            broker: 4,
            fenced: true,
        });
        image.apply(&MetadataCommand::SetFenced {
            broker: 3,
            fenced: true,
        });
        assert!(
            matches!(image.apply(&unregister(3)), CommandResult::Rejected { reason } if reason.contains("t-0, t-1")),
            "a broker listed by partitions stays"
        );
        assert_eq!(image.apply(&unregister(4)), CommandResult::Applied);
        assert!(!image.brokers.contains_key(&4));
        assert!(
            matches!(image.apply(&unregister(4)), CommandResult::Rejected { reason } if reason.contains("not registered"))
        );
    }

    #[test]
    fn fencing_a_leader_elects_the_next_in_sync_replica_and_bumps_the_epoch() {
        let mut image = cluster();
        image.apply(&MetadataCommand::SetFenced {
            broker: 1,
            fenced: true,
        });
        let p = image.partition("t", 0).expect("exists");
        assert_eq!(p.leader, 2);
        assert_eq!(p.leader_epoch, 1);
        assert_eq!(p.isr, vec![2, 3]);
        image.apply(&MetadataCommand::SetFenced {
            broker: 1,
            fenced: false,
        });
        assert_eq!(
            image.partition("t", 0).map(|p| p.leader),
            Some(2),
            "no automatic move back"
        );
    }

    #[test]
    fn the_last_in_sync_replica_stays_in_the_isr_and_the_partition_goes_offline() {
        let mut image = cluster();
        image.apply(&MetadataCommand::AlterIsr {
            topic: "t".into(),
            partition: 0,
            leader: 1,
            partition_epoch: 0,
            isr: vec![1],
        });
        image.apply(&MetadataCommand::SetFenced {
            broker: 1,
            fenced: true,
        });
        let p = image.partition("t", 0).expect("exists");
        assert_eq!(p.isr, vec![1]);
        assert_eq!(p.leader, NO_LEADER);
        let refused = image.apply(&MetadataCommand::ElectLeader {
            topic: "t".into(),
            partition: 0,
            preferred: false,
            unclean: false,
        });
        assert!(matches!(refused, CommandResult::Rejected { .. }));
        image.apply(&MetadataCommand::ElectLeader {
            topic: "t".into(),
            partition: 0,
            preferred: false,
            unclean: true,
        });
        let p = image.partition("t", 0).expect("exists");
        assert_eq!(p.leader, 2);
        assert_eq!(p.isr, vec![2]);
    }

    #[test]
    fn a_stale_isr_change_is_rejected() {
        let mut image = cluster();
        let result = image.apply(&MetadataCommand::AlterIsr {
            topic: "t".into(),
            partition: 0,
            leader: 1,
            partition_epoch: 7,
            isr: vec![1],
        });
        assert!(matches!(result, CommandResult::Rejected { .. }));
        assert_eq!(image.partition("t", 0).map(|p| p.isr.len()), Some(3));
    }

    #[test]
    fn a_broker_shutting_down_or_fenced_cannot_join_an_isr() {
        let mut image = cluster();
        image.apply(&MetadataCommand::BeginShutdown { broker: 3 });
        let p = image.partition("t", 0).expect("exists").clone();
        assert_eq!(p.isr, vec![1, 2]);
        let rejoin = |image: &mut MetadataImage, epoch: i32| {
            image.apply(&MetadataCommand::AlterIsr {
                topic: "t".into(),
                partition: 0,
                leader: 1,
                partition_epoch: epoch,
                isr: vec![1, 2, 3],
            })
        };
        let refused = rejoin(&mut image, p.partition_epoch);
        assert!(
            matches!(refused, CommandResult::Rejected { .. }),
            "{refused:?}"
        );
        image.apply(&MetadataCommand::SetFenced {
            broker: 3,
            fenced: true,
        });
        let epoch = image.partition("t", 0).expect("exists").partition_epoch;
        assert!(matches!(
            rejoin(&mut image, epoch),
            CommandResult::Rejected { .. }
        ));
        image.apply(&MetadataCommand::SetFenced {
            broker: 3,
            fenced: false,
        });
        let epoch = image.partition("t", 0).expect("exists").partition_epoch;
        assert_eq!(rejoin(&mut image, epoch), CommandResult::Applied);
        // Shrinking never needs the leaving broker's consent.
        image.apply(&MetadataCommand::BeginShutdown { broker: 2 });
        assert_eq!(
            image.partition("t", 0).map(|p| p.isr.clone()),
            Some(vec![1, 3])
        );
    }

    #[test]
    fn a_reassignment_completes_when_the_new_replicas_are_in_sync() {
        let mut image = cluster();
        image.apply(&broker(4));
        image.apply(&MetadataCommand::Reassign {
            topic: "t".into(),
            partition: 0,
            target: vec![4, 2, 3],
        });
        let p = image.partition("t", 0).expect("exists").clone();
        assert_eq!(p.replicas, vec![4, 2, 3, 1]);
        assert_eq!(p.adding, vec![4]);
        assert_eq!(p.removing, vec![1]);
        image.apply(&MetadataCommand::AlterIsr {
            topic: "t".into(),
            partition: 0,
            leader: 1,
            partition_epoch: p.partition_epoch,
            isr: vec![1, 2, 3, 4],
        });
        let p = image.partition("t", 0).expect("exists");
        assert_eq!(p.replicas, vec![4, 2, 3]);
        assert!(p.adding.is_empty() && p.removing.is_empty());
        assert_eq!(
            p.leader, 4,
            "the old leader left; the new preferred replica leads"
        );
        assert!(!p.isr.contains(&1));
    }

    #[test]
    fn sending_a_reassignment_again_while_it_runs_changes_nothing() {
        let mut image = cluster();
        image.apply(&broker(4));
        let reassign = MetadataCommand::Reassign {
            topic: "t".into(),
            partition: 0,
            target: vec![4, 2, 3],
        };
        image.apply(&reassign);
        let during = image.partition("t", 0).expect("exists").clone();
        image.apply(&reassign);
        let again = image.partition("t", 0).expect("exists");
        assert_eq!(
            *again, during,
            "the second request must not finish the move early"
        );
        assert_eq!(again.leader, 1);
        assert_eq!(again.adding, vec![4]);
    }

    #[test]
    fn a_controlled_shutdown_moves_leadership_and_leaves_the_isr() {
        let mut image = cluster();
        image.apply(&MetadataCommand::BeginShutdown { broker: 2 });
        let p = image.partition("t", 1).expect("exists");
        assert_eq!(p.leader, 3);
        assert!(!p.isr.contains(&2));
        assert!(!image.partition("t", 0).expect("exists").isr.contains(&2));
    }

    #[test]
    fn producer_ids_are_handed_out_in_blocks_once() {
        let mut image = MetadataImage::default();
        assert_eq!(
            image.apply(&MetadataCommand::AllocateProducerIds { count: 100 }),
            CommandResult::ProducerIds { first: 0 }
        );
        assert_eq!(
            image.apply(&MetadataCommand::AllocateProducerIds { count: 100 }),
            CommandResult::ProducerIds { first: 100 }
        );
    }

    #[test]
    fn dynamic_broker_settings_are_kept_per_broker_and_survive_a_snapshot() {
        let mut image = cluster();
        let rate: BTreeMap<String, String> = [(
            "follower.replication.throttled.rate".to_string(),
            "1000".to_string(),
        )]
        .into();
        image.apply(&MetadataCommand::SetBrokerConfigs {
            broker: 2,
            configs: rate.clone(),
        });
        assert_eq!(image.broker_configs.get(&2), Some(&rate));
        assert_eq!(image.broker_configs.get(&1), None);
        let snapshot = serde_json::to_vec(&image).expect("an image serializes");
        let restored: MetadataImage = serde_json::from_slice(&snapshot).expect("and reads back");
        assert_eq!(restored.broker_configs.get(&2), Some(&rate));
        image.apply(&MetadataCommand::SetBrokerConfigs {
            broker: 2,
            configs: BTreeMap::new(),
        });
        assert!(image.broker_configs.is_empty());
        // An image written before dynamic settings existed reads with none.
        let mut old: serde_json::Value = serde_json::from_slice(&snapshot).expect("json");
        old.as_object_mut().map(|o| o.remove("broker_configs"));
        let old: MetadataImage = serde_json::from_value(old).expect("an older image reads");
        assert!(old.broker_configs.is_empty());
    }
}
