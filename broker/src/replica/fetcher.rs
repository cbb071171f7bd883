//! Followers fetch from leaders with the Kafka Fetch API, one task per leader broker carrying
//! every partition this broker follows there. Before fetching from a new leader (or epoch),
//! a follower asks OffsetForLeaderEpoch where its last epoch ended on the leader and cuts its
//! log there, so replicas never diverge. `follower.replication.throttled.rate` paces the
//! copying; a change of it at run time (IncrementalAlterConfigs) applies to the running tasks
//! at once, a pause already begun included. Each task keeps an incremental fetch session
//! (KIP-227) with its leader: after the first full fetch, a fetch names only the partitions
//! whose position changed, and the leader answers only the partitions with news; a session
//! error or a lost connection starts over with a full fetch.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, OffsetForLeaderEpochRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use parking_lot::Mutex;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::client::{ClientError, Connection, Connector};
use crate::config::dynamic::follower_throttle;
use crate::controller::Quorum;
use crate::fetch_session::{next_epoch, INITIAL_EPOCH, NO_SESSION};
use crate::log::AppendError;
use crate::replica::Partition;

/// Fetch version used between brokers (flexible, topics by name).
const FETCH_VERSION: i16 = 12;
const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 4;
/// Pause after an error before trying again.
const BACKOFF: Duration = Duration::from_millis(100);

type Key = (Arc<str>, i32);

#[derive(Clone)]
struct Followed {
    partition: Arc<Partition>,
    epoch: i32,
    /// The log was matched to the leader's with OffsetForLeaderEpoch in this epoch.
    truncated: bool,
}

struct LeaderFetcher {
    followed: Arc<Mutex<HashMap<Key, Followed>>>,
    wake: Arc<Notify>,
}

/// This follower's fetch session with one leader, as Kafka's `FetchSessionHandler` keeps it.
#[derive(Default)]
struct Session {
    /// The leader's id for the session; 0 for none.
    id: i32,
    /// The epoch of the next fetch: 0 (INITIAL_EPOCH) asks for a full fetch and a new
    /// session, closing the one of `id`.
    epoch: i32,
    /// What the leader holds for each partition of the session: what was last sent.
    sent: HashMap<Key, FetchPartition>,
}

impl Session {
    /// The next fetch is a full one, which closes this session on the leader.
    fn restart(&mut self) {
        self.epoch = INITIAL_EPOCH;
        self.sent.clear();
    }

    fn is_incremental(&self) -> bool {
        self.id != NO_SESSION && self.epoch != INITIAL_EPOCH
    }

    /// What the next fetch of `wanted` sends: every partition in a full fetch; in an
    /// incremental one only those whose parameters the leader does not hold, and the
    /// partitions this replica no longer fetches there, to forget.
    fn next_request(
        &self,
        wanted: &[(Key, FetchPartition)],
    ) -> (Vec<(Key, FetchPartition)>, Vec<Key>) {
        if !self.is_incremental() {
            return (wanted.to_vec(), Vec::new());
        }
        let changed = wanted
            .iter()
            .filter(|(key, p)| self.sent.get(key) != Some(p))
            .cloned()
            .collect();
        let gone = self
            .sent
            .keys()
            .filter(|key| !wanted.iter().any(|(k, _)| k == *key))
            .cloned()
            .collect();
        (changed, gone)
    }

    /// The leader answered a fetch of `wanted` (as `next_request` sent it) without a session
    /// error, in session `session_id`.
    fn answered(&mut self, session_id: i32, wanted: Vec<(Key, FetchPartition)>) {
        if !self.is_incremental() {
            self.id = session_id;
            self.epoch = next_epoch(INITIAL_EPOCH);
            self.sent = if session_id == NO_SESSION {
                HashMap::new()
            } else {
                wanted.into_iter().collect()
            };
        } else if session_id == self.id {
            self.epoch = next_epoch(self.epoch);
            self.sent = wanted.into_iter().collect();
        } else {
            // The leader ended the session (every partition was forgotten): start anew.
            self.id = NO_SESSION;
            self.restart();
        }
    }

    /// The leader refused the session: the next fetch is a full one, which closes the session
    /// unless the leader does not know it.
    fn refused(&mut self, error: ResponseError) {
        if error == ResponseError::FetchSessionIdNotFound {
            self.id = NO_SESSION;
        }
        self.restart();
    }
}

/// The fetch tasks of this broker, by leader.
#[derive(Default)]
pub struct Fetchers {
    by_leader: Mutex<HashMap<i32, LeaderFetcher>>,
}

/// What a fetch task needs from the broker.
#[derive(Clone)]
struct FetchContext {
    node: i32,
    quorum: Quorum,
    shutdown: CancellationToken,
    wait_max_ms: i32,
    partition_max_bytes: i32,
    request_timeout: Duration,
    connector: Connector,
    /// Bytes per second to copy at most (`follower.replication.throttled.rate` in
    /// `server.properties`), unless a dynamic value replaces it.
    static_throttle: Option<u64>,
    /// The broker's dynamic settings, watched for throttle changes.
    dynamic: watch::Receiver<BTreeMap<String, String>>,
}

fn key(partition: &Partition) -> Key {
    (Arc::clone(&partition.topic), partition.index)
}

impl Fetchers {
    /// Follows `leader` for `partition` at `epoch`, leaving any other leader it followed.
    pub fn follow(&self, broker: &Broker, partition: &Arc<Partition>, leader: i32, epoch: i32) {
        let key = key(partition);
        let mut by_leader = self.by_leader.lock();
        for (id, fetcher) in by_leader.iter() {
            if *id != leader {
                fetcher.followed.lock().remove(&key);
            }
        }
        let fetcher = by_leader.entry(leader).or_insert_with(|| {
            let fetcher = LeaderFetcher {
                followed: Arc::default(),
                wake: Arc::new(Notify::new()),
            };
            let context = FetchContext {
                node: broker.node_id(),
                quorum: broker.quorum.clone(),
                shutdown: broker.shutdown.clone(),
                wait_max_ms: broker.config.replica_fetch_wait_max_ms,
                partition_max_bytes: broker.config.replica_fetch_max_bytes,
                request_timeout: broker.config.request_timeout,
                connector: broker.connector.clone(),
                static_throttle: broker.config.follower_throttle,
                dynamic: broker.config.dynamic.subscribe(),
            };
            tokio::spawn(run(
                context,
                leader,
                Arc::clone(&fetcher.followed),
                Arc::clone(&fetcher.wake),
            ));
            fetcher
        });
        let mut followed = fetcher.followed.lock();
        let current = followed.get(&key).map(|f| f.epoch);
        if current != Some(epoch) {
            followed.insert(
                key,
                Followed {
                    partition: Arc::clone(partition),
                    epoch,
                    truncated: false,
                },
            );
        }
        fetcher.wake.notify_one();
    }

    /// Stops fetching `partition` from anyone.
    pub fn unfollow(&self, partition: &Partition) {
        let key = key(partition);
        for fetcher in self.by_leader.lock().values() {
            fetcher.followed.lock().remove(&key);
        }
    }
}

/// The fetch loop for one leader: runs until the broker shuts down.
async fn run(
    context: FetchContext,
    leader: i32,
    followed: Arc<Mutex<HashMap<Key, Followed>>>,
    wake: Arc<Notify>,
) {
    let mut connection: Option<Connection> = None;
    let mut session = Session::default();
    let mut dynamic = context.dynamic.clone();
    loop {
        if context.shutdown.is_cancelled() {
            return;
        }
        let entries: Vec<(Key, Followed)> = followed
            .lock()
            .iter()
            .map(|(k, f)| (k.clone(), f.clone()))
            .collect();
        if entries.is_empty() {
            tokio::select! {
                () = wake.notified() => {}
                () = context.shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        let conn = match connection.as_mut() {
            Some(conn) => conn,
            None => match connect(&context, leader).await {
                Some(conn) => connection.insert(conn),
                None => {
                    pause(&context).await;
                    continue;
                }
            },
        };
        let outcome = async {
            for (key, entry) in entries.iter().filter(|(_, f)| !f.truncated) {
                truncate(&context, leader, conn, entry).await?;
                if let Some(f) = followed.lock().get_mut(key) {
                    if f.epoch == entry.epoch {
                        f.truncated = true;
                    }
                }
            }
            let ready: Vec<(Key, Followed)> = followed
                .lock()
                .iter()
                .filter(|(_, f)| f.truncated)
                .map(|(k, f)| (k.clone(), f.clone()))
                .collect();
            if ready.is_empty() {
                return Ok::<(bool, usize), String>((false, 0));
            }
            fetch(&context, leader, conn, &mut session, &ready, &followed).await
        };
        let timeout = context.request_timeout
            + Duration::from_millis(u64::try_from(context.wait_max_ms).unwrap_or(0));
        match tokio::time::timeout(timeout, outcome).await {
            Ok(Ok((true, copied))) => throttle(&context, &mut dynamic, copied).await,
            Ok(Ok((false, _))) => pause(&context).await,
            Ok(Err(e)) => {
                tracing::debug!(leader, error = %e, "replica fetch failed");
                connection = None;
                session.restart();
                pause(&context).await;
            }
            Err(_) => {
                tracing::debug!(leader, "replica fetch timed out");
                connection = None;
                session.restart();
                pause(&context).await;
            }
        }
    }
}

async fn pause(context: &FetchContext) {
    tokio::select! {
        () = tokio::time::sleep(BACKOFF) => {}
        () = context.shutdown.cancelled() => {}
    }
}

/// Paces the copying: after `copied` bytes, waits as long as they take at the throttle rate.
/// A change of the rate meanwhile counts from the start of the wait; deleting it ends the wait.
async fn throttle(
    context: &FetchContext,
    dynamic: &mut watch::Receiver<BTreeMap<String, String>>,
    copied: usize,
) {
    if copied == 0 {
        return;
    }
    let started = Instant::now();
    loop {
        let Some(rate) = follower_throttle(&dynamic.borrow_and_update(), context.static_throttle)
        else {
            return;
        };
        let until = started + Duration::from_secs_f64(copied as f64 / rate as f64);
        tokio::select! {
            () = tokio::time::sleep_until(until.into()) => return,
            () = context.shutdown.cancelled() => return,
            changed = dynamic.changed() => {
                if changed.is_err() {
                    // The settings are gone with the broker: wait out the pause as it was.
                    tokio::time::sleep_until(until.into()).await;
                    return;
                }
            }
        }
    }
}

async fn connect(context: &FetchContext, leader: i32) -> Option<Connection> {
    let image = context.quorum.image();
    let registration = image.brokers.get(&leader)?;
    let address = format!("{}:{}", registration.host, registration.port);
    match tokio::time::timeout(context.request_timeout, context.connector.connect(&address)).await {
        Ok(Ok(conn)) => Some(conn),
        // A certificate or login problem does not go away by retrying: say so where it is seen.
        Ok(Err(e @ (ClientError::Tls { .. } | ClientError::Sasl { .. }))) => {
            tracing::warn!(leader, address, error = %e, "cannot replicate from the leader");
            None
        }
        Ok(Err(e)) => {
            tracing::debug!(leader, address, error = %e, "cannot reach the leader");
            None
        }
        Err(_) => None,
    }
}

/// Cuts the follower's log where its last epoch ended on the leader.
async fn truncate(
    context: &FetchContext,
    leader: i32,
    conn: &mut Connection,
    entry: &Followed,
) -> Result<(), String> {
    let partition = &entry.partition;
    let Some(local_epoch) = partition.latest_epoch() else {
        return Ok(());
    };
    let request = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(context.node))
        .with_topics(vec![OffsetForLeaderTopic::default()
            .with_topic(TopicName(StrBytes::from_string(
                partition.topic.to_string(),
            )))
            .with_partitions(vec![OffsetForLeaderPartition::default()
                .with_partition(partition.index)
                .with_current_leader_epoch(entry.epoch)
                .with_leader_epoch(local_epoch)])]);
    let response = conn
        .send(&request, OFFSET_FOR_LEADER_EPOCH_VERSION)
        .await
        .map_err(|e| e.to_string())?;
    let answer = response
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .ok_or("empty OffsetForLeaderEpoch response")?;
    if answer.error_code != 0 {
        return Err(format!(
            "OffsetForLeaderEpoch for {partition:?}: {:?}",
            ResponseError::try_from_code(answer.error_code)
        ));
    }
    // Only while still following this leader at this epoch: a replica that leads now keeps
    // its log.
    let applied = partition.while_following(leader, entry.epoch, || {
        let end = partition.log_end_offset();
        // Unknown epoch on the leader: keep only what is known committed.
        let cut = if answer.end_offset < 0 {
            partition.high_watermark()
        } else {
            answer.end_offset
        };
        if cut < end {
            let new_end = partition.truncate_to(cut).map_err(|e| e.to_string())?;
            tracing::info!(partition = ?partition, from = end, to = new_end, epoch = local_epoch, "truncated to the leader's log");
        }
        Ok(())
    });
    applied.unwrap_or(Ok(()))
}

/// Appends batches fetched from the leader. The leader answers a fetch with whole batches,
/// from the one holding the fetch offset; when that batch starts below this replica's log end
/// (the end is not on one of the leader's batch boundaries: the log start was moved into a
/// batch by DeleteRecords, or the log was cut inside one), the replica goes back to the
/// batch's start. An empty log starts over there, as Kafka's follower does; a log holding
/// records is cut back to the batch (it gets them again from the leader), or below it when
/// its own batches end elsewhere, and the next fetch continues from there.
fn append_fetched(partition: &Partition, records: &[u8]) -> Result<(), String> {
    let (expected, got) = match partition.append_replicated(records) {
        Ok(_) => return Ok(()),
        Err(AppendError::OffsetMismatch { expected, got }) => (expected, got),
        Err(e) => return Err(e.to_string()),
    };
    let start = partition.log_start_offset();
    let end = if start == partition.log_end_offset() || got < start {
        partition
            .truncate_fully_and_start_at(got)
            .map(|()| got)
            .map_err(|e| format!("cannot start the log over at {got}: {e}"))?
    } else {
        partition
            .truncate_to(got)
            .map_err(|e| format!("cannot cut the log back to {got}: {e}"))?
    };
    tracing::info!(partition = ?partition, from = expected, to = end, batch = got, "log end inside a batch of the leader: going back to where it starts");
    if end == got {
        partition
            .append_replicated(records)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Moves this replica's log start up to the leader's (DeleteRecords on the leader), as far
/// as its own log reaches.
fn follow_log_start(partition: &Partition, leader_start: i64) {
    let target = leader_start.min(partition.log_end_offset());
    if target <= partition.log_start_offset() {
        return;
    }
    if let Err(e) = partition.delete_records_before(target) {
        tracing::warn!(partition = ?partition, error = %e, "cannot follow the leader's log start");
    }
}

/// The request's topics from (key, partition) pairs, a topic's partitions together.
fn by_topic<T>(partitions: impl IntoIterator<Item = (Key, T)>) -> Vec<(Arc<str>, Vec<T>)> {
    let mut topics: Vec<(Arc<str>, Vec<T>)> = Vec::new();
    for ((topic, _), item) in partitions {
        match topics.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, items)) => items.push(item),
            None => topics.push((topic, vec![item])),
        }
    }
    topics
}

fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

/// One Fetch round, in the session with the leader. Returns whether any partition made
/// progress or waited at the leader, and the bytes copied.
async fn fetch(
    context: &FetchContext,
    leader: i32,
    conn: &mut Connection,
    session: &mut Session,
    entries: &[(Key, Followed)],
    followed: &Mutex<HashMap<Key, Followed>>,
) -> Result<(bool, usize), String> {
    let wanted: Vec<(Key, FetchPartition)> = entries
        .iter()
        .map(|(key, entry)| {
            let partition = &entry.partition;
            let request_partition = FetchPartition::default()
                .with_partition(partition.index)
                .with_current_leader_epoch(entry.epoch)
                .with_fetch_offset(partition.log_end_offset())
                .with_last_fetched_epoch(partition.latest_epoch().unwrap_or(-1))
                .with_log_start_offset(partition.log_start_offset())
                .with_partition_max_bytes(context.partition_max_bytes);
            (key.clone(), request_partition)
        })
        .collect();
    let incremental = session.is_incremental();
    let (changed, gone) = session.next_request(&wanted);
    let topics = by_topic(changed)
        .into_iter()
        .map(|(topic, partitions)| {
            FetchTopic::default()
                .with_topic(topic_name(&topic))
                .with_partitions(partitions)
        })
        .collect();
    let forgotten = by_topic(gone.iter().map(|key| (key.clone(), key.1)))
        .into_iter()
        .map(|(topic, partitions)| {
            ForgottenTopic::default()
                .with_topic(topic_name(&topic))
                .with_partitions(partitions)
        })
        .collect();
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(context.node))
        .with_max_wait_ms(context.wait_max_ms)
        .with_min_bytes(1)
        .with_max_bytes(i32::MAX)
        .with_session_id(session.id)
        .with_session_epoch(session.epoch)
        .with_topics(topics)
        .with_forgotten_topics_data(forgotten);
    let response = conn
        .send(&request, FETCH_VERSION)
        .await
        .map_err(|e| e.to_string())?;
    match ResponseError::try_from_code(response.error_code) {
        None => {}
        Some(
            error @ (ResponseError::FetchSessionIdNotFound
            | ResponseError::InvalidFetchSessionEpoch
            | ResponseError::FetchSessionTopicIdError),
        ) => {
            tracing::debug!(leader, session = session.id, error = ?error, "fetch session lost; the next fetch is a full one");
            session.refused(error);
            return Ok((false, 0));
        }
        Some(error) => {
            session.restart();
            return Err(format!("fetch refused: {error:?}"));
        }
    }
    session.answered(response.session_id, wanted);
    // An incremental answer without partitions has waited at the leader for news.
    let waited = incremental && response.responses.is_empty();
    let mut progressed = false;
    let mut copied = 0usize;
    for topic in response.responses {
        for data in topic.partitions {
            let key: Key = (Arc::from(topic.topic.0.as_str()), data.partition_index);
            let Some(entry) = entries.iter().find(|(k, _)| *k == key).map(|(_, e)| e) else {
                continue;
            };
            let partition = &entry.partition;
            // The answer of a leader this replica no longer follows at this epoch (it may
            // lead now) must change nothing: the role is checked, and held, while it applies.
            let mut made_progress = false;
            let applied = partition.while_following(leader, entry.epoch, || {
                match ResponseError::try_from_code(data.error_code) {
                    None => {
                        made_progress = true;
                        let records = data.records.unwrap_or_else(Bytes::new);
                        copied += records.len();
                        if !records.is_empty() {
                            if let Err(e) = append_fetched(partition, &records) {
                                tracing::error!(partition = ?partition, error = %e, "cannot append fetched data");
                            }
                        }
                        partition.set_follower_high_watermark(data.high_watermark);
                        follow_log_start(partition, data.log_start_offset);
                    }
                    Some(ResponseError::OffsetOutOfRange) => {
                        if partition.log_end_offset() < data.log_start_offset {
                            tracing::info!(partition = ?partition, start = data.log_start_offset, "behind the leader's log start; starting over there");
                            partition
                                .truncate_fully_and_start_at(data.log_start_offset)
                                .map_err(|e| e.to_string())?;
                        } else if let Some(f) = followed.lock().get_mut(&key) {
                            f.truncated = false;
                        }
                    }
                    Some(other) => {
                        tracing::debug!(partition = ?partition, error = ?other, "leader refused the fetch; waiting for new metadata");
                    }
                }
                Ok::<(), String>(())
            });
            match applied {
                Some(result) => {
                    result?;
                    progressed |= made_progress;
                }
                None => {
                    tracing::debug!(partition = ?partition, leader, epoch = entry.epoch, "ignoring the answer of a leader no longer followed");
                }
            }
        }
    }
    Ok((progressed || waited, copied))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(offsets: &[(i32, i64)]) -> Vec<(Key, FetchPartition)> {
        offsets
            .iter()
            .map(|(index, offset)| {
                let key: Key = (Arc::from("t"), *index);
                let partition = FetchPartition::default()
                    .with_partition(*index)
                    .with_fetch_offset(*offset);
                (key, partition)
            })
            .collect()
    }

    fn indexes(partitions: &[(Key, FetchPartition)]) -> Vec<i32> {
        partitions.iter().map(|((_, index), _)| *index).collect()
    }

    #[test]
    fn after_a_full_fetch_only_changed_partitions_are_sent_and_dropped_ones_forgotten() {
        let mut session = Session::default();
        let first = wanted(&[(0, 10), (1, 20), (2, 30)]);
        let (sent, gone) = session.next_request(&first);
        assert_eq!((indexes(&sent), gone.len()), (vec![0, 1, 2], 0));
        assert_eq!((session.id, session.epoch), (NO_SESSION, INITIAL_EPOCH));
        session.answered(77, first);
        assert_eq!((session.id, session.epoch), (77, 1));

        // Partition 1 advanced, partition 2 is no longer fetched from this leader.
        let second = wanted(&[(0, 10), (1, 25)]);
        let (sent, gone) = session.next_request(&second);
        assert_eq!(indexes(&sent), vec![1]);
        assert_eq!(gone, vec![(Arc::from("t"), 2)]);
        session.answered(77, second.clone());
        assert_eq!(session.epoch, 2);
        let (sent, gone) = session.next_request(&second);
        assert!(sent.is_empty() && gone.is_empty(), "nothing changed");
    }

    #[test]
    fn session_errors_and_a_leader_without_room_lead_to_full_fetches() {
        let mut session = Session::default();
        session.answered(NO_SESSION, wanted(&[(0, 1)]));
        assert!(!session.is_incremental(), "the leader kept no session");

        session.answered(5, wanted(&[(0, 1)]));
        session.refused(ResponseError::InvalidFetchSessionEpoch);
        assert_eq!(
            (session.id, session.epoch),
            (5, INITIAL_EPOCH),
            "the next full fetch closes session 5 on the leader"
        );
        let (sent, _) = session.next_request(&wanted(&[(0, 1), (1, 0)]));
        assert_eq!(indexes(&sent), vec![0, 1]);

        session.answered(6, wanted(&[(0, 1)]));
        session.refused(ResponseError::FetchSessionIdNotFound);
        assert_eq!((session.id, session.epoch), (NO_SESSION, INITIAL_EPOCH));

        session.answered(7, wanted(&[(0, 1)]));
        session.answered(NO_SESSION, Vec::new());
        assert!(!session.is_incremental(), "the leader ended the session");
    }
}
