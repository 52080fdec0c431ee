//! Confluent schema-registry framing: magic byte 0, the schema id as 4
//! bytes big-endian, then the serialized value (JSON for the JSON Schema
//! serializer). JSON text never starts with a 0 byte, so a framed value is
//! recognised without configuration and plain values pass untouched.

use super::DecodeError;

const MAGIC: u8 = 0;
const HEADER: usize = 5;

/// The schema id (if framed) and where the body starts in `value` (0 for
/// a plain value). An index, not a slice: the caller cuts the event out of
/// the buffer once (each `Bytes` slice is a refcount round trip per record).
pub(super) fn strip(value: &[u8]) -> Result<(Option<u32>, usize), DecodeError> {
    if value.first() != Some(&MAGIC) {
        return Ok((None, 0));
    }
    let Some(id) = value.get(1..HEADER) else {
        return Err(DecodeError::TruncatedFrame(value.len()));
    };
    let id = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
    Ok((Some(id), HEADER))
}

/// The schema id of a framed value, whatever its body holds (for labelling
/// a dead letter whose body did not decode).
pub fn schema_id(value: &[u8]) -> Option<u32> {
    match value {
        [MAGIC, a, b, c, d, ..] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn plain_values_pass_untouched() {
        let v = Bytes::from_static(b"{\"a\":1}");
        assert_eq!(strip(&v).unwrap(), (None, 0));
        assert_eq!(strip(&Bytes::new()).unwrap(), (None, 0));
    }

    #[test]
    fn frame_is_stripped_and_id_kept() {
        let v = Bytes::from_static(b"\x00\x00\x01\x00\x2a{\"a\":1}");
        assert_eq!(&v[HEADER..], b"{\"a\":1}");
        assert_eq!(strip(&v).unwrap(), (Some(65_578), HEADER));
        // A frame with an empty body is a frame; the body then fails to decode.
        assert_eq!(
            strip(&Bytes::from_static(b"\x00\xff\xff\xff\xff")).unwrap(),
            (Some(u32::MAX), HEADER)
        );
    }

    #[test]
    fn short_frames_are_errors() {
        for n in 1..HEADER {
            let v = Bytes::from(vec![0u8; n]);
            assert_eq!(strip(&v), Err(DecodeError::TruncatedFrame(n)));
        }
    }
}
