//! SASL on a fresh broker connection: SaslHandshake (v1) names the
//! mechanism, then SaslAuthenticate (v0/v1) carries the exchange — PLAIN in
//! one message, SCRAM in two round trips.
//!
//! Every failure is `KafkaError::Sasl`, which names the mechanism and the
//! user and is fatal: a wrong password does not get better by reconnecting.

use std::fmt;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;

use super::conn::BrokerConn;
use super::error::{KafkaError, Location, error_name};
use super::scram::{ScramClient, ScramHash};
use super::wire::{Reader, Writer};
use crate::config::SaslMechanism;

const HANDSHAKE_KEY: i16 = 17;
const AUTHENTICATE_KEY: i16 = 36;
/// v1 handshake: the exchange that follows uses SaslAuthenticate frames.
const HANDSHAKE_VERSIONS: (i16, i16) = (1, 1);
/// v2 is flexible (tagged fields); v0/v1 carry everything we need.
const AUTHENTICATE_VERSIONS: (i16, i16) = (0, 1);
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;

/// Who we log in as. The password is never printed (`Debug` redacts it).
#[derive(Clone)]
pub struct SaslCredentials {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: String,
}

impl fmt::Debug for SaslCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslCredentials")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

pub async fn authenticate(
    conn: &mut BrokerConn,
    creds: &SaslCredentials,
    timeout: Duration,
) -> Result<(), KafkaError> {
    let at = Location::broker(conn.addr());
    let fail = |reason: String| KafkaError::Sasl {
        at: Box::new(at.clone()),
        mechanism: creds.mechanism.name(),
        user: creds.username.clone(),
        reason,
    };
    let Some(_) = conn.versions.range(HANDSHAKE_KEY) else {
        return Err(fail(
            "the broker does not offer SASL (no SaslHandshake in ApiVersions): is this a SASL listener?".into(),
        ));
    };
    let hv = conn
        .versions
        .pick(HANDSHAKE_KEY, HANDSHAKE_VERSIONS, "SaslHandshake", &at)?;
    let av = conn.versions.pick(
        AUTHENTICATE_KEY,
        AUTHENTICATE_VERSIONS,
        "SaslAuthenticate",
        &at,
    )?;

    let mut w = Writer::new();
    w.string(creds.mechanism.name());
    let body = match conn
        .request(HANDSHAKE_KEY, hv, &w.buf, "SaslHandshake", timeout)
        .await
    {
        Ok(body) => body,
        // Some brokers (Tansu) hang up instead of answering
        // UNSUPPORTED_SASL_MECHANISM; reconnecting would only repeat it.
        Err(KafkaError::Io { source, .. })
            if matches!(
                source.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            return Err(fail(
                "the broker closed the connection on SaslHandshake: it does not offer this mechanism"
                    .into(),
            ));
        }
        Err(e) => return Err(e),
    };
    let (code, offered) = parse_handshake(body).map_err(|e| protocol(&at, e))?;
    if code == UNSUPPORTED_SASL_MECHANISM {
        return Err(fail(format!(
            "the broker does not offer this mechanism (it offers: {})",
            offered.join(", ")
        )));
    }
    if code != 0 {
        return Err(fail(format!("SaslHandshake: {}", error_name(code))));
    }

    match creds.mechanism {
        SaslMechanism::Plain => {
            // authzid NUL authcid NUL passwd (RFC 4616).
            let mut msg = Vec::with_capacity(creds.username.len() + creds.password.len() + 2);
            msg.push(0);
            msg.extend_from_slice(creds.username.as_bytes());
            msg.push(0);
            msg.extend_from_slice(creds.password.as_bytes());
            step(conn, av, &msg, timeout, &fail).await?;
        }
        SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => {
            let hash = match creds.mechanism {
                SaslMechanism::ScramSha512 => ScramHash::Sha512,
                _ => ScramHash::Sha256,
            };
            let client = ScramClient::new(hash, &creds.username, &creds.password, nonce()?);
            let server_first =
                step(conn, av, client.client_first().as_bytes(), timeout, &fail).await?;
            let server_first = String::from_utf8_lossy(&server_first).into_owned();
            let (client_final, wait) = client
                .client_final(&server_first)
                .map_err(|e| fail(e.to_string()))?;
            let server_final = step(conn, av, client_final.as_bytes(), timeout, &fail).await?;
            wait.verify(&String::from_utf8_lossy(&server_final))
                .map_err(|e| fail(e.to_string()))?;
        }
    }
    tracing::debug!(broker = conn.addr(), mechanism = creds.mechanism.name(), user = %creds.username, "SASL authenticated");
    Ok(())
}

/// One SaslAuthenticate round trip; the broker's bytes back.
async fn step(
    conn: &mut BrokerConn,
    version: i16,
    auth_bytes: &[u8],
    timeout: Duration,
    fail: &impl Fn(String) -> KafkaError,
) -> Result<Bytes, KafkaError> {
    let mut w = Writer::new();
    w.i32(auth_bytes.len() as i32).raw(auth_bytes);
    let body = conn
        .request(
            AUTHENTICATE_KEY,
            version,
            &w.buf,
            "SaslAuthenticate",
            timeout,
        )
        .await?;
    let at = Location::broker(conn.addr());
    let mut r = Reader::new(body);
    let parsed = (|| {
        let code = r.i16("error_code")?;
        let message = r.nullable_string("error_message")?;
        let bytes = r.nullable_bytes("auth_bytes")?.unwrap_or_default();
        Ok::<_, super::wire::WireError>((code, message, bytes))
    })();
    let (code, message, bytes) = parsed.map_err(|e| protocol(&at, e))?;
    if code != 0 {
        let detail = message.filter(|m| !m.is_empty()).unwrap_or_default();
        return Err(fail(format!(
            "the broker refused the login: {}{}{detail}",
            error_name(code),
            if detail.is_empty() { "" } else { ": " }
        )));
    }
    Ok(bytes)
}

fn parse_handshake(body: Bytes) -> Result<(i16, Vec<String>), super::wire::WireError> {
    let mut r = Reader::new(body);
    let code = r.i16("error_code")?;
    let n = r.array_len(2, "mechanisms")?.unwrap_or(0);
    let mut offered = Vec::with_capacity(n);
    for _ in 0..n {
        offered.push(r.string("mechanism")?);
    }
    Ok((code, offered))
}

fn protocol(at: &Location, e: super::wire::WireError) -> KafkaError {
    KafkaError::Protocol {
        at: at.clone(),
        reason: format!("SASL: {}", e.0),
    }
}

/// 18 random bytes from the ring provider, base64 (no ',' in the alphabet).
fn nonce() -> Result<String, KafkaError> {
    let mut raw = [0u8; 18];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut raw)
        .map_err(|_| KafkaError::Invalid("no secure random source for the SCRAM nonce".into()))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(raw))
}
