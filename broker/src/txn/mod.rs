//! The transaction coordinator (KIP-98, KIP-360, KIP-447, KIP-890 part 1): for every
//! transactional id whose `__transaction_state` partition this broker leads, the producer id
//! and epoch, the state of its transaction and the partitions in it.
//!
//! Every request is decided by a pure function of the stored metadata (`decide_*`), which
//! either answers at once or names the next metadata. The next metadata is written to
//! `__transaction_state` before it takes effect; while the write is in flight the id is
//! *pending* and other requests for it get `CONCURRENT_TRANSACTIONS`, as in Kafka. A
//! transaction that is prepared to commit or abort is completed by writing its markers to
//! every partition in it (`markers`), then the complete state.

pub mod log;
pub mod markers;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use kafka_protocol::ResponseError;
use parking_lot::Mutex;

use self::log::{TxnRecord, TxnValue};

/// Name of the internal topic holding the coordinator's state.
pub const TRANSACTION_TOPIC: &str = "__transaction_state";

/// The transaction coordinator's settings, under Kafka's names.
#[derive(Debug, Clone)]
pub struct TxnConfig {
    /// `transaction.state.log.num.partitions`.
    pub partitions: i32,
    /// `transaction.state.log.replication.factor`.
    pub replication_factor: i16,
    /// `transaction.state.log.min.isr`.
    pub min_isr: i32,
    /// `transaction.state.log.segment.bytes`.
    pub segment_bytes: i32,
    /// `transaction.max.timeout.ms`: the longest timeout a producer may ask for.
    pub max_timeout_ms: i32,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`.
    pub abort_interval: Duration,
    /// `transaction.remove.expired.transaction.cleanup.interval.ms`.
    pub expire_interval: Duration,
    /// `transactional.id.expiration.ms`: an id idle this long is forgotten.
    pub id_expiration_ms: i64,
    /// `transaction.partition.verification.enable` (KIP-890): a partition leader asks the
    /// coordinator before it appends a producer's first transactional batch of a transaction.
    pub verify_partitions: bool,
}

/// The states of a transaction, with Kafka's ids and names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
}

impl TxnState {
    pub fn id(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    pub fn from_id(id: i8) -> Option<TxnState> {
        Some(match id {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            6 => TxnState::Dead,
            7 => TxnState::PrepareEpochFence,
            _ => return None,
        })
    }

    /// The name DescribeTransactions and ListTransactions report.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    fn is_preparing(self) -> bool {
        matches!(
            self,
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence
        )
    }
}

/// A transactional id's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The id and epoch handed out before the current ones: a producer retrying
    /// InitProducerId after a lost answer names them (KIP-360).
    pub last_producer_id: i64,
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<(String, i32)>,
    pub start_ms: i64,
    pub last_update_ms: i64,
    /// Bumped by every stored change; a write is applied only over the metadata it was
    /// decided on.
    generation: u64,
    /// A change is being written.
    pending: bool,
}

impl TxnMetadata {
    pub fn new(transactional_id: &str, producer_id: i64, timeout_ms: i32, now: i64) -> Self {
        TxnMetadata {
            transactional_id: transactional_id.to_string(),
            producer_id,
            producer_epoch: 0,
            last_producer_id: -1,
            last_producer_epoch: -1,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            start_ms: -1,
            last_update_ms: now,
            generation: 0,
            pending: false,
        }
    }

    /// The record that stores this metadata.
    pub fn record(&self) -> TxnRecord {
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (topic, partition) in &self.partitions {
            by_topic.entry(topic).or_default().push(*partition);
        }
        TxnRecord {
            transactional_id: self.transactional_id.clone(),
            value: Some(TxnValue {
                producer_id: self.producer_id,
                producer_epoch: self.producer_epoch,
                timeout_ms: self.timeout_ms,
                state: self.state,
                partitions: by_topic
                    .into_iter()
                    .map(|(t, p)| (t.to_string(), p))
                    .collect(),
                last_update_ms: self.last_update_ms,
                start_ms: self.start_ms,
            }),
        }
    }

    fn from_value(transactional_id: String, value: TxnValue) -> TxnMetadata {
        TxnMetadata {
            transactional_id,
            producer_id: value.producer_id,
            producer_epoch: value.producer_epoch,
            last_producer_id: -1,
            last_producer_epoch: -1,
            timeout_ms: value.timeout_ms,
            state: value.state,
            partitions: value
                .partitions
                .into_iter()
                .flat_map(|(topic, ids)| ids.into_iter().map(move |p| (topic.clone(), p)))
                .collect(),
            start_ms: value.start_ms,
            last_update_ms: value.last_update_ms,
            generation: 0,
            pending: false,
        }
    }

    /// The metadata after a fence: the epoch bumped (a fresh producer id when the epoch is
    /// exhausted), so every request of the old producer is refused from now on.
    fn bumped(&self) -> TxnMetadata {
        let mut next = self.clone();
        next.last_producer_id = self.producer_id;
        next.last_producer_epoch = self.producer_epoch;
        next.producer_epoch = self.producer_epoch.saturating_add(1);
        next
    }

    fn epoch_exhausted(&self) -> bool {
        self.producer_epoch >= i16::MAX - 1
    }
}

/// What InitProducerId does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Init {
    /// Hand out a new producer id: the id is unknown, or its epoch is exhausted.
    NewProducerId,
    /// Store this metadata and answer with its producer id and epoch.
    Write(TxnMetadata),
    /// An open transaction is in the way: store this (PrepareAbort with a bumped epoch),
    /// abort it, and have the producer retry.
    AbortFirst(TxnMetadata),
    Refuse(ResponseError),
}

/// What AddPartitionsToTxn and AddOffsetsToTxn do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Add {
    /// Every partition is in the transaction already.
    AlreadyIn,
    Write(TxnMetadata),
    Refuse(ResponseError),
}

/// What EndTxn does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// A retry of an EndTxn that completed: answer success.
    Done,
    /// Store this (PrepareCommit or PrepareAbort), answer, then complete it.
    Prepare(TxnMetadata),
    Refuse(ResponseError),
}

/// Checks the producer id and epoch of a request against the stored ones.
fn check_producer(meta: &TxnMetadata, producer_id: i64, epoch: i16) -> Result<(), ResponseError> {
    if producer_id != meta.producer_id {
        return Err(ResponseError::InvalidProducerIdMapping);
    }
    if epoch != meta.producer_epoch {
        return Err(ResponseError::ProducerFenced);
    }
    if meta.pending || meta.state.is_preparing() {
        return Err(ResponseError::ConcurrentTransactions);
    }
    Ok(())
}

/// InitProducerId with a transactional id, as Kafka's coordinator decides it.
pub fn decide_init(
    meta: Option<&TxnMetadata>,
    producer_id: i64,
    producer_epoch: i16,
    timeout_ms: i32,
    now: i64,
) -> Init {
    let Some(meta) = meta else {
        return Init::NewProducerId;
    };
    if meta.pending || meta.state.is_preparing() {
        return Init::Refuse(ResponseError::ConcurrentTransactions);
    }
    // KIP-360: a producer that names its id and epoch must be the current one, or be
    // retrying the call that made it so.
    if producer_id >= 0 {
        let current = producer_id == meta.producer_id && producer_epoch == meta.producer_epoch;
        let retry =
            producer_id == meta.last_producer_id && producer_epoch == meta.last_producer_epoch;
        if !current && !retry {
            return Init::Refuse(ResponseError::ProducerFenced);
        }
        if retry && meta.state == TxnState::Empty {
            return Init::Write(meta.clone());
        }
    }
    match meta.state {
        TxnState::Ongoing => {
            let mut next = meta.bumped();
            next.state = TxnState::PrepareAbort;
            next.last_update_ms = now;
            Init::AbortFirst(next)
        }
        TxnState::Dead => Init::NewProducerId,
        _ if meta.epoch_exhausted() => Init::NewProducerId,
        _ => {
            let mut next = meta.bumped();
            next.state = TxnState::Empty;
            next.partitions.clear();
            next.timeout_ms = timeout_ms;
            next.start_ms = -1;
            next.last_update_ms = now;
            Init::Write(next)
        }
    }
}

/// AddPartitionsToTxn (or AddOffsetsToTxn, with the group's offsets partition).
pub fn decide_add(
    meta: Option<&TxnMetadata>,
    producer_id: i64,
    epoch: i16,
    partitions: &[(String, i32)],
    now: i64,
) -> Add {
    let Some(meta) = meta else {
        return Add::Refuse(ResponseError::InvalidProducerIdMapping);
    };
    if let Err(e) = check_producer(meta, producer_id, epoch) {
        return Add::Refuse(e);
    }
    if meta.state == TxnState::Ongoing && partitions.iter().all(|p| meta.partitions.contains(p)) {
        return Add::AlreadyIn;
    }
    let mut next = meta.clone();
    if meta.state != TxnState::Ongoing {
        next.partitions.clear();
        next.start_ms = now;
    }
    next.state = TxnState::Ongoing;
    next.partitions.extend(partitions.iter().cloned());
    next.last_update_ms = now;
    Add::Write(next)
}

/// Whether a partition leader may append the producer's transactional batch (KIP-890
/// verification): the partition is in its ongoing transaction at that epoch.
pub fn verify(
    meta: Option<&TxnMetadata>,
    producer_id: i64,
    epoch: i16,
    partition: &(String, i32),
) -> Result<(), ResponseError> {
    let Some(meta) = meta else {
        return Err(ResponseError::InvalidProducerIdMapping);
    };
    if producer_id != meta.producer_id {
        return Err(ResponseError::InvalidProducerIdMapping);
    }
    if epoch != meta.producer_epoch {
        return Err(ResponseError::ProducerFenced);
    }
    if meta.state == TxnState::Ongoing && meta.partitions.contains(partition) {
        Ok(())
    } else {
        Err(ResponseError::InvalidTxnState)
    }
}

/// EndTxn: commit or abort.
pub fn decide_end(
    meta: Option<&TxnMetadata>,
    producer_id: i64,
    epoch: i16,
    commit: bool,
    now: i64,
) -> End {
    let Some(meta) = meta else {
        return End::Refuse(ResponseError::InvalidProducerIdMapping);
    };
    if producer_id != meta.producer_id {
        return End::Refuse(ResponseError::InvalidProducerIdMapping);
    }
    if epoch != meta.producer_epoch {
        return End::Refuse(ResponseError::ProducerFenced);
    }
    if meta.pending {
        return End::Refuse(ResponseError::ConcurrentTransactions);
    }
    match (meta.state, commit) {
        (TxnState::Ongoing, _) => {
            let mut next = meta.clone();
            next.state = if commit {
                TxnState::PrepareCommit
            } else {
                TxnState::PrepareAbort
            };
            next.last_update_ms = now;
            End::Prepare(next)
        }
        (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => End::Done,
        (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
            End::Refuse(ResponseError::ConcurrentTransactions)
        }
        _ => End::Refuse(ResponseError::InvalidTxnState),
    }
}

/// The metadata once every marker of a prepared transaction is written.
pub fn completed(meta: &TxnMetadata, now: i64) -> TxnMetadata {
    let mut next = meta.clone();
    next.state = match meta.state {
        TxnState::PrepareCommit => TxnState::CompleteCommit,
        _ => TxnState::CompleteAbort,
    };
    next.partitions.clear();
    next.last_update_ms = now;
    next
}

/// A listing of one transaction, for ListTransactions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnListing {
    pub transactional_id: String,
    pub producer_id: i64,
    pub state: TxnState,
    pub duration_ms: i64,
}

/// The coordinator's state for the `__transaction_state` partitions this broker leads.
#[derive(Debug)]
pub struct TransactionCoordinator {
    pub config: TxnConfig,
    txns: Mutex<HashMap<String, TxnMetadata>>,
    /// Loaded partitions and the coordinator epoch (the partition's leader epoch) of each.
    loaded: Mutex<HashMap<i32, i32>>,
    /// Prepared transactions found when loading, for the timer task to complete.
    resumed: Mutex<Vec<String>>,
    resume_wake: tokio::sync::Notify,
}

impl TransactionCoordinator {
    pub fn new(config: TxnConfig) -> TransactionCoordinator {
        TransactionCoordinator {
            config,
            txns: Mutex::new(HashMap::new()),
            loaded: Mutex::new(HashMap::new()),
            resumed: Mutex::new(Vec::new()),
            resume_wake: tokio::sync::Notify::new(),
        }
    }

    /// Hands prepared transactions found on load to the task that completes them.
    pub fn resume(&self, ids: Vec<String>) {
        if ids.is_empty() {
            return;
        }
        self.resumed.lock().extend(ids);
        self.resume_wake.notify_one();
    }

    /// Waits for transactions to resume, and takes them.
    pub async fn resumed(&self) -> Vec<String> {
        loop {
            let ids = std::mem::take(&mut *self.resumed.lock());
            if !ids.is_empty() {
                return ids;
            }
            self.resume_wake.notified().await;
        }
    }

    /// The `__transaction_state` partition of a transactional id, as Kafka computes it.
    pub fn partition_for(&self, transactional_id: &str, partitions: i32) -> i32 {
        crate::group::offsets::partition_for(transactional_id, partitions)
    }

    /// Takes over a partition's transactional ids from its records (oldest first). Returns
    /// the ids whose transaction was being completed, to finish.
    pub fn load(
        &self,
        partition: i32,
        coordinator_epoch: i32,
        records: Vec<TxnRecord>,
    ) -> Vec<String> {
        let mut loaded: HashMap<String, TxnMetadata> = HashMap::new();
        for record in records {
            match record.value {
                Some(value) => {
                    let meta = TxnMetadata::from_value(record.transactional_id.clone(), value);
                    loaded.insert(record.transactional_id, meta);
                }
                None => {
                    loaded.remove(&record.transactional_id);
                }
            }
        }
        let unfinished = loaded
            .values()
            .filter(|m| matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort))
            .map(|m| m.transactional_id.clone())
            .collect();
        self.txns.lock().extend(loaded);
        self.loaded.lock().insert(partition, coordinator_epoch);
        unfinished
    }

    /// Hands off a partition's transactional ids.
    pub fn unload(&self, partition: i32, partitions: i32) {
        self.loaded.lock().remove(&partition);
        self.txns
            .lock()
            .retain(|id, _| self.partition_for(id, partitions) != partition);
    }

    /// The coordinator epoch of a loaded partition.
    pub fn coordinator_epoch(&self, partition: i32) -> Option<i32> {
        self.loaded.lock().get(&partition).copied()
    }

    pub fn is_loaded(&self, partition: i32) -> bool {
        self.loaded.lock().contains_key(&partition)
    }

    pub fn get(&self, transactional_id: &str) -> Option<TxnMetadata> {
        self.txns.lock().get(transactional_id).cloned()
    }

    /// Marks the id pending for a write of `next`, if its metadata is still what `next` was
    /// decided on (`None`: the id must still be unknown).
    pub fn begin_write(
        &self,
        transactional_id: &str,
        decided_on: Option<&TxnMetadata>,
    ) -> Result<(), ResponseError> {
        let mut txns = self.txns.lock();
        match (txns.get_mut(transactional_id), decided_on) {
            (None, None) => {
                // A placeholder holds the id while its first record is written.
                let mut placeholder = TxnMetadata::new(transactional_id, -1, 0, 0);
                placeholder.state = TxnState::Dead;
                placeholder.pending = true;
                txns.insert(transactional_id.to_string(), placeholder);
                Ok(())
            }
            (Some(current), Some(decided))
                if !current.pending && current.generation == decided.generation =>
            {
                current.pending = true;
                Ok(())
            }
            _ => Err(ResponseError::ConcurrentTransactions),
        }
    }

    /// Applies a written change.
    pub fn finish_write(&self, next: TxnMetadata) {
        let mut txns = self.txns.lock();
        let generation = txns
            .get(&next.transactional_id)
            .map_or(0, |m| m.generation + 1);
        let mut next = next;
        next.generation = generation;
        next.pending = false;
        txns.insert(next.transactional_id.clone(), next);
    }

    /// Gives up a change whose write failed.
    pub fn abandon_write(&self, transactional_id: &str) {
        let mut txns = self.txns.lock();
        let placeholder = match txns.get_mut(transactional_id) {
            Some(meta) if meta.producer_id < 0 => true,
            Some(meta) => {
                meta.pending = false;
                false
            }
            None => false,
        };
        if placeholder {
            txns.remove(transactional_id);
        }
    }

    /// Ongoing transactions past their timeout at `now`, each with the metadata that aborts
    /// it with a bumped epoch (fencing the producer).
    pub fn timed_out(&self, now: i64) -> Vec<(TxnMetadata, TxnMetadata)> {
        self.txns
            .lock()
            .values()
            .filter(|m| {
                !m.pending
                    && m.state == TxnState::Ongoing
                    && m.start_ms + i64::from(m.timeout_ms) < now
            })
            .map(|m| {
                let mut next = m.bumped();
                next.state = TxnState::PrepareAbort;
                next.last_update_ms = now;
                (m.clone(), next)
            })
            .collect()
    }

    /// Idle ids past `transactional.id.expiration.ms`, to forget.
    pub fn expired(&self, now: i64) -> Vec<TxnMetadata> {
        self.txns
            .lock()
            .values()
            .filter(|m| {
                !m.pending
                    && matches!(
                        m.state,
                        TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                    )
                    && m.last_update_ms + self.config.id_expiration_ms < now
            })
            .cloned()
            .collect()
    }

    /// Forgets an id whose tombstone was written.
    pub fn remove(&self, transactional_id: &str) {
        self.txns.lock().remove(transactional_id);
    }

    /// Transactions coordinated here that are ongoing or prepared but not yet complete.
    pub fn open_count(&self) -> usize {
        self.txns
            .lock()
            .values()
            .filter(|m| {
                matches!(
                    m.state,
                    TxnState::Ongoing | TxnState::PrepareCommit | TxnState::PrepareAbort
                )
            })
            .count()
    }

    /// Every transaction, optionally filtered, for ListTransactions.
    pub fn list(&self, now: i64) -> Vec<TxnListing> {
        let mut out: Vec<TxnListing> = self
            .txns
            .lock()
            .values()
            .filter(|m| m.producer_id >= 0)
            .map(|m| TxnListing {
                transactional_id: m.transactional_id.clone(),
                producer_id: m.producer_id,
                state: m.state,
                duration_ms: if m.state == TxnState::Ongoing && m.start_ms >= 0 {
                    now - m.start_ms
                } else {
                    0
                },
            })
            .collect();
        out.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ongoing(epoch: i16) -> TxnMetadata {
        let mut meta = TxnMetadata::new("t", 7, 60_000, 0);
        meta.producer_epoch = epoch;
        meta.state = TxnState::Ongoing;
        meta.start_ms = 100;
        meta.partitions.insert(("a".to_string(), 0));
        meta
    }

    #[test]
    fn a_new_id_gets_a_new_producer_and_a_known_one_a_bumped_epoch() {
        assert_eq!(decide_init(None, -1, -1, 1000, 0), Init::NewProducerId);
        let mut meta = ongoing(3);
        meta.state = TxnState::CompleteCommit;
        let Init::Write(next) = decide_init(Some(&meta), -1, -1, 5000, 9) else {
            panic!("expected a write");
        };
        assert_eq!((next.producer_id, next.producer_epoch), (7, 4));
        assert_eq!((next.state, next.timeout_ms), (TxnState::Empty, 5000));
        assert!(next.partitions.is_empty());
        meta.producer_epoch = i16::MAX - 1;
        assert_eq!(
            decide_init(Some(&meta), -1, -1, 5000, 9),
            Init::NewProducerId
        );
    }

    #[test]
    fn an_open_transaction_is_aborted_with_a_bumped_epoch_before_a_new_producer_starts() {
        let Init::AbortFirst(next) = decide_init(Some(&ongoing(2)), -1, -1, 1000, 5) else {
            panic!("expected an abort first");
        };
        assert_eq!(
            (next.state, next.producer_epoch),
            (TxnState::PrepareAbort, 3)
        );
        assert_eq!(next.partitions.len(), 1, "the markers go to its partitions");
        assert_eq!(
            decide_init(Some(&next), -1, -1, 1000, 5),
            Init::Refuse(ResponseError::ConcurrentTransactions)
        );
    }

    #[test]
    fn kip_360_a_producer_naming_an_old_epoch_is_fenced_but_a_retry_is_answered() {
        let mut meta = ongoing(4);
        meta.state = TxnState::Empty;
        meta.last_producer_id = 7;
        meta.last_producer_epoch = 3;
        assert_eq!(
            decide_init(Some(&meta), 7, 2, 1000, 0),
            Init::Refuse(ResponseError::ProducerFenced)
        );
        assert_eq!(
            decide_init(Some(&meta), 7, 3, 1000, 0),
            Init::Write(meta.clone())
        );
        assert!(
            matches!(decide_init(Some(&meta), 7, 4, 1000, 0), Init::Write(m) if m.producer_epoch == 5)
        );
    }

    #[test]
    fn partitions_are_added_once_and_only_by_the_current_producer() {
        let mut meta = ongoing(1);
        meta.state = TxnState::Empty;
        let a = ("a".to_string(), 0);
        let b = ("b".to_string(), 1);
        let Add::Write(next) = decide_add(Some(&meta), 7, 1, &[a.clone(), b.clone()], 50) else {
            panic!("expected a write");
        };
        assert_eq!((next.state, next.start_ms), (TxnState::Ongoing, 50));
        assert_eq!(
            decide_add(Some(&next), 7, 1, std::slice::from_ref(&b), 60),
            Add::AlreadyIn
        );
        assert_eq!(
            decide_add(Some(&next), 7, 0, std::slice::from_ref(&b), 60),
            Add::Refuse(ResponseError::ProducerFenced)
        );
        assert_eq!(
            decide_add(Some(&next), 8, 1, std::slice::from_ref(&b), 60),
            Add::Refuse(ResponseError::InvalidProducerIdMapping)
        );
        assert_eq!(verify(Some(&next), 7, 1, &b), Ok(()));
        assert_eq!(
            verify(Some(&next), 7, 1, &("c".to_string(), 0)),
            Err(ResponseError::InvalidTxnState)
        );
    }

    #[test]
    fn end_prepares_once_and_a_retry_after_completion_succeeds() {
        let meta = ongoing(1);
        let End::Prepare(prepared) = decide_end(Some(&meta), 7, 1, true, 10) else {
            panic!("expected prepare");
        };
        assert_eq!(prepared.state, TxnState::PrepareCommit);
        assert_eq!(
            decide_end(Some(&prepared), 7, 1, true, 11),
            End::Refuse(ResponseError::ConcurrentTransactions)
        );
        let done = completed(&prepared, 12);
        assert_eq!(done.state, TxnState::CompleteCommit);
        assert!(done.partitions.is_empty());
        assert_eq!(decide_end(Some(&done), 7, 1, true, 13), End::Done);
        assert_eq!(
            decide_end(Some(&done), 7, 1, false, 13),
            End::Refuse(ResponseError::InvalidTxnState)
        );
    }

    #[test]
    fn writes_apply_only_over_the_metadata_they_were_decided_on() {
        let coordinator = TransactionCoordinator::new(TxnConfig {
            partitions: 50,
            replication_factor: 1,
            min_isr: 1,
            segment_bytes: 1 << 20,
            max_timeout_ms: 900_000,
            abort_interval: Duration::from_secs(10),
            expire_interval: Duration::from_secs(3600),
            id_expiration_ms: 1000,
            verify_partitions: true,
        });
        coordinator.begin_write("t", None).unwrap();
        assert_eq!(
            coordinator.begin_write("t", None),
            Err(ResponseError::ConcurrentTransactions)
        );
        coordinator.finish_write(TxnMetadata::new("t", 7, 1000, 0));
        let current = coordinator.get("t").unwrap();
        coordinator.begin_write("t", Some(&current)).unwrap();
        coordinator.abandon_write("t");
        let stale = current.clone();
        coordinator.begin_write("t", Some(&current)).unwrap();
        coordinator.finish_write(ongoing(0));
        assert_eq!(
            coordinator.begin_write("t", Some(&stale)),
            Err(ResponseError::ConcurrentTransactions)
        );
        assert_eq!(coordinator.timed_out(100 + 60_001).len(), 1);
        assert_eq!(
            coordinator.expired(10_000).len(),
            0,
            "ongoing ids never expire"
        );
    }
}
