//! A validating JSON cursor: one pass over the bytes, no allocation.
//!
//! The fast decoders walk an event with it and give up (`None`) at the
//! first thing they are not sure of; the serde_json-based decoders then
//! decide, with the exact error. So the cursor only has to be *at least as
//! strict* as serde_json — whatever it accepts, `serde_json::Value` accepts
//! too: RFC 8259 syntax, no raw control characters in strings, surrogate
//! escapes only in pairs, nesting far below serde_json's recursion limit,
//! and (in skipped values) no number that could overflow an `f64`.

/// How deep a skipped value may nest (serde_json refuses 128 levels in
/// total; the fast decoders add fewer than ten of their own).
const MAX_SKIP_DEPTH: u32 = 64;

/// Integer digits a skipped number may have before serde_json could round
/// it to infinity (f64 ends near 1.8e308).
const MAX_SKIP_INT_DIGITS: usize = 300;

/// Bytes that end the plain run of a string: the quote, the backslash and
/// the control characters JSON forbids raw.
static STRING_STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// A string's text between the quotes, as written: always valid UTF-8
/// (the cursor checks every string that holds a byte >= 0x80; the others
/// are ASCII), kept as bytes so that ASCII strings cost no second pass.
#[derive(Debug, Clone, Copy)]
pub(super) struct JsonStr<'a> {
    pub raw: &'a [u8],
    /// Whether `raw` holds escapes (then it is not the string's value).
    pub escaped: bool,
}

impl<'a> JsonStr<'a> {
    /// The value, when it is spelled without escapes.
    pub fn plain(self) -> Option<&'a [u8]> {
        (!self.escaped).then_some(self.raw)
    }
}

/// A number's text (ASCII by the grammar) and shape.
#[derive(Debug, Clone, Copy)]
pub(super) struct JsonNum<'a> {
    pub text: &'a [u8],
    /// Digits before the point (the sign not counted).
    pub int_digits: usize,
    pub fraction: bool,
    pub exponent: bool,
}

/// Works on bytes: no up-front UTF-8 pass over the input. The grammar
/// admits bytes >= 0x80 only inside strings, and with `CHECK_UTF8` each
/// string that holds one is checked with `from_utf8` before the cursor
/// accepts it, so whatever the cursor accepts is valid UTF-8 as a whole.
/// Without it (`TextCursor`, over a `&str`) the input is already known to
/// be UTF-8 and the string scan skips the high-byte tracking: one format's
/// check costs the other nothing.
pub(super) struct Cursor<'a, const CHECK_UTF8: bool = true> {
    b: &'a [u8],
    i: usize,
}

/// A cursor over text already validated as UTF-8.
pub(super) type TextCursor<'a> = Cursor<'a, false>;

impl<'a> TextCursor<'a> {
    pub fn new(text: &'a str) -> TextCursor<'a> {
        Cursor {
            b: text.as_bytes(),
            i: 0,
        }
    }
}

impl<'a> Cursor<'a> {
    /// A cursor over bytes not yet known to be UTF-8.
    pub fn bytes(b: &'a [u8]) -> Cursor<'a> {
        Cursor { b, i: 0 }
    }
}

impl<'a, const CHECK_UTF8: bool> Cursor<'a, CHECK_UTF8> {
    pub fn pos(&self) -> usize {
        self.i
    }

    /// The input from `start` to the cursor (a value just read, as written).
    pub fn since(&self, start: usize) -> Option<&'a [u8]> {
        self.b.get(start..self.i)
    }

    /// The byte `ahead` positions after the cursor, if any (no whitespace
    /// skipped): lets a caller pick the one field name worth comparing.
    #[inline(always)]
    pub fn byte_at(&self, ahead: usize) -> Option<u8> {
        self.b.get(self.i + ahead).copied()
    }

    #[inline(always)]
    pub fn ws(&mut self) {
        // Compact JSON has none: one compare settles the common case.
        if self.b.get(self.i).is_some_and(|&c| c > b' ') {
            return;
        }
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// The next byte after whitespace, not consumed.
    #[inline(always)]
    pub fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    /// Consume `c` (after whitespace), or fail.
    #[inline(always)]
    pub fn expect(&mut self, c: u8) -> Option<()> {
        if self.peek()? == c {
            self.i += 1;
            Some(())
        } else {
            None
        }
    }

    /// Only whitespace left.
    pub fn at_end(&mut self) -> bool {
        self.ws();
        self.i == self.b.len()
    }

    /// After `{` or `[`: true (and consumed) when `close` follows at once.
    #[inline]
    pub fn empty(&mut self, close: u8) -> Option<bool> {
        if self.peek()? == close {
            self.i += 1;
            Some(true)
        } else {
            Some(false)
        }
    }

    /// After a member or element: true on `,` (another follows), false on
    /// `close`, None on anything else.
    #[inline(always)]
    pub fn more(&mut self, close: u8) -> Option<bool> {
        let c = self.peek()?;
        self.i += 1;
        match c {
            b',' => Some(true),
            c if c == close => Some(false),
            _ => None,
        }
    }

    /// An object member's key and the `:` after it.
    #[inline]
    pub fn key(&mut self) -> Option<JsonStr<'a>> {
        let key = self.string()?;
        self.expect(b':')?;
        Some(key)
    }

    /// Consume `lit` if the input continues with exactly it (no whitespace
    /// skipped). Always inlined: with a literal the length is a constant
    /// and the compiler compares it in a few word loads.
    #[inline(always)]
    pub fn eat(&mut self, lit: &[u8]) -> bool {
        if self.b.get(self.i..self.i + lit.len()) == Some(lit) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    /// A string value (after whitespace). The plain case — no escape —
    /// is small enough to inline everywhere; escapes take `escaped_string`.
    #[inline(always)]
    pub fn string(&mut self) -> Option<JsonStr<'a>> {
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.i + 1;
        // A constant: the text cursor compiles the plain scan alone.
        let (end, high) = if CHECK_UTF8 {
            scan_plain(self.b, start)
        } else {
            (skip_plain(self.b, start), false)
        };
        if self.b.get(end) != Some(&b'"') {
            return self.escaped_string(start, end);
        }
        let raw = self.b.get(start..end)?;
        if high {
            utf8(raw)?;
        }
        self.i = end + 1;
        Some(JsonStr {
            raw,
            escaped: false,
        })
    }

    /// The rest of a string from its first escape (or bad byte) at `i`.
    #[cold]
    #[inline(never)]
    fn escaped_string(&mut self, start: usize, mut i: usize) -> Option<JsonStr<'a>> {
        loop {
            match self.b.get(i)? {
                b'"' => break,
                b'\\' => i = skip_plain(self.b, self.escape(i + 1)?),
                _ => return None, // a raw control character
            }
        }
        // Rare: the whole string is checked, whatever its bytes.
        let raw = self.b.get(start..i)?;
        if CHECK_UTF8 {
            utf8(raw)?;
        }
        self.i = i + 1;
        Some(JsonStr { raw, escaped: true })
    }

    /// One escape after its backslash; returns the index after it. `\u`
    /// surrogates must come as a lead/trail pair, as serde_json requires
    /// for a string value.
    fn escape(&self, i: usize) -> Option<usize> {
        match self.b.get(i)? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(i + 1),
            b'u' => {
                let unit = self.hex4(i + 1)?;
                match unit {
                    0xD800..=0xDBFF => {
                        if self.b.get(i + 5..i + 7)? != b"\\u" {
                            return None;
                        }
                        matches!(self.hex4(i + 7)?, 0xDC00..=0xDFFF).then_some(i + 11)
                    }
                    0xDC00..=0xDFFF => None,
                    _ => Some(i + 5),
                }
            }
            _ => None,
        }
    }

    fn hex4(&self, i: usize) -> Option<u16> {
        self.b.get(i..i + 4)?.iter().try_fold(0u16, |acc, &c| {
            let d = (c as char).to_digit(16)?;
            Some(acc << 4 | d as u16)
        })
    }

    /// A number (after whitespace): `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    #[inline(always)]
    pub fn number(&mut self) -> Option<JsonNum<'a>> {
        self.ws();
        let start = self.i;
        let b = self.b;
        let mut i = start;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        let int_start = i;
        match b.get(i)? {
            b'0' => i += 1,
            b'1'..=b'9' => i = digit_run(b, i + 1),
            _ => return None,
        }
        let int_digits = i - int_start;
        let fraction = b.get(i) == Some(&b'.');
        if fraction {
            i = digits(b, i + 1)?;
        }
        let exponent = matches!(b.get(i), Some(b'e' | b'E'));
        if exponent {
            i += 1;
            if let Some(b'+' | b'-') = b.get(i) {
                i += 1;
            }
            i = digits(b, i)?;
        }
        self.i = i;
        Some(JsonNum {
            text: b.get(start..i)?,
            int_digits,
            fraction,
            exponent,
        })
    }

    /// `true`, `false` or `null` (after whitespace).
    fn literal(&mut self) -> Option<()> {
        self.ws();
        let rest = self.b.get(self.i..)?;
        let n = [&b"true"[..], b"false", b"null"]
            .into_iter()
            .find(|w| rest.starts_with(w))?
            .len();
        self.i += n;
        Some(())
    }

    /// Skip one value of any kind, validating it. Iterative: the nesting
    /// is a bit stack (1 = object), bounded by `MAX_SKIP_DEPTH`.
    pub fn skip_value(&mut self) -> Option<()> {
        let mut stack: u64 = 0;
        let mut depth: u32 = 0;
        loop {
            // A value starts here.
            let mut closed = false;
            match self.peek()? {
                b'{' => {
                    self.i += 1;
                    if depth == MAX_SKIP_DEPTH {
                        return None;
                    }
                    depth += 1;
                    stack = stack << 1 | 1;
                    if self.empty(b'}')? {
                        closed = true;
                    } else {
                        self.key()?;
                        continue;
                    }
                }
                b'[' => {
                    self.i += 1;
                    if depth == MAX_SKIP_DEPTH {
                        return None;
                    }
                    depth += 1;
                    stack <<= 1;
                    if self.empty(b']')? {
                        closed = true;
                    } else {
                        continue;
                    }
                }
                b'"' => {
                    self.string()?;
                }
                b'-' | b'0'..=b'9' => {
                    let n = self.number()?;
                    if n.exponent || n.int_digits > MAX_SKIP_INT_DIGITS {
                        return None;
                    }
                }
                _ => self.literal()?,
            }
            if closed {
                depth -= 1;
                stack >>= 1;
            }
            // After a value: close containers until one continues.
            loop {
                if depth == 0 {
                    return Some(());
                }
                let in_object = stack & 1 == 1;
                if self.more(if in_object { b'}' } else { b']' })? {
                    if in_object {
                        self.key()?;
                    }
                    break;
                }
                depth -= 1;
                stack >>= 1;
            }
        }
    }
}

/// The index of the first byte from `i` on that ends a string's plain run
/// (`"`, `\\`, a control character), or the length. Eight bytes at a time:
/// strings are most of an event's bytes.
#[inline(always)]
pub(super) fn skip_plain(b: &[u8], i: usize) -> usize {
    scan_plain(b, i).0
}

/// `skip_plain`, and whether the run it skipped holds a byte >= 0x80 (then
/// only `from_utf8` can tell whether the run is valid UTF-8).
#[inline(always)]
pub(super) fn scan_plain(b: &[u8], mut i: usize) -> (usize, bool) {
    const LO: u64 = u64::from_le_bytes([1; 8]);
    const HI: u64 = LO << 7;
    // Standard SWAR tests; each flags its lowest matching byte exactly
    // (false flags only sit above a true one), so the lowest flag is right.
    let zero_byte = |v: u64| v.wrapping_sub(LO) & !v & HI;
    // The high bits of every byte of the run, ORed together.
    let mut high = 0u64;
    let mut words = b.get(i..).unwrap_or_default().chunks_exact(8);
    for chunk in words.by_ref() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let stop = zero_byte(w ^ (LO * u64::from(b'"')))
            | zero_byte(w ^ (LO * u64::from(b'\\')))
            | (w.wrapping_sub(LO * 0x20) & !w & HI);
        if stop != 0 {
            // Only the bytes below the stop are the run's: the mask keeps
            // every bit under the stop byte's flag (its own bit 7 and all
            // bytes after it excluded).
            let below = (stop & stop.wrapping_neg()) - 1;
            high |= w & below;
            return (i + (stop.trailing_zeros() / 8) as usize, high & HI != 0);
        }
        high |= w;
        i += 8;
    }
    while let Some(&c) = b.get(i)
        && !STRING_STOP[usize::from(c)]
    {
        high |= u64::from(c);
        i += 1;
    }
    (i, high & HI != 0)
}

/// Whether `s` holds the byte `needle`, eight bytes at a time (the key
/// fields are 10–40 bytes: shorter than `memchr`'s set-up pays for).
#[inline]
pub(super) fn contains_byte(s: &[u8], needle: u8) -> bool {
    const LO: u64 = u64::from_le_bytes([1; 8]);
    const HI: u64 = LO << 7;
    let pattern = LO * u64::from(needle);
    let found = |word: [u8; 8]| {
        let v = u64::from_le_bytes(word) ^ pattern;
        v.wrapping_sub(LO) & !v & HI != 0
    };
    let mut words = s.chunks_exact(8);
    for chunk in words.by_ref() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        if found(word) {
            return true;
        }
    }
    // The tail in one more word, padded with a byte that is not the needle.
    let tail = words.remainder();
    let mut word = [!needle; 8];
    word[..tail.len()].copy_from_slice(tail);
    found(word)
}

/// `part`, a slice of `whole`'s bytes (a string or number the cursor
/// read from it), as the same slice of `whole`: found by address (no
/// unsafe, no second UTF-8 pass), with `str::get`'s boundary checks.
pub(super) fn sub_str<'t>(whole: &'t str, part: &[u8]) -> Option<&'t str> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    whole.get(start..start.checked_add(part.len())?)
}

/// Valid UTF-8, or `None` (the checked decoder names the error).
#[cold]
#[inline(never)]
fn utf8(raw: &[u8]) -> Option<()> {
    std::str::from_utf8(raw).ok().map(drop)
}

/// One or more digits from `i`; the index after them.
#[inline]
fn digits(b: &[u8], i: usize) -> Option<usize> {
    let end = digit_run(b, i);
    (end > i).then_some(end)
}

/// The index after the ASCII digits from `i` on, eight bytes at a time
/// (epoch millis have 13). Per byte `x = c ^ '0'` is 0..=9 exactly for a
/// digit; `x + 0x76` sets bit 7 for 10..=0x7f, `x` itself for the rest.
/// A carry out of a byte only flags bytes above an already flagged one,
/// so the lowest flag is exact.
#[inline(always)]
pub(super) fn digit_run(b: &[u8], mut i: usize) -> usize {
    const LO: u64 = u64::from_le_bytes([1; 8]);
    const HI: u64 = LO << 7;
    while let Some(chunk) = b.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word) ^ (LO * u64::from(b'0'));
        let other = (x | x.wrapping_add(LO * 0x76)) & HI;
        if other != 0 {
            return i + (other.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(b'0'..=b'9') = b.get(i) {
        i += 1;
    }
    i
}

/// Whether `text` is one JSON value that the cursor accepts, with only
/// whitespace around it.
#[cfg(test)]
pub(super) fn accepts(text: &str) -> bool {
    let mut c = Cursor::new(text);
    c.skip_value().is_some() && c.at_end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_standard_json() {
        for ok in [
            "{}",
            "[]",
            " {\"a\" : [1, -2.5, 0, 3.0, true, false, null, \"x\\n\\u00e9\\ud83d\\ude00\"]}\n",
            "\"\"",
            "0",
            "-0.0",
            "[[[[{}]]]]",
            r#"{"a":{"b":{"c":[{"d":"\"\\\/\b\f\n\r\t"}]}}}"#,
        ] {
            assert!(accepts(ok), "{ok}");
            assert!(
                serde_json::from_str::<serde_json::Value>(ok).is_ok(),
                "{ok}"
            );
        }
    }

    #[test]
    fn refuses_what_serde_json_values_refuse_and_more() {
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        for bad in [
            "",
            "{",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "[1,]",
            "[1 2]",
            "01",
            "1.",
            "-",
            ".5",
            "1e",
            "+1",
            "tru",
            "nul",
            "\"a",
            "\"\\x\"",
            "\"\\u12\"",
            "\"\u{1}\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800\\u0041\"",
            "{} {}",
            "{'a':1}",
            "\u{feff}{}",
            "1e400",
            deep.as_str(),
        ] {
            assert!(!accepts(bad), "{bad:?}");
        }
    }

    #[test]
    fn word_scan_stops_where_the_byte_scan_does() {
        let bytewise = |b: &[u8], mut i: usize| {
            while i < b.len() && !STRING_STOP[usize::from(b[i])] {
                i += 1;
            }
            i
        };
        for stop in 0..=255u8 {
            for at in 0..20 {
                let mut b = vec![b'a'; 20];
                b[at] = stop;
                // Neighbours that trip naive word tests: high bytes, 0x21, 0x5d.
                b[(at + 1) % 20] = 0x80 | stop;
                b[(at + 7) % 20] = 0x21;
                for start in [0, 1, 5] {
                    assert_eq!(
                        skip_plain(&b, start),
                        bytewise(&b, start),
                        "byte {stop:#x} at {at}, from {start}"
                    );
                }
            }
        }
    }

    #[test]
    fn word_scan_sees_every_high_byte_of_the_run_and_none_after_it() {
        let bytewise = |b: &[u8], mut i: usize| {
            let mut high = false;
            while i < b.len() && !STRING_STOP[usize::from(b[i])] {
                high |= b[i] >= 0x80;
                i += 1;
            }
            (i, high)
        };
        for stop in [b'"', b'\\', 0x00, 0x1f] {
            for high_at in 0..20 {
                for stop_at in 0..20 {
                    let mut b = vec![b'a'; 20];
                    b[high_at] = 0xc3;
                    b[stop_at] = stop;
                    for start in [0, 1, 3, 7] {
                        assert_eq!(
                            scan_plain(&b, start),
                            bytewise(&b, start),
                            "high at {high_at}, {stop:#x} at {stop_at}, from {start}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_text_cursor_reads_what_the_checked_cursor_reads() {
        // The text cursor skips the UTF-8 tracking; on valid text the two
        // must agree on every string's bytes, escape flag and end.
        let chars = ["a", "\u{e9}", "\u{20ac}", "\u{1f600}"];
        for ch in chars {
            for pad in 0..17 {
                for escape in ["", "\\n", "\\u00e9"] {
                    let body = format!("{}{escape}{ch}{}", "a".repeat(pad), "b".repeat(pad % 5));
                    let text = format!(" \"{body}\" ,{{\"k\":[\"{ch}\",1]}}");
                    let mut checked = Cursor::bytes(text.as_bytes());
                    let mut plain = TextCursor::new(&text);
                    let (a, b) = (checked.string(), plain.string());
                    let (a, b) = (a.expect(&text), b.expect(&text));
                    assert_eq!((a.raw, a.escaped), (b.raw, b.escaped), "{text}");
                    assert_eq!((a.raw, a.escaped), (body.as_bytes(), !escape.is_empty()));
                    assert_eq!(checked.pos(), plain.pos(), "{text}");
                    assert_eq!(
                        (checked.more(b']'), plain.more(b']')),
                        (Some(true), Some(true))
                    );
                    assert!(checked.skip_value().is_some() && plain.skip_value().is_some());
                    assert!(checked.at_end() && plain.at_end(), "{text}");
                }
            }
        }
    }

    #[test]
    fn strings_with_high_bytes_are_utf8_checked_wherever_they_fall() {
        let chars = ["\u{e9}", "\u{20ac}", "\u{1f600}"];
        for ch in chars {
            for pad in 0..17 {
                for tail in [0, 1, 6, 9] {
                    let body = format!("{}{ch}{}", "a".repeat(pad), "b".repeat(tail));
                    let text = format!("\"{body}\"");
                    let mut c = Cursor::bytes(text.as_bytes());
                    let s = c.string().expect(&text);
                    assert_eq!((s.raw, s.escaped), (body.as_bytes(), false));
                    assert!(c.at_end());
                    // Escaped strings are checked too.
                    let text = format!("\"\\n{body}\"");
                    assert!(Cursor::bytes(text.as_bytes()).string().is_some(), "{text}");
                    // The same string with its last UTF-8 byte cut, or with a
                    // lone continuation byte or 0xff: refused.
                    let mut cut = body.clone().into_bytes();
                    cut.remove(pad + ch.len() - 1);
                    for bad in [
                        cut,
                        {
                            let mut b = body.clone().into_bytes();
                            b[pad] = 0x80;
                            b
                        },
                        {
                            let mut b = body.clone().into_bytes();
                            b[pad] = 0xff;
                            b
                        },
                    ] {
                        for escaped in [false, true] {
                            let mut text = b"\"".to_vec();
                            if escaped {
                                text.extend_from_slice(b"\\t");
                            }
                            text.extend_from_slice(&bad);
                            text.push(b'"');
                            assert!(
                                Cursor::bytes(&text).string().is_none(),
                                "{:?}",
                                String::from_utf8_lossy(&text)
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn short_strings_at_the_end_of_the_input() {
        for (text, want) in [
            (&b"\"\""[..], Some(&b""[..])),
            (b"\"a\"", Some(b"a")),
            (b"\"abcdef\"", Some(b"abcdef")),
            (b"\"\xc3\xa9\"", Some("\u{e9}".as_bytes())),
            (b"\"ab", None),
            (b"\"\xc3\"", None),
            (b"\"\xc3", None),
            (b"\"a\x01\"", None),
        ] {
            let mut c = Cursor::bytes(text);
            assert_eq!(c.string().map(|s| s.raw), want, "{text:?}");
        }
    }

    #[test]
    fn raw_control_bytes_are_refused_at_every_position() {
        for ctrl in [0x00, 0x09, 0x0a, 0x1f] {
            for at in 0..20 {
                let mut text = vec![b'"'];
                text.extend(std::iter::repeat_n(b'a', 20));
                text[1 + at] = ctrl;
                text.push(b'"');
                assert!(Cursor::bytes(&text).string().is_none(), "{ctrl:#x} at {at}");
            }
        }
    }

    #[test]
    fn bytes_outside_strings_must_be_ascii_json() {
        for bad in [
            &b"\xc3\xa9"[..],
            b"[1,\xff]",
            b"{\"a\":1}\xc2\xa0",
            b"\xef\xbb\xbf{}",
        ] {
            let mut c = Cursor::bytes(bad);
            assert!(c.skip_value().is_none() || !c.at_end(), "{bad:?}");
        }
    }

    #[test]
    fn digit_runs_end_where_the_bytewise_scan_does() {
        for other in 0..=255u8 {
            for at in 0..20 {
                let mut b = vec![b'7'; 20];
                b[at] = other;
                // A neighbour that trips naive range tests.
                b[(at + 3) % 20] = if other.is_ascii_digit() { b'0' } else { b'9' };
                for start in [0, 1, 5, 13] {
                    let want = start + b[start..].iter().take_while(|c| c.is_ascii_digit()).count();
                    assert_eq!(
                        digit_run(&b, start),
                        want,
                        "{other:#x} at {at}, from {start}"
                    );
                }
            }
        }
    }

    #[test]
    fn contains_byte_finds_the_byte_at_every_position() {
        for len in 0..30 {
            let s = vec![b'a'; len];
            assert!(!contains_byte(&s, b'/'));
            for at in 0..len {
                let mut t = s.clone();
                t[at] = b'/';
                assert!(contains_byte(&t, b'/'), "len {len}, at {at}");
                // Bytes one off the needle, and high bytes, do not match.
                t[at] = b'/' + 1;
                assert!(!contains_byte(&t, b'/'));
                t[at] = b'/' | 0x80;
                assert!(!contains_byte(&t, b'/'));
            }
        }
    }

    #[test]
    fn strings_and_numbers_report_their_text() {
        let mut c = Cursor::new(r#" "ab\"c" -12.50e+3 "#);
        let s = c.string().unwrap();
        assert_eq!((s.raw, s.escaped), (&br#"ab\"c"#[..], true));
        let n = c.number().unwrap();
        assert_eq!(
            (n.text, n.int_digits, n.fraction, n.exponent),
            (&b"-12.50e+3"[..], 2, true, true)
        );
        assert!(c.at_end());
    }
}
