//! The partition replicas this broker hosts: each wraps its on-disk log, knows whether it
//! leads or follows, and as leader tracks its followers, the ISR and the high watermark.
//! Appends wake fetches that wait for data; high-watermark advances wake `acks=all` waits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use tokio::sync::{watch, Notify};
use uuid::Uuid;

use crate::config::TopicConfig;
use crate::controller::image::{PartitionState, NO_LEADER};
use crate::log::batch::BatchHeader;
use crate::log::control::{marker_batch, Marker};
use crate::log::{
    AppendError, AppendInfo, CompactionOutcome, CompactionSettings, DirectoryFault, LogConfig,
    LogError, PartitionLog, ReadError, ReadResult, RetentionOutcome, TimestampOffset,
};
use crate::producer::{
    AbortedTxn, MarkerError, ProducerStateTable, ProducerSummary, SequenceError, Verdict,
};

pub mod dir_failure;
pub mod fetcher;
mod log_dir;
pub mod manager;

pub use self::dir_failure::DirFailures;
pub use self::log_dir::FutureReplica;

/// Why a produce to a partition was refused; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error(transparent)]
    Sequence(#[from] SequenceError),
    #[error("{0}")]
    InvalidRecord(String),
    #[error("this broker is not the leader of the partition")]
    NotLeader,
    #[error("{isr} in-sync replicas, fewer than min.insync.replicas {min}")]
    NotEnoughReplicas { isr: usize, min: usize },
    #[error("a record batch of {size} bytes is larger than a segment ({segment_bytes} bytes)")]
    RecordListTooLarge { size: usize, segment_bytes: u64 },
    #[error(transparent)]
    Marker(#[from] MarkerError),
}

/// Why an `acks=all` write was not acknowledged after it was appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplicationError {
    #[error("leadership moved before the write was replicated")]
    NotLeader,
    #[error(
        "the in-sync replicas shrank below min.insync.replicas before the write was replicated"
    )]
    NotEnoughReplicasAfterAppend,
    #[error("the write was not replicated to every in-sync replica in time")]
    Timeout,
}

/// What this broker is for a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower {
        leader: i32,
    },
    /// No leader anywhere, or not decided yet.
    Offline,
}

/// The leader's view of a follower.
#[derive(Debug, Clone, Copy)]
struct Progress {
    /// The follower's log end offset: the offset of its last fetch.
    end_offset: i64,
    /// The last time its fetch reached the leader's log end.
    caught_up_at: Instant,
}

/// Role, replica set and ISR as the metadata gives them, plus the leader's follower progress.
#[derive(Debug)]
struct Replication {
    role: Role,
    leader_epoch: i32,
    partition_epoch: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    followers: HashMap<i32, Progress>,
    /// An ISR change is being committed; don't propose another until it lands.
    isr_change_in_flight: bool,
    /// The follower an in-flight expansion adds. From the moment the expansion is proposed it
    /// counts in the ISR for the high watermark (Kafka's "maximal ISR", KIP-497): the
    /// controller may commit it at any time and elect it leader, so no record it lacks may be
    /// acknowledged meanwhile.
    joining: Option<i32>,
    /// The brokers whose replicas may join the ISR: registered, neither fenced nor shutting
    /// down (the controller refuses the others).
    eligible: Vec<i32>,
}

/// An ISR change the leader wants committed (the caller proposes it to the controller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<i32>,
}

/// How a metadata update changed this replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleChange {
    Unchanged,
    BecameLeader { epoch: i32 },
    BecameFollower { leader: i32, epoch: i32 },
    BecameOffline,
}

struct State {
    log: PartitionLog,
    producers: ProducerStateTable,
    /// Counts truncations, so a copy of the log (a move to another log directory) knows
    /// when what it copied is no longer the log's.
    rewrites: u64,
}

/// One partition replica on this broker. On a single broker it is always the leader, and the
/// high watermark is the log end offset.
pub struct Partition {
    pub topic: Arc<str>,
    pub topic_id: Uuid,
    pub index: i32,
    state: RwLock<State>,
    waiters: Mutex<Vec<Arc<Notify>>>,
    /// `flush.messages=1`: every acknowledged write is fsynced first, by group commit.
    sync_every_write: AtomicBool,
    /// The offset up to which the log is known fsynced; holding the lock makes a caller
    /// the one that syncs, and the ones queued behind it usually find their write covered.
    synced_through: tokio::sync::Mutex<i64>,
    /// One compaction at a time per partition.
    cleaning: Mutex<()>,
    /// This broker's id.
    node: i32,
    replication: Mutex<Replication>,
    /// The high watermark: records below it are on every in-sync replica.
    high_watermark: watch::Sender<i64>,
    /// `min.insync.replicas` of the topic.
    min_insync: std::sync::atomic::AtomicUsize,
    /// `cleanup.policy` includes `compact`: every record needs a key.
    compacted: AtomicBool,
    /// A move to another log directory in progress.
    moving: Mutex<Option<Arc<log_dir::FutureLog>>>,
    /// Where an I/O error that fails the log directory is reported.
    faults: DirFailures,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.index)
    }
}

impl Partition {
    /// Wraps an open log, restoring the idempotent producer state from the newest snapshot
    /// and the batches written after it.
    pub fn new(
        node: i32,
        topic: Arc<str>,
        topic_id: Uuid,
        index: i32,
        config: &TopicConfig,
        log: PartitionLog,
    ) -> Result<Partition, LogError> {
        let producers = restore_producers(&log)?;
        let end = log.log_end_offset();
        let start = log.log_start_offset();
        Ok(Partition {
            topic,
            topic_id,
            index,
            state: RwLock::new(State {
                log,
                producers,
                rewrites: 0,
            }),
            waiters: Mutex::new(Vec::new()),
            sync_every_write: AtomicBool::new(config.flush_messages <= 1),
            synced_through: tokio::sync::Mutex::new(end),
            cleaning: Mutex::new(()),
            node,
            replication: Mutex::new(Replication {
                role: Role::Offline,
                leader_epoch: -1,
                partition_epoch: -1,
                replicas: Vec::new(),
                isr: Vec::new(),
                followers: HashMap::new(),
                isr_change_in_flight: false,
                joining: None,
                eligible: Vec::new(),
            }),
            // Unknown until the leader learns its followers' progress: start at the log start.
            high_watermark: watch::channel(start).0,
            min_insync: std::sync::atomic::AtomicUsize::new(config.min_insync_replicas),
            compacted: AtomicBool::new(config.cleanup_compact),
            moving: Mutex::new(None),
            faults: DirFailures::default(),
        })
    }

    /// Opens (recovering if needed) the log of `topic`-`index` under `dir`; I/O errors that
    /// fail the directory, then and later, go to `faults`.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        node: i32,
        dir: &std::path::Path,
        topic: Arc<str>,
        topic_id: Uuid,
        index: i32,
        topic_config: &TopicConfig,
        config: LogConfig,
        faults: DirFailures,
    ) -> Result<Partition, LogError> {
        let dir = dir.join(format!("{topic}-{index}"));
        let opened = claim_dir(&dir, topic_id)
            .and_then(|()| PartitionLog::open(&dir, config))
            .and_then(|log| Partition::new(node, topic, topic_id, index, topic_config, log));
        match opened {
            Ok(partition) => Ok(Partition {
                faults,
                ..partition
            }),
            Err(e) => {
                if let Some(io) = e.directory_fault() {
                    faults.report(io);
                }
                Err(e)
            }
        }
    }

    /// Passes `result` on, reporting an I/O error that fails the log directory.
    fn noted<T, E: DirectoryFault>(&self, result: Result<T, E>) -> Result<T, E> {
        if let Err(e) = &result {
            if let Some(io) = e.directory_fault() {
                self.faults.report(io);
            }
        }
        result
    }

    /// Appends the batches of a Produce request and wakes every fetch waiting on this
    /// partition. A retried idempotent batch is answered with where it already is.
    pub fn append(&self, records: &[u8], acks_all: bool) -> Result<AppendInfo, ProduceError> {
        self.append_as(records, acks_all, false)
    }

    /// Appends a coordinator's own batch (transactional offsets of TxnOffsetCommit): it
    /// carries the producer's id and epoch but no sequence, so only the epoch is checked (a
    /// fenced producer's offsets are refused).
    pub fn append_from_coordinator(&self, records: &[u8]) -> Result<AppendInfo, ProduceError> {
        self.append_as(records, true, true)
    }

    fn append_as(
        &self,
        records: &[u8],
        acks_all: bool,
        from_coordinator: bool,
    ) -> Result<AppendInfo, ProduceError> {
        let idempotent = idempotent_batch(records)?;
        let (epoch, isr) = {
            let replication = self.replication.lock();
            if replication.role != Role::Leader {
                return Err(ProduceError::NotLeader);
            }
            (replication.leader_epoch, replication.isr.len())
        };
        let min = self.min_insync.load(Ordering::Relaxed);
        if acks_all && isr < min {
            return Err(ProduceError::NotEnoughReplicas { isr, min });
        }
        if self.compacted.load(Ordering::Relaxed) {
            require_keys(records)?;
        }
        let (compression, max_batch_bytes) = {
            let state = self.state.read();
            let config = state.log.config();
            (config.compression, config.max_batch_bytes)
        };
        // Outside the write lock: re-compressing costs far more than the append.
        let converted = crate::log::to_topic_codec(records, max_batch_bytes, compression)?;
        let records = converted.as_deref().unwrap_or(records);
        let mut state = self.state.write();
        // Kafka refuses a batch no segment could hold (a request carries one per partition).
        let segment_bytes = state.log.config().segment_bytes;
        let mut rest = records;
        while let Some(header) = BatchHeader::parse(rest) {
            if header.size() as u64 > segment_bytes {
                return Err(ProduceError::RecordListTooLarge {
                    size: header.size(),
                    segment_bytes,
                });
            }
            rest = rest.get(header.size()..).unwrap_or_default();
        }
        if let Some(header) = idempotent.as_ref().filter(|_| from_coordinator) {
            state.producers.check_epoch(header)?;
        }
        if let Some(header) = idempotent.as_ref().filter(|_| !from_coordinator) {
            if let Verdict::Duplicate(batch) = state.producers.check(header)? {
                tracing::debug!(partition = ?self, producer_id = header.producer_id, first_seq = batch.first_seq, "duplicate batch acknowledged");
                return Ok(AppendInfo {
                    base_offset: batch.base_offset,
                    last_offset: batch.last_offset,
                    max_timestamp: header.max_timestamp,
                    batch_count: 0,
                    record_count: 0,
                    bytes: 0,
                });
            }
        }
        let segments_before = state.log.segment_count();
        let info = self.noted(state.log.append(records, epoch))?;
        if let Some(header) = &idempotent {
            state.producers.record(header, info.base_offset);
        }
        self.after_append(&mut state, segments_before);
        let end = state.log.log_end_offset();
        drop(state);
        self.advance_high_watermark(end);
        self.wake_fetches();
        Ok(info)
    }

    /// Writes a transaction marker for `producer_id` (WriteTxnMarkers, as leader): ends its
    /// open transaction here, and for an abort records the aborted range for
    /// `read_committed` fetches.
    pub fn append_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        marker: Marker,
    ) -> Result<AppendInfo, ProduceError> {
        let epoch = {
            let replication = self.replication.lock();
            if replication.role != Role::Leader {
                return Err(ProduceError::NotLeader);
            }
            replication.leader_epoch
        };
        let batch = marker_batch(
            producer_id,
            producer_epoch,
            marker,
            crate::log::unix_millis(),
        )
        .map_err(ProduceError::InvalidRecord)?;
        let mut state = self.state.write();
        state
            .producers
            .check_marker(producer_id, producer_epoch, marker.coordinator_epoch)?;
        let segments_before = state.log.segment_count();
        let info = self.noted(state.log.append(&batch, epoch))?;
        state
            .producers
            .end_transaction(producer_id, producer_epoch, marker, info.base_offset);
        self.after_append(&mut state, segments_before);
        let end = state.log.log_end_offset();
        drop(state);
        self.advance_high_watermark(end);
        self.wake_fetches();
        Ok(info)
    }

    /// Producer-state upkeep after an append: forget transactions settled below the high
    /// watermark, and snapshot the state when a segment rolled (a snapshot per segment bounds
    /// the log scanned to rebuild the state after a crash).
    fn after_append(&self, state: &mut State, segments_before: usize) {
        state.producers.prune_completed(self.high_watermark());
        if state.log.segment_count() != segments_before && !state.producers.is_empty() {
            let end = state.log.log_end_offset();
            if let Err(e) = state.producers.write_snapshot(state.log.dir(), end) {
                tracing::warn!(partition = ?self, error = %e, "could not snapshot producer state");
            }
        }
    }

    fn wake_fetches(&self) {
        let waiters = std::mem::take(&mut *self.waiters.lock());
        for waiter in waiters {
            waiter.notify_one();
        }
    }

    /// Appends batches fetched from the leader, offsets and epochs as they are.
    pub fn append_replicated(&self, records: &[u8]) -> Result<AppendInfo, AppendError> {
        let mut state = self.state.write();
        let segments_before = state.log.segment_count();
        let info = self.noted(state.log.append_replicated(records))?;
        let mut rest = records;
        while let Some(header) = BatchHeader::parse(rest) {
            let batch = rest.get(..header.size()).unwrap_or_default();
            state.producers.replay(&header, batch);
            rest = rest.get(header.size()..).unwrap_or_default();
        }
        self.after_append(&mut state, segments_before);
        Ok(info)
    }

    /// Removes everything at and above `offset` (a follower matching its new leader's log).
    pub fn truncate_to(&self, offset: i64) -> Result<i64, LogError> {
        let mut state = self.state.write();
        state.rewrites += 1;
        self.noted(state.log.truncate_to(offset))?;
        let end = state.log.log_end_offset();
        state.producers = self.noted(restore_producers(&state.log))?;
        drop(state);
        self.high_watermark.send_if_modified(|hw| {
            let changed = *hw > end;
            *hw = (*hw).min(end);
            changed
        });
        Ok(end)
    }

    /// Empties the log and restarts it at `offset` (a follower far behind the leader's start).
    pub fn truncate_fully_and_start_at(&self, offset: i64) -> Result<(), LogError> {
        let mut state = self.state.write();
        state.rewrites += 1;
        self.noted(state.log.truncate_fully_and_start_at(offset))?;
        state.producers = ProducerStateTable::default();
        if let Err(e) = crate::producer::remove_snapshots(state.log.dir()) {
            tracing::warn!(partition = ?self, error = %e, "could not remove producer snapshots of the emptied log");
        }
        drop(state);
        self.high_watermark.send_replace(offset);
        Ok(())
    }

    /// The epoch of the last batch in the log, for OffsetForLeaderEpoch.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.state.read().log.latest_epoch()
    }

    /// Kafka's OffsetForLeaderEpoch answer: the largest epoch at or below `epoch` and the
    /// offset where it ended.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        self.state.read().log.end_offset_for_epoch(epoch)
    }

    /// Applies the partition's state from the metadata: role, epochs, replicas and ISR, and
    /// which brokers' replicas may join the ISR (`eligible`: neither fenced nor shutting down,
    /// as the controller requires).
    pub fn apply_metadata(&self, state: &PartitionState, eligible: &[i32]) -> RoleChange {
        let mut replication = self.replication.lock();
        let role = if state.leader == self.node {
            Role::Leader
        } else if state.leader == NO_LEADER {
            Role::Offline
        } else {
            Role::Follower {
                leader: state.leader,
            }
        };
        let epoch_changed = replication.leader_epoch != state.leader_epoch;
        let change = match role {
            _ if role == replication.role && !epoch_changed => RoleChange::Unchanged,
            Role::Leader => RoleChange::BecameLeader {
                epoch: state.leader_epoch,
            },
            Role::Follower { leader } => RoleChange::BecameFollower {
                leader,
                epoch: state.leader_epoch,
            },
            Role::Offline => RoleChange::BecameOffline,
        };
        if change != RoleChange::Unchanged {
            // A new term: what we knew of followers belongs to the old one.
            replication.followers.clear();
        }
        if replication.partition_epoch != state.partition_epoch {
            replication.isr_change_in_flight = false;
            replication.joining = None;
        }
        replication.role = role;
        replication.leader_epoch = state.leader_epoch;
        replication.partition_epoch = state.partition_epoch;
        replication.replicas = state.replicas.clone();
        replication.isr = state.isr.clone();
        replication.eligible = eligible.to_vec();
        drop(replication);
        if role == Role::Leader {
            let end = self.log_end_offset();
            self.advance_high_watermark(end);
        }
        // Waiting fetches and acks=all writes re-check the role.
        self.wake_fetches();
        self.high_watermark.send_modify(|_| {});
        change
    }

    /// The replica is leaving this broker (reassigned away, or its topic deleted): it leads
    /// nothing from now on, and writes waiting for replication hear NOT_LEADER_OR_FOLLOWER,
    /// so idempotent producers retry with the same sequence elsewhere.
    pub fn retire(&self) {
        self.cancel_move();
        {
            let mut replication = self.replication.lock();
            replication.role = Role::Offline;
            replication.followers.clear();
            replication.joining = None;
        }
        self.wake_fetches();
        self.high_watermark.send_modify(|_| {});
    }

    /// Runs `f` if this replica follows `leader` at `epoch`, and keeps it so until `f`
    /// returns (metadata and retirement wait); `None`, without running `f`, otherwise. A
    /// follower applies what a leader answered through this, so a late answer of a leader it
    /// no longer follows (it may lead now) changes nothing. `f` must not ask for the role.
    pub fn while_following<R>(&self, leader: i32, epoch: i32, f: impl FnOnce() -> R) -> Option<R> {
        let replication = self.replication.lock();
        if replication.role != (Role::Follower { leader }) || replication.leader_epoch != epoch {
            return None;
        }
        let result = f();
        drop(replication);
        Some(result)
    }

    pub fn role(&self) -> (Role, i32) {
        let replication = self.replication.lock();
        (replication.role, replication.leader_epoch)
    }

    pub fn isr(&self) -> Vec<i32> {
        self.replication.lock().isr.clone()
    }

    pub fn replicas(&self) -> Vec<i32> {
        self.replication.lock().replicas.clone()
    }

    /// Recomputes the high watermark as leader: the smallest log end among the ISR, given
    /// the leader's own end `leader_end`. It never moves back.
    fn advance_high_watermark(&self, leader_end: i64) {
        // The high watermark moves under the replication lock, so a follower's ISR join is
        // judged against the high watermark as it stands (see `record_follower_fetch`).
        let advanced = {
            let replication = self.replication.lock();
            if replication.role != Role::Leader {
                return;
            }
            let mut target = leader_end;
            for member in replication.isr.iter().chain(replication.joining.iter()) {
                if *member == self.node {
                    continue;
                }
                match replication.followers.get(member) {
                    Some(progress) => target = target.min(progress.end_offset),
                    // Not heard from in this term: its end is unknown, wait for it.
                    None => return,
                }
            }
            self.high_watermark.send_if_modified(|hw| {
                if target > *hw {
                    *hw = target;
                    true
                } else {
                    false
                }
            })
        };
        if advanced {
            // Consumers wait for the high watermark, not for the append.
            self.wake_fetches();
        }
    }

    /// Records a follower's fetch at `fetch_offset` (its log end). Returns an ISR expansion
    /// to commit when the follower has caught up and is not in the ISR yet.
    pub fn record_follower_fetch(
        &self,
        follower: i32,
        fetch_offset: i64,
        now: Instant,
    ) -> Option<IsrChange> {
        let leader_end = self.log_end_offset();
        let change = {
            let mut replication = self.replication.lock();
            if replication.role != Role::Leader || !replication.replicas.contains(&follower) {
                return None;
            }
            // Read under the lock the high watermark moves under: the follower joins only
            // with every record below it.
            let high_watermark = self.high_watermark();
            let previous = replication.followers.get(&follower).map(|p| p.caught_up_at);
            let caught_up_at = if fetch_offset >= leader_end {
                now
            } else {
                previous.unwrap_or_else(|| now - Duration::from_secs(3600))
            };
            replication.followers.insert(
                follower,
                Progress {
                    end_offset: fetch_offset.min(leader_end),
                    caught_up_at,
                },
            );
            let joins = !replication.isr.contains(&follower)
                && replication.eligible.contains(&follower)
                && fetch_offset >= high_watermark
                && !replication.isr_change_in_flight;
            if joins {
                replication.isr_change_in_flight = true;
                replication.joining = Some(follower);
                let mut isr = replication.isr.clone();
                isr.push(follower);
                isr.sort_unstable();
                Some(IsrChange {
                    leader: self.node,
                    leader_epoch: replication.leader_epoch,
                    partition_epoch: replication.partition_epoch,
                    isr,
                })
            } else {
                None
            }
        };
        self.advance_high_watermark(leader_end);
        change
    }

    /// As leader: the ISR without the followers that have not caught up within `lag`.
    pub fn isr_shrink(&self, lag: Duration, now: Instant) -> Option<IsrChange> {
        let mut replication = self.replication.lock();
        if replication.role != Role::Leader || replication.isr_change_in_flight {
            return None;
        }
        // An expansion whose outcome is unknown stops counting once its follower falls behind
        // for as long as an ISR member would be dropped.
        if let Some(joining) = replication.joining {
            let behind = replication
                .followers
                .get(&joining)
                .is_none_or(|progress| now.duration_since(progress.caught_up_at) > lag);
            if behind && !replication.isr.contains(&joining) {
                replication.joining = None;
            }
        }
        let lagging: Vec<i32> = replication
            .isr
            .iter()
            .copied()
            .filter(|m| *m != self.node)
            .filter(|m| match replication.followers.get(m) {
                Some(progress) => now.duration_since(progress.caught_up_at) > lag,
                None => false,
            })
            .collect();
        if lagging.is_empty() {
            return None;
        }
        replication.isr_change_in_flight = true;
        let isr = replication
            .isr
            .iter()
            .copied()
            .filter(|m| !lagging.contains(m))
            .collect();
        Some(IsrChange {
            leader: self.node,
            leader_epoch: replication.leader_epoch,
            partition_epoch: replication.partition_epoch,
            isr,
        })
    }

    /// A proposed ISR change failed to commit: allow another attempt.
    pub fn isr_change_failed(&self) {
        let mut replication = self.replication.lock();
        replication.isr_change_in_flight = false;
        replication.joining = None;
    }

    /// A proposed ISR change may or may not have been committed (the quorum did not answer):
    /// allow another attempt, but keep counting a joining follower for the high watermark
    /// until the metadata shows the outcome or the follower falls behind.
    pub fn isr_change_unknown(&self) {
        self.replication.lock().isr_change_in_flight = false;
    }

    /// As follower: the leader's high watermark, bounded by what this replica has.
    pub fn set_follower_high_watermark(&self, leader_high_watermark: i64) {
        let end = self.log_end_offset();
        self.high_watermark
            .send_replace(leader_high_watermark.min(end));
    }

    /// Waits until the high watermark reaches `end` (an `acks=all` write ending there).
    pub async fn wait_replicated(
        &self,
        end: i64,
        timeout: Duration,
    ) -> Result<(), ReplicationError> {
        let mut watermark = self.high_watermark.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if *watermark.borrow_and_update() >= end {
                return Ok(());
            }
            {
                let replication = self.replication.lock();
                if replication.role != Role::Leader {
                    return Err(ReplicationError::NotLeader);
                }
                if replication.isr.len() < self.min_insync.load(Ordering::Relaxed) {
                    return Err(ReplicationError::NotEnoughReplicasAfterAppend);
                }
            }
            match tokio::time::timeout_at(deadline, watermark.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return Err(ReplicationError::Timeout),
            }
        }
    }

    /// Reads for a consumer: only what the high watermark has committed.
    pub fn read_committed(&self, offset: i64, max_bytes: usize) -> Result<ReadResult, ReadError> {
        let high_watermark = self.high_watermark();
        self.noted(
            self.state
                .read()
                .log
                .read_up_to(offset, max_bytes, high_watermark),
        )
    }

    /// Reads for a `read_committed` consumer: only what is below the last stable offset, with
    /// the aborted transactions whose records the read may hold.
    pub fn read_stable(
        &self,
        offset: i64,
        max_bytes: usize,
    ) -> Result<(ReadResult, Vec<AbortedTxn>), ReadError> {
        let high_watermark = self.high_watermark();
        let state = self.state.read();
        let stable = state
            .producers
            .first_unstable_offset(high_watermark)
            .map_or(high_watermark, |first| first.min(high_watermark));
        let read = self.noted(state.log.read_up_to(offset, max_bytes, stable))?;
        let mut end = offset;
        let mut rest = &read.records[..];
        while let Some(header) = BatchHeader::parse(rest) {
            end = header.last_offset() + 1;
            rest = rest.get(header.size()..).unwrap_or_default();
        }
        let aborted = if end > offset {
            state.producers.aborted_between(offset, end)
        } else {
            Vec::new()
        };
        Ok((read, aborted))
    }

    /// The last stable offset: below it every transaction is decided and replicated.
    pub fn last_stable_offset(&self) -> i64 {
        let high_watermark = self.high_watermark();
        self.state
            .read()
            .producers
            .first_unstable_offset(high_watermark)
            .map_or(high_watermark, |first| first.min(high_watermark))
    }

    /// Whether the producer has an open transaction here at `epoch` (it was verified, or
    /// wrote, since the transaction began).
    pub fn in_transaction(&self, producer_id: i64, epoch: i16) -> bool {
        self.state
            .read()
            .producers
            .in_transaction(producer_id, epoch)
    }

    /// The producers writing to this partition, for DescribeProducers.
    pub fn producers(&self) -> Vec<ProducerSummary> {
        self.state.read().producers.summaries()
    }

    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult, ReadError> {
        self.noted(self.state.read().log.read(offset, max_bytes))
    }

    pub fn log_start_offset(&self) -> i64 {
        self.state.read().log.log_start_offset()
    }

    pub fn log_end_offset(&self) -> i64 {
        self.state.read().log.log_end_offset()
    }

    /// The offset below which records are committed; consumers never read past it.
    pub fn high_watermark(&self) -> i64 {
        *self.high_watermark.borrow()
    }

    /// The first record at or after the log start with a timestamp of at least `timestamp`.
    pub fn offset_for_timestamp(
        &self,
        timestamp: i64,
    ) -> Result<Option<TimestampOffset>, ReadError> {
        self.noted(self.state.read().log.offset_for_timestamp(timestamp))
    }

    /// The first record with the log's largest timestamp.
    pub fn max_timestamp_record(&self) -> Result<Option<TimestampOffset>, ReadError> {
        self.noted(self.state.read().log.max_timestamp_record())
    }

    /// The leader epoch of the first record, when the epoch cache knows it.
    pub fn earliest_epoch(&self) -> Option<i32> {
        self.state.read().log.earliest_epoch()
    }

    pub fn size_bytes(&self) -> u64 {
        self.state.read().log.size_bytes()
    }

    /// Registers `notify` to be woken by the next append. A wake that comes before the
    /// waiter starts waiting is kept as a permit, so no append is missed.
    pub fn watch(&self, notify: &Arc<Notify>) {
        let mut waiters = self.waiters.lock();
        // Drop waiters whose fetch has finished (we hold the only reference) so an idle
        // partition polled by many fetches does not collect them.
        waiters.retain(|w| Arc::strong_count(w) > 1);
        if !waiters.iter().any(|w| Arc::ptr_eq(w, notify)) {
            waiters.push(Arc::clone(notify));
        }
    }

    /// Whether the log stamps batches with their append time (`LogAppendTime`).
    pub fn log_append_time(&self) -> bool {
        self.state.read().log.config().log_append_time
    }

    /// Whether acknowledgements wait for an fsync ([`Partition::sync_through`]).
    pub fn syncs_every_write(&self) -> bool {
        self.sync_every_write.load(Ordering::Relaxed)
    }

    /// Waits until everything below `end_offset` is fsynced. Concurrent callers share
    /// fsyncs: one syncs the whole log while the others queue, and most of them then find
    /// their write already covered (group commit).
    pub async fn sync_through(self: &Arc<Self>, end_offset: i64) -> Result<(), LogError> {
        let mut synced = self.synced_through.lock().await;
        if *synced >= end_offset {
            return Ok(());
        }
        let partition = Arc::clone(self);
        let flushed = tokio::task::spawn_blocking(move || {
            let mut state = partition.state.write();
            let end = state.log.log_end_offset();
            partition.noted(state.log.flush()).map(|()| end)
        })
        .await
        .map_err(|e| {
            LogError::from(crate::log::IoError {
                op: "fsync",
                path: std::path::PathBuf::from(format!("{}-{}", self.topic, self.index)),
                source: std::io::Error::other(e.to_string()),
            })
        })??;
        *synced = flushed;
        Ok(())
    }

    /// Applies changed topic settings.
    pub fn set_config(&self, topic: &TopicConfig, log: LogConfig) {
        self.sync_every_write
            .store(topic.flush_messages <= 1, Ordering::Relaxed);
        self.state.write().log.set_config(log);
    }

    pub fn apply_retention(
        &self,
        now_ms: i64,
        retention_ms: i64,
        retention_bytes: i64,
    ) -> Result<RetentionOutcome, LogError> {
        let mut state = self.state.write();
        let outcome = self.noted(state.log.apply_retention(
            now_ms,
            retention_ms,
            retention_bytes,
        ))?;
        let start = state.log.log_start_offset();
        state.producers.forget_before(start);
        Ok(outcome)
    }

    pub fn delete_records_before(&self, offset: i64) -> Result<i64, LogError> {
        let mut state = self.state.write();
        let start = self.noted(state.log.delete_records_before(offset))?;
        let log_start = state.log.log_start_offset();
        state.producers.forget_before(log_start);
        Ok(start)
    }

    /// Compacts the log: plans under the read lock, cleans with no lock held, and swaps the
    /// cleaned segments in under the write lock, so appends wait only for the swap.
    pub fn compact(
        &self,
        now_ms: i64,
        settings: &CompactionSettings,
    ) -> Result<Option<CompactionOutcome>, LogError> {
        let Some(_cleaning) = self.cleaning.try_lock() else {
            return Ok(None);
        };
        let planned = {
            let state = self.state.read();
            let high_watermark = self.high_watermark();
            let stable_end = state
                .producers
                .first_unstable_offset(high_watermark)
                .map_or(high_watermark, |first| first.min(high_watermark));
            let transactions = crate::log::Transactions {
                stable_end: Some(stable_end),
                aborted: state.producers.aborted_between(i64::MIN, i64::MAX),
            };
            self.noted(
                state
                    .log
                    .compaction_plan_with(now_ms, settings, transactions),
            )?
        };
        let Some(plan) = planned else {
            return Ok(None);
        };
        let cleaned = self.noted(plan.run())?;
        self.noted(self.state.write().log.install_cleaned(cleaned))
            .map(Some)
    }

    pub fn flush_if_due(&self, now: std::time::Instant) -> Result<bool, LogError> {
        self.noted(self.state.write().log.flush_if_due(now))
    }

    pub fn flush(&self) -> Result<(), LogError> {
        self.noted(self.state.write().log.flush())
    }

    /// Flushes and closes the log, marking a clean shutdown; used once nothing else holds it.
    pub fn close(self) -> Result<(), LogError> {
        let state = self.state.into_inner();
        if !state.producers.is_empty() {
            if let Err(e) = state
                .producers
                .write_snapshot(state.log.dir(), state.log.log_end_offset())
            {
                tracing::warn!(partition = ?state.log.dir(), error = %e, "could not snapshot producer state");
            }
        }
        state.log.close()
    }
}

/// A compacted topic keeps the latest record per key, so a record without a key has no
/// place in it: refused, as Kafka does.
fn require_keys(records: &[u8]) -> Result<(), ProduceError> {
    let mut bytes = bytes::Bytes::copy_from_slice(records);
    let sets = kafka_protocol::records::RecordBatchDecoder::decode_all(&mut bytes)
        .map_err(|e| ProduceError::InvalidRecord(format!("cannot read the records: {e}")))?;
    if sets
        .iter()
        .flat_map(|set| set.records.iter())
        .any(|r| r.key.is_none())
    {
        return Err(ProduceError::InvalidRecord(
            "a compacted topic cannot accept a record without a key".to_string(),
        ));
    }
    Ok(())
}

/// File in a partition directory naming the topic id the log belongs to (Kafka's layout).
const PARTITION_METADATA_FILE: &str = "partition.metadata";

/// Makes `dir` the log of topic `topic_id`: a directory left by an older topic of the same
/// name (deleted while this broker was away) is emptied first.
fn claim_dir(dir: &std::path::Path, topic_id: Uuid) -> Result<(), LogError> {
    let io = |op: &'static str, path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| LogError::from(crate::log::IoError { op, path, source })
    };
    let file = dir.join(PARTITION_METADATA_FILE);
    let expected = format!("version: 0\ntopic_id: {topic_id}\n");
    match std::fs::read_to_string(&file) {
        Ok(found) if found == expected => return Ok(()),
        Ok(found) => {
            tracing::warn!(dir = %dir.display(), found = found.trim(), %topic_id, "replacing the log of an older topic with the same name");
            std::fs::remove_dir_all(dir).map_err(io("remove stale partition directory", dir))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("read", &file)(e)),
    }
    std::fs::create_dir_all(dir).map_err(io("create partition directory", dir))?;
    std::fs::write(&file, expected).map_err(io("write", &file))?;
    Ok(())
}

/// The header of the batch when `records` is one idempotent batch; an error when an
/// idempotent or transactional batch is not alone, as Kafka requires.
fn idempotent_batch(records: &[u8]) -> Result<Option<BatchHeader>, ProduceError> {
    let Some(header) = BatchHeader::parse(records) else {
        return Ok(None);
    };
    if header.is_control() {
        return Err(ProduceError::InvalidRecord(
            "control batches are written by the transaction coordinator, not by producers"
                .to_string(),
        ));
    }
    if header.is_transactional() && header.producer_id < 0 {
        return Err(ProduceError::InvalidRecord(
            "a transactional batch needs a producer id".to_string(),
        ));
    }
    if header.producer_id < 0 {
        return Ok(None);
    }
    if header.size() != records.len() {
        return Err(ProduceError::InvalidRecord(
            "an idempotent produce must carry exactly one record batch per partition".to_string(),
        ));
    }
    Ok(Some(header))
}

/// Rebuilds producer state: the newest snapshot, then every idempotent batch after it.
fn restore_producers(log: &PartitionLog) -> Result<ProducerStateTable, LogError> {
    let end = log.log_end_offset();
    let io = |source: std::io::Error| {
        LogError::from(crate::log::IoError {
            op: "restore producer state in",
            path: log.dir().to_path_buf(),
            source,
        })
    };
    let (mut table, mut offset) =
        match ProducerStateTable::load_snapshot(log.dir(), end).map_err(io)? {
            Some((table, offset)) => (table, offset),
            None => (ProducerStateTable::default(), log.log_start_offset()),
        };
    offset = offset.max(log.log_start_offset());
    while offset < end {
        let read = match log.read(offset, 1 << 20) {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(dir = %log.dir().display(), offset, error = %e, "producer state rebuilt only up to here");
                break;
            }
        };
        if read.records.is_empty() {
            break;
        }
        let mut rest = &read.records[..];
        while let Some(header) = BatchHeader::parse(rest) {
            if header.last_offset() >= offset {
                table.replay(&header, rest.get(..header.size()).unwrap_or_default());
            }
            offset = header.last_offset() + 1;
            rest = rest.get(header.size()..).unwrap_or_default();
        }
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::BrokerConfig;
    use crate::controller::image::PartitionState;
    use crate::log::batch::tests::encode_batch;

    /// Broker 1 leading a partition of replicas 1, 2, 3 with ISR [1, 2]: one record appended,
    /// followers 2 and 3 at offset 0.
    fn leader(dir: &std::path::Path) -> Partition {
        let broker = BrokerConfig::from_settings(BTreeMap::new()).expect("defaults");
        let topic = broker.topic_config(&BTreeMap::new());
        let partition = Partition::open(
            1,
            dir,
            Arc::from("t"),
            Uuid::nil(),
            0,
            &topic,
            crate::broker::log_config(&topic),
            DirFailures::default(),
        )
        .expect("a partition");
        let state = PartitionState {
            isr: vec![1, 2],
            ..PartitionState::new(vec![1, 2, 3])
        };
        partition.apply_metadata(&state, &[1, 2, 3]);
        partition
            .append(&encode_batch(1, 10, 0), true)
            .expect("appended");
        assert_eq!(partition.log_end_offset(), 1);
        partition
    }

    /// A follower whose ISR expansion is proposed counts in the ISR for the high watermark at
    /// once: the controller may commit the expansion and elect it leader at any time, so a
    /// record it lacks must not be acknowledged meanwhile (the loss a live reassignment hit).
    #[test]
    fn a_joining_follower_holds_the_high_watermark_until_it_has_the_records() {
        let dir = tempfile::tempdir().expect("a directory");
        let partition = leader(dir.path());
        let now = Instant::now();
        assert_eq!(partition.record_follower_fetch(2, 0, now), None);
        assert_eq!(partition.high_watermark(), 0);
        let change = partition
            .record_follower_fetch(3, 0, now)
            .expect("follower 3, at the high watermark, joins");
        assert_eq!(change.isr, vec![1, 2, 3]);
        // Follower 2 has the record; the ISR alone would acknowledge it now.
        assert_eq!(partition.record_follower_fetch(2, 1, now), None);
        assert_eq!(
            partition.high_watermark(),
            0,
            "acknowledged a record the joining follower lacks"
        );
        partition.record_follower_fetch(3, 1, now);
        assert_eq!(partition.high_watermark(), 1);
    }

    #[test]
    fn a_refused_expansion_stops_holding_the_high_watermark_and_an_unknown_one_until_it_lags() {
        let lag = Duration::from_secs(30);
        for definitive in [true, false] {
            let dir = tempfile::tempdir().expect("a directory");
            let partition = leader(dir.path());
            let now = Instant::now();
            partition.record_follower_fetch(2, 0, now);
            assert!(partition.record_follower_fetch(3, 0, now).is_some());
            if definitive {
                partition.isr_change_failed();
            } else {
                partition.isr_change_unknown();
                partition.record_follower_fetch(2, 1, now);
                assert_eq!(
                    partition.high_watermark(),
                    0,
                    "an unknown outcome still holds"
                );
                // Both followers fall behind for longer than an ISR member may: 2 is dropped
                // from the ISR, and 3 stops counting.
                let shrink = partition.isr_shrink(lag, now + lag * 2);
                assert_eq!(shrink.map(|c| c.isr), Some(vec![1]));
            }
            partition.record_follower_fetch(2, 1, now);
            assert_eq!(partition.high_watermark(), 1, "definitive: {definitive}");
        }
    }
}
