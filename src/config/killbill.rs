//! `[sinks.killbill]`: validated settings for the Kill Bill usage sink.
//!
//! Secrets stay references here (`SecretRef`); the sink reads them when it
//! starts, so `tally check` can print these settings without leaking one.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::error::ConfigError;
use super::raw::RawKillbillSink;
use super::settings::{TlsFiles, duration_or, human_duration, non_empty_path, tls_files};

/// Where a secret comes from. Printed as the reference, never the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

#[derive(Debug, Clone, Serialize)]
pub struct KillbillSinkSettings {
    /// Base URL, e.g. `https://killbill.internal:8443` (the `/1.0/kb/...` paths are appended).
    pub url: url::Url,
    pub username: String,
    pub password: SecretRef,
    /// `X-Killbill-CreatedBy` on every request.
    pub created_by: String,
    pub reason: Option<String>,
    pub comment: Option<String>,
    /// PEM bundle of the CAs to trust for HTTPS (replaces the built-in Mozilla roots).
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain and key (PEM), for a Kill Bill behind mutual TLS.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    #[serde(with = "human_duration")]
    pub connect_timeout: Duration,
    /// Per request (lookup or POST), from sending to the full response.
    #[serde(with = "human_duration")]
    pub request_timeout: Duration,
    /// Requests in flight at once, across all partitions and routes.
    pub max_in_flight: usize,
    /// Most `subscriptionExternalKey → subscriptionId` entries kept.
    pub lookup_cache_size: usize,
    #[serde(with = "human_duration")]
    pub lookup_cache_ttl: Duration,
    /// `tenantId` (as in the events) → credentials.
    pub tenants: BTreeMap<String, KillbillTenant>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KillbillTenant {
    pub api_key: String,
    pub api_secret: SecretRef,
}

pub(super) fn validate(raw: RawKillbillSink) -> Result<KillbillSinkSettings, ConfigError> {
    const K: &str = "sinks.killbill";
    let url = url::Url::parse(&raw.url).map_err(|e| {
        ConfigError::invalid(
            format!("{K}.url"),
            format!("\"{}\" is not a URL ({e})", raw.url),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ConfigError::invalid(
            format!("{K}.url"),
            "must be an http:// or https:// URL with a host",
        ));
    }
    if raw.username.trim().is_empty() {
        return Err(ConfigError::invalid(
            format!("{K}.username"),
            "must not be empty",
        ));
    }
    let password = secret(
        K,
        "password",
        raw.password.is_some(),
        raw.password_env,
        raw.password_file,
    )?;
    let created_by = raw.created_by.unwrap_or_else(|| "tally".to_string());
    if created_by.trim().is_empty() {
        return Err(ConfigError::invalid(
            format!("{K}.created_by"),
            "must not be empty (Kill Bill requires X-Killbill-CreatedBy)",
        ));
    }
    for (field, value) in [
        ("created_by", Some(&created_by)),
        ("reason", raw.reason.as_ref()),
        ("comment", raw.comment.as_ref()),
    ] {
        if value.is_some_and(|v| v.chars().any(|c| c.is_control())) {
            return Err(ConfigError::invalid(
                format!("{K}.{field}"),
                "is sent as an HTTP header and must not contain control characters",
            ));
        }
    }
    let TlsFiles {
        ca_file,
        cert_file,
        key_file,
    } = tls_files(
        K,
        raw.ca_file.as_deref(),
        raw.cert_file.as_deref(),
        raw.key_file.as_deref(),
    )?;
    if (cert_file.is_some() || ca_file.is_some()) && url.scheme() != "https" {
        return Err(ConfigError::invalid(
            format!("{K}.url"),
            "ca_file / cert_file are set but the URL is not https://",
        ));
    }
    let max_in_flight = raw.max_in_flight.unwrap_or(64);
    if !(1..=4096).contains(&max_in_flight) {
        return Err(ConfigError::invalid(
            format!("{K}.max_in_flight"),
            "must be between 1 and 4096",
        ));
    }
    let lookup_cache_size = raw.lookup_cache_size.unwrap_or(100_000);
    if lookup_cache_size == 0 {
        return Err(ConfigError::invalid(
            format!("{K}.lookup_cache_size"),
            "must be greater than 0",
        ));
    }
    if raw.tenants.is_empty() {
        return Err(ConfigError::invalid(
            format!("{K}.tenants"),
            "maps each tenantId of the events to its api key and secret; add at least one \
             [sinks.killbill.tenants.\"<tenantId>\"] with api_key and api_secret_env or api_secret_file",
        ));
    }
    let mut tenants = BTreeMap::new();
    for (tenant_id, t) in raw.tenants {
        let key = format!("{K}.tenants.\"{tenant_id}\"");
        if t.api_key.trim().is_empty() {
            return Err(ConfigError::invalid(
                format!("{key}.api_key"),
                "must not be empty",
            ));
        }
        let api_secret = secret(
            &key,
            "api_secret",
            t.api_secret.is_some(),
            t.api_secret_env,
            t.api_secret_file,
        )?;
        tenants.insert(
            tenant_id,
            KillbillTenant {
                api_key: t.api_key,
                api_secret,
            },
        );
    }
    Ok(KillbillSinkSettings {
        url,
        username: raw.username,
        password,
        created_by,
        reason: raw.reason,
        comment: raw.comment,
        ca_file,
        cert_file,
        key_file,
        connect_timeout: duration_or(&format!("{K}.connect_timeout"), raw.connect_timeout, "5s")?,
        request_timeout: duration_or(&format!("{K}.request_timeout"), raw.request_timeout, "10s")?,
        max_in_flight,
        lookup_cache_size,
        lookup_cache_ttl: duration_or(
            &format!("{K}.lookup_cache_ttl"),
            raw.lookup_cache_ttl,
            "1h",
        )?,
        tenants,
    })
}

/// Exactly one of `NAME_env` / `NAME_file`; a literal `NAME` is refused.
pub(super) fn secret(
    table: &str,
    name: &str,
    literal: bool,
    env: Option<String>,
    file: Option<String>,
) -> Result<SecretRef, ConfigError> {
    if literal {
        return Err(ConfigError::invalid(
            format!("{table}.{name}"),
            format!(
                "secrets are never written into the config; use {name}_env = \"VAR\" or {name}_file = \"/path\""
            ),
        ));
    }
    match (env, file) {
        (Some(var), None) if !var.trim().is_empty() => Ok(SecretRef::Env(var)),
        (None, Some(path)) => Ok(SecretRef::File(non_empty_path(
            &format!("{table}.{name}_file"),
            &path,
        )?)),
        (Some(_), Some(_)) => Err(ConfigError::invalid(
            format!("{table}.{name}_env"),
            format!("use either {name}_env or {name}_file, not both"),
        )),
        _ => Err(ConfigError::invalid(
            format!("{table}.{name}_env"),
            format!("is required (or {name}_file): the name of the variable holding the secret"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::Settings;
    use super::*;

    const BASE: &str = r#"
[kafka]
brokers = ["127.0.0.1:9092"]
[store]
path = "./state"
[[routes]]
name = "usage"
topics = ["stream.usagemetrics"]
format = "killbill-usage"
sink = "killbill"
[sinks.killbill]
url = "https://kb.example:8443/"
username = "admin"
password_env = "KB_PASSWORD"
[sinks.killbill.tenants."0d96d663-00c1-4ff7-8324-d97cc551d6b3"]
api_key = "bob"
api_secret_file = "/run/secrets/bob"
"#;

    fn load(text: &str) -> Result<Settings, ConfigError> {
        Settings::from_toml(text, Path::new("t.toml"), None)
    }

    #[test]
    fn defaults_and_references() {
        let s = load(BASE).unwrap();
        let kb = s.sinks.killbill.as_ref().unwrap();
        assert_eq!(kb.password, SecretRef::Env("KB_PASSWORD".into()));
        assert_eq!(kb.created_by, "tally");
        assert_eq!(kb.max_in_flight, 64);
        assert_eq!(kb.request_timeout, Duration::from_secs(10));
        let t = &kb.tenants["0d96d663-00c1-4ff7-8324-d97cc551d6b3"];
        assert_eq!(t.api_secret, SecretRef::File("/run/secrets/bob".into()));
        // `tally check` prints Settings: only the references appear.
        let printed = toml::to_string_pretty(&s).unwrap();
        assert!(printed.contains("KB_PASSWORD"), "{printed}");
        assert!(printed.contains("/run/secrets/bob"), "{printed}");
    }

    #[test]
    fn literal_secrets_are_refused() {
        let text = BASE.replace("password_env = \"KB_PASSWORD\"", "password = \"hunter2\"");
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("password_env"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let text = BASE.replace(
            "api_secret_file = \"/run/secrets/bob\"",
            "api_secret = \"s\"",
        );
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("api_secret"), "{err}");
    }

    #[test]
    fn secret_reference_required_once() {
        let text = BASE.replace("password_env = \"KB_PASSWORD\"\n", "");
        assert!(
            load(&text)
                .unwrap_err()
                .to_string()
                .contains("password_env")
        );
        let text = BASE.replace(
            "password_env = \"KB_PASSWORD\"",
            "password_env = \"A\"\npassword_file = \"/b\"",
        );
        assert!(load(&text).unwrap_err().to_string().contains("not both"));
    }

    #[test]
    fn route_needs_usage_format_and_url_must_be_http() {
        let text = BASE.replace(
            "format = \"killbill-usage\"",
            "format = \"json\"\ndedupe = \"/id\"",
        );
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("killbill-usage"), "{err}");
        let text = BASE.replace("https://kb.example:8443/", "ftp://kb");
        assert!(
            load(&text)
                .unwrap_err()
                .to_string()
                .contains("sinks.killbill.url")
        );
        let text = BASE.replace("[sinks.killbill]", "[sinks.killbill]\nmax_in_flight = 0");
        assert!(
            load(&text)
                .unwrap_err()
                .to_string()
                .contains("max_in_flight")
        );
    }

    #[test]
    fn client_certificate_needs_its_key_and_https() {
        let with = |extra: &str| {
            BASE.replace(
                "username = \"admin\"\n",
                &format!("username = \"admin\"\n{extra}"),
            )
        };
        let s = load(&with("cert_file = \"/c.pem\"\nkey_file = \"/c.key\"\n")).unwrap();
        let kb = s.sinks.killbill.as_ref().unwrap();
        assert_eq!(kb.cert_file.as_deref(), Some(Path::new("/c.pem")));
        let err = load(&with("cert_file = \"/c.pem\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("key_file"), "{err}");
        let plain = with("cert_file = \"/c.pem\"\nkey_file = \"/c.key\"\n")
            .replace("https://kb.example:8443/", "http://kb.example:8080/");
        let err = load(&plain).unwrap_err().to_string();
        assert!(
            err.contains("sinks.killbill.url") && err.contains("https"),
            "{err}"
        );
    }
}
