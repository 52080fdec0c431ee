//! SyncGroup (api key 14, v1..=3, non-flexible): the leader hands in the
//! assignment; every member gets its own share back.

use bytes::Bytes;

use super::super::wire::{Reader, WireResult, Writer};

pub const API_KEY: i16 = 14;
/// v3 adds group_instance_id; v4 is flexible.
pub const VERSIONS: (i16, i16) = (1, 3);

pub struct SyncRequest<'a> {
    pub group_id: &'a str,
    pub generation_id: i32,
    pub member_id: &'a str,
    /// (member id, assignment bytes); empty unless we lead.
    pub assignments: &'a [(String, Vec<u8>)],
}

pub fn encode_request(version: i16, req: &SyncRequest<'_>) -> Vec<u8> {
    let mut w = Writer::new();
    w.string(req.group_id)
        .i32(req.generation_id)
        .string(req.member_id);
    if version >= 3 {
        w.nullable_string(None);
    }
    w.array_len(req.assignments.len());
    for (member, bytes) in req.assignments {
        w.string(member).bytes(bytes);
    }
    w.buf
}

/// (error code, this member's assignment bytes)
pub fn parse_response(version: i16, body: Bytes) -> WireResult<(i16, Bytes)> {
    let mut r = Reader::new(body);
    if version >= 1 {
        let _throttle = r.i32("throttle_time_ms")?;
    }
    let code = r.i16("error_code")?;
    let assignment = r.nullable_bytes("assignment")?.unwrap_or_default();
    Ok((code, assignment))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures() {
        let assignments = [("m".to_string(), vec![5u8])];
        let req = SyncRequest {
            group_id: "g",
            generation_id: 2,
            member_id: "m",
            assignments: &assignments,
        };
        let want: &[u8] = &[
            0, 1, b'g', 0, 0, 0, 2, 0, 1, b'm', 0xff, 0xff, // header fields
            0, 0, 0, 1, 0, 1, b'm', 0, 0, 0, 1, 5, // one assignment
        ];
        assert_eq!(encode_request(3, &req), want);
        assert_eq!(encode_request(2, &req).len(), want.len() - 2);
        let resp: &[u8] = &[0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1];
        let (code, a) = parse_response(3, Bytes::from_static(resp)).unwrap();
        assert_eq!((code, a.as_ref()), (0, &[0u8, 1][..]));
        let rebalancing: &[u8] = &[0, 0, 0, 0, 0, 27, 0, 0, 0, 0];
        assert_eq!(
            parse_response(3, Bytes::from_static(rebalancing))
                .unwrap()
                .0,
            27
        );
    }
}
