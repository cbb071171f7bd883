//! What every reconciliation shares: the Kubernetes client, the event recorder, metrics,
//! operator settings, the Kafka admin clients (topics, balancing), and per-object retry
//! backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Client;

use crate::balance::step::BalanceAdmin;
use crate::cluster::validate::OperatorSettings;
use crate::metrics::Metrics;
use crate::topic::admin::TopicAdmin;

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "oxbow-operator";

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub settings: OperatorSettings,
    pub admin: Arc<dyn TopicAdmin>,
    /// Reads cluster state and moves replicas: scaling, rolling restarts, metrics.
    pub balancer: Arc<dyn BalanceAdmin>,
    pub backoff: Backoff,
}

impl Context {
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        settings: OperatorSettings,
        admin: Arc<dyn TopicAdmin>,
        balancer: Arc<dyn BalanceAdmin>,
        instance: Option<String>,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_string(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            settings,
            admin,
            balancer,
            backoff: Backoff::default(),
        }
    }
}

/// The longest event note the API server takes (`note` of events.k8s.io/v1: 1 KiB); a longer
/// one would make the event itself fail.
pub const MAX_EVENT_NOTE: usize = 1024;

/// `note` cut to [`MAX_EVENT_NOTE`] bytes at a character boundary, ending in `…` when cut.
pub fn event_note(note: &str) -> String {
    if note.len() <= MAX_EVENT_NOTE {
        return note.to_string();
    }
    let mut end = MAX_EVENT_NOTE - '…'.len_utf8();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &note[..end])
}

impl Context {
    /// Publishes an event about `regarding`, its note cut to what the API server takes. An
    /// event that cannot be published is logged, never an error of the reconciliation.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: &str,
    ) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(event_note(note)),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, regarding).await {
            tracing::warn!(%error, %reason, "cannot publish an event");
        }
    }
}

/// Exponential retry delays per object: 5 s doubling to 5 min, reset by a success, so a
/// broken object is retried ever more slowly instead of in a storm.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_secs(5);
    pub const MAX: Duration = Duration::from_secs(300);

    /// Records a failure of `key` and returns how long to wait before the next attempt.
    pub fn failed(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let count = failures.entry(key.to_string()).or_insert(0);
        let delay = Self::FIRST
            .saturating_mul(2u32.saturating_pow((*count).min(16)))
            .min(Self::MAX);
        *count = count.saturating_add(1);
        delay
    }

    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_notes_are_cut_to_what_the_api_server_takes() {
        assert_eq!(event_note("short"), "short");
        let exact = "a".repeat(MAX_EVENT_NOTE);
        assert_eq!(event_note(&exact), exact);
        let long = "é".repeat(MAX_EVENT_NOTE);
        let cut = event_note(&long);
        assert!(cut.len() <= MAX_EVENT_NOTE, "{}", cut.len());
        assert!(cut.ends_with("é…"), "cut at a character boundary");
    }

    #[test]
    fn retries_back_off_exponentially_up_to_a_cap_and_reset_on_success() {
        let backoff = Backoff::default();
        let delays: Vec<u64> = (0..9).map(|_| backoff.failed("ns/a").as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(backoff.failed("ns/b").as_secs(), 5, "per object");
        backoff.succeeded("ns/a");
        assert_eq!(backoff.failed("ns/a").as_secs(), 5);
    }
}
