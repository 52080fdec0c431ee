//! Turns `[kafka.tls]` / `[kafka.sasl]` into a ready transport and login:
//! PEM files read, secrets resolved, once at startup, so a bad file or a
//! missing variable stops `tally` before it connects anywhere.

use rustls::pki_types::ServerName;
use std::sync::Arc;

use super::sasl::SaslCredentials;
use super::tls::TlsTransport;
use crate::config::{KafkaSaslSettings, KafkaTlsSettings};
use crate::sink::secrets::{self, SecretError};
use crate::tls::TlsError;

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("kafka.tls: {0}")]
    Tls(#[from] TlsError),
    #[error("kafka.sasl: {0}")]
    Secret(#[from] SecretError),
}

pub fn load_security(
    tls: Option<&KafkaTlsSettings>,
    sasl: Option<&KafkaSaslSettings>,
) -> Result<(Option<TlsTransport>, Option<SaslCredentials>), SecurityError> {
    let tls = match tls {
        None => None,
        Some(t) => {
            let identity = t.cert_file.as_deref().zip(t.key_file.as_deref());
            let config = crate::tls::client_config(t.ca_file.as_deref(), identity)?;
            // Validated as a name by the config loader.
            let server_name = t
                .server_name
                .as_ref()
                .and_then(|n| ServerName::try_from(n.clone()).ok());
            Some(TlsTransport {
                config: Arc::new(config),
                server_name,
            })
        }
    };
    let sasl = match sasl {
        None => None,
        Some(s) => Some(SaslCredentials {
            mechanism: s.mechanism,
            username: s.username.clone(),
            password: secrets::resolve("kafka.sasl.password", &s.password)?,
        }),
    };
    Ok((tls, sasl))
}
