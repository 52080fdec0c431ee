//! The JSON line format of the file sink.

use std::sync::Arc;

use super::Outgoing;
use crate::sink::json_text::{is_plain_ascii, push_int, push_plain, push_str};

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

/// Writes the lines of one sink call. `{"topic":…,"partition":…,"offset":`
/// is the same for every record of a topic and partition (a call holds
/// one partition's records), so it is encoded once and copied.
#[derive(Default)]
pub(super) struct LineWriter {
    /// The topic and partition `head` was encoded for.
    for_topic: Option<(Arc<str>, i32)>,
    head: Vec<u8>,
}

impl LineWriter {
    /// Append `{"topic":…,"partition":…,"offset":…,"key":…,"dedupe_key":…,"event":…}\n`.
    /// `event` is the record's own JSON text, embedded verbatim (not
    /// re-encoded, so amounts keep every digit). A key that is not UTF-8
    /// is written as `key_hex` instead of being mangled.
    pub(super) fn write_line(&mut self, buf: &mut Vec<u8>, r: &Outgoing) {
        let same = self
            .for_topic
            .as_ref()
            .is_some_and(|(t, p)| Arc::ptr_eq(t, &r.topic) && *p == r.partition);
        if !same {
            self.head.clear();
            self.head.extend_from_slice(b"{\"topic\":");
            push_str(&mut self.head, &r.topic);
            self.head.extend_from_slice(b",\"partition\":");
            push_int(&mut self.head, i64::from(r.partition));
            self.head.extend_from_slice(b",\"offset\":");
            self.for_topic = Some((Arc::clone(&r.topic), r.partition));
        }
        buf.extend_from_slice(&self.head);
        push_int(buf, r.offset);
        match r.key.as_deref() {
            None => buf.extend_from_slice(b",\"key\":null"),
            // Printable ASCII (almost every key) is UTF-8 with nothing to
            // escape: one check instead of a UTF-8 validation and a scan.
            Some(k) if is_plain_ascii(k) => {
                buf.extend_from_slice(b",\"key\":");
                push_plain(buf, k);
            }
            Some(k) => match std::str::from_utf8(k) {
                Ok(k) => {
                    buf.extend_from_slice(b",\"key\":");
                    push_str(buf, k);
                }
                Err(_) => {
                    buf.extend_from_slice(b",\"key\":null,\"key_hex\":\"");
                    for byte in k {
                        buf.extend_from_slice(format!("{byte:02x}").as_bytes());
                    }
                    buf.push(b'"');
                }
            },
        }
        buf.extend_from_slice(b",\"dedupe_key\":");
        match r.dedupe_key.as_deref() {
            Some(k) if is_plain_ascii(k.as_bytes()) => push_plain(buf, k.as_bytes()),
            Some(k) => push_str(buf, k),
            None => buf.extend_from_slice(b"null"),
        }
        buf.extend_from_slice(b",\"event\":");
        buf.extend_from_slice(&r.event);
        buf.extend_from_slice(b"}\n");
    }
}
