//! `Store`: open (lock, schema, migration, index load), group commit,
//! offsets, lookup, prune, dead letters, close (index snapshot).

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{IVec, Transactional};

use super::batch::{self, BatchInfo, Header};
use super::changelog::{self, ChangelogMark, ChangelogRestore, ChangelogWrite};
use super::dead_letter::{self, DeadLetter};
use super::digest_log::{self, DigestLog, RECORD, pack, unpack};
use super::error::StoreError;
use super::index::{DigestIndex, DigestSet};
use super::keys::{self, Counters, OffsetEntry};
use super::lock::{self, DirLock};
use super::rebuild::{self, io_err};
use super::snapshot::{self, Covers};
use super::staging::{Appended, Staging};
use super::{migrate, schema};

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub path: PathBuf,
    /// sled page cache size; set explicitly (sled's default is 1 GiB).
    pub cache_capacity_bytes: u64,
}

impl StoreConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StoreConfig {
            path: path.into(),
            cache_capacity_bytes: 64 << 20,
        }
    }
}

/// The dedupe digest of a key: xxh3-128 over `route`, a 0 byte, `dedupe_key`.
/// Scope is per route, so two routes never suppress each other's records.
pub fn digest(route: &str, dedupe_key: &str) -> u128 {
    let n = route.len() + 1 + dedupe_key.len();
    let mut stack = [0u8; 256];
    let mut heap;
    let buf: &mut [u8] = if n <= stack.len() {
        &mut stack[..n]
    } else {
        heap = vec![0u8; n];
        &mut heap
    };
    buf[..route.len()].copy_from_slice(route.as_bytes());
    buf[route.len()] = 0;
    buf[route.len() + 1..].copy_from_slice(dedupe_key.as_bytes());
    xxhash_rust::xxh3::xxh3_128(buf)
}

/// Everything one partition resolved since its last commit.
#[derive(Debug, Clone, Default)]
pub struct CommitBatch {
    pub route: String,
    pub topic: String,
    pub partition: i32,
    pub first_offset: i64,
    /// The partition's new committed offset (first unresolved offset).
    pub next_offset: i64,
    /// Dedupe keys of the delivered records, aligned with `digests`.
    pub keys: Vec<String>,
    /// `digest(route, key)` for each key.
    pub digests: Vec<u128>,
    pub dead_letters: Vec<DeadLetter>,
    /// Set when the keys were produced to the route's changelog topic just
    /// before this commit: where they went (the position moves with it).
    pub changelog: Option<ChangelogWrite>,
}

/// What one `dlq replay` resolved, for `Store::commit_replay`.
#[derive(Debug, Clone, Default)]
pub struct ReplayCommit {
    /// Keys delivered by the replay, one batch per (route, topic, partition);
    /// the offset range only records where the records came from.
    pub delivered: Vec<CommitBatch>,
    /// Dead letters resolved (delivered, or duplicates of committed keys).
    pub remove: Vec<u64>,
    /// Dead letters that failed again, rewritten under their own sequence.
    pub update: Vec<(u64, DeadLetter)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitStats {
    pub batches: usize,
    /// Digests written (after dropping ones already committed).
    pub ids_written: usize,
    /// Digests already in the index (or repeated within this commit): not stored twice,
    /// so each digest lives in exactly one batch and prune stays exact.
    pub duplicates_skipped: usize,
    pub dead_letters: usize,
    /// Value bytes handed to sled.
    pub bytes_written: usize,
    /// Wall time of writing (and syncing) the digest and key logs, of the
    /// transaction and of the flush.
    pub log_time: Duration,
    pub txn_time: Duration,
    pub flush_time: Duration,
}

/// Where a committed dedupe key was recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdLocation {
    pub seq: u64,
    pub route: String,
    pub topic: String,
    pub partition: i32,
    /// The committed batch covered offsets `first_offset..next_offset`.
    pub first_offset: i64,
    pub next_offset: i64,
    pub committed_at_ms: i64,
    /// Position of the key within the batch.
    pub position: u32,
    /// The stored original key (None if the batch's keys are missing).
    pub key: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneStats {
    pub batches: usize,
    pub ids: usize,
    pub cutoff_ms: i64,
}

pub(super) struct Trees {
    pub meta: sled::Tree,
    pub offsets: sled::Tree,
    pub id_batches: sled::Tree,
    pub id_keys: sled::Tree,
    pub dead_letters: sled::Tree,
    pub changelog_positions: sled::Tree,
}

/// What writers (commit, set_offset, prune) advance, behind one lock.
struct Writer {
    counters: Counters,
    /// The digest log and the key log. Boxed: keeps `Store` small enough
    /// to pass around by value.
    log: Box<DigestLog>,
    keys: Box<DigestLog>,
    /// What the index snapshot on disk covers, if it is known to be usable
    /// (boxed like the logs).
    snapshot: Option<Box<Covers>>,
}

pub struct Store {
    path: PathBuf,
    db: sled::Db,
    trees: Trees,
    index: RwLock<DigestIndex>,
    /// Serialises writers (commit, set_offset, prune) and holds the
    /// sequence/digest counters and the digest log they advance. parking_lot's:
    /// a prune hands it to a waiting commit between its chunks (fair unlock).
    writer: Mutex<Writer>,
    /// Set when a flush failed: after a failed fsync nothing later is trustworthy.
    failed: AtomicBool,
    created_at_ms: i64,
    rebuild_time: Duration,
    /// Digest records recomputed from keys at open (see `rebuild.rs`).
    mended_at_open: u64,
    /// Whether the open loaded the index snapshot (`snapshot.rs`).
    opened_from_snapshot: bool,
    // Declared last so it is dropped after sled has closed its files.
    _lock: DirLock,
}

/// A batch's digests and keys minus those already committed.
type Fresh<'a> = (Cow<'a, [u128]>, Cow<'a, [String]>);

/// Batches (at most) whose prune runs in one transaction + flush, bounding
/// how long the writer and index locks are held at a time...
pub(super) const PRUNE_CHUNK: usize = 128;
/// ... and IDs: a chunk ends at the batch that reaches this many (~60 ms
/// of prune on a loaded 2-core box), whatever the batches' sizes.
const PRUNE_CHUNK_IDS: u64 = 1 << 18;

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("ids", &self.id_count())
            .finish_non_exhaustive()
    }
}

impl Store {
    pub fn open(cfg: &StoreConfig) -> Result<Store, StoreError> {
        let path = cfg.path.clone();
        let state = schema::prepare_dir(&path)?;
        let dir_lock = DirLock::acquire(&path)?;
        let db = open_sled(&path, cfg.cache_capacity_bytes)?;
        let meta = schema::check_or_init(&path, &db, state)?;
        super::perms::restrict(&path)?;
        let p = &path;
        let sled_err = |op: &'static str| {
            move |source| StoreError::Sled {
                path: p.clone(),
                op,
                source,
            }
        };
        let tree = |name: &str| db.open_tree(name).map_err(sled_err("open tree"));
        let trees = Trees {
            meta: tree(keys::TREE_META)?,
            offsets: tree(keys::TREE_OFFSETS)?,
            id_batches: tree(keys::TREE_ID_BATCHES)?,
            id_keys: tree(keys::TREE_ID_KEYS)?,
            dead_letters: tree(keys::TREE_DEAD_LETTERS)?,
            changelog_positions: tree(changelog::TREE_CHANGELOG)?,
        };

        if meta.version == 1 {
            migrate::begin(&path, &db, &trees)?;
        }
        if let Some(from) = migrate::pending(&path, &trees)? {
            migrate::run(&path, &db, &trees, from, migrate::CHUNK_RECORDS, None)?;
        }

        let started = Instant::now();
        let mut next_seq = meta.counters.next_seq;
        for (tree, name) in [
            (&trees.id_batches, keys::TREE_ID_BATCHES),
            (&trees.dead_letters, keys::TREE_DEAD_LETTERS),
        ] {
            if let Some((k, _)) = tree.last().map_err(sled_err("read last sequence"))? {
                let seq = keys::decode_seq_key(&k).map_err(|d| corrupt(&path, name, &k, d))?;
                next_seq = next_seq.max(seq + 1);
            }
        }
        let loaded = rebuild::load(
            &path,
            &db,
            &trees,
            Counters {
                next_seq,
                ..meta.counters
            },
            meta.created_at_ms,
        )?;
        let log_state = loaded.log.state();
        let index = loaded.index;
        let rebuild_time = started.elapsed();
        // rebuild_ms: the whole index load, from the snapshot (`snapshot =
        // "used"`, then `from_log` is the records after its prefix) or from
        // the digest log alone.
        tracing::info!(
            path = %path.display(),
            ids = index.len(),
            index_mb = index.heap_bytes() >> 20,
            rebuild_ms = rebuild_time.as_millis() as u64,
            snapshot = loaded.snapshot.label(),
            from_log = loaded.fed,
            mended = loaded.repaired,
            "opened tally store"
        );
        let snapshot = match loaded.snapshot {
            rebuild::SnapshotUse::Used(c) => Some(Box::new(c)),
            _ => None,
        };
        let opened_from_snapshot = snapshot.is_some();
        Ok(Store {
            path,
            db,
            trees,
            index: RwLock::new(index),
            writer: Mutex::new(Writer {
                counters: Counters {
                    next_seq,
                    digest_count: log_state.end - log_state.start,
                },
                log: Box::new(loaded.log),
                keys: Box::new(loaded.keys),
                snapshot,
            }),
            failed: AtomicBool::new(false),
            created_at_ms: meta.created_at_ms,
            rebuild_time,
            mended_at_open: loaded.repaired,
            opened_from_snapshot,
            _lock: dir_lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version recorded in the store's `meta` tree.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        let v = self
            .trees
            .meta
            .get(keys::META_SCHEMA_VERSION)
            .map_err(self.sled_err("read meta"))?;
        let bytes: Option<[u8; 4]> = v.as_ref().and_then(|v| v.as_ref().try_into().ok());
        bytes.map(u32::from_be_bytes).ok_or_else(|| {
            corrupt(
                &self.path,
                keys::TREE_META,
                keys::META_SCHEMA_VERSION,
                "schema_version missing or not 4 bytes".into(),
            )
        })
    }

    pub fn created_at_ms(&self) -> i64 {
        self.created_at_ms
    }

    /// How long loading the digest index took at open (from the snapshot
    /// and the log after it, or from the whole log).
    pub fn rebuild_time(&self) -> Duration {
        self.rebuild_time
    }

    /// Digest records the open had to recompute from the stored keys
    /// (lost or damaged in the digest log; normally 0).
    pub fn mended_at_open(&self) -> u64 {
        self.mended_at_open
    }

    /// Whether the open loaded the index from its snapshot (otherwise it
    /// was rebuilt from the digest log alone).
    pub fn opened_from_snapshot(&self) -> bool {
        self.opened_from_snapshot
    }

    /// Bytes held by the in-memory digest index.
    pub fn index_bytes(&self) -> usize {
        self.read_index().heap_bytes()
    }

    /// Has this digest been committed (exact on all 128 bits)?
    pub fn contains(&self, digest: u128) -> bool {
        self.read_index().contains(digest)
    }

    /// `contains` for each of `digests`, in order, under one read lock and
    /// with the index's prefetching: a round's lookups are random probes of
    /// a table of many MB, each a cache miss when made one at a time.
    pub fn contains_each(&self, digests: &[u128]) -> Vec<bool> {
        self.read_index().contains_each(digests)
    }

    /// Number of distinct digests in the index.
    pub fn id_count(&self) -> usize {
        self.read_index().len()
    }

    /// Commit resolved work for one or more partitions: offsets, digests,
    /// keys and dead letters in ONE sled transaction, then ONE flush; only
    /// then are the digests added to the index (never mark before durable).
    /// The digests go to the digest log first (see `digest_log.rs`); the
    /// transaction records the log's new end, so it is the commit point for
    /// both. Refuses the whole commit if any offset would move backwards.
    pub fn commit(&self, batches: &[CommitBatch]) -> Result<CommitStats, StoreError> {
        for b in batches {
            validate(b)?;
        }
        let mut w = self.lock_writer()?;
        let mut stats = CommitStats {
            batches: batches.len(),
            ..CommitStats::default()
        };

        let (filtered, skipped) = self.fresh(batches);
        stats.duplicates_skipped = skipped;

        // Encode everything up front: the transaction closure may be retried.
        struct Prepared<'a> {
            b: &'a CommitBatch,
            offset_key: IVec,
            dls: Vec<(IVec, IVec)>,
        }
        let now = super::now_ms();
        let mut next = w.counters;
        let mut staging = Staging::default();
        let mut prepared = Vec::with_capacity(batches.len());
        for (b, (ds, ks)) in batches.iter().zip(&filtered) {
            if !ds.is_empty() {
                stage_id_batch(b, ds, ks, now, &mut next, &mut staging, &mut stats);
            }
            let dls = b
                .dead_letters
                .iter()
                .map(|d| {
                    let seq = next.next_seq;
                    next.next_seq += 1;
                    let v = dead_letter::encode_dead_letter(d);
                    stats.bytes_written += v.len();
                    (IVec::from(&keys::seq_key(seq)[..]), IVec::from(v))
                })
                .collect();
            stats.dead_letters += b.dead_letters.len();
            prepared.push(Prepared {
                b,
                offset_key: IVec::from(keys::offset_key(&b.topic, b.partition)),
                dls,
            });
        }
        stats.bytes_written += staging.bytes();
        let log_started = Instant::now();
        let appended = self.append_logs(&w, &staging, w.counters.next_seq, next.next_seq)?;
        stats.log_time = log_started.elapsed();

        let t = &self.trees;
        let txn_started = Instant::now();
        let result = (
            &t.offsets,
            &t.id_batches,
            &t.dead_letters,
            &t.meta,
            &t.changelog_positions,
        )
            .transaction(|(offsets, id_batches, dead_letters, meta, positions)| {
                for (k, v) in &appended.headers {
                    id_batches.insert(k.clone(), v.clone())?;
                }
                for p in &prepared {
                    // Reads see this transaction's own writes, so two batches
                    // for one partition in one commit are checked in order.
                    if let Some(old) = offsets.get(&p.offset_key)? {
                        let old = keys::decode_offset_value(&old).map_err(|d| {
                            ConflictableTransactionError::Abort(corrupt(
                                &self.path,
                                keys::TREE_OFFSETS,
                                &p.offset_key,
                                d,
                            ))
                        })?;
                        if p.b.next_offset < old.next_offset {
                            return Err(ConflictableTransactionError::Abort(
                                StoreError::OffsetRegression {
                                    topic: p.b.topic.clone(),
                                    partition: p.b.partition,
                                    committed: old.next_offset,
                                    attempted: p.b.next_offset,
                                },
                            ));
                        }
                    }
                    let entry = OffsetEntry {
                        next_offset: p.b.next_offset,
                        updated_at_ms: now,
                    };
                    offsets.insert(p.offset_key.clone(), &keys::encode_offset_value(&entry)[..])?;
                    for (k, v) in &p.dls {
                        dead_letters.insert(k.clone(), v.clone())?;
                    }
                    if let Some(mark) = &p.b.changelog {
                        let old = self.txn_mark(positions, &p.offset_key)?;
                        if let Some(m) = changelog::after_commit(old, mark) {
                            positions.insert(p.offset_key.clone(), changelog::encode_mark(&m))?;
                        }
                    }
                }
                meta.insert(keys::META_COUNTERS, &keys::encode_counters(&next)[..])?;
                for (k, v) in &appended.meta {
                    meta.insert(&k[..], &v[..])?;
                }
                Ok(())
            });
        match result {
            Ok(()) => {}
            Err(TransactionError::Abort(e)) => return Err(e),
            Err(TransactionError::Storage(source)) => {
                return Err(StoreError::Sled {
                    path: self.path.clone(),
                    op: "commit transaction",
                    source,
                });
            }
        }
        // The transaction is applied in memory: its sequence numbers and log
        // records are used (a failed flush below fails the whole store).
        w.counters = next;
        let w = &mut *w;
        appended.apply(&mut w.log, &mut w.keys);
        stats.txn_time = txn_started.elapsed();

        let flush_started = Instant::now();
        self.flush_locked()?;
        stats.flush_time = flush_started.elapsed();

        let mut index = self.write_index();
        for (ds, _) in &filtered {
            index.insert_all(ds);
        }
        Ok(stats)
    }

    /// Write a commit's staged digests and keys to the logs. A failure here
    /// fails the store, like a failed flush: what reached the disk is unknown.
    fn append_logs(
        &self,
        w: &Writer,
        staging: &Staging,
        first_seq: u64,
        next_seq: u64,
    ) -> Result<Appended, StoreError> {
        staging
            .append(&w.log, &w.keys, first_seq, next_seq, false)
            .map_err(|e| self.fail(io_err(&self.path)(e)))
    }

    /// Mark the store failed (refusing further writes) and pass `e` on.
    fn fail(&self, e: StoreError) -> StoreError {
        self.failed.store(true, Ordering::SeqCst);
        tracing::error!(path = %self.path.display(), error = %e, "store write failed; refusing further writes");
        e
    }

    /// Each batch's digests and keys minus those already committed (or
    /// repeated within these batches), and how many were dropped.
    fn fresh<'a>(&self, batches: &'a [CommitBatch]) -> (Vec<Fresh<'a>>, usize) {
        let mut skipped = 0;
        let mut filtered: Vec<Fresh<'_>> = Vec::with_capacity(batches.len());
        let index = self.read_index();
        let mut in_commit = DigestSet::with_expected(batches.iter().map(|b| b.digests.len()).sum());
        for b in batches {
            let fresh: Vec<bool> = index
                .contains_each(&b.digests)
                .into_iter()
                .zip(&b.digests)
                .map(|(stored, d)| !stored && in_commit.insert(*d))
                .collect();
            if fresh.iter().all(|f| *f) {
                filtered.push((Cow::Borrowed(&b.digests[..]), Cow::Borrowed(&b.keys[..])));
            } else {
                let pick = |i: &usize| fresh[*i];
                let ds = (0..b.digests.len())
                    .filter(pick)
                    .map(|i| b.digests[i])
                    .collect();
                let ks = (0..b.keys.len())
                    .filter(pick)
                    .map(|i| b.keys[i].clone())
                    .collect();
                skipped += b.digests.len() - fresh.iter().filter(|f| **f).count();
                filtered.push((Cow::Owned(ds), Cow::Owned(ks)));
            }
        }
        (filtered, skipped)
    }

    /// Commit a `dlq replay`: the keys it delivered, the dead letters it
    /// resolved (removed) and those still failing (rewritten), in ONE sled
    /// transaction and one flush — so a replayed record is never both
    /// delivered-and-recorded and still a dead letter, and never lost from
    /// both. Partition offsets are not touched (a replay never moves them).
    pub fn commit_replay(&self, replay: &ReplayCommit) -> Result<CommitStats, StoreError> {
        for b in &replay.delivered {
            validate(b)?;
            if !b.dead_letters.is_empty() {
                return Err(StoreError::InvalidBatch {
                    topic: b.topic.clone(),
                    partition: b.partition,
                    detail: "a replay commit carries dead letters in `update`, not in batches"
                        .into(),
                });
            }
        }
        let mut w = self.lock_writer()?;
        let (filtered, skipped) = self.fresh(&replay.delivered);
        let mut stats = CommitStats {
            batches: replay.delivered.len(),
            duplicates_skipped: skipped,
            ..CommitStats::default()
        };
        let now = super::now_ms();
        let mut next = w.counters;
        let mut staging = Staging::default();
        for (b, (ds, ks)) in replay.delivered.iter().zip(&filtered) {
            if !ds.is_empty() {
                stage_id_batch(b, ds, ks, now, &mut next, &mut staging, &mut stats);
            }
        }
        // Still-failing letters keep their sequence: ids stay stable across replays.
        let updates: Vec<(IVec, IVec)> = replay
            .update
            .iter()
            .map(|(seq, d)| {
                let v = dead_letter::encode_dead_letter(d);
                stats.bytes_written += v.len();
                (IVec::from(&keys::seq_key(*seq)[..]), IVec::from(v))
            })
            .collect();
        stats.dead_letters = updates.len();
        stats.bytes_written += staging.bytes();
        let log_started = Instant::now();
        let appended = self.append_logs(&w, &staging, w.counters.next_seq, next.next_seq)?;
        stats.log_time = log_started.elapsed();

        let t = &self.trees;
        let txn_started = Instant::now();
        (&t.id_batches, &t.dead_letters, &t.meta)
            .transaction(|(id_batches, dead_letters, meta)| {
                for (k, v) in &appended.headers {
                    id_batches.insert(k.clone(), v.clone())?;
                }
                for seq in &replay.remove {
                    dead_letters.remove(&keys::seq_key(*seq)[..])?;
                }
                for (k, v) in &updates {
                    dead_letters.insert(k.clone(), v.clone())?;
                }
                meta.insert(keys::META_COUNTERS, &keys::encode_counters(&next)[..])?;
                for (k, v) in &appended.meta {
                    meta.insert(&k[..], &v[..])?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(source) => StoreError::Sled {
                    path: self.path.clone(),
                    op: "replay transaction",
                    source,
                },
                TransactionError::Abort(()) => StoreError::Failed {
                    path: self.path.clone(),
                },
            })?;
        w.counters = next;
        let w = &mut *w;
        appended.apply(&mut w.log, &mut w.keys);
        stats.txn_time = txn_started.elapsed();
        let flush_started = Instant::now();
        self.flush_locked()?;
        stats.flush_time = flush_started.elapsed();
        // Durable first, then visible to dedupe lookups.
        let mut index = self.write_index();
        for (ds, _) in &filtered {
            index.insert_all(ds);
        }
        Ok(stats)
    }

    pub fn offset(&self, topic: &str, partition: i32) -> Result<Option<OffsetEntry>, StoreError> {
        check_topic(topic, partition)?;
        let k = keys::offset_key(topic, partition);
        match self
            .trees
            .offsets
            .get(&k)
            .map_err(self.sled_err("read offsets"))?
        {
            None => Ok(None),
            Some(v) => keys::decode_offset_value(&v)
                .map(Some)
                .map_err(|d| corrupt(&self.path, keys::TREE_OFFSETS, &k, d)),
        }
    }

    /// All committed offsets, ordered by topic (length, then bytes) and partition.
    pub fn offsets(&self) -> Result<Vec<(String, i32, OffsetEntry)>, StoreError> {
        let mut out = Vec::new();
        for item in self.trees.offsets.iter() {
            let (k, v) = item.map_err(self.sled_err("read offsets"))?;
            let (topic, partition) = keys::decode_offset_key(&k)
                .map_err(|d| corrupt(&self.path, keys::TREE_OFFSETS, &k, d))?;
            let e = keys::decode_offset_value(&v)
                .map_err(|d| corrupt(&self.path, keys::TREE_OFFSETS, &k, d))?;
            out.push((topic, partition, e));
        }
        Ok(out)
    }

    /// Explicit offset reset (reset-offsets): may move backwards; flushed before returning.
    pub fn set_offset(
        &self,
        topic: &str,
        partition: i32,
        next_offset: i64,
    ) -> Result<(), StoreError> {
        check_topic(topic, partition)?;
        let _w = self.lock_writer()?;
        let entry = OffsetEntry {
            next_offset,
            updated_at_ms: super::now_ms(),
        };
        self.trees
            .offsets
            .insert(
                keys::offset_key(topic, partition),
                &keys::encode_offset_value(&entry)[..],
            )
            .map_err(self.sled_err("write offsets"))?;
        self.flush_locked()?;
        tracing::info!(topic, partition, next_offset, "offset set explicitly");
        Ok(())
    }

    /// Which committed batch recorded `key` for `route`, if any.
    pub fn lookup(&self, route: &str, key: &str) -> Result<Option<IdLocation>, StoreError> {
        let d = digest(route, key);
        if !self.contains(d) {
            return Ok(None);
        }
        let mut want = Vec::with_capacity(RECORD);
        pack(d, &mut want);
        // Admin path: scan batches newest first (recent keys are the usual question).
        for item in self.trees.id_batches.iter().rev() {
            let (k, v) = item.map_err(self.sled_err("read id_batches"))?;
            let h = self.header(&k, &v)?;
            let records = {
                let w = self.lock_writer_even_failed();
                w.log
                    .read(h.first_record, h.info.count as u64)
                    .map_err(io_err(&self.path))?
            };
            let Some(position) = records.chunks_exact(RECORD).position(|r| r == want) else {
                continue;
            };
            let key = self
                .batch_keys(h.info.seq)?
                .and_then(|ks| ks.into_iter().nth(position));
            let i = h.info;
            return Ok(Some(IdLocation {
                seq: i.seq,
                route: i.route,
                topic: i.topic,
                partition: i.partition,
                first_offset: i.first_offset,
                next_offset: i.next_offset,
                committed_at_ms: i.committed_at_ms,
                position: position as u32,
                key,
            }));
        }
        Ok(None)
    }

    /// Headers of all retained batches, oldest first (for `ids count/export`).
    pub fn batches(&self) -> Result<Vec<BatchInfo>, StoreError> {
        let mut out = Vec::new();
        for item in self.trees.id_batches.iter() {
            let (k, v) = item.map_err(self.sled_err("read id_batches"))?;
            out.push(self.header(&k, &v)?.info);
        }
        Ok(out)
    }

    fn header(&self, k: &[u8], v: &[u8]) -> Result<Header, StoreError> {
        let seq = keys::decode_seq_key(k)
            .map_err(|e| corrupt(&self.path, keys::TREE_ID_BATCHES, k, e))?;
        batch::decode_header(seq, v).map_err(|e| corrupt(&self.path, keys::TREE_ID_BATCHES, k, e))
    }

    /// The original dedupe keys of batch `seq`, in commit order (None if
    /// there is no such batch, or its keys were lost before a migration).
    pub fn batch_keys(&self, seq: u64) -> Result<Option<Vec<String>>, StoreError> {
        let k = keys::seq_key(seq);
        let Some(v) = self
            .trees
            .id_batches
            .get(k)
            .map_err(self.sled_err("read id_batches"))?
        else {
            return Ok(None);
        };
        let h = self.header(&k, &v)?;
        let w = self.lock_writer_even_failed();
        rebuild::keys_of(&self.path, &w.keys, &h)
    }

    /// Drop whole batches committed more than `age` ago (and their keys),
    /// then forget their digests. Stops at the first batch young enough to keep.
    pub fn prune_older_than(&self, age: Duration) -> Result<PruneStats, StoreError> {
        self.prune_older_than_with(age, |_| {})
    }

    /// `prune_older_than`, calling `progress` after each durable chunk
    /// (for a progress line on a terminal).
    pub fn prune_older_than_with(
        &self,
        age: Duration,
        mut progress: impl FnMut(&PruneStats),
    ) -> Result<PruneStats, StoreError> {
        let cutoff_ms =
            super::now_ms().saturating_sub(age.as_millis().min(i64::MAX as u128) as i64);
        let mut stats = PruneStats {
            cutoff_ms,
            ..PruneStats::default()
        };
        let mut w = self.lock_writer()?;
        let mut start = 0u64;
        loop {
            let mut chunk: Vec<Header> = Vec::new();
            let mut chunk_ids = 0u64;
            let mut reached_young = false;
            for item in self.trees.id_batches.range(keys::seq_key(start)..) {
                let (k, v) = item.map_err(self.sled_err("read id_batches"))?;
                let h = self.header(&k, &v)?;
                if h.info.committed_at_ms >= cutoff_ms {
                    reached_young = true;
                    break;
                }
                chunk_ids += h.info.count as u64;
                chunk.push(h);
                if chunk.len() == PRUNE_CHUNK || chunk_ids >= PRUNE_CHUNK_IDS {
                    break;
                }
            }
            let Some(last) = chunk.last() else {
                break;
            };
            let last_seq = last.info.seq;
            // The pruned batches' digests, to forget once the prune is durable.
            let mut digests = Vec::new();
            for h in &chunk {
                let records = w
                    .log
                    .read(h.first_record, h.info.count as u64)
                    .map_err(io_err(&self.path))?;
                if records.len() != h.info.count as usize * RECORD {
                    return Err(corrupt(
                        &self.path,
                        keys::TREE_ID_BATCHES,
                        &keys::seq_key(h.info.seq),
                        "its digests are missing from the digest log".into(),
                    ));
                }
                digests.extend(records.chunks_exact(RECORD).map(unpack));
            }
            let ids = digests.len() as u64;
            let mut next = w.counters;
            next.digest_count = next.digest_count.saturating_sub(ids);
            // Batches are pruned oldest first, so the live records stay one
            // range: it now starts after the last pruned batch.
            let log_state = digest_log::LogState {
                start: last.records().end.max(w.log.state().start),
                ..w.log.state()
            };
            let dropped_segments = w.log.closed_before(log_state.start);
            let key_state = digest_log::LogState {
                start: last.key_bytes().end.max(w.keys.state().start),
                ..w.keys.state()
            };
            let dropped_key_segments = w.keys.closed_before(key_state.start);
            let t = &self.trees;
            (&t.id_batches, &t.meta)
                .transaction(|(id_batches, meta)| {
                    for h in &chunk {
                        id_batches.remove(&keys::seq_key(h.info.seq)[..])?;
                    }
                    meta.insert(keys::META_COUNTERS, &keys::encode_counters(&next)[..])?;
                    meta.insert(keys::META_DIGEST_LOG, digest_log::encode_state(&log_state))?;
                    meta.insert(keys::META_KEY_LOG, digest_log::encode_state(&key_state))?;
                    for first in &dropped_segments {
                        meta.remove(digest_log::segment_key(&digest_log::DIGESTS, *first))?;
                    }
                    for first in &dropped_key_segments {
                        meta.remove(digest_log::segment_key(&digest_log::KEYS, *first))?;
                    }
                    Ok::<(), ConflictableTransactionError<()>>(())
                })
                .map_err(|e| match e {
                    TransactionError::Storage(source) => StoreError::Sled {
                        path: self.path.clone(),
                        op: "prune transaction",
                        source,
                    },
                    TransactionError::Abort(()) => StoreError::Failed {
                        path: self.path.clone(),
                    },
                })?;
            w.counters = next;
            w.log.set_state(log_state);
            w.keys.set_state(key_state);
            self.flush_locked()?;
            // Durable first, then forget: a crash in between only keeps
            // digests (and segment files, removed at the next open) longer.
            // The index forgets before the files go, so a failed file
            // removal cannot leave the running index holding pruned IDs.
            let mut index = self.write_index();
            for d in &digests {
                index.remove(*d);
            }
            drop(index);
            w.log
                .remove_segments(&dropped_segments)
                .map_err(io_err(&self.path))?;
            w.keys
                .remove_segments(&dropped_key_segments)
                .map_err(io_err(&self.path))?;
            stats.batches += chunk.len();
            stats.ids += ids as usize;
            start = last_seq + 1;
            if reached_young {
                progress(&stats);
                break;
            }
            // Between chunks the lock goes to a waiting writer first: a prune
            // of millions of IDs delays a commit by one chunk, not by all of
            // them (measured: 9M IDs held commits 2.1-2.4 s; BENCHMARKS.md).
            // Each chunk reads the store afresh, so what a commit changed in
            // between is seen; its batches are younger and come later.
            MutexGuard::unlocked_fair(&mut w, || progress(&stats));
            if self.failed.load(Ordering::SeqCst) {
                return Err(StoreError::Failed {
                    path: self.path.clone(),
                });
            }
        }
        if stats.batches > 0 {
            tracing::info!(
                batches = stats.batches,
                ids = stats.ids,
                cutoff_ms,
                "pruned tracking-ID batches"
            );
        }
        Ok(stats)
    }

    /// All dead letters, oldest first, with their sequence numbers.
    pub fn dead_letters(&self) -> Result<Vec<(u64, DeadLetter)>, StoreError> {
        let mut out = Vec::new();
        for item in self.trees.dead_letters.iter() {
            let (k, v) = item.map_err(self.sled_err("read dead_letters"))?;
            let seq = keys::decode_seq_key(&k)
                .map_err(|e| corrupt(&self.path, keys::TREE_DEAD_LETTERS, &k, e))?;
            let d = dead_letter::decode_dead_letter(&v)
                .map_err(|e| corrupt(&self.path, keys::TREE_DEAD_LETTERS, &k, e))?;
            out.push((seq, d));
        }
        Ok(out)
    }

    pub fn dead_letter(&self, seq: u64) -> Result<Option<DeadLetter>, StoreError> {
        let k = keys::seq_key(seq);
        match self
            .trees
            .dead_letters
            .get(k)
            .map_err(self.sled_err("read dead_letters"))?
        {
            None => Ok(None),
            Some(v) => dead_letter::decode_dead_letter(&v)
                .map(Some)
                .map_err(|e| corrupt(&self.path, keys::TREE_DEAD_LETTERS, &k, e)),
        }
    }

    /// Remove dead letters by sequence (dlq purge / after replay); returns how many existed.
    pub fn remove_dead_letters(&self, seqs: &[u64]) -> Result<usize, StoreError> {
        let _w = self.lock_writer()?;
        let mut b = sled::Batch::default();
        let mut n = 0;
        for seq in seqs {
            let k = keys::seq_key(*seq);
            if self
                .trees
                .dead_letters
                .contains_key(k)
                .map_err(self.sled_err("read dead_letters"))?
            {
                n += 1;
            }
            b.remove(&k[..]);
        }
        self.trees
            .dead_letters
            .apply_batch(b)
            .map_err(self.sled_err("remove dead letters"))?;
        self.flush_locked()?;
        Ok(n)
    }

    /// Dead letters kept (counts entries: O(n), for scrapes and `stats`).
    pub fn dead_letter_count(&self) -> usize {
        self.trees.dead_letters.len()
    }

    /// True after a failed flush: the store refuses writes until restart.
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// sled's files plus the digest and key logs'.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        let sled = self
            .db
            .size_on_disk()
            .map_err(self.sled_err("size_on_disk"))?;
        let w = self.lock_writer_even_failed();
        Ok(sled + w.log.bytes_on_disk() + w.keys.bytes_on_disk())
    }

    /// Make everything committed durable, including the digest log (whose
    /// synced end is recorded, so the next open checks nothing).
    pub fn flush(&self) -> Result<(), StoreError> {
        let mut w = self.lock_writer()?;
        let state = w.log.state();
        if state.synced < state.end {
            let next_seq = w.counters.next_seq;
            let synced = w
                .log
                .sync_all(next_seq)
                .map_err(|e| self.fail(io_err(&self.path)(e)))?;
            self.trees
                .meta
                .insert(keys::META_DIGEST_LOG, digest_log::encode_state(&synced))
                .map_err(self.sled_err("write meta"))?;
            w.log.set_state(synced);
        }
        self.flush_locked()
    }

    /// A clean close: `flush`, then write the index snapshot (unless the
    /// one on disk already covers the whole log), so the next open loads
    /// the index instead of rebuilding it. A snapshot that cannot be
    /// written is logged, not an error: the next open rebuilds.
    pub fn close(&self) -> Result<(), StoreError> {
        self.flush()?;
        let mut w = self.lock_writer()?;
        self.write_snapshot_locked(&mut w)
    }

    fn write_snapshot_locked(&self, w: &mut Writer) -> Result<(), StoreError> {
        let state = w.log.state();
        let Some(covers) =
            rebuild::current_covers(&self.path, &self.trees, &state, self.created_at_ms)?
        else {
            // Nothing to cover: an old snapshot would only be rejected.
            if let Err(e) = snapshot::remove(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "could not remove the index snapshot");
            }
            w.snapshot = None;
            return Ok(());
        };
        if w.snapshot.as_deref() == Some(&covers) {
            return Ok(());
        }
        let started = Instant::now();
        // Under the writer lock: no commit or prune changes the index
        // while it is written, so it holds exactly the digests `covers` names.
        let index = self.read_index();
        match snapshot::write(&self.path, &covers, &index) {
            Ok(bytes) => {
                tracing::info!(path = %self.path.display(), ids = index.len(), bytes,
                    write_ms = started.elapsed().as_millis() as u64, "wrote index snapshot");
                w.snapshot = Some(Box::new(covers));
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e,
                    "could not write the index snapshot; the next open rebuilds the index from the digest log");
            }
        }
        Ok(())
    }

    fn flush_locked(&self) -> Result<(), StoreError> {
        if let Err(source) = self.db.flush() {
            self.failed.store(true, Ordering::SeqCst);
            tracing::error!(path = %self.path.display(), error = %source, "store flush failed; refusing further writes");
            return Err(StoreError::Sled {
                path: self.path.clone(),
                op: "flush",
                source,
            });
        }
        Ok(())
    }

    fn lock_writer(&self) -> Result<MutexGuard<'_, Writer>, StoreError> {
        if self.failed.load(Ordering::SeqCst) {
            return Err(StoreError::Failed {
                path: self.path.clone(),
            });
        }
        Ok(self.lock_writer_even_failed())
    }

    /// The writer lock for reading the log (lookups work on a failed store).
    fn lock_writer_even_failed(&self) -> MutexGuard<'_, Writer> {
        // Not poisoned by a panic (parking_lot): counters and log state are
        // only replaced wholesale after a successful transaction, so what a
        // panicking holder left is consistent.
        self.writer.lock()
    }

    fn read_index(&self) -> std::sync::RwLockReadGuard<'_, DigestIndex> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_index(&self) -> std::sync::RwLockWriteGuard<'_, DigestIndex> {
        self.index.write().unwrap_or_else(|e| e.into_inner())
    }

    fn sled_err(&self, op: &'static str) -> impl FnOnce(sled::Error) -> StoreError + '_ {
        move |source| StoreError::Sled {
            path: self.path.clone(),
            op,
            source,
        }
    }
}

/// Changelog positions and restores (see `store::changelog`).
impl Store {
    /// How far the changelog of `topic`/`partition` is applied here, if a
    /// restore ever established it.
    pub fn changelog_position(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Option<ChangelogMark>, StoreError> {
        check_topic(topic, partition)?;
        let k = keys::offset_key(topic, partition);
        match self
            .trees
            .changelog_positions
            .get(&k)
            .map_err(self.sled_err("read changelog_positions"))?
        {
            None => Ok(None),
            Some(v) => changelog::decode_mark(&v)
                .map(Some)
                .map_err(|d| corrupt(&self.path, changelog::TREE_CHANGELOG, &k, d)),
        }
    }

    /// Apply one restore step in ONE transaction + flush: the IDs (minus
    /// those already here, so applying a record twice is harmless), the
    /// partition's offset moved forward to what the records prove delivered,
    /// and the new changelog position. Then the IDs join the index.
    pub fn restore_changelog(&self, r: &ChangelogRestore) -> Result<CommitStats, StoreError> {
        check_topic(&r.topic, r.partition)?;
        check_topic(&r.mark.topic, r.partition)?;
        if r.batches.len() != r.committed_at_ms.len() {
            return Err(StoreError::InvalidBatch {
                topic: r.topic.clone(),
                partition: r.partition,
                detail: format!(
                    "{} restored batches but {} commit times",
                    r.batches.len(),
                    r.committed_at_ms.len()
                ),
            });
        }
        for b in &r.batches {
            validate(b)?;
            if b.topic != r.topic || b.partition != r.partition || b.route != r.route {
                return Err(StoreError::InvalidBatch {
                    topic: b.topic.clone(),
                    partition: b.partition,
                    detail: format!(
                        "restored batch of route {} does not belong to {}/{} of route {}",
                        b.route, r.topic, r.partition, r.route
                    ),
                });
            }
        }
        let mut w = self.lock_writer()?;
        let (filtered, skipped) = self.fresh(&r.batches);
        let mut stats = CommitStats {
            batches: r.batches.len(),
            duplicates_skipped: skipped,
            ..CommitStats::default()
        };
        // Restored IDs take the same way as committed ones: staged into the
        // digest and key logs, recorded by the one transaction below.
        let mut next = w.counters;
        let mut staging = Staging::default();
        for ((b, (ds, ks)), at) in r.batches.iter().zip(&filtered).zip(&r.committed_at_ms) {
            if !ds.is_empty() {
                stage_id_batch(b, ds, ks, *at, &mut next, &mut staging, &mut stats);
            }
        }
        stats.bytes_written += staging.bytes();
        let log_started = Instant::now();
        let appended = self.append_logs(&w, &staging, w.counters.next_seq, next.next_seq)?;
        stats.log_time = log_started.elapsed();
        let key = IVec::from(keys::offset_key(&r.topic, r.partition));
        let now = super::now_ms();
        let t = &self.trees;
        let txn_started = Instant::now();
        let result = (&t.offsets, &t.id_batches, &t.meta, &t.changelog_positions).transaction(
            |(offsets, id_batches, meta, positions)| {
                for (k, v) in &appended.headers {
                    id_batches.insert(k.clone(), v.clone())?;
                }
                if let Some(offset) = r.next_offset {
                    let old = match offsets.get(&key)? {
                        Some(v) => Some(keys::decode_offset_value(&v).map_err(|d| {
                            ConflictableTransactionError::Abort(corrupt(
                                &self.path,
                                keys::TREE_OFFSETS,
                                &key,
                                d,
                            ))
                        })?),
                        None => None,
                    };
                    // Forward only: what the changelog proves delivered never
                    // undoes a later local commit (or a reset-offsets).
                    if old.is_none_or(|o| o.next_offset < offset) {
                        let entry = OffsetEntry {
                            next_offset: offset,
                            updated_at_ms: now,
                        };
                        offsets.insert(key.clone(), &keys::encode_offset_value(&entry)[..])?;
                    }
                }
                positions.insert(key.clone(), changelog::encode_mark(&r.mark))?;
                meta.insert(keys::META_COUNTERS, &keys::encode_counters(&next)[..])?;
                for (k, v) in &appended.meta {
                    meta.insert(&k[..], &v[..])?;
                }
                Ok(())
            },
        );
        match result {
            Ok(()) => {}
            Err(TransactionError::Abort(e)) => return Err(e),
            Err(TransactionError::Storage(source)) => {
                return Err(StoreError::Sled {
                    path: self.path.clone(),
                    op: "changelog restore transaction",
                    source,
                });
            }
        }
        w.counters = next;
        let w = &mut *w;
        appended.apply(&mut w.log, &mut w.keys);
        stats.txn_time = txn_started.elapsed();
        let flush_started = Instant::now();
        self.flush_locked()?;
        stats.flush_time = flush_started.elapsed();
        let mut index = self.write_index();
        for (ds, _) in &filtered {
            index.insert_all(ds);
        }
        Ok(stats)
    }

    /// A changelog position read inside a transaction.
    fn txn_mark(
        &self,
        positions: &sled::transaction::TransactionalTree,
        key: &IVec,
    ) -> Result<Option<ChangelogMark>, ConflictableTransactionError<StoreError>> {
        match positions.get(key)? {
            None => Ok(None),
            Some(v) => changelog::decode_mark(&v).map(Some).map_err(|d| {
                ConflictableTransactionError::Abort(corrupt(
                    &self.path,
                    changelog::TREE_CHANGELOG,
                    key,
                    d,
                ))
            }),
        }
    }
}

pub(super) fn corrupt(path: &Path, tree: &'static str, key: &[u8], detail: String) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        tree,
        key: keys::show_key(key),
        detail,
    }
}

/// Stage one committed batch of fresh digests and keys under the next
/// sequence number.
fn stage_id_batch(
    b: &CommitBatch,
    digests: &[u128],
    keys_: &[String],
    now: i64,
    next: &mut Counters,
    staging: &mut Staging,
    stats: &mut CommitStats,
) {
    let seq = next.next_seq;
    next.next_seq += 1;
    next.digest_count += digests.len() as u64;
    let info = BatchInfo {
        seq,
        route: b.route.clone(),
        topic: b.topic.clone(),
        partition: b.partition,
        first_offset: b.first_offset,
        next_offset: b.next_offset,
        committed_at_ms: now,
        count: digests.len() as u32,
    };
    staging.push(info, digests.iter().copied(), keys_);
    stats.ids_written += digests.len();
}

/// Open sled. We already hold the directory lock, so no other tally owns the
/// store; a conflict on sled's own lock can only be a store this process just
/// dropped, whose background threads release sled's lock a moment later.
/// Retry briefly before calling it locked.
fn open_sled(path: &Path, cache_capacity_bytes: u64) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let opened = sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity_bytes)
            .mode(sled::Mode::HighThroughput)
            // Durability comes from our flush per commit, not a timer.
            .flush_every_ms(None)
            .open();
        match opened.map_err(|e| map_open_error(path, e)) {
            Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// sled's own lock (on its `db` file) reports as a generic I/O error; make it
/// the same `Locked` error ours gives.
fn map_open_error(path: &Path, e: sled::Error) -> StoreError {
    if let sled::Error::Io(io) = &e
        && (io.kind() == std::io::ErrorKind::WouldBlock
            || io.to_string().contains("could not acquire lock"))
    {
        return StoreError::Locked {
            path: path.to_path_buf(),
            pid: lock::recorded_pid(path),
        };
    }
    StoreError::Open {
        path: path.to_path_buf(),
        source: e,
    }
}

fn check_topic(topic: &str, partition: i32) -> Result<(), StoreError> {
    if topic.is_empty() || topic.len() > u16::MAX as usize {
        return Err(StoreError::InvalidBatch {
            topic: topic.chars().take(64).collect(),
            partition,
            detail: format!("topic length {} is outside 1..=65535", topic.len()),
        });
    }
    Ok(())
}

fn validate(b: &CommitBatch) -> Result<(), StoreError> {
    check_topic(&b.topic, b.partition)?;
    let invalid = |detail: String| StoreError::InvalidBatch {
        topic: b.topic.clone(),
        partition: b.partition,
        detail,
    };
    if b.route.len() > u16::MAX as usize {
        return Err(invalid(format!(
            "route name is {} bytes, max 65535",
            b.route.len()
        )));
    }
    if b.keys.len() != b.digests.len() {
        return Err(invalid(format!(
            "{} keys but {} digests",
            b.keys.len(),
            b.digests.len()
        )));
    }
    if b.digests.len() > u32::MAX as usize {
        return Err(invalid("more than 2^32 ids in one batch".into()));
    }
    if b.first_offset > b.next_offset {
        return Err(invalid(format!(
            "first_offset {} is after next_offset {}",
            b.first_offset, b.next_offset
        )));
    }
    // The caller computes digests for its dedupe lookups; a mismatch would make
    // lookup/export lie. Checked in debug builds only (cost ~15 ns per key).
    if cfg!(debug_assertions)
        && let Some(i) = (0..b.keys.len()).find(|&i| digest(&b.route, &b.keys[i]) != b.digests[i])
    {
        return Err(invalid(format!(
            "digest {i} is not digest(route, keys[{i}])"
        )));
    }
    Ok(())
}
