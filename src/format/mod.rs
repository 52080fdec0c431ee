//! Record formats: turn a Kafka record's bytes into a validated event and
//! its dedupe key, or a `DecodeError` that says exactly what is wrong.
//!
//! The event is kept as the record's own JSON text (validated, trimmed), so
//! amounts and ids reach the sink byte for byte — nothing passes through f64.

mod decimal;
mod json;
mod killbill_fast;
mod killbill_usage;
mod record_date;

use bytes::Bytes;

use crate::config::{DedupeSource, FormatKind, Route};

pub use decimal::Decimal;
pub use killbill_usage::{UnitUsage, UsageEvent, UsageRecord};
pub use record_date::parse_record_date;

/// A record that decoded cleanly.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// `None` when the route dedupes nothing (at-least-once).
    pub dedupe_key: Option<String>,
    /// The record's JSON value, validated, surrounding whitespace trimmed.
    pub event: Bytes,
    /// The parsed Kill Bill usage event, for `killbill-usage` routes.
    pub usage: Option<UsageEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record has no value (null/tombstone)")]
    NullValue,
    #[error("value is not valid UTF-8 JSON: {0}")]
    NotUtf8(String),
    #[error("value is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("value is JSON but not an object")]
    NotAnObject,
    #[error("field `{field}`: {problem}")]
    Field { field: String, problem: String },
    #[error("dedupe key: {0}")]
    DedupeKey(String),
}

impl DecodeError {
    pub(crate) fn field(field: impl Into<String>, problem: impl Into<String>) -> Self {
        DecodeError::Field {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// A route's decoder: its format plus where the dedupe key comes from.
#[derive(Debug, Clone)]
pub struct Decoder {
    kind: FormatKind,
    dedupe: DedupeSource,
}

impl Decoder {
    pub fn for_route(route: &Route) -> Decoder {
        Decoder {
            kind: route.format,
            dedupe: route.dedupe.clone(),
        }
    }

    pub fn new(kind: FormatKind, dedupe: DedupeSource) -> Decoder {
        Decoder { kind, dedupe }
    }

    pub fn decode(
        &self,
        key: Option<&Bytes>,
        value: Option<&Bytes>,
    ) -> Result<Decoded, DecodeError> {
        let value = value.ok_or(DecodeError::NullValue)?;
        let event = trim_json(value);
        match self.kind {
            FormatKind::KillbillUsage => {
                let usage = killbill_usage::parse(&event)?;
                Ok(Decoded {
                    dedupe_key: Some(usage.dedupe_key()),
                    event,
                    usage: Some(usage),
                })
            }
            FormatKind::Json => {
                let dedupe_key = json::parse(&event, &self.dedupe, key)?;
                Ok(Decoded {
                    dedupe_key,
                    event,
                    usage: None,
                })
            }
        }
    }
}

/// Slice off JSON-insignificant whitespace (a trailing newline from a
/// producer reading JSON lines is common) without copying.
fn trim_json(value: &Bytes) -> Bytes {
    let is_ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let start = value.iter().position(|b| !is_ws(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ws(b))
        .map_or(start, |i| i + 1);
    value.slice(start..end)
}
