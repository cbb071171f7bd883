//! What every reconciliation shares: the Kubernetes client, the event recorder, metrics,
//! operator settings, the Kafka admin clients (topics, balancing, users), and per-object retry
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
use crate::user::Users;

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "oxbow-operator";

pub struct Context {
    pub client: Client,
    recorders: Recorders,
    pub metrics: Arc<Metrics>,
    pub settings: OperatorSettings,
    pub admin: Arc<dyn TopicAdmin>,
    /// Reads cluster state and moves replicas: scaling, rolling restarts, metrics.
    pub balancer: Arc<dyn BalanceAdmin>,
    pub backoff: Backoff,
    /// The KafkaUser controller's admin client and the credentials it has set.
    pub users: Users,
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
            recorders: Recorders {
                client: client.clone(),
                reporter,
                by_note: Mutex::default(),
            },
            client,
            metrics,
            settings,
            admin,
            balancer,
            backoff: Backoff::default(),
            users: Users::default(),
        }
    }
}

/// Event recorders by note. kube's `Recorder` folds every event with the same type, reason,
/// action and object into one series that keeps the first note (client-go's key includes the
/// note): "broker 4 unregistered" would show as a second "broker 3 unregistered", and a roll's
/// "restarting main-1" as a repeat of "restarting main-2". A recorder per distinct note keeps
/// different notes apart, while repeats of one note still count up one series.
struct Recorders {
    client: Client,
    reporter: Reporter,
    by_note: Mutex<HashMap<String, Recorder>>,
}

impl Recorders {
    /// Distinct notes remembered at once; past it the memory starts over, and a repeat of a
    /// forgotten note starts a new event instead of counting up the old one.
    const CAPACITY: usize = 256;

    fn for_note(&self, note: &str) -> Recorder {
        let mut by_note = self.by_note.lock().unwrap_or_else(|e| e.into_inner());
        if by_note.len() >= Self::CAPACITY && !by_note.contains_key(note) {
            by_note.clear();
        }
        by_note
            .entry(note.to_string())
            .or_insert_with(|| Recorder::new(self.client.clone(), self.reporter.clone()))
            .clone()
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
        let recorder = self.recorders.for_note(&event_note(note));
        if let Err(error) = recorder.publish(&event, regarding).await {
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

    #[tokio::test]
    async fn events_with_one_reason_and_different_notes_stay_apart_and_repeats_count_up() {
        use k8s_openapi::api::events::v1::Event as K8sEvent;
        let (ctx, _) =
            crate::test_support::fake_context(kube_fake_client::ClientBuilder::new()).await;
        let regarding = ObjectReference {
            api_version: Some("oxbow.dev/v1alpha1".to_string()),
            kind: Some("KafkaCluster".to_string()),
            namespace: Some("streaming".to_string()),
            name: Some("main".to_string()),
            uid: Some("00000000-0000-4000-8000-000000000000".to_string()),
            ..ObjectReference::default()
        };
        for note in [
            "broker 3 unregistered",
            "broker 4 unregistered",
            "broker 4 unregistered",
        ] {
            ctx.publish(
                &regarding,
                EventType::Normal,
                "UnregisteredBroker",
                "Reconcile",
                note,
            )
            .await;
        }
        let events: kube::Api<K8sEvent> = kube::Api::namespaced(ctx.client.clone(), "streaming");
        let mut seen: Vec<(String, i32)> = events
            .list(&kube::api::ListParams::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .map(|e| (e.note.unwrap_or_default(), e.series.map_or(1, |s| s.count)))
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            [
                ("broker 3 unregistered".to_string(), 1),
                ("broker 4 unregistered".to_string(), 2)
            ]
        );
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
