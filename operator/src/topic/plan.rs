//! What to do to a topic so it matches its KafkaTopic: the decision, without the doing. Pure.

use std::collections::BTreeMap;

use super::admin::{ConfigChange, NewTopic, TopicDescription};

/// The topic a KafkaTopic asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredTopic {
    pub name: String,
    pub partitions: Option<i32>,
    pub replicas: Option<i32>,
    pub config: BTreeMap<String, String>,
}

/// One change to make, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Create(NewTopic),
    CreatePartitions(i32),
    AlterConfigs(Vec<ConfigChange>),
    /// Reassign replicas until every partition has this many (one bounded round per
    /// reconciliation; the change may span many).
    ChangeReplicationFactor {
        from: i32,
        to: i32,
    },
}

/// Why the topic cannot be made to match the spec as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocker {
    /// The topic has more partitions than the spec asks for: Kafka cannot remove partitions.
    FewerPartitions { have: i32, want: i32 },
}

impl Blocker {
    pub fn reason(&self) -> &'static str {
        match self {
            Blocker::FewerPartitions { .. } => "PartitionsCannotDecrease",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Blocker::FewerPartitions { have, want } => format!(
                "the topic has {have} partitions and the spec asks for {want}: Kafka cannot remove partitions"
            ),
        }
    }
}

/// Whose topic the one on the cluster is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// No topic of that name exists.
    Absent,
    /// The topic this KafkaTopic created (or adopted): its id matches.
    Ours,
    /// A topic this KafkaTopic did not create: left alone.
    Foreign { topic_id: String },
}

/// Who owns `observed`, given the topic id the KafkaTopic recorded and whether it may adopt
/// an existing topic.
pub fn ownership(
    observed: Option<&TopicDescription>,
    recorded_id: Option<&str>,
    adopt: bool,
) -> Ownership {
    match observed {
        None => Ownership::Absent,
        Some(topic) if recorded_id == Some(topic.topic_id.as_str()) => Ownership::Ours,
        Some(_) if adopt && recorded_id.is_none() => Ownership::Ours,
        Some(topic) => Ownership::Foreign {
            topic_id: topic.topic_id.clone(),
        },
    }
}

/// The plan for a topic of ours, or an absent one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub blockers: Vec<Blocker>,
}

impl Plan {
    pub fn in_sync(&self) -> bool {
        self.steps.is_empty() && self.blockers.is_empty()
    }
}

/// The steps that bring `observed` (`None`: absent) to `desired`, and what blocks the rest.
/// `changing_replicas` says a replication-factor change was under way at the last look: its
/// reassignments still in flight are followed to their end even once every partition's target
/// has the wanted size.
pub fn plan(
    desired: &DesiredTopic,
    observed: Option<&TopicDescription>,
    changing_replicas: bool,
) -> Plan {
    let Some(topic) = observed else {
        return Plan {
            steps: vec![Step::Create(NewTopic {
                name: desired.name.clone(),
                partitions: desired.partitions,
                replicas: desired.replicas,
                config: desired.config.clone(),
            })],
            blockers: Vec::new(),
        };
    };
    let mut plan = Plan::default();
    match desired.partitions {
        Some(want) if want > topic.partitions => plan.steps.push(Step::CreatePartitions(want)),
        Some(want) if want < topic.partitions => plan.blockers.push(Blocker::FewerPartitions {
            have: topic.partitions,
            want,
        }),
        _ => {}
    }
    let changes = config_changes(&desired.config, &topic.overrides);
    if !changes.is_empty() {
        plan.steps.push(Step::AlterConfigs(changes));
    }
    // Last: it is the one that takes more than one reconciliation.
    if let Some(want) = desired.replicas {
        let uneven = want != topic.replicas || want != topic.min_replicas;
        if uneven || (changing_replicas && topic.reassigning > 0) {
            plan.steps.push(Step::ChangeReplicationFactor {
                from: topic.min_replicas,
                to: want,
            });
        }
    }
    plan
}

/// Changes that make `overrides` equal `desired`: the spec's settings are the topic's only
/// overrides, so one set outside the KafkaTopic is removed.
pub fn config_changes(
    desired: &BTreeMap<String, String>,
    overrides: &BTreeMap<String, String>,
) -> Vec<ConfigChange> {
    let sets = desired
        .iter()
        .filter(|(key, value)| overrides.get(*key) != Some(*value))
        .map(|(key, value)| ConfigChange::Set(key.clone(), value.clone()));
    let deletes = overrides
        .keys()
        .filter(|key| !desired.contains_key(*key))
        .map(|key| ConfigChange::Delete(key.clone()));
    sets.chain(deletes).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(
        partitions: Option<i32>,
        replicas: Option<i32>,
        config: &[(&str, &str)],
    ) -> DesiredTopic {
        DesiredTopic {
            name: "orders".to_string(),
            partitions,
            replicas,
            config: config
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn observed(partitions: i32, replicas: i32, overrides: &[(&str, &str)]) -> TopicDescription {
        TopicDescription {
            topic_id: "id-1".to_string(),
            partitions,
            replicas,
            min_replicas: replicas,
            reassigning: 0,
            overrides: overrides
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn an_absent_topic_is_created_with_the_spec() {
        let want = desired(Some(6), None, &[("cleanup.policy", "compact")]);
        let plan = plan(&want, None, false);
        assert_eq!(
            plan.steps,
            [Step::Create(NewTopic {
                name: "orders".to_string(),
                partitions: Some(6),
                replicas: None,
                config: want.config.clone(),
            })]
        );
        assert!(plan.blockers.is_empty());
    }

    #[test]
    fn a_matching_topic_needs_nothing() {
        let plan = plan(
            &desired(Some(3), Some(1), &[("retention.ms", "1000")]),
            Some(&observed(3, 1, &[("retention.ms", "1000")])),
            false,
        );
        assert!(plan.in_sync(), "{plan:?}");
    }

    #[test]
    fn unspecified_partitions_and_replicas_are_left_as_they_are() {
        let plan = plan(
            &desired(None, None, &[]),
            Some(&observed(12, 3, &[])),
            false,
        );
        assert!(plan.in_sync(), "{plan:?}");
    }

    #[test]
    fn more_partitions_grow_the_topic_and_fewer_are_a_blocker() {
        let grow = plan(
            &desired(Some(8), None, &[]),
            Some(&observed(3, 1, &[])),
            false,
        );
        assert_eq!(grow.steps, [Step::CreatePartitions(8)]);
        let shrink = plan(
            &desired(Some(2), None, &[]),
            Some(&observed(3, 1, &[])),
            false,
        );
        assert!(shrink.steps.is_empty());
        assert_eq!(
            shrink.blockers,
            [Blocker::FewerPartitions { have: 3, want: 2 }]
        );
        assert!(shrink.blockers[0]
            .message()
            .contains("cannot remove partitions"));
    }

    #[test]
    fn a_replication_factor_change_is_a_step_after_the_others() {
        let plan = plan(
            &desired(Some(4), Some(3), &[("retention.ms", "1")]),
            Some(&observed(3, 1, &[])),
            false,
        );
        assert!(plan.blockers.is_empty());
        assert!(matches!(plan.steps[0], Step::CreatePartitions(4)));
        assert!(matches!(plan.steps[1], Step::AlterConfigs(_)));
        assert_eq!(
            plan.steps[2],
            Step::ChangeReplicationFactor { from: 1, to: 3 }
        );
        let lower = plan_of(Some(1), observed(3, 3, &[]), false);
        assert_eq!(
            lower.steps,
            [Step::ChangeReplicationFactor { from: 3, to: 1 }]
        );
    }

    fn plan_of(replicas: Option<i32>, topic: TopicDescription, changing: bool) -> Plan {
        plan(&desired(None, replicas, &[]), Some(&topic), changing)
    }

    #[test]
    fn a_half_done_replication_factor_change_goes_on() {
        // Some partitions have their new replica list, others not yet.
        let mut half = observed(1, 3, &[]);
        half.min_replicas = 1;
        half.reassigning = 2;
        assert_eq!(
            plan_of(Some(3), half, false).steps,
            [Step::ChangeReplicationFactor { from: 1, to: 3 }]
        );
        // Every target has three replicas but copies are still in flight: followed to the end
        // when the change was ours, left alone otherwise.
        let mut landing = observed(1, 3, &[]);
        landing.reassigning = 1;
        assert_eq!(
            plan_of(Some(3), landing.clone(), true).steps,
            [Step::ChangeReplicationFactor { from: 3, to: 3 }]
        );
        assert!(plan_of(Some(3), landing.clone(), false).in_sync());
        assert!(
            plan_of(None, landing, true).in_sync(),
            "no replication factor asked for"
        );
        assert!(plan_of(Some(3), observed(1, 3, &[]), true).in_sync());
    }

    #[test]
    fn config_drift_is_corrected_both_ways() {
        let plan = plan(
            &desired(
                None,
                None,
                &[("retention.ms", "1000"), ("cleanup.policy", "compact")],
            ),
            Some(&observed(
                1,
                1,
                &[("retention.ms", "5"), ("segment.bytes", "1048576")],
            )),
            false,
        );
        assert_eq!(
            plan.steps,
            [Step::AlterConfigs(vec![
                ConfigChange::Set("cleanup.policy".to_string(), "compact".to_string()),
                ConfigChange::Set("retention.ms".to_string(), "1000".to_string()),
                ConfigChange::Delete("segment.bytes".to_string()),
            ])]
        );
    }

    #[test]
    fn growth_comes_before_config_changes() {
        let plan = plan(
            &desired(Some(4), None, &[("retention.ms", "1")]),
            Some(&observed(1, 1, &[])),
            false,
        );
        assert!(matches!(plan.steps[0], Step::CreatePartitions(4)));
        assert!(matches!(plan.steps[1], Step::AlterConfigs(_)));
    }

    #[test]
    fn a_topic_is_ours_only_by_its_recorded_id_or_by_adoption() {
        let topic = observed(1, 1, &[]);
        assert_eq!(ownership(None, Some("id-1"), false), Ownership::Absent);
        assert_eq!(
            ownership(Some(&topic), Some("id-1"), false),
            Ownership::Ours
        );
        assert_eq!(
            ownership(Some(&topic), None, false),
            Ownership::Foreign {
                topic_id: "id-1".to_string()
            }
        );
        assert_eq!(ownership(Some(&topic), None, true), Ownership::Ours);
        assert_eq!(
            ownership(Some(&topic), Some("id-0"), true),
            Ownership::Foreign {
                topic_id: "id-1".to_string()
            },
            "a recreated topic with another id is not taken over"
        );
    }
}
