//! Dead letters: records resolved by rejection, kept with everything needed
//! to explain and replay them. Binary-safe: key, header values and payload are bytes.

use super::codec::{DecodeResult, Reader, Writer};

const DEAD_LETTER_VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeadLetter {
    pub route: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Kafka record timestamp (unix ms).
    pub timestamp_ms: i64,
    pub key: Option<Vec<u8>>,
    /// Kafka headers in record order; a header value may be null.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub payload: Option<Vec<u8>>,
    pub reason: String,
    /// Failure class, e.g. "permanent", "decode".
    pub class: String,
    pub attempts: u32,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
}

pub(crate) fn encode_dead_letter(d: &DeadLetter) -> Vec<u8> {
    let payload_len = d.payload.as_ref().map_or(0, |p| p.len());
    let mut w = Writer::with_capacity(128 + payload_len + d.reason.len());
    w.u8(DEAD_LETTER_VERSION);
    w.bytes32(d.route.as_bytes());
    w.bytes32(d.topic.as_bytes());
    w.i32(d.partition);
    w.i64(d.offset);
    w.i64(d.timestamp_ms);
    w.opt_bytes32(d.key.as_deref());
    w.u32(d.headers.len() as u32);
    for (name, value) in &d.headers {
        w.bytes32(name.as_bytes());
        w.opt_bytes32(value.as_deref());
    }
    w.opt_bytes32(d.payload.as_deref());
    w.bytes32(d.reason.as_bytes());
    w.bytes32(d.class.as_bytes());
    w.u32(d.attempts);
    w.i64(d.first_seen_ms);
    w.i64(d.last_seen_ms);
    w.buf
}

pub(crate) fn decode_dead_letter(v: &[u8]) -> DecodeResult<DeadLetter> {
    let mut r = Reader::new(v);
    let version = r.u8("version")?;
    if version != DEAD_LETTER_VERSION {
        return Err(format!("unknown dead_letters value version {version}"));
    }
    let route = r.str32("route")?;
    let topic = r.str32("topic")?;
    let partition = r.i32("partition")?;
    let offset = r.i64("offset")?;
    let timestamp_ms = r.i64("timestamp")?;
    let key = r.opt_bytes32("key")?;
    let n = r.u32("header count")? as usize;
    // Each header takes at least 5 bytes; bound the allocation by the data.
    if n > r.remaining() / 5 {
        return Err(format!("header count {n} exceeds the data"));
    }
    let mut headers = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.str32("header name")?;
        let value = r.opt_bytes32("header value")?;
        headers.push((name, value));
    }
    let payload = r.opt_bytes32("payload")?;
    let reason = r.str32("reason")?;
    let class = r.str32("class")?;
    let attempts = r.u32("attempts")?;
    let first_seen_ms = r.i64("first_seen")?;
    let last_seen_ms = r.i64("last_seen")?;
    r.finish("dead letter")?;
    Ok(DeadLetter {
        route,
        topic,
        partition,
        offset,
        timestamp_ms,
        key,
        headers,
        payload,
        reason,
        class,
        attempts,
        first_seen_ms,
        last_seen_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_binary_and_nulls() {
        let d = DeadLetter {
            route: "usage".into(),
            topic: "t".into(),
            partition: -1,
            offset: 42,
            timestamp_ms: 7,
            key: Some(vec![0, 159, 146, 150, 0xff]),
            headers: vec![
                ("a".into(), None),
                ("b".into(), Some(vec![])),
                ("c".into(), Some(vec![0xc3, 0x28])),
            ],
            payload: Some((0..=255u8).collect()),
            reason: "unknown tenant".into(),
            class: "permanent".into(),
            attempts: 3,
            first_seen_ms: 1,
            last_seen_ms: 2,
        };
        let v = encode_dead_letter(&d);
        assert_eq!(decode_dead_letter(&v).unwrap(), d);
        for cut in 0..v.len() {
            assert!(decode_dead_letter(&v[..cut]).is_err());
        }
        let empty = DeadLetter::default();
        assert_eq!(
            decode_dead_letter(&encode_dead_letter(&empty)).unwrap(),
            empty
        );
    }
}
