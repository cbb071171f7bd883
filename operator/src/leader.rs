//! Leader election over a `coordination.k8s.io/v1` Lease, so that with several operator
//! replicas exactly one reconciles. Writes use the Lease's resourceVersion: of two replicas
//! racing for it, the API server lets one win and answers the other with a conflict.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::Api;

/// How a replica takes part in the election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    pub name: String,
    /// This replica's name in the Lease (its pod name).
    pub identity: String,
    /// How long a holder stays leader without renewing.
    pub lease_duration: Duration,
    /// How often the leader renews, and a follower retries.
    pub retry_period: Duration,
}

/// What a replica should do, given the Lease as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds the lease, or the holder let it expire.
    Acquire,
    /// This replica holds it.
    Renew,
    /// Another replica holds a live lease.
    Follow { holder: String },
}

/// Decides from the Lease's spec. Pure.
pub fn decide(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Decision {
    let Some(spec) = spec else {
        return Decision::Acquire;
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder.is_empty() {
        return Decision::Acquire;
    }
    if holder == identity {
        return Decision::Renew;
    }
    let expires = spec.renew_time.as_ref().map(|t| {
        t.0.saturating_add(SignedDuration::from_secs(i64::from(
            spec.lease_duration_seconds.unwrap_or(0),
        )))
    });
    match expires {
        Some(Ok(expires)) if expires > now => Decision::Follow { holder },
        _ => Decision::Acquire,
    }
}

/// One replica's side of the election.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
}

impl LeaderElector {
    pub fn new(api: Api<Lease>, config: LeaseConfig) -> Self {
        Self { api, config }
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    fn spec(&self, now: Timestamp, acquired: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX),
            ),
            acquire_time: Some(acquired.unwrap_or(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Acquires or renews the lease. `Ok(true)`: this replica is the leader now.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now, None, 0)),
            };
            return conflict_is_false(self.api.create(&PostParams::default(), &lease).await);
        };
        let previous = lease.spec.clone().unwrap_or_default();
        let transitions = previous.lease_transitions.unwrap_or(0);
        lease.spec = Some(match decide(Some(&previous), &self.config.identity, now) {
            Decision::Follow { .. } => return Ok(false),
            Decision::Renew => self.spec(now, previous.acquire_time, transitions),
            Decision::Acquire => self.spec(now, None, transitions + 1),
        });
        // The resourceVersion read above makes this a compare-and-swap.
        conflict_is_false(
            self.api
                .replace(&self.config.name, &PostParams::default(), &lease)
                .await,
        )
    }

    /// Gives the lease up, so another replica takes over without waiting for it to expire.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        conflict_is_false(
            self.api
                .replace(&self.config.name, &PostParams::default(), &lease)
                .await,
        )
        .map(|_| ())
    }
}

fn conflict_is_false(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).expect("time")
    }

    fn held_by(holder: &str, renewed: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.to_string()),
            renew_time: Some(MicroTime(at(renewed))),
            lease_duration_seconds: Some(duration),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_free_or_expired_lease_is_acquired_and_a_live_one_followed() {
        assert_eq!(decide(None, "a", at(100)), Decision::Acquire);
        assert_eq!(
            decide(Some(&LeaseSpec::default()), "a", at(100)),
            Decision::Acquire
        );
        assert_eq!(
            decide(Some(&held_by("b", 90, 15)), "a", at(100)),
            Decision::Follow {
                holder: "b".to_string()
            }
        );
        assert_eq!(
            decide(Some(&held_by("b", 80, 15)), "a", at(100)),
            Decision::Acquire
        );
        assert_eq!(
            decide(Some(&held_by("a", 0, 15)), "a", at(100)),
            Decision::Renew
        );
    }

    fn elector(client: kube::Client, identity: &str) -> LeaderElector {
        LeaderElector::new(
            Api::namespaced(client, "oxbow-system"),
            LeaseConfig {
                name: "oxbow-operator".to_string(),
                identity: identity.to_string(),
                lease_duration: Duration::from_secs(15),
                retry_period: Duration::from_secs(2),
            },
        )
    }

    #[tokio::test]
    async fn one_replica_leads_and_another_takes_over_when_it_releases() {
        let client = kube_fake_client::ClientBuilder::new()
            .build()
            .await
            .expect("fake client");
        let a = elector(client.clone(), "operator-a");
        let b = elector(client.clone(), "operator-b");
        assert!(a.try_acquire_or_renew().await.expect("a acquires"));
        assert!(!b.try_acquire_or_renew().await.expect("b follows"));
        assert!(a.try_acquire_or_renew().await.expect("a renews"));
        a.release().await.expect("a releases");
        assert!(b.try_acquire_or_renew().await.expect("b acquires"));
        assert!(!a.try_acquire_or_renew().await.expect("a follows"));
        let lease: Api<Lease> = Api::namespaced(client, "oxbow-system");
        let spec = lease
            .get("oxbow-operator")
            .await
            .expect("lease")
            .spec
            .expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some("operator-b"));
        assert_eq!(spec.lease_transitions, Some(1));
        assert_eq!(spec.lease_duration_seconds, Some(15));
    }
}
