//! OffsetCommit (api key 8, v2..=7, non-flexible): mirror committed offsets
//! to the group so standard tooling sees lag. The coordinator rejects a
//! stale generation (ILLEGAL_GENERATION), which is our fence.

use bytes::Bytes;

use super::super::wire::{Reader, WireResult, Writer};

pub const API_KEY: i16 = 8;
/// v2..=4 carry retention_time; v6 adds leader epoch; v7 group_instance_id;
/// v8 is flexible.
pub const VERSIONS: (i16, i16) = (2, 7);

pub struct CommitRequest<'a> {
    pub group_id: &'a str,
    pub generation_id: i32,
    pub member_id: &'a str,
    /// (topic, partition, next offset to consume)
    pub offsets: &'a [(String, i32, i64)],
}

pub fn encode_request(version: i16, req: &CommitRequest<'_>) -> Vec<u8> {
    let mut w = Writer::new();
    w.string(req.group_id)
        .i32(req.generation_id)
        .string(req.member_id);
    if version >= 7 {
        w.nullable_string(None);
    }
    if (2..=4).contains(&version) {
        w.i64(-1); // broker default retention
    }
    // Group by topic, keeping the caller's order.
    let mut topics: Vec<(&str, Vec<(i32, i64)>)> = Vec::new();
    for (t, p, o) in req.offsets {
        match topics.iter_mut().find(|(name, _)| name == t) {
            Some((_, parts)) => parts.push((*p, *o)),
            None => topics.push((t, vec![(*p, *o)])),
        }
    }
    w.array_len(topics.len());
    for (topic, parts) in topics {
        w.string(topic).array_len(parts.len());
        for (p, o) in parts {
            w.i32(p).i64(o);
            if version >= 6 {
                w.i32(-1); // leader epoch unknown
            }
            w.nullable_string(None); // metadata
        }
    }
    w.buf
}

/// (topic, partition, error code) for every partition in the answer.
pub fn parse_response(version: i16, body: Bytes) -> WireResult<Vec<(String, i32, i16)>> {
    let mut r = Reader::new(body);
    if version >= 3 {
        let _throttle = r.i32("throttle_time_ms")?;
    }
    let mut out = Vec::new();
    let n = r.array_len(6, "topics")?.unwrap_or(0);
    for _ in 0..n {
        let topic = r.string("topic")?;
        let np = r.array_len(6, "partitions")?.unwrap_or(0);
        for _ in 0..np {
            let p = r.i32("partition_index")?;
            let code = r.i16("error_code")?;
            out.push((topic.clone(), p, code));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures() {
        let offsets = [
            ("t".to_string(), 0, 5i64),
            ("u".to_string(), 1, 6),
            ("t".to_string(), 2, 7),
        ];
        let req = CommitRequest {
            group_id: "g",
            generation_id: 1,
            member_id: "m",
            offsets: &offsets,
        };
        let v7 = encode_request(7, &req);
        let mut want: Vec<u8> = vec![0, 1, b'g', 0, 0, 0, 1, 0, 1, b'm', 0xff, 0xff];
        want.extend_from_slice(&[0, 0, 0, 2]); // two topics
        want.extend_from_slice(&[0, 1, b't', 0, 0, 0, 2]);
        want.extend_from_slice(&[
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ]);
        want.extend_from_slice(&[
            0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 7, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ]);
        want.extend_from_slice(&[0, 1, b'u', 0, 0, 0, 1]);
        want.extend_from_slice(&[
            0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ]);
        assert_eq!(v7, want);
        // v2: no instance id, retention -1, no leader epochs.
        assert_eq!(encode_request(2, &req).len(), want.len() - 2 + 8 - 3 * 4);
        assert_eq!(encode_request(5, &req).len(), want.len() - 2 - 3 * 4);

        let mut w = Writer::new();
        w.i32(0).array_len(1).string("t").array_len(2);
        w.i32(0).i16(0).i32(2).i16(22);
        assert_eq!(
            parse_response(7, Bytes::from(w.buf)).unwrap(),
            vec![("t".into(), 0, 0), ("t".into(), 2, 22)]
        );
    }
}
