//! `[admin]`: the optional admin HTTP server (metrics, health, state API).
//!
//! Kept in its own file so the sinks section of `settings.rs` can change
//! without touching this one.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::ConfigError;

/// Where the admin server listens when `[admin]` gives no `listen`.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9464";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<String>,
    pub token_env: Option<String>,
    pub token_file: Option<String>,
}

/// Validated `[admin]`. The token is only a reference (env var or file),
/// resolved when the server starts, so printing settings never leaks it.
#[derive(Debug, Clone, Serialize)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
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
    Ok(Some(AdminSettings {
        listen,
        token_env: raw.token_env,
        token_file: raw.token_file.map(PathBuf::from),
    }))
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
        }));
        assert!(bad.unwrap_err().to_string().contains("admin.listen"));
        let both = validate_admin(Some(RawAdmin {
            listen: None,
            token_env: Some("A".into()),
            token_file: Some("/f".into()),
        }));
        assert!(both.is_err());
    }
}
