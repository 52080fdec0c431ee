//! Schema 1 → 2 at open: move each batch's digests out of its `id_batches`
//! value into the digest log, its keys into the key log, and leave a header
//! in its place.
//!
//! Resumable at every step. The first write marks the store schema 2 and
//! "migrating from batch 0" in one sled batch, so an older tally refuses it
//! (newer schema) instead of misreading it. Then, chunk by chunk in sequence
//! order: the chunk's digests are appended to the log and synced, and one
//! transaction rewrites those batches as headers, records the log's new end
//! and moves the marker past them. A crash anywhere leaves the migrated
//! batches, the log and the marker agreeing; the next open carries on from
//! the marker (bytes appended by an unfinished chunk lie past the log's
//! recorded end and are cut off). Keys move from `id_keys` (lz4) to the key
//! log (`key_codec.rs`) in the same steps.

use std::path::Path;
use std::time::Instant;

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::api::{Trees, corrupt};
use super::batch;
use super::digest_log::{self, DIGESTS, DigestLog, KEYS, LogState};
use super::error::StoreError;
use super::keys;
use super::rebuild::{io_err, read_log_meta};
use super::schema::SCHEMA_VERSION;
use super::staging::Staging;

/// Per chunk: at most this many digests...
pub(crate) const CHUNK_RECORDS: usize = 1 << 20;
/// ...and at most this many batches (bounds the transaction).
const CHUNK_BATCHES: usize = 4096;

/// Mark a schema-1 store as schema 2, migrating from its first batch.
pub(crate) fn begin(path: &Path, db: &sled::Db, trees: &Trees) -> Result<(), StoreError> {
    let mut b = sled::Batch::default();
    b.insert(keys::META_MIGRATING, &0u64.to_be_bytes()[..]);
    for kind in [&DIGESTS, &KEYS] {
        b.insert(
            kind.state_key,
            digest_log::encode_state(&LogState::default()),
        );
    }
    b.insert(keys::META_SCHEMA_VERSION, &SCHEMA_VERSION.to_be_bytes()[..]);
    trees
        .meta
        .apply_batch(b)
        .map_err(StoreError::sled_at(path, "write meta"))?;
    db.flush().map_err(StoreError::sled_at(path, "flush"))?;
    tracing::info!(path = %path.display(), "migrating store from schema 1 to 2 (digests into digests/)");
    Ok(())
}

/// The next batch to migrate, if a migration is under way.
pub(crate) fn pending(path: &Path, trees: &Trees) -> Result<Option<u64>, StoreError> {
    let Some(v) = trees
        .meta
        .get(keys::META_MIGRATING)
        .map_err(StoreError::sled_at(path, "read meta"))?
    else {
        return Ok(None);
    };
    keys::decode_seq_key(&v)
        .map(Some)
        .map_err(|d| corrupt(path, keys::TREE_META, keys::META_MIGRATING, d))
}

#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Migrated {
    pub batches: u64,
    pub ids: u64,
    pub chunks: usize,
    /// False when stopped early by `max_chunks` (tests).
    pub finished: bool,
}

/// Migrate from batch `from` on, `max_records` digests per chunk; stop after
/// `max_chunks` chunks if given (to test resuming).
pub(crate) fn run(
    path: &Path,
    db: &sled::Db,
    trees: &Trees,
    from: u64,
    max_records: usize,
    max_chunks: Option<usize>,
) -> Result<Migrated, StoreError> {
    let started = Instant::now();
    let (state, closed) = read_log_meta(path, trees, &DIGESTS)?;
    let (mut log, _) =
        DigestLog::open(path, &DIGESTS, state, closed, None, 0).map_err(io_err(path))?;
    let (state, closed) = read_log_meta(path, trees, &KEYS)?;
    let (mut keys_log, _) =
        DigestLog::open(path, &KEYS, state, closed, None, 0).map_err(io_err(path))?;
    let mut done = Migrated::default();
    let mut next = from;
    loop {
        if max_chunks.is_some_and(|m| done.chunks >= m) {
            return Ok(done);
        }
        let mut staging = Staging::default();
        let (mut first_seq, mut last_seq, mut ids, mut batches) = (None, 0, 0usize, 0usize);
        for item in trees.id_batches.range(keys::seq_key(next)..) {
            let (k, v) = item.map_err(StoreError::sled_at(path, "read id_batches"))?;
            let seq = keys::decode_seq_key(&k)
                .map_err(|d| corrupt(path, keys::TREE_ID_BATCHES, &k, d))?;
            if !batch::is_v1(&v) {
                return Err(corrupt(
                    path,
                    keys::TREE_ID_BATCHES,
                    &k,
                    "a schema-2 batch after the migration point".into(),
                ));
            }
            let view = batch::decode_batch_v1(seq, &v)
                .map_err(|d| corrupt(path, keys::TREE_ID_BATCHES, &k, d))?;
            // Schema 1 kept keys in `id_keys` (lz4); they move to the key log.
            let ks = match trees
                .id_keys
                .get(&k)
                .map_err(StoreError::sled_at(path, "read id_keys"))?
            {
                Some(kv) => {
                    batch::decode_keys(&kv).map_err(|d| corrupt(path, keys::TREE_ID_KEYS, &k, d))?
                }
                // Lost before the upgrade: dedupe keeps working on the
                // digests; `ids lookup`/`export` report the keys missing.
                None => {
                    tracing::warn!(path = %path.display(), seq,
                        "schema-1 batch has no keys in id_keys; migrating its digests without them");
                    Vec::new()
                }
            };
            if !ks.is_empty() && ks.len() != view.info.count as usize {
                return Err(corrupt(
                    path,
                    keys::TREE_ID_KEYS,
                    &k,
                    format!("{} keys for {} digests", ks.len(), view.info.count),
                ));
            }
            ids += view.info.count as usize;
            staging.push(view.info.clone(), view.digests(), &ks);
            first_seq.get_or_insert(seq);
            last_seq = seq;
            batches += 1;
            if ids >= max_records || batches >= CHUNK_BATCHES {
                break;
            }
        }
        let Some(first_seq) = first_seq else {
            break;
        };
        let appended = staging
            .append(&log, &keys_log, first_seq, last_seq + 1, true)
            .map_err(io_err(path))?;
        let moved: Vec<sled::IVec> = appended.headers.iter().map(|(k, _)| k.clone()).collect();
        (&trees.id_batches, &trees.id_keys, &trees.meta)
            .transaction(|(id_batches, id_keys, meta)| {
                for (k, v) in &appended.headers {
                    id_batches.insert(k.clone(), v.clone())?;
                }
                for k in &moved {
                    id_keys.remove(k.clone())?;
                }
                for (k, v) in &appended.meta {
                    meta.insert(&k[..], &v[..])?;
                }
                meta.insert(keys::META_MIGRATING, &keys::seq_key(last_seq + 1)[..])?;
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(source) => StoreError::Sled {
                    path: path.to_path_buf(),
                    op: "migration transaction",
                    source,
                },
                TransactionError::Abort(()) => StoreError::Failed {
                    path: path.to_path_buf(),
                },
            })?;
        db.flush().map_err(StoreError::sled_at(path, "flush"))?;
        appended.apply(&mut log, &mut keys_log);
        done.batches += batches as u64;
        done.ids += ids as u64;
        done.chunks += 1;
        next = last_seq + 1;
    }
    trees
        .meta
        .remove(keys::META_MIGRATING)
        .map_err(StoreError::sled_at(path, "write meta"))?;
    db.flush().map_err(StoreError::sled_at(path, "flush"))?;
    done.finished = true;
    tracing::info!(
        path = %path.display(),
        batches = done.batches,
        ids = done.ids,
        secs = started.elapsed().as_secs_f64(),
        "store migrated to schema 2"
    );
    Ok(done)
}
