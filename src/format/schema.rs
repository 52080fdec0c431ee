//! A route's optional JSON Schema, checked after the format decoder accepted
//! the record. Validation is the `jsonschema` crate's (no hand-written rules);
//! built without its default features, so no network `$ref` resolution and
//! no TLS stack comes with it: a schema is one local file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::DecodeError;

/// Why a schema file cannot be used; the config layer adds the key.
#[derive(Debug, thiserror::Error)]
pub enum SchemaLoadError {
    #[error("cannot read schema file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("schema file {path} is not valid JSON: {message}")]
    NotJson { path: PathBuf, message: String },
    #[error("schema file {path} is not a valid JSON Schema: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// A compiled schema; cheap to clone (shared by every partition worker).
#[derive(Clone)]
pub struct RecordSchema {
    path: PathBuf,
    validator: Arc<jsonschema::Validator>,
}

impl std::fmt::Debug for RecordSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordSchema")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl serde::Serialize for RecordSchema {
    /// Shown by `tally check` as the file it came from.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.path.serialize(s)
    }
}

impl RecordSchema {
    pub fn load(path: &Path) -> Result<RecordSchema, SchemaLoadError> {
        let text = std::fs::read(path).map_err(|source| SchemaLoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let value: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| SchemaLoadError::NotJson {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let validator =
            jsonschema::validator_for(&value).map_err(|e| SchemaLoadError::Invalid {
                path: path.to_path_buf(),
                message: format!("{e} (at {})", pointer_or_root(e.schema_path().as_str())),
            })?;
        Ok(RecordSchema {
            path: path.to_path_buf(),
            validator: Arc::new(validator),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Check a decoded event (already known to be a JSON object). The first
    /// failure is reported with where in the record (instance path) and
    /// which schema keyword it broke, so an operator can fix the producer.
    pub fn check(&self, event: &[u8]) -> Result<(), DecodeError> {
        let value: serde_json::Value =
            serde_json::from_slice(event).map_err(|e| DecodeError::InvalidJson(e.to_string()))?;
        match self.validator.validate(&value) {
            Ok(()) => Ok(()),
            Err(e) => Err(DecodeError::Schema {
                path: pointer_or_root(e.instance_path().as_str()).to_string(),
                keyword: e.kind().keyword().to_string(),
                message: e.to_string(),
            }),
        }
    }
}

/// The empty JSON pointer is the whole document; say so.
fn pointer_or_root(pointer: &str) -> &str {
    if pointer.is_empty() { "/" } else { pointer }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(text: &str) -> RecordSchema {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        std::fs::write(&path, text).unwrap();
        RecordSchema::load(&path).unwrap()
    }

    #[test]
    fn failure_names_instance_path_and_keyword() {
        let s = schema(
            r#"{"type":"object","properties":{"a":{"type":"array","items":{"type":"integer","minimum":0}}},"required":["a"]}"#,
        );
        assert!(s.check(br#"{"a":[1,2]}"#).is_ok());
        let DecodeError::Schema { path, keyword, .. } = s.check(br#"{"a":[1,-2]}"#).unwrap_err()
        else {
            panic!("not a schema error")
        };
        assert_eq!((path.as_str(), keyword.as_str()), ("/a/1", "minimum"));
        let e = s.check(br#"{"b":1}"#).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("at / (rule `required`)"), "{text}");
    }

    #[test]
    fn unusable_schema_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let missing = RecordSchema::load(&dir.path().join("nope.json")).unwrap_err();
        assert!(matches!(missing, SchemaLoadError::Read { .. }), "{missing}");
        let path = dir.path().join("bad.json");
        std::fs::write(&path, "{not json").unwrap();
        let e = RecordSchema::load(&path).unwrap_err();
        assert!(matches!(e, SchemaLoadError::NotJson { .. }), "{e}");
        std::fs::write(&path, r#"{"type":"no-such-type"}"#).unwrap();
        let e = RecordSchema::load(&path).unwrap_err();
        assert!(matches!(e, SchemaLoadError::Invalid { .. }), "{e}");
    }

    #[test]
    fn shipped_killbill_usage_schema_compiles_and_checks() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("data/schemas/killbill-usage.schema.json");
        let s = RecordSchema::load(&path).unwrap();
        let good = br#"{"subscriptionExternalKey":"s","trackingId":"t","tenantId":"x","unitUsageRecords":[{"unitType":"u","usageRecords":[{"recordDate":"2026-11-01","amount":1}]}]}"#;
        assert!(s.check(good).is_ok());
        let kb = br#"{"subscriptionId":"7d5b8f3c-3c2f-4d38-9a4e-1b2c3d4e5f60","trackingId":"t","unitUsageRecords":[{"unitType":"u","usageRecords":[{"recordDate":"2026-11-01T10:00:00Z","amount":"2.5"}]}]}"#;
        assert!(s.check(kb).is_ok());
        let bad = br#"{"subscriptionExternalKey":"s","trackingId":"t","tenantId":"x","unitUsageRecords":[{"unitType":"","usageRecords":[{"recordDate":"2026-11-01","amount":1}]}]}"#;
        let DecodeError::Schema { path, keyword, .. } = s.check(bad).unwrap_err() else {
            panic!("not a schema error")
        };
        assert_eq!(
            (path.as_str(), keyword.as_str()),
            ("/unitUsageRecords/0/unitType", "minLength")
        );
    }

    /// Every `good` row of data/bad/README.md also passes the shipped schema
    /// (through the whole decoder, frames included): the schema adds rules,
    /// it does not contradict the format.
    #[test]
    fn corpus_good_records_pass_the_shipped_schema() {
        use crate::config::{DedupeSource, FormatKind};
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let s = RecordSchema::load(&root.join("data/schemas/killbill-usage.schema.json")).unwrap();
        let decoder = super::super::Decoder::new(FormatKind::KillbillUsage, DedupeSource::Format)
            .with_schema(Some(s));
        let table = std::fs::read_to_string(root.join("data/bad/README.md")).unwrap();
        let good: Vec<&str> = table
            .lines()
            .filter(|l| l.contains("| good |"))
            .filter_map(|l| l.split('`').nth(1))
            .collect();
        assert!(good.len() >= 9, "{good:?}");
        for file in good {
            let bytes =
                bytes::Bytes::from(std::fs::read(root.join("data/bad").join(file)).unwrap());
            if let Err(e) = decoder.decode(None, Some(&bytes)) {
                panic!("{file}: {e}");
            }
        }
    }

    /// The README's recipe for refusing negative amounts, and the reason it gives.
    #[test]
    fn negative_amounts_can_be_refused_by_a_stricter_copy() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let shipped =
            std::fs::read_to_string(root.join("data/schemas/killbill-usage.schema.json")).unwrap();
        let strict = shipped.replace(
            r#"{ "type": "number" }"#,
            r#"{ "type": "number", "minimum": 0 }"#,
        );
        assert_ne!(strict, shipped);
        let s = schema(&strict);
        let neg = std::fs::read(root.join("data/bad/negative-amount.json")).unwrap();
        let e = s.check(&neg).unwrap_err().to_string();
        assert!(
            e.contains("/unitUsageRecords/0/usageRecords/0/amount"),
            "{e}"
        );
        eprintln!("{e}");
    }
}
