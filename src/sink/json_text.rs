//! Hand-written JSON output for the sinks' hot paths: strings and integers
//! appended to a buffer without going through a serializer or `to_string`.

/// Append `s` as a JSON string. Text with nothing to escape (almost every
/// id and key) is copied as is; anything else takes serde_json's escaping.
pub(crate) fn push_str(buf: &mut Vec<u8>, s: &str) {
    if needs_no_escape(s.as_bytes()) {
        buf.reserve(s.len() + 2);
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
    } else {
        // Escaping a &str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *buf, s);
    }
}

/// No quote, backslash or control character (what JSON must escape).
/// No early exit and no table: the compiler checks 16 or 32 bytes a step
/// (whole-process callgrind: ~200 instructions per dedupe key before).
fn needs_no_escape(s: &[u8]) -> bool {
    let mut stop = 0u8;
    for &c in s {
        stop |= u8::from(c < 0x20) | u8::from(c == b'"') | u8::from(c == b'\\');
    }
    stop == 0
}

/// Append `n` in decimal, as `n.to_string()` would spell it.
pub(crate) fn push_int(buf: &mut Vec<u8>, n: i64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        buf.push(b'-');
    }
    buf.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_match_serde_json() {
        for s in [
            "",
            "abc",
            "a\"b",
            "back\\slash",
            "tab\there",
            "\u{1}",
            "é✓",
            "\u{7f}",
            "\u{1f}",
            " ",
            "a long plain id, longer than one vector step: 0123456789abcdef",
            "a long id, longer than one vector step, with a quote at the end\"",
            "a long id, longer than one vector step, with a tab at the end\t",
        ] {
            let mut buf = Vec::new();
            push_str(&mut buf, s);
            assert_eq!(buf, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn integers_match_to_string() {
        for n in [
            0,
            7,
            -7,
            10,
            99,
            100,
            i64::from(i32::MAX),
            i64::MAX,
            i64::MIN,
            -1,
        ] {
            let mut buf = Vec::new();
            push_int(&mut buf, n);
            assert_eq!(buf, n.to_string().into_bytes(), "{n}");
        }
    }
}
