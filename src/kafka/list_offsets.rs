//! ListOffsets (api key 2, v2..=5, non-flexible), read-committed so
//! "latest" is the last stable offset, not past open transactions.

use bytes::Bytes;

use super::wire::{Reader, WireResult, Writer};

pub const API_KEY: i16 = 2;
/// v2 adds isolation level; v6 is flexible.
pub const VERSIONS: (i16, i16) = (2, 5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    Earliest,
    Latest,
    /// First offset whose timestamp is >= this (ms since the epoch).
    Timestamp(i64),
}

impl OffsetSpec {
    fn wire(self) -> i64 {
        match self {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::Timestamp(t) => t,
        }
    }
}

pub fn encode_request(version: i16, topic: &str, partition: i32, at: OffsetSpec) -> Vec<u8> {
    let mut w = Writer::new();
    w.i32(-1).i8(1); // consumer, read_committed
    w.array_len(1).string(topic).array_len(1).i32(partition);
    if version >= 4 {
        w.i32(-1); // current leader epoch unknown
    }
    w.i64(at.wire());
    w.buf
}

/// (error code, offset) for our partition; None if the broker left it out.
pub fn parse_response(
    version: i16,
    body: Bytes,
    topic: &str,
    partition: i32,
) -> WireResult<Option<(i16, i64)>> {
    let mut r = Reader::new(body);
    let _throttle = r.i32("throttle_time_ms")?;
    let mut found = None;
    let n = r.array_len(6, "topics")?.unwrap_or(0);
    for _ in 0..n {
        let name = r.string("topic")?;
        let np = r.array_len(22, "partitions")?.unwrap_or(0);
        for _ in 0..np {
            let index = r.i32("partition_index")?;
            let code = r.i16("error_code")?;
            let _ts = r.i64("timestamp")?;
            let offset = r.i64("offset")?;
            if version >= 4 {
                let _epoch = r.i32("leader_epoch")?;
            }
            if name == topic && index == partition {
                found = Some((code, offset));
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_shapes() {
        let req = encode_request(5, "t", 2, OffsetSpec::Earliest);
        assert_eq!(req.len(), 4 + 1 + 4 + 3 + 4 + 4 + 4 + 8);
        assert_eq!(&req[req.len() - 8..], &(-2i64).to_be_bytes());
        let mut w = Writer::new();
        w.i32(0)
            .array_len(1)
            .string("t")
            .array_len(1)
            .i32(2)
            .i16(0)
            .i64(-1)
            .i64(57)
            .i32(0);
        assert_eq!(
            parse_response(5, Bytes::from(w.buf), "t", 2).unwrap(),
            Some((0, 57))
        );
    }
}
