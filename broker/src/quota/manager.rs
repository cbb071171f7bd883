//! Enforcement on one broker: a sampled rate per quota kind and group of clients (the group
//! the governing quota names, so clients under one user quota share it), and the throttle
//! time a record earns, as Kafka's `ClientQuotaManager` computes it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::rate::{Rate, Windows};
use super::{ClientQuotas, QuotaKey};

/// Rates nobody recorded into for this long are dropped (Kafka expires quota sensors after an
/// hour of inactivity).
const IDLE_EXPIRY_MS: i64 = 3_600_000;
/// How many records pass between sweeps for idle rates.
const SWEEP_EVERY: u64 = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SensorKey {
    key: QuotaKey,
    user: String,
    client_id: String,
}

#[derive(Debug, Default)]
struct Sensors {
    rates: HashMap<SensorKey, Rate>,
    /// Connections accepted from each address with a `connection_creation_rate`.
    connections: HashMap<std::net::IpAddr, Rate>,
    /// Connections accepted on the listeners `max.connection.creation.rate` governs.
    broker_connections: Rate,
    /// Connections accepted on each listener with a rate of its own.
    listener_connections: HashMap<String, Rate>,
    /// Controller mutations (partitions created or deleted), by group: a token bucket each.
    mutations: HashMap<SensorKey, TokenBucket>,
    records: u64,
}

/// Kafka's token bucket for `controller_mutation_rate` (KIP-599): it holds up to a burst of
/// `rate` times the quota windows' span, refills at `rate` a second, and may go negative.
#[derive(Debug, Clone, Copy)]
struct TokenBucket {
    tokens: f64,
    at_ms: i64,
}

impl TokenBucket {
    fn refill(&mut self, rate: f64, burst: f64, now: i64) {
        let elapsed = (now - self.at_ms).max(0) as f64 / 1000.0;
        self.tokens = (self.tokens + rate * elapsed).min(burst);
        self.at_ms = now;
    }

    /// Milliseconds until the bucket is back at zero (0 when it is not below).
    fn deficit_ms(&self, rate: f64) -> i64 {
        if self.tokens >= 0.0 || rate <= 0.0 {
            0
        } else {
            (-self.tokens / rate * 1000.0).ceil() as i64
        }
    }
}

/// The quota rates of the clients of one broker.
#[derive(Debug)]
pub struct QuotaManager {
    windows: Windows,
    /// How long a `controller_mutation_rate` may be spent at once (its bucket's size).
    mutation_span: Duration,
    epoch: Instant,
    sensors: Mutex<Sensors>,
}

/// Who a request is measured for: the principal's name and the request's client id.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    pub user: &'a str,
    pub client_id: &'a str,
}

impl QuotaManager {
    /// `samples` windows of `window` each (`quota.window.num`, `quota.window.size.seconds`),
    /// and controller mutations over `mutation_span` (`controller.quota.window.num` times
    /// `controller.quota.window.size.seconds`).
    pub fn new(samples: u32, window: Duration, mutation_span: Duration) -> QuotaManager {
        QuotaManager {
            mutation_span,
            windows: Windows {
                samples: samples.max(1),
                window_ms: i64::try_from(window.as_millis()).unwrap_or(i64::MAX).max(1),
            },
            epoch: Instant::now(),
            sensors: Mutex::new(Sensors::default()),
        }
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    /// Records `value` against the quota of `key` that governs `client` and returns how long
    /// the client must now be throttled, in milliseconds (0 within its quota, or without one).
    pub fn record(
        &self,
        quotas: &ClientQuotas,
        key: QuotaKey,
        client: Client<'_>,
        value: f64,
    ) -> i64 {
        let Some(governing) = quotas.resolve(key, client.user, client.client_id) else {
            return 0;
        };
        let now = self.now_ms();
        let sensor = SensorKey {
            key,
            user: governing.group.0,
            client_id: governing.group.1,
        };
        let mut sensors = self.sensors.lock();
        sensors.records += 1;
        if sensors.records % SWEEP_EVERY == 0 {
            sensors
                .rates
                .retain(|_, rate| rate.last_record().is_some_and(|t| now - t < IDLE_EXPIRY_MS));
        }
        let rate = sensors.rates.entry(sensor).or_default();
        rate.record(self.windows, value, now);
        let observed = rate.measure(self.windows, now);
        let throttle = Windows::throttle_ms(
            observed,
            governing.bound,
            rate.window_size(self.windows, now),
        );
        match key {
            // Kafka caps a request-time throttle at one window.
            QuotaKey::RequestPercentage => throttle.min(self.windows.window_ms),
            _ => throttle,
        }
    }

    /// Counts a new connection against the broker-wide `max.connection.creation.rate` of
    /// `limit` a second and returns how long to wait before serving it (and accepting more on
    /// its listener), in milliseconds, at most one quota window; 0 within the limit.
    pub fn record_broker_connection(&self, limit: u32) -> i64 {
        let now = self.now_ms();
        let mut sensors = self.sensors.lock();
        self.connection_delay_ms(&mut sensors.broker_connections, limit, now)
    }

    /// Counts a new connection on `listener` against its own `max.connection.creation.rate` of
    /// `limit` a second, as [`Self::record_broker_connection`] counts the broker's.
    pub fn record_listener_connection(&self, listener: &str, limit: u32) -> i64 {
        let now = self.now_ms();
        let mut sensors = self.sensors.lock();
        let rate = sensors
            .listener_connections
            .entry(listener.to_string())
            .or_default();
        self.connection_delay_ms(rate, limit, now)
    }

    /// Counts a new connection in `rate` and returns how long it waits under `limit` a
    /// second, in milliseconds, at most one quota window.
    fn connection_delay_ms(&self, rate: &mut Rate, limit: u32, now: i64) -> i64 {
        rate.record(self.windows, 1.0, now);
        let observed = rate.measure(self.windows, now);
        Windows::throttle_ms(
            observed,
            f64::from(limit),
            rate.window_size(self.windows, now),
        )
        .min(self.windows.window_ms)
    }

    /// Takes back a connection counted by [`Self::record_broker_connection`] and, on a
    /// listener with a rate of its own, [`Self::record_listener_connection`] (one its address's
    /// quota turned away, as Kafka does).
    pub fn unrecord_connection(&self, broker_wide: bool, listener: Option<&str>) {
        let now = self.now_ms();
        let mut sensors = self.sensors.lock();
        if broker_wide {
            sensors.broker_connections.record(self.windows, -1.0, now);
        }
        if let Some(rate) = listener.and_then(|l| sensors.listener_connections.get_mut(l)) {
            rate.record(self.windows, -1.0, now);
        }
    }

    /// Counts a new connection from `ip` against its `connection_creation_rate` (KIP-612) and
    /// returns, when that would exceed it, how long to hold the connection before closing it,
    /// in milliseconds; such a connection is not counted, as in Kafka. 0 within the quota or
    /// without one.
    pub fn record_connection(&self, quotas: &ClientQuotas, ip: std::net::IpAddr) -> i64 {
        let Some(bound) = quotas.ip_connection_rate(&ip.to_string()) else {
            return 0;
        };
        let now = self.now_ms();
        let mut sensors = self.sensors.lock();
        sensors.records += 1;
        if sensors.records % SWEEP_EVERY == 0 {
            sensors
                .connections
                .retain(|_, rate| rate.last_record().is_some_and(|t| now - t < IDLE_EXPIRY_MS));
        }
        let rate = sensors.connections.entry(ip).or_default();
        rate.record(self.windows, 1.0, now);
        let observed = rate.measure(self.windows, now);
        // Held no longer than one quota window, as Kafka bounds it.
        let throttle = Windows::throttle_ms(observed, bound, rate.window_size(self.windows, now))
            .min(self.windows.window_ms);
        if throttle > 0 {
            rate.record(self.windows, -1.0, now);
        }
        throttle
    }

    /// The bucket of the `controller_mutation_rate` quota governing `client`: its key, the
    /// rate and the burst (the rate over the mutation span).
    fn mutation_bucket(
        &self,
        quotas: &ClientQuotas,
        client: Client<'_>,
    ) -> Option<(SensorKey, f64, f64)> {
        let governing = quotas.resolve(
            QuotaKey::ControllerMutationRate,
            client.user,
            client.client_id,
        )?;
        let span_s = self.mutation_span.as_secs_f64();
        let key = SensorKey {
            key: QuotaKey::ControllerMutationRate,
            user: governing.group.0,
            client_id: governing.group.1,
        };
        Some((key, governing.bound, governing.bound * span_s))
    }

    /// Counts `partitions` created or deleted by `client` against its
    /// `controller_mutation_rate` (nothing without one). The bucket may go below zero: a
    /// mutation is judged before it is made ([`Self::mutation_throttle_ms`]), as Kafka does.
    pub fn record_mutations(&self, quotas: &ClientQuotas, client: Client<'_>, partitions: f64) {
        let Some((key, rate, burst)) = self.mutation_bucket(quotas, client) else {
            return;
        };
        let now = self.now_ms();
        let mut sensors = self.sensors.lock();
        let bucket = sensors.mutations.entry(key).or_insert(TokenBucket {
            tokens: burst,
            at_ms: now,
        });
        bucket.refill(rate, burst, now);
        bucket.tokens -= partitions;
    }

    /// How long `client` waits before its next controller mutation: until its bucket is back
    /// at zero (0 without a quota, or when it is not below).
    pub fn mutation_throttle_ms(&self, quotas: &ClientQuotas, client: Client<'_>) -> i64 {
        let Some((key, rate, burst)) = self.mutation_bucket(quotas, client) else {
            return 0;
        };
        let now = self.now_ms();
        match self.sensors.lock().mutations.get_mut(&key) {
            Some(bucket) => {
                bucket.refill(rate, burst, now);
                bucket.deficit_ms(rate)
            }
            None => 0,
        }
    }

    /// Takes back `value` recorded for `client` (a throttled fetch sends no records).
    pub fn unrecord(&self, quotas: &ClientQuotas, key: QuotaKey, client: Client<'_>, value: f64) {
        let Some(governing) = quotas.resolve(key, client.user, client.client_id) else {
            return;
        };
        let now = self.now_ms();
        let sensor = SensorKey {
            key,
            user: governing.group.0,
            client_id: governing.group.1,
        };
        if let Some(rate) = self.sensors.lock().rates.get_mut(&sensor) {
            rate.record(self.windows, -value, now);
        }
    }

    /// The most that can be recorded at once without being throttled for certain: a fetch
    /// asks for no more than this (`None` without a quota).
    pub fn max_in_window(
        &self,
        quotas: &ClientQuotas,
        key: QuotaKey,
        client: Client<'_>,
    ) -> Option<f64> {
        quotas.resolve(key, client.user, client.client_id).map(|g| {
            g.bound
                * f64::from(self.windows.samples.saturating_sub(1))
                * self.windows.window_ms as f64
                / 1000.0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::{EntityType, QuotaChange, QuotaEntity, QuotaValue};

    fn quotas(entity: QuotaEntity, key: &str, value: f64) -> ClientQuotas {
        let mut quotas = ClientQuotas::default();
        quotas.apply(&[QuotaChange {
            entity,
            key: key.into(),
            value: Some(QuotaValue(value)),
        }]);
        quotas
    }

    #[test]
    fn controller_mutations_take_a_burst_then_wait_for_the_bucket_to_refill() {
        let manager = QuotaManager::new(11, Duration::from_secs(1), Duration::from_secs(11));
        let quotas = quotas(
            QuotaEntity::of(&[(EntityType::User, Some("ops"))]),
            "controller_mutation_rate",
            2.0,
        );
        let ops = Client {
            user: "ops",
            client_id: "admin",
        };
        // A burst of 2 x 11 s = 22 partitions: 10 + 10 leave 2, so 10 more may still go
        // (judged before, the bucket not below zero), leaving it at -8: 4 s to wait.
        for _ in 0..3 {
            assert_eq!(manager.mutation_throttle_ms(&quotas, ops), 0);
            manager.record_mutations(&quotas, ops, 10.0);
        }
        let wait = manager.mutation_throttle_ms(&quotas, ops);
        assert!(
            (3_900..=4_000).contains(&wait),
            "8 partitions at 2/s: {wait} ms"
        );
        manager.record_mutations(&quotas, ops, 4.0);
        assert!(manager.mutation_throttle_ms(&quotas, ops) > 5_900);
        // Another user has no quota.
        let other = Client {
            user: "someone",
            client_id: "admin",
        };
        manager.record_mutations(&quotas, other, 1000.0);
        assert_eq!(manager.mutation_throttle_ms(&quotas, other), 0);
    }

    #[test]
    fn clients_of_one_user_share_its_quota() {
        let manager = QuotaManager::new(11, Duration::from_secs(1), Duration::from_secs(11));
        let quotas = quotas(
            QuotaEntity::of(&[(EntityType::User, Some("alice"))]),
            "producer_byte_rate",
            1000.0,
        );
        let a = Client {
            user: "alice",
            client_id: "a",
        };
        let b = Client {
            user: "alice",
            client_id: "b",
        };
        assert_eq!(
            manager.record(&quotas, QuotaKey::ProducerByteRate, a, 10_000.0),
            0
        );
        let throttle = manager.record(&quotas, QuotaKey::ProducerByteRate, b, 10_000.0);
        assert!((9_000..=10_100).contains(&throttle), "{throttle}");
        let bob = Client {
            user: "bob",
            client_id: "a",
        };
        assert_eq!(
            manager.record(&quotas, QuotaKey::ProducerByteRate, bob, 1e9),
            0,
            "no quota governs bob"
        );
        assert_eq!(
            manager.max_in_window(&quotas, QuotaKey::ProducerByteRate, a),
            Some(10_000.0)
        );
    }

    #[test]
    fn a_request_time_throttle_lasts_at_most_one_window() {
        let manager = QuotaManager::new(11, Duration::from_secs(1), Duration::from_secs(11));
        let quotas = quotas(
            QuotaEntity::of(&[(EntityType::ClientId, None)]),
            "request_percentage",
            1.0,
        );
        let client = Client {
            user: "ANONYMOUS",
            client_id: "busy",
        };
        assert_eq!(
            manager.record(&quotas, QuotaKey::RequestPercentage, client, 500.0),
            1000
        );
    }
}
