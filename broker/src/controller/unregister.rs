//! UnregisterBroker: whether a broker may leave the cluster for good, and the two steps that
//! take it out — its registration out of the metadata image (a committed command, ordered by
//! the active controller and checked again by every broker as it applies it) and its node out
//! of the quorum's membership (by the leader), so the leader stops replicating to a node that
//! is gone. A broker that is merely down stays registered and fenced, and stays a learner.

use std::collections::BTreeSet;

use thiserror::Error;

use super::image::{CommandResult, MetadataCommand, MetadataImage};
use super::{Quorum, QuorumError};

/// Partitions named in a refusal; the rest are counted.
const NAMED_PARTITIONS: usize = 5;

/// Why a broker cannot be unregistered.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    #[error("broker {0} is not registered")]
    NotRegistered(i32),
    #[error(
        "broker {0} is a voter of the metadata quorum: removing it would change the quorum, \
         which only a change of controller.quorum.voters does"
    )]
    Voter(i32),
    #[error(
        "broker {0} is alive (registered and not fenced): only a broker that has stopped can \
         be unregistered"
    )]
    Alive(i32),
    #[error(
        "broker {broker} still holds replicas of {count} partitions ({}): reassign them first",
        examples.join(", ")
    )]
    HoldsReplicas {
        broker: i32,
        count: usize,
        examples: Vec<String>,
    },
}

/// What unregistering a broker takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Steps {
    /// Its registration is in the image.
    pub registration: bool,
    /// It is a learner of the quorum.
    pub learner: bool,
}

/// What unregistering `broker` takes, or why it is refused, from the image and the quorum's
/// membership. A broker is alive while the controller has not fenced it: the controller
/// fences a broker whose heartbeats stop or whose listener refuses connections. A learner that
/// never registered (or whose registration went in an earlier, interrupted attempt) is only
/// taken out of the membership.
pub fn decide(
    image: &MetadataImage,
    voters: &BTreeSet<i32>,
    learners: &BTreeSet<i32>,
    broker: i32,
) -> Result<Steps, Refusal> {
    if voters.contains(&broker) {
        return Err(Refusal::Voter(broker));
    }
    let learner = learners.contains(&broker);
    let Some(registration) = image.brokers.get(&broker) else {
        return if learner {
            Ok(Steps {
                registration: false,
                learner,
            })
        } else {
            Err(Refusal::NotRegistered(broker))
        };
    };
    if !registration.fenced {
        return Err(Refusal::Alive(broker));
    }
    let held = image.partitions_on(broker);
    if !held.is_empty() {
        return Err(Refusal::HoldsReplicas {
            broker,
            count: held.len(),
            examples: held.into_iter().take(NAMED_PARTITIONS).collect(),
        });
    }
    Ok(Steps {
        registration: true,
        learner,
    })
}

/// Why unregistering failed.
#[derive(Debug, Error)]
pub enum UnregisterError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The controller refused the change for a reason the image checked here did not show.
    #[error("broker {broker} was not unregistered: {reason}")]
    Rejected { broker: i32, reason: String },
    #[error("cannot unregister the broker: {0}")]
    Quorum(#[from] QuorumError),
}

/// Unregisters `broker`, as seen from the broker `own_id`: checks it, commits the removal of
/// its registration (the controller refuses it if the broker was unfenced or given a replica
/// meanwhile), then has the leader take it out of the membership. An attempt interrupted in
/// between is finished by the next one.
pub async fn unregister(quorum: &Quorum, own_id: i32, broker: i32) -> Result<(), UnregisterError> {
    let (voters, learners) = quorum.members(own_id);
    let steps = decide(&quorum.image(), &voters, &learners, broker)?;
    if steps.registration {
        let command = MetadataCommand::UnregisterBroker { broker };
        if let CommandResult::Rejected { reason } = quorum.propose(command).await? {
            // The image changed since it was checked: say how it stands now.
            decide(&quorum.image(), &voters, &learners, broker)?;
            return Err(UnregisterError::Rejected { broker, reason });
        }
        tracing::info!(broker, "broker unregistered");
    }
    if steps.learner {
        quorum.remove_learner(broker).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::image::BrokerRegistration;

    fn image(brokers: &[(i32, bool)], replicas: &[i32]) -> MetadataImage {
        let mut image = MetadataImage::default();
        for (id, _) in brokers {
            image.apply(&MetadataCommand::RegisterBroker(BrokerRegistration {
                id: *id,
                incarnation: uuid::Uuid::nil(),
                host: "h".into(),
                port: 1,
                rack: None,
                fenced: false,
                shutting_down: false,
                endpoints: Vec::new(),
            }));
        }
        image.apply(&MetadataCommand::CreateTopic {
            name: "t".into(),
            id: uuid::Uuid::nil(),
            configs: Default::default(),
            assignment: vec![replicas.to_vec()],
        });
        for (id, fenced) in brokers {
            image.apply(&MetadataCommand::SetFenced {
                broker: *id,
                fenced: *fenced,
            });
        }
        image
    }

    fn set(ids: &[i32]) -> BTreeSet<i32> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_stopped_learner_holding_nothing_leaves_the_image_and_the_membership() {
        let image = image(&[(1, false), (2, false), (3, false), (4, true)], &[1, 2, 3]);
        assert_eq!(
            decide(&image, &set(&[1, 2, 3]), &set(&[4]), 4),
            Ok(Steps {
                registration: true,
                learner: true
            })
        );
    }

    #[test]
    fn a_voter_a_live_broker_one_with_replicas_and_an_unknown_id_are_refused() {
        let image = image(
            &[(1, true), (2, false), (3, false), (4, false), (5, true)],
            &[5],
        );
        let (voters, learners) = (set(&[1, 2, 3]), set(&[4, 5]));
        assert_eq!(
            decide(&image, &voters, &learners, 1),
            Err(Refusal::Voter(1)),
            "even a fenced voter"
        );
        assert_eq!(
            decide(&image, &voters, &learners, 4),
            Err(Refusal::Alive(4))
        );
        assert_eq!(
            decide(&image, &voters, &learners, 5),
            Err(Refusal::HoldsReplicas {
                broker: 5,
                count: 1,
                examples: vec!["t-0".into()]
            })
        );
        assert_eq!(
            decide(&image, &voters, &learners, 9),
            Err(Refusal::NotRegistered(9))
        );
    }

    #[test]
    fn a_learner_whose_registration_already_went_only_leaves_the_membership() {
        let image = image(&[(1, false)], &[1]);
        assert_eq!(
            decide(&image, &set(&[1]), &set(&[4]), 4),
            Ok(Steps {
                registration: false,
                learner: true
            })
        );
    }
}
