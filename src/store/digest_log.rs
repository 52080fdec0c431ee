//! The digest log: the stored bits of every committed ID's digest, appended
//! in commit order to segment files under `<store>/digests/`, so that the
//! index is rebuilt at open by reading files front to back — not by
//! iterating sled, which took 1.5–1.9 s and left ~157 MB of sled state behind
//! at 10M IDs.
//!
//! sled stays the commit point. A commit writes its records to the log
//! *before* the sled transaction that records the log's new end (`LogState`,
//! in `meta`) together with the offsets, keys and batch headers; anything
//! past the recorded end is an unfinished commit, ignored and cut off at
//! open. The records need no fsync of their own on the commit path: a killed
//! process leaves them in the page cache, and after a power loss the part not
//! known to be synced (`synced..end`) is checked against each batch header's
//! checksum and, where it differs, recomputed from the batch's stored keys
//! (`digest(route, key)`). The log is synced when a segment fills, about
//! once a second under load, and on a clean close; the synced part is
//! checked at open against per-segment CRC32C sums.
//!
//! A record is 13 bytes: the digest's top byte, bits 64..96, bits 0..64 —
//! the 104 bits the index compares (see `index.rs`); bits 96..120 are not
//! kept. Pruning only ever drops the oldest batches, so the live records are
//! always one range `start..end`; a segment file is deleted once all of it
//! lies below `start`.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::codec::{DecodeResult, Reader, Writer};

/// Bytes per stored digest.
pub(crate) const RECORD: usize = 13;
/// The digest log's directory inside the store.
pub(crate) const DIR: &str = "digests";

/// What tells one segmented log from another: the digest log (13-byte
/// records, read whole at open) and the key log (bytes: each batch's
/// encoded keys, read only on demand; `key_log` below).
#[derive(Debug)]
pub(crate) struct LogKind {
    pub dir: &'static str,
    pub suffix: &'static str,
    /// Bytes per record; positions and counts are in records.
    pub record: usize,
    /// Records per segment before the next commit starts a new file. A
    /// batch never spans two segments, so a file may run a batch over this.
    pub segment_records: u64,
    /// `meta` key of the log's `LogState`, and prefix of its closed segments.
    pub state_key: &'static [u8],
    pub segment_prefix: &'static [u8],
}

/// 13 MB segments (tests rotate, prune and mend with a few hundred IDs).
pub(crate) const DIGESTS: LogKind = LogKind {
    dir: DIR,
    suffix: ".dig",
    record: RECORD,
    segment_records: if cfg!(test) { 64 } else { 1 << 20 },
    state_key: super::keys::META_DIGEST_LOG,
    segment_prefix: b"digest_segment/",
};

/// The key log: 64 MB segments of encoded key batches (`key_codec.rs`).
pub(crate) const KEYS: LogKind = LogKind {
    dir: "keys",
    suffix: ".keys",
    record: 1,
    segment_records: if cfg!(test) { 2048 } else { 64 << 20 },
    state_key: super::keys::META_KEY_LOG,
    segment_prefix: b"key_segment/",
};
/// Sync the log before a commit when this many records are unsynced...
const SYNC_RECORDS: u64 = 1 << 20;
/// ...or when the last sync is this old.
const SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// Records read per step at open.
const READ_RECORDS: usize = 1 << 16;

/// The bits of a digest the log (and the index) keep.
#[cfg(test)]
pub(crate) const KEPT_BITS: u128 = !(((1u128 << 24) - 1) << 96);

pub(crate) fn pack(d: u128, out: &mut Vec<u8>) {
    out.push((d >> 120) as u8);
    out.extend_from_slice(&((d >> 64) as u32).to_be_bytes());
    out.extend_from_slice(&(d as u64).to_be_bytes());
}

/// `rec` must be `RECORD` bytes (callers slice with `chunks_exact`).
pub(crate) fn unpack(rec: &[u8]) -> u128 {
    let mut high = [0u8; 4];
    high.copy_from_slice(&rec[1..5]);
    let mut low = [0u8; 8];
    low.copy_from_slice(&rec[5..13]);
    ((rec[0] as u128) << 120)
        | ((u32::from_be_bytes(high) as u128) << 64)
        | u64::from_be_bytes(low) as u128
}

/// A batch's records as stored, for its header's checksum.
pub(crate) fn checksum(records: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(records)
}

/// Where the log stands, as recorded in `meta` by every commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LogState {
    /// First live record (everything before it was pruned).
    pub start: u64,
    /// One past the last committed record.
    pub end: u64,
    /// Every record before this one was fsynced before this state was written.
    pub synced: u64,
    /// Batches from this sequence on may hold records at or past `synced`.
    pub synced_seq: u64,
    /// First record of the segment being appended to.
    pub active: u64,
    /// CRC32C of the active segment's records `active..synced`.
    pub active_crc: u32,
}

const STATE_VERSION: u8 = 1;

pub(crate) fn encode_state(s: &LogState) -> Vec<u8> {
    let mut w = Writer::with_capacity(45);
    w.u8(STATE_VERSION);
    for v in [s.start, s.end, s.synced, s.synced_seq, s.active] {
        w.buf.extend_from_slice(&v.to_be_bytes());
    }
    w.u32(s.active_crc);
    w.buf
}

pub(crate) fn decode_state(v: &[u8]) -> DecodeResult<LogState> {
    let mut r = Reader::new(v);
    let version = r.u8("version")?;
    if version != STATE_VERSION {
        return Err(format!("unknown digest log state version {version}"));
    }
    let s = LogState {
        start: r.u64("start")?,
        end: r.u64("end")?,
        synced: r.u64("synced")?,
        synced_seq: r.u64("synced_seq")?,
        active: r.u64("active")?,
        active_crc: r.u32("active_crc")?,
    };
    r.finish("digest log state")?;
    if !(s.active <= s.end && s.start <= s.end && s.synced <= s.end && s.active <= s.synced) {
        return Err(format!("inconsistent digest log state {s:?}"));
    }
    Ok(s)
}

/// A full segment: its record count and CRC32C (meta key `segment_key(first)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed {
    pub records: u64,
    pub crc: u32,
}

pub(crate) fn segment_key(kind: &LogKind, first: u64) -> Vec<u8> {
    let mut k = kind.segment_prefix.to_vec();
    k.extend_from_slice(&first.to_be_bytes());
    k
}

pub(crate) fn decode_segment_entry(
    kind: &LogKind,
    k: &[u8],
    v: &[u8],
) -> DecodeResult<(u64, Closed)> {
    let first = k
        .strip_prefix(kind.segment_prefix)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or("bad digest segment key")?;
    let mut r = Reader::new(v);
    let closed = Closed {
        records: r.u64("records")?,
        crc: r.u32("crc")?,
    };
    r.finish("log segment")?;
    Ok((first, closed))
}

pub(crate) fn encode_segment(c: &Closed) -> [u8; 12] {
    let mut v = [0u8; 12];
    v[..8].copy_from_slice(&c.records.to_be_bytes());
    v[8..].copy_from_slice(&c.crc.to_be_bytes());
    v
}

/// Problems found at open that the keys in sled can mend.
#[derive(Debug, Default)]
pub(crate) struct Damage {
    /// Record ranges of the synced part that are missing or fail their CRC.
    pub ranges: Vec<(u64, u64)>,
}

/// Log I/O failures; the store wraps them with its path.
pub(crate) type IoResult<T> = Result<T, (&'static str, std::io::Error)>;

fn at<T>(op: &'static str, r: std::io::Result<T>) -> IoResult<T> {
    r.map_err(|e| (op, e))
}

/// A commit's records, written but not yet part of the recorded state.
pub(crate) struct Pending {
    /// Record number of the first record written.
    pub first: u64,
    /// The state to record in the commit's transaction.
    pub state: LogState,
    /// A segment closed by this commit, to record too.
    pub closed: Option<(u64, Closed)>,
    new_active: Option<File>,
    active_crc_end: u32,
    synced_now: bool,
}

/// Receives the verified records of the digest log at open.
/// Arguments: the number of the first record, the records.
pub(crate) type Loader<'a> = dyn FnMut(u64, &[u8]) + 'a;

pub(crate) struct DigestLog {
    kind: &'static LogKind,
    dir: PathBuf,
    state: LogState,
    /// Full segments still (partly) live: first record -> (count, crc).
    closed: BTreeMap<u64, Closed>,
    active: File,
    /// CRC32C of the active segment's records `active..end`.
    active_crc_end: u32,
    last_sync: Instant,
}

fn segment_name(kind: &LogKind, first: u64) -> String {
    format!("{first:020}{}", kind.suffix)
}

fn open_rw(path: &Path, create: bool) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .mode(0o600)
        .open(path)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Read up to `buf.len()` bytes at `offset`; fewer only at the end of the file.
fn read_at_most(f: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

impl DigestLog {
    /// Open the log `state` describes. With `load`, feed every live record
    /// from `feed_from` up to `state.synced` whose segment passes its CRC to
    /// it, in order, with the number of the first record fed (every live
    /// segment's CRC is checked, fed or not);
    /// segments that are missing or fail are reported in `Damage`, not fed;
    /// records past `synced` are not fed (the caller checks them against the
    /// batch headers, `read`). Without `load` (the key log, read on demand
    /// and checked per batch) segments are only checked to exist and be
    /// long enough. Files the state does not name are deleted and the
    /// active file is cut back to `end`.
    pub fn open(
        store: &Path,
        kind: &'static LogKind,
        state: LogState,
        closed: BTreeMap<u64, Closed>,
        mut load: Option<&mut Loader<'_>>,
        feed_from: u64,
    ) -> IoResult<(DigestLog, Damage)> {
        let record = kind.record;
        let dir = store.join(kind.dir);
        at(
            "create store log directory",
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir),
        )?;
        let mut damage = Damage::default();
        let mut buf = vec![
            0u8;
            if load.is_some() {
                READ_RECORDS * record
            } else {
                0
            }
        ];
        let mut segments: Vec<(u64, u64, Option<u32>)> = closed
            .iter()
            .map(|(first, c)| (*first, c.records, Some(c.crc)))
            .collect();
        // The active segment: only its synced part has a CRC to check.
        segments.push((
            state.active,
            state.synced - state.active,
            Some(state.active_crc),
        ));
        for (first, records, crc) in segments {
            let live_from = state.start.max(first);
            if records == 0 || first + records <= state.start {
                continue;
            }
            let path = dir.join(segment_name(kind, first));
            let f = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    damage.ranges.push((live_from, first + records));
                    continue;
                }
                Err(e) => return Err(("open log segment", e)),
            };
            let Some(load) = load.as_mut() else {
                let len = at("stat log segment", f.metadata())?.len();
                if len < records * record as u64 {
                    damage.ranges.push((live_from, first + records));
                }
                continue;
            };
            // The CRC covers the whole segment: stage its live records
            // (one segment, ~13 MB) and hand them over once it checks out.
            let mut crc_acc = 0u32;
            let mut staged: Vec<u8> = Vec::new();
            let feed_start = live_from.max(feed_from);
            let mut pos = 0u64;
            let mut short = false;
            while pos < records {
                let n = (records - pos).min(READ_RECORDS as u64) as usize;
                let got = at(
                    "read log segment",
                    read_at_most(&f, &mut buf[..n * record], pos * record as u64),
                )?;
                if got < n * record {
                    short = true;
                    break;
                }
                let bytes = &buf[..n * record];
                crc_acc = crc32c::crc32c_append(crc_acc, bytes);
                let ord = first + pos;
                let skip = feed_start.saturating_sub(ord).min(n as u64) as usize;
                staged.extend_from_slice(&bytes[skip * record..]);
                pos += n as u64;
            }
            if short || crc.is_some_and(|c| c != crc_acc) {
                damage.ranges.push((live_from, first + records));
                continue;
            }
            if !staged.is_empty() {
                load(feed_start, &staged);
            }
        }
        // Files the state does not name: a prune's leftovers (wholly below
        // `start`) or a segment started by a commit that never finished.
        let names: Vec<u64> = std::iter::once(state.active)
            .chain(closed.keys().copied())
            .collect();
        for entry in at("list log directory", std::fs::read_dir(&dir))? {
            let entry = at("list log directory", entry)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let first = name
                .strip_suffix(kind.suffix)
                .and_then(|n| n.parse::<u64>().ok());
            if first.is_none_or(|f| !names.contains(&f)) {
                tracing::debug!(file = %name, "removing a log file the store does not name");
                at(
                    "remove stale log segment",
                    std::fs::remove_file(entry.path()),
                )?;
            }
        }
        // A missing active file is recreated empty: its synced part is in
        // `damage` already, its tail is checked against the headers.
        let active_path = dir.join(segment_name(kind, state.active));
        let active = match open_rw(&active_path, false) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let f = at("create log segment", open_rw(&active_path, true))?;
                at("sync log directory", sync_dir(&dir))?;
                f
            }
            Err(e) => return Err(("open log segment", e)),
        };
        let len = at("stat log segment", active.metadata())?.len();
        let want = (state.end - state.active) * record as u64;
        if len > want {
            // An append whose commit never happened.
            at("truncate log segment", active.set_len(want))?;
        }
        let log = DigestLog {
            kind,
            dir,
            state,
            closed,
            active,
            active_crc_end: state.active_crc,
            last_sync: Instant::now(),
        };
        Ok((log, damage))
    }

    pub fn state(&self) -> LogState {
        self.state
    }

    pub fn kind(&self) -> &'static LogKind {
        self.kind
    }

    /// Read `count` records from `first` (all inside one segment, as every
    /// batch is). Short if the file is (a power loss, or a deleted file).
    pub fn read(&self, first: u64, count: u64) -> IoResult<Vec<u8>> {
        let mut buf = Vec::new();
        self.read_into(first, count, &mut buf)?;
        Ok(buf)
    }

    /// `read` into `buf` (replacing what it held), reusing its allocation:
    /// for a pass over many batches without zeroing a new buffer each time.
    pub fn read_into(&self, first: u64, count: u64, buf: &mut Vec<u8>) -> IoResult<()> {
        let seg = self.segment_of(first);
        let record = self.kind.record;
        buf.resize(count as usize * record, 0);
        let offset = (first - seg) * record as u64;
        let got = if seg == self.state.active {
            at("read log segment", read_at_most(&self.active, buf, offset))?
        } else {
            match File::open(self.dir.join(segment_name(self.kind, seg))) {
                Ok(f) => at("read log segment", read_at_most(&f, buf, offset))?,
                Err(e) if e.kind() == ErrorKind::NotFound => 0,
                Err(e) => return Err(("open log segment", e)),
            }
        };
        buf.truncate(got - got % record);
        Ok(())
    }

    fn segment_of(&self, record: u64) -> u64 {
        if record >= self.state.active {
            return self.state.active;
        }
        self.closed
            .range(..=record)
            .next_back()
            .map_or(self.state.active, |(f, _)| *f)
    }

    /// Overwrite records in place (repair at open), then sync.
    pub fn rewrite(&mut self, first: u64, records: &[u8]) -> IoResult<()> {
        let seg = self.segment_of(first);
        let offset = (first - seg) * self.kind.record as u64;
        let path = self.dir.join(segment_name(self.kind, seg));
        let f = if seg == self.state.active {
            at("reopen log segment", self.active.try_clone())?
        } else {
            at("open log segment", open_rw(&path, true))?
        };
        at("write log segment", f.write_all_at(records, offset))?;
        at("sync log segment", f.sync_data())
    }

    /// After a repair at open: recompute the active segment's CRC from the
    /// file and mark everything synced. Returns the state to record.
    pub fn resynced(&mut self, next_seq: u64) -> IoResult<LogState> {
        at("sync log segment", self.active.sync_data())?;
        let mut crc = 0u32;
        let record = self.kind.record;
        let mut buf = vec![0u8; READ_RECORDS * record];
        let mut pos = 0u64;
        let records = self.state.end - self.state.active;
        while pos < records {
            let n = (records - pos).min(READ_RECORDS as u64) as usize;
            let got = at(
                "read log segment",
                read_at_most(&self.active, &mut buf[..n * record], pos * record as u64),
            )?;
            if got < n * record {
                return Err((
                    "read log segment",
                    std::io::Error::new(
                        ErrorKind::UnexpectedEof,
                        "active segment shorter than its records",
                    ),
                ));
            }
            crc = crc32c::crc32c_append(crc, &buf[..got]);
            pos += n as u64;
        }
        self.active_crc_end = crc;
        self.last_sync = Instant::now();
        Ok(LogState {
            synced: self.state.end,
            synced_seq: next_seq,
            active_crc: crc,
            ..self.state
        })
    }

    /// Recompute a closed segment's CRC after its records were rewritten.
    pub fn closed_crc(&self, first: u64) -> IoResult<Option<Closed>> {
        let Some(c) = self.closed.get(&first).copied() else {
            return Ok(None);
        };
        let f = at(
            "open log segment",
            File::open(self.dir.join(segment_name(self.kind, first))),
        )?;
        let mut bytes = Vec::new();
        at(
            "read log segment",
            f.take(c.records * self.kind.record as u64)
                .read_to_end(&mut bytes),
        )?;
        Ok(Some(Closed {
            records: c.records,
            crc: crc32c::crc32c(&bytes),
        }))
    }

    /// Record a repaired closed segment's new CRC (after its transaction).
    pub fn set_closed(&mut self, first: u64, c: Closed) {
        self.closed.insert(first, c);
    }

    /// Write a commit's records after the log's end; `first_seq` is the
    /// sequence of the commit's first batch. Before that, start a new segment
    /// if the active one is full, and sync the log if it is due. With
    /// `sync_after = Some(next_seq)` the new records are synced too (the
    /// migration; `next_seq` follows the commit's last batch). Nothing is
    /// part of the log until `apply` after the commit's transaction
    /// succeeded; a failed commit's bytes are overwritten by the next one.
    pub fn prepare(
        &self,
        records: &[u8],
        first_seq: u64,
        sync_after: Option<u64>,
    ) -> IoResult<Pending> {
        let next_seq = first_seq;
        let mut state = self.state;
        let mut closed = None;
        let mut new_active = None;
        let mut active_crc_end = self.active_crc_end;
        let mut synced_now = false;
        if state.end - state.active >= self.kind.segment_records {
            at("sync log segment", self.active.sync_data())?;
            closed = Some((
                state.active,
                Closed {
                    records: state.end - state.active,
                    crc: self.active_crc_end,
                },
            ));
            let f = at(
                "create log segment",
                open_rw(&self.dir.join(segment_name(self.kind, state.end)), true),
            )?;
            at("truncate log segment", f.set_len(0))?;
            at("sync log directory", sync_dir(&self.dir))?;
            new_active = Some(f);
            state.active = state.end;
            active_crc_end = 0;
            state.active_crc = 0;
            state.synced = state.end;
            state.synced_seq = next_seq;
            synced_now = true;
        } else if state.end > state.synced
            && (state.end - state.synced >= SYNC_RECORDS
                || self.last_sync.elapsed() >= SYNC_INTERVAL)
        {
            at("sync log segment", self.active.sync_data())?;
            state.synced = state.end;
            state.synced_seq = next_seq;
            state.active_crc = self.active_crc_end;
            synced_now = true;
        }
        let file = new_active.as_ref().unwrap_or(&self.active);
        let first = state.end;
        let offset = (first - state.active) * self.kind.record as u64;
        at("write log segment", file.write_all_at(records, offset))?;
        let n = (records.len() / self.kind.record) as u64;
        active_crc_end = crc32c::crc32c_append(active_crc_end, records);
        state.end += n;
        if let Some(after) = sync_after {
            at("sync log segment", file.sync_data())?;
            state.synced = state.end;
            state.synced_seq = after;
            state.active_crc = active_crc_end;
            synced_now = true;
        }
        Ok(Pending {
            first,
            state,
            closed,
            new_active,
            active_crc_end,
            synced_now,
        })
    }

    /// The commit that wrote `p` is durable: make it the log's state.
    pub fn apply(&mut self, p: Pending) {
        if let Some(f) = p.new_active {
            self.active = f;
        }
        if let Some((first, c)) = p.closed {
            self.closed.insert(first, c);
        }
        if p.synced_now {
            self.last_sync = Instant::now();
        }
        self.active_crc_end = p.active_crc_end;
        self.state = p.state;
    }

    /// Sync everything appended (a clean close); returns the state to record.
    pub fn sync_all(&mut self, next_seq: u64) -> IoResult<LogState> {
        at("sync log segment", self.active.sync_data())?;
        self.last_sync = Instant::now();
        Ok(LogState {
            synced: self.state.end,
            synced_seq: next_seq,
            active_crc: self.active_crc_end,
            ..self.state
        })
    }

    /// Record an already-durable state change (a sync, a prune).
    pub fn set_state(&mut self, state: LogState) {
        self.state = state;
    }

    /// Closed segments that lie wholly before `start` (for a prune to drop).
    pub fn closed_before(&self, start: u64) -> Vec<u64> {
        self.closed
            .iter()
            .filter(|(first, c)| *first + c.records <= start)
            .map(|(first, _)| *first)
            .collect()
    }

    /// Delete segment files a durable prune no longer needs.
    pub fn remove_segments(&mut self, firsts: &[u64]) -> IoResult<()> {
        for first in firsts {
            self.closed.remove(first);
            match std::fs::remove_file(self.dir.join(segment_name(self.kind, *first))) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(("remove log segment", e)),
            }
        }
        Ok(())
    }

    /// Bytes of segment files (for store size figures).
    pub fn bytes_on_disk(&self) -> u64 {
        let mut n = 0;
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                n += e.metadata().map_or(0, |m| m.len());
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_keeps_the_compared_bits() {
        let d = 0xabcd_ef01_2345_6789_0011_2233_4455_6677u128;
        let mut v = Vec::new();
        pack(d, &mut v);
        assert_eq!(v.len(), RECORD);
        assert_eq!(unpack(&v), d & KEPT_BITS);
        assert_eq!(unpack(&v) >> 120, 0xab);
    }

    #[test]
    fn state_round_trips_and_rejects_nonsense() {
        let s = LogState {
            start: 3,
            end: 90,
            synced: 80,
            synced_seq: 7,
            active: 64,
            active_crc: 0xdead_beef,
        };
        assert_eq!(decode_state(&encode_state(&s)).unwrap(), s);
        let bad = LogState { active: 95, ..s };
        assert!(decode_state(&encode_state(&bad)).is_err());
        assert!(decode_state(&encode_state(&s)[..20]).is_err());
    }
}
