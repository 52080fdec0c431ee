//! Decompression of a RecordBatch's records section, bounded so a small
//! compressed batch cannot expand into unbounded memory.

use std::io::Read;

/// Codec in bits 0-2 of the batch attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Codec {
    pub fn from_attributes(attributes: i16) -> Result<Codec, String> {
        match attributes & 0x07 {
            0 => Ok(Codec::None),
            1 => Ok(Codec::Gzip),
            2 => Ok(Codec::Snappy),
            3 => Ok(Codec::Lz4),
            4 => Ok(Codec::Zstd),
            other => Err(format!("unknown compression codec {other}")),
        }
    }
}

/// Largest decompressed records section we accept for one batch.
pub const MAX_DECOMPRESSED: usize = 256 * 1024 * 1024;

pub fn decompress(codec: Codec, input: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    match codec {
        Codec::None => Ok(input.to_vec()),
        // Multi-member: Java's GZIPInputStream reads concatenated members too.
        Codec::Gzip => read_bounded(flate2::read::MultiGzDecoder::new(input), limit, "gzip"),
        Codec::Snappy => snappy(input, limit),
        Codec::Lz4 => read_bounded(lz4_flex::frame::FrameDecoder::new(input), limit, "lz4"),
        Codec::Zstd => zstd(input, limit),
    }
}

fn read_bounded(r: impl Read, limit: usize, what: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    // One byte over the limit tells "exactly at limit" from "too big".
    r.take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("{what} decompression failed: {e}"))?;
    if out.len() > limit {
        return Err(format!("{what}: decompressed size exceeds {limit} bytes"));
    }
    Ok(out)
}

/// Java clients frame snappy the xerial way (magic, version, then
/// length-prefixed raw blocks); librdkafka may send either. Accept both.
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];

fn snappy(input: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    if input.len() >= 16 && input[..8] == XERIAL_MAGIC {
        let mut out = Vec::new();
        let mut pos = 16; // magic + version i32 + compatible-version i32
        while pos < input.len() {
            if input.len() - pos < 4 {
                return Err("snappy (xerial): truncated block length".into());
            }
            let len =
                u32::from_be_bytes([input[pos], input[pos + 1], input[pos + 2], input[pos + 3]])
                    as usize;
            pos += 4;
            if input.len() - pos < len {
                return Err("snappy (xerial): block longer than data".into());
            }
            raw_snappy_into(&input[pos..pos + len], limit - out.len(), &mut out)?;
            pos += len;
        }
        Ok(out)
    } else {
        let mut out = Vec::new();
        raw_snappy_into(input, limit, &mut out)?;
        Ok(out)
    }
}

fn raw_snappy_into(block: &[u8], room: usize, out: &mut Vec<u8>) -> Result<(), String> {
    let n = snap::raw::decompress_len(block).map_err(|e| format!("snappy: {e}"))?;
    if n > room {
        return Err(format!(
            "snappy: decompressed size exceeds the {room}-byte room left"
        ));
    }
    let start = out.len();
    out.resize(start + n, 0);
    let written = snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|e| format!("snappy: {e}"))?;
    out.truncate(start + written);
    Ok(())
}

/// One or more concatenated zstd frames.
fn zstd(mut input: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while !input.is_empty() {
        let dec = ruzstd::decoding::StreamingDecoder::new(&mut input)
            .map_err(|e| format!("zstd: {e}"))?;
        let part = read_bounded(dec, limit - out.len(), "zstd")?;
        out.extend_from_slice(&part);
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod test_codecs {
    //! Compressors used only by tests to build batches.
    use super::Codec;
    use std::io::Write;

    pub fn compress(codec: Codec, data: &[u8]) -> Vec<u8> {
        match codec {
            Codec::None => data.to_vec(),
            Codec::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Codec::Snappy => snap::raw::Encoder::new().compress_vec(data).unwrap(),
            Codec::Lz4 => {
                let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Codec::Zstd => {
                ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
            }
        }
    }

    /// xerial framing as the Java client writes it, with small blocks to
    /// exercise the block loop.
    pub fn xerial_snappy(data: &[u8], block: usize) -> Vec<u8> {
        let mut out = super::XERIAL_MAGIC.to_vec();
        out.extend_from_slice(&1i32.to_be_bytes());
        out.extend_from_slice(&1i32.to_be_bytes());
        for chunk in data.chunks(block) {
            let c = snap::raw::Encoder::new().compress_vec(chunk).unwrap();
            out.extend_from_slice(&(c.len() as u32).to_be_bytes());
            out.extend_from_slice(&c);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::test_codecs::*;
    use super::*;

    #[test]
    fn roundtrip_each_codec() {
        let data: Vec<u8> = (0..50_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for codec in [
            Codec::None,
            Codec::Gzip,
            Codec::Snappy,
            Codec::Lz4,
            Codec::Zstd,
        ] {
            let c = compress(codec, &data);
            assert_eq!(
                decompress(codec, &c, MAX_DECOMPRESSED).unwrap(),
                data,
                "{codec:?}"
            );
        }
        let x = xerial_snappy(&data, 4096);
        assert_eq!(
            decompress(Codec::Snappy, &x, MAX_DECOMPRESSED).unwrap(),
            data
        );
    }

    #[test]
    fn bounded_expansion() {
        let data = vec![0u8; 1 << 20];
        for codec in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
            let c = compress(codec, &data);
            let err = decompress(codec, &c, 1000).unwrap_err();
            assert!(err.contains("exceeds"), "{codec:?}: {err}");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let junk = [0x13u8, 0x37, 0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3];
        for codec in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
            assert!(
                decompress(codec, &junk, MAX_DECOMPRESSED).is_err(),
                "{codec:?}"
            );
        }
    }
}
