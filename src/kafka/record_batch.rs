//! RecordBatch (magic v2) decoder: splits a fetch response's records blob
//! into batches, verifies CRC-32C, decompresses and decodes records as
//! zero-copy `Bytes` slices.
//!
//! Batch layout (big-endian):
//! baseOffset i64 | batchLength i32 | partitionLeaderEpoch i32 | magic i8 |
//! crc u32 | attributes i16 | lastOffsetDelta i32 | baseTimestamp i64 |
//! maxTimestamp i64 | producerId i64 | producerEpoch i16 | baseSequence i32 |
//! recordCount i32 | records…
//! `batchLength` counts from partitionLeaderEpoch; the CRC covers attributes..end.

use bytes::Bytes;

use super::compression::{self, Codec};
use super::wire::{Reader, WireError};

/// baseOffset + batchLength: the part not counted by batchLength.
const LOG_OVERHEAD: usize = 12;
/// Full v2 header up to and including recordCount.
pub const HEADER_LEN: usize = 61;
const MAGIC_POS: usize = 16;
const CRC_POS: usize = 17;
const ATTRIBUTES_POS: usize = 21;

const TIMESTAMP_LOG_APPEND: i16 = 0x08;
const TRANSACTIONAL: i16 = 0x10;
const CONTROL: i16 = 0x20;

/// Smallest possible encoded record (length, attributes, ts, offset, key,
/// value, header count — one byte each); caps Vec capacity from a forged count.
const MIN_RECORD_LEN: usize = 7;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    pub key: String,
    /// Null header values are legal in Kafka and preserved as `None`.
    pub value: Option<Bytes>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<RecordHeader>,
}

impl ConsumedRecord {
    /// Key and value bytes (headers aside: rare, and small).
    pub fn data_len(&self) -> usize {
        self.key.as_ref().map_or(0, Bytes::len) + self.value.as_ref().map_or(0, Bytes::len)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL != 0
    }
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }
    pub fn log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_LOG_APPEND != 0
    }
    pub fn codec(&self) -> Result<Codec, String> {
        Codec::from_attributes(self.attributes)
    }
}

/// A decode failure, located at the batch where it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Base offset of the offending batch, when it could be read.
    pub offset: Option<i64>,
    pub reason: String,
}

impl DecodeError {
    fn at(offset: i64, reason: impl Into<String>) -> Self {
        DecodeError {
            offset: Some(offset),
            reason: reason.into(),
        }
    }
}

/// Control record types (the key's second int16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlType {
    Abort,
    Commit,
    /// Types added after this was written (e.g. KRaft's); treated as neither.
    Other(i16),
}

/// One framed, CRC-checked batch whose records are decoded on demand.
#[derive(Debug, Clone)]
pub struct RawBatch {
    pub header: BatchHeader,
    /// Records section after recordCount, still compressed if the codec says so.
    body: Bytes,
}

/// A batch cut off by the fetch size limit at the end of the blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TruncatedTail {
    pub base_offset: Option<i64>,
    /// Total size the batch declares (None if even its length was cut off).
    pub declared_size: Option<usize>,
}

/// Iterates the batches of a records blob. Stops at a trailing partial batch
/// (recorded in `truncated`) and after the first error.
pub struct Batches {
    buf: Bytes,
    pos: usize,
    pub truncated: Option<TruncatedTail>,
}

impl Batches {
    pub fn new(records: Bytes) -> Self {
        Batches {
            buf: records,
            pos: 0,
            truncated: None,
        }
    }

    fn next_batch(&mut self) -> Option<Result<RawBatch, DecodeError>> {
        let rest = self.buf.len() - self.pos;
        if rest == 0 {
            return None;
        }
        let at = &self.buf[self.pos..];
        if rest < LOG_OVERHEAD {
            let base_offset = (rest >= 8).then(|| be_i64(&at[..8]));
            self.truncated = Some(TruncatedTail {
                base_offset,
                declared_size: None,
            });
            return None;
        }
        let base_offset = be_i64(&at[..8]);
        let batch_length = i32::from_be_bytes([at[8], at[9], at[10], at[11]]);
        if batch_length < 0 {
            return Some(Err(DecodeError::at(
                base_offset,
                format!("negative batch length {batch_length}"),
            )));
        }
        let size = LOG_OVERHEAD + batch_length as usize;
        if rest < size {
            self.truncated = Some(TruncatedTail {
                base_offset: Some(base_offset),
                declared_size: Some(size),
            });
            return None;
        }
        // Legacy message sets keep the magic byte at the same position.
        if size <= MAGIC_POS {
            return Some(Err(DecodeError::at(
                base_offset,
                format!("batch length {batch_length} too small"),
            )));
        }
        let magic = at[MAGIC_POS] as i8;
        if magic != 2 {
            return Some(Err(DecodeError::at(
                base_offset,
                format!(
                    "unsupported record format magic {magic} (only v2 RecordBatch is supported; legacy message sets are not)"
                ),
            )));
        }
        if size < HEADER_LEN {
            return Some(Err(DecodeError::at(
                base_offset,
                format!("batch length {batch_length} shorter than the v2 header"),
            )));
        }
        let batch = self.buf.slice(self.pos..self.pos + size);
        self.pos += size;
        Some(parse_batch(batch))
    }
}

impl Iterator for Batches {
    type Item = Result<RawBatch, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.next_batch();
        if matches!(item, Some(Err(_))) {
            self.pos = self.buf.len(); // nothing after a bad batch can be framed reliably
        }
        item
    }
}

fn be_i64(s: &[u8]) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&s[..8]);
    i64::from_be_bytes(a)
}

/// `batch` is exactly one complete batch of at least HEADER_LEN bytes.
fn parse_batch(batch: Bytes) -> Result<RawBatch, DecodeError> {
    let base_offset = be_i64(&batch[..8]);
    let stored = u32::from_be_bytes([
        batch[CRC_POS],
        batch[CRC_POS + 1],
        batch[CRC_POS + 2],
        batch[CRC_POS + 3],
    ]);
    let computed = crc32c::crc32c(&batch[ATTRIBUTES_POS..]);
    if stored != computed {
        return Err(DecodeError::at(
            base_offset,
            format!("CRC-32C mismatch: batch says {stored:#010x}, data gives {computed:#010x}"),
        ));
    }
    let e = |w: WireError| DecodeError::at(base_offset, w.0);
    let mut r = Reader::new(batch);
    let header = BatchHeader {
        base_offset: r.i64("baseOffset").map_err(e)?,
        batch_length: r.i32("batchLength").map_err(e)?,
        partition_leader_epoch: r.i32("partitionLeaderEpoch").map_err(e)?,
        magic: r.i8("magic").map_err(e)?,
        crc: r.u32("crc").map_err(e)?,
        attributes: r.i16("attributes").map_err(e)?,
        last_offset_delta: r.i32("lastOffsetDelta").map_err(e)?,
        base_timestamp: r.i64("baseTimestamp").map_err(e)?,
        max_timestamp: r.i64("maxTimestamp").map_err(e)?,
        producer_id: r.i64("producerId").map_err(e)?,
        producer_epoch: r.i16("producerEpoch").map_err(e)?,
        base_sequence: r.i32("baseSequence").map_err(e)?,
        record_count: r.i32("recordCount").map_err(e)?,
    };
    if header.record_count < 0 {
        return Err(DecodeError::at(
            base_offset,
            format!("negative record count {}", header.record_count),
        ));
    }
    if header.last_offset_delta < 0 {
        return Err(DecodeError::at(
            base_offset,
            format!("negative lastOffsetDelta {}", header.last_offset_delta),
        ));
    }
    let body = r.bytes(r.remaining(), "records").map_err(e)?;
    Ok(RawBatch { header, body })
}

impl RawBatch {
    /// Decodes the records whose offset is >= `min_offset`, in order.
    pub fn records(&self, min_offset: i64) -> Result<Vec<ConsumedRecord>, DecodeError> {
        let mut out = Vec::new();
        self.records_into(min_offset, &mut out)?;
        Ok(out)
    }

    /// Whether the records live in a decompressed copy, not the response.
    pub fn is_compressed(&self) -> bool {
        !matches!(self.header.codec(), Ok(Codec::None))
    }

    /// Records this batch can hold, bounded by its body's size (the count
    /// in the header comes from the network): for presizing a vector.
    pub fn capacity_hint(&self) -> usize {
        usize::try_from(self.header.record_count)
            .unwrap_or(0)
            .min(self.body.len() / MIN_RECORD_LEN + 1)
    }

    /// `records`, appended to `out` (no intermediate vector per batch). On
    /// an error nothing of this batch is left in `out`.
    pub fn records_into(
        &self,
        min_offset: i64,
        out: &mut Vec<ConsumedRecord>,
    ) -> Result<(), DecodeError> {
        let before = out.len();
        let result = self.decode_into(min_offset, out);
        if result.is_err() {
            out.truncate(before);
        }
        result
    }

    fn decode_into(
        &self,
        min_offset: i64,
        out: &mut Vec<ConsumedRecord>,
    ) -> Result<(), DecodeError> {
        let h = &self.header;
        let codec = h.codec().map_err(|r| DecodeError::at(h.base_offset, r))?;
        let data = match codec {
            Codec::None => self.body.clone(),
            c => Bytes::from(
                compression::decompress(c, &self.body, compression::MAX_DECOMPRESSED)
                    .map_err(|r| DecodeError::at(h.base_offset, r))?,
            ),
        };
        decode_records(h, data, min_offset, out)
    }

    /// The control record's type. Only meaningful for control batches.
    pub fn control_type(&self) -> Result<ControlType, DecodeError> {
        let base = self.header.base_offset;
        let records = self.records(i64::MIN)?;
        let first = records
            .first()
            .ok_or_else(|| DecodeError::at(base, "control batch without records"))?;
        let key = first
            .key
            .as_ref()
            .ok_or_else(|| DecodeError::at(base, "control record without key"))?;
        if key.len() < 4 {
            return Err(DecodeError::at(
                base,
                format!("control record key of {} bytes", key.len()),
            ));
        }
        // key = version i16, type i16; versions > 0 only append fields.
        Ok(match i16::from_be_bytes([key[2], key[3]]) {
            0 => ControlType::Abort,
            1 => ControlType::Commit,
            t => ControlType::Other(t),
        })
    }
}

fn decode_records(
    h: &BatchHeader,
    data: Bytes,
    min_offset: i64,
    out: &mut Vec<ConsumedRecord>,
) -> Result<(), DecodeError> {
    let base = h.base_offset;
    let count = h.record_count as usize;
    out.reserve(count.min(data.len() / MIN_RECORD_LEN + 1));
    // Fields are read from the batch's bytes by position, and only the key
    // and value become `Bytes` handles (whole-process callgrind: the
    // general `wire::Reader`, one call and one error context per field,
    // cost ~800 instructions per record).
    let mut pos = 0usize;
    for i in 0..count {
        let mut at = Fields {
            buf: &data,
            pos,
            end: data.len(),
        };
        let len = at
            .varint()
            .map_err(|v| record_error(base, i, v.at("record length")))?;
        if len < 0 {
            return Err(DecodeError::at(
                base,
                format!("record {i}: negative length {len}"),
            ));
        }
        let record_end = at
            .pos
            .checked_add(len as usize)
            .filter(|&e| e <= data.len())
            .ok_or_else(|| record_error(base, i, FieldError::Short.at("record")))?;
        // The record's fields end where the record does.
        at.end = record_end;
        let record = at
            .record(h, &data)
            .map_err(|(what, v)| record_error(base, i, v.at(what)))?;
        pos = record_end;
        if record.offset >= min_offset {
            out.push(record);
        }
    }
    if pos != data.len() {
        return Err(DecodeError::at(
            base,
            format!(
                "{} bytes left after the {count} records the batch declares",
                data.len() - pos
            ),
        ));
    }
    Ok(())
}

#[cold]
fn record_error(base: i64, i: usize, reason: String) -> DecodeError {
    DecodeError::at(base, format!("record {i}: {reason}"))
}

/// Why a field of a record could not be read; the message names the field
/// (the same wording as `wire::Reader`'s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldError {
    Short,
    /// A varint with more than `max` bytes.
    TooLong(usize),
    Overflow32,
    BadHeaderCount(i32),
    NullHeaderKey,
    HeaderKeyNotUtf8,
}

impl FieldError {
    #[cold]
    fn at(self, what: &str) -> String {
        match self {
            FieldError::Short => format!("truncated while reading {what}"),
            FieldError::TooLong(max) => format!("{what}: varint longer than {max} bytes"),
            FieldError::Overflow32 => format!("{what}: varint overflows 32 bits"),
            FieldError::BadHeaderCount(n) => format!("bad header count {n}"),
            FieldError::NullHeaderKey => "null header key".to_string(),
            FieldError::HeaderKeyNotUtf8 => "header key is not UTF-8".to_string(),
        }
    }
}

/// A bounds-checked position in a batch's records: `pos..end` is what is
/// left of the current record (or of the batch, before its length is read).
struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

impl Fields<'_> {
    /// Unsigned LEB128 of at most `max_len` bytes.
    #[inline]
    fn uvarint(&mut self, max_len: usize) -> Result<u64, FieldError> {
        let rest = self.buf.get(self.pos..self.end).unwrap_or_default();
        // One byte: header counts, null lengths, small deltas and keys.
        if let Some(&b) = rest.first()
            && b & 0x80 == 0
        {
            self.pos += 1;
            return Ok(u64::from(b));
        }
        let mut value: u64 = 0;
        for (i, &b) in rest.iter().take(max_len).enumerate() {
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                self.pos += i + 1;
                return Ok(value);
            }
        }
        Err(if rest.len() < max_len {
            FieldError::Short
        } else {
            FieldError::TooLong(max_len)
        })
    }

    /// Zigzag varint (Kafka "varint", at most 5 bytes, 32 bits).
    #[inline]
    fn varint(&mut self) -> Result<i32, FieldError> {
        let raw = self.uvarint(5)?;
        let raw = u32::try_from(raw).map_err(|_| FieldError::Overflow32)?;
        Ok(((raw >> 1) as i32) ^ -((raw & 1) as i32))
    }

    /// Zigzag varlong (at most 10 bytes).
    #[inline]
    fn varlong(&mut self) -> Result<i64, FieldError> {
        let raw = self.uvarint(10)?;
        Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
    }

    /// A varint-length byte field: its range in `buf`, None when null
    /// (a negative length).
    #[inline]
    fn field(&mut self) -> Result<Option<std::ops::Range<usize>>, FieldError> {
        let len = self.varint()?;
        if len < 0 {
            return Ok(None);
        }
        let start = self.pos;
        if self.end - start < len as usize {
            return Err(FieldError::Short);
        }
        self.pos = start + len as usize;
        Ok(Some(start..self.pos))
    }

    /// The record in `pos..end`: attributes, deltas, key, value, headers.
    /// Bytes after the headers are skipped, as before. On failure, the
    /// field that failed and why.
    #[inline]
    fn record(
        &mut self,
        h: &BatchHeader,
        data: &Bytes,
    ) -> Result<ConsumedRecord, (&'static str, FieldError)> {
        if self.pos == self.end {
            return Err(("record attributes", FieldError::Short));
        }
        self.pos += 1; // attributes: unused in v2 records
        let ts_delta = self.varlong().map_err(|e| ("timestampDelta", e))?;
        let offset_delta = self.varint().map_err(|e| ("offsetDelta", e))?;
        let key = self.field().map_err(|e| ("key", e))?;
        let value = self.field().map_err(|e| ("value", e))?;
        let n_headers = self.varint().map_err(|e| ("header count", e))?;
        if n_headers < 0 || n_headers as usize > self.end - self.pos {
            return Err(("", FieldError::BadHeaderCount(n_headers)));
        }
        let mut headers = if n_headers == 0 {
            Vec::new()
        } else {
            Vec::with_capacity(n_headers as usize)
        };
        for _ in 0..n_headers {
            let k = self
                .field()
                .map_err(|e| ("header key", e))?
                .ok_or(("", FieldError::NullHeaderKey))?;
            let key = std::str::from_utf8(&self.buf[k])
                .map_err(|_| ("", FieldError::HeaderKeyNotUtf8))?
                .to_owned();
            let value = self.field().map_err(|e| ("header value", e))?;
            headers.push(RecordHeader {
                key,
                value: value.map(|r| data.slice(r)),
            });
        }
        Ok(ConsumedRecord {
            offset: h.base_offset.saturating_add(i64::from(offset_delta)),
            timestamp_ms: if h.log_append_time() {
                h.max_timestamp
            } else {
                h.base_timestamp.saturating_add(ts_delta)
            },
            key: key.map(|r| data.slice(r)),
            value: value.map(|r| data.slice(r)),
            headers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::compression::test_codecs;
    use super::super::test_encoder::*;
    use super::*;

    fn blob(batches: &[Vec<u8>]) -> Bytes {
        Bytes::from(batches.concat())
    }

    #[test]
    fn decodes_fields_nulls_and_headers() {
        let b = BatchSpec::data(
            100,
            vec![
                Rec::kv(Some(b"k1"), Some(b"v1"))
                    .header("h-null", None)
                    .header("h", Some(b"x")),
                Rec::kv(None, None),
                Rec::kv(Some(b""), Some(b"")),
            ],
        )
        .base_timestamp(1_700_000_000_000)
        .encode();
        let mut it = Batches::new(blob(&[b]));
        let batch = it.next().unwrap().unwrap();
        assert!(it.next().is_none() && it.truncated.is_none());
        assert_eq!(batch.header.base_offset, 100);
        assert_eq!(batch.header.last_offset(), 102);
        assert!(!batch.header.is_control() && !batch.header.is_transactional());
        let recs = batch.records(0).unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].offset, 100);
        assert_eq!(recs[0].timestamp_ms, 1_700_000_000_000);
        assert_eq!(recs[1].timestamp_ms, 1_700_000_000_001);
        assert_eq!(recs[0].key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(
            recs[0].headers[0],
            RecordHeader {
                key: "h-null".into(),
                value: None
            }
        );
        assert_eq!(recs[0].headers[1].value.as_deref(), Some(&b"x"[..]));
        assert_eq!((recs[1].key.clone(), recs[1].value.clone()), (None, None));
        assert_eq!(recs[2].key.as_deref(), Some(&b""[..]), "empty is not null");
        assert_eq!(recs[2].offset, 102);
    }

    #[test]
    fn uncompressed_values_are_zero_copy() {
        let b = blob(&[BatchSpec::data(0, vec![Rec::kv(None, Some(b"payload"))]).encode()]);
        let range = b.as_ptr() as usize..b.as_ptr() as usize + b.len();
        let rec = Batches::new(b.clone())
            .next()
            .unwrap()
            .unwrap()
            .records(0)
            .unwrap()
            .remove(0);
        let v = rec.value.unwrap();
        assert!(
            range.contains(&(v.as_ptr() as usize)),
            "value should point into the response buffer"
        );
    }

    #[test]
    fn log_append_time_uses_max_timestamp() {
        let b = BatchSpec::data(0, vec![Rec::kv(None, Some(b"a"))])
            .base_timestamp(5)
            .max_timestamp(99)
            .log_append_time()
            .encode();
        let recs = Batches::new(blob(&[b]))
            .next()
            .unwrap()
            .unwrap()
            .records(0)
            .unwrap();
        assert_eq!(recs[0].timestamp_ms, 99);
    }

    #[test]
    fn partial_trailing_batch_is_not_an_error() {
        let a = BatchSpec::data(0, vec![Rec::kv(None, Some(b"a"))]).encode();
        let b = BatchSpec::data(1, vec![Rec::kv(None, Some(b"bbbbbbbb"))]).encode();
        for cut in [1, 7, 11, 12, 30, b.len() - 1] {
            let mut data = a.clone();
            data.extend_from_slice(&b[..cut]);
            let mut it = Batches::new(Bytes::from(data));
            assert_eq!(it.next().unwrap().unwrap().header.base_offset, 0);
            assert!(it.next().is_none(), "cut {cut}");
            let t = it.truncated.unwrap();
            if cut >= 12 {
                assert_eq!(t.declared_size, Some(b.len()));
                assert_eq!(t.base_offset, Some(1));
            }
        }
    }

    #[test]
    fn crc_mismatch_is_reported() {
        let mut b = BatchSpec::data(7, vec![Rec::kv(None, Some(b"value"))]).encode();
        let last = b.len() - 1;
        b[last] ^= 0x01;
        let err = Batches::new(blob(&[b])).next().unwrap().unwrap_err();
        assert_eq!(err.offset, Some(7));
        assert!(err.reason.contains("CRC-32C mismatch"), "{}", err.reason);
    }

    #[test]
    fn legacy_magic_is_a_clear_error() {
        let mut b = BatchSpec::data(3, vec![Rec::kv(None, Some(b"v"))]).encode();
        b[MAGIC_POS] = 1;
        let err = Batches::new(blob(&[b])).next().unwrap().unwrap_err();
        assert!(err.reason.contains("magic 1"), "{}", err.reason);
    }

    #[test]
    fn forged_lengths_do_not_allocate_or_panic() {
        // Huge batch length: just a truncated tail.
        let mut b = BatchSpec::data(0, vec![Rec::kv(None, Some(b"v"))]).encode();
        b[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
        let mut it = Batches::new(blob(&[b]));
        assert!(it.next().is_none());
        assert_eq!(
            it.truncated.unwrap().declared_size,
            Some(12 + i32::MAX as usize)
        );
        // Huge record count with a valid CRC: error, no giant Vec.
        let b = BatchSpec::data(0, vec![Rec::kv(None, Some(b"v"))])
            .record_count(i32::MAX)
            .encode();
        let batch = Batches::new(blob(&[b])).next().unwrap().unwrap();
        assert!(batch.records(0).is_err());
        // Trailing garbage after the declared records.
        let b = BatchSpec::data(
            0,
            vec![Rec::kv(None, Some(b"v")), Rec::kv(None, Some(b"w"))],
        )
        .record_count(1)
        .encode();
        let batch = Batches::new(blob(&[b])).next().unwrap().unwrap();
        assert!(batch.records(0).unwrap_err().reason.contains("left after"));
    }

    /// One uncompressed batch at offset 0 whose records section is `raw`
    /// as given (declaring `count` records), with a valid CRC.
    fn raw_batch(raw: &[u8], count: i32) -> RawBatch {
        let mut b = BatchSpec::data(0, vec![]).record_count(count).encode();
        b.extend_from_slice(raw);
        let len = (b.len() - LOG_OVERHEAD) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        let crc = crc32c::crc32c(&b[ATTRIBUTES_POS..]);
        b[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
        Batches::new(blob(&[b])).next().unwrap().unwrap()
    }

    fn reason(raw: &[u8], count: i32) -> String {
        raw_batch(raw, count).records(0).unwrap_err().reason
    }

    #[test]
    fn record_fields_by_hand() {
        // length 8: attributes, ts delta 1, offset delta 2, key "k", value
        // null, no headers, then one byte the record does not define.
        let rec = [16, 0, 2, 4, 2, b'k', 1, 0, 0xee];
        // length 14: ts 0, offset delta 3, null key, value "v", one header
        // "h" with a null value.
        let rec2 = [28, 0, 0, 6, 1, 2, b'v', 2, 2, b'h', 1];
        let raw = [&rec[..], &rec2[..]].concat();
        // rec2 declares 14 bytes but has 10: pad it to its length.
        let raw = [&raw[..], &[0u8; 4][..]].concat();
        let records = raw_batch(&raw, 2).records(0).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].offset, 2);
        assert_eq!(records[0].timestamp_ms, 1_001);
        assert_eq!(records[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(records[0].value, None);
        assert!(records[0].headers.is_empty());
        assert_eq!(records[1].offset, 3);
        assert_eq!(records[1].key, None);
        assert_eq!(records[1].value.as_deref(), Some(&b"v"[..]));
        assert_eq!(
            records[1].headers,
            vec![RecordHeader {
                key: "h".into(),
                value: None
            }]
        );
    }

    #[test]
    fn truncated_records_are_errors() {
        // A record longer than the batch.
        assert_eq!(
            reason(&[100, 0, 0, 0], 1),
            "record 0: truncated while reading record"
        );
        // A record whose length ends before its key.
        assert_eq!(
            reason(&[6, 0, 0, 0], 1),
            "record 0: truncated while reading key"
        );
        // A key longer than its record.
        assert_eq!(
            reason(&[8, 0, 0, 0, 10], 1),
            "record 0: truncated while reading key"
        );
        // No attributes byte at all.
        assert_eq!(
            reason(&[0], 1),
            "record 0: truncated while reading record attributes"
        );
        // Fewer records than declared.
        let one = [16, 0, 0, 0, 1, 1, 0, 0, 0];
        assert_eq!(
            reason(&one, 2),
            "record 1: truncated while reading record length"
        );
        // A negative record length.
        assert_eq!(reason(&[1], 1), "record 0: negative length -1");
    }

    #[test]
    fn varint_overflow_and_overlong_are_errors() {
        // offsetDelta 0xffff_ffff_f (35 bits) in five bytes.
        let rec = [14, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x7f];
        assert_eq!(
            reason(&rec, 1),
            "record 0: offsetDelta: varint overflows 32 bits"
        );
        // Six bytes of a varint.
        let rec = [16, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00];
        assert_eq!(
            reason(&rec, 1),
            "record 0: offsetDelta: varint longer than 5 bytes"
        );
        // An eleven-byte varlong timestamp delta.
        let mut rec = vec![24, 0];
        rec.extend_from_slice(&[0x80; 10]);
        rec.push(0);
        assert_eq!(
            reason(&rec, 1),
            "record 0: timestampDelta: varint longer than 10 bytes"
        );
        // A record length varint cut off by the end of the batch.
        assert_eq!(
            reason(&[0x80], 1),
            "record 0: truncated while reading record length"
        );
    }

    #[test]
    fn varints_read_what_the_writer_wrote() {
        use super::super::wire::Writer;
        fn at(buf: &[u8]) -> Fields<'_> {
            Fields {
                buf,
                pos: 0,
                end: buf.len(),
            }
        }
        for v in [0, 1, -1, 63, -64, 64, 300, i32::MAX, i32::MIN] {
            let mut w = Writer::new();
            w.varint(v);
            let mut f = at(&w.buf);
            assert_eq!(f.varint(), Ok(v));
            assert_eq!(f.pos, w.buf.len());
        }
        for v in [0i64, -1, i64::MAX, i64::MIN, 1 << 40] {
            let mut w = Writer::new();
            w.varlong(v);
            assert_eq!(at(&w.buf).varlong(), Ok(v));
        }
        // zigzag: -1 -> 1, 1 -> 2, 150 -> 300 = 0xac 0x02
        let mut f = at(&[0x01, 0x02, 0xac, 0x02]);
        assert_eq!(
            (f.varint(), f.varint(), f.varint()),
            (Ok(-1), Ok(1), Ok(150))
        );
        // A varint cut off by the end of its record, not of the buffer.
        let buf = [0x81, 0x01];
        let mut f = Fields {
            buf: &buf,
            pos: 0,
            end: 1,
        };
        assert_eq!(f.varint(), Err(FieldError::Short));
    }

    #[test]
    fn bad_headers_are_errors() {
        // header count 5 in a record with 1 byte left.
        let rec = [14, 0, 0, 0, 1, 1, 10, 0];
        assert_eq!(reason(&rec, 1), "record 0: bad header count 5");
        // header count -1.
        let rec = [12, 0, 0, 0, 1, 1, 1];
        assert_eq!(reason(&rec, 1), "record 0: bad header count -1");
        // A null header key.
        let rec = [16, 0, 0, 0, 1, 1, 2, 1, 1];
        assert_eq!(reason(&rec, 1), "record 0: null header key");
        // A header key that is not UTF-8.
        let rec = [18, 0, 0, 0, 1, 1, 2, 2, 0xff, 1];
        assert_eq!(reason(&rec, 1), "record 0: header key is not UTF-8");
        // A header value cut off by the record's end.
        let rec = [18, 0, 0, 0, 1, 1, 2, 2, b'h', 4];
        assert_eq!(
            reason(&rec, 1),
            "record 0: truncated while reading header value"
        );
    }

    #[test]
    fn records_before_requested_offset_are_dropped() {
        let b = BatchSpec::data(
            10,
            (0..5)
                .map(|i| Rec::kv(None, Some(&[i as u8][..])))
                .collect(),
        )
        .encode();
        let batch = Batches::new(blob(&[b])).next().unwrap().unwrap();
        let offs: Vec<i64> = batch
            .records(12)
            .unwrap()
            .iter()
            .map(|r| r.offset)
            .collect();
        assert_eq!(offs, vec![12, 13, 14]);
    }

    #[test]
    fn control_batch_type() {
        for (marker, want) in [
            (Marker::Abort, ControlType::Abort),
            (Marker::Commit, ControlType::Commit),
        ] {
            let b = BatchSpec::control(4, 9, marker).encode();
            let batch = Batches::new(blob(&[b])).next().unwrap().unwrap();
            assert!(batch.header.is_control() && batch.header.is_transactional());
            assert_eq!(batch.control_type().unwrap(), want);
        }
    }

    #[test]
    fn each_codec_decodes() {
        let recs: Vec<Rec> = (0..200)
            .map(|i| {
                Rec::kv(
                    Some(format!("k{i}").as_bytes()),
                    Some(format!("value-{i}-{}", "x".repeat(i % 50)).as_bytes()),
                )
                .header("n", None)
            })
            .collect();
        for codec in [
            Codec::None,
            Codec::Gzip,
            Codec::Snappy,
            Codec::Lz4,
            Codec::Zstd,
        ] {
            let b = BatchSpec::data(1000, recs.clone()).codec(codec).encode();
            let batch = Batches::new(blob(&[b])).next().unwrap().unwrap();
            assert_eq!(batch.header.codec().unwrap(), codec);
            let got = batch.records(0).unwrap();
            assert_eq!(got.len(), 200, "{codec:?}");
            assert_eq!(got[199].offset, 1199);
            assert_eq!(
                got[57].value.as_deref(),
                Some(format!("value-57-{}", "x".repeat(7)).as_bytes())
            );
            assert_eq!(got[57].headers[0].value, None);
        }
        // xerial-framed snappy as the Java client writes it.
        let b = BatchSpec::data(0, recs.clone())
            .codec(Codec::Snappy)
            .compressor(|raw| test_codecs::xerial_snappy(raw, 1024))
            .encode();
        let got = Batches::new(blob(&[b]))
            .next()
            .unwrap()
            .unwrap()
            .records(0)
            .unwrap();
        assert_eq!(got.len(), 200);
    }
}
