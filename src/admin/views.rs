//! JSON shapes shared by the admin API and the CLI's `--json` output, so a
//! command prints the same thing whether it read the store or asked the daemon.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::store::{
    BatchInfo, DeadLetter, IdLocation, OffsetEntry, SCHEMA_VERSION, Store, StoreError,
};

/// Unix milliseconds as RFC 3339 (UTC, milliseconds), or null.
pub fn ms(t: i64) -> Value {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(t).map_or(Value::Null, |d| {
        json!(d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    })
}

/// Unix milliseconds as RFC 3339 text (seconds), `-` when out of range.
pub fn ms_text(t: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(t)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "-".into())
}

/// One row of `tally offsets` (and of `GET /v1/partitions`, which adds live fields).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OffsetRow {
    pub topic: String,
    pub partition: i32,
    pub committed: i64,
    pub log_end: Option<i64>,
    pub lag: Option<i64>,
    pub updated: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_seconds: Option<f64>,
    /// Group mode: the group, its generation and this member's id, and
    /// whether this member owns the partition now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owned: Option<bool>,
    /// Group mode, read from a stopped store: the group's committed offset
    /// (where a member taking the partition over would start, if newer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_committed: Option<i64>,
}

/// `GET /v1/group`: this member's view of its consumer group (group mode).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupView {
    pub group_id: String,
    /// Empty until the coordinator assigned one.
    pub member_id: String,
    /// -1 while joining or after the session may have ended.
    pub generation: i32,
    pub leader: bool,
    /// Members of the generation, as the leader counted them.
    pub members: Option<u32>,
    /// `joining` | `stable` | `revoking` | `left`
    pub state: String,
    /// Partitions owned in this generation, by topic.
    pub owned: BTreeMap<String, Vec<i32>>,
    /// Rebalances since start (joins after the first).
    pub rebalances: u64,
    pub last_rebalance_seconds: Option<f64>,
}

impl GroupView {
    pub fn owns(&self, topic: &str, partition: i32) -> bool {
        self.owned
            .get(topic)
            .is_some_and(|ps| ps.contains(&partition))
    }
}

impl OffsetRow {
    pub fn from_store(topic: &str, partition: i32, e: &OffsetEntry, log_end: Option<i64>) -> Self {
        OffsetRow {
            topic: topic.to_string(),
            partition,
            committed: e.next_offset,
            log_end,
            lag: log_end.map(|end| (end - e.next_offset).max(0)),
            updated: Some(ms_text(e.updated_at_ms)),
            route: None,
            state: None,
            backoff_seconds: None,
            group: None,
            generation: None,
            member: None,
            owned: None,
            group_committed: None,
        }
    }
}

/// `tally ids lookup` / `GET /v1/ids/{route}/{key}`.
pub fn id_location(route: &str, key: &str, loc: &IdLocation) -> Value {
    json!({
        "route": route,
        "key": loc.key.as_deref().unwrap_or(key),
        "topic": loc.topic,
        "partition": loc.partition,
        "first_offset": loc.first_offset,
        "next_offset": loc.next_offset,
        "committed_at": ms(loc.committed_at_ms),
        "batch": loc.seq,
    })
}

/// `tally ids count` / `GET /v1/ids`: per route.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RouteCount {
    pub route: String,
    pub ids: u64,
    pub batches: u64,
    pub oldest: Option<String>,
    pub newest: Option<String>,
}

pub fn route_counts(batches: &[BatchInfo]) -> Vec<RouteCount> {
    let mut by: BTreeMap<&str, (u64, u64, i64, i64)> = BTreeMap::new();
    for b in batches {
        let e = by
            .entry(b.route.as_str())
            .or_insert((0, 0, i64::MAX, i64::MIN));
        e.0 += u64::from(b.count);
        e.1 += 1;
        e.2 = e.2.min(b.committed_at_ms);
        e.3 = e.3.max(b.committed_at_ms);
    }
    by.into_iter()
        .map(|(route, (ids, batches, oldest, newest))| RouteCount {
            route: route.to_string(),
            ids,
            batches,
            oldest: Some(ms_text(oldest)),
            newest: Some(ms_text(newest)),
        })
        .collect()
}

/// One line of `tally ids export`: a key and where it was committed.
pub fn export_line(b: &BatchInfo, key: &str) -> String {
    json!({
        "route": b.route,
        "key": key,
        "topic": b.topic,
        "partition": b.partition,
        "first_offset": b.first_offset,
        "next_offset": b.next_offset,
        "committed_at": ms(b.committed_at_ms),
    })
    .to_string()
}

/// Walk every retained key, oldest batch first: `line` gets each export
/// line, `progress` the running count of keys and the total expected.
pub fn export_ids(
    store: &Store,
    route: Option<&str>,
    mut line: impl FnMut(String) -> bool,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64, StoreError> {
    let batches: Vec<BatchInfo> = store
        .batches()?
        .into_iter()
        .filter(|b| route.is_none_or(|r| b.route == r))
        .collect();
    let total: u64 = batches.iter().map(|b| u64::from(b.count)).sum();
    let mut done = 0u64;
    for b in &batches {
        let Some(keys) = store.batch_keys(b.seq)? else {
            continue;
        };
        for k in &keys {
            if !line(export_line(b, k)) {
                return Ok(done);
            }
            done += 1;
        }
        progress(done, total);
    }
    Ok(done)
}

/// `tally stats` / `GET /v1/stats`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatsView {
    pub path: String,
    pub schema_version: u32,
    pub supported_schema_version: u32,
    pub created: String,
    pub size_on_disk_bytes: u64,
    pub ids: u64,
    pub batches: u64,
    pub oldest_batch: Option<String>,
    pub newest_batch: Option<String>,
    pub partitions: u64,
    pub dead_letters: u64,
    pub index_bytes: u64,
}

pub fn stats(store: &Store) -> Result<StatsView, StoreError> {
    let batches = store.batches()?;
    Ok(StatsView {
        path: store.path().display().to_string(),
        schema_version: store.schema_version()?,
        supported_schema_version: SCHEMA_VERSION,
        created: ms_text(store.created_at_ms()),
        size_on_disk_bytes: store.size_on_disk()?,
        ids: store.id_count() as u64,
        batches: batches.len() as u64,
        oldest_batch: batches.iter().map(|b| b.committed_at_ms).min().map(ms_text),
        newest_batch: batches.iter().map(|b| b.committed_at_ms).max().map(ms_text),
        partitions: store.offsets()?.len() as u64,
        dead_letters: store.dead_letter_count() as u64,
        index_bytes: store.index_bytes() as u64,
    })
}

/// Bytes as UTF-8 text when they are, else hex — never silently mangled.
pub fn bytes_json(b: &Option<Vec<u8>>) -> Value {
    match b {
        None => Value::Null,
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => json!(s),
            Err(_) => json!({ "hex": b.iter().map(|x| format!("{x:02x}")).collect::<String>() }),
        },
    }
}

/// A dead letter; `full` adds timestamp, headers and payload.
pub fn dead_letter(id: u64, d: &DeadLetter, full: bool) -> Value {
    let mut v = json!({
        "id": id,
        "route": d.route,
        "topic": d.topic,
        "partition": d.partition,
        "offset": d.offset,
        "key": bytes_json(&d.key),
        "reason": d.reason,
        "class": d.class,
        "attempts": d.attempts,
        "first_seen": ms(d.first_seen_ms),
        "last_seen": ms(d.last_seen_ms),
    });
    if full {
        v["timestamp"] = ms(d.timestamp_ms);
        v["headers"] = Value::Array(
            d.headers
                .iter()
                .map(|(k, val)| json!({ "key": k, "value": bytes_json(val) }))
                .collect(),
        );
        v["payload"] = bytes_json(&d.payload);
    }
    v
}

/// Dead letters filtered like `tally dlq list --route R --reason TEXT`.
pub fn dead_letter_list(
    store: &Store,
    route: Option<&str>,
    reason: Option<&str>,
) -> Result<Vec<Value>, StoreError> {
    Ok(store
        .dead_letters()?
        .into_iter()
        .filter(|(_, d)| route.is_none_or(|r| d.route == r))
        .filter(|(_, d)| reason.is_none_or(|r| d.reason.contains(r)))
        .map(|(id, d)| dead_letter(id, &d, false))
        .collect())
}

/// A replay's outcome per dead letter plus totals, as the admin API answers
/// and `tally dlq replay` prints.
pub fn replay_summary(summary: &crate::dlq::ReplaySummary) -> Value {
    use crate::dlq::ReplayOutcome;
    let outcomes: Vec<Value> = summary
        .outcomes
        .iter()
        .map(|(id, o)| match o {
            ReplayOutcome::Replayed => json!({ "id": id, "outcome": "replayed" }),
            ReplayOutcome::Duplicate => json!({ "id": id, "outcome": "duplicate" }),
            ReplayOutcome::StillFailing { class, reason } => {
                json!({ "id": id, "outcome": "still_failing", "class": class, "reason": reason })
            }
        })
        .collect();
    json!({
        "outcomes": outcomes,
        "replayed": summary.replayed(),
        "duplicate": summary.duplicates(),
        "still_failing": summary.still_failing(),
    })
}
