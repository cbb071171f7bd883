//! What a KafkaUser asks of its cluster, and the steps from what the cluster has to that
//! (pure: no I/O).

use std::collections::{BTreeMap, BTreeSet};

use oxbow_broker::quota::QuotaKey;
use oxbow_broker::security::authorizer::{
    AclBinding, Operation, PatternType, Permission, ResourceType, WireAcl, CLUSTER_NAME,
};
use oxbow_broker::security::scram::ScramMechanism;

use crate::crd::{
    AclOperation, AclPatternType, AclResourceType, AclRule, AclRuleType, KafkaUser,
    UserAuthenticationType,
};

/// The user as its spec wants it on the cluster (the password aside).
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredUser {
    pub name: String,
    /// The one SCRAM mechanism the user has a credential for, if any.
    pub mechanism: Option<ScramMechanism>,
    /// Every ACL of `User:<name>`.
    pub acls: BTreeSet<AclBinding>,
    /// The user's quotas by Kafka name.
    pub quotas: BTreeMap<String, f64>,
}

/// The user as the cluster has it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ObservedUser {
    /// The SCRAM mechanisms the user has a credential for, with their iterations.
    pub credentials: BTreeMap<ScramMechanism, i32>,
    pub acls: BTreeSet<AclBinding>,
    pub quotas: BTreeMap<String, f64>,
}

/// One change to the user on the cluster.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Set the user's credential for the mechanism from the password.
    UpsertCredential(ScramMechanism),
    DeleteCredentials(Vec<ScramMechanism>),
    CreateAcls(Vec<AclBinding>),
    DeleteAcls(Vec<AclBinding>),
    /// Set (`Some`) or remove (`None`) quotas.
    AlterQuotas(Vec<(String, Option<f64>)>),
}

/// The principal of the user `name`.
pub fn principal(name: &str) -> String {
    format!("User:{name}")
}

/// The SCRAM mechanism of an authentication type (none for TLS users, who authenticate with
/// their certificate).
fn mechanism(kind: UserAuthenticationType) -> Option<ScramMechanism> {
    match kind {
        UserAuthenticationType::ScramSha512 => Some(ScramMechanism::Sha512),
        UserAuthenticationType::ScramSha256 => Some(ScramMechanism::Sha256),
        UserAuthenticationType::Tls => None,
    }
}

fn resource_type(kind: AclResourceType) -> ResourceType {
    match kind {
        AclResourceType::Topic => ResourceType::Topic,
        AclResourceType::Group => ResourceType::Group,
        AclResourceType::Cluster => ResourceType::Cluster,
        AclResourceType::TransactionalId => ResourceType::TransactionalId,
    }
}

fn operation(op: AclOperation) -> Operation {
    match op {
        AclOperation::All => Operation::All,
        AclOperation::Read => Operation::Read,
        AclOperation::Write => Operation::Write,
        AclOperation::Create => Operation::Create,
        AclOperation::Delete => Operation::Delete,
        AclOperation::Alter => Operation::Alter,
        AclOperation::Describe => Operation::Describe,
        AclOperation::ClusterAction => Operation::ClusterAction,
        AclOperation::DescribeConfigs => Operation::DescribeConfigs,
        AclOperation::AlterConfigs => Operation::AlterConfigs,
        AclOperation::IdempotentWrite => Operation::IdempotentWrite,
    }
}

/// The ACL bindings of one rule, checked as the brokers' CreateAcls checks them.
fn bindings(user: &str, index: usize, rule: &AclRule) -> Result<Vec<AclBinding>, String> {
    let kind = resource_type(rule.resource.type_);
    let name = match (kind, rule.resource.name.as_deref()) {
        (ResourceType::Cluster, _) => CLUSTER_NAME,
        (_, Some(name)) => name,
        (_, None) => {
            return Err(format!(
                "spec.authorization.acls[{index}]: a {kind} resource needs a name ('*' for all)"
            ))
        }
    };
    let pattern = match rule.resource.pattern_type.unwrap_or_default() {
        AclPatternType::Literal => PatternType::Literal,
        AclPatternType::Prefix => PatternType::Prefixed,
    };
    let permission = match rule.type_ {
        AclRuleType::Allow => Permission::Allow,
        AclRuleType::Deny => Permission::Deny,
    };
    let principal = principal(user);
    rule.operations
        .iter()
        .map(|op| {
            AclBinding::from_wire(&WireAcl {
                resource_type: kind.code(),
                resource_name: Some(name),
                pattern_type: pattern.code(),
                principal: Some(&principal),
                host: Some(&rule.host),
                operation: operation(*op).code(),
                permission: permission.code(),
            })
            .map_err(|e| format!("spec.authorization.acls[{index}]: {e}"))
        })
        .collect()
}

/// What `user`'s spec asks for, or what is wrong with it (naming the field).
pub fn desired(user: &KafkaUser, name: &str) -> Result<DesiredUser, String> {
    let mut acls = BTreeSet::new();
    for (index, rule) in user
        .spec
        .authorization
        .iter()
        .flat_map(|a| a.acls.iter())
        .enumerate()
    {
        acls.extend(bindings(name, index, rule)?);
    }
    let mut quotas = BTreeMap::new();
    if let Some(q) = &user.spec.quotas {
        for (key, value) in [
            (QuotaKey::ProducerByteRate, q.producer_byte_rate),
            (QuotaKey::ConsumerByteRate, q.consumer_byte_rate),
            (QuotaKey::RequestPercentage, q.request_percentage),
        ] {
            if let Some(value) = value {
                if value < 1 {
                    return Err(format!("spec.quotas: {} must be positive", key.name()));
                }
                // Quota values travel as doubles; these are far inside f64's exact integers.
                quotas.insert(key.name().to_string(), value as f64);
            }
        }
        if let Some(rate) = q.controller_mutation_rate {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(format!(
                    "spec.quotas.controllerMutationRate: {rate} must be a positive number"
                ));
            }
            quotas.insert(QuotaKey::ControllerMutationRate.name().to_string(), rate);
        }
    }
    Ok(DesiredUser {
        name: name.to_string(),
        mechanism: user
            .spec
            .authentication
            .as_ref()
            .and_then(|a| mechanism(a.type_)),
        acls,
        quotas,
    })
}

/// The steps from `have` to `want`. `credential_current` says whether the credential the user
/// has for `want.mechanism` was set from the password the spec now gives; the cluster cannot
/// tell (it keeps only a salted hash, and describes only mechanisms and iterations).
pub fn plan(want: &DesiredUser, have: &ObservedUser, credential_current: bool) -> Vec<Step> {
    let mut steps = Vec::new();
    if let Some(mechanism) = want.mechanism {
        if !have.credentials.contains_key(&mechanism) || !credential_current {
            steps.push(Step::UpsertCredential(mechanism));
        }
    }
    let stale: Vec<ScramMechanism> = have
        .credentials
        .keys()
        .copied()
        .filter(|m| Some(*m) != want.mechanism)
        .collect();
    if !stale.is_empty() {
        steps.push(Step::DeleteCredentials(stale));
    }
    // New ACLs before the removal of old ones: a rule being rewritten never leaves a gap.
    let missing: Vec<AclBinding> = want.acls.difference(&have.acls).cloned().collect();
    if !missing.is_empty() {
        steps.push(Step::CreateAcls(missing));
    }
    let extra: Vec<AclBinding> = have.acls.difference(&want.acls).cloned().collect();
    if !extra.is_empty() {
        steps.push(Step::DeleteAcls(extra));
    }
    let mut quotas: Vec<(String, Option<f64>)> = want
        .quotas
        .iter()
        .filter(|(key, value)| have.quotas.get(*key) != Some(value))
        .map(|(key, value)| (key.clone(), Some(*value)))
        .collect();
    quotas.extend(
        have.quotas
            .keys()
            .filter(|key| !want.quotas.contains_key(*key))
            .map(|key| (key.clone(), None)),
    );
    if !quotas.is_empty() {
        steps.push(Step::AlterQuotas(quotas));
    }
    steps
}

/// The steps that remove everything the cluster has of the user.
pub fn removal(name: &str, have: &ObservedUser) -> Vec<Step> {
    let nothing = DesiredUser {
        name: name.to_string(),
        mechanism: None,
        acls: BTreeSet::new(),
        quotas: BTreeMap::new(),
    };
    plan(&nothing, have, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(spec: &str) -> KafkaUser {
        serde_yaml::from_str(&format!(
            "apiVersion: oxbow.dev/v1alpha1\nkind: KafkaUser\nmetadata:\n  name: alice\n  namespace: streaming\nspec:\n  clusterRef:\n    name: main\n{spec}"
        ))
        .expect("a KafkaUser")
    }

    const FULL: &str = "  authentication:
    type: scram-sha-512
  authorization:
    acls:
      - resource: {type: topic, name: orders, patternType: prefix}
        operations: [Write, Describe]
      - resource: {type: group, name: billing}
        operations: [Read]
      - resource: {type: topic, name: secrets}
        operations: [All]
        type: deny
        host: 10.0.0.7
      - resource: {type: cluster}
        operations: [IdempotentWrite]
  quotas:
    producerByteRate: 1048576
    requestPercentage: 50
    controllerMutationRate: 0.5
";

    #[test]
    fn a_spec_becomes_a_mechanism_acls_and_quotas_of_its_principal() {
        let want = desired(&user(FULL), "alice").expect("valid");
        assert_eq!(want.mechanism, Some(ScramMechanism::Sha512));
        let acls: Vec<String> = want
            .acls
            .iter()
            .map(|b| {
                format!(
                    "{} {:?} {} {} {} {:?} {:?}",
                    b.resource_type,
                    b.pattern_type,
                    b.resource_name,
                    b.principal,
                    b.host,
                    b.operation,
                    b.permission
                )
            })
            .collect();
        assert_eq!(
            acls,
            [
                "TOPIC Literal secrets User:alice 10.0.0.7 All Deny",
                "TOPIC Prefixed orders User:alice * Write Allow",
                "TOPIC Prefixed orders User:alice * Describe Allow",
                "GROUP Literal billing User:alice * Read Allow",
                "CLUSTER Literal kafka-cluster User:alice * IdempotentWrite Allow",
            ]
        );
        assert_eq!(
            want.quotas,
            BTreeMap::from([
                ("controller_mutation_rate".to_string(), 0.5),
                ("producer_byte_rate".to_string(), 1_048_576.0),
                ("request_percentage".to_string(), 50.0),
            ])
        );
        let refused = desired(&user("  quotas:\n    controllerMutationRate: 0\n"), "alice");
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.contains("controllerMutationRate: 0 must be a positive number")),
            "{refused:?}"
        );
    }

    #[test]
    fn a_bad_host_or_a_nameless_topic_is_refused_naming_the_rule() {
        let bad_host = user(
            "  authorization:
    acls:
      - resource: {type: topic, name: orders}
        operations: [Read]
        host: example.com
",
        );
        let error = desired(&bad_host, "alice").expect_err("a host name is not an address");
        assert!(error.starts_with("spec.authorization.acls[0]:"), "{error}");
        assert!(error.contains("example.com"), "{error}");
        let nameless = user(
            "  authorization:
    acls:
      - resource: {type: group}
        operations: [Read]
",
        );
        let error = desired(&nameless, "alice").expect_err("a group needs a name");
        assert!(error.contains("needs a name"), "{error}");
    }

    #[test]
    fn a_user_in_sync_needs_nothing_and_drift_is_undone() {
        let want = desired(&user(FULL), "alice").expect("valid");
        let have = ObservedUser {
            credentials: BTreeMap::from([(ScramMechanism::Sha512, 8192)]),
            acls: want.acls.clone(),
            quotas: want.quotas.clone(),
        };
        assert_eq!(plan(&want, &have, true), []);
        assert_eq!(
            plan(&want, &have, false),
            [Step::UpsertCredential(ScramMechanism::Sha512)],
            "a changed password is set again"
        );

        let mut drifted = have.clone();
        drifted.credentials = BTreeMap::from([(ScramMechanism::Sha256, 4096)]);
        let lost = want.acls.iter().next().cloned().expect("an ACL");
        drifted.acls.remove(&lost);
        let mut foreign = lost.clone();
        foreign.resource_name = "added-by-hand".to_string();
        drifted.acls.insert(foreign.clone());
        drifted.quotas.insert("producer_byte_rate".to_string(), 5.0);
        drifted.quotas.insert("consumer_byte_rate".to_string(), 7.0);
        assert_eq!(
            plan(&want, &drifted, true),
            [
                Step::UpsertCredential(ScramMechanism::Sha512),
                Step::DeleteCredentials(vec![ScramMechanism::Sha256]),
                Step::CreateAcls(vec![lost]),
                Step::DeleteAcls(vec![foreign]),
                Step::AlterQuotas(vec![
                    ("producer_byte_rate".to_string(), Some(1_048_576.0)),
                    ("consumer_byte_rate".to_string(), None),
                ]),
            ]
        );
    }

    #[test]
    fn removal_takes_away_credentials_acls_and_quotas() {
        let want = desired(&user(FULL), "alice").expect("valid");
        let have = ObservedUser {
            credentials: BTreeMap::from([(ScramMechanism::Sha512, 8192)]),
            acls: want.acls.clone(),
            quotas: want.quotas.clone(),
        };
        assert_eq!(
            removal("alice", &have),
            [
                Step::DeleteCredentials(vec![ScramMechanism::Sha512]),
                Step::DeleteAcls(want.acls.iter().cloned().collect()),
                Step::AlterQuotas(vec![
                    ("controller_mutation_rate".to_string(), None),
                    ("producer_byte_rate".to_string(), None),
                    ("request_percentage".to_string(), None),
                ]),
            ]
        );
        assert_eq!(removal("alice", &ObservedUser::default()), []);
    }
}
