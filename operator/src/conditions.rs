//! Status conditions (`Ready`, `Reconciling`, `Degraded`, `ReconciliationPaused`) shared by
//! every resource: building them, keeping `lastTransitionTime` when a condition's status did
//! not change, and the pause annotation.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const DEGRADED: &str = "Degraded";

/// A condition as the reconciler wants it; [`merge`] turns it into a Kubernetes `Condition`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Wanted {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

fn status_word(status: bool) -> &'static str {
    if status {
        "True"
    } else {
        "False"
    }
}

/// The conditions to write: `wanted` in order, each keeping the transition time it had in
/// `previous` when its status is unchanged, else stamped `now`.
pub fn merge(
    previous: &[Condition],
    wanted: &[Wanted],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    wanted
        .iter()
        .map(|w| {
            let status = status_word(w.status).to_string();
            let last_transition_time = previous
                .iter()
                .find(|c| c.type_ == w.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or(Time(now));
            Condition {
                type_: w.type_.to_string(),
                status,
                reason: w.reason.clone(),
                message: w.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// Condition type, `True` while the resource's reconciliation is paused.
pub const PAUSED: &str = "ReconciliationPaused";
/// Annotation that pauses the reconciliation of a resource while it is `"true"`: spec changes
/// wait, nothing is corrected, and the status keeps what it said with [`PAUSED`] added.
/// Deleting the resource still cleans up.
pub const PAUSE_ANNOTATION: &str = "oxbow.dev/pause-reconciliation";

/// Whether the object carries annotation `key` with the value `"true"` (any case).
pub fn annotation_is_true(meta: &ObjectMeta, key: &str) -> bool {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("true"))
}

/// Whether the object's reconciliation is paused.
pub fn is_paused(meta: &ObjectMeta) -> bool {
    annotation_is_true(meta, PAUSE_ANNOTATION)
}

/// `previous` with [`PAUSED`] true: the other conditions as they were (they describe the last
/// generation reconciled), the pause stamped `now` unless it was already there.
pub fn with_paused(
    previous: &[Condition],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let mut conditions: Vec<Condition> = previous
        .iter()
        .filter(|c| c.type_ != PAUSED)
        .cloned()
        .collect();
    conditions.extend(merge(
        previous,
        &[Wanted::new(
            PAUSED,
            true,
            "Paused",
            format!("annotation {PAUSE_ANNOTATION} is true: changes wait until it is removed"),
        )],
        generation,
        now,
    ));
    conditions
}

/// Whether condition `type_` is `True` in `conditions`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// The reason of condition `type_`, if present.
pub fn reason<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a str> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.reason.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).expect("valid time")
    }

    #[test]
    fn an_unchanged_status_keeps_its_transition_time_and_a_change_is_stamped() {
        let first = merge(
            &[],
            &[
                Wanted::new(READY, false, "Starting", "0/3"),
                Wanted::new(DEGRADED, false, "SpecValid", ""),
            ],
            Some(1),
            at(100),
        );
        assert_eq!(first[0].last_transition_time, Time(at(100)));
        let second = merge(
            &first,
            &[
                Wanted::new(READY, true, "AllBrokersReady", "3/3"),
                Wanted::new(DEGRADED, false, "SpecValid", ""),
            ],
            Some(2),
            at(200),
        );
        assert_eq!(second[0].status, "True");
        assert_eq!(second[0].last_transition_time, Time(at(200)));
        assert_eq!(second[1].last_transition_time, Time(at(100)));
        assert_eq!(second[1].observed_generation, Some(2));
        assert!(is_true(&second, READY));
        assert!(!is_true(&second, DEGRADED));
        assert_eq!(reason(&second, READY), Some("AllBrokersReady"));
        assert_eq!(reason(&second, RECONCILING), None);
    }

    #[test]
    fn a_pause_keeps_the_other_conditions_and_its_first_time() {
        let ready = merge(
            &[],
            &[Wanted::new(READY, true, "Ready", "")],
            Some(1),
            at(100),
        );
        let paused = with_paused(&ready, Some(2), at(200));
        assert_eq!(paused.len(), 2);
        assert_eq!(
            paused[0], ready[0],
            "Ready as the last reconciliation left it"
        );
        assert!(is_true(&paused, PAUSED));
        assert_eq!(paused[1].last_transition_time, Time(at(200)));
        let again = with_paused(&paused, Some(3), at(300));
        assert_eq!(again.len(), 2);
        assert_eq!(again[1].last_transition_time, Time(at(200)));

        let mut meta = ObjectMeta::default();
        assert!(!is_paused(&meta));
        meta.annotations = Some([(PAUSE_ANNOTATION.to_string(), "true".to_string())].into());
        assert!(is_paused(&meta));
        meta.annotations = Some([(PAUSE_ANNOTATION.to_string(), "false".to_string())].into());
        assert!(!is_paused(&meta));
    }
}
