//! `killbill-usage`: the Kill Bill Kafka consumer plugin's usage event.
//!
//! ```json
//! {"subscriptionExternalKey": "...", "trackingId": "...", "tenantId": "...",
//!  "unitUsageRecords": [{"unitType": "...", "usageRecords": [{"recordDate": "...", "amount": 1.5}]}]}
//! ```
//! Fields are read as raw JSON first so that every problem is reported with
//! its path, and amounts keep their exact text.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::record_date::{kind, parse_record_date};
use super::{Decimal, DecodeError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageEvent {
    pub subscription_external_key: String,
    pub tracking_id: String,
    pub tenant_id: String,
    pub unit_usage_records: Vec<UnitUsage>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitUsage {
    pub unit_type: String,
    pub usage_records: Vec<UsageRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    pub record_date: DateTime<Utc>,
    pub amount: Decimal,
}

impl UsageEvent {
    /// Kill Bill's own dedupe scope: a trackingId is unique per subscription
    /// within a tenant. Never broader, or a legitimate record would be dropped.
    pub fn dedupe_key(&self) -> String {
        format!(
            "{}/{}/{}",
            self.tenant_id, self.subscription_external_key, self.tracking_id
        )
    }
}

#[derive(Deserialize)]
struct RawEvent<'a> {
    #[serde(borrow, rename = "subscriptionExternalKey")]
    subscription_external_key: Option<&'a RawValue>,
    #[serde(borrow, rename = "trackingId")]
    tracking_id: Option<&'a RawValue>,
    #[serde(borrow, rename = "tenantId")]
    tenant_id: Option<&'a RawValue>,
    #[serde(borrow, rename = "unitUsageRecords")]
    unit_usage_records: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawUnit<'a> {
    #[serde(borrow, rename = "unitType")]
    unit_type: Option<&'a RawValue>,
    #[serde(borrow, rename = "usageRecords")]
    usage_records: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawRecord<'a> {
    #[serde(borrow, rename = "recordDate")]
    record_date: Option<&'a RawValue>,
    #[serde(borrow)]
    amount: Option<&'a RawValue>,
}

pub(super) fn parse(bytes: &[u8]) -> Result<UsageEvent, DecodeError> {
    match super::killbill_fast::parse(bytes) {
        Some(ev) => Ok(ev),
        None => parse_checked(bytes),
    }
}

/// Only the dedupe key, for sinks that never read the parsed event: the
/// same acceptance and the same errors as `parse`.
pub(super) fn parse_key(bytes: &[u8]) -> Result<String, DecodeError> {
    match super::killbill_fast::dedupe_key(bytes) {
        Some(key) => Ok(key),
        None => parse_checked(bytes).map(|ev| ev.dedupe_key()),
    }
}

/// The checked decoder: slower, and every error names its field path.
pub(super) fn parse_checked(bytes: &[u8]) -> Result<UsageEvent, DecodeError> {
    let text = std::str::from_utf8(bytes).map_err(|e| DecodeError::NotUtf8(e.to_string()))?;
    let raw: &RawValue =
        serde_json::from_str(text).map_err(|e| DecodeError::InvalidJson(e.to_string()))?;
    if !raw.get().starts_with('{') {
        return Err(DecodeError::NotAnObject);
    }
    let ev: RawEvent<'_> =
        serde_json::from_str(raw.get()).map_err(|e| DecodeError::InvalidJson(e.to_string()))?;
    let units_raw = required(ev.unit_usage_records, "unitUsageRecords")?;
    let units: Vec<&RawValue> = array(units_raw, "unitUsageRecords")?;
    let mut unit_usage_records = Vec::with_capacity(units.len());
    for (i, unit_raw) in units.into_iter().enumerate() {
        let path = format!("unitUsageRecords[{i}]");
        let unit: RawUnit<'_> = object(unit_raw, &path)?;
        let unit_type = string(unit.unit_type, &format!("{path}.unitType"))?;
        let records_path = format!("{path}.usageRecords");
        let records: Vec<&RawValue> =
            array(required(unit.usage_records, &records_path)?, &records_path)?;
        let mut usage_records = Vec::with_capacity(records.len());
        for (j, rec_raw) in records.into_iter().enumerate() {
            let rpath = format!("{records_path}[{j}]");
            let rec: RawRecord<'_> = object(rec_raw, &rpath)?;
            let date_path = format!("{rpath}.recordDate");
            let date_value: serde_json::Value =
                serde_json::from_str(required(rec.record_date, &date_path)?.get())
                    .map_err(|e| DecodeError::field(&date_path, e.to_string()))?;
            let record_date =
                parse_record_date(&date_value).map_err(|e| DecodeError::field(&date_path, e))?;
            let amount = amount(
                required(rec.amount, &format!("{rpath}.amount"))?,
                &format!("{rpath}.amount"),
            )?;
            usage_records.push(UsageRecord {
                record_date,
                amount,
            });
        }
        unit_usage_records.push(UnitUsage {
            unit_type,
            usage_records,
        });
    }
    Ok(UsageEvent {
        subscription_external_key: string(ev.subscription_external_key, "subscriptionExternalKey")?,
        tracking_id: string(ev.tracking_id, "trackingId")?,
        tenant_id: string(ev.tenant_id, "tenantId")?,
        unit_usage_records,
    })
}

fn required<'a>(v: Option<&'a RawValue>, path: &str) -> Result<&'a RawValue, DecodeError> {
    match v {
        Some(v) if v.get() != "null" => Ok(v),
        _ => Err(DecodeError::field(path, "is missing")),
    }
}

fn string(v: Option<&RawValue>, path: &str) -> Result<String, DecodeError> {
    let v = required(v, path)?;
    let s: String = serde_json::from_str(v.get())
        .map_err(|_| DecodeError::field(path, format!("expected a string, got {}", raw_kind(v))))?;
    if s.trim().is_empty() {
        return Err(DecodeError::field(path, "must not be empty"));
    }
    if s.contains('/') && path == "tenantId" {
        // The dedupe key joins fields with '/'; a tenant id is a UUID and never has one.
        return Err(DecodeError::field(path, "must not contain '/'"));
    }
    Ok(s)
}

fn array<'a>(v: &'a RawValue, path: &str) -> Result<Vec<&'a RawValue>, DecodeError> {
    let items: Vec<&RawValue> = serde_json::from_str(v.get())
        .map_err(|_| DecodeError::field(path, format!("expected an array, got {}", raw_kind(v))))?;
    if items.is_empty() {
        return Err(DecodeError::field(path, "must not be empty"));
    }
    Ok(items)
}

fn object<'a, T: Deserialize<'a>>(v: &'a RawValue, path: &str) -> Result<T, DecodeError> {
    if !v.get().starts_with('{') {
        return Err(DecodeError::field(
            path,
            format!("expected an object, got {}", raw_kind(v)),
        ));
    }
    serde_json::from_str(v.get()).map_err(|e| DecodeError::field(path, e.to_string()))
}

fn amount(v: &RawValue, path: &str) -> Result<Decimal, DecodeError> {
    let text = v.get();
    let parsed = if text.starts_with('"') {
        let s: String =
            serde_json::from_str(text).map_err(|e| DecodeError::field(path, e.to_string()))?;
        Decimal::parse(s.trim())
    } else {
        Decimal::parse(text)
    };
    let decimal = parsed.ok_or_else(|| {
        DecodeError::field(path, format!("expected a decimal number, got {text}"))
    })?;
    decimal
        .check_range()
        .map_err(|e| DecodeError::field(path, e))?;
    Ok(decimal)
}

fn raw_kind(v: &RawValue) -> &'static str {
    match serde_json::from_str::<serde_json::Value>(v.get()) {
        Ok(value) => kind(&value),
        Err(_) => "invalid JSON",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"subscriptionExternalKey":"sub-1","trackingId":"t-1","tenantId":"ten-a",
        "unitUsageRecords":[{"unitType":"calls","usageRecords":[
            {"recordDate":"2026-11-01T10:00:00","amount":12.345678901234567890},
            {"recordDate":1793527200000,"amount":"0.10"}]}]}"#;

    #[test]
    fn parses_and_keeps_amount_text() {
        let ev = parse(GOOD.as_bytes()).unwrap();
        assert_eq!(ev.dedupe_key(), "ten-a/sub-1/t-1");
        let recs = &ev.unit_usage_records[0].usage_records;
        assert_eq!(recs[0].amount.as_str(), "12.345678901234567890");
        assert_eq!(recs[1].amount.as_str(), "0.10");
        assert_eq!(recs[0].record_date, recs[1].record_date);
    }

    #[test]
    fn errors_name_the_path() {
        let cases = [
            (
                r#"{"trackingId":"t","tenantId":"x","unitUsageRecords":[{"unitType":"u","usageRecords":[{"recordDate":"2026-11-01","amount":1}]}]}"#,
                "subscriptionExternalKey",
            ),
            (
                r#"{"subscriptionExternalKey":"s","trackingId":7,"tenantId":"x","unitUsageRecords":[{"unitType":"u","usageRecords":[{"recordDate":"2026-11-01","amount":1}]}]}"#,
                "trackingId",
            ),
            (
                r#"{"subscriptionExternalKey":"s","trackingId":"t","tenantId":"x","unitUsageRecords":[]}"#,
                "unitUsageRecords",
            ),
            (
                r#"{"subscriptionExternalKey":"s","trackingId":"t","tenantId":"x","unitUsageRecords":[{"unitType":"u","usageRecords":[{"recordDate":"soon","amount":1}]}]}"#,
                "unitUsageRecords[0].usageRecords[0].recordDate",
            ),
            (
                r#"{"subscriptionExternalKey":"s","trackingId":"t","tenantId":"x","unitUsageRecords":[{"unitType":"u","usageRecords":[{"recordDate":"2026-11-01","amount":"lots"}]}]}"#,
                "unitUsageRecords[0].usageRecords[0].amount",
            ),
            (
                r#"{"subscriptionExternalKey":"s","trackingId":"t","tenantId":"x","unitUsageRecords":[{"unitType":"u","usageRecords":[{"recordDate":"2026-11-01","amount":true}]}]}"#,
                "unitUsageRecords[0].usageRecords[0].amount",
            ),
        ];
        for (input, path) in cases {
            match parse(input.as_bytes()) {
                Err(DecodeError::Field { field, .. }) => assert_eq!(field, path, "{input}"),
                other => panic!("{input}: {other:?}"),
            }
        }
    }

    #[test]
    fn not_json_or_not_object() {
        assert!(matches!(parse(b"{nope"), Err(DecodeError::InvalidJson(_))));
        assert!(matches!(parse(b"[1,2]"), Err(DecodeError::NotAnObject)));
        assert!(matches!(parse(&[0xff, 0xfe]), Err(DecodeError::NotUtf8(_))));
    }
}
