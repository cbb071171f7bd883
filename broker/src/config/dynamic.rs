//! Broker settings that change while the broker runs: IncrementalAlterConfigs or AlterConfigs
//! on a BROKER resource sets or deletes them, for one broker (named by its id) or as the
//! cluster-wide default (the empty name, Kafka's `--entity-default`), and the parts of the
//! broker that use them watch for the change. A broker's own value wins over the default.
//! Every setting Kafka changes at run time is accepted: `follower.replication.throttled.rate`
//! and `max.connection.creation.rate` take effect at once, those with no effect in Oxbow are kept and reported, and those Oxbow
//! reads only at start are refused, naming the setting. The values are kept in the metadata
//! quorum (as Kafka keeps them in its metadata log), so they outlive a restart; a deleted value
//! gives way to `server.properties` again.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;

use super::{broker_def, defs, ConfigError};

/// The broker settings whose change at run time takes effect.
pub const DYNAMIC_BROKER_SETTINGS: &[&str] = &[
    "follower.replication.throttled.rate",
    "max.connection.creation.rate",
];

/// Whether a run-time change of `key` is accepted: Kafka changes it at run time, and Oxbow
/// either applies it at once or gives it no effect at all.
pub fn is_dynamic(key: &str) -> bool {
    broker_def(key).is_some_and(|def| {
        def.dynamic && (DYNAMIC_BROKER_SETTINGS.contains(&key) || def.no_effect.is_some())
    })
}

/// Why a dynamic change was refused: the setting's name and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub key: String,
    pub message: String,
    /// The setting exists but only `server.properties` sets it (Kafka's INVALID_REQUEST);
    /// otherwise the key is unknown or the value invalid (INVALID_CONFIG).
    pub read_only: bool,
}

/// The dynamic values set on this broker, by Kafka name, shared by every clone.
#[derive(Debug, Clone)]
pub struct DynamicSettings {
    values: Arc<watch::Sender<BTreeMap<String, String>>>,
}

impl Default for DynamicSettings {
    fn default() -> Self {
        Self {
            values: Arc::new(watch::channel(BTreeMap::new()).0),
        }
    }
}

impl DynamicSettings {
    /// The value set at run time for `key`, if any.
    pub fn get(&self, key: &str) -> Option<String> {
        self.values.borrow().get(key).cloned()
    }

    /// Every dynamic value, and every later change to them.
    pub fn subscribe(&self) -> watch::Receiver<BTreeMap<String, String>> {
        self.values.subscribe()
    }

    /// Makes the values the metadata image holds for this broker (none: no dynamic setting)
    /// the dynamic settings; watchers see a change at once, and nothing when they are equal.
    pub fn follow(&self, values: Option<&BTreeMap<String, String>>) {
        self.values.send_if_modified(|current| {
            let wanted = values.cloned().unwrap_or_default();
            if *current == wanted {
                false
            } else {
                tracing::info!(settings = ?wanted, "dynamic broker settings in effect");
                *current = wanted;
                true
            }
        });
    }
}

/// The dynamic settings in effect on one broker: the cluster-wide defaults, overridden by the
/// broker's own values.
pub fn effective(
    defaults: Option<&BTreeMap<String, String>>,
    own: Option<&BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let mut values = defaults.cloned().unwrap_or_default();
    if let Some(own) = own {
        values.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    values
}

/// The values of one BROKER resource (a broker's own, or the cluster-wide defaults) after
/// `changes` (`None` deletes), every key and value checked. With `replace` (AlterConfigs),
/// settings not named are deleted.
pub fn changed(
    current: Option<&BTreeMap<String, String>>,
    changes: &[(String, Option<String>)],
    replace: bool,
) -> Result<BTreeMap<String, String>, Refused> {
    let mut values = if replace {
        BTreeMap::new()
    } else {
        current.cloned().unwrap_or_default()
    };
    for (key, value) in changes {
        let refuse = |message: String| Refused {
            key: key.clone(),
            message,
            read_only: false,
        };
        let def =
            broker_def(key).ok_or_else(|| refuse(format!("unknown broker setting `{key}`")))?;
        if !def.dynamic {
            return Err(Refused {
                read_only: true,
                ..refuse(format!(
                    "broker setting `{key}` is read-only: change server.properties and restart"
                ))
            });
        }
        if !is_dynamic(key) {
            return Err(Refused {
                read_only: true,
                ..refuse(format!(
                    "Oxbow reads broker setting `{key}` only at start: change server.properties \
                     and restart (applied at run time: {})",
                    DYNAMIC_BROKER_SETTINGS.join(", ")
                ))
            });
        }
        match value {
            Some(value) => {
                defs::validate(def, value).map_err(|e: ConfigError| refuse(e.to_string()))?;
                values.insert(key.clone(), value.clone());
            }
            None => {
                values.remove(key);
            }
        }
    }
    Ok(values)
}

/// A `max.connection.creation.rate` value as a limit: `None` for Kafka's default (`i32::MAX`,
/// no limit) or anything unreadable (validation refuses that first).
pub fn connection_creation_rate_value(value: &str) -> Option<u32> {
    value
        .parse::<i64>()
        .ok()
        .filter(|rate| *rate < i64::from(i32::MAX))
        .and_then(|rate| u32::try_from(rate).ok())
}

/// The broker-wide connection creation rate in effect: the dynamic value when one is set, else
/// the static one.
pub fn connection_creation_rate(
    dynamic: &BTreeMap<String, String>,
    static_rate: Option<u32>,
) -> Option<u32> {
    match dynamic.get("max.connection.creation.rate") {
        Some(value) => connection_creation_rate_value(value),
        None => static_rate,
    }
}

/// The follower throttle in bytes per second: the dynamic value when one is set, else the
/// static one; -1 (or 0) means no limit.
pub fn follower_throttle(
    dynamic: &BTreeMap<String, String>,
    static_rate: Option<u64>,
) -> Option<u64> {
    match dynamic.get("follower.replication.throttled.rate") {
        Some(value) => value
            .parse::<i64>()
            .ok()
            .and_then(|rate| u64::try_from(rate).ok())
            .filter(|rate| *rate > 0),
        None => static_rate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: &str = "follower.replication.throttled.rate";

    fn set(key: &str, value: &str) -> (String, Option<String>) {
        (key.to_string(), Some(value.to_string()))
    }

    #[test]
    fn the_throttle_is_set_seen_by_watchers_and_deleted_again() {
        let settings = DynamicSettings::default();
        let mut watcher = settings.clone().subscribe();
        assert_eq!(follower_throttle(&watcher.borrow(), Some(7)), Some(7));
        let values = changed(None, &[set(RATE, "1000")], false).unwrap();
        settings.follow(Some(&values));
        assert!(watcher.has_changed().unwrap());
        assert_eq!(
            follower_throttle(&watcher.borrow_and_update(), Some(7)),
            Some(1000)
        );
        assert_eq!(settings.get(RATE).as_deref(), Some("1000"));
        let values = changed(Some(&values), &[(RATE.to_string(), None)], false).unwrap();
        settings.follow(Some(&values));
        assert_eq!(settings.get(RATE), None);
        assert_eq!(
            follower_throttle(&watcher.borrow_and_update(), Some(7)),
            Some(7)
        );
        assert_eq!(follower_throttle(&watcher.borrow(), None), None);
        settings.follow(Some(&changed(None, &[set(RATE, "-1")], false).unwrap()));
        assert_eq!(follower_throttle(&watcher.borrow(), Some(7)), None);
        // The image's values replace everything; the same values again wake no watcher.
        watcher.borrow_and_update();
        settings.follow(Some(&changed(None, &[set(RATE, "-1")], false).unwrap()));
        assert!(!watcher.has_changed().unwrap());
        settings.follow(None);
        assert!(watcher.has_changed().unwrap());
        assert_eq!(settings.get(RATE), None);
    }

    #[test]
    fn read_only_unknown_and_invalid_settings_are_refused_naming_the_key() {
        let settings = DynamicSettings::default();
        let refused = changed(None, &[set("num.partitions", "3")], false).unwrap_err();
        assert_eq!(refused.key, "num.partitions");
        assert!(refused.read_only);
        assert!(refused.message.contains("read-only"), "{}", refused.message);
        let refused = changed(None, &[set("message.max.bytes", "2000000")], false).unwrap_err();
        assert!(refused.read_only);
        assert!(
            refused.message.contains("only at start"),
            "{}",
            refused.message
        );
        let kerberos = changed(
            None,
            &[set("sasl.kerberos.min.time.before.relogin", "58000")],
            false,
        )
        .expect("a dynamic Kafka setting with no effect here is accepted");
        assert_eq!(kerberos["sasl.kerberos.min.time.before.relogin"], "58000");
        let refused = changed(None, &[set("no.such.setting", "1")], false).unwrap_err();
        assert!(refused.message.contains("unknown"), "{}", refused.message);
        assert!(!refused.read_only);
        let refused = changed(None, &[set(RATE, "fast")], false).unwrap_err();
        assert_eq!(refused.key, RATE);
        let refused = changed(None, &[set(RATE, "-5")], false).unwrap_err();
        assert_eq!(refused.key, RATE);
        assert_eq!(settings.get(RATE), None, "a refused change applies nothing");
    }

    #[test]
    fn alter_configs_replaces_every_dynamic_value() {
        let current = changed(None, &[set(RATE, "500")], false).unwrap();
        assert_eq!(changed(Some(&current), &[], true).unwrap(), BTreeMap::new());
        assert_eq!(
            changed(Some(&current), &[], false)
                .unwrap()
                .get(RATE)
                .unwrap(),
            "500"
        );
    }

    #[test]
    fn a_brokers_own_value_wins_over_the_cluster_default() {
        let defaults = changed(None, &[set(RATE, "500")], false).unwrap();
        let own = changed(None, &[set(RATE, "900")], false).unwrap();
        assert_eq!(effective(Some(&defaults), None).get(RATE).unwrap(), "500");
        assert_eq!(
            effective(Some(&defaults), Some(&own)).get(RATE).unwrap(),
            "900"
        );
        assert_eq!(effective(None, Some(&own)).get(RATE).unwrap(), "900");
        assert!(effective(None, None).is_empty());
    }
}
