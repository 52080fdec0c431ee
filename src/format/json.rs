//! `json`: any JSON object; the dedupe key comes from a JSON pointer, the
//! Kafka key, or nowhere (at-least-once).

use bytes::Bytes;

use super::DecodeError;
use crate::config::DedupeSource;

pub(super) fn parse(
    bytes: &[u8],
    dedupe: &DedupeSource,
    kafka_key: Option<&Bytes>,
) -> Result<Option<String>, DecodeError> {
    let text = std::str::from_utf8(bytes).map_err(|e| DecodeError::NotUtf8(e.to_string()))?;
    match dedupe {
        DedupeSource::Pointer(pointer) => {
            let value: serde_json::Value =
                serde_json::from_str(text).map_err(|e| DecodeError::InvalidJson(e.to_string()))?;
            if !value.is_object() {
                return Err(DecodeError::NotAnObject);
            }
            match value.pointer(pointer) {
                Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
                Some(serde_json::Value::Number(n)) => Ok(Some(n.to_string())),
                Some(serde_json::Value::Null) | None => {
                    Err(DecodeError::DedupeKey(format!("no value at {pointer}")))
                }
                Some(other) => Err(DecodeError::DedupeKey(format!(
                    "value at {pointer} must be a non-empty string or a number, got {other}"
                ))),
            }
        }
        DedupeSource::KafkaKey | DedupeSource::None | DedupeSource::Format => {
            // Validate without building a tree: only objects are events.
            let raw: &serde_json::value::RawValue =
                serde_json::from_str(text).map_err(|e| DecodeError::InvalidJson(e.to_string()))?;
            if !raw.get().starts_with('{') {
                return Err(DecodeError::NotAnObject);
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

#[cfg(test)]
mod tests {
    use super::*;

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
