//! Open-time work on the digest log: load the index from it, check the part
//! not known to be synced against the batch headers, and mend from the
//! stored keys whatever is missing or wrong (after a power loss, or a
//! segment file lost or damaged on disk). The keys are the source of truth:
//! a record is `digest(route, key)`, and the header's checksum says whether
//! what is in the log (or what the keys give) is what was committed.

use std::collections::BTreeMap;
use std::path::Path;

use super::api::{Trees, corrupt, digest};
use super::batch::{self, Header};
use super::digest_log::{
    self, Closed, DIGESTS, DigestLog, KEYS, LogKind, LogState, RECORD, checksum,
    decode_segment_entry, pack, unpack,
};
use super::error::StoreError;
use super::index::DigestIndex;
use super::key_codec;
use super::keys::{self, Counters};
use super::snapshot::{self, Covers, LastBatch};

/// Digests inserted into the index per ordered bulk step (16 MB of scratch;
/// larger chunks order the inserts better but cost more memory).
const REBUILD_CHUNK: usize = 1 << 20;

pub(crate) struct Loaded {
    pub index: DigestIndex,
    pub log: DigestLog,
    pub keys: DigestLog,
    /// Records recomputed from keys.
    pub repaired: u64,
    /// Whether the index snapshot was used, and what it covers if so.
    pub snapshot: SnapshotUse,
    /// Records read from the digest log into the index (all of them
    /// without a snapshot; those after its prefix with one).
    pub fed: u64,
}

/// What became of the index snapshot at open (for the open log line).
#[derive(Debug)]
pub(crate) enum SnapshotUse {
    Missing,
    Rejected,
    Used(Covers),
}

impl SnapshotUse {
    pub fn label(&self) -> &'static str {
        match self {
            SnapshotUse::Missing => "none",
            SnapshotUse::Rejected => "rejected",
            SnapshotUse::Used(_) => "used",
        }
    }
}

/// Collects digests and inserts them into the index a chunk at a time;
/// records before `from` (those the snapshot holds) are skipped.
struct Feeder {
    index: DigestIndex,
    chunk: Vec<u128>,
    scratch: Vec<u128>,
    from: u64,
    fed: u64,
}

impl Feeder {
    /// `records` start at record number `first`.
    fn feed(&mut self, first: u64, records: &[u8]) {
        let skip = self
            .from
            .saturating_sub(first)
            .min((records.len() / RECORD) as u64) as usize;
        let records = &records[skip * RECORD..];
        self.fed += (records.len() / RECORD) as u64;
        for rec in records.chunks_exact(RECORD) {
            self.chunk.push(unpack(rec));
            if self.chunk.len() >= REBUILD_CHUNK {
                self.index.extend_bulk(&self.chunk, &mut self.scratch);
                self.chunk.clear();
            }
        }
    }

    fn finish(mut self) -> DigestIndex {
        self.index.extend_bulk(&self.chunk, &mut self.scratch);
        self.index
    }
}

pub(crate) fn io_err(
    path: &Path,
) -> impl FnOnce((&'static str, std::io::Error)) -> StoreError + use<> {
    let path = path.to_path_buf();
    move |(op, source)| StoreError::Io { path, op, source }
}

/// The log's recorded state and its closed segments.
pub(crate) fn read_log_meta(
    path: &Path,
    trees: &Trees,
    kind: &LogKind,
) -> Result<(LogState, BTreeMap<u64, Closed>), StoreError> {
    let state = match trees
        .meta
        .get(kind.state_key)
        .map_err(StoreError::sled_at(path, "read meta"))?
    {
        Some(v) => digest_log::decode_state(&v)
            .map_err(|d| corrupt(path, keys::TREE_META, kind.state_key, d))?,
        None => {
            return Err(corrupt(
                path,
                keys::TREE_META,
                kind.state_key,
                "missing in a schema-2 store".into(),
            ));
        }
    };
    let mut closed = BTreeMap::new();
    for item in trees.meta.scan_prefix(kind.segment_prefix) {
        let (k, v) = item.map_err(StoreError::sled_at(path, "read meta"))?;
        let (first, c) = decode_segment_entry(kind, &k, &v)
            .map_err(|d| corrupt(path, keys::TREE_META, &k, d))?;
        closed.insert(first, c);
    }
    Ok((state, closed))
}

fn header(path: &Path, k: &[u8], v: &[u8]) -> Result<Header, StoreError> {
    let seq = keys::decode_seq_key(k).map_err(|d| corrupt(path, keys::TREE_ID_BATCHES, k, d))?;
    batch::decode_header(seq, v).map_err(|d| corrupt(path, keys::TREE_ID_BATCHES, k, d))
}

/// A batch's keys from the key log, checked against the header (None if
/// the batch has none recorded: lost before its store was migrated).
pub(crate) fn keys_of(
    path: &Path,
    keys_log: &DigestLog,
    h: &Header,
) -> Result<Option<Vec<String>>, StoreError> {
    if h.key_len == 0 && h.info.count > 0 {
        return Ok(None);
    }
    let bad = |detail: String| {
        corrupt(
            path,
            keys::TREE_ID_BATCHES,
            &keys::seq_key(h.info.seq),
            detail,
        )
    };
    let bytes = keys_log
        .read(h.key_first, h.key_len as u64)
        .map_err(io_err(path))?;
    if bytes.len() != h.key_len as usize || checksum(&bytes) != h.key_checksum {
        return Err(bad(format!(
            "its keys in the key log (bytes {}..{}) are missing or fail their checksum",
            h.key_first,
            h.key_first + h.key_len as u64
        )));
    }
    let ks = key_codec::decode(&bytes).map_err(bad)?;
    if ks.len() != h.info.count as usize {
        return Err(corrupt(
            path,
            keys::TREE_ID_BATCHES,
            &keys::seq_key(h.info.seq),
            format!("{} keys for {} digests", ks.len(), h.info.count),
        ));
    }
    Ok(Some(ks))
}

/// A batch's records computed from its stored keys, checked against the
/// header's checksum.
pub(crate) fn records_from_keys(
    path: &Path,
    keys_log: &DigestLog,
    h: &Header,
) -> Result<Vec<u8>, StoreError> {
    let k = keys::seq_key(h.info.seq);
    let ks = keys_of(path, keys_log, h)?.ok_or_else(|| {
        corrupt(
            path,
            keys::TREE_ID_BATCHES,
            &k,
            "the batch's digests are lost from the digest log and its keys are missing too".into(),
        )
    })?;
    let mut records = Vec::with_capacity(ks.len() * RECORD);
    for key in &ks {
        pack(digest(&h.info.route, key), &mut records);
    }
    if checksum(&records) != h.checksum {
        return Err(corrupt(
            path,
            keys::TREE_ID_BATCHES,
            &k,
            format!(
                "its {} keys do not give the {} digests the batch header records",
                ks.len(),
                h.info.count
            ),
        ));
    }
    Ok(records)
}

/// Load the index from the snapshot where it holds a prefix of the log,
/// and from the digest log for the rest; check and mend the log.
pub(crate) fn load(
    path: &Path,
    db: &sled::Db,
    trees: &Trees,
    counters: Counters,
    created_at_ms: i64,
) -> Result<Loaded, StoreError> {
    load_with(path, db, trees, counters, created_at_ms, true)
}

fn load_with(
    path: &Path,
    db: &sled::Db,
    trees: &Trees,
    counters: Counters,
    created_at_ms: i64,
    use_snapshot: bool,
) -> Result<Loaded, StoreError> {
    let (key_state, key_closed) = read_log_meta(path, trees, &KEYS)?;
    let (keys_log, key_damage) =
        DigestLog::open(path, &KEYS, key_state, key_closed, None, 0).map_err(io_err(path))?;
    if !key_damage.ranges.is_empty() {
        tracing::warn!(path = %path.display(), ranges = ?key_damage.ranges,
            "key log segments are missing or short: lookups and exports of those batches will fail");
    }
    let (state, closed) = read_log_meta(path, trees, &DIGESTS)?;
    let (index, snapshot) = if use_snapshot {
        load_snapshot(path, trees, &state, created_at_ms)
    } else {
        (None, SnapshotUse::Rejected)
    };
    // What the snapshot holds, checked against the log once it is mended.
    let held = index.as_ref().map(|i| (i.len() as u64, i.fingerprint()));
    let (index, from, expected) = match (index, &snapshot) {
        (Some(index), SnapshotUse::Used(c)) => (index, c.end, state.end - c.end),
        _ => {
            let expected = (state.end - state.start).max(counters.digest_count);
            (DigestIndex::with_expected(expected as usize), 0, expected)
        }
    };
    let expected = expected as usize;
    let mut feeder = Feeder {
        index,
        chunk: Vec::with_capacity(REBUILD_CHUNK.min(expected)),
        scratch: Vec::new(),
        from,
        fed: 0,
    };
    let mut feed = |first: u64, r: &[u8]| feeder.feed(first, r);
    let (mut log, damage) =
        DigestLog::open(path, &DIGESTS, state, closed.clone(), Some(&mut feed), from)
            .map_err(io_err(path))?;
    let mut repaired = 0u64;

    // The part not known to be synced: check each batch against its header.
    for item in trees.id_batches.range(keys::seq_key(state.synced_seq)..) {
        let (k, v) = item.map_err(StoreError::sled_at(path, "read id_batches"))?;
        let h = header(path, &k, &v)?;
        if h.records().end <= state.start || h.info.count == 0 {
            continue;
        }
        let mut records = log
            .read(h.first_record, h.info.count as u64)
            .map_err(io_err(path))?;
        if records.len() != h.info.count as usize * RECORD || checksum(&records) != h.checksum {
            records = records_from_keys(path, &keys_log, &h)?;
            log.rewrite(h.first_record, &records)
                .map_err(io_err(path))?;
            repaired += h.info.count as u64;
        }
        feeder.feed(h.first_record, &records);
    }

    // Synced segments that are missing or fail their CRC: every batch in them.
    let mut touched_closed = Vec::new();
    if !damage.ranges.is_empty() {
        tracing::warn!(path = %path.display(), ranges = ?damage.ranges,
            "digest log segments missing or failing their checksum; recomputing them from the stored keys");
        let damaged = |r: u64| damage.ranges.iter().any(|(a, b)| *a <= r && r < *b);
        for item in trees.id_batches.range(..keys::seq_key(state.synced_seq)) {
            let (k, v) = item.map_err(StoreError::sled_at(path, "read id_batches"))?;
            let h = header(path, &k, &v)?;
            if h.info.count == 0 || !damaged(h.first_record) {
                continue;
            }
            let records = records_from_keys(path, &keys_log, &h)?;
            log.rewrite(h.first_record, &records)
                .map_err(io_err(path))?;
            repaired += h.info.count as u64;
            feeder.feed(h.first_record, &records);
        }
        for (first, c) in &closed {
            if damage
                .ranges
                .iter()
                .any(|(a, b)| *a < first + c.records && first < b)
            {
                touched_closed.push(*first);
            }
        }
    }

    if repaired > 0 || state.synced < state.end || !touched_closed.is_empty() {
        let new_state = log.resynced(counters.next_seq).map_err(io_err(path))?;
        let mut b = sled::Batch::default();
        b.insert(keys::META_DIGEST_LOG, digest_log::encode_state(&new_state));
        let mut new_closed = Vec::new();
        for first in touched_closed {
            if let Some(c) = log.closed_crc(first).map_err(io_err(path))? {
                b.insert(
                    digest_log::segment_key(&DIGESTS, first),
                    &digest_log::encode_segment(&c)[..],
                );
                new_closed.push((first, c));
            }
        }
        trees
            .meta
            .apply_batch(b)
            .map_err(StoreError::sled_at(path, "write meta"))?;
        db.flush().map_err(StoreError::sled_at(path, "flush"))?;
        log.set_state(new_state);
        for (first, c) in new_closed {
            log.set_closed(first, c);
        }
    }
    if repaired > 0 {
        tracing::warn!(path = %path.display(), records = repaired,
            "digest log mended from the stored keys");
    }
    if let (SnapshotUse::Used(c), Some(held)) = (&snapshot, held) {
        // The header names the prefix by its ends and last batch only; the
        // records before that batch are checked here, against the log.
        if prefix_fingerprint(path, trees, &log, c)? != Some(held) {
            let file = snapshot::path(path);
            tracing::warn!(file = %file.display(),
                "index snapshot does not hold the digests of the log prefix its header names; removing it and rebuilding the index from the digest log");
            if let Err(e) = snapshot::remove(path) {
                tracing::warn!(file = %file.display(), error = %e,
                    "could not remove the rejected index snapshot");
            }
            drop((log, keys_log, feeder));
            return load_with(path, db, trees, counters, created_at_ms, false);
        }
    }
    let fed = feeder.fed;
    Ok(Loaded {
        index: feeder.finish(),
        log,
        keys: keys_log,
        repaired,
        snapshot,
        fed,
    })
}

/// The index snapshot, if there is one that still holds exactly a prefix of
/// this store's digest log (`snapshot.rs` says why these checks suffice).
/// A snapshot that does not is logged and removed.
fn load_snapshot(
    path: &Path,
    trees: &Trees,
    state: &LogState,
    created_at_ms: i64,
) -> (Option<DigestIndex>, SnapshotUse) {
    let mut stale = false;
    let check = |c: &Covers| {
        stale = true;
        if c.created_at_ms != created_at_ms {
            return Err(format!(
                "it was taken from another store (created at {}, this one at {created_at_ms})",
                c.created_at_ms
            ));
        }
        if c.start != state.start {
            return Err(format!(
                "the store was pruned since (the digest log starts at record {}, the snapshot at {})",
                state.start, c.start
            ));
        }
        if c.end > state.end {
            return Err(format!(
                "it covers records up to {} but the digest log ends at {}",
                c.end, state.end
            ));
        }
        let last = covered_batch(path, trees, c.last.seq)?;
        let want = c.last;
        if last.first_record != want.first_record
            || last.count != want.count
            || last.checksum != want.checksum
        {
            return Err(format!(
                "batch {} is not the one it was taken after (now {last:?}, then {want:?})",
                want.seq
            ));
        }
        stale = false;
        Ok(())
    };
    match snapshot::read(path, check) {
        snapshot::Outcome::Missing => (None, SnapshotUse::Missing),
        snapshot::Outcome::Loaded(index, covers) => (Some(index), SnapshotUse::Used(covers)),
        snapshot::Outcome::Rejected(why) => {
            let file = snapshot::path(path);
            // Not left for the next close to overwrite: a store restored
            // from a backup can commit its way back to the header's end and
            // last batch with other IDs before it (then a crash, no close),
            // and the header would match while the index does not.
            if let Err(e) = snapshot::remove(path) {
                tracing::warn!(file = %file.display(), error = %e,
                    "could not remove the rejected index snapshot");
            }
            if stale {
                tracing::info!(file = %file.display(), reason = %why,
                    "index snapshot out of date; rebuilding the index from the digest log");
            } else {
                tracing::warn!(file = %file.display(), reason = %why,
                    "index snapshot unusable; rebuilding the index from the digest log");
            }
            (None, SnapshotUse::Rejected)
        }
    }
}

/// The number and `index::fingerprint_of` sum of the digest log's records
/// in the prefix `c` covers (None if the log is short there).
fn prefix_fingerprint(
    path: &Path,
    trees: &Trees,
    log: &DigestLog,
    c: &Covers,
) -> Result<Option<(u64, u128)>, StoreError> {
    let (mut count, mut sum) = (0u64, 0u128);
    let mut records = Vec::new();
    for item in trees.id_batches.iter() {
        let (k, v) = item.map_err(StoreError::sled_at(path, "read id_batches"))?;
        let h = header(path, &k, &v)?;
        if h.first_record >= c.end {
            break;
        }
        if h.info.count == 0 || h.records().end <= c.start {
            continue;
        }
        log.read_into(h.first_record, h.info.count as u64, &mut records)
            .map_err(io_err(path))?;
        if records.len() != h.info.count as usize * RECORD {
            return Ok(None);
        }
        let (recs, _) = records.as_chunks::<RECORD>();
        for rec in recs {
            sum = sum.wrapping_add(super::index::record_fingerprint(rec));
        }
        count += h.info.count as u64;
    }
    Ok(Some((count, sum)))
}

/// The batch header a snapshot names, as it now is.
fn covered_batch(path: &Path, trees: &Trees, seq: u64) -> Result<LastBatch, String> {
    let k = keys::seq_key(seq);
    let v = trees
        .id_batches
        .get(k)
        .map_err(|e| format!("reading batch {seq} failed: {e}"))?
        .ok_or_else(|| format!("batch {seq}, the last it covers, is gone"))?;
    let h = header(path, &k, &v).map_err(|e| e.to_string())?;
    Ok(last_batch(&h))
}

/// How a snapshot names a batch: where its records are and their checksum.
fn last_batch(h: &Header) -> LastBatch {
    LastBatch {
        seq: h.info.seq,
        first_record: h.first_record,
        count: h.info.count,
        checksum: h.checksum,
    }
}

/// What a snapshot of the store's current index covers: its whole live
/// log, named by the last batch with records (None: nothing to cover).
pub(crate) fn current_covers(
    path: &Path,
    trees: &Trees,
    state: &LogState,
    created_at_ms: i64,
) -> Result<Option<Covers>, StoreError> {
    if state.end == state.start {
        return Ok(None);
    }
    for item in trees.id_batches.iter().rev() {
        let (k, v) = item.map_err(StoreError::sled_at(path, "read id_batches"))?;
        let h = header(path, &k, &v)?;
        if h.info.count == 0 {
            continue;
        }
        if h.records().end != state.end {
            return Err(corrupt(
                path,
                keys::TREE_ID_BATCHES,
                &k,
                format!(
                    "the last batch's records end at {}, the digest log at {}",
                    h.records().end,
                    state.end
                ),
            ));
        }
        return Ok(Some(Covers {
            created_at_ms,
            start: state.start,
            end: state.end,
            last: last_batch(&h),
        }));
    }
    Ok(None)
}
