//! TLS for SSL and SASL_SSL listeners: the rustls server configuration built from Kafka's
//! `ssl.*` settings (PEM key store and trust store, client authentication), and the principal
//! a client certificate stands for.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use super::mapping::PrincipalMapping;
use super::x509::{subject_dn, X509Error};
use super::Principal;

/// `ssl.client.auth`: whether clients must present a certificate signed by the trust store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Requested,
    Required,
}

impl ClientAuth {
    pub fn parse(text: &str) -> Option<ClientAuth> {
        match text {
            "none" => Some(ClientAuth::None),
            "requested" => Some(ClientAuth::Requested),
            "required" => Some(ClientAuth::Required),
            _ => None,
        }
    }
}

/// The `ssl.*` settings of the broker's TLS listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// `ssl.keystore.location`: one PEM file with the certificate chain and the private key.
    pub keystore: PathBuf,
    /// `ssl.truststore.location`: PEM CA certificates that sign client certificates.
    pub truststore: Option<PathBuf>,
    pub client_auth: ClientAuth,
    /// `ssl.principal.mapping.rules`: how a client certificate's subject names its principal.
    pub principal_mapping: PrincipalMapping,
}

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificates from {path}: {reason}")]
    Certificates { path: PathBuf, reason: String },
    #[error(
        "no certificate in {0} (ssl.keystore.location wants the chain and the key in one PEM file)"
    )]
    NoCertificate(PathBuf),
    #[error("no usable private key in {path}: {reason} (an unencrypted PKCS#8, PKCS#1 or SEC1 PEM key is expected)")]
    PrivateKey { path: PathBuf, reason: String },
    #[error(
        "ssl.client.auth={0} needs ssl.truststore.location with the CA of the client certificates"
    )]
    NoTruststore(&'static str),
    #[error(
        "an SSL inter-broker or controller listener needs ssl.truststore.location with the CA that signed the brokers' certificates"
    )]
    NoPeerTruststore,
    #[error("invalid TLS configuration: {0}")]
    Rustls(String),
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let error = |reason: String| TlsError::Certificates {
        path: path.to_path_buf(),
        reason,
    };
    CertificateDer::pem_file_iter(path)
        .map_err(|e| error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(e.to_string()))
}

/// The certificate chain and private key of `ssl.keystore.location`.
fn keystore(
    settings: &TlsSettings,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = certificates(&settings.keystore)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(settings.keystore.clone()));
    }
    let key =
        PrivateKeyDer::from_pem_file(&settings.keystore).map_err(|e| TlsError::PrivateKey {
            path: settings.keystore.clone(),
            reason: e.to_string(),
        })?;
    Ok((chain, key))
}

/// The CA certificates of a trust store file.
fn trust_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in certificates(path)? {
        roots.add(ca).map_err(|e| TlsError::Certificates {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// Builds the server configuration (ring provider, TLS 1.2 and 1.3) from the settings,
/// reading and checking the PEM files.
pub fn server_config(settings: &TlsSettings) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (chain, key) = keystore(settings)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match settings.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        auth => {
            let name = if auth == ClientAuth::Required {
                "required"
            } else {
                "requested"
            };
            let path = settings
                .truststore
                .as_ref()
                .ok_or(TlsError::NoTruststore(name))?;
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(trust_roots(path)?), provider);
            let verifier = if auth == ClientAuth::Requested {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::Rustls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    Ok(Arc::new(config))
}

/// The name a TLS server at `address` (`host:port`) must have a certificate for: its host.
pub fn server_name(address: &str) -> Option<rustls::pki_types::ServerName<'static>> {
    let host = address
        .rsplit_once(':')
        .map_or(address, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    rustls::pki_types::ServerName::try_from(host.to_string()).ok()
}

/// Builds the configuration the broker's own client uses on an SSL inter-broker or controller
/// listener: it trusts the CAs of `ssl.truststore.location` (the brokers' certificates must be
/// valid for the host names they advertise) and presents the keystore's certificate, so a
/// listener with `ssl.client.auth` admits it as `User:` and its subject.
pub fn client_config(settings: &TlsSettings) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let (chain, key) = keystore(settings)?;
    let path = settings
        .truststore
        .as_ref()
        .ok_or(TlsError::NoPeerTruststore)?;
    let roots = trust_roots(path)?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsError::Rustls(e.to_string()))?
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .map_err(|e| TlsError::Rustls(e.to_string()))?;
    Ok(Arc::new(config))
}

/// The principal of a TLS connection after its handshake: `User:` and the subject of the
/// client's certificate in RFC 2253 form (`User:CN=alice,OU=eng,O=Example`) as
/// `ssl.principal.mapping.rules` maps it, or `User:ANONYMOUS` without a certificate. An error
/// (an unreadable subject, or no rule for it) refuses the connection.
pub fn peer_principal(
    connection: &rustls::ServerConnection,
    mapping: &PrincipalMapping,
) -> Result<Principal, String> {
    match connection.peer_certificates().and_then(<[_]>::first) {
        None => Ok(Principal::anonymous()),
        Some(certificate) => {
            let subject = subject_dn(certificate).map_err(|e: X509Error| e.to_string())?;
            mapping.apply(&subject).map(Principal::user)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keystore(dir: &Path) -> PathBuf {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let path = dir.join("broker.pem");
        std::fs::write(&path, format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();
        path
    }

    #[test]
    fn a_pem_keystore_with_chain_and_key_builds_a_server_config() {
        let dir = tempfile::tempdir().unwrap();
        let settings = TlsSettings {
            keystore: keystore(dir.path()),
            truststore: None,
            client_auth: ClientAuth::None,
            principal_mapping: PrincipalMapping::default(),
        };
        server_config(&settings).unwrap();
    }

    #[test]
    fn missing_keys_files_and_trust_stores_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let only_key = dir.path().join("key.pem");
        std::fs::write(
            &only_key,
            rcgen::KeyPair::generate().unwrap().serialize_pem(),
        )
        .unwrap();
        let mut settings = TlsSettings {
            keystore: only_key,
            truststore: None,
            client_auth: ClientAuth::None,
            principal_mapping: PrincipalMapping::default(),
        };
        let err = server_config(&settings).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate(_)), "{err}");
        settings.keystore = dir.path().join("absent.pem");
        let err = server_config(&settings).unwrap_err();
        assert!(err.to_string().contains("absent.pem"), "{err}");
        settings.keystore = keystore(dir.path());
        settings.client_auth = ClientAuth::Required;
        let err = server_config(&settings).unwrap_err();
        assert!(matches!(err, TlsError::NoTruststore("required")), "{err}");
    }
}
