//! The changelog record, wire format v1. A stable format of its own (not
//! the store's layout): members of different versions read each other's
//! records, and the store's layout may change under it.
//!
//! ```text
//! "TLCL"  version u8 = 1  flags u8 (bit 0: final record of its commit)
//! route u16+bytes  topic u16+bytes  partition i32
//! first_offset i64  next_offset i64  committed_at_ms i64  (big-endian)
//! lz4 block, uncompressed size prepended (u32 LE), of: count u32, then per key u32 len + UTF-8
//! ```
//!
//! One record carries up to `RAW_CHUNK_BYTES` of keys; a commit with more
//! becomes several records, and only the last (`final`) one proves the
//! commit's `next_offset` delivered — a crash between two produce requests
//! must not let a restore skip records whose IDs it does not have. The
//! digests are not carried: `digest(route, key)` recomputes them (~15 ns a
//! key) and 16 incompressible bytes per ID would be most of the record.

use crate::store::{DecodeResult, Reader, Writer};

pub const MAGIC: &[u8; 4] = b"TLCL";
const VERSION: u8 = 1;
const FLAG_FINAL: u8 = 1;
/// Raw key bytes per record before compression.
pub const RAW_CHUNK_BYTES: usize = 256 << 10;
/// Record values per produce request: under Kafka's default
/// `max.message.bytes` (1 MiB), with room for the record batch's framing.
pub const REQUEST_MAX_BYTES: usize = 768 << 10;
/// Refuse to inflate a record beyond this (a corrupt size prefix).
const MAX_RAW_BYTES: usize = 64 << 20;

/// Where a commit's keys came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin<'a> {
    pub route: &'a str,
    pub topic: &'a str,
    pub partition: i32,
    pub first_offset: i64,
    pub next_offset: i64,
    pub committed_at_ms: i64,
}

/// One decoded changelog record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangelogRecord {
    pub route: String,
    pub topic: String,
    pub partition: i32,
    pub first_offset: i64,
    pub next_offset: i64,
    pub committed_at_ms: i64,
    /// The last record of its commit: `next_offset` is delivered.
    pub is_final: bool,
    pub keys: Vec<String>,
}

/// The records for one commit's keys, grouped into produce requests (each
/// request is appended atomically; the list is empty when `keys` is).
pub fn encode(origin: &Origin<'_>, keys: &[String]) -> Vec<Vec<Vec<u8>>> {
    let mut chunks: Vec<&[String]> = Vec::new();
    let (mut start, mut raw) = (0, 0);
    for (i, k) in keys.iter().enumerate() {
        let len = 4 + k.len();
        if raw + len > RAW_CHUNK_BYTES && i > start {
            chunks.push(&keys[start..i]);
            (start, raw) = (i, 0);
        }
        raw += len;
    }
    if start < keys.len() {
        chunks.push(&keys[start..]);
    }
    let last = chunks.len().saturating_sub(1);
    let mut requests: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut request_bytes = 0;
    for (i, chunk) in chunks.into_iter().enumerate() {
        let value = encode_one(origin, chunk, i == last);
        match requests.last_mut() {
            Some(r) if request_bytes + value.len() <= REQUEST_MAX_BYTES => {
                request_bytes += value.len();
                r.push(value);
            }
            _ => {
                request_bytes = value.len();
                requests.push(vec![value]);
            }
        }
    }
    requests
}

fn encode_one(o: &Origin<'_>, keys: &[String], is_final: bool) -> Vec<u8> {
    let raw_len: usize = keys.iter().map(|k| 4 + k.len()).sum();
    let mut body = Writer::with_capacity(4 + raw_len);
    body.u32(keys.len() as u32);
    for k in keys {
        body.bytes32(k.as_bytes());
    }
    let compressed = lz4_flex::compress_prepend_size(&body.buf);
    let mut w = Writer::with_capacity(40 + o.route.len() + o.topic.len() + compressed.len());
    w.buf.extend_from_slice(MAGIC);
    w.u8(VERSION);
    w.u8(if is_final { FLAG_FINAL } else { 0 });
    w.bytes16(o.route.as_bytes());
    w.bytes16(o.topic.as_bytes());
    w.i32(o.partition);
    w.i64(o.first_offset);
    w.i64(o.next_offset);
    w.i64(o.committed_at_ms);
    w.buf.extend_from_slice(&compressed);
    w.buf
}

/// `Ok(None)` for a value that is not a tally changelog record (no magic);
/// an error for one that claims to be but cannot be read (corrupt, or a
/// newer version this tally does not know).
pub fn decode(value: &[u8]) -> DecodeResult<Option<ChangelogRecord>> {
    let Some(rest) = value.strip_prefix(MAGIC) else {
        return Ok(None);
    };
    let mut r = Reader::new(rest);
    let version = r.u8("version")?;
    if version != VERSION {
        return Err(format!(
            "changelog record version {version}; this tally reads version {VERSION} (run a newer tally)"
        ));
    }
    let flags = r.u8("flags")?;
    let route = r.str16("route")?;
    let topic = r.str16("topic")?;
    let partition = r.i32("partition")?;
    let first_offset = r.i64("first_offset")?;
    let next_offset = r.i64("next_offset")?;
    let committed_at_ms = r.i64("committed_at_ms")?;
    let body = r.rest();
    let size = body
        .get(..4)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map(u32::from_le_bytes)
        .ok_or("changelog record too short for its keys")? as usize;
    // lz4 expands at most ~255x; anything larger is a corrupt prefix.
    if size > MAX_RAW_BYTES || size > body.len().saturating_mul(255) + 64 {
        return Err(format!(
            "implausible uncompressed size {size} for {} compressed bytes",
            body.len()
        ));
    }
    let raw = lz4_flex::decompress_size_prepended(body).map_err(|e| format!("lz4: {e}"))?;
    let mut r = Reader::new(&raw);
    let n = r.u32("key count")? as usize;
    // Each key needs at least its 4-byte length, which bounds n by the data.
    if n > r.remaining() / 4 {
        return Err(format!("key count {n} exceeds the data"));
    }
    let mut keys = Vec::with_capacity(n);
    for _ in 0..n {
        keys.push(r.str32("dedupe key")?);
    }
    r.finish("changelog keys")?;
    Ok(Some(ChangelogRecord {
        route,
        topic,
        partition,
        first_offset,
        next_offset,
        committed_at_ms,
        is_final: flags & FLAG_FINAL != 0,
        keys,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin<'static> {
        Origin {
            route: "usage",
            topic: "stream.usagemetrics",
            partition: 3,
            first_offset: 100,
            next_offset: 180,
            committed_at_ms: 1_700_000_000_000,
        }
    }

    fn keys(n: usize, len: usize) -> Vec<String> {
        (0..n).map(|i| format!("{i:0len$}")).collect()
    }

    #[test]
    fn one_small_commit_is_one_final_record() {
        let ks = vec!["t/sub-1/abc".to_string(), String::new(), "ü/ß/✓".into()];
        let requests = encode(&origin(), &ks);
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].len(), 1);
        let r = decode(&requests[0][0]).unwrap().unwrap();
        assert_eq!(r.keys, ks);
        assert!(r.is_final);
        assert_eq!(
            (r.route.as_str(), r.topic.as_str(), r.partition),
            ("usage", "stream.usagemetrics", 3)
        );
        assert_eq!(
            (r.first_offset, r.next_offset, r.committed_at_ms),
            (100, 180, 1_700_000_000_000)
        );
        assert!(encode(&origin(), &[]).is_empty());
    }

    #[test]
    fn a_large_commit_is_chunked_under_the_request_limit_and_only_the_last_is_final() {
        // ~3 MiB of raw keys, incompressible enough to need several requests.
        let mut rng = fastrand::Rng::with_seed(7);
        let ks: Vec<String> = (0..30_000)
            .map(|_| (0..100).map(|_| rng.alphanumeric()).collect())
            .collect();
        let requests = encode(&origin(), &ks);
        assert!(requests.len() > 1, "{} requests", requests.len());
        let mut back = Vec::new();
        let mut finals = 0;
        for req in &requests {
            assert!(req.iter().map(Vec::len).sum::<usize>() <= REQUEST_MAX_BYTES);
            for v in req {
                let r = decode(v).unwrap().unwrap();
                finals += usize::from(r.is_final);
                back.extend(r.keys);
            }
        }
        assert_eq!(back, ks);
        assert_eq!(finals, 1);
        let last = requests.last().and_then(|r| r.last()).unwrap();
        assert!(decode(last).unwrap().unwrap().is_final);
    }

    #[test]
    fn a_key_larger_than_a_chunk_gets_a_record_of_its_own() {
        let mut ks = keys(3, 10);
        ks.insert(1, "x".repeat(RAW_CHUNK_BYTES + 1));
        let values: Vec<Vec<u8>> = encode(&origin(), &ks).into_iter().flatten().collect();
        assert_eq!(values.len(), 3);
        let got: Vec<String> = values
            .iter()
            .flat_map(|v| decode(v).unwrap().unwrap().keys)
            .collect();
        assert_eq!(got, ks);
    }

    #[test]
    fn foreign_values_are_not_ours_and_damaged_ones_are_errors() {
        assert_eq!(decode(b"{\"id\":1}").unwrap(), None);
        assert_eq!(decode(b"").unwrap(), None);
        let v = encode(&origin(), &keys(50, 20)).remove(0).remove(0);
        for cut in MAGIC.len()..v.len() {
            assert!(decode(&v[..cut]).is_err(), "cut at {cut}");
        }
        let mut newer = v.clone();
        newer[4] = 2;
        let e = decode(&newer).unwrap_err();
        assert!(e.contains("version 2"), "{e}");
        // The lz4 size prefix follows the fixed header: claim 4 GiB.
        let body =
            MAGIC.len() + 2 + (2 + "usage".len()) + (2 + "stream.usagemetrics".len()) + 4 + 24;
        let mut bomb = v.clone();
        bomb[body..body + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&bomb).unwrap_err().contains("implausible"));
    }

    #[test]
    fn kill_bill_keys_cost_about_fifty_bytes_each() {
        // The shape of a killbill-usage dedupe key: tenant UUID / external key / tracking UUID.
        let mut rng = fastrand::Rng::with_seed(1);
        let uuid = |rng: &mut fastrand::Rng| {
            let h: String = (0..32)
                .map(|_| char::from_digit(rng.u32(0..16), 16).unwrap_or('0'))
                .collect();
            format!(
                "{}-{}-{}-{}-{}",
                &h[..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..]
            )
        };
        let tenants: Vec<String> = (0..3).map(|_| uuid(&mut rng)).collect();
        let ks: Vec<String> = (0..5000)
            .map(|i| {
                format!(
                    "{}/sub-{:05}/{}",
                    tenants[i % 3],
                    rng.u32(0..20_000),
                    uuid(&mut rng)
                )
            })
            .collect();
        let bytes: usize = encode(&origin(), &ks).iter().flatten().map(Vec::len).sum();
        let per_id = bytes as f64 / ks.len() as f64;
        eprintln!("changelog bytes per Kill Bill usage ID: {per_id:.1}");
        assert!(per_id < 90.0, "{per_id} bytes per ID");
    }
}

#[cfg(test)]
mod golden {
    use super::*;

    /// A v1 record as tally 0.1 wrote it: every later tally must read it
    /// (members of different versions share a changelog).
    const V1: &str = "544c434c01010005757361676500017400000003000000000000000a000000000000000e00000192cc0914001c000000f201000000020000000874312f732f6162630c00602f732f78797a";

    #[test]
    fn a_v1_record_stays_readable() {
        let bytes: Vec<u8> = (0..V1.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&V1[i..i + 2], 16).unwrap())
            .collect();
        let r = decode(&bytes).unwrap().unwrap();
        assert_eq!(
            (r.route.as_str(), r.topic.as_str(), r.partition),
            ("usage", "t", 3)
        );
        assert_eq!(
            (r.first_offset, r.next_offset, r.committed_at_ms),
            (10, 14, 1_730_000_000_000)
        );
        assert!(r.is_final);
        assert_eq!(r.keys, ["t1/s/abc", "t1/s/xyz"]);
    }
}
