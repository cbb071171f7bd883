//! Applies the metadata to this broker's replicas: opens the partitions assigned to it,
//! removes the ones taken away, makes each a leader or a follower of the right leader at the
//! right epoch, and takes over or hands off group coordination with the `__consumer_offsets`
//! partitions it leads.

use std::sync::Arc;

use crate::broker::{log_config, Broker};
use crate::group::offsets;
use crate::group::OFFSETS_TOPIC;
use crate::replica::{Partition, RoleChange};
use crate::txn::TRANSACTION_TOPIC;

/// Brings the local replicas in line with the latest metadata. Idempotent; serialised.
pub async fn reconcile(broker: &Broker) {
    let _serial = broker.reconciling.lock().await;
    let image = broker.image();
    let node = broker.node_id();
    broker
        .config
        .dynamic
        .follow(Some(&crate::config::dynamic::effective(
            image
                .broker_configs
                .get(&crate::controller::image::BROKER_DEFAULTS),
            image.broker_configs.get(&node),
        )));

    // Replicas no longer assigned here (or of a deleted topic, or of an older topic that had
    // the same name) go away with their logs.
    let mut removed = Vec::new();
    {
        let partitions = broker.partitions.read();
        for (name, list) in partitions.iter() {
            for (index, partition) in list {
                let assigned = image
                    .topics
                    .get(&**name)
                    .filter(|t| t.id == partition.topic_id)
                    .and_then(|t| {
                        usize::try_from(*index)
                            .ok()
                            .and_then(|i| t.partitions.get(i))
                    })
                    .is_some_and(|state| state.replicas.contains(&node));
                if !assigned {
                    removed.push((Arc::clone(name), *index, Arc::clone(partition)));
                }
            }
        }
    }
    for (name, index, partition) in removed {
        partition.retire();
        broker.fetchers.unfollow(&partition);
        if let Some(list) = broker.partitions.write().get_mut(&name) {
            list.remove(&index);
        }
        broker.found_logs.lock().remove(&(name.to_string(), index));
        let root = partition.log_dir();
        let dir = root.join(format!("{name}-{index}"));
        let doomed = root.join(crate::log::dirs::delete_dir_name(
            &name,
            index,
            partition.topic_id,
        ));
        if let Err(e) =
            std::fs::rename(&dir, &doomed).and_then(|()| std::fs::remove_dir_all(&doomed))
        {
            tracing::warn!(dir = %dir.display(), error = %e, "could not remove a replica's log; it is removed at the next start");
        }
        tracing::info!(partition = %format!("{name}-{index}"), "replica removed");
    }
    broker.partitions.write().retain(|_, list| !list.is_empty());
    // A replica offline since its directory failed is forgotten once it is no longer
    // assigned here: assigned again, it starts afresh in an online directory.
    broker.offline_replicas.lock().retain(|(name, index)| {
        image
            .partition(name, *index)
            .is_some_and(|state| state.replicas.contains(&node))
    });

    // Brokers that may join ISRs: fenced ones and those shutting down may not.
    let eligible = image.leader_candidates();
    for topic in image.topics.values() {
        let config = broker.topic_config(topic);
        let shared: Arc<str> = broker
            .partitions
            .read()
            .get_key_value(topic.name.as_str())
            .map(|(k, _)| Arc::clone(k))
            .unwrap_or_else(|| Arc::from(topic.name.as_str()));
        for (index, state) in topic.partitions.iter().enumerate() {
            let index = index as i32;
            if !state.replicas.contains(&node)
                || state.offline.contains(&node)
                || broker
                    .offline_replicas
                    .lock()
                    .contains(&(topic.name.clone(), index))
            {
                continue;
            }
            let partition = match broker.partition(&topic.name, index) {
                Some(partition) => {
                    partition.set_config(&config, log_config(&config));
                    partition
                }
                None => match Partition::open(
                    node,
                    &broker.log_dir_for(&topic.name, index),
                    Arc::clone(&shared),
                    topic.id,
                    index,
                    &config,
                    log_config(&config),
                    broker.dir_failures.clone(),
                ) {
                    Ok(partition) => {
                        let partition = Arc::new(partition);
                        broker
                            .partitions
                            .write()
                            .entry(Arc::clone(&shared))
                            .or_default()
                            .insert(index, Arc::clone(&partition));
                        partition
                    }
                    Err(e) => {
                        tracing::error!(topic = topic.name, partition = index, error = %e, "cannot open the replica's log");
                        continue;
                    }
                },
            };
            match partition.apply_metadata(state, &eligible) {
                RoleChange::BecameLeader { epoch } => {
                    broker.fetchers.unfollow(&partition);
                    tracing::info!(partition = ?partition, epoch, isr = ?state.isr, "leading");
                }
                RoleChange::BecameFollower { leader, epoch } => {
                    broker.fetchers.follow(broker, &partition, leader, epoch);
                    tracing::info!(partition = ?partition, leader, epoch, "following");
                }
                RoleChange::BecameOffline => {
                    broker.fetchers.unfollow(&partition);
                    tracing::warn!(partition = ?partition, "no leader");
                }
                RoleChange::Unchanged => {}
            }
        }
    }

    coordinate_transactions(broker, &image);

    // Group coordination follows the leadership of the __consumer_offsets partitions.
    if let Some(topic) = image.topics.get(OFFSETS_TOPIC) {
        let count = topic.partitions.len() as i32;
        for (index, state) in topic.partitions.iter().enumerate() {
            let index = index as i32;
            let loaded = broker.coordinated.lock().get(&index).copied();
            let of_partition = |group: &str| offsets::partition_for(group, count) == index;
            match coordination(loaded, state.leader == node, state.leader_epoch) {
                Coordination::Keep => {}
                Coordination::Load => {
                    let Some(partition) = broker.partition(OFFSETS_TOPIC, index) else {
                        continue;
                    };
                    // What this broker still holds of these groups is stale: a former
                    // term's, or created by a request that raced with the last hand-off.
                    broker.groups.unload(of_partition);
                    broker.coordinated.lock().remove(&index);
                    match load_offsets(&partition) {
                        Ok(records) => {
                            let loaded = records.len();
                            broker.groups.load(records);
                            broker.coordinated.lock().insert(index, state.leader_epoch);
                            tracing::info!(
                                partition = index,
                                epoch = state.leader_epoch,
                                records = loaded,
                                "coordinating the groups of this offsets partition"
                            );
                        }
                        Err(e) => {
                            tracing::error!(partition = index, error = %e, "cannot load committed offsets")
                        }
                    }
                }
                Coordination::Unload => {
                    broker.groups.unload(of_partition);
                    broker.coordinated.lock().remove(&index);
                    tracing::info!(
                        partition = index,
                        "handed off the groups of this offsets partition"
                    );
                }
            }
        }
    }
}

/// What a broker does with the coordinator state of an internal partition (groups of a
/// `__consumer_offsets` partition, transactional ids of a `__transaction_state` one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coordination {
    Keep,
    /// (Re)load it from the log, dropping what is held: this broker leads at an epoch it
    /// has not loaded at.
    Load,
    /// Drop it: another broker leads.
    Unload,
}

/// Decides from the leader epoch the state was loaded at (`None`: not loaded), whether this
/// broker leads, and the partition's leader epoch. A broker that lost the leadership and
/// won it back between two metadata images it applied (paused, or slow to catch up with the
/// metadata log) sees only a newer epoch: the state it holds misses what the leader in
/// between wrote, so it reloads.
fn coordination(loaded: Option<i32>, leads: bool, leader_epoch: i32) -> Coordination {
    match (loaded, leads) {
        (Some(epoch), true) if epoch == leader_epoch => Coordination::Keep,
        (_, true) => Coordination::Load,
        (Some(_), false) => Coordination::Unload,
        (None, false) => Coordination::Keep,
    }
}

/// The transaction coordinator follows the leadership of the `__transaction_state`
/// partitions: a new leader loads the partition's transactional ids (and finishes the
/// transactions that were being completed), a former one hands them off.
fn coordinate_transactions(broker: &Broker, image: &crate::controller::image::MetadataImage) {
    let node = broker.config.node_id;
    let Some(topic) = image.topics.get(TRANSACTION_TOPIC) else {
        return;
    };
    let count = topic.partitions.len() as i32;
    for (index, state) in topic.partitions.iter().enumerate() {
        let index = index as i32;
        let loaded = broker.txns.coordinator_epoch(index);
        let decision = coordination(loaded, state.leader == node, state.leader_epoch);
        if decision == Coordination::Load {
            let Some(partition) = broker.partition(TRANSACTION_TOPIC, index) else {
                continue;
            };
            if loaded.is_some() {
                broker.txns.unload(index, count);
            }
            match read_all(&partition, crate::txn::log::decode_batches) {
                Ok(records) => {
                    let count = records.len();
                    let unfinished = broker.txns.load(index, state.leader_epoch, records);
                    tracing::info!(
                        partition = index,
                        records = count,
                        completing = unfinished.len(),
                        "coordinating the transactions of this transaction state partition"
                    );
                    broker.txns.resume(unfinished);
                }
                Err(e) => {
                    tracing::error!(partition = index, error = %e, "cannot load transaction state")
                }
            }
        } else if decision == Coordination::Unload {
            broker.txns.unload(index, count);
            tracing::info!(
                partition = index,
                "handed off the transactions of this transaction state partition"
            );
        }
    }
}

/// Reconciles right after this broker committed a metadata change.
pub async fn reconcile_now(broker: &Broker) {
    reconcile(broker).await;
}

/// Every offset change and transaction marker in a `__consumer_offsets` partition, oldest
/// first.
fn load_offsets(partition: &Partition) -> Result<Vec<offsets::OffsetEvent>, String> {
    read_all(partition, |bytes| {
        offsets::decode_batches(bytes).map_err(|e| e.to_string())
    })
}

/// Decodes a whole partition, batch run by batch run, oldest first.
fn read_all<T>(
    partition: &Partition,
    decode: impl Fn(bytes::Bytes) -> Result<Vec<T>, String>,
) -> Result<Vec<T>, String> {
    let mut records = Vec::new();
    let mut offset = partition.log_start_offset();
    let end = partition.log_end_offset();
    while offset < end {
        let read = partition.read(offset, 1 << 20).map_err(|e| e.to_string())?;
        if read.records.is_empty() {
            break;
        }
        let mut last = offset;
        let mut rest = &read.records[..];
        while let Some(header) = crate::log::BatchHeader::parse(rest) {
            last = header.last_offset();
            rest = rest.get(header.size()..).unwrap_or_default();
        }
        records.extend(decode(read.records)?);
        offset = last + 1;
    }
    Ok(records)
}

/// Commits an ISR change a leader decided on, in the background; a refused or failed change
/// lets the leader try again later.
pub fn propose_isr_change(
    broker: &Arc<Broker>,
    partition: &Arc<Partition>,
    change: crate::replica::IsrChange,
) {
    let broker = Arc::clone(broker);
    let partition = Arc::clone(partition);
    tokio::spawn(async move {
        let grows = change.isr.len() > partition.isr().len();
        let command = crate::controller::image::MetadataCommand::AlterIsr {
            topic: partition.topic.to_string(),
            partition: partition.index,
            leader: change.leader,
            partition_epoch: change.partition_epoch,
            isr: change.isr.clone(),
        };
        match broker.quorum.propose(command).await {
            Ok(crate::controller::image::CommandResult::Applied) => {
                if grows {
                    broker.metrics.isr_expands.inc();
                } else {
                    broker.metrics.isr_shrinks.inc();
                }
                tracing::info!(partition = ?partition, isr = ?change.isr, "ISR changed");
                reconcile(&broker).await;
            }
            Ok(other) => {
                tracing::debug!(partition = ?partition, result = ?other, "ISR change refused");
                partition.isr_change_failed();
            }
            Err(e) => {
                tracing::warn!(partition = ?partition, error = %e, "ISR change not committed");
                partition.isr_change_unknown();
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_leader_loads_and_a_former_one_unloads() {
        assert_eq!(coordination(None, true, 3), Coordination::Load);
        assert_eq!(coordination(Some(3), false, 4), Coordination::Unload);
        assert_eq!(coordination(None, false, 4), Coordination::Keep);
    }

    #[test]
    fn a_leader_keeps_what_it_loaded_at_the_same_epoch() {
        assert_eq!(coordination(Some(3), true, 3), Coordination::Keep);
    }

    #[test]
    fn a_leader_that_lost_and_won_back_the_partition_unseen_reloads() {
        // Loaded at epoch 3; another broker led at 4 and wrote; this one leads again at 5.
        assert_eq!(coordination(Some(3), true, 5), Coordination::Load);
    }
}
