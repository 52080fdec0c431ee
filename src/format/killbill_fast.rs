//! One-pass decoder for well-formed `killbill-usage` events.
//!
//! The checked decoder (`killbill_usage::parse_checked`) reads fields as raw
//! JSON first so every error names its path, which costs several passes and
//! an allocation per path. Almost every record is well formed, so this path
//! walks the event once with the validating cursor of `scan.rs` — every byte
//! checked, strings borrowed, nothing allocated beyond the result — and
//! returns `None` at the first doubt (an escape in a field it reads, a
//! repeated key, a date form it does not know by heart, …); the caller then
//! runs the checked decoder for the exact answer. It must never accept an
//! input the checked decoder rejects, nor differ from it on one it accepts.

use chrono::{DateTime, NaiveDate, NaiveTime, TimeDelta, Utc};

use super::decimal::{MAX_FRACTION_DIGITS, MAX_INTEGER_DIGITS, is_valid_amount};
use super::killbill_usage::{UnitUsage, UsageEvent, UsageRecord};
use super::scan::Cursor;
use super::{Decimal, parse_record_date};

/// The next member's key as one of the fields of its level, or `OTHER`,
/// and the `:` after it. Known names are matched as written, quotes
/// included (so exactly); an escaped key might spell one in disguise, so it
/// is a doubt, left to the checked path.
macro_rules! field {
    ($c:expr, $($name:literal => $field:expr),+ $(,)?) => {{
        let c: &mut Cursor<'_> = $c;
        c.ws();
        let field = $(if c.eat($name) { $field } else)+ {
            c.string()?.plain()?;
            OTHER
        };
        c.expect(b':')?;
        field
    }};
}

const OTHER: u8 = 0;
const SUBSCRIPTION: u8 = 1;
const TRACKING: u8 = 2;
const TENANT: u8 = 3;
const UNITS: u8 = 4;
const UNIT_TYPE: u8 = 5;
const USAGE_RECORDS: u8 = 6;
const RECORD_DATE: u8 = 7;
const AMOUNT: u8 = 8;

pub(super) fn parse(bytes: &[u8]) -> Option<UsageEvent> {
    let mut unit_usage_records = Vec::new();
    let top = walk(bytes, Some(&mut unit_usage_records))?;
    Some(UsageEvent {
        subscription_external_key: top.subscription.to_owned(),
        tracking_id: top.tracking.to_owned(),
        tenant_id: top.tenant.to_owned(),
        unit_usage_records,
    })
}

/// The same checks as `parse`, but only the dedupe key is built (one
/// allocation): for sinks that never read the parsed event. Equal to
/// `parse(bytes).map(|e| e.dedupe_key())` on every input.
pub(super) fn dedupe_key(bytes: &[u8]) -> Option<String> {
    let top = walk(bytes, None)?;
    let (t, s, k) = (top.tenant, top.subscription, top.tracking);
    let mut key = String::with_capacity(t.len() + s.len() + k.len() + 2);
    key.push_str(t);
    key.push('/');
    key.push_str(s);
    key.push('/');
    key.push_str(k);
    Some(key)
}

/// The validated top-level strings of an event.
struct TopLevel<'a> {
    subscription: &'a str,
    tracking: &'a str,
    tenant: &'a str,
}

/// Validate the whole event in one pass; the owned unit records are built
/// into `units_out` only when asked for.
fn walk<'a>(bytes: &'a [u8], mut units_out: Option<&mut Vec<UnitUsage>>) -> Option<TopLevel<'a>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut c = Cursor::new(text);
    c.expect(b'{')?;
    let (mut subscription, mut tracking, mut tenant) = (None, None, None);
    let mut units_seen = false;
    if c.empty(b'}')? {
        return None;
    }
    loop {
        let field = field!(&mut c,
            b"\"subscriptionExternalKey\"" => SUBSCRIPTION,
            b"\"trackingId\"" => TRACKING,
            b"\"tenantId\"" => TENANT,
            b"\"unitUsageRecords\"" => UNITS,
        );
        match field {
            SUBSCRIPTION => once(&mut subscription, non_empty(&mut c)?)?,
            TRACKING => once(&mut tracking, non_empty(&mut c)?)?,
            TENANT => {
                let t = non_empty(&mut c)?;
                // The dedupe key joins fields with '/'; the checked path names it.
                if t.contains('/') {
                    return None;
                }
                once(&mut tenant, t)?;
            }
            UNITS => {
                if std::mem::replace(&mut units_seen, true) {
                    return None;
                }
                units(&mut c, units_out.as_deref_mut())?;
            }
            _ => c.skip_value()?,
        }
        if !c.more(b'}')? {
            break;
        }
    }
    if !c.at_end() || !units_seen {
        return None;
    }
    Some(TopLevel {
        subscription: subscription?,
        tracking: tracking?,
        tenant: tenant?,
    })
}

/// A repeated key is ambiguous and refused by the checked decoder.
fn once<'a>(slot: &mut Option<&'a str>, value: &'a str) -> Option<()> {
    slot.replace(value).is_none().then_some(())
}

/// A string field that must not be blank (null, escapes or another type:
/// the checked path).
fn non_empty<'a>(c: &mut Cursor<'a>) -> Option<&'a str> {
    let s = c.string()?.plain()?;
    // A visible first character settles it without walking the string.
    let visible = s.as_bytes().first().is_some_and(u8::is_ascii_graphic);
    (visible || !s.trim().is_empty()).then_some(s)
}

/// `[unit, …]`, not empty.
fn units(c: &mut Cursor<'_>, mut out: Option<&mut Vec<UnitUsage>>) -> Option<()> {
    c.expect(b'[')?;
    if c.empty(b']')? {
        return None;
    }
    loop {
        unit(c, out.as_deref_mut())?;
        if !c.more(b']')? {
            return Some(());
        }
    }
}

/// `{"unitType": …, "usageRecords": [record, …]}` in any order.
fn unit(c: &mut Cursor<'_>, out: Option<&mut Vec<UnitUsage>>) -> Option<()> {
    c.expect(b'{')?;
    if c.empty(b'}')? {
        return None;
    }
    let build = out.is_some();
    let mut unit_type = None;
    let mut records_seen = false;
    let mut usage_records = Vec::new();
    loop {
        let field = field!(c, b"\"unitType\"" => UNIT_TYPE, b"\"usageRecords\"" => USAGE_RECORDS);
        match field {
            UNIT_TYPE => once(&mut unit_type, non_empty(c)?)?,
            USAGE_RECORDS => {
                if std::mem::replace(&mut records_seen, true) {
                    return None;
                }
                c.expect(b'[')?;
                if c.empty(b']')? {
                    return None;
                }
                loop {
                    let rec = record(c, build)?;
                    if let Some(rec) = rec {
                        usage_records.push(rec);
                    }
                    if !c.more(b']')? {
                        break;
                    }
                }
            }
            _ => c.skip_value()?,
        }
        if !c.more(b'}')? {
            break;
        }
    }
    let unit_type = unit_type?;
    if !records_seen {
        return None;
    }
    if let Some(out) = out {
        out.push(UnitUsage {
            unit_type: unit_type.to_owned(),
            usage_records,
        });
    }
    Some(())
}

/// `{"recordDate": …, "amount": …}` in any order; the built record only
/// when `build`.
fn record(c: &mut Cursor<'_>, build: bool) -> Option<Option<UsageRecord>> {
    c.expect(b'{')?;
    if c.empty(b'}')? {
        return None;
    }
    let mut date = None;
    let mut amount: Option<&str> = None;
    loop {
        let field = field!(c, b"\"recordDate\"" => RECORD_DATE, b"\"amount\"" => AMOUNT);
        match field {
            RECORD_DATE => {
                if date.replace(record_date(c)?).is_some() {
                    return None;
                }
            }
            AMOUNT => {
                let text = amount_text(c)?;
                if amount.replace(text).is_some() {
                    return None;
                }
            }
            _ => c.skip_value()?,
        }
        if !c.more(b'}')? {
            break;
        }
    }
    let (date, amount) = (date?, amount?);
    if !build {
        return Some(None);
    }
    Some(Some(UsageRecord {
        record_date: date.instant()?,
        amount: Decimal::parse(amount)?,
    }))
}

/// The amount's decimal text, validated and in range: a JSON number as
/// written, or a string without escapes, trimmed (as the checked path does).
fn amount_text<'a>(c: &mut Cursor<'a>) -> Option<&'a str> {
    if c.peek()? == b'"' {
        let text = c.string()?.plain()?.trim();
        return is_valid_amount(text).then_some(text);
    }
    let n = c.number()?;
    // JSON number grammar is decimal grammar; without an exponent the digit
    // counts bound the range check (zeros trimmed only lower them).
    let frac_digits = if n.fraction {
        n.text.len() - n.int_digits - 1 - usize::from(n.text.starts_with('-'))
    } else {
        0
    };
    let surely_in_range = !n.exponent
        && n.int_digits as i64 <= MAX_INTEGER_DIGITS
        && frac_digits as i64 <= MAX_FRACTION_DIGITS;
    (surely_in_range || is_valid_amount(n.text)).then_some(n.text)
}

/// A validated record date; the instant is computed only for a built event.
enum RecordDate {
    /// The common text forms: a valid calendar date, a valid time of day
    /// (seconds from midnight, no leap second) and a UTC offset in seconds.
    Civil {
        date: NaiveDate,
        secs: u32,
        offset: i32,
    },
    Instant(DateTime<Utc>),
}

impl RecordDate {
    fn instant(self) -> Option<DateTime<Utc>> {
        match self {
            RecordDate::Civil { date, secs, offset } => {
                let time = NaiveTime::from_num_seconds_from_midnight_opt(secs, 0)?;
                date.and_time(time)
                    .and_utc()
                    .checked_sub_signed(TimeDelta::try_seconds(i64::from(offset))?)
            }
            RecordDate::Instant(t) => Some(t),
        }
    }
}

/// A record date: the common spellings parsed here, any other through the
/// checked path's own parser (on the value's JSON text).
fn record_date(c: &mut Cursor<'_>) -> Option<RecordDate> {
    let start = {
        c.ws();
        c.pos()
    };
    let fast = match c.peek()? {
        b'"' => c.string()?.plain().and_then(plain_date_time),
        _ => {
            let n = c.number()?;
            if n.fraction || n.exponent {
                None
            } else {
                epoch_millis(n.text).map(RecordDate::Instant)
            }
        }
    };
    if fast.is_some() {
        return fast;
    }
    let value: serde_json::Value = serde_json::from_str(c.since(start)?).ok()?;
    parse_record_date(&value).ok().map(RecordDate::Instant)
}

/// Epoch millis that serde_json reads as an `i64` (not `-0`, which it
/// reads as a float) and chrono can represent.
fn epoch_millis(text: &str) -> Option<DateTime<Utc>> {
    if text.starts_with("-0") || text.trim_start_matches('-').len() > 18 {
        return None;
    }
    DateTime::from_timestamp_millis(text.parse().ok()?)
}

/// `YYYY-MM-DDTHH:MM:SS` with no zone (UTC), `Z`, or `±HH:MM` (hours to
/// 23): the producers' usual forms, parsed without chrono's format
/// machinery, to the same instant chrono's RFC 3339 parser gives.
fn plain_date_time(s: &str) -> Option<RecordDate> {
    let b = s.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b.get(r)?.iter().try_fold(0u32, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let offset = match &b[19..] {
        [] | [b'Z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (num(20..22)?, num(23..25)?);
            if h > 23 || m > 59 {
                return None;
            }
            let secs = (h * 3600 + m * 60) as i32;
            if *sign == b'-' { -secs } else { secs }
        }
        _ => return None,
    };
    let date = NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    let (h, m, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if h > 23 || m > 59 || sec > 59 {
        return None;
    }
    Some(RecordDate::Civil {
        date,
        secs: h * 3600 + m * 60 + sec,
        offset,
    })
}

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
    fn common_dates_take_the_fast_path_to_the_same_instant() {
        for (text, want) in [
            ("2026-11-01T10:00:00", "2026-11-01T10:00:00+00:00"),
            ("2026-11-01T10:00:00Z", "2026-11-01T10:00:00+00:00"),
            ("2026-11-01T12:00:00+02:00", "2026-11-01T10:00:00+00:00"),
            ("2026-11-01T04:30:00-05:30", "2026-11-01T10:00:00+00:00"),
            ("2026-01-01T00:30:00+23:59", "2025-12-31T00:31:00+00:00"),
            ("0000-01-01T00:00:00+01:00", "-0001-12-31T23:00:00+00:00"),
        ] {
            let fast = plain_date_time(text).and_then(RecordDate::instant).unwrap();
            assert_eq!(fast.to_rfc3339(), want, "{text}");
            let general = parse_record_date(&serde_json::Value::String(text.into())).unwrap();
            assert_eq!(fast, general, "{text}");
        }
        for declined in [
            "2026-02-30T10:00:00",
            "2026-11-01T10:00:00.5",
            "2026-11-01 10:00:00",
            "2026-11-01T10:00:60",
            "2026-11-01T10:00:00z",
            "2026-11-01T10:00:00+24:00",
            "2026-11-01T10:00:00+02:60",
            "2026-11-01T10:00:00+0200",
            "2026-11-01",
        ] {
            assert!(plain_date_time(declined).is_none(), "{declined}");
        }
        assert_eq!(
            epoch_millis("1793527200000").unwrap().to_rfc3339(),
            "2026-11-01T10:00:00+00:00"
        );
        assert!(epoch_millis("-0").is_none());
        assert!(epoch_millis("9999999999999999999").is_none());
    }
}
