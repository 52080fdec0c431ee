//! JoinGroup (api key 11, v1..=5, non-flexible): enter a generation; the
//! leader gets every member's metadata.

use bytes::Bytes;

use super::super::wire::{Reader, WireResult, Writer};

pub const API_KEY: i16 = 11;
/// v1 adds rebalance_timeout; v4 may answer MEMBER_ID_REQUIRED; v5 adds
/// group_instance_id; v6 is flexible.
pub const VERSIONS: (i16, i16) = (1, 5);

pub struct JoinRequest<'a> {
    pub group_id: &'a str,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    /// Empty on the first join.
    pub member_id: &'a str,
    pub protocol_type: &'a str,
    /// (assignor name, member metadata)
    pub protocols: &'a [(&'a str, Vec<u8>)],
}

pub fn encode_request(version: i16, req: &JoinRequest<'_>) -> Vec<u8> {
    let mut w = Writer::new();
    w.string(req.group_id).i32(req.session_timeout_ms);
    if version >= 1 {
        w.i32(req.rebalance_timeout_ms);
    }
    w.string(req.member_id);
    if version >= 5 {
        w.nullable_string(None); // no static membership
    }
    w.string(req.protocol_type).array_len(req.protocols.len());
    for (name, metadata) in req.protocols {
        w.string(name).bytes(metadata);
    }
    w.buf
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinMember {
    pub member_id: String,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub error_code: i16,
    pub generation_id: i32,
    pub protocol_name: String,
    pub leader: String,
    pub member_id: String,
    /// Filled for the leader only.
    pub members: Vec<JoinMember>,
}

pub fn parse_response(version: i16, body: Bytes) -> WireResult<Joined> {
    let mut r = Reader::new(body);
    if version >= 2 {
        let _throttle = r.i32("throttle_time_ms")?;
    }
    let error_code = r.i16("error_code")?;
    let generation_id = r.i32("generation_id")?;
    // Null on errors from some brokers.
    let protocol_name = r.nullable_string("protocol_name")?.unwrap_or_default();
    let leader = r.string("leader")?;
    let member_id = r.string("member_id")?;
    let n = r.array_len(6, "members")?.unwrap_or(0);
    let mut members = Vec::with_capacity(n);
    for _ in 0..n {
        let member_id = r.string("member_id")?;
        if version >= 5 {
            let _instance = r.nullable_string("group_instance_id")?;
        }
        let metadata = r.nullable_bytes("metadata")?.unwrap_or_default();
        members.push(JoinMember {
            member_id,
            metadata,
        });
    }
    Ok(Joined {
        error_code,
        generation_id,
        protocol_name,
        leader,
        member_id,
        members,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_fixture_v5_and_v1() {
        let protocols = [("p", vec![1u8, 2])];
        let req = JoinRequest {
            group_id: "g",
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 20_000,
            member_id: "",
            protocol_type: "consumer",
            protocols: &protocols,
        };
        let mut want: Vec<u8> = vec![0, 1, b'g', 0, 0, 0x27, 0x10, 0, 0, 0x4e, 0x20, 0, 0];
        want.extend_from_slice(&[0xff, 0xff]); // group_instance_id null
        want.extend_from_slice(b"\x00\x08consumer");
        want.extend_from_slice(&[0, 0, 0, 1, 0, 1, b'p', 0, 0, 0, 2, 1, 2]);
        assert_eq!(encode_request(5, &req), want);
        let v1 = encode_request(1, &req);
        assert_eq!(v1.len(), want.len() - 2);
        assert_eq!(encode_request(0, &req).len(), want.len() - 6);
    }

    #[test]
    fn response_fixture_v5() {
        let mut w = Writer::new();
        w.i32(0)
            .i16(0)
            .i32(3)
            .string("tally-sticky")
            .string("m1")
            .string("m2");
        w.array_len(2);
        w.string("m1").nullable_string(None).bytes(&[7]);
        w.string("m2").nullable_string(Some("i")).bytes(&[]);
        let j = parse_response(5, Bytes::from(w.buf)).unwrap();
        assert_eq!(j.generation_id, 3);
        assert_eq!(j.protocol_name, "tally-sticky");
        assert_eq!((j.leader.as_str(), j.member_id.as_str()), ("m1", "m2"));
        assert_eq!(j.members.len(), 2);
        assert_eq!(j.members[0].metadata.as_ref(), &[7]);
        // MEMBER_ID_REQUIRED on an error path: null protocol, no members.
        let mut w = Writer::new();
        w.i32(0)
            .i16(79)
            .i32(-1)
            .nullable_string(None)
            .string("")
            .string("m9")
            .array_len(0);
        let j = parse_response(5, Bytes::from(w.buf)).unwrap();
        assert_eq!((j.error_code, j.member_id.as_str()), (79, "m9"));
    }
}
