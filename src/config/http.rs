//! `[sinks.http]`: validated settings for the HTTP POST sink.
//!
//! Plain `headers` are for non-secret values; a secret header value is only
//! given by reference (`headers_env` / `headers_file`), read when the sink
//! starts, and never printed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::error::ConfigError;
use super::killbill::SecretRef;
use super::raw::RawHttpSink;
use super::settings::{TlsFiles, duration_or, human_duration, non_empty_path, tls_files};

#[derive(Debug, Clone, Serialize)]
pub struct HttpSinkSettings {
    /// Where each record is POSTed.
    pub url: url::Url,
    /// Send `{topic, notifiedAt, event}` instead of the bare event.
    pub envelope: bool,
    /// Header name → value, sent as written.
    pub headers: BTreeMap<String, String>,
    /// Header name → where its secret value comes from.
    pub secret_headers: BTreeMap<String, SecretRef>,
    /// PEM bundle of the CAs to trust for HTTPS (replaces the built-in Mozilla roots).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) and key, for mutual TLS.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    #[serde(with = "human_duration")]
    pub connect_timeout: Duration,
    /// Per request, from sending to the full response.
    #[serde(with = "human_duration")]
    pub request_timeout: Duration,
    /// Requests in flight at once, across all partitions and routes.
    pub max_in_flight: usize,
}

/// Headers tally sets itself, or that only make sense per request.
const RESERVED: [&str; 5] = [
    "idempotency-key",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
];
/// Credentials: by reference only.
const SECRET_NAMES: [&str; 5] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "api-key",
];

pub(super) fn validate(raw: RawHttpSink) -> Result<HttpSinkSettings, ConfigError> {
    const K: &str = "sinks.http";
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
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::invalid(
            format!("{K}.url"),
            "must not carry credentials; send them as a header with headers_env or headers_file",
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut check_name = |table: &str, name: &str| -> Result<(), ConfigError> {
        let lower = name.to_ascii_lowercase();
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(ConfigError::invalid(
                format!("{K}.{table}.\"{name}\""),
                "is not a valid HTTP header name",
            ));
        }
        if RESERVED.contains(&lower.as_str()) {
            return Err(ConfigError::invalid(
                format!("{K}.{table}.\"{name}\""),
                "is set by tally itself",
            ));
        }
        if !seen.insert(lower) {
            return Err(ConfigError::invalid(
                format!("{K}.{table}.\"{name}\""),
                "is configured more than once",
            ));
        }
        Ok(())
    };
    for (name, value) in &raw.headers {
        check_name("headers", name)?;
        if SECRET_NAMES.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(ConfigError::invalid(
                format!("{K}.headers.\"{name}\""),
                "carries a credential; give it by reference in [sinks.http.headers_env] or [sinks.http.headers_file]",
            ));
        }
        if reqwest::header::HeaderValue::from_str(value).is_err() {
            return Err(ConfigError::invalid(
                format!("{K}.headers.\"{name}\""),
                "is not a valid HTTP header value (visible ASCII only)",
            ));
        }
    }
    let mut secret_headers = BTreeMap::new();
    for (name, var) in raw.headers_env {
        check_name("headers_env", &name)?;
        if var.trim().is_empty() {
            return Err(ConfigError::invalid(
                format!("{K}.headers_env.\"{name}\""),
                "must name an environment variable",
            ));
        }
        secret_headers.insert(name, SecretRef::Env(var));
    }
    for (name, path) in raw.headers_file {
        check_name("headers_file", &name)?;
        let path = non_empty_path(&format!("{K}.headers_file.\"{name}\""), &path)?;
        secret_headers.insert(name, SecretRef::File(path));
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
    Ok(HttpSinkSettings {
        url,
        envelope: raw.envelope.unwrap_or(false),
        headers: raw.headers,
        secret_headers,
        ca_file,
        cert_file,
        key_file,
        connect_timeout: duration_or(&format!("{K}.connect_timeout"), raw.connect_timeout, "5s")?,
        request_timeout: duration_or(&format!("{K}.request_timeout"), raw.request_timeout, "10s")?,
        max_in_flight,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{ConfigError, Settings};
    use super::*;

    const BASE: &str = r#"
[kafka]
brokers = ["127.0.0.1:9092"]
[store]
path = "./state"
[[routes]]
name = "events"
topics = ["t"]
format = "json"
dedupe = "/id"
sink = "http"
[sinks.http]
url = "https://hooks.example/in"
"#;

    fn load(text: &str) -> Result<Settings, ConfigError> {
        Settings::from_toml(text, Path::new("t.toml"), None)
    }

    #[test]
    fn defaults_and_secret_headers_by_reference() {
        let text = format!(
            "{BASE}envelope = true\n[sinks.http.headers]\n\"X-Source\" = \"tally\"\n[sinks.http.headers_env]\nAuthorization = \"HOOK_AUTH\"\n"
        );
        let s = load(&text).unwrap();
        let h = s.sinks.http.as_ref().unwrap();
        assert!(h.envelope);
        assert_eq!(h.max_in_flight, 64);
        assert_eq!(h.request_timeout, Duration::from_secs(10));
        assert_eq!(
            h.secret_headers["Authorization"],
            SecretRef::Env("HOOK_AUTH".into())
        );
        let printed = toml::to_string_pretty(&s).unwrap();
        assert!(printed.contains("HOOK_AUTH"), "{printed}");
    }

    #[test]
    fn refuses_literal_credentials_and_reserved_headers() {
        let text = format!("{BASE}[sinks.http.headers]\nAuthorization = \"Bearer s3cret\"\n");
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("headers_env"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        let text = format!("{BASE}[sinks.http.headers]\n\"Idempotency-Key\" = \"x\"\n");
        assert!(
            load(&text)
                .unwrap_err()
                .to_string()
                .contains("tally itself")
        );
        let text = BASE.replace("https://hooks.example", "https://u:p@hooks.example");
        assert!(load(&text).unwrap_err().to_string().contains("credentials"));
        let text = format!("{BASE}cert_file = \"/c.pem\"\n");
        assert!(load(&text).unwrap_err().to_string().contains("key_file"));
        let text = format!(
            "{BASE}[sinks.http.headers]\nx-a = \"1\"\n[sinks.http.headers_env]\nX-A = \"V\"\n"
        );
        assert!(
            load(&text)
                .unwrap_err()
                .to_string()
                .contains("more than once")
        );
    }
}
