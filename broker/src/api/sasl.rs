//! SaslHandshake and SaslAuthenticate: a client on a SASL listener picks a mechanism, then
//! trades tokens until it is authenticated; the connection's principal is the user from then
//! on. A failed authentication is answered, then the connection is closed.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::ResponseError;
use parking_lot::Mutex;

use super::{str_bytes, RequestContext};
use crate::broker::Broker;
use crate::controller::image::MetadataImage;
use crate::security::sasl::{CredentialLookup, SaslMechanism, SaslSession, SaslStep};
use crate::security::scram::{ScramCredential, ScramMechanism};

/// The SCRAM credentials of the metadata image.
struct ImageCredentials(Arc<MetadataImage>);

impl CredentialLookup for ImageCredentials {
    fn credential(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
        self.0
            .scram_credentials
            .get(user)
            .and_then(|by_mechanism| by_mechanism.get(&mechanism))
            .cloned()
    }
}

pub(super) fn handshake(
    broker: &Broker,
    context: &RequestContext,
    request: &SaslHandshakeRequest,
    version: i16,
) -> SaslHandshakeResponse {
    let enabled = &broker.config.security.sasl_mechanisms;
    let response = SaslHandshakeResponse::default()
        .with_mechanisms(enabled.iter().map(|m| str_bytes(m.name())).collect());
    let Some(sasl) = &context.sasl else {
        return response
            .with_mechanisms(Vec::new())
            .with_error_code(ResponseError::IllegalSaslState.code());
    };
    let mut sasl = sasl.lock();
    let chosen = SaslMechanism::from_name(request.mechanism.as_str())
        .filter(|mechanism| enabled.contains(mechanism));
    let Some(mechanism) = chosen else {
        tracing::info!(
            mechanism = %request.mechanism.as_str(),
            "SASL mechanism not enabled; closing the connection"
        );
        sasl.refuse();
        return response.with_error_code(ResponseError::UnsupportedSaslMechanism.code());
    };
    match sasl.handshake(mechanism, version) {
        Ok(()) => response,
        Err(reason) => {
            tracing::info!(%reason, "SaslHandshake refused");
            response.with_error_code(ResponseError::IllegalSaslState.code())
        }
    }
}

pub(super) async fn authenticate(
    broker: &Broker,
    context: &RequestContext,
    request: SaslAuthenticateRequest,
) -> SaslAuthenticateResponse {
    let response = SaslAuthenticateResponse::default();
    let Some(sasl) = &context.sasl else {
        return response
            .with_error_code(ResponseError::IllegalSaslState.code())
            .with_error_message(Some(str_bytes(
                "SaslAuthenticate on a listener without SASL",
            )));
    };
    {
        let mut session = sasl.lock();
        if !session.is_authenticating() {
            session.refuse();
            return response
                .with_error_code(ResponseError::IllegalSaslState.code())
                .with_error_message(Some(str_bytes(
                    "SaslAuthenticate is expected only after a successful SaslHandshake",
                )));
        }
    }
    match step(broker, sasl, request.auth_bytes).await {
        Ok(token) => response.with_auth_bytes(Bytes::from(token)),
        Err(_) => response
            .with_error_code(ResponseError::SaslAuthenticationFailed.code())
            .with_error_message(Some(str_bytes(
                "Authentication failed: invalid credentials",
            ))),
    }
}

/// Feeds one client token to the connection's SASL session and returns the token to send
/// back. `Err` is a failed authentication (the session is then closed for good); the reason
/// is logged here and not told to the client.
pub(crate) async fn step(
    broker: &Broker,
    sasl: &Arc<Mutex<SaslSession>>,
    token: Bytes,
) -> Result<Vec<u8>, String> {
    let session = Arc::clone(sasl);
    let credentials = ImageCredentials(broker.image());
    // PLAIN derives the password's keys (thousands of HMAC rounds): off the async workers.
    let step = tokio::task::spawn_blocking(move || session.lock().step(&token, &credentials)).await;
    match step {
        Ok(SaslStep::Challenge(token)) => Ok(token),
        Ok(SaslStep::Authenticated { token, principal }) => {
            tracing::info!(%principal, "SASL authentication succeeded");
            Ok(token)
        }
        Ok(SaslStep::Failed(reason)) => {
            tracing::warn!(%reason, "SASL authentication failed");
            // connection.failed.authentication.delay.ms: a guesser waits for every answer.
            tokio::select! {
                () = tokio::time::sleep(broker.config.security.failed_authentication_delay) => {}
                () = broker.shutdown.cancelled() => {}
            }
            Err(reason)
        }
        Err(e) => {
            sasl.lock().refuse();
            Err(format!("SASL step did not complete: {e}"))
        }
    }
}
