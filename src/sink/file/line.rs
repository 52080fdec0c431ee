//! The JSON line format of the file sink.

use super::Outgoing;
use crate::sink::json_text::{push_int, push_str};

/// Bytes `write_line` needs for `r`, unless its strings need escapes
/// (then the buffer grows once more).
pub(super) fn capacity(r: &Outgoing) -> usize {
    // The field names, punctuation and two integers.
    const FRAME: usize = 96;
    FRAME
        + r.topic.len()
        + r.key.as_ref().map_or(0, |k| 2 * k.len())
        + r.dedupe_key.as_ref().map_or(0, String::len)
        + r.event.len()
}

/// Append `{"topic":…,"partition":…,"offset":…,"key":…,"dedupe_key":…,"event":…}\n`.
/// `event` is the record's own JSON text, embedded verbatim (not re-encoded,
/// so amounts keep every digit). A key that is not UTF-8 is written as
/// `key_hex` instead of being mangled.
pub(super) fn write_line(buf: &mut Vec<u8>, r: &Outgoing) {
    buf.extend_from_slice(b"{\"topic\":");
    push_str(buf, &r.topic);
    buf.extend_from_slice(b",\"partition\":");
    push_int(buf, i64::from(r.partition));
    buf.extend_from_slice(b",\"offset\":");
    push_int(buf, r.offset);
    match r.key.as_deref().map(std::str::from_utf8) {
        None => buf.extend_from_slice(b",\"key\":null"),
        Some(Ok(k)) => {
            buf.extend_from_slice(b",\"key\":");
            push_str(buf, k);
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
        Some(k) => push_str(buf, k),
        None => buf.extend_from_slice(b"null"),
    }
    buf.extend_from_slice(b",\"event\":");
    buf.extend_from_slice(&r.event);
    buf.extend_from_slice(b"}\n");
}
