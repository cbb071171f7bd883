//! SASL authentication of one connection: the mechanism chosen by SaslHandshake, then the
//! tokens of SaslAuthenticate (or, after a v0 handshake, raw tokens) until the client is
//! authenticated or refused.

use super::scram::{ScramCredential, ScramError, ScramMechanism, ScramServer};
use super::Principal;

/// A SASL mechanism the broker can offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    Scram(ScramMechanism),
}

impl SaslMechanism {
    pub const ALL: [SaslMechanism; 3] = [
        SaslMechanism::Plain,
        SaslMechanism::Scram(ScramMechanism::Sha256),
        SaslMechanism::Scram(ScramMechanism::Sha512),
    ];

    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::Scram(m) => m.name(),
        }
    }

    pub fn from_name(name: &str) -> Option<SaslMechanism> {
        SaslMechanism::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// How this broker authenticates to the others on a SASL inter-broker listener
/// (`sasl.mechanism.inter.broker.protocol` and the listener's JAAS `username`/`password`).
#[derive(Clone, PartialEq, Eq)]
pub struct InterBrokerSasl {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for InterBrokerSasl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InterBrokerSasl")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Whether `key` is a listener's JAAS setting, `listener.name.<listener>.<mechanism>.sasl.jaas.config`
/// (listener and mechanism in lower case, as Kafka writes them).
pub fn is_listener_jaas_key(key: &str) -> bool {
    key.strip_prefix("listener.name.")
        .and_then(|rest| rest.strip_suffix(".sasl.jaas.config"))
        .and_then(|middle| middle.split_once('.'))
        .is_some_and(|(listener, mechanism)| {
            !listener.is_empty()
                && SaslMechanism::ALL
                    .iter()
                    .any(|m| m.name().to_lowercase() == mechanism)
        })
}

/// The JAAS key of a listener and mechanism.
pub fn listener_jaas_key(listener: &str, mechanism: SaslMechanism) -> String {
    format!(
        "listener.name.{}.{}.sasl.jaas.config",
        listener.to_lowercase(),
        mechanism.name().to_lowercase()
    )
}

/// The `username` and `password` options of a JAAS login module configuration, e.g.
/// `org.apache.kafka.common.security.scram.ScramLoginModule required username="broker"
/// password="secret";` (values in double quotes, `\"` and `\\` escaped).
pub fn jaas_credentials(text: &str) -> Result<(String, String), String> {
    let option = |name: &str| -> Result<String, String> {
        let mut rest = text;
        while let Some(at) = rest.find(name) {
            let before = rest[..at].chars().last();
            let after = rest[at + name.len()..].trim_start();
            rest = &rest[at + name.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let Some(value) = after.strip_prefix('=') else {
                continue;
            };
            let value = value.trim_start();
            let quoted = value
                .strip_prefix('"')
                .ok_or_else(|| format!("the {name} option's value is not in double quotes"))?;
            let mut out = String::new();
            let mut chars = quoted.chars();
            while let Some(c) = chars.next() {
                match c {
                    '"' => return Ok(out),
                    '\\' => out.push(chars.next().ok_or("an unfinished escape")?),
                    c => out.push(c),
                }
            }
            return Err(format!("the {name} option's value has no closing quote"));
        }
        Err(format!("no {name} option"))
    };
    Ok((option("username")?, option("password")?))
}

/// Finds the stored SCRAM credential of a user for a mechanism.
pub trait CredentialLookup {
    fn credential(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential>;
}

/// What a SASL token led to.
#[derive(Debug, PartialEq, Eq)]
pub enum SaslStep {
    /// Send this token and wait for the client's next one.
    Challenge(Vec<u8>),
    /// Authenticated: send this (possibly empty) last token.
    Authenticated {
        token: Vec<u8>,
        principal: Principal,
    },
    /// Refused: the client gets an authentication failure and the connection is closed.
    Failed(String),
}

/// The SASL state of one connection on a SASL listener.
#[derive(Debug, Default)]
pub struct SaslSession {
    state: State,
}

#[derive(Debug, Default)]
enum State {
    #[default]
    AwaitingHandshake,
    /// A mechanism was chosen; `raw` after a v0 handshake, whose tokens come without
    /// SaslAuthenticate framing.
    Mechanism {
        mechanism: SaslMechanism,
        raw: bool,
        scram: Option<ScramServer>,
    },
    Authenticated(Principal),
    Failed,
}

impl SaslSession {
    /// Records the mechanism of a SaslHandshake; `Err` when it is not enabled or the session
    /// is not waiting for a handshake.
    pub fn handshake(&mut self, mechanism: SaslMechanism, version: i16) -> Result<(), String> {
        if !matches!(self.state, State::AwaitingHandshake) {
            self.state = State::Failed;
            return Err("SaslHandshake is allowed only once, before authentication".into());
        }
        self.state = State::Mechanism {
            mechanism,
            raw: version == 0,
            scram: match mechanism {
                SaslMechanism::Plain => None,
                SaslMechanism::Scram(m) => Some(ScramServer::new(m)),
            },
        };
        Ok(())
    }

    /// A handshake was refused (unknown mechanism): the connection is closed once answered.
    pub fn refuse(&mut self) {
        self.state = State::Failed;
    }

    /// Whether the next frame is a raw SASL token rather than a Kafka request (v0 handshake).
    pub fn expects_raw_token(&self) -> bool {
        matches!(self.state, State::Mechanism { raw: true, .. })
    }

    pub fn principal(&self) -> Option<&Principal> {
        match &self.state {
            State::Authenticated(principal) => Some(principal),
            _ => None,
        }
    }

    pub fn is_failed(&self) -> bool {
        matches!(self.state, State::Failed)
    }

    pub fn is_authenticating(&self) -> bool {
        matches!(self.state, State::Mechanism { .. })
    }

    /// Takes the next token of the client. PLAIN checks the password against the user's SCRAM
    /// credentials (derivation is CPU work: call this off the async workers).
    pub fn step(&mut self, token: &[u8], credentials: &dyn CredentialLookup) -> SaslStep {
        let step = match &mut self.state {
            State::Mechanism {
                mechanism: SaslMechanism::Plain,
                ..
            } => plain(token, credentials),
            State::Mechanism {
                scram: Some(scram), ..
            } => scram_step(scram, token, credentials),
            _ => SaslStep::Failed("no SASL mechanism was chosen with SaslHandshake".into()),
        };
        match &step {
            SaslStep::Challenge(_) => {}
            SaslStep::Authenticated { principal, .. } => {
                self.state = State::Authenticated(principal.clone());
            }
            SaslStep::Failed(_) => self.state = State::Failed,
        }
        step
    }
}

fn scram_step(
    scram: &mut ScramServer,
    token: &[u8],
    credentials: &dyn CredentialLookup,
) -> SaslStep {
    let mechanism = scram.mechanism();
    let first = token.starts_with(b"n,") || token.starts_with(b"y,") || token.starts_with(b"p=");
    let outcome = if first {
        scram
            .client_first(token, |user| credentials.credential(user, mechanism))
            .map(SaslStep::Challenge)
    } else {
        scram
            .client_final(token)
            .map(|(token, user)| SaslStep::Authenticated {
                token,
                principal: Principal::user(user),
            })
    };
    outcome.unwrap_or_else(|e: ScramError| SaslStep::Failed(format!("{mechanism}: {e}")))
}

/// SASL/PLAIN (RFC 4616): `authzid NUL authcid NUL password`, checked against the SCRAM
/// credentials of the user (SHA-512 first when the user has both).
fn plain(token: &[u8], credentials: &dyn CredentialLookup) -> SaslStep {
    let mut parts = token.split(|b| *b == 0);
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return SaslStep::Failed("PLAIN: the token is not authzid NUL user NUL password".into());
    };
    let Ok(user) = std::str::from_utf8(user) else {
        return SaslStep::Failed("PLAIN: the user name is not UTF-8".into());
    };
    if user.is_empty() {
        return SaslStep::Failed("PLAIN: empty user name".into());
    }
    if !authzid.is_empty() && authzid != user.as_bytes() {
        return SaslStep::Failed("PLAIN: an authorization id other than the user".into());
    }
    let verified = [ScramMechanism::Sha512, ScramMechanism::Sha256]
        .into_iter()
        .find_map(|m| credentials.credential(user, m).map(|c| (m, c)))
        .is_some_and(|(m, credential)| credential.verify_password(m, password));
    if verified {
        SaslStep::Authenticated {
            token: Vec::new(),
            principal: Principal::user(user),
        }
    } else {
        SaslStep::Failed(format!("PLAIN: invalid credentials for user {user}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jaas_configs_give_username_and_password_and_keys_name_listener_and_mechanism() {
        let text = r#"org.apache.kafka.common.security.scram.ScramLoginModule required
            username="broker" password="se\"cret";"#;
        assert_eq!(
            jaas_credentials(text),
            Ok(("broker".to_string(), "se\"cret".to_string()))
        );
        assert!(jaas_credentials("x required username=\"a\";")
            .unwrap_err()
            .contains("password"));
        assert!(jaas_credentials("x required username=a password=\"b\";")
            .unwrap_err()
            .contains("double quotes"));
        assert!(is_listener_jaas_key(
            "listener.name.internal.scram-sha-512.sasl.jaas.config"
        ));
        assert!(!is_listener_jaas_key(
            "listener.name.internal.gssapi.sasl.jaas.config"
        ));
        assert!(!is_listener_jaas_key(
            "listener.name..plain.sasl.jaas.config"
        ));
        assert_eq!(
            listener_jaas_key("INTERNAL", SaslMechanism::Plain),
            "listener.name.internal.plain.sasl.jaas.config"
        );
        let sasl = InterBrokerSasl {
            mechanism: SaslMechanism::Plain,
            username: "broker".into(),
            password: "secret".into(),
        };
        assert!(!format!("{sasl:?}").contains("secret"));
    }
    use std::collections::BTreeMap;

    struct Store(BTreeMap<(String, ScramMechanism), ScramCredential>);

    impl CredentialLookup for Store {
        fn credential(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
            self.0.get(&(user.to_string(), mechanism)).cloned()
        }
    }

    fn store() -> Store {
        let credential =
            ScramCredential::from_password(ScramMechanism::Sha256, b"secret", vec![3; 16], 4096);
        Store(BTreeMap::from([(
            ("alice".to_string(), ScramMechanism::Sha256),
            credential,
        )]))
    }

    #[test]
    fn plain_authenticates_against_the_scram_credential() {
        let mut session = SaslSession::default();
        session.handshake(SaslMechanism::Plain, 1).unwrap();
        assert!(!session.expects_raw_token());
        let step = session.step(b"\0alice\0secret", &store());
        assert_eq!(
            step,
            SaslStep::Authenticated {
                token: Vec::new(),
                principal: Principal::user("alice")
            }
        );
        assert_eq!(session.principal(), Some(&Principal::user("alice")));
    }

    #[test]
    fn plain_refuses_a_wrong_password_an_unknown_user_and_garbage() {
        for token in [
            &b"\0alice\0Secret"[..],
            b"\0bob\0secret",
            b"alice",
            b"\0\0",
            b"mallory\0alice\0secret",
        ] {
            let mut session = SaslSession::default();
            session.handshake(SaslMechanism::Plain, 0).unwrap();
            assert!(session.expects_raw_token());
            assert!(
                matches!(session.step(token, &store()), SaslStep::Failed(_)),
                "{token:?}"
            );
            assert!(session.is_failed());
        }
    }

    #[test]
    fn a_second_handshake_and_a_token_without_handshake_fail() {
        let mut session = SaslSession::default();
        assert!(matches!(
            session.step(b"\0alice\0secret", &store()),
            SaslStep::Failed(_)
        ));
        let mut session = SaslSession::default();
        session.handshake(SaslMechanism::Plain, 1).unwrap();
        assert!(session.handshake(SaslMechanism::Plain, 1).is_err());
        assert!(session.is_failed());
    }
}
