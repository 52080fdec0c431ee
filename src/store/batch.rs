//! Value codecs for `id_batches` (a batch's header: where it came from and
//! where its digests and keys lie in the digest and key logs) and, for
//! schema-1 stores only, `id_keys` (the original dedupe keys,
//! length-prefixed then lz4-compressed; schema 2 keeps keys in the key log,
//! `key_codec.rs`).

use super::codec::{DecodeResult, Reader, Writer};

/// Schema 1: the header followed by the batch's 16-byte digests (read only
/// to migrate such stores).
const BATCH_V1: u8 = 1;
/// Schema 2: the header, then the batch's place in the digest log.
const BATCH_V2: u8 = 2;
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

/// A schema-2 `id_batches` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub info: BatchInfo,
    /// Number of the batch's first record in the digest log.
    pub first_record: u64,
    /// `digest_log::checksum` of its `info.count` records.
    pub checksum: u64,
    /// Where its encoded keys lie in the key log (bytes), and their checksum.
    pub key_first: u64,
    pub key_len: u32,
    pub key_checksum: u64,
}

impl Header {
    pub fn records(&self) -> std::ops::Range<u64> {
        self.first_record..self.first_record + self.info.count as u64
    }

    pub fn key_bytes(&self) -> std::ops::Range<u64> {
        self.key_first..self.key_first + self.key_len as u64
    }
}

fn write_info(w: &mut Writer, version: u8, info: &BatchInfo) {
    w.u8(version);
    w.bytes16(info.route.as_bytes());
    w.bytes16(info.topic.as_bytes());
    w.i32(info.partition);
    w.i64(info.first_offset);
    w.i64(info.next_offset);
    w.i64(info.committed_at_ms);
    w.u32(info.count);
}

fn read_info(r: &mut Reader<'_>, seq: u64, want: u8) -> DecodeResult<BatchInfo> {
    let version = r.u8("version")?;
    if version != want {
        return Err(match version {
            BATCH_V1 => "a schema-1 batch in a schema-2 store (an interrupted migration?)".into(),
            v => format!("unknown id_batches value version {v}"),
        });
    }
    Ok(BatchInfo {
        seq,
        route: r.str16("route")?,
        topic: r.str16("topic")?,
        partition: r.i32("partition")?,
        first_offset: r.i64("first_offset")?,
        next_offset: r.i64("next_offset")?,
        committed_at_ms: r.i64("committed_at")?,
        count: r.u32("count")?,
    })
}

/// Layout v2: version u8, route (u16 len), topic (u16 len), partition i32,
/// first_offset i64, next_offset i64, committed_at_ms i64, count u32,
/// first_record u64, checksum u64, key_first u64, key_len u32, key_checksum u64.
pub(crate) fn encode_header(h: &Header) -> Vec<u8> {
    let mut w = Writer::with_capacity(77 + h.info.route.len() + h.info.topic.len());
    write_info(&mut w, BATCH_V2, &h.info);
    for v in [h.first_record, h.checksum, h.key_first] {
        w.buf.extend_from_slice(&v.to_be_bytes());
    }
    w.u32(h.key_len);
    w.buf.extend_from_slice(&h.key_checksum.to_be_bytes());
    w.buf
}

pub(crate) fn decode_header(seq: u64, v: &[u8]) -> DecodeResult<Header> {
    let mut r = Reader::new(v);
    let info = read_info(&mut r, seq, BATCH_V2)?;
    let first_record = r.u64("first_record")?;
    let checksum = r.u64("checksum")?;
    let key_first = r.u64("key_first")?;
    let key_len = r.u32("key_len")?;
    let key_checksum = r.u64("key_checksum")?;
    r.finish("id_batches value")?;
    if first_record.checked_add(info.count as u64).is_none()
        || key_first.checked_add(key_len as u64).is_none()
    {
        return Err(format!("log positions {first_record}/{key_first} overflow"));
    }
    Ok(Header {
        info,
        first_record,
        checksum,
        key_first,
        key_len,
        key_checksum,
    })
}

/// Is this a schema-1 value (header + inline digests)?
pub(crate) fn is_v1(v: &[u8]) -> bool {
    v.first() == Some(&BATCH_V1)
}

/// Layout v1 (schema 1): the v2 header fields up to `count`, then `count`
/// digests as u128 BE. Written only by tests (to build old stores).
#[cfg(test)]
pub(crate) fn encode_batch_v1(info: &BatchInfo, digests: &[u128]) -> Vec<u8> {
    let mut w =
        Writer::with_capacity(41 + info.route.len() + info.topic.len() + digests.len() * 16);
    let info = BatchInfo {
        count: digests.len() as u32,
        ..info.clone()
    };
    write_info(&mut w, BATCH_V1, &info);
    for d in digests {
        w.u128(*d);
    }
    w.buf
}

/// Decoded schema-1 batch: the header plus the raw packed digests (not copied).
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

pub(crate) fn decode_batch_v1(seq: u64, v: &[u8]) -> DecodeResult<BatchView<'_>> {
    let mut r = Reader::new(v);
    let info = read_info(&mut r, seq, BATCH_V1)?;
    let packed = r.rest();
    if packed.len() != info.count as usize * 16 {
        return Err(format!(
            "header says {} digests ({} bytes) but {} bytes follow",
            info.count,
            info.count as usize * 16,
            packed.len()
        ));
    }
    Ok(BatchView { info, packed })
}

/// Layout v1 (schema 1's `id_keys`): version u8, then lz4 (size-prepended)
/// of: count u32, and per key u32 len + bytes. Written only by tests.
#[cfg(test)]
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
    fn header_round_trip() {
        let h = Header {
            info: info(3),
            first_record: 1 << 40,
            checksum: 0xfeed,
            key_first: 77,
            key_len: 12345,
            key_checksum: 0xbeef,
        };
        let v = encode_header(&h);
        assert_eq!(decode_header(9, &v).unwrap(), h);
        assert!(!is_v1(&v));
        for cut in 0..v.len() {
            assert!(decode_header(9, &v[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = v.clone();
        long.push(0);
        assert!(decode_header(9, &long).is_err());
    }

    #[test]
    fn v1_batch_round_trip_and_is_told_apart() {
        let ds = vec![1u128, u128::MAX, 0x0123_4567_89ab_cdef_0011_2233_4455_6677];
        let v = encode_batch_v1(&info(3), &ds);
        assert!(is_v1(&v));
        let view = decode_batch_v1(9, &v).unwrap();
        assert_eq!(view.info, info(3));
        assert_eq!(view.digests().collect::<Vec<_>>(), ds);
        for cut in 0..v.len() {
            assert!(decode_batch_v1(1, &v[..cut]).is_err(), "cut at {cut}");
        }
        let err = decode_header(9, &v).unwrap_err();
        assert!(err.contains("schema-1"), "{err}");
        assert!(decode_batch_v1(1, b"\xff garbage").is_err());
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
