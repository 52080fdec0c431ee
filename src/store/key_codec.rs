//! The stored form of a batch's dedupe keys (schema 2), reversible and
//! cheap: Kill Bill scope keys (`tenantId/subscriptionExternalKey/trackingId`,
//! ~84 bytes) are mostly hex UUIDs and prefixes shared with a recent key.
//!
//! 1. Each key's canonical UUIDs (8-4-4-4-12 hex, all lower or all upper
//!    case) become a marker byte and their 16 bytes; a literal marker byte is
//!    escaped. A 36-byte UUID costs 17.
//! 2. Each transformed key is front-coded against whichever of the previous
//!    `WINDOW` keys shares the longest prefix with it (keys of one tenant or
//!    subscription interleave with others in a batch): back-reference,
//!    shared length, then only the rest.
//!
//! Layout: version u8 (2), count varint, then per key: back-reference varint
//! (0 = none, j = the key j places earlier), shared-prefix length varint,
//! suffix length varint, suffix bytes.

use super::codec::DecodeResult;
use super::prefetch;

const VERSION: u8 = 2;
const WINDOW: usize = 16;
const UUID_LOWER: u8 = 0x01;
const UUID_UPPER: u8 = 0x02;
const ESCAPE: u8 = 0x03;
/// Refuse to allocate more than this for one batch's keys when decoding.
const MAX_KEYS_BYTES: usize = 256 << 20;

/// Per byte: its hex value, plus `LOWER`/`UPPER` for letters; `NOT_HEX` otherwise.
const LOWER: u8 = 0x40;
const UPPER: u8 = 0x80;
const NOT_HEX: u8 = 0x20;
const HEX: [u8; 256] = {
    let mut t = [NOT_HEX; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = (10 + i as u8) | LOWER;
        t[b'A' as usize + i] = (10 + i as u8) | UPPER;
        i += 1;
    }
    t
};
fn is_hex(b: u8) -> bool {
    HEX[b as usize] & NOT_HEX == 0
}

/// The 16 bytes of a canonical UUID at the start of `s`, and whether it
/// is upper case (mixed case is not canonical: kept as text).
fn uuid_at(s: &[u8]) -> Option<([u8; 16], bool)> {
    // The dashes first: most positions fail there at once.
    let s: &[u8; 36] = s.get(..36)?.try_into().ok()?;
    if s[8] != b'-' || s[13] != b'-' || s[18] != b'-' || s[23] != b'-' {
        return None;
    }
    // The 32 digits as four words of eight, each decoded at once (SWAR);
    // one test of all four words' flags at the end, not one per word.
    let word = |a: usize, b: usize| {
        u64::from(u32::from_le_bytes([s[a], s[a + 1], s[a + 2], s[a + 3]]))
            | u64::from(u32::from_le_bytes([s[b], s[b + 1], s[b + 2], s[b + 3]])) << 32
    };
    let words = [word(0, 4), word(9, 14), word(19, 24), word(28, 32)];
    let mut out = [0u8; 16];
    let (mut bad, mut lower, mut upper) = (0u64, 0u64, 0u64);
    for (n, w) in words.into_iter().enumerate() {
        let h = hex8(w);
        out[4 * n..4 * n + 4].copy_from_slice(&h.packed.to_le_bytes());
        bad |= h.bad;
        lower |= h.lower;
        upper |= h.upper;
    }
    if bad != 0 || (lower != 0 && upper != 0) {
        return None;
    }
    Some((out, upper != 0))
}

/// Eight ASCII hex digits decoded at once: `packed` is meaningful only
/// where `bad` is 0.
struct Hex8 {
    /// The digits (the first in the lowest byte of the word) as four bytes.
    packed: u32,
    /// Non-zero if a byte is not a hex digit.
    bad: u64,
    /// Non-zero if a digit is a lower / upper case letter.
    lower: u64,
    upper: u64,
}

/// Each byte's range test is one add per bound on all eight at once: below
/// 0x80 nothing carries into the next byte (a byte at or above 0x80 is
/// `bad` by itself, whatever the tests make of it). Letters are tested
/// case-folded (`| 0x20`), their case read from bit 5.
#[inline(always)]
fn hex8(w: u64) -> Hex8 {
    const LO: u64 = u64::from_le_bytes([1; 8]);
    const HI: u64 = LO << 7;
    // The high bit of each byte of `x` that lies in `lo..=hi`.
    let within = |x: u64, lo: u8, hi: u8| {
        (x.wrapping_add(LO * u64::from(0x80 - lo)) & !x.wrapping_add(LO * u64::from(0x7f - hi)))
            & HI
    };
    let digit = within(w, b'0', b'9');
    let letter = within(w | (LO * 0x20), b'a', b'f');
    // Bit 5 (lower case) of each byte, moved to that byte's bit 7.
    let case = w << 2;
    // Digits are their low nibble; letters their low nibble + 9.
    let nibbles = (w & (LO * 0x0f)) + (letter >> 7) * 9;
    // Byte k = nibble k << 4 | nibble k+1; keep the even bytes, packed.
    let pairs = ((nibbles << 4) | (nibbles >> 8)) & 0x00ff_00ff_00ff_00ff;
    let pairs = (pairs | pairs >> 8) & 0x0000_ffff_0000_ffff;
    Hex8 {
        packed: (pairs | pairs >> 16) as u32,
        bad: (w & HI) | ((digit | letter) ^ HI),
        lower: letter & case,
        upper: letter & !case,
    }
}

fn transform(key: &str, out: &mut Vec<u8>) {
    let b = key.as_bytes();
    out.reserve(b.len() + 1);
    // Plain bytes are copied in runs; `lit` is where the current run began.
    // A UUID is looked for only where a hex run starts (it is kept as text
    // otherwise, which decodes the same), so the rest of a run, and the hex
    // bytes right after a UUID, are skipped without a look.
    let (mut i, mut lit) = (0, 0);
    while i < b.len() {
        let c = b[i];
        if is_hex(c) {
            if let Some((bytes, upper)) = uuid_at(&b[i..]) {
                out.extend_from_slice(&b[lit..i]);
                // Marker and bytes in one write: one capacity check, not two.
                let mut packed = [if upper { UUID_UPPER } else { UUID_LOWER }; 17];
                packed[1..].copy_from_slice(&bytes);
                out.extend_from_slice(&packed);
                i += 36;
                lit = i;
            } else {
                i += 1;
            }
            while i < b.len() && is_hex(b[i]) {
                i += 1;
            }
            continue;
        }
        if matches!(c, UUID_LOWER | UUID_UPPER | ESCAPE) {
            out.extend_from_slice(&b[lit..i]);
            out.extend_from_slice(&[ESCAPE, c]);
            lit = i + 1;
        }
        i += 1;
    }
    out.extend_from_slice(&b[lit..]);
}

fn untransform(t: &[u8]) -> DecodeResult<String> {
    const HEX_L: &[u8; 16] = b"0123456789abcdef";
    const HEX_U: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(t.len() + 40);
    let mut i = 0;
    while i < t.len() {
        match t[i] {
            m @ (UUID_LOWER | UUID_UPPER) => {
                let bytes = t
                    .get(i + 1..i + 17)
                    .ok_or("truncated UUID in a stored key")?;
                let hex = if m == UUID_UPPER { HEX_U } else { HEX_L };
                for (j, byte) in bytes.iter().enumerate() {
                    if matches!(j, 4 | 6 | 8 | 10) {
                        out.push(b'-');
                    }
                    out.push(hex[(byte >> 4) as usize]);
                    out.push(hex[(byte & 15) as usize]);
                }
                i += 17;
            }
            ESCAPE => {
                out.push(*t.get(i + 1).ok_or("truncated escape in a stored key")?);
                i += 2;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "stored key is not valid UTF-8".into())
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(b: &[u8], pos: &mut usize, what: &str) -> DecodeResult<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b
            .get(*pos)
            .ok_or_else(|| format!("truncated stored keys: {what}"))?;
        *pos += 1;
        v |= ((byte & 0x7f) as u64) << shift;
        if byte < 0x80 {
            return Ok(v);
        }
    }
    Err(format!("overlong varint for {what}"))
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 8 <= n {
        let x = u64::from_le_bytes(a[i..i + 8].try_into().unwrap_or_default())
            ^ u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        if x != 0 {
            return i + (x.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

#[cfg(test)]
pub(crate) fn encode<S: AsRef<str>>(keys: &[S]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(keys, &mut out);
    out
}

/// How many keys ahead `encode_into` prefetches the bytes of.
const KEYS_AHEAD: usize = 4;

/// Append the encoding of `keys` to `out` (a commit's staged key bytes,
/// so the encoding is written once, not built apart and copied).
pub(crate) fn encode_into<S: AsRef<str>>(keys: &[S], out: &mut Vec<u8>) {
    // All transformed keys back to back, key i at `ends[i]..ends[i + 1]`:
    // one buffer instead of a ring of per-key vectors, so the window's
    // candidates are plain slices and nothing is swapped or re-grown.
    let mut flat = Vec::with_capacity(keys.iter().map(|k| k.as_ref().len() + 1).sum());
    let mut ends = Vec::with_capacity(keys.len() + 1);
    ends.push(0usize);
    for (i, k) in keys.iter().enumerate() {
        // A commit's keys were allocated when their records were decoded,
        // a sink round trip ago: reading each was a cache miss (perf: the
        // first byte's load was ~10% of this function). Two lines cover a
        // usual Kill Bill key (~110 bytes).
        if let Some(ahead) = keys.get(i + KEYS_AHEAD) {
            let bytes = ahead.as_ref().as_ptr();
            prefetch::read(bytes);
            prefetch::read(bytes.wrapping_add(64));
        }
        transform(k.as_ref(), &mut flat);
        ends.push(flat.len());
    }
    // Bytes written can only shrink from the transformed keys: each key
    // adds at most its suffix and three varints.
    out.reserve(16 + flat.len() + keys.len() * 3 * 10);
    out.push(VERSION);
    put_varint(out, keys.len() as u64);
    for i in 0..keys.len() {
        let cur = &flat[ends[i]..ends[i + 1]];
        let (mut best_ref, mut best_len) =
            longest_match(&flat, &ends[i.saturating_sub(WINDOW)..=i], cur);
        // A reference costs two bytes or so; not worth it for a short match.
        if best_len < 3 {
            (best_ref, best_len) = (0, 0);
        }
        let rest = &cur[best_len..];
        if best_ref | best_len | rest.len() < 0x80 {
            // The usual case: three one-byte varints, written at once.
            out.extend_from_slice(&[best_ref as u8, best_len as u8, rest.len() as u8]);
        } else {
            put_varint(out, best_ref as u64);
            put_varint(out, best_len as u64);
            put_varint(out, rest.len() as u64);
        }
        out.extend_from_slice(rest);
    }
}

/// Which of the window's keys (`flat[ends[k]..ends[k + 1]]`, the nearest
/// last) shares the longest prefix with `cur`: (how many places back, the
/// length), the nearest on a tie; (0, 0) if none shares a byte.
fn longest_match(flat: &[u8], ends: &[usize], cur: &[u8]) -> (usize, usize) {
    let (mut best_ref, mut best_len) = (0usize, 0usize);
    // The byte a candidate must have at `best_len` to do better.
    let Some(&first) = cur.first() else {
        return (0, 0);
    };
    let mut want = first;
    for (j, w) in ends.windows(2).rev().enumerate() {
        let (start, end) = (w[0], w[1]);
        let at = start + best_len;
        if at >= end || flat.get(at) != Some(&want) {
            continue;
        }
        let l = common_prefix(cur, &flat[start..end]);
        if l > best_len {
            (best_ref, best_len) = (j + 1, l);
            // A whole-key match cannot be beaten.
            match cur.get(l) {
                Some(&b) => want = b,
                None => break,
            }
        }
    }
    (best_ref, best_len)
}

pub(crate) fn decode(v: &[u8]) -> DecodeResult<Vec<String>> {
    let (&version, _) = v.split_first().ok_or("empty stored keys")?;
    if version != VERSION {
        return Err(format!("unknown stored keys version {version}"));
    }
    let mut pos = 1;
    let n = get_varint(v, &mut pos, "key count")? as usize;
    // Each key takes at least three bytes, which bounds n by the data.
    if n > (v.len() - pos) / 3 {
        return Err(format!("key count {n} exceeds the data"));
    }
    let mut keys = Vec::with_capacity(n);
    let mut ring: Vec<Vec<u8>> = vec![Vec::new(); WINDOW];
    let mut total = 0usize;
    for i in 0..n {
        let r = get_varint(v, &mut pos, "back-reference")? as usize;
        let shared = get_varint(v, &mut pos, "shared length")? as usize;
        let rest = get_varint(v, &mut pos, "suffix length")? as usize;
        if r > WINDOW || r > i || (r == 0 && shared != 0) {
            return Err(format!("bad back-reference {r} for key {i}"));
        }
        let mut t = Vec::with_capacity(shared + rest);
        if r > 0 {
            let base = &ring[(i - r) % WINDOW];
            t.extend_from_slice(
                base.get(..shared)
                    .ok_or("shared prefix longer than its key")?,
            );
        }
        let end = pos
            .checked_add(rest)
            .filter(|e| *e <= v.len())
            .ok_or("truncated stored keys: suffix")?;
        t.extend_from_slice(&v[pos..end]);
        pos = end;
        total += t.len();
        if total > MAX_KEYS_BYTES {
            return Err("stored keys implausibly large".into());
        }
        keys.push(untransform(&t)?);
        ring[i % WINDOW] = t;
    }
    if pos != v.len() {
        return Err(format!(
            "{} trailing bytes after stored keys",
            v.len() - pos
        ));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Where the 32 hex digits of a canonical UUID sit.
    const DIGITS: [usize; 32] = [
        0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15, 16, 17, 19, 20, 21, 22, 24, 25, 26, 27, 28,
        29, 30, 31, 32, 33, 34, 35,
    ];

    /// `uuid_at` one digit at a time (schema 2's first encoder): the
    /// oracle for the word-at-a-time one.
    fn uuid_at_bytewise(s: &[u8]) -> Option<([u8; 16], bool)> {
        if s.len() < 36 || s[8] != b'-' || s[13] != b'-' || s[18] != b'-' || s[23] != b'-' {
            return None;
        }
        let mut out = [0u8; 16];
        let mut flags = 0u8;
        for (n, pair) in DIGITS.chunks_exact(2).enumerate() {
            let hi = HEX[s[pair[0]] as usize];
            let lo = HEX[s[pair[1]] as usize];
            flags |= hi | lo;
            out[n] = (hi & 15) << 4 | (lo & 15);
        }
        if flags & NOT_HEX != 0 || flags & (LOWER | UPPER) == LOWER | UPPER {
            return None;
        }
        Some((out, flags & UPPER != 0))
    }

    #[test]
    fn uuid_at_agrees_with_the_bytewise_decoder() {
        let u = "01234567-89ab-cdef-0123-456789abcdef";
        let mut cases: Vec<Vec<u8>> = vec![
            u.as_bytes().to_vec(),
            u.to_uppercase().into_bytes(),
            b"0123ABCD-89ab-cdef-0123-456789abcdef".to_vec(),
            u.as_bytes()[..35].to_vec(),
            format!("{u}xyz").into_bytes(),
        ];
        // Every position, with every byte value: each digit's bounds, the
        // dashes, bytes above 0x7f.
        for pos in 0..36 {
            for byte in 0..=255u8 {
                let mut v = u.as_bytes().to_vec();
                v[pos] = byte;
                cases.push(v.clone());
                v.make_ascii_uppercase();
                cases.push(v);
            }
        }
        for c in &cases {
            assert_eq!(
                uuid_at(c),
                uuid_at_bytewise(c),
                "{:?}",
                String::from_utf8_lossy(c)
            );
        }
    }

    /// The encoder as it was before the flat buffer (ring of per-key
    /// vectors): the oracle the current one must match byte for byte.
    fn encode_reference<S: AsRef<str>>(keys: &[S]) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + keys.len() * 24);
        out.push(VERSION);
        put_varint(&mut out, keys.len() as u64);
        // The last WINDOW transformed keys, in a ring.
        let mut ring: Vec<Vec<u8>> = vec![Vec::new(); WINDOW];
        let mut cur = Vec::with_capacity(128);
        for (i, k) in keys.iter().enumerate() {
            cur.clear();
            transform(k.as_ref(), &mut cur);
            let (mut best_ref, mut best_len) = (0usize, 0usize);
            for j in 1..=WINDOW.min(i) {
                let cand = &ring[(i - j) % WINDOW];
                // Only a candidate that also matches at `best_len` can do better.
                if best_len > 0 && cand.get(best_len) != cur.get(best_len) {
                    continue;
                }
                let l = common_prefix(&cur, cand);
                if l > best_len {
                    (best_ref, best_len) = (j, l);
                }
            }
            // A reference costs two bytes or so; not worth it for a short match.
            if best_len < 3 {
                (best_ref, best_len) = (0, 0);
            }
            put_varint(&mut out, best_ref as u64);
            put_varint(&mut out, best_len as u64);
            put_varint(&mut out, (cur.len() - best_len) as u64);
            out.extend_from_slice(&cur[best_len..]);
            std::mem::swap(&mut ring[i % WINDOW], &mut cur);
        }
        out
    }

    fn kb_key(i: u64) -> String {
        let h = xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes());
        let u = format!("{h:032x}");
        format!(
            "0d96d663-00c1-4ff7-8324-d97cc551d6b3/sub-{:06}/{}-{}-{}-{}-{}",
            i % 50_000,
            &u[0..8],
            &u[8..12],
            &u[12..16],
            &u[16..20],
            &u[20..32]
        )
    }

    #[test]
    fn kill_bill_keys_shrink_and_round_trip() {
        let ks: Vec<String> = (0..5000).map(kb_key).collect();
        let v = encode(&ks);
        assert_eq!(decode(&v).unwrap(), ks);
        let per = v.len() as f64 / ks.len() as f64;
        assert!(per < 24.0, "{per:.1} bytes per 84-byte key");
    }

    /// The stored bytes are schema 2's on-disk format: a faster encoder
    /// must produce exactly these (length and hash of 7,000 keys' encoding).
    #[test]
    fn encoding_is_stable() {
        // One tenant, and then five tenants whose keys interleave.
        let mut ks: Vec<String> = (0..5000).map(kb_key).collect();
        ks.extend((0..2000u64).map(|i| {
            format!(
                "{:08x}-9b7d-4c1e-a3f5-2d8b7c9e4f10/sub-{:02}/t-{i}",
                i % 5,
                i % 20
            )
        }));
        let v = encode(&ks);
        assert_eq!(
            (v.len(), xxhash_rust::xxh3::xxh3_64(&v)),
            (131576, 8135645628662088449),
            "the encoding of schema-2 keys changed"
        );
    }

    /// The same for keys at the transform's edges: UUIDs back to back or
    /// after a hex digit, upper case, mixed case, marker bytes.
    #[test]
    fn edge_encoding_is_stable() {
        let u = "01234567-89ab-cdef-0123-456789abcdef";
        let ks: Vec<String> = vec![
            format!("{u}{u}"),
            format!("a{u}/{u}"),
            format!("-{u}-{u}-"),
            u.to_uppercase(),
            "0123ABCD-89ab-cdef-0123-456789abcdef".to_string(),
            format!("\u{1}{u}\u{2}\u{3}{u}"),
            format!("{u}\u{3}"),
            "deadbeef/cafe/0123456789abcdef0123456789abcdef".to_string(),
        ];
        let v = encode(&ks);
        assert_eq!(
            (v.len(), xxhash_rust::xxh3::xxh3_64(&v)),
            (312, 15973538713205122247),
            "the encoding of schema-2 keys changed"
        );
        assert_eq!(decode(&v).unwrap(), ks);
    }

    #[test]
    fn edge_cases_round_trip() {
        let ks: Vec<String> = [
            "",
            "\u{1}\u{2}\u{3}",
            "ABCDEF01-2345-6789-ABCD-EF0123456789",
            "abcdef01-2345-6789-ABCD-ef0123456789", // mixed case: kept as text
            "abcdef01-2345-6789-abcd-ef012345678",  // one digit short
            "x/01234567-89ab-cdef-0123-456789abcdef/01234567-89ab-cdef-0123-456789abcdef",
            "ü/ß/✓",
            "ü/ß/✓",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(decode(&encode(&ks)).unwrap(), ks);
        assert_eq!(
            decode(&encode::<String>(&[])).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let v = encode(&(0..50).map(kb_key).collect::<Vec<_>>());
        for cut in 0..v.len() {
            assert!(decode(&v[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode(&[2, 1, 5, 0, 0]).is_err()); // back-reference before the first key
        assert!(decode(&[2, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
        assert!(decode(&[9]).is_err());
    }

    proptest! {
        #[test]
        fn any_keys_round_trip(ks in proptest::collection::vec(".{0,60}", 0..40)) {
            prop_assert_eq!(decode(&encode(&ks)).unwrap(), ks);
        }

        #[test]
        fn encode_matches_the_reference(ks in proptest::collection::vec(".{0,60}", 0..40)) {
            prop_assert_eq!(encode(&ks), encode_reference(&ks));
        }

        /// Keys that share prefixes of every length with their neighbours,
        /// so the window's choice (longest, then nearest) is exercised.
        #[test]
        fn encode_matches_the_reference_on_scoped_keys(parts in proptest::collection::vec(
            (0..3usize, 0..4usize, "[0-9a-fA-F-]{0,40}"), 0..80)
        ) {
            const TENANTS: [&str; 3] = [
                "0d96d663-00c1-4ff7-8324-d97cc551d6b3",
                "6f1e0a52-9b7d-4c1e-a3f5-2d8b7c9e4f10",
                "6F1E0A52-9B7D-4C1E-A3F5-2D8B7C9E4F10",
            ];
            const SUBS: [&str; 4] = ["sub-00-0019", "sub-00-0013", "s", "sub-01-0022\u{3}"];
            let ks: Vec<String> = parts
                .iter()
                .map(|(t, s, rest)| format!("{}/{}/{rest}", TENANTS[*t], SUBS[*s]))
                .collect();
            prop_assert_eq!(encode(&ks), encode_reference(&ks));
        }

        #[test]
        fn uuid_at_agrees_on_any_bytes(v in proptest::collection::vec(
            prop_oneof![Just(b'-'), 0x2fu8..0x3b, 0x40u8..0x48, 0x60u8..0x68, any::<u8>()], 36..40,
        )) {
            prop_assert_eq!(uuid_at(&v), uuid_at_bytewise(&v));
        }

        #[test]
        fn any_bytes_decode_without_panic(v in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut v = v;
            if let Some(b) = v.first_mut() { *b = VERSION; }
            let _ = decode(&v);
        }
    }
}
