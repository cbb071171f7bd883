//! The Secrets of a cluster's certificates: its two CAs (generated and renewed here, or
//! supplied by the user) and the brokers' key stores.
//!
//! - `<cluster>-cluster-ca-cert` (`ca.crt`) and `<cluster>-cluster-ca` (`ca.key`), the same for
//!   `clients-ca`. The certificate's Secret counts its renewals in
//!   [`CA_GENERATION_ANNOTATION`]; annotating it with [`FORCE_RENEW_ANNOTATION`] renews it now.
//! - `<cluster>-broker-certs`: `<pod>.pem` (certificate of the cluster CA for every name of the
//!   broker, then its key), `cluster-ca.crt` and `clients-ca.crt`. Its
//!   [`CERTIFICATES_GENERATION_ANNOTATION`] counts the times a running broker's certificate was
//!   replaced (renewal, a new CA certificate, new names); the pod template carries it, so a
//!   change rolls the brokers one at a time.

use std::collections::BTreeMap;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{ObjectMeta, Patch, PatchParams};
use kube::{Api, Client};

use super::validate::{CaKind, ValidatedCluster};
use super::{apply_one, Error};
use crate::certs::{due, facts, generate_password, pkcs12_truststore, Authority, Purpose};
use crate::crd::CertificateAuthority;

/// Counts the renewals of a CA certificate (on its `-cert` Secret).
pub const CA_GENERATION_ANNOTATION: &str = "oxbow.dev/ca-cert-generation";
/// Put on a CA's `-cert` Secret (any value) to renew the CA certificate at once.
pub const FORCE_RENEW_ANNOTATION: &str = "oxbow.dev/force-renew";
/// On `<cluster>-broker-certs`: the generation of the cluster CA certificate that signed them.
const ISSUED_BY_ANNOTATION: &str = "oxbow.dev/cluster-ca-cert-generation";
/// On `<cluster>-broker-certs`: how many times a running broker's certificate was replaced.
pub const CERTIFICATES_GENERATION_ANNOTATION: &str = "oxbow.dev/certificates-generation";

pub const CA_CERT_KEY: &str = "ca.crt";
/// The CA certificate as a PKCS#12 trust store, and its password (as Strimzi names them).
pub const CA_P12_KEY: &str = "ca.p12";
pub const CA_P12_PASSWORD_KEY: &str = "ca.password";
pub const CA_KEY_KEY: &str = "ca.key";

/// The Secret with a CA's certificate (`ca.crt`).
pub fn ca_cert_secret_name(cluster: &str, ca: CaKind) -> String {
    format!("{cluster}-{}-cert", ca.name())
}

/// The Secret with a CA's private key (`ca.key`).
pub fn ca_key_secret_name(cluster: &str, ca: CaKind) -> String {
    format!("{cluster}-{}", ca.name())
}

/// A CA as its Secrets hold it.
#[derive(Debug)]
pub struct LoadedCa {
    pub authority: Authority,
    pub generation: u64,
}

/// Whether `secret` holds exactly `data`.
pub fn holds<V: AsRef<[u8]>>(secret: &Secret, data: &BTreeMap<String, V>) -> bool {
    secret.data.as_ref().is_some_and(|d| {
        d.len() == data.len()
            && data
                .iter()
                .all(|(k, v)| d.get(k).is_some_and(|have| have.0 == v.as_ref()))
    })
}

/// The non-empty UTF-8 text of key `key` of `secret`.
pub fn text(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
        .filter(|v| !v.is_empty())
}

fn annotation(secret: &Secret, key: &str) -> Option<String> {
    secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .cloned()
}

fn generation(secret: &Secret, key: &str) -> u64 {
    annotation(secret, key)
        .and_then(|g| g.parse().ok())
        .unwrap_or(0)
}

fn read_error(namespace: &str, name: &str) -> impl FnOnce(kube::Error) -> Error {
    let (namespace, name) = (namespace.to_string(), name.to_string());
    move |source| Error::ReadSecret {
        namespace,
        name,
        source,
    }
}

/// Reads CA `ca` of cluster `cluster`: `None` while either Secret is missing or incomplete.
pub async fn load_ca(
    client: &Client,
    namespace: &str,
    cluster: &str,
    ca: CaKind,
) -> Result<Option<LoadedCa>, Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let cert_name = ca_cert_secret_name(cluster, ca);
    let key_name = ca_key_secret_name(cluster, ca);
    let cert = secrets
        .get_opt(&cert_name)
        .await
        .map_err(read_error(namespace, &cert_name))?;
    let key = secrets
        .get_opt(&key_name)
        .await
        .map_err(read_error(namespace, &key_name))?;
    let (Some(cert), Some(key)) = (cert, key) else {
        return Ok(None);
    };
    let (Some(cert_pem), Some(key_pem)) = (text(&cert, CA_CERT_KEY), text(&key, CA_KEY_KEY)) else {
        return Ok(None);
    };
    let authority = Authority::load(&cert_pem, &key_pem).map_err(|source| Error::Certificate {
        namespace: namespace.to_string(),
        name: cert_name.clone(),
        source,
    })?;
    Ok(Some(LoadedCa {
        authority,
        generation: generation(&cert, CA_GENERATION_ANNOTATION),
    }))
}

fn secret<V: Into<Vec<u8>>>(
    valid: &ValidatedCluster,
    name: String,
    annotations: BTreeMap<String, String>,
    data: BTreeMap<String, V>,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(valid.namespace.clone()),
            labels: Some(super::build::labels(valid)),
            annotations: Some(annotations),
            owner_references: Some(vec![valid.owner.clone()]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_string()),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k, ByteString(v.into())))
                .collect(),
        ),
        ..Secret::default()
    }
}

/// Writes a CA's certificate Secret: `ca.crt`, and the same certificate as a PKCS#12 trust
/// store (`ca.p12`) with its password (`ca.password`), for clients that take only PKCS#12.
async fn write_ca_certificate(
    client: &Client,
    valid: &ValidatedCluster,
    cert_name: &str,
    authority: &Authority,
    generation: u64,
) -> Result<(), Error> {
    let cert_error = |source| Error::Certificate {
        namespace: valid.namespace.clone(),
        name: cert_name.to_string(),
        source,
    };
    let password = generate_password().map_err(cert_error)?;
    let store = pkcs12_truststore(authority.cert_pem(), &password).map_err(cert_error)?;
    apply_one(
        client,
        &valid.namespace,
        &secret(
            valid,
            cert_name.to_string(),
            BTreeMap::from([(CA_GENERATION_ANNOTATION.to_string(), generation.to_string())]),
            BTreeMap::from([
                (
                    CA_CERT_KEY.to_string(),
                    authority.cert_pem().as_bytes().to_vec(),
                ),
                (CA_P12_KEY.to_string(), store),
                (CA_P12_PASSWORD_KEY.to_string(), password.into_bytes()),
            ]),
        ),
    )
    .await?;
    Ok(())
}

/// Makes sure CA `kind` exists and is not due: generates it when its Secrets are missing,
/// renews its certificate (same name and key) when due or asked to, when the operator
/// generates it. A user-supplied CA is only read.
pub async fn ensure_ca(
    client: &Client,
    valid: &ValidatedCluster,
    kind: CaKind,
    spec: &CertificateAuthority,
    now: SystemTime,
) -> Result<LoadedCa, Error> {
    let namespace = &valid.namespace;
    let cert_name = ca_cert_secret_name(&valid.name, kind);
    let key_name = ca_key_secret_name(&valid.name, kind);
    let cert_error = |source| Error::Certificate {
        namespace: namespace.clone(),
        name: cert_name.clone(),
        source,
    };
    let loaded = load_ca(client, namespace, &valid.name, kind).await?;
    if !spec.generate_certificate_authority {
        return loaded.ok_or_else(|| Error::MissingCa {
            namespace: namespace.clone(),
            cert: cert_name.clone(),
            key: key_name.clone(),
        });
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let cert_secret = match &loaded {
        Some(_) => secrets
            .get_opt(&cert_name)
            .await
            .map_err(read_error(namespace, &cert_name))?,
        None => None,
    };
    let forced = cert_secret
        .as_ref()
        .is_some_and(|s| annotation(s, FORCE_RENEW_ANNOTATION).is_some());
    // A CA Secret written before the operator wrote trust stores gets one.
    let has_store = cert_secret.as_ref().is_some_and(|s| {
        s.data
            .as_ref()
            .is_some_and(|d| d.contains_key(CA_P12_KEY) && d.contains_key(CA_P12_PASSWORD_KEY))
    });
    let (authority, generation) = match loaded {
        None => (
            Authority::generate(
                &format!("{}-{}", valid.name, kind.name()),
                spec.validity_days,
                now,
            )
            .map_err(cert_error)?,
            0,
        ),
        Some(ca) if forced || due(ca.authority.not_after(), spec.renewal_days, now) => (
            ca.authority
                .renewed(spec.validity_days, now)
                .map_err(cert_error)?,
            ca.generation + 1,
        ),
        Some(ca) if has_store => return Ok(ca),
        Some(ca) => {
            write_ca_certificate(client, valid, &cert_name, &ca.authority, ca.generation).await?;
            return Ok(ca);
        }
    };
    apply_one(
        client,
        namespace,
        &secret(
            valid,
            key_name,
            BTreeMap::new(),
            BTreeMap::from([(CA_KEY_KEY.to_string(), authority.key_pem())]),
        ),
    )
    .await?;
    write_ca_certificate(client, valid, &cert_name, &authority, generation).await?;
    if forced {
        // The annotation belongs to whoever set it: removed by a merge patch, which server-side
        // apply would leave in place.
        let remove = serde_json::json!({
            "metadata": {"annotations": {FORCE_RENEW_ANNOTATION: null}}
        });
        secrets
            .patch(&cert_name, &PatchParams::default(), &Patch::Merge(&remove))
            .await
            .map_err(|source| Error::Apply {
                kind: "Secret",
                namespace: namespace.clone(),
                name: cert_name.clone(),
                source,
            })?;
    }
    tracing::info!(%namespace, secret = %cert_name, generation, "CA certificate written");
    Ok(LoadedCa {
        authority,
        generation,
    })
}

/// Makes sure every broker of `brokers`, and every dedicated controller, has a current
/// certificate of the cluster CA in
/// `<cluster>-broker-certs`, and returns that Secret's generation (see the module's notes).
pub async fn ensure_broker_certificates(
    client: &Client,
    valid: &ValidatedCluster,
    cluster_ca: &LoadedCa,
    clients_ca: &LoadedCa,
    brokers: i32,
    now: SystemTime,
) -> Result<u64, Error> {
    let namespace = &valid.namespace;
    let name = valid.broker_certs_secret_name();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let existing = secrets
        .get_opt(&name)
        .await
        .map_err(read_error(namespace, &name))?;
    let issued_by = existing
        .as_ref()
        .map(|s| generation(s, ISSUED_BY_ANNOTATION));
    let mut roll_generation = existing
        .as_ref()
        .map_or(0, |s| generation(s, CERTIFICATES_GENERATION_ANNOTATION));
    let mut data = BTreeMap::from([
        (
            "cluster-ca.crt".to_string(),
            cluster_ca.authority.cert_pem().to_string(),
        ),
        (
            "clients-ca.crt".to_string(),
            clients_ca.authority.cert_pem().to_string(),
        ),
    ]);
    let mut replaced = false;
    for ordinal in valid.node_ids(brokers) {
        let key = format!("{}.pem", valid.pod_name(ordinal));
        let names = valid.broker_certificate_names(ordinal);
        let current = existing.as_ref().and_then(|s| text(s, &key));
        let keep = current.as_ref().filter(|pem| {
            issued_by == Some(cluster_ca.generation)
                && facts(pem).is_ok_and(|f| {
                    f.names == names && !due(f.not_after, valid.cluster_ca.renewal_days, now)
                })
        });
        match keep {
            Some(pem) => {
                data.insert(key, pem.clone());
            }
            None => {
                let issued = cluster_ca
                    .authority
                    .issue(
                        &format!("{}-broker", valid.name),
                        true,
                        &names,
                        Purpose::Broker,
                        valid.cluster_ca.validity_days,
                        now,
                    )
                    .map_err(|source| Error::Certificate {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        source,
                    })?;
                data.insert(key, issued.keystore_pem());
                replaced |= current.is_some();
            }
        }
    }
    if replaced {
        roll_generation += 1;
    }
    let unchanged = existing.as_ref().is_some_and(|s| {
        generation(s, CERTIFICATES_GENERATION_ANNOTATION) == roll_generation
            && issued_by == Some(cluster_ca.generation)
            && holds(s, &data)
    });
    if !unchanged {
        apply_one(
            client,
            namespace,
            &secret(
                valid,
                name.clone(),
                BTreeMap::from([
                    (
                        ISSUED_BY_ANNOTATION.to_string(),
                        cluster_ca.generation.to_string(),
                    ),
                    (
                        CERTIFICATES_GENERATION_ANNOTATION.to_string(),
                        roll_generation.to_string(),
                    ),
                ]),
                data,
            ),
        )
        .await?;
        tracing::info!(%namespace, secret = %name, generation = roll_generation, replaced, "broker certificates written");
    }
    Ok(roll_generation)
}
