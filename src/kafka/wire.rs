//! Kafka wire primitives (non-flexible encodings only): a bounds-checked,
//! zero-copy reader over `Bytes` and a small writer.
//!
//! Every length read from the network is checked against the bytes actually
//! present before anything is sliced or allocated.

use bytes::{BufMut, Bytes};

/// A parse failure; callers attach broker/topic/partition context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

pub type WireResult<T> = Result<T, WireError>;

fn short(what: &str) -> WireError {
    WireError(format!("truncated while reading {what}"))
}

pub struct Reader {
    buf: Bytes,
    pos: usize,
    /// Where reading stops: the buffer's end, or the end of the field
    /// entered with `enter`.
    end: usize,
}

impl Reader {
    pub fn new(buf: Bytes) -> Self {
        let end = buf.len();
        Reader { buf, pos: 0, end }
    }

    pub fn remaining(&self) -> usize {
        self.end - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> WireResult<&[u8]> {
        if self.remaining() < n {
            return Err(short(what));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// Zero-copy slice of the next `n` bytes.
    pub fn bytes(&mut self, n: usize, what: &str) -> WireResult<Bytes> {
        if self.remaining() < n {
            return Err(short(what));
        }
        let b = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(b)
    }

    pub fn i8(&mut self, what: &str) -> WireResult<i8> {
        Ok(self.take(1, what)?[0] as i8)
    }
    pub fn i16(&mut self, what: &str) -> WireResult<i16> {
        let s = self.take(2, what)?;
        Ok(i16::from_be_bytes([s[0], s[1]]))
    }
    pub fn i32(&mut self, what: &str) -> WireResult<i32> {
        let s = self.take(4, what)?;
        Ok(i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    pub fn u32(&mut self, what: &str) -> WireResult<u32> {
        Ok(self.i32(what)? as u32)
    }
    pub fn i64(&mut self, what: &str) -> WireResult<i64> {
        let s = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(i64::from_be_bytes(a))
    }
    pub fn bool(&mut self, what: &str) -> WireResult<bool> {
        Ok(self.i8(what)? != 0)
    }

    /// STRING / NULLABLE_STRING (int16 length, -1 = null).
    pub fn nullable_string(&mut self, what: &str) -> WireResult<Option<String>> {
        let len = self.i16(what)?;
        if len < 0 {
            return Ok(None);
        }
        let s = self.take(len as usize, what)?;
        String::from_utf8(s.to_vec())
            .map(Some)
            .map_err(|_| WireError(format!("{what} is not UTF-8")))
    }
    pub fn string(&mut self, what: &str) -> WireResult<String> {
        self.nullable_string(what)?
            .ok_or_else(|| WireError(format!("{what} is null")))
    }

    /// NULLABLE_BYTES / RECORDS (int32 length, -1 = null), zero-copy.
    pub fn nullable_bytes(&mut self, what: &str) -> WireResult<Option<Bytes>> {
        let len = self.i32(what)?;
        if len < 0 {
            return Ok(None);
        }
        self.bytes(len as usize, what).map(Some)
    }

    /// ARRAY length (int32, -1 = null). Capped by the bytes left (each element
    /// takes at least `min_elem` bytes) so a forged count cannot drive an allocation.
    pub fn array_len(&mut self, min_elem: usize, what: &str) -> WireResult<Option<usize>> {
        let n = self.i32(what)?;
        if n < 0 {
            return Ok(None);
        }
        let n = n as usize;
        if n.saturating_mul(min_elem.max(1)) > self.remaining() {
            return Err(WireError(format!(
                "{what}: count {n} exceeds the data present"
            )));
        }
        Ok(Some(n))
    }
}

#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

// Some encoders are only used by tests today (and by SASL later).
#[cfg_attr(not(test), allow(dead_code))]
impl Writer {
    pub fn new() -> Self {
        Writer {
            buf: Vec::with_capacity(128),
        }
    }
    pub fn i8(&mut self, v: i8) -> &mut Self {
        self.buf.put_i8(v);
        self
    }
    pub fn i16(&mut self, v: i16) -> &mut Self {
        self.buf.put_i16(v);
        self
    }
    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.buf.put_i32(v);
        self
    }
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.put_i64(v);
        self
    }
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.i8(v as i8)
    }
    /// Non-null STRING. Kafka strings are at most i16::MAX bytes; longer ones
    /// are a caller bug caught by `Writer::check_len` users.
    pub fn string(&mut self, s: &str) -> &mut Self {
        let len = s.len().min(i16::MAX as usize);
        self.buf.put_i16(len as i16);
        self.buf.extend_from_slice(&s.as_bytes()[..len]);
        self
    }
    pub fn nullable_string(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            Some(s) => self.string(s),
            None => self.i16(-1),
        }
    }
    /// BYTES / NULLABLE_BYTES with an int32 length.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.i32(b.len().min(i32::MAX as usize) as i32);
        self.raw(b)
    }
    pub fn null_bytes(&mut self) -> &mut Self {
        self.i32(-1)
    }
    pub fn array_len(&mut self, n: usize) -> &mut Self {
        self.i32(n as i32)
    }
    pub fn null_array(&mut self) -> &mut Self {
        self.i32(-1)
    }
    pub fn varint(&mut self, v: i32) -> &mut Self {
        self.uvarint(((v << 1) ^ (v >> 31)) as u32 as u64)
    }
    pub fn varlong(&mut self, v: i64) -> &mut Self {
        self.uvarint(((v << 1) ^ (v >> 63)) as u64)
    }
    fn uvarint(&mut self, mut v: u64) -> &mut Self {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
        self
    }
    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_truncated() {
        let mut r = Reader::new(Bytes::from_static(&[0, 0, 0, 9, 1]));
        assert!(r.nullable_bytes("b").is_err());
        let mut r = Reader::new(Bytes::from_static(&[0x7f, 0xff, 0xff, 0xff]));
        assert!(r.array_len(4, "a").is_err());
    }
}
