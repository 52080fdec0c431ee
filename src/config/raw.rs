//! The config file as written: serde structs that reject unknown keys.
//!
//! Everything here is "as typed by the operator"; `settings.rs` turns it
//! into validated, defaulted `Settings`.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub kafka: RawKafka,
    pub store: RawStore,
    #[serde(default)]
    pub assignment: Option<RawAssignment>,
    #[serde(default)]
    pub pipeline: Option<RawPipeline>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub sinks: RawSinks,
    #[serde(default)]
    pub admin: Option<super::admin::RawAdmin>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKafka {
    pub brokers: Vec<String>,
    pub client_id: Option<String>,
    pub connect_timeout: Option<String>,
    pub request_timeout: Option<String>,
    pub fetch_max_bytes: Option<i64>,
    pub fetch_max_wait: Option<String>,
    pub metadata_refresh: Option<String>,
    pub tls: Option<super::kafka_security::RawKafkaTls>,
    pub sasl: Option<super::kafka_security::RawKafkaSasl>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub path: String,
    pub cache_capacity_mb: Option<u64>,
    pub retention: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAssignment {
    pub mode: String,
    pub member: Option<u32>,
    pub members: Option<u32>,
    pub partitions: Option<BTreeMap<String, Vec<i32>>>,
    pub group_id: Option<String>,
    pub session_timeout: Option<String>,
    pub heartbeat_interval: Option<String>,
    pub rebalance_timeout: Option<String>,
    pub offset_commit_interval: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPipeline {
    pub max_batch_records: Option<usize>,
    pub prefetch_batches: Option<usize>,
    pub fetch_memory_mb: Option<u64>,
    pub retry_initial: Option<String>,
    pub retry_max: Option<String>,
    pub drain_timeout: Option<String>,
    pub commit_group_max: Option<usize>,
    pub max_record_bytes: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: String,
    pub topics: Vec<String>,
    pub format: String,
    pub dedupe: Option<String>,
    pub sink: String,
    pub start: Option<String>,
    pub on_out_of_range: Option<String>,
    /// Overrides `pipeline.max_record_bytes` for this route.
    pub max_record_bytes: Option<usize>,
    /// Path of a JSON Schema file every record of the route must satisfy.
    pub schema: Option<String>,
    /// Also produce every dead letter of the route to this Kafka topic.
    pub dead_letter_topic: Option<String>,
    /// Record each committed batch of tracking IDs in this Kafka topic, and
    /// restore a partition's IDs from it before consuming.
    pub changelog_topic: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSinks {
    pub file: Option<RawFileSink>,
    pub killbill: Option<RawKillbillSink>,
    pub http: Option<RawHttpSink>,
    pub amqp: Option<RawAmqpSink>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFileSink {
    pub path: String,
    /// `"drop"` (default) or `"keep"`.
    pub page_cache: Option<String>,
}

/// `[sinks.killbill]`. Secrets only by reference; a literal `password` or
/// `api_secret` is accepted by the parser only to be refused with a clear message.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKillbillSink {
    pub url: String,
    pub username: String,
    pub password: Option<serde::de::IgnoredAny>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    pub created_by: Option<String>,
    pub reason: Option<String>,
    pub comment: Option<String>,
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub connect_timeout: Option<String>,
    pub request_timeout: Option<String>,
    pub max_in_flight: Option<usize>,
    pub lookup_cache_size: Option<usize>,
    pub lookup_cache_ttl: Option<String>,
    #[serde(default)]
    pub tenants: BTreeMap<String, RawKillbillTenant>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKillbillTenant {
    pub api_key: String,
    pub api_secret: Option<serde::de::IgnoredAny>,
    pub api_secret_env: Option<String>,
    pub api_secret_file: Option<String>,
}

/// `[sinks.http]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttpSink {
    pub url: String,
    pub envelope: Option<bool>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub headers_env: BTreeMap<String, String>,
    #[serde(default)]
    pub headers_file: BTreeMap<String, String>,
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub connect_timeout: Option<String>,
    pub request_timeout: Option<String>,
    pub max_in_flight: Option<usize>,
}

/// `[sinks.amqp]`. The URL carries credentials: by reference only.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAmqpSink {
    pub url: Option<serde::de::IgnoredAny>,
    pub url_env: Option<String>,
    pub url_file: Option<String>,
    pub exchange_type: Option<String>,
    #[serde(default)]
    pub exchanges: BTreeMap<String, String>,
    pub declare: Option<bool>,
    pub on_nack: Option<String>,
    pub on_unroutable: Option<String>,
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub connect_timeout: Option<String>,
    pub confirm_timeout: Option<String>,
}
