//! Cluster features (Kafka's KIP-584 feature flags): which levels of each feature this
//! broker supports, which level the cluster has finalized, and whether an UpdateFeatures
//! change is allowed, decided as Kafka's `FeatureControlManager` decides it.
//!
//! The finalized levels live in the metadata image, so every broker reports the same ones
//! and they outlive restarts. The image keeps only levels that were set; a feature never set
//! is at its default: `metadata.version` at the latest Kafka 4.1 level, every other at 0
//! (Kafka too leaves a feature at level 0 out of its finalized list).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const METADATA_VERSION: &str = "metadata.version";

/// A feature this broker knows, with the levels it supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feature {
    pub name: &'static str,
    pub min: i16,
    pub max: i16,
    /// The level a new cluster starts at.
    pub default: i16,
}

/// The features Kafka 4.1 reports. Oxbow supports only level 0 of those that name protocols
/// it does not implement: the KIP-848 consumer group protocol (`group.version` 1), the
/// KIP-890 transaction protocol (`transaction.version` 1-2; Oxbow has no transactions),
/// eligible leader replicas (KIP-966), share groups (KIP-932), and a dynamic controller
/// quorum (`kraft.version` 1, KIP-853: Oxbow's voters come from its configuration).
/// Listing them at 0-0 says so to `kafka-features.sh describe`, where Kafka would leave out
/// a feature it cannot raise above 0.
pub const FEATURES: &[Feature] = &[
    Feature {
        name: "eligible.leader.replicas.version",
        min: 0,
        max: 0,
        default: 0,
    },
    Feature {
        name: "group.version",
        min: 0,
        max: 0,
        default: 0,
    },
    Feature {
        name: "kraft.version",
        min: 0,
        max: 0,
        default: 0,
    },
    Feature {
        name: METADATA_VERSION,
        min: MIN_METADATA_VERSION,
        max: LATEST_METADATA_VERSION,
        default: LATEST_METADATA_VERSION,
    },
    Feature {
        name: "share.version",
        min: 0,
        max: 0,
        default: 0,
    },
    Feature {
        name: "transaction.version",
        min: 0,
        max: 0,
        default: 0,
    },
];

/// 3.3-IV3, the oldest `metadata.version` Kafka 4.1 supports.
const MIN_METADATA_VERSION: i16 = 7;
/// 4.1-IV1, Kafka 4.1's latest production `metadata.version`.
const LATEST_METADATA_VERSION: i16 = 27;

/// Kafka 4.1's production `metadata.version` levels: the name of each, and whether it changed
/// the metadata records (a downgrade across such a level could lose metadata, so Kafka
/// refuses it). From Kafka's `MetadataVersion` enum.
const METADATA_VERSIONS: &[(i16, &str, bool)] = &[
    (7, "3.3-IV3", true),
    (8, "3.4-IV0", true),
    (9, "3.5-IV0", false),
    (10, "3.5-IV1", false),
    (11, "3.5-IV2", true),
    (12, "3.6-IV0", false),
    (13, "3.6-IV1", true),
    (14, "3.6-IV2", true),
    (15, "3.7-IV0", true),
    (16, "3.7-IV1", false),
    (17, "3.7-IV2", true),
    (18, "3.7-IV3", false),
    (19, "3.7-IV4", false),
    (20, "3.8-IV0", false),
    (21, "3.9-IV0", false),
    (22, "4.0-IV0", false),
    (23, "4.0-IV1", true),
    (24, "4.0-IV2", false),
    (25, "4.0-IV3", false),
    (26, "4.1-IV0", false),
    (27, "4.1-IV1", false),
];

/// How an UpdateFeatures request may move a level (Kafka's `FeatureUpdate.UpgradeType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpgradeType {
    Upgrade,
    SafeDowngrade,
    UnsafeDowngrade,
    Unknown(i8),
}

impl UpgradeType {
    /// The request's field: `upgrade_type` from v1, `allow_downgrade` in v0.
    pub fn from_request(version: i16, upgrade_type: i8, allow_downgrade: bool) -> UpgradeType {
        if version == 0 {
            return if allow_downgrade {
                UpgradeType::SafeDowngrade
            } else {
                UpgradeType::Upgrade
            };
        }
        match upgrade_type {
            1 => UpgradeType::Upgrade,
            2 => UpgradeType::SafeDowngrade,
            3 => UpgradeType::UnsafeDowngrade,
            other => UpgradeType::Unknown(other),
        }
    }
}

/// One feature's requested level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureUpdate {
    pub name: String,
    pub level: i16,
    pub upgrade: UpgradeType,
}

pub fn feature(name: &str) -> Option<&'static Feature> {
    FEATURES.iter().find(|f| f.name == name)
}

/// The level of `name` given the levels that were set.
pub fn level(set: &BTreeMap<String, i16>, name: &str) -> i16 {
    set.get(name)
        .copied()
        .or_else(|| feature(name).map(|f| f.default))
        .unwrap_or(0)
}

/// The finalized levels as Kafka reports them: every feature above level 0.
pub fn finalized(set: &BTreeMap<String, i16>) -> BTreeMap<&'static str, i16> {
    FEATURES
        .iter()
        .map(|f| (f.name, level(set, f.name)))
        .filter(|(_, level)| *level > 0)
        .collect()
}

/// The levels set after `updates`, all of them or none: the first refused update says why,
/// in Kafka's words. `broker` is the node whose supported levels were checked (all run this
/// code), named in the reason as Kafka names the node that lacks support.
pub fn apply(
    set: &BTreeMap<String, i16>,
    updates: &[FeatureUpdate],
    broker: i32,
) -> Result<BTreeMap<String, i16>, String> {
    let mut next = set.clone();
    for update in updates {
        check(set, update, broker).map_err(|reason| {
            format!(
                "The update failed for all features since the following feature had an error: \
                 {reason}"
            )
        })?;
        next.insert(update.name.clone(), update.level);
    }
    Ok(next)
}

fn check(set: &BTreeMap<String, i16>, update: &FeatureUpdate, broker: i32) -> Result<(), String> {
    let FeatureUpdate {
        name,
        level: new,
        upgrade,
    } = update;
    let invalid =
        |reason: &str| format!("Invalid update version {new} for feature {name}. {reason}");
    if let UpgradeType::Unknown(_) = upgrade {
        return Err(invalid(
            "The controller does not support the given upgrade type.",
        ));
    }
    if *new < 0 {
        return Err(invalid("A feature version cannot be less than 0."));
    }
    let Some(known) = feature(name) else {
        return Err(invalid(&if *new == 0 {
            format!("No feature with name {name}")
        } else {
            format!("Broker {broker} does not support this feature.")
        }));
    };
    if !(known.min..=known.max).contains(new) {
        return Err(invalid(&if known.max == 0 {
            format!("Broker {broker} does not support this feature.")
        } else {
            format!(
                "Broker {broker} only supports versions {}-{}",
                known.min, known.max
            )
        }));
    }
    let current = level(set, name);
    if *new < current && *upgrade == UpgradeType::Upgrade {
        return Err(invalid(
            "Can't downgrade the version of this feature without setting the upgrade type to \
             either safe or unsafe downgrade.",
        ));
    }
    if *new > current && *upgrade != UpgradeType::Upgrade {
        return Err(invalid("Can't downgrade to a newer version."));
    }
    if name == METADATA_VERSION && *new < current && metadata_changed(*new, current) {
        let reason = if *upgrade == UpgradeType::UnsafeDowngrade {
            "Unsafe metadata downgrade is not supported in this version."
        } else {
            "Refusing to perform the requested downgrade because it might delete metadata \
             information."
        };
        return Err(format!("Invalid metadata.version {new}. {reason}"));
    }
    Ok(())
}

/// Whether a level in `(low, high]` changed the metadata records.
fn metadata_changed(low: i16, high: i16) -> bool {
    METADATA_VERSIONS
        .iter()
        .any(|(level, _, changed)| *changed && *level > low && *level <= high)
}

/// The name of a `metadata.version` level, as Kafka's tools print it (e.g. `4.1-IV1`).
pub fn metadata_version_name(level: i16) -> Option<&'static str> {
    METADATA_VERSIONS
        .iter()
        .find(|(l, _, _)| *l == level)
        .map(|(_, name, _)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(name: &str, level: i16, upgrade: UpgradeType) -> FeatureUpdate {
        FeatureUpdate {
            name: name.to_string(),
            level,
            upgrade,
        }
    }

    #[test]
    fn a_new_cluster_finalizes_only_the_latest_metadata_version() {
        let finalized = finalized(&BTreeMap::new());
        assert_eq!(finalized, BTreeMap::from([(METADATA_VERSION, 27)]));
        assert_eq!(metadata_version_name(27), Some("4.1-IV1"));
        assert_eq!(metadata_version_name(7), Some("3.3-IV3"));
    }

    #[test]
    fn metadata_version_downgrades_only_across_levels_that_did_not_change_the_metadata() {
        let set = BTreeMap::new();
        let safe = update(METADATA_VERSION, 24, UpgradeType::SafeDowngrade);
        let after = apply(&set, &[safe], 1).unwrap();
        assert_eq!(level(&after, METADATA_VERSION), 24);
        // 4.0-IV1 (23) changed the metadata: going below it is refused, unsafe or not.
        for upgrade in [UpgradeType::SafeDowngrade, UpgradeType::UnsafeDowngrade] {
            let error = apply(&after, &[update(METADATA_VERSION, 22, upgrade)], 1).unwrap_err();
            assert!(
                error.ends_with(
                    ": Invalid metadata.version 22. Refusing to perform the requested \
                                 downgrade because it might delete metadata information."
                ) || upgrade == UpgradeType::UnsafeDowngrade,
                "{error}"
            );
            assert!(error.contains("Invalid metadata.version 22."), "{error}");
        }
        let back = apply(
            &after,
            &[update(METADATA_VERSION, 27, UpgradeType::Upgrade)],
            1,
        )
        .unwrap();
        assert_eq!(finalized(&back)[METADATA_VERSION], 27);
    }

    #[test]
    fn a_downgrade_needs_a_downgrade_type_and_an_upgrade_an_upgrade_type() {
        let set = BTreeMap::new();
        let error = apply(
            &set,
            &[update(METADATA_VERSION, 26, UpgradeType::Upgrade)],
            1,
        )
        .unwrap_err();
        assert!(
            error.contains("without setting the upgrade type"),
            "{error}"
        );
        let lower = apply(
            &set,
            &[update(METADATA_VERSION, 26, UpgradeType::SafeDowngrade)],
            1,
        )
        .unwrap();
        let error = apply(
            &lower,
            &[update(METADATA_VERSION, 27, UpgradeType::SafeDowngrade)],
            1,
        )
        .unwrap_err();
        assert!(
            error.contains("Can't downgrade to a newer version."),
            "{error}"
        );
    }

    #[test]
    fn levels_outside_the_supported_range_and_unknown_features_are_refused() {
        let set = BTreeMap::new();
        let cases = [
            (
                update(METADATA_VERSION, 28, UpgradeType::Upgrade),
                "Broker 1 only supports versions 7-27",
            ),
            (
                update(METADATA_VERSION, 6, UpgradeType::SafeDowngrade),
                "Broker 1 only supports versions 7-27",
            ),
            (
                update("group.version", 1, UpgradeType::Upgrade),
                "does not support this feature",
            ),
            (
                update("no.such.feature", 1, UpgradeType::Upgrade),
                "does not support this feature",
            ),
            (
                update("no.such.feature", 0, UpgradeType::Upgrade),
                "No feature with name",
            ),
            (
                update("group.version", -1, UpgradeType::Upgrade),
                "cannot be less than 0",
            ),
            (
                update("group.version", 0, UpgradeType::Unknown(9)),
                "upgrade type",
            ),
        ];
        for (update, expected) in cases {
            let error = apply(&set, std::slice::from_ref(&update), 1).unwrap_err();
            assert!(error.contains(expected), "{update:?}: {error}");
        }
        // Level 0 of a supported feature is its only level: accepted, and not finalized.
        let same = apply(&set, &[update("group.version", 0, UpgradeType::Upgrade)], 1).unwrap();
        assert!(!finalized(&same).contains_key("group.version"));
    }

    #[test]
    fn one_refused_update_refuses_them_all() {
        let set = BTreeMap::new();
        let updates = [
            update(METADATA_VERSION, 26, UpgradeType::SafeDowngrade),
            update("transaction.version", 2, UpgradeType::Upgrade),
        ];
        assert!(apply(&set, &updates, 1).is_err());
    }

    #[test]
    fn version_zero_requests_downgrade_with_allow_downgrade() {
        assert_eq!(
            UpgradeType::from_request(0, 0, true),
            UpgradeType::SafeDowngrade
        );
        assert_eq!(UpgradeType::from_request(0, 3, false), UpgradeType::Upgrade);
        assert_eq!(
            UpgradeType::from_request(1, 3, false),
            UpgradeType::UnsafeDowngrade
        );
    }
}
