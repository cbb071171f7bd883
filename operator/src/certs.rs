//! Certificate authorities and the certificates they issue (pure: no Kubernetes I/O).
//!
//! Every KafkaCluster has two CAs, as in Strimzi: the cluster CA signs the brokers'
//! certificates (which every TLS client verifies against the cluster CA's certificate), and the
//! clients CA signs the certificates of TLS KafkaUsers (which the brokers verify on listeners
//! that ask for a client certificate). A CA is renewed by a new certificate for the same key
//! and name: certificates issued before the renewal still verify against the new CA
//! certificate, and clients holding the old one still verify certificates issued after it.

use std::time::{Duration, SystemTime};

use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use thiserror::Error;
use time::OffsetDateTime;

/// The organization of every certificate the operator issues to its own parts (CAs, brokers),
/// so that no KafkaUser's certificate (`CN=<user>` only) names the same principal.
pub const ORGANIZATION: &str = "oxbow.dev";

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Debug, Error)]
pub enum CertError {
    #[error("no PEM certificate in {0}")]
    NoCertificate(&'static str),
    #[error("cannot read {what}: {reason}")]
    Parse { what: &'static str, reason: String },
    #[error("cannot issue a certificate: {0}")]
    Issue(String),
    #[error("cannot draw random bytes: {0}")]
    Random(String),
    #[error("cannot write a PKCS#12 store: {0}")]
    Pkcs12(String),
}

fn issue_error(e: rcgen::Error) -> CertError {
    CertError::Issue(e.to_string())
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A broker: serves TLS, and presents itself as a client to other brokers.
    Broker,
    /// A client of the brokers (a KafkaUser).
    Client,
}

/// A certificate and its private key, in PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Issued {
    /// The certificate, then the key: the one PEM file a broker's key store is.
    pub fn keystore_pem(&self) -> String {
        format!("{}\n{}", self.cert_pem.trim_end(), self.key_pem)
    }
}

/// What the operator reads back from a certificate it issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFacts {
    /// DNS names and IP addresses, as text.
    pub names: Vec<String>,
    pub not_after: SystemTime,
}

/// A CA that can sign: its certificate and its key.
pub struct Authority {
    params: CertificateParams,
    key: KeyPair,
    cert_pem: String,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("subject", &self.params.distinguished_name)
            .finish_non_exhaustive()
    }
}

fn offset(at: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(at)
}

fn serial() -> Result<SerialNumber, CertError> {
    let mut bytes = oxbow_broker::security::scram::random_bytes(16)
        .map_err(|e| CertError::Random(e.to_string()))?;
    // A positive integer of at most 20 bytes (RFC 5280).
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from(bytes))
}

/// Length of a generated password: 32 letters and digits, about 190 bits.
pub const PASSWORD_LENGTH: usize = 32;

/// A password of [`PASSWORD_LENGTH`] letters and digits from the operating system's CSPRNG
/// (bytes past the largest multiple of 62 are drawn again, so every character is as likely):
/// SCRAM users' passwords and the PKCS#12 stores'.
pub fn generate_password() -> Result<String, CertError> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut password = String::with_capacity(PASSWORD_LENGTH);
    while password.len() < PASSWORD_LENGTH {
        let bytes = oxbow_broker::security::scram::random_bytes(64)
            .map_err(|e| CertError::Random(e.to_string()))?;
        for byte in bytes {
            if password.len() == PASSWORD_LENGTH {
                break;
            }
            if usize::from(byte) < 248 {
                password.push(char::from(ALPHABET[usize::from(byte) % ALPHABET.len()]));
            }
        }
    }
    Ok(password)
}

/// The first certificate of a PEM text (a CA file may hold several).
fn first_certificate(pem: &str, what: &'static str) -> Result<String, CertError> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let start = pem.find(BEGIN).ok_or(CertError::NoCertificate(what))?;
    let end = pem[start..]
        .find(END)
        .ok_or(CertError::NoCertificate(what))?;
    Ok(format!("{}\n", &pem[start..start + end + END.len()]))
}

fn ca_params(
    distinguished_name: DistinguishedName,
    validity: Duration,
    now: SystemTime,
) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(issue_error)?;
    params.distinguished_name = distinguished_name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    // A minute of slack for clocks a little behind the operator's.
    params.not_before = offset(now - Duration::from_secs(60));
    params.not_after = offset(now + validity);
    params.serial_number = Some(serial()?);
    Ok(params)
}

impl Authority {
    /// A new CA named `CN=<common_name>,O=oxbow.dev`, valid for `validity_days` from `now`.
    pub fn generate(
        common_name: &str,
        validity_days: u32,
        now: SystemTime,
    ) -> Result<Authority, CertError> {
        let key = KeyPair::generate().map_err(issue_error)?;
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, ORGANIZATION);
        name.push(DnType::CommonName, common_name);
        let params = ca_params(name, DAY * validity_days, now)?;
        let cert_pem = params.clone().self_signed(&key).map_err(issue_error)?.pem();
        Ok(Authority {
            params,
            key,
            cert_pem,
        })
    }

    /// The CA of a certificate (the first of `cert_pem`) and its private key, as kept in the
    /// CA's Secrets.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Authority, CertError> {
        let cert_pem = first_certificate(cert_pem, "the CA certificate")?;
        let params =
            CertificateParams::from_ca_cert_pem(&cert_pem).map_err(|e| CertError::Parse {
                what: "the CA certificate",
                reason: e.to_string(),
            })?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| CertError::Parse {
            what: "the CA key",
            reason: e.to_string(),
        })?;
        Ok(Authority {
            params,
            key,
            cert_pem,
        })
    }

    /// The same CA (name and key) with a new certificate valid for `validity_days` from `now`.
    pub fn renewed(&self, validity_days: u32, now: SystemTime) -> Result<Authority, CertError> {
        let params = ca_params(
            self.params.distinguished_name.clone(),
            DAY * validity_days,
            now,
        )?;
        let key = KeyPair::from_pem(&self.key.serialize_pem()).map_err(|e| CertError::Parse {
            what: "the CA key",
            reason: e.to_string(),
        })?;
        let cert_pem = params.clone().self_signed(&key).map_err(issue_error)?.pem();
        Ok(Authority {
            params,
            key,
            cert_pem,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    pub fn not_after(&self) -> SystemTime {
        SystemTime::from(self.params.not_after)
    }

    /// A certificate for `subject` (a common name, with the operator's organization when
    /// `internal`) and `names` (DNS names or IP addresses), valid for `validity_days` from
    /// `now` but never past the CA's own expiry.
    pub fn issue(
        &self,
        common_name: &str,
        internal: bool,
        names: &[String],
        purpose: Purpose,
        validity_days: u32,
        now: SystemTime,
    ) -> Result<Issued, CertError> {
        let key = KeyPair::generate().map_err(issue_error)?;
        let mut params = CertificateParams::new(names.to_vec()).map_err(issue_error)?;
        let mut name = DistinguishedName::new();
        if internal {
            name.push(DnType::OrganizationName, ORGANIZATION);
        }
        name.push(DnType::CommonName, common_name);
        params.distinguished_name = name;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = match purpose {
            Purpose::Broker => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Purpose::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        params.use_authority_key_identifier_extension = true;
        params.not_before = offset(now - Duration::from_secs(60));
        params.not_after = offset((now + DAY * validity_days).min(self.not_after()));
        params.serial_number = Some(serial()?);
        let issuer = self
            .params
            .clone()
            .self_signed(&self.key)
            .map_err(issue_error)?;
        let cert = params
            .signed_by(&key, &issuer, &self.key)
            .map_err(issue_error)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The DER of each certificate in a PEM text.
fn certificates_der(pem: &str, what: &'static str) -> Result<Vec<Certificate>, CertError> {
    let parse = |reason: String| CertError::Parse { what, reason };
    let certificates = CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|der| {
            let der = der.map_err(|e| parse(e.to_string()))?;
            Certificate::from_der(&der).map_err(|e| parse(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if certificates.is_empty() {
        return Err(CertError::NoCertificate(what));
    }
    Ok(certificates)
}

/// A PKCS#12 key store (`.p12`) under `password`: the key of `key_pem` with its certificate
/// `cert_pem` and the CA certificates of `ca_pem` after it, as entry `alias`. Encrypted as
/// Java writes new stores (PBES2 with AES-256, HMAC-SHA256), so `ssl.keystore.type=PKCS12`
/// clients, `keytool` and `openssl pkcs12` read it.
pub fn pkcs12_keystore(
    alias: &str,
    cert_pem: &str,
    key_pem: &str,
    ca_pem: &str,
    password: &str,
) -> Result<Vec<u8>, CertError> {
    let key =
        PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| CertError::Parse {
            what: "the private key",
            reason: e.to_string(),
        })?;
    let key = PrivateKey::from_der(key.secret_pkcs8_der()).map_err(|e| CertError::Parse {
        what: "the private key",
        reason: e.to_string(),
    })?;
    let mut chain = certificates_der(cert_pem, "the certificate")?;
    chain.extend(certificates_der(ca_pem, "the CA certificate")?);
    let mut store = KeyStore::new();
    store.add_entry(
        alias,
        KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(alias, key, chain)),
    );
    store
        .writer(password)
        .write()
        .map_err(|e| CertError::Pkcs12(e.to_string()))
}

/// A PKCS#12 trust store under `password` holding each certificate of `ca_pem` as a trusted
/// entry (`ca`, `ca-1`, ...), for `ssl.truststore.type=PKCS12` clients.
pub fn pkcs12_truststore(ca_pem: &str, password: &str) -> Result<Vec<u8>, CertError> {
    let mut store = KeyStore::new();
    for (n, certificate) in certificates_der(ca_pem, "the CA certificate")?
        .into_iter()
        .enumerate()
    {
        let alias = if n == 0 {
            "ca".to_string()
        } else {
            format!("ca-{n}")
        };
        store.add_entry(&alias, KeyStoreEntry::Certificate(certificate));
    }
    store
        .writer(password)
        .write()
        .map_err(|e| CertError::Pkcs12(e.to_string()))
}

/// The names and expiry of a certificate (the first of `cert_pem`).
pub fn facts(cert_pem: &str) -> Result<CertificateFacts, CertError> {
    let pem = first_certificate(cert_pem, "the certificate")?;
    let params = CertificateParams::from_ca_cert_pem(&pem).map_err(|e| CertError::Parse {
        what: "the certificate",
        reason: e.to_string(),
    })?;
    let names = params
        .subject_alt_names
        .iter()
        .filter_map(|name| match name {
            SanType::DnsName(dns) => Some(dns.as_str().to_string()),
            SanType::IpAddress(ip) => Some(ip.to_string()),
            _ => None,
        })
        .collect();
    Ok(CertificateFacts {
        names,
        not_after: SystemTime::from(params.not_after),
    })
}

/// Whether a certificate that expires at `not_after` is due for renewal at `now`: within
/// `renewal_days` of its expiry.
pub fn due(not_after: SystemTime, renewal_days: u32, now: SystemTime) -> bool {
    now + DAY * renewal_days >= not_after
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{ServerName, UnixTime};

    fn now() -> SystemTime {
        SystemTime::now()
    }

    fn verify_server(ca_pem: &str, leaf_pem: &str, host: &str) -> Result<(), rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(ca.expect("CA PEM")).expect("CA");
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .expect("verifier");
        let leaf = CertificateDer::from_pem_slice(leaf_pem.as_bytes()).expect("leaf PEM");
        use rustls::client::danger::ServerCertVerifier as _;
        verifier
            .verify_server_cert(
                &leaf,
                &[],
                &ServerName::try_from(host.to_string()).expect("host"),
                &[],
                UnixTime::now(),
            )
            .map(|_| ())
    }

    #[test]
    fn a_broker_certificate_verifies_for_its_names_only() {
        let ca = Authority::generate("main-cluster-ca", 365, now()).expect("CA");
        let names = vec![
            "main-0.main-brokers.ns.svc.cluster.local".to_string(),
            "10.98.0.7".to_string(),
        ];
        let broker = ca
            .issue("main-broker", true, &names, Purpose::Broker, 365, now())
            .expect("issued");
        verify_server(ca.cert_pem(), &broker.cert_pem, &names[0]).expect("valid for its name");
        verify_server(ca.cert_pem(), &broker.cert_pem, "10.98.0.7").expect("valid for its IP");
        assert!(verify_server(ca.cert_pem(), &broker.cert_pem, "main-1.elsewhere").is_err());
        let other = Authority::generate("other-cluster-ca", 365, now()).expect("CA");
        assert!(verify_server(other.cert_pem(), &broker.cert_pem, &names[0]).is_err());
        let facts = facts(&broker.cert_pem).expect("facts");
        assert_eq!(facts.names, names);
    }

    #[test]
    fn a_renewed_ca_and_the_old_one_verify_each_others_certificates() {
        let old = Authority::generate("main-cluster-ca", 365, now()).expect("CA");
        let names = vec!["main-0.main-brokers.ns.svc".to_string()];
        let before = old
            .issue("main-broker", true, &names, Purpose::Broker, 365, now())
            .expect("issued");
        let loaded = Authority::load(old.cert_pem(), &old.key_pem()).expect("loaded");
        let renewed = loaded.renewed(730, now()).expect("renewed");
        assert_ne!(renewed.cert_pem(), old.cert_pem());
        assert!(renewed.not_after() > old.not_after());
        let after = renewed
            .issue("main-broker", true, &names, Purpose::Broker, 365, now())
            .expect("issued");
        verify_server(renewed.cert_pem(), &before.cert_pem, &names[0])
            .expect("the new CA certificate verifies what the old one issued");
        verify_server(old.cert_pem(), &after.cert_pem, &names[0])
            .expect("clients holding the old CA certificate verify what the new one issues");
    }

    #[test]
    fn certificates_never_outlive_their_ca_and_renewal_is_due_before_expiry() {
        let ca = Authority::generate("c", 10, now()).expect("CA");
        let leaf = ca
            .issue("u", false, &[], Purpose::Client, 365, now())
            .expect("issued");
        let facts = facts(&leaf.cert_pem).expect("facts");
        assert!(facts.not_after <= ca.not_after());
        assert!(!due(ca.not_after(), 5, now()));
        assert!(due(ca.not_after(), 10, now()));
        assert!(due(ca.not_after(), 0, ca.not_after()));
    }

    #[test]
    fn generated_passwords_are_long_distinct_letters_and_digits() {
        let a = generate_password().expect("a password");
        let b = generate_password().expect("a password");
        assert_eq!(a.len(), PASSWORD_LENGTH);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn pkcs12_stores_hold_the_key_and_chain_and_open_only_with_their_password() {
        let ca = Authority::generate("c", 10, now()).expect("CA");
        let user = ca
            .issue("billing", false, &[], Purpose::Client, 10, now())
            .expect("user");
        let p12 = pkcs12_keystore(
            "billing",
            &user.cert_pem,
            &user.key_pem,
            ca.cert_pem(),
            "secret",
        )
        .expect("keystore");
        let policy = p12_keystore::Pkcs12ImportPolicy::Strict;
        let store = KeyStore::from_pkcs12(&p12, "secret", policy).expect("opens");
        let (alias, chain) = store.private_key_chain().expect("a key entry");
        assert_eq!(alias, "billing");
        let der = |pem: &str| {
            CertificateDer::from_pem_slice(pem.as_bytes())
                .expect("PEM")
                .to_vec()
        };
        let chain: Vec<Vec<u8>> = chain.certs().iter().map(|c| c.as_der().to_vec()).collect();
        assert_eq!(chain, [der(&user.cert_pem), der(ca.cert_pem())]);
        assert!(KeyStore::from_pkcs12(&p12, "wrong", policy).is_err());

        let trust = pkcs12_truststore(ca.cert_pem(), "secret").expect("truststore");
        let store = KeyStore::from_pkcs12(&trust, "secret", policy).expect("opens");
        assert!(matches!(
            store.entry("ca"),
            Some(KeyStoreEntry::Certificate(c)) if c.as_der() == der(ca.cert_pem())
        ));
        assert!(matches!(
            pkcs12_truststore("nothing", "secret"),
            Err(CertError::NoCertificate(_))
        ));
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        assert!(matches!(
            Authority::load("not a certificate", "not a key"),
            Err(CertError::NoCertificate(_))
        ));
        let ca = Authority::generate("c", 10, now()).expect("CA");
        assert!(matches!(
            Authority::load(
                ca.cert_pem(),
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
            ),
            Err(CertError::Parse { .. })
        ));
        assert!(facts("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err());
    }
}
