//! What the HTTP (with `envelope = true`) and AMQP sinks send:
//! `{"topic": …, "notifiedAt": …, "event": <the event JSON verbatim>}`, and
//! the idempotency key a receiver deduplicates by.

use chrono::SecondsFormat;

use super::Outgoing;

/// The envelope's bytes. The event is embedded as the exact text it arrived
/// in (already validated JSON), so amounts and ids are never re-encoded.
/// `notifiedAt` is when tally received the record (UTC, RFC 3339, millis).
pub(crate) fn envelope(o: &Outgoing) -> Vec<u8> {
    let topic = serde_json::Value::from(&*o.topic).to_string();
    let at = o.received_at.to_rfc3339_opts(SecondsFormat::Millis, true);
    let mut out = Vec::with_capacity(o.event.len() + topic.len() + 64);
    out.extend_from_slice(b"{\"topic\":");
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(b",\"notifiedAt\":\"");
    out.extend_from_slice(at.as_bytes());
    out.extend_from_slice(b"\",\"event\":");
    out.extend_from_slice(&o.event);
    out.push(b'}');
    out
}

/// The key a receiver deduplicates by: the record's dedupe key, else its
/// Kafka coordinates `topic/partition/offset` (stable across re-sends too).
/// Bytes outside visible ASCII, and `%`, are percent-encoded so that the key
/// is a valid header / short string and two keys never encode alike.
pub(crate) fn idempotency_key(o: &Outgoing) -> String {
    let raw = match &o.dedupe_key {
        Some(k) => std::borrow::Cow::Borrowed(k.as_str()),
        None => std::borrow::Cow::Owned(format!("{}/{}/{}", o.topic, o.partition, o.offset)),
    };
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if (0x21..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use chrono::TimeZone;

    use super::*;

    fn out(key: Option<&str>, event: &str) -> Outgoing {
        Outgoing {
            route: Arc::from("r"),
            topic: Arc::from("t\"1"),
            partition: 3,
            offset: 42,
            key: None,
            dedupe_key: key.map(str::to_string),
            event: Bytes::from(event.to_string()),
            usage: None,
            received_at: chrono::Utc
                .with_ymd_and_hms(2026, 1, 2, 3, 4, 5)
                .single()
                .unwrap(),
        }
    }

    #[test]
    fn envelope_embeds_the_event_verbatim() {
        let o = out(None, r#"{"amount":1.10,"id":"x"}"#);
        let text = String::from_utf8(envelope(&o)).unwrap();
        assert_eq!(
            text,
            r#"{"topic":"t\"1","notifiedAt":"2026-01-02T03:04:05.000Z","event":{"amount":1.10,"id":"x"}}"#
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["topic"], "t\"1");
    }

    #[test]
    fn keys_fall_back_to_coordinates_and_are_header_safe() {
        assert_eq!(idempotency_key(&out(None, "{}")), "t\"1/3/42");
        assert_eq!(idempotency_key(&out(Some("a b%ü"), "{}")), "a%20b%25%C3%BC");
        assert_eq!(idempotency_key(&out(Some("t/s/1"), "{}")), "t/s/1");
    }
}
