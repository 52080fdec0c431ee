//! `[kafka.tls]` and `[kafka.sasl]`: how tally reaches the brokers.
//!
//! Files and secrets stay references here; the Kafka client loads them when
//! it is built, so `tally check` can print these settings without leaking.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::ConfigError;
use super::killbill::{SecretRef, secret};
use super::settings::{TlsFiles, tls_files};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKafkaTls {
    // DESIGN.md's short names (`ca`, `cert`, `key`) are accepted too; the
    // `_file` names match the HTTP and AMQP sinks.
    #[serde(alias = "ca")]
    pub ca_file: Option<String>,
    #[serde(alias = "cert")]
    pub cert_file: Option<String>,
    #[serde(alias = "key")]
    pub key_file: Option<String>,
    pub server_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKafkaSasl {
    pub mechanism: String,
    pub username: String,
    pub password: Option<serde::de::IgnoredAny>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KafkaTlsSettings {
    /// PEM bundle of the CAs to trust; the built-in Mozilla roots when absent.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain and its private key, for mutual TLS.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Name to verify the brokers' certificates against instead of the host
    /// each broker is reached under.
    pub server_name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The name on the wire (SaslHandshake) and in the config.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct KafkaSaslSettings {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: SecretRef,
}

pub(super) fn validate_tls(raw: RawKafkaTls) -> Result<KafkaTlsSettings, ConfigError> {
    const K: &str = "kafka.tls";
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
    let server_name = match raw.server_name {
        Some(n) if rustls::pki_types::ServerName::try_from(n.as_str()).is_err() => {
            return Err(ConfigError::invalid(
                format!("{K}.server_name"),
                format!("\"{n}\" is not a DNS name or IP address"),
            ));
        }
        other => other,
    };
    Ok(KafkaTlsSettings {
        ca_file,
        cert_file,
        key_file,
        server_name,
    })
}

pub(super) fn validate_sasl(raw: RawKafkaSasl) -> Result<KafkaSaslSettings, ConfigError> {
    const K: &str = "kafka.sasl";
    let mechanism = match raw.mechanism.to_ascii_uppercase().as_str() {
        "PLAIN" => SaslMechanism::Plain,
        "SCRAM-SHA-256" => SaslMechanism::ScramSha256,
        "SCRAM-SHA-512" => SaslMechanism::ScramSha512,
        other => {
            return Err(ConfigError::invalid(
                format!("{K}.mechanism"),
                format!("\"{other}\" is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
            ));
        }
    };
    if raw.username.is_empty() {
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
    Ok(KafkaSaslSettings {
        mechanism,
        username: raw.username,
        password,
    })
}

#[cfg(test)]
mod tests {
    use super::super::Settings;

    const BASE: &str = r#"
[kafka]
brokers = ["b:9093"]
[kafka.tls]
ca_file = "/etc/tally/ca.pem"
cert_file = "/etc/tally/client.pem"
key_file = "/etc/tally/client.key"
server_name = "kafka.internal"
[kafka.sasl]
mechanism = "SCRAM-SHA-512"
username = "tally"
password_env = "KAFKA_PASSWORD"
[store]
path = "/tmp/s"
[[routes]]
name = "r"
topics = ["t"]
format = "json"
dedupe = "/id"
sink = "file"
[sinks.file]
path = "/tmp/out.jsonl"
"#;

    fn load(text: &str) -> Result<Settings, String> {
        Settings::from_toml(text, std::path::Path::new("t.toml"), None).map_err(|e| e.to_string())
    }

    #[test]
    fn full_security_config_parses() {
        let s = load(BASE).unwrap();
        let tls = s.kafka.tls.unwrap();
        assert_eq!(tls.server_name.as_deref(), Some("kafka.internal"));
        let sasl = s.kafka.sasl.unwrap();
        assert_eq!(sasl.mechanism.name(), "SCRAM-SHA-512");
    }

    #[test]
    fn design_short_names_are_accepted() {
        let short = BASE
            .replace("ca_file =", "ca =")
            .replace("cert_file =", "cert =")
            .replace("key_file =", "key =");
        let tls = load(&short).unwrap().kafka.tls.unwrap();
        assert!(tls.ca_file.is_some() && tls.cert_file.is_some() && tls.key_file.is_some());
    }

    #[test]
    fn shipped_example_parses() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/examples/kafka-tls.toml");
        let s = Settings::load(&path).unwrap();
        assert!(s.kafka.tls.unwrap().cert_file.is_some());
        assert_eq!(s.kafka.sasl.unwrap().mechanism.name(), "SCRAM-SHA-512");
    }

    #[test]
    fn mistakes_are_named() {
        let err = load(&BASE.replace("password_env = \"KAFKA_PASSWORD\"", "password = \"x\""))
            .unwrap_err();
        assert!(
            err.contains("kafka.sasl.password") && err.contains("never"),
            "{err}"
        );
        let err = load(&BASE.replace("SCRAM-SHA-512", "GSSAPI")).unwrap_err();
        assert!(err.contains("kafka.sasl.mechanism"), "{err}");
        let err = load(&BASE.replace("key_file = \"/etc/tally/client.key\"\n", "")).unwrap_err();
        assert!(err.contains("kafka.tls.cert_file"), "{err}");
        let err = load(&BASE.replace("kafka.internal", "not a name!")).unwrap_err();
        assert!(err.contains("kafka.tls.server_name"), "{err}");
    }
}
