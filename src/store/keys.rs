//! Key and small-value encodings. Keys are big-endian binary so sled's
//! lexicographic order is numeric order (ranges and "last key" work).

use super::codec::{DecodeResult, Reader, Writer};

pub(crate) const TREE_META: &str = "meta";
pub(crate) const TREE_OFFSETS: &str = "offsets";
pub(crate) const TREE_ID_BATCHES: &str = "id_batches";
pub(crate) const TREE_ID_KEYS: &str = "id_keys";
pub(crate) const TREE_DEAD_LETTERS: &str = "dead_letters";

pub(crate) const META_SCHEMA_VERSION: &[u8] = b"schema_version";
pub(crate) const META_CREATED_AT: &[u8] = b"created_at";
/// next commit sequence (u64 BE) + digests stored (u64 BE, a presizing hint for the index).
pub(crate) const META_COUNTERS: &[u8] = b"counters";
/// The digest log's `LogState` (schema 2).
pub(crate) const META_DIGEST_LOG: &[u8] = b"digest_log";
/// The key log's `LogState` (schema 2).
pub(crate) const META_KEY_LOG: &[u8] = b"key_log";
/// Present while a schema-1 store is being migrated: the next batch sequence to migrate.
pub(crate) const META_MIGRATING: &[u8] = b"migrating_from_schema_1";

/// Sequence keys (id_batches, id_keys, dead_letters): u64 BE.
pub(crate) fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

pub(crate) fn decode_seq_key(k: &[u8]) -> DecodeResult<u64> {
    let a: [u8; 8] = k
        .try_into()
        .map_err(|_| format!("sequence key has {} bytes, expected 8", k.len()))?;
    Ok(u64::from_be_bytes(a))
}

/// Offsets key: u16 BE topic length + topic + partition with the sign bit
/// flipped (so -1 < 0 < 1 in byte order). Topic length is validated by the caller.
pub(crate) fn offset_key(topic: &str, partition: i32) -> Vec<u8> {
    let mut w = Writer::with_capacity(2 + topic.len() + 4);
    w.bytes16(topic.as_bytes());
    w.u32((partition as u32) ^ 0x8000_0000);
    w.buf
}

pub(crate) fn decode_offset_key(k: &[u8]) -> DecodeResult<(String, i32)> {
    let mut r = Reader::new(k);
    let topic = r.str16("topic")?;
    let p = r.u32("partition")? ^ 0x8000_0000;
    r.finish("offsets key")?;
    Ok((topic, p as i32))
}

/// A partition's committed position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    /// The first offset not yet resolved (Kafka's "committed offset").
    pub next_offset: i64,
    pub updated_at_ms: i64,
}

pub(crate) fn encode_offset_value(e: &OffsetEntry) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&e.next_offset.to_be_bytes());
    v[8..].copy_from_slice(&e.updated_at_ms.to_be_bytes());
    v
}

pub(crate) fn decode_offset_value(v: &[u8]) -> DecodeResult<OffsetEntry> {
    let mut r = Reader::new(v);
    let next_offset = r.i64("next_offset")?;
    let updated_at_ms = r.i64("updated_at")?;
    r.finish("offsets value")?;
    Ok(OffsetEntry {
        next_offset,
        updated_at_ms,
    })
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub next_seq: u64,
    pub digest_count: u64,
}

pub(crate) fn encode_counters(c: &Counters) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&c.next_seq.to_be_bytes());
    v[8..].copy_from_slice(&c.digest_count.to_be_bytes());
    v
}

pub(crate) fn decode_counters(v: &[u8]) -> DecodeResult<Counters> {
    let mut r = Reader::new(v);
    let next_seq = r.u64("next_seq")?;
    let digest_count = r.u64("digest_count")?;
    r.finish("counters")?;
    Ok(Counters {
        next_seq,
        digest_count,
    })
}

/// Printable form of a binary key for error messages.
pub(crate) fn show_key(k: &[u8]) -> String {
    if let Ok(s) = std::str::from_utf8(k)
        && s.chars().all(|c| !c.is_control())
    {
        return format!("{s:?}");
    }
    let hex: String = k.iter().map(|b| format!("{b:02x}")).collect();
    format!("0x{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_keys_sort_by_partition_including_negative() {
        let ks: Vec<_> = [-5, -1, 0, 1, 7, i32::MAX]
            .iter()
            .map(|p| offset_key("t", *p))
            .collect();
        let mut sorted = ks.clone();
        sorted.sort();
        assert_eq!(ks, sorted);
        for p in [-5, 0, i32::MAX, i32::MIN] {
            assert_eq!(
                decode_offset_key(&offset_key("topic.x", p)).unwrap(),
                ("topic.x".into(), p)
            );
        }
    }

    #[test]
    fn seq_keys_sort_numerically() {
        assert!(seq_key(255) < seq_key(256));
        assert_eq!(decode_seq_key(&seq_key(42)).unwrap(), 42);
        assert!(decode_seq_key(b"abc").is_err());
    }
}
