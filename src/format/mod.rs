//! Record formats: turn a Kafka record's bytes into a validated event and
//! its dedupe key, or a `DecodeError` that says exactly what is wrong.
//!
//! The event is kept as the record's own JSON text (validated, trimmed), so
//! amounts and ids reach the sink byte for byte — nothing passes through f64.

mod decimal;
mod frame;
mod json;
mod killbill_fast;
mod killbill_usage;
#[cfg(test)]
mod proptests;
mod record_date;
mod scan;
mod schema;

use bytes::Bytes;

use crate::config::{DEFAULT_MAX_RECORD_BYTES, DedupeSource, FormatKind, Route, SinkKind};

pub use decimal::Decimal;
pub use frame::schema_id as framed_schema_id;
pub use killbill_usage::{UnitUsage, UsageEvent, UsageRecord};
pub use record_date::parse_record_date;
pub use schema::{RecordSchema, SchemaLoadError};

/// A record that decoded cleanly.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// `None` when the route dedupes nothing (at-least-once).
    pub dedupe_key: Option<String>,
    /// The record's JSON value, validated, surrounding whitespace trimmed.
    pub event: Bytes,
    /// The parsed Kill Bill usage event, for `killbill-usage` routes.
    pub usage: Option<UsageEvent>,
    /// The schema-registry schema id when the value was framed (the frame
    /// itself is not part of `event`).
    pub schema_id: Option<u32>,
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
    /// The route's JSON Schema rejected a record the format accepted.
    #[error("fails the route's JSON Schema at {path} (rule `{keyword}`): {message}")]
    Schema {
        /// JSON pointer into the record (`/` for the whole record).
        path: String,
        /// The schema keyword that failed (`required`, `type`, `minimum`, …).
        keyword: String,
        message: String,
    },
    #[error("dedupe key: {0}")]
    DedupeKey(String),
    #[error("record value is {size} bytes, over max_record_bytes = {max}; not parsed")]
    TooLarge { size: usize, max: usize },
    #[error(
        "value starts with schema-registry magic byte 0 but is {0} bytes, shorter than the 5-byte frame header"
    )]
    TruncatedFrame(usize),
    /// A framed value whose body failed: the schema id helps find the producer.
    #[error("{source} (schema-registry frame, schema id {schema_id})")]
    Framed {
        schema_id: u32,
        source: Box<DecodeError>,
    },
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
    max_record_bytes: usize,
    schema: Option<RecordSchema>,
    /// The `json` format's dedupe pointer, split once for the fast path.
    pointer: Option<json::Pointer>,
    /// Build `Decoded::usage` (only the Kill Bill sink reads it; the other
    /// sinks send the event's own bytes, so they skip building it).
    keep_usage: bool,
}

impl Decoder {
    pub fn for_route(route: &Route) -> Decoder {
        Decoder {
            kind: route.format,
            dedupe: route.dedupe.clone(),
            max_record_bytes: route.max_record_bytes,
            schema: route.schema.clone(),
            pointer: json::Pointer::compile(&route.dedupe),
            keep_usage: route.sink == SinkKind::Killbill,
        }
    }

    pub fn new(kind: FormatKind, dedupe: DedupeSource) -> Decoder {
        Decoder {
            kind,
            pointer: json::Pointer::compile(&dedupe),
            dedupe,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            schema: None,
            keep_usage: true,
        }
    }

    /// Whether `decode` builds `Decoded::usage` (default: yes).
    pub fn keep_usage(self, keep_usage: bool) -> Decoder {
        Decoder { keep_usage, ..self }
    }

    pub fn with_max_record_bytes(self, max_record_bytes: usize) -> Decoder {
        Decoder {
            max_record_bytes,
            ..self
        }
    }

    pub fn decode(
        &self,
        key: Option<&Bytes>,
        value: Option<&Bytes>,
    ) -> Result<Decoded, DecodeError> {
        let value = value.ok_or(DecodeError::NullValue)?;
        // Checked before anything looks inside: the size alone decides.
        if value.len() > self.max_record_bytes {
            return Err(DecodeError::TooLarge {
                size: value.len(),
                max: self.max_record_bytes,
            });
        }
        let (schema_id, body_at) = frame::strip(value)?;
        match schema_id {
            None => self.decode_body(key, value, body_at),
            Some(id) => match self.decode_body(key, value, body_at) {
                Ok(decoded) => Ok(Decoded {
                    schema_id: Some(id),
                    ..decoded
                }),
                Err(e) => Err(DecodeError::Framed {
                    schema_id: id,
                    source: Box::new(e),
                }),
            },
        }
    }

    pub fn with_schema(self, schema: Option<RecordSchema>) -> Decoder {
        Decoder { schema, ..self }
    }

    /// The format's own checks first (their reasons are the most specific),
    /// then the route's schema, if any.
    /// `value[body_at..]` is the body (after a schema-registry frame).
    fn decode_body(
        &self,
        key: Option<&Bytes>,
        value: &Bytes,
        body_at: usize,
    ) -> Result<Decoded, DecodeError> {
        let decoded = self.decode_format(key, value, body_at)?;
        if let Some(schema) = &self.schema {
            schema.check(&decoded.event)?;
        }
        Ok(decoded)
    }

    fn decode_format(
        &self,
        key: Option<&Bytes>,
        value: &Bytes,
        body_at: usize,
    ) -> Result<Decoded, DecodeError> {
        let event = trim_json(value, body_at);
        match self.kind {
            FormatKind::KillbillUsage if !self.keep_usage => Ok(Decoded {
                dedupe_key: Some(killbill_usage::parse_key(&event)?),
                event,
                usage: None,
                schema_id: None,
            }),
            FormatKind::KillbillUsage => {
                let usage = killbill_usage::parse(&event)?;
                Ok(Decoded {
                    dedupe_key: Some(usage.dedupe_key()),
                    event,
                    usage: Some(usage),
                    schema_id: None,
                })
            }
            FormatKind::Json => {
                let dedupe_key = json::parse(&event, &self.dedupe, self.pointer.as_ref(), key)?;
                Ok(Decoded {
                    dedupe_key,
                    event,
                    usage: None,
                    schema_id: None,
                })
            }
        }
    }
}

/// Both Kill Bill usage decoders on the same bytes: the fast path (None
/// when it declines) and the checked one. For the fuzz targets under fuzz/.
#[doc(hidden)]
pub fn killbill_both_paths(bytes: &[u8]) -> (Option<UsageEvent>, Result<UsageEvent, DecodeError>) {
    (
        killbill_fast::parse(bytes),
        killbill_usage::parse_checked(bytes),
    )
}

/// The fast Kill Bill decoder alone (None when it declines), for benches.
#[doc(hidden)]
pub fn killbill_fast_path(bytes: &[u8]) -> Option<UsageEvent> {
    killbill_fast::parse(bytes)
}

/// The checked Kill Bill decoder alone, for benches.
#[doc(hidden)]
pub fn killbill_checked_path(bytes: &[u8]) -> Result<UsageEvent, DecodeError> {
    killbill_usage::parse_checked(bytes)
}

/// Length of the longest prefix of `bytes` that a JSON string can hold
/// without escapes (no `"`, `\\` or control character): for writers that
/// copy plain text straight into JSON output.
pub fn json_plain_prefix(bytes: &[u8]) -> usize {
    scan::skip_plain(bytes, 0)
}

/// The body `value[from..]` with JSON-insignificant whitespace sliced off
/// (a trailing newline from a producer reading JSON lines is common),
/// without copying.
fn trim_json(value: &Bytes, from: usize) -> Bytes {
    let is_ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let body = value.get(from..).unwrap_or_default();
    let start = body.iter().position(|b| !is_ws(b)).unwrap_or(body.len());
    let end = body
        .iter()
        .rposition(|b| !is_ws(b))
        .map_or(start, |i| i + 1);
    value.slice(from + start..from + end)
}

#[cfg(test)]
mod tests {
    use super::*;

    const USAGE: &[u8] = br#"{"subscriptionExternalKey":"s","trackingId":"t","tenantId":"x","unitUsageRecords":[{"unitType":"u","usageRecords":[{"recordDate":"2026-11-01","amount":1}]}]}"#;

    fn framed(id: u32, body: &[u8]) -> Bytes {
        let mut v = vec![0];
        v.extend_from_slice(&id.to_be_bytes());
        v.extend_from_slice(body);
        Bytes::from(v)
    }

    #[test]
    fn oversized_values_are_refused_before_parsing() {
        let d = Decoder::new(FormatKind::Json, DedupeSource::None).with_max_record_bytes(8);
        assert!(
            d.decode(None, Some(&Bytes::from_static(b"{\"a\":1}")))
                .is_ok()
        );
        // Not even JSON: the size alone decides, so the reason is the size.
        let big = Bytes::from_static(b"not json!");
        let e = d.decode(None, Some(&big)).unwrap_err();
        assert_eq!(e, DecodeError::TooLarge { size: 9, max: 8 });
        assert!(e.to_string().contains("over max_record_bytes = 8"), "{e}");
    }

    #[test]
    fn schema_registry_frame_is_stripped_for_every_format() {
        let kb = Decoder::new(FormatKind::KillbillUsage, DedupeSource::Format);
        let d = kb.decode(None, Some(&framed(7, USAGE))).unwrap();
        assert_eq!(d.schema_id, Some(7));
        assert_eq!(&d.event[..], USAGE);
        assert_eq!(d.dedupe_key.as_deref(), Some("x/s/t"));

        let json = Decoder::new(FormatKind::Json, DedupeSource::Pointer("/id".into()));
        let d = json
            .decode(None, Some(&framed(1, b" {\"id\":\"a\"}\n")))
            .unwrap();
        assert_eq!(
            (d.schema_id, &d.event[..]),
            (Some(1), &b"{\"id\":\"a\"}"[..])
        );
        let plain = json
            .decode(None, Some(&Bytes::from_static(b"{\"id\":\"a\"}")))
            .unwrap();
        assert_eq!(plain.schema_id, None);
    }

    #[test]
    fn skipping_the_usage_event_keeps_keys_and_errors() {
        let full = Decoder::new(FormatKind::KillbillUsage, DedupeSource::Format);
        let lean = full.clone().keep_usage(false);
        let sample = include_str!("../../data/sample/usage-events.jsonl");
        let bad = [
            &br#"{"trackingId":"t"}"#[..],
            br#"{"subscriptionExternalKey":"s","trackingId":"t","tenantId":"a/b","unitUsageRecords":[{"unitType":"u","usageRecords":[{"recordDate":"2026-11-01","amount":1}]}]}"#,
            b"[1]",
        ];
        let inputs = sample.lines().map(str::as_bytes).chain(bad);
        for input in inputs {
            let v = Bytes::copy_from_slice(input);
            let (a, b) = (full.decode(None, Some(&v)), lean.decode(None, Some(&v)));
            match (a, b) {
                (Ok(a), Ok(b)) => {
                    assert_eq!(a.dedupe_key, b.dedupe_key);
                    assert_eq!(a.event, b.event);
                    assert!(a.usage.is_some() && b.usage.is_none());
                }
                (Err(a), Err(b)) => assert_eq!(a, b),
                (a, b) => panic!("{a:?} vs {b:?}"),
            }
        }
        assert!(lean.decode(None, Some(&framed(3, USAGE))).is_ok());
    }

    #[test]
    fn a_framed_bad_body_names_the_schema_id() {
        let json = Decoder::new(FormatKind::Json, DedupeSource::Pointer("/id".into()));
        let e = json
            .decode(None, Some(&framed(42, b"\x02avro-ish\xff")))
            .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("schema id 42"), "{text}");
        assert!(text.contains("not valid UTF-8"), "{text}");
        let e = json
            .decode(None, Some(&Bytes::from_static(b"\x00\x01")))
            .unwrap_err();
        assert_eq!(e, DecodeError::TruncatedFrame(2));
    }
}
