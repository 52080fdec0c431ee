//! Directory and schema checks at open: create a missing store, refuse a
//! directory that is not ours, refuse a newer schema, never start empty on
//! top of something we cannot read.

use std::path::Path;

use super::error::StoreError;
use super::keys::{
    self, Counters, META_COUNTERS, META_CREATED_AT, META_DIGEST_LOG, META_SCHEMA_VERSION, TREE_META,
};
use super::lock::LOCK_FILE;

/// 1: digests packed inside each `id_batches` value, keys in `id_keys`.
/// 2: digests in the digest log (`digests/`), keys in the key log (`keys/`),
/// `id_batches` holds headers; schema-1 stores are migrated at open
/// (`migrate.rs`).
pub const SCHEMA_VERSION: u32 = 2;

/// Files sled 0.34 keeps in its directory, our digest and key logs, and
/// the index snapshot (with its temporary file while one is written).
fn is_store_entry(name: &str) -> bool {
    name == "conf"
        || name == "db"
        || name == "blobs"
        || name.starts_with("snap.")
        || name == super::digest_log::DIGESTS.dir
        || name == super::digest_log::KEYS.dir
        || name == super::snapshot::FILE
        || name == super::snapshot::TMP
}

/// What we found in the directory before opening sled.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DirState {
    /// Missing or empty (a lone lock file counts as empty): initialise.
    Fresh,
    /// Holds sled's files: must be a tally store.
    Existing,
}

/// Create the directory if missing (0700: it holds billing data), and
/// classify its contents without writing anything into a foreign directory.
pub(crate) fn prepare_dir(path: &Path) -> Result<DirState, StoreError> {
    let io = |op: &'static str| {
        move |source| StoreError::Io {
            path: path.to_path_buf(),
            op,
            source,
        }
    };
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(io("create store directory"))?;
            return Ok(DirState::Fresh);
        }
        Err(e) => return Err(io("stat store directory")(e)),
        Ok(m) if !m.is_dir() => {
            return Err(StoreError::NotATallyStore {
                path: path.to_path_buf(),
                detail: "it is a file, not a directory".into(),
            });
        }
        Ok(_) => {}
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(path).map_err(io("list store directory"))? {
        let entry = entry.map_err(io("list store directory"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != LOCK_FILE {
            names.push(name);
        }
    }
    if names.is_empty() {
        return Ok(DirState::Fresh);
    }
    let has_sled = names.iter().any(|n| n == "conf") && names.iter().any(|n| n == "db");
    if !has_sled {
        names.sort();
        let shown: Vec<_> = names.iter().take(5).map(String::as_str).collect();
        return Err(StoreError::NotATallyStore {
            path: path.to_path_buf(),
            detail: format!(
                "it is not empty and holds no sled database (found: {}{})",
                shown.join(", "),
                if names.len() > 5 { ", …" } else { "" }
            ),
        });
    }
    let foreign: Vec<_> = names.iter().filter(|n| !is_store_entry(n)).collect();
    if !foreign.is_empty() {
        tracing::warn!(path = %path.display(), files = ?foreign, "unexpected files in store directory");
    }
    Ok(DirState::Existing)
}

pub(crate) struct Meta {
    /// The schema the store was written with (1 = to be migrated).
    pub version: u32,
    pub created_at_ms: i64,
    pub counters: Counters,
}

/// Check (or, for a fresh store, write) the schema version in `meta`.
pub(crate) fn check_or_init(
    path: &Path,
    db: &sled::Db,
    state: DirState,
) -> Result<Meta, StoreError> {
    let sled_err = |op: &'static str| {
        move |source| StoreError::Sled {
            path: path.to_path_buf(),
            op,
            source,
        }
    };
    let corrupt = |key: &[u8], detail: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        tree: "meta",
        key: keys::show_key(key),
        detail,
    };
    let has_meta = db
        .tree_names()
        .iter()
        .any(|n| n.as_ref() == TREE_META.as_bytes());
    let version = if has_meta {
        let meta = db
            .open_tree(TREE_META)
            .map_err(sled_err("open tree meta"))?;
        meta.get(META_SCHEMA_VERSION)
            .map_err(sled_err("read meta"))?
    } else {
        None
    };
    let Some(version) = version else {
        if state == DirState::Existing && !db_is_empty(db).map_err(sled_err("scan"))? {
            return Err(StoreError::NotATallyStore {
                path: path.to_path_buf(),
                detail: "it holds sled data but no tally schema_version".into(),
            });
        }
        // Fresh, or a previous first open died before writing meta (sled
        // files exist but hold nothing): nothing to lose, initialise.
        return init(path, db);
    };
    let bytes: [u8; 4] = version.as_ref().try_into().map_err(|_| {
        corrupt(
            META_SCHEMA_VERSION,
            format!("{} bytes, expected 4", version.len()),
        )
    })?;
    let found = u32::from_be_bytes(bytes);
    if found > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found < 1 {
        return Err(corrupt(
            META_SCHEMA_VERSION,
            format!("schema version {found} was never written by tally"),
        ));
    }
    let meta = db
        .open_tree(TREE_META)
        .map_err(sled_err("open tree meta"))?;
    let created_at_ms = match meta.get(META_CREATED_AT).map_err(sled_err("read meta"))? {
        Some(v) => i64::from_be_bytes(
            v.as_ref()
                .try_into()
                .map_err(|_| corrupt(META_CREATED_AT, "expected 8 bytes".into()))?,
        ),
        None => return Err(corrupt(META_CREATED_AT, "missing".into())),
    };
    let counters = match meta.get(META_COUNTERS).map_err(sled_err("read meta"))? {
        Some(v) => keys::decode_counters(&v).map_err(|d| corrupt(META_COUNTERS, d))?,
        None => Counters::default(),
    };
    Ok(Meta {
        version: found,
        created_at_ms,
        counters,
    })
}

fn db_is_empty(db: &sled::Db) -> sled::Result<bool> {
    for name in db.tree_names() {
        if !db.open_tree(&name)?.is_empty() {
            return Ok(false);
        }
    }
    Ok(true)
}

fn init(path: &Path, db: &sled::Db) -> Result<Meta, StoreError> {
    let sled_err = |op: &'static str| {
        move |source| StoreError::Sled {
            path: path.to_path_buf(),
            op,
            source,
        }
    };
    let meta = db
        .open_tree(TREE_META)
        .map_err(sled_err("open tree meta"))?;
    let created_at_ms = super::now_ms();
    let counters = Counters::default();
    // created_at and counters first, schema_version last: a store is only
    // "ours" once everything else is there.
    meta.insert(META_CREATED_AT, &created_at_ms.to_be_bytes())
        .map_err(sled_err("write meta"))?;
    meta.insert(META_COUNTERS, &keys::encode_counters(&counters))
        .map_err(sled_err("write meta"))?;
    let log = super::digest_log::LogState::default();
    meta.insert(META_DIGEST_LOG, super::digest_log::encode_state(&log))
        .map_err(sled_err("write meta"))?;
    meta.insert(keys::META_KEY_LOG, super::digest_log::encode_state(&log))
        .map_err(sled_err("write meta"))?;
    meta.insert(META_SCHEMA_VERSION, &SCHEMA_VERSION.to_be_bytes())
        .map_err(sled_err("write meta"))?;
    db.flush().map_err(sled_err("flush"))?;
    tracing::info!(path = %path.display(), schema = SCHEMA_VERSION, "created tally store");
    Ok(Meta {
        version: SCHEMA_VERSION,
        created_at_ms,
        counters,
    })
}
