//! Authorization with Kafka's ACL model: bindings (a principal is allowed or denied an
//! operation from a host on the resources a pattern matches), the filters that select them for
//! DescribeAcls and DeleteAcls, and the authorizer that decides each request against the
//! bindings held in the cluster metadata.
//!
//! The rules are Kafka's `StandardAuthorizer`'s: super users may do anything; a DENY that
//! matches wins over any ALLOW; an ALLOW of READ, WRITE, DELETE or ALTER also allows DESCRIBE,
//! and ALTER_CONFIGS allows DESCRIBE_CONFIGS; a resource no binding matches at all is denied
//! unless `allow.everyone.if.no.acl.found=true`.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::Principal;
use crate::config::ConfigError;

/// The name of the one cluster resource, as Kafka spells it.
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// A literal resource name that matches every resource of its type.
pub const WILDCARD_RESOURCE: &str = "*";
/// The principal that matches every principal.
pub const WILDCARD_PRINCIPAL: &str = "User:*";
/// The host that matches every host.
pub const WILDCARD_HOST: &str = "*";

/// The `authorizer.class.name` values that turn authorization on. Both name Kafka's ACL
/// authorizers (the KRaft one and the older ZooKeeper one); Oxbow runs its own implementation
/// of the same rules, with the bindings in its cluster metadata.
pub const AUTHORIZER_CLASSES: &[&str] = &[
    "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "kafka.security.authorizer.AclAuthorizer",
];

/// Kafka's code for "any" in every ACL filter field.
const ANY: i8 = 1;

/// The kinds of resource an ACL protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ResourceType {
    Topic,
    Group,
    Cluster,
    TransactionalId,
}

impl ResourceType {
    const ALL: [ResourceType; 4] = [
        ResourceType::Topic,
        ResourceType::Group,
        ResourceType::Cluster,
        ResourceType::TransactionalId,
    ];

    pub fn code(self) -> i8 {
        match self {
            ResourceType::Topic => 2,
            ResourceType::Group => 3,
            ResourceType::Cluster => 4,
            ResourceType::TransactionalId => 5,
        }
    }

    pub fn from_code(code: i8) -> Option<ResourceType> {
        Self::ALL.into_iter().find(|t| t.code() == code)
    }

    /// The operations that apply to this kind of resource, as Kafka lists them; KIP-430
    /// answers say which of these a principal may perform.
    pub fn operations(self) -> &'static [Operation] {
        match self {
            ResourceType::Topic => &[
                Operation::Read,
                Operation::Write,
                Operation::Create,
                Operation::Describe,
                Operation::Delete,
                Operation::Alter,
                Operation::DescribeConfigs,
                Operation::AlterConfigs,
            ],
            ResourceType::Group => &[Operation::Read, Operation::Describe, Operation::Delete],
            ResourceType::Cluster => &[
                Operation::Create,
                Operation::ClusterAction,
                Operation::DescribeConfigs,
                Operation::AlterConfigs,
                Operation::IdempotentWrite,
                Operation::Alter,
                Operation::Describe,
            ],
            ResourceType::TransactionalId => &[Operation::Describe, Operation::Write],
        }
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResourceType::Topic => "TOPIC",
            ResourceType::Group => "GROUP",
            ResourceType::Cluster => "CLUSTER",
            ResourceType::TransactionalId => "TRANSACTIONAL_ID",
        })
    }
}

/// How a binding's resource name matches resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PatternType {
    /// The resource with exactly this name, or every resource when the name is `*`.
    Literal,
    /// Every resource whose name starts with this name.
    Prefixed,
}

impl PatternType {
    pub fn code(self) -> i8 {
        match self {
            PatternType::Literal => 3,
            PatternType::Prefixed => 4,
        }
    }
}

/// What a principal does to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Operation {
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    ClusterAction,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
    CreateTokens,
    DescribeTokens,
}

impl Operation {
    const ALL: [Operation; 13] = [
        Operation::All,
        Operation::Read,
        Operation::Write,
        Operation::Create,
        Operation::Delete,
        Operation::Alter,
        Operation::Describe,
        Operation::ClusterAction,
        Operation::DescribeConfigs,
        Operation::AlterConfigs,
        Operation::IdempotentWrite,
        Operation::CreateTokens,
        Operation::DescribeTokens,
    ];

    pub fn code(self) -> i8 {
        match self {
            Operation::All => 2,
            Operation::Read => 3,
            Operation::Write => 4,
            Operation::Create => 5,
            Operation::Delete => 6,
            Operation::Alter => 7,
            Operation::Describe => 8,
            Operation::ClusterAction => 9,
            Operation::DescribeConfigs => 10,
            Operation::AlterConfigs => 11,
            Operation::IdempotentWrite => 12,
            Operation::CreateTokens => 13,
            Operation::DescribeTokens => 14,
        }
    }

    pub fn from_code(code: i8) -> Option<Operation> {
        Self::ALL.into_iter().find(|o| o.code() == code)
    }

    /// Whether an ALLOW binding for `self` allows `requested`.
    fn allows(self, requested: Operation) -> bool {
        self == Operation::All
            || self == requested
            || (requested == Operation::Describe
                && matches!(
                    self,
                    Operation::Read | Operation::Write | Operation::Delete | Operation::Alter
                ))
            || (requested == Operation::DescribeConfigs && self == Operation::AlterConfigs)
    }

    /// Whether a DENY binding for `self` denies `requested`: implications do not widen a deny.
    fn denies(self, requested: Operation) -> bool {
        self == Operation::All || self == requested
    }
}

/// Whether a binding allows or denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    Deny,
    Allow,
}

impl Permission {
    pub fn code(self) -> i8 {
        match self {
            Permission::Deny => 2,
            Permission::Allow => 3,
        }
    }

    pub fn from_code(code: i8) -> Option<Permission> {
        match code {
            2 => Some(Permission::Deny),
            3 => Some(Permission::Allow),
            _ => None,
        }
    }
}

/// One ACL: `principal` is allowed or denied `operation` from `host` on the resources of
/// `resource_type` that `pattern_type` and `resource_name` match. The field order is the
/// sort order, so the bindings of one resource name sit together in a `BTreeSet`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub pattern_type: PatternType,
    pub resource_name: String,
    /// `Type:name`, e.g. `User:alice`, or `User:*` for everyone.
    pub principal: String,
    /// An IP address in its canonical text form, or `*` for every host.
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

/// The fields of an ACL as Kafka's protocol carries them (CreateAcls, and the filters of
/// DescribeAcls and DeleteAcls, where strings may be null and codes may be ANY).
#[derive(Debug, Clone, Copy)]
pub struct WireAcl<'a> {
    pub resource_type: i8,
    pub resource_name: Option<&'a str>,
    pub pattern_type: i8,
    pub principal: Option<&'a str>,
    pub host: Option<&'a str>,
    pub operation: i8,
    pub permission: i8,
}

fn resource_type(code: i8) -> Result<ResourceType, String> {
    ResourceType::from_code(code).ok_or_else(|| {
        format!(
            "resource type {code} is not one of TOPIC (2), GROUP (3), CLUSTER (4), \
             TRANSACTIONAL_ID (5)"
        )
    })
}

fn operation(code: i8) -> Result<Operation, String> {
    Operation::from_code(code).ok_or_else(|| {
        format!("operation {code} is not an ACL operation (2 ALL to 14 DESCRIBE_TOKENS)")
    })
}

fn permission(code: i8) -> Result<Permission, String> {
    Permission::from_code(code)
        .ok_or_else(|| format!("permission type {code} is not DENY (2) or ALLOW (3)"))
}

/// Checks `Type:name` with both parts present.
fn check_principal(principal: &str) -> Result<(), String> {
    match principal.split_once(':') {
        Some((kind, name)) if !kind.is_empty() && !name.is_empty() => Ok(()),
        _ => Err(format!(
            "principal `{principal}` is not of the form Type:name (e.g. User:alice)"
        )),
    }
}

/// `*`, or an IP address written canonically, so bindings compare equal however the address
/// was spelt.
fn canonical_host(host: &str) -> Result<String, String> {
    if host == WILDCARD_HOST {
        return Ok(host.to_string());
    }
    host.parse::<IpAddr>()
        .map(|ip| ip.to_canonical().to_string())
        .map_err(|_| format!("host `{host}` is not `*` or an IP address"))
}

impl AclBinding {
    /// Validates an ACL to create, as CreateAcls sends it.
    pub fn from_wire(wire: &WireAcl<'_>) -> Result<AclBinding, String> {
        let resource_type = resource_type(wire.resource_type)?;
        let pattern_type = match wire.pattern_type {
            3 => PatternType::Literal,
            4 => PatternType::Prefixed,
            other => {
                return Err(format!(
                    "pattern type {other} cannot be stored: use LITERAL (3) or PREFIXED (4)"
                ))
            }
        };
        let resource_name = wire.resource_name.unwrap_or_default();
        if resource_name.is_empty() {
            return Err("the resource name is empty".to_string());
        }
        if resource_type == ResourceType::Cluster
            && (pattern_type != PatternType::Literal || resource_name != CLUSTER_NAME)
        {
            return Err(format!(
                "the only CLUSTER resource is the LITERAL `{CLUSTER_NAME}`"
            ));
        }
        let principal = wire.principal.unwrap_or_default();
        check_principal(principal)?;
        let host = canonical_host(wire.host.unwrap_or_default())?;
        let operation = match wire.operation {
            ANY => Err("operation ANY matches ACLs; it cannot be granted".to_string()),
            code => operation(code),
        }?;
        let permission = match wire.permission {
            ANY => Err("permission type ANY matches ACLs; it cannot be granted".to_string()),
            code => permission(code),
        }?;
        Ok(AclBinding {
            resource_type,
            pattern_type,
            resource_name: resource_name.to_string(),
            principal: principal.to_string(),
            host,
            operation,
            permission,
        })
    }

    /// Whether this binding speaks about `principal` connecting from `host` (canonical text).
    fn applies_to(&self, principal: &Principal, host: &str) -> bool {
        let principal_matches = self.principal == WILDCARD_PRINCIPAL
            || self.principal.split_once(':').is_some_and(|(kind, name)| {
                kind == principal.principal_type && name == principal.name
            });
        principal_matches && (self.host == WILDCARD_HOST || self.host == host)
    }

    /// The smallest binding that sorts at `(resource_type, pattern_type, resource_name)`.
    fn lowest(resource_type: ResourceType, pattern_type: PatternType, name: String) -> AclBinding {
        AclBinding {
            resource_type,
            pattern_type,
            resource_name: name,
            principal: String::new(),
            host: String::new(),
            operation: Operation::All,
            permission: Permission::Deny,
        }
    }
}

impl fmt::Display for AclBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} {} {:?} from {} on {} {:?} `{}`",
            self.permission,
            self.principal,
            self.operation,
            self.host,
            self.resource_type,
            self.pattern_type,
            self.resource_name
        )
    }
}

/// Which pattern types a filter selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternFilter {
    /// Any pattern type; a name must then equal the binding's name.
    Any,
    /// The bindings that would apply to the resource with the filter's name: its literal
    /// binding, the literal wildcard, and every prefix of it.
    Match,
    Is(PatternType),
}

/// Selects bindings for DescribeAcls and DeleteAcls. `None` fields match anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclFilter {
    pub resource_type: Option<ResourceType>,
    pub resource_name: Option<String>,
    pub pattern: PatternFilter,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Option<Operation>,
    pub permission: Option<Permission>,
}

impl AclFilter {
    /// Validates a filter as DescribeAcls and DeleteAcls send it.
    pub fn from_wire(wire: &WireAcl<'_>) -> Result<AclFilter, String> {
        let any_or = |code: i8| (code != ANY).then_some(code);
        let pattern = match wire.pattern_type {
            ANY => PatternFilter::Any,
            2 => PatternFilter::Match,
            3 => PatternFilter::Is(PatternType::Literal),
            4 => PatternFilter::Is(PatternType::Prefixed),
            other => {
                return Err(format!(
                "pattern type filter {other} is not ANY (1), MATCH (2), LITERAL (3) or PREFIXED (4)"
            ))
            }
        };
        Ok(AclFilter {
            resource_type: any_or(wire.resource_type).map(resource_type).transpose()?,
            resource_name: wire.resource_name.map(str::to_string),
            pattern,
            principal: wire.principal.map(str::to_string),
            host: wire
                .host
                .map(|h| canonical_host(h).unwrap_or_else(|_| h.to_string())),
            operation: any_or(wire.operation).map(operation).transpose()?,
            permission: any_or(wire.permission).map(permission).transpose()?,
        })
    }

    /// Whether `acl` is one this filter selects.
    pub fn matches(&self, acl: &AclBinding) -> bool {
        self.resource_type.is_none_or(|t| t == acl.resource_type)
            && self.matches_pattern(acl)
            && self.principal.as_ref().is_none_or(|p| *p == acl.principal)
            && self.host.as_ref().is_none_or(|h| *h == acl.host)
            && self.operation.is_none_or(|o| o == acl.operation)
            && self.permission.is_none_or(|p| p == acl.permission)
    }

    fn matches_pattern(&self, acl: &AclBinding) -> bool {
        if let PatternFilter::Is(kind) = self.pattern {
            if kind != acl.pattern_type {
                return false;
            }
        }
        let Some(name) = &self.resource_name else {
            return true;
        };
        match (self.pattern, acl.pattern_type) {
            (PatternFilter::Match, PatternType::Literal) => {
                *name == acl.resource_name || acl.resource_name == WILDCARD_RESOURCE
            }
            (PatternFilter::Match, PatternType::Prefixed) => {
                name.starts_with(acl.resource_name.as_str())
            }
            _ => *name == acl.resource_name,
        }
    }
}

/// The bindings whose pattern matches the resource `name` of `resource_type`: its literal
/// bindings, the literal wildcard's, and the prefixed ones that `name` starts with.
fn bindings_for<'a>(
    acls: &'a BTreeSet<AclBinding>,
    resource_type: ResourceType,
    name: &str,
) -> impl Iterator<Item = &'a AclBinding> + 'a {
    let literal = move |n: &str| {
        // Every binding of exactly this name sorts at or after `lowest(n)` and before
        // `lowest(n + "\0")`.
        acls.range((
            Bound::Included(AclBinding::lowest(
                resource_type,
                PatternType::Literal,
                n.to_string(),
            )),
            Bound::Excluded(AclBinding::lowest(
                resource_type,
                PatternType::Literal,
                format!("{n}\0"),
            )),
        ))
    };
    let wildcard = (name != WILDCARD_RESOURCE).then(|| literal(WILDCARD_RESOURCE));
    let name = name.to_string();
    let prefixed = acls
        .range(AclBinding::lowest(resource_type, PatternType::Prefixed, String::new())..)
        .take_while(move |acl| {
            acl.resource_type == resource_type && acl.pattern_type == PatternType::Prefixed
        })
        .filter({
            let name = name.clone();
            move |acl| name.starts_with(acl.resource_name.as_str())
        });
    literal(&name)
        .chain(wildcard.into_iter().flatten())
        .chain(prefixed)
}

/// The authorizer's settings: whether it is on, who the super users are, and what a resource
/// without any ACL gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Authorizer {
    enabled: bool,
    /// Principals written `Type:name`.
    super_users: HashSet<String>,
    allow_if_no_acl: bool,
}

impl Authorizer {
    /// Reads `authorizer.class.name`, `super.users` and `allow.everyone.if.no.acl.found`
    /// through `get` (the effective value of a setting).
    pub fn from_settings(get: &dyn Fn(&str) -> String) -> Result<Authorizer, ConfigError> {
        let class = get("authorizer.class.name");
        let class = class.trim();
        if !class.is_empty() && !AUTHORIZER_CLASSES.contains(&class) {
            return Err(ConfigError::Invalid {
                key: "authorizer.class.name".to_string(),
                value: class.to_string(),
                expected: format!(
                    "empty (no authorization) or one of {}",
                    AUTHORIZER_CLASSES.join(", ")
                ),
            });
        }
        let listed = get("super.users");
        let mut super_users = HashSet::new();
        for entry in listed.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            check_principal(entry).map_err(|_| ConfigError::Invalid {
                key: "super.users".to_string(),
                value: listed.clone(),
                expected:
                    "principals separated by `;`, each Type:name (e.g. User:admin;User:broker)"
                        .to_string(),
            })?;
            super_users.insert(entry.to_string());
        }
        Ok(Authorizer {
            enabled: !class.is_empty(),
            super_users,
            allow_if_no_acl: get("allow.everyone.if.no.acl.found") == "true",
        })
    }

    /// Whether requests are authorized at all (`authorizer.class.name` is set).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn is_super_user(&self, principal: &Principal) -> bool {
        self.super_users.contains(&principal.to_string())
    }

    /// Whether `principal`, connected from `host`, may perform `operation` on the resource
    /// `name` of `resource_type`, given the cluster's bindings.
    pub fn authorize(
        &self,
        acls: &BTreeSet<AclBinding>,
        principal: &Principal,
        host: IpAddr,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        if !self.enabled || self.is_super_user(principal) {
            return true;
        }
        let host = host.to_canonical().to_string();
        let mut found = false;
        let mut allowed = false;
        for acl in bindings_for(acls, resource_type, name) {
            found = true;
            if !acl.applies_to(principal, &host) {
                continue;
            }
            match acl.permission {
                Permission::Deny if acl.operation.denies(operation) => return false,
                Permission::Allow if acl.operation.allows(operation) => allowed = true,
                _ => {}
            }
        }
        if found {
            allowed
        } else {
            self.allow_if_no_acl
        }
    }

    /// Whether `principal` may perform `operation` on at least one resource of `resource_type`
    /// that no DENY covers (Kafka's `authorizeByResourceType`, which InitProducerId uses: an
    /// idempotent producer needs WRITE on some topic). With `allow.everyone.if.no.acl.found`,
    /// a resource type without any binding counts as allowed.
    pub fn authorize_any(
        &self,
        acls: &BTreeSet<AclBinding>,
        principal: &Principal,
        host: IpAddr,
        operation: Operation,
        resource_type: ResourceType,
    ) -> bool {
        if !self.enabled || self.is_super_user(principal) {
            return true;
        }
        let host = host.to_canonical().to_string();
        let of_type: Vec<&AclBinding> = acls
            .iter()
            .filter(|acl| acl.resource_type == resource_type)
            .collect();
        if of_type.is_empty() {
            return self.allow_if_no_acl;
        }
        let relevant: Vec<&AclBinding> = of_type
            .into_iter()
            .filter(|acl| acl.applies_to(principal, &host) && acl.operation.denies(operation))
            .collect();
        let denied = |pattern: PatternType, name: &str| {
            relevant.iter().any(|acl| {
                acl.permission == Permission::Deny
                    && acl.pattern_type == pattern
                    && acl.resource_name == name
            })
        };
        if denied(PatternType::Literal, WILDCARD_RESOURCE) {
            return false;
        }
        // A prefix DENY covers every name that starts with it.
        let denied_by_prefix = |name: &str| {
            relevant.iter().any(|acl| {
                acl.permission == Permission::Deny
                    && acl.pattern_type == PatternType::Prefixed
                    && name.starts_with(acl.resource_name.as_str())
            })
        };
        relevant
            .iter()
            .filter(|acl| acl.permission == Permission::Allow)
            .any(|acl| match acl.pattern_type {
                PatternType::Literal if acl.resource_name == WILDCARD_RESOURCE => true,
                PatternType::Literal => {
                    !denied(PatternType::Literal, &acl.resource_name)
                        && !denied_by_prefix(&acl.resource_name)
                }
                PatternType::Prefixed => !denied_by_prefix(&acl.resource_name),
            })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::controller::image::{MetadataCommand, MetadataImage};

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 7));

    fn authorizer(settings: &[(&str, &str)]) -> Authorizer {
        let settings: BTreeMap<String, String> = settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let get = |key: &str| settings.get(key).cloned().unwrap_or_default();
        Authorizer::from_settings(&get).expect("valid settings")
    }

    fn enabled() -> Authorizer {
        authorizer(&[(
            "authorizer.class.name",
            "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        )])
    }

    fn acl(
        permission: Permission,
        principal: &str,
        operation: Operation,
        resource_type: ResourceType,
        pattern_type: PatternType,
        name: &str,
    ) -> AclBinding {
        AclBinding {
            resource_type,
            pattern_type,
            resource_name: name.to_string(),
            principal: principal.to_string(),
            host: WILDCARD_HOST.to_string(),
            operation,
            permission,
        }
    }

    fn allow(principal: &str, operation: Operation, name: &str) -> AclBinding {
        acl(
            Permission::Allow,
            principal,
            operation,
            ResourceType::Topic,
            PatternType::Literal,
            name,
        )
    }

    fn set(acls: &[AclBinding]) -> BTreeSet<AclBinding> {
        acls.iter().cloned().collect()
    }

    fn alice() -> Principal {
        Principal::user("alice")
    }

    fn may(
        authorizer: &Authorizer,
        acls: &BTreeSet<AclBinding>,
        principal: &Principal,
        operation: Operation,
        topic: &str,
    ) -> bool {
        authorizer.authorize(
            acls,
            principal,
            LOCAL,
            operation,
            ResourceType::Topic,
            topic,
        )
    }

    #[test]
    fn without_an_authorizer_everything_is_allowed() {
        let off = authorizer(&[]);
        assert!(!off.enabled());
        assert!(may(&off, &BTreeSet::new(), &alice(), Operation::Write, "t"));
    }

    #[test]
    fn an_enabled_authorizer_denies_by_default_and_allows_what_an_acl_grants() {
        let auth = enabled();
        let none = BTreeSet::new();
        assert!(!may(&auth, &none, &alice(), Operation::Write, "t"));
        let acls = set(&[allow("User:alice", Operation::Write, "t")]);
        assert!(may(&auth, &acls, &alice(), Operation::Write, "t"));
        assert!(!may(&auth, &acls, &alice(), Operation::Read, "t"));
        assert!(!may(&auth, &acls, &alice(), Operation::Write, "u"));
        assert!(!may(
            &auth,
            &acls,
            &Principal::user("bob"),
            Operation::Write,
            "t"
        ));
    }

    #[test]
    fn allow_everyone_if_no_acl_found_only_applies_to_resources_without_any_acl() {
        let auth = authorizer(&[
            (
                "authorizer.class.name",
                "kafka.security.authorizer.AclAuthorizer",
            ),
            ("allow.everyone.if.no.acl.found", "true"),
        ]);
        let acls = set(&[allow("User:bob", Operation::Read, "t")]);
        assert!(
            may(&auth, &acls, &alice(), Operation::Write, "u"),
            "u has no ACL"
        );
        assert!(
            !may(&auth, &acls, &alice(), Operation::Read, "t"),
            "t has an ACL, for someone else"
        );
    }

    #[test]
    fn super_users_bypass_every_acl_even_a_deny() {
        let auth = authorizer(&[
            (
                "authorizer.class.name",
                "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            ),
            ("super.users", "User:admin; User:broker"),
        ]);
        let acls = set(&[acl(
            Permission::Deny,
            WILDCARD_PRINCIPAL,
            Operation::All,
            ResourceType::Topic,
            PatternType::Literal,
            WILDCARD_RESOURCE,
        )]);
        assert!(may(
            &auth,
            &acls,
            &Principal::user("broker"),
            Operation::Write,
            "t"
        ));
        assert!(auth.authorize(
            &acls,
            &Principal::user("admin"),
            LOCAL,
            Operation::ClusterAction,
            ResourceType::Cluster,
            CLUSTER_NAME
        ));
        assert!(!may(&auth, &acls, &alice(), Operation::Write, "t"));
    }

    #[test]
    fn a_deny_wins_over_an_allow() {
        let auth = enabled();
        let acls = set(&[
            allow("User:alice", Operation::All, "t"),
            acl(
                Permission::Deny,
                "User:alice",
                Operation::Write,
                ResourceType::Topic,
                PatternType::Prefixed,
                "t",
            ),
        ]);
        assert!(!may(&auth, &acls, &alice(), Operation::Write, "t"));
        assert!(may(&auth, &acls, &alice(), Operation::Read, "t"));
        // A DENY of WRITE does not deny the DESCRIBE that WRITE would imply.
        assert!(may(&auth, &acls, &alice(), Operation::Describe, "t"));
    }

    #[test]
    fn read_write_delete_and_alter_imply_describe_and_alter_configs_implies_describe_configs() {
        let auth = enabled();
        for granted in [
            Operation::Read,
            Operation::Write,
            Operation::Delete,
            Operation::Alter,
        ] {
            let acls = set(&[allow("User:alice", granted, "t")]);
            assert!(
                may(&auth, &acls, &alice(), Operation::Describe, "t"),
                "{granted:?}"
            );
            assert!(!may(
                &auth,
                &acls,
                &alice(),
                Operation::DescribeConfigs,
                "t"
            ));
        }
        let acls = set(&[allow("User:alice", Operation::AlterConfigs, "t")]);
        assert!(may(&auth, &acls, &alice(), Operation::DescribeConfigs, "t"));
        assert!(!may(&auth, &acls, &alice(), Operation::Describe, "t"));
        let acls = set(&[allow("User:alice", Operation::Create, "t")]);
        assert!(!may(&auth, &acls, &alice(), Operation::Describe, "t"));
        let acls = set(&[allow("User:alice", Operation::All, "t")]);
        for op in Operation::ALL {
            assert!(may(&auth, &acls, &alice(), op, "t"), "{op:?}");
        }
    }

    #[test]
    fn literal_wildcard_and_prefixed_patterns_match_the_names_they_should() {
        let auth = enabled();
        let prefixed = set(&[acl(
            Permission::Allow,
            "User:alice",
            Operation::Read,
            ResourceType::Topic,
            PatternType::Prefixed,
            "orders.",
        )]);
        assert!(may(
            &auth,
            &prefixed,
            &alice(),
            Operation::Read,
            "orders.eu"
        ));
        assert!(may(&auth, &prefixed, &alice(), Operation::Read, "orders."));
        assert!(!may(&auth, &prefixed, &alice(), Operation::Read, "orders"));
        assert!(!may(
            &auth,
            &prefixed,
            &alice(),
            Operation::Read,
            "payments"
        ));
        let wildcard = set(&[allow("User:alice", Operation::Read, WILDCARD_RESOURCE)]);
        assert!(may(&auth, &wildcard, &alice(), Operation::Read, "anything"));
        let literal = set(&[allow("User:alice", Operation::Read, "orders")]);
        assert!(!may(
            &auth,
            &literal,
            &alice(),
            Operation::Read,
            "orders.eu"
        ));
        assert!(!may(&auth, &literal, &alice(), Operation::Read, "order"));
        // Resource types do not mix: a group named like the topic is another resource.
        let group = set(&[acl(
            Permission::Allow,
            "User:alice",
            Operation::Read,
            ResourceType::Group,
            PatternType::Literal,
            "orders",
        )]);
        assert!(!may(&auth, &group, &alice(), Operation::Read, "orders"));
        assert!(auth.authorize(
            &group,
            &alice(),
            LOCAL,
            Operation::Read,
            ResourceType::Group,
            "orders"
        ));
    }

    #[test]
    fn the_wildcard_principal_matches_everyone_and_hosts_must_match() {
        let auth = enabled();
        let everyone = set(&[allow(WILDCARD_PRINCIPAL, Operation::Read, "t")]);
        assert!(may(
            &auth,
            &everyone,
            &Principal::user("zed"),
            Operation::Read,
            "t"
        ));
        let mut from_local = allow("User:alice", Operation::Read, "t");
        from_local.host = "127.0.0.1".to_string();
        let acls = set(&[from_local]);
        assert!(auth.authorize(
            &acls,
            &alice(),
            LOCAL,
            Operation::Read,
            ResourceType::Topic,
            "t"
        ));
        assert!(!auth.authorize(
            &acls,
            &alice(),
            OTHER,
            Operation::Read,
            ResourceType::Topic,
            "t"
        ));
        // An IPv4 peer seen through an IPv4-mapped IPv6 socket is the same host.
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().expect("valid address");
        assert!(auth.authorize(
            &acls,
            &alice(),
            mapped,
            Operation::Read,
            ResourceType::Topic,
            "t"
        ));
    }

    #[test]
    fn authorize_any_finds_an_undenied_allow_of_the_resource_type() {
        let auth = enabled();
        let any = |acls: &BTreeSet<AclBinding>| {
            auth.authorize_any(acls, &alice(), LOCAL, Operation::Write, ResourceType::Topic)
        };
        assert!(!any(&BTreeSet::new()));
        assert!(any(&set(&[allow("User:alice", Operation::Write, "t")])));
        assert!(!any(&set(&[allow("User:alice", Operation::Read, "t")])));
        let prefix_deny = acl(
            Permission::Deny,
            "User:alice",
            Operation::Write,
            ResourceType::Topic,
            PatternType::Prefixed,
            "t",
        );
        assert!(!any(&set(&[
            allow("User:alice", Operation::Write, "t1"),
            prefix_deny.clone()
        ])));
        assert!(any(&set(&[
            allow("User:alice", Operation::Write, "u1"),
            prefix_deny
        ])));
        let wildcard_deny = acl(
            Permission::Deny,
            WILDCARD_PRINCIPAL,
            Operation::All,
            ResourceType::Topic,
            PatternType::Literal,
            WILDCARD_RESOURCE,
        );
        assert!(!any(&set(&[
            allow("User:alice", Operation::Write, "u1"),
            wildcard_deny
        ])));
    }

    fn wire<'a>(resource_type: i8, name: Option<&'a str>, pattern_type: i8) -> WireAcl<'a> {
        WireAcl {
            resource_type,
            resource_name: name,
            pattern_type,
            principal: Some("User:alice"),
            host: Some("*"),
            operation: Operation::Read.code(),
            permission: Permission::Allow.code(),
        }
    }

    #[test]
    fn bindings_from_the_wire_are_validated() {
        assert!(AclBinding::from_wire(&wire(2, Some("t"), 3)).is_ok());
        assert!(AclBinding::from_wire(&wire(4, Some(CLUSTER_NAME), 3)).is_ok());
        let refused = [
            wire(1, Some("t"), 3),
            wire(9, Some("t"), 3),
            wire(2, Some("t"), 1),
            wire(2, Some("t"), 2),
            wire(2, Some(""), 3),
            wire(2, None, 3),
            wire(4, Some("my-cluster"), 3),
            WireAcl {
                principal: Some("alice"),
                ..wire(2, Some("t"), 3)
            },
            WireAcl {
                host: Some("example.com"),
                ..wire(2, Some("t"), 3)
            },
            WireAcl {
                operation: 1,
                ..wire(2, Some("t"), 3)
            },
            WireAcl {
                permission: 1,
                ..wire(2, Some("t"), 3)
            },
        ];
        for w in refused {
            assert!(AclBinding::from_wire(&w).is_err(), "{w:?}");
        }
        let spelt = AclBinding::from_wire(&WireAcl {
            host: Some("::ffff:10.0.0.7"),
            ..wire(2, Some("t"), 3)
        })
        .expect("valid");
        assert_eq!(spelt.host, "10.0.0.7");
    }

    #[test]
    fn filters_select_by_any_match_literal_and_prefixed() {
        let literal = allow("User:alice", Operation::Read, "orders");
        let wildcard = allow("User:bob", Operation::Write, WILDCARD_RESOURCE);
        let prefixed = acl(
            Permission::Deny,
            "User:alice",
            Operation::Read,
            ResourceType::Topic,
            PatternType::Prefixed,
            "ord",
        );
        let group = acl(
            Permission::Allow,
            "User:alice",
            Operation::Read,
            ResourceType::Group,
            PatternType::Literal,
            "orders",
        );
        let all = [&literal, &wildcard, &prefixed, &group];
        let select = |resource_type: i8, name: Option<&str>, pattern: i8| -> Vec<&AclBinding> {
            let filter = AclFilter::from_wire(&WireAcl {
                resource_type,
                resource_name: name,
                pattern_type: pattern,
                principal: None,
                host: None,
                operation: ANY,
                permission: ANY,
            })
            .expect("valid filter");
            all.iter().copied().filter(|a| filter.matches(a)).collect()
        };
        assert_eq!(select(ANY, None, ANY).len(), 4);
        assert_eq!(select(2, None, ANY).len(), 3);
        assert_eq!(select(2, Some("orders"), ANY), vec![&literal]);
        assert_eq!(select(2, Some("orders"), 3), vec![&literal]);
        assert_eq!(select(2, Some("ord"), 4), vec![&prefixed]);
        assert_eq!(
            select(2, Some("orders"), 2),
            vec![&literal, &wildcard, &prefixed]
        );
        assert_eq!(select(2, Some("payments"), 2), vec![&wildcard]);
        assert!(AclFilter::from_wire(&wire(2, None, 0)).is_err());
        let by_principal = AclFilter::from_wire(&WireAcl {
            principal: Some("User:bob"),
            host: None,
            operation: ANY,
            permission: ANY,
            ..wire(ANY, None, ANY)
        })
        .expect("valid");
        assert!(by_principal.matches(&wildcard));
        assert!(!by_principal.matches(&literal));
        let denials = AclFilter::from_wire(&WireAcl {
            principal: None,
            host: None,
            operation: ANY,
            permission: Permission::Deny.code(),
            ..wire(ANY, None, ANY)
        })
        .expect("valid");
        assert!(denials.matches(&prefixed));
        assert!(!denials.matches(&literal));
    }

    #[test]
    fn bad_authorizer_settings_are_refused_by_name() {
        let settings = |pairs: &[(&'static str, &'static str)]| {
            let pairs = pairs.to_vec();
            move |key: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v.to_string())
                    .unwrap_or_default()
            }
        };
        let err = Authorizer::from_settings(&settings(&[(
            "authorizer.class.name",
            "com.example.Custom",
        )]))
        .expect_err("unknown class");
        assert!(err.to_string().contains("authorizer.class.name"), "{err}");
        let err =
            Authorizer::from_settings(&settings(&[("super.users", "admin")])).expect_err("no type");
        assert!(err.to_string().contains("super.users"), "{err}");
    }

    #[test]
    fn acls_are_kept_in_the_metadata_image_and_survive_its_serialisation() {
        let mut image = MetadataImage::default();
        let a = allow("User:alice", Operation::Read, "t");
        let b = allow("User:bob", Operation::Write, "t");
        image.apply(&MetadataCommand::CreateAcls {
            acls: vec![a.clone(), b.clone(), a.clone()],
        });
        assert_eq!(image.acls, set(&[a.clone(), b.clone()]));
        image.apply(&MetadataCommand::DeleteAcls { acls: vec![a] });
        assert_eq!(image.acls, set(std::slice::from_ref(&b)));
        let json = serde_json::to_string(&image).expect("serialises");
        let back: MetadataImage = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back, image);
        // An image written before ACLs existed still loads, with none.
        let mut old: serde_json::Value = serde_json::from_str(&json).expect("json");
        if let Some(map) = old.as_object_mut() {
            map.remove("acls");
        }
        let old: MetadataImage = serde_json::from_value(old).expect("old image loads");
        assert!(old.acls.is_empty());
    }

    #[test]
    fn lookups_find_exactly_the_bindings_whose_pattern_matches() {
        let acls = set(&[
            allow("User:a", Operation::Read, "or"),
            allow("User:a", Operation::Read, "orders"),
            allow("User:a", Operation::Read, "orders2"),
            allow("User:a", Operation::Read, WILDCARD_RESOURCE),
            acl(
                Permission::Allow,
                "User:a",
                Operation::Read,
                ResourceType::Topic,
                PatternType::Prefixed,
                "ord",
            ),
            acl(
                Permission::Allow,
                "User:a",
                Operation::Read,
                ResourceType::Topic,
                PatternType::Prefixed,
                "orders-",
            ),
            acl(
                Permission::Allow,
                "User:a",
                Operation::Read,
                ResourceType::Group,
                PatternType::Prefixed,
                "o",
            ),
        ]);
        let names: Vec<(PatternType, &str)> = bindings_for(&acls, ResourceType::Topic, "orders")
            .map(|a| (a.pattern_type, a.resource_name.as_str()))
            .collect();
        assert_eq!(
            names,
            vec![
                (PatternType::Literal, "orders"),
                (PatternType::Literal, "*"),
                (PatternType::Prefixed, "ord"),
            ]
        );
    }
}
