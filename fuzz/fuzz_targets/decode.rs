//! Any bytes, as value and key, through every decoder (and the shipped JSON
//! Schema): must return, never panic.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tally::config::{DedupeSource, FormatKind};
use tally::format::{Decoder, RecordSchema};

/// The shipped Kill Bill usage schema, compiled once: records that decode
/// are also run through JSON Schema validation.
fn usage_schema() -> Option<RecordSchema> {
    static SCHEMA: std::sync::OnceLock<Option<RecordSchema>> = std::sync::OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let path = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../data/schemas/killbill-usage.schema.json"
            );
            RecordSchema::load(std::path::Path::new(path)).ok()
        })
        .clone()
}

fuzz_target!(|data: &[u8]| {
    // First byte splits key from value so both are explored.
    let (key, value) = match data.split_first() {
        Some((&n, rest)) => rest.split_at((n as usize).min(rest.len())),
        None => (&[][..], data),
    };
    let key = Bytes::copy_from_slice(key);
    let value = Bytes::copy_from_slice(value);
    for decoder in [
        Decoder::new(FormatKind::KillbillUsage, DedupeSource::Format),
        Decoder::new(FormatKind::KillbillUsage, DedupeSource::Format).with_schema(usage_schema()),
        Decoder::new(FormatKind::Json, DedupeSource::Pointer("/id".into())),
        Decoder::new(FormatKind::Json, DedupeSource::KafkaKey),
        Decoder::new(FormatKind::Json, DedupeSource::None).with_max_record_bytes(4096),
    ] {
        let _ = decoder.decode(Some(&key), Some(&value));
    }
});
