//! Hand-written JSON output for the sinks' hot paths: strings and integers
//! appended to a buffer without going through a serializer or `to_string`.

/// Append `s` as a JSON string. Text with nothing to escape (almost every
/// id and key) is copied as is; anything else takes serde_json's escaping.
pub(crate) fn push_str(buf: &mut Vec<u8>, s: &str) {
    if crate::format::json_plain_prefix(s.as_bytes()) == s.len() {
        buf.reserve(s.len() + 2);
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
    } else {
        // Escaping a &str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *buf, s);
    }
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
