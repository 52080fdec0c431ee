//! OffsetFetch (api key 9, v1..=5, non-flexible): the group's committed
//! offsets, read when a member takes a partition over.

use bytes::Bytes;

use super::super::wire::{Reader, WireResult, Writer};

pub const API_KEY: i16 = 9;
/// v2 adds a top-level error; v3 throttle; v5 leader epoch; v6 is flexible.
pub const VERSIONS: (i16, i16) = (1, 5);

/// `topics`: (topic, partitions).
pub fn encode_request(group_id: &str, topics: &[(String, Vec<i32>)]) -> Vec<u8> {
    let mut w = Writer::new();
    w.string(group_id).array_len(topics.len());
    for (t, parts) in topics {
        w.string(t).array_len(parts.len());
        for p in parts {
            w.i32(*p);
        }
    }
    w.buf
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub topic: String,
    pub partition: i32,
    /// -1 when the group has no offset for the partition.
    pub offset: i64,
    pub error_code: i16,
}

/// (top-level error code, per-partition answers)
pub fn parse_response(version: i16, body: Bytes) -> WireResult<(i16, Vec<Committed>)> {
    let mut r = Reader::new(body);
    if version >= 3 {
        let _throttle = r.i32("throttle_time_ms")?;
    }
    let mut out = Vec::new();
    let n = r.array_len(6, "topics")?.unwrap_or(0);
    for _ in 0..n {
        let topic = r.string("topic")?;
        let np = r.array_len(16, "partitions")?.unwrap_or(0);
        for _ in 0..np {
            let partition = r.i32("partition_index")?;
            let offset = r.i64("committed_offset")?;
            if version >= 5 {
                let _epoch = r.i32("committed_leader_epoch")?;
            }
            let _metadata = r.nullable_string("metadata")?;
            let error_code = r.i16("error_code")?;
            out.push(Committed {
                topic: topic.clone(),
                partition,
                offset,
                error_code,
            });
        }
    }
    let code = if version >= 2 {
        r.i16("error_code")?
    } else {
        0
    };
    Ok((code, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures() {
        assert_eq!(
            encode_request("g", &[("t".into(), vec![1])]),
            vec![0, 1, b'g', 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 1, 0, 0, 0, 1]
        );
        let resp: &[u8] = &[
            0, 0, 0, 0, // throttle
            0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 1, // topic t, one partition
            0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 42, // p1 @ 42
            0xff, 0xff, 0xff, 0xff, // epoch -1
            0xff, 0xff, // metadata null
            0, 0, // partition error
            0, 0, // top-level error
        ];
        let (code, got) = parse_response(5, Bytes::from_static(resp)).unwrap();
        assert_eq!(code, 0);
        assert_eq!(
            got,
            vec![Committed {
                topic: "t".into(),
                partition: 1,
                offset: 42,
                error_code: 0
            }]
        );
        assert!(parse_response(5, Bytes::from_static(&resp[..20])).is_err());
    }
}
