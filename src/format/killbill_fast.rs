//! One-pass decoder for well-formed `killbill-usage` events.
//!
//! The checked decoder (`killbill_usage::parse_checked`) reads fields as raw
//! JSON first so every error names its path, which costs several passes and
//! an allocation per path. Almost every record is well formed, so this path
//! reads the event once, with borrowed strings, and returns `None` at the
//! first doubt; the caller then runs the checked decoder for the exact error.
//! It must never accept an input the checked decoder rejects.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::killbill_usage::{UnitUsage, UsageEvent, UsageRecord};
use super::{Decimal, parse_record_date};

pub(super) fn parse(bytes: &[u8]) -> Option<UsageEvent> {
    let mut unit_usage_records = Vec::new();
    let top = walk(bytes, Some(&mut unit_usage_records))?;
    Some(UsageEvent {
        subscription_external_key: top.subscription.into_owned(),
        tracking_id: top.tracking.into_owned(),
        tenant_id: top.tenant.into_owned(),
        unit_usage_records,
    })
}

/// The same checks as `parse`, but only the dedupe key is built (one
/// allocation): for sinks that never read the parsed event. Equal to
/// `parse(bytes).map(|e| e.dedupe_key())` on every input.
pub(super) fn dedupe_key(bytes: &[u8]) -> Option<String> {
    let top = walk(bytes, None)?;
    let (t, s, k) = (&*top.tenant, &*top.subscription, &*top.tracking);
    let mut key = String::with_capacity(t.len() + s.len() + k.len() + 2);
    for (i, part) in [t, s, k].into_iter().enumerate() {
        if i > 0 {
            key.push('/');
        }
        key.push_str(part);
    }
    Some(key)
}

/// The validated top-level strings of an event.
struct TopLevel<'a> {
    subscription: Cow<'a, str>,
    tracking: Cow<'a, str>,
    tenant: Cow<'a, str>,
}

/// Validate the whole event in one pass; the owned unit records are built
/// into `units_out` only when asked for.
fn walk<'a>(bytes: &'a [u8], mut units_out: Option<&mut Vec<UnitUsage>>) -> Option<TopLevel<'a>> {
    let text = std::str::from_utf8(bytes).ok()?;
    // A struct would also deserialize from a JSON array; only objects are events.
    if !text.trim_start().starts_with('{') {
        return None;
    }
    let ev: Event<'a> = serde_json::from_str(text).ok()?;
    let units = ev.units.flatten()?;
    if units.is_empty() {
        return None;
    }
    if let Some(out) = units_out.as_deref_mut() {
        out.reserve(units.len());
    }
    for unit in units {
        let records = unit.records.flatten()?;
        if records.is_empty() {
            return None;
        }
        let build = units_out.is_some();
        let mut usage_records = Vec::with_capacity(if build { records.len() } else { 0 });
        for rec in records {
            let record_date = record_date(rec.date.flatten()?)?;
            let amount = amount(rec.amount.flatten()?)?;
            if build {
                usage_records.push(UsageRecord {
                    record_date,
                    amount,
                });
            }
        }
        let unit_type = non_empty(unit.unit_type.flatten()?)?;
        if let Some(out) = units_out.as_deref_mut() {
            out.push(UnitUsage {
                unit_type: unit_type.into_owned(),
                usage_records,
            });
        }
    }
    let tenant = non_empty(ev.tenant.flatten()?)?;
    if tenant.contains('/') {
        return None;
    }
    Some(TopLevel {
        subscription: non_empty(ev.subscription.flatten()?)?,
        tracking: non_empty(ev.tracking.flatten()?)?,
        tenant,
    })
}

fn non_empty(s: Cow<'_, str>) -> Option<Cow<'_, str>> {
    (!s.trim().is_empty()).then_some(s)
}

fn amount(raw: &RawValue) -> Option<Decimal> {
    let text = raw.get();
    let decimal = match text.strip_prefix('"') {
        // A string amount without escapes; anything fancier takes the checked path.
        Some(rest) => Decimal::parse(rest.strip_suffix('"').filter(|s| !s.contains('\\'))?.trim())?,
        None => Decimal::parse(text)?,
    };
    decimal.check_range().ok()?;
    Some(decimal)
}

fn record_date(raw: &RawValue) -> Option<DateTime<Utc>> {
    let text = raw.get();
    if let Some(s) = text.strip_prefix('"').and_then(|s| s.strip_suffix('"'))
        && let Some(dt) = plain_utc(s)
    {
        return Some(dt);
    }
    // Offsets, fractions, millis: the general parser (one small Value).
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    parse_record_date(&value).ok()
}

/// `YYYY-MM-DDTHH:MM:SS` with no zone (UTC) or a trailing `Z`: the common
/// case, parsed without chrono's format machinery.
fn plain_utc(s: &str) -> Option<DateTime<Utc>> {
    let s = s.strip_suffix('Z').unwrap_or(s);
    let b = s.as_bytes();
    if b.len() != 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let date = NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    Some(
        date.and_hms_opt(num(11..13)?, num(14..16)?, num(17..19)?)?
            .and_utc(),
    )
}

/// Each field: outer `Option` = the key was seen, inner = its value was not null.
type Field<T> = Option<Option<T>>;

#[derive(Default)]
struct Event<'a> {
    subscription: Field<Cow<'a, str>>,
    tracking: Field<Cow<'a, str>>,
    tenant: Field<Cow<'a, str>>,
    units: Field<Vec<Unit<'a>>>,
}

#[derive(Default)]
struct Unit<'a> {
    unit_type: Field<Cow<'a, str>>,
    records: Field<Vec<Record<'a>>>,
}

#[derive(Default)]
struct Record<'a> {
    date: Field<&'a RawValue>,
    amount: Field<&'a RawValue>,
}

/// Set a field once: a repeated key is ambiguous and refused, as the checked
/// decoder does.
fn once<T, E: de::Error>(slot: &mut Option<T>, value: T, name: &'static str) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(name));
    }
    *slot = Some(value);
    Ok(())
}

/// `null` counts as missing, like the checked decoder.
fn nullable<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
    map: &mut A,
) -> Result<Option<T>, A::Error> {
    map.next_value::<Option<T>>()
}

macro_rules! map_only_visitor {
    ($ty:ident, $name:literal, |$map:ident, $key:ident, $out:ident| $body:block) => {
        impl<'de: 'a, 'a> Deserialize<'de> for $ty<'a> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V<'a>(std::marker::PhantomData<&'a ()>);
                impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
                    type Value = $ty<'a>;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($name)
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut $map: A) -> Result<Self::Value, A::Error> {
                        let mut $out = $ty::default();
                        while let Some($key) = $map.next_key::<Cow<'de, str>>()? $body
                        Ok($out)
                    }
                }
                d.deserialize_map(V(std::marker::PhantomData))
            }
        }
    };
}

// A present-but-null field must still count as "seen" for duplicate detection,
// so each arm records presence separately from the value.
map_only_visitor!(Event, "a usage event object", |map, key, out| {
    match key.as_ref() {
        "subscriptionExternalKey" => {
            let v = nullable(&mut map)?;
            once(&mut out.subscription, v, "subscriptionExternalKey")?;
        }
        "trackingId" => {
            let v = nullable(&mut map)?;
            once(&mut out.tracking, v, "trackingId")?;
        }
        "tenantId" => {
            let v = nullable(&mut map)?;
            once(&mut out.tenant, v, "tenantId")?;
        }
        "unitUsageRecords" => {
            let v = nullable(&mut map)?;
            once(&mut out.units, v, "unitUsageRecords")?;
        }
        _ => {
            map.next_value::<IgnoredAny>()?;
        }
    }
});

map_only_visitor!(Unit, "a unit usage object", |map, key, out| {
    match key.as_ref() {
        "unitType" => {
            let v = nullable(&mut map)?;
            once(&mut out.unit_type, v, "unitType")?;
        }
        "usageRecords" => {
            let v = nullable(&mut map)?;
            once(&mut out.records, v, "usageRecords")?;
        }
        _ => {
            map.next_value::<IgnoredAny>()?;
        }
    }
});

map_only_visitor!(Record, "a usage record object", |map, key, out| {
    match key.as_ref() {
        "recordDate" => {
            let v: Option<&'de RawValue> = nullable(&mut map)?;
            once(&mut out.date, v, "recordDate")?;
        }
        "amount" => {
            let v: Option<&'de RawValue> = nullable(&mut map)?;
            once(&mut out.amount, v, "amount")?;
        }
        _ => {
            map.next_value::<IgnoredAny>()?;
        }
    }
});

#[cfg(test)]
mod tests {
    use super::super::killbill_usage::parse_checked;
    use super::*;

    fn corpus() -> Vec<Vec<u8>> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
        let mut inputs: Vec<Vec<u8>> =
            std::fs::read_to_string(root.join("sample/usage-events.jsonl"))
                .unwrap_or_default()
                .lines()
                .map(|l| l.as_bytes().to_vec())
                .collect();
        if let Ok(dir) = std::fs::read_dir(root.join("bad")) {
            for entry in dir.flatten() {
                inputs.push(std::fs::read(entry.path()).unwrap_or_default());
            }
        }
        let base = r#"{"subscriptionExternalKey":"s","trackingId":"t","tenantId":"x","unitUsageRecords":[{"unitType":"u","usageRecords":[{"recordDate":"2026-11-01T10:00:00","amount":1.5}]}]}"#;
        let crafted = [
            base.to_string(),
            base.replace(r#""amount":1.5"#, r#""amount":"2.50""#),
            base.replace(r#""amount":1.5"#, r#""amount":"2.5\u0030""#),
            base.replace(
                r#""recordDate":"2026-11-01T10:00:00""#,
                r#""recordDate":"2026-11-01T10:00:00Z""#,
            ),
            base.replace(
                r#""recordDate":"2026-11-01T10:00:00""#,
                r#""recordDate":"2026-11-01T12:00:00+02:00""#,
            ),
            base.replace(
                r#""recordDate":"2026-11-01T10:00:00""#,
                r#""recordDate":"2026-13-01T10:00:00""#,
            ),
            base.replace(
                r#""recordDate":"2026-11-01T10:00:00""#,
                r#""recordDate":"2026-11-01T25:00:00""#,
            ),
            base.replace(
                r#""recordDate":"2026-11-01T10:00:00""#,
                r#""recordDate":1793527200000"#,
            ),
            base.replace(
                r#""recordDate":"2026-11-01T10:00:00""#,
                r#""recordDate":null"#,
            ),
            base.replace(
                r#""trackingId":"t""#,
                r#""trackingId":"t","trackingId":"u""#,
            ),
            base.replace(
                r#""trackingId":"t""#,
                r#""trackingId":null,"trackingId":"u""#,
            ),
            base.replace(r#""trackingId":"t""#, r#""trackingId":"t\"q""#),
            base.replace(r#""trackingId":"t""#, r#""trackingId":" ""#),
            base.replace(r#""tenantId":"x""#, r#""tenantId":"a/b""#),
            base.replace(r#""unitType":"u""#, r#""unitType":7"#),
            base.replace(r#"{"recordDate""#, r#"{"extra":[1,{"a":2}],"recordDate""#),
            base.replace(
                r#"[{"recordDate":"2026-11-01T10:00:00","amount":1.5}]"#,
                r#"[["2026-11-01T10:00:00",1.5]]"#,
            ),
            base.replace(r#"[{"unitType":"u","usageRecords""#, r#"[["u","#)
                .replace("}]}]}", "]]]}"),
            r#"["s","t","x",[]]"#.to_string(),
            format!(" \n{base}\t"),
            base.replace("1.5", "1e400"),
            base.replace("1.5", "-0.000001"),
        ];
        inputs.extend(crafted.iter().map(|s| s.as_bytes().to_vec()));
        inputs
    }

    #[test]
    fn never_disagrees_with_the_checked_decoder() {
        let mut fast_hits = 0;
        for input in corpus() {
            let checked = parse_checked(&input);
            assert_eq!(
                dedupe_key(&input),
                parse(&input).map(|e| e.dedupe_key()),
                "key-only path: {}",
                String::from_utf8_lossy(&input)
            );
            if let Some(fast) = parse(&input) {
                fast_hits += 1;
                assert_eq!(
                    Ok(&fast),
                    checked.as_ref(),
                    "{}",
                    String::from_utf8_lossy(&input)
                );
            }
        }
        assert!(fast_hits >= 50, "fast path used only {fast_hits} times");
    }

    #[test]
    fn common_dates_take_the_fast_path() {
        assert_eq!(
            plain_utc("2026-11-01T10:00:00").unwrap().to_rfc3339(),
            "2026-11-01T10:00:00+00:00"
        );
        assert_eq!(
            plain_utc("2026-11-01T10:00:00Z").unwrap().to_rfc3339(),
            "2026-11-01T10:00:00+00:00"
        );
        assert!(plain_utc("2026-02-30T10:00:00").is_none());
        assert!(plain_utc("2026-11-01T10:00:00.5").is_none());
        assert!(plain_utc("2026-11-01 10:00:00").is_none());
    }
}
