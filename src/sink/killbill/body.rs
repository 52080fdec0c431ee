//! The `POST /1.0/kb/usages` body, written by hand so that each amount goes
//! out as the exact decimal text it arrived in (a JSON number, never an f64).

use chrono::{DateTime, SecondsFormat, Utc};

use crate::format::UsageEvent;
use crate::sink::json_text::push_str;

/// `{"subscriptionId":…,"trackingId":…,"unitUsageRecords":[{"unitType":…,"usageRecords":[{"recordDate":…,"amount":…}]}]}`
pub(super) fn usage_body(subscription_id: &str, ev: &UsageEvent) -> Vec<u8> {
    let mut buf = Vec::with_capacity(160 + 96 * ev.unit_usage_records.len());
    buf.extend_from_slice(b"{\"subscriptionId\":");
    push_str(&mut buf, subscription_id);
    buf.extend_from_slice(b",\"trackingId\":");
    push_str(&mut buf, &ev.tracking_id);
    buf.extend_from_slice(b",\"unitUsageRecords\":[");
    for (i, unit) in ev.unit_usage_records.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(b"{\"unitType\":");
        push_str(&mut buf, &unit.unit_type);
        buf.extend_from_slice(b",\"usageRecords\":[");
        for (j, rec) in unit.usage_records.iter().enumerate() {
            if j > 0 {
                buf.push(b',');
            }
            buf.extend_from_slice(b"{\"recordDate\":\"");
            buf.extend_from_slice(record_date(&rec.record_date).as_bytes());
            // `Decimal` only holds JSON-number grammar, so its text is a valid JSON number.
            buf.extend_from_slice(b"\",\"amount\":");
            buf.extend_from_slice(rec.amount.as_str().as_bytes());
            buf.push(b'}');
        }
        buf.extend_from_slice(b"]}");
    }
    buf.extend_from_slice(b"]}");
    buf
}

/// ISO-8601 UTC with milliseconds, as Kill Bill writes dates: `2026-11-01T10:00:00.000Z`.
pub(super) fn record_date(d: &DateTime<Utc>) -> String {
    d.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{Decimal, UnitUsage, UsageRecord};

    #[test]
    fn exact_amounts_and_utc_millis() {
        let date = chrono::DateTime::parse_from_rfc3339("2026-11-01T12:00:00+02:00")
            .unwrap()
            .with_timezone(&Utc);
        let ev = UsageEvent {
            subscription_external_key: "sub-1".into(),
            tracking_id: "t\"1".into(),
            tenant_id: "ten".into(),
            unit_usage_records: vec![UnitUsage {
                unit_type: "calls".into(),
                usage_records: vec![
                    UsageRecord {
                        record_date: date,
                        amount: Decimal::parse("12.345678901234567890123").unwrap(),
                    },
                    UsageRecord {
                        record_date: date,
                        amount: Decimal::parse("0.10").unwrap(),
                    },
                ],
            }],
        };
        let body = String::from_utf8(usage_body("abc-123", &ev)).unwrap();
        assert_eq!(
            body,
            r#"{"subscriptionId":"abc-123","trackingId":"t\"1","unitUsageRecords":[{"unitType":"calls","usageRecords":[{"recordDate":"2026-11-01T10:00:00.000Z","amount":12.345678901234567890123},{"recordDate":"2026-11-01T10:00:00.000Z","amount":0.10}]}]}"#
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(v["unitUsageRecords"][0]["usageRecords"][0]["amount"].is_number());
    }
}
