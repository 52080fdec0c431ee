//! Heartbeat (api key 12, v1..=3) and LeaveGroup (api key 13, v1..=2),
//! non-flexible: both answer with just an error code.

use bytes::Bytes;

use super::super::wire::{Reader, WireResult, Writer};

pub const HEARTBEAT_KEY: i16 = 12;
/// v3 adds group_instance_id; v4 is flexible.
pub const HEARTBEAT_VERSIONS: (i16, i16) = (1, 3);
pub const LEAVE_KEY: i16 = 13;
/// v3 batches members; v4 is flexible.
pub const LEAVE_VERSIONS: (i16, i16) = (1, 2);

pub fn encode_heartbeat(
    version: i16,
    group_id: &str,
    generation_id: i32,
    member_id: &str,
) -> Vec<u8> {
    let mut w = Writer::new();
    w.string(group_id).i32(generation_id).string(member_id);
    if version >= 3 {
        w.nullable_string(None);
    }
    w.buf
}

pub fn encode_leave(group_id: &str, member_id: &str) -> Vec<u8> {
    let mut w = Writer::new();
    w.string(group_id).string(member_id);
    w.buf
}

/// The error code of a Heartbeat or LeaveGroup response (v1+).
pub fn parse_response(body: Bytes) -> WireResult<i16> {
    let mut r = Reader::new(body);
    let _throttle = r.i32("throttle_time_ms")?;
    r.i16("error_code")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures() {
        assert_eq!(
            encode_heartbeat(3, "g", 4, "m"),
            vec![0, 1, b'g', 0, 0, 0, 4, 0, 1, b'm', 0xff, 0xff]
        );
        assert_eq!(encode_heartbeat(2, "g", 4, "m").len(), 10);
        assert_eq!(encode_leave("g", "m"), vec![0, 1, b'g', 0, 1, b'm']);
        assert_eq!(
            parse_response(Bytes::from_static(&[0, 0, 0, 0, 0, 27])).unwrap(),
            27
        );
        assert!(parse_response(Bytes::from_static(&[0, 0, 0, 0, 0])).is_err());
    }
}
