//! Test-only RecordBatch v2 encoder, written independently of the decoder
//! so the decoder's tests do not just mirror its own assumptions.

use super::compression::{Codec, test_codecs};

#[derive(Clone, Debug)]
pub struct Rec {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Rec {
    pub fn kv(key: Option<&[u8]>, value: Option<&[u8]>) -> Self {
        Rec {
            key: key.map(<[u8]>::to_vec),
            value: value.map(<[u8]>::to_vec),
            headers: vec![],
        }
    }
    pub fn header(mut self, k: &str, v: Option<&[u8]>) -> Self {
        self.headers.push((k.to_string(), v.map(<[u8]>::to_vec)));
        self
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Marker {
    Abort,
    Commit,
}

type Compressor = fn(&[u8]) -> Vec<u8>;

pub struct BatchSpec {
    base_offset: i64,
    records: Vec<Rec>,
    attributes: i16,
    producer_id: i64,
    base_timestamp: i64,
    max_timestamp: Option<i64>,
    record_count: Option<i32>,
    compressor: Option<Compressor>,
}

impl BatchSpec {
    pub fn data(base_offset: i64, records: Vec<Rec>) -> Self {
        BatchSpec {
            base_offset,
            records,
            attributes: 0,
            producer_id: -1,
            base_timestamp: 1_000,
            max_timestamp: None,
            record_count: None,
            compressor: None,
        }
    }
    /// A transaction marker as the coordinator writes it.
    pub fn control(base_offset: i64, producer_id: i64, marker: Marker) -> Self {
        let ty: i16 = match marker {
            Marker::Abort => 0,
            Marker::Commit => 1,
        };
        let mut key = 0i16.to_be_bytes().to_vec();
        key.extend_from_slice(&ty.to_be_bytes());
        let mut value = 0i16.to_be_bytes().to_vec();
        value.extend_from_slice(&7i32.to_be_bytes()); // coordinator epoch
        let mut b = BatchSpec::data(base_offset, vec![Rec::kv(Some(&key), Some(&value))]);
        b.attributes |= 0x30;
        b.producer_id = producer_id;
        b
    }
    pub fn transactional(mut self, producer_id: i64) -> Self {
        self.attributes |= 0x10;
        self.producer_id = producer_id;
        self
    }
    /// Idempotent but not transactional.
    pub fn producer(mut self, producer_id: i64) -> Self {
        self.producer_id = producer_id;
        self
    }
    pub fn codec(mut self, c: Codec) -> Self {
        let bits = match c {
            Codec::None => 0,
            Codec::Gzip => 1,
            Codec::Snappy => 2,
            Codec::Lz4 => 3,
            Codec::Zstd => 4,
        };
        self.attributes = (self.attributes & !0x07) | bits;
        self
    }
    pub fn compressor(mut self, f: Compressor) -> Self {
        self.compressor = Some(f);
        self
    }
    pub fn base_timestamp(mut self, t: i64) -> Self {
        self.base_timestamp = t;
        self
    }
    pub fn max_timestamp(mut self, t: i64) -> Self {
        self.max_timestamp = Some(t);
        self
    }
    pub fn log_append_time(mut self) -> Self {
        self.attributes |= 0x08;
        self
    }
    pub fn record_count(mut self, n: i32) -> Self {
        self.record_count = Some(n);
        self
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut raw = Vec::new();
        for (i, r) in self.records.iter().enumerate() {
            let mut rec = Vec::new();
            rec.push(0u8); // attributes
            put_varlong(&mut rec, i as i64); // timestamp delta
            put_varlong(&mut rec, i as i64); // offset delta
            put_field(&mut rec, r.key.as_deref());
            put_field(&mut rec, r.value.as_deref());
            put_varlong(&mut rec, r.headers.len() as i64);
            for (k, v) in &r.headers {
                put_field(&mut rec, Some(k.as_bytes()));
                put_field(&mut rec, v.as_deref());
            }
            put_varlong(&mut raw, rec.len() as i64);
            raw.extend_from_slice(&rec);
        }
        let codec = match self.attributes & 0x07 {
            1 => Codec::Gzip,
            2 => Codec::Snappy,
            3 => Codec::Lz4,
            4 => Codec::Zstd,
            _ => Codec::None,
        };
        let body = match self.compressor {
            Some(f) => f(&raw),
            None => test_codecs::compress(codec, &raw),
        };
        let n = self.records.len() as i64;
        let last_delta = (n - 1).max(0) as i32;
        // From attributes on: the CRC-covered part.
        let mut tail = Vec::new();
        tail.extend_from_slice(&self.attributes.to_be_bytes());
        tail.extend_from_slice(&last_delta.to_be_bytes());
        tail.extend_from_slice(&self.base_timestamp.to_be_bytes());
        let max_ts = self
            .max_timestamp
            .unwrap_or(self.base_timestamp + (n - 1).max(0));
        tail.extend_from_slice(&max_ts.to_be_bytes());
        tail.extend_from_slice(&self.producer_id.to_be_bytes());
        tail.extend_from_slice(&0i16.to_be_bytes()); // producer epoch
        tail.extend_from_slice(&(if self.producer_id >= 0 { 0i32 } else { -1 }).to_be_bytes());
        tail.extend_from_slice(&self.record_count.unwrap_or(n as i32).to_be_bytes());
        tail.extend_from_slice(&body);

        let mut out = Vec::new();
        out.extend_from_slice(&self.base_offset.to_be_bytes());
        let batch_length = (4 + 1 + 4 + tail.len()) as i32;
        out.extend_from_slice(&batch_length.to_be_bytes());
        out.extend_from_slice(&0i32.to_be_bytes()); // partition leader epoch
        out.push(2); // magic
        out.extend_from_slice(&crc32c::crc32c(&tail).to_be_bytes());
        out.extend_from_slice(&tail);
        out
    }
}

fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn put_field(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => put_varlong(out, -1),
        Some(b) => {
            put_varlong(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}
