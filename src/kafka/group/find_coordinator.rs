//! FindCoordinator (api key 10, v1..=2, non-flexible): which broker runs a
//! group's coordinator.

use bytes::Bytes;

use super::super::wire::{Reader, WireResult, Writer};

pub const API_KEY: i16 = 10;
/// v1 adds key_type; v3 is flexible.
pub const VERSIONS: (i16, i16) = (1, 2);
const KEY_TYPE_GROUP: i8 = 0;

pub fn encode_request(group_id: &str) -> Vec<u8> {
    let mut w = Writer::new();
    w.string(group_id).i8(KEY_TYPE_GROUP);
    w.buf
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coordinator {
    pub error_code: i16,
    pub error_message: Option<String>,
    pub node_id: i32,
    /// "host:port"
    pub addr: String,
}

pub fn parse_response(body: Bytes) -> WireResult<Coordinator> {
    let mut r = Reader::new(body);
    let _throttle = r.i32("throttle_time_ms")?;
    let error_code = r.i16("error_code")?;
    let error_message = r.nullable_string("error_message")?;
    let node_id = r.i32("node_id")?;
    let host = r.string("host")?;
    let port = r.i32("port")?;
    Ok(Coordinator {
        error_code,
        error_message,
        node_id,
        addr: format!("{host}:{port}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_and_response_fixtures() {
        assert_eq!(encode_request("g1"), vec![0, 2, b'g', b'1', 0]);
        let resp: &[u8] = &[
            0, 0, 0, 0, // throttle
            0, 0, // error
            0xff, 0xff, // message null
            0, 0, 0, 7, // node 7
            0, 1, b'h', // host "h"
            0, 0, 0x23, 0x84, // port 9092
        ];
        let c = parse_response(Bytes::from_static(resp)).unwrap();
        assert_eq!((c.error_code, c.node_id, c.addr.as_str()), (0, 7, "h:9092"));
        assert!(parse_response(Bytes::from_static(&resp[..10])).is_err());
    }
}
