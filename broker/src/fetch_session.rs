//! Incremental fetch sessions (KIP-227): the cache of sessions a broker keeps for the
//! consumers and followers that fetch from it, as Kafka's `FetchSessionCache` does. A session
//! remembers the partitions of a fetcher and what it was last told of each, so the fetcher
//! names only the partitions whose fetch position changed and the answer carries only the
//! partitions with something new. No wire types here: `api/fetch.rs` translates.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use parking_lot::Mutex;
use prometheus::{IntCounter, IntGauge};
use uuid::Uuid;

/// Session id 0: no session.
pub const NO_SESSION: i32 = 0;
/// Epoch 0 asks for a new session with a full fetch.
pub const INITIAL_EPOCH: i32 = 0;
/// Epoch -1 closes the session (a full fetch without a new session).
pub const FINAL_EPOCH: i32 = -1;
/// A session unused for this long is evicted before any other, and a session younger than
/// this is safe from eviction by a fetcher of its own kind (Kafka's
/// `MIN_INCREMENTAL_FETCH_SESSION_EVICTION_MS`).
pub const EVICTION_AGE: Duration = Duration::from_secs(120);

/// The epoch a fetcher sends after `epoch`.
pub fn next_epoch(epoch: i32) -> i32 {
    match epoch {
        e if e < 0 => FINAL_EPOCH,
        i32::MAX => 1,
        e => e + 1,
    }
}

/// How a session names a topic: by id from Fetch v13, by name before.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TopicRef {
    Id(Uuid),
    Name(Arc<str>),
}

/// One partition of a session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartitionKey {
    pub topic: TopicRef,
    pub partition: i32,
}

/// What a fetcher asks of one partition; a session keeps the last it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchParams {
    pub fetch_offset: i64,
    pub max_bytes: i32,
    pub current_leader_epoch: i32,
    /// The fetcher's own log start (followers).
    pub log_start_offset: i64,
    pub last_fetched_epoch: i32,
}

/// What one partition's answer says, as far as a session cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub has_records: bool,
    pub error: bool,
    /// The answer names a preferred read replica or a diverging epoch: always sent.
    pub must_send: bool,
}

/// Why a fetch gets no partitions, only an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    /// FETCH_SESSION_ID_NOT_FOUND: the session is unknown (never given, evicted or closed).
    IdNotFound,
    /// INVALID_FETCH_SESSION_EPOCH: not the epoch the session expects next.
    InvalidEpoch,
    /// FETCH_SESSION_TOPIC_ID_ERROR: the session names topics by id and the request by name,
    /// or the other way round.
    TopicIdError,
}

/// How a fetch is to be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Context {
    /// Only the error, session id 0 and no partitions.
    Error(SessionError),
    /// The request's partitions, session id 0.
    Sessionless,
    /// The request's partitions; then the cache tries to keep them as a new session.
    Full,
    /// Every partition of the session, with the parameters it holds for them; the answer
    /// carries only those with news (`FetchSessionCache::answer`).
    Incremental {
        id: i32,
        /// The session's epoch once this fetch is answered.
        epoch: i32,
        partitions: Vec<(PartitionKey, FetchParams)>,
    },
}

#[derive(Debug, Clone, Copy)]
struct Cached {
    params: FetchParams,
    /// What the fetcher was last told; -1 until told, and after an error, so it is told again.
    high_watermark: i64,
    log_start_offset: i64,
}

impl Cached {
    /// Whether the answer must be sent; records the values sent.
    fn update(&mut self, answer: &Answer) -> bool {
        let mut send = answer.has_records || answer.must_send;
        if self.high_watermark != answer.high_watermark {
            send = true;
            self.high_watermark = answer.high_watermark;
        }
        if self.log_start_offset != answer.log_start_offset {
            send = true;
            self.log_start_offset = answer.log_start_offset;
        }
        if answer.error {
            send = true;
            self.high_watermark = -1;
        }
        send
    }
}

struct Session {
    privileged: bool,
    uses_topic_ids: bool,
    created: Instant,
    last_used: Instant,
    /// The epoch the next fetch must carry.
    epoch: i32,
    /// In answer order: a partition that returns records moves to the end, so that every
    /// partition gets its turn under the response's byte limit.
    partitions: IndexMap<PartitionKey, Cached>,
}

impl Session {
    /// Kafka's eviction order: unprivileged before privileged, then fewer partitions first.
    fn rank(&self) -> (bool, usize) {
        (self.privileged, self.partitions.len())
    }
}

/// The sessions' metrics, as Kafka's `NumIncrementalFetchSessions`,
/// `NumIncrementalFetchPartitionsCached` and `IncrementalFetchSessionEvictionsPerSec`.
#[derive(Clone)]
pub struct SessionMetrics {
    pub sessions: IntGauge,
    pub partitions: IntGauge,
    pub evictions: IntCounter,
}

/// The broker's fetch sessions, at most `slots` of them
/// (`max.incremental.fetch.session.cache.slots`).
pub struct FetchSessionCache {
    slots: usize,
    sessions: Mutex<HashMap<i32, Session>>,
    metrics: SessionMetrics,
}

impl FetchSessionCache {
    pub fn new(slots: usize, metrics: SessionMetrics) -> FetchSessionCache {
        FetchSessionCache {
            slots,
            sessions: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// Sessions cached now.
    pub fn len(&self) -> usize {
        self.sessions.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decides how a fetch with `session_id` and `epoch` is answered, and applies what an
    /// incremental fetch changes: the partitions it names (added or with new parameters) and
    /// those it forgets. A full fetch closes the session it names.
    pub fn context(
        &self,
        session_id: i32,
        epoch: i32,
        uses_topic_ids: bool,
        requested: &[(PartitionKey, FetchParams)],
        forgotten: &[PartitionKey],
        now: Instant,
    ) -> Context {
        let mut sessions = self.sessions.lock();
        if epoch == INITIAL_EPOCH || epoch == FINAL_EPOCH {
            if session_id != NO_SESSION && sessions.remove(&session_id).is_some() {
                tracing::debug!(session = session_id, "fetch session closed by a full fetch");
            }
            self.report(&sessions);
            return if epoch == FINAL_EPOCH {
                Context::Sessionless
            } else {
                Context::Full
            };
        }
        let Some(session) = sessions.get_mut(&session_id) else {
            return Context::Error(SessionError::IdNotFound);
        };
        if session.epoch != epoch {
            return Context::Error(SessionError::InvalidEpoch);
        }
        if session.uses_topic_ids != uses_topic_ids {
            return Context::Error(SessionError::TopicIdError);
        }
        for (key, params) in requested {
            match session.partitions.get_mut(key) {
                Some(cached) => cached.params = *params,
                None => {
                    session.partitions.insert(
                        key.clone(),
                        Cached {
                            params: *params,
                            high_watermark: -1,
                            log_start_offset: -1,
                        },
                    );
                }
            }
        }
        for key in forgotten {
            session.partitions.shift_remove(key);
        }
        if session.partitions.is_empty() {
            // Nothing left to follow: the session ends, as in Kafka.
            sessions.remove(&session_id);
            self.report(&sessions);
            return Context::Sessionless;
        }
        session.last_used = now;
        session.epoch = next_epoch(session.epoch);
        let context = Context::Incremental {
            id: session_id,
            epoch: session.epoch,
            partitions: session
                .partitions
                .iter()
                .map(|(key, cached)| (key.clone(), cached.params))
                .collect(),
        };
        self.report(&sessions);
        context
    }

    /// After a full fetch: keeps its partitions, with what was answered for them, as a new
    /// session if there is a free slot or one may be taken (Kafka's eviction policy). Returns
    /// the new session's id, or 0 for none.
    pub fn create(
        &self,
        privileged: bool,
        uses_topic_ids: bool,
        partitions: Vec<(PartitionKey, FetchParams, Answer)>,
        now: Instant,
    ) -> i32 {
        let mut sessions = self.sessions.lock();
        if sessions.len() >= self.slots
            && !self.evict(&mut sessions, privileged, partitions.len(), now)
        {
            return NO_SESSION;
        }
        let id = loop {
            let candidate = random_id();
            if candidate != NO_SESSION && !sessions.contains_key(&candidate) {
                break candidate;
            }
        };
        let partitions = partitions
            .into_iter()
            .map(|(key, params, answer)| {
                let cached = Cached {
                    params,
                    high_watermark: if answer.error {
                        -1
                    } else {
                        answer.high_watermark
                    },
                    log_start_offset: answer.log_start_offset,
                };
                (key, cached)
            })
            .collect();
        sessions.insert(
            id,
            Session {
                privileged,
                uses_topic_ids,
                created: now,
                last_used: now,
                epoch: next_epoch(INITIAL_EPOCH),
                partitions,
            },
        );
        tracing::debug!(session = id, privileged, "fetch session created");
        self.report(&sessions);
        id
    }

    /// Frees a slot for a new session of `size` partitions, if the policy allows: first a
    /// session unused for `EVICTION_AGE`; otherwise the lowest ranked of the sessions the
    /// newcomer may take from, if it ranks below the newcomer. A follower (privileged) may
    /// take from consumers at any time and from followers older than `EVICTION_AGE`; a
    /// consumer only from sessions older than that.
    fn evict(
        &self,
        sessions: &mut HashMap<i32, Session>,
        privileged: bool,
        size: usize,
        now: Instant,
    ) -> bool {
        let stale = sessions
            .iter()
            .filter(|(_, s)| now.saturating_duration_since(s.last_used) > EVICTION_AGE)
            .min_by_key(|(id, s)| (s.last_used, **id))
            .map(|(id, _)| *id);
        let victim = stale.or_else(|| {
            sessions
                .iter()
                .filter(|(_, s)| {
                    let old = now.saturating_duration_since(s.created) > EVICTION_AGE;
                    old || (privileged && !s.privileged)
                })
                .min_by_key(|(id, s)| (s.rank(), **id))
                .filter(|(_, s)| s.rank() < (privileged, size))
                .map(|(id, _)| *id)
        });
        match victim {
            Some(id) => {
                sessions.remove(&id);
                self.metrics.evictions.inc();
                tracing::debug!(session = id, "fetch session evicted");
                true
            }
            None => false,
        }
    }

    /// After an incremental fetch: which of the session's partitions the answer carries (the
    /// `answers` are in the order `context` gave them), remembering what they were told.
    /// A session whose epoch moved meanwhile (a duplicate request) gets
    /// INVALID_FETCH_SESSION_EPOCH; a session evicted meanwhile gets every partition.
    pub fn answer(
        &self,
        id: i32,
        epoch: i32,
        answers: &[(PartitionKey, Answer)],
    ) -> Result<Vec<bool>, SessionError> {
        let mut sessions = self.sessions.lock();
        let Some(session) = sessions.get_mut(&id) else {
            return Ok(vec![true; answers.len()]);
        };
        if session.epoch != epoch {
            return Err(SessionError::InvalidEpoch);
        }
        let mut send = Vec::with_capacity(answers.len());
        let mut to_end = Vec::new();
        for (key, answer) in answers {
            let included = match session.partitions.get_mut(key) {
                Some(cached) => cached.update(answer),
                None => true,
            };
            if included && answer.has_records {
                to_end.push(key);
            }
            send.push(included);
        }
        for key in to_end {
            if let Some(index) = session.partitions.get_index_of(key) {
                let last = session.partitions.len() - 1;
                session.partitions.move_index(index, last);
            }
        }
        Ok(send)
    }

    fn report(&self, sessions: &HashMap<i32, Session>) {
        let partitions: usize = sessions.values().map(|s| s.partitions.len()).sum();
        self.metrics
            .sessions
            .set(i64::try_from(sessions.len()).unwrap_or(i64::MAX));
        self.metrics
            .partitions
            .set(i64::try_from(partitions).unwrap_or(i64::MAX));
    }
}

/// A random positive session id.
fn random_id() -> i32 {
    let bits = Uuid::new_v4().as_u128();
    (bits as i32) & i32::MAX
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> SessionMetrics {
        SessionMetrics {
            sessions: IntGauge::new("s", "s").expect("metric"),
            partitions: IntGauge::new("p", "p").expect("metric"),
            evictions: IntCounter::new("e", "e").expect("metric"),
        }
    }

    fn key(topic: &str, partition: i32) -> PartitionKey {
        PartitionKey {
            topic: TopicRef::Name(Arc::from(topic)),
            partition,
        }
    }

    fn params(offset: i64) -> FetchParams {
        FetchParams {
            fetch_offset: offset,
            max_bytes: 1024,
            current_leader_epoch: -1,
            log_start_offset: -1,
            last_fetched_epoch: -1,
        }
    }

    fn answer(high_watermark: i64, has_records: bool) -> Answer {
        Answer {
            high_watermark,
            log_start_offset: 0,
            has_records,
            error: false,
            must_send: false,
        }
    }

    /// A session of `size` partitions of topic `t`, created at `now`.
    fn session(cache: &FetchSessionCache, privileged: bool, size: i32, now: Instant) -> i32 {
        let partitions = (0..size)
            .map(|p| (key("t", p), params(0), answer(0, false)))
            .collect();
        cache.create(privileged, false, partitions, now)
    }

    #[test]
    fn epochs_count_up_from_one_wrap_to_one_and_stay_final() {
        assert_eq!(next_epoch(INITIAL_EPOCH), 1);
        assert_eq!(next_epoch(41), 42);
        assert_eq!(next_epoch(i32::MAX), 1);
        assert_eq!(next_epoch(FINAL_EPOCH), FINAL_EPOCH);
    }

    #[test]
    fn a_full_fetch_creates_a_session_that_expects_epoch_one_then_two() {
        let cache = FetchSessionCache::new(10, metrics());
        let now = Instant::now();
        assert_eq!(cache.context(0, 0, false, &[], &[], now), Context::Full);
        let id = session(&cache, false, 2, now);
        assert_ne!(id, NO_SESSION);
        assert_eq!(cache.metrics.sessions.get(), 1);
        assert_eq!(cache.metrics.partitions.get(), 2);
        let Context::Incremental {
            epoch, partitions, ..
        } = cache.context(id, 1, false, &[], &[], now)
        else {
            panic!("expected an incremental context");
        };
        assert_eq!(epoch, 2);
        assert_eq!(partitions.len(), 2);
        assert_eq!(
            cache.context(id, 1, false, &[], &[], now),
            Context::Error(SessionError::InvalidEpoch),
            "epoch 1 again is a duplicate"
        );
        assert!(matches!(
            cache.context(id, 2, false, &[], &[], now),
            Context::Incremental { epoch: 3, .. }
        ));
    }

    #[test]
    fn unknown_ids_and_switching_topic_naming_are_errors() {
        let cache = FetchSessionCache::new(10, metrics());
        let now = Instant::now();
        assert_eq!(
            cache.context(12345, 1, false, &[], &[], now),
            Context::Error(SessionError::IdNotFound)
        );
        assert_eq!(
            cache.context(NO_SESSION, 1, false, &[], &[], now),
            Context::Error(SessionError::IdNotFound)
        );
        let id = session(&cache, false, 1, now);
        assert_eq!(
            cache.context(id, 1, true, &[], &[], now),
            Context::Error(SessionError::TopicIdError)
        );
    }

    #[test]
    fn epoch_minus_one_closes_and_epoch_zero_restarts() {
        let cache = FetchSessionCache::new(10, metrics());
        let now = Instant::now();
        let id = session(&cache, false, 1, now);
        assert_eq!(cache.context(id, 0, false, &[], &[], now), Context::Full);
        assert!(cache.is_empty(), "a full fetch closes the session it names");
        let id = session(&cache, false, 1, now);
        assert_eq!(
            cache.context(id, FINAL_EPOCH, false, &[], &[], now),
            Context::Sessionless
        );
        assert!(cache.is_empty());
        assert_eq!(
            cache.context(id, 1, false, &[], &[], now),
            Context::Error(SessionError::IdNotFound)
        );
    }

    #[test]
    fn incremental_fetches_add_update_and_forget_partitions() {
        let cache = FetchSessionCache::new(10, metrics());
        let now = Instant::now();
        let id = session(&cache, false, 2, now);
        let Context::Incremental { partitions, .. } = cache.context(
            id,
            1,
            false,
            &[(key("t", 0), params(7)), (key("u", 0), params(3))],
            &[key("t", 1)],
            now,
        ) else {
            panic!("expected an incremental context");
        };
        assert_eq!(
            partitions,
            vec![(key("t", 0), params(7)), (key("u", 0), params(3))]
        );
        assert_eq!(cache.metrics.partitions.get(), 2);
        // Forgetting every partition ends the session.
        assert_eq!(
            cache.context(id, 2, false, &[], &[key("t", 0), key("u", 0)], now),
            Context::Sessionless
        );
        assert!(cache.is_empty());
    }

    #[test]
    fn answers_carry_only_news_and_partitions_with_records_go_last() {
        let cache = FetchSessionCache::new(10, metrics());
        let now = Instant::now();
        let id = session(&cache, false, 3, now);
        let Context::Incremental { epoch, .. } = cache.context(id, 1, false, &[], &[], now) else {
            panic!("expected an incremental context");
        };
        let unchanged = [
            (key("t", 0), answer(0, false)),
            (key("t", 1), answer(0, false)),
            (key("t", 2), answer(0, false)),
        ];
        assert_eq!(
            cache.answer(id, epoch, &unchanged),
            Ok(vec![false, false, false])
        );
        let news = [
            (key("t", 0), answer(5, true)),
            (key("t", 1), answer(0, false)),
            (key("t", 2), answer(4, false)),
        ];
        assert_eq!(cache.answer(id, epoch, &news), Ok(vec![true, false, true]));
        let Context::Incremental { partitions, .. } = cache.context(id, 2, false, &[], &[], now)
        else {
            panic!("expected an incremental context");
        };
        let order: Vec<i32> = partitions.iter().map(|(k, _)| k.partition).collect();
        assert_eq!(
            order,
            vec![1, 2, 0],
            "the partition with records moved last"
        );
        let error = Answer {
            error: true,
            ..answer(-1, false)
        };
        assert_eq!(cache.answer(id, 3, &[(key("t", 1), error)]), Ok(vec![true]));
        assert_eq!(
            cache.answer(id, 3, &[(key("t", 1), answer(0, false))]),
            Ok(vec![true]),
            "a partition whose error went away is sent again"
        );
        assert_eq!(
            cache.answer(id, 2, &[]),
            Err(SessionError::InvalidEpoch),
            "an answer for an epoch already passed"
        );
    }

    #[test]
    fn a_full_cache_gives_no_session_to_a_consumer_while_the_others_are_young() {
        let cache = FetchSessionCache::new(2, metrics());
        let now = Instant::now();
        assert_ne!(session(&cache, false, 1, now), NO_SESSION);
        assert_ne!(session(&cache, false, 1, now), NO_SESSION);
        assert_eq!(session(&cache, false, 50, now), NO_SESSION);
        assert_eq!(cache.metrics.evictions.get(), 0);
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn a_follower_takes_the_slot_of_the_smallest_consumer_session() {
        let cache = FetchSessionCache::new(2, metrics());
        let now = Instant::now();
        let big = session(&cache, false, 5, now);
        let small = session(&cache, false, 2, now);
        let follower = session(&cache, true, 1, now);
        assert_ne!(follower, NO_SESSION);
        assert_eq!(cache.metrics.evictions.get(), 1);
        assert_eq!(
            cache.context(small, 1, false, &[], &[], now),
            Context::Error(SessionError::IdNotFound)
        );
        assert!(matches!(
            cache.context(big, 1, false, &[], &[], now),
            Context::Incremental { .. }
        ));
        // A second follower may take the consumer's slot, but not a young follower's.
        assert_ne!(session(&cache, true, 1, now), NO_SESSION);
        assert_eq!(session(&cache, true, 100, now), NO_SESSION);
    }

    #[test]
    fn old_sessions_yield_to_bigger_ones_and_stale_ones_to_anyone() {
        let cache = FetchSessionCache::new(2, metrics());
        let start = Instant::now();
        let small = session(&cache, false, 1, start);
        let other = session(&cache, false, 3, start);
        let later = start + EVICTION_AGE + Duration::from_secs(1);
        // Both are old; they were used recently, so none is stale.
        assert!(matches!(
            cache.context(small, 1, false, &[], &[], later),
            Context::Incremental { .. }
        ));
        assert!(matches!(
            cache.context(other, 1, false, &[], &[], later),
            Context::Incremental { .. }
        ));
        assert_eq!(
            session(&cache, false, 1, later),
            NO_SESSION,
            "not bigger than the smallest"
        );
        assert_ne!(session(&cache, false, 2, later), NO_SESSION);
        assert_eq!(
            cache.context(small, 2, false, &[], &[], later),
            Context::Error(SessionError::IdNotFound),
            "the smallest old session went"
        );
        // Unused for longer than EVICTION_AGE: stale, taken even by a smaller session.
        let much_later = later + EVICTION_AGE + Duration::from_secs(1);
        assert!(matches!(
            cache.context(other, 2, false, &[], &[], much_later),
            Context::Incremental { .. }
        ));
        assert_ne!(session(&cache, false, 1, much_later), NO_SESSION);
        assert!(matches!(
            cache.context(other, 3, false, &[], &[], much_later),
            Context::Incremental { .. }
        ));
        assert_eq!(cache.metrics.evictions.get(), 2);
    }

    #[test]
    fn zero_slots_means_no_sessions() {
        let cache = FetchSessionCache::new(0, metrics());
        assert_eq!(session(&cache, true, 10, Instant::now()), NO_SESSION);
    }
}
