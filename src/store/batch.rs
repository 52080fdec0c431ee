//! Value codecs for `id_batches` (header + packed digests) and `id_keys`
//! (the original dedupe keys, length-prefixed then lz4-compressed).

use super::codec::{DecodeResult, Reader, Writer};

const BATCH_VERSION: u8 = 1;
const KEYS_VERSION: u8 = 1;
/// Refuse to allocate more than this for one batch's keys when decoding, so a
/// corrupt length prefix cannot make us allocate gigabytes.
const MAX_KEYS_BYTES: usize = 256 << 20;

/// The header of one committed batch, as stored in `id_batches`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchInfo {
    pub seq: u64,
    pub route: String,
    pub topic: String,
    pub partition: i32,
    pub first_offset: i64,
    /// Exclusive: the partition's committed offset after this batch.
    pub next_offset: i64,
    pub committed_at_ms: i64,
    /// Number of digests stored in the batch.
    pub count: u32,
}

/// Layout v1: version u8, route (u16 len), topic (u16 len), partition i32,
/// first_offset i64, next_offset i64, committed_at_ms i64, count u32, then
/// `count` digests as u128 BE.
pub(crate) fn encode_batch(info: &BatchInfo, digests: &[u128]) -> Vec<u8> {
    let mut w =
        Writer::with_capacity(41 + info.route.len() + info.topic.len() + digests.len() * 16);
    w.u8(BATCH_VERSION);
    w.bytes16(info.route.as_bytes());
    w.bytes16(info.topic.as_bytes());
    w.i32(info.partition);
    w.i64(info.first_offset);
    w.i64(info.next_offset);
    w.i64(info.committed_at_ms);
    w.u32(digests.len() as u32);
    for d in digests {
        w.u128(*d);
    }
    w.buf
}

/// Decoded batch: the header plus the raw packed digests (not copied).
pub(crate) struct BatchView<'a> {
    pub info: BatchInfo,
    packed: &'a [u8],
}

impl BatchView<'_> {
    pub fn digests(&self) -> impl ExactSizeIterator<Item = u128> + '_ {
        self.packed.chunks_exact(16).map(|c| {
            let mut a = [0u8; 16];
            a.copy_from_slice(c);
            u128::from_be_bytes(a)
        })
    }
}

pub(crate) fn decode_batch(seq: u64, v: &[u8]) -> DecodeResult<BatchView<'_>> {
    let mut r = Reader::new(v);
    let version = r.u8("version")?;
    if version != BATCH_VERSION {
        return Err(format!("unknown id_batches value version {version}"));
    }
    let route = r.str16("route")?;
    let topic = r.str16("topic")?;
    let partition = r.i32("partition")?;
    let first_offset = r.i64("first_offset")?;
    let next_offset = r.i64("next_offset")?;
    let committed_at_ms = r.i64("committed_at")?;
    let count = r.u32("count")?;
    let packed = r.rest();
    if packed.len() != count as usize * 16 {
        return Err(format!(
            "header says {count} digests ({} bytes) but {} bytes follow",
            count as usize * 16,
            packed.len()
        ));
    }
    Ok(BatchView {
        info: BatchInfo {
            seq,
            route,
            topic,
            partition,
            first_offset,
            next_offset,
            committed_at_ms,
            count,
        },
        packed,
    })
}

/// Layout v1: version u8, then lz4 (size-prepended) of: count u32, and per key u32 len + bytes.
pub(crate) fn encode_keys<S: AsRef<str>>(keys: &[S]) -> Vec<u8> {
    let total: usize = keys.iter().map(|k| 4 + k.as_ref().len()).sum();
    let mut w = Writer::with_capacity(4 + total);
    w.u32(keys.len() as u32);
    for k in keys {
        w.bytes32(k.as_ref().as_bytes());
    }
    let compressed = lz4_flex::compress_prepend_size(&w.buf);
    let mut out = Vec::with_capacity(1 + compressed.len());
    out.push(KEYS_VERSION);
    out.extend_from_slice(&compressed);
    out
}

pub(crate) fn decode_keys(v: &[u8]) -> DecodeResult<Vec<String>> {
    let (&version, body) = v.split_first().ok_or("empty id_keys value")?;
    if version != KEYS_VERSION {
        return Err(format!("unknown id_keys value version {version}"));
    }
    let size_prefix: [u8; 4] = body
        .get(..4)
        .and_then(|s| s.try_into().ok())
        .ok_or("id_keys value too short for its size prefix")?;
    let size = u32::from_le_bytes(size_prefix) as usize;
    // lz4 expands at most ~255x; anything larger is a corrupt prefix.
    if size > MAX_KEYS_BYTES || size > body.len().saturating_mul(255) + 64 {
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
    r.finish("id_keys value")?;
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(count: u32) -> BatchInfo {
        BatchInfo {
            seq: 9,
            route: "usage".into(),
            topic: "stream.usagemetrics".into(),
            partition: 3,
            first_offset: 100,
            next_offset: 110,
            committed_at_ms: 1_700_000_000_000,
            count,
        }
    }

    #[test]
    fn batch_round_trip() {
        let ds = vec![1u128, u128::MAX, 0x0123_4567_89ab_cdef_0011_2233_4455_6677];
        let v = encode_batch(&info(3), &ds);
        let view = decode_batch(9, &v).unwrap();
        assert_eq!(view.info, info(3));
        assert_eq!(view.digests().collect::<Vec<_>>(), ds);
    }

    #[test]
    fn batch_rejects_truncation_and_garbage() {
        let v = encode_batch(&info(2), &[1, 2]);
        for cut in 0..v.len() {
            assert!(decode_batch(1, &v[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode_batch(1, b"\xff garbage").is_err());
    }

    #[test]
    fn keys_round_trip_and_reject_garbage() {
        let ks = vec!["t/sub-1/abc".to_string(), String::new(), "ü/ß/✓".into()];
        let v = encode_keys(&ks);
        assert_eq!(decode_keys(&v).unwrap(), ks);
        assert!(decode_keys(&[]).is_err());
        assert!(decode_keys(&[1, 0xff, 0xff, 0xff, 0x7f, 0]).is_err());
        for cut in 0..v.len() {
            assert!(decode_keys(&v[..cut]).is_err(), "cut at {cut}");
        }
    }
}
