//! `recordDate` as the Kill Bill plugin's producers write it: a date-time
//! with no zone (UTC), with `Z` or an offset, a plain date, or epoch millis.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

pub fn parse_record_date(value: &serde_json::Value) -> Result<DateTime<Utc>, String> {
    match value {
        serde_json::Value::String(s) => parse_text(s),
        serde_json::Value::Number(n) => {
            let ms = n
                .as_i64()
                .ok_or_else(|| format!("epoch millis must be an integer, got {n}"))?;
            DateTime::<Utc>::from_timestamp_millis(ms)
                .ok_or_else(|| format!("epoch millis {ms} out of range"))
        }
        other => Err(format!(
            "expected a date string or epoch millis, got {}",
            kind(other)
        )),
    }
}

fn parse_text(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Ok(dt.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(naive.and_utc());
        }
    }
    if let Ok(date) = NaiveDate::parse_from_str(s, "%Y-%m-%d")
        && let Some(naive) = date.and_hms_opt(0, 0, 0)
    {
        return Ok(naive.and_utc());
    }
    Err(format!(
        "\"{s}\" is not a date (expected e.g. 2026-11-01T10:00:00, with Z/offset, or epoch millis)"
    ))
}

pub(crate) fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(v: serde_json::Value) -> String {
        parse_record_date(&v).unwrap().to_rfc3339()
    }

    #[test]
    fn no_zone_is_utc() {
        assert_eq!(
            ts(json!("2026-11-01T10:00:00")),
            "2026-11-01T10:00:00+00:00"
        );
    }

    #[test]
    fn offsets_and_millis() {
        assert_eq!(
            ts(json!("2026-11-01T12:00:00+02:00")),
            "2026-11-01T10:00:00+00:00"
        );
        assert_eq!(
            ts(json!("2026-11-01T10:00:00Z")),
            "2026-11-01T10:00:00+00:00"
        );
        assert_eq!(ts(json!(1_793_527_200_000i64)), "2026-11-01T10:00:00+00:00");
        assert_eq!(ts(json!("2026-11-01")), "2026-11-01T00:00:00+00:00");
    }

    #[test]
    fn garbage_is_explained() {
        let err = parse_record_date(&json!("yesterday")).unwrap_err();
        assert!(err.contains("yesterday"));
        assert!(parse_record_date(&json!(true)).is_err());
        assert!(parse_record_date(&json!(1.5)).is_err());
    }
}
