//! The JSON line format of the file sink.

use super::Outgoing;

/// Append `{"topic":…,"partition":…,"offset":…,"key":…,"dedupe_key":…,"event":…}\n`.
/// `event` is the record's own JSON text, embedded verbatim (not re-encoded,
/// so amounts keep every digit). A key that is not UTF-8 is written as
/// `key_hex` instead of being mangled.
pub(super) fn write_line(buf: &mut Vec<u8>, r: &Outgoing) {
    buf.extend_from_slice(b"{\"topic\":");
    push_json_str(buf, &r.topic);
    buf.extend_from_slice(b",\"partition\":");
    buf.extend_from_slice(r.partition.to_string().as_bytes());
    buf.extend_from_slice(b",\"offset\":");
    buf.extend_from_slice(r.offset.to_string().as_bytes());
    match r.key.as_deref().map(std::str::from_utf8) {
        None => buf.extend_from_slice(b",\"key\":null"),
        Some(Ok(k)) => {
            buf.extend_from_slice(b",\"key\":");
            push_json_str(buf, k);
        }
        Some(Err(_)) => {
            buf.extend_from_slice(b",\"key\":null,\"key_hex\":\"");
            for byte in r.key.as_deref().unwrap_or_default() {
                buf.extend_from_slice(format!("{byte:02x}").as_bytes());
            }
            buf.push(b'"');
        }
    }
    buf.extend_from_slice(b",\"dedupe_key\":");
    match &r.dedupe_key {
        Some(k) => push_json_str(buf, k),
        None => buf.extend_from_slice(b"null"),
    }
    buf.extend_from_slice(b",\"event\":");
    buf.extend_from_slice(&r.event);
    buf.extend_from_slice(b"}\n");
}

fn push_json_str(buf: &mut Vec<u8>, s: &str) {
    // serde_json's string escaping cannot fail when writing to a Vec.
    let _ = serde_json::to_writer(&mut *buf, s);
}
