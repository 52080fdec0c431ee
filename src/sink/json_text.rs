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

/// Whether `b` is printable ASCII with nothing a JSON string must escape
/// (no `"`, `\\`, control character or byte above 0x7f): then `"b"` is
/// its JSON string, and it is UTF-8. Eight bytes at a time.
pub(crate) fn is_plain_ascii(b: &[u8]) -> bool {
    const LO: u64 = u64::from_le_bytes([1; 8]);
    const HI: u64 = LO << 7;
    // Each test flags only where a byte matches or above one that does, so
    // "any flag" is exact.
    let zero_byte = |v: u64| v.wrapping_sub(LO) & !v & HI;
    let mut words = b.chunks_exact(8);
    for chunk in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let stop = (w & HI)
            | zero_byte(w ^ (LO * u64::from(b'"')))
            | zero_byte(w ^ (LO * u64::from(b'\\')))
            | (w.wrapping_sub(LO * 0x20) & !w & HI);
        if stop != 0 {
            return false;
        }
    }
    words
        .remainder()
        .iter()
        .all(|&c| (0x20..0x80).contains(&c) && c != b'"' && c != b'\\')
}

/// Append `s`, which `is_plain_ascii` accepted, as a JSON string.
pub(crate) fn push_plain(buf: &mut Vec<u8>, s: &[u8]) {
    buf.reserve(s.len() + 2);
    buf.push(b'"');
    buf.extend_from_slice(s);
    buf.push(b'"');
}

/// "00" to "99": two digits per division.
const DIGIT_PAIRS: [u8; 200] = {
    let mut t = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        t[2 * i] = b'0' + (i / 10) as u8;
        t[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    t
};

/// Append `n` in decimal, as `n.to_string()` would spell it. Two digits
/// per step (whole-process callgrind: ~108 instructions for a 6-digit
/// offset one digit at a time).
pub(crate) fn push_int(buf: &mut Vec<u8>, n: i64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n.unsigned_abs();
    while rest >= 100 {
        let pair = (rest % 100) as usize * 2;
        rest /= 100;
        at -= 2;
        digits[at..at + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if rest >= 10 {
        let pair = rest as usize * 2;
        at -= 2;
        digits[at..at + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    } else {
        at -= 1;
        digits[at] = b'0' + rest as u8;
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
    fn plain_ascii_is_exactly_what_needs_no_escape() {
        // Every byte value, alone and at each position of a 17-byte string
        // (both the word loop and the tail).
        for c in 0u8..=255 {
            let plain = (0x20..0x80).contains(&c) && c != b'"' && c != b'\\';
            for at in 0..17 {
                let mut s = vec![b'a'; 17];
                s[at] = c;
                assert_eq!(is_plain_ascii(&s), plain, "byte {c:#x} at {at}");
                if plain {
                    let text = std::str::from_utf8(&s).unwrap();
                    let mut ours = Vec::new();
                    push_plain(&mut ours, &s);
                    assert_eq!(ours, serde_json::to_vec(text).unwrap());
                }
            }
            assert_eq!(is_plain_ascii(&[c]), plain);
        }
        assert!(is_plain_ascii(b""));
        assert!(is_plain_ascii(b"4f7c2a1e-9b3d-4c8e-a2f1-0d9e8b7c6a5f"));
        assert!(!is_plain_ascii("é".as_bytes()));
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
            9,
            -9,
            101,
            1000,
            123_456,
            -99_999,
            i64::MIN + 1,
        ] {
            let mut buf = Vec::new();
            push_int(&mut buf, n);
            assert_eq!(buf, n.to_string().into_bytes(), "{n}");
        }
        for n in (-100_000..100_000).step_by(7) {
            let mut buf = Vec::new();
            push_int(&mut buf, n);
            assert_eq!(buf, n.to_string().into_bytes(), "{n}");
        }
    }
}
