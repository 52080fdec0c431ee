//! Tiny big-endian binary writer/reader shared by the value codecs.
//! The reader never panics on short or malformed input: it returns a
//! description that the caller wraps into `StoreError::Corrupt`.

pub(crate) type DecodeResult<T> = Result<T, String>;

#[derive(Default)]
pub(crate) struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn with_capacity(n: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(n),
        }
    }
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    #[cfg(test)] // schema-1 batches, written only to test the migration
    pub fn u128(&mut self, v: u128) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    /// u16 length + bytes; caller guarantees len <= u16::MAX (checked at validation).
    pub fn bytes16(&mut self, b: &[u8]) {
        self.u16(b.len() as u16);
        self.buf.extend_from_slice(b);
    }
    /// u32 length + bytes; caller guarantees len <= u32::MAX.
    pub fn bytes32(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.buf.extend_from_slice(b);
    }
    /// Tag byte (0 = None, 1 = Some) + bytes32, so "absent" and "empty" stay distinct.
    pub fn opt_bytes32(&mut self, b: Option<&[u8]>) {
        match b {
            None => self.u8(0),
            Some(b) => {
                self.u8(1);
                self.bytes32(b);
            }
        }
    }
}

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }
    pub fn take(&mut self, n: usize, what: &str) -> DecodeResult<&'a [u8]> {
        if self.remaining() < n {
            return Err(format!(
                "truncated value: need {n} bytes for {what} at byte {}, only {} left",
                self.pos,
                self.remaining()
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self, what: &str) -> DecodeResult<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    pub fn u8(&mut self, what: &str) -> DecodeResult<u8> {
        Ok(self.arr::<1>(what)?[0])
    }
    pub fn u16(&mut self, what: &str) -> DecodeResult<u16> {
        Ok(u16::from_be_bytes(self.arr(what)?))
    }
    pub fn u32(&mut self, what: &str) -> DecodeResult<u32> {
        Ok(u32::from_be_bytes(self.arr(what)?))
    }
    pub fn i32(&mut self, what: &str) -> DecodeResult<i32> {
        Ok(i32::from_be_bytes(self.arr(what)?))
    }
    pub fn i64(&mut self, what: &str) -> DecodeResult<i64> {
        Ok(i64::from_be_bytes(self.arr(what)?))
    }
    pub fn u64(&mut self, what: &str) -> DecodeResult<u64> {
        Ok(u64::from_be_bytes(self.arr(what)?))
    }
    pub fn bytes16(&mut self, what: &str) -> DecodeResult<&'a [u8]> {
        let n = self.u16(what)? as usize;
        self.take(n, what)
    }
    pub fn bytes32(&mut self, what: &str) -> DecodeResult<&'a [u8]> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }
    pub fn str16(&mut self, what: &str) -> DecodeResult<String> {
        utf8(self.bytes16(what)?, what)
    }
    pub fn str32(&mut self, what: &str) -> DecodeResult<String> {
        utf8(self.bytes32(what)?, what)
    }
    pub fn opt_bytes32(&mut self, what: &str) -> DecodeResult<Option<Vec<u8>>> {
        match self.u8(what)? {
            0 => Ok(None),
            1 => Ok(Some(self.bytes32(what)?.to_vec())),
            t => Err(format!("bad option tag {t} for {what}")),
        }
    }
    pub fn finish(&self, what: &str) -> DecodeResult<()> {
        if self.remaining() != 0 {
            return Err(format!("{} trailing bytes after {what}", self.remaining()));
        }
        Ok(())
    }
}

fn utf8(b: &[u8], what: &str) -> DecodeResult<String> {
    String::from_utf8(b.to_vec()).map_err(|_| format!("{what} is not valid UTF-8"))
}
