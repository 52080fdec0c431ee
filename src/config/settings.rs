//! Validated settings with every default filled in.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

pub use super::amqp::{AmqpSinkSettings, ExchangeType, RejectPolicy};
use super::assignment::validate_assignment;
pub use super::assignment::{Assignment, GroupSettings};
use super::error::ConfigError;
pub use super::http::HttpSinkSettings;
pub use super::killbill::{KillbillSinkSettings, KillbillTenant, SecretRef};
use super::raw::{RawConfig, RawPipeline, RawRoute};

/// Environment variable that overrides `kafka.brokers` (comma-separated),
/// so scripts can point a checked-in config at a broker on a random port.
pub const BROKERS_ENV: &str = "TALLY_BROKERS";

#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub kafka: KafkaSettings,
    pub store: StoreSettings,
    pub assignment: Assignment,
    pub pipeline: PipelineSettings,
    pub routes: Vec<Route>,
    pub sinks: SinkSettings,
    /// `[admin]`: off (None) unless configured.
    pub admin: Option<super::admin::AdminSettings>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KafkaSettings {
    pub brokers: Vec<String>,
    pub client_id: String,
    #[serde(with = "human_duration")]
    pub connect_timeout: Duration,
    #[serde(with = "human_duration")]
    pub request_timeout: Duration,
    pub fetch_max_bytes: i32,
    #[serde(with = "human_duration")]
    pub fetch_max_wait: Duration,
    #[serde(with = "human_duration")]
    pub metadata_refresh: Duration,
    /// `[kafka.tls]`: TLS to every broker when present.
    pub tls: Option<super::KafkaTlsSettings>,
    /// `[kafka.sasl]`: authenticate every connection when present.
    pub sasl: Option<super::KafkaSaslSettings>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StoreSettings {
    pub path: PathBuf,
    pub cache_capacity_mb: u64,
    #[serde(with = "human_duration_opt")]
    pub retention: Option<Duration>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PipelineSettings {
    /// Upper bound of records handed to a sink at once per partition.
    pub max_batch_records: usize,
    /// Fetched batches buffered ahead of delivery per partition (the in-flight window).
    pub prefetch_batches: usize,
    /// What fetched batches of all partitions may keep in memory at once
    /// (the process-wide fetch budget), in MiB.
    pub fetch_memory_mb: u64,
    #[serde(with = "human_duration")]
    pub retry_initial: Duration,
    #[serde(with = "human_duration")]
    pub retry_max: Duration,
    #[serde(with = "human_duration")]
    pub drain_timeout: Duration,
    /// Most partition batches written in one store transaction (group commit).
    pub commit_group_max: usize,
    /// Default for routes: a larger record value is dead-lettered unparsed.
    pub max_record_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FormatKind {
    KillbillUsage,
    Json,
}

/// Where a `json` route takes its dedupe key from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DedupeSource {
    /// Fixed by the format (killbill-usage: tenantId/subscriptionExternalKey/trackingId).
    Format,
    Pointer(String),
    KafkaKey,
    /// No dedupe: delivery is at-least-once.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StartPosition {
    Earliest,
    Latest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutOfRangePolicy {
    Earliest,
    Latest,
    Fail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    File,
    Killbill,
    Http,
    Amqp,
}

#[derive(Debug, Clone, Serialize)]
pub struct Route {
    pub name: String,
    pub topics: Vec<String>,
    pub format: FormatKind,
    pub dedupe: DedupeSource,
    pub sink: SinkKind,
    pub start: StartPosition,
    pub on_out_of_range: OutOfRangePolicy,
    /// A record value larger than this is dead-lettered before any parsing
    /// (a JSON parser's time and memory grow with the input).
    pub max_record_bytes: usize,
    /// Optional JSON Schema (`schema = "path"`), compiled at load time so a
    /// bad file fails `tally check`, not the first record.
    pub schema: Option<crate::format::RecordSchema>,
    /// Dead letters are also produced here (before their store commit).
    pub dead_letter_topic: Option<String>,
    /// Each committed batch of tracking IDs is also produced here (after the
    /// sink's ack, before the store commit), partition = source partition;
    /// a partition restores its IDs from it before consuming (see
    /// `pipeline::changelog`).
    pub changelog_topic: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SinkSettings {
    pub file: Option<FileSinkSettings>,
    pub killbill: Option<KillbillSinkSettings>,
    pub http: Option<HttpSinkSettings>,
    pub amqp: Option<AmqpSinkSettings>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileSinkSettings {
    pub path: PathBuf,
    pub page_cache: crate::sink::file::PageCache,
}

impl Settings {
    /// Read, parse and validate a config file.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let brokers_override = std::env::var(BROKERS_ENV).ok();
        Settings::from_toml(&text, path, brokers_override.as_deref())
    }

    pub fn from_toml(
        text: &str,
        path: &Path,
        brokers_override: Option<&str>,
    ) -> Result<Settings, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Settings::validate(raw, brokers_override)
    }

    /// The topic → route lookup used by the pipeline.
    pub fn route_for_topic(&self, topic: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| r.topics.iter().any(|t| t == topic))
    }

    pub fn all_topics(&self) -> Vec<String> {
        self.routes
            .iter()
            .flat_map(|r| r.topics.iter().cloned())
            .collect()
    }

    fn validate(raw: RawConfig, brokers_override: Option<&str>) -> Result<Settings, ConfigError> {
        let kafka = validate_kafka(raw.kafka, brokers_override)?;
        let store = StoreSettings {
            path: non_empty_path("store.path", &raw.store.path)?,
            cache_capacity_mb: positive(
                "store.cache_capacity_mb",
                raw.store.cache_capacity_mb,
                64,
            )?,
            retention: raw
                .store
                .retention
                .as_deref()
                .map(|s| duration("store.retention", s))
                .transpose()?,
        };
        let assignment = validate_assignment(raw.assignment)?;
        let pipeline = validate_pipeline(raw.pipeline)?;
        let sinks = SinkSettings {
            file: raw
                .sinks
                .file
                .map(|f| -> Result<_, ConfigError> {
                    Ok(FileSinkSettings {
                        path: non_empty_path("sinks.file.path", &f.path)?,
                        page_cache: file_page_cache(f.page_cache.as_deref())?,
                    })
                })
                .transpose()?,
            killbill: raw
                .sinks
                .killbill
                .map(super::killbill::validate)
                .transpose()?,
            http: raw.sinks.http.map(super::http::validate).transpose()?,
            amqp: raw.sinks.amqp.map(super::amqp::validate).transpose()?,
        };
        let admin = super::admin::validate_admin(raw.admin)?;
        let routes = validate_routes(raw.routes, &sinks, pipeline.max_record_bytes)?;
        if let Assignment::Explicit { partitions } = &assignment {
            for topic in partitions.keys() {
                if !routes.iter().any(|r| r.topics.contains(topic)) {
                    return Err(ConfigError::invalid(
                        format!("assignment.partitions.{topic}"),
                        "names a topic that no route consumes; add it to a route's `topics` or remove it",
                    ));
                }
            }
        }
        if matches!(assignment, Assignment::Group(_)) {
            require_changelog_in_group_mode(&routes)?;
        }
        Ok(Settings {
            kafka,
            store,
            assignment,
            pipeline,
            routes,
            sinks,
            admin,
        })
    }
}

fn validate_kafka(
    raw: super::raw::RawKafka,
    brokers_override: Option<&str>,
) -> Result<KafkaSettings, ConfigError> {
    let brokers: Vec<String> = match brokers_override {
        Some(list) => list
            .split(',')
            .map(|b| b.trim().to_string())
            .filter(|b| !b.is_empty())
            .collect(),
        None => raw.brokers,
    };
    if brokers.is_empty() {
        return Err(ConfigError::invalid(
            "kafka.brokers",
            "needs at least one \"host:port\"",
        ));
    }
    for b in &brokers {
        let ok = b
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !ok {
            return Err(ConfigError::invalid(
                "kafka.brokers",
                format!("`{b}` is not \"host:port\""),
            ));
        }
    }
    let fetch_max_bytes = raw.fetch_max_bytes.unwrap_or(1 << 20);
    if !(1024..=(256 << 20)).contains(&fetch_max_bytes) {
        return Err(ConfigError::invalid(
            "kafka.fetch_max_bytes",
            "must be between 1024 and 268435456",
        ));
    }
    Ok(KafkaSettings {
        brokers,
        client_id: raw.client_id.unwrap_or_else(|| "tally".to_string()),
        connect_timeout: duration_or("kafka.connect_timeout", raw.connect_timeout, "10s")?,
        request_timeout: duration_or("kafka.request_timeout", raw.request_timeout, "30s")?,
        fetch_max_bytes: fetch_max_bytes as i32,
        fetch_max_wait: duration_or("kafka.fetch_max_wait", raw.fetch_max_wait, "500ms")?,
        metadata_refresh: duration_or("kafka.metadata_refresh", raw.metadata_refresh, "30s")?,
        tls: raw
            .tls
            .map(super::kafka_security::validate_tls)
            .transpose()?,
        sasl: raw
            .sasl
            .map(super::kafka_security::validate_sasl)
            .transpose()?,
    })
}

fn validate_pipeline(raw: Option<RawPipeline>) -> Result<PipelineSettings, ConfigError> {
    let raw = raw.unwrap_or(RawPipeline {
        max_batch_records: None,
        prefetch_batches: None,
        fetch_memory_mb: None,
        retry_initial: None,
        retry_max: None,
        drain_timeout: None,
        commit_group_max: None,
        max_record_bytes: None,
    });
    let retry_initial = duration_or("pipeline.retry_initial", raw.retry_initial, "200ms")?;
    let retry_max = duration_or("pipeline.retry_max", raw.retry_max, "30s")?;
    if retry_max < retry_initial {
        return Err(ConfigError::invalid(
            "pipeline.retry_max",
            "must be at least pipeline.retry_initial",
        ));
    }
    Ok(PipelineSettings {
        max_batch_records: positive_usize(
            "pipeline.max_batch_records",
            raw.max_batch_records,
            5000,
        )?,
        prefetch_batches: positive_usize("pipeline.prefetch_batches", raw.prefetch_batches, 2)?,
        fetch_memory_mb: fetch_memory_mb(raw.fetch_memory_mb)?,
        retry_initial,
        retry_max,
        drain_timeout: duration_or("pipeline.drain_timeout", raw.drain_timeout, "30s")?,
        commit_group_max: positive_usize("pipeline.commit_group_max", raw.commit_group_max, 64)?,
        max_record_bytes: positive_usize(
            "pipeline.max_record_bytes",
            raw.max_record_bytes,
            DEFAULT_MAX_RECORD_BYTES,
        )?,
    })
}

/// `pipeline.fetch_memory_mb`: 64 MiB keeps full 1 MiB fetches of usage
/// events (2–3× their bytes once decoded) for ~8 partitions with 3 batches
/// each, 64 KiB ones for ~130; more partitions share it by taking turns.
fn fetch_memory_mb(value: Option<u64>) -> Result<u64, ConfigError> {
    const KEY: &str = "pipeline.fetch_memory_mb";
    match value.unwrap_or(DEFAULT_FETCH_MEMORY_MB) {
        v @ 1..=MAX_FETCH_MEMORY_MB => Ok(v),
        v => Err(ConfigError::invalid(
            KEY,
            format!(
                "{v} is out of range: give the MiB that fetched batches of all partitions may hold \
                 at once, 1 to {MAX_FETCH_MEMORY_MB} (default {DEFAULT_FETCH_MEMORY_MB})"
            ),
        )),
    }
}

pub const DEFAULT_FETCH_MEMORY_MB: u64 = 64;
/// 64 GiB: beyond any machine tally is meant for; also keeps bytes in usize.
const MAX_FETCH_MEMORY_MB: u64 = 64 << 10;

/// 1 MiB: Kafka's own default `max.message.bytes`; usage events are ~1 KiB.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1 << 20;

fn validate_routes(
    raw: Vec<RawRoute>,
    sinks: &SinkSettings,
    default_max_record_bytes: usize,
) -> Result<Vec<Route>, ConfigError> {
    if raw.is_empty() {
        return Err(ConfigError::invalid(
            "routes",
            "no [[routes]] configured; add one with name, topics, format and sink",
        ));
    }
    let mut names = BTreeSet::new();
    let mut topics_seen = BTreeMap::new();
    let mut routes = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("routes[{i}].{field}");
        if r.name.trim().is_empty() {
            return Err(ConfigError::invalid(key("name"), "must not be empty"));
        }
        if !names.insert(r.name.clone()) {
            return Err(ConfigError::invalid(
                key("name"),
                format!(
                    "route name \"{}\" is used twice; names must be unique",
                    r.name
                ),
            ));
        }
        if r.topics.is_empty() {
            return Err(ConfigError::invalid(
                key("topics"),
                "needs at least one topic",
            ));
        }
        for t in &r.topics {
            if t.is_empty() {
                return Err(ConfigError::invalid(
                    key("topics"),
                    "topic names must not be empty",
                ));
            }
            if let Some(other) = topics_seen.insert(t.clone(), r.name.clone()) {
                return Err(ConfigError::invalid(
                    key("topics"),
                    format!(
                        "topic \"{t}\" is already consumed by route \"{other}\"; a topic belongs to one route (offsets are kept per topic)"
                    ),
                ));
            }
        }
        let format = match r.format.as_str() {
            "killbill-usage" => FormatKind::KillbillUsage,
            "json" => FormatKind::Json,
            other => {
                return Err(ConfigError::invalid(
                    key("format"),
                    format!("unknown format \"{other}\"; expected \"killbill-usage\" or \"json\""),
                ));
            }
        };
        let dedupe = match (format, r.dedupe.as_deref()) {
            (FormatKind::KillbillUsage, None) => DedupeSource::Format,
            (FormatKind::KillbillUsage, Some(_)) => {
                return Err(ConfigError::invalid(
                    key("dedupe"),
                    "killbill-usage always dedupes by tenantId/subscriptionExternalKey/trackingId; remove `dedupe`",
                ));
            }
            (FormatKind::Json, None) => {
                return Err(ConfigError::invalid(
                    key("dedupe"),
                    "a json route needs `dedupe`: a JSON pointer like \"/id\", \"kafka-key\", or \"none\" (at-least-once)",
                ));
            }
            (FormatKind::Json, Some("kafka-key")) => DedupeSource::KafkaKey,
            (FormatKind::Json, Some("none")) => DedupeSource::None,
            (FormatKind::Json, Some(p)) if p.starts_with('/') => {
                DedupeSource::Pointer(p.to_string())
            }
            (FormatKind::Json, Some(other)) => {
                return Err(ConfigError::invalid(
                    key("dedupe"),
                    format!(
                        "\"{other}\" is not a JSON pointer (starts with '/'), \"kafka-key\" or \"none\""
                    ),
                ));
            }
        };
        let sink = match r.sink.as_str() {
            "file" => {
                if sinks.file.is_none() {
                    return Err(ConfigError::invalid(
                        key("sink"),
                        "sink \"file\" is used but [sinks.file] is not configured; add it with a `path`",
                    ));
                }
                SinkKind::File
            }
            "killbill" => {
                if sinks.killbill.is_none() {
                    return Err(ConfigError::invalid(
                        key("sink"),
                        "sink \"killbill\" is used but [sinks.killbill] is not configured",
                    ));
                }
                if format != FormatKind::KillbillUsage {
                    return Err(ConfigError::invalid(
                        key("format"),
                        "sink \"killbill\" takes Kill Bill usage events; use format = \"killbill-usage\"",
                    ));
                }
                SinkKind::Killbill
            }
            "http" => {
                if sinks.http.is_none() {
                    return Err(ConfigError::invalid(
                        key("sink"),
                        "sink \"http\" is used but [sinks.http] is not configured; add it with a `url`",
                    ));
                }
                SinkKind::Http
            }
            "amqp" => {
                let Some(amqp) = &sinks.amqp else {
                    return Err(ConfigError::invalid(
                        key("sink"),
                        "sink \"amqp\" is used but [sinks.amqp] is not configured",
                    ));
                };
                // Every topic needs its exchange: an unmapped one could never be delivered.
                if let Some(t) = r.topics.iter().find(|t| !amqp.exchanges.contains_key(*t)) {
                    return Err(ConfigError::invalid(
                        format!("sinks.amqp.exchanges.\"{t}\""),
                        format!(
                            "topic \"{t}\" of route \"{}\" has no exchange; map it in [sinks.amqp.exchanges]",
                            r.name
                        ),
                    ));
                }
                SinkKind::Amqp
            }
            other => {
                return Err(ConfigError::invalid(
                    key("sink"),
                    format!(
                        "unknown sink \"{other}\"; expected \"file\", \"killbill\", \"http\" or \"amqp\""
                    ),
                ));
            }
        };
        let start = match r.start.as_deref().unwrap_or("earliest") {
            "earliest" => StartPosition::Earliest,
            "latest" => StartPosition::Latest,
            other => {
                return Err(ConfigError::invalid(
                    key("start"),
                    format!("unknown start \"{other}\"; expected \"earliest\" or \"latest\""),
                ));
            }
        };
        let on_out_of_range = match r.on_out_of_range.as_deref().unwrap_or("earliest") {
            "earliest" => OutOfRangePolicy::Earliest,
            "latest" => OutOfRangePolicy::Latest,
            "fail" => OutOfRangePolicy::Fail,
            other => {
                return Err(ConfigError::invalid(
                    key("on_out_of_range"),
                    format!(
                        "unknown policy \"{other}\"; expected \"earliest\", \"latest\" or \"fail\""
                    ),
                ));
            }
        };
        let dead_letter_topic = match r.dead_letter_topic {
            Some(t) if t.trim().is_empty() => {
                return Err(ConfigError::invalid(
                    key("dead_letter_topic"),
                    "must not be empty",
                ));
            }
            Some(t) if r.topics.contains(&t) => {
                return Err(ConfigError::invalid(
                    key("dead_letter_topic"),
                    format!(
                        "\"{t}\" is one of the route's own topics: its dead letters would be consumed again"
                    ),
                ));
            }
            t => t,
        };
        let changelog_topic = match r.changelog_topic {
            Some(t) if t.trim().is_empty() => {
                return Err(ConfigError::invalid(
                    key("changelog_topic"),
                    "must not be empty",
                ));
            }
            Some(_) if dedupe == DedupeSource::None => {
                return Err(ConfigError::invalid(
                    key("changelog_topic"),
                    "the route has dedupe = \"none\": it keeps no tracking IDs to record; remove changelog_topic",
                ));
            }
            Some(t) if dead_letter_topic.as_ref() == Some(&t) => {
                return Err(ConfigError::invalid(
                    key("changelog_topic"),
                    format!(
                        "\"{t}\" is also the route's dead_letter_topic; use a topic of its own"
                    ),
                ));
            }
            t => t,
        };
        routes.push(Route {
            name: r.name,
            topics: r.topics,
            format,
            dedupe,
            sink,
            start,
            on_out_of_range,
            max_record_bytes: positive_usize(
                &key("max_record_bytes"),
                r.max_record_bytes,
                default_max_record_bytes,
            )?,
            dead_letter_topic,
            changelog_topic,
            schema: r
                .schema
                .map(|p| route_schema(&key("schema"), &p))
                .transpose()?,
        });
    }
    check_changelog_topics(&routes)?;
    Ok(routes)
}

/// In group mode partitions move between members, and a route's tracking
/// IDs must move with them: without a changelog the new owner would send a
/// duplicate of an ID the old owner delivered again (only the sink's own
/// idempotency key, where it has one, would catch it). Refused rather than
/// warned about: "nothing twice" must not depend on reading the logs.
fn require_changelog_in_group_mode(routes: &[Route]) -> Result<(), ConfigError> {
    for (i, r) in routes.iter().enumerate() {
        if r.changelog_topic.is_none() && r.dedupe != DedupeSource::None {
            return Err(ConfigError::invalid(
                format!("routes[{i}].changelog_topic"),
                format!(
                    "is required in group mode: partitions move between members and route \"{}\"'s \
                     tracking IDs must move with them. Create a topic with at least as many partitions \
                     as the route's topics (e.g. \"tally-changelog.{}\", retention >= store.retention) \
                     and set changelog_topic to it",
                    r.name, r.name
                ),
            ));
        }
    }
    Ok(())
}

/// A changelog topic belongs to one route and is nobody's input: consumed
/// as data it would be dead-lettered record by record, shared by two routes
/// each restore would read the other's records too.
fn check_changelog_topics(routes: &[Route]) -> Result<(), ConfigError> {
    let mut owner: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, r) in routes.iter().enumerate() {
        let Some(t) = r.changelog_topic.as_deref() else {
            continue;
        };
        let key = format!("routes[{i}].changelog_topic");
        if let Some(src) = routes.iter().find(|o| o.topics.iter().any(|s| s == t)) {
            return Err(ConfigError::invalid(
                key,
                format!(
                    "\"{t}\" is a topic route \"{}\" consumes: the changelog must not be consumed as data",
                    src.name
                ),
            ));
        }
        if let Some(dlq) = routes
            .iter()
            .find(|o| o.dead_letter_topic.as_deref() == Some(t))
        {
            return Err(ConfigError::invalid(
                key,
                format!(
                    "\"{t}\" is the dead_letter_topic of route \"{}\"; use a topic of its own",
                    dlq.name
                ),
            ));
        }
        if let Some(j) = owner.insert(t, i) {
            return Err(ConfigError::invalid(
                key,
                format!(
                    "\"{t}\" is also the changelog_topic of routes[{j}]; each route needs its own changelog topic"
                ),
            ));
        }
    }
    Ok(())
}

fn route_schema(key: &str, path: &str) -> Result<crate::format::RecordSchema, ConfigError> {
    if path.trim().is_empty() {
        return Err(ConfigError::invalid(key, "must not be empty"));
    }
    crate::format::RecordSchema::load(Path::new(path))
        .map_err(|e| ConfigError::invalid(key, e.to_string()))
}

pub(super) fn duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text).map_err(|e| {
        ConfigError::invalid(
            key,
            format!("\"{text}\" is not a duration ({e}); write e.g. \"500ms\", \"30s\", \"5m\""),
        )
    })
}

pub(super) fn duration_or(
    key: &str,
    value: Option<String>,
    default: &str,
) -> Result<Duration, ConfigError> {
    duration(key, value.as_deref().unwrap_or(default))
}

fn positive(key: &str, value: Option<u64>, default: u64) -> Result<u64, ConfigError> {
    match value.unwrap_or(default) {
        0 => Err(ConfigError::invalid(key, "must be greater than 0")),
        v => Ok(v),
    }
}

fn positive_usize(key: &str, value: Option<usize>, default: usize) -> Result<usize, ConfigError> {
    match value.unwrap_or(default) {
        0 => Err(ConfigError::invalid(key, "must be greater than 0")),
        v => Ok(v),
    }
}

pub(super) fn non_empty_path(key: &str, value: &str) -> Result<PathBuf, ConfigError> {
    if value.trim().is_empty() {
        return Err(ConfigError::invalid(key, "must not be empty"));
    }
    Ok(PathBuf::from(value))
}

/// `sinks.file.page_cache`: what happens to the file's pages once fsynced.
fn file_page_cache(value: Option<&str>) -> Result<crate::sink::file::PageCache, ConfigError> {
    use crate::sink::file::PageCache;
    match value {
        None | Some("drop") => Ok(PageCache::Drop),
        Some("keep") => Ok(PageCache::Keep),
        Some(other) => Err(ConfigError::invalid(
            "sinks.file.page_cache",
            format!(
                "unknown value {other:?}; expected \"drop\" (the default: written pages leave the \
                 page cache once on disk) or \"keep\" (leave them cached for a reader tailing the file)"
            ),
        )),
    }
}

/// The `ca_file`, `cert_file` and `key_file` of a TLS client under `table`.
pub(super) struct TlsFiles {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// Validates a TLS client's files the same way for Kafka and every sink:
/// non-empty paths, and a client certificate only together with its key.
pub(super) fn tls_files(
    table: &str,
    ca_file: Option<&str>,
    cert_file: Option<&str>,
    key_file: Option<&str>,
) -> Result<TlsFiles, ConfigError> {
    let path = |field: &str, p: Option<&str>| {
        p.map(|p| non_empty_path(&format!("{table}.{field}"), p))
            .transpose()
    };
    let files = TlsFiles {
        ca_file: path("ca_file", ca_file)?,
        cert_file: path("cert_file", cert_file)?,
        key_file: path("key_file", key_file)?,
    };
    if files.cert_file.is_some() != files.key_file.is_some() {
        return Err(ConfigError::invalid(
            format!("{table}.cert_file"),
            "a client certificate needs both cert_file and key_file",
        ));
    }
    Ok(files)
}

pub(super) mod human_duration {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

mod human_duration_opt {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The smallest valid config (also used by the other config modules' tests).
    pub(in crate::config) const MINIMAL: &str = r#"
[kafka]
brokers = ["127.0.0.1:9092"]
[store]
path = "./state"
[[routes]]
name = "usage"
topics = ["stream.usagemetrics"]
format = "killbill-usage"
sink = "file"
[sinks.file]
path = "./out.jsonl"
"#;

    fn load(text: &str) -> Result<Settings, ConfigError> {
        Settings::from_toml(text, Path::new("t.toml"), None)
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let s = load(MINIMAL).unwrap();
        assert_eq!(s.kafka.fetch_max_wait, Duration::from_millis(500));
        assert!(matches!(
            s.assignment,
            Assignment::Static {
                member: 0,
                members: 1
            }
        ));
        assert_eq!(s.routes[0].dedupe, DedupeSource::Format);
        assert_eq!(s.routes[0].start, StartPosition::Earliest);
    }

    #[test]
    fn file_sink_page_cache_defaults_to_drop_and_bad_values_name_the_key() {
        use crate::sink::file::PageCache;
        let page_cache = |s: Settings| s.sinks.file.map(|f| f.page_cache);
        assert_eq!(page_cache(load(MINIMAL).unwrap()), Some(PageCache::Drop));
        let with = |v: &str| {
            MINIMAL.replace(
                "path = \"./out.jsonl\"",
                &format!("path = \"./out.jsonl\"\npage_cache = {v:?}"),
            )
        };
        assert_eq!(
            page_cache(load(&with("keep")).unwrap()),
            Some(PageCache::Keep)
        );
        assert_eq!(
            page_cache(load(&with("drop")).unwrap()),
            Some(PageCache::Drop)
        );
        let err = load(&with("Keep")).unwrap_err().to_string();
        assert!(err.contains("sinks.file.page_cache"), "{err}");
        assert!(err.contains("\"keep\""), "{err}");
    }

    #[test]
    fn route_schema_is_compiled_at_load_and_errors_name_the_key() {
        let shipped = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/data/schemas/killbill-usage.schema.json"
        );
        let text = MINIMAL.replace(
            "sink = \"file\"",
            &format!("sink = \"file\"\nschema = {shipped:?}"),
        );
        let s = load(&text).unwrap();
        assert!(s.routes[0].schema.is_some());
        let text = MINIMAL.replace(
            "sink = \"file\"",
            "sink = \"file\"\nschema = \"/no/such/schema.json\"",
        );
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("routes[0].schema"), "{err}");
        assert!(err.contains("/no/such/schema.json"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, r#"{"type": 5}"#).unwrap();
        let text = MINIMAL.replace(
            "sink = \"file\"",
            &format!("sink = \"file\"\nschema = {:?}", bad.display().to_string()),
        );
        let err = load(&text).unwrap_err().to_string();
        assert!(
            err.contains("routes[0].schema") && err.contains("not a valid JSON Schema"),
            "{err}"
        );
    }

    #[test]
    fn dead_letter_topic_must_not_be_a_source_topic() {
        let with = |t: &str| {
            MINIMAL.replace(
                "sink = \"file\"",
                &format!("sink = \"file\"\ndead_letter_topic = {t:?}"),
            )
        };
        let s = load(&with("billing.dead-letter")).unwrap();
        assert_eq!(
            s.routes[0].dead_letter_topic.as_deref(),
            Some("billing.dead-letter")
        );
        let err = load(&with("stream.usagemetrics")).unwrap_err().to_string();
        assert!(
            err.contains("routes[0].dead_letter_topic") && err.contains("own topics"),
            "{err}"
        );
        let err = load(&with(" ")).unwrap_err().to_string();
        assert!(err.contains("routes[0].dead_letter_topic"), "{err}");
    }

    #[test]
    fn changelog_topic_is_validated_against_every_route() {
        let with =
            |extra: &str| MINIMAL.replace("sink = \"file\"", &format!("sink = \"file\"\n{extra}"));
        let s = load(&with("changelog_topic = \"tally-changelog.usage\"")).unwrap();
        assert_eq!(
            s.routes[0].changelog_topic.as_deref(),
            Some("tally-changelog.usage")
        );
        assert_eq!(load(MINIMAL).unwrap().routes[0].changelog_topic, None);
        let err = |text: &str| load(text).unwrap_err().to_string();
        let e = err(&with("changelog_topic = \" \""));
        assert!(
            e.contains("routes[0].changelog_topic") && e.contains("empty"),
            "{e}"
        );
        let e = err(&with("changelog_topic = \"stream.usagemetrics\""));
        assert!(
            e.contains("routes[0].changelog_topic") && e.contains("consumes"),
            "{e}"
        );
        let e = err(&with("dead_letter_topic = \"x\"\nchangelog_topic = \"x\""));
        assert!(
            e.contains("routes[0].changelog_topic") && e.contains("dead_letter_topic"),
            "{e}"
        );
        let second = |extra: &str| {
            format!(
                "{}\n[[routes]]\nname = \"b\"\ntopics = [\"other\"]\nformat = \"json\"\ndedupe = \"/id\"\nsink = \"file\"\n{extra}\n",
                with("changelog_topic = \"cl\"")
            )
        };
        let e = err(&second("changelog_topic = \"cl\""));
        assert!(
            e.contains("routes[1].changelog_topic") && e.contains("routes[0]"),
            "{e}"
        );
        let e = err(&second("changelog_topic = \"stream.usagemetrics\""));
        assert!(
            e.contains("routes[1].changelog_topic") && e.contains("\"usage\""),
            "{e}"
        );
        let e = err(&second("dead_letter_topic = \"cl\""));
        assert!(
            e.contains("routes[0].changelog_topic") && e.contains("route \"b\""),
            "{e}"
        );
        let none = MINIMAL.replace("killbill-usage", "json").replace(
            "sink = \"file\"",
            "sink = \"file\"\ndedupe = \"none\"\nchangelog_topic = \"cl\"",
        );
        let e = err(&none);
        assert!(
            e.contains("routes[0].changelog_topic") && e.contains("dedupe"),
            "{e}"
        );
    }

    #[test]
    fn fetch_memory_mb_defaults_and_range() {
        assert_eq!(load(MINIMAL).unwrap().pipeline.fetch_memory_mb, 64);
        let with = |v: &str| format!("{MINIMAL}[pipeline]\nfetch_memory_mb = {v}\n");
        assert_eq!(load(&with("8")).unwrap().pipeline.fetch_memory_mb, 8);
        for bad in ["0", "65537"] {
            let e = load(&with(bad)).unwrap_err().to_string();
            assert!(
                e.contains("pipeline.fetch_memory_mb") && e.contains("1 to 65536"),
                "{e}"
            );
        }
        let e = load(&with("-1")).unwrap_err().to_string();
        assert!(e.contains("fetch_memory_mb"), "{e}");
    }

    #[test]
    fn max_record_bytes_defaults_and_per_route_override() {
        let s = load(MINIMAL).unwrap();
        assert_eq!(s.pipeline.max_record_bytes, 1 << 20);
        assert_eq!(s.routes[0].max_record_bytes, 1 << 20);
        let text = format!("{MINIMAL}[pipeline]\nmax_record_bytes = 4096\n");
        assert_eq!(load(&text).unwrap().routes[0].max_record_bytes, 4096);
        let text = MINIMAL.replace("sink = \"file\"", "sink = \"file\"\nmax_record_bytes = 512");
        assert_eq!(load(&text).unwrap().routes[0].max_record_bytes, 512);
        let text = MINIMAL.replace("sink = \"file\"", "sink = \"file\"\nmax_record_bytes = 0");
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("routes[0].max_record_bytes"), "{err}");
    }

    #[test]
    fn unknown_key_is_named() {
        let text = MINIMAL.replace("[store]", "[store]\npaht = \"x\"");
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("paht"), "{err}");
    }

    #[test]
    fn bad_duration_names_key() {
        let text = MINIMAL.replace("[kafka]", "[kafka]\nrequest_timeout = \"soon\"");
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("kafka.request_timeout"), "{err}");
    }

    #[test]
    fn json_route_requires_dedupe() {
        let text = MINIMAL.replace("killbill-usage", "json");
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("routes[0].dedupe"), "{err}");
    }

    #[test]
    fn brokers_env_override_wins() {
        let s = Settings::from_toml(MINIMAL, Path::new("t"), Some("a:1, b:2")).unwrap();
        assert_eq!(s.kafka.brokers, vec!["a:1", "b:2"]);
    }

    #[test]
    fn topic_in_two_routes_is_refused() {
        let text = format!(
            "{MINIMAL}\n[[routes]]\nname = \"b\"\ntopics = [\"stream.usagemetrics\"]\nformat = \"json\"\ndedupe = \"/id\"\nsink = \"file\"\n"
        );
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("already consumed"), "{err}");
    }
}
