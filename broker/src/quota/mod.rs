//! Client quotas (KIP-13, KIP-55, KIP-124, KIP-546): the entities they apply to, the keys
//! and values Kafka accepts, which quota governs a client (Kafka's order of precedence), and
//! the per-broker enforcement that measures clients and throttles them (`manager`).

pub mod manager;
pub mod rate;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The kinds of entity a quota is set for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EntityType {
    User,
    ClientId,
    Ip,
}

impl EntityType {
    /// Kafka's name of the type on the wire (`ClientQuotaEntity.USER` and so on).
    pub fn wire_name(self) -> &'static str {
        match self {
            EntityType::User => "user",
            EntityType::ClientId => "client-id",
            EntityType::Ip => "ip",
        }
    }

    pub fn from_wire(name: &str) -> Option<EntityType> {
        match name {
            "user" => Some(EntityType::User),
            "client-id" => Some(EntityType::ClientId),
            "ip" => Some(EntityType::Ip),
            _ => None,
        }
    }
}

/// What a quota is set for: a user, a client id, a user and client id together, or an IP;
/// each name `None` for the default of its type (Kafka's `<default>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QuotaEntity(pub BTreeMap<EntityType, Option<String>>);

impl QuotaEntity {
    pub fn of(parts: &[(EntityType, Option<&str>)]) -> QuotaEntity {
        QuotaEntity(
            parts
                .iter()
                .map(|(t, n)| (*t, n.map(str::to_string)))
                .collect(),
        )
    }

    /// The name given for `entity_type`: `None` when the entity has no such part,
    /// `Some(None)` for its default.
    pub fn get(&self, entity_type: EntityType) -> Option<Option<&str>> {
        self.0.get(&entity_type).map(Option::as_deref)
    }

    /// The keys that may be set on this entity, or why none may; `resolvable` says whether an
    /// IP entity's name that is not an address names a host (Kafka accepts those too).
    pub fn allowed_keys(
        &self,
        resolvable: impl Fn(&str) -> bool,
    ) -> Result<&'static [QuotaKey], String> {
        let ip = self.0.contains_key(&EntityType::Ip);
        if self.0.is_empty() {
            return Err("Invalid empty client quota entity".into());
        }
        if ip && self.0.len() > 1 {
            return Err(
                "Invalid quota entity combination, IP entity shouldnot be combined with User or ClientId"
                    .into(),
            );
        }
        if let Some(Some(address)) = self.get(EntityType::Ip) {
            if address.parse::<std::net::IpAddr>().is_err() && !resolvable(address) {
                return Err(format!("{address} is not a valid IP or resolvable host."));
            }
        }
        Ok(if ip { IP_KEYS } else { USER_AND_CLIENT_KEYS })
    }
}

impl fmt::Display for QuotaEntity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(t, n)| format!("{}={}", t.wire_name(), n.as_deref().unwrap_or("<default>")))
            .collect();
        write!(f, "{}", parts.join(","))
    }
}

/// The keys of client quotas, by Kafka name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QuotaKey {
    ProducerByteRate,
    ConsumerByteRate,
    RequestPercentage,
    ControllerMutationRate,
    ConnectionCreationRate,
}

/// What a key's value must be: Kafka checks integral keys against their Java type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueType {
    Long,
    Int,
    Double,
}

const USER_AND_CLIENT_KEYS: &[QuotaKey] = &[
    QuotaKey::ProducerByteRate,
    QuotaKey::ConsumerByteRate,
    QuotaKey::RequestPercentage,
    QuotaKey::ControllerMutationRate,
];
const IP_KEYS: &[QuotaKey] = &[QuotaKey::ConnectionCreationRate];

impl QuotaKey {
    pub fn name(self) -> &'static str {
        match self {
            QuotaKey::ProducerByteRate => "producer_byte_rate",
            QuotaKey::ConsumerByteRate => "consumer_byte_rate",
            QuotaKey::RequestPercentage => "request_percentage",
            QuotaKey::ControllerMutationRate => "controller_mutation_rate",
            QuotaKey::ConnectionCreationRate => "connection_creation_rate",
        }
    }

    pub fn from_name(name: &str) -> Option<QuotaKey> {
        USER_AND_CLIENT_KEYS
            .iter()
            .chain(IP_KEYS)
            .copied()
            .find(|k| k.name() == name)
    }

    fn value_type(self) -> ValueType {
        match self {
            QuotaKey::ProducerByteRate | QuotaKey::ConsumerByteRate => ValueType::Long,
            QuotaKey::ConnectionCreationRate => ValueType::Int,
            QuotaKey::RequestPercentage | QuotaKey::ControllerMutationRate => ValueType::Double,
        }
    }
}

/// Checks that `key` may be set to `value` on an entity allowing `allowed`, with Kafka's
/// messages.
pub fn validate(allowed: &[QuotaKey], key: &str, value: f64) -> Result<QuotaKey, String> {
    let quota_key = QuotaKey::from_name(key)
        .filter(|k| allowed.contains(k))
        .ok_or_else(|| format!("Invalid configuration key {key}"))?;
    if value.is_nan() || value <= 0.0 {
        return Err(format!("Quota {key} must be greater than 0"));
    }
    let limit = match quota_key.value_type() {
        ValueType::Double => return Ok(quota_key),
        ValueType::Int => (f64::from(i32::MAX), "an INT"),
        ValueType::Long => (i64::MAX as f64, "a LONG"),
    };
    if value > limit.0 {
        return Err(format!(
            "Proposed value for {key} is too large for {}.",
            limit.1
        ));
    }
    if (value % 1.0).abs() > 1e-6 {
        return Err(format!("{key} cannot be a fractional value."));
    }
    Ok(quota_key)
}

/// A quota's value. Kafka keeps them as doubles; equality is bitwise so the image stays `Eq`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(transparent)]
pub struct QuotaValue(pub f64);

impl PartialEq for QuotaValue {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for QuotaValue {}

/// One key of one entity set (`Some`) or removed (`None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaChange {
    pub entity: QuotaEntity,
    pub key: String,
    pub value: Option<QuotaValue>,
}

/// Every client quota of the cluster, by entity and key. Kept as a list of entries in the
/// image's JSON, whose object keys can only be strings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<StoredQuotas>", into = "Vec<StoredQuotas>")]
pub struct ClientQuotas(pub BTreeMap<QuotaEntity, BTreeMap<String, QuotaValue>>);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredQuotas {
    entity: QuotaEntity,
    values: BTreeMap<String, QuotaValue>,
}

impl From<Vec<StoredQuotas>> for ClientQuotas {
    fn from(entries: Vec<StoredQuotas>) -> Self {
        ClientQuotas(entries.into_iter().map(|e| (e.entity, e.values)).collect())
    }
}

impl From<ClientQuotas> for Vec<StoredQuotas> {
    fn from(quotas: ClientQuotas) -> Self {
        quotas
            .0
            .into_iter()
            .map(|(entity, values)| StoredQuotas { entity, values })
            .collect()
    }
}

impl ClientQuotas {
    /// Applies changes in order; an entity left with no key goes.
    pub fn apply(&mut self, changes: &[QuotaChange]) {
        for change in changes {
            match change.value {
                Some(value) => {
                    self.0
                        .entry(change.entity.clone())
                        .or_default()
                        .insert(change.key.clone(), value);
                }
                None => {
                    if let Some(values) = self.0.get_mut(&change.entity) {
                        values.remove(&change.key);
                        if values.is_empty() {
                            self.0.remove(&change.entity);
                        }
                    }
                }
            }
        }
    }

    /// The `connection_creation_rate` of connections from `ip`: its own quota, else the
    /// default IP quota (KIP-612). Each address is measured on its own either way.
    pub fn ip_connection_rate(&self, ip: &str) -> Option<f64> {
        if self.0.is_empty() {
            return None;
        }
        [Some(ip), None].into_iter().find_map(|name| {
            self.value(
                &QuotaEntity::of(&[(EntityType::Ip, name)]),
                QuotaKey::ConnectionCreationRate,
            )
        })
    }

    fn value(&self, entity: &QuotaEntity, key: QuotaKey) -> Option<f64> {
        self.0
            .get(entity)
            .and_then(|values| values.get(key.name()))
            .map(|v| v.0)
    }

    /// The quota of `key` that governs user `user` with client id `client_id`, and the group
    /// of clients that share it, as Kafka's default quota callback resolves it: the most
    /// specific of user+client-id, user+default client-id, user, default user+client-id,
    /// default user+default client-id, default user, client-id, default client-id.
    pub fn resolve(&self, key: QuotaKey, user: &str, client_id: &str) -> Option<Governing> {
        if self.0.is_empty() {
            return None;
        }
        let user_client = |u: Option<&str>, c: Option<&str>| {
            QuotaEntity::of(&[(EntityType::User, u), (EntityType::ClientId, c)])
        };
        let user_only = |u: Option<&str>| QuotaEntity::of(&[(EntityType::User, u)]);
        let client_only = |c: Option<&str>| QuotaEntity::of(&[(EntityType::ClientId, c)]);
        let both = Sharing::UserAndClient;
        let order = [
            (user_client(Some(user), Some(client_id)), both),
            (user_client(Some(user), None), both),
            (user_only(Some(user)), Sharing::User),
            (user_client(None, Some(client_id)), both),
            (user_client(None, None), both),
            (user_only(None), Sharing::User),
            (client_only(Some(client_id)), Sharing::Client),
            (client_only(None), Sharing::Client),
        ];
        order.into_iter().find_map(|(entity, sharing)| {
            self.value(&entity, key).map(|bound| Governing {
                bound,
                group: match sharing {
                    Sharing::UserAndClient => (user.to_string(), client_id.to_string()),
                    Sharing::User => (user.to_string(), String::new()),
                    Sharing::Client => (String::new(), client_id.to_string()),
                },
            })
        })
    }
}

#[derive(Clone, Copy)]
enum Sharing {
    UserAndClient,
    User,
    Client,
}

/// The quota that governs a client: its bound, and the (user, client id) of the clients that
/// are measured together (an empty part is shared by every value of it, as Kafka's metric tags).
#[derive(Debug, Clone, PartialEq)]
pub struct Governing {
    pub bound: f64,
    pub group: (String, String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(quotas: &mut ClientQuotas, entity: QuotaEntity, value: f64) {
        quotas.apply(&[QuotaChange {
            entity,
            key: "producer_byte_rate".into(),
            value: Some(QuotaValue(value)),
        }]);
    }

    fn resolved(quotas: &ClientQuotas, user: &str, client: &str) -> Option<(f64, String, String)> {
        quotas
            .resolve(QuotaKey::ProducerByteRate, user, client)
            .map(|g| (g.bound, g.group.0, g.group.1))
    }

    #[test]
    fn the_most_specific_quota_wins_in_kafkas_order() {
        use EntityType::{ClientId, User};
        let mut quotas = ClientQuotas::default();
        let levels = [
            QuotaEntity::of(&[(ClientId, None)]),
            QuotaEntity::of(&[(ClientId, Some("c"))]),
            QuotaEntity::of(&[(User, None)]),
            QuotaEntity::of(&[(User, None), (ClientId, None)]),
            QuotaEntity::of(&[(User, None), (ClientId, Some("c"))]),
            QuotaEntity::of(&[(User, Some("u"))]),
            QuotaEntity::of(&[(User, Some("u")), (ClientId, None)]),
            QuotaEntity::of(&[(User, Some("u")), (ClientId, Some("c"))]),
        ];
        let groups = [
            ("", "c"),
            ("", "c"),
            ("u", ""),
            ("u", "c"),
            ("u", "c"),
            ("u", ""),
            ("u", "c"),
            ("u", "c"),
        ];
        assert_eq!(resolved(&quotas, "u", "c"), None);
        for (i, (entity, group)) in levels.into_iter().zip(groups).enumerate() {
            set(&mut quotas, entity, (i + 1) as f64);
            assert_eq!(
                resolved(&quotas, "u", "c"),
                Some(((i + 1) as f64, group.0.into(), group.1.into())),
                "level {i}"
            );
        }
        // Another user falls back to the default user with a client id.
        assert_eq!(
            resolved(&quotas, "v", "c"),
            Some((5.0, "v".into(), "c".into()))
        );
    }

    #[test]
    fn values_are_checked_as_kafka_checks_them() {
        let user = QuotaEntity::of(&[(EntityType::User, Some("u"))])
            .allowed_keys(|_| false)
            .expect("a user may have quotas");
        assert!(validate(user, "producer_byte_rate", 1024.0).is_ok());
        assert_eq!(
            validate(user, "producer_byte_rate", 1.5),
            Err("producer_byte_rate cannot be a fractional value.".into())
        );
        assert_eq!(
            validate(user, "request_percentage", 0.0),
            Err("Quota request_percentage must be greater than 0".into())
        );
        assert!(validate(user, "request_percentage", 12.5).is_ok());
        assert_eq!(
            validate(user, "connection_creation_rate", 10.0),
            Err("Invalid configuration key connection_creation_rate".into())
        );
        let ip = QuotaEntity::of(&[(EntityType::Ip, Some("10.0.0.1"))])
            .allowed_keys(|_| false)
            .expect("an IP may have quotas");
        assert!(validate(ip, "connection_creation_rate", 10.0).is_ok());
        assert!(QuotaEntity::of(&[(EntityType::Ip, Some("not an ip"))])
            .allowed_keys(|_| false)
            .is_err());
        assert!(
            QuotaEntity::of(&[(EntityType::Ip, None), (EntityType::User, Some("u"))])
                .allowed_keys(|_| true)
                .is_err()
        );
    }

    #[test]
    fn quotas_survive_a_round_trip_through_json() {
        let mut quotas = ClientQuotas::default();
        set(
            &mut quotas,
            QuotaEntity::of(&[(EntityType::User, None)]),
            100.0,
        );
        let json = serde_json::to_string(&quotas).expect("serializes");
        let back: ClientQuotas = serde_json::from_str(&json).expect("reads back");
        assert_eq!(back, quotas);
        quotas.apply(&[QuotaChange {
            entity: QuotaEntity::of(&[(EntityType::User, None)]),
            key: "producer_byte_rate".into(),
            value: None,
        }]);
        assert!(quotas.0.is_empty(), "an entity without keys goes");
    }
}
