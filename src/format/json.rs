//! `json`: any JSON object; the dedupe key comes from a JSON pointer, the
//! Kafka key, or nowhere (at-least-once).
//!
//! Well-formed records take one pass of the validating cursor (`scan.rs`),
//! with nothing built but the key; anything it is unsure of goes through
//! serde_json (a `Value` tree for pointers), which has the final word and
//! the error message.

use bytes::Bytes;

use super::DecodeError;
use super::scan::{TextCursor, sub_str};
use crate::config::DedupeSource;

/// A JSON pointer split into its reference tokens (`~1` → `/`, `~0` → `~`),
/// once per route instead of once per record.
#[derive(Debug, Clone)]
pub(super) struct Pointer {
    pub(super) tokens: Vec<String>,
}

/// Longest pointer the fast path follows (deeper ones are serde_json's).
const MAX_FAST_TOKENS: usize = 16;

impl Pointer {
    pub fn compile(dedupe: &DedupeSource) -> Option<Pointer> {
        let DedupeSource::Pointer(p) = dedupe else {
            return None;
        };
        let rest = p.strip_prefix('/')?;
        // The same unescaping, in the same order, as `Value::pointer`.
        let tokens: Vec<String> = rest
            .split('/')
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect();
        (tokens.len() <= MAX_FAST_TOKENS).then_some(Pointer { tokens })
    }
}

pub(super) fn parse(
    bytes: &[u8],
    dedupe: &DedupeSource,
    pointer: Option<&Pointer>,
    kafka_key: Option<&Bytes>,
) -> Result<Option<String>, DecodeError> {
    let text = std::str::from_utf8(bytes).map_err(|e| DecodeError::NotUtf8(e.to_string()))?;
    match dedupe {
        DedupeSource::Pointer(pointer_text) => {
            if let Some(key) = pointer.and_then(|p| fast_pointer_key(text, &p.tokens)) {
                return Ok(Some(key));
            }
            let value: serde_json::Value =
                serde_json::from_str(text).map_err(|e| DecodeError::InvalidJson(e.to_string()))?;
            if !value.is_object() {
                return Err(DecodeError::NotAnObject);
            }
            match value.pointer(pointer_text) {
                Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
                Some(serde_json::Value::Number(n)) => Ok(Some(n.to_string())),
                Some(serde_json::Value::Null) | None => Err(DecodeError::DedupeKey(format!(
                    "no value at {pointer_text}"
                ))),
                Some(other) => Err(DecodeError::DedupeKey(format!(
                    "value at {pointer_text} must be a non-empty string or a number, got {other}"
                ))),
            }
        }
        DedupeSource::KafkaKey | DedupeSource::None | DedupeSource::Format => {
            if !is_fast_object(text) {
                // Validate without building a tree: only objects are events.
                let raw: &serde_json::value::RawValue = serde_json::from_str(text)
                    .map_err(|e| DecodeError::InvalidJson(e.to_string()))?;
                if !raw.get().starts_with('{') {
                    return Err(DecodeError::NotAnObject);
                }
            }
            match dedupe {
                DedupeSource::KafkaKey => match kafka_key {
                    Some(k) if !k.is_empty() => Ok(Some(String::from_utf8_lossy(k).into_owned())),
                    _ => Err(DecodeError::DedupeKey("record has no Kafka key".into())),
                },
                _ => Ok(None),
            }
        }
    }
}

/// One object and nothing else, by the cursor's (stricter) rules.
pub(super) fn is_fast_object(text: &str) -> bool {
    let mut c = TextCursor::new(text);
    c.peek() == Some(b'{') && c.skip_value().is_some() && c.at_end()
}

/// The key at `tokens` in a record the cursor accepts in full, when it is
/// a non-empty string without escapes or an integer that `Number`'s
/// `to_string` spells the same; otherwise `None` (serde_json decides).
/// Pointers through arrays are left to serde_json too.
pub(super) fn fast_pointer_key(text: &str, tokens: &[String]) -> Option<String> {
    let mut c = TextCursor::new(text);
    if c.peek()? != b'{' {
        return None;
    }
    let mut found = None;
    on_path(&mut c, tokens, &mut found)?;
    if !c.at_end() {
        return None;
    }
    sub_str(text, found?).map(str::to_owned)
}

/// The value under the cursor lies on the pointer's path; `tokens` are the
/// ones still to follow. Recursion is bounded by `MAX_FAST_TOKENS`.
fn on_path<'a>(
    c: &mut TextCursor<'a>,
    tokens: &[String],
    found: &mut Option<&'a [u8]>,
) -> Option<()> {
    let Some((token, rest)) = tokens.split_first() else {
        *found = Some(key_value(c)?);
        return Some(());
    };
    match c.peek()? {
        b'{' => {
            c.expect(b'{')?;
            if c.empty(b'}')? {
                return Some(());
            }
            loop {
                // An escaped key might spell the token: serde_json decides.
                if c.key()?.plain()? == token.as_bytes() {
                    // A repeated key: the last one wins, as in a `Value`.
                    *found = None;
                    on_path(c, rest, found)?;
                } else {
                    c.skip_value()?;
                }
                if !c.more(b'}')? {
                    return Some(());
                }
            }
        }
        b'[' => None,
        _ => c.skip_value(),
    }
}

fn key_value<'a>(c: &mut TextCursor<'a>) -> Option<&'a [u8]> {
    match c.peek()? {
        b'"' => c.string()?.plain().filter(|s| !s.is_empty()),
        _ => {
            let n = c.number()?;
            // u64/i64 print as written; floats, `-0` and the ends of the
            // integer range are reformatted by serde_json.
            let plain_int = !n.fraction && !n.exponent && n.int_digits <= 18;
            (plain_int && !n.text.starts_with(b"-0")).then_some(n.text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `parse` as a route runs it (pointer compiled once).
    fn parse(
        bytes: &[u8],
        dedupe: &DedupeSource,
        kafka_key: Option<&Bytes>,
    ) -> Result<Option<String>, DecodeError> {
        super::parse(bytes, dedupe, Pointer::compile(dedupe).as_ref(), kafka_key)
    }

    /// `parse` with serde_json only (no compiled pointer).
    fn slow(bytes: &[u8], pointer: &str) -> Result<Option<String>, DecodeError> {
        super::parse(bytes, &DedupeSource::Pointer(pointer.into()), None, None)
    }

    #[test]
    fn fast_pointer_path_agrees_with_serde_json() {
        let cases: &[(&str, &str)] = &[
            (r#"{"id":"a"}"#, "/id"),
            (r#"{"id":42}"#, "/id"),
            (r#"{"id":-42}"#, "/id"),
            (r#"{"id":0}"#, "/id"),
            (r#"{"id":-0}"#, "/id"),
            (r#"{"id":1.50}"#, "/id"),
            (r#"{"id":1e3}"#, "/id"),
            (r#"{"id":18446744073709551615}"#, "/id"),
            (r#"{"id":123456789012345678901234567890}"#, "/id"),
            (r#"{"id":""}"#, "/id"),
            (r#"{"id":null}"#, "/id"),
            (r#"{"id":true}"#, "/id"),
            (r#"{"id":"a\"b"}"#, "/id"),
            (r#"{"i\u0064":"a"}"#, "/id"),
            (r#"{"id":"a","id":"b"}"#, "/id"),
            (r#"{"m":{"id":"a"},"m":{"x":1}}"#, "/m/id"),
            (r#"{"m":{"id":"a"},"m":{"id":"b"}}"#, "/m/id"),
            (r#"{"m":{"x":{"id":"no"}, "id":"yes"}}"#, "/m/id"),
            (r#"{"m":[{"id":"a"}]}"#, "/m/0/id"),
            (r#"{"a/b":{"~":"k"}}"#, "/a~1b/~0"),
            (r#"{"m":7}"#, "/m/id"),
            (r#"{"id":"a","x":"\ud800"}"#, "/id"),
            (r#"{"id":"a","x":"\ud83d\ude00"}"#, "/id"),
            (r#"{"id":"a","x":1e400}"#, "/id"),
            (r#"{"id":"a","x":[1,2,{"y":null}]}"#, "/id"),
            (r#"{"id":"a"} x"#, "/id"),
            (r#"{"id":"a",}"#, "/id"),
            (r#"["id"]"#, "/id"),
            (r#" {"id" : "a" } "#, "/id"),
        ];
        let mut fast = 0;
        for (doc, ptr) in cases {
            let d = DedupeSource::Pointer((*ptr).into());
            let tokens = Pointer::compile(&d).unwrap();
            if let Some(key) = fast_pointer_key(doc, &tokens.tokens) {
                fast += 1;
                assert_eq!(slow(doc.as_bytes(), ptr), Ok(Some(key)), "{doc} {ptr}");
            }
            assert_eq!(
                parse(doc.as_bytes(), &d, None),
                slow(doc.as_bytes(), ptr),
                "{doc} {ptr}"
            );
        }
        assert!(fast >= 10, "fast path took only {fast}");
    }

    #[test]
    fn pointer_key() {
        let d = DedupeSource::Pointer("/meta/id".into());
        assert_eq!(
            parse(br#"{"meta":{"id":"a1"}}"#, &d, None)
                .unwrap()
                .as_deref(),
            Some("a1")
        );
        assert_eq!(
            parse(br#"{"meta":{"id":42}}"#, &d, None)
                .unwrap()
                .as_deref(),
            Some("42")
        );
        assert!(matches!(
            parse(br#"{"meta":{}}"#, &d, None),
            Err(DecodeError::DedupeKey(_))
        ));
        assert!(matches!(
            parse(br#"{"meta":{"id":[1]}}"#, &d, None),
            Err(DecodeError::DedupeKey(_))
        ));
    }

    #[test]
    fn kafka_key_and_none() {
        let key = Bytes::from_static(b"k1");
        assert_eq!(
            parse(b"{}", &DedupeSource::KafkaKey, Some(&key))
                .unwrap()
                .as_deref(),
            Some("k1")
        );
        assert!(parse(b"{}", &DedupeSource::KafkaKey, None).is_err());
        assert_eq!(parse(b"{}", &DedupeSource::None, None).unwrap(), None);
        assert!(matches!(
            parse(b"3", &DedupeSource::None, None),
            Err(DecodeError::NotAnObject)
        ));
        assert!(matches!(
            parse(b"{", &DedupeSource::None, None),
            Err(DecodeError::InvalidJson(_))
        ));
    }
}
