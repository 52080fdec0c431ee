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
use super::scan::{Cursor, contains_byte, sub_str};
use super::{Decimal, parse_record_date};

/// The next member's key as one of the fields of its level, or `OTHER`,
/// and the `:` after it. Known names are matched as written, quotes
/// included (so exactly), and only the one whose first letter follows the
/// quote is compared; an escaped key might spell one in disguise, so it
/// is a doubt, left to the checked path.
macro_rules! field {
    ($c:expr, $($name:literal => $field:expr),+ $(,)?) => {{
        let c: &mut Cursor<'_> = $c;
        c.ws();
        let first = c.byte_at(1);
        let field = $(if first == Some($name.as_bytes()[0])
            && c.eat(concat!("\"", $name, "\"").as_bytes()) { $field } else)+ {
            c.string()?.plain()?;
            OTHER
        };
        c.expect(b':')?;
        field
    }};
}

/// After `{`: the first member's field (`None`: an empty object, which no
/// level of an event may be). Compact JSON's `{"name":` is one compare.
macro_rules! first_field {
    ($c:expr, $($name:literal => $field:expr),+ $(,)?) => {{
        let c: &mut Cursor<'_> = $c;
        c.ws();
        let first = c.byte_at(2);
        $(if first == Some($name.as_bytes()[0])
            && c.eat(concat!("{\"", $name, "\":").as_bytes()) { $field } else)+ {
            c.expect(b'{')?;
            if c.empty(b'}')? {
                return None;
            }
            field!(c, $($name => $field),+)
        }
    }};
}

/// After a member's value: the next member's field, or `None` at the
/// object's `}`. Compact JSON's `,"name":` is one compare; anything else
/// (whitespace, an unknown name) takes the general path, to the same
/// answer.
macro_rules! next_field {
    ($c:expr, $($name:literal => $field:expr),+ $(,)?) => {{
        let c: &mut Cursor<'_> = $c;
        let first = c.byte_at(2);
        $(if first == Some($name.as_bytes()[0])
            && c.eat(concat!(",\"", $name, "\":").as_bytes()) { Some($field) } else)+
        if c.more(b'}')? {
            Some(field!(c, $($name => $field),+))
        } else {
            None
        }
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
    // Building copies many strings out: one UTF-8 pass over the whole
    // input, then each is sliced from it (the key-only path skips both).
    let text = std::str::from_utf8(bytes).ok()?;
    let mut build = Build {
        text,
        units: Vec::new(),
    };
    let top = walk::<true>(bytes, Some(&mut build))?;
    Some(UsageEvent {
        subscription_external_key: sub_str(text, top.subscription)?.to_owned(),
        tracking_id: sub_str(text, top.tracking)?.to_owned(),
        tenant_id: sub_str(text, top.tenant)?.to_owned(),
        unit_usage_records: build.units,
    })
}

/// What the building walk fills, and the input as text to slice from.
struct Build<'t> {
    text: &'t str,
    units: Vec<UnitUsage>,
}

/// The same checks as `parse`, but only the dedupe key is built (one
/// allocation): for sinks that never read the parsed event. Equal to
/// `parse(bytes).map(|e| e.dedupe_key())` on every input.
pub(super) fn dedupe_key(bytes: &[u8]) -> Option<String> {
    let top = walk::<false>(bytes, None)?;
    let (t, s, k) = (top.tenant, top.subscription, top.tracking);
    let mut key = Vec::with_capacity(t.len() + s.len() + k.len() + 2);
    key.extend_from_slice(t);
    key.push(b'/');
    key.extend_from_slice(s);
    key.push(b'/');
    key.extend_from_slice(k);
    // Always valid (the cursor's strings are); checked, not assumed.
    String::from_utf8(key).ok()
}

/// A string the cursor accepted, as text (it is valid UTF-8; checked).
fn text(raw: &[u8]) -> Option<&str> {
    std::str::from_utf8(raw).ok()
}

/// The validated top-level strings of an event.
struct TopLevel<'a> {
    subscription: &'a [u8],
    tracking: &'a [u8],
    tenant: &'a [u8],
}

/// Validate the whole event in one pass; with `BUILD`, the owned unit
/// records are built into `units_out` (without, it stays empty and the
/// validation alone is compiled).
fn walk<'a, const BUILD: bool>(
    bytes: &'a [u8],
    mut units_out: Option<&mut Build<'_>>,
) -> Option<TopLevel<'a>> {
    let mut c = Cursor::bytes(bytes);
    macro_rules! top_fields {
        ($m:ident) => {
            $m!(&mut c,
                "subscriptionExternalKey" => SUBSCRIPTION,
                "trackingId" => TRACKING,
                "tenantId" => TENANT,
                "unitUsageRecords" => UNITS,
            )
        };
    }
    let (mut subscription, mut tracking, mut tenant) = (None, None, None);
    let mut units_seen = false;
    let mut field = top_fields!(first_field);
    loop {
        match field {
            SUBSCRIPTION => once(&mut subscription, non_empty(&mut c)?)?,
            TRACKING => once(&mut tracking, non_empty(&mut c)?)?,
            TENANT => {
                let t = non_empty(&mut c)?;
                // The dedupe key joins fields with '/'; the checked path names it.
                if contains_byte(t, b'/') {
                    return None;
                }
                once(&mut tenant, t)?;
            }
            UNITS => {
                if std::mem::replace(&mut units_seen, true) {
                    return None;
                }
                units::<BUILD>(&mut c, units_out.as_deref_mut())?;
            }
            _ => c.skip_value()?,
        }
        match top_fields!(next_field) {
            Some(next) => field = next,
            None => break,
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
fn once<'a>(slot: &mut Option<&'a [u8]>, value: &'a [u8]) -> Option<()> {
    slot.replace(value).is_none().then_some(())
}

/// A string field that must not be blank (null, escapes or another type:
/// the checked path).
#[inline(always)]
fn non_empty<'a>(c: &mut Cursor<'a>) -> Option<&'a [u8]> {
    let s = c.string()?.plain()?;
    // A visible first character settles it without walking the string;
    // otherwise blank means what `str::trim` says (Unicode whitespace).
    let visible = s.first().is_some_and(u8::is_ascii_graphic);
    (visible || !text(s)?.trim().is_empty()).then_some(s)
}

/// `[unit, …]`, not empty.
fn units<const BUILD: bool>(c: &mut Cursor<'_>, mut out: Option<&mut Build<'_>>) -> Option<()> {
    c.expect(b'[')?;
    if c.empty(b']')? {
        return None;
    }
    loop {
        unit::<BUILD>(c, out.as_deref_mut())?;
        if !c.more(b']')? {
            return Some(());
        }
    }
}

/// `{"unitType": …, "usageRecords": [record, …]}` in any order.
fn unit<const BUILD: bool>(c: &mut Cursor<'_>, out: Option<&mut Build<'_>>) -> Option<()> {
    macro_rules! unit_fields {
        ($m:ident) => {
            $m!(c, "unitType" => UNIT_TYPE, "usageRecords" => USAGE_RECORDS)
        };
    }
    let mut unit_type = None;
    let mut records_seen = false;
    // Only the building instance has a vector to fill (and to drop).
    let mut usage_records = BUILD.then(Vec::new);
    let mut field = unit_fields!(first_field);
    loop {
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
                    let (date, amount) = record(c)?;
                    if let Some(records) = usage_records.as_mut() {
                        records.push(UsageRecord {
                            record_date: date.instant()?,
                            amount: Decimal::parse(sub_str(out.as_ref()?.text, amount)?)?,
                        });
                    }
                    if !c.more(b']')? {
                        break;
                    }
                }
            }
            _ => c.skip_value()?,
        }
        match unit_fields!(next_field) {
            Some(next) => field = next,
            None => break,
        }
    }
    let unit_type = unit_type?;
    if !records_seen {
        return None;
    }
    if let (Some(out), Some(usage_records)) = (out, usage_records) {
        out.units.push(UnitUsage {
            unit_type: sub_str(out.text, unit_type)?.to_owned(),
            usage_records,
        });
    }
    Some(())
}

/// `{"recordDate": …, "amount": …}` in any order, validated: the date and
/// the amount's decimal text.
fn record<'a>(c: &mut Cursor<'a>) -> Option<(RecordDate, &'a [u8])> {
    macro_rules! record_fields {
        ($m:ident) => {
            $m!(c, "recordDate" => RECORD_DATE, "amount" => AMOUNT)
        };
    }
    let mut date = None;
    let mut amount: Option<&[u8]> = None;
    let mut field = record_fields!(first_field);
    loop {
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
        match record_fields!(next_field) {
            Some(next) => field = next,
            None => break,
        }
    }
    Some((date?, amount?))
}

/// The amount's decimal text, validated and in range: a JSON number as
/// written, or a string without escapes, trimmed (as the checked path does).
fn amount_text<'a>(c: &mut Cursor<'a>) -> Option<&'a [u8]> {
    if c.peek()? == b'"' {
        let trimmed = text(c.string()?.plain()?)?.trim();
        return is_valid_amount(trimmed).then_some(trimmed.as_bytes());
    }
    let n = c.number()?;
    // JSON number grammar is decimal grammar; without an exponent the digit
    // counts bound the range check (zeros trimmed only lower them).
    let frac_digits = if n.fraction {
        n.text.len() - n.int_digits - 1 - usize::from(n.text.first() == Some(&b'-'))
    } else {
        0
    };
    let surely_in_range = !n.exponent
        && n.int_digits as i64 <= MAX_INTEGER_DIGITS
        && frac_digits as i64 <= MAX_FRACTION_DIGITS;
    (surely_in_range || is_valid_amount(text(n.text)?)).then_some(n.text)
}

/// A validated record date; the instant is computed only for a built event.
enum RecordDate {
    /// The common text forms: a valid calendar date (a four-digit year), a
    /// valid time of day (seconds from midnight, no leap second) and a UTC
    /// offset in seconds.
    Civil {
        year: u32,
        month: u32,
        day: u32,
        secs: u32,
        offset: i32,
    },
    /// Epoch millis within chrono's range.
    Millis(i64),
    Instant(DateTime<Utc>),
}

impl RecordDate {
    fn instant(self) -> Option<DateTime<Utc>> {
        match self {
            RecordDate::Civil {
                year,
                month,
                day,
                secs,
                offset,
            } => {
                let date = NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?;
                let time = NaiveTime::from_num_seconds_from_midnight_opt(secs, 0)?;
                date.and_time(time)
                    .and_utc()
                    .checked_sub_signed(TimeDelta::try_seconds(i64::from(offset))?)
            }
            RecordDate::Millis(ms) => DateTime::from_timestamp_millis(ms),
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
                epoch_millis(n.text).map(RecordDate::Millis)
            }
        }
    };
    if fast.is_some() {
        return fast;
    }
    let value: serde_json::Value = serde_json::from_str(text(c.since(start)?)?).ok()?;
    parse_record_date(&value).ok().map(RecordDate::Instant)
}

/// The epoch millis `DateTime::from_timestamp_millis` accepts: one interval.
const MIN_MILLIS: i64 = DateTime::<Utc>::MIN_UTC.timestamp_millis();
const MAX_MILLIS: i64 = DateTime::<Utc>::MAX_UTC.timestamp_millis();

/// Epoch millis (an integer's text, by the JSON grammar) that serde_json
/// reads as an `i64` (not `-0`, which it reads as a float) and chrono can
/// represent.
fn epoch_millis(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text {
        [b'-', b'0', ..] => return None,
        [b'-', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    // 18 digits cannot overflow an i64.
    if digits.len() > 18 {
        return None;
    }
    let magnitude = digits.iter().try_fold(0i64, |acc, &d| {
        d.is_ascii_digit().then(|| acc * 10 + i64::from(d - b'0'))
    })?;
    let ms = if negative { -magnitude } else { magnitude };
    (MIN_MILLIS..=MAX_MILLIS).contains(&ms).then_some(ms)
}

/// Whether `year-month-day` is a date of the proleptic Gregorian calendar
/// (what `NaiveDate::from_ymd_opt` accepts for a year of 0..=9999).
fn is_calendar_date(year: u32, month: u32, day: u32) -> bool {
    let leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day)
}

/// `YYYY-MM-DDTHH:MM:SS` with no zone (UTC), `Z`, or `±HH:MM` (hours to
/// 23): the producers' usual forms, parsed without chrono's format
/// machinery, to the same instant chrono's RFC 3339 parser gives.
fn plain_date_time(b: &[u8]) -> Option<RecordDate> {
    let [year, month, day, h, m, sec] = date_time_digits(b)?;
    let two = |i: usize| -> Option<u32> {
        let (hi, lo) = (
            b.get(i)?.wrapping_sub(b'0'),
            b.get(i + 1)?.wrapping_sub(b'0'),
        );
        (hi < 10 && lo < 10).then_some(u32::from(hi) * 10 + u32::from(lo))
    };
    let offset = match b.get(19..)? {
        [] | [b'Z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (two(20)?, two(23)?);
            if h > 23 || m > 59 {
                return None;
            }
            let secs = (h * 3600 + m * 60) as i32;
            if *sign == b'-' { -secs } else { secs }
        }
        _ => return None,
    };
    if !is_calendar_date(year, month, day) || h > 23 || m > 59 || sec > 59 {
        return None;
    }
    Some(RecordDate::Civil {
        year,
        month,
        day,
        secs: h * 3600 + m * 60 + sec,
        offset,
    })
}

/// `YYYY-MM-DDTHH:MM:SS` (the first 19 bytes) checked and read eight
/// bytes at a time: `[year, month, day, hour, minute, second]`. Three
/// words: bytes 0..8 `YYYY-MM-`, 8..16 `DDTHH:MM`, 11..19 `HH:MM:SS`.
fn date_time_digits(b: &[u8]) -> Option<[u32; 6]> {
    const LO: u64 = u64::from_le_bytes([1; 8]);
    const HI: u64 = LO << 7;
    // Per word: the digit bytes (0xff), and what the other bytes must be.
    const DIGITS: [u64; 3] = [
        u64::from_le_bytes([0xff, 0xff, 0xff, 0xff, 0, 0xff, 0xff, 0]),
        u64::from_le_bytes([0xff, 0xff, 0, 0xff, 0xff, 0, 0xff, 0xff]),
        u64::from_le_bytes([0xff, 0xff, 0, 0xff, 0xff, 0, 0xff, 0xff]),
    ];
    const SEPARATORS: [u64; 3] = [
        u64::from_le_bytes([0, 0, 0, 0, b'-', 0, 0, b'-']),
        u64::from_le_bytes([0, 0, b'T', 0, 0, b':', 0, 0]),
        u64::from_le_bytes([0, 0, b':', 0, 0, b':', 0, 0]),
    ];
    let mut bad = 0;
    let mut pairs = [0u64; 3];
    for (k, at) in [0, 8, 11].into_iter().enumerate() {
        let mut word = [0u8; 8];
        word.copy_from_slice(b.get(at..at + 8)?);
        let w = u64::from_le_bytes(word);
        bad |= (w & !DIGITS[k]) ^ SEPARATORS[k];
        // x = byte - '0' at the digit bytes: a digit iff x <= 9; x + 0x76
        // sets bit 7 for 10..=0x7f, x itself for the rest (a carry only
        // flags a byte above an already flagged one).
        let x = (w ^ (LO * u64::from(b'0'))) & DIGITS[k];
        bad |= (x | x.wrapping_add(LO * 0x76)) & HI & DIGITS[k];
        // Byte j: 10 * digit j + digit j + 1 (digits <= 9: no carries).
        pairs[k] = x.wrapping_mul(10).wrapping_add(x >> 8);
    }
    if bad != 0 {
        return None;
    }
    let pair = |k: usize, j: u32| ((pairs[k] >> (8 * j)) & 0xff) as u32;
    Some([
        pair(0, 0) * 100 + pair(0, 2),
        pair(0, 5),
        pair(1, 0),
        pair(1, 3),
        pair(1, 6),
        pair(2, 6),
    ])
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
    fn bytes_that_are_not_ascii_agree_with_the_checked_decoder() {
        let base = br#"{"subscriptionExternalKey":"s","trackingId":"t","tenantId":"x","unitUsageRecords":[{"unitType":"u","usageRecords":[{"recordDate":"2026-11-01T10:00:00","amount":1.5}]}]}"#;
        let swap = |from: &[u8], to: &[u8]| -> Vec<u8> {
            let at = base.windows(from.len()).position(|w| w == from).unwrap();
            [&base[..at], to, &base[at + from.len()..]].concat()
        };
        let cases = [
            // Multi-byte UTF-8 in the key fields, across word boundaries.
            (
                swap(b"\"s\"", "\"s\u{e9}\u{20ac}\u{1f600}-abcdefgh\"".as_bytes()),
                true,
            ),
            (swap(b"\"t\"", "\"\u{1f600}\"".as_bytes()), true),
            (swap(b"\"x\"", "\"\u{e9}tenant\"".as_bytes()), true),
            (swap(b"\"u\"", "\"unit\u{e9}\"".as_bytes()), true),
            // Unicode whitespace only is blank, as `str::trim` says.
            (swap(b"\"t\"", "\"\u{a0}\u{2003}\"".as_bytes()), false),
            // Invalid UTF-8 in a value, in an unknown field, in a field name.
            (swap(b"\"s\"", b"\"s\xc3\""), false),
            (swap(b"\"t\"", b"\"\xff\xfe\""), false),
            (
                swap(
                    b"{\"subscription",
                    b"{\"extra\":\"\xe2\x82\",\"subscription",
                ),
                false,
            ),
            (
                swap(b"{\"subscription", b"{\"e\xc3\":1,\"subscription"),
                false,
            ),
            // Non-ASCII in a field name: an unknown field, never a known one.
            (
                swap(
                    b"{\"subscription",
                    "{\"\u{e9}\":1,\"subscription".as_bytes(),
                ),
                true,
            ),
            (
                swap(b"\"trackingId\"", "\"tracking\u{130}d\"".as_bytes()),
                false,
            ),
            (
                swap(b"\"tenantId\"", "\"tenantId\u{e9}\"".as_bytes()),
                false,
            ),
            // High bytes outside any string.
            (swap(b"1.5", b"1.5\xc2\xa0"), false),
            ([base.as_slice(), b"\xc2\xa0"].concat(), false),
        ];
        for (input, accepted) in cases {
            let checked = parse_checked(&input);
            assert_eq!(
                checked.is_ok(),
                accepted,
                "{}",
                String::from_utf8_lossy(&input)
            );
            assert_eq!(
                dedupe_key(&input),
                checked.as_ref().ok().map(UsageEvent::dedupe_key),
                "{}",
                String::from_utf8_lossy(&input)
            );
            assert_eq!(parse(&input).as_ref(), checked.as_ref().ok());
        }
    }

    #[test]
    fn calendar_dates_are_the_ones_chrono_accepts() {
        for year in 0..=9999 {
            for month in 0..=13 {
                for day in [0, 1, 27, 28, 29, 30, 31, 32] {
                    assert_eq!(
                        is_calendar_date(year, month, day),
                        NaiveDate::from_ymd_opt(year as i32, month, day).is_some(),
                        "{year}-{month}-{day}"
                    );
                }
            }
        }
    }

    #[test]
    fn epoch_millis_range_is_chronos() {
        for ms in [
            MIN_MILLIS - 1,
            MIN_MILLIS,
            0,
            -1,
            MAX_MILLIS,
            MAX_MILLIS + 1,
        ] {
            let text = ms.to_string();
            assert_eq!(
                epoch_millis(text.as_bytes()),
                DateTime::from_timestamp_millis(ms).map(|_| ms),
                "{ms}"
            );
        }
        assert_eq!(epoch_millis(b"-1"), Some(-1));
        assert_eq!(epoch_millis(b"0"), Some(0));
        assert_eq!(epoch_millis(b"999999999999999999"), None);
        assert_eq!(
            epoch_millis(b"-8210266876800000"),
            Some(-8_210_266_876_800_000)
        );
    }

    /// The per-byte reading `date_time_digits` replaced: the oracle.
    fn date_time_digits_bytewise(b: &[u8]) -> Option<[u32; 6]> {
        if b.len() < 19
            || b[4] != b'-'
            || b[7] != b'-'
            || b[10] != b'T'
            || b[13] != b':'
            || b[16] != b':'
        {
            return None;
        }
        let digit = |i: usize| -> Option<u32> { (b[i] as char).to_digit(10) };
        let two = |i: usize| -> Option<u32> { Some(digit(i)? * 10 + digit(i + 1)?) };
        Some([
            two(0)? * 100 + two(2)?,
            two(5)?,
            two(8)?,
            two(11)?,
            two(14)?,
            two(17)?,
        ])
    }

    #[test]
    fn date_time_words_read_what_the_bytewise_reading_does() {
        let base = *b"2026-11-01T10:00:00Z";
        for at in 0..base.len() {
            for byte in 0..=255u8 {
                let mut b = base;
                b[at] = byte;
                for len in [19, 20] {
                    assert_eq!(
                        date_time_digits(&b[..len]),
                        date_time_digits_bytewise(&b[..len]),
                        "{:?}",
                        String::from_utf8_lossy(&b[..len])
                    );
                }
            }
        }
        for text in [
            "0000-00-00T00:00:00",
            "9999-99-99T99:99:99",
            "1234-56-78T90:12:34",
        ] {
            let b = text.as_bytes();
            assert_eq!(date_time_digits(b), date_time_digits_bytewise(b), "{text}");
            assert!(date_time_digits(b).is_some());
        }
        assert_eq!(
            date_time_digits(b"2026-11-01T10:20:30"),
            Some([2026, 11, 1, 10, 20, 30])
        );
        assert_eq!(date_time_digits(b"2026-11-01T10:20:3"), None);
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
            let fast = plain_date_time(text.as_bytes())
                .and_then(RecordDate::instant)
                .unwrap();
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
            assert!(plain_date_time(declined.as_bytes()).is_none(), "{declined}");
        }
        let millis = epoch_millis(b"1793527200000").map(RecordDate::Millis);
        assert_eq!(
            millis.and_then(RecordDate::instant).unwrap().to_rfc3339(),
            "2026-11-01T10:00:00+00:00"
        );
        assert!(epoch_millis(b"-0").is_none());
        assert!(epoch_millis(b"9999999999999999999").is_none());
    }
}
