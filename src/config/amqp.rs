//! `[sinks.amqp]`: validated settings for the RabbitMQ (AMQP 0-9-1) sink.
//!
//! The URL carries credentials, so it is only given by reference
//! (`url_env` / `url_file`). Each Kafka topic of an amqp route maps to one
//! exchange (`[sinks.amqp.exchanges]`); every such topic must be mapped.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::error::ConfigError;
use super::killbill::{SecretRef, secret};
use super::raw::RawAmqpSink;
use super::settings::{TlsFiles, duration_or, human_duration, tls_files};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExchangeType {
    Topic,
    Fanout,
    Direct,
}

/// What to do with a record the broker would not take: a nack, or a
/// mandatory publish returned as unroutable (no queue bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RejectPolicy {
    /// Keep retrying with backoff (the partition waits; nothing is skipped).
    Retry,
    /// Dead-letter the record (replayable) and move on.
    DeadLetter,
}

#[derive(Debug, Clone, Serialize)]
pub struct AmqpSinkSettings {
    /// `amqp://user:pass@host:5672/%2f` or `amqps://…`, by reference.
    pub url: SecretRef,
    pub exchange_type: ExchangeType,
    /// Kafka topic → exchange name.
    pub exchanges: BTreeMap<String, String>,
    /// Declare the exchanges (durable) at startup; else they must exist.
    pub declare: bool,
    pub on_nack: RejectPolicy,
    pub on_unroutable: RejectPolicy,
    /// PEM bundle of the CAs to trust for amqps (in addition to the built-in roots).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain and its private key, for brokers that
    /// require mutual TLS (`ssl_options.fail_if_no_peer_cert`).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    #[serde(with = "human_duration")]
    pub connect_timeout: Duration,
    /// How long a publish may wait for its confirm before the connection is
    /// considered broken (and re-made).
    #[serde(with = "human_duration")]
    pub confirm_timeout: Duration,
}

fn policy(key: &str, v: Option<&str>) -> Result<RejectPolicy, ConfigError> {
    match v.unwrap_or("retry") {
        "retry" => Ok(RejectPolicy::Retry),
        "dead-letter" => Ok(RejectPolicy::DeadLetter),
        other => Err(ConfigError::invalid(
            key.to_string(),
            format!("unknown policy \"{other}\"; expected \"retry\" or \"dead-letter\""),
        )),
    }
}

pub(super) fn validate(raw: RawAmqpSink) -> Result<AmqpSinkSettings, ConfigError> {
    const K: &str = "sinks.amqp";
    let url = secret(K, "url", raw.url.is_some(), raw.url_env, raw.url_file)?;
    let exchange_type = match raw.exchange_type.as_deref().unwrap_or("topic") {
        "topic" => ExchangeType::Topic,
        "fanout" => ExchangeType::Fanout,
        "direct" => ExchangeType::Direct,
        other => {
            return Err(ConfigError::invalid(
                format!("{K}.exchange_type"),
                format!(
                    "unknown exchange type \"{other}\"; expected \"topic\", \"fanout\" or \"direct\""
                ),
            ));
        }
    };
    for (topic, exchange) in &raw.exchanges {
        // AMQP short strings: at most 255 bytes; the default exchange ("") cannot be declared.
        if exchange.is_empty() || exchange.len() > 255 || exchange.starts_with("amq.") {
            return Err(ConfigError::invalid(
                format!("{K}.exchanges.\"{topic}\""),
                "must be an exchange name of 1-255 bytes, not the default exchange or an amq.* one",
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
    Ok(AmqpSinkSettings {
        url,
        exchange_type,
        exchanges: raw.exchanges,
        declare: raw.declare.unwrap_or(true),
        on_nack: policy(&format!("{K}.on_nack"), raw.on_nack.as_deref())?,
        on_unroutable: policy(&format!("{K}.on_unroutable"), raw.on_unroutable.as_deref())?,
        ca_file,
        cert_file,
        key_file,
        connect_timeout: duration_or(&format!("{K}.connect_timeout"), raw.connect_timeout, "10s")?,
        confirm_timeout: duration_or(&format!("{K}.confirm_timeout"), raw.confirm_timeout, "30s")?,
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
name = "contention"
topics = ["A", "B"]
format = "json"
dedupe = "/eventId"
sink = "amqp"
[sinks.amqp]
url_env = "AMQP_URL"
[sinks.amqp.exchanges]
A = "ex-a"
B = "ex-b"
"#;

    fn load(text: &str) -> Result<Settings, ConfigError> {
        Settings::from_toml(text, Path::new("t.toml"), None)
    }

    #[test]
    fn defaults() {
        let s = load(BASE).unwrap();
        let a = s.sinks.amqp.as_ref().unwrap();
        assert_eq!(a.url, SecretRef::Env("AMQP_URL".into()));
        assert_eq!(a.exchange_type, ExchangeType::Topic);
        assert_eq!(a.on_unroutable, RejectPolicy::Retry);
        assert_eq!(a.exchanges["B"], "ex-b");
        assert!(a.declare);
    }

    #[test]
    fn every_topic_mapped_and_url_by_reference() {
        let text = BASE.replace("B = \"ex-b\"\n", "");
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("exchanges") && err.contains("\"B\""), "{err}");
        let text = BASE.replace("url_env = \"AMQP_URL\"", "url = \"amqp://u:secret@h\"");
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("url_env") && !err.contains("secret@"), "{err}");
        let text = BASE.replace("[sinks.amqp]", "[sinks.amqp]\non_nack = \"drop\"");
        assert!(load(&text).unwrap_err().to_string().contains("on_nack"));
        let text = BASE.replace(
            "[sinks.amqp]",
            "[sinks.amqp]\nexchange_type = \"fanout\"\non_unroutable = \"dead-letter\"",
        );
        let s = load(&text).unwrap();
        let a = s.sinks.amqp.as_ref().unwrap();
        assert_eq!(a.exchange_type, ExchangeType::Fanout);
        assert_eq!(a.on_unroutable, RejectPolicy::DeadLetter);
    }

    #[test]
    fn a_client_certificate_needs_both_files() {
        let text = BASE.replace("[sinks.amqp]", "[sinks.amqp]\ncert_file = \"client.pem\"");
        let err = load(&text).unwrap_err().to_string();
        assert!(
            err.contains("sinks.amqp.cert_file") && err.contains("key_file"),
            "{err}"
        );
        let text = BASE.replace(
            "[sinks.amqp]",
            "[sinks.amqp]\ncert_file = \"client.pem\"\nkey_file = \"client.key\"",
        );
        let s = load(&text).unwrap();
        let a = s.sinks.amqp.as_ref().unwrap();
        assert_eq!(a.key_file.as_deref(), Some(Path::new("client.key")));
    }
}
