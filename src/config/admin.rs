//! `[admin]`: the optional admin HTTP server (metrics, health, state API).
//!
//! Kept in its own file so the sinks section of `settings.rs` can change
//! without touching this one.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::ConfigError;
use super::settings::{non_empty_path, tls_files};

/// Where the admin server listens when `[admin]` gives no `listen`.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9464";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<String>,
    pub token_env: Option<String>,
    pub token_file: Option<String>,
    pub tls: Option<RawAdminTls>,
}

/// `[admin.tls]`: the server's identity, optional client-certificate
/// checking, and what the CLI (which reads the same file) trusts and shows.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdminTls {
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub client_ca_file: Option<String>,
    pub ca_file: Option<String>,
    pub client_cert_file: Option<String>,
    pub client_key_file: Option<String>,
    pub server_name: Option<String>,
}

/// Validated `[admin]`. The token is only a reference (env var or file),
/// resolved when the server starts, so printing settings never leaks it.
#[derive(Debug, Clone, Serialize)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    pub tls: Option<AdminTls>,
}

/// Validated `[admin.tls]`. Files are read when the server (or the CLI's
/// client) starts, through `crate::tls`, so a bad file fails there, named.
#[derive(Debug, Clone, Serialize)]
pub struct AdminTls {
    /// The server's certificate chain and key.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// When set, every client must present a certificate issued by it.
    pub client_ca_file: Option<PathBuf>,
    /// What the CLI trusts; without it the CLI trusts `cert_file` itself
    /// (a self-signed admin certificate).
    pub ca_file: Option<PathBuf>,
    /// The CLI's certificate and key, for a server with `client_ca_file`.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// The name the CLI checks the certificate against; default: the
    /// listen IP address (the certificate needs it as an IP SAN).
    pub server_name: Option<String>,
}

pub(super) fn validate_admin(raw: Option<RawAdmin>) -> Result<Option<AdminSettings>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let text = raw.listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN);
    let listen: SocketAddr = text.parse().map_err(|e| {
        ConfigError::invalid(
            "admin.listen",
            format!("\"{text}\" is not an address ({e}); write e.g. \"{DEFAULT_ADMIN_LISTEN}\""),
        )
    })?;
    if raw.token_env.is_some() && raw.token_file.is_some() {
        return Err(ConfigError::invalid(
            "admin.token_env",
            "set either token_env or token_file, not both",
        ));
    }
    if raw
        .token_env
        .as_deref()
        .is_some_and(|v| v.trim().is_empty())
    {
        return Err(ConfigError::invalid("admin.token_env", "must not be empty"));
    }
    if raw
        .token_file
        .as_deref()
        .is_some_and(|v| v.trim().is_empty())
    {
        return Err(ConfigError::invalid(
            "admin.token_file",
            "must not be empty",
        ));
    }
    let tls = raw.tls.map(validate_tls).transpose()?;
    Ok(Some(AdminSettings {
        listen,
        token_env: raw.token_env,
        token_file: raw.token_file.map(PathBuf::from),
        tls,
    }))
}

fn validate_tls(raw: RawAdminTls) -> Result<AdminTls, ConfigError> {
    let server = tls_files(
        "admin.tls",
        raw.ca_file.as_deref(),
        raw.cert_file.as_deref(),
        raw.key_file.as_deref(),
    )?;
    let (Some(cert_file), Some(key_file)) = (server.cert_file, server.key_file) else {
        return Err(ConfigError::invalid(
            "admin.tls.cert_file",
            "[admin.tls] needs the server's cert_file and key_file (PEM); remove the table to serve plain HTTP",
        ));
    };
    let path = |field: &str, p: Option<String>| {
        p.map(|p| non_empty_path(&format!("admin.tls.{field}"), &p))
            .transpose()
    };
    let client_cert_file = path("client_cert_file", raw.client_cert_file)?;
    let client_key_file = path("client_key_file", raw.client_key_file)?;
    if client_cert_file.is_some() != client_key_file.is_some() {
        return Err(ConfigError::invalid(
            "admin.tls.client_cert_file",
            "the CLI's client certificate needs both client_cert_file and client_key_file",
        ));
    }
    if raw
        .server_name
        .as_deref()
        .is_some_and(|n| rustls::pki_types::ServerName::try_from(n).is_err())
    {
        return Err(ConfigError::invalid(
            "admin.tls.server_name",
            "is not a DNS name or IP address",
        ));
    }
    Ok(AdminTls {
        cert_file,
        key_file,
        client_ca_file: path("client_ca_file", raw.client_ca_file)?,
        ca_file: server.ca_file,
        client_cert_file,
        client_key_file,
        server_name: raw.server_name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_table_listens_on_loopback() {
        let a = validate_admin(Some(RawAdmin {
            listen: None,
            token_env: None,
            token_file: None,
            tls: None,
        }))
        .unwrap()
        .unwrap();
        assert_eq!(a.listen.to_string(), DEFAULT_ADMIN_LISTEN);
        assert!(validate_admin(None).unwrap().is_none());
    }

    #[test]
    fn bad_listen_and_two_token_sources_are_refused() {
        let bad = validate_admin(Some(RawAdmin {
            listen: Some("localhost".into()),
            token_env: None,
            token_file: None,
            tls: None,
        }));
        assert!(bad.unwrap_err().to_string().contains("admin.listen"));
        let both = validate_admin(Some(RawAdmin {
            listen: None,
            token_env: Some("A".into()),
            token_file: Some("/f".into()),
            tls: None,
        }));
        assert!(both.is_err());
    }

    fn with_tls(tls: RawAdminTls) -> Result<Option<AdminSettings>, ConfigError> {
        validate_admin(Some(RawAdmin {
            listen: None,
            token_env: None,
            token_file: None,
            tls: Some(tls),
        }))
    }

    fn raw_tls() -> RawAdminTls {
        RawAdminTls {
            cert_file: Some("/etc/tally/admin.pem".into()),
            key_file: Some("/etc/tally/admin.key".into()),
            client_ca_file: None,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            server_name: None,
        }
    }

    #[test]
    fn tls_needs_the_server_identity_and_names_the_key() {
        let ok = with_tls(raw_tls()).unwrap().unwrap();
        let tls = ok.tls.unwrap();
        assert_eq!(tls.cert_file, PathBuf::from("/etc/tally/admin.pem"));
        assert!(tls.client_ca_file.is_none());

        let no_key = with_tls(RawAdminTls {
            key_file: None,
            ..raw_tls()
        });
        assert!(
            no_key
                .unwrap_err()
                .to_string()
                .contains("admin.tls.cert_file")
        );
        let neither = with_tls(RawAdminTls {
            cert_file: None,
            key_file: None,
            ..raw_tls()
        });
        assert!(neither.unwrap_err().to_string().contains("key_file"));
        let half_client = with_tls(RawAdminTls {
            client_cert_file: Some("/c.pem".into()),
            ..raw_tls()
        });
        assert!(
            half_client
                .unwrap_err()
                .to_string()
                .contains("admin.tls.client_cert_file")
        );
        let empty_ca = with_tls(RawAdminTls {
            client_ca_file: Some(" ".into()),
            ..raw_tls()
        });
        assert!(
            empty_ca
                .unwrap_err()
                .to_string()
                .contains("admin.tls.client_ca_file")
        );
        let bad_name = with_tls(RawAdminTls {
            server_name: Some("not a name!".into()),
            ..raw_tls()
        });
        assert!(
            bad_name
                .unwrap_err()
                .to_string()
                .contains("admin.tls.server_name")
        );
    }
}
