//! The KafkaUser controller: gives the user `<name>` of a cluster the SCRAM credential, ACLs
//! and quotas of its spec, writes the password (generated, or copied from the Secret the spec
//! names) and a `sasl.jaas.config` to a Secret named after the resource, undoes changes made
//! outside the resource at each reconciliation (every five minutes, and at every change of
//! the resource), and removes the credential, the ACLs and the quotas behind a finalizer.
//!
//! A TLS user is `CN=<name>` to the brokers (Kafka's default principal of a client
//! certificate): its Secret holds a certificate of the cluster's clients CA with that subject
//! (`user.crt`, `user.key`) and the cluster CA (`ca.crt`), and is issued again before it
//! expires and when the clients CA certificate is renewed.

pub mod admin;
pub mod plan;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::ByteString;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{finalizer, Event};
use kube::{Api, Resource, ResourceExt};
use oxbow_broker::security::scram::{ScramCredential, ScramMechanism};
use thiserror::Error;

use crate::certs::{self, due, facts, pkcs12_keystore, Purpose};
use crate::cluster::certificates::{holds, load_ca, text};
use crate::cluster::validate::CaKind;
use crate::conditions::{self, Wanted, DEGRADED, READY, RECONCILING};
use crate::context::{Context, FIELD_MANAGER};
use crate::controller::{
    apply_status, backoff_key, finalizer_label, finalizer_reason, retry, run_per_cluster,
};
use crate::crd::{
    CertificateAuthority, KafkaUser, KafkaUserStatus, UserAuthentication, UserAuthenticationType,
};
use crate::metrics::USER;
use crate::topic::admin::{AdminError, KafkaAdmin};
use crate::topic::{state_of_cluster, ClusterState};
use plan::{desired, plan, removal, DesiredUser, Step};

/// Finalizer that holds a KafkaUser until its credential, ACLs and quotas are removed.
pub const FINALIZER: &str = "kafkausers.oxbow.dev/finalizer";
/// How often a user in sync is compared with its cluster again, undoing changes made
/// outside the resource and taking up a changed password Secret.
pub const RESYNC: Duration = Duration::from_secs(300);
/// How often a user waiting for its cluster is looked at again.
pub const WAIT_FOR_CLUSTER: Duration = Duration::from_secs(30);
/// The key of the user's Secret holding the password.
pub const PASSWORD_KEY: &str = "password";
/// The key of the user's Secret holding the JAAS configuration Java clients take.
pub const JAAS_KEY: &str = "sasl.jaas.config";
/// The keys of a TLS user's Secret: its certificate, its key, and the cluster CA.
pub const USER_CERT_KEY: &str = "user.crt";
pub const USER_KEY_KEY: &str = "user.key";
pub const CA_CERT_KEY: &str = "ca.crt";
/// The keys of a TLS user's Secret holding the same key and certificate (the cluster CA's
/// after it) as a PKCS#12 key store, and the store's password (as Strimzi names them).
pub const USER_P12_KEY: &str = "user.p12";
pub const USER_P12_PASSWORD_KEY: &str = "user.password";
/// On a TLS user's Secret: the generation of the clients CA certificate that signed it.
const ISSUED_BY_ANNOTATION: &str = "oxbow.dev/clients-ca-cert-generation";
/// Label on the user's Secret naming its KafkaCluster.
pub const CLUSTER_LABEL: &str = "oxbow.dev/cluster";

/// What the KafkaUser controller keeps between reconciliations.
#[derive(Debug, Default)]
pub struct Users {
    pub admin: KafkaAdmin,
    /// The credential this process last set, per KafkaUser uid: the cluster keeps only a
    /// salted hash it does not describe, so a password change is known by comparing the
    /// password with this. After a restart the operator sets each credential once again.
    set: Mutex<HashMap<String, (ScramMechanism, ScramCredential)>>,
}

impl Users {
    fn is_current(&self, uid: &str, mechanism: ScramMechanism, password: &str) -> bool {
        let set = self.set.lock().unwrap_or_else(|e| e.into_inner());
        set.get(uid).is_some_and(|(m, credential)| {
            *m == mechanism && credential.verify_password(mechanism, password.as_bytes())
        })
    }

    fn record(&self, uid: &str, mechanism: ScramMechanism, credential: ScramCredential) {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uid.to_string(), (mechanism, credential));
    }

    fn forget(&self, uid: &str) {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
    }
}

#[derive(Debug, Error)]
pub enum Error {
    #[error("KafkaUser has no {0}")]
    MissingMetadata(&'static str),
    #[error("{action} for KafkaUser {namespace}/{name}: {source}")]
    Kube {
        action: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("KafkaUser {namespace}/{name}: {source}")]
    Admin {
        namespace: String,
        name: String,
        #[source]
        source: AdminError,
    },
    #[error("certificates for KafkaUser {namespace}/{name}: {source}")]
    Certificates {
        namespace: String,
        name: String,
        #[source]
        source: Box<crate::cluster::Error>,
    },
    #[error(transparent)]
    Finalizer(#[from] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// The error kind, as the `error` label of the failure counter.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::MissingMetadata(_) => "missing_metadata",
            Error::Kube { .. } => "kube",
            Error::Admin { source, .. } => source.metric_label(),
            Error::Certificates { .. } => "certificates",
            Error::Finalizer(inner) => finalizer_label(inner, Error::metric_label),
        }
    }

    /// The condition and event reason of a failed reconciliation.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::MissingMetadata(_) => "InvalidObject",
            Error::Kube { .. } => "KubernetesError",
            Error::Admin { source, .. } if source.unreachable() => "KafkaUnreachable",
            Error::Admin { .. } => "KafkaError",
            Error::Certificates { .. } => "CertificateFailed",
            Error::Finalizer(inner) => finalizer_reason(inner, Error::reason),
        }
    }

    /// What went wrong, for the status and the event: the innermost error of the finalizer.
    fn explain(&self) -> String {
        match self {
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e) => e.explain(),
                kube::runtime::finalizer::Error::CleanupFailed(e) => format!(
                    "the user could not be removed from its cluster and the KafkaUser waits for it (retrying with back-off): {}",
                    e.explain()
                ),
                other => other.to_string(),
            },
            other => other.to_string(),
        }
    }
}

fn kube_error<'a>(
    user: &'a KafkaUser,
    action: &'static str,
) -> impl FnOnce(kube::Error) -> Error + 'a {
    move |source| Error::Kube {
        action,
        namespace: user.namespace().unwrap_or_default(),
        name: user.name_any(),
        source,
    }
}

fn admin_error(user: &KafkaUser) -> impl FnOnce(AdminError) -> Error + '_ {
    move |source| Error::Admin {
        namespace: user.namespace().unwrap_or_default(),
        name: user.name_any(),
        source,
    }
}

/// Reconciles one KafkaUser: its finalizer first, then the user.
pub async fn reconcile(user: Arc<KafkaUser>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile(USER);
    let namespace = user
        .metadata
        .namespace
        .clone()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let users: Api<KafkaUser> = Api::namespaced(ctx.client.clone(), &namespace);
    let action = finalizer(&users, FINALIZER, Arc::clone(&user), |event| async {
        match event {
            Event::Apply(user) => apply(&user, &ctx).await,
            Event::Cleanup(user) => cleanup(&user, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    match action {
        Ok(action) => {
            ctx.backoff.succeeded(&backoff_key(user.as_ref()));
            Ok(action)
        }
        Err(error) => {
            report_failure(&user, &ctx, &error).await;
            Err(error)
        }
    }
}

/// Logs and counts a failed reconciliation, then retries it with a growing delay.
pub fn error_policy(user: Arc<KafkaUser>, error: &Error, ctx: Arc<Context>) -> Action {
    retry(&ctx, user.as_ref(), USER, error.metric_label(), error)
}

/// The status parts a reconciliation decides.
struct Outcome {
    ready: Wanted,
    degraded: Wanted,
    reconciling: Wanted,
    secret: Option<String>,
    message: String,
}

impl Outcome {
    fn ready(message: String, secret: Option<String>) -> Self {
        Self {
            ready: Wanted::new(READY, true, "Ready", message.clone()),
            degraded: Wanted::new(DEGRADED, false, "NoProblem", ""),
            reconciling: Wanted::new(RECONCILING, false, "Ready", ""),
            secret,
            message,
        }
    }

    fn waiting(reason: &str, message: String) -> Self {
        Self {
            ready: Wanted::new(READY, false, reason, message.clone()),
            degraded: Wanted::new(DEGRADED, false, "NoProblem", ""),
            reconciling: Wanted::new(RECONCILING, true, reason, message.clone()),
            secret: None,
            message,
        }
    }

    fn blocked(reason: &str, message: String) -> Self {
        Self {
            ready: Wanted::new(READY, false, reason, message.clone()),
            degraded: Wanted::new(DEGRADED, true, reason, message.clone()),
            reconciling: Wanted::new(RECONCILING, false, reason, ""),
            secret: None,
            message,
        }
    }
}

fn status(user: &KafkaUser, outcome: Outcome) -> KafkaUserStatus {
    let previous = user.status.clone().unwrap_or_default();
    let generation = user.metadata.generation;
    let in_sync = outcome.ready.status;
    KafkaUserStatus {
        observed_generation: generation,
        conditions: conditions::merge(
            &previous.conditions,
            &[outcome.ready, outcome.reconciling, outcome.degraded],
            generation,
            Timestamp::now(),
        ),
        username: Some(kafka_name(user)),
        // A user in sync has the Secret it has now (none without authentication); one that
        // waits or is blocked keeps the one it had.
        secret: if in_sync {
            outcome.secret
        } else {
            outcome.secret.or(previous.secret)
        },
        message: Some(outcome.message),
    }
}

async fn write_status(
    user: &KafkaUser,
    ctx: &Context,
    status: &KafkaUserStatus,
) -> Result<(), Error> {
    apply_status(&ctx.client, user, status)
        .await
        .map_err(kube_error(user, "writing the status"))
}

async fn publish(ctx: &Context, user: &KafkaUser, type_: EventType, reason: &str, note: String) {
    ctx.publish(&user.object_ref(&()), type_, reason, "Reconcile", &note)
        .await;
}

/// Makes a failed reconciliation visible: `Ready` false and `Degraded` true with the error in
/// the status, and a Warning event when the problem is new.
async fn report_failure(user: &KafkaUser, ctx: &Context, error: &Error) {
    let reason = error.reason();
    let message = error.explain();
    let previous = user.status.clone().unwrap_or_default();
    let new_problem = conditions::reason(&previous.conditions, DEGRADED) != Some(reason)
        || !conditions::is_true(&previous.conditions, DEGRADED)
        || previous
            .conditions
            .iter()
            .any(|c| c.type_ == DEGRADED && c.message != message);
    if new_problem {
        publish(ctx, user, EventType::Warning, reason, message.clone()).await;
    }
    ctx.metrics.set_ready(
        USER,
        &user.namespace().unwrap_or_default(),
        &user.name_any(),
        false,
    );
    let mut outcome = Outcome::blocked(reason, message);
    outcome.reconciling = Wanted::new(RECONCILING, true, "Retrying", "retrying with back-off");
    if let Err(status_error) = write_status(user, ctx, &status(user, outcome)).await {
        tracing::warn!(error = %status_error, "cannot report a failed reconciliation in the status");
    }
}

/// Makes the user on its cluster match the spec.
async fn apply(user: &KafkaUser, ctx: &Context) -> Result<Action, Error> {
    if conditions::is_paused(&user.metadata) {
        let previous = user.status.clone().unwrap_or_default();
        let status = KafkaUserStatus {
            conditions: conditions::with_paused(
                &previous.conditions,
                user.metadata.generation,
                Timestamp::now(),
            ),
            ..previous.clone()
        };
        if status != previous {
            write_status(user, ctx, &status).await?;
        }
        return Ok(Action::await_change());
    }
    let namespace = user.namespace().unwrap_or_default();
    let cluster = &user.spec.cluster_ref.name;
    let state = state_of_cluster(ctx, &namespace, cluster)
        .await
        .map_err(kube_error(user, "reading the KafkaCluster"))?;
    let (outcome, action) = match state {
        ClusterState::NotFound => (
            Outcome::waiting(
                "ClusterNotFound",
                format!("KafkaCluster {cluster} does not exist in this namespace"),
            ),
            Action::requeue(WAIT_FOR_CLUSTER),
        ),
        ClusterState::Deleting | ClusterState::NoBootstrap => (
            Outcome::waiting(
                "ClusterNotReady",
                format!("KafkaCluster {cluster} is not serving yet"),
            ),
            Action::requeue(WAIT_FOR_CLUSTER),
        ),
        ClusterState::Bootstrap {
            address,
            clients_ca,
            ..
        } => sync(user, ctx, &address, &clients_ca).await?,
    };
    let previous = user.status.clone().unwrap_or_default();
    if outcome.degraded.status
        && conditions::reason(&previous.conditions, DEGRADED)
            != Some(outcome.degraded.reason.as_str())
    {
        publish(
            ctx,
            user,
            EventType::Warning,
            &outcome.degraded.reason,
            outcome.degraded.message.clone(),
        )
        .await;
    }
    if outcome.ready.status && !conditions::is_true(&previous.conditions, READY) {
        publish(
            ctx,
            user,
            EventType::Normal,
            "Ready",
            outcome.message.clone(),
        )
        .await;
    }
    let ready = outcome.ready.status;
    write_status(user, ctx, &status(user, outcome)).await?;
    ctx.metrics
        .set_ready(USER, &namespace, &user.name_any(), ready);
    Ok(action)
}

/// The user's name on its cluster: `CN=<name>` for a TLS user, whose principal comes from
/// the subject of its certificate, else the resource's name.
fn kafka_name(user: &KafkaUser) -> String {
    if is_tls(user) {
        format!("CN={}", user.name_any())
    } else {
        user.name_any()
    }
}

fn is_tls(user: &KafkaUser) -> bool {
    user.spec
        .authentication
        .as_ref()
        .is_some_and(|a| a.type_ == UserAuthenticationType::Tls)
}

/// The other name the user would have under the other kind of authentication: what it had
/// before its authentication changed between TLS and SCRAM (or none).
fn other_kafka_name(user: &KafkaUser) -> String {
    if is_tls(user) {
        user.name_any()
    } else {
        format!("CN={}", user.name_any())
    }
}

/// Removes everything the cluster has for `name` (credentials, ACLs, quotas), returning the
/// steps taken.
async fn remove_from_cluster(
    user: &KafkaUser,
    ctx: &Context,
    bootstrap: &str,
    name: &str,
) -> Result<Vec<Step>, Error> {
    let have = ctx
        .users
        .admin
        .describe_user(bootstrap, name)
        .await
        .map_err(admin_error(user))?;
    let steps = removal(name, &have);
    for step in &steps {
        ctx.users
            .admin
            .apply_user_step(bootstrap, name, step, None)
            .await
            .map_err(admin_error(user))?;
    }
    Ok(steps)
}

/// Compares the user on `bootstrap` with the spec and closes the gap.
async fn sync(
    user: &KafkaUser,
    ctx: &Context,
    bootstrap: &str,
    clients_ca: &CertificateAuthority,
) -> Result<(Outcome, Action), Error> {
    let name = kafka_name(user);
    let want = match desired(user, &name) {
        Ok(want) => want,
        Err(problem) => {
            return Ok((
                Outcome::blocked("InvalidSpec", problem),
                Action::await_change(),
            ))
        }
    };
    let password = match &user.spec.authentication {
        Some(authentication) if authentication.type_ == UserAuthenticationType::Tls => {
            if let Err(problem) = certificate(user, ctx, clients_ca).await? {
                return Ok((
                    Outcome::blocked("CertificateProblem", problem),
                    Action::requeue(WAIT_FOR_CLUSTER),
                ));
            }
            None
        }
        Some(authentication) => match password(user, ctx, authentication).await? {
            Ok(password) => Some(password),
            Err(problem) => {
                return Ok((
                    Outcome::blocked("SecretProblem", problem),
                    Action::requeue(WAIT_FOR_CLUSTER),
                ))
            }
        },
        None => {
            remove_own_secret(user, ctx).await?;
            None
        }
    };
    let uid = user.metadata.uid.clone().unwrap_or_default();
    let have = ctx
        .users
        .admin
        .describe_user(bootstrap, &name)
        .await
        .map_err(admin_error(user))?;
    let current = match (want.mechanism, &password) {
        (Some(mechanism), Some(password)) => ctx.users.is_current(&uid, mechanism, password),
        _ => true,
    };
    let steps = plan(&want, &have, current);
    for step in &steps {
        let credential = match (step, &password) {
            (Step::UpsertCredential(mechanism), Some(password)) => {
                Some(admin::new_credential(*mechanism, password).map_err(admin_error(user))?)
            }
            _ => None,
        };
        ctx.users
            .admin
            .apply_user_step(bootstrap, &name, step, credential.as_ref())
            .await
            .map_err(admin_error(user))?;
        if let (Step::UpsertCredential(mechanism), Some((credential, _))) = (step, credential) {
            ctx.users.record(&uid, *mechanism, credential);
        }
    }
    if !steps.is_empty() {
        publish(
            ctx,
            user,
            EventType::Normal,
            "Updated",
            describe_steps(&steps),
        )
        .await;
    }
    let other = other_kafka_name(user);
    let retired = remove_from_cluster(user, ctx, bootstrap, &other).await?;
    if !retired.is_empty() {
        publish(
            ctx,
            user,
            EventType::Normal,
            "Updated",
            format!(
                "removed `{other}`, the user's name before its authentication changed: {}",
                describe_steps(&retired)
            ),
        )
        .await;
    }
    let secret = user.spec.authentication.as_ref().map(|_| user.name_any());
    Ok((
        Outcome::ready(summary(&want), secret),
        Action::requeue(RESYNC),
    ))
}

/// The user as it now is, in words.
fn summary(want: &DesiredUser) -> String {
    let credential = want
        .mechanism
        .map_or("no credential".to_string(), |m| format!("a {m} credential"));
    format!(
        "user `{}` has {credential}, {} ACLs and {} quotas",
        want.name,
        want.acls.len(),
        want.quotas.len()
    )
}

/// What a reconciliation changed, in words.
fn describe_steps(steps: &[Step]) -> String {
    let parts: Vec<String> = steps
        .iter()
        .map(|step| match step {
            Step::UpsertCredential(m) => format!("set the {m} credential"),
            Step::DeleteCredentials(ms) => format!(
                "removed the {} credential",
                ms.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
            Step::CreateAcls(acls) => format!("created {} ACLs", acls.len()),
            Step::DeleteAcls(acls) => format!("removed {} ACLs", acls.len()),
            Step::AlterQuotas(changes) => format!(
                "changed quotas ({})",
                changes
                    .iter()
                    .map(|(key, value)| match value {
                        Some(value) => format!("{key}={value}"),
                        None => format!("{key} removed"),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
        .collect();
    parts.join("; ")
}

fn owned_by(secret: &Secret, user: &KafkaUser) -> bool {
    secret
        .owner_references()
        .iter()
        .any(|o| Some(&o.uid) == user.metadata.uid.as_ref())
}

/// A generated password, as an error of the user's admin work when the operating system's
/// random source fails.
fn generate_password() -> Result<String, AdminError> {
    certs::generate_password().map_err(|e| AdminError::Protocol {
        operation: "generating a password",
        detail: e.to_string(),
    })
}

/// The user's Secret, if there is one and it is the user's own; what is wrong otherwise (in
/// words, for the status).
async fn own_secret(
    user: &KafkaUser,
    ctx: &Context,
) -> Result<Result<Option<Secret>, String>, Error> {
    let name = user.name_any();
    let secrets: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &user.namespace().unwrap_or_default());
    let own = secrets
        .get_opt(&name)
        .await
        .map_err(kube_error(user, "reading the user's Secret"))?;
    Ok(match own {
        Some(own) if !owned_by(&own, user) => Err(format!(
            "Secret `{name}` exists and does not belong to this KafkaUser: the operator does not overwrite it (delete it, or rename the KafkaUser)"
        )),
        own => Ok(own),
    })
}

/// The user's password, written with its JAAS configuration to the user's Secret, or what
/// stops that (in words, for the status).
async fn password(
    user: &KafkaUser,
    ctx: &Context,
    authentication: &UserAuthentication,
) -> Result<Result<String, String>, Error> {
    let namespace = user.namespace().unwrap_or_default();
    let name = user.name_any();
    let own = match own_secret(user, ctx).await? {
        Ok(own) => own,
        Err(problem) => return Ok(Err(problem)),
    };
    let password = match &authentication.password {
        Some(source) => {
            let reference = &source.value_from.secret_key_ref;
            if reference.name == name {
                return Ok(Err(format!(
                    "spec.authentication.password names Secret `{name}`, which the operator writes the user's credentials to: keep the password in another Secret"
                )));
            }
            let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
            let Some(secret) = secrets
                .get_opt(&reference.name)
                .await
                .map_err(kube_error(user, "reading the password Secret"))?
            else {
                return Ok(Err(format!(
                    "Secret `{}` named by spec.authentication.password does not exist",
                    reference.name
                )));
            };
            match text(&secret, &reference.key) {
                Some(password) => password,
                None => {
                    return Ok(Err(format!(
                        "Secret `{}` has no key `{}` holding a non-empty UTF-8 password",
                        reference.name, reference.key
                    )))
                }
            }
        }
        None => match own.as_ref().and_then(|s| text(s, PASSWORD_KEY)) {
            Some(password) => password,
            None => generate_password().map_err(admin_error(user))?,
        },
    };
    if password.contains('"') || password.contains('\\') {
        return Ok(Err(
            "the password holds `\"` or `\\`, which sasl.jaas.config cannot carry unescaped"
                .to_string(),
        ));
    }
    let jaas = format!(
        "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"{name}\" password=\"{password}\";"
    );
    write_secret(
        user,
        ctx,
        BTreeMap::new(),
        BTreeMap::from([
            (PASSWORD_KEY.to_string(), password.clone().into_bytes()),
            (JAAS_KEY.to_string(), jaas.into_bytes()),
        ]),
    )
    .await?;
    Ok(Ok(password))
}

/// Writes the user's Secret (named after it, owned by it, labelled with its cluster).
async fn write_secret(
    user: &KafkaUser,
    ctx: &Context,
    annotations: BTreeMap<String, String>,
    data: BTreeMap<String, Vec<u8>>,
) -> Result<(), Error> {
    let namespace = user.namespace().unwrap_or_default();
    let name = user.name_any();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    FIELD_MANAGER.to_string(),
                ),
                (
                    CLUSTER_LABEL.to_string(),
                    user.spec.cluster_ref.name.clone(),
                ),
            ])),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: user.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_string()),
        data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
        ..Secret::default()
    };
    let mut patch = serde_json::to_value(&secret).map_err(|e| Error::Kube {
        action: "writing the user's Secret",
        namespace: namespace.clone(),
        name: name.clone(),
        source: kube::Error::SerdeError(e),
    })?;
    patch["apiVersion"] = "v1".into();
    patch["kind"] = "Secret".into();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    secrets
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(kube_error(user, "writing the user's Secret"))?;
    Ok(())
}

/// Keeps a TLS user's Secret current: a certificate of the clients CA for `CN=<name>` with its
/// key, issued again when it comes within the CA's renewal days of expiry or the clients CA
/// certificate was renewed, and the cluster CA's certificate. Returns what stops that (in
/// words, for the status).
async fn certificate(
    user: &KafkaUser,
    ctx: &Context,
    spec: &CertificateAuthority,
) -> Result<Result<(), String>, Error> {
    let namespace = user.namespace().unwrap_or_default();
    let name = user.name_any();
    let cluster = &user.spec.cluster_ref.name;
    let own = match own_secret(user, ctx).await? {
        Ok(own) => own,
        Err(problem) => return Ok(Err(problem)),
    };
    let certificates_error = |source| Error::Certificates {
        namespace: namespace.clone(),
        name: name.clone(),
        source: Box::new(source),
    };
    let clients = load_ca(&ctx.client, &namespace, cluster, CaKind::Clients)
        .await
        .map_err(certificates_error)?;
    let cluster_ca = load_ca(&ctx.client, &namespace, cluster, CaKind::Cluster)
        .await
        .map_err(certificates_error)?;
    let (Some(clients), Some(cluster_ca)) = (clients, cluster_ca) else {
        return Ok(Err(format!(
            "KafkaCluster {cluster} has no clients CA and cluster CA in its Secrets yet"
        )));
    };
    let now = std::time::SystemTime::now();
    let issued_by = own
        .as_ref()
        .and_then(|s| s.metadata.annotations.as_ref())
        .and_then(|a| a.get(ISSUED_BY_ANNOTATION))
        .and_then(|g| g.parse::<u64>().ok());
    let current = own.as_ref().and_then(|s| {
        let cert = text(s, USER_CERT_KEY)?;
        let key = text(s, USER_KEY_KEY)?;
        let fresh = issued_by == Some(clients.generation)
            && facts(&cert).is_ok_and(|f| !due(f.not_after, spec.renewal_days, now));
        fresh.then_some((cert, key))
    });
    let cluster_ca_pem = cluster_ca.authority.cert_pem().to_string();
    // The PKCS#12 store is made again only when what it holds changes: its salts are random.
    let kept_store = own.as_ref().and_then(|s| {
        let (cert, key) = current.as_ref()?;
        let store = s.data.as_ref()?.get(USER_P12_KEY)?.0.clone();
        let password = text(s, USER_P12_PASSWORD_KEY)?;
        let same_ca = text(s, CA_CERT_KEY).as_deref() == Some(cluster_ca_pem.as_str());
        let same = text(s, USER_CERT_KEY).as_ref() == Some(cert)
            && text(s, USER_KEY_KEY).as_ref() == Some(key);
        (same && same_ca).then_some((store, password))
    });
    let (cert, key) = match current {
        Some(kept) => kept,
        None => {
            let issued = clients
                .authority
                .issue(&name, false, &[], Purpose::Client, spec.validity_days, now)
                .map_err(|source| {
                    certificates_error(crate::cluster::Error::Certificate {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        source,
                    })
                })?;
            publish(
                ctx,
                user,
                EventType::Normal,
                "CertificateIssued",
                format!(
                    "issued a certificate of the clients CA for CN={name} into Secret `{name}`"
                ),
            )
            .await;
            (issued.cert_pem, issued.key_pem)
        }
    };
    let (store, store_password) = match kept_store {
        Some(kept) => kept,
        None => {
            let password = generate_password().map_err(admin_error(user))?;
            let store = pkcs12_keystore(&name, &cert, &key, &cluster_ca_pem, &password).map_err(
                |source| {
                    certificates_error(crate::cluster::Error::Certificate {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        source,
                    })
                },
            )?;
            (store, password)
        }
    };
    let data = BTreeMap::from([
        (USER_CERT_KEY.to_string(), cert.into_bytes()),
        (USER_KEY_KEY.to_string(), key.into_bytes()),
        (USER_P12_KEY.to_string(), store),
        (
            USER_P12_PASSWORD_KEY.to_string(),
            store_password.into_bytes(),
        ),
        (CA_CERT_KEY.to_string(), cluster_ca_pem.into_bytes()),
    ]);
    let unchanged =
        issued_by == Some(clients.generation) && own.as_ref().is_some_and(|s| holds(s, &data));
    if !unchanged {
        write_secret(
            user,
            ctx,
            BTreeMap::from([(
                ISSUED_BY_ANNOTATION.to_string(),
                clients.generation.to_string(),
            )]),
            data,
        )
        .await?;
    }
    Ok(Ok(()))
}

/// Deletes the user's Secret when the user no longer authenticates (only one this KafkaUser
/// owns).
async fn remove_own_secret(user: &KafkaUser, ctx: &Context) -> Result<(), Error> {
    let secrets: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &user.namespace().unwrap_or_default());
    let name = user.name_any();
    let own = secrets
        .get_opt(&name)
        .await
        .map_err(kube_error(user, "reading the user's Secret"))?;
    if own.is_some_and(|s| owned_by(&s, user)) {
        secrets
            .delete(&name, &DeleteParams::default())
            .await
            .map_err(kube_error(user, "deleting the user's Secret"))?;
    }
    Ok(())
}

/// Removes the user's credential, ACLs and quotas when the KafkaUser goes; its Secret goes
/// with it (owner reference).
async fn cleanup(user: &KafkaUser, ctx: &Context) -> Result<Action, Error> {
    let namespace = user.namespace().unwrap_or_default();
    let name = user.name_any();
    ctx.metrics.forget(USER, &namespace, &name);
    let state = state_of_cluster(ctx, &namespace, &user.spec.cluster_ref.name)
        .await
        .map_err(kube_error(user, "reading the KafkaCluster"))?;
    if let ClusterState::Bootstrap { address, .. } = state {
        for kafka_name in [kafka_name(user), other_kafka_name(user)] {
            let steps = remove_from_cluster(user, ctx, &address, &kafka_name).await?;
            if !steps.is_empty() {
                publish(
                    ctx,
                    user,
                    EventType::Normal,
                    "Deleted",
                    format!("user `{kafka_name}` removed: {}", describe_steps(&steps)),
                )
                .await;
            }
        }
    }
    ctx.users
        .forget(&user.metadata.uid.clone().unwrap_or_default());
    Ok(Action::await_change())
}

/// The KafkaCluster a KafkaUser names.
fn cluster_of(user: &KafkaUser) -> &str {
    &user.spec.cluster_ref.name
}

/// Runs the KafkaUser controller over `namespace` (all namespaces when `None`) until
/// `shutdown` completes. A KafkaCluster change (becoming ready, say) wakes its users.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    run_per_cluster(
        ctx,
        namespace,
        shutdown,
        cluster_of,
        reconcile,
        error_policy,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_is_current_only_for_the_password_and_mechanism_it_was_set_from() {
        let users = Users::default();
        assert!(!users.is_current("uid", ScramMechanism::Sha512, "secret"));
        let (credential, _) =
            admin::new_credential(ScramMechanism::Sha512, "secret").expect("a credential");
        users.record("uid", ScramMechanism::Sha512, credential);
        assert!(users.is_current("uid", ScramMechanism::Sha512, "secret"));
        assert!(!users.is_current("uid", ScramMechanism::Sha512, "changed"));
        assert!(!users.is_current("uid", ScramMechanism::Sha256, "secret"));
        assert!(!users.is_current("other", ScramMechanism::Sha512, "secret"));
        users.forget("uid");
        assert!(!users.is_current("uid", ScramMechanism::Sha512, "secret"));
    }
}
