//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677): the stored credential (salt,
//! iterations, stored key, server key — never the password) and the server side of the
//! exchange.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ring::rand::SecureRandom as _;
use ring::{digest, hmac, pbkdf2};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;

/// The fewest PBKDF2 iterations a credential may use (RFC 7677 asks for at least 4096, and
/// Kafka refuses fewer).
pub const MIN_ITERATIONS: u32 = 4096;
/// The most iterations Kafka accepts for a credential.
pub const MAX_ITERATIONS: u32 = 16384;
/// Iterations of credentials the broker derives itself (`--add-scram` without `iterations`).
pub const DEFAULT_ITERATIONS: u32 = 8192;

/// A SCRAM hash function, with Kafka's names and its numeric codes in the admin APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ScramMechanism {
    #[serde(rename = "SCRAM-SHA-256")]
    Sha256,
    #[serde(rename = "SCRAM-SHA-512")]
    Sha512,
}

impl ScramMechanism {
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    /// The SASL mechanism name, as in `sasl.enabled.mechanisms`.
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(name: &str) -> Option<ScramMechanism> {
        ScramMechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The code in AlterUserScramCredentials and DescribeUserScramCredentials.
    pub fn code(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    pub fn from_code(code: i8) -> Option<ScramMechanism> {
        ScramMechanism::ALL.into_iter().find(|m| m.code() == code)
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            ScramMechanism::Sha256 => hmac::HMAC_SHA256,
            ScramMechanism::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            ScramMechanism::Sha256 => &digest::SHA256,
            ScramMechanism::Sha512 => &digest::SHA512,
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            ScramMechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            ScramMechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn output_len(self) -> usize {
        self.digest().output_len()
    }

    fn hmac_sign(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        hmac::sign(&hmac::Key::new(self.hmac(), key), data)
            .as_ref()
            .to_vec()
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        digest::digest(self.digest(), data).as_ref().to_vec()
    }
}

impl fmt::Display for ScramMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the broker keeps of a user's password for one mechanism: enough to verify a proof and
/// to prove itself, not enough to log in as the user.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    #[serde(with = "base64_bytes")]
    pub salt: Vec<u8>,
    pub iterations: u32,
    #[serde(with = "base64_bytes")]
    pub stored_key: Vec<u8>,
    #[serde(with = "base64_bytes")]
    pub server_key: Vec<u8>,
}

impl fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramCredential {
    /// Derives the credential of a password (PBKDF2 with the mechanism's HMAC).
    pub fn from_password(
        mechanism: ScramMechanism,
        password: &[u8],
        salt: Vec<u8>,
        iterations: u32,
    ) -> ScramCredential {
        let salted = salted_password(mechanism, password, &salt, iterations);
        ScramCredential::from_salted_password(mechanism, &salted, salt, iterations)
    }

    /// The credential of an already salted password, as AlterUserScramCredentials sends it.
    pub fn from_salted_password(
        mechanism: ScramMechanism,
        salted_password: &[u8],
        salt: Vec<u8>,
        iterations: u32,
    ) -> ScramCredential {
        let client_key = mechanism.hmac_sign(salted_password, b"Client Key");
        ScramCredential {
            salt,
            iterations,
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac_sign(salted_password, b"Server Key"),
        }
    }

    /// Whether `password` is the one this credential was derived from (SASL/PLAIN checks
    /// passwords against the SCRAM credentials; no other form of the password is stored).
    pub fn verify_password(&self, mechanism: ScramMechanism, password: &[u8]) -> bool {
        let derived =
            ScramCredential::from_password(mechanism, password, self.salt.clone(), self.iterations);
        bool::from(derived.stored_key.ct_eq(&self.stored_key))
    }
}

/// PBKDF2 of `password` with the mechanism's HMAC: what AlterUserScramCredentials carries, so
/// the password itself never travels.
pub fn salted_password(
    mechanism: ScramMechanism,
    password: &[u8],
    salt: &[u8],
    iterations: u32,
) -> Vec<u8> {
    let mut out = vec![0; mechanism.output_len()];
    let rounds = std::num::NonZeroU32::new(iterations).unwrap_or(std::num::NonZeroU32::MIN);
    pbkdf2::derive(mechanism.pbkdf2(), rounds, salt, password, &mut out);
    out
}

/// The salt shown for a user without a credential: the same for the same name for as long as
/// the process runs, like a real user's, so repeated attempts do not tell the two apart.
fn decoy_salt(mechanism: ScramMechanism, user: &str) -> Result<Vec<u8>, ScramError> {
    static SECRET: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let secret = match SECRET.get() {
        Some(secret) => secret,
        None => {
            let fresh = random_bytes(32)?;
            SECRET.get_or_init(|| fresh)
        }
    };
    let mut salt = mechanism.hmac_sign(secret, user.as_bytes());
    salt.truncate(32);
    Ok(salt)
}

/// Random bytes from the operating system's CSPRNG.
pub fn random_bytes(len: usize) -> Result<Vec<u8>, ScramError> {
    let mut out = vec![0; len];
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| ScramError::Random)?;
    Ok(out)
}

/// A fresh random salt for a credential the broker derives.
pub fn new_salt() -> Result<Vec<u8>, ScramError> {
    random_bytes(32)
}

/// Why a SCRAM exchange failed. The client is told only that authentication failed; the
/// broker log says which of these it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(String),
    #[error("channel binding is not supported")]
    ChannelBinding,
    #[error("the SCRAM extension `{0}` is not supported")]
    Extension(String),
    #[error("the nonce of the final message is not the one the server sent")]
    Nonce,
    #[error("invalid credentials")]
    InvalidProof,
    #[error("the system random generator failed")]
    Random,
}

/// The server side of one SCRAM exchange: client-first → server-first, client-final →
/// server-final.
#[derive(Debug)]
pub struct ScramServer {
    mechanism: ScramMechanism,
    state: ServerState,
}

#[derive(Debug)]
enum ServerState {
    Initial,
    FirstSent {
        user: String,
        /// `None` for a user without a credential: the exchange goes on with a made-up salt
        /// so the answer does not reveal whether the user exists, and fails at the proof.
        credential: Option<ScramCredential>,
        gs2_header: String,
        /// The client's part of the nonce, and the combined nonce the server sent.
        client_first_nonce: String,
        nonce: String,
        auth_prefix: String,
    },
    Done,
}

impl ScramServer {
    pub fn new(mechanism: ScramMechanism) -> ScramServer {
        ScramServer {
            mechanism,
            state: ServerState::Initial,
        }
    }

    pub fn mechanism(&self) -> ScramMechanism {
        self.mechanism
    }

    /// Answers the client-first message with the server-first message. `lookup` finds the
    /// stored credential of a user name.
    pub fn client_first(
        &mut self,
        message: &[u8],
        lookup: impl FnOnce(&str) -> Option<ScramCredential>,
    ) -> Result<Vec<u8>, ScramError> {
        if !matches!(self.state, ServerState::Initial) {
            return Err(ScramError::Malformed(
                "unexpected client-first message".into(),
            ));
        }
        self.state = ServerState::Done;
        let text = std::str::from_utf8(message)
            .map_err(|_| ScramError::Malformed("client-first message is not UTF-8".into()))?;
        let first = parse_client_first(text)?;
        let credential = lookup(&first.user);
        let server_nonce = BASE64.encode(random_bytes(24)?);
        let nonce = format!("{}{server_nonce}", first.client_nonce);
        let (salt, iterations) = match &credential {
            Some(c) => (c.salt.clone(), c.iterations),
            None => (decoy_salt(self.mechanism, &first.user)?, DEFAULT_ITERATIONS),
        };
        let server_first = format!("r={nonce},s={},i={iterations}", BASE64.encode(&salt));
        self.state = ServerState::FirstSent {
            user: first.user,
            credential,
            gs2_header: first.gs2_header,
            client_first_nonce: first.client_nonce,
            nonce,
            auth_prefix: format!("{},{server_first}", first.bare),
        };
        Ok(server_first.into_bytes())
    }

    /// Checks the client-final message's proof; on success returns the server-final message
    /// and the authenticated user name.
    pub fn client_final(&mut self, message: &[u8]) -> Result<(Vec<u8>, String), ScramError> {
        let ServerState::FirstSent {
            user,
            credential,
            gs2_header,
            client_first_nonce,
            nonce,
            auth_prefix,
        } = std::mem::replace(&mut self.state, ServerState::Done)
        else {
            return Err(ScramError::Malformed(
                "unexpected client-final message".into(),
            ));
        };
        let text = std::str::from_utf8(message)
            .map_err(|_| ScramError::Malformed("client-final message is not UTF-8".into()))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or_else(|| ScramError::Malformed("client-final message has no proof".into()))?;
        let mut fields = without_proof.split(',');
        let binding = fields
            .next()
            .and_then(|f| f.strip_prefix("c="))
            .ok_or_else(|| ScramError::Malformed("client-final message has no c=".into()))?;
        let client_nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .ok_or_else(|| ScramError::Malformed("client-final message has no r=".into()))?;
        if BASE64.decode(binding).ok().as_deref() != Some(gs2_header.as_bytes()) {
            return Err(ScramError::ChannelBinding);
        }
        // librdkafka before 2.6.1 (Debian's kcat among others) sends its own nonce again in
        // front of the combined one (librdkafka#4895); Kafka 3.8.1-3.9 accepted that too. The
        // fresh server nonce is in it either way, which is what defeats replays.
        let librdkafka_form = client_nonce
            .strip_prefix(client_first_nonce.as_str())
            .is_some_and(|rest| rest == nonce);
        if client_nonce != nonce && !librdkafka_form {
            return Err(ScramError::Nonce);
        }
        let proof = BASE64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("the proof is not base64".into()))?;
        let credential = credential.ok_or(ScramError::InvalidProof)?;
        let auth_message = format!("{auth_prefix},{without_proof}");
        let signature = self
            .mechanism
            .hmac_sign(&credential.stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return Err(ScramError::InvalidProof);
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
        let stored_key = self.mechanism.hash(&client_key);
        if !bool::from(stored_key.ct_eq(&credential.stored_key)) {
            return Err(ScramError::InvalidProof);
        }
        let server_signature = self
            .mechanism
            .hmac_sign(&credential.server_key, auth_message.as_bytes());
        Ok((
            format!("v={}", BASE64.encode(server_signature)).into_bytes(),
            user,
        ))
    }
}

/// The client side of one SCRAM exchange, for the broker's own connections to other brokers
/// on a SASL inter-broker listener: client-first, then client-final from the server-first
/// message, then a check of the server-final message (the server proves it knows the
/// credential too).
pub struct ScramClient {
    mechanism: ScramMechanism,
    password: String,
    client_first_bare: String,
    nonce: String,
    /// The server signature the server-final message must carry, once client-final is made.
    expected_server_signature: Option<Vec<u8>>,
}

impl fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramClient")
            .field("mechanism", &self.mechanism)
            .finish_non_exhaustive()
    }
}

impl ScramClient {
    pub fn new(mechanism: ScramMechanism, user: &str, password: &str) -> Result<Self, ScramError> {
        let nonce = BASE64.encode(random_bytes(24)?);
        let name = user.replace('=', "=3D").replace(',', "=2C");
        Ok(ScramClient {
            mechanism,
            password: password.to_string(),
            client_first_bare: format!("n={name},r={nonce}"),
            nonce,
            expected_server_signature: None,
        })
    }

    /// The client-first message: no channel binding, no authorization identity.
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// The client-final message (with the proof) for the server-first message.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        let text = std::str::from_utf8(server_first)
            .map_err(|_| ScramError::Malformed("server-first message is not UTF-8".into()))?;
        let field = |name: &str| {
            text.split(',')
                .find_map(|f| f.strip_prefix(name))
                .ok_or_else(|| ScramError::Malformed(format!("server-first message has no {name}")))
        };
        let nonce = field("r=")?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::Nonce);
        }
        let salt = BASE64
            .decode(field("s=")?)
            .map_err(|_| ScramError::Malformed("the salt is not base64".into()))?;
        let iterations: u32 = field("i=")?
            .parse()
            .map_err(|_| ScramError::Malformed("the iteration count is not a number".into()))?;
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(ScramError::Malformed(format!(
                "{iterations} iterations is outside {MIN_ITERATIONS}..={MAX_ITERATIONS}"
            )));
        }
        let salted = salted_password(self.mechanism, self.password.as_bytes(), &salt, iterations);
        let client_key = self.mechanism.hmac_sign(&salted, b"Client Key");
        let stored_key = self.mechanism.hash(&client_key);
        // "biws" is base64 of the GS2 header "n,,".
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
        let signature = self
            .mechanism
            .hmac_sign(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = self.mechanism.hmac_sign(&salted, b"Server Key");
        self.expected_server_signature = Some(
            self.mechanism
                .hmac_sign(&server_key, auth_message.as_bytes()),
        );
        Ok(format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes())
    }

    /// Checks the server-final message: the server's signature, or its error.
    pub fn server_final(&self, message: &[u8]) -> Result<(), ScramError> {
        let text = std::str::from_utf8(message)
            .map_err(|_| ScramError::Malformed("server-final message is not UTF-8".into()))?;
        if let Some(error) = text.strip_prefix("e=") {
            return Err(ScramError::Malformed(format!(
                "the server refused: {error}"
            )));
        }
        let signature = text
            .strip_prefix("v=")
            .and_then(|v| BASE64.decode(v).ok())
            .ok_or_else(|| ScramError::Malformed("server-final message has no v=".into()))?;
        match &self.expected_server_signature {
            Some(expected) if bool::from(expected.ct_eq(&signature)) => Ok(()),
            _ => Err(ScramError::InvalidProof),
        }
    }
}

struct ClientFirst {
    gs2_header: String,
    bare: String,
    user: String,
    client_nonce: String,
}

fn parse_client_first(text: &str) -> Result<ClientFirst, ScramError> {
    let malformed = |what: &str| ScramError::Malformed(format!("client-first message: {what}"));
    // gs2-header: cbind-flag "," [authzid] ","
    let (flag, rest) = text
        .split_once(',')
        .ok_or_else(|| malformed("no GS2 header"))?;
    match flag {
        "n" | "y" => {}
        f if f.starts_with("p=") => return Err(ScramError::ChannelBinding),
        _ => return Err(malformed("unknown channel binding flag")),
    }
    let (authzid, bare) = rest
        .split_once(',')
        .ok_or_else(|| malformed("no GS2 header"))?;
    let gs2_header = format!("{flag},{authzid},");
    let mut fields = bare.split(',');
    let user = fields
        .next()
        .and_then(|f| f.strip_prefix("n="))
        .ok_or_else(|| malformed("no user name"))?;
    let user = decode_saslname(user).ok_or_else(|| malformed("bad user name escape"))?;
    if user.is_empty() {
        return Err(malformed("empty user name"));
    }
    if let Some(authzid) = authzid.strip_prefix("a=") {
        if decode_saslname(authzid).as_deref() != Some(user.as_str()) {
            return Err(malformed(
                "an authorization id other than the user is not allowed",
            ));
        }
    }
    let client_nonce = fields
        .next()
        .and_then(|f| f.strip_prefix("r="))
        .filter(|n| !n.is_empty())
        .ok_or_else(|| malformed("no nonce"))?;
    for extension in fields {
        let (key, value) = extension.split_once('=').unwrap_or((extension, ""));
        // Delegation tokens (tokenauth) are not supported; other extensions are optional.
        if key == "tokenauth" && value == "true" {
            return Err(ScramError::Extension(key.to_string()));
        }
        if key == "m" {
            return Err(ScramError::Extension(key.to_string()));
        }
    }
    Ok(ClientFirst {
        gs2_header,
        user,
        client_nonce: client_nonce.to_string(),
        bare: bare.to_string(),
    })
}

/// Undoes RFC 5802's escaping of `,` (`=2C`) and `=` (`=3D`) in a user name.
fn decode_saslname(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3)?;
        out.push(match escape {
            "=2C" => ',',
            "=3D" => '=',
            _ => return None,
        });
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// A credential given at start with `--add-scram`, in the form of Kafka's
/// `kafka-storage format --add-scram`:
/// `SCRAM-SHA-256=[name=alice,password=alice-secret]`, optionally with `iterations=8192`, or
/// with `salt=` and `saltedpassword=` (base64) instead of the password.
#[derive(Clone, PartialEq, Eq)]
pub struct InitialCredential {
    pub user: String,
    pub mechanism: ScramMechanism,
    pub credential: ScramCredential,
}

impl fmt::Debug for InitialCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InitialCredential")
            .field("user", &self.user)
            .field("mechanism", &self.mechanism)
            .finish_non_exhaustive()
    }
}

impl InitialCredential {
    pub fn parse(text: &str) -> Result<InitialCredential, String> {
        let expected = "MECHANISM=[name=USER,password=PASSWORD] (optionally iterations=N, or salt= and saltedpassword= in base64 instead of password)";
        let (mechanism, rest) = text
            .trim()
            .split_once('=')
            .ok_or_else(|| format!("expected {expected}"))?;
        let mechanism = ScramMechanism::from_name(mechanism.trim()).ok_or_else(|| {
            format!("unknown mechanism `{mechanism}`: SCRAM-SHA-256 or SCRAM-SHA-512")
        })?;
        let fields = rest
            .trim()
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .ok_or_else(|| format!("expected {expected}"))?;
        let mut values: std::collections::BTreeMap<String, String> =
            std::collections::BTreeMap::new();
        for (key, value) in split_fields(fields)? {
            if !matches!(
                key.as_str(),
                "name" | "password" | "iterations" | "salt" | "saltedpassword"
            ) {
                return Err(format!("unknown field `{key}`; expected {expected}"));
            }
            if values.insert(key.clone(), value).is_some() {
                return Err(format!("`{key}` is given twice"));
            }
        }
        let user = values
            .remove("name")
            .filter(|n| !n.is_empty())
            .ok_or("the user `name` is missing")?;
        let iterations = match values.remove("iterations") {
            Some(n) => n
                .parse::<u32>()
                .ok()
                .filter(|n| (MIN_ITERATIONS..=MAX_ITERATIONS).contains(n))
                .ok_or_else(|| {
                    format!("iterations `{n}`: expected {MIN_ITERATIONS} to {MAX_ITERATIONS}")
                })?,
            None => DEFAULT_ITERATIONS,
        };
        let decode = |key: &str, text: String| {
            BASE64
                .decode(text)
                .map_err(|e| format!("`{key}` is not base64: {e}"))
        };
        let credential = match (
            values.remove("password"),
            values.remove("salt"),
            values.remove("saltedpassword"),
        ) {
            (Some(password), None, None) => {
                let salt = new_salt().map_err(|e| e.to_string())?;
                ScramCredential::from_password(mechanism, password.as_bytes(), salt, iterations)
            }
            (None, Some(salt), Some(salted)) => ScramCredential::from_salted_password(
                mechanism,
                &decode("saltedpassword", salted)?,
                decode("salt", salt)?,
                iterations,
            ),
            _ => {
                return Err(format!(
                    "give either password or salt and saltedpassword; expected {expected}"
                ))
            }
        };
        Ok(InitialCredential {
            user,
            mechanism,
            credential,
        })
    }
}

/// Splits `key=value,key="quoted, value"` into pairs.
fn split_fields(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once('=')
            .ok_or_else(|| format!("`{rest}` is not key=value"))?;
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted
                    .find('"')
                    .ok_or_else(|| format!("unterminated quote in `{after}`"))?;
                let tail = quoted[end + 1..].trim_start();
                if !(tail.is_empty() || tail.starts_with(',')) {
                    return Err(format!("unexpected `{tail}` after a quoted value"));
                }
                (quoted[..end].to_string(), tail.trim_start_matches(','))
            }
            None => match after.split_once(',') {
                Some((value, tail)) => (value.to_string(), tail),
                None => (after.to_string(), ""),
            },
        };
        pairs.push((key.trim().to_string(), value));
        rest = after.trim();
    }
    Ok(pairs)
}

/// Byte fields of credentials as base64 strings in the metadata.
mod base64_bytes {
    use base64::engine::general_purpose::STANDARD as BASE64;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&BASE64.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        BASE64.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_and_the_server_agree_and_a_wrong_password_is_refused() {
        for mechanism in [ScramMechanism::Sha256, ScramMechanism::Sha512] {
            let credential = ScramCredential::from_password(
                mechanism,
                b"broker-secret",
                new_salt().expect("salt"),
                MIN_ITERATIONS,
            );
            let lookup = |user: &str| (user == "broker,1").then(|| credential.clone());
            let mut client =
                ScramClient::new(mechanism, "broker,1", "broker-secret").expect("nonce");
            let mut server = ScramServer::new(mechanism);
            let server_first = server
                .client_first(&client.client_first(), lookup)
                .expect("server-first");
            let client_final = client.client_final(&server_first).expect("client-final");
            let (server_final, user) = server.client_final(&client_final).expect("accepted");
            assert_eq!(user, "broker,1");
            client
                .server_final(&server_final)
                .expect("the server proves itself");
            assert!(
                client.server_final(b"v=AAAA").is_err(),
                "a forged signature passes"
            );

            let mut wrong = ScramClient::new(mechanism, "broker,1", "guess").expect("nonce");
            let mut server = ScramServer::new(mechanism);
            let server_first = server
                .client_first(&wrong.client_first(), lookup)
                .expect("server-first");
            let client_final = wrong.client_final(&server_first).expect("client-final");
            assert_eq!(
                server.client_final(&client_final).map(|_| ()),
                Err(ScramError::InvalidProof)
            );
        }
    }

    /// The SCRAM-SHA-256 exchange of RFC 7677 section 3, with the server nonce the RFC used.
    #[test]
    fn the_rfc_7677_exchange_is_verified_and_the_server_signature_matches() {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let credential =
            ScramCredential::from_password(ScramMechanism::Sha256, b"pencil", salt, 4096);
        let client_first = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let mut server = ScramServer::new(ScramMechanism::Sha256);
        server.state = ServerState::FirstSent {
            user: "user".into(),
            credential: Some(credential),
            gs2_header: "n,,".into(),
            client_first_nonce: "rOprNGfwEbeRWgbNEkqO".into(),
            nonce: "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into(),
            auth_prefix: format!("{},{server_first}", &client_first[3..]),
        };
        let (server_final, user) = server
            .client_final(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        assert_eq!(user, "user");
        assert_eq!(
            String::from_utf8(server_final).unwrap(),
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    /// A client written from the RFC, to run whole exchanges against the server.
    fn client_final(
        mechanism: ScramMechanism,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
    ) -> String {
        let fields: Vec<&str> = server_first.split(',').collect();
        let nonce = fields[0].strip_prefix("r=").unwrap();
        let salt = BASE64
            .decode(fields[1].strip_prefix("s=").unwrap())
            .unwrap();
        let iterations: u32 = fields[2].strip_prefix("i=").unwrap().parse().unwrap();
        let salted = salted_password(mechanism, password.as_bytes(), &salt, iterations);
        let client_key = mechanism.hmac_sign(&salted, b"Client Key");
        let stored_key = mechanism.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = mechanism.hmac_sign(&stored_key, auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        format!("{without_proof},p={}", BASE64.encode(proof))
    }

    fn exchange(
        mechanism: ScramMechanism,
        stored: &str,
        tried: &str,
    ) -> Result<String, ScramError> {
        let credential =
            ScramCredential::from_password(mechanism, stored.as_bytes(), new_salt()?, 4096);
        let mut server = ScramServer::new(mechanism);
        let bare = "n=alice,r=abcdefgh";
        let server_first = server.client_first(format!("n,,{bare}").as_bytes(), |user| {
            (user == "alice").then(|| credential.clone())
        })?;
        let server_first = String::from_utf8(server_first).unwrap();
        assert!(server_first.starts_with("r=abcdefgh"), "{server_first}");
        let last = client_final(mechanism, tried, bare, &server_first);
        server.client_final(last.as_bytes()).map(|(_, user)| user)
    }

    #[test]
    fn both_mechanisms_accept_the_right_password_and_refuse_a_wrong_one() {
        for mechanism in ScramMechanism::ALL {
            assert_eq!(exchange(mechanism, "secret", "secret"), Ok("alice".into()));
            assert_eq!(
                exchange(mechanism, "secret", "Secret"),
                Err(ScramError::InvalidProof)
            );
        }
    }

    /// librdkafka before 2.6.1 repeats its nonce in the final message; the proof is still
    /// checked over the message as sent.
    #[test]
    fn the_final_message_of_older_librdkafka_is_accepted_and_its_proof_checked() {
        let mechanism = ScramMechanism::Sha256;
        let credential = ScramCredential::from_password(mechanism, b"secret", vec![5; 16], 4096);
        let mut server = ScramServer::new(mechanism);
        let bare = "n=alice,r=abc";
        let first = server
            .client_first(format!("n,,{bare}").as_bytes(), |_| {
                Some(credential.clone())
            })
            .unwrap();
        let first = String::from_utf8(first).unwrap();
        let doubled = first.replacen("r=abc", "r=abcabc", 1);
        let last = client_final(mechanism, "secret", bare, &doubled);
        // The client signs what it sends; the server's AuthMessage keeps its own server-first.
        let salted = salted_password(mechanism, b"secret", &[5; 16], 4096);
        let client_key = mechanism.hmac_sign(&salted, b"Client Key");
        let without_proof = last.rsplit_once(",p=").unwrap().0;
        let auth = format!("{bare},{first},{without_proof}");
        let signature = mechanism.hmac_sign(&mechanism.hash(&client_key), auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let last = format!("{without_proof},p={}", BASE64.encode(proof));
        assert_eq!(
            server.client_final(last.as_bytes()).map(|(_, u)| u),
            Ok("alice".into())
        );
        // Anything else in front of the nonce is still refused.
        let mut server = ScramServer::new(mechanism);
        let first = server
            .client_first(format!("n,,{bare}").as_bytes(), |_| {
                Some(credential.clone())
            })
            .unwrap();
        let first = String::from_utf8(first).unwrap();
        let nonce = first.split(',').next().unwrap().strip_prefix("r=").unwrap();
        let forged = format!("c=biws,r=xyz{nonce},p=AAAA");
        assert_eq!(
            server.client_final(forged.as_bytes()),
            Err(ScramError::Nonce)
        );
    }

    #[test]
    fn an_unknown_user_gets_a_plausible_challenge_and_then_fails() {
        let mut server = ScramServer::new(ScramMechanism::Sha512);
        let first = server.client_first(b"n,,n=nobody,r=xyz", |_| None).unwrap();
        let first = String::from_utf8(first).unwrap();
        assert!(
            first.contains(",s=") && first.ends_with(",i=8192"),
            "{first}"
        );
        let last = client_final(ScramMechanism::Sha512, "guess", "n=nobody,r=xyz", &first);
        assert_eq!(
            server.client_final(last.as_bytes()),
            Err(ScramError::InvalidProof)
        );
    }

    #[test]
    fn malformed_and_unsupported_first_messages_are_refused() {
        for bad in [
            &b""[..],
            b"n,,",
            b"n,,n=,r=x",
            b"n,,n=a",
            b"x,,n=a,r=b",
            b"n,,n=a=zz,r=b",
            b"\xff\xfe",
        ] {
            let mut server = ScramServer::new(ScramMechanism::Sha256);
            assert!(
                matches!(
                    server.client_first(bad, |_| None),
                    Err(ScramError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
        let mut server = ScramServer::new(ScramMechanism::Sha256);
        assert_eq!(
            server.client_first(b"p=tls-unique,,n=a,r=b", |_| None),
            Err(ScramError::ChannelBinding)
        );
        let mut server = ScramServer::new(ScramMechanism::Sha256);
        assert_eq!(
            server.client_first(b"n,,n=a,r=b,tokenauth=true", |_| None),
            Err(ScramError::Extension("tokenauth".into()))
        );
    }

    #[test]
    fn a_final_message_with_another_nonce_is_refused() {
        let credential =
            ScramCredential::from_password(ScramMechanism::Sha256, b"pw", vec![1; 16], 4096);
        let mut server = ScramServer::new(ScramMechanism::Sha256);
        server
            .client_first(b"n,,n=a,r=nonce", |_| Some(credential.clone()))
            .unwrap();
        assert_eq!(
            server.client_final(b"c=biws,r=othernonce,p=AAAA"),
            Err(ScramError::Nonce)
        );
    }

    #[test]
    fn initial_credentials_parse_like_kafka_storage_add_scram() {
        let c =
            InitialCredential::parse("SCRAM-SHA-256=[name=admin,password=admin-secret]").unwrap();
        assert_eq!(
            (c.user.as_str(), c.mechanism, c.credential.iterations),
            ("admin", ScramMechanism::Sha256, DEFAULT_ITERATIONS)
        );
        assert!(c
            .credential
            .verify_password(ScramMechanism::Sha256, b"admin-secret"));
        let c = InitialCredential::parse(
            r#"SCRAM-SHA-512=[name=alice,iterations=4096,password="a,b]c"]"#,
        )
        .unwrap();
        assert_eq!(c.credential.iterations, 4096);
        assert!(c
            .credential
            .verify_password(ScramMechanism::Sha512, b"a,b]c"));
        let salted = salted_password(ScramMechanism::Sha256, b"pw", b"salt", 4096);
        let c = InitialCredential::parse(&format!(
            "SCRAM-SHA-256=[name=bob,salt=\"{}\",saltedpassword=\"{}\",iterations=4096]",
            BASE64.encode(b"salt"),
            BASE64.encode(&salted)
        ))
        .unwrap();
        assert!(c.credential.verify_password(ScramMechanism::Sha256, b"pw"));
        for bad in [
            "SCRAM-SHA-1=[name=a,password=b]",
            "SCRAM-SHA-256=name=a,password=b",
            "SCRAM-SHA-256=[password=b]",
            "SCRAM-SHA-256=[name=a]",
            "SCRAM-SHA-256=[name=a,password=b,iterations=10]",
            "SCRAM-SHA-256=[name=a,password=b,colour=red]",
            "SCRAM-SHA-256=[name=a,password=\"b]",
        ] {
            assert!(InitialCredential::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn user_names_are_unescaped() {
        assert_eq!(decode_saslname("a=2Cb=3Dc").as_deref(), Some("a,b=c"));
        assert_eq!(decode_saslname("a=2"), None);
        assert_eq!(decode_saslname("plain").as_deref(), Some("plain"));
    }

    #[test]
    fn plain_passwords_verify_against_the_stored_credential() {
        let credential =
            ScramCredential::from_password(ScramMechanism::Sha512, b"pw", vec![7; 16], 4096);
        assert!(credential.verify_password(ScramMechanism::Sha512, b"pw"));
        assert!(!credential.verify_password(ScramMechanism::Sha512, b"pW"));
        let json = serde_json::to_string(&credential).unwrap();
        assert!(!json.contains("pw"), "{json}");
        assert_eq!(
            serde_json::from_str::<ScramCredential>(&json).unwrap(),
            credential
        );
    }
}
